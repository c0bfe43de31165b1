//! One module per command.

pub mod apply;
pub mod audit;
pub mod cost;
pub mod deploy;
pub mod functions;
pub mod invoke;
pub mod logs;
pub mod server;
pub mod spec;
pub mod tenant;
pub mod token;

use crate::cli::AccessCommand;
use crate::client::Client;

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
