//! Send times to the microsecond for the open loop.
//!
//! tokio's timer counts in whole milliseconds and rounds every deadline up
//! to the next tick. An open-loop connection that sleeps on it sends up to
//! a millisecond (and on a busy thread, more) after the intended time, and
//! since latency is measured from the intended time, that lateness is
//! measured too: a direct connection on loopback showed a p99 of 2.3 ms at
//! 10 000 msgs/s, almost all of it the sender's own timer, which hid the
//! tenths of a millisecond in which proxies differ. Worse, every connection
//! due within the same millisecond woke at once, so the "evenly spread"
//! sends left in bursts.
//!
//! A [`Pacer`] is one `timerfd` per worker thread, armed for the earliest
//! deadline of any connection of that thread and watched by the thread's
//! own event loop; [`Pacer::drive`] wakes every connection whose deadline
//! has passed and arms the timer again. A connection waits on it through a
//! [`PacedSleep`], which has the shape of tokio's `Sleep` (`deadline`,
//! `reset`, `poll`) and leaves the queue when dropped. Arming costs one
//! system call, made only when a connection asks for a deadline earlier
//! than the one the timer is set to; one expiry wakes all the
//! connections that are due.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;
use tokio::time::{Instant, Sleep};

/// A waiting connection's place in the queue: its deadline, then a number
/// that tells apart connections with the same deadline.
type Key = (Instant, u64);

/// One worker thread's precise timer (see the module documentation).
#[derive(Debug)]
pub(crate) struct Pacer {
    /// The kernel timer, registered with the thread's event loop.
    timer: AsyncFd<Timer>,
    /// Who waits for what.
    queue: RefCell<Queue>,
}

/// The waiting connections and the timer's setting.
#[derive(Debug, Default)]
struct Queue {
    /// Wakers by deadline, earliest first.
    waiting: BTreeMap<Key, Waker>,
    /// The number the next entry gets.
    next_id: u64,
    /// The deadline the timer is armed for, if it is armed.
    armed: Option<Instant>,
}

/// `TimerFd` with the raw descriptor `AsyncFd` asks for.
#[derive(Debug)]
struct Timer(TimerFd);

impl AsRawFd for Timer {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl Pacer {
    /// A pacer on the current thread's runtime (one descriptor).
    pub fn new() -> io::Result<Pacer> {
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        // `AsyncFd::new` is deprecated because it cannot check that the
        // descriptor stays open and the same while registered (the contract
        // of the unsafe `AsyncFd::register`, which this crate forbids).
        // `Timer` owns its descriptor for its whole life and always names
        // that one, so the contract holds here.
        #[allow(deprecated)]
        let timer = AsyncFd::new(Timer(fd))?;
        Ok(Pacer {
            timer,
            queue: RefCell::new(Queue::default()),
        })
    }

    /// Wakes the connections whose deadlines have passed, each time the
    /// timer expires. Runs until its runtime stops polling it; returns only
    /// if the timer cannot be read.
    pub async fn drive(&self) -> io::Result<()> {
        loop {
            let mut ready = self.timer.readable().await?;
            match ready.try_io(|timer| timer.get_ref().0.wait().map_err(io::Error::from)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                // Woken without an expiry to read: wait again.
                Err(_would_block) => continue,
            }
            self.fire();
        }
    }

    /// Wakes everything due and arms the timer for what is left.
    fn fire(&self) {
        let mut queue = self.queue.borrow_mut();
        queue.armed = None;
        let now = Instant::now();
        while let Some(entry) = queue.waiting.first_entry() {
            if entry.key().0 > now {
                let next = entry.key().0;
                self.arm(&mut queue, next);
                break;
            }
            // Waking only schedules the connection's task: nothing runs
            // while the queue is borrowed.
            entry.remove().wake();
        }
    }

    /// Sets the timer to expire at `deadline`.
    fn arm(&self, queue: &mut Queue, deadline: Instant) {
        // A zero expiry would disarm the timer: a passed deadline expires
        // in a nanosecond instead.
        let after = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_nanos(1));
        let expiration = Expiration::OneShot(TimeSpec::from_duration(after));
        // timerfd_settime fails only for a malformed time or descriptor,
        // neither of which can happen here. Should it fail all the same,
        // the timer stays unarmed and the next deadline asked for tries
        // again.
        if self
            .timer
            .get_ref()
            .0
            .set(expiration, TimerSetTimeFlags::empty())
            .is_ok()
        {
            queue.armed = Some(deadline);
        }
    }

    /// Puts (or keeps) `entry` in the queue for `deadline`, to wake `waker`.
    fn wait(&self, entry: &mut Option<Key>, deadline: Instant, waker: &Waker) {
        let mut queue = self.queue.borrow_mut();
        if let Some(key) = *entry {
            if key.0 == deadline {
                if let Some(registered) = queue.waiting.get_mut(&key) {
                    if !registered.will_wake(waker) {
                        registered.clone_from(waker);
                    }
                    return;
                }
            } else {
                queue.waiting.remove(&key);
            }
        }
        let key = (deadline, queue.next_id);
        queue.next_id += 1;
        queue.waiting.insert(key, waker.clone());
        *entry = Some(key);
        if queue.armed.map_or(true, |armed| deadline < armed) {
            self.arm(&mut queue, deadline);
        }
    }

    /// Takes `entry` out of the queue, if it is there.
    fn cancel(&self, entry: &mut Option<Key>) {
        if let Some(key) = entry.take() {
            self.queue.borrow_mut().waiting.remove(&key);
        }
    }
}

/// A sleep until a deadline, kept by a [`Pacer`].
#[derive(Debug)]
pub(crate) struct PacedSleep<'a> {
    /// The pacer that wakes it.
    pacer: &'a Pacer,
    /// When it is over.
    deadline: Instant,
    /// Its entry in the pacer's queue, while it has one.
    entry: Option<Key>,
}

impl<'a> PacedSleep<'a> {
    /// A sleep until `deadline`.
    pub fn new(pacer: &'a Pacer, deadline: Instant) -> PacedSleep<'a> {
        PacedSleep {
            pacer,
            deadline,
            entry: None,
        }
    }

    /// When the sleep is over.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Sleeps until `deadline` instead.
    pub fn reset(&mut self, deadline: Instant) {
        if deadline != self.deadline {
            self.pacer.cancel(&mut self.entry);
            self.deadline = deadline;
        }
    }

    /// `Ready` once the deadline has passed; otherwise the task is woken
    /// when it passes. Like tokio's own timer it takes part in the task's
    /// cooperative budget, so a loop that finds its deadline passed again
    /// and again still hands the thread back to the other tasks (the
    /// run's hard deadline among them) now and then.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let budget = ready!(tokio::task::coop::poll_proceed(cx));
        if Instant::now() >= self.deadline {
            self.pacer.cancel(&mut self.entry);
            budget.made_progress();
            return Poll::Ready(());
        }
        self.pacer.wait(&mut self.entry, self.deadline, cx.waker());
        Poll::Pending
    }
}

impl Drop for PacedSleep<'_> {
    fn drop(&mut self) {
        self.pacer.cancel(&mut self.entry);
    }
}

/// The timer of one connection's loop: the pacer's where sends follow a
/// schedule, tokio's where only the end of the run is waited for.
#[derive(Debug)]
pub(crate) enum Alarm<'a> {
    /// Kept by the worker's [`Pacer`], to the microsecond.
    Paced(PacedSleep<'a>),
    /// tokio's sleep, to the millisecond.
    Coarse(Pin<Box<Sleep>>),
}

impl<'a> Alarm<'a> {
    /// An alarm at `deadline`, on `pacer` if there is one.
    pub fn new(pacer: Option<&'a Pacer>, deadline: Instant) -> Alarm<'a> {
        match pacer {
            Some(pacer) => Alarm::Paced(PacedSleep::new(pacer, deadline)),
            None => Alarm::Coarse(Box::pin(tokio::time::sleep_until(deadline))),
        }
    }

    /// When it goes off.
    pub fn deadline(&self) -> Instant {
        match self {
            Alarm::Paced(sleep) => sleep.deadline(),
            Alarm::Coarse(sleep) => sleep.deadline(),
        }
    }

    /// Goes off at `deadline` instead.
    pub fn reset(&mut self, deadline: Instant) {
        match self {
            Alarm::Paced(sleep) => sleep.reset(deadline),
            Alarm::Coarse(sleep) => sleep.as_mut().reset(deadline),
        }
    }

    /// `Ready` once it has gone off.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self {
            Alarm::Paced(sleep) => sleep.poll(cx),
            Alarm::Coarse(sleep) => sleep.as_mut().poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::rc::Rc;

    /// Runs `body` with a pacer driven beside it on a current-thread
    /// runtime, as a bench worker does.
    fn with_pacer<F, Fut>(body: F)
    where
        F: FnOnce(Rc<Pacer>) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async move {
            let pacer = Rc::new(Pacer::new().unwrap());
            let driver = pacer.clone();
            let drive = tokio::task::spawn_local(async move { driver.drive().await });
            body(pacer).await;
            drive.abort();
        });
    }

    #[test]
    fn sleepers_wake_in_deadline_order_and_never_early() {
        with_pacer(|pacer| async move {
            let start = Instant::now();
            // Deadlines given out of order, two of them equal, all well
            // under tokio's millisecond tick apart.
            let offsets_us = [900u64, 300, 600, 300, 1200, 150];
            let woke = Rc::new(RefCell::new(Vec::new()));
            let mut tasks = Vec::new();
            for (i, us) in offsets_us.into_iter().enumerate() {
                let pacer = pacer.clone();
                let woke = woke.clone();
                tasks.push(tokio::task::spawn_local(async move {
                    let deadline = start + Duration::from_micros(us);
                    let mut sleep = PacedSleep::new(&pacer, deadline);
                    poll_fn(|cx| sleep.poll(cx)).await;
                    let now = Instant::now();
                    assert!(now >= deadline, "sleeper {i} woke early");
                    woke.borrow_mut().push((us, i));
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
            let order: Vec<u64> = woke.borrow().iter().map(|&(us, _)| us).collect();
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(order, sorted);
            assert!(pacer.queue.borrow().waiting.is_empty());
        });
    }

    #[test]
    fn the_timer_is_armed_to_the_microsecond() {
        // tokio would round a deadline 250 µs away up to its next
        // millisecond tick; the pacer's timer is set for the deadline
        // itself. (How much sooner sends leave is a benchmark's figure,
        // not a test's: see the README.)
        with_pacer(|pacer| async move {
            let waker = futures_util::task::noop_waker();
            let mut cx = Context::from_waker(&waker);
            let asked = Instant::now();
            let mut sleep = PacedSleep::new(&pacer, asked + Duration::from_micros(250));
            assert!(sleep.poll(&mut cx).is_pending());
            let Some(Expiration::OneShot(left)) = pacer.timer.get_ref().0.get().unwrap() else {
                panic!("the timer is not armed for one expiry");
            };
            let left = Duration::from(left);
            assert!(left > Duration::ZERO);
            assert!(left <= Duration::from_micros(250), "armed for {left:?}");
            // A later deadline leaves the timer as it is; an earlier one
            // re-arms it.
            let mut later = PacedSleep::new(&pacer, asked + Duration::from_secs(1));
            assert!(later.poll(&mut cx).is_pending());
            assert_eq!(
                pacer.queue.borrow().armed,
                Some(asked + Duration::from_micros(250))
            );
            let mut earlier = PacedSleep::new(&pacer, asked + Duration::from_micros(100));
            assert!(earlier.poll(&mut cx).is_pending());
            assert_eq!(
                pacer.queue.borrow().armed,
                Some(asked + Duration::from_micros(100))
            );
        });
    }

    #[test]
    fn reset_and_drop_leave_the_queue() {
        with_pacer(|pacer| async move {
            let far = Instant::now() + Duration::from_secs(3600);
            let mut sleep = PacedSleep::new(&pacer, far);
            let waker = futures_util::task::noop_waker();
            let mut cx = Context::from_waker(&waker);
            assert!(sleep.poll(&mut cx).is_pending());
            assert!(sleep.poll(&mut cx).is_pending());
            assert_eq!(pacer.queue.borrow().waiting.len(), 1);
            // An earlier deadline takes the place of the later one.
            sleep.reset(Instant::now() + Duration::from_millis(1));
            assert!(pacer.queue.borrow().waiting.is_empty());
            poll_fn(|cx| sleep.poll(cx)).await;
            let mut other = PacedSleep::new(&pacer, far);
            assert!(other.poll(&mut cx).is_pending());
            drop(other);
            assert!(pacer.queue.borrow().waiting.is_empty());
        });
    }
}
