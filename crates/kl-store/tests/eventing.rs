//! The eventing tables: triggers, the idempotency window of accepted events, and async
//! invocations, on a fresh database per test and backend.

#[macro_use]
mod support;

use chrono::{Duration, Utc};
use kl_events::delivery::Sink;
use kl_events::trigger::TriggerSpec;
use kl_store::{InvocationOutcome, InvocationStatus, Store, StoreError};
use serde_json::json;
use support::Db;

on_every_backend!(
    triggers_are_created_once_replaced_listed_and_deleted,
    accepted_events_are_remembered_for_the_window_only,
    invocations_go_from_queued_to_their_outcome,
);

async fn store(db: &Db) -> Store {
    let store = db.open().await;
    store.ensure_tenant("acme").await.unwrap();
    store
}

fn spec(function: &str) -> TriggerSpec {
    serde_json::from_value(json!({"function": function, "filters": [{"exact": {"type": "t"}}]})).unwrap()
}

async fn triggers_are_created_once_replaced_listed_and_deleted(db: &Db) {
    let store = store(db).await;
    let created = store.create_trigger("acme", "on-t", &spec("f")).await.unwrap();
    assert_eq!(created.spec, spec("f"));
    assert!(matches!(
        store.create_trigger("acme", "on-t", &spec("g")).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.create_trigger("nope", "on-t", &spec("g")).await,
        Err(StoreError::NotFound(_))
    ));
    let (replaced, was_created) = store.put_trigger("acme", "on-t", &spec("g")).await.unwrap();
    assert!(!was_created);
    assert_eq!(replaced.spec.function, "g");
    assert_eq!(replaced.created_at, created.created_at);
    let (_, was_created) = store.put_trigger("acme", "other", &spec("h")).await.unwrap();
    assert!(was_created);
    let names: Vec<String> = store
        .triggers()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["on-t", "other"]);
    assert!(store.delete_trigger("acme", "on-t").await.unwrap());
    assert!(!store.delete_trigger("acme", "on-t").await.unwrap());
    assert!(matches!(
        store.trigger("acme", "on-t").await,
        Err(StoreError::NotFound(_))
    ));
}

async fn accepted_events_are_remembered_for_the_window_only(db: &Db) {
    let store = store(db).await;
    let key = |id: &str| ("/src".to_owned(), id.to_owned());
    let long_ago = Utc::now() - Duration::hours(25);
    store
        .record_accepted("acme", &[key("old")], long_ago)
        .await
        .unwrap();
    store
        .record_accepted("acme", &[key("new")], Utc::now())
        .await
        .unwrap();
    let window = Utc::now() - Duration::hours(24);
    let seen = store
        .accepted_events("acme", &[key("old"), key("new"), key("never")], window)
        .await
        .unwrap();
    assert_eq!(seen.len(), 1);
    assert!(seen.contains(&key("new")));
    store.ensure_tenant("other").await.unwrap();
    assert!(
        store
            .accepted_events("other", &[key("new")], window)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.forget_accepted_before(window).await.unwrap(), 1);
}

async fn invocations_go_from_queued_to_their_outcome(db: &Db) {
    let store = store(db).await;
    let sink = Sink::Function("sink".into());
    store
        .create_invocation("inv-1", "acme", "f", "corr-1", Some(&sink))
        .await
        .unwrap();
    let queued = store.invocation("acme", "inv-1").await.unwrap();
    assert_eq!(queued.status, InvocationStatus::Queued);
    assert_eq!(queued.destination, Some(sink));
    assert_eq!(queued.outcome, None);
    let running = store.start_invocation("acme", "inv-1").await.unwrap();
    assert_eq!((running.status, running.attempts), (InvocationStatus::Running, 1));
    let outcome = InvocationOutcome {
        status: InvocationStatus::Succeeded,
        status_code: Some(200),
        result: Some(b"{\"ok\":true}".to_vec()),
        result_type: Some("application/json".into()),
        result_truncated: false,
        error: None,
        duration_ms: 12,
        cold_start: true,
    };
    store.finish_invocation("acme", "inv-1", &outcome).await.unwrap();
    let done = store.invocation("acme", "inv-1").await.unwrap();
    assert_eq!(done.status, InvocationStatus::Succeeded);
    assert_eq!(done.outcome, Some(outcome));
    assert!(done.finished_at.is_some());
    assert!(matches!(
        store.invocation("other", "inv-1").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.start_invocation("acme", "missing").await,
        Err(StoreError::NotFound(_))
    ));

    store
        .create_invocation("inv-2", "acme", "f", "corr-2", None)
        .await
        .unwrap();
    let cut = InvocationOutcome {
        status: InvocationStatus::Failed,
        status_code: None,
        result: Some(vec![0, 159, 146, 150, 255]),
        result_type: None,
        result_truncated: true,
        error: Some("crashed".into()),
        duration_ms: u64::MAX,
        cold_start: false,
    };
    store.finish_invocation("acme", "inv-2", &cut).await.unwrap();
    let failed = store.invocation("acme", "inv-2").await.unwrap();
    assert_eq!(failed.destination, None);
    let stored = InvocationOutcome {
        duration_ms: i64::MAX as u64,
        ..cut
    };
    assert_eq!(
        failed.outcome,
        Some(stored),
        "bytes, flags and a clamped duration come back"
    );
    let later = Utc::now() + Duration::seconds(1);
    assert_eq!(store.forget_invocations_before(later).await.unwrap(), 2);
    assert!(matches!(
        store.invocation("acme", "inv-2").await,
        Err(StoreError::NotFound(_))
    ));
}
