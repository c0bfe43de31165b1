//! `kl server`: the control plane (`/v1`), the gateway (`/fn`) and health (`/healthz`) on one
//! listener, wired to the embedded defaults: SQLite, a local object store, the in-process
//! event bus and the local process runtime.

mod auth;
mod build_slots;
mod config;
mod cost;
mod deploy;
mod error;
mod functions;
mod invoke;
mod logs;
mod quota;
mod state;
mod tenants;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::routing::{any, get, put};
use kl_build::{Builder, BuilderConfig};
use kl_events::InProcessBus;
use kl_gateway::egress::{EgressConfig, EgressProxies};
use kl_gateway::{Gateway, GatewayConfig};
use kl_runtime::{LocalRuntime, LocalRuntimeConfig};
use kl_store::Store;
use tokio::net::TcpListener;

use config::Layout;
pub use config::{MeteringConfig, ServerConfig};
use state::AppState;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot prepare the data dir {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] kl_store::StoreError),
    #[error("cannot open the object store: {0}")]
    Objects(#[from] object_store::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("cannot create the admin token: {0}")]
    Bootstrap(String),
    #[error("server error: {0}")]
    Serve(std::io::Error),
    /// Sandboxing was asked for and the machine cannot enforce it.
    #[error(
        "the instance sandbox cannot be enforced here ({missing}); run `kl server` as root on a Linux kernel with cgroups, or pass --isolation none for development (no isolation between functions)"
    )]
    SandboxUnavailable { missing: String },
}

/// A bound server, ready to serve.
pub struct Server {
    listener: TcpListener,
    state: Arc<AppState>,
}

impl Server {
    /// Prepares the data dir, opens the stores, restores functions and binds the listener.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
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
        for dir in [&layout.objects(), &layout.staging(), &layout.egress_dir()] {
            absolute(dir)?;
        }
        let store = Store::open_sqlite(&layout.db()).await?;
        store.ensure_tenant("default").await?;
        auth::bootstrap_admin(&store, &layout.admin_token())
            .await
            .map_err(|e| ServerError::Bootstrap(e.to_string()))?;
        let objects = object_store::local::LocalFileSystem::new_with_prefix(layout.objects())?;
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
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Listen {
                addr: config.listen.to_string(),
                source,
            })?;
        let state = Arc::new(AppState {
            tokens: auth::Tokens::load(&store).await?,
            metering: tokio::sync::Mutex::new(cost::Metering::load(&store).await?),
            cost_metrics: cost::CostMetrics::new(),
            store,
            objects: Arc::new(objects),
            bus: Arc::new(InProcessBus::new(1024)),
            builder,
            gateway,
            egress: EgressProxies::new(layout.egress_dir(), EgressConfig::default()),
            builds: build_slots::BuildSlots::new(config.build_concurrency),
            promote: tokio::sync::Mutex::new(()),
            tenant_builds: quota::TenantBuilds::default(),
            layout,
            config,
        });
        for tenant in state.store.tenants().await? {
            state.apply_tenant(&tenant.name, &tenant.spec);
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

    /// Follows the lifecycle events published from now on.
    pub fn subscribe_events(&self) -> tokio::sync::broadcast::Receiver<kl_events::CloudEvent> {
        self.state.bus.subscribe()
    }

    /// Serves until `shutdown` resolves, then stops every instance it started.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServerError> {
        let app = router(self.state.clone());
        tokio::spawn(cost::run(
            Arc::downgrade(&self.state),
            self.state.config.metering.interval,
        ));
        tracing::info!(addr = %self.local_addr(), data_dir = %self.state.layout.root.display(), "kl server listening");
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        tracing::info!("shutting down: metering, then stopping instances");
        cost::tick(&self.state).await;
        self.state.gateway.shutdown().await;
        served.map_err(ServerError::Serve)
    }
}

fn router(state: Arc<AppState>) -> Router {
    let fns = "/v1/tenants/{tenant}/functions";
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
    // Two registries, one exposition: the data plane's without its `# EOF`, then usage.
    let data_plane = state.gateway.metrics();
    let text = data_plane
        .strip_suffix("# EOF\n")
        .unwrap_or(&data_plane)
        .to_owned()
        + &state.cost_metrics.encode();
    Ok((
        [(
            http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    ))
}

async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
}
