//! The upgrade handler: the one place that sees the whole data path.
//!
//! In order: route (404) → opening handshake check (400/426) → balance and
//! upstream connect + handshake, trying other servers within the retry
//! budget (502/504) → 101 to the client with the backend's subprotocol and
//! extensions → a session task that takes over the raw streams and relays
//! until the close, then logs one line.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::OwnedSemaphorePermit;

use super::reject::{handshake_rejection, reject, Body};
use super::stream::ClientStream;
use super::State;
use crate::config::RelayMode;
use crate::relay::frames::FrameLimits;
use crate::relay::{self, SessionConfig};
use crate::route::upstream_path;
use crate::shutdown::Shutdown;
use crate::upstream::{self, UpstreamRequest};
use crate::ws::handshake::{self, Extension};

/// The one extension the `frames` relay can carry without understanding it:
/// it only sets RSV1 on a message's first frame.
const RELAYABLE_EXTENSION: &str = "permessage-deflate";

/// What the handler knows about the client connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether it came in over TLS.
    pub tls: bool,
    /// Its place under the connection cap, held until the session ends.
    pub permit: Arc<OwnedSemaphorePermit>,
}

/// Handles one HTTP request on a client connection.
pub async fn handle(
    mut request: Request<Incoming>,
    state: Arc<State>,
    conn: ConnInfo,
    shutdown: Shutdown,
) -> Result<Response<Body>, Infallible> {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    let path = request.uri().path().to_string();

    let Some(route) = state.routes.lookup(host.as_deref(), &path) else {
        return Ok(reject(
            StatusCode::NOT_FOUND,
            "no route for this host and path",
        ));
    };
    let offer = match handshake::check_request(&request) {
        Ok(offer) => offer,
        Err(e) => return Ok(handshake_rejection(&e)),
    };
    let extensions: Vec<Extension> = match route.mode {
        // A tunnel never looks inside frames, so any extension works end to end.
        RelayMode::Tunnel => offer.extensions.clone(),
        RelayMode::Frames => offer
            .extensions
            .iter()
            .filter(|e| e.name.eq_ignore_ascii_case(RELAYABLE_EXTENSION))
            .cloned()
            .collect(),
    };
    let Some(pool) = state.pools.get(route.backend) else {
        return Ok(reject(
            StatusCode::SERVICE_UNAVAILABLE,
            "backend not available",
        ));
    };

    let query = request.uri().query();
    let mut last_error = None;
    let mut accepted = None;
    for (server, address) in pool.attempts() {
        let mut path_and_query = upstream_path(route, &server.url.path, &path);
        if let Some(q) = query {
            path_and_query.push('?');
            path_and_query.push_str(q);
        }
        let upstream_request = UpstreamRequest {
            path_and_query: &path_and_query,
            client_headers: request.headers(),
            client_addr: conn.peer,
            client_host: host.as_deref(),
            client_tls: conn.tls,
            protocols: &offer.protocols,
            extensions: &extensions,
        };
        match upstream::connect(
            server,
            address,
            &pool.config,
            &pool.sources,
            &upstream_request,
        )
        .await
        {
            Ok(upstream) => {
                accepted = Some((server, upstream));
                break;
            }
            Err(e) => {
                tracing::warn!(client = %conn.peer, backend = %route.backend_name, error = %e, "upstream attempt failed");
                last_error = Some(e);
            }
        }
    }
    let Some((server, upstream)) = accepted else {
        let (status, reason) = match &last_error {
            Some(e) => (e.status(), e.to_string()),
            None => (
                StatusCode::SERVICE_UNAVAILABLE,
                "backend has no servers".into(),
            ),
        };
        return Ok(reject(status, &reason));
    };

    let mut response = Response::new(Body::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    for (name, value) in upstream.response_headers.iter() {
        headers.append(name.clone(), value.clone());
    }
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    let accept = handshake::accept_key(offer.key.as_bytes());
    if let Ok(value) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }

    let session = SessionConfig {
        mode: route.mode,
        limits: FrameLimits {
            max_frame_size: route.max_frame_size,
            max_message_size: route.max_message_size,
            deflate: upstream
                .extensions
                .iter()
                .any(|e| e.name.eq_ignore_ascii_case(RELAYABLE_EXTENSION)),
        },
        close_timeout: state.config.timeouts.close,
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    // Only the socket and its read-ahead live on in the session.
    let backend_stream = upstream.stream;
    let backend_read_ahead = upstream.read_ahead;
    let route_prefix = route.path_prefix.clone();
    let server_name = server.url.authority.clone();
    let stop = shutdown.signal();
    shutdown.spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(client = %conn.peer, error = %e, "client upgrade did not complete");
                return;
            }
        };
        let Ok(parts) = upgraded.downcast::<TokioIo<ClientStream>>() else {
            tracing::error!(client = %conn.peer, "upgraded connection of an unexpected type");
            return;
        };
        let client = parts.io.into_inner();
        let started = Instant::now();
        let outcome = relay::run(
            client,
            parts.read_buf,
            backend_stream,
            backend_read_ahead,
            session,
            stop,
        )
        .await;
        tracing::info!(
            client = %conn.peer,
            route = %route_prefix,
            backend = %server_name,
            duration_ms = started.elapsed().as_millis() as u64,
            client_to_backend_bytes = outcome.client_to_backend.bytes,
            client_to_backend_messages = outcome.client_to_backend.messages,
            backend_to_client_bytes = outcome.backend_to_client.bytes,
            backend_to_client_messages = outcome.backend_to_client.messages,
            close_code = outcome.close_code.map_or(-1, i32::from),
            closed_by = %outcome.closed_by,
            "session closed"
        );
        drop(conn.permit);
    });
    Ok(response)
}
