//! Running one migration file on one database: in its own transaction together
//! with its ledger row (or, for `-- unidb: no-transaction` files, statement by
//! statement with the ledger row marking progress), with PostgreSQL's
//! `lock_timeout` and retries; and printing what would run (`--dry-run`).

use std::time::{Duration, Instant};

use super::ledger;
use super::source::{self, Direction, Migration, SqlFile, Statement};
use super::{Failure, MigrateError, Progress};
use crate::ops::target::{Backend, Target};
use crate::protocol::client::ClientError;

/// SQLSTATEs after which a PostgreSQL migration is rolled back and tried again:
/// lock_not_available (its `lock_timeout`), deadlock_detected.
const RETRYABLE: [&str; 2] = ["55P03", "40P01"];

/// How a migration runs.
pub struct Runner<'a> {
    pub target: &'a mut Target,
    pub out: &'a Progress,
    /// PostgreSQL: `lock_timeout` of each migration (a file's own directive wins).
    pub lock_timeout: Option<Duration>,
    /// PostgreSQL: retries after a lock timeout or a deadlock.
    pub lock_retries: u32,
    /// SQLite: how long to keep trying to start the migration's transaction while
    /// another writer holds the database.
    pub lock_wait: Duration,
    /// Who the ledger rows name; `None`: no ledger (validation on a scratch database).
    pub applied_by: Option<String>,
}

/// What happened to one migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done {
        ms: u64,
    },
    /// Another run applied (or reverted) it while this one waited for the lock.
    AlreadyDone,
}

/// Why one attempt failed.
enum AttemptError {
    /// At statement `index` (0-based; `None`: transaction control or the ledger).
    Statement {
        index: Option<usize>,
        error: ClientError,
    },
    /// The ledger says another run got there first.
    AlreadyDone,
}

impl Runner<'_> {
    /// Runs `m`'s file for `direction`.
    pub async fn run(
        &mut self,
        m: &Migration,
        direction: Direction,
    ) -> Result<Outcome, MigrateError> {
        let file = file_of(m, direction)?;
        let statements = parse(file)?;
        if file.directives.no_transaction {
            return self
                .run_outside_transaction(m, direction, file, &statements)
                .await;
        }
        let mut attempt = 0u32;
        loop {
            let started = Instant::now();
            match self.attempt(m, direction, file, &statements, started).await {
                Ok(()) => {
                    return Ok(Outcome::Done {
                        ms: started.elapsed().as_millis() as u64,
                    })
                }
                Err(AttemptError::AlreadyDone) => return Ok(Outcome::AlreadyDone),
                Err(AttemptError::Statement { index, error }) => {
                    let retryable = self.target.backend == Backend::Postgres
                        && error.code().is_some_and(|c| RETRYABLE.contains(&c));
                    if retryable && attempt < self.lock_retries {
                        attempt += 1;
                        let wait = Duration::from_millis((250u64 << attempt.min(5)).min(5000));
                        let what = index.map_or("the ledger".to_string(), |i| {
                            format!("statement {} ({})", i + 1, excerpt(&statements[i].sql, 60))
                        });
                        (self.out)(&format!(
                            "  {} at {what}: rolled back, retrying in {} ms (attempt {} of {})",
                            short_error(&error),
                            wait.as_millis(),
                            attempt + 1,
                            self.lock_retries + 1
                        ));
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    return Err(failure(
                        m,
                        direction,
                        file,
                        &statements,
                        index,
                        &error,
                        false,
                    ));
                }
            }
        }
    }

    /// One try: BEGIN, the statements, the ledger row, COMMIT; ROLLBACK on error.
    async fn attempt(
        &mut self,
        m: &Migration,
        direction: Direction,
        file: &SqlFile,
        statements: &[Statement],
        started: Instant,
    ) -> Result<(), AttemptError> {
        self.begin()
            .await
            .map_err(|error| AttemptError::Statement { index: None, error })?;
        let r = self.body(m, direction, file, statements, started).await;
        match r {
            Ok(()) => match self.target.execute("COMMIT").await {
                Ok(()) => Ok(()),
                Err(error) => {
                    self.rollback().await;
                    Err(AttemptError::Statement { index: None, error })
                }
            },
            Err(e) => {
                self.rollback().await;
                Err(e)
            }
        }
    }

    async fn body(
        &mut self,
        m: &Migration,
        direction: Direction,
        file: &SqlFile,
        statements: &[Statement],
        started: Instant,
    ) -> Result<(), AttemptError> {
        let ledger_err = |error| AttemptError::Statement { index: None, error };
        if self.applied_by.is_some() {
            // Inside the transaction (on SQLite: holding the write lock) the ledger
            // is authoritative: a concurrent run may have got here first.
            let present = ledger::has(self.target, m.version)
                .await
                .map_err(ledger_err)?;
            if present == (direction == Direction::Up) {
                return Err(AttemptError::AlreadyDone);
            }
        }
        if self.target.backend == Backend::Postgres {
            if let Some(t) = file.directives.lock_timeout.or(self.lock_timeout) {
                self.target
                    .execute(&format!("SET LOCAL lock_timeout = '{}ms'", t.as_millis()))
                    .await
                    .map_err(ledger_err)?;
            }
        }
        for (i, s) in statements.iter().enumerate() {
            self.target
                .execute(&s.sql)
                .await
                .map_err(|error| AttemptError::Statement {
                    index: Some(i),
                    error,
                })?;
            self.notices();
        }
        if let Some(by) = &self.applied_by {
            let sql = match direction {
                Direction::Up => ledger::insert(m, started.elapsed().as_millis() as u64, true, by),
                Direction::Down => ledger::delete(m.version),
            };
            self.target.execute(&sql).await.map_err(ledger_err)?;
        }
        Ok(())
    }

    /// `BEGIN`; on SQLite it waits for the write lock up to `lock_wait`.
    async fn begin(&mut self) -> Result<(), ClientError> {
        let deadline = Instant::now() + self.lock_wait;
        let mut told = false;
        loop {
            match self.target.execute("BEGIN").await {
                Err(e) if e.code() == Some("55P03") && Instant::now() < deadline => {
                    if !told {
                        (self.out)(
                            "  waiting for the database's write lock (another writer holds it)",
                        );
                        told = true;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                r => return r,
            }
        }
    }

    async fn rollback(&mut self) {
        if self.target.in_transaction() {
            if let Err(e) = self.target.execute("ROLLBACK").await {
                (self.out)(&format!("  ROLLBACK failed: {e}"));
            }
        }
    }

    fn notices(&self) {
        for n in self.target.notices() {
            (self.out)(&format!("  NOTICE: {n}"));
        }
    }

    /// `-- unidb: no-transaction`: the ledger row is written first with
    /// `success = false`, each statement commits on its own, and the row is marked
    /// done at the end. A failure leaves the row marked failed, which blocks
    /// further runs until someone looks (`repair`).
    async fn run_outside_transaction(
        &mut self,
        m: &Migration,
        direction: Direction,
        file: &SqlFile,
        statements: &[Statement],
    ) -> Result<Outcome, MigrateError> {
        let started = Instant::now();
        let fail = |index: Option<usize>, e: &ClientError, partial: bool| {
            failure(m, direction, file, statements, index, e, partial)
        };
        if let Some(by) = self.applied_by.clone() {
            // Claim the migration in a short transaction of its own.
            self.begin().await.map_err(|e| fail(None, &e, false))?;
            let claim = async {
                let present = ledger::has(self.target, m.version).await?;
                if present == (direction == Direction::Up) {
                    return Ok(false);
                }
                let sql = match direction {
                    Direction::Up => ledger::insert(m, 0, false, &by),
                    Direction::Down => ledger::unfinish(m.version),
                };
                self.target.execute(&sql).await?;
                self.target.execute("COMMIT").await?;
                Ok(true)
            }
            .await;
            match claim {
                Ok(true) => {}
                Ok(false) => {
                    self.rollback().await;
                    return Ok(Outcome::AlreadyDone);
                }
                Err(e) => {
                    self.rollback().await;
                    return Err(fail(None, &e, false));
                }
            }
        }
        let timeout = file.directives.lock_timeout.or(self.lock_timeout);
        let pg = self.target.backend == Backend::Postgres;
        if let (true, Some(t)) = (pg, timeout) {
            self.target
                .execute(&format!("SET lock_timeout = '{}ms'", t.as_millis()))
                .await
                .map_err(|e| fail(None, &e, false))?;
        }
        let mut result = Ok(());
        for (i, s) in statements.iter().enumerate() {
            if let Err(e) = self.target.execute(&s.sql).await {
                result = Err(fail(Some(i), &e, i > 0 || self.applied_by.is_some()));
                break;
            }
            self.notices();
        }
        if pg && timeout.is_some() {
            let _ = self.target.execute("RESET lock_timeout").await;
        }
        result?;
        let ms = started.elapsed().as_millis() as u64;
        if self.applied_by.is_some() {
            let sql = match direction {
                Direction::Up => ledger::finish(m.version, ms),
                Direction::Down => ledger::delete(m.version),
            };
            self.target
                .execute(&sql)
                .await
                .map_err(|e| fail(None, &e, true))?;
        }
        Ok(Outcome::Done { ms })
    }
}

pub(super) fn file_of(m: &Migration, direction: Direction) -> Result<&SqlFile, MigrateError> {
    match direction {
        Direction::Up => Ok(&m.up),
        Direction::Down => m.down.as_ref().ok_or_else(|| MigrateError::Refused {
            problems: vec![format!(
                "{} has no down file ({}_{}.down.sql)",
                m.id(),
                m.version_text,
                m.name
            )],
            hints: vec!["write the down file, or leave this migration applied".into()],
        }),
    }
}

/// The statements of a file; transaction control inside a file is refused.
pub fn parse(file: &SqlFile) -> Result<Vec<Statement>, MigrateError> {
    let statements = source::statements(&file.text).map_err(|e| {
        MigrateError::Source(source::SourceProblems(vec![format!(
            "{}: {e}",
            file.path.display()
        )]))
    })?;
    if let Some(s) = statements
        .iter()
        .find(|s| source::is_transaction_control(&s.sql))
    {
        return Err(MigrateError::Source(source::SourceProblems(vec![format!(
            "{}: line {}: `{}`: a migration must not manage transactions; each runs in one \
             transaction of its own (or none, with `-- unidb: no-transaction` in its header)",
            file.path.display(),
            s.line,
            excerpt(&s.sql, 40)
        )])));
    }
    Ok(statements)
}

fn failure(
    m: &Migration,
    direction: Direction,
    file: &SqlFile,
    statements: &[Statement],
    index: Option<usize>,
    error: &ClientError,
    partial: bool,
) -> MigrateError {
    let (statement, line, sql) = match index {
        Some(i) => (i + 1, statements[i].line, statements[i].sql.clone()),
        None => (0, 0, String::new()),
    };
    MigrateError::Failed(Box::new(Failure {
        migration: m.id(),
        direction,
        path: file.path.clone(),
        statement,
        statements: statements.len(),
        line,
        sql,
        error: error.to_string(),
        code: error.code().map(str::to_string),
        no_transaction: file.directives.no_transaction,
        connection_lost: !matches!(error, ClientError::Server(_)),
        partial,
        restored_from: None,
    }))
}

fn short_error(e: &ClientError) -> String {
    match e {
        ClientError::Server(s) => format!("{} ({})", s.message, s.code),
        other => other.to_string(),
    }
}

/// The first `max` characters of a statement on one line.
pub fn excerpt(sql: &str, max: usize) -> String {
    let flat: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        let cut: String = flat.chars().take(max).collect();
        format!("{cut}…")
    }
}

/// The SQL that running `m` in `direction` sends to the database, as that backend
/// runs it: on SQLite after rewriting (what SQLite itself executes), on PostgreSQL
/// as written.
pub fn dry_run(
    m: &Migration,
    direction: Direction,
    backend: Backend,
    lock_timeout: Option<Duration>,
    applied_by: &str,
) -> Result<String, MigrateError> {
    let file = file_of(m, direction)?;
    let statements = parse(file)?;
    let mut out = format!(
        "-- {} ({}, {})\n",
        m.id(),
        direction.as_str(),
        if file.directives.no_transaction {
            "no transaction"
        } else {
            "one transaction"
        }
    );
    let mut sqls: Vec<String> = Vec::new();
    let tx = !file.directives.no_transaction;
    let timeout = file.directives.lock_timeout.or(lock_timeout);
    if tx {
        sqls.push("BEGIN".into());
    } else {
        sqls.push(match direction {
            Direction::Up => ledger::insert(m, 0, false, applied_by),
            Direction::Down => ledger::unfinish(m.version),
        });
    }
    if backend == Backend::Postgres {
        if let Some(t) = timeout {
            let scope = if tx { "SET LOCAL" } else { "SET" };
            sqls.push(format!("{scope} lock_timeout = '{}ms'", t.as_millis()));
        }
    }
    sqls.extend(statements.iter().map(|s| s.sql.clone()));
    if backend == Backend::Postgres && !tx && timeout.is_some() {
        sqls.push("RESET lock_timeout".into());
    }
    sqls.push(match (direction, tx) {
        (Direction::Up, true) => ledger::insert(m, 0, true, applied_by),
        (Direction::Up, false) => ledger::finish(m.version, 0),
        (Direction::Down, _) => ledger::delete(m.version),
    });
    if tx {
        sqls.push("COMMIT".into());
    }
    for sql in sqls {
        match backend {
            Backend::Postgres => {
                out.push_str(&sql);
                out.push_str(";\n");
            }
            Backend::Sqlite => out.push_str(&sqlite_form(m, &sql)?),
        }
    }
    Ok(out)
}

/// The ledger's `CREATE TABLE IF NOT EXISTS`, as the backend runs it.
pub fn ledger_ddl(backend: Backend) -> Result<String, MigrateError> {
    let sql = ledger::CREATE;
    let body = match backend {
        Backend::Postgres => format!("{sql};\n"),
        Backend::Sqlite => crate::sql::plan(sql)
            .map_err(|e| MigrateError::Database(format!("the ledger's DDL: {}", e.message)))?
            .iter()
            .map(|s| format!("{};\n", s.sqlite_sql))
            .collect(),
    };
    Ok(format!("-- the ledger (created when missing)\n{body}"))
}

/// What SQLite runs for one PostgreSQL-dialect statement.
fn sqlite_form(m: &Migration, sql: &str) -> Result<String, MigrateError> {
    if sql == "BEGIN" {
        return Ok("BEGIN IMMEDIATE;\n".into());
    }
    if sql == "COMMIT" {
        return Ok("COMMIT;\n".into());
    }
    let plan = crate::sql::plan(sql).map_err(|e| MigrateError::Refused {
        problems: vec![format!(
            "{}: `{}` cannot run on SQLite: {} (SQLSTATE {})",
            m.id(),
            excerpt(sql, 80),
            e.message,
            e.code
        )],
        hints: vec!["rewrite the statement in a form both backends run".into()],
    })?;
    let mut out = String::new();
    for stmt in plan.iter() {
        if stmt.sqlite_sql.is_empty() {
            out.push_str(&format!(
                "-- answered by unidb itself: {}\n",
                excerpt(sql, 200)
            ));
            continue;
        }
        out.push_str(&stmt.sqlite_sql);
        out.push_str(";\n");
        for extra in &stmt.extra_sql {
            out.push_str(extra);
            out.push_str(";\n");
        }
    }
    Ok(out)
}
