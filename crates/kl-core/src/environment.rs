//! Environments of a tenant (`dev`, `staging`, `prod`). Each runs as a tenant of its own,
//! `TENANT-ENV`, so that everything per tenant (quotas, priority, sandbox user, egress,
//! secrets, routes `/fn/TENANT-ENV/FN`) applies to it unchanged; its quotas are a share of its
//! tenant's and its priority class its own, at most the tenant's. Pure: names, shares and the
//! spec an environment runs with.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::name::{NameError, validate_tenant_name};
use crate::quantity::{ByteQuantity, CpuQuantity};
use crate::scheduling::{PriorityClass, PriorityError};
use crate::tenant::{Quotas, TenantSpec};

/// Longest environment name.
pub const MAX_ENVIRONMENT_NAME: usize = 16;

/// What an environment is given: a share of its tenant's quotas and a priority class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvironmentSpec {
    /// Percent of each of the tenant's quotas, 1 to 100; an environment's shares sum to at
    /// most 100.
    pub share: u8,
    /// Its priority class; the tenant's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<PriorityClass>,
}

/// Why an environment was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EnvironmentError {
    /// The environment's name, or the tenant name it makes, is invalid.
    #[error("environment name {name:?} is invalid: {reason}")]
    Name { name: String, reason: String },
    /// A share outside 1..=100.
    #[error("environment share {0}% is out of range: use 1 to 100")]
    ShareRange(u8),
    /// The shares would sum past 100.
    #[error(
        "tenant {tenant:?} has given {given}% of its quotas to environments; {requested}% more would exceed 100%: lower a share or remove an environment"
    )]
    SharesOver {
        tenant: String,
        given: u32,
        requested: u8,
    },
    /// The priority class is above the tenant's.
    #[error(transparent)]
    Priority(#[from] PriorityError),
}

/// The tenant an environment runs as: `TENANT-ENV`. The environment name is a short DNS label,
/// and the whole must be a valid tenant name.
pub fn environment_tenant(tenant: &str, environment: &str) -> Result<String, EnvironmentError> {
    let invalid = |reason: String| EnvironmentError::Name {
        name: environment.to_owned(),
        reason,
    };
    if environment.is_empty()
        || environment.len() > MAX_ENVIRONMENT_NAME
        || !environment.starts_with(|c: char| c.is_ascii_lowercase())
        || !environment.ends_with(|c: char| c.is_ascii_alphanumeric())
        || !environment
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(invalid(format!(
            "use up to {MAX_ENVIRONMENT_NAME} lowercase letters, digits and '-', starting with a letter"
        )));
    }
    let combined = format!("{tenant}-{environment}");
    validate_tenant_name(&combined).map_err(|e: NameError| invalid(e.to_string()))?;
    Ok(combined)
}

/// Checks that `requested` more percent fits beside the shares already `given`.
pub fn check_share(
    tenant: &str,
    given: impl IntoIterator<Item = u8>,
    requested: u8,
) -> Result<(), EnvironmentError> {
    if !(1..=100).contains(&requested) {
        return Err(EnvironmentError::ShareRange(requested));
    }
    let given: u32 = given.into_iter().map(u32::from).sum();
    if given + u32::from(requested) > 100 {
        return Err(EnvironmentError::SharesOver {
            tenant: tenant.to_owned(),
            given,
            requested,
        });
    }
    Ok(())
}

/// `share` percent of `quotas`, rounded down, so that environments whose shares sum to at
/// most 100 never hold more than the tenant together. Concurrent builds are the exception:
/// at least one, or the environment could never build (builds are bounded by the platform's
/// build slots anyway).
pub fn share_of(quotas: &Quotas, share: u8) -> Quotas {
    let part = |n: u64| n * u64::from(share.min(100)) / 100;
    let part32 = |n: u32| part(u64::from(n)) as u32;
    Quotas {
        functions: part32(quotas.functions),
        instances: part32(quotas.instances),
        cpu: CpuQuantity(part(quotas.cpu.0)),
        memory: ByteQuantity(part(quotas.memory.0)),
        concurrent_builds: part32(quotas.concurrent_builds).max(1),
        storage: ByteQuantity(part(quotas.storage.0)),
    }
}

/// The spec an environment's tenant runs with: its tenant's, with a share of the quotas and
/// the environment's priority class (at most the tenant's).
pub fn environment_spec(
    tenant: &TenantSpec,
    environment: &EnvironmentSpec,
) -> Result<TenantSpec, EnvironmentError> {
    Ok(TenantSpec {
        priority: PriorityClass::effective(tenant.priority, environment.priority)?,
        quotas: share_of(&tenant.quotas, environment.share),
        ..tenant.clone()
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn an_environment_runs_as_tenant_dash_environment() {
        assert_eq!(environment_tenant("acme", "prod").unwrap(), "acme-prod");
        for bad in [
            "",
            "Prod",
            "1st",
            "dev-",
            "a_b",
            "a.b",
            "much-too-long-environment",
        ] {
            assert!(environment_tenant("acme", bad).is_err(), "{bad:?}");
        }
        let long_tenant = "a".repeat(38);
        assert!(
            environment_tenant(&long_tenant, "prod").is_err(),
            "the whole is a tenant name"
        );
    }

    #[test]
    fn shares_are_refused_past_one_hundred_percent() {
        assert_eq!(check_share("acme", [30, 20], 50), Ok(()));
        assert_eq!(
            check_share("acme", [30, 20], 51),
            Err(EnvironmentError::SharesOver {
                tenant: "acme".into(),
                given: 50,
                requested: 51
            })
        );
        assert_eq!(check_share("acme", [], 0), Err(EnvironmentError::ShareRange(0)));
        assert_eq!(
            check_share("acme", [], 101),
            Err(EnvironmentError::ShareRange(101))
        );
    }

    #[test]
    fn an_environment_takes_its_share_and_its_own_class() {
        let tenant = TenantSpec {
            priority: PriorityClass::Medium,
            ..TenantSpec::default()
        };
        let prod = environment_spec(
            &tenant,
            &EnvironmentSpec {
                share: 50,
                priority: None,
            },
        )
        .unwrap();
        assert_eq!(prod.quotas.functions, 25);
        assert_eq!(prod.quotas.instances, 10);
        assert_eq!(prod.priority, PriorityClass::Medium);
        let dev = environment_spec(
            &tenant,
            &EnvironmentSpec {
                share: 10,
                priority: Some(PriorityClass::BestEffort),
            },
        )
        .unwrap();
        assert_eq!(dev.priority, PriorityClass::BestEffort);
        assert_eq!(dev.quotas.concurrent_builds, 1, "at least one build");
        let above = EnvironmentSpec {
            share: 10,
            priority: Some(PriorityClass::High),
        };
        assert!(matches!(
            environment_spec(&tenant, &above),
            Err(EnvironmentError::Priority(_))
        ));
    }

    fn quotas() -> impl Strategy<Value = Quotas> {
        (
            0u32..10_000,
            0u32..10_000,
            0u64..1 << 40,
            0u64..1 << 50,
            0u64..1 << 50,
        )
            .prop_map(|(functions, instances, cpu, memory, storage)| Quotas {
                functions,
                instances,
                cpu: CpuQuantity(cpu),
                memory: ByteQuantity(memory),
                concurrent_builds: 2,
                storage: ByteQuantity(storage),
            })
    }

    proptest! {
        /// Environments whose shares were admitted never hold more than their tenant.
        #[test]
        fn admitted_shares_never_exceed_the_tenant(q in quotas(), shares in proptest::collection::vec(1u8..=100, 1..6)) {
            let mut given = Vec::new();
            for share in shares {
                if check_share("t", given.iter().copied(), share).is_ok() {
                    given.push(share);
                }
            }
            prop_assert!(given.iter().map(|s| u32::from(*s)).sum::<u32>() <= 100);
            let parts: Vec<Quotas> = given.iter().map(|s| share_of(&q, *s)).collect();
            prop_assert!(parts.iter().map(|p| u64::from(p.functions)).sum::<u64>() <= u64::from(q.functions));
            prop_assert!(parts.iter().map(|p| u64::from(p.instances)).sum::<u64>() <= u64::from(q.instances));
            prop_assert!(parts.iter().map(|p| p.cpu.0).sum::<u64>() <= q.cpu.0);
            prop_assert!(parts.iter().map(|p| p.memory.0).sum::<u64>() <= q.memory.0);
            prop_assert!(parts.iter().map(|p| p.storage.0).sum::<u64>() <= q.storage.0);
        }

        /// A larger share never gets less, and the whole share is the whole quota.
        #[test]
        fn shares_are_monotone_and_whole_at_one_hundred(q in quotas(), a in 1u8..=100, b in 1u8..=100) {
            let (small, large) = (a.min(b), a.max(b));
            let (s, l) = (share_of(&q, small), share_of(&q, large));
            prop_assert!(s.functions <= l.functions && s.instances <= l.instances);
            prop_assert!(s.cpu.0 <= l.cpu.0 && s.memory.0 <= l.memory.0 && s.storage.0 <= l.storage.0);
            prop_assert_eq!(share_of(&q, 100), q);
        }
    }
}
