//! Dialect parity: every case of `tests/parity/corpus.sql` runs, in order, against a
//! real PostgreSQL 15 and against unidb serving a SQLite file; the outcomes (column
//! names, type OIDs, text values and row counts, or the SQLSTATE of an error) are
//! compared case by case. A case whose outcome differs must be listed in
//! `tests/parity/known_differences.txt`, and a listed case must still differ, so the
//! list stays exactly the set of known differences. The summary (identical share) is
//! printed; `PARITY_REPORT=path` also writes every difference in full.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write;

use tokio_postgres::{Client, SimpleQueryMessage};

use common::pg::PgCluster;
use common::TestServer;

const CORPUS: &str = include_str!("parity/corpus.sql");
const KNOWN: &str = include_str!("parity/known_differences.txt");

struct Case {
    label: String,
    sql: String,
}

/// Blocks separated by blank lines; a block of comments only is skipped; the first
/// comment line of a case is its label.
fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    let normalized: String = CORPUS
        .lines()
        .map(|l| {
            if l.trim().is_empty() {
                ""
            } else {
                l.trim_end_matches('\r')
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    for block in normalized.split("\n\n") {
        let lines: Vec<&str> = block.lines().filter(|l| !l.trim().is_empty()).collect();
        if lines.is_empty() || lines.iter().all(|l| l.trim_start().starts_with("--")) {
            continue;
        }
        let label = lines
            .iter()
            .find(|l| l.trim_start().starts_with("--"))
            .map(|l| l.trim_start().trim_start_matches('-').trim().to_string())
            .unwrap_or_else(|| panic!("case without a label: {block}"));
        // Leading comment lines are the case's comments; the rest is one statement.
        let sql: Vec<&str> = lines
            .iter()
            .copied()
            .skip_while(|l| l.trim_start().starts_with("--"))
            .collect();
        let sql = sql.join("\n");
        let sql = sql.trim_end();
        let sql = sql.strip_suffix(';').unwrap_or(sql).trim_end();
        out.push(Case {
            label,
            sql: sql.to_string(),
        });
    }
    out
}

#[derive(Debug, Clone)]
enum Outcome {
    /// SQLSTATE and message; only the SQLSTATE is compared.
    Error(String, String),
    Rows {
        columns: Vec<(String, u32)>,
        rows: Vec<Vec<Option<String>>>,
        affected: Option<u64>,
    },
}

impl PartialEq for Outcome {
    fn eq(&self, other: &Outcome) -> bool {
        match (self, other) {
            (Outcome::Error(a, _), Outcome::Error(b, _)) => a == b,
            (
                Outcome::Rows {
                    columns: c1,
                    rows: r1,
                    affected: a1,
                },
                Outcome::Rows {
                    columns: c2,
                    rows: r2,
                    affected: a2,
                },
            ) => c1 == c2 && r1 == r2 && a1 == a2,
            _ => false,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Error(code, message) => write!(f, "ERROR {code} {message}"),
            Outcome::Rows {
                columns,
                rows,
                affected,
            } => {
                let cols: Vec<String> = columns.iter().map(|(n, o)| format!("{n}:{o}")).collect();
                write!(f, "[{}]", cols.join(", "))?;
                for r in rows.iter().take(8) {
                    let vals: Vec<&str> =
                        r.iter().map(|v| v.as_deref().unwrap_or("NULL")).collect();
                    write!(f, " ({})", vals.join(", "))?;
                }
                if rows.len() > 8 {
                    write!(f, " … {} rows", rows.len())?;
                }
                if let Some(n) = affected {
                    write!(f, " → {n}")?;
                }
                Ok(())
            }
        }
    }
}

/// Describes the statement (names and type OIDs, without running it), then runs it
/// with the simple protocol for text values and the row count.
async fn run(client: &Client, sql: &str) -> Outcome {
    let code = |e: tokio_postgres::Error| {
        let message = e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_else(|| e.to_string());
        Outcome::Error(
            e.code()
                .map(|c| c.code().to_string())
                .unwrap_or_else(|| "none".to_string()),
            message,
        )
    };
    let columns: Vec<(String, u32)> = match client.prepare(sql).await {
        Ok(stmt) => stmt
            .columns()
            .iter()
            .map(|c| (c.name().to_string(), c.type_().oid()))
            .collect(),
        Err(e) => return code(e),
    };
    let messages = match client.simple_query(sql).await {
        Ok(m) => m,
        Err(e) => return code(e),
    };
    let mut rows = Vec::new();
    let mut affected = None;
    for m in messages {
        match m {
            SimpleQueryMessage::Row(r) => {
                rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
            }
            SimpleQueryMessage::CommandComplete(n) => affected = Some(n),
            _ => {}
        }
    }
    Outcome::Rows {
        columns,
        rows,
        affected,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_matches_postgresql_or_is_a_known_difference() {
    let cases = cases();
    assert!(cases.len() >= 150, "the corpus has {} cases", cases.len());
    let mut labels = std::collections::HashSet::new();
    for c in &cases {
        assert!(
            labels.insert(c.label.as_str()),
            "duplicate label {:?}",
            c.label
        );
    }
    let known: BTreeMap<&str, &str> = KNOWN
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once(" | ") {
            Some((label, why)) => (label.trim(), why.trim()),
            None => (l, ""),
        })
        .collect();
    for label in known.keys() {
        assert!(
            labels.contains(label),
            "known_differences.txt lists {label:?}, which is not a corpus case"
        );
    }

    let pg = PgCluster::start("");
    let (direct, conn) =
        tokio_postgres::connect(&pg.direct_url("app", "app", "app"), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(conn);
    // unidb reports timestamps with time zone in UTC.
    direct.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    let server = TestServer::start().await;
    let unidb = server.connect().await;

    let mut identical = 0;
    let mut unexpected = Vec::new();
    let mut report = String::new();
    let mut still_listed_but_fixed = Vec::new();
    for case in &cases {
        let want = run(&direct, &case.sql).await;
        let got = run(&unidb, &case.sql).await;
        let same = want == got;
        if same {
            identical += 1;
            if known.contains_key(case.label.as_str()) {
                still_listed_but_fixed.push(case.label.clone());
            }
        } else {
            let _ = writeln!(
                report,
                "--- {}\n{}\n  postgres: {want}\n  unidb:    {got}\n",
                case.label, case.sql
            );
            if !known.contains_key(case.label.as_str()) {
                unexpected.push(format!(
                    "{}\n  postgres: {want}\n  unidb:    {got}",
                    case.label
                ));
            }
        }
    }
    let total = cases.len();
    println!(
        "parity: {identical} of {total} cases identical to PostgreSQL 15 ({:.1}%), {} known differences",
        100.0 * identical as f64 / total as f64,
        total - identical
    );
    if let Ok(path) = std::env::var("PARITY_REPORT") {
        std::fs::write(&path, &report).unwrap();
        println!("parity: differences written to {path}");
    }
    assert!(
        unexpected.is_empty(),
        "{} case(s) differ from PostgreSQL and are not in known_differences.txt:\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
    assert!(
        still_listed_but_fixed.is_empty(),
        "now identical to PostgreSQL, remove from known_differences.txt: {still_listed_but_fixed:?}"
    );
    server.stop().await;
}
