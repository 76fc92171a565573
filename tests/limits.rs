//! Limits a peer cannot exceed: the route's `max_frame_size` and
//! `max_message_size` (close 1009 to both sides, while anything up to the
//! limit passes), `limits.max_connections` (503 beyond it, a free place is
//! usable again once a session ends), and `timeouts.client_handshake` (a
//! client that never finishes its request is disconnected).

mod common;

use common::*;
use futures_util::SinkExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const MESSAGE_TOO_BIG: u16 = 1009;

/// The backend's first event must be a close with `code`: nothing of the
/// offending message reached it.
async fn backend_first_sees_close(events: &mut Events, code: u16) {
    match next_event(events).await {
        Event::Message(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), code),
        other => panic!("expected a close {code} first, got {other:?}"),
    }
}

async fn limited_proxy(route: &str) -> (Proxy, Events) {
    let (backend, events) = reporting_backend().await;
    (Proxy::simple(&[backend], route).await, events)
}

#[tokio::test]
async fn frame_over_max_frame_size_is_1009() {
    let (proxy, mut events) = limited_proxy("    max_frame_size: 1KiB\n").await;
    let mut ws = connect(&proxy.ws_url("/")).await;
    ws.send(Message::binary(vec![7u8; 2048])).await.unwrap();
    match next(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), MESSAGE_TOO_BIG),
        other => panic!("{other:?}"),
    }
    backend_first_sees_close(&mut events, MESSAGE_TOO_BIG).await;
}

#[tokio::test]
async fn frame_one_byte_over_max_frame_size_is_1009() {
    let (proxy, _events) = limited_proxy("    max_frame_size: 1KiB\n").await;
    let mut client = raw_ws(proxy.addr(), "/").await;
    client
        .write_all(&client_frame(true, 0, 2, true, &[1u8; 1025]))
        .await
        .unwrap();
    assert_eq!(read_close_code(&mut client).await, MESSAGE_TOO_BIG);
}

#[tokio::test]
async fn frame_at_max_frame_size_passes() {
    let (proxy, mut events) = limited_proxy("    max_frame_size: 1KiB\n").await;
    let mut ws = connect(&proxy.ws_url("/")).await;
    for len in [1023, 1024] {
        let payload = vec![3u8; len];
        ws.send(Message::binary(payload.clone())).await.unwrap();
        assert_eq!(next(&mut ws).await, Message::binary(payload.clone()));
        match next_event(&mut events).await {
            Event::Message(m) => assert_eq!(m, Message::binary(payload)),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn frame_limit_applies_to_the_backend_too() {
    let backend = spawn_backend(|mut ws| async move {
        ws.send(Message::binary(vec![0u8; 2048])).await.unwrap();
        use futures_util::StreamExt;
        while ws.next().await.is_some() {}
    })
    .await;
    let proxy = Proxy::simple(&[backend], "    max_frame_size: 1KiB\n").await;
    let mut client = raw_ws(proxy.addr(), "/").await;
    assert_eq!(read_close_code(&mut client).await, MESSAGE_TOO_BIG);
}

#[tokio::test]
async fn limits_under_125_bytes_hold_for_whole_small_messages() {
    // Messages of a 7-bit length take the codec's one-step path: the
    // limits must hold there too, byte for byte, in both directions.
    let (proxy, mut events) = limited_proxy(
        "    max_frame_size: 100
",
    )
    .await;
    let mut ws = connect(&proxy.ws_url("/")).await;
    for payload in [vec![5u8; 100], b"a text message".to_vec()] {
        let message = if payload[0] == 5 {
            Message::binary(payload)
        } else {
            Message::text(String::from_utf8(payload).unwrap())
        };
        ws.send(message.clone()).await.unwrap();
        assert_eq!(next(&mut ws).await, message);
        match next_event(&mut events).await {
            Event::Message(m) => assert_eq!(m, message),
            other => panic!("{other:?}"),
        }
    }
    ws.send(Message::binary(vec![5u8; 101])).await.unwrap();
    match next(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), MESSAGE_TOO_BIG),
        other => panic!("{other:?}"),
    }
    backend_first_sees_close(&mut events, MESSAGE_TOO_BIG).await;

    let (proxy, mut events) = limited_proxy(
        "    max_message_size: 50
",
    )
    .await;
    let mut client = raw_ws(proxy.addr(), "/").await;
    client
        .write_all(&client_frame(true, 0, 1, true, &[b'x'; 51]))
        .await
        .unwrap();
    assert_eq!(read_close_code(&mut client).await, MESSAGE_TOO_BIG);
    backend_first_sees_close(&mut events, MESSAGE_TOO_BIG).await;

    // From the backend: one byte over a 100-byte frame limit.
    let backend = spawn_backend(|mut ws| async move {
        ws.send(Message::binary(vec![0u8; 101])).await.unwrap();
        use futures_util::StreamExt;
        while ws.next().await.is_some() {}
    })
    .await;
    let proxy = Proxy::simple(
        &[backend],
        "    max_frame_size: 100
",
    )
    .await;
    let mut client = raw_ws(proxy.addr(), "/").await;
    assert_eq!(read_close_code(&mut client).await, MESSAGE_TOO_BIG);
}

/// Three masked binary fragments of `part` bytes each.
fn three_fragments(part: usize) -> Vec<u8> {
    let mut bytes = client_frame(false, 0, 2, true, &vec![1u8; part]);
    bytes.extend(client_frame(false, 0, 0, true, &vec![2u8; part]));
    bytes.extend(client_frame(true, 0, 0, true, &vec![3u8; part]));
    bytes
}

#[tokio::test]
async fn message_over_max_message_size_in_fragments_is_1009() {
    let (proxy, mut events) = limited_proxy("    max_message_size: 4KiB\n").await;
    let mut client = raw_ws(proxy.addr(), "/").await;
    // 3 x 2 KiB: each frame is fine, the message is not.
    client.write_all(&three_fragments(2048)).await.unwrap();
    assert_eq!(read_close_code(&mut client).await, MESSAGE_TOO_BIG);
    backend_first_sees_close(&mut events, MESSAGE_TOO_BIG).await;
}

#[tokio::test]
async fn message_at_max_message_size_in_fragments_passes() {
    let (proxy, mut events) = limited_proxy("    max_message_size: 4KiB\n").await;
    let mut client = raw_ws(proxy.addr(), "/").await;
    // 3 fragments, 4095 bytes in all: just under the limit.
    let mut bytes = client_frame(false, 0, 2, true, &[1u8; 1365]);
    bytes.extend(client_frame(false, 0, 0, true, &[2u8; 1365]));
    bytes.extend(client_frame(true, 0, 0, true, &[3u8; 1365]));
    // Then a single frame of exactly 4 KiB.
    bytes.extend(client_frame(true, 0, 2, true, &[4u8; 4096]));
    client.write_all(&bytes).await.unwrap();
    let expected = [vec![1u8; 1365], vec![2u8; 1365], vec![3u8; 1365]].concat();
    match next_event(&mut events).await {
        Event::Message(m) => assert_eq!(m, Message::binary(expected.clone())),
        other => panic!("{other:?}"),
    }
    match next_event(&mut events).await {
        Event::Message(m) => assert_eq!(m, Message::binary(vec![4u8; 4096])),
        other => panic!("{other:?}"),
    }
    assert_eq!(read_frame(&mut client).await.unwrap(), (0x82, expected));
    assert_eq!(
        read_frame(&mut client).await.unwrap(),
        (0x82, vec![4u8; 4096])
    );
}

#[tokio::test]
async fn message_limit_resets_between_messages() {
    let (proxy, _events) = limited_proxy("    max_message_size: 4KiB\n").await;
    let mut ws = connect(&proxy.ws_url("/")).await;
    // Ten messages of 3 KiB: 30 KiB in all, each under the limit.
    for i in 0..10u8 {
        ws.send(Message::binary(vec![i; 3072])).await.unwrap();
        assert_eq!(next(&mut ws).await, Message::binary(vec![i; 3072]));
    }
}

#[tokio::test]
async fn over_max_connections_is_503_until_a_place_frees_up() {
    let backend = echo_backend().await;
    let proxy = Cfg::new(&[backend])
        .sections("limits:\n  max_connections: 2\ntimeouts:\n  close: 2s\n  client_handshake: 2s\n")
        .start()
        .await;
    let mut first = connect(&proxy.ws_url("/")).await;
    let mut second = connect(&proxy.ws_url("/")).await;
    for ws in [&mut first, &mut second] {
        ws.send(Message::text("open")).await.unwrap();
        assert_eq!(next(ws).await, Message::text("open"));
    }

    let response = http(proxy.addr(), &upgrade_request("/", "")).await;
    assert_eq!(response.status, 503, "{}", response.raw);
    assert!(!response.body.trim().is_empty(), "503 without a reason");

    // Both sessions still work.
    second.send(Message::text("still")).await.unwrap();
    assert_eq!(next(&mut second).await, Message::text("still"));

    // End one session; its place is given back once it has closed.
    first.close(None).await.unwrap();
    drain(&mut first).await;
    drop(first);
    let (response, _stream) = first_answer_besides_503(&proxy, &upgrade_request("/", "")).await;
    assert_eq!(response.status, 101, "{}", response.raw);
}

/// A client that has sent its close frame sends nothing more, so once the
/// close handshake is done its session ends at once: its place is free
/// although the client never closes its end of the TCP connection, and
/// well before the (long) close timeout would have cut it.
#[tokio::test]
async fn a_closed_session_frees_its_place_without_waiting_for_the_client_fin() {
    let backend = echo_backend().await;
    let proxy = Cfg::new(&[backend])
        .sections(
            "limits:\n  max_connections: 1\ntimeouts:\n  close: 60s\n  client_handshake: 2s\n",
        )
        .start()
        .await;
    let mut lingering = raw_ws(proxy.addr(), "/").await;
    lingering
        .write_all(&client_frame(
            true,
            0,
            0x8,
            true,
            &close_payload(1000, b"bye"),
        ))
        .await
        .unwrap();
    assert_eq!(close_code(&read_close(&mut lingering).await), Some(1000));
    assert!(read_to_eof(&mut lingering).await.is_empty());
    // `lingering` stays open: no FIN from this client.
    let (response, _stream) = first_answer_besides_503(&proxy, &upgrade_request("/", "")).await;
    assert_eq!(response.status, 101, "{}", response.raw);
    drop(lingering);
}

#[tokio::test]
async fn refused_connections_do_not_use_up_places() {
    let backend = echo_backend().await;
    let proxy = Cfg::new(&[backend])
        .sections("limits:\n  max_connections: 1\ntimeouts:\n  close: 2s\n  client_handshake: 2s\n")
        .start()
        .await;
    let mut only = connect(&proxy.ws_url("/")).await;
    for _ in 0..5 {
        assert_eq!(
            http(proxy.addr(), &upgrade_request("/", "")).await.status,
            503
        );
    }
    only.close(None).await.unwrap();
    drain(&mut only).await;
    drop(only);
    let (response, _stream) = first_answer_besides_503(&proxy, &upgrade_request("/", "")).await;
    assert_eq!(response.status, 101, "{}", response.raw);
}

#[tokio::test]
async fn client_that_never_finishes_its_request_is_disconnected() {
    let backend = echo_backend().await;
    let proxy = Cfg::new(&[backend])
        .sections("timeouts:\n  close: 2s\n  client_handshake: 300ms\n")
        .start()
        .await;
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream.write_all(b"GET / HTT").await.unwrap();
    // read_to_eof fails the test if the proxy keeps the connection for WAIT.
    let answer = read_to_eof(&mut stream).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.contains(" 101 "), "{answer}");
}

#[tokio::test]
async fn client_that_sends_nothing_is_disconnected() {
    let backend = echo_backend().await;
    let proxy = Cfg::new(&[backend])
        .sections("timeouts:\n  close: 2s\n  client_handshake: 300ms\n")
        .start()
        .await;
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let answer = read_to_eof(&mut stream).await;
    assert!(
        !String::from_utf8_lossy(&answer).contains(" 101 "),
        "{answer:?}"
    );
}

/// Sends `request` until the answer is not 503 (bounded by [`WAIT`]) and
/// returns that answer's head and stream.
async fn first_answer_besides_503(
    proxy: &Proxy,
    request: &str,
) -> (HttpResponse, tokio::net::TcpStream) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (response, stream) = request_head(proxy.addr(), request).await;
        if response.status != 503 {
            return (response, stream);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still 503 after {WAIT:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn refused_requests_give_their_place_back() {
    let backend = echo_backend().await;
    let proxy = Cfg::new(&[backend])
        .prefix("/echo")
        .sections("limits:\n  max_connections: 1\ntimeouts:\n  close: 2s\n  client_handshake: 2s\n")
        .start()
        .await;
    // Each refusal closes its connection and the place is free again for the
    // next one (retrying briefly on 503: the server may notice the close a
    // moment after the client does).
    for _ in 0..3 {
        let (response, mut stream) =
            first_answer_besides_503(&proxy, &upgrade_request("/nope", "")).await;
        assert_eq!(response.status, 404, "{}", response.raw);
        read_to_eof(&mut stream).await;
    }
    let (response, _stream) = first_answer_besides_503(&proxy, &upgrade_request("/echo", "")).await;
    assert_eq!(response.status, 101, "{}", response.raw);
}
