//! Taking a backup while the server runs (`POST /v1/admin/backups`, `kl admin backup`), on a
//! schedule (`kl server --backup-to`), and pruning old snapshots.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use bytes::Bytes;
use chrono::Utc;
use futures_util::{StreamExt, TryStreamExt};
use kl_api::{BackupTaken, CreateBackup};
use kl_core::Action;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use super::{
    ArtifactEntry, BackupError, BackupLocation, FORMAT, LayerEntry, Manifest, ObjectEntry, blob_path,
    sha256_hex, snapshot_file,
};
use crate::auth::Caller;
use crate::error::{ApiError, parse_json};
use crate::state::AppState;

/// Scheduled backups: where, how often, how many snapshots to keep.
#[derive(Debug, Clone)]
pub struct BackupSchedule {
    pub location: BackupLocation,
    pub every: Duration,
    pub keep: usize,
}

/// What a backup wrote.
pub type BackupReport = BackupTaken;

/// Objects copied at once: S3 round trips dominate, not bytes.
const COPY_CONCURRENCY: usize = 8;

/// A blob younger than this is never collected: another server may be writing a snapshot
/// that refers to it and has not written its manifest yet.
const BLOB_GRACE: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// `POST /v1/admin/backups`.
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<BackupTaken>, ApiError> {
    let principal = state.authorize(&caller, Action::Backup, None).await?;
    let request: CreateBackup = parse_json(&body)?;
    let location = BackupLocation::parse(&request.to)
        .map_err(|e| ApiError::bad_request("InvalidBackupLocation", e.to_string()))?;
    let taken = take(&state, &location).await.map_err(|e| match e {
        BackupError::Busy => ApiError::new(http::StatusCode::CONFLICT, "BackupRunning", e.to_string()),
        BackupError::Location(_) | BackupError::Io(_) => ApiError::new(
            http::StatusCode::BAD_GATEWAY,
            "BackupLocationFailed",
            e.to_string(),
        ),
        e => ApiError::internal(e),
    })?;
    tracing::info!(id = %taken.id, location = %location, token = %principal.token_id, "backup taken");
    Ok(Json(taken))
}

/// Takes one snapshot: the store's rows in one read transaction, then every object and built
/// artifact not already in the location, then the manifest that makes it complete.
pub(crate) async fn take(state: &AppState, location: &BackupLocation) -> Result<BackupTaken, BackupError> {
    let _one = state.backup.try_lock().map_err(|_| BackupError::Busy)?;
    let taken = write_snapshot(state, location).await;
    match &taken {
        Ok(taken) => state
            .backup_metrics
            .succeeded(Duration::from_millis(taken.duration_ms)),
        Err(_) => state.backup_metrics.failed(),
    }
    taken
}

async fn write_snapshot(state: &AppState, location: &BackupLocation) -> Result<BackupTaken, BackupError> {
    let started = Instant::now();
    let dest = location.open().await?;
    let snapshot = state.store.snapshot().await?;
    let id = Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
    tracing::info!(%id, %location, rows = snapshot.counts().values().sum::<usize>(), "backup: metadata read");
    let metadata = serde_json::to_vec(&snapshot).expect("a snapshot serializes");
    let mut bytes_written = metadata.len() as u64;
    dest.put(&snapshot_file(&id, "metadata.json"), metadata.into())
        .await?;

    let mut written = 0;
    let objects = copy_objects(state.objects.as_ref(), dest.as_ref(), &mut written).await?;
    tracing::info!(%id, objects = objects.len(), "backup: objects copied");
    let (artifacts, layers) = pack_artifacts(state, &snapshot, dest.as_ref(), &mut written).await?;
    tracing::info!(%id, artifacts = artifacts.len(), layers = layers.len(), "backup: artifacts packed");
    bytes_written += written;

    let secrets_key_ids: BTreeSet<String> = snapshot
        .table("secret_values")
        .and_then(|t| t.column("key_id"))
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_text().map(str::to_owned))
        .collect();
    let unique_artifacts: BTreeMap<String, u64> =
        artifacts.iter().map(|a| (a.blob.clone(), a.bytes)).collect();
    let bytes = objects.iter().map(|o| o.bytes).sum::<u64>()
        + unique_artifacts.values().sum::<u64>()
        + layers.iter().map(|l| l.bytes).sum::<u64>();
    let manifest = Manifest {
        format: FORMAT,
        id: id.clone(),
        created_at: Utc::now(),
        kl_version: env!("CARGO_PKG_VERSION").to_owned(),
        schema_version: snapshot.schema_version,
        rows: snapshot.counts(),
        objects,
        artifacts,
        layers,
        data_dir: state.layout.root.display().to_string(),
        secrets_key_ids: secrets_key_ids.into_iter().collect(),
        bytes,
        bytes_written,
    };
    let body = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
    dest.put(&snapshot_file(&id, "manifest.json"), body.into())
        .await?;
    Ok(BackupTaken {
        id,
        location: location.to_string(),
        rows: manifest.rows.values().sum::<usize>() as u64,
        objects: manifest.objects.len() as u64,
        artifacts: unique_artifacts.len() as u64,
        bytes,
        bytes_written,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// Copies every object of the platform's store into a blob named by its content. Objects
/// are immutable or replaced whole, so a listing after the metadata read holds at least
/// every object the rows refer to.
async fn copy_objects(
    from: &dyn ObjectStore,
    dest: &dyn ObjectStore,
    written: &mut u64,
) -> Result<Vec<ObjectEntry>, BackupError> {
    let listed: Vec<_> = from.list(None).try_collect().await?;
    let copied: Vec<(ObjectEntry, u64)> = futures_util::stream::iter(listed)
        .map(|meta| async move {
            let bytes = match from.get(&meta.location).await {
                Ok(got) => got.bytes().await?,
                // Deleted since the listing (its function or upload went): nothing refers to it.
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(BackupError::from(e)),
            };
            let (blob, wrote) = put_blob(dest, bytes.clone()).await?;
            let entry = ObjectEntry {
                key: meta.location.to_string(),
                blob,
                bytes: bytes.len() as u64,
            };
            Ok::<_, BackupError>(Some((entry, wrote)))
        })
        .buffer_unordered(COPY_CONCURRENCY)
        .try_filter_map(|copied| async move { Ok(copied) })
        .try_collect()
        .await?;
    let mut entries = Vec::with_capacity(copied.len());
    for (entry, wrote) in copied {
        *written += wrote;
        entries.push(entry);
    }
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(entries)
}

/// Packs the artifact folder of every ready revision, once per folder (promoted copies link
/// to the folder of the revision they copy), and the dependency layers they use.
async fn pack_artifacts(
    state: &AppState,
    snapshot: &kl_store::Snapshot,
    dest: &dyn ObjectStore,
    written: &mut u64,
) -> Result<(Vec<ArtifactEntry>, Vec<LayerEntry>), BackupError> {
    let mut packed: BTreeMap<PathBuf, (String, u64)> = BTreeMap::new();
    let mut layers: BTreeMap<PathBuf, LayerEntry> = BTreeMap::new();
    let mut entries = Vec::new();
    for (tenant, function, revision) in ready_revisions(snapshot) {
        let folder = state.layout.artifact(&tenant, &function, revision);
        let Ok(real) = tokio::fs::canonicalize(&folder).await else {
            // No local artifact: built elsewhere (an image on Kubernetes) or deleted since.
            continue;
        };
        let (blob, bytes) = match packed.get(&real) {
            Some(done) => done.clone(),
            None => {
                for layer in launch_layers(&real).await {
                    if let std::collections::btree_map::Entry::Vacant(slot) = layers.entry(layer) {
                        let layer = slot.key();
                        let (blob, bytes) = pack_into(dest, layer, written).await?;
                        // A layer outside this server's cache (built with another --cache-dir)
                        // is named by its content.
                        let name = layer
                            .strip_prefix(&state.layout.cache)
                            .map_or_else(|_| format!("restored/{blob}"), |n| n.display().to_string());
                        let entry = LayerEntry {
                            path: layer.display().to_string(),
                            name,
                            blob,
                            bytes,
                        };
                        slot.insert(entry);
                    }
                }
                let (blob, bytes) = pack_into(dest, &real, written).await?;
                packed.insert(real, (blob.clone(), bytes));
                (blob, bytes)
            }
        };
        entries.push(ArtifactEntry {
            tenant,
            function,
            revision,
            blob,
            bytes,
        });
    }
    Ok((entries, layers.into_values().collect()))
}

/// The dependency layers an artifact's launch spec names (none when it has no spec).
async fn launch_layers(artifact: &Path) -> Vec<PathBuf> {
    let Ok(text) = tokio::fs::read(artifact.join(kl_build::LAUNCH_FILE)).await else {
        return Vec::new();
    };
    serde_json::from_slice::<kl_core::Launch>(&text).map_or_else(|_| Vec::new(), |launch| launch.layers)
}

/// Packs a folder into a blob; returns the blob and the tarball's size.
async fn pack_into(
    dest: &dyn ObjectStore,
    dir: &Path,
    written: &mut u64,
) -> Result<(String, u64), BackupError> {
    let folder = dir.to_path_buf();
    let tarball = tokio::task::spawn_blocking(move || pack(&folder))
        .await
        .expect("packing does not panic")
        .map_err(|source| BackupError::File {
            path: dir.display().to_string(),
            source,
        })?;
    let bytes = tarball.len() as u64;
    let (blob, wrote) = put_blob(dest, tarball).await?;
    *written += wrote;
    Ok((blob, bytes))
}

/// (tenant, function, number) of every ready revision in the snapshot.
fn ready_revisions(snapshot: &kl_store::Snapshot) -> Vec<(String, String, i64)> {
    let Some(revisions) = snapshot.table("revisions") else {
        return Vec::new();
    };
    let at = |name: &str| revisions.columns.iter().position(|c| c == name);
    let (Some(t), Some(f), Some(n), Some(s)) = (at("tenant"), at("function"), at("number"), at("status"))
    else {
        return Vec::new();
    };
    revisions
        .rows
        .iter()
        .filter(|row| row[s].as_text() == Some("ready"))
        .filter_map(|row| {
            Some((
                row[t].as_text()?.to_owned(),
                row[f].as_text()?.to_owned(),
                row[n].as_int()?,
            ))
        })
        .collect()
}

/// A folder as a gzip'd tar, links kept as links (a `node_modules/.bin` entry stays a link).
fn pack(dir: &Path) -> std::io::Result<Bytes> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    tar.append_dir_all(".", dir)?;
    Ok(tar.into_inner()?.finish()?.into())
}

/// Stores `bytes` as the blob named by their digest unless the location has it; returns the
/// digest and the bytes written.
async fn put_blob(dest: &dyn ObjectStore, bytes: Bytes) -> Result<(String, u64), BackupError> {
    let digest = sha256_hex(&bytes);
    let path = blob_path(&digest);
    match dest.head(&path).await {
        Ok(_) => Ok((digest, 0)),
        Err(object_store::Error::NotFound { .. }) => {
            let len = bytes.len() as u64;
            dest.put(&path, bytes.into()).await?;
            Ok((digest, len))
        }
        Err(e) => Err(e.into()),
    }
}

/// Takes a snapshot at start and then every `schedule.every`, and keeps the newest
/// `schedule.keep`. A failed backup is logged and retried at the next tick: the server keeps
/// serving.
pub(crate) async fn schedule(state: std::sync::Weak<AppState>, schedule: BackupSchedule) {
    let mut ticks = tokio::time::interval(schedule.every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(state) = state.upgrade() else { return };
        match take(&state, &schedule.location).await {
            Ok(taken) => {
                tracing::info!(id = %taken.id, location = %taken.location, bytes_written = taken.bytes_written, duration_ms = taken.duration_ms, "scheduled backup taken");
                if let Err(e) = prune(&schedule.location, schedule.keep).await {
                    tracing::warn!(error = %e, "cannot prune old backups");
                }
            }
            Err(e) => tracing::error!(location = %schedule.location, error = %e, "scheduled backup failed"),
        }
    }
}

/// Keeps the newest `keep` complete snapshots; deletes older ones, unfinished ones older than
/// the newest complete one, and the blobs no kept snapshot refers to.
pub(crate) async fn prune(location: &BackupLocation, keep: usize) -> Result<(), BackupError> {
    let dest = location.open().await?;
    let (ids, complete) = super::snapshot_ids(dest.as_ref()).await?;
    let kept: BTreeSet<&String> = complete.iter().rev().take(keep.max(1)).collect();
    let newest = complete.last();
    let mut referenced = BTreeSet::new();
    for id in &ids {
        if kept.contains(id) {
            let manifest = super::restore::read_manifest(dest.as_ref(), id).await?;
            referenced.extend(manifest.objects.into_iter().map(|o| o.blob));
            referenced.extend(manifest.artifacts.into_iter().map(|a| a.blob));
            referenced.extend(manifest.layers.into_iter().map(|l| l.blob));
        } else if newest.is_some_and(|newest| id < newest) {
            // The manifest first: a snapshot cut short by a crash here is merely incomplete.
            for name in ["manifest.json", "metadata.json"] {
                match dest.delete(&snapshot_file(id, name)).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    let cutoff = Utc::now() - BLOB_GRACE;
    let blobs: Vec<_> = dest.list(Some(&ObjectPath::from("blobs"))).try_collect().await?;
    for blob in blobs {
        let digest = blob.location.filename().unwrap_or_default();
        if !referenced.contains(digest) && blob.last_modified < cutoff {
            dest.delete(&blob.location).await?;
        }
    }
    Ok(())
}
