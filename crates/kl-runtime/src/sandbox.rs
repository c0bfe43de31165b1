//! The instance sandbox, a jailer in the spirit of Firecracker's: every instance runs in its
//! own pid, mount, ipc, uts and network namespaces, in a cgroup with CPU, memory and pids
//! limits, with rlimits, as the tenant's unprivileged user without supplementary groups or
//! capabilities, under `no_new_privs` and a seccomp filter, seeing only a read-only view of the
//! system folders, a minimal `/etc`, its code and dependencies, plus a private `/tmp`, a fresh
//! `/proc`, a minimal `/dev` and its socket folder. Its only ways out are the unix socket it
//! serves on and, when the platform gives one, the egress proxy.
//!
//! The jailer is the `kl` binary itself (`kl __sandbox`, see [`jail_main`]), in two stages:
//! [`jailer`] (namespaces, supervision) and [`init`] (pid 1 of the sandbox: file system,
//! privileges, the function). The runtime side ([`host`]) prepares the cgroup, folders and
//! [`spec`] and reads the cgroup's counters when the instance exits.

mod cgroup;
mod host;
mod init;
mod jailer;
mod mounts;
mod net;
mod privileges;
mod probe;
mod seccomp;
mod spec;
#[allow(unsafe_code)]
mod sys;

use std::ffi::OsString;
use std::path::PathBuf;

pub use cgroup::Usage;
pub(crate) use host::{HostSandbox, Jail, Shell};

/// Whether a left-over folder was last changed at least `age` ago: young ones may belong to
/// a runtime that is filling them right now.
fn older_than(entry: &std::fs::DirEntry, age: std::time::Duration) -> bool {
    entry
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|elapsed| elapsed >= age)
}
pub use probe::{Feature, SupportReport, probe};

/// The hidden `kl` sub-command that runs the jailer.
pub const JAIL_COMMAND: &str = "__sandbox";
/// The jailer's second stage, `kl __sandbox init`.
const INIT_STAGE: &str = "init";
/// Exit status of the jailer when it could not build the sandbox (its stderr says why).
pub const EXIT_SETUP: i32 = 125;

/// Shells kept made ahead by default ([`SandboxConfig::warm_shells`]).
pub const DEFAULT_WARM_SHELLS: usize = 4;

/// How sandboxes are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxConfig {
    /// The jailer: the `kl` binary (`std::env::current_exe()` in the server).
    pub jailer: PathBuf,
    /// Cgroup below which instance cgroups are made, relative to each hierarchy's root.
    pub cgroup_parent: String,
    /// Size limit of the private `/tmp` (and of `/dev/shm`); charged to the memory limit.
    pub tmp_size_bytes: u64,
    /// `RLIMIT_NOFILE` of the function.
    pub max_open_files: u64,
    /// `RLIMIT_FSIZE` of the function: the largest file it may write.
    pub max_file_bytes: u64,
    /// How many sandboxes are kept made ahead of need ("shells": namespaces and processes
    /// ready, no function yet), so that cold starts skip that part. Each costs two small
    /// idle processes.
    pub warm_shells: usize,
}

impl SandboxConfig {
    /// The defaults: cgroup parent `kl`, 64 MiB `/tmp`, 1024 open files, 1 GiB files, 4
    /// shells made ahead.
    pub fn new(jailer: PathBuf) -> SandboxConfig {
        SandboxConfig {
            jailer,
            cgroup_parent: "kl".into(),
            tmp_size_bytes: 64 << 20,
            max_open_files: 1024,
            max_file_bytes: 1 << 30,
            warm_shells: DEFAULT_WARM_SHELLS,
        }
    }
}

/// The entry point of `kl __sandbox …`: `args` is the whole command line (`argv[0]`,
/// `__sandbox`, then an optional stage). Call it before any other argument parsing, from a
/// single-threaded process (no runtime started yet). Never returns.
///
/// Stages: none (the jailer, started by the runtime with its spec in the environment),
/// `init` (started by the jailer inside the namespaces), `probe` (prints what this machine
/// can enforce; status 0 when everything required is).
pub fn jail_main(args: Vec<OsString>) -> ! {
    let code = match args.get(2).and_then(|a| a.to_str()) {
        None => jailer::main(),
        Some(INIT_STAGE) => init::main(),
        Some("probe") => {
            let report = probe();
            print!("{report}");
            if report.ready() { 0 } else { 1 }
        }
        Some(other) => {
            eprintln!("kl-sandbox: unknown stage {other:?} (this command is run by the server)");
            2
        }
    };
    std::process::exit(code)
}
