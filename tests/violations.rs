//! Protocol violations in frames mode: each frame RFC 6455 forbids, sent raw
//! by the client (or by a raw backend after a correct 101), ends the session
//! with the right close code (1002 protocol error, 1007 invalid payload) sent
//! to the offender, and the other peer is told with a close frame too.

mod common;

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const PROTOCOL_ERROR: u16 = 1002;
const INVALID_PAYLOAD: u16 = 1007;

/// Sends `bytes` from a raw client and checks that the client gets a close
/// with `code` and that the (tungstenite) backend gets one with the same code.
async fn client_violation(bytes: Vec<u8>, code: u16) {
    let (backend, mut events) = reporting_backend().await;
    let proxy = Proxy::simple(&[backend], "").await;
    let mut client = raw_ws(proxy.addr(), "/").await;
    client.write_all(&bytes).await.unwrap();
    assert_eq!(read_close_code(&mut client).await, code);
    // Nothing of the offending message reached the backend: its first event
    // is the close (tungstenite delivers only whole messages).
    match next_event(&mut events).await {
        Event::Message(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), code),
        other => panic!("backend: expected close {code} first, got {other:?}"),
    }
}

fn masked(fin: bool, rsv: u8, opcode: u8, payload: &[u8]) -> Vec<u8> {
    client_frame(fin, rsv, opcode, true, payload)
}

#[tokio::test]
async fn unmasked_client_frame_is_1002() {
    client_violation(client_frame(true, 0, 1, false, b"bare"), PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn rsv1_without_compression_is_1002() {
    client_violation(masked(true, 0b100, 1, b"rsv1"), PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn rsv2_and_rsv3_are_1002() {
    client_violation(masked(true, 0b010, 2, b"rsv2"), PROTOCOL_ERROR).await;
    client_violation(masked(true, 0b001, 2, b"rsv3"), PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn reserved_data_opcode_is_1002() {
    client_violation(masked(true, 0, 3, b"op3"), PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn reserved_control_opcode_is_1002() {
    client_violation(masked(true, 0, 0xb, b"op11"), PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn fragmented_ping_is_1002() {
    client_violation(masked(false, 0, 9, b"frag ping"), PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn ping_with_126_byte_payload_is_1002() {
    client_violation(masked(true, 0, 9, &[b'p'; 126]), PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn ping_with_125_byte_payload_is_fine() {
    // The control for the test above: 125 bytes is the largest allowed.
    let (backend, mut events) = reporting_backend().await;
    let proxy = Proxy::simple(&[backend], "").await;
    let mut client = raw_ws(proxy.addr(), "/").await;
    client
        .write_all(&masked(true, 0, 9, &[b'p'; 125]))
        .await
        .unwrap();
    assert_eq!(
        read_frame(&mut client).await.unwrap(),
        (0x8a, vec![b'p'; 125])
    );
    match next_event(&mut events).await {
        Event::Message(m) => assert_eq!(m.into_data().len(), 125),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn continuation_without_start_is_1002() {
    client_violation(masked(true, 0, 0, b"orphan"), PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn new_message_while_a_fragmented_one_is_open_is_1002() {
    let mut bytes = masked(false, 0, 1, b"first half");
    bytes.extend(masked(true, 0, 1, b"new text"));
    client_violation(bytes, PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn new_binary_while_a_fragmented_text_is_open_is_1002() {
    let mut bytes = masked(false, 0, 1, b"first half");
    bytes.extend(masked(true, 0, 2, b"binary"));
    client_violation(bytes, PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn invalid_utf8_text_is_1007() {
    client_violation(
        masked(true, 0, 1, &[b'o', b'k', 0xff, 0xfe]),
        INVALID_PAYLOAD,
    )
    .await;
}

#[tokio::test]
async fn utf8_surrogate_is_1007() {
    // U+D800 encoded as UTF-8 (CESU), forbidden in UTF-8.
    client_violation(masked(true, 0, 1, &[0xed, 0xa0, 0x80]), INVALID_PAYLOAD).await;
}

#[tokio::test]
async fn text_ending_inside_a_utf8_sequence_is_1007() {
    client_violation(masked(true, 0, 1, &[b'a', 0xe2, 0x82]), INVALID_PAYLOAD).await;
}

#[tokio::test]
async fn invalid_utf8_split_across_fragments_is_1007() {
    // "a" then the first two bytes of "€" (a valid prefix), then a
    // continuation that does not complete the sequence.
    let mut bytes = masked(false, 0, 1, &[b'a', 0xe2, 0x82]);
    bytes.extend(masked(true, 0, 0, &[0x41]));
    client_violation(bytes, INVALID_PAYLOAD).await;
}

#[tokio::test]
async fn utf8_sequence_split_across_fragments_is_fine() {
    // The control for the test above: the same prefix completed.
    let (backend, mut events) = reporting_backend().await;
    let proxy = Proxy::simple(&[backend], "").await;
    let mut client = raw_ws(proxy.addr(), "/").await;
    let mut bytes = masked(false, 0, 1, &[b'a', 0xe2, 0x82]);
    bytes.extend(masked(true, 0, 0, &[0xac]));
    client.write_all(&bytes).await.unwrap();
    match next_event(&mut events).await {
        Event::Message(m) => assert_eq!(m.into_text().unwrap().as_str(), "a€"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        read_frame(&mut client).await.unwrap(),
        (0x81, "a€".as_bytes().to_vec())
    );
}

#[tokio::test]
async fn close_with_one_byte_payload_is_1002() {
    client_violation(masked(true, 0, 8, &[0x03]), PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn close_with_code_1005_is_1002() {
    client_violation(
        masked(true, 0, 8, &close_payload(1005, b"")),
        PROTOCOL_ERROR,
    )
    .await;
}

#[tokio::test]
async fn close_with_code_999_is_1002() {
    client_violation(masked(true, 0, 8, &close_payload(999, b"")), PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn close_with_code_1006_is_1002() {
    client_violation(
        masked(true, 0, 8, &close_payload(1006, b"")),
        PROTOCOL_ERROR,
    )
    .await;
}

#[tokio::test]
async fn close_with_invalid_utf8_reason_is_1007() {
    client_violation(
        masked(true, 0, 8, &close_payload(1000, &[b'b', 0xff])),
        INVALID_PAYLOAD,
    )
    .await;
}

#[tokio::test]
async fn fragmented_close_is_1002() {
    client_violation(
        masked(false, 0, 8, &close_payload(1000, b"")),
        PROTOCOL_ERROR,
    )
    .await;
}

#[tokio::test]
async fn frames_before_the_violation_are_delivered() {
    let (backend, mut events) = reporting_backend().await;
    let proxy = Proxy::simple(&[backend], "").await;
    let mut client = raw_ws(proxy.addr(), "/").await;
    let mut bytes = masked(true, 0, 1, b"good");
    bytes.extend(masked(true, 0, 3, b"bad"));
    client.write_all(&bytes).await.unwrap();
    match next_event(&mut events).await {
        Event::Message(m) => assert_eq!(m.into_text().unwrap().as_str(), "good"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        backend_close(&mut events).await.map(|(c, _)| c),
        Some(PROTOCOL_ERROR)
    );
    assert_eq!(read_close_code(&mut client).await, PROTOCOL_ERROR);
}

/// A raw backend that sends `bytes` right after its 101 and reports the first
/// frame it gets back (opcode byte, payload, masked).
async fn misbehaving_backend(
    bytes: Vec<u8>,
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Option<(u8, Vec<u8>, bool)>>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = raw_ws_backend(move |mut stream: TcpStream, _head| {
        let bytes = bytes.clone();
        let tx = tx.clone();
        async move {
            stream.write_all(&bytes).await.unwrap();
            let _ = tx.send(read_frame_masked(&mut stream).await);
            let _ = read_to_eof(&mut stream).await;
        }
    })
    .await;
    (addr, rx)
}

async fn backend_violation(bytes: Vec<u8>, code: u16) {
    let (backend, mut frames) = misbehaving_backend(bytes).await;
    let proxy = Proxy::simple(&[backend], "").await;
    let mut client = raw_ws(proxy.addr(), "/").await;
    assert_eq!(read_close_code(&mut client).await, code);
    let (b0, payload, was_masked) = tokio::time::timeout(WAIT, frames.recv())
        .await
        .expect("backend got nothing in time")
        .unwrap()
        .expect("backend got no frame, only a TCP close");
    assert_eq!(b0, 0x88, "backend should get a close frame");
    assert!(was_masked, "frames to the backend must be masked");
    assert_eq!(close_code(&payload), Some(code));
}

#[tokio::test]
async fn masked_frame_from_the_backend_is_1002() {
    backend_violation(client_frame(true, 0, 2, true, b"masked"), PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn invalid_utf8_from_the_backend_is_1007() {
    backend_violation(server_frame(true, 0, 1, &[0xc3, 0x28]), INVALID_PAYLOAD).await;
}

#[tokio::test]
async fn rsv1_from_the_backend_is_1002() {
    backend_violation(server_frame(true, 0b100, 2, b"rsv"), PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn reserved_opcode_from_the_backend_is_1002() {
    backend_violation(server_frame(true, 0, 4, b"op4"), PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn bad_close_code_from_the_backend_is_1002() {
    backend_violation(
        server_frame(true, 0, 8, &close_payload(1005, b"")),
        PROTOCOL_ERROR,
    )
    .await;
}

/// A raw backend that accepts permessage-deflate and reports the frames it
/// receives (first byte, unmasked payload).
async fn deflate_backend() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<(u8, Vec<u8>)>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = raw_backend(move |mut stream| {
        let tx = tx.clone();
        async move {
            let head = read_head(&mut stream).await;
            let answer =
                switching_protocols(&head, "Sec-WebSocket-Extensions: permessage-deflate\r\n");
            stream.write_all(answer.as_bytes()).await.unwrap();
            while let Some((b0, payload)) = read_frame(&mut stream).await {
                let _ = tx.send((b0, payload));
            }
        }
    })
    .await;
    (addr, rx)
}

const DEFLATE_OFFER: &str =
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";

#[tokio::test]
async fn rsv1_with_negotiated_permessage_deflate_passes_without_utf8_check() {
    let (backend, mut frames) = deflate_backend().await;
    let proxy = Proxy::simple(&[backend], "").await;
    let (mut client, response) =
        raw_ws_with(proxy.addr(), &upgrade_request("/", DEFLATE_OFFER)).await;
    assert_eq!(
        response.header("sec-websocket-extensions"),
        Some("permessage-deflate")
    );
    // Compressed text is not UTF-8; only the endpoints can inflate it.
    let compressed = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    client
        .write_all(&masked(true, 0b100, 1, &compressed))
        .await
        .unwrap();
    let got = tokio::time::timeout(WAIT, frames.recv())
        .await
        .expect("backend got nothing in time")
        .unwrap();
    assert_eq!(got, (0xc1, compressed.to_vec()));
}

#[tokio::test]
async fn rsv1_on_a_continuation_is_1002_even_with_deflate() {
    let (backend, mut frames) = deflate_backend().await;
    let proxy = Proxy::simple(&[backend], "").await;
    let (mut client, _) = raw_ws_with(proxy.addr(), &upgrade_request("/", DEFLATE_OFFER)).await;
    let mut bytes = masked(false, 0b100, 2, &[1, 2, 3]);
    bytes.extend(masked(true, 0b100, 0, &[4, 5]));
    client.write_all(&bytes).await.unwrap();
    assert_eq!(read_close_code(&mut client).await, PROTOCOL_ERROR);
    let first = tokio::time::timeout(WAIT, frames.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, (0x42, vec![1, 2, 3]));
    let close = tokio::time::timeout(WAIT, frames.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(close.0, 0x88);
    assert_eq!(close_code(&close.1), Some(PROTOCOL_ERROR));
}

#[tokio::test]
async fn payload_length_with_the_top_bit_set_is_1002() {
    // RFC 6455 section 5.2: the most significant bit of a 64-bit length
    // must be 0.
    let mut bytes = vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1];
    bytes.extend([0x12, 0x34, 0x56, 0x78]);
    bytes.extend([0u8; 8]);
    client_violation(bytes, PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn close_with_126_byte_payload_is_1002() {
    client_violation(
        masked(true, 0, 8, &close_payload(1000, &[b'r'; 124])),
        PROTOCOL_ERROR,
    )
    .await;
}

#[tokio::test]
async fn unmasked_close_from_the_client_is_1002() {
    client_violation(
        client_frame(true, 0, 8, false, &close_payload(1000, b"")),
        PROTOCOL_ERROR,
    )
    .await;
}
