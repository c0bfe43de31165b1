//! The unhappy paths: exceptions, timeouts, crashes, oversized bodies, failing builds, bad
//! names and missing credentials. Each must end in a clear error while the platform stays up.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{Server, fixture, text, wait_for};

#[tokio::test]
async fn exceptions_timeouts_crashes_and_oversize_bodies() {
    let server = Server::start().await;
    server
        .deploy(&fixture("py-errors"), &["--name", "errs", "--timeout", "2s"])
        .await;

    let reply = server.call("errs", "", json!({"action": "raise"})).await;
    assert_eq!(reply.status, 500);
    assert_eq!(
        reply.json()["error"],
        json!({"code": "FunctionError", "message": "boom: bad value", "type": "ValueError"})
    );
    let logs = wait_for(
        "the traceback in the function log",
        Duration::from_secs(10),
        || async {
            let out = server.kl(&["logs", "errs"]).await;
            let log = String::from_utf8_lossy(&out.stdout).into_owned();
            log.contains("ValueError: boom: bad value").then_some(log)
        },
    )
    .await;
    assert!(logs.contains("Traceback"), "{logs}");

    let started = Instant::now();
    let reply = server
        .call("errs", "", json!({"action": "sleep", "seconds": 30}))
        .await;
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert_eq!(reply.code(), "FunctionTimeout");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the timeout cut the request short"
    );
    let reply = server.call("errs", "", json!({"action": "echo", "n": 1})).await;
    assert_eq!(
        reply.status,
        200,
        "a fresh instance replaces the hung one: {}",
        reply.text()
    );

    let reply = server.call("errs", "", json!({"action": "crash"})).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(reply.code(), "FunctionCrashed");
    let reply = server.call("errs", "", json!({"action": "echo", "n": 2})).await;
    assert_eq!(reply.status, 200, "a fresh instance replaces the crashed one");
    assert_eq!(reply.json(), json!({"action": "echo", "n": 2}));

    let big = "x".repeat(6 << 20);
    let reply = server
        .call("errs", "", json!({"action": "echo", "pad": big}))
        .await;
    assert_eq!(reply.status, 413, "a body over 6 MiB is refused");
    assert_eq!(reply.code(), "PayloadTooLarge");
    let fits = "y".repeat(5 << 20);
    let reply = server
        .call("errs", "", json!({"action": "echo", "pad": fits}))
        .await;
    assert_eq!(reply.status, 200, "a 5 MiB body passes");
    assert_eq!(reply.json()["pad"].as_str().map(str::len), Some(5 << 20));

    let reply = server.call("errs", "", json!({"action": "b64"})).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), "image/png");
    assert_eq!(reply.body, b"\x89PNG\r\n");

    let marker = "m-7d1f";
    server
        .call("errs", "", json!({"action": "print", "marker": marker}))
        .await;
    wait_for("the printed line in kl logs", Duration::from_secs(10), || async {
        let out = server.kl(&["logs", "errs", "--tail", "50"]).await;
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("log-marker-{marker}"))
            .then_some(())
    })
    .await;

    let health = server
        .http
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "the platform stays up");
}

#[tokio::test]
async fn a_failing_build_keeps_the_previous_revision_serving() {
    let server = Server::start().await;
    server.deploy(&fixture("py-errors"), &["--name", "keep"]).await;
    let out = server
        .kl(&[
            "deploy",
            fixture("py-broken-build").to_str().unwrap(),
            "--name",
            "keep",
        ])
        .await;
    assert!(!out.status.success(), "a failed build exits non-zero");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("keep-00002 failed") && err.contains("pip install failed"),
        "{}",
        text(&out)
    );
    assert!(
        err.contains("kl-this-package-does-not-exist-xyz"),
        "the error shows the build output: {err}"
    );

    let reply = server.call("keep", "", json!({"action": "echo"})).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-kl-revision"), "keep-00001");

    let out = server
        .kl(&[
            "deploy",
            fixture("py-syntax-error").to_str().unwrap(),
            "--name",
            "keep",
        ])
        .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("did not start") && err.contains("SyntaxError"),
        "{}",
        text(&out)
    );

    let out = server.kl(&["describe", "keep", "-o", "json"]).await;
    let detail: serde_json::Value = serde_json::from_slice(&out.stdout).expect("describe JSON");
    assert_eq!(detail["servingRevision"], "keep-00001");
    let states: Vec<&str> = detail["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["failed", "failed", "ready"]);
}

#[tokio::test]
async fn go_build_errors_are_reported() {
    let server = Server::start().await;
    let out = server
        .kl(&[
            "deploy",
            fixture("go-main-pkg").to_str().unwrap(),
            "--name",
            "gomain",
        ])
        .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is `main`"),
        "{}",
        text(&out)
    );
    let out = server
        .kl(&[
            "deploy",
            fixture("go-compile-error").to_str().unwrap(),
            "--name",
            "gobad",
        ])
        .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("go build failed") && err.contains("broken.go"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn bad_input_is_refused_with_a_clear_error() {
    let server = Server::start().await;
    // The server checks names, whatever the client does.
    let reply = server
        .req(
            reqwest::Method::PUT,
            "/v1/tenants/default/functions/Bad_Name/source",
        )
        .body(vec![0u8; 10])
        .send()
        .await
        .unwrap();
    let reply = support::Reply::read(reply).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.code(), "InvalidName");

    let out = server
        .kl(&[
            "deploy",
            fixture("py-hello").to_str().unwrap(),
            "--name",
            "Bad_Name",
        ])
        .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid"),
        "{}",
        text(&out)
    );

    let unknown = tempfile::tempdir().unwrap();
    std::fs::write(unknown.path().join("README.md"), "no code").unwrap();
    let out = server
        .kl(&["deploy", unknown.path().to_str().unwrap(), "--name", "nolang"])
        .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot detect the language") && err.contains("InvalidFunction"),
        "{err}"
    );

    let reply = server
        .req(reqwest::Method::PUT, "/v1/tenants/nope/functions/f/source")
        .body(kl_testkit::archives::sample_tree_tar_gz())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 404, "unknown tenant");

    let list: serde_json::Value = server
        .req(reqwest::Method::GET, "/v1/tenants/default/functions")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["functions"],
        json!([]),
        "refused deploys leave nothing behind"
    );
}

#[tokio::test]
async fn every_hostile_archive_is_refused_and_nothing_escapes() {
    // No sandboxes made ahead: every file that appears is the uploads' doing.
    let server = Server::start_with(&["--warm-sandboxes", "0"]).await;
    let outside = tempfile::tempdir().unwrap();
    let before = tree(server.data_dir().parent().unwrap());
    for case in kl_testkit::archives::hostile_cases(outside.path()) {
        let reply = server
            .req(
                reqwest::Method::PUT,
                "/v1/tenants/default/functions/hostile/source",
            )
            .body(case.archive)
            .send()
            .await
            .unwrap();
        let reply = support::Reply::read(reply).await;
        assert_eq!(reply.status, case.status, "{}: {}", case.name, reply.text());
        assert_eq!(reply.code(), case.code, "{}: {}", case.name, reply.text());
        assert!(!reply.json()["error"]["message"].as_str().unwrap().is_empty());
        let leaked: Vec<_> = std::fs::read_dir(outside.path()).unwrap().collect();
        assert!(leaked.is_empty(), "{}: wrote outside: {leaked:?}", case.name);
    }
    let after = tree(server.data_dir().parent().unwrap());
    let new: Vec<_> = after
        .difference(&before)
        .filter(|p| !p.contains("/staging") && !p.ends_with("server.log"))
        .collect();
    assert!(new.is_empty(), "refused uploads left files: {new:?}");
    let staged: Vec<_> = std::fs::read_dir(server.data_dir().join("staging"))
        .unwrap()
        .collect();
    assert!(staged.is_empty(), "staging is cleaned up: {staged:?}");
    assert_eq!(
        server
            .http
            .get(format!("{}/healthz", server.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

fn tree(root: &std::path::Path) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            out.insert(path.display().to_string());
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(path);
            }
        }
    }
    out
}

#[tokio::test]
async fn private_functions_and_the_api_need_a_token() {
    use std::os::unix::fs::PermissionsExt;
    let server = Server::start().await;
    let mode = std::fs::metadata(server.data_dir().join("admin.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the admin token is readable by its owner only"
    );
    server.deploy(&fixture("py-errors"), &["--name", "private"]).await;
    let url = format!("{}/fn/default/private", server.url);
    for token in [None, Some("kl_wrong")] {
        let mut req = server.http.post(&url).json(&json!({"action": "echo"}));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let reply = support::Reply::read(req.send().await.unwrap()).await;
        assert_eq!(reply.status, 401, "token {token:?}");
        assert_eq!(reply.code(), "Unauthorized");
    }
    let reply = server
        .http
        .get(format!("{}/v1/functions", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 401);
    // Without a token, a missing function is indistinguishable from a private one.
    let reply = server
        .http
        .post(format!("{}/fn/default/missing", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 401);

    server
        .deploy(&fixture("py-errors"), &["--name", "open", "--public"])
        .await;
    let reply = server
        .http
        .post(format!("{}/fn/default/open", server.url))
        .json(&json!({"action": "echo", "ok": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200, "public functions need no token");
}
