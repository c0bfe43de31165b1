//! What this machine can enforce: each part of the sandbox is tried for real where that is
//! cheap (namespaces, mounts and `pivot_root` in a throw-away thread, the seccomp filter on
//! another) and reported as enforceable or not, with the reason. The runtime refuses to start
//! sandboxed instances while a required part is missing.

use std::fmt;
use std::path::Path;

use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use rustix::thread::CapabilitySet;

use super::cgroup::{self, Controller, Layout, Placement};
use super::seccomp;
use super::sys::{self, Namespace};

/// One part of the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feature {
    /// What it is, e.g. `pid namespace` or `cgroup memory`.
    pub name: String,
    /// Whether sandboxed instances can run without it.
    pub required: bool,
    /// Whether this machine enforces it.
    pub enforceable: bool,
    /// How it is enforced, or why it cannot be.
    pub detail: String,
}

/// What this machine can enforce, feature by feature.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SupportReport {
    pub features: Vec<Feature>,
}

impl SupportReport {
    /// `true` when every required feature is enforceable.
    pub fn ready(&self) -> bool {
        self.features.iter().all(|f| f.enforceable || !f.required)
    }

    /// The required features that are missing, with their reasons, in one line.
    pub fn missing(&self) -> String {
        self.features
            .iter()
            .filter(|f| f.required && !f.enforceable)
            .map(|f| format!("{} ({})", f.name, f.detail))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub(crate) fn push(&mut self, name: impl Into<String>, required: bool, outcome: Result<String, String>) {
        let (enforceable, detail) = match outcome {
            Ok(detail) => (true, detail),
            Err(reason) => (false, reason),
        };
        self.features.push(Feature {
            name: name.into(),
            required,
            enforceable,
            detail,
        });
    }
}

impl fmt::Display for SupportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ready() {
            writeln!(f, "sandbox: every required feature is enforced")?;
        } else {
            writeln!(f, "sandbox: UNAVAILABLE, sandboxed instances will not start")?;
        }
        for feature in &self.features {
            let mark = match (feature.enforceable, feature.required) {
                (true, _) => "ok     ",
                (false, true) => "MISSING",
                (false, false) => "absent ",
            };
            let optional = if feature.required { "" } else { " (optional)" };
            writeln!(f, "  {mark} {}{optional}: {}", feature.name, feature.detail)?;
        }
        Ok(())
    }
}

/// Probes this machine.
pub fn probe() -> SupportReport {
    let mut report = SupportReport::default();
    report.push("privileges", true, privileges());
    for ns in Namespace::ALL {
        let required = ns != Namespace::Cgroup;
        let outcome = in_thread(move || sys::unshare(&[ns]).map_err(|e| e.to_string()))
            .map(|()| "created in a test thread".to_owned());
        report.push(format!("{} namespace", ns.name()), required, outcome);
    }
    report.push("mounts and pivot_root", true, mounts());
    let layout = cgroup::detect();
    cgroups(&mut report, &layout);
    report.push("seccomp filter", true, in_thread(filter));
    report.push(
        "no_new_privs, bounding set, rlimits",
        true,
        Ok("set by the jailer before the function starts".into()),
    );
    report
}

/// Adds a line per controller (and the optional counters) to `report`.
pub(crate) fn cgroups(report: &mut SupportReport, layout: &Layout) {
    for controller in Controller::ALL {
        let placement = layout.placement(controller);
        let outcome = match placement {
            Placement::V2(root) | Placement::V1(root) => writable(root).map(|()| placement.describe()),
            Placement::Missing(why) => Err(why.clone()),
        };
        report.push(format!("cgroup {}", controller.name()), true, outcome);
    }
    let usage = match (&layout.cpu, &layout.cpuacct) {
        (Placement::V2(_), _) => Ok("cpu.stat".to_owned()),
        (Placement::V1(_), Some(acct)) => Ok(format!("cpuacct (cgroup v1 at {})", acct.display())),
        _ => Err("no cpuacct hierarchy: CPU usage is not measured".to_owned()),
    };
    report.push("cgroup cpu usage", false, usage);
    let swap = match &layout.memory {
        Placement::V1(root) if !root.join("memory.memsw.limit_in_bytes").exists() => {
            Err("no swap accounting (memsw): the memory limit does not cover swap".to_owned())
        }
        Placement::V1(_) => Ok("memory.memsw.limit_in_bytes".to_owned()),
        Placement::V2(_) => Ok("memory.swap.max = 0".to_owned()),
        Placement::Missing(why) => Err(why.clone()),
    };
    report.push("memory limit covers swap", false, swap);
}

fn writable(root: &Path) -> Result<(), String> {
    let stat = rustix::fs::statvfs(root).map_err(|e| format!("{}: {e}", root.display()))?;
    if stat.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY) {
        return Err(format!("{} is mounted read-only", root.display()));
    }
    Ok(())
}

fn privileges() -> Result<String, String> {
    let needed = [
        (CapabilitySet::SYS_ADMIN, "CAP_SYS_ADMIN"),
        (CapabilitySet::SETUID, "CAP_SETUID"),
        (CapabilitySet::SETGID, "CAP_SETGID"),
        (CapabilitySet::SETPCAP, "CAP_SETPCAP"),
        (CapabilitySet::NET_ADMIN, "CAP_NET_ADMIN"),
        (CapabilitySet::CHOWN, "CAP_CHOWN"),
        (CapabilitySet::KILL, "CAP_KILL"),
    ];
    let have = rustix::thread::capabilities(None).map_err(|e| format!("cannot read capabilities: {e}"))?;
    let missing: Vec<_> = needed
        .iter()
        .filter(|(cap, _)| !have.effective.contains(*cap))
        .map(|(_, name)| *name)
        .collect();
    if missing.is_empty() {
        Ok("the server has the capabilities the jailer needs".into())
    } else {
        Err(format!(
            "the server lacks {} (run it as root)",
            missing.join(", ")
        ))
    }
}

/// Runs `check` on a fresh thread, whose namespaces, mounts and filters die with it.
fn in_thread<T: Send + 'static>(
    check: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    std::thread::Builder::new()
        .name("kl-sandbox-probe".into())
        .spawn(check)
        .map_err(|e| format!("cannot start a probe thread: {e}"))?
        .join()
        .unwrap_or_else(|_| Err("the probe panicked".into()))
}

/// In a private mount namespace: a tmpfs, a bind mount made read-only, a proc mount, and
/// `pivot_root` into the tmpfs.
fn mounts() -> Result<String, String> {
    let dir = std::env::temp_dir().join(format!("kl-probe-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let at = dir.clone();
    let outcome = in_thread(move || {
        let dir = at;
        sys::unshare(&[Namespace::Mount]).map_err(|e| format!("mount namespace: {e}"))?;
        rustix::mount::mount_change("/", MountPropagationFlags::PRIVATE | MountPropagationFlags::REC)
            .map_err(|e| format!("private propagation: {e}"))?;
        rustix::mount::mount(
            "tmpfs",
            &dir,
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            c"size=64k",
        )
        .map_err(|e| format!("tmpfs: {e}"))?;
        let usr = dir.join("usr");
        std::fs::create_dir(&usr).map_err(|e| e.to_string())?;
        rustix::mount::mount_bind("/usr", &usr).map_err(|e| format!("bind mount: {e}"))?;
        rustix::mount::mount_remount(
            &usr,
            MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOSUID,
            "",
        )
        .map_err(|e| format!("read-only bind mount: {e}"))?;
        let proc = dir.join("proc");
        std::fs::create_dir(&proc).map_err(|e| e.to_string())?;
        rustix::mount::mount(
            "proc",
            &proc,
            "proc",
            MountFlags::NOSUID | MountFlags::NODEV,
            None,
        )
        .map_err(|e| format!("proc: {e}"))?;
        rustix::process::chdir(&dir).map_err(|e| e.to_string())?;
        rustix::process::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
        rustix::mount::unmount(".", UnmountFlags::DETACH).map_err(|e| format!("detach old root: {e}"))?;
        Ok("tmpfs, read-only bind, proc and pivot_root tried in a test thread".to_owned())
    });
    let _ = std::fs::remove_dir(&dir);
    outcome
}

/// Installs the filter on this thread and checks a denied call fails with `EPERM`.
fn filter() -> Result<String, String> {
    rustix::thread::set_no_new_privs(true).map_err(|e| format!("no_new_privs: {e}"))?;
    seccomp::install()?;
    match rustix::process::chroot("/nonexistent-kl-probe") {
        Err(rustix::io::Errno::PERM) => {
            let denied: Vec<_> = seccomp::denied_names().collect();
            Ok(format!(
                "installed in a test thread; denies {} system calls ({}, ...) and clone with namespace flags",
                denied.len(),
                denied[..6].join(", ")
            ))
        }
        other => Err(format!("the filter did not deny chroot ({other:?})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_is_ready_only_without_missing_required_features() {
        let mut report = SupportReport::default();
        report.push("pid namespace", true, Ok("yes".into()));
        report.push("cgroup cpu usage", false, Err("no cpuacct".into()));
        assert!(report.ready());
        assert_eq!(report.missing(), "");
        report.push("cgroup memory", true, Err("not mounted".into()));
        assert!(!report.ready());
        assert_eq!(report.missing(), "cgroup memory (not mounted)");
        let text = report.to_string();
        assert!(text.starts_with("sandbox: UNAVAILABLE"));
        assert!(text.contains("MISSING cgroup memory: not mounted"));
        assert!(text.contains("absent  cgroup cpu usage (optional): no cpuacct"));
        assert!(text.contains("ok      pid namespace: yes"));
    }

    #[test]
    fn cgroup_lines_follow_the_layout() {
        let layout = Layout {
            cpu: Placement::V2("/".into()),
            memory: Placement::Missing("not enabled".into()),
            pids: Placement::V2("/".into()),
            cpuacct: None,
        };
        let mut report = SupportReport::default();
        cgroups(&mut report, &layout);
        let memory = report
            .features
            .iter()
            .find(|f| f.name == "cgroup memory")
            .expect("memory line");
        assert!(!memory.enforceable && memory.required);
        let usage = report
            .features
            .iter()
            .find(|f| f.name == "cgroup cpu usage")
            .expect("usage");
        assert!(usage.enforceable);
    }
}
