//! The Kubernetes backend (`kl server --backend kubernetes`): tenants become namespace sets,
//! builds Kaniko Jobs, revisions Knative Services — each rendered by `kl-k8s` and applied by
//! `kl-kube` — and invocations are proxied to the function's Knative Service after the
//! gateway's rate limits. Eventing is the platform bus's, delivering through that same proxy,
//! or with `--eventing knative` Knative Eventing's: each tenant gets a Broker, each trigger a
//! Trigger or PingSource, and the platform hands accepted events to the Broker (never both, so
//! nothing is delivered twice).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use kl_build::BuildLog;
use kl_core::{FunctionSpec, Runtime, SpecLimits, TenantSpec};
use kl_events::trigger::TriggerSpec;
use kl_gateway::{Gateway, GatewayError, Invocation};
use kl_k8s::crd::TrafficEntry;
use kl_k8s::{
    BrokerInput, BuildContext, BuildJobInput, BuildResources, Object, Registry, RenderError, ServiceInput,
    names,
};
use kl_kube::{Applier, BuildOutcome, KubeError, Readiness};
use kl_store::RevisionRecord;

use crate::config::KubernetesConfig;
use crate::objects::Objects;

/// What one Kaniko build gets (requests = limits): enough for pip, npm and `go build` of a
/// function, and billed for what it was given.
const BUILD_RESOURCES: BuildResources = BuildResources {
    cpu_millis: 1000,
    memory_bytes: 2 << 30,
};
/// How long a finished build Job (and its log) stays for the control plane to read.
const BUILD_TTL: Duration = Duration::from_secs(3600);
/// How long a Broker may take to accept an event.
const BROKER_TIMEOUT: Duration = Duration::from_secs(30);
/// Headers that describe one hop, not the request: never forwarded to or from a function.
const HOP_BY_HOP: [&str; 7] = [
    "host",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "upgrade",
    "content-length",
];

/// Why the cluster did not do what a deploy, tenant change or trigger asked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClusterError {
    #[error(transparent)]
    Kube(#[from] KubeError),
    #[error(transparent)]
    Render(#[from] RenderError),
    /// The Kaniko Job failed; its log is in the build log.
    #[error("the Kaniko build Job failed ({reason}): {message}; its log is above")]
    BuildFailed { reason: String, message: String },
    /// Kaniko succeeded but wrote no digest to its termination log.
    #[error(
        "the build pushed {image} but reported no digest (Kaniko's --digest-file); the revision cannot be pinned"
    )]
    NoDigest { image: String },
    /// Knative reported the revision, or the route to it, as failed.
    #[error("Knative did not serve {revision}: {reason}: {message}")]
    NotReady {
        revision: String,
        reason: String,
        message: String,
    },
    /// Knative did not route all traffic to the revision in time.
    #[error("{revision} did not become ready and take all traffic within {}s; see `kubectl describe ksvc -n {namespace}`", timeout.as_secs())]
    ReadyTimeout {
        revision: String,
        namespace: String,
        timeout: Duration,
    },
    /// Knative reported ready without an address.
    #[error("the Knative Service of {revision} is ready but has no URL")]
    NoUrl { revision: String },
    /// A revision number beyond what Knative names can hold.
    #[error("revision number {0} is out of range")]
    RevisionNumber(i64),
    /// A secret the revision uses cannot become a Kubernetes Secret.
    #[error("secret {name:?}: {reason}")]
    Secret { name: String, reason: String },
}

/// An image a build pushed.
pub(crate) struct Pushed {
    /// `registry/tenant/function@sha256:…`: by digest, so the revision never changes.
    pub image: String,
    pub digest: String,
}

/// A function served by a Knative Service.
struct Route {
    url: String,
    public: bool,
    timeout: Duration,
}

/// The cluster the platform drives, and where each function answers.
pub(crate) struct Cluster {
    applier: Applier,
    config: KubernetesConfig,
    /// `s3://bucket[/prefix]`: where Kaniko reads the contexts the server stores.
    store_url: String,
    routes: ArcSwap<HashMap<String, Arc<Route>>>,
    /// Each tenant's Broker address, once read (`--eventing knative`).
    brokers: ArcSwap<HashMap<String, String>>,
    http: reqwest::Client,
    max_response_bytes: usize,
}

fn route_key(tenant: &str, function: &str) -> String {
    format!("{tenant}/{function}")
}

impl Cluster {
    /// Applies what every tenant depends on (the PriorityClasses and the build namespace).
    /// `objects` is the S3 store Kaniko reads build contexts from.
    pub async fn start(
        client: kl_kube::Client,
        mut config: KubernetesConfig,
        objects: &Objects,
        limits: &SpecLimits,
        max_response_bytes: usize,
    ) -> Result<Cluster, crate::ServerError> {
        config.platform.limits = limits.clone();
        let applier = Applier::new(client);
        let mut shared = kl_k8s::render_priority_classes();
        shared.extend(kl_k8s::render_build_namespace(&config.platform).map_err(KubeError::from)?);
        applier.apply_all(&shared).await?;
        Ok(Cluster {
            applier,
            store_url: objects.to_string(),
            config,
            routes: ArcSwap::from_pointee(HashMap::new()),
            brokers: ArcSwap::from_pointee(HashMap::new()),
            http: reqwest::Client::new(),
            max_response_bytes,
        })
    }

    /// Whether Knative Eventing delivers events (`--eventing knative`).
    pub fn knative_eventing(&self) -> bool {
        self.config.knative_eventing.is_some()
    }

    /// Applies a tenant's namespace, quota, limits, network policies and roles, and with
    /// Knative Eventing its Broker.
    pub async fn apply_tenant(&self, tenant: &str, spec: &TenantSpec) -> Result<(), ClusterError> {
        let mut objects = kl_k8s::render_tenant(tenant, spec, &self.config.platform)?;
        if let Some(rabbitmq_config) = &self.config.knative_eventing {
            objects.push(Object::Broker(kl_k8s::render_broker(&BrokerInput {
                tenant,
                rabbitmq_config,
                delivery: None,
            })?));
        }
        Ok(self.applier.apply_all(&objects).await?)
    }

    /// Applies a trigger as Knative delivers it (a Trigger, or a PingSource for a schedule),
    /// and removes what it was rendered as before if its kind changed.
    pub async fn apply_trigger(
        &self,
        tenant: &str,
        name: &str,
        spec: &TriggerSpec,
    ) -> Result<(), ClusterError> {
        let object = kl_k8s::render_trigger_spec(tenant, name, spec)?;
        self.applier.apply(&object).await?;
        Ok(self
            .applier
            .delete_trigger(tenant, name, Some(object.kind()))
            .await?)
    }

    pub async fn delete_trigger(&self, tenant: &str, name: &str) -> Result<(), KubeError> {
        self.applier.delete_trigger(tenant, name, None).await
    }

    /// Posts an event (binary-mode headers and body) to the tenant's Broker; its answer's
    /// status, or why there was none. The Broker's address is read once, and again after a
    /// failed post (a re-created Broker may have moved).
    pub async fn post_to_broker(
        &self,
        tenant: &str,
        headers: http::HeaderMap,
        body: Bytes,
    ) -> Result<http::StatusCode, String> {
        let url = match self.brokers.load().get(tenant).cloned() {
            Some(url) => url,
            None => {
                let namespace = names::namespace(tenant).map_err(|e| e.to_string())?;
                let url = self
                    .applier
                    .broker_url(&namespace, kl_k8s::eventing::BROKER_NAME)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| {
                        format!("the Broker of tenant {tenant:?} has no address yet (is it ready? `kubectl describe broker -n {namespace}`)")
                    })?;
                self.brokers.rcu(|brokers| {
                    let mut next = HashMap::clone(brokers);
                    next.insert(tenant.to_owned(), url.clone());
                    next
                });
                url
            }
        };
        let sent = self
            .http
            .post(&url)
            .headers(headers)
            .body(body)
            .timeout(BROKER_TIMEOUT)
            .send()
            .await;
        match sent {
            Ok(response) => Ok(response.status()),
            Err(e) => {
                self.brokers.rcu(|brokers| {
                    let mut next = HashMap::clone(brokers);
                    next.remove(tenant);
                    next
                });
                Err(format!("the Knative Broker at {url} did not answer: {e}"))
            }
        }
    }

    pub async fn delete_tenant(&self, tenant: &str) -> Result<(), KubeError> {
        self.applier.delete_tenant(tenant).await
    }

    /// Builds a revision from the context stored under `context_key` with a Kaniko Job,
    /// writing the Job's log to `log` and counting there the CPU the build was given while
    /// it ran.
    pub async fn build(
        &self,
        rev: &RevisionRecord,
        runtime: Runtime,
        context_key: &str,
        deadline: Duration,
        log: &BuildLog,
    ) -> Result<Pushed, ClusterError> {
        let number = revision_number(rev)?;
        let destination = kl_k8s::export::image(&self.config.registry, &rev.tenant, &rev.function, number);
        // The source digest tells apart revisions that reuse a number after a function is
        // deleted and deployed again, whose finished Jobs may still exist.
        let digest = rev.source_digest.get(..6).unwrap_or(&rev.source_digest);
        let build_id = format!("{number}-{digest}");
        let context_url = format!("{}/{context_key}", self.store_url);
        let job = kl_k8s::render_build_job(
            &BuildJobInput {
                tenant: &rev.tenant,
                function: &rev.function,
                runtime,
                build_id: &build_id,
                context: BuildContext::Url(&context_url),
                destination: &destination,
                registry: &Registry {
                    push_secret: self.config.push_secret.clone(),
                    cache_repo: None,
                    insecure: false,
                },
                credentials_secret: self.config.store_credentials_secret.as_deref(),
                resources: BUILD_RESOURCES,
                deadline,
                ttl_after_finished: BUILD_TTL,
                executor_image: None,
            },
            &self.config.platform,
        )?;
        log.line(&format!(
            "building {destination} with Kaniko (Job {}/{})",
            self.config.platform.build_namespace,
            job.metadata.name.as_deref().unwrap_or_default()
        ));
        let run = self.applier.run_build(&job, |line| log.output(line)).await?;
        if let Some(ran) = run.ran {
            log.add_cpu(reserved_cpu(ran, BUILD_RESOURCES.cpu_millis));
        }
        match run.outcome {
            BuildOutcome::Succeeded { digest: Some(digest) } => {
                let repository = destination
                    .rsplit_once(':')
                    .map_or(destination.as_str(), |(repo, _tag)| repo);
                Ok(Pushed {
                    image: format!("{repository}@{digest}"),
                    digest,
                })
            }
            BuildOutcome::Succeeded { digest: None } => Err(ClusterError::NoDigest { image: destination }),
            BuildOutcome::Failed { reason, message } => Err(ClusterError::BuildFailed { reason, message }),
        }
    }

    /// Makes Knative serve `rev` and returns the Service's URL. A revision Knative still has
    /// (a rollback) only gets the traffic back; any other (a build, a promoted or rolled copy)
    /// is applied as the Service's newest revision, after the Secrets it uses (`secrets`:
    /// secret → key → value). Waits until Knative routes every request to it; if it does not,
    /// the traffic goes back to the `previous` serving revision.
    pub async fn serve(
        &self,
        rev: &RevisionRecord,
        spec: &FunctionSpec,
        image: &str,
        secrets: &BTreeMap<String, BTreeMap<String, Vec<u8>>>,
        previous: Option<i64>,
    ) -> Result<String, ClusterError> {
        let namespace = names::namespace(&rev.tenant)?;
        let revision = rev.name();
        if self
            .applier
            .knative_revision_exists(&namespace, &revision)
            .await?
        {
            self.applier
                .set_traffic(&namespace, &rev.function, &[all_to(&revision)])
                .await?;
        } else {
            self.apply_service(rev, spec, image, secrets).await?;
        }
        let served = self
            .wait_until_serving(&namespace, &rev.function, &revision)
            .await;
        if served.is_err()
            && let Some(previous) = previous.filter(|&n| n != rev.number)
        {
            let back = all_to(&kl_store::revision_name(&rev.function, previous));
            if let Err(e) = self.applier.set_traffic(&namespace, &rev.function, &[back]).await {
                tracing::error!(revision = %revision, error = %e, "cannot move the traffic back to the previous revision");
            }
        }
        served
    }

    /// Applies the Secrets a revision uses, then its Knative Service with all traffic on it.
    async fn apply_service(
        &self,
        rev: &RevisionRecord,
        spec: &FunctionSpec,
        image: &str,
        secrets: &BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    ) -> Result<(), ClusterError> {
        for (name, keys) in secrets {
            let text = keys
                .iter()
                .map(|(key, value)| {
                    let value = String::from_utf8(value.clone()).map_err(|_| ClusterError::Secret {
                        name: name.clone(),
                        reason: format!("key {key:?} is not UTF-8 text"),
                    })?;
                    Ok((key.clone(), value))
                })
                .collect::<Result<BTreeMap<_, _>, ClusterError>>()?;
            let secret = kl_k8s::render_secret(&rev.tenant, name, &text)?;
            self.applier.apply(&Object::Secret(secret)).await?;
        }
        let service = kl_k8s::render_knative_service(&ServiceInput {
            tenant: &rev.tenant,
            function: &rev.function,
            revision: revision_number(rev)?,
            spec,
            image,
            secrets: &[],
            pull_secret: self.config.pull_secret.as_deref(),
            traffic: &[],
        })?;
        self.applier.apply(&Object::KnativeService(service)).await?;
        Ok(())
    }

    /// Waits, at most the configured ready timeout, until Knative routes every request of
    /// `namespace/function` to `revision`; returns the Service's URL.
    async fn wait_until_serving(
        &self,
        namespace: &str,
        function: &str,
        revision: &str,
    ) -> Result<String, ClusterError> {
        let waited = tokio::time::timeout(
            self.config.ready_timeout,
            self.applier.wait_until_serving(namespace, function, revision),
        )
        .await
        .map_err(|_| ClusterError::ReadyTimeout {
            revision: revision.to_owned(),
            namespace: namespace.to_owned(),
            timeout: self.config.ready_timeout,
        })??;
        match waited.readiness {
            Readiness::Ready => waited.url.ok_or_else(|| ClusterError::NoUrl {
                revision: revision.to_owned(),
            }),
            Readiness::NotReady { reason, message } => Err(ClusterError::NotReady {
                revision: revision.to_owned(),
                reason,
                message,
            }),
            Readiness::Unknown => unreachable!("wait_until_serving returns once readiness is known"),
        }
    }

    /// The URL of a function's Knative Service, if Knative reports one (after a restart).
    pub async fn url(&self, tenant: &str, function: &str) -> Result<Option<String>, ClusterError> {
        let namespace = names::namespace(tenant)?;
        let status = self.applier.knative_service_status(&namespace, function).await?;
        Ok(status.and_then(|s| s.url))
    }

    /// Sends the function's invocations to `url`, with its rate limit, metered at its memory.
    pub fn route(&self, gateway: &Gateway, tenant: &str, function: &str, url: String, spec: &FunctionSpec) {
        gateway.route_elsewhere(tenant, function, spec.rate_limit, spec.memory_bytes);
        let route = Arc::new(Route {
            url,
            public: spec.public,
            timeout: Duration::from_millis(spec.timeout_ms),
        });
        self.routes.rcu(|routes| {
            let mut next = HashMap::clone(routes);
            next.insert(route_key(tenant, function), route.clone());
            next
        });
    }

    /// Whether the function is public; `None` when it is not routed.
    pub fn is_public(&self, tenant: &str, function: &str) -> Option<bool> {
        self.routes
            .load()
            .get(&route_key(tenant, function))
            .map(|r| r.public)
    }

    /// Stops routing to a function and removes its Knative Service. Its triggers stay, in the
    /// store and (with Knative Eventing) in the cluster, as Knative's do when their subscriber
    /// goes: they deliver again once a function of that name is deployed.
    pub async fn delete_function(
        &self,
        gateway: &Gateway,
        tenant: &str,
        function: &str,
    ) -> Result<(), KubeError> {
        self.routes.rcu(|routes| {
            let mut next = HashMap::clone(routes);
            next.remove(&route_key(tenant, function));
            next
        });
        gateway.unroute_elsewhere(tenant, function);
        self.applier.delete_service(tenant, function).await
    }

    /// Proxies one invocation to the function's Knative Service, after the gateway's rate
    /// limits, bounded by the function's timeout and the response size limit; an answered one
    /// is metered (count, duration × memory) as the gateway meters its own.
    pub async fn invoke(
        &self,
        gateway: &Gateway,
        tenant: &str,
        function: &str,
        call: Invocation,
    ) -> Result<http::Response<Bytes>, GatewayError> {
        let route = self
            .routes
            .load()
            .get(&route_key(tenant, function))
            .cloned()
            .ok_or_else(|| GatewayError::NoRoute(function.to_owned()))?;
        gateway.admit_elsewhere(tenant, function)?;
        let mut headers = call.headers;
        for name in HOP_BY_HOP {
            headers.remove(name);
        }
        let url = format!("{}{}", route.url.trim_end_matches('/'), call.path_and_query);
        let started = std::time::Instant::now();
        let sent = self
            .http
            .request(call.method, url)
            .headers(headers)
            .header("x-request-id", &call.request_id)
            .body(call.body)
            .timeout(route.timeout)
            .send()
            .await;
        let mut response = sent.map_err(|e| upstream(e, route.timeout))?;
        let mut builder = http::Response::builder().status(response.status());
        for (name, value) in response.headers() {
            if !HOP_BY_HOP.contains(&name.as_str()) {
                builder = builder.header(name, value);
            }
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| upstream(e, route.timeout))? {
            if body.len() + chunk.len() > self.max_response_bytes {
                return Err(GatewayError::ResponseTooLarge(self.max_response_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        gateway.completed_elsewhere(tenant, function, started.elapsed());
        builder
            .body(Bytes::from(body))
            .map_err(|e| GatewayError::Upstream(e.to_string()))
    }
}

/// The CPU time a build given `cpu_millis` holds for `ran`: what it is metered for.
fn reserved_cpu(ran: Duration, cpu_millis: u64) -> Duration {
    let nanos = ran.as_nanos().saturating_mul(u128::from(cpu_millis)) / 1000;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// A traffic block entry sending every request to `revision`.
fn all_to(revision: &str) -> TrafficEntry {
    TrafficEntry {
        revision_name: revision.to_owned(),
        latest_revision: false,
        percent: 100,
        tag: None,
    }
}

fn revision_number(rev: &RevisionRecord) -> Result<u32, ClusterError> {
    u32::try_from(rev.number).map_err(|_| ClusterError::RevisionNumber(rev.number))
}

/// A failed call to a Knative Service, as the gateway reports a failed instance.
fn upstream(e: reqwest::Error, timeout: Duration) -> GatewayError {
    if e.is_timeout() {
        GatewayError::Timeout(format!("{}s", timeout.as_secs_f64()))
    } else {
        GatewayError::Upstream(format!("the Knative Service did not answer: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_is_metered_for_the_cpu_it_was_given_while_it_ran() {
        let ran = Duration::from_secs(90);
        assert_eq!(reserved_cpu(ran, 1000), ran);
        assert_eq!(reserved_cpu(ran, 500), Duration::from_secs(45));
        assert_eq!(reserved_cpu(ran, 2500), Duration::from_secs(225));
        assert_eq!(
            reserved_cpu(Duration::MAX, u64::MAX),
            Duration::from_nanos(u64::MAX)
        );
    }
}
