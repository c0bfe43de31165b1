//! Node.js: `package.json` (+ lock file) → `npm ci` / `npm install --omit=dev` into a layer
//! cached by the hash of the manifests and the Node version, linked in as `node_modules`.

use std::collections::BTreeMap;

use tokio::process::Command;

use crate::{BuildError, LangContext, Launch, Prepared, cache_entry, cache_key, command, shims};

const LOCK_FILES: [&str; 2] = ["package-lock.json", "npm-shrinkwrap.json"];

/// Asks `node` for its real executable, so the launch names a binary whose installation
/// prefix the sandbox can expose (`node` on PATH may be a version manager's shim).
async fn interpreter() -> Result<String, BuildError> {
    command::version("node", &["-p", "process.execPath"])
        .await
        .filter(|path| path.starts_with('/'))
        .ok_or(BuildError::ToolchainMissing {
            runtime: kl_core::Runtime::Node,
            program: "node".to_owned(),
        })
}

pub(crate) async fn prepare(ctx: &LangContext<'_>) -> Result<Prepared, BuildError> {
    let manifest = tokio::fs::read(ctx.root.join("package.json")).await.ok();
    let has_deps = match &manifest {
        Some(bytes) => {
            let json: serde_json::Value = serde_json::from_slice(bytes)
                .map_err(|e| BuildError::Manifest(format!("package.json is not valid JSON: {e}")))?;
            json.get("dependencies")
                .and_then(|d| d.as_object())
                .is_some_and(|d| !d.is_empty())
        }
        None => false,
    };
    let vendored = tokio::fs::try_exists(ctx.code.join("node_modules")).await?;
    let mut layers = Vec::new();
    let (deps_key, deps_cached) = if has_deps && !vendored {
        let lock = find_lock(ctx).await;
        let lock_bytes = lock.as_ref().map(|(_, b)| b.as_slice()).unwrap_or_default();
        let manifest = manifest.unwrap_or_default();
        let key = cache_key(&[b"node", ctx.version.as_bytes(), &manifest, lock_bytes]);
        let (layer, cached) = cache_entry(
            ctx,
            "node",
            &key,
            "dependencies: cached layer",
            |tmp| async move {
                tokio::fs::write(tmp.join("package.json"), &manifest).await?;
                let mut npm = Command::new("npm");
                match &lock {
                    Some((name, bytes)) => {
                        tokio::fs::write(tmp.join(name), bytes).await?;
                        npm.arg("ci");
                    }
                    None => {
                        npm.args(["install", "--no-package-lock"]);
                    }
                }
                npm.args(["--omit=dev", "--no-audit", "--no-fund", "--ignore-scripts"])
                    .current_dir(&tmp);
                command::run("npm install", &mut npm, ctx.log).await
            },
        )
        .await?;
        std::os::unix::fs::symlink(layer.join("node_modules"), ctx.code.join("node_modules"))?;
        layers.push(layer);
        (key, cached)
    } else {
        let why = if vendored {
            "vendored node_modules"
        } else {
            "none in package.json"
        };
        ctx.log.line(&format!("dependencies: {why}"));
        (String::new(), true)
    };
    let shim = shims::write(ctx.out, shims::NODE_FILE, shims::NODE).await?;
    let env = BTreeMap::from([
        ("KL_CODE_DIR".to_owned(), ctx.code.display().to_string()),
        ("KL_HANDLER".to_owned(), ctx.spec.handler.clone()),
    ]);
    Ok(Prepared {
        launch: Launch {
            program: interpreter().await?,
            args: vec![shim.display().to_string()],
            env,
            cwd: ctx.code.to_path_buf(),
            layers,
        },
        deps_key,
        deps_cached,
    })
}

async fn find_lock(ctx: &LangContext<'_>) -> Option<(&'static str, Vec<u8>)> {
    for name in LOCK_FILES {
        if let Ok(bytes) = tokio::fs::read(ctx.root.join(name)).await {
            return Some((name, bytes));
        }
    }
    None
}
