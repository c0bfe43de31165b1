//! Usage and cost as Prometheus counters per tenant and function (function `""` for usage of
//! the tenant as a whole, stored bytes), advanced by each stored metering write. Counters start
//! from zero with the process, as Prometheus expects: `increase()` over them matches the
//! stored buckets of the same time, while reports read the store.

use std::sync::atomic::AtomicU64;

use kl_core::{RateCard, Resource, UsageBucket};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabels {
    tenant: String,
    function: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CostLabels {
    tenant: String,
    function: String,
    resource: String,
    currency: String,
}

type Counters = Family<FunctionLabels, Counter<f64, AtomicU64>>;

pub(crate) struct CostMetrics {
    registry: Registry,
    cpu_seconds: Counters,
    cpu_billed_seconds: Counters,
    memory_gb_seconds: Counters,
    invocations: Family<FunctionLabels, Counter>,
    invocation_gb_seconds: Counters,
    cost: Family<CostLabels, Counter<f64, AtomicU64>>,
}

impl CostMetrics {
    pub(crate) fn new() -> CostMetrics {
        let mut registry = Registry::with_prefix("kl_usage");
        let metrics = CostMetrics {
            cpu_seconds: Counters::default(),
            cpu_billed_seconds: Counters::default(),
            memory_gb_seconds: Counters::default(),
            invocations: Family::default(),
            invocation_gb_seconds: Counters::default(),
            cost: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "cpu_seconds",
            "CPU time instances used, from their cgroups",
            metrics.cpu_seconds.clone(),
        );
        registry.register(
            "cpu_billed_seconds",
            "CPU time billed: max(reserved, used) per sampling interval",
            metrics.cpu_billed_seconds.clone(),
        );
        registry.register(
            "memory_gb_seconds",
            "Memory billed (GiB-seconds): max(reserved, used)",
            metrics.memory_gb_seconds.clone(),
        );
        registry.register(
            "invocations",
            "Invocations the gateway completed",
            metrics.invocations.clone(),
        );
        registry.register(
            "invocation_gb_seconds",
            "Configured memory × billed duration (GiB-seconds)",
            metrics.invocation_gb_seconds.clone(),
        );
        registry.register(
            "cost",
            "Cost of the metered usage at the configured rates",
            metrics.cost.clone(),
        );
        CostMetrics { registry, ..metrics }
    }

    /// Advances the counters by stored buckets.
    pub(crate) fn record(&self, buckets: &[UsageBucket], rates: &RateCard) {
        for bucket in buckets {
            let labels = FunctionLabels {
                tenant: bucket.tenant.clone(),
                function: bucket.function.clone().unwrap_or_default(),
            };
            let u = &bucket.usage;
            let secs = |ns: u128| ns as f64 / 1e9;
            let gib_secs = |byte_ms: u128| byte_ms as f64 / (kl_core::usage::GIB as f64 * 1e3);
            self.cpu_seconds
                .get_or_create(&labels)
                .inc_by(secs(u.cpu_used_ns));
            self.cpu_billed_seconds
                .get_or_create(&labels)
                .inc_by(secs(u.cpu_billed_ns));
            self.memory_gb_seconds
                .get_or_create(&labels)
                .inc_by(gib_secs(u.memory_billed_byte_ms));
            self.invocations.get_or_create(&labels).inc_by(u.invocations);
            self.invocation_gb_seconds
                .get_or_create(&labels)
                .inc_by(gib_secs(u.invocation_byte_ms));
            let Ok(costs) = rates.cost(u) else { continue };
            for resource in Resource::ALL {
                let amount = costs.get(resource);
                if amount == kl_core::Money::ZERO {
                    continue;
                }
                let labels = CostLabels {
                    tenant: labels.tenant.clone(),
                    function: labels.function.clone(),
                    resource: resource.as_str().to_owned(),
                    currency: rates.currency().to_owned(),
                };
                self.cost.get_or_create(&labels).inc_by(amount.to_f64());
            }
        }
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kl_core::{Minute, Usage};

    #[test]
    fn exposes_usage_and_cost_per_tenant_and_function() {
        let m = CostMetrics::new();
        let bucket = UsageBucket {
            tenant: "acme".into(),
            function: Some("f".into()),
            minute: Minute::from_index(29_000_000).unwrap(),
            usage: Usage {
                cpu_used_ns: 1_500_000_000,
                cpu_billed_ns: 2_000_000_000,
                invocations: 3,
                ..Usage::default()
            },
        };
        let rates = kl_core::Rates::default().validate().unwrap();
        m.record(&[bucket.clone(), bucket], &rates);
        let text = crate::exposition(&[m.registry()]);
        for series in [
            r#"kl_usage_cpu_seconds_total{tenant="acme",function="f"} 3.0"#,
            r#"kl_usage_cpu_billed_seconds_total{tenant="acme",function="f"} 4.0"#,
            r#"kl_usage_invocations_total{tenant="acme",function="f"} 6"#,
            r#"kl_usage_cost_total{tenant="acme",function="f",resource="requests",currency="USD"}"#,
        ] {
            assert!(text.contains(series), "{series} missing from\n{text}");
        }
    }
}
