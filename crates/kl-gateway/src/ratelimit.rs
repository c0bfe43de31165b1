//! Per-tenant and per-function request rate limits (GCRA), refused with 429 and `Retry-After`.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use thiserror::Error;

/// A sustained request rate and the burst allowed on top of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

impl Rate {
    /// `None` unless both numbers are at least 1: a limit with no capacity would refuse every
    /// request.
    pub fn new(per_second: u32, burst: u32) -> Option<Rate> {
        (per_second >= 1 && burst >= 1).then_some(Rate { per_second, burst })
    }

    /// The fields are public, so a zero can still be written by hand; it is read as 1 rather
    /// than refusing every request.
    fn quota(self) -> Quota {
        let at_least_one = |n| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        Quota::per_second(at_least_one(self.per_second)).allow_burst(at_least_one(self.burst))
    }
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Tenant,
    Function,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Tenant => "tenant",
            Scope::Function => "function",
        })
    }
}

/// A refused request: answered with 429 and `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("the {scope}'s rate limit is exceeded; retry after {retry_after:?}")]
pub struct Limited {
    pub scope: Scope,
    /// Until the limiter would admit the next request.
    pub retry_after: Duration,
}

impl Limited {
    /// The `Retry-After` value: whole seconds, rounded up so a client that obeys it is
    /// admitted, and at least 1 because 0 invites an immediate retry.
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        secs.max(1)
    }
}

/// One key's limiter, with the rate it was built from so an unchanged rate keeps its bucket.
struct Limiter<C: Clock> {
    rate: Rate,
    gcra: RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<C::Instant>>,
}

impl<C: Clock> Limiter<C> {
    fn check(&self, scope: Scope, clock: &C) -> Result<(), Limited> {
        self.gcra.check().map_err(|not_until| Limited {
            scope,
            retry_after: not_until.wait_time_from(clock.now()),
        })
    }
}

/// Copied on every change and swapped whole, so requests read it without a lock.
type Table<C> = ArcSwap<HashMap<String, Arc<Limiter<C>>>>;

/// The configured limits; keys without a rate are not limited.
///
/// Generic over the clock so tests can drive time with `governor::clock::FakeRelativeClock`.
pub struct RateLimits<C: Clock = DefaultClock> {
    /// Keyed by tenant name.
    tenants: Table<C>,
    /// Keyed by `tenant/function`.
    functions: Table<C>,
    clock: C,
}

impl RateLimits {
    /// No limits, on the monotonic real-time clock.
    pub fn new() -> RateLimits {
        RateLimits::with_clock(DefaultClock::default())
    }
}

impl Default for RateLimits {
    fn default() -> RateLimits {
        RateLimits::new()
    }
}

impl<C: Clock + Clone> RateLimits<C> {
    /// No limits, on `clock`.
    pub fn with_clock(clock: C) -> RateLimits<C> {
        RateLimits {
            tenants: ArcSwap::from_pointee(HashMap::new()),
            functions: ArcSwap::from_pointee(HashMap::new()),
            clock,
        }
    }

    /// Sets or (with `None`) removes the limit over all of a tenant's functions together.
    pub fn set_tenant(&self, tenant: &str, rate: Option<Rate>) {
        self.set(&self.tenants, tenant, rate);
    }

    /// Sets or (with `None`) removes one function's own limit, applied within its tenant's.
    pub fn set_function(&self, tenant: &str, function: &str, rate: Option<Rate>) {
        self.set(&self.functions, &function_key(tenant, function), rate);
    }

    /// Admits one request or says which limit refused it and for how long.
    ///
    /// Governor takes a cell only when it admits, so whichever limit is checked second loses
    /// nothing on a refusal, while one admitted by the first and refused by the second has used
    /// a cell of the first. The function limit goes first: a function hammered past its own
    /// limit then costs its tenant nothing, so it cannot starve the tenant's other functions,
    /// which is what a function limit is for. The price, a function cell spent when the tenant
    /// refuses, falls only on that function and only while the tenant is over its limit anyway.
    pub fn check(&self, tenant: &str, function: &str) -> Result<(), Limited> {
        if let Some(limiter) = self.functions.load().get(&function_key(tenant, function)) {
            limiter.check(Scope::Function, &self.clock)?;
        }
        if let Some(limiter) = self.tenants.load().get(tenant) {
            limiter.check(Scope::Tenant, &self.clock)?;
        }
        Ok(())
    }

    /// An unchanged rate keeps its limiter, so reapplying the configuration does not refill
    /// buckets; a changed rate starts from a full bucket.
    fn set(&self, table: &Table<C>, key: &str, rate: Option<Rate>) {
        if table.load().get(key).map(|limiter| limiter.rate) == rate {
            return;
        }
        let fresh = rate.map(|rate| {
            Arc::new(Limiter {
                rate,
                gcra: RateLimiter::direct_with_clock(rate.quota(), self.clock.clone()),
            })
        });
        table.rcu(|limiters| {
            let mut next = HashMap::clone(limiters);
            match &fresh {
                // Set to the same rate concurrently: keep the bucket already in use.
                Some(fresh) if next.get(key).is_some_and(|old| old.rate == fresh.rate) => {}
                Some(fresh) => {
                    next.insert(key.to_owned(), fresh.clone());
                }
                None => {
                    next.remove(key);
                }
            }
            next
        });
    }
}

fn function_key(tenant: &str, function: &str) -> String {
    format!("{tenant}/{function}")
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;
    use proptest::prelude::*;

    use super::*;

    fn rate(per_second: u32, burst: u32) -> Option<Rate> {
        Some(Rate::new(per_second, burst).unwrap())
    }

    fn limits() -> (RateLimits<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (RateLimits::with_clock(clock.clone()), clock)
    }

    fn admitted(limits: &RateLimits<FakeRelativeClock>, tenant: &str, function: &str, n: usize) -> usize {
        (0..n).filter(|_| limits.check(tenant, function).is_ok()).count()
    }

    #[test]
    fn rate_needs_positive_numbers() {
        assert_eq!(Rate::new(0, 1), None);
        assert_eq!(Rate::new(1, 0), None);
        assert_eq!(
            Rate::new(1, 1),
            Some(Rate {
                per_second: 1,
                burst: 1
            })
        );
    }

    #[test]
    fn shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<RateLimits>();
    }

    #[test]
    fn no_limit_admits_everything() {
        let (limits, _) = limits();
        assert_eq!(admitted(&limits, "t", "f", 1000), 1000);
    }

    #[test]
    fn burst_then_refusal() {
        let (limits, _) = limits();
        limits.set_tenant("t", rate(2, 5));
        assert_eq!(admitted(&limits, "t", "f", 5), 5);
        let refused = limits.check("t", "f").unwrap_err();
        assert_eq!(refused.scope, Scope::Tenant);
    }

    #[test]
    fn refills_one_request_per_interval() {
        let (limits, clock) = limits();
        limits.set_tenant("t", rate(4, 2));
        assert_eq!(admitted(&limits, "t", "f", 3), 2);
        clock.advance(Duration::from_millis(250));
        assert_eq!(admitted(&limits, "t", "f", 3), 1);
        clock.advance(Duration::from_millis(500));
        assert_eq!(admitted(&limits, "t", "f", 3), 2);
    }

    #[test]
    fn retry_after_is_positive_and_within_one_interval() {
        let (limits, clock) = limits();
        limits.set_tenant("t", rate(4, 1));
        limits.check("t", "f").unwrap();
        clock.advance(Duration::from_millis(100));
        let refused = limits.check("t", "f").unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_millis(150));
        assert_eq!(refused.retry_after_secs(), 1);
        clock.advance(refused.retry_after);
        assert!(limits.check("t", "f").is_ok());
    }

    #[test]
    fn retry_after_secs_rounds_up() {
        let limited = |retry_after| Limited {
            scope: Scope::Tenant,
            retry_after,
        };
        assert_eq!(limited(Duration::ZERO).retry_after_secs(), 1);
        assert_eq!(limited(Duration::from_secs(2)).retry_after_secs(), 2);
        assert_eq!(limited(Duration::from_millis(2001)).retry_after_secs(), 3);
    }

    #[test]
    fn tenants_are_isolated() {
        let (limits, _) = limits();
        limits.set_tenant("a", rate(1, 2));
        limits.set_tenant("b", rate(1, 3));
        assert_eq!(admitted(&limits, "a", "f", 10), 2);
        assert_eq!(admitted(&limits, "b", "f", 10), 3);
        assert_eq!(admitted(&limits, "c", "f", 10), 10);
    }

    #[test]
    fn function_limit_is_separate_from_tenant_limit() {
        let (limits, _) = limits();
        limits.set_tenant("t", rate(1, 3));
        limits.set_function("t", "hot", rate(1, 1));
        assert_eq!(limits.check("t", "hot"), Ok(()));
        let refused = limits.check("t", "hot").unwrap_err();
        assert_eq!(refused.scope, Scope::Function);
        // Refusals by the function limit left the tenant's other two requests.
        assert_eq!(admitted(&limits, "t", "hot", 100), 0);
        assert_eq!(admitted(&limits, "t", "other", 10), 2);
        assert_eq!(limits.check("t", "other").unwrap_err().scope, Scope::Tenant);
        // The same function name in another tenant has no limit.
        assert_eq!(admitted(&limits, "u", "hot", 10), 10);
    }

    #[test]
    fn removing_a_limit_admits_everything() {
        let (limits, _) = limits();
        limits.set_tenant("t", rate(1, 1));
        limits.set_function("t", "f", rate(1, 1));
        assert_eq!(admitted(&limits, "t", "f", 10), 1);
        limits.set_function("t", "f", None);
        limits.set_tenant("t", None);
        assert_eq!(admitted(&limits, "t", "f", 1000), 1000);
    }

    #[test]
    fn changed_rate_takes_effect_and_unchanged_rate_keeps_bucket() {
        let (limits, _) = limits();
        limits.set_tenant("t", rate(1, 2));
        assert_eq!(admitted(&limits, "t", "f", 10), 2);
        limits.set_tenant("t", rate(1, 2));
        assert_eq!(admitted(&limits, "t", "f", 10), 0);
        limits.set_tenant("t", rate(1, 5));
        assert_eq!(admitted(&limits, "t", "f", 10), 5);
    }

    proptest! {
        /// GCRA admits at most `burst + T / interval` requests in any window of length `T`,
        /// where the interval is 1/rate (governor rounds it down to whole nanoseconds). The
        /// busiest windows start and end at admitted requests, so checking those suffices.
        #[test]
        fn admitted_within_any_window_stay_under_burst_plus_rate(
            per_second in 1u32..=50,
            burst in 1u32..=20,
            gaps in prop::collection::vec(0u64..100_000_000, 1..300),
        ) {
            let (limits, clock) = limits();
            let rate = Rate::new(per_second, burst).unwrap();
            limits.set_tenant("t", Some(rate));
            let interval = rate.quota().replenish_interval().as_nanos();
            let mut now = 0u128;
            let mut times = Vec::new();
            for gap in gaps {
                clock.advance(Duration::from_nanos(gap));
                now += u128::from(gap);
                if limits.check("t", "f").is_ok() {
                    times.push(now);
                }
            }
            for (first, start) in times.iter().enumerate() {
                for (last, end) in times.iter().enumerate().skip(first) {
                    let count = (last - first + 1) as u128;
                    prop_assert!(count <= u128::from(burst) + (end - start) / interval);
                }
            }
        }
    }
}
