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
    let path = dir.join(if pg_url.is_some() {
        "pg.toml"
    } else {
        "sqlite.toml"
    });
    std::fs::write(&path, text).unwrap();
    path
}

async fn unidb(args: &[&str], config: &Path) -> Output {
    let mut c = tokio::process::Command::new(BIN);
    c.args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn");
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
    for r in c
        .query("SELECT id::text || a FROM t ORDER BY id", &[])
        .await
        .unwrap()
    {
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
    assert!(
        v.contains("scratch SQLite: 5 migration(s) up, down, up again"),
        "{v}"
    );
    assert!(
        v.contains("scratch schema on PostgreSQL app: 5 migration(s)"),
        "{v}"
    );
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
    assert_eq!(
        seen[1].0, seen[0].0,
        "columns differ (left: SQLite, right: PostgreSQL)"
    );
    assert_eq!(
        seen[1].1, seen[0].1,
        "constraints differ (left: SQLite, right: PostgreSQL)"
    );
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
    assert!(
        err.contains("migration 0002_broken (up) failed at statement 3 of 3"),
        "{err}"
    );
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
    std::fs::write(
        files.path().join("0003_index.down.sql"),
        "-- unidb: no-transaction\nDROP INDEX CONCURRENTLY t_a_idx;\n",
    )
    .unwrap();
    std::fs::write(
        files.path().join("0004_bad_index.up.sql"),
        "-- unidb: no-transaction\nCREATE INDEX CONCURRENTLY t_b_idx ON t (b);\n",
    )
    .unwrap();
    std::fs::write(
        files.path().join("0004_bad_index.down.sql"),
        "DROP INDEX t_b_idx;\n",
    )
    .unwrap();
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
    assert!(
        refused.contains("refusing to run") && refused.contains("did not finish"),
        "{refused}"
    );
    assert!(refused.contains("unidb migrate repair"), "{refused}");
    std::fs::write(
        files.path().join("0004_bad_index.up.sql"),
        "-- unidb: no-transaction\nCREATE INDEX CONCURRENTLY t_id_a_idx ON t (id, a);\n",
    )
    .unwrap();
    let repaired = migrate(&pg, &["repair"]).await;
    assert!(
        repaired.contains("0004_bad_index: failed mark removed"),
        "{repaired}"
    );
    migrate(&pg, &["up"]).await;
    let st = migrate(&pg, &["status"]).await;
    assert_eq!(states(&st), vec!["applied"; 3], "{st}");
}

/// Migrations that each sleep a little and log that they ran, so that concurrent
/// runs overlap.
fn slow_fixture(n: usize) -> tempfile::TempDir {
    let mut files = vec![(
        "0001_log.up.sql".to_string(),
        "CREATE TABLE applied_log (migration integer NOT NULL);\nINSERT INTO applied_log VALUES (1);\n".to_string(),
    ), ("0001_log.down.sql".to_string(), "DROP TABLE applied_log;\n".to_string())];
    for i in 2..=n {
        files.push((
            format!("{i:04}_step.up.sql"),
            format!("CREATE TABLE step_{i} (a integer);\nSELECT pg_sleep(0.15);\nINSERT INTO applied_log VALUES ({i});\n"),
        ));
        files.push((
            format!("{i:04}_step.down.sql"),
            format!("DROP TABLE step_{i};\nDELETE FROM applied_log WHERE migration = {i};\n"),
        ));
    }
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    fixture(&refs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_apply_each_migration_once() {
    let cluster = PgCluster::start("");
    let files = slow_fixture(6);
    let dir = tempfile::tempdir().unwrap();
    let lite = write_config(dir.path(), None, files.path(), "");
    let pg = write_config(dir.path(), Some(&cluster.app_url()), files.path(), "");
    for config in [&lite, &pg] {
        let runs: Vec<_> = (0..3)
            .map(|_| {
                let config = config.clone();
                tokio::spawn(async move { unidb(&["migrate", "up"], &config).await })
            })
            .collect();
        let mut applied = 0;
        for r in runs {
            let o = r.await.unwrap();
            assert!(o.status.success(), "{}", text(&o));
            applied += String::from_utf8_lossy(&o.stdout)
                .matches("  done in")
                .count();
        }
        assert_eq!(applied, 6, "every migration applied by exactly one run");
        let st = migrate(config, &["status"]).await;
        assert_eq!(states(&st), vec!["applied"; 6], "{st}");
    }
    let c = rusqlite::Connection::open(dir.path().join("app.db")).unwrap();
    let log: Vec<i64> = c
        .prepare("SELECT migration FROM applied_log ORDER BY migration")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(log, vec![1, 2, 3, 4, 5, 6]);
    let pgc = pg_client(&cluster).await;
    let log: Vec<i32> = pgc
        .query("SELECT migration FROM applied_log ORDER BY migration", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(log, vec![1, 2, 3, 4, 5, 6]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_drift_is_refused_until_repair() {
    let files = fixture(&[
        ("0001_a.up.sql", "CREATE TABLE a (x integer);\n"),
        ("0001_a.down.sql", "DROP TABLE a;\n"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let lite = write_config(dir.path(), None, files.path(), "");
    migrate(&lite, &["up"]).await;
    // Line ends converted by a checkout are not an edit.
    std::fs::write(
        files.path().join("0001_a.up.sql"),
        "CREATE TABLE a (x integer);\r\n",
    )
    .unwrap();
    let st = migrate(&lite, &["status"]).await;
    assert_eq!(states(&st), vec!["applied"], "{st}");

    std::fs::write(
        files.path().join("0001_a.up.sql"),
        "-- reformatted\nCREATE TABLE a (\n    x integer\n);\n",
    )
    .unwrap();
    std::fs::write(
        files.path().join("0002_b.up.sql"),
        "CREATE TABLE b (y integer);\n",
    )
    .unwrap();
    std::fs::write(files.path().join("0002_b.down.sql"), "DROP TABLE b;\n").unwrap();
    let st = migrate(&lite, &["status"]).await;
    assert_eq!(states(&st), vec!["checksum drift", "pending"], "{st}");
    assert!(st.contains("hint: checksum drift"), "{st}");
    for args in [&["up"][..], &["down"][..], &["redo"][..]] {
        let err = migrate_fails(&lite, args).await;
        assert!(
            err.contains("0001_a: the up file changed after it was applied"),
            "{err}"
        );
        assert!(err.contains("unidb migrate repair"), "{err}");
    }
    assert_eq!(
        sqlite_tables(&dir.path().join("app.db")),
        vec!["a", "unidb_migrations"]
    );
    let dry = migrate(&lite, &["repair", "--dry-run"]).await;
    assert!(dry.contains("would repair 0001_a: checksum"), "{dry}");
    assert_eq!(
        states(&migrate(&lite, &["status"]).await),
        vec!["checksum drift", "pending"]
    );
    let fixed = migrate(&lite, &["repair"]).await;
    assert!(fixed.contains("repaired 0001_a: checksum"), "{fixed}");
    migrate(&lite, &["up"]).await;
    assert_eq!(
        states(&migrate(&lite, &["status"]).await),
        vec!["applied", "applied"]
    );

    // A file removed after it was applied blocks too; repair forgets it.
    std::fs::remove_file(files.path().join("0002_b.up.sql")).unwrap();
    std::fs::remove_file(files.path().join("0002_b.down.sql")).unwrap();
    assert_eq!(
        states(&migrate(&lite, &["status"]).await),
        vec!["applied", "missing file"]
    );
    let err = migrate_fails(&lite, &["up"]).await;
    assert!(
        err.contains("2_b: applied, but its files are missing"),
        "{err}"
    );
    migrate(&lite, &["repair"]).await;
    assert_eq!(states(&migrate(&lite, &["status"]).await), vec!["applied"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_the_sql_each_backend_would_run_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lite = write_config(dir.path(), None, &platform(), "");
    let out = migrate(&lite, &["up", "--to", "20261125090100", "--dry-run"]).await;
    // The SQLite form after rewriting, with the transaction and the ledger row.
    for expected in [
        "-- 20261125090000_create_projects (up, one transaction)",
        "BEGIN IMMEDIATE;",
        // varchar(n) keeps its length as a CHECK that reports 22001.
        "CREATE TABLE projects (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL CONSTRAINT \"__unidb_len_varchar_",
        "strftime('%Y-%m-%d %H:%M:%f', 'now')",
        "CREATE UNIQUE INDEX projects_name_live_key ON projects(name) WHERE deleted_at IS NULL;",
        "INSERT INTO unidb_migrations (version, name, checksum, execution_ms, success, applied_by) VALUES (20261125090000, 'create_projects',",
        "CREATE TABLE videos (id INTEGER PRIMARY KEY AUTOINCREMENT, project_id INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE",
        "COMMIT;",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(
        !out.contains("bigserial") && !out.contains("timestamptz"),
        "{out}"
    );
    assert!(
        !out.contains("ground_truth_objects"),
        "--to stops at videos:\n{out}"
    );
    // Nothing ran: no table, no ledger, no backup.
    assert!(sqlite_tables(&dir.path().join("app.db")).is_empty());
    assert_eq!(
        states(&migrate(&lite, &["status"]).await),
        vec!["pending"; 5]
    );
    let backups = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("pre-migrate")
        })
        .count();
    assert_eq!(backups, 0);

    // The down direction, once applied.
    migrate(&lite, &["up"]).await;
    let out = migrate(&lite, &["down", "--steps", "2", "--dry-run"]).await;
    assert!(out.contains("DROP TABLE detection_events;"), "{out}");
    assert!(
        out.contains("DELETE FROM unidb_migrations WHERE version = 20261125090300"),
        "{out}"
    );
    assert_eq!(
        states(&migrate(&lite, &["status"]).await),
        vec!["applied"; 5]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_writes_a_pair_and_down_refuses_without_a_down_file() {
    let files = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lite = write_config(dir.path(), None, files.path(), "");
    let out = migrate(&lite, &["create", "add things", "--sequential"]).await;
    assert!(
        out.contains("0001_add_things.up.sql") && out.contains("0001_add_things.down.sql"),
        "{out}"
    );
    std::fs::write(
        files.path().join("0001_add_things.up.sql"),
        "CREATE TABLE things (id bigserial PRIMARY KEY);\n",
    )
    .unwrap();
    std::fs::write(
        files.path().join("0001_add_things.down.sql"),
        "DROP TABLE things;\n",
    )
    .unwrap();
    let out = migrate(&lite, &["create", "seed_things"]).await;
    assert!(
        out.contains("0002_seed_things.up.sql"),
        "numbered like the others: {out}"
    );
    // A data migration without a down file.
    std::fs::write(
        files.path().join("0002_seed_things.up.sql"),
        "INSERT INTO things DEFAULT VALUES;\n",
    )
    .unwrap();
    std::fs::remove_file(files.path().join("0002_seed_things.down.sql")).unwrap();
    migrate(&lite, &["up"]).await;
    let st = migrate(&lite, &["status"]).await;
    assert!(
        st.contains("| no"),
        "the status shows the missing down file: {st}"
    );
    let err = migrate_fails(&lite, &["down", "--to", "0"]).await;
    assert!(err.contains("0002_seed_things: no down file"), "{err}");
    assert!(err.contains("nothing was reverted"), "{err}");
    assert_eq!(
        states(&migrate(&lite, &["status"]).await),
        vec!["applied", "applied"]
    );
    let err = migrate_fails(&lite, &["up", "--to", "7"]).await;
    assert!(
        err.contains("--to 7: no migration has this version"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_finds_what_is_wrong_with_the_files() {
    let dir = tempfile::tempdir().unwrap();
    // A down file that does not undo its up file.
    let files = fixture(&[
        (
            "0001_a.up.sql",
            "CREATE TABLE a (x integer);\nCREATE INDEX a_x ON a (x);\n",
        ),
        ("0001_a.down.sql", "DROP INDEX a_x;\n"),
    ]);
    let lite = write_config(dir.path(), None, files.path(), "");
    let o = unidb(&["migrate", "validate"], &lite).await;
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("0001_a: the down file does not restore the schema"),
        "{out}"
    );
    assert!(
        out.contains("+ table a on a"),
        "the difference is shown: {out}"
    );

    // Unparsable SQL, transaction control, a statement without a SQLite form, a
    // bad directive, a stray file name: all reported at once.
    let files = fixture(&[
        ("0001_a.up.sql", "CREATE TABLE a (x integer;\n"),
        ("0001_a.down.sql", "DROP TABLE a;\n"),
        (
            "0002_b.up.sql",
            "BEGIN;\nCREATE TABLE b (y integer);\nCOMMIT;\n",
        ),
        ("0002_b.down.sql", "DROP TABLE b;\n"),
        (
            "0003_c.up.sql",
            "CREATE TABLE c (z integer);\nLISTEN channel;\n",
        ),
        ("0003_c.down.sql", "DROP TABLE c;\n"),
    ]);
    let lite = write_config(dir.path(), None, files.path(), "");
    let o = unidb(&["migrate", "validate"], &lite).await;
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(out.contains("0001_a.up.sql:1: does not parse"), "{out}");
    assert!(out.contains("must not manage transactions"), "{out}");
    assert!(out.contains("0003_c.up.sql:2: has no SQLite form"), "{out}");
    assert!(out.contains("validation FAILED"), "{out}");

    std::fs::write(
        files.path().join("0004_d.up.sql"),
        "-- unidb: no-transactions\nSELECT 1;\n",
    )
    .unwrap();
    std::fs::write(files.path().join("0005.up.sql"), "SELECT 1;\n").unwrap();
    let o = unidb(&["migrate", "validate"], &lite).await;
    let out = text(&o);
    assert!(
        out.contains("unknown directive `-- unidb: no-transactions`"),
        "{out}"
    );
    assert!(
        out.contains("0005.up.sql: expected <version>_<name>.up.sql"),
        "{out}"
    );

    // Out of order: a migration older than the newest applied one.
    let files = fixture(&[
        ("0002_b.up.sql", "CREATE TABLE b (y integer);\n"),
        ("0002_b.down.sql", "DROP TABLE b;\n"),
    ]);
    let lite = write_config(dir.path(), None, files.path(), "");
    migrate(&lite, &["up"]).await;
    std::fs::write(
        files.path().join("0001_a.up.sql"),
        "CREATE TABLE a (x integer);\n",
    )
    .unwrap();
    std::fs::write(files.path().join("0001_a.down.sql"), "DROP TABLE a;\n").unwrap();
    let st = migrate(&lite, &["status"]).await;
    assert_eq!(
        states(&st),
        vec!["pending (out of order)", "applied"],
        "{st}"
    );
    let err = migrate_fails(&lite, &["validate"]).await;
    assert!(
        err.contains("0001_a: not applied, but older than the applied 0002_b"),
        "{err}"
    );
    let err = migrate_fails(&lite, &["up"]).await;
    assert!(err.contains("would run out of order"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_is_copied_before_migrating_and_restored_on_failure_when_asked() {
    let files = fixture(&[
        (
            "0001_a.up.sql",
            "CREATE TABLE a (x integer);\nINSERT INTO a VALUES (1), (2), (3);\n",
        ),
        ("0001_a.down.sql", "DROP TABLE a;\n"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let lite = write_config(dir.path(), None, files.path(), "migrate_backup_keep = 2");
    let db = dir.path().join("app.db");
    let out = migrate(&lite, &["up"]).await;
    let line = out
        .lines()
        .find(|l| l.starts_with("backup: "))
        .unwrap_or_else(|| panic!("no backup line in {out}"));
    assert!(line.contains("integrity ok"), "{line}");
    let path = line
        .strip_prefix("backup: ")
        .unwrap()
        .split(" (")
        .next()
        .unwrap();
    assert!(Path::new(path).exists(), "{path}");
    assert!(path.contains("app.db.pre-migrate-"), "{path}");

    // A run of two migrations whose second fails: with --restore-on-failure the
    // first is undone too, because the whole file comes back from the copy.
    std::fs::write(
        files.path().join("0002_b.up.sql"),
        "CREATE TABLE b (y integer);\nINSERT INTO b VALUES (1);\n",
    )
    .unwrap();
    std::fs::write(files.path().join("0002_b.down.sql"), "DROP TABLE b;\n").unwrap();
    std::fs::write(
        files.path().join("0003_c.up.sql"),
        "UPDATE a SET x = x * 10;\nINSERT INTO a VALUES ('not a number');\n",
    )
    .unwrap();
    std::fs::write(
        files.path().join("0003_c.down.sql"),
        "UPDATE a SET x = x / 10;\n",
    )
    .unwrap();
    let before = sqlite_state(&db, &["a"]);
    let err = migrate_fails(&lite, &["up", "--restore-on-failure"]).await;
    assert!(
        err.contains("0003_c (up) failed at statement 2 of 2"),
        "{err}"
    );
    assert!(
        err.contains("restored from the copy made before this run"),
        "{err}"
    );
    assert_eq!(
        sqlite_state(&db, &["a"]),
        before,
        "0002_b was undone as well"
    );
    assert_eq!(
        states(&migrate(&lite, &["status"]).await),
        vec!["applied", "pending", "pending"]
    );
    // Without it, 0002_b stays applied and only 0003_c rolls back.
    migrate_fails(&lite, &["up"]).await;
    assert_eq!(
        states(&migrate(&lite, &["status"]).await),
        vec!["applied", "applied", "pending"]
    );
    // Old copies are pruned to migrate_backup_keep.
    let copies = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".pre-migrate-"))
        .count();
    assert_eq!(copies, 2);
}

async fn wait_connect(port: u16, db: &str) -> tokio_postgres::Client {
    let url = format!("host=127.0.0.1 port={port} user=app password=app dbname={db}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
            Ok((c, conn)) => {
                tokio::spawn(conn);
                return c;
            }
            Err(e) if Instant::now() > deadline => panic!("unidb did not start: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

struct Serve(std::process::Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_on_start_and_the_admin_console() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::pg::free_port();
    let config = write_config(dir.path(), None, &platform(), "migrate_on_start = true");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "listen = \"127.0.0.1:0\"\nadmin_users",
        &format!("listen = \"127.0.0.1:{port}\"\nadmin_users"),
    );
    std::fs::write(&config, text).unwrap();
    let _serve = Serve(
        std::process::Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let app = wait_connect(port, "app").await;
    // The schema was there before the first client got in.
    let n: i64 = app
        .query_one("SELECT count(*) FROM detection_events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let console = wait_connect(port, "unidb").await;
    let rows = |msgs: Vec<tokio_postgres::SimpleQueryMessage>| -> Vec<Vec<String>> {
        msgs.into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or("").to_string())
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    };
    let st = rows(console.simple_query("MIGRATE STATUS").await.unwrap());
    assert_eq!(st.len(), 5);
    assert!(st.iter().all(|r| r[2] == "applied"), "{st:?}");
    assert!(st[0][5].ends_with("(migrate_on_start)"), "{st:?}");

    let down = rows(
        console
            .simple_query("MIGRATE DOWN app STEPS 2")
            .await
            .unwrap(),
    );
    assert_eq!(down.len(), 2, "{down:?}");
    assert_eq!(down[0][0], "20261125090400_create_detection_events");
    assert_eq!(down[0][1], "down");
    // The server's own sessions see the change at once.
    let e = app
        .query_one("SELECT count(*) FROM detection_events", &[])
        .await
        .unwrap_err();
    assert_eq!(common::sqlstate(&e), "42P01");
    let st = rows(console.simple_query("MIGRATE STATUS app").await.unwrap());
    assert_eq!(st.iter().filter(|r| r[2] == "pending").count(), 2);

    let dry = rows(console.simple_query("MIGRATE UP DRY RUN").await.unwrap());
    assert!(dry.is_empty(), "a dry run applies nothing");
    // Pause traffic, migrate, resume: PAUSE holds clients, not the migration.
    console.simple_query("PAUSE app").await.unwrap();
    let up = tokio::time::timeout(Duration::from_secs(20), console.simple_query("MIGRATE UP"))
        .await
        .expect("MIGRATE UP is not held by PAUSE")
        .unwrap();
    console.simple_query("RESUME app").await.unwrap();
    let up = rows(up);
    assert_eq!(up.len(), 2, "{up:?}");
    assert!(up.iter().all(|r| r[1] == "up"));
    let st = rows(console.simple_query("MIGRATE STATUS").await.unwrap());
    assert!(st.iter().all(|r| r[2] == "applied"), "{st:?}");
    assert!(st[4][5].contains("app (admin console)"), "{st:?}");
    // The table is back, with its PostgreSQL types.
    let stmt = app
        .prepare("SELECT metrics FROM test_sessions")
        .await
        .unwrap();
    assert_eq!(
        stmt.columns()[0].type_(),
        &tokio_postgres::types::Type::JSONB
    );

    let e = console
        .simple_query("MIGRATE UP nosuchdb")
        .await
        .unwrap_err();
    assert_eq!(common::sqlstate(&e), "3D000");
    let e = console.simple_query("MIGRATE SIDEWAYS").await.unwrap_err();
    assert_eq!(common::sqlstate(&e), "42601");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_prints_identical_metrics_on_sqlite_and_postgres() {
    let cluster = PgCluster::start("");
    let dir = tempfile::tempdir().unwrap();
    let lite = write_config(dir.path(), None, &platform(), "");
    let pg = write_config(dir.path(), Some(&cluster.app_url()), &platform(), "");
    let args = [
        "demo",
        "--seed",
        "11",
        "--projects",
        "3",
        "--videos",
        "3",
        "--frames",
        "60",
    ];
    let mut tables = Vec::new();
    for config in [&lite, &pg] {
        // Without the schema the demo says what to do.
        let o = unidb(&args, config).await;
        assert!(!o.status.success());
        assert!(
            text(&o).contains("run `unidb migrate up` first, or pass --migrate"),
            "{}",
            text(&o)
        );
        let mut with = args.to_vec();
        with.push("--migrate");
        let o = unidb(&with, config).await;
        assert!(o.status.success(), "{}", text(&o));
        // A second run replaces the first: same output.
        let o = unidb(&args, config).await;
        assert!(o.status.success(), "{}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let table: String = out
            .lines()
            .skip_while(|l| !l.contains("class_label"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(table.lines().count() >= 4, "{out}");
        tables.push(table);
    }
    assert_eq!(
        tables[0], tables[1],
        "SQLite (left) and PostgreSQL (right) differ"
    );
    // And both are what the generator knows to be true.
    let data = unidb::ops::demo::generate(&unidb::ops::demo::DemoOptions {
        seed: 11,
        projects: 3,
        videos_per_project: 3,
        frames_per_video: 60,
    });
    let expected = unidb::ops::table::render(&unidb::ops::demo::COLUMNS, &data.expected());
    assert_eq!(tables[0], expected.trim_end());
    assert!(tables[0].contains(" all "), "{}", tables[0]);
    // Soft-deleted rows are in the database but not in the metrics.
    let pgc = pg_client(&cluster).await;
    let deleted: i64 = pgc
        .query_one(
            "SELECT count(*) FROM videos WHERE deleted_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(deleted >= 1);
}

fn pgbench_result(out: &Output) -> (u64, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "pgbench: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let processed: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no transaction count in {stdout}"));
    let failed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of failed transactions: "))
        .unwrap_or_else(|| panic!("no failure count in {stdout}"))
        .to_string();
    (processed, failed)
}

/// Expand/contract on PostgreSQL while pgbench runs through unidb: add a column
/// with a default, backfill it, switch the application to it, drop the old column.
/// A report holding a lock on the table makes the first DDL time out
/// (`migrate_lock_timeout`) and retry instead of stalling the traffic behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expand_contract_under_load_without_failed_transactions() {
    let cluster = PgCluster::start("");
    let files = fixture(&[
        (
            "0001_items.up.sql",
            "CREATE TABLE items (id bigserial PRIMARY KEY, qty integer NOT NULL DEFAULT 0, legacy_code text NOT NULL);\n\
             INSERT INTO items (legacy_code) SELECT 'L' || g FROM generate_series(1, 1000) AS g;\n",
        ),
        ("0001_items.down.sql", "DROP TABLE items;\n"),
        // Expand: a new column with a default is a catalog-only change.
        (
            "0002_add_code.up.sql",
            "ALTER TABLE items ADD COLUMN code text NOT NULL DEFAULT '';\n",
        ),
        ("0002_add_code.down.sql", "ALTER TABLE items DROP COLUMN code;\n"),
        // Data migration: backfill.
        (
            "0003_backfill_code.up.sql",
            "UPDATE items SET code = legacy_code WHERE code = '';\n",
        ),
        ("0003_backfill_code.down.sql", "UPDATE items SET code = '';\n"),
        // Contract, once the application reads the new column only.
        (
            "0004_drop_legacy_code.up.sql",
            "ALTER TABLE items DROP COLUMN legacy_code;\n",
        ),
        (
            "0004_drop_legacy_code.down.sql",
            "ALTER TABLE items ADD COLUMN legacy_code text NOT NULL DEFAULT '';\nUPDATE items SET legacy_code = code;\n",
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        Some(&cluster.app_url()),
        files.path(),
        "migrate_lock_timeout = \"200ms\"\nmigrate_lock_retries = 10",
    );
    migrate(&config, &["up", "--to", "1"]).await;
    let proxy = common::pg::pooler(&cluster.app_url(), "pool_size = 8").await;
    let port = proxy.addr.port();
    let old_app = dir.path().join("old.sql");
    std::fs::write(
        &old_app,
        "\\set id random(1, 1000)\nUPDATE items SET qty = qty + 1 WHERE id = :id;\nSELECT legacy_code FROM items WHERE id = :id;\n",
    )
    .unwrap();
    let new_app = dir.path().join("new.sql");
    std::fs::write(
        &new_app,
        "\\set id random(1, 1000)\nUPDATE items SET qty = qty + 1 WHERE id = :id;\nSELECT code FROM items WHERE id = :id;\n",
    )
    .unwrap();
    let bench = |script: &Path, seconds: &str| {
        let script = script.to_path_buf();
        let seconds = seconds.to_string();
        tokio::task::spawn_blocking(move || {
            common::pgbench(
                port,
                &[
                    "-n",
                    "-c",
                    "4",
                    "-j",
                    "2",
                    "-T",
                    &seconds,
                    "-f",
                    script.to_str().unwrap(),
                ],
            )
            .wait_with_output()
            .unwrap()
        })
    };

    // Phase 1: the old application runs while the column is added and backfilled.
    let load = bench(&old_app, "5");
    tokio::time::sleep(Duration::from_millis(800)).await;
    // A long report holds a lock on the table for a while.
    let report = pg_client(&cluster).await;
    report
        .batch_execute("BEGIN; SELECT count(*) FROM items")
        .await
        .unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        report.batch_execute("COMMIT").await.unwrap();
    });
    let started = Instant::now();
    let out = migrate(&config, &["up", "--to", "3"]).await;
    release.await.unwrap();
    assert!(
        out.contains("canceling statement due to lock timeout (55P03)") && out.contains("retrying"),
        "the blocked DDL gave up and retried:\n{out}"
    );
    assert!(out.contains("2 migration(s) done"), "{out}");
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "it waited for the report"
    );
    let (processed, failed) = pgbench_result(&load.await.unwrap());
    assert!(processed > 100, "{processed}");
    assert!(failed.starts_with("0 "), "failed transactions: {failed}");

    // Phase 2: the new application runs while the old column is dropped.
    let load = bench(&new_app, "4");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let out = migrate(&config, &["up"]).await;
    assert!(out.contains("applying 0004_drop_legacy_code"), "{out}");
    let (processed, failed) = pgbench_result(&load.await.unwrap());
    assert!(processed > 100, "{processed}");
    assert!(failed.starts_with("0 "), "failed transactions: {failed}");

    let c = pg_client(&cluster).await;
    let columns: Vec<String> = c
        .query(
            "SELECT column_name::text FROM information_schema.columns WHERE table_name = 'items' ORDER BY ordinal_position",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(columns, vec!["id", "qty", "code"]);
    let backfilled: i64 = c
        .query_one("SELECT count(*) FROM items WHERE code LIKE 'L%'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(backfilled, 1000);
    let updates: i64 = c
        .query_one("SELECT sum(qty)::bigint FROM items", &[])
        .await
        .unwrap()
        .get(0);
    assert!(updates > 200, "the load really ran: {updates}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_later_in_the_run_stops_it_before_anything_is_applied() {
    let files = fixture(&[
        ("0001_a.up.sql", "CREATE TABLE a (x integer);\n"),
        ("0001_a.down.sql", "DROP TABLE a;\n"),
        (
            "0002_b.up.sql",
            "CREATE TABLE b (y text DEFAULT 'unterminated);\n",
        ),
        ("0002_b.down.sql", "DROP TABLE b;\n"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let lite = write_config(dir.path(), None, files.path(), "");
    let out = migrate_fails(&lite, &["up"]).await;
    assert!(out.contains("0002"), "{out}");
    // The good first file did not run either.
    let st = migrate(&lite, &["status"]).await;
    assert_eq!(states(&st), vec!["pending", "pending"], "{st}");

    // redo: down and up of the newest in one run; a failing up half with
    // --restore-on-failure leaves the database as before the redo.
    std::fs::write(
        files.path().join("0002_b.up.sql"),
        "CREATE TABLE b (y text);\n",
    )
    .unwrap();
    migrate(&lite, &["up"]).await;
    std::fs::write(
        files.path().join("0002_b.up.sql"),
        "CREATE TABLE b (y text);\nINSERT INTO no_such_table VALUES (1);\n",
    )
    .unwrap();
    migrate(&lite, &["repair"]).await;
    let out = migrate_fails(&lite, &["redo", "--restore-on-failure"]).await;
    assert!(out.contains("restor"), "{out}");
    let st = migrate(&lite, &["status"]).await;
    assert_eq!(states(&st), vec!["applied", "applied"], "{st}");
}
