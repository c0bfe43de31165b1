//! The platform's own CloudEvents on the live feed: builds publish
//! `io.knative.lambda.lifecycle.*` for their tenant, with the catalog's source, subject and
//! correlation id; budget thresholds publish `io.knative.lambda.notification.alert.*`.

use kl_testkit::archives::{Entry, make_tar_gz};
use std::sync::Arc;
use std::time::Duration;

use kl_events::{CloudEvent, TenantEvent};
use kl_server::{Server, ServerConfig};

fn python_source(body: &str) -> Vec<u8> {
    make_tar_gz(&[Entry::file("main.py", body)])
}

async fn next_of(
    rx: &mut tokio::sync::broadcast::Receiver<Arc<TenantEvent>>,
    tenant: &str,
    ty: &str,
) -> CloudEvent {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let published = rx.recv().await.expect("feed open");
            if published.event.ty == ty {
                assert_eq!(published.tenant, tenant);
                return published.event.clone();
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {ty} event within 60s"))
}

/// A server serving in the background, following its live feed from before it serves.
struct Running {
    url: String,
    token: String,
    events: tokio::sync::broadcast::Receiver<Arc<TenantEvent>>,
    stop: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<Result<(), kl_server::ServerError>>,
}

impl Running {
    async fn start(config: ServerConfig, dir: &std::path::Path) -> Running {
        let server = Server::bind(config).await.unwrap();
        let url = format!("http://{}", server.local_addr());
        let events = server.subscribe_events();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        }));
        let token = std::fs::read_to_string(dir.join("data/admin.token")).unwrap();
        Running {
            url,
            token: token.trim().to_owned(),
            events,
            stop,
            serving,
        }
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.serving.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_publish_lifecycle_events() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(dir.path().join("data"), "127.0.0.1:0".parse().unwrap());
    let mut running = Running::start(config, dir.path()).await;
    let (url, events) = (running.url.clone(), &mut running.events);
    let token = running.token.clone();
    let http = reqwest::Client::new();
    let upload = |source: Vec<u8>| {
        http.put(format!("{url}/v1/tenants/default/functions/evt/source"))
            .bearer_auth(&token)
            .body(source)
            .send()
    };

    let reply = upload(python_source("def handler(event):\n    return 1\n"))
        .await
        .unwrap();
    assert_eq!(reply.status(), 202);
    let started = next_of(events, "default", "io.knative.lambda.lifecycle.build.started").await;
    assert_eq!(started.source, "io.knative.lambda/default/evt");
    assert_eq!(started.subject.as_deref(), Some("default/evt"));
    assert_eq!(started.extensions["correlationid"], "evt-00001");
    let completed = next_of(events, "default", "io.knative.lambda.lifecycle.build.completed").await;
    assert_eq!(completed.extensions["correlationid"], "evt-00001");
    assert!(
        completed.data.as_ref().unwrap()["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    let ready = next_of(events, "default", "io.knative.lambda.lifecycle.function.ready").await;
    assert_eq!(ready.data.as_ref().unwrap()["revision"], "evt-00001");

    let reply = upload(python_source("def handler(event:\n")).await.unwrap();
    assert_eq!(reply.status(), 202);
    let failed = next_of(events, "default", "io.knative.lambda.lifecycle.build.failed").await;
    assert_eq!(failed.extensions["correlationid"], "evt-00002");
    assert!(
        failed.data.as_ref().unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("SyntaxError")
    );

    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_budget_raises_a_critical_alert_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(dir.path().join("data"), "127.0.0.1:0".parse().unwrap());
    config.metering.interval = Duration::from_millis(200);
    let mut running = Running::start(config, dir.path()).await;
    let (url, events) = (running.url.clone(), &mut running.events);
    let token = running.token.clone();
    let token = token.as_str();
    let http = reqwest::Client::new();

    // Ten requests cost 2 micro-dollars at the default 0.20 per million: twice the budget.
    let created = http
        .post(format!("{url}/v1/tenants"))
        .bearer_auth(token)
        .json(&serde_json::json!({"name": "acme", "spec": {"budget": {"amount": "0.000001", "thresholds": [100]}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let uploaded = http
        .put(format!("{url}/v1/tenants/acme/functions/f/source"))
        .bearer_auth(token)
        .body(python_source("def handler(event):\n    return 1\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), 202);
    // The build itself is metered and may spend the budget before the function is ready, so
    // the alert can come before `function.ready`: wait for the function by calling it, and
    // look for the alert among everything published since the subscription.
    let call = || {
        http.post(format!("{url}/fn/acme/f"))
            .bearer_auth(token)
            .json(&serde_json::json!({}))
            .send()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let reply = call().await.unwrap();
        if reply.status() == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "f never answered: {}",
            reply.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..10 {
        assert_eq!(call().await.unwrap().status(), 200);
    }

    let alert = next_of(events, "acme", "io.knative.lambda.notification.alert.critical").await;
    assert_eq!(alert.source, "io.knative.lambda/acme");
    assert_eq!(alert.subject.as_deref(), Some("acme"));
    let data = alert.data.expect("the alert is the data");
    assert_eq!(data["tenant"], "acme");
    assert_eq!(data["threshold"], 100);
    assert_eq!(data["severity"], "critical");
    assert_eq!(data["amount"], "0.000001");

    running.stop().await;
}
