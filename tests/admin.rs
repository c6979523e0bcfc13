//! The admin console (virtual database `unidb`) through psql, PAUSE/RESUME under
//! pgbench load against a real PostgreSQL, RELOAD, and the `unidb health` CLI.

mod common;

use std::process::Command;
use std::time::Duration;

use common::pg::PgCluster;
use common::{pgbench, TestServer};

const USERS: &str = r#"
[[users]]
name = "app"
password = "app"

[[users]]
name = "boss"
password = "b0ss"
"#;

/// Runs psql against unidb as `user` on database `db`; returns (success, stdout, stderr).
fn psql(port: u16, user: &str, password: &str, db: &str, sql: &str) -> (bool, String, String) {
    let out = Command::new("psql")
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            user,
            "-d",
            db,
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-P",
            "pager=off",
            "-c",
            sql,
        ])
        .output()
        .expect("psql (apt-get install postgresql-client)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn console(port: u16, sql: &str) -> String {
    let (ok, out, err) = psql(port, "boss", "b0ss", "unidb", sql);
    assert!(ok, "psql {sql:?}: {err}");
    out
}

fn config(url: &str, keys: &str) -> String {
    common::pg::pooler_text(
        url,
        keys,
        "admin_users = [\"boss\"]",
        "[observe]\neval_interval = \"100ms\"",
        USERS,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_shows_pools_stats_clients_servers_queries() {
    let pg = PgCluster::start("");
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_config(dir, &config(&pg.app_url(), "pool_size = 3")).await;
    let port = s.addr.port();
    let c = s.connect().await;
    c.batch_execute("CREATE TABLE t (a int)").await.unwrap();
    for i in 0..3 {
        c.execute("INSERT INTO t VALUES ($1)", &[&i]).await.unwrap();
    }
    // A client inside a transaction holds a server: SHOW SERVERS lists it active.
    let held = s.connect().await;
    held.batch_execute("BEGIN; SELECT 1").await.unwrap();

    let out = tokio::task::spawn_blocking(move || {
        let pools = console(port, "SHOW POOLS");
        let stats = console(port, "SHOW STATS");
        let clients = console(port, "SHOW CLIENTS");
        let servers = console(port, "SHOW SERVERS");
        let queries = console(port, "SHOW QUERIES");
        let dbs = console(port, "SHOW DATABASES");
        let cfg = console(port, "SHOW CONFIG");
        let alerts = console(port, "SHOW ALERTS");
        let health = console(port, "SHOW HEALTH");
        (
            pools, stats, clients, servers, queries, dbs, cfg, alerts, health,
        )
    })
    .await
    .unwrap();
    let (pools, stats, clients, servers, queries, dbs, cfg, alerts, health) = out;
    for col in [
        "cl_active",
        "cl_waiting",
        "sv_active",
        "sv_idle",
        "maxwait",
        "pool_mode",
    ] {
        assert!(pools.contains(col), "SHOW POOLS lacks {col}:\n{pools}");
    }
    let app_pool = pools
        .lines()
        .find(|l| l.trim_start().starts_with("app"))
        .unwrap();
    let cells: Vec<&str> = app_pool.split('|').map(str::trim).collect();
    assert_eq!(cells[4], "1", "one active server: {app_pool}");
    assert_eq!(cells[11], "transaction");

    assert!(stats.contains("total_query_count"), "{stats}");
    let app_stats = stats
        .lines()
        .find(|l| l.trim_start().starts_with("app"))
        .unwrap();
    let cells: Vec<&str> = app_stats.split('|').map(str::trim).collect();
    // CREATE, 3 INSERTs, BEGIN; SELECT 1 (one simple query).
    assert_eq!(cells[1], "5", "total_query_count: {app_stats}");

    let client_rows: Vec<&str> = clients.lines().filter(|l| l.contains("| app ")).collect();
    assert_eq!(client_rows.len(), 2, "{clients}");
    assert!(
        clients.contains("| unidb "),
        "the console's own client: {clients}"
    );
    assert!(clients.contains("127.0.0.1"), "{clients}");
    assert!(
        client_rows.iter().any(|l| l.contains("| active")),
        "the client in a transaction is active: {clients}"
    );

    assert!(servers.contains("remote_pid"), "{servers}");
    let active: Vec<&str> = servers.lines().filter(|l| l.contains("| active")).collect();
    assert_eq!(active.len(), 1, "{servers}");
    let remote: i32 = active[0].split('|').nth(8).unwrap().trim().parse().unwrap();
    let backend = held
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get::<_, i32>(0);
    assert_eq!(remote, backend, "the server pid is the upstream backend's");

    assert!(queries.contains("INSERT INTO t VALUES ($1)"), "{queries}");
    let ins = queries.lines().find(|l| l.contains("INSERT INTO")).unwrap();
    assert_eq!(ins.split('|').nth(2).unwrap().trim(), "3", "{ins}");

    assert!(
        dbs.contains("postgres") && dbs.contains("pool_size"),
        "{dbs}"
    );
    assert!(cfg.contains("server.admin_users"), "{cfg}");
    assert!(!cfg.contains("b0ss"), "passwords are masked: {cfg}");
    assert!(alerts.contains("HighErrorRate"), "{alerts}");
    assert!(health.contains("score"), "{health}");

    // Unknown command and non-admin user.
    let (ok, _, err) = psql(port, "boss", "b0ss", "unidb", "SHOW NOTHING");
    assert!(
        !ok && err.contains("unknown admin console command"),
        "{err}"
    );
    let (ok, _, err) = psql(port, "app", "app", "unidb", "SHOW POOLS");
    assert!(!ok, "a non-admin user is refused");
    assert!(err.contains("may not use the admin console"), "{err}");
    let e = s.try_connect("app", "app", "unidb").await.err().unwrap();
    assert_eq!(common::sqlstate(&e), "42501");

    // RESET STATS empties the statement table.
    console(port, "RESET STATS");
    let queries = tokio::task::spawn_blocking(move || console(port, "SHOW QUERIES"))
        .await
        .unwrap();
    assert!(!queries.contains("INSERT INTO"), "{queries}");
    held.batch_execute("COMMIT").await.unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_new_transactions_and_resume_releases_them_under_load() {
    let pg = PgCluster::start("");
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_config(dir, &config(&pg.app_url(), "pool_size = 4")).await;
    let port = s.addr.port();
    let init = pgbench(port, &["-i", "-s", "1", "-q"])
        .wait_with_output()
        .unwrap();
    assert!(
        init.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let load = pgbench(port, &["-n", "-c", "4", "-j", "2", "-T", "8"]);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let paused_at = std::time::Instant::now();
    let out = tokio::task::spawn_blocking(move || console(port, "PAUSE app"))
        .await
        .unwrap();
    assert!(out.contains("PAUSE"), "{out}");
    // While paused: no server is in use and a new transaction waits.
    let (_, stats) = (0, s.state.observer.stats_json());
    assert_eq!(stats["databases"][0]["name"], "app");
    let pools = tokio::task::spawn_blocking(move || console(port, "SHOW POOLS"))
        .await
        .unwrap();
    let app = pools
        .lines()
        .find(|l| l.trim_start().starts_with("app"))
        .unwrap();
    assert_eq!(
        app.split('|').nth(4).unwrap().trim(),
        "0",
        "sv_active while paused: {app}"
    );
    assert!(app.trim_end().ends_with("true"), "paused column: {app}");
    let c = s.connect().await;
    let waiting = tokio::spawn(async move { c.query_one("SELECT 42", &[]).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !waiting.is_finished(),
        "a new transaction must wait while paused"
    );
    tokio::task::spawn_blocking(move || console(port, "RESUME app"))
        .await
        .unwrap();
    let row = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("RESUME releases the waiting transaction")
        .unwrap()
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    assert!(paused_at.elapsed() >= Duration::from_millis(1500));

    let out = load.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pgbench under PAUSE/RESUME: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let processed: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no transaction count in {stdout}"));
    assert!(processed > 100, "{stdout}");
    let failed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of failed transactions: "))
        .unwrap_or_else(|| panic!("no failure count in {stdout}"));
    assert!(failed.starts_with("0 "), "failed transactions: {failed}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_pause_and_reload_and_health_cli() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("unidb.toml");
    let text = common::config_text(dir.path(), "admin_users = [\"boss\"]", USERS);
    std::fs::write(&path, &text).unwrap();
    let s = TestServer::start_config(dir, &text).await;
    s.state.config_path.set(path.clone()).unwrap();
    let port = s.addr.port();
    let c = s.connect().await;
    c.batch_execute("CREATE TABLE t (a int)").await.unwrap();

    // An open write transaction makes PAUSE wait for it.
    c.batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let pause = tokio::task::spawn_blocking(move || console(port, "PAUSE"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!pause.is_finished(), "PAUSE waits for the open transaction");
    c.batch_execute("COMMIT").await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), pause)
        .await
        .expect("PAUSE returns once the transaction ended")
        .unwrap();
    let c2 = s.connect().await;
    let waiting = tokio::spawn(async move { c2.query_one("SELECT count(*) FROM t", &[]).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished());
    tokio::task::spawn_blocking(move || console(port, "RESUME"))
        .await
        .unwrap();
    let n: i64 = waiting.await.unwrap().unwrap().get(0);
    assert_eq!(n, 1);

    // RELOAD: a new user can log in without a restart; a broken file changes nothing.
    let e = s.try_connect("carol", "c4rol", "app").await.err().unwrap();
    assert_eq!(common::sqlstate(&e), "28P01");
    std::fs::write(
        &path,
        text.replace(
            "[[users]]\nname = \"boss\"",
            "[[users]]\nname = \"carol\"\npassword = \"c4rol\"\n\n[[users]]\nname = \"boss\"",
        ),
    )
    .unwrap();
    tokio::task::spawn_blocking(move || console(port, "RELOAD"))
        .await
        .unwrap();
    s.try_connect("carol", "c4rol", "app").await.unwrap();
    std::fs::write(&path, "[server]\nlisten = 5").unwrap();
    let (ok, _, err) =
        tokio::task::spawn_blocking(move || psql(port, "boss", "b0ss", "unidb", "RELOAD"))
            .await
            .unwrap();
    assert!(!ok && err.contains("reload failed"), "{err}");
    s.try_connect("carol", "c4rol", "app").await.unwrap();
    c.query_one("SELECT 1", &[]).await.unwrap();

    // `unidb health` against the running server.
    let base = s.http().await;
    let out = Command::new(env!("CARGO_BIN_EXE_unidb"))
        .args(["health", "--url", &base])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("status: excellent"), "{stdout}");
    let out = Command::new(env!("CARGO_BIN_EXE_unidb"))
        .args(["health", "--url", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    s.stop().await;
}
