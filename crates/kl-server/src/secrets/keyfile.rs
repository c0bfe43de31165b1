//! Where the platform's secrets keys come from: `KL_SECRETS_KEY` (comma-separated base64
//! keys, the first current), else the key file `DATA_DIR/secrets.key` (one base64 key a line,
//! the first current), created with mode 0600 at first start. A key file others may read is
//! refused rather than used.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::crypto::{CryptoError, Key, Keyring};

/// Where the ring was loaded from, which decides whether a rotation can write a new key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeySource {
    File(PathBuf),
    Environment,
}

/// Why the keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyFileError {
    /// The key file is readable or writable by others than its owner.
    #[error(
        "the secrets key file {path} has mode {mode:o}; it must be readable by its owner only: run `chmod 600 {path}`"
    )]
    Loose { path: String, mode: u32 },
    #[error("cannot read or write the secrets key file {path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// A key does not decode.
    #[error("{origin}: {source}")]
    Bad { origin: String, source: CryptoError },
    /// The file or variable holds no key.
    #[error("{0} holds no key")]
    Empty(String),
}

/// Loads the ring from `env` when given, else from the key file at `path`, creating it.
pub(crate) fn load(env: Option<&str>, path: &Path) -> Result<(Keyring, KeySource), KeyFileError> {
    if let Some(keys) = env {
        let ring = parse(keys.split(','), "KL_SECRETS_KEY")?;
        return Ok((ring, KeySource::Environment));
    }
    let io = |source| KeyFileError::Io {
        path: path.display().to_string(),
        source,
    };
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyFileError::Loose {
                    path: path.display().to_string(),
                    mode,
                });
            }
            let text = std::fs::read_to_string(path).map_err(io)?;
            let ring = parse(text.lines(), &path.display().to_string())?;
            Ok((ring, KeySource::File(path.to_path_buf())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let ring = Keyring::new(vec![Key::generate()]);
            create(path, &ring).map_err(io)?;
            tracing::info!(path = %path.display(), key = ring.current().id(), "created the secrets key file");
            Ok((ring, KeySource::File(path.to_path_buf())))
        }
        Err(e) => Err(io(e)),
    }
}

fn parse<'a>(lines: impl Iterator<Item = &'a str>, origin: &str) -> Result<Keyring, KeyFileError> {
    let keys = lines
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(Key::from_base64)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| KeyFileError::Bad {
            origin: origin.to_owned(),
            source,
        })?;
    if keys.is_empty() {
        return Err(KeyFileError::Empty(origin.to_owned()));
    }
    Ok(Keyring::new(keys))
}

/// Writes `ring` to `path` whole or not at all: a new 0600 file beside it, then a rename.
pub(crate) fn save(path: &Path, ring: &Keyring) -> std::io::Result<()> {
    let temp = path.with_extension("key.new");
    let _ = std::fs::remove_file(&temp);
    create(&temp, ring)?;
    std::fs::rename(&temp, path)
}

fn create(path: &Path, ring: &Keyring) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let text: String = ring
        .keys()
        .iter()
        .map(|k| format!("{}\n", k.to_base64()))
        .collect();
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_start_creates_a_private_key_file_and_the_next_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let (ring, source) = load(None, &path).unwrap();
        assert_eq!(source, KeySource::File(path.clone()));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (again, _) = load(None, &path).unwrap();
        assert_eq!(again.current().id(), ring.current().id());
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        load(None, &path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load(None, &path).unwrap_err();
        assert!(matches!(err, KeyFileError::Loose { mode: 0o644, .. }), "{err}");
        assert!(err.to_string().contains("chmod 600"));
    }

    #[test]
    fn the_environment_wins_and_lists_current_then_older_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let (new, old) = (Key::generate(), Key::generate());
        let env = format!("{},{}", new.to_base64(), old.to_base64());
        let (ring, source) = load(Some(&env), &path).unwrap();
        assert_eq!(source, KeySource::Environment);
        assert_eq!(ring.current().id(), new.id());
        assert_eq!(ring.keys().len(), 2);
        assert!(
            !path.exists(),
            "no key file is made when the environment gives the key"
        );
        let err = load(Some("short"), &path).unwrap_err();
        assert!(matches!(err, KeyFileError::Bad { .. }), "{err}");
        assert!(matches!(load(Some(" , "), &path), Err(KeyFileError::Empty(_))));
    }

    #[test]
    fn saving_replaces_the_file_and_keeps_it_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let (ring, _) = load(None, &path).unwrap();
        let rotated = Keyring::new(vec![Key::generate(), ring.current().clone()]);
        save(&path, &rotated).unwrap();
        let (read, _) = load(None, &path).unwrap();
        assert_eq!(read.current().id(), rotated.current().id());
        assert_eq!(read.keys().len(), 2);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
