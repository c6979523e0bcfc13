//! A database served from a SQLite file: one writer connection and a pool of reader
//! connections in WAL mode, each on its own thread, fed by channels; async sessions
//! never block on SQLite.
//!
//! Invariant: only this module touches rusqlite. The writer is leased to one session
//! at a time ([`WriterLease`]): for one autocommit statement, or for a whole client
//! transaction. A lease dropped while a transaction is open rolls it back before the
//! writer serves anyone else.

mod catalog;
mod copies;
mod errors;
mod functions;
mod locks;
mod queue;
mod rebuild;
mod system_catalog;
mod worker;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64};

pub use crate::backend::CancelSlot;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

pub use copies::BackupReport;
pub use functions::SessionView;
use queue::JobQueue;
pub use worker::{ExecArgs, ExecError, ExecOutput, Worker};

use crate::config::SqliteConfig;
use crate::error::{code, PgError, PgResult};
use crate::sql::PlanCache;

type Job = Box<dyn FnOnce(&mut Worker) + Send>;

/// State shared by the database handle and its worker threads.
pub struct Shared {
    pub name: String,
    /// Advisory locks taken by this database's sessions.
    pub locks: Arc<locks::AdvisoryLocks>,
    /// Bumped after DDL and after the end of a transaction that ran DDL; workers
    /// reload the side catalog and forget cached descriptions when it moves.
    pub schema_gen: AtomicU64,
}

/// A SQLite-backed database.
pub struct SqliteDb {
    shared: Arc<Shared>,
    config: SqliteConfig,
    plans: PlanCache,
    readers: Arc<JobQueue<Job>>,
    writer: Arc<JobQueue<Job>>,
    writer_permit: Arc<Semaphore>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl SqliteDb {
    /// Opens (creating if needed) the database file and starts its threads.
    pub fn open(name: &str, config: &SqliteConfig) -> anyhow::Result<Arc<SqliteDb>> {
        if let Some(dir) = config.path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    anyhow::anyhow!(
                        "cannot create directory {} for database {name}: {e}",
                        dir.display()
                    )
                })?;
            }
        }
        let shared = Arc::new(Shared {
            name: name.to_string(),
            locks: Arc::new(locks::AdvisoryLocks::default()),
            schema_gen: AtomicU64::new(1),
        });
        let writer_conn = open_connection(&config.path, config, name, false, &shared.locks)?;
        catalog::ensure_table(&writer_conn.0)?;
        let writer_queue = Arc::new(JobQueue::new());
        let reader_queue = Arc::new(JobQueue::new());
        let mut threads = Vec::new();
        let w = Worker::new(writer_conn.0, writer_conn.1, shared.clone(), true);
        threads.push(spawn_worker(
            format!("{name}-writer"),
            w,
            writer_queue.clone(),
        )?);
        for i in 0..config.readers {
            let conn = open_connection(&config.path, config, name, true, &shared.locks)?;
            let w = Worker::new(conn.0, conn.1, shared.clone(), false);
            threads.push(spawn_worker(
                format!("{name}-reader-{i}"),
                w,
                reader_queue.clone(),
            )?);
        }
        Ok(Arc::new(SqliteDb {
            shared,
            config: config.clone(),
            plans: PlanCache::new(config.statement_cache),
            readers: reader_queue,
            writer: writer_queue,
            writer_permit: Arc::new(Semaphore::new(1)),
            threads: Mutex::new(threads),
        }))
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// `retry_attempts` from the configuration.
    pub fn retry_attempts(&self) -> u32 {
        self.config.retry_attempts
    }

    /// `storage_limit` from the configuration.
    pub fn storage_limit(&self) -> Option<u64> {
        self.config.storage_limit
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.config.path
    }

    /// 1 while a session holds the writer (a write transaction is open), else 0.
    /// The session `pid` ended (`xact_only`: its transaction ended): its advisory
    /// locks are released.
    pub fn release_advisory_locks(&self, pid: i32, xact_only: bool) {
        self.shared.locks.release_all(pid, xact_only);
    }

    pub fn busy(&self) -> usize {
        1 - self.writer_permit.available_permits().min(1)
    }

    /// Bytes on disk: the database file and its WAL.
    pub fn storage_bytes(&self) -> u64 {
        let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let mut wal = self.config.path.clone().into_os_string();
        wal.push("-wal");
        size(&self.config.path) + size(Path::new(&wal))
    }

    pub fn plans(&self) -> &PlanCache {
        &self.plans
    }

    /// Runs `f` on a reader connection.
    pub async fn on_reader<R: Send + 'static>(
        &self,
        cancel: &Arc<CancelSlot>,
        f: impl FnOnce(&mut Worker) -> R + Send + 'static,
    ) -> PgResult<R> {
        run_job(&self.readers, cancel, f).await
    }

    /// Takes the writer, waiting at most `busy_timeout` for another session's
    /// transaction to end. A CancelRequest ends the wait with `57014`.
    pub async fn lease_writer(self: &Arc<Self>, cancel: &Arc<CancelSlot>) -> PgResult<WriterLease> {
        let acquire = self.writer_permit.clone().acquire_owned();
        let permit = tokio::select! {
            p = tokio::time::timeout(self.config.busy_timeout, acquire) => match p {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) => return Err(PgError::fatal(code::ADMIN_SHUTDOWN, "terminating connection due to administrator command")),
                Err(_) => return Err(PgError::new(
                    code::LOCK_NOT_AVAILABLE,
                    format!(
                        "could not obtain the write lock of database \"{}\" within {} ms: another transaction holds it",
                        self.name(),
                        self.config.busy_timeout.as_millis()
                    ),
                ).with_hint("keep write transactions short, or raise busy_timeout")),
            },
            _ = cancel.woken() => return Err(PgError::canceled()),
        };
        Ok(WriterLease {
            db: self.clone(),
            _permit: permit,
            in_transaction: false,
            ran_ddl: false,
        })
    }

    /// Stops taking work, lets queued work finish, checkpoints and closes every
    /// connection. Waits for the writer to be free for at most `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        if tokio::time::timeout(grace, self.writer_permit.acquire())
            .await
            .is_err()
        {
            tracing::warn!(database = %self.name(), "a transaction was still open at shutdown; it is rolled back");
        }
        self.writer_permit.close();
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |w: &mut Worker| {
            let _ = tx.send(w.checkpoint());
        });
        if self.writer.push(job).is_ok() {
            if let Ok(Err(e)) = rx.await {
                tracing::warn!(database = %self.name(), error = %e, "checkpoint at shutdown failed");
            }
        }
        // Workers finish what is queued, then see the closed queue and exit.
        self.readers.close();
        self.writer.close();
        let threads: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// Exclusive use of the writer connection.
pub struct WriterLease {
    db: Arc<SqliteDb>,
    _permit: OwnedSemaphorePermit,
    /// A client transaction is open on the writer.
    pub in_transaction: bool,
    /// The open transaction ran DDL (the schema generation moves at its end).
    pub ran_ddl: bool,
}

impl WriterLease {
    pub async fn run<R: Send + 'static>(
        &self,
        cancel: &Arc<CancelSlot>,
        f: impl FnOnce(&mut Worker) -> R + Send + 'static,
    ) -> PgResult<R> {
        run_job(&self.db.writer, cancel, f).await
    }

    pub fn db(&self) -> &Arc<SqliteDb> {
        &self.db
    }
}

impl Drop for WriterLease {
    fn drop(&mut self) {
        if self.in_transaction {
            // Queued before the permit is released, so it runs before the next
            // session's first statement on the writer.
            let ddl = self.ran_ddl;
            let job: Job = Box::new(move |w: &mut Worker| w.rollback_abandoned(ddl));
            let _ = self.db.writer.push(job);
        }
    }
}

async fn run_job<R: Send + 'static>(
    queue: &JobQueue<Job>,
    cancel: &Arc<CancelSlot>,
    f: impl FnOnce(&mut Worker) -> R + Send + 'static,
) -> PgResult<R> {
    let (tx, rx) = oneshot::channel();
    let slot = cancel.clone();
    let job: Job = Box::new(move |w: &mut Worker| {
        w.clear_cancel();
        slot.set(Some(w.cancel_handle()));
        let r = f(w);
        slot.set(None);
        let _ = tx.send(r);
    });
    queue.push(job).map_err(|_| {
        PgError::fatal(
            code::ADMIN_SHUTDOWN,
            "terminating connection: the database is shutting down",
        )
    })?;
    rx.await
        .map_err(|_| PgError::internal("the database worker stopped while running the statement"))
}

fn spawn_worker(
    name: String,
    mut worker: Worker,
    queue: Arc<JobQueue<Job>>,
) -> anyhow::Result<JoinHandle<()>> {
    Ok(std::thread::Builder::new().name(name).spawn(move || {
        let mut finished = false;
        while let Some(job) = queue.pop(finished) {
            job(&mut worker);
            finished = true;
        }
    })?)
}

/// Opens a connection with unidb's pragmas and functions.
fn open_connection(
    path: &Path,
    config: &SqliteConfig,
    database: &str,
    read_only: bool,
    locks: &Arc<locks::AdvisoryLocks>,
) -> anyhow::Result<(Connection, Arc<AtomicBool>)> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI
    };
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| anyhow::anyhow!("cannot open SQLite database {}: {e}", path.display()))?;
    conn.busy_timeout(config.busy_timeout)?;
    if !read_only {
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            anyhow::bail!(
                "cannot put {} in WAL mode (journal_mode is {mode})",
                path.display()
            );
        }
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous={}; PRAGMA foreign_keys=ON; PRAGMA case_sensitive_like=ON; PRAGMA cache_size={}; PRAGMA mmap_size={};",
        config.synchronous.pragma_value(),
        config.cache_size,
        config.mmap_size
    ))?;
    conn.set_prepared_statement_cache_capacity(worker::STATEMENT_CACHE);
    let cancel = Arc::new(AtomicBool::new(false));
    functions::register(&conn, database, cancel.clone(), locks.clone())?;
    rusqlite::vtab::series::load_module(&conn)?;
    Ok((conn, cancel))
}
