//! State shared by the request handlers and background jobs.

use std::sync::Arc;

use bytes::Bytes;
use kl_build::Builder;
use kl_core::{SpecLimits, TenantSpec};
use kl_gateway::egress::{EgressPolicy, EgressProxies, RuleError};
use kl_gateway::{Gateway, GatewayError, Invocation};
use kl_store::Store;
use object_store::ObjectStore;

use crate::auth::Tokens;
use crate::cluster::Cluster;
use crate::config::{Layout, ServerConfig};
use crate::error::ApiError;

pub(crate) struct AppState {
    pub store: Store,
    pub objects: Arc<dyn ObjectStore>,
    /// Ingress fan-out, the durable broker, triggers and the live feed.
    pub events: crate::events::Events,
    /// Turns true when the server starts shutting down: the dispatcher drains, streams end.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    pub builder: Builder,
    pub gateway: Arc<Gateway>,
    /// One egress proxy per tenant: the sandbox's only way out.
    pub egress: EgressProxies,
    pub tokens: Tokens,
    /// Build slots: at most this many builds run at once; the rest queue in fair order.
    pub builds: crate::build_slots::BuildSlots,
    /// Serialises traffic switches so a slower, older build never overrides a newer one.
    pub promote: tokio::sync::Mutex<()>,
    /// Builds queued or running per tenant (the concurrent-builds quota).
    pub tenant_builds: crate::quota::TenantBuilds,
    /// The platform's secrets keys.
    pub vault: Arc<crate::secrets::Vault>,
    pub layout: Layout,
    pub config: ServerConfig,
    /// The meters of running instances and stored bytes (DESIGN §6).
    pub metering: tokio::sync::Mutex<crate::cost::Metering>,
    pub cost_metrics: crate::cost::CostMetrics,
    /// The cluster functions run in (`--backend kubernetes`); `None` runs them here.
    pub cluster: Option<Cluster>,
    /// One backup at a time.
    pub backup: tokio::sync::Mutex<()>,
    pub backup_metrics: crate::backup::BackupMetrics,
}

impl AppState {
    /// Refuses a tenant spec the platform cannot honour: limits outside its own, egress
    /// rules that do not parse.
    pub fn check_spec(&self, spec: &TenantSpec) -> Result<(), ApiError> {
        let invalid = |e: String| ApiError::bad_request("InvalidSpec", e);
        spec.spec_limits(&self.config.spec_limits)
            .map_err(|e| invalid(e.to_string()))?;
        egress_policy(spec).map_err(|e| invalid(e.to_string()))?;
        if let Some(budget) = &spec.budget {
            budget.validate().map_err(|e| invalid(e.to_string()))?;
            // The server's HTTP client is built without TLS: an https webhook could never
            // be delivered, and its alerts would be retried forever.
            if budget
                .webhook
                .as_deref()
                .is_some_and(|url| url.starts_with("https://"))
            {
                return Err(invalid(
                    "budget.webhook: this server cannot call https:// URLs; use an http:// receiver (e.g. a relay on the same network)".to_owned(),
                ));
            }
        }
        Ok(())
    }

    /// A tenant's spec and the per-instance limits it resolves functions with.
    pub async fn tenant_limits(&self, tenant: &str) -> Result<(TenantSpec, SpecLimits), ApiError> {
        let spec = self.store.tenant(tenant).await?.spec;
        let limits = spec
            .spec_limits(&self.config.spec_limits)
            .map_err(|e| ApiError::bad_request("InvalidSpec", e.to_string()))?;
        Ok((spec, limits))
    }

    /// Applies a tenant's spec to the data plane: quotas, rate limit, egress policy. A proxy
    /// that cannot start leaves egress denied, the safe side, and is logged.
    pub fn apply_tenant(&self, tenant: &str, spec: &TenantSpec) {
        self.gateway.set_tenant(tenant, spec);
        let started = egress_policy(spec)
            .map_err(|e| e.to_string())
            .and_then(|policy| self.egress.ensure(tenant, policy).map_err(|e| e.to_string()));
        if let Err(error) = started {
            tracing::error!(%tenant, %error, "the tenant's egress proxy is not running: its egress is denied");
        }
    }

    /// Applies a tenant's namespace set to the cluster, if functions run in one. The tenant is
    /// stored already: on failure it says so, and applying again (an update, a restart) completes.
    pub async fn apply_tenant_to_cluster(&self, tenant: &str, spec: &TenantSpec) -> Result<(), ApiError> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        cluster.apply_tenant(tenant, spec).await.map_err(|e| {
            ApiError::new(
                http::StatusCode::BAD_GATEWAY,
                "ClusterRefused",
                format!(
                    "tenant {tenant:?} is saved, but the cluster did not take its objects: {e}; fix the cause and update the tenant again"
                ),
            )
        })
    }

    /// Deletes the namespace of `tenant` (a tenant or an environment, named in messages as
    /// `what`) before the store forgets it, if functions run in a cluster: refused (409) while
    /// it has functions; if the cluster refuses (502), it is kept and a retry completes.
    pub async fn delete_tenant_from_cluster(&self, tenant: &str, what: &str) -> Result<(), ApiError> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        let functions = self.store.function_count(tenant).await?;
        if functions > 0 {
            return Err(ApiError::new(
                http::StatusCode::CONFLICT,
                "Conflict",
                format!("{what} still has {functions} function(s); delete them first"),
            ));
        }
        cluster.delete_tenant(tenant).await.map_err(|e| {
            ApiError::new(
                http::StatusCode::BAD_GATEWAY,
                "ClusterRefused",
                format!("{what} is kept: the cluster did not delete its namespace: {e}"),
            )
        })
    }

    /// Whether the function's serving revision is public; `None` when it serves none.
    pub fn is_public(&self, tenant: &str, function: &str) -> Option<bool> {
        match &self.cluster {
            Some(cluster) => cluster.is_public(tenant, function),
            None => self.gateway.is_public(tenant, function),
        }
    }

    /// Serves one invocation where the function runs: here, or its Knative Service.
    pub async fn invoke(
        &self,
        tenant: &str,
        function: &str,
        call: Invocation,
    ) -> Result<http::Response<Bytes>, GatewayError> {
        match &self.cluster {
            Some(cluster) => cluster.invoke(&self.gateway, tenant, function, call).await,
            None => self.gateway.invoke(tenant, function, call).await,
        }
    }

    /// 404 unless the tenant exists.
    pub async fn require_tenant(&self, tenant: &str) -> Result<(), ApiError> {
        if self.store.tenant_exists(tenant).await? {
            Ok(())
        } else {
            Err(ApiError::not_found(format!("tenant {tenant:?} not found")))
        }
    }
}

/// The tenant's egress allow-list as a policy.
fn egress_policy(spec: &TenantSpec) -> Result<EgressPolicy, RuleError> {
    let allow = spec
        .egress
        .iter()
        .map(|rule| rule.parse())
        .collect::<Result<_, _>>()?;
    Ok(EgressPolicy { allow })
}
