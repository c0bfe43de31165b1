//! Knative's Knative Pod Autoscaler (KPA) for one revision, as a pure function (DESIGN §5):
//! the written settings ([`AutoscalerConfig`]), their resolved form ([`DeciderSpec`]), the
//! per-second sample buckets ([`SampleWindow`]) and [`decide`], which turns observed concurrency
//! into a desired instance count. Time is a [`Duration`] since an epoch the caller chooses, so
//! the loop around it (IO, clocks) can be tested with paused time and synthetic traces.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::quantity::{QuantityError, format_duration, parse_duration};

/// Knative's bounds on the stable window (`autoscaling.WindowMin`, `WindowMax`).
const WINDOW_MIN: Duration = Duration::from_secs(6);
const WINDOW_MAX: Duration = Duration::from_secs(3600);
/// Knative's `container-concurrency-max-limit` default.
const CONTAINER_CONCURRENCY_MAX: u32 = 1000;
/// Knative's `MinTarget`: a smaller target would ask for unbounded instances.
const MIN_TARGET: f64 = 0.01;
/// Knative's per-pod soft target when `container-concurrency` is 0 (unlimited):
/// `container-concurrency-target-default`.
const DEFAULT_TARGET: f64 = 100.0;

/// Per-revision autoscaling settings as written by the platform (defaults) or a function
/// (overrides), with Knative's names in camelCase. Every field is optional; [`resolve`] fills
/// Knative's defaults and checks Knative's ranges. Layers combine with [`overlay`].
///
/// [`resolve`]: AutoscalerConfig::resolve
/// [`overlay`]: AutoscalerConfig::overlay
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AutoscalerConfig {
    /// `stable-window` (60s): the window whose average concurrency sets the instance count.
    /// Whole seconds, 6s..1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_window: Option<String>,
    /// `panic-window-percentage` (10.0): the panic window as a percentage of the stable window,
    /// 1..100. The short window reacts to bursts the stable window would average away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panic_window_percentage: Option<f64>,
    /// `panic-threshold-percentage` (200.0): panic when the panic window asks for this
    /// percentage of the ready instances, 110..1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panic_threshold_percentage: Option<f64>,
    /// `target-utilization-percentage` (70.0): the share of `target` to aim for, 1..100, so
    /// new instances start before existing ones reach their target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_utilization_percentage: Option<f64>,
    /// `containerConcurrency` (0 = unlimited): hard limit of in-flight requests per instance,
    /// at most 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_concurrency: Option<u32>,
    /// `target`: soft concurrency target per instance; 100 when `containerConcurrency` is 0,
    /// else `containerConcurrency`, and never above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
    /// `target-burst-capacity` (211): spare concurrency the revision should hold for bursts
    /// before the activator stays in the request path; 0 = never, -1 = always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_burst_capacity: Option<f64>,
    /// `scale-to-zero-grace-period` (30s): how long an inactive revision keeps its last
    /// instance before going to zero, at least 6s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_to_zero_grace_period: Option<String>,
    /// `scale-to-zero-pod-retention-period` (0s): minimum time the last instance stays once
    /// the revision is inactive; the longer of this and the grace period applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_to_zero_pod_retention_period: Option<String>,
    /// `max-scale-up-rate` (1000.0): at most `ceil(rate × ready)` instances per decision; > 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_scale_up_rate: Option<f64>,
    /// `max-scale-down-rate` (2.0): at least `floor(ready / rate)` instances per decision; > 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_scale_down_rate: Option<f64>,
    /// `min-scale` (0): instances kept whatever the traffic; 0 allows scale to zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_scale: Option<u32>,
    /// `max-scale` (0 = unbounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_scale: Option<u32>,
    /// `initial-scale` (1): instances a new revision starts with, and keeps as a floor until it
    /// first has that many ready. 0 lets a revision start at zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_scale: Option<u32>,
    /// `scale-down-delay` (0s): a decrease takes effect only once it has been the highest
    /// recommendation for this long, damping oscillation. Whole seconds, at most 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_delay: Option<String>,
    /// `activation-scale` (1): the fewest instances an active revision runs, so a revision
    /// woken from zero gets this many at once. At least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_scale: Option<u32>,
}

/// Why autoscaling settings were refused.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum AutoscaleError {
    /// A duration field does not parse.
    #[error("autoscaling.{field}: {source}")]
    Duration {
        field: &'static str,
        #[source]
        source: QuantityError,
    },
    /// A field lies outside the range Knative allows.
    #[error("autoscaling.{field} {value} must lie between {min} and {max}")]
    OutOfRange {
        field: &'static str,
        value: String,
        min: String,
        max: String,
    },
    /// A scale rate of 1 or less would freeze the instance count in that direction.
    #[error(
        "autoscaling.{field} {value} must be greater than 1.0 (2.0 halves or doubles at most per decision)"
    )]
    RateTooLow { field: &'static str, value: f64 },
    /// Windows are bucketed per second, so durations below a second cannot be honoured.
    #[error("autoscaling.{field} {value} must be whole seconds, such as 60s")]
    NotWholeSeconds { field: &'static str, value: String },
    /// `minScale`, `initialScale` or `activationScale` exceeds a bounded `maxScale`.
    #[error("autoscaling.{field} {value} exceeds maxScale {max_scale}; raise maxScale or lower {field}")]
    AboveMaxScale {
        field: &'static str,
        value: u32,
        max_scale: u32,
    },
}

/// Resolved per-revision parameters, named after Knative's `scaling.DeciderSpec`. Build with
/// [`AutoscalerConfig::resolve`]; the default is Knative's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct DeciderSpec {
    pub stable_window: Duration,
    /// `stable_window × panic-window-percentage`, whole seconds, at least 1s.
    pub panic_window: Duration,
    /// `panic-threshold-percentage / 100`: the ratio of panic-window demand to ready instances.
    pub panic_threshold: f64,
    /// Knative's `TargetValue`: concurrency per instance to aim for, `target × utilization`.
    pub target_value: f64,
    /// Knative's `TotalValue`: concurrency one instance is taken to serve, `target`.
    pub total_value: f64,
    pub container_concurrency: u32,
    pub target_burst_capacity: f64,
    pub scale_to_zero_grace_period: Duration,
    pub scale_to_zero_pod_retention_period: Duration,
    pub max_scale_up_rate: f64,
    pub max_scale_down_rate: f64,
    pub min_scale: u32,
    /// 0 = unbounded.
    pub max_scale: u32,
    pub initial_scale: u32,
    pub scale_down_delay: Duration,
    pub activation_scale: u32,
}

impl Default for DeciderSpec {
    fn default() -> Self {
        AutoscalerConfig::default()
            .resolve()
            .expect("Knative's defaults are valid")
    }
}

impl AutoscalerConfig {
    /// `top` (a function's overrides) over `self` (the platform's defaults), field by field.
    pub fn overlay(self, top: AutoscalerConfig) -> AutoscalerConfig {
        AutoscalerConfig {
            stable_window: top.stable_window.or(self.stable_window),
            panic_window_percentage: top.panic_window_percentage.or(self.panic_window_percentage),
            panic_threshold_percentage: top.panic_threshold_percentage.or(self.panic_threshold_percentage),
            target_utilization_percentage: top
                .target_utilization_percentage
                .or(self.target_utilization_percentage),
            container_concurrency: top.container_concurrency.or(self.container_concurrency),
            target: top.target.or(self.target),
            target_burst_capacity: top.target_burst_capacity.or(self.target_burst_capacity),
            scale_to_zero_grace_period: top.scale_to_zero_grace_period.or(self.scale_to_zero_grace_period),
            scale_to_zero_pod_retention_period: top
                .scale_to_zero_pod_retention_period
                .or(self.scale_to_zero_pod_retention_period),
            max_scale_up_rate: top.max_scale_up_rate.or(self.max_scale_up_rate),
            max_scale_down_rate: top.max_scale_down_rate.or(self.max_scale_down_rate),
            min_scale: top.min_scale.or(self.min_scale),
            max_scale: top.max_scale.or(self.max_scale),
            initial_scale: top.initial_scale.or(self.initial_scale),
            scale_down_delay: top.scale_down_delay.or(self.scale_down_delay),
            activation_scale: top.activation_scale.or(self.activation_scale),
        }
    }

    /// Fills Knative's defaults and checks Knative's ranges.
    pub fn resolve(&self) -> Result<DeciderSpec, AutoscaleError> {
        let stable_window = duration("stableWindow", self.stable_window.as_deref(), 60)?;
        whole_seconds("stableWindow", stable_window)?;
        in_range_duration("stableWindow", stable_window, WINDOW_MIN, WINDOW_MAX)?;

        let panic_pct = in_range(
            "panicWindowPercentage",
            self.panic_window_percentage.unwrap_or(10.0),
            1.0,
            100.0,
        )?;
        let panic_threshold_pct = in_range(
            "panicThresholdPercentage",
            self.panic_threshold_percentage.unwrap_or(200.0),
            110.0,
            1000.0,
        )?;
        let utilization = in_range(
            "targetUtilizationPercentage",
            self.target_utilization_percentage.unwrap_or(70.0),
            1.0,
            100.0,
        )?;

        let cc = self.container_concurrency.unwrap_or(0);
        if cc > CONTAINER_CONCURRENCY_MAX {
            return Err(out_of_range(
                "containerConcurrency",
                cc,
                0,
                CONTAINER_CONCURRENCY_MAX,
            ));
        }
        // Knative's ResolveMetricTarget: the soft target never exceeds the hard limit.
        let target = match (self.target, cc) {
            (Some(t), _) => {
                let t = in_range("target", t, MIN_TARGET, f64::MAX)?;
                if cc > 0 { t.min(f64::from(cc)) } else { t }
            }
            (None, 0) => DEFAULT_TARGET,
            (None, cc) => f64::from(cc),
        };
        let tbc = self.target_burst_capacity.unwrap_or(211.0);
        if !(tbc >= 0.0 || tbc == -1.0) || !tbc.is_finite() {
            return Err(out_of_range("targetBurstCapacity", tbc, -1, "any number"));
        }

        let grace = duration(
            "scaleToZeroGracePeriod",
            self.scale_to_zero_grace_period.as_deref(),
            30,
        )?;
        in_range_duration("scaleToZeroGracePeriod", grace, WINDOW_MIN, Duration::MAX)?;
        let retention = duration(
            "scaleToZeroPodRetentionPeriod",
            self.scale_to_zero_pod_retention_period.as_deref(),
            0,
        )?;
        let delay = duration("scaleDownDelay", self.scale_down_delay.as_deref(), 0)?;
        whole_seconds("scaleDownDelay", delay)?;
        in_range_duration("scaleDownDelay", delay, Duration::ZERO, WINDOW_MAX)?;

        let up = rate("maxScaleUpRate", self.max_scale_up_rate.unwrap_or(1000.0))?;
        let down = rate("maxScaleDownRate", self.max_scale_down_rate.unwrap_or(2.0))?;

        let min_scale = self.min_scale.unwrap_or(0);
        let max_scale = self.max_scale.unwrap_or(0);
        let initial_scale = self.initial_scale.unwrap_or(1);
        let activation_scale = self.activation_scale.unwrap_or(1);
        if activation_scale == 0 {
            return Err(out_of_range("activationScale", 0, 1, "maxScale"));
        }
        if max_scale > 0 {
            for (field, value) in [
                ("minScale", min_scale),
                ("initialScale", initial_scale),
                ("activationScale", activation_scale),
            ] {
                if value > max_scale {
                    return Err(AutoscaleError::AboveMaxScale {
                        field,
                        value,
                        max_scale,
                    });
                }
            }
        }

        let panic_secs = (stable_window.as_secs_f64() * panic_pct / 100.0).round().max(1.0);
        Ok(DeciderSpec {
            stable_window,
            panic_window: Duration::from_secs(panic_secs as u64),
            panic_threshold: panic_threshold_pct / 100.0,
            target_value: (target * utilization / 100.0).max(MIN_TARGET),
            total_value: target,
            container_concurrency: cc,
            target_burst_capacity: tbc,
            scale_to_zero_grace_period: grace,
            scale_to_zero_pod_retention_period: retention,
            max_scale_up_rate: up,
            max_scale_down_rate: down,
            min_scale,
            max_scale,
            initial_scale,
            scale_down_delay: delay,
            activation_scale,
        })
    }
}

fn duration(
    field: &'static str,
    written: Option<&str>,
    default_secs: u64,
) -> Result<Duration, AutoscaleError> {
    match written {
        None => Ok(Duration::from_secs(default_secs)),
        Some(text) => parse_duration(text)
            .map(Duration::from_millis)
            .map_err(|source| AutoscaleError::Duration { field, source }),
    }
}

fn whole_seconds(field: &'static str, d: Duration) -> Result<(), AutoscaleError> {
    if d.subsec_nanos() == 0 {
        Ok(())
    } else {
        Err(AutoscaleError::NotWholeSeconds {
            field,
            value: format_duration(d.as_millis() as u64),
        })
    }
}

fn fmt_duration(d: Duration) -> String {
    if d == Duration::MAX {
        "unbounded".to_owned()
    } else {
        format_duration(d.as_millis() as u64)
    }
}

fn in_range_duration(
    field: &'static str,
    d: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, AutoscaleError> {
    if d < min || d > max {
        return Err(AutoscaleError::OutOfRange {
            field,
            value: fmt_duration(d),
            min: fmt_duration(min),
            max: fmt_duration(max),
        });
    }
    Ok(d)
}

fn in_range(field: &'static str, v: f64, min: f64, max: f64) -> Result<f64, AutoscaleError> {
    // Written so that NaN fails too.
    if v >= min && v <= max && v.is_finite() {
        Ok(v)
    } else {
        Err(out_of_range(field, v, min, max))
    }
}

fn out_of_range(
    field: &'static str,
    value: impl ToString,
    min: impl ToString,
    max: impl ToString,
) -> AutoscaleError {
    AutoscaleError::OutOfRange {
        field,
        value: value.to_string(),
        min: min.to_string(),
        max: max.to_string(),
    }
}

fn rate(field: &'static str, value: f64) -> Result<f64, AutoscaleError> {
    if value > 1.0 && value.is_finite() {
        Ok(value)
    } else {
        Err(AutoscaleError::RateTooLow { field, value })
    }
}

/// One observation of a revision: the average number of requests in flight or queued across
/// its instances over the sample interval, at `at` (time since the caller's epoch).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at: Duration,
    pub concurrency: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Bucket {
    sum: f64,
    count: u32,
}

impl Bucket {
    fn mean(&self) -> f64 {
        self.sum / f64::from(self.count.max(1))
    }
}

/// Samples of one revision bucketed by second, as Knative's `TimedFloat64Buckets`: window
/// averages are taken over per-second buckets, so a burst of samples within one second weighs
/// as much as one steady sample. Record every tick, zeros included: as in Knative, seconds
/// after the newest sample are left out of an average rather than counted as zero, and a
/// window with no sample averages to zero.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleWindow {
    retain_secs: u64,
    /// Per-second mean of the samples recorded in that second.
    buckets: BTreeMap<u64, Bucket>,
    /// The newest second that was dropped for age: it still tells whether the oldest kept
    /// bucket continues an earlier series.
    dropped: Option<u64>,
    last_nonzero_at: Option<Duration>,
    recorded: bool,
}

impl SampleWindow {
    /// Keeps samples for `retain` (whole seconds, rounded up), which must cover the stable
    /// window: `SampleWindow::new(spec.stable_window)`.
    pub fn new(retain: Duration) -> SampleWindow {
        SampleWindow {
            retain_secs: retain.as_secs() + u64::from(retain.subsec_nanos() > 0),
            buckets: BTreeMap::new(),
            dropped: None,
            last_nonzero_at: None,
            recorded: false,
        }
    }

    /// Adds a sample to its second's bucket. Negative or non-finite concurrency counts as 0.
    /// Buckets older than the retention before the newest sample are dropped.
    pub fn record(&mut self, sample: Sample) {
        let c = if sample.concurrency.is_finite() && sample.concurrency > 0.0 {
            sample.concurrency
        } else {
            0.0
        };
        self.recorded = true;
        if c > 0.0 {
            self.last_nonzero_at = self.last_nonzero_at.max(Some(sample.at));
        }
        let sec = sample.at.as_secs();
        let newest = self.buckets.last_key_value().map_or(sec, |(s, _)| (*s).max(sec));
        let oldest_kept = newest.saturating_sub(self.retain_secs);
        if sec < oldest_kept {
            self.dropped = self.dropped.max(Some(sec));
            return;
        }
        let bucket = self.buckets.entry(sec).or_default();
        bucket.sum += c;
        bucket.count += 1;
        while let Some(entry) = self.buckets.first_entry() {
            if *entry.key() >= oldest_kept {
                break;
            }
            self.dropped = self.dropped.max(Some(*entry.key()));
            entry.remove();
        }
    }

    /// Whether any sample was ever recorded: a revision without one is new.
    pub fn has_samples(&self) -> bool {
        self.recorded
    }

    /// The time of the newest sample with concurrency above zero.
    pub fn last_nonzero_at(&self) -> Option<Duration> {
        self.last_nonzero_at
    }

    /// Average concurrency over the `window` (whole seconds, at least one) ending at `now`,
    /// with Knative's partial windows: a series that started within the window (after a gap
    /// longer than the window) is averaged from its first second, and the seconds after the
    /// newest sample are left out. Missing seconds inside the series count as zero.
    pub fn average(&self, window: Duration, now: Duration) -> f64 {
        let w = window.as_secs().max(1);
        let now_s = now.as_secs();
        let start = (now_s + 1).saturating_sub(w);
        let mut in_window = self.buckets.range(start..=now_s);
        let Some((&first, _)) = in_window.next() else {
            return 0.0;
        };
        let last = in_window.next_back().map_or(first, |(s, _)| *s);
        let before = self
            .buckets
            .range(..start)
            .next_back()
            .map(|(s, _)| *s)
            .or(self.dropped.filter(|d| *d < start));
        let series_start = match before {
            Some(b) if first - b <= w => start,
            _ => first,
        };
        let sum: f64 = self
            .buckets
            .range(series_start..=last)
            .map(|(_, b)| b.mean())
            .sum();
        sum / (last - series_start + 1) as f64
    }
}

/// What the KPA keeps between decisions for one revision, as plain data: pass the state a
/// decision returned to the next one. The default is a new revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScalerState {
    /// Time of the first decision: a revision that never saw traffic idles from here.
    pub first_decision_at: Option<Duration>,
    /// When the current panic began.
    pub panicking_since: Option<Duration>,
    /// Knative's `panicTime`: the last decision whose panic window met the threshold. Panic
    /// ends once a stable window has passed since.
    pub last_over_threshold_at: Option<Duration>,
    /// Knative's `maxPanicPods`: the highest count decided in this panic, never lowered while
    /// it lasts.
    pub max_panic_pods: u32,
    /// The newest sample with concurrency above zero seen by any decision.
    pub last_nonzero_at: Option<Duration>,
    /// Knative's scale-down delay window: the highest recommendation per second over the
    /// last `scale-down-delay`.
    pub scale_down_recommendations: Vec<(Duration, u32)>,
    /// Knative's `ScaleTargetInitialized`: the revision once had `initial-scale` instances
    /// ready; until then `initial-scale` is a floor.
    pub scale_target_initialized: bool,
}

/// What determined a decision's count, the last rule that changed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ScaleReason {
    /// New revision: `initial-scale`, before samples or before it first reached that count.
    InitialScale,
    /// No sample has ever been recorded, but the revision already reached `initial-scale`
    /// (say `initial-scale` 0, or the window was recreated): keep the ready count, as Knative
    /// keeps the scale when the decider has no data.
    NoData,
    /// The stable-window average.
    Stable,
    /// Panic mode: the panic-window average or the count held since the panic began.
    Panic,
    /// `max-scale-up-rate` capped the increase.
    MaxScaleUpRate,
    /// `max-scale-down-rate` limited the decrease.
    MaxScaleDownRate,
    /// A higher recommendation within `scale-down-delay` holds instances.
    ScaleDownDelay,
    /// Idle, but not yet for the stable window and `scale-to-zero-grace-period`: the last
    /// instance stays.
    ScaleToZeroGracePeriod,
    /// Idle long enough: zero.
    ScaleToZero,
    /// Raised to `min-scale`.
    MinScale,
    /// Lowered to `max-scale`.
    MaxScale,
}

/// One decision of the KPA for a revision (Knative's `ScaleResult`, with why).
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleDecision {
    /// Instances the revision should have.
    pub desired: u32,
    /// In panic mode: the panic window decides and the count never falls.
    pub panic: bool,
    /// Knative's EBC: `floor(ready × target − target-burst-capacity − panic average)`;
    /// negative means the revision cannot absorb the burst capacity asked for, so the
    /// activator should stay in the path. -1 when the burst capacity is -1, 0 when it is 0.
    pub excess_burst_capacity: f64,
    pub reason: ScaleReason,
    /// The stable-window average concurrency this decision saw.
    pub stable_average: f64,
    /// The panic-window average concurrency this decision saw.
    pub panic_average: f64,
}

/// Decides the instance count for a revision at `now`, from its samples, its ready
/// instances and the state the previous decision returned. Pure and deterministic.
///
/// Knative's steps, in order:
/// 1. desired = ceil(average / (target × utilization)) for the stable and panic windows,
///    each kept within [floor(ready / max-scale-down-rate), ceil(ready × max-scale-up-rate)]
///    (ready counts as 1 when 0, as Knative's activator wakes the revision), then raised to
///    `activation-scale` when above zero;
/// 2. panic starts when the panic count reaches `panic-threshold` × ready, and ends once a
///    stable window has passed without that; while it lasts the count is the largest of the
///    stable count, the panic count and every count decided since it began;
/// 3. `scale-down-delay`: the highest recommendation within the delay;
/// 4. zero only once the revision has had no traffic for the stable window plus the longer
///    of `scale-to-zero-grace-period` and `scale-to-zero-pod-retention-period`; until then
///    the last ready instance stays;
/// 5. `min-scale` (and `initial-scale` until first reached), then `max-scale`.
pub fn decide(
    spec: &DeciderSpec,
    window: &SampleWindow,
    current_ready: u32,
    state: &ScalerState,
    now: Duration,
) -> (ScaleDecision, ScalerState) {
    let mut next = state.clone();
    let first_decision_at = *next.first_decision_at.get_or_insert(now);
    next.last_nonzero_at = next.last_nonzero_at.max(window.last_nonzero_at());
    if current_ready >= spec.initial_scale {
        next.scale_target_initialized = true;
    }
    let floor = if next.scale_target_initialized {
        spec.min_scale
    } else {
        spec.min_scale.max(spec.initial_scale)
    };

    let stable_average = window.average(spec.stable_window, now);
    let panic_average = window.average(spec.panic_window, now);
    let excess_burst_capacity = if spec.target_burst_capacity == 0.0 {
        0.0
    } else if spec.target_burst_capacity < 0.0 {
        -1.0
    } else {
        (f64::from(current_ready) * spec.total_value - spec.target_burst_capacity - panic_average).floor()
    };

    let (mut desired, mut reason) = if !window.has_samples() {
        if next.scale_target_initialized {
            (current_ready, ScaleReason::NoData)
        } else {
            (spec.initial_scale, ScaleReason::InitialScale)
        }
    } else {
        let ready = f64::from(current_ready.max(1));
        let max_up = (spec.max_scale_up_rate * ready).ceil();
        let max_down = (ready / spec.max_scale_down_rate).floor();
        let dspc = (stable_average / spec.target_value).ceil();
        let dppc = (panic_average / spec.target_value).ceil();
        let within_rates = |want: f64, plain: ScaleReason| -> (u32, ScaleReason) {
            let (count, why) = if want > max_up {
                (max_up, ScaleReason::MaxScaleUpRate)
            } else if want < max_down {
                (max_down, ScaleReason::MaxScaleDownRate)
            } else {
                (want, plain)
            };
            // `as` saturates: a huge average asks for u32::MAX instances, not a wrap.
            let count = count as u32;
            if count > 0 && count < spec.activation_scale {
                (spec.activation_scale, plain)
            } else {
                (count, why)
            }
        };
        let stable = within_rates(dspc, ScaleReason::Stable);
        let panic = within_rates(dppc, ScaleReason::Panic);

        if dppc / ready >= spec.panic_threshold {
            if next.last_over_threshold_at.is_none() {
                next.panicking_since = Some(now);
            }
            next.last_over_threshold_at = Some(now);
        } else if let Some(at) = next.last_over_threshold_at
            && at + spec.stable_window < now
        {
            next.last_over_threshold_at = None;
            next.panicking_since = None;
            next.max_panic_pods = 0;
        }

        if next.last_over_threshold_at.is_some() {
            // The stable window can exceed the panic one after a burst has passed through it;
            // provision for the larger, and never below what this panic already decided.
            let larger = if panic.0 > stable.0 { panic } else { stable };
            if larger.0 > next.max_panic_pods {
                next.max_panic_pods = larger.0;
                let why = match larger.1 {
                    ScaleReason::MaxScaleUpRate => ScaleReason::MaxScaleUpRate,
                    _ => ScaleReason::Panic,
                };
                (larger.0, why)
            } else {
                (next.max_panic_pods, ScaleReason::Panic)
            }
        } else {
            stable
        }
    };

    if window.has_samples() && !spec.scale_down_delay.is_zero() {
        let now_s = Duration::from_secs(now.as_secs());
        let delay = spec.scale_down_delay;
        let recs = &mut next.scale_down_recommendations;
        recs.retain(|(at, _)| *at <= now_s && now_s < *at + delay);
        match recs.iter_mut().find(|(at, _)| *at == now_s) {
            Some((_, count)) => *count = (*count).max(desired),
            None => recs.push((now_s, desired)),
        }
        let held = recs.iter().map(|(_, c)| *c).max().unwrap_or(desired);
        if held > desired {
            desired = held;
            reason = ScaleReason::ScaleDownDelay;
        }
    }

    if desired == 0 && window.has_samples() {
        let idle_since = next.last_nonzero_at.unwrap_or_default().max(first_decision_at);
        let linger = spec
            .scale_to_zero_grace_period
            .max(spec.scale_to_zero_pod_retention_period);
        if now.saturating_sub(idle_since) >= spec.stable_window + linger {
            reason = ScaleReason::ScaleToZero;
        } else {
            // Knative keeps at most one instance for the rest of the idle period; it does not
            // start one for a revision that has none.
            desired = current_ready.min(1);
            reason = ScaleReason::ScaleToZeroGracePeriod;
        }
    }

    if desired < floor {
        desired = floor;
        reason = if floor > spec.min_scale {
            ScaleReason::InitialScale
        } else {
            ScaleReason::MinScale
        };
    }
    if spec.max_scale > 0 && desired > spec.max_scale {
        desired = spec.max_scale;
        reason = ScaleReason::MaxScale;
    }
    let panic = next.last_over_threshold_at.is_some();
    if panic {
        // Whatever the bounds made of it, this panic does not go below it again.
        next.max_panic_pods = next.max_panic_pods.max(desired);
    }

    (
        ScaleDecision {
            desired,
            panic,
            excess_burst_capacity,
            reason,
            stable_average,
            panic_average,
        },
        next,
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn spec(config: AutoscalerConfig) -> DeciderSpec {
        config.resolve().expect("valid test config")
    }

    /// containerConcurrency 10: target 10, target value 7 per instance.
    fn cc10() -> AutoscalerConfig {
        AutoscalerConfig {
            container_concurrency: Some(10),
            ..AutoscalerConfig::default()
        }
    }

    /// A revision driven by a synthetic trace with paused time: each tick records one sample
    /// for the current second, decides, lets the ready count follow at once and advances a
    /// second.
    struct Sim {
        spec: DeciderSpec,
        window: SampleWindow,
        state: ScalerState,
        ready: u32,
        now: Duration,
    }

    impl Sim {
        fn new(config: AutoscalerConfig) -> Sim {
            let spec = spec(config);
            Sim {
                window: SampleWindow::new(spec.stable_window),
                spec,
                state: ScalerState::default(),
                ready: 0,
                now: Duration::ZERO,
            }
        }

        fn tick(&mut self, concurrency: f64) -> ScaleDecision {
            self.window.record(Sample {
                at: self.now,
                concurrency,
            });
            let (d, state) = decide(&self.spec, &self.window, self.ready, &self.state, self.now);
            self.state = state;
            self.ready = d.desired;
            self.now += S;
            d
        }

        fn run(&mut self, ticks: u64, concurrency: f64) -> Vec<ScaleDecision> {
            (0..ticks).map(|_| self.tick(concurrency)).collect()
        }
    }

    fn desired(ds: &[ScaleDecision]) -> Vec<u32> {
        ds.iter().map(|d| d.desired).collect()
    }

    // --- configuration ---

    #[test]
    fn defaults_are_knatives() {
        let s = DeciderSpec::default();
        assert_eq!(s.stable_window, secs(60));
        assert_eq!(s.panic_window, secs(6));
        assert_eq!(s.panic_threshold, 2.0);
        assert_eq!(s.total_value, 100.0);
        assert!((s.target_value - 70.0).abs() < 1e-9);
        assert_eq!(s.container_concurrency, 0);
        assert_eq!(s.target_burst_capacity, 211.0);
        assert_eq!(s.scale_to_zero_grace_period, secs(30));
        assert_eq!(s.scale_to_zero_pod_retention_period, Duration::ZERO);
        assert_eq!(s.max_scale_up_rate, 1000.0);
        assert_eq!(s.max_scale_down_rate, 2.0);
        assert_eq!((s.min_scale, s.max_scale, s.initial_scale), (0, 0, 1));
        assert_eq!(s.scale_down_delay, Duration::ZERO);
        assert_eq!(s.activation_scale, 1);
    }

    #[test]
    fn target_follows_container_concurrency() {
        assert_eq!(spec(cc10()).total_value, 10.0);
        assert!((spec(cc10()).target_value - 7.0).abs() < 1e-9);
        let above = AutoscalerConfig {
            target: Some(50.0),
            ..cc10()
        };
        assert_eq!(
            spec(above).total_value,
            10.0,
            "target never exceeds the hard limit"
        );
        let soft = AutoscalerConfig {
            target: Some(50.0),
            target_utilization_percentage: Some(100.0),
            ..AutoscalerConfig::default()
        };
        assert_eq!(spec(soft).target_value, 50.0);
    }

    #[test]
    fn reads_camel_case_and_refuses_unknown_fields() {
        let c: AutoscalerConfig = serde_json::from_str(
            r#"{"stableWindow":"2m","maxScaleUpRate":10,"minScale":1,"scaleDownDelay":"30s"}"#,
        )
        .unwrap();
        let s = spec(c.clone());
        assert_eq!(s.stable_window, secs(120));
        assert_eq!(s.panic_window, secs(12));
        assert_eq!(s.max_scale_up_rate, 10.0);
        assert_eq!(s.min_scale, 1);
        assert_eq!(s.scale_down_delay, secs(30));
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"stableWindow":"2m","maxScaleUpRate":10.0,"minScale":1,"scaleDownDelay":"30s"}"#
        );
        assert_eq!(serde_json::to_string(&AutoscalerConfig::default()).unwrap(), "{}");
        assert!(serde_json::from_str::<AutoscalerConfig>(r#"{"stable-window":"60s"}"#).is_err());
    }

    #[test]
    fn overlay_prefers_the_function_over_the_platform() {
        let platform = AutoscalerConfig {
            stable_window: Some("90s".into()),
            max_scale: Some(10),
            ..AutoscalerConfig::default()
        };
        let function = AutoscalerConfig {
            max_scale: Some(3),
            min_scale: Some(1),
            ..AutoscalerConfig::default()
        };
        let merged = platform.overlay(function);
        assert_eq!(merged.stable_window.as_deref(), Some("90s"));
        assert_eq!(merged.max_scale, Some(3));
        assert_eq!(merged.min_scale, Some(1));
        assert_eq!(merged.panic_window_percentage, None);
    }

    #[test]
    fn refuses_settings_outside_knatives_ranges() {
        let bad = |c: AutoscalerConfig| c.resolve().expect_err("should be refused");
        let e = bad(AutoscalerConfig {
            min_scale: Some(5),
            max_scale: Some(2),
            ..AutoscalerConfig::default()
        });
        assert_eq!(
            e,
            AutoscaleError::AboveMaxScale {
                field: "minScale",
                value: 5,
                max_scale: 2
            }
        );
        assert!(e.to_string().contains("raise maxScale or lower minScale"), "{e}");
        for (field, c) in [
            (
                "stableWindow",
                AutoscalerConfig {
                    stable_window: Some("5s".into()),
                    ..Default::default()
                },
            ),
            (
                "stableWindow",
                AutoscalerConfig {
                    stable_window: Some("2h".into()),
                    ..Default::default()
                },
            ),
            (
                "panicWindowPercentage",
                AutoscalerConfig {
                    panic_window_percentage: Some(0.5),
                    ..Default::default()
                },
            ),
            (
                "panicThresholdPercentage",
                AutoscalerConfig {
                    panic_threshold_percentage: Some(100.0),
                    ..Default::default()
                },
            ),
            (
                "targetUtilizationPercentage",
                AutoscalerConfig {
                    target_utilization_percentage: Some(f64::NAN),
                    ..Default::default()
                },
            ),
            (
                "containerConcurrency",
                AutoscalerConfig {
                    container_concurrency: Some(1001),
                    ..Default::default()
                },
            ),
            (
                "target",
                AutoscalerConfig {
                    target: Some(0.0),
                    ..Default::default()
                },
            ),
            (
                "targetBurstCapacity",
                AutoscalerConfig {
                    target_burst_capacity: Some(-2.0),
                    ..Default::default()
                },
            ),
            (
                "scaleToZeroGracePeriod",
                AutoscalerConfig {
                    scale_to_zero_grace_period: Some("5s".into()),
                    ..Default::default()
                },
            ),
            (
                "scaleDownDelay",
                AutoscalerConfig {
                    scale_down_delay: Some("2h".into()),
                    ..Default::default()
                },
            ),
            (
                "activationScale",
                AutoscalerConfig {
                    activation_scale: Some(0),
                    ..Default::default()
                },
            ),
        ] {
            match bad(c) {
                AutoscaleError::OutOfRange { field: f, .. } => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        for (field, c) in [
            (
                "maxScaleUpRate",
                AutoscalerConfig {
                    max_scale_up_rate: Some(1.0),
                    ..Default::default()
                },
            ),
            (
                "maxScaleDownRate",
                AutoscalerConfig {
                    max_scale_down_rate: Some(0.5),
                    ..Default::default()
                },
            ),
        ] {
            assert!(matches!(bad(c), AutoscaleError::RateTooLow { field: f, .. } if f == field));
        }
        assert!(matches!(
            bad(AutoscalerConfig {
                stable_window: Some("6500ms".into()),
                ..Default::default()
            }),
            AutoscaleError::NotWholeSeconds {
                field: "stableWindow",
                ..
            }
        ));
        assert!(matches!(
            bad(AutoscalerConfig {
                stable_window: Some("soon".into()),
                ..Default::default()
            }),
            AutoscaleError::Duration {
                field: "stableWindow",
                ..
            }
        ));
        assert!(matches!(
            bad(AutoscalerConfig {
                initial_scale: Some(4),
                max_scale: Some(3),
                ..Default::default()
            }),
            AutoscaleError::AboveMaxScale {
                field: "initialScale",
                ..
            }
        ));
    }

    // --- sample window ---

    fn window_of(samples: &[(u64, f64)]) -> SampleWindow {
        let mut w = SampleWindow::new(secs(60));
        for &(at, c) in samples {
            w.record(Sample {
                at: Duration::from_millis(at),
                concurrency: c,
            });
        }
        w
    }

    #[test]
    fn averages_per_second_buckets() {
        // Two samples in second 0 weigh as one bucket of their mean.
        let w = window_of(&[(0, 10.0), (500, 30.0), (1000, 20.0), (2000, 20.0)]);
        assert_eq!(w.average(secs(60), secs(2)), 20.0);
        // A series that began inside the window is averaged from its first second.
        let w = window_of(&[(0, 6.0), (3000, 6.0)]);
        assert_eq!(
            w.average(secs(60), secs(3)),
            3.0,
            "missing seconds inside count as zero"
        );
        // The panic window sees only its last seconds.
        let w = window_of(
            &(0..60)
                .map(|s| (s * 1000, if s >= 54 { 12.0 } else { 0.0 }))
                .collect::<Vec<_>>(),
        );
        assert_eq!(w.average(secs(6), secs(59)), 12.0);
        assert_eq!(w.average(secs(60), secs(59)), 1.2);
    }

    #[test]
    fn leaves_out_seconds_after_the_newest_sample_and_forgets_old_series() {
        let w = window_of(&(0..=10).map(|s| (s * 1000, 5.0)).collect::<Vec<_>>());
        assert_eq!(w.average(secs(60), secs(30)), 5.0, "stale but within the window");
        assert_eq!(w.average(secs(60), secs(71)), 0.0, "nothing in the window");
        assert_eq!(w.average(secs(6), secs(20)), 0.0);
        // A gap longer than the window starts a new series.
        let mut w = window_of(&[(0, 100.0), (1000, 100.0)]);
        w.record(Sample {
            at: secs(100),
            concurrency: 4.0,
        });
        w.record(Sample {
            at: secs(101),
            concurrency: 2.0,
        });
        assert_eq!(w.average(secs(60), secs(101)), 3.0);
        // A gap within the window keeps the series: averaged over the whole window.
        let mut w = window_of(&(0..=80).map(|s| (s * 1000, 0.0)).collect::<Vec<_>>());
        w.record(Sample {
            at: secs(85),
            concurrency: 60.0,
        });
        assert_eq!(w.average(secs(60), secs(85)), 1.0);
    }

    #[test]
    fn ignores_nonsense_concurrency_and_bounds_its_memory() {
        let mut w = SampleWindow::new(secs(60));
        for s in 0..1000 {
            w.record(Sample {
                at: secs(s),
                concurrency: f64::NAN,
            });
            w.record(Sample {
                at: secs(s),
                concurrency: -3.0,
            });
        }
        assert_eq!(w.average(secs(60), secs(999)), 0.0);
        assert_eq!(w.last_nonzero_at(), None);
        assert!(w.buckets.len() <= 61, "{}", w.buckets.len());
    }

    // --- decisions on synthetic traces ---

    #[test]
    fn new_revision_starts_at_initial_scale() {
        let s = spec(AutoscalerConfig {
            initial_scale: Some(3),
            ..cc10()
        });
        let w = SampleWindow::new(s.stable_window);
        let (d, state) = decide(&s, &w, 0, &ScalerState::default(), Duration::ZERO);
        assert_eq!((d.desired, d.reason), (3, ScaleReason::InitialScale));
        // With samples but not yet 3 ready, initial-scale stays a floor.
        let mut w = w;
        w.record(Sample {
            at: S,
            concurrency: 0.0,
        });
        let (d, state) = decide(&s, &w, 2, &state, S);
        assert_eq!((d.desired, d.reason), (3, ScaleReason::InitialScale));
        // Once reached, traffic decides: idle, the scale-down rate halves it.
        let (d, state) = decide(&s, &w, 3, &state, 2 * S);
        assert_eq!((d.desired, d.reason), (1, ScaleReason::MaxScaleDownRate));
        assert!(state.scale_target_initialized);
        // Initial scale 0 starts nothing.
        let s0 = spec(AutoscalerConfig {
            initial_scale: Some(0),
            ..cc10()
        });
        let (d, _) = decide(
            &s0,
            &SampleWindow::new(secs(60)),
            0,
            &ScalerState::default(),
            Duration::ZERO,
        );
        assert_eq!(d.desired, 0);
    }

    #[test]
    fn step_jumps_in_panic_then_settles() {
        let mut sim = Sim::new(cc10());
        let warm = sim.run(10, 0.0);
        assert!(
            warm.iter().all(|d| d.desired == 1 && !d.panic),
            "{:?}",
            desired(&warm)
        );
        let step = sim.run(8, 50.0);
        assert!(step[0].panic, "a 50-request step on 1 instance panics");
        assert_eq!(step[0].desired, 2);
        // ceil(50 / 7) = 8 once the panic window is full of the step.
        assert_eq!(step[7].desired, 8, "{:?}", desired(&step));
        assert!(desired(&step).windows(2).all(|p| p[0] <= p[1]));
        let rest = sim.run(120, 50.0);
        assert!(
            !rest.last().unwrap().panic,
            "panic ends a stable window after the surge"
        );
        assert!(rest.iter().all(|d| d.desired == 8), "{:?}", desired(&rest));
    }

    #[test]
    fn ramp_follows_without_overshoot() {
        // One more request in flight each second: the 6s window leads the 60s one enough to
        // panic on the way up (as in Knative), but never past what the load needs now, and
        // never below what it needed a stable window ago.
        let mut sim = Sim::new(cc10());
        let ramp: Vec<_> = (0..=100).map(|c| sim.tick(f64::from(c))).collect();
        for (t, d) in ramp.iter().enumerate() {
            let need_now = (t as f64 / 7.0).ceil().max(1.0) as u32;
            assert!(d.desired <= need_now, "at {t}s: {} > {need_now}", d.desired);
            if t >= 60 {
                let need_then = ((t - 60) as f64 / 7.0).ceil() as u32;
                assert!(d.desired >= need_then, "at {t}s: {} < {need_then}", d.desired);
            }
        }
        let hold = sim.run(60, 100.0);
        assert_eq!(hold.last().unwrap().desired, 15, "ceil(100 / 7)");
        assert!(!hold.last().unwrap().panic);
    }

    #[test]
    fn burst_panics_and_keeps_instances_for_a_stable_window() {
        let mut sim = Sim::new(cc10());
        sim.run(70, 5.0);
        assert_eq!(sim.ready, 1);
        let burst = sim.run(5, 100.0);
        assert!(burst.iter().all(|d| d.panic));
        let peak = burst.last().unwrap().desired;
        assert!(peak >= 10, "{:?}", desired(&burst));
        let last_over = sim.state.last_over_threshold_at.unwrap();
        let after = sim.run(120, 5.0);
        let panic_ticks = after.iter().take_while(|d| d.panic).count() as u64;
        let burst_end = sim.now - secs(120);
        assert!(after[..panic_ticks as usize].iter().all(|d| d.desired >= peak));
        // Panic ends at the first decision more than a stable window after the last one over
        // the threshold.
        assert_eq!(burst_end + secs(panic_ticks), last_over + secs(61));
        assert!(after.last().unwrap().desired == 1, "{:?}", desired(&after));
    }

    #[test]
    fn idle_reaches_zero_only_after_stable_window_and_grace() {
        let mut sim = Sim::new(cc10());
        sim.run(10, 7.0);
        let idle = sim.run(200, 0.0);
        let first_zero = idle.iter().position(|d| d.desired == 0).unwrap() as u64 + 10;
        // Last traffic at 9s; 60s stable window + 30s grace.
        assert_eq!(first_zero, 99);
        assert_eq!(idle[(first_zero - 10) as usize].reason, ScaleReason::ScaleToZero);
        assert_eq!(
            idle[(first_zero - 11) as usize].reason,
            ScaleReason::ScaleToZeroGracePeriod
        );
        assert!(idle[(first_zero - 10) as usize..].iter().all(|d| d.desired == 0));

        let mut kept = Sim::new(AutoscalerConfig {
            min_scale: Some(1),
            ..cc10()
        });
        kept.run(10, 7.0);
        assert!(kept.run(300, 0.0).iter().all(|d| d.desired == 1));

        let mut retained = Sim::new(AutoscalerConfig {
            scale_to_zero_pod_retention_period: Some("2m".into()),
            ..cc10()
        });
        retained.run(10, 7.0);
        let idle = retained.run(300, 0.0);
        assert_eq!(
            idle.iter().position(|d| d.desired == 0).unwrap() + 10,
            9 + 60 + 120
        );
    }

    #[test]
    fn revision_that_never_sees_traffic_idles_from_its_first_decision() {
        let mut sim = Sim::new(cc10());
        let ds = sim.run(100, 0.0);
        assert_eq!(ds.iter().position(|d| d.desired == 0), Some(90));
    }

    #[test]
    fn scale_down_delay_damps_a_sawtooth() {
        let saw = |delay: &str| {
            let mut sim = Sim::new(AutoscalerConfig {
                stable_window: Some("6s".into()),
                scale_down_delay: Some(delay.into()),
                ..cc10()
            });
            let mut out = Vec::new();
            for _ in 0..6 {
                out.extend(sim.run(10, 70.0));
                out.extend(sim.run(10, 7.0));
            }
            desired(&out)
        };
        let decreases = |d: &[u32]| d.windows(2).filter(|p| p[1] < p[0]).count();
        let plain = saw("0s");
        let damped = saw("30s");
        assert!(plain[20..].iter().any(|&d| d < 10), "{plain:?}");
        assert!(damped[10..].iter().all(|&d| d >= 10), "{damped:?}");
        assert!(
            decreases(&plain) > 5 && decreases(&damped) == 0,
            "{plain:?}\n{damped:?}"
        );
        assert!(matches!(
            decide_once(AutoscalerConfig {
                scale_down_delay: Some("30s".into()),
                ..cc10()
            }),
            ScaleReason::ScaleDownDelay
        ));
    }

    /// One busy second then an idle one with a scale-down delay: the delay holds.
    fn decide_once(config: AutoscalerConfig) -> ScaleReason {
        let s = spec(AutoscalerConfig {
            stable_window: Some("6s".into()),
            ..config
        });
        let mut w = SampleWindow::new(s.stable_window);
        w.record(Sample {
            at: Duration::ZERO,
            concurrency: 70.0,
        });
        let (_, state) = decide(&s, &w, 10, &ScalerState::default(), Duration::ZERO);
        for t in 1..=7 {
            w.record(Sample {
                at: secs(t),
                concurrency: 0.0,
            });
        }
        decide(&s, &w, 10, &state, secs(7)).0.reason
    }

    fn steady(concurrency: f64, up_to: u64) -> SampleWindow {
        let mut w = SampleWindow::new(secs(60));
        for t in 0..=up_to {
            w.record(Sample {
                at: secs(t),
                concurrency,
            });
        }
        w
    }

    #[test]
    fn scale_rates_limit_each_step() {
        let mut sim = Sim::new(AutoscalerConfig {
            max_scale_up_rate: Some(2.0),
            ..cc10()
        });
        sim.run(5, 0.0);
        let up = sim.run(8, 700.0);
        assert_eq!(desired(&up), [2, 4, 8, 16, 32, 64, 100, 100]);
        assert_eq!(up[0].reason, ScaleReason::MaxScaleUpRate);

        let s = spec(cc10());
        let w = steady(7.0, 70);
        let mut ready = 16;
        let mut seen = Vec::new();
        let mut state = ScalerState::default();
        for t in 70..75 {
            let (d, next) = decide(&s, &w, ready, &state, secs(t));
            assert!(!d.panic);
            seen.push(d.desired);
            ready = d.desired;
            state = next;
        }
        assert_eq!(seen, [8, 4, 2, 1, 1]);
        let (d, _) = decide(&s, &w, 16, &ScalerState::default(), secs(70));
        assert_eq!(d.reason, ScaleReason::MaxScaleDownRate);
    }

    #[test]
    fn min_and_max_scale_clamp() {
        let s = spec(AutoscalerConfig {
            max_scale: Some(3),
            ..cc10()
        });
        let (d, _) = decide(&s, &steady(700.0, 70), 3, &ScalerState::default(), secs(70));
        assert_eq!((d.desired, d.reason), (3, ScaleReason::MaxScale));
        let s = spec(AutoscalerConfig {
            min_scale: Some(2),
            ..cc10()
        });
        let (d, _) = decide(&s, &steady(0.0, 200), 2, &ScalerState::default(), secs(200));
        assert_eq!((d.desired, d.reason), (2, ScaleReason::MinScale));
    }

    #[test]
    fn container_concurrency_zero_uses_a_soft_target_of_100() {
        let w = steady(140.0, 70);
        let (d, _) = decide(&DeciderSpec::default(), &w, 2, &ScalerState::default(), secs(70));
        assert_eq!(d.desired, 2, "ceil(140 / 70)");
        let (d, _) = decide(&spec(cc10()), &w, 20, &ScalerState::default(), secs(70));
        assert_eq!(d.desired, 20, "ceil(140 / 7)");
    }

    #[test]
    fn activation_scale_is_the_floor_when_waking() {
        let s = spec(AutoscalerConfig {
            activation_scale: Some(3),
            ..cc10()
        });
        let (d, _) = decide(&s, &steady(1.0, 3), 0, &ScalerState::default(), secs(3));
        assert_eq!(d.desired, 3);
        let scaled_to_zero = ScalerState {
            scale_target_initialized: true,
            first_decision_at: Some(Duration::ZERO),
            ..ScalerState::default()
        };
        let (d, _) = decide(&s, &steady(0.0, 3), 0, &scaled_to_zero, secs(3));
        assert_eq!(d.desired, 0, "activation scale does not wake an idle revision");
    }

    #[test]
    fn excess_burst_capacity_follows_knative() {
        let w = steady(50.0, 70);
        let (d, _) = decide(&DeciderSpec::default(), &w, 3, &ScalerState::default(), secs(70));
        assert_eq!(d.excess_burst_capacity, (300.0_f64 - 211.0 - 50.0).floor());
        for (tbc, ebc) in [(0.0, 0.0), (-1.0, -1.0)] {
            let s = spec(AutoscalerConfig {
                target_burst_capacity: Some(tbc),
                ..Default::default()
            });
            assert_eq!(
                decide(&s, &w, 3, &ScalerState::default(), secs(70))
                    .0
                    .excess_burst_capacity,
                ebc
            );
        }
        let (d, _) = decide(
            &DeciderSpec::default(),
            &steady(500.0, 70),
            1,
            &ScalerState::default(),
            secs(70),
        );
        assert!(
            d.excess_burst_capacity < 0.0,
            "a burst beyond capacity keeps the activator in"
        );
    }

    // --- properties ---

    fn any_config() -> impl Strategy<Value = AutoscalerConfig> {
        (
            (6u64..=120, 1.0f64..=100.0, 110.0f64..=1000.0, 1.0f64..=100.0),
            (
                0u32..=50,
                1.01f64..=10.0,
                1.01f64..=10.0,
                prop_oneof![3 => Just(0u32), 1 => 1u32..=3],
            ),
            (0u32..=20, 0u32..=3, 1u32..=3, 0u64..=30, 6u64..=60),
        )
            .prop_map(
                |((sw, pwp, ptp, tu), (cc, up, down, min), (extra, init, act, delay, grace))| {
                    let max = if extra == 0 {
                        0
                    } else {
                        (min.max(init).max(act)) + extra
                    };
                    AutoscalerConfig {
                        stable_window: Some(format!("{sw}s")),
                        panic_window_percentage: Some(pwp),
                        panic_threshold_percentage: Some(ptp),
                        target_utilization_percentage: Some(tu),
                        container_concurrency: Some(cc),
                        max_scale_up_rate: Some(up),
                        max_scale_down_rate: Some(down),
                        min_scale: Some(min),
                        max_scale: Some(max),
                        initial_scale: Some(init),
                        activation_scale: Some(act),
                        scale_down_delay: Some(format!("{delay}s")),
                        scale_to_zero_grace_period: Some(format!("{grace}s")),
                        ..AutoscalerConfig::default()
                    }
                },
            )
    }

    /// Seconds of traffic: segments of idle, steady load and bursts, long enough for
    /// revisions to panic, settle and go to zero.
    fn any_trace() -> impl Strategy<Value = Vec<f64>> {
        let level = prop_oneof![2 => Just(0.0), 2 => 0.0f64..30.0, 1 => 0.0f64..2000.0];
        let segment = prop_oneof![
            1 => (Just(0.0), 60usize..250),
            2 => (level.clone(), 1usize..10),
            2 => (level, 10usize..150),
        ];
        prop::collection::vec(segment, 1..12).prop_map(|segments| {
            segments
                .into_iter()
                .flat_map(|(level, len)| std::iter::repeat_n(level, len))
                .collect()
        })
    }

    struct Step {
        before: ScalerState,
        ready: u32,
        decision: ScaleDecision,
        after: ScalerState,
        now: Duration,
        last_traffic: Option<Duration>,
    }

    /// Runs a trace; `lag` picks how far the ready count moves toward each decision.
    fn drive(config: AutoscalerConfig, trace: &[f64], lag: &[u8]) -> (DeciderSpec, Vec<Step>) {
        let s = spec(config);
        let mut w = SampleWindow::new(s.stable_window);
        let mut state = ScalerState::default();
        let mut ready = 0u32;
        let mut last_traffic = None;
        let mut steps = Vec::new();
        for (i, &c) in trace.iter().enumerate() {
            let now = secs(i as u64);
            w.record(Sample {
                at: now,
                concurrency: c,
            });
            if c > 0.0 {
                last_traffic = Some(now);
            }
            let (d, next) = decide(&s, &w, ready, &state, now);
            let pct = u64::from(lag[i % lag.len()] % 101);
            let moved = |from: u32, to: u32| {
                let (lo, hi) = (u64::from(from.min(to)), u64::from(from.max(to)));
                let step = ((hi - lo) * pct).div_ceil(100) as u32;
                if to >= from { from + step } else { from - step }
            };
            let new_ready = moved(ready, d.desired);
            steps.push(Step {
                before: state,
                ready,
                decision: d.clone(),
                after: next.clone(),
                now,
                last_traffic,
            });
            state = next;
            ready = new_ready;
        }
        (s, steps)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn desired_stays_within_min_and_max(config in any_config(), trace in any_trace(), lag in prop::collection::vec(any::<u8>(), 1..8)) {
            let (s, steps) = drive(config, &trace, &lag);
            for st in &steps {
                prop_assert!(st.decision.desired >= s.min_scale);
                if s.max_scale > 0 {
                    prop_assert!(st.decision.desired <= s.max_scale);
                }
            }
        }

        #[test]
        fn never_scales_down_while_panicking(config in any_config(), trace in any_trace(), lag in prop::collection::vec(any::<u8>(), 1..8)) {
            let (_, steps) = drive(config, &trace, &lag);
            for pair in steps.windows(2) {
                if pair[0].decision.panic && pair[1].decision.panic {
                    prop_assert!(pair[1].decision.desired >= pair[0].decision.desired,
                        "at {:?}: {} after {}", pair[1].now, pair[1].decision.desired, pair[0].decision.desired);
                }
            }
        }

        #[test]
        fn never_exceeds_the_scale_up_rate(config in any_config(), trace in any_trace(), lag in prop::collection::vec(any::<u8>(), 1..8)) {
            let (s, steps) = drive(config, &trace, &lag);
            for st in steps.iter().filter(|st| st.ready > 0) {
                let floor = if st.after.scale_target_initialized { s.min_scale } else { s.min_scale.max(s.initial_scale) };
                let cap = ((s.max_scale_up_rate * f64::from(st.ready)).ceil() as u32)
                    .max(s.activation_scale)
                    .max(floor);
                prop_assert!(st.decision.desired <= cap,
                    "at {:?}: {} from {} ready, cap {}", st.now, st.decision.desired, st.ready, cap);
            }
        }

        #[test]
        fn zero_only_after_stable_window_and_grace_without_traffic(config in any_config(), trace in any_trace(), lag in prop::collection::vec(any::<u8>(), 1..8)) {
            let (s, steps) = drive(config, &trace, &lag);
            let quiet = s.stable_window + s.scale_to_zero_grace_period;
            for st in steps.iter().filter(|st| st.decision.desired == 0) {
                prop_assert_eq!(s.min_scale, 0);
                if st.decision.reason == ScaleReason::ScaleToZeroGracePeriod {
                    prop_assert_eq!(st.ready, 0, "holding at zero only what was already zero");
                    continue;
                }
                prop_assert!(st.now >= quiet);
                if let Some(t) = st.last_traffic {
                    prop_assert!(st.now - t >= quiet, "zero at {:?}, traffic at {:?}", st.now, t);
                }
            }
        }

        #[test]
        fn decide_is_deterministic(config in any_config(), trace in any_trace(), lag in prop::collection::vec(any::<u8>(), 1..8)) {
            let (s, steps) = drive(config, &trace, &lag);
            let mut w = SampleWindow::new(s.stable_window);
            for (i, &c) in trace.iter().enumerate() {
                w.record(Sample { at: secs(i as u64), concurrency: c });
            }
            let last = steps.last().unwrap();
            let mut w2 = SampleWindow::new(s.stable_window);
            for (i, &c) in trace.iter().enumerate() {
                w2.record(Sample { at: secs(i as u64), concurrency: c });
            }
            let a = decide(&s, &w, last.ready, &last.before, last.now);
            let b = decide(&s, &w2, last.ready, &last.before, last.now);
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(&a.0, &last.decision);
            prop_assert_eq!(&a.1, &last.after);
        }
    }
}
