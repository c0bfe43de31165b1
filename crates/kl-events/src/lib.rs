//! CloudEvents and the event bus. The bus is a trait so the in-process default and a broker
//! (RabbitMQ) are interchangeable; lifecycle events carry the original Knative Lambda catalog's
//! types, source and subject so its producers and consumers keep working.

pub mod broker;
mod bus;
mod cloudevent;

pub use broker::{BoxError, Broker, BrokerError, DeadLetter, Delivery, NewDelivery, Receipt};
pub use bus::{EventBus, InProcessBus};
pub use cloudevent::{CloudEvent, lifecycle};

/// Type prefix of every event the platform emits or accepts (DESIGN §3).
pub const TYPE_PREFIX: &str = "io.knative.lambda.";

/// Lifecycle event types emitted by builds and functions.
pub mod types {
    pub const BUILD_STARTED: &str = "io.knative.lambda.lifecycle.build.started";
    pub const BUILD_COMPLETED: &str = "io.knative.lambda.lifecycle.build.completed";
    pub const BUILD_FAILED: &str = "io.knative.lambda.lifecycle.build.failed";
    pub const FUNCTION_READY: &str = "io.knative.lambda.lifecycle.function.ready";
    pub const FUNCTION_DELETED: &str = "io.knative.lambda.lifecycle.function.deleted";
}
