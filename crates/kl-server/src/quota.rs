//! Per-tenant build slots: the concurrent-builds quota, admitted atomically in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kl_core::{Quota, QuotaExceeded, admit};

/// Builds queued or running, by tenant.
#[derive(Debug, Clone, Default)]
pub(crate) struct TenantBuilds(Arc<Mutex<HashMap<String, u64>>>);

/// One claimed build slot; released when dropped (the build ended, whatever its outcome).
#[derive(Debug)]
pub(crate) struct BuildClaim {
    builds: TenantBuilds,
    tenant: String,
}

impl TenantBuilds {
    /// Claims a slot, refusing past `limit`; `None` claims unconditionally (builds re-queued
    /// after a restart were admitted before it).
    pub(crate) fn claim(&self, tenant: &str, limit: Option<u32>) -> Result<BuildClaim, QuotaExceeded> {
        let mut counts = self.0.lock().expect("build counts lock");
        let used = counts.get(tenant).copied().unwrap_or(0);
        if let Some(limit) = limit {
            admit(tenant, Quota::ConcurrentBuilds, used, 1, limit.into())?;
        }
        counts.insert(tenant.to_owned(), used + 1);
        Ok(BuildClaim {
            builds: self.clone(),
            tenant: tenant.to_owned(),
        })
    }

    pub(crate) fn running(&self, tenant: &str) -> u64 {
        self.0
            .lock()
            .expect("build counts lock")
            .get(tenant)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for BuildClaim {
    fn drop(&mut self) {
        let mut counts = self.builds.0.lock().expect("build counts lock");
        if let Some(n) = counts.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_bounded_per_tenant_and_released_on_drop() {
        let builds = TenantBuilds::default();
        let a1 = builds.claim("a", Some(2)).unwrap();
        let _a2 = builds.claim("a", Some(2)).unwrap();
        let err = builds.claim("a", Some(2)).unwrap_err();
        assert!(err.is_transient());
        assert_eq!((err.used, err.limit), (2, 2));
        assert!(builds.claim("b", Some(2)).is_ok(), "tenants do not share slots");
        drop(a1);
        assert_eq!(builds.running("a"), 1);
        assert!(builds.claim("a", Some(2)).is_ok());
        assert!(
            builds.claim("a", None).is_ok(),
            "re-queued builds are always admitted"
        );
    }

    #[test]
    fn concurrent_claims_never_overshoot() {
        let builds = TenantBuilds::default();
        let admitted: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|_| s.spawn(|| builds.claim("t", Some(3)).ok()))
                .collect();
            handles.into_iter().filter_map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(admitted.len(), 3);
        assert_eq!(builds.running("t"), 3);
    }
}
