//! The plan cache: statement text → plan, bounded, shared by all sessions of a
//! database. A repeated statement is parsed once.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::normalize::Normalized;
use super::{plan, Plan, TypeHint};
use crate::error::PgResult;

/// Bounded LRU of plans. A std `Mutex` because the critical section is a hash
/// lookup and never awaits.
pub struct PlanCache {
    inner: Mutex<lru::LruCache<Arc<str>, Plan>>,
    hits: AtomicU64,
    parses: AtomicU64,
}

/// Lookups answered from the cache, and statements parsed because they were not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheCounts {
    pub hits: u64,
    pub parses: u64,
}

impl PlanCache {
    pub fn new(capacity: usize) -> PlanCache {
        let cap = NonZeroUsize::new(capacity.max(1)).expect("capacity is at least 1");
        PlanCache {
            inner: Mutex::new(lru::LruCache::new(cap)),
            hits: AtomicU64::new(0),
            parses: AtomicU64::new(0),
        }
    }

    /// The plan of `sql`, parsed on first use. Errors are not cached.
    pub fn get(&self, sql: &str) -> PgResult<Plan> {
        if let Some(p) = self.lock().get(sql) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(p.clone());
        }
        self.parses.fetch_add(1, Ordering::Relaxed);
        let planned: Plan = Arc::new(plan(sql)?);
        self.lock().put(Arc::from(sql), planned.clone());
        Ok(planned)
    }

    /// The plan of a normalised statement: its parameters beyond those typed by
    /// their context take the type of the literal they replace.
    pub fn get_normalized(&self, n: &Normalized) -> PgResult<Plan> {
        let key = n.key();
        if let Some(p) = self.lock().get(key.as_str()) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(p.clone());
        }
        self.parses.fetch_add(1, Ordering::Relaxed);
        let mut stmts = plan(&n.sql)?;
        for stmt in &mut stmts {
            if stmt.params.len() < n.literals.len() {
                stmt.params.resize(n.literals.len(), TypeHint::Unknown);
            }
            for (hint, lit) in stmt.params.iter_mut().zip(&n.literals) {
                match hint {
                    TypeHint::Unknown => *hint = TypeHint::Known(lit.default_type()),
                    // `3.7::int` is the numeric 3.7 cast (rounded), not the text "3.7".
                    TypeHint::Known(t)
                        if t.is_integer()
                            && matches!(lit, crate::sql::normalize::Literal::Number(n) if n.contains(['.', 'e', 'E'])) =>
                    {
                        *hint = TypeHint::Known(lit.default_type())
                    }
                    TypeHint::Column { .. } | TypeHint::ColumnAt { .. } => {
                        *hint = TypeHint::Fallback {
                            hint: Box::new(hint.clone()),
                            default: lit.default_type(),
                        }
                    }
                    _ => {}
                }
            }
        }
        let planned: Plan = Arc::new(stmts);
        self.lock().put(Arc::from(key.as_str()), planned.clone());
        Ok(planned)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<Arc<str>, Plan>> {
        // A panic while holding this lock cannot leave the LRU inconsistent in a way
        // that matters (worst case a lost entry), so recover from poisoning.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hits and parses since start.
    pub fn counts(&self) -> CacheCounts {
        CacheCounts {
            hits: self.hits.load(Ordering::Relaxed),
            parses: self.parses.load(Ordering::Relaxed),
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
