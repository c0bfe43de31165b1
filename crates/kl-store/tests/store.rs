//! Tenants, tokens, the audit log, functions, revisions and quotas, on a fresh database per
//! test and backend.

#[macro_use]
mod support;

use chrono::{DateTime, Duration, Utc};
use kl_core::{ByteQuantity, FunctionSettings, Quota, Runtime, SpecLimits, TenantSpec};
use kl_store::{AuditRecord, RevisionStatus, Store, StoreError, TokenRecord};
use support::Db;

on_every_backend!(
    tenants_are_created_once_with_their_own_uid_and_listed_bytewise,
    tenants_with_functions_are_not_deleted,
    tokens_and_denials_are_kept,
    revisions_are_numbered_built_served_and_deleted_with_their_function,
    quotas_refuse_the_deploy_past_the_limit,
    concurrent_deploys_never_overshoot_the_functions_quota,
    state_survives_a_reopen,
);

fn quota(functions: u32, storage: u64) -> TenantSpec {
    let mut spec = TenantSpec::default();
    spec.quotas.functions = functions;
    spec.quotas.storage = ByteQuantity(storage);
    spec
}

/// Revision 1.. of `function`, from a 10-byte upload.
async fn deploy(store: &Store, tenant: &str, function: &str) -> Result<i64, StoreError> {
    let revision = store
        .create_revision(
            tenant,
            function,
            &FunctionSettings::default(),
            &format!("sources/{function}"),
            "sha256:abc",
            10,
        )
        .await?;
    Ok(revision.number)
}

async fn tenants_are_created_once_with_their_own_uid_and_listed_bytewise(db: &Db) {
    let store = db.open().await;
    assert!(store.ensure_tenant("b").await.unwrap());
    assert!(
        !store.ensure_tenant("b").await.unwrap(),
        "a second ensure creates nothing"
    );
    let spec = quota(3, 1000);
    let created = store.create_tenant("a-c", &spec).await.unwrap();
    assert_eq!(created.spec, spec);
    assert!(matches!(
        store.create_tenant("a-c", &TenantSpec::default()).await,
        Err(StoreError::Conflict(_))
    ));
    store.create_tenant("ab", &TenantSpec::default()).await.unwrap();
    store.ensure_tenant("B").await.unwrap();
    let tenants = store.tenants().await.unwrap();
    let names: Vec<&str> = tenants.iter().map(|t| t.name.as_str()).collect();
    // Bytewise, as SQLite compares; a locale collation would put "B" after "ab".
    assert_eq!(names, ["B", "a-c", "ab", "b"]);
    let mut uids: Vec<u32> = tenants.iter().map(|t| t.uid).collect();
    uids.sort_unstable();
    assert_eq!(
        uids,
        [100_001, 100_002, 100_003, 100_004],
        "one uid each, from 100001 up"
    );
    assert!(store.tenant_exists("ab").await.unwrap());
    assert!(!store.tenant_exists("zz").await.unwrap());

    let updated = store.update_tenant("ab", &spec).await.unwrap();
    assert_eq!(updated.spec, spec);
    assert!(matches!(
        store.update_tenant("zz", &spec).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(store.tenant("zz").await, Err(StoreError::NotFound(_))));
}

async fn tenants_with_functions_are_not_deleted(db: &Db) {
    let store = db.open().await;
    store.ensure_tenant("acme").await.unwrap();
    deploy(&store, "acme", "f").await.unwrap();
    assert!(matches!(
        store.delete_tenant("acme").await,
        Err(StoreError::Conflict(_))
    ));
    assert!(store.delete_function("acme", "f").await.unwrap());
    store.delete_tenant("acme").await.unwrap();
    assert!(matches!(
        store.delete_tenant("acme").await,
        Err(StoreError::NotFound(_))
    ));
}

fn token(id: &str, tenant: Option<&str>, created_at: DateTime<Utc>) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        name: format!("holder of {id}"),
        hash: format!("hash-{id}"),
        tenant: tenant.map(str::to_owned),
        role: "developer".into(),
        created_at,
        expires_at: None,
    }
}

async fn tokens_and_denials_are_kept(db: &Db) {
    let store = db.open().await;
    store.ensure_tenant("acme").await.unwrap();
    let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let platform = token("t-admin", None, t0);
    let expiring = TokenRecord {
        expires_at: Some(t0 + Duration::days(30)),
        ..token("t-acme", Some("acme"), t0 + Duration::seconds(1))
    };
    store.insert_token(&platform).await.unwrap();
    store.insert_token(&expiring).await.unwrap();
    assert!(
        store
            .insert_token(&token("t-other", None, t0 + Duration::seconds(2)))
            .await
            .is_ok(),
        "distinct hashes"
    );
    assert!(
        matches!(
            store.insert_token(&token("t-admin", None, t0)).await,
            Err(StoreError::Db(_))
        ),
        "ids are unique"
    );
    let tokens = store.tokens().await.unwrap();
    let got: Vec<_> = tokens
        .iter()
        .map(|t| (t.id.as_str(), t.tenant.as_deref(), t.expires_at))
        .collect();
    assert_eq!(
        got,
        [
            ("t-admin", None, None),
            ("t-acme", Some("acme"), expiring.expires_at),
            ("t-other", None, None),
        ]
    );
    assert!(store.delete_token("t-other").await.unwrap());
    assert!(!store.delete_token("t-other").await.unwrap());
    store.delete_tenant("acme").await.unwrap();
    let left: Vec<String> = store.tokens().await.unwrap().into_iter().map(|t| t.id).collect();
    assert_eq!(left, ["t-admin"], "a tenant's tokens go with it");

    for n in 0..3 {
        store
            .insert_audit(&AuditRecord {
                at: t0 + Duration::seconds(n),
                token_id: (n > 0).then(|| "t-admin".to_owned()),
                role: None,
                caller_tenant: None,
                action: "deploy".into(),
                target_tenant: Some("acme".into()),
                method: "POST".into(),
                path: format!("/v1/try/{n}"),
                outcome: "forbidden".into(),
            })
            .await
            .unwrap();
    }
    let newest: Vec<String> = store
        .audit(2)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.path)
        .collect();
    assert_eq!(
        newest,
        ["/v1/try/2", "/v1/try/1"],
        "newest first, at most the limit"
    );
}

async fn revisions_are_numbered_built_served_and_deleted_with_their_function(db: &Db) {
    let store = db.open().await;
    store.ensure_tenant("acme").await.unwrap();
    assert_eq!(deploy(&store, "acme", "f").await.unwrap(), 1);
    assert_eq!(deploy(&store, "acme", "f").await.unwrap(), 2);
    assert_eq!(
        deploy(&store, "acme", "g").await.unwrap(),
        1,
        "numbers are per function"
    );
    let spec = FunctionSettings::default()
        .resolve(Runtime::Python, &SpecLimits::default())
        .unwrap();
    store
        .finish_revision("acme", "f", 1, Ok((&spec, "sha256:artifact")), 1234)
        .await
        .unwrap();
    store
        .finish_revision("acme", "f", 2, Err("build failed: no main.py"), 5)
        .await
        .unwrap();
    store.set_serving("acme", "f", 1).await.unwrap();

    let ready = store.revision("acme", "f", 1).await.unwrap();
    assert_eq!(ready.status, RevisionStatus::Ready);
    assert_eq!(ready.spec, Some(spec));
    assert_eq!(ready.artifact_digest.as_deref(), Some("sha256:artifact"));
    assert_eq!(ready.build_ms, Some(1234));
    assert!(ready.finished_at.is_some());
    assert_eq!(ready.name(), "f-00001");
    let failed = store.revision("acme", "f", 2).await.unwrap();
    assert_eq!(failed.status, RevisionStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("build failed: no main.py"));
    let numbers: Vec<i64> = store
        .revisions("acme", "f")
        .await
        .unwrap()
        .iter()
        .map(|r| r.number)
        .collect();
    assert_eq!(numbers, [2, 1], "newest first");
    let building = store.building_revisions().await.unwrap();
    assert_eq!(
        building
            .iter()
            .map(|r| (r.function.as_str(), r.number))
            .collect::<Vec<_>>(),
        [("g", 1)]
    );

    assert_eq!(
        store.function("acme", "f").await.unwrap().serving_revision,
        Some(1)
    );
    assert_eq!(store.function("acme", "g").await.unwrap().serving_revision, None);
    store.ensure_tenant("beta").await.unwrap();
    deploy(&store, "beta", "a").await.unwrap();
    let all: Vec<(String, String)> = store
        .functions(None)
        .await
        .unwrap()
        .into_iter()
        .map(|f| (f.tenant, f.name))
        .collect();
    assert_eq!(
        all,
        [
            ("acme".into(), "f".into()),
            ("acme".into(), "g".into()),
            ("beta".into(), "a".into())
        ]
    );
    assert_eq!(store.functions(Some("beta")).await.unwrap().len(), 1);
    assert_eq!(store.function_count("acme").await.unwrap(), 2);

    assert!(store.delete_function("acme", "f").await.unwrap());
    assert!(!store.delete_function("acme", "f").await.unwrap());
    assert!(matches!(
        store.revision("acme", "f", 1).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.function("acme", "f").await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        store.stored_bytes("acme").await.unwrap(),
        10,
        "g's upload is left"
    );
}

async fn quotas_refuse_the_deploy_past_the_limit(db: &Db) {
    let store = db.open().await;
    store.create_tenant("acme", &quota(1, 25)).await.unwrap();
    deploy(&store, "acme", "f").await.unwrap();
    match deploy(&store, "acme", "g").await {
        Err(StoreError::Quota(e)) => assert_eq!(e.quota, Quota::Functions),
        other => panic!("a second function is over the quota: {other:?}"),
    }
    deploy(&store, "acme", "f").await.unwrap();
    match deploy(&store, "acme", "f").await {
        Err(StoreError::Quota(e)) => assert_eq!(e.quota, Quota::Storage),
        other => panic!("30 bytes are over the 25-byte quota: {other:?}"),
    }
    assert_eq!(
        store.stored_bytes("acme").await.unwrap(),
        20,
        "the refused upload is not kept"
    );
    assert_eq!(store.function_count("acme").await.unwrap(), 1);
    assert!(matches!(
        deploy(&store, "nobody", "f").await,
        Err(StoreError::NotFound(_))
    ));
}

/// The quota check and the insert are one atomic step under the store's write lock, on both
/// backends: of many deploys of distinct functions at once, exactly the quota's worth lands.
async fn concurrent_deploys_never_overshoot_the_functions_quota(db: &Db) {
    let store = db.open().await;
    store.create_tenant("acme", &quota(3, 1 << 30)).await.unwrap();
    let tasks: Vec<_> = (0..12)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move { deploy(&store, "acme", &format!("f{n}")).await })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        match task.await.expect("deploy task") {
            Ok(_) => admitted += 1,
            Err(StoreError::Quota(_)) => {}
            Err(e) => panic!("a deploy failed otherwise: {e}"),
        }
    }
    assert_eq!(admitted, 3);
    assert_eq!(store.function_count("acme").await.unwrap(), 3);
}

async fn state_survives_a_reopen(db: &Db) {
    let store = db.open().await;
    store.create_tenant("acme", &quota(5, 1000)).await.unwrap();
    deploy(&store, "acme", "f").await.unwrap();
    drop(store);
    let store = db.open().await;
    assert_eq!(store.tenant("acme").await.unwrap().spec, quota(5, 1000));
    assert_eq!(
        deploy(&store, "acme", "f").await.unwrap(),
        2,
        "numbering goes on from the stored state"
    );
}
