//! `migrate validate`: every file parses (PostgreSQL dialect) and has a SQLite
//! form, versions are in order, checksums match the ledger, and every up/down pair
//! is run on scratch databases: up, down (the schema must be as before), up again
//! (the schema must be as after the first up), then everything down to the empty
//! schema. Scratch databases: an empty SQLite file; a copy of the SQLite database
//! itself for its pending migrations (real data); and, when the database is on
//! PostgreSQL or names one in `validate_postgres`, a scratch schema there that is
//! dropped afterwards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::source::{self, Direction, Migration};
use super::{apply, ledger, MigrateError, Migrator, Status};
use crate::config::{Config, DatabaseConfig, PostgresConfig};
use crate::ops::target::{ident, Target};
use crate::server::{Database, ServerState};

/// Findings of `validate`.
#[derive(Debug, Clone, Default)]
pub struct ValidateReport {
    /// What was checked and passed.
    pub passed: Vec<String>,
    pub warnings: Vec<String>,
    pub errors: Vec<String>,
}

impl ValidateReport {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for p in &self.passed {
            out.push_str(&format!("ok       {p}\n"));
        }
        for w in &self.warnings {
            out.push_str(&format!("warning  {w}\n"));
        }
        for e in &self.errors {
            out.push_str(&format!("ERROR    {}\n", e.replace('\n', "\n         ")));
        }
        out.push_str(if self.ok() {
            "validation passed\n"
        } else {
            "validation FAILED\n"
        });
        out
    }
}

pub(super) async fn run(m: &Migrator) -> Result<ValidateReport, MigrateError> {
    let mut report = ValidateReport::default();
    let files = match source::load(m.dir()) {
        Ok(f) => f,
        Err(p) => {
            report.errors.extend(p.0);
            return Ok(report);
        }
    };
    m.say(&format!(
        "validating {} migration(s) in {}",
        files.len(),
        m.dir().display()
    ));
    check_files(&files, &mut report);
    let status = check_ledger(m, &files, &mut report).await;
    if !report.ok() {
        return Ok(report);
    }
    let all: Vec<&Migration> = files.iter().collect();
    let scratch = ScratchDir::new()?;

    // 1. From an empty SQLite database.
    m.say("dry run on a scratch SQLite database ...");
    match scratch_sqlite(&m.state.config, &scratch.0.join("empty.db"), None).await {
        Ok((state, mut t)) => {
            exercise(m, &mut t, &all, "scratch SQLite", &mut report).await;
            close_scratch(state, t).await;
        }
        Err(e) => report.errors.push(format!("scratch SQLite database: {e}")),
    }

    // 2. Pending migrations on a copy of this SQLite database (its real data).
    if let (Some(status), Some(Database::Sqlite(live))) =
        (&status, m.state.databases.get(&m.database))
    {
        let pending: Vec<&Migration> = status
            .pending()
            .filter_map(|e| files.iter().find(|f| f.version == e.version))
            .collect();
        if !pending.is_empty() {
            m.say("dry run of the pending migrations on a copy of the database ...");
            let copy = scratch.0.join("copy.db");
            match scratch_sqlite(&m.state.config, &copy, Some(live)).await {
                Ok((state, mut t)) => {
                    exercise(m, &mut t, &pending, "copy of the database", &mut report).await;
                    close_scratch(state, t).await;
                }
                Err(e) => report.errors.push(format!("copy of the database: {e}")),
            }
        }
    }

    // 3. A scratch schema on PostgreSQL.
    let pg: Option<(String, PostgresConfig)> =
        match m.config() {
            DatabaseConfig::Postgres(p) => Some((m.database.clone(), p.clone())),
            DatabaseConfig::Sqlite(s) => s.validate_postgres.as_ref().and_then(|name| {
                match m.state.config.databases.get(name) {
                    Some(DatabaseConfig::Postgres(p)) => Some((name.clone(), p.clone())),
                    _ => None,
                }
            }),
        };
    if let Some((name, config)) = pg {
        m.say(&format!(
            "dry run in a scratch schema on PostgreSQL database {name} (schema-qualified names reach the real schemas) ..."
        ));
        scratch_postgres(m, &name, &config, &all, &mut report).await;
    } else {
        report.warnings.push(
            "no PostgreSQL configured for validation: set validate_postgres = \"<a postgres database of this config>\" to dry-run there too".into(),
        );
    }
    Ok(report)
}

/// Every statement parses as PostgreSQL and plans for SQLite; no transaction
/// control; a down file for every migration (a warning otherwise).
fn check_files(files: &[Migration], report: &mut ValidateReport) {
    let mut statements = 0;
    for m in files {
        if m.down.is_none() {
            report
                .warnings
                .push(format!("{}: no down file; it cannot be reverted", m.id()));
        }
        for file in std::iter::once(&m.up).chain(m.down.as_ref()) {
            let list = match apply::parse(file) {
                Ok(l) => l,
                Err(e) => {
                    report.errors.push(e.to_string());
                    continue;
                }
            };
            for s in &list {
                statements += 1;
                let at = format!("{}:{}", file.path.display(), s.line);
                if let Err(e) = Parser::parse_sql(&PostgreSqlDialect {}, &s.sql) {
                    report.errors.push(format!("{at}: does not parse: {e}"));
                    continue;
                }
                if let Err(e) = crate::sql::plan(&s.sql) {
                    report.errors.push(format!(
                        "{at}: has no SQLite form: {} (SQLSTATE {})\n`{}`",
                        e.message,
                        e.code,
                        apply::excerpt(&s.sql, 120)
                    ));
                }
            }
        }
    }
    report.passed.push(format!(
        "{} file(s), {statements} statement(s) parse and have a SQLite form",
        files
            .iter()
            .map(|m| 1 + usize::from(m.down.is_some()))
            .sum::<usize>()
    ));
}

/// Order and checksums against the database's ledger.
async fn check_ledger(
    m: &Migrator,
    files: &[Migration],
    report: &mut ValidateReport,
) -> Option<Status> {
    let mut t = match m.connect().await {
        Ok(t) => t,
        Err(e) => {
            report.errors.push(format!("cannot check the ledger: {e}"));
            return None;
        }
    };
    let rows = ledger::read(&mut t).await;
    let describe = t.describe.clone();
    t.close().await;
    match rows {
        Ok(rows) => {
            let status = Status::new(&m.database, &describe, files, &rows);
            let problems = status.blocking(true);
            if problems.is_empty() {
                report.passed.push(format!(
                    "order and checksums match the ledger of database {} ({})",
                    m.database, describe
                ));
            } else {
                report.errors.extend(problems);
                report
                    .errors
                    .extend(status.hints().into_iter().map(|h| format!("hint: {h}")));
            }
            Some(status)
        }
        Err(e) => {
            report
                .errors
                .push(format!("cannot read the ledger of {}: {e}", m.database));
            None
        }
    }
}

/// Runs each migration up, down, up on `t`, comparing schemas, then all down.
async fn exercise(
    m: &Migrator,
    t: &mut Target,
    migrations: &[&Migration],
    label: &str,
    report: &mut ValidateReport,
) {
    let start = match snapshot(t).await {
        Ok(s) => s,
        Err(e) => {
            report.errors.push(format!("{label}: {e}"));
            return;
        }
    };
    let mut before = start.clone();
    for mig in migrations {
        let r: Result<Vec<String>, String> = async {
            step(m, t, mig, Direction::Up).await?;
            let after = snapshot(t).await?;
            if mig.down.is_some() {
                step(m, t, mig, Direction::Down).await?;
                let undone = snapshot(t).await?;
                if undone != before {
                    return Err(format!(
                        "{}: the down file does not restore the schema the up file found:\n{}",
                        mig.id(),
                        diff(&before, &undone)
                    ));
                }
                step(m, t, mig, Direction::Up).await?;
                let again = snapshot(t).await?;
                if again != after {
                    return Err(format!(
                        "{}: applied again after its down file, it gives another schema:\n{}",
                        mig.id(),
                        diff(&after, &again)
                    ));
                }
            }
            Ok(after)
        }
        .await;
        match r {
            Ok(after) => before = after,
            Err(e) => {
                report.errors.push(format!("{label}: {e}"));
                return;
            }
        }
    }
    if migrations.iter().all(|m| m.down.is_some()) {
        for mig in migrations.iter().rev() {
            if let Err(e) = step(m, t, mig, Direction::Down).await {
                report.errors.push(format!("{label}: all down: {e}"));
                return;
            }
        }
        match snapshot(t).await {
            Ok(end) if end == start => {}
            Ok(end) => {
                report.errors.push(format!(
                    "{label}: after every down file the schema differs from the start:\n{}",
                    diff(&start, &end)
                ));
                return;
            }
            Err(e) => {
                report.errors.push(format!("{label}: {e}"));
                return;
            }
        }
    }
    report.passed.push(format!(
        "{label}: {} migration(s) up, down, up again{}",
        migrations.len(),
        if migrations.iter().all(|m| m.down.is_some()) {
            ", then all down to the starting schema"
        } else {
            ""
        }
    ));
}

async fn step(m: &Migrator, t: &mut Target, mig: &Migration, d: Direction) -> Result<(), String> {
    m.runner(t, None)
        .run(mig, d)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The schema as sorted lines (tables, columns with types, indexes, constraints).
async fn snapshot(t: &mut Target) -> Result<Vec<String>, String> {
    if let Some(db) = &t.sqlite {
        return db
            .schema_listing(&[ledger::TABLE])
            .await
            .map_err(|e| format!("cannot list the schema: {e:#}"));
    }
    let rows = t
        .rows(
            "SELECT 'relation ' || c.relkind::text || ' ' || c.relname FROM pg_class c \
               WHERE c.relnamespace = current_schema()::regnamespace \
             UNION ALL SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type || ' ' \
               || is_nullable || ' ' || coalesce(column_default, '') FROM information_schema.columns \
               WHERE table_schema = current_schema() \
             UNION ALL SELECT 'constraint ' || conrelid::regclass::text || ' ' || conname || ' ' \
               || pg_get_constraintdef(oid) FROM pg_constraint \
               WHERE connamespace = current_schema()::regnamespace \
             UNION ALL SELECT 'index ' || indexname || ' ' || indexdef FROM pg_indexes \
               WHERE schemaname = current_schema() \
             ORDER BY 1",
        )
        .await
        .map_err(|e| format!("cannot list the schema: {e}"))?;
    Ok(rows
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect())
}

fn diff(expected: &[String], got: &[String]) -> String {
    let mut out = Vec::new();
    for e in expected {
        if !got.contains(e) {
            out.push(format!("  - {e}"));
        }
    }
    for g in got {
        if !expected.contains(g) {
            out.push(format!("  + {g}"));
        }
    }
    out.join("\n")
}

/// A temporary directory removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Result<ScratchDir, MigrateError> {
        let dir = std::env::temp_dir().join(format!(
            "unidb-validate-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| {
            MigrateError::Database(format!(
                "cannot create scratch directory {}: {e}",
                dir.display()
            ))
        })?;
        Ok(ScratchDir(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server state holding only a scratch SQLite database at `path` (a verified copy
/// of `copy_of` when given), and a session on it.
async fn scratch_sqlite(
    base: &Config,
    path: &Path,
    copy_of: Option<&crate::backend::sqlite::SqliteDb>,
) -> Result<(Arc<ServerState>, Target), String> {
    if let Some(live) = copy_of {
        live.backup_verified(path)
            .await
            .map_err(|e| format!("{e:#}"))?;
    }
    let mut table = toml::Table::new();
    table.insert(
        "path".into(),
        toml::Value::String(path.display().to_string()),
    );
    table.insert("readers".into(), toml::Value::Integer(1));
    table.insert("migrate_backup".into(), toml::Value::Boolean(false));
    let sqlite: crate::config::SqliteConfig = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| e.to_string())?;
    let mut config = base.clone();
    config.databases = BTreeMap::from([("scratch".to_string(), DatabaseConfig::Sqlite(sqlite))]);
    config.observe.enabled = false;
    config.http.listen = None;
    let state = ServerState::new(config).map_err(|e| format!("{e:#}"))?;
    let t = Target::for_migrations(&state, "scratch", "unidb-validate").await?;
    Ok((state, t))
}

async fn close_scratch(state: Arc<ServerState>, t: Target) {
    t.close().await;
    if let Some(Database::Sqlite(db)) = state.databases.get("scratch") {
        db.shutdown(Duration::from_secs(1)).await;
    }
}

async fn scratch_postgres(
    m: &Migrator,
    name: &str,
    config: &PostgresConfig,
    migrations: &[&Migration],
    report: &mut ValidateReport,
) {
    let label = format!("scratch schema on PostgreSQL {name}");
    let mut t = match Target::direct(name, config).await {
        Ok(t) => t,
        Err(e) => {
            report.errors.push(format!("{label}: {e}"));
            return;
        }
    };
    let schema = format!("unidb_validate_{:08x}", rand::random::<u32>());
    let setup = format!(
        "CREATE SCHEMA {s}; SET search_path TO {s}; SET TimeZone = 'UTC'",
        s = ident(&schema)
    );
    match t.execute(&setup).await {
        Ok(()) => {
            exercise(m, &mut t, migrations, &label, report).await;
            if t.in_transaction() {
                let _ = t.execute("ROLLBACK").await;
            }
            if let Err(e) = t
                .execute(&format!("DROP SCHEMA {} CASCADE", ident(&schema)))
                .await
            {
                report.warnings.push(format!(
                    "{label}: could not drop scratch schema {schema}: {e}"
                ));
            }
        }
        Err(e) => report
            .errors
            .push(format!("{label}: cannot create a scratch schema: {e}")),
    }
    t.close().await;
}
