//! The sandbox's file system: a new root on a small tmpfs holding read-only binds of the
//! system folders, a minimal `/etc`, the exposed paths (same path as on the host), a private
//! `/tmp`, a fresh `/proc`, a minimal `/dev` and the instance's socket folder; then
//! `pivot_root` into it, leaving nothing of the host's tree reachable.
//!
//! [`plan`] decides what to mount (pure, tested); [`build`] does it.

use std::ffi::CString;
use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::StatVfsMountFlags;
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};

use kl_core::secret::SECRETS_MOUNT;

use super::spec::{EGRESS_PATH, JailSpec, RUN_DIR, SYSTEM_DIRS};

/// Entries of the host's `/etc` exposed read-only, when present: the dynamic loader's
/// configuration, TLS roots, alternatives links, time zone and name service switch. Never
/// `shadow`, `sudoers` and the like.
const ETC_ENTRIES: [&str; 11] = [
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "pki",
    "alternatives",
    "localtime",
    "nsswitch.conf",
    "mime.types",
];
/// Devices bound from the host.
const DEVICES: [&str; 5] = ["null", "zero", "full", "random", "urandom"];
/// Size of the root tmpfs: it holds only mount points, links and tiny files.
const ROOT_SIZE: u64 = 1 << 20;

/// What a host path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
    Symlink(PathBuf),
}

/// One step of building the root. Targets are paths inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// A tmpfs (`mode`, `size` bytes); `exec` false adds `noexec`.
    Tmpfs {
        target: PathBuf,
        mode: u32,
        size: u64,
        exec: bool,
    },
    /// A bind mount of a host path; `file` when it is not a folder, `device` for the
    /// device nodes (the only mounts without `nodev`).
    Bind {
        source: PathBuf,
        target: PathBuf,
        file: bool,
        writable: bool,
        exec: bool,
        device: bool,
    },
    Symlink {
        target: PathBuf,
        points_to: PathBuf,
    },
    Write {
        target: PathBuf,
        contents: String,
    },
    Proc {
        target: PathBuf,
    },
    /// Makes a tmpfs read-only once filled.
    ReadOnly {
        target: PathBuf,
    },
}

/// The steps that build the sandbox's root for `spec`, given what the host has.
pub(crate) fn plan(spec: &JailSpec, host: impl Fn(&Path) -> Option<Kind>) -> Result<Vec<Step>, String> {
    let mut steps = vec![Step::Tmpfs {
        target: "/".into(),
        mode: 0o755,
        size: ROOT_SIZE,
        exec: true,
    }];
    let ro_bind = |source: &Path, file: bool| Step::Bind {
        source: source.to_path_buf(),
        target: source.to_path_buf(),
        file,
        writable: false,
        exec: true,
        device: false,
    };
    for dir in SYSTEM_DIRS {
        match host(Path::new(dir)) {
            Some(Kind::Dir) => steps.push(ro_bind(Path::new(dir), false)),
            Some(Kind::Symlink(to)) => steps.push(Step::Symlink {
                target: dir.into(),
                points_to: to,
            }),
            Some(Kind::File) | None => {}
        }
    }
    for name in ETC_ENTRIES {
        let path = Path::new("/etc").join(name);
        match host(&path) {
            Some(Kind::Dir) => steps.push(ro_bind(&path, false)),
            Some(Kind::File) => steps.push(ro_bind(&path, true)),
            Some(Kind::Symlink(to)) => steps.push(Step::Symlink {
                target: path,
                points_to: to,
            }),
            None => {}
        }
    }
    let (uid, gid) = (spec.uid, spec.gid);
    for (name, contents) in [
        (
            "passwd",
            format!(
                "root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n\
                 kl:x:{uid}:{gid}:kl function:/tmp:/usr/sbin/nologin\n"
            ),
        ),
        ("group", format!("root:x:0:\nkl:x:{gid}:\n")),
        ("hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost\n".to_owned()),
        ("hostname", format!("{}\n", spec.id)),
    ] {
        steps.push(Step::Write {
            target: Path::new("/etc").join(name),
            contents,
        });
    }
    steps.push(Step::Tmpfs {
        target: "/tmp".into(),
        mode: 0o1777,
        size: spec.tmp_size_bytes,
        exec: false,
    });
    steps.push(Step::Tmpfs {
        target: "/dev".into(),
        mode: 0o755,
        size: 64 << 10,
        exec: false,
    });
    for device in DEVICES {
        let path = Path::new("/dev").join(device);
        steps.push(Step::Bind {
            source: path.clone(),
            target: path,
            file: true,
            writable: true,
            exec: false,
            device: true,
        });
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        steps.push(Step::Symlink {
            target: Path::new("/dev").join(link),
            points_to: to.into(),
        });
    }
    steps.push(Step::Tmpfs {
        target: "/dev/shm".into(),
        mode: 0o1777,
        size: spec.tmp_size_bytes,
        exec: false,
    });
    steps.push(Step::ReadOnly {
        target: "/dev".into(),
    });
    steps.push(Step::Bind {
        source: spec.sock_dir.clone(),
        target: RUN_DIR.into(),
        file: false,
        writable: true,
        exec: false,
        device: false,
    });
    if let Some(egress) = &spec.egress_socket {
        steps.push(Step::Bind {
            source: egress.clone(),
            target: EGRESS_PATH.into(),
            file: true,
            writable: true,
            exec: false,
            device: false,
        });
    }
    if let Some(secrets) = &spec.secrets_dir {
        steps.push(Step::Bind {
            source: secrets.clone(),
            target: SECRETS_MOUNT.into(),
            file: false,
            writable: false,
            exec: false,
            device: false,
        });
    }
    for path in &spec.expose {
        if !path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(format!(
                "cannot expose {}: not an absolute, normal path",
                path.display()
            ));
        }
        for reserved in ["/proc", "/dev", "/run", "/etc"] {
            if path.starts_with(reserved) || Path::new(reserved).starts_with(path) {
                return Err(format!(
                    "cannot expose {}: {reserved} is the sandbox's own",
                    path.display()
                ));
            }
        }
        match host(path) {
            Some(Kind::Dir) => steps.push(ro_bind(path, false)),
            Some(Kind::File) => steps.push(ro_bind(path, true)),
            Some(Kind::Symlink(_)) => {
                return Err(format!("cannot expose {}: resolve links first", path.display()));
            }
            None => {
                return Err(format!(
                    "cannot expose {}: no such file or folder",
                    path.display()
                ));
            }
        }
    }
    steps.push(Step::Proc {
        target: "/proc".into(),
    });
    steps.push(Step::ReadOnly { target: "/".into() });
    Ok(steps)
}

/// What `path` is on this host (without following a last symbolic link).
pub(crate) fn host_kind(path: &Path) -> Option<Kind> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if meta.file_type().is_symlink() {
        return std::fs::read_link(path).ok().map(Kind::Symlink);
    }
    Some(if meta.is_dir() { Kind::Dir } else { Kind::File })
}

/// Builds the new root at `spec.root_dir` by running `steps`, then makes it the process's
/// root with `pivot_root`. Must run in a fresh mount namespace (and, for `/proc`, as the
/// first process of a fresh pid namespace).
pub(crate) fn build(spec: &JailSpec, steps: &[Step]) -> Result<(), String> {
    rustix::mount::mount_change("/", MountPropagationFlags::PRIVATE | MountPropagationFlags::REC)
        .map_err(|e| format!("cannot make the mount tree private: {e}"))?;
    let root = &spec.root_dir;
    for step in steps {
        run(root, step).map_err(|e| format!("{step:?}: {e}"))?;
    }
    enter(root)
}

/// The host path of a sandbox path.
fn inside(root: &Path, target: &Path) -> PathBuf {
    match target.strip_prefix("/") {
        Ok(rel) if rel.as_os_str().is_empty() => root.to_path_buf(),
        Ok(rel) => root.join(rel),
        Err(_) => root.join(target),
    }
}

/// Creates a folder and its missing parents, mode 0755 (the root tmpfs belongs to root).
fn make_dirs(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
}

fn run(root: &Path, step: &Step) -> std::io::Result<()> {
    match step {
        Step::Tmpfs {
            target,
            mode,
            size,
            exec,
        } => {
            let at = inside(root, target);
            make_dirs(&at)?;
            let mut flags = MountFlags::NOSUID | MountFlags::NODEV;
            if !exec {
                flags |= MountFlags::NOEXEC;
            }
            let data = CString::new(format!("mode={mode:o},size={size}")).expect("no NUL in tmpfs options");
            rustix::mount::mount("tmpfs", &at, "tmpfs", flags, data.as_c_str())?;
            // The mount's root takes `mode`; make sure of it whatever the umask.
            std::fs::set_permissions(&at, std::fs::Permissions::from_mode(*mode))?;
        }
        Step::Bind {
            source,
            target,
            file,
            writable,
            exec,
            device,
        } => {
            let at = inside(root, target);
            if *file {
                make_dirs(at.parent().unwrap_or(root))?;
                File::create(&at)?;
            } else {
                make_dirs(&at)?;
            }
            rustix::mount::mount_bind(source, &at)?;
            // Keep the flags the source mount already has: a remount may not drop them when
            // they are locked (as in a user namespace).
            let mut flags = MountFlags::BIND | MountFlags::NOSUID | locked_flags(&at);
            if !device {
                flags |= MountFlags::NODEV;
            }
            if !writable {
                flags |= MountFlags::RDONLY;
            }
            if !exec {
                flags |= MountFlags::NOEXEC;
            }
            rustix::mount::mount_remount(&at, flags, "")?;
        }
        Step::Symlink { target, points_to } => {
            let at = inside(root, target);
            make_dirs(at.parent().unwrap_or(root))?;
            std::os::unix::fs::symlink(points_to, &at)?;
        }
        Step::Write { target, contents } => {
            let at = inside(root, target);
            make_dirs(at.parent().unwrap_or(root))?;
            std::fs::write(&at, contents)?;
            std::fs::set_permissions(&at, std::fs::Permissions::from_mode(0o644))?;
        }
        Step::Proc { target } => {
            let at = inside(root, target);
            make_dirs(&at)?;
            let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
            rustix::mount::mount("proc", &at, "proc", flags, None)?;
        }
        Step::ReadOnly { target } => {
            let at = inside(root, target);
            let flags = MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV;
            let flags = if target == Path::new("/") {
                flags
            } else {
                flags | MountFlags::NOEXEC
            };
            rustix::mount::mount_remount(&at, flags, "")?;
        }
    }
    Ok(())
}

/// Flags of the mount at `path` that a bind remount must keep.
fn locked_flags(path: &Path) -> MountFlags {
    let Ok(stat) = rustix::fs::statvfs(path) else {
        return MountFlags::empty();
    };
    let have = stat.f_flag;
    [
        (StatVfsMountFlags::RDONLY, MountFlags::RDONLY),
        (StatVfsMountFlags::NOEXEC, MountFlags::NOEXEC),
        (StatVfsMountFlags::NOATIME, MountFlags::NOATIME),
        (StatVfsMountFlags::NODIRATIME, MountFlags::NODIRATIME),
        (StatVfsMountFlags::RELATIME, MountFlags::RELATIME),
    ]
    .into_iter()
    .filter(|(stat_flag, _)| have.contains(*stat_flag))
    .fold(MountFlags::empty(), |flags, (_, mount_flag)| flags | mount_flag)
}

/// `pivot_root` into `root` and detach the old root, so none of the host's tree is left.
fn enter(root: &Path) -> Result<(), String> {
    rustix::process::chdir(root).map_err(|e| format!("cannot enter {}: {e}", root.display()))?;
    // With both arguments ".", the old root ends up stacked on the new one, where it is
    // detached at once; no folder for it is needed.
    rustix::process::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    rustix::mount::unmount(".", UnmountFlags::DETACH)
        .map_err(|e| format!("cannot detach the old root: {e}"))?;
    rustix::process::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn spec() -> JailSpec {
        JailSpec {
            id: "i1".into(),
            program: "/opt/py/bin/python3".into(),
            args: vec![],
            env: vec![],
            cwd: "/data/a/code".into(),
            uid: 10_001,
            gid: 10_002,
            expose: vec![
                "/data/a/code".into(),
                "/opt/py".into(),
                "/data/a/.kl/kl_shim.py".into(),
            ],
            root_dir: "/run/kl/i1/root".into(),
            sock_dir: "/run/kl/i1/sock".into(),
            egress_socket: None,
            secrets_dir: None,
            cgroups: vec![],
            tmp_size_bytes: 1 << 20,
            nofile: 1024,
            file_size_bytes: 1 << 30,
        }
    }

    fn merged_usr_host() -> impl Fn(&Path) -> Option<Kind> {
        let host: BTreeMap<&str, Kind> = BTreeMap::from([
            ("/usr", Kind::Dir),
            ("/bin", Kind::Symlink("usr/bin".into())),
            ("/lib", Kind::Symlink("usr/lib".into())),
            ("/lib64", Kind::Symlink("usr/lib64".into())),
            ("/etc/ld.so.cache", Kind::File),
            ("/etc/ssl", Kind::Dir),
            (
                "/etc/localtime",
                Kind::Symlink("/usr/share/zoneinfo/Etc/UTC".into()),
            ),
            ("/etc/shadow", Kind::File),
            ("/data/a/code", Kind::Dir),
            ("/data/a/.kl/kl_shim.py", Kind::File),
            ("/opt/py", Kind::Dir),
        ]);
        move |p: &Path| host.get(p.to_str().expect("utf-8")).cloned()
    }

    fn targets(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| match s {
                Step::Tmpfs { target, .. } => format!("tmpfs {}", target.display()),
                Step::Bind { target, writable, .. } => {
                    format!("bind{} {}", if *writable { "-rw" } else { "" }, target.display())
                }
                Step::Symlink { target, points_to } => {
                    format!("link {} -> {}", target.display(), points_to.display())
                }
                Step::Write { target, .. } => format!("write {}", target.display()),
                Step::Proc { target } => format!("proc {}", target.display()),
                Step::ReadOnly { target } => format!("ro {}", target.display()),
            })
            .collect()
    }

    #[test]
    fn plan_exposes_only_what_is_listed() {
        let steps = plan(&spec(), merged_usr_host()).expect("plan");
        let t = targets(&steps);
        assert_eq!(t[0], "tmpfs /");
        for expected in [
            "bind /usr",
            "link /bin -> usr/bin",
            "link /lib64 -> usr/lib64",
            "bind /etc/ld.so.cache",
            "bind /etc/ssl",
            "link /etc/localtime -> /usr/share/zoneinfo/Etc/UTC",
            "write /etc/passwd",
            "write /etc/group",
            "tmpfs /tmp",
            "tmpfs /dev",
            "bind-rw /dev/null",
            "bind-rw /dev/urandom",
            "link /dev/fd -> /proc/self/fd",
            "bind-rw /run/kl",
            "bind /data/a/code",
            "bind /opt/py",
            "bind /data/a/.kl/kl_shim.py",
            "proc /proc",
        ] {
            assert!(t.contains(&expected.to_owned()), "missing {expected:?} in {t:#?}");
        }
        assert!(!t.iter().any(|s| s.contains("shadow")), "shadow is never exposed");
        assert!(
            !t.iter().any(|s| s.contains("egress")),
            "no egress socket without a proxy"
        );
        assert_eq!(
            t.last().map(String::as_str),
            Some("ro /"),
            "the root is made read-only last"
        );
        let passwd = steps.iter().find_map(|s| match s {
            Step::Write { target, contents } if target.ends_with("passwd") => Some(contents.clone()),
            _ => None,
        });
        assert!(passwd.expect("passwd").contains("kl:x:10001:10002:"));
    }

    #[test]
    fn private_tmp_comes_before_exposed_paths_inside_it() {
        let mut s = spec();
        s.expose = vec!["/tmp/build/code".into()];
        let steps = plan(&s, |p| (p == Path::new("/tmp/build/code")).then_some(Kind::Dir)).expect("plan");
        let t = targets(&steps);
        let tmp = t.iter().position(|x| x == "tmpfs /tmp").expect("tmp");
        let code = t.iter().position(|x| x == "bind /tmp/build/code").expect("code");
        assert!(tmp < code);
    }

    #[test]
    fn secrets_are_bound_read_only_without_exec_when_given() {
        assert!(
            !targets(&plan(&spec(), merged_usr_host()).expect("plan"))
                .iter()
                .any(|t| t.contains("secrets"))
        );
        let mut s = spec();
        s.secrets_dir = Some("/run/kl/i1/secrets".into());
        let steps = plan(&s, merged_usr_host()).expect("plan");
        let bind = steps
            .iter()
            .find(|step| matches!(step, Step::Bind { target, .. } if target == Path::new(SECRETS_MOUNT)));
        assert_eq!(
            bind,
            Some(&Step::Bind {
                source: "/run/kl/i1/secrets".into(),
                target: SECRETS_MOUNT.into(),
                file: false,
                writable: false,
                exec: false,
                device: false,
            })
        );
    }

    #[test]
    fn egress_socket_is_bound_when_given() {
        let mut s = spec();
        s.egress_socket = Some("/var/run/kl/egress.sock".into());
        let t = targets(&plan(&s, merged_usr_host()).expect("plan"));
        assert!(t.contains(&"bind-rw /run/egress.sock".to_owned()));
    }

    #[test]
    fn reserved_missing_and_relative_paths_are_refused() {
        for bad in [
            "/proc/1",
            "/dev",
            "/",
            "relative/x",
            "/data/../etc",
            "/etc/shadow",
            "/missing",
        ] {
            let mut s = spec();
            s.expose = vec![bad.into()];
            assert!(plan(&s, merged_usr_host()).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn inside_maps_sandbox_paths_under_the_root() {
        assert_eq!(inside(Path::new("/r"), Path::new("/")), PathBuf::from("/r"));
        assert_eq!(
            inside(Path::new("/r"), Path::new("/usr/lib")),
            PathBuf::from("/r/usr/lib")
        );
    }
}
