//! One behavioural suite for every [`Broker`] backend, written once: each backend's tests call
//! these functions with a [`Harness`] that opens brokers over one durable state. Waits are
//! conditions with deadlines, never sleeps that hope something happened meanwhile.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Broker, BrokerError, Delivery, NewDelivery};
use crate::CloudEvent;

/// Longest wait for something that must happen.
const PATIENCE: Duration = Duration::from_secs(30);
/// How long "nothing else arrives" is watched for.
const QUIET: Duration = Duration::from_millis(500);

/// Opens brokers of one backend over one durable state.
#[async_trait]
pub trait Harness: Send + Sync {
    type Broker: Broker + 'static;

    /// A broker over this harness's state.
    async fn open(&self) -> Self::Broker;

    /// The receiver holding leases on `broker` dies without settling them; returns a broker
    /// whose receivers get those deliveries again (SQLite: the same one, once the lease
    /// expires; RabbitMQ: a new connection, the old one closed).
    async fn kill_receiver(&self, broker: Self::Broker) -> Self::Broker;

    /// The server restarts: `broker` goes away as in a crash and a new one opens over the same
    /// durable state.
    async fn restart(&self, broker: Self::Broker) -> Self::Broker;

    /// Cleans up after a test that passed (a failed one leaves its state to look at).
    async fn finish(&self) {}
}

/// Defines one `#[tokio::test]` per conformance test, in the calling module, each running it
/// against the harness returned by the async fn `$setup` (`None`: skip, having said why), so
/// every backend runs every test.
#[macro_export]
macro_rules! broker_conformance_tests {
    ($setup:path) => {
        $crate::broker_conformance_tests!(@each $setup;
            enqueue_receive_ack,
            waiting_receiver_wakes_on_enqueue,
            dropped_lease_is_redelivered,
            retry_honours_delay_and_counts_attempts,
            dead_letter_list_show_replay_once,
            concurrent_enqueue_loses_nothing,
            unacked_survive_restart
        );
    };
    (@each $setup:path; $($test:ident),+) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            let Some(harness) = $setup().await else { return };
            $crate::broker::conformance::$test(&harness).await;
            $crate::broker::conformance::Harness::finish(&harness).await;
        }
    )+};
}

/// Enqueued deliveries come back once each with their fields intact; acked ones are gone.
pub async fn enqueue_receive_ack(h: &impl Harness) {
    let b = h.open().await;
    let batch: Vec<NewDelivery> = (0..3).map(|n| new_delivery("acme", "on-build", n)).collect();
    let before = chrono::Utc::now();
    b.enqueue(batch.clone()).await.expect("enqueue a batch of 3");
    let got = receive_n(&b, 3, PATIENCE).await;
    let mut ids = HashSet::new();
    for d in &got {
        let sent = batch
            .iter()
            .find(|n| n.event == d.event)
            .unwrap_or_else(|| panic!("received an event that was not enqueued: {:?}", d.event));
        assert_eq!(
            (d.tenant.as_str(), d.subscriber.as_str()),
            (sent.tenant.as_str(), sent.subscriber.as_str())
        );
        assert_eq!(d.attempt, 0, "a first delivery is attempt 0");
        assert!(
            d.enqueued_at >= before - chrono::Duration::seconds(1),
            "enqueued_at {} is before the enqueue at {before}",
            d.enqueued_at
        );
        assert!(ids.insert(d.id.clone()), "delivery id {} handed out twice", d.id);
    }
    for d in got {
        b.ack(d).await.expect("ack");
    }
    assert_nothing_due(&b, QUIET).await;
}

/// A receiver parked in `receive` wakes when something is enqueued, not when its wait ends.
pub async fn waiting_receiver_wakes_on_enqueue(h: &impl Harness) {
    let b = Arc::new(h.open().await);
    let receiver = tokio::spawn({
        let b = b.clone();
        async move { b.receive(10, Duration::from_secs(60)).await }
    });
    // Not a correctness wait: gives the receiver time to park, so the wake-up is what's tested.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let enqueued = Instant::now();
    b.enqueue(vec![new_delivery("acme", "on-build", 0)])
        .await
        .expect("enqueue");
    let got = tokio::time::timeout(PATIENCE, receiver)
        .await
        .expect("the parked receiver did not wake within the deadline")
        .expect("receiver task")
        .expect("receive");
    assert_eq!(got.len(), 1, "the parked receiver gets the event");
    assert!(
        enqueued.elapsed() < Duration::from_secs(5),
        "the parked receiver woke {:?} after the enqueue",
        enqueued.elapsed()
    );
    for d in got {
        b.ack(d).await.expect("ack");
    }
}

/// At-least-once: a delivery whose receiver died unsettled is delivered again, as the same
/// attempt, and the dead receiver's late settlement is refused.
pub async fn dropped_lease_is_redelivered(h: &impl Harness) {
    let b = h.open().await;
    b.enqueue(vec![new_delivery("acme", "on-build", 0)])
        .await
        .expect("enqueue");
    let first = receive_n(&b, 1, PATIENCE).await.remove(0);
    let b = h.kill_receiver(b).await;
    let again = receive_n(&b, 1, PATIENCE).await.remove(0);
    assert_eq!(again.id, first.id, "the abandoned delivery comes back");
    assert_eq!(again.event, first.event);
    assert_eq!(again.attempt, first.attempt, "a lost lease is not a retry");
    match b.ack(first).await {
        Err(BrokerError::LeaseLost { .. }) => {}
        other => panic!("acking through a lost lease must be LeaseLost, got {other:?}"),
    }
    b.ack(again).await.expect("ack the redelivery");
    assert_nothing_due(&b, QUIET).await;
}

/// A retry is not delivered before its delay, is delivered after it, and counts attempts.
pub async fn retry_honours_delay_and_counts_attempts(h: &impl Harness) {
    let b = h.open().await;
    b.enqueue(vec![new_delivery("acme", "on-build", 0)])
        .await
        .expect("enqueue");
    let d = receive_n(&b, 1, PATIENCE).await.remove(0);
    assert_eq!(d.attempt, 0);
    let after = Duration::from_millis(1500);
    let retried = Instant::now();
    b.retry(d, after).await.expect("retry");
    let d = receive_n(&b, 1, after + PATIENCE).await.remove(0);
    assert!(
        retried.elapsed() >= after,
        "a retry after {after:?} was delivered {:?} after the retry",
        retried.elapsed()
    );
    assert_eq!(d.attempt, 1, "first retry");
    b.retry(d, Duration::ZERO).await.expect("retry again");
    let d = receive_n(&b, 1, PATIENCE).await.remove(0);
    assert_eq!(d.attempt, 2, "second retry");
    b.ack(d).await.expect("ack");
    assert_nothing_due(&b, QUIET).await;
}

/// Dead letters are listed per tenant oldest first, shown by id, and replayed exactly once,
/// back into the queue as attempt 0.
pub async fn dead_letter_list_show_replay_once(h: &impl Harness) {
    let b = h.open().await;
    let mut batch: Vec<NewDelivery> = (0..3).map(|n| new_delivery("acme", "on-build", n)).collect();
    batch.push(new_delivery("globex", "on-build", 3));
    b.enqueue(batch).await.expect("enqueue");
    let mut got = receive_n(&b, 4, PATIENCE).await;
    got.sort_by_key(|d| number(&d.event));
    let mut got = got.into_iter();
    let (first, second, third, globex) = (got.next(), got.next(), got.next(), got.next());
    let (first, second, third, globex) = (
        first.expect("4 deliveries"),
        second.expect("4 deliveries"),
        third.expect("4 deliveries"),
        globex.expect("4 deliveries"),
    );
    b.ack(globex).await.expect("ack globex");
    // The first dies on its second attempt, so the dead letter records the attempt.
    b.retry(first, Duration::ZERO).await.expect("retry");
    let first = receive_n(&b, 1, PATIENCE).await.remove(0);
    assert_eq!(first.attempt, 1);
    let (id1, event1) = (first.id.clone(), first.event.clone());
    let order = [first.id.clone(), second.id.clone(), third.id.clone()];
    b.dead_letter(first, "function answered 500")
        .await
        .expect("dead-letter 1");
    b.dead_letter(second, "timeout").await.expect("dead-letter 2");
    b.dead_letter(third, "timeout").await.expect("dead-letter 3");
    assert_nothing_due(&b, QUIET).await;

    let listed = b.dead_letters("acme", 10).await.expect("list");
    let listed_ids: Vec<&str> = listed.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(listed_ids, order, "dead letters are listed oldest first");
    let dead = &listed[0];
    assert_eq!(
        (
            dead.tenant.as_str(),
            dead.subscriber.as_str(),
            dead.attempt,
            dead.reason.as_str()
        ),
        ("acme", "on-build", 1, "function answered 500")
    );
    assert_eq!(dead.event, event1);
    assert!(dead.dead_at >= dead.enqueued_at);
    assert_eq!(b.dead_letters("acme", 2).await.expect("list 2").len(), 2, "limit");
    assert!(b.dead_letters("globex", 10).await.expect("list").is_empty());
    assert!(b.dead_letters("initech", 10).await.expect("list").is_empty());

    let shown = b.find_dead_letter("acme", &id1).await.expect("show");
    assert_eq!(shown.as_ref(), Some(dead), "show returns what ls listed");
    assert_eq!(b.find_dead_letter("globex", &id1).await.expect("show"), None);
    assert!(matches!(
        b.replay("globex", &id1).await,
        Err(BrokerError::NotFound { .. })
    ));

    b.replay("acme", &id1).await.expect("replay");
    match b.replay("acme", &id1).await {
        Err(BrokerError::NotFound { .. }) => {}
        other => panic!("a second replay must be NotFound, got {other:?}"),
    }
    let left: Vec<String> = b
        .dead_letters("acme", 10)
        .await
        .expect("list")
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(left, order[1..], "the replayed one left the dead letters");
    let replayed = receive_n(&b, 1, PATIENCE).await.remove(0);
    assert_eq!((replayed.id.as_str(), replayed.attempt), (id1.as_str(), 0));
    assert_eq!(replayed.event, event1);
    b.ack(replayed).await.expect("ack");
    assert_nothing_due(&b, QUIET).await;
}

/// Concurrent publishers and receivers: every accepted event is received exactly once.
pub async fn concurrent_enqueue_loses_nothing(h: &impl Harness) {
    const TASKS: usize = 8;
    const EACH: usize = 200;
    let b = Arc::new(h.open().await);
    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let receivers: Vec<_> = (0..2)
        .map(|_| {
            let (b, seen) = (b.clone(), seen.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + PATIENCE * 4;
                while Instant::now() < deadline && seen.lock().expect("seen").len() < TASKS * EACH {
                    for d in b.receive(50, Duration::from_millis(200)).await.expect("receive") {
                        *seen.lock().expect("seen").entry(d.event.id.clone()).or_default() += 1;
                        b.ack(d).await.expect("ack");
                    }
                }
            })
        })
        .collect();
    let publishers: Vec<_> = (0..TASKS)
        .map(|t| {
            let b = b.clone();
            tokio::spawn(async move {
                let mut ids = Vec::with_capacity(EACH);
                for n in 0..EACH {
                    let d = new_delivery("acme", &format!("trigger-{t}"), t * EACH + n);
                    ids.push(d.event.id.clone());
                    b.enqueue(vec![d]).await.expect("enqueue");
                }
                ids
            })
        })
        .collect();
    let mut sent = HashSet::new();
    for p in publishers {
        sent.extend(p.await.expect("publisher task"));
    }
    for r in receivers {
        r.await.expect("receiver task");
    }
    let seen = seen.lock().expect("seen");
    let missing = sent.iter().filter(|id| !seen.contains_key(*id)).count();
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert_eq!(
        missing,
        0,
        "{missing} of {} accepted events were never received",
        sent.len()
    );
    assert!(
        twice.is_empty(),
        "received more than once without a failure: {twice:?}"
    );
    assert_eq!(seen.len(), sent.len(), "received events that were never sent");
}

/// Unacked deliveries outlive the server: after a restart they come back, and only they.
pub async fn unacked_survive_restart(h: &impl Harness) {
    let b = h.open().await;
    let batch: Vec<NewDelivery> = (0..10).map(|n| new_delivery("acme", "on-build", n)).collect();
    b.enqueue(batch).await.expect("enqueue");
    let mut got = receive_n(&b, 10, PATIENCE).await;
    got.sort_by_key(|d| number(&d.event));
    let unacked: HashSet<String> = got[4..].iter().map(|d| d.id.clone()).collect();
    for d in got.drain(..4) {
        b.ack(d).await.expect("ack");
    }
    drop(got);
    let b = h.restart(b).await;
    let again = receive_n(&b, unacked.len(), PATIENCE).await;
    let again_ids: HashSet<String> = again.iter().map(|d| d.id.clone()).collect();
    assert_eq!(again_ids, unacked, "exactly the unacked deliveries survive");
    for d in again {
        b.ack(d).await.expect("ack");
    }
    assert_nothing_due(&b, QUIET).await;
}

fn new_delivery(tenant: &str, subscriber: &str, n: usize) -> NewDelivery {
    let mut event = CloudEvent::new(
        "io.knative.lambda.conformance.test",
        format!("io.knative.lambda/{tenant}/conformance"),
        serde_json::json!({ "n": n }),
    );
    event.subject = Some(format!("{tenant}/conformance"));
    NewDelivery {
        tenant: tenant.into(),
        subscriber: subscriber.into(),
        event,
    }
}

fn number(event: &CloudEvent) -> u64 {
    event
        .data
        .as_ref()
        .and_then(|d| d["n"].as_u64())
        .expect("a conformance event carries its number")
}

/// Receives exactly `n` deliveries within `within`, or fails saying how many came.
async fn receive_n(b: &impl Broker, n: usize, within: Duration) -> Vec<Delivery> {
    let deadline = Instant::now() + within;
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            panic!("expected {n} deliveries within {within:?}, got {}", got.len());
        }
        got.extend(b.receive(n - got.len(), left).await.expect("receive"));
    }
    got
}

/// Nothing is delivered for `quiet`.
async fn assert_nothing_due(b: &impl Broker, quiet: Duration) {
    let got = b.receive(10, quiet).await.expect("receive");
    let ids: Vec<_> = got.iter().map(|d| (&d.id, d.attempt)).collect();
    assert!(ids.is_empty(), "expected nothing due, got {ids:?}");
}
