//! Authentication, routing and the query protocols, over TCP with tokio-postgres.

mod common;

use common::{sqlstate, TestServer, APP_USER};

#[tokio::test(flavor = "multi_thread")]
async fn scram_login_and_crud() {
    let s = TestServer::start().await;
    let c = s.connect().await;
    c.batch_execute(
        "CREATE TABLE t (id SERIAL PRIMARY KEY, name TEXT NOT NULL, ok BOOLEAN DEFAULT true)",
    )
    .await
    .unwrap();
    let rows = c
        .query(
            "INSERT INTO t (name) VALUES ($1), ($2) RETURNING id, ok",
            &[&"a", &"b"],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get::<_, i32>(0), 1);
    assert!(rows[1].get::<_, bool>(1));
    let n = c
        .execute("UPDATE t SET ok = $1 WHERE id = $2", &[&false, &2i32])
        .await
        .unwrap();
    assert_eq!(n, 1);
    let row = c
        .query_one("SELECT name, ok FROM t WHERE id = $1", &[&2i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "b");
    assert!(!row.get::<_, bool>(1));
    assert_eq!(
        c.execute("DELETE FROM t WHERE id = 1", &[]).await.unwrap(),
        1
    );
    let count: i64 = common::count(&c, "t").await;
    assert_eq!(count, 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_unknown_user_and_unknown_database() {
    let s = TestServer::start().await;
    let e = s.try_connect("app", "nope", "app").await.unwrap_err();
    assert_eq!(sqlstate(&e), "28P01");
    let e = s.try_connect("mallory", "app", "app").await.unwrap_err();
    assert_eq!(sqlstate(&e), "28P01");
    let e = s.try_connect("app", "app", "missing").await.unwrap_err();
    assert_eq!(sqlstate(&e), "3D000");
    let msg = e.as_db_error().unwrap().message().to_string();
    assert!(msg.contains("\"missing\" does not exist"), "{msg}");
    // The server still serves after refusing those.
    s.connect().await.simple_query("SELECT 1").await.unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn md5_authentication() {
    let s = TestServer::start_with("auth = \"md5\"", APP_USER).await;
    s.connect().await.simple_query("SELECT 1").await.unwrap();
    let e = s.try_connect("app", "bad", "app").await.unwrap_err();
    assert_eq!(sqlstate(&e), "28P01");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stored_scram_verifier_authenticates() {
    let verifier = postgres_protocol_verifier("s3cret");
    let users = format!("[[users]]\nname = \"app\"\nscram = \"{verifier}\"\n");
    let s = TestServer::start_with("", &users).await;
    s.try_connect("app", "s3cret", "app").await.unwrap();
    assert_eq!(
        sqlstate(&s.try_connect("app", "app", "app").await.unwrap_err()),
        "28P01"
    );
    s.stop().await;
}

fn postgres_protocol_verifier(pw: &str) -> String {
    unidb::frontend::auth::ScramVerifier::from_password(pw);
    // Same format PostgreSQL stores in pg_authid.
    let v = unidb::frontend::auth::ScramVerifier::from_password(pw);
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD;
    format!(
        "SCRAM-SHA-256${}:{}${}:{}",
        v.iterations,
        b.encode(&v.salt),
        b.encode(v.stored_key),
        b.encode(v.server_key)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn trust_authentication_accepts_known_users() {
    let s = TestServer::start_with("auth = \"trust\"", APP_USER).await;
    s.try_connect("app", "whatever", "app").await.unwrap();
    assert_eq!(
        sqlstate(&s.try_connect("nobody", "", "app").await.unwrap_err()),
        "28000"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_clients() {
    let s = TestServer::start_with("max_clients = 2", APP_USER).await;
    let _a = s.connect().await;
    let _b = s.connect().await;
    let e = s.try_connect("app", "app", "app").await.unwrap_err();
    assert_eq!(sqlstate(&e), "53300");
    drop(_a);
    // The slot frees once the first client is gone.
    let mut ok = false;
    for _ in 0..50 {
        if s.try_connect("app", "app", "app").await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ok, "a freed client slot was not reusable");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_statement_simple_query() {
    let s = TestServer::start().await;
    let c = s.connect().await;
    let msgs = c
        .simple_query("CREATE TABLE m (a INT); INSERT INTO m VALUES (1), (2); SELECT a FROM m ORDER BY a; SELECT 'x' AS y")
        .await
        .unwrap();
    use tokio_postgres::SimpleQueryMessage as M;
    let rows: Vec<String> = msgs
        .iter()
        .filter_map(|m| match m {
            M::Row(r) => Some(r.get(0).unwrap().to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(rows, vec!["1", "2", "x"]);
    let completions: Vec<u64> = msgs
        .iter()
        .filter_map(|m| match m {
            M::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect();
    assert_eq!(completions, vec![0, 2, 2, 1]);
    // An error in a later statement rolls back the earlier ones (implicit transaction).
    let e = c
        .simple_query("INSERT INTO m VALUES (3); INSERT INTO nope VALUES (1)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42P01");
    let n: i64 = common::count(&c, "m").await;
    assert_eq!(n, 2);
    // Empty query.
    assert!(c
        .simple_query("")
        .await
        .unwrap()
        .iter()
        .all(|m| !matches!(m, M::Row(_))));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn transactions_commit_rollback_and_failed_state() {
    let s = TestServer::start().await;
    let c = s.connect().await;
    c.batch_execute("CREATE TABLE t (id INT PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    c.batch_execute("BEGIN; INSERT INTO t VALUES (1, 'a'); ROLLBACK")
        .await
        .unwrap();
    let n: i64 = common::count(&c, "t").await;
    assert_eq!(n, 0);
    c.batch_execute("BEGIN; INSERT INTO t VALUES (1, 'a'); COMMIT")
        .await
        .unwrap();
    c.batch_execute("BEGIN").await.unwrap();
    let e = c
        .batch_execute("INSERT INTO t VALUES (1, 'dup')")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "23505");
    let e = c.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "25P02");
    let e = c.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&e), "25P02");
    // COMMIT of a failed transaction rolls back.
    let msgs = c.simple_query("COMMIT").await.unwrap();
    assert!(matches!(
        msgs.last(),
        Some(tokio_postgres::SimpleQueryMessage::CommandComplete(_))
    ));
    c.batch_execute("INSERT INTO t VALUES (2, 'b')")
        .await
        .unwrap();
    let n: i64 = common::count(&c, "t").await;
    assert_eq!(n, 2);
    // Savepoints recover a failed transaction.
    c.batch_execute("BEGIN; SAVEPOINT s; ").await.unwrap();
    assert!(c
        .batch_execute("INSERT INTO t VALUES (2, 'dup')")
        .await
        .is_err());
    c.batch_execute("ROLLBACK TO SAVEPOINT s; INSERT INTO t VALUES (3, 'c'); COMMIT")
        .await
        .unwrap();
    let n: i64 = common::count(&c, "t").await;
    assert_eq!(n, 3);
    // tokio-postgres' transaction API.
    let mut c = c;
    let tx = c.transaction().await.unwrap();
    tx.execute("INSERT INTO t VALUES (4, 'd')", &[])
        .await
        .unwrap();
    let seen: i64 = common::count(&tx, "t").await;
    assert_eq!(seen, 4);
    tx.rollback().await.unwrap();
    let n: i64 = common::count(&c, "t").await;
    assert_eq!(n, 3);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn disconnect_mid_transaction_rolls_back() {
    let s = TestServer::start().await;
    let c = s.connect().await;
    c.batch_execute("CREATE TABLE t (id INT)").await.unwrap();
    {
        let c2 = s.connect().await;
        c2.batch_execute("BEGIN; INSERT INTO t VALUES (1)")
            .await
            .unwrap();
        drop(c2);
    }
    // The writer is released and the insert is gone.
    c.batch_execute("INSERT INTO t VALUES (2)").await.unwrap();
    let rows = c.query("SELECT id FROM t", &[]).await.unwrap();
    let ids: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, vec![2]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_carry_sqlstates() {
    let s = TestServer::start().await;
    let c = s.connect().await;
    c.batch_execute(
        "CREATE TABLE p (id INT PRIMARY KEY);
         CREATE TABLE t (id INT PRIMARY KEY, n TEXT NOT NULL, v INT CHECK (v > 0), p INT REFERENCES p(id))",
    )
    .await
    .unwrap();
    let cases = [
        ("INSERT INTO t (id) VALUES (1)", "23502"),
        ("INSERT INTO t (id, n, v) VALUES (1, 'a', -1)", "23514"),
        ("INSERT INTO t (id, n, p) VALUES (1, 'a', 7)", "23503"),
        ("SELECT * FROM nope", "42P01"),
        ("SELECT nope FROM t", "42703"),
        ("SELEKT 1", "42601"),
        ("CREATE TABLE x (a INT[])", "0A000"),
        ("SHOW nonsense", "42704"),
    ];
    for (sql, code) in cases {
        let e = c.batch_execute(sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), code, "{sql}: {e}");
    }
    for sql in [
        "SELECT 'abc'::int4",
        "SELECT '99999999999'::int4",
        "SELECT 'maybe'::bool",
    ] {
        let e = c.batch_execute(sql).await.unwrap_err();
        assert!(
            ["22P02", "22003"].contains(&sqlstate(&e).as_str()),
            "{sql}: {e:?}"
        );
    }
    // Date/time input: 22007 when it is not a date at all, 22008 for a bad field.
    let e = c
        .batch_execute("SELECT 'x'::timestamptz")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "22007");
    let e = c
        .batch_execute("SELECT '2026-02-30'::date")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "22008");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn session_settings() {
    let s = TestServer::start().await;
    let c = s.connect().await;
    let v: String = c
        .query_one("SHOW server_version", &[])
        .await
        .unwrap()
        .get(0);
    assert!(v.starts_with("15.0 (unidb "), "{v}");
    c.batch_execute("SET application_name = 'tests'")
        .await
        .unwrap();
    let v: String = c
        .query_one("SHOW application_name", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "tests");
    let e = c
        .batch_execute("SET client_encoding = 'LATIN1'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "0A000");
    let v: String = c.query_one("SELECT version()", &[]).await.unwrap().get(0);
    assert!(v.starts_with("PostgreSQL 15.0"), "{v}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn simple_queries_with_literals_behave_like_postgres() {
    use tokio_postgres::SimpleQueryMessage as M;
    let s = TestServer::start().await;
    let c = s.connect().await;
    c.batch_execute(
        "CREATE TABLE lit (id INT PRIMARY KEY, flag BOOLEAN, at TIMESTAMPTZ, name VARCHAR(10), b BYTEA)",
    )
    .await
    .unwrap();
    // Literals are bound like parameters typed by their column: 't' is a bool, the
    // timestamp is normalised to UTC, the bytea literal is bytes.
    c.batch_execute(
        "INSERT INTO lit VALUES (1, 't', '2024-05-01 12:00:00+02', 'it''s', '\\x0102')",
    )
    .await
    .unwrap();
    c.batch_execute("INSERT INTO lit VALUES (2, false, '2024-05-01 09:00:00Z', 'b', '\\xff')")
        .await
        .unwrap();
    let rows = |msgs: Vec<M>| -> Vec<Vec<String>> {
        msgs.into_iter()
            .filter_map(|m| match m {
                M::Row(r) => Some(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or("NULL").to_string())
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    };
    let got = rows(
        c.simple_query(
            "SELECT id, flag, at, name, b FROM lit WHERE at > '2024-05-01 09:30:00+00' ORDER BY 1",
        )
        .await
        .unwrap(),
    );
    assert_eq!(
        got,
        vec![vec!["1", "t", "2024-05-01 10:00:00+00", "it's", "\\x0102"]]
    );
    let got = rows(
        c.simple_query("SELECT id FROM lit WHERE flag = 'f' AND b = '\\xff'")
            .await
            .unwrap(),
    );
    assert_eq!(got, vec![vec!["2"]]);
    // Ordinals stay ordinals; LIMIT takes a literal.
    let got = rows(
        c.simple_query("SELECT name, id FROM lit ORDER BY 2 DESC LIMIT 1")
            .await
            .unwrap(),
    );
    assert_eq!(got, vec![vec!["b", "2"]]);
    // Integer division and literal types as in PostgreSQL.
    let got = rows(
        c.simple_query("SELECT 7 / 2, 7 / 2.0, 'a' || 'b', 1 + 1")
            .await
            .unwrap(),
    );
    assert_eq!(got, vec![vec!["3", "3.5", "ab", "2"]]);
    let row = c.query_one("SELECT 1, 'x', 2.5", &[]).await.unwrap();
    let types: Vec<_> = row.columns().iter().map(|c| c.type_().clone()).collect();
    assert_eq!(
        types,
        vec![
            tokio_postgres::types::Type::INT4,
            tokio_postgres::types::Type::TEXT,
            tokio_postgres::types::Type::NUMERIC
        ]
    );
    // A literal that is not valid for its column is refused, as PostgreSQL does.
    let e = c
        .batch_execute("SELECT id FROM lit WHERE id = 'abc'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "22P02");
    let e = c
        .batch_execute("INSERT INTO lit (id, flag) VALUES (3, 'maybe')")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "22P02");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_clients_are_disconnected_but_not_inside_a_transaction() {
    let s = TestServer::start_with("idle_timeout = \"300ms\"", APP_USER).await;
    let idle = s.connect().await;
    let busy = s.connect().await;
    busy.batch_execute("CREATE TABLE i (x INT); BEGIN; INSERT INTO i VALUES (1)")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    // The idle session was closed with 57P05; the one in a transaction was not.
    assert!(idle.simple_query("SELECT 1").await.is_err());
    busy.batch_execute("COMMIT").await.unwrap();
    assert_eq!(common::count(&busy, "i").await, 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn default_in_some_rows_of_values() {
    let s = TestServer::start().await;
    let c = s.connect().await;
    c.batch_execute(
        "CREATE TABLE tags (id SERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE, n INT NOT NULL DEFAULT 7)",
    )
    .await
    .unwrap();
    // Extended protocol with parameters, rows defaulting different columns, RETURNING.
    let rows = c
        .query(
            "INSERT INTO tags (name, n) VALUES ($1, DEFAULT), ($2, 2), ($3, DEFAULT) RETURNING id, name, n",
            &[&"a", &"b", &"c"],
        )
        .await
        .unwrap();
    let got: Vec<(i32, String, i32)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        vec![(1, "a".into(), 7), (2, "b".into(), 2), (3, "c".into(), 7)]
    );
    // Simple protocol: the command tag counts every row.
    let msgs = c
        .simple_query("INSERT INTO tags (name, n) VALUES ('d', 1), ('e', DEFAULT)")
        .await
        .unwrap();
    assert!(msgs
        .iter()
        .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::CommandComplete(2))));
    // All or nothing: a failing later part undoes the earlier one.
    let e = c
        .batch_execute("INSERT INTO tags (name, n) VALUES ('f', DEFAULT), ('a', 3)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "23505");
    assert_eq!(common::count(&c, "tags").await, 5);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn session_functions_see_their_own_session() {
    let s = TestServer::start().await;
    let a = s.connect().await;
    let b = s.connect().await;
    let pid = |c: tokio_postgres::Client| async move {
        let row = c
            .query_one("SELECT pg_backend_pid(), current_user, session_user", &[])
            .await
            .unwrap();
        (
            row.get::<_, i32>(0),
            row.get::<_, String>(1),
            row.get::<_, String>(2),
        )
    };
    let (pa, ua, sa) = pid(a).await;
    let (pb, _, _) = pid(b).await;
    assert_ne!(pa, pb, "each session has its own pid");
    assert_eq!((ua.as_str(), sa.as_str()), ("app", "app"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisory_locks_are_held_per_session_and_released_with_it() {
    let server = TestServer::start().await;
    let a = server.connect().await;
    let b = server.connect().await;
    let got: bool = a
        .query_one("SELECT pg_try_advisory_lock(42)", &[])
        .await
        .unwrap()
        .get(0);
    assert!(got);
    let other: bool = b
        .query_one("SELECT pg_try_advisory_lock(42)", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!other, "another session cannot take a held lock");
    // Transaction-level locks end with the transaction.
    b.batch_execute("BEGIN").await.unwrap();
    let x: bool = b
        .query_one("SELECT pg_try_advisory_xact_lock(7)", &[])
        .await
        .unwrap()
        .get(0);
    assert!(x);
    let blocked: bool = a
        .query_one("SELECT pg_try_advisory_lock(7)", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!blocked);
    b.batch_execute("COMMIT").await.unwrap();
    let free: bool = a
        .query_one("SELECT pg_try_advisory_lock(7)", &[])
        .await
        .unwrap()
        .get(0);
    assert!(free, "the transaction-level lock went with COMMIT");
    // A waiting lock is granted when the holder disconnects.
    let waiter = tokio::spawn(async move {
        b.batch_execute("SELECT pg_advisory_lock(42)")
            .await
            .unwrap();
        b
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        !waiter.is_finished(),
        "pg_advisory_lock waits for the holder"
    );
    drop(a);
    let b = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
        .await
        .expect("the lock is released when its session ends")
        .unwrap();
    let id: i64 = b
        .query_one("SELECT txid_current()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(id > 0);
    server.stop().await;
}
