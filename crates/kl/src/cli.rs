//! Command-line syntax.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kl_core::Runtime;

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
    /// Run the platform: control plane, builders, gateway.
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
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    #[arg(long = "listen", env = "KL_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Dependency/build cache (default DATA_DIR/cache); may be shared between servers.
    #[arg(long = "cache-dir", env = "KL_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
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
    /// Allow invocation without a token.
    #[arg(long)]
    pub public: bool,
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

fn parse_runtime(s: &str) -> Result<Runtime, String> {
    s.parse().map_err(|e: kl_core::SpecError| e.to_string())
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected K=V, got {s:?}"))
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
