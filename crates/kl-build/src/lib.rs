//! Builds function source into a runnable artifact, without a Dockerfile from the user.
//!
//! A build unpacks nothing itself (see [`archive`]); it takes an unpacked tree, reads
//! `kl.yaml`, detects the language, installs dependencies into a layer cached by content hash,
//! adds the language shim and writes the launch description the runtime executes. It also
//! writes the Dockerfile a container build (Kaniko) would use for the same function.

pub mod archive;
mod command;
mod context;
mod detect;
mod dockerfile;
mod go;
mod log;
mod manifest;
mod node;
mod python;
mod shims;

use std::path::{Path, PathBuf};

pub use kl_core::Launch;
use kl_core::{FunctionSettings, FunctionSpec, Runtime, SpecError, SpecLimits};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::sync::OnceCell;

pub use archive::{ArchiveError, UnpackLimits, Unpacked, unpack};
pub use context::{base_toolchain, container_context, inline_context, source_context};
pub use detect::{detect_runtime, source_root};
pub use log::BuildLog;
pub use manifest::{MANIFEST_FILE, parse_manifest, read_manifest};

/// Why a build failed. Messages are shown to the user as the build's error.
#[derive(Debug, Error)]
pub enum BuildError {
    /// The source tree is empty.
    #[error("the source is empty")]
    EmptySource,
    /// No marker file or source file says which language this is.
    #[error(
        "cannot detect the language: add requirements.txt (Python), package.json (Node.js) or go.mod (Go), or set `runtime` in kl.yaml or --runtime"
    )]
    UnknownLanguage,
    /// Markers of several languages are present.
    #[error("the source looks like several languages ({0}); set `runtime` in kl.yaml or --runtime")]
    AmbiguousLanguage(String),
    /// `kl.yaml` (or `package.json`, `go.mod`) could not be understood.
    #[error("invalid function manifest: {0}")]
    Manifest(String),
    /// An inline source's file name is not a plain file name.
    #[error("inline source file name {0:?}: use a plain file name such as main.py (no path, not hidden)")]
    InlineFileName(String),
    /// The settings do not resolve into a valid spec.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The language's toolchain is not installed on the server.
    #[error("the {runtime} toolchain is not installed on the server ({program} not found)")]
    ToolchainMissing { runtime: Runtime, program: String },
    /// A Go function's root package is `main`; the shim provides `main`.
    #[error(
        "the Go package at the module root is `main`; use a library package (e.g. `package function`) exporting Handle"
    )]
    GoMainPackage,
    /// A build step (pip, npm, go build) exited non-zero.
    #[error("{step} failed ({status}):\n{output}")]
    Step {
        step: String,
        status: String,
        output: String,
    },
    /// The server could not read or write build files.
    #[error("build I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// File in the artifact folder holding the [`Launch`] as JSON.
pub const LAUNCH_FILE: &str = "launch.json";
/// File in the artifact folder holding the generated Dockerfile.
pub const DOCKERFILE: &str = "Dockerfile";

/// The result of a successful build.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub spec: FunctionSpec,
    pub launch: Launch,
    /// Content digest of what runs: source, dependency layer and shim.
    pub digest: String,
    /// Whether the dependency layer came from the cache.
    pub deps_cached: bool,
}

/// Builder settings.
#[derive(Debug, Clone)]
pub struct BuilderConfig {
    /// Where dependency layers and compiled binaries are cached, by content hash.
    pub cache_dir: PathBuf,
}

/// One build's inputs.
#[derive(Debug)]
pub struct BuildInput<'a> {
    /// The unpacked source tree.
    pub source: &'a Path,
    /// The artifact folder to create; must not exist.
    pub out: &'a Path,
    /// Settings given at deploy time; they win over `kl.yaml`.
    pub settings: &'a FunctionSettings,
    /// Digest of the uploaded source archive.
    pub source_digest: &'a str,
    /// The tenant's effective per-instance limits.
    pub limits: &'a SpecLimits,
    pub log: &'a BuildLog,
}

/// Versions of the language toolchains, probed once.
#[derive(Debug, Clone, Default)]
struct Toolchains {
    python: Option<String>,
    node: Option<String>,
    go: Option<String>,
}

/// Builds functions; shared by all build jobs.
#[derive(Debug)]
pub struct Builder {
    config: BuilderConfig,
    toolchains: OnceCell<Toolchains>,
}

/// The per-language part of a build: dependencies and launch.
struct Prepared {
    launch: Launch,
    /// Cache key of the dependency layer (or compiled binary), part of the digest.
    deps_key: String,
    deps_cached: bool,
}

impl Builder {
    pub fn new(config: BuilderConfig) -> Builder {
        Builder {
            config,
            toolchains: OnceCell::new(),
        }
    }

    /// Resolves the spec of a source tree without building it (language, settings, limits).
    pub fn resolve(
        &self,
        root: &Path,
        settings: &FunctionSettings,
        limits: &SpecLimits,
    ) -> Result<FunctionSpec, BuildError> {
        let merged = read_manifest(root)?.overlay(settings.clone());
        let runtime = match merged.runtime {
            Some(rt) => rt,
            None => detect_runtime(root)?,
        };
        Ok(merged.resolve(runtime, limits)?)
    }

    /// Builds `input.source` into the artifact folder `input.out`.
    pub async fn build(&self, input: BuildInput<'_>) -> Result<Artifact, BuildError> {
        let root = source_root(input.source)?;
        let spec = self.resolve(&root, input.settings, input.limits)?;
        let log = input.log;
        log.line(&format!("runtime {}, handler {}", spec.runtime, spec.handler));
        let versions = self.toolchains().await;
        let version = match spec.runtime {
            Runtime::Python => &versions.python,
            Runtime::Node => &versions.node,
            Runtime::Go => &versions.go,
        };
        let Some(version) = version.clone() else {
            return Err(BuildError::ToolchainMissing {
                runtime: spec.runtime,
                program: shims::program(spec.runtime).to_owned(),
            });
        };
        log.line(&format!("toolchain {version}"));
        tokio::fs::create_dir_all(input.out).await?;
        let code = input.out.join("code");
        copy_tree(&root, &code).await?;
        let ctx = LangContext {
            root: &root,
            code: &code,
            out: input.out,
            cache: &self.config.cache_dir,
            version: &version,
            spec: &spec,
            log,
        };
        let prepared = match spec.runtime {
            Runtime::Python => python::prepare(&ctx).await?,
            Runtime::Node => node::prepare(&ctx).await?,
            Runtime::Go => go::prepare(&ctx).await?,
        };
        let mut launch = prepared.launch;
        launch.env.extend(spec.env.clone());
        let launch_json = serde_json::to_vec_pretty(&launch).expect("launch serializes");
        tokio::fs::write(input.out.join(LAUNCH_FILE), launch_json).await?;
        let dockerfile = dockerfile::render(&spec, &version, &root);
        tokio::fs::write(input.out.join(DOCKERFILE), dockerfile).await?;
        let digest = hex::encode(
            Sha256::new()
                .chain_update(input.source_digest)
                .chain_update(&prepared.deps_key)
                .chain_update(shims::fingerprint(spec.runtime))
                .finalize(),
        );
        Ok(Artifact {
            spec,
            launch,
            digest: format!("sha256:{digest}"),
            deps_cached: prepared.deps_cached,
        })
    }

    async fn toolchains(&self) -> &Toolchains {
        self.toolchains
            .get_or_init(|| async {
                Toolchains {
                    python: command::version("python3", &["--version"]).await,
                    node: command::version("node", &["--version"])
                        .await
                        .map(|v| format!("node {v}")),
                    go: command::version("go", &["env", "GOVERSION"]).await,
                }
            })
            .await
    }
}

/// What a language builder needs to know.
struct LangContext<'a> {
    /// The user's source root.
    root: &'a Path,
    /// The copy of the source inside the artifact.
    code: &'a Path,
    /// The artifact folder.
    out: &'a Path,
    cache: &'a Path,
    version: &'a str,
    spec: &'a FunctionSpec,
    log: &'a BuildLog,
}

/// SHA-256 of the given parts, hex, for cache keys.
fn cache_key(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// Recursively copies a source tree (files, folders, links as links).
async fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    let (from, to) = (from.to_path_buf(), to.to_path_buf());
    tokio::task::spawn_blocking(move || copy_tree_blocking(&from, &to))
        .await
        .expect("copy task panicked")
}

fn copy_tree_blocking(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if kind.is_dir() {
            copy_tree_blocking(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

/// A content-addressed cache entry (a dependency layer or a compiled binary) under
/// `CACHE/kind/key`: returns its path and whether it was already there. When missing, `fill`
/// populates a private temporary folder that is moved into place only if it succeeds, so a
/// failed or concurrent build never leaves or sees a half-made entry.
async fn cache_entry<F, Fut>(
    ctx: &LangContext<'_>,
    kind: &str,
    key: &str,
    cached_note: &str,
    fill: F,
) -> Result<(PathBuf, bool), BuildError>
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: Future<Output = Result<(), BuildError>>,
{
    let dir = ctx.cache.join(kind);
    let entry = dir.join(key);
    if tokio::fs::try_exists(&entry).await? {
        ctx.log.line(&format!("{cached_note} {}", &key[..12]));
        return Ok((entry, true));
    }
    tokio::fs::create_dir_all(&dir).await?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!("{key}.tmp-"))
        .tempdir_in(&dir)?;
    fill(tmp.path().to_path_buf()).await?;
    let tmp = tmp.keep();
    match tokio::fs::rename(&tmp, &entry).await {
        Ok(()) => {}
        // A concurrent build of the same key won the race: keep its entry.
        Err(_) if tokio::fs::try_exists(&entry).await.unwrap_or(false) => {
            tokio::fs::remove_dir_all(&tmp).await?;
        }
        Err(e) => return Err(e.into()),
    }
    Ok((entry, false))
}
