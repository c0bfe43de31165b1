//! Triggers, per tenant: the desired routing of events to functions.

use chrono::{DateTime, Utc};
use kl_events::trigger::TriggerSpec;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Result, Store, StoreError, now, parse_time};

/// A stored trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerRecord {
    pub tenant: String,
    pub name: String,
    pub spec: TriggerSpec,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Store {
    /// Creates a trigger; `Conflict` if the tenant has one of that name, `NotFound` if the
    /// tenant does not exist.
    pub async fn create_trigger(
        &self,
        tenant: &str,
        name: &str,
        spec: &TriggerSpec,
    ) -> Result<TriggerRecord> {
        self.require_tenant(tenant).await?;
        let now = now();
        let done = sqlx::query(
            "INSERT INTO triggers (tenant, name, spec, created_at, updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT DO NOTHING",
        )
        .bind(tenant)
        .bind(name)
        .bind(spec_json(spec))
        .bind(&now)
        .bind(&now)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "trigger {name:?} already exists in tenant {tenant:?}; delete it first or replace it with PUT (kl apply)"
            )));
        }
        self.trigger(tenant, name).await
    }

    /// Creates or replaces a trigger; returns it and whether it was created.
    pub async fn put_trigger(
        &self,
        tenant: &str,
        name: &str,
        spec: &TriggerSpec,
    ) -> Result<(TriggerRecord, bool)> {
        self.require_tenant(tenant).await?;
        let now = now();
        let mut tx = self.begin_write().await?;
        let existed: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM triggers WHERE tenant = $1 AND name = $2")
                .bind(tenant)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        sqlx::query(
            "INSERT INTO triggers (tenant, name, spec, created_at, updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (tenant, name) DO UPDATE SET spec = excluded.spec, updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(name)
        .bind(spec_json(spec))
        .bind(&now)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((self.trigger(tenant, name).await?, existed.is_none()))
    }

    pub async fn trigger(&self, tenant: &str, name: &str) -> Result<TriggerRecord> {
        let row = sqlx::query(
            "SELECT tenant, name, spec, created_at, updated_at FROM triggers WHERE tenant = $1 AND name = $2",
        )
        .bind(tenant)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("trigger {name:?} in tenant {tenant:?}")))?;
        trigger_from_row(&row)
    }

    /// Every trigger of every tenant, by tenant and name: the server keeps them in memory.
    pub async fn triggers(&self) -> Result<Vec<TriggerRecord>> {
        let rows = sqlx::query(
            "SELECT tenant, name, spec, created_at, updated_at FROM triggers ORDER BY tenant, name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(trigger_from_row).collect()
    }

    /// Deletes a trigger; returns whether it existed.
    pub async fn delete_trigger(&self, tenant: &str, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM triggers WHERE tenant = $1 AND name = $2")
            .bind(tenant)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn require_tenant(&self, tenant: &str) -> Result<()> {
        if self.tenant_exists(tenant).await? {
            Ok(())
        } else {
            Err(StoreError::NotFound(format!("tenant {tenant:?}")))
        }
    }
}

fn spec_json(spec: &TriggerSpec) -> String {
    serde_json::to_string(spec).expect("a trigger spec serializes")
}

fn trigger_from_row(r: &AnyRow) -> Result<TriggerRecord> {
    let spec: String = r.try_get("spec")?;
    Ok(TriggerRecord {
        tenant: r.try_get("tenant")?,
        name: r.try_get("name")?,
        spec: serde_json::from_str(&spec).map_err(|source| StoreError::Corrupt {
            what: "trigger spec",
            source,
        })?,
        created_at: parse_time(r.try_get("created_at")?),
        updated_at: parse_time(r.try_get("updated_at")?),
    })
}
