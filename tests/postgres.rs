//! The PostgreSQL backend: unidb relaying to a real PostgreSQL 15 cluster that each
//! test starts, with tokio-postgres as the client.

mod common;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::pg::PgCluster;
use common::{sqlstate, TestServer};

/// unidb in front of `cluster` as database `app` with the given pool settings.
async fn proxy(cluster: &PgCluster, pool: &str) -> TestServer {
    common::pg::pooler(&cluster.app_url(), pool).await
}

/// The same, trusting its clients (for raw-protocol sessions).
async fn trusting_proxy(cluster: &PgCluster, pool: &str) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let text = common::pg::pooler_text(
        &cluster.app_url(),
        pool,
        "auth = \"trust\"",
        "",
        common::APP_USER,
    );
    TestServer::start_config(dir, &text).await
}

/// The server's message of a database error, or the client's description.
fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_string())
}

async fn backend_pid(c: &tokio_postgres::Client) -> i32 {
    c.query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn transaction_mode_shares_servers_and_keeps_prepared_statements() {
    let cluster = PgCluster::start("");
    let server = proxy(&cluster, "pool_size = 3").await;
    let setup = server.connect().await;
    setup
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'one'), (2, 'two')")
        .await
        .unwrap();

    // Five clients over three servers: each client's named statements must work
    // on whichever server runs its next transaction.
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(server.connect().await);
    }
    let mut stmts = Vec::new();
    for c in &clients {
        stmts.push(c.prepare("SELECT v FROM t WHERE id = $1").await.unwrap());
    }
    let mut pids = std::collections::HashSet::new();
    for round in 0..20 {
        let mut tasks = Vec::new();
        for (c, s) in clients.iter().zip(&stmts) {
            let id = 1 + (round % 2);
            tasks.push(async move {
                let row = c.query_one(s, &[&id]).await.unwrap();
                let v: String = row.get(0);
                (v, backend_pid(c).await)
            });
        }
        for (i, (v, pid)) in futures_util::future::join_all(tasks)
            .await
            .into_iter()
            .enumerate()
        {
            assert_eq!(v, if round % 2 == 0 { "one" } else { "two" }, "client {i}");
            pids.insert(pid);
        }
    }
    assert!(
        pids.len() > 1,
        "transactions ran on one server only: {pids:?}"
    );
    assert!(pids.len() <= 3, "more servers than pool_size: {pids:?}");

    // A transaction stays on one server from BEGIN to COMMIT.
    let c = &clients[0];
    c.batch_execute("BEGIN").await.unwrap();
    let p1 = backend_pid(c).await;
    c.execute("INSERT INTO t VALUES (3, 'three')", &[])
        .await
        .unwrap();
    let p2 = backend_pid(c).await;
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(p1, p2);
    assert_eq!(common::count(c, "t").await, 3);

    // Errors pass through with their SQLSTATE, and the client carries on.
    let e = c
        .query("SELECT * FROM missing_table", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42P01");
    let e = c
        .execute("INSERT INTO t VALUES (1, 'dup')", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "23505");
    // A statement that fails to parse leaves no trace of its name.
    assert!(c.prepare("SELEC 1").await.is_err());
    let s = c.prepare("SELECT count(*) FROM t").await.unwrap();
    let n: i64 = c.query_one(&s, &[]).await.unwrap().get(0);
    assert_eq!(n, 3);
    server.stop().await;
}

#[tokio::test]
async fn session_mode_keeps_one_server_and_resets_it() {
    let cluster = PgCluster::start("");
    let server = proxy(&cluster, "pool_mode = \"session\"\npool_size = 1").await;
    let a = server.connect().await;
    let pid = backend_pid(&a).await;
    a.batch_execute("SET application_name = 'first'; PREPARE q AS SELECT 42")
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(backend_pid(&a).await, pid);
    }
    let n: i32 = a.query_one("EXECUTE q", &[]).await.unwrap().get(0);
    assert_eq!(n, 42);
    drop(a);
    // The single server goes to the next client only after DISCARD ALL.
    let b = server.connect().await;
    let mut tries = 0;
    let pid_b = loop {
        match tokio::time::timeout(Duration::from_secs(5), backend_pid(&b)).await {
            Ok(p) => break p,
            Err(_) => {
                tries += 1;
                assert!(tries < 3, "second client never got the server");
            }
        }
    };
    assert_eq!(pid_b, pid, "pool_size 1 must reuse the server");
    let name: String = b
        .query_one("SHOW application_name", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(name, "first");
    let e = b.query("EXECUTE q", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "26000");
    server.stop().await;
}

#[tokio::test]
async fn session_settings_follow_the_client_across_servers() {
    let cluster = PgCluster::start("");
    let server = proxy(&cluster, "pool_size = 2").await;
    let a = server.connect().await;
    let b = server.connect().await;
    a.batch_execute("SET application_name = 'client_a'")
        .await
        .unwrap();
    a.batch_execute("SET TimeZone TO 'Asia/Tokyo'")
        .await
        .unwrap();
    b.batch_execute("SET application_name = 'client_b'")
        .await
        .unwrap();
    // Interleave so that each client lands on both servers.
    let mut pids_a = std::collections::HashSet::new();
    for _ in 0..10 {
        let (ra, rb) = tokio::join!(
            a.query_one("SELECT current_setting('application_name'), current_setting('TimeZone'), pg_backend_pid()", &[]),
            b.query_one("SELECT current_setting('application_name'), current_setting('TimeZone')", &[]),
        );
        let ra = ra.unwrap();
        let rb = rb.unwrap();
        assert_eq!(ra.get::<_, String>(0), "client_a");
        assert_eq!(ra.get::<_, String>(1), "Asia/Tokyo");
        pids_a.insert(ra.get::<_, i32>(2));
        assert_eq!(rb.get::<_, String>(0), "client_b");
        assert_ne!(rb.get::<_, String>(1), "Asia/Tokyo");
        // Occupy a server with b while a runs, so a moves.
        let tx = b.query_one("SELECT 1", &[]);
        let _ = tokio::join!(tx, a.query_one("SELECT 1", &[]));
    }
    // A SET in a rolled-back transaction is undone; in a committed one it stays.
    a.batch_execute("BEGIN").await.unwrap();
    a.batch_execute("SET statement_timeout = '41s'")
        .await
        .unwrap();
    a.batch_execute("ROLLBACK").await.unwrap();
    a.batch_execute("BEGIN").await.unwrap();
    a.execute("SET work_mem = '5MB'", &[]).await.unwrap();
    a.batch_execute("COMMIT").await.unwrap();
    for _ in 0..4 {
        let (ra, _) = tokio::join!(
            a.query_one(
                "SELECT current_setting('statement_timeout'), current_setting('work_mem')",
                &[]
            ),
            b.query_one("SELECT pg_sleep(0.01)::text", &[]),
        );
        let ra = ra.unwrap();
        assert_eq!(ra.get::<_, String>(0), "0");
        assert_eq!(ra.get::<_, String>(1), "5MB");
    }
    a.batch_execute("RESET TimeZone").await.unwrap();
    let tz: String = a.query_one("SHOW TimeZone", &[]).await.unwrap().get(0);
    assert_ne!(tz, "Asia/Tokyo");
    let name: String = a
        .query_one("SHOW application_name", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "client_a");
    server.stop().await;
}

#[tokio::test]
async fn set_can_be_refused_in_transaction_mode() {
    let cluster = PgCluster::start("");
    let server = proxy(&cluster, "session_set = \"refuse\"").await;
    let c = server.connect().await;
    let e = c.batch_execute("SET search_path = x").await.unwrap_err();
    assert_eq!(sqlstate(&e), "0A000");
    let msg = e.as_db_error().unwrap().message().to_string();
    assert!(msg.contains("transaction pooling"), "{msg}");
    c.batch_execute("BEGIN; SET LOCAL search_path = x; COMMIT")
        .await
        .unwrap();
    let one: i32 = c.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    server.stop().await;

    // A SET refused in the middle of an extended-protocol batch fails the whole
    // batch, as an error there would: the INSERT before it is rolled back.
    let server = trusting_proxy(
        &cluster,
        "pool_mode = \"transaction\"\nsession_set = \"refuse\"",
    )
    .await;
    let c = server.connect().await;
    c.batch_execute("CREATE TABLE refused_batch (i int)")
        .await
        .unwrap();
    let mut tcp = common::raw_session(&server).await;
    let mut batch = parse_unnamed_then_sync("INSERT INTO refused_batch VALUES (1)");
    batch.truncate(batch.len() - 5);
    batch.extend(bind_unnamed_execute_sync());
    batch.truncate(batch.len() - 5);
    batch.extend(parse_unnamed_then_sync("SET search_path = x"));
    tcp.write_all(&batch).await.unwrap();
    let r = read_messages_until(&mut tcp, b'Z').await;
    let types: Vec<u8> = r.iter().map(|m| m.0).collect();
    assert_eq!(types, b"12CEZ", "{r:?}");
    assert_eq!(error_code(&r).as_deref(), Some("0A000"));
    assert_eq!(common::count(&c, "refused_batch").await, 0);
    // The session goes on.
    tcp.write_all(&query_message("SELECT 'after'"))
        .await
        .unwrap();
    assert_eq!(
        first_value(&read_messages_until(&mut tcp, b'Z').await),
        "after"
    );

    // A refusal pipelined behind a BEGIN reports the transaction status the
    // BEGIN left (not the one from before it), as a simple query and as an
    // extended-protocol batch.
    let mut pipelined = query_message("BEGIN");
    pipelined.extend(query_message("SET search_path = x"));
    pipelined.extend(parse_unnamed_then_sync("SET search_path = y"));
    pipelined.extend(query_message("COMMIT"));
    tcp.write_all(&pipelined).await.unwrap();
    let batches = read_batches(&mut tcp, 4).await;
    let shape: Vec<(Vec<u8>, u8)> = batches
        .iter()
        .map(|b| {
            let types = b.iter().map(|m| m.0).collect();
            let status = b.last().map_or(0, |m| m.1[0]);
            (types, status)
        })
        .collect();
    assert_eq!(
        shape,
        [
            (b"CZ".to_vec(), b'T'),
            (b"EZ".to_vec(), b'T'),
            (b"EZ".to_vec(), b'T'),
            (b"CZ".to_vec(), b'I'),
        ],
        "{batches:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn copy_both_ways_and_large_results_stream() {
    use bytes::Bytes;
    use futures_util::{SinkExt, StreamExt};
    let cluster = PgCluster::start("");
    let server = proxy(&cluster, "pool_size = 2").await;
    let c = server.connect().await;
    c.batch_execute("CREATE TABLE c (id int, name text)")
        .await
        .unwrap();
    let sink = c.copy_in("COPY c FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    let mut data = String::new();
    for i in 0..10_000 {
        data.push_str(&format!("{i}\tname {i}\n"));
    }
    sink.send(Bytes::from(data.clone())).await.unwrap();
    let n = sink.finish().await.unwrap();
    assert_eq!(n, 10_000);
    let stream = c.copy_out("COPY c TO STDOUT").await.unwrap();
    futures_util::pin_mut!(stream);
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(String::from_utf8(out).unwrap(), data);

    // About 10 MB of rows; the client reads them as they come.
    let rows = c
        .query_raw(
            "SELECT repeat('x', 1000) FROM generate_series(1, 10000)",
            std::iter::empty::<i32>(),
        )
        .await
        .unwrap();
    futures_util::pin_mut!(rows);
    let mut total = 0usize;
    while let Some(row) = rows.next().await {
        let s: &str = row.as_ref().unwrap().get(0);
        total += s.len();
    }
    assert_eq!(total, 10_000_000);
    server.stop().await;
}

#[tokio::test]
async fn cancel_reaches_the_server_running_the_statement() {
    let cluster = PgCluster::start("");
    let server = proxy(&cluster, "pool_size = 2").await;
    let c = server.connect().await;
    let other = server.connect().await;
    let token = c.cancel_token();
    let started = std::time::Instant::now();
    let sleeper = tokio::spawn(async move {
        let r = c.query("SELECT pg_sleep(20)", &[]).await;
        (r, c)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Another client's statement is not affected.
    let busy = tokio::spawn(async move {
        other
            .query_one("SELECT pg_sleep(1.5), 1", &[])
            .await
            .map(|_| other)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let (r, c) = sleeper.await.unwrap();
    assert_eq!(sqlstate(&r.unwrap_err()), "57014");
    assert!(started.elapsed() < Duration::from_secs(10));
    let other = busy
        .await
        .unwrap()
        .expect("the other client's statement completes");
    let one: i32 = c.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    drop(other);
    server.stop().await;
}

#[tokio::test]
async fn upstream_auth_failure_and_upstream_down_are_clear_errors() {
    let cluster = PgCluster::start("");
    let url = format!("postgres://app:wrong@127.0.0.1:{}/app", cluster.port);
    let server = common::pg::pooler(&url, "").await;
    let e = server.try_connect("app", "app", "app").await.unwrap_err();
    assert_eq!(sqlstate(&e), "08006");
    let msg = e.as_db_error().unwrap().message().to_string();
    assert!(
        msg.contains(&format!("127.0.0.1:{}", cluster.port)) && msg.contains("28P01"),
        "{msg}"
    );
    server.stop().await;

    let port = common::pg::free_port();
    let url = format!("postgres://app:app@127.0.0.1:{port}/app");
    let server = common::pg::pooler(&url, "connect_timeout = \"1s\"").await;
    let e = server.try_connect("app", "app", "app").await.unwrap_err();
    assert_eq!(sqlstate(&e), "08006");
    assert!(message(&e).contains(&format!("127.0.0.1:{port}")), "{e}");
    server.stop().await;
}

#[tokio::test]
async fn upstream_restart_gives_errors_then_service_resumes() {
    let mut cluster = PgCluster::start("");
    let server = proxy(&cluster, "pool_size = 4\nconnect_timeout = \"1s\"").await;
    let c = server.connect().await;
    c.batch_execute("CREATE TABLE r (id int)").await.unwrap();
    cluster.stop();
    let e = c.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "08006", "{e}");
    assert!(
        message(&e).contains(&format!("127.0.0.1:{}", cluster.port)),
        "{e}"
    );
    cluster.start_again();
    // The same client connection works again once the upstream is back (the
    // reconnect backoff is at most 2 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        match c.execute("INSERT INTO r VALUES (1)", &[]).await {
            Ok(n) => {
                assert_eq!(n, 1);
                break;
            }
            Err(e) => {
                assert_eq!(sqlstate(&e), "08006", "{e}");
                assert!(
                    std::time::Instant::now() < deadline,
                    "upstream never came back: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    assert_eq!(common::count(&c, "r").await, 1);
    server.stop().await;
}

#[tokio::test]
async fn dead_idle_servers_are_replaced_transparently() {
    let cluster = PgCluster::start("");
    let server = proxy(&cluster, "pool_size = 3").await;
    let c = server.connect().await;
    // Warm the pool, then kill every server connection behind unidb's back.
    let pid = backend_pid(&c).await;
    cluster.psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app'",
        "postgres",
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Outside a transaction the statement is retried on a fresh connection.
    let new_pid = backend_pid(&c).await;
    assert_ne!(pid, new_pid);
    server.stop().await;
}

#[tokio::test]
async fn serialization_failures_are_retried_outside_transactions_only() {
    let cluster = PgCluster::start("");
    let server = proxy(&cluster, "pool_size = 2\nretry_attempts = 3").await;
    let c = server.connect().await;
    c.batch_execute(
        "CREATE SEQUENCE attempts;
         CREATE FUNCTION flaky(fail_times int) RETURNS text LANGUAGE plpgsql AS $$
         BEGIN
           IF nextval('attempts') <= fail_times THEN
             RAISE EXCEPTION 'could not serialize access' USING ERRCODE = '40001';
           END IF;
           RETURN 'ok';
         END $$;",
    )
    .await
    .unwrap();
    // Fails twice, succeeds on the third run: the client sees only the success.
    let v: String = c.query_one("SELECT flaky(2)", &[]).await.unwrap().get(0);
    assert_eq!(v, "ok");
    let n: i64 = c
        .query_one("SELECT last_value FROM attempts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
    // Simple protocol too.
    c.batch_execute("SELECT setval('attempts', 1, false)")
        .await
        .unwrap();
    let rows = c.simple_query("SELECT flaky(1)").await.unwrap();
    let ok = rows
        .iter()
        .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("ok")));
    assert!(ok, "simple query was not retried to success");
    // More failures than attempts: the error reaches the client.
    c.batch_execute("SELECT setval('attempts', 1, false)")
        .await
        .unwrap();
    let e = c.query_one("SELECT flaky(100)", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "40001");
    let n: i64 = c
        .query_one("SELECT last_value FROM attempts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 4, "one try plus three retries");
    // Inside a transaction the application owns the retry.
    c.batch_execute("SELECT setval('attempts', 1, false)")
        .await
        .unwrap();
    c.batch_execute("BEGIN").await.unwrap();
    let e = c.query_one("SELECT flaky(1)", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "40001");
    c.batch_execute("ROLLBACK").await.unwrap();
    let n: i64 = c
        .query_one("SELECT last_value FROM attempts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    // Retries are counted; a retried statement is one call in the statistics.
    let metrics = server.state.observer.metrics_text();
    assert!(
        metrics.contains("unidb_retries_total{database=\"app\",reason=\"serialization\"} 6"),
        "2 + 1 + 3 retries: {}",
        metrics
            .lines()
            .filter(|l| l.contains("retries"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let stats = server.state.observer.stats_json();
    let flaky = stats["statements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["query"] == "SELECT flaky($1)")
        .unwrap();
    assert_eq!(
        (flaky["calls"].as_u64(), flaky["errors"].as_u64()),
        (Some(4), Some(2))
    );
    server.stop().await;
}

#[tokio::test]
async fn pool_exhaustion_times_out_with_53300() {
    let cluster = PgCluster::start("");
    let server = proxy(&cluster, "pool_size = 1\nmax_client_wait = \"300ms\"").await;
    let a = server.connect().await;
    let b = server.connect().await;
    a.batch_execute("BEGIN").await.unwrap();
    let started = std::time::Instant::now();
    let e = b.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "53300");
    assert!(started.elapsed() < Duration::from_secs(5));
    a.batch_execute("COMMIT").await.unwrap();
    let one: i32 = b.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    server.stop().await;
}

#[tokio::test]
async fn idle_timeout_closes_idle_clients_but_not_open_transactions() {
    let cluster = PgCluster::start("");
    for mode in ["transaction", "session"] {
        let dir = tempfile::tempdir().unwrap();
        let text = common::pg::pooler_text(
            &cluster.app_url(),
            &format!("pool_mode = \"{mode}\""),
            "idle_timeout = \"400ms\"",
            "",
            common::APP_USER,
        );
        let server = TestServer::start_config(dir, &text).await;
        let idle = server.connect().await;
        let used = server.connect().await;
        let busy = server.connect().await;
        used.batch_execute("SELECT 1").await.unwrap();
        busy.batch_execute("BEGIN; SELECT 1").await.unwrap();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        for c in [&idle, &used] {
            let e = c.simple_query("SELECT 1").await.unwrap_err();
            assert!(
                c.is_closed() || sqlstate(&e) == "57P05",
                "{mode}: an idle client must be disconnected: {e}"
            );
        }
        // Inside a transaction block the client keeps its session and transaction.
        let one: i32 = busy.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1, "{mode}");
        busy.batch_execute("COMMIT").await.unwrap();
        server.stop().await;
    }
}

/// Reads whole messages (type, body) up to one of type `ty`, or to EOF.
async fn read_messages_until(tcp: &mut TcpStream, ty: u8) -> Vec<(u8, Vec<u8>)> {
    let buf = common::read_until(tcp, ty).await;
    let mut out = Vec::new();
    let mut pos = 0;
    while buf.len() >= pos + 5 {
        let len = i32::from_be_bytes(buf[pos + 1..pos + 5].try_into().unwrap()) as usize;
        if buf.len() < pos + 1 + len {
            break;
        }
        out.push((buf[pos], buf[pos + 5..pos + 1 + len].to_vec()));
        if buf[pos] == ty {
            break;
        }
        pos += 1 + len;
    }
    out
}

fn query_message(sql: &str) -> Vec<u8> {
    let mut m = vec![b'Q'];
    m.extend_from_slice(&((sql.len() + 5) as i32).to_be_bytes());
    m.extend_from_slice(sql.as_bytes());
    m.push(0);
    m
}

/// The first column of the first DataRow, as text.
fn first_value(messages: &[(u8, Vec<u8>)]) -> String {
    let (_, row) = messages
        .iter()
        .find(|(t, _)| *t == b'D')
        .unwrap_or_else(|| panic!("no DataRow in {messages:?}"));
    let len = i32::from_be_bytes(row[2..6].try_into().unwrap()) as usize;
    String::from_utf8_lossy(&row[6..6 + len]).into_owned()
}

/// Between transactions a client holds no server and no buffers; its next message
/// may still arrive in pieces of any size, and is relayed whole. An
/// oversized message is refused as soon as its header is read.
#[tokio::test]
async fn messages_sent_in_pieces_between_transactions_are_relayed_whole() {
    let cluster = PgCluster::start("");
    let server = trusting_proxy(&cluster, "pool_mode = \"transaction\"\npool_size = 2").await;
    let mut tcp = common::raw_session(&server).await;

    // A small query, three bytes at a time.
    for piece in query_message("SELECT 41 + 1").chunks(3) {
        tcp.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        first_value(&read_messages_until(&mut tcp, b'Z').await),
        "42"
    );

    // A 200 KB query in uneven pieces, longer than any read buffer.
    let literal = "x".repeat(200_000);
    let big = query_message(&format!("SELECT length('{literal}')"));
    for (i, piece) in big.chunks(7_001).enumerate() {
        tcp.write_all(piece).await.unwrap();
        if i % 5 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert_eq!(
        first_value(&read_messages_until(&mut tcp, b'Z').await),
        "200000"
    );

    // Still in step: the next query is answered normally.
    tcp.write_all(&query_message("SELECT 'next'"))
        .await
        .unwrap();
    assert_eq!(
        first_value(&read_messages_until(&mut tcp, b'Z').await),
        "next"
    );

    // A header announcing 1 GiB: refused without waiting for the body.
    let mut header = vec![b'Q'];
    header.extend_from_slice(&(1i32 << 30).to_be_bytes());
    tcp.write_all(&header).await.unwrap();
    let reply = read_messages_until(&mut tcp, b'E').await;
    let (_, error) = reply.last().expect("an ErrorResponse");
    let text = String::from_utf8_lossy(error);
    assert!(text.contains("C54000"), "{text}");
    assert!(text.contains("exceeds the limit"), "{text}");
    // ... and that connection is closed.
    let mut rest = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut rest))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the connection must be closed");

    // Other clients are unaffected.
    let c = server.connect().await;
    let v: i32 = c.query_one("SELECT 7", &[]).await.unwrap().get(0);
    assert_eq!(v, 7);
    server.stop().await;
}

#[tokio::test]
async fn client_disconnect_mid_transaction_leaks_nothing() {
    let cluster = PgCluster::start("");
    let server = proxy(&cluster, "pool_size = 2").await;
    let setup = server.connect().await;
    setup
        .batch_execute("CREATE TABLE d (id int)")
        .await
        .unwrap();
    let a = server.connect().await;
    a.batch_execute("BEGIN; INSERT INTO d VALUES (1)")
        .await
        .unwrap();
    drop(a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let open = cluster.psql(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND state LIKE 'idle in transaction%'",
        "postgres",
    );
    assert_eq!(open, "0");
    // The pool still serves, and the abandoned insert is gone.
    for _ in 0..4 {
        assert_eq!(common::count(&setup, "d").await, 0);
    }
    server.stop().await;
}

/// A CA and a server certificate for 127.0.0.1 signed by it, readable by the
/// `postgres` user: (dir, ca.crt path, server.crt path, server.key path).
fn make_certificates() -> (tempfile::TempDir, String, String, String) {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .expect("openssl is needed to make test certificates (apt-get install -y openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=unidb test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    // PostgreSQL insists on a private key only its owner can read.
    let _ = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(d)
        .status();
    let _ = Command::new("chmod")
        .arg("600")
        .arg(d.join("server.key"))
        .status();
    let _ = Command::new("chmod").arg("755").arg(d).status();
    let p = |f: &str| d.join(f).display().to_string();
    let (ca, crt, key) = (p("ca.crt"), p("server.crt"), p("server.key"));
    (dir, ca, crt, key)
}

#[tokio::test]
async fn upstream_tls_require_and_verify_full() {
    let (_certs, ca, crt, key) = make_certificates();
    let cluster = PgCluster::start(&format!(
        "ssl = on\nssl_cert_file = '{crt}'\nssl_key_file = '{key}'\n"
    ));
    // A certificate from another CA: verify-full must refuse it.
    let (_other, other_ca, _, _) = make_certificates();
    for (mode, root, ok) in [
        ("require", None, true),
        ("verify-full", Some(ca.as_str()), true),
        ("verify-full", Some(other_ca.as_str()), false),
    ] {
        let root = root.map_or(String::new(), |r| format!("sslrootcert = \"{r}\"\n"));
        let server = proxy(&cluster, &format!("sslmode = \"{mode}\"\n{root}")).await;
        // `proxy` puts sslmode=disable in the url; the key overrides it.
        match server.try_connect("app", "app", "app").await {
            Ok(c) => {
                assert!(ok, "{mode} with the wrong CA must fail");
                let ssl: bool = c
                    .query_one(
                        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                assert!(ssl, "{mode}: the upstream connection is not encrypted");
            }
            Err(e) => {
                assert!(!ok, "{mode}: {e}");
                assert_eq!(sqlstate(&e), "08006");
                assert!(message(&e).contains("TLS"), "{}", message(&e));
            }
        }
        server.stop().await;
    }
}

#[tokio::test]
async fn pipelined_statements_with_errors_keep_their_order() {
    let cluster = PgCluster::start("");
    let server = proxy(&cluster, "pool_size = 2").await;
    let c = server.connect().await;
    let other = server.connect().await;
    let div = c.prepare("SELECT 100 / $1::int4").await.unwrap();
    let echo = c.prepare("SELECT $1::text").await.unwrap();
    // tokio-postgres writes concurrent requests back to back: one pipeline of
    // Bind/Execute/Sync batches, some failing, while another client moves servers.
    for round in 0..5 {
        let noise = other.query_one("SELECT pg_backend_pid()", &[]);
        let mut calls = Vec::new();
        for i in 0..40i32 {
            let (c, div, echo) = (&c, &div, &echo);
            calls.push(async move {
                if i % 3 == 0 {
                    let d = i % 2; // 0 divides by zero
                    c.query_one(div, &[&d])
                        .await
                        .map(|r| r.get::<_, i32>(0).to_string())
                } else {
                    let s = format!("r{round}-{i}");
                    c.query_one(echo, &[&s])
                        .await
                        .map(|r| r.get::<_, String>(0))
                }
            });
        }
        let (results, noise) = tokio::join!(futures_util::future::join_all(calls), noise);
        noise.unwrap();
        for (i, r) in results.into_iter().enumerate() {
            let i = i as i32;
            match (i % 3, i % 2) {
                (0, 0) => assert_eq!(sqlstate(&r.unwrap_err()), "22012", "call {i}"),
                (0, _) => assert_eq!(r.unwrap(), "100", "call {i}"),
                _ => assert_eq!(r.unwrap(), format!("r{round}-{i}"), "call {i}"),
            }
        }
    }
    server.stop().await;
}

/// Frames one extended-protocol message.
fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// Parse of the unnamed statement, then Sync: a batch of its own.
fn parse_unnamed_then_sync(sql: &str) -> Vec<u8> {
    let mut body = vec![0];
    body.extend_from_slice(sql.as_bytes());
    body.extend_from_slice(&[0, 0, 0]);
    let mut m = frame(b'P', &body);
    m.extend(frame(b'S', &[]));
    m
}

/// Bind of the unnamed statement to the unnamed portal, Execute, Sync.
fn bind_unnamed_execute_sync() -> Vec<u8> {
    let mut m = frame(b'B', &[0, 0, 0, 0, 0, 0, 0, 0]);
    m.extend(frame(b'E', &[0, 0, 0, 0, 0]));
    m.extend(frame(b'S', &[]));
    m
}

/// The messages of the next `n` batches (each up to its ReadyForQuery), however
/// the replies are split across reads.
async fn read_batches(tcp: &mut TcpStream, n: usize) -> Vec<Vec<(u8, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut batches = vec![Vec::new()];
    let mut pos = 0;
    while batches.len() <= n {
        while buf.len() >= pos + 5 {
            let len = i32::from_be_bytes(buf[pos + 1..pos + 5].try_into().unwrap()) as usize;
            if buf.len() < pos + 1 + len {
                break;
            }
            let ty = buf[pos];
            batches
                .last_mut()
                .unwrap()
                .push((ty, buf[pos + 5..pos + 1 + len].to_vec()));
            pos += 1 + len;
            if ty == b'Z' {
                batches.push(Vec::new());
                if batches.len() > n {
                    break;
                }
            }
        }
        if batches.len() > n {
            break;
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => panic!("connection closed in {batches:?}"),
            Ok(Ok(k)) => buf.extend_from_slice(&chunk[..k]),
            Err(_) => panic!("timed out waiting for ReadyForQuery: {batches:?}"),
        }
    }
    batches.truncate(n);
    batches
}

/// A ParameterStatus `name` among `messages`, if any.
fn parameter_status(messages: &[(u8, Vec<u8>)], name: &str) -> Option<String> {
    messages.iter().find_map(|(t, body)| {
        let mut parts = body.split(|b| *b == 0);
        let key = parts.next()?;
        (*t == b'S' && key == name.as_bytes())
            .then(|| String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned())
    })
}

/// The SQLSTATE of the first ErrorResponse among `messages`, if any.
fn error_code(messages: &[(u8, Vec<u8>)]) -> Option<String> {
    let (_, body) = messages.iter().find(|(t, _)| *t == b'E')?;
    body.split(|b| *b == 0)
        .find_map(|f| f.strip_prefix(b"C"))
        .map(|c| String::from_utf8_lossy(c).into_owned())
}

/// Drivers (psycopg among them) may Parse the unnamed statement in one batch and
/// Bind and Execute it in the next. In transaction mode the second batch can land
/// on another server: it must run the client's statement there, never what that
/// server's unnamed statement happens to be, and a SET sent this way must be
/// tracked only once it has run, and only if it succeeded.
#[tokio::test]
async fn unnamed_statements_follow_the_client_across_servers() {
    let cluster = PgCluster::start("");
    let server = trusting_proxy(&cluster, "pool_mode = \"transaction\"\npool_size = 2").await;
    let mut a = common::raw_session(&server).await;
    let mut b = common::raw_session(&server).await;
    async fn send(tcp: &mut TcpStream, bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        tcp.write_all(bytes).await.unwrap();
        read_messages_until(tcp, b'Z').await
    }
    async fn pid(tcp: &mut TcpStream) -> String {
        first_value(&send(tcp, &query_message("SELECT pg_backend_pid()")).await)
    }
    /// The first value of `sql` as `client` gets it on a server other than the
    /// last one returned to the pool, which `holder` takes meanwhile.
    async fn value_elsewhere(client: &mut TcpStream, holder: &mut TcpStream, sql: &str) -> String {
        send(holder, &query_message("BEGIN")).await;
        pid(holder).await;
        let value = first_value(&send(client, &query_message(sql)).await);
        send(holder, &query_message("COMMIT")).await;
        value
    }
    // Both servers connected; b's last statement on them is an unnamed COMMIT.
    send(&mut b, &query_message("BEGIN")).await;
    let b_server = pid(&mut b).await;
    let a_server = pid(&mut a).await;
    assert_ne!(a_server, b_server, "two servers in use");

    // a parses on one server; b then takes that server, and leaves an unnamed
    // statement of its own on it.
    let r = send(&mut a, &parse_unnamed_then_sync("SELECT 'mine'")).await;
    assert_eq!(r.first().map(|m| m.0), Some(b'1'), "{r:?}");
    let mut commit = parse_unnamed_then_sync("COMMIT");
    commit.truncate(commit.len() - 5);
    commit.extend(bind_unnamed_execute_sync());
    send(&mut b, &commit).await;
    send(&mut b, &query_message("BEGIN")).await;
    let held = pid(&mut b).await;
    // a's Bind runs on the other server, which never saw a's Parse.
    let r = send(&mut a, &bind_unnamed_execute_sync()).await;
    assert_eq!(error_code(&r), None, "{r:?}");
    assert_eq!(first_value(&r), "mine");
    assert_ne!(pid(&mut a).await, held);

    // A SET parsed in one batch and executed in the next, on another server: the
    // client is told the new value, and every server it uses later has it.
    send(&mut b, &query_message("COMMIT")).await;
    send(
        &mut a,
        &parse_unnamed_then_sync("SET TimeZone = 'Asia/Tokyo'"),
    )
    .await;
    send(&mut b, &query_message("BEGIN")).await;
    pid(&mut b).await;
    let r = send(&mut a, &bind_unnamed_execute_sync()).await;
    assert_eq!(
        parameter_status(&r, "TimeZone").as_deref(),
        Some("Asia/Tokyo"),
        "{r:?}"
    );
    // A SET that fails is not tracked.
    let mut bad = parse_unnamed_then_sync("SET TimeZone = 'Nowhere/Invalid'");
    bad.truncate(bad.len() - 5);
    bad.extend(bind_unnamed_execute_sync());
    let r = send(&mut a, &bad).await;
    assert_eq!(error_code(&r).as_deref(), Some("22023"), "{r:?}");
    send(&mut b, &query_message("COMMIT")).await;
    // a first on the server b held (the last returned), which never ran the SET,
    // then on the other one while b holds that first server again.
    let mut seen = std::collections::BTreeSet::new();
    for round in 0..2 {
        let held = if round == 1 {
            send(&mut b, &query_message("BEGIN")).await;
            Some(pid(&mut b).await)
        } else {
            None
        };
        let r = send(
            &mut a,
            &query_message("SELECT pg_backend_pid()::text || ' ' || current_setting('TimeZone')"),
        )
        .await;
        let got = first_value(&r);
        let (server_pid, zone) = got.split_once(' ').unwrap();
        assert_eq!(zone, "Asia/Tokyo", "on server {server_pid}");
        seen.insert(server_pid.to_string());
        if let Some(held) = held {
            assert_ne!(server_pid, held);
            send(&mut b, &query_message("COMMIT")).await;
        }
    }
    assert_eq!(seen.len(), 2, "a ran on both servers: {seen:?}");

    // A Parse skipped after an error earlier in its batch is not taken for done:
    // the next batch's Bind never binds what the server had before.
    let mut d = common::raw_session(&server).await;
    let mut pipelined = frame(b'E', b"nope\0\0\0\0\0");
    pipelined.extend(parse_unnamed_then_sync("SELECT 'd'"));
    pipelined.extend(bind_unnamed_execute_sync());
    d.write_all(&pipelined).await.unwrap();
    let mut replies = read_batches(&mut d, 2).await;
    let second = replies.pop().unwrap();
    let first = replies.pop().unwrap();
    assert_eq!(error_code(&first).as_deref(), Some("34000"), "{first:?}");
    match error_code(&second) {
        Some(code) => assert_eq!(code, "26000", "{second:?}"),
        None => assert_eq!(first_value(&second), "d"),
    }

    // The server failed the batch before unidb refuses a later message of it:
    // the client's Sync still gets its ReadyForQuery.
    let mut e = common::raw_session(&server).await;
    e.write_all(&frame(b'E', b"nope\0\0\0\0\0")).await.unwrap();
    e.write_all(&frame(b'H', &[])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    e.write_all(&bind_unnamed_execute_sync()).await.unwrap();
    let r = read_messages_until(&mut e, b'Z').await;
    assert!(error_code(&r).is_some(), "{r:?}");
    assert_eq!(
        first_value(&send(&mut e, &query_message("SELECT 'e'")).await),
        "e"
    );

    // A SET bound to a named portal is tracked when that portal is executed,
    // whatever was bound after it.
    let mut f = common::raw_session(&server).await;
    let mut batch = frame(b'P', b"tz\0SET TimeZone = 'Europe/Paris'\0\0\0");
    batch.extend(frame(b'P', b"\0SELECT 1\0\0\0"));
    batch.extend(frame(b'B', b"p1\0tz\0\0\0\0\0\0\0"));
    batch.extend(frame(b'B', b"\0\0\0\0\0\0\0\0"));
    batch.extend(frame(b'E', b"\0\0\0\0\0"));
    batch.extend(frame(b'S', &[]));
    let r = send(&mut f, &batch).await;
    assert_eq!(error_code(&r), None, "{r:?}");
    let now = send(&mut f, &query_message("SELECT current_setting('TimeZone')")).await;
    assert_ne!(
        first_value(&now),
        "Europe/Paris",
        "the SET portal never ran"
    );
    let mut batch = frame(b'B', b"p2\0tz\0\0\0\0\0\0\0");
    batch.extend(frame(b'P', b"\0SELECT 1\0\0\0"));
    batch.extend(frame(b'B', b"\0\0\0\0\0\0\0\0"));
    batch.extend(frame(b'E', b"p2\0\0\0\0\0"));
    batch.extend(frame(b'S', &[]));
    let r = send(&mut f, &batch).await;
    assert_eq!(
        parameter_status(&r, "TimeZone").as_deref(),
        Some("Europe/Paris"),
        "{r:?}"
    );
    // On whichever server f gets next (b holds the last one used).
    assert_eq!(
        value_elsewhere(&mut f, &mut b, "SELECT current_setting('TimeZone')").await,
        "Europe/Paris"
    );

    // Two session commands in one batch (as pgjdbc's executeBatch sends them):
    // both are tracked.
    let mut two = parse_unnamed_then_sync("SET application_name = 'two_sets'");
    two.truncate(two.len() - 5);
    two.extend(bind_unnamed_execute_sync());
    two.truncate(two.len() - 5);
    two.extend(parse_unnamed_then_sync("SET TimeZone = 'America/Lima'"));
    two.truncate(two.len() - 5);
    two.extend(bind_unnamed_execute_sync());
    let r = send(&mut f, &two).await;
    assert_eq!(error_code(&r), None, "{r:?}");
    let sql = "SELECT current_setting('application_name') || ' ' || current_setting('TimeZone')";
    assert_eq!(
        value_elsewhere(&mut f, &mut b, sql).await,
        "two_sets America/Lima"
    );

    // Inside a transaction block a portal outlives its Sync: a SET bound in one
    // batch and executed in the next is tracked at COMMIT.
    send(&mut f, &query_message("BEGIN")).await;
    let mut bind = frame(b'P', b"tz2\0SET TimeZone = 'Asia/Kolkata'\0\0\0");
    bind.extend(frame(b'B', b"p3\0tz2\0\0\0\0\0\0\0"));
    bind.extend(frame(b'S', &[]));
    let r = send(&mut f, &bind).await;
    assert_eq!(error_code(&r), None, "{r:?}");
    let mut execute = frame(b'E', b"p3\0\0\0\0\0");
    execute.extend(frame(b'S', &[]));
    let r = send(&mut f, &execute).await;
    assert_eq!(error_code(&r), None, "{r:?}");
    send(&mut f, &query_message("COMMIT")).await;
    assert_eq!(
        value_elsewhere(&mut f, &mut b, "SELECT current_setting('TimeZone')").await,
        "Asia/Kolkata"
    );

    // A portal bound to a SET but never executed dies with its transaction: a
    // cursor of the same name in a later transaction tracks nothing.
    send(&mut f, &query_message("BEGIN")).await;
    let mut bind = frame(b'P', b"\0SET TimeZone = 'Africa/Nairobi'\0\0\0");
    bind.extend(frame(b'B', b"c\0\0\0\0\0\0\0\0"));
    bind.extend(frame(b'S', &[]));
    let r = send(&mut f, &bind).await;
    assert_eq!(error_code(&r), None, "{r:?}");
    send(&mut f, &query_message("ROLLBACK")).await;
    send(&mut f, &query_message("BEGIN")).await;
    send(&mut f, &query_message("DECLARE c CURSOR FOR SELECT 1")).await;
    let mut execute = frame(b'E', b"c\0\0\0\0\0");
    execute.extend(frame(b'S', &[]));
    let r = send(&mut f, &execute).await;
    assert_eq!(error_code(&r), None, "{r:?}");
    assert_eq!(first_value(&r), "1");
    send(&mut f, &query_message("COMMIT")).await;
    assert_eq!(
        value_elsewhere(&mut f, &mut b, "SELECT current_setting('TimeZone')").await,
        "Asia/Kolkata"
    );

    // The same, all in one write: the ReadyForQuery of each batch tells which
    // portals are gone, whatever the client has sent since.
    let mut pipelined = query_message("BEGIN");
    pipelined.extend(frame(b'P', b"\0SET TimeZone = 'Africa/Nairobi'\0\0\0"));
    pipelined.extend(frame(b'B', b"c\0\0\0\0\0\0\0\0"));
    pipelined.extend(frame(b'S', &[]));
    pipelined.extend(query_message("ROLLBACK"));
    pipelined.extend(query_message("BEGIN"));
    pipelined.extend(query_message("DECLARE c CURSOR FOR SELECT 1"));
    pipelined.extend(frame(b'E', b"c\0\0\0\0\0"));
    pipelined.extend(frame(b'S', &[]));
    pipelined.extend(query_message("COMMIT"));
    f.write_all(&pipelined).await.unwrap();
    let batches = read_batches(&mut f, 7).await;
    assert!(
        batches.iter().all(|b| error_code(b).is_none()),
        "{batches:?}"
    );
    assert_eq!(first_value(&batches[5]), "1", "{batches:?}");
    assert_eq!(
        value_elsewhere(&mut f, &mut b, "SELECT current_setting('TimeZone')").await,
        "Asia/Kolkata"
    );

    // The server fails a batch whose rest arrives later: unidb drops the rest as
    // the server does, answers the Sync, and the server goes back to the pool.
    let mut g = common::raw_session(&server).await;
    let mut head = frame(b'P', b"\0SELEC nothing\0\0\0");
    head.extend(frame(b'B', b"\0\0\0\0\0\0\0\0"));
    head.extend(frame(b'E', b"\0\0\0\0\0"));
    head.extend(frame(b'H', &[]));
    g.write_all(&head).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut rest = parse_unnamed_then_sync("SELECT 'skipped'");
    rest.truncate(rest.len() - 5);
    rest.extend(bind_unnamed_execute_sync());
    let r = send(&mut g, &rest).await;
    assert_eq!(error_code(&r).as_deref(), Some("42601"), "{r:?}");
    assert!(r.iter().all(|(t, _)| *t != b'D'), "{r:?}");
    assert_eq!(
        first_value(&send(&mut g, &query_message("SELECT 'g'")).await),
        "g"
    );
    // Both servers are free: two transactions at once.
    send(&mut a, &query_message("BEGIN")).await;
    send(&mut b, &query_message("BEGIN")).await;
    assert_ne!(pid(&mut a).await, pid(&mut b).await);
    send(&mut a, &query_message("COMMIT")).await;
    send(&mut b, &query_message("COMMIT")).await;

    // A client with no unnamed statement is told so, and runs nothing.
    let mut c = common::raw_session(&server).await;
    let r = send(&mut c, &bind_unnamed_execute_sync()).await;
    assert_eq!(error_code(&r).as_deref(), Some("26000"), "{r:?}");
    assert_eq!(r.last().map(|m| m.0), Some(b'Z'));
    assert_eq!(
        first_value(&send(&mut c, &query_message("SELECT 'fine'")).await),
        "fine"
    );
    server.stop().await;
}

/// At shutdown a client waiting between transactions is closed at once with
/// 57P01, while a client inside a transaction may finish it.
#[tokio::test]
async fn shutdown_closes_waiting_clients_and_lets_open_transactions_finish() {
    let cluster = PgCluster::start("");
    let server = trusting_proxy(&cluster, "pool_mode = \"transaction\"").await;
    let mut waiting = common::raw_session(&server).await;
    waiting
        .write_all(&query_message("SELECT 'ran'"))
        .await
        .unwrap();
    assert_eq!(
        first_value(&read_messages_until(&mut waiting, b'Z').await),
        "ran"
    );
    let mut busy = common::raw_session(&server).await;
    busy.write_all(&query_message("BEGIN")).await.unwrap();
    read_messages_until(&mut busy, b'Z').await;
    let stopping = tokio::spawn(server.stop());
    // Told while the other client's transaction is still open.
    let r = read_messages_until(&mut waiting, b'E').await;
    assert_eq!(error_code(&r).as_deref(), Some("57P01"), "{r:?}");
    let mut rest = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), waiting.read(&mut rest))
        .await
        .expect("the connection is closed after the error")
        .unwrap_or(0);
    assert_eq!(n, 0, "nothing after the FATAL error");
    busy.write_all(&query_message("SELECT 'still here'"))
        .await
        .unwrap();
    assert_eq!(
        first_value(&read_messages_until(&mut busy, b'Z').await),
        "still here"
    );
    busy.write_all(&query_message("COMMIT")).await.unwrap();
    let r = read_messages_until(&mut busy, b'Z').await;
    assert!(r.iter().any(|(t, _)| *t == b'C'), "{r:?}");
    stopping.await.unwrap();
}
