//! Criterion benchmarks of the per-statement hot paths: planning (cache hit and
//! miss), and encoding values into DataRow bytes.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion};
use rusqlite::types::ValueRef;
use std::hint::black_box;
use unidb::protocol::DataRowWriter;
use unidb::sql::PlanCache;
use unidb::types::{encode_binary, encode_text, PgType};

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
