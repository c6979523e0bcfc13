//! Schema migrations written once in PostgreSQL's dialect and applied to SQLite
//! (through the same rewriting as client statements) and to PostgreSQL, with the
//! same ledger on both.
//!
//! Safety: each migration runs in its own transaction together with its ledger row,
//! so a failure leaves the database and the ledger as they were. Concurrent runs
//! are serialised: on PostgreSQL by an advisory lock held for the whole run, on
//! SQLite by each migration's `BEGIN IMMEDIATE`, inside which the ledger is read
//! again. A migration whose file changed after it was applied (checksum drift), a
//! ledger row without a file, or an unfinished no-transaction migration stop every
//! command that changes the schema until `repair`. On SQLite the file is copied and
//! the copy verified before anything changes.
//!
//! Invariant: migrations reach a database only through [`crate::ops::target`]
//! (an in-process session on SQLite, never rusqlite on the original text).

mod apply;
pub mod ledger;
pub mod source;
pub mod status;
mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use apply::Outcome;
pub use source::{Direction, Migration, SourceProblems, VersionStyle};
pub use status::{State, Status};
pub use validate::ValidateReport;

use crate::config::DatabaseConfig;
use crate::ops::target::{Backend, Target};
use crate::server::ServerState;

/// Where progress lines go (stdout for the CLI, NOTICEs on the admin console, the
/// log at startup).
pub type Progress = Arc<dyn Fn(&str) + Send + Sync>;

/// Advisory lock key of migration runs on PostgreSQL ("unidbmig" as a number).
const ADVISORY_KEY: i64 = 0x756e_6964_626d_6967;

/// A migration that failed, and where.
#[derive(Debug, Clone)]
pub struct Failure {
    /// `20261125090000_create_projects`
    pub migration: String,
    pub direction: Direction,
    pub path: PathBuf,
    /// 1-based statement number; 0 when transaction control or the ledger failed.
    pub statement: usize,
    pub statements: usize,
    /// Line of the statement in the file.
    pub line: usize,
    pub sql: String,
    /// The database's error, with its SQLSTATE, detail and hint.
    pub error: String,
    pub code: Option<String>,
    pub no_transaction: bool,
    /// The connection failed instead of the database answering with an error.
    pub connection_lost: bool,
    /// Part of a no-transaction migration took effect; its ledger row says failed.
    pub partial: bool,
    /// The pre-migration copy the database was restored from (`--restore-on-failure`).
    pub restored_from: Option<PathBuf>,
}

/// Why a migration command did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The migration files themselves are wrong.
    #[error("migration files:\n  {}", .0.0.join("\n  "))]
    Source(SourceProblems),
    /// The database cannot be reached or the ledger cannot be read or written.
    #[error("{0}")]
    Database(String),
    /// The command would be unsafe, or cannot do what was asked.
    #[error("{}", refused(.problems, .hints))]
    Refused {
        problems: Vec<String>,
        hints: Vec<String>,
    },
    /// A migration failed.
    #[error("{}", failed(.0))]
    Failed(Box<Failure>),
    /// Another run held the migration lock for too long.
    #[error("{0}")]
    Lock(String),
}

fn refused(problems: &[String], hints: &[String]) -> String {
    let mut s = String::from("refusing to run:");
    for p in problems {
        s.push_str("\n  - ");
        s.push_str(p);
    }
    for h in hints {
        s.push_str("\nhint: ");
        s.push_str(h);
    }
    s
}

fn failed(f: &Failure) -> String {
    let mut s = format!(
        "migration {} ({}) failed",
        f.migration,
        f.direction.as_str()
    );
    if f.statement > 0 {
        s.push_str(&format!(
            " at statement {} of {} ({}, line {}):\n    {}",
            f.statement,
            f.statements,
            f.path.display(),
            f.line,
            f.sql.lines().collect::<Vec<_>>().join("\n    ")
        ));
    } else {
        s.push_str(&format!(" ({})", f.path.display()));
    }
    s.push_str(&format!("\n  ERROR: {}", f.error.replace('\n', "\n  ")));
    if f.partial {
        s.push_str(&format!(
            "\nIt ran outside a transaction (-- unidb: no-transaction): statements 1 to {} took effect, \
             statement {} may have left partial work (an INVALID index after CREATE INDEX CONCURRENTLY), \
             and the ledger marks the migration failed.\nhint: undo or finish its work by hand, then \
             `unidb migrate repair` clears the mark so that `unidb migrate up` runs it again",
            f.statement.saturating_sub(1),
            f.statement.max(1)
        ));
    } else if f.connection_lost {
        s.push_str(
            "\nThe connection was lost: the migration was rolled back unless its COMMIT had already \
             reached the database; `unidb migrate status` shows which.",
        );
    } else {
        s.push_str(
            "\nThe migration was rolled back: the database and the ledger are as they were before it.",
        );
    }
    if let Some(p) = &f.restored_from {
        s.push_str(&format!(
            "\nThe database file was restored from the copy made before this run: {}",
            p.display()
        ));
    }
    s
}

impl From<SourceProblems> for MigrateError {
    fn from(p: SourceProblems) -> Self {
        MigrateError::Source(p)
    }
}

/// `up` options.
#[derive(Debug, Clone, Default)]
pub struct UpOptions {
    /// Apply pending migrations up to and including this version.
    pub to: Option<i64>,
    /// Print the SQL that would run, change nothing.
    pub dry_run: bool,
    /// SQLite: if a migration fails, restore the file from the copy made before the
    /// run (undoing the migrations this run applied before it).
    pub restore_on_failure: bool,
}

/// How far `down` goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownTo {
    /// Revert the newest `n` applied migrations.
    Steps(usize),
    /// Revert every applied migration newer than this version (0: all).
    Version(i64),
}

/// `down` options.
#[derive(Debug, Clone)]
pub struct DownOptions {
    pub to: DownTo,
    pub dry_run: bool,
    pub restore_on_failure: bool,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// (migration, direction, milliseconds) in the order they ran.
    pub done: Vec<(String, Direction, u64)>,
    /// The verified pre-migration copy (SQLite).
    pub backup: Option<PathBuf>,
}

/// Migration commands on one configured database.
pub struct Migrator {
    state: Arc<ServerState>,
    database: String,
    dir: PathBuf,
    applied_by: String,
    out: Progress,
    /// How long to wait for another run's lock.
    pub lock_wait: Duration,
}

impl Migrator {
    /// Commands on `database` of the running (or CLI-built) server state, with the
    /// migrations directory from its config.
    pub fn new(
        state: Arc<ServerState>,
        database: &str,
        out: Progress,
    ) -> Result<Migrator, MigrateError> {
        let config = state.config.databases.get(database).ok_or_else(|| {
            MigrateError::Database(format!(
                "database `{database}` is not configured (configured: {})",
                state.database_names()
            ))
        })?;
        let dir = config.migrations().to_path_buf();
        Ok(Migrator {
            state,
            database: database.to_string(),
            dir,
            applied_by: default_applied_by(),
            out,
            lock_wait: Duration::from_secs(60),
        })
    }

    /// Uses another migrations directory.
    pub fn with_dir(mut self, dir: &Path) -> Migrator {
        self.dir = dir.to_path_buf();
        self
    }

    /// Names who applies migrations in the ledger.
    pub fn with_applied_by(mut self, who: &str) -> Migrator {
        self.applied_by = who.to_string();
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn say(&self, line: &str) {
        (self.out)(line)
    }

    fn config(&self) -> &DatabaseConfig {
        // Checked in `new`; the configuration never changes for a state's life.
        &self.state.config.databases[&self.database]
    }

    async fn connect(&self) -> Result<Target, MigrateError> {
        Target::for_migrations(&self.state, &self.database, "unidb-migrate")
            .await
            .map_err(MigrateError::Database)
    }

    /// Files against the ledger. Changes nothing (the ledger is not created).
    pub async fn status(&self) -> Result<Status, MigrateError> {
        let files = source::load(&self.dir)?;
        let mut t = self.connect().await?;
        let rows = ledger::read(&mut t).await.map_err(|e| self.db_error(&t, e));
        let describe = t.describe.clone();
        t.close().await;
        Ok(Status::new(&self.database, &describe, &files, &rows?))
    }

    /// Applies pending migrations in version order.
    pub async fn up(&self, opts: &UpOptions) -> Result<RunReport, MigrateError> {
        let files = source::load(&self.dir)?;
        let mut t = self.open_locked().await?;
        let r = self.up_locked(&mut t, &files, opts).await;
        self.release(t).await;
        r
    }

    /// Reverts applied migrations, newest first.
    pub async fn down(&self, opts: &DownOptions) -> Result<RunReport, MigrateError> {
        let files = source::load(&self.dir)?;
        let mut t = self.open_locked().await?;
        let r = self.down_locked(&mut t, &files, opts).await;
        self.release(t).await;
        r
    }

    /// Reverts the newest applied migration and applies it again.
    pub async fn redo(
        &self,
        dry_run: bool,
        restore_on_failure: bool,
    ) -> Result<RunReport, MigrateError> {
        let files = source::load(&self.dir)?;
        let mut t = self.open_locked().await?;
        let r = self
            .redo_locked(&mut t, &files, dry_run, restore_on_failure)
            .await;
        self.release(t).await;
        r
    }

    /// Re-records checksums of applied migrations whose up file changed, removes
    /// ledger rows whose files are gone and the marks of unfinished no-transaction
    /// migrations. Prints each change; `dry_run` only prints.
    pub async fn repair(&self, dry_run: bool) -> Result<Vec<String>, MigrateError> {
        let files = source::load(&self.dir)?;
        let mut t = self.open_locked().await?;
        let r = self.repair_locked(&mut t, &files, dry_run).await;
        self.release(t).await;
        r
    }

    /// Checks the files and dry-runs every up/down pair on scratch databases.
    pub async fn validate(&self) -> Result<ValidateReport, MigrateError> {
        validate::run(self).await
    }

    /// Writes a new pair of files and returns their paths.
    pub fn create(
        &self,
        name: &str,
        style: VersionStyle,
    ) -> Result<(PathBuf, PathBuf), MigrateError> {
        source::create(&self.dir, name, style, chrono::Utc::now())
            .map_err(|e| MigrateError::Source(SourceProblems(vec![e])))
    }

    /// A connection holding the migration lock: on PostgreSQL an advisory lock for
    /// the whole run; on SQLite each migration's own `BEGIN IMMEDIATE` is the lock.
    async fn open_locked(&self) -> Result<Target, MigrateError> {
        let mut t = self.connect().await?;
        if t.backend == Backend::Postgres {
            if let Err(e) = self.lock(&mut t).await {
                t.close().await;
                return Err(e);
            }
        }
        Ok(t)
    }

    async fn release(&self, mut t: Target) {
        if t.backend == Backend::Postgres {
            let _ = t
                .execute(&format!("SELECT pg_advisory_unlock({ADVISORY_KEY})"))
                .await;
        }
        t.close().await;
    }

    async fn lock(&self, t: &mut Target) -> Result<(), MigrateError> {
        let deadline = Instant::now() + self.lock_wait;
        let mut told = false;
        loop {
            let rows = t
                .rows(&format!("SELECT pg_try_advisory_lock({ADVISORY_KEY})"))
                .await
                .map_err(|e| self.db_error(t, e))?;
            if rows
                .first()
                .and_then(|r| r.first())
                .cloned()
                .flatten()
                .as_deref()
                == Some("t")
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(MigrateError::Lock(format!(
                    "database {} ({}): another migration run has held the migration lock for over {} s; \
                     it is a connection with application_name 'unidb migrate' in pg_stat_activity",
                    self.database,
                    t.describe,
                    self.lock_wait.as_secs()
                )));
            }
            if !told {
                self.say(&format!(
                    "waiting for another migration run on {} to finish (advisory lock)",
                    self.database
                ));
                told = true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn db_error(&self, t: &Target, e: impl std::fmt::Display) -> MigrateError {
        MigrateError::Database(format!("database {} ({}): {e}", self.database, t.describe))
    }

    fn runner<'a>(&'a self, t: &'a mut Target, applied_by: Option<String>) -> apply::Runner<'a> {
        let (lock_timeout, lock_retries) = match self.config() {
            DatabaseConfig::Postgres(p) => (
                Some(p.migrate_lock_timeout).filter(|d| !d.is_zero()),
                p.migrate_lock_retries,
            ),
            DatabaseConfig::Sqlite(_) => (None, 0),
        };
        apply::Runner {
            target: t,
            out: &self.out,
            lock_timeout,
            lock_retries,
            lock_wait: self.lock_wait,
            applied_by,
        }
    }

    fn lock_timeout(&self) -> Option<Duration> {
        match self.config() {
            DatabaseConfig::Postgres(p) => Some(p.migrate_lock_timeout).filter(|d| !d.is_zero()),
            DatabaseConfig::Sqlite(_) => None,
        }
    }

    /// Reads the ledger (creating it unless `dry_run`) and returns the status.
    async fn current(
        &self,
        t: &mut Target,
        files: &[Migration],
        dry_run: bool,
    ) -> Result<Status, MigrateError> {
        if !dry_run {
            ledger::ensure(t).await.map_err(|e| self.db_error(t, e))?;
        }
        let rows = ledger::read(t).await.map_err(|e| self.db_error(t, e))?;
        Ok(Status::new(&self.database, &t.describe, files, &rows))
    }

    fn refuse_if_blocked(status: &Status, for_up: bool) -> Result<(), MigrateError> {
        let problems = status.blocking(for_up);
        if problems.is_empty() {
            return Ok(());
        }
        Err(MigrateError::Refused {
            problems,
            hints: status.hints().into_iter().map(str::to_string).collect(),
        })
    }

    async fn newest_applied(
        &self,
        t: &mut Target,
        files: &[Migration],
        dry_run: bool,
    ) -> Result<i64, MigrateError> {
        let status = self.current(t, files, dry_run).await?;
        let newest = status.applied_newest_first().next().map(|e| e.version);
        newest.ok_or_else(|| MigrateError::Refused {
            problems: vec![format!(
                "database {} has no applied migration to redo",
                self.database
            )],
            hints: vec![],
        })
    }

    async fn redo_locked(
        &self,
        t: &mut Target,
        files: &[Migration],
        dry_run: bool,
        restore_on_failure: bool,
    ) -> Result<RunReport, MigrateError> {
        let newest = self.newest_applied(t, files, dry_run).await?;
        if !dry_run {
            // One run, one pre-migration copy: down then up of the same migration, so a
            // failure of either half restores the database as it was before the redo.
            // Anything pending (also out of order) refuses the redo rather than being
            // applied by it.
            let status = self.current(t, files, dry_run).await?;
            Self::refuse_if_blocked(&status, true)?;
            if status.pending().next().is_some() {
                return Err(MigrateError::Refused {
                    problems: vec![
                        "pending migrations: redo re-applies the newest applied one only".into(),
                    ],
                    hints: vec!["run `unidb migrate up` first".into()],
                });
            }
            let Some(m) = files.iter().find(|m| m.version == newest) else {
                return Err(MigrateError::Refused {
                    problems: vec![format!("{newest}: no files")],
                    hints: vec![],
                });
            };
            if m.down.is_none() {
                return Err(MigrateError::Refused {
                    problems: vec![format!("{}: no down file ({}.down.sql)", m.id(), m.id())],
                    hints: vec!["nothing was reverted; write the down file".into()],
                });
            }
            self.say(&format!(
                "database {} ({}): redoing {}",
                self.database,
                t.describe,
                m.id()
            ));
            return self
                .run_list(
                    t,
                    &[(m, Direction::Down), (m, Direction::Up)],
                    restore_on_failure,
                )
                .await;
        }
        // The dry run: the down half, then the up half as it would run after it.
        let down = DownOptions {
            to: DownTo::Steps(1),
            dry_run,
            restore_on_failure,
        };
        let report = self.down_locked(t, files, &down).await?;
        if let Some(m) = files.iter().find(|m| m.version == newest) {
            self.say(&apply::dry_run(
                m,
                Direction::Up,
                t.backend,
                self.lock_timeout(),
                &self.applied_by,
            )?);
        }
        Ok(report)
    }

    async fn up_locked(
        &self,
        t: &mut Target,
        files: &[Migration],
        opts: &UpOptions,
    ) -> Result<RunReport, MigrateError> {
        let status = self.current(t, files, opts.dry_run).await?;
        Self::refuse_if_blocked(&status, true)?;
        if let Some(to) = opts.to {
            if !files.iter().any(|m| m.version == to) {
                return Err(MigrateError::Refused {
                    problems: vec![format!("--to {to}: no migration has this version")],
                    hints: vec!["`unidb migrate status` lists the versions".into()],
                });
            }
        }
        let pending: Vec<&Migration> = status
            .pending()
            .filter(|e| opts.to.is_none_or(|to| e.version <= to))
            .filter_map(|e| files.iter().find(|m| m.version == e.version))
            .collect();
        if pending.is_empty() {
            self.say(&format!(
                "database {} ({}) is up to date: {} applied",
                self.database,
                t.describe,
                status.count(State::Applied)
            ));
            return Ok(RunReport::default());
        }
        if opts.dry_run {
            self.say(&format!(
                "-- dry run on database {} ({}): {} migration(s) would be applied with this SQL",
                self.database,
                t.describe,
                pending.len()
            ));
            self.say(&apply::ledger_ddl(t.backend)?);
            for m in &pending {
                self.say(&apply::dry_run(
                    m,
                    Direction::Up,
                    t.backend,
                    self.lock_timeout(),
                    &self.applied_by,
                )?);
            }
            return Ok(RunReport::default());
        }
        self.say(&format!(
            "database {} ({}): applying {} migration(s)",
            self.database,
            t.describe,
            pending.len()
        ));
        let list: Vec<(&Migration, Direction)> =
            pending.into_iter().map(|m| (m, Direction::Up)).collect();
        self.run_list(t, &list, opts.restore_on_failure).await
    }

    async fn down_locked(
        &self,
        t: &mut Target,
        files: &[Migration],
        opts: &DownOptions,
    ) -> Result<RunReport, MigrateError> {
        let status = self.current(t, files, opts.dry_run).await?;
        Self::refuse_if_blocked(&status, false)?;
        let applied: Vec<i64> = status.applied_newest_first().map(|e| e.version).collect();
        let chosen: Vec<i64> = match opts.to {
            DownTo::Steps(n) => applied.iter().copied().take(n).collect(),
            DownTo::Version(v) => {
                if v != 0 && !applied.contains(&v) && !files.iter().any(|m| m.version == v) {
                    return Err(MigrateError::Refused {
                        problems: vec![format!(
                            "--to {v}: no migration has this version (0 reverts all)"
                        )],
                        hints: vec!["`unidb migrate status` lists the versions".into()],
                    });
                }
                applied.iter().copied().filter(|a| *a > v).collect()
            }
        };
        if chosen.is_empty() {
            self.say(&format!(
                "database {} ({}): nothing to revert",
                self.database, t.describe
            ));
            return Ok(RunReport::default());
        }
        let mut list = Vec::new();
        let mut missing = Vec::new();
        for v in &chosen {
            match files.iter().find(|m| m.version == *v) {
                Some(m) if m.down.is_some() => list.push((m, Direction::Down)),
                Some(m) => missing.push(format!("{}: no down file ({}.down.sql)", m.id(), m.id())),
                None => missing.push(format!("{v}: no files")),
            }
        }
        if !missing.is_empty() {
            return Err(MigrateError::Refused {
                problems: missing,
                hints: vec!["nothing was reverted; write the missing down file(s), or revert fewer migrations (--steps / --to)".into()],
            });
        }
        if opts.dry_run {
            self.say(&format!(
                "-- dry run on database {} ({}): {} migration(s) would be reverted with this SQL",
                self.database,
                t.describe,
                list.len()
            ));
            self.say(&apply::ledger_ddl(t.backend)?);
            for (m, d) in &list {
                self.say(&apply::dry_run(
                    m,
                    *d,
                    t.backend,
                    self.lock_timeout(),
                    &self.applied_by,
                )?);
            }
            return Ok(RunReport::default());
        }
        self.say(&format!(
            "database {} ({}): reverting {} migration(s)",
            self.database,
            t.describe,
            list.len()
        ));
        self.run_list(t, &list, opts.restore_on_failure).await
    }

    /// Runs migrations in order after the pre-migration copy (SQLite), printing
    /// progress; on failure restores the copy when asked.
    async fn run_list(
        &self,
        t: &mut Target,
        list: &[(&Migration, Direction)],
        restore_on_failure: bool,
    ) -> Result<RunReport, MigrateError> {
        if restore_on_failure && t.backend != Backend::Sqlite {
            return Err(MigrateError::Refused {
                problems: vec!["--restore-on-failure works on SQLite databases only".into()],
                hints: vec!["on PostgreSQL each migration is rolled back on failure; use your PostgreSQL backups for more".into()],
            });
        }
        // Every file is read and split before anything runs: a bad third file must not
        // leave the first two applied.
        for (m, direction) in list {
            apply::parse(apply::file_of(m, *direction)?)?;
        }
        let mut report = RunReport {
            backup: self.backup(t).await?,
            ..RunReport::default()
        };
        if restore_on_failure && report.backup.is_none() {
            return Err(MigrateError::Refused {
                problems: vec![
                    "--restore-on-failure needs the pre-migration copy, but migrate_backup = false"
                        .into(),
                ],
                hints: vec![],
            });
        }
        let started = Instant::now();
        let applied_by = self.applied_by.clone();
        for (m, direction) in list {
            let verb = match direction {
                Direction::Up => "applying",
                Direction::Down => "reverting",
            };
            self.say(&format!("{verb} {} ...", m.id()));
            let outcome = self
                .runner(t, Some(applied_by.clone()))
                .run(m, *direction)
                .await;
            match outcome {
                Ok(Outcome::Done { ms }) => {
                    self.say(&format!("  done in {ms} ms"));
                    report.done.push((m.id(), *direction, ms));
                    // A session-level SET in one migration (search_path…) must not
                    // reach the next one or the ledger.
                    t.execute("RESET ALL").await.map_err(|e| {
                        MigrateError::Database(format!("RESET ALL after {}: {e}", m.id()))
                    })?;
                }
                Ok(Outcome::AlreadyDone) => {
                    self.say("  already done by another migration run; skipped");
                }
                Err(MigrateError::Failed(mut f)) => {
                    if let (true, Some(copy), Some(db)) =
                        (restore_on_failure, &report.backup, &t.sqlite)
                    {
                        self.say(&format!(
                            "restoring {} from {}",
                            db.path().display(),
                            copy.display()
                        ));
                        db.restore_from(copy).await.map_err(|e| {
                            MigrateError::Database(format!(
                                "{}\nrestoring from {} failed too: {e:#}",
                                failed(&f),
                                copy.display()
                            ))
                        })?;
                        f.restored_from = Some(copy.clone());
                    }
                    return Err(MigrateError::Failed(f));
                }
                Err(e) => return Err(e),
            }
        }
        self.say(&format!(
            "{} migration(s) done in {} ms",
            report.done.len(),
            started.elapsed().as_millis()
        ));
        Ok(report)
    }

    /// SQLite with `migrate_backup`: copies and verifies the file, prunes old
    /// copies, prints the path.
    async fn backup(&self, t: &Target) -> Result<Option<PathBuf>, MigrateError> {
        let (Some(db), DatabaseConfig::Sqlite(cfg)) = (&t.sqlite, self.config()) else {
            return Ok(None);
        };
        if !cfg.migrate_backup {
            return Ok(None);
        }
        let path = backup_path(db.path());
        let r = db.backup_verified(&path).await.map_err(|e| {
            MigrateError::Database(format!(
                "the copy of {} before migrating failed, so nothing was changed: {e:#}\nhint: free disk space, or set migrate_backup = false for this database",
                db.path().display()
            ))
        })?;
        self.say(&format!(
            "backup: {} ({} bytes, {} tables, {} rows, integrity ok)",
            r.path.display(),
            r.bytes,
            r.tables,
            r.rows
        ));
        prune_backups(db.path(), cfg.migrate_backup_keep, &self.out);
        Ok(Some(r.path))
    }

    async fn repair_locked(
        &self,
        t: &mut Target,
        files: &[Migration],
        dry_run: bool,
    ) -> Result<Vec<String>, MigrateError> {
        let status = self.current(t, files, dry_run).await?;
        let mut changes = Vec::new();
        for e in &status.entries {
            let (what, sql) = match e.state {
                State::ChecksumDrift => {
                    let m = files.iter().find(|m| m.version == e.version);
                    let Some(m) = m else { continue };
                    (
                        format!(
                            "{}: checksum {} recorded (was {})",
                            e.id(),
                            short_sum(&m.up.checksum),
                            short_sum(e.row.as_ref().map_or("", |r| r.checksum.as_str()))
                        ),
                        ledger::set_checksum(m),
                    )
                }
                State::MissingFile => (
                    format!("{}: files missing, row removed from the ledger", e.id()),
                    ledger::delete(e.version),
                ),
                State::Failed => (
                    format!(
                        "{}: failed mark removed; `unidb migrate up` runs it again",
                        e.id()
                    ),
                    ledger::delete(e.version),
                ),
                _ => continue,
            };
            if !dry_run {
                t.execute(&sql).await.map_err(|err| self.db_error(t, err))?;
            }
            self.say(&format!(
                "{}{what}",
                if dry_run {
                    "would repair "
                } else {
                    "repaired "
                }
            ));
            changes.push(what);
        }
        if changes.is_empty() {
            self.say(&format!("database {}: nothing to repair", self.database));
        }
        Ok(changes)
    }
}

fn short_sum(s: &str) -> String {
    s.chars().take(12).collect()
}

/// `user@host` of this process, for the ledger's `applied_by`.
pub fn default_applied_by() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(user_from_passwd)
        .unwrap_or_else(|| "unknown".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{user}@{host}")
}

/// The name of this process's user from /etc/passwd (when USER is not set, as
/// under some service managers).
fn user_from_passwd() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)? == uid).then(|| name.to_string())
    })
}

/// `<file>.pre-migrate-<UTC time>-<pid>` next to the database file (the pid keeps
/// two runs started in the same millisecond apart).
fn backup_path(db: &Path) -> PathBuf {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".pre-migrate-{stamp}-{}", std::process::id()));
    db.with_file_name(name)
}

/// Deletes all but the newest `keep` pre-migration copies of `db`.
fn prune_backups(db: &Path, keep: usize, out: &Progress) {
    let Some(file) = db.file_name().and_then(|f| f.to_str()) else {
        return;
    };
    let prefix = format!("{file}.pre-migrate-");
    let dir = match db.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let mut copies: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with(&prefix) && !n.ends_with("-wal") && !n.ends_with("-shm")
            })
        })
        .collect();
    copies.sort();
    let excess = copies.len().saturating_sub(keep);
    for old in &copies[..excess] {
        match std::fs::remove_file(old) {
            Ok(()) => out(&format!("removed old backup {}", old.display())),
            Err(e) => out(&format!("cannot remove old backup {}: {e}", old.display())),
        }
        for suffix in ["-wal", "-shm"] {
            let mut side = old.clone().into_os_string();
            side.push(suffix);
            let _ = std::fs::remove_file(side);
        }
    }
}

/// Applies pending migrations of every database with `migrate_on_start`, before
/// `serve` accepts clients. Progress goes to the log.
pub async fn on_start(state: &Arc<ServerState>) -> Result<(), MigrateError> {
    let mut names: Vec<&String> = state
        .config
        .databases
        .iter()
        .filter(|(_, c)| c.migrate_on_start())
        .map(|(n, _)| n)
        .collect();
    names.sort();
    for name in names {
        let db = name.clone();
        let out: Progress = Arc::new(move |line: &str| {
            tracing::info!(database = %db, "migrate: {line}");
        });
        let m = Migrator::new(state.clone(), name, out)?
            .with_applied_by(&format!("{} (migrate_on_start)", default_applied_by()));
        m.up(&UpOptions::default()).await?;
    }
    Ok(())
}
