//! Server settings, with the embedded defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kl_build::UnpackLimits;
use kl_core::{Resources, SpecLimits};
use kl_runtime::Isolation;

/// Everything `kl server` can be told.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// The metadata store: PostgreSQL at this URL, or the SQLite file in the data dir (`None`).
    pub db: Option<String>,
    /// Dependency and build cache; defaults to `DATA_DIR/cache`. Safe to share between servers.
    pub cache_dir: Option<PathBuf>,
    pub unpack: UnpackLimits,
    /// Largest source upload accepted.
    pub max_upload_bytes: usize,
    /// Largest invocation request body (413 above it).
    pub max_request_bytes: usize,
    /// Largest invocation response body (502 above it).
    pub max_response_bytes: usize,
    pub build_concurrency: usize,
    pub build_timeout: Duration,
    pub spec_limits: SpecLimits,
    /// Idle instances stop after this long.
    pub idle_timeout: Duration,
    /// How long an instance may take to become ready.
    pub startup_timeout: Duration,
    /// What all instances together may hold; starts beyond it preempt lower priority
    /// classes or wait.
    pub capacity: Resources,
    /// How instances are isolated. The library default is none (embedding, tests); `kl
    /// server` sandboxes unless told `--isolation none`.
    pub isolation: Isolation,
    /// Processes and threads one instance may run.
    pub pids_per_instance: u32,
    /// Requests one revision may queue while its instances are busy (503 beyond).
    pub max_queue: usize,
    /// The autoscaler's platform defaults (Knative's unless set); functions override them.
    pub autoscaling: kl_core::AutoscalerConfig,
    /// Where uploads, sources and build contexts are kept.
    pub objects: crate::Objects,
    /// Where accepted events wait for delivery.
    pub bus: Bus,
    /// Size limits on ingested events (413 above them).
    pub event_limits: kl_events::http_binding::Limits,
    /// How long an accepted event's (source, id) is remembered: a repeat within it is
    /// acknowledged and not delivered again.
    pub dedupe_window: Duration,
    /// Event deliveries (and async invocations) running at once.
    pub dispatch_concurrency: usize,
    /// Metering and cost: rates, the sampling period, retention.
    pub metering: MeteringConfig,
    /// What one secret may hold, and how many a tenant keeps.
    pub secret_limits: kl_core::SecretLimits,
    /// The secrets keys (`KL_SECRETS_KEY`: base64, comma-separated, current first); without
    /// them, the key file `DATA_DIR/secrets.key`.
    pub secrets_key: Option<SecretsKeyText>,
    /// Where functions are built and run.
    pub backend: Backend,
    /// Scheduled backups (`--backup-to`); none by default.
    pub backup: Option<crate::BackupSchedule>,
}

/// Where functions are built and run (DESIGN §1, builder and runtime seams).
#[derive(Debug, Clone, Default)]
pub enum Backend {
    /// Built here (pip, npm, go) and run as local sandboxed processes.
    #[default]
    Local,
    /// Built by Kaniko Jobs and served by Knative Services in a cluster (boxed: it is large).
    Kubernetes(Box<KubernetesConfig>),
}

/// What the Kubernetes backend needs beyond the cluster's address (kubeconfig or the pod's
/// service account).
#[derive(Debug, Clone)]
pub struct KubernetesConfig {
    /// Image prefix builds push to: `<registry>/<tenant>/<function>:<nnnnn>`.
    pub registry: String,
    /// `kubernetes.io/dockerconfigjson` Secret in the build namespace with push rights.
    pub push_secret: String,
    /// Secret in the build namespace whose keys become the build's environment: the object
    /// store's credentials (`AWS_*`), so Kaniko can read the context.
    pub store_credentials_secret: Option<String>,
    /// Secret in each tenant namespace to pull images with; none when nodes can pull.
    pub pull_secret: Option<String>,
    /// How long a Knative Service may take to become Ready after it is applied.
    pub ready_timeout: Duration,
    /// With Knative Eventing, the `RabbitmqBrokerConfig` every tenant's Broker uses: triggers
    /// become Knative Triggers and PingSources, and accepted events go to the tenant's Broker.
    /// `None`: the platform's own bus delivers them, through the proxy to the Service.
    pub knative_eventing: Option<String>,
    /// Namespaces, priority classes and the build namespace, as rendered by `kl-k8s`.
    pub platform: kl_k8s::PlatformSettings,
}

impl KubernetesConfig {
    pub fn new(registry: String) -> KubernetesConfig {
        KubernetesConfig {
            registry,
            push_secret: "registry-push".to_owned(),
            store_credentials_secret: None,
            pull_secret: None,
            ready_timeout: Duration::from_secs(300),
            knative_eventing: None,
            platform: kl_k8s::PlatformSettings::default(),
        }
    }
}

/// Secrets keys as given; `Debug` never shows them.
#[derive(Clone)]
pub struct SecretsKeyText(pub String);

impl std::fmt::Debug for SecretsKeyText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKeyText(<redacted>)")
    }
}

/// The durable queue under eventing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bus {
    /// In the metadata store (SQLite or PostgreSQL): nothing else to run.
    Embedded,
    /// RabbitMQ at `url`, every exchange and queue named under `prefix`.
    Amqp { url: String, prefix: String },
}

/// How usage is metered and priced (DESIGN §6).
#[derive(Debug, Clone)]
pub struct MeteringConfig {
    /// Prices and currency, checked.
    pub rates: kl_core::RateCard,
    /// How often instances' cgroups are read and usage is written to the store.
    pub interval: Duration,
    /// Usage buckets older than this are deleted.
    pub retention: Duration,
    /// What the node offers for the cost model's idle capacity: its real cores (not the
    /// overcommitted admission capacity) and memory.
    pub node: Resources,
}

impl Default for MeteringConfig {
    fn default() -> MeteringConfig {
        let node = node_capacity();
        MeteringConfig {
            rates: kl_core::Rates::default()
                .validate()
                .expect("the default rates are valid"),
            interval: Duration::from_secs(10),
            retention: Duration::from_secs(400 * 24 * 3600),
            node: Resources {
                cpu_millis: node.cpu_millis / CPU_OVERCOMMIT,
                ..node
            },
        }
    }
}

impl ServerConfig {
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> ServerConfig {
        ServerConfig {
            data_dir,
            listen,
            cache_dir: None,
            unpack: UnpackLimits::default(),
            max_upload_bytes: 100 << 20,
            max_request_bytes: 6 << 20,
            max_response_bytes: 6 << 20,
            build_concurrency: 2,
            build_timeout: Duration::from_secs(600),
            spec_limits: SpecLimits::default(),
            idle_timeout: Duration::from_secs(300),
            startup_timeout: Duration::from_secs(30),
            capacity: node_capacity(),
            isolation: Isolation::None,
            pids_per_instance: 256,
            max_queue: 1000,
            autoscaling: kl_core::AutoscalerConfig::default(),
            objects: crate::Objects::Local,
            bus: Bus::Embedded,
            db: None,
            event_limits: kl_events::http_binding::Limits::default(),
            dedupe_window: Duration::from_secs(24 * 3600),
            dispatch_concurrency: 32,
            metering: MeteringConfig::default(),
            secret_limits: kl_core::SecretLimits::default(),
            secrets_key: None,
            backend: Backend::Local,
            backup: None,
        }
    }
}

/// How many times its cores the node's CPU is offered to instances.
const CPU_OVERCOMMIT: u64 = 4;

/// The default node capacity: CPU overcommitted 4× (instances rarely all run flat out, and the
/// cgroup quota still caps each one), memory as installed (a memory limit is a hard kill).
fn node_capacity() -> Resources {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(4 << 30);
    Resources {
        cpu_millis: cores * 1000 * CPU_OVERCOMMIT,
        memory_bytes,
    }
}

/// Where things live below the data dir.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
    pub cache: PathBuf,
}

impl Layout {
    pub fn db(&self) -> PathBuf {
        self.root.join("kl.db")
    }
    pub fn objects(&self) -> PathBuf {
        self.root.join("objects")
    }
    pub fn secrets_key(&self) -> PathBuf {
        self.root.join("secrets.key")
    }
    pub fn admin_token(&self) -> PathBuf {
        self.root.join("admin.token")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }
    /// The tenants' egress proxy sockets.
    pub fn egress_dir(&self) -> PathBuf {
        self.root.join("egress")
    }
    pub fn staging(&self) -> PathBuf {
        self.root.join("staging")
    }
    pub fn artifact(&self, tenant: &str, function: &str, number: i64) -> PathBuf {
        self.root
            .join("artifacts")
            .join(tenant)
            .join(function)
            .join(number.to_string())
    }
    pub fn function_artifacts(&self, tenant: &str, function: &str) -> PathBuf {
        self.root.join("artifacts").join(tenant).join(function)
    }
    pub fn build_log(&self, tenant: &str, function: &str, number: i64) -> PathBuf {
        self.root
            .join("builds")
            .join(tenant)
            .join(function)
            .join(format!("{number}.log"))
    }
    pub fn function_log(&self, tenant: &str, function: &str) -> PathBuf {
        self.root
            .join("logs")
            .join(tenant)
            .join(format!("{function}.log"))
    }
}
