//! Metering (DESIGN §6): turns what the runtime, the gateway and the builder observe into
//! per-minute [`UsageBucket`] increments, in integers, so that buckets add up exactly.
//!
//! **Instances.** The runtime reads each instance's cgroup every few seconds (CPU: v2
//! `cpu.stat` `usage_usec` × 1000 or v1 `cpuacct.usage`; memory: v2 `memory.current` or v1
//! `memory.usage_in_bytes`) and hands the [`CgroupReading`] to the instance's [`InstanceMeter`].
//! For each interval [t₀, t₁) between two accepted readings:
//! - CPU used is the counter's increase; CPU billed is max(reserved millicores × time, CPU used)
//!   for each minute's piece of the interval, so an instance pays for what it reserved and for
//!   any burst above it.
//! - Memory is integrated with the trapezoid rule: (m₀ + m₁) / 2 × (t₁ − t₀), where memory used is
//!   the value read and memory billed is max(reserved, used) at each end ("max of reserved and
//!   used, per second" in DESIGN §6, with the sampling period as the second). The trapezoid's
//!   error shrinks with the square of the sampling period where a step's shrinks linearly, and a
//!   new instance's memory ramps up from its zero baseline instead of counting as zero for a
//!   whole interval.
//! - The interval is split at UTC minute boundaries in proportion to time. Reserved CPU is exact
//!   per millisecond; CPU used and memory are spread with cumulative floors (piece =
//!   ⌊q·upto/len⌋ − ⌊q·before/len⌋), so the pieces add up exactly to the interval's quantity.
//! - Times count to the millisecond (truncated). Consecutive intervals share their ends, so the
//!   truncation moves usage by under a millisecond but never drops or repeats any.
//!
//! **Readings out of line** are skipped, leaving the meter as it was ([`Skipped`]): a reading at
//! the same millisecond as the last accepted one is a duplicate (the checkpoint read again after
//! a restart, whatever its values); an earlier one is out of order. A CPU counter below the last
//! one means the cgroup was recreated under the same meter: the interval's CPU is the new counter
//! value, all of it used since the reset (the rule of Prometheus's `increase()`), and
//! [`Metered::counter_reset`] says so for the log.
//!
//! **Restarts.** A meter's whole state is its last accepted reading,
//! [`InstanceMeter::checkpoint`]. The server stores it in the same transaction as the buckets
//! that reading produced, and after a restart resumes from it ([`InstanceMeter::resume`]): the
//! next reading meters exactly the time since the checkpoint, so nothing is lost or counted
//! twice. (An instance that stops while the server is down has no later reading, and bills up
//! to its checkpoint.) Stored bytes work the same way ([`StorageMeter`]).
//!
//! **Invocations** are billed Lambda's way: the duration rounded up to the next whole
//! millisecond ([`billed_ms`]), and GB-seconds as configured memory × billed duration. **Builds**
//! count the CPU time of the build, spread over the minutes it ran.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::scheduling::Resources;
use crate::usage::{Minute, Usage, UsageBucket};

/// Nanoseconds of CPU time one millicore provides in a millisecond.
const NS_PER_MILLICORE_MS: u128 = 1_000;
const NS_PER_MS: u128 = 1_000_000;

/// One reading of an instance's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CgroupReading {
    pub at: DateTime<Utc>,
    /// The cgroup's cumulative CPU time counter, in nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory charged to the cgroup now.
    pub memory_bytes: u64,
}

/// Why a reading was not metered. The meter is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Skipped {
    /// The reading has the last accepted reading's time (to the millisecond): a repeat, such as
    /// the checkpoint read again after a restart.
    #[error("reading at {at} repeats the time of the last accepted reading; skipped")]
    Duplicate { at: DateTime<Utc> },
    /// The reading is older than the last accepted one.
    #[error("reading at {at} is older than the last accepted reading at {last}; skipped")]
    OutOfOrder { at: DateTime<Utc>, last: DateTime<Utc> },
}

/// The usage between the previous accepted reading and this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metered {
    /// One increment per minute the interval touches, in time order.
    pub buckets: Vec<UsageBucket>,
    /// The CPU counter went backwards: the cgroup was recreated.
    pub counter_reset: bool,
}

/// Meters one instance of a function from its cgroup readings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceMeter {
    tenant: String,
    function: String,
    /// What the instance reserved: its CPU and memory limits.
    reserved: Resources,
    last: CgroupReading,
}

impl InstanceMeter {
    /// A meter for an instance whose cgroup was created at `at`: the baseline is a zero reading
    /// then, so CPU used before the first reading (start-up) is billed too.
    pub fn start(tenant: &str, function: &str, reserved: Resources, at: DateTime<Utc>) -> InstanceMeter {
        let baseline = CgroupReading {
            at,
            cpu_usage_ns: 0,
            memory_bytes: 0,
        };
        InstanceMeter::resume(tenant, function, reserved, baseline)
    }

    /// A meter that continues from a stored checkpoint, after a restart.
    pub fn resume(
        tenant: &str,
        function: &str,
        reserved: Resources,
        checkpoint: CgroupReading,
    ) -> InstanceMeter {
        InstanceMeter {
            tenant: tenant.to_owned(),
            function: function.to_owned(),
            reserved,
            last: checkpoint,
        }
    }

    /// The last accepted reading: the state to store with the buckets it produced.
    pub fn checkpoint(&self) -> CgroupReading {
        self.last
    }

    /// Meters the interval since the last accepted reading, or skips the reading.
    pub fn observe(&mut self, reading: CgroupReading) -> Result<Metered, Skipped> {
        let (t0, t1) = interval(self.last.at, reading.at)?;
        let counter_reset = reading.cpu_usage_ns < self.last.cpu_usage_ns;
        let cpu_used = if counter_reset {
            reading.cpu_usage_ns
        } else {
            reading.cpu_usage_ns - self.last.cpu_usage_ns
        };
        let reserved_memory = self.reserved.memory_bytes;
        let used_ends = u128::from(self.last.memory_bytes) + u128::from(reading.memory_bytes);
        let billed_ends = u128::from(self.last.memory_bytes.max(reserved_memory))
            + u128::from(reading.memory_bytes.max(reserved_memory));
        let reserved_cpu_per_ms = u128::from(self.reserved.cpu_millis) * NS_PER_MILLICORE_MS;
        let len = t1.abs_diff(t0);
        let buckets = pieces(t0, t1)
            .map(|piece| {
                let cpu_used_ns = piece.share(u128::from(cpu_used), u128::from(len));
                let cpu_reserved_ns = reserved_cpu_per_ms * u128::from(piece.len());
                let usage = Usage {
                    cpu_used_ns,
                    cpu_billed_ns: cpu_used_ns.max(cpu_reserved_ns),
                    // The trapezoid: (m₀ + m₁) / 2 per millisecond.
                    memory_used_byte_ms: piece.share(used_ends, 2),
                    memory_billed_byte_ms: piece.share(billed_ends, 2),
                    ..Usage::default()
                };
                self.bucket(piece.minute, usage)
            })
            .collect();
        self.last = reading;
        Ok(Metered {
            buckets,
            counter_reset,
        })
    }

    fn bucket(&self, minute: Minute, usage: Usage) -> UsageBucket {
        UsageBucket {
            tenant: self.tenant.clone(),
            function: Some(self.function.clone()),
            minute,
            usage,
        }
    }
}

/// How many bytes a tenant stores, at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StoredBytes {
    pub at: DateTime<Utc>,
    pub bytes: u64,
}

/// Meters a tenant's stored bytes (sources and artifacts) over time. Storage changes in steps
/// (an upload, a deletion), so each reading holds until the next: the amount read at t₀ is
/// billed for [t₀, t₁). The server reads it whenever it changes and at least every few minutes.
/// Same skip and checkpoint rules as [`InstanceMeter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageMeter {
    tenant: String,
    last: StoredBytes,
}

impl StorageMeter {
    /// A meter that starts from `checkpoint`: the first reading of a tenant, or the stored
    /// checkpoint after a restart.
    pub fn resume(tenant: &str, checkpoint: StoredBytes) -> StorageMeter {
        StorageMeter {
            tenant: tenant.to_owned(),
            last: checkpoint,
        }
    }

    pub fn checkpoint(&self) -> StoredBytes {
        self.last
    }

    /// Bills the stored bytes since the last accepted reading, per minute.
    pub fn observe(&mut self, reading: StoredBytes) -> Result<Vec<UsageBucket>, Skipped> {
        let (t0, t1) = interval(self.last.at, reading.at)?;
        let bytes = u128::from(self.last.bytes);
        let buckets = pieces(t0, t1)
            .map(|piece| UsageBucket {
                tenant: self.tenant.clone(),
                function: None,
                minute: piece.minute,
                usage: Usage {
                    storage_byte_ms: bytes * u128::from(piece.len()),
                    ..Usage::default()
                },
            })
            .collect();
        self.last = reading;
        Ok(buckets)
    }
}

/// The billed duration of an invocation in milliseconds: rounded up to the next whole
/// millisecond, as Lambda bills, so any invocation that ran bills at least 1 ms. A zero duration
/// bills 0 ms: the gateway reports zero only when no handler ran, and the request charge still
/// applies. Saturates at `u64::MAX` ms (585 million years).
pub fn billed_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos().div_ceil(NS_PER_MS)).unwrap_or(u64::MAX)
}

/// The usage of one invocation that finished at `finished_at` (the gateway learns its
/// duration then, so that is the minute it counts in), for a function configured with
/// `memory_bytes`.
pub fn meter_invocation(
    tenant: &str,
    function: &str,
    finished_at: DateTime<Utc>,
    duration: Duration,
    memory_bytes: u64,
) -> UsageBucket {
    let billed = billed_ms(duration);
    UsageBucket {
        tenant: tenant.to_owned(),
        function: Some(function.to_owned()),
        minute: Minute::of(finished_at),
        usage: Usage {
            invocations: 1,
            billed_ms: u128::from(billed),
            invocation_byte_ms: u128::from(memory_bytes) * u128::from(billed),
            ..Usage::default()
        },
    }
}

/// The usage of a build of `function` that used `cpu` between `started_at` and `finished_at`,
/// spread evenly over the minutes it ran (all in the minute it finished if it took under a
/// millisecond or the times are out of order). CPU saturates at `u64::MAX` ns (585 years).
pub fn meter_build(
    tenant: &str,
    function: &str,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    cpu: Duration,
) -> Vec<UsageBucket> {
    let cpu_ns = u128::from(u64::try_from(cpu.as_nanos()).unwrap_or(u64::MAX));
    let bucket = |minute, build_cpu_ns| UsageBucket {
        tenant: tenant.to_owned(),
        function: Some(function.to_owned()),
        minute,
        usage: Usage {
            build_cpu_ns,
            ..Usage::default()
        },
    };
    match interval(started_at, finished_at) {
        Ok((t0, t1)) => {
            let len = u128::from(t1.abs_diff(t0));
            pieces(t0, t1)
                .map(|piece| bucket(piece.minute, piece.share(cpu_ns, len)))
                .filter(|b| b.usage.build_cpu_ns > 0)
                .collect()
        }
        Err(_) => vec![bucket(Minute::of(finished_at), cpu_ns)],
    }
}

/// The interval from `last` to `at` in milliseconds since the epoch, if `at` is later.
fn interval(last: DateTime<Utc>, at: DateTime<Utc>) -> Result<(i64, i64), Skipped> {
    let (t0, t1) = (last.timestamp_millis(), at.timestamp_millis());
    match t1.cmp(&t0) {
        std::cmp::Ordering::Greater => Ok((t0, t1)),
        std::cmp::Ordering::Equal => Err(Skipped::Duplicate { at }),
        std::cmp::Ordering::Less => Err(Skipped::OutOfOrder { at, last }),
    }
}

/// The part of an interval that lies in one minute, as offsets from the interval's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Piece {
    minute: Minute,
    before: u64,
    upto: u64,
}

impl Piece {
    fn len(self) -> u64 {
        self.upto - self.before
    }

    /// This piece's share of a quantity that accrues at `numerator / denominator` per
    /// millisecond: ⌊n·upto/d⌋ − ⌊n·before/d⌋, so the shares of a partition add up to
    /// ⌊n·len/d⌋ exactly. Callers keep `numerator` below 2⁶⁶ (a `u64` counter, or the sum of two
    /// `u64` memory readings), and offsets between representable times are below 2⁵⁴ ms, so the
    /// products fit in `u128`.
    fn share(self, numerator: u128, denominator: u128) -> u128 {
        numerator * u128::from(self.upto) / denominator - numerator * u128::from(self.before) / denominator
    }
}

/// The pieces of [t0, t1) (milliseconds since the epoch, t0 < t1) in each minute it touches.
fn pieces(t0: i64, t1: i64) -> impl Iterator<Item = Piece> {
    let first = Minute::containing_ms(t0).index();
    let last = Minute::containing_ms(t1 - 1).index();
    (first..=last).map(move |index| {
        let minute = Minute::containing_ms(index * 60_000);
        let start = minute.start_ms().max(t0);
        let end = (minute.start_ms() + 60_000).min(t1);
        Piece {
            minute,
            before: start.abs_diff(t0),
            upto: end.abs_diff(t0),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::compact;
    use proptest::prelude::*;

    const T0: i64 = 1_800_000_000; // 2027-01-15T08:00:00Z, a minute start

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(T0 * 1000 + ms).unwrap()
    }

    fn reading(ms: i64, cpu_usage_ns: u64, memory_bytes: u64) -> CgroupReading {
        CgroupReading {
            at: at(ms),
            cpu_usage_ns,
            memory_bytes,
        }
    }

    fn reserved(cpu_millis: u64, memory_bytes: u64) -> Resources {
        Resources {
            cpu_millis,
            memory_bytes,
        }
    }

    fn total(buckets: &[UsageBucket]) -> Usage {
        buckets.iter().fold(Usage::default(), |mut acc, b| {
            acc.merge(&b.usage);
            acc
        })
    }

    #[test]
    fn bills_the_larger_of_reserved_and_used() {
        let mut meter = InstanceMeter::start("t", "f", reserved(500, 100), at(0));
        // 10 s at half a core reserved = 5 s of CPU; the instance used 2 s, then 9 s.
        let quiet = meter.observe(reading(10_000, 2_000_000_000, 100)).unwrap();
        assert_eq!(quiet.buckets.len(), 1);
        let u = quiet.buckets[0].usage;
        assert_eq!(u.cpu_used_ns, 2_000_000_000);
        assert_eq!(u.cpu_billed_ns, 5_000_000_000, "the reservation");
        let busy = meter.observe(reading(20_000, 11_000_000_000, 300)).unwrap();
        let u = busy.buckets[0].usage;
        assert_eq!(u.cpu_billed_ns, 9_000_000_000, "a burst above the reservation");
        // Memory: reserved 100 bytes, used 100 → 300; the trapezoid gives 200 × 10 000 ms.
        assert_eq!(u.memory_used_byte_ms, 2_000_000);
        assert_eq!(u.memory_billed_byte_ms, 2_000_000);
        assert!(!busy.counter_reset);
        assert_eq!(meter.checkpoint(), reading(20_000, 11_000_000_000, 300));
    }

    #[test]
    fn memory_below_the_reservation_bills_the_reservation() {
        let mut meter = InstanceMeter::start("t", "f", reserved(0, 1 << 20), at(0));
        let u = meter.observe(reading(1_000, 0, 1 << 10)).unwrap().buckets[0].usage;
        assert_eq!(u.memory_billed_byte_ms, (1 << 20) * 1_000);
        assert_eq!(
            u.memory_used_byte_ms,
            (1 << 10) / 2 * 1_000,
            "used ramps up from the zero baseline"
        );
    }

    #[test]
    fn splits_an_interval_at_the_minute_boundary_in_proportion() {
        let mut meter = InstanceMeter::resume("t", "f", reserved(1000, 0), reading(50_000, 0, 1_000));
        // 50 s → 70 s: 10 s in the first minute, 10 s in the next; 3 ns of CPU does not halve.
        let m = meter.observe(reading(70_000, 3, 1_000)).unwrap();
        assert_eq!(m.buckets.len(), 2);
        let (a, b) = (&m.buckets[0], &m.buckets[1]);
        assert_eq!(a.minute, Minute::of(at(0)));
        assert_eq!(b.minute, Minute::of(at(60_000)));
        assert_eq!(a.usage.cpu_used_ns + b.usage.cpu_used_ns, 3, "exact in total");
        assert_eq!(
            (a.usage.cpu_used_ns, b.usage.cpu_used_ns),
            (1, 2),
            "cumulative floors"
        );
        assert_eq!(
            a.usage.cpu_billed_ns, 10_000_000_000,
            "one core reserved for 10 s"
        );
        assert_eq!(a.usage.memory_used_byte_ms, 10_000_000);
        assert_eq!(b.usage.memory_used_byte_ms, 10_000_000);
    }

    #[test]
    fn a_long_gap_fills_every_minute_it_spans() {
        let mut meter = InstanceMeter::start("t", "f", reserved(250, 0), at(30_000));
        let m = meter
            .observe(reading(30_000 + 5 * 60_000, 600_000_000_000, 0))
            .unwrap();
        assert_eq!(m.buckets.len(), 6, "half, four whole, half");
        assert_eq!(total(&m.buckets).cpu_used_ns, 600_000_000_000);
        assert_eq!(
            m.buckets[1].usage.cpu_used_ns, 120_000_000_000,
            "a whole minute's share"
        );
    }

    #[test]
    fn skips_duplicates_and_readings_out_of_order() {
        let mut meter = InstanceMeter::start("t", "f", reserved(100, 0), at(0));
        meter.observe(reading(5_000, 10, 0)).unwrap();
        let before = meter.clone();
        assert_eq!(
            meter.observe(reading(5_000, 99, 7)),
            Err(Skipped::Duplicate { at: at(5_000) }),
            "the same millisecond, whatever the values"
        );
        let sub_ms = CgroupReading {
            at: at(5_000) + chrono::TimeDelta::microseconds(300),
            ..reading(5_000, 11, 0)
        };
        assert!(matches!(meter.observe(sub_ms), Err(Skipped::Duplicate { .. })));
        let err = meter.observe(reading(4_000, 10, 0)).unwrap_err();
        assert_eq!(
            err,
            Skipped::OutOfOrder {
                at: at(4_000),
                last: at(5_000)
            }
        );
        assert!(
            err.to_string().contains("older than the last accepted reading"),
            "{err}"
        );
        assert_eq!(meter, before, "skipped readings leave the meter as it was");
    }

    #[test]
    fn a_counter_reset_counts_the_new_counter_from_zero() {
        let mut meter = InstanceMeter::start("t", "f", reserved(0, 0), at(0));
        meter.observe(reading(1_000, 5_000, 0)).unwrap();
        let m = meter.observe(reading(2_000, 700, 0)).unwrap();
        assert!(m.counter_reset);
        assert_eq!(total(&m.buckets).cpu_used_ns, 700);
        let next = meter.observe(reading(3_000, 900, 0)).unwrap();
        assert!(!next.counter_reset);
        assert_eq!(total(&next.buckets).cpu_used_ns, 200);
    }

    #[test]
    fn invocations_bill_whole_milliseconds_rounded_up() {
        assert_eq!(billed_ms(Duration::ZERO), 0);
        assert_eq!(billed_ms(Duration::from_nanos(1)), 1);
        assert_eq!(billed_ms(Duration::from_micros(1_000)), 1);
        assert_eq!(billed_ms(Duration::from_micros(1_001)), 2);
        assert_eq!(billed_ms(Duration::from_millis(250)), 250);
        assert_eq!(billed_ms(Duration::MAX), u64::MAX);
        let b = meter_invocation("t", "f", at(61_500), Duration::from_micros(12_300), 128 << 20);
        assert_eq!(b.minute, Minute::of(at(60_000)), "counted when it finished");
        assert_eq!(b.usage.invocations, 1);
        assert_eq!(b.usage.billed_ms, 13);
        assert_eq!(b.usage.invocation_byte_ms, (128 << 20) * 13);
    }

    #[test]
    fn builds_spread_their_cpu_over_the_minutes_they_ran() {
        let buckets = meter_build("t", "f", at(30_000), at(90_000), Duration::from_secs(60));
        assert_eq!(buckets.len(), 2);
        assert_eq!(buckets[0].usage.build_cpu_ns, 30_000_000_000);
        assert_eq!(total(&buckets).build_cpu_ns, 60_000_000_000);
        let odd = meter_build("t", "f", at(90_000), at(30_000), Duration::from_secs(1));
        assert_eq!(odd.len(), 1, "times out of order: all at the end");
        assert_eq!(odd[0].minute, Minute::of(at(30_000)));
    }

    #[test]
    fn storage_holds_each_reading_until_the_next() {
        let start = StoredBytes {
            at: at(0),
            bytes: 1_000,
        };
        let mut meter = StorageMeter::resume("t", start);
        let buckets = meter
            .observe(StoredBytes {
                at: at(90_000),
                bytes: 5,
            })
            .unwrap();
        assert_eq!(buckets.len(), 2);
        assert_eq!(buckets[0].function, None, "tenant-wide");
        assert_eq!(total(&buckets).storage_byte_ms, 1_000 * 90_000);
        assert_eq!(meter.checkpoint().bytes, 5);
        assert!(
            meter
                .observe(StoredBytes {
                    at: at(90_000),
                    bytes: 7
                })
                .is_err()
        );
    }

    /// An independent reading: memory integrated at 1 ms resolution, against the meter's 1 s
    /// samples of a triangle wave (100 → 200 → 100 MiB each minute), within DESIGN §6's 1 %.
    #[test]
    fn memory_matches_a_fine_integration_within_one_percent() {
        let memory = |ms: i64| -> u64 {
            let phase = ms % 60_000;
            let up = if phase < 30_000 { phase } else { 60_000 - phase };
            (100 << 20) + (100u64 << 20) * up as u64 / 30_000
        };
        let exact: u128 = (500..600_500).map(|ms| u128::from(memory(ms))).sum();
        let mut meter = InstanceMeter::resume("t", "f", reserved(0, 0), reading(500, 0, memory(500)));
        let mut metered = Vec::new();
        for s in 1..=600 {
            let ms = 500 + s * 1_000;
            metered.extend(meter.observe(reading(ms, 0, memory(ms))).unwrap().buckets);
        }
        let billed = total(&metered).memory_used_byte_ms;
        let error = (billed as f64 - exact as f64).abs() / exact as f64;
        assert!(error < 0.01, "error {error}");
    }

    fn readings() -> impl Strategy<Value = Vec<(i64, u64, u64)>> {
        // Steps of up to 3 minutes, CPU increments (or a reset), memory.
        proptest::collection::vec((1i64..180_000, 0u64..1 << 40, 0u64..1 << 34, 0u8..20), 1..30).prop_map(
            |steps| {
                let (mut t, mut cpu) = (0i64, 0u64);
                steps
                    .into_iter()
                    .map(|(dt, dcpu, mem, reset)| {
                        t += dt;
                        cpu = if reset == 0 { dcpu } else { cpu + dcpu };
                        (t, cpu, mem)
                    })
                    .collect()
            },
        )
    }

    proptest! {
        #[test]
        fn buckets_add_up_to_the_intervals_exactly(
            steps in readings(), cpu_millis in 0u64..4_000, mem in 0u64..1 << 34, offset in 0i64..60_000,
        ) {
            let res = reserved(cpu_millis, mem);
            let mut meter = InstanceMeter::start("t", "f", res, at(offset));
            let (mut prev, mut expected) = (reading(offset, 0, 0), Usage::default());
            let mut buckets = Vec::new();
            for &(t, cpu, m) in &steps {
                let next = reading(offset + t, cpu, m);
                let len = u128::from((next.at - prev.at).num_milliseconds() as u64);
                let used = if cpu < prev.cpu_usage_ns { cpu } else { cpu - prev.cpu_usage_ns };
                expected.cpu_used_ns += u128::from(used);
                let ends = u128::from(prev.memory_bytes) + u128::from(m);
                expected.memory_used_byte_ms += ends * len / 2;
                let billed_ends = u128::from(prev.memory_bytes.max(mem)) + u128::from(m.max(mem));
                expected.memory_billed_byte_ms += billed_ends * len / 2;
                let metered = meter.observe(next).unwrap();
                for b in &metered.buckets {
                    prop_assert!(b.usage.cpu_billed_ns >= b.usage.cpu_used_ns);
                    prop_assert!(b.usage.memory_billed_byte_ms >= b.usage.memory_used_byte_ms);
                }
                buckets.extend(metered.buckets);
                prev = next;
            }
            let got = total(&buckets);
            prop_assert_eq!(got.cpu_used_ns, expected.cpu_used_ns);
            prop_assert_eq!(got.memory_used_byte_ms, expected.memory_used_byte_ms);
            prop_assert_eq!(got.memory_billed_byte_ms, expected.memory_billed_byte_ms);
            let elapsed = u128::from(steps.last().map_or(0, |s| s.0) as u64);
            prop_assert!(got.cpu_billed_ns >= u128::from(cpu_millis) * 1_000 * elapsed);
        }

        /// A restart at any point, with the checkpoint and a few readings delivered again,
        /// meters exactly what an uninterrupted meter does.
        #[test]
        fn a_restart_from_the_checkpoint_neither_loses_nor_repeats(
            steps in readings(), cut in 0usize..30, replay in 0usize..4,
        ) {
            let res = reserved(300, 1 << 20);
            let all: Vec<CgroupReading> = steps.iter().map(|&(t, c, m)| reading(t, c, m)).collect();
            let mut straight = InstanceMeter::start("t", "f", res, at(0));
            let expected: Vec<UsageBucket> =
                all.iter().flat_map(|r| straight.observe(*r).unwrap().buckets).collect();

            let cut = cut.min(all.len());
            let mut before = InstanceMeter::start("t", "f", res, at(0));
            let mut got: Vec<UsageBucket> =
                all[..cut].iter().flat_map(|r| before.observe(*r).unwrap().buckets).collect();
            let mut after = InstanceMeter::resume("t", "f", res, before.checkpoint());
            for r in &all[cut.saturating_sub(replay)..] {
                if let Ok(m) = after.observe(*r) {
                    got.extend(m.buckets);
                }
            }
            prop_assert_eq!(compact(got), compact(expected));
        }
    }
}
