//! Metering and cost (DESIGN §6) in the server: the metering task that turns what the data
//! plane observes into stored usage ([`meter`]), budgets checked on each of its ticks
//! ([`budget`]), usage and cost as Prometheus counters ([`metrics`]), and the cost reports of
//! the API ([`report`]).

mod budget;
mod meter;
mod metrics;
mod report;

pub(crate) use meter::{Metering, record_build, run, tick};
pub(crate) use metrics::CostMetrics;
pub(crate) use report::{report, tenant_report};
