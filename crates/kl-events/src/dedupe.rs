//! Duplicate detection for at-least-once delivery: a time window of recently seen
//! (tenant, source, id) keys, in bounded memory. The spec lets consumers treat events with the
//! same `source` and `id` as duplicates; the tenant keeps tenants' ids apart.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::CloudEvent;

/// What identifies an event for duplicate detection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventKey {
    pub tenant: String,
    pub source: String,
    pub id: String,
}

impl EventKey {
    pub fn new(tenant: &str, ev: &CloudEvent) -> EventKey {
        EventKey {
            tenant: tenant.to_owned(),
            source: ev.source.clone(),
            id: ev.id.clone(),
        }
    }
}

/// Remembers each key for `window` from when it was first seen, and at most `max_keys` keys.
///
/// Eviction: keys older than the window are forgotten first; when the set is still full, the
/// key seen earliest is forgotten to make room, so under a flood a duplicate may arrive after
/// its key was evicted and pass. At-least-once consumers tolerate that; the bound is what
/// keeps memory fixed. Seeing a key again does not extend its window.
#[derive(Debug)]
pub struct Dedupe {
    window: Duration,
    max_keys: usize,
    first_seen: HashMap<EventKey, Instant>,
    /// Keys in the order first seen, oldest at the front.
    order: VecDeque<(Instant, EventKey)>,
    /// The latest `now` passed in; earlier ones are read as this, so time never runs back.
    latest: Option<Instant>,
}

impl Dedupe {
    /// A window of `window`, remembering at most `max_keys` keys (0 remembers nothing).
    pub fn new(window: Duration, max_keys: usize) -> Dedupe {
        Dedupe {
            window,
            max_keys,
            first_seen: HashMap::new(),
            order: VecDeque::new(),
            latest: None,
        }
    }

    /// Whether `key` was seen within the window before `now`; remembers it if not.
    pub fn seen(&mut self, key: EventKey, now: Instant) -> bool {
        let now = self.latest.map_or(now, |latest| latest.max(now));
        self.latest = Some(now);
        self.forget_older_than(now);
        if self.first_seen.contains_key(&key) {
            return true;
        }
        if self.max_keys == 0 {
            return false;
        }
        while self.first_seen.len() >= self.max_keys {
            self.forget_oldest();
        }
        self.first_seen.insert(key.clone(), now);
        self.order.push_back((now, key));
        false
    }

    /// Keys currently remembered.
    pub fn len(&self) -> usize {
        self.first_seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.first_seen.is_empty()
    }

    fn forget_older_than(&mut self, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|(seen, _)| now.saturating_duration_since(*seen) >= self.window)
        {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((_, key)) = self.order.pop_front() {
            self.first_seen.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key(id: &str) -> EventKey {
        EventKey {
            tenant: "acme".into(),
            source: "/s".into(),
            id: id.into(),
        }
    }

    #[test]
    fn a_key_is_a_duplicate_within_its_window_only() {
        let t0 = Instant::now();
        let mut d = Dedupe::new(Duration::from_secs(60), 100);
        assert!(!d.seen(key("a"), t0));
        assert!(d.seen(key("a"), t0 + Duration::from_secs(59)));
        assert!(!d.seen(key("a"), t0 + Duration::from_secs(60)));
        assert!(d.seen(key("a"), t0 + Duration::from_secs(61)));
    }

    #[test]
    fn tenants_and_sources_keep_ids_apart() {
        let t0 = Instant::now();
        let mut d = Dedupe::new(Duration::from_secs(60), 100);
        let ev = CloudEvent::new("t", "/s".into(), serde_json::Value::Null);
        assert!(!d.seen(EventKey::new("acme", &ev), t0));
        assert!(!d.seen(EventKey::new("other", &ev), t0));
        let mut moved = ev.clone();
        moved.source = "/elsewhere".into();
        assert!(!d.seen(EventKey::new("acme", &moved), t0));
        assert!(d.seen(EventKey::new("acme", &ev), t0));
    }

    #[test]
    fn when_full_the_earliest_key_goes_first() {
        let t0 = Instant::now();
        let mut d = Dedupe::new(Duration::from_secs(60), 2);
        assert!(!d.seen(key("a"), t0));
        assert!(!d.seen(key("b"), t0));
        assert!(!d.seen(key("c"), t0));
        assert_eq!(d.len(), 2);
        assert!(!d.seen(key("a"), t0), "a was evicted to make room for c");
        assert!(d.seen(key("c"), t0));
        assert!(!Dedupe::new(Duration::from_secs(60), 0).seen(key("a"), t0));
    }

    #[test]
    fn time_running_back_is_read_as_the_latest_time() {
        let t0 = Instant::now();
        let mut d = Dedupe::new(Duration::from_secs(60), 10);
        assert!(!d.seen(key("a"), t0 + Duration::from_secs(100)));
        assert!(d.seen(key("a"), t0));
        assert!(!d.seen(key("b"), t0));
        assert!(!d.seen(key("b"), t0 + Duration::from_secs(160)));
    }

    proptest! {
        #[test]
        fn memory_stays_bounded_and_recent_keys_are_caught(
            steps in proptest::collection::vec((0u8..20, 0u64..30), 1..200),
            max_keys in 1usize..8,
        ) {
            let window = Duration::from_secs(60);
            let mut d = Dedupe::new(window, max_keys);
            let mut now = Instant::now();
            for (id, advance) in steps {
                now += Duration::from_secs(advance);
                let k = key(&id.to_string());
                d.seen(k.clone(), now);
                prop_assert!(d.len() <= max_keys);
                // The key just seen is remembered, so an immediate repeat is caught.
                prop_assert!(d.seen(k, now));
                prop_assert_eq!(d.first_seen.len(), d.order.len());
            }
        }
    }
}
