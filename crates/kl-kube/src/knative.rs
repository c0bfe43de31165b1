//! A Knative Service's readiness, URL and traffic, read from its `status`; and moving its
//! traffic to a revision it already has.

use kl_k8s::crd::{self, TrafficEntry};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::wait::await_condition;
use serde::Deserialize;

use crate::apply::knative;
use crate::error::{target, watch_failed};
use crate::{Applier, FIELD_MANAGER, KubeError};

/// The Service's `Ready` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Knative has not (yet) reconciled the current generation.
    Unknown,
    Ready,
    /// Not ready, with Knative's reason and message (`RevisionFailed`, `ContainerMissing`, …).
    NotReady {
        reason: String,
        message: String,
    },
}

/// What Knative reports about a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceStatus {
    pub readiness: Readiness,
    /// Its address (`http://hello.kl-acme.svc.cluster.local`) once routed.
    pub url: Option<String>,
    pub latest_ready_revision: Option<String>,
    /// Where Knative routes requests: revision name and percent, as `status.traffic` reports.
    pub traffic: Vec<(String, u32)>,
}

impl ServiceStatus {
    /// Whether Knative routes every request to `revision`.
    pub fn routes_all_to(&self, revision: &str) -> bool {
        let to = |name: &str| {
            self.traffic
                .iter()
                .filter(|(r, _)| r == name)
                .map(|(_, p)| p)
                .sum::<u32>()
        };
        to(revision) == 100
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawStatus {
    #[serde(default)]
    observed_generation: Option<i64>,
    #[serde(default)]
    conditions: Vec<RawCondition>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    latest_ready_revision_name: Option<String>,
    #[serde(default)]
    traffic: Vec<RawTraffic>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTraffic {
    #[serde(default)]
    revision_name: Option<String>,
    #[serde(default)]
    percent: Option<u32>,
}

#[derive(Deserialize)]
struct RawCondition {
    #[serde(rename = "type")]
    type_: String,
    status: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// The status of a Service object as the API returned it. `Ready` counts only once Knative has
/// observed the object's current generation: before that it describes the previous spec.
pub fn service_status(object: &DynamicObject) -> Result<ServiceStatus, String> {
    let Some(raw) = object.data.get("status") else {
        return Ok(ServiceStatus {
            readiness: Readiness::Unknown,
            url: None,
            latest_ready_revision: None,
            traffic: Vec::new(),
        });
    };
    let raw: RawStatus = serde_json::from_value(raw.clone()).map_err(|e| e.to_string())?;
    let current = raw.observed_generation.is_some() && raw.observed_generation == object.metadata.generation;
    let ready = raw.conditions.iter().find(|c| c.type_ == "Ready");
    let readiness = match ready {
        Some(c) if current && c.status == "True" => Readiness::Ready,
        Some(c) if current && c.status == "False" => Readiness::NotReady {
            reason: c.reason.clone().unwrap_or_default(),
            message: c.message.clone().unwrap_or_default(),
        },
        _ => Readiness::Unknown,
    };
    Ok(ServiceStatus {
        readiness,
        url: raw.url,
        latest_ready_revision: raw.latest_ready_revision_name,
        traffic: raw
            .traffic
            .into_iter()
            .filter_map(|t| Some((t.revision_name?, t.percent.unwrap_or(0))))
            .collect(),
    })
}

impl Applier {
    /// The status of Knative Service `ns/name`, or `None` if there is no such Service.
    pub async fn knative_service_status(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<ServiceStatus>, KubeError> {
        let api: Api<DynamicObject> = Api::namespaced_with(self.client().clone(), ns, &service_resource());
        let object = api
            .get_opt(name)
            .await
            .map_err(|e| KubeError::from_kube("read", target("Service", ns, name), e))?;
        object
            .map(|o| {
                service_status(&o).map_err(|reason| KubeError::Decode {
                    target: target("Service", ns, name),
                    reason,
                })
            })
            .transpose()
    }

    /// Watches Knative Service `ns/name` until it is `Ready` for its current spec and routes
    /// every request to `revision` (returning its status), or Knative reports it not ready.
    /// Waits without a deadline of its own: the caller bounds it, since only it knows how long
    /// a rollout may take.
    pub async fn wait_until_serving(
        &self,
        ns: &str,
        name: &str,
        revision: &str,
    ) -> Result<ServiceStatus, KubeError> {
        let api: Api<DynamicObject> = Api::namespaced_with(self.client().clone(), ns, &service_resource());
        let settled = |object: Option<&DynamicObject>| {
            object
                .and_then(|o| service_status(o).ok())
                .is_some_and(|s| match s.readiness {
                    Readiness::Ready => s.routes_all_to(revision),
                    Readiness::NotReady { .. } => true,
                    Readiness::Unknown => false,
                })
        };
        let object = await_condition(api, name, settled)
            .await
            .map_err(watch_failed(target("Service", ns, name)))?
            .ok_or_else(|| KubeError::NotFound {
                action: "watch",
                target: target("Service", ns, name),
                message: "the Service was deleted before it became ready".to_owned(),
            })?;
        service_status(&object).map_err(|reason| KubeError::Decode {
            target: target("Service", ns, name),
            reason,
        })
    }

    /// Whether Knative still has revision `ns/name` (it garbage-collects old ones).
    pub async fn knative_revision_exists(&self, ns: &str, name: &str) -> Result<bool, KubeError> {
        let resource = knative(crd::SERVING_V1, "Revision", "revisions");
        let api: Api<DynamicObject> = Api::namespaced_with(self.client().clone(), ns, &resource);
        let found = api
            .get_opt(name)
            .await
            .map_err(|e| KubeError::from_kube("read", target("Revision", ns, name), e))?;
        Ok(found.is_some())
    }

    /// Replaces Knative Service `ns/name`'s traffic block with `traffic`, leaving its template
    /// alone: how an existing revision serves again. A merge patch, since an apply must carry
    /// the whole template.
    pub async fn set_traffic(&self, ns: &str, name: &str, traffic: &[TrafficEntry]) -> Result<(), KubeError> {
        let api: Api<DynamicObject> = Api::namespaced_with(self.client().clone(), ns, &service_resource());
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        let patch = serde_json::json!({"spec": {"traffic": traffic}});
        api.patch(name, &params, &Patch::Merge(patch))
            .await
            .map_err(|e| KubeError::from_kube("set the traffic of", target("Service", ns, name), e))?;
        Ok(())
    }
}

impl Applier {
    /// Where events for Broker `ns/name` are posted (`status.address.url`), once Knative has
    /// made it ready; `None` before, or without the Broker.
    pub async fn broker_url(&self, ns: &str, name: &str) -> Result<Option<String>, KubeError> {
        let resource = knative(crd::EVENTING_V1, "Broker", "brokers");
        let api: Api<DynamicObject> = Api::namespaced_with(self.client().clone(), ns, &resource);
        let broker = api
            .get_opt(name)
            .await
            .map_err(|e| KubeError::from_kube("read", target("Broker", ns, name), e))?;
        Ok(broker.and_then(|b| {
            b.data
                .pointer("/status/address/url")
                .and_then(|u| u.as_str())
                .map(str::to_owned)
        }))
    }
}

fn service_resource() -> kube::api::ApiResource {
    knative(crd::SERVING_V1, "Service", "services")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(generation: i64, status: serde_json::Value) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": "hello", "namespace": "kl-acme", "generation": generation},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn ready_counts_only_for_the_observed_generation() {
        let status = serde_json::json!({
            "observedGeneration": 2,
            "url": "http://hello.kl-acme.svc.cluster.local",
            "latestReadyRevisionName": "hello-00002",
            "traffic": [{"revisionName": "hello-00002", "percent": 90},
                        {"revisionName": "hello-00001", "percent": 10, "tag": "old"}],
            "conditions": [{"type": "Ready", "status": "True"}],
        });
        let current = service_status(&service(2, status.clone())).unwrap();
        assert!(!current.routes_all_to("hello-00002"), "a 90/10 split");
        let pinned = serde_json::json!({"traffic": [{"revisionName": "hello-00001", "percent": 100}]});
        assert!(
            service_status(&service(2, pinned))
                .unwrap()
                .routes_all_to("hello-00001")
        );
        assert_eq!(current.readiness, Readiness::Ready);
        assert_eq!(
            current.url.as_deref(),
            Some("http://hello.kl-acme.svc.cluster.local")
        );
        assert_eq!(current.latest_ready_revision.as_deref(), Some("hello-00002"));
        assert_eq!(
            service_status(&service(3, status)).unwrap().readiness,
            Readiness::Unknown
        );
    }

    #[test]
    fn a_failed_revision_is_not_ready_with_knatives_reason() {
        let status = serde_json::json!({
            "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": "False", "reason": "RevisionFailed",
                            "message": "image pull failed"}],
        });
        assert_eq!(
            service_status(&service(1, status)).unwrap().readiness,
            Readiness::NotReady {
                reason: "RevisionFailed".into(),
                message: "image pull failed".into()
            }
        );
        let garbled = serde_json::json!({"conditions": "yes"});
        assert!(service_status(&service(1, garbled)).is_err());
    }
}
