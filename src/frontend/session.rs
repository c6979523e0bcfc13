//! One client session: the simple and extended query protocols over a SQLite
//! database, with PostgreSQL's transaction semantics (explicit transactions hold
//! the writer; errors put the transaction in the failed state until ROLLBACK).
//!
//! The loop reads a message, handles it, and flushes replies only when no further
//! message is already buffered, so pipelined extended-protocol batches get one write.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use pgwire::messages::extendedquery::{Bind, Close, Describe, Execute, Parse};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::copy;
use super::gucs::Gucs;
use crate::backend::sqlite::{CancelSlot, ExecArgs, ExecError, ExecOutput, SqliteDb, WriterLease};
use crate::error::{code, PgError, PgResult, Severity};
use crate::observe::{DbObs, Fp, FpCache};
use crate::protocol::write as msg;
use crate::protocol::{Column, Frontend, FrontendReader, ReadError, TransactionStatus};
use crate::server::{Pause, ServerState};
use crate::sql::{CopySpec, Kind, Plan};
use crate::types::PgType;

enum Tx {
    Idle,
    Open(WriterLease),
    Failed(WriterLease),
}

struct Prepared {
    plan: Plan,
    param_oids: Vec<u32>,
    fp: Option<Fp>,
}

/// Rows of an executed portal not yet sent (Execute with a row limit).
struct Pending {
    out: ExecOutput,
    /// Index into `out.row_ends` of the next row to send.
    next: usize,
    tag: String,
}

struct Portal {
    plan: Plan,
    param_oids: Vec<u32>,
    params: Vec<Option<Bytes>>,
    param_formats: Vec<i16>,
    result_formats: Vec<i16>,
    pending: Option<Pending>,
    /// Ran to completion: further Executes return no rows, as in PostgreSQL.
    exhausted: bool,
    fp: Option<Fp>,
}

pub struct Session<S> {
    stream: S,
    reader: FrontendReader,
    out: BytesMut,
    db: Arc<SqliteDb>,
    cancel: Arc<CancelSlot>,
    tx: Tx,
    statements: HashMap<String, Prepared>,
    portals: HashMap<String, Portal>,
    gucs: Gucs,
    /// After an error in the extended protocol, messages are skipped until Sync.
    skip_until_sync: bool,
    /// Describe of a portal deferred so that it can run with the following Execute.
    pending_describe: Option<String>,
    state: Arc<ServerState>,
    pid: i32,
    secret: i32,
    /// Output of the last chunked execution, taken by `execute`.
    last_output: Option<ExecOutput>,
    /// Row pieces streamed by the SQLite thread while a statement runs; one channel
    /// serves every statement of the session, as they run one at a time.
    rows_tx: mpsc::Sender<BytesMut>,
    rows_rx: mpsc::Receiver<BytesMut>,
    /// Statement timing (`None` when `[observe] enabled = false`).
    obs: Option<Arc<DbObs>>,
    fps: FpCache,
    /// Rows and error of the statement being timed.
    stmt_rows: u64,
    stmt_error: Option<&'static str>,
    pause: Arc<Pause>,
    /// User and pid, for `current_user` and `pg_backend_pid()` in statements.
    who: Arc<crate::backend::sqlite::SessionView>,
}

/// How a session ends.
enum End {
    Terminate,
    Closed,
    Fatal(PgError),
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        stream: S,
        reader: FrontendReader,
        db: Arc<SqliteDb>,
        cancel: Arc<CancelSlot>,
        pid: i32,
        secret: i32,
        user: String,
        startup: BTreeMap<String, String>,
        state: Arc<ServerState>,
        greeting: BytesMut,
    ) -> Session<S> {
        let (rows_tx, rows_rx) = mpsc::channel(4);
        let pause = state.pauses[db.name()].clone();
        let obs = state
            .observer
            .db(db.name())
            .filter(|o| o.enabled())
            .cloned();
        let session = Session {
            stream,
            reader,
            out: {
                let mut out = greeting;
                out.reserve(16 * 1024);
                out
            },
            db,
            cancel,
            tx: Tx::Idle,
            statements: HashMap::new(),
            portals: HashMap::new(),
            gucs: Gucs::new(&user, &startup),
            skip_until_sync: false,
            pending_describe: None,
            state,
            pid,
            secret,
            last_output: None,
            rows_tx,
            rows_rx,
            obs,
            fps: FpCache::default(),
            stmt_rows: 0,
            stmt_error: None,
            pause,
            who: Arc::new(crate::backend::sqlite::SessionView {
                user: Arc::from(user.as_str()),
                pid,
                txid: std::sync::atomic::AtomicI64::new(0),
                settings: std::sync::RwLock::new(HashMap::new()),
            }),
        };
        session.sync_settings();
        session
    }

    /// A session that `PAUSE` does not hold (unidb's own migrations: an operator
    /// pauses traffic, migrates, resumes).
    pub fn exempt_from_pause(mut self) -> Self {
        self.pause = Arc::new(Pause::default());
        self
    }

    fn status(&self) -> TransactionStatus {
        match self.tx {
            Tx::Idle => TransactionStatus::Idle,
            Tx::Open(_) => TransactionStatus::Transaction,
            Tx::Failed(_) => TransactionStatus::Error,
        }
    }

    pub async fn run(mut self) {
        for (k, v) in self.gucs.reported() {
            msg::parameter_status(&mut self.out, &k, &v);
        }
        msg::backend_key_data(&mut self.out, self.pid, self.secret);
        msg::ready(&mut self.out, TransactionStatus::Idle);
        let end = match self.flush().await {
            Ok(()) => self.serve().await,
            Err(_) => End::Closed,
        };
        match end {
            End::Fatal(e) => {
                msg::error(&mut self.out, &e);
                let _ = self.flush().await;
            }
            End::Terminate | End::Closed => {}
        }
        // Dropping the session drops any writer lease, which rolls back an open
        // transaction before the writer serves another client.
        self.db.release_advisory_locks(self.pid, false);
        let _ = self.stream.shutdown().await;
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        self.stream.flush().await
    }

    async fn next_message(&mut self) -> Result<Frontend, End> {
        let idle = matches!(self.tx, Tx::Idle);
        let idle_timeout = self.state.config.server.idle_timeout;
        let mut shutdown = self.state.shutdown.clone();
        let read = self.reader.next(&mut self.stream);
        let result = tokio::select! {
            r = read => r,
            _ = async {
                if !idle { std::future::pending::<()>().await }
                while !*shutdown.borrow_and_update() {
                    if shutdown.changed().await.is_err() { std::future::pending::<()>().await }
                }
            } => return Err(End::Fatal(PgError::fatal(code::ADMIN_SHUTDOWN, "terminating connection due to administrator command"))),
            _ = async {
                if !idle || idle_timeout.is_zero() { std::future::pending::<()>().await }
                tokio::time::sleep(idle_timeout).await
            } => return Err(End::Fatal(PgError::fatal(code::IDLE_SESSION_TIMEOUT, "terminating connection due to idle-session timeout"))),
        };
        result.map_err(|e| match e {
            ReadError::Closed | ReadError::Io(_) => End::Closed,
            ReadError::Invalid(m) => {
                tracing::info!(pid = self.pid, error = %m, "invalid message from client; closing the connection");
                End::Fatal(PgError::protocol(format!("invalid frontend message: {m}")))
            }
            ReadError::TooLarge(size, max) => End::Fatal(PgError::fatal(
                code::PROGRAM_LIMIT_EXCEEDED,
                format!("message of {size} bytes exceeds server.max_message_size ({max} bytes)"),
            )),
        })
    }

    async fn serve(&mut self) -> End {
        loop {
            // After a transaction ends during shutdown, close instead of waiting.
            if matches!(self.tx, Tx::Idle) && *self.state.shutdown.borrow() {
                return End::Fatal(PgError::fatal(
                    code::ADMIN_SHUTDOWN,
                    "terminating connection due to administrator command",
                ));
            }
            let message = match self.next_message().await {
                Ok(m) => m,
                Err(end) => return end,
            };
            if let Some(end) = self.handle(message).await {
                return end;
            }
            let batch_more = self.reader.has_message() && self.out.len() <= 64 * 1024;
            if !batch_more && self.flush().await.is_err() {
                return End::Closed;
            }
        }
    }

    async fn handle(&mut self, message: Frontend) -> Option<End> {
        // PAUSE: a new transaction (or autocommit statement) waits until RESUME.
        if matches!(message, Frontend::Query(_) | Frontend::Execute(_))
            && matches!(self.tx, Tx::Idle)
            && self.pause.is_paused()
        {
            self.pause.wait_resumed().await;
        }
        // A deferred Describe runs now unless this is the Execute it was waiting for.
        if let Some(portal) = self.pending_describe.take() {
            let same = matches!(&message, Frontend::Execute(e) if e.name.as_deref().unwrap_or_default() == portal);
            if same {
                self.pending_describe = Some(portal);
            } else {
                let r = self.describe_portal(&portal).await;
                self.extended_result(r);
            }
        }
        match message {
            Frontend::Query(q) => {
                let start = self.timing_start();
                let r = self.simple_query(&q.query).await;
                if let Some(start) = start {
                    let fp = self.fp_of(q.query.as_bytes());
                    self.record(fp, start);
                }
                if let Err(e) = r {
                    if e.severity == Severity::Fatal {
                        return Some(End::Fatal(e));
                    }
                }
                let status = self.status();
                msg::ready(&mut self.out, status);
            }
            Frontend::Parse(p) => {
                if !self.skip_until_sync {
                    let start = self.timing_start();
                    let fp = start.and_then(|_| self.fp_of(p.query.as_bytes()));
                    let r = self.parse(p, fp);
                    let failed = r.is_err();
                    self.extended_result(r);
                    if let (Some(start), true) = (start, failed) {
                        // A statement that cannot be prepared counts as a failed call.
                        self.record(fp, start);
                    }
                }
            }
            Frontend::Bind(b) => {
                if !self.skip_until_sync {
                    let start = self.timing_start();
                    let fp = self
                        .statements
                        .get(b.statement_name.as_deref().unwrap_or_default())
                        .and_then(|p| p.fp);
                    let r = self.bind(b, fp);
                    let failed = r.is_err();
                    self.extended_result(r);
                    if let (Some(start), true) = (start, failed) {
                        self.record(fp, start);
                    }
                }
            }
            Frontend::Describe(d) => {
                if !self.skip_until_sync {
                    let r = self.describe(d).await;
                    self.extended_result(r);
                }
            }
            Frontend::Execute(e) => {
                if !self.skip_until_sync {
                    let start = self.timing_start();
                    let fp = self
                        .portals
                        .get(e.name.as_deref().unwrap_or_default())
                        .and_then(|p| p.fp);
                    let r = self.execute(e).await;
                    self.extended_result(r);
                    if let Some(start) = start {
                        self.record(fp, start);
                    }
                } else {
                    self.pending_describe = None;
                }
            }
            Frontend::Close(c) => {
                if !self.skip_until_sync {
                    self.close(c);
                }
            }
            Frontend::Sync(_) => {
                self.skip_until_sync = false;
                let status = self.status();
                msg::ready(&mut self.out, status);
            }
            Frontend::Flush(_) => {
                if self.flush().await.is_err() {
                    return Some(End::Closed);
                }
            }
            Frontend::Terminate(_) => return Some(End::Terminate),
            Frontend::CopyData(_) | Frontend::CopyDone(_) | Frontend::CopyFail(_) => {
                // No COPY is ever started on this backend; stray COPY messages are ignored
                // as PostgreSQL does outside COPY mode.
            }
            other => {
                return Some(End::Fatal(PgError::protocol(format!(
                    "unexpected message during a session: {other:?}"
                ))))
            }
        }
        None
    }

    /// Reports an extended-protocol error and skips to the next Sync.
    fn extended_result(&mut self, r: PgResult<()>) {
        if let Err(e) = r {
            self.error(&e);
            self.skip_until_sync = true;
        }
    }

    /// Starts timing a statement (when timing is on).
    fn timing_start(&mut self) -> Option<Instant> {
        self.obs.as_ref()?;
        self.stmt_rows = 0;
        self.stmt_error = None;
        Some(Instant::now())
    }

    fn fp_of(&mut self, sql: &[u8]) -> Option<Fp> {
        let obs = self.obs.as_ref()?;
        Some(self.fps.get(obs, sql))
    }

    fn record(&mut self, fp: Option<Fp>, start: Instant) {
        if let (Some(obs), Some(fp)) = (&self.obs, fp) {
            obs.record(
                fp,
                start.elapsed(),
                Duration::ZERO,
                self.stmt_rows,
                self.stmt_error,
            );
        }
    }

    /// Sends an error and marks an open transaction failed.
    fn error(&mut self, e: &PgError) {
        self.stmt_error = Some(e.code);
        msg::error(&mut self.out, e);
        self.tx = match std::mem::replace(&mut self.tx, Tx::Idle) {
            Tx::Open(l) | Tx::Failed(l) => Tx::Failed(l),
            Tx::Idle => Tx::Idle,
        };
    }

    /// A transaction (or an autocommitted statement) ended: its transaction-level
    /// advisory locks are released and the next one gets a new `txid_current()`.
    fn end_of_transaction(&self) {
        self.who.txid.store(0, std::sync::atomic::Ordering::Relaxed);
        self.db.release_advisory_locks(self.pid, true);
    }

    /// Publishes the settings to statements (`current_setting()`).
    fn sync_settings(&self) {
        *self
            .who
            .settings
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = self.gucs.all();
    }

    // ------------------------------------------------------------ simple query

    async fn simple_query(&mut self, sql: &str) -> PgResult<()> {
        // A single statement with literals runs as a parameterised statement, so that
        // statements differing only in literals share one plan and prepared statement.
        if let Some(n) = crate::sql::normalize::normalize(sql) {
            match self.db.plans().get_normalized(&n) {
                // Catalog queries run as written: `'16385'::regclass` must stay a
                // literal to be read as an oid.
                Ok(plan) if plan.len() == 1 && !plan[0].system_catalog => {
                    let args = PortalArgs {
                        params: n
                            .literals
                            .iter()
                            .map(|l| Some(Bytes::copy_from_slice(l.text().as_bytes())))
                            .collect(),
                        param_formats: Vec::new(),
                        param_oids: Vec::new(),
                        result_formats: Vec::new(),
                        describe: plan[0].returns_rows,
                        simple: true,
                        chunked: false,
                    };
                    if let Err(e) = self.run_statement(&plan, 0, Some(args)).await {
                        if e.severity == Severity::Fatal {
                            return Err(e);
                        }
                        self.error(&e);
                    }
                    return Ok(());
                }
                // Anything unusual: plan the text as written.
                _ => {}
            }
        }
        let plan = match self.db.plans().get(sql) {
            Ok(p) => p,
            Err(e) => {
                self.error(&e);
                return Ok(());
            }
        };
        if plan.is_empty() {
            msg::empty_query(&mut self.out);
            return Ok(());
        }
        // Several statements outside a transaction run as one implicit transaction,
        // unless they manage transactions themselves.
        let implicit = plan.len() > 1
            && matches!(self.tx, Tx::Idle)
            && plan.iter().any(|s| s.needs_writer())
            && !plan.iter().any(|s| {
                matches!(
                    s.kind,
                    Kind::Begin | Kind::Commit | Kind::Rollback | Kind::RollbackToSavepoint
                )
            });
        if implicit {
            let lease = match self.db.lease_writer(&self.cancel).await {
                Ok(l) => l,
                Err(e) => {
                    self.error(&e);
                    return Ok(());
                }
            };
            if let Err(e) = self.begin_on(lease).await {
                self.error(&e);
                return Ok(());
            }
        }
        let mut failed = false;
        for i in 0..plan.len() {
            if let Err(e) = self.run_statement(&plan, i, None).await {
                if e.severity == Severity::Fatal {
                    return Err(e);
                }
                self.error(&e);
                failed = true;
                break;
            }
        }
        if implicit {
            let sql = if failed { "ROLLBACK" } else { "COMMIT" };
            if let Err(e) = self.end_transaction(sql).await {
                self.error(&e);
            }
        }
        Ok(())
    }

    /// Runs statement `index` of `plan` and writes its results. `portal` carries
    /// the extended protocol's bound parameters; `None` is the simple protocol.
    async fn run_statement(
        &mut self,
        plan: &Plan,
        index: usize,
        portal: Option<PortalArgs>,
    ) -> PgResult<()> {
        let stmt = &plan[index];
        if matches!(self.tx, Tx::Failed(_))
            && !matches!(
                stmt.kind,
                Kind::Rollback | Kind::Commit | Kind::RollbackToSavepoint
            )
        {
            return Err(PgError::new(
                code::IN_FAILED_SQL_TRANSACTION,
                "current transaction is aborted, commands ignored until end of transaction block",
            ));
        }
        match &stmt.kind {
            Kind::Begin => {
                if matches!(self.tx, Tx::Idle) {
                    let lease = self.db.lease_writer(&self.cancel).await?;
                    self.begin_on(lease).await?;
                } else {
                    msg::notice(&mut self.out, "there is already a transaction in progress");
                }
                msg::command_complete(&mut self.out, "BEGIN");
            }
            Kind::Commit | Kind::Rollback => {
                let was_failed = matches!(self.tx, Tx::Failed(_));
                if matches!(self.tx, Tx::Idle) {
                    msg::notice(&mut self.out, "there is no transaction in progress");
                } else {
                    let sql = if stmt.kind == Kind::Commit && !was_failed {
                        "COMMIT"
                    } else {
                        "ROLLBACK"
                    };
                    self.end_transaction(sql).await?;
                }
                let tag = if stmt.kind == Kind::Rollback || was_failed {
                    "ROLLBACK"
                } else {
                    "COMMIT"
                };
                msg::command_complete(&mut self.out, tag);
            }
            Kind::RollbackToSavepoint => {
                let lease = match std::mem::replace(&mut self.tx, Tx::Idle) {
                    Tx::Open(l) | Tx::Failed(l) => l,
                    Tx::Idle => {
                        return Err(PgError::new(
                            code::NO_ACTIVE_SQL_TRANSACTION,
                            "ROLLBACK TO SAVEPOINT can only be used in transaction blocks",
                        ))
                    }
                };
                let sql = stmt.sqlite_sql.clone();
                let r = lease
                    .run(&self.cancel, move |w| w.control(&sql, false))
                    .await
                    .and_then(|r| r);
                self.tx = Tx::Open(lease);
                r?;
                msg::command_complete(&mut self.out, "ROLLBACK");
            }
            Kind::Set { name, value, local } => {
                match self.gucs.set_scoped(name, value.as_deref(), *local)? {
                    Ok(Some((k, v))) => msg::parameter_status(&mut self.out, &k, &v),
                    Ok(None) => {}
                    Err(warning) => msg::notice(&mut self.out, warning),
                }
                self.sync_settings();
                msg::command_complete(&mut self.out, "SET");
            }
            Kind::Show { name } => {
                let value = if name == "all" {
                    return Err(PgError::unsupported("SHOW ALL"));
                } else {
                    self.gucs.get(name)?
                };
                let describe = portal.as_ref().is_none_or(|p| p.describe);
                let formats = portal
                    .as_ref()
                    .map(|p| p.result_formats.clone())
                    .unwrap_or_default();
                if describe {
                    msg::row_description(
                        &mut self.out,
                        &[Column {
                            name: name.clone(),
                            ty: PgType::Text,
                        }],
                        &formats,
                    );
                }
                let mut w = crate::protocol::DataRowWriter::begin(&mut self.out, 1);
                w.field(|b| {
                    b.extend_from_slice(value.as_bytes());
                    Ok::<(), ()>(())
                })
                .ok();
                w.finish();
                msg::command_complete(&mut self.out, "SHOW");
            }
            Kind::Reset { name } => {
                for (k, v) in self.gucs.reset(name.as_deref()) {
                    msg::parameter_status(&mut self.out, &k, &v);
                }
                self.sync_settings();
                msg::command_complete(&mut self.out, "RESET");
            }
            Kind::DiscardAll => {
                if !matches!(self.tx, Tx::Idle) {
                    return Err(PgError::new(
                        code::ACTIVE_SQL_TRANSACTION,
                        "DISCARD ALL cannot run inside a transaction block",
                    ));
                }
                for (k, v) in self.gucs.reset(None) {
                    msg::parameter_status(&mut self.out, &k, &v);
                }
                self.sync_settings();
                self.statements.clear();
                self.portals.clear();
                msg::command_complete(&mut self.out, "DISCARD ALL");
            }
            Kind::Prepare {
                name,
                param_oids,
                query,
            } => {
                if self.statements.contains_key(name) {
                    return Err(PgError::new(
                        code::DUPLICATE_PREPARED_STATEMENT,
                        format!("prepared statement \"{name}\" already exists"),
                    ));
                }
                let plan = self.db.plans().get(query)?;
                self.statements.insert(
                    name.clone(),
                    Prepared {
                        plan,
                        param_oids: param_oids.clone(),
                        fp: None,
                    },
                );
                msg::command_complete(&mut self.out, "PREPARE");
            }
            Kind::Execute { name, params } => {
                let Some(prepared) = self.statements.get(name) else {
                    return Err(PgError::new(
                        code::INVALID_SQL_STATEMENT_NAME,
                        format!("prepared statement \"{name}\" does not exist"),
                    ));
                };
                let inner = prepared.plan.clone();
                if inner.is_empty() {
                    msg::empty_query(&mut self.out);
                    return Ok(());
                }
                let args = PortalArgs {
                    params: params
                        .iter()
                        .map(|p| p.as_ref().map(|v| Bytes::copy_from_slice(v.as_bytes())))
                        .collect(),
                    param_formats: Vec::new(),
                    param_oids: prepared.param_oids.clone(),
                    result_formats: Vec::new(),
                    describe: inner[0].returns_rows,
                    simple: true,
                    chunked: false,
                };
                if matches!(inner[0].kind, Kind::Execute { .. } | Kind::Prepare { .. }) {
                    return Err(PgError::unsupported("EXECUTE of a PREPARE or EXECUTE"));
                }
                return Box::pin(self.run_statement(&inner, 0, Some(args))).await;
            }
            Kind::Copy(spec) => {
                if spec.from_stdin {
                    self.copy_in(spec).await?;
                } else {
                    self.copy_out(spec).await?;
                }
            }
            Kind::Deallocate { name } => {
                match name {
                    Some(n) => {
                        if self.statements.remove(n).is_none() {
                            return Err(PgError::new(
                                code::INVALID_SQL_STATEMENT_NAME,
                                format!("prepared statement \"{n}\" does not exist"),
                            ));
                        }
                    }
                    None => self.statements.clear(),
                }
                msg::command_complete(&mut self.out, "DEALLOCATE");
            }
            Kind::Noop => msg::command_complete(&mut self.out, stmt.tag),
            Kind::Read | Kind::Write | Kind::Ddl => {
                let args = match portal {
                    Some(p) => ExecArgs {
                        plan: plan.clone(),
                        index,
                        params: p.params,
                        param_formats: p.param_formats,
                        param_oids: p.param_oids,
                        result_formats: p.result_formats,
                        describe: p.describe,
                        simple: p.simple,
                        chunked: p.chunked,
                        sink: None,
                        session: Some(self.who.clone()),
                    },
                    None => ExecArgs {
                        plan: plan.clone(),
                        index,
                        params: Vec::new(),
                        param_formats: Vec::new(),
                        param_oids: Vec::new(),
                        result_formats: Vec::new(),
                        describe: stmt.returns_rows,
                        simple: true,
                        chunked: false,
                        sink: None,
                        session: Some(self.who.clone()),
                    },
                };
                let chunked = args.chunked;
                let output = self.exec(args).await?;
                self.stmt_rows += output.rows;
                if chunked {
                    // The caller sends rows in portions.
                    self.last_output = Some(output);
                } else {
                    self.out.extend_from_slice(&output.data);
                    msg::command_complete(&mut self.out, &command_tag(stmt.tag, output.rows));
                }
                if matches!(self.tx, Tx::Idle) {
                    self.end_of_transaction();
                }
            }
        }
        Ok(())
    }

    /// Executes on the right connection: inside a transaction on the leased writer,
    /// reads outside one on a reader, writes outside one on the writer (autocommit).
    async fn exec(&mut self, mut args: ExecArgs) -> PgResult<ExecOutput> {
        let needs_writer = args.plan[args.index].needs_writer();
        let is_ddl = args.plan[args.index].kind == Kind::Ddl;
        // Rows stream to the client while the statement runs (not for row-limited
        // portals, which are served from a buffer).
        if !args.chunked && args.plan[args.index].returns_rows {
            args.sink = Some(self.rows_tx.clone());
        }
        let rx = &mut self.rows_rx;
        if let Tx::Open(lease) = &mut self.tx {
            if is_ddl {
                lease.ran_ddl = true;
            }
            let job = lease.run(&self.cancel, move |w| w.execute(&args));
            let r = stream_while(&mut self.stream, &mut self.out, rx, job).await?;
            return r.map_err(exec_error);
        }
        let args = if !needs_writer {
            let args = Arc::new(args);
            let a = args.clone();
            let job = self.db.on_reader(&self.cancel, move |w| w.execute(&a));
            match stream_while(&mut self.stream, &mut self.out, rx, job).await? {
                Ok(out) => return Ok(out),
                Err(ExecError::NeedsWriter) => {
                    Arc::try_unwrap(args).unwrap_or_else(|a| (*a).clone())
                }
                Err(ExecError::Pg(e)) => return Err(e),
            }
        } else {
            args
        };
        // An autocommitted write that finds the file locked by another process
        // (SQLITE_BUSY past busy_timeout) did not run: retried with a jittered backoff.
        let args = Arc::new(args);
        let mut attempt = 0u32;
        loop {
            let lease = self.db.lease_writer(&self.cancel).await?;
            let a = args.clone();
            let job = lease.run(&self.cancel, move |w| w.execute(&a));
            let r = stream_while(&mut self.stream, &mut self.out, &mut self.rows_rx, job).await?;
            drop(lease);
            match r {
                Err(ExecError::Pg(e))
                    if e.code == code::LOCK_NOT_AVAILABLE && attempt < self.db.retry_attempts() =>
                {
                    attempt += 1;
                    if let Some(obs) = &self.obs {
                        obs.retry("busy");
                    }
                    tracing::info!(database = %self.db.name(), attempt, "database locked by another process: retrying the statement");
                    let base = 10u64 << attempt.min(6);
                    let jitter = rand::random_range(0..=base);
                    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
                }
                r => return r.map_err(exec_error),
            }
        }
    }

    /// `COPY … FROM STDIN`: in the client's transaction, or in one of its own.
    async fn copy_in(&mut self, spec: &CopySpec) -> PgResult<()> {
        let implicit = matches!(self.tx, Tx::Idle);
        if implicit {
            let lease = self.db.lease_writer(&self.cancel).await?;
            self.begin_on(lease).await?;
        }
        let r = self.copy_in_rows(spec).await;
        if implicit {
            let end = self
                .end_transaction(if r.is_ok() { "COMMIT" } else { "ROLLBACK" })
                .await;
            let total = r?;
            end?;
            msg::command_complete(&mut self.out, &format!("COPY {total}"));
            return Ok(());
        }
        let total = r?;
        msg::command_complete(&mut self.out, &format!("COPY {total}"));
        Ok(())
    }

    /// Inserts the rows of the client's CopyData in batches as they arrive, so
    /// memory stays bounded. Reads until CopyDone or CopyFail even after an error.
    async fn copy_in_rows(&mut self, spec: &CopySpec) -> PgResult<u64> {
        const BATCH: usize = 2000;
        let columns = if spec.columns.is_empty() {
            let table = spec
                .table
                .rsplit('.')
                .next()
                .unwrap_or_default()
                .trim_matches('"')
                .to_string();
            let Tx::Open(lease) = &mut self.tx else {
                return Err(PgError::internal("COPY outside a transaction"));
            };
            lease
                .run(&self.cancel, move |w| w.table_columns(&table))
                .await??
        } else {
            spec.columns.clone()
        };
        let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
        let quoted: Vec<String> = columns
            .iter()
            .map(|c| {
                if c.starts_with('"') {
                    c.clone()
                } else {
                    format!("\"{}\"", c.replace('"', "\"\""))
                }
            })
            .collect();
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            spec.table,
            quoted.join(", "),
            placeholders.join(", ")
        );
        let plan = self.db.plans().get(&sql)?;
        msg::copy_response(&mut self.out, true, spec.binary, columns.len());
        self.flush()
            .await
            .map_err(|e| PgError::fatal(code::CONNECTION_FAILURE, format!("write failed: {e}")))?;
        let mut buf: Vec<u8> = Vec::new();
        let mut rows: Vec<copy::Row> = Vec::new();
        let mut skip_header = spec.header && !spec.binary;
        let (mut binary_header, mut binary_end) = (false, false);
        let mut total = 0u64;
        let mut failure: Option<PgError> = None;
        loop {
            let message = self.reader.next(&mut self.stream).await.map_err(|_| {
                PgError::fatal(
                    code::CONNECTION_FAILURE,
                    "connection lost during COPY from stdin",
                )
            })?;
            let mut done = false;
            match message {
                Frontend::CopyData(d) => {
                    if failure.is_none() {
                        buf.extend_from_slice(&d.data);
                        let r = if spec.binary {
                            copy::take_binary_rows(
                                &mut buf,
                                &mut binary_header,
                                &mut binary_end,
                                &mut rows,
                            )
                        } else {
                            copy::take_rows(spec, &mut buf, false, &mut rows)
                        };
                        if let Err(e) = r {
                            failure = Some(e);
                        }
                    }
                }
                Frontend::CopyDone(_) => {
                    if failure.is_none() {
                        let r = if spec.binary {
                            if buf.is_empty() && binary_end {
                                Ok(())
                            } else {
                                Err(PgError::new(
                                    code::BAD_COPY_FILE_FORMAT,
                                    "unexpected end of binary COPY data",
                                ))
                            }
                        } else {
                            copy::take_rows(spec, &mut buf, true, &mut rows)
                        };
                        if let Err(e) = r {
                            failure = Some(e);
                        }
                    }
                    done = true;
                }
                Frontend::CopyFail(f) => {
                    failure = Some(PgError::new(
                        code::QUERY_CANCELED,
                        format!("COPY from stdin failed: {}", f.message),
                    ));
                    done = true;
                }
                Frontend::Flush(_) | Frontend::Sync(_) => {}
                other => {
                    return Err(PgError::protocol(format!(
                        "unexpected message during COPY from stdin: {other:?}"
                    )));
                }
            }
            if skip_header && !rows.is_empty() {
                rows.remove(0);
                skip_header = false;
            }
            if failure.is_none() && (rows.len() >= BATCH || (done && !rows.is_empty())) {
                if let Some(bad) = rows.iter().find(|r| r.len() != columns.len()) {
                    failure = Some(PgError::new(
                        code::BAD_COPY_FILE_FORMAT,
                        if bad.len() < columns.len() {
                            format!("missing data for column \"{}\"", columns[bad.len()])
                        } else {
                            "extra data after last expected column".to_string()
                        },
                    ));
                } else {
                    let batch = std::mem::take(&mut rows);
                    let plan = plan.clone();
                    let who = Some(self.who.clone());
                    let binary = spec.binary;
                    let Tx::Open(lease) = &mut self.tx else {
                        return Err(PgError::internal("COPY outside a transaction"));
                    };
                    match lease
                        .run(&self.cancel, move |w| {
                            w.copy_rows(&plan, batch, binary, who)
                        })
                        .await
                    {
                        Ok(Ok(n)) => total += n,
                        Ok(Err(e)) => failure = Some(exec_error(e)),
                        Err(e) => failure = Some(e),
                    }
                }
            }
            if done {
                break;
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }

    /// `COPY table|(query) TO STDOUT`: the query's rows as COPY lines.
    async fn copy_out(&mut self, spec: &CopySpec) -> PgResult<()> {
        let plan = self.db.plans().get(&spec.query)?;
        if plan.len() != 1 || !plan[0].returns_rows {
            return Err(PgError::new(
                code::FEATURE_NOT_SUPPORTED,
                "COPY query must be a single SELECT",
            ));
        }
        let args = ExecArgs {
            plan: plan.clone(),
            index: 0,
            params: Vec::new(),
            param_formats: Vec::new(),
            param_oids: Vec::new(),
            result_formats: if spec.binary { vec![1] } else { Vec::new() },
            describe: true,
            simple: true,
            chunked: true,
            sink: None,
            session: Some(self.who.clone()),
        };
        let output = self.exec(args).await?;
        let head = &output.data[..output.rows_start];
        let names = copy::row_description_names(head).unwrap_or_default();
        msg::copy_response(&mut self.out, false, spec.binary, names.len());
        let mut lines: Vec<u8> = Vec::new();
        // One CopyData per row, as PostgreSQL sends them (clients such as psycopg
        // read a message as a row).
        if spec.binary {
            // A tuple is a DataRow's body: field count, then length-prefixed values;
            // the header travels with the first row, the trailer on its own.
            let mut header = Some(copy::BINARY_HEADER);
            let mut start = output.rows_start;
            for &end in &output.row_ends {
                lines.clear();
                if let Some(h) = header.take() {
                    lines.extend_from_slice(h);
                }
                lines.extend_from_slice(&output.data[start + 5..end]);
                msg::copy_data(&mut self.out, &lines);
                start = end;
                self.flush_if_large().await?;
            }
            lines.clear();
            if let Some(h) = header.take() {
                lines.extend_from_slice(h);
            }
            lines.extend_from_slice(&(-1i16).to_be_bytes());
            msg::copy_data(&mut self.out, &lines);
        } else {
            if spec.header && spec.csv {
                let fields: Vec<Option<&[u8]>> = names.iter().map(|n| Some(n.as_bytes())).collect();
                copy::write_row(spec, &fields, &mut lines);
                msg::copy_data(&mut self.out, &lines);
            }
            let mut start = output.rows_start;
            for &end in &output.row_ends {
                let fields = copy::data_row_fields(&output.data[start..end])
                    .ok_or_else(|| PgError::internal("malformed row in COPY TO"))?;
                lines.clear();
                copy::write_row(spec, &fields, &mut lines);
                msg::copy_data(&mut self.out, &lines);
                start = end;
                self.flush_if_large().await?;
            }
        }
        msg::copy_done(&mut self.out);
        msg::command_complete(&mut self.out, &format!("COPY {}", output.row_ends.len()));
        Ok(())
    }

    /// Sends the output buffer once it holds enough to be worth a write.
    async fn flush_if_large(&mut self) -> PgResult<()> {
        if self.out.len() >= 64 * 1024 {
            self.flush().await.map_err(|e| {
                PgError::fatal(code::CONNECTION_FAILURE, format!("write failed: {e}"))
            })?;
        }
        Ok(())
    }

    async fn begin_on(&mut self, mut lease: WriterLease) -> PgResult<()> {
        lease
            .run(&self.cancel, |w| w.control("BEGIN IMMEDIATE", false))
            .await??;
        lease.in_transaction = true;
        self.tx = Tx::Open(lease);
        self.gucs.begin();
        Ok(())
    }

    /// Ends the open transaction with `COMMIT` or `ROLLBACK` and releases the writer.
    /// A failed COMMIT rolls back.
    async fn end_transaction(&mut self, sql: &'static str) -> PgResult<()> {
        let mut lease = match std::mem::replace(&mut self.tx, Tx::Idle) {
            Tx::Open(l) | Tx::Failed(l) => l,
            Tx::Idle => return Ok(()),
        };
        let ddl = lease.ran_ddl;
        let r = lease
            .run(&self.cancel, move |w| w.control(sql, ddl))
            .await
            .and_then(|r| r);
        if r.is_ok() {
            lease.in_transaction = false;
        }
        // On failure the lease's drop rolls back whatever is still open.
        drop(lease);
        let changed = self.gucs.end(sql == "COMMIT" && r.is_ok());
        self.end_of_transaction();
        for (k, v) in &changed {
            msg::parameter_status(&mut self.out, k, v);
        }
        self.sync_settings();
        r
    }

    // ------------------------------------------------------- extended protocol

    fn parse(&mut self, p: Parse, fp: Option<Fp>) -> PgResult<()> {
        let name = p.name.unwrap_or_default();
        if !name.is_empty() && self.statements.contains_key(&name) {
            return Err(PgError::new(
                code::DUPLICATE_PREPARED_STATEMENT,
                format!("prepared statement \"{name}\" already exists"),
            ));
        }
        let plan = self.db.plans().get(&p.query)?;
        if plan.len() > 1 {
            return Err(PgError::new(
                code::SYNTAX_ERROR,
                "cannot insert multiple commands into a prepared statement",
            ));
        }
        self.statements.insert(
            name,
            Prepared {
                plan,
                param_oids: p.type_oids,
                fp,
            },
        );
        msg::parse_complete(&mut self.out);
        Ok(())
    }

    fn bind(&mut self, b: Bind, fp: Option<Fp>) -> PgResult<()> {
        let stmt_name = b.statement_name.unwrap_or_default();
        let prepared = self
            .statements
            .get(&stmt_name)
            .ok_or_else(|| no_statement(&stmt_name))?;
        let portal_name = b.portal_name.unwrap_or_default();
        let portal = Portal {
            plan: prepared.plan.clone(),
            param_oids: prepared.param_oids.clone(),
            params: b.parameters,
            param_formats: b.parameter_format_codes,
            result_formats: b.result_column_format_codes,
            pending: None,
            exhausted: false,
            fp,
        };
        self.portals.insert(portal_name, portal);
        msg::bind_complete(&mut self.out);
        Ok(())
    }

    async fn describe(&mut self, d: Describe) -> PgResult<()> {
        let name = d.name.unwrap_or_default();
        if d.target_type == b'P' {
            if !self.portals.contains_key(&name) {
                return Err(no_portal(&name));
            }
            self.pending_describe = Some(name);
            return Ok(());
        }
        let prepared = self
            .statements
            .get(&name)
            .ok_or_else(|| no_statement(&name))?;
        let plan = prepared.plan.clone();
        let oids = prepared.param_oids.clone();
        let (params, columns) = self.describe_plan(&plan, oids).await?;
        msg::parameter_description(&mut self.out, &params);
        self.write_columns(&plan, &columns, &[]);
        Ok(())
    }

    fn write_columns(&mut self, plan: &Plan, columns: &[Column], formats: &[i16]) {
        let show = plan.first().and_then(|s| match &s.kind {
            Kind::Show { name } => Some(name.clone()),
            _ => None,
        });
        if let Some(name) = show {
            msg::row_description(
                &mut self.out,
                &[Column {
                    name,
                    ty: PgType::Text,
                }],
                formats,
            );
        } else if columns.is_empty() {
            msg::no_data(&mut self.out);
        } else {
            msg::row_description(&mut self.out, columns, formats);
        }
    }

    async fn describe_plan(
        &mut self,
        plan: &Plan,
        oids: Vec<u32>,
    ) -> PgResult<(Vec<PgType>, Vec<Column>)> {
        if plan.is_empty() || plan[0].sqlite_sql.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let p = plan.clone();
        let r = match &self.tx {
            Tx::Open(lease) | Tx::Failed(lease) => {
                lease
                    .run(&self.cancel, move |w| w.describe(&p, 0, &oids))
                    .await?
            }
            Tx::Idle => {
                self.db
                    .on_reader(&self.cancel, move |w| w.describe(&p, 0, &oids))
                    .await?
            }
        };
        r.map_err(exec_error)
    }

    async fn describe_portal(&mut self, name: &str) -> PgResult<()> {
        let Some(portal) = self.portals.get(name) else {
            return Err(no_portal(name));
        };
        let plan = portal.plan.clone();
        let formats = portal.result_formats.clone();
        let oids = portal.param_oids.clone();
        let (_, columns) = self.describe_plan(&plan, oids).await?;
        self.write_columns(&plan, &columns, &formats);
        Ok(())
    }

    async fn execute(&mut self, e: Execute) -> PgResult<()> {
        let name = e.name.unwrap_or_default();
        let describe = self.pending_describe.take().is_some();
        let Some(portal) = self.portals.get_mut(&name) else {
            return Err(no_portal(&name));
        };
        let max_rows = if e.max_rows > 0 {
            e.max_rows as usize
        } else {
            usize::MAX
        };
        if let Some(pending) = portal.pending.take() {
            return self.send_portion(&name, pending, max_rows);
        }
        if portal.exhausted {
            let tag = command_tag(portal.plan.first().map_or("SELECT", |s| s.tag), 0);
            msg::command_complete(&mut self.out, &tag);
            return Ok(());
        }
        portal.exhausted = true;
        let plan = portal.plan.clone();
        if plan.is_empty() {
            msg::empty_query(&mut self.out);
            return Ok(());
        }
        let args = PortalArgs {
            params: std::mem::take(&mut portal.params),
            param_formats: portal.param_formats.clone(),
            param_oids: portal.param_oids.clone(),
            result_formats: portal.result_formats.clone(),
            describe,
            simple: false,
            chunked: max_rows != usize::MAX,
        };
        let chunked = args.chunked;
        self.last_output = None;
        self.run_statement(&plan, 0, Some(args)).await?;
        if chunked {
            if let Some(mut out) = self.last_output.take() {
                // The RowDescription (if any) goes out before the first portion.
                let head = out.data.split_to(out.rows_start);
                self.out.extend_from_slice(&head);
                for end in &mut out.row_ends {
                    *end -= out.rows_start;
                }
                let tag = command_tag(plan[0].tag, out.rows);
                let pending = Pending { out, next: 0, tag };
                return self.send_portion(&name, pending, max_rows);
            }
        }
        Ok(())
    }

    /// Sends up to `max_rows` rows of a portal's buffered result; PortalSuspended if
    /// rows remain, CommandComplete once all are sent.
    fn send_portion(&mut self, name: &str, mut pending: Pending, max_rows: usize) -> PgResult<()> {
        let start = if pending.next == 0 {
            0
        } else {
            pending.out.row_ends[pending.next - 1]
        };
        let last = (pending.next + max_rows).min(pending.out.row_ends.len());
        let end = if last == 0 {
            0
        } else {
            pending.out.row_ends[last - 1]
        };
        self.out.extend_from_slice(&pending.out.data[start..end]);
        pending.next = last;
        if pending.next < pending.out.row_ends.len() {
            msg::portal_suspended(&mut self.out);
            if let Some(p) = self.portals.get_mut(name) {
                p.pending = Some(pending);
            }
        } else {
            msg::command_complete(&mut self.out, &pending.tag);
        }
        Ok(())
    }

    fn close(&mut self, c: Close) {
        let name = c.name.unwrap_or_default();
        if c.target_type == b'S' {
            self.statements.remove(&name);
        } else {
            self.portals.remove(&name);
        }
        msg::close_complete(&mut self.out);
    }
}

struct PortalArgs {
    params: Vec<Option<Bytes>>,
    param_formats: Vec<i16>,
    param_oids: Vec<u32>,
    result_formats: Vec<i16>,
    describe: bool,
    simple: bool,
    chunked: bool,
}

/// Awaits `job` while writing the row chunks it streams to the client, in order,
/// behind whatever output is already pending.
async fn stream_while<S: AsyncWrite + Unpin, R>(
    stream: &mut S,
    out: &mut BytesMut,
    rx: &mut mpsc::Receiver<BytesMut>,
    job: impl std::future::Future<Output = R>,
) -> R {
    tokio::pin!(job);
    loop {
        tokio::select! {
            biased;
            r = &mut job => {
                // Chunks sent before the job ended precede its remaining output.
                while let Ok(chunk) = rx.try_recv() {
                    out.extend_from_slice(&chunk);
                }
                return r;
            }
            Some(chunk) = rx.recv() => {
                out.extend_from_slice(&chunk);
                if stream.write_all(out).await.is_err() {
                    // The client is gone: closing the channel stops the statement.
                    rx.close();
                }
                out.clear();
            }
        }
    }
}

fn no_statement(name: &str) -> PgError {
    PgError::new(
        code::INVALID_SQL_STATEMENT_NAME,
        format!("prepared statement \"{name}\" does not exist"),
    )
}

fn no_portal(name: &str) -> PgError {
    PgError::new(
        code::INVALID_CURSOR_NAME,
        format!("portal \"{name}\" does not exist"),
    )
}

fn exec_error(e: ExecError) -> PgError {
    match e {
        ExecError::Pg(e) => e,
        ExecError::NeedsWriter => PgError::internal("statement needs the writer"),
    }
}

fn command_tag(tag: &str, rows: u64) -> String {
    match tag {
        "INSERT" => format!("INSERT 0 {rows}"),
        "SELECT" | "UPDATE" | "DELETE" => format!("{tag} {rows}"),
        other => other.to_string(),
    }
}
