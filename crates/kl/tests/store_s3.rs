//! `kl server --store s3://…` against a real S3 protocol server on loopback (s3s-fs, run by
//! this test process): a Python function deploys from source and answers before and after a
//! restart, its objects land in the bucket and not in the data dir, and a bucket the server
//! cannot use stops it at start with a message that says so.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kl_testkit::s3::S3Server;
use serde_json::json;
use support::{KL, Server, fixture};

/// Every file below `dir`, relative to it, sorted.
fn files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[tokio::test]
async fn functions_deploy_and_survive_a_restart_with_objects_on_s3() {
    let s3 = S3Server::start();
    let bucket = s3.create_bucket("kl-platform");
    let mut server = Server::start_with_env(&["--store", "s3://kl-platform/eu/prd"], &s3.env()).await;
    assert!(
        server.server_log().contains("store=s3://kl-platform/eu/prd"),
        "{}",
        server.server_log()
    );
    server.deploy(&fixture("py-hello"), &["--name", "hello"]).await;
    let reply = server.call("hello", "", json!({"name": "s3"})).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["hello"], "s3");

    let stored = files(&bucket.join("eu/prd"));
    assert!(
        stored
            .iter()
            .any(|f| f.starts_with("sources/default/hello/") && f.ends_with(".archive")),
        "the source is in the bucket: {stored:?}"
    );
    assert!(
        stored.contains(&"contexts/default/hello/1.tar.gz".to_owned()),
        "the build context is in the bucket: {stored:?}"
    );
    assert!(
        !server.data_dir().join("objects").exists(),
        "nothing in the data dir's object folder: {:?}",
        files(&server.data_dir().join("objects"))
    );

    server.restart().await;
    let reply = server.call("hello", "", json!({"name": "again"})).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["hello"], "again");
    assert_eq!(reply.header("x-kl-revision"), "hello-00001");
    assert!(!server.data_dir().join("objects").exists());
}

/// Runs `kl server` expecting it to refuse to start; returns its stderr.
fn refused_start(args: &[&str], env: &[(&str, String)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(KL)
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--isolation",
            "none",
            "--data-dir",
        ])
        .arg(dir.path())
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kl server starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("kl server {args:?} did not stop within 30s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    assert!(!status.success(), "kl server {args:?} started: {stderr}");
    stderr
}

#[test]
fn a_store_the_server_cannot_use_stops_it_at_start() {
    let s3 = S3Server::start();
    let missing = refused_start(&["--store", "s3://not-created"], &s3.env());
    assert!(missing.contains("\"not-created\" does not exist"), "{missing}");
    let mut wrong_key = s3.env();
    wrong_key.retain(|(k, _)| *k != "AWS_SECRET_ACCESS_KEY");
    wrong_key.push(("AWS_SECRET_ACCESS_KEY", "wrong".into()));
    s3.create_bucket("kl-platform");
    let denied = refused_start(&["--store", "s3://kl-platform"], &wrong_key);
    assert!(
        denied.contains("access to the S3 bucket \"kl-platform\" is denied"),
        "{denied}"
    );
    let not_a_url = refused_start(&["--store", "/var/lib/kl/objects"], &[]);
    assert!(
        not_a_url.contains("--store takes s3://BUCKET[/PREFIX]"),
        "{not_a_url}"
    );
}

#[test]
fn the_kubernetes_backend_and_knative_eventing_refuse_what_they_lack_before_any_cluster() {
    let no_registry = refused_start(&["--backend", "kubernetes"], &[]);
    assert!(
        no_registry.contains("--backend kubernetes needs --registry"),
        "{no_registry}"
    );
    let local_store = refused_start(
        &["--backend", "kubernetes", "--registry", "registry.example.com/kl"],
        &[],
    );
    assert!(
        local_store.contains("--backend kubernetes needs an S3 object store (--store s3://"),
        "{local_store}"
    );
    let knative_locally = refused_start(&["--eventing", "knative"], &[]);
    assert!(
        knative_locally.contains("--eventing knative needs --backend kubernetes"),
        "{knative_locally}"
    );
}
