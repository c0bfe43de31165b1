//! `kl invoke`: one request to a function through the gateway.

use std::io::{IsTerminal, Write};

use anyhow::{Context, Result, bail};
use kl_api::ErrorBody;
use reqwest::Method;

use crate::cli::InvokeArgs;
use crate::client::{ApiFailure, Client};

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
