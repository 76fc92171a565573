//! Shutdown drains: every open session gets close 1001 on both sides, the
//! listeners stop accepting, and the server task finishes.

mod common;

use common::*;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn shutdown_closes_sessions_with_1001_on_both_sides() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let backend = spawn_backend(move |mut ws| {
        let tx = tx.clone();
        async move {
            while let Some(Ok(message)) = ws.next().await {
                if let Message::Close(frame) = message {
                    let _ = tx.send(frame.map(|f| u16::from(f.code)));
                }
            }
        }
    })
    .await;
    let proxy = Proxy::simple(&[backend], "").await;
    let mut first = connect(&proxy.ws_url("/")).await;
    let mut second = connect(&proxy.ws_url("/")).await;

    proxy.shutdown.trigger();
    for ws in [&mut first, &mut second] {
        match next(ws).await {
            Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1001),
            other => panic!("expected close 1001, got {other:?}"),
        }
    }
    for _ in 0..2 {
        let code = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(code, Some(1001));
    }
    // Both clients answer the close (tungstenite does on its next read); the
    // drain then completes well before its deadline.
    for ws in [&mut first, &mut second] {
        let _ = tokio::time::timeout(WAIT, ws.next()).await;
    }
    let Proxy { task, .. } = &proxy;
    let finished = tokio::time::timeout(WAIT, async {
        while !task.is_finished() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(finished.is_ok(), "server did not finish draining");
    // The listener is closed: new connections are refused.
    assert!(tokio::net::TcpStream::connect(proxy.addrs[0])
        .await
        .is_err());
}
