//! `kl admin backup` (through the running server) and `kl admin restore` (here, before the
//! restored platform's server starts).

use std::path::PathBuf;

use anyhow::{Context, Result};
use kl_api::{BackupTaken, CreateBackup};
use kl_core::ByteQuantity;
use kl_server::{BackupLocation, Objects, RestoreOptions, SecretsKeyText};
use reqwest::Method;

use crate::cli::{BackupArgs, Format, RestoreArgs};
use crate::client::Client;
use crate::output::json;

pub async fn backup(client: &Client, args: BackupArgs) -> Result<()> {
    let to = absolute_location(&args.to)?;
    if args.output.output != Format::Json {
        eprintln!("backing up to {to} (metadata, objects, built artifacts)…");
    }
    let taken: BackupTaken = client
        .send_json(Method::POST, "/v1/admin/backups", &CreateBackup { to })
        .await?;
    if args.output.output == Format::Json {
        return json(&taken);
    }
    println!(
        "backup {} at {}: {} rows, {} objects, {} artifacts, {} referenced, {} written, in {:.1}s",
        taken.id,
        taken.location,
        taken.rows,
        taken.objects,
        taken.artifacts,
        ByteQuantity(taken.bytes),
        ByteQuantity(taken.bytes_written),
        taken.duration_ms as f64 / 1000.0
    );
    Ok(())
}

pub async fn restore(args: RestoreArgs, data_dir: PathBuf) -> Result<()> {
    let from = BackupLocation::parse(&absolute_location(&args.from)?).context("--from")?;
    let objects = match &args.store {
        Some(url) => Objects::parse(url).context("--store")?,
        None => Objects::Local,
    };
    let options = RestoreOptions {
        from,
        snapshot: args.snapshot,
        data_dir: data_dir.clone(),
        db: args.db,
        objects,
        cache_dir: args.cache_dir,
        secrets_key: std::env::var(kl_core::secret::SECRETS_KEY_ENV)
            .ok()
            .map(SecretsKeyText),
    };
    let report = kl_server::backup::restore(options, |step| eprintln!("{step}")).await?;
    println!(
        "restored backup {} ({} rows, {} objects, {} artifacts) into {} in {:.1}s; start it with `kl server --data-dir {}` (and the same --db/--store); the old tokens work, and a new admin token is written at first start",
        report.id,
        report.rows,
        report.objects,
        report.artifacts,
        data_dir.display(),
        report.duration_ms as f64 / 1000.0,
        data_dir.display()
    );
    Ok(())
}

/// A relative folder is taken from the current one (the server runs elsewhere).
fn absolute_location(location: &str) -> Result<String> {
    if location.contains("://") || location.starts_with('/') {
        return Ok(location.to_owned());
    }
    let path = std::path::absolute(location).with_context(|| format!("cannot resolve {location}"))?;
    Ok(path.display().to_string())
}
