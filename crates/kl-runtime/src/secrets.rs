//! Secret values for one instance: fetched and decrypted by the platform just before the
//! instance starts (never earlier, never kept), given to it as environment variables and as
//! read-only files `NAME/KEY` in a private folder (mounted at
//! [`kl_core::secret::SECRETS_MOUNT`] in a sandbox).

use std::fmt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use async_trait::async_trait;

/// One secret key given as a file.
#[derive(Clone)]
pub struct SecretFile {
    pub secret: String,
    pub key: String,
    pub contents: Vec<u8>,
}

/// What an instance receives. `Debug` shows names, never values.
#[derive(Clone, Default)]
pub struct InstanceSecrets {
    pub env: Vec<(String, String)>,
    pub files: Vec<SecretFile>,
}

impl fmt::Debug for InstanceSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        let files: Vec<String> = self
            .files
            .iter()
            .map(|s| format!("{}/{}", s.secret, s.key))
            .collect();
        f.debug_struct("InstanceSecrets")
            .field("env", &env)
            .field("files", &files)
            .finish()
    }
}

/// Where an instance's secrets come from: the platform implements it over its store.
#[async_trait]
pub trait SecretSource: Send + Sync + fmt::Debug {
    /// The values, decrypted now. The error names the secret at fault and never a value.
    async fn fetch(&self) -> Result<InstanceSecrets, String>;
}

/// Writes `files` under `dir` (created, mode 0500, as `NAME/KEY` files of mode 0400), owned
/// by `owner` when given (the sandboxed function's user), else by the server's.
pub(crate) fn write_files(
    dir: &Path,
    files: &[SecretFile],
    owner: Option<(u32, u32)>,
) -> std::io::Result<()> {
    let chown = |path: &Path| match owner {
        Some((uid, gid)) => std::os::unix::fs::chown(path, Some(uid), Some(gid)),
        None => Ok(()),
    };
    std::fs::DirBuilder::new().mode(0o700).create(dir)?;
    for file in files {
        let folder = dir.join(&file.secret);
        if !folder.exists() {
            std::fs::DirBuilder::new().mode(0o700).create(&folder)?;
        }
        let path = folder.join(&file.key);
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(&path)?;
        std::io::Write::write_all(&mut out, &file.contents)?;
        chown(&path)?;
    }
    for entry in std::fs::read_dir(dir)? {
        let folder = entry?.path();
        chown(&folder)?;
        std::fs::set_permissions(&folder, std::os::unix::fs::PermissionsExt::from_mode(0o500))?;
    }
    chown(dir)?;
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o500))
}

/// Removes a folder written by [`write_files`] (its modes forbid writing, not removal by
/// its owner's parent folder, but read-only folders must be opened up first).
pub(crate) fn remove_files(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let _ = std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o700));
        }
    }
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    let _ = std::fs::remove_dir_all(dir);
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn files_are_written_read_only_and_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("s");
        let file = |secret: &str, key: &str, v: &str| SecretFile {
            secret: secret.into(),
            key: key.into(),
            contents: v.as_bytes().to_vec(),
        };
        write_files(
            &dir,
            &[
                file("db", "USER", "u"),
                file("db", "PASS", "p"),
                file("api", "K", "k"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("db/PASS")).unwrap(), "p");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("db/PASS")), 0o400);
        assert_eq!(mode(&dir.join("db")), 0o500);
        assert_eq!(mode(&dir), 0o500);
        remove_files(&dir);
        assert!(!dir.exists());
    }

    #[test]
    fn debug_shows_names_only() {
        let secrets = InstanceSecrets {
            env: vec![("DB_PASSWORD".into(), "hunter2".into())],
            files: vec![SecretFile {
                secret: "db".into(),
                key: "PASS".into(),
                contents: b"hunter3".to_vec(),
            }],
        };
        let shown = format!("{secrets:?}");
        assert!(shown.contains("DB_PASSWORD") && shown.contains("db/PASS"));
        assert!(!shown.contains("hunter"), "{shown}");
    }
}
