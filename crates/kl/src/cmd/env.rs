//! `kl env create|ls|rm` and `kl promote`: a tenant's environments, and moving a revision
//! between them without a build.

use anyhow::Result;
use kl_api::{CreateEnvironment, EnvironmentList, EnvironmentView, Promote, Promoted};
use reqwest::Method;

use crate::cli::{EnvCommand, EnvCreateArgs, Format, PromoteArgs, SecretLsArgs, SecretRmArgs};
use crate::client::{Client, segment};
use crate::output::{json, table};

pub async fn env(client: &Client, command: EnvCommand) -> Result<()> {
    match command {
        EnvCommand::Create(args) => create(client, args).await,
        EnvCommand::Ls(args) => ls(client, args).await,
        EnvCommand::Rm(args) => rm(client, args).await,
    }
}

async fn create(client: &Client, args: EnvCreateArgs) -> Result<()> {
    let body = CreateEnvironment {
        name: args.name,
        share: args.share,
        priority: args.priority,
    };
    let path = format!("/v1/tenants/{}/environments", segment(&args.tenant));
    let made: EnvironmentView = client.send_json(Method::POST, &path, &body).await?;
    println!(
        "environment {} created: {}% of tenant {}'s quotas, priority {}, runs as tenant {}",
        made.name,
        made.share,
        args.tenant,
        made.priority.as_str(),
        made.runs_as
    );
    Ok(())
}

async fn ls(client: &Client, args: SecretLsArgs) -> Result<()> {
    let list: EnvironmentList = client
        .get(&format!("/v1/tenants/{}/environments", segment(&args.tenant)))
        .await?;
    if args.output == Format::Json {
        return json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .environments
        .iter()
        .map(|e| {
            vec![
                e.name.clone(),
                format!("{}%", e.share),
                e.priority.as_str().to_owned(),
                e.runs_as.clone(),
                e.functions.to_string(),
            ]
        })
        .collect();
    table(&["NAME", "SHARE", "PRIORITY", "TENANT", "FUNCTIONS"], &rows);
    Ok(())
}

async fn rm(client: &Client, args: SecretRmArgs) -> Result<()> {
    client
        .delete(&format!(
            "/v1/tenants/{}/environments/{}",
            segment(&args.tenant),
            segment(&args.name)
        ))
        .await?;
    println!("deleted environment {}", args.name);
    Ok(())
}

pub async fn promote(client: &Client, args: PromoteArgs) -> Result<()> {
    let path = format!(
        "/v1/tenants/{}/functions/{}/promote",
        segment(&args.tenant),
        segment(&args.function)
    );
    let body = Promote {
        from: args.from.clone(),
        to: args.to.clone(),
    };
    let done: Promoted = client.send_json(Method::POST, &path, &body).await?;
    println!(
        "promoted {} ({}) from {} to {}: {} serves, digest {}",
        done.function, done.from_revision, args.from, args.to, done.revision, done.digest
    );
    Ok(())
}
