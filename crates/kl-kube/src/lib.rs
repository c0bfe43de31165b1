//! knative-lambda against a live Kubernetes API. `kl-k8s` renders the objects as pure functions;
//! this crate applies them (server-side apply, field manager [`FIELD_MANAGER`]), runs and watches
//! build Jobs, reads Knative Services' readiness, deletes what a removed function or tenant
//! leaves, and runs the `LambdaFunction` operator ([`crd`], [`plan`], [`operator`]).
//!
//! A crate of its own so `kl-k8s` keeps no HTTP or TLS stack: `kl export k8s` and the renderers'
//! tests build without `kube`, and only what talks to a cluster pays for it.

pub mod apply;
pub mod build;
pub mod crd;
mod error;
pub mod knative;
pub mod operator;
pub mod plan;

pub use apply::{Applier, FIELD_MANAGER};
pub use build::{BuildOutcome, BuildRun, job_outcome};
pub use crd::{LambdaFunction, LambdaFunctionSpec, LambdaFunctionStatus};
pub use error::KubeError;
pub use knative::{Readiness, ServiceStatus};
pub use kube::Client;
