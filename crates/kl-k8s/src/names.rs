//! How our names become Kubernetes names and labels. Tenant and function names are already
//! DNS-1035 labels with room for our prefixes and suffixes (`kl_core::name`), so the mapping is a
//! fixed prefix or suffix; everything else we are handed (secret names, trigger names, build ids)
//! is checked here so a bad name fails at render time, not at `kubectl apply`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kl_core::PriorityClass;

use crate::RenderError;

/// Prefix of every tenant namespace: tenant `acme` lives in namespace `kl-acme`. The prefix keeps
/// tenants apart from system namespaces (`kube-system`, `knative-serving`) whatever they are called.
pub const NAMESPACE_PREFIX: &str = "kl-";
/// `app.kubernetes.io/managed-by` value on everything we render, so the reconciler (and a human
/// running `kubectl get -l`) can tell our objects from anyone else's.
pub const MANAGED_BY: &str = "knative-lambda";
/// Label naming the tenant an object belongs to.
pub const LABEL_TENANT: &str = "knative-lambda.io/tenant";
/// Label naming the function an object belongs to.
pub const LABEL_FUNCTION: &str = "knative-lambda.io/function";
/// Label telling function pods (`function`) from build pods (`build`); the network policies
/// select on it.
pub const LABEL_COMPONENT: &str = "knative-lambda.io/component";
/// `LABEL_COMPONENT` value of function pods.
pub const COMPONENT_FUNCTION: &str = "function";
/// `LABEL_COMPONENT` value of build pods.
pub const COMPONENT_BUILD: &str = "build";
/// The label every namespace carries since Kubernetes 1.22; policies select namespaces by it.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The namespace of `tenant`: `kl-<tenant>`. Fails for a name `kl_core` would refuse.
pub fn namespace(tenant: &str) -> Result<String, RenderError> {
    kl_core::validate_tenant_name(tenant)?;
    Ok(format!("{NAMESPACE_PREFIX}{tenant}"))
}

/// The Kubernetes Secret of tenant secret `name`: `kl-secret-<name>`, prefixed so that it
/// cannot collide with the Secrets the platform makes itself (pull and object-store
/// credentials).
pub fn secret(name: &str) -> Result<String, RenderError> {
    kl_core::validate_secret_name(name)?;
    Ok(format!("kl-secret-{name}"))
}

/// The PriorityClass our class maps to: `kl-high`, `kl-medium`, `kl-low`, `kl-best-effort`.
/// Prefixed because PriorityClasses are cluster-wide and `high` is a likely name to collide with.
pub fn priority_class(class: PriorityClass) -> String {
    format!("kl-{}", class.as_str())
}

/// The Knative revision name of a function's revision `n`: `hello-00003`. Knative requires
/// revision names to start with the Service name and a dash; five digits keep them sortable.
pub fn revision(function: &str, n: u32) -> String {
    format!("{function}-{n:05}")
}

/// Checks a DNS-1123 label (Job, Trigger, Role names; at most 63 characters): lowercase
/// alphanumerics and `-`, starting and ending with an alphanumeric.
pub fn check_label(kind: &'static str, name: &str) -> Result<(), RenderError> {
    let reason = if name.is_empty() {
        Some("it is empty".to_owned())
    } else if name.len() > 63 {
        Some(format!("it is {} characters long; the limit is 63", name.len()))
    } else if !is_label(name) {
        Some("use lowercase letters, digits and '-', starting and ending with a letter or digit".to_owned())
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(RenderError::InvalidName {
            kind,
            name: name.to_owned(),
            reason,
        }),
    }
}

/// Checks a DNS-1123 subdomain (Secret names; at most 253 characters): dot-separated labels.
pub fn check_subdomain(kind: &'static str, name: &str) -> Result<(), RenderError> {
    if !name.is_empty() && name.len() <= 253 && name.split('.').all(is_label) {
        return Ok(());
    }
    Err(RenderError::InvalidName {
        kind,
        name: name.to_owned(),
        reason: "use at most 253 lowercase letters, digits, '-' and '.', each dot-separated part \
                 starting and ending with a letter or digit"
            .to_owned(),
    })
}

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// The labels of an object of `tenant` (and of `function`, when it belongs to one).
pub(crate) fn labels(tenant: Option<&str>, function: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([("app.kubernetes.io/managed-by".to_owned(), MANAGED_BY.to_owned())]);
    if let Some(t) = tenant {
        labels.insert(LABEL_TENANT.to_owned(), t.to_owned());
    }
    if let Some(f) = function {
        labels.insert(LABEL_FUNCTION.to_owned(), f.to_owned());
        labels.insert("app.kubernetes.io/name".to_owned(), f.to_owned());
    }
    labels
}

/// Metadata of a namespaced object of `tenant`.
pub(crate) fn meta(name: &str, namespace: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        labels: Some(labels),
        ..ObjectMeta::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_map_to_prefixed_namespaces_within_63_characters() {
        assert_eq!(namespace("acme").unwrap(), "kl-acme");
        let longest = "a".repeat(kl_core::name::MAX_TENANT_NAME);
        assert!(namespace(&longest).unwrap().len() <= 63);
        assert!(matches!(namespace("Acme"), Err(RenderError::Name(_))));
    }

    #[test]
    fn revisions_are_prefixed_by_the_service_and_fit_a_label() {
        assert_eq!(revision("hello", 3), "hello-00003");
        let longest = "f".repeat(kl_core::name::MAX_FUNCTION_NAME);
        check_label("revision", &revision(&longest, 99_999)).unwrap();
    }

    #[test]
    fn labels_and_subdomains_follow_dns_1123() {
        for ok in ["a", "build-1", "0abc"] {
            check_label("job", ok).unwrap();
        }
        for bad in ["", "-a", "a-", "A", "a_b", &"a".repeat(64)] {
            assert!(check_label("job", bad).is_err(), "{bad:?}");
        }
        check_subdomain("secret", "registry.push-creds").unwrap();
        assert!(check_subdomain("secret", "a..b").is_err());
        assert!(check_subdomain("secret", "Creds").is_err());
    }

    #[test]
    fn priority_classes_are_prefixed() {
        assert_eq!(priority_class(PriorityClass::BestEffort), "kl-best-effort");
    }
}
