//! Schedule triggers, Knative's PingSource: at each fire time of a trigger's cron schedule
//! (UTC, to the minute) its function gets a `dev.knative.sources.ping` event, delivered like
//! any other (retries, dead letters). Fire times missed while the server was down or busy are
//! not made up for: after a pause the next fire is the next one after now, as PingSource does.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use kl_events::{CloudEvent, EventBus, NewDelivery, TenantEvent, types};
use kl_store::TriggerRecord;

use super::Subscriber;
use crate::state::AppState;

/// Longest sleep with no schedule due: the loop also wakes whenever triggers change.
const IDLE: Duration = Duration::from_secs(3600);

/// The ping a schedule trigger sends at `at`.
fn ping(trigger: &TriggerRecord, at: DateTime<Utc>) -> CloudEvent {
    let source = format!(
        "/apis/v1/namespaces/{}/pingsources/{}",
        trigger.tenant, trigger.name
    );
    let data = trigger.spec.data.clone().unwrap_or_default();
    let mut event = CloudEvent::new(types::PING, source, data);
    if event.data.is_none() {
        event.datacontenttype = None;
    }
    event.time = Some(at.to_rfc3339_opts(SecondsFormat::Secs, true));
    event
}

/// Runs for the life of the server.
pub(crate) async fn scheduler(state: Arc<AppState>) {
    // (tenant, trigger) → the trigger as last seen and its next fire time.
    let mut planned: HashMap<(String, String), (TriggerRecord, DateTime<Utc>)> = HashMap::new();
    loop {
        let now = Utc::now();
        let current = state.events.triggers.schedules();
        planned.retain(|_, (seen, _)| current.iter().any(|t| t == seen));
        for trigger in current {
            let key = (trigger.tenant.clone(), trigger.name.clone());
            if planned.contains_key(&key) {
                continue;
            }
            let next = trigger.spec.schedule.as_ref().and_then(|s| s.next_after(now));
            if let Some(next) = next {
                planned.insert(key, (trigger, next));
            }
        }
        for (trigger, next) in planned.values_mut() {
            if *next > now {
                continue;
            }
            fire(&state, trigger, *next).await;
            match trigger.spec.schedule.as_ref().and_then(|s| s.next_after(now)) {
                Some(after) => *next = after,
                None => *next = DateTime::<Utc>::MAX_UTC,
            }
        }
        let wait = planned
            .values()
            .map(|(_, next)| (*next - Utc::now()).to_std().unwrap_or_default())
            .min()
            .unwrap_or(IDLE)
            .min(IDLE);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = state.events.triggers.changed.notified() => {}
        }
    }
}

async fn fire(state: &AppState, trigger: &TriggerRecord, at: DateTime<Utc>) {
    let event = ping(trigger, at);
    let delivery = NewDelivery {
        tenant: trigger.tenant.clone(),
        subscriber: Subscriber::Trigger(trigger.name.clone()).to_string(),
        event: event.clone(),
    };
    match state.events.broker.enqueue(vec![delivery]).await {
        Ok(()) => {
            tracing::info!(tenant = %trigger.tenant, trigger = %trigger.name, %at, "schedule fired");
            state.events.feed.publish(TenantEvent {
                tenant: trigger.tenant.clone(),
                event,
            });
        }
        Err(e) => {
            tracing::error!(tenant = %trigger.tenant, trigger = %trigger.name, %at, error = %e, "a scheduled ping could not be queued; it is skipped");
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn pings_look_like_pingsource_events() {
        let trigger = TriggerRecord {
            tenant: "acme".into(),
            name: "every-minute".into(),
            spec: serde_json::from_value(
                json!({"function": "f", "schedule": "* * * * *", "data": {"hello": 1}}),
            )
            .unwrap(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        let at = DateTime::parse_from_rfc3339("2030-01-01T10:05:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let ev = ping(&trigger, at);
        assert_eq!(ev.ty, "dev.knative.sources.ping");
        assert_eq!(ev.source, "/apis/v1/namespaces/acme/pingsources/every-minute");
        assert_eq!(ev.time.as_deref(), Some("2030-01-01T10:05:00Z"));
        assert_eq!(ev.data, Some(json!({"hello": 1})));
        assert_eq!(ev.validate(), Ok(()));
        let mut bare = trigger;
        bare.spec.data = None;
        let ev = ping(&bare, at);
        assert_eq!((ev.data, ev.datacontenttype), (None, None));
    }
}
