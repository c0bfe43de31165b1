//! Strict schema validation of rendered objects, for the tests: core kinds with the Kubernetes
//! schemas bundled in the PyPI package `kubernetes-validate`, Knative kinds with the CRD schemas
//! in `shared/schemas/crds/` (through `validate_crds.py` and the Python `jsonschema` package
//! that `kubernetes-validate` installs). Both validators are outside Cargo: when one is missing
//! the check fails if `CI` is set (`.ci/run` installs it) and is reported as SKIPPED otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

use kl_k8s::Object;

/// The Kubernetes version whose schemas core kinds are checked against; matches the
/// `k8s-openapi` feature (`v1_33`).
pub const KUBERNETES_VERSION: &str = "1.33";

/// `shared/schemas`, next to the checkout (`../shared` of the repository root, in CI and in
/// worktrees alike), or `KL_SCHEMAS_DIR` for a checkout elsewhere.
pub fn schemas_dir() -> PathBuf {
    match std::env::var_os("KL_SCHEMAS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/schemas"),
    }
}

/// What a validator run found.
#[derive(Debug)]
pub enum Outcome {
    /// Every file passed; the number of files.
    Passed(usize),
    /// The validator is not installed here (and `CI` is not set); a SKIPPED line says which.
    Skipped,
}

/// Fails the test when `CI` is set; otherwise the check is skipped with a visible line.
pub fn unavailable(what: &str) -> Outcome {
    if std::env::var_os("CI").is_some() {
        panic!("{what}; CI must install it (see .ci/run)");
    }
    println!("SKIPPED: {what}");
    Outcome::Skipped
}

/// Writes each object to its own file in `dir` (one document per file, so a failure names
/// the object) and returns the paths, core kinds and Knative kinds apart.
pub fn write_objects(dir: &Path, objects: &[Object]) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut core = Vec::new();
    let mut crds = Vec::new();
    for (i, object) in objects.iter().enumerate() {
        let ns = match object.namespace() {
            "" => "cluster",
            ns => ns,
        };
        let path = dir.join(format!(
            "{i:03}-{}-{ns}-{}.yaml",
            object.kind().to_lowercase(),
            object.name()
        ));
        let yaml = kl_k8s::to_yaml(std::slice::from_ref(object)).expect("renders as YAML");
        std::fs::write(&path, yaml).expect("writes to the temp dir");
        if object.is_core() {
            core.push(path);
        } else {
            crds.push(path);
        }
    }
    (core, crds)
}

/// `kubernetes-validate --strict -k 1.33 FILE…`: every file must report `passed`. A warning
/// (such as "couldn't find schema") counts as a failure, since nothing was checked. Run as
/// `python3 -m kubernetes_validate`, so a pip install whose scripts directory is not on `PATH`
/// still counts. `Err` holds the validator's report.
pub fn validate_core(files: &[PathBuf]) -> Result<Outcome, String> {
    let output = match Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "-k", KUBERNETES_VERSION])
        .args(files)
        .output()
    {
        Ok(output) => output,
        Err(e) => return Ok(unavailable(&format!("python3 is not installed ({e})"))),
    };
    if String::from_utf8_lossy(&output.stderr).contains("No module named kubernetes_validate") {
        return Ok(unavailable(
            "the Python package kubernetes-validate is not installed: pip install kubernetes-validate",
        ));
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let passed = text
        .lines()
        .filter(|l| l.starts_with("INFO ") && l.contains(" passed "))
        .count();
    if output.status.success() && passed == files.len() {
        return Ok(Outcome::Passed(passed));
    }
    Err(format!(
        "kubernetes-validate --strict failed ({passed} of {} files passed):\n{text}",
        files.len()
    ))
}

/// `validate_crds.py`, which checks custom resources against a schema catalog or a CRD file.
/// Through `../kl-k8s`, so other crates' tests can include this file with `#[path]`.
pub fn validate_crds_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../kl-k8s/tests/support/validate_crds.py")
}

/// Validates Knative objects against `shared/schemas/crds/` with `validate_crds.py`. `Err`
/// holds the validator's report.
pub fn validate_crds(files: &[PathBuf]) -> Result<Outcome, String> {
    let schemas = schemas_dir().join("crds");
    if !schemas.is_dir() {
        return Ok(unavailable(&format!("no CRD schemas at {}", schemas.display())));
    }
    let output = match Command::new("python3")
        .arg(validate_crds_script())
        .arg(&schemas)
        .args(files)
        .output()
    {
        Ok(output) => output,
        Err(e) => return Ok(unavailable(&format!("python3 is not installed ({e})"))),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.code() == Some(3) {
        return Ok(unavailable(text.trim()));
    }
    let passed = text.lines().filter(|l| l.starts_with("PASSED ")).count();
    if output.status.success() && passed == files.len() {
        return Ok(Outcome::Passed(passed));
    }
    Err(format!(
        "CRD schema validation failed ({passed} of {} files passed):\n{text}",
        files.len()
    ))
}
