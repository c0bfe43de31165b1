//! Disaster recovery: `kl admin backup` while the platform serves, the data dir destroyed,
//! `kl admin restore` onto a fresh one (and across backends: SQLite and a local store to
//! PostgreSQL and S3), and everything back: tenants, tokens, sealed secrets, functions with
//! every revision, triggers, dead letters, async results. Plus scheduled backups and pruning,
//! and the refusals (no key, a used target, a damaged snapshot, a non-admin caller).

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use kl_testkit::postgres::FreshDatabase;
use kl_testkit::s3::S3Server;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{KL, Reply, Server, fixture, stdout, text, wait_for};

const PATIENCE: Duration = Duration::from_secs(60);

fn sha(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// `kl admin restore` (no server involved), with extra environment; its output.
async fn restore(data_dir: &Path, args: &[&str], env: &[(&str, String)]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(KL);
    cmd.args(["admin", "restore"])
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("KL_SECRETS_KEY")
        .env_remove("KL_DB")
        .env_remove("KL_STORE")
        .env_remove("KL_CACHE_DIR")
        .envs(env.iter().map(|(k, v)| (k, v)));
    tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .expect("restore finished in time")
        .expect("kl runs")
}

/// Creates tenant `acme` and a token of `role` in it; returns the token.
async fn acme_token(server: &Server, role: &str) -> String {
    server.kl_ok(&["tenant", "create", "acme"]).await;
    let args = ["token", "create", "--tenant", "acme", "--role", role, "-q"];
    server.kl_ok(&args).await.trim().to_owned()
}

/// Builds the state a restore must bring back; returns (tenant token, async invocation id).
async fn populate(server: &Server) -> (String, String) {
    let token = acme_token(server, "developer").await;
    server
        .kl_ok(&["secret", "set", "db", "PASSWORD=planted-value", "USER=app"])
        .await;
    server.deploy(&fixture("py-secrets"), &["--name", "reader"]).await;
    server.deploy(&fixture("py-hello"), &["--name", "hello"]).await;
    server
        .deploy(
            &fixture("py-hello"),
            &["--name", "hello", "--env", "GREETING=two"],
        )
        .await;
    server
        .kl_ok(&[
            "trigger",
            "create",
            "on-order",
            "--function",
            "hello",
            "--filter",
            "type=order.created",
        ])
        .await;
    let id = server
        .kl_ok(&["invoke", "hello", "--async", "-d", "{\"name\": \"async\"}"])
        .await
        .trim()
        .to_owned();
    wait_for("the async invocation to finish", PATIENCE, || async {
        let shown = server.kl_ok(&["invocation", "get", &id, "-o", "json"]).await;
        let shown: Value = serde_json::from_str(&shown).ok()?;
        (shown["status"] == "succeeded").then_some(())
    })
    .await;
    (token, id)
}

/// What `populate` made, checked on a (restored) server.
async fn check_restored(server: &Server, token: &str, invocation: &str) {
    let reply = server.call("hello", "", json!({"name": "back"})).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-kl-revision"), "hello-00002");
    let seen = server.call("reader", "", json!({})).await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    assert_eq!(
        seen.json()["env"],
        sha("planted-value"),
        "the sealed secret opens under the old key: {}",
        seen.text()
    );
    let rolled_back = server.kl_ok(&["rollback", "hello"]).await;
    assert!(
        rolled_back.contains("hello-00001"),
        "the older revision's artifact came back too: {rolled_back}"
    );
    let reply = server.call("hello", "", json!({"name": "old"})).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-kl-revision"), "hello-00001");

    let listed = server.kl_as(token, &["ls", "--tenant", "acme"]).await;
    assert!(
        listed.status.success(),
        "the old tenant token works: {}",
        text(&listed)
    );
    let triggers = server.kl_ok(&["trigger", "ls"]).await;
    assert!(triggers.contains("on-order"), "{triggers}");
    let shown = server
        .kl_ok(&["invocation", "get", invocation, "-o", "json"])
        .await;
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["status"], "succeeded", "{shown}");
    assert_eq!(shown["result"]["hello"], "async", "{shown}");
}

/// The complete snapshots in a backup folder.
fn snapshots(dir: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(dir.join("snapshots"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("manifest.json").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn a_platform_comes_back_from_a_backup_taken_while_it_serves() {
    let mut server = Server::start_with(&["--isolation", "none"]).await;
    let (token, invocation) = populate(&server).await;
    let backups = tempfile::tempdir().unwrap();
    let to = backups.path().to_str().unwrap().to_owned();

    // Online: invocations keep being answered while the backup runs.
    let calls = async {
        for n in 0..20 {
            let reply = server.call("hello", "", json!({ "name": n })).await;
            assert_eq!(reply.status, 200, "during a backup: {}", reply.text());
        }
    };
    let backup = ["admin", "backup", "--to", &to, "-o", "json"];
    let (out, ()) = tokio::join!(server.kl_ok(&backup), calls);
    let taken: Value = serde_json::from_str(&out).unwrap();
    assert!(taken["rows"].as_u64().unwrap() > 10, "{taken}");
    assert_eq!(taken["artifacts"], 3, "reader-1, hello-1, hello-2: {taken}");
    assert_eq!(snapshots(backups.path()), [taken["id"].as_str().unwrap()]);
    let backup_bytes = std::fs::read_dir(backups.path().join("blobs"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect::<Vec<_>>();
    assert!(
        !backup_bytes
            .iter()
            .any(|b| b.windows(b"planted-value".len()).any(|w| w == b"planted-value")),
        "no secret value in the clear in a backup"
    );

    // A second backup writes only the metadata: every blob is already there.
    let again: Value = serde_json::from_str(
        &server
            .kl_ok(&["admin", "backup", "--to", &to, "-o", "json"])
            .await,
    )
    .unwrap();
    assert!(
        again["bytesWritten"].as_u64().unwrap() < taken["bytesWritten"].as_u64().unwrap() / 2,
        "{again} vs {taken}"
    );

    // The disk is lost; the key was kept apart.
    let key = std::fs::read(server.data_dir().join("secrets.key")).unwrap();
    server.kill();
    std::fs::remove_dir_all(server.data_dir()).unwrap();

    let refused = restore(&server.data_dir(), &["--from", &to], &[]).await;
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("secrets.key") && text(&refused).contains("KL_SECRETS_KEY"),
        "{}",
        text(&refused)
    );
    let empty = kl_store::Store::open_sqlite(&server.data_dir().join("kl.db"))
        .await
        .unwrap();
    assert!(empty.is_empty().await.unwrap(), "a refused restore writes no row");
    drop(empty);

    write_private(&server.data_dir().join("secrets.key"), &key);
    let out = restore(&server.data_dir(), &["--from", &to], &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(again["id"].as_str().unwrap()),
        "the newest snapshot: {}",
        text(&out)
    );

    let used = restore(&server.data_dir(), &["--from", &to], &[]).await;
    assert!(!used.status.success());
    assert!(
        text(&used).contains("already holds a platform"),
        "{}",
        text(&used)
    );

    server.start_again().await;
    check_restored(&server, &token, &invocation).await;
}

#[tokio::test]
async fn a_backup_of_sqlite_and_local_objects_restores_onto_postgres_and_s3() {
    let Some(db) = FreshDatabase::create("backup across backends").await else {
        return;
    };
    let s3 = S3Server::start();
    s3.create_bucket("kl-backups");
    s3.create_bucket("kl-platform");
    let key = "a2xzZWNyZXRzLWtleS1mb3ItYmFja3VwLXRlc3RzLTA=";
    let mut env = s3.env();
    env.push(("KL_SECRETS_KEY", key.to_owned()));
    let mut source = Server::start_with_env(&["--isolation", "none"], &env).await;
    let (token, invocation) = populate(&source).await;
    source
        .kl_ok(&["admin", "backup", "--to", "s3://kl-backups/nightly"])
        .await;
    source.kill();
    // Nothing of the old machine is left: its data dir (artifacts) goes.
    drop(source);

    let target = tempfile::tempdir().unwrap();
    let target_dir = target.path().join("data");
    let out = restore(
        &target_dir,
        &[
            "--from",
            "s3://kl-backups/nightly",
            "--db",
            &db.url,
            "--store",
            "s3://kl-platform/restored",
        ],
        &env,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(!target_dir.join("kl.db").exists(), "the rows went to PostgreSQL");
    let specs = launch_specs(&target_dir.join("artifacts"));
    assert_eq!(specs.len(), 3, "reader-1, hello-1, hello-2");
    let with_layers = specs.iter().filter(|s| s["layers"].is_array()).count();
    assert_eq!(
        with_layers, 2,
        "hello's revisions have a dependency layer: {specs:?}"
    );
    for spec in &specs {
        let layers = spec["layers"].as_array().cloned().unwrap_or_default();
        for path in layers.iter().chain([&spec["cwd"]]) {
            assert!(
                path.as_str().unwrap().starts_with(target_dir.to_str().unwrap()),
                "restored artifacts use the new data dir and cache: {spec}"
            );
        }
    }

    let restored = Server::start_in(
        target,
        &[
            "--isolation",
            "none",
            "--db",
            &db.url,
            "--store",
            "s3://kl-platform/restored",
        ],
        &env,
    )
    .await;
    check_restored(&restored, &token, &invocation).await;
    drop(restored);
    db.drop_database().await;
}

#[tokio::test]
async fn scheduled_backups_keep_the_newest_and_bad_requests_are_refused() {
    let backups = tempfile::tempdir().unwrap();
    let to = backups.path().to_str().unwrap().to_owned();
    let server = Server::start_with(&[
        "--isolation",
        "none",
        "--backup-to",
        &to,
        "--backup-every",
        "1s",
        "--backup-keep",
        "2",
    ])
    .await;
    server.deploy(&fixture("py-hello"), &["--name", "hello"]).await;
    wait_for("three scheduled backups, pruned to two", PATIENCE, || async {
        let taken = server.server_log().matches("scheduled backup taken").count();
        (taken >= 3 && snapshots(backups.path()).len() == 2).then_some(())
    })
    .await;

    let metrics = server
        .req(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("kl_backup_interval_seconds 1.0"), "{metrics}");
    let last: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("kl_backup_last_success_timestamp_seconds "))
        .expect("the newest backup's time")
        .parse()
        .unwrap();
    assert!(last > 0.0, "{metrics}");

    // Only platform admins take backups.
    let tenant_admin = acme_token(&server, "tenant-admin").await;
    let tenant_admin = tenant_admin.as_str();
    let backup = |token: Option<&str>, body: Value| {
        server
            .req_as(token, Method::POST, "/v1/admin/backups")
            .json(&body)
            .send()
    };
    let denied = Reply::read(backup(Some(tenant_admin), json!({"to": to})).await.unwrap()).await;
    assert_eq!(denied.status, 403, "{}", denied.text());
    let admin = server.token();
    for (body, code) in [
        (json!({"to": "relative/dir"}), "InvalidBackupLocation"),
        (json!({"to": "gs://bucket/x"}), "InvalidBackupLocation"),
        (json!({"to": "/tmp", "extra": 1}), "InvalidRequest"),
    ] {
        let reply = Reply::read(backup(Some(&admin), body.clone()).await.unwrap()).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.text());
        assert_eq!(reply.code(), code, "{body}: {}", reply.text());
    }

    // A damaged blob is found, and no row is written.
    let blob = std::fs::read_dir(backups.path().join("blobs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    std::fs::write(&blob, b"damaged").unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let out = restore(&fresh.path().join("data"), &["--from", &to], &[]).await;
    assert!(!out.status.success());
    assert!(text(&out).contains("does not match its digest"), "{}", text(&out));

    let nothing = tempfile::tempdir().unwrap();
    let out = restore(
        &fresh.path().join("other"),
        &["--from", nothing.path().to_str().unwrap()],
        &[],
    )
    .await;
    assert!(!out.status.success());
    assert!(text(&out).contains("holds no complete backup"), "{}", text(&out));
    assert!(stdout(&out).is_empty());
}

/// Every launch spec below `dir`, links not followed (promoted copies are links).
fn launch_specs(dir: &Path) -> Vec<Value> {
    let mut specs = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            specs.extend(launch_specs(&path));
        } else if path.file_name().unwrap() == "launch.json" {
            specs.push(serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap());
        }
    }
    specs
}

fn write_private(path: &PathBuf, bytes: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    file.write_all(bytes).unwrap();
}
