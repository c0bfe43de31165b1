//! Every kind kl-k8s emits, rendered from realistic inputs and validated strictly: core kinds
//! against Kubernetes 1.33's schemas, Knative kinds against their CRD schemas. Also: names and
//! labels on every object, and byte-identical YAML whatever the input order.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use kl_core::{
    AutoscalerConfig, ByteQuantity, CpuQuantity, FunctionSettings, FunctionSpec, InstanceLimits,
    PriorityClass, Quotas, RateSpec, Runtime, SpecLimits, TenantSpec,
};
use kl_events::delivery::{BackoffPolicy, DeliveryPolicy, Sink};
use kl_events::filter::Filter;
use kl_events::schedule::Schedule;
use kl_k8s::{
    BrokerInput, BuildContext, BuildJobInput, BuildResources, Object, PingSourceInput, PlatformSettings,
    Registry, SecretEnv, ServiceInput, TrafficTarget, TriggerInput, render_autoscaler_config, render_broker,
    render_build_job, render_build_namespace, render_knative_service, render_ping_source,
    render_priority_classes, render_secret, render_tenant, render_trigger, to_yaml,
};
use support::validate::{Outcome, validate_core, validate_crds, write_objects};

fn function(runtime: Runtime, settings: FunctionSettings) -> FunctionSpec {
    settings
        .resolve(runtime, &SpecLimits::default())
        .expect("fixture settings resolve")
}

/// A tenant with every setting used: high priority, quotas, narrowed limits, a rate limit, and
/// an egress allow-list mixing host names, networks, single addresses and IPv6.
fn acme() -> TenantSpec {
    TenantSpec {
        priority: PriorityClass::High,
        weight: 3,
        quotas: Quotas {
            functions: 25,
            instances: 40,
            cpu: CpuQuantity(16_000),
            memory: ByteQuantity(32 << 30),
            concurrent_builds: 3,
            storage: ByteQuantity(10 << 30),
        },
        limits: InstanceLimits {
            default_memory: Some(ByteQuantity(256 << 20)),
            min_memory: Some(ByteQuantity(64 << 20)),
            max_memory: Some(ByteQuantity(2 << 30)),
            default_cpu: Some(CpuQuantity(250)),
            max_cpu: Some(CpuQuantity(2000)),
            default_timeout: Some("30s".into()),
            max_timeout: Some("5m".into()),
        },
        rate_limit: Some(RateSpec {
            per_second: 200,
            burst: Some(400),
        }),
        egress: vec![
            "api.stripe.com".into(),
            "*.amazonaws.com:443".into(),
            "10.20.0.0/16:5432".into(),
            "0.0.0.0/0:443".into(),
            "203.0.113.7:8443".into(),
            "[2001:db8::/32]:443".into(),
        ],
        budget: None,
    }
}

fn registry() -> Registry {
    Registry {
        push_secret: "registry-push".into(),
        cache_repo: Some("registry.example.com/kl/cache".into()),
        insecure: false,
    }
}

/// Every object of two tenants, the platform, three builds, three services, brokers, triggers
/// and ping sources.
fn render_all() -> Vec<Object> {
    let platform = PlatformSettings::default();
    let mut objects = render_priority_classes();
    objects.extend(render_build_namespace(&platform).unwrap());
    let platform_autoscaling = AutoscalerConfig {
        stable_window: Some("60s".into()),
        target_utilization_percentage: Some(70.0),
        scale_to_zero_grace_period: Some("30s".into()),
        max_scale_up_rate: Some(1000.0),
        max_scale_down_rate: Some(2.0),
        ..AutoscalerConfig::default()
    };
    objects.push(Object::ConfigMap(
        render_autoscaler_config(&platform_autoscaling).unwrap(),
    ));
    objects.extend(render_tenant("acme", &acme(), &platform).unwrap());
    objects.extend(render_tenant("beta", &TenantSpec::default(), &platform).unwrap());

    let registry = registry();
    for (function, runtime, id) in [
        ("checkout", Runtime::Python, "a1b2c3"),
        ("thumbnails", Runtime::Node, "d4e5f6"),
        ("api", Runtime::Go, "0789ab"),
    ] {
        // One build carries its (inline) context itself: an init container and an emptyDir.
        let url = format!("s3://kl-sources/acme/{function}/{id}.tar.gz");
        let context = match runtime {
            Runtime::Go => BuildContext::Inline(b"\x1f\x8b not really a tarball"),
            _ => BuildContext::Url(&url),
        };
        let job = render_build_job(
            &BuildJobInput {
                tenant: "acme",
                function,
                runtime,
                build_id: id,
                context,
                destination: &format!("registry.example.com/kl/acme/{function}:{id}"),
                registry: &registry,
                credentials_secret: Some("object-store-credentials"),
                resources: BuildResources {
                    cpu_millis: 1500,
                    memory_bytes: 3 << 30,
                },
                deadline: Duration::from_secs(20 * 60),
                ttl_after_finished: Duration::from_secs(3600),
                executor_image: None,
            },
            &platform,
        )
        .unwrap();
        objects.push(Object::Job(Box::new(job)));
    }

    let checkout = function(
        Runtime::Python,
        FunctionSettings {
            env: [
                ("STRIPE_MODE".into(), "live".into()),
                ("LOG_LEVEL".into(), "info".into()),
            ]
            .into(),
            memory: Some("512Mi".into()),
            cpu: Some("500m".into()),
            timeout: Some("45s".into()),
            concurrency: Some(2),
            min_scale: Some(1),
            max_scale: Some(30),
            priority: Some(PriorityClass::High),
            autoscaling: Some(AutoscalerConfig {
                target: Some(1.5),
                target_utilization_percentage: Some(80.0),
                stable_window: Some("90s".into()),
                panic_window_percentage: Some(20.0),
                panic_threshold_percentage: Some(250.0),
                target_burst_capacity: Some(10.0),
                scale_to_zero_pod_retention_period: Some("2m".into()),
                initial_scale: Some(2),
                scale_down_delay: Some("15s".into()),
                activation_scale: Some(2),
                ..AutoscalerConfig::default()
            }),
            secrets: vec!["stripe".into()],
            ..FunctionSettings::default()
        },
    );
    let secrets = [SecretEnv {
        name: "STRIPE_KEY".into(),
        secret: kl_k8s::names::secret("stripe").unwrap(),
        key: "api-key".into(),
    }];
    objects.push(Object::Secret(
        render_secret(
            "acme",
            "stripe",
            &[("api-key".to_owned(), "sk_test_example".to_owned())].into(),
        )
        .unwrap(),
    ));
    let canary = [
        TrafficTarget {
            revision: 3,
            percent: 80,
            tag: Some("stable".into()),
        },
        TrafficTarget {
            revision: 4,
            percent: 20,
            tag: Some("canary".into()),
        },
    ];
    let thumbnails = function(Runtime::Node, FunctionSettings::default());
    let api = function(
        Runtime::Go,
        FunctionSettings {
            priority: Some(PriorityClass::Low),
            ..FunctionSettings::default()
        },
    );
    let halves = [
        TrafficTarget {
            revision: 1,
            percent: 50,
            tag: None,
        },
        TrafficTarget {
            revision: 2,
            percent: 50,
            tag: None,
        },
    ];
    let services = [
        ServiceInput {
            tenant: "acme",
            function: "checkout",
            revision: 4,
            spec: &checkout,
            image: "registry.example.com/kl/acme/checkout@sha256:5f0c1d",
            secrets: &secrets,
            pull_secret: Some("registry-pull"),
            traffic: &canary,
        },
        ServiceInput {
            tenant: "acme",
            function: "thumbnails",
            revision: 1,
            spec: &thumbnails,
            image: "registry.example.com/kl/acme/thumbnails@sha256:9e8d7c",
            secrets: &[],
            pull_secret: None,
            traffic: &[],
        },
        ServiceInput {
            tenant: "beta",
            function: "api",
            revision: 2,
            spec: &api,
            image: "registry.example.com/kl/beta/api@sha256:1a2b3c",
            secrets: &[],
            pull_secret: None,
            traffic: &halves,
        },
    ];
    for input in &services {
        objects.push(Object::KnativeService(render_knative_service(input).unwrap()));
    }

    let tenant_delivery = DeliveryPolicy {
        dead_letter: Some(Sink::Uri("https://dlq.example.com/acme".into())),
        ..DeliveryPolicy::default()
    };
    objects.push(Object::Broker(
        render_broker(&BrokerInput {
            tenant: "acme",
            rabbitmq_config: "rabbitmq",
            delivery: Some(&tenant_delivery),
        })
        .unwrap(),
    ));
    objects.push(Object::Broker(
        render_broker(&BrokerInput {
            tenant: "beta",
            rabbitmq_config: "rabbitmq",
            delivery: None,
        })
        .unwrap(),
    ));

    let exact = Filter::parse_cli(["type=io.knative.lambda.invoke.async", "source=shop"]).unwrap();
    let prefix_suffix = Filter::parse_cli(["type=prefix:com.example.image.", "subject=suffix:.png"]).unwrap();
    let to_dead_letters = DeliveryPolicy {
        retries: 5,
        backoff_delay: Duration::from_millis(500),
        dead_letter: Some(Sink::Function("dead-letters".into())),
        ..DeliveryPolicy::default()
    };
    let linear = DeliveryPolicy {
        retries: 3,
        backoff_policy: BackoffPolicy::Linear,
        backoff_delay: Duration::from_secs(2),
        ..DeliveryPolicy::default()
    };
    let everything = Filter::default();
    let triggers = [
        ("acme", "orders", "checkout", &exact, Some(&to_dead_letters)),
        ("acme", "png-images", "thumbnails", &prefix_suffix, Some(&linear)),
        ("beta", "all-events", "api", &everything, None),
    ];
    for (tenant, name, function, filter, delivery) in triggers {
        objects.push(Object::Trigger(
            render_trigger(&TriggerInput {
                tenant,
                name,
                function,
                filter,
                delivery,
            })
            .unwrap(),
        ));
    }

    let nightly: Schedule = "0 3 * * *".parse().unwrap();
    let hourly: Schedule = "@hourly".parse().unwrap();
    objects.push(Object::PingSource(
        render_ping_source(&PingSourceInput {
            tenant: "acme",
            name: "nightly-report",
            function: "checkout",
            schedule: &nightly,
            data: Some(r#"{"report": "daily"}"#),
            content_type: Some("application/json"),
        })
        .unwrap(),
    ));
    objects.push(Object::PingSource(
        render_ping_source(&PingSourceInput {
            tenant: "beta",
            name: "tick",
            function: "api",
            schedule: &hourly,
            data: None,
            content_type: None,
        })
        .unwrap(),
    ));
    objects
}

fn passed(outcome: Result<Outcome, String>) {
    match outcome {
        Ok(Outcome::Passed(n)) => println!("validated {n} files"),
        // The SKIPPED line is already printed, where the validator was found missing.
        Ok(Outcome::Skipped) => {}
        Err(report) => panic!("{report}"),
    }
}

#[test]
fn every_kind_we_emit_is_rendered() {
    let kinds: BTreeSet<(&str, &str)> = render_all().iter().map(|o| (o.api_version(), o.kind())).collect();
    let expected: BTreeSet<(&str, &str)> = [
        ("v1", "Namespace"),
        ("v1", "ResourceQuota"),
        ("v1", "LimitRange"),
        ("v1", "ConfigMap"),
        ("v1", "Secret"),
        ("scheduling.k8s.io/v1", "PriorityClass"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
        ("batch/v1", "Job"),
        ("serving.knative.dev/v1", "Service"),
        ("eventing.knative.dev/v1", "Broker"),
        ("eventing.knative.dev/v1", "Trigger"),
        ("sources.knative.dev/v1", "PingSource"),
    ]
    .into();
    assert_eq!(kinds, expected);
}

#[test]
fn core_kinds_pass_strict_kubernetes_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let (core, _) = write_objects(dir.path(), &render_all());
    assert!(core.len() > 30, "{} core objects", core.len());
    passed(validate_core(&core));
}

#[test]
fn knative_kinds_pass_strict_crd_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let (_, crds) = write_objects(dir.path(), &render_all());
    assert_eq!(
        crds.len(),
        10,
        "3 services, 2 brokers, 3 triggers, 2 ping sources"
    );
    passed(validate_crds(&crds));
}

/// The validators must refuse what a cluster would refuse, or the tests above prove nothing.
#[test]
fn the_validators_reject_unknown_fields() {
    let dir = tempfile::tempdir().unwrap();
    let namespace = dir.path().join("namespace.yaml");
    std::fs::write(
        &namespace,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: kl-x\n  colour: red\n",
    )
    .unwrap();
    let service = dir.path().join("service.yaml");
    std::fs::write(
        &service,
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: f\n  namespace: kl-x\n\
         spec:\n  template:\n    spec:\n      containers:\n      - image: x\n      replicas: 3\n",
    )
    .unwrap();
    for (outcome, what) in [
        (
            validate_core(std::slice::from_ref(&namespace)),
            "kubernetes-validate",
        ),
        (validate_crds(std::slice::from_ref(&service)), "CRD schemas"),
    ] {
        match outcome {
            Err(report) => assert!(
                report.contains("colour") || report.contains("replicas"),
                "{report}"
            ),
            Ok(Outcome::Skipped) => {}
            Ok(Outcome::Passed(_)) => panic!("{what} accepted an unknown field"),
        }
    }
}

#[test]
fn yaml_is_byte_identical_whatever_the_input_order() {
    let objects = render_all();
    let first = to_yaml(&objects).unwrap();
    let mut reversed = render_all();
    reversed.reverse();
    assert_eq!(first, to_yaml(&reversed).unwrap());
    assert_eq!(first.matches("---\n").count(), objects.len());
    let namespace_at = first.find("kind: Namespace").unwrap();
    let service_at = first.find("kind: Service").unwrap();
    assert!(
        namespace_at < service_at,
        "namespaces come before what lives in them"
    );
}

/// The whole rendering as YAML, committed: a reviewable example of what `kl export k8s` writes,
/// and a byte-for-byte check that output changes only on purpose. Regenerate with
/// `KL_UPDATE_GOLDEN=1 cargo test -p kl-k8s --test manifests` and review the diff.
#[test]
fn yaml_matches_the_committed_example() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/example.yaml");
    let yaml = to_yaml(&render_all()).unwrap();
    if std::env::var_os("KL_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &yaml).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != yaml {
        let line = committed
            .lines()
            .zip(yaml.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(yaml.lines().count()));
        panic!(
            "rendered YAML differs from {} from line {}: rendered {:?}, committed {:?}; if the change is \
             intended, rerun with KL_UPDATE_GOLDEN=1 and review the diff",
            path.display(),
            line + 1,
            yaml.lines().nth(line),
            committed.lines().nth(line)
        );
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]

    /// Any input order gives the same bytes.
    #[test]
    fn yaml_ignores_the_input_order(seed in proptest::prelude::any::<u64>()) {
        let objects = render_all();
        let mut shuffled = objects.clone();
        // A small deterministic shuffle (Fisher-Yates on an LCG), enough to reach any order.
        let mut state = seed;
        for i in (1..shuffled.len()).rev() {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            shuffled.swap(i, (state >> 33) as usize % (i + 1));
        }
        proptest::prop_assert_eq!(to_yaml(&objects).unwrap(), to_yaml(&shuffled).unwrap());
    }
}

#[test]
fn every_object_is_named_for_kubernetes_and_labelled_as_ours() {
    for object in render_all() {
        let what = format!("{} {}/{}", object.kind(), object.namespace(), object.name());
        kl_k8s::names::check_subdomain("object", object.name()).unwrap_or_else(|e| panic!("{what}: {e}"));
        if !object.namespace().is_empty() {
            kl_k8s::names::check_label("namespace", object.namespace())
                .unwrap_or_else(|e| panic!("{what}: {e}"));
        }
        let labels = object.metadata().labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get("app.kubernetes.io/managed-by").map(String::as_str),
            Some("knative-lambda"),
            "{what}"
        );
    }
}

#[test]
fn tenant_objects_live_in_the_tenant_namespace() {
    let objects = render_tenant("acme", &acme(), &PlatformSettings::default()).unwrap();
    for object in &objects[1..] {
        assert_eq!(
            object.namespace(),
            "kl-acme",
            "{} {}",
            object.kind(),
            object.name()
        );
    }
    let yaml = to_yaml(&objects).unwrap();
    assert!(yaml.contains("knative-lambda.io/egress-hosts-not-enforced: api.stripe.com,*.amazonaws.com:443"));
    assert!(yaml.contains("cidr: 0.0.0.0/0"), "{yaml}");
}
