//! Metered usage in the store (DESIGN §6): per-minute usage buckets, the meters' checkpoints
//! and the budget thresholds already notified. A metering tick writes its buckets, the
//! checkpoints of the readings that produced them and the thresholds it notified in one
//! transaction ([`Store::record_metering`]), so after a crash or restart the meters resume
//! exactly where the stored buckets end: no gap, no double count.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Utc;
use kl_core::{BucketKey, CgroupReading, Minute, PeriodKey, Resources, StoredBytes, Usage, UsageBucket};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::{Result, Store, StoreError};

const KIND_INSTANCE: &str = "instance";
const KIND_STORAGE: &str = "storage";

/// Where an instance's meter stands: what it needs to resume after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceCheckpoint {
    pub instance: String,
    pub tenant: String,
    pub function: String,
    /// What the instance reserved (its CPU and memory limits): billed as a floor.
    pub reserved: Resources,
    /// The last reading the meter accepted.
    pub reading: CgroupReading,
}

/// The state column of an instance checkpoint.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InstanceState {
    reserved: Resources,
    reading: CgroupReading,
}

/// A budget threshold notified for a tenant's period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notified {
    pub tenant: String,
    pub period_key: PeriodKey,
    pub threshold: u16,
}

/// Everything one metering tick records, atomically.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeterWrite {
    /// Usage increments, merged into the stored buckets.
    pub buckets: Vec<UsageBucket>,
    /// Instance meters' new checkpoints.
    pub instances: Vec<InstanceCheckpoint>,
    /// Instances whose meters are done (the instance stopped): their checkpoints go.
    pub finished: Vec<String>,
    /// Tenants' storage meters' new checkpoints.
    pub storage: Vec<(String, StoredBytes)>,
    /// Budget thresholds notified.
    pub notified: Vec<Notified>,
}

impl MeterWrite {
    pub fn is_empty(&self) -> bool {
        *self == MeterWrite::default()
    }
}

impl Store {
    /// Records one metering tick in one transaction: merges the buckets into the stored
    /// ones, moves the checkpoints, records notified thresholds.
    pub async fn record_metering(&self, write: &MeterWrite) -> Result<()> {
        if write.is_empty() {
            return Ok(());
        }
        // The write lock: the read-merge-write of each bucket must not interleave with
        // another writer's.
        let mut tx = self.begin_write().await?;
        let mut merged: BTreeMap<BucketKey, Usage> = BTreeMap::new();
        for bucket in &write.buckets {
            merged.entry(bucket.key()).or_default().merge(&bucket.usage);
        }
        for (key, increment) in merged {
            let function = key.function.as_deref().unwrap_or("");
            let stored: Option<String> = sqlx::query_scalar(
                "SELECT usage FROM usage_buckets WHERE tenant = $1 AND function = $2 AND minute = $3",
            )
            .bind(&key.tenant)
            .bind(function)
            .bind(key.minute.index())
            .fetch_optional(&mut *tx)
            .await?;
            let mut usage = match stored {
                Some(json) => parse_usage(&json)?,
                None => Usage::default(),
            };
            usage.merge(&increment);
            sqlx::query(
                "INSERT INTO usage_buckets (tenant, function, minute, usage) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (tenant, function, minute) DO UPDATE SET usage = excluded.usage",
            )
            .bind(&key.tenant)
            .bind(function)
            .bind(key.minute.index())
            .bind(serde_json::to_string(&usage).expect("usage serializes"))
            .execute(&mut *tx)
            .await?;
        }
        for c in &write.instances {
            let state = InstanceState {
                reserved: c.reserved,
                reading: c.reading,
            };
            upsert_checkpoint(
                &mut tx,
                KIND_INSTANCE,
                &c.instance,
                &c.tenant,
                &c.function,
                serde_json::to_string(&state).expect("checkpoint serializes"),
            )
            .await?;
        }
        for instance in &write.finished {
            sqlx::query("DELETE FROM meter_checkpoints WHERE kind = $1 AND meter = $2")
                .bind(KIND_INSTANCE)
                .bind(instance)
                .execute(&mut *tx)
                .await?;
        }
        for (tenant, stored) in &write.storage {
            upsert_checkpoint(
                &mut tx,
                KIND_STORAGE,
                tenant,
                tenant,
                "",
                serde_json::to_string(stored).expect("checkpoint serializes"),
            )
            .await?;
        }
        for n in &write.notified {
            sqlx::query(
                "INSERT INTO budget_notifications (tenant, period_key, threshold, notified_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(&n.tenant)
            .bind(n.period_key.as_str())
            .bind(i64::from(n.threshold))
            .bind(Utc::now().to_rfc3339())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Stored buckets of minutes in [`from`, `to`), of one tenant or all, in key order.
    pub async fn usage_buckets(
        &self,
        from: Minute,
        to: Minute,
        tenant: Option<&str>,
    ) -> Result<Vec<UsageBucket>> {
        let rows = sqlx::query(
            "SELECT tenant, function, minute, usage FROM usage_buckets \
             WHERE minute >= $1 AND minute < $2 AND ($3 IS NULL OR tenant = $3) \
             ORDER BY tenant, function, minute",
        )
        .bind(from.index())
        .bind(to.index())
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let function: String = r.try_get("function")?;
                let index: i64 = r.try_get("minute")?;
                let minute = Minute::from_index(index).ok_or_else(|| StoreError::Corrupt {
                    what: "usage bucket minute",
                    source: serde::de::Error::custom(format!("minute {index} is out of range")),
                })?;
                Ok(UsageBucket {
                    tenant: r.try_get("tenant")?,
                    function: (!function.is_empty()).then_some(function),
                    minute,
                    usage: parse_usage(&r.try_get::<String, _>("usage")?)?,
                })
            })
            .collect()
    }

    /// The earliest minute with stored usage: where the platform's metered history begins.
    pub async fn first_usage_minute(&self) -> Result<Option<Minute>> {
        let first: Option<i64> = sqlx::query_scalar("SELECT MIN(minute) FROM usage_buckets")
            .fetch_one(&self.pool)
            .await?;
        Ok(first.and_then(Minute::from_index))
    }

    /// Deletes the buckets of minutes before `minute` (retention); returns how many went.
    pub async fn delete_usage_before(&self, minute: Minute) -> Result<u64> {
        let done = sqlx::query("DELETE FROM usage_buckets WHERE minute < $1")
            .bind(minute.index())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// The instance meters' checkpoints.
    pub async fn instance_checkpoints(&self) -> Result<Vec<InstanceCheckpoint>> {
        let rows = sqlx::query(
            "SELECT meter, tenant, function, state FROM meter_checkpoints WHERE kind = $1 ORDER BY meter",
        )
        .bind(KIND_INSTANCE)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let state: InstanceState = parse_state(&r.try_get::<String, _>("state")?)?;
                Ok(InstanceCheckpoint {
                    instance: r.try_get("meter")?,
                    tenant: r.try_get("tenant")?,
                    function: r.try_get("function")?,
                    reserved: state.reserved,
                    reading: state.reading,
                })
            })
            .collect()
    }

    /// The tenants' storage meters' checkpoints.
    pub async fn storage_checkpoints(&self) -> Result<Vec<(String, StoredBytes)>> {
        let rows = sqlx::query("SELECT tenant, state FROM meter_checkpoints WHERE kind = $1 ORDER BY tenant")
            .bind(KIND_STORAGE)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("tenant")?,
                    parse_state(&r.try_get::<String, _>("state")?)?,
                ))
            })
            .collect()
    }

    /// The thresholds notified for a tenant's period.
    pub async fn notified_thresholds(&self, tenant: &str, period_key: &PeriodKey) -> Result<BTreeSet<u16>> {
        let rows: Vec<i64> = sqlx::query_scalar(
            "SELECT threshold FROM budget_notifications WHERE tenant = $1 AND period_key = $2",
        )
        .bind(tenant)
        .bind(period_key.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().filter_map(|t| u16::try_from(t).ok()).collect())
    }
}

async fn upsert_checkpoint(
    tx: &mut sqlx::AnyConnection,
    kind: &str,
    meter: &str,
    tenant: &str,
    function: &str,
    state: String,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO meter_checkpoints (kind, meter, tenant, function, state) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (kind, meter) DO UPDATE SET state = excluded.state",
    )
    .bind(kind)
    .bind(meter)
    .bind(tenant)
    .bind(function)
    .bind(state)
    .execute(tx)
    .await?;
    Ok(())
}

fn parse_usage(json: &str) -> Result<Usage> {
    serde_json::from_str(json).map_err(|source| StoreError::Corrupt {
        what: "usage bucket",
        source,
    })
}

fn parse_state<T: serde::de::DeserializeOwned>(json: &str) -> Result<T> {
    serde_json::from_str(json).map_err(|source| StoreError::Corrupt {
        what: "meter checkpoint",
        source,
    })
}
