//! A tenant's settings (DESIGN §4): quotas, per-instance limits, rate limit, egress
//! allow-list; and the pure admission check every quota goes through.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::quantity::{ByteQuantity, CpuQuantity};
use crate::scheduling::PriorityClass;
use crate::spec::SpecLimits;

/// Limits on what one tenant may hold or run at once. Absent fields take the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Quotas {
    /// Functions the tenant may have.
    pub functions: u32,
    /// Instances running at once, across all its functions.
    pub instances: u32,
    /// Total CPU of its running instances.
    pub cpu: CpuQuantity,
    /// Total memory of its running instances.
    pub memory: ByteQuantity,
    /// Builds the tenant may run at once.
    pub concurrent_builds: u32,
    /// Bytes of uploaded source kept for its revisions.
    pub storage: ByteQuantity,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            functions: 50,
            instances: 20,
            cpu: CpuQuantity(4000),
            memory: ByteQuantity(8 << 30),
            concurrent_builds: 2,
            storage: ByteQuantity(5 << 30),
        }
    }
}

/// Per-instance defaults and bounds, with Kubernetes LimitRange semantics: defaults fill what
/// a function leaves unset, then the result is checked against min and max. They narrow the
/// platform's own limits, never widen them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct InstanceLimits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_memory: Option<ByteQuantity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_memory: Option<ByteQuantity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<ByteQuantity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_cpu: Option<CpuQuantity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_cpu: Option<CpuQuantity>,
    /// Default timeout, e.g. `30s`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_timeout: Option<String>,
}

/// Why a tenant's instance limits cannot apply.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LimitsError {
    #[error(transparent)]
    Quantity(#[from] crate::QuantityError),
    /// A bound lies outside the platform's, or a default outside its bounds.
    #[error("limits.{field} {value} must lie between {min} and {max}")]
    OutOfRange {
        field: &'static str,
        value: String,
        min: String,
        max: String,
    },
}

impl InstanceLimits {
    /// The platform's limits narrowed by these; refuses bounds the platform does not allow
    /// and defaults outside the resulting bounds.
    pub fn apply_to(&self, platform: &SpecLimits) -> Result<SpecLimits, LimitsError> {
        use crate::quantity::{format_cpu, format_duration, format_memory, parse_duration};
        let mut out = platform.clone();
        let mem = |field, value: u64, min, max| within(field, value, min, max, format_memory);
        if let Some(v) = self.min_memory {
            out.min_memory_bytes = mem(
                "minMemory",
                v.0,
                platform.min_memory_bytes,
                platform.max_memory_bytes,
            )?;
        }
        if let Some(v) = self.max_memory {
            out.max_memory_bytes = mem("maxMemory", v.0, out.min_memory_bytes, platform.max_memory_bytes)?;
        }
        out.default_memory_bytes = match self.default_memory {
            Some(v) => mem("defaultMemory", v.0, out.min_memory_bytes, out.max_memory_bytes)?,
            None => platform
                .default_memory_bytes
                .clamp(out.min_memory_bytes, out.max_memory_bytes),
        };
        if let Some(v) = self.max_cpu {
            out.max_cpu_millis = within(
                "maxCpu",
                v.0,
                platform.min_cpu_millis,
                platform.max_cpu_millis,
                format_cpu,
            )?;
        }
        out.default_cpu_millis = match self.default_cpu {
            Some(v) => within(
                "defaultCpu",
                v.0,
                out.min_cpu_millis,
                out.max_cpu_millis,
                format_cpu,
            )?,
            None => platform
                .default_cpu_millis
                .clamp(out.min_cpu_millis, out.max_cpu_millis),
        };
        if let Some(v) = &self.max_timeout {
            out.max_timeout_ms = within(
                "maxTimeout",
                parse_duration(v)?,
                1,
                platform.max_timeout_ms,
                format_duration,
            )?;
        }
        out.default_timeout_ms = match &self.default_timeout {
            Some(v) => within(
                "defaultTimeout",
                parse_duration(v)?,
                1,
                out.max_timeout_ms,
                format_duration,
            )?,
            None => platform.default_timeout_ms.min(out.max_timeout_ms),
        };
        Ok(out)
    }
}

fn within(
    field: &'static str,
    value: u64,
    min: u64,
    max: u64,
    format: fn(u64) -> String,
) -> Result<u64, LimitsError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(LimitsError::OutOfRange {
            field,
            value: format(value),
            min: format(min),
            max: format(max),
        })
    }
}

/// A request rate: `per_second` sustained, up to `burst` at once (GCRA).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateSpec {
    pub per_second: u32,
    /// Requests allowed back to back; defaults to `per_second`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

impl RateSpec {
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or(self.per_second).max(1)
    }
}

/// A tenant's settings, as stored and as written in `kl apply` files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct TenantSpec {
    /// The highest class its functions may use, and their default.
    pub priority: PriorityClass,
    /// Its weight in the fair share of capacity and build slots within its class.
    pub weight: u32,
    pub quotas: Quotas,
    /// Per-instance defaults and bounds.
    pub limits: InstanceLimits,
    /// Invocations per second across the tenant's functions; unlimited when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateSpec>,
    /// Hosts its functions may reach through the egress proxy; empty denies all egress.
    pub egress: Vec<String>,
    /// What it may spend per period, with alert thresholds and an optional hard cap; no
    /// budget when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<crate::budget::Budget>,
}

impl Default for TenantSpec {
    fn default() -> TenantSpec {
        TenantSpec {
            priority: PriorityClass::default(),
            weight: 1,
            quotas: Quotas::default(),
            limits: InstanceLimits::default(),
            rate_limit: None,
            egress: Vec::new(),
            budget: None,
        }
    }
}

impl TenantSpec {
    /// The bounds its functions resolve with: the platform's, narrowed by its instance limits
    /// and capped at its priority class.
    pub fn spec_limits(&self, platform: &SpecLimits) -> Result<SpecLimits, LimitsError> {
        let mut limits = self.limits.apply_to(platform)?;
        limits.max_priority = limits.max_priority.min(self.priority);
        Ok(limits)
    }
}

/// The quotas admission checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    Functions,
    Instances,
    Cpu,
    Memory,
    ConcurrentBuilds,
    Storage,
    /// Secrets per tenant (a platform limit, not part of the tenant's spec).
    Secrets,
}

impl Quota {
    pub fn as_str(self) -> &'static str {
        match self {
            Quota::Functions => "functions",
            Quota::Instances => "instances",
            Quota::Cpu => "cpu",
            Quota::Memory => "memory",
            Quota::ConcurrentBuilds => "concurrent builds",
            Quota::Storage => "storage",
            Quota::Secrets => "secrets",
        }
    }

    /// Whether waiting can help (a build finishes, an instance stops) rather than a change
    /// of quota. Transient refusals answer 429, hard ones 403.
    pub fn is_transient(self) -> bool {
        !matches!(self, Quota::Functions | Quota::Storage | Quota::Secrets)
    }

    fn format(self, amount: u64) -> String {
        match self {
            Quota::Cpu => crate::quantity::format_cpu(amount),
            Quota::Memory | Quota::Storage => crate::quantity::format_memory(amount),
            _ => amount.to_string(),
        }
    }

    fn hint(self) -> &'static str {
        match self {
            Quota::Functions => "delete a function or ask a platform admin to raise the quota",
            Quota::Storage => "delete functions or ask a platform admin to raise the quota",
            Quota::ConcurrentBuilds => "retry when a build finishes",
            Quota::Secrets => "delete a secret you no longer use",
            Quota::Instances | Quota::Cpu | Quota::Memory => {
                "retry when an instance stops, or ask a platform admin to raise the quota"
            }
        }
    }
}

/// A quota that an admission would exceed. Its message names the quota, the limit, the
/// current use and what was asked for, and says what to do.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "tenant {tenant:?} is at its {} quota ({} of {} in use, {} more requested); {}",
    quota.as_str(),
    quota.format(*used),
    quota.format(*limit),
    quota.format(*requested),
    quota.hint()
)]
pub struct QuotaExceeded {
    pub tenant: String,
    pub quota: Quota,
    pub limit: u64,
    pub used: u64,
    pub requested: u64,
}

impl QuotaExceeded {
    pub fn is_transient(&self) -> bool {
        self.quota.is_transient()
    }
}

/// Admits `requested` more of `quota` when `used + requested` stays within `limit`.
pub fn admit(tenant: &str, quota: Quota, used: u64, requested: u64, limit: u64) -> Result<(), QuotaExceeded> {
    if used.checked_add(requested).is_some_and(|total| total <= limit) {
        return Ok(());
    }
    Err(QuotaExceeded {
        tenant: tenant.to_owned(),
        quota,
        limit,
        used,
        requested,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_within_the_limit_only() {
        assert!(admit("t", Quota::Functions, 0, 1, 1).is_ok());
        let err = admit("t", Quota::Functions, 1, 1, 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tenant \"t\" is at its functions quota (1 of 1 in use, 1 more requested); delete a function or ask a platform admin to raise the quota"
        );
        assert!(!err.is_transient());
        assert!(
            admit("t", Quota::ConcurrentBuilds, 2, 1, 2)
                .unwrap_err()
                .is_transient()
        );
        assert!(
            admit("t", Quota::Functions, 0, 1, 0).is_err(),
            "a zero quota admits nothing"
        );
        let err = admit("t", Quota::Memory, 7 << 30, 2 << 30, 8 << 30).unwrap_err();
        assert!(
            err.to_string()
                .contains("(7Gi of 8Gi in use, 2Gi more requested)"),
            "{err}"
        );
        assert!(
            admit("t", Quota::Storage, u64::MAX, 1, u64::MAX).is_err(),
            "no overflow"
        );
    }

    proptest::proptest! {
        #[test]
        fn admission_never_exceeds_the_limit(used in 0u64..1000, requested in 0u64..1000, limit in 0u64..1000) {
            let admitted = admit("t", Quota::Cpu, used, requested, limit).is_ok();
            proptest::prop_assert_eq!(admitted, used + requested <= limit);
        }
    }

    #[test]
    fn specs_parse_with_defaults_and_refuse_typos() {
        let spec: TenantSpec =
            serde_json::from_str(r#"{"quotas": {"functions": 3, "concurrentBuilds": 1}}"#).unwrap();
        assert_eq!(spec.quotas.functions, 3);
        assert_eq!(
            spec.quotas.instances,
            Quotas::default().instances,
            "unset quotas take defaults"
        );
        let empty: TenantSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, TenantSpec::default());
        assert!(serde_json::from_str::<TenantSpec>(r#"{"quota": {}}"#).is_err());
        let spec: TenantSpec = serde_json::from_str(
            r#"{"quotas": {"cpu": "1500m", "memory": "2Gi"}, "rateLimit": {"perSecond": 5}}"#,
        )
        .unwrap();
        assert_eq!(spec.quotas.cpu, CpuQuantity(1500));
        assert_eq!(spec.quotas.memory, ByteQuantity(2 << 30));
        assert_eq!(spec.rate_limit.unwrap().burst(), 5);
    }

    #[test]
    fn limits_narrow_the_platform_and_fill_defaults() {
        let platform = SpecLimits::default();
        let limits = InstanceLimits {
            max_memory: Some(ByteQuantity(128 << 20)),
            max_cpu: Some(CpuQuantity(500)),
            default_timeout: Some("5s".into()),
            ..InstanceLimits::default()
        };
        let eff = limits.apply_to(&platform).unwrap();
        assert_eq!(eff.max_memory_bytes, 128 << 20);
        assert_eq!(
            eff.default_memory_bytes,
            128 << 20,
            "the default is clamped into the new bounds"
        );
        assert_eq!(eff.max_cpu_millis, 500);
        assert_eq!(eff.default_cpu_millis, platform.default_cpu_millis.min(500));
        assert_eq!(eff.default_timeout_ms, 5_000);
        assert_eq!(eff.max_timeout_ms, platform.max_timeout_ms);
    }

    #[test]
    fn limits_never_widen_the_platform() {
        let platform = SpecLimits::default();
        let wide = InstanceLimits {
            max_memory: Some(ByteQuantity(platform.max_memory_bytes * 2)),
            ..InstanceLimits::default()
        };
        let err = wide.apply_to(&platform).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("limits.maxMemory 32Gi must lie between"),
            "{err}"
        );
        let bad_default = InstanceLimits {
            max_memory: Some(ByteQuantity(64 << 20)),
            default_memory: Some(ByteQuantity(128 << 20)),
            ..InstanceLimits::default()
        };
        assert!(bad_default.apply_to(&platform).is_err());
    }
}
