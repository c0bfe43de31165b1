//! Reading and deleting functions and revisions.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use http::StatusCode;
use kl_api::{
    CrashLoopView, ExitView, FunctionDetail, FunctionList, FunctionView, InstanceView, RevisionState,
    RevisionView,
};
use kl_build::DOCKERFILE;
use kl_core::Action;
use kl_events::{lifecycle, types};
use kl_store::{FunctionRecord, RevisionRecord, RevisionStatus};
use object_store::ObjectStoreExt;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

pub(crate) fn revision_view(rev: &RevisionRecord, serving: Option<i64>) -> RevisionView {
    RevisionView {
        name: rev.name(),
        number: rev.number,
        state: match rev.status {
            RevisionStatus::Building => RevisionState::Building,
            RevisionStatus::Ready => RevisionState::Ready,
            RevisionStatus::Failed => RevisionState::Failed,
        },
        serving: serving == Some(rev.number),
        error: rev.error.clone(),
        build_ms: rev.build_ms,
        digest: rev.digest().map(str::to_owned),
        image: rev.image().map(str::to_owned),
        spec: rev.spec.clone(),
        created_at: rev.created_at,
        finished_at: rev.finished_at,
    }
}

async fn function_view(
    state: &AppState,
    f: &FunctionRecord,
) -> Result<(FunctionView, Vec<RevisionRecord>), ApiError> {
    let revisions = state.store.revisions(&f.tenant, &f.name).await?;
    let serving = f
        .serving_revision
        .and_then(|n| revisions.iter().find(|r| r.number == n));
    let instances_running = state
        .gateway
        .status(&f.tenant, &f.name)
        .map(|status| status.instances.len())
        .unwrap_or(0);
    let view = FunctionView {
        tenant: f.tenant.clone(),
        name: f.name.clone(),
        url: format!("/fn/{}/{}", f.tenant, f.name),
        runtime: serving
            .or(revisions.first())
            .and_then(|r| r.spec.as_ref())
            .map(|s| s.runtime),
        serving_revision: serving.map(RevisionRecord::name),
        latest_revision: revisions.first().map(|r| revision_view(r, f.serving_revision)),
        instances_running,
        updated_at: f.updated_at,
    };
    Ok((view, revisions))
}

/// `GET /v1/tenants/{t}/functions`
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    caller: Caller,
) -> Result<Json<FunctionList>, ApiError> {
    state
        .authorize(&caller, Action::ReadFunctions, Some(&tenant))
        .await?;
    state.require_tenant(&tenant).await?;
    list_functions(&state, Some(&tenant)).await
}

/// `GET /v1/functions`: every tenant's functions.
pub(crate) async fn list_all(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<FunctionList>, ApiError> {
    state.authorize(&caller, Action::ReadAllTenants, None).await?;
    list_functions(&state, None).await
}

async fn list_functions(state: &AppState, tenant: Option<&str>) -> Result<Json<FunctionList>, ApiError> {
    let mut functions = Vec::new();
    for f in state.store.functions(tenant).await? {
        functions.push(function_view(state, &f).await?.0);
    }
    Ok(Json(FunctionList { functions }))
}

/// `GET /v1/tenants/{t}/functions/{f}`
pub(crate) async fn describe(
    State(state): State<Arc<AppState>>,
    Path((tenant, function)): Path<(String, String)>,
    caller: Caller,
) -> Result<Json<FunctionDetail>, ApiError> {
    state
        .authorize(&caller, Action::ReadFunctions, Some(&tenant))
        .await?;
    let record = state.store.function(&tenant, &function).await?;
    let (view, revisions) = function_view(&state, &record).await?;
    let spec = record
        .serving_revision
        .and_then(|n| revisions.iter().find(|r| r.number == n))
        .and_then(|r| r.spec.clone());
    let status = state.gateway.status(&tenant, &function);
    let instances = status
        .iter()
        .flat_map(|s| {
            s.instances.iter().map(|i| InstanceView {
                id: i.id.clone(),
                revision: s.revision.clone(),
                pid: i.pid,
                in_flight: i.in_flight,
                started_at: i.started_at,
                startup_ms: i.startup_ms,
            })
        })
        .collect();
    let queued = status.as_ref().map_or(0, |s| s.queued);
    let scale = status.as_ref().and_then(|s| s.scale.as_ref());
    let (desired, panic) = (scale.map(|d| d.desired), scale.is_some_and(|d| d.panic));
    let crash_loop = status
        .as_ref()
        .and_then(|s| s.crash_loop.as_ref())
        .map(|c| CrashLoopView {
            failures: c.failures,
            last_error: c.last_error.clone(),
            retry_in_secs: c
                .until
                .saturating_duration_since(tokio::time::Instant::now())
                .as_secs(),
        });
    let last_exit = status.and_then(|s| s.last_exit).map(|e| ExitView {
        instance: e.instance,
        reason: e.reason,
        at: e.at,
    });
    Ok(Json(FunctionDetail {
        function: view,
        spec,
        revisions: revisions
            .iter()
            .map(|r| revision_view(r, record.serving_revision))
            .collect(),
        instances,
        queued,
        desired,
        panic,
        last_exit,
        crash_loop,
    }))
}

/// `GET /v1/tenants/{t}/functions/{f}/revisions/{n}`
pub(crate) async fn revision(
    State(state): State<Arc<AppState>>,
    Path((tenant, function, number)): Path<(String, String, i64)>,
    caller: Caller,
) -> Result<Json<RevisionView>, ApiError> {
    state
        .authorize(&caller, Action::ReadFunctions, Some(&tenant))
        .await?;
    let record = state.store.function(&tenant, &function).await?;
    let rev = state.store.revision(&tenant, &function, number).await?;
    Ok(Json(revision_view(&rev, record.serving_revision)))
}

/// `GET /v1/tenants/{t}/functions/{f}/revisions/{n}/dockerfile`
pub(crate) async fn dockerfile(
    State(state): State<Arc<AppState>>,
    Path((tenant, function, number)): Path<(String, String, i64)>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    state
        .authorize(&caller, Action::ReadFunctions, Some(&tenant))
        .await?;
    let rev = state.store.revision(&tenant, &function, number).await?;
    let found = match &state.cluster {
        None => {
            let path = state.layout.artifact(&tenant, &function, number).join(DOCKERFILE);
            tokio::fs::read_to_string(&path).await.ok()
        }
        Some(_) => context_dockerfile(&state, &rev).await,
    };
    match found {
        Some(text) => Ok(([(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], text)),
        None => Err(ApiError::new(
            StatusCode::CONFLICT,
            "NoDockerfile",
            format!(
                "revision {} has no Dockerfile (it is {})",
                rev.name(),
                rev.status.as_str()
            ),
        )),
    }
}

/// The Dockerfile in the build context a cluster build read (`--backend kubernetes`), if the
/// revision was built from one here (a promoted or rolled copy runs another's image).
async fn context_dockerfile(state: &AppState, rev: &RevisionRecord) -> Option<String> {
    let key = crate::objects::keys::context(&rev.tenant, &rev.function, rev.number);
    let packed = state
        .objects
        .get(&key.as_str().into())
        .await
        .ok()?
        .bytes()
        .await
        .ok()?;
    tokio::task::spawn_blocking(move || {
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&packed[..]));
        let mut entry = archive
            .entries()
            .ok()?
            .filter_map(Result::ok)
            .find(|e| e.path().is_ok_and(|p| p.as_os_str() == DOCKERFILE))?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut entry, &mut text).ok()?;
        Some(text)
    })
    .await
    .ok()
    .flatten()
}

/// `DELETE /v1/tenants/{t}/functions/{f}`: stops its instances and removes its revisions.
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    Path((tenant, function)): Path<(String, String)>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    let principal = state
        .authorize(&caller, Action::DeleteFunction, Some(&tenant))
        .await?;
    delete_function(&state, &tenant, &function).await?;
    tracing::info!(%tenant, %function, token = %principal.token_id, "function deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a function (404 if it does not exist): what the REST call and the
/// `command.service.delete` event share. Its triggers stay, as Knative's do when their
/// subscriber goes; their deliveries fail until a function of that name is deployed again.
pub(crate) async fn delete_function(state: &AppState, tenant: &str, function: &str) -> Result<(), ApiError> {
    // The cluster's objects first: if it refuses, the function is kept and a retry completes.
    if let Some(cluster) = &state.cluster {
        state.store.function(tenant, function).await?;
        cluster
            .delete_function(&state.gateway, tenant, function)
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "ClusterRefused",
                    format!("function {function:?} is kept: the cluster did not delete its objects: {e}"),
                )
            })?;
    }
    let existed = {
        let _promotion = state.promote.lock().await;
        let existed = state.store.delete_function(tenant, function).await?;
        state.gateway.remove(tenant, function);
        existed
    };
    if !existed {
        return Err(ApiError::not_found(format!(
            "function {function:?} in tenant {tenant:?} not found"
        )));
    }
    let _ = tokio::fs::remove_dir_all(state.layout.function_artifacts(tenant, function)).await;
    let event = lifecycle(
        types::FUNCTION_DELETED,
        tenant,
        function,
        function,
        serde_json::json!({}),
    );
    state.events.emit(tenant, event).await;
    Ok(())
}
