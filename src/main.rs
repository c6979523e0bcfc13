//! The `unidb` command line: a thin layer over the library.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use unidb::config::{Config, LogFormat};
use unidb::ops::migrate::{
    self, DownOptions, DownTo, MigrateError, Migrator, UpOptions, VersionStyle,
};

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
    /// Versioned schema migrations (PostgreSQL-dialect files applied to SQLite and
    /// PostgreSQL alike).
    Migrate {
        #[command(flatten)]
        target: TargetArgs,
        /// Migrations directory, instead of the database's `migrations` key.
        #[arg(long, global = true)]
        dir: Option<PathBuf>,
        /// How long to wait for another migration run to finish.
        #[arg(long, global = true, default_value = "60s", value_parser = humantime::parse_duration)]
        lock_wait: Duration,
        #[command(subcommand)]
        command: MigrateCommand,
    },
    /// Generate a deterministic synthetic validation run (projects, videos, ground
    /// truth, test sessions, detection events) into a database through unidb, and
    /// print per-class precision, recall and F1 computed there.
    Demo {
        #[command(flatten)]
        target: TargetArgs,
        /// Seed of the generator: the same seed gives the same data and tables.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Projects (at least 1).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        projects: u32,
        /// Videos per project (at least 1).
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        videos: u32,
        /// Frames per video (at least 1).
        #[arg(long, default_value_t = 150, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        frames: u32,
        /// Apply pending migrations first (the demo needs the platform's schema).
        #[arg(long)]
        migrate: bool,
    },
}

/// Which configured database a command works on.
#[derive(Args)]
struct TargetArgs {
    /// Config file.
    #[arg(long, short, global = true, default_value = "config/unidb.toml")]
    config: PathBuf,
    /// A `[databases.<name>]` of the config; may be left out when there is only one.
    #[arg(long, short, global = true)]
    database: Option<String>,
}

#[derive(Subcommand)]
enum MigrateCommand {
    /// Applied, pending, missing and changed migrations, as a table.
    Status,
    /// Apply pending migrations, oldest first.
    Up {
        /// Stop after this version.
        #[arg(long, value_name = "VERSION")]
        to: Option<String>,
        /// Print the SQL that would run on this backend (on SQLite after rewriting); change nothing.
        #[arg(long)]
        dry_run: bool,
        /// SQLite: when a migration fails, restore the file from the copy made before this run.
        #[arg(long)]
        restore_on_failure: bool,
    },
    /// Revert applied migrations, newest first (one unless told otherwise).
    Down {
        /// Revert this many.
        #[arg(long, conflicts_with = "to")]
        steps: Option<usize>,
        /// Revert every migration newer than this version (0: all).
        #[arg(long, value_name = "VERSION")]
        to: Option<String>,
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        restore_on_failure: bool,
    },
    /// Revert the newest migration and apply it again.
    Redo {
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        restore_on_failure: bool,
    },
    /// Write `<version>_<name>.up.sql` and `.down.sql`.
    Create {
        name: String,
        /// Number it after the last migration (0001, 0002, …).
        #[arg(long, conflicts_with = "timestamp")]
        sequential: bool,
        /// Number it with the UTC time (YYYYMMDDHHMMSS).
        #[arg(long)]
        timestamp: bool,
    },
    /// Check every file, the order and checksums, and dry-run each up/down pair on
    /// scratch databases.
    Validate,
    /// After an intentional edit: record the files' checksums in the ledger; also
    /// clears rows of missing files and of failed no-transaction migrations.
    Repair {
        #[arg(long)]
        dry_run: bool,
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

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
        Command::Migrate {
            target,
            dir,
            lock_wait,
            command,
        } => {
            let code = with_database(&target, |state, db| async move {
                migrate_command(state, &db, dir, lock_wait, command).await
            })?;
            std::process::exit(code)
        }
        Command::Demo {
            target,
            seed,
            projects,
            videos,
            frames,
            migrate: apply,
        } => {
            let opts = unidb::ops::demo::DemoOptions {
                seed,
                projects: projects as usize,
                videos_per_project: videos as usize,
                frames_per_video: frames as usize,
            };
            let code = with_database(&target, |state, db| async move {
                if apply {
                    let m = Migrator::new(state.clone(), &db, stdout_progress())?;
                    m.up(&UpOptions::default()).await?;
                }
                let report = unidb::ops::demo::run(&state, &db, &opts, &stdout_progress())
                    .await
                    .map_err(|e| anyhow::anyhow!(e))?;
                emit(&report.render());
                if !report.matches_expected {
                    anyhow::bail!(
                        "the database's metrics differ from the generator's own count (seed {seed})"
                    );
                }
                Ok(0)
            })?;
            std::process::exit(code)
        }
        Command::Serve { config: path } => {
            let config = Config::load(&path)?;
            init_logging(config.log.format, &config.log.level);
            let workers = config.server.worker_threads();
            let mut builder = if workers == 1 {
                tokio::runtime::Builder::new_current_thread()
            } else {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(workers);
                b
            };
            builder.enable_all();
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

/// Writes to stdout; a closed pipe (`unidb migrate status | head`) is not an error.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

fn stdout_progress() -> migrate::Progress {
    Arc::new(|line: &str| emit(&format!("{line}\n")))
}

/// Runs `f` on a server state holding the chosen database (and the PostgreSQL
/// database its validation uses), then closes the databases cleanly. Errors are
/// printed; the result is the exit code.
fn with_database<F, Fut>(target: &TargetArgs, f: F) -> anyhow::Result<i32>
where
    F: FnOnce(Arc<unidb::server::ServerState>, String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<i32>>,
{
    match open_and_run(target, f) {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(1)
        }
    }
}

fn open_and_run<F, Fut>(target: &TargetArgs, f: F) -> anyhow::Result<i32>
where
    F: FnOnce(Arc<unidb::server::ServerState>, String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<i32>>,
{
    let mut config = Config::load(&target.config)?;
    init_logging(config.log.format, "warn");
    let db = match &target.database {
        Some(d) => d.clone(),
        None if config.databases.len() == 1 => {
            config.databases.keys().next().cloned().unwrap_or_default()
        }
        None => anyhow::bail!(
            "{} configures several databases ({}); choose one with --database",
            target.config.display(),
            config
                .databases
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let Some(chosen) = config.databases.get(&db).cloned() else {
        anyhow::bail!(
            "{} has no database `{db}` (configured: {})",
            target.config.display(),
            config
                .databases
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let keep: Vec<String> = match &chosen {
        unidb::config::DatabaseConfig::Sqlite(s) => std::iter::once(db.clone())
            .chain(s.validate_postgres.clone())
            .collect(),
        unidb::config::DatabaseConfig::Postgres(_) => vec![db.clone()],
    };
    config.databases.retain(|k, _| keep.contains(k));
    config.observe.enabled = false;
    config.http.listen = None;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let state = unidb::server::ServerState::new(config)?;
        let r = f(state.clone(), db).await;
        for database in state.databases.values() {
            if let unidb::server::Database::Sqlite(s) = database {
                s.shutdown(Duration::from_secs(5)).await;
            }
        }
        match r {
            Ok(code) => Ok(code),
            Err(e) => {
                eprintln!("error: {e:#}");
                Ok(1)
            }
        }
    })
}

fn parse_version(flag: &str, v: &str) -> anyhow::Result<i64> {
    v.trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("{flag} {v}: a version is a number (YYYYMMDDHHMMSS or 0001)"))
}

async fn migrate_command(
    state: Arc<unidb::server::ServerState>,
    db: &str,
    dir: Option<PathBuf>,
    lock_wait: Duration,
    command: MigrateCommand,
) -> anyhow::Result<i32> {
    let mut m = Migrator::new(state, db, stdout_progress())?;
    if let Some(d) = dir {
        m = m.with_dir(&d);
    }
    m.lock_wait = lock_wait;
    let r: Result<i32, MigrateError> = match command {
        MigrateCommand::Status => m.status().await.map(|s| {
            emit(&s.render());
            0
        }),
        MigrateCommand::Up {
            to,
            dry_run,
            restore_on_failure,
        } => {
            let to = to.map(|v| parse_version("--to", &v)).transpose()?;
            m.up(&UpOptions {
                to,
                dry_run,
                restore_on_failure,
            })
            .await
            .map(|_| 0)
        }
        MigrateCommand::Down {
            steps,
            to,
            dry_run,
            restore_on_failure,
        } => {
            let to = match (steps, to) {
                (_, Some(v)) => DownTo::Version(parse_version("--to", &v)?),
                (Some(n), None) => DownTo::Steps(n),
                (None, None) => DownTo::Steps(1),
            };
            m.down(&DownOptions {
                to,
                dry_run,
                restore_on_failure,
            })
            .await
            .map(|_| 0)
        }
        MigrateCommand::Redo {
            dry_run,
            restore_on_failure,
        } => m.redo(dry_run, restore_on_failure).await.map(|_| 0),
        MigrateCommand::Create {
            name,
            sequential,
            timestamp,
        } => {
            let style = match (sequential, timestamp) {
                (true, _) => VersionStyle::Sequential,
                (_, true) => VersionStyle::Timestamp,
                _ => VersionStyle::Auto,
            };
            m.create(&name, style).map(|(up, down)| {
                emit(&format!(
                    "created {}\ncreated {}\n",
                    up.display(),
                    down.display()
                ));
                0
            })
        }
        MigrateCommand::Validate => m.validate().await.map(|r| {
            emit(&r.render());
            i32::from(!r.ok())
        }),
        MigrateCommand::Repair { dry_run } => m.repair(dry_run).await.map(|_| 0),
    };
    Ok(r?)
}

async fn serve(config: Config, path: PathBuf) -> anyhow::Result<()> {
    let listen = config.server.listen;
    let state = unidb::server::ServerState::new(config)?;
    let _ = state.config_path.set(path);
    // Pending migrations of databases with migrate_on_start, before any client.
    if let Err(e) = unidb::ops::migrate::on_start(&state).await {
        for database in state.databases.values() {
            if let unidb::server::Database::Sqlite(s) = database {
                s.shutdown(Duration::from_secs(5)).await;
            }
        }
        anyhow::bail!(
            "migrate_on_start: {e}
unidb did not start: the schema is not what the application expects"
        );
    }
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
