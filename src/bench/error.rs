//! What can go wrong in `wsgate bench`.
//!
//! Two different things: a [`BenchError`] stops the run before it starts
//! (a bad URL, an unreadable CA file, too few file descriptors), while an
//! [`ErrorKind`] classifies the failures that are *counted* during a run
//! (a refused connection, a wrong echo) and end up in the report.

use std::path::PathBuf;

/// Why a benchmark could not be run at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The target URL is not a usable `ws://` or `wss://` URL.
    #[error("{url:?}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The target host name could not be resolved.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The host as written in the URL.
        host: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
    /// An option has a value that cannot work (e.g. `--connections 0`).
    #[error("{0}")]
    Option(String),
    /// `--source-ips` could not be read, or does not fit the target.
    #[error("--source-ips {text:?}: {reason}")]
    SourceIps {
        /// The value as given.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The CA file (`--ca`, `SSL_CERT_FILE` or the system bundle) could not
    /// be read or holds no usable certificate.
    #[error("CA certificates {path}: {reason}", path = path.display())]
    Ca {
        /// The file as given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A `wss://` target but nothing to verify its certificate against.
    #[error(
        "no CA certificates to verify {host}: pass --ca FILE (PEM), set SSL_CERT_FILE, \
         or --insecure to accept any certificate"
    )]
    NoTrustAnchors {
        /// The host whose certificate would be checked.
        host: String,
    },
    /// rustls refused the client configuration.
    #[error("TLS client setup: {0}")]
    Tls(#[from] rustls::Error),
    /// The process may not open enough file descriptors for the run.
    #[error(
        "--connections {connections} needs about {needed} file descriptors, but this process \
         may open only {limit} (hard limit {hard}); raise the limit (ulimit -n, LimitNOFILE=) \
         or use fewer connections"
    )]
    FdLimit {
        /// The connections asked for.
        connections: usize,
        /// Descriptors needed: one per connection plus a margin.
        needed: u64,
        /// The soft limit after trying to raise it to the hard limit.
        limit: u64,
        /// The hard limit.
        hard: u64,
    },
    /// More connections per source address than there are local ports.
    #[error(
        "--connections {connections} from {sources} source address(es) needs {per_source} \
         local ports per address, but net.ipv4.ip_local_port_range has {ports}; spread the \
         connections with --source-ips (e.g. --source-ips {suggest})"
    )]
    Ports {
        /// The connections asked for.
        connections: usize,
        /// How many source addresses they are spread over.
        sources: usize,
        /// Connections per source address.
        per_source: usize,
        /// Local ports available per source address.
        ports: u64,
        /// A `--source-ips` count that would be enough.
        suggest: usize,
    },
    /// The async runtime or a worker thread could not be started.
    #[error("cannot start the benchmark runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A worker thread panicked (a bug).
    #[error("a benchmark worker thread panicked")]
    WorkerPanicked,
}

/// The kinds of failure counted during a run, as reported under `errors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The TCP connection could not be made (refused, unreachable, out of
    /// ports or descriptors, or not made within `--timeout`).
    Connect,
    /// The TLS handshake or the WebSocket opening handshake failed: a
    /// certificate error, a status other than 101, a wrong
    /// `Sec-WebSocket-Accept`, or no answer within `--timeout`.
    Handshake,
    /// An echoed message differs from the one sent: other bytes, another
    /// length, another type (text or binary), or out of order.
    Mismatch,
    /// The server ended the session early: a close frame, EOF or a reset
    /// before the benchmark closed it.
    Closed,
    /// Something expected did not arrive within `--timeout`: an echo still
    /// missing after the sending stopped (counted per message), the pong of
    /// the idle check, or the answer to our close frame.
    Timeout,
    /// The server broke RFC 6455 framing (a masked frame, RSV bits, a bad
    /// opcode sequence or close payload).
    Protocol,
}

impl ErrorKind {
    /// Every kind, in report order.
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Connect,
        ErrorKind::Handshake,
        ErrorKind::Mismatch,
        ErrorKind::Closed,
        ErrorKind::Timeout,
        ErrorKind::Protocol,
    ];

    /// The kind's name in the report and the JSON output.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Handshake => "handshake",
            ErrorKind::Mismatch => "mismatch",
            ErrorKind::Closed => "closed",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Protocol => "protocol",
        }
    }

    /// Position in [`ErrorKind::ALL`], for counter arrays.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}
