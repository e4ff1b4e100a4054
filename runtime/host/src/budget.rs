//! The node's guest memory: what all its instances' linear memories hold at
//! once, counted as they grow and given back when their stores go.
//!
//! A memory cap per store bounds one guest; this bounds them all, so many
//! guests each within its cap cannot together take the machine's memory.
//! Counting what the memories really hold, rather than reserving every
//! instance's cap up front, keeps nested tasks from deadlocking: a parent
//! blocked in `get` keeps only the memory it uses, not its whole cap.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// Bytes of linear memory the node's guests may hold together.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    used: AtomicU64,
    freed: Notify,
}

impl MemoryBudget {
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            used: AtomicU64::new(0),
            freed: Notify::new(),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes held now by every live instance.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Takes `bytes` if they fit under the limit.
    pub(crate) fn try_take(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    pub(crate) fn give(&self, bytes: u64) {
        if bytes > 0 {
            self.used.fetch_sub(bytes, Ordering::AcqRel);
            self.freed.notify_waiters();
        }
    }

    /// Waits until less than `limit - headroom` is in use (at once when it
    /// already is).
    pub async fn wait_for_room(&self, headroom: u64) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before the check, so a release in between wakes it.
            freed.as_mut().enable();
            if self.used().saturating_add(headroom) < self.limit {
                return;
            }
            freed.await;
        }
    }
}

/// One store's share of the budget: what its memories took, given back on
/// drop.
#[derive(Debug, Default)]
pub(crate) struct Share {
    budget: Option<std::sync::Arc<MemoryBudget>>,
    held: u64,
    /// Taken for a growth wasmtime has not confirmed yet.
    pending: u64,
}

impl Share {
    pub(crate) fn new(budget: Option<std::sync::Arc<MemoryBudget>>) -> Self {
        Self {
            budget,
            held: 0,
            pending: 0,
        }
    }

    /// Whether a memory may grow from `current` to `desired` bytes.
    pub(crate) fn grow(&mut self, current: usize, desired: usize) -> bool {
        self.settle();
        let Some(budget) = &self.budget else {
            return true;
        };
        let more = desired.saturating_sub(current) as u64;
        if !budget.try_take(more) {
            return false;
        }
        self.pending = more;
        true
    }

    /// wasmtime could not grow the memory after all: give back what the
    /// growth took.
    pub(crate) fn failed(&mut self) {
        if let Some(budget) = &self.budget {
            budget.give(std::mem::take(&mut self.pending));
        }
    }

    fn settle(&mut self) {
        self.held += std::mem::take(&mut self.pending);
    }

    pub(crate) fn budget(&self) -> Option<std::sync::Arc<MemoryBudget>> {
        self.budget.clone()
    }

    pub(crate) fn limit(&self) -> Option<u64> {
        self.budget.as_ref().map(|b| b.limit())
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.settle();
        if let Some(budget) = &self.budget {
            budget.give(self.held);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn shares_take_and_give_back() {
        let budget = Arc::new(MemoryBudget::new(10 << 20));
        let mut a = Share::new(Some(budget.clone()));
        assert!(a.grow(0, 6 << 20));
        let mut b = Share::new(Some(budget.clone()));
        assert!(!b.grow(0, 6 << 20), "two 6 MiB memories do not fit in 10");
        assert!(b.grow(0, 4 << 20));
        assert_eq!(budget.used(), 10 << 20);
        // A growth wasmtime then refused is given back.
        assert!(!a.grow(6 << 20, 7 << 20));
        drop(b);
        assert_eq!(budget.used(), 6 << 20);
        assert!(a.grow(6 << 20, 8 << 20));
        a.failed();
        assert_eq!(budget.used(), 6 << 20);
        drop(a);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn waiting_for_room_ends_when_memory_is_freed() {
        let budget = Arc::new(MemoryBudget::new(8 << 20));
        let mut a = Share::new(Some(budget.clone()));
        assert!(a.grow(0, 8 << 20));
        let waiter = tokio::spawn({
            let budget = budget.clone();
            async move { budget.wait_for_room(1 << 20).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(a);
        waiter.await.expect("the waiter ends");
    }
}
