//! The secrets tables and revision copies, on a fresh database per test.

use kl_core::{FunctionSettings, FunctionSpec, Quota, Runtime, SpecLimits};
use kl_store::{RevisionStatus, SealedValue, Store, StoreError};

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open_sqlite(&dir.path().join("kl.db"))
        .await
        .expect("open the store");
    store.ensure_tenant("acme").await.unwrap();
    (dir, store)
}

fn sealed(key: &str, blob: &str) -> SealedValue {
    SealedValue {
        key: key.to_owned(),
        key_id: "k1".to_owned(),
        sealed: blob.to_owned(),
    }
}

#[tokio::test]
async fn secrets_are_created_replaced_with_a_new_version_listed_and_deleted() {
    let (_dir, store) = store().await;
    let created = store
        .put_secret(
            "acme",
            "db",
            &[sealed("USER", "u1"), sealed("PASSWORD", "p1")],
            10,
        )
        .await
        .unwrap();
    assert_eq!(created.version, 1);
    assert_eq!(created.keys, ["PASSWORD", "USER"]);
    let replaced = store
        .put_secret("acme", "db", &[sealed("TOKEN", "t2")], 10)
        .await
        .unwrap();
    assert_eq!(replaced.version, 2);
    assert_eq!(replaced.keys, ["TOKEN"], "a replacement drops the old keys");
    assert_eq!(replaced.created_at, created.created_at);
    store
        .put_secret("acme", "api", &[sealed("K", "k")], 10)
        .await
        .unwrap();
    let names: Vec<_> = store
        .secrets("acme")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["api", "db"]);
    assert_eq!(
        store.secret_values("acme", "db").await.unwrap(),
        [sealed("TOKEN", "t2")]
    );
    assert!(store.delete_secret("acme", "db").await.unwrap());
    assert!(!store.delete_secret("acme", "db").await.unwrap());
    assert!(matches!(
        store.secret("acme", "db").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.secret_values("acme", "db").await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_tenant_keeps_at_most_its_limit_of_secrets_but_may_replace_them() {
    let (_dir, store) = store().await;
    store
        .put_secret("acme", "a", &[sealed("K", "1")], 2)
        .await
        .unwrap();
    store
        .put_secret("acme", "b", &[sealed("K", "1")], 2)
        .await
        .unwrap();
    let refused = store.put_secret("acme", "c", &[sealed("K", "1")], 2).await;
    assert!(
        matches!(&refused, Err(StoreError::Quota(q)) if q.quota == Quota::Secrets),
        "{refused:?}"
    );
    assert!(matches!(
        store.secret("acme", "c").await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        store
            .put_secret("acme", "b", &[sealed("K", "2")], 2)
            .await
            .unwrap()
            .version,
        2
    );
}

#[tokio::test]
async fn resealing_skips_a_value_replaced_meanwhile() {
    let (_dir, store) = store().await;
    store
        .put_secret("acme", "db", &[sealed("A", "old-a"), sealed("B", "old-b")], 10)
        .await
        .unwrap();
    let stale = store.values_not_under("k2").await.unwrap();
    assert_eq!(stale.len(), 2);
    store
        .put_secret("acme", "db", &[sealed("A", "newer-a"), sealed("B", "old-b")], 10)
        .await
        .unwrap();
    let under_k2 = |blob: &str, key: &str| SealedValue {
        key: key.to_owned(),
        key_id: "k2".to_owned(),
        sealed: blob.to_owned(),
    };
    let a = &stale[0].value;
    assert!(
        !store
            .reseal("acme", "db", a, &under_k2("re-a", "A"))
            .await
            .unwrap()
    );
    let b = &stale[1].value;
    assert!(
        store
            .reseal("acme", "db", b, &under_k2("re-b", "B"))
            .await
            .unwrap()
    );
    assert_eq!(
        store.secret_values("acme", "db").await.unwrap(),
        [sealed("A", "newer-a"), under_k2("re-b", "B")]
    );
    assert_eq!(store.values_not_under("k2").await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_copied_revision_is_ready_with_the_same_artifact_and_adds_no_storage() {
    let (_dir, store) = store().await;
    let settings = FunctionSettings::default();
    let spec: FunctionSpec = settings.resolve(Runtime::Python, &SpecLimits::default()).unwrap();
    let first = store
        .create_revision("acme", "f", &settings, "src/key", "d1", 100)
        .await
        .unwrap();
    assert!(matches!(
        store.copy_revision("acme", "f", first.number).await,
        Err(StoreError::Conflict(_))
    ));
    store
        .finish_revision("acme", "f", first.number, Ok((&spec, "art1")), 5)
        .await
        .unwrap();
    let copy = store.copy_revision("acme", "f", first.number).await.unwrap();
    assert_eq!(copy.number, first.number + 1);
    assert_eq!(copy.status, RevisionStatus::Ready);
    assert_eq!(copy.artifact_digest.as_deref(), Some("art1"));
    assert_eq!(copy.spec, Some(spec));
    assert_eq!(copy.source_key, "src/key");
    assert_eq!(store.stored_bytes("acme").await.unwrap(), 100);
    assert!(matches!(
        store.copy_revision("acme", "f", 99).await,
        Err(StoreError::NotFound(_))
    ));
}
