//! Objects as one YAML stream for GitOps (`kl export k8s`): deterministic, so the same desired
//! state always gives byte-identical output and a Git diff shows only real changes.

use crate::{Object, RenderError};

/// Where a kind goes in the stream: what others depend on first (namespaces and priority
/// classes before what lives in or refers to them), so `kubectl apply -f` of the whole file
/// succeeds in one pass.
pub fn apply_order(object: &Object) -> u8 {
    match object {
        Object::Namespace(_) => 0,
        Object::PriorityClass(_) => 1,
        Object::ResourceQuota(_) => 2,
        Object::LimitRange(_) => 3,
        Object::ConfigMap(_) => 4,
        Object::Secret(_) => 5,
        Object::NetworkPolicy(_) => 6,
        Object::Role(_) => 7,
        Object::RoleBinding(_) => 8,
        Object::Job(_) => 9,
        Object::KnativeService(_) => 10,
        Object::Broker(_) => 11,
        Object::Trigger(_) => 12,
        Object::PingSource(_) => 13,
    }
}

/// Writes `objects` as YAML documents separated by `---`, ordered by kind (in apply order),
/// then namespace, then name; the input order does not matter. Map keys come out sorted, as
/// every map we render is a `BTreeMap` or a struct with a fixed field order.
pub fn to_yaml(objects: &[Object]) -> Result<String, RenderError> {
    let mut sorted: Vec<&Object> = objects.iter().collect();
    sorted.sort_by(|a, b| {
        (apply_order(a), a.namespace(), a.name()).cmp(&(apply_order(b), b.namespace(), b.name()))
    });
    let mut out = String::new();
    for object in sorted {
        let doc = serde_yaml::to_string(object).map_err(|source| RenderError::Yaml {
            kind: object.kind(),
            name: object.name().to_owned(),
            source,
        })?;
        out.push_str("---\n");
        out.push_str(&doc);
    }
    Ok(out)
}
