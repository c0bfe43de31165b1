//! Receivers leasing at once from the embedded broker never get the same delivery: SQLite
//! runs one writer at a time, PostgreSQL picks rows `FOR UPDATE SKIP LOCKED`. On a fresh
//! database per backend.

#[macro_use]
mod support;

use std::collections::HashSet;
use std::time::Duration;

use kl_events::{Broker, CloudEvent, NewDelivery};
use kl_store::SqliteBroker;
use serde_json::json;
use support::Db;

on_every_backend!(concurrent_receivers_never_share_a_delivery);

const DELIVERIES: usize = 300;
const RECEIVERS: usize = 6;

async fn concurrent_receivers_never_share_a_delivery(db: &Db) {
    let store = db.open().await;
    // Far longer than the test: a delivery seen twice was leased twice, not redelivered.
    let broker = SqliteBroker::open(&store, Duration::from_secs(600))
        .await
        .unwrap();
    let batch = (0..DELIVERIES)
        .map(|n| NewDelivery {
            tenant: "acme".into(),
            subscriber: "on-t".into(),
            event: CloudEvent::new("t", "/leases".into(), json!({ "n": n })),
        })
        .collect();
    broker.enqueue(batch).await.unwrap();
    let receivers: Vec<_> = (0..RECEIVERS)
        .map(|_| {
            let broker = broker.clone();
            tokio::spawn(async move {
                let (mut ids, mut lost) = (Vec::new(), 0);
                loop {
                    let got = broker.receive(7, Duration::from_millis(300)).await.unwrap();
                    if got.is_empty() {
                        return (ids, lost);
                    }
                    for delivery in got {
                        ids.push(delivery.id.clone());
                        if broker.ack(delivery).await.is_err() {
                            lost += 1;
                        }
                    }
                }
            })
        })
        .collect();
    let (mut ids, mut lost) = (Vec::new(), 0);
    for receiver in receivers {
        let (got, failed) = receiver.await.expect("receiver task");
        ids.extend(got);
        lost += failed;
    }
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(
        (ids.len(), distinct.len(), lost),
        (DELIVERIES, DELIVERIES, 0),
        "each delivery received and acked exactly once"
    );
}
