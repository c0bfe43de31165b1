//! A tenant's environments (`POST|GET /v1/tenants/{t}/environments`, `DELETE …/{name}`), each
//! run as the tenant `TENANT-ENV` with a share of its tenant's quotas and its own priority
//! class; and promotion (`POST …/functions/{f}/promote`), which serves the exact revision of
//! one environment (same artifact, no build) in another.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use bytes::Bytes;
use http::StatusCode;
use kl_api::{CreateEnvironment, EnvironmentList, EnvironmentView, Promote, Promoted};
use kl_core::{Action, EnvironmentSpec, TenantSpec, environment_spec, environment_tenant};
use kl_store::{EnvironmentRecord, RevisionAt, RevisionStatus};

use crate::auth::Caller;
use crate::error::{ApiError, parse_json};
use crate::state::AppState;

fn invalid(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("InvalidEnvironment", e.to_string())
}

/// `POST /v1/tenants/{t}/environments`.
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    caller: Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<EnvironmentView>), ApiError> {
    let principal = state
        .authorize(&caller, Action::ManageEnvironments, Some(&tenant))
        .await?;
    state.require_tenant(&tenant).await?;
    let request: CreateEnvironment = parse_json(&body)?;
    if state.store.environment_owner(&tenant).await?.is_some() {
        return Err(invalid(format!(
            "{tenant:?} is an environment; environments do not nest"
        )));
    }
    let runs_as = environment_tenant(&tenant, &request.name).map_err(invalid)?;
    let spec = EnvironmentSpec {
        share: request.share,
        priority: request.priority,
    };
    kl_core::environment::check_share(&tenant, [], spec.share).map_err(invalid)?;
    let parent = state.store.tenant(&tenant).await?.spec;
    let env_spec = environment_spec(&parent, &spec).map_err(invalid)?;
    let record = state
        .store
        .create_environment(&tenant, &request.name, &spec, &runs_as, &env_spec)
        .await?;
    state.apply_tenant(&runs_as, &env_spec);
    state.apply_tenant_to_cluster(&runs_as, &env_spec).await?;
    tracing::info!(%tenant, environment = %record.name, share = spec.share, token = %principal.token_id, "environment created");
    Ok((StatusCode::CREATED, Json(view(&state, record, &env_spec).await?)))
}

/// `GET /v1/tenants/{t}/environments`.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    caller: Caller,
) -> Result<Json<EnvironmentList>, ApiError> {
    state
        .authorize(&caller, Action::ReadTenant, Some(&tenant))
        .await?;
    state.require_tenant(&tenant).await?;
    let mut environments = Vec::new();
    for record in state.store.environments(&tenant).await? {
        let spec = state.store.tenant(&record.env_tenant).await?.spec;
        environments.push(view(&state, record, &spec).await?);
    }
    Ok(Json(EnvironmentList { environments }))
}

/// `DELETE /v1/tenants/{t}/environments/{name}`: only once it has no functions.
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    Path((tenant, name)): Path<(String, String)>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    let principal = state
        .authorize(&caller, Action::ManageEnvironments, Some(&tenant))
        .await?;
    let runs_as = environment_tenant(&tenant, &name).map_err(invalid)?;
    state
        .delete_tenant_from_cluster(&runs_as, &format!("environment {name:?}"))
        .await?;
    state.store.delete_environment(&tenant, &name).await?;
    state.egress.remove(&runs_as);
    tracing::info!(%tenant, environment = %name, token = %principal.token_id, "environment deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn view(
    state: &AppState,
    record: EnvironmentRecord,
    spec: &TenantSpec,
) -> Result<EnvironmentView, ApiError> {
    Ok(EnvironmentView {
        functions: state.store.function_count(&record.env_tenant).await?,
        name: record.name,
        runs_as: record.env_tenant,
        share: record.spec.share,
        priority: spec.priority,
        created_at: record.created_at,
    })
}

/// After a tenant's spec changed: its environments take their shares of the new one.
pub(crate) async fn follow_tenant(state: &AppState, tenant: &str, spec: &TenantSpec) -> Result<(), ApiError> {
    for env in state.store.environments(tenant).await? {
        // A class now above the tenant's falls back to the tenant's.
        let env_spec = environment_spec(spec, &env.spec).or_else(|_| {
            environment_spec(
                spec,
                &EnvironmentSpec {
                    priority: None,
                    ..env.spec
                },
            )
        });
        let env_spec = env_spec.map_err(invalid)?;
        state.store.update_tenant(&env.env_tenant, &env_spec).await?;
        state.apply_tenant(&env.env_tenant, &env_spec);
    }
    Ok(())
}

/// `POST /v1/tenants/{t}/functions/{f}/promote` (`{"from": ENV, "to": ENV}`): serves the
/// revision serving in `from` in `to`, as a new revision there with the same artifact.
pub(crate) async fn promote(
    State(state): State<Arc<AppState>>,
    Path((tenant, function)): Path<(String, String)>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<Promoted>, ApiError> {
    let principal = state.authorize(&caller, Action::Deploy, Some(&tenant)).await?;
    let request: Promote = parse_json(&body)?;
    let environments = state.store.environments(&tenant).await?;
    let find = |name: &str| {
        environments
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.env_tenant.clone())
            .ok_or_else(|| {
                ApiError::not_found(format!("environment {name:?} of tenant {tenant:?} not found"))
            })
    };
    let (from, to) = (find(&request.from)?, find(&request.to)?);
    if from == to {
        return Err(invalid("promote from one environment to another, not to itself"));
    }
    let source = state.store.function(&from, &function).await?;
    let number = source.serving_revision.ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "function {function:?} serves no revision in {:?} to promote",
                request.from
            ),
        )
    })?;
    let rev = state.store.revision(&from, &function, number).await?;
    let (Some(mut spec), Some(digest), RevisionStatus::Ready) =
        (rev.spec.clone(), rev.digest().map(str::to_owned), rev.status)
    else {
        return Err(ApiError::internal(format!(
            "the serving revision {} is not ready",
            rev.name()
        )));
    };
    // The target's own class: what the function asked for, within the target's.
    let target = state.store.tenant(&to).await?.spec;
    spec.priority =
        kl_core::PriorityClass::effective(target.priority, rev.settings.priority).unwrap_or(target.priority);
    crate::secrets::check_uses(&state, &to, &spec.secrets).await?;
    let copy = state
        .store
        .copy_revision(
            RevisionAt {
                tenant: &from,
                function: &function,
            },
            number,
            RevisionAt {
                tenant: &to,
                function: &function,
            },
            Some(&spec),
        )
        .await?;
    crate::deploy::link_artifact(&state, (&from, &function, number), (&to, &function, copy.number))
        .await
        .map_err(ApiError::internal)?;
    let changed = crate::deploy::serve_revision(&state, &to, &function, Some(copy.number)).await?;
    tracing::info!(%tenant, %function, from = %request.from, to = %request.to, revision = %changed.serving, %digest, token = %principal.token_id, "promoted");
    Ok(Json(Promoted {
        function,
        from_revision: rev.name(),
        revision: changed.serving,
        digest,
    }))
}
