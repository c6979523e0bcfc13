//! PostgreSQL's advisory locks for the SQLite backend: a lock table per database,
//! shared by its connections, held by session (pid). Session-level locks last until
//! unlocked or the session ends; transaction-level ones until the transaction ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

#[derive(Debug, Default)]
struct Holder {
    pid: i32,
    /// Session-level acquisitions (each needs its own unlock).
    session: u32,
    /// Transaction-level acquisitions (released together at transaction end).
    xact: u32,
}

#[derive(Debug, Default)]
pub struct AdvisoryLocks {
    held: Mutex<HashMap<i64, Holder>>,
    released: Condvar,
    /// Locks held at all: the end of every statement asks, and almost always none are.
    count: AtomicUsize,
}

/// What a lock request waits for and how it ended.
pub enum Acquired {
    Yes,
    Busy,
    Cancelled,
}

impl AdvisoryLocks {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Holder>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take(map: &mut HashMap<i64, Holder>, key: i64, pid: i32, xact: bool) -> bool {
        let h = map.entry(key).or_insert_with(|| Holder {
            pid,
            ..Holder::default()
        });
        if h.pid != pid && (h.session > 0 || h.xact > 0) {
            return false;
        }
        h.pid = pid;
        if xact {
            h.xact += 1;
        } else {
            h.session += 1;
        }
        true
    }

    /// Takes the lock for `pid`; with `wait`, blocks until it is free or `cancel`
    /// is raised (a CancelRequest).
    pub fn acquire(
        &self,
        key: i64,
        pid: i32,
        xact: bool,
        wait: bool,
        cancel: &AtomicBool,
    ) -> Acquired {
        let mut map = self.table();
        loop {
            if Self::take(&mut map, key, pid, xact) {
                self.count.store(map.len(), Ordering::Release);
                return Acquired::Yes;
            }
            if !wait {
                return Acquired::Busy;
            }
            if cancel.load(Ordering::Relaxed) {
                return Acquired::Cancelled;
            }
            map = self
                .released
                .wait_timeout(map, Duration::from_millis(50))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Releases one session-level hold; false when `pid` held none.
    pub fn release(&self, key: i64, pid: i32) -> bool {
        let mut map = self.table();
        let Some(h) = map.get_mut(&key).filter(|h| h.pid == pid && h.session > 0) else {
            return false;
        };
        h.session -= 1;
        if h.session == 0 && h.xact == 0 {
            map.remove(&key);
        }
        self.count.store(map.len(), Ordering::Release);
        self.released.notify_all();
        true
    }

    /// Releases what `pid` holds: transaction-level holds only, or everything.
    pub fn release_all(&self, pid: i32, xact_only: bool) {
        if self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut map = self.table();
        let before = map.len();
        map.retain(|_, h| {
            if h.pid != pid {
                return true;
            }
            h.xact = 0;
            if !xact_only {
                h.session = 0;
            }
            h.session > 0
        });
        self.count.store(map.len(), Ordering::Release);
        if map.len() != before {
            self.released.notify_all();
        }
    }
}
