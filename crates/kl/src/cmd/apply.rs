//! `kl apply -f FILE` and `kl export`: declarative specs. Apply is idempotent: it creates what
//! is missing, updates what differs and prints each changed field (`path: old → new`), or
//! `unchanged`; what `kl export` prints applies back as `unchanged`.

use anyhow::{Context, Result};
use serde_json::Value;

use crate::cli::{ApplyArgs, ExportCommand};
use crate::client::{Client, failed_with};
use crate::cmd::spec::{self, Document, diff, print_changes, print_created, tenant_spec, trigger_spec};
use crate::cmd::tenant::{self, create_tenant, put_tenant, tenant_path};
use crate::cmd::trigger::{put_trigger, spec_defaults, trigger_path};

/// One checked document, ready to apply.
enum Wanted {
    Tenant {
        name: String,
        spec: Value,
    },
    Trigger {
        tenant: String,
        name: String,
        spec: Value,
    },
}

pub async fn apply(client: &Client, args: ApplyArgs) -> Result<()> {
    let source = spec::source_name(&args.file);
    let text = spec::read_source(&args.file)?;
    // Every document is checked before anything changes.
    let mut wanted = Vec::new();
    for doc in spec::documents(&text, &source)? {
        if doc.kind == "Trigger" {
            let tenant = doc.tenant.unwrap_or_else(|| "default".into());
            let what = format!("{source}: trigger {} of tenant {tenant}", doc.name);
            trigger_path(&tenant, Some(&doc.name)).with_context(|| what.clone())?;
            let spec = trigger_spec(&doc.spec, &what)?;
            wanted.push(Wanted::Trigger {
                tenant,
                name: doc.name,
                spec,
            });
        } else {
            let what = format!("{source}: tenant {}", doc.name);
            tenant_path(&doc.name).with_context(|| what.clone())?;
            let spec = tenant_spec(&doc.spec, &what)?;
            wanted.push(Wanted::Tenant { name: doc.name, spec });
        }
    }
    for want in wanted {
        match want {
            Wanted::Tenant { name, spec } => apply_tenant(client, &name, &spec).await?,
            Wanted::Trigger { tenant, name, spec } => apply_trigger(client, &tenant, &name, &spec).await?,
        }
    }
    Ok(())
}

async fn apply_tenant(client: &Client, name: &str, spec: &Value) -> Result<()> {
    let object = format!("tenant/{name}");
    match client.get::<Value>(&tenant_path(name)?).await {
        Ok(current) => {
            let changes = diff(&current["spec"], spec);
            if !changes.is_empty() {
                put_tenant(client, name, spec).await?;
            }
            print_changes(&object, "configured", &changes);
        }
        Err(err) if failed_with(&err, 404).is_some() => {
            let view = create_tenant(client, name, spec).await?;
            tenant::print_created(name, &view["spec"]);
        }
        Err(err) => return Err(err),
    }
    Ok(())
}

async fn apply_trigger(client: &Client, tenant: &str, name: &str, spec: &Value) -> Result<()> {
    let object = format!("trigger/{name}");
    match client.get::<Value>(&trigger_path(tenant, Some(name))?).await {
        Ok(current) => {
            let changes = diff(&current["spec"], spec);
            if !changes.is_empty() {
                put_trigger(client, tenant, name, spec).await?;
            }
            print_changes(&object, "configured", &changes);
        }
        Err(err) if failed_with(&err, 404).is_some() => {
            let view = put_trigger(client, tenant, name, spec).await?;
            print_created(&object, &view["spec"], &spec_defaults());
        }
        Err(err) => return Err(err),
    }
    Ok(())
}

pub async fn export(client: &Client, command: ExportCommand) -> Result<()> {
    let doc = match command {
        ExportCommand::K8s(args) => return crate::cmd::k8s::export(client, args).await,
        ExportCommand::Crd => return crate::cmd::k8s::print_crd(),
        ExportCommand::Tenant(args) => {
            let view: Value = client.get(&tenant_path(&args.name)?).await?;
            Document {
                kind: "Tenant".into(),
                name: args.name,
                tenant: None,
                spec: view["spec"].clone(),
            }
        }
        ExportCommand::Trigger(args) => {
            let view: Value = client.get(&trigger_path(&args.tenant, Some(&args.name))?).await?;
            Document {
                kind: "Trigger".into(),
                name: args.name,
                tenant: Some(args.tenant),
                spec: view["spec"].clone(),
            }
        }
    };
    print!("{}", spec::to_yaml(&doc)?);
    Ok(())
}
