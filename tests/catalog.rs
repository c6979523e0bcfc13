//! The emulated `pg_catalog` and `information_schema` of the SQLite backend, compared
//! with a real PostgreSQL 15 holding the same schema: psql's meta-commands print the
//! same tables, and `information_schema` reports the same columns, types,
//! nullability and constraints.

mod common;

use std::process::Command;

use common::pg::PgCluster;
use common::TestServer;

/// A schema whose every part PostgreSQL and unidb print alike.
const SCHEMA: &str = "
CREATE TABLE projects (
    id serial PRIMARY KEY,
    name varchar(100) NOT NULL UNIQUE,
    code char(4),
    budget numeric(12,2),
    active boolean DEFAULT true,
    priority integer NOT NULL DEFAULT 1,
    CHECK (priority > 0)
);
CREATE TABLE videos (
    id bigserial PRIMARY KEY,
    project_id integer NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    parent_id bigint REFERENCES videos(id) ON DELETE SET NULL,
    filename text NOT NULL,
    frames integer,
    CONSTRAINT frames_positive CHECK (frames > 0)
);
CREATE TABLE tags (
    video_id bigint NOT NULL REFERENCES videos(id),
    tag text NOT NULL,
    PRIMARY KEY (video_id, tag)
);
CREATE INDEX videos_project_idx ON videos (project_id);
CREATE UNIQUE INDEX videos_file_idx ON videos (project_id, filename);
CREATE INDEX videos_big_idx ON videos (frames) WHERE frames > 1000;
CREATE VIEW active_projects AS SELECT id, name FROM projects WHERE active;
COMMENT ON TABLE projects IS 'Projects under validation';
COMMENT ON COLUMN projects.name IS 'Display name';
";

/// Runs psql as user `app` over TCP; returns stdout, or panics with stderr.
fn psql(port: u16, command: &str) -> String {
    let out = Command::new("psql")
        .env("PGPASSWORD", "app")
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "app",
            "-d",
            "app",
        ])
        .args(["-v", "ON_ERROR_STOP=1", "-c", command])
        .output()
        .expect("psql (apt-get install postgresql-client)");
    assert!(
        out.status.success(),
        "psql {command:?} on port {port} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The cluster with `app` as the owner of everything, and unidb with the same
/// schema created through it.
async fn both() -> (PgCluster, TestServer) {
    let pg = PgCluster::start("");
    let server = TestServer::start().await;
    psql(pg.port, SCHEMA);
    psql(server.addr.port(), SCHEMA);
    (pg, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_meta_commands_print_what_postgresql_prints() {
    let (pg, server) = both().await;
    for command in [
        "\\dt",
        "\\d",
        "\\di",
        "\\dv",
        "\\ds",
        "\\d projects",
        "\\d videos",
        "\\d tags",
        "\\d+ projects",
        "\\d active_projects",
        "\\d videos_file_idx",
    ] {
        let want = psql(pg.port, command);
        let got = psql(server.addr.port(), command);
        assert_eq!(
            got, want,
            "{command}: unidb printed\n{got}\nPostgreSQL printed\n{want}"
        );
    }
    // Lists whose other rows differ by nature (PostgreSQL's template databases,
    // built-in roles): the application's own entries are there.
    let l = psql(server.addr.port(), "\\l");
    assert!(l.lines().any(|r| r.trim_start().starts_with("app ")), "{l}");
    let du = psql(server.addr.port(), "\\du");
    assert!(du.contains("app"), "{du}");
    let dn = psql(server.addr.port(), "\\dn");
    assert!(
        dn.lines().any(|r| r.trim_start().starts_with("public")),
        "{dn}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn information_schema_matches_postgresql() {
    let (pg, server) = both().await;
    let queries = [
        "SELECT table_name, table_type FROM information_schema.tables
         WHERE table_schema = 'public' ORDER BY 1",
        "SELECT table_name, column_name, ordinal_position, data_type, is_nullable,
                character_maximum_length, numeric_precision, numeric_scale, udt_name
         FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 3",
        // Not-null constraints are named after oids, which differ.
        "SELECT table_name, constraint_name, constraint_type FROM information_schema.table_constraints
         WHERE constraint_schema = 'public' AND constraint_name NOT LIKE '%_not_null' ORDER BY 1, 2",
        "SELECT table_name, constraint_type, count(*) FROM information_schema.table_constraints
         WHERE constraint_schema = 'public' GROUP BY 1, 2 ORDER BY 1, 2",
        "SELECT constraint_name, table_name, column_name, ordinal_position,
                position_in_unique_constraint
         FROM information_schema.key_column_usage WHERE table_schema = 'public' ORDER BY 1, 4",
        "SELECT constraint_name, unique_constraint_name, match_option, update_rule, delete_rule
         FROM information_schema.referential_constraints WHERE constraint_schema = 'public'
         ORDER BY 1",
        "SELECT schema_name FROM information_schema.schemata WHERE schema_name = 'public'",
        "SELECT c.relname, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull
         FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
         WHERE c.relname IN ('projects', 'videos') AND a.attnum > 0 ORDER BY 1, a.attnum",
        "SELECT c.conname, c.contype, pg_catalog.pg_get_constraintdef(c.oid, true)
         FROM pg_catalog.pg_constraint c JOIN pg_catalog.pg_class t ON t.oid = c.conrelid
         WHERE t.relname = 'videos' ORDER BY 1",
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'videos' ORDER BY 1",
        "SELECT 'videos'::regclass::oid = (SELECT oid FROM pg_class WHERE relname = 'videos')",
        // What psql's tab completion sends for `SELECT * FROM proj<TAB>` and for the
        // columns of `projects`.
        "SELECT pg_catalog.quote_ident(c.relname) FROM pg_catalog.pg_class c
         WHERE c.relkind IN ('r', 'S', 'v', 'm', 'f', 'p')
           AND substring(pg_catalog.quote_ident(c.relname),1,4)='proj'
           AND pg_catalog.pg_table_is_visible(c.oid)
           AND c.relnamespace <> (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'pg_catalog')
         UNION SELECT pg_catalog.quote_ident(n.nspname) || '.' FROM pg_catalog.pg_namespace n
         WHERE substring(pg_catalog.quote_ident(n.nspname) || '.',1,4)='proj'
           AND (SELECT pg_catalog.count(*) FROM pg_catalog.pg_namespace
                WHERE substring(pg_catalog.quote_ident(nspname) || '.',1,4) =
                      substring('proj',1,pg_catalog.length(pg_catalog.quote_ident(nspname))+1)) > 1
         ORDER BY 1 LIMIT 1000",
        "SELECT pg_catalog.quote_ident(attname) FROM pg_catalog.pg_attribute a, pg_catalog.pg_class c
         WHERE c.oid = a.attrelid AND a.attnum > 0 AND NOT a.attisdropped
           AND substring(pg_catalog.quote_ident(attname),1,1)='b'
           AND (pg_catalog.quote_ident(relname)='projects' OR '\"' || relname || '\"'='projects')
           AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY 1 LIMIT 1000",
        "SELECT obj_description('projects'::regclass, 'pg_class'),
                col_description('projects'::regclass, 2)",
    ];
    for q in queries {
        let want = psql(pg.port, q);
        let got = psql(server.addr.port(), q);
        assert_eq!(
            got, want,
            "{q}: unidb printed\n{got}\nPostgreSQL printed\n{want}"
        );
    }
    // The catalog follows DDL, also inside a transaction that is rolled back.
    let c = server.connect().await;
    c.batch_execute("BEGIN; ALTER TABLE tags ADD COLUMN weight real")
        .await
        .unwrap();
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'tags'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
    c.batch_execute("ROLLBACK").await.unwrap();
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = $1",
            &[&"tags"],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    // A name that is no relation is PostgreSQL's error.
    let e = c.query("SELECT 'nosuch'::regclass", &[]).await.unwrap_err();
    assert_eq!(common::sqlstate(&e), "42P01", "{e:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_changes_by_another_process_are_seen() {
    let server = TestServer::start().await;
    let c = server.connect().await;
    c.batch_execute("CREATE TABLE flags (id int PRIMARY KEY); INSERT INTO flags VALUES (1)")
        .await
        .unwrap();
    assert_eq!(
        c.query_one("SELECT * FROM flags", &[]).await.unwrap().len(),
        1
    );
    // Another process (here a plain SQLite connection, as `unidb migrate` or the
    // sqlite3 shell would) adds a boolean column and records its type.
    let other = rusqlite::Connection::open(server.dir.path().join("app.db")).unwrap();
    other
        .execute_batch(
            "ALTER TABLE flags ADD COLUMN on_call INTEGER DEFAULT 1;
             INSERT INTO __unidb_columns (table_name, column_name, ordinal, pg_type)
             VALUES ('flags', 'on_call', 1, 'bool');",
        )
        .unwrap();
    drop(other);
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let rows = c.simple_query("SELECT * FROM flags").await.unwrap();
    let row = rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .expect("a row");
    assert_eq!(row.len(), 2);
    assert_eq!(row.get(1), Some("t"), "the new column is read as a boolean");
    server.stop().await;
}
