//! Tenants (`/v1/tenants`), tokens (`/v1/tokens`) and the audit log (`/v1/audit`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use bytes::Bytes;
use chrono::Utc;
use http::StatusCode;
use kl_api::{
    AuditEntry, AuditList, CreateTenant, CreateToken, TenantList, TenantUsage, TenantView, TokenCreated,
    TokenList, TokenView,
};
use kl_core::{Action, ByteQuantity, CpuQuantity, Role, TenantSpec, parse_duration, validate_tenant_name};
use kl_store::{TenantRecord, TokenRecord};
use serde::Deserialize;

use crate::auth::{Caller, hash_token, new_secret};
use crate::error::{ApiError, parse_json};
use crate::state::AppState;

async fn tenant_view(state: &AppState, t: TenantRecord) -> Result<TenantView, ApiError> {
    let running = state.gateway.usage(&t.name);
    Ok(TenantView {
        usage: TenantUsage {
            functions: state.store.function_count(&t.name).await?,
            instances: running.instances,
            cpu: CpuQuantity(running.cpu_millis),
            memory: ByteQuantity(running.memory_bytes),
            builds: state.tenant_builds.running(&t.name),
            storage: ByteQuantity(state.store.stored_bytes(&t.name).await?),
        },
        environment: environment_of(state, &t.name).await?,
        name: t.name,
        spec: t.spec,
        created_at: t.created_at,
    })
}

/// `TENANT/ENV` when `tenant` runs an environment of another tenant.
async fn environment_of(state: &AppState, tenant: &str) -> Result<Option<String>, ApiError> {
    let Some(owner) = state.store.environment_owner(tenant).await? else {
        return Ok(None);
    };
    let env = state
        .store
        .environments(&owner)
        .await?
        .into_iter()
        .find(|e| e.env_tenant == tenant)
        .map(|e| e.name);
    Ok(env.map(|name| format!("{owner}/{name}")))
}

/// `POST /v1/tenants`
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<TenantView>), ApiError> {
    let principal = state.authorize(&caller, Action::ManageTenants, None).await?;
    let body: CreateTenant = parse_json(&body)?;
    validate_tenant_name(&body.name).map_err(|e| ApiError::bad_request("InvalidName", e.to_string()))?;
    state.check_spec(&body.spec)?;
    let record = state.store.create_tenant(&body.name, &body.spec).await?;
    state.apply_tenant(&record.name, &record.spec);
    state.apply_tenant_to_cluster(&record.name, &record.spec).await?;
    tracing::info!(tenant = %body.name, token = %principal.token_id, "tenant created");
    Ok((StatusCode::CREATED, Json(tenant_view(&state, record).await?)))
}

/// `GET /v1/tenants`: every tenant for platform roles, the own tenant otherwise.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<TenantList>, ApiError> {
    let own = caller.principal.as_ref().and_then(|p| p.tenant.clone());
    let records = match own {
        Some(tenant) => {
            state
                .authorize(&caller, Action::ReadTenant, Some(&tenant))
                .await?;
            vec![state.store.tenant(&tenant).await?]
        }
        None => {
            state.authorize(&caller, Action::ReadAllTenants, None).await?;
            state.store.tenants().await?
        }
    };
    let mut tenants = Vec::new();
    for record in records {
        tenants.push(tenant_view(&state, record).await?);
    }
    Ok(Json(TenantList { tenants }))
}

/// `GET /v1/tenants/{t}`: settings and usage against every quota.
pub(crate) async fn describe(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    caller: Caller,
) -> Result<Json<TenantView>, ApiError> {
    state
        .authorize(&caller, Action::ReadTenant, Some(&tenant))
        .await?;
    let record = state.store.tenant(&tenant).await?;
    Ok(Json(tenant_view(&state, record).await?))
}

/// `PUT /v1/tenants/{t}`: replaces the tenant's spec.
pub(crate) async fn update(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<TenantView>, ApiError> {
    let principal = state
        .authorize(&caller, Action::ManageTenants, Some(&tenant))
        .await?;
    let spec: TenantSpec = parse_json(&body)?;
    state.check_spec(&spec)?;
    let record = state.store.update_tenant(&tenant, &spec).await?;
    state.apply_tenant(&record.name, &record.spec);
    state.apply_tenant_to_cluster(&record.name, &record.spec).await?;
    crate::environments::follow_tenant(&state, &tenant, &record.spec).await?;
    tracing::info!(%tenant, token = %principal.token_id, "tenant updated");
    Ok(Json(tenant_view(&state, record).await?))
}

/// `DELETE /v1/tenants/{t}`: only once it has no functions; its tokens go with it.
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    let principal = state
        .authorize(&caller, Action::ManageTenants, Some(&tenant))
        .await?;
    if tenant == "default" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "Conflict",
            "the default tenant cannot be deleted",
        ));
    }
    if let Some(owner) = state.store.environment_owner(&tenant).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!("tenant {tenant:?} is an environment of tenant {owner:?}: delete it with `kl env rm`"),
        ));
    }
    let environments = state.store.environments(&tenant).await?;
    if !environments.is_empty() {
        let names: Vec<&str> = environments.iter().map(|e| e.name.as_str()).collect();
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "tenant {tenant:?} still has environment(s) {}; delete them first",
                names.join(", ")
            ),
        ));
    }
    if state.cluster.is_some() {
        state.require_tenant(&tenant).await?;
    }
    state
        .delete_tenant_from_cluster(&tenant, &format!("tenant {tenant:?}"))
        .await?;
    state.store.delete_tenant(&tenant).await?;
    state.egress.remove(&tenant);
    // Its triggers went with it (cascade): no more pings for it.
    state.events.triggers.reload(&state.store).await?;
    state.tokens.reload(&state.store).await?;
    tracing::info!(%tenant, token = %principal.token_id, "tenant deleted");
    Ok(StatusCode::NO_CONTENT)
}

fn token_view(t: &TokenRecord) -> Option<TokenView> {
    Some(TokenView {
        id: t.id.clone(),
        name: t.name.clone(),
        role: t.role.parse().ok()?,
        tenant: t.tenant.clone(),
        created_at: t.created_at,
        expires_at: t.expires_at,
    })
}

/// The action that managing a token of `role` in `tenant` needs.
fn token_action(role: Role) -> Action {
    if role.is_platform() {
        Action::ManageTenants
    } else {
        Action::ManageTokens
    }
}

/// `POST /v1/tokens`: the secret is in this answer and nowhere else, ever.
pub(crate) async fn create_token(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<TokenCreated>), ApiError> {
    // What the token may be depends on the body; an anonymous caller learns nothing from it.
    if caller.principal.is_none() {
        state.authorize(&caller, Action::ManageTokens, None).await?;
    }
    let body: CreateToken = parse_json(&body)?;
    let principal = state
        .authorize(&caller, token_action(body.role), body.tenant.as_deref())
        .await?;
    match (&body.tenant, body.role.is_platform()) {
        (Some(_), true) => {
            return Err(ApiError::bad_request(
                "InvalidToken",
                format!("role {} spans all tenants; omit the tenant", body.role),
            ));
        }
        (None, false) => {
            return Err(ApiError::bad_request(
                "InvalidToken",
                format!("role {} belongs to a tenant; name it", body.role),
            ));
        }
        (Some(t), false) => state.require_tenant(t).await?,
        (None, true) => {}
    }
    if body.name.trim().is_empty() || body.name.len() > 100 {
        return Err(ApiError::bad_request(
            "InvalidToken",
            "the token name must have 1 to 100 characters",
        ));
    }
    let expires_at = match &body.expires_in {
        Some(d) => {
            let ms = parse_duration(d).map_err(|e| ApiError::bad_request("InvalidToken", e.to_string()))?;
            Some(Utc::now() + chrono::Duration::milliseconds(ms as i64))
        }
        None => None,
    };
    let secret = new_secret();
    let record = TokenRecord {
        id: format!("tok-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        name: body.name.trim().to_owned(),
        hash: hash_token(&secret),
        tenant: body.tenant.clone(),
        role: body.role.to_string(),
        created_at: Utc::now(),
        expires_at,
    };
    state.store.insert_token(&record).await?;
    state.tokens.reload(&state.store).await?;
    tracing::info!(id = %record.id, role = %record.role, tenant = ?record.tenant, by = %principal.token_id, "token created");
    let token = token_view(&record).expect("a just-created token has a valid role");
    Ok((StatusCode::CREATED, Json(TokenCreated { token, secret })))
}

#[derive(Debug, Deserialize)]
pub(crate) struct TokenQuery {
    tenant: Option<String>,
}

/// `GET /v1/tokens[?tenant=T]`: metadata only, never secrets or hashes.
pub(crate) async fn list_tokens(
    State(state): State<Arc<AppState>>,
    Query(query): Query<TokenQuery>,
    caller: Caller,
) -> Result<Json<TokenList>, ApiError> {
    match &query.tenant {
        Some(t) => state.authorize(&caller, Action::ReadTokens, Some(t)).await?,
        None => state.authorize(&caller, Action::ReadAllTenants, None).await?,
    };
    let tokens = state
        .store
        .tokens()
        .await?
        .iter()
        .filter(|t| query.tenant.is_none() || t.tenant == query.tenant)
        .filter_map(token_view)
        .collect();
    Ok(Json(TokenList { tokens }))
}

/// `DELETE /v1/tokens/{id}`: revocation takes effect at once.
pub(crate) async fn revoke_token(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    let tokens = state.store.tokens().await?;
    let Some(token) = tokens.iter().find(|t| t.id == id) else {
        // Authorize anyway so that probing for ids is audited like any other denial.
        state.authorize(&caller, Action::ManageTenants, None).await?;
        return Err(ApiError::not_found(format!("token {id:?} not found")));
    };
    let role: Role = token.role.parse().unwrap_or(Role::Admin);
    let principal = state
        .authorize(&caller, token_action(role), token.tenant.as_deref())
        .await?;
    state.store.delete_token(&id).await?;
    state.tokens.reload(&state.store).await?;
    tracing::info!(%id, by = %principal.token_id, "token revoked");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub(crate) struct AuditQuery {
    limit: Option<u32>,
}

/// `GET /v1/audit[?limit=N]`: the newest denied attempts.
pub(crate) async fn audit(
    State(state): State<Arc<AppState>>,
    Query(query): Query<AuditQuery>,
    caller: Caller,
) -> Result<Json<AuditList>, ApiError> {
    state.authorize(&caller, Action::ReadAudit, None).await?;
    let entries = state
        .store
        .audit(query.limit.unwrap_or(100).min(10_000))
        .await?
        .into_iter()
        .map(|a| AuditEntry {
            at: a.at,
            token_id: a.token_id,
            role: a.role,
            caller_tenant: a.caller_tenant,
            action: a.action,
            target_tenant: a.target_tenant,
            method: a.method,
            path: a.path,
            outcome: a.outcome,
        })
        .collect();
    Ok(Json(AuditList { entries }))
}
