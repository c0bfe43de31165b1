//! The cost API: `GET /v1/cost/report` and `GET /v1/tenants/{tenant}/cost`, with OpenCost's
//! `window`, `aggregate` and `step` parameters. Platform roles see every tenant, with idle
//! capacity on rows of its own; a tenant role sees only its own tenant, whatever it asks.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use chrono::Utc;
use kl_core::{Action, CapacitySpan, Dimension, Minute, Report, ReportRequest, Step, Window};
use serde::Deserialize;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// The query of both routes.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ReportQuery {
    /// OpenCost's window grammar (`today`, `month`, `7d`, `2026-11-01,2026-12-01`); default
    /// `month`.
    window: Option<String>,
    /// Comma-separated dimensions (`tenant`, `function`, `day`, `resource`); default `tenant`
    /// across tenants, `function` for one.
    aggregate: Option<String>,
    /// `day`, `week`, `month` or a duration (`1h`); one part when absent.
    step: Option<String>,
    /// Only this tenant (platform roles); a tenant role's own tenant regardless.
    tenant: Option<String>,
}

/// `GET /v1/cost/report`.
pub(crate) async fn report(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(query): Query<ReportQuery>,
) -> Result<Json<Report>, ApiError> {
    let own = caller.principal.as_ref().and_then(|p| p.tenant.clone());
    let tenant = match query.tenant.clone().or(own) {
        Some(tenant) => {
            state
                .authorize(&caller, Action::ReadTenant, Some(&tenant))
                .await?;
            Some(tenant)
        }
        None => {
            state.authorize(&caller, Action::ReadAllTenants, None).await?;
            None
        }
    };
    build(&state, &query, tenant).await.map(Json)
}

/// `GET /v1/tenants/{tenant}/cost`.
pub(crate) async fn tenant_report(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    caller: Caller,
    Query(query): Query<ReportQuery>,
) -> Result<Json<Report>, ApiError> {
    state
        .authorize(&caller, Action::ReadTenant, Some(&tenant))
        .await?;
    state.require_tenant(&tenant).await?;
    build(&state, &query, Some(tenant)).await.map(Json)
}

async fn build(state: &AppState, query: &ReportQuery, tenant: Option<String>) -> Result<Report, ApiError> {
    let now = Utc::now();
    let window = Window::parse(query.window.as_deref().unwrap_or("month"), now)
        .map_err(|e| ApiError::bad_request("InvalidWindow", e.to_string()))?;
    let step = query
        .step
        .as_deref()
        .map(str::parse::<Step>)
        .transpose()
        .map_err(|e| ApiError::bad_request("InvalidStep", e.to_string()))?;
    let default_aggregate = if tenant.is_some() { "function" } else { "tenant" };
    let aggregate = Dimension::parse_list(query.aggregate.as_deref().unwrap_or(default_aggregate))
        .map_err(|e| ApiError::bad_request("InvalidAggregate", e.to_string()))?;
    // Buckets are keyed by the minute they start; the report keeps those the window holds.
    let last = Minute::of(window.end()).index().saturating_add(1);
    let to = Minute::from_index(last).unwrap_or(Minute::of(window.end()));
    let buckets = state
        .store
        .usage_buckets(Minute::of(window.start()), to, tenant.as_deref())
        .await?;
    let capacity = match tenant {
        Some(_) => Vec::new(),
        None => capacity(state, &window, now).await?,
    };
    let request = ReportRequest {
        window,
        step,
        aggregate,
        tenant,
        capacity,
    };
    kl_core::report(&buckets, &state.config.metering.rates, &request)
        .map_err(|e| ApiError::bad_request("InvalidReport", e.to_string()))
}

/// The node's capacity over the part of `window` the platform has metered: from its first
/// stored usage to now. (Time the server was down inside that span counts as idle.)
async fn capacity(
    state: &AppState,
    window: &Window,
    now: chrono::DateTime<Utc>,
) -> Result<Vec<CapacitySpan>, ApiError> {
    let Some(first) = state.store.first_usage_minute().await? else {
        return Ok(Vec::new());
    };
    let metered = Window::new(
        first.start(),
        now.max(first.start() + chrono::Duration::minutes(1)),
    )
    .map_err(ApiError::internal)?;
    Ok(window
        .intersect(&metered)
        .map(|window| CapacitySpan {
            window,
            resources: state.config.metering.node,
        })
        .into_iter()
        .collect())
}
