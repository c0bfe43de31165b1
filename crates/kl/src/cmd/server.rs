//! `kl server` and `kl quickstart`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use kl_build::UnpackLimits;
use kl_server::{Backend, Bus, KubernetesConfig, Server, ServerConfig};
use tokio::signal::unix::{SignalKind, signal};

use kl_runtime::{Isolation, SandboxConfig};

use crate::cli::{
    BackendKind, DeployArgs, EventingKind, FunctionRef, InvokeArgs, IsolationMode, QuickstartArgs, ServerArgs,
};
use crate::client::Client;
use crate::cmd::{deploy, invoke};

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

pub async fn server(args: ServerArgs, data_dir: PathBuf) -> Result<()> {
    init_logging("info");
    let mut config = ServerConfig::new(data_dir, args.listen);
    config.backend = backend(&args)?;
    config.cache_dir = args.cache_dir;
    if let Some(url) = &args.store {
        config.objects = kl_server::Objects::parse(url)?;
    }
    config.idle_timeout = args.idle_timeout;
    config.build_concurrency = args.build_concurrency.max(1);
    config.build_timeout = args.build_timeout;
    config.unpack = UnpackLimits {
        max_entries: args.max_archive_entries,
        max_bytes: args.max_archive_bytes,
    };
    config.max_request_bytes =
        usize::try_from(args.max_request_bytes).context("--max-request-body is too large")?;
    if let Some(cpu) = args.capacity_cpu {
        config.capacity.cpu_millis = cpu;
    }
    if let Some(memory) = args.capacity_memory {
        config.capacity.memory_bytes = memory;
    }
    config.isolation = isolation(args.isolation, args.warm_sandboxes)?;
    config.max_queue = args.max_queue;
    config.bus = bus(&args.bus, &args.bus_prefix)?;
    config.db = args.db.as_deref().map(db).transpose()?;
    config.dedupe_window = args.dedupe_window;
    config.dispatch_concurrency = args.dispatch_concurrency.max(1);
    if let Some(path) = &args.rates {
        config.metering.rates = rates(path)?;
    }
    config.metering.interval = args.meter_interval.max(Duration::from_millis(100));
    config.metering.retention = args.usage_retention;
    config.secrets_key = std::env::var(kl_core::secret::SECRETS_KEY_ENV)
        .ok()
        .map(kl_server::SecretsKeyText);
    if let Some(to) = &args.backup_to {
        config.backup = Some(kl_server::BackupSchedule {
            location: kl_server::BackupLocation::parse(to).context("--backup-to")?,
            every: args.backup_every.max(Duration::from_secs(1)),
            keep: args.backup_keep.max(1),
        });
    }
    let server = Server::bind(config).await?;
    server.serve(shutdown_signal()).await?;
    Ok(())
}

/// The backend `--backend` names, with what it needs (the store is checked by the server).
fn backend(args: &ServerArgs) -> Result<Backend> {
    match args.backend {
        BackendKind::Local if args.eventing == EventingKind::Knative => {
            bail!("--eventing knative needs --backend kubernetes: Knative Eventing runs in the cluster")
        }
        BackendKind::Local => Ok(Backend::Local),
        BackendKind::Kubernetes => {
            let Some(registry) = args.registry.clone() else {
                bail!(
                    "--backend kubernetes needs --registry, the image prefix builds push to (e.g. ghcr.io/acme/functions)"
                );
            };
            let mut config = KubernetesConfig::new(registry);
            config.push_secret = args.registry_push_secret.clone();
            config.store_credentials_secret = args.store_credentials_secret.clone();
            config.knative_eventing =
                (args.eventing == EventingKind::Knative).then(|| args.rabbitmq_broker_config.clone());
            Ok(Backend::Kubernetes(Box::new(config)))
        }
    }
}

/// The broker `--bus` names.
fn bus(url: &str, prefix: &str) -> Result<Bus> {
    if url == "embedded" {
        return Ok(Bus::Embedded);
    }
    if !url.starts_with("amqp://") {
        // Not the value itself: a URL may carry a password.
        bail!("--bus takes `embedded` or an amqp:// URL (amqps:// is not supported)");
    }
    Ok(Bus::Amqp {
        url: url.to_owned(),
        prefix: prefix.to_owned(),
    })
}

/// The PostgreSQL URL `--db` names.
fn db(url: &str) -> Result<String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        // Not the value itself: a URL may carry a password.
        bail!(
            "--db takes a PostgreSQL URL, postgres://USER:PASS@HOST:5432/DB (without it, the store is the SQLite file in the data dir)"
        );
    }
    Ok(url.to_owned())
}

/// The runtime isolation `--isolation` asks for.
/// Reads `--rates`: YAML (JSON is YAML too), checked.
fn rates(path: &Path) -> Result<kl_core::RateCard> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read --rates {}", path.display()))?;
    let rates: kl_core::Rates = serde_yaml::from_str(&text)
        .with_context(|| format!("--rates {} is not a rates file", path.display()))?;
    rates
        .validate()
        .with_context(|| format!("--rates {}", path.display()))
}

fn isolation(mode: IsolationMode, warm_sandboxes: usize) -> Result<Isolation> {
    let sandbox = || -> Result<Isolation> {
        let jailer = std::env::current_exe().context("cannot locate the kl binary, the sandbox's jailer")?;
        let mut config = SandboxConfig::new(jailer);
        config.warm_shells = warm_sandboxes;
        Ok(Isolation::Sandbox(config))
    };
    match mode {
        IsolationMode::Sandbox => sandbox(),
        IsolationMode::None => Ok(Isolation::None),
        IsolationMode::Auto => {
            let report = kl_runtime::sandbox::probe();
            if report.ready() {
                sandbox()
            } else {
                eprintln!(
                    "warning: this machine cannot enforce the instance sandbox ({}); functions run WITHOUT isolation",
                    report.missing()
                );
                Ok(Isolation::None)
            }
        }
    }
}

pub async fn quickstart(args: QuickstartArgs, data_dir: PathBuf) -> Result<()> {
    init_logging("warn");
    if !args.examples.is_dir() {
        bail!(
            "no examples folder at {} (run from the repository root or pass --examples)",
            args.examples.display()
        );
    }
    let dir = data_dir.join("quickstart");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    let mut config = ServerConfig::new(dir.clone(), args.listen);
    config.cache_dir = Some(data_dir.join("cache"));
    config.isolation = isolation(args.isolation, kl_runtime::sandbox::DEFAULT_WARM_SHELLS)?;
    let server = match Server::bind(config.clone()).await {
        Ok(s) => s,
        Err(kl_server::ServerError::Listen { .. }) => {
            eprintln!("{} is busy; using a free port instead", args.listen);
            config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
            Server::bind(config).await?
        }
        Err(e) => return Err(e.into()),
    };
    let url = format!("http://{}", server.local_addr());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async move {
        tokio::select! {
            _ = shutdown_signal() => {}
            _ = stop_rx => {}
        }
    }));
    let token = std::fs::read_to_string(dir.join("admin.token"))?
        .trim()
        .to_owned();
    let client = Client::new(&url, Some(token.clone()));
    println!("kl server on {url} (data dir {})\n", dir.display());
    let deployed = deploy_examples(&client, &args.examples).await;
    println!("\nFunctions:");
    for name in &deployed {
        println!("  {name:<14} {url}/fn/default/{name}");
        println!(
            "  {:<14} curl -H \"Authorization: Bearer $KL_TOKEN\" -H 'content-type: application/json' -d '{{\"name\":\"you\"}}' {url}/fn/default/{name}",
            ""
        );
    }
    println!("\nexport KL_URL={url} KL_TOKEN={token}");
    if args.no_serve {
        let _ = stop_tx.send(());
    } else {
        println!("Serving; press Ctrl-C to stop.");
    }
    serving.await.context("the server task failed")??;
    if deployed.is_empty() {
        bail!("no example was deployed");
    }
    Ok(())
}

/// Deploys and invokes every example whose toolchain is installed; returns their names.
async fn deploy_examples(client: &Client, examples: &Path) -> Vec<String> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(examples)
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    dirs.sort();
    let mut deployed = Vec::new();
    for dir in dirs {
        let (tool, probe) = toolchain(&dir);
        if !installed(tool, probe).await {
            println!("skipping {}: {tool} is not installed", dir.display());
            continue;
        }
        println!("deploying {} ...", dir.display());
        let args = DeployArgs {
            path: dir.clone(),
            name: None,
            tenant: "default".into(),
            runtime: None,
            handler: None,
            env: Vec::new(),
            memory: None,
            cpu: None,
            priority: None,
            timeout: None,
            concurrency: None,
            max_scale: None,
            min_scale: None,
            public: false,
            secrets: Vec::new(),
            secret_env: Vec::new(),
            env_name: None,
            no_wait: false,
        };
        let rev = match deploy::deploy(client, args).await {
            Ok(Some(rev)) => rev,
            Ok(None) => continue,
            Err(e) => {
                println!("  failed: {e:#}");
                continue;
            }
        };
        let name = rev
            .name
            .rsplit_once('-')
            .map(|(n, _)| n.to_owned())
            .unwrap_or(rev.name);
        print!("  invoke {name}: ");
        let call = InvokeArgs {
            function: FunctionRef {
                name: name.clone(),
                tenant: "default".into(),
            },
            data: Some(r#"{"name":"quickstart"}"#.into()),
            path: "/".into(),
            method: "POST".into(),
            headers: Vec::new(),
            include: false,
            run_async: false,
            destination: None,
        };
        match tokio::time::timeout(Duration::from_secs(60), invoke::invoke(client, call)).await {
            Ok(Ok(())) => println!(),
            Ok(Err(e)) => println!("failed: {e:#}"),
            Err(_) => println!("timed out"),
        }
        deployed.push(name);
    }
    deployed
}

/// The program a function directory needs, and the argument that probes it.
fn toolchain(dir: &Path) -> (&'static str, &'static str) {
    let runtime = std::fs::read_to_string(dir.join("kl.yaml"))
        .ok()
        .and_then(|t| serde_yaml::from_str::<kl_core::FunctionSettings>(&t).ok())
        .and_then(|s| s.runtime);
    let runtime = runtime.unwrap_or(if dir.join("go.mod").exists() {
        kl_core::Runtime::Go
    } else if dir.join("package.json").exists() {
        kl_core::Runtime::Node
    } else {
        kl_core::Runtime::Python
    });
    match runtime {
        kl_core::Runtime::Python => ("python3", "--version"),
        kl_core::Runtime::Node => ("node", "--version"),
        kl_core::Runtime::Go => ("go", "version"),
    }
}

async fn installed(program: &str, probe: &str) -> bool {
    tokio::process::Command::new(program)
        .arg(probe)
        .output()
        .await
        .is_ok_and(|o| o.status.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_takes_postgres_urls_only_and_never_echoes_them() {
        for url in ["postgres://u:p@h/db", "postgresql://h:5432/db?sslmode=disable"] {
            assert_eq!(db(url).unwrap(), url);
        }
        for url in ["sqlite:///tmp/kl.db", "mysql://u:secret@h/db", "/tmp/kl.db", ""] {
            let refused = format!("{:#}", db(url).unwrap_err());
            assert!(refused.contains("PostgreSQL URL"), "{refused}");
            assert!(url.is_empty() || !refused.contains(url), "{refused}");
        }
    }

    #[test]
    fn rates_files_override_the_defaults_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rates.yaml");
        std::fs::write(&path, "currency: EUR\ncpuCoreHour: 0.05\n").unwrap();
        let card = rates(&path).unwrap();
        assert_eq!(card.currency(), "EUR");
        assert_eq!(card.pico_per_unit(kl_core::Resource::Cpu), 50_000_000_000);
        assert_eq!(
            card.pico_per_unit(kl_core::Resource::Requests),
            200_000_000_000,
            "absent rates keep the default"
        );
        std::fs::write(&path, "cpuCoreHour: -1\n").unwrap();
        let refused = rates(&path).unwrap_err();
        assert!(format!("{refused:#}").contains("cpuCoreHour"), "{refused:#}");
        std::fs::write(&path, "cpuCoreHours: 1\n").unwrap();
        assert!(rates(&path).is_err(), "a misspelt rate is refused");
    }
}
