//! Secrets over the API: values go in (`PUT`), only names, keys and versions come out.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Body of `PUT /v1/tenants/{t}/secrets/{name}`: every key of the secret (it is replaced
/// whole). Its `Debug` shows the keys only.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutSecret {
    pub data: BTreeMap<String, String>,
}

impl std::fmt::Debug for PutSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutSecret")
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A secret as listed: never its values.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretView {
    pub name: String,
    pub keys: Vec<String>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Answer to a `PUT`: the secret, and the revisions rolled for the functions that use it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretSet {
    pub secret: SecretView,
    /// New revisions now serving (same artifact, the new values).
    #[serde(default)]
    pub rolled: Vec<String>,
    /// Functions whose new revision could not start, with why; they keep their old one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretList {
    pub secrets: Vec<SecretView>,
}

/// Answer to `POST /v1/admin/rotate-secrets-key`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRotated {
    /// The new current key's id (a hash, not the key).
    pub key_id: String,
    /// Values re-encrypted under it.
    pub reencrypted: u64,
}
