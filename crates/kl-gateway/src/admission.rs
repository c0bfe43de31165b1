//! Admission of instance starts. Tenant quotas (instances, CPU, memory) and the node's
//! capacity are checked under one lock, so concurrent scale-ups can never overshoot either.
//! When the node is full, a start of a higher priority class preempts instances of lower
//! classes (the victims chosen by [`kl_core::plan_admission`]); a victim's share is returned at
//! once and its instance killed. Starts that can neither fit nor preempt may wait: freed
//! capacity goes to the waiters by class, then by weighted dominant share
//! ([`kl_core::drf_order`]). A reservation's share returns when it is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use kl_core::{
    Admission, BudgetExceeded, NoCapacity, PriorityClass, Quota, QuotaExceeded, Quotas, Request, Resources,
    Running, admit, drf_order, plan_admission, usage_by_tenant,
};
use kl_runtime::Instance;
use thiserror::Error;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// What one tenant's running instances hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub instances: u64,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

/// Why an instance may not start now.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
    #[error(transparent)]
    NoCapacity(#[from] NoCapacity),
    /// The tenant's budget has a hard cap and it is spent.
    #[error(transparent)]
    Budget(#[from] BudgetExceeded),
}

/// A running instance's link to the ledger: its load (for choosing idle victims first) and
/// its eviction.
#[derive(Debug, Default)]
pub(crate) struct Handle {
    in_flight: AtomicU32,
    evicted: AtomicBool,
    instance: OnceLock<Arc<Instance>>,
}

impl Handle {
    /// Records the instance once it runs; kills it at once if it was preempted meanwhile.
    pub(crate) fn attach(&self, instance: Arc<Instance>) {
        let instance = self.instance.get_or_init(|| instance);
        if self.is_evicted() {
            instance.kill();
        }
    }

    pub(crate) fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
    }

    pub(crate) fn busy(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn done(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    fn evict(&self) {
        self.evicted.store(true, Ordering::Release);
        if let Some(instance) = self.instance.get() {
            instance.kill();
        }
    }
}

#[derive(Debug)]
struct Held {
    tenant: String,
    class: PriorityClass,
    resources: Resources,
    seq: u64,
    handle: Arc<Handle>,
}

/// A start waiting for capacity.
#[derive(Debug)]
struct Waiter {
    id: u64,
    request: Request,
    grant: oneshot::Sender<Reservation>,
}

#[derive(Debug, Default)]
struct State {
    quotas: HashMap<String, Quotas>,
    weights: HashMap<String, u32>,
    /// Tenants whose budget's hard cap is reached: no instance of theirs starts.
    capped: HashMap<String, BudgetExceeded>,
    usage: HashMap<String, Usage>,
    held: HashMap<u64, Held>,
    waiting: Vec<Waiter>,
    next_seq: u64,
}

impl State {
    fn release(&mut self, id: u64) -> Option<Held> {
        let held = self.held.remove(&id)?;
        if let Some(u) = self.usage.get_mut(&held.tenant) {
            u.instances -= 1;
            u.cpu_millis -= held.resources.cpu_millis;
            u.memory_bytes -= held.resources.memory_bytes;
        }
        Some(held)
    }
}

/// Quotas and usage of every tenant, and the node's capacity.
#[derive(Debug, Default)]
pub struct Ledger {
    /// The node's capacity; unlimited when absent.
    capacity: Option<Resources>,
    state: Mutex<State>,
}

/// A running instance's share of its tenant's quotas and of the node.
#[derive(Debug)]
pub struct Reservation {
    ledger: Arc<Ledger>,
    id: u64,
    pub(crate) handle: Arc<Handle>,
}

impl Ledger {
    pub fn new(capacity: Option<Resources>) -> Ledger {
        Ledger {
            capacity,
            state: Mutex::default(),
        }
    }

    /// Sets a tenant's quotas and fair-share weight; usage carries over, so lowering a quota
    /// below the current use refuses new instances without stopping running ones.
    pub fn set_tenant(&self, tenant: &str, quotas: Quotas, weight: u32) {
        let mut state = self.lock();
        state.quotas.insert(tenant.to_owned(), quotas);
        state.weights.insert(tenant.to_owned(), weight);
    }

    /// Refuses (`Some`) or allows again (`None`) a tenant's instance starts, for its
    /// budget's hard cap. Running instances keep running.
    pub fn set_budget_cap(&self, tenant: &str, exceeded: Option<BudgetExceeded>) {
        let mut state = self.lock();
        match exceeded {
            Some(e) => state.capped.insert(tenant.to_owned(), e),
            None => state.capped.remove(tenant),
        };
    }

    /// What a tenant's running instances hold.
    pub fn usage(&self, tenant: &str) -> Usage {
        self.lock().usage.get(tenant).copied().unwrap_or_default()
    }

    /// Reserves one instance of `class` holding `resources`: within the tenant's quotas (the
    /// defaults for tenants never configured) and the node's capacity, preempting lower
    /// classes when the node is full.
    pub fn reserve(
        self: &Arc<Self>,
        tenant: &str,
        class: PriorityClass,
        resources: Resources,
    ) -> Result<Reservation, Refusal> {
        let request = Request {
            tenant: tenant.to_owned(),
            class,
            resources,
        };
        self.try_reserve(&mut self.lock(), &request)
    }

    /// As [`Ledger::reserve`], but when the node is full and nothing can be preempted, waits
    /// until `deadline` for capacity, served in fair order among the waiters.
    pub async fn reserve_or_wait(
        self: &Arc<Self>,
        tenant: &str,
        class: PriorityClass,
        resources: Resources,
        deadline: Instant,
    ) -> Result<Reservation, Refusal> {
        let request = Request {
            tenant: tenant.to_owned(),
            class,
            resources,
        };
        let (id, granted, full) = {
            let mut state = self.lock();
            let full = match self.try_reserve(&mut state, &request) {
                Err(Refusal::NoCapacity(full)) => full,
                other => return other,
            };
            let (grant, granted) = oneshot::channel();
            let id = state.next_seq;
            state.next_seq += 1;
            state.waiting.push(Waiter { id, request, grant });
            (id, granted, full)
        };
        match tokio::time::timeout_at(deadline, granted).await {
            Ok(Ok(reservation)) => Ok(reservation),
            _ => {
                self.lock().waiting.retain(|w| w.id != id);
                Err(full.into())
            }
        }
    }

    /// Admits `request` under the lock, preempting if needed.
    fn try_reserve(self: &Arc<Self>, state: &mut State, request: &Request) -> Result<Reservation, Refusal> {
        let (tenant, class, resources) = (request.tenant.as_str(), request.class, request.resources);
        if let Some(exceeded) = state.capped.get(tenant) {
            return Err(exceeded.clone().into());
        }
        let quotas = state.quotas.get(tenant).cloned().unwrap_or_default();
        let u = state.usage.get(tenant).copied().unwrap_or_default();
        admit(tenant, Quota::Instances, u.instances, 1, quotas.instances.into())?;
        admit(
            tenant,
            Quota::Cpu,
            u.cpu_millis,
            resources.cpu_millis,
            quotas.cpu.0,
        )?;
        admit(
            tenant,
            Quota::Memory,
            u.memory_bytes,
            resources.memory_bytes,
            quotas.memory.0,
        )?;
        if let Some(capacity) = self.capacity {
            let running: Vec<Running> = state
                .held
                .iter()
                .map(|(id, h)| Running {
                    id: id.to_string(),
                    tenant: h.tenant.clone(),
                    class: h.class,
                    resources: h.resources,
                    idle: h.handle.in_flight.load(Ordering::Acquire) == 0,
                    started_seq: h.seq,
                })
                .collect();
            match plan_admission(capacity, &running, request) {
                Admission::Admit => {}
                Admission::Preempt(victims) => {
                    for victim in victims {
                        let id = victim.parse().expect("victim ids are ledger ids");
                        if let Some(held) = state.release(id) {
                            tracing::warn!(
                                victim_tenant = %held.tenant,
                                victim_class = %held.class,
                                %tenant,
                                %class,
                                "preempting an instance to make room"
                            );
                            held.handle.evict();
                        }
                    }
                }
                Admission::Reject { reason } => return Err(reason.into()),
            }
        }
        let id = state.next_seq;
        state.next_seq += 1;
        let handle = Arc::new(Handle::default());
        state.held.insert(
            id,
            Held {
                tenant: tenant.to_owned(),
                class,
                resources,
                seq: id,
                handle: handle.clone(),
            },
        );
        let usage = state.usage.entry(tenant.to_owned()).or_default();
        usage.instances += 1;
        usage.cpu_millis += resources.cpu_millis;
        usage.memory_bytes += resources.memory_bytes;
        Ok(Reservation {
            ledger: self.clone(),
            id,
            handle,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("ledger lock")
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let grants = {
            let mut state = self.ledger.lock();
            // A preempted reservation was already released.
            if state.release(self.id).is_none() {
                return;
            }
            self.ledger.serve_waiters(&mut state)
        };
        // Outside the lock: a grant whose waiter gave up is dropped, and releases itself.
        for (waiter, reservation) in grants {
            let _ = waiter.send(reservation);
        }
    }
}

impl Ledger {
    /// Admits waiters that now fit, in fair order: highest class, then the tenant with the
    /// smallest weighted dominant share of what runs.
    fn serve_waiters(
        self: &Arc<Self>,
        state: &mut State,
    ) -> Vec<(oneshot::Sender<Reservation>, Reservation)> {
        let mut grants = Vec::new();
        let Some(capacity) = self.capacity else {
            return grants;
        };
        'serve: while !state.waiting.is_empty() {
            let requests: Vec<Request> = state.waiting.iter().map(|w| w.request.clone()).collect();
            let running: Vec<Running> = state
                .held
                .values()
                .map(|h| Running {
                    id: String::new(),
                    tenant: h.tenant.clone(),
                    class: h.class,
                    resources: h.resources,
                    idle: false,
                    started_seq: h.seq,
                })
                .collect();
            for at in drf_order(&requests, &usage_by_tenant(&running), &state.weights, capacity) {
                if let Ok(reservation) = self.try_reserve(state, &requests[at]) {
                    let waiter = state.waiting.remove(at);
                    grants.push((waiter.grant, reservation));
                    continue 'serve;
                }
            }
            break;
        }
        grants
    }
}

#[cfg(test)]
mod tests {
    use kl_core::{ByteQuantity, CpuQuantity};
    use proptest::prelude::*;

    use super::*;

    fn res(cpu_millis: u64, memory_bytes: u64) -> Resources {
        Resources {
            cpu_millis,
            memory_bytes,
        }
    }

    /// Reserves at the default class.
    fn take(l: &Arc<Ledger>, tenant: &str, cpu: u64, memory: u64) -> Result<Reservation, Refusal> {
        l.reserve(tenant, PriorityClass::Medium, res(cpu, memory))
    }

    fn quota_of(refusal: Refusal) -> Quota {
        match refusal {
            Refusal::Quota(q) => q.quota,
            other => panic!("expected a quota refusal, got {other}"),
        }
    }

    fn ledger(instances: u32, cpu: u64, memory: u64) -> Arc<Ledger> {
        let ledger = Arc::new(Ledger::default());
        ledger.set_tenant(
            "t",
            Quotas {
                instances,
                cpu: CpuQuantity(cpu),
                memory: ByteQuantity(memory),
                ..Quotas::default()
            },
            1,
        );
        ledger
    }

    #[test]
    fn each_quota_refuses_by_name_and_dropping_returns_the_share() {
        let l = ledger(2, 1000, 1 << 30);
        let a = take(&l, "t", 500, 256 << 20).unwrap();
        let b = take(&l, "t", 500, 256 << 20).unwrap();
        assert_eq!(quota_of(take(&l, "t", 1, 1).unwrap_err()), Quota::Instances);
        drop(b);
        assert_eq!(quota_of(take(&l, "t", 600, 1).unwrap_err()), Quota::Cpu);
        assert_eq!(quota_of(take(&l, "t", 100, 1 << 30).unwrap_err()), Quota::Memory);
        drop(a);
        assert_eq!(l.usage("t"), Usage::default());
        assert!(
            take(&l, "other", 100, 1 << 20).is_ok(),
            "tenants do not share quotas"
        );
    }

    #[test]
    fn lowering_a_quota_keeps_running_instances_but_admits_no_more() {
        let l = ledger(3, 4000, 4 << 30);
        let _a = take(&l, "t", 100, 1 << 20).unwrap();
        let _b = take(&l, "t", 100, 1 << 20).unwrap();
        l.set_tenant(
            "t",
            Quotas {
                instances: 1,
                ..Quotas::default()
            },
            1,
        );
        assert_eq!(l.usage("t").instances, 2);
        let Refusal::Quota(err) = take(&l, "t", 100, 1 << 20).unwrap_err() else {
            panic!("expected a quota refusal")
        };
        assert_eq!((err.used, err.limit), (2, 1));
    }

    #[test]
    fn concurrent_reservations_never_overshoot() {
        let l = ledger(5, 100_000, 1 << 40);
        let granted: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..32).map(|_| s.spawn(|| take(&l, "t", 10, 10).ok())).collect();
            handles.into_iter().filter_map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(granted.len(), 5);
        assert_eq!(l.usage("t").instances, 5);
    }

    fn node(cpu: u64, memory: u64) -> Arc<Ledger> {
        Arc::new(Ledger::new(Some(res(cpu, memory))))
    }

    #[test]
    fn a_full_node_preempts_lower_classes_idle_first_and_returns_their_share() {
        let l = node(1000, 1 << 30);
        let busy_low = l.reserve("a", PriorityClass::Low, res(400, 256 << 20)).unwrap();
        busy_low.handle.busy();
        let idle_low = l.reserve("a", PriorityClass::Low, res(400, 256 << 20)).unwrap();
        let high = l.reserve("b", PriorityClass::High, res(400, 256 << 20)).unwrap();
        assert!(idle_low.handle.is_evicted(), "the idle low instance goes first");
        assert!(!busy_low.handle.is_evicted());
        assert_eq!(l.usage("a").instances, 1, "the victim's share returned at once");
        drop(idle_low);
        assert_eq!(
            l.usage("a").instances,
            1,
            "dropping a victim does not release twice"
        );
        drop((busy_low, high));
        assert_eq!(l.usage("a"), Usage::default());
        assert_eq!(l.usage("b"), Usage::default());
    }

    #[test]
    fn equal_classes_and_best_effort_never_preempt() {
        let l = node(1000, 1 << 30);
        let _a = l.reserve("a", PriorityClass::Medium, res(800, 1 << 20)).unwrap();
        let same = l
            .reserve("b", PriorityClass::Medium, res(400, 1 << 20))
            .unwrap_err();
        assert!(matches!(same, Refusal::NoCapacity(_)), "{same}");
        let _low = l.reserve("c", PriorityClass::Low, res(100, 1 << 20)).unwrap();
        let be = l
            .reserve("d", PriorityClass::BestEffort, res(200, 1 << 20))
            .unwrap_err();
        assert!(be.to_string().contains("best-effort work never preempts"), "{be}");
    }

    #[test]
    fn an_instance_preempted_while_starting_is_killed_when_attached() {
        let l = node(1000, 1 << 30);
        let starting = l.reserve("a", PriorityClass::Low, res(1000, 1 << 20)).unwrap();
        let _high = l.reserve("b", PriorityClass::High, res(1000, 1 << 20)).unwrap();
        assert!(starting.handle.is_evicted());
    }

    async fn queued(l: &Ledger, n: usize) {
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while l.lock().waiting.len() < n {
            assert!(Instant::now() < deadline, "starts did not queue");
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn freed_capacity_goes_to_the_waiter_with_the_smallest_share() {
        let l = node(1000, 1 << 30);
        let a1 = l.reserve("a", PriorityClass::Medium, res(500, 1)).unwrap();
        let _a2 = l.reserve("a", PriorityClass::Medium, res(500, 1)).unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        let wait = |tenant: &'static str| {
            let l = l.clone();
            tokio::spawn(async move {
                l.reserve_or_wait(tenant, PriorityClass::Medium, res(500, 1), deadline)
                    .await
            })
        };
        let a3 = wait("a");
        queued(&l, 1).await;
        let b = wait("b");
        queued(&l, 2).await;
        drop(a1);
        let granted = tokio::time::timeout(std::time::Duration::from_secs(10), b)
            .await
            .expect("b is served")
            .unwrap();
        assert!(
            granted.is_ok(),
            "b, holding nothing, goes before a's earlier request"
        );
        assert_eq!(l.lock().waiting.len(), 1, "a still waits");
        a3.abort();
    }

    #[tokio::test]
    async fn a_waiter_gives_up_at_its_deadline_and_leaves_the_queue() {
        let l = node(1000, 1 << 30);
        let _a = l.reserve("a", PriorityClass::Medium, res(1000, 1)).unwrap();
        let deadline = Instant::now() + std::time::Duration::from_millis(50);
        let refused = l
            .reserve_or_wait("b", PriorityClass::Medium, res(500, 1), deadline)
            .await
            .unwrap_err();
        assert!(matches!(refused, Refusal::NoCapacity(_)), "{refused}");
        assert!(l.lock().waiting.is_empty());
    }

    proptest! {
        #[test]
        fn usage_never_exceeds_quotas(ops in proptest::collection::vec((0u64..600, 0u64..(600 << 20), any::<bool>()), 1..60)) {
            let l = ledger(4, 1000, 1 << 30);
            let mut held = Vec::new();
            for (cpu, mem, release) in ops {
                if release && !held.is_empty() {
                    held.remove(0);
                } else if let Ok(r) = take(&l, "t", cpu, mem) {
                    held.push(r);
                }
                let u = l.usage("t");
                prop_assert!(u.instances <= 4 && u.cpu_millis <= 1000 && u.memory_bytes <= 1 << 30);
                prop_assert_eq!(u.instances, held.len() as u64);
            }
        }
    }
}
