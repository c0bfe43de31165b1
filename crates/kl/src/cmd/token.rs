//! `kl token create|ls|revoke`: API tokens. A secret is printed once, at creation; listings
//! carry metadata only.

use std::time::SystemTime;

use anyhow::Result;
use kl_api::{CreateToken, TokenCreated, TokenList, TokenView};
use reqwest::Method;

use crate::cli::{Format, TokenCommand, TokenCreateArgs, TokenLsArgs, TokenRevokeArgs};
use crate::client::{Client, segment};
use crate::output::{json, table};

/// Printed (to stderr) with every new secret.
pub const SHOWN_ONCE: &str =
    "this secret is shown once and never again: store it now (the server keeps only its hash)";

pub async fn token(client: &Client, command: TokenCommand) -> Result<()> {
    match command {
        TokenCommand::Create(args) => create(client, args).await,
        TokenCommand::Ls(args) => ls(client, args).await,
        TokenCommand::Revoke(args) => revoke(client, args).await,
    }
}

fn scope(t: &TokenView) -> String {
    match &t.tenant {
        Some(tenant) => format!("{} in tenant {tenant}", t.role),
        None => format!("{} of the platform", t.role),
    }
}

fn expiry(t: &TokenView) -> String {
    match t.expires_at {
        None => "never".into(),
        Some(at) => {
            let when = at.format("%Y-%m-%d %H:%M:%S").to_string();
            if SystemTime::from(at) <= SystemTime::now() {
                format!("{when} (expired)")
            } else {
                when
            }
        }
    }
}

async fn create(client: &Client, args: TokenCreateArgs) -> Result<()> {
    let name = args.name.unwrap_or_else(|| match &args.tenant {
        Some(tenant) => format!("{} of {tenant}", args.role),
        None => args.role.to_string(),
    });
    let body = CreateToken {
        name,
        role: args.role,
        tenant: args.tenant,
        expires_in: args.expires,
    };
    let created: TokenCreated = client.send_json(Method::POST, "/v1/tokens", &body).await?;
    if args.quiet {
        println!("{}", created.secret);
        return Ok(());
    }
    if args.output == Format::Json {
        json(&created)?;
    } else {
        let t = &created.token;
        println!(
            "created token {} {:?}: {}, expires {}",
            t.id,
            t.name,
            scope(t),
            expiry(t)
        );
        println!("{}", created.secret);
    }
    eprintln!("warning: {SHOWN_ONCE}");
    Ok(())
}

async fn ls(client: &Client, args: TokenLsArgs) -> Result<()> {
    let request = client.request(Method::GET, "/v1/tokens");
    let request = match &args.tenant {
        Some(tenant) => request.query(&[("tenant", tenant)]),
        None => request,
    };
    let list: TokenList = client.send(request).await?.json().await?;
    if args.output == Format::Json {
        return json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .tokens
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.name.clone(),
                t.role.to_string(),
                t.tenant.clone().unwrap_or_else(|| "-".into()),
                t.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                expiry(t),
            ]
        })
        .collect();
    table(&["ID", "NAME", "ROLE", "TENANT", "CREATED", "EXPIRES"], &rows);
    Ok(())
}

async fn revoke(client: &Client, args: TokenRevokeArgs) -> Result<()> {
    client
        .delete(&format!("/v1/tokens/{}", segment(&args.id)))
        .await?;
    println!("revoked {}", args.id);
    Ok(())
}
