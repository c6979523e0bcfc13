//! The admin console: the virtual database `unidb`, for users listed in
//! `[server] admin_users`. PgBouncer's commands with PgBouncer's column names
//! where they exist (`SHOW POOLS`, `STATS`, `CLIENTS`, `SERVERS`, `DATABASES`,
//! `CONFIG`), unidb's own (`SHOW QUERIES`, `ALERTS`, `HEALTH`), and `RELOAD`,
//! `PAUSE [db]`, `RESUME [db]`, `RESET STATS`, and `MIGRATE …` (see `migrate`).
//! Simple query protocol only, as PgBouncer's console.

mod migrate;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::error::{code, PgError};
use crate::observe::rfc3339;
use crate::protocol::write::{self as msg, DataRowWriter};
use crate::protocol::{Column, Frontend, FrontendReader, TransactionStatus};
use crate::server::{Database, ServerState};
use crate::types::PgType;

/// The name of the virtual database.
pub const DATABASE: &str = "unidb";

/// A result set: column names and types, rows of optional text.
struct Table {
    columns: Vec<(&'static str, PgType)>,
    rows: Vec<Vec<Option<String>>>,
}

impl Table {
    fn new(columns: &[(&'static str, PgType)]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    fn push(&mut self, row: Vec<Option<String>>) {
        debug_assert_eq!(row.len(), self.columns.len());
        self.rows.push(row);
    }

    fn write(&self, out: &mut BytesMut, tag: &str) {
        let cols: Vec<Column> = self
            .columns
            .iter()
            .map(|(n, t)| Column {
                name: (*n).to_string(),
                ty: *t,
            })
            .collect();
        msg::row_description(out, &cols, &[]);
        for row in &self.rows {
            let mut w = DataRowWriter::begin(out, row.len() as i16);
            for v in row {
                match v {
                    Some(s) => {
                        let _ = w.field(|b| {
                            b.extend_from_slice(s.as_bytes());
                            Ok::<(), ()>(())
                        });
                    }
                    None => w.null(),
                }
            }
            w.finish();
        }
        msg::command_complete(out, tag);
    }
}

const T: PgType = PgType::Text;
const I: PgType = PgType::Int8;
const F: PgType = PgType::Float8;

fn s(v: impl ToString) -> Option<String> {
    Some(v.to_string())
}

/// Serves the admin console until the client leaves.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send>(
    mut stream: S,
    mut reader: FrontendReader,
    mut out: BytesMut,
    state: Arc<ServerState>,
    pid: i32,
    secret: i32,
) {
    for (k, v) in [
        ("server_version", crate::server_version()),
        ("server_encoding", "UTF8".into()),
        ("client_encoding", "UTF8".into()),
        ("DateStyle", "ISO, MDY".into()),
        ("integer_datetimes", "on".into()),
        ("standard_conforming_strings", "on".into()),
        ("application_name", String::new()),
    ] {
        msg::parameter_status(&mut out, k, &v);
    }
    msg::backend_key_data(&mut out, pid, secret);
    msg::ready(&mut out, TransactionStatus::Idle);
    loop {
        if stream.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
        let message = match reader.next(&mut stream).await {
            Ok(m) => m,
            Err(_) => return,
        };
        match message {
            Frontend::Query(q) => {
                let mut shutdown = state.shutdown.clone();
                let r = tokio::select! {
                    r = run(&state, &q.query, pid, &mut out) => r,
                    _ = shutdown.wait_for(|s| *s) => Err(PgError::fatal(code::ADMIN_SHUTDOWN, "unidb is shutting down")),
                };
                if let Err(e) = r {
                    msg::error(&mut out, &e);
                    if e.severity == crate::error::Severity::Fatal {
                        let _ = stream.write_all(&out).await;
                        return;
                    }
                }
                msg::ready(&mut out, TransactionStatus::Idle);
            }
            Frontend::Terminate(_) => return,
            Frontend::Sync(_) => msg::ready(&mut out, TransactionStatus::Idle),
            Frontend::Parse(_)
            | Frontend::Bind(_)
            | Frontend::Describe(_)
            | Frontend::Execute(_)
            | Frontend::Close(_)
            | Frontend::Flush(_) => {
                // Answered once per batch: the error, then the Sync's ReadyForQuery.
                if !out.is_empty() {
                    continue;
                }
                msg::error(
                    &mut out,
                    &PgError::new(
                        code::FEATURE_NOT_SUPPORTED,
                        "the admin console accepts the simple query protocol only",
                    )
                    .with_hint("use psql, or a driver's simple-query mode"),
                );
                // Skip to Sync.
                loop {
                    match reader.next(&mut stream).await {
                        Ok(Frontend::Sync(_)) => break,
                        Ok(Frontend::Terminate(_)) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
                msg::ready(&mut out, TransactionStatus::Idle);
            }
            _ => {}
        }
    }
}

/// Runs one console command line (several commands separated by `;` are run
/// in order).
async fn run(
    state: &Arc<ServerState>,
    text: &str,
    pid: i32,
    out: &mut BytesMut,
) -> Result<(), PgError> {
    let commands: Vec<&str> = text
        .split(';')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    if commands.is_empty() {
        msg::empty_query(out);
        return Ok(());
    }
    for c in commands {
        command(state, c, pid, out).await?;
    }
    Ok(())
}

async fn command(
    state: &Arc<ServerState>,
    text: &str,
    pid: i32,
    out: &mut BytesMut,
) -> Result<(), PgError> {
    let words: Vec<String> = text
        .split_whitespace()
        .map(str::to_ascii_uppercase)
        .collect();
    let arg = text.split_whitespace().nth(1).map(|a| a.trim_matches('"'));
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    match w.as_slice() {
        ["SHOW", "POOLS"] => show_pools(state).write(out, "SHOW"),
        ["SHOW", "STATS"] => show_stats(state).write(out, "SHOW"),
        ["SHOW", "CLIENTS"] => show_clients(state).write(out, "SHOW"),
        ["SHOW", "SERVERS"] => show_servers(state).write(out, "SHOW"),
        ["SHOW", "DATABASES"] => show_databases(state).write(out, "SHOW"),
        ["SHOW", "CONFIG"] => show_config(state).write(out, "SHOW"),
        ["SHOW", "QUERIES"] => show_queries(state).write(out, "SHOW"),
        ["SHOW", "ALERTS"] => show_alerts(state).write(out, "SHOW"),
        ["SHOW", "HEALTH"] => show_health(state).write(out, "SHOW"),
        ["SHOW", "VERSION"] => {
            let mut t = Table::new(&[("version", T)]);
            t.push(vec![s(format!("unidb {}", crate::VERSION))]);
            t.write(out, "SHOW");
        }
        ["SHOW", "HELP"] | ["HELP"] => {
            msg::notice(
                out,
                "Console usage: SHOW POOLS|STATS|CLIENTS|SERVERS|DATABASES|CONFIG|QUERIES|ALERTS|HEALTH|VERSION; \
                 RELOAD; PAUSE [db]; RESUME [db]; RESET STATS; \
                 MIGRATE STATUS|UP|DOWN|REDO|VALIDATE|REPAIR|CREATE [db] [TO version] [STEPS n] [DRY RUN]",
            );
            msg::command_complete(out, "SHOW");
        }
        ["RESET", "STATS"] => {
            state.observer.reset_stats();
            msg::command_complete(out, "RESET");
        }
        ["RELOAD"] => {
            let notes = state.reload().map_err(|e| {
                PgError::new(code::CONFIG_FILE_ERROR, format!("reload failed: {e}"))
                    .with_hint("the running configuration is unchanged")
            })?;
            for n in notes {
                msg::notice(out, &n);
            }
            msg::command_complete(out, "RELOAD");
        }
        ["PAUSE"] | ["PAUSE", _] => {
            let dbs = targets(state, arg)?;
            for db in &dbs {
                state.pauses[db].set(true);
                tracing::info!(database = %db, "paused: new transactions wait");
            }
            for db in &dbs {
                wait_quiet(state, db).await;
            }
            msg::command_complete(out, "PAUSE");
        }
        ["RESUME"] | ["RESUME", _] => {
            for db in targets(state, arg)? {
                state.pauses[&db].set(false);
                tracing::info!(database = %db, "resumed");
            }
            msg::command_complete(out, "RESUME");
        }
        ["SET", ..] => msg::command_complete(out, "SET"),
        ["MIGRATE", ..] => {
            let who = state
                .cancels
                .clients()
                .into_iter()
                .find(|(p, _, _)| *p == pid)
                .map_or_else(|| "admin".to_string(), |(_, info, _)| info.user);
            let words: Vec<&str> = text.split_whitespace().skip(1).collect();
            migrate::run(state, &words, &who, out).await?;
        }
        _ => {
            return Err(PgError::new(
                code::SYNTAX_ERROR,
                format!("unknown admin console command: {text}"),
            )
            .with_hint("SHOW HELP lists the commands"))
        }
    }
    Ok(())
}

/// The databases a PAUSE/RESUME names: one, or all.
fn targets(state: &ServerState, arg: Option<&str>) -> Result<Vec<String>, PgError> {
    match arg {
        None => {
            let mut v: Vec<String> = state.databases.keys().cloned().collect();
            v.sort();
            Ok(v)
        }
        Some(name) if state.databases.contains_key(name) => Ok(vec![name.to_string()]),
        Some(name) => Err(PgError::new(
            code::INVALID_CATALOG_NAME,
            format!("database \"{name}\" does not exist"),
        )
        .with_hint(format!("configured databases: {}", state.database_names()))),
    }
}

/// Waits until no transaction runs on `db` (after PAUSE stopped new ones).
async fn wait_quiet(state: &ServerState, db: &str) {
    let mut logged = false;
    loop {
        let busy = match state.databases.get(db) {
            Some(Database::Postgres(pg)) => pg.pool.active(),
            Some(Database::Sqlite(s)) => s.busy(),
            None => 0,
        };
        if busy == 0 {
            return;
        }
        if !logged {
            tracing::info!(database = %db, busy, "PAUSE waits for running transactions");
            logged = true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn show_pools(state: &ServerState) -> Table {
    let mut t = Table::new(&[
        ("database", T),
        ("user", T),
        ("cl_active", I),
        ("cl_waiting", I),
        ("sv_active", I),
        ("sv_idle", I),
        ("sv_used", I),
        ("sv_tested", I),
        ("sv_login", I),
        ("maxwait", I),
        ("maxwait_us", I),
        ("pool_mode", T),
        ("backend", T),
        ("paused", T),
    ]);
    let clients = state.cancels.clients();
    for (name, db) in sorted(state) {
        let connected = clients
            .iter()
            .filter(|(_, c, _)| c.database == name)
            .count() as u64;
        let paused = state.pauses[&name].is_paused().to_string();
        match db {
            Database::Postgres(pg) => {
                let waiting = pg
                    .pool
                    .stats
                    .waiting
                    .load(std::sync::atomic::Ordering::Relaxed);
                let mode = match pg.pool.config.pool_mode {
                    crate::config::PoolMode::Transaction => "transaction",
                    crate::config::PoolMode::Session => "session",
                };
                t.push(vec![
                    s(&name),
                    s(&pg.pool.upstream.user),
                    s(connected.saturating_sub(waiting)),
                    s(waiting),
                    s(pg.pool.active()),
                    s(pg.pool.idle_count()),
                    s(0),
                    s(0),
                    s(0),
                    s(0),
                    s(0),
                    s(mode),
                    s("postgres"),
                    s(paused),
                ]);
            }
            Database::Sqlite(db) => {
                t.push(vec![
                    s(&name),
                    s(""),
                    s(connected),
                    s(0),
                    s(db.busy()),
                    s(0),
                    s(0),
                    s(0),
                    s(0),
                    s(0),
                    s(0),
                    s("statement"),
                    s("sqlite"),
                    s(paused),
                ]);
            }
        }
    }
    t
}

fn sorted(state: &ServerState) -> Vec<(String, Database)> {
    let mut v: Vec<(String, Database)> = state
        .databases
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn show_stats(state: &ServerState) -> Table {
    let mut t = Table::new(&[
        ("database", T),
        ("total_query_count", I),
        ("total_query_time", I),
        ("total_wait_time", I),
        ("total_rows", I),
        ("total_errors", I),
        ("avg_query_count", F),
        ("avg_query_time", I),
        ("avg_wait_time", I),
    ]);
    let rows = state.observer.stats.snapshot();
    let stats = state.observer.stats_json();
    for (i, db) in state.observer.dbs.iter().enumerate() {
        let (calls, total, wait, nrows, errors) =
            rows.iter()
                .filter(|r| r.database == i)
                .fold((0u64, 0u64, 0u64, 0u64, 0u64), |a, r| {
                    (
                        a.0 + r.entry.calls,
                        a.1 + r.entry.total_ns,
                        a.2 + r.entry.wait_ns,
                        a.3 + r.entry.rows,
                        a.4 + r.entry.errors,
                    )
                });
        let qps = stats["history"]
            .as_array()
            .map(|h| {
                let recent: Vec<f64> = h
                    .iter()
                    .rev()
                    .take(10)
                    .filter_map(|p| p["qps"].as_f64())
                    .collect();
                if recent.is_empty() {
                    0.0
                } else {
                    recent.iter().sum::<f64>() / recent.len() as f64
                }
            })
            .unwrap_or(0.0);
        let per = |ns: u64| (ns / 1000).checked_div(calls).unwrap_or(0);
        t.push(vec![
            s(&db.name),
            s(calls),
            s(total / 1000),
            s(wait / 1000),
            s(nrows),
            s(errors),
            // The history is for all databases together: shown on the first only
            // when there is one database.
            if state.observer.dbs.len() == 1 {
                s(format!("{qps:.1}"))
            } else {
                None
            },
            s(per(total)),
            s(per(wait)),
        ]);
    }
    t
}

fn show_clients(state: &ServerState) -> Table {
    let mut t = Table::new(&[
        ("type", T),
        ("user", T),
        ("database", T),
        ("state", T),
        ("addr", T),
        ("port", I),
        ("connect_time", T),
        ("pid", I),
        ("link", I),
        ("tls", T),
        ("application_name", T),
    ]);
    for (pid, c, slot) in state.cancels.clients() {
        let link = slot.upstream_pid();
        let active = link.is_some() || slot.running() || c.database == DATABASE;
        t.push(vec![
            s("C"),
            s(&c.user),
            s(&c.database),
            s(if active { "active" } else { "idle" }),
            c.addr.map(|a| a.ip().to_string()),
            c.addr.map(|a| a.port().to_string()),
            s(rfc3339(c.connected_at)),
            s(pid),
            link.map(|l| l.to_string()),
            s(c.tls),
            s(&c.application_name),
        ]);
    }
    t
}

fn show_servers(state: &ServerState) -> Table {
    let mut t = Table::new(&[
        ("type", T),
        ("user", T),
        ("database", T),
        ("state", T),
        ("addr", T),
        ("port", I),
        ("connect_time", T),
        ("request_time", T),
        ("remote_pid", I),
        ("link", I),
        ("tls", T),
    ]);
    let clients = state.cancels.clients();
    for (name, db) in sorted(state) {
        let Database::Postgres(pg) = db else { continue };
        let up = &pg.pool.upstream;
        let tls = up.sslmode != crate::config::SslMode::Disable;
        for (pid, client, slot) in &clients {
            if client.database != name {
                continue;
            }
            if let Some(remote) = slot.upstream_pid() {
                t.push(vec![
                    s("S"),
                    s(&up.user),
                    s(&name),
                    s("active"),
                    s(&up.host),
                    s(up.port),
                    None,
                    None,
                    s(remote),
                    s(pid),
                    s(tls),
                ]);
            }
        }
        for idle in pg.pool.idle_servers() {
            t.push(vec![
                s("S"),
                s(&up.user),
                s(&name),
                s("idle"),
                s(&up.host),
                s(up.port),
                s(rfc3339(SystemTime::now() - idle.age)),
                s(rfc3339(SystemTime::now() - idle.idle)),
                s(idle.pid),
                None,
                s(idle.tls),
            ]);
        }
    }
    t
}

fn show_databases(state: &ServerState) -> Table {
    let mut t = Table::new(&[
        ("name", T),
        ("backend", T),
        ("host", T),
        ("port", I),
        ("database", T),
        ("pool_size", I),
        ("min_pool_size", I),
        ("pool_mode", T),
        ("current_connections", I),
        ("paused", I),
        ("path", T),
    ]);
    for (name, db) in sorted(state) {
        let paused = s(state.pauses[&name].is_paused() as i32);
        match db {
            Database::Postgres(pg) => {
                let c = &pg.pool.config;
                t.push(vec![
                    s(&name),
                    s("postgres"),
                    s(&pg.pool.upstream.host),
                    s(pg.pool.upstream.port),
                    s(&pg.pool.upstream.dbname),
                    s(c.pool_size),
                    s(c.min_idle),
                    s(match c.pool_mode {
                        crate::config::PoolMode::Transaction => "transaction",
                        crate::config::PoolMode::Session => "session",
                    }),
                    s(pg.pool.active() + pg.pool.idle_count()),
                    paused,
                    None,
                ]);
            }
            Database::Sqlite(db) => {
                t.push(vec![
                    s(&name),
                    s("sqlite"),
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    paused,
                    s(db.path().display()),
                ]);
            }
        }
    }
    t
}

fn show_config(state: &ServerState) -> Table {
    let mut t = Table::new(&[("key", T), ("value", T)]);
    let text = state.config.to_masked_toml();
    let value: toml::Value =
        toml::from_str(&text).unwrap_or(toml::Value::Table(Default::default()));
    fn flatten(prefix: &str, v: &toml::Value, t: &mut Table) {
        match v {
            toml::Value::Table(m) => {
                for (k, v) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(&key, v, t);
                }
            }
            toml::Value::Array(a) if a.iter().all(|v| v.is_table()) && !a.is_empty() => {
                for (i, v) in a.iter().enumerate() {
                    flatten(&format!("{prefix}[{i}]"), v, t);
                }
            }
            toml::Value::String(s) => t.push(vec![Some(prefix.to_string()), Some(s.clone())]),
            other => t.push(vec![Some(prefix.to_string()), Some(other.to_string())]),
        }
    }
    flatten("", &value, &mut t);
    t
}

fn show_queries(state: &ServerState) -> Table {
    let mut t = Table::new(&[
        ("database", T),
        ("fingerprint", T),
        ("calls", I),
        ("rows", I),
        ("errors", I),
        ("mean_ms", F),
        ("p95_ms", F),
        ("p99_ms", F),
        ("max_ms", F),
        ("total_ms", F),
        ("query", T),
    ]);
    let mut rows = state.observer.stats.snapshot();
    rows.sort_by(|a, b| b.entry.mean_ns().total_cmp(&a.entry.mean_ns()));
    let ms = |ns: f64| format!("{:.3}", ns / 1e6);
    for r in rows {
        let e = &r.entry;
        t.push(vec![
            s(&state.observer.dbs[r.database].name),
            s(format!("{:016x}", r.fingerprint)),
            s(e.calls),
            s(e.rows),
            s(e.errors),
            s(ms(e.mean_ns())),
            s(ms(e.quantile_ns(0.95) as f64)),
            s(ms(e.quantile_ns(0.99) as f64)),
            s(ms(e.max_ns as f64)),
            s(ms(e.total_ns as f64)),
            s(&*r.query),
        ]);
    }
    t
}

fn show_alerts(state: &ServerState) -> Table {
    let mut t = Table::new(&[
        ("name", T),
        ("database", T),
        ("severity", T),
        ("state", T),
        ("since", T),
        ("value", F),
        ("expr", T),
        ("for", T),
        ("summary", T),
    ]);
    let v = state.observer.alerts_json();
    for a in v["alerts"].as_array().into_iter().flatten() {
        let text = |k: &str| a[k].as_str().map(str::to_string);
        t.push(vec![
            text("name"),
            text("database"),
            text("severity"),
            text("state"),
            text("since"),
            a["value"].as_f64().map(|v| format!("{v:.4}")),
            text("expr"),
            a["for_seconds"].as_f64().map(|v| format!("{v}s")),
            text("summary"),
        ]);
    }
    t
}

fn show_health(state: &ServerState) -> Table {
    let mut t = Table::new(&[("check", T), ("ok", T), ("detail", T)]);
    let h = state.observer.health();
    t.push(vec![
        s("score"),
        s(h.status != "critical"),
        s(format!("{} ({})", h.score, h.status)),
    ]);
    for (name, ok, detail) in h.checks {
        t.push(vec![s(name), s(ok), s(detail)]);
    }
    t
}
