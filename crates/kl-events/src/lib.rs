//! CloudEvents and the event bus. The bus is a trait so the in-process default and a broker
//! (RabbitMQ) are interchangeable; lifecycle events carry the original Knative Lambda catalog's
//! types, source and subject so its producers and consumers keep working.
//!
//! The rest is pure logic, free of IO, for the server and the broker to build on: strict
//! CloudEvents 1.0 validation, the HTTP and AMQP protocol bindings, trigger filters, cron
//! schedules, delivery retry policy, and duplicate detection.

pub mod amqp_binding;
pub mod broker;
mod bus;
mod cloudevent;
pub mod dedupe;
pub mod delivery;
mod error;
pub mod filter;
mod header_value;
pub mod http_binding;
mod iso8601_duration;
mod json_format;
mod media_type;
mod payload;
pub mod schedule;
#[cfg(test)]
mod test_events;
mod uri;
mod validate;

pub use broker::{BoxError, Broker, BrokerError, DeadLetter, Delivery, NewDelivery, Receipt};
pub use bus::{EventBus, InProcessBus};
pub use cloudevent::{CloudEvent, SPEC_VERSION, lifecycle};
pub use error::EventError;
pub use validate::check_attribute_name;

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
