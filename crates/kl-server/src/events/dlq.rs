//! A tenant's dead letters: `GET /v1/tenants/{t}/dlq`, `GET …/dlq/{id}` and
//! `POST …/dlq/{id}/replay`, which queues the delivery again, once, from its first attempt.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use http::StatusCode;
use kl_api::{DeadLetterList, DeadLetterView};
use kl_core::Action;
use kl_events::DeadLetter;
use serde::Deserialize;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub(crate) struct DlqQuery {
    /// The oldest N (default 100, at most 10,000).
    limit: Option<usize>,
}

fn view(d: DeadLetter) -> DeadLetterView {
    DeadLetterView {
        id: d.id,
        subscriber: d.subscriber,
        event: d.event,
        attempt: d.attempt,
        reason: d.reason,
        enqueued_at: d.enqueued_at,
        dead_at: d.dead_at,
    }
}

/// `GET /v1/tenants/{t}/dlq[?limit=N]`: oldest first.
pub(crate) async fn list_dead_letters(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    Query(query): Query<DlqQuery>,
    caller: Caller,
) -> Result<Json<DeadLetterList>, ApiError> {
    state
        .authorize(&caller, Action::ReadEvents, Some(&tenant))
        .await?;
    state.require_tenant(&tenant).await?;
    let limit = query.limit.unwrap_or(100).min(10_000);
    let letters = state.events.broker.dead_letters(&tenant, limit).await?;
    Ok(Json(DeadLetterList {
        dead_letters: letters.into_iter().map(view).collect(),
    }))
}

/// `GET /v1/tenants/{t}/dlq/{id}`
pub(crate) async fn show_dead_letter(
    State(state): State<Arc<AppState>>,
    Path((tenant, id)): Path<(String, String)>,
    caller: Caller,
) -> Result<Json<DeadLetterView>, ApiError> {
    state
        .authorize(&caller, Action::ReadEvents, Some(&tenant))
        .await?;
    match state.events.broker.find_dead_letter(&tenant, &id).await? {
        Some(letter) => Ok(Json(view(letter))),
        None => Err(ApiError::not_found(format!(
            "dead letter {id:?} not found in tenant {tenant:?}"
        ))),
    }
}

/// `POST /v1/tenants/{t}/dlq/{id}/replay`: 404 once replayed (it is no longer a dead letter).
pub(crate) async fn replay_dead_letter(
    State(state): State<Arc<AppState>>,
    Path((tenant, id)): Path<(String, String)>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    let principal = state
        .authorize(&caller, Action::PublishEvents, Some(&tenant))
        .await?;
    state.events.broker.replay(&tenant, &id).await?;
    tracing::info!(%tenant, delivery = %id, token = %principal.token_id, "dead letter replayed");
    Ok(StatusCode::NO_CONTENT)
}
