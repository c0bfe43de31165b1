//! `POST /v1/admin/backups`: a snapshot of the whole platform to a backup location.

use serde::{Deserialize, Serialize};

/// Body of `POST /v1/admin/backups`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateBackup {
    /// `s3://BUCKET[/PREFIX]`, or an absolute folder on the server's machine.
    pub to: String,
}

/// Answer to `POST /v1/admin/backups`: the snapshot taken.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupTaken {
    /// The snapshot's id (its UTC time), for `kl admin restore --snapshot`.
    pub id: String,
    pub location: String,
    /// Rows of the metadata store, all tables.
    pub rows: u64,
    pub objects: u64,
    /// Built artifact folders (promoted copies share one).
    pub artifacts: u64,
    /// Bytes the snapshot refers to, and how many this backup wrote (the rest were already
    /// in the location, from earlier snapshots).
    pub bytes: u64,
    pub bytes_written: u64,
    pub duration_ms: u64,
}
