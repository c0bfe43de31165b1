//! A whole platform's state as Kubernetes objects, for `kl export k8s`: each tenant's namespace
//! set and Broker, each function's serving revision as a Knative Service, each trigger as a
//! Trigger or PingSource; and, for a full export, the cluster-wide PriorityClasses and build
//! namespace.

use kl_core::{FunctionSpec, TenantSpec};
use kl_events::trigger::TriggerSpec;

use crate::{
    BrokerInput, Object, PlatformSettings, RenderError, ServiceInput, render_broker, render_build_namespace,
    render_knative_service, render_priority_classes, render_tenant, render_trigger_spec,
};

/// A tenant as the control plane holds it.
#[derive(Debug, Clone)]
pub struct TenantState {
    pub name: String,
    pub spec: TenantSpec,
    pub functions: Vec<FunctionState>,
    pub triggers: Vec<(String, TriggerSpec)>,
}

/// A function and the revision serving it.
#[derive(Debug, Clone)]
pub struct FunctionState {
    pub name: String,
    /// The serving revision's number.
    pub revision: u32,
    pub spec: FunctionSpec,
}

/// Where the export puts what the platform's state does not say.
#[derive(Debug, Clone)]
pub struct ExportSettings {
    pub platform: PlatformSettings,
    /// Images are `<registry>/<tenant>/<function>:<revision>`, as the build Jobs push them.
    pub registry: String,
    /// The `RabbitmqBrokerConfig` every tenant's Broker refers to.
    pub rabbitmq_config: String,
    /// Also the cluster-wide objects (PriorityClasses, build namespace).
    pub cluster: bool,
}

/// The image a function's revision is served from.
pub fn image(registry: &str, tenant: &str, function: &str, revision: u32) -> String {
    format!(
        "{}/{tenant}/{function}:{revision:05}",
        registry.trim_end_matches('/')
    )
}

/// Renders every object of `tenants`.
pub fn render_platform(
    tenants: &[TenantState],
    settings: &ExportSettings,
) -> Result<Vec<Object>, RenderError> {
    let mut objects = Vec::new();
    if settings.cluster {
        objects.extend(render_priority_classes());
        objects.extend(render_build_namespace(&settings.platform)?);
    }
    for tenant in tenants {
        objects.extend(render_tenant(&tenant.name, &tenant.spec, &settings.platform)?);
        objects.push(Object::Broker(render_broker(&BrokerInput {
            tenant: &tenant.name,
            rabbitmq_config: &settings.rabbitmq_config,
            delivery: None,
        })?));
        for f in &tenant.functions {
            let image = image(&settings.registry, &tenant.name, &f.name, f.revision);
            objects.push(Object::KnativeService(render_knative_service(&ServiceInput {
                tenant: &tenant.name,
                function: &f.name,
                revision: f.revision,
                spec: &f.spec,
                image: &image,
                secrets: &[],
                pull_secret: None,
                traffic: &[],
            })?));
        }
        for (name, trigger) in &tenant.triggers {
            objects.push(render_trigger_spec(&tenant.name, name, trigger)?);
        }
    }
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_tagged_with_the_revision() {
        assert_eq!(
            image("registry.example.com/kl/", "acme", "hello-world", 3),
            "registry.example.com/kl/acme/hello-world:00003"
        );
    }
}
