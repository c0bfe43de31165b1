//! `kl apply -f FILE` and `kl export`: declarative specs. Apply is idempotent: it creates what
//! is missing, updates what differs and prints each changed field (`path: old → new`), or
//! `unchanged`; what `kl export` prints applies back as `unchanged`.

use anyhow::{Context, Result};
use serde_json::Value;

use crate::cli::{ApplyArgs, ExportCommand};
use crate::client::{Client, failed_with};
use crate::cmd::spec::{self, Document, diff, tenant_spec};
use crate::cmd::tenant::{create_tenant, print_changes, print_created, put_tenant, tenant_path};

pub async fn apply(client: &Client, args: ApplyArgs) -> Result<()> {
    let source = spec::source_name(&args.file);
    let text = spec::read_source(&args.file)?;
    // Every document is checked before anything changes.
    let mut wanted = Vec::new();
    for doc in spec::documents(&text, &source)? {
        let what = format!("{source}: tenant {}", doc.name);
        tenant_path(&doc.name).with_context(|| what.clone())?;
        wanted.push((doc.name, tenant_spec(&doc.spec, &what)?));
    }
    for (name, spec) in wanted {
        match client.get::<Value>(&tenant_path(&name)?).await {
            Ok(current) => {
                let changes = diff(&current["spec"], &spec);
                if !changes.is_empty() {
                    put_tenant(client, &name, &spec).await?;
                }
                print_changes(&name, "configured", &changes);
            }
            Err(err) if failed_with(&err, 404).is_some() => {
                let view = create_tenant(client, &name, &spec).await?;
                print_created(&name, &view["spec"]);
            }
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

pub async fn export(client: &Client, command: ExportCommand) -> Result<()> {
    match command {
        ExportCommand::Tenant(args) => {
            let view: Value = client.get(&tenant_path(&args.name)?).await?;
            let doc = Document {
                kind: "Tenant".into(),
                name: args.name,
                spec: view["spec"].clone(),
            };
            print!("{}", spec::to_yaml(&doc)?);
            Ok(())
        }
    }
}
