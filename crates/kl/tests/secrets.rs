//! Tenant secrets through the real `kl` binary and a real server: set/ls/rm and their bad
//! inputs, a function receiving a secret as an environment variable and as a read-only file
//! (sandboxed and not), a change rolling a new revision, a deploy naming a missing secret,
//! RBAC, key rotation, and the leak test: a planted value appears in no log, event, response
//! or file of the data dir.

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{Reply, Server, fixture, text, wait_for};

fn sha(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

async fn put_secret(server: &Server, token: Option<&str>, name: &str, body: Value) -> Reply {
    let request = server
        .req_as(token, Method::PUT, &format!("/v1/tenants/default/secrets/{name}"))
        .json(&body);
    Reply::read(request.send().await.expect("request sent")).await
}

async fn call(server: &Server, function: &str) -> Value {
    let reply = server.call(function, "", json!({})).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

#[tokio::test]
async fn secrets_are_set_listed_and_deleted_and_bad_input_is_refused() {
    let server = Server::start_with(&["--isolation", "none"]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cert.pem");
    std::fs::write(&file, "-----BEGIN-----\nabc\n").unwrap();
    let from_file = format!("CERT={}", file.display());

    let set = server
        .kl_ok(&["secret", "set", "db", "USER=app", "PASSWORD=s3cr3t-value"])
        .await;
    assert_eq!(set, "secret db version 1 (2 keys)\n");
    server
        .kl_ok(&["secret", "set", "tls", "--from-file", &from_file])
        .await;
    let again = server
        .kl_ok(&["secret", "set", "db", "PASSWORD=other-value"])
        .await;
    assert_eq!(again, "secret db version 2 (1 key)\n", "a set replaces every key");
    let ls = server.kl_ok(&["secret", "ls"]).await;
    assert!(ls.starts_with("NAME"), "{ls}");
    assert!(
        ls.lines()
            .any(|l| l.starts_with("db") && l.contains("PASSWORD") && l.contains(" 2 ")),
        "{ls}"
    );
    assert!(
        ls.lines().any(|l| l.starts_with("tls") && l.contains("CERT")),
        "{ls}"
    );
    let listed: Value = serde_json::from_str(&server.kl_ok(&["secret", "ls", "-o", "json"]).await).unwrap();
    assert_eq!(listed["secrets"][0]["keys"], json!(["PASSWORD"]));
    for shown in [&ls, &listed.to_string()] {
        assert!(
            !shown.contains("other-value") && !shown.contains("abc"),
            "{shown}"
        );
    }

    assert_eq!(
        server.kl_ok(&["secret", "rm", "tls"]).await,
        "deleted secret tls\n"
    );
    let gone = server.kl_fails(&["secret", "rm", "tls"]).await;
    assert!(gone.contains("not found"), "{gone}");

    // Bad input: a 4xx naming the problem, never the value, and nothing stored.
    let planted = kl_testkit::unique("planted-");
    for (name, body, status, says) in [
        (
            "db",
            json!({"data": {"bad-key": planted}}),
            400,
            "key \"bad-key\" is invalid",
        ),
        (
            "Bad_Name",
            json!({"data": {"K": planted}}),
            400,
            "secret name \"Bad_Name\" is invalid",
        ),
        ("db", json!({"data": {}}), 400, "has no keys"),
        (
            "db",
            json!({"data": {"K": format!("{planted}{}", "x".repeat(64 << 10))}}),
            400,
            "the limit is 65536 bytes",
        ),
        (
            "db",
            json!({"data": {"K": format!("{planted}\u{0}")}}),
            400,
            "NUL",
        ),
        ("db", json!({"data": planted}), 400, "must be {\"data\""),
        ("db", json!({"data": {"K": 1}}), 400, "string values"),
        (
            "db",
            json!({"data": {"K": planted}, "extra": planted}),
            400,
            "must be {\"data\"",
        ),
    ] {
        let reply = put_secret(&server, Some(&server.token()), name, body).await;
        assert_eq!(reply.status, status, "{name}: {}", reply.text());
        let message = reply.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(message.contains(says), "{name}: {message}");
        assert!(
            !reply.text().contains(&planted),
            "the refusal repeats the value: {}",
            reply.text()
        );
    }
    let listed: Value = serde_json::from_str(&server.kl_ok(&["secret", "ls", "-o", "json"]).await).unwrap();
    assert_eq!(
        listed["secrets"][0]["version"], 2,
        "refusals stored nothing: {listed}"
    );
    let no_equals = server.kl_fails(&["secret", "set", "db", &planted]).await;
    assert!(
        no_equals.contains("no '='") && !no_equals.contains(&planted),
        "{no_equals}"
    );

    // The per-tenant count: 100 by default, a 403 beyond.
    for i in 0..99 {
        let reply = put_secret(
            &server,
            Some(&server.token()),
            &format!("s{i}"),
            json!({"data": {"K": "v"}}),
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let over = put_secret(
        &server,
        Some(&server.token()),
        "one-more",
        json!({"data": {"K": "v"}}),
    )
    .await;
    assert_eq!(over.status, 403, "{}", over.text());
    assert!(
        over.text().contains("secrets quota (100 of 100"),
        "{}",
        over.text()
    );
    let replace = put_secret(&server, Some(&server.token()), "s0", json!({"data": {"K": "w"}})).await;
    assert_eq!(
        replace.status,
        200,
        "replacing stays within the count: {}",
        replace.text()
    );
}

/// Deploys the fixture that reads db.PASSWORD, sets a new value and checks the roll.
async fn env_file_and_roll(isolation: &str) {
    let server = Server::start_with(&["--isolation", isolation]).await;
    let name = format!("sec-{isolation}");
    server
        .kl_ok(&["secret", "set", "db", "PASSWORD=first-value", "USER=app"])
        .await;
    server.deploy(&fixture("py-secrets"), &["--name", &name]).await;
    let seen = call(&server, &name).await;
    assert_eq!(seen["env"], sha("first-value"), "{seen}");
    assert_eq!(seen["file"], sha("first-value"), "{seen}");
    assert_eq!(seen["keys"], json!(["PASSWORD", "USER"]), "{seen}");
    if isolation == "sandbox" {
        assert_eq!(seen["dir"], "/var/run/secrets/kl");
        assert_eq!(seen["writable"], false, "the mount is read-only: {seen}");
    }

    let set = server
        .kl_ok(&["secret", "set", "db", "PASSWORD=second-value", "USER=app"])
        .await;
    assert!(set.contains(&format!("rolled {name}-00002")), "{set}");
    let seen = call(&server, &name).await;
    assert_eq!(
        seen["env"],
        sha("second-value"),
        "the new revision has the new value: {seen}"
    );
    assert_eq!(seen["file"], sha("second-value"), "{seen}");
    let described: Value =
        serde_json::from_str(&server.kl_ok(&["describe", &name, "-o", "json"]).await).unwrap();
    let revisions = described["revisions"].as_array().expect("revisions");
    let digests: Vec<&Value> = revisions.iter().map(|r| &r["digest"]).collect();
    assert_eq!(revisions.len(), 2, "{described}");
    assert_eq!(
        digests[0], digests[1],
        "the roll reuses the artifact: {described}"
    );

    let in_use = server.kl_fails(&["secret", "rm", "db"]).await;
    assert!(
        in_use.contains(&format!("used by function(s) {name}")),
        "{in_use}"
    );
}

#[tokio::test]
async fn a_sandboxed_function_reads_its_secret_as_env_and_read_only_file_and_a_change_rolls_it() {
    env_file_and_roll("sandbox").await;
}

#[tokio::test]
async fn an_unisolated_function_reads_its_secret_from_a_private_folder_and_a_change_rolls_it() {
    env_file_and_roll("none").await;
}

#[tokio::test]
async fn deploying_a_function_that_names_a_missing_secret_or_key_fails_clearly() {
    let server = Server::start_with(&["--isolation", "none"]).await;
    let missing = server
        .kl_fails(&[
            "deploy",
            fixture("py-secrets").to_str().unwrap(),
            "--name",
            "nosec",
        ])
        .await;
    assert!(
        missing.contains("uses secret \"db\", which tenant \"default\" does not have"),
        "{missing}"
    );
    server.kl_ok(&["secret", "set", "db", "USER=app"]).await;
    let no_key = server
        .kl_fails(&[
            "deploy",
            fixture("py-secrets").to_str().unwrap(),
            "--name",
            "nosec",
        ])
        .await;
    assert!(
        no_key.contains("secret \"db\" has no key \"PASSWORD\""),
        "{no_key}"
    );
    let bad_ref = server
        .kl_fails(&[
            "deploy",
            fixture("py-events").to_str().unwrap(),
            "--secret-env",
            "X=nodot",
        ])
        .await;
    assert!(bad_ref.contains("use NAME.KEY"), "{bad_ref}");
    let functions = server.kl_ok(&["ls"]).await;
    assert!(
        !functions.contains("nosec"),
        "a refused deploy creates nothing: {functions}"
    );
}

#[tokio::test]
async fn only_members_who_deploy_may_set_secrets_and_nobody_reads_values() {
    let server = Server::start_with(&["--isolation", "none"]).await;
    let token = |role: &'static str| {
        let server = &server;
        async move {
            server
                .kl_ok(&["token", "create", "--role", role, "--tenant", "default", "-q"])
                .await
                .trim()
                .to_owned()
        }
    };
    let (viewer, developer) = (token("viewer").await, token("developer").await);
    let body = json!({"data": {"K": "v"}});
    assert_eq!(
        put_secret(&server, Some(&viewer), "x", body.clone()).await.status,
        403
    );
    assert_eq!(put_secret(&server, None, "x", body.clone()).await.status, 401);
    assert_eq!(
        put_secret(&server, Some(&developer), "x", body.clone())
            .await
            .status,
        200
    );
    let list = |token: String| {
        let server = &server;
        async move {
            Reply::read(
                server
                    .req_as(Some(&token), Method::GET, "/v1/tenants/default/secrets")
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let seen = list(viewer.clone()).await;
    assert_eq!(seen.status, 200, "viewers see names and keys: {}", seen.text());
    assert_eq!(seen.json()["secrets"][0]["keys"], json!(["K"]));
    let denied = server.kl_as(&viewer, &["secret", "rm", "x"]).await;
    assert!(
        !denied.status.success() && text(&denied).contains("may not manage secrets"),
        "{}",
        text(&denied)
    );
    server.create_tenant("other", json!({})).await;
    let elsewhere = Reply::read(
        server
            .req_as(Some(&developer), Method::PUT, "/v1/tenants/other/secrets/x")
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        elsewhere.status,
        404,
        "another tenant is invisible: {}",
        elsewhere.text()
    );
    let rotate = server
        .req_as(Some(&developer), Method::POST, "/v1/admin/rotate-secrets-key")
        .send()
        .await
        .unwrap();
    assert_eq!(rotate.status(), 403);
}

/// Every file below `dir`, with its bytes.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                found.push((
                    path.display().to_string(),
                    std::fs::read(&path).unwrap_or_default(),
                ));
            }
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn a_planted_secret_appears_in_no_log_event_response_or_stored_byte() {
    let mut server = Server::start().await;
    let planted = kl_testkit::unique("PLANTED");
    let events = Arc::new(Mutex::new(Vec::<u8>::new()));
    let stream = server
        .req(Method::GET, "/v1/tenants/default/events/stream")
        .send()
        .await
        .expect("follow the events");
    assert_eq!(stream.status(), 200);
    let sink = events.clone();
    let follower = tokio::spawn(async move {
        let mut stream = stream;
        while let Ok(Some(chunk)) = stream.chunk().await {
            sink.lock().unwrap().extend_from_slice(&chunk);
        }
    });
    let mut seen: Vec<(String, String)> = Vec::new();
    fn run(seen: &mut Vec<(String, String)>, what: &str, out: &std::process::Output) {
        seen.push((what.to_owned(), text(out)));
    }

    let value = format!("PASSWORD={planted}");
    run(
        &mut seen,
        "set",
        &server.kl(&["secret", "set", "db", &value]).await,
    );
    let deployed = server
        .kl(&[
            "deploy",
            fixture("py-secrets").to_str().unwrap(),
            "--name",
            "leak",
        ])
        .await;
    assert!(deployed.status.success(), "{}", text(&deployed));
    run(&mut seen, "deploy", &deployed);
    let answer = call(&server, "leak").await;
    assert_eq!(
        answer["env"],
        sha(&planted),
        "the function got the value: {answer}"
    );
    seen.push(("invoke".into(), answer.to_string()));
    run(
        &mut seen,
        "roll",
        &server.kl(&["secret", "set", "db", &value]).await,
    );
    run(
        &mut seen,
        "invoke",
        &server.kl(&["invoke", "leak", "-d", "{}"]).await,
    );
    for args in [
        &["secret", "ls"][..],
        &["secret", "ls", "-o", "json"],
        &["describe", "leak", "-o", "json"],
        &["describe", "leak"],
        &["logs", "leak"],
        &["ls"],
        &["audit"],
        &["secret", "rm", "db"],
        &[
            "deploy",
            fixture("py-secrets").to_str().unwrap(),
            "--name",
            "leak2",
            "--secret-env",
            "DB_PASSWORD=db.NOPE",
        ],
        &["secret", "set", "BAD", &value],
        &["secret", "set", "db", "bad-key", &value],
    ] {
        run(&mut seen, &args.join(" "), &server.kl(args).await);
    }
    for (path, body) in [
        ("/v1/tenants/default/secrets", None),
        ("/v1/tenants/default/functions/leak", None),
        ("/v1/tenants/default/functions/leak/revisions/2/log", None),
        ("/v1/tenants/default/secrets/db", Some(json!({"data": planted}))),
        (
            "/v1/tenants/default/secrets/db",
            Some(json!({"data": {"K": [planted]}})),
        ),
        (
            "/v1/tenants/default/secrets/db",
            Some(json!({"data": {"K": planted}, "planted": planted})),
        ),
    ] {
        let request = match &body {
            Some(body) => server.req(Method::PUT, path).json(body),
            None => server.req(Method::GET, path),
        };
        seen.push((
            path.to_owned(),
            Reply::read(request.send().await.unwrap()).await.text(),
        ));
    }
    // Rotation re-encrypts it: still nowhere in plaintext.
    let rotated = Reply::read(
        server
            .req(Method::POST, "/v1/admin/rotate-secrets-key")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    assert_eq!(rotated.json()["reencrypted"], 1, "{}", rotated.text());
    assert_eq!(
        call(&server, "leak").await["env"],
        sha(&planted),
        "the rotated key opens it"
    );
    seen.push(("rotate".into(), rotated.text()));

    wait_for("the roll's events", Duration::from_secs(10), || {
        let events = events.clone();
        async move { contains(&events.lock().unwrap(), "leak-00002").then_some(()) }
    })
    .await;
    for (what, output) in &seen {
        assert!(!output.contains(&planted), "{what} shows the secret:\n{output}");
    }
    assert!(server.stop(), "the server stops cleanly");
    follower.abort();
    let events = events.lock().unwrap().clone();
    assert!(contains(&events, "function.updated"), "events were followed");
    assert!(!contains(&events, &planted), "an event holds the secret");
    let log = server.server_log();
    assert!(log.contains("secret set"), "the server logged the change");
    assert!(!log.contains(&planted), "the server log holds the secret");
    let stored = files(&server.data_dir());
    assert!(
        stored.iter().any(|(path, _)| path.ends_with("kl.db")),
        "the database is read"
    );
    for (path, bytes) in &stored {
        assert!(!contains(bytes, &planted), "{path} holds the secret in plaintext");
    }
}

#[tokio::test]
async fn a_key_file_others_can_read_stops_the_server() {
    let mut server = Server::start_with(&["--isolation", "none"]).await;
    assert!(server.stop());
    let key = server.data_dir().join("secrets.key");
    let mode = |p: &Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions()) & 0o777
    };
    assert_eq!(mode(&key), 0o600, "created private");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let mut refused = tokio::process::Command::new(support::KL);
    refused
        .args([
            "server",
            "--isolation",
            "none",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(server.data_dir())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), refused.output())
        .await
        .expect("the server refuses to start instead of serving")
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("has mode 640") && said.contains("chmod 600"),
        "{said}"
    );
}
