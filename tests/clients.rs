//! Real client drivers (psql, psycopg 3, asyncpg, pgjdbc, SQLAlchemy 2 on psycopg,
//! node-postgres) run their check scripts
//! (tests/clients/) through unidb: in transaction-pooling mode in front of a real
//! PostgreSQL, with server-side prepared statements used across transactions that
//! land on different server connections; and against unidb serving a SQLite file,
//! where the same scripts run unchanged but for the documented differences
//! (`UNIDB_BACKEND=sqlite`: timestamptz printed in UTC, numeric kept in REAL).

mod common;

use common::pg::{pooler, PgCluster};

async fn run_client(name: &str) {
    let cluster = PgCluster::start("");
    // Two server connections for several transactions: statements must follow
    // the client from one server to the other.
    let server = pooler(
        &cluster.app_url(),
        "pool_mode = \"transaction\"\npool_size = 2",
    )
    .await;
    // A second client keeps switching the servers under the script's feet.
    let noise = server.connect().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let noise_task = tokio::spawn(async move {
        let mut n = 0u64;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            noise
                .query_one("SELECT pg_backend_pid()", &[])
                .await
                .unwrap();
            n += 1;
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        n
    });
    run_script(name, server.addr.port(), "postgres").await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let noise_queries = noise_task.await.unwrap();
    assert!(noise_queries > 0);
    server.stop().await;
}

/// Runs one client's script against unidb at `port`; it must pass every check.
async fn run_script(name: &str, port: u16, backend: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/run.sh");
    let output = tokio::process::Command::new("bash")
        .arg(script)
        .arg(name)
        .env("UNIDB_HOST", "127.0.0.1")
        .env("UNIDB_PORT", port.to_string())
        .env("UNIDB_USER", "app")
        .env("UNIDB_PASSWORD", "app")
        .env("UNIDB_DB", "app")
        .env("UNIDB_BACKEND", backend)
        .output()
        .await
        .expect("bash");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{name} client on {backend} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("all checks passed"),
        "{name} on {backend}: no success line:\n{stdout}\n{stderr}"
    );
}

/// The same script against unidb serving a SQLite file.
async fn run_client_sqlite(name: &str) {
    let server = common::TestServer::start().await;
    run_script(name, server.addr.port(), "sqlite").await;
    server.stop().await;
}

#[tokio::test]
async fn psql_script() {
    run_client("psql").await;
}

#[tokio::test]
async fn psycopg3_script() {
    run_client("psycopg").await;
}

#[tokio::test]
async fn asyncpg_script() {
    run_client("asyncpg").await;
}

#[tokio::test]
async fn pgjdbc_script() {
    run_client("jdbc").await;
}

#[tokio::test]
async fn psql_script_on_sqlite() {
    run_client_sqlite("psql").await;
}

#[tokio::test]
async fn psycopg3_script_on_sqlite() {
    run_client_sqlite("psycopg").await;
}

#[tokio::test]
async fn asyncpg_script_on_sqlite() {
    run_client_sqlite("asyncpg").await;
}

#[tokio::test]
async fn pgjdbc_script_on_sqlite() {
    run_client_sqlite("jdbc").await;
}

#[tokio::test]
async fn sqlalchemy_script() {
    run_client("sqlalchemy").await;
}

#[tokio::test]
async fn sqlalchemy_script_on_sqlite() {
    run_client_sqlite("sqlalchemy").await;
}

#[tokio::test]
async fn node_postgres_script() {
    run_client("node").await;
}

#[tokio::test]
async fn node_postgres_script_on_sqlite() {
    run_client_sqlite("node").await;
}
