//! The operator's decision, as a pure function: from a `LambdaFunction`, what was observed of
//! its build Job and Knative Service, and the operator's settings, which objects to apply next
//! and what status to report. [`crate::operator`] does the IO around it.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use kl_core::{AutoscalerConfig, FunctionSettings, FunctionSpec, SpecLimits};
use kl_events::filter::Filter;
use kl_events::schedule::Schedule;
use kl_k8s::names::NAMESPACE_PREFIX;
use kl_k8s::{
    BuildContext, BuildJobInput, BuildResources, Object, PingSourceInput, PlatformSettings, Registry,
    SecretEnv, ServiceInput, TriggerInput, render_build_job, render_knative_service, render_ping_source,
    render_trigger,
};
use sha2::{Digest, Sha256};

use crate::crd::{Condition, LambdaFunction, LambdaFunctionStatus, Source};
use crate::{BuildOutcome, Readiness, ServiceStatus};

/// Condition type: the function serves its current spec.
pub const READY: &str = "Ready";
/// Condition type: the current source's image is built.
pub const BUILT: &str = "Built";

/// How often a function is looked at again while its build or rollout is under way, besides
/// the watches on its build Job and Knative Service: a safety net for a missed event.
pub const POLL: Duration = Duration::from_secs(30);

/// What the operator is configured with, the same for every function.
#[derive(Debug, Clone)]
pub struct OperatorSettings {
    pub platform: PlatformSettings,
    pub registry: Registry,
    /// Images are pushed to `<repository>/<tenant>/<function>:<build id>`.
    pub repository: String,
    /// Bucket holding `source.archive` keys (`s3://<bucket>/<key>`).
    pub bucket: String,
    pub credentials_secret: Option<String>,
    pub build_resources: BuildResources,
    pub build_deadline: Duration,
    pub build_ttl: Duration,
}

/// What was observed of the function's build Job (the one of its current source).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildState {
    /// No such Job: it has to be created.
    Absent,
    Running,
    Ended(BuildOutcome),
}

/// What was observed in the cluster, and gathered around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// `None` when the function needs no build (a pre-built image).
    pub build: Option<BuildState>,
    pub service: Option<ServiceStatus>,
    /// `source.inline` packed as a build context ([`kl_build::inline_context`], which does
    /// IO, so the operator packs it), or why it could not be; `None` for other sources.
    pub inline_context: Option<Result<Vec<u8>, String>>,
    /// When this was observed: the transition time of a condition whose status changes.
    pub at: DateTime<Utc>,
}

/// The next step.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Objects to apply now (server-side apply, so repeating them is harmless).
    pub apply: Vec<Object>,
    pub status: LambdaFunctionStatus,
    /// Look again after this long; `None` waits for the next change to the function.
    pub requeue: Option<Duration>,
}

/// The build Job a function needs, if it needs one: the same Job name for the same tenant,
/// source, runtime and handler, so observing it again finds it and a changed source builds anew.
pub fn build_job_name(lf: &LambdaFunction) -> Option<String> {
    lf.spec.source.image.is_none().then(|| {
        format!(
            "{}-build-{}",
            lf.metadata.name.as_deref().unwrap_or_default(),
            build_id(lf)
        )
    })
}

/// Decides the next step. Never fails: a spec that cannot be served becomes a `Ready=False`
/// condition naming the problem, and nothing is applied until the spec changes. A condition
/// keeps its `lastTransitionTime` while its status stays.
pub fn plan(lf: &LambdaFunction, observed: &Observed, settings: &OperatorSettings) -> Plan {
    let mut plan = decide(lf, observed, settings);
    let before = lf
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let now = observed.at.to_rfc3339_opts(SecondsFormat::Secs, true);
    for condition in &mut plan.status.conditions {
        let kept = before
            .iter()
            .find(|b| b.type_ == condition.type_ && b.status == condition.status)
            .and_then(|b| b.last_transition_time.clone());
        condition.last_transition_time = Some(kept.unwrap_or_else(|| now.clone()));
    }
    plan
}

fn decide(lf: &LambdaFunction, observed: &Observed, settings: &OperatorSettings) -> Plan {
    let generation = lf.metadata.generation;
    let mut status = LambdaFunctionStatus {
        observed_generation: generation,
        ..LambdaFunctionStatus::default()
    };
    let checked = match check(lf, settings, observed.inline_context.as_ref()) {
        Ok(checked) => checked,
        Err(message) => {
            status.conditions = vec![condition(READY, "False", "InvalidSpec", &message)];
            return Plan {
                apply: Vec::new(),
                status,
                requeue: None,
            };
        }
    };

    let image = match (&checked.build, &observed.build) {
        (None, _) => checked.image.clone(),
        // The finished Job was garbage-collected (`ttlSecondsAfterFinished`); its image stands.
        (Some(job), None | Some(BuildState::Absent)) if built_before(lf, job).is_some() => {
            status.build_job = job.metadata.name.clone();
            status.conditions.push(condition(BUILT, "True", "Built", ""));
            built_before(lf, job).unwrap_or_default()
        }
        (Some(job), None | Some(BuildState::Absent)) => {
            status.build_job = job.metadata.name.clone();
            status.conditions = vec![
                condition(BUILT, "Unknown", "Building", "the build Job was created"),
                condition(READY, "Unknown", "Building", "waiting for the image"),
            ];
            return Plan {
                apply: vec![Object::Job(Box::new(job.clone()))],
                status,
                requeue: Some(POLL),
            };
        }
        (Some(job), Some(BuildState::Running)) => {
            status.build_job = job.metadata.name.clone();
            status.conditions = vec![
                condition(BUILT, "Unknown", "Building", "the build Job is running"),
                condition(READY, "Unknown", "Building", "waiting for the image"),
            ];
            return Plan {
                apply: Vec::new(),
                status,
                requeue: Some(POLL),
            };
        }
        (Some(job), Some(BuildState::Ended(BuildOutcome::Failed { reason, message }))) => {
            status.build_job = job.metadata.name.clone();
            let message = format!("{reason}: {message}; see the log of Job {}", job_ref(job));
            status.conditions = vec![
                condition(BUILT, "False", "BuildFailed", &message),
                condition(READY, "False", "BuildFailed", "the current source did not build"),
            ];
            return Plan {
                apply: Vec::new(),
                status,
                requeue: None,
            };
        }
        (Some(job), Some(BuildState::Ended(BuildOutcome::Succeeded { digest }))) => {
            status.build_job = job.metadata.name.clone();
            status.conditions.push(condition(BUILT, "True", "Built", ""));
            match digest {
                // The digest pins the revision even if the tag is pushed again.
                Some(d) => {
                    let repository = checked.image.rsplit_once(':').map_or(&*checked.image, |(r, _)| r);
                    format!("{repository}@{d}")
                }
                None => checked.image.clone(),
            }
        }
    };

    let mut apply = match render_function(&checked, &image) {
        Ok(objects) => objects,
        Err(message) => {
            status.conditions = vec![condition(READY, "False", "InvalidSpec", &message)];
            return Plan {
                apply: Vec::new(),
                status,
                requeue: None,
            };
        }
    };
    apply.sort_by_key(kl_k8s::yaml::apply_order);
    status.image = Some(image);
    let expected = kl_k8s::names::revision(&checked.function, checked.revision);
    let (ready, requeue) = match &observed.service {
        Some(s)
            if s.latest_ready_revision.as_deref() == Some(expected.as_str())
                && s.readiness == Readiness::Ready =>
        {
            status.url = s.url.clone();
            (condition(READY, "True", "Serving", ""), None)
        }
        Some(ServiceStatus {
            readiness: Readiness::NotReady { reason, message },
            ..
        }) => (condition(READY, "False", reason, message), Some(POLL)),
        _ => (
            condition(
                READY,
                "Unknown",
                "Deploying",
                &format!("waiting for revision {expected}"),
            ),
            Some(POLL),
        ),
    };
    status.conditions.push(ready);
    Plan {
        apply,
        status,
        requeue,
    }
}

/// A function's spec, checked and resolved.
struct Checked<'a> {
    lf: &'a LambdaFunction,
    tenant: String,
    function: String,
    revision: u32,
    spec: FunctionSpec,
    secrets: Vec<SecretEnv>,
    /// The pre-built image, or the tag the build pushes.
    image: String,
    build: Option<k8s_openapi::api::batch::v1::Job>,
}

fn check<'a>(
    lf: &'a LambdaFunction,
    settings: &OperatorSettings,
    inline_context: Option<&Result<Vec<u8>, String>>,
) -> Result<Checked<'a>, String> {
    let ns = lf.metadata.namespace.as_deref().unwrap_or_default();
    let tenant = ns
        .strip_prefix(NAMESPACE_PREFIX)
        .ok_or_else(|| format!("namespace {ns:?} is not a tenant's: put the function in kl-<tenant>"))?
        .to_owned();
    let function = lf.metadata.name.clone().unwrap_or_default();
    let revision = u32::try_from(lf.metadata.generation.unwrap_or(1))
        .map_err(|_| "metadata.generation does not fit a revision number".to_owned())?;
    let (resolved, secrets) = resolve(lf, settings)?;
    let spec = &lf.spec;
    let (image, context) = source(&spec.source, settings, &tenant, &function, &build_id(lf))?;
    let build = match context {
        None => None,
        Some(at) => {
            let context = match (&at, inline_context) {
                (ContextAt::Url(url), _) => BuildContext::Url(url),
                (ContextAt::Inline, Some(Ok(packed))) => BuildContext::Inline(packed),
                (ContextAt::Inline, Some(Err(e))) => return Err(format!("source.inline: {e}")),
                (ContextAt::Inline, None) => return Err("source.inline: the code was not packed".to_owned()),
            };
            Some(
                render_build_job(
                    &BuildJobInput {
                        tenant: &tenant,
                        function: &function,
                        runtime: spec.runtime.into(),
                        build_id: &build_id(lf),
                        context,
                        destination: &image,
                        registry: &settings.registry,
                        credentials_secret: settings.credentials_secret.as_deref(),
                        resources: settings.build_resources,
                        deadline: settings.build_deadline,
                        ttl_after_finished: settings.build_ttl,
                        executor_image: None,
                    },
                    &settings.platform,
                )
                .map_err(|e| e.to_string())?,
            )
        }
    };
    Ok(Checked {
        lf,
        tenant,
        function,
        revision,
        spec: resolved,
        secrets,
        image,
        build,
    })
}

/// The function's spec resolved within the platform's limits, and the Secret keys its
/// environment takes.
pub fn resolve(
    lf: &LambdaFunction,
    settings: &OperatorSettings,
) -> Result<(FunctionSpec, Vec<SecretEnv>), String> {
    let spec = &lf.spec;

    let mut settings_in = FunctionSettings {
        runtime: Some(spec.runtime.into()),
        handler: spec.handler.clone(),
        ..FunctionSettings::default()
    };
    let mut secrets = Vec::new();
    for var in &spec.env {
        match (&var.value, &var.secret_key_ref) {
            (Some(value), None) => {
                settings_in.env.insert(var.name.clone(), value.clone());
            }
            (None, Some(secret)) => secrets.push(SecretEnv {
                name: var.name.clone(),
                secret: secret.name.clone(),
                key: secret.key.clone(),
            }),
            _ => {
                return Err(format!(
                    "env {}: set exactly one of value and secretKeyRef",
                    var.name
                ));
            }
        }
    }
    if let Some(r) = &spec.resources {
        settings_in.cpu = r.cpu.clone();
        settings_in.memory = r.memory.clone();
        settings_in.timeout = r.timeout.clone();
        settings_in.concurrency = r.concurrency;
    }
    if let Some(s) = &spec.scaling {
        settings_in.min_scale = s.min_scale;
        settings_in.max_scale = s.max_scale;
        let mut rest = s.clone();
        rest.min_scale = None;
        rest.max_scale = None;
        // The same Knative names on both sides; a field kl-core does not know fails here.
        let config: AutoscalerConfig = serde_json::to_value(&rest)
            .and_then(serde_json::from_value)
            .map_err(|e| format!("scaling: {e}"))?;
        settings_in.autoscaling = (config != AutoscalerConfig::default()).then_some(config);
    }
    let limits: &SpecLimits = &settings.platform.limits;
    let resolved = settings_in
        .resolve(spec.runtime.into(), limits)
        .map_err(|e| e.to_string())?;
    Ok((resolved, secrets))
}

/// Where a build's context comes from.
enum ContextAt {
    Url(String),
    /// Packed from `source.inline` by the operator.
    Inline,
}

/// The image to serve (or to push) and, for a source, the build context Kaniko reads.
fn source(
    source: &Source,
    settings: &OperatorSettings,
    tenant: &str,
    function: &str,
    id: &str,
) -> Result<(String, Option<ContextAt>), String> {
    let set = [
        source.archive.is_some(),
        source.s3.is_some(),
        source.git.is_some(),
        source.inline.is_some(),
        source.image.is_some(),
    ];
    if set.iter().filter(|s| **s).count() != 1 {
        return Err("source: set exactly one of archive, s3, git, inline and image".to_owned());
    }
    let tag = format!("{}/{tenant}/{function}:{id}", settings.repository);
    if let Some(image) = &source.image {
        return Ok((image.clone(), None));
    }
    if let Some(key) = &source.archive {
        let url = format!("s3://{}/{}", settings.bucket, key.trim_start_matches('/'));
        return Ok((tag, Some(ContextAt::Url(url))));
    }
    if let Some(url) = &source.s3 {
        if !(url.starts_with("s3://") || url.starts_with("gs://")) {
            return Err(format!("source.s3 {url:?}: write s3://bucket/key (or gs://)"));
        }
        return Ok((tag, Some(ContextAt::Url(url.clone()))));
    }
    if let Some(git) = &source.git {
        let Some(rest) = git.repo.strip_prefix("https://") else {
            return Err(format!("source.git.repo {:?}: write an https:// URL", git.repo));
        };
        // Kaniko's Git context: git://host/path#ref.
        return Ok((
            tag,
            Some(ContextAt::Url(format!("git://{rest}#{}", git.reference))),
        ));
    }
    Ok((tag, Some(ContextAt::Inline)))
}

/// The Knative Service and the function's Triggers and PingSources.
fn render_function(checked: &Checked<'_>, image: &str) -> Result<Vec<Object>, String> {
    let service = render_knative_service(&ServiceInput {
        tenant: &checked.tenant,
        function: &checked.function,
        revision: checked.revision,
        spec: &checked.spec,
        image,
        secrets: &checked.secrets,
        pull_secret: None,
        traffic: &[],
    })
    .map_err(|e| e.to_string())?;
    let mut objects = vec![Object::KnativeService(service)];
    let triggers = checked
        .lf
        .spec
        .eventing
        .as_ref()
        .map(|e| e.triggers.as_slice())
        .unwrap_or_default();
    for t in triggers {
        let object = match &t.schedule {
            Some(expr) => {
                if !t.filters.is_empty() {
                    return Err(format!("trigger {}: set filters or schedule, not both", t.name));
                }
                let schedule: Schedule = expr
                    .parse()
                    .map_err(|e| format!("trigger {}: schedule {expr:?}: {e}", t.name))?;
                Object::PingSource(
                    render_ping_source(&PingSourceInput {
                        tenant: &checked.tenant,
                        name: &t.name,
                        function: &checked.function,
                        schedule: &schedule,
                        data: t.data.as_deref(),
                        content_type: t.data.as_ref().map(|_| "application/json"),
                    })
                    .map_err(|e| e.to_string())?,
                )
            }
            None => {
                if t.data.is_some() {
                    return Err(format!("trigger {}: data goes with a schedule only", t.name));
                }
                let filter = Filter::try_from(t.filters.clone())
                    .map_err(|e| format!("trigger {}: filters: {e}", t.name))?;
                Object::Trigger(
                    render_trigger(&TriggerInput {
                        tenant: &checked.tenant,
                        name: &t.name,
                        function: &checked.function,
                        filter: &filter,
                        delivery: None,
                    })
                    .map_err(|e| e.to_string())?,
                )
            }
        };
        objects.push(object);
    }
    Ok(objects)
}

/// 12 hex digits of SHA-256 over the namespace, source, runtime and handler.
fn build_id(lf: &LambdaFunction) -> String {
    let key = serde_json::json!([
        lf.metadata.namespace,
        lf.spec.source,
        lf.spec.runtime,
        lf.spec.handler,
    ]);
    let digest = Sha256::digest(key.to_string().as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// The image a previous pass recorded for this very build Job, if it succeeded.
fn built_before(lf: &LambdaFunction, job: &k8s_openapi::api::batch::v1::Job) -> Option<String> {
    let status = lf.status.as_ref()?;
    let built = status
        .conditions
        .iter()
        .any(|c| c.type_ == BUILT && c.status == "True");
    (built && status.build_job == job.metadata.name)
        .then(|| status.image.clone())
        .flatten()
}

fn job_ref(job: &k8s_openapi::api::batch::v1::Job) -> String {
    format!(
        "{}/{}",
        job.metadata.namespace.as_deref().unwrap_or_default(),
        job.metadata.name.as_deref().unwrap_or_default()
    )
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_transition_time: None,
    }
}
