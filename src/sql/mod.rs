//! PostgreSQL-dialect SQL, planned for the SQLite backend: parsed once with
//! `sqlparser` (PostgreSqlDialect), classified (read, write, DDL, transaction
//! control, session commands), type hints collected, and rewritten on the AST into
//! SQLite SQL. Plans are cached by statement text.
//!
//! Invariant: SQL text is never edited with string operations; every change is made
//! on the AST and rendered by `sqlparser`.

mod cache;
mod infer;
pub mod normalize;
mod rewrite;
mod system;

pub use cache::{CacheCounts, PlanCache};
pub use infer::{object_base_name, wider, TypeHint};
pub use system::EMPTY_RELATIONS;

/// Name prefix of the CHECK constraints that enforce `varchar(n)`/`char(n)` lengths
/// (`__unidb_len_varchar_20_<column>`); violating one is `22001`.
pub const LENGTH_CHECK_PREFIX: &str = "__unidb_len_";

use std::sync::Arc;

use sqlparser::ast::Statement;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::error::{code, PgError, PgResult};
use crate::types::PgType;

/// What the session must do with a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A query that changes nothing: may run on a reader outside a transaction.
    Read,
    /// DML: runs on the writer.
    Write,
    /// DDL: runs on the writer, with its side-catalog change.
    Ddl,
    Begin,
    Commit,
    Rollback,
    /// `ROLLBACK TO SAVEPOINT`: leaves a failed transaction usable again.
    RollbackToSavepoint,
    /// `SET [LOCAL] name = value`; a `LOCAL` setting ends with its transaction.
    Set {
        name: String,
        value: Option<String>,
        local: bool,
    },
    /// `SHOW name`
    Show {
        name: String,
    },
    /// `RESET name` / `RESET ALL`
    Reset {
        name: Option<String>,
    },
    /// `DISCARD ALL`
    DiscardAll,
    /// `PREPARE name (types) AS statement`: a named statement, like Parse.
    Prepare {
        name: String,
        param_oids: Vec<u32>,
        query: String,
    },
    /// `EXECUTE name (literals)`: the named statement with these parameters.
    Execute {
        name: String,
        params: Vec<Option<String>>,
    },
    /// `COPY … FROM STDIN` / `COPY … TO STDOUT`, run by the session.
    Copy(Box<CopySpec>),
    /// `DEALLOCATE name` / `DEALLOCATE ALL` (`None`).
    Deallocate {
        name: Option<String>,
    },
    /// A statement that needs no work at all (`SET TRANSACTION …`).
    Noop,
}

/// A `COPY` between the client and a table or query, in text or CSV format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySpec {
    /// `FROM STDIN` (into `table`) or `TO STDOUT` (of `query`).
    pub from_stdin: bool,
    /// The target table of `COPY … FROM STDIN`, as written.
    pub table: String,
    /// The listed columns (none: all of the table's, in order).
    pub columns: Vec<String>,
    /// The SELECT (PostgreSQL dialect) whose rows `COPY … TO STDOUT` sends.
    pub query: String,
    pub csv: bool,
    /// PostgreSQL's binary COPY format.
    pub binary: bool,
    pub delimiter: u8,
    pub null: String,
    pub header: bool,
    pub quote: u8,
    pub escape: u8,
}

/// A change to the side catalog of declared PostgreSQL column types, applied in the
/// same transaction as the DDL that causes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogChange {
    CreateTable {
        table: String,
        columns: Vec<(String, PgType)>,
        /// Type modifiers as declared (`(10,2)`, `(20)`): `numeric(p, s)` values
        /// print with `s` decimals, and the catalog shows them.
        modifiers: Vec<(String, String)>,
    },
    AddColumn {
        table: String,
        column: String,
        ty: PgType,
        modifier: Option<String>,
    },
    DropColumn {
        table: String,
        column: String,
    },
    RenameColumn {
        table: String,
        from: String,
        to: String,
    },
    RenameTable {
        from: String,
        to: String,
    },
    /// `DROP TABLE` (and `DROP VIEW`): their recorded columns go; with `cascade`,
    /// the views and foreign keys that depend on the tables go first.
    DropTables {
        tables: Vec<String>,
        cascade: bool,
    },
    /// `CREATE VIEW`: the types of its columns, from `query` (PostgreSQL text)
    /// planned and described once the view exists.
    CreateView {
        view: String,
        query: String,
    },
    /// `ALTER TABLE … ADD [CONSTRAINT …]`: the table is rebuilt with the constraint
    /// (SQLite SQL), which SQLite cannot add in place.
    AddConstraint {
        table: String,
        constraint: String,
    },
}

/// One planned statement.
#[derive(Debug, Clone)]
pub struct Stmt {
    pub kind: Kind,
    /// The SQL SQLite runs (empty for statements the proxy answers itself).
    pub sqlite_sql: String,
    /// Command tag word(s) for CommandComplete (`SELECT`, `INSERT`, `CREATE TABLE`…).
    pub tag: &'static str,
    /// Whether the statement produces rows (a query or `RETURNING`).
    pub returns_rows: bool,
    /// Tables in scope, for resolving unqualified column hints.
    pub scope: Vec<String>,
    /// Type hints for `$1..$n`, index 0 is `$1`.
    pub params: Vec<TypeHint>,
    /// Type hints for the result columns, when the projection has no wildcard.
    pub columns: Option<Vec<TypeHint>>,
    pub catalog: Option<CatalogChange>,
    /// Further SQLite statements run after `sqlite_sql` as part of this one, all or
    /// nothing (rows using DEFAULT for different columns).
    pub extra_sql: Vec<String>,
    /// Reads the emulated `pg_catalog` / `information_schema`, which must be
    /// current before the statement runs.
    pub system_catalog: bool,
    /// The argument types of `pg_typeof(…)` calls, which became
    /// `pg_typeof_hint(k)`: resolved by the worker before the statement runs.
    pub typeof_args: Vec<TypeHint>,
}

impl Stmt {
    fn proxy(kind: Kind, tag: &'static str) -> Stmt {
        Stmt {
            kind,
            sqlite_sql: String::new(),
            tag,
            returns_rows: false,
            scope: Vec::new(),
            params: Vec::new(),
            columns: None,
            catalog: None,
            extra_sql: Vec::new(),
            system_catalog: false,
            typeof_args: Vec::new(),
        }
    }

    /// Whether it must run on the writer (anything but a plain read).
    pub fn needs_writer(&self) -> bool {
        matches!(self.kind, Kind::Write | Kind::Ddl)
    }
}

/// The plan of one query string: zero (empty query) or more statements.
pub type Plan = Arc<Vec<Stmt>>;

/// Parses and plans `sql`.
pub fn plan(sql: &str) -> PgResult<Vec<Stmt>> {
    let statements = match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(s) => s,
        Err(e) => {
            // COPY options the parser does not know (`WITH (FREEZE ON)`, as pgbench
            // sends) are read by a COPY-only parser.
            if let Some(stmt) = rewrite::parse_copy(sql) {
                return Ok(vec![stmt?]);
            }
            if let Some(stmt) = rewrite::parse_vacuum(sql) {
                return Ok(vec![stmt]);
            }
            let msg = e.to_string();
            let msg = msg
                .strip_prefix("sql parser error: ")
                .unwrap_or(&msg)
                .to_string();
            return Err(PgError::new(
                code::SYNTAX_ERROR,
                format!("syntax error: {msg}"),
            ));
        }
    };
    statements.into_iter().map(plan_statement).collect()
}

fn highest_placeholder(stmt: &Statement) -> usize {
    let mut highest = 0;
    let _ = sqlparser::ast::visit_expressions(stmt, |e| {
        if let sqlparser::ast::Expr::Value(v) = e {
            if let sqlparser::ast::Value::Placeholder(p) = &v.value {
                if let Some(n) = p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
                    highest = highest.max(n.min(65535));
                }
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    highest
}

fn plan_statement(mut stmt: Statement) -> PgResult<Stmt> {
    if let Some(proxy) = rewrite::session_command(&stmt)? {
        return Ok(proxy);
    }
    if matches!(stmt, Statement::Vacuum(_) | Statement::Analyze(_)) {
        if let Some(s) = rewrite::parse_vacuum(&stmt.to_string()) {
            return Ok(s);
        }
    }
    let mut hints = infer::collect(&stmt);
    // Every `$n` counts, even one without a type hint or one the rewrite drops.
    let highest = highest_placeholder(&stmt);
    rewrite::number_typeof_calls(&mut stmt, hints.typeof_args.len());
    if hints.params.len() < highest {
        hints.params.resize(highest, TypeHint::Unknown);
    }
    let rewrite::Rewritten {
        kind,
        tag,
        returns_rows,
        catalog,
        extra_sql,
        system_catalog,
    } = rewrite::rewrite_statement(&mut stmt)?;
    Ok(Stmt {
        kind,
        sqlite_sql: stmt.to_string(),
        tag,
        returns_rows,
        scope: hints.scope,
        params: hints.params,
        columns: hints.columns,
        catalog,
        extra_sql,
        system_catalog,
        typeof_args: hints.typeof_args,
    })
}

#[cfg(test)]
mod tests;
