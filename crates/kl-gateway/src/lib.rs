//! The data plane: routes invocations to the serving revision's instances, starts instances
//! on demand, enforces each instance's concurrency limit and the function timeout, and
//! replaces instances that crash or hang.

mod admission;
pub mod egress;
mod metering;
mod metrics;
mod pool;
mod proxy;
pub mod ratelimit;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use kl_core::{
    BudgetExceeded, FunctionSpec, Launch, NoCapacity, QuotaExceeded, RateSpec, Resources, TenantSpec,
};
use kl_runtime::{Runtime, RuntimeError};
use thiserror::Error;

pub use admission::Usage;
use admission::{Ledger, Refusal};
pub use metering::{Collected, InstanceSample};
use metering::{Meters, PoolMeter};
use metrics::Metrics;
use pool::RevisionPool;
pub use pool::{CrashLoop, InstanceStatus, LastExit};
use ratelimit::{Limited, Rate, RateLimits};

/// What runs of a routed function.
#[derive(Debug, Clone)]
pub struct FunctionStatus {
    pub revision: String,
    pub instances: Vec<InstanceStatus>,
    /// Requests waiting for an instance slot.
    pub queued: usize,
    pub last_exit: Option<LastExit>,
    pub crash_loop: Option<CrashLoop>,
    /// The autoscaler's last decision (desired instances, panic mode).
    pub scale: Option<kl_core::ScaleDecision>,
}

/// A revision's running instance count changed (sampled once a second, so a start and a stop
/// within the same second cancel out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scaled {
    pub tenant: String,
    pub function: String,
    pub revision: String,
    pub from: u32,
    pub to: u32,
    /// The autoscaler's wish at that moment.
    pub desired: Option<u32>,
}

/// A ready revision the gateway can serve.
#[derive(Debug, Clone)]
pub struct RevisionTarget {
    pub tenant: String,
    pub function: String,
    pub revision: String,
    pub spec: FunctionSpec,
    pub launch: Launch,
    pub log_path: PathBuf,
    /// The tenant's unprivileged uid (and gid), for sandboxed instances.
    pub uid: u32,
    /// The tenant's egress proxy socket; without it a sandboxed instance has no egress.
    pub egress_socket: Option<PathBuf>,
    /// Where each new instance gets its secrets (none when the function uses none).
    pub secrets: Option<Arc<dyn kl_runtime::SecretSource>>,
}

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest response body taken from an instance.
    pub max_response_bytes: usize,
    /// Idle instances are stopped after this long without a request.
    pub idle_timeout: Duration,
    /// Grace given to an instance between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// What the node's instances may hold together; unlimited when absent.
    pub capacity: Option<Resources>,
    /// Processes and threads one instance may run (its cgroup's pids limit).
    pub pids_per_instance: u32,
    /// Requests one revision may queue while its instances are busy.
    pub max_queue: usize,
    /// The platform's autoscaler defaults; each function's settings go over them.
    pub autoscaling: kl_core::AutoscalerConfig,
}

/// One invocation, already authenticated and size-checked by the caller.
#[derive(Debug)]
pub struct Invocation {
    pub method: http::Method,
    /// Function-relative path and query, starting with `/`.
    pub path_and_query: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub request_id: String,
}

/// Why an invocation got no answer from the function.
#[derive(Debug, Error)]
pub enum GatewayError {
    /// No ready revision is routed for the function.
    #[error("function {0:?} has no ready revision")]
    NoRoute(String),
    /// Every instance is busy and no more may start; retry later.
    #[error("no capacity: all {instances} instances of {revision} are busy; retry later")]
    NoCapacity { revision: String, instances: usize },
    /// Instances keep failing to start; the next attempt waits for the back-off.
    #[error(
        "the function keeps failing to start ({failures} attempts in a row); next attempt in {}s; last error: {last_error}",
        retry_in.as_secs().max(1)
    )]
    CrashLoop {
        failures: u32,
        retry_in: Duration,
        last_error: String,
    },
    /// The revision's queue is full; retry later.
    #[error("no capacity: {queued} requests already wait for {revision}; retry later")]
    QueueFull { revision: String, queued: usize },
    /// An instance could not be started.
    #[error("the function could not start: {0}")]
    Start(#[from] RuntimeError),
    /// Starting an instance would exceed a tenant quota and none runs to wait for.
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
    /// The node is full and nothing of a lower class can be preempted.
    #[error(transparent)]
    NodeFull(#[from] NoCapacity),
    /// The tenant's budget has a hard cap and it is spent: no instance starts.
    #[error(transparent)]
    BudgetExceeded(#[from] BudgetExceeded),
    /// A tenant or function rate limit refused the request.
    #[error(transparent)]
    RateLimited(#[from] Limited),
    /// The function did not answer within its timeout; the instance was replaced.
    #[error("the function did not respond within {0}")]
    Timeout(String),
    /// The instance exited while handling the request; it will be replaced.
    #[error("the function's instance exited ({0}) while handling the request")]
    Crashed(String),
    /// The function's response exceeded the size limit.
    #[error("the function's response is larger than {0} bytes")]
    ResponseTooLarge(usize),
    /// The instance broke the HTTP protocol; it was replaced.
    #[error("the function's instance returned an invalid response: {0}")]
    Upstream(String),
}

impl GatewayError {
    /// The HTTP status the caller gets: 429 for limits waiting lifts, 503 when no capacity
    /// freed in time, 502/504 for the function's own failures.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            GatewayError::NoRoute(_) => S::NOT_FOUND,
            GatewayError::NoCapacity { .. }
            | GatewayError::QueueFull { .. }
            | GatewayError::NodeFull(_)
            | GatewayError::CrashLoop { .. } => S::SERVICE_UNAVAILABLE,
            GatewayError::Quota(q) if !q.is_transient() => S::FORBIDDEN,
            GatewayError::Quota(_) | GatewayError::RateLimited(_) | GatewayError::BudgetExceeded(_) => {
                S::TOO_MANY_REQUESTS
            }
            GatewayError::Timeout(_) => S::GATEWAY_TIMEOUT,
            GatewayError::Start(_)
            | GatewayError::Crashed(_)
            | GatewayError::ResponseTooLarge(_)
            | GatewayError::Upstream(_) => S::BAD_GATEWAY,
        }
    }
}

/// A revision with a warm instance, not yet routed.
pub struct Prepared(Arc<RevisionPool>);

impl Prepared {
    /// Stops the prepared instance instead of routing to it.
    pub async fn discard(self) {
        self.0.stop_all().await;
    }
}

/// The routing table and the instances behind it.
pub struct Gateway {
    routes: ArcSwap<HashMap<String, Arc<RevisionPool>>>,
    runtime: Arc<dyn Runtime>,
    ledger: Arc<Ledger>,
    rates: RateLimits,
    metrics: Arc<Metrics>,
    meters: Meters,
    /// The meters of functions served elsewhere (Knative Services), by route key.
    elsewhere: std::sync::Mutex<HashMap<String, Arc<PoolMeter>>>,
    config: GatewayConfig,
    scaled: tokio::sync::broadcast::Sender<Scaled>,
}

fn route_key(tenant: &str, function: &str) -> String {
    format!("{tenant}/{function}")
}

impl Gateway {
    pub fn new(runtime: Arc<dyn Runtime>, config: GatewayConfig) -> Arc<Gateway> {
        let gateway = Arc::new(Gateway {
            routes: ArcSwap::from_pointee(HashMap::new()),
            runtime,
            ledger: Arc::new(Ledger::new(config.capacity)),
            rates: RateLimits::new(),
            metrics: Arc::new(Metrics::new()),
            meters: Meters::default(),
            elsewhere: std::sync::Mutex::default(),
            config,
            scaled: tokio::sync::broadcast::channel(256).0,
        });
        tokio::spawn(tick(Arc::downgrade(&gateway)));
        gateway
    }

    /// Follows the changes of every revision's running instance count from now on.
    pub fn watch_scale(&self) -> tokio::sync::broadcast::Receiver<Scaled> {
        self.scaled.subscribe()
    }

    /// Applies a tenant's quotas and rate limit to what runs from now on.
    pub fn set_tenant(&self, tenant: &str, spec: &TenantSpec) {
        self.ledger.set_tenant(tenant, spec.quotas.clone(), spec.weight);
        self.rates.set_tenant(tenant, spec.rate_limit.and_then(rate));
    }

    /// What a tenant's running instances hold against its quotas.
    pub fn usage(&self, tenant: &str) -> Usage {
        self.ledger.usage(tenant)
    }

    /// Refuses (`Some`) or allows again (`None`) a tenant's instance starts, for its budget's
    /// hard cap: requests that need a new instance get a 429, running instances keep serving.
    pub fn set_budget_cap(&self, tenant: &str, exceeded: Option<BudgetExceeded>) {
        self.ledger.set_budget_cap(tenant, exceeded);
    }

    /// What the data plane observed since the last call: completed invocations and a
    /// reading of every instance's cgroup (for the server's metering task).
    pub fn collect_usage(&self) -> Collected {
        self.meters.collect()
    }

    fn pool(&self, target: RevisionTarget, restored: bool) -> Arc<RevisionPool> {
        let reserved = Resources {
            cpu_millis: target.spec.cpu_millis,
            memory_bytes: target.spec.memory_bytes,
        };
        let meter = self.meters.register(&target.tenant, &target.function, reserved);
        Arc::new(RevisionPool::new(
            target,
            self.runtime.clone(),
            self.ledger.clone(),
            self.metrics.clone(),
            meter,
            self.config.clone(),
            restored,
        ))
    }

    /// Starts one instance of `target` to prove it serves. The result is routed with
    /// [`Gateway::install`] or dropped with [`Prepared::discard`].
    pub async fn prepare(&self, target: RevisionTarget) -> Result<Prepared, GatewayError> {
        let pool = self.pool(target, false);
        pool.warm_up().await?;
        Ok(Prepared(pool))
    }

    /// Routes the function's traffic to a prepared revision; the previous one drains.
    pub fn install(&self, prepared: Prepared) {
        let key = route_key(&prepared.0.target.tenant, &prepared.0.target.function);
        self.swap_route(&key, Some(prepared.0));
    }

    /// Routes to `target` without starting anything (on restart: instances start on the
    /// first request).
    pub fn restore(&self, target: RevisionTarget) {
        let key = route_key(&target.tenant, &target.function);
        self.swap_route(&key, Some(self.pool(target, true)));
    }

    /// Whether the routed revision of a function is public; `None` when not routed.
    pub fn is_public(&self, tenant: &str, function: &str) -> Option<bool> {
        self.routes
            .load()
            .get(&route_key(tenant, function))
            .map(|pool| pool.target.spec.public)
    }

    /// Stops routing to a function and stops its instances once their requests finish.
    pub fn remove(&self, tenant: &str, function: &str) {
        self.swap_route(&route_key(tenant, function), None);
    }

    fn swap_route(&self, key: &str, pool: Option<Arc<RevisionPool>>) {
        let (tenant, function) = key.split_once('/').expect("route keys are tenant/function");
        let function_rate = pool.as_ref().and_then(|p| p.target.spec.rate_limit);
        self.rates
            .set_function(tenant, function, function_rate.and_then(rate));
        let mut old = None;
        self.routes.rcu(|routes| {
            let mut next = HashMap::clone(routes);
            old = match &pool {
                Some(p) => next.insert(key.to_owned(), p.clone()),
                None => next.remove(key),
            };
            next
        });
        if let Some(old) = old {
            tokio::spawn(async move { old.retire().await });
        }
    }

    /// Takes over the rate limit and metering of a function served elsewhere (a Knative
    /// Service), whose requests still pass this gateway's rate limits through
    /// [`Gateway::admit_elsewhere`] and are metered through [`Gateway::completed_elsewhere`],
    /// at `memory_bytes` each.
    pub fn route_elsewhere(&self, tenant: &str, function: &str, limit: Option<RateSpec>, memory_bytes: u64) {
        self.rates.set_function(tenant, function, limit.and_then(rate));
        let reserved = Resources {
            cpu_millis: 0,
            memory_bytes,
        };
        let meter = self.meters.register(tenant, function, reserved);
        self.elsewhere
            .lock()
            .expect("elsewhere lock")
            .insert(route_key(tenant, function), meter);
    }

    /// Forgets a function served elsewhere; what it metered is still collected.
    pub fn unroute_elsewhere(&self, tenant: &str, function: &str) {
        self.rates.set_function(tenant, function, None);
        self.elsewhere
            .lock()
            .expect("elsewhere lock")
            .remove(&route_key(tenant, function));
    }

    /// Meters one invocation of a function served elsewhere that took `duration`.
    pub fn completed_elsewhere(&self, tenant: &str, function: &str, duration: Duration) {
        let meter = self
            .elsewhere
            .lock()
            .expect("elsewhere lock")
            .get(&route_key(tenant, function))
            .cloned();
        if let Some(meter) = meter {
            meter.invocation(duration);
        }
    }

    /// Admits one request to a function served elsewhere against the tenant's and the
    /// function's rate limits, as [`Gateway::invoke`] does for the functions it runs.
    pub fn admit_elsewhere(&self, tenant: &str, function: &str) -> Result<(), GatewayError> {
        Ok(self.rates.check(tenant, function)?)
    }

    /// Serves one invocation.
    pub async fn invoke(
        &self,
        tenant: &str,
        function: &str,
        call: Invocation,
    ) -> Result<http::Response<Bytes>, GatewayError> {
        let pool = self
            .routes
            .load()
            .get(&route_key(tenant, function))
            .cloned()
            .ok_or_else(|| GatewayError::NoRoute(function.to_owned()))?;
        let started = std::time::Instant::now();
        let result = match self.rates.check(tenant, function) {
            Ok(()) => pool.invoke(call).await,
            Err(limited) => Err(limited.into()),
        };
        let status = match &result {
            Ok(response) => response.status(),
            Err(e) => e.status(),
        };
        self.metrics
            .request(&pool.labels, status.as_u16(), started.elapsed());
        result
    }

    /// The Prometheus text exposition of the data plane's metrics.
    pub fn metrics(&self) -> String {
        let routes = self.routes.load();
        self.metrics.encode(routes.values().map(|pool| {
            let scale = pool.scale();
            let gauges = metrics::RevisionGauges {
                instances: pool.instances().len(),
                desired: scale.as_ref().map(|s| s.desired),
                panic: scale.is_some_and(|s| s.panic),
                queued: pool.queued(),
            };
            (pool.labels.clone(), gauges)
        }))
    }

    /// The serving revision and its instances, if the function is routed.
    pub fn status(&self, tenant: &str, function: &str) -> Option<FunctionStatus> {
        let routes = self.routes.load();
        let pool = routes.get(&route_key(tenant, function))?;
        Some(FunctionStatus {
            revision: pool.target.revision.clone(),
            instances: pool.instances(),
            queued: pool.queued(),
            last_exit: pool.last_exit(),
            crash_loop: pool.crash_loop(),
            scale: pool.scale(),
        })
    }

    /// Stops routing and stops every instance the runtime started, routed or not (server
    /// shutdown): revisions being drained or promoted have instances too.
    pub async fn shutdown(&self) {
        let routes = self.routes.swap(Arc::new(HashMap::new()));
        for pool in routes.values() {
            pool.close();
        }
        self.runtime.stop_all(self.config.stop_grace).await;
    }
}

impl From<Refusal> for GatewayError {
    fn from(refusal: Refusal) -> GatewayError {
        match refusal {
            Refusal::Quota(q) => GatewayError::Quota(q),
            Refusal::NoCapacity(n) => GatewayError::NodeFull(n),
            Refusal::Budget(b) => GatewayError::BudgetExceeded(b),
        }
    }
}

fn rate(spec: RateSpec) -> Option<Rate> {
    Rate::new(spec.per_second, spec.burst())
}

/// Every second, until the gateway is dropped: each routed revision's autoscaler tick, the
/// idle reaper, then a [`Scaled`] report if its instance count changed.
async fn tick(gateway: std::sync::Weak<Gateway>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(gateway) = gateway.upgrade() else { return };
        for pool in gateway.routes.load().values() {
            pool.autoscale();
            pool.reap_idle();
            if let Some((from, to)) = pool.observe_scale() {
                // Nobody following is not an error.
                let _ = gateway.scaled.send(Scaled {
                    tenant: pool.target.tenant.clone(),
                    function: pool.target.function.clone(),
                    revision: pool.target.revision.clone(),
                    from,
                    to,
                    desired: pool.scale().map(|d| d.desired),
                });
            }
        }
    }
}
