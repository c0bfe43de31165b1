//! The events ingress accepted, by (tenant, source, id), kept for the idempotency window:
//! CloudEvents lets a consumer treat a repeated (source, id) as the same event, and a producer
//! retrying after a lost answer should not cause a second delivery.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::Connection;

use crate::{Result, Store};

/// A (source, id) pair: what identifies an event within a tenant.
pub type EventId = (String, String);

impl Store {
    /// Which of `keys` the tenant accepted at or after `since`.
    pub async fn accepted_events(
        &self,
        tenant: &str,
        keys: &[EventId],
        since: DateTime<Utc>,
    ) -> Result<HashSet<EventId>> {
        let mut seen = HashSet::new();
        if keys.is_empty() {
            return Ok(seen);
        }
        let mut conn = self.pool.acquire().await?;
        // One read transaction: a consistent view, and one lock round trip for a whole batch.
        let mut tx = conn.begin().await?;
        for (source, id) in keys {
            let hit: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM accepted_events WHERE tenant = $1 AND source = $2 AND id = $3 AND accepted_at >= $4",
            )
            .bind(tenant)
            .bind(source)
            .bind(id)
            .bind(since.timestamp_micros())
            .fetch_optional(&mut *tx)
            .await?;
            if hit.is_some() {
                seen.insert((source.clone(), id.clone()));
            }
        }
        tx.commit().await?;
        Ok(seen)
    }

    /// Records `keys` as accepted at `at` (a key seen again starts a new window).
    pub async fn record_accepted(&self, tenant: &str, keys: &[EventId], at: DateTime<Utc>) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for (source, id) in keys {
            sqlx::query(
                "INSERT INTO accepted_events (tenant, source, id, accepted_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (tenant, source, id) DO UPDATE SET accepted_at = excluded.accepted_at",
            )
            .bind(tenant)
            .bind(source)
            .bind(id)
            .bind(at.timestamp_micros())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Forgets events accepted before `before`; returns how many.
    pub async fn forget_accepted_before(&self, before: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query("DELETE FROM accepted_events WHERE accepted_at < $1")
            .bind(before.timestamp_micros())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
