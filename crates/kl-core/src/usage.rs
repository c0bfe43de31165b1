//! Metered usage (DESIGN §6) as the metadata store keeps it: one [`UsageBucket`] per tenant,
//! function and UTC [`Minute`], holding exact integer quantities ([`Usage`]) that only ever
//! add up. Addition is associative and commutative, so buckets can be merged in any order and
//! grouping (per flush, per store row, per report row) without changing a total.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// A gibibyte. "GB" in rates means 2³⁰ bytes, as AWS Lambda (1024 MB = 1 GB) and OpenCost
/// (RAM per GiB-hour) count it.
pub const GIB: u128 = 1 << 30;
/// Hours in a billing month for storage: 365 × 24 / 12, the figure AWS and OpenCost use to turn
/// a monthly storage price into an hourly one. A constant month keeps storage cost linear in
/// time, so the days of a month add up to the month.
pub const HOURS_PER_MONTH: u128 = 730;

const NS_PER_SECOND: u128 = 1_000_000_000;
const MS_PER_SECOND: u128 = 1_000;

/// A UTC minute, the metering grain: minutes since the Unix epoch. Compact as a store key, and
/// always the start of a representable minute (the field is private and every constructor
/// checks), so [`Minute::start`] cannot fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Minute(i64);

impl Minute {
    /// The minute `at` falls in.
    pub fn of(at: DateTime<Utc>) -> Minute {
        Minute(at.timestamp().div_euclid(60))
    }

    /// The minute with this index (minutes since the epoch), if chrono can represent it.
    pub fn from_index(index: i64) -> Option<Minute> {
        let secs = index.checked_mul(60)?;
        DateTime::from_timestamp(secs, 0).map(|_| Minute(index))
    }

    /// Minutes since the Unix epoch: the store's integer key.
    pub fn index(self) -> i64 {
        self.0
    }

    /// The first instant of the minute.
    pub fn start(self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.0 * 60, 0)
            .expect("a Minute is only built from a representable time, whose minute start is representable")
    }

    /// The first instant as milliseconds since the epoch, for interval arithmetic.
    pub(crate) fn start_ms(self) -> i64 {
        self.0 * 60_000
    }

    /// The minute holding `ms` milliseconds since the epoch, which must lie between two
    /// representable times (metering only splits intervals between readings' times).
    pub(crate) fn containing_ms(ms: i64) -> Minute {
        Minute(ms.div_euclid(60_000))
    }
}

impl fmt::Display for Minute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.start().to_rfc3339_opts(SecondsFormat::Secs, true))
    }
}

/// Written as the RFC 3339 time of its start (`2026-11-01T12:34:00Z`).
impl Serialize for Minute {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Minute {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Minute, D::Error> {
        let at = DateTime::<Utc>::deserialize(d)?;
        if at.second() != 0 || at.nanosecond() != 0 {
            return Err(serde::de::Error::custom(format!(
                "{at} is not the start of a minute"
            )));
        }
        Ok(Minute::of(at))
    }
}

/// Exact usage quantities in the smallest units metering sees. `u128` because a month of a
/// large node in byte-milliseconds exceeds `u64`; additions saturate instead of wrapping (2¹²⁸
/// byte-milliseconds is ~10²² GiB-years, so saturation means corrupt input, not real usage).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Usage {
    /// CPU time the instances used, from their cgroup counters.
    pub cpu_used_ns: u128,
    /// CPU time billed: per sampling interval, the larger of the reserved CPU over the
    /// interval and the CPU time used in it.
    pub cpu_billed_ns: u128,
    /// Memory in use over time.
    pub memory_used_byte_ms: u128,
    /// Memory billed over time: per interval, the larger of reserved and used memory.
    pub memory_billed_byte_ms: u128,
    /// Invocations the gateway completed.
    pub invocations: u64,
    /// Their billed durations, each rounded up to a whole millisecond.
    pub billed_ms: u128,
    /// Configured memory × billed duration, per invocation (Lambda's GB-seconds).
    pub invocation_byte_ms: u128,
    /// CPU time builds used.
    pub build_cpu_ns: u128,
    /// Bytes stored over time (sources and artifacts).
    pub storage_byte_ms: u128,
}

impl Usage {
    /// Adds `other` into `self`, field by field.
    pub fn merge(&mut self, other: &Usage) {
        self.cpu_used_ns = self.cpu_used_ns.saturating_add(other.cpu_used_ns);
        self.cpu_billed_ns = self.cpu_billed_ns.saturating_add(other.cpu_billed_ns);
        self.memory_used_byte_ms = self.memory_used_byte_ms.saturating_add(other.memory_used_byte_ms);
        self.memory_billed_byte_ms = self
            .memory_billed_byte_ms
            .saturating_add(other.memory_billed_byte_ms);
        self.invocations = self.invocations.saturating_add(other.invocations);
        self.billed_ms = self.billed_ms.saturating_add(other.billed_ms);
        self.invocation_byte_ms = self.invocation_byte_ms.saturating_add(other.invocation_byte_ms);
        self.build_cpu_ns = self.build_cpu_ns.saturating_add(other.build_cpu_ns);
        self.storage_byte_ms = self.storage_byte_ms.saturating_add(other.storage_byte_ms);
    }

    pub fn is_zero(&self) -> bool {
        *self == Usage::default()
    }
}

/// What a rate applies to: a line of a cost report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    /// Instance CPU, max(reserved, used), per core-hour (OpenCost).
    Cpu,
    /// Instance memory, max(reserved, used), per GB-hour (OpenCost).
    Memory,
    /// Invocations, per million (Lambda's request charge).
    Requests,
    /// Configured memory × billed duration, per GB-second (Lambda's duration charge).
    Duration,
    /// Build CPU time, per minute.
    Build,
    /// Stored bytes, per GB-month.
    Storage,
}

impl Resource {
    pub const ALL: [Resource; 6] = [
        Resource::Cpu,
        Resource::Memory,
        Resource::Requests,
        Resource::Duration,
        Resource::Build,
        Resource::Storage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
            Resource::Requests => "requests",
            Resource::Duration => "duration",
            Resource::Build => "build",
            Resource::Storage => "storage",
        }
    }

    /// The unit its rate is quoted per.
    pub fn rate_unit(self) -> &'static str {
        match self {
            Resource::Cpu => "core-hour",
            Resource::Memory => "GB-hour",
            Resource::Requests => "million requests",
            Resource::Duration => "GB-second",
            Resource::Build => "build-minute",
            Resource::Storage => "GB-month",
        }
    }

    /// How many of [`Resource::quantity`]'s units make one [`Resource::rate_unit`].
    pub fn units_per_rate_unit(self) -> u128 {
        match self {
            Resource::Cpu => 3_600 * NS_PER_SECOND,
            Resource::Memory => GIB * 3_600 * MS_PER_SECOND,
            Resource::Requests => 1_000_000,
            Resource::Duration => GIB * MS_PER_SECOND,
            Resource::Build => 60 * NS_PER_SECOND,
            Resource::Storage => GIB * HOURS_PER_MONTH * 3_600 * MS_PER_SECOND,
        }
    }

    /// The billed quantity of this resource in `usage`, in its smallest unit: nanoseconds for
    /// CPU, byte-milliseconds for memory and storage, a count for requests.
    pub fn quantity(self, usage: &Usage) -> u128 {
        match self {
            Resource::Cpu => usage.cpu_billed_ns,
            Resource::Memory => usage.memory_billed_byte_ms,
            Resource::Requests => u128::from(usage.invocations),
            Resource::Duration => usage.invocation_byte_ms,
            Resource::Build => usage.build_cpu_ns,
            Resource::Storage => usage.storage_byte_ms,
        }
    }

    /// The part of `usage` that belongs to this resource, the rest zero.
    pub fn project(self, usage: &Usage) -> Usage {
        let mut out = Usage::default();
        match self {
            Resource::Cpu => {
                out.cpu_used_ns = usage.cpu_used_ns;
                out.cpu_billed_ns = usage.cpu_billed_ns;
            }
            Resource::Memory => {
                out.memory_used_byte_ms = usage.memory_used_byte_ms;
                out.memory_billed_byte_ms = usage.memory_billed_byte_ms;
            }
            Resource::Requests => out.invocations = usage.invocations,
            Resource::Duration => {
                out.billed_ms = usage.billed_ms;
                out.invocation_byte_ms = usage.invocation_byte_ms;
            }
            Resource::Build => out.build_cpu_ns = usage.build_cpu_ns,
            Resource::Storage => out.storage_byte_ms = usage.storage_byte_ms,
        }
        out
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a bucket's usage belongs. Ordered by tenant, function, then time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BucketKey {
    pub tenant: String,
    /// `None` for usage of the tenant as a whole (stored bytes).
    pub function: Option<String>,
    pub minute: Minute,
}

/// One row of metered usage: a tenant's (function's) usage in one UTC minute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UsageBucket {
    pub tenant: String,
    /// `None` for usage of the tenant as a whole (stored bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    pub minute: Minute,
    pub usage: Usage,
}

/// Two buckets with different keys cannot be merged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "cannot merge usage of {}/{} at {} into {}/{} at {}: buckets merge only with the same tenant, function and minute",
    other.tenant, other.function.as_deref().unwrap_or("-"), other.minute,
    into.tenant, into.function.as_deref().unwrap_or("-"), into.minute
)]
pub struct BucketMismatch {
    pub into: BucketKey,
    pub other: BucketKey,
}

impl UsageBucket {
    pub fn key(&self) -> BucketKey {
        BucketKey {
            tenant: self.tenant.clone(),
            function: self.function.clone(),
            minute: self.minute,
        }
    }

    /// Adds `other`'s usage into this bucket; refuses a bucket with another key.
    pub fn merge(&mut self, other: &UsageBucket) -> Result<(), BucketMismatch> {
        if self.tenant != other.tenant || self.function != other.function || self.minute != other.minute {
            return Err(BucketMismatch {
                into: self.key(),
                other: other.key(),
            });
        }
        self.usage.merge(&other.usage);
        Ok(())
    }
}

/// One bucket per key, in key order, without empty buckets: what a flush writes and what the
/// store holds, whatever the order and grouping the increments arrived in.
pub fn compact(buckets: impl IntoIterator<Item = UsageBucket>) -> Vec<UsageBucket> {
    let mut merged: BTreeMap<BucketKey, Usage> = BTreeMap::new();
    for bucket in buckets {
        merged.entry(bucket.key()).or_default().merge(&bucket.usage);
    }
    merged
        .into_iter()
        .filter(|(_, usage)| !usage.is_zero())
        .map(|(key, usage)| UsageBucket {
            tenant: key.tenant,
            function: key.function,
            minute: key.minute,
            usage,
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn usage_strategy() -> impl Strategy<Value = Usage> {
        (
            (0u128..1 << 50, 0u128..1 << 50, 0u128..1 << 60, 0u128..1 << 60),
            (0u64..1 << 30, 0u128..1 << 40, 0u128..1 << 60),
            (0u128..1 << 50, 0u128..1 << 60),
        )
            .prop_map(|((cu, cb, mu, mb), (inv, ms, ibm), (build, storage))| Usage {
                cpu_used_ns: cu,
                cpu_billed_ns: cb,
                memory_used_byte_ms: mu,
                memory_billed_byte_ms: mb,
                invocations: inv,
                billed_ms: ms,
                invocation_byte_ms: ibm,
                build_cpu_ns: build,
                storage_byte_ms: storage,
            })
    }

    fn bucket(usage: Usage) -> UsageBucket {
        UsageBucket {
            tenant: "acme".into(),
            function: Some("hello".into()),
            minute: Minute::of(DateTime::from_timestamp(1_800_000_000, 0).unwrap()),
            usage,
        }
    }

    #[test]
    fn minutes_floor_to_utc_minute_starts() {
        let at = DateTime::parse_from_rfc3339("2026-11-01T12:34:56.789Z")
            .unwrap()
            .to_utc();
        let m = Minute::of(at);
        assert_eq!(m.to_string(), "2026-11-01T12:34:00Z");
        assert_eq!(Minute::of(m.start()), m);
        let before_epoch = DateTime::from_timestamp(-1, 0).unwrap();
        assert_eq!(Minute::of(before_epoch).index(), -1, "floors, not truncates");
        assert_eq!(Minute::from_index(m.index()), Some(m));
        assert_eq!(Minute::from_index(i64::MAX), None);
        assert_eq!(
            Minute::of(DateTime::<Utc>::MIN_UTC).start(),
            DateTime::<Utc>::MIN_UTC
        );
    }

    #[test]
    fn minutes_serialize_as_their_start_and_refuse_other_instants() {
        let m: Minute = serde_json::from_str("\"2026-11-01T12:34:00Z\"").unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"2026-11-01T12:34:00Z\"");
        assert!(serde_json::from_str::<Minute>("\"2026-11-01T12:34:01Z\"").is_err());
    }

    #[test]
    fn buckets_round_trip_through_json_with_full_precision() {
        let b = bucket(Usage {
            memory_billed_byte_ms: u128::MAX - 1,
            invocations: 3,
            ..Usage::default()
        });
        let json = serde_json::to_string(&b).unwrap();
        assert!(
            json.contains("\"memoryBilledByteMs\":340282366920938463463374607431768211454"),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<UsageBucket>(&json).unwrap(), b);
    }

    #[test]
    fn buckets_merge_only_with_the_same_key() {
        let mut a = bucket(Usage {
            invocations: 1,
            ..Usage::default()
        });
        let mut other = a.clone();
        other.function = Some("other".into());
        let err = a.merge(&other).unwrap_err();
        assert!(err.to_string().contains("acme/other"), "{err}");
        assert_eq!(a.usage.invocations, 1, "a refused merge changes nothing");
        a.merge(&a.clone()).unwrap();
        assert_eq!(a.usage.invocations, 2);
    }

    #[test]
    fn merge_saturates_instead_of_wrapping() {
        let mut a = Usage {
            cpu_used_ns: u128::MAX,
            ..Usage::default()
        };
        a.merge(&Usage {
            cpu_used_ns: 1,
            ..Usage::default()
        });
        assert_eq!(a.cpu_used_ns, u128::MAX);
    }

    #[test]
    fn resource_units_match_their_rate_units() {
        assert_eq!(Resource::Cpu.units_per_rate_unit(), 3_600_000_000_000);
        assert_eq!(Resource::Memory.units_per_rate_unit(), (1 << 30) * 3_600_000);
        assert_eq!(Resource::Duration.units_per_rate_unit(), (1 << 30) * 1_000);
        assert_eq!(
            Resource::Storage.units_per_rate_unit(),
            (1 << 30) * 730 * 3_600_000
        );
        let u = Usage {
            cpu_used_ns: 1,
            cpu_billed_ns: 2,
            invocations: 3,
            ..Usage::default()
        };
        for (i, resource) in Resource::ALL.into_iter().enumerate() {
            assert_eq!(resource as usize, i, "tables are indexed by resource");
        }
        assert_eq!(Resource::Cpu.quantity(&u), 2, "the billed quantity");
        assert_eq!(Resource::Requests.quantity(&u), 3);
        assert_eq!(
            Resource::ALL.iter().fold(Usage::default(), |mut acc, r| {
                acc.merge(&r.project(&u));
                acc
            }),
            u,
            "the projections partition a usage"
        );
    }

    proptest! {
        #[test]
        fn merge_is_associative_and_commutative(
            a in usage_strategy(), b in usage_strategy(), c in usage_strategy()
        ) {
            let (mut ab, mut ba) = (bucket(a), bucket(b));
            ab.merge(&bucket(b)).unwrap();
            ba.merge(&bucket(a)).unwrap();
            prop_assert_eq!(&ab, &ba);

            let mut ab_c = ab.clone();
            ab_c.merge(&bucket(c)).unwrap();
            let mut bc = bucket(b);
            bc.merge(&bucket(c)).unwrap();
            let mut a_bc = bucket(a);
            a_bc.merge(&bc).unwrap();
            prop_assert_eq!(ab_c, a_bc);

            let mut zero = bucket(a);
            zero.merge(&bucket(Usage::default())).unwrap();
            prop_assert_eq!(zero, bucket(a), "zero is the identity");
        }

        #[test]
        fn compaction_ignores_order_and_keeps_totals(
            items in proptest::collection::vec((0u8..3, 0i64..4, usage_strategy()), 0..40),
        ) {
            let buckets: Vec<UsageBucket> = items
                .iter()
                .map(|(f, m, usage)| UsageBucket {
                    tenant: "t".into(),
                    function: (*f > 0).then(|| format!("f{f}")),
                    minute: Minute::from_index(*m).unwrap(),
                    usage: *usage,
                })
                .collect();
            let forward = compact(buckets.clone());
            let backward = compact(buckets.iter().rev().cloned());
            prop_assert_eq!(&forward, &backward);
            prop_assert_eq!(compact(forward.clone()), forward.clone(), "compaction is idempotent");
            let total = |bs: &[UsageBucket]| bs.iter().fold(Usage::default(), |mut acc, b| {
                acc.merge(&b.usage);
                acc
            });
            prop_assert_eq!(total(&forward), total(&buckets));
            prop_assert!(forward.windows(2).all(|w| w[0].key() < w[1].key()));
        }
    }
}
