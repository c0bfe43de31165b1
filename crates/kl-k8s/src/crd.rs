//! Knative's custom resources, as small serde structs holding only the fields we emit. Written
//! by hand rather than derived with `kube::CustomResource`: we only write them, and this keeps
//! `kube` (and its HTTP stack) out of the crate; `kl-kube` applies them. Field names
//! follow the CRD schemas in `shared/schemas/crds/`, which the tests validate against strictly.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, LocalObjectReference, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

/// `apiVersion` of Knative Serving's Service.
pub const SERVING_V1: &str = "serving.knative.dev/v1";
/// `apiVersion` of Knative Eventing's Broker and Trigger.
pub const EVENTING_V1: &str = "eventing.knative.dev/v1";
/// `apiVersion` of Knative's PingSource.
pub const SOURCES_V1: &str = "sources.knative.dev/v1";

/// Writes `apiVersion`, `kind`, `metadata` and `spec` in that order, as `kubectl` does, so the
/// kind is never a field a caller could get wrong.
fn write_resource<S: Serializer, T: Serialize>(
    s: S,
    api_version: &str,
    kind: &str,
    metadata: &ObjectMeta,
    spec: &T,
) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(4))?;
    map.serialize_entry("apiVersion", api_version)?;
    map.serialize_entry("kind", kind)?;
    map.serialize_entry("metadata", metadata)?;
    map.serialize_entry("spec", spec)?;
    map.end()
}

macro_rules! resource {
    ($(#[$doc:meta])* $name:ident, $spec:ty, $api_version:expr, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name {
            pub metadata: ObjectMeta,
            pub spec: $spec,
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                write_resource(s, $api_version, $kind, &self.metadata, &self.spec)
            }
        }
    };
}

resource!(
    /// `serving.knative.dev/v1` Service: one per function; its template is the newest revision.
    KnativeService,
    ServiceSpec,
    SERVING_V1,
    "Service"
);
resource!(
    /// `eventing.knative.dev/v1` Broker: one per tenant.
    Broker,
    BrokerSpec,
    EVENTING_V1,
    "Broker"
);
resource!(
    /// `eventing.knative.dev/v1` Trigger: routes matching events from the broker to a function.
    Trigger,
    TriggerSpec,
    EVENTING_V1,
    "Trigger"
);
resource!(
    /// `sources.knative.dev/v1` PingSource: sends an event to a function on a cron schedule.
    PingSource,
    PingSourceSpec,
    SOURCES_V1,
    "PingSource"
);

/// `spec` of a Knative Service.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    pub template: RevisionTemplate,
    pub traffic: Vec<TrafficEntry>,
}

/// `spec.template`: the revision to create.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionTemplate {
    pub metadata: TemplateMetadata,
    pub spec: RevisionSpec,
}

/// `spec.template.metadata`: Knative allows only name, labels and annotations here.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// `spec.template.spec`: Knative's subset of a PodSpec plus its own fields. Containers are
/// `k8s-openapi` types; the renderer sets only the container fields Knative's schema allows.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionSpec {
    /// Hard limit of in-flight requests per instance (our `concurrency`).
    pub container_concurrency: u32,
    /// Request deadline in seconds (our `timeout`, rounded up).
    pub timeout_seconds: u64,
    pub containers: Vec<Container>,
    /// Secret volumes (the function's secrets as files).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// Functions never call the Kubernetes API, so they get no token to steal.
    pub automount_service_account_token: bool,
    /// Thousands of `*_SERVICE_HOST` variables in a busy namespace slow every cold start.
    pub enable_service_links: bool,
    /// Needs Knative's `kubernetes.podspec-priorityclassname` feature flag.
    pub priority_class_name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
}

/// One entry of `spec.traffic`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficEntry {
    pub revision_name: String,
    /// Always `false`: entries pin named revisions, so a new revision gets traffic only when
    /// the control plane says so (progressive delivery), never implicitly.
    pub latest_revision: bool,
    pub percent: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// A Knative object reference (`KReference`), here always in the same namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KReference {
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

/// A Knative `Destination`: an object reference or an absolute URI, written as Knative's
/// `{ref: …}` or `{uri: …}`. Serialized by hand: serde's derived external tagging would come out
/// of serde_yaml as a YAML tag (`!uri …`), which no Kubernetes parser accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Ref(KReference),
    Uri(String),
}

impl Serialize for Destination {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        match self {
            Destination::Ref(r) => map.serialize_entry("ref", r)?,
            Destination::Uri(u) => map.serialize_entry("uri", u)?,
        }
        map.end()
    }
}

/// Knative's `delivery:` block, with the fields the shipped schema has (`retry`,
/// `backoffPolicy`, `backoffDelay`, `deadLetterSink`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliverySpec {
    pub retry: u32,
    pub backoff_policy: String,
    /// ISO 8601, e.g. `PT0.2S`.
    pub backoff_delay: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_sink: Option<Destination>,
}

/// `spec` of a Broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerSpec {
    /// The broker class's configuration (a `RabbitmqBrokerConfig` for the RabbitMQ class).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<KReference>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
}

/// `spec` of a Trigger. Exactly one of `filter` and `filters` is set, or neither.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerSpec {
    pub broker: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<AttributesFilter>,
    /// Knative's newer dialect filters, each entry one dialect mapping attributes to values.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<BTreeMap<String, BTreeMap<String, String>>>,
    pub subscriber: Destination,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
}

/// `spec.filter`: exact matches on attributes, the form every Knative version understands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttributesFilter {
    pub attributes: BTreeMap<String, String>,
}

/// `spec` of a PingSource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PingSourceSpec {
    pub schedule: String,
    /// Always `UTC`: our schedules are evaluated in UTC (`kl_events::schedule`), and PingSource
    /// would otherwise use the cluster's zone.
    pub timezone: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    pub sink: Destination,
}
