//! `roam-csi`: the Roam CSI driver binary. One subcommand per role; each
//! dispatches to its module's `run(args)`.

mod admin;
mod controller;
mod csi_guard;
mod csi_metrics;
mod csi_server;
mod csi_validate;
mod identity;
mod node;
mod storage;
mod tls;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "roam-csi",
    version,
    about = "Roam CSI driver, storage system and admin CLI"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one storage system (the replicas of this data center).
    Storage(storage::StorageArgs),
    /// Talk to a storage system: replicas, groups, I/O, roles, status.
    Admin(admin::AdminArgs),
    /// CSI controller service (CreateVolume, ControllerPublish = log-in, ...).
    Controller(csi_server::ControllerArgs),
    /// CSI node service of this node, with its storage system.
    Node(csi_server::NodeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let is_admin = matches!(cli.command, Command::Admin(_));
    let default_level = if is_admin { "warn" } else { "info" };
    tracing_subscriber::fmt()
        // Colour codes only for a terminal: logs collected by the kubelet stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Storage(args) => storage::run(args).await,
            Command::Admin(args) => admin::run(args).await,
            Command::Controller(args) => csi_server::run_controller(args).await,
            Command::Node(args) => csi_server::run_node(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
