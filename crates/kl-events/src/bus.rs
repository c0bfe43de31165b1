//! The event bus seam and its in-process implementation.

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::CloudEvent;

/// Publishes events and lets components follow them.
#[async_trait]
pub trait EventBus: Send + Sync {
    /// Publishes an event to every current subscriber.
    async fn publish(&self, event: CloudEvent);
    /// Follows events published from now on.
    fn subscribe(&self) -> broadcast::Receiver<CloudEvent>;
}

/// In-process bus: a bounded broadcast channel. A subscriber that falls more than the
/// capacity behind loses the oldest events and is told so by the channel (`Lagged`).
pub struct InProcessBus {
    tx: broadcast::Sender<CloudEvent>,
}

impl InProcessBus {
    pub fn new(capacity: usize) -> InProcessBus {
        InProcessBus {
            tx: broadcast::channel(capacity).0,
        }
    }
}

#[async_trait]
impl EventBus for InProcessBus {
    async fn publish(&self, event: CloudEvent) {
        tracing::debug!(ty = %event.ty, source = %event.source, id = %event.id, "event published");
        // No subscriber is not an error: nobody is listening yet.
        let _ = self.tx.send(event);
    }

    fn subscribe(&self) -> broadcast::Receiver<CloudEvent> {
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
            bus.publish(crate::lifecycle(
                types::BUILD_STARTED,
                "t",
                "f",
                &n.to_string(),
                serde_json::Value::Null,
            ))
            .await;
        }
        for n in 0..3 {
            let ev = rx.recv().await.unwrap();
            assert_eq!(ev.extensions["correlationid"], n.to_string());
        }
    }
}
