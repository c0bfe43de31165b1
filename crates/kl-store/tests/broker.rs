//! The broker conformance suite against the embedded broker, on a fresh database per test and
//! backend.

mod support;

use std::time::Duration;

use async_trait::async_trait;
use kl_events::broker::conformance::Harness;
use kl_store::SqliteBroker;
use support::Db;

/// Short, so the lost-lease test is quick; long enough that a busy machine acks in time.
const LEASE: Duration = Duration::from_secs(3);

struct StoreHarness {
    db: Db,
}

#[async_trait]
impl Harness for StoreHarness {
    type Broker = SqliteBroker;

    async fn open(&self) -> SqliteBroker {
        let store = self.db.open().await;
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

    async fn finish(&self) {
        self.db.finish().await;
    }
}

mod sqlite {
    use super::*;

    async fn setup() -> Option<StoreHarness> {
        Some(StoreHarness { db: Db::sqlite() })
    }

    kl_events::broker_conformance_tests!(setup);
}

mod postgres {
    use super::*;

    async fn setup() -> Option<StoreHarness> {
        let db = Db::postgres("the broker conformance suite").await?;
        Some(StoreHarness { db })
    }

    kl_events::broker_conformance_tests!(setup);
}
