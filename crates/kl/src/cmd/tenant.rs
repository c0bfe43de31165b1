//! `kl tenant create|ls|describe|update|rm`. Tenant views are read as JSON values, so settings
//! and quotas the server adds later show up here without a change.

use anyhow::{Result, bail};
use kl_core::validate_tenant_name;
use reqwest::Method;
use serde_json::{Value, json};

use crate::cli::{
    Format, OutputArgs, TenantCommand, TenantDescribeArgs, TenantRef, TenantSpecArgs, TenantWriteArgs,
};
use crate::client::{Client, failed_with, segment};
use crate::cmd::spec::{self, diff, leaves, merge, scalar, tenant_spec};
use crate::output::{json, table};

pub async fn tenant(client: &Client, command: TenantCommand) -> Result<()> {
    match command {
        TenantCommand::Create(args) => create(client, args).await,
        TenantCommand::Ls(args) => ls(client, args).await,
        TenantCommand::Describe(args) => describe(client, args).await,
        TenantCommand::Update(args) => update(client, args).await,
        TenantCommand::Rm(args) => rm(client, args).await,
    }
}

/// `/v1/tenants/{name}`, once the name is known to be valid.
pub fn tenant_path(name: &str) -> Result<String> {
    validate_tenant_name(name)?;
    Ok(format!("/v1/tenants/{}", segment(name)))
}

/// Creates a tenant with a normalised spec; prints what it was created with.
pub async fn create_tenant(client: &Client, name: &str, spec: &Value) -> Result<Value> {
    let view: Value = client
        .send_json(Method::POST, "/v1/tenants", &json!({"name": name, "spec": spec}))
        .await?;
    Ok(view)
}

/// Replaces a tenant's spec with a normalised one.
pub async fn put_tenant(client: &Client, name: &str, spec: &Value) -> Result<Value> {
    client.send_json(Method::PUT, &tenant_path(name)?, spec).await
}

/// Prints `tenant/NAME created` and every field it was created with that differs from the
/// platform defaults.
pub fn print_created(name: &str, spec: &Value) {
    let defaults = serde_json::to_value(kl_core::TenantSpec::default()).expect("the default spec serializes");
    spec::print_created(&format!("tenant/{name}"), spec, &defaults);
}

/// The spec that `-f` and the flags describe, laid over `base` (the current spec on update,
/// nothing on create: absent fields take the defaults), checked and normalised.
fn spec_from_args(args: &TenantSpecArgs, name: &str, base: Option<&Value>) -> Result<Value> {
    let mut written = match &args.file {
        Some(path) => file_spec(path, name)?,
        None => base.cloned().unwrap_or_else(|| json!({})),
    };
    if let Some(n) = args.functions {
        merge(&mut written, &json!({"quotas": {"functions": n}}));
    }
    if let Some(n) = args.concurrent_builds {
        merge(&mut written, &json!({"quotas": {"concurrentBuilds": n}}));
    }
    let budget = [
        ("amount", args.budget.as_ref().map(|a| json!(a))),
        ("period", args.budget_period.as_ref().map(|p| json!(p))),
        ("thresholds", args.budget_thresholds.as_ref().map(|t| json!(t))),
        ("hardCap", args.budget_hard_cap.map(|c| json!(c))),
        ("webhook", args.budget_webhook.as_ref().map(|w| json!(w))),
    ];
    for (field, value) in budget {
        if let Some(value) = value {
            merge(&mut written, &json!({"budget": {field: value}}));
        }
    }
    tenant_spec(&written, &format!("tenant {name}"))
}

/// The spec in a `-f` file: a `kind: Tenant` document for this tenant, or a bare spec.
fn file_spec(path: &std::path::Path, name: &str) -> Result<Value> {
    let source = spec::source_name(path);
    let text = spec::read_source(path)?;
    let values = spec::yaml_values(&text, &source)?;
    let [value] = values.as_slice() else {
        bail!(
            "{source} must hold exactly one tenant spec (it holds {})",
            values.len()
        );
    };
    if value.get("kind").is_none() {
        return Ok(value.clone());
    }
    let docs = spec::documents(&text, &source)?;
    let doc = &docs[0];
    if doc.kind != "Tenant" || doc.name != name {
        bail!(
            "{source} describes {} {:?}, not tenant {name:?}",
            doc.kind.to_lowercase(),
            doc.name
        );
    }
    Ok(doc.spec.clone())
}

async fn create(client: &Client, args: TenantWriteArgs) -> Result<()> {
    validate_tenant_name(&args.name)?;
    let spec = spec_from_args(&args.spec, &args.name, None)?;
    let view = create_tenant(client, &args.name, &spec).await?;
    if args.output == Format::Json {
        return json(&view);
    }
    print_created(&args.name, &view["spec"]);
    Ok(())
}

async fn update(client: &Client, args: TenantWriteArgs) -> Result<()> {
    let given = &args.spec;
    if given.file.is_none() && given.functions.is_none() && given.concurrent_builds.is_none() {
        bail!("nothing to change: pass -f FILE, --functions N or --concurrent-builds N");
    }
    let current: Value = client.get(&tenant_path(&args.name)?).await?;
    let spec = spec_from_args(given, &args.name, Some(&current["spec"]))?;
    let changes = diff(&current["spec"], &spec);
    let view = if changes.is_empty() {
        current
    } else {
        put_tenant(client, &args.name, &spec).await?
    };
    if args.output == Format::Json {
        return json(&view);
    }
    spec::print_changes(&format!("tenant/{}", args.name), "updated", &changes);
    Ok(())
}

/// `3 / 50`-style usage of every quota: `(label, used, limit)`. A quota's use is the usage
/// field of the same name (`concurrentBuilds` is counted as `builds`), `-` if none.
fn quota_usage(view: &Value) -> Vec<(String, String, String)> {
    let Some(quotas) = view["spec"]["quotas"].as_object() else {
        return Vec::new();
    };
    quotas
        .iter()
        .map(|(key, limit)| {
            let usage_key = match key.as_str() {
                "concurrentBuilds" => "builds",
                other => other,
            };
            let used = view["usage"]
                .get(usage_key)
                .map(scalar)
                .unwrap_or_else(|| "-".into());
            (words(key), used, scalar(limit))
        })
        .collect()
}

/// `concurrentBuilds` → `concurrent builds`.
fn words(key: &str) -> String {
    let mut out = String::new();
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push(' ');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `2025-01-02T03:04:05.678Z` → `2025-01-02 03:04:05`.
pub fn timestamp(value: &Value) -> String {
    match value.as_str() {
        Some(s) if s.len() >= 19 => s[..19].replacen('T', " ", 1),
        Some(s) => s.to_owned(),
        None => "-".into(),
    }
}

async fn ls(client: &Client, args: OutputArgs) -> Result<()> {
    let list: Value = client.get("/v1/tenants").await?;
    if args.output == Format::Json {
        return json(&list);
    }
    let tenants = list["tenants"].as_array().cloned().unwrap_or_default();
    let labels: Vec<String> = tenants
        .first()
        .map(|t| quota_usage(t).into_iter().map(|(label, ..)| label).collect())
        .unwrap_or_else(|| vec!["functions".into(), "concurrent builds".into()]);
    let mut header = vec!["NAME".to_owned()];
    header.extend(labels.iter().map(|l| l.to_uppercase()));
    header.push("CREATED".into());
    let rows: Vec<Vec<String>> = tenants
        .iter()
        .map(|t| {
            let usage = quota_usage(t);
            let name = match t["environment"].as_str() {
                Some(env) => format!("{} ({env})", scalar(&t["name"])),
                None => scalar(&t["name"]),
            };
            let mut row = vec![name];
            for label in &labels {
                row.push(
                    usage
                        .iter()
                        .find(|(l, ..)| l == label)
                        .map(|(_, used, limit)| format!("{used} / {limit}"))
                        .unwrap_or_else(|| "-".into()),
                );
            }
            row.push(timestamp(&t["createdAt"]));
            row
        })
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    table(&header, &rows);
    Ok(())
}

async fn describe(client: &Client, args: TenantDescribeArgs) -> Result<()> {
    let view: Value = client.get(&tenant_path(&args.name)?).await?;
    if args.output == Format::Json {
        return json(&view);
    }
    println!("Name:     {}", scalar(&view["name"]));
    println!("Created:  {}", timestamp(&view["createdAt"]));
    let mut settings = view["spec"].clone();
    if let Some(map) = settings.as_object_mut() {
        map.remove("quotas");
    }
    let settings = leaves(&settings);
    if !settings.is_empty() {
        println!("\nSettings:");
        for (path, value) in settings {
            println!("  {path}: {}", scalar(&value));
        }
    }
    println!();
    let rows: Vec<Vec<String>> = quota_usage(&view)
        .into_iter()
        .map(|(label, used, limit)| vec![label, format!("{used} / {limit}")])
        .collect();
    table(&["QUOTA", "USED / LIMIT"], &rows);
    Ok(())
}

async fn rm(client: &Client, args: TenantRef) -> Result<()> {
    let path = tenant_path(&args.name)?;
    if let Err(err) = client.delete(&path).await {
        if let Some(conflict) = failed_with(&err, 409) {
            let name = &args.name;
            let hint = if conflict.message.contains("function") {
                format!(
                    "; list them with `kl ls --tenant {name}` and delete each with `kl rm F --tenant {name}`"
                )
            } else {
                String::new()
            };
            bail!("cannot delete tenant {name}: {}{hint}", conflict.message);
        }
        return Err(err);
    }
    println!("tenant/{} deleted", args.name);
    Ok(())
}
