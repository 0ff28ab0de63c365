//! The `do-scaler` binary: parses the command line, sets up logging, and calls the library.

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};
use do_scaler::commands;
use do_scaler::config::{Overrides, credentials, load::DEFAULT_CONFIG_PATH};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Keeps pools of DigitalOcean droplets at the right size.
#[derive(Parser)]
#[command(name = "do-scaler", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

/// Options shared by every subcommand that reads the configuration.
#[derive(Args)]
struct ConfigArgs {
    /// The base configuration file.
    #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Replaces the base file's api_url (for example a `do-scaler sim`).
    #[arg(long, env = "DIGITALOCEAN_API_URL")]
    api_url: Option<String>,
    /// Replaces the base file's state database path.
    #[arg(long, env = "DO_SCALER_STATE")]
    state: Option<PathBuf>,
    /// Replaces the status API's listen address.
    #[arg(long)]
    listen: Option<SocketAddr>,
}

impl ConfigArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            api_url: self.api_url.clone(),
            state: self.state.clone(),
            listen: self.listen,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration without touching the network.
    Check {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DO_SCALER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Check { config } => {
            let output = commands::check::check(
                &config.config,
                &config.overrides(),
                &credentials::process_env,
            );
            print!("{}", output.stdout);
            eprint!("{}", output.stderr);
            Ok(ExitCode::from(output.exit_code as u8))
        }
    }
}
