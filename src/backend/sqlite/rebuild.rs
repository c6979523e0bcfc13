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

/// The views that read one of `tables` (by the names in their FROM clauses).
fn dependent_views(conn: &Connection, tables: &[String]) -> Result<Vec<(String, String)>, PgError> {
    let mut stmt = conn
        .prepare("SELECT name, sql FROM sqlite_schema WHERE type = 'view'")
        .map_err(|e| to_pg(&e))?;
    let views: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(|rows| rows.collect())
        .map_err(|e| to_pg(&e))?;
    let mut out = Vec::new();
    for (view, sql) in views {
        let Some(parsed) = Parser::parse_sql(&SQLiteDialect {}, &sql)
            .ok()
            .and_then(|mut v| v.pop())
        else {
            continue;
        };
        let mut reads = None;
        let _ = sqlparser::ast::visit_relations(&parsed, |r| {
            let name = crate::sql::object_base_name(r);
            if let Some(t) = tables.iter().find(|t| t.eq_ignore_ascii_case(&name)) {
                reads = Some(t.clone());
                return std::ops::ControlFlow::Break(());
            }
            std::ops::ControlFlow::Continue(())
        });
        if let Some(t) = reads {
            out.push((view, t));
        }
    }
    Ok(out)
}

/// Before `DROP TABLE`: what depends on the tables (views reading them, other
/// tables' foreign keys naming them) is refused with `2BP01`, as PostgreSQL does,
/// or with `cascade` dropped first (views; foreign key constraints taken out of the
/// referencing tables, whose rows stay). Without this, SQLite would drop a table whose
/// rows other tables reference by deleting those rows through ON DELETE CASCADE.
pub fn drop_dependents(conn: &Connection, tables: &[String], cascade: bool) -> Result<(), PgError> {
    let mut views = dependent_views(conn, tables)?;
    let mut children: Vec<(String, String)> = Vec::new();
    {
        let mut stmt = conn
            .prepare(
                "SELECT m.name, f.\"table\" FROM sqlite_schema m, pragma_foreign_key_list(m.name) f
                 WHERE m.type = 'table'",
            )
            .map_err(|e| to_pg(&e))?;
        let refs: Vec<(String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(|e| to_pg(&e))?;
        for (child, parent) in refs {
            let dropped = |n: &str| tables.iter().any(|t| t.eq_ignore_ascii_case(n));
            if dropped(&parent) && !dropped(&child) && !children.iter().any(|(c, _)| *c == child) {
                children.push((child, parent));
            }
        }
    }
    if views.is_empty() && children.is_empty() {
        return Ok(());
    }
    if !cascade {
        let (table, detail) = match (views.first(), children.first()) {
            (Some((v, t)), _) => (t.clone(), format!("view {v} depends on table {t}")),
            (None, Some((c, t))) => (
                t.clone(),
                format!("a foreign key constraint on table {c} depends on table {t}"),
            ),
            (None, None) => unreachable!("checked above"),
        };
        return Err(PgError::new(
            code::DEPENDENT_OBJECTS_STILL_EXIST,
            format!("cannot drop table {table} because other objects depend on it"),
        )
        .with_detail(detail)
        .with_hint("Use DROP ... CASCADE to drop the dependent objects too."));
    }
    // Views on views go too.
    let mut i = 0;
    while i < views.len() {
        let names: Vec<String> = vec![views[i].0.clone()];
        for (v, _) in dependent_views(conn, &names)? {
            if !views.iter().any(|(x, _)| *x == v) {
                views.push((v, names[0].clone()));
            }
        }
        i += 1;
    }
    for (view, _) in views.iter().rev() {
        conn.execute_batch(&format!("DROP VIEW IF EXISTS {}", quote(view)))
            .map_err(|e| to_pg(&e))?;
        conn.execute("DELETE FROM __unidb_columns WHERE table_name = ?1", [view])
            .map_err(|e| to_pg(&e))?;
    }
    for (child, _) in &children {
        let sql: String = conn
            .query_row(
                "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?1",
                [child],
                |r| r.get(0),
            )
            .map_err(|e| to_pg(&e))?;
        let Some(Statement::CreateTable(mut ct)) = Parser::parse_sql(&SQLiteDialect {}, &sql)
            .ok()
            .and_then(|mut v| v.pop())
        else {
            return Err(PgError::unsupported(format!(
                "DROP … CASCADE with table \"{child}\", whose definition unidb cannot read"
            )));
        };
        let dropped = |n: &ObjectName| {
            let n = crate::sql::object_base_name(n);
            tables.iter().any(|t| t.eq_ignore_ascii_case(&n))
        };
        ct.constraints.retain(
            |c| !matches!(c, TableConstraint::ForeignKey(fk) if dropped(&fk.foreign_table)),
        );
        for col in &mut ct.columns {
            col.options.retain(|o| !matches!(&o.option, ColumnOption::ForeignKey(fk) if dropped(&fk.foreign_table)));
        }
        replace_definition(conn, child, &ct.to_string())?;
    }
    Ok(())
}
