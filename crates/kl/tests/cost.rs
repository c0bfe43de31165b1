//! Metering and cost through the real server (DESIGN §6, issue 6): billed CPU and memory
//! against the test's own reading of the instance's cgroup, exact invocation counts under
//! concurrent load, a restart without gap or double count, reports whose days add up to the
//! month and whose charges plus idle make the total, budgets notified once across a restart,
//! and the hard cap's 429.
//!
//! The instance figures need the sandbox (its cgroup is what is metered and what the test
//! reads); where the machine cannot sandbox, the server refuses to start and so do these tests.

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kl_core::Money;
use reqwest::Method;
use serde_json::{Value, json};
use support::{Reply, Server, stdout, text, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A handler that burns CPU, holds memory, or does nothing, as asked.
const HANDLER: &str = r#"
import time

_held = []


def handler(event, context=None):
    kind = event.get("kind")
    if kind == "spin":
        end = time.process_time() + event["seconds"]
        n = 0
        while time.process_time() < end:
            n += 1
        return {"spun": n}
    if kind == "hold":
        _held.append(b"\x01" * (event["mb"] << 20))
        return {"held": len(_held)}
    return {"ok": True}
"#;

/// One instance, kept, with room for every concurrent request.
const MANIFEST: &str =
    "runtime: python\nmemory: 256Mi\ncpu: 1000m\nconcurrency: 64\nminScale: 1\nmaxScale: 1\ntimeout: 60s\n";

fn function_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.py"), HANDLER).unwrap();
    std::fs::write(dir.path().join("kl.yaml"), MANIFEST).unwrap();
    dir
}

async fn call(server: &Server, tenant: &str, body: Value) -> Reply {
    let response = server
        .req(Method::POST, &format!("/fn/{tenant}/meter"))
        .json(&body)
        .send()
        .await
        .unwrap();
    Reply::read(response).await
}

/// `GET /v1/cost/report` with `query`.
async fn report(server: &Server, query: &[(&str, &str)]) -> Value {
    let reply = Reply::read(
        server
            .req(Method::GET, "/v1/cost/report")
            .query(query)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

/// A window in Unix seconds.
fn window(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    format!("{},{}", from.timestamp(), to.timestamp())
}

/// The quantities of function `meter` of tenant `default` over `window`, if it has a row.
async fn metered(server: &Server, window: &str) -> Option<Value> {
    let report = report(
        server,
        &[
            ("window", window),
            ("aggregate", "function"),
            ("tenant", "default"),
        ],
    )
    .await;
    report["rows"]
        .as_array()?
        .iter()
        .find(|r| r["function"] == "meter")
        .map(|r| r["quantities"].clone())
}

fn number(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"))
}

/// A file of the instance's cgroup (v1 or v2), read by the test itself.
fn cgroup_file(instance: &str, controller: &str, v1: &str, v2: &str) -> PathBuf {
    let v1 = Path::new("/sys/fs/cgroup")
        .join(controller)
        .join("kl")
        .join(instance)
        .join(v1);
    if v1.exists() {
        return v1;
    }
    Path::new("/sys/fs/cgroup/kl").join(instance).join(v2)
}

/// The instance's CPU counter in seconds, from its cgroup.
fn cgroup_cpu_seconds(instance: &str) -> f64 {
    let v1 = cgroup_file(instance, "cpuacct", "cpuacct.usage", "cpu.stat");
    let text = std::fs::read_to_string(&v1).unwrap_or_else(|e| panic!("{}: {e}", v1.display()));
    if v1.ends_with("cpuacct.usage") {
        text.trim().parse::<f64>().unwrap() / 1e9
    } else {
        let usec = text
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .expect("usage_usec");
        usec.trim().parse::<f64>().unwrap() / 1e6
    }
}

/// The instance's memory in bytes now, from its cgroup.
fn cgroup_memory_bytes(instance: &str) -> f64 {
    let path = cgroup_file(instance, "memory", "memory.usage_in_bytes", "memory.current");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

async fn instance_id(server: &Server) -> String {
    wait_for("the instance to run", Duration::from_secs(60), || async {
        let detail: Value = server
            .req(Method::GET, "/v1/tenants/default/functions/meter")
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        detail["instances"][0]["id"].as_str().map(str::to_owned)
    })
    .await
}

fn within(what: &str, billed: f64, reference: f64, tolerance: f64) {
    let error = (billed - reference).abs() / reference;
    eprintln!(
        "{what}: billed {billed:.6}, measured {reference:.6}, error {:.4} %",
        error * 100.0
    );
    assert!(
        error <= tolerance,
        "{what}: billed {billed} vs measured {reference}: {:.3} % off",
        error * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billed_cpu_and_memory_match_the_cgroup_and_counts_survive_a_restart() {
    let mut server = Server::start_with(&["--meter-interval", "1s"]).await;
    let began = Utc::now() - chrono::Duration::minutes(1);
    let all = window(began, began + chrono::Duration::days(1));
    let src = function_dir();
    let out = server.deploy(src.path(), &["--name", "meter"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let instance = instance_id(&server).await;

    let hold = call(&server, "default", json!({"kind": "hold", "mb": 64})).await;
    assert_eq!(hold.status, 200, "{}", hold.text());
    let spin = call(&server, "default", json!({"kind": "spin", "seconds": 1.5})).await;
    assert_eq!(spin.status, 200, "{}", spin.text());

    // CPU: the instance is idle now, so its counter barely moves. A metered total at least the
    // counter read before is from a reading after it; the counter read after bounds it above.
    // (Both go through floats, hours and seconds: equal counts may differ in the last bits.)
    const ROUNDING: f64 = 1e-6;
    let before = cgroup_cpu_seconds(&instance);
    let billed = wait_for(
        "CPU metered up to the cgroup's count",
        Duration::from_secs(30),
        || async {
            let q = metered(&server, &all).await?;
            let used = number(&q["cpuCoreHoursUsed"]) * 3600.0;
            (used + ROUNDING >= before).then_some(used)
        },
    )
    .await;
    let after = cgroup_cpu_seconds(&instance);
    assert!(
        billed <= after + ROUNDING,
        "billed {billed} s beyond the cgroup's {after} s"
    );
    assert!(billed >= 1.5, "the spin alone used 1.5 s of CPU; billed {billed}");
    within("CPU seconds", billed, after, 0.01);
    let q = metered(&server, &all).await.unwrap();
    assert!(
        number(&q["buildMinutes"]) > 0.0,
        "the build's CPU time (its precompile step) is metered: {q}"
    );

    // Memory: the test integrates the cgroup's own figure over one whole minute, sampled every
    // 100 ms, and compares it with the GB-seconds metered for that minute.
    let now = Utc::now();
    let minute = DateTime::from_timestamp((now.timestamp() / 60 + 1) * 60, 0).unwrap();
    let end = minute + chrono::Duration::minutes(1);
    let mut samples: Vec<(f64, f64)> = Vec::new();
    while Utc::now() < end + chrono::Duration::milliseconds(200) {
        let t = (Utc::now() - minute).num_microseconds().unwrap() as f64 / 1e6;
        samples.push((t, cgroup_memory_bytes(&instance)));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut byte_seconds = 0.0;
    for pair in samples.windows(2) {
        let ((t0, m0), (t1, m1)) = (pair[0], pair[1]);
        let (a, b) = (t0.clamp(0.0, 60.0), t1.clamp(0.0, 60.0));
        byte_seconds += (b - a) * (m0 + m1) / 2.0;
    }
    let next = window(end, end + chrono::Duration::minutes(1));
    wait_for("a reading after the minute", Duration::from_secs(30), || async {
        metered(&server, &next)
            .await
            .filter(|q| number(&q["memoryGbHoursUsed"]) > 0.0)
    })
    .await;
    let q = metered(&server, &window(minute, end))
        .await
        .expect("the minute is metered");
    let gib_seconds = number(&q["memoryGbHoursUsed"]) * 3600.0;
    within(
        "memory GiB-seconds",
        gib_seconds,
        byte_seconds / f64::from(1u32 << 30),
        0.01,
    );

    // Invocations: exact under concurrent load.
    let calls = (0..40).map(|_| {
        let (http, url, token) = (server.http.clone(), server.url.clone(), server.token());
        tokio::spawn(async move {
            http.post(format!("{url}/fn/default/meter"))
                .bearer_auth(token)
                .json(&json!({}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    });
    for call in join_all(calls).await {
        assert_eq!(call, 200);
    }
    let expected = 42;
    wait_for("every invocation counted", Duration::from_secs(30), || async {
        let q = metered(&server, &all).await?;
        (q["requests"] == expected).then_some(())
    })
    .await;

    // Restart: the shutdown meters the instance one last time; nothing is counted twice.
    let cpu_before_stop = cgroup_cpu_seconds(&instance);
    server.restart().await;
    let q = metered(&server, &all).await.expect("usage survives the restart");
    assert_eq!(q["requests"], expected, "no invocation counted twice or lost");
    let cpu = number(&q["cpuCoreHoursUsed"]) * 3600.0;
    within("CPU seconds across the restart", cpu, cpu_before_stop, 0.01);
    let again = call(&server, "default", json!({})).await;
    assert_eq!(again.status, 200, "{}", again.text());
    wait_for("the new invocation counted", Duration::from_secs(30), || async {
        let q = metered(&server, &all).await?;
        (q["requests"] == expected + 1).then_some(())
    })
    .await;
}

async fn join_all<T: Send + 'static>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<Result<T, reqwest::Error>>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap().unwrap());
    }
    out
}

/// A webhook receiver: collects the JSON bodies POSTed to it, answers 200.
async fn webhook() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let body = loop {
                let Ok(n) = stream.read(&mut chunk).await else {
                    break None;
                };
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).into_owned();
                let Some((head, body)) = text.split_once("\r\n\r\n") else {
                    continue;
                };
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    break Some(body[..length].to_owned());
                }
            };
            if let Some(body) = body {
                sink.lock().unwrap().push(serde_json::from_str(&body).unwrap());
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        }
    });
    (url, received)
}

fn money(v: &Value) -> Money {
    v.as_str()
        .unwrap_or_else(|| panic!("{v} is not money"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_alert_once_across_a_restart_cap_with_429_and_reports_add_up() {
    let mut server = Server::start_with(&["--meter-interval", "1s"]).await;
    let (url, received) = webhook().await;
    // A running instance reserves a core, about 9 micro-dollars a second: the budget is spent
    // within seconds.
    let created = server
        .kl(&[
            "tenant",
            "create",
            "acme",
            "--budget",
            "0.00002",
            "--budget-thresholds",
            "50,100",
            "--budget-hard-cap",
            "true",
            "--budget-webhook",
            &url,
        ])
        .await;
    assert!(created.status.success(), "{}", text(&created));
    let src = function_dir();
    let out = server
        .deploy(src.path(), &["--name", "meter", "--tenant", "acme"])
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let ok = call(&server, "acme", json!({})).await;
    assert_eq!(ok.status, 200, "the running instance serves: {}", ok.text());

    let thresholds = || {
        let mut t: Vec<u64> = received
            .lock()
            .unwrap()
            .iter()
            .map(|alert| alert["threshold"].as_u64().unwrap())
            .collect();
        t.sort_unstable();
        t
    };
    wait_for("both thresholds notified", Duration::from_secs(60), || async {
        (thresholds() == [50, 100]).then_some(())
    })
    .await;
    let alert = received.lock().unwrap()[0].clone();
    assert_eq!(alert["tenant"], "acme");
    assert_eq!(alert["period"], "month");

    // After a restart the instances are gone; a new one would be a scale-up: refused.
    server.restart().await;
    let refused = wait_for(
        "the hard cap to refuse a start",
        Duration::from_secs(30),
        || async {
            let reply = call(&server, "acme", json!({})).await;
            (reply.status == 429).then_some(reply)
        },
    )
    .await;
    assert_eq!(refused.code(), "BudgetExceeded", "{}", refused.text());
    assert!(refused.text().contains("budget"), "{}", refused.text());
    // Two more ticks store usage (the source's stored bytes accrue on each), so at least one
    // budget check ran whole after the restart; each threshold stays notified once.
    let stored = || async {
        let r = report(
            &server,
            &[("window", "month"), ("tenant", "acme"), ("aggregate", "tenant")],
        )
        .await;
        number(&r["rows"][0]["quantities"]["storageGbMonths"])
    };
    for _ in 0..2 {
        let seen = stored().await;
        wait_for("a metering tick", Duration::from_secs(30), || async {
            (stored().await > seen).then_some(())
        })
        .await;
    }
    assert_eq!(
        thresholds(),
        [50, 100],
        "notified once per period, across the restart"
    );

    // Conservation: charged + idle = total, per resource, through the API.
    let month = report(&server, &[("window", "month"), ("aggregate", "tenant")]).await;
    for resource in [
        "cpu", "memory", "requests", "duration", "build", "storage", "total",
    ] {
        let charged = money(&month["charged"][resource]);
        let idle = money(&month["idle"][resource]);
        let total = money(&month["total"][resource]);
        assert_eq!(
            charged.checked_add(idle),
            Some(total),
            "{resource}: {charged} + {idle} != {total}"
        );
    }
    assert!(
        money(&month["idle"]["cpu"]) > Money::ZERO,
        "idle capacity is reported: {month}"
    );
    assert!(
        month["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["idle"] == true)
    );

    // The days add up to the month.
    let days = report(
        &server,
        &[("window", "month"), ("aggregate", "tenant"), ("step", "day")],
    )
    .await;
    let mut sum = Money::ZERO;
    for row in days["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["idle"] != true)
    {
        sum = sum.checked_add(money(&row["cost"]["total"])).unwrap();
    }
    assert_eq!(sum, money(&days["charged"]["total"]));
    assert_eq!(
        days["charged"], month["charged"],
        "the days' charges are the month's"
    );

    // A tenant's token sees its own tenant only, whatever it asks.
    let viewer = server
        .kl(&["token", "create", "--role", "viewer", "--tenant", "acme", "-q"])
        .await;
    assert!(viewer.status.success(), "{}", text(&viewer));
    let viewer = stdout(&viewer).trim().to_owned();
    let own = Reply::read(
        server
            .req_as(Some(&viewer), Method::GET, "/v1/cost/report?window=month")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(own.status, 200, "{}", own.text());
    assert_eq!(own.json()["tenant"], "acme", "forced to its tenant");
    assert!(
        own.json()["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["idle"] != true),
        "no platform-wide idle rows for a tenant"
    );
    let other = Reply::read(
        server
            .req_as(Some(&viewer), Method::GET, "/v1/cost/report?tenant=default")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(other.status, 404, "another tenant's costs: {}", other.text());

    // The CLI renders the same report.
    let csv = server
        .kl(&[
            "cost", "report", "--period", "month", "--tenant", "acme", "-o", "csv",
        ])
        .await;
    assert!(csv.status.success(), "{}", text(&csv));
    let csv = stdout(&csv);
    assert!(csv.starts_with("start,tenant,function,"), "{csv}");
    assert!(csv.lines().any(|l| l.contains(",acme,meter,")), "{csv}");
    let top = server.kl(&["cost", "top", "-n", "1"]).await;
    assert!(top.status.success(), "{}", text(&top));
    assert!(stdout(&top).contains("meter"), "{}", stdout(&top));
}
