//! Hostile functions through the whole platform (`kl server` sandboxing every instance): each
//! attack fails and the platform stays healthy. The probe function reports what each attempt
//! did instead of failing (`crates/kl/tests/fixtures/sandbox_probe`).

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Reply, Server, fixture, stdout, text, wait_for};

/// A plain HTTP server on `addr` answering every request with `body`, until the test ends.
fn http_server(addr: &str, body: &'static str) -> u16 {
    let listener = TcpListener::bind(addr).expect("bind a test HTTP server");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    port
}

async fn probe(server: &Server, event: Value) -> Reply {
    let response = server
        .req(Method::POST, "/fn/evil/probe")
        .json(&event)
        .send()
        .await
        .expect("request sent");
    Reply::read(response).await
}

/// Runs one probe op that must be refused, returning the probe's error text.
async fn refused(server: &Server, event: Value) -> String {
    let reply = probe(server, event.clone()).await;
    assert_eq!(reply.status, 200, "{event}: {}", reply.text());
    let outcome = reply.json();
    assert_eq!(
        outcome["ok"], false,
        "{event} must fail inside the sandbox: {outcome}"
    );
    outcome["error"].as_str().unwrap_or_default().to_owned()
}

fn sockets_below(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_dir() {
            found.extend(sockets_below(&path));
        } else if std::os::unix::fs::FileTypeExt::is_socket(&kind) {
            found.push(path);
        }
    }
    found
}

async fn healthy(server: &Server) {
    let victim = server
        .req(Method::POST, "/fn/victim/secret")
        .json(&json!({"name": "still here"}))
        .send()
        .await
        .unwrap();
    let victim = Reply::read(victim).await;
    assert_eq!(
        victim.status,
        200,
        "another tenant's function still answers: {}",
        victim.text()
    );
    assert_eq!(victim.json()["hello"], "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_functions_cannot_escape_and_the_platform_stays_healthy() {
    // 127.0.0.2 is loopback on the host but not in the sandbox's NO_PROXY, so requests to it
    // go through the tenant's egress proxy, which lets through only what a rule names.
    let allowed = http_server("127.0.0.2:0", "allowed host");
    let other = http_server("127.0.0.2:0", "forbidden host");
    let server = Server::start().await;
    assert!(
        server
            .server_log()
            .contains("instance sandbox: what this machine enforces"),
        "kl server sandboxes by default and reports what it enforces:\n{}",
        server.server_log()
    );
    server.create_tenant("victim", json!({})).await;
    server
        .create_tenant("evil", json!({"egress": [format!("127.0.0.2:{allowed}")]}))
        .await;
    server
        .deploy(&fixture("py-hello"), &["--name", "secret", "--tenant", "victim"])
        .await;
    server
        .deploy(
            &fixture("sandbox_probe"),
            &[
                "--name",
                "probe",
                "--tenant",
                "evil",
                "--memory",
                "96Mi",
                "--timeout",
                "20s",
            ],
        )
        .await;

    let data = server.data_dir();
    let victim_code = data.join("artifacts/victim/secret/1/code/main.py");
    assert!(victim_code.exists(), "the victim's code is where the layout says");
    for secret in [victim_code, data.join("kl.db"), data.join("admin.token")] {
        let error = refused(&server, json!({"op": "read", "path": secret})).await;
        assert!(error.contains("No such file"), "{}: {error}", secret.display());
    }
    let error = refused(
        &server,
        json!({"op": "write", "path": data.join("artifacts/evil/probe/1/code/main.py")}),
    )
    .await;
    assert!(!error.is_empty());

    let port: u16 = server.url.rsplit(':').next().unwrap().parse().unwrap();
    refused(&server, json!({"op": "tcp", "host": "127.0.0.1", "port": port})).await;
    let sockets = sockets_below(&data.join("run"));
    assert!(
        !sockets.is_empty(),
        "instances serve on sockets under the run dir"
    );
    for socket in &sockets {
        refused(&server, json!({"op": "unix", "path": socket})).await;
    }

    let me = probe(&server, json!({"op": "identity"})).await.json();
    assert_ne!(me["uid"], 0, "the function does not run as root: {me}");
    assert_eq!(me["uid"], me["gid"]);
    assert_eq!(me["env"]["HTTPS_PROXY"], "http://127.0.0.1:3128", "{me}");

    let ok = probe(
        &server,
        json!({"op": "http_get", "url": format!("http://127.0.0.2:{allowed}/")}),
    )
    .await
    .json();
    assert_eq!(
        ok,
        json!({"ok": true, "value": "allowed host"}),
        "an allowed host is reachable"
    );
    let error = refused(
        &server,
        json!({"op": "http_get", "url": format!("http://127.0.0.2:{other}/")}),
    )
    .await;
    assert!(
        error.contains("403"),
        "the proxy refuses what no rule names: {error}"
    );
    refused(
        &server,
        json!({"op": "tcp", "host": "127.0.0.2", "port": allowed}),
    )
    .await;

    let bomb = probe(&server, json!({"op": "memory_bomb"})).await;
    assert_eq!(bomb.status, 502, "{}", bomb.text());
    assert!(bomb.text().contains("out of memory"), "{}", bomb.text());
    let described = server.kl(&["describe", "probe", "--tenant", "evil"]).await;
    assert!(
        stdout(&described).contains("Last instance failure: out of memory (limit 96 MiB)"),
        "{}",
        text(&described)
    );
    healthy(&server).await;

    let started = probe(&server, json!({"op": "fork_bomb"})).await;
    assert_eq!(started.json(), "started", "{}", started.text());
    healthy(&server).await;
    let removed = server.kl(&["rm", "probe", "--tenant", "evil"]).await;
    assert!(removed.status.success(), "{}", text(&removed));
    wait_for(
        "the fork bomb's sandbox to be gone",
        Duration::from_secs(30),
        || async {
            let usage = Reply::read(server.req(Method::GET, "/v1/tenants/evil").send().await.unwrap()).await;
            (usage.json()["usage"]["instances"] == 0).then_some(())
        },
    )
    .await;
    healthy(&server).await;
}
