//! The container build context of a function: the source, the shim under `.kl/` and the
//! Dockerfile, as the tar.gz a Kaniko Job reads (`--context s3://…`). Packed either from a
//! revision built here ([`container_context`]) or straight from its source, for a cluster that
//! builds it itself ([`source_context`]).

use std::io;
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;
use kl_core::{FunctionSpec, Runtime};

use crate::shims::{self, SHIM_DIR};
use crate::{BuildError, DOCKERFILE, dockerfile, go};

type Tar = tar::Builder<GzEncoder<Vec<u8>>>;

/// The toolchain a context packed without a local build pins its base image to, in the form
/// the toolchain reports its version (the Dockerfile's `FROM` follows it).
pub fn base_toolchain(runtime: Runtime) -> &'static str {
    match runtime {
        Runtime::Python => "Python 3.12",
        Runtime::Node => "node v22",
        Runtime::Go => "go1.24",
    }
}

/// Packs the build context of the artifact folder `out`. Dependency links (`node_modules`) are
/// left out: the Dockerfile installs dependencies itself.
pub fn container_context(out: &Path) -> io::Result<Vec<u8>> {
    pack(&out.join("code"), |tar| {
        tar.append_dir_all(SHIM_DIR, out.join(SHIM_DIR))?;
        tar.append_path_with_name(out.join(DOCKERFILE), DOCKERFILE)
    })
}

/// Packs the build context of the source tree `root` without building it here: no toolchain
/// runs on the server, the Dockerfile (based on [`base_toolchain`]) installs dependencies and
/// compiles in the cluster. Refuses what a local build would refuse before running any tool.
pub async fn source_context(root: &Path, spec: &FunctionSpec) -> Result<Vec<u8>, BuildError> {
    let (shim, text) = match spec.runtime {
        Runtime::Python => (shims::PYTHON_FILE, shims::PYTHON.to_owned()),
        Runtime::Node => (shims::NODE_FILE, shims::NODE.to_owned()),
        Runtime::Go => (shims::GO_MAIN_FILE, go::shim_main(root).await?),
    };
    let dockerfile = dockerfile::render(spec, base_toolchain(spec.runtime), root);
    let root = root.to_path_buf();
    let packed = tokio::task::spawn_blocking(move || {
        pack(&root, |tar| {
            append_file(tar, &format!("{SHIM_DIR}/{shim}"), text.as_bytes())?;
            append_file(tar, DOCKERFILE, dockerfile.as_bytes())
        })
    })
    .await
    .expect("the packing task does not panic")?;
    Ok(packed)
}

/// The module a Go inline source is given when it brings no go.mod of its own.
const INLINE_GO_MODULE: &str = "module kl.local/function\n\ngo 1.22\n";

/// Packs a one-file source (`filename` holding `code`) like [`source_context`] packs a tree;
/// a Go file gets a go.mod. The name must be a plain file name, not one the context uses. For a cluster that builds a function declared inline (the
/// operator's `source.inline`).
pub async fn inline_context(filename: &str, code: &str, spec: &FunctionSpec) -> Result<Vec<u8>, BuildError> {
    let plain = !filename.is_empty()
        && !filename.starts_with('.')
        && !filename.contains(['/', '\\', '\0'])
        && ![crate::MANIFEST_FILE, DOCKERFILE, "go.mod"].contains(&filename);
    if !plain {
        return Err(BuildError::InlineFileName(filename.to_owned()));
    }
    let dir = tempfile::tempdir()?;
    tokio::fs::write(dir.path().join(filename), code).await?;
    if spec.runtime == Runtime::Go {
        tokio::fs::write(dir.path().join("go.mod"), INLINE_GO_MODULE).await?;
    }
    source_context(dir.path(), spec).await
}

/// A tar.gz of the tree `code` (links kept as links, a `node_modules` link left out), then
/// whatever `rest` appends.
fn pack(code: &Path, rest: impl FnOnce(&mut Tar) -> io::Result<()>) -> io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    tar.follow_symlinks(false);
    for entry in std::fs::read_dir(code)? {
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
    rest(&mut tar)?;
    tar.into_inner()?.finish()
}

fn append_file(tar: &mut Tar, path: &str, data: &[u8]) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, path, data)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use kl_core::{FunctionSettings, SpecLimits};

    use super::*;

    fn entries(packed: &[u8]) -> Vec<(String, String)> {
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(packed));
        let mut found: Vec<(String, String)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = e.path().unwrap().display().to_string();
                let mut text = String::new();
                e.read_to_string(&mut text).unwrap();
                (name, text)
            })
            .collect();
        found.sort();
        found
    }

    fn spec(runtime: Runtime) -> FunctionSpec {
        FunctionSettings::default()
            .resolve(runtime, &SpecLimits::default())
            .unwrap()
    }

    #[tokio::test]
    async fn a_python_source_becomes_a_context_without_any_toolchain() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.py"), "def handler(e): return e\n").unwrap();
        std::fs::write(dir.path().join("requirements.txt"), "six\n").unwrap();
        let packed = source_context(dir.path(), &spec(Runtime::Python)).await.unwrap();
        let found = entries(&packed);
        let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [".kl/kl_shim.py", "Dockerfile", "main.py", "requirements.txt"]
        );
        assert_eq!(found[0].1, shims::PYTHON);
        assert!(found[1].1.contains("FROM python:3.12-slim"), "{}", found[1].1);
        assert!(found[1].1.contains("pip install"), "{}", found[1].1);
    }

    #[tokio::test]
    async fn an_inline_source_packs_like_a_tree_and_a_go_file_gets_a_module() {
        let packed = inline_context("app.py", "def handler(e): return e\n", &spec(Runtime::Python))
            .await
            .unwrap();
        let names: Vec<String> = entries(&packed).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, [".kl/kl_shim.py", "Dockerfile", "app.py"]);

        let go = "package hello\n\nfunc Handler(e []byte) ([]byte, error) { return e, nil }\n";
        let found = entries(&inline_context("hello.go", go, &spec(Runtime::Go)).await.unwrap());
        let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        assert!(
            names.contains(&"go.mod") && names.contains(&"hello.go"),
            "{names:?}"
        );
        let shim = found
            .iter()
            .find(|(n, _)| n.ends_with(".go") && n.starts_with(".kl"))
            .unwrap();
        assert!(shim.1.contains("kl.local/function"), "{}", shim.1);

        for bad in [
            "",
            "../main.py",
            "sub/main.py",
            ".env",
            "kl.yaml",
            "Dockerfile",
            "go.mod",
        ] {
            let refused = inline_context(bad, "x", &spec(Runtime::Python))
                .await
                .unwrap_err();
            assert!(
                matches!(refused, BuildError::InlineFileName(_)),
                "{bad:?}: {refused}"
            );
        }
    }

    #[tokio::test]
    async fn a_go_source_gets_the_shim_importing_its_module_and_main_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("go.mod"), "module example.com/hello\n\ngo 1.22\n").unwrap();
        std::fs::write(dir.path().join("f.go"), "package hello\n").unwrap();
        let packed = source_context(dir.path(), &spec(Runtime::Go)).await.unwrap();
        let found = entries(&packed);
        let main = &found.iter().find(|(n, _)| n == ".kl/main.go").unwrap().1;
        assert!(main.contains("example.com/hello"), "{main}");
        let dockerfile = &found.iter().find(|(n, _)| n == "Dockerfile").unwrap().1;
        assert!(dockerfile.contains("FROM golang:1.24 AS build"), "{dockerfile}");

        std::fs::write(dir.path().join("f.go"), "package main\n").unwrap();
        let refused = source_context(dir.path(), &spec(Runtime::Go)).await;
        assert!(matches!(refused, Err(BuildError::GoMainPackage)), "{refused:?}");
    }
}
