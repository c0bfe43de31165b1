//! The LambdaFunction CRD generated from the Rust types: it matches the committed
//! `deploy/crds/` file and the Helm chart's copy, passes `kubernetes-validate --strict` as a CustomResourceDefinition,
//! has the status subresource and printer columns, and its own schema accepts the committed
//! example and rejects malformed functions.

#[allow(dead_code)]
#[path = "../../kl-k8s/tests/support/validate.rs"]
mod validate;

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kl_kube::LambdaFunction;
use kl_kube::crd::crd_yaml;
use kube::CustomResourceExt;
use validate::{Outcome, validate_core, validate_crds_script};

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/crds")
        .join(file)
}

const CRD_FILE: &str = "lambdafunctions.knative-lambda.io.yaml";
const EXAMPLE_FILE: &str = "lambdafunction-example.yaml";

/// The CRD as committed for `kubectl apply` and in the Helm chart's `crds/` (which Helm
/// installs before the templates).
fn committed_crds() -> [PathBuf; 2] {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    [
        deploy(CRD_FILE),
        repo.join("deploy/helm/knative-lambda/crds").join(CRD_FILE),
    ]
}

#[test]
fn the_committed_crds_are_the_generated_one() {
    let generated = crd_yaml();
    for path in committed_crds() {
        if std::env::var_os("KL_UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{} differs from the CRD the types generate; regenerate with \
             KL_UPDATE_GOLDEN=1 cargo test -p kl-kube --test crd and review the diff",
            path.display()
        );
    }
}

#[test]
fn the_crd_is_namespaced_with_status_and_the_printer_columns() {
    let crd: CustomResourceDefinition = LambdaFunction::crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("lambdafunctions.knative-lambda.io")
    );
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.short_names, Some(vec!["lf".to_owned()]));
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(version.subresources.as_ref().unwrap().status.is_some());
    let columns: Vec<(&str, &str)> = version
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| (c.name.as_str(), c.json_path.as_str()))
        .collect();
    assert_eq!(
        columns,
        [
            ("Runtime", ".spec.runtime"),
            ("Ready", ".status.conditions[?(@.type==\"Ready\")].status"),
            ("URL", ".status.url"),
            ("Age", ".metadata.creationTimestamp"),
        ]
    );
}

#[test]
fn the_crd_passes_kubernetes_validate_strictly() {
    match validate_core(&[deploy(CRD_FILE)]) {
        Ok(Outcome::Passed(1)) | Ok(Outcome::Skipped) => {}
        Ok(other) => panic!("{other:?}"),
        Err(report) => panic!("{report}"),
    }
}

/// Runs `validate_crds.py` with the CRD file on `objects` (YAML texts), so they are checked
/// against the CRD's own schema; `Ok(None)` when skipped.
fn validate_against_crd(objects: &[&str]) -> Result<Option<String>, String> {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = objects
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let path = dir.path().join(format!("{i}.yaml"));
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect();
    let output = Command::new("python3")
        .arg(validate_crds_script())
        .arg(deploy(CRD_FILE))
        .args(&files)
        .output()
        .expect("python3 runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.code() == Some(3) {
        assert!(std::env::var_os("CI").is_none(), "{text}; CI must install it");
        println!("SKIPPED: {text}");
        return Ok(None);
    }
    if output.status.success() && text.lines().filter(|l| l.starts_with("PASSED ")).count() == files.len() {
        Ok(Some(text))
    } else {
        Err(text)
    }
}

#[test]
fn the_example_passes_the_crds_own_schema_and_plans_a_deployment() {
    let example = std::fs::read_to_string(deploy(EXAMPLE_FILE)).unwrap();
    if let Err(report) = validate_against_crd(&[&example]) {
        panic!("{report}");
    }
    let lf: LambdaFunction = serde_yaml::from_str(&example).unwrap();
    assert!(lf.spec.source.git.is_some());
    let triggers = &lf.spec.eventing.as_ref().unwrap().triggers;
    assert!(triggers.iter().any(|t| t.schedule.is_some()) && triggers.iter().any(|t| !t.filters.is_empty()));
}

#[test]
fn the_crds_schema_rejects_malformed_functions() {
    let example = std::fs::read_to_string(deploy(EXAMPLE_FILE)).unwrap();
    let bad = [
        ("  runtime: python", "  runtime: cobol"),
        ("    ref: refs/heads/main\n", ""),
        ("  handler: main.handler", "  handler: [main, handler]"),
        ("    maxScale: 20", "    maxScale: many"),
    ];
    for (from, to) in bad {
        assert!(example.contains(from), "the example has {from:?}");
        let broken = example.replace(from, to);
        match validate_against_crd(&[&broken]) {
            Err(report) => assert!(report.contains("ERROR"), "{report}"),
            Ok(Some(report)) => panic!("accepted with {to:?}:\n{report}"),
            Ok(None) => {}
        }
    }
}
