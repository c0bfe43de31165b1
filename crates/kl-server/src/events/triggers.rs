//! Triggers: the API (`/v1/tenants/{t}/triggers`), and the in-memory registry that the
//! ingress fans out with and the dispatcher and scheduler resolve deliveries against.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Json;
use axum::extract::{Path, State};
use bytes::Bytes;
use chrono::Utc;
use http::StatusCode;
use kl_api::{CreateTrigger, TriggerList, TriggerView};
use kl_core::Action;
use kl_events::delivery::Sink;
use kl_events::trigger::{TriggerSpec, validate_trigger_name};
use kl_events::{CloudEvent, NewDelivery};
use kl_store::{Store, StoreError, TriggerRecord};
use tokio::sync::Notify;

use super::{Subscriber, is_command};
use crate::auth::Caller;
use crate::error::{ApiError, parse_json};
use crate::state::AppState;

/// Every tenant's triggers, in memory: the ingress matches each event against them without a
/// query. Replaced whole (from the store) after every change.
pub(crate) struct TriggerRegistry {
    by_tenant: ArcSwap<HashMap<String, Arc<[TriggerRecord]>>>,
    /// Knative Eventing delivers (`--eventing knative`): events go to the tenant's Broker,
    /// whose Triggers and PingSources do the matching and the schedules.
    knative: bool,
    /// Wakes the scheduler when schedules may have changed.
    pub changed: Notify,
}

impl TriggerRegistry {
    pub async fn load(store: &Store, knative: bool) -> Result<TriggerRegistry, StoreError> {
        let registry = TriggerRegistry {
            by_tenant: ArcSwap::from_pointee(HashMap::new()),
            knative,
            changed: Notify::new(),
        };
        registry.reload(store).await?;
        Ok(registry)
    }

    /// Re-reads every trigger after a change.
    pub async fn reload(&self, store: &Store) -> Result<(), StoreError> {
        let mut grouped: HashMap<String, Vec<TriggerRecord>> = HashMap::new();
        for t in store.triggers().await? {
            grouped.entry(t.tenant.clone()).or_default().push(t);
        }
        self.by_tenant.store(Arc::new(
            grouped.into_iter().map(|(k, v)| (k, v.into())).collect(),
        ));
        self.changed.notify_one();
        Ok(())
    }

    pub fn get(&self, tenant: &str, name: &str) -> Option<TriggerRecord> {
        self.by_tenant
            .load()
            .get(tenant)?
            .iter()
            .find(|t| t.name == name)
            .cloned()
    }

    /// Every schedule trigger of every tenant the platform fires (none when Knative's
    /// PingSources do).
    pub fn schedules(&self) -> Vec<TriggerRecord> {
        if self.knative {
            return Vec::new();
        }
        self.by_tenant
            .load()
            .values()
            .flat_map(|ts| ts.iter().filter(|t| t.spec.schedule.is_some()).cloned())
            .collect()
    }

    /// One delivery per (event, matching filter trigger), and one to the command executor
    /// per command event. Schedule triggers subscribe to no events: they get their pings.
    /// With Knative Eventing, one delivery per event to the tenant's Broker instead of the
    /// triggers' (commands still reach the executor too).
    pub fn fan_out(&self, tenant: &str, events: &[CloudEvent]) -> Vec<NewDelivery> {
        let all = self.by_tenant.load();
        let triggers = all.get(tenant).map(|t| &t[..]).unwrap_or_default();
        let mut out = Vec::new();
        for event in events {
            let delivery = |subscriber: Subscriber| NewDelivery {
                tenant: tenant.to_owned(),
                subscriber: subscriber.to_string(),
                event: event.clone(),
            };
            if is_command(event) {
                out.push(delivery(Subscriber::Command));
            }
            if self.knative {
                out.push(delivery(Subscriber::KnativeBroker));
                continue;
            }
            for t in triggers {
                if t.spec.schedule.is_none() && t.spec.filters.matches(event) {
                    out.push(delivery(Subscriber::Trigger(t.name.clone())));
                }
            }
        }
        out
    }
}

fn view(t: TriggerRecord) -> TriggerView {
    TriggerView {
        next_fire: t.spec.schedule.as_ref().and_then(|s| s.next_after(Utc::now())),
        tenant: t.tenant,
        name: t.name,
        spec: t.spec,
        created_at: t.created_at,
        updated_at: t.updated_at,
    }
}

/// Refuses what the store should not hold: an invalid name or spec (400), a function or
/// dead-letter function the tenant does not have (422; deploy it first), a URL this server
/// cannot post to (400).
async fn check(state: &AppState, tenant: &str, name: &str, spec: &TriggerSpec) -> Result<(), ApiError> {
    let invalid = |message: String| ApiError::bad_request("InvalidTrigger", message);
    validate_trigger_name(name).map_err(|e| invalid(e.to_string()))?;
    spec.validate().map_err(|e| invalid(e.to_string()))?;
    let mut functions = vec![&spec.function];
    match &spec.delivery.dead_letter {
        Some(Sink::Function(f)) => functions.push(f),
        Some(Sink::Uri(uri)) => super::sink::check_url(uri).map_err(invalid)?,
        None => {}
    }
    for function in functions {
        if let Err(StoreError::NotFound(_)) = state.store.function(tenant, function).await {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "UnknownFunction",
                format!(
                    "function {function:?} does not exist in tenant {tenant:?}; deploy it before the trigger that names it"
                ),
            ));
        }
    }
    Ok(())
}

/// With Knative Eventing, applies a stored trigger as a Knative Trigger or PingSource. On a
/// refusal the trigger is saved anyway and the answer says so; applying it again (or a
/// restart) completes.
pub(crate) async fn apply_to_cluster(
    state: &AppState,
    tenant: &str,
    name: &str,
    spec: &TriggerSpec,
) -> Result<(), ApiError> {
    let Some(cluster) = state.cluster.as_ref().filter(|c| c.knative_eventing()) else {
        return Ok(());
    };
    cluster.apply_trigger(tenant, name, spec).await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "ClusterRefused",
            format!("trigger {name:?} is saved, but the cluster did not take it: {e}; fix the cause and apply the trigger again"),
        )
    })
}

/// `GET /v1/tenants/{t}/triggers`
pub(crate) async fn list_triggers(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    caller: Caller,
) -> Result<Json<TriggerList>, ApiError> {
    state
        .authorize(&caller, Action::ReadEvents, Some(&tenant))
        .await?;
    state.require_tenant(&tenant).await?;
    let triggers = state
        .store
        .triggers()
        .await?
        .into_iter()
        .filter(|t| t.tenant == tenant)
        .map(view)
        .collect();
    Ok(Json(TriggerList { triggers }))
}

/// `POST /v1/tenants/{t}/triggers`: 409 if the name is taken.
pub(crate) async fn create_trigger(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    caller: Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<TriggerView>), ApiError> {
    let principal = state
        .authorize(&caller, Action::ManageTriggers, Some(&tenant))
        .await?;
    let body: CreateTrigger = parse_json(&body)?;
    state.require_tenant(&tenant).await?;
    check(&state, &tenant, &body.name, &body.spec).await?;
    let record = state
        .store
        .create_trigger(&tenant, &body.name, &body.spec)
        .await?;
    state.events.triggers.reload(&state.store).await?;
    apply_to_cluster(&state, &tenant, &body.name, &body.spec).await?;
    tracing::info!(%tenant, trigger = %body.name, token = %principal.token_id, "trigger created");
    Ok((StatusCode::CREATED, Json(view(record))))
}

/// `PUT /v1/tenants/{t}/triggers/{name}`: creates (201) or replaces (200) it, for `kl apply`.
pub(crate) async fn put_trigger(
    State(state): State<Arc<AppState>>,
    Path((tenant, name)): Path<(String, String)>,
    caller: Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<TriggerView>), ApiError> {
    let principal = state
        .authorize(&caller, Action::ManageTriggers, Some(&tenant))
        .await?;
    let spec: TriggerSpec = parse_json(&body)?;
    state.require_tenant(&tenant).await?;
    check(&state, &tenant, &name, &spec).await?;
    let (record, created) = state.store.put_trigger(&tenant, &name, &spec).await?;
    state.events.triggers.reload(&state.store).await?;
    apply_to_cluster(&state, &tenant, &name, &spec).await?;
    tracing::info!(%tenant, trigger = %name, created, token = %principal.token_id, "trigger applied");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view(record))))
}

/// `GET /v1/tenants/{t}/triggers/{name}`
pub(crate) async fn describe_trigger(
    State(state): State<Arc<AppState>>,
    Path((tenant, name)): Path<(String, String)>,
    caller: Caller,
) -> Result<Json<TriggerView>, ApiError> {
    state
        .authorize(&caller, Action::ReadEvents, Some(&tenant))
        .await?;
    Ok(Json(view(state.store.trigger(&tenant, &name).await?)))
}

/// `DELETE /v1/tenants/{t}/triggers/{name}`: deliveries already queued for it are
/// dead-lettered when they come up ("trigger no longer exists").
pub(crate) async fn delete_trigger(
    State(state): State<Arc<AppState>>,
    Path((tenant, name)): Path<(String, String)>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    let principal = state
        .authorize(&caller, Action::ManageTriggers, Some(&tenant))
        .await?;
    // From the cluster first, as for a tenant: if it refuses, the trigger is kept.
    if let Some(cluster) = state.cluster.as_ref().filter(|c| c.knative_eventing()) {
        state.store.trigger(&tenant, &name).await?;
        cluster.delete_trigger(&tenant, &name).await.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "ClusterRefused",
                format!("trigger {name:?} is kept: the cluster did not delete it: {e}"),
            )
        })?;
    }
    if !state.store.delete_trigger(&tenant, &name).await? {
        return Err(ApiError::not_found(format!(
            "trigger {name:?} in tenant {tenant:?} not found"
        )));
    }
    state.events.triggers.reload(&state.store).await?;
    tracing::info!(%tenant, trigger = %name, token = %principal.token_id, "trigger deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record(name: &str, spec: serde_json::Value) -> TriggerRecord {
        TriggerRecord {
            tenant: "acme".into(),
            name: name.into(),
            spec: serde_json::from_value(spec).unwrap(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn registry(triggers: Vec<TriggerRecord>, knative: bool) -> TriggerRegistry {
        let registry = TriggerRegistry {
            by_tenant: ArcSwap::from_pointee(HashMap::new()),
            knative,
            changed: Notify::new(),
        };
        registry
            .by_tenant
            .store(Arc::new(HashMap::from([("acme".to_owned(), triggers.into())])));
        registry
    }

    #[test]
    fn fan_out_matches_filters_routes_commands_and_skips_schedules() {
        let r = registry(triggers(), false);
        let mut png = CloudEvent::new("com.example.created", "/s".into(), json!({}));
        png.subject = Some("a.png".into());
        let command = CloudEvent::new(kl_events::types::SERVICE_DELETE, "/s".into(), json!({}));
        let out = r.fan_out("acme", &[png.clone(), command]);
        assert_eq!(
            subscribers(&out),
            [
                ("com.example.created", "trigger:all"),
                ("com.example.created", "trigger:png"),
                (kl_events::types::SERVICE_DELETE, "command"),
                (kl_events::types::SERVICE_DELETE, "trigger:all"),
            ]
        );
        assert!(
            r.fan_out("globex", &[png]).is_empty(),
            "another tenant's triggers never match"
        );
        assert_eq!(r.schedules().len(), 1);
        assert_eq!(r.get("acme", "png").unwrap().name, "png");
        assert!(r.get("acme", "nope").is_none());
    }

    /// Each delivery as (event type, subscriber).
    fn subscribers(out: &[NewDelivery]) -> Vec<(&str, &str)> {
        out.iter()
            .map(|d| (d.event.ty.as_str(), d.subscriber.as_str()))
            .collect()
    }

    fn triggers() -> Vec<TriggerRecord> {
        vec![
            record("all", json!({"function": "f"})),
            record(
                "png",
                json!({"function": "f", "filters": [{"suffix": {"subject": ".png"}}]}),
            ),
            record("ping", json!({"function": "f", "schedule": "* * * * *"})),
        ]
    }

    #[test]
    fn with_knative_eventing_events_go_to_the_broker_once_and_pings_are_knatives() {
        let r = registry(triggers(), true);
        let png = CloudEvent::new("com.example.created", "/s".into(), json!({}));
        let command = CloudEvent::new(kl_events::types::SERVICE_DELETE, "/s".into(), json!({}));
        let out = r.fan_out("globex", &[png, command]);
        assert_eq!(
            subscribers(&out),
            [
                ("com.example.created", "knative-broker"),
                (kl_events::types::SERVICE_DELETE, "command"),
                (kl_events::types::SERVICE_DELETE, "knative-broker"),
            ],
            "every event goes to its tenant's Broker, which matches; commands are run here too"
        );
        assert!(r.schedules().is_empty(), "PingSources fire the schedules");
    }
}
