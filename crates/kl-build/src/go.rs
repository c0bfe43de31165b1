//! Go: the user's package is compiled together with the shim's `main` into one static binary,
//! cached by the hash of the whole source tree and the Go version.

use std::collections::BTreeMap;
use std::path::Path;

use tokio::process::Command;

use crate::{BuildError, LangContext, Launch, Prepared, cache_entry, cache_key, command, copy_tree, shims};

pub(crate) async fn prepare(ctx: &LangContext<'_>) -> Result<Prepared, BuildError> {
    let main = shim_main(ctx.root).await?;
    let root = ctx.root.to_path_buf();
    let tree = tokio::task::spawn_blocking(move || tree_digest(&root))
        .await
        .expect("digest task panicked")?;
    shims::write(ctx.out, shims::GO_MAIN_FILE, &main).await?;
    let key = cache_key(&[
        b"go",
        ctx.version.as_bytes(),
        tree.as_bytes(),
        shims::GO_MAIN.as_bytes(),
    ]);
    let (entry, cached) = cache_entry(ctx, "go", &key, "binary: cached build", |tmp| async move {
        let work = tmp.join("src");
        copy_tree(ctx.root, &work).await?;
        tokio::fs::create_dir_all(work.join("kl_shim_main")).await?;
        tokio::fs::write(work.join("kl_shim_main").join("main.go"), &main).await?;
        let mut go = Command::new("go");
        go.args(["build", "-trimpath", "-o"])
            .arg(tmp.join("function"))
            .arg("./kl_shim_main")
            .current_dir(&work)
            .env("CGO_ENABLED", "0")
            .env("GOFLAGS", "-mod=mod -buildvcs=false")
            .env("GOWORK", "off");
        command::run("go build", &mut go, ctx.log).await?;
        Ok(tokio::fs::remove_dir_all(&work).await?)
    })
    .await?;
    let binary = ctx.out.join("function");
    if tokio::fs::hard_link(entry.join("function"), &binary)
        .await
        .is_err()
    {
        tokio::fs::copy(entry.join("function"), &binary).await?;
    }
    Ok(Prepared {
        launch: Launch {
            program: binary.display().to_string(),
            args: Vec::new(),
            env: BTreeMap::new(),
            cwd: ctx.code.to_path_buf(),
            // The binary is copied into the artifact: nothing outside it is read.
            layers: Vec::new(),
        },
        deps_key: key,
        deps_cached: cached,
    })
}

/// The shim's `main` for the Go function at `root`, importing the user's package. Checks what
/// needs no toolchain: a go.mod with a `module` line, and a root package that is not `main`.
pub(crate) async fn shim_main(root: &Path) -> Result<String, BuildError> {
    let go_mod = tokio::fs::read_to_string(root.join("go.mod"))
        .await
        .map_err(|_| BuildError::Manifest("Go functions need a go.mod at the source root".into()))?;
    let module =
        module_path(&go_mod).ok_or_else(|| BuildError::Manifest("go.mod has no `module` line".into()))?;
    if root_package_is_main(root).await? {
        return Err(BuildError::GoMainPackage);
    }
    Ok(shims::GO_MAIN.replace("{{USER_PKG}}", &module))
}

/// The `module` path declared in go.mod.
fn module_path(go_mod: &str) -> Option<String> {
    go_mod.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("module")?;
        let path = rest.trim().trim_matches('"');
        (!path.is_empty() && rest.starts_with(char::is_whitespace)).then(|| path.to_owned())
    })
}

/// Whether a non-test `.go` file at the root declares `package main`.
async fn root_package_is_main(root: &Path) -> Result<bool, BuildError> {
    let mut dir = tokio::fs::read_dir(root).await?;
    while let Some(entry) = dir.next_entry().await? {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".go") || name.ends_with("_test.go") {
            continue;
        }
        let text = tokio::fs::read_to_string(entry.path()).await?;
        let package = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("package ").map(|p| p.trim().to_owned()));
        if package.as_deref() == Some("main") {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Hash of every file's relative path and content, in a stable order.
fn tree_digest(root: &Path) -> std::io::Result<String> {
    fn walk(dir: &Path, rel: &Path, out: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let (path, rel) = (entry.path(), rel.join(entry.file_name()));
            let kind = entry.file_type()?;
            if kind.is_dir() {
                walk(&path, &rel, out)?;
            } else if kind.is_symlink() {
                out.push((
                    rel.display().to_string(),
                    std::fs::read_link(&path)?.into_os_string().into_encoded_bytes(),
                ));
            } else {
                out.push((rel.display().to_string(), std::fs::read(&path)?));
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(root, Path::new(""), &mut files)?;
    files.sort();
    let parts: Vec<&[u8]> = files
        .iter()
        .flat_map(|(name, body)| [name.as_bytes(), body.as_slice()])
        .collect();
    Ok(cache_key(&parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_module_path() {
        assert_eq!(
            module_path("module example.com/hello\n\ngo 1.22\n").as_deref(),
            Some("example.com/hello")
        );
        assert_eq!(module_path("// c\nmodule \"x/y\"\n").as_deref(), Some("x/y"));
        assert_eq!(module_path("go 1.22\n"), None);
        assert_eq!(module_path("modulex foo\n"), None);
    }

    #[test]
    fn tree_digest_changes_with_content_and_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.go"), "package a").unwrap();
        let one = tree_digest(dir.path()).unwrap();
        assert_eq!(one, tree_digest(dir.path()).unwrap());
        std::fs::write(dir.path().join("a.go"), "package b").unwrap();
        let two = tree_digest(dir.path()).unwrap();
        assert_ne!(one, two);
        std::fs::rename(dir.path().join("a.go"), dir.path().join("b.go")).unwrap();
        assert_ne!(two, tree_digest(dir.path()).unwrap());
    }
}
