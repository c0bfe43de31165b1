//! Why a call to the Kubernetes API failed, sorted into the answers a caller acts on differently.

use kl_k8s::RenderError;
use thiserror::Error;

/// A failed call, naming the action and the object (`apply Service kl-acme/hello`).
#[derive(Debug, Error)]
pub enum KubeError {
    /// 409: another field manager owns the fields (apply without force), or the object changed
    /// under an update.
    #[error("{action} {target}: conflict: {message}")]
    Conflict {
        action: &'static str,
        target: String,
        message: String,
    },
    /// 403: the platform's service account lacks the verb on the resource.
    #[error("{action} {target}: forbidden: {message}; grant the platform's service account this verb (RBAC)")]
    Forbidden {
        action: &'static str,
        target: String,
        message: String,
    },
    /// 404: the object, its namespace, or its kind (a CRD that is not installed) does not exist.
    #[error("{action} {target}: not found: {message}")]
    NotFound {
        action: &'static str,
        target: String,
        message: String,
    },
    /// Any other refusal by the API server (422 invalid, 500, …).
    #[error("{action} {target}: the API server answered {code} {reason}: {message}")]
    Refused {
        action: &'static str,
        target: String,
        code: u16,
        reason: String,
        message: String,
    },
    /// The server could not be reached or its answer could not be read.
    #[error("{action} {target}: {source}")]
    Transport {
        action: &'static str,
        target: String,
        #[source]
        source: kube::Error,
    },
    /// A watch ended in an error before the awaited condition held.
    #[error("watching {target}: {source}")]
    Watch {
        target: String,
        #[source]
        source: kube::runtime::watcher::Error,
    },
    /// The object's status is not what the API documents.
    #[error("{target}: unexpected status from the API server: {reason}")]
    Decode { target: String, reason: String },
    /// The objects to apply could not be rendered.
    #[error(transparent)]
    Render(#[from] RenderError),
}

impl KubeError {
    /// Sorts a `kube` error by its HTTP status.
    pub(crate) fn from_kube(action: &'static str, target: String, err: kube::Error) -> KubeError {
        match err {
            kube::Error::Api(status) => {
                let message = status.message.clone();
                match status.code {
                    409 => KubeError::Conflict {
                        action,
                        target,
                        message,
                    },
                    403 => KubeError::Forbidden {
                        action,
                        target,
                        message,
                    },
                    404 => KubeError::NotFound {
                        action,
                        target,
                        message,
                    },
                    code => KubeError::Refused {
                        action,
                        target,
                        code,
                        reason: status.reason.clone(),
                        message,
                    },
                }
            }
            source => KubeError::Transport {
                action,
                target,
                source,
            },
        }
    }

    /// The HTTP status the API server answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            KubeError::Conflict { .. } => Some(409),
            KubeError::Forbidden { .. } => Some(403),
            KubeError::NotFound { .. } => Some(404),
            KubeError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// The error of a watch on `target` that `await_condition` gave up on.
pub(crate) fn watch_failed(target: String) -> impl FnOnce(kube::runtime::wait::Error) -> KubeError {
    move |kube::runtime::wait::Error::ProbeFailed(source)| KubeError::Watch { target, source }
}

/// `Kind namespace/name`, or `Kind name` for a cluster-scoped object.
pub(crate) fn target(kind: &str, namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        format!("{kind} {name}")
    } else {
        format!("{kind} {namespace}/{name}")
    }
}
