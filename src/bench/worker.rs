//! Threads, runtimes and the clock of a run.
//!
//! Each of the `--threads` OS threads runs its own current-thread tokio
//! runtime with a `LocalSet`, and owns the connections whose number modulo
//! the thread count is its own. A thread's connections share its
//! [`Stats`] through a `RefCell`: nothing on the hot path is shared
//! between threads but a few relaxed atomic adds for the progress line.
//! The main thread runs worker 0 and, beside it, the coordinator that
//! prints progress, samples CPU time and collects the threads' stats.

use std::cell::RefCell;
use std::io::Write;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::{JoinSet, LocalSet};
use tokio::time::{sleep_until, timeout_at, Instant};

use super::conn::{Conn, FrameReader, Opener};
use super::error::{BenchError, ErrorKind};
use super::pacer::Pacer;
use super::report::{process_cpu, Progress, ProgressSum, Stats};
use super::{churn, echo, idle, Mode, Options};

/// The part of a run every thread reads: options, where to connect, and
/// the timeline.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The options, validated.
    pub opts: Options,
    /// How many worker threads there are.
    pub threads: usize,
    /// Opens connections.
    pub opener: Opener,
    /// When the first connection is opened (the ramp starts).
    pub start: Instant,
    /// When warm-up ends and counting starts.
    pub measure_start: Instant,
    /// When sending stops (echo) or sessions stop starting (churn).
    pub end: Instant,
    /// When whatever is still running is cut off and counted as a timeout.
    pub hard_deadline: Instant,
    /// One per thread.
    pub progress: Vec<Progress>,
    /// Idle mode: connections whose opening has succeeded or failed.
    pub settled: AtomicUsize,
    /// Idle mode: when the connections are checked, set once all settled.
    pub check_at: watch::Sender<Option<Instant>>,
}

impl Plan {
    /// Whether something that started at `t` is counted.
    #[inline]
    pub fn in_window(&self, t: Instant) -> bool {
        t >= self.measure_start && t < self.end
    }
}

/// One thread's view: the plan, and its own counts.
#[derive(Debug)]
pub(crate) struct Worker {
    /// The run.
    pub plan: Arc<Plan>,
    /// This thread's number.
    pub thread: usize,
    /// This thread's counts.
    pub stats: RefCell<Stats>,
    /// The open loop's send timer; `None` in the other modes (and where
    /// it could not be set up: then tokio's timer stands in).
    pub pacer: Option<Pacer>,
}

/// Counts a connection as closed in the progress line when dropped.
#[derive(Debug)]
pub(crate) struct OpenGuard<'a>(&'a Worker);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        Progress::add(&self.0.progress().closed, 1);
    }
}

impl Worker {
    /// This thread's progress counters.
    #[inline]
    pub fn progress(&self) -> &Progress {
        &self.plan.progress[self.thread]
    }

    /// Counts `n` errors into `stats` (already borrowed by the caller).
    pub fn error_in(
        &self,
        stats: &mut Stats,
        kind: ErrorKind,
        n: u64,
        message: impl FnOnce() -> String,
    ) {
        if n == 0 {
            return;
        }
        stats.error(kind, n, message);
        Progress::add(&self.progress().errors, n);
    }

    /// Counts `n` errors.
    pub fn error(&self, kind: ErrorKind, n: u64, message: impl FnOnce() -> String) {
        self.error_in(&mut self.stats.borrow_mut(), kind, n, message);
    }

    /// Counts a [`Failure`](super::conn::Failure) of connection `index`.
    pub fn failure(&self, index: usize, (kind, message): (ErrorKind, String)) {
        self.error(kind, 1, || format!("connection {index}: {message}"));
    }

    /// Opens connection `index`, counting the outcome.
    pub async fn open(
        &self,
        index: usize,
        reader: &mut FrameReader,
    ) -> Option<(Conn, OpenGuard<'_>)> {
        match self.plan.opener.open(index, reader).await {
            Ok(conn) => {
                let mut stats = self.stats.borrow_mut();
                stats.opened += 1;
                stats.last_open = Some(Instant::now());
                Progress::add(&self.progress().opened, 1);
                Some((conn, OpenGuard(self)))
            }
            Err(failure) => {
                self.stats.borrow_mut().failed += 1;
                self.failure(index, failure);
                None
            }
        }
    }
}

/// Runs one thread's share of the connections and returns its counts.
async fn worker_main(plan: Arc<Plan>, thread: usize) -> Stats {
    let w = Rc::new(Worker {
        plan: plan.clone(),
        thread,
        stats: RefCell::new(Stats::new()),
        pacer: open_loop_pacer(&plan.opts),
    });
    // The pacer's expiries are read by a task of their own, which lives
    // as long as this thread's connections.
    let driver = w.clone();
    let pacing = tokio::task::spawn_local(async move {
        if let Some(pacer) = &driver.pacer {
            if let Err(e) = pacer.drive().await {
                driver.error(ErrorKind::Timeout, 1, || {
                    format!("the open-loop send timer failed: {e}")
                });
            }
        }
    });
    let n = plan.opts.connections;
    let mut set = JoinSet::new();
    for index in (thread..n).step_by(plan.threads) {
        let at = plan.start + plan.opts.ramp.mul_f64(index as f64 / n as f64);
        if at > Instant::now() {
            sleep_until(at).await;
        }
        let w = w.clone();
        match plan.opts.mode {
            Mode::Echo => set.spawn_local(echo::session(w, index)),
            Mode::Idle => set.spawn_local(idle::session(w, index)),
            Mode::Churn => set.spawn_local(churn::slot(w, index)),
        };
        while let Some(done) = set.try_join_next() {
            rethrow(done);
        }
    }
    loop {
        match timeout_at(plan.hard_deadline, set.join_next()).await {
            Ok(Some(done)) => rethrow(done),
            Ok(None) => break,
            Err(_) => {
                let left = set.len() as u64;
                w.error(ErrorKind::Timeout, left, || {
                    format!(
                        "{left} connection(s) still busy at the run's hard deadline were cut off"
                    )
                });
                set.abort_all();
                while set.join_next().await.is_some() {}
                break;
            }
        }
    }
    pacing.abort();
    let stats = w.stats.borrow().clone();
    stats
}

/// A [`Pacer`] for an open-loop echo run. Without one (no descriptor left,
/// say), sends fall back to tokio's millisecond timer, which the run says
/// on stderr since its latencies then include up to a millisecond of the
/// sender's own lateness.
fn open_loop_pacer(opts: &Options) -> Option<Pacer> {
    if opts.mode != Mode::Echo || opts.rate.is_none() {
        return None;
    }
    match Pacer::new() {
        Ok(pacer) => Some(pacer),
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "wsgate bench: no precise timer for the open loop ({e}); send times \
                 fall back to a millisecond timer"
            );
            None
        }
    }
}

/// Re-raises a connection task's panic (a bug) on the worker thread.
fn rethrow(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// What the coordinator hands back.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// All threads' counts, merged.
    pub stats: Stats,
    /// CPU time over the measured window (the whole run in idle mode).
    pub cpu: Option<Duration>,
}

fn runtime() -> Result<tokio::runtime::Runtime, BenchError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(BenchError::Runtime)
}

/// Runs the benchmark on `threads` threads and returns the merged counts.
pub(crate) fn execute(plan: Plan) -> Result<Outcome, BenchError> {
    let threads = plan.threads;
    let plan = Arc::new(plan);
    let (tx, rx) = mpsc::unbounded_channel::<Stats>();
    let mut handles = Vec::new();
    for thread in 1..threads {
        let plan = plan.clone();
        let tx = tx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("bench-{thread}"))
            .spawn(move || -> Result<(), BenchError> {
                let rt = runtime()?;
                let stats = LocalSet::new().block_on(&rt, worker_main(plan, thread));
                let _ = tx.send(stats);
                Ok(())
            })
            .map_err(BenchError::Runtime)?;
        handles.push(handle);
    }
    let rt = runtime()?;
    let local = LocalSet::new();
    let coordinator_plan = plan.clone();
    let outcome = local.block_on(&rt, async move {
        tokio::task::spawn_local(async move {
            let stats = worker_main(plan, 0).await;
            let _ = tx.send(stats);
        });
        coordinate(&coordinator_plan, rx).await
    });
    for handle in handles {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(BenchError::WorkerPanicked),
        }
    }
    if outcome.1 < threads {
        return Err(BenchError::WorkerPanicked);
    }
    Ok(outcome.0)
}

/// Prints progress once a second, samples CPU time at the start and end of
/// the measured window, and collects every thread's stats.
async fn coordinate(plan: &Plan, mut rx: mpsc::UnboundedReceiver<Stats>) -> (Outcome, usize) {
    let idle = plan.opts.mode == Mode::Idle;
    let (cpu_from, cpu_to) = if idle {
        (plan.start, None)
    } else {
        (plan.measure_start, Some(plan.end))
    };
    let mut cpu_start = None;
    let mut cpu_end = None;
    let mut merged = Stats::new();
    let mut received = 0;
    let mut ticker =
        tokio::time::interval_at(plan.start + Duration::from_secs(1), Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last = ProgressSum::default();
    let mut last_at = plan.start;
    loop {
        tokio::select! {
            stats = rx.recv() => match stats {
                Some(stats) => {
                    merged.merge(&stats);
                    received += 1;
                }
                None => break,
            },
            _ = ticker.tick(), if plan.opts.progress => {
                let now = Instant::now();
                let sum = ProgressSum::read(&plan.progress);
                print_progress(plan, now, now - last_at, &last, &sum);
                last = sum;
                last_at = now;
            }
            _ = sleep_until(cpu_from), if cpu_start.is_none() => {
                cpu_start = Some(process_cpu());
            }
            _ = sleep_until(cpu_to.unwrap_or(plan.end)), if cpu_to.is_some() && cpu_end.is_none() => {
                cpu_end = Some(process_cpu());
            }
        }
    }
    let cpu_end = cpu_end.unwrap_or_else(process_cpu);
    let cpu = match (cpu_start.flatten(), cpu_end) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    (Outcome { stats: merged, cpu }, received)
}

/// One progress line on stderr.
fn print_progress(
    plan: &Plan,
    now: Instant,
    elapsed: Duration,
    last: &ProgressSum,
    sum: &ProgressSum,
) {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let done = (sum.done - last.done) as f64 / secs;
    let mb = (sum.bytes - last.bytes) as f64 / secs / 1e6;
    let open = sum.opened.saturating_sub(sum.closed);
    let t = now.saturating_duration_since(plan.start).as_secs_f64();
    // The line covers the last second: name the phase of its middle.
    let middle = now - elapsed / 2;
    let phase = if plan.opts.mode != Mode::Idle && middle < plan.measure_start {
        "  (warm-up)"
    } else if plan.opts.mode != Mode::Idle && middle >= plan.end {
        "  (finishing)"
    } else {
        ""
    };
    let line = match plan.opts.mode {
        Mode::Echo => format!(
            "{t:6.1}s  msgs/s {done:>9.0}  MB/s {mb:>8.1}  errors {}  open {open}{phase}",
            sum.errors
        ),
        Mode::Churn => format!(
            "{t:6.1}s  sessions/s {done:>8.0}  errors {}  open {open}{phase}",
            sum.errors
        ),
        Mode::Idle => format!(
            "{t:6.1}s  open {open}/{}  opened {}  errors {}",
            plan.opts.connections, sum.opened, sum.errors
        ),
    };
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
