//! New revisions that reuse a built one: the same source, spec and artifact, no build. A
//! secret's change rolls one for each function using it, so new instances start with the new
//! value while running ones finish with the old.

use crate::{Result, RevisionRecord, RevisionStatus, Store, StoreError, now};

impl Store {
    /// Adds the function's next revision as a ready copy of revision `from` (which must be
    /// ready). The copy adds no stored bytes: it shares the source.
    pub async fn copy_revision(&self, tenant: &str, function: &str, from: i64) -> Result<RevisionRecord> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let status: Option<String> = sqlx::query_scalar(
            "SELECT status FROM revisions WHERE tenant = $1 AND function = $2 AND number = $3",
        )
        .bind(tenant)
        .bind(function)
        .bind(from)
        .fetch_optional(&mut *tx)
        .await?;
        match status.as_deref() {
            None => {
                return Err(StoreError::NotFound(format!(
                    "revision {}",
                    crate::revision_name(function, from)
                )));
            }
            Some(s) if s != RevisionStatus::Ready.as_str() => {
                return Err(StoreError::Conflict(format!(
                    "revision {} is {s}, not ready: only a built revision can be copied",
                    crate::revision_name(function, from)
                )));
            }
            Some(_) => {}
        }
        let number: i64 = sqlx::query_scalar(
            "UPDATE functions SET next_revision = next_revision + 1, updated_at = $1 \
             WHERE tenant = $2 AND name = $3 RETURNING next_revision - 1",
        )
        .bind(now())
        .bind(tenant)
        .bind(function)
        .fetch_one(&mut *tx)
        .await?;
        let at = now();
        sqlx::query(
            "INSERT INTO revisions (tenant, function, number, status, settings, spec, source_key, \
             source_digest, artifact_digest, build_ms, created_at, finished_at, source_bytes) \
             SELECT tenant, function, $1, status, settings, spec, source_key, source_digest, \
             artifact_digest, 0, $2, $2, 0 FROM revisions \
             WHERE tenant = $3 AND function = $4 AND number = $5",
        )
        .bind(number)
        .bind(&at)
        .bind(tenant)
        .bind(function)
        .bind(from)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.revision(tenant, function, number).await
    }
}
