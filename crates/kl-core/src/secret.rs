//! Tenant secrets as the platform checks them: names, keys, size limits and the references
//! functions make to them. Pure; the values themselves never appear in an error message, so
//! a refusal can be logged and returned as it is.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::name::{NameError, validate_secret_name};

/// Where secrets mounted as files appear inside an instance: `SECRETS_MOUNT/NAME/KEY`.
pub const SECRETS_MOUNT: &str = "/var/run/secrets/kl";
/// The environment variable that tells a function where its secret files are (the mount in a
/// sandbox, a private folder of the instance without isolation).
pub const SECRETS_DIR_ENV: &str = "KL_SECRETS_DIR";
/// The environment variable that may give the platform's secrets keys to `kl server`; no
/// process the server starts inherits it.
pub const SECRETS_KEY_ENV: &str = "KL_SECRETS_KEY";
/// Longest key name.
pub const MAX_KEY_NAME: usize = 128;

/// What the platform accepts in one secret, and how many a tenant may keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretLimits {
    /// Bytes of one value.
    pub max_value_bytes: usize,
    /// Bytes of all values of one secret together.
    pub max_secret_bytes: usize,
    /// Keys in one secret.
    pub max_keys: usize,
    /// Secrets one tenant keeps.
    pub max_per_tenant: u64,
}

impl Default for SecretLimits {
    /// 64 KiB a value, 1 MiB a secret (Kubernetes' own limit), 64 keys, 100 secrets a tenant.
    fn default() -> SecretLimits {
        SecretLimits {
            max_value_bytes: 64 << 10,
            max_secret_bytes: 1 << 20,
            max_keys: 64,
            max_per_tenant: 100,
        }
    }
}

/// Why a secret, or a reference to one, was refused. Names and keys appear; values never do.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SecretError {
    /// The secret's name is not a DNS label.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A secret holds at least one key.
    #[error("secret {name:?} has no keys: give at least one KEY=VALUE")]
    Empty { name: String },
    /// A key is not an environment variable name.
    #[error(
        "secret {name:?}: key {key:?} is invalid: use letters, digits and '_', not starting with a digit, at most {MAX_KEY_NAME} characters"
    )]
    InvalidKey { name: String, key: String },
    /// Too many keys in one secret.
    #[error("secret {name:?} has {count} keys; the limit is {max}")]
    TooManyKeys { name: String, count: usize, max: usize },
    /// One value is too large.
    #[error("secret {name:?}: the value of {key:?} is {bytes} bytes; the limit is {max} bytes")]
    ValueTooLarge {
        name: String,
        key: String,
        bytes: usize,
        max: usize,
    },
    /// All values together are too large.
    #[error("secret {name:?} holds {bytes} bytes; the limit is {max} bytes")]
    SecretTooLarge { name: String, bytes: usize, max: usize },
    /// A value holds a NUL byte, which no environment variable can carry.
    #[error("secret {name:?}: the value of {key:?} contains a NUL byte")]
    NulByte { name: String, key: String },
    /// A `NAME.KEY` reference does not parse.
    #[error("secret reference {0:?} is invalid: use NAME.KEY, e.g. db.password")]
    InvalidRef(String),
}

/// Checks a secret before it is stored: its name, and each key and value against `limits`.
pub fn check_secret(
    name: &str,
    data: &BTreeMap<String, String>,
    limits: &SecretLimits,
) -> Result<(), SecretError> {
    validate_secret_name(name)?;
    if data.is_empty() {
        return Err(SecretError::Empty {
            name: name.to_owned(),
        });
    }
    if data.len() > limits.max_keys {
        return Err(SecretError::TooManyKeys {
            name: name.to_owned(),
            count: data.len(),
            max: limits.max_keys,
        });
    }
    let mut total = 0usize;
    for (key, value) in data {
        if !is_key(key) {
            return Err(SecretError::InvalidKey {
                name: name.to_owned(),
                key: key.clone(),
            });
        }
        if value.len() > limits.max_value_bytes {
            return Err(SecretError::ValueTooLarge {
                name: name.to_owned(),
                key: key.clone(),
                bytes: value.len(),
                max: limits.max_value_bytes,
            });
        }
        if value.contains('\0') {
            return Err(SecretError::NulByte {
                name: name.to_owned(),
                key: key.clone(),
            });
        }
        total += value.len();
    }
    if total > limits.max_secret_bytes {
        return Err(SecretError::SecretTooLarge {
            name: name.to_owned(),
            bytes: total,
            max: limits.max_secret_bytes,
        });
    }
    Ok(())
}

/// Environment-variable syntax: it becomes one, and a file name.
fn is_key(key: &str) -> bool {
    let mut chars = key.chars();
    key.len() <= MAX_KEY_NAME
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One key of one secret, written `NAME.KEY`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
}

impl FromStr for SecretKeyRef {
    type Err = SecretError;

    fn from_str(s: &str) -> Result<SecretKeyRef, SecretError> {
        let invalid = || SecretError::InvalidRef(s.to_owned());
        let (name, key) = s.split_once('.').ok_or_else(invalid)?;
        if validate_secret_name(name).is_err() || !is_key(key) {
            return Err(invalid());
        }
        Ok(SecretKeyRef {
            name: name.to_owned(),
            key: key.to_owned(),
        })
    }
}

impl TryFrom<String> for SecretKeyRef {
    type Error = SecretError;

    fn try_from(s: String) -> Result<SecretKeyRef, SecretError> {
        s.parse()
    }
}

impl From<SecretKeyRef> for String {
    fn from(r: SecretKeyRef) -> String {
        r.to_string()
    }
}

impl fmt::Display for SecretKeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.name, self.key)
    }
}

/// The secrets a function uses: keys as environment variables, whole secrets as files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretUse {
    /// Environment variable → the secret key it holds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, SecretKeyRef>,
    /// Secrets mounted read-only as files, one per key, under [`SECRETS_MOUNT`]`/NAME/KEY`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
}

impl SecretUse {
    pub fn is_empty(&self) -> bool {
        self.env.is_empty() && self.files.is_empty()
    }

    /// Every secret name used, once each, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .env
            .values()
            .map(|r| r.name.as_str())
            .chain(self.files.iter().map(String::as_str))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Whether the function uses the secret `name`.
    pub fn uses(&self, name: &str) -> bool {
        self.names().contains(&name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn accepts_a_normal_secret() {
        let limits = SecretLimits::default();
        assert_eq!(
            check_secret("db", &data(&[("PASSWORD", "x"), ("_user2", "y")]), &limits),
            Ok(())
        );
    }

    #[test]
    fn refuses_each_bad_input_for_its_reason() {
        let limits = SecretLimits {
            max_value_bytes: 4,
            max_secret_bytes: 6,
            max_keys: 2,
            max_per_tenant: 1,
        };
        let check = |name: &str, pairs: &[(&str, &str)]| check_secret(name, &data(pairs), &limits);
        assert!(matches!(check("Db", &[("A", "1")]), Err(SecretError::Name(_))));
        assert!(matches!(check("db", &[]), Err(SecretError::Empty { .. })));
        for key in ["1A", "A-B", "A.B", "", "É"] {
            assert!(
                matches!(check("db", &[(key, "1")]), Err(SecretError::InvalidKey { .. })),
                "{key:?}"
            );
        }
        assert!(matches!(
            check("db", &[("A", "1"), ("B", "1"), ("C", "1")]),
            Err(SecretError::TooManyKeys { count: 3, .. })
        ));
        assert!(matches!(
            check("db", &[("A", "12345")]),
            Err(SecretError::ValueTooLarge { bytes: 5, .. })
        ));
        assert!(matches!(
            check("db", &[("A", "1234"), ("B", "123")]),
            Err(SecretError::SecretTooLarge { bytes: 7, .. })
        ));
        assert!(matches!(
            check("db", &[("A", "a\0b")]),
            Err(SecretError::NulByte { .. })
        ));
    }

    #[test]
    fn references_parse_and_print_as_name_dot_key() {
        let r: SecretKeyRef = "db.PASSWORD".parse().unwrap();
        assert_eq!((r.name.as_str(), r.key.as_str()), ("db", "PASSWORD"));
        assert_eq!(r.to_string(), "db.PASSWORD");
        for bad in ["db", "db.", ".KEY", "Db.KEY", "db.K-EY", "db.a.b"] {
            assert!(bad.parse::<SecretKeyRef>().is_err(), "{bad}");
        }
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, "\"db.PASSWORD\"");
        assert!(serde_json::from_str::<SecretKeyRef>("\"nope\"").is_err());
    }

    #[test]
    fn a_use_lists_each_secret_once() {
        let used = SecretUse {
            env: BTreeMap::from([
                ("A".to_owned(), "db.X".parse().unwrap()),
                ("B".to_owned(), "api.Y".parse().unwrap()),
            ]),
            files: vec!["db".to_owned(), "tls".to_owned()],
        };
        assert_eq!(used.names(), ["api", "db", "tls"]);
        assert!(used.uses("tls") && !used.uses("other"));
    }

    proptest! {
        /// Refusals are logged and returned: whatever the value, no message repeats it.
        #[test]
        fn no_refusal_repeats_a_value(value in "[ -~]{8,40}\\x00?[ -~]{0,8}", key in "[A-Z]{1,4}|1[A-Z]") {
            let limits = SecretLimits { max_value_bytes: 20, max_secret_bytes: 30, max_keys: 1, max_per_tenant: 1 };
            for pairs in [vec![(key.clone(), value.clone())], vec![(key.clone(), value.clone()), ("Z".into(), value.clone())]] {
                if let Err(e) = check_secret("db", &pairs.into_iter().collect(), &limits) {
                    prop_assert!(!e.to_string().contains(&value), "{e}");
                }
            }
        }
    }
}
