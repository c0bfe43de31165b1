//! The live event feed: every event a tenant's broker accepted or the platform emitted, as it
//! happens, for followers such as `kl events tail`. Not durable (that is the
//! [`Broker`](crate::Broker)): a follower that falls behind loses events and is told so.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::CloudEvent;

/// An event and the tenant it belongs to (an ingested event does not say; its route does).
#[derive(Debug, Clone, PartialEq)]
pub struct TenantEvent {
    pub tenant: String,
    pub event: CloudEvent,
}

/// Publishes events and lets components follow them.
pub trait EventBus: Send + Sync {
    /// Publishes an event to every current subscriber.
    fn publish(&self, event: TenantEvent);
    /// Follows events published from now on.
    fn subscribe(&self) -> broadcast::Receiver<Arc<TenantEvent>>;
}

/// In-process bus: a bounded broadcast channel. A subscriber that falls more than the
/// capacity behind loses the oldest events and is told so by the channel (`Lagged`).
pub struct InProcessBus {
    tx: broadcast::Sender<Arc<TenantEvent>>,
}

impl InProcessBus {
    pub fn new(capacity: usize) -> InProcessBus {
        InProcessBus {
            tx: broadcast::channel(capacity).0,
        }
    }
}

impl EventBus for InProcessBus {
    fn publish(&self, event: TenantEvent) {
        tracing::debug!(tenant = %event.tenant, ty = %event.event.ty, source = %event.event.source, id = %event.event.id, "event published");
        // No subscriber is not an error: nobody is listening yet.
        let _ = self.tx.send(Arc::new(event));
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<TenantEvent>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types;

    #[tokio::test]
    async fn subscribers_receive_published_events_in_order() {
        let bus = InProcessBus::new(16);
        let mut rx = bus.subscribe();
        for n in 0..3 {
            bus.publish(TenantEvent {
                tenant: "t".into(),
                event: crate::lifecycle(
                    types::BUILD_STARTED,
                    "t",
                    "f",
                    &n.to_string(),
                    serde_json::Value::Null,
                ),
            });
        }
        for n in 0..3 {
            let published = rx.recv().await.unwrap();
            assert_eq!(published.tenant, "t");
            assert_eq!(published.event.extensions["correlationid"], n.to_string());
        }
    }
}
