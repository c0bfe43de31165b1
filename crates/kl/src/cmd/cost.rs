//! `kl cost report` and `kl cost top`: chargeback over the cost API (`GET /v1/cost/report`).

use anyhow::Result;
use kl_core::{Report, ReportRow};
use reqwest::Method;

use crate::cli::{CostCommand, CostFormat, CostReportArgs, CostTopArgs, CostWindowArgs, Format};
use crate::client::Client;
use crate::output::{json, table};

pub async fn cost(client: &Client, command: CostCommand) -> Result<()> {
    match command {
        CostCommand::Report(args) => report(client, args).await,
        CostCommand::Top(args) => top(client, args).await,
    }
}

/// The API's `window` for the flags: `FROM,TO`, the period's name, `--window`, or `month`.
fn window(args: &CostWindowArgs) -> String {
    match (&args.from, &args.to, args.period.as_deref(), &args.window) {
        (Some(from), Some(to), _, _) => format!("{from},{to}"),
        (_, _, Some("day"), _) => "today".to_owned(),
        (_, _, Some(period), _) => period.to_owned(),
        (_, _, None, Some(window)) => window.clone(),
        _ => "month".to_owned(),
    }
}

async fn fetch(
    client: &Client,
    args: &CostWindowArgs,
    aggregate: &str,
    step: Option<&str>,
) -> Result<Report> {
    let mut query = vec![("window", window(args)), ("aggregate", aggregate.to_owned())];
    if let Some(tenant) = &args.tenant {
        query.push(("tenant", tenant.clone()));
    }
    if let Some(step) = step {
        query.push(("step", step.to_owned()));
    }
    let request = client.request(Method::GET, "/v1/cost/report").query(&query);
    Ok(client.send(request).await?.json().await?)
}

async fn report(client: &Client, args: CostReportArgs) -> Result<()> {
    let report = fetch(client, &args.window, &args.by, args.step.as_deref()).await?;
    match args.output {
        CostFormat::Json => json(&report),
        CostFormat::Csv => {
            print!("{}", csv(&report));
            Ok(())
        }
        CostFormat::Table => {
            let (header, mut rows) = lines(&report);
            let currency = &report.currency;
            for (name, costs) in [
                ("charged", report.charged),
                ("idle", report.idle),
                ("total", report.total),
            ] {
                let mut row = vec![String::new(); header.len()];
                row[0] = name.to_uppercase();
                *row.last_mut().expect("a header") = format!("{} {currency}", costs.total);
                rows.push(row);
            }
            println!("window {} (UTC, end excluded), {currency}", report.window);
            table(&header, &rows);
            Ok(())
        }
    }
}

/// Column names and one line per report row: the step part, the grouping columns the report
/// has, then usage and cost.
fn lines(report: &Report) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let has = |f: fn(&ReportRow) -> bool| report.rows.iter().any(f);
    let (tenant, function) = (has(|r| r.tenant.is_some()), has(|r| r.function.is_some()));
    let (day, resource) = (has(|r| r.day.is_some()), has(|r| r.resource.is_some()));
    let mut header = vec!["START"];
    for (shown, name) in [
        (tenant, "TENANT"),
        (function, "FUNCTION"),
        (day, "DAY"),
        (resource, "RESOURCE"),
    ] {
        if shown {
            header.push(name);
        }
    }
    header.extend([
        "CPU_CORE_H",
        "CPU_USED_CORE_H",
        "MEM_GB_H",
        "REQUESTS",
        "GB_S",
        "BUILD_MIN",
        "STORAGE_GB_MO",
        "COST",
    ]);
    let dash = |s: Option<String>| s.unwrap_or_else(|| "-".into());
    let rows = report
        .rows
        .iter()
        .map(|r| {
            let q = &r.quantities;
            let idle = |s: Option<String>| if r.idle { "__idle__".to_owned() } else { dash(s) };
            let mut row = vec![r.window.start().format("%Y-%m-%dT%H:%MZ").to_string()];
            if tenant {
                row.push(idle(r.tenant.clone()));
            }
            if function {
                row.push(idle(r.function.clone()));
            }
            if day {
                row.push(dash(r.day.map(|d| d.to_string())));
            }
            if resource {
                row.push(dash(r.resource.map(|x| x.to_string())));
            }
            row.extend([
                format!("{:.6}", q.cpu_core_hours),
                format!("{:.6}", q.cpu_core_hours_used),
                format!("{:.6}", q.memory_gb_hours),
                q.requests.to_string(),
                format!("{:.3}", q.gb_seconds),
                format!("{:.3}", q.build_minutes),
                format!("{:.6}", q.storage_gb_months),
                r.cost.total.to_string(),
            ]);
            row
        })
        .collect();
    (header, rows)
}

/// The rows as CSV (RFC 4180: fields quoted when they hold a comma, quote or newline).
fn csv(report: &Report) -> String {
    let (header, rows) = lines(report);
    let field = |f: &str| {
        if f.contains([',', '"', '\n']) {
            format!("\"{}\"", f.replace('"', "\"\""))
        } else {
            f.to_owned()
        }
    };
    let mut out = header
        .iter()
        .map(|h| h.to_lowercase())
        .collect::<Vec<_>>()
        .join(",")
        + "\n";
    for row in rows {
        out += &row.iter().map(|f| field(f)).collect::<Vec<_>>().join(",");
        out.push('\n');
    }
    out
}

async fn top(client: &Client, args: CostTopArgs) -> Result<()> {
    let report = fetch(client, &args.window, &args.by, None).await?;
    let mut rows: Vec<&ReportRow> = report.rows.iter().filter(|r| !r.idle).collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.cost.total));
    rows.truncate(args.limit);
    if args.output == Format::Json {
        return json(&rows);
    }
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.tenant.clone().unwrap_or_default(),
                r.function.clone().unwrap_or_else(|| "-".into()),
                r.quantities.requests.to_string(),
                format!("{:.6}", r.quantities.cpu_core_hours_used * 3600.0),
                format!("{:.3}", r.quantities.memory_gb_hours * 3600.0),
                format!("{} {}", r.cost.total, report.currency),
            ]
        })
        .collect();
    table(
        &["TENANT", "FUNCTION", "REQUESTS", "CPU_S", "MEM_GB_S", "COST"],
        &lines,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(from: Option<&str>, period: Option<&str>, window: Option<&str>) -> CostWindowArgs {
        CostWindowArgs {
            tenant: None,
            from: from.map(str::to_owned),
            to: from.map(|_| "2026-12-01".to_owned()),
            period: period.map(str::to_owned),
            window: window.map(str::to_owned),
        }
    }

    #[test]
    fn flags_become_opencost_windows() {
        assert_eq!(
            window(&args(Some("2026-11-01"), None, None)),
            "2026-11-01,2026-12-01"
        );
        assert_eq!(window(&args(None, Some("day"), None)), "today");
        assert_eq!(window(&args(None, Some("week"), None)), "week");
        assert_eq!(window(&args(None, None, Some("7d"))), "7d");
        assert_eq!(window(&args(None, None, None)), "month");
    }
}
