//! Changes SQLite's `ALTER TABLE` cannot make in place (`ADD CONSTRAINT`): the table
//! is rebuilt with the new definition inside the statement's savepoint, as SQLite's
//! documentation describes, so the change is all or nothing.
//!
//! The old table is renamed aside first with `legacy_alter_table` on, so foreign keys
//! of other tables keep naming the original table, which exists again (with every
//! row) before the old one is dropped: no foreign key ever sees its parent missing.

use rusqlite::Connection;
use sqlparser::ast::{ColumnOption, Ident, ObjectName, Statement, TableConstraint};
use sqlparser::dialect::SQLiteDialect;
use sqlparser::parser::Parser;

use super::errors::to_pg;
use crate::error::{code, PgError};

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn has_primary_key(ct: &sqlparser::ast::CreateTable) -> bool {
    ct.constraints
        .iter()
        .any(|c| matches!(c, TableConstraint::PrimaryKey(_)))
        || ct.columns.iter().any(|c| {
            c.options
                .iter()
                .any(|o| matches!(o.option, ColumnOption::PrimaryKey(_)))
        })
}

/// Adds `constraint` (SQLite SQL of a table constraint) to `table`:
/// - CHECK and FOREIGN KEY change no stored data: the existing rows are checked and
///   the table's definition in `sqlite_schema` gains the constraint, as SQLite's
///   documentation describes for such changes;
/// - UNIQUE is a unique index, recorded in `__unidb_constraints` as a constraint;
/// - PRIMARY KEY changes how rows are stored: the table is rebuilt, which is refused
///   when other tables' foreign keys reference it.
pub fn add_constraint(conn: &Connection, table: &str, constraint: &str) -> Result<(), PgError> {
    let (name, sql): (String, String) = conn
        .query_row(
            "SELECT name, sql FROM sqlite_schema WHERE type = 'table' AND lower(name) = lower(?1)",
            [table],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(|_| {
            PgError::new(
                code::UNDEFINED_TABLE,
                format!("relation \"{table}\" does not exist"),
            )
        })?;
    let mut ct = match Parser::parse_sql(&SQLiteDialect {}, &sql)
        .ok()
        .and_then(|mut v| v.pop())
    {
        Some(Statement::CreateTable(ct)) => ct,
        _ => {
            return Err(PgError::unsupported(format!(
            "ALTER TABLE … ADD CONSTRAINT on table \"{name}\", whose definition unidb cannot read"
        )))
        }
    };
    let added = Parser::new(&SQLiteDialect {})
        .try_with_sql(constraint)
        .and_then(|mut p| p.parse_optional_table_constraint())
        .ok()
        .flatten()
        .ok_or_else(|| PgError::unsupported(format!("constraint `{constraint}`")))?;
    let run = |sql: &str| conn.execute_batch(sql).map_err(|e| to_pg(&e));
    match &added {
        TableConstraint::Check(c) => {
            let bad: i64 = conn
                .query_row(
                    &format!(
                        "SELECT count(*) FROM {} WHERE NOT ({})",
                        quote(&name),
                        c.expr
                    ),
                    [],
                    |r| r.get(0),
                )
                .map_err(|e| to_pg(&e))?;
            if bad > 0 {
                let label = c
                    .name
                    .as_ref()
                    .map_or("new".to_string(), |n| format!("\"{}\"", n.value));
                return Err(PgError::new(
                    code::CHECK_VIOLATION,
                    format!(
                        "check constraint {label} of relation \"{name}\" is violated by some row"
                    ),
                ));
            }
            ct.constraints.push(added);
            replace_definition(conn, &name, &ct.to_string())
        }
        TableConstraint::ForeignKey(_) => {
            ct.constraints.push(added);
            replace_definition(conn, &name, &ct.to_string())?;
            let violations: i64 = conn
                .query_row(
                    "SELECT count(*) FROM pragma_foreign_key_check(?1)",
                    [&name],
                    |r| r.get(0),
                )
                .map_err(|e| to_pg(&e))?;
            if violations > 0 {
                return Err(PgError::new(
                    code::FOREIGN_KEY_VIOLATION,
                    format!(
                        "insert or update on table \"{name}\" violates the new foreign key constraint ({violations} rows)"
                    ),
                ));
            }
            Ok(())
        }
        TableConstraint::Unique(u) => {
            let columns: Vec<String> = u.columns.iter().map(|c| c.to_string()).collect();
            let index = match &u.name {
                Some(n) => n.value.clone(),
                None => format!(
                    "{name}_{}_key",
                    columns
                        .iter()
                        .map(|c| c.trim_matches('"').to_string())
                        .collect::<Vec<_>>()
                        .join("_")
                ),
            };
            run(&format!(
                "CREATE UNIQUE INDEX {} ON {} ({})",
                quote(&index),
                quote(&name),
                columns.join(", ")
            ))?;
            conn.execute(
                "INSERT OR REPLACE INTO __unidb_constraints (index_name, kind) VALUES (?1, 'u')",
                [&index],
            )
            .map_err(|e| to_pg(&e))?;
            Ok(())
        }
        TableConstraint::PrimaryKey(_) => {
            if has_primary_key(&ct) {
                return Err(PgError::new(
                    "42P16",
                    format!("multiple primary keys for table \"{name}\" are not allowed"),
                ));
            }
            let referenced: Option<String> = conn
                .query_row(
                    "SELECT m.name FROM sqlite_schema m, pragma_foreign_key_list(m.name) f
                     WHERE m.type = 'table' AND m.name <> ?1 AND lower(f.\"table\") = lower(?1) LIMIT 1",
                    [&name],
                    |r| r.get(0),
                )
                .ok();
            if let Some(child) = referenced {
                return Err(PgError::unsupported(format!(
                    "ALTER TABLE … ADD PRIMARY KEY on \"{name}\", which \"{child}\" references, on the SQLite backend"
                ))
                .with_hint("add the primary key before the tables that reference it, or declare it in CREATE TABLE"));
            }
            ct.constraints.push(added);
            rebuild(conn, &name, &mut ct)
        }
        _ => Err(PgError::unsupported(format!("constraint `{constraint}`"))),
    }
}

/// Replaces the table's CREATE statement in `sqlite_schema`; the stored rows are
/// unchanged, so this is only for changes that do not alter the record format.
fn replace_definition(conn: &Connection, name: &str, sql: &str) -> Result<(), PgError> {
    let version: i64 = conn
        .query_row("PRAGMA schema_version", [], |r| r.get(0))
        .map_err(|e| to_pg(&e))?;
    conn.execute_batch("PRAGMA writable_schema = ON")
        .map_err(|e| to_pg(&e))?;
    let r = conn.execute(
        "UPDATE sqlite_schema SET sql = ?1 WHERE type = 'table' AND name = ?2",
        [sql, name],
    );
    conn.execute_batch("PRAGMA writable_schema = OFF")
        .map_err(|e| to_pg(&e))?;
    r.map_err(|e| to_pg(&e))?;
    // Other connections (and this one) reload the schema on their next statement.
    conn.execute_batch(&format!("PRAGMA schema_version = {}", version + 1))
        .map_err(|e| to_pg(&e))
}

/// Rebuilds a table that no other table references with a new definition.
fn rebuild(
    conn: &Connection,
    name: &str,
    ct: &mut sqlparser::ast::CreateTable,
) -> Result<(), PgError> {
    let aside = format!("__unidb_rebuild_{name}");
    let columns: Vec<String> = ct.columns.iter().map(|c| c.name.to_string()).collect();
    let columns = columns.join(", ");
    let dependents: Vec<String> = {
        let mut stmt = conn
            .prepare(
                "SELECT sql FROM sqlite_schema WHERE type IN ('index', 'trigger')
                 AND tbl_name = ?1 AND sql IS NOT NULL ORDER BY rowid",
            )
            .map_err(|e| to_pg(&e))?;
        let rows = stmt
            .query_map([name], |r| r.get(0))
            .and_then(|rows| rows.collect::<Result<Vec<String>, _>>())
            .map_err(|e| to_pg(&e))?;
        rows
    };
    ct.name = ObjectName::from(vec![Ident::with_quote('"', name.to_string())]);
    let run = |sql: &str| conn.execute_batch(sql).map_err(|e| to_pg(&e));
    // Views naming the table are left as they are (legacy_alter_table), and find
    // the rebuilt table under the same name.
    run("PRAGMA legacy_alter_table = ON")?;
    let result = (|| {
        run(&format!(
            "ALTER TABLE {} RENAME TO {}",
            quote(name),
            quote(&aside)
        ))?;
        run(&ct.to_string())?;
        run(&format!(
            "INSERT INTO {} ({columns}) SELECT {columns} FROM {}",
            quote(name),
            quote(&aside)
        ))?;
        run(&format!("DROP TABLE {}", quote(&aside)))?;
        for sql in &dependents {
            run(sql)?;
        }
        Ok(())
    })();
    run("PRAGMA legacy_alter_table = OFF")?;
    result
}
