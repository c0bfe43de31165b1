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
