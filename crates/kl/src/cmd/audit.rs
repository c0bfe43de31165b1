//! `kl audit`: the newest denied requests, newest first.

use anyhow::Result;
use kl_api::AuditList;
use reqwest::Method;

use crate::cli::{AuditArgs, Format};
use crate::client::Client;
use crate::output::{json, table};

pub async fn audit(client: &Client, args: AuditArgs) -> Result<()> {
    let request = client.request(Method::GET, "/v1/audit");
    let request = match args.limit {
        Some(limit) => request.query(&[("limit", limit)]),
        None => request,
    };
    let list: AuditList = client.send(request).await?.json().await?;
    if args.output == Format::Json {
        return json(&list);
    }
    let dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    let rows: Vec<Vec<String>> = list
        .entries
        .iter()
        .map(|e| {
            vec![
                e.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                e.outcome.clone(),
                dash(&e.token_id),
                match (&e.role, &e.caller_tenant) {
                    (Some(role), Some(tenant)) => format!("{role}@{tenant}"),
                    (role, _) => dash(role),
                },
                e.action.clone(),
                dash(&e.target_tenant),
                format!("{} {}", e.method, e.path),
            ]
        })
        .collect();
    table(
        &["AT", "OUTCOME", "TOKEN", "ROLE", "ACTION", "TARGET", "REQUEST"],
        &rows,
    );
    Ok(())
}
