//! Per-fingerprint statement statistics. Recording locks only the shard of the
//! calling thread (threads are spread over the shards, so the lock is practically
//! never contended); readers merge the shards. The set of fingerprints is bounded:
//! beyond `max_fingerprints` new ones are counted under `<other>`, and
//! [`StatementStats::compact`] folds the least-used into `<other>` to make room.

use std::cell::Cell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::SystemTime;

/// Fingerprint id of the folded `<other>` entry.
pub const OTHER: u64 = 0;

/// Latency buckets: 4 per power of two of microseconds, from 1 µs to ~4 minutes.
const BUCKETS: usize = 112;

const SHARDS: usize = 32;

/// Hashes a key that is already a hash.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ b as u64;
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// Counters of one fingerprint on one database.
#[derive(Clone)]
pub struct Entry {
    pub calls: u64,
    pub rows: u64,
    pub errors: u64,
    pub total_ns: u64,
    pub wait_ns: u64,
    pub min_ns: u64,
    pub max_ns: u64,
    hist: Box<[u32; BUCKETS]>,
}

impl Default for Entry {
    fn default() -> Entry {
        Entry {
            calls: 0,
            rows: 0,
            errors: 0,
            total_ns: 0,
            wait_ns: 0,
            min_ns: u64::MAX,
            max_ns: 0,
            hist: Box::new([0; BUCKETS]),
        }
    }
}

fn bucket(ns: u64) -> usize {
    let us = ns / 1000;
    if us < 4 {
        return us as usize;
    }
    let octave = 63 - us.leading_zeros() as usize;
    let sub = ((us >> (octave - 2)) & 3) as usize;
    ((octave - 1) * 4 + sub).min(BUCKETS - 1)
}

/// Upper bound of a bucket, in nanoseconds.
fn bucket_upper_ns(i: usize) -> u64 {
    if i < 4 {
        return (i as u64 + 1) * 1000;
    }
    let octave = i / 4 + 1;
    let sub = (i % 4) as u64;
    ((4 + sub + 1) << (octave - 2)) * 1000
}

impl Entry {
    fn record(&mut self, ns: u64, wait_ns: u64, rows: u64, error: bool) {
        self.calls += 1;
        self.rows += rows;
        self.errors += error as u64;
        self.total_ns += ns;
        self.wait_ns += wait_ns;
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
        self.hist[bucket(ns)] += 1;
    }

    pub fn merge(&mut self, other: &Entry) {
        self.calls += other.calls;
        self.rows += other.rows;
        self.errors += other.errors;
        self.total_ns += other.total_ns;
        self.wait_ns += other.wait_ns;
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
        for (a, b) in self.hist.iter_mut().zip(other.hist.iter()) {
            *a += b;
        }
    }

    /// The `q` quantile (0..1) in nanoseconds, from the histogram, within the
    /// observed minimum and maximum.
    pub fn quantile_ns(&self, q: f64) -> u64 {
        let count: u64 = self.hist.iter().map(|&c| c as u64).sum();
        if count == 0 {
            return 0;
        }
        let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
        let mut seen = 0u64;
        for (i, &c) in self.hist.iter().enumerate() {
            seen += c as u64;
            if seen >= rank {
                return bucket_upper_ns(i).clamp(self.min_ns, self.max_ns);
            }
        }
        self.max_ns
    }

    pub fn mean_ns(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.total_ns as f64 / self.calls as f64
        }
    }
}

#[repr(align(128))]
struct Shard(Mutex<Vec<IdMap<Entry>>>);

/// One merged row of the statistics.
#[derive(Clone)]
pub struct Row {
    pub database: usize,
    pub fingerprint: u64,
    pub query: Arc<str>,
    pub entry: Entry,
}

pub struct StatementStats {
    shards: Box<[Shard]>,
    databases: usize,
    max_fingerprints: usize,
    /// Fingerprint → display text. Read on a thread's first sight of a fingerprint.
    texts: RwLock<IdMap<Arc<str>>>,
    /// Entries folded out of the shards by compaction, per database.
    folded: Mutex<Vec<Entry>>,
    reset_at: Mutex<SystemTime>,
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD_SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn shard_index() -> usize {
    THREAD_SHARD.with(|c| {
        let mut i = c.get();
        if i == usize::MAX {
            i = NEXT_THREAD.fetch_add(1, Ordering::Relaxed) % SHARDS;
            c.set(i);
        }
        i
    })
}

impl StatementStats {
    pub fn new(databases: usize, max_fingerprints: usize) -> StatementStats {
        let shards = (0..SHARDS)
            .map(|_| {
                Shard(Mutex::new(
                    (0..databases).map(|_| IdMap::default()).collect(),
                ))
            })
            .collect();
        StatementStats {
            shards,
            databases,
            max_fingerprints: max_fingerprints.max(1),
            texts: RwLock::new(IdMap::default()),
            folded: Mutex::new((0..databases).map(|_| Entry::default()).collect()),
            reset_at: Mutex::new(SystemTime::now()),
        }
    }

    /// Whether the display text of `fp` is known (so `register` can be skipped).
    pub fn known(&self, fp: u64) -> bool {
        read(&self.texts).contains_key(&fp)
    }

    /// Makes `fp` known with its display text; returns the id to record under
    /// (`OTHER` when the table is full).
    pub fn register(&self, fp: u64, text: impl FnOnce() -> String) -> u64 {
        if read(&self.texts).contains_key(&fp) {
            return fp;
        }
        let mut texts = write(&self.texts);
        if texts.contains_key(&fp) {
            return fp;
        }
        if texts.len() >= self.max_fingerprints {
            return OTHER;
        }
        texts.insert(fp, text().into());
        fp
    }

    /// Records one statement execution.
    pub fn record(&self, db: usize, fp: u64, ns: u64, wait_ns: u64, rows: u64, error: bool) {
        let mut shard = lock(&self.shards[shard_index()].0);
        if let Some(map) = shard.get_mut(db) {
            map.entry(fp).or_default().record(ns, wait_ns, rows, error);
        }
    }

    /// Every fingerprint with its merged counters; unknown ids fold into `<other>`.
    pub fn snapshot(&self) -> Vec<Row> {
        let mut merged: Vec<IdMap<Entry>> = (0..self.databases).map(|_| IdMap::default()).collect();
        for shard in self.shards.iter() {
            let shard = lock(&shard.0);
            for (db, map) in shard.iter().enumerate() {
                for (fp, e) in map {
                    merged[db].entry(*fp).or_default().merge(e);
                }
            }
        }
        let folded = lock(&self.folded).clone();
        let texts = read(&self.texts);
        let other: Arc<str> = "<other>".into();
        let mut rows = Vec::new();
        for (db, map) in merged.into_iter().enumerate() {
            let mut rest = folded[db].clone();
            for (fp, entry) in map {
                match texts.get(&fp) {
                    Some(text) if fp != OTHER => rows.push(Row {
                        database: db,
                        fingerprint: fp,
                        query: text.clone(),
                        entry,
                    }),
                    _ => rest.merge(&entry),
                }
            }
            if rest.calls > 0 {
                rows.push(Row {
                    database: db,
                    fingerprint: OTHER,
                    query: other.clone(),
                    entry: rest,
                });
            }
        }
        rows
    }

    /// When the table is nearly full, folds the least-used fingerprints (by calls)
    /// into `<other>` so that new statements get their own entries again.
    pub fn compact(&self) {
        let len = read(&self.texts).len();
        if len < self.max_fingerprints * 9 / 10 {
            return;
        }
        let keep = self.max_fingerprints * 3 / 4;
        let mut calls: IdMap<u64> = IdMap::default();
        for row in self.snapshot() {
            if row.fingerprint != OTHER {
                *calls.entry(row.fingerprint).or_default() += row.entry.calls;
            }
        }
        let mut by_use: Vec<(u64, u64)> = read(&self.texts)
            .keys()
            .map(|fp| (calls.get(fp).copied().unwrap_or(0), *fp))
            .collect();
        by_use.sort_unstable_by(|a, b| b.cmp(a));
        let evict: Vec<u64> = by_use.iter().skip(keep).map(|&(_, fp)| fp).collect();
        {
            let mut texts = write(&self.texts);
            for fp in &evict {
                texts.remove(fp);
            }
        }
        let mut folded = lock(&self.folded);
        for shard in self.shards.iter() {
            let mut shard = lock(&shard.0);
            for (db, map) in shard.iter_mut().enumerate() {
                for fp in &evict {
                    if let Some(e) = map.remove(fp) {
                        folded[db].merge(&e);
                    }
                }
            }
        }
        tracing::debug!(evicted = evict.len(), "statement statistics compacted");
    }

    pub fn reset(&self) {
        for shard in self.shards.iter() {
            for map in lock(&shard.0).iter_mut() {
                map.clear();
            }
        }
        for e in lock(&self.folded).iter_mut() {
            *e = Entry::default();
        }
        *lock(&self.reset_at) = SystemTime::now();
    }

    pub fn reset_at(&self) -> SystemTime {
        *lock(&self.reset_at)
    }

    pub fn fingerprints(&self) -> usize {
        read(&self.texts).len()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_bound_their_values() {
        let mut last = 0;
        for i in 0..BUCKETS {
            let upper = bucket_upper_ns(i);
            assert!(upper > last, "bucket {i}");
            last = upper;
        }
        for ns in [
            0u64,
            999,
            1000,
            3999,
            4000,
            5000,
            123_456,
            9_999_999,
            1_000_000_000,
        ] {
            let b = bucket(ns);
            assert!(bucket_upper_ns(b) > ns, "{ns} in bucket {b}");
            if b > 0 {
                assert!(bucket_upper_ns(b - 1) <= ns, "{ns} in bucket {b}");
            }
        }
    }

    #[test]
    fn quantiles_and_merge() {
        let stats = StatementStats::new(2, 10);
        let fp = stats.register(7, || "SELECT $1".into());
        for i in 1..=100u64 {
            stats.record(1, fp, i * 1_000_000, 0, 1, i % 10 == 0);
        }
        let rows = stats.snapshot();
        assert_eq!(rows.len(), 1);
        let e = &rows[0].entry;
        assert_eq!(
            (rows[0].database, e.calls, e.rows, e.errors),
            (1, 100, 100, 10)
        );
        assert_eq!((e.min_ns, e.max_ns), (1_000_000, 100_000_000));
        let p50 = e.quantile_ns(0.5) as f64 / 1e6;
        let p99 = e.quantile_ns(0.99) as f64 / 1e6;
        assert!((45.0..=65.0).contains(&p50), "p50 {p50}");
        assert!((90.0..=100.0).contains(&p99), "p99 {p99}");
    }

    #[test]
    fn full_table_folds_into_other_and_compaction_makes_room() {
        let stats = StatementStats::new(1, 10);
        for fp in 1..=15u64 {
            let id = stats.register(fp, || format!("q{fp}"));
            for _ in 0..fp {
                stats.record(0, id, 1000, 0, 0, false);
            }
        }
        let rows = stats.snapshot();
        assert_eq!(rows.len(), 11);
        let other = rows.iter().find(|r| r.fingerprint == OTHER).unwrap();
        assert_eq!(other.entry.calls, (11..=15).sum::<u64>());
        stats.compact();
        assert_eq!(stats.fingerprints(), 7);
        let rows = stats.snapshot();
        let total: u64 = rows.iter().map(|r| r.entry.calls).sum();
        assert_eq!(total, (1..=15).sum::<u64>());
        assert!(
            rows.iter().any(|r| r.fingerprint == 10),
            "the most used stay"
        );
        assert!(!rows.iter().any(|r| r.fingerprint == 1));
        stats.reset();
        assert!(stats.snapshot().is_empty());
    }
}
