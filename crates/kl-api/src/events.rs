//! Bodies of the eventing API: ingress answers, triggers, dead letters, async invocations.

use chrono::{DateTime, Utc};
use kl_events::CloudEvent;
use kl_events::delivery::Sink;
use kl_events::trigger::TriggerSpec;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `202` to `POST /v1/events`: how many events were queued, and how many were repeats of
/// events accepted within the idempotency window (acknowledged, not queued again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsAccepted {
    pub accepted: usize,
    pub duplicates: usize,
}

/// `POST /v1/tenants/{t}/triggers`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTrigger {
    pub name: String,
    pub spec: TriggerSpec,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerView {
    pub tenant: String,
    pub name: String,
    pub spec: TriggerSpec,
    /// When a schedule trigger fires next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_fire: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TriggerList {
    pub triggers: Vec<TriggerView>,
}

/// A delivery given up on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterView {
    pub id: String,
    /// What it was for: `trigger:NAME`, `invocation:ID`, `destination:ID` or `command`.
    pub subscriber: String,
    pub event: CloudEvent,
    /// Attempts made before giving up (the first delivery is attempt 0).
    pub attempt: u32,
    pub reason: String,
    pub enqueued_at: DateTime<Utc>,
    pub dead_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterList {
    pub dead_letters: Vec<DeadLetterView>,
}

/// `202` to an invocation with `Prefer: respond-async`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvocationAccepted {
    pub invocation_id: String,
    pub status: InvocationState,
}

/// Where an async invocation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InvocationState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Timeout,
}

/// An async invocation and its outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvocationView {
    pub id: String,
    pub tenant: String,
    pub function: String,
    pub status: InvocationState,
    pub correlation_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Sink>,
    pub attempts: u32,
    /// The function's HTTP status on the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// The response body: JSON as JSON, text as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The response body when it is neither JSON nor text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_type: Option<String>,
    /// The body was longer than the server keeps; `result` is its beginning.
    #[serde(default)]
    pub result_truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_start: Option<bool>,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

/// `PUT /v1/tenants/{t}/uploads/{name}`: where the archive is, for a `command.build.start`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Uploaded {
    /// The object key to reference as the command's `source`.
    pub key: String,
    pub bytes: u64,
}

/// `POST /v1/tenants/{t}/functions/{f}/rollback`: the revision to serve; absent, the newest
/// ready revision older than the serving one.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
}

/// The answer to a change of the serving revision.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServingChanged {
    pub function: String,
    pub serving: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
}
