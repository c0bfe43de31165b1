//! The local runtime: each instance is a child process in its own process group, serving on a
//! unix socket under the runtime's folder, with a clean environment.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rustix::process::{Pid, Signal, kill_process_group};
use tokio::process::Command;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::health::probe;
use crate::output::{Tail, pump};
use crate::{Runtime, RuntimeError, StartRequest};

/// Settings of the local runtime.
#[derive(Debug, Clone)]
pub struct LocalRuntimeConfig {
    /// Folder for instance sockets; keep it short (unix socket paths are limited to 107 bytes).
    pub run_dir: PathBuf,
    /// How long an instance may take to answer its first health check.
    pub startup_timeout: Duration,
}

/// Instances still running, by id; an instance leaves when its process exits.
type Live = Arc<Mutex<HashMap<String, Arc<Instance>>>>;

/// Runs instances as local processes.
#[derive(Debug)]
pub struct LocalRuntime {
    config: LocalRuntimeConfig,
    live: Live,
}

impl LocalRuntime {
    pub fn new(config: LocalRuntimeConfig) -> std::io::Result<LocalRuntime> {
        std::fs::create_dir_all(&config.run_dir)?;
        Ok(LocalRuntime {
            config,
            live: Live::default(),
        })
    }
}

/// A running instance. Dropping it does not stop it: call [`Instance::kill`] or
/// [`Instance::stop`].
#[derive(Debug)]
pub struct Instance {
    pub id: String,
    pub revision: String,
    pub socket: PathBuf,
    pub pid: u32,
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// How long the start took, spawn to first healthy answer.
    pub startup: Duration,
    exit: watch::Receiver<Option<String>>,
    tail: Tail,
}

impl Instance {
    /// The exit status once the process has exited.
    pub fn exit_status(&self) -> Option<String> {
        self.exit.borrow().clone()
    }

    /// Waits up to `limit` for the process to exit; returns its status if it did.
    pub async fn wait_exit(&self, limit: Duration) -> Option<String> {
        let mut exit = self.exit.clone();
        let waited = tokio::time::timeout(limit, exit.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(status)) => status.clone(),
            _ => None,
        }
    }

    /// The last lines the instance printed.
    pub fn last_output(&self) -> String {
        self.tail.text()
    }

    /// Kills the instance and everything it started, at once.
    pub fn kill(&self) {
        self.signal(Signal::KILL);
    }

    /// Asks the instance to stop (SIGTERM), killing it after `grace`.
    pub async fn stop(&self, grace: Duration) {
        self.signal(Signal::TERM);
        if self.wait_exit(grace).await.is_none() {
            self.kill();
            self.wait_exit(Duration::from_secs(5)).await;
        }
    }

    fn signal(&self, signal: Signal) {
        if self.exit_status().is_none()
            && let Some(pid) = Pid::from_raw(self.pid as i32)
        {
            let _ = kill_process_group(pid, signal);
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

#[async_trait]
impl Runtime for LocalRuntime {
    async fn start(&self, req: StartRequest) -> Result<Arc<Instance>, RuntimeError> {
        let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        let socket = self.config.run_dir.join(format!("{id}.sock"));
        let mut cmd = Command::new(&req.launch.program);
        cmd.args(&req.launch.args)
            .current_dir(&req.launch.cwd)
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
            )
            .env("LANG", "C.UTF-8")
            .env("HOME", std::env::temp_dir())
            .envs(&req.launch.env)
            .env("KL_SOCKET", &socket)
            .env("KL_FUNCTION", &req.function)
            .env("KL_REVISION", &req.revision)
            .env("KL_TENANT", &req.tenant)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let spawned_at = Instant::now();
        let mut child = cmd.spawn().map_err(|source| RuntimeError::Spawn {
            program: req.launch.program.clone(),
            source,
        })?;
        let pid = child.id().expect("a just-spawned child has a pid");
        let tail = Tail::default();
        let prefix = |stream: &str| format!("{} {id} {stream}", req.revision);
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let out_pump = tokio::spawn(pump(stdout, req.log_path.clone(), prefix("stdout"), tail.clone()));
        let err_pump = tokio::spawn(pump(stderr, req.log_path.clone(), prefix("stderr"), tail.clone()));
        let (exit_tx, exit_rx) = watch::channel(None);
        let (live, live_id) = (self.live.clone(), id.clone());
        tokio::spawn(async move {
            let status = child.wait().await;
            // Let the output pumps drain so the tail holds the last words.
            let _ = tokio::join!(out_pump, err_pump);
            let status = match status {
                Ok(s) => s.to_string(),
                Err(e) => format!("unknown status: {e}"),
            };
            let _ = exit_tx.send(Some(status));
            live.lock().expect("live lock").remove(&live_id);
        });
        let mut instance = Instance {
            id,
            revision: req.revision.clone(),
            socket,
            pid,
            started_at: chrono::Utc::now(),
            startup: Duration::ZERO,
            exit: exit_rx,
            tail,
        };
        match wait_ready(&instance, self.config.startup_timeout).await {
            Ok(()) => {
                instance.startup = spawned_at.elapsed();
                tracing::info!(
                    revision = %req.revision,
                    instance = %instance.id,
                    pid,
                    ms = instance.startup.as_millis() as u64,
                    "instance ready"
                );
                let instance = Arc::new(instance);
                if instance.exit_status().is_none() {
                    self.live
                        .lock()
                        .expect("live lock")
                        .insert(instance.id.clone(), instance.clone());
                }
                Ok(instance)
            }
            Err(e) => {
                instance.kill();
                Err(e)
            }
        }
    }

    async fn stop_all(&self, grace: Duration) {
        let live: Vec<_> = self
            .live
            .lock()
            .expect("live lock")
            .drain()
            .map(|(_, i)| i)
            .collect();
        let mut stops = tokio::task::JoinSet::new();
        for instance in live {
            stops.spawn(async move { instance.stop(grace).await });
        }
        while stops.join_next().await.is_some() {}
    }
}

/// Polls the health endpoint until it answers, the process exits, or the deadline passes.
async fn wait_ready(instance: &Instance, limit: Duration) -> Result<(), RuntimeError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = instance.exit_status() {
            return Err(RuntimeError::ExitedEarly {
                status,
                output: instance.last_output(),
            });
        }
        if instance.socket.exists() && probe(&instance.socket).await {
            return Ok(());
        }
        if started.elapsed() >= limit {
            return Err(RuntimeError::NotReady {
                seconds: limit.as_secs(),
                output: instance.last_output(),
            });
        }
        // Wake early if the process exits while we wait.
        let _ = tokio::time::timeout(pause, instance.wait_exit(pause)).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}
