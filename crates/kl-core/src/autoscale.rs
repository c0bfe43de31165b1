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
    /// Samples stopped arriving entirely (none ever recorded after initialisation): keep the
    /// ready count.
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
