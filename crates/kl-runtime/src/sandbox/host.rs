//! The runtime's side of the sandbox: probes the machine once, then per instance creates the
//! cgroup (with its limits) and the host folders, computes the spec and the jailer command,
//! and after the exit tells why the instance ended and removes what it made.

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rustix::mount::{MountFlags, UnmountFlags};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

use super::cgroup::{self, InstanceCgroup, Layout, Usage};
use super::mounts;
use super::probe::{self, SupportReport};
use super::spec::{self, JailSpec, SHELL_ENV, SOCKET_NAME, ShellSpec};
use super::{JAIL_COMMAND, SandboxConfig};
use kl_core::secret::{SECRETS_DIR_ENV, SECRETS_MOUNT};

use crate::{InstanceSecrets, RuntimeError, StartRequest};

/// How long removing a cgroup waits for its last processes to be reaped.
const CGROUP_REMOVAL: Duration = Duration::from_secs(5);
/// The start-up CPU boost: one core.
const STARTUP_CPU_MILLIS: u32 = 1000;
/// How long a shell may take to read its spec (it is normally waiting for it already).
const SPEC_HANDOVER: Duration = Duration::from_secs(10);
/// Empty instance cgroups and folders older than this are left-overs of a server that died.
const STALE_AFTER: Duration = Duration::from_secs(60);
/// The instance's writable socket folder is a tiny tmpfs, so a function cannot fill the
/// host's disk through it: room for its socket and a few small files.
const SOCK_DIR_SIZE: u64 = 64 << 10;
const SOCK_DIR_INODES: u32 = 64;

/// The sandboxing part of a runtime.
#[derive(Debug)]
pub(crate) struct HostSandbox {
    config: SandboxConfig,
    layout: Layout,
    report: SupportReport,
    /// Read end of the lifeline: each jailer gets it as stdin and dies at end of file, i.e.
    /// when this runtime (or the whole server) is gone, however it ended.
    lifeline: OwnedFd,
    _lifeline_writer: OwnedFd,
}

impl HostSandbox {
    /// Probes the machine, prepares the cgroup parent and removes what a server that died
    /// left in it and in `run_dir`.
    pub(crate) fn new(config: SandboxConfig, run_dir: &Path) -> std::io::Result<HostSandbox> {
        let mut report = probe::probe();
        let layout = cgroup::detect();
        let swept = cgroup::sweep(&layout, &config.cgroup_parent, STALE_AFTER);
        let swept_dirs = sweep_run_dir(run_dir, STALE_AFTER, |id| {
            cgroup::exists(&layout, &config.cgroup_parent, id)
        });
        if swept + swept_dirs > 0 {
            tracing::info!(
                cgroups = swept,
                folders = swept_dirs,
                "removed left-overs of earlier instances"
            );
        }
        let parent = cgroup::prepare_parent(&layout, &config.cgroup_parent).map(|()| {
            format!(
                "instance cgroups go below {:?} in each hierarchy",
                config.cgroup_parent
            )
        });
        report.push("cgroup parent", true, parent);
        let jailer = if config.jailer.is_file() {
            Ok(format!("{}", config.jailer.display()))
        } else {
            Err(format!("{} is not a file", config.jailer.display()))
        };
        report.push("jailer", true, jailer);
        let (lifeline, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        Ok(HostSandbox {
            config,
            layout,
            report,
            lifeline,
            _lifeline_writer: writer,
        })
    }

    pub(crate) fn report(&self) -> &SupportReport {
        &self.report
    }

    pub(crate) fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// Starts a shell: a sandbox made ahead of need, its jailer and init running in fresh
    /// namespaces and waiting for a function. Cheap for the server (folders, a FIFO, one
    /// spawn); the rest happens in the shell's own processes, off any request's path.
    pub(crate) fn spawn_shell(&self, id: String, run_dir: &Path) -> Result<Shell, RuntimeError> {
        if !self.report.ready() {
            return Err(RuntimeError::SandboxUnavailable {
                missing: self.report.missing(),
            });
        }
        let dir = run_dir.join(&id);
        let fifo = dir.join("spec");
        let made = make_dirs(&dir).and_then(|()| {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &fifo,
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
                0,
            )?;
            tokio::net::unix::pipe::OpenOptions::new()
                .read_write(true)
                .open_sender(&fifo)
        });
        let fail = |e: std::io::Error| {
            let _ = remove_instance_dir(&dir);
            RuntimeError::Io(std::io::Error::new(
                e.kind(),
                format!("cannot create the shell {}: {e}", dir.display()),
            ))
        };
        let spec_writer = made.map_err(fail)?;
        let shell = ShellSpec {
            id: id.clone(),
            server_pid: std::process::id(),
            spec_fifo: fifo,
        };
        let lifeline = self.lifeline.try_clone().map_err(fail)?;
        let mut cmd = Command::new(&self.config.jailer);
        cmd.arg(JAIL_COMMAND)
            .env_clear()
            .env(
                SHELL_ENV,
                serde_json::to_string(&shell).expect("a shell spec serializes"),
            )
            .stdin(Stdio::from(lifeline))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|source| {
            let _ = remove_instance_dir(&dir);
            RuntimeError::Spawn {
                program: self.config.jailer.display().to_string(),
                source,
            }
        })?;
        Ok(Shell {
            id,
            dir,
            process: Some(ShellProcess { child, spec_writer }),
        })
    }

    /// The jail spec of `req` in `shell`, checked so that a bad request fails at once, with
    /// its reason, before anything is created (the shell stays usable).
    pub(crate) fn plan(
        &self,
        req: &StartRequest,
        shell: &Shell,
        secrets: &InstanceSecrets,
    ) -> Result<JailSpec, RuntimeError> {
        let fail = |reason: String| RuntimeError::Sandbox {
            revision: req.revision.clone(),
            reason,
        };
        if req.uid == 0 || req.gid == 0 {
            return Err(fail("refusing to run a function as root (uid or gid 0)".into()));
        }
        let program =
            spec::resolve_program(&req.launch.program, std::env::var_os("PATH").as_deref()).map_err(fail)?;
        let prefix = spec::install_prefix(&program);
        let expose = exposed(req, prefix.as_deref()).map_err(fail)?;
        if let Some(egress) = &req.egress_socket
            && !egress.exists()
        {
            return Err(fail(format!(
                "the egress proxy socket {} does not exist",
                egress.display()
            )));
        }
        let bin = prefix.map(|p| p.join("bin")).filter(|b| b.is_dir());
        let identity = [
            ("KL_FUNCTION", req.function.as_str()),
            ("KL_REVISION", req.revision.as_str()),
            ("KL_TENANT", req.tenant.as_str()),
        ];
        // Secret variables sit with the launch's: the platform's own (identity, proxy) win.
        let mut env = req.launch.env.clone();
        env.extend(secrets.env.iter().cloned());
        let secrets_dir = (!secrets.files.is_empty()).then(|| shell.dir.join("secrets"));
        if secrets_dir.is_some() {
            env.insert(SECRETS_DIR_ENV.to_owned(), SECRETS_MOUNT.to_owned());
        }
        let spec = JailSpec {
            id: shell.id.clone(),
            env: spec::function_env(&env, &identity, bin.as_deref(), req.egress_socket.is_some()),
            program,
            args: req.launch.args.clone(),
            cwd: req.launch.cwd.clone(),
            uid: req.uid,
            gid: req.gid,
            expose,
            root_dir: shell.dir.join("root"),
            sock_dir: shell.dir.join("sock"),
            egress_socket: req.egress_socket.clone(),
            secrets_dir: secrets_dir.clone(),
            cgroups: Vec::new(),
            tmp_size_bytes: self.config.tmp_size_bytes,
            nofile: self.config.max_open_files,
            file_size_bytes: self.config.max_file_bytes,
        };
        mounts::plan(&spec, mounts::host_kind).map_err(fail)?;
        // Last, so that a refused plan leaves the shell as it was, reusable.
        if let Some(dir) = &secrets_dir {
            crate::secrets::write_files(dir, &secrets.files, Some((req.uid, req.gid))).map_err(|e| {
                crate::secrets::remove_files(dir);
                fail(format!("cannot write the secret files: {e}"))
            })?;
        }
        Ok(spec)
    }

    /// Turns `shell` into the sandbox of `spec` (from [`HostSandbox::plan`]): gives its socket
    /// folder to the tenant's user, creates its cgroup with `limits` and hands the spec to the
    /// waiting init. Returns the jailer's process (stdout and stderr piped) and the jail.
    pub(crate) async fn specialize(
        &self,
        mut shell: Shell,
        mut spec: JailSpec,
        limits: &crate::Limits,
        revision: &str,
    ) -> Result<(Child, Jail), RuntimeError> {
        let fail = |reason: String| RuntimeError::Sandbox {
            revision: revision.to_owned(),
            reason,
        };
        std::os::unix::fs::chown(&spec.sock_dir, Some(spec.uid), Some(spec.gid)).map_err(|e| {
            fail(format!(
                "cannot give {} to the function: {e}",
                spec.sock_dir.display()
            ))
        })?;
        let boosted = crate::Limits {
            cpu_millis: startup_cpu_millis(limits.cpu_millis),
            ..*limits
        };
        let cgroup = InstanceCgroup::create(&self.layout, &self.config.cgroup_parent, &shell.id, &boosted)
            .map_err(fail)?;
        spec.cgroups = cgroup.dirs().to_vec();
        let mut line = spec.to_json();
        line.push('\n');
        let ShellProcess {
            child,
            mut spec_writer,
        } = shell.process.take().expect("a shell is specialized once");
        let written = tokio::time::timeout(SPEC_HANDOVER, spec_writer.write_all(line.as_bytes())).await;
        let jail = Jail {
            socket: spec.sock_dir.join(SOCKET_NAME),
            cgroup,
            dir: shell.dir.clone(),
            _spec_fifo: spec_writer,
        };
        if !matches!(written, Ok(Ok(()))) {
            drop(child);
            jail.clean_up().await;
            return Err(fail("the shell did not take its spec".into()));
        }
        Ok((child, jail))
    }
}

/// The CPU quota an instance starts with: at least one core until it is ready (then its
/// own, see [`Jail::settle_cpu`]). An interpreter's start-up is a burst of single-threaded
/// work; held to a fraction of a core it would take several CFS periods (a Python start at
/// 500m waits out a whole 100 ms period), which is what Kubernetes' startup CPU boost and
/// Lambda's init phase avoid too. The boost is CPU actually used, so it is metered as any.
pub(crate) fn startup_cpu_millis(cpu_millis: u32) -> u32 {
    if cpu_millis == 0 {
        0
    } else {
        cpu_millis.max(STARTUP_CPU_MILLIS)
    }
}

/// A sandbox made ahead ([`HostSandbox::spawn_shell`]). Dropping an unused one kills it and
/// removes its folders.
#[derive(Debug)]
pub(crate) struct Shell {
    pub(crate) id: String,
    dir: PathBuf,
    /// Until the shell is specialized.
    process: Option<ShellProcess>,
}

#[derive(Debug)]
struct ShellProcess {
    /// The jailer.
    child: Child,
    /// The spec FIFO, held open for reading and writing (see `init::wait_for_spec`).
    spec_writer: tokio::net::unix::pipe::Sender,
}

impl Shell {
    /// Whether the shell's processes are gone (they failed, or were killed).
    pub(crate) fn exited(&mut self) -> bool {
        self.process
            .as_mut()
            .is_none_or(|p| !matches!(p.child.try_wait(), Ok(None)))
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        if let Some(process) = self.process.take() {
            drop(process);
            let _ = remove_instance_dir(&self.dir);
        }
    }
}

/// The host paths an instance sees read-only, besides the system: its working folder, the
/// absolute paths among its arguments (the shim), the request's list (dependencies) and the
/// program's installation prefix. Never anything named by the launch's environment: users
/// set variables in `kl.yaml`, so `KL_DEPS_DIR=/` must not expose anything.
fn exposed(req: &StartRequest, prefix: Option<&Path>) -> Result<Vec<PathBuf>, String> {
    let canonical = |path: &Path| {
        path.canonicalize()
            .map_err(|e| format!("cannot expose {}: {e}", path.display()))
    };
    let mut paths = vec![canonical(&req.launch.cwd)?];
    for arg in &req.launch.args {
        let path = Path::new(arg);
        if path.is_absolute() && path.exists() {
            paths.push(canonical(path)?);
        }
    }
    for path in &req.read_only {
        paths.push(canonical(path)?);
    }
    paths.extend(prefix.map(Path::to_path_buf));
    Ok(spec::outermost(paths))
}

/// Removes instance folders (those with a `root` mount point) older than `older_than` whose
/// instance has no cgroup any more: the mounts were in the sandbox's own namespace, so these
/// are plain folders once it is gone.
fn sweep_run_dir(run_dir: &Path, older_than: Duration, alive: impl Fn(&str) -> bool) -> usize {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let dir = entry.path();
        let old = super::older_than(&entry, older_than);
        let id = entry.file_name().to_string_lossy().into_owned();
        if old
            && !alive(&id)
            && dir.join("root").is_dir()
            && dir.join("sock").is_dir()
            && remove_instance_dir(&dir).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// `dir` (root's, traversable), `sock` (a tiny tmpfs, private, given to the tenant's user
/// when the shell is specialized), `root` (root's, private: the sandbox's root is mounted on
/// it in the sandbox's own namespace). The tmpfs is mounted before the shell's namespace is
/// made, so that the shell sees it.
fn make_dirs(dir: &Path) -> std::io::Result<()> {
    let (sock, root) = (dir.join("sock"), dir.join("root"));
    std::fs::DirBuilder::new().mode(0o711).create(dir)?;
    for sub in [&sock, &root] {
        std::fs::DirBuilder::new().mode(0o700).create(sub)?;
    }
    let options = CString::new(format!(
        "size={SOCK_DIR_SIZE},nr_inodes={SOCK_DIR_INODES},mode=0700"
    ))
    .expect("no NUL in tmpfs options");
    let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    rustix::mount::mount("tmpfs", &sock, "tmpfs", flags, options.as_c_str())?;
    Ok(())
}

/// Unmounts the socket folder's tmpfs and removes the instance folder.
fn remove_instance_dir(dir: &Path) -> std::io::Result<()> {
    let _ = rustix::mount::unmount(dir.join("sock"), UnmountFlags::DETACH);
    std::fs::remove_dir_all(dir)
}

/// One instance's sandbox, seen from the host.
#[derive(Debug)]
pub(crate) struct Jail {
    /// Host path of the function's socket (it listens in `/run/kl` inside).
    pub socket: PathBuf,
    cgroup: InstanceCgroup,
    dir: PathBuf,
    /// Kept open for the instance's life: a fresh shell's init may open the FIFO only after
    /// the spec was written, and a FIFO's data is lost when its last holder closes it.
    _spec_fifo: tokio::net::unix::pipe::Sender,
}

impl Jail {
    /// Why the instance ended, from its exit status and its cgroup's counters.
    pub(crate) fn exit_reason(&self, status: &str) -> String {
        describe_exit(
            status,
            self.cgroup.oom_kills(),
            self.cgroup.memory_limit(),
            self.cgroup.pids_limit_hits(),
            self.cgroup.pids_limit(),
        )
    }

    pub(crate) fn usage(&self) -> Usage {
        self.cgroup.usage()
    }

    /// Ends the start-up boost: from now on the instance gets `cpu_millis` (see
    /// [`startup_cpu_millis`]).
    pub(crate) fn settle_cpu(&self, cpu_millis: u32) -> Result<(), String> {
        self.cgroup.set_cpu(cpu_millis)
    }

    /// Kills everything in the cgroup (v2), on top of killing the jailer's process group.
    pub(crate) fn kill(&self) {
        self.cgroup.kill();
    }

    /// Removes the cgroup and the host folders, once the jailer has exited.
    pub(crate) async fn clean_up(&self) {
        self.cgroup.remove(CGROUP_REMOVAL).await;
        let dir = self.dir.clone();
        let _ = tokio::task::spawn_blocking(move || remove_instance_dir(&dir)).await;
    }
}

/// Says why an instance ended: out of memory when the kernel OOM-killed something in its
/// cgroup, else its exit status, noting when the process limit was reached.
pub(crate) fn describe_exit(
    status: &str,
    oom_kills: u64,
    memory_limit: u64,
    pids_hits: u64,
    pids_limit: u32,
) -> String {
    let mut reason = if oom_kills > 0 {
        format!("out of memory (limit {})", human_bytes(memory_limit))
    } else {
        status.to_owned()
    };
    if pids_hits > 0 {
        reason.push_str(&format!("; the process limit ({pids_limit}) was reached"));
    }
    reason
}

fn human_bytes(bytes: u64) -> String {
    for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{} {unit}", bytes / size);
        }
    }
    if bytes >= 1 << 20 {
        return format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20));
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_up_gets_at_least_a_core() {
        assert_eq!(startup_cpu_millis(250), 1000);
        assert_eq!(startup_cpu_millis(2000), 2000);
        assert_eq!(startup_cpu_millis(0), 0, "no quota stays no quota");
    }

    #[test]
    fn exit_reasons() {
        assert_eq!(
            describe_exit("signal: 9 (SIGKILL)", 1, 128 << 20, 0, 64),
            "out of memory (limit 128 MiB)"
        );
        assert_eq!(
            describe_exit("exit status: 3", 0, 128 << 20, 0, 64),
            "exit status: 3"
        );
        assert_eq!(
            describe_exit("signal: 9 (SIGKILL)", 0, 1 << 30, 7, 64),
            "signal: 9 (SIGKILL); the process limit (64) was reached"
        );
        assert_eq!(human_bytes(1 << 30), "1 GiB");
        assert_eq!(human_bytes(100_000_000), "95.4 MiB");
        assert_eq!(human_bytes(1000), "1000 bytes");
    }
}
