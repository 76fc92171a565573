//! Tunnel mode (`mode: tunnel` on a route): after both handshakes the bytes
//! are copied raw in both directions. Messages and the close handshake work
//! end to end, and nothing is policed: frames the frames mode would refuse
//! (unmasked, RSV bits, reserved opcodes, masked from the backend) arrive
//! byte for byte.

mod common;

use common::*;
use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

const TUNNEL: &str = "    mode: tunnel\n";

#[tokio::test]
async fn echo_text_binary_and_big_messages() {
    let backend = echo_backend().await;
    let proxy = Proxy::simple(&[backend], TUNNEL).await;
    let mut ws = connect(&proxy.ws_url("/")).await;
    ws.send(Message::text("through the tunnel")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("through the tunnel"));
    ws.send(Message::binary(vec![0u8, 255, 7])).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(vec![0u8, 255, 7]));
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 241) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(big));
}

/// A raw backend (correct 101) that reports the first `n` bytes it receives
/// after the handshake, then sends `reply` and keeps the socket open.
async fn byte_backend(
    n: usize,
    reply: Vec<u8>,
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = raw_ws_backend(move |mut stream, _head| {
        let tx = tx.clone();
        let reply = reply.clone();
        async move {
            let mut got = vec![0u8; n];
            if n > 0 && stream.read_exact(&mut got).await.is_err() {
                return;
            }
            let _ = tx.send(got);
            let _ = stream.write_all(&reply).await;
            let _ = read_to_eof(&mut stream).await;
        }
    })
    .await;
    (addr, rx)
}

#[tokio::test]
async fn client_frames_pass_unvalidated_byte_for_byte() {
    // Unmasked, RSV1 set, reserved opcode, invalid UTF-8: all refused in
    // frames mode, all copied as they are by a tunnel.
    let mut sent = client_frame(true, 0b100, 1, false, b"unmasked rsv1");
    sent.extend(client_frame(true, 0, 3, true, b"opcode 3"));
    sent.extend(client_frame(true, 0, 1, true, &[0xff, 0xfe]));
    let (backend, mut got) = byte_backend(sent.len(), Vec::new()).await;
    let proxy = Proxy::simple(&[backend], TUNNEL).await;
    let mut client = raw_ws(proxy.addr(), "/").await;
    client.write_all(&sent).await.unwrap();
    let received = tokio::time::timeout(WAIT, got.recv())
        .await
        .expect("backend got nothing in time")
        .unwrap();
    assert_eq!(received, sent);
}

#[tokio::test]
async fn backend_frames_pass_unvalidated_byte_for_byte() {
    // Masked and RSV1 from the backend: refused in frames mode, copied here.
    let mut reply = client_frame(true, 0b100, 2, true, b"masked rsv1");
    reply.extend(server_frame(true, 0, 1, &[0xc3, 0x28]));
    let (backend, _got) = byte_backend(0, reply.clone()).await;
    let proxy = Proxy::simple(&[backend], TUNNEL).await;
    let mut client = raw_ws(proxy.addr(), "/").await;
    let mut received = vec![0u8; reply.len()];
    tokio::time::timeout(WAIT, client.read_exact(&mut received))
        .await
        .expect("client got nothing in time")
        .unwrap();
    assert_eq!(received, reply);
}

#[tokio::test]
async fn client_close_reaches_the_backend() {
    let (backend, mut events) = reporting_backend().await;
    let proxy = Proxy::simple(&[backend], TUNNEL).await;
    let mut ws = connect(&proxy.ws_url("/")).await;
    ws.send(Message::text("before close")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("before close"));
    ws.close(Some(CloseFrame {
        code: CloseCode::Library(4321),
        reason: "tunnel bye".into(),
    }))
    .await
    .unwrap();
    assert_eq!(
        backend_close(&mut events).await,
        Some((4321, "tunnel bye".to_string()))
    );
    // The backend's reply comes back through the tunnel.
    match drain(&mut ws).await {
        Some(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 4321),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn backend_close_reaches_the_client() {
    let backend = spawn_backend(|mut ws| async move {
        ws.close(Some(CloseFrame {
            code: CloseCode::Again,
            reason: "later".into(),
        }))
        .await
        .unwrap();
        use futures_util::StreamExt;
        while ws.next().await.is_some() {}
    })
    .await;
    let proxy = Proxy::simple(&[backend], TUNNEL).await;
    let mut ws = connect(&proxy.ws_url("/")).await;
    match next(&mut ws).await {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 1013);
            assert_eq!(frame.reason.as_str(), "later");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn backend_disconnect_ends_the_client_connection() {
    let backend = raw_ws_backend(|stream, _head| async move {
        drop(stream);
    })
    .await;
    let proxy = Proxy::simple(&[backend], TUNNEL).await;
    let mut client = raw_ws(proxy.addr(), "/").await;
    // A tunnel does not speak for itself: the client sees the TCP close and
    // no frame.
    assert!(read_to_eof(&mut client).await.is_empty());
}

#[tokio::test]
async fn client_disconnect_ends_the_backend_connection() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let backend = raw_ws_backend(move |mut stream, _head| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(read_to_eof(&mut stream).await);
        }
    })
    .await;
    let proxy = Proxy::simple(&[backend], TUNNEL).await;
    let client = raw_ws(proxy.addr(), "/").await;
    drop(client);
    let got = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("backend connection not closed in time")
        .unwrap();
    assert!(got.is_empty(), "{got:?}");
}

#[tokio::test]
async fn bytes_sent_with_the_handshakes_are_relayed() {
    // The backend's first frame arrives in the same segment as its 101, and
    // the client's first frame in the same segment as its request.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let backend = raw_backend(move |mut stream| {
        let tx = tx.clone();
        async move {
            let head = read_head(&mut stream).await;
            let mut bytes = switching_protocols(&head, "").into_bytes();
            bytes.extend(server_frame(true, 0, 1, b"early"));
            stream.write_all(&bytes).await.unwrap();
            let _ = tx.send(read_frame(&mut stream).await);
            let _ = read_to_eof(&mut stream).await;
        }
    })
    .await;
    let proxy = Proxy::simple(&[backend], TUNNEL).await;
    let mut client = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let mut bytes = upgrade_request("/", "").into_bytes();
    bytes.extend(client_frame(true, 0, 1, true, b"eager"));
    client.write_all(&bytes).await.unwrap();
    let head = read_head(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(
        read_frame(&mut client).await.unwrap(),
        (0x81, b"early".to_vec())
    );
    let got = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, Some((0x81, b"eager".to_vec())));
}
