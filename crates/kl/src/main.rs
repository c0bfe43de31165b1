//! `kl`: the knative-lambda binary. `kl server` runs the platform; every other command is a
//! client of its HTTP API.

mod cli;
mod client;
mod cmd;
mod output;
mod pack;

use clap::Parser;

use crate::cli::{AccessCommand, AdminCommand, Cli, Command};
use crate::client::ApiFailure;

fn main() {
    // The sandbox's jailer is this binary too (hidden): dispatch before any parsing or runtime.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == kl_runtime::sandbox::JAIL_COMMAND)
    {
        kl_runtime::sandbox::jail_main(std::env::args_os().collect());
    }
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let result = runtime.block_on(run(cli));
    if let Err(err) = result {
        match err.downcast_ref::<ApiFailure>() {
            Some(api) => eprintln!("error: {} ({})", api.message, api.code),
            None => eprintln!("error: {err:#}"),
        }
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Server(args) => cmd::server::server(args, cli.conn.data_dir).await,
        Command::Quickstart(args) => cmd::server::quickstart(args, cli.conn.data_dir).await,
        Command::Operator(args) => cmd::k8s::operator(args).await,
        Command::Access(AccessCommand::Admin(AdminCommand::Restore(args))) => {
            cmd::backup::restore(args, cli.conn.data_dir).await
        }
        command => {
            let client = client::Client::from_conn(&cli.conn)?;
            match command {
                Command::Deploy(args) => cmd::deploy::deploy(&client, args).await.map(drop),
                Command::Invoke(args) => cmd::invoke::invoke(&client, args).await,
                Command::Ls(args) => cmd::functions::ls(&client, args).await,
                Command::Describe(args) => cmd::functions::describe(&client, args).await,
                Command::Logs(args) => cmd::logs::logs(&client, args).await,
                Command::Rm(args) => cmd::functions::rm(&client, args).await,
                Command::Rollback(args) => cmd::functions::rollback(&client, args).await,
                Command::Access(command) => cmd::access(&client, command).await,
                Command::Eventing(command) => cmd::eventing(&client, command).await,
                Command::Cost(command) => cmd::cost::cost(&client, command).await,
                Command::Server(_) | Command::Quickstart(_) | Command::Operator(_) => {
                    unreachable!("handled above")
                }
            }
        }
    }
}
