//! The metering task: every [`MeteringConfig::interval`](crate::config::MeteringConfig), it
//! takes what the gateway observed (completed invocations, a cgroup reading of every
//! instance, a last reading of each instance it stopped), meters stored bytes per tenant, and
//! writes the usage buckets together with the meters' checkpoints in one store transaction.
//! A write that fails is kept and retried with the next tick, so counts stay exact. Then it
//! checks budgets and, hourly, deletes buckets past retention.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Weak};

use chrono::{DateTime, Utc};
use kl_core::{InstanceMeter, Minute, StorageMeter, StoredBytes, compact, meter_build};
use kl_gateway::InstanceSample;
use kl_store::{InstanceCheckpoint, MeterWrite, Store, StoreError};
use tokio::time::Instant;

use super::budget::Budgets;
use crate::state::AppState;

/// How often buckets past retention are deleted.
const RETENTION_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// The meters of the running instances and of each tenant's stored bytes.
pub(crate) struct Metering {
    instances: HashMap<String, InstanceMeter>,
    storage: HashMap<String, StorageMeter>,
    /// A tick whose store write failed: written with the next one.
    pending: MeterWrite,
    budgets: Budgets,
    retention_due: Instant,
}

impl Metering {
    /// Resumes the storage meters from their checkpoints. Instances do not outlive the server
    /// (it stops them on shutdown, and a new server never adopts an old one's), so their
    /// checkpoints only mark where their billing ended: they go with the first write.
    pub(crate) async fn load(store: &Store) -> Result<Metering, StoreError> {
        let finished = store
            .instance_checkpoints()
            .await?
            .into_iter()
            .map(|c| c.instance)
            .collect();
        let storage = store
            .storage_checkpoints()
            .await?
            .into_iter()
            .map(|(tenant, checkpoint)| {
                let meter = StorageMeter::resume(&tenant, checkpoint);
                (tenant, meter)
            })
            .collect();
        Ok(Metering {
            instances: HashMap::new(),
            storage,
            pending: MeterWrite {
                finished,
                ..MeterWrite::default()
            },
            budgets: Budgets::default(),
            retention_due: Instant::now(),
        })
    }

    /// Meters one instance sample into `write`.
    fn instance(&mut self, sample: InstanceSample, write: &mut MeterWrite) {
        if let Some(reading) = sample.reading {
            let meter = self.instances.entry(sample.instance.clone()).or_insert_with(|| {
                InstanceMeter::start(
                    &sample.tenant,
                    &sample.function,
                    sample.reserved,
                    sample.started_at,
                )
            });
            match meter.observe(reading) {
                Ok(metered) => {
                    if metered.counter_reset {
                        tracing::warn!(instance = %sample.instance, "the instance's CPU counter went back: its cgroup was recreated");
                    }
                    write.buckets.extend(metered.buckets);
                }
                Err(skipped) => {
                    tracing::debug!(instance = %sample.instance, %skipped, "cgroup reading not metered")
                }
            }
            if !sample.stopped {
                write.instances.push(InstanceCheckpoint {
                    instance: sample.instance.clone(),
                    tenant: sample.tenant.clone(),
                    function: sample.function.clone(),
                    reserved: sample.reserved,
                    reading: meter.checkpoint(),
                });
            }
        }
        if sample.stopped && self.instances.remove(&sample.instance).is_some() {
            write.finished.push(sample.instance);
        }
    }

    /// Meters every tenant's stored bytes (uploaded sources) up to `now`.
    async fn storage(
        &mut self,
        store: &Store,
        now: DateTime<Utc>,
        write: &mut MeterWrite,
    ) -> Result<(), StoreError> {
        for tenant in store.tenants().await? {
            let reading = StoredBytes {
                at: now,
                bytes: store.stored_bytes(&tenant.name).await?,
            };
            let meter = match self.storage.entry(tenant.name.clone()) {
                Entry::Vacant(e) => e.insert(StorageMeter::resume(&tenant.name, reading)),
                Entry::Occupied(e) => {
                    let meter = e.into_mut();
                    if let Ok(buckets) = meter.observe(reading) {
                        write.buckets.extend(buckets);
                    }
                    meter
                }
            };
            write.storage.push((tenant.name, meter.checkpoint()));
        }
        Ok(())
    }
}

/// Meters a build's CPU time, spread over the `took` before now; stored with the next tick.
pub(crate) async fn record_build(
    state: &AppState,
    tenant: &str,
    function: &str,
    took: std::time::Duration,
    cpu: std::time::Duration,
) {
    let now = Utc::now();
    let began = chrono::Duration::from_std(took)
        .ok()
        .and_then(|took| now.checked_sub_signed(took))
        .unwrap_or(now);
    let buckets = meter_build(tenant, function, began, now, cpu);
    state.metering.lock().await.pending.buckets.extend(buckets);
}

/// Runs the metering task until the server is gone.
pub(crate) async fn run(state: Weak<AppState>, period: std::time::Duration) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(state) = state.upgrade() else { return };
        tick(&state).await;
    }
}

/// One metering tick (also run at shutdown, before the instances stop).
pub(crate) async fn tick(state: &Arc<AppState>) {
    let mut metering = state.metering.lock().await;
    let now = Utc::now();
    let collected = state.gateway.collect_usage();
    let mut write = std::mem::take(&mut metering.pending);
    write.buckets.extend(collected.invocations);
    for sample in collected.instances {
        metering.instance(sample, &mut write);
    }
    if let Err(error) = metering.storage(&state.store, now, &mut write).await {
        tracing::warn!(%error, "cannot meter stored bytes this time");
    }
    write.buckets = compact(std::mem::take(&mut write.buckets));
    if let Err(error) = state.store.record_metering(&write).await {
        tracing::error!(%error, "cannot store metered usage; retrying with the next tick");
        metering.pending = write;
        return;
    }
    state
        .cost_metrics
        .record(&write.buckets, &state.config.metering.rates);
    let Metering { budgets, .. } = &mut *metering;
    budgets.check(state, now, &write.buckets).await;
    if Instant::now() >= metering.retention_due {
        metering.retention_due = Instant::now() + RETENTION_EVERY;
        let retention =
            chrono::Duration::from_std(state.config.metering.retention).unwrap_or(chrono::Duration::MAX);
        let horizon = now.checked_sub_signed(retention).map(Minute::of);
        if let Some(horizon) = horizon {
            match state.store.delete_usage_before(horizon).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, %horizon, "usage buckets past retention deleted"),
                Err(error) => tracing::warn!(%error, "cannot delete usage past retention"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kl_core::{CgroupReading, Resources};

    fn sample(cpu_ms: u64, at_ms: i64, stopped: bool) -> InstanceSample {
        let start = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        InstanceSample {
            instance: "i-1".into(),
            tenant: "acme".into(),
            function: "f".into(),
            reserved: Resources {
                cpu_millis: 100,
                memory_bytes: 1 << 20,
            },
            started_at: start,
            reading: Some(CgroupReading {
                at: start + chrono::Duration::milliseconds(at_ms),
                cpu_usage_ns: cpu_ms * 1_000_000,
                memory_bytes: 1 << 20,
            }),
            stopped,
        }
    }

    fn cpu_used(write: &MeterWrite) -> u128 {
        write.buckets.iter().map(|b| b.usage.cpu_used_ns).sum()
    }

    #[tokio::test]
    async fn instance_samples_meter_from_the_start_checkpoint_and_finish() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("kl.db")).await.unwrap();
        let mut metering = Metering::load(&store).await.unwrap();

        let mut write = MeterWrite::default();
        metering.instance(sample(300, 1_000, false), &mut write);
        assert_eq!(cpu_used(&write), 300_000_000, "billed from the start, at zero");
        assert_eq!(write.instances.len(), 1);
        assert_eq!(write.instances[0].reading.cpu_usage_ns, 300_000_000);

        let mut write = MeterWrite::default();
        metering.instance(sample(300, 1_000, false), &mut write);
        assert_eq!(cpu_used(&write), 0, "a repeated reading adds nothing");

        let mut write = MeterWrite::default();
        metering.instance(sample(500, 2_000, true), &mut write);
        assert_eq!(
            cpu_used(&write),
            200_000_000,
            "the last reading meters up to the stop"
        );
        assert!(write.instances.is_empty());
        assert_eq!(write.finished, ["i-1"]);

        let mut write = MeterWrite::default();
        let unsandboxed = InstanceSample {
            instance: "i-2".into(),
            reading: None,
            ..sample(0, 0, false)
        };
        metering.instance(unsandboxed, &mut write);
        assert_eq!(write, MeterWrite::default(), "nothing to meter without a cgroup");
    }

    #[tokio::test]
    async fn instance_checkpoints_of_a_previous_run_are_finished_and_storage_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("kl.db")).await.unwrap();
        store.ensure_tenant("acme").await.unwrap();
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let old = sample(1, 1, false);
        store
            .record_metering(&MeterWrite {
                instances: vec![InstanceCheckpoint {
                    instance: old.instance,
                    tenant: old.tenant,
                    function: old.function,
                    reserved: old.reserved,
                    reading: old.reading.unwrap(),
                }],
                storage: vec![("acme".into(), StoredBytes { at, bytes: 1000 })],
                ..MeterWrite::default()
            })
            .await
            .unwrap();
        let mut metering = Metering::load(&store).await.unwrap();
        assert_eq!(metering.pending.finished, ["i-1"]);
        let mut write = MeterWrite::default();
        let later = at + chrono::Duration::seconds(60);
        metering.storage(&store, later, &mut write).await.unwrap();
        let stored: u128 = write
            .buckets
            .iter()
            .filter(|b| b.tenant == "acme")
            .map(|b| b.usage.storage_byte_ms)
            .sum();
        assert_eq!(
            stored,
            1000 * 60_000,
            "the checkpoint's bytes are billed up to now"
        );
    }
}
