//! The instances of one revision: picks the least-loaded instance with a free slot, starts a
//! new one when all are full (up to max-scale), and otherwise queues the request (the
//! activator): a bounded first-in, first-out line, each request with its deadline. An instance
//! never holds more requests than the revision's concurrency.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kl_core::{DeciderSpec, Sample, SampleWindow, ScaleDecision, ScalerState, decide};
use kl_runtime::{Instance, Runtime, RuntimeError, StartRequest};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::admission::{Ledger, Refusal, Reservation};
use crate::metering::PoolMeter;
use crate::metrics::{Metrics, RevisionLabels};
use crate::proxy::Connections;
use crate::{GatewayConfig, GatewayError, Invocation, RevisionTarget};

/// An instance and its load.
pub(crate) struct Slot {
    pub(crate) instance: Arc<Instance>,
    pub(crate) conns: Connections,
    /// Set when the gateway gave up on the instance (timeout, protocol error).
    dead: AtomicBool,
    /// The instance's share of its tenant's quotas and of the node, held until the slot is
    /// gone.
    share: Reservation,
    /// Its revision's meter, which reads it one last time before it is killed.
    meter: Arc<PoolMeter>,
}

impl Slot {
    fn alive(&self) -> bool {
        !self.dead.load(Ordering::Relaxed)
            && !self.share.handle.is_evicted()
            && self.instance.exit_status().is_none()
    }

    /// Kills the instance and keeps it out of rotation.
    pub(crate) fn discard(&self) {
        self.dead.store(true, Ordering::Relaxed);
        self.meter.stopping(&self.instance);
        self.instance.kill();
    }
}

struct Entry {
    slot: Arc<Slot>,
    in_flight: u32,
    last_used: Instant,
}

#[derive(Default)]
struct PoolState {
    entries: Vec<Entry>,
    starting: u32,
    retired: bool,
    /// Tickets of the queued requests; the smallest is served first.
    queue: BTreeSet<u64>,
    next_ticket: u64,
    /// Set while instances fail to start: no start is tried before `until`.
    crash_loop: Option<CrashLoop>,
}

/// Instances of the revision fail to start; starts back off exponentially.
#[derive(Debug, Clone)]
pub struct CrashLoop {
    /// Failed starts in a row.
    pub failures: u32,
    /// The last failure, with the instance's last output.
    pub last_error: String,
    /// No start is tried before this.
    pub until: Instant,
}

/// The pause after `failures` failed starts in a row: 1 s, doubling, at most 60 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

/// A request's place in the queue; leaving (served, timed out or cancelled) frees it.
struct Ticket<'a> {
    pool: &'a RevisionPool,
    id: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.pool.state.lock().expect("pool lock").queue.remove(&self.id);
        self.pool.changed.notify_waiters();
    }
}

/// How the revision's last instance to fail ended, for `kl describe`.
#[derive(Debug, Clone)]
pub struct LastExit {
    pub instance: String,
    pub reason: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// What `kl describe` shows of an instance.
#[derive(Debug, Clone)]
pub struct InstanceStatus {
    pub id: String,
    pub pid: u32,
    pub in_flight: u32,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub startup_ms: u64,
}

/// The revision's autoscaler (Knative's KPA): its settings, the concurrency it observed, its
/// state and its last decision.
struct Scaler {
    spec: DeciderSpec,
    window: SampleWindow,
    state: ScalerState,
    epoch: Instant,
    last: Option<ScaleDecision>,
}

pub(crate) struct RevisionPool {
    pub(crate) target: RevisionTarget,
    pub(crate) labels: RevisionLabels,
    runtime: Arc<dyn Runtime>,
    ledger: Arc<Ledger>,
    metrics: Arc<Metrics>,
    meter: Arc<PoolMeter>,
    config: GatewayConfig,
    state: Mutex<PoolState>,
    changed: Notify,
    last_exit: Mutex<Option<LastExit>>,
    scaler: Mutex<Scaler>,
    /// Running instances at the last [`RevisionPool::observe_scale`].
    observed: AtomicU32,
}

/// A claimed slot on an instance; releases it when dropped.
pub(crate) struct Lease<'a> {
    pool: &'a RevisionPool,
    pub(crate) slot: Arc<Slot>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut state = self.pool.state.lock().expect("pool lock");
        if let Some(e) = state
            .entries
            .iter_mut()
            .find(|e| Arc::ptr_eq(&e.slot, &self.slot))
        {
            e.in_flight -= 1;
            e.last_used = Instant::now();
        }
        drop(state);
        self.slot.share.handle.done();
        // Every waiter re-checks, so the head of the queue is sure to see the free slot.
        self.pool.changed.notify_waiters();
    }
}

impl RevisionPool {
    pub(crate) fn new(
        target: RevisionTarget,
        runtime: Arc<dyn Runtime>,
        ledger: Arc<Ledger>,
        metrics: Arc<Metrics>,
        meter: Arc<PoolMeter>,
        config: GatewayConfig,
        restored: bool,
    ) -> RevisionPool {
        let spec = &target.spec;
        let mut autoscaling = config.autoscaling.clone().overlay(spec.autoscaling.clone());
        autoscaling.container_concurrency = Some(spec.concurrency);
        autoscaling.min_scale = Some(spec.min_scale);
        autoscaling.max_scale = Some(spec.max_scale);
        let decider = autoscaling.resolve().unwrap_or_else(|e| {
            tracing::warn!(revision = %target.revision, error = %e, "autoscaling settings refused; using the defaults");
            DeciderSpec::default()
        });
        let scaler = Scaler {
            window: SampleWindow::new(decider.stable_window),
            spec: decider,
            // A revision restored after a restart starts from zero, as it stood.
            state: ScalerState {
                scale_target_initialized: restored,
                ..ScalerState::default()
            },
            epoch: Instant::now(),
            last: None,
        };
        RevisionPool {
            scaler: Mutex::new(scaler),
            labels: RevisionLabels {
                tenant: target.tenant.clone(),
                function: target.function.clone(),
                revision: target.revision.clone(),
            },
            target,
            runtime,
            ledger,
            metrics,
            meter,
            config,
            state: Mutex::new(PoolState::default()),
            changed: Notify::new(),
            last_exit: Mutex::new(None),
            observed: AtomicU32::new(0),
        }
    }

    fn start_request(&self) -> StartRequest {
        StartRequest {
            tenant: self.target.tenant.clone(),
            function: self.target.function.clone(),
            revision: self.target.revision.clone(),
            launch: self.target.launch.clone(),
            log_path: self.target.log_path.clone(),
            limits: kl_runtime::Limits {
                memory_bytes: self.target.spec.memory_bytes,
                cpu_millis: u32::try_from(self.target.spec.cpu_millis).unwrap_or(u32::MAX),
                pids: self.config.pids_per_instance,
            },
            uid: self.target.uid,
            gid: self.target.uid,
            read_only: self.target.launch.layers.clone(),
            egress_socket: self.target.egress_socket.clone(),
            secrets: self.target.secrets.clone(),
        }
    }

    /// What one instance holds.
    fn resources(&self) -> kl_core::Resources {
        kl_core::Resources {
            cpu_millis: self.target.spec.cpu_millis,
            memory_bytes: self.target.spec.memory_bytes,
        }
    }

    /// Reserves one instance's share of the tenant's quotas and of the node.
    fn reserve(&self) -> Result<Reservation, Refusal> {
        self.ledger
            .reserve(&self.target.tenant, self.target.spec.priority, self.resources())
    }

    /// Starts one idle instance (the readiness check of a new revision).
    pub(crate) async fn warm_up(&self) -> Result<(), GatewayError> {
        let share = self.reserve()?;
        let instance = self.runtime.start(self.start_request()).await?;
        self.meter.started(instance.clone());
        self.state.lock().expect("pool lock").entries.push(Entry {
            slot: new_slot(instance, share, self.meter.clone()),
            in_flight: 0,
            last_used: Instant::now(),
        });
        Ok(())
    }

    pub(crate) async fn invoke(&self, call: Invocation) -> Result<http::Response<Bytes>, GatewayError> {
        let timeout = Duration::from_millis(self.target.spec.timeout_ms);
        let deadline = Instant::now() + timeout;
        let (lease, cold) = self.acquire(deadline).await?;
        if cold {
            self.metrics.cold_start(&self.labels, lease.slot.instance.startup);
        }
        let forwarding = Instant::now();
        let remaining = deadline.saturating_duration_since(forwarding);
        let forwarded = crate::proxy::forward(
            &lease.slot,
            call,
            deadline_ms(remaining),
            remaining,
            &self.config,
            &self.target.spec,
        )
        .await;
        // Billed: the time the instance had the request, whatever the outcome.
        self.meter.invocation(forwarding.elapsed());
        let ended = match &forwarded {
            Err(GatewayError::Crashed(reason)) => Some(reason.clone()),
            Err(GatewayError::Timeout(limit)) => {
                Some(format!("killed: a request exceeded the timeout of {limit}"))
            }
            _ => None,
        };
        if let Some(reason) = ended {
            *self.last_exit.lock().expect("last exit lock") = Some(LastExit {
                instance: lease.slot.instance.id.clone(),
                reason,
                at: chrono::Utc::now(),
            });
        }
        let mut response = forwarded?;
        let headers = response.headers_mut();
        headers.insert("x-kl-revision", header_value(&self.target.revision));
        if cold {
            headers.insert("x-kl-cold-start", http::HeaderValue::from_static("true"));
        }
        Ok(response)
    }

    /// Claims a slot, starting an instance if needed; the bool says whether it was started
    /// for this request (a cold start). Requests that must wait queue in arrival order.
    async fn acquire(&self, deadline: Instant) -> Result<(Lease<'_>, bool), GatewayError> {
        let mut ticket: Option<Ticket<'_>> = None;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let start = {
                let mut state = self.state.lock().expect("pool lock");
                state.entries.retain(|e| e.slot.alive() || e.in_flight > 0);
                let first_in_line = match &ticket {
                    Some(t) => state.queue.first() == Some(&t.id),
                    None => state.queue.is_empty(),
                };
                let limit = self.target.spec.concurrency;
                let best = state
                    .entries
                    .iter_mut()
                    .filter(|e| e.in_flight < limit && e.slot.alive())
                    .min_by_key(|e| e.in_flight);
                if let (true, Some(entry)) = (first_in_line, best) {
                    entry.in_flight += 1;
                    entry.slot.share.handle.busy();
                    let slot = entry.slot.clone();
                    drop(state);
                    drop(ticket);
                    return Ok((Lease { pool: self, slot }, false));
                }
                let total = state.entries.len() as u32 + state.starting;
                if let Some(crash) = state.crash_loop.clone().filter(|c| Instant::now() < c.until)
                    && total == 0
                {
                    return Err(GatewayError::CrashLoop {
                        failures: crash.failures,
                        retry_in: crash.until.saturating_duration_since(Instant::now()),
                        last_error: crash.last_error,
                    });
                }
                let backing_off = state
                    .crash_loop
                    .as_ref()
                    .is_some_and(|c| Instant::now() < c.until);
                // A starting instance with several slots will take this request too.
                let covered = state.starting > 0 && limit > 1;
                let may_start = first_in_line
                    && !state.retired
                    && !backing_off
                    && total < self.target.spec.max_scale
                    && !covered;
                let start = match may_start.then(|| self.reserve()) {
                    Some(Ok(share)) => {
                        state.starting += 1;
                        Start::Now(share)
                    }
                    // The node is full and nothing runs to wait for: queue for capacity.
                    Some(Err(Refusal::NoCapacity(_))) if total == 0 => {
                        state.starting += 1;
                        Start::WhenCapacity
                    }
                    // Nothing runs that could free a slot: waiting cannot help.
                    Some(Err(refusal)) if total == 0 => return Err(refusal.into()),
                    // At a quota or the node's capacity: wait for a slot on what runs.
                    Some(Err(_)) | None => Start::No,
                };
                if matches!(start, Start::No) && ticket.is_none() {
                    if state.queue.len() >= self.config.max_queue {
                        return Err(GatewayError::QueueFull {
                            revision: self.target.revision.clone(),
                            queued: state.queue.len(),
                        });
                    }
                    let id = state.next_ticket;
                    state.next_ticket += 1;
                    state.queue.insert(id);
                    ticket = Some(Ticket { pool: self, id });
                }
                start
            };
            let share = match start {
                Start::Now(share) => Some(share),
                Start::WhenCapacity => {
                    let waited = self
                        .ledger
                        .reserve_or_wait(
                            &self.target.tenant,
                            self.target.spec.priority,
                            self.resources(),
                            deadline,
                        )
                        .await;
                    match waited {
                        Ok(share) => Some(share),
                        Err(refusal) => {
                            self.state.lock().expect("pool lock").starting -= 1;
                            self.changed.notify_waiters();
                            return Err(refusal.into());
                        }
                    }
                }
                Start::No => None,
            };
            if let Some(share) = share {
                // It leaves the queue: the next in line may start or take a slot meanwhile.
                drop(ticket.take());
                return self.start_for_request(share).await.map(|lease| (lease, true));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let instances = self.state.lock().expect("pool lock").entries.len();
                return Err(GatewayError::NoCapacity {
                    revision: self.target.revision.clone(),
                    instances,
                });
            }
        }
    }

    /// Requests waiting in the queue (demand the instances do not yet serve).
    pub(crate) fn queued(&self) -> usize {
        self.state.lock().expect("pool lock").queue.len()
    }

    async fn start_for_request(&self, share: Reservation) -> Result<Lease<'_>, GatewayError> {
        let started = self.runtime.start(self.start_request()).await;
        let slot = self.started(started, share, 1)?;
        Ok(Lease { pool: self, slot })
    }

    /// Records a start's outcome: the new instance joins with `in_flight` requests, or the
    /// failure feeds the crash-loop back-off.
    fn started(
        &self,
        started: Result<Arc<Instance>, RuntimeError>,
        share: Reservation,
        in_flight: u32,
    ) -> Result<Arc<Slot>, GatewayError> {
        let mut state = self.state.lock().expect("pool lock");
        state.starting -= 1;
        let result = match started {
            Ok(instance) if state.retired => {
                instance.kill();
                Err(GatewayError::NoRoute(self.target.function.clone()))
            }
            Ok(instance) => {
                state.crash_loop = None;
                self.meter.started(instance.clone());
                let slot = new_slot(instance, share, self.meter.clone());
                for _ in 0..in_flight {
                    slot.share.handle.busy();
                }
                state.entries.push(Entry {
                    slot: slot.clone(),
                    in_flight,
                    last_used: Instant::now(),
                });
                Ok(slot)
            }
            Err(e) => {
                let failures = state.crash_loop.as_ref().map_or(0, |c| c.failures) + 1;
                tracing::warn!(revision = %self.target.revision, failures, error = %e, "instance failed to start; backing off");
                state.crash_loop = Some(CrashLoop {
                    failures,
                    last_error: e.to_string(),
                    until: Instant::now() + backoff(failures),
                });
                Err(GatewayError::Start(e))
            }
        };
        drop(state);
        self.changed.notify_waiters();
        result
    }

    /// One autoscaler tick: samples the demand (requests in flight and queued), asks the KPA
    /// for the instance count, and starts or stops instances towards it. Starting waits for no
    /// one (prewarm); stopping takes idle instances only, least recently used first.
    pub(crate) fn autoscale(self: &Arc<Self>) {
        let (demand, ready, starting, retired, backing_off) = {
            let mut state = self.state.lock().expect("pool lock");
            state.entries.retain(|e| e.slot.alive() || e.in_flight > 0);
            let in_flight: u32 = state.entries.iter().map(|e| e.in_flight).sum();
            let ready = state.entries.iter().filter(|e| e.slot.alive()).count() as u32;
            let backing_off = state
                .crash_loop
                .as_ref()
                .is_some_and(|c| Instant::now() < c.until);
            (
                in_flight as f64 + state.queue.len() as f64,
                ready,
                state.starting,
                state.retired,
                backing_off,
            )
        };
        if retired {
            return;
        }
        let decision = {
            let mut scaler = self.scaler.lock().expect("scaler lock");
            let now = scaler.epoch.elapsed();
            scaler.window.record(Sample {
                at: now,
                concurrency: demand,
            });
            let (decision, next) = decide(&scaler.spec, &scaler.window, ready, &scaler.state, now);
            scaler.state = next;
            scaler.last = Some(decision.clone());
            decision
        };
        let desired = decision.desired.min(self.target.spec.max_scale);
        if desired > ready + starting && !backing_off {
            for _ in 0..desired - ready - starting {
                let Ok(share) = self.reserve() else { break };
                self.state.lock().expect("pool lock").starting += 1;
                let pool = self.clone();
                tokio::spawn(async move {
                    let started = pool.runtime.start(pool.start_request()).await;
                    if pool.started(started, share, 0).is_ok() {
                        pool.changed.notify_waiters();
                    }
                });
            }
        } else if desired < ready {
            self.stop_idle((ready - desired) as usize);
        }
    }

    /// Stops up to `count` idle instances, least recently used first.
    fn stop_idle(&self, count: usize) {
        let idle: Vec<Arc<Slot>> = {
            let mut state = self.state.lock().expect("pool lock");
            let mut candidates: Vec<(Instant, usize)> = state
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.in_flight == 0 && e.slot.alive())
                .map(|(i, e)| (e.last_used, i))
                .collect();
            candidates.sort();
            let mut chosen: Vec<usize> = candidates.into_iter().take(count).map(|(_, i)| i).collect();
            chosen.sort_unstable_by(|a, b| b.cmp(a));
            chosen.into_iter().map(|i| state.entries.remove(i).slot).collect()
        };
        self.stop_slots(idle);
    }

    /// The running instance count, `(before, now)`, when it changed since the last call.
    pub(crate) fn observe_scale(&self) -> Option<(u32, u32)> {
        let running = {
            let state = self.state.lock().expect("pool lock");
            state.entries.iter().filter(|e| e.slot.alive()).count() as u32
        };
        let before = self.observed.swap(running, Ordering::Relaxed);
        (before != running).then_some((before, running))
    }

    /// The autoscaler's last decision.
    pub(crate) fn scale(&self) -> Option<ScaleDecision> {
        self.scaler.lock().expect("scaler lock").last.clone()
    }

    /// The crash loop the revision is in, if any.
    pub(crate) fn crash_loop(&self) -> Option<CrashLoop> {
        self.state.lock().expect("pool lock").crash_loop.clone()
    }

    pub(crate) fn last_exit(&self) -> Option<LastExit> {
        self.last_exit.lock().expect("last exit lock").clone()
    }

    pub(crate) fn instances(&self) -> Vec<InstanceStatus> {
        let state = self.state.lock().expect("pool lock");
        state
            .entries
            .iter()
            .filter(|e| e.slot.alive())
            .map(|e| InstanceStatus {
                id: e.slot.instance.id.clone(),
                pid: e.slot.instance.pid,
                in_flight: e.in_flight,
                started_at: e.slot.instance.started_at,
                startup_ms: e.slot.instance.startup.as_millis() as u64,
            })
            .collect()
    }

    /// Stops instances that have been idle longer than the idle timeout.
    pub(crate) fn reap_idle(&self) {
        let now = Instant::now();
        let mut idle = Vec::new();
        {
            let mut state = self.state.lock().expect("pool lock");
            let mut keep = self.target.spec.min_scale as usize;
            state.entries.retain(|e| {
                let expired = e.in_flight == 0 && now.duration_since(e.last_used) >= self.config.idle_timeout;
                let alive = e.slot.alive();
                if alive && keep > 0 {
                    // min-scale instances stay, however idle.
                    keep -= 1;
                    return true;
                }
                if expired || (!alive && e.in_flight == 0) {
                    idle.push(e.slot.clone());
                    false
                } else {
                    true
                }
            });
        }
        self.stop_slots(idle);
    }

    /// Takes no new requests; stops each instance once its requests are done.
    pub(crate) async fn retire(&self) {
        self.close();
        let deadline =
            Instant::now() + Duration::from_millis(self.target.spec.timeout_ms) + self.config.stop_grace;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let busy = self
                .state
                .lock()
                .expect("pool lock")
                .entries
                .iter()
                .any(|e| e.in_flight > 0);
            if !busy || tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        self.stop_all().await;
    }

    /// Takes no new requests and starts no instances.
    pub(crate) fn close(&self) {
        self.state.lock().expect("pool lock").retired = true;
    }

    /// Stops every instance now (with the stop grace).
    pub(crate) async fn stop_all(&self) {
        let slots: Vec<_> = {
            let mut state = self.state.lock().expect("pool lock");
            state.retired = true;
            state.entries.drain(..).map(|e| e.slot).collect()
        };
        let grace = self.config.stop_grace;
        let mut stops = tokio::task::JoinSet::new();
        for slot in slots {
            self.meter.stopping(&slot.instance);
            stops.spawn(async move { slot.instance.stop(grace).await });
        }
        while stops.join_next().await.is_some() {}
    }

    /// Stops instances in the background, each metered one last time first.
    fn stop_slots(&self, slots: Vec<Arc<Slot>>) {
        let grace = self.config.stop_grace;
        for slot in slots {
            self.meter.stopping(&slot.instance);
            tokio::spawn(async move { slot.instance.stop(grace).await });
        }
    }
}

/// Whether a request starts an instance.
enum Start {
    Now(Reservation),
    /// Once the node has capacity for it (fair order among waiting starts).
    WhenCapacity,
    No,
}

fn new_slot(instance: Arc<Instance>, share: Reservation, meter: Arc<PoolMeter>) -> Arc<Slot> {
    share.handle.attach(instance.clone());
    Arc::new(Slot {
        instance,
        conns: Connections::default(),
        dead: AtomicBool::new(false),
        share,
        meter,
    })
}

/// The deadline as Unix epoch milliseconds, for the shim's context.
fn deadline_ms(remaining: Duration) -> u64 {
    (chrono::Utc::now() + remaining).timestamp_millis() as u64
}

fn header_value(s: &str) -> http::HeaderValue {
    http::HeaderValue::from_str(s).unwrap_or_else(|_| http::HeaderValue::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_backoff_doubles_from_one_second_up_to_a_minute() {
        let secs: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX).as_secs(), 60);
    }
}
