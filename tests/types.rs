//! Every supported type in text and binary format, for columns and parameters.

mod common;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use common::TestServer;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::SimpleQueryMessage;

const DDL: &str = "CREATE TABLE v (
    id INT PRIMARY KEY, b BOOLEAN, s SMALLINT, i INTEGER, l BIGINT, r REAL, d DOUBLE PRECISION,
    n NUMERIC(10,2), t TEXT, vc VARCHAR(20), by BYTEA, dt DATE, ts TIMESTAMP, tz TIMESTAMPTZ,
    j JSON, jb JSONB, u UUID)";

/// Raw bytes of any type, to check binary encodings tokio-postgres has no type for.
struct Raw(Type, Vec<u8>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(ty.clone(), raw.to_vec()))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

fn text_row(msgs: &[SimpleQueryMessage]) -> Vec<Option<String>> {
    msgs.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .expect("a row")
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_parameters_and_results_round_trip() {
    let s = TestServer::start().await;
    let c = s.connect().await;
    c.batch_execute(DDL).await.unwrap();
    let date = NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
    let ts: NaiveDateTime = date.and_hms_micro_opt(13, 14, 15, 123456).unwrap();
    let tz: DateTime<Utc> = ts.and_utc();
    let json = serde_json::json!({"a": [1, 2, {"b": null}]});
    let u = uuid::Uuid::parse_str("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap();
    c.execute(
        "INSERT INTO v (id, b, s, i, l, r, d, t, vc, by, dt, ts, tz, j, jb, u)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        &[
            &1i32,
            &true,
            &-7i16,
            &123456i32,
            &-9_000_000_000i64,
            &1.5f32,
            &-2.25f64,
            &"héllo",
            &"vc",
            &vec![0u8, 1, 254, 255],
            &date,
            &ts,
            &tz,
            &json,
            &json,
            &u,
        ],
    )
    .await
    .unwrap();
    let row = c
        .query_one(
            "SELECT id, b, s, i, l, r, d, t, vc, by, dt, ts, tz, j, jb, u FROM v WHERE id = $1",
            &[&1i32],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(1));
    assert_eq!(row.get::<_, i16>(2), -7);
    assert_eq!(row.get::<_, i32>(3), 123456);
    assert_eq!(row.get::<_, i64>(4), -9_000_000_000);
    assert_eq!(row.get::<_, f32>(5), 1.5);
    assert_eq!(row.get::<_, f64>(6), -2.25);
    assert_eq!(row.get::<_, String>(7), "héllo");
    assert_eq!(row.get::<_, String>(8), "vc");
    assert_eq!(row.get::<_, Vec<u8>>(9), vec![0u8, 1, 254, 255]);
    assert_eq!(row.get::<_, NaiveDate>(10), date);
    assert_eq!(row.get::<_, NaiveDateTime>(11), ts);
    assert_eq!(row.get::<_, DateTime<Utc>>(12), tz);
    assert_eq!(row.get::<_, serde_json::Value>(13), json);
    assert_eq!(row.get::<_, serde_json::Value>(14), json);
    assert_eq!(row.get::<_, uuid::Uuid>(15), u);
    // Declared types reach the client as PostgreSQL OIDs.
    let types: Vec<Type> = row.columns().iter().map(|c| c.type_().clone()).collect();
    assert_eq!(
        types,
        vec![
            Type::INT4,
            Type::BOOL,
            Type::INT2,
            Type::INT4,
            Type::INT8,
            Type::FLOAT4,
            Type::FLOAT8,
            Type::TEXT,
            Type::VARCHAR,
            Type::BYTEA,
            Type::DATE,
            Type::TIMESTAMP,
            Type::TIMESTAMPTZ,
            Type::JSON,
            Type::JSONB,
            Type::UUID
        ]
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn text_results_match_postgres() {
    let s = TestServer::start().await;
    let c = s.connect().await;
    c.batch_execute(DDL).await.unwrap();
    c.batch_execute(
        "INSERT INTO v VALUES (1, true, 2, 3, 4, 0.5, 1e20, 12.5, 'x', 'y', '\\x00ff', '2024-01-02',
         '2024-01-02 03:04:05.5', '2024-01-02 03:04:05+02', '{\"k\": 1}', '[1,2]', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11')",
    )
    .await
    .unwrap();
    let msgs = c
        .simple_query("SELECT b, s, i, l, r, d, n, t, vc, by, dt, ts, tz, j, jb FROM v")
        .await
        .unwrap();
    let row: Vec<String> = text_row(&msgs).into_iter().map(|v| v.unwrap()).collect();
    assert_eq!(
        row,
        vec![
            "t",
            "2",
            "3",
            "4",
            "0.5",
            "1e+20",
            "12.50",
            "x",
            "y",
            "\\x00ff",
            "2024-01-02",
            "2024-01-02 03:04:05.5",
            "2024-01-02 01:04:05+00",
            "{\"k\": 1}",
            "[1, 2]"
        ]
    );
    // Parameters in text format (what psql and pgbench --protocol=extended send) are
    // validated and normalised like PostgreSQL input.
    let msgs = c
        .simple_query("SELECT NULL, 1 = 1, count(*) FROM v")
        .await
        .unwrap();
    assert_eq!(
        text_row(&msgs),
        vec![None, Some("t".into()), Some("1".into())]
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn numeric_binary_and_expression_types() {
    let s = TestServer::start().await;
    let c = s.connect().await;
    c.batch_execute(DDL).await.unwrap();
    c.batch_execute("INSERT INTO v (id, n) VALUES (1, 12.5), (2, -0.01)")
        .await
        .unwrap();
    let rows = c.query("SELECT n FROM v ORDER BY id", &[]).await.unwrap();
    let raw: Raw = rows[0].get(0);
    assert_eq!(raw.0, Type::NUMERIC);
    // numeric(10,2): ndigits 2, weight 0, positive, dscale 2: 12 | 5000
    assert_eq!(raw.1, vec![0, 2, 0, 0, 0, 0, 0, 2, 0, 12, 0x13, 0x88]);
    let raw: Raw = rows[1].get(0);
    assert_eq!(raw.1, vec![0, 1, 0xff, 0xff, 0x40, 0, 0, 2, 0, 100]);
    let row = c
        .query_one("SELECT count(*), sum(id), 1, 'a', 1.5, true, id::text, avg(id) FROM v GROUP BY id ORDER BY id LIMIT 1", &[])
        .await
        .unwrap();
    let types: Vec<Type> = row.columns().iter().map(|c| c.type_().clone()).collect();
    assert_eq!(
        types,
        vec![
            Type::INT8,
            Type::INT8,
            Type::INT4,
            Type::TEXT,
            Type::NUMERIC,
            Type::BOOL,
            Type::TEXT,
            Type::NUMERIC
        ]
    );
    let names: Vec<&str> = row.columns().iter().map(|c| c.name()).collect();
    assert_eq!(
        names,
        vec!["count", "sum", "?column?", "?column?", "?column?", "bool", "id", "avg"]
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn parameter_types_are_inferred_from_columns() {
    let s = TestServer::start().await;
    let c = s.connect().await;
    c.batch_execute(DDL).await.unwrap();
    let stmt = c
        .prepare("SELECT t FROM v WHERE b = $1 AND l > $2 AND tz < $3 LIMIT $4")
        .await
        .unwrap();
    assert_eq!(
        stmt.params(),
        &[Type::BOOL, Type::INT8, Type::TIMESTAMPTZ, Type::INT8]
    );
    let stmt = c
        .prepare("INSERT INTO v (id, u) VALUES ($1, $2)")
        .await
        .unwrap();
    assert_eq!(stmt.params(), &[Type::INT4, Type::UUID]);
    c.batch_execute("CREATE TABLE two (a INT8, b BOOLEAN)")
        .await
        .unwrap();
    let stmt = c.prepare("INSERT INTO two VALUES ($1, $2)").await.unwrap();
    assert_eq!(stmt.params(), &[Type::INT8, Type::BOOL]);
    let stmt = c
        .prepare("UPDATE v SET d = $1 WHERE id = $2")
        .await
        .unwrap();
    assert_eq!(stmt.params(), &[Type::FLOAT8, Type::INT4]);
    // Explicit types from Parse win.
    let stmt = c.prepare_typed("SELECT $1", &[Type::INT8]).await.unwrap();
    assert_eq!(stmt.params(), &[Type::INT8]);
    let v: i64 = c.query_one(&stmt, &[&41i64]).await.unwrap().get(0);
    assert_eq!(v, 41);
    s.stop().await;
}
