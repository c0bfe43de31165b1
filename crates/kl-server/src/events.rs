//! Eventing (DESIGN §2, the events path): the ingress speaking the CloudEvents HTTP binding,
//! triggers, the durable broker (embedded or RabbitMQ) and the dispatcher that delivers to
//! functions, async invocations, command events, schedules, dead letters and the live feed.
//!
//! Every event that enters the platform, whoever sends it (a producer, a build, the
//! autoscaler, an async invocation's reply), goes through [`Events::publish`]: matched against
//! the tenant's triggers and queued as ONE broker batch, so an accepted request is persisted
//! whole or not at all, then shown on the live feed.

mod async_invoke;
mod commands;
mod dispatch;
mod dlq;
mod ingress;
mod schedule;
mod sink;
mod tail;
mod triggers;

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use kl_events::{Broker, BrokerError, CloudEvent, EventBus, InProcessBus, NewDelivery, TenantEvent, types};
use kl_store::Store;
use tokio::sync::{Mutex, MutexGuard};

use crate::state::AppState;

pub(crate) use async_invoke::{get_invocation, is_async, queue_invocation};
pub(crate) use dispatch::dispatch;
pub(crate) use dlq::{list_dead_letters, replay_dead_letter, show_dead_letter};
pub(crate) use ingress::{ingest, ingest_own};
pub(crate) use schedule::scheduler;
pub(crate) use tail::follow;
pub(crate) use triggers::{
    TriggerRegistry, apply_to_cluster as apply_trigger_to_cluster, create_trigger, delete_trigger,
    describe_trigger, list_triggers, put_trigger,
};

/// Who a queued delivery is for; stored in the broker as its `subscriber` string (short: AMQP
/// routing keys are at most 255 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Subscriber {
    /// A trigger of the delivery's tenant, by name.
    Trigger(String),
    /// The platform's command executor (`io.knative.lambda.command.*`).
    Command,
    /// An async invocation, by id: the event carries the request.
    Invocation(String),
    /// An async invocation's destination: the event is its response.
    Destination(String),
    /// The tenant's Knative Broker (`--eventing knative`), whose Triggers deliver it.
    KnativeBroker,
}

impl fmt::Display for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subscriber::Trigger(name) => write!(f, "trigger:{name}"),
            Subscriber::Command => f.write_str("command"),
            Subscriber::KnativeBroker => f.write_str("knative-broker"),
            Subscriber::Invocation(id) => write!(f, "invocation:{id}"),
            Subscriber::Destination(id) => write!(f, "destination:{id}"),
        }
    }
}

impl FromStr for Subscriber {
    type Err = String;

    fn from_str(s: &str) -> Result<Subscriber, String> {
        match s.split_once(':') {
            None if s == "command" => Ok(Subscriber::Command),
            None if s == "knative-broker" => Ok(Subscriber::KnativeBroker),
            Some(("trigger", name)) => Ok(Subscriber::Trigger(name.to_owned())),
            Some(("invocation", id)) => Ok(Subscriber::Invocation(id.to_owned())),
            Some(("destination", id)) => Ok(Subscriber::Destination(id.to_owned())),
            _ => Err(format!("unknown subscriber {s:?}")),
        }
    }
}

/// Stripes of the ingress's duplicate check: two requests carrying the same (source, id) run
/// the check-enqueue-record sequence one after the other, so both cannot pass the check.
const STRIPES: usize = 64;

/// The eventing hub the handlers and background tasks share.
pub(crate) struct Events {
    pub broker: Arc<dyn Broker>,
    /// The live feed (`kl events tail`).
    pub feed: InProcessBus,
    pub triggers: TriggerRegistry,
    store: Store,
    stripes: Vec<Mutex<()>>,
}

impl Events {
    pub fn new(broker: Arc<dyn Broker>, triggers: TriggerRegistry, store: Store) -> Events {
        Events {
            broker,
            feed: InProcessBus::new(4096),
            triggers,
            store,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Queues `events` for the tenant's matching triggers (and commands for the executor),
    /// plus `extra` deliveries, in one broker batch; then shows them on the live feed.
    /// Returns once the batch is durable.
    pub async fn publish(
        &self,
        tenant: &str,
        events: Vec<CloudEvent>,
        extra: Vec<NewDelivery>,
    ) -> Result<(), BrokerError> {
        let mut batch = self.triggers.fan_out(tenant, &events);
        batch.extend(extra);
        self.broker.enqueue(batch).await?;
        for event in events {
            self.feed.publish(TenantEvent {
                tenant: tenant.to_owned(),
                event,
            });
        }
        Ok(())
    }

    /// Publishes a platform event (lifecycle, scaling) that nobody waits for: a broker failure
    /// is logged, not returned, since the change it reports has happened either way.
    pub async fn emit(&self, tenant: &str, event: CloudEvent) {
        let ty = event.ty.clone();
        if let Err(e) = self.publish(tenant, vec![event], Vec::new()).await {
            tracing::error!(%tenant, %ty, error = %e, "could not queue a platform event");
        }
    }

    /// Holds the duplicate-check stripes of these (source, id) keys, in order (no deadlock).
    async fn lock_keys(&self, tenant: &str, keys: &[(String, String)]) -> Vec<MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = keys
            .iter()
            .map(|(source, id)| {
                let mut h = DefaultHasher::new();
                (tenant, source, id).hash(&mut h);
                (h.finish() % STRIPES as u64) as usize
            })
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for i in stripes {
            guards.push(self.stripes[i].lock().await);
        }
        guards
    }
}

/// How long an async invocation's record is kept.
const INVOCATION_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often expired idempotency keys and invocation records are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// Forgets accepted-event keys older than the idempotency window, and old invocations.
pub(crate) async fn sweeper(state: Arc<AppState>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ago =
        |d: Duration| chrono::Utc::now() - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    loop {
        every.tick().await;
        let keys = state
            .store
            .forget_accepted_before(ago(state.config.dedupe_window))
            .await;
        let invocations = state
            .store
            .forget_invocations_before(ago(INVOCATION_RETENTION))
            .await;
        match (keys, invocations) {
            (Ok(keys), Ok(invocations)) => {
                tracing::debug!(keys, invocations, "swept expired event keys and invocations")
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "sweeping expired event keys and invocations failed")
            }
        }
    }
}

/// Publishes `lifecycle.service.scaled` whenever a revision's running instance count changes.
pub(crate) async fn scaling(state: Arc<AppState>) {
    let mut changes = state.gateway.watch_scale();
    loop {
        let scaled = match changes.recv().await {
            Ok(scaled) => scaled,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "scale changes were missed");
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let data = serde_json::json!({
            "revision": scaled.revision,
            "from": scaled.from,
            "to": scaled.to,
            "desired": scaled.desired,
        });
        let event = kl_events::lifecycle(
            types::SERVICE_SCALED,
            &scaled.tenant,
            &scaled.function,
            &scaled.revision,
            data,
        );
        state.events.emit(&scaled.tenant, event).await;
    }
}

/// Whether an event is a command for the platform rather than news for triggers.
pub(crate) fn is_command(event: &CloudEvent) -> bool {
    event.ty.starts_with(types::COMMAND_PREFIX)
}

/// A random draw in `[0, 1)` for backoff jitter.
fn jitter() -> f64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_round_trip_through_their_broker_form() {
        for s in [
            Subscriber::Trigger("on-upload".into()),
            Subscriber::Command,
            Subscriber::Invocation("3f1c".into()),
            Subscriber::Destination("3f1c".into()),
        ] {
            assert_eq!(s.to_string().parse::<Subscriber>(), Ok(s));
        }
        assert!("queue:x".parse::<Subscriber>().is_err());
        assert!("commands".parse::<Subscriber>().is_err());
    }

    #[test]
    fn jitter_stays_in_the_unit_interval() {
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }
}
