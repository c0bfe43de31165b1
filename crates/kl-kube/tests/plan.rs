//! The operator's reconcile decision, a pure function: what it applies and reports for each
//! source kind and each observed state of the build Job and the Knative Service.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kl_k8s::{BuildResources, Object, PlatformSettings, Registry};
use kl_kube::plan::{BUILT, BuildState, Observed, OperatorSettings, POLL, READY, build_job_name, plan};
use kl_kube::{BuildOutcome, LambdaFunction, Readiness, ServiceStatus};
use proptest::prelude::*;
use serde_json::{Value, json};

fn settings() -> OperatorSettings {
    OperatorSettings {
        platform: PlatformSettings::default(),
        registry: Registry {
            push_secret: "registry-push".into(),
            cache_repo: None,
            insecure: false,
        },
        repository: "registry.example.com:5000/kl".into(),
        bucket: "kl-sources".into(),
        credentials_secret: Some("object-store".into()),
        build_resources: BuildResources {
            cpu_millis: 1000,
            memory_bytes: 2 << 30,
        },
        build_deadline: Duration::from_secs(1200),
        build_ttl: Duration::from_secs(3600),
    }
}

/// When the tests' observations are made.
fn at() -> DateTime<Utc> {
    "2026-12-07T10:00:00Z".parse().unwrap()
}

fn function(namespace: &str, generation: i64, spec: Value) -> LambdaFunction {
    serde_json::from_value(json!({
        "apiVersion": "knative-lambda.io/v1alpha1", "kind": "LambdaFunction",
        "metadata": {"name": "hello", "namespace": namespace, "generation": generation},
        "spec": spec,
    }))
    .unwrap()
}

fn image_function() -> LambdaFunction {
    function(
        "kl-acme",
        2,
        json!({
            "source": {"image": "registry.example.com/kl/acme/hello@sha256:aa"},
            "runtime": "python",
            "env": [
                {"name": "MODE", "value": "prod"},
                {"name": "API_KEY", "secretKeyRef": {"name": "stripe", "key": "key"}},
            ],
            "resources": {"cpu": "500m", "memory": "256Mi", "timeout": "30s", "concurrency": 10},
            "scaling": {"minScale": 1, "maxScale": 20, "target": 50.0, "stableWindow": "60s"},
            "eventing": {"triggers": [
                {"name": "orders", "filters": [{"exact": {"type": "com.example.order"}}]},
                {"name": "nightly", "schedule": "0 3 * * *", "data": "{\"job\":\"report\"}"},
            ]},
        }),
    )
}

fn archive_function() -> LambdaFunction {
    function(
        "kl-acme",
        1,
        json!({"source": {"archive": "acme/hello/ctx.tar.gz"}, "runtime": "node"}),
    )
}

fn condition(plan_status: &kl_kube::LambdaFunctionStatus, type_: &str) -> (String, String) {
    let c = plan_status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {plan_status:?}"));
    (c.status.clone(), c.reason.clone())
}

fn kinds(objects: &[Object]) -> Vec<(&'static str, String)> {
    objects.iter().map(|o| (o.kind(), o.name().to_owned())).collect()
}

#[test]
fn a_prebuilt_image_is_served_directly_with_its_triggers() {
    let lf = image_function();
    let p = plan(
        &lf,
        &Observed {
            build: None,
            service: None,
            inline_context: None,
            at: at(),
        },
        &settings(),
    );
    assert_eq!(
        kinds(&p.apply),
        [
            ("Service", "hello".to_owned()),
            ("Trigger", "orders".to_owned()),
            ("PingSource", "nightly".to_owned())
        ]
    );
    let Object::KnativeService(ksvc) = &p.apply[0] else {
        panic!()
    };
    let ksvc = serde_json::to_value(ksvc).unwrap();
    let template = &ksvc["spec"]["template"];
    assert_eq!(
        template["metadata"]["name"], "hello-00002",
        "revision = generation"
    );
    assert_eq!(
        template["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"],
        "1"
    );
    assert_eq!(
        template["metadata"]["annotations"]["autoscaling.knative.dev/target"],
        "50"
    );
    assert_eq!(template["spec"]["containerConcurrency"], 10);
    let container = &template["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.example.com/kl/acme/hello@sha256:aa");
    assert_eq!(container["resources"]["limits"]["memory"], "256Mi");
    let env = container["env"].as_array().unwrap();
    assert!(env.contains(&json!({"name": "MODE", "value": "prod"})));
    assert!(
        env.iter()
            .any(|e| e["valueFrom"]["secretKeyRef"]["name"] == "stripe")
    );

    assert_eq!(p.status.observed_generation, Some(2));
    assert_eq!(
        condition(&p.status, READY),
        ("Unknown".into(), "Deploying".into())
    );
    assert_eq!(
        p.status.image.as_deref(),
        Some("registry.example.com/kl/acme/hello@sha256:aa")
    );
    assert_eq!(p.status.build_job, None);
    assert_eq!(p.requeue, Some(POLL));
}

#[test]
fn ready_is_reported_only_for_the_current_revision() {
    let lf = image_function();
    let serving = |revision: &str| ServiceStatus {
        readiness: Readiness::Ready,
        url: Some("http://hello.kl-acme.svc.cluster.local".into()),
        latest_ready_revision: Some(revision.into()),
        traffic: vec![(revision.into(), 100)],
    };
    let current = plan(
        &lf,
        &Observed {
            build: None,
            service: Some(serving("hello-00002")),
            inline_context: None,
            at: at(),
        },
        &settings(),
    );
    assert_eq!(
        condition(&current.status, READY),
        ("True".into(), "Serving".into())
    );
    assert_eq!(
        current.status.url.as_deref(),
        Some("http://hello.kl-acme.svc.cluster.local")
    );
    assert_eq!(current.requeue, None);

    let previous = plan(
        &lf,
        &Observed {
            build: None,
            service: Some(serving("hello-00001")),
            inline_context: None,
            at: at(),
        },
        &settings(),
    );
    assert_eq!(condition(&previous.status, READY).0, "Unknown");
    assert_eq!(previous.status.url, None);

    let failed = ServiceStatus {
        readiness: Readiness::NotReady {
            reason: "RevisionFailed".into(),
            message: "image pull failed".into(),
        },
        url: None,
        latest_ready_revision: None,
        traffic: Vec::new(),
    };
    let p = plan(
        &lf,
        &Observed {
            build: None,
            service: Some(failed),
            inline_context: None,
            at: at(),
        },
        &settings(),
    );
    assert_eq!(
        condition(&p.status, READY),
        ("False".into(), "RevisionFailed".into())
    );
}

#[test]
fn a_source_is_built_first_and_served_from_the_pushed_digest() {
    let lf = archive_function();
    let job_name = build_job_name(&lf).unwrap();

    let start = plan(
        &lf,
        &Observed {
            build: Some(BuildState::Absent),
            service: None,
            inline_context: None,
            at: at(),
        },
        &settings(),
    );
    assert_eq!(kinds(&start.apply), [("Job", job_name.clone())]);
    let Object::Job(job) = &start.apply[0] else {
        panic!()
    };
    assert_eq!(job.metadata.namespace.as_deref(), Some("knative-lambda-builds"));
    let args = job
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .args
        .clone()
        .unwrap();
    assert!(
        args.contains(&"--context=s3://kl-sources/acme/hello/ctx.tar.gz".to_owned()),
        "{args:?}"
    );
    let tag = format!(
        "registry.example.com:5000/kl/acme/hello:{}",
        job_name.rsplit('-').next().unwrap()
    );
    assert!(args.contains(&format!("--destination={tag}")), "{args:?}");
    assert_eq!(
        condition(&start.status, BUILT),
        ("Unknown".into(), "Building".into())
    );
    assert_eq!(start.status.build_job.as_deref(), Some(job_name.as_str()));
    assert_eq!(start.requeue, Some(POLL));

    let running = plan(
        &lf,
        &Observed {
            build: Some(BuildState::Running),
            service: None,
            inline_context: None,
            at: at(),
        },
        &settings(),
    );
    assert!(running.apply.is_empty());
    assert_eq!(running.requeue, Some(POLL));

    let built = BuildState::Ended(BuildOutcome::Succeeded {
        digest: Some("sha256:4f2a".into()),
    });
    let done = plan(
        &lf,
        &Observed {
            build: Some(built),
            service: None,
            inline_context: None,
            at: at(),
        },
        &settings(),
    );
    assert_eq!(kinds(&done.apply), [("Service", "hello".to_owned())]);
    let image = "registry.example.com:5000/kl/acme/hello@sha256:4f2a";
    assert_eq!(done.status.image.as_deref(), Some(image));
    assert_eq!(condition(&done.status, BUILT), ("True".into(), "Built".into()));
    let ksvc = serde_json::to_value(&done.apply[0]).unwrap();
    assert_eq!(ksvc["spec"]["template"]["spec"]["containers"][0]["image"], image);

    // The Job is garbage-collected an hour later: the recorded image stands, no rebuild.
    let mut later = lf.clone();
    later.status = Some(done.status.clone());
    let after_ttl = plan(
        &later,
        &Observed {
            build: Some(BuildState::Absent),
            service: None,
            inline_context: None,
            at: at(),
        },
        &settings(),
    );
    assert_eq!(kinds(&after_ttl.apply), [("Service", "hello".to_owned())]);
    assert_eq!(after_ttl.status.image.as_deref(), Some(image));
}

#[test]
fn a_failed_build_is_reported_and_nothing_is_applied_until_the_spec_changes() {
    let failed = BuildState::Ended(BuildOutcome::Failed {
        reason: "BackoffLimitExceeded".into(),
        message: "Job has reached the specified backoff limit".into(),
    });
    let p = plan(
        &archive_function(),
        &Observed {
            build: Some(failed),
            service: None,
            inline_context: None,
            at: at(),
        },
        &settings(),
    );
    assert!(p.apply.is_empty());
    assert_eq!(
        condition(&p.status, BUILT),
        ("False".into(), "BuildFailed".into())
    );
    assert_eq!(
        condition(&p.status, READY),
        ("False".into(), "BuildFailed".into())
    );
    let message = &p.status.conditions[0].message;
    assert!(
        message.contains("BackoffLimitExceeded") && message.contains("knative-lambda-builds/hello-build-"),
        "{message}"
    );
    assert_eq!(p.requeue, None);
}

#[test]
fn git_and_s3_sources_become_kaniko_contexts() {
    for (source, context) in [
        (
            json!({"s3": "s3://bucket/ctx.tar.gz"}),
            "--context=s3://bucket/ctx.tar.gz",
        ),
        (
            json!({"git": {"repo": "https://github.com/acme/hello.git", "ref": "refs/heads/main"}}),
            "--context=git://github.com/acme/hello.git#refs/heads/main",
        ),
    ] {
        let lf = function("kl-acme", 1, json!({"source": source, "runtime": "go"}));
        let p = plan(
            &lf,
            &Observed {
                build: Some(BuildState::Absent),
                service: None,
                inline_context: None,
                at: at(),
            },
            &settings(),
        );
        let Object::Job(job) = &p.apply[0] else {
            panic!("{:?}", p.status)
        };
        let args = job
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .args
            .clone()
            .unwrap();
        assert!(args.contains(&context.to_owned()), "{args:?}");
    }
}

#[test]
fn specs_that_cannot_be_served_are_invalid_with_the_reason_and_apply_nothing() {
    let cases = [
        (
            "default",
            json!({"source": {"image": "r/x@sha256:aa"}, "runtime": "python"}),
            "not a tenant's",
        ),
        (
            "kl-acme",
            json!({"source": {}, "runtime": "python"}),
            "exactly one of",
        ),
        (
            "kl-acme",
            json!({"source": {"image": "r/x@sha256:aa", "s3": "s3://b/k"}, "runtime": "python"}),
            "exactly one of",
        ),
        (
            "kl-acme",
            json!({"source": {"s3": "http://b/k"}, "runtime": "python"}),
            "write s3://",
        ),
        (
            "kl-acme",
            json!({"source": {"git": {"repo": "git@github.com:a/b", "ref": "main"}}, "runtime": "go"}),
            "https://",
        ),
        (
            "kl-acme",
            json!({"source": {"image": "r/x@sha256:aa"}, "runtime": "python", "env": [{"name": "A"}]}),
            "env A: set exactly one of value and secretKeyRef",
        ),
        (
            "kl-acme",
            json!({"source": {"image": "r/x@sha256:aa"}, "runtime": "python", "resources": {"memory": "lots"}}),
            "lots",
        ),
        (
            "kl-acme",
            json!({"source": {"image": "r/x@sha256:aa"}, "runtime": "python",
                   "eventing": {"triggers": [{"name": "t", "schedule": "0 3 * * *", "filters": [{"exact": {"type": "x"}}]}]}}),
            "filters or schedule, not both",
        ),
        (
            "kl-acme",
            json!({"source": {"image": "r/x@sha256:aa"}, "runtime": "python",
                   "eventing": {"triggers": [{"name": "t", "schedule": "every day"}]}}),
            "schedule \"every day\"",
        ),
    ];
    for (namespace, spec, expected) in cases {
        let lf = function(namespace, 1, spec.clone());
        let p = plan(
            &lf,
            &Observed {
                build: Some(BuildState::Absent),
                service: None,
                inline_context: None,
                at: at(),
            },
            &settings(),
        );
        assert!(p.apply.is_empty(), "{spec}");
        assert_eq!(p.requeue, None);
        let (status, reason) = condition(&p.status, READY);
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "InvalidSpec"),
            "{spec}"
        );
        let message = &p.status.conditions[0].message;
        assert!(
            message.contains(expected),
            "{spec}: {message:?} lacks {expected:?}"
        );
    }
}

proptest! {
    /// Scaling, resources and env do not change the build (no rebuild for a scaling change);
    /// the source and runtime do.
    #[test]
    fn only_the_source_runtime_and_handler_name_the_build(
        max_scale in 1u32..100, memory_mi in 64u32..2048, value in "[a-z]{0,8}",
        key in "[a-z]{1,8}",
    ) {
        let base = build_job_name(&archive_function()).unwrap();
        let tuned = function("kl-acme", 5, json!({
            "source": {"archive": "acme/hello/ctx.tar.gz"}, "runtime": "node",
            "scaling": {"maxScale": max_scale},
            "resources": {"memory": format!("{memory_mi}Mi")},
            "env": [{"name": "X", "value": value}],
        }));
        prop_assert_eq!(build_job_name(&tuned).unwrap(), base.clone());
        let other = function("kl-acme", 1, json!({
            "source": {"archive": format!("acme/hello/v-{key}.tar.gz")}, "runtime": "node",
        }));
        prop_assert_ne!(build_job_name(&other).unwrap(), base);
    }
}

#[test]
fn a_condition_keeps_its_transition_time_until_its_status_changes() {
    let mut lf = image_function();
    let observed = |service: Option<ServiceStatus>, at: &str| Observed {
        build: None,
        service,
        inline_context: None,
        at: at.parse().unwrap(),
    };
    let deploying = plan(&lf, &observed(None, "2026-12-07T10:00:00Z"), &settings());
    let ready = &deploying.status.conditions[0];
    assert_eq!(
        (ready.status.as_str(), ready.last_transition_time.as_deref()),
        ("Unknown", Some("2026-12-07T10:00:00Z"))
    );

    lf.status = Some(deploying.status);
    let still = plan(&lf, &observed(None, "2026-12-07T10:00:30Z"), &settings());
    assert_eq!(
        still.status.conditions[0].last_transition_time.as_deref(),
        Some("2026-12-07T10:00:00Z"),
        "the same status keeps its time"
    );
    assert_eq!(Some(&still.status), lf.status.as_ref(), "nothing to write");

    let serving = ServiceStatus {
        readiness: Readiness::Ready,
        url: Some("http://hello.kl-acme.svc.cluster.local".into()),
        latest_ready_revision: Some("hello-00002".into()),
        traffic: vec![("hello-00002".into(), 100)],
    };
    let ready = plan(&lf, &observed(Some(serving), "2026-12-07T10:01:00Z"), &settings());
    assert_eq!(condition(&ready.status, READY), ("True".into(), "Serving".into()));
    assert_eq!(
        ready.status.conditions[0].last_transition_time.as_deref(),
        Some("2026-12-07T10:01:00Z"),
        "a new status, a new time"
    );
}
