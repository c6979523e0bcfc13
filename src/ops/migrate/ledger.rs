//! The ledger: table `unidb_migrations` in each database, one row per applied
//! migration, written in the same transaction as the migration itself. It is
//! created and read through the same connection as the migrations (on SQLite,
//! through the rewriting, so its columns carry PostgreSQL types there too).

use crate::ops::target::{literal, Target};
use crate::protocol::client::ClientError;

use super::source::Migration;

pub const TABLE: &str = "unidb_migrations";

pub const CREATE: &str = "CREATE TABLE IF NOT EXISTS unidb_migrations (\n\
    version bigint PRIMARY KEY,\n\
    name text NOT NULL,\n\
    checksum varchar(64) NOT NULL,\n\
    applied_at timestamptz NOT NULL DEFAULT now(),\n\
    execution_ms bigint NOT NULL,\n\
    success boolean NOT NULL,\n\
    applied_by text NOT NULL\n\
)";

/// One ledger row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub version: i64,
    pub name: String,
    pub checksum: String,
    /// As the database prints it, in UTC.
    pub applied_at: String,
    pub execution_ms: i64,
    /// False only for a migration that ran outside a transaction and did not
    /// finish (or is running now).
    pub success: bool,
    pub applied_by: String,
}

/// Creates the ledger table if it is missing.
pub async fn ensure(t: &mut Target) -> Result<(), ClientError> {
    t.execute(CREATE).await
}

/// Every row, by version; no rows when the table does not exist yet.
pub async fn read(t: &mut Target) -> Result<Vec<Row>, ClientError> {
    let rows = match t
        .rows(
            "SELECT version, name, checksum, applied_at, execution_ms, success, applied_by \
             FROM unidb_migrations ORDER BY version",
        )
        .await
    {
        Ok(r) => r,
        Err(ClientError::Server(e)) if e.code == "42P01" => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    rows.into_iter().map(parse_row).collect()
}

fn parse_row(r: Vec<Option<String>>) -> Result<Row, ClientError> {
    let bad = |what: &str| ClientError::Protocol(format!("unexpected {what} in {TABLE}"));
    let get = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
    Ok(Row {
        version: get(0).parse().map_err(|_| bad("version"))?,
        name: get(1),
        checksum: get(2),
        applied_at: get(3),
        execution_ms: get(4).parse().map_err(|_| bad("execution_ms"))?,
        success: matches!(get(5).as_str(), "t" | "true"),
        applied_by: get(6),
    })
}

/// Whether the ledger has a row for `version` (read inside a migration's
/// transaction, where it is authoritative).
pub async fn has(t: &mut Target, version: i64) -> Result<bool, ClientError> {
    Ok(!t
        .rows(&format!(
            "SELECT version FROM unidb_migrations WHERE version = {version}"
        ))
        .await?
        .is_empty())
}

/// The row recording `m` as applied (or, with `success` false, as started).
pub fn insert(m: &Migration, execution_ms: u64, success: bool, applied_by: &str) -> String {
    format!(
        "INSERT INTO unidb_migrations (version, name, checksum, execution_ms, success, applied_by) \
         VALUES ({}, {}, {}, {execution_ms}, {success}, {})",
        m.version,
        literal(&m.name),
        literal(&m.up.checksum),
        literal(applied_by),
    )
}

/// Marks a migration that ran outside a transaction as finished.
pub fn finish(version: i64, execution_ms: u64) -> String {
    format!(
        "UPDATE unidb_migrations SET success = true, execution_ms = {execution_ms}, applied_at = now() \
         WHERE version = {version}"
    )
}

/// Marks a migration as being reverted outside a transaction.
pub fn unfinish(version: i64) -> String {
    format!("UPDATE unidb_migrations SET success = false WHERE version = {version}")
}

pub fn delete(version: i64) -> String {
    format!("DELETE FROM unidb_migrations WHERE version = {version}")
}

/// Records a new checksum (and name) for an applied migration whose file changed.
pub fn set_checksum(m: &Migration) -> String {
    format!(
        "UPDATE unidb_migrations SET checksum = {}, name = {} WHERE version = {}",
        literal(&m.up.checksum),
        literal(&m.name),
        m.version
    )
}
