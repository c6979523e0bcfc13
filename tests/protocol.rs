//! Extended-protocol details, cancellation, concurrency and hostile input.

mod common;

use std::time::{Duration, Instant};

use common::{raw_session, read_until, sqlstate, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread")]
async fn portal_suspension_with_max_rows() {
    let s = TestServer::start().await;
    let mut c = s.connect().await;
    c.batch_execute("CREATE TABLE n (i INT)").await.unwrap();
    c.batch_execute("INSERT INTO n VALUES (1),(2),(3),(4),(5)")
        .await
        .unwrap();
    let tx = c.transaction().await.unwrap();
    let portal = tx.bind("SELECT i FROM n ORDER BY i", &[]).await.unwrap();
    let mut seen = Vec::new();
    let mut portions = 0;
    loop {
        let rows = tx.query_portal(&portal, 2).await.unwrap();
        if rows.is_empty() {
            break;
        }
        portions += 1;
        seen.extend(rows.iter().map(|r| r.get::<_, i32>(0)));
    }
    assert_eq!(seen, vec![1, 2, 3, 4, 5]);
    assert_eq!(portions, 3);
    tx.commit().await.unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn named_statements_are_reused_and_closed() {
    let s = TestServer::start().await;
    let c = s.connect().await;
    c.batch_execute("CREATE TABLE k (id INT PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    let ins = c.prepare("INSERT INTO k VALUES ($1, $2)").await.unwrap();
    for i in 0..20i32 {
        c.execute(&ins, &[&i, &format!("v{i}")]).await.unwrap();
    }
    let sel = c.prepare("SELECT v FROM k WHERE id = $1").await.unwrap();
    for i in 0..20i32 {
        let v: String = c.query_one(&sel, &[&i]).await.unwrap().get(0);
        assert_eq!(v, format!("v{i}"));
    }
    drop(sel); // sends Close
    let v: i64 = common::count(&c, "k").await;
    assert_eq!(v, 20);
    s.stop().await;
}

async fn expect_cancel(s: &TestServer, sql: &'static str) {
    let c = s.connect().await;
    let token = c.cancel_token();
    let started = Instant::now();
    let task = tokio::spawn(async move { c.simple_query(sql).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(sqlstate(&e), "57014", "{sql}: {e:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_interrupts_a_running_statement() {
    let s = TestServer::start().await;
    expect_cancel(&s, "SELECT pg_sleep(30)").await;
    // A CPU-bound query is stopped by sqlite3_interrupt.
    expect_cancel(
        &s,
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
    )
    .await;
    // The session that issued nothing else is unaffected; the server keeps serving.
    s.connect().await.simple_query("SELECT 1").await.unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_interrupts_a_wait_for_the_writer() {
    let s = TestServer::start().await;
    let holder = s.connect().await;
    holder
        .batch_execute("CREATE TABLE w (i INT); BEGIN; INSERT INTO w VALUES (1)")
        .await
        .unwrap();
    // busy_timeout is 2 s in the test config: the waiter gets 55P03 after that.
    let waiter = s.connect().await;
    let e = waiter
        .batch_execute("INSERT INTO w VALUES (2)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "55P03");
    holder.batch_execute("COMMIT").await.unwrap();
    waiter
        .batch_execute("INSERT INTO w VALUES (2)")
        .await
        .unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_writers_and_readers_lose_nothing() {
    let s = TestServer::start().await;
    let setup = s.connect().await;
    setup.batch_execute("CREATE TABLE events (id SERIAL PRIMARY KEY, writer INT NOT NULL, seq INT NOT NULL, UNIQUE (writer, seq))").await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..50i32 {
        let mut c = s.connect().await;
        tasks.push(tokio::spawn(async move {
            for seq in 0..20i32 {
                if seq % 2 == 0 {
                    c.execute(
                        "INSERT INTO events (writer, seq) VALUES ($1, $2)",
                        &[&w, &seq],
                    )
                    .await
                    .unwrap();
                } else {
                    let tx = c.transaction().await.unwrap();
                    tx.execute(
                        "INSERT INTO events (writer, seq) VALUES ($1, $2)",
                        &[&w, &seq],
                    )
                    .await
                    .unwrap();
                    tx.commit().await.unwrap();
                }
            }
        }));
    }
    for _ in 0..10 {
        let c = s.connect().await;
        tasks.push(tokio::spawn(async move {
            let mut last = 0i64;
            for _ in 0..50 {
                let n: i64 = common::count(&c, "events").await;
                // Readers see committed data only, and it only grows.
                assert!(n >= last);
                last = n;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let row = setup
        .query_one(
            "SELECT count(*), count(DISTINCT id), count(DISTINCT writer * 1000 + seq) FROM events",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, i64>(0),
            row.get::<_, i64>(1),
            row.get::<_, i64>(2)
        ),
        (1000, 1000, 1000)
    );
    s.stop().await;
}

/// Reads to EOF and returns the SQLSTATE of the first ErrorResponse.
async fn error_then_close(tcp: &mut TcpStream) -> String {
    let buf = read_until(tcp, b'\0').await;
    let pos = buf
        .iter()
        .position(|b| *b == b'E')
        .expect("an ErrorResponse");
    let body = &buf[pos + 5..];
    let c = body
        .windows(6)
        .find(|w| w[0] == b'C')
        .expect("a code field");
    String::from_utf8_lossy(&c[1..6]).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_messages_close_only_that_connection() {
    let s = TestServer::start_with(
        "auth = \"trust\"\nmax_message_size = 4096",
        common::APP_USER,
    )
    .await;
    let healthy = s.connect().await;
    healthy
        .batch_execute("CREATE TABLE h (i INT); INSERT INTO h VALUES (1)")
        .await
        .unwrap();

    // A message length below the minimum.
    let mut t = raw_session(&s).await;
    t.write_all(&[b'Q', 0, 0, 0, 2]).await.unwrap();
    assert_eq!(error_then_close(&mut t).await, "08P01");

    // An unknown message type.
    let mut t = raw_session(&s).await;
    t.write_all(&[b'!', 0, 0, 0, 4]).await.unwrap();
    assert_eq!(error_then_close(&mut t).await, "08P01");

    // A message larger than max_message_size.
    let mut t = raw_session(&s).await;
    t.write_all(&[b'Q', 0, 1, 0, 0]).await.unwrap();
    assert_eq!(error_then_close(&mut t).await, "54000");

    // A Bind whose body is shorter than it claims.
    let mut t = raw_session(&s).await;
    t.write_all(&[b'B', 0, 0, 0, 12, 0, 0, 0xff, 0xff, 0, 5, 0, 0])
        .await
        .unwrap();
    assert_eq!(error_then_close(&mut t).await, "08P01");

    // A truncated message followed by a disconnect.
    let mut t = raw_session(&s).await;
    t.write_all(&[b'Q', 0, 0, 0, 100, b'S', b'E'])
        .await
        .unwrap();
    drop(t);

    // A garbage startup packet.
    let mut t = TcpStream::connect(s.addr).await.unwrap();
    t.write_all(&[0, 0, 0, 3, 1, 2, 3, 4]).await.unwrap();
    assert_eq!(error_then_close(&mut t).await, "08P01");

    // Random bytes in place of a startup packet.
    let mut t = TcpStream::connect(s.addr).await.unwrap();
    t.write_all(&[0, 0, 0, 16, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8])
        .await
        .unwrap();
    assert_eq!(error_then_close(&mut t).await, "08P01");

    // The other client and new clients are unaffected.
    let n: i64 = common::count(&healthy, "h").await;
    assert_eq!(n, 1);
    s.connect().await.simple_query("SELECT 1").await.unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ssl_and_gss_requests_are_refused_without_tls() {
    let s = TestServer::start().await;
    for code in [80877103i32, 80877104] {
        let mut t = TcpStream::connect(s.addr).await.unwrap();
        let mut msg = 8i32.to_be_bytes().to_vec();
        msg.extend(code.to_be_bytes());
        t.write_all(&msg).await.unwrap();
        let mut b = [0u8; 1];
        t.read_exact(&mut b).await.unwrap();
        assert_eq!(b[0], b'N');
    }
    // tokio-postgres with sslmode=prefer falls back to plain text.
    let url = format!("{} sslmode=prefer", s.url("app", "app", "app"));
    let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c.simple_query("SELECT 1").await.unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn large_results_stream_in_order() {
    let s = TestServer::start_with("auth = \"trust\"", common::APP_USER).await;
    let c = s.connect().await;
    c.batch_execute(
        "CREATE TABLE big (id INTEGER PRIMARY KEY, pad TEXT);
         INSERT INTO big (id, pad) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30000)
           SELECT i, printf('%0200d', i) FROM n",
    )
    .await
    .unwrap();
    // ~6 MB through the extended protocol (binary) and the simple protocol (text).
    let rows = c
        .query("SELECT id, pad FROM big ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 30000);
    assert!(rows
        .iter()
        .enumerate()
        .all(|(i, r)| r.get::<_, i32>(0) == i as i32 + 1));
    assert_eq!(rows[29999].get::<_, String>(1), format!("{:0200}", 30000));
    let msgs = c
        .simple_query("SELECT id FROM big ORDER BY id")
        .await
        .unwrap();
    let ids: Vec<i64> = msgs
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap().parse().unwrap()),
            _ => None,
        })
        .collect();
    assert_eq!(ids, (1..=30000).collect::<Vec<i64>>());
    // A client that goes away in the middle of a large result frees its reader.
    for _ in 0..4 {
        let mut t = raw_session(&s).await;
        let q = b"SELECT a.pad, b.pad FROM big a, big b\0";
        let mut msg = vec![b'Q'];
        msg.extend(((q.len() + 4) as i32).to_be_bytes());
        msg.extend_from_slice(q);
        t.write_all(&msg).await.unwrap();
        let mut first = [0u8; 1024];
        t.read_exact(&mut first).await.unwrap();
        drop(t);
    }
    let n: i64 = common::count(&c, "big").await;
    assert_eq!(n, 30000);
    s.stop().await;
}
