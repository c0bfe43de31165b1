//! `kl invoke`: one request to a function through the gateway, answered now or, with
//! `--async`, queued; `kl invocation get`: an async invocation's outcome.

use std::io::{IsTerminal, Write};

use anyhow::{Context, Result, bail};
use kl_api::{ErrorBody, InvocationAccepted, InvocationView};
use reqwest::Method;

use crate::cli::{Format, InvocationCommand, InvocationGetArgs, InvokeArgs};
use crate::client::{ApiFailure, Client, segment};
use crate::output::{json, millis};

pub async fn invoke(client: &Client, args: InvokeArgs) -> Result<()> {
    let body = match &args.data {
        Some(d) if d.starts_with('@') => {
            std::fs::read(&d[1..]).with_context(|| format!("cannot read {}", &d[1..]))?
        }
        Some(d) => d.clone().into_bytes(),
        None => Vec::new(),
    };
    let method = Method::from_bytes(args.method.to_uppercase().as_bytes()).context("invalid HTTP method")?;
    let sub = match args.path.as_str() {
        "" | "/" => String::new(),
        p if p.starts_with('/') => p.to_owned(),
        p => format!("/{p}"),
    };
    let path = format!("/fn/{}/{}{sub}", args.function.tenant, args.function.name);
    let mut request = client.request(method, &path);
    let mut has_type = false;
    for h in &args.headers {
        let (k, v) = h
            .split_once(':')
            .with_context(|| format!("header {h:?} is not NAME:VALUE"))?;
        has_type |= k.trim().eq_ignore_ascii_case("content-type");
        request = request.header(k.trim(), v.trim());
    }
    if args.run_async {
        request = request.header("prefer", "respond-async");
        if let Some(destination) = &args.destination {
            let value = if destination.contains("://") {
                destination.clone()
            } else {
                format!("function {destination}")
            };
            request = request.header("x-kl-destination", value);
        }
    }
    if !body.is_empty() && !has_type {
        let json = serde_json::from_slice::<serde_json::Value>(&body).is_ok();
        let ty = if json {
            "application/json"
        } else {
            "text/plain; charset=utf-8"
        };
        request = request.header(reqwest::header::CONTENT_TYPE, ty);
    }
    let response = request
        .body(body)
        .send()
        .await
        .with_context(|| format!("cannot reach the kl server at {}", client.base()))?;
    let status = response.status();
    if args.include {
        eprintln!("HTTP {status}");
        for (k, v) in response.headers() {
            eprintln!("{k}: {}", v.to_str().unwrap_or("<binary>"));
        }
    }
    // Responses proxied from the function carry x-kl-revision; the rest are the platform's.
    let platform_error = !response.headers().contains_key("x-kl-revision");
    let bytes = response.bytes().await?;
    if !status.is_success()
        && platform_error
        && let Ok(err) = serde_json::from_slice::<ErrorBody>(&bytes)
    {
        return Err(ApiFailure {
            status: status.as_u16(),
            code: err.error.code,
            message: err.error.message,
        }
        .into());
    }
    if args.run_async && status == reqwest::StatusCode::ACCEPTED {
        let accepted: InvocationAccepted =
            serde_json::from_slice(&bytes).context("the server's answer is not an invocation id")?;
        println!("{}", accepted.invocation_id);
        eprintln!(
            "queued; see `kl invocation get {} --tenant {}`",
            accepted.invocation_id, args.function.tenant
        );
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes)?;
    if std::io::stdout().is_terminal() && !bytes.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    out.flush()?;
    if !status.is_success() {
        bail!("the function answered HTTP {status}");
    }
    Ok(())
}

pub async fn invocation(client: &Client, command: InvocationCommand) -> Result<()> {
    match command {
        InvocationCommand::Get(args) => get(client, args).await,
    }
}

async fn get(client: &Client, args: InvocationGetArgs) -> Result<()> {
    let path = format!(
        "/v1/tenants/{}/invocations/{}",
        segment(&args.tenant),
        segment(&args.id)
    );
    let view: InvocationView = client.get(&path).await?;
    if args.output == Format::Json {
        return json(&view);
    }
    let status = serde_json::to_value(view.status)?;
    println!("Invocation: {}", view.id);
    println!("Function:   {} (tenant {})", view.function, view.tenant);
    println!("Status:     {}", status.as_str().unwrap_or_default());
    println!("Attempts:   {}", view.attempts);
    if let Some(code) = view.status_code {
        println!("HTTP:       {code}");
    }
    if let Some(ms) = view.duration_ms {
        let cold = if view.cold_start == Some(true) {
            " (cold start)"
        } else {
            ""
        };
        println!("Duration:   {}{cold}", millis(ms));
    }
    if let Some(error) = &view.error {
        println!("Error:      {error}");
    }
    match (&view.result, &view.result_base64) {
        (Some(serde_json::Value::String(text)), _) => println!("Result:\n{text}"),
        (Some(value), _) => println!("Result:\n{}", serde_json::to_string_pretty(value)?),
        (None, Some(b64)) => println!("Result (base64):\n{b64}"),
        (None, None) => {}
    }
    if view.result_truncated {
        println!("(the result was longer; the server keeps its beginning only)");
    }
    Ok(())
}
