//! Observation: every statement timed and attributed to a fingerprint, the
//! Prometheus registry, alert rules evaluated on a sampled history, and the
//! health score summarising them.
//!
//! Sessions hold a [`DbObs`] for their database and call [`DbObs::record`] once
//! per completed statement: a few atomic adds and one uncontended shard lock.

pub mod alerts;
pub mod fingerprint;
pub mod metrics;
pub mod stats;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use prometheus::{IntCounterVec, IntGauge};
use serde_json::{json, Value};

use crate::config::{Config, DatabaseConfig, Severity};
use alerts::{Instance, Rule, Sample, State, Transition};
pub use fingerprint::{Command, Fp};
use metrics::{DbHandles, Metrics};
use stats::StatementStats;

/// Seconds of history kept for the dashboard.
const HISTORY_SECONDS: f64 = 300.0;

/// One database's recorder.
pub struct DbObs {
    pub index: usize,
    pub name: String,
    pub backend: &'static str,
    enabled: bool,
    handles: DbHandles,
    error_vec: IntCounterVec,
    retry_vec: IntCounterVec,
    errors: AtomicU64,
    stats: Arc<StatementStats>,
}

impl DbObs {
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Records one completed statement. `wait` is the part of `elapsed` spent
    /// waiting for a backend connection; `error` the SQLSTATE it ended with.
    pub fn record(
        &self,
        fp: Fp,
        elapsed: Duration,
        wait: Duration,
        rows: u64,
        error: Option<&str>,
    ) {
        let h = &self.handles.commands[fp.command as usize];
        h.queries.inc();
        if rows > 0 {
            h.rows.inc_by(rows);
        }
        h.duration.observe(elapsed.as_secs_f64());
        if let Some(code) = error {
            let class = code.get(..2).unwrap_or("XX");
            self.error_vec
                .with_label_values(&[self.name.as_str(), self.backend, class])
                .inc();
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.record(
            self.index,
            fp.id,
            elapsed.as_nanos() as u64,
            wait.as_nanos() as u64,
            rows,
            error.is_some(),
        );
    }

    /// Time a client waited for a backend connection at checkout.
    pub fn pool_wait(&self, wait: Duration) {
        self.handles.pool_wait.observe(wait.as_secs_f64());
    }

    /// A statement retried transparently (`reason`: serialization, deadlock,
    /// server_lost, busy).
    pub fn retry(&self, reason: &str) {
        self.retry_vec
            .with_label_values(&[self.name.as_str(), reason])
            .inc();
    }

    /// The gauge of connected clients.
    pub fn clients(&self) -> &IntGauge {
        &self.handles.clients
    }

    fn calls(&self) -> u64 {
        self.handles.commands.iter().map(|c| c.queries.get()).sum()
    }

    fn duration_sum(&self) -> f64 {
        self.handles
            .commands
            .iter()
            .map(|c| c.duration.get_sample_sum())
            .sum()
    }
}

/// A session's fingerprint cache: its recent statement texts with their
/// fingerprints, and the last few fingerprints whose text is registered. A
/// statement repeated costs a comparison, with other numbers too (the usual
/// case of statements sent with literals); anything else one scan.
#[derive(Default)]
pub struct FpCache {
    /// Oldest first; at most [`RECENT`] entries, their texts within
    /// [`RECENT_BYTES`] together.
    recent: Vec<Recent>,
    recent_bytes: usize,
    /// Where the next lookup starts: after the last hit, so that a session that
    /// cycles through a few statements (a transaction's) finds each at once.
    probe: usize,
    known: [(u64, u64); 8],
    next: usize,
}

struct Recent {
    text: Box<[u8]>,
    fp: Fp,
    /// The text holds a `"`: only an exact repeat has its fingerprint.
    quoted: bool,
}

const RECENT: usize = 16;
const RECENT_BYTES: usize = 8192;

impl FpCache {
    pub fn get(&mut self, obs: &DbObs, sql: &[u8]) -> Fp {
        let n = self.recent.len();
        for k in 0..n {
            let at = (self.probe + k) % n;
            let r = &self.recent[at];
            let hit = if r.quoted {
                *r.text == *sql
            } else {
                fingerprint::same_but_numbers(&r.text, sql)
            };
            if hit {
                self.probe = at + 1;
                return r.fp;
            }
        }
        let mut fp = fingerprint::fingerprint(sql);
        match self.known.iter().find(|(raw, _)| *raw == fp.id) {
            Some(&(_, id)) => fp.id = id,
            None => {
                let raw = fp.id;
                fp.id = obs.stats.register(raw, || fingerprint::display(sql));
                self.known[self.next] = (raw, fp.id);
                self.next = (self.next + 1) % self.known.len();
            }
        }
        self.remember(sql, fp);
        fp
    }

    /// Keeps `sql` among the recent texts, forgetting the oldest as needed.
    fn remember(&mut self, sql: &[u8], fp: Fp) {
        if sql.len() > RECENT_BYTES / 2 {
            return;
        }
        while !self.recent.is_empty()
            && (self.recent.len() >= RECENT || self.recent_bytes + sql.len() > RECENT_BYTES)
        {
            let old = self.recent.remove(0);
            self.recent_bytes -= old.text.len();
        }
        self.recent_bytes += sql.len();
        self.recent.push(Recent {
            text: sql.into(),
            fp,
            quoted: sql.contains(&b'"'),
        });
        // The new text is likely next (a statement repeated with other numbers).
        self.probe = self.recent.len() - 1;
    }
}

/// What the evaluation loop reads from a database each tick.
#[derive(Debug, Clone, Copy, Default)]
pub struct DbGauges {
    /// `None` for backends without a connection pool.
    pub pool: Option<PoolGauges>,
    pub backend_up: bool,
    pub connect_failures: u64,
    pub storage_bytes: Option<u64>,
    pub storage_limit: Option<u64>,
    /// Plan cache hits and parses (SQLite backend).
    pub plans: Option<crate::sql::CacheCounts>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct PoolGauges {
    pub size: u64,
    pub active: u64,
    pub idle: u64,
    pub waiting: u64,
}

impl PoolGauges {
    pub fn usage(&self) -> f64 {
        if self.size == 0 {
            0.0
        } else {
            self.active as f64 / self.size as f64
        }
    }
}

/// The health summary.
#[derive(Debug, Clone)]
pub struct Health {
    pub score: f64,
    pub status: &'static str,
    pub checks: Vec<(String, bool, String)>,
}

struct Engine {
    rules: Vec<Rule>,
    /// Oldest first: (seconds since start, wall time, one sample per database).
    history: VecDeque<(f64, SystemTime, Vec<Sample>)>,
    /// Per-database sample series view, rebuilt cheaply per evaluation.
    instances: Vec<Instance>,
    gauges: Vec<DbGauges>,
    health: Health,
    last_compact: Instant,
}

pub struct Observer {
    pub enabled: bool,
    pub stats: Arc<StatementStats>,
    pub metrics: Metrics,
    pub dbs: Vec<Arc<DbObs>>,
    started: Instant,
    retention: Duration,
    webhook: Option<String>,
    engine: Mutex<Engine>,
    http: Option<reqwest::Client>,
}

impl Observer {
    /// Builds the observer for the configured databases (in name order).
    pub fn new(config: &Config) -> anyhow::Result<Arc<Observer>> {
        let metrics = Metrics::new();
        let stats = Arc::new(StatementStats::new(
            config.databases.len(),
            config.observe.max_fingerprints,
        ));
        let dbs = config
            .databases
            .iter()
            .enumerate()
            .map(|(index, (name, db))| {
                let backend = match db {
                    DatabaseConfig::Sqlite(_) => "sqlite",
                    DatabaseConfig::Postgres(_) => "postgres",
                };
                Arc::new(DbObs {
                    index,
                    name: name.clone(),
                    backend,
                    enabled: config.observe.enabled,
                    handles: DbHandles::new(&metrics, name, backend),
                    error_vec: metrics.errors.clone(),
                    retry_vec: metrics.retries.clone(),
                    errors: AtomicU64::new(0),
                    stats: stats.clone(),
                })
            })
            .collect();
        let rules = alerts::effective_rules(&config.alerts).map_err(|e| anyhow::anyhow!(e))?;
        let http = match &config.observe.webhook_url {
            Some(_) => Some(webhook_client()?),
            None => None,
        };
        Ok(Arc::new(Observer {
            enabled: config.observe.enabled,
            stats,
            metrics,
            dbs,
            started: Instant::now(),
            retention: config.observe.resolved_retention,
            webhook: config.observe.webhook_url.clone(),
            engine: Mutex::new(Engine {
                rules,
                history: VecDeque::new(),
                instances: Vec::new(),
                gauges: Vec::new(),
                health: Health {
                    score: 100.0,
                    status: "excellent",
                    checks: Vec::new(),
                },
                last_compact: Instant::now(),
            }),
            http,
        }))
    }

    pub fn db(&self, name: &str) -> Option<&Arc<DbObs>> {
        self.dbs.iter().find(|d| d.name == name)
    }

    /// Replaces the alert rules (config reload). Instances of rules that still
    /// exist keep their state.
    pub fn set_rules(&self, rules: Vec<Rule>) {
        let mut e = lock(&self.engine);
        let old: Vec<String> = e.rules.iter().map(|r| r.name.clone()).collect();
        let mut kept = Vec::new();
        for inst in e.instances.drain(..) {
            if let Some(i) = rules.iter().position(|r| r.name == old[inst.rule]) {
                kept.push(Instance { rule: i, ..inst });
            }
        }
        e.instances = kept;
        e.rules = rules;
    }

    /// One evaluation: sample every database, update gauges, step every alert,
    /// recompute health. Transitions are logged, counted and sent to the webhook.
    pub fn evaluate(self: &Arc<Self>, gauges: Vec<DbGauges>) {
        let now_wall = SystemTime::now();
        let t = self.started.elapsed().as_secs_f64();
        let m = &self.metrics;
        let samples: Vec<Sample> = self
            .dbs
            .iter()
            .zip(&gauges)
            .map(|(db, g)| {
                let name = db.name.as_str();
                if let Some(p) = &g.pool {
                    m.pool_size.with_label_values(&[name]).set(p.size as i64);
                    m.pool_servers
                        .with_label_values(&[name, "active"])
                        .set(p.active as i64);
                    m.pool_servers
                        .with_label_values(&[name, "idle"])
                        .set(p.idle as i64);
                    m.pool_waiting
                        .with_label_values(&[name])
                        .set(p.waiting as i64);
                    m.pool_usage.with_label_values(&[name]).set(p.usage());
                }
                m.backend_up
                    .with_label_values(&[name])
                    .set(g.backend_up as i64);
                let cf = &db.handles.connect_failures;
                if g.connect_failures > cf.get() {
                    cf.inc_by(g.connect_failures - cf.get());
                }
                if let Some(p) = g.plans {
                    for (c, n) in [
                        (&db.handles.plan_hits, p.hits),
                        (&db.handles.plan_parses, p.parses),
                    ] {
                        if n > c.get() {
                            c.inc_by(n - c.get());
                        }
                    }
                }
                if let Some(b) = g.storage_bytes {
                    m.storage_bytes.with_label_values(&[name]).set(b as i64);
                }
                m.storage_limit
                    .with_label_values(&[name])
                    .set(g.storage_limit.unwrap_or(0) as i64);
                Sample {
                    t,
                    calls: db.calls() as f64,
                    errors: db.errors.load(Ordering::Relaxed) as f64,
                    duration_s: db.duration_sum(),
                    pool_usage: g.pool.map_or(0.0, |p| p.usage()),
                    waiting: g.pool.map_or(0.0, |p| p.waiting as f64),
                    backend_up: if g.backend_up { 1.0 } else { 0.0 },
                    storage_usage: match (g.storage_bytes, g.storage_limit) {
                        (Some(b), Some(l)) if l > 0 => Some(b as f64 / l as f64),
                        _ => None,
                    },
                    connect_failures: g.connect_failures as f64,
                    integrity_violations: m.integrity_violations.with_label_values(&[name]).get()
                        as f64,
                    consistency_warnings: m.consistency_warnings.with_label_values(&[name]).get()
                        as f64,
                }
            })
            .collect();
        let mut transitions = Vec::new();
        {
            let mut guard = lock(&self.engine);
            let e = &mut *guard;
            e.history.push_back((t, now_wall, samples));
            let keep = e
                .rules
                .iter()
                .map(|r| r.expr.window.as_secs_f64())
                .fold(HISTORY_SECONDS, f64::max)
                + 2.0;
            while e.history.front().is_some_and(|(t0, _, _)| t - t0 > keep) {
                e.history.pop_front();
            }
            e.gauges = gauges;
            for db in 0..self.dbs.len() {
                // One database's series, shared by every rule.
                let series: VecDeque<Sample> = e.history.iter().map(|(_, _, s)| s[db]).collect();
                for (ri, rule) in e.rules.iter().enumerate() {
                    let value = rule.expr.value(&series);
                    let idx = match e
                        .instances
                        .iter()
                        .position(|i| i.rule == ri && i.database == db)
                    {
                        Some(i) => i,
                        None => {
                            e.instances.push(Instance {
                                rule: ri,
                                database: db,
                                state: State::Inactive,
                                since: None,
                                fired_at: None,
                                value: None,
                            });
                            e.instances.len() - 1
                        }
                    };
                    if let Some(tr) = e.instances[idx].step(rule, value, now_wall, self.retention) {
                        transitions.push((rule.clone(), tr));
                    }
                }
            }
            e.health = self.compute_health(e);
            m.health_score.set(e.health.score);
            if e.last_compact.elapsed() > Duration::from_secs(10) {
                e.last_compact = Instant::now();
                self.stats.compact();
            }
        }
        m.fingerprints.set(self.stats.fingerprints() as i64);
        for (rule, tr) in transitions {
            self.on_transition(&rule, tr);
        }
    }

    fn on_transition(self: &Arc<Self>, rule: &Rule, tr: Transition) {
        let db = &self.dbs[tr.instance.database].name;
        let to = tr.instance.state;
        let value = tr
            .instance
            .value
            .map_or("none".to_string(), |v| format!("{v:.4}"));
        match to {
            State::Firing => {
                tracing::warn!(alert = %rule.name, database = %db, severity = rule.severity.as_str(), %value, summary = %rule.summary, "alert firing")
            }
            State::Resolved => {
                tracing::info!(alert = %rule.name, database = %db, %value, "alert resolved")
            }
            _ => {
                tracing::info!(alert = %rule.name, database = %db, from = tr.from.as_str(), to = to.as_str(), %value, "alert state changed")
            }
        }
        self.metrics
            .alert_transitions
            .with_label_values(&[rule.name.as_str(), to.as_str()])
            .inc();
        self.metrics
            .alert_firing
            .with_label_values(&[rule.name.as_str(), rule.severity.as_str(), db.as_str()])
            .set((to == State::Firing) as i64);
        if matches!(to, State::Firing | State::Resolved) {
            if let (Some(url), Some(client)) = (&self.webhook, &self.http) {
                let payload = self.webhook_payload(rule, &tr);
                tokio::spawn(send_webhook(client.clone(), url.clone(), payload));
            }
        }
    }

    /// Alertmanager's webhook payload (version 4) for one alert.
    fn webhook_payload(&self, rule: &Rule, tr: &Transition) -> Value {
        let db = &self.dbs[tr.instance.database].name;
        let status = if tr.instance.state == State::Firing {
            "firing"
        } else {
            "resolved"
        };
        let labels = json!({
            "alertname": rule.name,
            "severity": rule.severity.as_str(),
            "database": db,
            "instance": "unidb",
        });
        let annotations = json!({
            "summary": rule.summary,
            "description": format!("{} on database {db}: {} (value {})", rule.summary, rule.expr_text,
                tr.instance.value.map_or("none".into(), |v| format!("{v:.4}"))),
        });
        let starts = tr
            .instance
            .fired_at
            .map(rfc3339)
            .unwrap_or_else(|| rfc3339(SystemTime::now()));
        let ends = if status == "resolved" {
            tr.instance.since.map(rfc3339).unwrap_or_default()
        } else {
            "0001-01-01T00:00:00Z".to_string()
        };
        json!({
            "version": "4",
            "groupKey": format!("{{}}:{{alertname=\"{}\", database=\"{db}\"}}", rule.name),
            "truncatedAlerts": 0,
            "status": status,
            "receiver": "unidb",
            "groupLabels": {"alertname": rule.name, "database": db},
            "commonLabels": labels,
            "commonAnnotations": annotations,
            "externalURL": "",
            "alerts": [{
                "status": status,
                "labels": labels,
                "annotations": annotations,
                "startsAt": starts,
                "endsAt": ends,
                "generatorURL": "",
                "fingerprint": format!("{:016x}", alert_id(&format!("{}\0{db}", rule.name))),
            }],
        })
    }

    /// The documented formula (ARCHITECTURE.md, "Health score").
    fn compute_health(&self, e: &Engine) -> Health {
        let mut score = 100.0f64;
        let mut critical = false;
        let mut warning = false;
        let mut checks = Vec::new();
        for (db, g) in self.dbs.iter().zip(&e.gauges) {
            if !g.backend_up {
                score -= 40.0;
                critical = true;
            }
            checks.push((
                format!("backend {}", db.name),
                g.backend_up,
                if g.backend_up {
                    "reachable"
                } else {
                    "unreachable"
                }
                .to_string(),
            ));
            if let Some(p) = &g.pool {
                let u = p.usage();
                if u > 0.8 {
                    score -= (50.0 * (u - 0.8)).min(10.0);
                }
                checks.push((
                    format!("pool {}", db.name),
                    u <= 0.8,
                    format!("{}/{} in use, {} waiting", p.active, p.size, p.waiting),
                ));
            }
        }
        for inst in &e.instances {
            let rule = &e.rules[inst.rule];
            match (inst.state, rule.severity) {
                (State::Firing, Severity::Critical) => {
                    score -= 30.0;
                    critical = true;
                }
                (State::Firing, _) => {
                    score -= 10.0;
                    warning = true;
                }
                (State::Pending, _) => score -= 2.0,
                _ => {}
            }
        }
        // Error rate and latency over the last minute, all databases together.
        if let (Some(last), Some(base)) = (
            e.history.back(),
            e.history
                .iter()
                .rev()
                .find(|(t, _, _)| e.history.back().is_some_and(|(l, _, _)| l - t >= 60.0))
                .or(e.history.front()),
        ) {
            let calls = total(&last.2, |s| s.calls) - total(&base.2, |s| s.calls);
            if calls > 0.0 {
                let errors = total(&last.2, |s| s.errors) - total(&base.2, |s| s.errors);
                let rate = errors / calls;
                score -= (200.0 * rate).min(20.0);
                checks.push((
                    "error rate".into(),
                    rate <= 0.1,
                    format!(
                        "{:.2}% of statements failed in the last minute",
                        rate * 100.0
                    ),
                ));
                let avg_ms = (total(&last.2, |s| s.duration_s) - total(&base.2, |s| s.duration_s))
                    * 1000.0
                    / calls;
                if avg_ms > 100.0 {
                    score -= ((avg_ms - 100.0) / 100.0).min(10.0);
                }
                checks.push((
                    "latency".into(),
                    avg_ms <= 1000.0,
                    format!("{avg_ms:.3} ms average in the last minute"),
                ));
            }
        }
        let score = score.clamp(0.0, 100.0).round();
        let status = if critical || score < 40.0 {
            "critical"
        } else if warning || score < 70.0 {
            "degraded"
        } else if score < 90.0 {
            "good"
        } else {
            "excellent"
        };
        Health {
            score,
            status,
            checks,
        }
    }

    pub fn health(&self) -> Health {
        lock(&self.engine).health.clone()
    }

    fn alert_json(&self, e: &Engine, inst: &Instance) -> Value {
        let rule = &e.rules[inst.rule];
        json!({
            "name": rule.name,
            "database": self.dbs[inst.database].name,
            "severity": rule.severity.as_str(),
            "state": inst.state.as_str(),
            "since": inst.since.map(rfc3339),
            "value": inst.value.filter(|v| v.is_finite()),
            "expr": rule.expr_text,
            "for_seconds": rule.for_.as_secs_f64(),
            "summary": rule.summary,
        })
    }

    /// `/alerts`: every rule on every database.
    pub fn alerts_json(&self) -> Value {
        let e = lock(&self.engine);
        let mut list: Vec<Value> = e.instances.iter().map(|i| self.alert_json(&e, i)).collect();
        if list.is_empty() {
            // Not evaluated yet: list the rules as inactive.
            for rule in &e.rules {
                for db in &self.dbs {
                    list.push(json!({
                        "name": rule.name, "database": db.name, "severity": rule.severity.as_str(),
                        "state": "inactive", "since": null, "value": null, "expr": rule.expr_text,
                        "for_seconds": rule.for_.as_secs_f64(), "summary": rule.summary,
                    }));
                }
            }
        }
        json!({ "alerts": list })
    }

    /// Alerts pending or firing, as (name, database, severity, state, since).
    pub fn active_alerts(&self) -> Vec<Value> {
        let e = lock(&self.engine);
        e.instances
            .iter()
            .filter(|i| matches!(i.state, State::Pending | State::Firing))
            .map(|i| self.alert_json(&e, i))
            .collect()
    }

    /// `/health`.
    pub fn health_json(&self) -> (bool, Value) {
        let h = self.health();
        let checks: Vec<Value> = h
            .checks
            .iter()
            .map(|(name, ok, detail)| json!({"name": name, "ok": ok, "detail": detail}))
            .collect();
        (
            h.status == "critical",
            json!({
                "status": h.status,
                "score": h.score,
                "checks": checks,
                "alerts": self.active_alerts(),
            }),
        )
    }

    /// `/stats`.
    pub fn stats_json(&self) -> Value {
        let rows = self.stats.snapshot();
        let stmt = |r: &stats::Row| {
            let e = &r.entry;
            let ms = |ns: u64| ns as f64 / 1e6;
            json!({
                "fingerprint": format!("{:016x}", r.fingerprint),
                "database": self.dbs[r.database].name,
                "query": &*r.query,
                "calls": e.calls,
                "rows": e.rows,
                "errors": e.errors,
                "total_time_ms": ms(e.total_ns),
                "min_time_ms": if e.calls > 0 { ms(e.min_ns) } else { 0.0 },
                "max_time_ms": ms(e.max_ns),
                "mean_time_ms": e.mean_ns() / 1e6,
                "p50_ms": ms(e.quantile_ns(0.50)),
                "p95_ms": ms(e.quantile_ns(0.95)),
                "p99_ms": ms(e.quantile_ns(0.99)),
                "wait_time_ms": ms(e.wait_ns),
            })
        };
        let mut by_total: Vec<&stats::Row> = rows.iter().collect();
        by_total.sort_by_key(|r| std::cmp::Reverse(r.entry.total_ns));
        let mut by_mean: Vec<&stats::Row> = rows.iter().collect();
        by_mean.sort_by(|a, b| b.entry.mean_ns().total_cmp(&a.entry.mean_ns()));
        let e = lock(&self.engine);
        let mut databases = Vec::new();
        let (mut calls, mut rows_n, mut errors, mut total_ns) = (0u64, 0u64, 0u64, 0u64);
        for (i, db) in self.dbs.iter().enumerate() {
            let (c, rws, er, tn) = rows.iter().filter(|r| r.database == i).fold(
                (0u64, 0u64, 0u64, 0u64),
                |(c, r, er, t), row| {
                    (
                        c + row.entry.calls,
                        r + row.entry.rows,
                        er + row.entry.errors,
                        t + row.entry.total_ns,
                    )
                },
            );
            calls += c;
            rows_n += rws;
            errors += er;
            total_ns += tn;
            let pool = e.gauges.get(i).and_then(|g| g.pool).map(|p| {
                json!({"size": p.size, "active": p.active, "idle": p.idle, "waiting": p.waiting, "usage": p.usage()})
            });
            let mut entry = summary(c, rws, er, tn);
            entry.insert("name".into(), json!(db.name));
            entry.insert("backend".into(), json!(db.backend));
            entry.insert("pool".into(), json!(pool));
            databases.push(Value::Object(entry));
        }
        let mut history = Vec::new();
        let mut prev: Option<&(f64, SystemTime, Vec<Sample>)> = None;
        let newest = e.history.back().map_or(0.0, |h| h.0);
        for h in e.history.iter().filter(|h| newest - h.0 <= HISTORY_SECONDS) {
            if let Some(p) = prev {
                let dt = h.0 - p.0;
                let dc = total(&h.2, |s| s.calls) - total(&p.2, |s| s.calls);
                let dd = total(&h.2, |s| s.duration_s) - total(&p.2, |s| s.duration_s);
                let de = total(&h.2, |s| s.errors) - total(&p.2, |s| s.errors);
                let usage = h.2.iter().map(|s| s.pool_usage).fold(0.0, f64::max);
                history.push(json!({
                    "t": unix(h.1),
                    "qps": if dt > 0.0 { dc / dt } else { 0.0 },
                    "avg_time_ms": if dc > 0.0 { dd * 1000.0 / dc } else { 0.0 },
                    "error_rate": if dc > 0.0 { de / dc } else { 0.0 },
                    "pool_usage": usage,
                }));
            }
            prev = Some(h);
        }
        let qps = history
            .iter()
            .rev()
            .take(10)
            .filter_map(|h| h["qps"].as_f64())
            .collect::<Vec<_>>();
        let qps = if qps.is_empty() {
            0.0
        } else {
            qps.iter().sum::<f64>() / qps.len() as f64
        };
        drop(e);
        let mut totals = summary(calls, rows_n, errors, total_ns);
        totals.insert("qps".into(), json!(qps));
        json!({
            "generated_at": rfc3339(SystemTime::now()),
            "uptime_seconds": self.started.elapsed().as_secs_f64(),
            "reset_at": rfc3339(self.stats.reset_at()),
            "totals": totals,
            "databases": databases,
            "statements": by_total.iter().map(|r| stmt(r)).collect::<Vec<_>>(),
            "slowest_by_mean": by_mean.iter().take(10).map(|r| stmt(r)).collect::<Vec<_>>(),
            "slowest_by_total": by_total.iter().take(10).map(|r| stmt(r)).collect::<Vec<_>>(),
            "history": history,
        })
    }

    /// Prometheus text exposition.
    pub fn metrics_text(&self) -> String {
        use prometheus::Encoder;
        let mut out = Vec::new();
        let families = self.metrics.registry.gather();
        if let Err(e) = prometheus::TextEncoder::new().encode(&families, &mut out) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// Resets statement statistics (`RESET STATS`).
    pub fn reset_stats(&self) {
        self.stats.reset();
    }
}

fn webhook_client() -> anyhow::Result<reqwest::Client> {
    // rustls without a process-wide provider: ring, as everywhere else in unidb.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?)
}

/// POSTs one payload, retrying 3 times with backoff on failure or a 5xx answer.
async fn send_webhook(client: reqwest::Client, url: String, payload: Value) {
    let body = payload.to_string();
    let mut delay = Duration::from_millis(500);
    for attempt in 1..=4 {
        let result = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        match result {
            Ok(r) if r.status().is_success() => {
                tracing::debug!(%url, attempt, "alert webhook delivered");
                return;
            }
            Ok(r) if r.status().is_client_error() => {
                tracing::warn!(%url, status = %r.status(), "alert webhook rejected the payload");
                return;
            }
            Ok(r) => tracing::warn!(%url, attempt, status = %r.status(), "alert webhook failed"),
            Err(e) => tracing::warn!(%url, attempt, error = %e, "alert webhook failed"),
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
}

pub fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Calls, rows, errors and times of a set of statements, as /stats shows them.
fn summary(calls: u64, rows: u64, errors: u64, total_ns: u64) -> serde_json::Map<String, Value> {
    let per_call = |x: f64| if calls > 0 { x / calls as f64 } else { 0.0 };
    let mut m = serde_json::Map::new();
    m.insert("calls".into(), json!(calls));
    m.insert("rows".into(), json!(rows));
    m.insert("errors".into(), json!(errors));
    m.insert("total_time_ms".into(), json!(total_ns as f64 / 1e6));
    m.insert("avg_time_ms".into(), json!(per_call(total_ns as f64 / 1e6)));
    m.insert("error_rate".into(), json!(per_call(errors as f64)));
    m
}

/// The sum of one field over every database's sample.
fn total(samples: &[Sample], field: fn(&Sample) -> f64) -> f64 {
    samples.iter().map(field).sum()
}

/// A stable id for an alert instance (Alertmanager's `fingerprint`).
fn alert_id(s: &str) -> u64 {
    fingerprint::fingerprint(s.as_bytes()).id
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
