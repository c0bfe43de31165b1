//! Metered usage in the store: buckets merged exactly, checkpoints moved with them, budget
//! thresholds notified once; on a fresh database per test and backend.

#[macro_use]
mod support;

use std::collections::BTreeSet;

use chrono::DateTime;
use kl_core::{CgroupReading, Minute, Resources, StoredBytes, Usage, UsageBucket};
use kl_store::{InstanceCheckpoint, MeterWrite, Notified};
use support::Db;

on_every_backend!(
    buckets_merge_exactly_beyond_i64_and_query_by_range_and_tenant,
    checkpoints_move_with_their_buckets_and_finish,
    notified_thresholds_are_kept_per_period_once,
);

fn minute(index: i64) -> Minute {
    Minute::from_index(index).unwrap()
}

fn bucket(tenant: &str, function: Option<&str>, m: i64, invocations: u64, cpu: u128) -> UsageBucket {
    UsageBucket {
        tenant: tenant.into(),
        function: function.map(str::to_owned),
        minute: minute(m),
        usage: Usage {
            invocations,
            cpu_used_ns: cpu,
            ..Usage::default()
        },
    }
}

async fn buckets_merge_exactly_beyond_i64_and_query_by_range_and_tenant(db: &Db) {
    let store = db.open().await;
    let big = u128::from(u64::MAX) * 3;
    let first = MeterWrite {
        buckets: vec![
            bucket("acme", Some("f"), 10, 1, big),
            bucket("acme", Some("f"), 10, 2, 1),
            bucket("acme", None, 11, 0, 5),
            bucket("zeta", Some("g"), 12, 7, 0),
        ],
        ..MeterWrite::default()
    };
    store.record_metering(&first).await.unwrap();
    let second = MeterWrite {
        buckets: vec![bucket("acme", Some("f"), 10, 4, big)],
        ..MeterWrite::default()
    };
    store.record_metering(&second).await.unwrap();

    let all = store.usage_buckets(minute(0), minute(100), None).await.unwrap();
    assert_eq!(all.len(), 3, "one row per tenant, function and minute: {all:?}");
    assert_eq!(all[0].function, None, "tenant-wide usage keeps no function");
    assert_eq!(all[1].usage.invocations, 7);
    assert_eq!(all[1].usage.cpu_used_ns, big * 2 + 1, "u128 sums are exact");
    let acme = store
        .usage_buckets(minute(0), minute(100), Some("acme"))
        .await
        .unwrap();
    assert_eq!(acme.len(), 2);
    assert_eq!(store.first_usage_minute().await.unwrap(), Some(minute(10)));
    let half_open = store.usage_buckets(minute(11), minute(12), None).await.unwrap();
    assert_eq!(half_open.len(), 1, "[from, to) holds minute 11 only");

    assert_eq!(store.delete_usage_before(minute(12)).await.unwrap(), 2);
    let left = store.usage_buckets(minute(0), minute(100), None).await.unwrap();
    assert_eq!(left, vec![bucket("zeta", Some("g"), 12, 7, 0)]);
}

async fn checkpoints_move_with_their_buckets_and_finish(db: &Db) {
    let store = db.open().await;
    let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let checkpoint = |cpu| InstanceCheckpoint {
        instance: "i-1".into(),
        tenant: "acme".into(),
        function: "f".into(),
        reserved: Resources {
            cpu_millis: 500,
            memory_bytes: 128 << 20,
        },
        reading: CgroupReading {
            at,
            cpu_usage_ns: cpu,
            memory_bytes: 1 << 20,
        },
    };
    let storage = StoredBytes { at, bytes: 42 };
    store
        .record_metering(&MeterWrite {
            instances: vec![checkpoint(1)],
            storage: vec![("acme".into(), storage)],
            ..MeterWrite::default()
        })
        .await
        .unwrap();
    store
        .record_metering(&MeterWrite {
            instances: vec![checkpoint(2)],
            ..MeterWrite::default()
        })
        .await
        .unwrap();
    assert_eq!(store.instance_checkpoints().await.unwrap(), vec![checkpoint(2)]);
    assert_eq!(
        store.storage_checkpoints().await.unwrap(),
        vec![("acme".to_owned(), storage)]
    );
    store
        .record_metering(&MeterWrite {
            finished: vec!["i-1".into()],
            ..MeterWrite::default()
        })
        .await
        .unwrap();
    assert!(store.instance_checkpoints().await.unwrap().is_empty());
}

async fn notified_thresholds_are_kept_per_period_once(db: &Db) {
    let store = db.open().await;
    let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let key = kl_core::Period::Month.key(at);
    let notified = |threshold| Notified {
        tenant: "acme".into(),
        period_key: key.clone(),
        threshold,
    };
    for _ in 0..2 {
        store
            .record_metering(&MeterWrite {
                notified: vec![notified(50), notified(80)],
                ..MeterWrite::default()
            })
            .await
            .unwrap();
    }
    assert_eq!(
        store.notified_thresholds("acme", &key).await.unwrap(),
        BTreeSet::from([50, 80])
    );
    let next = kl_core::Period::Month.key(at + chrono::Duration::days(40));
    assert!(store.notified_thresholds("acme", &next).await.unwrap().is_empty());
}
