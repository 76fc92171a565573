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
//!
//! The queue is a binary heap over storage that is kept and reused, so a
//! send costs no allocation once the run is under way (a `BTreeMap` used
//! as a queue allocated a node every seven sends or so). A sleep that
//! moves or ends does not dig its old entry out of the heap: it takes a
//! new ticket, and entries whose ticket is no longer their sleep's are
//! skipped when they come up, or swept out in place when they outnumber
//! the live ones.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
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

/// A heap entry: when, under which ticket, for which sleep (its slot).
type Entry = Reverse<(Instant, u64, usize)>;

/// One worker thread's precise timer (see the module documentation).
#[derive(Debug)]
pub(crate) struct Pacer {
    /// The kernel timer, registered with the thread's event loop.
    timer: AsyncFd<Timer>,
    /// Who waits for what.
    queue: RefCell<Queue>,
}

/// What one sleep waits for, while it waits.
#[derive(Debug)]
struct Waiting {
    /// The ticket its heap entry carries.
    ticket: u64,
    /// Its deadline.
    deadline: Instant,
    /// Whom to wake.
    waker: Waker,
}

/// The waiting sleeps and the timer's setting.
#[derive(Debug, Default)]
struct Queue {
    /// Deadlines, earliest first, including stale entries (see the module
    /// documentation).
    heap: BinaryHeap<Entry>,
    /// Per sleep (by slot): what it waits for, if it waits.
    slots: Vec<Option<Waiting>>,
    /// Slots of dropped sleeps, for the next ones.
    free: Vec<usize>,
    /// The ticket the next entry gets.
    next_ticket: u64,
    /// Heap entries no sleep waits under any more.
    stale: usize,
    /// The deadline the timer is armed for, if it is armed.
    armed: Option<Instant>,
}

impl Queue {
    /// Whether `entry` is the one its sleep waits under.
    fn is_live(&self, Reverse((_, ticket, slot)): &Entry) -> bool {
        matches!(&self.slots[*slot], Some(w) if w.ticket == *ticket)
    }

    /// Forgets what `slot` waits for; its heap entry turns stale.
    fn stop_waiting(&mut self, slot: usize) {
        if self.slots[slot].take().is_some() {
            self.stale += 1;
        }
    }

    /// Sweeps stale entries out once they outnumber the live ones (in
    /// place: the heap keeps its storage).
    fn sweep(&mut self) {
        let live = self.heap.len() - self.stale;
        if self.stale > live.max(64) {
            let slots = &self.slots;
            self.heap.retain(
                |Reverse((_, ticket, slot))| matches!(&slots[*slot], Some(w) if w.ticket == *ticket),
            );
            self.stale = 0;
        }
    }
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
        while let Some(&entry) = queue.heap.peek() {
            let Reverse((deadline, _, slot)) = entry;
            let live = queue.is_live(&entry);
            if live && deadline > now {
                self.arm(&mut queue, deadline);
                break;
            }
            queue.heap.pop();
            if live {
                // Waking only schedules the connection's task: nothing
                // runs while the queue is borrowed.
                if let Some(waiting) = queue.slots[slot].take() {
                    waiting.waker.wake();
                }
            } else {
                queue.stale -= 1;
            }
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

    /// A slot for a new sleep.
    fn register(&self) -> usize {
        let mut queue = self.queue.borrow_mut();
        match queue.free.pop() {
            Some(slot) => slot,
            None => {
                queue.slots.push(None);
                queue.slots.len() - 1
            }
        }
    }

    /// Gives back the slot of a dropped sleep.
    fn release(&self, slot: usize) {
        let mut queue = self.queue.borrow_mut();
        queue.stop_waiting(slot);
        queue.free.push(slot);
    }

    /// Has the sleep in `slot` wait for `deadline`, to wake `waker`.
    fn wait(&self, slot: usize, deadline: Instant, waker: &Waker) {
        let mut queue = self.queue.borrow_mut();
        if let Some(waiting) = &mut queue.slots[slot] {
            if waiting.deadline == deadline {
                if !waiting.waker.will_wake(waker) {
                    waiting.waker.clone_from(waker);
                }
                return;
            }
        }
        queue.stop_waiting(slot);
        queue.sweep();
        let ticket = queue.next_ticket;
        queue.next_ticket += 1;
        queue.heap.push(Reverse((deadline, ticket, slot)));
        queue.slots[slot] = Some(Waiting {
            ticket,
            deadline,
            waker: waker.clone(),
        });
        if queue.armed.map_or(true, |armed| deadline < armed) {
            self.arm(&mut queue, deadline);
        }
    }

    /// Stops the sleep in `slot` from waiting.
    fn cancel(&self, slot: usize) {
        self.queue.borrow_mut().stop_waiting(slot);
    }
}

/// A sleep until a deadline, kept by a [`Pacer`].
#[derive(Debug)]
pub(crate) struct PacedSleep<'a> {
    /// The pacer that wakes it.
    pacer: &'a Pacer,
    /// When it is over.
    deadline: Instant,
    /// Its place in the pacer's queue, for as long as it lives.
    slot: usize,
}

impl<'a> PacedSleep<'a> {
    /// A sleep until `deadline`.
    pub fn new(pacer: &'a Pacer, deadline: Instant) -> PacedSleep<'a> {
        PacedSleep {
            pacer,
            deadline,
            slot: pacer.register(),
        }
    }

    /// When the sleep is over.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Sleeps until `deadline` instead.
    pub fn reset(&mut self, deadline: Instant) {
        if deadline != self.deadline {
            self.pacer.cancel(self.slot);
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
            self.pacer.cancel(self.slot);
            budget.made_progress();
            return Poll::Ready(());
        }
        self.pacer.wait(self.slot, self.deadline, cx.waker());
        Poll::Pending
    }
}

impl Drop for PacedSleep<'_> {
    fn drop(&mut self) {
        self.pacer.release(self.slot);
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

    /// How many sleeps wait.
    fn waiting(pacer: &Pacer) -> usize {
        pacer.queue.borrow().slots.iter().flatten().count()
    }

    #[test]
    fn a_sleep_moved_back_and_forth_keeps_the_heap_small_and_its_storage() {
        // The echo loop moves its alarm between the next send and the end
        // of the run on every turn; the entries left behind must not pile
        // up (nor make the heap grow, which would allocate).
        with_pacer(|pacer| async move {
            let waker = futures_util::task::noop_waker();
            let mut cx = Context::from_waker(&waker);
            let now = Instant::now();
            let (near, far) = (
                now + Duration::from_secs(60),
                now + Duration::from_secs(3600),
            );
            let mut sleeps: Vec<PacedSleep<'_>> =
                (0..10).map(|_| PacedSleep::new(&pacer, near)).collect();
            let mut turn = |sleeps: &mut Vec<PacedSleep<'_>>, i: usize| {
                for (k, sleep) in sleeps.iter_mut().enumerate() {
                    let step = Duration::from_micros((i * 10 + k) as u64);
                    sleep.reset(if i % 2 == 0 { near + step } else { far });
                    assert!(sleep.poll(&mut cx).is_pending());
                }
            };
            for i in 0..1_000 {
                turn(&mut sleeps, i);
            }
            let capacity = pacer.queue.borrow().heap.capacity();
            for i in 1_000..20_000 {
                turn(&mut sleeps, i);
            }
            let queue = pacer.queue.borrow();
            assert_eq!(queue.heap.capacity(), capacity, "the heap grew");
            assert!(
                queue.heap.len() <= 2 * 64 + 20,
                "{} entries",
                queue.heap.len()
            );
            drop(queue);
            assert_eq!(waiting(&pacer), 10);
            drop(sleeps);
            assert_eq!(waiting(&pacer), 0);
            assert_eq!(pacer.queue.borrow().free.len(), 10);
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
            assert_eq!(waiting(&pacer), 0);
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
            assert_eq!(waiting(&pacer), 1);
            // An earlier deadline takes the place of the later one.
            sleep.reset(Instant::now() + Duration::from_millis(1));
            assert_eq!(waiting(&pacer), 0);
            poll_fn(|cx| sleep.poll(cx)).await;
            let mut other = PacedSleep::new(&pacer, far);
            assert!(other.poll(&mut cx).is_pending());
            drop(other);
            assert_eq!(waiting(&pacer), 0);
        });
    }
}
