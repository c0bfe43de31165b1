//! Async invocations: queued by the gateway, run by the event dispatcher, read back by
//! `kl invocation get`.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use kl_events::delivery::Sink;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Result, Store, StoreError, now, parse_time};

/// Where an async invocation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvocationStatus {
    /// Accepted and queued; not started yet (or waiting for a retry).
    Queued,
    /// An attempt is running.
    Running,
    /// The function answered 2xx.
    Succeeded,
    /// The function failed (non-2xx, crash) on its last attempt.
    Failed,
    /// The last attempt ran out of time.
    Timeout,
}

impl InvocationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InvocationStatus::Queued => "queued",
            InvocationStatus::Running => "running",
            InvocationStatus::Succeeded => "succeeded",
            InvocationStatus::Failed => "failed",
            InvocationStatus::Timeout => "timeout",
        }
    }
}

impl FromStr for InvocationStatus {
    type Err = ();

    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        [
            InvocationStatus::Queued,
            InvocationStatus::Running,
            InvocationStatus::Succeeded,
            InvocationStatus::Failed,
            InvocationStatus::Timeout,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
        .ok_or(())
    }
}

/// An async invocation and, once finished, its outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct InvocationRecord {
    pub id: String,
    pub tenant: String,
    pub function: String,
    pub status: InvocationStatus,
    pub correlation_id: String,
    pub destination: Option<Sink>,
    /// Attempts started so far.
    pub attempts: u32,
    pub outcome: Option<InvocationOutcome>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// What the last attempt of an invocation came to.
#[derive(Debug, Clone, PartialEq)]
pub struct InvocationOutcome {
    pub status: InvocationStatus,
    /// The function's HTTP status, when it answered.
    pub status_code: Option<u16>,
    /// The response body, cut at the server's limit.
    pub result: Option<Vec<u8>>,
    pub result_type: Option<String>,
    pub result_truncated: bool,
    pub error: Option<String>,
    pub duration_ms: u64,
    pub cold_start: bool,
}

impl Store {
    /// Records a new, queued invocation.
    pub async fn create_invocation(
        &self,
        id: &str,
        tenant: &str,
        function: &str,
        correlation_id: &str,
        destination: Option<&Sink>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO invocations (id, tenant, function, status, correlation_id, destination, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(tenant)
        .bind(function)
        .bind(InvocationStatus::Queued.as_str())
        .bind(correlation_id)
        .bind(destination.map(|d| serde_json::to_string(d).expect("a sink serializes")))
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks an attempt as started; returns the record, `NotFound` if it is gone.
    pub async fn start_invocation(&self, tenant: &str, id: &str) -> Result<InvocationRecord> {
        let done = sqlx::query(
            "UPDATE invocations SET status = $1, attempts = attempts + 1, started_at = $2 WHERE tenant = $3 AND id = $4",
        )
        .bind(InvocationStatus::Running.as_str())
        .bind(now())
        .bind(tenant)
        .bind(id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "invocation {id:?} in tenant {tenant:?}"
            )));
        }
        self.invocation(tenant, id).await
    }

    /// Records an attempt's outcome: final, or `Queued` again when it will be retried.
    pub async fn finish_invocation(&self, tenant: &str, id: &str, outcome: &InvocationOutcome) -> Result<()> {
        let finished = (outcome.status != InvocationStatus::Queued).then(now);
        sqlx::query(
            "UPDATE invocations SET status = $1, status_code = $2, result = $3, result_type = $4, \
             result_truncated = $5, error = $6, duration_ms = $7, cold_start = $8, finished_at = $9 \
             WHERE tenant = $10 AND id = $11",
        )
        .bind(outcome.status.as_str())
        .bind(outcome.status_code.map(i64::from))
        .bind(outcome.result.as_deref())
        .bind(&outcome.result_type)
        .bind(i64::from(outcome.result_truncated))
        .bind(&outcome.error)
        .bind(i64::try_from(outcome.duration_ms).unwrap_or(i64::MAX))
        .bind(i64::from(outcome.cold_start))
        .bind(finished)
        .bind(tenant)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn invocation(&self, tenant: &str, id: &str) -> Result<InvocationRecord> {
        let row = sqlx::query(
            "SELECT id, tenant, function, status, correlation_id, destination, attempts, status_code, \
             result, result_type, result_truncated, error, duration_ms, cold_start, created_at, \
             started_at, finished_at FROM invocations WHERE tenant = $1 AND id = $2",
        )
        .bind(tenant)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("invocation {id:?} in tenant {tenant:?}")))?;
        invocation_from_row(&row)
    }

    /// Forgets invocations created before `before`; returns how many.
    pub async fn forget_invocations_before(&self, before: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query("DELETE FROM invocations WHERE created_at < $1")
            .bind(before.to_rfc3339())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

fn invocation_from_row(r: &AnyRow) -> Result<InvocationRecord> {
    let status: String = r.try_get("status")?;
    let status = InvocationStatus::from_str(&status).unwrap_or(InvocationStatus::Failed);
    let destination: Option<String> = r.try_get("destination")?;
    let duration_ms: Option<i64> = r.try_get("duration_ms")?;
    let outcome = duration_ms.map(|ms| -> Result<InvocationOutcome> {
        Ok(InvocationOutcome {
            status,
            status_code: r
                .try_get::<Option<i64>, _>("status_code")?
                .and_then(|c| u16::try_from(c).ok()),
            result: r.try_get("result")?,
            result_type: r.try_get("result_type")?,
            result_truncated: r.try_get::<i64, _>("result_truncated")? != 0,
            error: r.try_get("error")?,
            duration_ms: u64::try_from(ms).unwrap_or_default(),
            cold_start: r.try_get::<Option<i64>, _>("cold_start")?.is_some_and(|c| c != 0),
        })
    });
    Ok(InvocationRecord {
        id: r.try_get("id")?,
        tenant: r.try_get("tenant")?,
        function: r.try_get("function")?,
        status,
        correlation_id: r.try_get("correlation_id")?,
        destination: destination
            .map(|d| serde_json::from_str(&d))
            .transpose()
            .map_err(|source| StoreError::Corrupt {
                what: "invocation destination",
                source,
            })?,
        attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or_default(),
        outcome: outcome.transpose()?,
        created_at: parse_time(r.try_get("created_at")?),
        started_at: r.try_get::<Option<String>, _>("started_at")?.map(parse_time),
        finished_at: r.try_get::<Option<String>, _>("finished_at")?.map(parse_time),
    })
}
