//! A tenant's quotas and their pure admission checks.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Hard limits of one tenant. Absent fields take the platform defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Quotas {
    /// Functions the tenant may have.
    pub functions: u32,
    /// Builds the tenant may run at once.
    pub concurrent_builds: u32,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            functions: 50,
            concurrent_builds: 2,
        }
    }
}

/// A tenant's settings, as stored and as written in `kl apply` files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TenantSpec {
    #[serde(default)]
    pub quotas: Quotas,
}

/// A quota that an admission would exceed. Its message names the quota, the limit and the
/// current use, and says what to do.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("tenant {tenant:?} is at its {quota} quota ({used} of {limit} in use); {hint}")]
pub struct QuotaExceeded {
    pub tenant: String,
    pub quota: &'static str,
    pub limit: u64,
    pub used: u64,
    pub hint: &'static str,
}

impl QuotaExceeded {
    /// Whether waiting can help (a running build finishes) rather than a change of quota.
    pub fn is_transient(&self) -> bool {
        self.quota == "concurrent builds"
    }
}

/// Admits one more of `quota` when `used` is below `limit`.
pub fn admit(tenant: &str, quota: &'static str, used: u64, limit: u64) -> Result<(), QuotaExceeded> {
    if used < limit {
        return Ok(());
    }
    let hint = match quota {
        "functions" => "delete a function or ask a platform admin to raise the quota",
        _ => "retry when one finishes",
    };
    Err(QuotaExceeded {
        tenant: tenant.to_owned(),
        quota,
        limit,
        used,
        hint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_below_the_limit_only() {
        assert!(admit("t", "functions", 0, 1).is_ok());
        let err = admit("t", "functions", 1, 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tenant \"t\" is at its functions quota (1 of 1 in use); delete a function or ask a platform admin to raise the quota"
        );
        assert!(!err.is_transient());
        assert!(admit("t", "concurrent builds", 2, 2).unwrap_err().is_transient());
        assert!(
            admit("t", "functions", 0, 0).is_err(),
            "a zero quota admits nothing"
        );
    }

    #[test]
    fn specs_parse_with_defaults_and_refuse_typos() {
        let spec: TenantSpec =
            serde_json::from_str(r#"{"quotas": {"functions": 3, "concurrentBuilds": 1}}"#).unwrap();
        assert_eq!(spec.quotas.functions, 3);
        let empty: TenantSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, TenantSpec::default());
        assert!(serde_json::from_str::<TenantSpec>(r#"{"quota": {}}"#).is_err());
    }
}
