//! Snapshots (`kl admin backup`): every table is carried, a snapshot of either backend loads
//! into a fresh store of either backend with nothing lost, and what was pending still works
//! there. On a fresh database per test and backend.

#[macro_use]
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use kl_core::{FunctionSettings, FunctionSpec, Runtime};
use kl_events::{Broker, CloudEvent, NewDelivery};
use kl_store::{
    AuditRecord, InvocationOutcome, InvocationStatus, SealedValue, Snapshot, SqliteBroker, Store, StoreError,
    TokenRecord, Value, snapshot_tables,
};
use serde_json::json;
use support::Db;

on_every_backend!(
    a_snapshot_carries_every_table_of_the_schema,
    a_snapshot_restores_into_a_fresh_store_of_either_backend,
    restoring_refuses_a_store_that_is_not_empty_or_a_newer_schema,
);

async fn a_snapshot_carries_every_table_of_the_schema(db: &Db) {
    let store = db.open().await;
    let mut carried: Vec<&str> = snapshot_tables().collect();
    carried.sort_unstable();
    assert_eq!(
        store.schema_tables().await.unwrap(),
        carried,
        "a table the snapshot does not carry would be lost by a backup"
    );
}

/// Fills every kind of row the platform writes, with NULLs, bytes and identity columns.
async fn populate(store: &Store) {
    store.ensure_tenant("acme").await.unwrap();
    store.ensure_tenant("beta").await.unwrap();
    store
        .insert_token(&TokenRecord {
            id: "t1".into(),
            name: "ci".into(),
            hash: "hash-of-t1".into(),
            tenant: Some("acme".into()),
            role: "developer".into(),
            created_at: Utc::now(),
            expires_at: None,
        })
        .await
        .unwrap();
    let settings = FunctionSettings::default();
    let rev = store
        .create_revision(
            "acme",
            "hello",
            &settings,
            "sources/acme/hello/d.archive",
            "d",
            42,
        )
        .await
        .unwrap();
    let spec: FunctionSpec = settings
        .resolve(Runtime::Python, &kl_core::SpecLimits::default())
        .unwrap();
    store
        .finish_revision("acme", "hello", rev.number, Ok((&spec, "sha256:abc")), 12)
        .await
        .unwrap();
    store.set_serving("acme", "hello", rev.number).await.unwrap();
    for path in ["/v1/a", "/v1/b"] {
        store
            .insert_audit(&AuditRecord {
                at: Utc::now(),
                token_id: None,
                role: None,
                caller_tenant: None,
                action: "deploy".into(),
                target_tenant: Some("acme".into()),
                method: "POST".into(),
                path: path.into(),
                outcome: "forbidden".into(),
            })
            .await
            .unwrap();
    }
    store
        .put_secret(
            "acme",
            "db",
            &[SealedValue {
                key: "PASSWORD".into(),
                key_id: "k1".into(),
                sealed: "c2VhbGVk".into(),
            }],
            10,
        )
        .await
        .unwrap();
    store
        .create_invocation("inv-1", "acme", "hello", "corr", None)
        .await
        .unwrap();
    store
        .finish_invocation(
            "acme",
            "inv-1",
            &InvocationOutcome {
                status: InvocationStatus::Succeeded,
                status_code: Some(200),
                result: Some(vec![0, 159, 146, 150, 255]),
                result_type: Some("application/octet-stream".into()),
                result_truncated: false,
                error: None,
                duration_ms: 5,
                cold_start: true,
            },
        )
        .await
        .unwrap();
    let broker = SqliteBroker::open(store, Duration::from_secs(600)).await.unwrap();
    let batch = (0..4)
        .map(|n| NewDelivery {
            tenant: "acme".into(),
            subscriber: "on-order".into(),
            event: CloudEvent::new("order", "/shop".into(), json!({ "n": n })),
        })
        .collect();
    broker.enqueue(batch).await.unwrap();
    // Two die in order, two stay pending (one of them leased).
    let mut got = broker.receive(3, Duration::from_secs(5)).await.unwrap();
    got.sort_by_key(|d| d.event.data.as_ref().and_then(|data| data["n"].as_i64()));
    let mut got = got.into_iter();
    broker.dead_letter(got.next().unwrap(), "first").await.unwrap();
    broker.dead_letter(got.next().unwrap(), "second").await.unwrap();
}

/// Rows per table by column name: the column order differs between backends.
fn by_name(snapshot: &Snapshot) -> BTreeMap<String, Vec<BTreeMap<String, Value>>> {
    snapshot
        .tables
        .iter()
        .map(|t| {
            let rows = t
                .rows
                .iter()
                .map(|row| t.columns.iter().cloned().zip(row.iter().cloned()).collect())
                .collect();
            (t.name.clone(), rows)
        })
        .collect()
}

async fn a_snapshot_restores_into_a_fresh_store_of_either_backend(db: &Db) {
    let source = db.open().await;
    populate(&source).await;
    let snapshot = source.snapshot().await.unwrap();
    let counts = snapshot.counts();
    for (table, expected) in [
        ("tenants", 2),
        ("tokens", 1),
        ("revisions", 1),
        ("audit", 2),
        ("secret_values", 1),
        ("invocations", 1),
        ("event_deliveries", 2),
        ("event_dead_letters", 2),
    ] {
        assert_eq!(counts[table], expected, "{table}");
    }
    // Through JSON, as a backup writes it.
    let snapshot: Snapshot = serde_json::from_slice(&serde_json::to_vec(&snapshot).unwrap()).unwrap();

    let mut targets = vec![Db::sqlite()];
    targets.extend(Db::postgres("snapshot_target").await);
    for target in &targets {
        let restored = target.open().await;
        restored.restore_snapshot(&snapshot).await.unwrap();
        let again = restored.snapshot().await.unwrap();
        assert_eq!(
            by_name(&again),
            by_name(&snapshot),
            "a restore loses or changes nothing"
        );

        // What was pending works on the restored store.
        assert_eq!(
            restored.tenant("acme").await.unwrap().uid,
            source.tenant("acme").await.unwrap().uid
        );
        let fn_record = restored.function("acme", "hello").await.unwrap();
        assert_eq!(fn_record.serving_revision, Some(1));
        let broker = SqliteBroker::open(&restored, Duration::from_secs(600))
            .await
            .unwrap();
        let dead: Vec<_> = broker
            .dead_letters("acme", 10)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.reason)
            .collect();
        assert_eq!(dead, ["first", "second"], "dead letters keep their order");
        broker
            .enqueue(vec![NewDelivery {
                tenant: "acme".into(),
                subscriber: "on-order".into(),
                event: CloudEvent::new("order", "/shop".into(), json!({ "n": 9 })),
            }])
            .await
            .expect("new deliveries take sequence numbers past the restored ones");
        let due = broker.receive(10, Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            due.len(),
            3,
            "both pending deliveries (the old server's lease is void) and the new one"
        );
        restored
            .insert_audit(&AuditRecord {
                at: Utc::now(),
                token_id: None,
                role: None,
                caller_tenant: None,
                action: "after".into(),
                target_tenant: None,
                method: "GET".into(),
                path: "/v1/c".into(),
                outcome: "not-found".into(),
            })
            .await
            .expect("new audit rows take ids past the restored ones");
        assert_eq!(restored.audit(10).await.unwrap()[0].action, "after");
        target.finish().await;
    }
}

async fn restoring_refuses_a_store_that_is_not_empty_or_a_newer_schema(db: &Db) {
    let source = db.open().await;
    populate(&source).await;
    let snapshot = source.snapshot().await.unwrap();
    let refused = source.restore_snapshot(&snapshot).await.unwrap_err();
    assert!(
        matches!(&refused, StoreError::Conflict(m) if m.contains("not empty")),
        "{refused}"
    );

    let fresh = Db::sqlite();
    let target = fresh.open().await;
    let newer = Snapshot {
        schema_version: snapshot.schema_version + 1,
        ..snapshot.clone()
    };
    let refused = target.restore_snapshot(&newer).await.unwrap_err();
    assert!(refused.to_string().contains("newer than this kl"), "{refused}");
    let mut unknown = snapshot.clone();
    unknown.tables[0].columns.push("colour".into());
    for row in &mut unknown.tables[0].rows {
        row.push(Value::Null);
    }
    let refused = target.restore_snapshot(&unknown).await.unwrap_err();
    assert!(refused.to_string().contains("tenants.colour"), "{refused}");
    assert!(
        target.is_empty().await.unwrap(),
        "a refused restore writes nothing"
    );
}
