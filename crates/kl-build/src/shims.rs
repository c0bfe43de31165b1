//! The language shims shipped inside `kl` (see `shims/CONTRACT.md`): each build copies its
//! runtime's shim into the artifact, so an artifact is self-contained.

use std::path::{Path, PathBuf};

use kl_core::Runtime;
use sha2::{Digest, Sha256};

pub(crate) const PYTHON: &str = include_str!("../shims/python/kl_shim.py");
pub(crate) const NODE: &str = include_str!("../shims/node/kl_shim.cjs");
pub(crate) const GO_MAIN: &str = include_str!("../shims/go/main.go.tmpl");

/// Folder of an artifact (and of its container build context) holding the shim.
pub const SHIM_DIR: &str = ".kl";
pub(crate) const PYTHON_FILE: &str = "kl_shim.py";
pub(crate) const NODE_FILE: &str = "kl_shim.cjs";
pub(crate) const GO_MAIN_FILE: &str = "main.go";

/// Writes a shim file into the artifact's shim folder; returns its path.
pub(crate) async fn write(out: &Path, name: &str, text: &str) -> std::io::Result<PathBuf> {
    let dir = out.join(SHIM_DIR);
    tokio::fs::create_dir_all(&dir).await?;
    let path = dir.join(name);
    tokio::fs::write(&path, text).await?;
    Ok(path)
}

/// The program that runs or builds a runtime's functions.
pub(crate) fn program(runtime: Runtime) -> &'static str {
    match runtime {
        Runtime::Python => "python3",
        Runtime::Node => "node",
        Runtime::Go => "go",
    }
}

/// Hash of a runtime's shim, so a new shim yields a new artifact digest.
pub(crate) fn fingerprint(runtime: Runtime) -> String {
    let text = match runtime {
        Runtime::Python => PYTHON,
        Runtime::Node => NODE,
        Runtime::Go => GO_MAIN,
    };
    hex::encode(Sha256::digest(text))
}
