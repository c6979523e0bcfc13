//! Backends that serve a database: a SQLite file, or an upstream PostgreSQL
//! reached through a pool of server connections.

pub mod postgres;
pub mod sqlite;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rusqlite::InterruptHandle;

use crate::config::Upstream;
use crate::server::ClientInfo;

/// [`ClientInfo`] as kept for every connected client: the three names in one
/// allocation.
#[derive(Default)]
pub(crate) struct Who {
    /// User, database and application name, each ended by a NUL.
    names: Box<str>,
    addr: Option<std::net::SocketAddr>,
    /// `None` for the internal sessions that no client opened.
    connected_at: Option<std::time::SystemTime>,
    tls: bool,
}

impl Who {
    fn new(info: ClientInfo) -> Who {
        let mut names = String::with_capacity(
            info.user.len() + info.database.len() + info.application_name.len() + 3,
        );
        for name in [&info.user, &info.database, &info.application_name] {
            // A NUL cannot come from a startup packet, whose strings end at one.
            names.extend(name.chars().filter(|c| *c != '\0'));
            names.push('\0');
        }
        Who {
            names: names.into_boxed_str(),
            addr: info.addr,
            connected_at: Some(info.connected_at),
            tls: info.tls,
        }
    }

    fn info(&self) -> ClientInfo {
        let mut names = self.names.split('\0');
        let mut next = || names.next().unwrap_or_default().to_string();
        ClientInfo {
            user: next(),
            database: next(),
            application_name: next(),
            addr: self.addr,
            connected_at: self.connected_at.unwrap_or(std::time::UNIX_EPOCH),
            tls: self.tls,
        }
    }
}

/// What cancels a session's running statement: the SQLite statement running for
/// it, or the upstream server connection it holds. Also who the session's client
/// is, and its cancel key: one allocation per connected client.
#[derive(Default)]
pub struct CancelSlot {
    running: Mutex<Option<(Arc<InterruptHandle>, Arc<AtomicBool>)>>,
    /// The upstream of the session's database, known from its first server.
    upstream: OnceLock<Arc<Upstream>>,
    /// Pid and secret of the attached server (pid in the high half); 0: none.
    /// Set twice per transaction in transaction mode, so an atomic, not a lock.
    server_key: AtomicU64,
    /// Wakes a session waiting for the SQLite writer.
    pub notify: tokio::sync::Notify,
    /// Wakes the session's parked client (at shutdown). Registering it costs no
    /// lock and the waiting client's future holds nothing for it.
    pub(crate) parked: futures_util::task::AtomicWaker,
    /// The secret of the session's cancel key.
    pub(crate) secret: i32,
    pub(crate) who: Who,
}

impl CancelSlot {
    pub(crate) fn for_client(secret: i32, info: ClientInfo) -> CancelSlot {
        CancelSlot {
            secret,
            who: Who::new(info),
            ..CancelSlot::default()
        }
    }

    /// Who the session's client is.
    pub fn client(&self) -> ClientInfo {
        self.who.info()
    }

    /// Interrupts the statement running for this session, if any.
    pub fn cancel(&self) {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((handle, flag)) = running.as_ref() {
            flag.store(true, Ordering::SeqCst);
            handle.interrupt();
        }
        drop(running);
        if let (Some((pid, secret)), Some(up)) = (self.server_key(), self.upstream.get()) {
            postgres::cancel_upstream(up.clone(), pid, secret);
        }
        self.notify.notify_waiters();
    }

    pub(crate) fn set(&self, value: Option<(Arc<InterruptHandle>, Arc<AtomicBool>)>) {
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = value;
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
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// The upstream server (and its cancel key) running this session's statements.
    /// A session's servers all come from one upstream, its database's.
    pub(crate) fn set_upstream(&self, upstream: &Arc<Upstream>, pid: i32, secret: i32) {
        if self.upstream.get().is_none() {
            let _ = self.upstream.set(upstream.clone());
        }
        let key = ((pid as u32 as u64) << 32) | secret as u32 as u64;
        self.server_key.store(key, Ordering::Release);
    }

    /// No server is attached to the session.
    pub(crate) fn clear_upstream(&self) {
        self.server_key.store(0, Ordering::Release);
    }
}
