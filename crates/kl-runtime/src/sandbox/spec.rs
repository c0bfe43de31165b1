//! The jail spec: everything the jailer needs to build one sandbox, computed by the runtime
//! (which may fail with a clear message) and handed to a waiting shell as one JSON line on
//! its spec FIFO (not an argument: `/proc/PID/cmdline` is world-readable, and the function's
//! environment may hold secrets). The [`ShellSpec`], known before any function is, starts
//! the shell and travels in its environment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The environment variable carrying the [`ShellSpec`].
pub(crate) const SHELL_ENV: &str = "KL_SANDBOX_SHELL";
/// Where the instance's own host folder (its socket) appears inside the sandbox.
pub(crate) const RUN_DIR: &str = "/run/kl";
/// The socket the function listens on, in [`RUN_DIR`].
pub(crate) const SOCKET_NAME: &str = "fn.sock";
/// Where the egress proxy's socket appears inside the sandbox.
pub(crate) const EGRESS_PATH: &str = "/run/egress.sock";
/// The forwarder to the egress proxy, inside the sandbox's network namespace.
pub(crate) const PROXY_ADDR: &str = "127.0.0.1:3128";
/// Host folders holding the system's programs and libraries, exposed read-only as they are
/// (symbolic links such as `/lib -> usr/lib` are recreated as links).
pub(crate) const SYSTEM_DIRS: [&str; 7] = ["/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"];
/// `PATH` inside the sandbox, before the program's own `bin` folder.
const BASE_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// One sandbox, as the jailer builds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct JailSpec {
    /// Instance id (also the sandbox's host name).
    pub id: String,
    /// Absolute, symlink-free path of the program to run.
    pub program: PathBuf,
    pub args: Vec<String>,
    /// The function's whole environment.
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    /// Host paths exposed read-only at the same path (absolute, symlink-free), besides the
    /// system folders and the minimal `/etc`.
    pub expose: Vec<PathBuf>,
    /// Host folder (empty, root's) on which the new root is mounted.
    pub root_dir: PathBuf,
    /// Host folder (the tenant's) bound read-write at [`RUN_DIR`].
    pub sock_dir: PathBuf,
    /// Host path of the egress proxy socket, bound at [`EGRESS_PATH`].
    pub egress_socket: Option<PathBuf>,
    /// Host folder of the instance's secret files, bound read-only at
    /// [`kl_core::secret::SECRETS_MOUNT`].
    #[serde(default)]
    pub secrets_dir: Option<PathBuf>,
    /// Cgroup folders the sandbox joins (one per hierarchy).
    pub cgroups: Vec<PathBuf>,
    pub tmp_size_bytes: u64,
    /// `RLIMIT_NOFILE`.
    pub nofile: u64,
    /// `RLIMIT_FSIZE`, bytes.
    pub file_size_bytes: u64,
}

/// What a shell (a sandbox made ahead, waiting for its function) needs before the function
/// is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ShellSpec {
    /// Instance id (also the sandbox's host name).
    pub id: String,
    /// The server's pid: the jailer exits at once if its parent is already another process.
    pub server_pid: u32,
    /// The FIFO on which the shell's init reads its [`JailSpec`], one JSON line.
    pub spec_fifo: PathBuf,
}

impl JailSpec {
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a jail spec serializes")
    }

    pub(crate) fn from_json(text: &str) -> Result<JailSpec, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// The host path of a program: as is when absolute, else the first match on `path_env`;
/// then with symbolic links resolved, so that the prefix exposed is where the files are.
pub(crate) fn resolve_program(program: &str, path_env: Option<&std::ffi::OsStr>) -> Result<PathBuf, String> {
    let found = if program.contains('/') {
        PathBuf::from(program)
    } else {
        let path_env = path_env.unwrap_or_else(|| BASE_PATH.as_ref());
        std::env::split_paths(path_env)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
            .ok_or_else(|| format!("program {program:?} is not on PATH"))?
    };
    if !found.is_absolute() {
        return Err(format!("program {program:?} must be an absolute path"));
    }
    found
        .canonicalize()
        .map_err(|e| format!("program {}: {e}", found.display()))
}

/// The installation prefix to expose with a program that lives outside the system folders:
/// `P` for `P/bin/prog` (so `P/lib` comes along), else the program's folder.
pub(crate) fn install_prefix(program: &Path) -> Option<PathBuf> {
    if SYSTEM_DIRS.iter().any(|dir| program.starts_with(dir)) {
        return None;
    }
    let dir = program.parent()?;
    let prefix = match dir.file_name() {
        Some(name) if name == "bin" => dir.parent()?,
        _ => dir,
    };
    (prefix != Path::new("/")).then(|| prefix.to_path_buf())
}

/// What the function sees as its environment: a fixed base, the launch's variables, the
/// instance identity and, with an egress proxy, the proxy variables. Later entries win.
pub(crate) fn function_env(
    launch_env: &BTreeMap<String, String>,
    identity: &[(&str, &str)],
    program_bin: Option<&Path>,
    egress: bool,
) -> Vec<(String, String)> {
    let path = match program_bin {
        Some(bin) => format!("{}:{BASE_PATH}", bin.display()),
        None => BASE_PATH.to_owned(),
    };
    let mut env = BTreeMap::from([
        ("PATH".to_owned(), path),
        ("LANG".to_owned(), "C.UTF-8".to_owned()),
        ("HOME".to_owned(), "/tmp".to_owned()),
        ("TMPDIR".to_owned(), "/tmp".to_owned()),
    ]);
    env.extend(launch_env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.insert("KL_SOCKET".to_owned(), format!("{RUN_DIR}/{SOCKET_NAME}"));
    env.extend(identity.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    if egress {
        let proxy = format!("http://{PROXY_ADDR}");
        for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            env.insert(name.to_owned(), proxy.clone());
        }
        for name in ["NO_PROXY", "no_proxy"] {
            env.insert(name.to_owned(), "localhost,127.0.0.1".to_owned());
        }
    }
    env.into_iter().collect()
}

/// Keeps the paths that are not inside another one of the list (or inside a system folder),
/// sorted, so that each exposed tree is bound once.
pub(crate) fn outermost(mut paths: Vec<PathBuf>) -> Vec<PathBuf> {
    paths.sort();
    paths.dedup();
    let mut kept: Vec<PathBuf> = Vec::new();
    for path in paths {
        let covered =
            kept.iter().any(|k| path.starts_with(k)) || SYSTEM_DIRS.iter().any(|d| path.starts_with(d));
        if !covered {
            kept.push(path);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> JailSpec {
        JailSpec {
            id: "abc123".into(),
            program: "/opt/py/bin/python3".into(),
            args: vec!["-u".into(), "/a/.kl/kl_shim.py".into()],
            env: vec![("KL_HANDLER".into(), "main.handler".into())],
            cwd: "/a/code".into(),
            uid: 10_001,
            gid: 10_001,
            expose: vec!["/a/code".into()],
            root_dir: "/run/x/root".into(),
            sock_dir: "/run/x/sock".into(),
            egress_socket: Some("/run/egress.sock".into()),
            secrets_dir: None,
            cgroups: vec!["/sys/fs/cgroup/kl/abc123".into()],
            tmp_size_bytes: 64 << 20,
            nofile: 1024,
            file_size_bytes: 1 << 30,
        }
    }

    #[test]
    fn spec_round_trips_through_json() {
        let spec = sample();
        assert_eq!(JailSpec::from_json(&spec.to_json()).expect("parses"), spec);
    }

    #[test]
    fn spec_json_names_its_fields() {
        let json: serde_json::Value = serde_json::from_str(&sample().to_json()).expect("json");
        assert_eq!(json["uid"], 10_001);
        assert_eq!(json["egress_socket"], "/run/egress.sock");
        assert_eq!(json["env"][0][0], "KL_HANDLER");
    }

    #[test]
    fn prefix_of_a_program_outside_the_system_folders() {
        assert_eq!(
            install_prefix(Path::new("/root/.pyenv/versions/3.11.7/bin/python3.11")),
            Some(PathBuf::from("/root/.pyenv/versions/3.11.7"))
        );
        assert_eq!(
            install_prefix(Path::new("/data/artifacts/x/function")),
            Some(PathBuf::from("/data/artifacts/x"))
        );
        assert_eq!(install_prefix(Path::new("/usr/bin/node")), None);
        assert_eq!(install_prefix(Path::new("/usr/local/bin/python3")), None);
        assert_eq!(install_prefix(Path::new("/bin/sh")), None);
        assert_eq!(install_prefix(Path::new("/tool")), None);
    }

    #[test]
    fn environment_layers_and_proxies() {
        let launch = BTreeMap::from([
            ("KL_HANDLER".to_owned(), "main.handler".to_owned()),
            ("HOME".to_owned(), "/elsewhere".to_owned()),
            ("KL_SOCKET".to_owned(), "/not/this".to_owned()),
        ]);
        let env = function_env(
            &launch,
            &[("KL_TENANT", "acme")],
            Some(Path::new("/opt/py/bin")),
            true,
        );
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PATH"), Some("/opt/py/bin:/usr/local/bin:/usr/bin:/bin"));
        assert_eq!(
            get("HOME"),
            Some("/elsewhere"),
            "the launch may override the base"
        );
        assert_eq!(
            get("KL_SOCKET"),
            Some("/run/kl/fn.sock"),
            "the launch may not move the socket"
        );
        assert_eq!(get("KL_TENANT"), Some("acme"));
        assert_eq!(get("HTTPS_PROXY"), Some("http://127.0.0.1:3128"));
        assert_eq!(get("no_proxy"), Some("localhost,127.0.0.1"));
        let closed = function_env(&launch, &[], None, false);
        assert!(closed.iter().all(|(k, _)| !k.to_lowercase().contains("proxy")));
    }

    #[test]
    fn nested_and_system_paths_are_bound_once() {
        let kept = outermost(vec![
            "/data/a/code".into(),
            "/data/a".into(),
            "/data/ab".into(),
            "/usr/lib/python3".into(),
            "/data/a".into(),
            "/opt/x".into(),
        ]);
        assert_eq!(
            kept,
            vec![
                PathBuf::from("/data/a"),
                PathBuf::from("/data/ab"),
                PathBuf::from("/opt/x")
            ]
        );
    }

    #[test]
    fn relative_programs_are_found_on_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("tool");
        std::fs::write(&bin, "").expect("write");
        let path = std::env::join_paths([Path::new("/nonexistent"), dir.path()]).expect("join");
        let found = resolve_program("tool", Some(&path)).expect("found");
        assert_eq!(found, bin.canonicalize().expect("canonical"));
        assert!(resolve_program("missing-tool", Some(&path)).is_err());
        assert!(resolve_program("rel/tool", None).is_err());
    }
}
