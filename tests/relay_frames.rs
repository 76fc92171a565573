//! Frames mode end to end: messages, fragments, control frames and the
//! close handshake through wsgate, with tokio-tungstenite on both sides (raw
//! sockets where a test must control the exact frames), and how a session
//! ends when one peer disappears: close 1014 to the client when the backend
//! goes, close 1001 to the backend when the client goes.

mod common;

use wsgate::relay::buffer::CHUNK_SIZE;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
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

#[tokio::test]
async fn fragmented_message_arrives_whole_and_is_echoed() {
    let (backend, mut events) = reporting_backend().await;
    let proxy = Proxy::simple(&[backend], "").await;
    let mut client = raw_ws(proxy.addr(), "/").await;
    let mut bytes = client_frame(false, 0, 0x1, true, "Hel".as_bytes());
    bytes.extend(client_frame(false, 0, 0x0, true, "lo, wö".as_bytes()));
    bytes.extend(client_frame(true, 0, 0x0, true, "rld".as_bytes()));
    client.write_all(&bytes).await.unwrap();
    match next_event(&mut events).await {
        Event::Message(m) => assert_eq!(m, Message::text("Hello, wörld")),
        other => panic!("{other:?}"),
    }
    // tungstenite echoes the message as one frame, relayed unmasked.
    let (b0, payload, masked) = read_frame_masked(&mut client).await.unwrap();
    assert_eq!(b0, 0x81);
    assert!(!masked);
    assert_eq!(payload, "Hello, wörld".as_bytes());
}

#[tokio::test]
async fn ping_between_fragments_is_answered_and_message_stays_whole() {
    let (backend, mut events) = reporting_backend().await;
    let proxy = Proxy::simple(&[backend], "").await;
    let mut client = raw_ws(proxy.addr(), "/").await;
    let mut bytes = client_frame(false, 0, 0x2, true, &[1, 2, 3]);
    bytes.extend(client_frame(true, 0, 0x9, true, b"mid"));
    bytes.extend(client_frame(true, 0, 0x0, true, &[4, 5]));
    client.write_all(&bytes).await.unwrap();
    match next_event(&mut events).await {
        Event::Message(m) => assert_eq!(m, Message::Ping(b"mid".to_vec().into())),
        other => panic!("{other:?}"),
    }
    match next_event(&mut events).await {
        Event::Message(m) => assert_eq!(m, Message::binary(vec![1u8, 2, 3, 4, 5])),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        read_frame(&mut client).await.unwrap(),
        (0x8a, b"mid".to_vec())
    );
    assert_eq!(
        read_frame(&mut client).await.unwrap(),
        (0x82, vec![1, 2, 3, 4, 5])
    );
}

#[tokio::test]
async fn message_of_many_chunks_with_a_frame_size_just_over_the_buffer() {
    // One chunk + 1 byte: a payload that cannot fit one chunk buffer, sent as
    // several frames of a message so chunk and frame boundaries differ.
    let backend = echo_backend().await;
    let proxy = Proxy::simple(&[backend], "").await;
    let mut client = raw_ws(proxy.addr(), "/").await;
    let part: Vec<u8> = (0..CHUNK_SIZE + 1).map(|i| (i % 253) as u8).collect();
    let mut bytes = client_frame(false, 0, 0x2, true, &part);
    bytes.extend(client_frame(false, 0, 0x0, true, &part));
    bytes.extend(client_frame(true, 0, 0x0, true, &part));
    client.write_all(&bytes).await.unwrap();
    let (b0, payload) = read_frame(&mut client).await.unwrap();
    assert_eq!(b0, 0x82);
    assert_eq!(payload.len(), part.len() * 3);
    assert_eq!(payload, [part.clone(), part.clone(), part].concat());
}

#[tokio::test]
async fn many_messages_keep_their_order() {
    let backend = echo_backend().await;
    let proxy = Proxy::simple(&[backend], "").await;
    let mut ws = connect(&proxy.ws_url("/")).await;
    for i in 0..500u32 {
        ws.feed(Message::text(format!("m{i}"))).await.unwrap();
    }
    ws.flush().await.unwrap();
    for i in 0..500u32 {
        assert_eq!(next(&mut ws).await, Message::text(format!("m{i}")));
    }
}

#[tokio::test]
async fn client_ping_is_answered_by_the_backend_pong() {
    let (backend, mut events) = reporting_backend().await;
    let proxy = Proxy::simple(&[backend], "").await;
    let mut ws = connect(&proxy.ws_url("/")).await;
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    assert_eq!(
        next(&mut ws).await,
        Message::Pong(b"are you there".to_vec().into())
    );
    match next_event(&mut events).await {
        Event::Message(m) => assert_eq!(m, Message::Ping(b"are you there".to_vec().into())),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn backend_ping_reaches_the_client_and_its_pong_comes_back() {
    let (backend, mut events) =
        reporting_backend_sending(vec![Message::Ping(b"hi".to_vec().into())]).await;
    let proxy = Proxy::simple(&[backend], "").await;
    let mut ws = connect(&proxy.ws_url("/")).await;
    assert_eq!(next(&mut ws).await, Message::Ping(b"hi".to_vec().into()));
    // tungstenite queues the pong; any later write or read sends it.
    // (tungstenite may write it after the text message: either order is fine).
    ws.send(Message::text("after ping")).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        match next_event(&mut events).await {
            Event::Message(m) => seen.push(m),
            other => panic!("{other:?}"),
        }
    }
    assert!(
        seen.contains(&Message::Pong(b"hi".to_vec().into())),
        "{seen:?}"
    );
    assert!(seen.contains(&Message::text("after ping")), "{seen:?}");
    assert_eq!(next(&mut ws).await, Message::text("after ping"));
}

#[tokio::test]
async fn close_without_status_code_is_relayed_as_is() {
    let (backend, mut events) = reporting_backend().await;
    let proxy = Proxy::simple(&[backend], "").await;
    let mut client = raw_ws(proxy.addr(), "/").await;
    client
        .write_all(&client_frame(true, 0, 0x8, true, b""))
        .await
        .unwrap();
    assert_eq!(backend_close(&mut events).await, None);
    // tungstenite answers with an empty close too, and the proxy then ends
    // the client's TCP connection.
    assert_eq!(read_frame(&mut client).await.unwrap(), (0x88, Vec::new()));
    assert!(read_to_eof(&mut client).await.is_empty());
}

#[tokio::test]
async fn client_close_then_tcp_close_from_the_proxy() {
    let backend = echo_backend().await;
    let proxy = Proxy::simple(&[backend], "").await;
    let mut client = raw_ws(proxy.addr(), "/").await;
    client
        .write_all(&client_frame(
            true,
            0,
            0x8,
            true,
            &close_payload(1000, b"done"),
        ))
        .await
        .unwrap();
    let payload = read_close(&mut client).await;
    assert_eq!(close_code(&payload), Some(1000));
    // RFC 6455 section 7.1.1: the server closes the TCP connection first.
    assert!(read_to_eof(&mut client).await.is_empty());
}

#[tokio::test]
async fn backend_dropping_the_socket_after_101_gives_the_client_1014() {
    let backend = raw_ws_backend(|stream, _head| async move {
        drop(stream);
    })
    .await;
    let proxy = Proxy::simple(&[backend], "").await;
    let mut client = raw_ws(proxy.addr(), "/").await;
    assert_eq!(read_close_code(&mut client).await, 1014);
}

#[tokio::test]
async fn tungstenite_backend_dropping_its_stream_mid_session_gives_the_client_1014() {
    let backend = spawn_backend(|mut ws| async move {
        // Answer one message, then vanish without a close frame.
        if let Some(Ok(m)) = ws.next().await {
            ws.send(m).await.unwrap();
        }
        drop(ws);
    })
    .await;
    let proxy = Proxy::simple(&[backend], "").await;
    let mut client = raw_ws(proxy.addr(), "/").await;
    client
        .write_all(&client_frame(true, 0, 0x1, true, b"one"))
        .await
        .unwrap();
    assert_eq!(
        read_frame(&mut client).await.unwrap(),
        (0x81, b"one".to_vec())
    );
    assert_eq!(read_close_code(&mut client).await, 1014);
}

#[tokio::test]
async fn client_disappearing_mid_session_gives_the_backend_1001() {
    let (backend, mut events) = reporting_backend().await;
    let proxy = Proxy::simple(&[backend], "").await;
    let mut ws = connect(&proxy.ws_url("/")).await;
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("still here"));
    drop(ws);
    let close = backend_close(&mut events).await;
    assert_eq!(close.map(|(code, _)| code), Some(1001));
}

#[tokio::test]
async fn raw_client_disappearing_gives_the_backend_1001() {
    let (backend, mut events) = reporting_backend().await;
    let proxy = Proxy::simple(&[backend], "").await;
    let client = raw_ws(proxy.addr(), "/").await;
    drop(client);
    let close = backend_close(&mut events).await;
    assert_eq!(close.map(|(code, _)| code), Some(1001));
}

/// Sizes around the relay chunk so that the control frame that follows a
/// data frame straddles the chunk boundary at every offset of its header
/// and payload.
fn straddling_sizes() -> Vec<usize> {
    // A masked binary frame of payload n >= 126 has a 2 + 2 + 4 byte header.
    (CHUNK_SIZE - 8 - 140..CHUNK_SIZE - 8 + 4).collect()
}

#[tokio::test]
async fn control_frames_straddling_the_chunk_boundary_from_the_client() {
    let backend = echo_backend().await;
    let proxy = Proxy::simple(&[backend], "").await;
    let mut client = raw_ws(proxy.addr(), "/").await;
    for n in straddling_sizes() {
        let data = vec![(n % 251) as u8; n];
        let mut bytes = client_frame(true, 0, 0x2, true, &data);
        bytes.extend(client_frame(true, 0, 0x9, true, &[b'p'; 125]));
        client.write_all(&bytes).await.unwrap();
        // The ping goes to the backend right behind the data; the pong and
        // the echo come back in either order.
        let mut got = vec![
            read_frame(&mut client).await.expect("no frame back"),
            read_frame(&mut client).await.expect("no frame back"),
        ];
        got.sort();
        assert_eq!(got, [(0x82, data), (0x8a, vec![b'p'; 125])], "n = {n}");
    }
}

#[tokio::test]
async fn close_frame_straddling_the_chunk_boundary_from_the_client() {
    for n in [CHUNK_SIZE - 8 - 4, CHUNK_SIZE - 8 - 1, CHUNK_SIZE - 8 + 1] {
        let (backend, mut events) = reporting_backend().await;
        let proxy = Proxy::simple(&[backend], "").await;
        let mut client = raw_ws(proxy.addr(), "/").await;
        let mut bytes = client_frame(true, 0, 0x2, true, &vec![1u8; n]);
        bytes.extend(client_frame(
            true,
            0,
            0x8,
            true,
            &close_payload(4000, &[b'r'; 100]),
        ));
        client.write_all(&bytes).await.unwrap();
        assert_eq!(
            backend_close(&mut events).await,
            Some((4000, "r".repeat(100))),
            "n = {n}"
        );
        assert_eq!(read_close_code(&mut client).await, 4000, "n = {n}");
    }
}

#[tokio::test]
async fn control_frames_straddling_the_chunk_boundary_from_the_backend() {
    // A raw backend sends data + ping back to back at every offset; the
    // client must get each one intact.
    let sizes = straddling_sizes();
    let expected = sizes.clone();
    let backend = raw_ws_backend(move |mut stream, _head| {
        let sizes = sizes.clone();
        async move {
            for n in sizes {
                // Unmasked: header 2 + 2 bytes, so shift by 4 to straddle.
                let mut bytes = server_frame(true, 0, 0x2, &vec![(n % 251) as u8; n + 4]);
                bytes.extend(server_frame(true, 0, 0x9, &[b'q'; 125]));
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            let _ = read_to_eof(&mut stream).await;
        }
    })
    .await;
    let proxy = Proxy::simple(&[backend], "").await;
    let mut client = raw_ws(proxy.addr(), "/").await;
    for n in expected {
        assert_eq!(
            read_frame(&mut client).await.expect("no data frame"),
            (0x82, vec![(n % 251) as u8; n + 4]),
            "n = {n}"
        );
        assert_eq!(
            read_frame(&mut client).await.expect("no ping"),
            (0x89, vec![b'q'; 125]),
            "n = {n}"
        );
    }
}

#[tokio::test]
async fn frames_sent_together_with_the_upgrade_request_are_relayed() {
    let backend = echo_backend().await;
    let proxy = Proxy::simple(&[backend], "").await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let mut bytes = upgrade_request("/", "").into_bytes();
    bytes.extend(client_frame(true, 0, 0x1, true, b"eager"));
    stream.write_all(&bytes).await.unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(
        read_frame(&mut stream).await.unwrap(),
        (0x81, b"eager".to_vec())
    );
}

#[tokio::test]
async fn frames_sent_by_the_backend_together_with_its_101_are_relayed() {
    let backend = raw_backend(|mut stream| async move {
        let head = read_head(&mut stream).await;
        let mut bytes = switching_protocols(&head, "").into_bytes();
        bytes.extend(server_frame(true, 0, 0x1, b"hello at once"));
        stream.write_all(&bytes).await.unwrap();
        let _ = read_to_eof(&mut stream).await;
    })
    .await;
    let proxy = Proxy::simple(&[backend], "").await;
    let mut client = raw_ws(proxy.addr(), "/").await;
    assert_eq!(
        read_frame(&mut client).await.unwrap(),
        (0x81, b"hello at once".to_vec())
    );
}

#[tokio::test]
async fn backend_that_never_answers_a_close_still_lets_the_client_finish() {
    // timeouts.close is 2s in the test config; the client must get a close
    // reply (the proxy's own, echoing its code) and then the TCP close.
    let backend = raw_ws_backend(|mut stream, _head| async move {
        // Read everything, answer nothing, never close.
        let _ = read_to_eof(&mut stream).await;
    })
    .await;
    let proxy = Proxy::simple(&[backend], "").await;
    let mut client = raw_ws(proxy.addr(), "/").await;
    client
        .write_all(&client_frame(true, 0, 0x8, true, &close_payload(4100, b"")))
        .await
        .unwrap();
    assert_eq!(read_close_code(&mut client).await, 4100);
    assert!(read_to_eof(&mut client).await.is_empty());
}

#[tokio::test]
async fn backend_close_then_tcp_close_reaches_the_client() {
    let backend = raw_ws_backend(|mut stream, _head| async move {
        let _ = stream
            .write_all(&server_frame(true, 0, 0x8, &close_payload(1011, b"oops")))
            .await;
        drop(stream);
    })
    .await;
    let proxy = Proxy::simple(&[backend], "").await;
    let mut client = raw_ws(proxy.addr(), "/").await;
    let payload = read_close(&mut client).await;
    assert_eq!(payload, close_payload(1011, b"oops"));
}

#[tokio::test]
async fn client_frames_reach_the_backend_with_a_fresh_mask_key() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let backend = raw_ws_backend(move |mut stream, _head| {
        let tx = tx.clone();
        async move {
            use tokio::io::AsyncReadExt;
            // Text frame of 5 bytes: 2 byte header, 4 byte key, payload.
            let mut raw = [0u8; 11];
            if stream.read_exact(&mut raw).await.is_ok() {
                let _ = tx.send(raw);
            }
            let _ = read_to_eof(&mut stream).await;
        }
    })
    .await;
    let proxy = Proxy::simple(&[backend], "").await;
    let mut client = raw_ws(proxy.addr(), "/").await;
    let sent = client_frame(true, 0, 0x1, true, b"hello");
    client.write_all(&sent).await.unwrap();
    let raw = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(raw[..2], [0x81, 0x85], "header must stay the same");
    let key = [raw[2], raw[3], raw[4], raw[5]];
    assert_ne!(key, [0x12, 0x34, 0x56, 0x78], "the client's key was reused");
    let payload: Vec<u8> = raw[6..]
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ key[i % 4])
        .collect();
    assert_eq!(payload, b"hello");
}

#[tokio::test]
async fn backend_frames_after_the_client_close_are_still_relayed() {
    // After the client's close the backend may still send data before its
    // own close (RFC 6455 section 7.1.2); the client gets both.
    let backend = raw_ws_backend(|mut stream, _head| async move {
        let close = read_frame(&mut stream)
            .await
            .expect("no close from the proxy");
        assert_eq!(close.0, 0x88);
        let mut bytes = server_frame(true, 0, 0x1, b"last words");
        bytes.extend(server_frame(true, 0, 0x8, &close.1));
        stream.write_all(&bytes).await.unwrap();
        let _ = read_to_eof(&mut stream).await;
    })
    .await;
    let proxy = Proxy::simple(&[backend], "").await;
    let mut client = raw_ws(proxy.addr(), "/").await;
    client
        .write_all(&client_frame(true, 0, 0x8, true, &close_payload(1000, b"")))
        .await
        .unwrap();
    assert_eq!(
        read_frame(&mut client).await.unwrap(),
        (0x81, b"last words".to_vec())
    );
    assert_eq!(
        read_frame(&mut client).await.unwrap(),
        (0x88, close_payload(1000, b""))
    );
}

#[tokio::test]
async fn client_frames_after_its_close_are_not_relayed() {
    let (backend, mut events) = reporting_backend().await;
    let proxy = Proxy::simple(&[backend], "").await;
    let mut client = raw_ws(proxy.addr(), "/").await;
    let mut bytes = client_frame(true, 0, 0x8, true, &close_payload(1000, b"bye"));
    bytes.extend(client_frame(true, 0, 0x1, true, b"too late"));
    client.write_all(&bytes).await.unwrap();
    match next_event(&mut events).await {
        Event::Message(Message::Close(Some(frame))) => {
            assert_eq!(u16::from(frame.code), 1000);
            assert_eq!(frame.reason.as_str(), "bye");
        }
        other => panic!("{other:?}"),
    }
    // Whatever ends the backend's stream, it is not a data message.
    match next_event(&mut events).await {
        Event::Message(m) => panic!("relayed after the close: {m:?}"),
        Event::Error(_) | Event::End => {}
    }
}

#[tokio::test]
async fn backend_dying_inside_a_fragmented_message_gives_the_client_1014() {
    // The backend's first fragment was relayed whole, so the stream is at a
    // frame boundary and the proxy can still say why it ends.
    let backend = raw_ws_backend(|mut stream, _head| async move {
        let _ = stream
            .write_all(&server_frame(false, 0, 0x1, b"to be contin"))
            .await;
        drop(stream);
    })
    .await;
    let proxy = Proxy::simple(&[backend], "").await;
    let mut client = raw_ws(proxy.addr(), "/").await;
    assert_eq!(
        read_frame(&mut client).await.unwrap(),
        (0x01, b"to be contin".to_vec())
    );
    assert_eq!(read_close_code(&mut client).await, 1014);
}
