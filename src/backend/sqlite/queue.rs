//! The job queue feeding worker threads: many producers (sessions), many
//! consumers (the reader threads of one database).
//!
//! A mutex-and-condvar queue rather than a lock-free channel on purpose: idle
//! workers park at once instead of spinning and yielding, which on a machine with
//! few cores takes CPU from the sessions that are producing the work.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};

pub struct JobQueue<T> {
    state: Mutex<State<T>>,
    available: Condvar,
}

struct State<T> {
    items: VecDeque<T>,
    closed: bool,
}

impl<T> JobQueue<T> {
    pub fn new() -> JobQueue<T> {
        JobQueue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                closed: false,
            }),
            available: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        // Jobs run outside the lock, so a poisoned lock only means a panic between
        // two queue operations; the queue itself is intact.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `item`; gives it back if the queue is closed.
    pub fn push(&self, item: T) -> Result<(), T> {
        let mut s = self.lock();
        if s.closed {
            return Err(item);
        }
        s.items.push_back(item);
        drop(s);
        self.available.notify_one();
        Ok(())
    }

    /// The next item, waiting for one; `None` once the queue is closed and empty.
    pub fn pop(&self) -> Option<T> {
        let mut s = self.lock();
        loop {
            if let Some(item) = s.items.pop_front() {
                return Some(item);
            }
            if s.closed {
                return None;
            }
            s = self.available.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Refuses new items; consumers drain what is queued, then get `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.available.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn every_item_is_taken_once_and_close_ends_consumers() {
        let q = Arc::new(JobQueue::new());
        let consumers: Vec<_> = (0..4)
            .map(|_| {
                let q = q.clone();
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    while let Some(i) = q.pop() {
                        got.push(i);
                    }
                    got
                })
            })
            .collect();
        for i in 0..1000 {
            q.push(i).unwrap();
        }
        q.close();
        assert_eq!(q.push(5), Err(5));
        let mut all: Vec<i32> = consumers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
    }
}
