//! The `unidb` command line: a thin layer over the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use unidb::config::{Config, LogFormat};

#[derive(Parser)]
#[command(
    name = "unidb",
    version,
    about = "PostgreSQL wire-protocol server over SQLite files and PostgreSQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve clients until SIGTERM or SIGINT.
    Serve {
        /// Config file.
        #[arg(long, short, default_value = "config/unidb.toml")]
        config: PathBuf,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file and print the effective configuration (secrets masked).
    Check {
        #[arg(default_value = "config/unidb.toml")]
        path: PathBuf,
    },
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Config {
            command: ConfigCommand::Check { path },
        } => {
            let config = Config::load(&path)?;
            print!("{}", config.to_masked_toml());
            eprintln!("{}: OK", path.display());
            Ok(())
        }
        Command::Serve { config } => {
            let config = Config::load(&config)?;
            init_logging(config.log.format, &config.log.level);
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.enable_all();
            if config.server.workers > 0 {
                builder.worker_threads(config.server.workers);
            }
            let runtime = builder.build()?;
            // The accept loop runs on a worker, so a new connection's task starts
            // on that worker instead of being handed over from the main thread.
            runtime.block_on(async { tokio::spawn(serve(config)).await? })
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.server.listen;
    let state = unidb::server::ServerState::new(config)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(
        address = %listener.local_addr()?,
        databases = %state.database_names(),
        version = unidb::VERSION,
        "unidb is accepting connections"
    );
    unidb::server::run(listener, state, shutdown_signal()).await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install the SIGTERM handler");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
