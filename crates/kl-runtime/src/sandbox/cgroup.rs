//! Cgroups: where each controller lives (v2, v1, or nowhere), one cgroup per instance with its
//! CPU, memory and pids limits, its counters (usage, OOM kills), and its removal.
//!
//! A controller is used from the unified (v2) hierarchy when it is enabled there, else from
//! its v1 hierarchy when one is mounted; hybrid machines mix both. Instance cgroups are
//! `<hierarchy>/<parent>/<instance id>`.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Limits;

/// The CFS period the CPU quota is expressed in.
const CPU_PERIOD_US: u64 = 100_000;
/// The kernel refuses quotas below 1 ms.
const MIN_CPU_QUOTA_US: u64 = 1_000;

/// The controllers a sandbox needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Controller {
    Cpu,
    Memory,
    Pids,
}

impl Controller {
    pub(crate) const ALL: [Controller; 3] = [Controller::Cpu, Controller::Memory, Controller::Pids];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Controller::Cpu => "cpu",
            Controller::Memory => "memory",
            Controller::Pids => "pids",
        }
    }
}

/// The cgroup file systems mounted on this machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Mounts {
    /// Mount point of the unified hierarchy.
    pub v2: Option<PathBuf>,
    /// Mount point of each v1 controller (`cpu`, `cpuacct`, `memory`, ...).
    pub v1: BTreeMap<String, PathBuf>,
}

/// Reads the cgroup mounts out of `/proc/self/mountinfo` text.
pub(crate) fn parse_mountinfo(text: &str) -> Mounts {
    let mut mounts = Mounts::default();
    for line in text.lines() {
        // `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS`
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        let mount_point = PathBuf::from(unescape_octal(mount_point));
        let mut right = right.split(' ');
        let (Some(fstype), _source, Some(options)) = (right.next(), right.next(), right.next()) else {
            continue;
        };
        match fstype {
            "cgroup2" => {
                mounts.v2.get_or_insert(mount_point);
            }
            "cgroup" => {
                for option in options.split(',') {
                    let controller = match option {
                        "rw" | "ro" | "relatime" | "noatime" | "nosuid" | "nodev" | "noexec" => continue,
                        o if o.contains('=') => continue,
                        o => o,
                    };
                    mounts
                        .v1
                        .entry(controller.to_owned())
                        .or_insert_with(|| mount_point.clone());
                }
            }
            _ => {}
        }
    }
    mounts
}

/// Mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let digits = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        if bytes[i] == b'\\'
            && let Some(digits) = digits
        {
            out.push(
                digits
                    .iter()
                    .fold(0u8, |n, d| n.wrapping_mul(8).wrapping_add(d - b'0')),
            );
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where a controller is used from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Placement {
    /// The unified hierarchy, mounted here.
    V2(PathBuf),
    /// A v1 hierarchy, mounted here.
    V1(PathBuf),
    /// Not available; why.
    Missing(String),
}

impl Placement {
    pub(crate) fn describe(&self) -> String {
        match self {
            Placement::V2(m) => format!("cgroup v2 at {}", m.display()),
            Placement::V1(m) => format!("cgroup v1 at {}", m.display()),
            Placement::Missing(why) => why.clone(),
        }
    }
}

/// Where each controller is used from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    pub cpu: Placement,
    pub memory: Placement,
    pub pids: Placement,
    /// With a v1 `cpu` controller: the v1 `cpuacct` mount, for CPU usage.
    pub cpuacct: Option<PathBuf>,
}

impl Layout {
    pub(crate) fn placement(&self, controller: Controller) -> &Placement {
        match controller {
            Controller::Cpu => &self.cpu,
            Controller::Memory => &self.memory,
            Controller::Pids => &self.pids,
        }
    }
}

/// Chooses each controller's hierarchy: v2 when the unified root offers it
/// (`v2_controllers` is its `cgroup.controllers`), else v1 when mounted.
pub(crate) fn layout(mounts: &Mounts, v2_controllers: &str) -> Layout {
    let offered: Vec<&str> = v2_controllers.split_whitespace().collect();
    let place = |controller: Controller| {
        let name = controller.name();
        match (&mounts.v2, mounts.v1.get(name)) {
            (Some(v2), _) if offered.contains(&name) => Placement::V2(v2.clone()),
            (_, Some(v1)) => Placement::V1(v1.clone()),
            (Some(v2), None) => Placement::Missing(format!(
                "not enabled in the cgroup v2 hierarchy at {} and no cgroup v1 {name} hierarchy is mounted",
                v2.display()
            )),
            (None, None) => {
                Placement::Missing("no cgroup file system with this controller is mounted".into())
            }
        }
    };
    let cpu = place(Controller::Cpu);
    let cpuacct = match cpu {
        Placement::V1(_) => mounts.v1.get("cpuacct").cloned(),
        _ => None,
    };
    Layout {
        cpu,
        memory: place(Controller::Memory),
        pids: place(Controller::Pids),
        cpuacct,
    }
}

/// The cgroup layout of this machine.
pub(crate) fn detect() -> Layout {
    let mounts = parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
    let offered = match &mounts.v2 {
        Some(v2) => std::fs::read_to_string(v2.join("cgroup.controllers")).unwrap_or_default(),
        None => String::new(),
    };
    layout(&mounts, &offered)
}

/// A limit file to write: name, value, and whether the sandbox needs it (optional ones are
/// skipped when the kernel lacks them, e.g. swap accounting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LimitFile {
    pub name: &'static str,
    pub value: String,
    pub required: bool,
}

fn required(name: &'static str, value: impl ToString) -> LimitFile {
    LimitFile {
        name,
        value: value.to_string(),
        required: true,
    }
}

fn optional(name: &'static str, value: impl ToString) -> LimitFile {
    LimitFile {
        name,
        value: value.to_string(),
        required: false,
    }
}

/// CPU quota per period for `cpu_millis` thousandths of a core (`None`: no quota).
pub(crate) fn cpu_quota_us(cpu_millis: u32) -> Option<u64> {
    (cpu_millis > 0).then(|| (u64::from(cpu_millis) * CPU_PERIOD_US / 1000).max(MIN_CPU_QUOTA_US))
}

/// The files that set `controller`'s limits, in the order they must be written.
pub(crate) fn limit_files(v2: bool, controller: Controller, limits: &Limits) -> Vec<LimitFile> {
    match (controller, v2) {
        (Controller::Cpu, true) => {
            let quota = cpu_quota_us(limits.cpu_millis).map_or("max".to_owned(), |q| q.to_string());
            vec![required("cpu.max", format!("{quota} {CPU_PERIOD_US}"))]
        }
        (Controller::Cpu, false) => {
            let quota = cpu_quota_us(limits.cpu_millis).map_or("-1".to_owned(), |q| q.to_string());
            vec![
                required("cpu.cfs_period_us", CPU_PERIOD_US),
                required("cpu.cfs_quota_us", quota),
            ]
        }
        (Controller::Memory, true) => vec![
            required("memory.max", limits.memory_bytes),
            optional("memory.swap.max", 0),
            // One OOM kill takes the whole instance down, as a container would.
            optional("memory.oom.group", 1),
        ],
        (Controller::Memory, false) => vec![
            required("memory.limit_in_bytes", limits.memory_bytes),
            // Must follow limit_in_bytes (it may not be below it).
            optional("memory.memsw.limit_in_bytes", limits.memory_bytes),
            optional("memory.swappiness", 0),
        ],
        (Controller::Pids, _) => vec![required("pids.max", limits.pids)],
    }
}

/// Enables the controllers placed in v2 in every cgroup from the hierarchy root down to
/// `parent` (creating it), so instance cgroups below it get them.
pub(crate) fn prepare_parent(layout: &Layout, parent: &str) -> Result<(), String> {
    let mut v2_root = None;
    let mut v2_controllers = Vec::new();
    for controller in Controller::ALL {
        match layout.placement(controller) {
            Placement::V2(root) => {
                v2_root = Some(root.clone());
                v2_controllers.push(controller.name());
            }
            Placement::V1(root) => {
                let dir = root.join(parent);
                std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            Placement::Missing(_) => {}
        }
    }
    if let Some(cpuacct) = &layout.cpuacct {
        let dir = cpuacct.join(parent);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let Some(root) = v2_root else {
        return Ok(());
    };
    let mut dir = root.clone();
    let levels = Path::new(parent).components().count();
    for level in 0..=levels {
        if level > 0 {
            let name = Path::new(parent)
                .components()
                .nth(level - 1)
                .expect("level exists");
            dir = dir.join(name);
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
            }
        }
        let control = dir.join("cgroup.subtree_control");
        let enabled = std::fs::read_to_string(&control).unwrap_or_default();
        for name in &v2_controllers {
            if enabled.split_whitespace().any(|c| c == *name) {
                continue;
            }
            std::fs::write(&control, format!("+{name}")).map_err(|e| {
                let hint = if e.raw_os_error() == Some(libc::EBUSY) {
                    " (the cgroup holds processes; run the server in a delegated cgroup, \
                     e.g. `systemd-run -p Delegate=yes`, or move its processes to a leaf cgroup)"
                } else {
                    ""
                };
                format!(
                    "cannot enable the {name} controller in {}: {e}{hint}",
                    control.display()
                )
            })?;
        }
    }
    Ok(())
}

/// Removes instance cgroups below `parent` that hold no process and are older than
/// `older_than`: what a server that died (SIGKILL) could not remove. Young ones are left
/// alone, as another runtime may be about to fill them. Returns how many were removed.
pub(crate) fn sweep(layout: &Layout, parent: &str, older_than: Duration) -> usize {
    let mut roots: Vec<&PathBuf> = Controller::ALL
        .iter()
        .filter_map(|c| match layout.placement(*c) {
            Placement::V2(root) | Placement::V1(root) => Some(root),
            Placement::Missing(_) => None,
        })
        .chain(layout.cpuacct.as_ref())
        .collect();
    roots.sort();
    roots.dedup();
    let mut removed = 0;
    for root in roots {
        let Ok(entries) = std::fs::read_dir(root.join(parent)) else {
            continue;
        };
        for entry in entries.flatten() {
            let dir = entry.path();
            let old = super::older_than(&entry, older_than);
            let empty = std::fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|p| p.trim().is_empty());
            if dir.is_dir() && old && empty && std::fs::remove_dir(&dir).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

/// Whether instance `id` still has a cgroup in any hierarchy.
pub(crate) fn exists(layout: &Layout, parent: &str, id: &str) -> bool {
    Controller::ALL.iter().any(|c| match layout.placement(*c) {
        Placement::V2(root) | Placement::V1(root) => root.join(parent).join(id).exists(),
        Placement::Missing(_) => false,
    })
}

/// Resource usage of an instance, from its cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// CPU time used by every process of the instance.
    pub cpu: Option<Duration>,
    /// Memory in use now (including page cache charged to the instance).
    pub memory_bytes: Option<u64>,
    /// The most memory the instance used at once.
    pub memory_peak_bytes: Option<u64>,
}

/// The cgroup(s) of one instance.
#[derive(Debug)]
pub(crate) struct InstanceCgroup {
    /// One folder per hierarchy, each joined by the sandbox and removed at the end.
    dirs: Vec<PathBuf>,
    cpu: (bool, PathBuf),
    memory: (bool, PathBuf),
    pids: (bool, PathBuf),
    /// Where CPU usage is read (v2 `cpu.stat`, v1 `cpuacct.usage`), if anywhere.
    cpu_usage: Option<(bool, PathBuf)>,
    /// The v2 folder, for `cgroup.kill`.
    v2: Option<PathBuf>,
    memory_limit: u64,
    pids_limit: u32,
}

impl InstanceCgroup {
    /// Creates the instance's cgroups below `parent` and writes its limits.
    pub(crate) fn create(
        layout: &Layout,
        parent: &str,
        id: &str,
        limits: &Limits,
    ) -> Result<InstanceCgroup, String> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut at = BTreeMap::new();
        for controller in Controller::ALL {
            let (v2, root) = match layout.placement(controller) {
                Placement::V2(root) => (true, root),
                Placement::V1(root) => (false, root),
                Placement::Missing(why) => return Err(format!("cgroup {}: {why}", controller.name())),
            };
            let dir = root.join(parent).join(id);
            if !dirs.contains(&dir) {
                match std::fs::create_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                    Err(e) => {
                        remove_dirs(&dirs);
                        return Err(format!("cannot create cgroup {}: {e}", dir.display()));
                    }
                }
                dirs.push(dir.clone());
            }
            at.insert(controller, (v2, dir));
        }
        let mut cpu_usage = match &at[&Controller::Cpu] {
            (true, dir) => Some((true, dir.clone())),
            (false, _) => None,
        };
        if let Some(cpuacct) = &layout.cpuacct {
            let dir = cpuacct.join(parent).join(id);
            if !dirs.contains(&dir) && std::fs::create_dir(&dir).is_ok() {
                dirs.push(dir.clone());
            }
            cpu_usage = Some((false, dir));
        }
        let cgroup = InstanceCgroup {
            v2: at.values().find(|(v2, _)| *v2).map(|(_, d)| d.clone()),
            cpu: at[&Controller::Cpu].clone(),
            memory: at[&Controller::Memory].clone(),
            pids: at[&Controller::Pids].clone(),
            cpu_usage,
            dirs,
            memory_limit: limits.memory_bytes,
            pids_limit: limits.pids,
        };
        for (controller, (v2, dir)) in &at {
            for file in limit_files(*v2, *controller, limits) {
                let path = dir.join(file.name);
                // Optional files may be absent (no swap accounting) or refused; that is fine.
                if let Err(e) = std::fs::write(&path, &file.value)
                    && file.required
                {
                    cgroup.remove_now();
                    return Err(format!("cannot write {} to {}: {e}", file.value, path.display()));
                }
            }
        }
        Ok(cgroup)
    }

    /// Sets the CPU quota to `cpu_millis` thousandths of a core (0: none).
    pub(crate) fn set_cpu(&self, cpu_millis: u32) -> Result<(), String> {
        let (v2, dir) = &self.cpu;
        let limits = Limits {
            cpu_millis,
            ..Limits::default()
        };
        for file in limit_files(*v2, Controller::Cpu, &limits) {
            let path = dir.join(file.name);
            std::fs::write(&path, &file.value)
                .map_err(|e| format!("cannot write {} to {}: {e}", file.value, path.display()))?;
        }
        Ok(())
    }

    /// The folders the sandbox joins.
    pub(crate) fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// How many processes the kernel killed for running out of memory in this cgroup.
    pub(crate) fn oom_kills(&self) -> u64 {
        let (v2, dir) = &self.memory;
        let file = if *v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        keyed_value(&text, "oom_kill").unwrap_or(0)
    }

    /// How many times a fork failed for the pids limit.
    pub(crate) fn pids_limit_hits(&self) -> u64 {
        let text = std::fs::read_to_string(self.pids.1.join("pids.events")).unwrap_or_default();
        keyed_value(&text, "max").unwrap_or(0)
    }

    pub(crate) fn memory_limit(&self) -> u64 {
        self.memory_limit
    }

    pub(crate) fn pids_limit(&self) -> u32 {
        self.pids_limit
    }

    pub(crate) fn usage(&self) -> Usage {
        let read = |path: PathBuf| std::fs::read_to_string(path).ok();
        let cpu = self.cpu_usage.as_ref().and_then(|(v2, dir)| {
            if *v2 {
                let stat = read(dir.join("cpu.stat"))?;
                keyed_value(&stat, "usage_usec").map(Duration::from_micros)
            } else {
                let nanos = read(dir.join("cpuacct.usage"))?.trim().parse().ok()?;
                Some(Duration::from_nanos(nanos))
            }
        });
        let (v2, dir) = &self.memory;
        let (now, peak) = if *v2 {
            ("memory.current", "memory.peak")
        } else {
            ("memory.usage_in_bytes", "memory.max_usage_in_bytes")
        };
        let number = |name: &str| read(dir.join(name)).and_then(|t| t.trim().parse().ok());
        Usage {
            cpu,
            memory_bytes: number(now),
            memory_peak_bytes: number(peak),
        }
    }

    /// Kills every process in the cgroup at once, where the kernel can (v2 `cgroup.kill`).
    pub(crate) fn kill(&self) {
        if let Some(dir) = &self.v2 {
            let _ = std::fs::write(dir.join("cgroup.kill"), "1");
        }
    }

    /// Removes the cgroups, waiting up to `limit` for their last processes to be gone.
    pub(crate) async fn remove(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        let mut pause = Duration::from_millis(1);
        loop {
            let left: Vec<_> = self.dirs.iter().filter(|d| d.exists()).cloned().collect();
            if remove_dirs(&left) || tokio::time::Instant::now() >= deadline {
                if left.iter().any(|d| d.exists()) {
                    tracing::warn!(cgroups = ?left, "cgroup still busy; left in place");
                }
                return;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    fn remove_now(&self) {
        remove_dirs(&self.dirs);
    }
}

/// Removes cgroup folders; `true` when none is left.
fn remove_dirs(dirs: &[PathBuf]) -> bool {
    let mut all = true;
    for dir in dirs {
        match std::fs::remove_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(_) => all = false,
        }
    }
    all
}

/// The number after `key` in a `key value` per line file (`memory.events`, `cpu.stat`).
pub(crate) fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 1 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 25 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
33 30 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
35 30 0:31 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
36 30 0:32 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const UNIFIED: &str = "\
24 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    const COMOUNTED: &str = "\
31 30 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,cpu,cpuacct
33 30 0:29 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,memory
";

    #[test]
    fn hybrid_machine_uses_v1_for_controllers_bound_there() {
        let mounts = parse_mountinfo(HYBRID);
        assert_eq!(mounts.v2, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(mounts.v1["memory"], PathBuf::from("/sys/fs/cgroup/memory"));
        assert!(!mounts.v1.contains_key("name=systemd"));
        let layout = layout(&mounts, "");
        assert_eq!(layout.cpu, Placement::V1("/sys/fs/cgroup/cpu".into()));
        assert_eq!(layout.memory, Placement::V1("/sys/fs/cgroup/memory".into()));
        assert_eq!(layout.pids, Placement::V1("/sys/fs/cgroup/pids".into()));
        assert_eq!(layout.cpuacct, Some("/sys/fs/cgroup/cpuacct".into()));
    }

    #[test]
    fn unified_machine_uses_v2() {
        let layout = layout(
            &parse_mountinfo(UNIFIED),
            "cpuset cpu io memory hugetlb pids rdma misc\n",
        );
        for placement in [&layout.cpu, &layout.memory, &layout.pids] {
            assert_eq!(placement, &Placement::V2("/sys/fs/cgroup".into()));
        }
        assert_eq!(layout.cpuacct, None);
    }

    #[test]
    fn a_controller_not_delegated_to_v2_is_missing() {
        let layout = layout(&parse_mountinfo(UNIFIED), "cpu memory");
        assert!(matches!(layout.pids, Placement::Missing(ref why) if why.contains("not enabled")));
        let none = super::layout(&Mounts::default(), "");
        assert!(matches!(none.memory, Placement::Missing(_)));
    }

    #[test]
    fn comounted_cpu_and_cpuacct_share_a_mount() {
        let mounts = parse_mountinfo(COMOUNTED);
        assert_eq!(mounts.v1["cpu"], PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(mounts.v1["cpuacct"], PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        let layout = layout(&mounts, "");
        assert!(matches!(layout.pids, Placement::Missing(_)));
    }

    #[test]
    fn escaped_mount_points_are_decoded() {
        let line = "31 30 0:27 / /sys/fs/cgroup/my\\040cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(
            parse_mountinfo(line).v1["cpu"],
            PathBuf::from("/sys/fs/cgroup/my cpu")
        );
    }

    #[test]
    fn cpu_quota_is_thousandths_of_a_core() {
        assert_eq!(cpu_quota_us(250), Some(25_000));
        assert_eq!(cpu_quota_us(1000), Some(100_000));
        assert_eq!(cpu_quota_us(2500), Some(250_000));
        assert_eq!(cpu_quota_us(1), Some(1_000), "the kernel minimum");
        assert_eq!(cpu_quota_us(0), None);
    }

    #[test]
    fn limit_files_for_each_version() {
        let limits = Limits {
            memory_bytes: 128 << 20,
            cpu_millis: 250,
            pids: 64,
        };
        let v2: Vec<_> = Controller::ALL
            .iter()
            .flat_map(|c| limit_files(true, *c, &limits))
            .map(|f| format!("{}={}{}", f.name, f.value, if f.required { "" } else { "?" }))
            .collect();
        assert_eq!(
            v2,
            [
                "cpu.max=25000 100000",
                "memory.max=134217728",
                "memory.swap.max=0?",
                "memory.oom.group=1?",
                "pids.max=64"
            ]
        );
        let v1: Vec<_> = Controller::ALL
            .iter()
            .flat_map(|c| limit_files(false, *c, &limits))
            .map(|f| format!("{}={}", f.name, f.value))
            .collect();
        assert_eq!(
            v1,
            [
                "cpu.cfs_period_us=100000",
                "cpu.cfs_quota_us=25000",
                "memory.limit_in_bytes=134217728",
                "memory.memsw.limit_in_bytes=134217728",
                "memory.swappiness=0",
                "pids.max=64"
            ]
        );
        let unlimited = Limits {
            cpu_millis: 0,
            ..limits
        };
        assert_eq!(
            limit_files(true, Controller::Cpu, &unlimited)[0].value,
            "max 100000"
        );
        assert_eq!(limit_files(false, Controller::Cpu, &unlimited)[1].value, "-1");
    }

    fn read(path: PathBuf) -> String {
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn test_limits() -> Limits {
        Limits {
            memory_bytes: 64 << 20,
            cpu_millis: 500,
            pids: 32,
        }
    }

    /// The file handling of a unified hierarchy, on a plain folder standing in for cgroupfs
    /// (the kernel's own behaviour is covered by the end-to-end tests where v2 is mounted).
    #[test]
    fn instance_cgroup_on_a_v2_tree() {
        let tree = tempfile::tempdir().expect("tempdir");
        let root = tree.path().to_path_buf();
        std::fs::write(root.join("cgroup.subtree_control"), "").unwrap();
        let layout = Layout {
            cpu: Placement::V2(root.clone()),
            memory: Placement::V2(root.clone()),
            pids: Placement::V2(root.clone()),
            cpuacct: None,
        };
        prepare_parent(&layout, "kl").expect("parent");
        assert!(root.join("kl").is_dir());
        assert_eq!(
            read(root.join("kl/cgroup.subtree_control")),
            "+pids",
            "controllers enabled down to the parent"
        );
        let cgroup = InstanceCgroup::create(&layout, "kl", "i1", &test_limits()).expect("cgroup");
        let dir = root.join("kl/i1");
        assert_eq!(
            cgroup.dirs(),
            std::slice::from_ref(&dir),
            "one folder in the unified hierarchy"
        );
        assert_eq!(read(dir.join("cpu.max")), "50000 100000");
        assert_eq!(read(dir.join("memory.max")), "67108864");
        assert_eq!(read(dir.join("memory.swap.max")), "0");
        assert_eq!(read(dir.join("memory.oom.group")), "1");
        assert_eq!(read(dir.join("pids.max")), "32");
        assert!(exists(&layout, "kl", "i1"));
        assert_eq!(cgroup.oom_kills(), 0);
        std::fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\n",
        )
        .unwrap();
        std::fs::write(dir.join("pids.events"), "max 4\n").unwrap();
        std::fs::write(dir.join("cpu.stat"), "usage_usec 1500000\nuser_usec 1000000\n").unwrap();
        std::fs::write(dir.join("memory.current"), "1048576\n").unwrap();
        std::fs::write(dir.join("memory.peak"), "2097152\n").unwrap();
        assert_eq!(cgroup.oom_kills(), 1);
        assert_eq!(cgroup.pids_limit_hits(), 4);
        assert_eq!(
            cgroup.usage(),
            Usage {
                cpu: Some(Duration::from_millis(1500)),
                memory_bytes: Some(1 << 20),
                memory_peak_bytes: Some(2 << 20),
            }
        );
        cgroup.kill();
        assert_eq!(read(dir.join("cgroup.kill")), "1");
    }

    /// The same on separate v1 hierarchies (cpu and cpuacct apart, as on this development machine).
    #[test]
    fn instance_cgroup_on_v1_trees() {
        let tree = tempfile::tempdir().expect("tempdir");
        let at = |name: &str| tree.path().join(name);
        let layout = Layout {
            cpu: Placement::V1(at("cpu")),
            memory: Placement::V1(at("memory")),
            pids: Placement::V1(at("pids")),
            cpuacct: Some(at("cpuacct")),
        };
        prepare_parent(&layout, "kl").expect("parent");
        let cgroup = InstanceCgroup::create(&layout, "kl", "i1", &test_limits()).expect("cgroup");
        let dirs: Vec<_> = ["cpu", "memory", "pids", "cpuacct"]
            .iter()
            .map(|c| at(c).join("kl/i1"))
            .collect();
        assert_eq!(
            cgroup.dirs(),
            dirs.as_slice(),
            "one folder per hierarchy, all joined"
        );
        assert_eq!(read(dirs[0].join("cpu.cfs_quota_us")), "50000");
        assert_eq!(read(dirs[0].join("cpu.cfs_period_us")), "100000");
        assert_eq!(read(dirs[1].join("memory.limit_in_bytes")), "67108864");
        assert_eq!(read(dirs[1].join("memory.memsw.limit_in_bytes")), "67108864");
        assert_eq!(read(dirs[2].join("pids.max")), "32");
        std::fs::write(
            dirs[1].join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        std::fs::write(dirs[3].join("cpuacct.usage"), "250000000\n").unwrap();
        assert_eq!(cgroup.oom_kills(), 2);
        assert_eq!(cgroup.usage().cpu, Some(Duration::from_millis(250)));
        cgroup.kill();
        assert!(
            !dirs.iter().any(|d| d.join("cgroup.kill").exists()),
            "v1 has no cgroup.kill"
        );
    }

    #[test]
    fn a_missing_controller_fails_creation() {
        let layout = Layout {
            cpu: Placement::V1("/nonexistent".into()),
            memory: Placement::Missing("not mounted".into()),
            pids: Placement::V1("/nonexistent".into()),
            cpuacct: None,
        };
        let err =
            InstanceCgroup::create(&layout, "kl", "i1", &test_limits()).expect_err("no memory controller");
        assert!(err.contains("cgroup") && err.contains("/nonexistent"), "{err}");
    }

    #[test]
    fn counters_are_read_by_key() {
        let v2_events = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(keyed_value(v2_events, "oom_kill"), Some(1));
        assert_eq!(keyed_value(v2_events, "max"), Some(12));
        let v1_oom = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed_value(v1_oom, "oom_kill"), Some(3));
        assert_eq!(
            keyed_value("usage_usec 2500\nuser_usec 2000\n", "usage_usec"),
            Some(2500)
        );
        assert_eq!(keyed_value("", "oom_kill"), None);
    }
}
