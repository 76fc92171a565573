//! The opening handshake (RFC 6455 §4).
//!
//! The server side checks a client's upgrade request ([`check_request`]),
//! names the first thing wrong with it ([`HandshakeError`], with the HTTP
//! status and body reason to answer), and extracts what the client offered
//! ([`ClientOffer`]: key, subprotocols, extensions) so the proxy can forward
//! the offer to a backend. For the proxy's own upstream request there are
//! [`generate_key`], [`accept_key`] (to check the backend's
//! `Sec-WebSocket-Accept`) and [`format_extensions`].
//!
//! Only the protocol is here: Origin policy, routing and the choice of
//! subprotocol belong to the caller.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::header::{self, HeaderMap, HeaderName};
use http::{Method, Request, StatusCode, Version};
use sha1::{Digest, Sha1};

/// The GUID appended to the client's key before hashing (§1.3).
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The only protocol version RFC 6455 defines, as sent in
/// `Sec-WebSocket-Version`.
pub const VERSION: &str = "13";

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key`:
/// base64(SHA-1(key + GUID)). The server sends it in its 101; the proxy also
/// uses it to check a backend's 101 against the key the proxy sent.
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID.as_bytes());
    STANDARD.encode(sha.finalize())
}

/// A fresh `Sec-WebSocket-Key` for the proxy's own upstream request: base64
/// of 16 random bytes (§4.1).
pub fn generate_key() -> String {
    let nonce: [u8; 16] = rand::random();
    STANDARD.encode(nonce)
}

/// What a valid client upgrade request offered, as returned by
/// [`check_request`]; the proxy forwards it to the backend and answers the
/// client with the backend's choices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOffer {
    /// The client's `Sec-WebSocket-Key` as sent; the 101 to the client carries
    /// [`accept_key`] of it (see [`ClientOffer::accept_key`]).
    pub key: http::HeaderValue,
    /// `Sec-WebSocket-Protocol` tokens, in order, trimmed, across all header
    /// lines. Empty if none were offered.
    pub protocols: Vec<String>,
    /// Parsed `Sec-WebSocket-Extensions` offers, in order, across all header
    /// lines. Empty if none were offered.
    pub extensions: Vec<Extension>,
}

impl ClientOffer {
    /// The `Sec-WebSocket-Accept` value the client expects in its 101.
    pub fn accept_key(&self) -> String {
        accept_key(self.key.as_bytes())
    }
}

/// One extension offer or response in `Sec-WebSocket-Extensions` (§9.1),
/// e.g. `permessage-deflate; client_max_window_bits`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// The extension token, e.g. `permessage-deflate`.
    pub name: String,
    /// Parameters in order: name and optional value (unquoted and unescaped).
    pub params: Vec<(String, Option<String>)>,
}

impl Extension {
    /// Serializes back to header syntax, e.g.
    /// `permessage-deflate; client_max_window_bits`; values that are not
    /// tokens are written as quoted strings.
    pub fn to_header_string(&self) -> String {
        let mut s = self.name.clone();
        for (name, value) in &self.params {
            s.push_str("; ");
            s.push_str(name);
            if let Some(v) = value {
                s.push('=');
                if is_token(v) {
                    s.push_str(v);
                } else {
                    s.push('"');
                    for c in v.chars() {
                        if c == '"' || c == '\\' {
                            s.push('\\');
                        }
                        s.push(c);
                    }
                    s.push('"');
                }
            }
        }
        s
    }
}

/// Whether `b` is an HTTP `tchar` (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether `s` is a non-empty HTTP token.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// A byte cursor for the extension grammar.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn token(&mut self) -> Result<String, HandshakeError> {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        match self.bytes.get(start..self.pos) {
            Some(t) if !t.is_empty() => Ok(t.iter().map(|&b| char::from(b)).collect()),
            _ => Err(HandshakeError::BadExtensions),
        }
    }

    /// A quoted-string (RFC 9110 §5.6.4), restricted to ASCII; the cursor is
    /// on the opening quote.
    fn quoted_string(&mut self) -> Result<String, HandshakeError> {
        if !self.eat(b'"') {
            return Err(HandshakeError::BadExtensions);
        }
        let mut out = String::new();
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(b @ (b'\t' | b' ' | 0x21..=0x7E)) => {
                            out.push(char::from(b));
                            self.pos += 1;
                        }
                        _ => return Err(HandshakeError::BadExtensions),
                    }
                }
                Some(b @ (b'\t' | b' ' | 0x21..=0x7E)) => {
                    out.push(char::from(b));
                    self.pos += 1;
                }
                _ => return Err(HandshakeError::BadExtensions),
            }
        }
    }
}

/// Parses a `Sec-WebSocket-Extensions` header value (RFC 6455 §9.1):
/// a comma list of `name *( ";" param [ "=" ( token | quoted-string ) ] )`.
///
/// Liberal where the RFC allows: optional whitespace around `;`, `,` and
/// `=`, empty list elements are skipped (an empty value gives no
/// extensions), and quoted values need not be tokens (`a="b c"`). Anything
/// else, including non-ASCII, is [`HandshakeError::BadExtensions`].
pub fn parse_extensions(value: &str) -> Result<Vec<Extension>, HandshakeError> {
    let mut c = Cursor {
        bytes: value.as_bytes(),
        pos: 0,
    };
    let mut exts = Vec::new();
    loop {
        c.skip_ows();
        match c.peek() {
            None => return Ok(exts),
            Some(b',') => {
                c.pos += 1;
                continue;
            }
            Some(_) => {}
        }
        let name = c.token()?;
        let mut params = Vec::new();
        loop {
            c.skip_ows();
            match c.peek() {
                None => break,
                Some(b',') => {
                    c.pos += 1;
                    break;
                }
                Some(b';') => {
                    c.pos += 1;
                    c.skip_ows();
                    let pname = c.token()?;
                    c.skip_ows();
                    let pvalue = if c.eat(b'=') {
                        c.skip_ows();
                        if c.peek() == Some(b'"') {
                            Some(c.quoted_string()?)
                        } else {
                            Some(c.token()?)
                        }
                    } else {
                        None
                    };
                    params.push((pname, pvalue));
                }
                Some(_) => return Err(HandshakeError::BadExtensions),
            }
        }
        exts.push(Extension { name, params });
    }
}

/// Joins extensions back into one header value (`a; x=1, b`).
pub fn format_extensions(exts: &[Extension]) -> String {
    exts.iter()
        .map(Extension::to_header_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a request is not an acceptable WebSocket upgrade. The variants are in
/// the order [`check_request`] checks them; [`status`](Self::status) and
/// [`reason`](Self::reason) give the HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// Neither an `Upgrade` header nor `Connection: upgrade`: a plain HTTP
    /// request. Answer 426 with `Upgrade: websocket` on WebSocket-only routes.
    #[error("{}", self.reason())]
    NotWebSocket,
    /// The method is not GET. Answered with 400 rather than 405 so every
    /// malformed upgrade gets one status.
    #[error("{}", self.reason())]
    MethodNotGet,
    /// The request is not HTTP/1.1. Answer 400.
    #[error("{}", self.reason())]
    BadVersion,
    /// No `Host` header, an empty one, or more than one. Answer 400.
    #[error("{}", self.reason())]
    MissingHost,
    /// `Upgrade` does not list the token `websocket`. Answer 400.
    #[error("{}", self.reason())]
    BadUpgrade,
    /// `Connection` does not list the token `upgrade`. Answer 400.
    #[error("{}", self.reason())]
    BadConnection,
    /// `Sec-WebSocket-Version` is missing or not exactly `13`. Answer 426
    /// with `Sec-WebSocket-Version: 13` (§4.4).
    #[error("{}", self.reason())]
    UnsupportedVersion,
    /// No `Sec-WebSocket-Key` header. Answer 400.
    #[error("{}", self.reason())]
    MissingKey,
    /// `Sec-WebSocket-Key` is repeated or not base64 of 16 bytes. Answer 400.
    #[error("{}", self.reason())]
    InvalidKey,
    /// `Sec-WebSocket-Extensions` does not parse. Answer 400.
    #[error("{}", self.reason())]
    BadExtensions,
    /// `Sec-WebSocket-Protocol` holds something that is not a token. Answer 400.
    #[error("{}", self.reason())]
    BadProtocols,
}

impl HandshakeError {
    /// HTTP status the client gets: 426 Upgrade Required for
    /// [`NotWebSocket`](Self::NotWebSocket) and
    /// [`UnsupportedVersion`](Self::UnsupportedVersion), 400 otherwise.
    pub fn status(&self) -> StatusCode {
        match self {
            HandshakeError::NotWebSocket | HandshakeError::UnsupportedVersion => {
                StatusCode::UPGRADE_REQUIRED
            }
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// Short human reason, used as the response body (and as `Display`).
    pub fn reason(&self) -> &'static str {
        match self {
            HandshakeError::NotWebSocket => "this endpoint requires a WebSocket upgrade",
            HandshakeError::MethodNotGet => "method must be GET",
            HandshakeError::BadVersion => "WebSocket upgrade requires HTTP/1.1",
            HandshakeError::MissingHost => "exactly one non-empty Host header is required",
            HandshakeError::BadUpgrade => "Upgrade header must contain \"websocket\"",
            HandshakeError::BadConnection => "Connection header must contain \"upgrade\"",
            HandshakeError::UnsupportedVersion => "Sec-WebSocket-Version must be 13",
            HandshakeError::MissingKey => "Sec-WebSocket-Key header is missing",
            HandshakeError::InvalidKey => "Sec-WebSocket-Key must be base64 of 16 bytes",
            HandshakeError::BadExtensions => "malformed Sec-WebSocket-Extensions header",
            HandshakeError::BadProtocols => "Sec-WebSocket-Protocol must be a list of tokens",
        }
    }
}

/// True if a `Connection`/`Upgrade`-style header (all its lines) contains
/// `token` in its comma list, compared case-insensitively. Lines that are not
/// visible ASCII and empty list elements are ignored.
pub fn header_has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| !t.is_empty() && t.eq_ignore_ascii_case(token))
}

/// Checks a client's opening handshake (RFC 6455 §4.2.1) and returns what it
/// offered.
///
/// Checks, in this order, returning the first failure:
/// 1. the request has an `Upgrade` header at all, or `Connection` lists
///    `upgrade`; otherwise [`NotWebSocket`](HandshakeError::NotWebSocket)
///    (the caller decides whether to answer 426 or serve plain HTTP);
/// 2. the method is GET ([`MethodNotGet`](HandshakeError::MethodNotGet));
/// 3. the version is HTTP/1.1 ([`BadVersion`](HandshakeError::BadVersion));
/// 4. exactly one non-empty `Host` header ([`MissingHost`](HandshakeError::MissingHost));
/// 5. `Upgrade` lists `websocket`, case-insensitively ([`BadUpgrade`](HandshakeError::BadUpgrade));
/// 6. `Connection` lists `upgrade` across all its lines, case-insensitively
///    ([`BadConnection`](HandshakeError::BadConnection));
/// 7. exactly one `Sec-WebSocket-Version`, equal to `13`
///    ([`UnsupportedVersion`](HandshakeError::UnsupportedVersion));
/// 8. exactly one `Sec-WebSocket-Key`, standard padded base64 of 16 bytes
///    ([`MissingKey`](HandshakeError::MissingKey),
///    [`InvalidKey`](HandshakeError::InvalidKey));
/// 9. `Sec-WebSocket-Extensions` parses ([`BadExtensions`](HandshakeError::BadExtensions))
///    and `Sec-WebSocket-Protocol` lists only tokens ([`BadProtocols`](HandshakeError::BadProtocols)).
///
/// Not checked here: `Origin` (policy) and the request target (routing).
pub fn check_request<B>(req: &Request<B>) -> Result<ClientOffer, HandshakeError> {
    let headers = req.headers();
    if !headers.contains_key(header::UPGRADE)
        && !header_has_token(headers, header::CONNECTION, "upgrade")
    {
        return Err(HandshakeError::NotWebSocket);
    }
    if req.method() != Method::GET {
        return Err(HandshakeError::MethodNotGet);
    }
    if req.version() != Version::HTTP_11 {
        return Err(HandshakeError::BadVersion);
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(h), None) if !h.as_bytes().trim_ascii().is_empty() => {}
        _ => return Err(HandshakeError::MissingHost),
    }
    if !header_has_token(headers, header::UPGRADE, "websocket") {
        return Err(HandshakeError::BadUpgrade);
    }
    if !header_has_token(headers, header::CONNECTION, "upgrade") {
        return Err(HandshakeError::BadConnection);
    }
    let mut versions = headers.get_all(header::SEC_WEBSOCKET_VERSION).iter();
    match (versions.next(), versions.next()) {
        (Some(v), None) if v.as_bytes().trim_ascii() == VERSION.as_bytes() => {}
        _ => return Err(HandshakeError::UnsupportedVersion),
    }
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    let key = match (keys.next(), keys.next()) {
        (None, _) => return Err(HandshakeError::MissingKey),
        (Some(k), None) if is_valid_key(k.as_bytes()) => k.clone(),
        _ => return Err(HandshakeError::InvalidKey),
    };
    let mut extensions = Vec::new();
    for line in headers.get_all(header::SEC_WEBSOCKET_EXTENSIONS) {
        let line = line.to_str().map_err(|_| HandshakeError::BadExtensions)?;
        extensions.extend(parse_extensions(line)?);
    }
    let mut protocols = Vec::new();
    for line in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        let line = line.to_str().map_err(|_| HandshakeError::BadProtocols)?;
        for p in line.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if !is_token(p) {
                return Err(HandshakeError::BadProtocols);
            }
            protocols.push(p.to_owned());
        }
    }
    Ok(ClientOffer {
        key,
        protocols,
        extensions,
    })
}

/// Whether `key` (surrounding whitespace allowed) is standard, padded base64
/// of exactly 16 bytes.
fn is_valid_key(key: &[u8]) -> bool {
    let key = key.trim_ascii();
    // 16 bytes encode to 24 characters; the length check bounds the work.
    if key.len() != 24 {
        return false;
    }
    let mut buf = [0u8; 18];
    matches!(STANDARD.decode_slice(key, &mut buf), Ok(16))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn valid() -> http::request::Builder {
        Request::builder()
            .method("GET")
            .uri("/chat")
            .header("Host", "server.example.com")
            .header("Upgrade", "websocket")
            .header("Connection", "Upgrade")
            .header("Sec-WebSocket-Key", KEY)
            .header("Sec-WebSocket-Version", "13")
    }

    fn check(b: http::request::Builder) -> Result<ClientOffer, HandshakeError> {
        check_request(&b.body(()).unwrap())
    }

    /// A valid request with header `name` removed and optionally replaced.
    fn with(name: &str, values: &[&str]) -> Result<ClientOffer, HandshakeError> {
        let mut req = valid().body(()).unwrap();
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
        req.headers_mut().remove(&name);
        for v in values {
            req.headers_mut()
                .append(name.clone(), HeaderValue::from_str(v).unwrap());
        }
        check_request(&req)
    }

    fn ext(name: &str, params: &[(&str, Option<&str>)]) -> Extension {
        Extension {
            name: name.into(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
                .collect(),
        }
    }

    #[test]
    fn rfc_accept_key() {
        assert_eq!(accept_key(KEY.as_bytes()), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let offer = check(valid()).unwrap();
        assert_eq!(offer.accept_key(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn generated_keys_are_valid_and_fresh() {
        let a = generate_key();
        assert!(is_valid_key(a.as_bytes()), "{a}");
        assert_eq!(STANDARD.decode(&a).unwrap().len(), 16);
        assert!((0..8).any(|_| generate_key() != a));
        // A generated key passes check_request.
        let mut req = valid().body(()).unwrap();
        req.headers_mut().insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_str(&a).unwrap(),
        );
        assert_eq!(check_request(&req).unwrap().key, a.as_str());
    }

    #[test]
    fn valid_request() {
        let offer = check(
            valid()
                .header("Sec-WebSocket-Protocol", "chat, superchat")
                .header("Sec-WebSocket-Protocol", " v2 ,")
                .header(
                    "Sec-WebSocket-Extensions",
                    "permessage-deflate; client_max_window_bits",
                )
                .header("Sec-WebSocket-Extensions", "x-foo"),
        )
        .unwrap();
        assert_eq!(offer.key, KEY);
        assert_eq!(offer.protocols, ["chat", "superchat", "v2"]);
        assert_eq!(
            offer.extensions,
            [
                ext("permessage-deflate", &[("client_max_window_bits", None)]),
                ext("x-foo", &[])
            ]
        );
        let offer = check(valid()).unwrap();
        assert!(offer.protocols.is_empty() && offer.extensions.is_empty());
    }

    #[test]
    fn not_websocket() {
        let plain = Request::builder()
            .uri("/")
            .header("Host", "a")
            .header("Connection", "keep-alive");
        assert_eq!(check(plain), Err(HandshakeError::NotWebSocket));
        let no_conn = Request::builder().method("POST").uri("/");
        assert_eq!(check(no_conn), Err(HandshakeError::NotWebSocket));
        // Either signal is enough to be judged as an upgrade attempt.
        assert_eq!(
            check(
                Request::builder()
                    .method("POST")
                    .header("Connection", "upgrade")
            ),
            Err(HandshakeError::MethodNotGet)
        );
        assert_eq!(
            check(Request::builder().method("POST").header("Upgrade", "h2c")),
            Err(HandshakeError::MethodNotGet)
        );
    }

    #[test]
    fn method_must_be_get() {
        for m in ["POST", "HEAD", "CONNECT", "PUT"] {
            assert_eq!(
                check(valid().method(m)),
                Err(HandshakeError::MethodNotGet),
                "{m}"
            );
        }
    }

    #[test]
    fn http_version() {
        for v in [
            Version::HTTP_10,
            Version::HTTP_09,
            Version::HTTP_2,
            Version::HTTP_3,
        ] {
            assert_eq!(check(valid().version(v)), Err(HandshakeError::BadVersion));
        }
    }

    #[test]
    fn host() {
        assert_eq!(with("host", &[]), Err(HandshakeError::MissingHost));
        assert_eq!(with("host", &["a", "b"]), Err(HandshakeError::MissingHost));
        assert_eq!(with("host", &[""]), Err(HandshakeError::MissingHost));
        assert!(with("host", &["example.com:8443"]).is_ok());
    }

    #[test]
    fn upgrade_header() {
        assert_eq!(with("upgrade", &[]), Err(HandshakeError::BadUpgrade));
        assert_eq!(with("upgrade", &["h2c"]), Err(HandshakeError::BadUpgrade));
        assert_eq!(
            with("upgrade", &["websockets"]),
            Err(HandshakeError::BadUpgrade)
        );
        assert_eq!(with("upgrade", &[""]), Err(HandshakeError::BadUpgrade));
        assert!(with("upgrade", &["WebSocket"]).is_ok());
        assert!(with("upgrade", &["h2c, WEBSOCKET"]).is_ok());
        assert!(with("upgrade", &["h2c", "websocket"]).is_ok());
    }

    #[test]
    fn connection_header() {
        assert_eq!(
            with("connection", &["keep-alive"]),
            Err(HandshakeError::BadConnection)
        );
        assert_eq!(with("connection", &[]), Err(HandshakeError::BadConnection));
        assert_eq!(
            with("connection", &["upgrader, keep-alive"]),
            Err(HandshakeError::BadConnection)
        );
        assert!(with("connection", &["keep-alive, Upgrade"]).is_ok());
        assert!(with("connection", &["keep-alive,upgrade"]).is_ok());
        assert!(with("connection", &["UPGRADE"]).is_ok());
        assert!(with("connection", &["keep-alive", "upgrade"]).is_ok());
    }

    #[test]
    fn websocket_version() {
        assert_eq!(
            with("sec-websocket-version", &[]),
            Err(HandshakeError::UnsupportedVersion)
        );
        for bad in ["8", "12", "14", "13, 8", "", "13a"] {
            assert_eq!(
                with("sec-websocket-version", &[bad]),
                Err(HandshakeError::UnsupportedVersion),
                "{bad:?}"
            );
        }
        assert_eq!(
            with("sec-websocket-version", &["13", "13"]),
            Err(HandshakeError::UnsupportedVersion)
        );
        assert_eq!(HandshakeError::UnsupportedVersion.status(), 426);
    }

    #[test]
    fn websocket_key() {
        assert_eq!(
            with("sec-websocket-key", &[]),
            Err(HandshakeError::MissingKey)
        );
        for bad in [
            "",
            "not base64!",
            // 15 and 17 bytes.
            "AAAAAAAAAAAAAAAAAAAA",
            "AAAAAAAAAAAAAAAAAAAAAAA=",
            "AAAAAAAAAAAAAAAAAAAAAA",
            // Unpadded, URL-safe alphabet, non-canonical trailing bits.
            "dGhlIHNhbXBsZSBub25jZQ",
            "_-_-_-_-_-_-_-_-_-_-_-==",
            "dGhlIHNhbXBsZSBub25jZR==",
            "dGhlIHNhbXBsZSBub25jZQ==dGhlIHNhbXBsZSBub25jZQ==",
        ] {
            assert_eq!(
                with("sec-websocket-key", &[bad]),
                Err(HandshakeError::InvalidKey),
                "{bad:?}"
            );
        }
        assert_eq!(
            with("sec-websocket-key", &[KEY, KEY]),
            Err(HandshakeError::InvalidKey)
        );
        assert!(with("sec-websocket-key", &["AAAAAAAAAAAAAAAAAAAAAA=="]).is_ok());
    }

    #[test]
    fn extensions_and_protocols_headers() {
        assert_eq!(
            with("sec-websocket-extensions", &["foo; =1"]),
            Err(HandshakeError::BadExtensions)
        );
        assert_eq!(
            with("sec-websocket-extensions", &["ok", "bad;"]),
            Err(HandshakeError::BadExtensions)
        );
        let mut req = valid().body(()).unwrap();
        req.headers_mut().insert(
            header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_bytes(b"x; a=\"\xE9\"").unwrap(),
        );
        assert_eq!(
            check_request(&req).unwrap_err(),
            HandshakeError::BadExtensions
        );

        for bad in ["chat v1", "chat, a/b", "\"chat\"", "a;b"] {
            assert_eq!(
                with("sec-websocket-protocol", &[bad]),
                Err(HandshakeError::BadProtocols),
                "{bad:?}"
            );
        }
        let offer = with("sec-websocket-protocol", &["a ,b", "c", ""]).unwrap();
        assert_eq!(offer.protocols, ["a", "b", "c"]);
    }

    #[test]
    fn checks_run_in_documented_order() {
        // A request failing every check; fixing them one by one reveals the
        // next error in the documented order.
        let mut req = Request::builder()
            .method("POST")
            .version(Version::HTTP_10)
            .header("Connection", "upgrade")
            .header("Sec-WebSocket-Version", "8")
            .header("Sec-WebSocket-Extensions", ";")
            .header("Sec-WebSocket-Protocol", "a b")
            .body(())
            .unwrap();
        type Fix = Box<dyn Fn(&mut Request<()>)>;
        let fixes: Vec<(HandshakeError, Fix)> = vec![
            (
                HandshakeError::MethodNotGet,
                Box::new(|r| *r.method_mut() = Method::GET),
            ),
            (
                HandshakeError::BadVersion,
                Box::new(|r| *r.version_mut() = Version::HTTP_11),
            ),
            (
                HandshakeError::MissingHost,
                Box::new(|r| {
                    r.headers_mut()
                        .insert(header::HOST, HeaderValue::from_static("h"));
                }),
            ),
            (
                HandshakeError::BadUpgrade,
                Box::new(|r| {
                    r.headers_mut()
                        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                }),
            ),
            (
                HandshakeError::UnsupportedVersion,
                Box::new(|r| {
                    r.headers_mut().insert(
                        header::SEC_WEBSOCKET_VERSION,
                        HeaderValue::from_static("13"),
                    );
                }),
            ),
            (
                HandshakeError::MissingKey,
                Box::new(|r| {
                    r.headers_mut()
                        .insert(header::SEC_WEBSOCKET_KEY, HeaderValue::from_static("x"));
                }),
            ),
            (
                HandshakeError::InvalidKey,
                Box::new(|r| {
                    r.headers_mut()
                        .insert(header::SEC_WEBSOCKET_KEY, HeaderValue::from_static(KEY));
                }),
            ),
            (
                HandshakeError::BadExtensions,
                Box::new(|r| {
                    r.headers_mut().remove(header::SEC_WEBSOCKET_EXTENSIONS);
                }),
            ),
            (
                HandshakeError::BadProtocols,
                Box::new(|r| {
                    r.headers_mut().remove(header::SEC_WEBSOCKET_PROTOCOL);
                }),
            ),
        ];
        for (want, fix) in fixes {
            assert_eq!(check_request(&req).unwrap_err(), want);
            fix(&mut req);
        }
        assert!(check_request(&req).is_ok());

        // BadConnection comes before UnsupportedVersion.
        let mut req = valid().body(()).unwrap();
        req.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        req.headers_mut()
            .insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert_eq!(
            check_request(&req).unwrap_err(),
            HandshakeError::BadConnection
        );
    }

    #[test]
    fn header_tokens() {
        let mut h = HeaderMap::new();
        assert!(!header_has_token(&h, header::CONNECTION, "upgrade"));
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(header_has_token(&h, header::CONNECTION, "upgrade"));
        assert!(header_has_token(&h, header::CONNECTION, "KEEP-ALIVE"));
        assert!(!header_has_token(&h, header::CONNECTION, "close"));
        assert!(!header_has_token(&h, header::CONNECTION, "upgr"));
        assert!(!header_has_token(&h, header::UPGRADE, "upgrade"));
        let mut h = HeaderMap::new();
        h.append(
            header::CONNECTION,
            HeaderValue::from_bytes(b"\xFFx").unwrap(),
        );
        h.append(header::CONNECTION, HeaderValue::from_static(" ,, close ,"));
        assert!(header_has_token(&h, header::CONNECTION, "close"));
        assert!(!header_has_token(&h, header::CONNECTION, ""));
    }

    #[test]
    fn extension_parsing() {
        assert_eq!(
            parse_extensions("permessage-deflate; client_max_window_bits, x-foo; a=\"b c\""),
            Ok(vec![
                ext("permessage-deflate", &[("client_max_window_bits", None)]),
                ext("x-foo", &[("a", Some("b c"))]),
            ])
        );
        assert_eq!(
            parse_extensions(
                "permessage-deflate;client_max_window_bits=10 ; server_no_context_takeover,foo"
            ),
            Ok(vec![
                ext(
                    "permessage-deflate",
                    &[
                        ("client_max_window_bits", Some("10")),
                        ("server_no_context_takeover", None)
                    ]
                ),
                ext("foo", &[]),
            ])
        );
        assert_eq!(
            parse_extensions(r#"a; q="x\"y\\z", b; t = "10""#),
            Ok(vec![
                ext("a", &[("q", Some("x\"y\\z"))]),
                ext("b", &[("t", Some("10"))]),
            ])
        );
        assert_eq!(parse_extensions(""), Ok(vec![]));
        assert_eq!(parse_extensions(" , ,"), Ok(vec![]));
        assert_eq!(
            parse_extensions("a,,b,"),
            Ok(vec![ext("a", &[]), ext("b", &[])])
        );
        assert_eq!(
            parse_extensions("a; e=\"\""),
            Ok(vec![ext("a", &[("e", Some(""))])])
        );
        for bad in [
            ";a",
            "foo;",
            "foo; ",
            "foo; =1",
            "foo; a=",
            "foo; a=,",
            "foo; a=\"unterminated",
            "foo; a=\"bad\\",
            "foo bar",
            "foo; a=b c",
            "foo; a b",
            "foo; a==b",
            "\"foo\"",
            "foo/1",
            "foo; a=\"é\"",
            "é",
            "foo; a=\"x\"y",
        ] {
            assert_eq!(
                parse_extensions(bad),
                Err(HandshakeError::BadExtensions),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn extension_formatting_round_trips() {
        let exts = vec![
            ext("permessage-deflate", &[("client_max_window_bits", None)]),
            ext(
                "x-foo",
                &[
                    ("a", Some("b c")),
                    ("q", Some("x\"y\\z")),
                    ("n", Some("10")),
                    ("e", Some("")),
                ],
            ),
            ext("bare", &[]),
        ];
        assert_eq!(
            exts[0].to_header_string(),
            "permessage-deflate; client_max_window_bits"
        );
        assert_eq!(
            exts[1].to_header_string(),
            r#"x-foo; a="b c"; q="x\"y\\z"; n=10; e="""#
        );
        let joined = format_extensions(&exts);
        assert_eq!(
            joined,
            r#"permessage-deflate; client_max_window_bits, x-foo; a="b c"; q="x\"y\\z"; n=10; e="", bare"#
        );
        assert_eq!(parse_extensions(&joined), Ok(exts));
        assert_eq!(format_extensions(&[]), "");
        assert_eq!(
            format_extensions(&[ext("a", &[("x", Some("1"))]), ext("b", &[])]),
            "a; x=1, b"
        );
    }

    #[test]
    fn statuses_and_reasons() {
        let all = [
            HandshakeError::NotWebSocket,
            HandshakeError::MethodNotGet,
            HandshakeError::BadVersion,
            HandshakeError::MissingHost,
            HandshakeError::BadUpgrade,
            HandshakeError::BadConnection,
            HandshakeError::UnsupportedVersion,
            HandshakeError::MissingKey,
            HandshakeError::InvalidKey,
            HandshakeError::BadExtensions,
            HandshakeError::BadProtocols,
        ];
        let mut reasons = std::collections::HashSet::new();
        for e in all {
            let want = match e {
                HandshakeError::NotWebSocket | HandshakeError::UnsupportedVersion => 426,
                _ => 400,
            };
            assert_eq!(e.status(), want, "{e:?}");
            assert!(!e.reason().is_empty());
            assert_eq!(e.to_string(), e.reason());
            assert!(reasons.insert(e.reason()), "duplicate reason for {e:?}");
        }
        assert_eq!(HandshakeError::MethodNotGet.reason(), "method must be GET");
        assert_eq!(
            HandshakeError::InvalidKey.reason(),
            "Sec-WebSocket-Key must be base64 of 16 bytes"
        );
    }
}
