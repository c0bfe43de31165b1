//! Eventing through the real `kl` binary and a real server, each delivering scenario run on
//! both brokers (the embedded one and RabbitMQ): CloudEvents ingress in its three modes and
//! its refusals, idempotency, trigger filters, retries and dead letters, schedules, async
//! invocation, command events, the live tail, and no accepted event lost to a SIGKILL.
//!
//! Functions are the `py-events` fixture deployed under several names: it logs every request
//! as `EVENT {json}` (its CloudEvent attributes, content type and data), and the tests read
//! those lines back through `kl logs`: a sandboxed function cannot write host files.

mod support;

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Bus, Reply, Server, fixture, stdout, text, wait_for};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Longest wait for something that must happen (a loaded 2-core box, sandboxed instances).
const PATIENCE: Duration = Duration::from_secs(90);

/// Defines one test per scenario and broker; a scenario is an `async fn(Bus)`.
macro_rules! on_both_buses {
    ($($scenario:ident),+ $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::Bus::Embedded).await
                }
            )+
        }
        mod rabbitmq {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let Some(bus) = super::Bus::amqp() else { return };
                    super::$scenario(bus).await
                }
            )+
        }
    };
}

on_both_buses!(
    events_in_every_mode_reach_functions_in_binary_mode,
    refused_events_name_the_attribute_and_queue_nothing,
    a_repeated_source_and_id_is_delivered_once,
    filters_select_the_triggers_that_match,
    failures_are_retried_then_dead_lettered_and_replayed_once,
    a_schedule_trigger_pings_its_function,
    async_invocations_report_their_outcome_as_events,
    command_events_build_roll_back_and_delete,
    accepted_events_survive_a_sigkill_during_delivery,
);

async fn start(bus: &Bus) -> Server {
    let flags = bus.flags();
    Server::start_with(&flags.iter().map(String::as_str).collect::<Vec<_>>()).await
}

/// The `py-events` fixture deployed as `name`.
async fn deploy(server: &Server, name: &str, flags: &[&str]) {
    let mut args = vec!["--name", name];
    args.extend_from_slice(flags);
    server.deploy(&fixture("py-events"), &args).await;
}

/// Every request `function` logged, oldest first.
async fn received(server: &Server, function: &str) -> Vec<Value> {
    let log = server.kl_ok(&["logs", function, "--tail", "1000000"]).await;
    log.lines()
        .filter_map(|l| l.split_once(" EVENT "))
        .map(|(_, record)| serde_json::from_str(record).unwrap_or_else(|e| panic!("{e}: {record}")))
        .collect()
}

fn id(record: &Value) -> &str {
    record["ce"]["id"].as_str().unwrap_or_default()
}

fn count(records: &[Value], wanted: &str) -> usize {
    records.iter().filter(|r| id(r) == wanted).count()
}

/// Waits until `function` logged every id of `ids`; returns all it logged.
async fn wait_ids(server: &Server, function: &str, ids: &[&str]) -> Vec<Value> {
    let what = format!("{function} to receive {ids:?}");
    wait_for(&what, PATIENCE, || async {
        let records = received(server, function).await;
        ids.iter().all(|i| count(&records, i) > 0).then_some(records)
    })
    .await
}

/// POSTs to the default tenant's ingress.
async fn post(server: &Server, headers: &[(&str, &str)], body: impl Into<reqwest::Body>) -> Reply {
    post_as(server, None, headers, body).await
}

async fn post_as(
    server: &Server,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> Reply {
    let token = token.map(str::to_owned).unwrap_or_else(|| server.token());
    let mut request = server.req_as(Some(&token), Method::POST, "/v1/tenants/default/events");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    Reply::read(request.body(body).send().await.expect("request sent")).await
}

/// The headers of a binary-mode event.
fn binary<'a>(id: &'a str, ty: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("ce-specversion", "1.0"),
        ("ce-id", id),
        ("ce-source", "/tests"),
        ("ce-type", ty),
    ]
}

/// Sends one binary-mode event that must be accepted.
async fn send(server: &Server, headers: &[(&str, &str)], body: &'static str) {
    let reply = post(server, headers, body).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
}

fn assert_accepted(reply: &Reply, accepted: usize, duplicates: usize) {
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({"accepted": accepted, "duplicates": duplicates}),
        "{}",
        reply.text()
    );
}

async fn events_in_every_mode_reach_functions_in_binary_mode(bus: Bus) {
    let server = start(&bus).await;
    deploy(&server, "echo", &[]).await;
    server
        .kl_ok(&[
            "trigger",
            "create",
            "examples",
            "--function",
            "echo",
            "--filter",
            "type=prefix:com.example.",
        ])
        .await;

    let mut headers = binary("bin-1", "com.example.binary");
    headers.extend([
        ("ce-subject", "photos/cat.png"),
        ("ce-time", "2024-05-01T10:00:00Z"),
        ("ce-myext", "Euro%20%E2%82%AC"),
        ("content-type", "application/json"),
    ]);
    assert_accepted(&post(&server, &headers, r#"{"mode": "binary"}"#).await, 1, 0);

    let structured = json!({"specversion": "1.0", "id": "str-1", "source": "/tests/structured",
        "type": "com.example.structured", "datacontenttype": "text/plain", "data": "hello", "region": "eu"});
    let ct = [("content-type", "application/cloudevents+json; charset=utf-8")];
    assert_accepted(&post(&server, &ct, structured.to_string()).await, 1, 0);

    let batch = json!([
        {"specversion": "1.0", "id": "bat-1", "source": "/tests/batch", "type": "com.example.batch", "data": {"n": 1}},
        {"specversion": "1.0", "id": "bat-2", "source": "/tests/batch", "type": "com.example.batch",
         "datacontenttype": "application/json", "data": {"n": 2}},
    ]);
    let ct = [("content-type", "application/cloudevents-batch+json")];
    assert_accepted(&post(&server, &ct, batch.to_string()).await, 2, 0);
    let out = server
        .kl_ok(&[
            "events",
            "send",
            "--type",
            "com.example.cli",
            "--id",
            "cli-1",
            "--data",
            "{\"via\": \"cli\"}",
            "--ext",
            "region=us",
        ])
        .await;
    assert_eq!(out, "cli-1 accepted\n");

    let records = wait_ids(&server, "echo", &["bin-1", "str-1", "bat-1", "bat-2", "cli-1"]).await;
    let by_id = |wanted: &str| records.iter().find(|r| id(r) == wanted).unwrap().clone();
    let bin = by_id("bin-1");
    assert_eq!(
        bin["ce"],
        json!({"specversion": "1.0", "id": "bin-1", "source": "/tests", "type": "com.example.binary",
               "subject": "photos/cat.png", "time": "2024-05-01T10:00:00Z", "myext": "Euro €"}),
        "binary mode: every attribute as a ce-* header, percent-decoded by the shim"
    );
    assert_eq!(bin["contentType"], "application/json");
    assert_eq!(bin["data"], json!({"mode": "binary"}));
    let structured = by_id("str-1");
    assert_eq!(
        structured["ce"]["region"], "eu",
        "extensions travel as ce-* headers"
    );
    assert_eq!(structured["ce"]["source"], "/tests/structured");
    assert!(structured["ce"].get("datacontenttype").is_none(), "{structured}");
    assert!(
        structured["contentType"]
            .as_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(structured["data"], "hello");
    assert_eq!(by_id("bat-1")["contentType"], "application/json");
    assert_eq!(by_id("bat-2")["data"], json!({"n": 2}));
    assert_eq!(by_id("cli-1")["ce"]["region"], "us");
    assert_eq!(by_id("cli-1")["data"], json!({"via": "cli"}));
    for i in ["bin-1", "str-1", "bat-1", "bat-2", "cli-1"] {
        assert_eq!(count(&records, i), 1, "{i} delivered once");
    }
}

async fn refused_events_name_the_attribute_and_queue_nothing(bus: Bus) {
    let server = start(&bus).await;
    deploy(&server, "echo", &[]).await;
    server
        .kl_ok(&[
            "trigger",
            "create",
            "everything",
            "--function",
            "echo",
            "--filter",
            "source=/tests",
        ])
        .await;

    let refused = |reply: Reply, status: u16, code: &str, mentions: &[&str]| {
        assert_eq!(reply.status, status, "{}", reply.text());
        assert_eq!(reply.code(), code, "{}", reply.text());
        let message = reply.json()["error"]["message"].as_str().unwrap().to_owned();
        for m in mentions {
            assert!(message.contains(m), "{message:?} should mention {m:?}");
        }
    };
    let mut no_id = binary("x", "com.example.t");
    no_id.retain(|(k, _)| *k != "ce-id");
    refused(
        post(&server, &no_id, "").await,
        400,
        "InvalidEvent",
        &["\"id\"", "missing"],
    );
    let mut bad_time = binary("bad-time", "com.example.t");
    bad_time.push(("ce-time", "yesterday"));
    refused(
        post(&server, &bad_time, "").await,
        400,
        "InvalidEvent",
        &["\"time\""],
    );
    let mut bad_ext = binary("bad-ext", "com.example.t");
    bad_ext.push(("ce-my_ext", "x"));
    refused(
        post(&server, &bad_ext, "").await,
        400,
        "InvalidEvent",
        &["\"my_ext\""],
    );
    let both = json!({"specversion": "1.0", "id": "both", "source": "/tests", "type": "t",
        "data": "x", "data_base64": "eA=="});
    let ct = [("content-type", "application/cloudevents+json")];
    refused(
        post(&server, &ct, both.to_string()).await,
        400,
        "InvalidEvent",
        &["data"],
    );
    let batch = json!([
        {"specversion": "1.0", "id": "batch-good", "source": "/tests", "type": "t"},
        {"specversion": "1.0", "id": "batch-bad", "source": "/tests", "type": "t", "time": "soon"},
    ]);
    let ct = [("content-type", "application/cloudevents-batch+json")];
    refused(
        post(&server, &ct, batch.to_string()).await,
        400,
        "InvalidEvent",
        &["event 1 of the batch", "\"time\""],
    );
    let plain = [("content-type", "application/json")];
    refused(
        post(&server, &plain, "{}").await,
        400,
        "NotACloudEvent",
        &["ce-specversion"],
    );
    let mut big = binary("too-big", "com.example.t");
    big.push(("content-type", "application/octet-stream"));
    refused(
        post(&server, &big, vec![b'x'; (1 << 20) + 1]).await,
        413,
        "EventTooLarge",
        &["limit of 1048576 bytes"],
    );

    // Sent after every refusal: once it is delivered, a refused event would have been too.
    send(&server, &binary("marker", "com.example.t"), "").await;
    let records = wait_ids(&server, "echo", &["marker"]).await;
    let ids: Vec<&str> = records.iter().map(id).collect();
    assert_eq!(
        ids,
        ["marker"],
        "nothing refused was queued, the batch's good event neither"
    );
}

async fn a_repeated_source_and_id_is_delivered_once(bus: Bus) {
    let server = start(&bus).await;
    deploy(&server, "echo", &[]).await;
    server
        .kl_ok(&[
            "trigger",
            "create",
            "dups",
            "--function",
            "echo",
            "--filter",
            "type=com.example.dup",
        ])
        .await;
    let event = binary("dup-1", "com.example.dup");
    assert_accepted(&post(&server, &event, "").await, 1, 0);
    assert_accepted(&post(&server, &event, "").await, 0, 1);
    let out = server
        .kl_ok(&[
            "events",
            "send",
            "--type",
            "com.example.dup",
            "--source",
            "/tests",
            "--id",
            "dup-1",
        ])
        .await;
    assert!(out.contains("duplicate"), "{out}");
    // The same id from another source is another event.
    let mut other = binary("dup-1", "com.example.dup");
    other[2] = ("ce-source", "/elsewhere");
    assert_accepted(&post(&server, &other, "").await, 1, 0);
    // Repeats within one batch, and many racing requests, count once.
    let batch = json!([
        {"specversion": "1.0", "id": "dup-2", "source": "/tests", "type": "com.example.dup"},
        {"specversion": "1.0", "id": "dup-2", "source": "/tests", "type": "com.example.dup"},
    ]);
    let ct = [("content-type", "application/cloudevents-batch+json")];
    assert_accepted(&post(&server, &ct, batch.to_string()).await, 1, 1);
    let dup_3 = binary("dup-3", "com.example.dup");
    let racing = (0..8).map(|_| post(&server, &dup_3, ""));
    let replies = futures_util::future::join_all(racing).await;
    let accepted: u64 = replies
        .iter()
        .map(|r| r.json()["accepted"].as_u64().unwrap())
        .sum();
    assert_eq!(accepted, 1, "exactly one of 8 racing requests is accepted");

    send(&server, &binary("dup-marker", "com.example.dup"), "").await;
    let records = wait_ids(&server, "echo", &["dup-1", "dup-2", "dup-3", "dup-marker"]).await;
    let from_tests = |wanted: &str| {
        records
            .iter()
            .filter(|r| id(r) == wanted && r["ce"]["source"] == "/tests")
            .count()
    };
    assert_eq!(
        from_tests("dup-1"),
        1,
        "dup-1 from /tests, sent three times, delivered once"
    );
    assert_eq!(count(&records, "dup-1"), 2, "and once from /elsewhere");
    assert_eq!(count(&records, "dup-2"), 1);
    assert_eq!(count(&records, "dup-3"), 1);
}

async fn filters_select_the_triggers_that_match(bus: Bus) {
    let server = start(&bus).await;
    let triggers = [
        ("exact", "type=com.acme.order.created"),
        ("prefix", "source=prefix:/shop/eu"),
        ("suffix", "subject=suffix:.png"),
        ("ext", "region=eu-west-1"),
    ];
    for (name, _) in &triggers {
        deploy(&server, &format!("f-{name}"), &[]).await;
    }
    for (name, filter) in &triggers {
        let function = format!("f-{name}");
        let mut args = vec![
            "trigger",
            "create",
            name,
            "--function",
            &function,
            "--filter",
            filter,
        ];
        if *name == "ext" {
            args.extend(["--filter", "type=prefix:com.acme."]);
        }
        server.kl_ok(&args).await;
    }
    let listed = server.kl_ok(&["trigger", "ls"]).await;
    assert!(
        listed.contains("region=eu-west-1 type=prefix:com.acme."),
        "{listed}"
    );

    let event = |id: &'static str,
                 ty: &'static str,
                 source: &'static str,
                 subject: &'static str,
                 region: Option<&'static str>| {
        let mut h = vec![
            ("ce-specversion", "1.0"),
            ("ce-id", id),
            ("ce-source", source),
            ("ce-type", ty),
            ("ce-subject", subject),
        ];
        h.extend(region.map(|r| ("ce-region", r)));
        h
    };
    let sent = [
        event("a", "com.acme.order.created", "/shop/us", "a.jpg", None),
        event(
            "b",
            "com.acme.order.updated",
            "/shop/eu/1",
            "b.png",
            Some("eu-west-1"),
        ),
        event("c", "com.other", "/shop/euro", "c.PNG", Some("eu-west-1")),
        event(
            "d",
            "com.acme.order.created.v2",
            "/x",
            "d.png.bak",
            Some("eu-west-2"),
        ),
    ];
    for headers in &sent {
        send(&server, headers, "").await;
    }
    let expected = [
        ("exact", vec!["a"]),
        ("prefix", vec!["b", "c"]),
        ("suffix", vec!["b"]),
        ("ext", vec!["b"]),
    ];
    for (name, ids) in &expected {
        wait_ids(&server, &format!("f-{name}"), ids).await;
    }
    // Sent last and matching every trigger: once each function has it, nothing else is on
    // its way to it.
    send(
        &server,
        &event(
            "m",
            "com.acme.order.created",
            "/shop/eu/m",
            "m.png",
            Some("eu-west-1"),
        ),
        "",
    )
    .await;
    for (name, mut ids) in expected {
        let function = format!("f-{name}");
        let records = wait_ids(&server, &function, &["m"]).await;
        let mut got: Vec<&str> = records.iter().map(id).collect();
        got.sort_unstable();
        ids.push("m");
        assert_eq!(got, ids, "trigger {name} delivered to {function}");
    }
}

async fn failures_are_retried_then_dead_lettered_and_replayed_once(bus: Bus) {
    let server = start(&bus).await;
    deploy(&server, "failing", &["--env", "MODE=fail"]).await;
    deploy(&server, "echo", &[]).await;
    server
        .kl_ok(&[
            "trigger",
            "create",
            "orders",
            "--function",
            "failing",
            "--filter",
            "type=com.example.order",
            "--retries",
            "2",
            "--backoff-delay",
            "300ms",
            "--dead-letter",
            "echo",
        ])
        .await;
    send(&server, &binary("order-1", "com.example.order"), "").await;

    let letter = wait_for("the event to be dead-lettered", PATIENCE, || async {
        let list: Value =
            serde_json::from_str(&server.kl_ok(&["events", "dlq", "ls", "-o", "json"]).await).unwrap();
        list["deadLetters"].as_array().and_then(|l| l.first().cloned())
    })
    .await;
    assert_eq!(letter["subscriber"], "trigger:orders");
    assert_eq!(letter["event"]["id"], "order-1");
    assert_eq!(letter["attempt"], 2);
    let reason = letter["reason"].as_str().unwrap();
    assert!(
        reason.contains("HTTP 500") && reason.contains("gave up after 3 attempts"),
        "{reason}"
    );
    let attempts: Vec<f64> = received(&server, "failing")
        .await
        .iter()
        .filter(|r| id(r) == "order-1")
        .map(|r| r["at"].as_f64().unwrap())
        .collect();
    assert_eq!(attempts.len(), 3, "the first attempt and two retries");
    for pair in attempts.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= 0.3,
            "a backoff of at least backoffDelay (300 ms) between attempts: {gap} s"
        );
    }
    let table = server.kl_ok(&["events", "dlq", "ls"]).await;
    assert!(
        table.contains("trigger:orders") && table.contains("com.example.order"),
        "{table}"
    );
    let letter_id = letter["id"].as_str().unwrap();
    let shown: Value =
        serde_json::from_str(&server.kl_ok(&["events", "dlq", "show", letter_id]).await).unwrap();
    assert_eq!(shown["event"]["id"], "order-1");
    // The trigger's dead-letter sink got a copy, marked with where it failed to go.
    let copies = wait_ids(&server, "echo", &["order-1"]).await;
    assert_eq!(copies[0]["ce"]["knativeerrordest"], "function/failing");

    // Fixed declaratively: the trigger now goes to echo. The replay goes there, once.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("trigger.yaml");
    let exported = server.kl_ok(&["export", "trigger", "orders"]).await;
    std::fs::write(&file, exported.replace("function: failing", "function: echo")).unwrap();
    let applied = server.kl_ok(&["apply", "-f", file.to_str().unwrap()]).await;
    assert_eq!(applied, "trigger/orders configured\n  function: failing → echo\n");
    assert_eq!(
        server.kl_ok(&["apply", "-f", file.to_str().unwrap()]).await,
        "trigger/orders unchanged\n"
    );
    assert_eq!(
        server.kl_ok(&["events", "dlq", "replay", letter_id]).await,
        format!("replayed {letter_id}\n")
    );
    let again = server.kl(&["events", "dlq", "replay", letter_id]).await;
    assert!(
        !again.status.success() && text(&again).contains("NotFound"),
        "{}",
        text(&again)
    );
    send(&server, &binary("order-marker", "com.example.order"), "").await;
    let records = wait_ids(&server, "echo", &["order-marker"]).await;
    let replayed: Vec<&Value> = records
        .iter()
        .filter(|r| id(r) == "order-1" && r["ce"].get("knativeerrordest").is_none())
        .collect();
    assert_eq!(
        replayed.len(),
        1,
        "the replay is delivered exactly once: {records:?}"
    );
    let empty: Value =
        serde_json::from_str(&server.kl_ok(&["events", "dlq", "ls", "-o", "json"]).await).unwrap();
    assert_eq!(empty["deadLetters"], json!([]));
}

async fn a_schedule_trigger_pings_its_function(bus: Bus) {
    let server = start(&bus).await;
    deploy(&server, "echo", &[]).await;
    let out = server
        .kl_ok(&[
            "trigger",
            "create",
            "tick",
            "--function",
            "echo",
            "--schedule",
            "* * * * *",
            "--data",
            "{\"tick\": true}",
        ])
        .await;
    assert!(out.starts_with("trigger/tick created\n  next fire: "), "{out}");
    let described = server.kl_ok(&["trigger", "describe", "tick"]).await;
    assert!(described.contains("schedule * * * * *"), "{described}");
    // A real minute schedule: the first fire is at most 60 s away.
    let ping = wait_for("a ping within 70 s", Duration::from_secs(70), || async {
        received(&server, "echo")
            .await
            .into_iter()
            .find(|r| r["ce"]["type"] == "dev.knative.sources.ping")
    })
    .await;
    assert_eq!(
        ping["ce"]["source"],
        "/apis/v1/namespaces/default/pingsources/tick"
    );
    assert_eq!(ping["data"], json!({"tick": true}));
    let time = ping["ce"]["time"].as_str().unwrap();
    assert!(time.ends_with(":00Z"), "fires on the minute: {time}");
}

async fn invocation(server: &Server, id: &str) -> Value {
    serde_json::from_str(&server.kl_ok(&["invocation", "get", id, "-o", "json"]).await).unwrap()
}

async fn wait_finished(server: &Server, id: &str) -> Value {
    wait_for("the invocation to finish", PATIENCE, || async {
        let view = invocation(server, id).await;
        (!matches!(view["status"].as_str(), Some("queued" | "running"))).then_some(view)
    })
    .await
}

async fn async_invocations_report_their_outcome_as_events(bus: Bus) {
    let server = start(&bus).await;
    deploy(&server, "echo", &[]).await;
    deploy(&server, "failing", &["--env", "MODE=fail"]).await;
    deploy(&server, "replies", &[]).await;
    server
        .kl_ok(&[
            "trigger",
            "create",
            "on-success",
            "--function",
            "replies",
            "--filter",
            "type=io.knative.lambda.response.success",
        ])
        .await;

    // Over HTTP: 202, an id and where to look.
    let response = server
        .req(Method::POST, "/fn/default/echo/orders?x=1")
        .header("prefer", "respond-async")
        .header("x-kl-correlation-id", "corr-42")
        .json(&json!({"n": 1}))
        .send()
        .await
        .unwrap();
    let reply = Reply::read(response).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    let id = reply.json()["invocationId"].as_str().unwrap().to_owned();
    assert_eq!(reply.json()["status"], "queued");
    assert_eq!(
        reply.header("location"),
        format!("/v1/tenants/default/invocations/{id}")
    );
    let done = wait_finished(&server, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["statusCode"], 200);
    assert_eq!(done["result"]["data"], json!({"n": 1}));
    assert_eq!(done["correlationId"], "corr-42");
    let shown = server.kl_ok(&["invocation", "get", &id]).await;
    assert!(shown.contains("Status:     succeeded"), "{shown}");

    // Through the CLI, with a destination.
    let out = server
        .kl(&[
            "invoke",
            "echo",
            "--async",
            "--destination",
            "failing",
            "-d",
            "{\"n\": 2}",
        ])
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let second = stdout(&out).trim().to_owned();
    assert_eq!(wait_finished(&server, &second).await["status"], "succeeded");

    // The replies: one response.success per invocation through the trigger, and the second
    // one also at its destination (which fails: that delivery is retried, then dead-lettered).
    let records = wait_for("both replies", PATIENCE, || async {
        let records = received(&server, "replies").await;
        (records.len() >= 2).then_some(records)
    })
    .await;
    let reply_of = |invocation: &str| {
        records
            .iter()
            .find(|r| r["data"]["invocationId"] == invocation)
            .unwrap_or_else(|| panic!("no reply for {invocation}: {records:?}"))
    };
    let first_reply = reply_of(&id);
    assert_eq!(first_reply["ce"]["type"], "io.knative.lambda.response.success");
    assert_eq!(first_reply["ce"]["correlationid"], "corr-42");
    assert_eq!(first_reply["data"]["functionName"], "echo");
    assert_eq!(first_reply["data"]["result"]["data"], json!({"n": 1}));
    assert!(first_reply["data"]["metrics"]["durationMs"].is_u64());
    reply_of(&second);
    let at_destination = wait_for("the reply at its destination", PATIENCE, || async {
        received(&server, "failing")
            .await
            .into_iter()
            .find(|r| r["data"]["invocationId"] == second.as_str())
    })
    .await;
    assert_eq!(at_destination["ce"]["type"], "io.knative.lambda.response.success");

    // A failing function: retried twice, then failed, with the error.
    let out = server.kl(&["invoke", "failing", "--async", "-d", "{}"]).await;
    let failed_id = stdout(&out).trim().to_owned();
    let failed = wait_finished(&server, &failed_id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["attempts"], 3);
    assert_eq!(failed["statusCode"], 500);
    assert!(failed["error"].as_str().unwrap().contains("HTTP 500"), "{failed}");
    assert_eq!(failed["result"]["error"]["code"], "FunctionError");
    let missing = server.kl(&["invocation", "get", "no-such-id"]).await;
    assert!(text(&missing).contains("NotFound"), "{}", text(&missing));
}

/// A `kl events tail` running in the background, its lines collected.
struct Tail {
    _child: tokio::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Tail {
    async fn start(server: &Server, args: &[&str]) -> Tail {
        let mut all = vec!["events", "tail"];
        all.extend_from_slice(args);
        let mut child = server.kl_command(&all).spawn().expect("kl events tail runs");
        let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
        let first = tokio::time::timeout(PATIENCE, err.next_line())
            .await
            .expect("tail connects in time")
            .unwrap()
            .unwrap_or_default();
        assert!(first.starts_with("following the events of tenant"), "{first}");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                let _ = tx.send(line);
            }
        });
        Tail { _child: child, lines }
    }

    /// The next event line whose type is `ty`.
    async fn next_of(&mut self, ty: &str) -> Value {
        tokio::time::timeout(PATIENCE, async {
            loop {
                let line = self.lines.recv().await.expect("tail still runs");
                let event: Value = serde_json::from_str(&line).unwrap();
                if event["type"] == ty {
                    return event;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {ty} from kl events tail"))
    }
}

async fn command_events_build_roll_back_and_delete(bus: Bus) {
    let server = start(&bus).await;
    let mut tail = Tail::start(
        &server,
        &[
            "-o",
            "json",
            "--filter",
            "source=prefix:io.knative.lambda/default/built",
        ],
    )
    .await;
    let key = server
        .kl_ok(&[
            "events",
            "upload",
            fixture("py-events").to_str().unwrap(),
            "--name",
            "built.tar.gz",
        ])
        .await;
    assert_eq!(key, "uploads/default/built.tar.gz\n");
    let build = |version: &str| {
        json!({"functionName": "built", "source": "uploads/default/built.tar.gz",
               "options": {"env": {"VERSION": version}}})
        .to_string()
    };
    let start_build = |data: String| {
        let server = &server;
        async move {
            server
                .kl_ok(&[
                    "events",
                    "send",
                    "--type",
                    "io.knative.lambda.command.build.start",
                    "--data",
                    &data,
                ])
                .await
        }
    };
    start_build(build("1")).await;
    let started = tail.next_of("io.knative.lambda.lifecycle.build.started").await;
    assert_eq!(started["subject"], "default/built");
    assert_eq!(started["correlationid"], "built-00001");
    let ready = tail.next_of("io.knative.lambda.lifecycle.function.ready").await;
    assert_eq!(ready["data"]["revision"], "built-00001");
    let reply = server.call("built", "", json!({"hello": 1})).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-kl-revision"), "built-00001");

    start_build(build("2")).await;
    let ready = tail.next_of("io.knative.lambda.lifecycle.function.ready").await;
    assert_eq!(ready["data"]["revision"], "built-00002");
    server
        .kl_ok(&[
            "events",
            "send",
            "--type",
            "io.knative.lambda.command.function.rollback",
            "--subject",
            "default/built",
        ])
        .await;
    let updated = tail.next_of("io.knative.lambda.lifecycle.function.updated").await;
    assert_eq!(
        updated["data"],
        json!({"revision": "built-00001", "previous": "built-00002"})
    );
    assert_eq!(
        server.call("built", "", json!({})).await.header("x-kl-revision"),
        "built-00001"
    );
    assert_eq!(
        server.kl_ok(&["rollback", "built", "--to", "2"]).await,
        "built serves built-00002 (was built-00001)\n"
    );

    // Refused at ingress: a source that is not there, another tenant's, a viewer.
    for (source, code) in [
        ("uploads/default/nope.tgz", "SourceNotFound"),
        ("uploads/other/built.tar.gz", "InvalidCommand"),
    ] {
        let data = json!({"functionName": "x", "source": source}).to_string();
        let refused = server
            .kl(&[
                "events",
                "send",
                "--type",
                "io.knative.lambda.command.build.start",
                "--data",
                &data,
            ])
            .await;
        assert!(text(&refused).contains(code), "{source}: {}", text(&refused));
    }
    let viewer = server
        .kl_ok(&["token", "create", "--role", "viewer", "--tenant", "default", "-q"])
        .await;
    let refused = server
        .kl_as(
            viewer.trim(),
            &[
                "events",
                "send",
                "--type",
                "io.knative.lambda.command.service.delete",
                "--subject",
                "built",
            ],
        )
        .await;
    assert!(text(&refused).contains("Forbidden"), "{}", text(&refused));

    server
        .kl_ok(&[
            "events",
            "send",
            "--type",
            "io.knative.lambda.command.service.delete",
            "--subject",
            "default/built",
        ])
        .await;
    tail.next_of("io.knative.lambda.lifecycle.function.deleted").await;
    let gone = server.kl(&["describe", "built"]).await;
    assert!(text(&gone).contains("NotFound"), "{}", text(&gone));
}

async fn accepted_events_survive_a_sigkill_during_delivery(bus: Bus) {
    const EVENTS: usize = 200;
    let mut server = start(&bus).await;
    // About 10 deliveries a second: publishing takes a fraction of the delivery time.
    deploy(
        &server,
        "slow",
        &["--env", "MODE=slow", "--env", "SLEEP_MS=100", "--max-scale", "1"],
    )
    .await;
    server
        .kl_ok(&[
            "trigger",
            "create",
            "durable",
            "--function",
            "slow",
            "--filter",
            "type=com.example.durable",
        ])
        .await;

    // Published while delivery runs; every 202 is an event that must arrive.
    let mut accepted = Vec::new();
    let mut failed_publish = false;
    for n in 0..EVENTS {
        let id = format!("durable-{n}");
        let reply = server
            .req(Method::POST, "/v1/tenants/default/events")
            .header("ce-specversion", "1.0")
            .header("ce-id", &id)
            .header("ce-source", "/tests")
            .header("ce-type", "com.example.durable")
            .send()
            .await;
        match reply {
            Ok(r) if r.status() == 202 => accepted.push(id),
            other => {
                failed_publish = true;
                eprintln!("publishing {id} failed: {other:?}");
                break;
            }
        }
    }
    assert!(!failed_publish, "the server refused an event before the kill");
    let delivered_before = wait_for("deliveries to be under way", PATIENCE, || async {
        let n = received(&server, "slow").await.len();
        (n >= 20).then_some(n)
    })
    .await;
    server.kill();
    assert!(
        delivered_before < EVENTS,
        "the kill came mid-delivery ({delivered_before} of {EVENTS} delivered)"
    );
    server.start_again().await;
    let wanted: Vec<&str> = accepted.iter().map(String::as_str).collect();
    let records = wait_for(
        "every accepted event after the restart",
        Duration::from_secs(240),
        || async {
            let records = received(&server, "slow").await;
            let seen: HashSet<&str> = records.iter().map(id).collect();
            wanted.iter().all(|w| seen.contains(w)).then_some(records)
        },
    )
    .await;
    let mut times: HashMap<&str, usize> = HashMap::new();
    for r in &records {
        *times.entry(id(r)).or_default() += 1;
    }
    let twice = times.values().filter(|n| **n > 1).count();
    eprintln!(
        "{bus:?}: {} accepted, {delivered_before} delivered before SIGKILL, all delivered after the restart, {twice} more than once",
        accepted.len()
    );
    assert_eq!(accepted.len(), EVENTS);
}

#[tokio::test]
async fn tail_shows_only_the_tenants_events_that_match() {
    let server = Server::start().await;
    server.create_tenant("other", json!({})).await;
    let mut tail = Tail::start(&server, &["-o", "json", "--filter", "type=prefix:com.example."]).await;
    let reply = server
        .req(Method::POST, "/v1/tenants/other/events")
        .header("ce-specversion", "1.0")
        .header("ce-id", "elsewhere")
        .header("ce-source", "/tests")
        .header("ce-type", "com.example.seen")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 202);
    send(&server, &binary("filtered-out", "org.example.unseen"), "").await;
    send(&server, &binary("shown", "com.example.seen"), "{\"a\": 1}").await;
    let shown = tail.next_of("com.example.seen").await;
    assert_eq!(
        shown["id"], "shown",
        "another tenant's and unmatched events are not shown first"
    );
    let human = server
        .kl_command(&["events", "tail", "--filter", "Type=x"])
        .stdout(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!human.status.success());
    assert!(String::from_utf8_lossy(&human.stderr).contains("filter attribute \"Type\" is invalid"));
}
