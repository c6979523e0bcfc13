//! The server: state built from config, the accept loop, and graceful shutdown.
//! `main` and the tests both call [`run`] with their own listener and shutdown
//! future.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

use crate::backend::postgres::PostgresDb;
use crate::backend::sqlite::{CancelSlot, SqliteDb};
use crate::config::{Config, DatabaseConfig, TlsConfig, Upstream};
use crate::frontend::auth::UserStore;
use crate::observe::{DbGauges, Observer, PoolGauges};

/// Who a connected client is, for the admin console's `SHOW CLIENTS`.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub user: String,
    pub database: String,
    pub addr: Option<std::net::SocketAddr>,
    pub connected_at: std::time::SystemTime,
    pub application_name: String,
    pub tls: bool,
}

/// Sessions' cancel keys (a CancelRequest names a pid and a secret) and who they are.
#[derive(Default)]
pub struct CancelRegistry {
    next_pid: AtomicI32,
    /// std `Mutex`: held for a map operation only, never across an await.
    sessions: Mutex<HashMap<i32, Arc<CancelSlot>>>,
    /// Notified when the last session ends.
    emptied: tokio::sync::Notify,
}

/// A session's place in the cancel registry, left when it is dropped: when the
/// session's task ends or is aborted.
pub(crate) struct Registered {
    pub(crate) state: Arc<ServerState>,
    pub(crate) pid: i32,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.state.cancels.unregister(self.pid);
    }
}

impl CancelRegistry {
    /// Registers a client's session; `upstream` is its database's, if that is a
    /// PostgreSQL one.
    pub fn register(
        &self,
        info: ClientInfo,
        upstream: Option<Arc<Upstream>>,
    ) -> (i32, i32, Arc<CancelSlot>) {
        let pid = self.next_pid.fetch_add(1, Ordering::Relaxed) + 10_000;
        let secret = i32::from_ne_bytes(crate::frontend::auth::random_bytes());
        let slot = Arc::new(CancelSlot::for_client(secret, info, upstream));
        self.lock().insert(pid, slot.clone());
        (pid, secret, slot)
    }

    /// Every connected client: pid, who it is, and its session's slot.
    pub fn clients(&self) -> Vec<(i32, ClientInfo, Arc<CancelSlot>)> {
        let mut v: Vec<_> = self
            .lock()
            .iter()
            .map(|(pid, slot)| (*pid, slot.client(), slot.clone()))
            .collect();
        v.sort_by_key(|(pid, _, _)| *pid);
        v
    }

    pub fn unregister(&self, pid: i32) {
        let mut sessions = self.lock();
        sessions.remove(&pid);
        if sessions.is_empty() {
            self.emptied.notify_waiters();
        }
    }

    /// Waits until no session is left.
    pub async fn all_ended(&self) {
        loop {
            let emptied = self.emptied.notified();
            tokio::pin!(emptied);
            emptied.as_mut().enable();
            if self.lock().is_empty() {
                return;
            }
            emptied.await;
        }
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is running.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Aborts every session's task (their guards unregister them).
    pub fn abort_all(&self) {
        for slot in self.lock().values() {
            slot.abort();
        }
    }

    /// Cancels the running statement of session `pid` if `secret` matches.
    pub fn cancel(&self, pid: i32, secret: i32) {
        let slot = match self.lock().get(&pid) {
            Some(slot) if slot.secret == secret => slot.clone(),
            _ => {
                tracing::debug!(pid, "cancel request with an unknown key ignored");
                return;
            }
        };
        tracing::info!(pid, "cancel request");
        slot.cancel();
    }

    /// Wakes every session (they check the shutdown flag when woken).
    pub fn wake_all(&self) {
        for slot in self.lock().values() {
            slot.wake();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Arc<CancelSlot>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `PAUSE`/`RESUME` of one database: while paused, new transactions wait.
pub struct Pause {
    paused: std::sync::atomic::AtomicBool,
    tx: watch::Sender<bool>,
}

impl Default for Pause {
    fn default() -> Self {
        Pause {
            paused: std::sync::atomic::AtomicBool::new(false),
            tx: watch::channel(false).0,
        }
    }
}

impl Pause {
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    pub fn set(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
        self.tx.send_replace(paused);
    }

    /// Returns once the database is not paused (at once when it is not).
    pub async fn wait_resumed(&self) {
        if !self.is_paused() {
            return;
        }
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|p| !*p).await;
    }
}

/// A configured database and the backend serving it.
#[derive(Clone)]
pub enum Database {
    Sqlite(Arc<SqliteDb>),
    Postgres(Arc<PostgresDb>),
}

/// Everything sessions share.
pub struct ServerState {
    pub config: Config,
    pub databases: HashMap<String, Database>,
    pub tls: Option<TlsAcceptor>,
    pub cancels: CancelRegistry,
    /// Statement timing, metrics, alerts and health.
    pub observer: Arc<Observer>,
    /// `PAUSE` state per database.
    pub pauses: HashMap<String, Arc<Pause>>,
    /// The file the configuration came from, re-read by `RELOAD` and SIGHUP.
    pub config_path: std::sync::OnceLock<std::path::PathBuf>,
    /// What `RELOAD` can change without a restart.
    pub live: std::sync::RwLock<Arc<Live>>,
    /// Where the HTTP endpoint listens, once it does.
    pub http_addr: std::sync::OnceLock<std::net::SocketAddr>,
    /// One permit per connected client (`max_clients`).
    pub clients: Arc<Semaphore>,
    /// Turns true when shutdown starts; idle sessions close, others finish their
    /// transaction first.
    pub shutdown: watch::Receiver<bool>,
    shutdown_tx: watch::Sender<bool>,
}

/// Settings `RELOAD` replaces while clients stay connected.
pub struct Live {
    pub users: UserStore,
    pub admin_users: Vec<String>,
    pub http_token: Option<String>,
}

impl Live {
    pub fn from_config(config: &Config) -> Live {
        Live {
            users: UserStore::from_config(&config.users),
            admin_users: config.server.admin_users.clone(),
            http_token: config.http.token.clone(),
        }
    }
}

impl ServerState {
    pub fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Re-reads the configuration file and applies what can change while clients
    /// stay connected: users, admin users, the HTTP token, alert rules. Returns
    /// notes on changes that need a restart.
    pub fn reload(&self) -> Result<Vec<String>, String> {
        let path = self
            .config_path
            .get()
            .ok_or("this server was not started from a configuration file")?;
        let new = Config::load(path).map_err(|e| e.to_string())?;
        let rules = crate::observe::alerts::effective_rules(&new.alerts)?;
        let mut notes = Vec::new();
        if new.server.listen != self.config.server.listen
            || new.http.listen != self.config.http.listen
        {
            notes.push("listen addresses changed: they take effect after a restart".to_string());
        }
        if format!("{:?}", new.databases) != format!("{:?}", self.config.databases) {
            notes.push(
                "[databases] changed: database settings take effect after a restart".to_string(),
            );
        }
        if format!("{:?}", new.observe) != format!("{:?}", self.config.observe) {
            notes.push("[observe] changed: it takes effect after a restart".to_string());
        }
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Live::from_config(&new));
        self.observer.set_rules(rules);
        tracing::info!(path = %path.display(), "configuration reloaded");
        for n in &notes {
            tracing::warn!("{n}");
        }
        Ok(notes)
    }

    /// Opens every database and loads TLS material.
    pub fn new(config: Config) -> anyhow::Result<Arc<ServerState>> {
        let observer = Observer::new(&config)?;
        let pauses: HashMap<String, Arc<Pause>> = config
            .databases
            .keys()
            .map(|k| (k.clone(), Arc::new(Pause::default())))
            .collect();
        let mut databases = HashMap::new();
        for (name, db) in &config.databases {
            match db {
                DatabaseConfig::Sqlite(s) => {
                    databases.insert(name.clone(), Database::Sqlite(SqliteDb::open(name, s)?));
                }
                DatabaseConfig::Postgres(p) => {
                    let db = PostgresDb::open(
                        name,
                        p,
                        observer.db(name).cloned(),
                        pauses[name].clone(),
                    )?;
                    databases.insert(name.clone(), Database::Postgres(db));
                }
            }
        }
        let tls = config.server.tls.as_ref().map(load_tls).transpose()?;
        let live = Live::from_config(&config);
        let (shutdown_tx, shutdown) = watch::channel(false);
        Ok(Arc::new(ServerState {
            clients: Arc::new(Semaphore::new(config.server.max_clients)),
            config,
            databases,
            tls,
            cancels: CancelRegistry::default(),
            observer,
            pauses,
            config_path: std::sync::OnceLock::new(),
            live: std::sync::RwLock::new(Arc::new(live)),
            http_addr: std::sync::OnceLock::new(),
            shutdown,
            shutdown_tx,
        }))
    }

    pub fn database_names(&self) -> String {
        let mut names: Vec<&str> = self.databases.keys().map(String::as_str).collect();
        names.sort_unstable();
        names.join(", ")
    }

    pub fn users_is_empty(&self) -> bool {
        self.live().users.is_empty()
    }

    /// What the observer samples from each database, in the observer's order.
    pub fn gauges(&self) -> Vec<DbGauges> {
        self.observer
            .dbs
            .iter()
            .map(|o| match self.databases.get(&o.name) {
                Some(Database::Postgres(pg)) => {
                    let stats = &pg.pool.stats;
                    DbGauges {
                        pool: Some(PoolGauges {
                            size: pg.pool.config.pool_size as u64,
                            active: pg.pool.active() as u64,
                            idle: pg.pool.idle_count() as u64,
                            waiting: stats.waiting.load(Ordering::Relaxed),
                        }),
                        backend_up: stats.reachable.load(Ordering::Relaxed),
                        connect_failures: stats.connect_failures.load(Ordering::Relaxed),
                        storage_bytes: match stats.database_bytes.load(Ordering::Relaxed) {
                            0 => None,
                            n => Some(n),
                        },
                        storage_limit: pg.pool.config.storage_limit,
                        plans: None,
                    }
                }
                Some(Database::Sqlite(db)) => DbGauges {
                    pool: None,
                    backend_up: true,
                    connect_failures: 0,
                    storage_bytes: Some(db.storage_bytes()),
                    storage_limit: db.storage_limit(),
                    plans: Some(db.plans().counts()),
                },
                None => DbGauges::default(),
            })
            .collect()
    }
}

/// Evaluates alert rules and samples gauges every `eval_interval` until shutdown;
/// probes an unreachable upstream so that its recovery is noticed without traffic.
async fn observe_loop(state: Arc<ServerState>) {
    let mut shutdown = state.shutdown.clone();
    let mut tick = tokio::time::interval(state.config.observe.eval_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_probe = std::time::Instant::now();
    // The first size sample comes a few seconds after start.
    let mut last_size = std::time::Instant::now() - std::time::Duration::from_secs(25);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let gauges = state.gauges();
        if last_probe.elapsed() >= std::time::Duration::from_secs(2) {
            for db in state.databases.values() {
                if let Database::Postgres(pg) = db {
                    if !pg.pool.stats.reachable.load(Ordering::Relaxed) && pg.pool.active() == 0 {
                        last_probe = std::time::Instant::now();
                        let pool = pg.pool.clone();
                        tokio::spawn(async move { pool.probe().await });
                    }
                }
            }
        }
        if last_size.elapsed() >= std::time::Duration::from_secs(30) {
            last_size = std::time::Instant::now();
            for db in state.databases.values() {
                if let Database::Postgres(pg) = db {
                    let pool = pg.pool.clone();
                    tokio::spawn(async move { pool.sample_size().await });
                }
            }
        }
        state.observer.evaluate(gauges);
    }
}

fn load_tls(tls: &TlsConfig) -> anyhow::Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
        .map_err(|e| anyhow::anyhow!("cannot read TLS certificate {}: {e}", tls.cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("invalid TLS certificate {}: {e}", tls.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| anyhow::anyhow!("cannot read TLS key {}: {e}", tls.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts clients on `listener` until `shutdown` completes, then drains sessions
/// for at most `shutdown_grace` and closes the databases cleanly.
pub async fn run(
    listener: TcpListener,
    state: Arc<ServerState>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    for db in state.databases.values() {
        if let Database::Postgres(pg) = db {
            pg.start();
        }
    }
    let observe = tokio::spawn(observe_loop(state.clone()));
    let http = match state.config.http.listen {
        Some(addr) => match crate::http::bind(addr).await {
            Ok(l) => {
                if let Ok(a) = l.local_addr() {
                    let _ = state.http_addr.set(a);
                }
                Some(tokio::spawn(crate::http::serve(l, state.clone())))
            }
            Err(e) => {
                tracing::error!(%addr, error = %e, "cannot listen for HTTP; metrics and health are unavailable");
                None
            }
        },
        None => None,
    };
    // Connections are served by tasks of their own: a handshake's, then the
    // session's, which the cancel registry can reach.
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    tracing::trace!(%peer, "accepted");
                    tokio::spawn(crate::frontend::startup::serve_tcp(tcp, state.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!(
        sessions = state.cancels.len(),
        "shutting down: no new connections"
    );
    let _ = state.shutdown_tx.send(true);
    // Parked pooled clients wait on their own slot, not on the shutdown channel.
    state.cancels.wake_all();
    let grace = state.config.server.shutdown_grace;
    let drained = tokio::time::timeout(grace, state.cancels.all_ended()).await;
    if drained.is_err() {
        tracing::warn!(
            sessions = state.cancels.len(),
            "grace period over: closing remaining sessions"
        );
        state.cancels.abort_all();
        // A session still starting (its task not yet spawned) ends with its
        // start's own timeouts.
        if tokio::time::timeout(grace, state.cancels.all_ended())
            .await
            .is_err()
        {
            tracing::warn!(
                sessions = state.cancels.len(),
                "sessions still starting at the end of shutdown"
            );
        }
    }
    for db in state.databases.values() {
        if let Database::Sqlite(db) = db {
            db.shutdown(grace).await;
        }
    }
    observe.abort();
    if let Some(h) = http {
        h.abort();
    }
    tracing::info!("shutdown complete");
}
