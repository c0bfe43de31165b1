//! The Kaniko Job that builds a revision's image in a cluster (DESIGN §1, builder seam). The
//! build context — the source, the shim under `.kl/` and the generated Dockerfile, packed by
//! `kl_build::context` — is in the object store, where Kaniko reads it (`--context s3://…`), or
//! for a small inline source carried by the Job itself; Kaniko pushes to the configured
//! registry.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvFromSource, EnvVar, KeyToPath, PodSpec,
    PodTemplateSpec, ResourceRequirements, SeccompProfile, SecretEnvSource, SecretVolumeSource,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kl_core::{Runtime, format_cpu, format_memory};

use crate::names::{self, COMPONENT_BUILD, LABEL_COMPONENT};
use crate::tenant::BUILD_PRIORITY_CLASS;
use crate::{PlatformSettings, RenderError};

/// The Kaniko executor, pinned by tag so a build is reproducible and an upgrade is a reviewed
/// change. v1.23.2 is the last release of the original project (archived in 2025); a maintained
/// fork can be set per build with [`BuildJobInput::executor_image`].
pub const KANIKO_IMAGE: &str = "gcr.io/kaniko-project/executor:v1.23.2";

/// Label carrying the build's id on the Job and its pod, so the control plane finds its pod.
pub const LABEL_BUILD: &str = "knative-lambda.io/build";

/// Where Kaniko expects registry credentials (a Docker `config.json`).
const DOCKER_CONFIG_DIR: &str = "/kaniko/.docker";

/// The image that unpacks an inline context for Kaniko (whose own image has no shell), pinned
/// by tag like [`KANIKO_IMAGE`].
pub const UNPACK_IMAGE: &str = "busybox:1.37.0";
/// Where an inline context is written for Kaniko (an `emptyDir`).
const INLINE_CONTEXT_DIR: &str = "/kl-context";
/// The largest inline context a Job carries: its base64 sits in the Job object, which etcd
/// caps at about 1.5 MiB with everything else.
pub const INLINE_CONTEXT_LIMIT: usize = 512 << 10;

/// Where Kaniko reads the build context.
#[derive(Debug, Clone, Copy)]
pub enum BuildContext<'a> {
    /// A tarball in object storage, `s3://bucket/key.tar.gz` (also `gs://`, or `https://` for
    /// Azure Blob Storage), or a Git repository, `git://host/path#ref`.
    Url(&'a str),
    /// The tar.gz itself, for a small inline source: an init container writes it into an
    /// `emptyDir` and Kaniko reads it from there (`tar://…`), so nothing outlives the Job.
    Inline(&'a [u8]),
}

/// The registry images are pushed to: ECR, GHCR, Docker Hub, Harbor or any registry speaking
/// the distribution API. They differ only in what the push secret's `config.json` holds (a
/// token, a robot account, or ECR's `ecr-login` credential helper, which reads AWS credentials
/// from [`BuildJobInput::credentials_secret`]), not in the Job's shape. Pulling is the Knative
/// Service's business ([`crate::ServiceInput::pull_secret`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    /// Secret of type `kubernetes.io/dockerconfigjson` in the build namespace with push rights;
    /// mounted as `/kaniko/.docker/config.json`.
    pub push_secret: String,
    /// Repository for Kaniko's layer cache (`--cache-repo`), e.g. `registry.example.com/kl/cache`.
    pub cache_repo: Option<String>,
    /// Push over plain HTTP (a registry inside the cluster without TLS).
    pub insecure: bool,
}

/// CPU and memory of the build container (requests and limits alike, so a build gets what it
/// was promised and is billed for what it was given).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildResources {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

/// One build's inputs.
#[derive(Debug, Clone)]
pub struct BuildJobInput<'a> {
    pub tenant: &'a str,
    pub function: &'a str,
    pub runtime: Runtime,
    /// Short id of the build (DNS label characters); the Job is `<function>-build-<id>`.
    pub build_id: &'a str,
    pub context: BuildContext<'a>,
    /// The image to push, `registry/repository:tag`.
    pub destination: &'a str,
    pub registry: &'a Registry,
    /// Secret whose keys become the build's environment: object store credentials
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, and `S3_ENDPOINT` with
    /// `S3_FORCE_PATH_STYLE=true` for MinIO), which ECR's credential helper reads too.
    pub credentials_secret: Option<&'a str>,
    pub resources: BuildResources,
    /// `activeDeadlineSeconds`: the build is killed past this.
    pub deadline: Duration,
    /// `ttlSecondsAfterFinished`: the finished Job (and its log) is kept this long for the
    /// control plane to read the result, then garbage-collected.
    pub ttl_after_finished: Duration,
    /// `None` for [`KANIKO_IMAGE`].
    pub executor_image: Option<&'a str>,
}

/// Renders the build's Job in the platform's build namespace. No retries (`backoffLimit: 0`):
/// a failed build is reported and retried by the control plane (`command.build.retry`), not
/// silently re-run. Kaniko writes the pushed image's digest to the termination log, where the
/// control plane reads it from the pod's status.
pub fn render_build_job(input: &BuildJobInput<'_>, platform: &PlatformSettings) -> Result<Job, RenderError> {
    kl_core::validate_tenant_name(input.tenant)?;
    kl_core::validate_function_name(input.function)?;
    names::check_label("build namespace", &platform.build_namespace)?;
    names::check_label("build id", input.build_id)?;
    let name = format!("{}-build-{}", input.function, input.build_id);
    // A Job's name becomes its pods' `job-name` label value, so it must be a label itself.
    names::check_label("build Job", &name)?;
    names::check_subdomain("registry push secret", &input.registry.push_secret)?;
    if let Some(secret) = input.credentials_secret {
        names::check_subdomain("build credentials secret", secret)?;
    }
    let deadline = seconds("deadline", input.deadline)?;
    let ttl = seconds("ttlAfterFinished", input.ttl_after_finished)?;

    let mut labels = names::labels(Some(input.tenant), Some(input.function));
    labels.insert(LABEL_COMPONENT.to_owned(), COMPONENT_BUILD.to_owned());
    labels.insert(LABEL_BUILD.to_owned(), input.build_id.to_owned());
    labels.insert(
        "knative-lambda.io/runtime".to_owned(),
        input.runtime.as_str().to_owned(),
    );

    let context_url = match input.context {
        BuildContext::Url(url) => url.to_owned(),
        BuildContext::Inline(bytes) if bytes.len() > INLINE_CONTEXT_LIMIT => {
            return Err(RenderError::InlineContextTooLarge {
                bytes: bytes.len(),
                limit: INLINE_CONTEXT_LIMIT,
            });
        }
        BuildContext::Inline(_) => format!("tar://{INLINE_CONTEXT_DIR}/context.tar.gz"),
    };
    let mut args = vec![
        format!("--context={context_url}"),
        "--dockerfile=Dockerfile".to_owned(),
        format!("--destination={}", input.destination),
        "--cache=true".to_owned(),
        "--digest-file=/dev/termination-log".to_owned(),
        // Only what the image needs is snapshotted; `redo` is Kaniko's fast, reliable mode.
        "--snapshot-mode=redo".to_owned(),
    ];
    if let Some(repo) = &input.registry.cache_repo {
        args.push(format!("--cache-repo={repo}"));
    }
    if input.registry.insecure {
        args.push("--insecure".to_owned());
    }

    let quantity = |r: BuildResources| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(format_cpu(r.cpu_millis))),
            ("memory".to_owned(), Quantity(format_memory(r.memory_bytes))),
        ])
    };
    let mut container = Container {
        name: "kaniko".to_owned(),
        image: Some(input.executor_image.unwrap_or(KANIKO_IMAGE).to_owned()),
        args: Some(args),
        env: Some(vec![EnvVar {
            name: "DOCKER_CONFIG".to_owned(),
            value: Some(DOCKER_CONFIG_DIR.to_owned()),
            value_from: None,
        }]),
        env_from: input.credentials_secret.map(|secret| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: secret.to_owned(),
                    optional: Some(false),
                }),
                ..EnvFromSource::default()
            }]
        }),
        resources: Some(ResourceRequirements {
            requests: Some(quantity(input.resources)),
            limits: Some(quantity(input.resources)),
            ..ResourceRequirements::default()
        }),
        // Kaniko unpacks base images as root inside its container, so it cannot run as non-root;
        // it needs no privilege, though, and only the file-ownership capabilities.
        security_context: Some(SecurityContext {
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: Some(
                    ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"]
                        .map(str::to_owned)
                        .to_vec(),
                ),
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                localhost_profile: None,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "registry-credentials".to_owned(),
            mount_path: DOCKER_CONFIG_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    };
    let mut volumes = vec![Volume {
        name: "registry-credentials".to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(input.registry.push_secret.clone()),
            items: Some(vec![KeyToPath {
                key: ".dockerconfigjson".to_owned(),
                path: "config.json".to_owned(),
                mode: None,
            }]),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }];
    let mut init_containers = None;
    if let BuildContext::Inline(bytes) = input.context {
        let mount = |read_only| VolumeMount {
            name: "context".to_owned(),
            mount_path: INLINE_CONTEXT_DIR.to_owned(),
            read_only: Some(read_only),
            ..VolumeMount::default()
        };
        container.volume_mounts.get_or_insert_default().push(mount(true));
        volumes.push(Volume {
            name: "context".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        });
        init_containers = Some(vec![unpack_container(bytes, mount(false))]);
    }

    let pod = PodSpec {
        containers: vec![container],
        restart_policy: Some("Never".to_owned()),
        // A build runs user-supplied install steps; it has no business with the API server.
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        priority_class_name: Some(BUILD_PRIORITY_CLASS.to_owned()),
        init_containers,
        volumes: Some(volumes),
        ..PodSpec::default()
    };

    Ok(Job {
        metadata: names::meta(&name, &platform.build_namespace, labels.clone()),
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(deadline),
            ttl_seconds_after_finished: Some(i32::try_from(ttl).map_err(|_| RenderError::Duration {
                field: "ttlAfterFinished",
                value: format!("{ttl}s"),
                reason: "more than 2^31 seconds",
            })?),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    })
}

/// The init container writing an inline context where Kaniko reads it: unprivileged, with a
/// read-only root and nothing but the `emptyDir` to write to.
fn unpack_container(context: &[u8], mount: VolumeMount) -> Container {
    use base64::Engine;
    let small = BTreeMap::from([
        ("cpu".to_owned(), Quantity("100m".to_owned())),
        ("memory".to_owned(), Quantity("32Mi".to_owned())),
    ]);
    Container {
        name: "context".to_owned(),
        image: Some(UNPACK_IMAGE.to_owned()),
        command: Some(vec![
            "sh".to_owned(),
            "-c".to_owned(),
            format!("printf %s \"$KL_CONTEXT\" | base64 -d > {INLINE_CONTEXT_DIR}/context.tar.gz"),
        ]),
        env: Some(vec![EnvVar {
            name: "KL_CONTEXT".to_owned(),
            value: Some(base64::engine::general_purpose::STANDARD.encode(context)),
            value_from: None,
        }]),
        resources: Some(ResourceRequirements {
            requests: Some(small.clone()),
            limits: Some(small),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            run_as_user: Some(65534),
            read_only_root_filesystem: Some(true),
            ..crate::restricted_container()
        }),
        volume_mounts: Some(vec![mount]),
        ..Container::default()
    }
}

/// Whole seconds, at least one, as Kubernetes' integer duration fields take them.
fn seconds(field: &'static str, d: Duration) -> Result<i64, RenderError> {
    let secs = d.as_secs();
    if secs == 0 || d.subsec_nanos() != 0 {
        return Err(RenderError::Duration {
            field,
            value: format!("{d:?}"),
            reason: "use whole seconds, at least 1s",
        });
    }
    i64::try_from(secs).map_err(|_| RenderError::Duration {
        field,
        value: format!("{d:?}"),
        reason: "too long",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        Registry {
            push_secret: "ghcr-push".into(),
            cache_repo: Some("ghcr.io/acme/kl-cache".into()),
            insecure: false,
        }
    }

    fn input(registry: &Registry) -> BuildJobInput<'_> {
        BuildJobInput {
            tenant: "acme",
            function: "hello",
            runtime: Runtime::Python,
            build_id: "7f3a9c",
            context: BuildContext::Url("s3://kl-builds/acme/hello/7f3a9c.tar.gz"),
            destination: "ghcr.io/acme/hello:7f3a9c",
            registry,
            credentials_secret: Some("object-store"),
            resources: BuildResources {
                cpu_millis: 1000,
                memory_bytes: 2 << 30,
            },
            deadline: Duration::from_secs(900),
            ttl_after_finished: Duration::from_secs(600),
            executor_image: None,
        }
    }

    #[test]
    fn the_job_runs_kaniko_with_our_context_destination_and_cache() {
        let r = registry();
        let job = render_build_job(&input(&r), &PlatformSettings::default()).unwrap();
        assert_eq!(job.metadata.name.as_deref(), Some("hello-build-7f3a9c"));
        let spec = job.spec.unwrap();
        assert_eq!(spec.active_deadline_seconds, Some(900));
        assert_eq!(spec.ttl_seconds_after_finished, Some(600));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        let args = pod.containers[0].args.clone().unwrap();
        for expected in [
            "--context=s3://kl-builds/acme/hello/7f3a9c.tar.gz",
            "--destination=ghcr.io/acme/hello:7f3a9c",
            "--cache=true",
            "--cache-repo=ghcr.io/acme/kl-cache",
        ] {
            assert!(args.iter().any(|a| a == expected), "{expected} in {args:?}");
        }
        assert_eq!(pod.containers[0].image.as_deref(), Some(KANIKO_IMAGE));
    }

    #[test]
    fn refuses_names_and_durations_kubernetes_would_reject() {
        let r = registry();
        let long_id = "x".repeat(20);
        let too_long = BuildJobInput {
            function: &"f".repeat(kl_core::name::MAX_FUNCTION_NAME),
            build_id: &long_id,
            ..input(&r)
        };
        let err = render_build_job(&too_long, &PlatformSettings::default()).unwrap_err();
        assert!(err.to_string().contains("build Job name"), "{err}");
        let fractional = BuildJobInput {
            deadline: Duration::from_millis(1500),
            ..input(&r)
        };
        assert!(matches!(
            render_build_job(&fractional, &PlatformSettings::default()),
            Err(RenderError::Duration {
                field: "deadline",
                ..
            })
        ));
    }

    #[test]
    fn an_inline_context_travels_in_an_init_container_up_to_its_limit() {
        let r = registry();
        let packed = vec![7u8; INLINE_CONTEXT_LIMIT];
        let inline = BuildJobInput {
            context: BuildContext::Inline(&packed),
            ..input(&r)
        };
        let job = render_build_job(&inline, &PlatformSettings::default()).unwrap();
        let pod = job.spec.unwrap().template.spec.unwrap();
        let init = &pod.init_containers.as_ref().unwrap()[0];
        let value = init.env.as_ref().unwrap()[0].value.as_deref().unwrap();
        use base64::Engine;
        assert_eq!(
            base64::engine::general_purpose::STANDARD.decode(value).unwrap(),
            packed
        );
        assert_eq!(
            init.security_context.as_ref().unwrap().run_as_non_root,
            Some(true)
        );
        assert!(
            pod.containers[0]
                .args
                .as_ref()
                .unwrap()
                .contains(&"--context=tar:///kl-context/context.tar.gz".to_owned())
        );

        let larger = vec![7u8; INLINE_CONTEXT_LIMIT + 1];
        let refused = render_build_job(
            &BuildJobInput {
                context: BuildContext::Inline(&larger),
                ..input(&r)
            },
            &PlatformSettings::default(),
        )
        .unwrap_err();
        assert!(
            matches!(refused, RenderError::InlineContextTooLarge { .. }),
            "{refused}"
        );
        assert!(refused.to_string().contains("use an archive, s3 or git source"));
    }
}
