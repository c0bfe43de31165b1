//! The store's conformance harness: every test runs once on SQLite and once on PostgreSQL
//! (`KL_TEST_POSTGRES_URL`), each on a database of its own.

#![allow(dead_code, unused_macros)]

use kl_store::Store;
use kl_testkit::postgres::FreshDatabase;

/// A fresh, empty database for one test.
pub enum Db {
    Sqlite(tempfile::TempDir),
    Postgres(FreshDatabase),
}

impl Db {
    pub fn sqlite() -> Db {
        Db::Sqlite(tempfile::tempdir().expect("temp dir"))
    }

    /// `None` (having said SKIPPED) without a test server, except in CI.
    pub async fn postgres(test: &str) -> Option<Db> {
        FreshDatabase::create(test).await.map(Db::Postgres)
    }

    /// A store on this database; again after a "restart", a store on the same data.
    pub async fn open(&self) -> Store {
        match self {
            Db::Sqlite(dir) => Store::open_sqlite(&dir.path().join("kl.db")).await,
            Db::Postgres(db) => Store::open_postgres(&db.url).await,
        }
        .expect("open the store")
    }

    /// Cleans up after a test that passed (a failed one leaves its database to look at).
    pub async fn finish(&self) {
        if let Db::Postgres(db) = self {
            db.drop_database().await;
        }
    }
}

/// Defines, for each `async fn $test(db: &Db)` in the calling module, one `#[tokio::test]` per
/// backend: `sqlite::$test` and `postgres::$test`.
macro_rules! on_every_backend {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let db = $crate::support::Db::sqlite();
                    super::$test(&db).await;
                    db.finish().await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let Some(db) = $crate::support::Db::postgres(stringify!($test)).await else {
                        return;
                    };
                    super::$test(&db).await;
                    db.finish().await;
                }
            )+
        }
    };
}
