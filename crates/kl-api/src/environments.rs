//! Environments over the API, and promotion of a revision between them.

use chrono::{DateTime, Utc};
use kl_core::PriorityClass;
use serde::{Deserialize, Serialize};

/// Body of `POST /v1/tenants/{t}/environments`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEnvironment {
    pub name: String,
    /// Percent of each of the tenant's quotas.
    pub share: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<PriorityClass>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentView {
    pub name: String,
    /// The tenant it runs as (functions, routes `/fn/TENANT-ENV/FN`, quotas).
    pub runs_as: String,
    pub share: u8,
    pub priority: PriorityClass,
    pub functions: u64,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvironmentList {
    pub environments: Vec<EnvironmentView>,
}

/// Body of `POST /v1/tenants/{t}/functions/{f}/promote`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Promote {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Promoted {
    pub function: String,
    /// The revision promoted, in the source environment.
    pub from_revision: String,
    /// The new revision now serving in the target environment.
    pub revision: String,
    /// The artifact both run.
    pub digest: String,
}
