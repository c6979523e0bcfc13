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
    /// Print the health of a running unidb (from its HTTP endpoint); exits 2 when
    /// critical, 1 when it cannot be reached.
    Health {
        /// Config file naming the HTTP endpoint (`[http] listen`).
        #[arg(long, short, default_value = "config/unidb.toml")]
        config: PathBuf,
        /// Base URL of the HTTP endpoint, instead of the config's.
        #[arg(long)]
        url: Option<String>,
        /// Print the JSON answer as it is.
        #[arg(long)]
        json: bool,
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
        Command::Health { config, url, json } => {
            let base = match url {
                Some(u) => u.trim_end_matches('/').to_string(),
                None => {
                    let c = Config::load(&config)?;
                    let addr = c.http.listen.with_context(|| {
                        format!(
                            "{} has no [http] listen address; pass --url",
                            config.display()
                        )
                    })?;
                    format!("http://{addr}")
                }
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            match runtime.block_on(health(&base, json)) {
                Ok(critical) => std::process::exit(if critical { 2 } else { 0 }),
                Err(e) => {
                    eprintln!("unidb health: {e:#}");
                    std::process::exit(1);
                }
            }
        }
        Command::Serve { config: path } => {
            let config = Config::load(&path)?;
            init_logging(config.log.format, &config.log.level);
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.enable_all();
            if config.server.workers > 0 {
                builder.worker_threads(config.server.workers);
            }
            let runtime = builder.build()?;
            // The accept loop runs on a worker, so a new connection's task starts
            // on that worker instead of being handed over from the main thread.
            runtime.block_on(async { tokio::spawn(serve(config, path)).await? })
        }
    }
}

/// Fetches `/health` and prints it; `Ok(true)` when critical.
async fn health(base: &str, raw: bool) -> anyhow::Result<bool> {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    let url = format!("{base}/health");
    let response = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let text = response.text().await?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{url} answered {status} with something other than JSON"))?;
    if raw {
        println!("{text}");
    } else {
        println!(
            "status: {}  score: {}",
            v["status"].as_str().unwrap_or("?"),
            v["score"]
        );
        for c in v["checks"].as_array().into_iter().flatten() {
            let ok = if c["ok"].as_bool() == Some(true) {
                "ok "
            } else {
                "BAD"
            };
            println!(
                "  [{ok}] {}: {}",
                c["name"].as_str().unwrap_or(""),
                c["detail"].as_str().unwrap_or("")
            );
        }
        for a in v["alerts"].as_array().into_iter().flatten() {
            println!(
                "  alert {} ({}, {}) on {}: {}",
                a["name"].as_str().unwrap_or(""),
                a["severity"].as_str().unwrap_or(""),
                a["state"].as_str().unwrap_or(""),
                a["database"].as_str().unwrap_or(""),
                a["summary"].as_str().unwrap_or("")
            );
        }
    }
    Ok(v["status"] == "critical")
}

async fn serve(config: Config, path: PathBuf) -> anyhow::Result<()> {
    let listen = config.server.listen;
    let state = unidb::server::ServerState::new(config)?;
    let _ = state.config_path.set(path);
    spawn_reload_on_sighup(state.clone());
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

/// SIGHUP re-reads the configuration, as `RELOAD` does.
fn spawn_reload_on_sighup(state: std::sync::Arc<unidb::server::ServerState>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install the SIGHUP handler");
            return;
        }
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading the configuration");
            if let Err(e) = state.reload() {
                tracing::error!(error = %e, "reload failed; the running configuration is unchanged");
            }
        }
    });
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
