//! Python: `requirements.txt` → `pip install --target` into a layer cached by the hash of the
//! requirements and the interpreter version.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tokio::process::Command;

use crate::{BuildError, LangContext, Launch, Prepared, cache_entry, cache_key, command, shims};

/// Asks `python3` (possibly a pyenv or distribution shim) for the real interpreter, so the
/// launch names a binary whose installation prefix the sandbox can expose.
async fn interpreter() -> Result<String, BuildError> {
    command::version("python3", &["-c", "import sys; print(sys.executable)"])
        .await
        .filter(|path| path.starts_with('/'))
        .ok_or(BuildError::ToolchainMissing {
            runtime: kl_core::Runtime::Python,
            program: "python3".into(),
        })
}

/// Compiles the shim to `kl_shim.pyc` (which the launch runs) and the function's code to
/// `__pycache__`, at build time: the sandbox's view of the code is read-only, so otherwise
/// every cold start would compile them again.
async fn precompile(shim: &Path, ctx: &LangContext<'_>) -> Result<PathBuf, BuildError> {
    let compiled = shim.with_extension("pyc");
    let mut py = Command::new("python3");
    py.args(["-S", "-c", PRECOMPILE])
        .arg(shim)
        .arg(&compiled)
        .arg(ctx.code)
        .current_dir(ctx.code);
    command::run("precompile", &mut py, ctx.log).await?;
    Ok(compiled)
}

/// `python3 -S -c PRECOMPILE SHIM SHIM_PYC CODE_DIR`. Files that do not compile are left to
/// fail at load time, where the shim reports them with the handler's traceback.
const PRECOMPILE: &str = "import compileall, py_compile, sys
py_compile.compile(sys.argv[1], cfile=sys.argv[2], doraise=True)
compileall.compile_dir(sys.argv[3], quiet=2)";

pub(crate) async fn prepare(ctx: &LangContext<'_>) -> Result<Prepared, BuildError> {
    let reqs_path = ctx.root.join("requirements.txt");
    let reqs = tokio::fs::read_to_string(&reqs_path).await.unwrap_or_default();
    let has_reqs = reqs
        .lines()
        .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let mut env = BTreeMap::from([
        ("KL_CODE_DIR".to_owned(), ctx.code.display().to_string()),
        ("KL_HANDLER".to_owned(), ctx.spec.handler.clone()),
        ("PYTHONUNBUFFERED".to_owned(), "1".to_owned()),
        ("PYTHONDONTWRITEBYTECODE".to_owned(), "1".to_owned()),
    ]);
    let mut layers = Vec::new();
    let (deps_key, deps_cached) = if has_reqs {
        let key = cache_key(&[b"python", ctx.version.as_bytes(), reqs.as_bytes()]);
        let (layer, cached) = cache_entry(
            ctx,
            "python",
            &key,
            "dependencies: cached layer",
            |tmp| async move {
                let mut pip = Command::new("python3");
                pip.args([
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "--no-input",
                ])
                .args(["--no-warn-script-location", "--target"])
                .arg(&tmp)
                .arg("-r")
                .arg(&reqs_path)
                .current_dir(ctx.root);
                command::run("pip install", &mut pip, ctx.log).await
            },
        )
        .await?;
        env.insert("KL_DEPS_DIR".to_owned(), layer.display().to_string());
        layers.push(layer);
        (key, cached)
    } else {
        ctx.log.line("dependencies: none (no requirements.txt)");
        (String::new(), true)
    };
    let shim = shims::write(ctx.out, shims::PYTHON_FILE, shims::PYTHON).await?;
    let compiled = precompile(&shim, ctx).await?;
    Ok(Prepared {
        launch: Launch {
            program: interpreter().await?,
            // `-S`: no `site`, so a function sees only the standard library, its code and its
            // declared dependencies, as in its container image (whose `site-packages` holds
            // just those), and starts without the host's `.pth` files.
            args: vec!["-u".into(), "-S".into(), compiled.display().to_string()],
            env,
            cwd: ctx.code.to_path_buf(),
            layers,
        },
        deps_key,
        deps_cached,
    })
}
