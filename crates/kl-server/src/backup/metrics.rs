//! Backups on `/metrics`, so an alert can say when the newest one is too old
//! (`kl_backup_last_success_timestamp_seconds` against `kl_backup_interval_seconds`).

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub(crate) struct BackupMetrics {
    registry: Registry,
    last_success: Gauge<f64, AtomicU64>,
    last_duration: Gauge<f64, AtomicU64>,
    failures: Counter,
}

impl BackupMetrics {
    /// `schedule`: the interval of scheduled backups, exported so alerts need no settings.
    pub(crate) fn new(schedule: Option<Duration>) -> BackupMetrics {
        let mut registry = Registry::with_prefix("kl_backup");
        let metrics = BackupMetrics {
            last_success: Gauge::default(),
            last_duration: Gauge::default(),
            failures: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "last_success_timestamp_seconds",
            "When the newest backup that completed finished (Unix seconds)",
            metrics.last_success.clone(),
        );
        registry.register(
            "last_duration_seconds",
            "How long the newest backup that completed took",
            metrics.last_duration.clone(),
        );
        registry.register("failures", "Backups that failed", metrics.failures.clone());
        if let Some(every) = schedule {
            let interval = Gauge::<f64, AtomicU64>::default();
            interval.set(every.as_secs_f64());
            registry.register("interval_seconds", "How often scheduled backups run", interval);
        }
        BackupMetrics { registry, ..metrics }
    }

    pub(crate) fn succeeded(&self, took: Duration) {
        self.last_success
            .set(chrono::Utc::now().timestamp_millis() as f64 / 1e3);
        self.last_duration.set(took.as_secs_f64());
    }

    pub(crate) fn failed(&self) {
        self.failures.inc();
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_is_exported_only_with_a_schedule_and_outcomes_are_counted() {
        let manual = BackupMetrics::new(None);
        assert!(!crate::exposition(&[manual.registry()]).contains("kl_backup_interval_seconds"));
        let scheduled = BackupMetrics::new(Some(Duration::from_secs(3600)));
        scheduled.succeeded(Duration::from_millis(1500));
        scheduled.failed();
        let text = crate::exposition(&[scheduled.registry()]);
        assert!(text.contains("kl_backup_interval_seconds 3600.0"), "{text}");
        assert!(text.contains("kl_backup_last_duration_seconds 1.5"), "{text}");
        assert!(text.contains("kl_backup_failures_total 1"), "{text}");
        let stamp: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("kl_backup_last_success_timestamp_seconds "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (stamp - chrono::Utc::now().timestamp() as f64).abs() < 60.0,
            "{text}"
        );
    }
}
