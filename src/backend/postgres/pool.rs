//! The pool of server connections of one upstream database: checkout with a wait
//! limit, LIFO reuse, reconnect backoff, idle/lifetime limits and `min_idle`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsConnector;

use super::conn::{self, ConnectError, ServerConn, ServerParams};
use crate::config::{PostgresConfig, Upstream};
use crate::error::{code, PgError};

/// Backoff after a failed connection attempt: checkouts fail fast until it expires.
struct Backoff {
    until: Option<Instant>,
    delay: Duration,
    last_error: Option<ConnectError>,
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Counters read by metrics.
#[derive(Default)]
pub struct PoolStats {
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub checkouts: AtomicU64,
    pub checkout_timeouts: AtomicU64,
    pub retries: AtomicU64,
    pub servers_closed: AtomicU64,
    /// Clients waiting for a connection right now.
    pub waiting: AtomicU64,
    /// The last connection attempt succeeded (true until one fails).
    pub reachable: AtomicBool,
    /// `pg_database_size` at the last sample (0: not sampled yet).
    pub database_bytes: AtomicU64,
}

pub struct Pool {
    pub name: String,
    pub upstream: Arc<Upstream>,
    pub config: PostgresConfig,
    tls: Option<TlsConnector>,
    /// Idle connections, most recently used last (reused first: it is warm).
    /// Boxed so that a checkout moves a pointer into the lease, not the connection.
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<ServerConn>>>,
    /// One permit per connection in use by a client.
    permits: Arc<Semaphore>,
    backoff: Mutex<Backoff>,
    /// What the first server reported at startup (server_version, encodings, ...).
    params: Mutex<Option<Arc<ServerParams>>>,
    pub stats: PoolStats,
}

/// An idle server connection as the admin console shows it.
pub struct IdleServer {
    pub pid: i32,
    pub age: Duration,
    pub idle: Duration,
    pub tls: bool,
}

/// A server connection checked out of the pool; goes back on drop unless broken.
pub struct Lease {
    /// Boxed: a client's relay holds an `Option<Lease>` whether or not it has a
    /// server, and idle clients should be small.
    conn: Option<Box<ServerConn>>,
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
}

impl std::ops::Deref for Lease {
    type Target = ServerConn;
    fn deref(&self) -> &ServerConn {
        self.conn
            .as_ref()
            .expect("a lease holds its connection until dropped")
    }
}

impl std::ops::DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut ServerConn {
        self.conn
            .as_mut()
            .expect("a lease holds its connection until dropped")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.put_back(conn);
        }
    }
}

impl Pool {
    pub fn new(name: &str, config: &PostgresConfig) -> anyhow::Result<Arc<Pool>> {
        let upstream = config
            .upstream()
            .map_err(|e| anyhow::anyhow!("database {name}: {e}"))?;
        let tls =
            conn::tls_connector(&upstream).map_err(|e| anyhow::anyhow!("database {name}: {e}"))?;
        Ok(Arc::new(Pool {
            name: name.to_string(),
            upstream: Arc::new(upstream),
            config: config.clone(),
            tls,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(config.pool_size)),
            backoff: Mutex::new(Backoff {
                until: None,
                delay: BACKOFF_MIN,
                last_error: None,
            }),
            params: Mutex::new(None),
            stats: PoolStats {
                reachable: AtomicBool::new(true),
                ..PoolStats::default()
            },
        }))
    }

    /// Connections in use by clients.
    pub fn active(&self) -> usize {
        self.config.pool_size - self.permits.available_permits()
    }

    pub fn idle_count(&self) -> usize {
        lock(&self.idle).len()
    }

    /// The server's startup parameters, connecting once if none is known yet.
    pub async fn server_params(self: &Arc<Self>) -> Result<Arc<ServerParams>, PgError> {
        if let Some(p) = lock(&self.params).clone() {
            return Ok(p);
        }
        drop(self.checkout(self.config.max_client_wait).await?);
        lock(&self.params)
            .clone()
            .ok_or_else(|| PgError::new(code::CONNECTION_FAILURE, "no server parameters"))
    }

    /// An idle server connection, if one is free now (no wait, no connect).
    pub fn try_checkout(self: &Arc<Self>) -> Option<Lease> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        let conn = self.pop_idle()?;
        self.stats.checkouts.fetch_add(1, Ordering::Relaxed);
        Some(Lease {
            conn: Some(conn),
            pool: self.clone(),
            _permit: permit,
        })
    }

    /// An idle server that has not outlived `server_lifetime`; older ones are closed.
    fn pop_idle(&self) -> Option<Box<ServerConn>> {
        let lifetime = self.config.server_lifetime;
        loop {
            let conn = lock(&self.idle).pop()?;
            if !lifetime.is_zero() && conn.created.elapsed() > lifetime {
                self.stats.servers_closed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            return Some(conn);
        }
    }

    /// A server connection, waiting at most `wait` for one to be free.
    pub async fn checkout(self: &Arc<Self>, wait: Duration) -> Result<Lease, PgError> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.stats.waiting.fetch_add(1, Ordering::Relaxed);
                // Boxed, like the connect below: a rare path that would otherwise
                // make every relay's per-transaction future larger.
                let acquired = Box::pin(tokio::time::timeout(
                    wait,
                    self.permits.clone().acquire_owned(),
                ))
                .await;
                self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
                match acquired {
                    Ok(Ok(p)) => p,
                    Ok(Err(_)) => {
                        return Err(PgError::new(code::ADMIN_SHUTDOWN, "the pool is closed"))
                    }
                    Err(_) => {
                        self.stats.checkout_timeouts.fetch_add(1, Ordering::Relaxed);
                        return Err(PgError::new(
                        code::TOO_MANY_CONNECTIONS,
                        format!(
                            "no server connection to database \"{}\" became free within {:?}",
                            self.name, wait
                        ),
                    )
                    .with_hint(format!(
                        "all {} connections of the pool are in use; raise pool_size or max_client_wait, or shorten transactions",
                        self.config.pool_size
                    )));
                    }
                }
            }
        };
        self.stats.checkouts.fetch_add(1, Ordering::Relaxed);
        if let Some(conn) = self.pop_idle() {
            return Ok(Lease {
                conn: Some(conn),
                pool: self.clone(),
                _permit: permit,
            });
        }
        let conn = Box::pin(self.connect()).await?;
        Ok(Lease {
            conn: Some(Box::new(conn)),
            pool: self.clone(),
            _permit: permit,
        })
    }

    async fn connect(&self) -> Result<ServerConn, PgError> {
        {
            let b = lock(&self.backoff);
            if let (Some(until), Some(e)) = (b.until, &b.last_error) {
                if Instant::now() < until {
                    return Err(connect_error(e));
                }
            }
        }
        match conn::connect(
            &self.upstream,
            self.tls.as_ref(),
            self.config.connect_timeout,
        )
        .await
        {
            Ok((c, params)) => {
                self.stats.connects.fetch_add(1, Ordering::Relaxed);
                self.stats.reachable.store(true, Ordering::Relaxed);
                let mut b = lock(&self.backoff);
                if b.last_error.take().is_some() {
                    tracing::info!(database = %self.name, upstream = %self.upstream.address(), "upstream reachable again");
                }
                b.until = None;
                b.delay = BACKOFF_MIN;
                drop(b);
                let mut p = lock(&self.params);
                if p.is_none() {
                    *p = Some(Arc::new(params));
                }
                Ok(c)
            }
            Err(e) => {
                self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                self.stats.reachable.store(false, Ordering::Relaxed);
                tracing::warn!(database = %self.name, error = %e, "upstream connection failed");
                let mut b = lock(&self.backoff);
                b.until = Some(Instant::now() + b.delay);
                b.delay = (b.delay * 2).min(BACKOFF_MAX);
                b.last_error = Some(e.clone());
                Err(connect_error(&e))
            }
        }
    }

    fn put_back(&self, mut conn: Box<ServerConn>) {
        if conn.broken {
            self.stats.servers_closed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        conn.last_used = Instant::now();
        lock(&self.idle).push(conn);
    }

    /// The idle connections, for the admin console.
    pub fn idle_servers(&self) -> Vec<IdleServer> {
        lock(&self.idle)
            .iter()
            .map(|c| IdleServer {
                pid: c.pid,
                age: c.created.elapsed(),
                idle: c.last_used.elapsed(),
                tls: matches!(c.stream, conn::Stream::Tls(_)),
            })
            .collect()
    }

    /// Samples `pg_database_size` on an idle connection (skipped when the pool is
    /// busy: the number is for alerts, not worth a client's wait).
    pub async fn sample_size(self: &Arc<Self>) {
        let Ok(mut lease) = self.checkout(Duration::from_millis(200)).await else {
            return;
        };
        let mut q = BytesMut::new();
        q.put_u8(b'Q');
        let sql = b"SELECT pg_database_size(current_database())\0";
        q.put_i32(4 + sql.len() as i32);
        q.put_slice(sql);
        match lease.simple_query(&q).await {
            Ok(Some(v)) => {
                if let Some(n) = std::str::from_utf8(&v).ok().and_then(|t| t.parse().ok()) {
                    self.stats.database_bytes.store(n, Ordering::Relaxed);
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(database = %self.name, error = %e, "database size sample failed");
                lease.broken = true;
            }
        }
    }

    /// Tries one connection (kept idle when it works): how an unreachable upstream's
    /// recovery is noticed while no client is asking.
    pub async fn probe(self: &Arc<Self>) {
        if let Ok(lease) = self.checkout(self.config.connect_timeout).await {
            drop(lease);
        }
    }

    /// Closes every idle connection: called when one turned out dead, since the
    /// others were most likely cut by the same upstream restart.
    pub fn discard_idle(&self) {
        let n = std::mem::take(&mut *lock(&self.idle)).len();
        self.stats
            .servers_closed
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Closes connections idle too long or too old, and opens connections up to
    /// `min_idle`. Runs every second.
    pub async fn maintain(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let idle_timeout = self.config.server_idle_timeout;
            let lifetime = self.config.server_lifetime;
            let min_idle = self.config.min_idle;
            {
                let mut idle = lock(&self.idle);
                let before = idle.len();
                // Oldest-used first; keep at least min_idle.
                let mut keep = Vec::with_capacity(idle.len());
                let total = idle.len();
                for (i, c) in idle.drain(..).enumerate() {
                    let remaining = total - i;
                    let too_old = !lifetime.is_zero() && c.created.elapsed() > lifetime;
                    let too_idle = !idle_timeout.is_zero()
                        && c.last_used.elapsed() > idle_timeout
                        && keep.len() + remaining > min_idle;
                    if !(too_old || too_idle) {
                        keep.push(c);
                    }
                }
                *idle = keep;
                let closed = before - idle.len();
                self.stats
                    .servers_closed
                    .fetch_add(closed as u64, Ordering::Relaxed);
            }
            while self.idle_count() < min_idle
                && self.idle_count() + self.active() < self.config.pool_size
            {
                match self.connect().await {
                    Ok(c) => lock(&self.idle).insert(0, Box::new(c)),
                    Err(_) => break,
                }
            }
        }
    }
}

fn connect_error(e: &ConnectError) -> PgError {
    let code = match e {
        ConnectError::Refused { code, .. } if code == "57P03" => code::CANNOT_CONNECT_NOW,
        _ => code::CONNECTION_FAILURE,
    };
    PgError::new(code, e.to_string())
        .with_hint("unidb keeps retrying the upstream; the statement can be retried")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
