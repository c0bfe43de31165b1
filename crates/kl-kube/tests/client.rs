//! The client paths against a fake API transport: server-side apply (create, update, field
//! manager and force), the exact request paths and bodies, a build Job watched to success and
//! to failure with its log, a Knative Service's status, the watch until a revision is ready or
//! failed, deletion, and API errors as typed errors.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kl_core::{FunctionSettings, Runtime, SpecLimits, TenantSpec};
use kl_k8s::crd::TrafficEntry;
use kl_k8s::{
    BuildContext, BuildJobInput, BuildResources, Object, PlatformSettings, Registry, ServiceInput,
    render_build_job, render_knative_service, render_tenant,
};
use kl_kube::{Applier, BuildOutcome, BuildRun, KubeError, Readiness};
use serde_json::{Value, json};
use support::fake::{self, Recorded, ok, status};

const APPLY: &str = "?&force=true&fieldManager=knative-lambda";

fn service(revision: u32, image: &str) -> Object {
    let spec = FunctionSettings::default()
        .resolve(Runtime::Python, &SpecLimits::default())
        .unwrap();
    Object::KnativeService(
        render_knative_service(&ServiceInput {
            tenant: "acme",
            function: "hello",
            revision,
            spec: &spec,
            image,
            secrets: &[],
            pull_secret: None,
            traffic: &[],
        })
        .unwrap(),
    )
}

fn build_job() -> k8s_openapi::api::batch::v1::Job {
    render_build_job(
        &BuildJobInput {
            tenant: "acme",
            function: "hello",
            runtime: Runtime::Python,
            build_id: "abc123",
            context: BuildContext::Url("s3://kl-sources/acme/hello.tar.gz"),
            destination: "registry.example.com/kl/acme/hello:abc123",
            registry: &Registry {
                push_secret: "registry-push".into(),
                cache_repo: None,
                insecure: false,
            },
            credentials_secret: None,
            resources: BuildResources {
                cpu_millis: 1000,
                memory_bytes: 2 << 30,
            },
            deadline: Duration::from_secs(600),
            ttl_after_finished: Duration::from_secs(3600),
            executor_image: None,
        },
        &PlatformSettings::default(),
    )
    .unwrap()
}

/// Echoes an applied body back as the stored object, with a resourceVersion.
fn stored(r: &Recorded) -> (u16, String) {
    let mut object = r.json();
    object["metadata"]["resourceVersion"] = json!("7");
    object["metadata"]["generation"] = json!(1);
    ok(object)
}

#[tokio::test]
async fn apply_creates_with_our_field_manager_and_force_at_the_exact_path() {
    let (client, requests) = fake::client(stored);
    let object = service(1, "registry.example.com/kl/acme/hello:00001");
    let stored = Applier::new(client).apply(&object).await.unwrap();
    assert_eq!(stored.metadata.resource_version.as_deref(), Some("7"));

    let requests = requests.await.unwrap();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.method, "PATCH");
    assert_eq!(
        r.uri,
        format!("/apis/serving.knative.dev/v1/namespaces/kl-acme/services/hello{APPLY}")
    );
    assert_eq!(r.content_type, "application/apply-patch+yaml");
    assert_eq!(r.json(), serde_json::to_value(&object).unwrap());
    assert_eq!(r.json()["apiVersion"], "serving.knative.dev/v1");
    assert_eq!(r.json()["kind"], "Service");
}

#[tokio::test]
async fn an_update_is_the_same_apply_with_the_new_desired_state() {
    let (client, requests) = fake::client(stored);
    let applier = Applier::new(client);
    applier
        .apply(&service(1, "registry.example.com/kl/acme/hello:00001"))
        .await
        .unwrap();
    applier
        .apply(&service(2, "registry.example.com/kl/acme/hello:00002"))
        .await
        .unwrap();
    drop(applier);

    let requests = requests.await.unwrap();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].uri, requests[1].uri);
    let template = |r: &Recorded| r.json()["spec"]["template"].clone();
    assert_eq!(template(&requests[0])["metadata"]["name"], "hello-00001");
    assert_eq!(template(&requests[1])["metadata"]["name"], "hello-00002");
    assert_eq!(
        template(&requests[1])["spec"]["containers"][0]["image"],
        "registry.example.com/kl/acme/hello:00002"
    );
}

#[tokio::test]
async fn a_tenant_set_is_applied_namespace_first_each_kind_at_its_own_path() {
    let (client, requests) = fake::client(stored);
    let mut objects = render_tenant("acme", &TenantSpec::default(), &PlatformSettings::default()).unwrap();
    objects.reverse();
    Applier::new(client).apply_all(&objects).await.unwrap();

    let requests = requests.await.unwrap();
    assert_eq!(requests.len(), objects.len());
    assert!(
        requests
            .iter()
            .all(|r| r.method == "PATCH" && r.uri.ends_with(APPLY))
    );
    let paths: Vec<&str> = requests.iter().map(Recorded::path).collect();
    assert_eq!(paths[0], "/api/v1/namespaces/kl-acme");
    for expected in [
        "/api/v1/namespaces/kl-acme/resourcequotas/kl-quota",
        "/api/v1/namespaces/kl-acme/limitranges/kl-limits",
        "/apis/networking.k8s.io/v1/namespaces/kl-acme/networkpolicies/kl-default-deny",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/kl-acme/roles/kl-developer",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/kl-acme/rolebindings/kl-developer",
    ] {
        assert!(paths.contains(&expected), "{expected} not in {paths:#?}");
    }
    let position = |p: &str| paths.iter().position(|x| x.contains(p)).unwrap();
    assert!(position("/roles/") < position("/rolebindings/"));
}

#[tokio::test]
async fn api_refusals_become_typed_errors_naming_the_object() {
    let cases: [(u16, &str, &str); 4] = [
        (
            409,
            "Conflict",
            "Apply failed with 1 conflict: conflict with \"kubectl\"",
        ),
        (
            403,
            "Forbidden",
            "services.serving.knative.dev \"hello\" is forbidden",
        ),
        (
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
        (
            422,
            "Invalid",
            "spec.template.spec.containers[0].image: Required value",
        ),
    ];
    for (code, reason, message) in cases {
        let (client, requests) = fake::client(move |_| status(code, reason, message));
        let err = Applier::new(client)
            .apply(&service(1, "registry.example.com/kl/acme/hello:00001"))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(code));
        let text = err.to_string();
        assert!(text.starts_with("apply Service kl-acme/hello: "), "{text}");
        assert!(text.contains(message), "{text}");
        match (code, &err) {
            (409, KubeError::Conflict { .. })
            | (403, KubeError::Forbidden { .. })
            | (404, KubeError::NotFound { .. })
            | (422, KubeError::Refused { .. }) => {}
            _ => panic!("{code} became {err:?}"),
        }
        assert_eq!(requests.await.unwrap().len(), 1);
    }
}

const BUILD_POD: &str = "/api/v1/namespaces/knative-lambda-builds/pods/hello-build-abc123-x7k2p";

/// How the fake cluster runs a build.
#[derive(Clone, Copy)]
enum Run {
    /// Kaniko runs; the Job ends with `final_conditions` only after its log was followed, so a
    /// build that read the log only at the end would never see the Job end.
    Live,
    /// The pod never starts (its image cannot be pulled); the Job ends at once.
    NeverStarts,
}

/// Answers a build: the apply, the Job's list and watch (ending with `final_conditions`), the
/// pods' list and watch, and the Kaniko log.
fn build_api(run: Run, final_conditions: Value) -> impl FnMut(&Recorded) -> (u16, String) + Send + 'static {
    let mut followed = false;
    move |r: &Recorded| {
        let job = |conditions: Value, version: &str| {
            json!({
                "apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": "hello-build-abc123", "namespace": "knative-lambda-builds",
                             "resourceVersion": version},
                "status": {"conditions": conditions},
            })
        };
        let state = match (run, followed) {
            (Run::NeverStarts, _) => json!({"waiting": {"reason": "ImagePullBackOff"}}),
            (Run::Live, false) => json!({"running": {"startedAt": "2026-12-07T10:00:00Z"}}),
            (Run::Live, true) => json!({"terminated": {
                "exitCode": 0, "message": "sha256:4f2a\n",
                "startedAt": "2026-12-07T10:00:00Z", "finishedAt": "2026-12-07T10:01:30Z",
            }}),
        };
        let watching = r.uri.contains("watch=true");
        match (r.method.as_str(), r.path()) {
            ("PATCH", _) => stored(r),
            ("GET", "/apis/batch/v1/namespaces/knative-lambda-builds/jobs") if watching => {
                if matches!(run, Run::Live) && !followed {
                    return (200, String::new());
                }
                let event = json!({"type": "MODIFIED", "object": job(final_conditions.clone(), "11")});
                (200, format!("{event}\n"))
            }
            ("GET", "/apis/batch/v1/namespaces/knative-lambda-builds/jobs") => ok(json!({
                "apiVersion": "batch/v1", "kind": "JobList",
                "metadata": {"resourceVersion": "10"},
                "items": [job(json!([]), "10")],
            })),
            ("GET", "/api/v1/namespaces/knative-lambda-builds/pods") if watching => (200, String::new()),
            ("GET", "/api/v1/namespaces/knative-lambda-builds/pods") => ok(json!({
                "apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "12"},
                "items": [{
                    "metadata": {"name": "hello-build-abc123-x7k2p", "namespace": "knative-lambda-builds",
                                 "creationTimestamp": "2026-12-07T10:00:00Z"},
                    "status": {"containerStatuses": [{
                        "name": "kaniko", "image": "kaniko", "imageID": "", "ready": false,
                        "restartCount": 0, "state": state,
                    }]},
                }],
            })),
            ("GET", p) if p == format!("{BUILD_POD}/log") => {
                followed = true;
                (
                    200,
                    "INFO Retrieving image manifest\nINFO Pushing image\n".to_owned(),
                )
            }
            _ => status(404, "NotFound", &format!("unexpected {} {}", r.method, r.uri)),
        }
    }
}

/// Runs the build against `api` (bounded: a build that waits for the wrong thing would hang),
/// returning its outcome, its log lines and every request sent.
async fn run_build(
    api: impl FnMut(&Recorded) -> (u16, String) + Send + 'static,
) -> (Result<BuildRun, KubeError>, Vec<String>, Vec<Recorded>) {
    let (client, requests) = fake::client(api);
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        Applier::new(client).run_build(&build_job(), move |line| {
            sink.lock().unwrap().push(line.to_owned())
        }),
    )
    .await
    .expect("the build ends");
    let lines = log.lock().unwrap().clone();
    (outcome, lines, requests.await.unwrap())
}

#[tokio::test]
async fn a_build_is_applied_its_log_followed_while_it_runs_and_its_digest_read() {
    let (outcome, log, requests) = run_build(build_api(
        Run::Live,
        json!([
            {"type": "SuccessCriteriaMet", "status": "True"},
            {"type": "Complete", "status": "True"},
        ]),
    ))
    .await;
    assert_eq!(
        outcome.unwrap(),
        BuildRun {
            outcome: BuildOutcome::Succeeded {
                digest: Some("sha256:4f2a".into())
            },
            ran: Some(Duration::from_secs(90)),
        }
    );
    assert_eq!(log, ["INFO Retrieving image manifest", "INFO Pushing image"]);

    assert_eq!(
        requests[0].line(),
        "PATCH /apis/batch/v1/namespaces/knative-lambda-builds/jobs/hello-build-abc123"
    );
    assert_eq!(requests[0].json()["spec"]["backoffLimit"], 0);
    let job_list = requests
        .iter()
        .find(|r| r.path().ends_with("/jobs") && !r.uri.contains("watch=true"))
        .unwrap();
    assert!(
        job_list
            .uri
            .contains("fieldSelector=metadata.name%3Dhello-build-abc123"),
        "{}",
        job_list.uri
    );
    let pod_list = requests.iter().find(|r| r.path().ends_with("/pods")).unwrap();
    assert!(
        pod_list
            .uri
            .contains("labelSelector=batch.kubernetes.io%2Fjob-name%3Dhello-build-abc123"),
        "{}",
        pod_list.uri
    );
    let logs: Vec<&Recorded> = requests.iter().filter(|r| r.path().ends_with("/log")).collect();
    assert_eq!(logs.len(), 1, "the log is read once");
    assert!(
        logs[0].uri.contains("container=kaniko") && logs[0].uri.contains("follow=true"),
        "{}",
        logs[0].uri
    );
    let last_job_watch = requests
        .iter()
        .rposition(|r| r.path().ends_with("/jobs") && r.uri.contains("watch=true"))
        .unwrap();
    let log_read = requests.iter().position(|r| r.path().ends_with("/log")).unwrap();
    assert!(
        log_read < last_job_watch,
        "the log was followed before the Job ended"
    );
}

#[tokio::test]
async fn a_failed_build_reports_kubernetes_reason_and_still_gives_its_log() {
    let (outcome, log, requests) = run_build(build_api(
        Run::Live,
        json!([{
            "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
            "message": "Job has reached the specified backoff limit",
        }]),
    ))
    .await;
    assert_eq!(
        outcome.unwrap().outcome,
        BuildOutcome::Failed {
            reason: "BackoffLimitExceeded".into(),
            message: "Job has reached the specified backoff limit".into(),
        }
    );
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(requests.iter().filter(|r| r.path().ends_with("/log")).count(), 1);
}

#[tokio::test]
async fn a_build_whose_pod_never_started_ends_with_the_jobs_reason_and_reads_no_log() {
    let (outcome, log, requests) = run_build(build_api(
        Run::NeverStarts,
        json!([{
            "type": "Failed", "status": "True", "reason": "DeadlineExceeded",
            "message": "Job was active longer than specified deadline",
        }]),
    ))
    .await;
    assert_eq!(
        outcome.unwrap(),
        BuildRun {
            outcome: BuildOutcome::Failed {
                reason: "DeadlineExceeded".into(),
                message: "Job was active longer than specified deadline".into(),
            },
            ran: None,
        }
    );
    assert!(log.is_empty(), "{log:?}");
    assert!(
        !requests.iter().any(|r| r.path().ends_with("/log")),
        "a pod that never started has no log to read"
    );
}

#[tokio::test]
async fn a_forbidden_build_apply_stops_before_any_watch() {
    let (client, requests) = fake::client(|_| status(403, "Forbidden", "jobs.batch is forbidden"));
    let err = Applier::new(client)
        .run_build(&build_job(), |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, KubeError::Forbidden { .. }), "{err:?}");
    assert_eq!(requests.await.unwrap().len(), 1);
}

#[tokio::test]
async fn service_status_reads_ready_and_url_and_absent_is_none() {
    let (client, requests) = fake::client(|r| match r.path() {
        "/apis/serving.knative.dev/v1/namespaces/kl-acme/services/hello" => ok(json!({
            "apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": "hello", "namespace": "kl-acme", "generation": 3},
            "status": {"observedGeneration": 3, "url": "http://hello.kl-acme.svc.cluster.local",
                       "latestReadyRevisionName": "hello-00003",
                       "conditions": [{"type": "Ready", "status": "True"}]},
        })),
        _ => status(404, "NotFound", "services.serving.knative.dev \"gone\" not found"),
    });
    let applier = Applier::new(client);
    let status = applier
        .knative_service_status("kl-acme", "hello")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.readiness, Readiness::Ready);
    assert_eq!(
        status.url.as_deref(),
        Some("http://hello.kl-acme.svc.cluster.local")
    );
    assert_eq!(
        applier.knative_service_status("kl-acme", "gone").await.unwrap(),
        None
    );
    drop(applier);
    let lines: Vec<String> = requests.await.unwrap().iter().map(Recorded::line).collect();
    assert_eq!(
        lines,
        [
            "GET /apis/serving.knative.dev/v1/namespaces/kl-acme/services/hello",
            "GET /apis/serving.knative.dev/v1/namespaces/kl-acme/services/gone",
        ]
    );
}

#[tokio::test]
async fn removing_a_function_deletes_its_service_and_event_sources_even_if_already_gone() {
    let (client, requests) = fake::client(|r| match r.method.as_str() {
        "DELETE" if r.path().ends_with("/services/hello") => status(404, "NotFound", "not found"),
        "DELETE" => ok(json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": []})),
        _ => status(405, "MethodNotAllowed", "unexpected"),
    });
    let applier = Applier::new(client);
    applier.delete_function("acme", "hello").await.unwrap();
    drop(applier);
    let requests = requests.await.unwrap();
    let lines: Vec<String> = requests.iter().map(Recorded::line).collect();
    assert_eq!(
        lines,
        [
            "DELETE /apis/serving.knative.dev/v1/namespaces/kl-acme/services/hello",
            "DELETE /apis/eventing.knative.dev/v1/namespaces/kl-acme/triggers",
            "DELETE /apis/sources.knative.dev/v1/namespaces/kl-acme/pingsources",
        ]
    );
    for r in &requests[1..] {
        assert!(
            r.uri
                .contains("labelSelector=knative-lambda.io%2Ffunction%3Dhello"),
            "{}",
            r.uri
        );
    }
}

#[tokio::test]
async fn removing_a_tenant_deletes_its_namespace_and_a_forbidden_delete_is_reported() {
    let (client, requests) = fake::client(|r| {
        if r.path() == "/api/v1/namespaces/kl-acme" {
            ok(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kl-acme"},
                      "status": {"phase": "Terminating"}}),
            )
        } else {
            status(403, "Forbidden", "namespaces \"kl-beta\" is forbidden")
        }
    });
    let applier = Applier::new(client);
    applier.delete_tenant("acme").await.unwrap();
    let err = applier.delete_tenant("beta").await.unwrap_err();
    assert!(matches!(err, KubeError::Forbidden { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with("delete Namespace kl-beta: forbidden"),
        "{err}"
    );
    drop(applier);
    let lines: Vec<String> = requests.await.unwrap().iter().map(Recorded::line).collect();
    assert_eq!(
        lines,
        [
            "DELETE /api/v1/namespaces/kl-acme",
            "DELETE /api/v1/namespaces/kl-beta"
        ]
    );
}

/// A Knative Service `hello` as the API lists and watches it: generation 2, with `status`.
fn knative_service(version: &str, status: Value) -> Value {
    json!({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": "hello", "namespace": "kl-acme", "generation": 2, "resourceVersion": version},
        "status": status,
    })
}

/// Answers the Service's list with `listed` and its watch with one event carrying `watched`.
fn service_watch(listed: Value, watched: Value) -> impl FnMut(&Recorded) -> (u16, String) + Send + 'static {
    move |r: &Recorded| match r.path() {
        "/apis/serving.knative.dev/v1/namespaces/kl-acme/services" if r.uri.contains("watch=true") => {
            let event = json!({"type": "MODIFIED", "object": knative_service("31", watched.clone())});
            (200, format!("{event}\n"))
        }
        "/apis/serving.knative.dev/v1/namespaces/kl-acme/services" => ok(json!({
            "apiVersion": "serving.knative.dev/v1", "kind": "ServiceList",
            "metadata": {"resourceVersion": "30"},
            "items": [knative_service("30", listed.clone())],
        })),
        _ => status(404, "NotFound", &format!("unexpected {} {}", r.method, r.uri)),
    }
}

#[tokio::test]
async fn waiting_for_a_revision_watches_until_knative_routes_all_traffic_to_it() {
    // Ready for the current spec, but the route still sends everything to the old revision.
    let previous = json!({
        "observedGeneration": 2, "latestReadyRevisionName": "hello-00002",
        "traffic": [{"revisionName": "hello-00001", "percent": 100}],
        "conditions": [{"type": "Ready", "status": "True"}],
    });
    let current = json!({
        "observedGeneration": 2, "latestReadyRevisionName": "hello-00002",
        "url": "http://hello.kl-acme.svc.cluster.local",
        "traffic": [{"revisionName": "hello-00002", "percent": 100}],
        "conditions": [{"type": "Ready", "status": "True"}],
    });
    let (client, requests) = fake::client(service_watch(previous, current));
    let applier = Applier::new(client);
    let status = applier
        .wait_until_serving("kl-acme", "hello", "hello-00002")
        .await
        .unwrap();
    assert_eq!(status.readiness, Readiness::Ready);
    assert_eq!(
        status.url.as_deref(),
        Some("http://hello.kl-acme.svc.cluster.local")
    );
    drop(applier);
    let requests = requests.await.unwrap();
    assert_eq!(requests.len(), 2, "a list, then a watch");
    assert!(
        requests[0].uri.contains("fieldSelector=metadata.name%3Dhello"),
        "{}",
        requests[0].uri
    );
    assert!(requests[1].uri.contains("watch=true") && requests[1].uri.contains("resourceVersion=30"));
}

#[tokio::test]
async fn waiting_for_a_revision_ends_with_knatives_reason_when_it_fails() {
    let failed = json!({
        "observedGeneration": 2,
        "conditions": [{"type": "Ready", "status": "False", "reason": "RevisionMissing",
                        "message": "Configuration \"hello\" does not have any ready Revision."}],
    });
    let (client, _requests) = fake::client(service_watch(failed.clone(), failed));
    let status = Applier::new(client)
        .wait_until_serving("kl-acme", "hello", "hello-00002")
        .await
        .unwrap();
    assert_eq!(
        status.readiness,
        Readiness::NotReady {
            reason: "RevisionMissing".into(),
            message: "Configuration \"hello\" does not have any ready Revision.".into(),
        }
    );
}

#[tokio::test]
async fn an_existing_revision_serves_again_by_a_merge_patch_of_the_traffic_alone() {
    let (client, requests) = fake::client(|r| match (r.method.as_str(), r.path()) {
        ("GET", "/apis/serving.knative.dev/v1/namespaces/kl-acme/revisions/hello-00001") => ok(json!({
            "apiVersion": "serving.knative.dev/v1", "kind": "Revision",
            "metadata": {"name": "hello-00001", "namespace": "kl-acme"},
        })),
        ("GET", _) => status(
            404,
            "NotFound",
            "revisions.serving.knative.dev \"hello-00007\" not found",
        ),
        ("PATCH", _) => ok(knative_service("40", json!({}))),
        _ => status(405, "MethodNotAllowed", "unexpected"),
    });
    let applier = Applier::new(client);
    assert!(
        applier
            .knative_revision_exists("kl-acme", "hello-00001")
            .await
            .unwrap()
    );
    assert!(
        !applier
            .knative_revision_exists("kl-acme", "hello-00007")
            .await
            .unwrap()
    );
    let pin = TrafficEntry {
        revision_name: "hello-00001".into(),
        latest_revision: false,
        percent: 100,
        tag: None,
    };
    applier.set_traffic("kl-acme", "hello", &[pin]).await.unwrap();
    drop(applier);
    let requests = requests.await.unwrap();
    let patch = &requests[2];
    assert_eq!(
        patch.line(),
        "PATCH /apis/serving.knative.dev/v1/namespaces/kl-acme/services/hello"
    );
    assert_eq!(patch.content_type, "application/merge-patch+json");
    assert!(patch.uri.contains("fieldManager=knative-lambda"), "{}", patch.uri);
    assert_eq!(
        patch.json(),
        json!({"spec": {"traffic": [{"revisionName": "hello-00001", "latestRevision": false, "percent": 100}]}})
    );
}
