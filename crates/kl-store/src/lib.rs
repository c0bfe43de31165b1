//! The metadata store: tenants, tokens, functions, revisions, triggers and async invocations,
//! in SQLite (WAL, busy timeout) or PostgreSQL with embedded migrations, and the embedded event
//! broker. The desired state lives here; reconcilers read it back on start. Every query is
//! written once for both databases; [`dialect`] says how, and holds what differs.

mod accepted;
mod dialect;
mod environments;
mod invocations;
mod metering;
mod migrations;
mod queue;
mod records;
mod revision_copy;
mod secrets;
mod snapshot;
mod triggers;

use std::path::Path;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use kl_core::{FunctionSettings, FunctionSpec, Quota, QuotaExceeded, TenantSpec, admit};
use sqlx::AnyPool;
use sqlx::Row;
use sqlx::any::AnyRow;
use thiserror::Error;

use dialect::Backend;

pub use accepted::EventId;
pub use environments::EnvironmentRecord;
pub use invocations::{InvocationOutcome, InvocationRecord, InvocationStatus};
pub use metering::{InstanceCheckpoint, MeterWrite, Notified};
pub use queue::SqliteBroker;
pub use records::{
    AuditRecord, FunctionRecord, RevisionRecord, RevisionStatus, TenantRecord, TokenRecord, revision_name,
};
pub use revision_copy::RevisionAt;
pub use secrets::{SealedValue, SecretRecord, StoredValue};
pub use snapshot::{Snapshot, TableRows, Value, snapshot_tables};
pub use triggers::TriggerRecord;

/// What can go wrong talking to the store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database could not be opened, read or written.
    #[error("metadata store: {0}")]
    Db(#[from] sqlx::Error),
    /// A migration failed; the data dir may belong to a newer version of kl.
    #[error("metadata store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored JSON column no longer parses.
    #[error("metadata store holds a malformed {what}: {source}")]
    Corrupt {
        what: &'static str,
        source: serde_json::Error,
    },
    /// A row was not found.
    #[error("{0} not found")]
    NotFound(String),
    /// The change conflicts with the current state (a name taken, a tenant still in use).
    #[error("{0}")]
    Conflict(String),
    /// The change would exceed one of the tenant's quotas.
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
}

/// Column list of revision queries; a macro so `concat!` keeps the SQL a `&'static str`.
/// The uid a new tenant's instances run as: one past the highest in use.
macro_rules! next_uid {
    () => {
        "(SELECT COALESCE(MAX(uid), 100000) + 1 FROM tenants)"
    };
}

macro_rules! revision_select {
    () => {
        "SELECT tenant, function, number, status, settings, spec, source_key, source_digest, \
     artifact_digest, error, build_ms, created_at, finished_at FROM revisions"
    };
}

/// Column list of function queries.
macro_rules! function_select {
    () => {
        "SELECT tenant, name, serving_revision, created_at, updated_at FROM functions"
    };
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Handle to the metadata store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and applies migrations.
    pub async fn open_sqlite(path: &Path) -> Result<Store> {
        let pool = dialect::connect_sqlite(path).await?;
        Store::migrated(pool, Backend::Sqlite).await
    }

    /// Connects to the PostgreSQL database at `url` (`postgres://user:password@host/db`) and
    /// applies migrations. The database must exist; the schema is created in it.
    pub async fn open_postgres(url: &str) -> Result<Store> {
        let pool = dialect::connect_postgres(url).await?;
        Store::migrated(pool, Backend::Postgres).await
    }

    async fn migrated(pool: AnyPool, backend: Backend) -> Result<Store> {
        migrations::migrator(backend).run(&pool).await?;
        Ok(Store { pool, backend })
    }

    /// Which database this store runs on, for logs: `sqlite` or `postgres`.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Creates the tenant unless it exists; returns whether it was created.
    pub async fn ensure_tenant(&self, name: &str) -> Result<bool> {
        // The write lock: the next uid is read and taken atomically.
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(concat!(
            "INSERT INTO tenants (name, created_at, uid) VALUES ($1, $2, ",
            next_uid!(),
            ") ON CONFLICT DO NOTHING"
        ))
        .bind(name)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn tenant_exists(&self, name: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM tenants WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Creates a tenant; `Conflict` if the name is taken.
    pub async fn create_tenant(&self, name: &str, spec: &TenantSpec) -> Result<TenantRecord> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(concat!(
            "INSERT INTO tenants (name, spec, created_at, uid) VALUES ($1, $2, $3, ",
            next_uid!(),
            ") ON CONFLICT DO NOTHING"
        ))
        .bind(name)
        .bind(serde_json::to_string(spec).expect("tenant spec serializes"))
        .bind(now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!("tenant {name:?} already exists")));
        }
        self.tenant(name).await
    }

    pub async fn tenant(&self, name: &str) -> Result<TenantRecord> {
        let row = sqlx::query("SELECT name, spec, created_at, uid FROM tenants WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("tenant {name:?}")))?;
        tenant_from_row(&row)
    }

    pub async fn tenants(&self) -> Result<Vec<TenantRecord>> {
        let rows = sqlx::query("SELECT name, spec, created_at, uid FROM tenants ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(tenant_from_row).collect()
    }

    /// Replaces a tenant's spec.
    pub async fn update_tenant(&self, name: &str, spec: &TenantSpec) -> Result<TenantRecord> {
        let done = sqlx::query("UPDATE tenants SET spec = $1 WHERE name = $2")
            .bind(serde_json::to_string(spec).expect("tenant spec serializes"))
            .bind(name)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("tenant {name:?}")));
        }
        self.tenant(name).await
    }

    /// Deletes a tenant without functions (and its tokens); `Conflict` while it has some.
    pub async fn delete_tenant(&self, name: &str) -> Result<()> {
        // The write lock: no deploy may add a function between the count and the delete.
        let mut tx = self.begin_write().await?;
        let functions: i64 = sqlx::query_scalar("SELECT count(*) FROM functions WHERE tenant = $1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        if functions > 0 {
            return Err(StoreError::Conflict(format!(
                "tenant {name:?} still has {functions} function(s); delete them first"
            )));
        }
        let done = sqlx::query("DELETE FROM tenants WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("tenant {name:?}")));
        }
        tx.commit().await?;
        Ok(())
    }

    /// How many functions a tenant has.
    pub async fn function_count(&self, tenant: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM functions WHERE tenant = $1")
            .bind(tenant)
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    /// Bytes of uploaded source a tenant keeps (the storage quota).
    pub async fn stored_bytes(&self, tenant: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(source_bytes), 0) AS BIGINT) FROM revisions WHERE tenant = $1",
        )
        .bind(tenant)
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }

    /// Deletes a token; returns whether it existed.
    pub async fn delete_token(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM tokens WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a denied attempt.
    pub async fn insert_audit(&self, entry: &AuditRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit (at, token_id, role, caller_tenant, action, target_tenant, method, path, outcome) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(entry.at.to_rfc3339())
        .bind(&entry.token_id)
        .bind(&entry.role)
        .bind(&entry.caller_tenant)
        .bind(&entry.action)
        .bind(&entry.target_tenant)
        .bind(&entry.method)
        .bind(&entry.path)
        .bind(&entry.outcome)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The newest `limit` denied attempts, newest first.
    pub async fn audit(&self, limit: u32) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT at, token_id, role, caller_tenant, action, target_tenant, method, path, outcome \
             FROM audit ORDER BY id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRecord {
                    at: parse_time(r.try_get("at")?),
                    token_id: r.try_get("token_id")?,
                    role: r.try_get("role")?,
                    caller_tenant: r.try_get("caller_tenant")?,
                    action: r.try_get("action")?,
                    target_tenant: r.try_get("target_tenant")?,
                    method: r.try_get("method")?,
                    path: r.try_get("path")?,
                    outcome: r.try_get("outcome")?,
                })
            })
            .collect()
    }

    /// Stores a token by the hash of its secret.
    pub async fn insert_token(&self, token: &TokenRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO tokens (id, name, hash, tenant, role, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&token.id)
        .bind(&token.name)
        .bind(&token.hash)
            .bind(&token.tenant)
            .bind(&token.role)
            .bind(token.created_at.to_rfc3339())
            .bind(token.expires_at.map(|t| t.to_rfc3339()))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let rows = sqlx::query(
            "SELECT id, name, hash, tenant, role, created_at, expires_at FROM tokens ORDER BY created_at",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TokenRecord {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    hash: r.try_get("hash")?,
                    tenant: r.try_get("tenant")?,
                    role: r.try_get("role")?,
                    created_at: parse_time(r.try_get("created_at")?),
                    expires_at: r.try_get::<Option<String>, _>("expires_at")?.map(parse_time),
                })
            })
            .collect()
    }

    /// Creates the function if new and allocates its next revision, atomically, so concurrent
    /// deploys of one function get distinct revision numbers.
    pub async fn create_revision(
        &self,
        tenant: &str,
        function: &str,
        settings: &FunctionSettings,
        source_key: &str,
        source_digest: &str,
        source_bytes: u64,
    ) -> Result<RevisionRecord> {
        // The write lock, taken up front, makes the count below and the insert atomic:
        // concurrent deploys cannot overshoot the functions quota.
        let mut tx = self.begin_write().await?;
        let now = now();
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM functions WHERE tenant = $1 AND name = $2")
                .bind(tenant)
                .bind(function)
                .fetch_optional(&mut *tx)
                .await?;
        let spec: String = sqlx::query_scalar("SELECT spec FROM tenants WHERE name = $1")
            .bind(tenant)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("tenant {tenant:?}")))?;
        let spec: TenantSpec = serde_json::from_str(&spec).map_err(|source| StoreError::Corrupt {
            what: "tenant spec",
            source,
        })?;
        if exists.is_none() {
            let used: i64 = sqlx::query_scalar("SELECT count(*) FROM functions WHERE tenant = $1")
                .bind(tenant)
                .fetch_one(&mut *tx)
                .await?;
            admit(
                tenant,
                Quota::Functions,
                used as u64,
                1,
                spec.quotas.functions.into(),
            )?;
        }
        let stored: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(source_bytes), 0) AS BIGINT) FROM revisions WHERE tenant = $1",
        )
        .bind(tenant)
        .fetch_one(&mut *tx)
        .await?;
        admit(
            tenant,
            Quota::Storage,
            stored as u64,
            source_bytes,
            spec.quotas.storage.0,
        )?;
        sqlx::query(
            "INSERT INTO functions (tenant, name, created_at, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant, name) DO UPDATE SET updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(function)
        .bind(&now)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        let number: i64 = sqlx::query_scalar(
            "UPDATE functions SET next_revision = next_revision + 1 WHERE tenant = $1 AND name = $2 \
             RETURNING next_revision - 1",
        )
        .bind(tenant)
        .bind(function)
        .fetch_one(&mut *tx)
        .await?;
        let settings_json = serde_json::to_string(settings).expect("settings serialize");
        sqlx::query(
            "INSERT INTO revisions (tenant, function, number, status, settings, source_key, source_digest, \
             source_bytes, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(tenant)
        .bind(function)
        .bind(number)
        .bind(RevisionStatus::Building.as_str())
        .bind(settings_json)
        .bind(source_key)
        .bind(source_digest)
        .bind(source_bytes as i64)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.revision(tenant, function, number).await
    }

    /// Records a finished build: the revision becomes ready (with its spec) or failed.
    pub async fn finish_revision(
        &self,
        tenant: &str,
        function: &str,
        number: i64,
        outcome: std::result::Result<(&FunctionSpec, &str), &str>,
        build_ms: u64,
    ) -> Result<()> {
        let (status, spec, digest, error) = match outcome {
            Ok((spec, digest)) => (
                RevisionStatus::Ready,
                Some(serde_json::to_string(spec).expect("spec serializes")),
                Some(digest),
                None,
            ),
            Err(e) => (RevisionStatus::Failed, None, None, Some(e)),
        };
        sqlx::query(
            "UPDATE revisions SET status = $1, spec = $2, artifact_digest = $3, error = $4, build_ms = $5, finished_at = $6 \
             WHERE tenant = $7 AND function = $8 AND number = $9",
        )
        .bind(status.as_str())
        .bind(spec)
        .bind(digest)
        .bind(error)
        .bind(build_ms as i64)
        .bind(now())
        .bind(tenant)
        .bind(function)
        .bind(number)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Points the function's traffic at a ready revision.
    pub async fn set_serving(&self, tenant: &str, function: &str, number: i64) -> Result<()> {
        sqlx::query(
            "UPDATE functions SET serving_revision = $1, updated_at = $2 WHERE tenant = $3 AND name = $4",
        )
        .bind(number)
        .bind(now())
        .bind(tenant)
        .bind(function)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn revision(&self, tenant: &str, function: &str, number: i64) -> Result<RevisionRecord> {
        let row = sqlx::query(concat!(
            revision_select!(),
            " WHERE tenant = $1 AND function = $2 AND number = $3"
        ))
        .bind(tenant)
        .bind(function)
        .bind(number)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("revision {function}-{number:05}")))?;
        revision_from_row(&row)
    }

    /// Revisions of a function, newest first.
    pub async fn revisions(&self, tenant: &str, function: &str) -> Result<Vec<RevisionRecord>> {
        let rows = sqlx::query(concat!(
            revision_select!(),
            " WHERE tenant = $1 AND function = $2 ORDER BY number DESC"
        ))
        .bind(tenant)
        .bind(function)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(revision_from_row).collect()
    }

    /// Revisions still building, across tenants: a restart re-queues them.
    pub async fn building_revisions(&self) -> Result<Vec<RevisionRecord>> {
        let rows = sqlx::query(concat!(
            revision_select!(),
            " WHERE status = 'building' ORDER BY created_at"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(revision_from_row).collect()
    }

    pub async fn function(&self, tenant: &str, name: &str) -> Result<FunctionRecord> {
        let row = sqlx::query(concat!(function_select!(), " WHERE tenant = $1 AND name = $2"))
            .bind(tenant)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("function {name:?} in tenant {tenant:?}")))?;
        function_from_row(&row)
    }

    /// Functions of one tenant, or of every tenant when `tenant` is `None`, by name.
    pub async fn functions(&self, tenant: Option<&str>) -> Result<Vec<FunctionRecord>> {
        let rows = match tenant {
            Some(t) => {
                sqlx::query(concat!(function_select!(), " WHERE tenant = $1 ORDER BY name"))
                    .bind(t)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query(concat!(function_select!(), " ORDER BY tenant, name"))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(function_from_row).collect()
    }

    /// Deletes a function and its revisions; returns whether it existed.
    pub async fn delete_function(&self, tenant: &str, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM functions WHERE tenant = $1 AND name = $2")
            .bind(tenant)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

fn now() -> String {
    Utc::now().to_rfc3339()
}

fn parse_time(s: String) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

fn revision_from_row(r: &AnyRow) -> Result<RevisionRecord> {
    let settings: String = r.try_get("settings")?;
    let spec: Option<String> = r.try_get("spec")?;
    let status: String = r.try_get("status")?;
    Ok(RevisionRecord {
        tenant: r.try_get("tenant")?,
        function: r.try_get("function")?,
        number: r.try_get("number")?,
        status: RevisionStatus::from_str(&status).unwrap_or(RevisionStatus::Failed),
        settings: serde_json::from_str(&settings).map_err(|source| StoreError::Corrupt {
            what: "revision settings",
            source,
        })?,
        spec: spec
            .map(|s| serde_json::from_str(&s))
            .transpose()
            .map_err(|source| StoreError::Corrupt {
                what: "revision spec",
                source,
            })?,
        source_key: r.try_get("source_key")?,
        source_digest: r.try_get("source_digest")?,
        artifact_digest: r.try_get("artifact_digest")?,
        error: r.try_get("error")?,
        build_ms: r.try_get::<Option<i64>, _>("build_ms")?.map(|v| v as u64),
        created_at: parse_time(r.try_get("created_at")?),
        finished_at: r.try_get::<Option<String>, _>("finished_at")?.map(parse_time),
    })
}

fn tenant_from_row(r: &AnyRow) -> Result<TenantRecord> {
    let spec: String = r.try_get("spec")?;
    Ok(TenantRecord {
        name: r.try_get("name")?,
        spec: serde_json::from_str(&spec).map_err(|source| StoreError::Corrupt {
            what: "tenant spec",
            source,
        })?,
        created_at: parse_time(r.try_get("created_at")?),
        uid: r.try_get::<i64, _>("uid")? as u32,
    })
}

fn function_from_row(r: &AnyRow) -> Result<FunctionRecord> {
    Ok(FunctionRecord {
        tenant: r.try_get("tenant")?,
        name: r.try_get("name")?,
        serving_revision: r.try_get("serving_revision")?,
        created_at: parse_time(r.try_get("created_at")?),
        updated_at: parse_time(r.try_get("updated_at")?),
    })
}
