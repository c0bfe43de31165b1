//! A function as a Knative Service (DESIGN §1, runtime seam): the template is the revision being
//! rolled out, named `<function>-<n>` so traffic can pin it; the KPA settings become Knative's
//! per-revision annotations (DESIGN §5 uses Knative's names, so the mapping is one to one); the
//! `traffic` block is the function's split between revisions.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, LocalObjectReference, Probe,
    ResourceRequirements, SecretKeySelector, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kl_core::secret::{SECRETS_DIR_ENV, SECRETS_MOUNT};
use kl_core::{FunctionSpec, format_cpu, format_memory, parse_duration};

use crate::RenderError;
use crate::crd::{
    KnativeService, RevisionSpec, RevisionTemplate, ServiceSpec, TemplateMetadata, TrafficEntry,
};
use crate::names::{self, COMPONENT_FUNCTION, LABEL_COMPONENT};

/// Prefix of Knative's autoscaling annotations.
const AUTOSCALING: &str = "autoscaling.knative.dev/";
/// The port the shim serves on; Knative passes it to the container as `$PORT`.
const PORT: i32 = 8080;

/// An environment variable filled from a key of a Secret in the tenant's namespace, so secret
/// values never appear in the Service (or in exported YAML).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretEnv {
    /// The variable's name.
    pub name: String,
    /// The Secret's name.
    pub secret: String,
    pub key: String,
}

/// One entry of a function's traffic split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficTarget {
    /// Revision number; rendered as the Knative revision `<function>-<n>`.
    pub revision: u32,
    pub percent: u32,
    /// Gives the revision its own URL (`<tag>-<function>…`), e.g. for testing a canary directly.
    pub tag: Option<String>,
}

/// What a function's Knative Service is rendered from.
#[derive(Debug, Clone)]
pub struct ServiceInput<'a> {
    pub tenant: &'a str,
    pub function: &'a str,
    /// Number of the revision the template describes (the newest one).
    pub revision: u32,
    pub spec: &'a FunctionSpec,
    /// The image built for the revision, by digest (`registry/repo@sha256:…`), so the revision
    /// is immutable even if a tag moves.
    pub image: &'a str,
    pub secrets: &'a [SecretEnv],
    /// Secret (type `kubernetes.io/dockerconfigjson`, in the tenant's namespace) to pull the
    /// image with; `None` when nodes can pull already.
    pub pull_secret: Option<&'a str>,
    /// The split between revisions; empty sends everything to `revision`.
    pub traffic: &'a [TrafficTarget],
}

/// Renders the Service. Fails on names Kubernetes would refuse, a traffic split that does not
/// sum to 100, and autoscaling fields Knative only takes cluster-wide.
pub fn render_knative_service(input: &ServiceInput<'_>) -> Result<KnativeService, RenderError> {
    let ns = names::namespace(input.tenant)?;
    kl_core::validate_function_name(input.function)?;
    let spec = input.spec;
    let annotations = autoscaling_annotations(input.function, spec)?;
    let traffic = traffic(input)?;

    let mut env: Vec<EnvVar> = spec
        .env
        .iter()
        .map(|(name, value)| EnvVar {
            name: name.clone(),
            value: Some(value.clone()),
            value_from: None,
        })
        .collect();
    let mut seen: BTreeSet<&str> = spec.env.keys().map(String::as_str).collect();
    // The function's own secret keys (kl.yaml `secretEnv`) come from its tenant's Secrets.
    let from_spec = spec
        .secrets
        .env
        .iter()
        .map(|(var, from)| {
            Ok(SecretEnv {
                name: var.clone(),
                secret: names::secret(&from.name)?,
                key: from.key.clone(),
            })
        })
        .collect::<Result<Vec<_>, RenderError>>()?;
    for s in input.secrets.iter().chain(&from_spec) {
        check_env_name(input.function, &s.name)?;
        if !seen.insert(&s.name) {
            return Err(RenderError::InvalidName {
                kind: "environment variable",
                name: s.name.clone(),
                reason: format!(
                    "function {} sets it twice (as a value or another secret)",
                    input.function
                ),
            });
        }
        names::check_subdomain("secret", &s.secret)?;
        env.push(EnvVar {
            name: s.name.clone(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: s.secret.clone(),
                    key: s.key.clone(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
        });
    }
    if let Some(secret) = input.pull_secret {
        names::check_subdomain("image pull secret", secret)?;
    }
    // Secrets as files: each a read-only volume at SECRETS_MOUNT/NAME, as in the sandbox.
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    for name in &spec.secrets.files {
        let volume = format!("secret-{name}");
        volumes.push(Volume {
            name: volume.clone(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(names::secret(name)?),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: volume,
            mount_path: format!("{SECRETS_MOUNT}/{name}"),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    if !mounts.is_empty() {
        env.push(EnvVar {
            name: SECRETS_DIR_ENV.to_owned(),
            value: Some(SECRETS_MOUNT.to_owned()),
            value_from: None,
        });
    }

    let resources = BTreeMap::from([
        ("cpu".to_owned(), Quantity(format_cpu(spec.cpu_millis))),
        ("memory".to_owned(), Quantity(format_memory(spec.memory_bytes))),
    ]);
    let container = Container {
        name: "function".to_owned(),
        image: Some(input.image.to_owned()),
        ports: Some(vec![ContainerPort {
            container_port: PORT,
            name: Some("http1".to_owned()),
            ..ContainerPort::default()
        }]),
        env: (!env.is_empty()).then_some(env),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        // Requests equal limits: the instance gets exactly what the function asked for, as the
        // local runtime's cgroup gives it, and is billed for that.
        resources: Some(ResourceRequirements {
            requests: Some(resources.clone()),
            limits: Some(resources),
            ..ResourceRequirements::default()
        }),
        // The shim answers `/healthz` once the handler is loaded (DESIGN §3). The port is the
        // serving port (Knative refuses any other); left at its default it would read `0`.
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/healthz".to_owned()),
                port: IntOrString::Int(PORT),
                ..HTTPGetAction::default()
            }),
            ..Probe::default()
        }),
        // The images run as uid 65532 (see kl-build's Dockerfile), so `restricted` holds.
        security_context: Some(crate::restricted_container()),
        ..Container::default()
    };

    let mut labels = names::labels(Some(input.tenant), Some(input.function));
    let mut template_labels = labels.clone();
    template_labels.insert(LABEL_COMPONENT.to_owned(), COMPONENT_FUNCTION.to_owned());
    // Reachable only inside the cluster: callers come through the platform's gateway, which
    // authenticates and rate-limits before Knative routes.
    labels.insert(
        "networking.knative.dev/visibility".to_owned(),
        "cluster-local".to_owned(),
    );

    Ok(KnativeService {
        metadata: ObjectMeta {
            name: Some(input.function.to_owned()),
            namespace: Some(ns),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: ServiceSpec {
            template: RevisionTemplate {
                metadata: TemplateMetadata {
                    name: names::revision(input.function, input.revision),
                    labels: template_labels,
                    annotations,
                },
                spec: RevisionSpec {
                    container_concurrency: spec.concurrency,
                    timeout_seconds: spec.timeout_ms.div_ceil(1000).max(1),
                    containers: vec![container],
                    volumes,
                    automount_service_account_token: false,
                    enable_service_links: false,
                    priority_class_name: names::priority_class(spec.priority),
                    image_pull_secrets: input
                        .pull_secret
                        .map(|name| LocalObjectReference {
                            name: name.to_owned(),
                        })
                        .into_iter()
                        .collect(),
                },
            },
            traffic,
        },
    })
}

/// Knative's per-revision autoscaling annotations for a function: the KPA class and metric, the
/// function's scale bounds, and each autoscaling setting the function overrides. Settings it
/// leaves unset are the platform's defaults, which belong in Knative's `config-autoscaler`
/// ConfigMap rather than on every revision. `scale-to-zero-grace-period`, `max-scale-up-rate`
/// and `max-scale-down-rate` exist only in that ConfigMap, so a function setting them is refused.
pub fn autoscaling_annotations(
    function: &str,
    spec: &FunctionSpec,
) -> Result<BTreeMap<String, String>, RenderError> {
    let a = &spec.autoscaling;
    let cluster_wide = |field, config_key| RenderError::ClusterWideAutoscaling {
        function: function.to_owned(),
        field,
        config_key,
    };
    if a.scale_to_zero_grace_period.is_some() {
        return Err(cluster_wide(
            "scaleToZeroGracePeriod",
            "scale-to-zero-grace-period",
        ));
    }
    if a.max_scale_up_rate.is_some() {
        return Err(cluster_wide("maxScaleUpRate", "max-scale-up-rate"));
    }
    if a.max_scale_down_rate.is_some() {
        return Err(cluster_wide("maxScaleDownRate", "max-scale-down-rate"));
    }
    let mut out = BTreeMap::new();
    let mut put = |key: &str, value: String| {
        out.insert(format!("{AUTOSCALING}{key}"), value);
    };
    put("class", "kpa.autoscaling.knative.dev".to_owned());
    put("metric", "concurrency".to_owned());
    put("min-scale", spec.min_scale.to_string());
    put("max-scale", spec.max_scale.to_string());
    let numbers = [
        ("target", a.target),
        ("target-utilization-percentage", a.target_utilization_percentage),
        ("panic-window-percentage", a.panic_window_percentage),
        ("panic-threshold-percentage", a.panic_threshold_percentage),
        ("target-burst-capacity", a.target_burst_capacity),
    ];
    for (key, value) in numbers {
        if let Some(v) = value {
            // `{}` prints 70.0 as `70` and 12.5 as `12.5`, both of which Knative parses.
            put(key, format!("{v}"));
        }
    }
    let counts = [
        ("initial-scale", a.initial_scale),
        ("activation-scale", a.activation_scale),
    ];
    for (key, value) in counts {
        if let Some(v) = value {
            put(key, v.to_string());
        }
    }
    let durations = [
        ("window", "stableWindow", &a.stable_window),
        ("scale-down-delay", "scaleDownDelay", &a.scale_down_delay),
        (
            "scale-to-zero-pod-retention-period",
            "scaleToZeroPodRetentionPeriod",
            &a.scale_to_zero_pod_retention_period,
        ),
    ];
    for (key, field, value) in durations {
        if let Some(text) = value {
            put(key, go_duration(field, text)?);
        }
    }
    Ok(out)
}

/// Our duration (`60s`, `1m`, `2d`) as a Go duration, which Knative parses: whole seconds as
/// `90s`, the rest in milliseconds. Go has no day unit, so `1d` must not pass through as is.
pub(crate) fn go_duration(field: &'static str, text: &str) -> Result<String, RenderError> {
    let ms = parse_duration(text).map_err(|_| RenderError::Duration {
        field,
        value: text.to_owned(),
        reason: "not a duration such as 60s or 2m",
    })?;
    Ok(if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    })
}

fn traffic(input: &ServiceInput<'_>) -> Result<Vec<TrafficEntry>, RenderError> {
    let fail = |reason: String| RenderError::Traffic {
        function: input.function.to_owned(),
        reason,
    };
    if input.traffic.is_empty() {
        return Ok(vec![TrafficEntry {
            revision_name: names::revision(input.function, input.revision),
            latest_revision: false,
            percent: 100,
            tag: None,
        }]);
    }
    let mut revisions = BTreeSet::new();
    let mut tags = BTreeSet::new();
    let mut total: u64 = 0;
    for t in input.traffic {
        if !revisions.insert(t.revision) {
            return Err(fail(format!(
                "names revision {} twice; merge its entries",
                t.revision
            )));
        }
        if t.revision > input.revision {
            return Err(fail(format!(
                "names revision {}, newer than the newest ({})",
                t.revision, input.revision
            )));
        }
        if let Some(tag) = &t.tag {
            names::check_label("traffic tag", tag)?;
            if !tags.insert(tag.as_str()) {
                return Err(fail(format!("uses tag {tag:?} twice")));
            }
        }
        total += u64::from(t.percent);
    }
    if total != 100 {
        return Err(fail(format!("percentages sum to {total}, not 100")));
    }
    Ok(input
        .traffic
        .iter()
        .map(|t| TrafficEntry {
            revision_name: names::revision(input.function, t.revision),
            latest_revision: false,
            percent: t.percent,
            tag: t.tag.clone(),
        })
        .collect())
}

/// Environment names as `kl_core` checks them for plain values: letters, digits and `_`, not
/// starting with a digit, and not the platform's `KL_` prefix.
fn check_env_name(function: &str, name: &str) -> Result<(), RenderError> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("KL_");
    if ok {
        return Ok(());
    }
    Err(RenderError::InvalidName {
        kind: "environment variable",
        name: name.to_owned(),
        reason: format!(
            "function {function}: use letters, digits and '_', not starting with a digit, and not the reserved KL_ prefix"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kl_core::{AutoscalerConfig, FunctionSettings, Runtime, SpecLimits};

    fn spec(autoscaling: AutoscalerConfig) -> FunctionSpec {
        FunctionSettings {
            concurrency: Some(4),
            min_scale: Some(1),
            max_scale: Some(20),
            autoscaling: Some(autoscaling),
            ..FunctionSettings::default()
        }
        .resolve(Runtime::Node, &SpecLimits::default())
        .unwrap()
    }

    #[test]
    fn annotations_carry_knative_names_for_every_per_revision_setting() {
        let s = spec(AutoscalerConfig {
            target: Some(3.0),
            target_utilization_percentage: Some(80.0),
            stable_window: Some("2m".into()),
            panic_window_percentage: Some(12.5),
            panic_threshold_percentage: Some(300.0),
            target_burst_capacity: Some(-1.0),
            scale_to_zero_pod_retention_period: Some("1500ms".into()),
            initial_scale: Some(2),
            scale_down_delay: Some("30s".into()),
            activation_scale: Some(2),
            ..AutoscalerConfig::default()
        });
        let got = autoscaling_annotations("f", &s).unwrap();
        let want: BTreeMap<String, String> = [
            ("class", "kpa.autoscaling.knative.dev"),
            ("metric", "concurrency"),
            ("min-scale", "1"),
            ("max-scale", "20"),
            ("target", "3"),
            ("target-utilization-percentage", "80"),
            ("window", "120s"),
            ("panic-window-percentage", "12.5"),
            ("panic-threshold-percentage", "300"),
            ("target-burst-capacity", "-1"),
            ("scale-to-zero-pod-retention-period", "1500ms"),
            ("initial-scale", "2"),
            ("scale-down-delay", "30s"),
            ("activation-scale", "2"),
        ]
        .into_iter()
        .map(|(k, v)| (format!("{AUTOSCALING}{k}"), v.to_owned()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn unset_settings_are_left_to_the_cluster_defaults() {
        let got = autoscaling_annotations("f", &spec(AutoscalerConfig::default())).unwrap();
        let keys: Vec<&str> = got.keys().map(|k| k.trim_start_matches(AUTOSCALING)).collect();
        assert_eq!(keys, ["class", "max-scale", "metric", "min-scale"]);
    }

    #[test]
    fn cluster_wide_settings_are_refused_by_name() {
        let s = spec(AutoscalerConfig {
            max_scale_up_rate: Some(10.0),
            ..AutoscalerConfig::default()
        });
        let err = autoscaling_annotations("f", &s).unwrap_err();
        assert!(err.to_string().contains("`max-scale-up-rate`"), "{err}");
    }

    #[test]
    fn days_become_go_seconds() {
        assert_eq!(go_duration("window", "1d").unwrap(), "86400s");
        assert_eq!(go_duration("window", "250ms").unwrap(), "250ms");
    }

    fn input<'a>(spec: &'a FunctionSpec, traffic: &'a [TrafficTarget]) -> ServiceInput<'a> {
        ServiceInput {
            tenant: "acme",
            function: "hello",
            revision: 3,
            spec,
            image: "ghcr.io/acme/hello@sha256:abc",
            secrets: &[],
            pull_secret: None,
            traffic,
        }
    }

    fn split(parts: &[(u32, u32)]) -> Vec<TrafficTarget> {
        parts
            .iter()
            .map(|&(revision, percent)| TrafficTarget {
                revision,
                percent,
                tag: None,
            })
            .collect()
    }

    #[test]
    fn a_functions_secrets_come_from_its_tenants_secrets_as_env_and_read_only_volumes() {
        let mut s = spec(AutoscalerConfig::default());
        s.secrets
            .env
            .insert("DB_PASSWORD".into(), "db.PASSWORD".parse().unwrap());
        s.secrets.files.push("tls".into());
        let svc = render_knative_service(&input(&s, &[])).unwrap();
        let pod = &svc.spec.template.spec;
        let container = &pod.containers[0];
        let env = container.env.clone().unwrap();
        let db = env.iter().find(|e| e.name == "DB_PASSWORD").unwrap();
        let selector = db.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!(
            (selector.name.as_str(), selector.key.as_str()),
            ("kl-secret-db", "PASSWORD")
        );
        assert!(
            env.iter()
                .any(|e| e.name == "KL_SECRETS_DIR" && e.value.as_deref() == Some("/var/run/secrets/kl"))
        );
        assert_eq!(
            pod.volumes[0].secret.as_ref().unwrap().secret_name.as_deref(),
            Some("kl-secret-tls")
        );
        let mount = &container.volume_mounts.as_ref().unwrap()[0];
        assert_eq!(
            (mount.mount_path.as_str(), mount.read_only),
            ("/var/run/secrets/kl/tls", Some(true))
        );
    }

    #[test]
    fn traffic_defaults_to_the_new_revision_and_must_sum_to_100() {
        let s = spec(AutoscalerConfig::default());
        let svc = render_knative_service(&input(&s, &[])).unwrap();
        assert_eq!(svc.spec.traffic.len(), 1);
        assert_eq!(svc.spec.traffic[0].revision_name, "hello-00003");
        assert_eq!(svc.spec.traffic[0].percent, 100);

        let canary = split(&[(2, 90), (3, 10)]);
        let svc = render_knative_service(&input(&s, &canary)).unwrap();
        assert_eq!(svc.spec.traffic.iter().map(|t| t.percent).sum::<u32>(), 100);

        for bad in [
            split(&[(2, 90), (3, 20)]),
            split(&[(2, 50), (2, 50)]),
            split(&[(4, 100)]),
        ] {
            assert!(
                matches!(
                    render_knative_service(&input(&s, &bad)),
                    Err(RenderError::Traffic { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn secrets_are_referenced_not_copied_and_may_not_shadow_values() {
        let mut s = spec(AutoscalerConfig::default());
        s.env.insert("GREETING".into(), "hi".into());
        let secrets = [SecretEnv {
            name: "DB_PASSWORD".into(),
            secret: "db".into(),
            key: "password".into(),
        }];
        let svc = render_knative_service(&ServiceInput {
            secrets: &secrets,
            ..input(&s, &[])
        })
        .unwrap();
        let env = svc.spec.template.spec.containers[0].env.clone().unwrap();
        let db = env.iter().find(|e| e.name == "DB_PASSWORD").unwrap();
        assert!(db.value.is_none() && db.value_from.is_some());

        let shadow = [SecretEnv {
            name: "GREETING".into(),
            ..secrets[0].clone()
        }];
        assert!(
            render_knative_service(&ServiceInput {
                secrets: &shadow,
                ..input(&s, &[])
            })
            .is_err()
        );
    }
}
