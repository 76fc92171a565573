//! Connect to a backend server (from one of the backend's source addresses,
//! if it has any) and perform the client side of the opening handshake, with
//! our own key.
//!
//! The client only gets its 101 after [`connect`] has succeeded, so everything
//! that can go wrong with a backend (refused connection, timeout, a non-101
//! answer, a wrong `Sec-WebSocket-Accept`, a subprotocol or extension the
//! client never offered) is an [`UpstreamError`] that the caller can retry on
//! another server or turn into a 502/504. This module never sees the client's
//! socket: it gets what it must forward as an [`UpstreamRequest`].
//!
//! Headers sent to the backend: the client's end-to-end headers (cookies,
//! authorization, origin, user agent …) except hop-by-hop ones and any
//! incoming `X-Forwarded-*`/`Forwarded` (wsgate stands at the edge, so those
//! are replaced, not appended to); `Host` is the backend server's own
//! authority; `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host` and
//! `Forwarded` describe the client; `Sec-WebSocket-Protocol` and
//! `Sec-WebSocket-Extensions` carry the client's offer (the latter filtered by
//! the caller).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::config::{BackendConfig, ServerConfig};
use crate::ws::handshake::{self, Extension};

pub mod resolve;

pub use resolve::ServerAddress;

/// Largest backend handshake response we accept, headers included.
const MAX_RESPONSE_BYTES: usize = 16 * 1024;
/// Most headers we accept in a backend handshake response.
const MAX_RESPONSE_HEADERS: usize = 64;

/// What the client asked for, as the backend must see it.
#[derive(Debug)]
pub struct UpstreamRequest<'a> {
    /// Path and query to request from the backend (already rewritten by the route).
    pub path_and_query: &'a str,
    /// The client's request headers; end-to-end ones are forwarded.
    pub client_headers: &'a HeaderMap,
    /// The client's address, for `X-Forwarded-For` and `Forwarded`.
    pub client_addr: SocketAddr,
    /// The client's `Host` header, for `X-Forwarded-Host`.
    pub client_host: Option<&'a str>,
    /// Whether the client came in over TLS (`X-Forwarded-Proto`).
    pub client_tls: bool,
    /// Subprotocols the client offered, in its order.
    pub protocols: &'a [String],
    /// Extensions to offer the backend (the client's offer, filtered).
    pub extensions: &'a [Extension],
}

/// An accepted upstream WebSocket connection.
#[derive(Debug)]
pub struct Upstream {
    /// The connected socket, positioned right after the 101 response.
    pub stream: TcpStream,
    /// Bytes the backend sent after its 101 response (already frames).
    pub read_ahead: Bytes,
    /// The subprotocol the backend chose, if any (one the client offered).
    pub protocol: Option<String>,
    /// The extensions the backend accepted (each one the client offered).
    pub extensions: Vec<Extension>,
    /// End-to-end response headers to pass to the client (e.g. `Set-Cookie`,
    /// `Sec-WebSocket-Protocol`, `Sec-WebSocket-Extensions`).
    pub response_headers: HeaderMap,
}

/// Why a backend server could not be used. Every variant may be retried on
/// another server; [`UpstreamError::status`] is the client's answer once the
/// retry budget is spent.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP connect failed (refused, unreachable, DNS). Client answer: 502.
    #[error("connect to {server} failed: {source}")]
    Connect {
        /// The server's authority.
        server: String,
        /// The OS error.
        source: io::Error,
    },
    /// TCP connect did not finish in time. Client answer: 504.
    #[error("connect to {server} timed out after {timeout:?}")]
    ConnectTimeout {
        /// The server's authority.
        server: String,
        /// The configured connect timeout.
        timeout: Duration,
    },
    /// The backend did not answer the upgrade in time. Client answer: 504.
    #[error("{server} did not answer the upgrade within {timeout:?}")]
    HandshakeTimeout {
        /// The server's authority.
        server: String,
        /// The configured handshake timeout.
        timeout: Duration,
    },
    /// The backend answered with another status than 101. Client answer: 502.
    #[error("{server} refused the upgrade with status {status}")]
    Refused {
        /// The server's authority.
        server: String,
        /// The backend's status code.
        status: u16,
    },
    /// Reading or writing the handshake failed, or the backend closed the
    /// connection before answering. Client answer: 502.
    #[error("handshake with {server} failed: {source}")]
    Io {
        /// The server's authority.
        server: String,
        /// The I/O error.
        source: io::Error,
    },
    /// The backend's 101 breaks RFC 6455 §4.1 (wrong accept key, missing
    /// upgrade headers, unoffered subprotocol or extension, bad HTTP).
    /// Client answer: 502.
    #[error("{server} sent an invalid handshake response: {reason}")]
    InvalidResponse {
        /// The server's authority.
        server: String,
        /// What was wrong.
        reason: String,
    },
}

impl UpstreamError {
    /// The HTTP status the client gets when this is the last failure.
    pub fn status(&self) -> StatusCode {
        if self.is_timeout() {
            StatusCode::GATEWAY_TIMEOUT
        } else {
            StatusCode::BAD_GATEWAY
        }
    }

    /// Whether the failure was a timeout (connect or handshake).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            UpstreamError::ConnectTimeout { .. } | UpstreamError::HandshakeTimeout { .. }
        )
    }
}

/// A backend's source addresses (`backends.NAME.source_addresses`), handed
/// out in turn.
///
/// Linux picks the local port of an outgoing connection so that its pair of
/// addresses and ports is unique. With one source address, that allows as
/// many connections to one server as `ip_local_port_range` holds (about
/// 28,000 by default, 64,511 at most); every further source address allows as
/// many again.
#[derive(Debug, Default)]
pub struct SourceAddresses {
    /// The IPv4 addresses, for IPv4 servers.
    v4: Vec<IpAddr>,
    /// The IPv6 addresses, for IPv6 servers.
    v6: Vec<IpAddr>,
    /// How many connections have taken an address so far.
    turn: AtomicUsize,
}

impl SourceAddresses {
    /// The addresses of a backend's config, split by family.
    pub fn new(addresses: &[IpAddr]) -> Self {
        let (v4, v6) = addresses.iter().partition(|ip| ip.is_ipv4());
        SourceAddresses {
            v4,
            v6,
            turn: AtomicUsize::new(0),
        }
    }

    /// Whether there are none (the kernel chooses the source address).
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// The next address to connect to `server` from, or `None` if there is
    /// none of its family.
    fn next_for(&self, server: &SocketAddr) -> Option<IpAddr> {
        let family = if server.is_ipv4() { &self.v4 } else { &self.v6 };
        if family.is_empty() {
            return None;
        }
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        Some(family[turn % family.len()])
    }
}

/// A TCP socket bound to `source`, its port left to `connect`.
///
/// `IP_BIND_ADDRESS_NO_PORT` defers the choice of the local port to
/// `connect`, so that one port can serve connections to different servers;
/// without it `bind` would reserve a port of its own for every connection.
/// Used for every connection from a source address, and at start-up to check
/// that each configured address is one of this host's.
pub fn bind_source(source: IpAddr) -> io::Result<TcpSocket> {
    let socket = if source.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Only a kernel older than 4.2 refuses it; `bind` then reserves a port.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = nix::sys::socket::setsockopt(
        &socket,
        nix::sys::socket::sockopt::IpBindAddressNoPort,
        &true,
    );
    socket.bind(SocketAddr::new(source, 0))?;
    Ok(socket)
}

/// Opens a TCP connection to the first of `addresses` that accepts: from
/// the next source address of that address's family if the backend has
/// any, otherwise from whatever the kernel chooses.
async fn connect_tcp(addresses: &[SocketAddr], sources: &SourceAddresses) -> io::Result<TcpStream> {
    if sources.is_empty() {
        return TcpStream::connect(addresses).await;
    }
    let mut last_error = None;
    for &server in addresses {
        let Some(source) = sources.next_for(&server) else {
            let family = if server.is_ipv4() { "IPv4" } else { "IPv6" };
            last_error = Some(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("{server}: the backend has no {family} source address"),
            ));
            continue;
        };
        let connected = match bind_source(source) {
            Ok(socket) => socket.connect(server).await,
            Err(e) => Err(e),
        };
        match connected {
            Ok(stream) => return Ok(stream),
            Err(e) => {
                last_error = Some(io::Error::new(e.kind(), format!("from {source}: {e}")));
            }
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address")))
}

/// Connects to `server` at `address` (from one of `sources`, if any) and
/// performs the upgrade for `request`, within the backend's connect and
/// handshake timeouts. The connect timeout covers resolving the server's
/// name, when that is not cached.
pub async fn connect(
    server: &ServerConfig,
    address: &ServerAddress,
    backend: &BackendConfig,
    sources: &SourceAddresses,
    request: &UpstreamRequest<'_>,
) -> Result<Upstream, UpstreamError> {
    let url = &server.url;
    let name = || url.authority.clone();
    let tcp = async { connect_tcp(&address.addresses().await?, sources).await };
    let stream = match tokio::time::timeout(backend.connect_timeout, tcp).await {
        Err(_) => {
            return Err(UpstreamError::ConnectTimeout {
                server: name(),
                timeout: backend.connect_timeout,
            })
        }
        Ok(Err(source)) => {
            return Err(UpstreamError::Connect {
                server: name(),
                source,
            })
        }
        Ok(Ok(stream)) => stream,
    };
    // Small frames must not wait for Nagle's algorithm.
    let _ = stream.set_nodelay(true);
    match tokio::time::timeout(
        backend.handshake_timeout,
        handshake(stream, &url.authority, request),
    )
    .await
    {
        Err(_) => Err(UpstreamError::HandshakeTimeout {
            server: name(),
            timeout: backend.handshake_timeout,
        }),
        Ok(result) => result,
    }
}

/// Sends the upgrade request on `stream` and checks the answer.
async fn handshake(
    mut stream: TcpStream,
    authority: &str,
    request: &UpstreamRequest<'_>,
) -> Result<Upstream, UpstreamError> {
    let io_err = |source| UpstreamError::Io {
        server: authority.to_string(),
        source,
    };
    let key = handshake::generate_key();
    let bytes = build_request(authority, &key, request);
    stream.write_all(&bytes).await.map_err(io_err)?;

    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if buf.len() >= MAX_RESPONSE_BYTES {
            return Err(invalid(authority, "response headers too large"));
        }
        if stream.read_buf(&mut buf).await.map_err(io_err)? == 0 {
            return Err(io_err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the handshake response",
            )));
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let header_len = match response.parse(&buf) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(n)) => n,
            Err(e) => return Err(invalid(authority, &format!("bad HTTP response: {e}"))),
        };
        let accepted = check_response(authority, &key, request, &response)?;
        let read_ahead = buf.split_off(header_len).freeze();
        return Ok(Upstream {
            stream,
            read_ahead,
            protocol: accepted.protocol,
            extensions: accepted.extensions,
            response_headers: accepted.headers,
        });
    }
}

/// What a valid 101 told us.
struct Accepted {
    protocol: Option<String>,
    extensions: Vec<Extension>,
    headers: HeaderMap,
}

fn invalid(server: &str, reason: &str) -> UpstreamError {
    UpstreamError::InvalidResponse {
        server: server.to_string(),
        reason: reason.to_string(),
    }
}

/// Checks a parsed backend response against RFC 6455 §4.1 and our offer.
fn check_response(
    server: &str,
    key: &str,
    request: &UpstreamRequest<'_>,
    response: &httparse::Response<'_, '_>,
) -> Result<Accepted, UpstreamError> {
    let status = response.code.unwrap_or(0);
    if status != 101 {
        return Err(UpstreamError::Refused {
            server: server.to_string(),
            status,
        });
    }
    let mut headers = HeaderMap::new();
    for h in response.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| invalid(server, "invalid header name"))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| invalid(server, "invalid header value"))?;
        headers.append(name, value);
    }
    if !handshake::header_has_token(&headers, header::UPGRADE, "websocket") {
        return Err(invalid(server, "101 without `Upgrade: websocket`"));
    }
    if !handshake::header_has_token(&headers, header::CONNECTION, "upgrade") {
        return Err(invalid(server, "101 without `Connection: upgrade`"));
    }
    let expected = handshake::accept_key(key.as_bytes());
    let mut accepts = headers.get_all(header::SEC_WEBSOCKET_ACCEPT).iter();
    match (accepts.next(), accepts.next()) {
        (Some(v), None) if v.as_bytes() == expected.as_bytes() => {}
        _ => return Err(invalid(server, "wrong Sec-WebSocket-Accept")),
    }

    let mut protocols = headers.get_all(header::SEC_WEBSOCKET_PROTOCOL).iter();
    let protocol = match (protocols.next(), protocols.next()) {
        (None, _) => None,
        (Some(v), None) => {
            let chosen = v
                .to_str()
                .map_err(|_| invalid(server, "non-ASCII subprotocol"))?
                .trim();
            if !request.protocols.iter().any(|p| p == chosen) {
                return Err(invalid(
                    server,
                    &format!("subprotocol {chosen:?} was not offered by the client"),
                ));
            }
            Some(chosen.to_string())
        }
        _ => return Err(invalid(server, "more than one Sec-WebSocket-Protocol")),
    };

    let mut extensions = Vec::new();
    for v in headers.get_all(header::SEC_WEBSOCKET_EXTENSIONS) {
        let text = v
            .to_str()
            .map_err(|_| invalid(server, "non-ASCII Sec-WebSocket-Extensions"))?;
        let parsed = handshake::parse_extensions(text)
            .map_err(|_| invalid(server, "malformed Sec-WebSocket-Extensions"))?;
        extensions.extend(parsed);
    }
    for ext in &extensions {
        if !request.extensions.iter().any(|o| o.name == ext.name) {
            return Err(invalid(
                server,
                &format!("extension {:?} was not offered", ext.name),
            ));
        }
    }

    for name in HOP_BY_HOP
        .iter()
        .chain(&[header::SEC_WEBSOCKET_ACCEPT, header::CONTENT_LENGTH])
    {
        headers.remove(name);
    }
    Ok(Accepted {
        protocol,
        extensions,
        headers,
    })
}

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1), plus
/// the upgrade's own which each hop sets for itself.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    header::UPGRADE,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    HeaderName::from_static("keep-alive"),
];

/// Request headers that wsgate sets itself and so never copies from the client.
fn is_replaced_request_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "content-length"
            | "sec-websocket-key"
            | "sec-websocket-version"
            | "sec-websocket-accept"
            | "sec-websocket-protocol"
            | "sec-websocket-extensions"
            | "x-forwarded-for"
            | "x-forwarded-proto"
            | "x-forwarded-host"
            | "forwarded"
            | "proxy-connection"
    )
}

/// The raw upgrade request for the backend.
fn build_request(authority: &str, key: &str, request: &UpstreamRequest<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(request.path_and_query.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut line = |name: &[u8], value: &[u8]| {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    };
    line(b"Host", authority.as_bytes());
    line(b"Upgrade", b"websocket");
    line(b"Connection", b"Upgrade");
    line(b"Sec-WebSocket-Key", key.as_bytes());
    line(b"Sec-WebSocket-Version", b"13");
    if !request.protocols.is_empty() {
        line(
            b"Sec-WebSocket-Protocol",
            request.protocols.join(", ").as_bytes(),
        );
    }
    if !request.extensions.is_empty() {
        line(
            b"Sec-WebSocket-Extensions",
            handshake::format_extensions(request.extensions).as_bytes(),
        );
    }
    // Tokens listed in the client's Connection header are hop-by-hop too.
    let listed_in_connection = |name: &HeaderName| {
        request
            .client_headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(name.as_str()))
    };
    for (name, value) in request.client_headers {
        if HOP_BY_HOP.contains(name)
            || is_replaced_request_header(name)
            || listed_in_connection(name)
        {
            continue;
        }
        line(name.as_str().as_bytes(), value.as_bytes());
    }
    let proto = if request.client_tls { "https" } else { "http" };
    let host = request.client_host.filter(|h| is_safe_forwarded_host(h));
    // The client's address is written once and copied into `Forwarded`.
    out.extend_from_slice(b"X-Forwarded-For: ");
    let ip_start = out.len();
    push_ip(&mut out, request.client_addr.ip());
    let ip = ip_start..out.len();
    out.extend_from_slice(b"\r\nX-Forwarded-Proto: ");
    out.extend_from_slice(proto.as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(host) = host {
        for piece in [b"X-Forwarded-Host: ", host.as_bytes(), b"\r\n"] {
            out.extend_from_slice(piece);
        }
    }
    // RFC 7239: IPv6 addresses are quoted and bracketed.
    let v6 = request.client_addr.is_ipv6();
    out.extend_from_slice(if v6 {
        b"Forwarded: for=\"["
    } else {
        b"Forwarded: for="
    });
    out.extend_from_within(ip);
    out.extend_from_slice(if v6 { b"]\";proto=" } else { b";proto=" });
    out.extend_from_slice(proto.as_bytes());
    if let Some(host) = host {
        for piece in [b";host=\"", host.as_bytes(), b"\""] {
            out.extend_from_slice(piece);
        }
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(b"\r\n");
    out
}

/// Writes `ip` as text: an IPv4 address octet by octet, which is several
/// times cheaper than its `Display`, and an IPv6 address through `Display`.
fn push_ip(out: &mut Vec<u8>, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(itoa::Buffer::new().format(octet).as_bytes());
            }
        }
        std::net::IpAddr::V6(v6) => {
            use std::io::Write;
            // Writing into a Vec cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
}

/// A Host value that can be put in a quoted `Forwarded` parameter as is.
fn is_safe_forwarded_host(host: &str) -> bool {
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(headers: &'a HeaderMap, protocols: &'a [String]) -> UpstreamRequest<'a> {
        UpstreamRequest {
            path_and_query: "/chat?room=1",
            client_headers: headers,
            client_addr: "[2001:db8::1]:5000".parse().unwrap(),
            client_host: Some("chat.example.com"),
            client_tls: true,
            protocols,
            extensions: &[],
        }
    }

    #[test]
    fn request_forwards_end_to_end_headers_and_replaces_forwarding_ones() {
        let mut headers = HeaderMap::new();
        headers.insert("cookie", HeaderValue::from_static("a=1"));
        headers.insert("authorization", HeaderValue::from_static("Bearer x"));
        headers.insert("origin", HeaderValue::from_static("https://app"));
        headers.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        headers.insert("connection", HeaderValue::from_static("Upgrade, x-secret"));
        headers.insert("x-secret", HeaderValue::from_static("hop"));
        headers.insert("sec-websocket-key", HeaderValue::from_static("abc"));
        let protocols = vec!["chat.v2".to_string(), "chat.v1".to_string()];
        let raw = build_request("10.0.0.1:9001", "KEY==", &request(&headers, &protocols));
        let text = String::from_utf8(raw).unwrap();
        assert!(text.starts_with("GET /chat?room=1 HTTP/1.1\r\nHost: 10.0.0.1:9001\r\n"));
        assert!(text.contains("\r\ncookie: a=1\r\n"));
        assert!(text.contains("\r\nauthorization: Bearer x\r\n"));
        assert!(text.contains("\r\norigin: https://app\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Key: KEY==\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Protocol: chat.v2, chat.v1\r\n"));
        assert!(text.contains("\r\nX-Forwarded-For: 2001:db8::1\r\n"));
        assert!(text.contains("\r\nX-Forwarded-Proto: https\r\n"));
        assert!(text.contains("\r\nX-Forwarded-Host: chat.example.com\r\n"));
        assert!(text.contains(
            "\r\nForwarded: for=\"[2001:db8::1]\";proto=https;host=\"chat.example.com\"\r\n"
        ));
        assert!(!text.contains("6.6.6.6"));
        assert!(!text.contains("x-secret"));
        assert!(!text.contains("abc"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn request_forwarding_headers_for_an_ipv4_client_without_host() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", HeaderValue::from_static("upgrade, X-Secret"));
        headers.insert("x-secret", HeaderValue::from_static("hop"));
        let mut req = request(&headers, &[]);
        req.client_addr = "10.0.255.99:5000".parse().unwrap();
        req.client_host = None;
        req.client_tls = false;
        let text = String::from_utf8(build_request("b:1", "KEY==", &req)).unwrap();
        assert!(text.contains(
            "\r\nX-Forwarded-For: 10.0.255.99\r\nX-Forwarded-Proto: http\r\n\
             Forwarded: for=10.0.255.99;proto=http\r\n\r\n"
        ));
        assert!(!text.contains("X-Forwarded-Host"));
        assert!(
            !text.contains("hop"),
            "a Connection token is hop-by-hop in any case"
        );
    }

    #[test]
    fn ip_text_matches_display() {
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "127.0.0.1",
            "::1",
            "2001:db8::ff00:42:8329",
            "::ffff:1.2.3.4",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            let mut out = Vec::new();
            push_ip(&mut out, ip);
            assert_eq!(String::from_utf8(out).unwrap(), ip.to_string());
        }
    }

    fn parse_and_check(
        raw: &str,
        key: &str,
        protocols: &[String],
    ) -> Result<Accepted, UpstreamError> {
        let headers = HeaderMap::new();
        let req = request(&headers, protocols);
        let mut h = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut h);
        resp.parse(raw.as_bytes()).unwrap();
        check_response("b", key, &req, &resp)
    }

    #[test]
    fn response_checks() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let ok =
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSet-Cookie: s=1\r\n";
        let protos = vec!["a".to_string()];
        let accepted = parse_and_check(&format!("{ok}\r\n"), key, &protos).unwrap();
        assert!(accepted.protocol.is_none());
        assert!(accepted.headers.contains_key("set-cookie"));
        assert!(!accepted.headers.contains_key("sec-websocket-accept"));
        let with_proto = format!("{ok}Sec-WebSocket-Protocol: a\r\n\r\n");
        assert_eq!(
            parse_and_check(&with_proto, key, &protos)
                .unwrap()
                .protocol
                .as_deref(),
            Some("a")
        );
        let bad_proto = format!("{ok}Sec-WebSocket-Protocol: b\r\n\r\n");
        assert!(matches!(
            parse_and_check(&bad_proto, key, &protos),
            Err(UpstreamError::InvalidResponse { .. })
        ));
        let bad_ext = format!("{ok}Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n");
        assert!(matches!(
            parse_and_check(&bad_ext, key, &protos),
            Err(UpstreamError::InvalidResponse { .. })
        ));
        assert!(matches!(
            parse_and_check(&format!("{ok}\r\n"), "AAAAAAAAAAAAAAAAAAAAAA==", &protos),
            Err(UpstreamError::InvalidResponse { .. })
        ));
        assert!(matches!(
            parse_and_check("HTTP/1.1 403 Forbidden\r\n\r\n", key, &protos),
            Err(UpstreamError::Refused { status: 403, .. })
        ));
    }

    #[test]
    fn source_addresses_go_in_turn_within_the_server_family() {
        let ips: Vec<IpAddr> = ["10.0.0.1", "::2", "10.0.0.3", "::4"]
            .map(|s| s.parse().unwrap())
            .to_vec();
        let sources = SourceAddresses::new(&ips);
        assert!(!sources.is_empty());
        let v4: SocketAddr = "192.0.2.10:80".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:80".parse().unwrap();
        let picks: Vec<String> = [v4, v4, v4, v6, v6]
            .iter()
            .map(|server| sources.next_for(server).unwrap().to_string())
            .collect();
        // One turn counter for the backend: each pick advances it.
        assert_eq!(picks, ["10.0.0.1", "10.0.0.3", "10.0.0.1", "::4", "::2"]);

        let only_v4 = SourceAddresses::new(&ips[..1]);
        assert_eq!(only_v4.next_for(&v6), None);
        assert!(SourceAddresses::new(&[]).is_empty());
    }

    #[tokio::test]
    async fn a_bound_source_leaves_the_port_to_connect() {
        let socket = bind_source("127.0.0.2".parse().unwrap()).unwrap();
        // With IP_BIND_ADDRESS_NO_PORT, bind reserves no port.
        let local = socket.local_addr().unwrap();
        assert_eq!(local, "127.0.0.2:0".parse().unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = socket
            .connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let local = stream.local_addr().unwrap();
        assert_eq!(local.ip().to_string(), "127.0.0.2");
        assert_ne!(local.port(), 0);
        assert!(bind_source("192.0.2.1".parse().unwrap()).is_err());
    }

    #[tokio::test]
    async fn a_server_of_a_family_without_source_addresses_is_refused_by_name() {
        let sources = SourceAddresses::new(&["2001:db8::2".parse().unwrap()]);
        let server: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let error = connect_tcp(&[server], &sources).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AddrNotAvailable);
        assert_eq!(
            error.to_string(),
            "127.0.0.1:9: the backend has no IPv4 source address"
        );
    }
}
