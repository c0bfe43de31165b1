//! The local runtime: each instance is a child process in its own process group, serving on a
//! unix socket under the runtime's folder, with a clean environment; with
//! [`Isolation::Sandbox`], that process is the jailer and the function runs in its sandbox.

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
use crate::sandbox::{HostSandbox, Jail, SandboxConfig, Shell, SupportReport, Usage};
use crate::secrets::{remove_files, write_files};
use crate::{InstanceSecrets, Runtime, RuntimeError, StartRequest};
use kl_core::secret::SECRETS_DIR_ENV;

/// Settings of the local runtime.
#[derive(Debug, Clone)]
pub struct LocalRuntimeConfig {
    /// Folder for instance sockets; keep it short (unix socket paths are limited to 107 bytes).
    pub run_dir: PathBuf,
    /// How long an instance may take to answer its first health check.
    pub startup_timeout: Duration,
    /// Whether instances run in a sandbox.
    pub isolation: Isolation,
}

/// How instances are isolated from the host and from each other.
#[derive(Debug, Clone)]
pub enum Isolation {
    /// A plain child process with a clean environment, as the server's user.
    None,
    /// The sandbox (DESIGN §4): namespaces, cgroup limits, rlimits, the tenant's user, a
    /// read-only view of only what the function needs, seccomp.
    Sandbox(SandboxConfig),
}

/// Instances still running, by id; an instance leaves when its process exits.
type Live = Arc<Mutex<HashMap<String, Arc<Instance>>>>;

/// Runs instances as local processes.
#[derive(Debug)]
pub struct LocalRuntime {
    config: LocalRuntimeConfig,
    live: Live,
    sandbox: Option<Arc<HostSandbox>>,
    /// Shells made ahead (see [`HostSandbox::spawn_shell`]), so that a cold start does not
    /// wait for the sandbox's processes and namespaces. They belong to no tenant until one
    /// is specialized, and each serves one instance only.
    shells: Arc<Mutex<Vec<Shell>>>,
    /// Starts in progress per tenant, bounded (see [`starts_per_tenant`]).
    starts: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

/// How many instances one tenant may be starting at once: twice the cores. Starts are
/// CPU-bound; a hundred at once on two cores all finish late together, while a few at a time
/// finish one after another, so requests are served sooner and the autoscaler sees ready
/// instances early. Per tenant, so that one tenant's burst never queues another's start.
fn starts_per_tenant() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from) * 2
}

impl LocalRuntime {
    /// A runtime keeping its sockets in `config.run_dir`. With [`Isolation::Sandbox`] it
    /// probes the machine (see [`LocalRuntime::support`]); when a required feature is missing
    /// it is still created, but refuses to start instances.
    ///
    /// Sandboxed instances die with the runtime: dropping it kills them.
    pub fn new(config: LocalRuntimeConfig) -> std::io::Result<LocalRuntime> {
        std::fs::create_dir_all(&config.run_dir)?;
        let sandbox = match &config.isolation {
            Isolation::None => None,
            Isolation::Sandbox(sandbox) => {
                Some(Arc::new(HostSandbox::new(sandbox.clone(), &config.run_dir)?))
            }
        };
        let runtime = LocalRuntime {
            config,
            live: Live::default(),
            sandbox,
            shells: Arc::default(),
            starts: Mutex::default(),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            runtime.refill_shells();
        }
        Ok(runtime)
    }

    /// A shell for the next sandboxed instance: a waiting one if there is, else a new one.
    fn take_shell(&self, sandbox: &HostSandbox) -> Result<Shell, RuntimeError> {
        let waiting = {
            let mut shells = self.shells.lock().expect("shells lock");
            std::iter::from_fn(|| shells.pop()).find_map(|mut shell| (!shell.exited()).then_some(shell))
        };
        match waiting {
            Some(shell) => Ok(shell),
            None => sandbox.spawn_shell(new_id(), &self.config.run_dir),
        }
    }

    /// Tops the waiting shells up to the configured number, in the background.
    fn refill_shells(&self) {
        let Some(sandbox) = self.sandbox.clone() else {
            return;
        };
        let wanted = sandbox.config().warm_shells;
        let missing = wanted.saturating_sub(self.shells.lock().expect("shells lock").len());
        if missing == 0 || !sandbox.report().ready() {
            return;
        }
        let (shells, run_dir) = (self.shells.clone(), self.config.run_dir.clone());
        tokio::spawn(async move {
            for _ in 0..missing {
                match sandbox.spawn_shell(new_id(), &run_dir) {
                    Ok(shell) => {
                        let mut shells = shells.lock().expect("shells lock");
                        if shells.len() < wanted {
                            shells.push(shell);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot make a sandbox shell ahead");
                        return;
                    }
                }
            }
        });
    }

    /// What this machine can enforce of the sandbox (`None` without isolation); its
    /// `Display` is meant for the server's start-up log.
    pub fn support(&self) -> Option<&SupportReport> {
        self.sandbox.as_deref().map(HostSandbox::report)
    }
}

/// How an instance ended.
#[derive(Debug, Clone)]
struct Exit {
    status: String,
    reason: String,
}

/// A running instance. Dropping it does not stop it: call [`Instance::kill`] or
/// [`Instance::stop`].
#[derive(Debug)]
pub struct Instance {
    pub id: String,
    pub revision: String,
    /// Host path of the socket the instance serves on (inside a sandbox it is
    /// `/run/kl/fn.sock`).
    pub socket: PathBuf,
    /// The process the runtime started: the function, or the jailer when sandboxed. It leads
    /// the instance's process group.
    pub pid: u32,
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// How long the start took, spawn to first healthy answer.
    pub startup: Duration,
    exit: watch::Receiver<Option<Exit>>,
    tail: Tail,
    jail: Option<Arc<Jail>>,
}

impl Instance {
    /// The exit status once the process has exited.
    pub fn exit_status(&self) -> Option<String> {
        self.exit.borrow().as_ref().map(|e| e.status.clone())
    }

    /// Why the instance ended, once it has: e.g. `out of memory (limit 128 MiB)` when the
    /// kernel killed it at its memory limit, else its exit status.
    pub fn exit_reason(&self) -> Option<String> {
        self.exit.borrow().as_ref().map(|e| e.reason.clone())
    }

    /// Resource usage so far, from the sandbox's cgroup (`None` without isolation or once the
    /// instance has exited and its cgroup is gone).
    pub fn usage(&self) -> Option<Usage> {
        let jail = self.jail.as_ref()?;
        self.exit_status().is_none().then(|| jail.usage())
    }

    /// Whether the instance runs in a sandbox.
    pub fn sandboxed(&self) -> bool {
        self.jail.is_some()
    }

    /// Waits up to `limit` for the process to exit; returns its status if it did.
    pub async fn wait_exit(&self, limit: Duration) -> Option<String> {
        let mut exit = self.exit.clone();
        let waited = tokio::time::timeout(limit, exit.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(exit)) => exit.as_ref().map(|e| e.status.clone()),
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
        if let Some(jail) = &self.jail
            && self.exit_status().is_none()
        {
            jail.kill();
        }
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
        let starts = self
            .starts
            .lock()
            .expect("starts lock")
            .entry(req.tenant.clone())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(starts_per_tenant())))
            .clone();
        let _turn = starts.acquire().await.expect("the semaphore is never closed");
        let started = self.start_instance(req).await;
        // After the start, so that making the next shell does not slow this one down.
        self.refill_shells();
        started
    }

    async fn stop_all(&self, grace: Duration) {
        self.shells.lock().expect("shells lock").clear();
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

impl LocalRuntime {
    /// Starts one instance: a plain process, or a shell specialized for `req`.
    async fn start_instance(&self, req: StartRequest) -> Result<Arc<Instance>, RuntimeError> {
        let spawned_at = Instant::now();
        let secrets = match &req.secrets {
            Some(source) => source.fetch().await.map_err(|reason| RuntimeError::Secrets {
                revision: req.revision.clone(),
                reason,
            })?,
            None => InstanceSecrets::default(),
        };
        let (id, mut child, socket, jail, secrets_dir) = match &self.sandbox {
            None => {
                let id = new_id();
                let (mut cmd, socket) = self.plain_command(&req, &id);
                let dir = self.config.run_dir.join(format!("{id}.secrets"));
                cmd.envs(secrets.env.iter().map(|(k, v)| (k, v)));
                if !secrets.files.is_empty() {
                    write_files(&dir, &secrets.files, None)?;
                    cmd.env(SECRETS_DIR_ENV, &dir);
                }
                let child = cmd.spawn().map_err(|source| {
                    remove_files(&dir);
                    RuntimeError::Spawn {
                        program: req.launch.program.clone(),
                        source,
                    }
                })?;
                (id, child, socket, None, Some(dir))
            }
            Some(sandbox) => {
                let shell = self.take_shell(sandbox)?;
                let spec = match sandbox.plan(&req, &shell, &secrets) {
                    Ok(spec) => spec,
                    Err(e) => {
                        let mut shells = self.shells.lock().expect("shells lock");
                        if shells.len() < sandbox.config().warm_shells {
                            shells.push(shell);
                        }
                        return Err(e);
                    }
                };
                let id = shell.id.clone();
                let (child, jail) = sandbox
                    .specialize(shell, spec, &req.limits, &req.revision)
                    .await?;
                (id, child, jail.socket.clone(), Some(Arc::new(jail)), None)
            }
        };
        drop(secrets);
        let pid = child.id().expect("a just-spawned child has a pid");
        let tail = Tail::default();
        let prefix = |stream: &str| format!("{} {id} {stream}", req.revision);
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let out_pump = tokio::spawn(pump(stdout, req.log_path.clone(), prefix("stdout"), tail.clone()));
        let err_pump = tokio::spawn(pump(stderr, req.log_path.clone(), prefix("stderr"), tail.clone()));
        let (exit_tx, exit_rx) = watch::channel(None);
        let (live, live_id, exit_jail) = (self.live.clone(), id.clone(), jail.clone());
        tokio::spawn(async move {
            let status = child.wait().await;
            // Let the output pumps drain so the tail holds the last words.
            let _ = tokio::join!(out_pump, err_pump);
            let status = match status {
                Ok(s) => s.to_string(),
                Err(e) => format!("unknown status: {e}"),
            };
            let reason = match &exit_jail {
                Some(jail) => {
                    let reason = jail.exit_reason(&status);
                    jail.clean_up().await;
                    reason
                }
                None => status.clone(),
            };
            if let Some(dir) = &secrets_dir {
                remove_files(dir);
            }
            let _ = exit_tx.send(Some(Exit { status, reason }));
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
            jail,
        };
        let ready = wait_ready(&instance, self.config.startup_timeout)
            .await
            .and_then(|()| match &instance.jail {
                Some(jail) => {
                    jail.settle_cpu(req.limits.cpu_millis)
                        .map_err(|reason| RuntimeError::Sandbox {
                            revision: req.revision.clone(),
                            reason,
                        })
                }
                None => Ok(()),
            });
        match ready {
            Ok(()) => {
                instance.startup = spawned_at.elapsed();
                tracing::info!(
                    revision = %req.revision,
                    instance = %instance.id,
                    pid,
                    sandboxed = instance.sandboxed(),
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

    /// The unsandboxed command: the program itself, in its own process group.
    fn plain_command(&self, req: &StartRequest, id: &str) -> (Command, PathBuf) {
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
        (cmd, socket)
    }
}

/// A fresh instance id: short (it names folders in socket paths, which are limited in length).
fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_owned()
}

/// How long readiness is polled every millisecond.
const QUICK_START: Duration = Duration::from_millis(300);

/// Polls the health endpoint until it answers, the process exits, or the deadline passes.
async fn wait_ready(instance: &Instance, limit: Duration) -> Result<(), RuntimeError> {
    let started = Instant::now();
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
        // Most starts take tens of milliseconds: look often (a `stat` is cheap) while it is
        // likely to be soon, then back off. Wake early if the process exits while we wait.
        let pause = if started.elapsed() < QUICK_START {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(10)
        };
        let _ = instance.wait_exit(pause).await;
    }
}
