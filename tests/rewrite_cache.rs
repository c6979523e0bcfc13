//! The rewrite cache on the SQLite backend: once a statement has been planned, running
//! it again — prepared, as an unnamed extended-protocol statement, or as simple-query
//! text that differs only in its literals — parses nothing. The cache's counters are
//! also served as `unidb_plan_cache_lookups_total`.

mod common;

use common::TestServer;
use unidb::server::Database;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_statements_are_never_parsed_again() {
    let server = TestServer::start().await;
    let db = match server.state.databases.get("app") {
        Some(Database::Sqlite(db)) => db.clone(),
        _ => panic!("database app is SQLite"),
    };
    let c = server.connect().await;
    c.batch_execute("CREATE TABLE items (id int PRIMARY KEY, label text, score float8)")
        .await
        .unwrap();
    let select = "SELECT label, score FROM items WHERE id = $1";
    let prepared = c.prepare(select).await.unwrap();
    // Each shape once: these are the only parses.
    c.simple_query("INSERT INTO items VALUES (0, 'zero', 0.5)")
        .await
        .unwrap();
    c.simple_query("SELECT label FROM items WHERE id = 0 AND score > 0.25")
        .await
        .unwrap();
    c.query(select, &[&0i32]).await.unwrap();
    let warm = db.plans().counts();

    for i in 1..=200i32 {
        c.simple_query(&format!(
            "INSERT INTO items VALUES ({i}, 'item {i}', {}.5)",
            i % 7
        ))
        .await
        .unwrap();
        c.simple_query(&format!(
            "SELECT label FROM items WHERE id = {i} AND score > {}.25",
            i % 3
        ))
        .await
        .unwrap();
        let row = c.query_one(&prepared, &[&i]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), format!("item {i}"));
        let rows = c.query(select, &[&i]).await.unwrap();
        assert_eq!(rows.len(), 1);
    }
    let after = db.plans().counts();
    assert_eq!(
        after.parses, warm.parses,
        "a repeated statement was parsed again"
    );
    // Simple INSERT, simple SELECT and the unnamed extended SELECT each looked the
    // plan up 200 times (the named prepared statement keeps its plan).
    assert_eq!(after.hits - warm.hits, 600);

    // The counters reach /metrics on the next evaluation tick.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let metric = "unidb_plan_cache_lookups_total{database=\"app\",result=\"hit\"} ";
    let mut served = 0;
    for _ in 0..50 {
        let text = reqwest::get(format!("{}/metrics", server.http().await))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        served = text
            .lines()
            .find_map(|l| l.strip_prefix(metric))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no plan cache counter in /metrics:\n{text}"));
        if served >= after.hits {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(served, after.hits);
    server.stop().await;
}
