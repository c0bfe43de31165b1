//! The broker conformance suite against the embedded broker, on a fresh database per test.

use std::time::Duration;

use async_trait::async_trait;
use kl_events::broker::conformance::Harness;
use kl_store::{SqliteBroker, Store};

/// Short, so the lost-lease test is quick; long enough that a busy machine acks in time.
const LEASE: Duration = Duration::from_secs(3);

struct SqliteHarness {
    dir: tempfile::TempDir,
}

async fn setup() -> Option<SqliteHarness> {
    Some(SqliteHarness {
        dir: tempfile::tempdir().expect("temp dir"),
    })
}

#[async_trait]
impl Harness for SqliteHarness {
    type Broker = SqliteBroker;

    async fn open(&self) -> SqliteBroker {
        let store = Store::open_sqlite(&self.dir.path().join("kl.db"))
            .await
            .expect("open the store");
        SqliteBroker::open(&store, LEASE).await.expect("open the broker")
    }

    /// The lease is all a receiver holds: once it expires, the same broker hands it out again.
    async fn kill_receiver(&self, broker: SqliteBroker) -> SqliteBroker {
        broker
    }

    async fn restart(&self, broker: SqliteBroker) -> SqliteBroker {
        drop(broker);
        self.open().await
    }
}

kl_events::broker_conformance_tests!(setup);
