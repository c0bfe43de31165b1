//! The operator's reconcile pass against a fake API transport: the finalizer is added first,
//! then each pass observes, applies and writes the status; deletion removes the function's
//! objects before the finalizer; API refusals fail the pass (the controller retries).

mod support;

use std::sync::Arc;
use std::time::Duration;

use kl_k8s::{BuildResources, PlatformSettings, Registry};
use kl_kube::operator::{Context, FINALIZER, reconcile};
use kl_kube::plan::{OperatorSettings, POLL};
use kl_kube::{Applier, LambdaFunction};
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use support::fake::{self, Recorded, ok, status};

const LF_PATH: &str = "/apis/knative-lambda.io/v1alpha1/namespaces/kl-acme/lambdafunctions/hello";
const KSVC_PATH: &str = "/apis/serving.knative.dev/v1/namespaces/kl-acme/services/hello";

fn context(client: kube::Client) -> Arc<Context> {
    Arc::new(Context {
        applier: Applier::new(client),
        settings: OperatorSettings {
            platform: PlatformSettings::default(),
            registry: Registry {
                push_secret: "registry-push".into(),
                cache_repo: None,
                insecure: false,
            },
            repository: "registry.example.com/kl".into(),
            bucket: "kl-sources".into(),
            credentials_secret: None,
            build_resources: BuildResources {
                cpu_millis: 1000,
                memory_bytes: 2 << 30,
            },
            build_deadline: Duration::from_secs(1200),
            build_ttl: Duration::from_secs(3600),
        },
    })
}

fn lf(source: Value, finalizers: &[&str], deleting: bool) -> LambdaFunction {
    let mut metadata = json!({
        "name": "hello", "namespace": "kl-acme", "generation": 1, "resourceVersion": "5",
        "uid": "0b7c6f0e-1111-2222-3333-444455556666", "finalizers": finalizers,
    });
    if deleting {
        metadata["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    }
    serde_json::from_value(json!({
        "apiVersion": "knative-lambda.io/v1alpha1", "kind": "LambdaFunction",
        "metadata": metadata,
        "spec": {"source": source, "runtime": "python",
                 "eventing": {"triggers": [{"name": "orders", "filters": [{"exact": {"type": "order"}}]}]}},
    }))
    .unwrap()
}

fn image() -> Value {
    json!({"image": "registry.example.com/kl/acme/hello@sha256:aa"})
}

/// A cluster where nothing exists yet: reads are 404, applies and patches echo back.
fn empty_cluster(r: &Recorded) -> (u16, String) {
    match r.method.as_str() {
        "GET" => status(404, "NotFound", "not found"),
        "PATCH" if r.content_type == "application/json-patch+json" => {
            ok(serde_json::to_value(lf(image(), &[FINALIZER], false)).unwrap())
        }
        "PATCH" if r.path().ends_with("/status") => {
            let mut object = serde_json::to_value(lf(image(), &[FINALIZER], false)).unwrap();
            object["status"] = r.json()["status"].clone();
            ok(object)
        }
        "PATCH" => {
            let mut object = r.json();
            object["metadata"] = json!({"name": "hello", "namespace": "kl-acme", "resourceVersion": "6"});
            ok(object)
        }
        "DELETE" => ok(json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": []})),
        _ => status(405, "MethodNotAllowed", "unexpected"),
    }
}

#[tokio::test]
async fn the_first_pass_only_adds_the_finalizer() {
    let (client, requests) = fake::client(empty_cluster);
    let action = reconcile(Arc::new(lf(image(), &[], false)), context(client))
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    let requests = requests.await.unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].line(), format!("PATCH {LF_PATH}"));
    assert_eq!(requests[0].content_type, "application/json-patch+json");
    let patch = requests[0].body.clone();
    assert!(patch.contains(FINALIZER), "{patch}");
}

#[tokio::test]
async fn a_prebuilt_image_is_applied_and_the_status_written_with_the_generation() {
    let (client, requests) = fake::client(empty_cluster);
    let action = reconcile(Arc::new(lf(image(), &[FINALIZER], false)), context(client))
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(POLL));

    let requests = requests.await.unwrap();
    let lines: Vec<String> = requests.iter().map(Recorded::line).collect();
    assert_eq!(
        lines,
        [
            format!("GET {KSVC_PATH}"),
            format!("PATCH {KSVC_PATH}"),
            "PATCH /apis/eventing.knative.dev/v1/namespaces/kl-acme/triggers/orders".to_owned(),
            format!("PATCH {LF_PATH}/status"),
        ]
    );
    assert!(
        requests[1]
            .uri
            .ends_with("?&force=true&fieldManager=knative-lambda")
    );
    assert_eq!(
        requests[1].json()["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.com/kl/acme/hello@sha256:aa"
    );
    let status = &requests[3];
    assert_eq!(status.content_type, "application/apply-patch+yaml");
    assert!(status.uri.ends_with("?&force=true&fieldManager=knative-lambda"));
    let body = status.json();
    assert_eq!(body["apiVersion"], "knative-lambda.io/v1alpha1");
    assert_eq!(body["kind"], "LambdaFunction");
    assert_eq!(body["status"]["observedGeneration"], 1);
    assert_eq!(body["status"]["conditions"][0]["type"], "Ready");
    assert_eq!(body["status"]["conditions"][0]["reason"], "Deploying");
}

#[tokio::test]
async fn a_source_starts_its_build_job_before_any_service() {
    let (client, requests) = fake::client(empty_cluster);
    let source = json!({"archive": "acme/hello/ctx.tar.gz"});
    let function = lf(source, &[FINALIZER], false);
    let job = kl_kube::plan::build_job_name(&function).unwrap();
    reconcile(Arc::new(function), context(client)).await.unwrap();

    let lines: Vec<String> = requests.await.unwrap().iter().map(Recorded::line).collect();
    let job_path = format!("/apis/batch/v1/namespaces/knative-lambda-builds/jobs/{job}");
    assert_eq!(
        lines,
        [
            format!("GET {job_path}"),
            format!("GET {KSVC_PATH}"),
            format!("PATCH {job_path}"),
            format!("PATCH {LF_PATH}/status"),
        ]
    );
}

#[tokio::test]
async fn an_inline_source_is_packed_and_carried_by_its_build_job() {
    let (client, requests) = fake::client(empty_cluster);
    let code = "def handler(event, context=None):\n    return event\n";
    let source = json!({"inline": {"filename": "main.py", "code": code}});
    reconcile(Arc::new(lf(source, &[FINALIZER], false)), context(client))
        .await
        .unwrap();
    let requests = requests.await.unwrap();
    let job = requests
        .iter()
        .find(|r| r.method == "PATCH" && r.path().contains("/jobs/"))
        .expect("the build Job is applied");
    let pod = &job.json()["spec"]["template"]["spec"];
    let args = pod["containers"][0]["args"].as_array().unwrap().clone();
    assert!(
        args.contains(&json!("--context=tar:///kl-context/context.tar.gz")),
        "{args:?}"
    );
    let packed = pod["initContainers"][0]["env"][0]["value"].as_str().unwrap();
    use base64::Engine;
    let packed = base64::engine::general_purpose::STANDARD.decode(packed).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&packed[..]));
    let mut files = std::collections::BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
        files.insert(entry.path().unwrap().display().to_string(), text);
    }
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        [".kl/kl_shim.py", "Dockerfile", "main.py"]
    );
    assert_eq!(files["main.py"], code);
    assert!(
        files["Dockerfile"].contains("FROM python:"),
        "{}",
        files["Dockerfile"]
    );
}

#[tokio::test]
async fn an_inline_source_that_cannot_be_packed_is_an_invalid_spec() {
    let (client, requests) = fake::client(empty_cluster);
    let source = json!({"inline": {"filename": "../main.py", "code": "x"}});
    reconcile(Arc::new(lf(source, &[FINALIZER], false)), context(client))
        .await
        .unwrap();
    let requests = requests.await.unwrap();
    assert!(
        !requests
            .iter()
            .any(|r| r.path().contains("/jobs/") && r.method == "PATCH")
    );
    let status = requests.last().unwrap().json();
    assert_eq!(status["status"]["conditions"][0]["reason"], "InvalidSpec");
    let message = status["status"]["conditions"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("source.inline") && message.contains("\"../main.py\""),
        "{message}"
    );
}

#[tokio::test]
async fn deletion_removes_the_functions_objects_then_the_finalizer() {
    let (client, requests) = fake::client(empty_cluster);
    reconcile(Arc::new(lf(image(), &[FINALIZER], true)), context(client))
        .await
        .unwrap();
    let requests = requests.await.unwrap();
    let lines: Vec<String> = requests.iter().map(Recorded::line).collect();
    assert_eq!(
        lines,
        [
            format!("DELETE {KSVC_PATH}"),
            "DELETE /apis/eventing.knative.dev/v1/namespaces/kl-acme/triggers".to_owned(),
            "DELETE /apis/sources.knative.dev/v1/namespaces/kl-acme/pingsources".to_owned(),
            format!("PATCH {LF_PATH}"),
        ]
    );
    assert_eq!(requests[3].content_type, "application/json-patch+json");
    assert!(requests[3].body.contains("\"remove\""), "{}", requests[3].body);
}

#[tokio::test]
async fn a_refused_apply_fails_the_pass_without_writing_a_status() {
    let (client, requests) = fake::client(|r| match r.method.as_str() {
        "GET" => status(404, "NotFound", "not found"),
        _ => status(403, "Forbidden", "services.serving.knative.dev is forbidden"),
    });
    let err = reconcile(Arc::new(lf(image(), &[FINALIZER], false)), context(client))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("apply Service kl-acme/hello: forbidden"),
        "{err}"
    );
    let lines: Vec<String> = requests.await.unwrap().iter().map(Recorded::line).collect();
    assert_eq!(lines, [format!("GET {KSVC_PATH}"), format!("PATCH {KSVC_PATH}")]);
}
