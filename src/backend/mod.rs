//! Backends that serve a database: a SQLite file, or an upstream PostgreSQL
//! reached through a pool of server connections.

pub mod postgres;
pub mod sqlite;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::InterruptHandle;

use crate::config::Upstream;

/// What cancels a session's running statement: the SQLite statement running for
/// it, or the upstream server connection it holds.
#[derive(Default)]
pub struct CancelSlot {
    running: Mutex<Option<(Arc<InterruptHandle>, Arc<AtomicBool>)>>,
    upstream: Mutex<Option<(Arc<Upstream>, i32, i32)>>,
    /// Wakes a session waiting for the SQLite writer.
    pub notify: tokio::sync::Notify,
}

impl CancelSlot {
    /// Interrupts the statement running for this session, if any.
    pub fn cancel(&self) {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((handle, flag)) = running.as_ref() {
            flag.store(true, Ordering::SeqCst);
            handle.interrupt();
        }
        drop(running);
        let upstream = self
            .upstream
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some((up, pid, secret)) = upstream {
            postgres::cancel_upstream(up, pid, secret);
        }
        self.notify.notify_waiters();
    }

    pub(crate) fn set(&self, value: Option<(Arc<InterruptHandle>, Arc<AtomicBool>)>) {
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = value;
    }

    /// The backend pid of the upstream server attached to this session, if any.
    pub fn upstream_pid(&self) -> Option<i32> {
        self.upstream
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, pid, _)| *pid)
    }

    /// Whether a SQLite statement is running for this session.
    pub fn running(&self) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// The upstream server (and its cancel key) running this session's statements.
    pub(crate) fn set_upstream(&self, value: Option<(Arc<Upstream>, i32, i32)>) {
        *self.upstream.lock().unwrap_or_else(|e| e.into_inner()) = value;
    }
}
