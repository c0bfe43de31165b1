//! The durable delivery queue under eventing (DESIGN §2, events path): ingress enqueues one
//! delivery per matching trigger, a dispatcher receives, invokes and then acks, retries later
//! or dead-letters. "Accepted means persisted": `enqueue` returns only once the batch is
//! durable; delivery is at-least-once, so a receiver that dies holding a delivery (or whose
//! lease runs out) sees it again. Two implementations: the embedded one in the metadata store
//! (`kl_store::SqliteBroker`) and RabbitMQ (`amqp::AmqpBroker`).

#[cfg(feature = "amqp")]
pub mod amqp;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

use std::any::Any;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use thiserror::Error;

use crate::CloudEvent;

/// One event to deliver to one subscriber (a trigger).
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    pub tenant: String,
    /// The trigger the event matched; the dispatcher resolves it to a function.
    pub subscriber: String,
    pub event: CloudEvent,
}

/// A delivery handed out by [`Broker::receive`]: leased to the receiver until it settles it
/// with [`Broker::ack`], [`Broker::retry`] or [`Broker::dead_letter`].
#[derive(Debug)]
pub struct Delivery {
    /// Unique in the broker and stable across retries, dead-lettering and replay.
    pub id: String,
    pub tenant: String,
    pub subscriber: String,
    pub event: CloudEvent,
    /// 0 on the first delivery, one more after each [`Broker::retry`]. A redelivery after a
    /// lost lease keeps the attempt: it is the same attempt, tried again.
    pub attempt: u32,
    /// When the delivery entered the queue (for a replayed one: when it was replayed).
    pub enqueued_at: DateTime<Utc>,
    /// The backend's proof of the lease, spent by settling the delivery.
    pub receipt: Receipt,
}

/// A delivery that was given up on, kept per tenant for `kl events dlq ls|show|replay`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The delivery's id.
    pub id: String,
    pub tenant: String,
    pub subscriber: String,
    pub event: CloudEvent,
    /// The attempt that was dead-lettered.
    pub attempt: u32,
    pub reason: String,
    pub enqueued_at: DateTime<Utc>,
    pub dead_at: DateTime<Utc>,
}

/// A backend-private lease handle. Opaque so a dispatcher cannot forge or reuse one; each
/// backend puts its own type in and takes it back out when the delivery is settled.
pub struct Receipt(Box<dyn Any + Send + Sync>);

impl Receipt {
    pub fn new<T: Any + Send + Sync>(lease: T) -> Receipt {
        Receipt(Box::new(lease))
    }

    /// The backend's lease, or `ForeignReceipt` when the delivery came from another broker.
    pub fn into_lease<T: Any>(self, id: &str) -> Result<T, BrokerError> {
        self.0
            .downcast::<T>()
            .map(|lease| *lease)
            .map_err(|_| BrokerError::ForeignReceipt { id: id.to_owned() })
    }
}

impl fmt::Debug for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Receipt(..)")
    }
}

/// `now + by`, saturating: a delay too long to represent is "never", not a panic.
pub fn due_after(now: DateTime<Utc>, by: Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(by)
        .ok()
        .and_then(|by| now.checked_add_signed(by))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The error type of a boxed backend cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What can go wrong queueing or delivering events.
#[derive(Debug, Error)]
pub enum BrokerError {
    /// The backend failed the operation (a database error, an AMQP channel error, a publish
    /// the broker refused or could not route). Nothing in the operation can be assumed done.
    #[error("{backend} broker: {source}")]
    Backend {
        backend: &'static str,
        #[source]
        source: BoxError,
    },
    /// The broker stayed unreachable for the whole reconnect bound; nothing was accepted.
    #[error("{backend} broker unreachable for {waited:?}; last error: {last}")]
    Unavailable {
        backend: &'static str,
        waited: Duration,
        last: String,
    },
    /// The delivery's lease ended before it was settled (it expired, or the channel that
    /// carried it closed); it was or will be delivered again, so this settlement is void.
    #[error("delivery {id}: its lease was lost, so it will be delivered again")]
    LeaseLost { id: String },
    /// No dead letter with this id in this tenant.
    #[error("dead letter {id:?} not found in tenant {tenant:?}")]
    NotFound { tenant: String, id: String },
    /// A stored or transported delivery no longer decodes.
    #[error("delivery {id:?} is malformed: {reason}")]
    Corrupt { id: String, reason: String },
    /// A name does not fit the backend's limits (AMQP names are at most 255 bytes).
    #[error("{0}")]
    Invalid(String),
    /// A delivery received from one broker was settled on another.
    #[error("delivery {id} was not received from this broker")]
    ForeignReceipt { id: String },
}

impl BrokerError {
    pub fn backend(backend: &'static str, source: impl Into<BoxError>) -> BrokerError {
        BrokerError::Backend {
            backend,
            source: source.into(),
        }
    }
}

/// The durable delivery queue. Settling takes the [`Delivery`] by value: whatever the
/// outcome, a delivery is settled at most once, and one whose settlement failed is simply
/// delivered again when its lease ends.
#[async_trait]
pub trait Broker: Send + Sync {
    /// Queues every delivery of the batch; returns once all are durable (SQLite: committed in
    /// one transaction; RabbitMQ: every publish confirmed).
    async fn enqueue(&self, batch: Vec<NewDelivery>) -> Result<(), BrokerError>;

    /// Up to `max` due deliveries, waiting up to `wait` for the first. Each is leased to the
    /// caller: not handed out again unless its lease ends (SQLite: the lease time passes or
    /// the server restarts; RabbitMQ: the channel closes or `consumer_timeout` passes).
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BrokerError>;

    /// Done: the delivery is removed.
    async fn ack(&self, delivery: Delivery) -> Result<(), BrokerError>;

    /// Delivers it again, with `attempt + 1`, no earlier than `after` from now.
    async fn retry(&self, delivery: Delivery, after: Duration) -> Result<(), BrokerError>;

    /// Gives up: moves it to its tenant's dead letters with the reason.
    async fn dead_letter(&self, delivery: Delivery, reason: &str) -> Result<(), BrokerError>;

    /// The tenant's oldest `limit` dead letters, oldest first.
    async fn dead_letters(&self, tenant: &str, limit: usize) -> Result<Vec<DeadLetter>, BrokerError>;

    /// One of the tenant's dead letters.
    async fn find_dead_letter(&self, tenant: &str, id: &str) -> Result<Option<DeadLetter>, BrokerError>;

    /// Moves a dead letter back into the queue with attempt 0; `NotFound` if the tenant has
    /// no such dead letter (which includes one already replayed).
    async fn replay(&self, tenant: &str, id: &str) -> Result<(), BrokerError>;
}
