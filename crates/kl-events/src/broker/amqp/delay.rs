//! Retry delays on RabbitMQ without plugins: a delivery due later waits in a delay queue whose
//! queue-wide TTL dead-letters it back to the work queue. One TTL per queue means a queue
//! expires in order, with none of per-message TTL's head-of-line blocking; TTLs are powers of
//! two, so a handful of queues serve any delay, and a delivery still early when it comes back
//! is parked again for what remains. It is never delivered early, and at most [`SHORTEST`]
//! late (plus RabbitMQ's expiry latency).

use std::time::Duration;

/// The shortest delay queue's TTL, in milliseconds.
pub(super) const SHORTEST: u64 = 64;
/// The longest delay queue's TTL (about 70 minutes); longer delays hop through it again.
pub(super) const LONGEST: u64 = 1 << 22;

/// The TTL in milliseconds of the delay queue for a delivery due in `remaining`, or `None`
/// when it is due now: the longest power of two that does not overshoot, so each hop at
/// least halves what remains; below [`SHORTEST`], the shortest.
pub(super) fn bucket(remaining: Duration) -> Option<u64> {
    if remaining.is_zero() {
        return None;
    }
    let ms = u64::try_from(remaining.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(SHORTEST, LONGEST);
    Some(1 << ms.ilog2())
}

/// Every delay queue TTL, shortest first (to clean up after tests).
#[cfg(test)]
pub(super) fn buckets() -> impl Iterator<Item = u64> {
    (SHORTEST.ilog2()..=LONGEST.ilog2()).map(|k| 1 << k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_deliveries_skip_the_delay_queues() {
        assert_eq!(bucket(Duration::ZERO), None);
    }

    #[test]
    fn buckets_never_overshoot_above_the_shortest() {
        for ms in [64, 65, 127, 128, 1000, 1500, 60_000, 3_600_000, LONGEST] {
            let b = bucket(Duration::from_millis(ms)).expect("a bucket");
            assert!(b <= ms && ms < 2 * b, "{ms} ms -> {b} ms");
        }
        assert_eq!(bucket(Duration::from_micros(1)), Some(SHORTEST));
        assert_eq!(bucket(Duration::from_secs(86_400)), Some(LONGEST));
    }

    #[test]
    fn hops_arrive_on_time_within_the_shortest_ttl() {
        for total in [1, 63, 64, 100, 1500, 30_000, 86_400_000u64] {
            let (mut waited, mut hops) = (0, 0);
            while let Some(b) = bucket(Duration::from_millis(total.saturating_sub(waited))) {
                waited += b;
                hops += 1;
            }
            assert!(
                waited >= total && waited < total + SHORTEST,
                "{total} ms: waited {waited} ms"
            );
            let bound = total / LONGEST + LONGEST.ilog2() as u64;
            assert!(hops <= bound, "{total} ms: {hops} hops");
        }
    }

    #[test]
    fn every_bucket_is_declared_by_name() {
        let all: Vec<u64> = buckets().collect();
        assert_eq!((all[0], *all.last().expect("buckets")), (SHORTEST, LONGEST));
        assert!(all.windows(2).all(|w| w[1] == 2 * w[0]));
    }
}
