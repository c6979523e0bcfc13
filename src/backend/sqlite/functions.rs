//! PostgreSQL functions registered on every SQLite connection, so rewritten SQL can
//! call them: cast helpers (`pg_bool`, `pg_timestamptz`…), `version()`,
//! `gen_random_uuid()`, `pg_sleep()`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::{Value, ValueRef};
use rusqlite::Connection;

use crate::types::{self, PgType};

/// Marks a function error message as carrying a SQLSTATE, so that
/// [`super::errors::to_pg`] can restore it after SQLite passes it on as text.
pub const SQLSTATE_MARK: char = '\u{1}';

#[derive(Debug)]
struct FnError(crate::error::PgError);

impl std::fmt::Display for FnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{SQLSTATE_MARK}{}{}", self.0.code, self.0.message)
    }
}

impl std::error::Error for FnError {}

fn user_error(e: crate::error::PgError) -> rusqlite::Error {
    rusqlite::Error::UserFunctionError(Box::new(FnError(e)))
}

/// Applies PostgreSQL's cast of the first argument to `ty`.
fn cast_to(ctx: &Context<'_>, ty: PgType) -> rusqlite::Result<Value> {
    let v = ctx.get_raw(0);
    match v {
        ValueRef::Null => Ok(Value::Null),
        ValueRef::Integer(i) if ty == PgType::Bool => Ok(Value::Integer(i64::from(i != 0))),
        ValueRef::Integer(i) if ty.is_integer() => {
            types::decode_text(ty, &i.to_string()).map_err(user_error)
        }
        ValueRef::Integer(i) if matches!(ty, PgType::Float8 | PgType::Numeric) => {
            Ok(Value::Integer(i))
        }
        ValueRef::Real(f) if ty.is_integer() => {
            // PostgreSQL rounds half away from zero when casting to an integer.
            let r = f.round();
            if !r.is_finite() || r.abs() >= 9.2e18 {
                return Err(user_error(crate::error::PgError::new(
                    crate::error::code::NUMERIC_VALUE_OUT_OF_RANGE,
                    format!("value out of range for type {}", ty.name()),
                )));
            }
            types::decode_text(ty, &(r as i64).to_string()).map_err(user_error)
        }
        ValueRef::Real(f) if matches!(ty, PgType::Float8 | PgType::Numeric) => Ok(Value::Real(f)),
        ValueRef::Blob(b) if ty == PgType::Bytea => Ok(Value::Blob(b.to_vec())),
        ValueRef::Text(t) if ty == PgType::Bytea => {
            let s = String::from_utf8_lossy(t);
            if s.starts_with("\\x") {
                types::decode_text(ty, &s).map_err(user_error)
            } else {
                Ok(Value::Blob(t.to_vec()))
            }
        }
        other => {
            let s = match other {
                ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                ValueRef::Integer(i) => i.to_string(),
                ValueRef::Real(f) => f.to_string(),
                _ => {
                    return Err(user_error(crate::error::PgError::new(
                        crate::error::code::DATATYPE_MISMATCH,
                        format!("cannot cast binary data to {}", ty.name()),
                    )))
                }
            };
            types::decode_text(ty, &s).map_err(user_error)
        }
    }
}

/// Registers the functions. `cancel` is the connection's cancel flag, checked by
/// `pg_sleep` so that a CancelRequest ends a sleep as it ends any statement.
pub fn register(
    conn: &Connection,
    database: &str,
    cancel: Arc<AtomicBool>,
) -> rusqlite::Result<()> {
    let det = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    for (name, ty) in [
        ("pg_bool", PgType::Bool),
        ("pg_int2", PgType::Int2),
        ("pg_int4", PgType::Int4),
        ("pg_int8", PgType::Int8),
        ("pg_float8", PgType::Float8),
        ("pg_numeric", PgType::Numeric),
        ("pg_date", PgType::Date),
        ("pg_timestamp", PgType::Timestamp),
        ("pg_timestamptz", PgType::Timestamptz),
        ("pg_uuid", PgType::Uuid),
        ("pg_bytea", PgType::Bytea),
    ] {
        conn.create_scalar_function(name, 1, det, move |ctx| cast_to(ctx, ty))?;
    }
    let version = format!(
        "PostgreSQL {} on {}, SQLite {} backend",
        crate::server_version(),
        std::env::consts::ARCH,
        rusqlite::version()
    );
    conn.create_scalar_function("version", 0, det, move |_| Ok(version.clone()))?;
    let db = database.to_string();
    conn.create_scalar_function("current_database", 0, det, move |_| Ok(db.clone()))?;
    conn.create_scalar_function("current_schema", 0, det, |_| Ok("public"))?;
    conn.create_scalar_function("gen_random_uuid", 0, FunctionFlags::SQLITE_UTF8, |_| {
        Ok(uuid::Uuid::new_v4().hyphenated().to_string())
    })?;
    // PostgreSQL's random() is a float in [0, 1); SQLite's is a 64-bit integer.
    conn.create_scalar_function("random", 0, FunctionFlags::SQLITE_UTF8, |_| {
        Ok(rand::random::<f64>())
    })?;
    conn.create_scalar_function("pg_sleep", 1, FunctionFlags::SQLITE_UTF8, move |ctx| {
        let secs: f64 = ctx.get::<f64>(0).unwrap_or(0.0).clamp(0.0, 86_400.0);
        let end = Instant::now() + Duration::from_secs_f64(secs);
        while Instant::now() < end {
            if cancel.load(Ordering::Relaxed) {
                return Err(user_error(crate::error::PgError::canceled()));
            }
            std::thread::sleep((end - Instant::now()).min(Duration::from_millis(10)));
        }
        Ok(Value::Null)
    })?;
    Ok(())
}
