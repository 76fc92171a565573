//! Balancing algorithms, one type each behind the [`Selection`] trait.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Chooses which server (by index) a new session tries first.
pub trait Selection: Send + Sync + std::fmt::Debug {
    /// An index in `0..servers`; `servers` is at least 1.
    fn pick(&self, servers: usize) -> usize;
}

/// Each new session starts at the next server in turn.
#[derive(Debug, Default)]
pub struct RoundRobin {
    /// The turn counter, shared by all sessions of the pool.
    next: AtomicUsize,
}

impl Selection for RoundRobin {
    fn pick(&self, servers: usize) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % servers.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_cycles() {
        let rr = RoundRobin::default();
        let picks: Vec<usize> = (0..7).map(|_| rr.pick(3)).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2, 0]);
    }
}
