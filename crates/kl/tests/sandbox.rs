//! The instance sandbox, end to end: the real `kl` binary as jailer, driven through
//! `kl_runtime::LocalRuntime`, running the real Python shim with a hostile handler
//! (`fixtures/sandbox_probe/main.py`). Each attack must fail AND leave the runtime able to
//! start and serve another instance.
//!
//! On a machine that cannot sandbox (not root, no cgroup controllers...), the tests print why
//! and pass, unless `KL_REQUIRE_SANDBOX=1` (set it in CI where the sandbox must work).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use kl_core::Launch;
use kl_runtime::{
    Instance, Isolation, Limits, LocalRuntime, LocalRuntimeConfig, Runtime, RuntimeError, SandboxConfig,
    StartRequest,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KL: &str = env!("CARGO_BIN_EXE_kl");
/// The unprivileged user the test functions run as (no entry on the host needed).
const UID: u32 = 64_101;
const GID: u32 = 64_102;
const START_LIMIT: Duration = Duration::from_secs(60);

/// The real interpreter (not a pyenv shim), as the builder records it.
fn python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = std::process::Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 runs");
        String::from_utf8(out.stdout).expect("utf-8").trim().to_owned()
    })
}

struct Fixture {
    dir: tempfile::TempDir,
    runtime: LocalRuntime,
}

impl Fixture {
    /// A sandboxing runtime, or `None` (test skipped) when this machine cannot sandbox.
    fn sandboxed() -> Option<Fixture> {
        Fixture::sandboxed_with(SandboxConfig::new(KL.into()))
    }

    fn sandboxed_with(config: SandboxConfig) -> Option<Fixture> {
        let dir = tempfile::tempdir().expect("temp dir");
        let runtime = runtime(dir.path(), Isolation::Sandbox(config));
        let report = runtime.support().expect("a sandboxing runtime reports support");
        if !report.ready() {
            assert!(
                std::env::var_os("KL_REQUIRE_SANDBOX").is_none(),
                "KL_REQUIRE_SANDBOX is set but this machine cannot sandbox:\n{report}"
            );
            eprintln!("SKIPPED: this machine cannot sandbox instances:\n{report}");
            return None;
        }
        Some(Fixture { dir, runtime })
    }

    fn plain() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let runtime = runtime(dir.path(), Isolation::None);
        Fixture { dir, runtime }
    }

    /// A start request for the probe function, in its own artifact folder `name`.
    fn request(&self, name: &str, limits: Limits) -> StartRequest {
        let artifact = self.dir.path().join(name);
        let code = artifact.join("code");
        let shim_dir = artifact.join(".kl");
        std::fs::create_dir_all(&code).expect("code dir");
        std::fs::create_dir_all(&shim_dir).expect("shim dir");
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sandbox_probe/main.py");
        std::fs::copy(fixture, code.join("main.py")).expect("copy handler");
        let shim = shim_dir.join("kl_shim.py");
        let shim_source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kl-build/shims/python/kl_shim.py");
        std::fs::copy(shim_source, &shim).expect("copy shim");
        StartRequest {
            tenant: "acme".into(),
            function: "probe".into(),
            revision: format!("probe-{name}"),
            launch: Launch {
                program: python().into(),
                args: vec!["-u".into(), shim.display().to_string()],
                env: BTreeMap::from([
                    ("KL_CODE_DIR".into(), code.display().to_string()),
                    ("KL_HANDLER".into(), "main.handler".into()),
                    ("PYTHONUNBUFFERED".into(), "1".into()),
                    ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
                ]),
                cwd: code,
                layers: Vec::new(),
            },
            log_path: self.dir.path().join("function.log"),
            limits,
            uid: UID,
            gid: GID,
            read_only: Vec::new(),
            egress_socket: None,
            secrets: None,
        }
    }

    async fn start(&self, name: &str, limits: Limits) -> Arc<Instance> {
        self.start_request(self.request(name, limits)).await
    }

    async fn start_request(&self, req: StartRequest) -> Arc<Instance> {
        match self.runtime.start(req).await {
            Ok(instance) => instance,
            Err(e) => panic!("the instance did not start: {e}"),
        }
    }

    /// The runtime is still healthy: a fresh instance starts and answers.
    async fn assert_healthy(&self) {
        let instance = self.start("healthy", Limits::default()).await;
        let pids = invoke(&instance, json!({"op": "pids"}))
            .await
            .expect("a fresh instance answers");
        assert!(pids.as_array().is_some_and(|p| !p.is_empty()));
        instance.stop(Duration::from_secs(5)).await;
    }
}

fn runtime(dir: &Path, isolation: Isolation) -> LocalRuntime {
    LocalRuntime::new(LocalRuntimeConfig {
        run_dir: dir.join("run"),
        startup_timeout: START_LIMIT,
        isolation,
    })
    .expect("runtime")
}

fn limits(memory_mib: u64, cpu_millis: u32, pids: u32) -> Limits {
    Limits {
        memory_bytes: memory_mib << 20,
        cpu_millis,
        pids,
    }
}

/// Invokes the instance with `event`; the handler's JSON result, or why there was none.
async fn invoke(instance: &Instance, event: Value) -> Result<Value, String> {
    let exchange = async {
        let mut stream = tokio::net::UnixStream::connect(&instance.socket)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let body = event.to_string();
        let head = format!(
            "POST / HTTP/1.1\r\nhost: instance\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        stream
            .write_all(body.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or(format!("no response: {text:?}"))?;
        if !head.starts_with("HTTP/1.1 200") {
            return Err(format!("{head}\n{body}"));
        }
        serde_json::from_str(body).map_err(|e| format!("{e}: {body}"))
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .unwrap_or_else(|_| Err("no answer within 30s".into()))
}

/// Invokes an op that reports `{ok, value|error}`.
async fn attempt(instance: &Instance, event: Value) -> Value {
    let result = invoke(instance, event.clone()).await;
    result.unwrap_or_else(|e| panic!("{event} was not answered: {e}\n{}", instance.last_output()))
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `limit`.
async fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A file of the instance's cgroup, wherever the controller lives (v1 or v2).
fn cgroup_file(instance: &Instance, controller: &str, name: &str) -> Option<PathBuf> {
    [
        Path::new("/sys/fs/cgroup")
            .join(controller)
            .join("kl")
            .join(&instance.id),
        Path::new("/sys/fs/cgroup/kl").join(&instance.id),
    ]
    .into_iter()
    .map(|dir| dir.join(name))
    .find(|f| f.exists())
}

/// Every cgroup folder the instance could have had.
fn cgroup_dirs(instance: &Instance) -> Vec<PathBuf> {
    let mut dirs = vec![Path::new("/sys/fs/cgroup/kl").join(&instance.id)];
    for controller in ["cpu", "cpuacct", "memory", "pids"] {
        dirs.push(
            Path::new("/sys/fs/cgroup")
                .join(controller)
                .join("kl")
                .join(&instance.id),
        );
    }
    dirs
}

fn is_denied(outcome: &Value) -> bool {
    outcome["ok"] == false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxed_instance_serves_and_stops_cleanly() {
    let Some(fx) = Fixture::sandboxed() else { return };
    let instance = fx.start("serve", Limits::default()).await;
    let identity = attempt(&instance, json!({"op": "identity"})).await;
    assert_eq!(
        identity["cwd"],
        json!(fx.dir.path().join("serve/code").canonicalize().unwrap())
    );
    assert_eq!(identity["env"]["KL_SOCKET"], "/run/kl/fn.sock");
    assert_eq!(identity["hostname"], json!(instance.id), "own uts namespace");
    assert!(
        instance
            .usage()
            .and_then(|u| u.memory_bytes)
            .is_some_and(|m| m > 0)
    );
    instance.stop(Duration::from_secs(5)).await;
    assert!(instance.exit_status().is_some());
    assert!(instance.exit_reason().is_some());
    wait_for("the cgroups to be removed", Duration::from_secs(10), || {
        cgroup_dirs(&instance).iter().all(|d| !d.exists()).then_some(())
    })
    .await;
    wait_for("the host folder to be removed", Duration::from_secs(10), || {
        (!instance.socket.exists()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_as_the_tenant_user_without_privileges() {
    let Some(fx) = Fixture::sandboxed() else { return };
    let instance = fx.start("identity", Limits::default()).await;
    let identity = attempt(&instance, json!({"op": "identity"})).await;
    assert_eq!(identity["uid"], UID);
    assert_eq!(identity["euid"], UID);
    assert_eq!(identity["gid"], GID);
    assert_eq!(identity["groups"], json!([]), "supplementary groups cleared");
    let status = attempt(
        &instance,
        json!({"op": "read", "path": "/proc/self/status", "limit": 65536}),
    )
    .await;
    assert_eq!(status["ok"], true, "{status}");
    let status = status["value"].as_str().expect("text");
    for (field, expected) in [
        ("NoNewPrivs", "1"),
        ("CapInh", "0000000000000000"),
        ("CapPrm", "0000000000000000"),
        ("CapEff", "0000000000000000"),
        ("CapBnd", "0000000000000000"),
        ("CapAmb", "0000000000000000"),
        ("Seccomp", "2"),
    ] {
        let line = status
            .lines()
            .find(|l| l.starts_with(&format!("{field}:")))
            .unwrap_or_else(|| panic!("{field} not in /proc/self/status:\n{status}"));
        assert_eq!(line.split_whitespace().nth(1), Some(expected), "{line}");
    }
    instance.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_outside_the_sandbox_are_invisible() {
    let Some(fx) = Fixture::sandboxed() else { return };
    // Stand-ins for another tenant's code and the server's data dir, next to this function's.
    let other = fx.dir.path().join("other-tenant/code");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("secret.py"), "KEY = 'other tenant'").unwrap();
    let data = fx.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("admin.token"), "kl_admin_secret").unwrap();
    let instance = fx.start("files", Limits::default()).await;
    for path in [
        other.join("secret.py"),
        data.join("admin.token"),
        PathBuf::from("/etc/shadow"),
        PathBuf::from("/root/.bashrc"),
        PathBuf::from(file!()),
        PathBuf::from(KL),
    ] {
        let outcome = attempt(&instance, json!({"op": "read", "path": path})).await;
        assert!(
            is_denied(&outcome),
            "{} is readable in the sandbox: {outcome}",
            path.display()
        );
    }
    let listing = attempt(&instance, json!({"op": "listdir", "path": fx.dir.path()})).await;
    assert_eq!(
        listing["value"],
        json!(["files"]),
        "only this function's own artifact is visible"
    );
    let etc = attempt(&instance, json!({"op": "listdir", "path": "/etc"})).await;
    let etc: Vec<&str> = etc["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for must_not in ["shadow", "gshadow", "sudoers", "ssh", "machine-id"] {
        assert!(!etc.contains(&must_not), "/etc/{must_not} is visible: {etc:?}");
    }
    let passwd = attempt(&instance, json!({"op": "read", "path": "/etc/passwd"})).await;
    assert!(
        passwd["value"]
            .as_str()
            .unwrap()
            .contains(&format!("kl:x:{UID}:{GID}:")),
        "{passwd}"
    );
    let root = attempt(&instance, json!({"op": "listdir", "path": "/"})).await;
    let root: Vec<&str> = root["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for must_not in ["work", "home", "var", "srv", "opt", "mnt", "sys", "boot"] {
        assert!(!root.contains(&must_not), "/{must_not} is visible: {root:?}");
    }
    instance.stop(Duration::from_secs(5)).await;
    fx.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_processes_are_invisible() {
    let Some(fx) = Fixture::sandboxed() else { return };
    let instance = fx.start("pids", Limits::default()).await;
    let identity = attempt(&instance, json!({"op": "identity"})).await;
    assert_eq!(
        identity["ppid"], 1,
        "the function is the child of the sandbox's init"
    );
    let pids = attempt(&instance, json!({"op": "pids"})).await;
    let pids: Vec<u64> = pids
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert!(
        pids.contains(&1) && pids.contains(&identity["pid"].as_u64().unwrap()),
        "{pids:?}"
    );
    assert!(
        pids.len() <= 3,
        "only the sandbox's own processes are visible: {pids:?}"
    );
    let host_pid = std::process::id();
    assert!(!pids.contains(&u64::from(host_pid)) || host_pid <= 3);
    let host = attempt(
        &instance,
        json!({"op": "read", "path": format!("/proc/{host_pid}/environ")}),
    )
    .await;
    assert!(is_denied(&host), "{host}");
    instance.stop(Duration::from_secs(5)).await;
    fx.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_loopback_without_an_egress_proxy() {
    let Some(fx) = Fixture::sandboxed() else { return };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let instance = fx.start("net", Limits::default()).await;
    let local = attempt(&instance, json!({"op": "tcp", "host": "127.0.0.1", "port": port})).await;
    assert!(is_denied(&local), "reached the host's loopback: {local}");
    let proxy = attempt(&instance, json!({"op": "tcp", "host": "127.0.0.1", "port": 3128})).await;
    assert!(
        is_denied(&proxy),
        "a proxy answered without an egress socket: {proxy}"
    );
    let outside = attempt(&instance, json!({"op": "tcp", "host": "1.1.1.1", "port": 53})).await;
    assert!(is_denied(&outside), "reached the outside: {outside}");
    assert!(
        tokio::time::timeout(Duration::ZERO, listener.accept())
            .await
            .is_err(),
        "the host listener got a connection"
    );
    instance.stop(Duration::from_secs(5)).await;
    fx.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_instances_are_unreachable_and_tmp_is_private() {
    let Some(fx) = Fixture::sandboxed() else { return };
    let a = fx.start("a", Limits::default()).await;
    let b = fx.start("b", Limits::default()).await;
    let wrote = attempt(&a, json!({"op": "write", "path": "/tmp/mine.txt", "text": "a's"})).await;
    assert_eq!(wrote["value"], "a's", "/tmp is writable: {wrote}");
    let peek = attempt(&b, json!({"op": "read", "path": "/tmp/mine.txt"})).await;
    assert!(is_denied(&peek), "b sees a's /tmp: {peek}");
    let socket = attempt(&b, json!({"op": "unix", "path": a.socket})).await;
    assert!(is_denied(&socket), "b reached a's socket: {socket}");
    let own = attempt(&b, json!({"op": "unix", "path": "/run/kl/fn.sock"})).await;
    assert_eq!(own["ok"], true, "its own socket is there: {own}");
    a.stop(Duration::from_secs(5)).await;
    b.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_and_system_are_read_only() {
    let Some(fx) = Fixture::sandboxed() else { return };
    let instance = fx.start("ro", Limits::default()).await;
    let code = fx.dir.path().join("ro/code").canonicalize().unwrap();
    for path in [
        code.join("main.py"),
        code.join("new.py"),
        PathBuf::from("/etc/passwd"),
        PathBuf::from("/usr/bin/kl-was-here"),
        PathBuf::from("/kl-was-here"),
        PathBuf::from("/run/kl-was-here"),
    ] {
        let outcome = attempt(&instance, json!({"op": "write", "path": path})).await;
        assert!(is_denied(&outcome), "{} is writable: {outcome}", path.display());
    }
    let code_write = attempt(&instance, json!({"op": "write", "path": code.join("main.py")})).await;
    assert_eq!(code_write["errno"], 30, "EROFS: {code_write}");
    let tmp = attempt(
        &instance,
        json!({"op": "write", "path": "/tmp/scratch", "text": "ok"}),
    )
    .await;
    assert_eq!(tmp["value"], "ok");
    let original = std::fs::read_to_string(code.join("main.py")).unwrap();
    assert!(original.contains("hostile function"), "the code is untouched");
    instance.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escapes_are_denied_by_seccomp() {
    let Some(fx) = Fixture::sandboxed() else { return };
    let instance = fx.start("seccomp", Limits::default()).await;
    const CLONE_NEWUSER: u64 = 0x1000_0000;
    const CLONE_NEWNET: u64 = 0x4000_0000;
    for event in [
        json!({"op": "mount"}),
        json!({"op": "unshare", "flags": CLONE_NEWUSER}),
        json!({"op": "unshare", "flags": CLONE_NEWNET}),
        json!({"op": "chroot"}),
        json!({"op": "ptrace"}),
    ] {
        let outcome = attempt(&instance, event.clone()).await;
        assert!(is_denied(&outcome), "{event} succeeded: {outcome}");
        assert_eq!(outcome["errno"], 1, "{event} must fail with EPERM: {outcome}");
    }
    instance.stop(Duration::from_secs(5)).await;
    fx.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_is_killed_and_reported() {
    let Some(fx) = Fixture::sandboxed() else { return };
    let instance = fx.start("membomb", limits(96, 1000, 64)).await;
    let answer = invoke(&instance, json!({"op": "memory_bomb"})).await;
    assert!(answer.is_err(), "the bomb returned: {answer:?}");
    let status = instance.wait_exit(Duration::from_secs(60)).await;
    assert!(status.is_some(), "the instance did not die");
    let reason = instance.exit_reason().unwrap();
    assert_eq!(reason, "out of memory (limit 96 MiB)", "status {status:?}");
    println!("memory bomb: status {status:?}, reason {reason:?}");
    fx.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_bomb_is_contained_by_the_pids_limit() {
    let Some(fx) = Fixture::sandboxed() else { return };
    let instance = fx.start("forkbomb", limits(256, 500, 48)).await;
    let started = attempt(&instance, json!({"op": "fork_bomb"})).await;
    assert_eq!(started, "started");
    let events = cgroup_file(&instance, "pids", "pids.events").expect("pids.events");
    wait_for("the bomb to hit the pids limit", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&events).ok()?;
        let hits: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("max "))?
            .trim()
            .parse()
            .ok()?;
        (hits > 0).then_some(())
    })
    .await;
    let current = cgroup_file(&instance, "pids", "pids.current").expect("pids.current");
    let count: u32 = std::fs::read_to_string(current).unwrap().trim().parse().unwrap();
    assert!(count <= 48, "{count} tasks in a cgroup limited to 48");
    let host = std::process::Command::new("true")
        .status()
        .expect("the host can still fork");
    assert!(host.success());
    instance.stop(Duration::from_secs(2)).await;
    assert!(instance.exit_status().is_some(), "the bomb outlived stop()");
    let reason = instance.exit_reason().unwrap();
    assert!(reason.contains("the process limit (48) was reached"), "{reason}");
    wait_for("every bomb process to be gone", Duration::from_secs(10), || {
        cgroup_dirs(&instance).iter().all(|d| !d.exists()).then_some(())
    })
    .await;
    fx.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_hog_is_held_to_its_quota() {
    let Some(fx) = Fixture::sandboxed() else { return };
    let instance = fx.start("hog", limits(256, 250, 64)).await;
    if instance.usage().and_then(|u| u.cpu).is_none() {
        eprintln!("SKIPPED: CPU usage is not measurable here (no cpuacct)");
        return;
    }
    let spawned = attempt(&instance, json!({"op": "hog", "processes": 2})).await;
    assert_eq!(spawned, 2);
    // Let the hog reach its steady state, then measure over a window.
    let cpu = || instance.usage().and_then(|u| u.cpu).expect("cpu usage");
    let warm = cpu();
    wait_for("the hog to run", Duration::from_secs(10), || {
        (cpu() > warm + Duration::from_millis(100)).then_some(())
    })
    .await;
    let window = Duration::from_secs(3);
    let (used_before, at) = (cpu(), Instant::now());
    tokio::time::sleep(window).await;
    let (used, wall) = (cpu() - used_before, at.elapsed());
    let share = used.as_secs_f64() / wall.as_secs_f64();
    println!(
        "cpu hog (2 spinning processes, cpu_millis=250): {:.1}% of one core over {:.2}s ({:?} of CPU)",
        share * 100.0,
        wall.as_secs_f64(),
        used
    );
    assert!(
        share <= 0.30,
        "the quota did not hold: {:.1}% of a core",
        share * 100.0
    );
    assert!(
        share >= 0.05,
        "the hog barely ran ({:.1}%): is the box overloaded?",
        share * 100.0
    );
    instance.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_goes_through_the_proxy_socket() {
    let Some(fx) = Fixture::sandboxed() else { return };
    // The platform's proxy, as far as the sandbox can tell: a unix-socket echo server.
    let path = fx.dir.path().join("egress.sock");
    let proxy = tokio::net::UnixListener::bind(&path).unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = proxy.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let mut req = fx.request("egress", Limits::default());
    req.egress_socket = Some(path);
    let instance = fx.start_request(req).await;
    let identity = attempt(&instance, json!({"op": "identity"})).await;
    assert_eq!(identity["env"]["HTTPS_PROXY"], "http://127.0.0.1:3128");
    assert_eq!(identity["env"]["NO_PROXY"], "localhost,127.0.0.1");
    let echoed = attempt(
        &instance,
        json!({"op": "tcp", "host": "127.0.0.1", "port": 3128, "payload": "ping"}),
    )
    .await;
    assert_eq!(echoed["value"], "ping", "{echoed}");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    let outside = attempt(&instance, json!({"op": "tcp", "host": "1.1.1.1", "port": 443})).await;
    assert!(is_denied(&outside), "direct egress bypassed the proxy: {outside}");
    instance.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_none_keeps_todays_behaviour() {
    let fx = Fixture::plain();
    assert!(fx.runtime.support().is_none());
    let instance = fx.start("plain", Limits::default()).await;
    assert!(!instance.sandboxed());
    let identity = attempt(&instance, json!({"op": "identity"})).await;
    assert_eq!(
        identity["ppid"],
        std::process::id(),
        "a direct child of the runtime"
    );
    assert_eq!(identity["uid"], rustix_uid(), "runs as the server's user");
    assert_eq!(identity["env"]["KL_SOCKET"], json!(instance.socket));
    assert!(instance.usage().is_none());
    instance.stop(Duration::from_secs(5)).await;
    let status = instance.exit_status().expect("exited");
    assert_eq!(instance.exit_reason(), Some(status));
}

fn rustix_uid() -> u32 {
    let out = std::process::Command::new("id")
        .arg("-u")
        .output()
        .expect("id -u");
    String::from_utf8(out.stdout).unwrap().trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_start_when_the_sandbox_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let config = SandboxConfig::new("/nonexistent/kl".into());
    let runtime = runtime(dir.path(), Isolation::Sandbox(config));
    let report = runtime.support().expect("report");
    assert!(!report.ready(), "{report}");
    assert!(report.to_string().contains("MISSING jailer"), "{report}");
    let fx = Fixture::plain();
    match runtime.start(fx.request("refused", Limits::default())).await {
        Err(RuntimeError::SandboxUnavailable { missing }) => assert!(missing.contains("jailer"), "{missing}"),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("an instance started without its sandbox"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_die_with_their_runtime() {
    let Some(fx) = Fixture::sandboxed() else { return };
    let instance = fx.start("orphan", Limits::default()).await;
    let Fixture { dir, runtime } = fx;
    // What a SIGKILLed server leaves behind: the lifeline's write end closes.
    drop(runtime);
    let status = instance.wait_exit(Duration::from_secs(30)).await;
    assert!(status.is_some(), "the instance outlived its runtime");
    wait_for("the cgroups to be removed", Duration::from_secs(10), || {
        cgroup_dirs(&instance).iter().all(|d| !d.exists()).then_some(())
    })
    .await;
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_overhead_of_the_sandbox() {
    let Some(sandboxed) = Fixture::sandboxed() else {
        return;
    };
    let plain = Fixture::plain();
    let mut times = BTreeMap::new();
    for (name, fx) in [("none", &plain), ("sandbox", &sandboxed)] {
        let mut runs = Vec::new();
        for run in 0..5 {
            let instance = fx.start(&format!("{name}-{run}"), Limits::default()).await;
            runs.push(instance.startup);
            instance.stop(Duration::from_secs(5)).await;
        }
        runs.sort();
        times.insert(name, runs);
    }
    for (name, runs) in &times {
        let ms: Vec<_> = runs.iter().map(|d| d.as_millis()).collect();
        println!(
            "instance start, isolation {name}: median {} ms (runs, sorted: {ms:?} ms)",
            ms[2]
        );
    }
    assert!(times["sandbox"][2] < START_LIMIT);
    // The jailer alone: spawn to exit of a program that exits at once (no interpreter noise).
    for (name, fx) in [("none", &plain), ("sandbox", &sandboxed)] {
        let mut runs = Vec::new();
        for run in 0..5 {
            let mut req = fx.request(&format!("true-{name}-{run}"), Limits::default());
            req.launch.program = "/bin/true".into();
            req.launch.args.clear();
            let at = Instant::now();
            let outcome = fx.runtime.start(req).await;
            runs.push(at.elapsed().as_micros() as f64 / 1000.0);
            assert!(
                matches!(outcome, Err(RuntimeError::ExitedEarly { .. })),
                "/bin/true exits"
            );
        }
        runs.sort_by(f64::total_cmp);
        println!(
            "spawn to exit of /bin/true, isolation {name}: median {:.1} ms (runs: {runs:.1?} ms)",
            runs[2]
        );
    }
}

/// Set in the environment of the "server" this test starts and SIGKILLs.
const SERVER_ROLE: &str = "KL_SANDBOX_TEST_SERVER";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_die_with_a_killed_server() {
    if std::env::var_os(SERVER_ROLE).is_some() {
        // The "server": start an instance, say where it is, wait to be killed.
        let fx = Fixture::sandboxed().expect("the parent checked the sandbox");
        let instance = fx.start("victim", Limits::default()).await;
        let dir = fx.dir.keep();
        println!("READY {} {} {}", instance.id, instance.pid, dir.display());
        std::future::pending::<()>().await;
    }
    let Some(_probe) = Fixture::sandboxed() else {
        return;
    };
    let exe = std::env::current_exe().expect("test binary");
    let mut server = tokio::process::Command::new(exe)
        .args([
            "--exact",
            "instances_die_with_a_killed_server",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SERVER_ROLE, "1")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("server starts");
    let mut lines = tokio::io::BufReader::new(server.stdout.take().unwrap());
    let ready = tokio::time::timeout(START_LIMIT, async {
        use tokio::io::AsyncBufReadExt;
        let mut line = String::new();
        loop {
            line.clear();
            if lines.read_line(&mut line).await.expect("read") == 0 {
                panic!("the server exited before its instance was ready");
            }
            // libtest prints `test NAME ... ` before the test's own output, on the same line.
            if let Some(at) = line.find("READY ") {
                return line[at + "READY ".len()..].trim().to_owned();
            }
        }
    })
    .await
    .expect("the server's instance was not ready in time");
    let mut fields = ready.split(' ');
    let (id, jailer, dir) = (
        fields.next().unwrap().to_owned(),
        fields.next().unwrap().to_owned(),
        fields.next().unwrap().to_owned(),
    );
    server.start_kill().expect("SIGKILL the server");
    server.wait().await.expect("reaped");
    let procs = ["memory", "pids"]
        .iter()
        .map(|c| {
            Path::new("/sys/fs/cgroup")
                .join(c)
                .join("kl")
                .join(&id)
                .join("cgroup.procs")
        })
        .chain([Path::new("/sys/fs/cgroup/kl").join(&id).join("cgroup.procs")])
        .find(|p| p.exists())
        .expect("the instance's cgroup");
    wait_for(
        "the jailer and the whole sandbox to die",
        Duration::from_secs(30),
        || {
            let jailer_gone = !Path::new("/proc").join(&jailer).exists();
            let empty = std::fs::read_to_string(&procs).map_or(true, |p| p.trim().is_empty());
            (jailer_gone && empty).then_some(())
        },
    )
    .await;
    // What the next server's start would sweep: the cgroups and the socket folder's tmpfs.
    for controller in ["cpu", "cpuacct", "memory", "pids"] {
        let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(controller).join("kl").join(&id));
    }
    let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup/kl").join(&id));
    let sock = Path::new(&dir).join("run").join(&id).join("sock");
    let _ = std::process::Command::new("umount").arg("-l").arg(&sock).status();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_functions_of_every_language_run_sandboxed() {
    let Some(fx) = Fixture::sandboxed() else { return };
    // The build cache the other end-to-end tests share, so dependencies install once.
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kl-cache");
    let builder = kl_build::Builder::new(kl_build::BuilderConfig {
        cache_dir: cache.clone(),
    });
    let limits = kl_core::SpecLimits::default();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for (name, event, check) in [
        ("py-hello", json!({"name": "kl"}), "\"six\":\"1.16.0\""),
        ("node-cjs", json!({"value": 3}), "\"isNumber\":true"),
        ("go-hello", json!({"name": "kl"}), "\"hello\":\"kl\""),
    ] {
        let out = fx.dir.path().join("artifacts").join(name);
        let log =
            kl_build::BuildLog::create(&fx.dir.path().join(format!("{name}.build.log"))).expect("build log");
        let artifact = builder
            .build(kl_build::BuildInput {
                source: &fixtures.join(name),
                out: &out,
                settings: &kl_core::FunctionSettings::default(),
                source_digest: "sha256:test",
                limits: &limits,
                log: &log,
            })
            .await
            .unwrap_or_else(|e| panic!("{name} did not build: {e}"));
        assert!(
            artifact.launch.program.starts_with('/'),
            "{name}: the launch names the real interpreter, not {:?}",
            artifact.launch.program
        );
        let mut req = fx.request("unused", Limits::default());
        req.function = name.into();
        req.revision = format!("{name}-00001");
        req.read_only = artifact.launch.layers.clone();
        req.launch = artifact.launch;
        let instance = fx.start_request(req).await;
        let body = invoke(&instance, event)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", instance.last_output()));
        assert!(body.to_string().contains(check), "{name} answered {body}");
        instance.stop(Duration::from_secs(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_fail_with_their_reason() {
    // No shells made ahead, so that every folder left behind would be a failed start's.
    let mut config = SandboxConfig::new(KL.into());
    config.warm_shells = 0;
    let Some(fx) = Fixture::sandboxed_with(config) else {
        return;
    };
    let refused = |req: StartRequest| async {
        match fx.runtime.start(req).await {
            Err(RuntimeError::Sandbox { reason, .. }) => reason,
            Err(other) => panic!("wrong error: {other}"),
            Ok(_) => panic!("started"),
        }
    };
    let mut root = fx.request("as-root", Limits::default());
    root.uid = 0;
    assert!(refused(root).await.contains("as root"));
    let mut proc = fx.request("proc", Limits::default());
    proc.read_only = vec!["/proc/self".into()];
    assert!(refused(proc).await.contains("cannot expose"));
    let mut etc = fx.request("etc", Limits::default());
    etc.read_only = vec!["/etc".into()];
    assert!(refused(etc).await.contains("the sandbox's own"));
    let mut missing = fx.request("missing", Limits::default());
    missing.read_only = vec![fx.dir.path().join("no-such-layer")];
    assert!(refused(missing).await.contains("no-such-layer"));
    let mut no_proxy = fx.request("no-proxy", Limits::default());
    no_proxy.egress_socket = Some(fx.dir.path().join("no-proxy.sock"));
    assert!(refused(no_proxy).await.contains("egress proxy"));
    // A handler that does not load: the shim's exit status and traceback come back.
    let broken = fx.request("broken", Limits::default());
    std::fs::write(broken.launch.cwd.join("main.py"), "def handler(:\n").unwrap();
    match fx.runtime.start(broken).await {
        Err(RuntimeError::ExitedEarly { status, output }) => {
            assert_eq!(status, "exit status: 3");
            assert!(output.contains("SyntaxError"), "{output}");
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a broken handler started"),
    }
    let left: Vec<_> = std::fs::read_dir(fx.dir.path().join("run"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "failed starts leave nothing behind: {left:?}");
    fx.assert_healthy().await;
}

/// Sandboxes are made ahead: an instance starts in a waiting shell, and the runtime makes
/// another to take its place; a shell serves one instance only.
#[tokio::test]
async fn instances_start_in_shells_made_ahead() {
    let mut config = SandboxConfig::new(KL.into());
    config.warm_shells = 2;
    let Some(fx) = Fixture::sandboxed_with(config) else {
        return;
    };
    let run = fx.dir.path().join("run");
    let folders = || -> BTreeSet<String> {
        std::fs::read_dir(&run)
            .map(|dir| {
                dir.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let waiting = wait_for("two shells", START_LIMIT, || {
        Some(folders()).filter(|f| f.len() == 2)
    })
    .await;
    let first = fx.start("first", Limits::default()).await;
    assert!(
        waiting.contains(&first.id),
        "{} is not one of the shells {waiting:?}",
        first.id
    );
    let refilled = wait_for("a new shell", START_LIMIT, || {
        Some(folders()).filter(|f| f.len() == 3)
    })
    .await;
    let second = fx.start("second", Limits::default()).await;
    assert_ne!(second.id, first.id);
    assert!(
        refilled.contains(&second.id),
        "{} is not one of the shells {refilled:?}",
        second.id
    );
    let pids = invoke(&second, json!({"op": "pids"}))
        .await
        .expect("the instance answers");
    assert!(pids.is_array(), "{pids}");
    first.stop(Duration::from_secs(5)).await;
    second.stop(Duration::from_secs(5)).await;
}
