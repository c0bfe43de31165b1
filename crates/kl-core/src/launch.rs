//! How to start an instance of a built revision: produced by the builder, executed by the
//! runtime, persisted with the artifact.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A process to run: the language shim (or compiled binary) and its environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    pub program: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Working directory: the function's code.
    pub cwd: PathBuf,
    /// Dependency layers the instance reads besides its code (the sandbox exposes them
    /// read-only). Recorded by the builder, never taken from user settings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<PathBuf>,
}
