//! The running-instance quotas (instances, CPU, memory per tenant), admitted atomically:
//! every instance start reserves its share under one lock, so concurrent scale-ups can never
//! overshoot, and the share returns when the instance's slot is gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kl_core::{Quota, QuotaExceeded, Quotas, admit};

/// What one tenant's running instances hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub instances: u64,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

#[derive(Debug, Default)]
struct TenantEntry {
    quotas: Quotas,
    usage: Usage,
}

/// Quotas and usage of every tenant.
#[derive(Debug, Default)]
pub struct Ledger {
    tenants: Mutex<HashMap<String, TenantEntry>>,
}

/// A running instance's share of its tenant's quotas; returned when dropped.
#[derive(Debug)]
pub struct Reservation {
    ledger: Arc<Ledger>,
    tenant: String,
    cpu_millis: u64,
    memory_bytes: u64,
}

impl Ledger {
    /// Sets a tenant's quotas; usage carries over, so lowering a quota below the current use
    /// refuses new instances without stopping running ones.
    pub fn set_quotas(&self, tenant: &str, quotas: Quotas) {
        self.lock().entry(tenant.to_owned()).or_default().quotas = quotas;
    }

    /// What a tenant's running instances hold.
    pub fn usage(&self, tenant: &str) -> Usage {
        self.lock().get(tenant).map(|e| e.usage).unwrap_or_default()
    }

    /// Reserves one instance of `cpu_millis` and `memory_bytes`, or names the quota it would
    /// exceed. Tenants never configured get the default quotas.
    pub fn reserve(
        self: &Arc<Self>,
        tenant: &str,
        cpu_millis: u64,
        memory_bytes: u64,
    ) -> Result<Reservation, QuotaExceeded> {
        let mut tenants = self.lock();
        let entry = tenants.entry(tenant.to_owned()).or_default();
        let (q, u) = (&entry.quotas, entry.usage);
        admit(tenant, Quota::Instances, u.instances, 1, q.instances.into())?;
        admit(tenant, Quota::Cpu, u.cpu_millis, cpu_millis, q.cpu.0)?;
        admit(tenant, Quota::Memory, u.memory_bytes, memory_bytes, q.memory.0)?;
        entry.usage = Usage {
            instances: u.instances + 1,
            cpu_millis: u.cpu_millis + cpu_millis,
            memory_bytes: u.memory_bytes + memory_bytes,
        };
        Ok(Reservation {
            ledger: self.clone(),
            tenant: tenant.to_owned(),
            cpu_millis,
            memory_bytes,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, TenantEntry>> {
        self.tenants.lock().expect("ledger lock")
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(entry) = self.ledger.lock().get_mut(&self.tenant) {
            let u = &mut entry.usage;
            u.instances -= 1;
            u.cpu_millis -= self.cpu_millis;
            u.memory_bytes -= self.memory_bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use kl_core::{ByteQuantity, CpuQuantity};
    use proptest::prelude::*;

    use super::*;

    fn ledger(instances: u32, cpu: u64, memory: u64) -> Arc<Ledger> {
        let ledger = Arc::new(Ledger::default());
        ledger.set_quotas(
            "t",
            Quotas {
                instances,
                cpu: CpuQuantity(cpu),
                memory: ByteQuantity(memory),
                ..Quotas::default()
            },
        );
        ledger
    }

    #[test]
    fn each_quota_refuses_by_name_and_dropping_returns_the_share() {
        let l = ledger(2, 1000, 1 << 30);
        let a = l.reserve("t", 500, 256 << 20).unwrap();
        let b = l.reserve("t", 500, 256 << 20).unwrap();
        assert_eq!(l.reserve("t", 1, 1).unwrap_err().quota, Quota::Instances);
        drop(b);
        assert_eq!(l.reserve("t", 600, 1).unwrap_err().quota, Quota::Cpu);
        assert_eq!(l.reserve("t", 100, 1 << 30).unwrap_err().quota, Quota::Memory);
        drop(a);
        assert_eq!(l.usage("t"), Usage::default());
        assert!(
            l.reserve("other", 100, 1 << 20).is_ok(),
            "tenants do not share quotas"
        );
    }

    #[test]
    fn lowering_a_quota_keeps_running_instances_but_admits_no_more() {
        let l = ledger(3, 4000, 4 << 30);
        let _a = l.reserve("t", 100, 1 << 20).unwrap();
        let _b = l.reserve("t", 100, 1 << 20).unwrap();
        l.set_quotas(
            "t",
            Quotas {
                instances: 1,
                ..Quotas::default()
            },
        );
        assert_eq!(l.usage("t").instances, 2);
        let err = l.reserve("t", 100, 1 << 20).unwrap_err();
        assert_eq!((err.used, err.limit), (2, 1));
    }

    #[test]
    fn concurrent_reservations_never_overshoot() {
        let l = ledger(5, 100_000, 1 << 40);
        let granted: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..32).map(|_| s.spawn(|| l.reserve("t", 10, 10).ok())).collect();
            handles.into_iter().filter_map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(granted.len(), 5);
        assert_eq!(l.usage("t").instances, 5);
    }

    proptest! {
        #[test]
        fn usage_never_exceeds_quotas(ops in proptest::collection::vec((0u64..600, 0u64..(600 << 20), any::<bool>()), 1..60)) {
            let l = ledger(4, 1000, 1 << 30);
            let mut held = Vec::new();
            for (cpu, mem, release) in ops {
                if release && !held.is_empty() {
                    held.remove(0);
                } else if let Ok(r) = l.reserve("t", cpu, mem) {
                    held.push(r);
                }
                let u = l.usage("t");
                prop_assert!(u.instances <= 4 && u.cpu_millis <= 1000 && u.memory_bytes <= 1 << 30);
                prop_assert_eq!(u.instances, held.len() as u64);
            }
        }
    }
}
