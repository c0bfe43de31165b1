//! `kl server`: the control plane (`/v1`), the gateway (`/fn`), eventing (`/v1/events`,
//! triggers, dead letters, async invocations) and health (`/healthz`) on one listener, wired to
//! the embedded defaults: SQLite (or PostgreSQL), a local object store (or S3), the broker in
//! the metadata store (or RabbitMQ) and the local process runtime (or a Kubernetes cluster with
//! Knative, `--backend kubernetes`).

mod auth;
pub mod backup;
mod build_slots;
mod cluster;
mod config;
mod cost;
mod deploy;
mod environments;
mod error;
mod events;
mod functions;
mod invoke;
mod logs;
pub mod objects;
mod quota;
mod secrets;
mod state;
mod tenants;
mod uploads;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::routing::{any, get, post, put};
use kl_build::{Builder, BuilderConfig};
use kl_events::broker::amqp::{AmqpBroker, AmqpOptions};
use kl_events::{Broker, BrokerError, EventBus};
use kl_gateway::egress::{EgressConfig, EgressProxies};
use kl_gateway::{Gateway, GatewayConfig};
use kl_runtime::{LocalRuntime, LocalRuntimeConfig};
use kl_store::{SqliteBroker, Store};
use tokio::net::TcpListener;

pub use backup::{BackupLocation, BackupSchedule, RestoreOptions, RestoreReport};
use config::Layout;
pub use config::{Backend, Bus, KubernetesConfig, MeteringConfig, SecretsKeyText, ServerConfig};
pub use objects::Objects;
use state::AppState;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot prepare the data dir {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] kl_store::StoreError),
    /// The event broker (RabbitMQ with `--bus amqp://…`) could not be reached or set up.
    #[error("cannot open the event broker: {0}")]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Objects(#[from] objects::ObjectsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    /// The secrets key is missing, malformed, too widely readable, or does not open a value.
    #[error("secrets key: {0}")]
    SecretsKey(String),
    #[error("cannot create the admin token: {0}")]
    Bootstrap(String),
    #[error("server error: {0}")]
    Serve(std::io::Error),
    /// Sandboxing was asked for and the machine cannot enforce it.
    #[error(
        "the instance sandbox cannot be enforced here ({missing}); run `kl server` as root on a Linux kernel with cgroups, or pass --isolation none for development (no isolation between functions)"
    )]
    SandboxUnavailable { missing: String },
    /// `--backend kubernetes` with an object store Kaniko cannot read.
    #[error(
        "--backend kubernetes needs an S3 object store (--store s3://BUCKET[/PREFIX]): Kaniko build Jobs read each build context from it"
    )]
    KubernetesNeedsS3,
    /// The cluster could not be reached, or refused the platform's shared objects.
    #[error("cannot set up the Kubernetes backend: {0}")]
    Cluster(#[from] kl_kube::KubeError),
    /// No cluster configuration: neither in-cluster service account nor kubeconfig.
    #[error("cannot find the Kubernetes cluster (in-cluster service account or KUBECONFIG): {0}")]
    KubeConfig(String),
}

/// What the server is handed already connected instead of opening it from its configuration
/// (an embedder's or a test's own object store and cluster client).
#[derive(Default)]
pub struct Connections {
    /// An object store already open on `ServerConfig::objects`.
    pub objects: Option<Arc<dyn object_store::ObjectStore>>,
    /// The client of the cluster `Backend::Kubernetes` drives; without it, kube's default
    /// (in-cluster service account, else `KUBECONFIG`).
    pub kube: Option<kl_kube::Client>,
}

/// A bound server, ready to serve.
pub struct Server {
    listener: TcpListener,
    state: Arc<AppState>,
}

impl Server {
    /// Prepares the data dir, opens the stores, restores functions and binds the listener.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        Server::bind_with(config, Connections::default()).await
    }

    /// [`Server::bind`] with some connections handed in rather than opened.
    pub async fn bind_with(config: ServerConfig, connections: Connections) -> Result<Server, ServerError> {
        // Absolute paths: they end up in launch specs and instances run in other folders.
        let absolute = |dir: &std::path::Path| -> Result<std::path::PathBuf, ServerError> {
            std::fs::create_dir_all(dir)
                .and_then(|()| dir.canonicalize())
                .map_err(|source| ServerError::DataDir {
                    path: dir.display().to_string(),
                    source,
                })
        };
        let root = absolute(&config.data_dir)?;
        let layout = Layout {
            cache: absolute(&config.cache_dir.clone().unwrap_or_else(|| root.join("cache")))?,
            root,
        };
        for dir in [&layout.staging(), &layout.egress_dir()] {
            absolute(dir)?;
        }
        let store = match &config.db {
            Some(url) => Store::open_postgres(url).await?,
            None => Store::open_sqlite(&layout.db()).await?,
        };
        tracing::info!(backend = store.backend_name(), "metadata store open");
        let vault = secrets::Vault::open(
            config.secrets_key.as_ref().map(|k| k.0.as_str()),
            &layout.secrets_key(),
        )?;
        secrets::reencrypt(&store, &vault).await?;
        store.ensure_tenant("default").await?;
        auth::bootstrap_admin(&store, &layout.admin_token())
            .await
            .map_err(|e| ServerError::Bootstrap(e.to_string()))?;
        let objects = match connections.objects {
            Some(objects) => objects,
            None => objects::open(&config.objects, &layout.objects()).await?,
        };
        let cluster = match &config.backend {
            Backend::Local => None,
            // Before connecting, so a wrong store is named whatever the cluster's state.
            Backend::Kubernetes(_) if !matches!(config.objects, Objects::S3 { .. }) => {
                return Err(ServerError::KubernetesNeedsS3);
            }
            Backend::Kubernetes(kubernetes) => {
                let client = match connections.kube {
                    Some(client) => client,
                    None => kl_kube::Client::try_default()
                        .await
                        .map_err(|e| ServerError::KubeConfig(e.to_string()))?,
                };
                let cluster = cluster::Cluster::start(
                    client,
                    KubernetesConfig::clone(kubernetes),
                    &config.objects,
                    &config.spec_limits,
                    config.max_response_bytes,
                )
                .await?;
                tracing::info!(registry = %kubernetes.registry, "Kubernetes backend: builds run as Kaniko Jobs, functions as Knative Services");
                Some(cluster)
            }
        };
        let runtime = LocalRuntime::new(LocalRuntimeConfig {
            run_dir: layout.run_dir(),
            startup_timeout: config.startup_timeout,
            isolation: config.isolation.clone(),
        })
        .map_err(|source| ServerError::DataDir {
            path: layout.run_dir().display().to_string(),
            source,
        })?;
        match runtime.support() {
            // Functions run in the cluster: the local sandbox guards nothing.
            _ if cluster.is_some() => {}
            Some(report) if report.ready() => {
                tracing::info!("instance sandbox: what this machine enforces\n{report}");
            }
            Some(report) => {
                tracing::error!("instance sandbox: what this machine enforces\n{report}");
                return Err(ServerError::SandboxUnavailable {
                    missing: report.missing(),
                });
            }
            None => tracing::warn!(
                "ISOLATION IS OFF (--isolation none): functions run as the server's user, can read \
                 its data dir and each other's code, and reach the network; use only for development"
            ),
        }
        let gateway = Gateway::new(
            Arc::new(runtime),
            GatewayConfig {
                max_response_bytes: config.max_response_bytes,
                idle_timeout: config.idle_timeout,
                stop_grace: std::time::Duration::from_secs(5),
                capacity: Some(config.capacity),
                pids_per_instance: config.pids_per_instance,
                max_queue: config.max_queue,
                autoscaling: config.autoscaling.clone(),
            },
        );
        let builder = Builder::new(BuilderConfig {
            cache_dir: layout.cache.clone(),
        });
        let broker: Arc<dyn Broker> = match &config.bus {
            Bus::Embedded => {
                // A lease outlives the longest attempt (a function's timeout, queueing included).
                let lease = std::time::Duration::from_millis(config.spec_limits.max_timeout_ms) * 2;
                Arc::new(SqliteBroker::open(&store, lease).await?)
            }
            Bus::Amqp { url, prefix } => {
                let options = AmqpOptions {
                    prefix: prefix.clone(),
                    ..AmqpOptions::default()
                };
                Arc::new(AmqpBroker::connect(url, options).await?)
            }
        };
        let knative_eventing = cluster.as_ref().is_some_and(cluster::Cluster::knative_eventing);
        let triggers = events::TriggerRegistry::load(&store, knative_eventing).await?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Listen {
                addr: config.listen.to_string(),
                source,
            })?;
        let state = Arc::new(AppState {
            tokens: auth::Tokens::load(&store).await?,
            events: events::Events::new(broker, triggers, store.clone()),
            metering: tokio::sync::Mutex::new(cost::Metering::load(&store).await?),
            cost_metrics: cost::CostMetrics::new(),
            backup: tokio::sync::Mutex::new(()),
            backup_metrics: backup::BackupMetrics::new(config.backup.as_ref().map(|b| b.every)),
            store,
            objects,
            shutdown: tokio::sync::watch::channel(false).0,
            builder,
            gateway,
            egress: EgressProxies::new(layout.egress_dir(), EgressConfig::default()),
            builds: build_slots::BuildSlots::new(config.build_concurrency),
            promote: tokio::sync::Mutex::new(()),
            tenant_builds: quota::TenantBuilds::default(),
            vault: Arc::new(vault),
            cluster,
            layout,
            config,
        });
        for tenant in state.store.tenants().await? {
            state.apply_tenant(&tenant.name, &tenant.spec);
            if let Err(e) = state.apply_tenant_to_cluster(&tenant.name, &tenant.spec).await {
                tracing::error!(tenant = %tenant.name, error = %e.message, "the tenant's objects are not in the cluster");
            }
        }
        for trigger in state.store.triggers().await? {
            let applied =
                events::apply_trigger_to_cluster(&state, &trigger.tenant, &trigger.name, &trigger.spec);
            if let Err(e) = applied.await {
                tracing::error!(tenant = %trigger.tenant, trigger = %trigger.name, error = %e.message, "the trigger is not in the cluster");
            }
        }
        // Budgets' hard caps hold before any instance can start again.
        cost::tick(&state).await;
        deploy::restore(&state).await?;
        Ok(Server { listener, state })
    }

    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Follows every tenant's events (ingested, lifecycle, responses) from now on.
    pub fn subscribe_events(&self) -> tokio::sync::broadcast::Receiver<Arc<kl_events::TenantEvent>> {
        self.state.events.feed.subscribe()
    }

    /// Serves until `shutdown` resolves, then lets deliveries in flight finish (briefly) and
    /// stops every instance it started.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServerError> {
        let state = self.state.clone();
        let app = router(state.clone());
        let dispatcher = tokio::spawn(events::dispatch(state.clone(), state.shutdown.subscribe()));
        let mut background = vec![
            tokio::spawn(events::scheduler(state.clone())),
            tokio::spawn(events::sweeper(state.clone())),
            tokio::spawn(events::scaling(state.clone())),
            tokio::spawn(cost::run(Arc::downgrade(&state), state.config.metering.interval)),
        ];
        if let Some(schedule) = state.config.backup.clone() {
            background.push(tokio::spawn(backup::schedule(Arc::downgrade(&state), schedule)));
        }
        tracing::info!(addr = %self.local_addr(), data_dir = %state.layout.root.display(), store = %state.config.objects, bus = ?bus_name(&state.config.bus), "kl server listening");
        let stopping = state.clone();
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                // Ends event streams (which would otherwise hold the shutdown) and the dispatcher.
                stopping.shutdown.send_replace(true);
            })
            .await;
        tracing::info!("shutting down: draining event deliveries, metering, stopping instances");
        for task in background {
            task.abort();
        }
        if let Err(e) = dispatcher.await {
            tracing::error!(error = %e, "the event dispatcher failed");
        }
        cost::tick(&state).await;
        state.gateway.shutdown().await;
        served.map_err(ServerError::Serve)
    }
}

/// The broker in the startup log line (never the URL: it may hold a password).
fn bus_name(bus: &Bus) -> &'static str {
    match bus {
        Bus::Embedded => "embedded",
        Bus::Amqp { .. } => "amqp",
    }
}

fn router(state: Arc<AppState>) -> Router {
    let fns = "/v1/tenants/{tenant}/functions";
    let tenant = "/v1/tenants/{tenant}";
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route(fns, get(functions::list))
        .route(
            &format!("{fns}/{{function}}"),
            get(functions::describe).delete(functions::delete),
        )
        .route(&format!("{fns}/{{function}}/source"), put(deploy::upload))
        .route(
            &format!("{fns}/{{function}}/revisions/{{number}}"),
            get(functions::revision),
        )
        .route(
            &format!("{fns}/{{function}}/revisions/{{number}}/log"),
            get(logs::build_log),
        )
        .route(
            &format!("{fns}/{{function}}/revisions/{{number}}/dockerfile"),
            get(functions::dockerfile),
        )
        .route(&format!("{fns}/{{function}}/logs"), get(logs::function_log))
        .route(&format!("{fns}/{{function}}/rollback"), post(deploy::rollback))
        .route(
            &format!("{fns}/{{function}}/promote"),
            post(environments::promote),
        )
        .route(
            &format!("{tenant}/environments"),
            get(environments::list).post(environments::create),
        )
        .route(
            &format!("{tenant}/environments/{{name}}"),
            axum::routing::delete(environments::delete),
        )
        .route(&format!("{tenant}/uploads/{{name}}"), put(uploads::put_upload))
        .route(&format!("{tenant}/secrets"), get(secrets::list))
        .route(
            &format!("{tenant}/secrets/{{name}}"),
            put(secrets::put).delete(secrets::delete),
        )
        .route("/v1/admin/rotate-secrets-key", post(secrets::rotate_key))
        .route("/v1/admin/backups", post(backup::create))
        .route("/v1/events", post(events::ingest_own))
        .route(&format!("{tenant}/events"), post(events::ingest))
        .route(&format!("{tenant}/events/stream"), get(events::follow))
        .route(
            &format!("{tenant}/triggers"),
            get(events::list_triggers).post(events::create_trigger),
        )
        .route(
            &format!("{tenant}/triggers/{{name}}"),
            get(events::describe_trigger)
                .put(events::put_trigger)
                .delete(events::delete_trigger),
        )
        .route(&format!("{tenant}/dlq"), get(events::list_dead_letters))
        .route(&format!("{tenant}/dlq/{{id}}"), get(events::show_dead_letter))
        .route(
            &format!("{tenant}/dlq/{{id}}/replay"),
            post(events::replay_dead_letter),
        )
        .route(
            &format!("{tenant}/invocations/{{id}}"),
            get(events::get_invocation),
        )
        .route("/v1/functions", get(functions::list_all))
        .route("/v1/tenants", get(tenants::list).post(tenants::create))
        .route(
            "/v1/tenants/{tenant}",
            get(tenants::describe)
                .put(tenants::update)
                .delete(tenants::delete),
        )
        .route(
            "/v1/tokens",
            get(tenants::list_tokens).post(tenants::create_token),
        )
        .route("/v1/tokens/{id}", axum::routing::delete(tenants::revoke_token))
        .route("/v1/audit", get(tenants::audit))
        .route("/v1/cost/report", get(cost::report))
        .route("/v1/tenants/{tenant}/cost", get(cost::tenant_report))
        .route("/fn/{tenant}/{function}", any(invoke::invoke))
        .route("/fn/{tenant}/{function}/{*rest}", any(invoke::invoke))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// `GET /metrics`: Prometheus text, for platform roles (series name every tenant's functions).
async fn metrics(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    caller: auth::Caller,
) -> Result<impl axum::response::IntoResponse, error::ApiError> {
    state
        .authorize(&caller, kl_core::Action::ReadAllTenants, None)
        .await?;
    // The data plane's exposition without its `# EOF`, then the control plane's registries.
    let data_plane = state.gateway.metrics();
    let text = data_plane
        .strip_suffix("# EOF\n")
        .unwrap_or(&data_plane)
        .to_owned()
        + &exposition(&[state.backup_metrics.registry(), state.cost_metrics.registry()]);
    Ok((
        [(
            http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    ))
}

/// One OpenMetrics text exposition of `registries`, ending in `# EOF`.
pub(crate) fn exposition(registries: &[&prometheus_client::registry::Registry]) -> String {
    use prometheus_client::encoding::text::{encode_eof, encode_registry};
    let mut text = String::new();
    for registry in registries {
        encode_registry(&mut text, registry).expect("writing to a String cannot fail");
    }
    encode_eof(&mut text).expect("writing to a String cannot fail");
    text
}

async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
}
