//! The relay between one client and the pool: messages are framed and forwarded as
//! bytes. Only what pooling needs is looked at: statement names (rewritten to
//! pool-wide names in transaction mode), session `SET`s, `ReadyForQuery` status,
//! `ErrorResponse` codes and `CommandComplete`. Rows are never decoded.
//!
//! Every message sent to the server gets an entry in a queue of expected
//! responses, so that the proxy knows which responses belong to the client, which
//! to messages it sent on its own (a Parse replayed on a new server, the session
//! settings), and where to insert answers it gives itself (ParseComplete for a
//! statement the server already has).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::{poll_fn, Future};
use std::hash::{Hash, Hasher};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Poll};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use rand::Rng;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::io::poll_read_buf;

use super::conn::{send_cancel, ErrorFields, ServerConn};
use super::pool::Lease;
use super::PostgresDb;
use crate::backend::sqlite::CancelSlot;
use crate::config::{PoolMode, SessionSet};
use crate::error::{code, PgError, Severity};
use crate::observe::{DbObs, Fp, FpCache};
use crate::protocol::write as msg;
use crate::server::ServerState;

/// Output waiting for a peer beyond this stops reading from the other side.
const BACKPRESSURE: usize = 256 * 1024;
/// Responses held back while a statement may still be retried.
const HOLD_LIMIT: usize = 64 * 1024;
/// Portals bound to session commands a client keeps track of (the oldest goes
/// first).
const MAX_PORTAL_CMDS: usize = 64;
/// Client bytes kept for a retry.
const REPLAY_LIMIT: usize = 64 * 1024;
/// A Parse that always fails (its text is not SQL; if its name were taken, that
/// fails too): sent to make the server fail a batch unidb refused part of.
const FAILING_PARSE: &[u8] = b"P\0\0\0\x2dunidb refused\0unidb refused this batch\0\0\0";
/// Settings fingerprint of a server whose session state matches no client.
const DIRTY: u64 = 1;

/// What a response group answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Parse,
    /// A Parse of the client's unnamed statement (transaction mode): its answer
    /// tells whether the server now holds that statement.
    ParseUnnamed,
    /// unidb's own [`FAILING_PARSE`]: its error is expected and swallowed.
    Fail,
    Bind,
    DescribeStatement,
    DescribePortal,
    Execute,
    Close,
    Sync,
    /// Simple Query or FunctionCall: everything up to ReadyForQuery.
    Query,
}

impl Expect {
    fn is_extended(self) -> bool {
        !matches!(self, Expect::Sync | Expect::Query)
    }
}

/// A session-level command whose effect the proxy must track.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SessionCmd {
    Set(String),
    Reset(String),
    ResetAll,
    DiscardAll,
    DeallocateAll,
    /// SQL-level `PREPARE name AS ...`.
    Prepare(String),
    Deallocate(String),
}

/// A session command and its text (as tracked and replayed).
type Cmd = Box<(SessionCmd, Box<str>)>;

/// A session command on its way to being tracked.
struct Executed {
    cmd: SessionCmd,
    text: Box<str>,
    /// Client Syncs and Queries queued before its portal was bound (`u64::MAX`
    /// for a simple Query's): if a transaction ended after that and before the
    /// command's own batch, the portal it ran was not the one bound (that was
    /// gone), and it is not tracked.
    bound: u64,
}

/// Key of a SQL-level prepared statement in the tracked session commands.
fn prepare_key(name: &str) -> String {
    format!("\0prepare {name}")
}

enum Pending {
    /// Responses to a message from the client: forwarded.
    Client {
        expect: Expect,
        /// For a Parse of a named statement: its key and client name.
        stmt: Option<(u64, Box<str>)>,
        /// For a simple Query that changes session state, or a Sync after
        /// Executes of session commands: tracked at its ReadyForQuery.
        cmds: Vec<Executed>,
        errored: bool,
        /// For a Sync or Query: its number among the client's (from 1); 0 otherwise.
        sync: u64,
        /// For a Query or Execute (and a Parse or Bind, recorded only if it
        /// fails): the statement being timed.
        timing: Option<Timing>,
    },
    /// Responses to a message unidb sent on its own: swallowed.
    Hidden { expect: Expect, stmt: Option<u64> },
    /// An answer unidb gives itself, sent when everything before it has been;
    /// `ready`: followed by a ReadyForQuery with the transaction status at that
    /// point (a `BEGIN` pipelined ahead of it may not have been answered yet).
    Synthetic { bytes: Bytes, ready: bool },
}

/// A statement in flight, timed from its receipt.
#[derive(Debug, Clone, Copy)]
struct Timing {
    fp: Fp,
    start: Instant,
    rows: u64,
    error: Option<[u8; 5]>,
}

/// A statement completed while its batch may still be retried.
struct Done {
    timing: Timing,
    end: Instant,
    wait: Duration,
}

/// Fingerprints of a client's statements: the unnamed one and named ones (at most
/// 10,000 names tracked).
#[derive(Default)]
struct StatementFps {
    unnamed: Option<Fp>,
    named: HashMap<Box<str>, Fp>,
}

impl StatementFps {
    fn get(&self, name: &[u8]) -> Option<Fp> {
        if name.is_empty() {
            self.unnamed
        } else {
            std::str::from_utf8(name)
                .ok()
                .and_then(|n| self.named.get(n).copied())
        }
    }

    fn set(&mut self, name: &[u8], fp: Option<Fp>) {
        if name.is_empty() {
            self.unnamed = fp;
        } else if let Some(fp) = fp {
            let name = String::from_utf8_lossy(name);
            if self.named.len() < 10_000 || self.named.contains_key(name.as_ref()) {
                self.named.insert(name.into(), fp);
            }
        }
    }
}

/// A named statement of this client.
struct Stmt {
    key: u64,
    /// The Parse message under the pool-wide name.
    parse: Bytes,
    /// The session command the statement is, if any: tracked when it is executed.
    cmd: Option<Cmd>,
}

/// Session parameters the client asked for (startup packet and tracked `SET`s).
struct Settings {
    startup: Startup,
    sets: Vec<(String, String)>,
    fingerprint: u64,
}

/// The startup packet's parameters that a server is brought to: kept for the
/// session's life, so in one exactly sized string, each name and value ended by
/// a NUL (which no startup packet string can hold).
#[derive(Hash, Default)]
struct Startup(Box<str>);

impl Startup {
    fn new(params: &BTreeMap<String, String>) -> Startup {
        let kept = params
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "user" | "database" | "replication" | "options"))
            .flat_map(|(k, v)| [k.as_str(), v.as_str()]);
        Startup(crate::backend::nul_terminated(kept))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The parameters, as name and value.
    fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut parts = self.0.split('\0');
        std::iter::from_fn(move || Some((parts.next()?, parts.next()?)))
    }
}

impl Settings {
    fn new(params: &BTreeMap<String, String>) -> Settings {
        let startup = Startup::new(params);
        let mut s = Settings {
            startup,
            sets: Vec::new(),
            fingerprint: 0,
        };
        s.refresh();
        s
    }

    fn refresh(&mut self) {
        self.fingerprint = if self.startup.is_empty() && self.sets.is_empty() {
            0
        } else {
            let mut h = DefaultHasher::new();
            self.startup.hash(&mut h);
            self.sets.hash(&mut h);
            // 0 and 1 are reserved (pristine, dirty).
            h.finish() | 2
        };
    }

    fn has_prepares(&self) -> bool {
        self.sets.iter().any(|(k, _)| k.starts_with('\0'))
    }

    /// A simple Query that brings a server to these settings; `deallocate` first
    /// drops every prepared statement on it (SQL-level names are per client).
    fn apply_sql(&self, deallocate: bool) -> String {
        let mut sql = String::from(if deallocate {
            "DEALLOCATE ALL; RESET ALL"
        } else {
            "RESET ALL"
        });
        if !self.startup.is_empty() {
            sql.push_str("; SELECT ");
            for (i, (k, v)) in self.startup.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!(
                    "pg_catalog.set_config('{}', '{}', false)",
                    k.replace('\'', "''"),
                    v.replace('\'', "''")
                ));
            }
        }
        for (_, stmt) in &self.sets {
            sql.push_str("; ");
            sql.push_str(stmt);
        }
        sql
    }
}

/// How the relay ended.
enum End {
    /// The client said Terminate or closed the connection.
    Client,
    /// Tell the client this, then close.
    Fatal(PgError),
    /// The connection to the client failed.
    ClientIo,
    /// Send what is pending, then close.
    Close,
}

/// State of the transaction-mode retry of the current batch.
#[derive(Default)]
struct Batch {
    /// Still retryable: one statement, outside a transaction, nothing sent to the client.
    eligible: bool,
    replay: BytesMut,
    /// Bytes at the end of `to_client` held back from the client.
    held: usize,
    syncs: u32,
    completed: u32,
    retryable_error: bool,
    retry_reason: &'static str,
    server_bytes: usize,
    server_msgs: usize,
    /// The first server message was a FATAL shutdown: the server never ran anything.
    dead_on_arrival: bool,
    attempts: u32,
    /// Statements completed in this batch, recorded once it cannot be retried.
    done: Vec<Done>,
}

/// A client between transactions: no server, nothing in flight. Only what
/// outlives a transaction is kept (the socket, the session's settings, its
/// statements), so that thousands of idle clients cost little memory; the
/// [`Relay`], with its buffers and queues, is built again when the client sends
/// its next message.
struct Parked<S> {
    client: S,
    /// A partial message the client has sent.
    cbuf: BytesMut,
    db: Arc<PostgresDb>,
    state: Arc<ServerState>,
    slot: Arc<CancelSlot>,
    /// The settings' startup parameters and fingerprint; the `SET`s are kept.
    startup: Startup,
    settings_fp: u64,
    /// The client's statements and `SET`s, if it has any.
    kept: Option<Box<Kept>>,
    fps: Option<Box<FpCache>>,
    /// Time waited for a server not yet charged to a statement, in nanoseconds.
    wait_ns: u64,
    last_commit: bool,
    in_tx_block: bool,
}

/// A portal bound to a session command.
struct PortalCmd {
    portal: Box<[u8]>,
    cmd: Cmd,
    /// Client Syncs and Queries queued before its Bind: it belongs to the batch
    /// ended by the next one, and is gone once a later ReadyForQuery reports no
    /// transaction.
    bound: u64,
}

/// A parked client's statements (named ones, the unnamed one, and their
/// fingerprints) and the `SET`s it made.
struct Kept {
    sets: Vec<(String, String)>,
    stmts: HashMap<Box<str>, Stmt>,
    stmt_fps: StatementFps,
    unnamed: Bytes,
    unnamed_cmd: Option<Cmd>,
    portal_fp: Option<Fp>,
}

/// What ended a waiting client's wait.
enum Woke {
    /// A message to relay.
    Message,
    /// The client left, or its connection failed.
    Gone,
    /// To be closed by unidb with a FATAL error of this code and message.
    Closed(&'static str, &'static str),
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Parked<S> {
    /// Sends a FATAL error and closes the connection.
    async fn close(&mut self, code: &'static str, message: &'static str) {
        let mut out = BytesMut::new();
        msg::error(&mut out, &PgError::fatal(code, message));
        let _ = self.client.write_all(&out).await;
        let _ = self.client.shutdown().await;
    }
}

/// What a waiting client's wait ended with.
enum Waited<S> {
    /// A message to relay, by this relay.
    Message(Box<Relay<S>>),
    /// A client that waited with its whole relay left.
    Left(Box<Relay<S>>),
    /// A client that waited with its whole relay is to be closed by unidb with a
    /// FATAL error of this code and message.
    Closed(Box<Relay<S>>, &'static str, &'static str),
    /// A parked client is to be closed so.
    Close(Box<Parked<S>>, &'static str, &'static str),
    /// A parked client left.
    Over,
}

/// A client with no server and nothing in flight, waiting for its next message:
/// parked (see [`Relay::park`]), or with its whole relay when that cannot be
/// taken apart. Holds only the client and its idle timer, since it is what every
/// idle client's future holds; its output holds no more than a box.
struct Waiting<S> {
    client: Client<S>,
    idle: Expire,
}

enum Client<S> {
    Parked(Parked<S>),
    Full(Box<Relay<S>>),
    Done,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Waiting<S> {
    fn new(relay: Box<Relay<S>>) -> Waiting<S> {
        let idle = expire(relay.state.config.server.idle_timeout);
        let client = match relay.park() {
            Ok(parked) => Client::Parked(parked),
            Err(mut relay) => {
                tracing::debug!(
                    database = %relay.db.pool.name,
                    "client waits with its whole relay: state from its last transaction remains"
                );
                // (A buffer consumed to its end reports no capacity but still
                // holds its allocation: emptiness is what counts.)
                for buf in [&mut relay.cbuf, &mut relay.to_server, &mut relay.to_client] {
                    if buf.is_empty() {
                        *buf = BytesMut::new();
                    }
                }
                Client::Full(relay)
            }
        };
        Waiting { client, idle }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Future for Waiting<S> {
    type Output = Waited<S>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Waited<S>> {
        let this = self.get_mut();
        let woke = match &mut this.client {
            Client::Parked(p) => poll_wait(
                &mut p.client,
                &mut p.cbuf,
                &p.slot,
                &p.state,
                &mut this.idle,
                cx,
            ),
            Client::Full(r) => {
                let r = &mut **r;
                poll_wait(
                    &mut r.client,
                    &mut r.cbuf,
                    &r.slot,
                    &r.state,
                    &mut this.idle,
                    cx,
                )
            }
            Client::Done => return Poll::Pending,
        };
        let woke = ready!(woke);
        Poll::Ready(
            match (std::mem::replace(&mut this.client, Client::Done), woke) {
                (Client::Parked(p), Woke::Message) => Waited::Message(Relay::resume(p)),
                (Client::Parked(_), Woke::Gone) => Waited::Over,
                (Client::Parked(p), Woke::Closed(code, message)) => {
                    Waited::Close(Box::new(p), code, message)
                }
                (Client::Full(r), Woke::Message) => Waited::Message(r),
                (Client::Full(r), Woke::Gone) => Waited::Left(r),
                (Client::Full(r), Woke::Closed(code, message)) => Waited::Closed(r, code, message),
                (Client::Done, _) => return Poll::Pending,
            },
        )
    }
}

/// Waits until a client with no server and nothing in flight has sent a whole
/// message (or the header of one over 8 KiB, so that an oversized message is
/// refused without waiting for its body), has left, or must be closed (shutdown,
/// idle timeout).
fn poll_wait<S: AsyncRead + Unpin>(
    client: &mut S,
    cbuf: &mut BytesMut,
    slot: &CancelSlot,
    state: &ServerState,
    idle: &mut Expire,
    cx: &mut std::task::Context<'_>,
) -> Poll<Woke> {
    // Registered before the flag is read: shutdown sets the flag, then wakes.
    slot.waker.register(cx.waker());
    if *state.shutdown.borrow() {
        return Poll::Ready(Woke::Closed(
            code::ADMIN_SHUTDOWN,
            "terminating connection due to administrator command",
        ));
    }
    loop {
        match read_client(&mut *client, cx, &mut *cbuf) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Woke::Gone),
            Poll::Ready(Ok(_)) => {
                if has_whole_message(cbuf) || announced_len(cbuf) > 8192 {
                    return Poll::Ready(Woke::Message);
                }
                // Part of a message: the idle time starts again.
                *idle = expire(state.config.server.idle_timeout);
            }
            Poll::Pending => break,
        }
    }
    // Like PostgreSQL's idle_session_timeout: a waiting client is never
    // inside a transaction block.
    match Pin::new(idle).poll(cx) {
        Poll::Ready(()) => Poll::Ready(Woke::Closed(
            code::IDLE_SESSION_TIMEOUT,
            "terminating connection due to idle-session timeout",
        )),
        Poll::Pending => Poll::Pending,
    }
}

/// The length (with its type byte) of the message whose header starts `buf`; 0
/// before the header is whole.
fn announced_len(buf: &[u8]) -> usize {
    match buf.get(..5) {
        Some(h) => i32::from_be_bytes([h[1], h[2], h[3], h[4]]).max(0) as usize + 1,
        None => 0,
    }
}

pub struct Relay<S> {
    client: S,
    cbuf: BytesMut,
    db: Arc<PostgresDb>,
    state: Arc<ServerState>,
    slot: Arc<CancelSlot>,
    server: Option<Lease>,
    queue: VecDeque<Pending>,
    to_server: BytesMut,
    to_client: BytesMut,
    /// Status of the last ReadyForQuery from the attached server.
    status: u8,
    /// Extended-protocol messages sent since the last Sync.
    unsynced: bool,
    /// A checkout failed inside an extended batch: drop messages until Sync.
    skip_until_sync: bool,
    /// The server is in copy-in mode (it ignores Sync until CopyDone/CopyFail).
    copy_in: bool,
    /// A session command executed in the current extended batch: tracked at its
    /// Sync, if nothing failed.
    executed_cmds: Vec<Executed>,
    /// The client's unnamed statement (its Parse message) in transaction mode:
    /// a Bind in a later transaction may land on another server, which is sent
    /// the Parse first. Empty: the client has none.
    unnamed: Bytes,
    /// The session command the unnamed statement is, if any.
    unnamed_cmd: Option<Cmd>,
    /// The client's unnamed statement was sent to the server in the current
    /// batch (a Bind in the same batch is safe: if the Parse fails, so does it).
    unnamed_batch: bool,
    /// Parses of the client's unnamed statement sent to the attached server and
    /// not yet answered.
    unnamed_inflight: u32,
    /// The attached server answered the client's latest unnamed Parse with
    /// ParseComplete.
    unnamed_ok: bool,
    /// The server failed a message of the current batch and skips the rest of it
    /// until the client's Sync (which unidb has not sent yet).
    server_skipping: bool,
    /// Portals bound to session commands, by name. A portal outlives its Sync
    /// inside a transaction block, so these are kept until the portal is bound
    /// anew or closed, or a ReadyForQuery after its batch reports no transaction.
    portal_cmds: Vec<PortalCmd>,
    /// Client Syncs and Queries queued so far (numbers them for `portal_cmds`).
    syncs_queued: u64,
    /// The last of them whose ReadyForQuery reported no transaction.
    idle_upto: u64,
    /// Session commands run inside the open transaction block: tracked at COMMIT.
    tx_cmds: Vec<(SessionCmd, Box<str>)>,
    /// The last CommandComplete was COMMIT.
    last_commit: bool,
    /// The last ReadyForQuery before the current one was inside a transaction block.
    in_tx_block: bool,
    /// Bytes of a streamed server message still to pass (`true`: forward them).
    passthrough: Option<(usize, bool)>,
    settings: Settings,
    stmts: HashMap<Box<str>, Stmt>,
    batch: Batch,
    transaction_mode: bool,
    max_message: usize,
    /// Allocated at the first statement: a client that never runs one stays small.
    fps: Option<Box<FpCache>>,
    /// Fingerprints of the unnamed statement, of named statements, of the last
    /// bound portal.
    stmt_fps: StatementFps,
    portal_fp: Option<Fp>,
    /// When the client data being handled was read.
    read_at: Instant,
    /// Time spent waiting for a server, charged to the next statement recorded.
    wait: Duration,
}

/// Prepares the relay of a client after authentication: the greeting (with the
/// upstream's parameters) is queued for the client. `None` when no upstream
/// parameters can be had; the client has been sent a FATAL error.
///
/// Separate from [`Relay::run`] so that a live session's future holds only the
/// relay, not this start-up's state (the startup parameters, the pool's wait).
#[allow(clippy::too_many_arguments)]
pub async fn start<S: AsyncRead + AsyncWrite + Unpin + Send>(
    mut client: S,
    greeting: BytesMut,
    leftover: BytesMut,
    db: Arc<PostgresDb>,
    slot: Arc<CancelSlot>,
    pid: i32,
    secret: i32,
    params: BTreeMap<String, String>,
    state: Arc<ServerState>,
) -> Option<Box<Relay<S>>> {
    let mut out = greeting;
    out.reserve(512);
    let server_params = match db.pool.server_params().await {
        Ok(p) => p,
        Err(e) => {
            msg::error(
                &mut out,
                &PgError {
                    severity: Severity::Fatal,
                    ..e
                },
            );
            let _ = client.write_all(&out).await;
            return None;
        }
    };
    let settings = Settings::new(&params);
    drop(params);
    for (k, v) in server_params.iter() {
        let value = settings
            .startup
            .iter()
            .find(|(ck, _)| ck.eq_ignore_ascii_case(k))
            .map_or(v.as_str(), |(_, cv)| cv);
        msg::parameter_status(&mut out, k, value);
    }
    msg::backend_key_data(&mut out, pid, secret);
    out.extend_from_slice(&[b'Z', 0, 0, 0, 5, b'I']);
    // A new client is a parked one with nothing but its greeting to send.
    let mut relay = Relay::resume(Parked {
        client,
        cbuf: leftover,
        db,
        state,
        slot,
        startup: settings.startup,
        settings_fp: settings.fingerprint,
        kept: None,
        fps: None,
        wait_ns: 0,
        last_commit: false,
        in_tx_block: false,
    });
    relay.to_client = out;
    Some(relay)
}

enum Event {
    ClientData,
    ClientClosed,
    ClientError,
    ServerData,
    ServerLost(String),
    Progress,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Relay<S> {
    /// Relays until the session ends, then returns or closes its server.
    ///
    /// Between transactions the relay is taken apart into a [`Parked`] client and
    /// its box freed, so that this future, which every connected client costs,
    /// holds only the parked form and its wait. (An `async` block rather than an
    /// `async fn`: an `async fn` keeps a second copy of its argument.)
    #[allow(clippy::manual_async_fn)]
    pub fn run(self: Box<Self>) -> impl Future<Output = ()> + Send {
        async move {
            let mut relay = self;
            let end = loop {
                if relay.parked() {
                    relay = match Waiting::new(relay).await {
                        Waited::Message(r) => r,
                        Waited::Left(r) => {
                            relay = r;
                            break End::Client;
                        }
                        Waited::Closed(r, code, message) => {
                            relay = r;
                            break End::Fatal(PgError::fatal(code, message));
                        }
                        Waited::Close(mut parked, code, message) => {
                            Box::pin(parked.close(code, message)).await;
                            return;
                        }
                        Waited::Over => return,
                    };
                }
                if let Err(end) = Box::pin(relay.active()).await {
                    break end;
                }
            };
            Box::pin(relay.end(end)).await;
        }
    }

    /// Says goodbye as `end` requires, then returns or closes the server.
    async fn end(&mut self, end: End) {
        self.drop_held();
        match &end {
            End::Fatal(e) => {
                msg::error(&mut self.to_client, e);
                let _ = self.client.write_all(&self.to_client).await;
            }
            End::Close => {
                let _ = self.client.write_all(&self.to_client).await;
            }
            End::Client | End::ClientIo => {}
        }
        if !matches!(end, End::Client | End::ClientIo) {
            // Flush (and for TLS, close_notify) what unidb had to say; a client that
            // left needs no goodbye.
            let _ = self.client.shutdown().await;
        }
        self.finish_server().await;
    }

    /// Takes a parked relay (see [`Relay::parked`]) apart: what outlives a
    /// transaction is kept and the rest freed. Gives the relay back whole when
    /// some state that normally ends with a transaction is still there.
    ///
    /// Takes the box itself: moving out of a box the caller keeps would free it
    /// only when the variable is next assigned, and the parked client would hold
    /// it all along.
    fn park(self: Box<Self>) -> Result<Parked<S>, Box<Self>> {
        if !self.transient_state_is_clear() {
            return Err(self);
        }
        // Every field is named: a new one must be placed here.
        let Relay {
            client,
            cbuf,
            db,
            state,
            slot,
            server: _,
            queue: _,
            to_server: _,
            to_client: _,
            status: _,
            unsynced: _,
            skip_until_sync: _,
            copy_in: _,
            executed_cmds: _,
            unnamed,
            unnamed_cmd,
            unnamed_batch: _,
            unnamed_inflight: _,
            unnamed_ok: _,
            server_skipping: _,
            // With no server and no transaction, every portal is gone.
            portal_cmds: _,
            syncs_queued: _,
            idle_upto: _,
            tx_cmds: _,
            last_commit,
            in_tx_block,
            passthrough: _,
            settings,
            stmts,
            batch: _,
            transaction_mode: _,
            max_message: _,
            fps,
            stmt_fps,
            portal_fp,
            read_at: _,
            wait,
        } = *self;
        let Settings {
            startup,
            sets,
            fingerprint: settings_fp,
        } = settings;
        let kept = (!stmts.is_empty()
            || !sets.is_empty()
            || !unnamed.is_empty()
            || unnamed_cmd.is_some()
            || stmt_fps.unnamed.is_some()
            || !stmt_fps.named.is_empty()
            || portal_fp.is_some())
        .then(|| {
            Box::new(Kept {
                sets,
                stmts,
                stmt_fps,
                unnamed,
                unnamed_cmd,
                portal_fp,
            })
        });
        Ok(Parked {
            client,
            cbuf: if cbuf.is_empty() {
                BytesMut::new()
            } else {
                cbuf
            },
            db,
            state,
            slot,
            startup,
            settings_fp,
            kept,
            fps,
            wait_ns: wait.as_nanos().try_into().unwrap_or(u64::MAX),
            last_commit,
            in_tx_block,
        })
    }

    /// Whether everything a parked client drops is in the state a client with no
    /// server and no transaction has (it always is when the relay parks; checked
    /// rather than assumed, so that nothing is lost).
    fn transient_state_is_clear(&self) -> bool {
        let Batch {
            eligible,
            replay,
            held,
            syncs,
            completed,
            retryable_error,
            retry_reason: _,
            server_bytes,
            server_msgs,
            dead_on_arrival,
            attempts,
            done,
        } = &self.batch;
        self.server.is_none()
            && self.queue.is_empty()
            && self.to_server.is_empty()
            && self.to_client.is_empty()
            && self.status == b'I'
            && !self.unsynced
            && !self.skip_until_sync
            && !self.copy_in
            && self.executed_cmds.is_empty()
            && !self.unnamed_batch
            && self.unnamed_inflight == 0
            && !self.unnamed_ok
            && !self.server_skipping
            && self.tx_cmds.is_empty()
            && self.passthrough.is_none()
            && !eligible
            && replay.is_empty()
            && *held == 0
            && *syncs == 0
            && *completed == 0
            && !retryable_error
            && *server_bytes == 0
            && *server_msgs == 0
            && !dead_on_arrival
            && *attempts == 0
            && done.is_empty()
    }

    /// The relay of a parked client that has sent a message (or of a new one).
    fn resume(p: Parked<S>) -> Box<Self> {
        let kept = p.kept.map_or_else(
            || Kept {
                sets: Vec::new(),
                stmts: HashMap::new(),
                stmt_fps: StatementFps::default(),
                unnamed: Bytes::new(),
                unnamed_cmd: None,
                portal_fp: None,
            },
            |k| *k,
        );
        // Neither changes while the server runs.
        let transaction_mode = p.db.pool.config.pool_mode == PoolMode::Transaction;
        let max_message = p.state.config.server.max_message_size;
        Box::new(Relay {
            client: p.client,
            cbuf: p.cbuf,
            db: p.db,
            state: p.state,
            slot: p.slot,
            server: None,
            queue: VecDeque::new(),
            to_server: BytesMut::new(),
            to_client: BytesMut::new(),
            status: b'I',
            unsynced: false,
            skip_until_sync: false,
            copy_in: false,
            executed_cmds: Vec::new(),
            unnamed: kept.unnamed,
            unnamed_cmd: kept.unnamed_cmd,
            unnamed_batch: false,
            unnamed_inflight: 0,
            unnamed_ok: false,
            server_skipping: false,
            portal_cmds: Vec::new(),
            syncs_queued: 0,
            idle_upto: 0,
            tx_cmds: Vec::new(),
            last_commit: p.last_commit,
            in_tx_block: p.in_tx_block,
            passthrough: None,
            settings: Settings {
                startup: p.startup,
                sets: kept.sets,
                fingerprint: p.settings_fp,
            },
            stmts: kept.stmts,
            batch: Batch::default(),
            transaction_mode,
            max_message,
            fps: p.fps,
            stmt_fps: kept.stmt_fps,
            portal_fp: kept.portal_fp,
            read_at: Instant::now(),
            wait: Duration::from_nanos(p.wait_ns),
        })
    }

    /// Returns the server to the pool when it is clean, after the reset query in
    /// session mode; closes it otherwise.
    async fn finish_server(&mut self) {
        let Some(mut lease) = self.server.take() else {
            return;
        };
        self.slot.clear_upstream();
        let clean = self.queue.is_empty()
            && self.status == b'I'
            && !self.unsynced
            && self.passthrough.is_none()
            && self.to_server.is_empty();
        if !clean {
            lease.broken = true;
            return;
        }
        let reset = self
            .db
            .pool
            .config
            .server_reset_query
            .clone()
            .or_else(|| (!self.transaction_mode).then(|| "DISCARD ALL".to_string()));
        if let Some(sql) = reset {
            if !self.transaction_mode || !sql.is_empty() {
                if Box::pin(run_hidden_query(&mut lease, &sql)).await.is_err() {
                    lease.broken = true;
                    return;
                }
                lease.settings = 0;
                lease.sql_prepared = false;
                lease.prepared.clear();
            }
        }
    }

    /// No server, nothing in flight or unsent, no whole message waiting.
    fn parked(&self) -> bool {
        self.server.is_none()
            && self.is_idle()
            && self.to_client.is_empty()
            && !self.skip_until_sync
            && !has_whole_message(&self.cbuf)
    }

    /// Relays until the client is parked (`Ok`) or the session ends (`Err`).
    async fn active(&mut self) -> Result<(), End> {
        let mut shutdown = self.state.shutdown.clone();
        let idle_timeout = self.state.config.server.idle_timeout;
        self.on_client_data().await?;
        loop {
            if self.parked() {
                return Ok(());
            }
            let idle = self.is_idle();
            if idle && *shutdown.borrow() {
                return Err(End::Fatal(PgError::fatal(
                    code::ADMIN_SHUTDOWN,
                    "terminating connection due to administrator command",
                )));
            }
            let event = {
                let io = poll_fn(|cx| {
                    let mut progressed = false;
                    if let Some(server) = self.server.as_mut() {
                        while !self.to_server.is_empty() {
                            let all = self.to_server.len();
                            match write_some(&mut server.stream, cx, &mut self.to_server, all) {
                                Poll::Ready(Ok(0)) => {
                                    return Poll::Ready(Event::ServerLost(
                                        "write returned 0".into(),
                                    ))
                                }
                                Poll::Ready(Ok(_)) => progressed = true,
                                Poll::Ready(Err(e)) => {
                                    return Poll::Ready(Event::ServerLost(e.to_string()))
                                }
                                Poll::Pending => break,
                            }
                        }
                    }
                    while self.to_client.len() > self.batch.held {
                        let ready = self.to_client.len() - self.batch.held;
                        match write_some(&mut self.client, cx, &mut self.to_client, ready) {
                            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                                return Poll::Ready(Event::ClientError)
                            }
                            Poll::Ready(Ok(_)) => progressed = true,
                            Poll::Pending => break,
                        }
                    }
                    if self.to_client.len() == self.batch.held {
                        if let Poll::Ready(Err(_)) = Pin::new(&mut self.client).poll_flush(cx) {
                            return Poll::Ready(Event::ClientError);
                        }
                    }
                    if let Some(lease) = self.server.as_mut() {
                        let server: &mut ServerConn = lease;
                        if self.to_server.is_empty() {
                            if let Poll::Ready(Err(e)) = Pin::new(&mut server.stream).poll_flush(cx)
                            {
                                return Poll::Ready(Event::ServerLost(e.to_string()));
                            }
                        }
                        if self.to_client.len() < BACKPRESSURE {
                            server.buf.reserve(16 * 1024);
                            match poll_read_buf(Pin::new(&mut server.stream), cx, &mut server.buf) {
                                Poll::Ready(Ok(0)) => {
                                    return Poll::Ready(Event::ServerLost(
                                        "the server closed the connection".into(),
                                    ))
                                }
                                Poll::Ready(Ok(_)) => return Poll::Ready(Event::ServerData),
                                Poll::Ready(Err(e)) => {
                                    return Poll::Ready(Event::ServerLost(e.to_string()))
                                }
                                Poll::Pending => {}
                            }
                        }
                    }
                    // The response is out and the server gone: the client is about
                    // to wait parked, whose wait reads it.
                    if progressed && self.parked() {
                        return Poll::Ready(Event::Progress);
                    }
                    if self.to_server.len() < BACKPRESSURE && self.to_client.len() < BACKPRESSURE {
                        match read_client(&mut self.client, cx, &mut self.cbuf) {
                            Poll::Ready(Ok(0)) => return Poll::Ready(Event::ClientClosed),
                            Poll::Ready(Ok(_)) => return Poll::Ready(Event::ClientData),
                            Poll::Ready(Err(_)) => return Poll::Ready(Event::ClientError),
                            Poll::Pending => {}
                        }
                    }
                    // Bytes went out but nothing came in: the loop has nothing to
                    // decide again unless the client became idle (its waits differ)
                    // or parked, and every socket it waits on has its waker.
                    if progressed && (self.parked() || self.is_idle() != idle) {
                        Poll::Ready(Event::Progress)
                    } else {
                        Poll::Pending
                    }
                });
                if !idle {
                    // In flight: only I/O can move things on.
                    io.await
                } else {
                    tokio::select! {
                        biased;
                        ev = io => ev,
                        _ = async {
                            loop {
                                if shutdown.changed().await.is_err() {
                                    std::future::pending::<()>().await;
                                }
                                if *shutdown.borrow() { break; }
                            }
                        } => continue,
                        // `idle` implies status I: like PostgreSQL's
                        // idle_session_timeout, never inside a transaction block.
                        _ = expire(idle_timeout) => {
                            return Err(End::Fatal(PgError::fatal(
                                code::IDLE_SESSION_TIMEOUT,
                                "terminating connection due to idle-session timeout",
                            )));
                        }
                    }
                }
            };
            match event {
                Event::ClientData => self.on_client_data().await?,
                Event::ClientClosed => return Err(End::Client),
                Event::ClientError => return Err(End::ClientIo),
                Event::ServerData => self.on_server_data().await?,
                Event::ServerLost(reason) => self.on_server_lost(reason).await?,
                Event::Progress => {}
            }
        }
    }

    /// No statement in flight and no transaction open.
    fn is_idle(&self) -> bool {
        !self.copy_in
            && self.queue.is_empty()
            && self.status == b'I'
            && !self.unsynced
            && self.to_server.is_empty()
            && self.passthrough.is_none()
    }

    // ---- client → server ----

    async fn on_client_data(&mut self) -> Result<(), End> {
        if self.db.obs.is_some() {
            self.read_at = Instant::now();
        }
        loop {
            if self.cbuf.len() < 5 {
                self.maybe_release();
                return Ok(());
            }
            let len = i32::from_be_bytes([self.cbuf[1], self.cbuf[2], self.cbuf[3], self.cbuf[4]]);
            if len < 4 {
                return Err(End::Fatal(PgError::fatal(
                    code::PROTOCOL_VIOLATION,
                    format!("invalid message length {len}"),
                )));
            }
            let total = len as usize + 1;
            if total > self.max_message {
                return Err(End::Fatal(PgError::fatal(
                    code::PROGRAM_LIMIT_EXCEEDED,
                    format!(
                        "message of {total} bytes exceeds the limit of {} bytes",
                        self.max_message
                    ),
                )));
            }
            if self.cbuf.len() < total {
                // A large message (COPY data, big Parse): read straight into place.
                if total > 8192 {
                    self.cbuf.reserve(total - self.cbuf.len());
                }
                return Ok(());
            }
            if self.forward_plain_run() {
                continue;
            }
            let frame = self.cbuf.split_to(total).freeze();
            self.on_client_message(frame).await?;
        }
    }

    /// Forwards, with one copy, the run of whole messages at the head of `cbuf`
    /// that go to the server unchanged (the common case: unnamed statements,
    /// Execute, Sync, plain queries); false if the first message needs more care.
    fn forward_plain_run(&mut self) -> bool {
        if self.server.is_none() || self.skip_until_sync {
            return false;
        }
        let mut pos = 0;
        let mut copy_data = false;
        while let Some((tag, total)) = whole_message_at(&self.cbuf, pos) {
            if total > self.max_message {
                break;
            }
            let body = &self.cbuf[pos + 5..pos + total];
            let mut fp = None;
            let expect = match tag {
                b'E' if self.portal_cmd(body).is_none() => {
                    fp = self.portal_fp;
                    Some(Expect::Execute)
                }
                b'S' if !self.copy_in && self.executed_cmds.is_empty() && !self.server_skipping => {
                    self.unnamed_batch = false;
                    Some(Expect::Sync)
                }
                b'P' => match cstr(body) {
                    Some((name, rest))
                        if (name.is_empty() || !self.transaction_mode)
                            && cstr(rest).is_some_and(|(sql, _)| session_cmd(sql).is_none()) =>
                    {
                        if let (Some(obs), Some((sql, _))) = (&self.db.obs, cstr(rest)) {
                            fp = Some(self.fps.get_or_insert_with(Default::default).get(obs, sql));
                            self.stmt_fps.set(name, fp);
                        }
                        if name.is_empty() && self.transaction_mode {
                            let frame = &self.cbuf[pos..pos + total];
                            // Clients repeat the same statement: no copy then.
                            if self.unnamed[..] != *frame {
                                self.unnamed = Bytes::copy_from_slice(frame);
                            }
                            self.unnamed_cmd = None;
                            self.unnamed_sent();
                            Some(Expect::ParseUnnamed)
                        } else {
                            Some(Expect::Parse)
                        }
                    }
                    _ => break,
                },
                b'B' => match cstr(body).and_then(|(_, rest)| cstr(rest)) {
                    Some((name, _))
                        if !self.transaction_mode
                            || (name.is_empty()
                                && self.unnamed_ready()
                                && self.unnamed_cmd.is_none()) =>
                    {
                        if self.db.obs.is_some() {
                            self.portal_fp = self.stmt_fps.get(name);
                            fp = self.portal_fp;
                        }
                        // Rebinding the portal of a session command replaces it.
                        if let (false, Some((portal, _))) =
                            (self.portal_cmds.is_empty(), cstr(body))
                        {
                            self.portal_cmds.retain(|e| *e.portal != *portal);
                        }
                        Some(Expect::Bind)
                    }
                    _ => break,
                },
                b'D' => match (body.first(), cstr(body.get(1..).unwrap_or_default())) {
                    (Some(b'P'), Some(_)) => Some(Expect::DescribePortal),
                    (Some(b'S'), Some((name, _)))
                        if !self.transaction_mode || (name.is_empty() && self.unnamed_ready()) =>
                    {
                        Some(Expect::DescribeStatement)
                    }
                    _ => break,
                },
                b'Q' => match cstr(body) {
                    Some((sql, _)) if session_cmd(sql).is_none() => {
                        if let Some(obs) = &self.db.obs {
                            fp = Some(self.fps.get_or_insert_with(Default::default).get(obs, sql));
                        }
                        self.forget_unnamed();
                        Some(Expect::Query)
                    }
                    _ => break,
                },
                b'd' => {
                    copy_data = true;
                    None
                }
                _ => break,
            };
            match expect {
                Some(Expect::Sync) => {
                    self.note_sync();
                    self.unsynced = false;
                }
                Some(Expect::Query) => self.note_sync(),
                Some(_) => self.unsynced = true,
                None => {}
            }
            if let Some(expect) = expect {
                self.push_timed(expect, fp);
            }
            pos += total;
        }
        if pos == 0 {
            return false;
        }
        // The usual batch is all the client sent: its buffer is then moved, not
        // copied, into the replay copy or the server's output.
        let whole = pos == self.cbuf.len();
        if self.batch.eligible {
            if self.batch.replay.len() + pos > REPLAY_LIMIT || copy_data {
                self.lose_retry();
            } else if whole && self.batch.replay.is_empty() {
                self.to_server.extend_from_slice(&self.cbuf);
                self.batch.replay = std::mem::take(&mut self.cbuf);
                return true;
            } else {
                self.batch.replay.extend_from_slice(&self.cbuf[..pos]);
            }
        }
        if whole && self.to_server.is_empty() {
            std::mem::swap(&mut self.to_server, &mut self.cbuf);
        } else {
            self.to_server.extend_from_slice(&self.cbuf[..pos]);
            bytes::Buf::advance(&mut self.cbuf, pos);
        }
        true
    }

    async fn on_client_message(&mut self, frame: Bytes) -> Result<(), End> {
        let tag = frame[0];
        if tag == b'X' {
            return Err(End::Client);
        }
        if self.skip_until_sync {
            // The server skips these too (or never got the batch); a retry of the
            // batch replays them all the same.
            self.keep_for_retry(&frame);
            if matches!(tag, b'c' | b'f') {
                self.copy_in = false;
            }
            if tag == b'S' {
                self.skip_until_sync = false;
                self.executed_cmds.clear();
                if self.server.is_some() && self.unsynced {
                    // Messages of this batch reached the server before it was
                    // refused. Unless the server already failed the batch itself,
                    // a Parse that fails ends it there as a failed batch ends (its
                    // implicit transaction rolled back); the client's Sync then
                    // answers it. A refused batch is not retried.
                    self.lose_retry();
                    if !self.server_skipping {
                        self.queue.push_back(Pending::Hidden {
                            expect: Expect::Fail,
                            stmt: None,
                        });
                        self.to_server.extend_from_slice(FAILING_PARSE);
                    }
                    self.server_skipping = false;
                    self.unnamed_batch = false;
                    self.note_sync();
                    self.unsynced = false;
                    let sync = self.next_sync();
                    self.queue.push_back(Pending::Client {
                        expect: Expect::Sync,
                        stmt: None,
                        cmds: Vec::new(),
                        errored: true,
                        sync,
                        timing: None,
                    });
                    self.executed_cmds.clear();
                    self.to_server.extend_from_slice(&frame);
                } else {
                    self.synthetic_ready(Bytes::new());
                }
            }
            return Ok(());
        }
        if !matches!(
            tag,
            b'Q' | b'P' | b'B' | b'D' | b'E' | b'C' | b'S' | b'H' | b'F' | b'd' | b'c' | b'f'
        ) {
            return Err(End::Fatal(PgError::fatal(
                code::PROTOCOL_VIOLATION,
                format!("unexpected message type {:?} from the client", tag as char),
            )));
        }
        if self.server.is_none() {
            if matches!(tag, b'd' | b'c' | b'f' | b'H') {
                // Copy data or Flush with nothing in flight: nothing to do.
                return Ok(());
            }
            if let Err(e) = self.attach().await {
                if tag == b'Q' {
                    let sql = cstr(&frame[5..]).map(|(s, _)| s).unwrap_or_default();
                    if let Some(fp) = self.fp_of(sql) {
                        let mut code = [0u8; 5];
                        code.copy_from_slice(&e.code.as_bytes()[..5]);
                        self.finish(Timing {
                            fp,
                            start: self.read_at,
                            rows: 0,
                            error: Some(code),
                        });
                    }
                }
                msg::error(&mut self.to_client, &e);
                if matches!(tag, b'Q' | b'F' | b'S') {
                    self.emit(&[b'Z', 0, 0, 0, 5, b'I']);
                } else {
                    self.skip_until_sync = true;
                }
                return Ok(());
            }
        }
        if matches!(tag, b'd' | b'c' | b'f') {
            self.lose_retry();
        } else {
            self.keep_for_retry(&frame);
        }
        let body = &frame[5..];
        match tag {
            b'Q' => {
                self.note_sync();
                self.forget_unnamed();
                let sql = cstr(body).map(|(s, _)| s).unwrap_or_default();
                let fp = self.fp_of(sql);
                let cmd = session_cmd(sql);
                if let Some(cmd) = cmd {
                    let text: Box<str> = String::from_utf8_lossy(sql)
                        .trim()
                        .trim_end_matches(';')
                        .into();
                    if self.refuses(&cmd) {
                        self.synthetic_ready(refusal());
                        return Ok(());
                    }
                    self.push_timed(Expect::Query, fp);
                    if let Some(Pending::Client { cmds, .. }) = self.queue.back_mut() {
                        cmds.push(Executed {
                            cmd,
                            text,
                            bound: u64::MAX,
                        });
                    }
                } else {
                    self.push_timed(Expect::Query, fp);
                }
                self.to_server.extend_from_slice(&frame);
            }
            b'F' => {
                self.note_sync();
                self.push_client(Expect::Query);
                self.to_server.extend_from_slice(&frame);
            }
            b'S' => {
                self.note_sync();
                self.unsynced = false;
                if !self.copy_in {
                    // A batch the server already failed: its session command did
                    // not take effect.
                    let sync = self.next_sync();
                    self.queue.push_back(Pending::Client {
                        expect: Expect::Sync,
                        stmt: None,
                        cmds: std::mem::take(&mut self.executed_cmds),
                        errored: self.server_skipping,
                        sync,
                        timing: None,
                    });
                }
                self.server_skipping = false;
                self.unnamed_batch = false;
                self.to_server.extend_from_slice(&frame);
            }
            b'H' => {
                // The client waits for responses without a Sync: nothing may be held.
                self.lose_retry();
                self.to_server.extend_from_slice(&frame);
            }
            b'd' => self.to_server.extend_from_slice(&frame),
            b'c' | b'f' => {
                self.copy_in = false;
                self.to_server.extend_from_slice(&frame);
            }
            b'E' => {
                self.unsynced = true;
                if let Some(e) = self.portal_cmd(body) {
                    let (cmd, text) = (*e.cmd).clone();
                    let bound = e.bound;
                    self.executed_cmds.push(Executed { cmd, text, bound });
                }
                self.push_timed(Expect::Execute, self.portal_fp);
                self.to_server.extend_from_slice(&frame);
            }
            b'P' => self.on_parse(&frame)?,
            b'B' => {
                let (portal, rest) = cstr(body).ok_or_else(malformed)?;
                let (name, params) = cstr(rest).ok_or_else(malformed)?;
                self.portal_fp = self.stmt_fps.get(name);
                let fp = self.portal_fp;
                let cmd = if name.is_empty() {
                    self.unnamed_cmd.clone()
                } else {
                    std::str::from_utf8(name)
                        .ok()
                        .and_then(|n| self.stmts.get(n))
                        .and_then(|s| s.cmd.clone())
                };
                self.unbind_portal_cmd(body);
                if let Some(cmd) = cmd {
                    if self.portal_cmds.len() >= MAX_PORTAL_CMDS {
                        self.portal_cmds.remove(0);
                    }
                    self.portal_cmds.push(PortalCmd {
                        portal: portal.into(),
                        cmd,
                        bound: self.syncs_queued,
                    });
                }
                if self.transaction_mode && name.is_empty() && !self.ensure_unnamed() {
                    return Ok(());
                }
                self.unsynced = true;
                if self.transaction_mode && !name.is_empty() {
                    if let Some(server_name) = self.ensure_prepared(name) {
                        let mut m = BytesMut::with_capacity(frame.len() + 16);
                        m.put_u8(b'B');
                        m.put_i32(0);
                        put_cstr(&mut m, portal);
                        put_cstr(&mut m, server_name.as_bytes());
                        m.put_slice(params);
                        finish_frame(&mut m);
                        self.push_timed(Expect::Bind, fp);
                        self.to_server.extend_from_slice(&m);
                        return Ok(());
                    }
                }
                self.push_timed(Expect::Bind, fp);
                self.to_server.extend_from_slice(&frame);
            }
            b'D' => {
                let kind = *body.first().ok_or_else(malformed)?;
                let (name, _) = cstr(&body[1..]).ok_or_else(malformed)?;
                if kind == b'S'
                    && self.transaction_mode
                    && name.is_empty()
                    && !self.ensure_unnamed()
                {
                    return Ok(());
                }
                self.unsynced = true;
                if kind == b'S' {
                    if self.transaction_mode && !name.is_empty() {
                        if let Some(server_name) = self.ensure_prepared(name) {
                            let mut m = BytesMut::with_capacity(32);
                            m.put_u8(b'D');
                            m.put_i32(0);
                            m.put_u8(b'S');
                            put_cstr(&mut m, server_name.as_bytes());
                            finish_frame(&mut m);
                            self.push_client(Expect::DescribeStatement);
                            self.to_server.extend_from_slice(&m);
                            return Ok(());
                        }
                    }
                    self.push_client(Expect::DescribeStatement);
                } else {
                    self.push_client(Expect::DescribePortal);
                }
                self.to_server.extend_from_slice(&frame);
            }
            b'C' => {
                self.unsynced = true;
                let kind = *body.first().ok_or_else(malformed)?;
                let (name, _) = cstr(&body[1..]).ok_or_else(malformed)?;
                if kind == b'S' && name.is_empty() {
                    self.forget_unnamed();
                }
                if kind == b'P' {
                    self.unbind_portal_cmd(&body[1..]);
                }
                if kind == b'S' && self.transaction_mode && !name.is_empty() {
                    // The server statement is shared by the pool; only the client's
                    // name goes away.
                    self.stmts.remove(String::from_utf8_lossy(name).as_ref());
                    self.synthetic(Bytes::from_static(&[b'3', 0, 0, 0, 4]));
                    return Ok(());
                }
                self.push_client(Expect::Close);
                self.to_server.extend_from_slice(&frame);
            }
            _ => unreachable!("filtered above"),
        }
        Ok(())
    }

    fn on_parse(&mut self, frame: &Bytes) -> Result<(), End> {
        let body = &frame[5..];
        let (name, rest) = cstr(body).ok_or_else(malformed)?;
        let fp = match cstr(rest) {
            Some((sql, _)) => self.fp_of(sql),
            None => None,
        };
        self.stmt_fps.set(name, fp);
        // A session command through the extended protocol (drivers such as pgjdbc
        // and psycopg send SET this way) is tracked when a portal of it is
        // executed, at that batch's Sync: a driver may Parse in one batch and
        // Bind and Execute in the next.
        let mut cmd: Option<Cmd> = None;
        if let Some((sql, _)) = cstr(rest) {
            if let Some(c) = session_cmd(sql) {
                if self.refuses(&c) {
                    // As a Parse that failed: the client has no unnamed statement.
                    if name.is_empty() {
                        self.forget_unnamed();
                    }
                    // A refusal is deterministic: the batch is not retried.
                    self.lose_retry();
                    self.synthetic(refusal());
                    self.skip_until_sync = true;
                    return Ok(());
                }
                let text: Box<str> = String::from_utf8_lossy(sql)
                    .trim()
                    .trim_end_matches(';')
                    .into();
                cmd = Some(Box::new((c, text)));
            }
        }
        self.unsynced = true;
        if !self.transaction_mode || name.is_empty() {
            if self.transaction_mode {
                // A copy: the frame shares the whole buffer it was read into.
                self.unnamed = Bytes::copy_from_slice(frame);
                self.unnamed_cmd = cmd;
                self.unnamed_sent();
                self.push_timed(Expect::ParseUnnamed, fp);
            } else {
                self.push_timed(Expect::Parse, fp);
            }
            self.to_server.extend_from_slice(frame);
            return Ok(());
        }
        let mut h = DefaultHasher::new();
        rest.hash(&mut h);
        let key = h.finish();
        let server_name = statement_name(key);
        let mut parse = BytesMut::with_capacity(rest.len() + 32);
        parse.put_u8(b'P');
        parse.put_i32(0);
        put_cstr(&mut parse, server_name.as_bytes());
        parse.put_slice(rest);
        finish_frame(&mut parse);
        let parse = parse.freeze();
        let client_name: Box<str> = String::from_utf8_lossy(name).into();
        self.stmts.insert(
            client_name.clone(),
            Stmt {
                key,
                parse: parse.clone(),
                cmd,
            },
        );
        let server = self.server.as_mut().expect("attached before handling");
        if server.prepared.contains(&key) {
            self.synthetic(Bytes::from_static(&[b'1', 0, 0, 0, 4]));
        } else {
            server.prepared.insert(key);
            self.push_timed(Expect::Parse, fp);
            if let Some(Pending::Client { stmt, .. }) = self.queue.back_mut() {
                *stmt = Some((key, client_name));
            }
            self.to_server.extend_from_slice(&parse);
        }
        Ok(())
    }

    /// The session command bound to the portal named at the start of `body` (a
    /// Bind or Execute), if any.
    fn portal_cmd(&self, body: &[u8]) -> Option<&PortalCmd> {
        let (portal, _) = cstr(body)?;
        self.portal_cmds.iter().find(|e| *e.portal == *portal)
    }

    /// The portal named at the start of `body` (a Bind) is bound anew.
    fn unbind_portal_cmd(&mut self, body: &[u8]) {
        if let (false, Some((portal, _))) = (self.portal_cmds.is_empty(), cstr(body)) {
            self.portal_cmds.retain(|e| *e.portal != *portal);
        }
    }

    /// Makes sure the attached server holds the client's unnamed statement before
    /// a Bind or Describe of it (sending its Parse first if not). False if the
    /// client has none: it is told so, as PostgreSQL would, and nothing is sent
    /// (the server may hold another client's unnamed statement).
    fn ensure_unnamed(&mut self) -> bool {
        if self.unnamed_ready() {
            return true;
        }
        if self.unnamed.is_empty() {
            let mut out = BytesMut::new();
            msg::error(
                &mut out,
                &PgError::new(
                    code::INVALID_SQL_STATEMENT_NAME,
                    "unnamed prepared statement does not exist",
                ),
            );
            self.lose_retry();
            self.synthetic(out.freeze());
            self.skip_until_sync = true;
            return false;
        }
        self.queue.push_back(Pending::Hidden {
            expect: Expect::ParseUnnamed,
            stmt: None,
        });
        self.to_server.extend_from_slice(&self.unnamed);
        self.unnamed_sent();
        true
    }

    /// Whether the attached server holds the client's unnamed statement for a
    /// Bind or Describe sent now: parsed earlier in this batch, or answered with
    /// ParseComplete (a Parse in an earlier batch may have been skipped after an
    /// error, leaving whatever statement the server had).
    fn unnamed_ready(&self) -> bool {
        self.unnamed_batch || (self.unnamed_inflight == 0 && self.unnamed_ok)
    }

    fn unnamed_sent(&mut self) {
        self.unnamed_inflight += 1;
        self.unnamed_batch = true;
        self.unnamed_ok = false;
    }

    /// The server answered a Parse of the client's unnamed statement (`ok`:
    /// ParseComplete; otherwise an error, or skipped after one). `forget`: the
    /// Parse was the client's, so its failure leaves the client without one.
    fn unnamed_answered(&mut self, ok: bool, forget: bool) {
        self.unnamed_inflight = self.unnamed_inflight.saturating_sub(1);
        if self.unnamed_inflight == 0 {
            self.unnamed_ok = ok;
            if !ok && forget {
                // The client's latest unnamed statement does not exist.
                self.unnamed = Bytes::new();
                self.unnamed_cmd = None;
            }
        }
    }

    /// Forgets what is known of the server's unnamed statement (a new server, or
    /// one whose queue was dropped).
    fn unnamed_unknown(&mut self) {
        self.unnamed_batch = false;
        self.unnamed_inflight = 0;
        self.unnamed_ok = false;
        self.server_skipping = false;
    }

    /// The client's unnamed statement is gone (a simple Query or a Close of it
    /// destroys it, on the server too).
    fn forget_unnamed(&mut self) {
        self.unnamed = Bytes::new();
        self.unnamed_cmd = None;
        self.unnamed_batch = false;
        self.unnamed_inflight = 0;
        self.unnamed_ok = false;
        // Parses still in flight no longer define the client's statement.
        for p in self.queue.iter_mut() {
            if let Pending::Client { expect, .. } | Pending::Hidden { expect, .. } = p {
                if *expect == Expect::ParseUnnamed {
                    *expect = Expect::Parse;
                }
            }
        }
    }

    /// Makes sure the client's statement `name` exists on the attached server
    /// (sending its Parse first if not) and returns its pool-wide name; `None`
    /// if the client has no such statement (the server will say so).
    fn ensure_prepared(&mut self, name: &[u8]) -> Option<String> {
        let name = std::str::from_utf8(name).ok()?;
        let stmt = self.stmts.get(name)?;
        let key = stmt.key;
        let server = self.server.as_mut().expect("attached before handling");
        if !server.prepared.contains(&key) {
            server.prepared.insert(key);
            let parse = stmt.parse.clone();
            self.queue.push_back(Pending::Hidden {
                expect: Expect::Parse,
                stmt: Some(key),
            });
            self.to_server.extend_from_slice(&parse);
        }
        Some(statement_name(key))
    }

    /// Whether this session command is refused (`session_set = "refuse"`).
    fn refuses(&self, cmd: &SessionCmd) -> bool {
        self.transaction_mode
            && self.db.pool.config.session_set == SessionSet::Refuse
            && matches!(
                cmd,
                SessionCmd::Set(_) | SessionCmd::Reset(_) | SessionCmd::ResetAll
            )
    }

    fn push_client(&mut self, expect: Expect) {
        self.push_timed(expect, None);
    }

    fn push_timed(&mut self, expect: Expect, fp: Option<Fp>) {
        let sync = if matches!(expect, Expect::Sync | Expect::Query) {
            self.next_sync()
        } else {
            0
        };
        self.queue.push_back(Pending::Client {
            expect,
            stmt: None,
            cmds: Vec::new(),
            errored: false,
            sync,
            timing: fp.map(|fp| Timing {
                fp,
                start: self.read_at,
                rows: 0,
                error: None,
            }),
        });
    }

    /// The fingerprint of a statement text, when timing is on.
    fn fp_of(&mut self, sql: &[u8]) -> Option<Fp> {
        let obs = self.db.obs.as_ref()?;
        Some(self.fps.get_or_insert_with(Default::default).get(obs, sql))
    }

    /// A statement finished: recorded now, or when its batch can no longer be
    /// retried (a retried attempt is not counted).
    fn finish(&mut self, timing: Timing) {
        let Some(obs) = &self.db.obs else { return };
        let done = Done {
            timing,
            end: Instant::now(),
            wait: std::mem::take(&mut self.wait),
        };
        if self.batch.eligible {
            self.batch.done.push(done);
        } else {
            record(obs, &done);
        }
    }

    /// Numbers a client Sync or Query being queued.
    fn next_sync(&mut self) -> u64 {
        self.syncs_queued += 1;
        self.syncs_queued
    }

    fn note_sync(&mut self) {
        self.batch.syncs += 1;
        if self.batch.syncs > 1 {
            self.lose_retry();
        }
    }

    /// An answer of unidb's own, in order behind whatever is in flight.
    fn synthetic(&mut self, bytes: Bytes) {
        self.push_synthetic(bytes, false);
    }

    /// Like [`Relay::synthetic`], then a ReadyForQuery reporting the transaction
    /// status once everything before it has been answered.
    fn synthetic_ready(&mut self, bytes: Bytes) {
        self.push_synthetic(bytes, true);
    }

    fn push_synthetic(&mut self, bytes: Bytes, ready: bool) {
        if self.queue.is_empty() {
            self.emit_synthetic(&bytes, ready);
        } else {
            self.queue.push_back(Pending::Synthetic { bytes, ready });
        }
    }

    fn emit_synthetic(&mut self, bytes: &[u8], ready: bool) {
        self.emit(bytes);
        if ready {
            // With no server the client is outside any transaction.
            let status = if self.server.is_some() {
                self.status
            } else {
                b'I'
            };
            self.emit(&[b'Z', 0, 0, 0, 5, status]);
        }
    }

    /// Bytes for the client: held while the batch may be retried.
    fn emit(&mut self, bytes: &[u8]) {
        self.to_client.extend_from_slice(bytes);
        if self.batch.eligible {
            self.batch.held += bytes.len();
            if self.batch.held > HOLD_LIMIT {
                self.lose_retry();
            }
        }
    }

    /// Adds a client message to the copy kept for a retry of the batch, while it
    /// may still be retried and the copy stays within its limit.
    fn keep_for_retry(&mut self, frame: &[u8]) {
        if self.transaction_mode && self.batch.eligible {
            if self.batch.replay.len() + frame.len() > REPLAY_LIMIT {
                self.lose_retry();
            } else {
                self.batch.replay.extend_from_slice(frame);
            }
        }
    }

    /// The batch can no longer be retried: release what was held.
    fn lose_retry(&mut self) {
        if self.batch.eligible {
            self.batch.eligible = false;
            if let Some(obs) = &self.db.obs {
                for done in self.batch.done.drain(..) {
                    record(obs, &done);
                }
            }
            self.batch.held = 0;
            self.batch.replay.clear();
        }
    }

    /// Forgets the responses held back for a batch that is retried or abandoned.
    fn drop_held(&mut self) {
        let keep = self.to_client.len() - self.batch.held;
        self.to_client.truncate(keep);
        self.batch.held = 0;
    }

    /// Checks out a server and brings it to the client's session settings.
    async fn attach(&mut self) -> Result<(), PgError> {
        // An idle server free now is taken without timing a wait that did not
        // happen; otherwise the wait (for RESUME after PAUSE, for a free server, for
        // a connect) is timed.
        let now = if self.db.pause.is_paused() {
            None
        } else {
            self.db.pool.try_checkout()
        };
        let mut lease = match now {
            Some(lease) => {
                if let Some(obs) = &self.db.obs {
                    obs.pool_wait(Duration::ZERO);
                }
                lease
            }
            None => {
                let wait = self.db.pool.config.max_client_wait;
                let started = Instant::now();
                self.db.pause.wait_resumed().await;
                let checkout = self.db.pool.checkout(wait).await;
                if let Some(obs) = &self.db.obs {
                    let waited = started.elapsed();
                    self.wait += waited;
                    obs.pool_wait(waited);
                }
                checkout?
            }
        };
        self.slot.set_upstream(lease.pid, lease.secret);
        if lease.settings != self.settings.fingerprint {
            let deallocate = lease.sql_prepared || self.settings.has_prepares();
            if deallocate {
                lease.prepared.clear();
                lease.sql_prepared = self.settings.has_prepares();
            }
            let sql = self.settings.apply_sql(deallocate);
            tracing::debug!(database = %self.db.pool.name, %sql, "restoring session settings");
            self.to_server.extend_from_slice(&query_message(&sql));
            self.queue.push_back(Pending::Hidden {
                expect: Expect::Query,
                stmt: None,
            });
            lease.settings = self.settings.fingerprint;
        }
        self.server = Some(lease);
        self.unnamed_unknown();
        self.status = b'I';
        let attempts = self.batch.attempts;
        self.batch = Batch {
            eligible: self.transaction_mode
                && self.db.pool.config.retry_attempts > 0
                && attempts < self.db.pool.config.retry_attempts,
            attempts,
            ..Batch::default()
        };
        Ok(())
    }

    /// Returns the server at the end of a transaction (transaction mode).
    fn maybe_release(&mut self) {
        if !self.transaction_mode || self.server.is_none() || !self.is_idle() {
            return;
        }
        if let Some(server) = &self.server {
            if !server.buf.is_empty() {
                return;
            }
        }
        self.lose_retry();
        self.batch = Batch::default();
        self.slot.clear_upstream();
        self.unnamed_unknown();
        let lease = self.server.take();
        if let Some(mut lease) = lease {
            if lease.prepared.len() > self.db.pool.config.max_prepared_statements {
                lease.broken = true;
            }
        }
    }

    // ---- server → client ----

    async fn on_server_data(&mut self) -> Result<(), End> {
        let Some(server) = self.server.as_mut() else {
            return Ok(());
        };
        let mut buf = std::mem::take(&mut server.buf);
        self.batch.server_bytes += buf.len();
        // At most this much is relayed: one allocation rather than one per message.
        self.to_client.reserve(buf.len());
        let result = self.process_server(&mut buf);
        if let Some(server) = self.server.as_mut() {
            // Keep the unprocessed tail (a partial message) for the next read.
            server.buf = buf;
        }
        match result? {
            Some(Retry { dead }) => Box::pin(self.retry(dead)).await,
            None => {
                self.maybe_release();
                Ok(())
            }
        }
    }

    /// Relays complete messages from `buf` (consuming them) and updates state.
    fn process_server(&mut self, buf: &mut BytesMut) -> Result<Option<Retry>, End> {
        let mut pos = 0;
        let result = self.process_server_at(buf, &mut pos);
        bytes::Buf::advance(buf, pos);
        result
    }

    /// Messages are looked at in place; `pos` ends after the last one consumed.
    fn process_server_at(&mut self, buf: &[u8], pos: &mut usize) -> Result<Option<Retry>, End> {
        loop {
            let rest = &buf[*pos..];
            if let Some((remaining, forward)) = self.passthrough {
                let n = remaining.min(rest.len());
                if forward {
                    self.emit(&rest[..n]);
                }
                *pos += n;
                self.passthrough = (remaining > n).then_some((remaining - n, forward));
                if self.passthrough.is_some() {
                    return Ok(None);
                }
                continue;
            }
            if rest.len() < 5 {
                return Ok(None);
            }
            let tag = rest[0];
            let len = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
            if len < 4 {
                return Err(End::Fatal(PgError::fatal(
                    code::PROTOCOL_VIOLATION,
                    format!("invalid message length {len} from the upstream server"),
                )));
            }
            let total = len as usize + 1;
            if matches!(tag, b'D' | b'd') {
                // Rows and copy data stream through without being buffered whole.
                let forward = !matches!(self.queue.front(), Some(Pending::Hidden { .. }));
                self.batch.server_msgs += 1;
                self.passthrough = Some((total, forward));
                continue;
            }
            if rest.len() < total {
                return Ok(None);
            }
            *pos += total;
            if let Some(retry) = self.on_server_message(tag, &rest[..total])? {
                return Ok(Some(retry));
            }
        }
    }

    fn on_server_message(&mut self, tag: u8, frame: &[u8]) -> Result<Option<Retry>, End> {
        let body = &frame[5..];
        self.batch.server_msgs += 1;
        let hidden = matches!(self.queue.front(), Some(Pending::Hidden { .. }));
        match tag {
            b'E' => {
                let fields = ErrorFields::parse(body);
                let fatal = fields.severity == "FATAL" || fields.severity == "PANIC";
                if self.batch.server_msgs == 1
                    && fatal
                    && fields.code.starts_with("57P")
                    && self.batch.completed == 0
                {
                    self.batch.dead_on_arrival = true;
                }
                if matches!(fields.code.as_str(), "40001" | "40P01") {
                    self.batch.retryable_error = true;
                    self.batch.retry_reason = if fields.code == "40001" {
                        "serialization"
                    } else {
                        "deadlock"
                    };
                }
                let mut code = [b'X', b'X', b'0', b'0', b'0'];
                if fields.code.len() == 5 {
                    code.copy_from_slice(fields.code.as_bytes());
                }
                if fatal {
                    if let Some(s) = self.server.as_mut() {
                        s.broken = true;
                    }
                    if self.batch.dead_on_arrival && self.batch.eligible {
                        return Ok(Some(Retry { dead: true }));
                    }
                }
                let head = self.queue.front_mut();
                match head {
                    Some(Pending::Client {
                        expect,
                        stmt,
                        errored,
                        timing,
                        ..
                    }) => {
                        *errored = true;
                        let expect = *expect;
                        if let Some(t) = timing.as_mut() {
                            t.error = Some(code);
                        }
                        let finished = if expect.is_extended() {
                            timing.take()
                        } else {
                            None
                        };
                        if let Some((key, name)) = stmt.take() {
                            self.stmts.remove(&name);
                            if let Some(s) = self.server.as_mut() {
                                s.prepared.remove(&key);
                            }
                        }
                        if expect == Expect::ParseUnnamed {
                            self.unnamed_answered(false, true);
                        }
                        self.emit(frame);
                        if let Some(t) = finished {
                            self.finish(t);
                        }
                        if expect.is_extended() {
                            self.queue.pop_front();
                            self.skip_to_sync();
                        }
                    }
                    Some(Pending::Hidden { expect, stmt }) => {
                        let expect = *expect;
                        if let (Some(key), Some(s)) = (*stmt, self.server.as_mut()) {
                            s.prepared.remove(&key);
                        }
                        if expect == Expect::ParseUnnamed {
                            self.unnamed_answered(false, false);
                        }
                        if matches!(expect, Expect::Parse | Expect::ParseUnnamed) {
                            // The client's Bind fails because of this: it must know why.
                            self.emit(frame);
                        } else if expect == Expect::Fail {
                            // FAILING_PARSE, failing as it should.
                        } else {
                            tracing::warn!(
                                database = %self.db.pool.name,
                                code = %fields.code,
                                message = %fields.message,
                                "restoring session settings on a server connection failed"
                            );
                        }
                        if expect.is_extended() {
                            self.queue.pop_front();
                            self.skip_to_sync();
                        }
                    }
                    _ => self.emit(frame),
                }
                if fatal {
                    // The server closes the connection after a FATAL; the client was
                    // told, so its connection ends too.
                    self.lose_retry();
                    return Err(End::Close);
                }
            }
            b'Z' => {
                self.status = body.first().copied().unwrap_or(b'I');
                match self.queue.pop_front() {
                    Some(Pending::Client {
                        cmds,
                        errored,
                        timing,
                        sync,
                        ..
                    }) => {
                        if !errored {
                            let idle_upto = self.idle_upto;
                            self.tx_cmds.extend(
                                cmds.into_iter()
                                    .filter(|c| idle_upto <= c.bound)
                                    .map(|c| (c.cmd, c.text)),
                            );
                        }
                        if self.status == b'I' && !self.tx_cmds.is_empty() {
                            // Autocommitted, or the end of the transaction that ran
                            // them: kept only if it committed.
                            let cmds = std::mem::take(&mut self.tx_cmds);
                            if self.last_commit || !self.in_tx_block {
                                for (cmd, text) in cmds {
                                    self.apply_session_cmd(cmd, &text);
                                }
                            }
                        }
                        self.in_tx_block = self.status != b'I';
                        let done = self.queue.is_empty() && !self.unsynced;
                        if done
                            && self.batch.eligible
                            && self.batch.retryable_error
                            && self.batch.completed == 0
                            && self.status == b'I'
                        {
                            return Ok(Some(Retry { dead: false }));
                        }
                        if self.status == b'I' {
                            // No transaction after this batch: every portal bound up
                            // to it is gone (later batches may already have bound some).
                            self.idle_upto = sync;
                            self.portal_cmds.retain(|e| e.bound >= sync);
                        }
                        if let Some(t) = timing {
                            self.finish(t);
                        }
                        self.emit(frame);
                        if done {
                            self.lose_retry();
                        }
                    }
                    Some(Pending::Hidden { .. }) => {}
                    Some(Pending::Synthetic { bytes, ready }) => {
                        // Cannot happen: synthetic entries are drained when they reach
                        // the head. Keep the order anyway.
                        self.emit_synthetic(&bytes, ready);
                        self.emit(frame);
                    }
                    None => self.emit(frame),
                }
                self.drain_synthetic();
            }
            b'C' | b'I' | b's' => {
                let rows = if tag == b'C' {
                    self.batch.completed += 1;
                    self.last_commit = body.starts_with(b"COMMIT");
                    tag_rows(body)
                } else {
                    0
                };
                if !hidden {
                    self.emit(frame);
                }
                match self.queue.front_mut() {
                    Some(Pending::Client {
                        expect: Expect::Execute,
                        timing,
                        ..
                    }) => {
                        let t = timing.take();
                        self.queue.pop_front();
                        if let Some(mut t) = t {
                            t.rows += rows;
                            self.finish(t);
                        }
                        self.drain_synthetic();
                    }
                    Some(Pending::Hidden {
                        expect: Expect::Execute,
                        ..
                    }) => {
                        self.queue.pop_front();
                        self.drain_synthetic();
                    }
                    Some(Pending::Client {
                        expect: Expect::Query,
                        timing: Some(t),
                        ..
                    }) => t.rows += rows,
                    _ => {}
                }
            }
            b'1' | b'2' | b'3' | b'T' | b'n' => {
                if !hidden {
                    self.emit(frame);
                }
                let completes = match self.queue.front() {
                    Some(Pending::Client { expect, .. } | Pending::Hidden { expect, .. }) => {
                        matches!(
                            (tag, expect),
                            (b'1', Expect::Parse | Expect::ParseUnnamed)
                                | (b'2', Expect::Bind)
                                | (b'3', Expect::Close)
                                | (
                                    b'T' | b'n',
                                    Expect::DescribeStatement | Expect::DescribePortal
                                )
                        )
                    }
                    _ => false,
                };
                if completes {
                    if let Some(
                        Pending::Client {
                            expect: Expect::ParseUnnamed,
                            ..
                        }
                        | Pending::Hidden {
                            expect: Expect::ParseUnnamed,
                            ..
                        },
                    ) = self.queue.pop_front()
                    {
                        self.unnamed_answered(true, false);
                    }
                    self.drain_synthetic();
                }
            }
            b'S' | b'N' if hidden => {}
            b'G' | b'W' => {
                // CopyInResponse: the client sends data only once it has this.
                self.lose_retry();
                self.emit(frame);
                // In copy-in mode the server ignores Sync: any the client sent
                // behind the Execute get no ReadyForQuery.
                self.copy_in = true;
                if matches!(
                    self.queue.front(),
                    Some(Pending::Client {
                        expect: Expect::Execute,
                        ..
                    })
                ) {
                    let head = self.queue.pop_front();
                    self.queue.retain(|p| {
                        !matches!(
                            p,
                            Pending::Client {
                                expect: Expect::Sync,
                                ..
                            }
                        )
                    });
                    if let Some(head) = head {
                        self.queue.push_front(head);
                    }
                }
            }
            _ => self.emit(frame),
        }
        Ok(None)
    }

    /// After an error in an extended batch the server ignores everything up to Sync.
    fn skip_to_sync(&mut self) {
        let mut reached_sync = false;
        while let Some(p) = self.queue.front_mut() {
            let mut unnamed_skipped = None;
            match p {
                Pending::Client {
                    expect: Expect::Sync,
                    errored,
                    ..
                } => {
                    // The batch failed: a session command in it did not take effect.
                    *errored = true;
                    reached_sync = true;
                    break;
                }
                Pending::Client {
                    expect: Expect::Query,
                    ..
                }
                | Pending::Hidden {
                    expect: Expect::Sync | Expect::Query,
                    ..
                } => {
                    reached_sync = true;
                    break;
                }
                Pending::Client {
                    expect: Expect::ParseUnnamed,
                    ..
                } => unnamed_skipped = Some(true),
                // unidb's own copy: the client's statement stands.
                Pending::Hidden {
                    expect: Expect::ParseUnnamed,
                    ..
                } => unnamed_skipped = Some(false),
                Pending::Client {
                    stmt: Some((key, name)),
                    ..
                } => {
                    let key = *key;
                    self.stmts.remove(name);
                    if let Some(s) = self.server.as_mut() {
                        s.prepared.remove(&key);
                    }
                }
                Pending::Hidden {
                    stmt: Some(key), ..
                } => {
                    let key = *key;
                    if let Some(s) = self.server.as_mut() {
                        s.prepared.remove(&key);
                    }
                }
                _ => {}
            }
            if let Some(forget) = unnamed_skipped {
                self.unnamed_answered(false, forget);
            }
            self.queue.pop_front();
        }
        // Short of the client's Sync, the server skips what follows until it comes:
        // so does unidb (expecting answers to skipped messages would misalign the
        // queue).
        self.server_skipping = !reached_sync;
        self.skip_until_sync = !reached_sync;
    }

    fn drain_synthetic(&mut self) {
        while let Some(Pending::Synthetic { .. }) = self.queue.front() {
            if let Some(Pending::Synthetic { bytes, ready }) = self.queue.pop_front() {
                self.emit_synthetic(&bytes, ready);
            }
        }
    }

    fn apply_session_cmd(&mut self, cmd: SessionCmd, text: &str) {
        let server = self.server.as_mut();
        match cmd {
            SessionCmd::Set(name) => {
                self.settings.sets.retain(|(n, _)| *n != name);
                self.settings.sets.push((name, text.to_string()));
                self.settings.refresh();
                if let Some(s) = server {
                    s.settings = self.settings.fingerprint;
                }
            }
            SessionCmd::Reset(name) => {
                self.settings.sets.retain(|(n, _)| *n != name);
                self.settings.refresh();
                if let Some(s) = server {
                    s.settings = DIRTY;
                }
            }
            SessionCmd::ResetAll => {
                self.settings.sets.clear();
                self.settings.refresh();
                if let Some(s) = server {
                    s.settings = DIRTY;
                }
            }
            SessionCmd::DiscardAll => {
                self.settings.sets.clear();
                self.settings.refresh();
                self.stmts.clear();
                if let Some(s) = server {
                    s.settings = DIRTY;
                    s.prepared.clear();
                    s.sql_prepared = false;
                }
            }
            SessionCmd::DeallocateAll => {
                self.stmts.clear();
                self.settings.sets.retain(|(k, _)| !k.starts_with('\0'));
                self.settings.refresh();
                if let Some(s) = server {
                    s.prepared.clear();
                    s.sql_prepared = false;
                    s.settings = self.settings.fingerprint;
                }
            }
            SessionCmd::Prepare(name) => {
                let key = prepare_key(&name);
                self.settings.sets.retain(|(k, _)| *k != key);
                self.settings.sets.push((key, text.to_string()));
                self.settings.refresh();
                if let Some(s) = server {
                    s.settings = self.settings.fingerprint;
                    s.sql_prepared = true;
                }
            }
            SessionCmd::Deallocate(name) => {
                let key = prepare_key(&name);
                self.settings.sets.retain(|(k, _)| *k != key);
                self.settings.refresh();
                if let Some(s) = server {
                    s.settings = self.settings.fingerprint;
                }
            }
        }
    }

    // ---- failures and retries ----

    async fn on_server_lost(&mut self, reason: String) -> Result<(), End> {
        let address = self.db.pool.upstream.address();
        tracing::warn!(database = %self.db.pool.name, upstream = %address, %reason, "server connection lost");
        if let Some(s) = self.server.as_mut() {
            s.broken = true;
        }
        self.db.pool.discard_idle();
        if self.batch.eligible && (self.batch.server_bytes == 0 || self.batch.dead_on_arrival) {
            return Box::pin(self.retry(true)).await;
        }
        let in_transaction = self.status != b'I' || self.batch.completed > 0;
        let mid_message = self.passthrough.is_some();
        self.lose_retry();
        let syncs = self
            .queue
            .iter()
            .filter(|p| {
                matches!(
                    p,
                    Pending::Client {
                        expect: Expect::Sync | Expect::Query,
                        ..
                    }
                )
            })
            .count();
        let unsynced = self.unsynced;
        let lost: Vec<Timing> = self
            .queue
            .iter_mut()
            .filter_map(|p| match p {
                Pending::Client {
                    expect: Expect::Execute | Expect::Query,
                    timing,
                    ..
                } => timing.take(),
                _ => None,
            })
            .collect();
        for mut t in lost {
            t.error = Some(*b"08006");
            self.finish(t);
        }
        self.detach_broken();
        let message =
            format!("the connection to upstream PostgreSQL at {address} was lost: {reason}");
        if mid_message {
            return Err(End::ClientIo);
        }
        if in_transaction || !self.transaction_mode {
            return Err(End::Fatal(
                PgError::fatal(code::CONNECTION_FAILURE, message)
                    .with_hint("the transaction was rolled back; reconnect and run it again"),
            ));
        }
        msg::error(
            &mut self.to_client,
            &PgError::new(code::CONNECTION_FAILURE, message)
                .with_hint("the statement did not complete; it can be run again"),
        );
        for _ in 0..syncs {
            self.to_client.extend_from_slice(&[b'Z', 0, 0, 0, 5, b'I']);
        }
        if unsynced {
            self.skip_until_sync = true;
        }
        Ok(())
    }

    fn detach_broken(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.broken = true;
        }
        self.slot.clear_upstream();
        self.queue.clear();
        self.unnamed_unknown();
        self.executed_cmds.clear();
        self.to_server.clear();
        self.passthrough = None;
        self.status = b'I';
        self.unsynced = false;
        self.copy_in = false;
    }

    /// Runs the batch again on a server from the pool after a jittered backoff.
    async fn retry(&mut self, server_dead: bool) -> Result<(), End> {
        self.drop_held();
        // The replay is the whole batch so far: it is handled afresh.
        self.skip_until_sync = false;
        let attempts = self.batch.attempts + 1;
        let replay = std::mem::take(&mut self.batch.replay);
        if let Some(obs) = &self.db.obs {
            obs.retry(if server_dead {
                "server_lost"
            } else {
                self.batch.retry_reason
            });
        }
        self.db
            .pool
            .stats
            .retries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            database = %self.db.pool.name,
            attempt = attempts,
            reason = if server_dead { "server connection dead" } else { "serialization failure or deadlock" },
            "retrying a statement outside a transaction"
        );
        if server_dead {
            self.detach_broken();
        } else {
            // The server is clean (ReadyForQuery idle): back to the pool.
            self.queue.clear();
            self.unnamed_unknown();
            self.slot.clear_upstream();
            self.server = None;
            self.status = b'I';
            self.unsynced = false;
        }
        self.batch = Batch {
            attempts,
            ..Batch::default()
        };
        if !server_dead {
            let base = 5u64 << attempts.min(6);
            let jitter = rand::rng().random_range(0..=base);
            tokio::time::sleep(Duration::from_millis(base + jitter)).await;
        }
        // Feed the client's messages again, ahead of anything it sent since.
        let rest = std::mem::take(&mut self.cbuf);
        self.cbuf = replay;
        self.cbuf.extend_from_slice(&rest);
        self.on_client_data().await
    }
}

fn record(obs: &DbObs, done: &Done) {
    let t = &done.timing;
    let elapsed = done.end.saturating_duration_since(t.start);
    let code = t.error.as_ref().and_then(|c| std::str::from_utf8(c).ok());
    obs.record(t.fp, elapsed, done.wait.min(elapsed), t.rows, code);
}

/// Rows from a CommandComplete tag: its last word when numeric.
fn tag_rows(body: &[u8]) -> u64 {
    let tag = body.strip_suffix(&[0]).unwrap_or(body);
    let last = tag.rsplit(|&b| b == b' ').next().unwrap_or_default();
    std::str::from_utf8(last)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Writes from the front of `buf` with one plain write (the buffer is contiguous;
/// a vectored write of one slice only costs more).
/// Writes from the first `len` bytes of `buf`, consuming what was written.
fn write_some<S: AsyncWrite + Unpin>(
    stream: &mut S,
    cx: &mut std::task::Context<'_>,
    buf: &mut BytesMut,
    len: usize,
) -> Poll<io::Result<usize>> {
    match Pin::new(stream).poll_write(cx, &buf[..len]) {
        Poll::Ready(Ok(n)) => {
            bytes::Buf::advance(buf, n);
            Poll::Ready(Ok(n))
        }
        other => other,
    }
}

/// Type and length of the whole message at `pos` in `buf`, if it is all there.
fn whole_message_at(buf: &[u8], pos: usize) -> Option<(u8, usize)> {
    let rest = buf.get(pos..)?;
    if rest.len() < 5 {
        return None;
    }
    let len = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
    if len < 4 {
        return None;
    }
    let total = len as usize + 1;
    (rest.len() >= total).then_some((rest[0], total))
}

/// Whether `buf` starts with a whole message.
/// (A message with an invalid length counts: processing it reports the error.)
fn has_whole_message(buf: &[u8]) -> bool {
    whole_message_at(buf, 0).is_some()
        || (buf.len() >= 5 && i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) < 4)
}

/// Resolves after `timeout`, never when it is zero. The timer is boxed, and
/// allocated only when there is one: a waiting client's future, which every
/// idle client costs, stays small.
fn expire(timeout: Duration) -> Expire {
    Expire((!timeout.is_zero()).then(|| Box::pin(tokio::time::sleep(timeout))))
}

struct Expire(Option<Pin<Box<tokio::time::Sleep>>>);

impl Future for Expire {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        match self.0.as_mut() {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

/// Reads client bytes into `buf`; while `buf` has no room, through a stack buffer,
/// so that a waiting client holds no heap buffer.
fn read_client<S: AsyncRead + Unpin>(
    client: &mut S,
    cx: &mut std::task::Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    const CHUNK: usize = 8192;
    if buf.capacity() - buf.len() >= CHUNK {
        return poll_read_buf(Pin::new(client), cx, buf);
    }
    let mut stack = [std::mem::MaybeUninit::<u8>::uninit(); CHUNK];
    let mut rb = tokio::io::ReadBuf::uninit(&mut stack);
    match Pin::new(client).poll_read(cx, &mut rb) {
        Poll::Ready(Ok(())) => {
            let n = rb.filled().len();
            buf.extend_from_slice(rb.filled());
            Poll::Ready(Ok(n))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

/// The ErrorResponse for a refused session-level SET.
fn refusal() -> Bytes {
    let mut out = BytesMut::new();
    msg::error(
        &mut out,
        &PgError::new(
            code::FEATURE_NOT_SUPPORTED,
            "session-level SET is refused in transaction pooling mode",
        )
        .with_hint(
            "use SET LOCAL inside a transaction, or set the parameter in the connection string",
        ),
    );
    out.freeze()
}

/// Run the batch again; `dead`: the server connection is gone.
struct Retry {
    dead: bool,
}

fn malformed() -> End {
    End::Fatal(PgError::fatal(
        code::PROTOCOL_VIOLATION,
        "malformed message from the client",
    ))
}

fn statement_name(key: u64) -> String {
    format!("unidb_{key:016x}")
}

/// A NUL-terminated string at the start of `b`, and what follows it.
fn cstr(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = b.iter().position(|c| *c == 0)?;
    Some((&b[..end], &b[end + 1..]))
}

fn put_cstr(out: &mut BytesMut, s: &[u8]) {
    out.put_slice(s);
    out.put_u8(0);
}

/// Writes the length of the message that starts at the beginning of `m`.
fn finish_frame(m: &mut BytesMut) {
    let len = (m.len() - 1) as i32;
    m[1..5].copy_from_slice(&len.to_be_bytes());
}

/// A simple-protocol Query message.
fn query_message(sql: &str) -> BytesMut {
    let mut m = BytesMut::with_capacity(sql.len() + 6);
    m.put_u8(b'Q');
    m.put_i32(0);
    put_cstr(&mut m, sql.as_bytes());
    finish_frame(&mut m);
    m
}

/// Runs `sql` on an idle server and waits for ReadyForQuery, discarding results.
async fn run_hidden_query(lease: &mut Lease, sql: &str) -> io::Result<()> {
    let conn: &mut ServerConn = lease;
    conn.simple_query(&query_message(sql)).await.map(drop)
}

/// Recognises the session-level commands whose effect the pool must track.
/// Only single statements are recognised.
fn session_cmd(sql: &[u8]) -> Option<SessionCmd> {
    // Looked at for every statement: most are ruled out by their first word,
    // without allocating.
    let start = sql.iter().position(|c| !c.is_ascii_whitespace())?;
    let word = sql[start..]
        .split(|c| c.is_ascii_whitespace() || *c == b';')
        .next()
        .unwrap_or_default();
    if !["set", "reset", "discard", "deallocate", "prepare"]
        .iter()
        .any(|w| word.eq_ignore_ascii_case(w.as_bytes()))
    {
        return None;
    }
    let text = std::str::from_utf8(sql).ok()?;
    let text = text
        .trim()
        .trim_end_matches(|c: char| c == ';' || c.is_whitespace());
    if text.contains(';') {
        return None;
    }
    let mut words = text.split_whitespace();
    let w1 = words.next()?.to_ascii_lowercase();
    match w1.as_str() {
        "set" => {
            let mut name = words.next()?.to_ascii_lowercase();
            if name == "local" || name == "transaction" {
                return None;
            }
            if name == "session" {
                name = words.next()?.to_ascii_lowercase();
                if name == "characteristics" {
                    return Some(SessionCmd::Set("session characteristics".into()));
                }
            }
            // `SET x=1` has no space before `=`.
            let name = name
                .split(['='])
                .next()
                .unwrap_or("")
                .trim_matches('"')
                .to_string();
            if name.is_empty() {
                return None;
            }
            Some(SessionCmd::Set(name))
        }
        "reset" => {
            let name = words.next()?.to_ascii_lowercase();
            if name == "all" {
                Some(SessionCmd::ResetAll)
            } else {
                Some(SessionCmd::Reset(name.trim_matches('"').to_string()))
            }
        }
        "discard" => (words.next()?.eq_ignore_ascii_case("all")).then_some(SessionCmd::DiscardAll),
        "deallocate" => {
            let mut w = words.next()?;
            if w.eq_ignore_ascii_case("prepare") {
                w = words.next()?;
            }
            if w.eq_ignore_ascii_case("all") {
                Some(SessionCmd::DeallocateAll)
            } else {
                Some(SessionCmd::Deallocate(identifier(w)))
            }
        }
        "prepare" => {
            let w = words.next()?;
            let name = w.split('(').next().unwrap_or("");
            if name.is_empty() || name.eq_ignore_ascii_case("transaction") {
                return None;
            }
            Some(SessionCmd::Prepare(identifier(name)))
        }
        _ => None,
    }
}

/// An SQL identifier as PostgreSQL folds it: quoted kept, unquoted lower-cased.
fn identifier(word: &str) -> String {
    match word.strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => word.to_ascii_lowercase(),
    }
}

/// Sends a cancel for the statement running on a server of this pool.
pub fn cancel_upstream(up: Arc<crate::config::Upstream>, pid: i32, secret: i32) {
    tokio::spawn(async move {
        if let Err(e) = send_cancel(&up, pid, secret).await {
            tracing::warn!(upstream = %up.address(), error = %e, "sending a cancel request upstream failed");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_commands_are_recognised() {
        assert_eq!(
            session_cmd(b"SET application_name = 'x'"),
            Some(SessionCmd::Set("application_name".into()))
        );
        assert_eq!(
            session_cmd(b"  set TimeZone to 'UTC';"),
            Some(SessionCmd::Set("timezone".into()))
        );
        assert_eq!(session_cmd(b"SET x=1"), Some(SessionCmd::Set("x".into())));
        assert_eq!(session_cmd(b"SET LOCAL work_mem = '1MB'"), None);
        assert_eq!(
            session_cmd(b"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
            None
        );
        assert_eq!(session_cmd(b"RESET ALL"), Some(SessionCmd::ResetAll));
        assert_eq!(
            session_cmd(b"reset search_path"),
            Some(SessionCmd::Reset("search_path".into()))
        );
        assert_eq!(session_cmd(b"DISCARD ALL"), Some(SessionCmd::DiscardAll));
        assert_eq!(
            session_cmd(b"DEALLOCATE PREPARE ALL"),
            Some(SessionCmd::DeallocateAll)
        );
        assert_eq!(
            session_cmd(b"PREPARE sel(int4) AS SELECT $1"),
            Some(SessionCmd::Prepare("sel".into()))
        );
        assert_eq!(
            session_cmd(b"prepare \"Q\" AS SELECT 1"),
            Some(SessionCmd::Prepare("Q".into()))
        );
        assert_eq!(session_cmd(b"PREPARE TRANSACTION 'x'"), None);
        assert_eq!(
            session_cmd(b"DEALLOCATE sel"),
            Some(SessionCmd::Deallocate("sel".into()))
        );
        assert_eq!(session_cmd(b"SELECT 1"), None);
        assert_eq!(session_cmd(b"SET a = 1; SELECT 1"), None);
    }

    #[test]
    fn failing_parse_is_one_whole_parse_of_no_sql() {
        assert_eq!(
            whole_message_at(FAILING_PARSE, 0),
            Some((b'P', FAILING_PARSE.len()))
        );
        let (name, rest) = cstr(&FAILING_PARSE[5..]).unwrap();
        let (sql, counts) = cstr(rest).unwrap();
        assert!(!name.is_empty());
        assert!(sql.starts_with(b"unidb "));
        assert_eq!(counts, [0; 2]);
    }

    #[test]
    fn settings_sql_quotes_values() {
        let mut params = BTreeMap::new();
        params.insert("user".to_string(), "u".to_string());
        params.insert("application_name".to_string(), "it's".to_string());
        let s = Settings::new(&params);
        assert_eq!(
            s.apply_sql(false),
            "RESET ALL; SELECT pg_catalog.set_config('application_name', 'it''s', false)"
        );
        assert!(s.fingerprint > DIRTY);
        assert_eq!(Settings::new(&BTreeMap::new()).fingerprint, 0);
    }

    /// The size of the future a function returns.
    fn future_size<A, R>(_: fn(A) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    #[test]
    fn an_idle_client_costs_its_parked_form_not_its_relay() {
        type Client = tokio::net::TcpStream;
        let relay = std::mem::size_of::<Relay<Client>>();
        let parked = std::mem::size_of::<Parked<Client>>();
        let session = future_size(Relay::<Client>::run);
        assert!(
            parked * 3 < relay,
            "parked form {parked} B, relay {relay} B"
        );
        // The session's future holds a parked client and its wait; the relay is
        // boxed apart while it runs.
        assert!(
            session < relay && session < 512,
            "session future {session} B (relay {relay} B, parked form {parked} B)"
        );
    }
}
