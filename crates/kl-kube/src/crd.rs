//! The `LambdaFunction` custom resource (`knative-lambda.io/v1alpha1`): a function declared in
//! a tenant namespace (`kl-<tenant>`), which `kl operator` builds and serves. The CRD's schema is
//! generated from these types (`kl export crd`, committed as `deploy/crds/`).

use std::collections::BTreeMap;

use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The CustomResourceDefinition as YAML, generated from the types below: what `kl export crd`
/// prints and `deploy/crds/lambdafunctions.yaml` holds.
pub fn crd_yaml() -> String {
    serde_yaml::to_string(&LambdaFunction::crd()).expect("a CRD always serializes")
}

/// A function: where its code comes from, how it runs, scales and receives events.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "knative-lambda.io",
    version = "v1alpha1",
    kind = "LambdaFunction",
    plural = "lambdafunctions",
    shortname = "lf",
    namespaced,
    status = "LambdaFunctionStatus",
    // Raw JSON: the structured `printcolumn(...)` form repeats `type_ = "string"`, which
    // clippy takes for a duplicated attribute.
    printcolumn = r#"{"name": "Runtime", "type": "string", "jsonPath": ".spec.runtime"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "URL", "type": "string", "jsonPath": ".status.url"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LambdaFunctionSpec {
    pub source: Source,
    pub runtime: RuntimeName,
    /// `module.function` (Python), `file.export` (Node); the runtime's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<Scaling>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eventing: Option<Eventing>,
}

/// Where the code comes from: exactly one field. A Kubernetes-style union (like a Volume's
/// source) rather than a Rust enum, so the generated schema stays structural.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// Key of a build context (`.tar.gz`) in the operator's object-store bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
    /// A build context anywhere Kaniko reads: `s3://bucket/key.tar.gz` (or `gs://`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<String>,
    /// A Git repository holding a build context (Dockerfile at its root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitSource>,
    /// The handler's code, for a one-file function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<InlineSource>,
    /// A pre-built image (`registry/repo@sha256:…`): no build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GitSource {
    /// `https://github.com/org/repo.git`.
    pub repo: String,
    /// Branch, tag or commit.
    #[serde(rename = "ref")]
    pub reference: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InlineSource {
    /// The file's name, e.g. `main.py`.
    pub filename: String,
    pub code: String,
}

/// The runtimes `kl` builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeName {
    Python,
    Node,
    Go,
}

impl From<RuntimeName> for kl_core::Runtime {
    fn from(r: RuntimeName) -> kl_core::Runtime {
        match r {
            RuntimeName::Python => kl_core::Runtime::Python,
            RuntimeName::Node => kl_core::Runtime::Node,
            RuntimeName::Go => kl_core::Runtime::Go,
        }
    }
}

/// An environment variable: a `value`, or a key of a Secret in the namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SecretKeyRef {
    /// The Secret's name.
    pub name: String,
    pub key: String,
}

/// Per-instance resources, requests equal to limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// `250m`, `0.5`, `2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// `256Mi`, `1Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Request deadline: `30s`, `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Requests in flight per instance (Knative's `containerConcurrency`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
}

/// Scaling, in Knative's names (`autoscaling.knative.dev/*`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Scaling {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_scale: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_scale: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_utilization_percentage: Option<f64>,
    /// Knative's `window`: `60s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_window: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panic_window_percentage: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panic_threshold_percentage: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_burst_capacity: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_to_zero_pod_retention_period: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_scale: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_delay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_scale: Option<u32>,
}

/// Events the function receives from its tenant's broker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Eventing {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<TriggerSpec>,
}

/// A Knative Trigger (with `filters`) or a PingSource (with `schedule`), delivering to this
/// function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TriggerSpec {
    pub name: String,
    /// Knative's dialects, one per entry, all must hold: `[{exact: {type: com.example.created}},
    /// {suffix: {subject: .png}}]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<BTreeMap<String, BTreeMap<String, String>>>,
    /// Cron, five fields or `@hourly`, evaluated in UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Body of each ping (schedule only), sent as `application/json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

/// What the operator last observed and did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LambdaFunctionStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The image serving, by digest when the build reported one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The build Job of the current source, in the build namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_job: Option<String>,
}

/// A condition in Kubernetes' usual shape: `Ready` and `Built`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When `status` last changed (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}
