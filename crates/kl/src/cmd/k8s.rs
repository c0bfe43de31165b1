//! `kl export k8s`, `kl export crd` and `kl operator`: the platform on Kubernetes.

use std::time::Duration;

use anyhow::{Context, Result};
use kl_api::{FunctionDetail, FunctionList, TenantList, TenantView, TriggerList};

use kl_k8s::{BuildResources, ExportSettings, FunctionState, PlatformSettings, Registry, TenantState};
use kl_kube::plan::OperatorSettings;

use crate::cli::{ExportK8sArgs, OperatorArgs};
use crate::client::{Client, segment};
use crate::cmd::tenant::tenant_path;

/// The `RabbitmqBrokerConfig` each tenant namespace is expected to hold (docs/kubernetes.md).
const RABBITMQ_CONFIG: &str = "kl-rabbitmq";

/// Reads tenants, functions and triggers through the API and prints their objects as YAML.
pub async fn export(client: &Client, args: ExportK8sArgs) -> Result<()> {
    let tenants: Vec<TenantView> = match &args.tenant {
        Some(name) => vec![client.get(&tenant_path(name)?).await?],
        None => client.get::<TenantList>("/v1/tenants").await?.tenants,
    };
    let mut states = Vec::new();
    for tenant in tenants {
        let base = format!("/v1/tenants/{}", segment(&tenant.name));
        let list: FunctionList = client.get(&format!("{base}/functions")).await?;
        let mut functions = Vec::new();
        for f in list.functions {
            let detail: FunctionDetail = client
                .get(&format!("{base}/functions/{}", segment(&f.name)))
                .await?;
            // Only what serves: a function whose first build has not succeeded has no image.
            let serving = detail.revisions.iter().find(|r| r.serving);
            if let Some(rev) = serving {
                let spec = rev
                    .spec
                    .clone()
                    .or(detail.spec.clone())
                    .with_context(|| format!("revision {} of {} has no spec", rev.name, f.name))?;
                functions.push(FunctionState {
                    name: f.name,
                    revision: u32::try_from(rev.number).context("revision number out of range")?,
                    spec,
                });
            }
        }
        let triggers: TriggerList = client.get(&format!("{base}/triggers")).await?;
        states.push(TenantState {
            name: tenant.name,
            spec: tenant.spec,
            functions,
            triggers: triggers.triggers.into_iter().map(|t| (t.name, t.spec)).collect(),
        });
    }
    let settings = ExportSettings {
        platform: PlatformSettings::default(),
        registry: args.registry,
        rabbitmq_config: RABBITMQ_CONFIG.to_owned(),
        cluster: args.tenant.is_none(),
    };
    let objects = kl_k8s::render_platform(&states, &settings)?;
    print!("{}", kl_k8s::to_yaml(&objects)?);
    Ok(())
}

/// Prints the LambdaFunction CRD as generated from its Rust types.
pub fn print_crd() -> Result<()> {
    print!("{}", kl_kube::crd::crd_yaml());
    Ok(())
}

/// Runs the operator against the cluster kubeconfig (or the in-cluster account) points at.
pub async fn operator(args: OperatorArgs) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let client = kl_kube::Client::try_default()
        .await
        .context("no Kubernetes cluster configured (kubeconfig or in-cluster service account)")?;
    let settings = OperatorSettings {
        platform: PlatformSettings {
            build_namespace: args.build_namespace,
            ..PlatformSettings::default()
        },
        registry: Registry {
            push_secret: args.push_secret,
            cache_repo: args.cache_repo,
            insecure: args.insecure_registry,
        },
        repository: args.registry,
        bucket: args.bucket,
        credentials_secret: args.credentials_secret,
        build_resources: BuildResources {
            cpu_millis: 1000,
            memory_bytes: 2 << 30,
        },
        build_deadline: Duration::from_secs(20 * 60),
        build_ttl: Duration::from_secs(3600),
    };
    kl_kube::operator::run(client, settings).await;
    Ok(())
}
