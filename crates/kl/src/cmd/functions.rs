//! `kl ls`, `kl describe`, `kl rm`, `kl rollback`.

use anyhow::{Result, bail};
use kl_api::{FunctionDetail, FunctionList, RevisionState, Rollback, ServingChanged};
use kl_core::{format_duration, format_memory};
use reqwest::Method;

use crate::cli::{DescribeArgs, Format, FunctionRef, LsArgs, RollbackArgs};
use crate::client::Client;
use crate::output::{json, millis, table};

fn state_name(state: RevisionState) -> &'static str {
    match state {
        RevisionState::Building => "building",
        RevisionState::Ready => "ready",
        RevisionState::Failed => "failed",
    }
}

pub async fn ls(client: &Client, args: LsArgs) -> Result<()> {
    let path = if args.all {
        "/v1/functions".to_owned()
    } else {
        format!("/v1/tenants/{}/functions", args.tenant)
    };
    let list: FunctionList = client.get(&path).await?;
    if args.output == Format::Json {
        return json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .functions
        .iter()
        .map(|f| {
            vec![
                f.name.clone(),
                f.tenant.clone(),
                f.runtime.map(|r| r.to_string()).unwrap_or_else(|| "-".into()),
                f.serving_revision.clone().unwrap_or_else(|| "-".into()),
                f.latest_revision
                    .as_ref()
                    .map(|r| state_name(r.state).to_owned())
                    .unwrap_or_default(),
                f.instances_running.to_string(),
                format!("{}{}", client.base(), f.url),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "TENANT",
            "RUNTIME",
            "SERVING",
            "LATEST",
            "INSTANCES",
            "URL",
        ],
        &rows,
    );
    Ok(())
}

pub async fn describe(client: &Client, args: DescribeArgs) -> Result<()> {
    let fn_path = format!(
        "/v1/tenants/{}/functions/{}",
        args.function.tenant, args.function.name
    );
    let detail: FunctionDetail = client.get(&fn_path).await?;
    if args.dockerfile {
        let rev = detail
            .revisions
            .iter()
            .find(|r| r.serving)
            .or_else(|| detail.revisions.iter().find(|r| r.state == RevisionState::Ready));
        let Some(rev) = rev else {
            bail!("{} has no built revision yet", args.function.name);
        };
        let request = client.request(
            Method::GET,
            &format!("{fn_path}/revisions/{}/dockerfile", rev.number),
        );
        print!("{}", client.send(request).await?.text().await?);
        return Ok(());
    }
    if args.output == Format::Json {
        return json(&detail);
    }
    let f = &detail.function;
    println!("Name:       {}", f.name);
    println!("Tenant:     {}", f.tenant);
    println!("URL:        {}{}", client.base(), f.url);
    println!("Serving:    {}", f.serving_revision.as_deref().unwrap_or("-"));
    if let Some(image) = detail
        .revisions
        .iter()
        .find(|r| r.serving)
        .and_then(|r| r.image.as_deref())
    {
        println!("Image:      {image}");
    }
    if let Some(spec) = &detail.spec {
        println!("Runtime:    {}", spec.runtime);
        println!("Handler:    {}", spec.handler);
        println!(
            "Resources:  memory {}, timeout {}, concurrency {}, max scale {}",
            format_memory(spec.memory_bytes),
            format_duration(spec.timeout_ms),
            spec.concurrency,
            spec.max_scale
        );
        println!("Public:     {}", spec.public);
        if !spec.env.is_empty() {
            let keys: Vec<&str> = spec.env.keys().map(String::as_str).collect();
            println!("Env:        {}", keys.join(", "));
        }
    }
    println!("\nRevisions:");
    let rows: Vec<Vec<String>> = detail
        .revisions
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                state_name(r.state).to_owned(),
                if r.serving { "yes" } else { "" }.to_owned(),
                r.build_ms.map(millis).unwrap_or_default(),
                r.digest
                    .as_deref()
                    .map(|d| d.chars().take(19).collect())
                    .unwrap_or_default(),
                r.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            ]
        })
        .collect();
    table(&["NAME", "STATE", "SERVING", "BUILD", "DIGEST", "CREATED"], &rows);
    for r in detail
        .revisions
        .iter()
        .filter(|r| r.state == RevisionState::Failed)
        .take(1)
    {
        println!(
            "\nLast failure ({}):\n{}",
            r.name,
            r.error.as_deref().unwrap_or("-")
        );
    }
    let desired = detail.desired.map_or_else(|| "-".to_owned(), |d| d.to_string());
    let panic = if detail.panic { ", PANIC MODE" } else { "" };
    println!(
        "\nInstances: {} running, {desired} desired{panic}; {} queued requests",
        detail.instances.len(),
        detail.queued
    );
    let rows: Vec<Vec<String>> = detail
        .instances
        .iter()
        .map(|i| {
            vec![
                i.id.clone(),
                i.revision.clone(),
                i.pid.to_string(),
                i.in_flight.to_string(),
                i.started_at.format("%H:%M:%S").to_string(),
                millis(i.startup_ms),
            ]
        })
        .collect();
    table(
        &["ID", "REVISION", "PID", "IN-FLIGHT", "STARTED", "STARTUP"],
        &rows,
    );
    if let Some(crash) = &detail.crash_loop {
        println!(
            "\nCRASH LOOP: {} failed starts in a row; next attempt in {}s. Last error:\n{}",
            crash.failures, crash.retry_in_secs, crash.last_error
        );
    }
    if let Some(exit) = &detail.last_exit {
        println!(
            "\nLast instance failure: {} (instance {}, {})",
            exit.reason,
            exit.instance,
            exit.at.format("%Y-%m-%d %H:%M:%S")
        );
    }
    Ok(())
}

pub async fn rm(client: &Client, args: FunctionRef) -> Result<()> {
    let path = format!("/v1/tenants/{}/functions/{}", args.tenant, args.name);
    client.send(client.request(Method::DELETE, &path)).await?;
    println!("deleted {}", args.name);
    Ok(())
}

pub async fn rollback(client: &Client, args: RollbackArgs) -> Result<()> {
    let f = &args.function;
    let path = format!("/v1/tenants/{}/functions/{}/rollback", f.tenant, f.name);
    let body = Rollback { revision: args.to };
    let changed: ServingChanged = client.send_json(Method::POST, &path, &body).await?;
    match &changed.previous {
        Some(previous) if *previous != changed.serving => {
            println!("{} serves {} (was {previous})", changed.function, changed.serving)
        }
        _ => println!("{} serves {} (unchanged)", changed.function, changed.serving),
    }
    Ok(())
}
