//! wsgate: a WebSocket reverse proxy for the edge.
//!
//! wsgate terminates TLS, completes the RFC 6455 opening handshake only after a
//! backend has accepted the same upgrade, and then relays frames between the two
//! peers, validating every frame on the way (or copying bytes raw in `tunnel`
//! mode).
//!
//! # Layout
//!
//! The modules follow one connection's path through the proxy:
//!
//! ```text
//! accept ─► TLS ─► hyper http1 ─► tower layers ─► handshake check ─► route
//!        ─► balance ─► upstream connect + handshake ─► 101 ─► relay ─► close
//! ```
//!
//! - [`config`]: the YAML schema, units, and whole-file validation. Plain data
//!   that every other module reads.
//! - [`server`]: listeners, TLS, the hyper/tower service and the upgrade
//!   handler, the only place that sees the whole data path.
//! - [`ws`]: the protocol alone (handshake keys, frame header codec, masking,
//!   UTF-8, close codes). Depends on nothing else of ours.
//! - [`route`]: the route table, host and path prefix to backend.
//! - [`balance`]: server pools and the algorithms that pick a server.
//! - [`upstream`]: connect to a backend server and perform the client side of
//!   the opening handshake.
//! - [`relay`]: the two relay modes, `frames` and `tunnel`, and the close
//!   bookkeeping of a session.
//! - [`echo`]: a small conformant echo server used for demos, tests and benches.
//! - [`bench`](mod@bench): `wsgate bench`, a low-overhead load generator for any WebSocket URL.
//! - [`shutdown`]: one stop signal fanned out to every task.
//! - [`logging`]: the plain-text log line, cheap enough to write per session.

#![deny(missing_docs, missing_debug_implementations)]
#![forbid(unsafe_code)]

pub mod balance;
pub mod bench;
pub mod config;
pub mod echo;
pub mod logging;
pub mod relay;
pub mod route;
pub mod server;
pub mod shutdown;
pub mod upstream;
pub mod ws;
