//! The cost model's arithmetic (DESIGN §6). A cost is quantity × rate, computed exactly as a
//! fraction of a micro-unit and rounded once: on its own, half to even ([`RateCard::cost`]); in
//! a report, by the largest-remainder method over its rows, so the rows' costs add up exactly
//! to the report's total, which is the exact total rounded half to even. Idle capacity
//! ([`split_idle`]) is what a node offered minus what tenants were billed for, so tenant charges
//! plus idle make up the node's cost exactly.

use std::cmp::Reverse;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::money::Money;
use crate::rates::RateCard;
use crate::scheduling::Resources;
use crate::usage::{Resource, Usage};

/// Pico-units per micro-unit: rates are in 10⁻¹², money in 10⁻⁶.
const PICO_PER_MICRO: u128 = 1_000_000;
/// Nanoseconds of CPU one millicore provides per millisecond.
const NS_PER_MILLICORE_MS: u128 = 1_000;

/// A cost per resource, and their sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Costs {
    pub cpu: Money,
    pub memory: Money,
    pub requests: Money,
    pub duration: Money,
    pub build: Money,
    pub storage: Money,
    /// The sum of the above.
    pub total: Money,
}

/// Why a cost cannot be computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CostError {
    /// The cost exceeds what money holds (2⁶⁴ micro-units, about 18 trillion): the usage or
    /// the rate is wrong by orders of magnitude.
    #[error("the {resource} cost is beyond 18 trillion; check the rates and the metered usage")]
    Overflow { resource: Resource },
}

impl Costs {
    pub fn get(&self, resource: Resource) -> Money {
        match resource {
            Resource::Cpu => self.cpu,
            Resource::Memory => self.memory,
            Resource::Requests => self.requests,
            Resource::Duration => self.duration,
            Resource::Build => self.build,
            Resource::Storage => self.storage,
        }
    }

    /// Costs from one amount per resource (in [`Resource::ALL`] order), with their total.
    pub fn from_parts(parts: [Money; 6]) -> Result<Costs, CostError> {
        let mut costs = Costs::default();
        for (resource, amount) in Resource::ALL.into_iter().zip(parts) {
            let slot = match resource {
                Resource::Cpu => &mut costs.cpu,
                Resource::Memory => &mut costs.memory,
                Resource::Requests => &mut costs.requests,
                Resource::Duration => &mut costs.duration,
                Resource::Build => &mut costs.build,
                Resource::Storage => &mut costs.storage,
            };
            *slot = amount;
            costs.total = costs
                .total
                .checked_add(amount)
                .ok_or(CostError::Overflow { resource })?;
        }
        Ok(costs)
    }

    /// The resource-wise sum of two costs.
    pub fn checked_add(&self, other: &Costs) -> Result<Costs, CostError> {
        let mut parts = [Money::ZERO; 6];
        for (slot, resource) in parts.iter_mut().zip(Resource::ALL) {
            *slot = self
                .get(resource)
                .checked_add(other.get(resource))
                .ok_or(CostError::Overflow { resource })?;
        }
        Costs::from_parts(parts)
    }
}

/// A cost before rounding: `micros + remainder / denominator` micro-units, where the
/// denominator is [`denominator`] of its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExactCost {
    micros: u128,
    remainder: u128,
}

/// The denominator of a resource's exact costs: a cost in micro-units is quantity × rate
/// (pico-units per rate unit) / (quantity units per rate unit × pico-units per micro-unit).
fn denominator(resource: Resource) -> u128 {
    resource.units_per_rate_unit() * PICO_PER_MICRO
}

/// The exact cost of `quantity` of `resource` (in its smallest unit) at `rates`.
pub(crate) fn exact_cost(
    rates: &RateCard,
    resource: Resource,
    quantity: u128,
) -> Result<ExactCost, CostError> {
    let (micros, remainder) = mul_div(quantity, rates.pico_per_unit(resource), denominator(resource))
        .ok_or(CostError::Overflow { resource })?;
    Ok(ExactCost { micros, remainder })
}

/// Rounds exact costs of one resource to micro-units so that they add up to their exact sum
/// rounded half to even. Each gets its exact cost rounded down, and the micro-units left over
/// go one each to the costs with the largest remainders (earliest first on a tie): Hamilton's
/// largest-remainder method. Every result is within one micro-unit of its exact cost, and none
/// with a zero remainder is rounded up.
pub(crate) fn allocate(resource: Resource, costs: &[ExactCost]) -> Result<Vec<Money>, CostError> {
    let overflow = CostError::Overflow { resource };
    let d = denominator(resource);
    let floors = costs
        .iter()
        .try_fold(0u128, |acc, c| acc.checked_add(c.micros))
        .ok_or(overflow)?;
    let remainders = costs
        .iter()
        .try_fold(0u128, |acc, c| acc.checked_add(c.remainder))
        .ok_or(overflow)?;
    let base = floors.checked_add(remainders / d).ok_or(overflow)?;
    let left = remainders % d;
    let round_up = 2 * left > d || (2 * left == d && base % 2 == 1);
    let total = base + u128::from(round_up);
    // At most one per cost with a non-zero remainder, since each remainder is below d.
    let spare = usize::try_from(total - floors).map_err(|_| overflow)?;
    let mut order: Vec<usize> = (0..costs.len()).collect();
    order.sort_by_key(|&i| Reverse(costs[i].remainder));
    let mut out: Vec<u128> = costs.iter().map(|c| c.micros).collect();
    for &i in order.iter().take(spare) {
        out[i] += 1;
    }
    out.into_iter()
        .map(|m| u64::try_from(m).map(Money::from_micros).map_err(|_| overflow))
        .collect()
}

impl RateCard {
    /// What `usage` costs, each resource rounded half to even to the micro-unit, once.
    pub fn cost(&self, usage: &Usage) -> Result<Costs, CostError> {
        let mut parts = [Money::ZERO; 6];
        for (slot, resource) in parts.iter_mut().zip(Resource::ALL) {
            let exact = exact_cost(self, resource, resource.quantity(usage))?;
            *slot = allocate(resource, &[exact])?[0];
        }
        Costs::from_parts(parts)
    }
}

/// The capacity `resources` offer for `ms` milliseconds, as billed CPU and memory quantities.
pub fn capacity_usage(resources: Resources, ms: u64) -> Usage {
    let ms = u128::from(ms);
    Usage {
        cpu_billed_ns: u128::from(resources.cpu_millis) * NS_PER_MILLICORE_MS * ms,
        memory_billed_byte_ms: u128::from(resources.memory_bytes) * ms,
        ..Usage::default()
    }
}

/// Capacity offered against capacity billed to tenants, for CPU and memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdleSplit {
    /// Capacity no tenant was billed for: offered − billed, or zero.
    pub idle: Usage,
    /// Billed beyond the capacity offered: billed − offered, or zero. Tenants can exceed it
    /// when CPU bursts above the reservations or capacity is overcommitted; they pay for what
    /// they used, and idle is zero rather than negative.
    pub overcommit: Usage,
}

/// Splits `capacity` (from [`capacity_usage`]) against the usage billed to tenants over the
/// same time. Only billed CPU and memory count: the other resources have no node capacity.
/// Because cost is linear in quantity, billed + idle = max(capacity, billed) holds for costs
/// as exactly as for quantities.
pub fn split_idle(capacity: &Usage, billed: &Usage) -> IdleSplit {
    let mut split = IdleSplit::default();
    split.idle.cpu_billed_ns = capacity.cpu_billed_ns.saturating_sub(billed.cpu_billed_ns);
    split.overcommit.cpu_billed_ns = billed.cpu_billed_ns.saturating_sub(capacity.cpu_billed_ns);
    split.idle.memory_billed_byte_ms = capacity
        .memory_billed_byte_ms
        .saturating_sub(billed.memory_billed_byte_ms);
    split.overcommit.memory_billed_byte_ms = billed
        .memory_billed_byte_ms
        .saturating_sub(capacity.memory_billed_byte_ms);
    split
}

/// `a × b / d` as (quotient, remainder) without overflow of the product; `None` when `d` is 0
/// or the quotient does not fit in `u128`.
fn mul_div(a: u128, b: u128, d: u128) -> Option<(u128, u128)> {
    let (hi, lo) = mul_wide(a, b);
    if d == 0 || hi >= d {
        return None;
    }
    // Long division of the 256-bit product, one bit at a time; `rem < d` throughout.
    let (mut quotient, mut rem) = (0u128, hi);
    for bit in (0..128).rev() {
        let carry = rem >> 127;
        rem = (rem << 1) | ((lo >> bit) & 1);
        quotient <<= 1;
        if carry == 1 || rem >= d {
            // The true value (2⁻¹²⁸·carry + rem) is below 2d, so this is exact.
            rem = rem.wrapping_sub(d);
            quotient |= 1;
        }
    }
    Some((quotient, rem))
}

/// The 256-bit product of `a` and `b` as (high, low) halves.
fn mul_wide(a: u128, b: u128) -> (u128, u128) {
    const MASK: u128 = u64::MAX as u128;
    let (a1, a0) = (a >> 64, a & MASK);
    let (b1, b0) = (b >> 64, b & MASK);
    let (p00, p01, p10, p11) = (a0 * b0, a0 * b1, a1 * b0, a1 * b1);
    // Below 3 · 2⁶⁴: no overflow.
    let mid = (p00 >> 64) + (p01 & MASK) + (p10 & MASK);
    let lo = (p00 & MASK) | (mid << 64);
    let hi = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
    (hi, lo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rates::Rates;
    use proptest::prelude::*;

    fn card() -> RateCard {
        Rates::default().validate().unwrap()
    }

    #[test]
    fn costs_follow_the_published_examples() {
        // Lambda's example: 128 MB for 50 ms, a million times: 6 250 GB-s × 0.0000166667
        // = 0.10416687 (to the micro-unit 0.104167), plus 0.20 for the requests.
        let usage = Usage {
            invocations: 1_000_000,
            invocation_byte_ms: (128 << 20) * 50 * 1_000_000,
            ..Usage::default()
        };
        let c = card().cost(&usage).unwrap();
        assert_eq!(c.duration, Money::from_micros(104_167));
        assert_eq!(c.requests, Money::from_micros(200_000));
        assert_eq!(c.total, Money::from_micros(304_167));
        // One core for an hour and 1 GiB for an hour at OpenCost's defaults.
        let hour = Usage {
            cpu_billed_ns: 3_600_000_000_000,
            memory_billed_byte_ms: (1 << 30) * 3_600_000,
            ..Usage::default()
        };
        let c = card().cost(&hour).unwrap();
        assert_eq!(
            (c.cpu, c.memory),
            (Money::from_micros(31_611), Money::from_micros(4_237))
        );
    }

    #[test]
    fn a_lone_cost_rounds_half_to_even() {
        // 1 request at 0.20 per million = 0.2 micro-units; 2.5 → 2, 3.5 → 4.
        let exact = |n: u128| exact_cost(&card(), Resource::Requests, n).unwrap();
        let round = |n| allocate(Resource::Requests, &[exact(n)]).unwrap()[0].micros();
        assert_eq!(round(1), 0);
        assert_eq!(round(3), 1, "0.6 rounds up");
        assert_eq!(round(12), 2, "2.4 rounds down");
        assert_eq!(round(10), 2);
        assert_eq!(round(25), 5);
        let half = Rates {
            invocation_per_million: 0.5, // 0.5 micro-units per request
            ..Rates::default()
        }
        .validate()
        .unwrap();
        let round = |n| {
            let e = exact_cost(&half, Resource::Requests, n).unwrap();
            allocate(Resource::Requests, &[e]).unwrap()[0].micros()
        };
        assert_eq!(round(5), 2, "2.5 → 2");
        assert_eq!(round(7), 4, "3.5 → 4");
    }

    #[test]
    fn rows_share_the_rounded_total_by_largest_remainder() {
        // At 0.2 micro-units a request: three rows of 0.4 make 1.2, which rounds to 1 and goes
        // to the first row; rows of 0.4, 0.8 and 0.2 make 1.4, and the 0.8 gets the micro-unit.
        let exact = |n| exact_cost(&card(), Resource::Requests, n).unwrap();
        let got = allocate(Resource::Requests, &[exact(2), exact(2), exact(2)]).unwrap();
        assert_eq!(got, [1, 0, 0].map(Money::from_micros));
        let got = allocate(Resource::Requests, &[exact(2), exact(4), exact(1)]).unwrap();
        assert_eq!(
            got,
            [0, 1, 0].map(Money::from_micros),
            "the largest remainder first"
        );
        let got = allocate(Resource::Requests, &[exact(3), exact(4), exact(1)]).unwrap();
        assert_eq!(got, [1, 1, 0].map(Money::from_micros), "1.6 rounds to 2");
        assert_eq!(allocate(Resource::Requests, &[]).unwrap(), []);
    }

    #[test]
    fn costs_beyond_money_are_an_error_not_a_wrap() {
        let usage = Usage {
            storage_byte_ms: u128::MAX,
            ..Usage::default()
        };
        let err = card().cost(&usage).unwrap_err();
        assert_eq!(
            err,
            CostError::Overflow {
                resource: Resource::Storage
            }
        );
        assert!(err.to_string().contains("storage"), "{err}");
    }

    #[test]
    fn idle_is_capacity_not_billed_and_never_negative() {
        let cap = capacity_usage(
            Resources {
                cpu_millis: 2_000,
                memory_bytes: 1 << 30,
            },
            60_000,
        );
        assert_eq!(cap.cpu_billed_ns, 120_000_000_000);
        assert_eq!(cap.memory_billed_byte_ms, (1 << 30) * 60_000);
        let billed = Usage {
            cpu_billed_ns: 150_000_000_000,
            memory_billed_byte_ms: (1 << 29) * 60_000,
            invocations: 9,
            ..Usage::default()
        };
        let split = split_idle(&cap, &billed);
        assert_eq!(split.idle.cpu_billed_ns, 0);
        assert_eq!(split.overcommit.cpu_billed_ns, 30_000_000_000, "a burst");
        assert_eq!(split.idle.memory_billed_byte_ms, (1 << 29) * 60_000);
        assert_eq!(split.idle.invocations, 0, "requests have no capacity");
    }

    #[test]
    fn wide_multiplication_is_exact_at_the_edges() {
        assert_eq!(mul_wide(u128::MAX, u128::MAX), (u128::MAX - 1, 1));
        assert_eq!(mul_div(u128::MAX, u128::MAX, u128::MAX), Some((u128::MAX, 0)));
        assert_eq!(mul_div(u128::MAX, 2, 1), None, "the quotient overflows");
        assert_eq!(mul_div(1, 1, 0), None);
        assert_eq!(mul_div(1 << 127, 4, 3), Some(((1u128 << 127) / 3 * 4 + 2, 2)));
    }

    proptest! {
        #[test]
        fn wide_division_matches_narrow_where_both_work(
            a in any::<u64>(), b in any::<u64>(), d in 1u128..,
        ) {
            let p = u128::from(a) * u128::from(b);
            prop_assert_eq!(mul_div(u128::from(a), u128::from(b), d), Some((p / d, p % d)));
        }

        #[test]
        fn wide_division_reconstructs_the_product(a in any::<u128>(), b in any::<u128>(), d in 1u128..) {
            if let Some((q, r)) = mul_div(a, b, d) {
                prop_assert!(r < d);
                // q·d + r == a·b, compared as 256-bit numbers.
                let (qh, ql) = mul_wide(q, d);
                let (lo, carry) = ql.overflowing_add(r);
                prop_assert_eq!((qh + u128::from(carry), lo), mul_wide(a, b));
            } else {
                prop_assert!(mul_wide(a, b).0 >= d);
            }
        }

        #[test]
        fn allocation_adds_up_and_stays_within_one_micro_unit(
            quantities in proptest::collection::vec(0u128..1 << 58, 0..50),
            resource in proptest::sample::select(Resource::ALL.to_vec()),
        ) {
            let card = card();
            let exact: Vec<ExactCost> =
                quantities.iter().map(|&q| exact_cost(&card, resource, q).unwrap()).collect();
            let got = allocate(resource, &exact).unwrap();
            let sum: u128 = got.iter().map(|m| u128::from(m.micros())).sum();
            let whole = exact_cost(&card, resource, quantities.iter().sum()).unwrap();
            let rounded = allocate(resource, &[whole]).unwrap()[0];
            prop_assert_eq!(sum, u128::from(rounded.micros()), "rows add up to the rounded exact total");
            for (m, e) in got.iter().zip(&exact) {
                let m = u128::from(m.micros());
                prop_assert!(m == e.micros || (m == e.micros + 1 && e.remainder > 0));
            }
        }
    }
}
