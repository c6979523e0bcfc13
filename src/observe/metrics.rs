//! The Prometheus registry: metric families and the per-database handles the
//! hot path uses (resolved once, so recording is a few atomic adds).

use prometheus::core::Collector;
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

use super::fingerprint::Command;

const QUERY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];
const WAIT_BUCKETS: &[f64] = &[
    0.00001, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0,
];

pub struct Metrics {
    pub registry: Registry,
    pub queries: IntCounterVec,
    pub errors: IntCounterVec,
    pub rows: IntCounterVec,
    pub duration: HistogramVec,
    pub pool_wait: HistogramVec,
    pub client_connections: IntGaugeVec,
    pub pool_size: IntGaugeVec,
    pub pool_servers: IntGaugeVec,
    pub pool_waiting: IntGaugeVec,
    pub pool_usage: GaugeVec,
    pub backend_up: IntGaugeVec,
    pub connect_failures: IntCounterVec,
    pub retries: IntCounterVec,
    pub storage_bytes: IntGaugeVec,
    pub storage_limit: IntGaugeVec,
    pub plan_cache: IntCounterVec,
    pub integrity_violations: IntCounterVec,
    pub consistency_warnings: IntCounterVec,
    pub health_score: Gauge,
    pub alert_firing: IntGaugeVec,
    pub alert_transitions: IntCounterVec,
    pub fingerprints: IntGauge,
}

fn register<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(
                &r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            register(
                &r,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let build = gauge(
            "unidb_build_info",
            "Build of the running unidb.",
            &["version"],
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let start = register(
            &r,
            Gauge::new(
                "unidb_start_time_seconds",
                "Start time of the process, Unix seconds.",
            )
            .expect("valid metric"),
        );
        start.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        Metrics {
            queries: counter(
                "unidb_queries_total",
                "Statements completed (successfully or not).",
                &["database", "backend", "command"],
            ),
            errors: counter(
                "unidb_query_errors_total",
                "Statements that ended in an error, by SQLSTATE class.",
                &["database", "backend", "sqlstate_class"],
            ),
            rows: counter(
                "unidb_query_rows_total",
                "Rows returned or affected.",
                &["database", "backend", "command"],
            ),
            duration: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "unidb_query_duration_seconds",
                        "Time from receiving a statement to its completion.",
                    )
                    .buckets(QUERY_BUCKETS.to_vec()),
                    &["database", "backend", "command"],
                )
                .expect("valid metric"),
            ),
            pool_wait: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "unidb_pool_wait_seconds",
                        "Time a statement waited for a backend connection.",
                    )
                    .buckets(WAIT_BUCKETS.to_vec()),
                    &["database"],
                )
                .expect("valid metric"),
            ),
            client_connections: gauge(
                "unidb_client_connections",
                "Clients connected.",
                &["database"],
            ),
            pool_size: gauge("unidb_pool_size", "Configured pool size.", &["database"]),
            pool_servers: gauge(
                "unidb_pool_servers",
                "Backend connections by state.",
                &["database", "state"],
            ),
            pool_waiting: gauge(
                "unidb_pool_waiting_clients",
                "Clients waiting for a backend connection.",
                &["database"],
            ),
            pool_usage: register(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "unidb_pool_usage_ratio",
                        "Backend connections in use over pool size.",
                    ),
                    &["database"],
                )
                .expect("valid metric"),
            ),
            backend_up: gauge(
                "unidb_backend_up",
                "1 when the backend is reachable.",
                &["database"],
            ),
            connect_failures: counter(
                "unidb_backend_connect_failures_total",
                "Failed attempts to connect to the backend.",
                &["database"],
            ),
            retries: counter(
                "unidb_retries_total",
                "Statements retried transparently, by reason.",
                &["database", "reason"],
            ),
            storage_bytes: gauge(
                "unidb_storage_bytes",
                "Size of the database on disk.",
                &["database"],
            ),
            plan_cache: counter(
                "unidb_plan_cache_lookups_total",
                "Statement plans looked up in the rewrite cache (SQLite backend), by result: hit, or parse (a miss, parsed and rewritten).",
                &["database", "result"],
            ),
            storage_limit: gauge(
                "unidb_storage_limit_bytes",
                "Configured storage limit (0: none).",
                &["database"],
            ),
            integrity_violations: counter(
                "unidb_integrity_violations_total",
                "Integrity check violations reported.",
                &["database"],
            ),
            consistency_warnings: counter(
                "unidb_consistency_warnings_total",
                "Consistency warnings reported.",
                &["database"],
            ),
            health_score: register(
                &r,
                Gauge::new("unidb_health_score", "Health score, 0 to 100.").expect("valid metric"),
            ),
            alert_firing: gauge(
                "unidb_alert_firing",
                "1 while the alert fires.",
                &["alertname", "severity", "database"],
            ),
            alert_transitions: counter(
                "unidb_alert_transitions_total",
                "Alert state changes, by the state entered.",
                &["alertname", "state"],
            ),
            fingerprints: register(
                &r,
                IntGauge::new(
                    "unidb_statement_fingerprints",
                    "Distinct statements tracked.",
                )
                .expect("valid metric"),
            ),
            registry: r,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// One command's handles on one database.
pub struct CommandHandles {
    pub queries: IntCounter,
    pub rows: IntCounter,
    pub duration: Histogram,
}

/// A database's handles, resolved once.
pub struct DbHandles {
    pub commands: Vec<CommandHandles>,
    pub pool_wait: Histogram,
    pub clients: IntGauge,
    pub connect_failures: IntCounter,
    pub plan_hits: IntCounter,
    pub plan_parses: IntCounter,
}

impl DbHandles {
    pub fn new(m: &Metrics, database: &str, backend: &str) -> DbHandles {
        DbHandles {
            commands: Command::ALL
                .iter()
                .map(|c| CommandHandles {
                    queries: m
                        .queries
                        .with_label_values(&[database, backend, c.as_str()]),
                    rows: m.rows.with_label_values(&[database, backend, c.as_str()]),
                    duration: m
                        .duration
                        .with_label_values(&[database, backend, c.as_str()]),
                })
                .collect(),
            pool_wait: m.pool_wait.with_label_values(&[database]),
            clients: m.client_connections.with_label_values(&[database]),
            connect_failures: m.connect_failures.with_label_values(&[database]),
            plan_hits: m.plan_cache.with_label_values(&[database, "hit"]),
            plan_parses: m.plan_cache.with_label_values(&[database, "parse"]),
        }
    }
}
