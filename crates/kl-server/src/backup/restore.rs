//! Rebuilding a platform from a backup (`kl admin restore`), before its server starts: onto
//! a fresh data dir, and a fresh database and object store of either kind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use kl_store::{Snapshot, Store};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use super::{BackupError, BackupLocation, FORMAT, Manifest, blob_path, sha256_hex, snapshot_file};
use crate::config::Layout;
use crate::objects::{self, Objects};
use crate::{SecretsKeyText, secrets};

/// What to restore, and onto what.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub from: BackupLocation,
    /// The snapshot's id; the newest complete one without it.
    pub snapshot: Option<String>,
    /// The new server's data dir: artifacts, and the SQLite file unless `db` is given.
    pub data_dir: PathBuf,
    /// A PostgreSQL URL for the metadata; SQLite in the data dir without it.
    pub db: Option<String>,
    /// Where the new server keeps objects.
    pub objects: Objects,
    /// The new server's build cache (its `--cache-dir`), where dependency layers go;
    /// `DATA_DIR/cache` without it.
    pub cache_dir: Option<PathBuf>,
    /// The keys the secrets were sealed under (`KL_SECRETS_KEY`); without them, the key file
    /// in the data dir.
    pub secrets_key: Option<SecretsKeyText>,
}

/// What a restore brought back.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreReport {
    pub id: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub rows: u64,
    pub objects: u64,
    pub artifacts: u64,
    pub duration_ms: u64,
}

/// Objects written at once.
const COPY_CONCURRENCY: usize = 8;

/// Restores a snapshot: checks everything it can before writing (the snapshot's format and
/// schema, an empty target, the secrets key), then the objects, the artifacts and last the
/// rows in one transaction, so an interrupted restore leaves an empty store and can be run
/// again. `progress` hears each step.
pub async fn restore(options: RestoreOptions, progress: impl Fn(&str)) -> Result<RestoreReport, BackupError> {
    let started = Instant::now();
    let source = options.from.open().await?;
    let id = match &options.snapshot {
        Some(id) => id.clone(),
        None => newest_complete(source.as_ref(), &options.from).await?,
    };
    let manifest = read_manifest(source.as_ref(), &id).await?;
    progress(&format!(
        "restoring snapshot {id} (taken {}, kl {}) from {}",
        manifest.created_at.to_rfc3339(),
        manifest.kl_version,
        options.from
    ));
    let metadata = get(source.as_ref(), &snapshot_file(&id, "metadata.json")).await?;
    let snapshot: Snapshot = serde_json::from_slice(&metadata)
        .map_err(|e| BackupError::Corrupt(format!("snapshots/{id}/metadata.json: {e}")))?;

    std::fs::create_dir_all(&options.data_dir).map_err(|source| file_error(&options.data_dir, source))?;
    let root = options
        .data_dir
        .canonicalize()
        .map_err(|source| file_error(&options.data_dir, source))?;
    let layout = Layout {
        cache: options.cache_dir.clone().unwrap_or_else(|| root.join("cache")),
        root,
    };
    let store = match &options.db {
        Some(url) => Store::open_postgres(url).await?,
        None => Store::open_sqlite(&layout.db()).await?,
    };
    if !store.is_empty().await? {
        let target = match options.db {
            Some(_) => "the --db database".to_owned(),
            None => layout.db().display().to_string(),
        };
        return Err(BackupError::Refused(format!(
            "the target metadata store ({target}) already holds a platform; restore into a fresh data dir or an empty database"
        )));
    }
    check_secrets_key(&manifest, options.secrets_key.as_ref(), &layout.secrets_key())?;

    let objects = objects::open(&options.objects, &layout.objects()).await?;
    let total = manifest.objects.len();
    futures_util::stream::iter(&manifest.objects)
        .map(|entry| {
            let (source, objects) = (source.as_ref(), objects.as_ref());
            async move {
                let bytes = get_blob(source, &entry.blob).await?;
                objects
                    .put(&ObjectPath::from(entry.key.as_str()), bytes.into())
                    .await?;
                Ok::<_, BackupError>(())
            }
        })
        .buffer_unordered(COPY_CONCURRENCY)
        .try_collect::<()>()
        .await?;
    progress(&format!("objects: {total} restored to {}", options.objects));

    // Paths the artifacts' launch specs and links hold, and where they are now: each layer,
    // then the data dir (a layer may sit in the old data dir's cache).
    let mut moves = Vec::new();
    for layer in &manifest.layers {
        let name = Path::new(&layer.name);
        if !name
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
        {
            return Err(BackupError::Corrupt(format!(
                "layer name {:?} leaves the cache",
                layer.name
            )));
        }
        let into = layout.cache.join(name);
        if !into.exists() {
            let tarball = get_blob(source.as_ref(), &layer.blob).await?;
            let (staging, done) = (into.with_extension("restoring"), into.clone());
            tokio::task::spawn_blocking(move || {
                let _ = std::fs::remove_dir_all(&staging);
                unpack(&tarball, &staging)?;
                std::fs::rename(&staging, &done)
            })
            .await
            .expect("unpacking does not panic")
            .map_err(|source| file_error(&into, source))?;
        }
        moves.push((PathBuf::from(&layer.path), into));
    }
    moves.push((PathBuf::from(&manifest.data_dir), layout.root.clone()));
    progress(&format!(
        "dependency layers: {} restored to {}",
        manifest.layers.len(),
        layout.cache.display()
    ));

    let mut unpacked: BTreeMap<&str, PathBuf> = BTreeMap::new();
    for entry in &manifest.artifacts {
        let folder = layout.artifact(&entry.tenant, &entry.function, entry.revision);
        let _ = std::fs::remove_dir_all(&folder);
        let parent = folder.parent().expect("an artifact folder has a parent");
        std::fs::create_dir_all(parent).map_err(|source| file_error(parent, source))?;
        match unpacked.get(entry.blob.as_str()) {
            // A promoted copy: a link to the folder of the revision it copies, as deploys make.
            Some(first) => {
                std::os::unix::fs::symlink(first, &folder).map_err(|source| file_error(&folder, source))?
            }
            None => {
                let tarball = get_blob(source.as_ref(), &entry.blob).await?;
                let (into, moves) = (folder.clone(), moves.clone());
                tokio::task::spawn_blocking(move || {
                    unpack(&tarball, &into)?;
                    relocate_artifact(&into, &moves)
                })
                .await
                .expect("unpacking does not panic")
                .map_err(|source| file_error(&folder, source))?;
                unpacked.insert(&entry.blob, folder);
            }
        }
    }
    progress(&format!(
        "artifacts: {} revisions, {} folders",
        manifest.artifacts.len(),
        unpacked.len()
    ));

    store.restore_snapshot(&snapshot).await?;
    let rows = manifest.rows.values().sum::<usize>() as u64;
    progress(&format!(
        "metadata: {rows} rows in {} tables",
        manifest.rows.len()
    ));
    Ok(RestoreReport {
        id,
        created_at: manifest.created_at,
        rows,
        objects: total as u64,
        artifacts: unpacked.len() as u64,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// Refuses a restore whose sealed secrets no given key opens: the server would refuse to
/// start on it, after the restore had written everything.
fn check_secrets_key(
    manifest: &Manifest,
    env: Option<&SecretsKeyText>,
    key_file: &Path,
) -> Result<(), BackupError> {
    if manifest.secrets_key_ids.is_empty() {
        return Ok(());
    }
    let needed = manifest.secrets_key_ids.join(", ");
    if env.is_none() && !key_file.exists() {
        return Err(BackupError::Refused(format!(
            "the backup holds secrets sealed under key {needed}, which backups never contain: copy the old server's secrets.key to {} (mode 0600) or set KL_SECRETS_KEY, then restore again",
            key_file.display()
        )));
    }
    let ids = secrets::key_ids(env.map(|k| k.0.as_str()), key_file).map_err(BackupError::Refused)?;
    let missing: Vec<&str> = manifest
        .secrets_key_ids
        .iter()
        .filter(|id| !ids.contains(id))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(BackupError::Refused(format!(
            "the secrets key given ({}) is not the one the backup's secrets were sealed under ({}): give the old server's key",
            ids.join(", "),
            missing.join(", ")
        )))
    }
}

/// The newest snapshot in the location that has its manifest.
async fn newest_complete(source: &dyn ObjectStore, from: &BackupLocation) -> Result<String, BackupError> {
    let (_, mut complete) = super::snapshot_ids(source).await?;
    if let Some(newest) = complete.pop() {
        return Ok(newest);
    }
    Err(BackupError::NotFound(format!("{from} holds no complete backup")))
}

pub(super) async fn read_manifest(source: &dyn ObjectStore, id: &str) -> Result<Manifest, BackupError> {
    let path = snapshot_file(id, "manifest.json");
    let bytes = match source.get(&path).await {
        Ok(got) => got.bytes().await?,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(BackupError::NotFound(format!(
                "no complete snapshot {id:?} here (no {path})"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| BackupError::Corrupt(format!("{path}: {e}")))?;
    if manifest.format != FORMAT {
        return Err(BackupError::Corrupt(format!(
            "{path} has format {}; this kl reads format {FORMAT}",
            manifest.format
        )));
    }
    Ok(manifest)
}

async fn get(source: &dyn ObjectStore, path: &ObjectPath) -> Result<Bytes, BackupError> {
    match source.get(path).await {
        Ok(got) => Ok(got.bytes().await?),
        Err(object_store::Error::NotFound { .. }) => Err(BackupError::Corrupt(format!("{path} is missing"))),
        Err(e) => Err(e.into()),
    }
}

/// A blob, checked against its name.
async fn get_blob(source: &dyn ObjectStore, digest: &str) -> Result<Bytes, BackupError> {
    let bytes = get(source, &blob_path(digest)).await?;
    if sha256_hex(&bytes) != digest {
        return Err(BackupError::Corrupt(format!(
            "blobs/{digest} does not match its digest"
        )));
    }
    Ok(bytes)
}

/// Points an unpacked artifact at where things are now: its launch spec's paths and its
/// absolute links (a Node function's `node_modules` links to its layer).
fn relocate_artifact(folder: &Path, moves: &[(PathBuf, PathBuf)]) -> std::io::Result<()> {
    let spec = folder.join(kl_build::LAUNCH_FILE);
    if spec.exists() {
        let mut launch: kl_core::Launch = serde_json::from_slice(&std::fs::read(&spec)?)?;
        for (from, to) in moves {
            launch.relocate(from, to);
        }
        std::fs::write(&spec, serde_json::to_vec_pretty(&launch)?)?;
    }
    relink(folder, moves)
}

fn relink(dir: &Path, moves: &[(PathBuf, PathBuf)]) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let (entry, path) = {
            let entry = entry?;
            let path = entry.path();
            (entry, path)
        };
        let kind = entry.file_type()?;
        if kind.is_dir() {
            relink(&path, moves)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&path)?;
            if let Some(moved) = moves
                .iter()
                .find_map(|(from, to)| kl_core::relocated(&target, from, to))
            {
                std::fs::remove_file(&path)?;
                std::os::unix::fs::symlink(moved, &path)?;
            }
        }
    }
    Ok(())
}

fn unpack(tarball: &[u8], into: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(into)?;
    tar::Archive::new(flate2::read::GzDecoder::new(tarball)).unpack(into)
}

fn file_error(path: &Path, source: std::io::Error) -> BackupError {
    BackupError::File {
        path: path.display().to_string(),
        source,
    }
}
