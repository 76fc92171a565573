//! Choosing and connecting to a backend server: round robin over the servers,
//! retries on another server within the retry budget, and the HTTP answer the
//! client gets when no backend accepts (502 for refused or broken upgrades and
//! unreachable servers, 504 for a backend that does not answer in time) —
//! never a 101 followed by an immediate close.

mod common;

use std::net::SocketAddr;

use common::*;
use futures_util::SinkExt;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

/// Status of an upgrade request for `/` (reading only the response head, so a
/// 101 does not wait for the session to end).
async fn upgrade_status(proxy: &Proxy) -> u16 {
    let (response, _stream) = request_head(proxy.addr(), &upgrade_request("/", "")).await;
    response.status
}

/// A raw backend that answers every upgrade with `answer` after reading the
/// request head, then keeps the socket open until the peer closes it.
async fn answering_backend(answer: fn(&str) -> String) -> SocketAddr {
    raw_backend(move |mut stream| async move {
        let head = read_head(&mut stream).await;
        let _ = stream.write_all(answer(&head).as_bytes()).await;
        let _ = read_to_eof(&mut stream).await;
    })
    .await
}

#[tokio::test]
async fn dead_backend_is_502() {
    let dead = dead_address().await;
    let proxy = Proxy::simple(&[dead], "").await;
    let response = http(proxy.addr(), &upgrade_request("/", "")).await;
    assert!(
        response.raw.starts_with("HTTP/1.1 502 "),
        "{}",
        response.raw
    );
    assert!(!response.body.trim().is_empty(), "502 without a reason");
}

#[tokio::test]
async fn all_servers_dead_is_502() {
    let (a, b) = (dead_address().await, dead_address().await);
    let proxy = Proxy::simple(&[a, b], "").await;
    for _ in 0..3 {
        let response = http(proxy.addr(), &upgrade_request("/", "")).await;
        assert_eq!(response.status, 502, "{}", response.raw);
    }
}

#[tokio::test]
async fn first_server_dead_second_alive_every_connection_succeeds() {
    let dead = dead_address().await;
    let alive = echo_backend().await;
    let proxy = Proxy::simple(&[dead, alive], "").await;
    // Round robin starts on the dead server every other time: the retry on
    // the next server must cover each of those.
    for i in 0..6 {
        let mut ws = connect(&proxy.ws_url("/")).await;
        ws.send(Message::text(format!("try {i}"))).await.unwrap();
        assert_eq!(next(&mut ws).await, Message::text(format!("try {i}")));
        ws.close(None).await.unwrap();
    }
}

#[tokio::test]
async fn second_server_dead_first_alive_every_connection_succeeds() {
    let dead = dead_address().await;
    let alive = echo_backend().await;
    let proxy = Proxy::simple(&[alive, dead], "").await;
    for _ in 0..6 {
        assert_eq!(upgrade_status(&proxy).await, 101);
    }
}

#[tokio::test]
async fn round_robin_spreads_sessions_over_the_servers() {
    let (a, mut seen_a) = recording_backend().await;
    let (b, mut seen_b) = recording_backend().await;
    let proxy = Proxy::simple(&[a, b], "").await;
    let mut streams = Vec::new();
    for _ in 0..4 {
        let (response, stream) = request_head(proxy.addr(), &upgrade_request("/", "")).await;
        assert_eq!(response.status, 101);
        streams.push(stream);
    }
    let mut count = (0, 0);
    while seen_a.try_recv().is_ok() {
        count.0 += 1;
    }
    while seen_b.try_recv().is_ok() {
        count.1 += 1;
    }
    assert_eq!(count, (2, 2));
}

#[tokio::test]
async fn without_retries_a_dead_server_fails_the_sessions_it_is_picked_for() {
    let dead = dead_address().await;
    let alive = echo_backend().await;
    let proxy = Cfg::new(&[dead, alive])
        .backend("    connect_timeout: 2s\n    handshake_timeout: 2s\n    retries: 0\n")
        .start()
        .await;
    // Round robin alternates: of two consecutive sessions one lands on the
    // dead server and, with no retry, gets 502; the other gets 101.
    let mut statuses = vec![upgrade_status(&proxy).await, upgrade_status(&proxy).await];
    statuses.sort();
    assert_eq!(statuses, [101, 502]);
}

#[tokio::test]
async fn retry_budget_covers_two_dead_servers_by_default() {
    let (d1, d2) = (dead_address().await, dead_address().await);
    let alive = echo_backend().await;
    // Default retries with 3 servers: min(3 - 1, 2) = 2, so every start
    // position reaches the live server.
    let proxy = Proxy::simple(&[d1, d2, alive], "").await;
    for _ in 0..6 {
        assert_eq!(upgrade_status(&proxy).await, 101);
    }
}

#[tokio::test]
async fn backend_refusing_the_upgrade_is_502() {
    let backend =
        answering_backend(|_| "HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n".into()).await;
    let proxy = Proxy::simple(&[backend], "").await;
    let response = http(proxy.addr(), &upgrade_request("/", "")).await;
    assert_eq!(response.status, 502, "{}", response.raw);
}

#[tokio::test]
async fn refusing_server_is_retried_on_the_next_one() {
    let refusing =
        answering_backend(|_| "HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n".into()).await;
    let alive = echo_backend().await;
    let proxy = Proxy::simple(&[refusing, alive], "").await;
    for _ in 0..4 {
        assert_eq!(upgrade_status(&proxy).await, 101);
    }
}

#[tokio::test]
async fn wrong_accept_key_is_502() {
    let backend = answering_backend(|_| {
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
            .into()
    })
    .await;
    let proxy = Proxy::simple(&[backend], "").await;
    let response = http(proxy.addr(), &upgrade_request("/", "")).await;
    assert_eq!(response.status, 502, "{}", response.raw);
}

#[tokio::test]
async fn missing_upgrade_header_in_the_101_is_502() {
    let backend = answering_backend(|head| {
        switching_protocols(head, "").replace("Upgrade: websocket\r\n", "")
    })
    .await;
    let proxy = Proxy::simple(&[backend], "").await;
    let response = http(proxy.addr(), &upgrade_request("/", "")).await;
    assert_eq!(response.status, 502, "{}", response.raw);
}

#[tokio::test]
async fn unoffered_extension_in_the_101_is_502() {
    let backend = answering_backend(|head| {
        switching_protocols(head, "Sec-WebSocket-Extensions: permessage-deflate\r\n")
    })
    .await;
    let proxy = Proxy::simple(&[backend], "").await;
    let response = http(proxy.addr(), &upgrade_request("/", "")).await;
    assert_eq!(response.status, 502, "{}", response.raw);
}

#[tokio::test]
async fn correct_raw_101_is_accepted() {
    // The control for the tests above: the same raw backend with a correct
    // answer gives the client its 101.
    let backend = answering_backend(|head| switching_protocols(head, "")).await;
    let proxy = Proxy::simple(&[backend], "").await;
    assert_eq!(upgrade_status(&proxy).await, 101);
}

#[tokio::test]
async fn backend_closing_without_an_answer_is_502() {
    let backend = raw_backend(|mut stream| async move {
        let _ = read_head(&mut stream).await;
        drop(stream);
    })
    .await;
    let proxy = Proxy::simple(&[backend], "").await;
    let response = http(proxy.addr(), &upgrade_request("/", "")).await;
    assert_eq!(response.status, 502, "{}", response.raw);
}

#[tokio::test]
async fn backend_that_never_answers_is_504() {
    let silent = raw_backend(|mut stream| async move {
        // Read the request, then say nothing until the proxy gives up.
        let _ = read_to_eof(&mut stream).await;
    })
    .await;
    let proxy = Cfg::new(&[silent])
        .backend("    connect_timeout: 2s\n    handshake_timeout: 300ms\n    retries: 0\n")
        .start()
        .await;
    let response = http(proxy.addr(), &upgrade_request("/", "")).await;
    assert_eq!(response.status, 504, "{}", response.raw);
}

#[tokio::test]
async fn silent_server_is_retried_on_the_next_one() {
    let silent = raw_backend(|mut stream| async move {
        let _ = read_to_eof(&mut stream).await;
    })
    .await;
    let alive = echo_backend().await;
    let proxy = Cfg::new(&[silent, alive])
        .backend("    connect_timeout: 2s\n    handshake_timeout: 300ms\n    retries: 1\n")
        .start()
        .await;
    for _ in 0..2 {
        assert_eq!(upgrade_status(&proxy).await, 101);
    }
}

#[tokio::test]
async fn a_server_given_by_name_is_resolved_and_reached() {
    let backend = echo_backend().await;
    let yaml = Cfg::new(&[backend]).yaml().replace(
        &format!("ws://{backend}"),
        &format!("ws://localhost:{}", backend.port()),
    );
    assert!(yaml.contains("ws://localhost:"), "{yaml}");
    let proxy = Proxy::start(&yaml).await;
    // The first session resolves the name; the next ones use the cached answer.
    for i in 0..3 {
        let mut client = connect(&proxy.ws_url("/")).await;
        let text = format!("by name {i}");
        client.send(Message::text(text.clone())).await.unwrap();
        assert_eq!(next(&mut client).await, Message::text(text));
    }
}

#[tokio::test]
async fn a_server_name_that_does_not_resolve_is_502_or_504() {
    // `.invalid` never resolves (RFC 6761). Where DNS does not answer at all,
    // the connect timeout ends the lookup: 504.
    let yaml = Cfg::new(&[dead_address().await])
        .yaml()
        .replace("ws://127.0.0.1:", "ws://no-such-server.invalid:");
    let proxy = Proxy::start(&yaml).await;
    let response = http(proxy.addr(), &upgrade_request("/", "")).await;
    assert!([502, 504].contains(&response.status), "{}", response.raw);
    assert!(
        response.body.contains("connect to no-such-server.invalid:"),
        "{}",
        response.body
    );
}

#[tokio::test]
async fn backend_connections_take_the_source_addresses_in_turn() {
    let (backend, mut sources) = source_reporting_backend().await;
    let proxy = Cfg::new(&[backend])
        .backend(&format!(
            "{BACKEND_DEFAULTS}    source_addresses: [127.0.0.2, \"127.0.0.3\"]\n"
        ))
        .start()
        .await;
    let mut clients = Vec::new();
    let mut seen = Vec::new();
    for i in 0..4 {
        let mut client = connect(&proxy.ws_url("/")).await;
        let text = format!("message {i}");
        client.send(Message::text(text.clone())).await.unwrap();
        assert_eq!(next(&mut client).await, Message::text(text));
        let source = tokio::time::timeout(WAIT, sources.recv())
            .await
            .unwrap()
            .unwrap();
        assert_ne!(source.port(), 0);
        seen.push(source.ip().to_string());
        // Kept open: the sessions run side by side.
        clients.push(client);
    }
    assert_eq!(seen, ["127.0.0.2", "127.0.0.3", "127.0.0.2", "127.0.0.3"]);
}

#[tokio::test]
async fn a_failed_connect_from_a_source_address_names_it_in_the_502() {
    let dead = dead_address().await;
    let proxy = Cfg::new(&[dead])
        .backend(&format!(
            "{BACKEND_DEFAULTS}    source_addresses: [127.0.0.2]\n"
        ))
        .start()
        .await;
    let response = http(proxy.addr(), &upgrade_request("/", "")).await;
    assert_eq!(response.status, 502, "{}", response.raw);
    assert!(
        response
            .body
            .contains(&format!("connect to {dead} failed: from 127.0.0.2: ")),
        "{}",
        response.body
    );
}

#[tokio::test]
async fn a_source_address_of_another_host_stops_the_start() {
    let dead = dead_address().await;
    // 192.0.2.0/24 is reserved for documentation: never an address of this host.
    let yaml = Cfg::new(&[dead])
        .backend(&format!(
            "{BACKEND_DEFAULTS}    source_addresses: [127.0.0.2, 192.0.2.1]\n"
        ))
        .yaml();
    let config = wsgate::config::Config::from_yaml(&yaml, "test.yaml").unwrap();
    match wsgate::server::Server::bind(config).await {
        Err(e @ wsgate::server::ServerError::SourceAddress { .. }) => {
            let text = e.to_string();
            assert!(
                text.starts_with("backends.b.source_addresses: cannot connect from 192.0.2.1: "),
                "{text}"
            );
        }
        other => panic!("expected a source address error, got {other:?}"),
    }
}
