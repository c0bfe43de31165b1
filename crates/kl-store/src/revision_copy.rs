//! New revisions that reuse a built one: the same source and artifact, no build. A secret's
//! change rolls one for each function using it (same function), so new instances start with
//! the new value while running ones finish with the old; a promotion makes one in another
//! environment (another tenant), admitted against that tenant's quotas.

use kl_core::{FunctionSpec, Quota, TenantSpec, admit};

use crate::{Result, RevisionRecord, RevisionStatus, Store, StoreError, now};

/// Where a copy comes from or goes to.
#[derive(Debug, Clone, Copy)]
pub struct RevisionAt<'a> {
    pub tenant: &'a str,
    pub function: &'a str,
}

impl Store {
    /// Adds the next revision of `to` (creating the function if needed, within its tenant's
    /// functions and storage quotas) as a ready copy of revision `number` of `from`, which must
    /// be ready. `spec` replaces the copied spec when given (e.g. another priority class).
    /// A copy within one function adds no stored bytes: it shares the source.
    pub async fn copy_revision(
        &self,
        from: RevisionAt<'_>,
        number: i64,
        to: RevisionAt<'_>,
        spec: Option<&FunctionSpec>,
    ) -> Result<RevisionRecord> {
        let mut tx = self.begin_write().await?;
        let source: Option<(String, i64)> = sqlx::query_as(
            "SELECT status, source_bytes FROM revisions WHERE tenant = $1 AND function = $2 AND number = $3",
        )
        .bind(from.tenant)
        .bind(from.function)
        .bind(number)
        .fetch_optional(&mut *tx)
        .await?;
        let name = crate::revision_name(from.function, number);
        let source_bytes = match source {
            None => return Err(StoreError::NotFound(format!("revision {name}"))),
            Some((status, _)) if status != RevisionStatus::Ready.as_str() => {
                return Err(StoreError::Conflict(format!(
                    "revision {name} is {status}, not ready: only a built revision can be copied"
                )));
            }
            Some((_, bytes)) if from.tenant != to.tenant || from.function != to.function => bytes,
            Some(_) => 0,
        };
        let at = now();
        if source_bytes > 0 || from.tenant != to.tenant {
            let spec: String = sqlx::query_scalar("SELECT spec FROM tenants WHERE name = $1")
                .bind(to.tenant)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("tenant {:?}", to.tenant)))?;
            let quotas = serde_json::from_str::<TenantSpec>(&spec)
                .map_err(|source| StoreError::Corrupt {
                    what: "tenant spec",
                    source,
                })?
                .quotas;
            let exists: Option<i64> =
                sqlx::query_scalar("SELECT 1 FROM functions WHERE tenant = $1 AND name = $2")
                    .bind(to.tenant)
                    .bind(to.function)
                    .fetch_optional(&mut *tx)
                    .await?;
            if exists.is_none() {
                let used: i64 = sqlx::query_scalar("SELECT count(*) FROM functions WHERE tenant = $1")
                    .bind(to.tenant)
                    .fetch_one(&mut *tx)
                    .await?;
                admit(
                    to.tenant,
                    Quota::Functions,
                    used as u64,
                    1,
                    quotas.functions.into(),
                )?;
                sqlx::query(
                    "INSERT INTO functions (tenant, name, created_at, updated_at) VALUES ($1, $2, $3, $3)",
                )
                .bind(to.tenant)
                .bind(to.function)
                .bind(&at)
                .execute(&mut *tx)
                .await?;
            }
            let stored: i64 = sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(source_bytes), 0) AS BIGINT) FROM revisions WHERE tenant = $1",
            )
            .bind(to.tenant)
            .fetch_one(&mut *tx)
            .await?;
            admit(
                to.tenant,
                Quota::Storage,
                stored as u64,
                source_bytes as u64,
                quotas.storage.0,
            )?;
        }
        let next: i64 = sqlx::query_scalar(
            "UPDATE functions SET next_revision = next_revision + 1, updated_at = $1 \
             WHERE tenant = $2 AND name = $3 RETURNING next_revision - 1",
        )
        .bind(&at)
        .bind(to.tenant)
        .bind(to.function)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO revisions (tenant, function, number, status, settings, spec, source_key, \
             source_digest, artifact_digest, build_ms, created_at, finished_at, source_bytes) \
             SELECT $1, $2, $3, status, settings, COALESCE($4, spec), source_key, source_digest, \
             artifact_digest, 0, $5, $5, $6 FROM revisions \
             WHERE tenant = $7 AND function = $8 AND number = $9",
        )
        .bind(to.tenant)
        .bind(to.function)
        .bind(next)
        .bind(spec.map(|s| serde_json::to_string(s).expect("spec serializes")))
        .bind(&at)
        .bind(source_bytes)
        .bind(from.tenant)
        .bind(from.function)
        .bind(number)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.revision(to.tenant, to.function, next).await
    }
}
