//! Server-side apply of rendered objects, and deletion when a function or tenant goes away.

use kl_k8s::names::{self, LABEL_FUNCTION};
use kl_k8s::{Object, crd};
use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};

use crate::KubeError;
use crate::error::target;

/// The field manager of every apply: the API server records which fields we own, so a field a
/// human or another controller set is left alone, and one we stop rendering is removed.
pub const FIELD_MANAGER: &str = "knative-lambda";

/// The API resource (group, version, plural) an object is served under.
pub fn api_resource(object: &Object) -> ApiResource {
    use k8s_openapi::api::{batch, core, networking, rbac, scheduling};
    match object {
        Object::Namespace(_) => ApiResource::erase::<core::v1::Namespace>(&()),
        Object::PriorityClass(_) => ApiResource::erase::<scheduling::v1::PriorityClass>(&()),
        Object::ResourceQuota(_) => ApiResource::erase::<core::v1::ResourceQuota>(&()),
        Object::LimitRange(_) => ApiResource::erase::<core::v1::LimitRange>(&()),
        Object::ConfigMap(_) => ApiResource::erase::<core::v1::ConfigMap>(&()),
        Object::Secret(_) => ApiResource::erase::<core::v1::Secret>(&()),
        Object::NetworkPolicy(_) => ApiResource::erase::<networking::v1::NetworkPolicy>(&()),
        Object::Role(_) => ApiResource::erase::<rbac::v1::Role>(&()),
        Object::RoleBinding(_) => ApiResource::erase::<rbac::v1::RoleBinding>(&()),
        Object::Job(_) => ApiResource::erase::<batch::v1::Job>(&()),
        Object::KnativeService(_) => knative(crd::SERVING_V1, "Service", "services"),
        Object::Broker(_) => knative(crd::EVENTING_V1, "Broker", "brokers"),
        Object::Trigger(_) => knative(crd::EVENTING_V1, "Trigger", "triggers"),
        Object::PingSource(_) => knative(crd::SOURCES_V1, "PingSource", "pingsources"),
    }
}

/// A Knative kind's resource; `api_version` is `group/version`.
pub(crate) fn knative(api_version: &str, kind: &str, plural: &str) -> ApiResource {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    ApiResource {
        group: group.to_owned(),
        version: version.to_owned(),
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        plural: plural.to_owned(),
    }
}

/// Applies objects to one cluster.
#[derive(Clone)]
pub struct Applier {
    client: Client,
}

impl Applier {
    pub fn new(client: Client) -> Applier {
        Applier { client }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Server-side apply of one object, forcing ownership of the fields we render: the platform
    /// is their source of truth, so a conflicting manager's value is replaced, not kept.
    /// Returns the object as the server stored it.
    pub async fn apply(&self, object: &Object) -> Result<DynamicObject, KubeError> {
        let resource = api_resource(object);
        let api = self.api(&resource, object.namespace());
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(object.name(), &params, &Patch::Apply(object))
            .await
            .map_err(|e| {
                KubeError::from_kube(
                    "apply",
                    target(object.kind(), object.namespace(), object.name()),
                    e,
                )
            })
    }

    /// Applies objects in dependency order (namespaces and priority classes first, as
    /// `kl_k8s::to_yaml` writes them), stopping at the first failure.
    pub async fn apply_all(&self, objects: &[Object]) -> Result<(), KubeError> {
        let mut sorted: Vec<&Object> = objects.iter().collect();
        sorted.sort_by_key(|o| kl_k8s::yaml::apply_order(o));
        for object in sorted {
            self.apply(object).await?;
        }
        Ok(())
    }

    /// Removes a function's Knative Service and the Triggers and PingSources delivering to it.
    /// Already absent is success, so a retried removal completes.
    pub async fn delete_function(&self, tenant: &str, function: &str) -> Result<(), KubeError> {
        self.delete_service(tenant, function).await?;
        self.delete_event_sources(tenant, function).await
    }

    /// Removes a function's Knative Service (and with it its revisions). Already absent is
    /// success.
    pub async fn delete_service(&self, tenant: &str, function: &str) -> Result<(), KubeError> {
        let ns = names::namespace(tenant)?;
        let service = knative(crd::SERVING_V1, "Service", "services");
        let api = self.api(&service, &ns);
        match api.delete(function, &DeleteParams::foreground()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(e) => Err(KubeError::from_kube(
                "delete",
                target("Service", &ns, function),
                e,
            )),
        }
    }

    /// Removes the Triggers and PingSources delivering to a function.
    async fn delete_event_sources(&self, tenant: &str, function: &str) -> Result<(), KubeError> {
        let ns = names::namespace(tenant)?;
        let selector = ListParams::default().labels(&format!("{LABEL_FUNCTION}={function}"));
        for resource in [
            knative(crd::EVENTING_V1, "Trigger", "triggers"),
            knative(crd::SOURCES_V1, "PingSource", "pingsources"),
        ] {
            let api = self.api(&resource, &ns);
            api.delete_collection(&DeleteParams::default(), &selector)
                .await
                .map_err(|e| {
                    KubeError::from_kube(
                        "delete",
                        format!("{}s of function {function} in {ns}", resource.kind),
                        e,
                    )
                })?;
        }
        Ok(())
    }

    /// Removes trigger `name` of a tenant in whichever kind it was rendered as (Trigger or
    /// PingSource), but not `except`, the kind it was just applied as: a trigger may change
    /// from one to the other. Already absent is success.
    pub async fn delete_trigger(
        &self,
        tenant: &str,
        name: &str,
        except: Option<&str>,
    ) -> Result<(), KubeError> {
        let ns = names::namespace(tenant)?;
        for resource in [
            knative(crd::EVENTING_V1, "Trigger", "triggers"),
            knative(crd::SOURCES_V1, "PingSource", "pingsources"),
        ] {
            if except == Some(resource.kind.as_str()) {
                continue;
            }
            match self
                .api(&resource, &ns)
                .delete(name, &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => {
                    return Err(KubeError::from_kube(
                        "delete",
                        target(&resource.kind, &ns, name),
                        e,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Removes a tenant: its namespace, and with it everything in it. Already absent is success.
    pub async fn delete_tenant(&self, tenant: &str) -> Result<(), KubeError> {
        let ns = names::namespace(tenant)?;
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        match api.delete(&ns, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(e) => Err(KubeError::from_kube("delete", target("Namespace", "", &ns), e)),
        }
    }

    fn api(&self, resource: &ApiResource, namespace: &str) -> Api<DynamicObject> {
        if namespace.is_empty() {
            Api::all_with(self.client.clone(), resource)
        } else {
            Api::namespaced_with(self.client.clone(), namespace, resource)
        }
    }
}
