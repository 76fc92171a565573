//! A small WebSocket echo server, for trying wsgate out, for the demo, and
//! as a backend in benchmarks.
//!
//! It is built on tungstenite, an implementation independent of wsgate's own
//! frame code, so that a session through the proxy always has a second
//! opinion at its far end. Every text and binary message is sent back as it
//! came; pings are answered and the close handshake is completed by
//! tungstenite. No size limit is applied (the proxy in front enforces its
//! own). If the client offers subprotocols, the first one is chosen.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::shutdown::Shutdown;

/// Accepts echo sessions on `listener` until `shutdown` is triggered.
pub async fn serve(listener: TcpListener, shutdown: Shutdown) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.signalled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                shutdown.spawn(echo_session(stream, peer));
            }
            Err(e) => {
                tracing::warn!(error = %e, "echo: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Picks the first offered subprotocol, if any. (The error type is
/// tungstenite's callback signature, never returned here.)
#[allow(clippy::result_large_err)]
fn choose_protocol(request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    let first = request
        .headers()
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find(|p| !p.is_empty())
        .and_then(|p| http::HeaderValue::from_str(p).ok());
    if let Some(protocol) = first {
        response
            .headers_mut()
            .insert(http::header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    Ok(response)
}

/// Echoes one connection's messages until it closes.
async fn echo_session(stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    let mut ws = match tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        choose_protocol,
        Some(config),
    )
    .await
    {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!(client = %peer, error = %e, "echo: handshake failed");
            return;
        }
    };
    while let Some(message) = ws.next().await {
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                tracing::debug!(client = %peer, error = %e, "echo: session ended");
                return;
            }
        };
        if matches!(message, Message::Text(_) | Message::Binary(_)) {
            if let Err(e) = ws.send(message).await {
                tracing::debug!(client = %peer, error = %e, "echo: send failed");
                return;
            }
        }
    }
}
