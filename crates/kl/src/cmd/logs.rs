//! `kl logs [-f]`: the function's log (its instances' stdout and stderr).

use std::io::Write;

use anyhow::Result;
use reqwest::Method;

use crate::cli::LogsArgs;
use crate::client::Client;

pub async fn logs(client: &Client, args: LogsArgs) -> Result<()> {
    let path = format!(
        "/v1/tenants/{}/functions/{}/logs",
        args.function.tenant, args.function.name
    );
    let request = client.request(Method::GET, &path).query(&[
        ("follow", args.follow.to_string()),
        ("tail", args.tail.to_string()),
    ]);
    let mut response = client.send(request).await?;
    let mut out = std::io::stdout();
    while let Some(chunk) = response.chunk().await? {
        out.write_all(&chunk)?;
        out.flush()?;
    }
    Ok(())
}
