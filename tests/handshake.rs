//! The opening handshake through wsgate: every malformed upgrade gets its
//! precise HTTP answer (400/426/404 with a reason in the body) and never
//! reaches a backend; subprotocols and extensions are negotiated by the
//! backend and passed back to the client (frames mode forwards only the
//! extensions it can relay, tunnel mode forwards all); and the request the
//! backend sees carries the client's end-to-end headers, the path and query
//! (rewritten by `strip_prefix`), and forwarding headers set by wsgate itself.

mod common;

use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// A request built from header lines, with the blank line added.
fn request(lines: &[&str]) -> String {
    let mut out = lines.join("\r\n");
    out.push_str("\r\n\r\n");
    out
}

/// Sends `raw` to a proxy on a recording backend and returns the answer,
/// checking that the backend never saw a handshake.
async fn refused(raw: &str) -> HttpResponse {
    let (backend, mut seen) = recording_backend().await;
    let proxy = Proxy::simple(&[backend], "").await;
    let response = http(proxy.addr(), raw).await;
    assert!(
        seen.try_recv().is_err(),
        "a refused upgrade reached the backend"
    );
    response
}

fn assert_body_mentions(response: &HttpResponse, words: &str) {
    assert!(
        response
            .body
            .to_ascii_lowercase()
            .contains(&words.to_ascii_lowercase()),
        "body should mention {words:?}: {}",
        response.raw
    );
}

#[tokio::test]
async fn post_is_400() {
    let response = refused(&request(&[
        "POST / HTTP/1.1",
        "Host: localhost",
        "Upgrade: websocket",
        "Connection: Upgrade",
        &format!("Sec-WebSocket-Key: {KEY}"),
        "Sec-WebSocket-Version: 13",
        "Content-Length: 0",
    ]))
    .await;
    assert_eq!(response.status, 400, "{}", response.raw);
    assert_body_mentions(&response, "GET");
}

#[tokio::test]
async fn http_1_0_is_400() {
    let response = refused(&request(&[
        "GET / HTTP/1.0",
        "Host: localhost",
        "Upgrade: websocket",
        "Connection: Upgrade",
        &format!("Sec-WebSocket-Key: {KEY}"),
        "Sec-WebSocket-Version: 13",
    ]))
    .await;
    assert_eq!(response.status, 400, "{}", response.raw);
    assert_body_mentions(&response, "HTTP/1.1");
}

#[tokio::test]
async fn plain_get_is_426_with_upgrade_websocket() {
    let response = refused(&request(&["GET / HTTP/1.1", "Host: localhost"])).await;
    assert_eq!(response.status, 426, "{}", response.raw);
    assert_eq!(response.header("upgrade"), Some("websocket"));
    assert_body_mentions(&response, "websocket");
}

#[tokio::test]
async fn upgrade_h2c_is_400() {
    let response = refused(&request(&[
        "GET / HTTP/1.1",
        "Host: localhost",
        "Upgrade: h2c",
        "Connection: Upgrade, HTTP2-Settings",
        "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
        &format!("Sec-WebSocket-Key: {KEY}"),
        "Sec-WebSocket-Version: 13",
    ]))
    .await;
    assert_eq!(response.status, 400, "{}", response.raw);
    assert_body_mentions(&response, "websocket");
}

#[tokio::test]
async fn connection_without_upgrade_is_400() {
    let response = refused(&request(&[
        "GET / HTTP/1.1",
        "Host: localhost",
        "Upgrade: websocket",
        "Connection: keep-alive",
        &format!("Sec-WebSocket-Key: {KEY}"),
        "Sec-WebSocket-Version: 13",
    ]))
    .await;
    assert_eq!(response.status, 400, "{}", response.raw);
    assert_body_mentions(&response, "upgrade");
}

#[tokio::test]
async fn version_8_is_426_with_version_13() {
    let response = refused(&request(&[
        "GET / HTTP/1.1",
        "Host: localhost",
        "Upgrade: websocket",
        "Connection: Upgrade",
        &format!("Sec-WebSocket-Key: {KEY}"),
        "Sec-WebSocket-Version: 8",
    ]))
    .await;
    assert_eq!(response.status, 426, "{}", response.raw);
    assert_eq!(response.header("sec-websocket-version"), Some("13"));
    assert_body_mentions(&response, "13");
}

#[tokio::test]
async fn missing_key_is_400() {
    let response = refused(&request(&[
        "GET / HTTP/1.1",
        "Host: localhost",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 13",
    ]))
    .await;
    assert_eq!(response.status, 400, "{}", response.raw);
    assert_body_mentions(&response, "Sec-WebSocket-Key");
}

#[tokio::test]
async fn key_that_is_not_16_bytes_is_400() {
    // base64 of "the sample" (10 bytes).
    let response = refused(&request(&[
        "GET / HTTP/1.1",
        "Host: localhost",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZQ==",
        "Sec-WebSocket-Version: 13",
    ]))
    .await;
    assert_eq!(response.status, 400, "{}", response.raw);
    assert_body_mentions(&response, "Sec-WebSocket-Key");
}

#[tokio::test]
async fn key_that_is_not_base64_is_400() {
    let response = refused(&request(&[
        "GET / HTTP/1.1",
        "Host: localhost",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!==",
        "Sec-WebSocket-Version: 13",
    ]))
    .await;
    assert_eq!(response.status, 400, "{}", response.raw);
    assert_body_mentions(&response, "Sec-WebSocket-Key");
}

#[tokio::test]
async fn no_route_is_404() {
    let (backend, mut seen) = recording_backend().await;
    let proxy = Cfg::new(&[backend]).prefix("/echo").start().await;
    let response = http(proxy.addr(), &upgrade_request("/nope", "")).await;
    assert_eq!(response.status, 404, "{}", response.raw);
    assert_body_mentions(&response, "route");
    // A prefix matches whole segments: /echoes is not /echo.
    let response = http(proxy.addr(), &upgrade_request("/echoes", "")).await;
    assert_eq!(response.status, 404, "{}", response.raw);
    assert!(seen.try_recv().is_err());
    // The route itself works.
    let (_stream, response) = raw_ws_with(proxy.addr(), &upgrade_request("/echo/x", "")).await;
    assert_eq!(response.status, 101);
    assert_eq!(next_request(&mut seen).await.uri, "/echo/x");
}

#[tokio::test]
async fn the_101_carries_the_accept_for_the_client_key() {
    let backend = echo_backend().await;
    let proxy = Proxy::simple(&[backend], "").await;
    let (_stream, response) = raw_ws_with(proxy.addr(), &upgrade_request("/", "")).await;
    // RFC 6455 section 1.3's example key and accept value.
    assert_eq!(
        response.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert_eq!(
        response.header("upgrade").map(str::to_ascii_lowercase),
        Some("websocket".into())
    );
    assert_eq!(
        response.header("connection").map(str::to_ascii_lowercase),
        Some("upgrade".into())
    );
}

#[allow(clippy::result_large_err)]
fn choose_b(request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    let offered = request
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if offered.split(',').any(|p| p.trim() == "b") {
        response
            .headers_mut()
            .insert("sec-websocket-protocol", "b".parse().unwrap());
    }
    Ok(response)
}

#[allow(clippy::result_large_err)]
fn choose_unoffered(_request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    response
        .headers_mut()
        .insert("sec-websocket-protocol", "c".parse().unwrap());
    Ok(response)
}

#[tokio::test]
async fn subprotocol_chosen_by_the_backend_reaches_the_client() {
    let (backend, mut seen) = recording_backend_with(choose_b).await;
    let proxy = Proxy::simple(&[backend], "").await;
    let mut request = proxy.ws_url("/").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "a, b".parse().unwrap());
    let (mut ws, response) = connect_request(request).await;
    assert_eq!(
        response
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .collect::<Vec<_>>(),
        ["b"]
    );
    assert_eq!(
        next_request(&mut seen).await.one("sec-websocket-protocol"),
        "a, b"
    );
    ws.send(Message::text("with b")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("with b"));
}

#[tokio::test]
async fn no_subprotocol_when_the_backend_picks_none() {
    let (backend, _seen) = recording_backend_with(choose_b).await;
    let proxy = Proxy::simple(&[backend], "").await;
    let (_stream, response) = raw_ws_with(
        proxy.addr(),
        &upgrade_request("/", "Sec-WebSocket-Protocol: a, c\r\n"),
    )
    .await;
    assert_eq!(response.header("sec-websocket-protocol"), None);
}

#[tokio::test]
async fn backend_choosing_an_unoffered_subprotocol_is_502() {
    let (backend, _seen) = recording_backend_with(choose_unoffered).await;
    let proxy = Proxy::simple(&[backend], "").await;
    let response = http(
        proxy.addr(),
        &upgrade_request("/", "Sec-WebSocket-Protocol: a\r\n"),
    )
    .await;
    assert_eq!(response.status, 502, "{}", response.raw);
}

#[tokio::test]
async fn unknown_extension_is_not_offered_to_the_backend_in_frames_mode() {
    let (backend, mut seen) = recording_backend().await;
    let proxy = Proxy::simple(&[backend], "").await;
    let (mut stream, response) = raw_ws_with(
        proxy.addr(),
        &upgrade_request("/", "Sec-WebSocket-Extensions: x-unknown; p=1\r\n"),
    )
    .await;
    assert_eq!(response.header("sec-websocket-extensions"), None);
    let request = next_request(&mut seen).await;
    assert!(
        request.all("sec-websocket-extensions").is_empty(),
        "{:?}",
        request.headers
    );
    // The session works without it.
    use tokio::io::AsyncWriteExt;
    stream
        .write_all(&client_frame(true, 0, 1, true, b"plain"))
        .await
        .unwrap();
    assert_eq!(
        read_frame(&mut stream).await.unwrap(),
        (0x81, b"plain".to_vec())
    );
}

#[tokio::test]
async fn permessage_deflate_offer_is_forwarded_in_frames_mode() {
    let (backend, mut seen) = recording_backend().await;
    let proxy = Proxy::simple(&[backend], "").await;
    let (_stream, _) = raw_ws_with(
        proxy.addr(),
        &upgrade_request(
            "/",
            "Sec-WebSocket-Extensions: x-unknown, permessage-deflate; client_max_window_bits\r\n",
        ),
    )
    .await;
    let offered = next_request(&mut seen)
        .await
        .one("sec-websocket-extensions");
    assert!(offered.contains("permessage-deflate"), "{offered}");
    assert!(!offered.contains("x-unknown"), "{offered}");
}

#[tokio::test]
async fn unknown_extension_is_forwarded_in_tunnel_mode() {
    let (backend, mut seen) = recording_backend().await;
    let proxy = Proxy::simple(&[backend], "    mode: tunnel\n").await;
    let (_stream, _) = raw_ws_with(
        proxy.addr(),
        &upgrade_request("/", "Sec-WebSocket-Extensions: x-unknown; p=1\r\n"),
    )
    .await;
    let request = next_request(&mut seen).await;
    let offered = request.one("sec-websocket-extensions");
    assert!(offered.starts_with("x-unknown"), "{offered}");
    assert!(offered.contains("p=1"), "{offered}");
}

#[tokio::test]
async fn backend_sees_client_headers_and_forwarding_headers() {
    let (backend, mut seen) = recording_backend().await;
    let proxy = Proxy::simple(&[backend], "").await;
    let (_stream, _) = raw_ws_with(
        proxy.addr(),
        &request(&[
            "GET /chat/room?x=1&y=two HTTP/1.1",
            "Host: chat.example.com",
            "Upgrade: websocket",
            "Connection: Upgrade",
            &format!("Sec-WebSocket-Key: {KEY}"),
            "Sec-WebSocket-Version: 13",
            "Cookie: session=abc; theme=dark",
            "Authorization: Bearer token-123",
            "Origin: https://app.example.com",
            "User-Agent: handshake-test",
        ]),
    )
    .await;
    let request = next_request(&mut seen).await;
    assert_eq!(request.uri, "/chat/room?x=1&y=two");
    assert_eq!(request.one("host"), backend.to_string());
    assert_eq!(request.one("cookie"), "session=abc; theme=dark");
    assert_eq!(request.one("authorization"), "Bearer token-123");
    assert_eq!(request.one("origin"), "https://app.example.com");
    assert_eq!(request.one("user-agent"), "handshake-test");
    assert_eq!(request.one("x-forwarded-for"), "127.0.0.1");
    assert_eq!(request.one("x-forwarded-proto"), "http");
    assert_eq!(request.one("x-forwarded-host"), "chat.example.com");
    assert_eq!(
        request.one("forwarded"),
        "for=127.0.0.1;proto=http;host=\"chat.example.com\""
    );
    // The proxy's own key, not the client's.
    assert_ne!(request.one("sec-websocket-key"), KEY);
    assert_eq!(request.one("sec-websocket-version"), "13");
}

#[tokio::test]
async fn client_sent_forwarding_headers_are_replaced_not_passed() {
    let (backend, mut seen) = recording_backend().await;
    let proxy = Proxy::simple(&[backend], "").await;
    let (_stream, _) = raw_ws_with(
        proxy.addr(),
        &upgrade_request(
            "/",
            "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n\
             X-Forwarded-Host: evil.example\r\nForwarded: for=6.6.6.6\r\n",
        ),
    )
    .await;
    let request = next_request(&mut seen).await;
    assert_eq!(request.all("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(request.all("x-forwarded-proto"), ["http"]);
    assert_eq!(request.all("x-forwarded-host"), ["localhost"]);
    assert_eq!(
        request.all("forwarded"),
        ["for=127.0.0.1;proto=http;host=\"localhost\""]
    );
    let all: String = request
        .headers
        .values()
        .map(|v| v.to_str().unwrap_or(""))
        .collect();
    assert!(!all.contains("6.6.6.6"), "{:?}", request.headers);
    assert!(!all.contains("evil.example"), "{:?}", request.headers);
}

#[tokio::test]
async fn hop_by_hop_headers_named_in_connection_are_not_forwarded() {
    let (backend, mut seen) = recording_backend().await;
    let proxy = Proxy::simple(&[backend], "").await;
    let (_stream, _) = raw_ws_with(
        proxy.addr(),
        &request(&[
            "GET / HTTP/1.1",
            "Host: localhost",
            "Upgrade: websocket",
            "Connection: Upgrade, X-Hop",
            "X-Hop: secret",
            "X-End: kept",
            &format!("Sec-WebSocket-Key: {KEY}"),
            "Sec-WebSocket-Version: 13",
        ]),
    )
    .await;
    let request = next_request(&mut seen).await;
    assert!(request.all("x-hop").is_empty(), "{:?}", request.headers);
    assert_eq!(request.one("x-end"), "kept");
}

#[tokio::test]
async fn strip_prefix_rewrites_the_path_and_keeps_the_query() {
    let (backend, mut seen) = recording_backend().await;
    let proxy = Cfg::new(&[backend])
        .prefix("/chat")
        .route("    strip_prefix: true\n")
        .start()
        .await;
    let (_s1, _) = raw_ws_with(proxy.addr(), &upgrade_request("/chat/room?x=1", "")).await;
    assert_eq!(next_request(&mut seen).await.uri, "/room?x=1");
    let (_s2, _) = raw_ws_with(proxy.addr(), &upgrade_request("/chat", "")).await;
    assert_eq!(next_request(&mut seen).await.uri, "/");
}

#[tokio::test]
async fn without_strip_prefix_the_path_is_forwarded_unchanged() {
    let (backend, mut seen) = recording_backend().await;
    let proxy = Cfg::new(&[backend]).prefix("/chat").start().await;
    let (_s, _) = raw_ws_with(proxy.addr(), &upgrade_request("/chat/room?x=1", "")).await;
    assert_eq!(next_request(&mut seen).await.uri, "/chat/room?x=1");
}

#[tokio::test]
async fn backend_url_path_is_put_in_front() {
    let (backend, mut seen) = recording_backend().await;
    let yaml = format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\nroutes:\n  - path_prefix: /chat\n    backend: b\n    strip_prefix: true\n\
         backends:\n  b:\n    servers:\n      - url: \"ws://{backend}/base\"\n"
    );
    let proxy = Proxy::start(&yaml).await;
    let (_s, _) = raw_ws_with(proxy.addr(), &upgrade_request("/chat/room?q=1", "")).await;
    assert_eq!(next_request(&mut seen).await.uri, "/base/room?q=1");
}

#[tokio::test]
async fn backend_response_headers_reach_the_client() {
    #[allow(clippy::result_large_err)]
    fn with_cookie(_r: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
        response
            .headers_mut()
            .insert("set-cookie", "sticky=1".parse().unwrap());
        Ok(response)
    }
    let (backend, _seen) = recording_backend_with(with_cookie).await;
    let proxy = Proxy::simple(&[backend], "").await;
    let (_s, response) = raw_ws_with(proxy.addr(), &upgrade_request("/", "")).await;
    assert_eq!(response.header("set-cookie"), Some("sticky=1"));
}

#[tokio::test]
async fn routes_by_host_then_longest_prefix() {
    let (any, mut seen_any) = recording_backend().await;
    let (chat, mut seen_chat) = recording_backend().await;
    let (api, mut seen_api) = recording_backend().await;
    let yaml = format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\nroutes:\n\
         \x20 - path_prefix: /\n    backend: any\n\
         \x20 - path_prefix: /chat\n    backend: chat\n\
         \x20 - path_prefix: /chat\n    host: \"*.example.com\"\n    backend: api\n\
         backends:\n\
         \x20 any:\n    servers:\n      - url: \"ws://{any}\"\n\
         \x20 chat:\n    servers:\n      - url: \"ws://{chat}\"\n\
         \x20 api:\n    servers:\n      - url: \"ws://{api}\"\n"
    );
    let proxy = Proxy::start(&yaml).await;
    let with_host = |path: &str, host: &str| {
        upgrade_request(path, "").replace("Host: localhost", &format!("Host: {host}"))
    };
    let _a = raw_ws_with(proxy.addr(), &with_host("/chat/x", "localhost")).await;
    assert_eq!(next_request(&mut seen_chat).await.uri, "/chat/x");
    let _b = raw_ws_with(proxy.addr(), &with_host("/chatter", "localhost")).await;
    assert_eq!(next_request(&mut seen_any).await.uri, "/chatter");
    let _c = raw_ws_with(proxy.addr(), &with_host("/chat", "Eu.Example.com:8080")).await;
    assert_eq!(next_request(&mut seen_api).await.uri, "/chat");
    let _d = raw_ws_with(proxy.addr(), &with_host("/other", "eu.example.com")).await;
    assert_eq!(next_request(&mut seen_any).await.uri, "/other");
    assert!(seen_chat.try_recv().is_err());
    assert!(seen_api.try_recv().is_err());
}

#[tokio::test]
async fn refusal_closes_the_connection() {
    let backend = echo_backend().await;
    let proxy = Cfg::new(&[backend]).prefix("/echo").start().await;
    for raw in [
        upgrade_request("/nope", ""),
        request(&["GET /echo HTTP/1.1", "Host: localhost"]),
        upgrade_request("/echo", "")
            .replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"),
    ] {
        let mut stream = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
        use tokio::io::AsyncWriteExt;
        stream.write_all(raw.as_bytes()).await.unwrap();
        // read_to_eof fails the test if the connection stays open for WAIT.
        let answer = read_to_eof(&mut stream).await;
        let answer = HttpResponse::parse(&String::from_utf8_lossy(&answer));
        assert!(answer.status >= 400, "{}", answer.raw);
    }
}

#[tokio::test]
async fn missing_host_is_400() {
    let response = refused(&request(&[
        "GET / HTTP/1.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        &format!("Sec-WebSocket-Key: {KEY}"),
        "Sec-WebSocket-Version: 13",
    ]))
    .await;
    assert_eq!(response.status, 400, "{}", response.raw);
    assert_body_mentions(&response, "Host");
}

#[tokio::test]
async fn header_tokens_are_case_insensitive_and_may_be_lists() {
    let backend = echo_backend().await;
    let proxy = Proxy::simple(&[backend], "").await;
    let (_stream, response) = raw_ws_with(
        proxy.addr(),
        &request(&[
            "GET / HTTP/1.1",
            "Host: localhost",
            "upgrade: WebSocket",
            "connection: keep-alive, UPGRADE",
            &format!("sec-websocket-key: {KEY}"),
            "sec-websocket-version: 13",
        ]),
    )
    .await;
    assert_eq!(response.status, 101);
}

#[tokio::test]
async fn subprotocol_without_an_offer_is_502() {
    let (backend, _seen) = recording_backend_with(choose_unoffered).await;
    let proxy = Proxy::simple(&[backend], "").await;
    let response = http(proxy.addr(), &upgrade_request("/", "")).await;
    assert_eq!(response.status, 502, "{}", response.raw);
}

#[tokio::test]
async fn subprotocol_offers_on_several_lines_are_forwarded_in_order() {
    let (backend, mut seen) = recording_backend().await;
    let proxy = Proxy::simple(&[backend], "").await;
    let (_s, response) = raw_ws_with(
        proxy.addr(),
        &upgrade_request(
            "/",
            "Sec-WebSocket-Protocol: chat.v2\r\nSec-WebSocket-Protocol: chat.v1, json\r\n",
        ),
    )
    .await;
    assert_eq!(
        next_request(&mut seen).await.one("sec-websocket-protocol"),
        "chat.v2, chat.v1, json"
    );
    // The backend took the first one.
    assert_eq!(response.header("sec-websocket-protocol"), Some("chat.v2"));
}
