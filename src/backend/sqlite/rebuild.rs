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

/// Adds `constraint` (SQLite SQL of a table constraint) to `table` by rebuilding it.
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
    if matches!(added, TableConstraint::PrimaryKey(_)) && has_primary_key(&ct) {
        return Err(PgError::new(
            "42P16",
            format!("multiple primary keys for table \"{name}\" are not allowed"),
        ));
    }
    ct.constraints.push(added);
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
            .query_map([&name], |r| r.get(0))
            .and_then(|rows| rows.collect::<Result<Vec<String>, _>>())
            .map_err(|e| to_pg(&e))?;
        rows
    };
    ct.name = ObjectName::from(vec![Ident::with_quote('"', name.clone())]);
    let run = |sql: &str| conn.execute_batch(sql).map_err(|e| to_pg(&e));
    run("PRAGMA legacy_alter_table = ON")?;
    let result = (|| {
        run(&format!(
            "ALTER TABLE {} RENAME TO {}",
            quote(&name),
            quote(&aside)
        ))?;
        run(&ct.to_string())?;
        run(&format!(
            "INSERT INTO {} ({columns}) SELECT {columns} FROM {}",
            quote(&name),
            quote(&aside)
        ))?;
        run(&format!("DROP TABLE {}", quote(&aside)))?;
        for sql in &dependents {
            run(sql)?;
        }
        Ok(())
    })();
    run("PRAGMA legacy_alter_table = OFF")?;
    result?;
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
