//! Test harness: a real `kl server` process on a temp data dir and a free port, the real
//! `kl` CLI against it, and condition waits with deadlines.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const KL: &str = env!("CARGO_BIN_EXE_kl");

/// A fixture function's source folder.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The repository's `examples/` folder.
pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// Build cache shared by all test servers, so dependencies install once per test run.
fn shared_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("kl-cache")
}

/// Polls `check` until it returns `Some`, or panics with `what` after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A running `kl server`, stopped (SIGTERM) when dropped.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub url: String,
    child: Option<Child>,
    pub http: reqwest::Client,
    /// The extra `kl server` flags it was started with; restarts use them again.
    args: Vec<String>,
    /// Extra environment for the server process (e.g. `AWS_*`); restarts use it again.
    env: Vec<(String, String)>,
}

impl Server {
    pub async fn start() -> Server {
        Server::start_with(&[]).await
    }

    /// Starts a server with extra `kl server` flags.
    pub async fn start_with(extra: &[&str]) -> Server {
        Server::start_with_env(extra, &[]).await
    }

    /// Starts a server with extra `kl server` flags and environment variables.
    pub async fn start_with_env(extra: &[&str], env: &[(&str, String)]) -> Server {
        Server::start_in(tempfile::tempdir().expect("temp dir"), extra, env).await
    }

    /// Starts a server whose data dir is `dir/data` (which may hold a restored platform).
    pub async fn start_in(dir: tempfile::TempDir, extra: &[&str], env: &[(&str, String)]) -> Server {
        let mut server = Server {
            dir,
            url: String::new(),
            child: None,
            http: reqwest::Client::new(),
            args: extra.iter().map(|a| a.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        };
        server.launch().await;
        server
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The server's own log so far.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    async fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("server log");
        let child = Command::new(KL)
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(self.data_dir())
            .arg("--cache-dir")
            .arg(shared_cache())
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("kl server starts");
        self.child = Some(child);
        let start = self.server_log().matches("kl server listening").count();
        let log_path = self.log_path();
        self.url = wait_for("the server to listen", Duration::from_secs(30), || {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            async move {
                let line = text
                    .lines()
                    .filter(|l| l.contains("kl server listening"))
                    .nth(start)?;
                let addr = line.split("addr=").nth(1)?.split_whitespace().next()?;
                Some(format!("http://{addr}"))
            }
        })
        .await;
    }

    /// Stops the server with SIGTERM and waits for it to exit; returns its exit success.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops and starts the server on the same data dir, with the same flags.
    pub async fn restart(&mut self) {
        assert!(self.stop(), "server exited cleanly on SIGTERM");
        self.launch().await;
    }

    /// Kills the server with SIGKILL, as a crash would, and waits until it is gone.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("the server runs");
        child.kill().expect("SIGKILL the server");
        child.wait().expect("the killed server is reaped");
    }

    /// Starts the server again, after [`Server::kill`], on the same data dir and flags.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "the server still runs");
        self.launch().await;
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("admin.token"))
            .expect("admin token")
            .trim()
            .to_owned()
    }

    /// Runs the `kl` CLI against this server.
    pub async fn kl(&self, args: &[&str]) -> Output {
        let mut cmd = tokio::process::Command::new(KL);
        cmd.args(args)
            .env("KL_URL", &self.url)
            .env("KL_DATA_DIR", self.data_dir())
            .env_remove("KL_TOKEN")
            .stdin(Stdio::null());
        tokio::time::timeout(Duration::from_secs(600), cmd.output())
            .await
            .expect("kl command finished in time")
            .expect("kl runs")
    }

    /// Runs the `kl` CLI, which must succeed; returns its stdout. A failure shows the command,
    /// its exit status, stdout and stderr.
    pub async fn kl_ok(&self, args: &[&str]) -> String {
        let out = self.kl(args).await;
        assert!(out.status.success(), "kl {args:?} failed:\n{}", text(&out));
        stdout(&out)
    }

    /// Runs the `kl` CLI, which must fail; returns its exit status, stdout and stderr (as
    /// [`text`]), so a test can look for the message and for what must not leak anywhere.
    pub async fn kl_fails(&self, args: &[&str]) -> String {
        let out = self.kl(args).await;
        assert!(!out.status.success(), "kl {args:?} succeeded:\n{}", text(&out));
        text(&out)
    }

    /// Runs the `kl` CLI with `token` instead of the admin token.
    pub async fn kl_as(&self, token: &str, args: &[&str]) -> Output {
        let mut cmd = tokio::process::Command::new(KL);
        cmd.args(args)
            .env("KL_URL", &self.url)
            .env("KL_DATA_DIR", self.data_dir())
            .env("KL_TOKEN", token)
            .stdin(Stdio::null());
        tokio::time::timeout(Duration::from_secs(600), cmd.output())
            .await
            .expect("kl command finished in time")
            .expect("kl runs")
    }

    /// Runs the `kl` CLI with `input` on its stdin.
    pub async fn kl_stdin(&self, args: &[&str], input: &str) -> Output {
        use tokio::io::AsyncWriteExt;
        let mut child = self
            .kl_command(args)
            .stdin(Stdio::piped())
            .spawn()
            .expect("kl runs");
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(input.as_bytes()).await.expect("stdin written");
        drop(stdin);
        tokio::time::timeout(Duration::from_secs(600), child.wait_with_output())
            .await
            .expect("kl command finished in time")
            .expect("kl runs")
    }

    /// A `kl` command against this server with the admin token and piped output, not started.
    pub fn kl_command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(KL);
        cmd.args(args)
            .env("KL_URL", &self.url)
            .env("KL_DATA_DIR", self.data_dir())
            .env_remove("KL_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// A request to `path` with `token`, or with none.
    pub fn req_as(
        &self,
        token: Option<&str>,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.url));
        match token {
            Some(t) => builder.bearer_auth(t),
            None => builder,
        }
    }

    /// `kl deploy` that must succeed.
    pub async fn deploy(&self, path: &Path, args: &[&str]) -> Output {
        let mut all = vec!["deploy", path.to_str().expect("utf-8 path")];
        all.extend_from_slice(args);
        let out = self.kl(&all).await;
        assert!(
            out.status.success(),
            "deploy of {} failed:\n{}",
            path.display(),
            text(&out)
        );
        out
    }

    /// A request to `path` on the server with the admin token.
    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(self.token())
    }

    /// Creates a tenant with `spec` through the API, as the admin.
    pub async fn create_tenant(&self, name: &str, spec: serde_json::Value) {
        let response = self
            .req(reqwest::Method::POST, "/v1/tenants")
            .json(&serde_json::json!({"name": name, "spec": spec}))
            .send()
            .await
            .expect("request sent");
        let reply = Reply::read(response).await;
        assert_eq!(reply.status, 201, "creating tenant {name}: {}", reply.text());
    }

    /// POSTs JSON to a function; returns status, headers and body.
    pub async fn call(&self, function: &str, sub: &str, body: serde_json::Value) -> Reply {
        let response = self
            .req(reqwest::Method::POST, &format!("/fn/default/{function}{sub}"))
            .json(&body)
            .send()
            .await
            .expect("request sent");
        Reply::read(response).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if let Some(prefix) = self.args.iter().skip_while(|a| *a != "--bus-prefix").nth(1) {
            delete_queues(prefix);
        }
    }
}

/// The event broker a test server runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bus {
    /// In the metadata store (the default).
    Embedded,
    /// RabbitMQ at this URL.
    Amqp(String),
}

impl Bus {
    /// RabbitMQ at `KL_TEST_AMQP_URL`. Unset: `None` with a SKIPPED line, except in CI, where
    /// the RabbitMQ variants must run and so fail.
    pub fn amqp() -> Option<Bus> {
        kl_testkit::service_url(
            "KL_TEST_AMQP_URL",
            "RabbitMQ variant",
            "amqp://guest:guest@127.0.0.1:5672/%2f",
        )
        .map(Bus::Amqp)
    }

    /// The `kl server` flags: RabbitMQ servers get exchanges and queues of their own.
    pub fn flags(&self) -> Vec<String> {
        match self {
            Bus::Embedded => Vec::new(),
            Bus::Amqp(url) => {
                let prefix = kl_testkit::unique("kltest-");
                vec!["--bus".into(), url.clone(), "--bus-prefix".into(), prefix]
            }
        }
    }
}

/// Deletes a test server's RabbitMQ queues, best-effort, when `rabbitmqctl` runs here (its
/// two exchanges stay: they hold nothing).
fn delete_queues(prefix: &str) {
    let Ok(listed) = Command::new("rabbitmqctl")
        .args(["-q", "list_queues", "name"])
        .output()
    else {
        return;
    };
    for queue in String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(str::trim)
        .filter(|q| q.starts_with(&format!("{prefix}.")))
    {
        let _ = Command::new("rabbitmqctl")
            .args(["-q", "delete_queue", queue])
            .output();
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub async fn read(response: reqwest::Response) -> Reply {
        Reply {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.bytes().await.expect("body read").to_vec(),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The platform error code of an error reply.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// stdout and stderr of a CLI run, for assertions and failure messages.
pub fn text(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A copy of a fixture with a `kl.yaml`.
pub fn with_manifest(fixture_name: &str, manifest: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture(fixture_name), dir.path());
    std::fs::write(dir.path().join("kl.yaml"), manifest).unwrap();
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
