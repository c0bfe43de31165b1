//! One module per command.

pub mod apply;
pub mod audit;
pub mod backup;
pub mod cost;
pub mod deploy;
pub mod env;
pub mod events;
pub mod functions;
pub mod invoke;
pub mod k8s;
pub mod logs;
pub mod secret;
pub mod server;
pub mod spec;
pub mod tenant;
pub mod token;
pub mod trigger;

use crate::cli::{AccessCommand, EventingCommand};
use crate::client::Client;

/// Runs a tenancy or access command.
pub async fn access(client: &Client, command: AccessCommand) -> anyhow::Result<()> {
    match command {
        AccessCommand::Tenant(command) => tenant::tenant(client, command).await,
        AccessCommand::Token(command) => token::token(client, command).await,
        AccessCommand::Audit(args) => audit::audit(client, args).await,
        AccessCommand::Apply(args) => apply::apply(client, args).await,
        AccessCommand::Export(command) => apply::export(client, command).await,
        AccessCommand::Secret(command) => secret::secret(client, command).await,
        AccessCommand::Admin(command) => secret::admin(client, command).await,
        AccessCommand::Env(command) => env::env(client, command).await,
        AccessCommand::Promote(args) => env::promote(client, args).await,
    }
}

/// Runs an eventing command.
pub async fn eventing(client: &Client, command: EventingCommand) -> anyhow::Result<()> {
    match command {
        EventingCommand::Events(command) => events::events(client, command).await,
        EventingCommand::Trigger(command) => trigger::trigger(client, command).await,
        EventingCommand::Invocation(command) => invoke::invocation(client, command).await,
    }
}
