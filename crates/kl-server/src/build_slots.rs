//! The node's build slots, shared fairly: when builds wait, a freed slot goes to the highest
//! priority class, then to the tenant with the smallest weighted share of running builds
//! (dominant-resource fairness over one resource, as [`kl_core::drf_order`] computes it), so
//! one tenant's burst of deploys cannot hold every other tenant's builds back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kl_core::{PriorityClass, Request, Resources, drf_order};
use tokio::sync::oneshot;

/// What one build holds of the slots: one unit of a one-dimensional resource.
const ONE_BUILD: Resources = Resources {
    cpu_millis: 1,
    memory_bytes: 1,
};

struct Waiter {
    request: Request,
    weight: u32,
    wake: oneshot::Sender<()>,
}

#[derive(Default)]
struct State {
    running: HashMap<String, u64>,
    waiting: Vec<Waiter>,
}

/// Build slots with a fair queue.
#[derive(Clone)]
pub(crate) struct BuildSlots {
    slots: u64,
    state: Arc<Mutex<State>>,
}

/// A running build's slot; the next waiter gets it when this is dropped.
pub(crate) struct BuildSlot {
    slots: BuildSlots,
    tenant: String,
}

impl BuildSlots {
    pub(crate) fn new(slots: usize) -> BuildSlots {
        BuildSlots {
            slots: slots.max(1) as u64,
            state: Arc::default(),
        }
    }

    /// Waits for a slot, in fair order among the builds that wait.
    pub(crate) async fn acquire(&self, tenant: &str, class: PriorityClass, weight: u32) -> BuildSlot {
        let wait = {
            let mut state = self.lock();
            let busy: u64 = state.running.values().sum();
            if busy < self.slots && state.waiting.is_empty() {
                *state.running.entry(tenant.to_owned()).or_default() += 1;
                None
            } else {
                let (wake, woken) = oneshot::channel();
                state.waiting.push(Waiter {
                    request: Request {
                        tenant: tenant.to_owned(),
                        class,
                        resources: ONE_BUILD,
                    },
                    weight,
                    wake,
                });
                Some(woken)
            }
        };
        if let Some(woken) = wait {
            // The sender is only dropped after the slot was counted for this tenant.
            let _ = woken.await;
        }
        BuildSlot {
            slots: self.clone(),
            tenant: tenant.to_owned(),
        }
    }

    /// Builds running per tenant.
    #[cfg(test)]
    fn running(&self, tenant: &str) -> u64 {
        self.lock().running.get(tenant).copied().unwrap_or(0)
    }

    fn release(&self, tenant: &str) {
        let mut state = self.lock();
        if let Some(n) = state.running.get_mut(tenant) {
            *n -= 1;
            if *n == 0 {
                state.running.remove(tenant);
            }
        }
        while !state.waiting.is_empty() && state.running.values().sum::<u64>() < self.slots {
            let next = self.next(&state);
            let waiter = state.waiting.remove(next);
            *state.running.entry(waiter.request.tenant.clone()).or_default() += 1;
            if waiter.wake.send(()).is_err() {
                // The deploy was abandoned while it waited: give the slot back.
                let tenant = waiter.request.tenant;
                if let Some(n) = state.running.get_mut(&tenant) {
                    *n -= 1;
                }
            }
        }
    }

    /// The waiter to serve next.
    fn next(&self, state: &State) -> usize {
        let requests: Vec<Request> = state.waiting.iter().map(|w| w.request.clone()).collect();
        let weights: HashMap<String, u32> = state
            .waiting
            .iter()
            .map(|w| (w.request.tenant.clone(), w.weight))
            .collect();
        let usage: HashMap<String, Resources> = state
            .running
            .iter()
            .map(|(tenant, n)| {
                (
                    tenant.clone(),
                    Resources {
                        cpu_millis: *n,
                        memory_bytes: *n,
                    },
                )
            })
            .collect();
        let capacity = Resources {
            cpu_millis: self.slots,
            memory_bytes: self.slots,
        };
        drf_order(&requests, &usage, &weights, capacity)[0]
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("build slots lock")
    }
}

impl Drop for BuildSlot {
    fn drop(&mut self) {
        self.slots.release(&self.tenant);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;

    /// Queues builds in order, each recording its tenant when it gets its slot and holding
    /// the slot until told to finish; returns the order in which they started.
    async fn start_order(slots: usize, builds: &[(&str, PriorityClass, u32)]) -> Vec<String> {
        let queue = BuildSlots::new(slots);
        let (started_tx, mut started) = mpsc::unbounded_channel();
        let mut finish = Vec::new();
        for (index, &(tenant, class, weight)) in builds.iter().enumerate() {
            let (done_tx, done) = oneshot::channel::<()>();
            finish.push(Some(done_tx));
            let (slots_of_task, started_tx, tenant) = (queue.clone(), started_tx.clone(), tenant.to_owned());
            tokio::spawn(async move {
                let _slot = slots_of_task.acquire(&tenant, class, weight).await;
                started_tx.send(index).unwrap();
                let _ = done.await;
            });
            // Queue them in this order.
            tokio::task::yield_now().await;
            wait_queued(&queue, finish.len().saturating_sub(slots)).await;
        }
        let mut order = Vec::new();
        for _ in 0..builds.len() {
            let index = tokio::time::timeout(Duration::from_secs(10), started.recv())
                .await
                .expect("a build starts")
                .unwrap();
            order.push(builds[index].0.to_owned());
            // Finish it: its slot goes to the next waiter.
            finish[index].take();
        }
        order
    }

    async fn wait_queued(queue: &BuildSlots, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while queue.lock().waiting.len() < n {
            assert!(tokio::time::Instant::now() < deadline, "builds did not queue");
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_burst_from_one_tenant_does_not_hold_back_another() {
        use PriorityClass::Medium;
        // Two slots, both taken by a; a queues three more, then b one. First come, first
        // served would start b fifth; fair share starts it as soon as one of a's builds ends.
        let order = start_order(
            2,
            &[
                ("a", Medium, 1),
                ("a", Medium, 1),
                ("a", Medium, 1),
                ("a", Medium, 1),
                ("a", Medium, 1),
                ("b", Medium, 1),
            ],
        )
        .await;
        assert_eq!(order.iter().position(|t| t == "b"), Some(2), "{order:?}");
    }

    #[tokio::test]
    async fn higher_classes_are_served_first() {
        use PriorityClass::{High, Low};
        let order = start_order(1, &[("a", Low, 1), ("a", Low, 1), ("a", Low, 1), ("b", High, 1)]).await;
        assert_eq!(order[1], "b", "{order:?}");
    }

    #[tokio::test]
    async fn slots_are_never_oversubscribed_and_return_on_drop() {
        let queue = BuildSlots::new(2);
        let a = queue.acquire("a", PriorityClass::Medium, 1).await;
        let _b = queue.acquire("b", PriorityClass::Medium, 1).await;
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.acquire("c", PriorityClass::Medium, 1).await }
        });
        wait_queued(&queue, 1).await;
        assert_eq!(queue.running("c"), 0, "a third build waits");
        drop(a);
        let _c = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the freed slot goes to the waiter")
            .unwrap();
        assert_eq!(queue.running("a") + queue.running("b") + queue.running("c"), 2);
    }
}
