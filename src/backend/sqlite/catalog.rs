//! The side catalog: the PostgreSQL type each column was declared with, kept in the
//! database file itself (`__unidb_columns`) and changed in the same transaction as
//! the DDL. SQLite's own declared types are the fallback for tables created
//! elsewhere.

use std::collections::HashMap;

use rusqlite::{params, Connection};

use crate::sql::CatalogChange;
use crate::types::PgType;

pub const TABLE: &str = "__unidb_columns";

pub fn ensure_table(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {TABLE} (
            table_name TEXT NOT NULL,
            column_name TEXT NOT NULL,
            ordinal INTEGER NOT NULL,
            pg_type TEXT NOT NULL,
            PRIMARY KEY (table_name, column_name)
        ) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS __unidb_comments (
            object_type TEXT NOT NULL,
            object_name TEXT NOT NULL,
            column_name TEXT NOT NULL,
            description TEXT NOT NULL,
            PRIMARY KEY (object_type, object_name, column_name)
        ) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS __unidb_constraints (
            index_name TEXT PRIMARY KEY,
            kind TEXT NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS __unidb_sequences (
            name TEXT PRIMARY KEY,
            value INTEGER NOT NULL,
            increment INTEGER NOT NULL,
            called INTEGER NOT NULL
        ) WITHOUT ROWID"
    ))
}

/// Declared types by table, columns in declaration order.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    tables: HashMap<String, Vec<(String, PgType)>>,
    /// (table, column) → declared scale of a `numeric(p, s)` column, or length of a
    /// `char(n)` column.
    scales: HashMap<(String, String), u32>,
}

impl Catalog {
    pub fn load(conn: &Connection) -> rusqlite::Result<Catalog> {
        let mut stmt = conn.prepare(&format!(
            "SELECT table_name, column_name, pg_type FROM {TABLE} ORDER BY table_name, ordinal"
        ))?;
        let mut rows = stmt.query([])?;
        let mut tables: HashMap<String, Vec<(String, PgType)>> = HashMap::new();
        let mut scales = HashMap::new();
        while let Some(r) = rows.next()? {
            let table: String = r.get(0)?;
            let column: String = r.get(1)?;
            let ty: String = r.get(2)?;
            let (name, scale) = declared_scale(&ty);
            let ty = PgType::from_name(name).unwrap_or(PgType::Text);
            if let Some(s) = scale {
                scales.insert((table.clone(), column.clone()), s);
            }
            tables.entry(table).or_default().push((column, ty));
        }
        Ok(Catalog { tables, scales })
    }

    pub fn column(&self, table: &str, column: &str) -> Option<PgType> {
        let cols = self.tables.get(&table.to_ascii_lowercase())?;
        let column = column.to_ascii_lowercase();
        cols.iter().find(|(c, _)| *c == column).map(|(_, t)| *t)
    }

    /// The declared scale of a `numeric(p, s)` column.
    pub fn scale(&self, table: &str, column: &str) -> Option<u32> {
        self.scales
            .get(&(table.to_ascii_lowercase(), column.to_ascii_lowercase()))
            .copied()
    }

    pub fn column_at(&self, table: &str, index: usize) -> Option<PgType> {
        self.tables
            .get(&table.to_ascii_lowercase())?
            .get(index)
            .map(|(_, t)| *t)
    }

    /// The column's type in the first of `scope`'s tables that has it.
    pub fn column_in(&self, scope: &[String], column: &str) -> Option<PgType> {
        scope.iter().find_map(|t| self.column(t, column))
    }
}

/// The type name and numeric scale of a recorded type: `numeric(10,2)` has scale 2,
/// `numeric(10)` scale 0; older files record a scale as `numeric:2`.
fn declared_scale(ty: &str) -> (&str, Option<u32>) {
    if let Some((n, s)) = ty.split_once(':') {
        return (n, s.parse::<u32>().ok());
    }
    match ty.split_once('(') {
        Some((n, args)) => {
            let args: Vec<&str> = args.trim_end_matches(')').split(',').collect();
            let scale = match PgType::from_name(n) {
                Some(PgType::Numeric) => {
                    Some(args.get(1).and_then(|s| s.trim().parse().ok()).unwrap_or(0))
                }
                // char(n) is printed blank-padded to n: its "scale" is n.
                Some(PgType::Bpchar) => args.first().and_then(|s| s.trim().parse().ok()),
                _ => None,
            };
            (n, scale)
        }
        None => (ty, None),
    }
}

fn table_exists(conn: &Connection, table: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND lower(name) = ?1",
        [table],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

/// Whether a CREATE TABLE should record columns: not when `IF NOT EXISTS` met an
/// existing table. Called before the DDL runs.
pub fn should_record(conn: &Connection, change: &CatalogChange) -> rusqlite::Result<bool> {
    match change {
        CatalogChange::CreateTable { table, .. } => Ok(!table_exists(conn, table)?),
        _ => Ok(true),
    }
}

/// Records the column types of view `view` (replacing what was there).
pub fn record_view(
    conn: &Connection,
    view: &str,
    columns: &[(String, PgType)],
) -> rusqlite::Result<()> {
    conn.execute(
        &format!("DELETE FROM {TABLE} WHERE table_name = ?1"),
        [view],
    )?;
    let mut ins = conn.prepare(&format!(
        "INSERT INTO {TABLE} (table_name, column_name, ordinal, pg_type) VALUES (?1, ?2, ?3, ?4)"
    ))?;
    for (i, (col, ty)) in columns.iter().enumerate() {
        ins.execute(params![view, col.to_ascii_lowercase(), i as i64, ty.name()])?;
    }
    Ok(())
}

/// Records `change`; runs on the writer inside the DDL's savepoint.
pub fn apply(conn: &Connection, change: &CatalogChange) -> rusqlite::Result<()> {
    match change {
        CatalogChange::CreateTable {
            table,
            columns,
            modifiers,
        } => {
            conn.execute(
                &format!("DELETE FROM {TABLE} WHERE table_name = ?1"),
                [table],
            )?;
            let mut ins = conn.prepare(&format!(
                "INSERT INTO {TABLE} (table_name, column_name, ordinal, pg_type) VALUES (?1, ?2, ?3, ?4)"
            ))?;
            for (i, (col, ty)) in columns.iter().enumerate() {
                let name = match modifiers.iter().find(|(c, _)| c == col) {
                    Some((_, m)) => format!("{}{m}", ty.name()),
                    None => ty.name().to_string(),
                };
                ins.execute(params![table, col, i as i64, name])?;
            }
        }
        CatalogChange::AddColumn {
            table,
            column,
            ty,
            modifier,
        } => {
            let name = format!("{}{}", ty.name(), modifier.as_deref().unwrap_or(""));
            conn.execute(
                &format!(
                    "INSERT OR REPLACE INTO {TABLE} (table_name, column_name, ordinal, pg_type)
                     VALUES (?1, ?2, (SELECT coalesce(max(ordinal), -1) + 1 FROM {TABLE} WHERE table_name = ?1), ?3)"
                ),
                params![table, column, name],
            )?;
        }
        CatalogChange::DropColumn { table, column } => {
            conn.execute(
                &format!("DELETE FROM {TABLE} WHERE table_name = ?1 AND column_name = ?2"),
                params![table, column],
            )?;
        }
        CatalogChange::RenameColumn { table, from, to } => {
            conn.execute(
                &format!("UPDATE {TABLE} SET column_name = ?3 WHERE table_name = ?1 AND column_name = ?2"),
                params![table, from, to],
            )?;
        }
        CatalogChange::RenameTable { from, to } => {
            conn.execute(
                &format!("UPDATE {TABLE} SET table_name = ?2 WHERE table_name = ?1"),
                params![from, to],
            )?;
        }
        CatalogChange::AddConstraint { .. } | CatalogChange::CreateView { .. } => {}
        CatalogChange::DropTables { tables, .. } => {
            for t in tables {
                if !table_exists(conn, t)? {
                    conn.execute(&format!("DELETE FROM {TABLE} WHERE table_name = ?1"), [t])?;
                }
            }
        }
    }
    Ok(())
}
