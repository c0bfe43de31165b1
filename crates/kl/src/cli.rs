//! Command-line syntax.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kl_core::{Role, Runtime};

#[derive(Debug, Parser)]
#[command(
    name = "kl",
    version,
    about = "knative-lambda: serverless functions from plain source"
)]
pub struct Cli {
    #[command(flatten)]
    pub conn: Conn,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the server is and how to authenticate.
#[derive(Debug, Args)]
pub struct Conn {
    /// Server URL.
    #[arg(long, global = true, env = "KL_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Bearer token; defaults to the admin token in the data dir.
    #[arg(long, global = true, env = "KL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Data dir whose admin.token the CLI uses when no token is given.
    #[arg(long = "data-dir", global = true, env = "KL_DATA_DIR", default_value = ".kl")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the platform: control plane, builders, gateway, event broker.
    Server(ServerArgs),
    /// Start a server on a fresh data dir, deploy the examples, invoke them, keep serving.
    Quickstart(QuickstartArgs),
    /// Build and deploy a function from a directory, .tar.gz or .zip.
    Deploy(DeployArgs),
    /// Invoke a function and print its response body.
    Invoke(InvokeArgs),
    /// List functions.
    Ls(LsArgs),
    /// Show a function: revisions, instances, spec.
    Describe(DescribeArgs),
    /// Print a function's log.
    Logs(LogsArgs),
    /// Delete a function and its revisions.
    Rm(FunctionRef),
    /// Serve an older ready revision again (default: the one before the serving one).
    Rollback(RollbackArgs),
    #[command(flatten)]
    Access(AccessCommand),
    #[command(flatten)]
    Eventing(EventingCommand),
    /// Chargeback: what tenants and functions used and cost.
    #[command(subcommand)]
    Cost(CostCommand),
    /// Reconcile LambdaFunction resources in the current Kubernetes cluster (kubeconfig or
    /// in-cluster service account).
    Operator(OperatorArgs),
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    #[arg(long = "listen", env = "KL_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Dependency/build cache (default DATA_DIR/cache); may be shared between servers.
    #[arg(long = "cache-dir", env = "KL_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Where uploads, sources and build contexts are kept: DATA_DIR/objects (default) or
    /// `s3://BUCKET[/PREFIX]`, reached with the standard AWS_* variables (AWS_REGION,
    /// AWS_ENDPOINT for S3-compatible servers, credentials; AWS_ALLOW_HTTP=true for http://).
    #[arg(long, env = "KL_STORE")]
    pub store: Option<String>,
    /// Where functions are built and run: `local` (sandboxed processes on this machine) or
    /// `kubernetes` (Kaniko build Jobs and Knative Services in the cluster of the in-cluster
    /// service account or KUBECONFIG; needs `--store s3://…` and `--registry`).
    #[arg(long, env = "KL_BACKEND", value_enum, default_value_t = BackendKind::Local)]
    pub backend: BackendKind,
    /// With `--backend kubernetes`: the image prefix builds push to, as
    /// `REGISTRY/TENANT/FUNCTION:NNNNN` (e.g. `ghcr.io/acme/functions`).
    #[arg(long, env = "KL_REGISTRY")]
    pub registry: Option<String>,
    /// With `--backend kubernetes`: the `kubernetes.io/dockerconfigjson` Secret in the build
    /// namespace that may push to the registry.
    #[arg(
        long = "registry-push-secret",
        env = "KL_REGISTRY_PUSH_SECRET",
        default_value = "registry-push"
    )]
    pub registry_push_secret: String,
    /// With `--backend kubernetes`: a Secret in the build namespace holding the object store's
    /// `AWS_*` credentials for Kaniko (none when the build pods' identity can read the bucket).
    #[arg(long = "store-credentials-secret", env = "KL_STORE_CREDENTIALS_SECRET")]
    pub store_credentials_secret: Option<String>,
    /// Who delivers events to functions: `platform` (the server's own bus, `--bus`) or, with
    /// `--backend kubernetes`, `knative` (Knative Eventing: a RabbitMQ-class Broker per tenant,
    /// triggers as Triggers and PingSources; accepted events go to the tenant's Broker).
    #[arg(long, env = "KL_EVENTING", value_enum, default_value_t = EventingKind::Platform)]
    pub eventing: EventingKind,
    /// With `--eventing knative`: the `RabbitmqBrokerConfig` in each tenant namespace that its
    /// Broker uses.
    #[arg(
        long = "rabbitmq-broker-config",
        env = "KL_RABBITMQ_BROKER_CONFIG",
        default_value = "kl-rabbitmq"
    )]
    pub rabbitmq_broker_config: String,
    /// Stop an instance after this long without requests.
    #[arg(long = "idle-timeout", default_value = "5m", value_parser = parse_duration)]
    pub idle_timeout: std::time::Duration,
    /// Builds running at once; further builds queue.
    #[arg(long = "build-concurrency", default_value_t = 2)]
    pub build_concurrency: usize,
    /// A build taking longer fails.
    #[arg(long = "build-timeout", default_value = "10m", value_parser = parse_duration)]
    pub build_timeout: std::time::Duration,
    /// Most entries in an uploaded archive.
    #[arg(long = "max-archive-entries", default_value_t = 10_000)]
    pub max_archive_entries: usize,
    /// Most bytes an uploaded archive may unpack to.
    #[arg(long = "max-archive-bytes", default_value = "200Mi", value_parser = parse_bytes)]
    pub max_archive_bytes: u64,
    /// Largest invocation request body.
    #[arg(long = "max-request-body", default_value = "6Mi", value_parser = parse_bytes)]
    pub max_request_bytes: u64,
    /// CPU all instances may hold together (default 4× the cores); higher priority classes
    /// preempt lower ones beyond it.
    #[arg(long = "capacity-cpu", value_parser = parse_cpu)]
    pub capacity_cpu: Option<u64>,
    /// Memory all instances may hold together (default: the machine's).
    #[arg(long = "capacity-memory", value_parser = parse_bytes)]
    pub capacity_memory: Option<u64>,
    /// Requests one revision may queue while its instances are busy (503 beyond).
    #[arg(long = "max-queue", default_value_t = 1000)]
    pub max_queue: usize,
    /// How instances are isolated: a sandbox per instance (refusing to start where it cannot
    /// be enforced), none (development only), or auto (the sandbox where possible).
    #[arg(long, value_enum, default_value = "sandbox")]
    pub isolation: IsolationMode,
    /// Sandboxes kept made ahead of need (namespaces and processes ready, no function yet),
    /// so that a cold start skips making one. 0 makes each on demand.
    #[arg(long = "warm-sandboxes", default_value_t = kl_runtime::sandbox::DEFAULT_WARM_SHELLS)]
    pub warm_sandboxes: usize,
    /// Where accepted events wait for delivery: `embedded` (in the metadata store) or a
    /// RabbitMQ URL, `amqp://USER:PASS@HOST:5672/VHOST`.
    #[arg(long, env = "KL_BUS", default_value = "embedded", hide_env_values = true)]
    pub bus: String,
    /// The metadata store: a PostgreSQL URL, `postgres://USER:PASS@HOST:5432/DB` (the database
    /// must exist; TLS with `?sslmode=require`, or `verify-full&sslrootcert=CA.pem`), instead
    /// of the SQLite file in the data dir.
    #[arg(long, env = "KL_DB", hide_env_values = true)]
    pub db: Option<String>,
    /// Take a backup every --backup-every to this location: `s3://BUCKET[/PREFIX]` or an
    /// absolute folder (best on another disk). No scheduled backups without it.
    #[arg(long = "backup-to", env = "KL_BACKUP_TO")]
    pub backup_to: Option<String>,
    /// How often scheduled backups run: at most this much recent data is lost with the disk.
    #[arg(long = "backup-every", env = "KL_BACKUP_EVERY", default_value = "1h", value_parser = parse_duration)]
    pub backup_every: std::time::Duration,
    /// How many scheduled snapshots to keep (older ones and blobs only they use are deleted).
    #[arg(long = "backup-keep", env = "KL_BACKUP_KEEP", default_value_t = 24)]
    pub backup_keep: usize,
    /// Prefix of the RabbitMQ exchanges and queues, so platforms can share a vhost.
    #[arg(long = "bus-prefix", env = "KL_BUS_PREFIX", default_value = "kl")]
    pub bus_prefix: String,
    /// How long an accepted event's (source, id) is remembered: a repeat is not delivered again.
    #[arg(long = "dedupe-window", default_value = "24h", value_parser = parse_duration)]
    pub dedupe_window: std::time::Duration,
    /// Event deliveries and async invocations running at once.
    #[arg(long = "dispatch-concurrency", default_value_t = 32)]
    pub dispatch_concurrency: usize,
    /// Rates and currency for cost reports, a YAML or JSON file (`cpuCoreHour`,
    /// `memoryGbHour`, `invocationPerMillion`, `invocationGbSecond`, `buildMinute`,
    /// `storageGbMonth`, `currency`); absent fields take the defaults.
    #[arg(long)]
    pub rates: Option<PathBuf>,
    /// How often instances' cgroups are read and usage is stored.
    #[arg(long = "meter-interval", default_value = "10s", value_parser = parse_duration)]
    pub meter_interval: std::time::Duration,
    /// How long per-minute usage is kept.
    #[arg(long = "usage-retention", default_value = "400d", value_parser = parse_duration)]
    pub usage_retention: std::time::Duration,
}

/// `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    Local,
    Kubernetes,
}

/// `--eventing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventingKind {
    Platform,
    Knative,
}

/// `--isolation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IsolationMode {
    Sandbox,
    None,
    Auto,
}

#[derive(Debug, Args)]
pub struct QuickstartArgs {
    #[arg(long = "listen", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Folder of example functions to deploy.
    #[arg(long, default_value = "examples")]
    pub examples: PathBuf,
    /// Deploy and invoke, then exit instead of serving.
    #[arg(long)]
    pub no_serve: bool,
    /// As for `kl server`; by default the sandbox where this machine can enforce it.
    #[arg(long, value_enum, default_value = "auto")]
    pub isolation: IsolationMode,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// A directory, .tar.gz/.tgz/.tar or .zip.
    pub path: PathBuf,
    /// Function name (default: `name` in kl.yaml, else the directory or archive name).
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, default_value = "default")]
    pub tenant: String,
    #[arg(long, value_parser = parse_runtime)]
    pub runtime: Option<Runtime>,
    /// Handler, e.g. main.handler (Python) or index.handler (Node).
    #[arg(long)]
    pub handler: Option<String>,
    /// Environment variable K=V; repeatable.
    #[arg(long = "env", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Memory per instance, e.g. 256Mi.
    #[arg(long)]
    pub memory: Option<String>,
    /// CPU per instance, e.g. 250m or 1.
    #[arg(long)]
    pub cpu: Option<String>,
    /// Priority class: high, medium, low or best-effort (at most the tenant's).
    #[arg(long)]
    pub priority: Option<kl_core::PriorityClass>,
    /// Request timeout, e.g. 30s.
    #[arg(long)]
    pub timeout: Option<String>,
    /// Concurrent requests per instance.
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// Most instances.
    #[arg(long = "max-scale")]
    pub max_scale: Option<u32>,
    /// Instances kept running even without traffic.
    #[arg(long = "min-scale")]
    pub min_scale: Option<u32>,
    /// Allow invocation without a token.
    #[arg(long)]
    pub public: bool,
    /// Mount a secret's keys as read-only files ($KL_SECRETS_DIR/NAME/KEY); repeatable.
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// Environment variable from a secret key, VAR=NAME.KEY; repeatable.
    #[arg(long = "secret-env", value_parser = parse_secret_env)]
    pub secret_env: Vec<(String, kl_core::SecretKeyRef)>,
    /// Deploy to this environment of the tenant (its tenant TENANT-ENV).
    #[arg(long = "env-name")]
    pub env_name: Option<String>,
    /// Return once the upload is accepted, without waiting for the build.
    #[arg(long = "no-wait")]
    pub no_wait: bool,
}

#[derive(Debug, Args)]
pub struct FunctionRef {
    pub name: String,
    #[arg(long, default_value = "default")]
    pub tenant: String,
}

#[derive(Debug, Args)]
pub struct InvokeArgs {
    #[command(flatten)]
    pub function: FunctionRef,
    /// Request body: JSON or text, or @FILE.
    #[arg(long, short = 'd')]
    pub data: Option<String>,
    /// Path below the function, e.g. /users/1?x=2.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// HTTP method (default POST).
    #[arg(long, short = 'X', default_value = "POST")]
    pub method: String,
    /// Extra header NAME:VALUE; repeatable.
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// Print the status line and headers to stderr.
    #[arg(long, short = 'i')]
    pub include: bool,
    /// Queue the call and print its invocation id (`kl invocation get ID` shows the outcome).
    #[arg(long = "async")]
    pub run_async: bool,
    /// Where the async call's response event goes besides triggers: a function NAME or an
    /// http:// URL.
    #[arg(long, requires = "run_async")]
    pub destination: Option<String>,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub function: FunctionRef,
    /// The revision number to serve.
    #[arg(long)]
    pub to: Option<i64>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// Every tenant's functions.
    #[arg(long, short = 'A')]
    pub all: bool,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    #[command(flatten)]
    pub function: FunctionRef,
    /// Print the generated Dockerfile of the serving (or latest) revision.
    #[arg(long)]
    pub dockerfile: bool,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub function: FunctionRef,
    /// Keep printing new lines.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Start with the last N lines.
    #[arg(long, default_value_t = 100)]
    pub tail: usize,
}

/// Tenancy, access and declarative specs.
#[derive(Debug, Subcommand)]
pub enum AccessCommand {
    /// Create, list, show, change and delete tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Create, list and revoke API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Show the newest denied requests (platform admins and operators).
    Audit(AuditArgs),
    /// Create or update what a spec file describes; prints what changed.
    Apply(ApplyArgs),
    /// Print an object as a spec file that `kl apply -f` takes back unchanged.
    #[command(subcommand)]
    Export(ExportCommand),
    /// Set, list and delete a tenant's secrets (values go in, never come back out).
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Platform administration.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Create, list and delete a tenant's environments (shares of its quotas).
    #[command(subcommand)]
    Env(EnvCommand),
    /// Serve the exact revision serving in one environment in another (no build).
    Promote(PromoteArgs),
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Create an environment, run as tenant TENANT-NAME.
    Create(EnvCreateArgs),
    /// List environments with their shares.
    Ls(SecretLsArgs),
    /// Delete an environment without functions.
    Rm(SecretRmArgs),
}

#[derive(Debug, Args)]
pub struct EnvCreateArgs {
    pub name: String,
    /// Percent of each of the tenant's quotas (shares sum to at most 100).
    #[arg(long)]
    pub share: u8,
    /// Priority class, at most the tenant's (default: the tenant's).
    #[arg(long)]
    pub priority: Option<kl_core::PriorityClass>,
    #[arg(long, default_value = "default")]
    pub tenant: String,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    pub function: String,
    #[arg(long)]
    pub from: String,
    #[arg(long)]
    pub to: String,
    #[arg(long, default_value = "default")]
    pub tenant: String,
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Create or replace a secret with all its keys (functions using it roll a new revision).
    Set(SecretSetArgs),
    /// List secrets: names, keys, versions, times (never values).
    Ls(SecretLsArgs),
    /// Delete a secret no function uses.
    Rm(SecretRmArgs),
}

#[derive(Debug, Args)]
pub struct SecretSetArgs {
    pub name: String,
    /// KEY=VALUE pairs (visible to other local users in the process list: prefer --from-file).
    /// Parsed by the command, not by clap, whose errors repeat the argument.
    pub values: Vec<String>,
    /// KEY=PATH: the key's value is the file's contents (UTF-8); repeatable.
    #[arg(long = "from-file")]
    pub from_file: Vec<String>,
    #[arg(long, default_value = "default")]
    pub tenant: String,
}

#[derive(Debug, Args)]
pub struct SecretLsArgs {
    #[arg(long, default_value = "default")]
    pub tenant: String,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct SecretRmArgs {
    pub name: String,
    #[arg(long, default_value = "default")]
    pub tenant: String,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Make a new secrets key current and re-encrypt every secret under it.
    RotateKey(OutputArgs),
    /// Snapshot the whole platform while it serves: metadata, objects, built artifacts.
    Backup(BackupArgs),
    /// Rebuild a platform from a backup onto a fresh data dir (or database), before
    /// starting its server. Runs here, not through the server.
    Restore(RestoreArgs),
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// `s3://BUCKET[/PREFIX]` (the server's AWS_* settings reach it), or a folder on the
    /// server's machine (a relative one is taken from here).
    #[arg(long)]
    pub to: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup location: a folder, or `s3://BUCKET[/PREFIX]` (AWS_* settings).
    #[arg(long)]
    pub from: String,
    /// The snapshot to restore (default: the newest complete one).
    #[arg(long)]
    pub snapshot: Option<String>,
    /// Restore the metadata into this PostgreSQL database (empty), not the data dir's SQLite.
    #[arg(long, env = "KL_DB", hide_env_values = true)]
    pub db: Option<String>,
    /// Restore objects into this S3 location, not the data dir.
    #[arg(long, env = "KL_STORE")]
    pub store: Option<String>,
    /// The build cache the restored server will use (its --cache-dir), where dependency
    /// layers go; DATA_DIR/cache without it.
    #[arg(long = "cache-dir", env = "KL_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant.
    Create(TenantWriteArgs),
    /// List tenants with their usage.
    Ls(OutputArgs),
    /// Show a tenant's settings and its usage against every quota.
    Describe(TenantDescribeArgs),
    /// Change a tenant's settings; prints what changed.
    Update(TenantWriteArgs),
    /// Delete a tenant (refused while it has functions) and its tokens.
    Rm(TenantRef),
}

/// A tenant spec given by flags and/or a file.
#[derive(Debug, Args)]
pub struct TenantSpecArgs {
    /// A tenant spec file (YAML or JSON; `-` for stdin): a `kind: Tenant` document as
    /// `kl export tenant` prints it, or the bare spec. Flags win over it.
    #[arg(long = "file", short = 'f')]
    pub file: Option<PathBuf>,
    /// Most functions the tenant may have.
    #[arg(long)]
    pub functions: Option<u32>,
    /// Most builds the tenant may run at once.
    #[arg(long = "concurrent-builds")]
    pub concurrent_builds: Option<u32>,
    /// What the tenant may spend per budget period, in the rates' currency (e.g. 250.00).
    #[arg(long)]
    pub budget: Option<String>,
    /// The budget's period: day, week or month.
    #[arg(long = "budget-period", value_parser = ["day", "week", "month"])]
    pub budget_period: Option<String>,
    /// Percentages of the budget that raise an alert, e.g. 50,80,100.
    #[arg(long = "budget-thresholds", value_delimiter = ',')]
    pub budget_thresholds: Option<Vec<u16>>,
    /// Whether a spent budget refuses new instances (429) until the period ends.
    #[arg(long = "budget-hard-cap")]
    pub budget_hard_cap: Option<bool>,
    /// An http(s) URL that receives each budget alert as JSON.
    #[arg(long = "budget-webhook")]
    pub budget_webhook: Option<String>,
}

/// `kl tenant create` and `kl tenant update`.
#[derive(Debug, Args)]
pub struct TenantWriteArgs {
    pub name: String,
    #[command(flatten)]
    pub spec: TenantSpecArgs,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct TenantDescribeArgs {
    pub name: String,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct TenantRef {
    pub name: String,
}

#[derive(Debug, Args)]
pub struct OutputArgs {
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Format,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret is printed once and never again.
    Create(TokenCreateArgs),
    /// List tokens (never their secrets).
    Ls(TokenLsArgs),
    /// Revoke a token at once.
    Revoke(TokenRevokeArgs),
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// admin, operator (all tenants), tenant-admin, developer or viewer (one tenant).
    #[arg(long, value_parser = parse_role)]
    pub role: Role,
    /// The tenant of a tenant role.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Who holds it (default: the role and tenant).
    #[arg(long)]
    pub name: Option<String>,
    /// Lifetime, e.g. 30d, 12h, 90s (default: no expiry).
    #[arg(long, value_parser = parse_lifetime)]
    pub expires: Option<String>,
    /// Print only the secret (for scripts).
    #[arg(long, short = 'q')]
    pub quiet: bool,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct TokenLsArgs {
    /// Only this tenant's tokens.
    #[arg(long)]
    pub tenant: Option<String>,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct TokenRevokeArgs {
    /// The token's id (`kl token ls`), not its secret.
    pub id: String,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Newest N entries (the server's default is 100).
    #[arg(long)]
    pub limit: Option<u32>,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The spec file (YAML or JSON, several `---` documents allowed); `-` reads stdin.
    #[arg(long = "file", short = 'f')]
    pub file: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// A tenant as a `kind: Tenant` document.
    Tenant(TenantRef),
    /// A trigger as a `kind: Trigger` document.
    Trigger(TriggerRef),
    /// The platform's state as Kubernetes and Knative objects (multi-document YAML, for GitOps).
    K8s(ExportK8sArgs),
    /// The LambdaFunction CustomResourceDefinition that `kl operator` serves.
    Crd,
}

#[derive(Debug, Args)]
pub struct ExportK8sArgs {
    /// Only this tenant's objects (without the cluster-wide ones).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Registry and path images are pushed to: `<registry>/<tenant>/<function>:<revision>`.
    #[arg(
        long,
        env = "KL_REGISTRY",
        default_value = "registry.example.com/knative-lambda"
    )]
    pub registry: String,
}

#[derive(Debug, Args)]
pub struct OperatorArgs {
    /// Registry and path built images are pushed to: `<registry>/<tenant>/<function>:<id>`.
    #[arg(long, env = "KL_REGISTRY")]
    pub registry: String,
    /// Secret (`kubernetes.io/dockerconfigjson`) in the build namespace with push rights.
    #[arg(long = "push-secret", default_value = "registry-push")]
    pub push_secret: String,
    /// Repository for Kaniko's layer cache.
    #[arg(long = "cache-repo")]
    pub cache_repo: Option<String>,
    /// Push over plain HTTP.
    #[arg(long = "insecure-registry")]
    pub insecure_registry: bool,
    /// Bucket holding `source.archive` keys.
    #[arg(long, env = "KL_SOURCE_BUCKET", default_value = "kl-sources")]
    pub bucket: String,
    /// Secret with object-store credentials for builds (`AWS_ACCESS_KEY_ID`, …).
    #[arg(long = "credentials-secret")]
    pub credentials_secret: Option<String>,
    /// Namespace the build Jobs run in.
    #[arg(long = "build-namespace", default_value = "knative-lambda-builds")]
    pub build_namespace: String,
}

/// Events, triggers and async invocations.
#[derive(Debug, Subcommand)]
pub enum EventingCommand {
    /// Send events, follow them, upload sources for command events, handle dead letters.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Route a tenant's events (or a schedule) to a function.
    #[command(subcommand)]
    Trigger(TriggerCommand),
    /// Show async invocations.
    #[command(subcommand)]
    Invocation(InvocationCommand),
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Send one CloudEvent (binary mode) to the tenant's broker.
    Send(SendArgs),
    /// Follow the tenant's events live (ingested, lifecycle, responses, pings).
    Tail(TailArgs),
    /// Put a source archive (or a directory, packed) in the object store for command events.
    Upload(UploadArgs),
    /// List, show and replay dead letters.
    #[command(subcommand)]
    Dlq(DlqCommand),
}

#[derive(Debug, Args)]
pub struct SendArgs {
    #[arg(long = "type")]
    pub ty: String,
    #[arg(long, default_value = "/kl/cli")]
    pub source: String,
    /// Default: a fresh UUID. Sending the same source and id again is acknowledged once.
    #[arg(long)]
    pub id: Option<String>,
    #[arg(long)]
    pub subject: Option<String>,
    /// The data: JSON, text, or @FILE.
    #[arg(long, short = 'd')]
    pub data: Option<String>,
    /// The data's content type (default: JSON when it parses as JSON, else text).
    #[arg(long = "content-type")]
    pub content_type: Option<String>,
    /// An extension attribute NAME=VALUE; repeatable.
    #[arg(long = "ext", value_parser = parse_env)]
    pub extensions: Vec<(String, String)>,
    #[arg(long, default_value = "default")]
    pub tenant: String,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// ATTRIBUTE=VALUE, ATTRIBUTE=prefix:VALUE or ATTRIBUTE=suffix:VALUE; repeatable (all hold).
    #[arg(long = "filter")]
    pub filters: Vec<String>,
    #[arg(long, default_value = "default")]
    pub tenant: String,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// An archive (.tar.gz, .tgz, .tar, .zip) or a directory (packed, honouring .klignore).
    pub path: PathBuf,
    /// The name to store it under (default: the file name; a directory's name + .tar.gz).
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, default_value = "default")]
    pub tenant: String,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// The oldest dead letters.
    Ls(DlqLsArgs),
    /// One dead letter, with its event.
    Show(DeadLetterRef),
    /// Queue a dead letter again (it is delivered once more, from its first attempt).
    Replay(DeadLetterRef),
}

#[derive(Debug, Args)]
pub struct DlqLsArgs {
    #[arg(long, default_value = "default")]
    pub tenant: String,
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct DeadLetterRef {
    pub id: String,
    #[arg(long, default_value = "default")]
    pub tenant: String,
}

#[derive(Debug, Subcommand)]
pub enum TriggerCommand {
    /// Create a trigger.
    Create(TriggerCreateArgs),
    /// List triggers.
    Ls(TriggerLsArgs),
    /// Show a trigger.
    Describe(TriggerDescribeArgs),
    /// Delete a trigger.
    Rm(TriggerRef),
}

#[derive(Debug, Args)]
pub struct TriggerRef {
    pub name: String,
    #[arg(long, default_value = "default")]
    pub tenant: String,
}

#[derive(Debug, Args)]
pub struct TriggerCreateArgs {
    pub name: String,
    /// The function events are delivered to.
    #[arg(long)]
    pub function: String,
    /// ATTRIBUTE=VALUE (exact), ATTRIBUTE=prefix:VALUE or ATTRIBUTE=suffix:VALUE, on `type`,
    /// `source`, `subject` or any extension; repeatable, all must hold; none matches every event.
    #[arg(long = "filter")]
    pub filters: Vec<String>,
    /// Ping the function on this cron schedule (UTC), e.g. '*/5 * * * *', instead of filtering.
    #[arg(long, conflicts_with = "filters")]
    pub schedule: Option<String>,
    /// JSON data of each scheduled ping.
    #[arg(long, requires = "schedule")]
    pub data: Option<String>,
    /// Retries after the first attempt (default 10).
    #[arg(long)]
    pub retries: Option<u32>,
    /// The unit of backoff, e.g. 200ms (default).
    #[arg(long = "backoff-delay", value_parser = parse_duration)]
    pub backoff_delay: Option<std::time::Duration>,
    /// exponential (default) or linear.
    #[arg(long = "backoff-policy", value_parser = ["exponential", "linear"])]
    pub backoff_policy: Option<String>,
    /// Cap on one backoff (default 5m).
    #[arg(long = "backoff-max", value_parser = parse_duration)]
    pub backoff_max: Option<std::time::Duration>,
    /// Deadline of one delivery attempt (default: the function's timeout).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<std::time::Duration>,
    /// Where events go once retries are spent, besides the dead-letter queue: a function
    /// NAME or an http:// URL.
    #[arg(long = "dead-letter")]
    pub dead_letter: Option<String>,
    #[arg(long, default_value = "default")]
    pub tenant: String,
}

#[derive(Debug, Args)]
pub struct TriggerLsArgs {
    #[arg(long, default_value = "default")]
    pub tenant: String,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct TriggerDescribeArgs {
    #[command(flatten)]
    pub trigger: TriggerRef,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Format,
}

#[derive(Debug, Subcommand)]
pub enum InvocationCommand {
    /// An async invocation's status and result.
    Get(InvocationGetArgs),
}

#[derive(Debug, Args)]
pub struct InvocationGetArgs {
    pub id: String,
    #[arg(long, default_value = "default")]
    pub tenant: String,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Format,
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

fn parse_lifetime(s: &str) -> Result<String, String> {
    match kl_core::parse_duration(s) {
        Ok(0) => Err("a token lifetime must be longer than zero".into()),
        Ok(_) => Ok(s.trim().to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_runtime(s: &str) -> Result<Runtime, String> {
    s.parse().map_err(|e: kl_core::SpecError| e.to_string())
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected K=V, got {s:?}"))
}

fn parse_secret_env(s: &str) -> Result<(String, kl_core::SecretKeyRef), String> {
    let (var, from) = s
        .split_once('=')
        .ok_or_else(|| format!("expected VAR=NAME.KEY, got {s:?}"))?;
    Ok((
        var.to_owned(),
        from.parse().map_err(|e: kl_core::SecretError| e.to_string())?,
    ))
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    kl_core::parse_duration(s)
        .map(std::time::Duration::from_millis)
        .map_err(|e| e.to_string())
}

fn parse_cpu(s: &str) -> Result<u64, String> {
    kl_core::parse_cpu(s).map_err(|e| e.to_string())
}

fn parse_bytes(s: &str) -> Result<u64, String> {
    kl_core::parse_memory(s).map_err(|e| e.to_string())
}

#[derive(Debug, Subcommand)]
pub enum CostCommand {
    /// Usage and cost over a window, by function, day or resource (idle capacity on its own
    /// rows for platform roles).
    Report(CostReportArgs),
    /// The costliest functions (or tenants) over a window.
    Top(CostTopArgs),
}

/// Which window a cost command covers: `--from`/`--to`, `--period`, or OpenCost's `--window`;
/// the current month by default. Windows are UTC and half-open.
#[derive(Debug, Args)]
pub struct CostWindowArgs {
    /// Only this tenant (a tenant token always sees only its own).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Start: a date (2026-11-01), an RFC 3339 time or Unix seconds; with --to.
    #[arg(long, requires = "to", conflicts_with_all = ["period", "window"])]
    pub from: Option<String>,
    /// End (excluded); with --from.
    #[arg(long, requires = "from")]
    pub to: Option<String>,
    /// The current day, week (ISO, from Monday) or month.
    #[arg(long, value_parser = ["day", "week", "month"], conflicts_with = "window")]
    pub period: Option<String>,
    /// OpenCost's window: today, yesterday, week, lastweek, month, lastmonth, 7d, 24h, FROM,TO.
    #[arg(long)]
    pub window: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum CostFormat {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Args)]
pub struct CostReportArgs {
    #[command(flatten)]
    pub window: CostWindowArgs,
    /// Rows by: function, day, resource or tenant; comma-separated for several.
    #[arg(long, default_value = "function")]
    pub by: String,
    /// Split the window: day, week, month or a duration (1h).
    #[arg(long)]
    pub step: Option<String>,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: CostFormat,
}

#[derive(Debug, Args)]
pub struct CostTopArgs {
    #[command(flatten)]
    pub window: CostWindowArgs,
    /// Rank functions or tenants.
    #[arg(long, value_parser = ["function", "tenant"], default_value = "function")]
    pub by: String,
    /// How many to show.
    #[arg(long, short = 'n', default_value_t = 10)]
    pub limit: usize,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Format,
}
