//! The one place where errors become HTTP responses (`{"error": {"code", "message"}}`).

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use kl_api::{ErrorBody, ErrorDetail};
use kl_build::{ArchiveError, BuildError};
use kl_events::{BrokerError, EventError};
use kl_gateway::GatewayError;
use kl_store::StoreError;

/// An API error: status, stable code and a message saying what to do.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// `Retry-After` seconds, for 429 and 503 (1 unless the refusal knows better).
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "NotFound", message)
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn internal(message: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %message, "internal error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal", message.to_string())
    }
}

/// Parses a JSON request body, refusing it with a 400 in the API's error format.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("InvalidRequest", format!("the request body is invalid: {e}")))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry = matches!(
            self.status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        )
        .then(|| self.retry_after_secs.unwrap_or(1));
        let body = Json(ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        });
        let mut response = (self.status, body).into_response();
        if let Some(secs) = retry {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
        }
        response
    }
}

impl From<ArchiveError> for ApiError {
    fn from(e: ArchiveError) -> ApiError {
        use ArchiveError as A;
        let (status, code) = match &e {
            A::NotAnArchive => (StatusCode::BAD_REQUEST, "NotAnArchive"),
            A::Corrupt(_) => (StatusCode::BAD_REQUEST, "ArchiveCorrupt"),
            A::UnsafePath(_) => (StatusCode::BAD_REQUEST, "ArchiveUnsafePath"),
            A::LinkEscapes { .. } => (StatusCode::BAD_REQUEST, "ArchiveLinkEscapes"),
            A::HardLink(_) => (StatusCode::BAD_REQUEST, "ArchiveHardLink"),
            A::SpecialFile { .. } => (StatusCode::BAD_REQUEST, "ArchiveSpecialFile"),
            A::Conflict(_) => (StatusCode::BAD_REQUEST, "ArchiveConflict"),
            A::TooManyEntries(_) => (StatusCode::PAYLOAD_TOO_LARGE, "ArchiveTooManyEntries"),
            A::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "ArchiveTooLarge"),
            A::Io(_) => return ApiError::internal(e),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<BuildError> for ApiError {
    fn from(e: BuildError) -> ApiError {
        match e {
            BuildError::Io(_) => ApiError::internal(e),
            other => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "InvalidFunction",
                other.to_string(),
            ),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            StoreError::Conflict(message) => ApiError::new(StatusCode::CONFLICT, "Conflict", message),
            StoreError::Quota(q) => q.into(),
            other => ApiError::internal(other),
        }
    }
}

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> ApiError {
        use GatewayError as G;
        let code = match &e {
            G::Quota(q) => return q.clone().into(),
            G::RateLimited(_) => "RateLimited",
            G::BudgetExceeded(_) => "BudgetExceeded",
            G::NoRoute(_) => "FunctionNotReady",
            G::NoCapacity { .. } | G::QueueFull { .. } | G::NodeFull(_) => "NoCapacity",
            G::CrashLoop { .. } => "FunctionCrashLoop",
            G::Start(_) => "FunctionStartFailed",
            G::Timeout(_) => "FunctionTimeout",
            G::Crashed(_) => "FunctionCrashed",
            G::ResponseTooLarge(_) => "ResponseTooLarge",
            G::Upstream(_) => "BadGateway",
        };
        let retry_after_secs = match &e {
            G::RateLimited(limited) => Some(limited.retry_after_secs()),
            G::CrashLoop { retry_in, .. } => Some(retry_in.as_secs().max(1)),
            _ => None,
        };
        ApiError {
            retry_after_secs,
            ..ApiError::new(e.status(), code, e.to_string())
        }
    }
}

/// Hard quotas answer 403 (a change is needed); transient ones 429 (retry later).
impl From<kl_core::QuotaExceeded> for ApiError {
    fn from(q: kl_core::QuotaExceeded) -> ApiError {
        let status = if q.is_transient() {
            StatusCode::TOO_MANY_REQUESTS
        } else {
            StatusCode::FORBIDDEN
        };
        ApiError::new(status, "QuotaExceeded", q.to_string())
    }
}

/// An event refused at ingress: the status the pure layer chose, a code naming the problem,
/// and a message naming the attribute (and, in a batch, the event's index).
impl From<EventError> for ApiError {
    fn from(e: EventError) -> ApiError {
        fn code(e: &EventError) -> &'static str {
            match e {
                EventError::Missing { .. } | EventError::Invalid { .. } => "InvalidEvent",
                EventError::Malformed { .. } => "MalformedEvent",
                EventError::UnsupportedFormat { .. } => "UnsupportedEventFormat",
                EventError::NotACloudEvent => "NotACloudEvent",
                EventError::TooLarge { .. } | EventError::TooManyEvents { .. } => "EventTooLarge",
                EventError::InBatch { source, .. } => code(source),
            }
        }
        ApiError::new(e.status(), code(&e), e.to_string())
    }
}

/// The broker could not take or give back deliveries: nothing was accepted, so the producer
/// should retry.
impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> ApiError {
        match e {
            BrokerError::NotFound { .. } => ApiError::not_found(e.to_string()),
            BrokerError::Invalid(message) => ApiError::bad_request("InvalidEvent", message),
            BrokerError::Backend { .. } | BrokerError::Unavailable { .. } => {
                tracing::error!(error = %e, "event broker unavailable");
                ApiError {
                    retry_after_secs: Some(5),
                    ..ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "BrokerUnavailable",
                        e.to_string(),
                    )
                }
            }
            BrokerError::LeaseLost { .. }
            | BrokerError::Corrupt { .. }
            | BrokerError::ForeignReceipt { .. } => ApiError::internal(e),
        }
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> ApiError {
        ApiError::internal(e)
    }
}

impl From<object_store::Error> for ApiError {
    fn from(e: object_store::Error) -> ApiError {
        ApiError::internal(e)
    }
}
