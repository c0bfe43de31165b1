//! Tenant limits through the real server: rate limits (429 + Retry-After, per tenant and per
//! function), running-instance quotas (CPU/memory/instances, released when instances stop),
//! per-instance limit ranges and the storage quota.

mod support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Reply, Server, fixture, text, wait_for, with_manifest};

async fn invoke(server: &Server, tenant: &str, function: &str) -> Reply {
    let response = server
        .req(Method::POST, &format!("/fn/{tenant}/{function}"))
        .json(&json!({"n": 1}))
        .send()
        .await
        .unwrap();
    Reply::read(response).await
}

async fn tenant_usage(server: &Server, tenant: &str) -> Value {
    let reply = Reply::read(
        server
            .req(Method::GET, &format!("/v1/tenants/{tenant}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["usage"].clone()
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_and_spare_other_tenants() {
    let server = Server::start().await;
    server
        .create_tenant("flood", json!({"rateLimit": {"perSecond": 1, "burst": 2}}))
        .await;
    server
        .deploy(&fixture("node-esm"), &["--name", "f", "--tenant", "flood"])
        .await;
    server.deploy(&fixture("node-esm"), &["--name", "calm"]).await;

    for _ in 0..2 {
        let ok = invoke(&server, "flood", "f").await;
        assert_eq!(ok.status, 202, "within the burst: {}", ok.text());
    }
    let limited = invoke(&server, "flood", "f").await;
    assert_eq!(limited.status, 429, "{}", limited.text());
    assert_eq!(limited.code(), "RateLimited");
    assert!(
        limited.text().contains("tenant's rate limit"),
        "{}",
        limited.text()
    );
    let retry: u64 = limited
        .header("retry-after")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=2).contains(&retry), "retry after {retry}s at 1/s");

    let other = invoke(&server, "default", "calm").await;
    assert_eq!(
        other.status,
        202,
        "another tenant is not limited: {}",
        other.text()
    );

    wait_for("the bucket to refill", Duration::from_secs(10), || async {
        (invoke(&server, "flood", "f").await.status == 202).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_function_rate_limit_applies_within_its_tenant() {
    let server = Server::start().await;
    let src = with_manifest("node-esm", "rateLimit:\n  perSecond: 1\n  burst: 1\n");
    server.deploy(src.path(), &["--name", "slow"]).await;
    server.deploy(&fixture("node-esm"), &["--name", "fast"]).await;

    assert_eq!(invoke(&server, "default", "slow").await.status, 202);
    let limited = invoke(&server, "default", "slow").await;
    assert_eq!(limited.status, 429, "{}", limited.text());
    assert!(
        limited.text().contains("function's rate limit"),
        "{}",
        limited.text()
    );
    for _ in 0..5 {
        assert_eq!(
            invoke(&server, "default", "fast").await.status,
            202,
            "the tenant's other functions keep their own budget"
        );
    }
}

#[tokio::test]
async fn running_instance_quotas_refuse_by_name_and_free_when_instances_stop() {
    let server = Server::start().await;
    server
        .create_tenant("small", json!({"quotas": {"memory": "300Mi", "cpu": "1"}}))
        .await;
    server
        .deploy(
            &fixture("node-esm"),
            &[
                "--name", "a", "--tenant", "small", "--memory", "256Mi", "--cpu", "500m",
            ],
        )
        .await;
    let usage = tenant_usage(&server, "small").await;
    assert_eq!(usage["instances"], 1, "{usage}");
    assert_eq!(usage["memory"], "256Mi", "{usage}");
    assert_eq!(usage["cpu"], "500m", "{usage}");

    let refused = server
        .kl(&[
            "deploy",
            fixture("node-esm").to_str().unwrap(),
            "--name",
            "b",
            "--tenant",
            "small",
            "--memory",
            "128Mi",
        ])
        .await;
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains("memory quota (256Mi of 300Mi in use, 128Mi more requested)"),
        "{}",
        text(&refused)
    );

    let removed = server.kl(&["rm", "a", "--tenant", "small"]).await;
    assert!(removed.status.success(), "{}", text(&removed));
    wait_for("a's instance to stop", Duration::from_secs(30), || async {
        (tenant_usage(&server, "small").await["instances"] == 0).then_some(())
    })
    .await;
    server
        .deploy(
            &fixture("node-esm"),
            &["--name", "b", "--tenant", "small", "--memory", "128Mi"],
        )
        .await;
}

#[tokio::test]
async fn limit_ranges_fill_defaults_and_bound_functions_and_storage_is_a_hard_quota() {
    let server = Server::start().await;
    server
        .create_tenant(
            "ranged",
            json!({"limits": {"maxMemory": "128Mi", "defaultTimeout": "5s"}}),
        )
        .await;
    let too_big = server
        .kl(&[
            "deploy",
            fixture("node-esm").to_str().unwrap(),
            "--tenant",
            "ranged",
            "--memory",
            "256Mi",
        ])
        .await;
    assert!(!too_big.status.success());
    assert!(
        text(&too_big).contains("memory 256Mi is out of range: allowed 32Mi to 128Mi"),
        "{}",
        text(&too_big)
    );
    server
        .deploy(&fixture("node-esm"), &["--name", "d", "--tenant", "ranged"])
        .await;
    let out = server
        .kl(&["describe", "d", "--tenant", "ranged", "-o", "json"])
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let detail: Value = serde_json::from_slice(&out.stdout).unwrap();
    let spec = &detail["spec"];
    assert_eq!(
        spec["memoryBytes"],
        128 << 20,
        "the default is clamped into the range: {detail}"
    );
    assert_eq!(spec["timeoutMs"], 5000, "{detail}");

    let widen = Reply::read(
        server
            .req(Method::POST, "/v1/tenants")
            .json(&json!({"name": "wide", "spec": {"limits": {"maxMemory": "1Ti"}}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        widen.status,
        400,
        "a tenant cannot widen the platform: {}",
        widen.text()
    );
    assert_eq!(widen.code(), "InvalidSpec");

    server
        .create_tenant("tiny", json!({"quotas": {"storage": 64}}))
        .await;
    let stored = server
        .kl(&[
            "deploy",
            fixture("py-hello").to_str().unwrap(),
            "--tenant",
            "tiny",
        ])
        .await;
    assert!(!stored.status.success());
    assert!(text(&stored).contains("storage quota"), "{}", text(&stored));
    assert_eq!(
        tenant_usage(&server, "tiny").await["functions"],
        0,
        "a refused deploy keeps nothing"
    );
}

#[tokio::test]
async fn concurrent_scale_ups_never_overshoot_the_instances_quota() {
    let server = Server::start().await;
    server
        .create_tenant("burst", json!({"quotas": {"instances": 3}}))
        .await;
    server
        .deploy(
            &fixture("py-errors"),
            &["--name", "sleepy", "--tenant", "burst", "--timeout", "20s"],
        )
        .await;
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let call = server
            .req(Method::POST, "/fn/burst/sleepy")
            .json(&json!({"action": "sleep", "seconds": 1}))
            .send();
        calls.spawn(async move { Reply::read(call.await.unwrap()).await });
    }
    while let Some(reply) = calls.join_next().await {
        let reply = reply.unwrap();
        assert_eq!(
            reply.status,
            200,
            "requests beyond the quota wait for a slot: {}",
            reply.text()
        );
    }
    let usage = tenant_usage(&server, "burst").await;
    assert_eq!(
        usage["instances"], 3,
        "8 concurrent requests at concurrency 1 scale to the quota, not past it: {usage}"
    );
    let out = server
        .kl(&["describe", "sleepy", "--tenant", "burst", "-o", "json"])
        .await;
    let detail: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(detail["instances"].as_array().unwrap().len(), 3, "{detail}");
}

#[tokio::test]
async fn a_full_node_preempts_lower_priority_instances_and_best_effort_never_preempts() {
    let server = Server::start_with(&["--capacity-cpu", "1", "--capacity-memory", "4Gi"]).await;
    server.create_tenant("batch", json!({"priority": "low"})).await;
    server.create_tenant("web", json!({"priority": "high"})).await;
    server
        .create_tenant("spare", json!({"priority": "best-effort"}))
        .await;
    server
        .deploy(
            &fixture("node-esm"),
            &[
                "--name",
                "job",
                "--tenant",
                "batch",
                "--cpu",
                "600m",
                "--timeout",
                "2s",
            ],
        )
        .await;
    assert_eq!(tenant_usage(&server, "batch").await["instances"], 1);

    let refused = server
        .kl(&[
            "deploy",
            fixture("node-esm").to_str().unwrap(),
            "--name",
            "extra",
            "--tenant",
            "spare",
            "--cpu",
            "600m",
        ])
        .await;
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains("best-effort work never preempts"),
        "{}",
        text(&refused)
    );
    assert_eq!(
        tenant_usage(&server, "batch").await["instances"],
        1,
        "nothing was preempted"
    );

    let above = server
        .kl(&[
            "deploy",
            fixture("node-esm").to_str().unwrap(),
            "--tenant",
            "batch",
            "--priority",
            "high",
        ])
        .await;
    assert!(!above.status.success());
    assert!(
        text(&above).contains("above the tenant's class low"),
        "{}",
        text(&above)
    );

    server
        .deploy(
            &fixture("node-esm"),
            &["--name", "site", "--tenant", "web", "--cpu", "600m"],
        )
        .await;
    assert_eq!(
        tenant_usage(&server, "batch").await["instances"],
        0,
        "the high-priority start preempted the low one"
    );
    assert!(
        server
            .server_log()
            .contains("preempting an instance to make room")
    );
    let site = invoke(&server, "web", "site").await;
    assert_eq!(site.status, 202, "{}", site.text());

    let job = invoke(&server, "batch", "job").await;
    assert_eq!(
        job.status,
        503,
        "the low class cannot preempt back: {}",
        job.text()
    );
    assert_eq!(job.code(), "NoCapacity");
    assert!(!job.header("retry-after").is_empty());
}
