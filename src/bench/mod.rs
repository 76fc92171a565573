//! `wsgate bench`: a WebSocket load generator for any `ws://` or `wss://`
//! URL, used to compare wsgate with other proxies.
//!
//! The load generator is usually the ceiling of such a comparison, so it is
//! built to cost little per message: wsgate's own frame codec and masking
//! over plain tokio sockets (or tokio-rustls), frames masked once per
//! connection and only their 8-byte sequence tag rewritten per message,
//! frames parsed in place from one reusable buffer per connection, and one
//! current-thread runtime per `--threads` thread (default 1) with no state
//! shared between threads on the hot path. Nothing is allocated per
//! message.
//!
//! # Modes
//!
//! - **echo** (default): every connection sends `--size`-byte messages and
//!   verifies every echo byte for byte. Messages of 8 bytes or more start
//!   with a per-connection sequence number (8 hex digits), so a lost,
//!   repeated or reordered echo is a mismatch too. Closed loop with
//!   `--inflight K` messages outstanding per connection, or open loop with
//!   `--rate R` messages/s in total: sends are then scheduled at intended
//!   times, spread evenly over the connections, and latency is measured
//!   from the intended time, so a stalling server shows up in the latency
//!   instead of slowing the load down (no coordinated omission). The send
//!   times are kept to the microsecond by a timer of each thread's own
//!   (`pacer`), since a sender that is late by tokio's millisecond tick
//!   would measure its own lateness.
//! - **idle**: opens the connections and holds them, answering pings; once
//!   all have opened (or failed), waits `--duration`, then checks each with
//!   one ping/pong. Reports how many were alive and how long opening took.
//! - **churn**: each connection slot loops over whole sessions (connect,
//!   upgrade, one verified echo, close 1000, TCP close); reports sessions/s
//!   and the latency of a whole session.
//!
//! # Timeline
//!
//! Connections are opened spread over `--ramp`. Counting starts after
//! `--warmup` (measured from the first connection attempt) and lasts
//! `--duration`: a message or session counts if it was *sent* (or
//! started) inside that window, and its latency is recorded. After the
//! window, echo mode waits up to `--timeout` for echoes still in flight,
//! then closes every connection with close 1000 and waits for the server's
//! close. Everything is bounded: connect, handshake and every wait take at
//! most `--timeout`, and whatever still runs after the sum of ramp,
//! warm-up, duration, 4 × timeout and 3 s is cut off and counted as a
//! timeout. Idle mode does not use `--warmup`.
//!
//! A run with any error, or with nothing measured, is a failure: the
//! report says why and `wsgate bench` exits non-zero.
//!
//! # Limits
//!
//! At start the soft `RLIMIT_NOFILE` is raised to the hard limit; if the
//! connections still do not fit, the run is refused with the numbers. A
//! source address has only `net.ipv4.ip_local_port_range` ports towards one
//! target (about 28 000 by default), so runs with more connections are
//! refused unless `--source-ips` spreads them over more loopback addresses
//! (`127.0.0.1-127.0.0.254`, or a count such as `8`); each connection binds
//! to its source address before it connects.
//!
//! # JSON output
//!
//! With `--json`, one JSON object is printed on stdout ([`Report`]). Field
//! names are stable:
//!
//! | field | meaning |
//! |---|---|
//! | `url`, `mode` | the target, and `echo`, `idle` or `churn` |
//! | `connections`, `threads`, `size`, `text` | the options as used (`size` in bytes) |
//! | `inflight` | messages in flight per connection (closed loop), `null` with `--rate` |
//! | `rate` | open-loop messages/s in total, or `null` |
//! | `duration_s`, `warmup_s`, `ramp_s`, `timeout_s` | the times, in seconds |
//! | `messages`, `messages_per_sec` | echo round trips counted, and per second of `duration_s` |
//! | `payload_bytes`, `mb_per_sec` | payload of the counted messages, **both directions added**, and MB (10^6 bytes) per second |
//! | `sessions`, `sessions_per_sec` | churn sessions counted, and per second |
//! | `alive` | idle: connections that answered the final ping |
//! | `open_time_ms` | ms from the start to the last successful opening handshake (`null` if none) |
//! | `connections_opened`, `connections_failed` | opening handshakes that succeeded / attempts that failed |
//! | `latency_of` | what the latency is: `round-trip` (closed loop, from the actual send), `round-trip-from-intended-send` (open loop), `session` (churn), `open` (idle: connect + TLS + upgrade) |
//! | `latency_us` | `{count, min, mean, p50, p90, p99, p999, max}` in microseconds (HDR histogram, 3 significant digits) |
//! | `errors` | `{connect, handshake, mismatch, closed, timeout, protocol, total}` (see [`ErrorKind`]) |
//! | `first_errors` | the first message of each kind that occurred, by kind |
//! | `cpu_seconds` | CPU time (user + system) of the whole bench process during the measured window (the whole run in idle mode); `null` without `/proc` |
//! | `cpu_us_per_message` | `cpu_seconds` per counted message (churn: per session), in µs |
//! | `ok`, `failure` | whether the run passed, and if not, why |

mod churn;
mod conn;
mod echo;
mod error;
mod idle;
mod limits;
mod pacer;
mod report;
mod target;
mod worker;

use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

pub use error::{BenchError, ErrorKind};
pub use report::{ErrorCounts, Latency, Report};
pub use target::{parse_source_ips, tls_config, Target};

use conn::Opener;
use worker::Plan;

/// The largest `--size` accepted.
pub const MAX_SIZE: u64 = 1 << 30;
/// The largest `--inflight` accepted.
pub const MAX_INFLIGHT: usize = 65_536;
/// The most `--threads` accepted.
pub const MAX_THREADS: usize = 256;

/// What the connections do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Send messages and verify their echoes.
    #[default]
    Echo,
    /// Hold connections open, then check they are alive.
    Idle,
    /// Whole sessions back to back.
    Churn,
}

/// Everything a run is told; see the [module doc](self) for the meaning.
#[derive(Debug, Clone)]
pub struct Options {
    /// The target, `ws://…` or `wss://…`.
    pub url: String,
    /// What the connections do.
    pub mode: Mode,
    /// How many connections (churn: slots).
    pub connections: usize,
    /// Message payload size in bytes.
    pub size: usize,
    /// Text messages instead of binary.
    pub text: bool,
    /// Closed loop: messages in flight per connection.
    pub inflight: usize,
    /// Open loop: messages per second in total (overrides `inflight`).
    pub rate: Option<f64>,
    /// The measured window (idle: how long connections are held).
    pub duration: Duration,
    /// Time from the start before counting begins.
    pub warmup: Duration,
    /// Time over which connections are opened.
    pub ramp: Duration,
    /// The limit of every single wait.
    pub timeout: Duration,
    /// Worker threads, each with its own runtime.
    pub threads: usize,
    /// Source addresses to bind to (`--source-ips`).
    pub source_ips: Option<String>,
    /// Accept any server certificate.
    pub insecure: bool,
    /// PEM file of CA certificates to trust for `wss://`.
    pub ca: Option<PathBuf>,
    /// Print a progress line on stderr every second.
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            url: String::new(),
            mode: Mode::Echo,
            connections: 10,
            size: 64,
            text: false,
            inflight: 1,
            rate: None,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            ramp: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            threads: 1,
            source_ips: None,
            insecure: false,
            ca: None,
            progress: true,
        }
    }
}

impl Options {
    /// Refuses values that cannot work.
    fn validate(&self) -> Result<(), BenchError> {
        let bad = |m: String| Err(BenchError::Option(m));
        if self.connections == 0 || self.connections > 10_000_000 {
            return bad("--connections must be from 1 to 10000000".into());
        }
        if self.size as u64 > MAX_SIZE {
            return bad(format!("--size must be at most {MAX_SIZE} bytes (1GiB)"));
        }
        if self.inflight == 0 || self.inflight > MAX_INFLIGHT {
            return bad(format!("--inflight must be from 1 to {MAX_INFLIGHT}"));
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0 && rate <= 1e9) {
                return bad("--rate must be a number of messages per second above 0".into());
            }
        }
        if self.duration.is_zero() {
            return bad("--duration must be more than 0".into());
        }
        if self.mode != Mode::Idle && self.ramp > self.warmup + self.duration {
            return bad(format!(
                "--ramp ({:?}) must not be longer than --warmup + --duration ({:?}), or connections \
                 would open after the end of the run",
                self.ramp,
                self.warmup + self.duration
            ));
        }
        if self.timeout.is_zero() {
            return bad("--timeout must be more than 0".into());
        }
        if self.threads == 0 || self.threads > MAX_THREADS {
            return bad(format!("--threads must be from 1 to {MAX_THREADS}"));
        }
        Ok(())
    }
}

/// Runs a benchmark to the end and returns its report.
///
/// Errors are only for runs that cannot start (bad options, an
/// unresolvable host, too few descriptors or ports); failures during the
/// run are counted in the report (see [`Report::ok`]).
pub fn run(opts: &Options) -> Result<Report, BenchError> {
    opts.validate()?;
    let target = Target::parse(&opts.url)?;
    let addr = target.resolve()?;
    let sources = match &opts.source_ips {
        Some(text) => {
            let ips = parse_source_ips(text)?;
            if ips.iter().any(|ip| ip.is_ipv4() != addr.is_ipv4()) {
                return Err(BenchError::SourceIps {
                    text: text.clone(),
                    reason: format!(
                        "the target {addr} is {}, so the source addresses must be too",
                        if addr.is_ipv4() { "IPv4" } else { "IPv6" }
                    ),
                });
            }
            ips
        }
        None => Vec::new(),
    };
    let tls = if target.tls {
        Some((
            tls_config(&target, opts.ca.as_deref(), opts.insecure)?,
            target.server_name()?,
        ))
    } else {
        None
    };
    let threads = opts.threads.min(opts.connections);
    limits::check_fds(opts.connections, threads)?;
    limits::check_ports(opts.connections, sources.len())?;

    let opener = Opener::new(&target, addr, tls, sources, opts.timeout);
    let start = Instant::now() + Duration::from_millis(10);
    let measure_start = start + opts.warmup;
    let end = measure_start + opts.duration;
    let hard_deadline = end + opts.ramp + opts.timeout * 4 + Duration::from_secs(3);
    let (check_at, _) = watch::channel(None);
    let plan = Plan {
        opts: Options {
            rate: opts.rate.filter(|_| opts.mode == Mode::Echo),
            ..opts.clone()
        },
        threads,
        opener,
        start,
        measure_start,
        end,
        hard_deadline,
        progress: (0..threads).map(|_| Default::default()).collect(),
        settled: AtomicUsize::new(0),
        check_at,
    };
    let outcome = worker::execute(plan)?;
    Ok(build_report(opts, threads, start, outcome))
}

fn build_report(
    opts: &Options,
    threads: usize,
    start: Instant,
    outcome: worker::Outcome,
) -> Report {
    let s = &outcome.stats;
    let secs = opts.duration.as_secs_f64();
    let echo = opts.mode == Mode::Echo;
    let rate = opts.rate.filter(|_| echo);
    let payload_bytes = s.messages * opts.size as u64 * 2;
    let counted = match opts.mode {
        Mode::Echo => s.messages,
        Mode::Churn => s.sessions,
        Mode::Idle => 0,
    };
    let cpu_seconds = outcome.cpu.map(|d| d.as_secs_f64());
    let mut report = Report {
        url: opts.url.clone(),
        mode: Report::mode_of(opts.mode),
        connections: opts.connections,
        threads,
        size: opts.size,
        text: opts.text,
        inflight: (echo && rate.is_none()).then_some(opts.inflight),
        rate,
        duration_s: secs,
        warmup_s: opts.warmup.as_secs_f64(),
        ramp_s: opts.ramp.as_secs_f64(),
        timeout_s: opts.timeout.as_secs_f64(),
        messages: s.messages,
        messages_per_sec: s.messages as f64 / secs,
        payload_bytes,
        mb_per_sec: payload_bytes as f64 / secs / 1e6,
        sessions: s.sessions,
        sessions_per_sec: s.sessions as f64 / secs,
        alive: s.alive,
        open_time_ms: s
            .last_open
            .map(|t| t.saturating_duration_since(start).as_secs_f64() * 1e3),
        connections_opened: s.opened,
        connections_failed: s.failed,
        latency_of: match (opts.mode, rate) {
            (Mode::Echo, None) => "round-trip",
            (Mode::Echo, Some(_)) => "round-trip-from-intended-send",
            (Mode::Churn, _) => "session",
            (Mode::Idle, _) => "open",
        },
        latency_us: Latency::from_histogram(&s.latency),
        errors: ErrorCounts::from_array(&s.errors),
        first_errors: ErrorKind::ALL
            .iter()
            .filter_map(|k| Some((k.name(), s.first[k.index()].clone()?)))
            .collect(),
        cpu_seconds,
        cpu_us_per_message: cpu_seconds
            .filter(|_| counted > 0)
            .map(|c| c * 1e6 / counted as f64),
        ok: false,
        failure: None,
    };
    report.judge();
    report
}
