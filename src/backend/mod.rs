//! Backends that serve a database: a SQLite file, or an upstream PostgreSQL
//! reached through a pool of server connections.

pub mod postgres;
pub mod sqlite;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::InterruptHandle;

use crate::config::Upstream;
use crate::server::ClientInfo;

/// Strings kept for a session's life, in one exactly sized allocation: each
/// ended by a NUL, which no startup packet string can hold (any other is
/// dropped). Read back with `split('\0')`.
pub(crate) fn nul_terminated<'a>(parts: impl IntoIterator<Item = &'a str> + Clone) -> Box<str> {
    let len = parts.clone().into_iter().map(|p| p.len() + 1).sum();
    let mut text = String::with_capacity(len);
    for part in parts {
        text.extend(part.chars().filter(|c| *c != '\0'));
        text.push('\0');
    }
    text.into_boxed_str()
}

/// [`ClientInfo`] as kept for every connected client, in little memory: the
/// names and the address in one string.
#[derive(Default)]
pub(crate) struct Who {
    /// User, database, application name and address (empty: none), each ended by
    /// a NUL.
    text: Box<str>,
    /// Microseconds since the Unix epoch; 0 for the internal sessions that no
    /// client opened.
    connected_at: u64,
    tls: bool,
}

impl Who {
    fn new(info: ClientInfo) -> Who {
        let addr = info.addr.map(|a| a.to_string()).unwrap_or_default();
        let text = nul_terminated([
            info.user.as_str(),
            &info.database,
            &info.application_name,
            &addr,
        ]);
        let since_epoch = info
            .connected_at
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Who {
            text,
            connected_at: since_epoch
                .as_micros()
                .try_into()
                .unwrap_or(u64::MAX)
                .max(1),
            tls: info.tls,
        }
    }

    fn info(&self) -> ClientInfo {
        let mut parts = self.text.split('\0');
        let mut next = || parts.next().unwrap_or_default().to_string();
        ClientInfo {
            user: next(),
            database: next(),
            application_name: next(),
            addr: next().parse().ok(),
            connected_at: std::time::UNIX_EPOCH
                + std::time::Duration::from_micros(self.connected_at),
            tls: self.tls,
        }
    }
}

/// What a session's SQLite statement is interrupted with, and what aborts the
/// session's task.
#[derive(Default)]
struct Handles {
    running: Option<(Arc<InterruptHandle>, Arc<AtomicBool>)>,
    abort: Option<tokio::task::AbortHandle>,
}

/// What cancels a session's running statement: the SQLite statement running for
/// it, or the upstream server connection it holds. Also who the session's client
/// is, and its cancel key: one allocation per connected client, kept small.
#[derive(Default)]
pub struct CancelSlot {
    handles: Mutex<Handles>,
    /// The upstream of the session's database, if it is a PostgreSQL one.
    upstream: Option<Arc<Upstream>>,
    /// Pid and secret of the attached server (pid in the high half); 0: none.
    /// Set twice per transaction in transaction mode, so an atomic, not a lock.
    server_key: AtomicU64,
    /// Wakes the session's task when it waits for a cancel request (SQLite
    /// writer) or is a parked pooled client (shutdown). Registering it costs no
    /// lock and the waiting future holds nothing for it.
    pub(crate) waker: futures_util::task::AtomicWaker,
    /// Cancel requests and shutdown's wake-ups so far: a wait for the SQLite
    /// writer ends when it changes.
    wakes: AtomicU32,
    /// The secret of the session's cancel key.
    pub(crate) secret: i32,
    pub(crate) who: Who,
}

impl CancelSlot {
    pub(crate) fn for_client(
        secret: i32,
        info: ClientInfo,
        upstream: Option<Arc<Upstream>>,
    ) -> CancelSlot {
        CancelSlot {
            secret,
            who: Who::new(info),
            upstream,
            ..CancelSlot::default()
        }
    }

    fn handles(&self) -> std::sync::MutexGuard<'_, Handles> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Who the session's client is.
    pub fn client(&self) -> ClientInfo {
        self.who.info()
    }

    /// The handle that aborts the session's task, once it runs.
    pub(crate) fn set_abort(&self, abort: tokio::task::AbortHandle) {
        self.handles().abort = Some(abort);
    }

    /// Aborts the session's task: its client is disconnected at once.
    pub(crate) fn abort(&self) {
        if let Some(abort) = &self.handles().abort {
            abort.abort();
        }
    }

    /// Interrupts the statement running for this session, if any.
    pub fn cancel(&self) {
        let handles = self.handles();
        if let Some((handle, flag)) = handles.running.as_ref() {
            flag.store(true, Ordering::SeqCst);
            handle.interrupt();
        }
        drop(handles);
        if let (Some((pid, secret)), Some(up)) = (self.server_key(), &self.upstream) {
            postgres::cancel_upstream(up.clone(), pid, secret);
        }
        self.wake();
    }

    /// Ends a wait for the SQLite writer and wakes a parked pooled client.
    pub(crate) fn wake(&self) {
        self.wakes.fetch_add(1, Ordering::AcqRel);
        self.waker.wake();
    }

    /// Completes at the next [`CancelSlot::wake`] (a cancel request, shutdown).
    /// One task waits on a slot at a time: its session's.
    pub(crate) fn woken(&self) -> impl std::future::Future<Output = ()> + '_ {
        let start = self.wakes.load(Ordering::Acquire);
        std::future::poll_fn(move |cx| {
            self.waker.register(cx.waker());
            if self.wakes.load(Ordering::Acquire) == start {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
    }

    pub(crate) fn set(&self, value: Option<(Arc<InterruptHandle>, Arc<AtomicBool>)>) {
        self.handles().running = value;
    }

    /// The backend pid of the upstream server attached to this session, if any.
    pub fn upstream_pid(&self) -> Option<i32> {
        self.server_key().map(|(pid, _)| pid)
    }

    fn server_key(&self) -> Option<(i32, i32)> {
        match self.server_key.load(Ordering::Acquire) {
            0 => None,
            key => Some(((key >> 32) as i32, key as u32 as i32)),
        }
    }

    /// Whether a SQLite statement is running for this session.
    pub fn running(&self) -> bool {
        self.handles().running.is_some()
    }

    /// The cancel key of the upstream server running this session's statements.
    /// A session's servers all come from one upstream, its database's.
    pub(crate) fn set_upstream(&self, pid: i32, secret: i32) {
        let key = ((pid as u32 as u64) << 32) | secret as u32 as u64;
        self.server_key.store(key, Ordering::Release);
    }

    /// No server is attached to the session.
    pub(crate) fn clear_upstream(&self) {
        self.server_key.store(0, Ordering::Release);
    }
}
