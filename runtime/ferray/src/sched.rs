//! Resource admission on one node: a task runs only once what it asks for
//! (CPUs, GPUs, memory, custom resources) is free. Waiters are served in
//! order, skipping those that do not fit yet, so a large demand does not
//! block small ones. The scheduler never runs guest code.

use std::collections::VecDeque;
use std::sync::Arc;

use ferray_core::{Error, ResourceSet, Resources};
use parking_lot::Mutex;
use tokio::sync::oneshot;

struct Waiter {
    demand: Resources,
    grant: oneshot::Sender<()>,
}

struct State {
    set: ResourceSet,
    queue: VecDeque<Waiter>,
}

/// A waiter's side of a grant. Dropped before the grant was taken (the
/// waiting task was cancelled), it refuses any later grant and gives back
/// one that came in between, so no resources are lost with it.
struct Waiting<'a> {
    admission: &'a Admission,
    demand: &'a Resources,
    rx: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if rx.try_recv().is_ok() {
                self.admission.release(self.demand);
            }
        }
    }
}

/// The node's resources and the tasks waiting for them.
pub(crate) struct Admission {
    state: Mutex<State>,
}

/// Resources held by a running task; given back on drop.
pub(crate) struct Lease {
    admission: Arc<Admission>,
    demand: Resources,
    /// CPUs given back while the task is blocked in `get` or `wait`.
    cpus_released: Mutex<bool>,
}

impl Admission {
    pub(crate) fn new(total: Resources) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                set: ResourceSet::new(total),
                queue: VecDeque::new(),
            }),
        })
    }

    pub(crate) fn total(&self) -> Resources {
        self.state.lock().set.total().clone()
    }

    pub(crate) fn free(&self) -> Resources {
        self.state.lock().set.free().clone()
    }

    /// Fail at once for a demand no amount of waiting can satisfy.
    pub(crate) fn check_feasible(&self, demand: &Resources) -> Result<(), Error> {
        let state = self.state.lock();
        match state.set.total().shortfall(demand) {
            None => Ok(()),
            Some(what) => Err(Error::Infeasible(format!(
                "the task asks for {what}; no node can ever run it"
            ))),
        }
    }

    /// Wait until `demand` is free and take it. `front` puts the waiter
    /// ahead of the others (a blocked task taking its CPU back).
    async fn acquire(self: &Arc<Self>, demand: &Resources, front: bool) {
        let rx = {
            let mut state = self.state.lock();
            if (state.queue.is_empty() || front) && state.set.try_acquire(demand) {
                return;
            }
            let (tx, rx) = oneshot::channel();
            let w = Waiter {
                demand: demand.clone(),
                grant: tx,
            };
            if front {
                state.queue.push_front(w);
            } else {
                state.queue.push_back(w);
            }
            rx
        };
        let mut waiting = Waiting {
            admission: self,
            demand,
            rx: Some(rx),
        };
        let granted = match waiting.rx.as_mut() {
            Some(rx) => rx.await.is_ok(),
            None => false,
        };
        if !granted {
            // The admission was dropped: the runtime is shutting down.
            std::future::pending::<()>().await;
        }
        // Granted: the resources are the caller's now.
        waiting.rx = None;
    }

    pub(crate) async fn lease(self: &Arc<Self>, demand: Resources) -> Lease {
        self.acquire(&demand, false).await;
        Lease {
            admission: self.clone(),
            demand,
            cpus_released: Mutex::new(false),
        }
    }

    fn release(&self, demand: &Resources) {
        let mut state = self.state.lock();
        state.set.release(demand);
        // Grant waiters in order; skip those that do not fit (bounded scan).
        let mut i = 0;
        let mut scanned = 0;
        while i < state.queue.len() && scanned < 1024 {
            scanned += 1;
            let fits = state.set.free().covers(&state.queue[i].demand);
            if fits {
                let Some(w) = state.queue.remove(i) else {
                    break;
                };
                if w.grant.is_closed() {
                    continue;
                }
                let ok = state.set.try_acquire(&w.demand);
                debug_assert!(ok);
                if w.grant.send(()).is_err() {
                    // The waiter went away (cancelled): give it back.
                    state.set.release(&w.demand);
                }
            } else {
                i += 1;
            }
        }
    }
}

impl Lease {
    fn cpu_part(&self) -> Resources {
        self.demand.cpus_only()
    }

    /// Give the CPUs back while blocked (Ray does the same for `ray.get`).
    pub(crate) fn release_cpus(&self) {
        let mut released = self.cpus_released.lock();
        if !*released && self.demand.num_cpus() > 0.0 {
            *released = true;
            self.admission.release(&self.cpu_part());
        }
    }

    /// Take the CPUs back after a blocking call.
    pub(crate) async fn reacquire_cpus(&self) {
        if !*self.cpus_released.lock() {
            return;
        }
        self.admission.acquire(&self.cpu_part(), true).await;
        *self.cpus_released.lock() = false;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if *self.cpus_released.get_mut() {
            self.admission.release(&self.demand.without_cpus());
        } else {
            self.admission.release(&self.demand);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_are_granted_when_resources_come_back() {
        let adm = Admission::new(Resources::cpus(2.0));
        let a = adm.lease(Resources::cpus(1.0)).await;
        let b = adm.lease(Resources::cpus(1.0)).await;
        let adm2 = adm.clone();
        let waiter = tokio::spawn(async move { adm2.lease(Resources::cpus(2.0)).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(b);
        let c = waiter.await.unwrap();
        assert_eq!(adm.free().num_cpus(), 0.0);
        drop(c);
        assert_eq!(adm.free().num_cpus(), 2.0);
    }

    #[tokio::test]
    async fn blocked_task_gives_its_cpu_back() {
        let adm = Admission::new(Resources::cpus(1.0));
        let parent = adm.lease(Resources::cpus(1.0)).await;
        parent.release_cpus();
        let child = adm.lease(Resources::cpus(1.0)).await;
        drop(child);
        parent.reacquire_cpus().await;
        assert_eq!(adm.free().num_cpus(), 0.0);
        drop(parent);
        assert_eq!(adm.free().num_cpus(), 1.0);
    }

    /// A waiter cancelled right after it was granted (before it ran again)
    /// gives the grant back: cancelling tasks never loses a CPU.
    #[tokio::test]
    async fn a_cancelled_waiter_loses_no_resources() {
        let adm = Admission::new(Resources::cpus(2.0));
        let a = adm.lease(Resources::cpus(1.0)).await;
        let b = adm.lease(Resources::cpus(1.0)).await;
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let adm = adm.clone();
                tokio::spawn(async move { adm.lease(Resources::cpus(1.0)).await })
            })
            .collect();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        // Both running tasks end: the first two waiters are granted, and
        // every waiter is cancelled before it can run again.
        drop(a);
        drop(b);
        for w in &waiters {
            w.abort();
        }
        for w in waiters {
            if let Ok(lease) = w.await {
                drop(lease);
            }
        }
        assert_eq!(adm.free().num_cpus(), 2.0);
        // And a waiter cancelled before any grant leaves nothing behind.
        let held = adm.lease(Resources::cpus(2.0)).await;
        let adm2 = adm.clone();
        let w = tokio::spawn(async move { adm2.lease(Resources::cpus(1.0)).await });
        tokio::task::yield_now().await;
        w.abort();
        let _ = w.await;
        drop(held);
        assert_eq!(adm.free().num_cpus(), 2.0);
    }

    #[test]
    fn infeasible_demand_is_reported() {
        let adm = Admission::new(Resources::cpus(2.0));
        let err = adm.check_feasible(&Resources::cpus(3.0)).unwrap_err();
        assert!(matches!(err, Error::Infeasible(_)));
    }
}
