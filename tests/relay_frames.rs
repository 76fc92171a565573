//! Frames mode end to end: messages, fragments, control frames and the
//! close handshake through wsgate, with tokio-tungstenite on both sides.

mod common;

use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn echoes_text_and_binary() {
    let backend = echo_backend().await;
    let proxy = Proxy::simple(&[backend], "").await;
    let mut ws = connect(&proxy.ws_url("/echo")).await;
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("hello"));
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(vec![0u8, 1, 2, 255]));
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn message_larger_than_the_chunk_buffer() {
    let backend = echo_backend().await;
    let proxy = Proxy::simple(&[backend], "").await;
    let mut ws = connect(&proxy.ws_url("/")).await;
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(big));
    let text = "ünïcödé ✓ ".repeat(100_000);
    ws.send(Message::text(text.clone())).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text(text));
}

#[tokio::test]
async fn close_code_and_reason_reach_the_backend() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = std::sync::Mutex::new(Some(tx));
    let backend = spawn_backend(move |mut ws| {
        let tx = tx.lock().unwrap().take();
        async move {
            use futures_util::StreamExt;
            while let Some(Ok(message)) = ws.next().await {
                if let Message::Close(frame) = message {
                    if let Some(tx) = tx {
                        let _ = tx.send(frame);
                    }
                    break;
                }
            }
        }
    })
    .await;
    let proxy = Proxy::simple(&[backend], "").await;
    let mut ws = connect(&proxy.ws_url("/")).await;
    ws.close(Some(CloseFrame {
        code: CloseCode::Library(4001),
        reason: "bye now".into(),
    }))
    .await
    .unwrap();
    let frame = tokio::time::timeout(WAIT, rx)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(u16::from(frame.code), 4001);
    assert_eq!(frame.reason.as_str(), "bye now");
    // The backend's reply comes back and the stream ends.
    match next(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 4001),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn close_code_and_reason_reach_the_client() {
    let backend = spawn_backend(|mut ws| async move {
        ws.close(Some(CloseFrame {
            code: CloseCode::Away,
            reason: "server leaving".into(),
        }))
        .await
        .unwrap();
        use futures_util::StreamExt;
        while ws.next().await.is_some() {}
    })
    .await;
    let proxy = Proxy::simple(&[backend], "").await;
    let mut ws = connect(&proxy.ws_url("/")).await;
    match next(&mut ws).await {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 1001);
            assert_eq!(frame.reason.as_str(), "server leaving");
        }
        other => panic!("{other:?}"),
    }
}
