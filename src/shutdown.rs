//! One stop signal, fanned out to every task, plus a drain barrier.
//!
//! The accept loops, the HTTP connections that have not upgraded yet, and
//! every relay session hold a [`Shutdown`] clone. Triggering it makes accept
//! loops stop, pending HTTP connections finish gracefully, and relay sessions
//! send close 1001 to both peers. The [`TaskTracker`] is the barrier the server
//! waits on before it exits (with a deadline of its own).

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A cloneable handle to the process-wide stop signal and the set of tasks
/// that must finish before the process exits.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Cancelled once, when the proxy starts to shut down.
    token: CancellationToken,
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
        self.token.cancel();
    }

    /// Whether [`Shutdown::trigger`] has been called.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once the shutdown has been triggered (immediately if it was).
    pub async fn signalled(&self) {
        self.token.cancelled().await
    }

    /// The token itself, for code that polls it by hand.
    pub fn token(&self) -> &CancellationToken {
        &self.token
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
