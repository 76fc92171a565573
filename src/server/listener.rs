//! The accept side: one loop per listener, the global connection cap, and
//! backoff when accepting fails (e.g. out of file descriptors).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::service;
use super::State;
use crate::shutdown::Shutdown;

/// First and largest pause after a failed `accept`.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(5), Duration::from_secs(1));

/// Accepts connections until shutdown; each gets its own task, or a 503 when
/// `limits.max_connections` connections are already open.
pub async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<State>,
    shutdown: Shutdown,
) {
    let mut backoff = ACCEPT_BACKOFF.0;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.signalled() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => {
                backoff = ACCEPT_BACKOFF.0;
                accepted
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; backing off {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                continue;
            }
        };
        // Small frames must not wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        match state.connections.clone().try_acquire_owned() {
            Ok(permit) => {
                let task = service::serve_connection(
                    tcp,
                    peer,
                    tls.clone(),
                    state.clone(),
                    permit,
                    shutdown.clone(),
                );
                shutdown.spawn(task);
            }
            Err(_) => {
                tracing::warn!(client = %peer, "connection limit reached; answering 503");
                shutdown.spawn(refuse_over_limit(tcp, tls.clone(), state.clone()));
            }
        }
    }
}

/// Answers 503 to a connection beyond the cap, within the client handshake
/// timeout, and closes it.
async fn refuse_over_limit(tcp: TcpStream, tls: Option<TlsAcceptor>, state: Arc<State>) {
    const BODY: &str = "connection limit reached";
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{BODY}\n",
        BODY.len() + 1
    );
    let answer = async {
        match tls {
            None => {
                let mut tcp = tcp;
                tcp.write_all(response.as_bytes()).await?;
                tcp.shutdown().await
            }
            Some(acceptor) => {
                let mut stream = acceptor.accept(tcp).await?;
                stream.write_all(response.as_bytes()).await?;
                stream.shutdown().await
            }
        }
    };
    let _ = tokio::time::timeout(state.config.timeouts.client_handshake, answer).await;
}
