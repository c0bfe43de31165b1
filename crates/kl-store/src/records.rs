//! Rows of the metadata store as Rust values.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use kl_core::{FunctionSettings, FunctionSpec, TenantSpec};

/// Where a revision is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevisionStatus {
    /// Source stored, build queued or running.
    Building,
    /// Built and passed its readiness check; can take traffic.
    Ready,
    /// The build or the readiness check failed; `error` says why.
    Failed,
}

impl RevisionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RevisionStatus::Building => "building",
            RevisionStatus::Ready => "ready",
            RevisionStatus::Failed => "failed",
        }
    }
}

impl FromStr for RevisionStatus {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "building" => Ok(RevisionStatus::Building),
            "ready" => Ok(RevisionStatus::Ready),
            "failed" => Ok(RevisionStatus::Failed),
            _ => Err(()),
        }
    }
}

/// An immutable revision of a function: one deploy of one source.
#[derive(Debug, Clone)]
pub struct RevisionRecord {
    pub tenant: String,
    pub function: String,
    pub number: i64,
    pub status: RevisionStatus,
    /// The deploy's settings (flags), layered over `kl.yaml` at build time.
    pub settings: FunctionSettings,
    /// The resolved spec, known once built.
    pub spec: Option<FunctionSpec>,
    pub source_key: String,
    pub source_digest: String,
    /// What the build made, once built: `sha256:…` of the artifact folder, or on the
    /// Kubernetes backend the pushed image by digest (`registry/tenant/function@sha256:…`), so
    /// a copy in another tenant still names the repository that holds it.
    pub artifact_digest: Option<String>,
    pub error: Option<String>,
    pub build_ms: Option<u64>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl RevisionRecord {
    /// Knative-style revision name, e.g. `hello-00003`.
    pub fn name(&self) -> String {
        revision_name(&self.function, self.number)
    }

    /// The artifact's digest (`sha256:…`), also when the artifact is an image.
    pub fn digest(&self) -> Option<&str> {
        let artifact = self.artifact_digest.as_deref()?;
        Some(artifact.rsplit_once('@').map_or(artifact, |(_, digest)| digest))
    }

    /// The image the revision runs, by digest, when it was built in a cluster.
    pub fn image(&self) -> Option<&str> {
        self.artifact_digest.as_deref().filter(|a| a.contains('@'))
    }
}

/// Knative-style revision name of `function`'s revision `number`.
pub fn revision_name(function: &str, number: i64) -> String {
    format!("{function}-{number:05}")
}

/// A function: a name in a tenant, and the revision its traffic goes to.
#[derive(Debug, Clone)]
pub struct FunctionRecord {
    pub tenant: String,
    pub name: String,
    pub serving_revision: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A bearer token, stored by the SHA-256 of its secret.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub id: String,
    /// Who or what holds it (a member's name, a CI job).
    pub name: String,
    pub hash: String,
    /// `None` for platform-wide tokens.
    pub tenant: Option<String>,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A tenant and its settings.
#[derive(Debug, Clone)]
pub struct TenantRecord {
    pub name: String,
    pub spec: TenantSpec,
    pub created_at: DateTime<Utc>,
    /// The unprivileged uid (and gid) its instances run as.
    pub uid: u32,
}

/// One denied attempt.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub at: DateTime<Utc>,
    pub token_id: Option<String>,
    pub role: Option<String>,
    pub caller_tenant: Option<String>,
    pub action: String,
    pub target_tenant: Option<String>,
    pub method: String,
    pub path: String,
    /// `unauthenticated`, `forbidden` or `not-found`.
    pub outcome: String,
}
