//! Configuration: one TOML file, overridable by `UNIDB_*` environment variables.
//!
//! Loading is three steps, each testable on its own: read the file, parse the text
//! (syntax and type errors carry file, line and column), then validate the result
//! (semantic errors name the key). Overrides use `__` between key segments:
//! `UNIDB_SERVER__LISTEN=127.0.0.1:7000`, `UNIDB_DATABASES__APP__READERS=8`,
//! `UNIDB_USERS__0__PASSWORD=secret`. A value is read as a TOML value when it parses
//! as one (`8`, `true`, `"x"`) and as a plain string otherwise.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Prefix of environment variables that override config keys.
pub const ENV_PREFIX: &str = "UNIDB_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax or a value of the wrong type, with its position.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// An environment override that does not fit the config.
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    /// A value that parses but makes no sense.
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: String,
        key: String,
        message: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The PostgreSQL-protocol listener.
    #[serde(default)]
    pub server: ServerConfig,
    /// Logging output.
    #[serde(default)]
    pub log: LogConfig,
    /// Users clients authenticate as.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Databases by the name clients put in their connection string.
    #[serde(default)]
    pub databases: BTreeMap<String, DatabaseConfig>,
    /// Statement timing and alert evaluation.
    #[serde(default)]
    pub observe: ObserveConfig,
    /// The HTTP endpoint (metrics, health, stats, alerts, dashboard).
    #[serde(default)]
    pub http: HttpConfig,
    /// Alert rules; a rule named like a built-in one replaces it.
    #[serde(default)]
    pub alerts: Vec<AlertRuleConfig>,
}

/// `[observe]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObserveConfig {
    /// Time every statement and keep per-fingerprint statistics.
    pub enabled: bool,
    /// Distinct statements kept; the least used fold into `<other>`.
    pub max_fingerprints: usize,
    /// How often alert rules are evaluated (and the history sampled).
    #[serde(with = "humantime_serde")]
    pub eval_interval: Duration,
    /// Alertmanager-compatible webhook receiving firing and resolved alerts.
    pub webhook_url: Option<String>,
    /// How long a resolved alert stays listed as resolved.
    #[serde(with = "humantime_serde")]
    pub resolved_retention: Duration,
}

impl Default for ObserveConfig {
    fn default() -> Self {
        ObserveConfig {
            enabled: true,
            max_fingerprints: 5000,
            eval_interval: Duration::from_secs(1),
            webhook_url: None,
            resolved_retention: Duration::from_secs(15 * 60),
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the HTTP endpoint; unset: no endpoint.
    pub listen: Option<SocketAddr>,
    /// Bearer token required by every endpoint except `/health`.
    pub token: Option<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: Some("127.0.0.1:9930".parse().expect("literal address")),
            token: None,
        }
    }
}

/// `[[alerts]]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRuleConfig {
    pub name: String,
    /// `aggregation(metric[window]) op threshold`, e.g. `avg(error_rate[5m]) > 0.1`.
    pub expr: String,
    /// How long the condition must hold before the alert fires.
    #[serde(rename = "for", default, with = "humantime_serde")]
    pub for_: Duration,
    #[serde(default = "default_severity")]
    pub severity: Severity,
    #[serde(default)]
    pub summary: String,
    /// `false` switches a built-in rule off.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

fn default_severity() -> Severity {
    Severity::Warning
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the PostgreSQL-protocol listener.
    pub listen: SocketAddr,
    /// Clients connected at once; the next one gets SQLSTATE 53300.
    pub max_clients: usize,
    /// A client idle (outside a transaction) for this long is disconnected; 0 disables.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Authentication method of this listener.
    pub auth: AuthMethod,
    /// Largest protocol message accepted from a client, in bytes.
    pub max_message_size: usize,
    /// On SIGTERM/SIGINT, how long running transactions may take to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// TLS certificate and key; without them SSLRequest is answered `N`.
    pub tls: Option<TlsConfig>,
    /// Threads running client sessions; 0: half the CPUs, at least one (see
    /// [`ServerConfig::worker_threads`]).
    pub workers: usize,
    /// Users allowed on the admin console (the virtual database `unidb`).
    pub admin_users: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:6432".parse().expect("literal address"),
            max_clients: 500,
            idle_timeout: Duration::ZERO,
            auth: AuthMethod::ScramSha256,
            max_message_size: 64 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(30),
            tls: None,
            workers: 0,
            admin_users: Vec::new(),
        }
    }
}

impl ServerConfig {
    /// The async worker threads to run: `workers`, or when 0 half the CPUs (at
    /// least one). A relay's work is mostly system calls, and the proxy usually
    /// shares the machine with its clients or its database: one worker per CPU
    /// measured slower than half as many (more wake-ups between threads, each a
    /// context switch), on two cores about 15% more CPU per transaction.
    pub fn worker_threads(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
    }
}

/// `[server.tls]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain.
    pub cert: PathBuf,
    /// PEM file with the private key.
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum AuthMethod {
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "md5")]
    Md5,
    #[serde(rename = "trust")]
    Trust,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `plain` or `json`.
    pub format: LogFormat,
    /// Default filter when `RUST_LOG` is not set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Plain,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Plain,
    Json,
}

/// `[[users]]`: a password (hashed to a SCRAM verifier at load) or a stored verifier.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// Plain password; allows every auth method.
    pub password: Option<String>,
    /// A stored `SCRAM-SHA-256$iter:salt$stored:server` verifier; SCRAM only.
    pub scram: Option<String>,
}

/// `[databases.<name>]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum DatabaseConfig {
    Sqlite(SqliteConfig),
    Postgres(PostgresConfig),
}

impl DatabaseConfig {
    /// The directory of this database's migration files.
    pub fn migrations(&self) -> &Path {
        match self {
            DatabaseConfig::Sqlite(s) => &s.migrations,
            DatabaseConfig::Postgres(p) => &p.migrations,
        }
    }

    /// Whether `serve` applies pending migrations before accepting clients.
    pub fn migrate_on_start(&self) -> bool {
        match self {
            DatabaseConfig::Sqlite(s) => s.migrate_on_start,
            DatabaseConfig::Postgres(p) => p.migrate_on_start,
        }
    }
}

/// A database served by relaying to an upstream PostgreSQL through a pool of
/// server connections.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/dbname?sslmode=require`; the separate
    /// keys below override its parts.
    pub url: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub dbname: Option<String>,
    /// `transaction` (a server per transaction) or `session` (a server per client).
    #[serde(default)]
    pub pool_mode: PoolMode,
    /// Server connections at most.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Server connections kept open while idle.
    #[serde(default)]
    pub min_idle: usize,
    /// How long a client waits for a server connection before SQLSTATE 53300.
    #[serde(default = "default_max_client_wait", with = "humantime_serde")]
    pub max_client_wait: Duration,
    /// An idle server connection above `min_idle` is closed after this long.
    #[serde(default = "default_server_idle_timeout", with = "humantime_serde")]
    pub server_idle_timeout: Duration,
    /// A server connection is closed (when idle) after this long; 0 disables.
    #[serde(default = "default_server_lifetime", with = "humantime_serde")]
    pub server_lifetime: Duration,
    /// Run on a server before another client gets it. Default: `DISCARD ALL` in
    /// session mode, nothing in transaction mode (state is tracked there instead).
    pub server_reset_query: Option<String>,
    /// Timeout of one connection attempt to the upstream, TLS and auth included.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// `disable`, `prefer` (default), `require`, `verify-ca` or `verify-full`.
    pub sslmode: Option<SslMode>,
    /// PEM file of the CA that signed the upstream's certificate (verify modes).
    pub sslrootcert: Option<PathBuf>,
    /// Times a statement outside a transaction is retried after a serialization
    /// failure, a deadlock, or a server connection found dead before it answered.
    #[serde(default = "default_retry_attempts")]
    pub retry_attempts: u32,
    /// In transaction mode, what a client's session-level `SET` gets: `track` replays
    /// it on every server the client uses; `refuse` answers SQLSTATE 0A000.
    #[serde(default)]
    pub session_set: SessionSet,
    /// Named statements prepared on one server connection before it is recycled.
    #[serde(default = "default_max_prepared")]
    pub max_prepared_statements: usize,
    /// Database size (`pg_database_size`) above 90% of which the StorageNearLimit
    /// alert fires: bytes, or a string such as "20GB" or "512MiB".
    #[serde(default, with = "byte_size")]
    pub storage_limit: Option<u64>,
    /// Directory of this database's migration files (relative to the working
    /// directory).
    #[serde(default = "default_migrations")]
    pub migrations: PathBuf,
    /// Apply pending migrations when `serve` starts, before accepting clients.
    #[serde(default)]
    pub migrate_on_start: bool,
    /// `lock_timeout` of each migration's transaction: a DDL statement that waits
    /// longer for its lock (behind a long transaction) fails instead of stalling the
    /// statements queued behind it, and the migration is retried.
    #[serde(default = "default_migrate_lock_timeout", with = "humantime_serde")]
    pub migrate_lock_timeout: Duration,
    /// Retries of a migration that failed on `migrate_lock_timeout`.
    #[serde(default = "default_migrate_lock_retries")]
    pub migrate_lock_retries: u32,
}

fn default_migrations() -> PathBuf {
    PathBuf::from("migrations")
}
fn default_migrate_lock_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_migrate_lock_retries() -> u32 {
    5
}
fn default_migrate_backup_keep() -> usize {
    5
}

fn default_pool_size() -> usize {
    20
}
fn default_max_client_wait() -> Duration {
    Duration::from_secs(30)
}
fn default_server_idle_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_server_lifetime() -> Duration {
    Duration::from_secs(3600)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_retry_attempts() -> u32 {
    3
}
fn default_max_prepared() -> usize {
    1000
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    #[default]
    Transaction,
    Session,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionSet {
    #[default]
    Track,
    Refuse,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// Where and how to reach an upstream PostgreSQL: `url` and the separate keys merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
}

impl Upstream {
    /// `host:port`, for messages.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl PostgresConfig {
    /// Merges `url` with the separate keys.
    pub fn upstream(&self) -> Result<Upstream, String> {
        let mut up = match &self.url {
            Some(url) => parse_postgres_url(url)?,
            None => Upstream {
                host: String::new(),
                port: 5432,
                user: String::new(),
                password: None,
                dbname: String::new(),
                sslmode: SslMode::Prefer,
                sslrootcert: None,
            },
        };
        if let Some(h) = &self.host {
            up.host = h.clone();
        }
        if let Some(p) = self.port {
            up.port = p;
        }
        if let Some(u) = &self.user {
            up.user = u.clone();
        }
        if let Some(p) = &self.password {
            up.password = Some(p.clone());
        }
        if let Some(d) = &self.dbname {
            up.dbname = d.clone();
        }
        if let Some(m) = self.sslmode {
            up.sslmode = m;
        }
        if let Some(c) = &self.sslrootcert {
            up.sslrootcert = Some(c.clone());
        }
        if up.host.is_empty() {
            return Err("no upstream host: set `url` or `host`".into());
        }
        if up.user.is_empty() {
            return Err("no upstream user: set it in `url` or `user`".into());
        }
        if up.dbname.is_empty() {
            up.dbname = up.user.clone();
        }
        if matches!(up.sslmode, SslMode::VerifyCa | SslMode::VerifyFull) && up.sslrootcert.is_none()
        {
            return Err("sslmode verify-ca/verify-full needs `sslrootcert` (a PEM CA file)".into());
        }
        Ok(up)
    }
}

/// Parses `postgres[ql]://[user[:password]@]host[:port][/dbname][?key=value&...]`.
fn parse_postgres_url(url: &str) -> Result<Upstream, String> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or("url must start with postgres:// or postgresql://")?;
    let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = main.split_once('/').unwrap_or((main, ""));
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((u, p)) => (percent_decode(u)?, Some(percent_decode(p)?)),
            None => (percent_decode(u)?, None),
        },
        None => (String::new(), None),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or("unterminated [ in url host")?;
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hostport.to_string(), None),
        }
    };
    let port = match port {
        Some(p) => p
            .parse()
            .map_err(|_| format!("invalid port `{p}` in url"))?,
        None => 5432,
    };
    let mut up = Upstream {
        host: percent_decode(&host)?,
        port,
        user,
        password,
        dbname: percent_decode(path)?,
        sslmode: SslMode::Prefer,
        sslrootcert: None,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v)?;
        match k {
            "sslmode" => {
                up.sslmode = match v.as_str() {
                    "disable" => SslMode::Disable,
                    "prefer" | "allow" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => return Err(format!("unknown sslmode `{other}` in url")),
                }
            }
            "sslrootcert" => up.sslrootcert = Some(PathBuf::from(v)),
            "user" => up.user = v,
            "password" => up.password = Some(v),
            "dbname" => up.dbname = v,
            "host" => up.host = v,
            "port" => {
                up.port = v
                    .parse()
                    .map_err(|_| format!("invalid port `{v}` in url"))?
            }
            other => return Err(format!("url parameter `{other}` is not supported")),
        }
    }
    Ok(up)
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("invalid percent-encoding in `{s}`"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{s}` is not UTF-8 after percent-decoding"))
}

/// A database served from a SQLite file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteConfig {
    /// Path of the database file; relative paths are relative to the working directory.
    pub path: PathBuf,
    /// Reader connections (and threads) serving reads outside transactions.
    /// Defaults to the number of CPUs: more readers than cores mostly adds
    /// context switches for short queries; more help when reads are long.
    #[serde(default = "default_readers")]
    pub readers: usize,
    /// `PRAGMA synchronous`: `normal` survives a process crash, `full` also a power loss.
    #[serde(default)]
    pub synchronous: Synchronous,
    /// How long a statement waits for a lock held by another process, and a client
    /// waits for the writer held by another client's transaction.
    #[serde(default = "default_busy_timeout", with = "humantime_serde")]
    pub busy_timeout: Duration,
    /// `PRAGMA cache_size` (negative: KiB).
    #[serde(default = "default_cache_size")]
    pub cache_size: i64,
    /// `PRAGMA mmap_size` in bytes.
    #[serde(default = "default_mmap_size")]
    pub mmap_size: i64,
    /// Distinct statement texts whose rewritten form is cached.
    #[serde(default = "default_statement_cache")]
    pub statement_cache: usize,
    /// Retries of a statement outside a transaction that found the file locked by
    /// another process past `busy_timeout` (`SQLITE_BUSY`).
    #[serde(default = "default_retry_attempts")]
    pub retry_attempts: u32,
    /// File size (database + WAL) above 90% of which the StorageNearLimit alert
    /// fires: bytes, or a string such as "2GB" or "512MiB".
    #[serde(default, with = "byte_size")]
    pub storage_limit: Option<u64>,
    /// Directory of this database's migration files (relative to the working
    /// directory).
    #[serde(default = "default_migrations")]
    pub migrations: PathBuf,
    /// Apply pending migrations when `serve` starts, before accepting clients.
    #[serde(default)]
    pub migrate_on_start: bool,
    /// Before migrations change the file, copy it next to itself
    /// (`<file>.<UTC time>.pre-migrate`) and verify the copy.
    #[serde(default = "default_true")]
    pub migrate_backup: bool,
    /// Pre-migration copies kept per database file; older ones are deleted.
    #[serde(default = "default_migrate_backup_keep")]
    pub migrate_backup_keep: usize,
    /// A `backend = "postgres"` database of this config on which `migrate validate`
    /// also dry-runs the migrations, in a scratch schema it drops afterwards.
    pub validate_postgres: Option<String>,
}

fn default_readers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}
fn default_busy_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_cache_size() -> i64 {
    -64 * 1024
}
fn default_mmap_size() -> i64 {
    256 * 1024 * 1024
}
fn default_statement_cache() -> usize {
    10_000
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    Off,
    #[default]
    Normal,
    Full,
    Extra,
}

impl Synchronous {
    pub fn pragma_value(self) -> &'static str {
        match self {
            Synchronous::Off => "OFF",
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
            Synchronous::Extra => "EXTRA",
        }
    }
}

impl Config {
    /// Reads, parses and validates `path`, applying `UNIDB_*` overrides from the process
    /// environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        Config::parse(&text, &path.display().to_string(), &env)
    }

    /// Parses config text named `origin` (for messages) with the given overrides,
    /// then validates it.
    pub fn parse(
        text: &str,
        origin: &str,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        // First pass on the text itself so that errors point at a line.
        let config: Config = toml::from_str(text).map_err(|e| parse_error(origin, text, &e))?;
        let config = if env.is_empty() {
            config
        } else {
            let mut table: toml::Table =
                toml::from_str(text).map_err(|e| parse_error(origin, text, &e))?;
            for (var, value) in env {
                apply_override(&mut table, var, value)?;
            }
            let vars: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Env {
                    var: vars.join(", "),
                    message: e.message().to_string(),
                })?
        };
        config.validate(origin)?;
        Ok(config)
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: String, message: &str| ConfigError::Invalid {
            path: origin.to_string(),
            key,
            message: message.to_string(),
        };
        if self.server.max_clients == 0 {
            return Err(invalid("server.max_clients".into(), "must be at least 1"));
        }
        if self.server.max_message_size < 1024 {
            return Err(invalid(
                "server.max_message_size".into(),
                "must be at least 1024 bytes",
            ));
        }
        if self.databases.is_empty() {
            return Err(invalid(
                "databases".into(),
                "no database configured; add a [databases.<name>] table",
            ));
        }
        for (name, db) in &self.databases {
            if name.is_empty() || name == "unidb" {
                return Err(invalid(
                    format!("databases.{name}"),
                    "database name must be non-empty and not the reserved name `unidb`",
                ));
            }
            match db {
                DatabaseConfig::Postgres(p) => {
                    p.upstream()
                        .map_err(|m| invalid(format!("databases.{name}"), &m))?;
                    if p.pool_size == 0 {
                        return Err(invalid(
                            format!("databases.{name}.pool_size"),
                            "must be at least 1",
                        ));
                    }
                    if p.min_idle > p.pool_size {
                        return Err(invalid(
                            format!("databases.{name}.min_idle"),
                            "must not exceed pool_size",
                        ));
                    }
                }
                DatabaseConfig::Sqlite(s) => {
                    if s.path.as_os_str().is_empty() {
                        return Err(invalid(
                            format!("databases.{name}.path"),
                            "must not be empty",
                        ));
                    }
                    if s.readers == 0 || s.readers > 256 {
                        return Err(invalid(
                            format!("databases.{name}.readers"),
                            "must be between 1 and 256",
                        ));
                    }
                    if s.statement_cache == 0 {
                        return Err(invalid(
                            format!("databases.{name}.statement_cache"),
                            "must be at least 1",
                        ));
                    }
                    if s.migrate_backup_keep == 0 {
                        return Err(invalid(
                            format!("databases.{name}.migrate_backup_keep"),
                            "must be at least 1",
                        ));
                    }
                    if let Some(other) = &s.validate_postgres {
                        if !matches!(self.databases.get(other), Some(DatabaseConfig::Postgres(_))) {
                            return Err(invalid(
                                format!("databases.{name}.validate_postgres"),
                                &format!("`{other}` is not a backend = \"postgres\" database of this config"),
                            ));
                        }
                    }
                }
            }
        }
        if self.observe.max_fingerprints == 0 {
            return Err(invalid(
                "observe.max_fingerprints".into(),
                "must be at least 1",
            ));
        }
        if self.observe.eval_interval < Duration::from_millis(10) {
            return Err(invalid(
                "observe.eval_interval".into(),
                "must be at least 10ms",
            ));
        }
        if let Some(url) = &self.observe.webhook_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    "observe.webhook_url".into(),
                    "must be an http:// or https:// URL",
                ));
            }
        }
        for (i, rule) in self.alerts.iter().enumerate() {
            if rule.name.is_empty() {
                return Err(invalid(format!("alerts[{i}].name"), "must not be empty"));
            }
            if rule.enabled {
                crate::observe::alerts::Expr::parse(&rule.expr)
                    .map_err(|m| invalid(format!("alerts[{i}].expr"), &m))?;
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, user) in self.users.iter().enumerate() {
            let key = format!("users[{i}]");
            if user.name.is_empty() {
                return Err(invalid(key, "name must not be empty"));
            }
            if !seen.insert(user.name.as_str()) {
                return Err(invalid(key, "duplicate user name"));
            }
            match (&user.password, &user.scram) {
                (None, None) if self.server.auth != AuthMethod::Trust => {
                    return Err(invalid(key, "needs `password` or `scram`"));
                }
                (Some(_), Some(_)) => {
                    return Err(invalid(key, "give either `password` or `scram`, not both"));
                }
                (None, Some(_)) if self.server.auth == AuthMethod::Md5 => {
                    return Err(invalid(
                        key,
                        "md5 authentication needs a plain `password`; a SCRAM verifier cannot answer md5",
                    ));
                }
                (None, Some(v)) if crate::frontend::auth::ScramVerifier::parse(v).is_none() => {
                    return Err(invalid(
                        key,
                        "`scram` must look like SCRAM-SHA-256$<iterations>:<salt>$<storedkey>:<serverkey>",
                    ));
                }
                _ => {}
            }
        }
        if self.users.is_empty() && self.server.auth != AuthMethod::Trust {
            return Err(invalid(
                "users".into(),
                "no user configured; add a [[users]] entry or use server.auth = \"trust\"",
            ));
        }
        Ok(())
    }

    /// The effective configuration as TOML with secrets replaced by `********`.
    pub fn to_masked_toml(&self) -> String {
        let mut masked = self.clone();
        for user in &mut masked.users {
            if user.password.is_some() {
                user.password = Some("********".into());
            }
            if user.scram.is_some() {
                user.scram = Some("********".into());
            }
        }
        for db in masked.databases.values_mut() {
            if let DatabaseConfig::Postgres(p) = db {
                if p.password.is_some() {
                    p.password = Some("********".into());
                }
                if let Some(url) = &mut p.url {
                    *url = mask_url_password(url);
                }
            }
        }
        if masked.http.token.is_some() {
            masked.http.token = Some("********".into());
        }
        if let Some(url) = &mut masked.observe.webhook_url {
            *url = mask_url_password(url);
        }
        toml::to_string_pretty(&masked).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// Sizes as a number of bytes or a string with a unit: `"10GB"`, `"512 MiB"`, `"4096"`.
mod byte_size {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Text(String),
    }

    pub fn parse(text: &str) -> Result<u64, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("`{text}` is not a size such as 512MB or 2GiB"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            "kib" | "k" => 1 << 10,
            "mib" | "m" => 1 << 20,
            "gib" | "g" => 1 << 30,
            "tib" | "t" => 1 << 40,
            other => return Err(format!("unknown size unit `{other}` in `{text}`: use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB")),
        };
        Ok((n * mult as f64) as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Option::<Raw>::deserialize(d)? {
            None => Ok(None),
            Some(Raw::Int(n)) => Ok(Some(n)),
            Some(Raw::Text(t)) => parse(&t).map(Some).map_err(serde::de::Error::custom),
        }
    }

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(n) => s.serialize_u64(*n),
            None => s.serialize_none(),
        }
    }
}

/// `postgres://user:secret@host` → `postgres://user:********@host`.
fn mask_url_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let authority_end = url[scheme_end..]
        .find(['/', '?'])
        .map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    let mut out = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{}{user}:********@{host}", &url[..scheme_end]),
            None => url[..authority_end].to_string(),
        },
        None => url[..authority_end].to_string(),
    };
    let rest = &url[authority_end..];
    match rest.find("password=") {
        Some(i) => {
            let end = rest[i..].find('&').map_or(rest.len(), |j| i + j);
            out.push_str(&rest[..i]);
            out.push_str("password=********");
            out.push_str(&rest[end..]);
        }
        None => out.push_str(rest),
    }
    out
}

fn parse_error(origin: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let (line, column) = match e.span() {
        Some(span) => line_col(text, span.start),
        None => (0, 0),
    };
    ConfigError::Parse {
        path: origin.to_string(),
        line,
        column,
        message: e.message().to_string(),
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, column)
}

fn apply_override(table: &mut toml::Table, var: &str, raw: &str) -> Result<(), ConfigError> {
    let err = |message: String| ConfigError::Env {
        var: var.to_string(),
        message,
    };
    let path: Vec<String> = var[ENV_PREFIX.len()..]
        .split("__")
        .map(|s| s.to_ascii_lowercase())
        .collect();
    if path.iter().any(|s| s.is_empty()) {
        return Err(err("empty key segment; separate keys with `__`".into()));
    }
    let value = parse_env_value(raw);
    let mut current = table;
    for (i, segment) in path.iter().enumerate() {
        let last = i + 1 == path.len();
        if last {
            current.insert(segment.clone(), value);
            return Ok(());
        }
        let entry = current
            .entry(segment.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = match entry {
            toml::Value::Table(t) => t,
            toml::Value::Array(items) => {
                // `USERS__0__PASSWORD`: the next segment is an index into the array.
                let index: usize = path[i + 1].parse().map_err(|_| {
                    err(format!("`{segment}` is a list; expected an index after it"))
                })?;
                if i + 2 == path.len() {
                    return Err(err(format!("cannot replace a whole entry of `{segment}`")));
                }
                let item = items
                    .get_mut(index)
                    .ok_or_else(|| err(format!("`{segment}` has no entry {index}")))?;
                match item {
                    toml::Value::Table(t) => {
                        // Skip the index segment by recursing on the remainder.
                        let rest = path[i + 2..].join("__");
                        return apply_override(t, &format!("{ENV_PREFIX}{rest}"), raw).map_err(
                            |e| match e {
                                ConfigError::Env { message, .. } => err(message),
                                other => other,
                            },
                        );
                    }
                    _ => return Err(err(format!("`{segment}[{index}]` is not a table"))),
                }
            }
            _ => return Err(err(format!("`{segment}` is not a table"))),
        };
    }
    Ok(())
}

fn parse_env_value(raw: &str) -> toml::Value {
    #[derive(Deserialize)]
    struct Wrapper {
        v: toml::Value,
    }
    match toml::from_str::<Wrapper>(&format!("v = {raw}")) {
        Ok(w) => w.v,
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[[users]]
name = "app"
password = "app"

[databases.app]
backend = "sqlite"
path = "data/app.db"
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(MINIMAL, "t.toml", &[]).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:6432");
        assert_eq!(c.server.auth, AuthMethod::ScramSha256);
        let DatabaseConfig::Sqlite(db) = &c.databases["app"] else {
            panic!("sqlite expected")
        };
        assert_eq!(db.readers, default_readers());
        assert_eq!(db.synchronous, Synchronous::Normal);
        assert_eq!(db.busy_timeout, Duration::from_secs(5));
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let text = "[server]\nlisten = \"127.0.0.1:1\"\nmax_clients = \"many\"\n";
        let err = Config::parse(text, "bad.toml", &[]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("bad.toml:3:"), "{msg}");
    }

    #[test]
    fn unknown_key_is_rejected_with_line() {
        let text = format!("{MINIMAL}\n[server]\nlisten_port = 5\n");
        let msg = Config::parse(&text, "x.toml", &[]).unwrap_err().to_string();
        assert!(
            msg.contains("x.toml:") && msg.contains("listen_port"),
            "{msg}"
        );
    }

    #[test]
    fn env_overrides_nested_keys_and_list_entries() {
        let env = vec![
            (
                "UNIDB_SERVER__LISTEN".to_string(),
                "127.0.0.1:7000".to_string(),
            ),
            ("UNIDB_DATABASES__APP__READERS".to_string(), "8".to_string()),
            ("UNIDB_USERS__0__PASSWORD".to_string(), "s3cret".to_string()),
        ];
        let c = Config::parse(MINIMAL, "t.toml", &env).unwrap();
        assert_eq!(c.server.listen.port(), 7000);
        let DatabaseConfig::Sqlite(db) = &c.databases["app"] else {
            panic!("sqlite expected")
        };
        assert_eq!(db.readers, 8);
        assert_eq!(c.users[0].password.as_deref(), Some("s3cret"));
    }

    #[test]
    fn env_override_of_wrong_type_names_the_variable() {
        let env = vec![("UNIDB_SERVER__MAX_CLIENTS".to_string(), "lots".to_string())];
        let msg = Config::parse(MINIMAL, "t.toml", &env)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("UNIDB_SERVER__MAX_CLIENTS"), "{msg}");
    }

    #[test]
    fn semantic_errors_name_the_key() {
        let text = MINIMAL.replace("path = \"data/app.db\"", "path = \"x\"\nreaders = 0");
        let msg = Config::parse(&text, "t.toml", &[]).unwrap_err().to_string();
        assert!(msg.contains("databases.app.readers"), "{msg}");
    }

    #[test]
    fn md5_needs_a_plain_password() {
        let text = r#"
[server]
auth = "md5"
[[users]]
name = "a"
scram = "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy"
[databases.app]
backend = "sqlite"
path = "x.db"
"#;
        let msg = Config::parse(text, "t.toml", &[]).unwrap_err().to_string();
        assert!(msg.contains("md5"), "{msg}");
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(byte_size::parse("4096"), Ok(4096));
        assert_eq!(byte_size::parse("2GB"), Ok(2_000_000_000));
        assert_eq!(byte_size::parse("512 MiB"), Ok(512 << 20));
        assert!(byte_size::parse("12 parsecs")
            .unwrap_err()
            .contains("unknown size unit"));
        assert!(byte_size::parse("lots").is_err());
    }

    #[test]
    fn masked_output_hides_passwords() {
        let c = Config::parse(MINIMAL, "t.toml", &[]).unwrap();
        let out = c.to_masked_toml();
        assert!(out.contains("********"));
        assert!(!out.contains("password = \"app\""));
    }

    #[test]
    fn postgres_url_and_keys_merge() {
        let text = r#"
[[users]]
name = "app"
password = "app"
[databases.prod]
backend = "postgres"
url = "postgres://svc:p%40ss@db.internal:6543/shop?sslmode=require"
pool_size = 5
dbname = "shop2"
"#;
        let c = Config::parse(text, "t.toml", &[]).unwrap();
        let DatabaseConfig::Postgres(p) = &c.databases["prod"] else {
            panic!("postgres expected")
        };
        let up = p.upstream().unwrap();
        assert_eq!(up.host, "db.internal");
        assert_eq!(up.port, 6543);
        assert_eq!(up.user, "svc");
        assert_eq!(up.password.as_deref(), Some("p@ss"));
        assert_eq!(up.dbname, "shop2");
        assert_eq!(up.sslmode, SslMode::Require);
        assert_eq!(p.pool_mode, PoolMode::Transaction);
        assert_eq!(p.pool_size, 5);
        let masked = c.to_masked_toml();
        assert!(masked.contains("svc:********@db.internal"), "{masked}");
        assert!(!masked.contains("p%40ss"), "{masked}");
    }

    #[test]
    fn postgres_needs_a_host_and_verify_needs_a_ca() {
        let base =
            "[[users]]\nname = \"a\"\npassword = \"a\"\n[databases.p]\nbackend = \"postgres\"\n";
        let msg = Config::parse(&format!("{base}user = \"x\"\n"), "t.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("databases.p") && msg.contains("host"), "{msg}");
        let msg = Config::parse(
            &format!("{base}url = \"postgres://u@h/d?sslmode=verify-full\"\n"),
            "t.toml",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("sslrootcert"), "{msg}");
    }
}
