//! The dispatcher: takes due deliveries from the broker, at most `dispatch_concurrency` at a
//! time, hands each to what its subscriber names (a trigger's function, the command executor,
//! an async invocation or its destination, a Knative Broker), and settles it: ack, retry after a jittered
//! backoff, or dead-letter. At-least-once: a delivery is acked only after its target answered,
//! so a server that dies mid-delivery delivers it again after the restart.

use std::sync::Arc;
use std::time::Duration;

use kl_events::delivery::{DeliveryPolicy, backoff};
use kl_events::{BrokerError, Delivery};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::sink::{self, Attempt};
use super::{Subscriber, async_invoke, commands, jitter};
use crate::state::AppState;

/// How long one `receive` waits for the first delivery before the loop looks around again.
const RECEIVE_WAIT: Duration = Duration::from_secs(1);
/// Pause after the broker failed a receive, so an outage is not a busy loop.
const BROKER_PAUSE: Duration = Duration::from_secs(1);
/// How long deliveries in flight may finish at shutdown; the rest are delivered again after
/// the restart.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How a delivery was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    Acked,
    Retrying,
    DeadLettered,
    /// The broker refused the settlement (a lost lease): it will be delivered again.
    Void,
}

/// Runs until `stop` turns true, then lets running deliveries finish for a grace period.
pub(crate) async fn dispatch(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(state.config.dispatch_concurrency.max(1)));
    let mut running = JoinSet::new();
    loop {
        while running.try_join_next().is_some() {}
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = stop.wait_for(|stopping| *stopping) => break,
        };
        // Only this loop takes permits, so those free now stay free for this batch.
        let max = 1 + permits.available_permits();
        let received = tokio::select! {
            received = state.events.broker.receive(max, RECEIVE_WAIT) => received,
            _ = stop.wait_for(|stopping| *stopping) => break,
        };
        match received {
            Ok(deliveries) => {
                let mut first = Some(permit);
                for delivery in deliveries {
                    let permit = match first.take() {
                        Some(permit) => permit,
                        None => permits
                            .clone()
                            .try_acquire_owned()
                            .expect("receive returns at most the free permits"),
                    };
                    let state = state.clone();
                    running.spawn(async move {
                        handle(&state, delivery).await;
                        drop(permit);
                    });
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "the event broker failed a receive; pausing");
                tokio::select! {
                    () = tokio::time::sleep(BROKER_PAUSE) => {}
                    _ = stop.wait_for(|stopping| *stopping) => break,
                }
            }
        }
    }
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while running.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::info!(
            left = running.len(),
            "deliveries still running at shutdown will be delivered again after the restart"
        );
        running.abort_all();
    }
}

async fn handle(state: &Arc<AppState>, delivery: Delivery) {
    let subscriber = match delivery.subscriber.parse::<Subscriber>() {
        Ok(subscriber) => subscriber,
        Err(reason) => {
            dead_letter(state, delivery, &reason).await;
            return;
        }
    };
    match subscriber {
        Subscriber::Trigger(name) => to_trigger(state, delivery, &name).await,
        Subscriber::Command => commands::execute(state, delivery).await,
        Subscriber::KnativeBroker => to_knative_broker(state, delivery).await,
        Subscriber::Invocation(id) => async_invoke::run(state, delivery, &id).await,
        Subscriber::Destination(id) => async_invoke::to_destination(state, delivery, &id).await,
    };
}

/// Delivers to a trigger's function under its policy; once dead-lettered, also to its
/// dead-letter sink, once, best-effort (the dead letter stays for `kl events dlq` either way).
async fn to_trigger(state: &AppState, delivery: Delivery, name: &str) -> Settled {
    let Some(trigger) = state.events.triggers.get(&delivery.tenant, name) else {
        let reason = format!("trigger {name:?} no longer exists");
        return dead_letter(state, delivery, &reason).await;
    };
    let policy = &trigger.spec.delivery;
    let function = &trigger.spec.function;
    let attempt = sink::to_function(state, &delivery.tenant, function, &delivery.event, policy.timeout).await;
    let (tenant, mut event) = (delivery.tenant.clone(), delivery.event.clone());
    let settled = settle(state, delivery, attempt, policy).await;
    if let (Settled::DeadLettered, Some(dead_letter_sink)) = (settled, &policy.dead_letter) {
        // Knative's extension naming where the event failed to go.
        event.extensions.insert(
            "knativeerrordest".into(),
            serde_json::Value::String(format!("function/{function}")),
        );
        let sent = sink::to_sink(state, &tenant, dead_letter_sink, &event, policy.timeout).await;
        if sent != Attempt::Delivered {
            tracing::warn!(%tenant, trigger = %name, outcome = ?sent, "the dead-letter sink did not take the event");
        }
    }
    settled
}

/// Hands an event to the tenant's Knative Broker, retried under the default policy: once the
/// Broker has it, its Triggers' own delivery policies apply.
async fn to_knative_broker(state: &AppState, delivery: Delivery) -> Settled {
    let attempt = sink::to_knative_broker(state, &delivery.tenant, &delivery.event).await;
    settle(state, delivery, attempt, &DeliveryPolicy::default()).await
}

/// Settles a delivery by what its attempt came to, under `policy`'s retries and backoff.
pub(crate) async fn settle(
    state: &AppState,
    delivery: Delivery,
    attempt: Attempt,
    policy: &DeliveryPolicy,
) -> Settled {
    let broker = &state.events.broker;
    let (id, tenant) = (delivery.id.clone(), delivery.tenant.clone());
    let (result, settled) = match attempt {
        Attempt::Delivered => (broker.ack(delivery).await, Settled::Acked),
        Attempt::Transient(reason) if delivery.attempt < policy.retries => {
            let wait = backoff(delivery.attempt + 1, policy, jitter());
            tracing::info!(%tenant, delivery = %id, attempt = delivery.attempt, ?wait, %reason, "delivery failed; retrying");
            (broker.retry(delivery, wait).await, Settled::Retrying)
        }
        Attempt::Transient(reason) => {
            let reason = format!("{reason} (gave up after {} attempts)", delivery.attempt + 1);
            return dead_letter(state, delivery, &reason).await;
        }
        Attempt::Permanent(reason) => return dead_letter(state, delivery, &reason).await,
    };
    settled_or_void(result, &id, settled)
}

/// Gives up on a delivery: it moves to its tenant's dead letters.
pub(crate) async fn dead_letter(state: &AppState, delivery: Delivery, reason: &str) -> Settled {
    let id = delivery.id.clone();
    tracing::warn!(tenant = %delivery.tenant, delivery = %id, subscriber = %delivery.subscriber, %reason, "dead-lettering a delivery");
    let result = state.events.broker.dead_letter(delivery, reason).await;
    settled_or_void(result, &id, Settled::DeadLettered)
}

fn settled_or_void(result: Result<(), BrokerError>, id: &str, settled: Settled) -> Settled {
    match result {
        Ok(()) => settled,
        Err(e) => {
            tracing::warn!(delivery = %id, error = %e, "could not settle a delivery; it will be delivered again");
            Settled::Void
        }
    }
}
