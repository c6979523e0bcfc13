//! A worker thread's connection and what it runs: describing and executing planned
//! statements, encoding rows straight into protocol bytes.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rusqlite::types::Value;
use rusqlite::{Connection, InterruptHandle};

use super::catalog::{self, Catalog};
use super::errors::to_pg;
use super::Shared;
use crate::error::{code, PgError};
use crate::protocol::write as msg;
use crate::protocol::{Column, DataRowWriter, FieldFormat};
use crate::sql::{CatalogChange, Plan, Stmt, TypeHint};
use crate::types::{self, PgType};

/// Statements whose description a connection keeps (and prepared statements it
/// caches, see `open_connection`).
pub const STATEMENT_CACHE: usize = 512;
const DESCRIBED_CACHE: NonZeroUsize = NonZeroUsize::new(STATEMENT_CACHE).expect("non-zero");

/// Why a statement did not produce output.
#[derive(Debug)]
pub enum ExecError {
    Pg(PgError),
    /// A statement classified as a read turned out to write; run it on the writer.
    NeedsWriter,
}

impl From<PgError> for ExecError {
    fn from(e: PgError) -> Self {
        ExecError::Pg(e)
    }
}

impl From<rusqlite::Error> for ExecError {
    fn from(e: rusqlite::Error) -> Self {
        ExecError::Pg(to_pg(&e))
    }
}

/// A statement to execute with its bound parameters.
#[derive(Clone)]
pub struct ExecArgs {
    pub plan: Plan,
    pub index: usize,
    pub params: Vec<Option<Bytes>>,
    pub param_formats: Vec<i16>,
    pub param_oids: Vec<u32>,
    pub result_formats: Vec<i16>,
    /// Write RowDescription (or NoData) before the rows.
    pub describe: bool,
    /// Simple protocol: a statement without result columns gets no NoData.
    pub simple: bool,
    /// Record where each row ends (for `Execute` with a row limit).
    pub chunked: bool,
    /// Where to send encoded rows as they accumulate, so that a large result is
    /// streamed with bounded memory instead of built whole. The bounded channel
    /// makes a slow client slow down the statement rather than grow a buffer.
    pub sink: Option<tokio::sync::mpsc::Sender<BytesMut>>,
    /// The session's user, pid and settings, for `current_user`,
    /// `pg_backend_pid()` and `current_setting()`.
    pub session: Option<Arc<super::SessionView>>,
}

/// How often a worker looks for schema changes made by other processes.
const SCHEMA_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Encoded rows are handed to the session in pieces of about this size.
const STREAM_CHUNK: usize = 256 * 1024;

/// Encoded output of one execution.
#[derive(Debug, Default)]
pub struct ExecOutput {
    pub data: BytesMut,
    /// Rows returned, or rows changed by DML without RETURNING.
    pub rows: u64,
    /// End offset in `data` of each DataRow, when `chunked`.
    pub row_ends: Vec<usize>,
    /// Offset in `data` where the rows start (after a RowDescription).
    pub rows_start: usize,
}

/// Per-statement facts that depend only on the SQL and the schema.
struct Described {
    columns: Vec<Column>,
    /// Declared scale of result columns that come straight from a `numeric(p, s)`
    /// column: printed with that many decimals, as PostgreSQL does.
    scales: Vec<Option<u32>>,
    /// Declared scale of parameters bound to `numeric(p, s)` columns: values are
    /// rounded to it before they are stored, as PostgreSQL does.
    param_scales: Vec<Option<u32>>,
    /// Result columns that are a bare `$n`: (column, parameter index).
    param_columns: Vec<(usize, usize)>,
    param_count: usize,
    /// For `sqlite_sql` and then each of `extra_sql`: the client parameter number
    /// (`$n`) of each SQLite parameter, computed once per statement text.
    param_maps: Vec<Vec<usize>>,
}

pub struct Worker {
    conn: Connection,
    interrupt: Arc<InterruptHandle>,
    cancel_flag: Arc<AtomicBool>,
    shared: Arc<Shared>,
    writer: bool,
    catalog: Catalog,
    catalog_gen: u64,
    /// The schema cookie last seen, and when it was looked at.
    schema_version: i64,
    schema_checked: std::time::Instant,
    /// Descriptions by SQLite SQL; bounded like the prepared-statement cache.
    described: lru::LruCache<String, Arc<Described>>,
}

impl Worker {
    pub fn new(
        conn: Connection,
        cancel_flag: Arc<AtomicBool>,
        shared: Arc<Shared>,
        writer: bool,
    ) -> Worker {
        let interrupt = Arc::new(conn.get_interrupt_handle());
        Worker {
            conn,
            interrupt,
            cancel_flag,
            shared,
            writer,
            catalog: Catalog::default(),
            catalog_gen: 0,
            schema_version: 0,
            schema_checked: std::time::Instant::now(),
            described: lru::LruCache::new(DESCRIBED_CACHE),
        }
    }

    pub fn cancel_handle(&self) -> (Arc<InterruptHandle>, Arc<AtomicBool>) {
        (self.interrupt.clone(), self.cancel_flag.clone())
    }

    pub fn clear_cancel(&self) {
        self.cancel_flag.store(false, Ordering::SeqCst);
    }

    fn refresh(&mut self) -> Result<(), ExecError> {
        let gen = self.shared.schema_gen.load(Ordering::Acquire);
        // Another process (`unidb migrate`, the sqlite3 shell) may change the
        // schema too: its cookie is looked at once a second at most.
        let now = std::time::Instant::now();
        let mut foreign = false;
        if now.duration_since(self.schema_checked) >= SCHEMA_CHECK {
            self.schema_checked = now;
            let version: i64 = self
                .conn
                .query_row("PRAGMA schema_version", [], |r| r.get(0))
                .unwrap_or(self.schema_version);
            foreign = version != self.schema_version;
            self.schema_version = version;
        }
        if gen != self.catalog_gen || foreign {
            // Cached statements were prepared against the old schema (`*` expanded).
            self.conn.flush_prepared_statement_cache();
            self.catalog = Catalog::load(&self.conn)?;
            self.described.clear();
            self.catalog_gen = gen;
        }
        Ok(())
    }

    /// Brings the emulated `pg_catalog` / `information_schema` up to date for a
    /// statement that reads it.
    fn refresh_system_catalog(&mut self, stmt: &Stmt) -> Result<(), ExecError> {
        if !stmt.system_catalog {
            return Ok(());
        }
        super::system_catalog::refresh(&self.conn)?;
        Ok(())
    }

    fn bump_schema(&mut self) {
        self.shared.schema_gen.fetch_add(1, Ordering::AcqRel);
    }

    /// Runs transaction control (`BEGIN IMMEDIATE`, `COMMIT`, `ROLLBACK`,
    /// `ROLLBACK TO …`) on this connection. `schema_changed` moves the schema
    /// generation afterwards (end of a transaction that ran DDL).
    pub fn control(&mut self, sql: &str, schema_changed: bool) -> Result<(), PgError> {
        let r = self.conn.execute_batch(sql).map_err(|e| to_pg(&e));
        if schema_changed {
            self.bump_schema();
        }
        r
    }

    /// Rolls back a transaction whose client went away.
    pub fn rollback_abandoned(&mut self, ran_ddl: bool) {
        if !self.conn.is_autocommit() {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::error!(error = %e, "rollback of an abandoned transaction failed");
            }
        }
        if ran_ddl {
            self.bump_schema();
        }
    }

    pub fn checkpoint(&mut self) -> Result<(), PgError> {
        self.conn
            .execute_batch("PRAGMA optimize; PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(|e| to_pg(&e))
    }

    fn resolve(&self, hint: &TypeHint, scope: &[String]) -> Option<PgType> {
        match hint {
            TypeHint::Known(t) => Some(*t),
            TypeHint::Column {
                table: Some(t),
                column,
            } => self
                .catalog
                .column(t, column)
                .or_else(|| super::system_catalog::system_column_type(t, column)),
            TypeHint::Column {
                table: None,
                column,
            } => self.catalog.column_in(scope, column),
            TypeHint::ColumnAt { table, index } => self.catalog.column_at(table, *index),
            TypeHint::Aggregate { avg, arg } => Some(match self.resolve(arg, scope) {
                Some(PgType::Float4 | PgType::Float8) => PgType::Float8,
                Some(PgType::Numeric) => PgType::Numeric,
                _ if *avg => PgType::Numeric,
                _ => PgType::Int8,
            }),
            TypeHint::Fallback { hint, default } => self.resolve(hint, scope).or(Some(*default)),
            TypeHint::Scaled { hint, .. } => self.resolve(hint, scope),
            TypeHint::Difference(a, b) => match (self.resolve(a, scope), self.resolve(b, scope)) {
                (
                    Some(PgType::Timestamp | PgType::Timestamptz),
                    Some(PgType::Timestamp | PgType::Timestamptz),
                ) => Some(PgType::Interval),
                (Some(PgType::Date), Some(PgType::Date)) => Some(PgType::Int4),
                (Some(x), Some(y)) => Some(crate::sql::wider(x, y)),
                (x, y) => x.or(y),
            },
            TypeHint::ArrayOf(h) => Some(PgType::Array(
                self.resolve(h, scope).unwrap_or(PgType::Text).oid(),
            )),
            TypeHint::Sum(a, b) => match (self.resolve(a, scope), self.resolve(b, scope)) {
                (Some(PgType::Date), Some(PgType::Interval))
                | (Some(PgType::Interval), Some(PgType::Date)) => Some(PgType::Timestamp),
                (
                    Some(t @ (PgType::Timestamp | PgType::Timestamptz | PgType::Time)),
                    Some(PgType::Interval),
                )
                | (
                    Some(PgType::Interval),
                    Some(t @ (PgType::Timestamp | PgType::Timestamptz | PgType::Time)),
                ) => Some(t),
                (Some(x), Some(y)) => Some(crate::sql::wider(x, y)),
                (x, y) => x.or(y),
            },
            TypeHint::Widest(hints) => hints
                .iter()
                .filter_map(|h| self.resolve(h, scope))
                .filter(|t| *t != PgType::Unknown)
                .reduce(crate::sql::wider),
            TypeHint::TextIfVarchar(hint) => self.resolve(hint, scope).map(|t| match t {
                PgType::Varchar => PgType::Text,
                other => other,
            }),
            TypeHint::Param(_) | TypeHint::Unknown => None,
        }
    }

    /// The display scale a hint implies: a cast or `round` to a scale, or a
    /// `numeric(p, s)` column (directly, or through sum/min/max).
    fn hint_scale(&self, hint: &TypeHint, scope: &[String]) -> Option<u32> {
        match hint {
            TypeHint::Scaled { scale, .. } => Some(*scale),
            TypeHint::Column {
                table: Some(t),
                column,
            } => self.catalog.scale(t, column),
            TypeHint::Column {
                table: None,
                column,
            } => scope.iter().find_map(|t| self.catalog.scale(t, column)),
            TypeHint::Aggregate { avg: false, arg } | TypeHint::TextIfVarchar(arg) => {
                self.hint_scale(arg, scope)
            }
            TypeHint::Fallback { hint, .. } => self.hint_scale(hint, scope),
            _ => None,
        }
    }

    fn describe_statement(&self, stmt: &Stmt, prepared: &rusqlite::Statement<'_>) -> Described {
        let decls: Vec<Option<String>> = prepared
            .columns()
            .map(|c| c.decl_type().map(str::to_string))
            .collect();
        let scales: Vec<Option<u32>> = prepared
            .columns_with_metadata()
            .enumerate()
            .map(|(i, meta)| match (meta.table_name(), meta.origin_name()) {
                (Some(t), Some(c)) => self.catalog.scale(t, c),
                _ => stmt
                    .columns
                    .as_ref()
                    .and_then(|hints| hints.get(i))
                    .and_then(|h| self.hint_scale(h, &stmt.scope)),
            })
            .collect();
        let param_scales: Vec<Option<u32>> = stmt
            .params
            .iter()
            .map(|h| self.hint_scale(h, &stmt.scope))
            .collect();
        let columns = prepared
            .columns_with_metadata()
            .enumerate()
            .map(|(i, meta)| {
                let hint = stmt.columns.as_ref().and_then(|hints| hints.get(i));
                // A UNION's column is the widest of its branches, not the first's.
                let union = match hint {
                    Some(h @ TypeHint::Widest(_)) => self.resolve(h, &stmt.scope),
                    _ => None,
                };
                let from_origin = union.or_else(|| match (meta.table_name(), meta.origin_name()) {
                    (Some(t), Some(c)) => self.catalog.column(t, c),
                    _ => None,
                });
                let ty = from_origin
                    .or_else(|| {
                        stmt.columns
                            .as_ref()
                            .and_then(|hints| hints.get(i))
                            .and_then(|h| self.resolve(h, &stmt.scope))
                    })
                    // `SELECT *` from one view: its recorded column types.
                    .or_else(|| match (&stmt.columns, stmt.scope.as_slice()) {
                        (None, [only]) => self.catalog.column_at(only, i),
                        _ => None,
                    })
                    .or_else(|| decls[i].as_deref().map(PgType::from_sqlite_decltype))
                    .unwrap_or(PgType::Text);
                Column {
                    name: meta.name().to_string(),
                    ty,
                }
            })
            .collect();
        let param_columns = stmt
            .columns
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, h)| match h {
                TypeHint::Param(p) => Some((i, *p)),
                _ => None,
            })
            .collect();
        let mut param_maps = vec![param_map(prepared)];
        // Parameters only the extra statements use count too.
        for sql in &stmt.extra_sql {
            param_maps.push(
                self.conn
                    .prepare_cached(sql)
                    .map_or_else(|_| Vec::new(), |p| param_map(&p)),
            );
        }
        // Placeholders the rewrite left out (a select over an empty catalog
        // relation) are still the statement's parameters.
        let param_count = param_maps
            .iter()
            .flatten()
            .copied()
            .max()
            .unwrap_or(0)
            .max(stmt.params.len());
        Described {
            columns,
            scales,
            param_scales,
            param_columns,
            param_count,
            param_maps,
        }
    }

    fn param_types(&self, stmt: &Stmt, d: &Described, client_oids: &[u32]) -> Vec<PgType> {
        (0..d.param_count)
            .map(|i| match client_oids.get(i).copied().filter(|o| *o != 0) {
                Some(oid) => PgType::from_oid(oid).unwrap_or(PgType::Text),
                None => stmt
                    .params
                    .get(i)
                    .and_then(|h| self.resolve(h, &stmt.scope))
                    .unwrap_or(PgType::Text),
            })
            .collect()
    }

    fn described(&mut self, stmt: &Stmt) -> Result<Arc<Described>, ExecError> {
        if let Some(d) = self.described.get(stmt.sqlite_sql.as_str()) {
            return Ok(d.clone());
        }
        let prepared = self.conn.prepare_cached(&stmt.sqlite_sql)?;
        let d = Arc::new(self.describe_statement(stmt, &prepared));
        drop(prepared);
        self.described.put(stmt.sqlite_sql.clone(), d.clone());
        Ok(d)
    }

    /// Parameter types and result columns of a statement (`Describe`).
    pub fn describe(
        &mut self,
        plan: &Plan,
        index: usize,
        client_oids: &[u32],
    ) -> Result<(Vec<PgType>, Vec<Column>), ExecError> {
        self.refresh()?;
        let stmt = &plan[index];
        // Nothing to describe for a table rebuild: no rows, no parameters.
        if stmt.sqlite_sql.is_empty()
            || matches!(stmt.catalog, Some(CatalogChange::AddConstraint { .. }))
        {
            return Ok((Vec::new(), Vec::new()));
        }
        self.refresh_system_catalog(stmt)?;
        let d = self.described(stmt)?;
        let types = self.param_types(stmt, &d, client_oids);
        let columns = with_param_columns(&d, &types).into_owned();
        Ok((types, columns))
    }

    /// Records the types of a new view's columns: its query planned as written and
    /// described like a client's statement.
    fn record_view_types(&mut self, view: &str, query: &str) -> Result<(), ExecError> {
        let Ok(plan) = crate::sql::plan(query) else {
            return Ok(());
        };
        let Some(stmt) = plan.first() else {
            return Ok(());
        };
        let columns = {
            let prepared = self.conn.prepare(&stmt.sqlite_sql)?;
            self.describe_statement(stmt, &prepared).columns
        };
        let typed: Vec<(String, PgType)> = columns.into_iter().map(|c| (c.name, c.ty)).collect();
        catalog::record_view(&self.conn, view, &typed)?;
        Ok(())
    }

    /// The columns of `table` in order (`COPY t FROM STDIN` without a column list).
    pub fn table_columns(&mut self, table: &str) -> Result<Vec<String>, PgError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name FROM pragma_table_info(?1)")
            .map_err(|e| to_pg(&e))?;
        let names: Vec<String> = stmt
            .query_map([table], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| to_pg(&e))?;
        if names.is_empty() {
            return Err(PgError::new(
                code::UNDEFINED_TABLE,
                format!("relation \"{table}\" does not exist"),
            ));
        }
        Ok(names)
    }

    /// Inserts rows received by `COPY … FROM STDIN` with the planned INSERT (one
    /// text parameter per column). Returns the number of rows inserted.
    pub fn copy_rows(
        &mut self,
        plan: &Plan,
        rows: Vec<Vec<Option<Bytes>>>,
        binary: bool,
        session: Option<Arc<super::SessionView>>,
    ) -> Result<u64, ExecError> {
        let mut n = 0;
        for row in rows {
            let args = ExecArgs {
                plan: plan.clone(),
                index: 0,
                params: row,
                param_formats: if binary { vec![1] } else { Vec::new() },
                param_oids: Vec::new(),
                result_formats: Vec::new(),
                describe: false,
                simple: false,
                chunked: false,
                sink: None,
                session: session.clone(),
            };
            n += self.execute(&args)?.rows;
        }
        Ok(n)
    }

    /// Executes a statement and encodes its results.
    pub fn execute(&mut self, args: &ExecArgs) -> Result<ExecOutput, ExecError> {
        self.refresh()?;
        super::functions::set_session(args.session.clone());
        let stmt = &args.plan[args.index];
        self.refresh_system_catalog(stmt)?;
        if !stmt.typeof_args.is_empty() {
            let names = stmt
                .typeof_args
                .iter()
                .map(|h| {
                    let h = match h {
                        TypeHint::Param(p) => stmt.params.get(*p).unwrap_or(h),
                        other => other,
                    };
                    self.resolve(h, &stmt.scope)
                        .and_then(|t| super::system_catalog::format_type(i64::from(t.oid()), None))
                        .unwrap_or_else(|| "unknown".to_string())
                })
                .collect();
            super::functions::set_typeof(names);
        }
        let ddl = stmt.catalog.as_ref();
        if let Some(change) = ddl {
            let record = catalog::should_record(&self.conn, change)?;
            self.conn.execute_batch("SAVEPOINT unidb_ddl")?;
            let result = match change {
                CatalogChange::DropTables { tables, cascade } if stmt.tag == "DROP TABLE" => {
                    super::rebuild::drop_dependents(&self.conn, tables, *cascade)
                        .map_err(ExecError::from)
                        .and_then(|()| self.execute_inner(stmt, args))
                }
                CatalogChange::AddConstraint { table, constraint } => {
                    super::rebuild::add_constraint(&self.conn, table, constraint)
                        .map(|()| ExecOutput::default())
                        .map_err(ExecError::from)
                }
                _ => self.execute_inner(stmt, args),
            };
            let result = result.and_then(|out| {
                if record {
                    catalog::apply(&self.conn, change)?;
                }
                if let CatalogChange::CreateView { view, query } = change {
                    self.record_view_types(view, query)?;
                }
                Ok(out)
            });
            match &result {
                Ok(_) => self.conn.execute_batch("RELEASE unidb_ddl")?,
                Err(_) => self
                    .conn
                    .execute_batch("ROLLBACK TO unidb_ddl; RELEASE unidb_ddl")?,
            }
            self.bump_schema();
            return result;
        }
        let result = self.execute_inner(stmt, args);
        if stmt.kind == crate::sql::Kind::Ddl {
            self.bump_schema();
        }
        result
    }

    fn execute_inner(&mut self, stmt: &Stmt, args: &ExecArgs) -> Result<ExecOutput, ExecError> {
        let d = self.described(stmt)?;
        let types = self.param_types(stmt, &d, &args.param_oids);
        if args.params.len() != d.param_count {
            return Err(PgError::new(
                code::PROTOCOL_VIOLATION,
                format!(
                    "bind message supplies {} parameters, but prepared statement requires {}",
                    args.params.len(),
                    d.param_count
                ),
            )
            .into());
        }
        let columns = with_param_columns(&d, &types);
        {
            let prepared = self.conn.prepare_cached(&stmt.sqlite_sql)?;
            if !self.writer && !prepared.readonly() {
                return Err(ExecError::NeedsWriter);
            }
        }
        let mut out = ExecOutput::default();
        if args.describe {
            if columns.is_empty() {
                if !args.simple {
                    msg::no_data(&mut out.data);
                }
            } else {
                msg::row_description(&mut out.data, &columns, &args.result_formats);
            }
            out.rows_start = out.data.len();
        }
        let run = RunOne {
            stmt,
            args,
            columns: &columns,
            scales: &d.scales,
            param_scales: &d.param_scales,
            types: &types,
        };
        if stmt.extra_sql.is_empty() {
            out.rows = run.run(&self.conn, &stmt.sqlite_sql, &d.param_maps[0], &mut out)?;
            return Ok(out);
        }
        // A statement SQLite runs as several (an INSERT whose rows use DEFAULT for
        // different columns): all or nothing, rows and counts added up.
        self.conn.execute_batch("SAVEPOINT unidb_multi")?;
        let mut total = 0;
        let mut result = Ok(());
        let sqls = std::iter::once(&stmt.sqlite_sql).chain(&stmt.extra_sql);
        for (sql, map) in sqls.zip(&d.param_maps) {
            match run.run(&self.conn, sql, map, &mut out) {
                Ok(n) => total += n,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        match result {
            Ok(()) => {
                self.conn.execute_batch("RELEASE unidb_multi")?;
                out.rows = total;
                Ok(out)
            }
            Err(e) => {
                self.conn
                    .execute_batch("ROLLBACK TO unidb_multi; RELEASE unidb_multi")?;
                Err(e)
            }
        }
    }
}

/// What running one SQLite statement of a planned statement needs.
struct RunOne<'a> {
    stmt: &'a Stmt,
    args: &'a ExecArgs,
    columns: &'a [Column],
    scales: &'a [Option<u32>],
    param_scales: &'a [Option<u32>],
    types: &'a [PgType],
}

impl RunOne<'_> {
    /// Binds the client's parameters (`map`: the `$n` of each SQLite parameter), runs
    /// `sql` and encodes its rows into `out`; returns the rows returned or changed.
    fn run(
        &self,
        conn: &Connection,
        sql: &str,
        map: &[usize],
        out: &mut ExecOutput,
    ) -> Result<u64, ExecError> {
        let args = self.args;
        let mut prepared = conn.prepare_cached(sql)?;
        for (i, &n) in map.iter().enumerate() {
            let value = match args.params.get(n - 1) {
                None | Some(None) => Value::Null,
                Some(Some(raw)) => {
                    // Parameter format codes follow the same rule as result codes.
                    let binary =
                        FieldFormat::for_column(&args.param_formats, n - 1) == FieldFormat::Binary;
                    let ty = self.types[n - 1];
                    let v = types::decode_param(ty, binary, raw)?;
                    match (ty, self.param_scales.get(n - 1)) {
                        (PgType::Numeric, Some(Some(scale))) => types::round_numeric(v, *scale),
                        _ => v,
                    }
                }
            };
            prepared.raw_bind_parameter(i + 1, value)?;
        }
        let columns = self.columns;
        let ncols = columns.len();
        let formats: Vec<FieldFormat> = (0..ncols)
            .map(|i| FieldFormat::for_column(&args.result_formats, i))
            .collect();
        let mut rows = prepared.raw_query();
        let mut count = 0u64;
        while let Some(row) = rows.next()? {
            let mut w = DataRowWriter::begin(&mut out.data, ncols as i16);
            for (i, col) in columns.iter().enumerate() {
                let mut v = row.get_ref(i)?;
                if let rusqlite::types::ValueRef::Null = v {
                    w.null();
                    continue;
                }
                let scaled;
                match (col.ty, self.scales.get(i)) {
                    (PgType::Numeric, Some(Some(scale))) => {
                        if let Some(text) = types::numeric_with_scale(v, *scale) {
                            scaled = text;
                            v = rusqlite::types::ValueRef::Text(scaled.as_bytes());
                        }
                    }
                    // char(n) comes back blank-padded to n characters.
                    (PgType::Bpchar, Some(Some(n))) => {
                        if let rusqlite::types::ValueRef::Text(t) = v {
                            let text = String::from_utf8_lossy(t);
                            let len = text.chars().count();
                            if len < *n as usize {
                                scaled = format!("{text}{}", " ".repeat(*n as usize - len));
                                v = rusqlite::types::ValueRef::Text(scaled.as_bytes());
                            }
                        }
                    }
                    _ => {}
                }
                match formats[i] {
                    FieldFormat::Text => w.field(|b| types::encode_text(col.ty, v, b))?,
                    FieldFormat::Binary => w.field(|b| types::encode_binary(col.ty, v, b))?,
                }
            }
            w.finish();
            count += 1;
            if args.chunked {
                out.row_ends.push(out.data.len());
            } else if let Some(sink) = &args.sink {
                if out.data.len() >= STREAM_CHUNK {
                    let chunk = out.data.split();
                    out.rows_start = 0;
                    // The session drains while it waits; a closed channel means the
                    // client is gone, so the statement stops here.
                    if sink.blocking_send(chunk).is_err() {
                        return Err(PgError::new(
                            code::CONNECTION_FAILURE,
                            "client connection lost while sending rows",
                        )
                        .into());
                    }
                }
            }
        }
        drop(rows);
        Ok(if self.stmt.returns_rows || ncols > 0 {
            count
        } else {
            conn.changes()
        })
    }
}

/// The client parameter number of each of a statement's SQLite parameters: its `$n`
/// name, or its position for an unnamed one.
fn param_map(prepared: &rusqlite::Statement<'_>) -> Vec<usize> {
    (1..=prepared.parameter_count())
        .map(|i| {
            prepared
                .parameter_name(i)
                .and_then(|name| name.strip_prefix('$'))
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(i)
        })
        .collect()
}

/// The statement's columns with bare `$n` columns typed like their parameter.
fn with_param_columns<'a>(d: &'a Described, types: &[PgType]) -> std::borrow::Cow<'a, [Column]> {
    if d.param_columns.is_empty() {
        return std::borrow::Cow::Borrowed(&d.columns);
    }
    let mut cols = d.columns.clone();
    for (c, p) in &d.param_columns {
        if let (Some(col), Some(t)) = (cols.get_mut(*c), types.get(*p)) {
            col.ty = *t;
        }
    }
    std::borrow::Cow::Owned(cols)
}
