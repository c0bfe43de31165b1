//! Tenant secrets: metadata and sealed values. The store never sees a plaintext value: the
//! server seals values before they come here and opens them when an instance starts.

use chrono::{DateTime, Utc};
use kl_core::{Quota, admit};
use sqlx::Row;

use crate::{Result, Store, StoreError, now, parse_time};

/// A secret as listed: everything but its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRecord {
    pub tenant: String,
    pub name: String,
    /// 1 when created, one more at each replacement.
    pub version: i64,
    /// Key names, sorted.
    pub keys: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One value as stored: sealed under the platform key `key_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedValue {
    pub key: String,
    pub key_id: String,
    /// Base64 of nonce and ciphertext.
    pub sealed: String,
}

/// A stored value and where it lives, for re-encryption under a new key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredValue {
    pub tenant: String,
    pub name: String,
    pub value: SealedValue,
}

impl Store {
    /// Creates or replaces a secret with `values` (all its keys), admitting a new one against
    /// `max_per_tenant`. Returns the record with its new version.
    pub async fn put_secret(
        &self,
        tenant: &str,
        name: &str,
        values: &[SealedValue],
        max_per_tenant: u64,
    ) -> Result<SecretRecord> {
        // BEGIN IMMEDIATE: the count and the insert are one step, so concurrent creations
        // cannot overshoot the limit.
        let mut tx = self.begin_write().await?;
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT version FROM secrets WHERE tenant = $1 AND name = $2")
                .bind(tenant)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        let at = now();
        match exists {
            Some(_) => {
                sqlx::query(
                    "UPDATE secrets SET version = version + 1, updated_at = $1 WHERE tenant = $2 AND name = $3",
                )
                .bind(&at)
                .bind(tenant)
                .bind(name)
                .execute(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM secret_values WHERE tenant = $1 AND name = $2")
                    .bind(tenant)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
            }
            None => {
                let used: i64 = sqlx::query_scalar("SELECT count(*) FROM secrets WHERE tenant = $1")
                    .bind(tenant)
                    .fetch_one(&mut *tx)
                    .await?;
                admit(tenant, Quota::Secrets, used as u64, 1, max_per_tenant)?;
                sqlx::query(
                    "INSERT INTO secrets (tenant, name, version, created_at, updated_at) VALUES ($1, $2, 1, $3, $3)",
                )
                .bind(tenant)
                .bind(name)
                .bind(&at)
                .execute(&mut *tx)
                .await?;
            }
        }
        for value in values {
            sqlx::query(
                "INSERT INTO secret_values (tenant, name, key, key_id, sealed) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(tenant)
            .bind(name)
            .bind(&value.key)
            .bind(&value.key_id)
            .bind(&value.sealed)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.secret(tenant, name).await
    }

    /// A secret's metadata; `NotFound` if there is none.
    pub async fn secret(&self, tenant: &str, name: &str) -> Result<SecretRecord> {
        self.secret_records(tenant, Some(name))
            .await?
            .pop()
            .ok_or_else(|| StoreError::NotFound(format!("secret {name:?} in tenant {tenant:?}")))
    }

    /// A tenant's secrets, by name.
    pub async fn secrets(&self, tenant: &str) -> Result<Vec<SecretRecord>> {
        self.secret_records(tenant, None).await
    }

    async fn secret_records(&self, tenant: &str, name: Option<&str>) -> Result<Vec<SecretRecord>> {
        macro_rules! select {
            () => {
                "SELECT s.name, s.version, s.created_at, s.updated_at, v.key FROM secrets s \
                 LEFT JOIN secret_values v ON v.tenant = s.tenant AND v.name = s.name WHERE s.tenant = $1"
            };
        }
        let rows = match name {
            Some(name) => {
                sqlx::query(concat!(select!(), " AND s.name = $2 ORDER BY v.key"))
                    .bind(tenant)
                    .bind(name)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query(concat!(select!(), " ORDER BY s.name, v.key"))
                    .bind(tenant)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        let mut records: Vec<SecretRecord> = Vec::new();
        for row in rows {
            let name: String = row.try_get("name")?;
            let key: Option<String> = row.try_get("key")?;
            if records.last().is_none_or(|r| r.name != name) {
                records.push(SecretRecord {
                    tenant: tenant.to_owned(),
                    name,
                    version: row.try_get("version")?,
                    keys: Vec::new(),
                    created_at: parse_time(row.try_get("created_at")?),
                    updated_at: parse_time(row.try_get("updated_at")?),
                });
            }
            if let (Some(key), Some(record)) = (key, records.last_mut()) {
                record.keys.push(key);
            }
        }
        Ok(records)
    }

    /// A secret's sealed values, by key; `NotFound` if there is no such secret.
    pub async fn secret_values(&self, tenant: &str, name: &str) -> Result<Vec<SealedValue>> {
        let rows = sqlx::query(
            "SELECT key, key_id, sealed FROM secret_values WHERE tenant = $1 AND name = $2 ORDER BY key",
        )
        .bind(tenant)
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Err(StoreError::NotFound(format!(
                "secret {name:?} in tenant {tenant:?}"
            )));
        }
        rows.iter().map(sealed_from_row).collect()
    }

    /// Deletes a secret and its values; returns whether it existed.
    pub async fn delete_secret(&self, tenant: &str, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM secrets WHERE tenant = $1 AND name = $2")
            .bind(tenant)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Every stored value not sealed under `key_id`, across tenants.
    pub async fn values_not_under(&self, key_id: &str) -> Result<Vec<StoredValue>> {
        let rows = sqlx::query(
            "SELECT tenant, name, key, key_id, sealed FROM secret_values WHERE key_id <> $1 \
             ORDER BY tenant, name, key",
        )
        .bind(key_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(StoredValue {
                    tenant: row.try_get("tenant")?,
                    name: row.try_get("name")?,
                    value: sealed_from_row(row)?,
                })
            })
            .collect()
    }

    /// Replaces one sealed value by `new` (same key, re-encrypted) if it is still `old`: a
    /// secret replaced meanwhile keeps its new value. Returns whether it was replaced.
    pub async fn reseal(
        &self,
        tenant: &str,
        name: &str,
        old: &SealedValue,
        new: &SealedValue,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE secret_values SET key_id = $1, sealed = $2 \
             WHERE tenant = $3 AND name = $4 AND key = $5 AND sealed = $6",
        )
        .bind(&new.key_id)
        .bind(&new.sealed)
        .bind(tenant)
        .bind(name)
        .bind(&old.key)
        .bind(&old.sealed)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

fn sealed_from_row(row: &sqlx::any::AnyRow) -> Result<SealedValue> {
    Ok(SealedValue {
        key: row.try_get("key")?,
        key_id: row.try_get("key_id")?,
        sealed: row.try_get("sealed")?,
    })
}
