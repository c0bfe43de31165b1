//! `--backend kubernetes` end to end, with a real server, a real S3 server on loopback and a
//! real function endpoint; only the Kubernetes API is faked (kube's `tower-test` transport),
//! since no cluster runs here. Checked: the tenant set, the Kaniko Job and the Knative Service
//! sent exactly as `kl-k8s` renders them (server-side apply, field manager `knative-lambda`),
//! the build context in S3 where the Job reads it, the Job's log in the build log, the revision
//! ready with the pushed digest, invocations proxied to the Service's URL, and a failed build
//! or a forbidden apply reported as a failed revision.

#[path = "../../kl-kube/tests/support/fake.rs"]
mod fake;

use kl_testkit::archives::{Entry, make_tar_gz};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fake::{Answer, Recorded, ok, status};
use kl_api::{RevisionState, RevisionView};
use kl_core::{FunctionSettings, Runtime, SpecLimits, TenantSpec};
use kl_events::{TenantEvent, types};
use kl_k8s::{BuildContext, BuildJobInput, BuildResources, Object, PlatformSettings, Registry, ServiceInput};
use kl_server::objects::{self, keys};
use kl_server::{Backend, Connections, KubernetesConfig, Objects, Server, ServerConfig, ServerError};
use kl_testkit::s3::{ACCESS_KEY, REGION, S3Server, SECRET_KEY};
use object_store::ObjectStoreExt;
use object_store::aws::AmazonS3Builder;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const BUCKET: &str = "kl-objects";
const PREFIX: &str = "platform";
const REGISTRY: &str = "registry.example.com/kl";
const APPLY: &str = "?&force=true&fieldManager=knative-lambda";
const BUILDS: &str = "knative-lambda-builds";
const DIGEST: &str = "sha256:4f2a9c";
const KANIKO_LOG: &str = "INFO Retrieving image manifest python:3.12-slim\nINFO Pushing image to registry.example.com/kl/acme/hello:00001\n";

fn python_source() -> Vec<u8> {
    let body = "def handler(event, context=None):\n    return {'hello': event}\n";
    make_tar_gz(&[Entry::file("main.py", body)])
}

/// How the fake cluster answers builds and rollouts. Knative is modelled as far as the
/// platform reads it: each namespace's Service `hello` remembers the revisions its templates
/// created and where its traffic goes, and reports itself ready once that revision is ready.
#[derive(Clone)]
struct Cluster {
    /// The build Job's conditions once it ends.
    job_conditions: Value,
    /// Whether applying a Knative Service is forbidden (RBAC).
    services_forbidden: bool,
    /// What Knative reports as the Service's address.
    url: String,
    /// A revision Knative cannot make ready (its pods crash): namespace and name.
    broken: Option<(String, String)>,
    /// Per namespace: the Service's generation, revisions created, and the revision that
    /// takes all traffic.
    knative: BTreeMap<String, Knative>,
    /// Where each tenant's Broker takes events (`status.address.url`).
    broker_url: String,
}

#[derive(Clone, Default)]
struct Knative {
    generation: i64,
    revisions: BTreeSet<String>,
    traffic: String,
}

impl Cluster {
    fn succeeding(url: &str) -> Cluster {
        Cluster {
            job_conditions: json!([{"type": "Complete", "status": "True"}]),
            services_forbidden: false,
            url: url.to_owned(),
            broken: None,
            knative: BTreeMap::new(),
            broker_url: "http://unused.invalid".to_owned(),
        }
    }

    /// The Service `hello` in `namespace` as Knative reports it.
    fn service(&self, namespace: &str) -> Value {
        let knative = self.knative.get(namespace).cloned().unwrap_or_default();
        let broken = self
            .broken
            .as_ref()
            .is_some_and(|(ns, revision)| ns == namespace && *revision == knative.traffic);
        let ready = if broken {
            json!({"type": "Ready", "status": "False", "reason": "RevisionFailed",
                   "message": format!("Revision \"{}\" failed with message: container exited.", knative.traffic)})
        } else {
            json!({"type": "Ready", "status": "True"})
        };
        json!({
            "apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": "hello", "namespace": namespace, "generation": knative.generation,
                         "resourceVersion": format!("{}", 20 + knative.generation)},
            "status": {"observedGeneration": knative.generation, "url": self.url,
                       "traffic": [{"revisionName": knative.traffic, "percent": 100}],
                       "conditions": [ready]},
        })
    }

    fn answer(&mut self, r: &Recorded) -> Answer {
        let job = |conditions: Value, version: &str| {
            json!({
                "apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": "build", "namespace": BUILDS, "resourceVersion": version},
                "status": {"conditions": conditions},
            })
        };
        let jobs = format!("/apis/batch/v1/namespaces/{BUILDS}/jobs");
        let pods = format!("/api/v1/namespaces/{BUILDS}/pods");
        let serving = r.path().strip_prefix("/apis/serving.knative.dev/v1/namespaces/");
        let (namespace, resource) = serving.and_then(|rest| rest.split_once('/')).unwrap_or_default();
        let watching = r.uri.contains("watch=true");
        match (r.method.as_str(), r.path()) {
            ("PATCH", _) if self.services_forbidden && resource.starts_with("services") => status(
                403,
                "Forbidden",
                "services.serving.knative.dev \"hello\" is forbidden: User \"system:serviceaccount:knative-lambda:kl\" cannot patch resource",
            ),
            ("PATCH", _) if resource == "services/hello" => {
                let body = r.json();
                let knative = self.knative.entry(namespace.to_owned()).or_default();
                if let Some(template) = body["spec"]["template"]["metadata"]["name"].as_str() {
                    knative.revisions.insert(template.to_owned());
                }
                knative.traffic = body["spec"]["traffic"][0]["revisionName"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                knative.generation += 1;
                ok(self.service(namespace))
            }
            ("PATCH", _) => {
                let mut object = r.json();
                object["metadata"]["resourceVersion"] = json!("7");
                ok(object)
            }
            ("DELETE", _) => {
                ok(json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Success"}))
            }
            ("GET", p) if p == jobs && watching => {
                let event = json!({"type": "MODIFIED", "object": job(self.job_conditions.clone(), "11")});
                (200, format!("{event}\n"))
            }
            ("GET", p) if p == jobs => ok(json!({
                "apiVersion": "batch/v1", "kind": "JobList", "metadata": {"resourceVersion": "10"},
                "items": [job(json!([]), "10")],
            })),
            ("GET", p) if p == pods => ok(json!({
                "apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "12"},
                "items": [{
                    "metadata": {"name": "build-x7k2p", "namespace": BUILDS},
                    "status": {"containerStatuses": [{
                        "name": "kaniko", "image": "kaniko", "imageID": "", "ready": false, "restartCount": 0,
                        "state": {"terminated": {
                            "exitCode": 0, "message": format!("{DIGEST}\n"),
                            "startedAt": "2026-12-07T10:00:00Z", "finishedAt": "2026-12-07T10:02:00Z",
                        }},
                    }]},
                }],
            })),
            ("GET", p) if p == format!("{pods}/build-x7k2p/log") => (200, KANIKO_LOG.to_owned()),
            ("GET", "/apis/eventing.knative.dev/v1/namespaces/kl-acme/brokers/default") => ok(json!({
                "apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
                "metadata": {"name": "default", "namespace": "kl-acme"},
                "status": {"address": {"url": self.broker_url}},
            })),
            ("GET", _) if resource.starts_with("revisions/") => {
                let name = &resource["revisions/".len()..];
                let known = self
                    .knative
                    .get(namespace)
                    .is_some_and(|k| k.revisions.contains(name));
                if known {
                    ok(json!({"apiVersion": "serving.knative.dev/v1", "kind": "Revision",
                              "metadata": {"name": name, "namespace": namespace}}))
                } else {
                    status(
                        404,
                        "NotFound",
                        &format!("revisions.serving.knative.dev \"{name}\" not found"),
                    )
                }
            }
            ("GET", _) if resource == "services" && watching => (
                200,
                format!(
                    "{}\n",
                    json!({"type": "MODIFIED", "object": self.service(namespace)})
                ),
            ),
            ("GET", _) if resource == "services" => ok(json!({
                "apiVersion": "serving.knative.dev/v1", "kind": "ServiceList",
                "metadata": {"resourceVersion": "21"}, "items": [self.service(namespace)],
            })),
            _ => status(404, "NotFound", &format!("unexpected {} {}", r.method, r.uri)),
        }
    }
}

/// A kube client whose requests `cluster` answers, and every request it sent so far.
fn fake_cluster(mut cluster: Cluster) -> (kube::Client, Arc<Mutex<Vec<Recorded>>>) {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let log = sent.clone();
    let (client, _task) = fake::client(move |r| {
        log.lock().unwrap().push(r.clone());
        cluster.answer(r)
    });
    (client, sent)
}

/// The function's Knative Service as an HTTP server on loopback: answers every request with
/// what it received.
async fn knative_endpoint() -> String {
    let app = axum::Router::new().fallback(
        |method: http::Method, uri: http::Uri, headers: http::HeaderMap, body: String| async move {
            axum::Json(json!({
                "method": method.as_str(),
                "uri": uri.to_string(),
                "authorization": headers.get("authorization").is_some(),
                "requestId": headers.get("x-request-id").is_some(),
                "body": body,
            }))
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A server on the Kubernetes backend, serving in the background.
struct Running {
    url: String,
    token: String,
    http: reqwest::Client,
    events: tokio::sync::broadcast::Receiver<Arc<TenantEvent>>,
    store: Arc<dyn object_store::ObjectStore>,
    _s3: S3Server,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn start(kube: kube::Client) -> Running {
        Running::start_with(kube, None).await
    }

    /// A server whose events Knative Eventing delivers, when `rabbitmq_config` names the
    /// Brokers' `RabbitmqBrokerConfig`.
    async fn start_with(kube: kube::Client, rabbitmq_config: Option<&str>) -> Running {
        let s3 = S3Server::start();
        s3.create_bucket(BUCKET);
        let builder = AmazonS3Builder::new()
            .with_endpoint(s3.endpoint())
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .with_region(REGION)
            .with_allow_http(true);
        let store = objects::open_s3(builder, BUCKET, PREFIX).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::new(dir.path().join("data"), "127.0.0.1:0".parse().unwrap());
        config.metering.interval = Duration::from_millis(200);
        config.objects = Objects::S3 {
            bucket: BUCKET.to_owned(),
            prefix: PREFIX.to_owned(),
        };
        let mut kubernetes = KubernetesConfig::new(REGISTRY.to_owned());
        kubernetes.knative_eventing = rabbitmq_config.map(str::to_owned);
        config.backend = Backend::Kubernetes(Box::new(kubernetes));
        let connections = Connections {
            objects: Some(store.clone()),
            kube: Some(kube),
        };
        let server = Server::bind_with(config, connections).await.unwrap();
        let url = format!("http://{}", server.local_addr());
        let events = server.subscribe_events();
        tokio::spawn(server.serve(std::future::pending()));
        let token = std::fs::read_to_string(dir.path().join("data/admin.token")).unwrap();
        Running {
            url,
            token: token.trim().to_owned(),
            http: reqwest::Client::new(),
            events,
            store,
            _s3: s3,
            _dir: dir,
        }
    }

    fn request(&self, method: http::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token)
    }

    async fn create_tenant(&self, name: &str) {
        let created = self
            .request(http::Method::POST, "/v1/tenants")
            .json(&json!({"name": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    }

    /// Deploys `hello` to `acme` and waits until its build ends, ready or failed.
    async fn deploy_and_wait(&mut self) -> RevisionView {
        self.deploy_to("acme", 1, python_source()).await
    }

    /// Deploys `source` as `hello` to `tenant`, where it becomes revision `number`, and waits
    /// until its build ends, ready or failed.
    async fn deploy_to(&mut self, tenant: &str, number: i64, source: Vec<u8>) -> RevisionView {
        let functions = format!("/v1/tenants/{tenant}/functions/hello");
        let accepted = self
            .request(http::Method::PUT, &format!("{functions}/source"))
            .body(source)
            .send()
            .await
            .unwrap();
        assert_eq!(accepted.status(), 202, "{}", accepted.text().await.unwrap());
        tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let published = self.events.recv().await.expect("feed open");
                if [types::FUNCTION_READY, types::BUILD_FAILED].contains(&published.event.ty.as_str()) {
                    return;
                }
            }
        })
        .await
        .expect("the build ends within 60s");
        self.revision(tenant, number).await
    }

    async fn revision(&self, tenant: &str, number: i64) -> RevisionView {
        self.request(
            http::Method::GET,
            &format!("/v1/tenants/{tenant}/functions/hello/revisions/{number}"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
    }

    /// POSTs `body` to `path`; the status and the answer's JSON.
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let answer = self
            .request(http::Method::POST, path)
            .json(&body)
            .send()
            .await
            .unwrap();
        (answer.status().as_u16(), answer.json().await.unwrap())
    }

    async fn build_log(&self) -> String {
        self.request(
            http::Method::GET,
            "/v1/tenants/acme/functions/hello/revisions/1/log",
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
    }
}

fn build_id() -> String {
    let digest = hex::encode(Sha256::digest(python_source()));
    format!("1-{}", &digest[..6])
}

/// The Job `kl-k8s` renders for this build: what the server must send, field for field.
fn expected_job() -> Value {
    let id = build_id();
    let context = format!("s3://{BUCKET}/{PREFIX}/{}", keys::context("acme", "hello", 1));
    let job = kl_k8s::render_build_job(
        &BuildJobInput {
            tenant: "acme",
            function: "hello",
            runtime: Runtime::Python,
            build_id: &id,
            context: BuildContext::Url(&context),
            destination: &format!("{REGISTRY}/acme/hello:00001"),
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
    .unwrap();
    serde_json::to_value(Object::Job(Box::new(job))).unwrap()
}

/// The Knative Service `kl-k8s` renders for revision 1 with the pushed image by digest, the
/// spec resolved within a default tenant's limits.
fn expected_service() -> Value {
    let limits = TenantSpec::default().spec_limits(&SpecLimits::default()).unwrap();
    let spec = FunctionSettings::default()
        .resolve(Runtime::Python, &limits)
        .unwrap();
    let image = format!("{REGISTRY}/acme/hello@{DIGEST}");
    let service = kl_k8s::render_knative_service(&ServiceInput {
        tenant: "acme",
        function: "hello",
        revision: 1,
        spec: &spec,
        image: &image,
        secrets: &[],
        pull_secret: None,
        traffic: &[],
    })
    .unwrap();
    serde_json::to_value(Object::KnativeService(service)).unwrap()
}

fn lines(sent: &Mutex<Vec<Recorded>>) -> Vec<String> {
    sent.lock().unwrap().iter().map(Recorded::line).collect()
}

fn sent_to(sent: &Mutex<Vec<Recorded>>, method: &str, path: &str) -> Recorded {
    sent.lock()
        .unwrap()
        .iter()
        .find(|r| r.method == method && r.path() == path)
        .cloned()
        .unwrap_or_else(|| panic!("no {method} {path} in {:#?}", lines(sent)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_builds_with_kaniko_serves_on_knative_and_invocations_reach_it() {
    let endpoint = knative_endpoint().await;
    let (kube, sent) = fake_cluster(Cluster::succeeding(&endpoint));
    let mut server = Running::start(kube).await;

    // At start: the cluster-wide objects, then the default tenant's namespace set.
    let started = lines(&sent);
    assert!(started.contains(&"PATCH /apis/scheduling.k8s.io/v1/priorityclasses/kl-high".to_owned()));
    assert!(started.contains(&format!("PATCH /api/v1/namespaces/{BUILDS}")));
    assert!(started.contains(&"PATCH /api/v1/namespaces/kl-default".to_owned()));

    server.create_tenant("acme").await;
    let namespace = sent_to(&sent, "PATCH", "/api/v1/namespaces/kl-acme");
    assert!(namespace.uri.ends_with(APPLY), "{}", namespace.uri);
    assert_eq!(namespace.content_type, "application/apply-patch+yaml");
    let quota = sent_to(
        &sent,
        "PATCH",
        "/api/v1/namespaces/kl-acme/resourcequotas/kl-quota",
    );
    let tenant_set =
        kl_k8s::render_tenant("acme", &TenantSpec::default(), &PlatformSettings::default()).unwrap();
    let rendered_quota = tenant_set.iter().find(|o| o.kind() == "ResourceQuota").unwrap();
    assert_eq!(quota.json(), serde_json::to_value(rendered_quota).unwrap());

    let revision = server.deploy_and_wait().await;
    assert_eq!(
        revision.state,
        RevisionState::Ready,
        "{:?}\n{}",
        revision.error,
        server.build_log().await
    );
    assert!(revision.serving);
    assert_eq!(revision.digest.as_deref(), Some(DIGEST));

    // The Job, exactly as rendered, reading the context the server put in S3.
    let job_path = format!(
        "/apis/batch/v1/namespaces/{BUILDS}/jobs/hello-build-{}",
        build_id()
    );
    let job = sent_to(&sent, "PATCH", &job_path);
    assert!(job.uri.ends_with(APPLY), "{}", job.uri);
    assert_eq!(job.json(), expected_job());
    let args = job.json()["spec"]["template"]["spec"]["containers"][0]["args"].clone();
    assert!(
        args.as_array().unwrap().contains(&json!(format!(
            "--context=s3://{BUCKET}/{PREFIX}/contexts/acme/hello/1.tar.gz"
        ))),
        "{args}"
    );
    let context = server
        .store
        .get(&keys::context("acme", "hello", 1).as_str().into())
        .await
        .expect("the context is in S3")
        .bytes()
        .await
        .unwrap();
    let mut names = Vec::new();
    let mut dockerfile = String::new();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&context[..]));
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        if name == "Dockerfile" {
            entry.read_to_string(&mut dockerfile).unwrap();
        }
        names.push(name);
    }
    names.sort();
    assert_eq!(names, [".kl/kl_shim.py", "Dockerfile", "main.py"]);
    assert!(dockerfile.contains("FROM python:3.12-slim"), "{dockerfile}");

    // The Service, exactly as rendered, with the image by digest.
    let service = sent_to(
        &sent,
        "PATCH",
        "/apis/serving.knative.dev/v1/namespaces/kl-acme/services/hello",
    );
    assert!(service.uri.ends_with(APPLY), "{}", service.uri);
    assert_eq!(service.json(), expected_service());
    let order = lines(&sent);
    let position = |line: &str| order.iter().position(|l| l == line).unwrap();
    assert!(
        position(&format!("PATCH {job_path}"))
            < position("PATCH /apis/serving.knative.dev/v1/namespaces/kl-acme/services/hello"),
        "the Service is applied only after the build: {order:#?}"
    );

    // The Dockerfile Kaniko built from, read back from the context.
    let shown = server
        .request(
            http::Method::GET,
            "/v1/tenants/acme/functions/hello/revisions/1/dockerfile",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(shown.status(), 200);
    assert_eq!(shown.text().await.unwrap(), dockerfile);

    let log = server.build_log().await;
    for line in KANIKO_LOG.lines() {
        assert!(log.contains(line), "the Kaniko log is in the build log:\n{log}");
    }

    // Invocations go to the Service's URL, path and query kept, the platform token not passed on.
    let answer = server
        .request(http::Method::POST, "/fn/acme/hello/greet?lang=en")
        .json(&json!({"name": "kube"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(answer.headers().contains_key("x-kl-request-id"));
    let seen: Value = answer.json().await.unwrap();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["uri"], "/greet?lang=en");
    assert_eq!(seen["authorization"], false);
    assert_eq!(seen["requestId"], true);
    assert_eq!(seen["body"], r#"{"name":"kube"}"#);

    // Metered: the build for the CPU it was given (1 core) while Kaniko ran (2 minutes), the
    // proxied invocation as the gateway meters its own.
    let metered = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let report: Value = server
                .request(http::Method::GET, "/v1/tenants/acme/cost?aggregate=function")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let hello = report["rows"]
                .as_array()
                .and_then(|rows| rows.iter().find(|r| r["function"] == "hello"))
                .map(|r| r["quantities"].clone());
            if let Some(q) = hello.filter(|q| q["requests"].as_u64() >= Some(1)) {
                return q;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the build and the invocation are metered within 30 s");
    let build_minutes = metered["buildMinutes"].as_f64().unwrap();
    assert!((build_minutes - 2.0).abs() < 1e-6, "{metered}");
    assert_eq!(metered["requests"], 1, "{metered}");
    assert!(metered["gbSeconds"].as_f64().unwrap() > 0.0, "{metered}");

    // Deleting the function removes its Service (its triggers stay), then stops routing.
    let deleted = server
        .request(http::Method::DELETE, "/v1/tenants/acme/functions/hello")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let deletes = lines(&sent);
    assert!(
        deletes.contains(&"DELETE /apis/serving.knative.dev/v1/namespaces/kl-acme/services/hello".to_owned())
    );
    assert!(
        !deletes
            .iter()
            .any(|l| l.contains("/triggers") || l.contains("/pingsources")),
        "the function's triggers stay: {deletes:#?}"
    );
    let gone = server
        .request(http::Method::POST, "/fn/acme/hello")
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_kaniko_build_fails_the_revision_with_kubernetes_reason_and_its_log() {
    let mut cluster = Cluster::succeeding("http://unused.invalid");
    cluster.job_conditions = json!([{
        "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
        "message": "Job has reached the specified backoff limit",
    }]);
    let (kube, sent) = fake_cluster(cluster);
    let mut server = Running::start(kube).await;
    server.create_tenant("acme").await;

    let revision = server.deploy_and_wait().await;
    assert_eq!(revision.state, RevisionState::Failed);
    let error = revision.error.unwrap_or_default();
    assert!(
        error.contains(
            "the Kaniko build Job failed (BackoffLimitExceeded): Job has reached the specified backoff limit"
        ),
        "{error}"
    );
    assert!(server.build_log().await.contains("INFO Pushing image"));
    assert!(
        !lines(&sent).iter().any(|l| l.contains("serving.knative.dev")),
        "no Service for a failed build: {:#?}",
        lines(&sent)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_service_apply_fails_the_revision_naming_the_object_and_rbac() {
    let mut cluster = Cluster::succeeding("http://unused.invalid");
    cluster.services_forbidden = true;
    let (kube, _sent) = fake_cluster(cluster);
    let mut server = Running::start(kube).await;
    server.create_tenant("acme").await;

    let revision = server.deploy_and_wait().await;
    assert_eq!(revision.state, RevisionState::Failed);
    assert!(!revision.serving);
    let error = revision.error.unwrap_or_default();
    assert!(
        error.contains("apply Service kl-acme/hello: forbidden") && error.contains("(RBAC)"),
        "{error}"
    );
    let invoked = server
        .request(http::Method::POST, "/fn/acme/hello")
        .send()
        .await
        .unwrap();
    assert_eq!(invoked.status(), 404, "nothing is routed");
}

#[tokio::test]
async fn the_kubernetes_backend_refuses_to_start_without_an_s3_store() {
    let (kube, sent) = fake_cluster(Cluster::succeeding("http://unused.invalid"));
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(dir.path().join("data"), "127.0.0.1:0".parse().unwrap());
    config.backend = Backend::Kubernetes(Box::new(KubernetesConfig::new(REGISTRY.to_owned())));
    let refused = Server::bind_with(
        config,
        Connections {
            objects: None,
            kube: Some(kube),
        },
    )
    .await;
    let Err(error) = refused else {
        panic!("a local object store is refused");
    };
    assert!(matches!(error, ServerError::KubernetesNeedsS3), "{error}");
    assert!(error.to_string().contains("--store s3://"), "{error}");
    assert!(lines(&sent).is_empty(), "nothing was sent to the cluster");
}

/// The Service `hello`'s requests in `namespace`: (content type, body) of each PATCH.
fn service_patches(sent: &Mutex<Vec<Recorded>>, namespace: &str) -> Vec<(String, Value)> {
    let path = format!("/apis/serving.knative.dev/v1/namespaces/{namespace}/services/hello");
    sent.lock()
        .unwrap()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path() == path)
        .map(|r| (r.content_type.clone(), r.json()))
        .collect()
}

const MERGE: &str = "application/merge-patch+json";

fn pinned_to(revision: &str) -> Value {
    json!({"spec": {"traffic": [{"revisionName": revision, "latestRevision": false, "percent": 100}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_and_promotion_move_knative_traffic_and_a_failed_rollout_moves_it_back() {
    let endpoint = knative_endpoint().await;
    let mut cluster = Cluster::succeeding(&endpoint);
    cluster.broken = Some(("kl-acme-prod".to_owned(), "hello-00002".to_owned()));
    let (kube, sent) = fake_cluster(cluster);
    let mut server = Running::start(kube).await;
    server.create_tenant("acme").await;
    for env in ["dev", "prod"] {
        let (code, created) = server
            .post("/v1/tenants/acme/environments", json!({"name": env, "share": 40}))
            .await;
        assert_eq!(code, 201, "{created}");
        sent_to(&sent, "PATCH", &format!("/api/v1/namespaces/kl-acme-{env}"));
    }

    let second = make_tar_gz(&[Entry::file(
        "main.py",
        "def handler(event, context=None):\n    return {'v': 2}\n",
    )]);
    assert_eq!(
        server.deploy_to("acme-dev", 1, python_source()).await.state,
        RevisionState::Ready
    );
    let v2 = server.deploy_to("acme-dev", 2, second).await;
    assert!(v2.serving, "{v2:?}");
    assert_eq!(v2.digest.as_deref(), Some(DIGEST));
    assert_eq!(
        v2.image.as_deref(),
        Some(format!("{REGISTRY}/acme-dev/hello@{DIGEST}").as_str())
    );
    let applies = service_patches(&sent, "kl-acme-dev").len();
    assert_eq!(applies, 2, "one apply per build");

    // Rollback: Knative still has revision 1, so only the traffic moves (a merge patch).
    let (code, changed) = server
        .post("/v1/tenants/acme-dev/functions/hello/rollback", json!({}))
        .await;
    assert_eq!(code, 200, "{changed}");
    assert_eq!(changed["serving"], "hello-00001");
    assert_eq!(changed["previous"], "hello-00002");
    let patches = service_patches(&sent, "kl-acme-dev");
    assert_eq!(patches.len(), applies + 1);
    assert_eq!(patches[applies], (MERGE.to_owned(), pinned_to("hello-00001")));
    assert!(server.revision("acme-dev", 1).await.serving);
    let invoked = server
        .request(http::Method::POST, "/fn/acme-dev/hello")
        .send()
        .await
        .unwrap();
    assert_eq!(invoked.status(), 200, "still routed after the rollback");

    // Promotion: prod has no revision yet, so its Service is applied with dev's image.
    let (code, promoted) = server
        .post(
            "/v1/tenants/acme/functions/hello/promote",
            json!({"from": "dev", "to": "prod"}),
        )
        .await;
    assert_eq!(code, 200, "{promoted}");
    assert_eq!(promoted["fromRevision"], "hello-00001");
    assert_eq!(promoted["revision"], "hello-00001");
    assert_eq!(promoted["digest"], DIGEST);
    let prod = service_patches(&sent, "kl-acme-prod");
    assert_eq!(prod.len(), 1);
    assert_eq!(prod[0].0, "application/apply-patch+yaml");
    assert_eq!(
        prod[0].1["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("{REGISTRY}/acme-dev/hello@{DIGEST}"),
        "the promoted revision runs the image built in dev"
    );

    // Dev back on revision 2, promoted again: Knative cannot make prod's copy ready, so the
    // promotion fails, prod's traffic goes back to its revision 1, and that one still serves.
    let (code, changed) = server
        .post(
            "/v1/tenants/acme-dev/functions/hello/rollback",
            json!({"revision": 2}),
        )
        .await;
    assert_eq!(code, 200, "{changed}");
    let (code, refused) = server
        .post(
            "/v1/tenants/acme/functions/hello/promote",
            json!({"from": "dev", "to": "prod"}),
        )
        .await;
    assert_eq!(code, 502, "{refused}");
    assert_eq!(refused["error"]["code"], "ClusterRefused", "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("RevisionFailed") && message.ends_with("hello-00001 keeps serving"),
        "{message}"
    );
    let prod = service_patches(&sent, "kl-acme-prod");
    assert_eq!(prod.len(), 3, "apply revision 2, then move the traffic back");
    assert_eq!(prod[2], (MERGE.to_owned(), pinned_to("hello-00001")));
    assert!(server.revision("acme-prod", 1).await.serving);
    assert!(!server.revision("acme-prod", 2).await.serving);

    // An environment's namespace goes before it, and not while it has functions.
    let delete = |env: &str| {
        server
            .request(
                http::Method::DELETE,
                &format!("/v1/tenants/acme/environments/{env}"),
            )
            .send()
    };
    let busy = delete("prod").await.unwrap();
    assert_eq!(busy.status(), 409);
    let refused: Value = busy.json().await.unwrap();
    assert_eq!(
        refused["error"]["message"],
        "environment \"prod\" still has 1 function(s); delete them first"
    );
    let (code, created) = server
        .post(
            "/v1/tenants/acme/environments",
            json!({"name": "qa", "share": 10}),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(delete("qa").await.unwrap().status(), 204);
    sent_to(&sent, "DELETE", "/api/v1/namespaces/kl-acme-qa");
    assert!(
        !lines(&sent).contains(&"DELETE /api/v1/namespaces/kl-acme-prod".to_owned()),
        "a busy environment keeps its namespace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_change_rolls_its_functions_onto_a_new_knative_revision_with_the_new_value() {
    let endpoint = knative_endpoint().await;
    let (kube, sent) = fake_cluster(Cluster::succeeding(&endpoint));
    let mut server = Running::start(kube).await;
    server.create_tenant("acme").await;
    let put_secret = |server: &Running, value: &str| {
        server
            .request(http::Method::PUT, "/v1/tenants/acme/secrets/db")
            .json(&json!({"data": {"PASSWORD": value}}))
            .send()
    };
    assert_eq!(put_secret(&server, "one").await.unwrap().status(), 200);
    let source = make_tar_gz(&[
        Entry::file(
            "main.py",
            "import os\ndef handler(event, context=None):\n    return len(os.environ['DB_PASSWORD'])\n",
        ),
        Entry::file("kl.yaml", "secretEnv:\n  DB_PASSWORD: db.PASSWORD\n"),
    ]);
    let v1 = server.deploy_to("acme", 1, source).await;
    assert!(v1.serving, "{v1:?}");

    let answer = put_secret(&server, "two").await.unwrap();
    assert_eq!(answer.status(), 200);
    let set: Value = answer.json().await.unwrap();
    assert_eq!(set["rolled"], json!(["hello-00002"]), "{set}");
    let v2 = server.revision("acme", 2).await;
    assert!(v2.serving);
    assert_eq!(v2.image, v1.image, "the same image, restarted");

    let secrets: Vec<Value> = sent
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path() == "/api/v1/namespaces/kl-acme/secrets/kl-secret-db")
        .map(Recorded::json)
        .collect();
    let values: Vec<&Value> = secrets.iter().map(|s| &s["data"]["PASSWORD"]).collect();
    // base64 of "one", then of "two": the new value is in the cluster before the new revision.
    assert_eq!(values, [&json!("b25l"), &json!("dHdv")]);
    let applies = service_patches(&sent, "kl-acme");
    assert_eq!(applies.len(), 2);
    let template = &applies[1].1["spec"]["template"];
    assert_eq!(template["metadata"]["name"], "hello-00002");
    assert_eq!(
        template["spec"]["containers"][0]["image"],
        format!("{REGISTRY}/acme/hello@{DIGEST}")
    );
    let env = template["spec"]["containers"][0]["env"].as_array().unwrap();
    assert!(
        env.iter().any(|e| e["name"] == "DB_PASSWORD"
            && e["valueFrom"]["secretKeyRef"]
                == json!({"name": "kl-secret-db", "key": "PASSWORD", "optional": false})),
        "{env:?}"
    );
}

/// A Knative Broker's ingress on loopback: every event posted to it, as (ce-id, ce-type).
async fn broker_ingress() -> (String, tokio::sync::mpsc::UnboundedReceiver<(String, String)>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().fallback(move |headers: http::HeaderMap| {
        let tx = tx.clone();
        async move {
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            let _ = tx.send((header("ce-id"), header("ce-type")));
            http::StatusCode::ACCEPTED
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/kl-acme/default", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

/// The requests sent for the `kind` (`triggers`, `pingsources`, `brokers`) object `name` in
/// kl-acme, in order.
fn eventing_requests(sent: &Mutex<Vec<Recorded>>, kind: &str, name: &str) -> Vec<Recorded> {
    let group = if kind == "pingsources" {
        "sources.knative.dev"
    } else {
        "eventing.knative.dev"
    };
    let path = format!("/apis/{group}/v1/namespaces/kl-acme/{kind}/{name}");
    sent.lock()
        .unwrap()
        .iter()
        .filter(|r| r.path() == path)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_knative_eventing_tenants_get_brokers_triggers_become_knative_objects_and_events_go_to_the_broker()
 {
    let (broker_url, mut posted) = broker_ingress().await;
    let mut cluster = Cluster::succeeding(&knative_endpoint().await);
    cluster.broker_url = broker_url;
    let (kube, sent) = fake_cluster(cluster);
    let mut server = Running::start_with(kube, Some("kl-rabbitmq")).await;
    server.create_tenant("acme").await;
    let broker = eventing_requests(&sent, "brokers", "default");
    assert_eq!(broker.len(), 1);
    let rendered = kl_k8s::render_broker(&kl_k8s::BrokerInput {
        tenant: "acme",
        rabbitmq_config: "kl-rabbitmq",
        delivery: None,
    })
    .unwrap();
    assert_eq!(
        broker[0].json(),
        serde_json::to_value(Object::Broker(rendered)).unwrap()
    );
    assert!(server.deploy_to("acme", 1, python_source()).await.serving);

    // A filter trigger becomes a Trigger on the Broker, exactly as rendered.
    let spec = json!({"function": "hello", "filters": [{"exact": {"type": "com.example.order"}}]});
    let (code, created) = server
        .post(
            "/v1/tenants/acme/triggers",
            json!({"name": "orders", "spec": spec}),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    let applied = eventing_requests(&sent, "triggers", "orders");
    assert_eq!(applied.len(), 1);
    assert!(applied[0].uri.ends_with(APPLY), "{}", applied[0].uri);
    let trigger: kl_events::trigger::TriggerSpec = serde_json::from_value(spec).unwrap();
    let rendered = kl_k8s::render_trigger_spec("acme", "orders", &trigger).unwrap();
    assert_eq!(applied[0].json(), serde_json::to_value(&rendered).unwrap());

    // An accepted event goes to the tenant's Broker (which the Trigger delivers from), once.
    let event = server
        .request(http::Method::POST, "/v1/tenants/acme/events")
        .header("ce-specversion", "1.0")
        .header("ce-id", "order-1")
        .header("ce-source", "/shop")
        .header("ce-type", "com.example.order")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(event.status(), 202);
    let order = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let (id, ty) = posted.recv().await.expect("the ingress runs");
            if id == "order-1" {
                return ty;
            }
        }
    })
    .await
    .expect("the event reaches the Broker within 30 s");
    assert_eq!(order, "com.example.order");

    // The same trigger as a schedule becomes a PingSource, and its Trigger goes.
    let answer = server
        .request(http::Method::PUT, "/v1/tenants/acme/triggers/orders")
        .json(&json!({"function": "hello", "schedule": "*/5 * * * *"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let ping = eventing_requests(&sent, "pingsources", "orders");
    assert_eq!(
        ping.iter().map(|r| r.method.as_str()).collect::<Vec<_>>(),
        ["DELETE", "PATCH"],
        "a DELETE when the filter trigger was applied, then the PingSource"
    );
    assert_eq!(ping[1].json()["spec"]["schedule"], "*/5 * * * *");
    let methods = |kind| {
        eventing_requests(&sent, kind, "orders")
            .iter()
            .map(|r| r.method.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(methods("triggers"), ["PATCH", "DELETE"]);

    let deleted = server
        .request(http::Method::DELETE, "/v1/tenants/acme/triggers/orders")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(methods("triggers"), ["PATCH", "DELETE", "DELETE"]);
    assert_eq!(methods("pingsources"), ["DELETE", "PATCH", "DELETE"]);
}
