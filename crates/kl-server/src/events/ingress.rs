//! `POST /v1/events` (the caller's tenant; `default` for platform tokens) and
//! `POST /v1/tenants/{t}/events`: the CloudEvents HTTP binding in binary, structured and batch
//! modes. Every event is validated before anything is queued (a batch is all-or-nothing); a
//! command event also needs its REST twin's role and must name a source that exists.
//!
//! Idempotency: an event whose (source, id) the tenant had accepted within the window is
//! acknowledged as a duplicate and not queued again. The check runs before the enqueue and
//! the record after it, so a crash between the two can let a retry through (delivered twice,
//! which at-least-once allows), never lose an event.

use std::collections::HashSet;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use chrono::Utc;
use http::{HeaderMap, StatusCode};
use kl_api::EventsAccepted;
use kl_core::Action;
use kl_events::CloudEvent;
use kl_events::http_binding::parse_request;
use kl_store::EventId;
use object_store::ObjectStoreExt;

use super::commands::Command;
use super::{Events, is_command};
use crate::auth::Caller;
use crate::deploy::read_limited;
use crate::error::ApiError;
use crate::state::AppState;

/// `POST /v1/events`: into the caller's own tenant.
pub(crate) async fn ingest_own(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<EventsAccepted>), ApiError> {
    let tenant = caller
        .principal
        .as_ref()
        .and_then(|p| p.tenant.clone())
        .unwrap_or_else(|| "default".to_owned());
    accept(&state, &caller, &tenant, &headers, body).await
}

/// `POST /v1/tenants/{t}/events`
pub(crate) async fn ingest(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<EventsAccepted>), ApiError> {
    accept(&state, &caller, &tenant, &headers, body).await
}

async fn accept(
    state: &AppState,
    caller: &Caller,
    tenant: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<EventsAccepted>), ApiError> {
    state
        .authorize(caller, Action::PublishEvents, Some(tenant))
        .await?;
    state.require_tenant(tenant).await?;
    let limits = state.config.event_limits;
    let body = read_limited(body, limits.max_batch_bytes.max(limits.max_event_bytes)).await?;
    let events = parse_request(headers, body, &limits)?;
    check_commands(state, caller, tenant, &events).await?;
    let accepted = state
        .events
        .ingest(tenant, events, state.config.dedupe_window)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// Every command of the request is one this server runs, with what it needs, sent by a caller
/// allowed to run it.
async fn check_commands(
    state: &AppState,
    caller: &Caller,
    tenant: &str,
    events: &[CloudEvent],
) -> Result<(), ApiError> {
    let batch = events.len() > 1;
    for (index, event) in events.iter().enumerate().filter(|(_, e)| is_command(e)) {
        let at = |m: String| {
            if batch {
                format!("event {index} of the batch: {m}")
            } else {
                m
            }
        };
        let command =
            Command::parse(tenant, event).map_err(|m| ApiError::bad_request("InvalidCommand", at(m)))?;
        state.authorize(caller, command.action(), Some(tenant)).await?;
        if let Some(source) = command.source()
            && let Err(object_store::Error::NotFound { .. }) = state.objects.head(&source.into()).await
        {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "SourceNotFound",
                at(format!(
                    "source {source:?} is not in the object store; upload it first (kl events upload)"
                )),
            ));
        }
    }
    Ok(())
}

impl Events {
    /// Queues the events of one request that are not repeats, all in one broker batch.
    pub async fn ingest(
        &self,
        tenant: &str,
        events: Vec<CloudEvent>,
        window: std::time::Duration,
    ) -> Result<EventsAccepted, ApiError> {
        let keys: Vec<EventId> = events.iter().map(|e| (e.source.clone(), e.id.clone())).collect();
        let _held = self.lock_keys(tenant, &keys).await;
        let since = Utc::now() - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
        let seen = self.store.accepted_events(tenant, &keys, since).await?;
        // A repeat within the request counts as a duplicate too.
        let mut fresh_keys = HashSet::new();
        let fresh: Vec<CloudEvent> = events
            .into_iter()
            .zip(&keys)
            .filter(|(_, key)| !seen.contains(*key) && fresh_keys.insert((*key).clone()))
            .map(|(event, _)| event)
            .collect();
        let duplicates = keys.len() - fresh.len();
        let accepted = fresh.len();
        self.publish(tenant, fresh, Vec::new()).await?;
        let fresh_keys: Vec<EventId> = fresh_keys.into_iter().collect();
        if let Err(e) = self.store.record_accepted(tenant, &fresh_keys, Utc::now()).await {
            tracing::error!(%tenant, error = %e, "accepted events were not recorded: a producer's retry may be delivered twice");
        }
        Ok(EventsAccepted { accepted, duplicates })
    }
}
