//! The front end: listeners, TLS, the hyper/tower service and the upgrade
//! handler.
//!
//! [`Server::bind`] validates what the config cannot (sockets, certificates,
//! source addresses) before anything is served; [`Server::run`] accepts
//! until the shutdown signal, then lets every session close with 1001 and
//! waits for them, up to a deadline.
//!
//! One connection's path through this module, in order:
//! [`listener`] (accept, connection cap) → [`tls`] → [`service`] (hyper
//! http1 + tower layers) → [`upgrade`] (handshake check, route, balance,
//! upstream, 101, relay) with refusals from [`reject`].

pub mod listener;
pub mod reject;
pub mod service;
pub mod stream;
pub mod tls;
pub mod upgrade;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::balance::Pools;
use crate::config::Config;
use crate::route::RouteTable;
use crate::shutdown::Shutdown;
use crate::upstream;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener's address could not be bound.
    #[error("listeners[{index}].bind: cannot listen on {addr}: {source}")]
    Bind {
        /// The listener's position in the config.
        index: usize,
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A backend's source address cannot be bound: it is not an address of
    /// this host (or the system refused it).
    #[error("backends.{backend}.source_addresses: cannot connect from {addr}: {source}")]
    SourceAddress {
        /// The backend's name.
        backend: String,
        /// The configured address.
        addr: IpAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A listener's certificate and key were refused by rustls.
    #[error("listeners[{index}].tls: {source}")]
    Tls {
        /// The listener's position in the config.
        index: usize,
        /// What rustls said.
        source: rustls::Error,
    },
}

/// What every connection of the server shares: the config and what was built
/// from it.
#[derive(Debug)]
pub struct State {
    /// The validated configuration.
    pub config: Config,
    /// Routes, indexed for lookup.
    pub routes: RouteTable,
    /// One server pool per backend.
    pub pools: Pools,
    /// Permits for open client connections (`limits.max_connections`).
    pub connections: Arc<Semaphore>,
    /// Upper bound on one request's handling (upstream tries included).
    pub request_timeout: Duration,
}

impl State {
    /// Builds routes and pools from a validated config.
    pub fn new(config: Config) -> Self {
        // The longest a backend may legitimately take, over all its tries.
        let request_timeout = config
            .backends
            .iter()
            .map(|b| (b.connect_timeout + b.handshake_timeout) * (b.retries + 1))
            .max()
            .unwrap_or_default()
            + Duration::from_secs(1);
        State {
            routes: RouteTable::new(&config),
            pools: Pools::new(&config),
            connections: Arc::new(Semaphore::new(config.limits.max_connections)),
            request_timeout,
            config,
        }
    }
}

/// A bound, not yet running proxy.
pub struct Server {
    /// The bound sockets with their TLS acceptor, in config order.
    listeners: Vec<(TcpListener, Option<TlsAcceptor>)>,
    /// Shared by every connection.
    state: Arc<State>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listeners", &self.local_addrs())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Checks the backends' source addresses, builds TLS acceptors and binds
    /// every listener; fails before serving anything if one of them cannot
    /// be set up.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        for backend in &config.backends {
            for &addr in &backend.source_addresses {
                // Bound without a port, then closed: nothing is reserved.
                upstream::bind_source(addr).map_err(|source| ServerError::SourceAddress {
                    backend: backend.name.clone(),
                    addr,
                    source,
                })?;
            }
        }
        let mut listeners = Vec::with_capacity(config.listeners.len());
        for (index, listener) in config.listeners.iter().enumerate() {
            let acceptor = match &listener.tls {
                Some(tls_config) => Some(
                    tls::acceptor(tls_config)
                        .map_err(|source| ServerError::Tls { index, source })?,
                ),
                None => None,
            };
            let socket =
                TcpListener::bind(listener.bind)
                    .await
                    .map_err(|source| ServerError::Bind {
                        index,
                        addr: listener.bind,
                        source,
                    })?;
            listeners.push((socket, acceptor));
        }
        Ok(Server {
            listeners,
            state: Arc::new(State::new(config)),
        })
    }

    /// The addresses actually bound, in config order (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(l, _)| l.local_addr().ok())
            .collect()
    }

    /// Serves until `shutdown` is triggered, then drains: sessions close with
    /// 1001 and are waited for up to twice the close timeout (plus a second),
    /// after which the rest are dropped.
    pub async fn run(self, shutdown: Shutdown) {
        for (socket, acceptor) in self.listeners {
            let accept =
                listener::accept_loop(socket, acceptor, self.state.clone(), shutdown.clone());
            shutdown.spawn(accept);
        }
        shutdown.signalled().await;
        let grace = self.state.config.timeouts.close * 2 + Duration::from_secs(1);
        tracing::info!(
            open = shutdown.active_tasks(),
            grace_ms = grace.as_millis() as u64,
            "shutting down: closing sessions with 1001"
        );
        if tokio::time::timeout(grace, shutdown.drained())
            .await
            .is_err()
        {
            tracing::warn!(
                left = shutdown.active_tasks(),
                "drain deadline passed; dropping the remaining connections"
            );
        }
    }
}
