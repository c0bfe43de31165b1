//! Request and response bodies of the HTTP API, shared by the server and the CLI.

mod backups;
mod environments;
mod events;
mod secrets;

pub use events::{
    CreateTrigger, DeadLetterList, DeadLetterView, EventsAccepted, InvocationAccepted, InvocationState,
    InvocationView, Rollback, ServingChanged, TriggerList, TriggerView, Uploaded,
};

pub use backups::{BackupTaken, CreateBackup};
pub use environments::{CreateEnvironment, EnvironmentList, EnvironmentView, Promote, Promoted};
pub use secrets::{KeyRotated, PutSecret, SecretList, SecretSet, SecretView};

use chrono::{DateTime, Utc};
use kl_core::{ByteQuantity, CpuQuantity, FunctionSpec, Role, Runtime, TenantSpec};
use serde::{Deserialize, Serialize};

/// Every error response: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `ArchiveUnsafePath`.
    pub code: String,
    /// What failed, for which object, and what to do.
    pub message: String,
}

/// Answer to an upload: the revision that will be built.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployAccepted {
    pub tenant: String,
    pub function: String,
    pub revision: String,
    pub number: i64,
}

/// Build and readiness state of a revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevisionState {
    Building,
    Ready,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionView {
    pub name: String,
    pub number: i64,
    pub state: RevisionState,
    /// Whether this revision takes the function's traffic.
    pub serving: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The image it runs, by digest, with `--backend kubernetes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<FunctionSpec>,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionView {
    pub tenant: String,
    pub name: String,
    /// Invocation path on the server, e.g. `/fn/default/hello`.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_revision: Option<RevisionView>,
    /// Instances running now.
    pub instances_running: usize,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceView {
    pub id: String,
    pub revision: String,
    pub pid: u32,
    pub in_flight: u32,
    pub started_at: DateTime<Utc>,
    pub startup_ms: u64,
}

/// The serving revision's instances keep failing to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CrashLoopView {
    pub failures: u32,
    /// The last failure, with the instance's last output.
    pub last_error: String,
    /// Seconds until the next start is tried.
    pub retry_in_secs: u64,
}

/// How an instance of the serving revision last failed (crash, out of memory, timeout).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitView {
    pub instance: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionDetail {
    #[serde(flatten)]
    pub function: FunctionView,
    /// The serving revision's spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<FunctionSpec>,
    pub revisions: Vec<RevisionView>,
    pub instances: Vec<InstanceView>,
    /// Requests waiting for an instance slot.
    #[serde(default)]
    pub queued: usize,
    /// The autoscaler's last decision: instances wanted, and whether it is in panic mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<u32>,
    #[serde(default)]
    pub panic: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<ExitView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_loop: Option<CrashLoopView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionList {
    pub functions: Vec<FunctionView>,
}

/// `POST /v1/tenants`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    pub name: String,
    #[serde(default)]
    pub spec: TenantSpec,
}

/// A tenant's current use of its quotas.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantUsage {
    pub functions: u64,
    /// Running instances and what they hold.
    pub instances: u64,
    pub cpu: CpuQuantity,
    pub memory: ByteQuantity,
    /// Builds queued or running.
    pub builds: u64,
    /// Uploaded source kept for its revisions.
    pub storage: ByteQuantity,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantView {
    pub name: String,
    /// `TENANT/ENV` when this tenant is an environment of another (`kl env create`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    pub spec: TenantSpec,
    pub usage: TenantUsage,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantList {
    pub tenants: Vec<TenantView>,
}

/// `POST /v1/tokens`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateToken {
    /// Who holds it, e.g. a member's name.
    pub name: String,
    pub role: Role,
    /// Required for tenant roles, absent for platform roles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Lifetime such as `30d` or `12h`; absent means no expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// The answer to a token creation: the only time the secret is shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenCreated {
    #[serde(flatten)]
    pub token: TokenView,
    pub secret: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenList {
    pub tokens: Vec<TokenView>,
}

/// One denied attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_tenant: Option<String>,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_tenant: Option<String>,
    pub method: String,
    pub path: String,
    /// `unauthenticated`, `forbidden` or `not-found`.
    pub outcome: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditList {
    pub entries: Vec<AuditEntry>,
}
