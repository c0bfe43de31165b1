//! The conformance suite against a real RabbitMQ at `KL_TEST_AMQP_URL`, each test under its
//! own name prefix; plus what only RabbitMQ can show: the node restarting mid-stream.

use std::collections::HashSet;
use std::io::Write;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as SyncMutex};

use async_trait::async_trait;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use tokio::sync::{RwLock, RwLockReadGuard};

use super::*;
use crate::CloudEvent;
use crate::broker::conformance::Harness;

/// The restart test stops the whole node, so it runs alone; the other tests share it.
static NODE: RwLock<()> = RwLock::const_new(());

/// Tenants the tests dead-letter for, whose queues are cleaned up.
const TENANTS: [&str; 3] = ["acme", "globex", "initech"];

/// The RabbitMQ to test against. Unset: skipped with a line saying so, except in CI, where
/// these tests must run and so fail.
fn url() -> Option<String> {
    match std::env::var("KL_TEST_AMQP_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!(
                "KL_TEST_AMQP_URL is unset in CI: the RabbitMQ broker tests must run there (.ci/run starts RabbitMQ and exports it)"
            )
        }
        _ => {
            // Straight to stderr: libtest captures `eprintln!` of passing tests.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED RabbitMQ broker test: set KL_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f to run it"
            );
            None
        }
    }
}

fn unique_prefix() -> String {
    format!("kltest-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

struct AmqpHarness {
    url: String,
    prefix: String,
    _shared: RwLockReadGuard<'static, ()>,
}

async fn setup() -> Option<AmqpHarness> {
    Some(AmqpHarness {
        url: url()?,
        prefix: unique_prefix(),
        _shared: NODE.read().await,
    })
}

async fn connect(url: &str, prefix: &str) -> AmqpBroker {
    let options = AmqpOptions {
        prefix: prefix.into(),
        ..AmqpOptions::default()
    };
    AmqpBroker::connect(url, options)
        .await
        .expect("connect to the RabbitMQ at KL_TEST_AMQP_URL")
}

#[async_trait]
impl Harness for AmqpHarness {
    type Broker = AmqpBroker;

    async fn open(&self) -> AmqpBroker {
        connect(&self.url, &self.prefix).await
    }

    async fn kill_receiver(&self, broker: AmqpBroker) -> AmqpBroker {
        broker.close().await;
        connect(&self.url, &self.prefix).await
    }

    async fn restart(&self, broker: AmqpBroker) -> AmqpBroker {
        broker.close().await;
        connect(&self.url, &self.prefix).await
    }

    async fn finish(&self) {
        delete_topology(&self.url, &self.prefix).await;
    }
}

crate::broker_conformance_tests!(setup);

/// Deletes a test's exchanges and queues, each on its own channel (a delete that fails
/// closes its channel); failures only leave litter behind.
async fn delete_topology(url: &str, prefix: &str) {
    let Ok(names) = Names::new(prefix) else { return };
    let Ok(connection) = Connection::connect(url, ConnectionProperties::default()).await else {
        return;
    };
    let mut queues = vec![names.work_queue()];
    queues.extend(delay::buckets().map(|ttl| names.delay_queue(ttl)));
    queues.extend(TENANTS.iter().filter_map(|t| names.dead_queue(t).ok()));
    for queue in queues {
        if let Ok(channel) = connection.create_channel().await {
            let _ = channel.queue_delete(queue, QueueDeleteOptions::default()).await;
        }
    }
    for exchange in [names.exchange(), names.dead_exchange()] {
        if let Ok(channel) = connection.create_channel().await {
            let _ = channel
                .exchange_delete(exchange, ExchangeDeleteOptions::default())
                .await;
        }
    }
    let _ = connection.close(200, "test done".into()).await;
}

/// Runs `rabbitmqctl` on the node under test.
fn rabbitmqctl(args: &[&str]) {
    let status = Command::new("rabbitmqctl")
        .args(args)
        .status()
        .expect("run rabbitmqctl: the restart test needs the CLI of the node at KL_TEST_AMQP_URL");
    assert!(status.success(), "rabbitmqctl {args:?} failed: {status}");
}

/// Starts the node again if the test stopped it and then failed.
struct NodeRestarter {
    stopped: bool,
}

impl Drop for NodeRestarter {
    fn drop(&mut self) {
        if self.stopped {
            let _ = Command::new("rabbitmqctl").arg("start_app").status();
        }
    }
}

/// Waits until `done` holds, checking every few milliseconds, or fails saying `what`.
async fn until(what: &str, within: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The node restarts while publishers run, with a backlog in the queue and deliveries in
/// the receiver's hands: every enqueue that returned Ok is received, the unacked deliveries
/// come back, and publishers and receiver carry on over a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_broker_restart_mid_stream() {
    let Some(url) = url() else { return };
    let _alone = NODE.write().await;
    let prefix = unique_prefix();
    let options = AmqpOptions {
        prefix: prefix.clone(),
        reconnect_within: Duration::from_secs(60),
        ..AmqpOptions::default()
    };
    let broker = Arc::new(AmqpBroker::connect(&url, options).await.expect("connect"));
    let accepted: Ids = Arc::default();
    let received: Ids = Arc::default();
    let held: Arc<SyncMutex<Vec<Delivery>>> = Arc::default();
    let stop_publishing = Arc::new(AtomicBool::new(false));
    let stop_receiving = Arc::new(AtomicBool::new(false));
    let hold = Arc::new(AtomicBool::new(false));

    let publishers: Vec<_> = (0..4)
        .map(|p| {
            tokio::spawn(publish_until(
                broker.clone(),
                p,
                accepted.clone(),
                stop_publishing.clone(),
            ))
        })
        .collect();
    let receiver = tokio::spawn({
        let (broker, received, held, hold, stop) = (
            broker.clone(),
            received.clone(),
            held.clone(),
            hold.clone(),
            stop_receiving.clone(),
        );
        async move {
            while !stop.load(Ordering::Relaxed) {
                if hold.load(Ordering::Relaxed) {
                    // Paused, holding a batch unsettled, as a server killed mid-delivery would.
                    if held.lock().expect("held").is_empty() {
                        let got = broker.receive(50, Duration::from_millis(200)).await;
                        held.lock().expect("held").extend(got.unwrap_or_default());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                let Ok(got) = broker.receive(50, Duration::from_millis(200)).await else {
                    continue;
                };
                for d in got {
                    let id = d.event.id.clone();
                    // A lost lease is delivered again: only acked deliveries count.
                    if broker.ack(d).await.is_ok() {
                        received.lock().expect("received").insert(id);
                    }
                }
            }
        }
    });

    until(
        "100 events received before the restart",
        Duration::from_secs(30),
        || len(&received) >= 100,
    )
    .await;
    hold.store(true, Ordering::Relaxed);
    until(
        "a backlog of 200 and a held batch",
        Duration::from_secs(30),
        || !held.lock().expect("held").is_empty() && len(&accepted) >= len(&received) + 200,
    )
    .await;
    let mut node = NodeRestarter { stopped: true };
    tokio::task::spawn_blocking(|| rabbitmqctl(&["stop_app"]))
        .await
        .expect("stop_app");
    let before_start = len(&accepted);
    tokio::task::spawn_blocking(|| {
        rabbitmqctl(&["start_app"]);
        rabbitmqctl(&["await_startup", "--timeout", "60"]);
    })
    .await
    .expect("start_app");
    node.stopped = false;
    let stale: Vec<Delivery> = std::mem::take(&mut *held.lock().expect("held"));
    for d in stale {
        match broker.ack(d).await {
            Err(BrokerError::LeaseLost { .. }) => {}
            other => panic!("a delivery from before the restart must have lost its lease: {other:?}"),
        }
    }
    hold.store(false, Ordering::Relaxed);
    until(
        "100 more events accepted after the restart",
        Duration::from_secs(60),
        || len(&accepted) >= before_start + 100,
    )
    .await;
    stop_publishing.store(true, Ordering::Relaxed);
    for p in publishers {
        p.await.expect("publisher task");
    }
    until("every accepted event received", Duration::from_secs(60), || {
        let received = received.lock().expect("received");
        accepted.lock().expect("accepted").is_subset(&received)
    })
    .await;
    stop_receiving.store(true, Ordering::Relaxed);
    receiver.await.expect("receiver task");
    broker.close().await;
    delete_topology(&url, &prefix).await;
}

type Ids = Arc<SyncMutex<HashSet<String>>>;

fn len(ids: &Ids) -> usize {
    ids.lock().expect("ids").len()
}

/// Enqueues one event at a time until `stop`, recording those accepted. An error means "not
/// accepted": allowed, but never a loss.
async fn publish_until(broker: Arc<AmqpBroker>, publisher: usize, accepted: Ids, stop: Arc<AtomicBool>) {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let event = CloudEvent::new(
            "io.knative.lambda.test.restart",
            format!("publisher-{publisher}"),
            serde_json::json!({ "n": n }),
        );
        let id = event.id.clone();
        let delivery = NewDelivery {
            tenant: "acme".into(),
            subscriber: "on-restart".into(),
            event,
        };
        if broker.enqueue(vec![delivery]).await.is_ok() {
            accepted.lock().expect("accepted").insert(id);
        }
        n += 1;
    }
}
