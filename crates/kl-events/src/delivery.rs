//! Delivery policy for triggers and async invocations, in Knative's `delivery:` shape (`retry`,
//! `backoffPolicy`, `backoffDelay`, `backoffMax`, `timeout`, `deadLetterSink`), and the pure
//! backoff arithmetic the broker's retry loop uses.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::iso8601_duration;
use crate::uri::check_absolute_uri;

/// Knative broker default for `retry`.
pub const DEFAULT_RETRIES: u32 = 10;
/// Knative broker default for `backoffDelay` (`PT0.2S`).
pub const DEFAULT_BACKOFF_DELAY: Duration = Duration::from_millis(200);
/// Our default cap on one backoff (Knative leaves `backoffMax` unset, i.e. uncapped). With the
/// defaults the tenth retry waits at most 204.8 s, under this cap.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);
/// Most retries a policy may ask for: beyond this an event lingers for hours, which a dead-letter
/// sink handles better.
pub const MAX_RETRIES: u32 = 100;
/// Longest `backoffMax` a policy may ask for.
pub const MAX_BACKOFF_MAX: Duration = Duration::from_secs(24 * 3600);

/// Why a delivery policy was refused; `field` is the Knative field name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DeliveryError {
    #[error("delivery {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// How the delay grows between retries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackoffPolicy {
    /// `backoffDelay × 2^n` before retry `n`.
    #[default]
    Exponential,
    /// `backoffDelay × n` before retry `n`.
    Linear,
}

/// Where an event goes once its retries are spent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sink {
    /// A function of the same tenant, by name.
    Function(String),
    /// An absolute `http` or `https` URL.
    Uri(String),
}

/// How events are delivered and retried. Absent JSON fields take Knative's broker defaults
/// (10 retries, exponential, `PT0.2S`). Durations are written in ISO 8601 and read in ISO 8601
/// or as `200ms`/`2s`/`5m`. Call [`DeliveryPolicy::validate`] on a policy read from a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliveryPolicy {
    /// Retries after the first attempt.
    #[serde(rename = "retry", default = "default_retries")]
    pub retries: u32,
    #[serde(default)]
    pub backoff_policy: BackoffPolicy,
    /// The unit of backoff.
    #[serde(with = "iso8601_duration::required", default = "default_backoff_delay")]
    pub backoff_delay: Duration,
    /// Cap on any one backoff.
    #[serde(with = "iso8601_duration::required", default = "default_backoff_max")]
    pub backoff_max: Duration,
    /// Deadline of one attempt; `None` leaves the target's own timeout in charge.
    #[serde(
        with = "iso8601_duration::optional",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    #[serde(rename = "deadLetterSink", default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<Sink>,
}

fn default_retries() -> u32 {
    DEFAULT_RETRIES
}

fn default_backoff_delay() -> Duration {
    DEFAULT_BACKOFF_DELAY
}

fn default_backoff_max() -> Duration {
    DEFAULT_BACKOFF_MAX
}

impl Default for DeliveryPolicy {
    fn default() -> DeliveryPolicy {
        DeliveryPolicy {
            retries: DEFAULT_RETRIES,
            backoff_policy: BackoffPolicy::default(),
            backoff_delay: DEFAULT_BACKOFF_DELAY,
            backoff_max: DEFAULT_BACKOFF_MAX,
            timeout: None,
            dead_letter: None,
        }
    }
}

impl DeliveryPolicy {
    /// Checks the bounds: at most [`MAX_RETRIES`], a positive delay no longer than a positive
    /// `backoffMax` of at most [`MAX_BACKOFF_MAX`], a positive timeout, and a dead-letter sink
    /// that is a function name or an http(s) URL.
    pub fn validate(&self) -> Result<(), DeliveryError> {
        let invalid = |field, reason: String| Err(DeliveryError::Invalid { field, reason });
        if self.retries > MAX_RETRIES {
            return invalid(
                "retry",
                format!(
                    "{} is more than {MAX_RETRIES}; use a dead-letter sink",
                    self.retries
                ),
            );
        }
        if self.backoff_delay.is_zero() {
            return invalid("backoffDelay", "must be positive, or retries would spin".into());
        }
        if self.backoff_max < self.backoff_delay || self.backoff_max > MAX_BACKOFF_MAX {
            return invalid(
                "backoffMax",
                format!(
                    "must be between backoffDelay ({}) and {}",
                    iso8601_duration::format(self.backoff_delay),
                    iso8601_duration::format(MAX_BACKOFF_MAX)
                ),
            );
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return invalid("timeout", "must be positive".into());
        }
        match &self.dead_letter {
            Some(Sink::Function(name)) => {
                kl_core::validate_function_name(name).or_else(|e| invalid("deadLetterSink", e.to_string()))
            }
            Some(Sink::Uri(uri)) => {
                let http = uri.starts_with("http://") || uri.starts_with("https://");
                match check_absolute_uri(uri) {
                    Ok(()) if http => Ok(()),
                    Ok(()) => invalid("deadLetterSink", format!("{uri:?} is not an http or https URL")),
                    Err(reason) => invalid("deadLetterSink", reason),
                }
            }
            None => Ok(()),
        }
    }

    /// Knative's delay before retry `retry` (1 for the first retry; 0 counts as 1): linear
    /// `backoffDelay × retry`, exponential `backoffDelay × 2^retry`, capped at `backoffMax`.
    /// Never decreases as `retry` grows.
    pub fn backoff_ceiling(&self, retry: u32) -> Duration {
        let delay = self.backoff_delay.as_nanos();
        let n = retry.max(1);
        let grown = match self.backoff_policy {
            BackoffPolicy::Linear => delay.saturating_mul(u128::from(n)),
            BackoffPolicy::Exponential => match 1u128.checked_shl(n) {
                Some(factor) => delay.saturating_mul(factor),
                None => u128::MAX,
            },
        };
        from_nanos(grown.min(self.backoff_max.as_nanos()))
    }
}

/// The wait before retry `retry`, with full jitter floored at the delay: uniform between
/// `min(backoffDelay, backoffMax)` and [`DeliveryPolicy::backoff_ceiling`], placed by `jitter`,
/// a random draw in `[0, 1)` the caller injects (out-of-range draws are clamped). So it is
/// never above `backoffMax`, never above the ceiling, and never zero when the delay is not.
pub fn backoff(retry: u32, policy: &DeliveryPolicy, jitter: f64) -> Duration {
    let floor = policy.backoff_delay.min(policy.backoff_max);
    let ceiling = policy.backoff_ceiling(retry);
    let jitter = if jitter.is_nan() {
        0.0
    } else {
        jitter.clamp(0.0, 1.0)
    };
    // Float-to-integer `as` saturates, so no policy, however large, can overflow here.
    let extra = (ceiling.saturating_sub(floor).as_nanos() as f64 * jitter) as u128;
    from_nanos(floor.as_nanos().saturating_add(extra)).min(ceiling)
}

fn from_nanos(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
    let subsec = u32::try_from(nanos % NANOS_PER_SEC).unwrap_or(0);
    Duration::new(secs, subsec)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn policy(backoff_policy: BackoffPolicy, delay_ms: u64, max_ms: u64) -> DeliveryPolicy {
        DeliveryPolicy {
            backoff_policy,
            backoff_delay: Duration::from_millis(delay_ms),
            backoff_max: Duration::from_millis(max_ms),
            ..DeliveryPolicy::default()
        }
    }

    #[test]
    fn defaults_are_knatives_broker_defaults() {
        let p: DeliveryPolicy = serde_json::from_value(json!({})).unwrap();
        assert_eq!(p, DeliveryPolicy::default());
        assert_eq!(p.retries, 10);
        assert_eq!(p.backoff_policy, BackoffPolicy::Exponential);
        assert_eq!(p.backoff_delay, Duration::from_millis(200));
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn reads_and_writes_knatives_fields() {
        let p: DeliveryPolicy = serde_json::from_value(json!({
            "retry": 3,
            "backoffPolicy": "linear",
            "backoffDelay": "PT0.5S",
            "backoffMax": "10s",
            "timeout": "PT30S",
            "deadLetterSink": {"function": "dlq"},
        }))
        .unwrap();
        assert_eq!(p.retries, 3);
        assert_eq!(p.backoff_policy, BackoffPolicy::Linear);
        assert_eq!(p.backoff_delay, Duration::from_millis(500));
        assert_eq!(p.backoff_max, Duration::from_secs(10));
        assert_eq!(p.timeout, Some(Duration::from_secs(30)));
        assert_eq!(p.dead_letter, Some(Sink::Function("dlq".into())));
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!({
                "retry": 3,
                "backoffPolicy": "linear",
                "backoffDelay": "PT0.5S",
                "backoffMax": "PT10S",
                "timeout": "PT30S",
                "deadLetterSink": {"function": "dlq"},
            })
        );
        assert!(serde_json::from_value::<DeliveryPolicy>(json!({"backoffDelay": "P1M"})).is_err());
        assert!(serde_json::from_value::<DeliveryPolicy>(json!({"retries": 3})).is_err());
        assert!(serde_json::from_value::<DeliveryPolicy>(json!({"backoffPolicy": "random"})).is_err());
    }

    #[test]
    fn validation_names_the_field() {
        let field = |p: DeliveryPolicy| match p.validate() {
            Err(DeliveryError::Invalid { field, .. }) => field,
            Ok(()) => "valid",
        };
        let base = DeliveryPolicy::default;
        assert_eq!(
            field(DeliveryPolicy {
                retries: 101,
                ..base()
            }),
            "retry"
        );
        assert_eq!(
            field(DeliveryPolicy {
                backoff_delay: Duration::ZERO,
                ..base()
            }),
            "backoffDelay"
        );
        assert_eq!(field(policy(BackoffPolicy::Linear, 500, 100)), "backoffMax");
        assert_eq!(
            field(policy(BackoffPolicy::Linear, 500, 90_000_000)),
            "backoffMax"
        );
        assert_eq!(
            field(DeliveryPolicy {
                timeout: Some(Duration::ZERO),
                ..base()
            }),
            "timeout"
        );
        let sink = |s: Sink| DeliveryPolicy {
            dead_letter: Some(s),
            ..base()
        };
        assert_eq!(field(sink(Sink::Function("Bad_Name".into()))), "deadLetterSink");
        assert_eq!(field(sink(Sink::Uri("ftp://x/dlq".into()))), "deadLetterSink");
        assert_eq!(field(sink(Sink::Uri("/relative".into()))), "deadLetterSink");
        assert_eq!(
            field(sink(Sink::Uri("https://dlq.example/events".into()))),
            "valid"
        );
    }

    #[test]
    fn ceilings_follow_knatives_formulas() {
        let exp = policy(BackoffPolicy::Exponential, 200, 300_000);
        let ms = |p: &DeliveryPolicy, n| p.backoff_ceiling(n).as_millis();
        assert_eq!(
            [ms(&exp, 0), ms(&exp, 1), ms(&exp, 2), ms(&exp, 10)],
            [400, 400, 800, 204_800]
        );
        assert_eq!(ms(&exp, 11), 300_000);
        assert_eq!(ms(&exp, u32::MAX), 300_000);
        let lin = policy(BackoffPolicy::Linear, 200, 1_000);
        assert_eq!([ms(&lin, 1), ms(&lin, 3), ms(&lin, 6)], [200, 600, 1_000]);
    }

    #[test]
    fn jitter_spreads_between_the_delay_and_the_ceiling() {
        let p = policy(BackoffPolicy::Exponential, 200, 300_000);
        assert_eq!(backoff(2, &p, 0.0), Duration::from_millis(200));
        assert_eq!(backoff(2, &p, 0.5), Duration::from_millis(500));
        assert_eq!(backoff(2, &p, 1.0), Duration::from_millis(800));
        assert_eq!(backoff(2, &p, f64::NAN), Duration::from_millis(200));
        assert_eq!(backoff(2, &p, 7.0), Duration::from_millis(800));
    }

    #[test]
    fn unvalidated_huge_policies_do_not_overflow() {
        let huge = DeliveryPolicy {
            backoff_delay: Duration::from_secs(1),
            backoff_max: Duration::MAX,
            ..DeliveryPolicy::default()
        };
        assert_eq!(huge.backoff_ceiling(u32::MAX), Duration::MAX);
        assert!(backoff(u32::MAX, &huge, 0.999) > Duration::from_secs(1));
    }

    fn policies() -> impl Strategy<Value = DeliveryPolicy> {
        (any::<bool>(), 0u64..10_000, 0u64..1_000_000).prop_map(|(linear, delay_ms, max_ms)| {
            let kind = if linear {
                BackoffPolicy::Linear
            } else {
                BackoffPolicy::Exponential
            };
            policy(kind, delay_ms, max_ms)
        })
    }

    proptest! {
        #[test]
        fn backoff_stays_within_its_bounds(p in policies(), retry in 0u32..200, jitter in 0.0f64..1.0) {
            let wait = backoff(retry, &p, jitter);
            prop_assert!(wait <= p.backoff_max);
            prop_assert!(wait <= p.backoff_ceiling(retry));
            prop_assert!(p.backoff_ceiling(retry) <= p.backoff_ceiling(retry + 1));
            if !p.backoff_delay.is_zero() && !p.backoff_max.is_zero() {
                prop_assert!(!wait.is_zero());
            }
        }

        #[test]
        fn more_jitter_never_waits_less(
            p in policies(),
            retry in 0u32..64,
            a in 0.0f64..1.0,
            b in 0.0f64..1.0,
        ) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(backoff(retry, &p, lo) <= backoff(retry, &p, hi));
        }
    }
}
