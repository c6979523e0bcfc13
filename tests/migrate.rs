//! `unidb migrate` and `unidb demo` as a user runs them (the binary), on a SQLite
//! file and on a real PostgreSQL 15 cluster: the platform's migrations up, down to
//! zero and up again with the same status on both; failures that change nothing;
//! concurrent runs; checksum drift; dry runs; validation; backups; the admin
//! console; migrate_on_start; the demo's metrics; expand/contract under load.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::pg::PgCluster;

const BIN: &str = env!("CARGO_BIN_EXE_unidb");

/// The validation platform's migrations, as shipped.
fn platform() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations")
}

const PLATFORM_TABLES: [&str; 6] = [
    "detection_events",
    "ground_truth_objects",
    "projects",
    "test_sessions",
    "unidb_migrations",
    "videos",
];

/// A config file with database `app` on SQLite (`pg_url` None) or PostgreSQL.
fn write_config(dir: &Path, pg_url: Option<&str>, migrations: &Path, extra: &str) -> PathBuf {
    let database = match pg_url {
        None => format!(
            "backend = \"sqlite\"\npath = \"{}/app.db\"\nbusy_timeout = \"10s\"",
            dir.display()
        ),
        Some(url) => format!("backend = \"postgres\"\nurl = \"{url}\""),
    };
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_users = ["app"]

[http]
listen = "127.0.0.1:0"

[[users]]
name = "app"
password = "app"

[databases.app]
{database}
migrations = "{}"
{extra}
"#,
        migrations.display()
    );
    let path = dir.join(if pg_url.is_some() { "pg.toml" } else { "sqlite.toml" });
    std::fs::write(&path, text).unwrap();
    path
}

async fn unidb(args: &[&str], config: &Path) -> Output {
    let mut c = tokio::process::Command::new(BIN);
    c.args(args).arg("--config").arg(config).env("RUST_LOG", "warn");
    c.output().await.expect("run unidb")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `unidb migrate <args>` and returns stdout; fails the test on a failure.
async fn migrate(config: &Path, args: &[&str]) -> String {
    let mut all = vec!["migrate"];
    all.extend_from_slice(args);
    let o = unidb(&all, config).await;
    assert!(
        o.status.success(),
        "unidb migrate {args:?} failed:\n{}",
        text(&o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `unidb migrate <args>`, which must fail; returns stdout and stderr.
async fn migrate_fails(config: &Path, args: &[&str]) -> String {
    let mut all = vec!["migrate"];
    all.extend_from_slice(args);
    let o = unidb(&all, config).await;
    assert!(
        !o.status.success(),
        "unidb migrate {args:?} should have failed:\n{}",
        text(&o)
    );
    text(&o)
}

/// (version, name, state) of every line of a status table.
fn status_rows(out: &str) -> Vec<(String, String, String)> {
    out.lines()
        .skip_while(|l| !l.starts_with("---"))
        .skip(1)
        .take_while(|l| l.contains('|'))
        .map(|l| {
            let cells: Vec<String> = l.split('|').map(|c| c.trim().to_string()).collect();
            (cells[0].clone(), cells[1].clone(), cells[2].clone())
        })
        .collect()
}

fn states(out: &str) -> Vec<String> {
    status_rows(out).into_iter().map(|r| r.2).collect()
}

async fn pg_client(cluster: &PgCluster) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(
        &cluster.direct_url("app", "app", "app"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    c
}

async fn pg_tables(c: &tokio_postgres::Client) -> Vec<String> {
    c.query(
        "SELECT relname::text FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' ORDER BY 1",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

fn sqlite_tables(db: &Path) -> Vec<String> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut s = c
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%' \
             AND name NOT LIKE '\\_\\_unidb%' ESCAPE '\\' ORDER BY name",
        )
        .unwrap();
    s.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Everything of a SQLite file a migration could change: schema, side catalog,
/// ledger and the rows of `extra` tables.
fn sqlite_state(db: &Path, extra: &[&str]) -> Vec<String> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut out = Vec::new();
    let mut dump = |sql: &str| {
        let mut s = c.prepare(sql).unwrap();
        let n = s.column_count();
        let rows: Vec<String> = s
            .query_map([], |r| {
                Ok((0..n)
                    .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                    .collect::<Vec<_>>()
                    .join(","))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        out.push(format!("{sql}: {rows:?}"));
    };
    dump("SELECT type, name, sql FROM sqlite_master ORDER BY name");
    dump("SELECT * FROM __unidb_columns ORDER BY 1, 2");
    dump("SELECT * FROM unidb_migrations ORDER BY version");
    for t in extra {
        dump(&format!("SELECT * FROM {t} ORDER BY 1"));
    }
    out
}

fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} (SQLSTATE {})", d.message(), d.code().code()),
        None => e.to_string(),
    }
}

/// Tables, ledger rows and the rows of `t` on PostgreSQL.
async fn pg_state(c: &tokio_postgres::Client) -> Vec<String> {
    let mut s = pg_tables(c).await;
    for r in c
        .query(
            "SELECT version::text || name || checksum || success::text FROM unidb_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
    {
        s.push(r.get(0));
    }
    for r in c.query("SELECT id::text || a FROM t ORDER BY id", &[]).await.unwrap() {
        s.push(r.get(0));
    }
    s
}

/// A directory of migration files from (file name, text) pairs.
fn fixture(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, sql) in files {
        std::fs::write(dir.path().join(name), sql).unwrap();
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_schema_up_down_to_zero_and_up_again_with_the_same_status_on_both() {
    let cluster = PgCluster::start("");
    let dir = tempfile::tempdir().unwrap();
    let lite = write_config(dir.path(), None, &platform(), "");
    let pg = write_config(dir.path(), Some(&cluster.app_url()), &platform(), "");
    let pgc = pg_client(&cluster).await;
    let db = dir.path().join("app.db");

    let mut statuses = Vec::new();
    for config in [&lite, &pg] {
        let before = migrate(config, &["status"]).await;
        assert_eq!(states(&before), vec!["pending"; 5], "{before}");

        let up = migrate(config, &["up"]).await;
        assert!(up.contains("5 migration(s) done"), "{up}");
        let applied = migrate(config, &["status"]).await;
        assert_eq!(states(&applied), vec!["applied"; 5], "{applied}");
        // A second run is a no-op.
        let again = migrate(config, &["up"]).await;
        assert!(again.contains("is up to date: 5 applied"), "{again}");

        let down = migrate(config, &["down", "--to", "0"]).await;
        assert!(down.contains("reverting 5 migration(s)"), "{down}");
        let zero = migrate(config, &["status"]).await;
        assert_eq!(states(&zero), vec!["pending"; 5], "{zero}");

        migrate(config, &["up"]).await;
        let redo = migrate(config, &["redo"]).await;
        assert!(
            redo.contains("reverting 20261125090400_create_detection_events")
                && redo.contains("applying 20261125090400_create_detection_events"),
            "{redo}"
        );
        statuses.push(status_rows(&migrate(config, &["status"]).await));
    }
    assert_eq!(statuses[0], statuses[1], "status differs between backends");
    assert_eq!(statuses[0].len(), 5);
    assert!(statuses[0].iter().all(|r| r.2 == "applied"));
    assert_eq!(sqlite_tables(&db), PLATFORM_TABLES);
    assert_eq!(pg_tables(&pgc).await, PLATFORM_TABLES);

    // Both ledgers hold the same versions, names and checksums.
    let pg_ledger: Vec<(i64, String, String, bool)> = pgc
        .query(
            "SELECT version, name, checksum, success FROM unidb_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let c = rusqlite::Connection::open(&db).unwrap();
    let lite_ledger: Vec<(i64, String, String, bool)> = c
        .prepare("SELECT version, name, checksum, success FROM unidb_migrations ORDER BY version")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(pg_ledger, lite_ledger);
    // On SQLite the migrations went through the rewriting: the side catalog has
    // the PostgreSQL types.
    let ty: String = c
        .query_row(
            "SELECT pg_type FROM __unidb_columns WHERE table_name = 'test_sessions' AND column_name = 'metrics'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(ty, "jsonb");

    // The shipped set validates on a scratch SQLite database and a scratch schema
    // on PostgreSQL, and leaves no scratch schema behind.
    let v = migrate(&pg, &["validate"]).await;
    assert!(v.contains("scratch SQLite: 5 migration(s) up, down, up again"), "{v}");
    assert!(v.contains("scratch schema on PostgreSQL app: 5 migration(s)"), "{v}");
    assert!(v.contains("validation passed"), "{v}");
    let schemas: i64 = pgc
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'unidb_validate%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(schemas, 0);
}

/// Column names, types, nullability and constraints of the platform's tables, read
/// through unidb's `information_schema` on each backend, compare equal. (NOT NULL
/// shows in `is_nullable`; PostgreSQL's `_not_null` CHECK entries are left out of
/// the constraint counts.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_compare_equal_through_information_schema() {
    let cluster = PgCluster::start("");
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[http]
listen = "127.0.0.1:0"
[[users]]
name = "app"
password = "app"
[databases.lite]
backend = "sqlite"
path = "{}/lite.db"
migrations = "{}"
[databases.pg]
backend = "postgres"
url = "{}"
migrations = "{}"
"#,
        dir.path().display(),
        platform().display(),
        cluster.app_url(),
        platform().display()
    );
    let config = dir.path().join("both.toml");
    std::fs::write(&config, &text).unwrap();
    for db in ["lite", "pg"] {
        migrate(&config, &["up", "--database", db]).await;
    }
    let server = common::TestServer::start_config(tempfile::tempdir().unwrap(), &text).await;
    let tables = PLATFORM_TABLES
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut seen = Vec::new();
    // PostgreSQL first: its answers are checked before SQLite's are compared.
    for db in ["pg", "lite"] {
        let c = server.try_connect("app", "app", db).await.unwrap();
        let columns: Vec<String> = c
            .query(
                &format!(
                    "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text \
                     FROM information_schema.columns WHERE table_name IN ({tables}) \
                     ORDER BY table_name, column_name"
                ),
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("information_schema.columns on {db}: {}", db_message(&e)))
            .iter()
            .map(|r| {
                format!(
                    "{}.{} {} {}",
                    r.get::<_, String>(0),
                    r.get::<_, String>(1),
                    r.get::<_, String>(2),
                    r.get::<_, String>(3)
                )
            })
            .collect();
        let constraints: Vec<String> = c
            .query(
                &format!(
                    "SELECT table_name::text, constraint_type::text, count(*) \
                     FROM information_schema.table_constraints \
                     WHERE table_name IN ({tables}) AND constraint_name::text NOT LIKE '%\\_not\\_null' \
                     GROUP BY table_name, constraint_type ORDER BY table_name, constraint_type"
                ),
                &[],
            )
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "information_schema.table_constraints on {db}: {}",
                    db_message(&e)
                )
            })
            .iter()
            .map(|r| {
                format!(
                    "{} {} {}",
                    r.get::<_, String>(0),
                    r.get::<_, String>(1),
                    r.get::<_, i64>(2)
                )
            })
            .collect();
        if db == "pg" {
            // What the migrations declare.
            assert!(columns.contains(&"test_sessions.metrics jsonb YES".to_string()));
            assert!(columns.contains(&"projects.name character varying NO".to_string()));
            assert!(constraints.contains(&"detection_events FOREIGN KEY 3".to_string()));
            assert!(constraints.contains(&"detection_events CHECK 8".to_string()));
        }
        seen.push((columns, constraints));
    }
    assert_eq!(seen[1].0, seen[0].0, "columns differ (left: SQLite, right: PostgreSQL)");
    assert_eq!(seen[1].1, seen[0].1, "constraints differ (left: SQLite, right: PostgreSQL)");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_migration_leaves_database_and_ledger_as_they_were() {
    let cluster = PgCluster::start("");
    let files = fixture(&[
        (
            "0001_base.up.sql",
            "CREATE TABLE t (id integer PRIMARY KEY, a text NOT NULL);\nINSERT INTO t VALUES (1, 'one'), (2, 'two');\n",
        ),
        ("0001_base.down.sql", "DROP TABLE t;\n"),
        (
            "0002_broken.up.sql",
            "-- creates a table and changes data, then fails\nCREATE TABLE u (b integer);\nUPDATE t SET a = 'changed';\nINSERT INTO no_such_table VALUES (1);\n",
        ),
        ("0002_broken.down.sql", "DROP TABLE u;\n"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let lite = write_config(dir.path(), None, files.path(), "");
    let pg = write_config(dir.path(), Some(&cluster.app_url()), files.path(), "");
    let db = dir.path().join("app.db");
    let pgc = pg_client(&cluster).await;

    // SQLite.
    migrate(&lite, &["up", "--to", "0001"]).await;
    let before = sqlite_state(&db, &["t"]);
    let err = migrate_fails(&lite, &["up"]).await;
    assert!(err.contains("migration 0002_broken (up) failed at statement 3 of 3"), "{err}");
    assert!(err.contains("line 4"), "{err}");
    assert!(err.contains("SQLSTATE 42P01"), "{err}");
    assert!(err.contains("rolled back"), "{err}");
    assert_eq!(sqlite_state(&db, &["t"]), before);

    // PostgreSQL.
    migrate(&pg, &["up", "--to", "1"]).await;
    let before = pg_state(&pgc).await;
    assert_eq!(before.len(), 2 + 1 + 2, "{before:?}");
    let err = migrate_fails(&pg, &["up"]).await;
    assert!(err.contains("failed at statement 3 of 3"), "{err}");
    assert!(err.contains("SQLSTATE 42P01"), "{err}");
    assert_eq!(pg_state(&pgc).await, before);

    // Outside a transaction (CREATE INDEX CONCURRENTLY) a failure is recorded as
    // such and blocks further runs until repaired.
    std::fs::remove_file(files.path().join("0002_broken.up.sql")).unwrap();
    std::fs::remove_file(files.path().join("0002_broken.down.sql")).unwrap();
    std::fs::write(
        files.path().join("0003_index.up.sql"),
        "-- unidb: no-transaction\nCREATE INDEX CONCURRENTLY t_a_idx ON t (a);\n",
    )
    .unwrap();
    std::fs::write(files.path().join("0003_index.down.sql"), "-- unidb: no-transaction\nDROP INDEX CONCURRENTLY t_a_idx;\n").unwrap();
    std::fs::write(
        files.path().join("0004_bad_index.up.sql"),
        "-- unidb: no-transaction\nCREATE INDEX CONCURRENTLY t_b_idx ON t (b);\n",
    )
    .unwrap();
    std::fs::write(files.path().join("0004_bad_index.down.sql"), "DROP INDEX t_b_idx;\n").unwrap();
    let err = migrate_fails(&pg, &["up"]).await;
    assert!(err.contains("0004_bad_index (up) failed"), "{err}");
    assert!(err.contains("ran outside a transaction"), "{err}");
    let st = migrate(&pg, &["status"]).await;
    assert_eq!(states(&st), vec!["applied", "applied", "failed"], "{st}");
    let valid: bool = pgc
        .query_one(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 't_a_idx'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(valid, "the concurrent index was built");
    let refused = migrate_fails(&pg, &["up"]).await;
    assert!(refused.contains("refusing to run") && refused.contains("did not finish"), "{refused}");
    assert!(refused.contains("unidb migrate repair"), "{refused}");
    std::fs::write(
        files.path().join("0004_bad_index.up.sql"),
        "-- unidb: no-transaction\nCREATE INDEX CONCURRENTLY t_id_a_idx ON t (id, a);\n",
    )
    .unwrap();
    let repaired = migrate(&pg, &["repair"]).await;
    assert!(repaired.contains("0004_bad_index: failed mark removed"), "{repaired}");
    migrate(&pg, &["up"]).await;
    let st = migrate(&pg, &["status"]).await;
    assert_eq!(states(&st), vec!["applied"; 3], "{st}");
}

