//! Command-line interface. Every flag can also be set through the environment
//! variable named in `--help`.

mod admin;
mod build;
mod serve;
mod up;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "trellis",
    version,
    about = "Runs Spin-format apps of WebAssembly components"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    pub telemetry: crate::telemetry::TelemetryArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the app described by a Spin manifest.
    Up(Box<up::UpArgs>),
    /// Run each component's build command from the manifest.
    Build(build::BuildArgs),
    /// Platform mode: serve many tenants' apps, deployed through the admin API.
    Serve(Box<serve::ServeArgs>),
    /// Manage tenants (admin API).
    #[command(subcommand)]
    Tenant(admin::TenantCommand),
    /// Deploy an app, or one component of it (admin API).
    Deploy(admin::DeployArgs),
    /// List every version of an app's components (admin API).
    Versions(admin::AppArgs),
    /// Make an earlier version of a component active again (admin API).
    Rollback(admin::RollbackArgs),
    /// What a host serves, or one app's active versions (admin API).
    Status(admin::StatusArgs),
}

/// `-f/--from spin.toml`, shared by the commands that read a manifest.
#[derive(Debug, Args)]
pub struct ManifestArg {
    /// The app manifest.
    #[arg(
        short = 'f',
        long = "from",
        visible_alias = "file",
        env = "TRELLIS_MANIFEST",
        default_value = "spin.toml"
    )]
    pub path: PathBuf,
}

impl ManifestArg {
    pub fn load(&self) -> anyhow::Result<crate::manifest::AppManifest> {
        Ok(crate::manifest::load(&self.path)?)
    }
}

impl Cli {
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Up(args) => args.run().await,
            Command::Build(args) => args.run().await,
            Command::Serve(args) => args.run().await,
            Command::Tenant(command) => command.run().await,
            Command::Deploy(args) => args.run().await,
            Command::Versions(args) => args.run().await,
            Command::Rollback(args) => args.run().await,
            Command::Status(args) => args.run().await,
        }
    }
}
