//! Statement timing, /metrics, /stats, alerts, the webhook and /health, against
//! unidb serving SQLite and a real PostgreSQL.

mod common;

use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use common::pg::PgCluster;
use common::TestServer;

/// Rules fast enough for a test: short windows, short `for`.
const FAST_RULES: &str = r#"
[[alerts]]
name = "SlowQueries"
expr = "avg(query_time_ms[2s]) > 150"
for = "600ms"
severity = "warning"
summary = "Average statement time above 150 ms"

[[alerts]]
name = "HighErrorRate"
expr = "avg(error_rate[2s]) > 0.5"
for = "300ms"
severity = "critical"
summary = "More than half of the statements fail"

[[alerts]]
name = "PoolSaturated"
expr = "avg(pool_usage[1s]) > 0.8"
for = "300ms"
severity = "warning"
summary = "Pool nearly exhausted"
"#;

/// rustls needs a process-wide crypto provider for reqwest's client.
fn crypto() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
}

async fn get_json(url: &str) -> (u16, Value) {
    crypto();
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_str(&r.text().await.unwrap()).unwrap(),
    )
}

async fn metrics(base: &str) -> String {
    crypto();
    reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the sample whose name and labels (in any order) match.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            let (series, _) = l.rsplit_once(' ').unwrap_or(("", ""));
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
}

fn statement<'a>(stats: &'a Value, query: &str) -> &'a Value {
    stats["statements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["query"] == query)
        .unwrap_or_else(|| panic!("no statement {query:?} in {:#}", stats["statements"]))
}

/// Waits until alert `name` on `database` is in `state`; returns every state seen.
async fn wait_alert(base: &str, name: &str, state: &str, within: Duration) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + within;
    let mut seen: Vec<String> = Vec::new();
    loop {
        let (_, alerts) = get_json(&format!("{base}/alerts")).await;
        let a = alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name && a["database"] == "app")
            .cloned()
            .unwrap_or(Value::Null);
        let s = a["state"].as_str().unwrap_or("missing").to_string();
        if seen.last() != Some(&s) {
            seen.push(s.clone());
        }
        if s == state {
            return seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "alert {name} never reached {state}; states seen: {seen:?}; last: {a:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A receiver for Alertmanager webhooks: every POSTed JSON body.
async fn webhook_receiver() -> (String, mpsc::UnboundedReceiver<Value>) {
    use axum::routing::post;
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        post(move |body: axum::Json<Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body.0);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx)
}

async fn next_hook(rx: &mut mpsc::UnboundedReceiver<Value>, alert: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let body = tokio::time::timeout(left, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {status} webhook for {alert}"))
            .unwrap();
        if body["alerts"][0]["labels"]["alertname"] == alert && body["status"] == status {
            return body;
        }
    }
}

fn sqlite_config(dir: &std::path::Path, hook: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "5s"

[http]
listen = "127.0.0.1:0"

[observe]
eval_interval = "100ms"
webhook_url = "{hook}"

{}

[databases.app]
backend = "sqlite"
path = "{}/app.db"
readers = 2
{FAST_RULES}
"#,
        common::APP_USER,
        dir.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_counts_match_and_slow_statement_alert_goes_through_its_states() {
    let (hook, mut hooks) = webhook_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let text = sqlite_config(dir.path(), &hook);
    let s = TestServer::start_config(dir, &text).await;
    let base = s.http().await;
    let c = s.connect().await;

    // Known statements: 1 DDL, 5 extended inserts, 3 simple selects differing in a
    // literal, 2 selects of a missing table.
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await
        .unwrap();
    let insert = c.prepare("INSERT INTO t VALUES ($1, $2)").await.unwrap();
    for i in 0..5i32 {
        c.execute(&insert, &[&i, &format!("v{i}")]).await.unwrap();
    }
    for i in 0..3 {
        let msgs = c
            .simple_query(&format!("SELECT id FROM t WHERE id >= {i}"))
            .await
            .unwrap();
        let rows = msgs
            .iter()
            .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
            .count();
        assert_eq!(rows, 5 - i);
    }
    for _ in 0..2 {
        let e = c.batch_execute("SELECT v FROM missing").await.unwrap_err();
        assert_eq!(common::sqlstate(&e), "42P01");
    }

    let (status, stats) = get_json(&format!("{base}/stats")).await;
    assert_eq!(status, 200);
    let ddl = statement(&stats, "CREATE TABLE t (id int PRIMARY KEY, v text)");
    assert_eq!(
        (ddl["calls"].as_u64(), ddl["errors"].as_u64()),
        (Some(1), Some(0))
    );
    let ins = statement(&stats, "INSERT INTO t VALUES ($1, $2)");
    assert_eq!(
        (
            ins["calls"].as_u64(),
            ins["rows"].as_u64(),
            ins["errors"].as_u64()
        ),
        (Some(5), Some(5), Some(0))
    );
    let sel = statement(&stats, "SELECT id FROM t WHERE id >= $1");
    assert_eq!(
        (sel["calls"].as_u64(), sel["rows"].as_u64()),
        (Some(3), Some(5 + 4 + 3))
    );
    assert!(sel["p99_ms"].as_f64().unwrap() >= sel["p50_ms"].as_f64().unwrap());
    assert!(sel["max_time_ms"].as_f64().unwrap() >= sel["min_time_ms"].as_f64().unwrap());
    let missing = statement(&stats, "SELECT v FROM missing");
    assert_eq!(
        (missing["calls"].as_u64(), missing["errors"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(stats["totals"]["calls"], 11);
    assert_eq!(stats["totals"]["errors"], 2);
    assert_eq!(stats["databases"][0]["name"], "app");
    assert_eq!(stats["databases"][0]["backend"], "sqlite");

    let m = metrics(&base).await;
    let q = |cmd: &str| {
        sample(
            &m,
            "unidb_queries_total",
            &[("database", "app"), ("backend", "sqlite"), ("command", cmd)],
        )
    };
    assert_eq!(q("DDL"), Some(1.0));
    assert_eq!(q("INSERT"), Some(5.0));
    assert_eq!(q("SELECT"), Some(5.0));
    assert_eq!(
        sample(
            &m,
            "unidb_query_rows_total",
            &[("database", "app"), ("command", "INSERT")]
        ),
        Some(5.0)
    );
    assert_eq!(
        sample(
            &m,
            "unidb_query_errors_total",
            &[("database", "app"), ("sqlstate_class", "42")]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &m,
            "unidb_query_duration_seconds_count",
            &[("database", "app"), ("command", "SELECT")]
        ),
        Some(5.0)
    );
    assert_eq!(
        sample(&m, "unidb_client_connections", &[("database", "app")]),
        Some(1.0)
    );
    assert!(
        !m.contains("SELECT id FROM"),
        "statement text is never a label"
    );

    // A slow statement: tops the slowest list and walks the alert through its states.
    let slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) SELECT count(*) FROM c";
    let started = std::time::Instant::now();
    c.simple_query(slow).await.unwrap();
    let one = started.elapsed();
    assert!(
        one > Duration::from_millis(150),
        "the slow statement took only {one:?}; make it slower"
    );
    let runner = {
        let c2 = s.connect().await;
        tokio::spawn(async move {
            for _ in 0..6 {
                c2.simple_query(slow).await.unwrap();
            }
        })
    };
    let states = wait_alert(&base, "SlowQueries", "firing", Duration::from_secs(30)).await;
    assert!(
        states.contains(&"pending".to_string()),
        "pending before firing: {states:?}"
    );
    let fired = next_hook(&mut hooks, "SlowQueries", "firing").await;
    assert_eq!(fired["version"], "4");
    assert_eq!(fired["alerts"][0]["labels"]["severity"], "warning");
    assert_eq!(fired["alerts"][0]["labels"]["database"], "app");
    assert_eq!(fired["alerts"][0]["status"], "firing");
    assert!(fired["alerts"][0]["startsAt"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    runner.await.unwrap();
    wait_alert(&base, "SlowQueries", "resolved", Duration::from_secs(30)).await;
    let resolved = next_hook(&mut hooks, "SlowQueries", "resolved").await;
    assert_ne!(resolved["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");

    let (_, stats) = get_json(&format!("{base}/stats")).await;
    let top = &stats["slowest_by_mean"][0];
    assert!(
        top["query"]
            .as_str()
            .unwrap()
            .starts_with("WITH RECURSIVE c"),
        "slowest: {top:#}"
    );
    assert_eq!(top["calls"], 7);

    let m = metrics(&base).await;
    assert_eq!(
        sample(
            &m,
            "unidb_alert_transitions_total",
            &[("alertname", "SlowQueries"), ("state", "firing")]
        ),
        Some(1.0)
    );

    // RESET: statistics start again.
    reqwest::Client::new()
        .post(format!("{base}/stats/reset"))
        .send()
        .await
        .unwrap();
    let (_, stats) = get_json(&format!("{base}/stats")).await;
    assert_eq!(stats["totals"]["calls"], 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_rate_fires_critical_alert_and_health_turns_503() {
    let (hook, mut hooks) = webhook_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let text = sqlite_config(dir.path(), &hook);
    let s = TestServer::start_config(dir, &text).await;
    let base = s.http().await;
    let (status, health) = get_json(&format!("{base}/health")).await;
    assert_eq!(status, 200, "{health:#}");
    assert_eq!(health["status"], "excellent");
    assert_eq!(health["score"], 100.0);

    let c = s.connect().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (status, health) = loop {
        for _ in 0..10 {
            let e = c
                .batch_execute("SELECT * FROM missing_table")
                .await
                .unwrap_err();
            assert_eq!(common::sqlstate(&e), "42P01");
        }
        let (status, health) = get_json(&format!("{base}/health")).await;
        if status == 503 || tokio::time::Instant::now() > deadline {
            break (status, health);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, 503, "{health:#}");
    assert_eq!(health["status"], "critical");
    assert!(health["score"].as_f64().unwrap() < 70.0, "{health:#}");
    assert!(
        health["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "HighErrorRate" && a["state"] == "firing"),
        "{health:#}"
    );
    let hookbody = next_hook(&mut hooks, "HighErrorRate", "firing").await;
    assert_eq!(hookbody["alerts"][0]["labels"]["severity"], "critical");
    let m = metrics(&base).await;
    assert_eq!(
        sample(
            &m,
            "unidb_alert_firing",
            &[("alertname", "HighErrorRate"), ("database", "app")]
        ),
        Some(1.0)
    );
    assert!(sample(&m, "unidb_health_score", &[]).unwrap() < 70.0);

    // Successful statements bring it back.
    for _ in 0..50 {
        c.batch_execute("SELECT 1").await.unwrap();
    }
    wait_alert(&base, "HighErrorRate", "resolved", Duration::from_secs(20)).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_guards_everything_but_health() {
    let dir = tempfile::tempdir().unwrap();
    let text = common::config_text(dir.path(), "", common::APP_USER)
        .replace("[http]\n", "[http]\ntoken = \"s3cret\"\n");
    let s = TestServer::start_config(dir, &text).await;
    let base = s.http().await;
    crypto();
    let http = reqwest::Client::new();
    for path in ["/metrics", "/stats", "/alerts", "/"] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path}");
        let r = http
            .get(format!("{base}{path}"))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path}");
        let r = http
            .get(format!("{base}{path}"))
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    let r = http.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = http
        .get(format!("{base}/?token=s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().await.unwrap().contains("<canvas"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_counts_slow_statement_and_pool_alert() {
    let pg = PgCluster::start("");
    let keys = "pool_size = 2\nmax_client_wait = \"3s\"";
    let dir = tempfile::tempdir().unwrap();
    let text = common::pg::pooler_text(
        &pg.app_url(),
        &format!("{keys}\n{FAST_RULES}"),
        "",
        "[observe]\neval_interval = \"100ms\"",
        common::APP_USER,
    );
    let s = TestServer::start_config(dir, &text).await;
    let base = s.http().await;
    let c = s.connect().await;
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await
        .unwrap();
    let insert = c.prepare("INSERT INTO t VALUES ($1, $2)").await.unwrap();
    for i in 0..4i32 {
        c.execute(&insert, &[&i, &"x"]).await.unwrap();
    }
    for i in 0..3 {
        c.simple_query(&format!("SELECT * FROM t WHERE id < {i}"))
            .await
            .unwrap();
    }
    let e = c.batch_execute("SELECT 1 / 0").await.unwrap_err();
    assert_eq!(common::sqlstate(&e), "22012");
    let rows = c.query("SELECT id FROM t ORDER BY id", &[]).await.unwrap();
    assert_eq!(rows.len(), 4);

    let (_, stats) = get_json(&format!("{base}/stats")).await;
    let ins = statement(&stats, "INSERT INTO t VALUES ($1, $2)");
    assert_eq!(
        (ins["calls"].as_u64(), ins["rows"].as_u64()),
        (Some(4), Some(4))
    );
    let sel = statement(&stats, "SELECT * FROM t WHERE id < $1");
    assert_eq!(
        (sel["calls"].as_u64(), sel["rows"].as_u64()),
        (Some(3), Some(3))
    );
    let div = statement(&stats, "SELECT $1 / $2");
    assert_eq!(
        (div["calls"].as_u64(), div["errors"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(statement(&stats, "SELECT id FROM t ORDER BY id")["rows"], 4);
    assert_eq!(stats["databases"][0]["backend"], "postgres");
    assert_eq!(stats["databases"][0]["pool"]["size"], 2);

    let m = metrics(&base).await;
    let q = |cmd: &str| {
        sample(
            &m,
            "unidb_queries_total",
            &[
                ("database", "app"),
                ("backend", "postgres"),
                ("command", cmd),
            ],
        )
    };
    assert_eq!(q("INSERT"), Some(4.0));
    assert_eq!(q("SELECT"), Some(5.0));
    assert_eq!(q("DDL"), Some(1.0));
    assert_eq!(
        sample(
            &m,
            "unidb_query_errors_total",
            &[("backend", "postgres"), ("sqlstate_class", "22")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "unidb_backend_up", &[("database", "app")]),
        Some(1.0)
    );

    // pg_sleep tops the slowest list.
    c.batch_execute("SELECT pg_sleep(0.3)").await.unwrap();
    let (_, stats) = get_json(&format!("{base}/stats")).await;
    let top = &stats["slowest_by_mean"][0];
    assert_eq!(top["query"], "SELECT pg_sleep($1)");
    assert!(top["mean_time_ms"].as_f64().unwrap() >= 300.0, "{top:#}");

    // Pool exhaustion: two open transactions hold both servers.
    let a = s.connect().await;
    let b = s.connect().await;
    a.batch_execute("BEGIN; SELECT 1").await.unwrap();
    b.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let states = wait_alert(&base, "PoolSaturated", "firing", Duration::from_secs(20)).await;
    assert!(states.contains(&"pending".to_string()), "{states:?}");
    let (_, stats) = get_json(&format!("{base}/stats")).await;
    assert_eq!(stats["databases"][0]["pool"]["active"], 2);
    let m = metrics(&base).await;
    assert_eq!(
        sample(&m, "unidb_pool_usage_ratio", &[("database", "app")]),
        Some(1.0)
    );
    // A third client waits, then gets 53300: counted as an error.
    let e = c.batch_execute("SELECT 2").await.unwrap_err();
    assert_eq!(common::sqlstate(&e), "53300");
    a.batch_execute("COMMIT").await.unwrap();
    b.batch_execute("COMMIT").await.unwrap();
    wait_alert(&base, "PoolSaturated", "resolved", Duration::from_secs(20)).await;
    let m = metrics(&base).await;
    assert_eq!(
        sample(
            &m,
            "unidb_query_errors_total",
            &[("backend", "postgres"), ("sqlstate_class", "53")]
        ),
        Some(1.0)
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_metrics_and_rules() {
    let s = TestServer::start().await;
    let base = s.http().await;
    let c = s.connect().await;
    c.batch_execute("CREATE TABLE t (a int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let _ = c.batch_execute("SELECT nope").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let text = metrics(&base).await;
    assert!(text.contains("unidb_query_duration_seconds_bucket"));
    let path = s.dir.path().join("metrics.txt");
    std::fs::write(&path, &text).unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {}", path.display()))
        .output()
        .expect("promtool (Debian package prometheus) must be installed: scripts/test.sh does");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/config/prometheus-alerts.yml");
    let tests = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/prometheus-alerts.test.yml"
    );
    for args in [vec!["check", "rules", rules], vec!["test", "rules", tests]] {
        let out = std::process::Command::new("promtool")
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    s.stop().await;
}

/// The dashboard in headless Chromium while pgbench loads unidb (PostgreSQL
/// backend): no console errors, charts with points, a populated slowest table.
/// The screenshot is kept in target/dashboard/dashboard.png.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_renders_live_data_under_pgbench_load() {
    let pg = PgCluster::start("");
    let s = common::pg::pooler(&pg.app_url(), "pool_size = 4").await;
    let base = s.http().await;
    let port = s.addr.port();
    let init = common::pgbench(port, &["-i", "-s", "1", "-q"])
        .wait_with_output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let load = common::pgbench(port, &["-n", "-S", "-c", "4", "-j", "2", "-T", "12"]);
    tokio::time::sleep(Duration::from_secs(5)).await;

    let out_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/target/dashboard");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dashboard/check.sh");
    let url = format!("{base}/");
    let check = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .args([script, &url, out_dir])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout).to_string();
    assert!(
        check.status.success(),
        "dashboard check: {stdout}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    println!("{stdout}");
    let dom = std::fs::read_to_string(format!("{out_dir}/dom.html")).unwrap();
    let attr = |id: &str, name: &str| -> f64 {
        let at = dom
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("no #{id}"));
        let tag_start = dom[..at].rfind('<').unwrap();
        let tag = &dom[tag_start..tag_start + dom[tag_start..].find('>').unwrap()];
        let key = format!("{name}=\"");
        let v = &tag[tag
            .find(&key)
            .unwrap_or_else(|| panic!("#{id} lacks {name}: {tag}"))
            + key.len()..];
        v[..v.find('"').unwrap()].parse().unwrap()
    };
    assert!(attr("throughput-chart", "data-points") >= 3.0);
    assert!(
        attr("throughput-chart", "data-max") > 10.0,
        "queries/s plotted"
    );
    assert!(attr("latency-chart", "data-points") >= 3.0);
    assert!(attr("slowest", "data-rows") >= 1.0);
    assert!(
        dom.contains("SELECT abalance FROM pgbench_accounts WHERE aid = $1"),
        "pgbench's statement in the table"
    );
    let png = std::fs::metadata(format!("{out_dir}/dashboard.png")).unwrap();
    assert!(png.len() > 10_000, "a real screenshot");

    let out = load.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("number of failed transactions: 0 "),
        "{stdout}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_near_limit_fires_for_a_small_limit() {
    let dir = tempfile::tempdir().unwrap();
    let text = common::config_text(dir.path(), "", common::APP_USER)
        .replace("readers = 3", "readers = 1\nstorage_limit = \"8KiB\"")
        .replace(
            "[http]\n",
            "[observe]\neval_interval = \"100ms\"\n\n[http]\n",
        );
    let s = TestServer::start_config(dir, &text).await;
    let base = s.http().await;
    let c = s.connect().await;
    c.batch_execute("CREATE TABLE big (v text)").await.unwrap();
    for i in 0..200 {
        c.execute(
            "INSERT INTO big VALUES ($1)",
            &[&format!("row {i} {}", "y".repeat(100))],
        )
        .await
        .unwrap();
    }
    wait_alert(&base, "StorageNearLimit", "firing", Duration::from_secs(20)).await;
    let m = metrics(&base).await;
    assert!(sample(&m, "unidb_storage_bytes", &[("database", "app")]).unwrap() > 8192.0);
    assert_eq!(
        sample(&m, "unidb_storage_limit_bytes", &[("database", "app")]),
        Some(8192.0)
    );
    s.stop().await;
}

/// Another process takes SQLite's write lock on `path` and holds it for `secs`
/// seconds; returns once it holds it.
fn lock_file(path: &std::path::Path, secs: f64) -> std::process::Child {
    let mut holder = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys, time\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('BEGIN EXCLUSIVE')\n\
             print('locked', flush=True)\n\
             time.sleep(float(sys.argv[2]))\n\
             c.execute('COMMIT')\n",
        )
        .arg(path)
        .arg(secs.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with its sqlite3 module");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");
    holder
}

/// A write outside a transaction that finds the SQLite file locked by another
/// process past busy_timeout is retried and succeeds; the retry is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_busy_outside_a_transaction_is_retried_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("app.db");
    let text = common::config_text(dir.path(), "", common::APP_USER).replace(
        "busy_timeout = \"2s\"",
        "busy_timeout = \"300ms\"\nretry_attempts = 5",
    );
    let s = TestServer::start_config(dir, &text).await;
    let base = s.http().await;
    let c = s.connect().await;
    c.batch_execute("CREATE TABLE t (a int)").await.unwrap();

    // Another process holds the write lock for 0.9 s: longer than busy_timeout.
    let mut holder = lock_file(&db_path, 0.9);
    let started = std::time::Instant::now();
    c.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "the insert had to wait for the other process"
    );
    assert!(holder.wait().unwrap().success());
    assert_eq!(common::count(&c, "t").await, 1);
    let m = metrics(&base).await;
    let retries = sample(
        &m,
        "unidb_retries_total",
        &[("database", "app"), ("reason", "busy")],
    )
    .expect("retries counted");
    assert!(retries >= 1.0, "{retries}");

    // Inside an explicit transaction the error goes to the client.
    let mut holder = lock_file(&db_path, 1.5);
    let e = c
        .batch_execute("BEGIN; INSERT INTO t VALUES (2); COMMIT")
        .await
        .unwrap_err();
    assert_eq!(common::sqlstate(&e), "55P03");
    assert!(holder.wait().unwrap().success());
    s.stop().await;
}
