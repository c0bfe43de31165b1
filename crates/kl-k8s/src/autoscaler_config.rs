//! The platform's autoscaling defaults as Knative's `config-autoscaler` ConfigMap. Revisions
//! carry only what a function overrides ([`crate::autoscaling_annotations`]); everything else,
//! and the settings Knative takes only cluster-wide, lives here, as the local autoscaler reads
//! its defaults from the platform's configuration.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kl_core::AutoscalerConfig;

use crate::RenderError;
use crate::knative_service::go_duration;
use crate::names;

/// Knative Serving's namespace, where its ConfigMaps live.
pub const KNATIVE_SERVING_NAMESPACE: &str = "knative-serving";

/// Renders `knative-serving/config-autoscaler` from the platform's defaults, with Knative's
/// global key names. Applying it replaces the ConfigMap's data: unset fields fall back to
/// Knative's own defaults, which are the ones `kl_core` documents. Refuses the two fields that
/// have no key here: `containerConcurrency` (Knative's `container-concurrency` in
/// `config-defaults`; functions set it as `concurrency`) and `activationScale` (per revision only).
pub fn render_autoscaler_config(defaults: &AutoscalerConfig) -> Result<ConfigMap, RenderError> {
    let elsewhere = |field, reason| RenderError::NotInConfigAutoscaler { field, reason };
    if defaults.container_concurrency.is_some() {
        return Err(elsewhere(
            "containerConcurrency",
            "it is `container-concurrency` in config-defaults, and each function sets its own `concurrency`",
        ));
    }
    if defaults.activation_scale.is_some() {
        return Err(elsewhere(
            "activationScale",
            "Knative takes it only per revision; set it on the functions that need it",
        ));
    }
    let mut data = BTreeMap::from([
        (
            "pod-autoscaler-class".to_owned(),
            "kpa.autoscaling.knative.dev".to_owned(),
        ),
        ("enable-scale-to-zero".to_owned(), "true".to_owned()),
    ]);
    let numbers = [
        ("panic-window-percentage", defaults.panic_window_percentage),
        ("panic-threshold-percentage", defaults.panic_threshold_percentage),
        (
            "container-concurrency-target-percentage",
            defaults.target_utilization_percentage,
        ),
        ("container-concurrency-target-default", defaults.target),
        ("target-burst-capacity", defaults.target_burst_capacity),
        ("max-scale-up-rate", defaults.max_scale_up_rate),
        ("max-scale-down-rate", defaults.max_scale_down_rate),
    ];
    for (key, value) in numbers {
        if let Some(v) = value {
            data.insert(key.to_owned(), format!("{v}"));
        }
    }
    let counts = [
        ("min-scale", defaults.min_scale),
        ("max-scale", defaults.max_scale),
        ("initial-scale", defaults.initial_scale),
    ];
    for (key, value) in counts {
        if let Some(v) = value {
            data.insert(key.to_owned(), v.to_string());
        }
    }
    if defaults.initial_scale == Some(0) {
        // Knative refuses an initial scale of 0, here and on revisions, unless this is set.
        data.insert("allow-zero-initial-scale".to_owned(), "true".to_owned());
    }
    let durations = [
        ("stable-window", "stableWindow", &defaults.stable_window),
        (
            "scale-to-zero-grace-period",
            "scaleToZeroGracePeriod",
            &defaults.scale_to_zero_grace_period,
        ),
        (
            "scale-to-zero-pod-retention-period",
            "scaleToZeroPodRetentionPeriod",
            &defaults.scale_to_zero_pod_retention_period,
        ),
        ("scale-down-delay", "scaleDownDelay", &defaults.scale_down_delay),
    ];
    for (key, field, value) in durations {
        if let Some(text) = value {
            data.insert(key.to_owned(), go_duration(field, text)?);
        }
    }
    Ok(ConfigMap {
        metadata: names::meta(
            "config-autoscaler",
            KNATIVE_SERVING_NAMESPACE,
            names::labels(None, None),
        ),
        data: Some(data),
        ..ConfigMap::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_use_knatives_global_keys() {
        let config = render_autoscaler_config(&AutoscalerConfig {
            stable_window: Some("1m".into()),
            target_utilization_percentage: Some(70.0),
            target: Some(100.0),
            scale_to_zero_grace_period: Some("30s".into()),
            max_scale_up_rate: Some(1000.0),
            max_scale_down_rate: Some(2.0),
            initial_scale: Some(0),
            ..AutoscalerConfig::default()
        })
        .unwrap();
        let data = config.data.unwrap();
        let get = |k: &str| data.get(k).map(String::as_str);
        assert_eq!(get("stable-window"), Some("60s"));
        assert_eq!(get("container-concurrency-target-percentage"), Some("70"));
        assert_eq!(get("container-concurrency-target-default"), Some("100"));
        assert_eq!(get("scale-to-zero-grace-period"), Some("30s"));
        assert_eq!(get("max-scale-up-rate"), Some("1000"));
        assert_eq!(get("max-scale-down-rate"), Some("2"));
        assert_eq!(get("initial-scale"), Some("0"));
        assert_eq!(get("allow-zero-initial-scale"), Some("true"));
        assert_eq!(get("pod-autoscaler-class"), Some("kpa.autoscaling.knative.dev"));
    }

    #[test]
    fn fields_without_a_global_key_are_refused() {
        for config in [
            AutoscalerConfig {
                container_concurrency: Some(10),
                ..AutoscalerConfig::default()
            },
            AutoscalerConfig {
                activation_scale: Some(2),
                ..AutoscalerConfig::default()
            },
        ] {
            assert!(matches!(
                render_autoscaler_config(&config),
                Err(RenderError::NotInConfigAutoscaler { .. })
            ));
        }
    }
}
