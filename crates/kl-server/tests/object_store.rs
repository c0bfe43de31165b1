//! The object store the server opens, exercised the same way against the local filesystem and
//! against a real S3 protocol server on loopback (s3s-fs, in-process): round trips, not-found
//! mapping, a large object, concurrent writers, the server's key layout, and the start-up
//! check that refuses a bucket it cannot use.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use kl_server::Objects;
use kl_server::objects::{self, ObjectsError, keys};
use kl_testkit::s3::{ACCESS_KEY, REGION, S3Server, SECRET_KEY};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

const BUCKET: &str = "kl-objects";
const PREFIX: &str = "platform/prd";

/// Where a store keeps its objects.
enum Backend {
    Local(tempfile::TempDir),
    S3(S3Server),
}

impl Backend {
    fn all() -> [Backend; 2] {
        let s3 = S3Server::start();
        s3.create_bucket(BUCKET);
        [Backend::Local(tempfile::tempdir().unwrap()), Backend::S3(s3)]
    }

    fn name(&self) -> &'static str {
        match self {
            Backend::Local(_) => "local",
            Backend::S3(_) => "s3",
        }
    }

    /// The store as the server opens it (S3: under a prefix, as `s3://BUCKET/PREFIX`).
    async fn open(&self) -> Arc<dyn ObjectStore> {
        match self {
            Backend::Local(dir) => objects::open(&Objects::Local, &dir.path().join("objects")).await,
            Backend::S3(server) => objects::open_s3(builder(server), BUCKET, PREFIX).await,
        }
        .unwrap_or_else(|e| panic!("{}: the store opens: {e}", self.name()))
    }

    /// The file a key ends up in.
    fn file(&self, key: &str) -> PathBuf {
        match self {
            Backend::Local(dir) => dir.path().join("objects").join(key),
            Backend::S3(server) => server.bucket_dir(BUCKET).join(PREFIX).join(key),
        }
    }
}

fn builder(server: &S3Server) -> AmazonS3Builder {
    AmazonS3Builder::new()
        .with_endpoint(server.endpoint())
        .with_access_key_id(ACCESS_KEY)
        .with_secret_access_key(SECRET_KEY)
        .with_region(REGION)
        .with_allow_http(true)
}

async fn read(store: &dyn ObjectStore, key: &str) -> Vec<u8> {
    store
        .get(&Path::from(key))
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e}"))
        .bytes()
        .await
        .expect("body read")
        .to_vec()
}

async fn keys_under(store: &dyn ObjectStore, prefix: &str) -> Vec<String> {
    let mut found: Vec<String> = store
        .list(Some(&Path::from(prefix)))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .expect("listing");
    found.sort();
    found
}

#[tokio::test]
async fn put_get_head_list_and_delete_round_trip() {
    for backend in Backend::all() {
        let store = backend.open().await;
        let name = backend.name();
        let key = keys::source("acme", "hello", "ab12");
        store
            .put(&Path::from(key.as_str()), b"source bytes".to_vec().into())
            .await
            .unwrap();
        assert_eq!(read(store.as_ref(), &key).await, b"source bytes", "{name}");
        let meta = store.head(&Path::from(key.as_str())).await.unwrap();
        assert_eq!(meta.size, 12, "{name}");
        assert_eq!(
            keys_under(store.as_ref(), "sources/acme").await,
            [key.as_str()],
            "{name}"
        );
        store
            .put(&Path::from(key.as_str()), b"replaced".to_vec().into())
            .await
            .unwrap();
        assert_eq!(
            read(store.as_ref(), &key).await,
            b"replaced",
            "{name}: a put replaces"
        );
        store.delete(&Path::from(key.as_str())).await.unwrap();
        assert!(keys_under(store.as_ref(), "sources").await.is_empty(), "{name}");
        assert!(!backend.file(&key).exists(), "{name}: the file is gone");
    }
}

#[tokio::test]
async fn missing_objects_are_not_found() {
    for backend in Backend::all() {
        let store = backend.open().await;
        let missing = Path::from("uploads/acme/never.tar.gz");
        for (op, result) in [
            ("get", store.get(&missing).await.map(drop)),
            ("head", store.head(&missing).await.map(drop)),
        ] {
            assert!(
                matches!(result, Err(object_store::Error::NotFound { .. })),
                "{}: {op} of a missing key: {result:?}",
                backend.name()
            );
        }
        assert!(keys_under(store.as_ref(), "uploads/nobody").await.is_empty());
    }
}

#[tokio::test]
async fn a_large_object_round_trips_byte_for_byte() {
    // Not all one byte value, so a misplaced chunk would show.
    let big: Vec<u8> = (0..24u32 << 20).map(|i| (i % 251) as u8).collect();
    for backend in Backend::all() {
        let store = backend.open().await;
        let key = keys::upload("acme", "big.tar.gz");
        store
            .put(&Path::from(key.as_str()), big.clone().into())
            .await
            .unwrap();
        let back = read(store.as_ref(), &key).await;
        assert!(
            back == big,
            "{}: {} bytes back of {}",
            backend.name(),
            back.len(),
            big.len()
        );
        assert_eq!(
            std::fs::metadata(backend.file(&key)).unwrap().len(),
            big.len() as u64
        );
    }
}

#[tokio::test]
async fn concurrent_writers_neither_lose_nor_tear_objects() {
    for backend in Backend::all() {
        let store = backend.open().await;
        let name = backend.name();
        let writers: Vec<_> = (0..24u8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    // Half write keys of their own; the rest race on one key.
                    let key = if i % 2 == 0 {
                        keys::upload("acme", &format!("own-{i}"))
                    } else {
                        keys::upload("acme", "shared")
                    };
                    let body = vec![i; 256 << 10];
                    store.put(&Path::from(key.as_str()), body.into()).await
                })
            })
            .collect();
        for writer in writers {
            writer
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("{name}: a put failed: {e}"));
        }
        let listed = keys_under(store.as_ref(), &keys::uploads("acme")).await;
        assert_eq!(
            listed.len(),
            13,
            "{name}: 12 own keys and the shared one: {listed:?}"
        );
        for i in (0..24u8).step_by(2) {
            let body = read(store.as_ref(), &keys::upload("acme", &format!("own-{i}"))).await;
            assert!(
                body.len() == 256 << 10 && body.iter().all(|b| *b == i),
                "{name}: own-{i}"
            );
        }
        let shared = read(store.as_ref(), &keys::upload("acme", "shared")).await;
        let first = shared[0];
        assert!(
            first % 2 == 1 && shared.len() == 256 << 10 && shared.iter().all(|b| *b == first),
            "{name}: the shared key holds one writer's whole body"
        );
    }
}

#[tokio::test]
async fn the_server_key_layout_keeps_tenants_apart() {
    for backend in Backend::all() {
        let store = backend.open().await;
        let name = backend.name();
        let written = [
            keys::upload("acme", "app.tar.gz"),
            keys::upload("acme", "lib.zip"),
            keys::upload("acme2", "app.tar.gz"),
            keys::source("acme", "hello", "0f1e"),
            keys::context("acme", "hello", 1),
        ];
        for key in &written {
            store
                .put(&Path::from(key.as_str()), key.as_bytes().to_vec().into())
                .await
                .unwrap();
            assert!(backend.file(key).is_file(), "{name}: {key} is at its path");
        }
        assert_eq!(
            keys_under(store.as_ref(), &keys::uploads("acme")).await,
            [
                keys::upload("acme", "app.tar.gz"),
                keys::upload("acme", "lib.zip")
            ],
            "{name}: a tenant's uploads, not a tenant whose name extends it"
        );
        assert_eq!(
            keys_under(store.as_ref(), "").await.len(),
            written.len(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_bucket_the_server_cannot_use_is_refused_at_start() {
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    let missing = objects::open_s3(builder(&server), "no-such-bucket", "").await;
    assert!(
        matches!(&missing, Err(ObjectsError::NoBucket { bucket }) if bucket == "no-such-bucket"),
        "{:?}",
        missing.map(drop)
    );
    let forged = builder(&server).with_secret_access_key("wrong-secret");
    let refused = objects::open_s3(forged, BUCKET, "").await.map(drop).unwrap_err();
    assert!(matches!(refused, ObjectsError::Denied { .. }), "{refused:?}");
    // A port nobody listens on: refused quickly, not after the client's retries.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let started = Instant::now();
    let unreachable = objects::open_s3(
        builder(&server).with_endpoint(format!("http://{closed}")),
        BUCKET,
        "",
    )
    .await
    .map(drop)
    .unwrap_err();
    let message = unreachable.to_string();
    assert!(
        matches!(unreachable, ObjectsError::Unreachable { .. }),
        "{message}"
    );
    assert!(
        message.contains(BUCKET) && message.contains("AWS_ENDPOINT"),
        "{message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}
