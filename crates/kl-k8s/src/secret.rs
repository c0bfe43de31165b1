//! A tenant secret as a Kubernetes Secret (type `Opaque`) in the tenant's namespace, named
//! [`crate::names::secret`]; the Knative Service references its keys ([`crate::SecretEnv`])
//! rather than copying values. Rendered with values only when the platform applies it to a
//! cluster, never into exported YAML.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use crate::RenderError;
use crate::names;

/// Renders secret `name` of `tenant` holding `data` (key → value). Fails on a name or key
/// that kl or Kubernetes would refuse; the error never carries a value.
pub fn render_secret(
    tenant: &str,
    name: &str,
    data: &BTreeMap<String, String>,
) -> Result<Secret, RenderError> {
    let ns = names::namespace(tenant)?;
    let secret_name = names::secret(name)?;
    for key in data.keys() {
        let valid = !key.is_empty()
            && key.len() <= 253
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(RenderError::InvalidName {
                kind: "secret key",
                name: key.clone(),
                reason: "use letters, digits, '-', '_' and '.'".to_owned(),
            });
        }
    }
    Ok(Secret {
        metadata: names::meta(&secret_name, &ns, names::labels(Some(tenant), None)),
        type_: Some("Opaque".to_owned()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.clone(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_lives_in_the_tenant_namespace_under_its_prefixed_name() {
        let data = BTreeMap::from([("PASSWORD".to_owned(), "hunter2".to_owned())]);
        let secret = render_secret("acme", "db", &data).unwrap();
        assert_eq!(secret.metadata.name.as_deref(), Some("kl-secret-db"));
        assert_eq!(secret.metadata.namespace.as_deref(), Some("kl-acme"));
        assert_eq!(secret.type_.as_deref(), Some("Opaque"));
        assert_eq!(secret.data.unwrap()["PASSWORD"].0, b"hunter2");
    }

    #[test]
    fn bad_names_and_keys_are_refused_without_the_value() {
        let data = |k: &str| BTreeMap::from([(k.to_owned(), "hunter2".to_owned())]);
        assert!(render_secret("acme", "Bad_Name", &data("K")).is_err());
        let err = render_secret("acme", "db", &data("a/b")).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
