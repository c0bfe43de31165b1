//! `kl export k8s` against a real server: a tenant with a deployed function, a filter trigger
//! and a schedule trigger becomes Kubernetes and Knative objects that pass strict schema
//! validation, byte-identical from one run to the next; `--tenant` narrows it; a missing
//! tenant fails with the server's message and prints nothing. `kl export crd` prints the
//! committed LambdaFunction CRD.

mod support;

#[allow(dead_code)]
#[path = "../../kl-k8s/tests/support/validate.rs"]
mod validate;

use std::path::PathBuf;

use serde_yaml::Value;
use support::{Server, fixture, stdout, text};
use validate::{Outcome, validate_core, validate_crds};

/// The documents of a multi-document YAML stream.
fn documents(yaml: &str) -> Vec<Value> {
    assert!(yaml.starts_with("---\n"), "{yaml}");
    yaml.split("---\n")
        .skip(1)
        .map(|doc| serde_yaml::from_str(doc).unwrap_or_else(|e| panic!("{e}: {doc}")))
        .collect()
}

fn kind_name(doc: &Value) -> (String, String, String) {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (
        s(&doc["kind"]),
        s(&doc["metadata"]["namespace"]),
        s(&doc["metadata"]["name"]),
    )
}

/// Validates every document strictly, each in its own file: core kinds with
/// kubernetes-validate, Knative kinds against their CRD schemas.
fn validate_all(docs: &[Value]) {
    let dir = tempfile::tempdir().unwrap();
    let (mut core, mut knative): (Vec<PathBuf>, Vec<PathBuf>) = (Vec::new(), Vec::new());
    for (i, doc) in docs.iter().enumerate() {
        let (kind, _, name) = kind_name(doc);
        let path = dir
            .path()
            .join(format!("{i:03}-{}-{name}.yaml", kind.to_lowercase()));
        std::fs::write(&path, serde_yaml::to_string(doc).unwrap()).unwrap();
        let api_version = doc["apiVersion"].as_str().unwrap();
        if api_version.contains(".knative.dev/") {
            knative.push(path);
        } else {
            core.push(path);
        }
    }
    for (outcome, files) in [(validate_core(&core), &core), (validate_crds(&knative), &knative)] {
        match outcome {
            Ok(Outcome::Passed(n)) => assert_eq!(n, files.len()),
            Ok(Outcome::Skipped) => {}
            Err(report) => panic!("{report}"),
        }
    }
}

#[tokio::test]
async fn export_k8s_prints_the_platform_as_valid_deterministic_objects() {
    let server = Server::start().await;
    server.create_tenant("acme", serde_json::json!({})).await;
    server
        .deploy(&fixture("py-hello"), &["--tenant", "acme", "--name", "hello"])
        .await;
    for args in [
        &[
            "trigger",
            "create",
            "orders",
            "--tenant",
            "acme",
            "--function",
            "hello",
            "--filter",
            "type=com.example.order",
            "--filter",
            "subject=suffix:.png",
        ][..],
        &[
            "trigger",
            "create",
            "nightly",
            "--tenant",
            "acme",
            "--function",
            "hello",
            "--schedule",
            "0 3 * * *",
            "--data",
            "{\"task\": \"report\"}",
        ][..],
    ] {
        let out = server.kl(args).await;
        assert!(out.status.success(), "{}", text(&out));
    }

    let export = ["export", "k8s", "--registry", "registry.example.com/kl"];
    let first = server.kl(&export).await;
    assert!(first.status.success(), "{}", text(&first));
    let second = server.kl(&export).await;
    assert_eq!(
        stdout(&first),
        stdout(&second),
        "two exports of the same state differ"
    );

    let docs = documents(&stdout(&first));
    let found: Vec<(String, String, String)> = docs.iter().map(kind_name).collect();
    let has =
        |kind: &str, ns: &str, name: &str| found.contains(&(kind.to_owned(), ns.to_owned(), name.to_owned()));
    for (kind, ns, name) in [
        ("Namespace", "", "kl-acme"),
        ("Namespace", "", "kl-default"),
        ("Namespace", "", "knative-lambda-builds"),
        ("PriorityClass", "", "kl-high"),
        ("ResourceQuota", "kl-acme", "kl-quota"),
        ("Broker", "kl-acme", "default"),
        ("Service", "kl-acme", "hello"),
        ("Trigger", "kl-acme", "orders"),
        ("PingSource", "kl-acme", "nightly"),
    ] {
        assert!(has(kind, ns, name), "no {kind} {ns}/{name} in {found:#?}");
    }
    let ksvc = docs
        .iter()
        .find(|d| d["apiVersion"] == "serving.knative.dev/v1")
        .unwrap();
    let template = &ksvc["spec"]["template"];
    assert_eq!(template["metadata"]["name"], "hello-00001");
    assert_eq!(
        template["spec"]["containers"][0]["image"],
        "registry.example.com/kl/acme/hello:00001"
    );
    let trigger = docs.iter().find(|d| kind_name(d).2 == "orders").unwrap();
    assert_eq!(trigger["spec"]["subscriber"]["ref"]["name"], "hello");
    assert_eq!(trigger["spec"]["filters"].as_sequence().unwrap().len(), 2);
    let ping = docs.iter().find(|d| kind_name(d).2 == "nightly").unwrap();
    assert_eq!(ping["spec"]["schedule"], "0 3 * * *");
    assert_eq!(ping["spec"]["contentType"], "application/json");
    validate_all(&docs);

    let tenant_only = server.kl(&["export", "k8s", "--tenant", "acme"]).await;
    assert!(tenant_only.status.success(), "{}", text(&tenant_only));
    let docs = documents(&stdout(&tenant_only));
    for (kind, ns, name) in docs.iter().map(kind_name) {
        assert!(
            ns == "kl-acme" || (kind == "Namespace" && name == "kl-acme"),
            "{kind} {ns}/{name} is not tenant acme's"
        );
    }

    let missing = server.kl(&["export", "k8s", "--tenant", "nope"]).await;
    assert!(!missing.status.success());
    assert_eq!(stdout(&missing), "");
    assert!(text(&missing).contains("nope"), "{}", text(&missing));
}

#[tokio::test]
async fn export_crd_prints_the_committed_lambdafunction_crd() {
    let out = tokio::process::Command::new(support::KL)
        .args(["export", "crd"])
        .output()
        .await
        .expect("kl runs");
    assert!(out.status.success(), "{}", text(&out));
    let committed = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/crds/lambdafunctions.knative-lambda.io.yaml"),
    )
    .unwrap();
    assert_eq!(stdout(&out), committed);
}
