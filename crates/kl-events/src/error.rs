//! Why an incoming event or request was refused, naming the attribute at fault so a producer can
//! fix it, and the HTTP status the server answers with.

use http::StatusCode;
use thiserror::Error;

/// Why an event, or a request carrying events, was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EventError {
    /// A REQUIRED attribute (`specversion`, `id`, `source`, `type`) is absent.
    #[error("CloudEvent attribute {attribute:?} is required but missing")]
    Missing { attribute: &'static str },

    /// An attribute is present but has the wrong type or breaks a constraint of the
    /// CloudEvents 1.0 spec; `attribute` is its name (`data` and `data_base64` included).
    #[error("CloudEvent attribute {attribute:?} is invalid: {reason}")]
    Invalid { attribute: String, reason: String },

    /// The body is not what its content type promises (not JSON, not a JSON object or array).
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },

    /// The content type names a CloudEvents format other than JSON (`+avro`, `+protobuf`) or a
    /// charset other than UTF-8.
    #[error(
        "unsupported content type {content_type:?}: send application/cloudevents+json, \
         application/cloudevents-batch+json or a binary-mode event with ce-* headers"
    )]
    UnsupportedFormat { content_type: String },

    /// A request has neither a CloudEvents content type nor `ce-*` headers.
    #[error(
        "not a CloudEvent: send application/cloudevents+json (structured), \
         application/cloudevents-batch+json (batch), or ce-specversion, ce-id, ce-source and \
         ce-type headers (binary)"
    )]
    NotACloudEvent,

    /// An event or a batch is larger than the configured limit, in bytes.
    #[error("{what} of {size} bytes is larger than the limit of {limit} bytes")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },

    /// A batch holds more events than the configured limit.
    #[error("batch of {count} events is larger than the limit of {limit} events")]
    TooManyEvents { count: usize, limit: usize },

    /// One event of a batch is invalid; the whole batch is refused.
    #[error("event {index} of the batch: {source}")]
    InBatch { index: usize, source: Box<EventError> },
}

impl EventError {
    pub(crate) fn invalid(attribute: &str, reason: impl Into<String>) -> EventError {
        EventError::Invalid {
            attribute: attribute.to_owned(),
            reason: reason.into(),
        }
    }

    /// The attribute at fault, looking through a batch to the event that failed.
    pub fn attribute(&self) -> Option<&str> {
        match self {
            EventError::Missing { attribute } => Some(attribute),
            EventError::Invalid { attribute, .. } => Some(attribute),
            EventError::InBatch { source, .. } => source.attribute(),
            _ => None,
        }
    }

    /// The HTTP status for this error: 413 for size limits, 415 for a CloudEvents format this
    /// server does not speak, 400 for everything else the producer sent wrong.
    pub fn status(&self) -> StatusCode {
        match self {
            EventError::TooLarge { .. } | EventError::TooManyEvents { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            EventError::UnsupportedFormat { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            EventError::InBatch { source, .. } => source.status(),
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_errors_name_the_event_and_its_attribute() {
        let err = EventError::InBatch {
            index: 2,
            source: Box::new(EventError::invalid("time", "not RFC 3339")),
        };
        assert_eq!(err.attribute(), Some("time"));
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            err.to_string(),
            "event 2 of the batch: CloudEvent attribute \"time\" is invalid: not RFC 3339"
        );
    }

    #[test]
    fn size_limits_map_to_413() {
        let too_large = EventError::TooLarge {
            what: "event",
            size: 10,
            limit: 5,
        };
        assert_eq!(too_large.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let too_many = EventError::TooManyEvents { count: 10, limit: 5 };
        assert_eq!(too_many.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
