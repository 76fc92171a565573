//! HTTP answers for requests that do not become a WebSocket session.
//!
//! Each refusal is a short `text/plain` body naming the reason, so that an
//! operator reading a client's error or a `curl -i` sees why at once.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::ws::handshake::HandshakeError;

/// The body type of every response wsgate writes itself.
pub type Body = Full<Bytes>;

/// A refusal with `status` and `reason` as its body. The connection is
/// closed after it: a client whose upgrade failed has nothing more to say.
pub fn reject(status: StatusCode, reason: &str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{reason}\n"))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The answer to a bad opening handshake: 400 with the reason, or 426 with
/// the header that tells the client what to do instead.
pub fn handshake_rejection(error: &HandshakeError) -> Response<Body> {
    let mut response = reject(error.status(), error.reason());
    let headers = response.headers_mut();
    match error {
        HandshakeError::NotWebSocket => {
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        }
        HandshakeError::UnsupportedVersion => {
            headers.insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        _ => {}
    }
    response
}
