//! `kl events send|tail|upload|dlq`: send a CloudEvent, follow a tenant's events live, put a
//! source in the object store for a `command.build.start`, and handle dead letters.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use kl_api::{DeadLetterList, DeadLetterView, EventsAccepted, Uploaded};
use kl_events::CloudEvent;
use kl_events::filter::Filter;
use kl_events::http_binding::to_binary;
use reqwest::Method;
use serde_json::Value;

use crate::cli::{
    DeadLetterRef, DlqCommand, DlqLsArgs, EventsCommand, Format, SendArgs, TailArgs, UploadArgs,
};
use crate::client::{Client, segment};
use crate::output::{json, table};
use crate::pack::pack_dir;

pub async fn events(client: &Client, command: EventsCommand) -> Result<()> {
    match command {
        EventsCommand::Send(args) => send(client, args).await,
        EventsCommand::Tail(args) => tail(client, args).await,
        EventsCommand::Upload(args) => upload(client, args).await,
        EventsCommand::Dlq(DlqCommand::Ls(args)) => dlq_ls(client, args).await,
        EventsCommand::Dlq(DlqCommand::Show(args)) => dlq_show(client, args).await,
        EventsCommand::Dlq(DlqCommand::Replay(args)) => dlq_replay(client, args).await,
    }
}

fn tenant_path(tenant: &str, rest: &str) -> String {
    format!("/v1/tenants/{}/{rest}", segment(tenant))
}

/// The event `kl events send` describes.
fn event(args: &SendArgs) -> Result<CloudEvent> {
    let mut event = CloudEvent::new(&args.ty, args.source.clone(), Value::Null);
    if let Some(id) = &args.id {
        event.id = id.clone();
    }
    event.subject = args.subject.clone();
    event.datacontenttype = None;
    if let Some(data) = &args.data {
        let bytes = match data.strip_prefix('@') {
            Some(file) => std::fs::read(file).with_context(|| format!("cannot read {file}"))?,
            None => data.clone().into_bytes(),
        };
        let json = serde_json::from_slice::<Value>(&bytes).ok();
        let content_type = args.content_type.clone().unwrap_or_else(|| {
            if json.is_some() {
                "application/json"
            } else {
                "text/plain; charset=utf-8"
            }
            .to_owned()
        });
        match (json, String::from_utf8(bytes)) {
            (Some(value), _) if content_type.contains("json") => event.data = Some(value),
            (_, Ok(text)) => event.data = Some(Value::String(text)),
            (_, Err(raw)) => event.data_base64 = Some(raw.into_bytes().into()),
        }
        event.datacontenttype = Some(content_type);
    }
    for (name, value) in &args.extensions {
        event
            .extensions
            .insert(name.clone(), Value::String(value.clone()));
    }
    event.validate()?;
    Ok(event)
}

async fn send(client: &Client, args: SendArgs) -> Result<()> {
    let event = event(&args)?;
    let (headers, body) = to_binary(&event)?;
    let request = client
        .request(Method::POST, &tenant_path(&args.tenant, "events"))
        .headers(headers)
        .body(body);
    let accepted: EventsAccepted = client.send(request).await?.json().await?;
    if accepted.duplicates > 0 {
        println!(
            "{} duplicate of an event already accepted (not delivered again)",
            event.id
        );
    } else {
        println!("{} accepted", event.id);
    }
    Ok(())
}

/// One line per event: time, type, source, subject, id.
fn summary(event: &CloudEvent) -> String {
    let time = event
        .time()
        .map(|t| t.format("%H:%M:%S%.3f").to_string())
        .unwrap_or_else(|| "-".into());
    format!(
        "{time}  {}  {}  {}  {}",
        event.ty,
        event.source,
        event.subject.as_deref().unwrap_or("-"),
        event.id
    )
}

async fn tail(client: &Client, args: TailArgs) -> Result<()> {
    // Checked here too, so a typo is refused before connecting.
    Filter::parse_cli(&args.filters)?;
    let query: Vec<(&str, &str)> = args.filters.iter().map(|f| ("filter", f.as_str())).collect();
    let request = client
        .request(Method::GET, &tenant_path(&args.tenant, "events/stream"))
        .query(&query);
    let mut response = client.send(request).await?;
    eprintln!("following the events of tenant {} (Ctrl-C to stop)", args.tenant);
    let mut pending = Vec::new();
    let mut out = std::io::stdout();
    while let Some(chunk) = response.chunk().await? {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let value: Value =
                serde_json::from_slice(&line).context("the server sent a malformed event line")?;
            if let Some(missed) = value.get("lagged") {
                eprintln!("warning: {missed} events were missed (this follower fell behind)");
                continue;
            }
            match args.output {
                Format::Json => out.write_all(&line)?,
                Format::Table => {
                    let event: CloudEvent = serde_json::from_value(value)?;
                    writeln!(out, "{}", summary(&event))?;
                }
            }
            out.flush()?;
        }
    }
    Ok(())
}

async fn upload(client: &Client, args: UploadArgs) -> Result<()> {
    let path = &args.path;
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file_name = path
        .canonicalize()?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (derived, archive) = if meta.is_dir() {
        (format!("{file_name}.tar.gz"), pack_dir(path)?)
    } else {
        (file_name, std::fs::read(path)?)
    };
    let name = args.name.clone().unwrap_or(derived);
    if name.is_empty() || Path::new(&name).components().count() != 1 {
        bail!("upload name {name:?} must be a plain file name; pass --name");
    }
    let request = client
        .request(
            Method::PUT,
            &tenant_path(&args.tenant, &format!("uploads/{}", segment(&name))),
        )
        .body(archive);
    let uploaded: Uploaded = client.send(request).await?.json().await?;
    println!("{}", uploaded.key);
    eprintln!(
        "uploaded {} bytes; name it as the source of a command.build.start event",
        uploaded.bytes
    );
    Ok(())
}

async fn dlq_ls(client: &Client, args: DlqLsArgs) -> Result<()> {
    let mut request = client.request(Method::GET, &tenant_path(&args.tenant, "dlq"));
    if let Some(limit) = args.limit {
        request = request.query(&[("limit", limit)]);
    }
    let list: DeadLetterList = client.send(request).await?.json().await?;
    if args.output == Format::Json {
        return json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .dead_letters
        .iter()
        .map(|d| {
            vec![
                d.id.clone(),
                d.subscriber.clone(),
                d.event.ty.clone(),
                (d.attempt + 1).to_string(),
                d.dead_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                d.reason.lines().next().unwrap_or_default().to_owned(),
            ]
        })
        .collect();
    table(&["ID", "FOR", "TYPE", "ATTEMPTS", "DEAD AT", "REASON"], &rows);
    Ok(())
}

async fn dlq_show(client: &Client, args: DeadLetterRef) -> Result<()> {
    let path = tenant_path(&args.tenant, &format!("dlq/{}", segment(&args.id)));
    let letter: DeadLetterView = client.get(&path).await?;
    json(&letter)
}

async fn dlq_replay(client: &Client, args: DeadLetterRef) -> Result<()> {
    let path = tenant_path(&args.tenant, &format!("dlq/{}/replay", segment(&args.id)));
    client.send(client.request(Method::POST, &path)).await?;
    println!("replayed {}", args.id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(data: Option<&str>, content_type: Option<&str>) -> SendArgs {
        SendArgs {
            ty: "com.example.x".into(),
            source: "/s".into(),
            id: Some("1".into()),
            subject: None,
            data: data.map(str::to_owned),
            content_type: content_type.map(str::to_owned),
            extensions: vec![("region".into(), "eu".into())],
            tenant: "default".into(),
        }
    }

    #[test]
    fn send_builds_json_text_or_no_data() {
        let ev = event(&args(Some("{\"a\":1}"), None)).unwrap();
        assert_eq!(ev.data, Some(serde_json::json!({"a": 1})));
        assert_eq!(ev.datacontenttype.as_deref(), Some("application/json"));
        assert_eq!(ev.extensions["region"], "eu");
        let ev = event(&args(Some("hello"), None)).unwrap();
        assert_eq!(ev.data, Some(Value::String("hello".into())));
        let ev = event(&args(Some("{\"a\":1}"), Some("text/plain"))).unwrap();
        assert_eq!(ev.data, Some(Value::String("{\"a\":1}".into())));
        let ev = event(&args(None, None)).unwrap();
        assert_eq!((ev.data, ev.datacontenttype), (None, None));
        let mut bad = args(None, None);
        bad.extensions = vec![("Bad_Name".into(), "x".into())];
        assert!(event(&bad).is_err());
    }
}
