//! Names of tenants and functions. They become Kubernetes namespaces, Knative Service names and
//! host labels, so they follow DNS-1035 labels, with lengths that leave room for the suffixes we
//! add (`-00001` for revisions, `kl-` for namespaces).

use thiserror::Error;

/// Longest function name: 63 (a DNS label) minus room for a revision suffix.
pub const MAX_FUNCTION_NAME: usize = 48;
/// Longest tenant name: 63 minus room for a namespace prefix.
pub const MAX_TENANT_NAME: usize = 40;
/// Longest secret name: 63 minus room for the Kubernetes Secret's `kl-secret-` prefix.
pub const MAX_SECRET_NAME: usize = 48;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    /// The name is empty.
    #[error("{kind} name must not be empty")]
    Empty { kind: &'static str },
    /// The name is longer than allowed.
    #[error("{kind} name {name:?} is {len} characters long; the limit is {max}")]
    TooLong {
        kind: &'static str,
        name: String,
        len: usize,
        max: usize,
    },
    /// The name breaks the DNS-label rule.
    #[error(
        "{kind} name {name:?} is invalid: use lowercase letters, digits and '-', start with a letter and end with a letter or digit"
    )]
    Invalid { kind: &'static str, name: String },
}

/// Checks a function name (DNS-1035 label, at most [`MAX_FUNCTION_NAME`] characters).
pub fn validate_function_name(name: &str) -> Result<(), NameError> {
    validate_label("function", name, MAX_FUNCTION_NAME)
}

/// Checks a tenant name (DNS-1035 label, at most [`MAX_TENANT_NAME`] characters).
pub fn validate_tenant_name(name: &str) -> Result<(), NameError> {
    validate_label("tenant", name, MAX_TENANT_NAME)
}

/// Checks a secret name (DNS-1035 label, at most [`MAX_SECRET_NAME`] characters): it names a
/// folder in the sandbox and a Kubernetes Secret.
pub fn validate_secret_name(name: &str) -> Result<(), NameError> {
    validate_label("secret", name, MAX_SECRET_NAME)
}

fn validate_label(kind: &'static str, name: &str, max: usize) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if name.len() > max {
        return Err(NameError::TooLong {
            kind,
            name: name.to_owned(),
            len: name.len(),
            max,
        });
    }
    let bytes = name.as_bytes();
    let valid = bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if valid {
        Ok(())
    } else {
        Err(NameError::Invalid {
            kind,
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "hello", "hello-world-2", "a1"] {
            assert_eq!(validate_function_name(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_bad_names_with_the_reason() {
        for bad in [
            "Hello", "1abc", "-a", "a-", "a_b", "a.b", "a b", "../x", "é", "a/b",
        ] {
            assert!(
                matches!(validate_function_name(bad), Err(NameError::Invalid { .. })),
                "{bad}"
            );
        }
        assert_eq!(validate_tenant_name(""), Err(NameError::Empty { kind: "tenant" }));
        let long = "a".repeat(MAX_FUNCTION_NAME + 1);
        assert!(matches!(
            validate_function_name(&long),
            Err(NameError::TooLong { .. })
        ));
        assert!(validate_function_name(&"a".repeat(MAX_FUNCTION_NAME)).is_ok());
    }

    proptest! {
        #[test]
        fn valid_names_are_safe_path_and_host_components(name in "\\PC{0,60}") {
            if validate_function_name(&name).is_ok() {
                prop_assert!(!name.contains('/') && !name.contains('.'));
                prop_assert!(name.len() <= MAX_FUNCTION_NAME);
                prop_assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
            }
        }

        #[test]
        fn generated_labels_are_accepted(name in "[a-z]([a-z0-9-]{0,30}[a-z0-9])?") {
            prop_assert!(validate_tenant_name(&name).is_ok());
        }
    }
}
