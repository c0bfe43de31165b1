//! The data plane's Prometheus metrics, per revision: requests by status, latency, cold starts
//! and their duration, recorded as they happen; running instances and queued requests, read
//! at scrape time.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Which revision a series is about.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RevisionLabels {
    pub tenant: String,
    pub function: String,
    pub revision: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    tenant: String,
    function: String,
    revision: String,
    status: String,
}

type Histograms = Family<RevisionLabels, Histogram, fn() -> Histogram>;

/// 0.5 ms to about 16 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// 1 ms to about 8 s.
fn startup_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Histograms,
    cold_starts: Family<RevisionLabels, Counter>,
    cold_start_seconds: Histograms,
    instances: Family<RevisionLabels, Gauge>,
    desired: Family<RevisionLabels, Gauge>,
    panic: Family<RevisionLabels, Gauge>,
    queued: Family<RevisionLabels, Gauge>,
}

/// A routed revision's state at scrape time.
pub(crate) struct RevisionGauges {
    pub instances: usize,
    /// The autoscaler's last decision, when it has made one.
    pub desired: Option<u32>,
    pub panic: bool,
    pub queued: usize,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("kl");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Histograms::new_with_constructor(latency_histogram);
        let cold_starts = Family::<RevisionLabels, Counter>::default();
        let cold_start_seconds = Histograms::new_with_constructor(startup_histogram);
        let instances = Family::<RevisionLabels, Gauge>::default();
        let desired = Family::<RevisionLabels, Gauge>::default();
        let panic = Family::<RevisionLabels, Gauge>::default();
        let queued = Family::<RevisionLabels, Gauge>::default();
        registry.register("requests", "Invocations by HTTP status", requests.clone());
        registry.register(
            "request_duration_seconds",
            "Invocation latency through the gateway",
            latency.clone(),
        );
        registry.register(
            "cold_starts",
            "Requests that started an instance",
            cold_starts.clone(),
        );
        registry.register(
            "cold_start_duration_seconds",
            "Instance start-up, spawn to first healthy answer",
            cold_start_seconds.clone(),
        );
        registry.register("instances", "Running instances", instances.clone());
        registry.register(
            "desired_instances",
            "Instances the autoscaler wants (its last decision)",
            desired.clone(),
        );
        registry.register(
            "panic_mode",
            "1 while the autoscaler is in panic mode",
            panic.clone(),
        );
        registry.register(
            "queued_requests",
            "Requests waiting for an instance slot",
            queued.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            cold_starts,
            cold_start_seconds,
            instances,
            desired,
            panic,
            queued,
        }
    }

    pub(crate) fn request(&self, revision: &RevisionLabels, status: u16, took: Duration) {
        let labels = RequestLabels {
            tenant: revision.tenant.clone(),
            function: revision.function.clone(),
            revision: revision.revision.clone(),
            status: status.to_string(),
        };
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(revision).observe(took.as_secs_f64());
    }

    pub(crate) fn cold_start(&self, revision: &RevisionLabels, startup: Duration) {
        self.cold_starts.get_or_create(revision).inc();
        self.cold_start_seconds
            .get_or_create(revision)
            .observe(startup.as_secs_f64());
    }

    /// The text exposition, with the scrape-time gauges set from `revisions` (those routed
    /// now: a retired revision's gauges disappear).
    pub(crate) fn encode(
        &self,
        revisions: impl IntoIterator<Item = (RevisionLabels, RevisionGauges)>,
    ) -> String {
        for family in [&self.instances, &self.desired, &self.panic, &self.queued] {
            family.clear();
        }
        for (labels, gauges) in revisions {
            self.instances.get_or_create(&labels).set(gauges.instances as i64);
            if let Some(desired) = gauges.desired {
                self.desired.get_or_create(&labels).set(i64::from(desired));
            }
            self.panic.get_or_create(&labels).set(i64::from(gauges.panic));
            self.queued.get_or_create(&labels).set(gauges.queued as i64);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> RevisionLabels {
        RevisionLabels {
            tenant: "t".into(),
            function: "f".into(),
            revision: "f-00001".into(),
        }
    }

    #[test]
    fn exposes_every_series_with_revision_labels() {
        let m = Metrics::new();
        m.request(&labels(), 200, Duration::from_millis(3));
        m.request(&labels(), 200, Duration::from_millis(5));
        m.request(&labels(), 504, Duration::from_secs(1));
        m.cold_start(&labels(), Duration::from_millis(40));
        let gauges = RevisionGauges {
            instances: 2,
            desired: Some(5),
            panic: true,
            queued: 7,
        };
        let text = m.encode([(labels(), gauges)]);
        let series = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
                .to_owned()
        };
        let ok = r#"kl_requests_total{tenant="t",function="f",revision="f-00001",status="200"} 2"#;
        assert!(text.contains(ok), "{text}");
        assert!(
            series("kl_request_duration_seconds_count").ends_with(" 3"),
            "{text}"
        );
        assert!(series("kl_cold_starts_total").ends_with(" 1"), "{text}");
        assert!(series("kl_instances{").ends_with(" 2"), "{text}");
        assert!(series("kl_queued_requests{").ends_with(" 7"), "{text}");
        assert!(series("kl_desired_instances{").ends_with(" 5"), "{text}");
        assert!(series("kl_panic_mode{").ends_with(" 1"), "{text}");
        let later = m.encode([]);
        assert!(
            !later.contains("kl_instances{") && !later.contains("kl_panic_mode{"),
            "gauges of unrouted revisions go: {later}"
        );
    }
}
