//! The activator: requests that find every instance slot taken wait in a bounded queue and
//! are served first in, first out; a full queue answers 503 at once.

mod support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Reply, Server, fixture, text, wait_for, with_manifest};

async fn queued(server: &Server) -> u64 {
    let out = server.kl(&["describe", "one", "-o", "json"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let detail: Value = serde_json::from_slice(&out.stdout).unwrap();
    detail["queued"].as_u64().expect("describe shows queued requests")
}

fn call(server: &Server, event: Value) -> tokio::task::JoinHandle<(Reply, tokio::time::Instant)> {
    let request = server.req(Method::POST, "/fn/default/one").json(&event).send();
    tokio::spawn(async move {
        let reply = Reply::read(request.await.expect("request sent")).await;
        (reply, tokio::time::Instant::now())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_requests_are_served_in_arrival_order_and_the_queue_is_bounded() {
    let server = Server::start_with(&["--max-queue", "3"]).await;
    server
        .deploy(
            &fixture("py-errors"),
            &[
                "--name",
                "one",
                "--concurrency",
                "1",
                "--max-scale",
                "1",
                "--timeout",
                "30s",
            ],
        )
        .await;
    let busy = call(&server, json!({"action": "sleep", "seconds": 1}));
    let mut waiting = Vec::new();
    for n in 1..=3u64 {
        // Each joins the queue only after the previous one did: arrival order is known.
        waiting.push(call(&server, json!({"action": "sleep", "seconds": 0.2})));
        wait_for("the request to queue", Duration::from_secs(20), || async {
            (queued(&server).await == n).then_some(())
        })
        .await;
    }
    let full = call(&server, json!({"action": "echo"})).await.unwrap().0;
    assert_eq!(
        full.status,
        503,
        "a fourth waiter finds the queue full: {}",
        full.text()
    );
    assert_eq!(full.code(), "NoCapacity");
    assert!(full.text().contains("3 requests already wait"), "{}", full.text());
    assert!(!full.header("retry-after").is_empty());

    assert_eq!(busy.await.unwrap().0.status, 200);
    let mut finished = Vec::new();
    for handle in waiting {
        let (reply, at) = handle.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        finished.push(at);
    }
    assert!(
        finished.windows(2).all(|w| w[0] < w[1]),
        "one instance serves the queue first in, first out"
    );
    assert_eq!(queued(&server).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_backs_off_and_shows_in_describe() {
    // Without the sandbox the flag file in the test's temp dir is visible to the function.
    let server = Server::start_with(&["--isolation", "none", "--idle-timeout", "1s"]).await;
    let flag = server.dir.path().join("crash-flag");
    let env = format!("CRASH_FLAG={}", flag.display());
    server
        .deploy(&fixture("py-crashloop"), &["--name", "flaky", "--env", &env])
        .await;
    let invoke = || async {
        let response = server
            .req(Method::POST, "/fn/default/flaky")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        Reply::read(response).await
    };
    assert_eq!(invoke().await.status, 200);
    std::fs::write(&flag, "").unwrap();
    wait_for("the idle instance to stop", Duration::from_secs(30), || async {
        let out = server.kl(&["describe", "flaky", "-o", "json"]).await;
        let detail: Value = serde_json::from_slice(&out.stdout).unwrap();
        detail["instances"].as_array().unwrap().is_empty().then_some(())
    })
    .await;

    let failed = invoke().await;
    assert_eq!(failed.status, 502, "{}", failed.text());
    assert!(
        failed.text().contains("the crash flag is set"),
        "{}",
        failed.text()
    );
    // The next start waits for the back-off (1 s, doubling): requests meanwhile get 503.
    let backing_off = wait_for(
        "a request refused by the back-off",
        Duration::from_secs(60),
        || async {
            let reply = invoke().await;
            assert!([502, 503].contains(&reply.status), "{}", reply.text());
            (reply.status == 503).then_some(reply)
        },
    )
    .await;
    assert_eq!(backing_off.code(), "FunctionCrashLoop");
    assert!(
        backing_off.text().contains("attempts in a row"),
        "{}",
        backing_off.text()
    );
    assert!(!backing_off.header("retry-after").is_empty());
    let described = server.kl(&["describe", "flaky"]).await;
    let shown = support::stdout(&described);
    assert!(
        shown.contains("CRASH LOOP: ") && shown.contains("failed starts in a row"),
        "{shown}"
    );
    assert!(
        shown.contains("the crash flag is set"),
        "the last log lines are shown: {shown}"
    );

    std::fs::remove_file(&flag).unwrap();
    wait_for(
        "the back-off to end and a start to succeed",
        Duration::from_secs(30),
        || async { (invoke().await.status == 200).then_some(()) },
    )
    .await;
    let out = server.kl(&["describe", "flaky", "-o", "json"]).await;
    let detail: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        detail.get("crashLoop").is_none(),
        "a good start ends the crash loop: {detail}"
    );
}

async fn detail(server: &Server, function: &str) -> Value {
    let out = server.kl(&["describe", function, "-o", "json"]).await;
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_autoscaler_scales_to_zero_after_the_grace_period_and_keeps_min_scale() {
    let server = Server::start().await;
    // Knative's shortest windows, so the test takes seconds, not minutes.
    let fast = "autoscaling:\n  stableWindow: 6s\n  scaleToZeroGracePeriod: 6s\n";
    let zero = with_manifest("node-esm", fast);
    let kept = with_manifest("node-esm", &format!("minScale: 1\n{fast}"));
    server.deploy(zero.path(), &["--name", "zero"]).await;
    server.deploy(kept.path(), &["--name", "kept"]).await;
    let started = tokio::time::Instant::now();
    for name in ["zero", "kept"] {
        let reply = Reply::read(
            server
                .req(Method::POST, &format!("/fn/default/{name}"))
                .json(&json!({}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(reply.status, 202, "{}", reply.text());
    }
    wait_for("zero to scale to zero", Duration::from_secs(60), || async {
        detail(&server, "zero").await["instances"]
            .as_array()
            .unwrap()
            .is_empty()
            .then_some(())
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(6),
        "not before the stable window and the grace period have passed"
    );
    let kept = detail(&server, "kept").await;
    assert_eq!(
        kept["instances"].as_array().unwrap().len(),
        1,
        "min-scale keeps one: {kept}"
    );
    assert_eq!(kept["desired"], 1, "{kept}");
    let cold = Reply::read(
        server
            .req(Method::POST, "/fn/default/zero")
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(cold.status, 202, "from zero again: {}", cold.text());
    assert_eq!(cold.header("x-kl-cold-start"), "true");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_demand_scales_out_and_no_request_is_lost() {
    let server = Server::start().await;
    server
        .deploy(
            &fixture("py-errors"),
            &[
                "--name",
                "one",
                "--concurrency",
                "1",
                "--max-scale",
                "6",
                "--timeout",
                "30s",
            ],
        )
        .await;
    let mut calls = Vec::new();
    for _ in 0..12 {
        calls.push(call(&server, json!({"action": "sleep", "seconds": 1})));
    }
    let mut most = 0;
    for handle in calls {
        let (reply, _) = handle.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        let d = detail(&server, "one").await;
        most = most.max(d["instances"].as_array().unwrap().len());
    }
    assert!(
        most > 1,
        "demand beyond one instance scales out (saw at most {most})"
    );
    assert!(most <= 6, "never past max-scale (saw {most})");
}
