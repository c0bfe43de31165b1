//! The secrets tables, revision copies and environments, on a fresh database per test and
//! backend.

#[macro_use]
mod support;

use kl_core::{
    EnvironmentSpec, FunctionSettings, FunctionSpec, Quota, Quotas, Runtime, SpecLimits, TenantSpec,
};
use kl_store::{RevisionAt, RevisionStatus, SealedValue, Store, StoreError};
use support::Db;

on_every_backend!(
    secrets_are_created_replaced_with_a_new_version_listed_and_deleted,
    a_tenant_keeps_at_most_its_limit_of_secrets_but_may_replace_them,
    resealing_skips_a_value_replaced_meanwhile,
    a_copied_revision_is_ready_with_the_same_artifact_and_adds_no_storage,
    environments_share_at_most_the_whole_tenant_and_go_with_their_tenant,
);

async fn store(db: &Db) -> Store {
    let store = db.open().await;
    store.ensure_tenant("acme").await.unwrap();
    store
}

fn sealed(key: &str, blob: &str) -> SealedValue {
    SealedValue {
        key: key.to_owned(),
        key_id: "k1".to_owned(),
        sealed: blob.to_owned(),
    }
}

async fn secrets_are_created_replaced_with_a_new_version_listed_and_deleted(db: &Db) {
    let store = store(db).await;
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

async fn a_tenant_keeps_at_most_its_limit_of_secrets_but_may_replace_them(db: &Db) {
    let store = store(db).await;
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

async fn resealing_skips_a_value_replaced_meanwhile(db: &Db) {
    let store = store(db).await;
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

async fn a_copied_revision_is_ready_with_the_same_artifact_and_adds_no_storage(db: &Db) {
    let store = store(db).await;
    let settings = FunctionSettings::default();
    let spec: FunctionSpec = settings.resolve(Runtime::Python, &SpecLimits::default()).unwrap();
    let first = store
        .create_revision("acme", "f", &settings, "src/key", "d1", 100)
        .await
        .unwrap();
    let f = RevisionAt {
        tenant: "acme",
        function: "f",
    };
    assert!(matches!(
        store.copy_revision(f, first.number, f, None).await,
        Err(StoreError::Conflict(_))
    ));
    store
        .finish_revision("acme", "f", first.number, Ok((&spec, "art1")), 5)
        .await
        .unwrap();
    let copy = store.copy_revision(f, first.number, f, None).await.unwrap();
    assert_eq!(copy.number, first.number + 1);
    assert_eq!(copy.status, RevisionStatus::Ready);
    assert_eq!(copy.artifact_digest.as_deref(), Some("art1"));
    assert_eq!(copy.spec, Some(spec));
    assert_eq!(copy.source_key, "src/key");
    assert_eq!(store.stored_bytes("acme").await.unwrap(), 100);
    assert!(matches!(
        store.copy_revision(f, 99, f, None).await,
        Err(StoreError::NotFound(_))
    ));

    // Into another tenant: admitted against its quotas, counting the shared source there.
    let spec_of = |functions: u32| TenantSpec {
        quotas: Quotas {
            functions,
            ..Quotas::default()
        },
        ..TenantSpec::default()
    };
    store.create_tenant("full", &spec_of(0)).await.unwrap();
    let full = RevisionAt {
        tenant: "full",
        function: "f",
    };
    let refused = store.copy_revision(f, first.number, full, None).await;
    assert!(
        matches!(&refused, Err(StoreError::Quota(q)) if q.quota == Quota::Functions),
        "{refused:?}"
    );
    store.create_tenant("prod", &spec_of(1)).await.unwrap();
    let prod = RevisionAt {
        tenant: "prod",
        function: "f",
    };
    let promoted = store.copy_revision(f, first.number, prod, None).await.unwrap();
    assert_eq!((promoted.tenant.as_str(), promoted.number), ("prod", 1));
    assert_eq!(promoted.artifact_digest.as_deref(), Some("art1"));
    assert_eq!(store.stored_bytes("prod").await.unwrap(), 100);
}

async fn environments_share_at_most_the_whole_tenant_and_go_with_their_tenant(db: &Db) {
    let store = store(db).await;
    let env = |share| EnvironmentSpec {
        share,
        priority: None,
    };
    let made = store
        .create_environment("acme", "prod", &env(60), "acme-prod", &TenantSpec::default())
        .await
        .unwrap();
    assert_eq!(made.env_tenant, "acme-prod");
    assert!(store.tenant_exists("acme-prod").await.unwrap());
    let over = store
        .create_environment("acme", "dev", &env(41), "acme-dev", &TenantSpec::default())
        .await;
    assert!(
        matches!(&over, Err(StoreError::Conflict(m)) if m.contains("exceed 100%")),
        "{over:?}"
    );
    assert!(
        !store.tenant_exists("acme-dev").await.unwrap(),
        "a refusal creates nothing"
    );
    let again = store
        .create_environment("acme", "prod", &env(10), "acme-prod", &TenantSpec::default())
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))));
    store
        .create_environment("acme", "dev", &env(40), "acme-dev", &TenantSpec::default())
        .await
        .unwrap();
    let names: Vec<_> = store
        .environments("acme")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["dev", "prod"]);
    assert_eq!(
        store.environment_owner("acme-dev").await.unwrap().as_deref(),
        Some("acme")
    );
    assert_eq!(store.environment_owner("acme").await.unwrap(), None);
    store.delete_environment("acme", "dev").await.unwrap();
    assert!(!store.tenant_exists("acme-dev").await.unwrap());
    assert!(matches!(
        store.delete_environment("acme", "dev").await,
        Err(StoreError::NotFound(_))
    ));
}
