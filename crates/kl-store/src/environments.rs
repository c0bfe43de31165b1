//! A tenant's environments: each a row here and a tenant of its own (`TENANT-ENV`), created
//! and deleted together, so that the environment's functions, quotas and routes are those of
//! an ordinary tenant.

use chrono::{DateTime, Utc};
use kl_core::environment::check_share;
use kl_core::{EnvironmentSpec, TenantSpec};
use sqlx::Row;

use crate::{Result, Store, StoreError, now, parse_time};

/// One environment of a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentRecord {
    pub tenant: String,
    pub name: String,
    /// The tenant it runs as.
    pub env_tenant: String,
    pub spec: EnvironmentSpec,
    pub created_at: DateTime<Utc>,
}

impl Store {
    /// Creates environment `name` of `tenant`, run as tenant `env_tenant` with `env_spec`
    /// (derived from the tenant's). `Conflict` when the name or the tenant name is taken, or
    /// when the shares would pass 100 %.
    pub async fn create_environment(
        &self,
        tenant: &str,
        name: &str,
        spec: &EnvironmentSpec,
        env_tenant: &str,
        env_spec: &TenantSpec,
    ) -> Result<EnvironmentRecord> {
        let mut tx = self.begin_write().await?;
        let given = sqlx::query("SELECT name, spec FROM environments WHERE tenant = $1")
            .bind(tenant)
            .fetch_all(&mut *tx)
            .await?;
        let mut shares = Vec::new();
        for row in &given {
            if row.try_get::<String, _>("name")? == name {
                return Err(StoreError::Conflict(format!(
                    "environment {name:?} of tenant {tenant:?} already exists"
                )));
            }
            shares.push(spec_from(row.try_get("spec")?)?.share);
        }
        check_share(tenant, shares, spec.share).map_err(|e| StoreError::Conflict(e.to_string()))?;
        let at = now();
        let created = sqlx::query(
            "INSERT INTO tenants (name, spec, created_at, uid) \
             VALUES ($1, $2, $3, (SELECT COALESCE(MAX(uid), 100000) + 1 FROM tenants)) ON CONFLICT DO NOTHING",
        )
        .bind(env_tenant)
        .bind(serde_json::to_string(env_spec).expect("tenant spec serializes"))
        .bind(&at)
        .execute(&mut *tx)
        .await?;
        if created.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "tenant {env_tenant:?} already exists, so environment {name:?} cannot run as it; pick another name"
            )));
        }
        sqlx::query(
            "INSERT INTO environments (tenant, name, env_tenant, spec, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(tenant)
        .bind(name)
        .bind(env_tenant)
        .bind(serde_json::to_string(spec).expect("environment spec serializes"))
        .bind(&at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(EnvironmentRecord {
            tenant: tenant.to_owned(),
            name: name.to_owned(),
            env_tenant: env_tenant.to_owned(),
            spec: *spec,
            created_at: parse_time(at),
        })
    }

    /// A tenant's environments, by name.
    pub async fn environments(&self, tenant: &str) -> Result<Vec<EnvironmentRecord>> {
        let rows = sqlx::query(
            "SELECT tenant, name, env_tenant, spec, created_at FROM environments WHERE tenant = $1 ORDER BY name",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(EnvironmentRecord {
                    tenant: row.try_get("tenant")?,
                    name: row.try_get("name")?,
                    env_tenant: row.try_get("env_tenant")?,
                    spec: spec_from(row.try_get("spec")?)?,
                    created_at: parse_time(row.try_get("created_at")?),
                })
            })
            .collect()
    }

    /// The tenant whose environment `env_tenant` is, if it is one.
    pub async fn environment_owner(&self, env_tenant: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT tenant FROM environments WHERE env_tenant = $1")
                .bind(env_tenant)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Deletes an environment and its tenant; `Conflict` while it has functions.
    pub async fn delete_environment(&self, tenant: &str, name: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let env_tenant: String =
            sqlx::query_scalar("SELECT env_tenant FROM environments WHERE tenant = $1 AND name = $2")
                .bind(tenant)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("environment {name:?} of tenant {tenant:?}")))?;
        let functions: i64 = sqlx::query_scalar("SELECT count(*) FROM functions WHERE tenant = $1")
            .bind(&env_tenant)
            .fetch_one(&mut *tx)
            .await?;
        if functions > 0 {
            return Err(StoreError::Conflict(format!(
                "environment {name:?} still has {functions} function(s); delete them first"
            )));
        }
        sqlx::query("DELETE FROM environments WHERE tenant = $1 AND name = $2")
            .bind(tenant)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM tenants WHERE name = $1")
            .bind(&env_tenant)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

fn spec_from(text: String) -> Result<EnvironmentSpec> {
    serde_json::from_str(&text).map_err(|source| StoreError::Corrupt {
        what: "environment spec",
        source,
    })
}
