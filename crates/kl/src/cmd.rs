//! One module per command.

pub mod apply;
pub mod audit;
pub mod deploy;
pub mod functions;
pub mod invoke;
pub mod logs;
pub mod server;
pub mod spec;
pub mod tenant;
pub mod token;

use crate::cli::{AccessCommand, Conn};
use crate::client::{ApiFailure, Client};

/// Runs a tenancy or access command.
pub async fn access(client: &Client, command: AccessCommand) -> anyhow::Result<()> {
    match command {
        AccessCommand::Tenant(command) => tenant::tenant(client, command).await,
        AccessCommand::Token(command) => token::token(client, command).await,
        AccessCommand::Audit(args) => audit::audit(client, args).await,
        AccessCommand::Apply(args) => apply::apply(client, args).await,
        AccessCommand::Export(command) => apply::export(client, command).await,
    }
}

/// Runs a tenancy or access command to completion and exits with its status, reporting an
/// error as `main` does.
pub fn run_access(conn: &Conn, command: AccessCommand) -> ! {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let result = runtime.block_on(async {
        let client = Client::from_conn(conn)?;
        access(&client, command).await
    });
    drop(runtime);
    let _ = std::io::Write::flush(&mut std::io::stdout());
    match result {
        Ok(()) => std::process::exit(0),
        Err(err) => {
            match err.downcast_ref::<ApiFailure>() {
                Some(api) => eprintln!("error: {} ({})", api.message, api.code),
                None => eprintln!("error: {err:#}"),
            }
            std::process::exit(1);
        }
    }
}
