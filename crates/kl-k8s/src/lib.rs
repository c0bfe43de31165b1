//! The Kubernetes + Knative form of knative-lambda's domain model (DESIGN §1, scale-out column):
//! pure functions from tenants, builds, revisions and triggers to the objects a cluster runs,
//! and deterministic YAML for `kl export k8s`. No cluster, no client: `kl-kube` applies these
//! objects, exactly as rendered and tested here.
//!
//! | ours | rendered as | module |
//! |---|---|---|
//! | tenant | Namespace, ResourceQuota, LimitRange, NetworkPolicy, Role, RoleBinding | [`tenant`] |
//! | priority classes | PriorityClass | [`tenant`] |
//! | tenant secret | Secret (referenced by the Knative Service) | [`secret`] |
//! | build | Kaniko Job | [`build_job`] |
//! | revision + traffic | Knative Service | [`knative_service`] |
//! | platform autoscaling defaults | `knative-serving/config-autoscaler` ConfigMap | [`autoscaler_config`] |
//! | broker, trigger, schedule | Knative Broker, Trigger, PingSource | [`eventing`] |
//! | a platform's whole state (`kl export k8s`) | all of the above | [`export`] |
//!
//! Core kinds are `k8s-openapi` types; Knative's custom resources are small structs of ours
//! holding only the fields we emit ([`crd`]).

pub mod autoscaler_config;
pub mod build_job;
pub mod crd;
pub mod eventing;
pub mod export;
pub mod knative_service;
pub mod names;
pub mod secret;
pub mod tenant;
pub mod yaml;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Namespace, ResourceQuota, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use thiserror::Error;

pub use autoscaler_config::render_autoscaler_config;
pub use build_job::{
    BuildContext, BuildJobInput, BuildResources, KANIKO_IMAGE, Registry, UNPACK_IMAGE, render_build_job,
};
pub use crd::{Broker, KnativeService, PingSource, Trigger};
pub use eventing::{
    BrokerInput, PingSourceInput, TriggerInput, render_broker, render_ping_source, render_trigger,
    render_trigger_spec,
};
pub use export::{ExportSettings, FunctionState, TenantState, render_platform};
pub use knative_service::{
    SecretEnv, ServiceInput, TrafficTarget, autoscaling_annotations, render_knative_service,
};
pub use secret::render_secret;
pub use tenant::{
    PlatformSettings, member_group, render_build_namespace, render_priority_classes, render_tenant,
};
pub use yaml::to_yaml;

/// A container's security context under Pod Security `restricted`: not root, no privilege
/// escalation, no capabilities, the runtime's default seccomp profile.
pub(crate) fn restricted_container() -> k8s_openapi::api::core::v1::SecurityContext {
    use k8s_openapi::api::core::v1::{Capabilities, SeccompProfile, SecurityContext};
    SecurityContext {
        run_as_non_root: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}

/// Why objects could not be rendered. Each names the object or field at fault and what to do.
#[derive(Debug, Error)]
pub enum RenderError {
    /// A tenant or function name that `kl_core` refuses (so it cannot be a namespace or Service).
    #[error(transparent)]
    Name(#[from] kl_core::NameError),
    /// Some other name (secret, trigger, build id, derived Job name) breaks Kubernetes' rules.
    #[error("{kind} name {name:?} is not a valid Kubernetes name: {reason}")]
    InvalidName {
        kind: &'static str,
        name: String,
        reason: String,
    },
    /// The tenant's instance limits do not fit the platform's.
    #[error("tenant {tenant}: {source}")]
    Limits {
        tenant: String,
        #[source]
        source: kl_core::LimitsError,
    },
    /// An egress allow-list entry does not parse.
    #[error(
        "tenant {tenant}: egress rule {rule:?} is invalid: {reason}; write host[:port], a.b.c.d[/len][:port] or [ipv6][:port]"
    )]
    EgressRule {
        tenant: String,
        rule: String,
        reason: String,
    },
    /// The traffic split is empty, does not sum to 100, or names a revision twice.
    #[error("function {function}: traffic {reason}")]
    Traffic { function: String, reason: String },
    /// A function sets an autoscaling field Knative only takes cluster-wide.
    #[error(
        "function {function}: autoscaling.{field} has no per-revision annotation in Knative (it is the \
         cluster-wide `{config_key}` in the knative-serving/config-autoscaler ConfigMap); remove it \
         from the function or set it platform-wide"
    )]
    ClusterWideAutoscaling {
        function: String,
        field: &'static str,
        config_key: &'static str,
    },
    /// A platform autoscaling default has no key in Knative's `config-autoscaler`.
    #[error("platform autoscaling.{field} cannot go in knative-serving/config-autoscaler: {reason}")]
    NotInConfigAutoscaler {
        field: &'static str,
        reason: &'static str,
    },
    /// An inline build context too large to travel in the build Job.
    #[error(
        "the inline source packs to {bytes} bytes, more than the {limit} a build Job carries; use an archive, s3 or git source"
    )]
    InlineContextTooLarge { bytes: usize, limit: usize },
    /// A duration does not fit the Kubernetes field it maps to.
    #[error("{field} {value} does not fit Kubernetes: {reason}")]
    Duration {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    /// The YAML serializer refused an object (a bug in a renderer, not in the input).
    #[error("could not write {kind} {name} as YAML: {source}")]
    Yaml {
        kind: &'static str,
        name: String,
        #[source]
        source: serde_yaml::Error,
    },
}

/// One rendered object of any kind we emit, so a tenant's or a whole platform's objects can be
/// collected, ordered and written together.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Object {
    Namespace(Namespace),
    PriorityClass(PriorityClass),
    ResourceQuota(ResourceQuota),
    LimitRange(LimitRange),
    ConfigMap(ConfigMap),
    Secret(Secret),
    NetworkPolicy(NetworkPolicy),
    Role(Role),
    RoleBinding(RoleBinding),
    /// Boxed: a Job (with its pod template) is several times larger than any other kind.
    Job(Box<Job>),
    Broker(Broker),
    KnativeService(KnativeService),
    Trigger(Trigger),
    PingSource(PingSource),
}

impl Object {
    /// The object's `kind`. Knative's Service is `Service` like the core kind; [`Object::api_version`]
    /// tells them apart.
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Namespace(_) => "Namespace",
            Object::PriorityClass(_) => "PriorityClass",
            Object::ResourceQuota(_) => "ResourceQuota",
            Object::LimitRange(_) => "LimitRange",
            Object::ConfigMap(_) => "ConfigMap",
            Object::Secret(_) => "Secret",
            Object::NetworkPolicy(_) => "NetworkPolicy",
            Object::Role(_) => "Role",
            Object::RoleBinding(_) => "RoleBinding",
            Object::Job(_) => "Job",
            Object::Broker(_) => "Broker",
            Object::KnativeService(_) => "Service",
            Object::Trigger(_) => "Trigger",
            Object::PingSource(_) => "PingSource",
        }
    }

    /// The object's `apiVersion`.
    pub fn api_version(&self) -> &'static str {
        match self {
            Object::Namespace(_)
            | Object::ResourceQuota(_)
            | Object::LimitRange(_)
            | Object::ConfigMap(_)
            | Object::Secret(_) => "v1",
            Object::PriorityClass(_) => "scheduling.k8s.io/v1",
            Object::NetworkPolicy(_) => "networking.k8s.io/v1",
            Object::Role(_) | Object::RoleBinding(_) => "rbac.authorization.k8s.io/v1",
            Object::Job(_) => "batch/v1",
            Object::Broker(_) | Object::Trigger(_) => crd::EVENTING_V1,
            Object::KnativeService(_) => crd::SERVING_V1,
            Object::PingSource(_) => crd::SOURCES_V1,
        }
    }

    /// Whether the kind is a Kubernetes built-in (validated against Kubernetes' own schemas)
    /// rather than a Knative custom resource (validated against its CRD schema).
    pub fn is_core(&self) -> bool {
        !matches!(
            self,
            Object::Broker(_) | Object::KnativeService(_) | Object::Trigger(_) | Object::PingSource(_)
        )
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Namespace(o) => &o.metadata,
            Object::PriorityClass(o) => &o.metadata,
            Object::ResourceQuota(o) => &o.metadata,
            Object::LimitRange(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
            Object::NetworkPolicy(o) => &o.metadata,
            Object::Role(o) => &o.metadata,
            Object::RoleBinding(o) => &o.metadata,
            Object::Job(o) => &o.metadata,
            Object::Broker(o) => &o.metadata,
            Object::KnativeService(o) => &o.metadata,
            Object::Trigger(o) => &o.metadata,
            Object::PingSource(o) => &o.metadata,
        }
    }

    /// `metadata.name` (every object we render has one).
    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }

    /// `metadata.namespace`; empty for cluster-scoped kinds.
    pub fn namespace(&self) -> &str {
        self.metadata().namespace.as_deref().unwrap_or_default()
    }
}
