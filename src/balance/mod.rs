//! Server pools and the choice of a server for each new session.
//!
//! A [`Pool`] is one configured backend: its servers, the algorithm that picks
//! the first server for a session, the retry budget that bounds how many
//! others are tried when that one fails, the source addresses that its
//! connections take in turn, and where each server is (its name's cached
//! lookup). Algorithms live in [`algorithms`]
//! behind one trait so that least-connections, hashing and weights can be
//! added without touching the callers. This module never touches a socket.

pub mod algorithms;

use std::sync::Arc;

use crate::config::{BackendConfig, Config, ServerConfig};
use crate::upstream::{ServerAddress, SourceAddresses};

pub use algorithms::{RoundRobin, Selection};

/// One backend's servers and how to pick among them.
#[derive(Debug)]
pub struct Pool {
    /// The backend's configuration (servers, timeouts, retries).
    pub config: BackendConfig,
    /// Picks the first server to try for a session.
    selection: Box<dyn Selection>,
    /// The local addresses its connections are made from, in turn.
    pub sources: SourceAddresses,
    /// Where each server is (cached name lookups), indexed like
    /// `config.servers`.
    addresses: Vec<ServerAddress>,
}

impl Pool {
    /// A round-robin pool over the backend's servers.
    pub fn new(config: BackendConfig) -> Self {
        Pool {
            sources: SourceAddresses::new(&config.source_addresses),
            addresses: config
                .servers
                .iter()
                .map(|server| ServerAddress::new(&server.url, config.dns_refresh))
                .collect(),
            config,
            selection: Box::new(RoundRobin::default()),
        }
    }

    /// The servers to try for one session, in order: the algorithm's pick
    /// first, then the following servers (wrapping), at most `1 + retries`
    /// of them and each at most once.
    pub fn attempts(&self) -> impl Iterator<Item = (&ServerConfig, &ServerAddress)> + '_ {
        let n = self.config.servers.len();
        let first = if n == 0 {
            0
        } else {
            self.selection.pick(n) % n
        };
        let budget = (self.config.retries as usize + 1).min(n);
        (0..budget).map(move |i| {
            let index = (first + i) % n;
            (&self.config.servers[index], &self.addresses[index])
        })
    }
}

/// All pools, indexed like [`Config::backends`].
#[derive(Debug, Clone)]
pub struct Pools(Arc<Vec<Pool>>);

impl Pools {
    /// One pool per configured backend.
    pub fn new(config: &Config) -> Self {
        Pools(Arc::new(
            config.backends.iter().cloned().map(Pool::new).collect(),
        ))
    }

    /// The pool of backend number `index` (as in `RouteConfig::backend`).
    pub fn get(&self, index: usize) -> Option<&Pool> {
        self.0.get(index)
    }
}
