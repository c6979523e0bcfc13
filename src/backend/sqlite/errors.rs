//! SQLite errors as PostgreSQL errors: the SQLSTATE a driver can act on and a
//! message in PostgreSQL's words.
//!
//! Locking: `SQLITE_BUSY`/`SQLITE_LOCKED` (another process held the lock past
//! `busy_timeout`) map to `55P03 lock_not_available`: the statement did not run and
//! may simply be retried. `SQLITE_BUSY_SNAPSHOT` (a read transaction that can no
//! longer be upgraded to a write because another connection committed first) is a
//! true serialization failure and maps to `40001`.

use rusqlite::ffi;

use crate::error::{code, PgError};

pub fn to_pg(e: &rusqlite::Error) -> PgError {
    match e {
        rusqlite::Error::SqliteFailure(err, msg) => {
            let msg = msg.clone().unwrap_or_else(|| err.to_string());
            from_code(err.code, err.extended_code, &msg)
        }
        rusqlite::Error::SqlInputError { msg, .. } => syntax_or_name(msg),
        rusqlite::Error::InvalidParameterCount(given, expected) => PgError::new(
            code::PROTOCOL_VIOLATION,
            format!("bind message supplies {given} parameters, but prepared statement requires {expected}"),
        ),
        rusqlite::Error::UserFunctionError(inner) => syntax_or_name(&inner.to_string()),
        other => PgError::internal(other.to_string()),
    }
}

fn from_code(c: ffi::ErrorCode, extended: i32, msg: &str) -> PgError {
    use ffi::ErrorCode as E;
    match c {
        E::ConstraintViolation => constraint(extended, msg),
        E::DatabaseBusy if extended == ffi::SQLITE_BUSY_SNAPSHOT => PgError::new(
            code::SERIALIZATION_FAILURE,
            "could not serialize access due to concurrent update",
        )
        .with_hint("retry the transaction"),
        E::DatabaseBusy | E::DatabaseLocked => PgError::new(
            code::LOCK_NOT_AVAILABLE,
            "could not obtain lock on the database: another connection holds it",
        )
        .with_hint("retry; raise busy_timeout if this persists"),
        E::OperationInterrupted => PgError::canceled(),
        E::DiskFull => PgError::new(
            code::DISK_FULL,
            "could not write to the database file: disk full",
        ),
        E::OutOfMemory => PgError::new(code::OUT_OF_MEMORY, "out of memory"),
        E::ReadOnly => PgError::new(
            code::DATA_CORRUPTED,
            format!("cannot write: the database is read-only ({msg})"),
        ),
        E::DatabaseCorrupt | E::NotADatabase => PgError::new(
            code::DATA_CORRUPTED,
            format!("database file is corrupt: {msg}"),
        )
        .with_hint("stop writes and run an integrity check; restore from a verified backup"),
        E::TooBig => PgError::new(
            code::PROGRAM_LIMIT_EXCEEDED,
            format!("value too large: {msg}"),
        ),
        E::TypeMismatch => PgError::new(code::DATATYPE_MISMATCH, msg.to_string()),
        E::SystemIoFailure | E::CannotOpen => PgError::new(
            code::CONNECTION_FAILURE,
            format!("I/O error on the database file: {msg}"),
        ),
        _ => syntax_or_name(msg),
    }
}

fn constraint(extended: i32, msg: &str) -> PgError {
    let detail = msg.split_once(": ").map(|(_, d)| d.to_string());
    // The length check unidb adds to varchar(n) / char(n) columns.
    if extended == ffi::SQLITE_CONSTRAINT_CHECK {
        if let Some((ty, n)) = detail
            .as_deref()
            .and_then(|d| d.strip_prefix(crate::sql::LENGTH_CHECK_PREFIX))
            .and_then(|rest| rest.split_once('_'))
        {
            let name = if ty == "bpchar" {
                "character"
            } else {
                "character varying"
            };
            let n: String = n.chars().take_while(char::is_ascii_digit).collect();
            return PgError::new(
                code::STRING_DATA_RIGHT_TRUNCATION,
                format!("value too long for type {name}({n})"),
            );
        }
    }
    let (code, text) = match extended {
        ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => (
            code::UNIQUE_VIOLATION,
            "duplicate key value violates unique constraint",
        ),
        ffi::SQLITE_CONSTRAINT_NOTNULL => (
            code::NOT_NULL_VIOLATION,
            "null value violates not-null constraint",
        ),
        ffi::SQLITE_CONSTRAINT_FOREIGNKEY => (
            code::FOREIGN_KEY_VIOLATION,
            "insert or update violates foreign key constraint",
        ),
        ffi::SQLITE_CONSTRAINT_CHECK => {
            (code::CHECK_VIOLATION, "new row violates check constraint")
        }
        _ => (
            code::INTEGRITY_CONSTRAINT_VIOLATION,
            "integrity constraint violated",
        ),
    };
    let message = match &detail {
        Some(d) => format!("{text} ({d})"),
        None => text.to_string(),
    };
    let mut e = PgError::new(code, message);
    if let Some(d) = detail {
        e = e.with_detail(format!("SQLite reported: {d}"));
    }
    e
}

fn syntax_or_name(msg: &str) -> PgError {
    if let Some(rest) = msg.strip_prefix(super::functions::SQLSTATE_MARK) {
        if rest.len() >= 5 && rest.is_char_boundary(5) {
            let (sqlstate, message) = rest.split_at(5);
            return PgError::new(code::lookup(sqlstate), message.to_string());
        }
    }
    if let Some(t) = msg.strip_prefix("no such table: ") {
        return PgError::new(
            code::UNDEFINED_TABLE,
            format!("relation \"{t}\" does not exist"),
        );
    }
    if let Some(c) = msg.strip_prefix("no such column: ") {
        return PgError::new(
            code::UNDEFINED_COLUMN,
            format!("column \"{c}\" does not exist"),
        );
    }
    if let Some(c) = msg.strip_prefix("ambiguous column name: ") {
        return PgError::new(
            code::AMBIGUOUS_COLUMN,
            format!("column reference \"{c}\" is ambiguous"),
        );
    }
    if let Some(f) = msg.strip_prefix("no such function: ") {
        return PgError::new(
            code::UNDEFINED_FUNCTION,
            format!("function {f}() does not exist"),
        )
        .with_hint("this function is not available on the SQLite backend");
    }
    if msg.contains("syntax error") || msg.starts_with("near ") {
        return PgError::new(
            code::SYNTAX_ERROR,
            format!("syntax error in rewritten statement: {msg}"),
        );
    }
    if msg.contains("already exists") {
        return PgError::new(code::DUPLICATE_TABLE, msg.to_string());
    }
    PgError::internal(msg.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn err_of(sql: &str) -> PgError {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "PRAGMA foreign_keys=ON;
             CREATE TABLE p (id INTEGER PRIMARY KEY);
             CREATE TABLE t (id INTEGER PRIMARY KEY, n TEXT NOT NULL, v INT CHECK (v > 0), p INT REFERENCES p(id), u TEXT UNIQUE);
             INSERT INTO t (id, n, u) VALUES (1, 'a', 'x');",
        )
        .unwrap();
        to_pg(&c.execute_batch(sql).unwrap_err())
    }

    #[test]
    fn maps_sqlite_errors_to_sqlstates() {
        let cases = [
            (
                "INSERT INTO t (id, n) VALUES (1, 'b')",
                code::UNIQUE_VIOLATION,
            ),
            (
                "INSERT INTO t (id, n, u) VALUES (2, 'b', 'x')",
                code::UNIQUE_VIOLATION,
            ),
            ("INSERT INTO t (id) VALUES (3)", code::NOT_NULL_VIOLATION),
            (
                "INSERT INTO t (id, n, v) VALUES (4, 'a', -1)",
                code::CHECK_VIOLATION,
            ),
            (
                "INSERT INTO t (id, n, p) VALUES (5, 'a', 99)",
                code::FOREIGN_KEY_VIOLATION,
            ),
            ("SELECT * FROM nope", code::UNDEFINED_TABLE),
            ("SELECT nope FROM t", code::UNDEFINED_COLUMN),
            ("SELEC 1", code::SYNTAX_ERROR),
            ("SELECT nofunc(1)", code::UNDEFINED_FUNCTION),
        ];
        for (sql, want) in cases {
            assert_eq!(err_of(sql).code, want, "{sql}");
        }
    }
}
