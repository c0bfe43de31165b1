//! The Helm chart (`deploy/helm/knative-lambda`) rendered with `helm template` for each of its
//! values files, and the Flux example (`deploy/flux`), validated strictly like the objects
//! kl-k8s renders: core kinds against Kubernetes 1.33's schemas, Prometheus Operator and Flux
//! kinds against their CRD schemas. Plus `helm lint --strict`, the optional parts behind their
//! flags, the pod's hardening, and alerts that name metrics the gateway exports.
//!
//! helm is outside Cargo (`.ci/run` installs it from the Go module proxy): missing, the tests
//! print SKIPPED, or fail when `CI` is set.

// `write_objects` serves the tests of rendered `kl_k8s::Object`s, not these.
#[allow(dead_code)]
mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;
use support::validate::{KUBERNETES_VERSION, Outcome, unavailable, validate_core, validate_crds};

const VALUES: [&str; 3] = ["values.yaml", "values-dev.yaml", "values-prd.yaml"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn chart() -> PathBuf {
    repo().join("deploy/helm/knative-lambda")
}

/// Whether `helm` runs here; otherwise the SKIPPED line (or, in CI, the failure).
fn helm_available() -> bool {
    match Command::new("helm").arg("version").output() {
        Ok(out) if out.status.success() => true,
        _ => {
            unavailable("helm is not installed (.ci/run installs helm.sh/helm/v4/cmd/helm with go install)");
            false
        }
    }
}

fn run(command: &mut Command) -> String {
    let out = command.output().expect("helm runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{command:?} failed:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `helm template` of the chart with `values` (over the chart's values.yaml, as `helm install
/// -f` does), as the release `knative-lambda` in its namespace.
fn render(values: &str) -> String {
    run(Command::new("helm")
        .args(["template", "knative-lambda"])
        .arg(chart())
        .args(["--namespace", "knative-lambda", "--kube-version"])
        .arg(format!("{KUBERNETES_VERSION}.0"))
        .arg("-f")
        .arg(chart().join(values)))
}

#[test]
fn a_replicated_server_without_shared_backends_is_refused() {
    if !helm_available() {
        return;
    }
    for (values, set) in [
        ("values.yaml", "replicaCount=2"),
        ("values-dev.yaml", "autoscaling.enabled=true"),
        ("values-prd.yaml", "store.url="),
        ("values-prd.yaml", "db.existingSecret="),
        ("values-prd.yaml", "bus.existingSecret="),
    ] {
        let out = Command::new("helm")
            .args(["template", "knative-lambda"])
            .arg(chart())
            .arg("-f")
            .arg(chart().join(values))
            .args(["--set", set])
            .output()
            .expect("helm runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{values} with {set} rendered");
        assert!(
            stderr.contains(
                "needs the shared backends: set db.existingSecret, store.url and bus.existingSecret"
            ),
            "{values} with {set}: {stderr}"
        );
    }
}

#[test]
fn the_kubernetes_backend_needs_a_registry_and_an_s3_store_and_knative_eventing_a_cluster() {
    if !helm_available() {
        return;
    }
    for (set, says) in [
        (
            "kubernetes.registry=,operator.enabled=false",
            "backend kubernetes needs kubernetes.registry",
        ),
        (
            "store.url=,replicaCount=1,autoscaling.enabled=false",
            "backend kubernetes needs store.url",
        ),
        ("backend=local", "eventing knative needs backend kubernetes"),
    ] {
        let out = Command::new("helm")
            .args(["template", "knative-lambda"])
            .arg(chart())
            .arg("-f")
            .arg(chart().join("values-prd.yaml"))
            .args(["--set", set])
            .output()
            .expect("helm runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "values-prd.yaml with {set} rendered");
        assert!(stderr.contains(says), "{set}: {stderr}");
    }
}

/// The documents of a YAML stream, each with its parsed value; comment-only documents (an
/// empty template) are dropped.
fn documents(stream: &str) -> Vec<(String, Value)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    for line in stream.lines().chain(["---"]) {
        if line.trim_end() == "---" {
            let value: Value =
                serde_yaml::from_str(&current).unwrap_or_else(|e| panic!("not YAML ({e}):\n{current}"));
            if !value.is_null() {
                docs.push((std::mem::take(&mut current), value));
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs
}

fn kind(value: &Value) -> &str {
    value["kind"].as_str().unwrap_or_default()
}

/// Writes each document to its own file and validates them all strictly: Kubernetes' own API
/// groups (no dot, or under `k8s.io`) as core kinds, other groups (Prometheus Operator, Flux)
/// against the CRD schemas under `shared/schemas/crds`.
fn validate(dir: &Path, docs: &[(String, Value)]) {
    let (mut core, mut crds) = (Vec::new(), Vec::new());
    for (i, (text, value)) in docs.iter().enumerate() {
        let name = value["metadata"]["name"].as_str().unwrap_or("unnamed");
        let path = dir.join(format!("{i:03}-{}-{name}.yaml", kind(value).to_lowercase()));
        std::fs::write(&path, text).unwrap();
        let api_version = value["apiVersion"].as_str().unwrap_or_default();
        let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
        if group.contains('.') && !group.ends_with(".k8s.io") {
            crds.push(path);
        } else {
            core.push(path);
        }
    }
    for (files, result) in [(&core, validate_core(&core)), (&crds, validate_crds(&crds))] {
        if files.is_empty() {
            continue;
        }
        match result {
            Ok(Outcome::Passed(n)) => assert_eq!(n, files.len()),
            Ok(Outcome::Skipped) => {}
            Err(report) => panic!("{report}"),
        }
    }
}

#[test]
fn every_values_file_renders_objects_that_validate_strictly() {
    if !helm_available() {
        return;
    }
    for values in VALUES {
        let docs = documents(&render(values));
        assert!(docs.len() >= 8, "{values}: {} objects", docs.len());
        let dir = tempfile::tempdir().unwrap();
        validate(dir.path(), &docs);
        for (_, value) in &docs {
            let labels = &value["metadata"]["labels"];
            assert_eq!(
                labels["app.kubernetes.io/part-of"], "knative-lambda",
                "{values}: {value:?}"
            );
        }
    }
}

#[test]
fn helm_lint_strict_passes_for_every_values_file() {
    if !helm_available() {
        return;
    }
    for values in VALUES {
        run(Command::new("helm")
            .args(["lint", "--strict"])
            .arg(chart())
            .arg("-f")
            .arg(chart().join(values)));
    }
}

#[test]
fn optional_parts_follow_their_flags() {
    if !helm_available() {
        return;
    }
    let kinds = |values: &str| -> BTreeSet<String> {
        documents(&render(values))
            .iter()
            .map(|(_, v)| kind(v).to_owned())
            .collect()
    };
    let always = [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ];
    let optional = [
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "PrometheusRule",
        "ServiceMonitor",
    ];
    let dev = kinds("values-dev.yaml");
    let prd = kinds("values-prd.yaml");
    for kind in always {
        assert!(
            dev.contains(kind) && prd.contains(kind),
            "{kind}: dev {dev:?}, prd {prd:?}"
        );
    }
    for kind in optional {
        assert!(!dev.contains(kind), "{kind} is off in dev: {dev:?}");
        assert!(prd.contains(kind), "{kind} is on in prd: {prd:?}");
    }
    assert!(kinds("values.yaml").contains("PersistentVolumeClaim"));
    assert!(
        !prd.contains("PersistentVolumeClaim"),
        "prd keeps its state in the shared backends"
    );
}

#[test]
fn the_operator_runs_only_when_enabled_with_rights_to_what_it_reconciles() {
    if !helm_available() {
        return;
    }
    let operator = |docs: &[(String, Value)], kind_: &str| -> Option<Value> {
        docs.iter()
            .map(|(_, v)| v)
            .find(|v| kind(v) == kind_ && v["metadata"]["name"] == "knative-lambda-operator")
            .cloned()
    };
    let dev = documents(&render("values-dev.yaml"));
    assert!(operator(&dev, "Deployment").is_none(), "off unless enabled");

    let prd = documents(&render("values-prd.yaml"));
    let deployment = operator(&prd, "Deployment").expect("values-prd.yaml runs the operator");
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "knative-lambda-operator");
    let args: Vec<&str> = pod["containers"][0]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        &args[..3],
        ["operator", "--registry", "ghcr.io/acme/functions"],
        "{args:?}"
    );
    assert!(
        args.windows(2).any(|w| w == ["--credentials-secret", "kl-s3"]),
        "{args:?}"
    );
    assert_eq!(
        pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
        true
    );

    let cluster_role = operator(&prd, "ClusterRole").unwrap();
    let resources: BTreeSet<String> = cluster_role["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|r| r["resources"].as_sequence().unwrap().clone())
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect();
    for needed in [
        "lambdafunctions",
        "lambdafunctions/status",
        "services",
        "triggers",
        "pingsources",
    ] {
        assert!(resources.contains(needed), "{needed}: {resources:?}");
    }
    for never in ["secrets", "namespaces", "roles", "jobs"] {
        assert!(!resources.contains(never), "cluster-wide {never}: {resources:?}");
    }
    let role = operator(&prd, "Role").unwrap();
    assert_eq!(role["metadata"]["namespace"], "knative-lambda-builds");
    assert_eq!(
        role["rules"][0]["resources"].as_sequence().unwrap(),
        &[Value::from("jobs")]
    );

    let out = Command::new("helm")
        .args(["template", "knative-lambda"])
        .arg(chart())
        .args(["--set", "operator.enabled=true"])
        .output()
        .expect("helm runs");
    assert!(!out.status.success(), "an operator without a registry rendered");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("operator.enabled needs operator.registry"),
        "{stderr}"
    );
}

#[test]
fn the_server_pod_is_hardened_and_wired_to_its_backends() {
    if !helm_available() {
        return;
    }
    let docs = documents(&render("values-prd.yaml"));
    let deployment = &docs
        .iter()
        .find(|(_, v)| kind(v) == "Deployment")
        .expect("a Deployment")
        .1;
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"][0], "ALL");
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert_eq!(container[probe]["httpGet"]["path"], "/healthz", "{probe}");
    }
    assert_eq!(container["args"][0], "server");
    let env: Vec<&str> = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(env.contains(&"KL_DB") && env.contains(&"KL_BUS"), "{env:?}");
    let config = &docs
        .iter()
        .find(|(_, v)| kind(v) == "ConfigMap")
        .expect("a ConfigMap")
        .1;
    assert_eq!(config["data"]["KL_STORE"], "s3://acme-knative-lambda/prd");
    assert_eq!(
        config["data"]["KL_BACKUP_TO"],
        "s3://acme-knative-lambda-backups/prd"
    );
    assert_eq!(config["data"]["KL_BACKUP_EVERY"], "1h");
    assert_eq!(config["data"]["KL_LISTEN"], "0.0.0.0:8080");
}

/// The metric families the server registers: each registry's prefix + the registered name.
fn exported_metrics() -> BTreeSet<String> {
    [
        ("crates/kl-gateway/src/metrics.rs", "kl_"),
        ("crates/kl-server/src/backup/metrics.rs", "kl_backup_"),
        ("crates/kl-server/src/cost/metrics.rs", "kl_usage_"),
    ]
    .into_iter()
    .flat_map(|(file, prefix)| {
        let source = std::fs::read_to_string(repo().join(file)).unwrap();
        source
            .split("registry.register(")
            .skip(1)
            .filter_map(|call| call.split('"').nth(1))
            .map(|name| format!("{prefix}{name}"))
            .collect::<Vec<_>>()
    })
    .collect()
}

#[test]
fn alerts_name_metrics_the_server_exports() {
    if !helm_available() {
        return;
    }
    let exported = exported_metrics();
    for family in [
        "kl_queued_requests",
        "kl_backup_interval_seconds",
        "kl_usage_invocations",
    ] {
        assert!(exported.contains(family), "{exported:?}");
    }
    let docs = documents(&render("values-prd.yaml"));
    let rule = &docs
        .iter()
        .find(|(_, v)| kind(v) == "PrometheusRule")
        .expect("a PrometheusRule")
        .1;
    let mut alerts = BTreeSet::new();
    for group in rule["spec"]["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            alerts.insert(rule["alert"].as_str().unwrap().to_owned());
            let expr = rule["expr"].as_str().unwrap();
            let words = expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
            for metric in words.filter(|w| w.starts_with("kl_")) {
                let family = ["_total", "_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|suffix| metric.strip_suffix(suffix))
                    .unwrap_or(metric);
                assert!(
                    exported.contains(family),
                    "{metric} in {expr} is not exported: {exported:?}"
                );
            }
        }
    }
    for alert in [
        "KnativeLambdaFunction5xxRate",
        "KnativeLambdaQueueDepth",
        "KnativeLambdaColdStartP99",
        "KnativeLambdaInstanceCrashLoop",
    ] {
        assert!(alerts.contains(alert), "{alert} in {alerts:?}");
    }
}

#[test]
fn the_flux_example_validates_against_the_flux_schemas() {
    let dir = repo().join("deploy/flux");
    let mut docs = Vec::new();
    for path in [
        dir.join("source.yaml"),
        dir.join("sync.yaml"),
        dir.join("release/helmrelease.yaml"),
    ] {
        docs.extend(documents(&std::fs::read_to_string(&path).unwrap()));
    }
    let kinds: BTreeSet<&str> = docs.iter().map(|(_, v)| kind(v)).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["GitRepository", "HelmRelease", "Kustomization"])
    );
    let out = tempfile::tempdir().unwrap();
    validate(out.path(), &docs);
    let release = &docs.iter().find(|(_, v)| kind(v) == "HelmRelease").unwrap().1;
    let chart_path = release["spec"]["chart"]["spec"]["chart"].as_str().unwrap();
    assert!(
        repo().join(chart_path).join("Chart.yaml").is_file(),
        "{chart_path}"
    );
    for values in release["spec"]["chart"]["spec"]["valuesFiles"]
        .as_sequence()
        .unwrap()
    {
        assert!(repo().join(values.as_str().unwrap()).is_file(), "{values:?}");
    }
}
