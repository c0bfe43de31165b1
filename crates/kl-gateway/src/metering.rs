//! What the data plane observes for metering (DESIGN §6): the invocations it completed
//! (count and billed duration, per minute) and its instances' cgroup readings. The gateway only
//! collects; the server's metering task turns readings into usage and stores it
//! ([`Gateway::collect_usage`](crate::Gateway::collect_usage)).
//!
//! Each revision pool has its own [`PoolMeter`], so the request path only takes its pool's
//! lock, never a gateway-wide one. A pool's meter outlives the pool in the gateway's list until
//! everything it holds has been collected, so the completions of a retired revision's last
//! requests are not lost.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kl_core::{CgroupReading, Minute, Resources, Usage, UsageBucket, meter_invocation};
use kl_runtime::Instance;

/// One instance as the metering task sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSample {
    pub instance: String,
    pub tenant: String,
    pub function: String,
    /// What the instance reserved (its limits), billed as a floor.
    pub reserved: Resources,
    /// When its cgroup started counting: a new meter's zero baseline.
    pub started_at: DateTime<Utc>,
    /// Its cgroup now; `None` without a sandbox or once the instance has exited.
    pub reading: Option<CgroupReading>,
    /// The instance is gone: this is its last sample.
    pub stopped: bool,
}

/// What the data plane observed since the last collection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    /// Invocation usage, one bucket per function and minute.
    pub invocations: Vec<UsageBucket>,
    pub instances: Vec<InstanceSample>,
}

/// The meters of every pool, live or retired and not yet collected.
#[derive(Default)]
pub(crate) struct Meters {
    pools: Mutex<Vec<Arc<PoolMeter>>>,
}

impl Meters {
    pub(crate) fn register(&self, tenant: &str, function: &str, reserved: Resources) -> Arc<PoolMeter> {
        let meter = Arc::new(PoolMeter {
            tenant: tenant.to_owned(),
            function: function.to_owned(),
            reserved,
            state: Mutex::default(),
        });
        self.pools.lock().expect("meters lock").push(meter.clone());
        meter
    }

    /// Takes what every pool observed, reads every running instance's cgroup, and forgets
    /// the meters of pools that are gone and have nothing left.
    pub(crate) fn collect(&self) -> Collected {
        let pools = self.pools.lock().expect("meters lock").clone();
        let mut collected = Collected::default();
        for pool in &pools {
            pool.collect(&mut collected);
        }
        drop(pools);
        // Held by this list alone: the pool is gone.
        self.pools
            .lock()
            .expect("meters lock")
            .retain(|p| Arc::strong_count(p) > 1 || !p.is_empty());
        collected
    }
}

/// One revision's meter.
pub(crate) struct PoolMeter {
    tenant: String,
    function: String,
    reserved: Resources,
    state: Mutex<PoolMeterState>,
}

#[derive(Default)]
struct PoolMeterState {
    invocations: BTreeMap<Minute, Usage>,
    running: Vec<Arc<Instance>>,
    stopped: Vec<InstanceSample>,
}

impl PoolMeter {
    /// Counts one invocation that an instance handled for `duration`.
    pub(crate) fn invocation(&self, duration: Duration) {
        let bucket = meter_invocation(
            &self.tenant,
            &self.function,
            Utc::now(),
            duration,
            self.reserved.memory_bytes,
        );
        let mut state = self.state.lock().expect("pool meter lock");
        state
            .invocations
            .entry(bucket.minute)
            .or_default()
            .merge(&bucket.usage);
    }

    /// Meters a new instance from now on.
    pub(crate) fn started(&self, instance: Arc<Instance>) {
        self.state.lock().expect("pool meter lock").running.push(instance);
    }

    /// Takes the last reading of an instance about to be stopped, while its cgroup exists.
    pub(crate) fn stopping(&self, instance: &Arc<Instance>) {
        let mut state = self.state.lock().expect("pool meter lock");
        let before = state.running.len();
        state.running.retain(|i| !Arc::ptr_eq(i, instance));
        if state.running.len() < before {
            let sample = self.sample(instance, true);
            state.stopped.push(sample);
        }
    }

    fn sample(&self, instance: &Instance, stopped: bool) -> InstanceSample {
        let reading = instance.usage().and_then(|usage| {
            Some(CgroupReading {
                at: Utc::now(),
                cpu_usage_ns: u64::try_from(usage.cpu?.as_nanos()).unwrap_or(u64::MAX),
                memory_bytes: usage.memory_bytes?,
            })
        });
        InstanceSample {
            instance: instance.id.clone(),
            tenant: self.tenant.clone(),
            function: self.function.clone(),
            reserved: self.reserved,
            started_at: instance.started_at,
            reading,
            stopped,
        }
    }

    fn collect(&self, into: &mut Collected) {
        let mut state = self.state.lock().expect("pool meter lock");
        for (minute, usage) in std::mem::take(&mut state.invocations) {
            into.invocations.push(UsageBucket {
                tenant: self.tenant.clone(),
                function: Some(self.function.clone()),
                minute,
                usage,
            });
        }
        into.instances.append(&mut state.stopped);
        let running = std::mem::take(&mut state.running);
        for instance in running {
            let exited = instance.exit_status().is_some();
            into.instances.push(self.sample(&instance, exited));
            if !exited {
                state.running.push(instance);
            }
        }
    }

    fn is_empty(&self) -> bool {
        let state = self.state.lock().expect("pool meter lock");
        state.invocations.is_empty() && state.running.is_empty() && state.stopped.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invocations_from_many_threads_add_up_exactly_and_gone_pools_are_forgotten() {
        let meters = Meters::default();
        let reserved = Resources {
            cpu_millis: 250,
            memory_bytes: 128 << 20,
        };
        let pool = meters.register("acme", "f", reserved);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..250 {
                        pool.invocation(Duration::from_micros(1_500));
                    }
                });
            }
        });
        let collected = meters.collect();
        let total = collected.invocations.iter().fold(Usage::default(), |mut sum, b| {
            sum.merge(&b.usage);
            sum
        });
        assert_eq!(total.invocations, 2_000);
        assert_eq!(total.billed_ms, 2_000 * 2, "1.5 ms bills 2 ms");
        assert_eq!(total.invocation_byte_ms, 2_000 * 2 * (128 << 20));
        assert!(meters.collect().invocations.is_empty(), "collected once");

        pool.invocation(Duration::from_millis(1));
        drop(pool);
        assert_eq!(meters.pools.lock().unwrap().len(), 1, "kept until collected");
        assert_eq!(
            meters.collect().invocations.len(),
            1,
            "a retired pool's last calls count"
        );
        assert!(meters.pools.lock().unwrap().is_empty(), "then forgotten");
    }
}
