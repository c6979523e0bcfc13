//! The job queue feeding worker threads: many producers (sessions), many
//! consumers (the reader threads of one database).
//!
//! Short statements are cheapest when they run back to back on one warm thread:
//! spreading them over several readers costs extra context switches, cold caches
//! and contention on SQLite's shared-memory locks (measured: about a third more CPU
//! per point query with two readers taking turns than with one). So:
//! - a push wakes the worker that went idle most recently (a stack, not a condvar
//!   that wakes anyone), and only when no worker is busy;
//! - while one worker is busy, the others nap for [`STALL_CHECK`] and take a job only
//!   once it has waited that long, so a job never sits long behind a slow statement
//!   and slow work still spreads over every reader; with nobody busy they look every
//!   [`IDLE_CHECK`].
//!
//! Idle workers park instead of spinning: on few cores, spinning takes CPU from the
//! sessions producing the work.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long a job may wait behind a busy worker before an idle one takes it.
const STALL_CHECK: Duration = Duration::from_millis(1);

/// How often a parked worker looks at the queue when no worker is busy, in case a
/// worker became busy with a slow statement meanwhile.
const IDLE_CHECK: Duration = Duration::from_millis(10);

pub struct JobQueue<T> {
    state: Mutex<State<T>>,
}

struct State<T> {
    /// Jobs with the time they were queued.
    items: VecDeque<(Instant, T)>,
    closed: bool,
    /// Workers running a job.
    busy: usize,
    /// Parked workers, most recently parked last.
    idle: Vec<Thread>,
    /// Workers a push has unparked that have not run yet: they count as busy, or
    /// every push arriving before the first wakes up would wake another worker.
    waking: usize,
}

impl<T> JobQueue<T> {
    pub fn new() -> JobQueue<T> {
        JobQueue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                closed: false,
                busy: 0,
                idle: Vec::new(),
                waking: 0,
            }),
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
        s.items.push_back((Instant::now(), item));
        let wake = if s.busy == 0 && s.waking == 0 {
            s.idle.pop()
        } else {
            None
        };
        if wake.is_some() {
            s.waking += 1;
        }
        drop(s);
        if let Some(t) = wake {
            t.unpark();
        }
        Ok(())
    }

    /// Called by a worker thread for its next item, parking until there is one;
    /// `None` once the queue is closed and drained. `finished` says the worker has
    /// just completed a job.
    pub fn pop(&self, finished: bool) -> Option<T> {
        let me = std::thread::current();
        let mut s = self.lock();
        if finished {
            s.busy -= 1;
        }
        // A worker that has just finished a job, or that a push picked, is warm and
        // takes any job; one woken by its own timeout takes only a job that has
        // waited long enough to show the others are not keeping up.
        let mut warm = true;
        loop {
            let take = match s.items.front() {
                Some((queued, _)) => warm || queued.elapsed() >= STALL_CHECK,
                None => false,
            };
            if take {
                if let Some((_, item)) = s.items.pop_front() {
                    s.busy += 1;
                    s.idle.retain(|t| t.id() != me.id());
                    return Some(item);
                }
            }
            if s.closed && s.items.is_empty() {
                s.idle.retain(|t| t.id() != me.id());
                return None;
            }
            // A worker woken by its timeout keeps its place in the stack, so that
            // napping does not make it the next one a push wakes.
            if !s.idle.iter().any(|t| t.id() == me.id()) {
                s.idle.push(me.clone());
            }
            let nap = if s.busy > 0 { STALL_CHECK } else { IDLE_CHECK };
            drop(s);
            std::thread::park_timeout(nap);
            s = self.lock();
            // A push (or close) takes the worker it wakes off the idle stack.
            warm = !s.idle.iter().any(|t| t.id() == me.id());
            if warm {
                s.waking -= 1;
            }
        }
    }

    /// Refuses new items; workers drain what is queued, then get `None`.
    pub fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        let idle = std::mem::take(&mut s.idle);
        s.waking += idle.len();
        drop(s);
        for t in idle {
            t.unpark();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    type Job = Box<dyn FnOnce() -> i32 + Send>;

    fn worker(q: Arc<JobQueue<Job>>) -> std::thread::JoinHandle<Vec<i32>> {
        std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut finished = false;
            while let Some(job) = q.pop(finished) {
                got.push(job());
                finished = true;
            }
            got
        })
    }

    #[test]
    fn every_item_is_taken_once_and_close_ends_consumers() {
        let q: Arc<JobQueue<Job>> = Arc::new(JobQueue::new());
        let consumers: Vec<_> = (0..4).map(|_| worker(q.clone())).collect();
        for i in 0..1000 {
            assert!(q.push(Box::new(move || i)).is_ok());
        }
        q.close();
        assert!(q.push(Box::new(|| 5)).is_err());
        let mut all: Vec<i32> = consumers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn a_job_behind_a_slow_one_is_taken_by_an_idle_worker() {
        let q: Arc<JobQueue<Job>> = Arc::new(JobQueue::new());
        let consumers: Vec<_> = (0..2).map(|_| worker(q.clone())).collect();
        std::thread::sleep(Duration::from_millis(20));
        let (tx, rx) = std::sync::mpsc::channel();
        let slow: Job = Box::new(|| {
            std::thread::sleep(Duration::from_millis(500));
            1
        });
        assert!(q.push(slow).is_ok());
        std::thread::sleep(Duration::from_millis(20));
        let start = Instant::now();
        let quick: Job = Box::new(move || {
            tx.send(()).unwrap();
            2
        });
        assert!(q.push(quick).is_ok());
        rx.recv().unwrap();
        let waited = start.elapsed();
        q.close();
        for c in consumers {
            c.join().unwrap();
        }
        assert!(
            waited < Duration::from_millis(400),
            "the second job waited {waited:?} behind the slow one"
        );
    }
}
