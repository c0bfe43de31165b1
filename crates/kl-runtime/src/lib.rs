//! Function instances: the runtime seam and its local implementation, which runs each
//! instance as a process serving HTTP on a unix socket (DESIGN §3, Instance).

mod health;
mod local;
mod output;

use std::path::PathBuf;

use async_trait::async_trait;
use kl_core::Launch;
use thiserror::Error;

pub use local::{Instance, LocalRuntime, LocalRuntimeConfig};

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
