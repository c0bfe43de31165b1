//! The activator: requests that find every instance slot taken wait in a bounded queue and
//! are served first in, first out; a full queue answers 503 at once.

mod support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Reply, Server, fixture, text, wait_for};

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
