//! Counting and reporting: per-thread [`Stats`] (plain fields and an HDR
//! histogram, no sharing on the hot path), per-thread [`Progress`] atomics
//! for the live line, and the final [`Report`] with its human and JSON
//! forms.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

use super::error::ErrorKind;
use super::Mode;

/// The highest latency the histograms hold, in microseconds (one hour);
/// larger values are recorded as this.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// One worker thread's counts, merged into the report at the end.
#[derive(Debug, Clone)]
pub(crate) struct Stats {
    /// Echo mode: messages sent in the measured window whose echo came back
    /// intact.
    pub messages: u64,
    /// Churn mode: sessions started in the measured window that completed.
    pub sessions: u64,
    /// Idle mode: connections that answered the final check.
    pub alive: u64,
    /// Connections whose opening handshake succeeded.
    pub opened: u64,
    /// Connection attempts that failed (connect or handshake).
    pub failed: u64,
    /// Errors by [`ErrorKind::index`].
    pub errors: [u64; 6],
    /// The first message of each kind.
    pub first: [Option<String>; 6],
    /// Latencies in microseconds.
    pub latency: Histogram<u64>,
    /// When the last successful opening handshake completed.
    pub last_open: Option<Instant>,
}

impl Stats {
    /// Empty counts.
    pub fn new() -> Stats {
        Stats {
            messages: 0,
            sessions: 0,
            alive: 0,
            opened: 0,
            failed: 0,
            errors: [0; 6],
            first: Default::default(),
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("valid histogram bounds"),
            last_open: None,
        }
    }

    /// Records one latency.
    #[inline]
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency.saturating_record(us.clamp(1, MAX_LATENCY_US));
    }

    /// Counts `n` errors of `kind`, keeping the first message.
    pub fn error(&mut self, kind: ErrorKind, n: u64, message: impl FnOnce() -> String) {
        self.errors[kind.index()] += n;
        let first = &mut self.first[kind.index()];
        if first.is_none() {
            *first = Some(message());
        }
    }

    /// Adds another thread's counts.
    pub fn merge(&mut self, other: &Stats) {
        self.messages += other.messages;
        self.sessions += other.sessions;
        self.alive += other.alive;
        self.opened += other.opened;
        self.failed += other.failed;
        for i in 0..self.errors.len() {
            self.errors[i] += other.errors[i];
            if self.first[i].is_none() {
                self.first[i].clone_from(&other.first[i]);
            }
        }
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        self.last_open = self.last_open.max(other.last_open);
    }
}

/// One worker thread's running totals, read once a second for the
/// progress line. Aligned so that two threads' counters never share a
/// cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Progress {
    /// Echo round trips or churn sessions completed, warm-up included.
    pub done: AtomicU64,
    /// Payload bytes sent plus received.
    pub bytes: AtomicU64,
    /// Errors of any kind.
    pub errors: AtomicU64,
    /// Connections opened so far.
    pub opened: AtomicU64,
    /// Connections closed or lost so far.
    pub closed: AtomicU64,
}

impl Progress {
    /// Adds to a counter.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Summed progress of all threads at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProgressSum {
    pub done: u64,
    pub bytes: u64,
    pub errors: u64,
    pub opened: u64,
    pub closed: u64,
}

impl ProgressSum {
    /// Adds up the threads' counters.
    pub fn read(all: &[Progress]) -> ProgressSum {
        let mut s = ProgressSum::default();
        for p in all {
            s.done += p.done.load(Ordering::Relaxed);
            s.bytes += p.bytes.load(Ordering::Relaxed);
            s.errors += p.errors.load(Ordering::Relaxed);
            s.opened += p.opened.load(Ordering::Relaxed);
            s.closed += p.closed.load(Ordering::Relaxed);
        }
        s
    }
}

/// Latency percentiles in microseconds (all 0 when nothing was recorded).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Latency {
    /// How many latencies were recorded.
    pub count: u64,
    /// The smallest.
    pub min: u64,
    /// The mean.
    pub mean: f64,
    /// The median.
    pub p50: u64,
    /// The 90th percentile.
    pub p90: u64,
    /// The 99th percentile.
    pub p99: u64,
    /// The 99.9th percentile.
    pub p999: u64,
    /// The largest.
    pub max: u64,
}

impl Latency {
    /// Reads the percentiles from a histogram.
    pub(crate) fn from_histogram(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            min: h.min(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// Error counts by kind (see [`ErrorKind`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ErrorCounts {
    /// [`ErrorKind::Connect`].
    pub connect: u64,
    /// [`ErrorKind::Handshake`].
    pub handshake: u64,
    /// [`ErrorKind::Mismatch`].
    pub mismatch: u64,
    /// [`ErrorKind::Closed`].
    pub closed: u64,
    /// [`ErrorKind::Timeout`].
    pub timeout: u64,
    /// [`ErrorKind::Protocol`].
    pub protocol: u64,
    /// All of them.
    pub total: u64,
}

impl ErrorCounts {
    pub(crate) fn from_array(a: &[u64; 6]) -> ErrorCounts {
        ErrorCounts {
            connect: a[ErrorKind::Connect.index()],
            handshake: a[ErrorKind::Handshake.index()],
            mismatch: a[ErrorKind::Mismatch.index()],
            closed: a[ErrorKind::Closed.index()],
            timeout: a[ErrorKind::Timeout.index()],
            protocol: a[ErrorKind::Protocol.index()],
            total: a.iter().sum(),
        }
    }

    fn get(&self, kind: ErrorKind) -> u64 {
        match kind {
            ErrorKind::Connect => self.connect,
            ErrorKind::Handshake => self.handshake,
            ErrorKind::Mismatch => self.mismatch,
            ErrorKind::Closed => self.closed,
            ErrorKind::Timeout => self.timeout,
            ErrorKind::Protocol => self.protocol,
        }
    }
}

/// The results of a run. Serialized as the `--json` output; the field names
/// are stable and documented in the [module doc](super).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The target URL.
    pub url: String,
    /// `echo`, `idle` or `churn`.
    pub mode: &'static str,
    /// `--connections`.
    pub connections: usize,
    /// `--threads`.
    pub threads: usize,
    /// `--size`, in bytes.
    pub size: usize,
    /// Whether messages are text (else binary).
    pub text: bool,
    /// `--inflight` (closed loop), or null with `--rate`.
    pub inflight: Option<usize>,
    /// `--rate` in messages/s (open loop), or null.
    pub rate: Option<f64>,
    /// `--duration`, in seconds.
    pub duration_s: f64,
    /// `--warmup`, in seconds.
    pub warmup_s: f64,
    /// `--ramp`, in seconds.
    pub ramp_s: f64,
    /// `--timeout`, in seconds.
    pub timeout_s: f64,
    /// Echo round trips counted (sent in the window, echoed intact).
    pub messages: u64,
    /// `messages` per second of `--duration`.
    pub messages_per_sec: f64,
    /// Payload bytes of the counted messages, both directions added.
    pub payload_bytes: u64,
    /// `payload_bytes` per second, in MB (10^6 bytes).
    pub mb_per_sec: f64,
    /// Churn sessions counted.
    pub sessions: u64,
    /// `sessions` per second of `--duration`.
    pub sessions_per_sec: f64,
    /// Idle mode: connections alive at the final check.
    pub alive: u64,
    /// Milliseconds from the start to the last successful opening
    /// handshake, or null if none succeeded.
    pub open_time_ms: Option<f64>,
    /// Opening handshakes that succeeded.
    pub connections_opened: u64,
    /// Connection attempts that failed (connect or handshake errors).
    pub connections_failed: u64,
    /// What `latency_us` measures.
    pub latency_of: &'static str,
    /// Latency percentiles in microseconds.
    pub latency_us: Latency,
    /// Errors by kind.
    pub errors: ErrorCounts,
    /// The first error message of each kind that occurred.
    pub first_errors: BTreeMap<&'static str, String>,
    /// CPU time (user + system) of the whole process over the measured
    /// window, in seconds; null where `/proc` cannot tell.
    pub cpu_seconds: Option<f64>,
    /// `cpu_seconds` per counted message (or session), in microseconds.
    pub cpu_us_per_message: Option<f64>,
    /// Whether the run is a pass: no error, and something was measured.
    pub ok: bool,
    /// Why `ok` is false, or null.
    pub failure: Option<String>,
}

impl Report {
    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    pub(crate) fn mode_of(mode: Mode) -> &'static str {
        match mode {
            Mode::Echo => "echo",
            Mode::Idle => "idle",
            Mode::Churn => "churn",
        }
    }

    /// Decides `ok` and `failure` from the counts.
    pub(crate) fn judge(&mut self) {
        let mut reasons = Vec::new();
        if self.errors.total > 0 {
            let kinds: Vec<String> = ErrorKind::ALL
                .iter()
                .filter(|&&k| self.errors.get(k) > 0)
                .map(|&k| format!("{} {}", k.name(), self.errors.get(k)))
                .collect();
            reasons.push(format!(
                "{} error(s): {}",
                self.errors.total,
                kinds.join(", ")
            ));
        }
        match self.mode {
            "echo" if self.messages == 0 => {
                reasons.push("no message was echoed in the measured window".to_owned())
            }
            "churn" if self.sessions == 0 => {
                reasons.push("no session completed in the measured window".to_owned())
            }
            "idle" if self.alive < self.connections as u64 => reasons.push(format!(
                "only {} of {} connections were alive at the end",
                self.alive, self.connections
            )),
            _ => {}
        }
        self.ok = reasons.is_empty();
        self.failure = (!reasons.is_empty()).then(|| reasons.join("; "));
    }
}

/// Formats a rate with thousands separators kept simple: no decimals above
/// 100, one below.
fn rate(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.text { "text" } else { "binary" };
        let load = match (self.mode, self.rate, self.inflight) {
            ("idle", _, _) => String::new(),
            ("echo", Some(r), _) => format!(
                ", {}-byte {kind} messages, open loop at {} msgs/s in total",
                self.size,
                rate(r)
            ),
            ("echo", None, Some(k)) => format!(
                ", {}-byte {kind} messages, {k} in flight per connection",
                self.size
            ),
            _ => format!(", {}-byte {kind} messages", self.size),
        };
        writeln!(
            f,
            "wsgate bench {}: {} mode, {} connections{load}, {} thread(s)",
            self.url, self.mode, self.connections, self.threads
        )?;
        match self.mode {
            "idle" => {
                writeln!(
                    f,
                    "  held       {:.2} s after all connections were opened",
                    self.duration_s
                )?;
                writeln!(
                    f,
                    "  alive      {} of {} at the end (ping answered)",
                    self.alive, self.connections
                )?;
            }
            mode => {
                writeln!(
                    f,
                    "  measured   {:.2} s after {:.2} s of warm-up",
                    self.duration_s, self.warmup_s
                )?;
                if mode == "churn" {
                    writeln!(
                        f,
                        "  sessions   {} ({}/s): connect, handshake, one echo, close",
                        self.sessions,
                        rate(self.sessions_per_sec)
                    )?;
                } else {
                    writeln!(
                        f,
                        "  messages   {} ({} msgs/s), every echo verified byte for byte",
                        self.messages,
                        rate(self.messages_per_sec)
                    )?;
                    writeln!(
                        f,
                        "  payload    {:.1} MB/s counting both directions ({:.1} MB/s each way)",
                        self.mb_per_sec,
                        self.mb_per_sec / 2.0
                    )?;
                }
            }
        }
        let l = &self.latency_us;
        if l.count > 0 {
            writeln!(
                f,
                "  latency    {} in µs: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {:.1}, n {})",
                self.latency_of, l.p50, l.p90, l.p99, l.p999, l.max, l.mean, l.count
            )?;
        }
        write!(
            f,
            "  conns      opened {}, failed {}",
            self.connections_opened, self.connections_failed
        )?;
        if let Some(ms) = self.open_time_ms {
            write!(f, "; last one open after {ms:.0} ms")?;
        }
        writeln!(f)?;
        if self.errors.total == 0 {
            writeln!(f, "  errors     none")?;
        } else {
            let kinds: Vec<String> = ErrorKind::ALL
                .iter()
                .map(|&k| format!("{} {}", k.name(), self.errors.get(k)))
                .collect();
            writeln!(
                f,
                "  errors     {} ({})",
                self.errors.total,
                kinds.join(", ")
            )?;
            for (kind, message) in &self.first_errors {
                writeln!(f, "             first {kind}: {message}")?;
            }
        }
        if let Some(cpu) = self.cpu_seconds {
            if self.mode == "idle" {
                write!(f, "  cpu        {cpu:.2} s over the whole run")?;
            } else {
                write!(
                    f,
                    "  cpu        {cpu:.2} s in the measured window ({:.0}% of one core)",
                    cpu / self.duration_s.max(1e-9) * 100.0
                )?;
            }
            if let Some(us) = self.cpu_us_per_message {
                let per = if self.mode == "churn" {
                    "session"
                } else {
                    "message"
                };
                write!(f, ", {us:.2} µs per {per}")?;
            }
            writeln!(f)?;
            if self.mode != "idle" && cpu >= 0.9 * self.duration_s * self.threads as f64 {
                writeln!(
                    f,
                    "  note       the bench was busy {:.0}% of the time on each of its {} thread(s): \
                     it may be the limit here (try more --threads, or give it its own core)",
                    cpu / (self.duration_s * self.threads as f64).max(1e-9) * 100.0,
                    self.threads
                )?;
            }
        }
        Ok(())
    }
}

/// CPU time (user + system) used by this process so far, from
/// `/proc/self/stat`; `None` where that is not available.
pub(crate) fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime 14 and stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux architecture.
    Some(Duration::from_millis((utime + stime) * 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_merge_and_latency() {
        let mut a = Stats::new();
        let mut b = Stats::new();
        for us in 1..=1000u64 {
            a.record(Duration::from_micros(us));
        }
        b.record(Duration::from_secs(7200));
        b.error(ErrorKind::Mismatch, 2, || "first".into());
        b.error(ErrorKind::Mismatch, 1, || "second".into());
        a.merge(&b);
        let l = Latency::from_histogram(&a.latency);
        assert_eq!(l.count, 1001);
        assert_eq!(l.min, 1);
        assert!((495..=505).contains(&l.p50), "{l:?}");
        assert!(l.max >= MAX_LATENCY_US - MAX_LATENCY_US / 1000);
        assert_eq!(a.errors[ErrorKind::Mismatch.index()], 3);
        assert_eq!(
            a.first[ErrorKind::Mismatch.index()].as_deref(),
            Some("first")
        );
        let e = ErrorCounts::from_array(&a.errors);
        assert_eq!(e.mismatch, 3);
        assert_eq!(e.total, 3);
        assert_eq!(
            Latency::from_histogram(&Stats::new().latency),
            Latency::default()
        );
    }

    #[test]
    fn cpu_is_readable() {
        assert!(process_cpu().is_some());
    }
}
