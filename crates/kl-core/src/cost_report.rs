//! Cost reports (DESIGN §6; `kl cost report` and the cost API): usage buckets priced over a
//! [`Window`], split by a [`Step`], and aggregated by tenant, function, day and resource, with
//! idle capacity on rows of its own. OpenCost's allocation API has the same three parameters
//! (`window`, `step`, `aggregate`).
//!
//! Money adds up exactly. Each resource's cost is computed exactly for every row and rounded
//! once for the whole report: the report's total is the exact total rounded half to even, and
//! the rows share it by the largest-remainder method, so rows add up to the total to the
//! micro-unit, each within a micro-unit of its exact cost. The rows of a stepped report therefore
//! add up to the report over the whole window. Two separate reports (one per day) are rounded
//! separately and may differ from a month's report by under a micro-unit per report and resource.
//!
//! Idle capacity is computed per step part (and per day when aggregated by day): the capacity
//! the node offered in it minus the CPU and memory billed to tenants in it, never negative.
//! Tenant rows plus idle rows make up the total exactly; when tenants were billed beyond the
//! capacity (CPU bursts), idle is zero and [`Report::overcommit`] shows by how much.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::billing_window::{Period, Step, Window, WindowError};
use crate::cost::{CostError, Costs, ExactCost, allocate, capacity_usage, exact_cost, split_idle};
use crate::money::Money;
use crate::rates::RateCard;
use crate::scheduling::Resources;
use crate::usage::{Resource, Usage, UsageBucket};

/// What report rows are grouped by, besides the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dimension {
    Tenant,
    /// A function within its tenant: grouping by function groups by tenant too, since function
    /// names are unique only within a tenant.
    Function,
    /// The UTC day (within each step part, when stepped by more than a day).
    Day,
    /// One row per resource (CPU, memory, requests, duration, build, storage).
    Resource,
}

impl Dimension {
    pub const ALL: [Dimension; 4] = [
        Dimension::Tenant,
        Dimension::Function,
        Dimension::Day,
        Dimension::Resource,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Tenant => "tenant",
            Dimension::Function => "function",
            Dimension::Day => "day",
            Dimension::Resource => "resource",
        }
    }

    /// Parses OpenCost's comma-separated `aggregate` (`tenant,function`); empty means none.
    pub fn parse_list(text: &str) -> Result<BTreeSet<Dimension>, ReportError> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect()
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Dimension {
    type Err = ReportError;

    fn from_str(s: &str) -> Result<Dimension, ReportError> {
        Dimension::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| ReportError::Aggregate(s.to_owned()))
    }
}

/// Node capacity offered over a window, for idle capacity. Spans add up, so two nodes are two
/// spans, and a node that ran only part of the window covers only that part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CapacitySpan {
    pub window: Window,
    pub resources: Resources,
}

/// What to report on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRequest {
    pub window: Window,
    /// Split the window into parts; one part when absent.
    pub step: Option<Step>,
    pub aggregate: BTreeSet<Dimension>,
    /// Only this tenant's usage.
    pub tenant: Option<String>,
    /// Capacity offered, for idle rows; none when empty.
    pub capacity: Vec<CapacitySpan>,
}

/// Why a report cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReportError {
    /// The step split the window badly.
    #[error(transparent)]
    Window(#[from] WindowError),
    /// A cost is out of range.
    #[error(transparent)]
    Cost(#[from] CostError),
    /// An aggregate names no dimension.
    #[error("invalid aggregate {0:?}: use tenant, function, day or resource, separated by commas")]
    Aggregate(String),
    /// Idle capacity belongs to no tenant, so a one-tenant report cannot show it.
    #[error(
        "idle capacity is platform-wide, so a report for tenant {0:?} cannot include it; leave out the capacity or the tenant"
    )]
    IdleForOneTenant(String),
}

/// Usage in the units rates are quoted in, for display (floats, converted once from exact
/// integers; sums are never taken over these).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Quantities {
    /// Billed CPU: max(reserved, used).
    pub cpu_core_hours: f64,
    pub cpu_core_hours_used: f64,
    /// Billed memory (GiB): max(reserved, used).
    pub memory_gb_hours: f64,
    pub memory_gb_hours_used: f64,
    pub requests: u64,
    /// Invocations' billed duration.
    pub billed_seconds: f64,
    /// Invocations' configured memory × billed duration (GiB).
    pub gb_seconds: f64,
    pub build_minutes: f64,
    pub storage_gb_months: f64,
}

impl Quantities {
    pub fn of(usage: &Usage) -> Quantities {
        let per = |q: u128, resource: Resource| q as f64 / resource.units_per_rate_unit() as f64;
        Quantities {
            cpu_core_hours: per(usage.cpu_billed_ns, Resource::Cpu),
            cpu_core_hours_used: per(usage.cpu_used_ns, Resource::Cpu),
            memory_gb_hours: per(usage.memory_billed_byte_ms, Resource::Memory),
            memory_gb_hours_used: per(usage.memory_used_byte_ms, Resource::Memory),
            requests: usage.invocations,
            billed_seconds: usage.billed_ms as f64 / 1_000.0,
            gb_seconds: per(usage.invocation_byte_ms, Resource::Duration),
            build_minutes: per(usage.build_cpu_ns, Resource::Build),
            storage_gb_months: per(usage.storage_byte_ms, Resource::Storage),
        }
    }
}

/// One row: usage and cost of one group in one step part. Fields of dimensions the report is
/// not grouped by are absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReportRow {
    /// The step part.
    pub window: Window,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Absent in a function report for usage of the tenant as a whole (stored bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<Resource>,
    /// Capacity no tenant was billed for (OpenCost's `__idle__`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub idle: bool,
    pub quantities: Quantities,
    pub cost: Costs,
}

/// A priced report: the API's JSON body, from which the CLI renders tables and CSV.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Report {
    pub window: Window,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<Step>,
    pub aggregate: Vec<Dimension>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub currency: String,
    /// In order of step part, day, tenant rows before idle, tenant, function, resource.
    pub rows: Vec<ReportRow>,
    /// Charged to tenants: the sum of the rows that are not idle.
    pub charged: Costs,
    /// Idle capacity: the sum of the idle rows.
    pub idle: Costs,
    /// `charged + idle`, exactly: the report's cost.
    pub total: Costs,
    /// CPU and memory billed beyond the capacity offered; zero without capacity.
    pub overcommit: Quantities,
}

/// What rows are grouped by. Ordered as rows are listed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Group {
    tile: usize,
    day: Option<NaiveDate>,
    idle: bool,
    tenant: Option<String>,
    function: Option<String>,
}

/// Prices `buckets` over `request.window`. Buckets outside the window (or of other tenants,
/// with a tenant filter) are left out; each bucket counts in the step part its minute starts in.
pub fn report(
    buckets: &[UsageBucket],
    rates: &RateCard,
    request: &ReportRequest,
) -> Result<Report, ReportError> {
    if let Some(tenant) = &request.tenant
        && !request.capacity.is_empty()
    {
        return Err(ReportError::IdleForOneTenant(tenant.clone()));
    }
    let tiles = match request.step {
        Some(step) => request.window.tiles(step)?,
        None => vec![request.window],
    };
    let by = |d| request.aggregate.contains(&d);
    let (by_function, by_day) = (by(Dimension::Function), by(Dimension::Day));
    let by_tenant = by_function || by(Dimension::Tenant);

    let mut groups: BTreeMap<Group, Usage> = BTreeMap::new();
    let mut billed: BTreeMap<(usize, Option<NaiveDate>), Usage> = BTreeMap::new();
    for bucket in buckets {
        if request.tenant.as_ref().is_some_and(|t| *t != bucket.tenant) {
            continue;
        }
        let at = bucket.minute.start();
        let tile = tiles.partition_point(|t| t.end() <= at);
        if !tiles.get(tile).is_some_and(|t| t.contains(at)) {
            continue;
        }
        let day = by_day.then(|| at.date_naive());
        let group = Group {
            tile,
            day,
            idle: false,
            tenant: by_tenant.then(|| bucket.tenant.clone()),
            function: by_function.then(|| bucket.function.clone()).flatten(),
        };
        groups.entry(group).or_default().merge(&bucket.usage);
        billed.entry((tile, day)).or_default().merge(&bucket.usage);
    }

    let mut overcommit = Usage::default();
    if !request.capacity.is_empty() {
        for (tile, part) in tiles.iter().enumerate() {
            let parts = if by_day {
                part.tiles(Step::Calendar(Period::Day))?
                    .into_iter()
                    .map(|w| (Some(w.start().date_naive()), w))
                    .collect()
            } else {
                vec![(None, *part)]
            };
            for (day, part) in parts {
                let mut offered = Usage::default();
                for span in &request.capacity {
                    if let Some(overlap) = span.window.intersect(&part) {
                        offered.merge(&capacity_usage(span.resources, overlap.len_ms()));
                    }
                }
                let used = billed.get(&(tile, day)).copied().unwrap_or_default();
                let split = split_idle(&offered, &used);
                overcommit.merge(&split.overcommit);
                let group = Group {
                    tile,
                    day,
                    idle: true,
                    tenant: None,
                    function: None,
                };
                groups.insert(group, split.idle);
            }
        }
    }

    let by_resource = by(Dimension::Resource);
    let mut lines: Vec<(Group, Option<Resource>, Usage)> = Vec::new();
    for (group, usage) in groups {
        if by_resource {
            for resource in Resource::ALL {
                lines.push((group.clone(), Some(resource), resource.project(&usage)));
            }
        } else {
            lines.push((group, None, usage));
        }
    }
    lines.retain(|(_, _, usage)| !usage.is_zero());

    let mut parts = vec![[Money::ZERO; 6]; lines.len()];
    for resource in Resource::ALL {
        let exact = lines
            .iter()
            .map(|(_, _, usage)| exact_cost(rates, resource, resource.quantity(usage)))
            .collect::<Result<Vec<ExactCost>, CostError>>()?;
        for (slot, share) in parts.iter_mut().zip(allocate(resource, &exact)?) {
            slot[resource as usize] = share;
        }
    }

    let (mut charged, mut idle) = (Costs::default(), Costs::default());
    let mut rows = Vec::with_capacity(lines.len());
    for ((group, resource, usage), parts) in lines.into_iter().zip(parts) {
        let cost = Costs::from_parts(parts)?;
        let sum = if group.idle { &mut idle } else { &mut charged };
        *sum = sum.checked_add(&cost)?;
        rows.push(ReportRow {
            window: tiles[group.tile],
            tenant: group.tenant,
            function: group.function,
            day: group.day,
            resource,
            idle: group.idle,
            quantities: Quantities::of(&usage),
            cost,
        });
    }
    Ok(Report {
        window: request.window,
        step: request.step,
        aggregate: request.aggregate.iter().copied().collect(),
        tenant: request.tenant.clone(),
        currency: rates.currency().to_owned(),
        rows,
        charged,
        idle,
        total: charged.checked_add(&idle)?,
        overcommit: Quantities::of(&overcommit),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing_window::parse_time;
    use crate::rates::Rates;
    use crate::usage::Minute;
    use crate::usage::tests::usage_strategy;
    use chrono::{DateTime, Utc};
    use proptest::prelude::*;

    fn rates() -> RateCard {
        Rates::default().validate().unwrap()
    }

    fn t(text: &str) -> DateTime<Utc> {
        parse_time(text).unwrap()
    }

    fn bucket(tenant: &str, function: Option<&str>, at: &str, usage: Usage) -> UsageBucket {
        UsageBucket {
            tenant: tenant.into(),
            function: function.map(Into::into),
            minute: Minute::of(t(at)),
            usage,
        }
    }

    fn request(window: &str, aggregate: &str) -> ReportRequest {
        ReportRequest {
            window: Window::parse(window, t("2026-11-18T12:00:00Z")).unwrap(),
            step: None,
            aggregate: Dimension::parse_list(aggregate).unwrap(),
            tenant: None,
            capacity: Vec::new(),
        }
    }

    fn core_hour() -> Usage {
        Usage {
            cpu_used_ns: 3_600_000_000_000,
            cpu_billed_ns: 3_600_000_000_000,
            ..Usage::default()
        }
    }

    fn sample() -> Vec<UsageBucket> {
        let calls = Usage {
            invocations: 1_000_000,
            billed_ms: 50_000_000,
            invocation_byte_ms: (128 << 20) * 50 * 1_000_000,
            ..Usage::default()
        };
        let stored = Usage {
            storage_byte_ms: (1 << 30) * 730 * 3_600_000,
            ..Usage::default()
        };
        vec![
            bucket("acme", Some("api"), "2026-11-02T10:00:00Z", core_hour()),
            bucket("acme", Some("api"), "2026-11-03T10:00:00Z", calls),
            bucket("acme", None, "2026-11-03T10:00:00Z", stored),
            bucket("zeta", Some("job"), "2026-11-03T23:59:00Z", core_hour()),
            bucket("zeta", Some("job"), "2026-12-01T00:00:00Z", core_hour()),
        ]
    }

    #[test]
    fn prices_a_month_by_tenant() {
        let r = report(&sample(), &rates(), &request("month", "tenant")).unwrap();
        assert_eq!(r.currency, "USD");
        assert_eq!(r.rows.len(), 2);
        let acme = &r.rows[0];
        assert_eq!(acme.tenant.as_deref(), Some("acme"));
        assert_eq!(acme.function, None);
        assert_eq!(acme.cost.cpu, Money::from_micros(31_611));
        assert_eq!(acme.cost.requests, Money::from_micros(200_000));
        assert_eq!(acme.cost.duration, Money::from_micros(104_167));
        assert_eq!(acme.cost.storage, Money::from_micros(40_000));
        assert_eq!(acme.quantities.requests, 1_000_000);
        assert_eq!(acme.quantities.gb_seconds, 6_250.0);
        assert_eq!(acme.quantities.storage_gb_months, 1.0);
        let zeta = &r.rows[1];
        assert_eq!(
            zeta.cost.total,
            Money::from_micros(31_611),
            "December's hour is outside"
        );
        assert_eq!(r.total, r.charged);
        assert_eq!(r.idle, Costs::default());
        assert_eq!(
            r.total.total,
            Money::from_micros(31_611 + 200_000 + 104_167 + 40_000 + 31_611)
        );
    }

    #[test]
    fn function_rows_name_their_tenant_and_tenant_wide_usage_stands_alone() {
        let r = report(&sample(), &rates(), &request("month", "function")).unwrap();
        let keys: Vec<(Option<&str>, Option<&str>)> = r
            .rows
            .iter()
            .map(|row| (row.tenant.as_deref(), row.function.as_deref()))
            .collect();
        assert_eq!(
            keys,
            [
                (Some("acme"), None),
                (Some("acme"), Some("api")),
                (Some("zeta"), Some("job"))
            ]
        );
    }

    #[test]
    fn steps_and_days_split_rows_and_add_up_to_the_whole() {
        let whole = report(&sample(), &rates(), &request("month", "")).unwrap();
        assert_eq!(whole.rows.len(), 1);
        let mut daily = request("month", "tenant");
        daily.step = Some("day".parse().unwrap());
        let daily = report(&sample(), &rates(), &daily).unwrap();
        assert_eq!(daily.rows.len(), 3, "acme on the 2nd and 3rd, zeta on the 3rd");
        assert_eq!(
            daily.rows[0].window.to_string(),
            "2026-11-02T00:00:00Z,2026-11-03T00:00:00Z"
        );
        assert_eq!(daily.total, whole.total);
        let by_day = report(&sample(), &rates(), &request("month", "day")).unwrap();
        let days: Vec<String> = by_day.rows.iter().map(|r| r.day.unwrap().to_string()).collect();
        assert_eq!(days, ["2026-11-02", "2026-11-03"]);
        assert_eq!(by_day.total, whole.total);
    }

    #[test]
    fn resource_rows_carry_one_resource_each() {
        let r = report(&sample(), &rates(), &request("month", "resource")).unwrap();
        let resources: Vec<Resource> = r.rows.iter().map(|row| row.resource.unwrap()).collect();
        assert_eq!(
            resources,
            [
                Resource::Cpu,
                Resource::Requests,
                Resource::Duration,
                Resource::Storage
            ],
            "no row for a resource without usage"
        );
        let cpu = &r.rows[0];
        assert_eq!(cpu.cost.total, cpu.cost.cpu);
        assert_eq!(cpu.quantities.cpu_core_hours, 2.0);
        assert_eq!(cpu.quantities.requests, 0);
    }

    #[test]
    fn a_tenant_filter_keeps_that_tenant_only_and_refuses_idle() {
        let mut req = request("month", "function");
        req.tenant = Some("zeta".into());
        let r = report(&sample(), &rates(), &req).unwrap();
        assert_eq!(r.rows.len(), 1);
        assert_eq!(r.tenant.as_deref(), Some("zeta"));
        req.capacity = vec![CapacitySpan {
            window: req.window,
            resources: Resources::ZERO,
        }];
        let err = report(&sample(), &rates(), &req).unwrap_err();
        assert_eq!(err, ReportError::IdleForOneTenant("zeta".into()));
    }

    #[test]
    fn idle_is_the_capacity_tenants_did_not_use() {
        // A one-core node for one hour; acme billed a quarter of it.
        let mut req = request("2026-11-02T10:00:00Z,2026-11-02T11:00:00Z", "tenant");
        req.capacity = vec![CapacitySpan {
            window: req.window,
            resources: Resources {
                cpu_millis: 1_000,
                memory_bytes: 0,
            },
        }];
        let quarter = Usage {
            cpu_billed_ns: 900_000_000_000,
            ..Usage::default()
        };
        let buckets = [bucket("acme", Some("api"), "2026-11-02T10:30:00Z", quarter)];
        let r = report(&buckets, &rates(), &req).unwrap();
        assert_eq!(r.rows.len(), 2);
        assert!(r.rows[1].idle);
        assert_eq!(r.rows[1].tenant, None);
        assert_eq!(r.rows[1].quantities.cpu_core_hours, 0.75);
        assert_eq!(
            r.total.cpu,
            Money::from_micros(31_611),
            "the node's hour, exactly"
        );
        assert_eq!(r.charged.cpu.micros() + r.idle.cpu.micros(), 31_611);
        assert_eq!(r.overcommit, Quantities::default());
        // Tenants billed beyond capacity: no idle, the excess shown.
        let burst = Usage {
            cpu_billed_ns: 5_400_000_000_000,
            ..Usage::default()
        };
        let buckets = [bucket("acme", Some("api"), "2026-11-02T10:30:00Z", burst)];
        let r = report(&buckets, &rates(), &req).unwrap();
        assert_eq!(r.rows.len(), 1, "no idle row");
        assert_eq!(r.overcommit.cpu_core_hours, 0.5);
        assert_eq!(r.total, r.charged);
    }

    #[test]
    fn reports_serialize_in_camel_case_with_money_as_strings() {
        let r = report(&sample(), &rates(), &request("month", "tenant")).unwrap();
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["window"]["start"], "2026-11-01T00:00:00Z");
        assert_eq!(json["aggregate"], serde_json::json!(["tenant"]));
        assert_eq!(json["rows"][0]["tenant"], "acme");
        assert_eq!(json["rows"][0]["cost"]["cpu"], "0.031611");
        assert_eq!(json["rows"][0]["quantities"]["cpuCoreHours"], 1.0);
        assert!(json["rows"][0].get("idle").is_none(), "only idle rows say so");
        assert!(json["rows"][0].get("function").is_none());
        assert_eq!(json["total"]["total"], "0.407389");
        assert_eq!(serde_json::from_value::<Report>(json).unwrap(), r);
    }

    #[test]
    fn aggregates_parse_from_comma_lists() {
        let dims = Dimension::parse_list("tenant, function").unwrap();
        assert_eq!(
            dims.into_iter().collect::<Vec<_>>(),
            [Dimension::Tenant, Dimension::Function]
        );
        assert!(Dimension::parse_list("").unwrap().is_empty());
        let err = Dimension::parse_list("tenant,namespace").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid aggregate \"namespace\": use tenant, function, day or resource, separated by commas"
        );
    }

    const TENANTS: [&str; 3] = ["a", "b", "c"];
    const NOV: i64 = 1_793_491_200; // 2026-11-01T00:00:00Z

    fn buckets_strategy() -> impl Strategy<Value = Vec<UsageBucket>> {
        // Usage in November 2026 and a day either side, scaled to keep costs in range.
        proptest::collection::vec((0usize..3, 0u8..3, -1_440i64..44_640, usage_strategy()), 0..60).prop_map(
            |items| {
                items
                    .into_iter()
                    .map(|(tenant, function, minute, usage)| UsageBucket {
                        tenant: TENANTS[tenant].into(),
                        function: (function > 0).then(|| format!("f{function}")),
                        minute: Minute::from_index(NOV / 60 + minute).unwrap(),
                        usage,
                    })
                    .collect()
            },
        )
    }

    fn dimensions() -> impl Strategy<Value = BTreeSet<Dimension>> {
        proptest::sample::subsequence(Dimension::ALL.to_vec(), 0..=4).prop_map(|d| d.into_iter().collect())
    }

    fn november() -> Window {
        Window::parse("2026-11-01,2026-12-01", Utc::now()).unwrap()
    }

    proptest! {
        /// Tenant charges plus idle make up the total exactly, rows add up to it, and with
        /// capacity to spare the total CPU and memory are exactly the node's cost.
        #[test]
        fn charges_plus_idle_conserve_the_total(
            buckets in buckets_strategy(),
            aggregate in dimensions(),
            step in proptest::option::of(proptest::sample::select(vec!["day", "week", "6h"])),
            cpu_millis in 0u64..64_000,
            memory in 0u64..1 << 40,
        ) {
            let req = ReportRequest {
                window: november(),
                step: step.map(|s| s.parse().unwrap()),
                aggregate,
                tenant: None,
                capacity: vec![CapacitySpan {
                    window: november(),
                    resources: Resources { cpu_millis, memory_bytes: memory },
                }],
            };
            let rates = rates();
            let r = report(&buckets, &rates, &req).unwrap();
            prop_assert_eq!(r.charged.checked_add(&r.idle).unwrap(), r.total);
            for resource in Resource::ALL {
                let rows: u64 = r.rows.iter().map(|row| row.cost.get(resource).micros()).sum();
                prop_assert_eq!(rows, r.total.get(resource).micros());
            }
            let rows: u64 = r.rows.iter().map(|row| row.cost.total.micros()).sum();
            prop_assert_eq!(rows, r.total.total.micros());
            for row in &r.rows {
                let parts: u64 = Resource::ALL.iter().map(|&res| row.cost.get(res).micros()).sum();
                prop_assert_eq!(parts, row.cost.total.micros());
            }
            if r.overcommit == Quantities::default() {
                let node = capacity_usage(req.capacity[0].resources, november().len_ms());
                let node_cost = rates.cost(&node).unwrap();
                prop_assert_eq!(r.total.cpu, node_cost.cpu);
                prop_assert_eq!(r.total.memory, node_cost.memory);
            }
        }

        /// The days of a month add up to the month: bucketed usage exactly, and in a report
        /// stepped by day, costs to the micro-unit.
        #[test]
        fn the_days_add_up_to_the_month(buckets in buckets_strategy()) {
            let month = november();
            let in_window = |w: &Window| buckets.iter().filter(|b| w.contains_minute(b.minute)).fold(
                Usage::default(),
                |mut acc, b| { acc.merge(&b.usage); acc },
            );
            let days = month.tiles(Step::Calendar(Period::Day)).unwrap();
            prop_assert_eq!(days.len(), 30);
            let by_days = days.iter().fold(Usage::default(), |mut acc, d| { acc.merge(&in_window(d)); acc });
            prop_assert_eq!(by_days, in_window(&month));

            let rates = rates();
            let whole = ReportRequest {
                window: month,
                step: None,
                aggregate: BTreeSet::new(),
                tenant: None,
                capacity: Vec::new(),
            };
            let daily = ReportRequest { step: Some(Step::Calendar(Period::Day)), ..whole.clone() };
            let (whole, daily) = (report(&buckets, &rates, &whole).unwrap(), report(&buckets, &rates, &daily).unwrap());
            prop_assert_eq!(daily.total, whole.total);
            let each_day: u64 = daily.rows.iter().map(|r| r.cost.total.micros()).sum();
            prop_assert_eq!(each_day, whole.total.total.micros());
        }
    }
}
