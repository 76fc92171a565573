//! The configuration: YAML schema, units, and whole-file validation.
//!
//! Exists so that every other module reads plain, already-checked data: a
//! [`Config`] only exists if the whole file was valid, so nothing starts on a
//! half-valid configuration, and `wsgate check` reports the exact field and
//! line that is wrong.
//!
//! Loading has two layers (as in sozu):
//!
//! 1. `file`: raw serde structs that mirror the YAML and deny unknown fields;
//!    syntax and schema errors come from serde_yaml with their position.
//! 2. `validate`: turns the raw structs into the typed [`Config`], parsing
//!    durations and sizes ([`units`]), addresses, host patterns, backend URLs
//!    and TLS files. Its errors name the field path (`routes[1].backend`) and
//!    the line, found through a small path → position index of the text.
//!
//! The first error wins. Relative TLS paths are resolved against the
//! directory of the config file (see [`Config::load`]).
//!
//! ```yaml
//! listeners:
//!   - bind: "127.0.0.1:8443"
//!     tls: { cert: certs/cert.pem, key: certs/key.pem }
//! routes:
//!   - path_prefix: /echo
//!     backend: echo
//! backends:
//!   echo:
//!     servers:
//!       - url: "ws://127.0.0.1:9001"
//! ```

pub mod addresses;
mod error;
mod file;
mod host;
mod positions;
mod tls;
pub mod units;
mod url;
mod validate;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use self::error::{ConfigError, Position};
pub use self::url::DEFAULT_WS_PORT;

/// Default `routes[i].max_frame_size`: 16 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: u64 = 16 << 20;
/// Default `routes[i].max_message_size`: 64 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 64 << 20;
/// Default `backends.NAME.connect_timeout`: 5 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `backends.NAME.handshake_timeout`: 10 s.
pub const DEFAULT_BACKEND_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `backends.NAME.dns_refresh`: 5 s.
pub const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(5);
/// Upper bound of the default `retries` (`min(servers - 1, 2)`).
pub const DEFAULT_MAX_RETRIES: u32 = 2;
/// The largest `retries` accepted.
pub const MAX_RETRIES: u32 = 100;
/// The most `backends.NAME.source_addresses` one backend may list (a /16).
pub const MAX_SOURCE_ADDRESSES: u32 = 1 << 16;
/// Default `limits.max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default `timeouts.client_handshake`: 10 s.
pub const DEFAULT_CLIENT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `timeouts.close`: 5 s.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Config files larger than this are refused (they are a few KiB).
pub const MAX_CONFIG_FILE: u64 = 16 << 20;

/// Validated configuration: what the proxy runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to accept connections; at least one.
    pub listeners: Vec<ListenerConfig>,
    /// Routes in file order; at least one.
    pub routes: Vec<RouteConfig>,
    /// Backends in file order; routes refer to them by index; at least one.
    pub backends: Vec<BackendConfig>,
    /// Resource limits.
    pub limits: Limits,
    /// Proxy-wide timeouts.
    pub timeouts: Timeouts,
}

impl Config {
    /// Reads and validates a file. Errors name file, line, column and field
    /// path.
    ///
    /// Relative TLS `cert`/`key` paths are resolved against the directory
    /// that contains `path`, so a config and its certificates can be moved
    /// together.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let read_error = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let bytes = tls::read_limited(path, MAX_CONFIG_FILE).map_err(read_error)?;
        let text = String::from_utf8(bytes).map_err(|e| {
            read_error(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not valid UTF-8: {e}"),
            ))
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        Config::from_yaml_with_base(&text, &path.display().to_string(), base)
    }

    /// Parses and validates YAML text; `origin` is used in messages (a file
    /// name).
    ///
    /// Relative TLS paths are resolved against the directory part of
    /// `origin` taken as a path (the current directory when it has none), so
    /// that `from_yaml(&read(p), p)` behaves like [`Config::load`]`(p)`.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let base = Path::new(origin).parent().unwrap_or(Path::new(""));
        Config::from_yaml_with_base(text, origin, base)
    }

    /// Like [`Config::from_yaml`], with relative TLS paths resolved against
    /// `base_dir`.
    pub fn from_yaml_with_base(
        text: &str,
        origin: &str,
        base_dir: &Path,
    ) -> Result<Config, ConfigError> {
        validate::load_text(text, origin, base_dir)
    }

    /// Index of a backend by name.
    pub fn backend_index(&self, name: &str) -> Option<usize> {
        self.backends.iter().position(|b| b.name == name)
    }
}

/// One listening socket.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Address to bind; port 0 picks a free port (tests).
    pub bind: SocketAddr,
    /// TLS settings; `None` for a plain HTTP listener.
    pub tls: Option<TlsConfig>,
}

/// A listener's certificate and key, already read and parsed.
#[derive(Debug)]
pub struct TlsConfig {
    /// Path of the PEM certificate chain (relative paths already resolved).
    pub cert_path: PathBuf,
    /// Path of the PEM private key (relative paths already resolved).
    pub key_path: PathBuf,
    /// Parsed PEM certificate chain (leaf first); at least one certificate.
    pub cert_chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// Parsed PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: rustls_pki_types::PrivateKeyDer<'static>,
}

impl Clone for TlsConfig {
    fn clone(&self) -> Self {
        TlsConfig {
            cert_path: self.cert_path.clone(),
            key_path: self.key_path.clone(),
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// One route: which requests go to which backend, and how.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Host the request must name; `None` matches any host.
    pub host: Option<HostPattern>,
    /// Path prefix the request path must start with; starts with '/'.
    pub path_prefix: String,
    /// Index into [`Config::backends`].
    pub backend: usize,
    /// Name of that backend (for logs and metrics).
    pub backend_name: String,
    /// How frames are relayed.
    pub mode: RelayMode,
    /// Largest frame payload accepted, in bytes (default 16 MiB); at least 1.
    pub max_frame_size: u64,
    /// Largest message (all fragments) accepted, in bytes (default 64 MiB);
    /// at least 1.
    pub max_message_size: u64,
    /// Whether the prefix is removed from the path sent to the backend
    /// (default false).
    pub strip_prefix: bool,
}

/// The host part of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// An exact host, lowercase, without port (IPv6 in brackets).
    Exact(String),
    /// `*.example.com`: the suffix including the leading dot, lowercase
    /// (`".example.com"`); matches any deeper name, not the bare suffix.
    Wildcard(String),
}

/// How a route relays a session after both handshakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RelayMode {
    /// Parse and validate every frame (YAML `frames`).
    #[default]
    Frames,
    /// Copy bytes raw, without validation (YAML `tunnel`).
    Tunnel,
}

impl std::fmt::Display for RelayMode {
    /// Writes the mode as spelled in YAML.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RelayMode::Frames => "frames",
            RelayMode::Tunnel => "tunnel",
        })
    }
}

/// A named group of servers that routes send sessions to.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// The name used in `routes[i].backend`.
    pub name: String,
    /// The servers, in file order; at least one.
    pub servers: Vec<ServerConfig>,
    /// Time allowed for the TCP connect to a server (default 5s).
    pub connect_timeout: Duration,
    /// Time the backend has to answer the upgrade request (default 10s).
    pub handshake_timeout: Duration,
    /// Extra servers tried after the first fails; default
    /// `min(servers - 1, 2)`, at most 100.
    pub retries: u32,
    /// Local addresses that connections to the servers are made from, in
    /// turn; empty to let the kernel choose. Each source address has its own
    /// set of local ports towards each server, so these are what lets one
    /// proxy hold more than about 64,000 sessions on one backend server.
    /// Unicast, distinct, at most [`MAX_SOURCE_ADDRESSES`], and covering the
    /// address family of every server written as an IP address.
    pub source_addresses: Vec<IpAddr>,
    /// How long the addresses a server name resolved to are used before the
    /// name is looked up again, in the background (default 5s).
    pub dns_refresh: Duration,
}

/// One backend server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where the server is.
    pub url: BackendUrl,
}

/// A parsed `ws://` backend URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendUrl {
    /// As written (hostname, IPv4, or IPv6 without brackets).
    pub host: String,
    /// The port; 80 when the URL names none.
    pub port: u16,
    /// `""` when the URL has no path or just `/`; otherwise starts with '/'
    /// and has no trailing '/'.
    pub path: String,
    /// `host:port` as sent in the Host header (IPv6 in brackets; port
    /// omitted when 80).
    pub authority: String,
}

/// Resource limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most client connections open at once (default 10000, at least 1).
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Proxy-wide timeouts.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// Time a client has to send its complete upgrade request (default 10s).
    pub client_handshake: Duration,
    /// How long to wait for a peer's close frame / TCP close (default 5s).
    pub close: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            client_handshake: DEFAULT_CLIENT_HANDSHAKE_TIMEOUT,
            close: DEFAULT_CLOSE_TIMEOUT,
        }
    }
}
