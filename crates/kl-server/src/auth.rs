//! Bearer tokens: random, shown once, stored as SHA-256 hashes, looked up in memory on the
//! request path.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::HeaderMap;
use http::StatusCode;
use kl_store::{Store, TokenRecord};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Who is calling. Every token is a platform admin token until roles arrive (tenancy).
#[derive(Debug, Clone)]
pub struct Principal {
    pub token_id: String,
}

/// Known tokens by hash.
pub struct Tokens {
    by_hash: ArcSwap<HashMap<String, Principal>>,
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

    pub async fn reload(&self, store: &Store) -> Result<(), kl_store::StoreError> {
        let map = store
            .tokens()
            .await?
            .into_iter()
            .map(|t| (t.hash, Principal { token_id: t.id }))
            .collect();
        self.by_hash.store(Arc::new(map));
        Ok(())
    }

    /// The principal of the request's bearer token, if it carries a valid one.
    pub fn identify(&self, headers: &HeaderMap) -> Option<Principal> {
        let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
        let secret = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))?;
        self.by_hash.load().get(&hash_token(secret.trim())).cloned()
    }

    /// Like [`Tokens::identify`], but a missing or unknown token is a 401.
    pub fn require(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        self.identify(headers).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "a valid bearer token is required (Authorization: Bearer …; the CLI reads KL_TOKEN or DATA_DIR/admin.token)",
            )
        })
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
            hash: hash_token(&secret),
            tenant: None,
            role: "admin".into(),
            created_at: chrono::Utc::now(),
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
