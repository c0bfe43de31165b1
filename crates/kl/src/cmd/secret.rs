//! `kl secret set|ls|rm` and `kl admin rotate-key`. Values go to the server once and are
//! never printed.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use kl_api::{KeyRotated, PutSecret, SecretList, SecretSet};
use reqwest::Method;

use crate::cli::{
    AdminCommand, Format, OutputArgs, SecretCommand, SecretLsArgs, SecretRmArgs, SecretSetArgs,
};
use crate::client::{Client, segment};
use crate::output::{json, table};

pub async fn secret(client: &Client, command: SecretCommand) -> Result<()> {
    match command {
        SecretCommand::Set(args) => set(client, args).await,
        SecretCommand::Ls(args) => ls(client, args).await,
        SecretCommand::Rm(args) => rm(client, args).await,
    }
}

pub async fn admin(client: &Client, command: AdminCommand) -> Result<()> {
    match command {
        AdminCommand::RotateKey(args) => rotate_key(client, args).await,
        AdminCommand::Backup(args) => super::backup::backup(client, args).await,
        AdminCommand::Restore(_) => unreachable!("restore runs without a server; main dispatches it"),
    }
}

/// `KEY=VALUE`; the error never repeats the argument, which may be a secret value.
fn pair(arg: &str) -> Result<(String, String)> {
    match arg.split_once('=') {
        Some((key, value)) => Ok((key.to_owned(), value.to_owned())),
        None => bail!("expected KEY=VALUE (or --from-file KEY=PATH): an argument has no '='"),
    }
}

async fn set(client: &Client, args: SecretSetArgs) -> Result<()> {
    let mut data = BTreeMap::new();
    for arg in &args.values {
        let (key, value) = pair(arg)?;
        if data.insert(key.clone(), value).is_some() {
            bail!("key {key} is given twice");
        }
    }
    for arg in &args.from_file {
        let (key, path) = pair(arg)?;
        let value = std::fs::read_to_string(&path).with_context(|| {
            format!("cannot read {path} for key {key} (secret values must be UTF-8 text)")
        })?;
        if data.insert(key.clone(), value).is_some() {
            bail!("key {key} is given twice");
        }
    }
    if data.is_empty() {
        bail!("give at least one KEY=VALUE or --from-file KEY=PATH");
    }
    let path = format!(
        "/v1/tenants/{}/secrets/{}",
        segment(&args.tenant),
        segment(&args.name)
    );
    let set: SecretSet = client.send_json(Method::PUT, &path, &PutSecret { data }).await?;
    let s = &set.secret;
    println!(
        "secret {} version {} ({} key{})",
        s.name,
        s.version,
        s.keys.len(),
        if s.keys.len() == 1 { "" } else { "s" }
    );
    for revision in &set.rolled {
        println!("rolled {revision}");
    }
    for failure in &set.failed {
        eprintln!("warning: not rolled: {failure}");
    }
    Ok(())
}

async fn ls(client: &Client, args: SecretLsArgs) -> Result<()> {
    let list: SecretList = client
        .get(&format!("/v1/tenants/{}/secrets", segment(&args.tenant)))
        .await?;
    if args.output == Format::Json {
        return json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .secrets
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.keys.join(","),
                s.version.to_string(),
                s.updated_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            ]
        })
        .collect();
    table(&["NAME", "KEYS", "VERSION", "UPDATED"], &rows);
    Ok(())
}

async fn rm(client: &Client, args: SecretRmArgs) -> Result<()> {
    client
        .delete(&format!(
            "/v1/tenants/{}/secrets/{}",
            segment(&args.tenant),
            segment(&args.name)
        ))
        .await?;
    println!("deleted secret {}", args.name);
    Ok(())
}

async fn rotate_key(client: &Client, args: OutputArgs) -> Result<()> {
    let rotated: KeyRotated = client
        .send_json(
            Method::POST,
            "/v1/admin/rotate-secrets-key",
            &serde_json::json!({}),
        )
        .await?;
    if args.output == Format::Json {
        return json(&rotated);
    }
    println!(
        "secrets key {} is current; {} value(s) re-encrypted",
        rotated.key_id, rotated.reencrypted
    );
    Ok(())
}
