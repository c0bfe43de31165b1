//! The container build context of a built revision: the source, the shim under `.kl/` and the
//! Dockerfile, as the tar.gz a Kaniko Job reads (`--context s3://…`).

use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::DOCKERFILE;
use crate::shims::SHIM_DIR;

/// Packs the build context of the artifact folder `out`. Dependency links (`node_modules`) are
/// left out: the Dockerfile installs dependencies itself.
pub fn container_context(out: &Path) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    tar.follow_symlinks(false);
    for entry in std::fs::read_dir(out.join("code"))? {
        let entry = entry?;
        if entry.file_name() == "node_modules" && entry.file_type()?.is_symlink() {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            tar.append_dir_all(entry.file_name(), &path)?;
        } else {
            tar.append_path_with_name(&path, entry.file_name())?;
        }
    }
    tar.append_dir_all(SHIM_DIR, out.join(SHIM_DIR))?;
    tar.append_path_with_name(out.join(DOCKERFILE), DOCKERFILE)?;
    tar.into_inner()?.finish()
}
