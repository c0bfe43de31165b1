//! Deploys: upload and validate a source archive, create a revision, build it in the
//! background, prove it serves, then switch traffic; switch traffic back to an older revision
//! (rollback). Also restores routes after a restart.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use kl_api::{DeployAccepted, Rollback, ServingChanged};
use kl_build::{BuildInput, BuildLog, LAUNCH_FILE};
use kl_core::{Action, FunctionSettings, Launch, Quota, admit, validate_function_name};
use kl_events::{lifecycle, types};
use kl_gateway::RevisionTarget;
use kl_store::{RevisionRecord, RevisionStatus, revision_name};
use object_store::ObjectStoreExt;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use crate::ServerError;
use crate::auth::Caller;
use crate::cluster::Cluster;
use crate::error::{ApiError, parse_json};
use crate::quota::BuildClaim;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub(crate) struct UploadQuery {
    /// Deploy settings as JSON ([`FunctionSettings`]); they win over `kl.yaml`.
    options: Option<String>,
}

/// `PUT /v1/tenants/{t}/functions/{f}/source`: body is a `.tar.gz`, `.tar` or `.zip`.
pub(crate) async fn upload(
    State(state): State<Arc<AppState>>,
    Path((tenant, function)): Path<(String, String)>,
    Query(query): Query<UploadQuery>,
    caller: Caller,
    body: Body,
) -> Result<(StatusCode, Json<DeployAccepted>), ApiError> {
    let principal = state.authorize(&caller, Action::Deploy, Some(&tenant)).await?;
    validate_function_name(&function).map_err(|e| ApiError::bad_request("InvalidName", e.to_string()))?;
    state.require_tenant(&tenant).await?;
    let settings: FunctionSettings = match &query.options {
        Some(json) => serde_json::from_str(json).map_err(|e| {
            ApiError::bad_request("InvalidOptions", format!("deploy options are invalid: {e}"))
        })?,
        None => FunctionSettings::default(),
    };
    let archive = read_limited(body, state.config.max_upload_bytes).await?;
    let accepted = deploy_archive(&state, &tenant, &function, settings, archive).await?;
    tracing::info!(%tenant, %function, revision = %accepted.revision, token = %principal.token_id, "deploy accepted");
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// Deploys a source archive (an upload, or an object a command event names): validates it,
/// creates the revision and starts its build in the background. What the REST upload and
/// `command.build.start` share, after their own authorization.
pub(crate) async fn deploy_archive(
    state: &Arc<AppState>,
    tenant: &str,
    function: &str,
    settings: FunctionSettings,
    archive: Bytes,
) -> Result<DeployAccepted, ApiError> {
    validate_function_name(function).map_err(|e| ApiError::bad_request("InvalidName", e.to_string()))?;
    let (tenant_spec, limits) = state.tenant_limits(tenant).await?;
    // Its environments hold shares of its quotas: new functions go to one of them, so that
    // together they never hold more than the tenant.
    if !state.store.environments(tenant).await?.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "TenantHasEnvironments",
            format!("tenant {tenant:?} has environments: deploy to one of them (kl deploy --env-name ENV)"),
        ));
    }
    let digest = hex::encode(Sha256::digest(&archive));
    let staging = tempfile::Builder::new()
        .prefix("upload-")
        .tempdir_in(state.layout.staging())?;
    unpack(state, archive.clone(), &staging).await?;
    // Fail fast on what can be known before building: language, kl.yaml, limits.
    let root = kl_build::source_root(staging.path())?;
    let spec = state.builder.resolve(&root, &settings, &limits)?;
    crate::secrets::check_uses(state, tenant, &spec.secrets).await?;
    // Hard quotas before the build slot, so a deploy that cannot succeed answers 403, not 429.
    // (The store admits them again, atomically, when it creates the revision.)
    if state.store.function(tenant, function).await.is_err() {
        let used = state.store.function_count(tenant).await?;
        admit(
            tenant,
            Quota::Functions,
            used,
            1,
            tenant_spec.quotas.functions.into(),
        )?;
    }
    let claim = state
        .tenant_builds
        .claim(tenant, Some(tenant_spec.quotas.concurrent_builds))?;
    let source_bytes = archive.len() as u64;
    let key = crate::objects::keys::source(tenant, function, &digest);
    // The revision first: it admits the functions and storage quotas, and a refused deploy
    // must store nothing.
    let rev = state
        .store
        .create_revision(tenant, function, &settings, &key, &digest, source_bytes)
        .await?;
    if let Err(e) = state.objects.put(&key.as_str().into(), archive.into()).await {
        let message = format!("could not store the source: {e}");
        let _ = state
            .store
            .finish_revision(tenant, function, rev.number, Err(&message), 0)
            .await;
        return Err(ApiError::internal(message));
    }
    let accepted = DeployAccepted {
        tenant: tenant.to_owned(),
        function: function.to_owned(),
        revision: rev.name(),
        number: rev.number,
    };
    tokio::spawn(build_job(state.clone(), rev, Some(staging), claim));
    Ok(accepted)
}

/// Reads a request body, refusing (413) more than `limit` bytes.
pub(crate) async fn read_limited(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            format!("the request body is larger than the limit of {limit} bytes"),
        )),
        Err(e) => Err(ApiError::bad_request(
            "BadRequest",
            format!("could not read the request body: {e}"),
        )),
    }
}

async fn unpack(state: &AppState, archive: Bytes, into: &TempDir) -> Result<(), ApiError> {
    let dest = into.path().to_path_buf();
    let limits = state.config.unpack;
    tokio::task::spawn_blocking(move || kl_build::unpack(&archive, &dest, limits))
        .await
        .map_err(ApiError::internal)??;
    Ok(())
}

/// Builds a revision, proves it serves, and switches traffic to it. Never fails loudly: the
/// outcome is recorded on the revision, in its build log and as lifecycle events.
pub(crate) async fn build_job(
    state: Arc<AppState>,
    rev: RevisionRecord,
    staging: Option<TempDir>,
    claim: BuildClaim,
) {
    let name = rev.name();
    let tenant = state
        .store
        .tenant(&rev.tenant)
        .await
        .map(|t| t.spec)
        .unwrap_or_default();
    let slot = state
        .builds
        .acquire(&rev.tenant, tenant.priority, tenant.weight)
        .await;
    let started = Instant::now();
    let event = |ty: &str, data: serde_json::Value| lifecycle(ty, &rev.tenant, &rev.function, &name, data);
    let emit = |event| state.events.emit(&rev.tenant, event);
    emit(event(
        types::BUILD_STARTED,
        json!({"revision": name, "number": rev.number}),
    ))
    .await;
    let log_path = state.layout.build_log(&rev.tenant, &rev.function, rev.number);
    let outcome = match open_log(&log_path) {
        Ok(log) => {
            log.line(&format!("building {name}"));
            let result = build_and_promote(&state, &rev, staging, &log, started).await;
            match &result {
                Ok(_) => log.line(&format!(
                    "revision {name} is ready ({} ms)",
                    started.elapsed().as_millis()
                )),
                // The full error ends with the log's own tail; don't write that twice.
                Err(e) => log.line(&format!("build failed: {}", e.lines().next().unwrap_or_default())),
            }
            result
        }
        Err(e) => Err(format!("cannot write the build log: {e}")),
    };
    let ms = started.elapsed().as_millis() as u64;
    // The build's quota claim and slot are free before its end is announced, so a client that
    // deploys again on `function.ready` or `build.failed` is not refused.
    drop((slot, claim));
    match outcome {
        Ok(built) => {
            tracing::info!(revision = %name, ms, digest = %built.digest, "revision ready");
            emit(event(
                types::BUILD_COMPLETED,
                json!({"revision": name, "digest": built.digest, "durationMs": ms, "depsCached": built.deps_cached}),
            ))
            .await;
            emit(event(types::FUNCTION_READY, json!({"revision": name}))).await;
        }
        Err(error) => {
            tracing::warn!(revision = %name, %error, "build failed");
            let recorded = state
                .store
                .finish_revision(&rev.tenant, &rev.function, rev.number, Err(&error), ms)
                .await;
            if let Err(e) = recorded {
                tracing::error!(revision = %name, error = %e, "cannot record the failed build");
            }
            let _ = tokio::fs::remove_dir_all(state.layout.artifact(&rev.tenant, &rev.function, rev.number))
                .await;
            emit(event(
                types::BUILD_FAILED,
                json!({"revision": name, "error": error, "durationMs": ms}),
            ))
            .await;
        }
    }
}

fn open_log(path: &std::path::Path) -> std::io::Result<BuildLog> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let _ = std::fs::remove_file(path);
    BuildLog::create(path)
}

/// What a successful build reports in `lifecycle.build.completed`.
struct Built {
    /// The artifact's content digest, or the pushed image's digest for a cluster build.
    digest: String,
    /// Whether the dependency layer came from the cache; unknown for a cluster build.
    deps_cached: Option<bool>,
}

async fn build_and_promote(
    state: &Arc<AppState>,
    rev: &RevisionRecord,
    staging: Option<TempDir>,
    log: &BuildLog,
    started: Instant,
) -> Result<Built, String> {
    let staging = match staging {
        Some(dir) => dir,
        None => fetch_source(state, rev).await.map_err(|e| e.message)?,
    };
    if let Some(cluster) = &state.cluster {
        return build_in_cluster(state, cluster, rev, staging, log, started).await;
    }
    let out = state.layout.artifact(&rev.tenant, &rev.function, rev.number);
    let _ = tokio::fs::remove_dir_all(&out).await;
    let (_, limits) = state.tenant_limits(&rev.tenant).await.map_err(|e| e.message)?;
    let input = BuildInput {
        source: staging.path(),
        out: &out,
        settings: &rev.settings,
        source_digest: &rev.source_digest,
        limits: &limits,
        log,
    };
    let limit = state.config.build_timeout;
    let built = tokio::time::timeout(limit, state.builder.build(input)).await;
    crate::cost::record_build(state, &rev.tenant, &rev.function, started.elapsed(), log.cpu()).await;
    let artifact = built
        .map_err(|_| format!("the build did not finish within {}s", limit.as_secs()))?
        .map_err(|e| e.to_string())?;
    drop(staging);
    store_container_context(state, rev, &out).await;
    log.line("starting an instance (readiness check)");
    let target = target(state, rev, artifact.spec.clone(), artifact.launch.clone())
        .await
        .map_err(|e| e.to_string())?;
    let prepared = state
        .gateway
        .prepare(target)
        .await
        .map_err(|e| format!("the function did not start: {e}"))?;
    let _promotion = state.promote.lock().await;
    let serve = takes_traffic(state, rev).await?;
    // Routed before the store says "ready": whoever sees it ready (`kl deploy` polls for it)
    // and calls at once must reach this revision, not the one it replaces.
    if serve {
        state.gateway.install(prepared);
    } else {
        log.line("a newer revision already serves; this one stays available but takes no traffic");
        prepared.discard().await;
    }
    record_ready(state, rev, (&artifact.spec, &artifact.digest), started, serve).await?;
    Ok(Built {
        digest: artifact.digest,
        deps_cached: Some(artifact.deps_cached),
    })
}

/// Whether a just-built revision takes the traffic: unless a newer one already serves.
async fn takes_traffic(state: &AppState, rev: &RevisionRecord) -> Result<bool, String> {
    let current = state
        .store
        .function(&rev.tenant, &rev.function)
        .await
        .map_err(|_| "the function was deleted during the build".to_owned())?;
    Ok(current
        .serving_revision
        .is_none_or(|serving| serving <= rev.number))
}

/// Marks a built revision ready with its spec and digest, and serving when it `serve`s.
async fn record_ready(
    state: &AppState,
    rev: &RevisionRecord,
    built: (&kl_core::FunctionSpec, &str),
    started: Instant,
    serve: bool,
) -> Result<(), String> {
    let store = &state.store;
    let ms = started.elapsed().as_millis() as u64;
    store
        .finish_revision(&rev.tenant, &rev.function, rev.number, Ok(built), ms)
        .await
        .map_err(|e| e.to_string())?;
    if serve {
        store
            .set_serving(&rev.tenant, &rev.function, rev.number)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The Kubernetes backend's build: the context packed straight from the source (no toolchain
/// runs here), a Kaniko Job, then the Knative Service, routed once Knative reports it ready.
/// A newer revision already serving keeps the Service: this one is recorded ready, unapplied.
async fn build_in_cluster(
    state: &Arc<AppState>,
    cluster: &Cluster,
    rev: &RevisionRecord,
    staging: TempDir,
    log: &BuildLog,
    started: Instant,
) -> Result<Built, String> {
    let (_, limits) = state.tenant_limits(&rev.tenant).await.map_err(|e| e.message)?;
    let root = kl_build::source_root(staging.path()).map_err(|e| e.to_string())?;
    let spec = state
        .builder
        .resolve(&root, &rev.settings, &limits)
        .map_err(|e| e.to_string())?;
    log.line(&format!("runtime {}, handler {}", spec.runtime, spec.handler));
    let context = kl_build::source_context(&root, &spec)
        .await
        .map_err(|e| e.to_string())?;
    drop(staging);
    let key = crate::objects::keys::context(&rev.tenant, &rev.function, rev.number);
    state
        .objects
        .put(&key.as_str().into(), context.into())
        .await
        .map_err(|e| format!("could not store the build context: {e}"))?;
    let built = cluster
        .build(rev, spec.runtime, &key, state.config.build_timeout, log)
        .await;
    crate::cost::record_build(state, &rev.tenant, &rev.function, started.elapsed(), log.cpu()).await;
    let pushed = built.map_err(|e| e.to_string())?;
    log.line(&format!("pushed {}", pushed.image));
    let serve = takes_traffic(state, rev).await?;
    if serve {
        log.line("applying the Knative Service; waiting for Knative to route all traffic to it");
        roll_out(state, cluster, rev, &spec, &pushed.image).await?;
    } else {
        log.line("a newer revision already serves; this one is built but its Service is not applied");
    }
    // The artifact is the image: by digest, in the repository it was pushed to, so a copy in
    // another tenant (a promotion) runs it from there.
    record_ready(state, rev, (&spec, &pushed.image), started, serve).await?;
    Ok(Built {
        digest: pushed.digest,
        deps_cached: None,
    })
}

/// Makes Knative serve `rev` (running `image`) and routes the function to its Service once
/// it takes all traffic. The caller records it as serving.
async fn roll_out(
    state: &AppState,
    cluster: &Cluster,
    rev: &RevisionRecord,
    spec: &kl_core::FunctionSpec,
    image: &str,
) -> Result<(), String> {
    let secrets = if spec.secrets.is_empty() {
        Default::default()
    } else {
        crate::secrets::RevisionSecrets {
            store: state.store.clone(),
            vault: state.vault.clone(),
            tenant: rev.tenant.clone(),
            uses: spec.secrets.clone(),
        }
        .open()
        .await?
    };
    let previous = state
        .store
        .function(&rev.tenant, &rev.function)
        .await
        .map_err(|e| e.to_string())?
        .serving_revision;
    let url = cluster
        .serve(rev, spec, image, &secrets, previous)
        .await
        .map_err(|e| e.to_string())?;
    let _promotion = state.promote.lock().await;
    cluster.route(&state.gateway, &rev.tenant, &rev.function, url, spec);
    Ok(())
}

/// Re-reads a revision's source from the object store (re-queued builds after a restart).
async fn fetch_source(state: &AppState, rev: &RevisionRecord) -> Result<TempDir, ApiError> {
    let archive = state
        .objects
        .get(&rev.source_key.as_str().into())
        .await?
        .bytes()
        .await?;
    let staging = tempfile::Builder::new()
        .prefix("rebuild-")
        .tempdir_in(state.layout.staging())?;
    unpack(state, archive, &staging).await?;
    Ok(staging)
}

/// Stores the Kaniko build context (source, shim, Dockerfile) next to the source.
async fn store_container_context(state: &AppState, rev: &RevisionRecord, out: &std::path::Path) {
    let dir = out.to_path_buf();
    let packed = tokio::task::spawn_blocking(move || kl_build::container_context(&dir)).await;
    let key = crate::objects::keys::context(&rev.tenant, &rev.function, rev.number);
    let stored = match packed {
        Ok(Ok(bytes)) => state
            .objects
            .put(&key.as_str().into(), bytes.into())
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = stored {
        tracing::warn!(revision = %rev.name(), error = %e, "cannot store the container build context");
    }
}

/// Makes a copied revision use the built artifact of the revision it copies: its artifact
/// folder is a link to that one's (resolved, so links never chain). On the Kubernetes backend
/// the artifact is the image the copied record names: nothing to link.
pub(crate) async fn link_artifact(
    state: &AppState,
    (tenant, function, number): (&str, &str, i64),
    to: (&str, &str, i64),
) -> Result<(), String> {
    if state.cluster.is_some() {
        return Ok(());
    }
    let source = tokio::fs::canonicalize(state.layout.artifact(tenant, function, number))
        .await
        .map_err(|e| format!("the artifact of {} is gone: {e}", revision_name(function, number)))?;
    let link = state.layout.artifact(to.0, to.1, to.2);
    if let Some(parent) = link.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let _ = tokio::fs::remove_file(&link).await;
    tokio::fs::symlink(&source, &link)
        .await
        .map_err(|e| format!("cannot link {}: {e}", link.display()))
}

/// The gateway's view of a revision.
pub(crate) async fn target(
    state: &AppState,
    rev: &RevisionRecord,
    spec: kl_core::FunctionSpec,
    launch: Launch,
) -> Result<RevisionTarget, String> {
    let log_path = state.layout.function_log(&rev.tenant, &rev.function);
    if let Some(parent) = log_path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let tenant = state.store.tenant(&rev.tenant).await.map_err(|e| e.to_string())?;
    let secrets = (!spec.secrets.is_empty()).then(|| {
        Arc::new(crate::secrets::RevisionSecrets {
            store: state.store.clone(),
            vault: state.vault.clone(),
            tenant: rev.tenant.clone(),
            uses: spec.secrets.clone(),
        }) as Arc<dyn kl_runtime::SecretSource>
    });
    Ok(RevisionTarget {
        tenant: rev.tenant.clone(),
        function: rev.function.clone(),
        revision: rev.name(),
        spec,
        launch,
        log_path,
        uid: tenant.uid,
        egress_socket: state.egress.socket(&rev.tenant),
        secrets,
    })
}

/// After a restart: routes every function to its serving revision (instances start on
/// demand) and re-queues builds that were interrupted.
pub(crate) async fn restore(state: &Arc<AppState>) -> Result<(), ServerError> {
    if let Ok(entries) = std::fs::read_dir(state.layout.run_dir()) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let mut restored = 0;
    for function in state.store.functions(None).await? {
        let Some(number) = function.serving_revision else {
            continue;
        };
        let rev = state
            .store
            .revision(&function.tenant, &function.name, number)
            .await?;
        match restore_route(state, &rev).await {
            Ok(()) => restored += 1,
            Err(e) => {
                tracing::error!(revision = %rev.name(), error = %e, "cannot restore the serving revision")
            }
        }
    }
    let requeued = state.store.building_revisions().await?;
    for rev in &requeued {
        if rev.status == RevisionStatus::Building {
            let claim = state
                .tenant_builds
                .claim(&rev.tenant, None)
                .expect("unbounded claims succeed");
            tokio::spawn(build_job(state.clone(), rev.clone(), None, claim));
        }
    }
    tracing::info!(restored, requeued = requeued.len(), "restored functions");
    Ok(())
}

/// Routes a function to its serving revision again: here, or at its Knative Service's URL.
async fn restore_route(state: &AppState, rev: &RevisionRecord) -> Result<(), String> {
    let Some(cluster) = &state.cluster else {
        state.gateway.restore(restore_target(state, rev).await?);
        return Ok(());
    };
    let spec = rev.spec.as_ref().ok_or("the revision has no spec")?;
    let url = cluster
        .url(&rev.tenant, &rev.function)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("its Knative Service has no URL")?;
    cluster.route(&state.gateway, &rev.tenant, &rev.function, url, spec);
    Ok(())
}

async fn restore_target(state: &AppState, rev: &RevisionRecord) -> Result<RevisionTarget, String> {
    let spec = rev.spec.clone().ok_or("the revision has no spec")?;
    let launch_path = state
        .layout
        .artifact(&rev.tenant, &rev.function, rev.number)
        .join(LAUNCH_FILE);
    let launch = tokio::fs::read(&launch_path)
        .await
        .map_err(|e| format!("{}: {e}", launch_path.display()))?;
    let launch: Launch = serde_json::from_slice(&launch).map_err(|e| e.to_string())?;
    target(state, rev, spec, launch).await
}

/// Serves a ready revision of a function: `revision`, or without it the newest ready revision
/// older than the serving one (a rollback). Like a build's promotion, the revision must first
/// answer its readiness check; the old one drains. What `POST …/rollback` and the
/// `command.function.{deploy,rollback}` events share.
pub(crate) async fn serve_revision(
    state: &Arc<AppState>,
    tenant: &str,
    function: &str,
    revision: Option<i64>,
) -> Result<ServingChanged, ApiError> {
    let record = state.store.function(tenant, function).await?;
    let revisions = state.store.revisions(tenant, function).await?;
    let conflict = |m: String| ApiError::new(StatusCode::CONFLICT, "Conflict", m);
    let rev = match revision {
        Some(n) => revisions.iter().find(|r| r.number == n).ok_or_else(|| {
            ApiError::not_found(format!("revision {} not found", revision_name(function, n)))
        })?,
        None => {
            let serving = record.serving_revision.ok_or_else(|| {
                conflict(format!(
                    "function {function:?} serves no revision to roll back from"
                ))
            })?;
            revisions
                .iter()
                .find(|r| r.number < serving && r.status == RevisionStatus::Ready)
                .ok_or_else(|| {
                    conflict(format!(
                        "function {function:?} has no ready revision older than {} to roll back to",
                        revision_name(function, serving)
                    ))
                })?
        }
    };
    let previous = record.serving_revision.map(|n| revision_name(function, n));
    if rev.status != RevisionStatus::Ready {
        return Err(conflict(format!(
            "revision {} is {}, not ready: only a built revision can serve",
            rev.name(),
            rev.status.as_str()
        )));
    }
    if record.serving_revision == Some(rev.number) {
        return Ok(ServingChanged {
            function: function.to_owned(),
            serving: rev.name(),
            previous,
        });
    }
    if let Some(cluster) = &state.cluster {
        let (Some(spec), Some(image)) = (&rev.spec, rev.image()) else {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "revision {} was not built in the cluster (it names no image); deploy its source again",
                    rev.name()
                ),
            ));
        };
        roll_out(state, cluster, rev, spec, image).await.map_err(|e| {
            let kept = previous.as_ref().map(|p| format!("; {p} keeps serving"));
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "ClusterRefused",
                format!("{e}{}", kept.unwrap_or_default()),
            )
        })?;
        state.store.set_serving(tenant, function, rev.number).await?;
    } else {
        let target = restore_target(state, rev).await.map_err(ApiError::internal)?;
        let prepared = state.gateway.prepare(target).await?;
        let _promotion = state.promote.lock().await;
        if let Err(e) = state.store.set_serving(tenant, function, rev.number).await {
            prepared.discard().await;
            return Err(e.into());
        }
        state.gateway.install(prepared);
    }
    tracing::info!(%tenant, %function, revision = %rev.name(), ?previous, "serving revision changed");
    let data = json!({"revision": rev.name(), "previous": previous});
    state
        .events
        .emit(
            tenant,
            lifecycle(types::FUNCTION_UPDATED, tenant, function, &rev.name(), data),
        )
        .await;
    Ok(ServingChanged {
        function: function.to_owned(),
        serving: rev.name(),
        previous,
    })
}

/// `POST /v1/tenants/{t}/functions/{f}/rollback` (body optional: `{"revision": N}`).
pub(crate) async fn rollback(
    State(state): State<Arc<AppState>>,
    Path((tenant, function)): Path<(String, String)>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<ServingChanged>, ApiError> {
    let principal = state.authorize(&caller, Action::Deploy, Some(&tenant)).await?;
    let request: Rollback = if body.is_empty() {
        Rollback::default()
    } else {
        parse_json(&body)?
    };
    let changed = serve_revision(&state, &tenant, &function, request.revision).await?;
    tracing::info!(%tenant, %function, serving = %changed.serving, token = %principal.token_id, "rollback");
    Ok(Json(changed))
}
