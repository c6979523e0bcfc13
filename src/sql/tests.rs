//! Data-driven checks of planning and rewriting: one line per case.

use super::*;

fn check(pg: &str, sqlite: &str) {
    let plan = plan(pg).unwrap_or_else(|e| panic!("{pg}: {e}"));
    assert_eq!(plan.len(), 1, "{pg}");
    assert_eq!(plan[0].sqlite_sql, sqlite, "{pg}");
}

fn check_err(pg: &str, code: &str) {
    match plan(pg) {
        Ok(p) => panic!("{pg}: expected {code}, got {:?}", p[0].sqlite_sql),
        Err(e) => assert_eq!(e.code, code, "{pg}: {e}"),
    }
}

#[test]
fn rewrites_plain_crud() {
    check("SELECT 1", "SELECT 1 AS \"?column?\"");
    check(
        "SELECT a FROM t WHERE id = $1",
        "SELECT a FROM t WHERE id = $1",
    );
    check(
        "SELECT $2, $1",
        "SELECT $2 AS \"?column?\", $1 AS \"?column?\"",
    );
    check("SELECT count(*), x::text, 'a'::int, true FROM t", "SELECT count(*) AS \"count\", CAST(x AS TEXT) AS \"x\", pg_int4('a') AS \"int4\", true AS \"bool\" FROM t");
    check(
        "INSERT INTO t (a, b) VALUES ($1, true) RETURNING id",
        "INSERT INTO t (a, b) VALUES ($1, true) RETURNING id",
    );
    check(
        "UPDATE t SET a = a + 1 WHERE id = 3",
        "UPDATE t SET a = a + 1 WHERE id = 3",
    );
    check(
        "DELETE FROM t WHERE id = 1 RETURNING *",
        "DELETE FROM t WHERE id = 1 RETURNING *",
    );
    check("SELECT * FROM t FOR UPDATE", "SELECT * FROM t");
}

#[test]
fn rewrites_casts_and_functions() {
    check(
        "SELECT a FROM t WHERE b = '1'::int",
        "SELECT a FROM t WHERE b = pg_int4('1')",
    );
    check(
        "SELECT a FROM t WHERE 't'::boolean",
        "SELECT a FROM t WHERE pg_bool('t')",
    );
    check(
        "SELECT a FROM t WHERE b < $1::timestamptz",
        "SELECT a FROM t WHERE b < pg_timestamptz($1)",
    );
    check(
        "SELECT now() AS n",
        "SELECT (strftime('%Y-%m-%d %H:%M:%f', 'now') || '+00') AS n",
    );
    check(
        "SELECT CURRENT_TIMESTAMP",
        "SELECT (strftime('%Y-%m-%d %H:%M:%f', 'now') || '+00') AS \"current_timestamp\"",
    );
    check(
        "SELECT pg_catalog.version()",
        "SELECT version() AS \"version\"",
    );
    check("SELECT E'a\\nb' AS s", "SELECT 'a\nb' AS s");
}

#[test]
fn rewrites_ddl() {
    check(
        "CREATE TABLE t (id SERIAL PRIMARY KEY, name VARCHAR(20) NOT NULL, ok BOOLEAN DEFAULT false, at TIMESTAMPTZ DEFAULT now())",
        "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL CONSTRAINT \"__unidb_len_varchar_20_name\" CHECK (length(name) <= 20), ok INTEGER DEFAULT false, at TEXT DEFAULT ((strftime('%Y-%m-%d %H:%M:%f', 'now') || '+00')))",
    );
    check(
        "CREATE TABLE t (id BIGSERIAL, v NUMERIC(10,2), PRIMARY KEY (id))",
        "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, v NUMERIC)",
    );
    check(
        "CREATE TABLE t (id INT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, b BYTEA)",
        "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, b BLOB)",
    );
    check(
        "CREATE INDEX i ON t USING btree (a)",
        "CREATE INDEX i ON t(a)",
    );
    check(
        "ALTER TABLE t ADD COLUMN c JSONB",
        "ALTER TABLE t ADD COLUMN c TEXT",
    );
}

#[test]
fn catalog_changes_follow_ddl() {
    let p =
        plan("CREATE TABLE Items (id serial primary key, flag bool, at timestamp with time zone)")
            .unwrap();
    assert_eq!(
        p[0].catalog,
        Some(CatalogChange::CreateTable {
            table: "items".into(),
            columns: vec![
                ("id".into(), PgType::Int4),
                ("flag".into(), PgType::Bool),
                ("at".into(), PgType::Timestamptz)
            ],
            modifiers: vec![],
        })
    );
    let p = plan("DROP TABLE a, b").unwrap();
    assert_eq!(
        p[0].catalog,
        Some(CatalogChange::DropTables {
            tables: vec!["a".into(), "b".into()],
            cascade: false
        })
    );
}

#[test]
fn classifies_statements() {
    let kinds: Vec<Kind> = plan("BEGIN; SELECT 1; INSERT INTO t VALUES (1); COMMIT; ROLLBACK; SHOW TimeZone; SET application_name = 'x'; RESET ALL")
        .unwrap()
        .into_iter()
        .map(|s| s.kind)
        .collect();
    assert_eq!(
        kinds,
        vec![
            Kind::Begin,
            Kind::Read,
            Kind::Write,
            Kind::Commit,
            Kind::Rollback,
            Kind::Show {
                name: "timezone".into()
            },
            Kind::Set {
                name: "application_name".into(),
                value: Some("x".into()),
                local: false
            },
            Kind::Reset { name: None },
        ]
    );
    assert!(plan("").unwrap().is_empty());
}

#[test]
fn infers_parameter_and_column_types() {
    let p = &plan("SELECT a.x, count(*), 1, 'a', 2.5, $3::int8 FROM t a WHERE a.id = $1 AND name LIKE $2 LIMIT $4").unwrap()[0];
    assert_eq!(
        p.params,
        vec![
            TypeHint::Column {
                table: Some("t".into()),
                column: "id".into()
            },
            TypeHint::Known(PgType::Text),
            TypeHint::Known(PgType::Int8),
            TypeHint::Known(PgType::Int8),
        ]
    );
    assert_eq!(
        p.columns,
        Some(vec![
            TypeHint::Column {
                table: Some("t".into()),
                column: "x".into()
            },
            TypeHint::Known(PgType::Int8),
            TypeHint::Known(PgType::Int4),
            TypeHint::Known(PgType::Text),
            TypeHint::Known(PgType::Numeric),
            TypeHint::Known(PgType::Int8),
        ])
    );
    let p = &plan("INSERT INTO t VALUES ($1, $2)").unwrap()[0];
    assert_eq!(
        p.params[1],
        TypeHint::ColumnAt {
            table: "t".into(),
            index: 1
        }
    );
    let p = &plan("UPDATE t SET v = $1 WHERE id = $2").unwrap()[0];
    assert_eq!(
        p.params[0],
        TypeHint::Column {
            table: None,
            column: "v".into()
        }
    );
    assert_eq!(plan("SELECT * FROM t").unwrap()[0].columns, None);
}

#[test]
fn refuses_what_it_cannot_translate() {
    use crate::error::code::*;
    check_err("SELECT FROM WHERE", SYNTAX_ERROR);
    check_err("CREATE TABLE t (a INT[])", FEATURE_NOT_SUPPORTED);
    check_err("CREATE TABLE t (a money)", FEATURE_NOT_SUPPORTED);
    check_err("DROP VIEW v CASCADE", FEATURE_NOT_SUPPORTED);
    check_err("CREATE TABLE t (id SERIAL, x INT)", FEATURE_NOT_SUPPORTED);
    check_err("GRANT SELECT ON t TO bob", FEATURE_NOT_SUPPORTED);
    check_err("SELECT '10:00'::time", FEATURE_NOT_SUPPORTED);
}

#[test]
fn intervals_become_calendar_arithmetic() {
    check(
        "SELECT now() - INTERVAL '7 days'",
        "SELECT pg_interval_add((strftime('%Y-%m-%d %H:%M:%f', 'now') || '+00'), pg_interval('7 days', NULL), -1) AS \"?column?\"",
    );
    check(
        "SELECT '1 hour'::interval + INTERVAL '30' MINUTE",
        "SELECT pg_interval_sum(pg_interval('1 hour', NULL), pg_interval('30', 'minute'), 1) AS \"?column?\"",
    );
}

#[test]
fn default_in_values_is_left_out_or_refused_clearly() {
    let p = plan("INSERT INTO t (a, b, c) VALUES (1, DEFAULT, 'x'), (2, DEFAULT, 'y')").unwrap();
    assert_eq!(
        p[0].sqlite_sql,
        "INSERT INTO t (a, c) VALUES (1, 'x'), (2, 'y')"
    );
    let p = plan(
        "INSERT INTO t (a, b) VALUES (1, DEFAULT), (2, DEFAULT), (3, 4), ($1, DEFAULT) RETURNING a",
    )
    .unwrap();
    assert_eq!(
        p[0].sqlite_sql,
        "INSERT INTO t (a) VALUES (1), (2) RETURNING a"
    );
    assert_eq!(
        p[0].extra_sql,
        vec![
            "INSERT INTO t (a, b) VALUES (3, 4) RETURNING a".to_string(),
            "INSERT INTO t (a) VALUES ($1) RETURNING a".to_string()
        ]
    );
    let e = plan("INSERT INTO t (a) VALUES (DEFAULT)").unwrap_err();
    assert_eq!(e.code, "0A000");
    let e = plan("UPDATE t SET b = DEFAULT").unwrap_err();
    assert_eq!(e.code, "0A000");
}

#[test]
fn postgres_operators_become_sqlite_expressions() {
    let sql = |s: &str| plan(s).unwrap()[0].sqlite_sql.clone();
    assert_eq!(
        sql("SELECT a FROM t WHERE b ILIKE '%x%'"),
        "SELECT a FROM t WHERE lower(b) LIKE lower('%x%') ESCAPE '\\'"
    );
    assert_eq!(
        sql("SELECT a FROM t WHERE b ~* '^a' AND c !~ 'z'"),
        "SELECT a FROM t WHERE pg_regex_match(b, '^a', 'i') AND NOT pg_regex_match(c, 'z', '')"
    );
    assert_eq!(
        sql("SELECT a FROM t WHERE s = ANY (ARRAY['x', 'y'])"),
        "SELECT a FROM t WHERE s IN ('x', 'y')"
    );
    assert_eq!(
        sql("SELECT a FROM t ORDER BY a OFFSET 2 ROWS FETCH NEXT 3 ROWS ONLY"),
        "SELECT a FROM t ORDER BY a NULLS LAST LIMIT 3 OFFSET 2"
    );
    assert_eq!(
        sql("DELETE FROM t d USING s WHERE d.s_id = s.id"),
        "DELETE FROM t AS d WHERE EXISTS (SELECT 1 FROM s WHERE d.s_id = s.id)"
    );
}

#[test]
fn sequences_live_in_a_side_table() {
    let sql = |s: &str| plan(s).unwrap()[0].sqlite_sql.clone();
    assert_eq!(
        sql("CREATE SEQUENCE report_seq START WITH 1000 INCREMENT BY 10"),
        "INSERT INTO __unidb_sequences (name, value, increment, called) VALUES ('report_seq', 1000, 10, 0)"
    );
    let p = plan("SELECT nextval('report_seq') AS n").unwrap();
    assert!(p[0]
        .sqlite_sql
        .starts_with("UPDATE __unidb_sequences SET value = CASE WHEN called"));
    assert!(p[0].sqlite_sql.ends_with("RETURNING value AS \"n\""));
    assert!(p[0].returns_rows && p[0].needs_writer());
    let p = plan("CREATE OR REPLACE VIEW v AS SELECT 1 AS a").unwrap();
    assert_eq!(p[0].sqlite_sql, "DROP VIEW IF EXISTS v");
    assert_eq!(
        p[0].extra_sql,
        vec!["CREATE VIEW v AS SELECT 1 AS a".to_string()]
    );
}

#[test]
fn generate_series_becomes_a_named_subquery() {
    let p = plan("SELECT frame FROM generate_series(0, 90, 30) AS frame ORDER BY frame NULLS LAST")
        .unwrap();
    assert_eq!(
        p[0].sqlite_sql,
        "SELECT frame FROM (SELECT value AS \"frame\" FROM generate_series(0, 90, 30) AS __series) AS frame ORDER BY frame NULLS LAST"
    );
    assert_eq!(
        p[0].columns.as_deref(),
        Some(&[TypeHint::Known(PgType::Int4)][..])
    );
}

#[test]
fn distinct_on_keeps_the_first_row_per_key() {
    let p = plan(
        "SELECT DISTINCT ON (video_id) video_id, id AS session_id, started_at FROM s \
         ORDER BY video_id, started_at DESC NULLS LAST LIMIT 5",
    )
    .unwrap();
    assert_eq!(
        p[0].sqlite_sql,
        "SELECT \"video_id\", \"session_id\", \"started_at\" FROM (SELECT video_id, id AS session_id, started_at, \
         row_number() OVER (PARTITION BY video_id ORDER BY video_id NULLS LAST, started_at DESC NULLS LAST) AS __unidb_rn FROM s) \
         AS __unidb_d WHERE __unidb_rn = 1 ORDER BY \"video_id\" NULLS LAST, \"started_at\" DESC NULLS LAST LIMIT 5"
    );
    let e = plan("SELECT DISTINCT ON (a) * FROM t ORDER BY a").unwrap_err();
    assert_eq!(e.code, "0A000");
}

#[test]
fn update_returning_names_the_updated_table_unqualified() {
    let p = plan("UPDATE videos v SET status = 'x' FROM projects p WHERE v.project_id = p.id RETURNING v.id, v.status").unwrap();
    assert!(
        p[0].sqlite_sql.ends_with("RETURNING id, status"),
        "{}",
        p[0].sqlite_sql
    );
    let e = plan("UPDATE videos v SET status = 'x' FROM projects p WHERE v.project_id = p.id RETURNING p.name").unwrap_err();
    assert_eq!(e.code, "0A000");
}
