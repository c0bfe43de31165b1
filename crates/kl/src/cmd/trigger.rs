//! `kl trigger create|ls|describe|rm`: which of a tenant's events go to which function (or a
//! function pinged on a schedule), and how they are delivered.

use anyhow::{Context, Result};
use kl_api::{CreateTrigger, TriggerList, TriggerView};
use kl_core::validate_tenant_name;
use kl_events::delivery::{BackoffPolicy, Sink};
use kl_events::filter::Filter;
use kl_events::trigger::{TriggerSpec, validate_trigger_name};
use reqwest::Method;
use serde_json::Value;

use crate::cli::{Format, TriggerCommand, TriggerCreateArgs, TriggerDescribeArgs, TriggerLsArgs, TriggerRef};
use crate::client::{Client, segment};
use crate::output::{json, table};

pub async fn trigger(client: &Client, command: TriggerCommand) -> Result<()> {
    match command {
        TriggerCommand::Create(args) => create(client, args).await,
        TriggerCommand::Ls(args) => ls(client, args).await,
        TriggerCommand::Describe(args) => describe(client, args).await,
        TriggerCommand::Rm(args) => rm(client, args).await,
    }
}

/// `/v1/tenants/{t}/triggers[/{name}]`, once the names are known to be valid.
pub fn trigger_path(tenant: &str, name: Option<&str>) -> Result<String> {
    validate_tenant_name(tenant)?;
    let base = format!("/v1/tenants/{}/triggers", segment(tenant));
    match name {
        Some(name) => {
            validate_trigger_name(name)?;
            Ok(format!("{base}/{}", segment(name)))
        }
        None => Ok(base),
    }
}

/// A sink named on the command line: an http(s) URL, else a function.
fn sink(value: &str) -> Sink {
    if value.contains("://") {
        Sink::Uri(value.to_owned())
    } else {
        Sink::Function(value.to_owned())
    }
}

fn spec_from_args(args: &TriggerCreateArgs) -> Result<TriggerSpec> {
    let mut spec = TriggerSpec {
        function: args.function.clone(),
        filters: Filter::parse_cli(&args.filters)?,
        schedule: args.schedule.as_deref().map(str::parse).transpose()?,
        data: args
            .data
            .as_deref()
            .map(|d| serde_json::from_str(d).context("--data must be JSON"))
            .transpose()?,
        delivery: Default::default(),
    };
    let delivery = &mut spec.delivery;
    if let Some(n) = args.retries {
        delivery.retries = n;
    }
    if let Some(d) = args.backoff_delay {
        delivery.backoff_delay = d;
    }
    if let Some(d) = args.backoff_max {
        delivery.backoff_max = d;
    }
    if let Some(policy) = &args.backoff_policy {
        delivery.backoff_policy = match policy.as_str() {
            "linear" => BackoffPolicy::Linear,
            _ => BackoffPolicy::Exponential,
        };
    }
    delivery.timeout = args.timeout;
    delivery.dead_letter = args.dead_letter.as_deref().map(sink);
    spec.validate()?;
    Ok(spec)
}

async fn create(client: &Client, args: TriggerCreateArgs) -> Result<()> {
    let path = trigger_path(&args.tenant, None)?;
    validate_trigger_name(&args.name)?;
    let body = CreateTrigger {
        name: args.name.clone(),
        spec: spec_from_args(&args)?,
    };
    let view: TriggerView = client.send_json(Method::POST, &path, &body).await?;
    println!("trigger/{} created", view.name);
    if let Some(next) = view.next_fire {
        println!("  next fire: {}", next.format("%Y-%m-%d %H:%M:%S UTC"));
    }
    Ok(())
}

/// What a trigger listens to, in one cell.
fn listens_to(spec: &TriggerSpec) -> String {
    match &spec.schedule {
        Some(schedule) => format!("schedule {schedule}"),
        None if spec.filters.is_empty() => "every event".into(),
        None => spec
            .filters
            .conditions()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" "),
    }
}

fn sink_name(sink: &Option<Sink>) -> String {
    match sink {
        Some(Sink::Function(f)) => format!("function {f}"),
        Some(Sink::Uri(u)) => u.clone(),
        None => "-".into(),
    }
}

async fn ls(client: &Client, args: TriggerLsArgs) -> Result<()> {
    let list: TriggerList = client.get(&trigger_path(&args.tenant, None)?).await?;
    if args.output == Format::Json {
        return json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .triggers
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.spec.function.clone(),
                listens_to(&t.spec),
                t.spec.delivery.retries.to_string(),
                sink_name(&t.spec.delivery.dead_letter),
            ]
        })
        .collect();
    table(&["NAME", "FUNCTION", "EVENTS", "RETRIES", "DEAD LETTER"], &rows);
    Ok(())
}

async fn describe(client: &Client, args: TriggerDescribeArgs) -> Result<()> {
    let t = &args.trigger;
    let view: TriggerView = client.get(&trigger_path(&t.tenant, Some(&t.name))?).await?;
    if args.output == Format::Json {
        return json(&view);
    }
    let d = &view.spec.delivery;
    println!("Name:        {}", view.name);
    println!("Tenant:      {}", view.tenant);
    println!("Function:    {}", view.spec.function);
    println!("Events:      {}", listens_to(&view.spec));
    if let Some(next) = view.next_fire {
        println!("Next fire:   {}", next.format("%Y-%m-%d %H:%M:%S UTC"));
    }
    if let Some(data) = &view.spec.data {
        println!("Ping data:   {data}");
    }
    let delivery = serde_json::to_value(d)?;
    println!(
        "Delivery:    {} retries, {} backoff from {} up to {}, timeout {}",
        d.retries,
        delivery["backoffPolicy"].as_str().unwrap_or_default(),
        delivery["backoffDelay"].as_str().unwrap_or_default(),
        delivery["backoffMax"].as_str().unwrap_or_default(),
        delivery
            .get("timeout")
            .and_then(Value::as_str)
            .unwrap_or("the function's")
    );
    println!("Dead letter: {}", sink_name(&d.dead_letter));
    println!("Created:     {}", view.created_at.format("%Y-%m-%d %H:%M:%S"));
    Ok(())
}

async fn rm(client: &Client, args: TriggerRef) -> Result<()> {
    client
        .delete(&trigger_path(&args.tenant, Some(&args.name))?)
        .await?;
    println!("trigger/{} deleted", args.name);
    Ok(())
}

/// Creates or replaces a trigger with a normalised spec (`kl apply`).
pub async fn put_trigger(client: &Client, tenant: &str, name: &str, spec: &Value) -> Result<Value> {
    client
        .send_json(Method::PUT, &trigger_path(tenant, Some(name))?, spec)
        .await
}

/// The defaults a trigger spec is compared against when `kl apply` reports a creation.
pub fn spec_defaults() -> Value {
    serde_json::json!({"delivery": kl_events::delivery::DeliveryPolicy::default()})
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command, EventingCommand};

    fn parse(args: &[&str]) -> TriggerCreateArgs {
        let mut all = vec!["kl", "trigger", "create"];
        all.extend_from_slice(args);
        match Cli::parse_from(all).command {
            Command::Eventing(EventingCommand::Trigger(TriggerCommand::Create(args))) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flags_make_a_knative_shaped_spec() {
        let args = parse(&[
            "resize",
            "--function",
            "thumbs",
            "--filter",
            "type=com.example.created",
            "--filter",
            "subject=suffix:.png",
            "--retries",
            "3",
            "--backoff-delay",
            "500ms",
            "--backoff-policy",
            "linear",
            "--timeout",
            "2s",
            "--dead-letter",
            "failures",
        ]);
        let spec = serde_json::to_value(spec_from_args(&args).unwrap()).unwrap();
        assert_eq!(
            spec,
            serde_json::json!({
                "function": "thumbs",
                "filters": [{"suffix": {"subject": ".png"}}, {"exact": {"type": "com.example.created"}}],
                "delivery": {"retry": 3, "backoffPolicy": "linear", "backoffDelay": "PT0.5S",
                             "backoffMax": "PT5M", "timeout": "PT2S", "deadLetterSink": {"function": "failures"}}
            })
        );
        let ping = parse(&[
            "tick",
            "--function",
            "f",
            "--schedule",
            "*/5 * * * *",
            "--data",
            "{\"a\":1}",
        ]);
        let spec = spec_from_args(&ping).unwrap();
        assert_eq!(listens_to(&spec), "schedule */5 * * * *");
        assert!(spec_from_args(&parse(&["bad", "--function", "f", "--filter", "Type=x"])).is_err());
        assert!(spec_from_args(&parse(&["bad", "--function", "f", "--schedule", "* * *"])).is_err());
    }
}
