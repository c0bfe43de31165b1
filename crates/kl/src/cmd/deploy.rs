//! `kl deploy`: pack, upload, follow the build, wait until the revision is ready.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use kl_api::{DeployAccepted, RevisionState, RevisionView};
use kl_core::{FunctionSettings, validate_function_name};
use reqwest::Method;

use crate::cli::DeployArgs;
use crate::client::Client;
use crate::output::millis;
use crate::pack::pack_dir;

const ARCHIVE_SUFFIXES: [&str; 4] = [".tar.gz", ".tgz", ".tar", ".zip"];
/// Longest a CLI waits for a build after its log stream ended.
const WAIT_LIMIT: Duration = Duration::from_secs(20 * 60);

/// Deploys and, unless `--no-wait`, returns the ready revision (an error if it failed).
pub async fn deploy(client: &Client, args: DeployArgs) -> Result<Option<RevisionView>> {
    let (name, archive) = source(&args)?;
    let options = FunctionSettings {
        name: None,
        runtime: args.runtime,
        handler: args.handler.clone(),
        env: args.env.iter().cloned().collect(),
        memory: args.memory.clone(),
        cpu: args.cpu.clone(),
        timeout: args.timeout.clone(),
        concurrency: args.concurrency,
        max_scale: args.max_scale,
        public: args.public.then_some(true),
        rate_limit: None,
        priority: args.priority,
        min_scale: args.min_scale,
        autoscaling: None,
        secrets: args.secrets.clone(),
        secret_env: args.secret_env.iter().cloned().collect(),
    };
    let progress = Progress::new(std::io::stderr().is_terminal());
    progress.status(&format!(
        "uploading {name} ({} KiB)",
        archive.len().div_ceil(1024)
    ));
    let started = Instant::now();
    let tenant = match &args.env_name {
        Some(env) => kl_core::environment_tenant(&args.tenant, env)?,
        None => args.tenant.clone(),
    };
    let fn_path = format!("/v1/tenants/{tenant}/functions/{name}");
    let request = client
        .request(Method::PUT, &format!("{fn_path}/source"))
        .query(&[("options", serde_json::to_string(&options)?)])
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(archive);
    let accepted: DeployAccepted = client.send(request).await?.json().await?;
    if args.no_wait {
        progress.finish();
        println!("accepted {} (building)", accepted.revision);
        return Ok(None);
    }
    let rev_path = format!("{fn_path}/revisions/{}", accepted.number);
    progress.status(&format!("building {}", accepted.revision));
    follow_build_log(client, &rev_path, &progress).await?;
    let rev = wait_finished(client, &rev_path).await?;
    progress.finish();
    match rev.state {
        RevisionState::Ready => {
            println!(
                "deployed {name}: revision {} ready in {}",
                rev.name,
                millis(started.elapsed().as_millis() as u64)
            );
            println!("  url: {}/fn/{tenant}/{name}", client.base());
            Ok(Some(rev))
        }
        _ => {
            let error = rev.error.as_deref().unwrap_or("no reason recorded");
            // On a terminal the build log was just shown: its first line is enough.
            let error = if progress.streamed() {
                error.lines().next().unwrap_or(error)
            } else {
                error
            };
            bail!("revision {} failed: {error}", rev.name)
        }
    }
}

/// The function name and the archive bytes for the deploy path.
fn source(args: &DeployArgs) -> Result<(String, Vec<u8>)> {
    let path = &args.path;
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file_name = path
        .canonicalize()?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (derived, archive) = if meta.is_dir() {
        let manifest = read_manifest(path)?;
        (manifest.name.unwrap_or(file_name), pack_dir(path)?)
    } else {
        let stem = ARCHIVE_SUFFIXES
            .iter()
            .find_map(|s| file_name.strip_suffix(s))
            .unwrap_or(&file_name)
            .to_owned();
        (stem, std::fs::read(path)?)
    };
    let name = args.name.clone().unwrap_or(derived);
    if let Err(e) = validate_function_name(&name) {
        if args.name.is_some() {
            bail!("{e}");
        }
        bail!("{e}; pass --name or set `name` in kl.yaml");
    }
    Ok((name, archive))
}

fn read_manifest(dir: &Path) -> Result<FunctionSettings> {
    match std::fs::read_to_string(dir.join("kl.yaml")) {
        Ok(text) if text.trim().is_empty() => Ok(FunctionSettings::default()),
        Ok(text) => serde_yaml::from_str(&text).context("kl.yaml is invalid"),
        Err(_) => Ok(FunctionSettings::default()),
    }
}

/// Streams the build log until the build ends, showing it above the progress line.
async fn follow_build_log(client: &Client, rev_path: &str, progress: &Progress) -> Result<()> {
    let request = client
        .request(Method::GET, &format!("{rev_path}/log"))
        .query(&[("follow", "true")]);
    let mut response = client.send(request).await?;
    let mut pending = String::new();
    // A dropped stream is not fatal: the revision's state decides the outcome.
    while let Ok(Some(chunk)) = response.chunk().await {
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            progress.line(line.trim_end());
        }
    }
    Ok(())
}

async fn wait_finished(client: &Client, rev_path: &str) -> Result<RevisionView> {
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        let rev: RevisionView = client.get(rev_path).await?;
        if rev.state != RevisionState::Building {
            return Ok(rev);
        }
        if Instant::now() > deadline {
            bail!(
                "revision {} is still building after {}s",
                rev.name,
                WAIT_LIMIT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A spinner with the current step on a terminal; silent otherwise.
struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new(tty: bool) -> Progress {
        let bar = tty.then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                    .expect("static template is valid"),
            );
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Progress { bar }
    }

    fn status(&self, text: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(text.to_owned());
        }
    }

    /// A build log line: printed above the spinner; `==>` steps also become the status.
    fn line(&self, text: &str) {
        if let Some(bar) = &self.bar {
            if let Some(step) = text.strip_prefix("==> ") {
                bar.set_message(step.to_owned());
            }
            bar.println(format!("  {text}"));
        }
    }

    /// Whether the build log was shown as it streamed.
    fn streamed(&self) -> bool {
        self.bar.is_some()
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
