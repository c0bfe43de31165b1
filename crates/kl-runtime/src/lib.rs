//! Function instances: the runtime seam and its local implementation, which runs each
//! instance as a process serving HTTP on a unix socket (DESIGN §3, Instance), optionally inside
//! a sandbox (DESIGN §4, [`sandbox`]).

mod health;
mod local;
mod output;
pub mod sandbox;
mod secrets;

use std::path::PathBuf;

use async_trait::async_trait;
use kl_core::Launch;
use thiserror::Error;

pub use local::{Instance, Isolation, LocalRuntime, LocalRuntimeConfig};
pub use sandbox::{SandboxConfig, SupportReport, Usage};
pub use secrets::{InstanceSecrets, SecretFile, SecretSource};

/// What to start.
#[derive(Debug, Clone)]
pub struct StartRequest {
    pub tenant: String,
    pub function: String,
    /// Revision name, e.g. `hello-00002`.
    pub revision: String,
    pub launch: Launch,
    /// The function's log file; instance output is appended to it.
    pub log_path: PathBuf,
    /// Resource limits, enforced by the sandbox's cgroup (ignored without isolation).
    pub limits: Limits,
    /// The unprivileged user and group the sandboxed function runs as (one pair per tenant).
    pub uid: u32,
    pub gid: u32,
    /// Extra paths the sandbox exposes read-only: the dependency layers (Python's
    /// `KL_DEPS_DIR`, the cache entry Node's `node_modules` links to). The launch's working
    /// directory, its absolute path arguments (the shim) and the program's installation prefix
    /// are exposed without being listed; nothing is taken from the launch's environment, which
    /// users control.
    pub read_only: Vec<PathBuf>,
    /// The platform's egress proxy (HTTP CONNECT on a unix socket, host path). Without it, the
    /// sandbox has only loopback and all egress fails.
    pub egress_socket: Option<PathBuf>,
    /// The function's secrets, fetched when the instance starts.
    pub secrets: Option<std::sync::Arc<dyn SecretSource>>,
}

/// Resource limits of one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Memory (and, where the kernel accounts it, memory plus swap) in bytes.
    pub memory_bytes: u64,
    /// CPU time per wall-clock second, in thousandths of a core (`250` = a quarter core),
    /// once the instance is ready (sandboxed starts get at least one core until then).
    /// `0` means no CPU quota.
    pub cpu_millis: u32,
    /// Processes and threads, all together.
    pub pids: u32,
}

impl Default for Limits {
    /// 256 MiB, one core, 256 tasks.
    fn default() -> Limits {
        Limits {
            memory_bytes: 256 << 20,
            cpu_millis: 1000,
            pids: 256,
        }
    }
}

/// Why an instance could not be started.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// The process could not be spawned at all.
    #[error("could not start {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    /// The process exited before it became ready (e.g. the handler failed to load).
    #[error("the instance exited ({status}) before it was ready; last output:\n{output}")]
    ExitedEarly { status: String, output: String },
    /// The process did not answer its health check in time.
    #[error("the instance was not ready within {seconds}s; last output:\n{output}")]
    NotReady { seconds: u64, output: String },
    /// Files the runtime needs could not be created.
    #[error("runtime I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The runtime is configured to sandbox instances but this machine cannot enforce a
    /// required part of the sandbox (see [`SupportReport`]); nothing is started unsandboxed.
    #[error("cannot sandbox instances on this machine: {missing}")]
    SandboxUnavailable { missing: String },
    /// The instance's secrets could not be fetched (e.g. one was deleted); nothing started.
    #[error("cannot give {revision} its secrets: {reason}")]
    Secrets { revision: String, reason: String },
    /// The sandbox for this instance could not be prepared (cgroup, folders, program).
    #[error("cannot prepare the sandbox of {revision}: {reason}")]
    Sandbox { revision: String, reason: String },
}

/// Starts instances. Implementations: local processes (here), sandboxed processes, Knative.
#[async_trait]
pub trait Runtime: Send + Sync {
    /// Starts an instance and returns once it answers its health check.
    async fn start(&self, request: StartRequest) -> Result<std::sync::Arc<Instance>, RuntimeError>;

    /// Stops every instance this runtime started that still runs (server shutdown), each
    /// with SIGTERM and, after `grace`, SIGKILL.
    async fn stop_all(&self, grace: std::time::Duration);
}
