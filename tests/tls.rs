//! TLS listeners: a listener with `tls: {cert, key}` terminates TLS with the
//! given PEM files; WebSocket sessions over it behave as over plain TCP (text,
//! binary, big messages, close codes), the backend is told the client came
//! over https, plain and TLS listeners work side by side, and a client that
//! does not trust the certificate cannot connect.

mod common;

use std::net::SocketAddr;

use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// YAML with a TLS listener (and optionally a plain one after it).
fn tls_yaml(pki: &TestPki, backend: SocketAddr, also_plain: bool) -> String {
    let plain = if also_plain {
        "  - bind: \"127.0.0.1:0\"\n"
    } else {
        ""
    };
    format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\n    tls:\n      cert: \"{}\"\n      key: \"{}\"\n{plain}\
         routes:\n  - path_prefix: /\n    backend: b\nbackends:\n  b:\n    servers:\n      - url: \"ws://{backend}\"\n\
         timeouts:\n  close: 2s\n  client_handshake: 2s\n",
        pki.cert.display(),
        pki.key.display()
    )
}

fn wss_url(addr: SocketAddr, path: &str) -> String {
    format!("wss://localhost:{}{path}", addr.port())
}

#[tokio::test]
async fn echo_text_and_binary_over_tls() {
    let pki = TestPki::new();
    let backend = echo_backend().await;
    let proxy = Proxy::start(&tls_yaml(&pki, backend, false)).await;
    let mut ws = connect_tls(&wss_url(proxy.addr(), "/"), &pki).await;
    ws.send(Message::text("secret hello")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("secret hello"));
    ws.send(Message::binary(vec![9u8, 8, 7, 0])).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(vec![9u8, 8, 7, 0]));
}

#[tokio::test]
async fn big_message_over_tls() {
    let pki = TestPki::new();
    let backend = echo_backend().await;
    let proxy = Proxy::start(&tls_yaml(&pki, backend, false)).await;
    let mut ws = connect_tls(&wss_url(proxy.addr(), "/"), &pki).await;
    // Larger than both the relay's chunk buffer and a TLS record.
    let big: Vec<u8> = (0..2_000_000u32).map(|i| (i * 13 % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(big));
    let text = "ωσ ✓ ".repeat(50_000);
    ws.send(Message::text(text.clone())).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text(text));
}

#[tokio::test]
async fn close_code_over_tls_reaches_the_backend_and_comes_back() {
    let pki = TestPki::new();
    let (backend, mut events) = reporting_backend().await;
    let proxy = Proxy::start(&tls_yaml(&pki, backend, false)).await;
    let mut ws = connect_tls(&wss_url(proxy.addr(), "/"), &pki).await;
    ws.close(Some(CloseFrame {
        code: CloseCode::Library(4002),
        reason: "tls bye".into(),
    }))
    .await
    .unwrap();
    assert_eq!(
        backend_close(&mut events).await,
        Some((4002, "tls bye".to_string()))
    );
    match drain(&mut ws).await {
        Some(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 4002),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn backend_close_over_tls_reaches_the_client() {
    let pki = TestPki::new();
    let backend = spawn_backend(|mut ws| async move {
        ws.close(Some(CloseFrame {
            code: CloseCode::Policy,
            reason: "not allowed".into(),
        }))
        .await
        .unwrap();
        use futures_util::StreamExt;
        while ws.next().await.is_some() {}
    })
    .await;
    let proxy = Proxy::start(&tls_yaml(&pki, backend, false)).await;
    let mut ws = connect_tls(&wss_url(proxy.addr(), "/"), &pki).await;
    match next(&mut ws).await {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 1008);
            assert_eq!(frame.reason.as_str(), "not allowed");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn backend_is_told_the_client_came_over_https() {
    let pki = TestPki::new();
    let (backend, mut seen) = recording_backend().await;
    let proxy = Proxy::start(&tls_yaml(&pki, backend, false)).await;
    let _ws = connect_tls(&wss_url(proxy.addr(), "/"), &pki).await;
    let request = next_request(&mut seen).await;
    assert_eq!(request.one("x-forwarded-proto"), "https");
    assert_eq!(request.one("x-forwarded-for"), "127.0.0.1");
    let host = format!("localhost:{}", proxy.addr().port());
    assert_eq!(request.one("x-forwarded-host"), host);
    assert_eq!(
        request.one("forwarded"),
        format!("for=127.0.0.1;proto=https;host=\"{host}\"")
    );
}

#[tokio::test]
async fn plain_and_tls_listeners_side_by_side() {
    let pki = TestPki::new();
    let (backend, mut seen) = recording_backend().await;
    let proxy = Proxy::start(&tls_yaml(&pki, backend, true)).await;
    assert_eq!(proxy.addrs.len(), 2);
    let (tls_addr, plain_addr) = (proxy.addrs[0], proxy.addrs[1]);
    assert_ne!(tls_addr, plain_addr);

    let mut secure = connect_tls(&wss_url(tls_addr, "/"), &pki).await;
    assert_eq!(
        next_request(&mut seen).await.one("x-forwarded-proto"),
        "https"
    );
    let mut plain = connect(&format!("ws://{plain_addr}/")).await;
    assert_eq!(
        next_request(&mut seen).await.one("x-forwarded-proto"),
        "http"
    );

    secure.send(Message::text("over tls")).await.unwrap();
    plain.send(Message::text("in the clear")).await.unwrap();
    assert_eq!(next(&mut secure).await, Message::text("over tls"));
    assert_eq!(next(&mut plain).await, Message::text("in the clear"));

    // A plain HTTP request on the TLS port is not served as HTTP.
    let answer = raw_request(tls_addr, &upgrade_request("/", "")).await;
    assert!(!answer.starts_with("HTTP/1.1 101"), "{answer}");
}

#[tokio::test]
async fn client_that_does_not_trust_the_ca_cannot_connect() {
    let pki = TestPki::new();
    let backend = echo_backend().await;
    let proxy = Proxy::start(&tls_yaml(&pki, backend, false)).await;
    // A client trusting another CA only.
    let stranger = TestPki::new();
    let connector = tokio_tungstenite::Connector::Rustls(stranger.client_config());
    let result = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async_tls_with_config(
            wss_url(proxy.addr(), "/"),
            None,
            false,
            Some(connector),
        ),
    )
    .await
    .expect("the TLS attempt did not end in time");
    // tokio-tungstenite reports rustls' verdict as an I/O error of the TLS
    // handshake ("invalid peer certificate: ...").
    match result {
        Err(tokio_tungstenite::tungstenite::Error::Tls(_)) => {}
        Err(e) if e.to_string().contains("invalid peer certificate") => {}
        Err(e) => panic!("expected a certificate error, got {e}"),
        Ok(_) => panic!("connected without trusting the certificate"),
    }
    // The listener still serves clients that do trust it.
    let mut ws = connect_tls(&wss_url(proxy.addr(), "/"), &pki).await;
    ws.send(Message::text("still up")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("still up"));
}

#[tokio::test]
async fn over_the_connection_limit_a_tls_client_gets_503() {
    let pki = TestPki::new();
    let backend = echo_backend().await;
    let yaml = tls_yaml(&pki, backend, false)
        .replace("timeouts:", "limits:\n  max_connections: 1\ntimeouts:");
    let proxy = Proxy::start(&yaml).await;
    let mut first = connect_tls(&wss_url(proxy.addr(), "/"), &pki).await;
    first.send(Message::text("holding")).await.unwrap();
    assert_eq!(next(&mut first).await, Message::text("holding"));
    let connector = tokio_tungstenite::Connector::Rustls(pki.client_config());
    let result = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async_tls_with_config(
            wss_url(proxy.addr(), "/"),
            None,
            false,
            Some(connector),
        ),
    )
    .await
    .expect("no answer in time");
    match result {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        Err(e) => panic!("expected an HTTP 503, got {e}"),
        Ok(_) => panic!("connected beyond max_connections"),
    }
}

#[tokio::test]
async fn tls_client_that_never_handshakes_is_disconnected() {
    let pki = TestPki::new();
    let backend = echo_backend().await;
    let yaml =
        tls_yaml(&pki, backend, false).replace("client_handshake: 2s", "client_handshake: 300ms");
    let proxy = Proxy::start(&yaml).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    // read_to_eof fails the test if the proxy keeps the connection for WAIT.
    assert!(read_to_eof(&mut stream).await.is_empty());
}

/// A tunnel behind TLS cannot splice (records pass through rustls): it
/// copies, and big messages still arrive intact both ways.
#[tokio::test]
async fn tunnel_over_tls_relays_big_messages() {
    let pki = TestPki::new();
    let backend = echo_backend().await;
    let yaml = tls_yaml(&pki, backend, false)
        .replace("    backend: b\n", "    backend: b\n    mode: tunnel\n");
    assert!(yaml.contains("mode: tunnel"));
    let proxy = Proxy::start(&yaml).await;
    let mut ws = connect_tls(&wss_url(proxy.addr(), "/"), &pki).await;
    let big: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
    for _ in 0..3 {
        ws.send(Message::binary(big.clone())).await.unwrap();
        assert_eq!(next(&mut ws).await, Message::binary(big.clone()));
    }
    ws.send(Message::text("small after big")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("small after big"));
}
