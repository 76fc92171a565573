//! One client connection before its upgrade: TLS handshake, then hyper's
//! HTTP/1.1 server behind a tower stack.
//!
//! Limits that apply here:
//! - the TLS handshake and the request headers must each arrive within
//!   `timeouts.client_handshake` (hyper's header read timeout drops a client
//!   that never finishes its request);
//! - the handling of one request, upstream tries included, is bounded by a
//!   tower `Timeout` whose expiry becomes a 504;
//! - on shutdown a connection that has not upgraded finishes its current
//!   request and closes.

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;

use http::StatusCode;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::TlsAcceptor;
use tower::ServiceBuilder;

use super::reject::{reject, Body};
use super::stream::ClientStream;
use super::upgrade::{self, ConnInfo};
use super::State;
use crate::shutdown::Shutdown;

/// Serves one accepted connection until it closes or upgrades. `permit`
/// counts it against the connection cap for as long as it (or the session
/// it becomes) lives.
pub async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    state: Arc<State>,
    permit: OwnedSemaphorePermit,
    shutdown: Shutdown,
) {
    let handshake_timeout = state.config.timeouts.client_handshake;
    let stream = match tls {
        None => ClientStream::Plain(tcp),
        Some(acceptor) => match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await
        {
            Ok(Ok(stream)) => ClientStream::Tls(Box::new(stream)),
            Ok(Err(e)) => {
                tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(client = %peer, "TLS handshake timed out");
                return;
            }
        },
    };
    let info = ConnInfo {
        peer,
        tls: stream.is_tls(),
        permit: Arc::new(permit),
    };
    let handler_state = state.clone();
    let handler_shutdown = shutdown.clone();
    let service = ServiceBuilder::new()
        .map_result(timeout_to_504)
        .timeout(state.request_timeout)
        .service_fn(move |request| {
            upgrade::handle(
                request,
                handler_state.clone(),
                info.clone(),
                handler_shutdown.clone(),
            )
        });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
        .with_upgrades();
    let mut connection = pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = shutdown.signalled() => {
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(state.config.timeouts.close, connection).await {
                Ok(result) => result,
                Err(_) => return,
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(client = %peer, error = %e, "HTTP connection ended with an error");
    }
}

/// Turns the tower timeout's expiry into a 504 answer.
fn timeout_to_504(
    result: Result<http::Response<Body>, tower::BoxError>,
) -> Result<http::Response<Body>, tower::BoxError> {
    match result {
        Err(e) if e.is::<tower::timeout::error::Elapsed>() => Ok(reject(
            StatusCode::GATEWAY_TIMEOUT,
            "the backend did not accept the upgrade in time",
        )),
        other => other,
    }
}
