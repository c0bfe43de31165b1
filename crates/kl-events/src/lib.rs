//! CloudEvents, the durable broker (embedded or RabbitMQ, behind one trait) and the live feed;
//! lifecycle events carry the original Knative Lambda catalog's types, source and subject so
//! its producers and consumers keep working.
//!
//! The rest is pure logic, free of IO, for the server and the broker to build on: strict
//! CloudEvents 1.0 validation, the HTTP and AMQP protocol bindings, trigger specs and filters,
//! cron schedules, delivery retry policy, and duplicate detection.

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
pub mod trigger;
mod uri;
mod validate;

pub use broker::{BoxError, Broker, BrokerError, DeadLetter, Delivery, NewDelivery, Receipt};
pub use bus::{EventBus, InProcessBus, TenantEvent};
pub use cloudevent::{CloudEvent, SPEC_VERSION, lifecycle};
pub use error::EventError;
pub use validate::check_attribute_name;

/// Type prefix of every event the platform emits or accepts (DESIGN §3).
pub const TYPE_PREFIX: &str = "io.knative.lambda.";

/// The catalog's event types (DESIGN §3) that the platform emits or accepts.
pub mod types {
    /// Lifecycle: emitted by builds, functions and the autoscaler.
    pub const BUILD_STARTED: &str = "io.knative.lambda.lifecycle.build.started";
    pub const BUILD_COMPLETED: &str = "io.knative.lambda.lifecycle.build.completed";
    pub const BUILD_FAILED: &str = "io.knative.lambda.lifecycle.build.failed";
    pub const FUNCTION_READY: &str = "io.knative.lambda.lifecycle.function.ready";
    pub const FUNCTION_UPDATED: &str = "io.knative.lambda.lifecycle.function.updated";
    pub const FUNCTION_DELETED: &str = "io.knative.lambda.lifecycle.function.deleted";
    pub const SERVICE_SCALED: &str = "io.knative.lambda.lifecycle.service.scaled";

    /// Commands: accepted as an alternative to the REST API.
    pub const COMMAND_PREFIX: &str = "io.knative.lambda.command.";
    pub const BUILD_START: &str = "io.knative.lambda.command.build.start";
    pub const BUILD_RETRY: &str = "io.knative.lambda.command.build.retry";
    pub const FUNCTION_DEPLOY: &str = "io.knative.lambda.command.function.deploy";
    pub const FUNCTION_ROLLBACK: &str = "io.knative.lambda.command.function.rollback";
    pub const SERVICE_DELETE: &str = "io.knative.lambda.command.service.delete";

    /// Invocation: an async request queued for its function, and the replies.
    pub const INVOKE_ASYNC: &str = "io.knative.lambda.invoke.async";
    pub const RESPONSE_SUCCESS: &str = "io.knative.lambda.response.success";
    pub const RESPONSE_ERROR: &str = "io.knative.lambda.response.error";
    pub const RESPONSE_TIMEOUT: &str = "io.knative.lambda.response.timeout";

    /// A schedule trigger's ping, with Knative PingSource's type.
    pub const PING: &str = "dev.knative.sources.ping";
}
