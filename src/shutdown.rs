//! One stop signal, fanned out to every task, plus a drain barrier.
//!
//! The accept loops, the HTTP connections that have not upgraded yet, and
//! every relay session hold a [`Shutdown`] clone. Triggering it makes accept
//! loops stop, pending HTTP connections finish gracefully, and relay sessions
//! send close 1001 to both peers. The [`TaskTracker`] is the barrier the server
//! waits on before it exits (with a deadline of its own).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

/// A cloneable handle to the process-wide stop signal and the set of tasks
/// that must finish before the process exits.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Cancelled once, when the proxy starts to shut down.
    token: CancellationToken,
    /// Set just before `token` is cancelled: what [`Signal`] checks on its
    /// hot path, an atomic load instead of the token's lock.
    triggered: Arc<AtomicBool>,
    /// Every connection and session task, so that the server can wait for them.
    tasks: TaskTracker,
}

impl Shutdown {
    /// A fresh, untriggered signal with an empty task set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the shutdown: every holder's [`Shutdown::signalled`] resolves.
    pub fn trigger(&self) {
        self.triggered.store(true, Ordering::Release);
        self.token.cancel();
    }

    /// Whether [`Shutdown::trigger`] has been called.
    pub fn is_triggered(&self) -> bool {
        self.triggered.load(Ordering::Acquire)
    }

    /// Resolves once the shutdown has been triggered (immediately if it was).
    pub async fn signalled(&self) {
        self.token.cancelled().await
    }

    /// An owned future that resolves once the shutdown is triggered, cheap
    /// to poll again and again (see [`Signal`]).
    pub fn signal(&self) -> Signal {
        Signal {
            triggered: Arc::clone(&self.triggered),
            registered: None,
            wait: self.token.clone().cancelled_owned(),
        }
    }

    /// Spawns a task that the drain barrier waits for.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(task)
    }

    /// Number of tracked tasks still running.
    pub fn active_tasks(&self) -> usize {
        self.tasks.len()
    }

    /// Waits until every tracked task has finished. Call after
    /// [`Shutdown::trigger`]; new tasks can no longer be tracked afterwards.
    pub async fn drained(&self) {
        self.tasks.close();
        self.tasks.wait().await
    }
}

pin_project_lite::pin_project! {
    /// Resolves once the shutdown is triggered; made for a future that is
    /// polled on every wake-up of a busy task.
    ///
    /// A relay session polls its shutdown signal each time traffic wakes it,
    /// that is for nearly every message. The token's own future takes two
    /// locks per poll (its cancellation state and its waiter list). This one
    /// registers the task's waker with the token once and afterwards, as long
    /// as the waker stays the same, answers from one atomic load. The flag is
    /// set before the token wakes its waiters, so the wake-up after a trigger
    /// always sees it.
    #[derive(Debug)]
    #[must_use = "futures do nothing unless polled"]
    pub struct Signal {
        triggered: Arc<AtomicBool>,
        // The waker that the token will wake, once registered.
        registered: Option<Waker>,
        #[pin]
        wait: WaitForCancellationFutureOwned,
    }
}

impl Future for Signal {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.triggered.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if let Some(waker) = this.registered.as_ref() {
            if waker.will_wake(cx.waker()) {
                return Poll::Pending;
            }
        }
        if this.wait.poll(cx).is_ready() {
            return Poll::Ready(());
        }
        *this.registered = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    /// A waker that counts its wake-ups.
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Counter>, Waker) {
        let c = Arc::new(Counter(AtomicUsize::new(0)));
        (Arc::clone(&c), Waker::from(c))
    }

    fn poll(signal: &mut Pin<Box<Signal>>, waker: &Waker) -> Poll<()> {
        signal.as_mut().poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn a_signal_taken_after_the_trigger_is_ready_at_once() {
        let shutdown = Shutdown::new();
        shutdown.trigger();
        let (_, waker) = counter();
        assert!(poll(&mut Box::pin(shutdown.signal()), &waker).is_ready());
        assert!(shutdown.is_triggered());
    }

    #[test]
    fn a_waiting_signal_is_woken_and_then_ready() {
        let shutdown = Shutdown::new();
        let mut signal = Box::pin(shutdown.signal());
        let (count, waker) = counter();
        assert!(poll(&mut signal, &waker).is_pending());
        // Polled again with the same waker: still pending, nothing woken.
        assert!(poll(&mut signal, &waker).is_pending());
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        shutdown.trigger();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(poll(&mut signal, &waker).is_ready());
    }

    #[test]
    fn the_latest_waker_is_the_one_woken() {
        let shutdown = Shutdown::new();
        let mut signal = Box::pin(shutdown.signal());
        let (first, first_waker) = counter();
        let (second, second_waker) = counter();
        assert!(poll(&mut signal, &first_waker).is_pending());
        assert!(poll(&mut signal, &second_waker).is_pending());
        shutdown.trigger();
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
        assert!(poll(&mut signal, &second_waker).is_ready());
    }
}
