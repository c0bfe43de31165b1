//! Bearer tokens and authorization. Tokens are random, shown once, stored as SHA-256 hashes
//! and looked up in memory on the request path; every denied attempt is audited.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::FromRequestParts;
use chrono::{DateTime, Utc};
use http::request::Parts;
use http::{HeaderMap, StatusCode};
use kl_core::{Action, Decision, Role, authorize};
use kl_store::{AuditRecord, Store, TokenRecord};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Principal {
    pub token_id: String,
    pub role: Role,
    /// The tenant of a tenant-scoped token.
    pub tenant: Option<String>,
}

struct Known {
    principal: Principal,
    expires_at: Option<DateTime<Utc>>,
}

/// Known tokens by hash.
pub struct Tokens {
    by_hash: ArcSwap<HashMap<String, Known>>,
}

pub fn hash_token(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A fresh token secret: 256 random bits.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    format!("kl_{}", hex::encode(bytes))
}

impl Tokens {
    pub async fn load(store: &Store) -> Result<Tokens, kl_store::StoreError> {
        let tokens = Tokens {
            by_hash: ArcSwap::from_pointee(HashMap::new()),
        };
        tokens.reload(store).await?;
        Ok(tokens)
    }

    /// Re-reads the tokens after a change (creation, revocation, tenant deletion).
    pub async fn reload(&self, store: &Store) -> Result<(), kl_store::StoreError> {
        let mut map = HashMap::new();
        for t in store.tokens().await? {
            let Ok(role) = t.role.parse::<Role>() else {
                tracing::warn!(token = %t.id, role = %t.role, "ignoring a token with an unknown role");
                continue;
            };
            let principal = Principal {
                token_id: t.id,
                role,
                tenant: t.tenant,
            };
            map.insert(
                t.hash,
                Known {
                    principal,
                    expires_at: t.expires_at,
                },
            );
        }
        self.by_hash.store(Arc::new(map));
        Ok(())
    }

    /// The principal of the request's bearer token, if it carries a valid, unexpired one.
    pub fn identify(&self, headers: &HeaderMap) -> Option<Principal> {
        let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
        let secret = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))?;
        let tokens = self.by_hash.load();
        let known = tokens.get(&hash_token(secret.trim()))?;
        if known.expires_at.is_some_and(|at| at <= Utc::now()) {
            return None;
        }
        Some(known.principal.clone())
    }
}

/// The caller of a request: its principal (if any) and what it asked for, for the audit log.
pub struct Caller {
    pub principal: Option<Principal>,
    method: String,
    path: String,
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Caller, Self::Rejection> {
        Ok(Caller {
            principal: state.tokens.identify(&parts.headers),
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
        })
    }
}

impl AppState {
    /// The tenant a request on `target` is decided on: the tenant an environment belongs to,
    /// for that tenant's members (an environment is run as a tenant of its own).
    async fn decided_on(&self, principal: &Principal, target: Option<&str>) -> Option<String> {
        let target = target?;
        if principal.tenant.as_deref().is_some_and(|own| own != target)
            && let Ok(Some(owner)) = self.store.environment_owner(target).await
        {
            return Some(owner);
        }
        Some(target.to_owned())
    }

    /// Lets the caller perform `action` on `target` (a tenant, or `None` for platform-wide
    /// actions), or answers 401, 403 or 404 and records the denial.
    pub(crate) async fn authorize(
        &self,
        caller: &Caller,
        action: Action,
        target: Option<&str>,
    ) -> Result<Principal, ApiError> {
        let (outcome, error) = match &caller.principal {
            None => (
                "unauthenticated",
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized",
                    "a valid bearer token is required (Authorization: Bearer …; the CLI reads KL_TOKEN or DATA_DIR/admin.token)",
                ),
            ),
            Some(p) => match authorize(
                p.role,
                p.tenant.as_deref(),
                action,
                self.decided_on(p, target).await.as_deref(),
            ) {
                Decision::Allow => return Ok(p.clone()),
                Decision::NotFound => (
                    "not-found",
                    ApiError::not_found(format!("tenant {:?} not found", target.unwrap_or_default())),
                ),
                Decision::Forbidden => (
                    "forbidden",
                    ApiError::new(
                        StatusCode::FORBIDDEN,
                        "Forbidden",
                        match target {
                            Some(t) => format!("role {} may not {} in tenant {t:?}", p.role, action.as_str()),
                            None => format!("role {} may not {}", p.role, action.as_str()),
                        },
                    ),
                ),
            },
        };
        let p = caller.principal.as_ref();
        let entry = AuditRecord {
            at: Utc::now(),
            token_id: p.map(|p| p.token_id.clone()),
            role: p.map(|p| p.role.to_string()),
            caller_tenant: p.and_then(|p| p.tenant.clone()),
            action: action.as_str().to_owned(),
            target_tenant: target.map(str::to_owned),
            method: caller.method.clone(),
            path: caller.path.clone(),
            outcome: outcome.to_owned(),
        };
        tracing::info!(outcome, action = action.as_str(), path = %caller.path, token = ?entry.token_id, "access denied");
        if let Err(e) = self.store.insert_audit(&entry).await {
            tracing::error!(error = %e, "cannot write the audit log");
        }
        Err(error)
    }
}

/// On first start: creates the admin token and writes it to `path` (mode 0600).
pub async fn bootstrap_admin(
    store: &Store,
    path: &Path,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if path.exists() {
        return Ok(());
    }
    let secret = new_secret();
    store
        .insert_token(&TokenRecord {
            id: format!("admin-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            name: "bootstrap admin".into(),
            hash: hash_token(&secret),
            tenant: None,
            role: Role::Admin.to_string(),
            created_at: Utc::now(),
            expires_at: None,
        })
        .await?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    tracing::info!(path = %path.display(), "created the admin token");
    Ok(())
}
