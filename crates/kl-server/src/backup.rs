//! Backups and restores: a logical, backend-neutral copy of the platform.
//!
//! A backup location (a folder on the server's machine, or `s3://BUCKET[/PREFIX]`) holds:
//! - `snapshots/ID/metadata.json`: every row of the metadata store, read in one transaction
//!   ([`kl_store::Snapshot`]): tenants, token hashes, sealed secrets, functions, revisions,
//!   triggers, pending and dead-lettered events, async invocations, usage;
//! - `blobs/SHA256`: the object store's objects (sources, build contexts, uploads) and each
//!   built artifact folder as a gzip'd tar, stored once by content, so the snapshots in one
//!   location share what did not change;
//! - `snapshots/ID/manifest.json`, written last: which blob is which object or artifact. A
//!   snapshot without one is incomplete and never restored.
//!
//! Because rows are carried by column name and objects by key, a backup of SQLite and a local
//! store restores onto PostgreSQL and S3, and back. The secrets keys are never in a backup:
//! values stay sealed, and a restore needs the key they were sealed under.

mod metrics;
mod restore;
mod take;

use std::path::PathBuf;
use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::objects::{self, Objects, ObjectsError, ObjectsUrlError};

pub(crate) use metrics::BackupMetrics;
pub use restore::{RestoreOptions, RestoreReport, restore};
pub use take::{BackupReport, BackupSchedule};
pub(crate) use take::{create, schedule};

/// The layout version of a backup location; a restore refuses one it does not know.
const FORMAT: u32 = 1;

/// Where backups are written and read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupLocation {
    /// A folder (absolute) on the machine that writes or reads it.
    Dir(PathBuf),
    /// An S3 bucket and prefix; credentials and endpoint from the `AWS_*` environment.
    S3(Objects),
}

/// A location that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    #[error("a backup location is s3://BUCKET[/PREFIX] or an absolute folder; {0:?} is neither")]
    Scheme(String),
    #[error(transparent)]
    Url(#[from] ObjectsUrlError),
    #[error("a backup folder must be an absolute path; {0:?} is relative")]
    Relative(String),
}

impl BackupLocation {
    /// `s3://BUCKET[/PREFIX]` or an absolute folder.
    pub fn parse(text: &str) -> Result<BackupLocation, LocationError> {
        if text.starts_with("s3://") {
            return Ok(BackupLocation::S3(Objects::parse(text)?));
        }
        if text.contains("://") {
            return Err(LocationError::Scheme(text.to_owned()));
        }
        let path = PathBuf::from(text);
        if !path.is_absolute() {
            return Err(LocationError::Relative(text.to_owned()));
        }
        Ok(BackupLocation::Dir(path))
    }

    async fn open(&self) -> Result<Arc<dyn ObjectStore>, ObjectsError> {
        match self {
            BackupLocation::Dir(dir) => objects::open(&Objects::Local, dir).await,
            BackupLocation::S3(s3) => objects::open(s3, std::path::Path::new("")).await,
        }
    }
}

impl std::fmt::Display for BackupLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackupLocation::Dir(dir) => write!(f, "{}", dir.display()),
            BackupLocation::S3(s3) => write!(f, "{s3}"),
        }
    }
}

/// What went wrong taking or restoring a backup.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup location: {0}")]
    Location(#[from] ObjectsError),
    #[error("backup location: {0}")]
    Io(#[from] object_store::Error),
    #[error(transparent)]
    Store(#[from] kl_store::StoreError),
    #[error("{path}: {source}")]
    File { path: String, source: std::io::Error },
    /// The location holds no complete snapshot, or not the one asked for.
    #[error("{0}")]
    NotFound(String),
    /// A snapshot's files are damaged, of an unknown format, or do not match their digests.
    #[error("the snapshot is unusable: {0}")]
    Corrupt(String),
    /// What a restore needs and was not given (the secrets key), or a target that is not fresh.
    #[error("{0}")]
    Refused(String),
    /// Another backup is running on this server.
    #[error("a backup is already running; try again when it ends")]
    Busy,
}

/// `snapshots/ID/manifest.json`: what one snapshot holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// The `kl` that wrote it.
    pub kl_version: String,
    pub schema_version: i64,
    /// Rows per table.
    pub rows: std::collections::BTreeMap<String, usize>,
    pub objects: Vec<ObjectEntry>,
    pub artifacts: Vec<ArtifactEntry>,
    /// The dependency layers (in the build cache) the artifacts' launch specs name.
    pub layers: Vec<LayerEntry>,
    /// The data dir the artifacts were built in: their launch specs hold absolute paths
    /// under it, which a restore moves to the new data dir.
    pub data_dir: String,
    /// The secrets keys the sealed values need (ids only; never the keys).
    pub secrets_key_ids: Vec<String>,
    /// Bytes the snapshot refers to, and how many of them this backup wrote (the rest were
    /// already in the location).
    pub bytes: u64,
    pub bytes_written: u64,
}

/// An object of the object store and the blob that holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectEntry {
    pub key: String,
    pub blob: String,
    pub bytes: u64,
}

/// A revision's built artifact folder and the blob (a gzip'd tar) that holds it. Revisions
/// that share one folder (promoted copies) share the blob.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArtifactEntry {
    pub tenant: String,
    pub function: String,
    pub revision: i64,
    pub blob: String,
    pub bytes: u64,
}

/// A dependency layer: where it was, its place in the build cache, and its blob.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerEntry {
    pub path: String,
    /// Relative to the cache (`python/KEY`): where a restore puts it in the new cache.
    pub name: String,
    pub blob: String,
    pub bytes: u64,
}

/// The ids of the snapshots at a location, oldest first, and which of them are complete
/// (have their manifest).
async fn snapshot_ids(dest: &dyn ObjectStore) -> Result<(Vec<String>, Vec<String>), BackupError> {
    let listed = dest
        .list_with_delimiter(Some(&ObjectPath::from("snapshots")))
        .await?;
    let mut ids: Vec<String> = listed
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename().map(str::to_owned))
        .collect();
    ids.sort_unstable();
    let mut complete = Vec::new();
    for id in &ids {
        if dest.head(&snapshot_file(id, "manifest.json")).await.is_ok() {
            complete.push(id.clone());
        }
    }
    Ok((ids, complete))
}

fn snapshot_file(id: &str, name: &str) -> ObjectPath {
    ObjectPath::from(format!("snapshots/{id}/{name}"))
}

fn blob_path(digest: &str) -> ObjectPath {
    ObjectPath::from(format!("blobs/{digest}"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_s3_urls_or_absolute_folders() {
        assert_eq!(
            BackupLocation::parse("/var/backups/kl").unwrap(),
            BackupLocation::Dir("/var/backups/kl".into())
        );
        assert_eq!(
            BackupLocation::parse("s3://backups/kl").unwrap(),
            BackupLocation::S3(Objects::S3 {
                bucket: "backups".into(),
                prefix: "kl".into()
            })
        );
        for bad in ["backups", "./backups", "gs://bucket", "s3://B"] {
            assert!(BackupLocation::parse(bad).is_err(), "{bad}");
        }
    }
}
