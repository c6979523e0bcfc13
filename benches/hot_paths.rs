//! Criterion benchmarks of the per-statement hot paths: planning (cache hit and
//! miss), and encoding values into DataRow bytes.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion};
use rusqlite::types::ValueRef;
use std::hint::black_box;
use unidb::protocol::DataRowWriter;
use unidb::sql::PlanCache;
use unidb::types::{encode_binary, encode_text, PgType};

/// A typical mix of the validation platform's statements.
const MIX: &[&str] = &[
    "SELECT abalance FROM accounts WHERE aid = $1",
    "SELECT p.id, p.name, count(v.id) AS videos FROM projects p LEFT JOIN videos v ON v.project_id = p.id AND v.deleted_at IS NULL WHERE p.deleted_at IS NULL GROUP BY p.id, p.name ORDER BY p.name LIMIT 50",
    "INSERT INTO detection_events (test_session_id, video_id, frame_number, class_label, confidence) VALUES ($1, $2, $3, $4, $5) RETURNING id",
    "UPDATE test_sessions SET status = $1, completed_at = now() WHERE id = $2",
    "SELECT id, filename FROM videos WHERE filename ILIKE $1 ORDER BY uploaded_at DESC NULLS LAST",
    "SELECT class_label, count(*) FILTER (WHERE validation_result = 'TP') AS tp, avg(confidence) FROM detection_events WHERE test_session_id = $1 GROUP BY class_label",
    "WITH recent AS (SELECT * FROM test_sessions WHERE started_at > now() - interval '7 days') SELECT count(*) FROM recent",
    "SELECT id FROM test_sessions WHERE metrics @> $1::jsonb AND status = ANY(ARRAY['done', 'failed'])",
];

fn planning(c: &mut Criterion) {
    let cache = PlanCache::new(1000);
    let sql = "SELECT abalance FROM accounts WHERE aid = $1";
    cache.get(sql).unwrap();
    c.bench_function("plan_cache_hit", |b| {
        b.iter(|| cache.get(black_box(sql)).unwrap())
    });
    c.bench_function("plan_miss_parse_rewrite", |b| {
        b.iter(|| {
            unidb::sql::plan(black_box("SELECT abalance FROM accounts WHERE aid = 12345")).unwrap()
        })
    });
    c.bench_function("plan_miss_insert_returning", |b| {
        b.iter(|| {
            unidb::sql::plan(black_box(
                "INSERT INTO detection_events (session_id, frame, label, confidence) VALUES ($1, $2, $3, $4) RETURNING id",
            ))
            .unwrap()
        })
    });
    // The same mix cold (parsed and rewritten every time) and warm (cache hits).
    let planned: Vec<&str> = MIX
        .iter()
        .copied()
        .filter(|s| unidb::sql::plan(s).is_ok())
        .collect();
    assert!(planned.len() >= MIX.len() - 1, "the mix plans");
    c.bench_function("rewrite_mix_cold", |b| {
        b.iter(|| {
            for s in &planned {
                black_box(unidb::sql::plan(black_box(s)).unwrap());
            }
        })
    });
    let warm = PlanCache::new(1000);
    for s in &planned {
        warm.get(s).unwrap();
    }
    c.bench_function("rewrite_mix_warm", |b| {
        b.iter(|| {
            for s in &planned {
                black_box(warm.get(black_box(s)).unwrap());
            }
        })
    });
    assert_eq!(
        warm.counts().parses,
        planned.len() as u64,
        "the warm path never parses"
    );
}

fn encoding(c: &mut Criterion) {
    let mut out = BytesMut::with_capacity(1 << 16);
    let row: [(PgType, ValueRef<'_>); 5] = [
        (PgType::Int4, ValueRef::Integer(123456)),
        (PgType::Text, ValueRef::Text(b"detection-event-label")),
        (PgType::Float8, ValueRef::Real(0.9375)),
        (PgType::Bool, ValueRef::Integer(1)),
        (
            PgType::Timestamptz,
            ValueRef::Text(b"2026-11-24 12:00:00.5+00"),
        ),
    ];
    c.bench_function("data_row_text_5_columns", |b| {
        b.iter(|| {
            out.clear();
            let mut w = DataRowWriter::begin(&mut out, 5);
            for (ty, v) in &row {
                w.field(|buf| encode_text(*ty, *v, buf)).unwrap();
            }
            w.finish();
            black_box(out.len())
        })
    });
    c.bench_function("data_row_binary_5_columns", |b| {
        b.iter(|| {
            out.clear();
            let mut w = DataRowWriter::begin(&mut out, 5);
            for (ty, v) in &row {
                w.field(|buf| encode_binary(*ty, *v, buf)).unwrap();
            }
            w.finish();
            black_box(out.len())
        })
    });
}

criterion_group!(benches, planning, encoding);
criterion_main!(benches);
