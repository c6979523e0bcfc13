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

/// What statements may read of the session that runs them: `current_user`,
/// `pg_backend_pid()`, `current_setting(name)`.
#[derive(Debug)]
pub struct SessionView {
    pub user: Arc<str>,
    pub pid: i32,
    /// `txid_current()` of the running transaction (0: none assigned yet); the
    /// session clears it when a transaction or autocommit statement ends.
    pub txid: std::sync::atomic::AtomicI64,
    /// Lower-cased setting name → value; the session replaces it after SET/RESET.
    pub settings: std::sync::RwLock<std::collections::HashMap<String, String>>,
}

thread_local! {
    /// The session whose statement this SQLite thread is running: each connection
    /// has its own thread, and runs one statement at a time.
    static SESSION: std::cell::RefCell<Option<Arc<SessionView>>> = const { std::cell::RefCell::new(None) };
}

thread_local! {
    /// The type names of the running statement's `pg_typeof(…)` arguments.
    static TYPEOF: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Sets what `pg_typeof_hint(k)` answers for the statement about to run here.
pub fn set_typeof(names: Vec<String>) {
    TYPEOF.with(|t| *t.borrow_mut() = names);
}

/// Sets the session seen by `current_user`, `pg_backend_pid()` and
/// `current_setting()` on this thread.
pub fn set_session(session: Option<Arc<SessionView>>) {
    SESSION.with(|s| *s.borrow_mut() = session);
}

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
        ValueRef::Integer(i) if ty == PgType::Float8 => Ok(Value::Integer(i)),
        // A numeric divides exactly (`count(*)::numeric / n`): kept as a REAL when
        // that loses nothing.
        ValueRef::Integer(i) if ty == PgType::Numeric => Ok(if i.unsigned_abs() < (1 << 53) {
            Value::Real(i as f64)
        } else {
            Value::Integer(i)
        }),
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
    locks: Arc<super::locks::AdvisoryLocks>,
) -> rusqlite::Result<()> {
    register_lock_functions(conn, locks, cancel.clone())?;
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
    // x::numeric(p, s): the numeric cast, rounded to s decimals.
    conn.create_scalar_function("pg_numeric_scale", 2, det, |ctx| {
        let v = cast_to(ctx, PgType::Numeric)?;
        let scale: u32 = ctx.get(1)?;
        Ok(types::round_numeric(v, scale))
    })?;
    let db = database.to_string();
    conn.create_scalar_function("current_database", 0, det, move |_| Ok(db.clone()))?;
    conn.create_scalar_function("current_schema", 0, det, |_| Ok("public"))?;
    conn.create_scalar_function("current_schemas", 1, det, |ctx| {
        Ok(if ctx.get::<Option<bool>>(0)?.unwrap_or(false) {
            "{pg_catalog,public}"
        } else {
            "{public}"
        })
    })?;
    conn.create_scalar_function("gen_random_uuid", 0, FunctionFlags::SQLITE_UTF8, |_| {
        Ok(uuid::Uuid::new_v4().hyphenated().to_string())
    })?;
    conn.create_scalar_function("pg_session_user", 0, FunctionFlags::SQLITE_UTF8, |_| {
        Ok(SESSION.with(|s| s.borrow().as_ref().map(|v| v.user.to_string())))
    })?;
    conn.create_scalar_function("pg_backend_pid", 0, FunctionFlags::SQLITE_UTF8, |_| {
        Ok(SESSION.with(|s| s.borrow().as_ref().map(|v| v.pid)))
    })?;
    for n in [1, 2] {
        conn.create_scalar_function(
            "current_setting",
            n,
            FunctionFlags::SQLITE_UTF8,
            move |ctx| {
                let name: String = ctx.get(0)?;
                let missing_ok = n == 2 && ctx.get::<Option<bool>>(1)?.unwrap_or(false);
                let key = match name.to_ascii_lowercase().as_str() {
                    "time zone" => "timezone".to_string(),
                    other => other.to_string(),
                };
                let value = SESSION.with(|s| {
                    s.borrow().as_ref().and_then(|v| {
                        v.settings
                            .read()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .get(&key)
                            .cloned()
                    })
                });
                match value {
                    Some(v) => Ok(Some(v)),
                    None if missing_ok => Ok(None),
                    None => Err(user_error(crate::error::PgError::new(
                        crate::error::code::UNDEFINED_OBJECT,
                        format!("unrecognized configuration parameter \"{name}\""),
                    ))),
                }
            },
        )?;
    }
    register_text_functions(conn)?;
    register_math_functions(conn)?;
    register_datetime_functions(conn)?;
    register_json_functions(conn)?;
    register_catalog_functions(conn)?;
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

/// A text argument, `None` for NULL (strict functions return NULL then).
fn text_arg(ctx: &Context<'_>, i: usize) -> rusqlite::Result<Option<String>> {
    Ok(match ctx.get_raw(i) {
        ValueRef::Null => None,
        ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Integer(n) => Some(n.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
    })
}

fn int_arg(ctx: &Context<'_>, i: usize) -> rusqlite::Result<Option<i64>> {
    Ok(match ctx.get_raw(i) {
        ValueRef::Null => None,
        ValueRef::Integer(n) => Some(n),
        ValueRef::Real(f) => Some(f.round() as i64),
        ValueRef::Text(t) => Some(
            std::str::from_utf8(t)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| {
                    user_error(crate::error::PgError::new(
                        crate::error::code::INVALID_TEXT_REPRESENTATION,
                        format!(
                            "invalid input syntax for type integer: \"{}\"",
                            String::from_utf8_lossy(t)
                        ),
                    ))
                })?,
        ),
        ValueRef::Blob(_) => None,
    })
}

fn invalid(message: impl Into<String>) -> rusqlite::Error {
    user_error(crate::error::PgError::new(
        crate::error::code::INVALID_PARAMETER_VALUE,
        message.into(),
    ))
}

/// Compiles a PostgreSQL (ARE) regular expression; the common subset is the same
/// syntax in the `regex` crate. Compiled patterns are cached per statement.
fn regex_for(
    ctx: &Context<'_>,
    pattern_arg: usize,
    insensitive: bool,
) -> rusqlite::Result<Arc<regex::Regex>> {
    ctx.get_or_create_aux(
        pattern_arg as i32,
        |v| -> Result<regex::Regex, rusqlite::Error> {
            let p = v.as_str().map_err(|e| invalid(e.to_string()))?;
            regex::RegexBuilder::new(p)
                .case_insensitive(insensitive)
                .build()
                .map_err(|e| {
                    user_error(crate::error::PgError::new(
                        "2201B",
                        format!("invalid regular expression: {e}"),
                    ))
                })
        },
    )
}

fn pad(s: &str, len: i64, fill: &str, left: bool) -> String {
    let len = len.max(0) as usize;
    let chars: Vec<char> = s.chars().collect();
    if chars.len() >= len {
        return chars[..len].iter().collect();
    }
    let fill: Vec<char> = fill.chars().collect();
    if fill.is_empty() {
        return s.to_string();
    }
    let padding: String = fill.iter().cycle().take(len - chars.len()).collect();
    if left {
        padding + s
    } else {
        s.to_string() + &padding
    }
}

fn initcap(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if c.is_alphanumeric() {
            if start {
                out.extend(c.to_uppercase());
            } else {
                out.extend(c.to_lowercase());
            }
            start = false;
        } else {
            out.push(c);
            start = true;
        }
    }
    out
}

/// `regexp_replace` replacement text: PostgreSQL's `\1` and `\&` to the regex crate's `${1}`, `${0}`.
fn replacement(r: &str) -> String {
    let mut out = String::with_capacity(r.len());
    let mut chars = r.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(d @ '0'..='9') => {
                    out.push_str("${");
                    out.push(d);
                    out.push('}');
                }
                Some('&') => out.push_str("${0}"),
                Some(other) => out.push(other),
                None => out.push('\\'),
            },
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

fn register_text_functions(conn: &Connection) -> rusqlite::Result<()> {
    let det = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("pg_regex_match", 3, det, |ctx| {
        let (Some(s), Some(_)) = (text_arg(ctx, 0)?, text_arg(ctx, 1)?) else {
            return Ok(None);
        };
        let insensitive = text_arg(ctx, 2)?.is_some_and(|f| f.contains('i'));
        Ok(Some(regex_for(ctx, 1, insensitive)?.is_match(&s)))
    })?;
    for n in [3, 4] {
        conn.create_scalar_function("regexp_replace", n, det, move |ctx| {
            let (Some(s), Some(_), Some(r)) =
                (text_arg(ctx, 0)?, text_arg(ctx, 1)?, text_arg(ctx, 2)?)
            else {
                return Ok(None);
            };
            let flags = if n == 4 {
                text_arg(ctx, 3)?.unwrap_or_default()
            } else {
                String::new()
            };
            let re = regex_for(ctx, 1, flags.contains('i'))?;
            let rep = replacement(&r);
            Ok(Some(if flags.contains('g') {
                re.replace_all(&s, rep.as_str()).into_owned()
            } else {
                re.replace(&s, rep.as_str()).into_owned()
            }))
        })?;
    }
    for (name, left) in [("lpad", true), ("rpad", false)] {
        for n in [2, 3] {
            conn.create_scalar_function(name, n, det, move |ctx| {
                let (Some(s), Some(len)) = (text_arg(ctx, 0)?, int_arg(ctx, 1)?) else {
                    return Ok(None);
                };
                let fill = if n == 3 {
                    text_arg(ctx, 2)?
                } else {
                    Some(" ".to_string())
                };
                Ok(fill.map(|f| pad(&s, len, &f, left)))
            })?;
        }
    }
    conn.create_scalar_function("format", -1, det, |ctx| {
        let Some(fmt) = text_arg(ctx, 0)? else {
            return Ok(None);
        };
        let args: Vec<Option<String>> = (1..ctx.len())
            .map(|i| text_arg(ctx, i))
            .collect::<rusqlite::Result<_>>()?;
        format_pg(&fmt, &args).map(Some)
    })?;
    conn.create_scalar_function("initcap", 1, det, |ctx| {
        Ok(text_arg(ctx, 0)?.map(|s| initcap(&s)))
    })?;
    conn.create_scalar_function("split_part", 3, det, |ctx| {
        let (Some(s), Some(d), Some(n)) = (text_arg(ctx, 0)?, text_arg(ctx, 1)?, int_arg(ctx, 2)?)
        else {
            return Ok(None);
        };
        if n == 0 {
            return Err(invalid("field position must not be zero"));
        }
        let parts: Vec<&str> = if d.is_empty() {
            vec![s.as_str()]
        } else {
            s.split(d.as_str()).collect()
        };
        let idx = if n > 0 { n - 1 } else { parts.len() as i64 + n };
        Ok(Some(
            usize::try_from(idx)
                .ok()
                .and_then(|i| parts.get(i))
                .map_or(String::new(), |p| p.to_string()),
        ))
    })?;
    for (name, from_left) in [("left", true), ("right", false)] {
        conn.create_scalar_function(name, 2, det, move |ctx| {
            let (Some(s), Some(n)) = (text_arg(ctx, 0)?, int_arg(ctx, 1)?) else {
                return Ok(None);
            };
            let chars: Vec<char> = s.chars().collect();
            let len = chars.len() as i64;
            let take = if n >= 0 { n.min(len) } else { (len + n).max(0) } as usize;
            Ok(Some(if from_left {
                chars[..take].iter().collect::<String>()
            } else {
                chars[chars.len() - take..].iter().collect::<String>()
            }))
        })?;
    }
    conn.create_scalar_function("repeat", 2, det, |ctx| {
        let (Some(s), Some(n)) = (text_arg(ctx, 0)?, int_arg(ctx, 1)?) else {
            return Ok(None);
        };
        if s.len().saturating_mul(n.max(0) as usize) > 256 << 20 {
            return Err(user_error(crate::error::PgError::new(
                crate::error::code::PROGRAM_LIMIT_EXCEEDED,
                "requested length too large",
            )));
        }
        Ok(Some(s.repeat(n.max(0) as usize)))
    })?;
    conn.create_scalar_function("reverse", 1, det, |ctx| {
        Ok(text_arg(ctx, 0)?.map(|s| s.chars().rev().collect::<String>()))
    })?;
    conn.create_scalar_function("md5", 1, det, |ctx| {
        use md5::Digest;
        Ok(match ctx.get_raw(0) {
            ValueRef::Null => None,
            ValueRef::Text(t) | ValueRef::Blob(t) => Some(to_hex(&md5::Md5::digest(t))),
            other => Some(to_hex(&md5::Md5::digest(format!("{other:?}").as_bytes()))),
        })
    })?;
    conn.create_scalar_function("encode", 2, det, |ctx| {
        let Some(fmt) = text_arg(ctx, 1)? else {
            return Ok(None);
        };
        let bytes: Vec<u8> = match ctx.get_raw(0) {
            ValueRef::Null => return Ok(None),
            ValueRef::Blob(b) | ValueRef::Text(b) => b.to_vec(),
            other => format!("{other:?}").into_bytes(),
        };
        match fmt.to_ascii_lowercase().as_str() {
            "hex" => Ok(Some(to_hex(&bytes))),
            "base64" => {
                use base64::Engine;
                Ok(Some(
                    base64::engine::general_purpose::STANDARD.encode(&bytes),
                ))
            }
            "escape" => Ok(Some(
                bytes
                    .iter()
                    .map(|&b| match b {
                        b'\\' => "\\\\".to_string(),
                        32..=126 => (b as char).to_string(),
                        _ => format!("\\{b:03o}"),
                    })
                    .collect(),
            )),
            other => Err(invalid(format!("unrecognized encoding: \"{other}\""))),
        }
    })?;
    conn.create_scalar_function("decode", 2, det, |ctx| {
        let (Some(s), Some(fmt)) = (text_arg(ctx, 0)?, text_arg(ctx, 1)?) else {
            return Ok(None);
        };
        let bytes = match fmt.to_ascii_lowercase().as_str() {
            "hex" => from_hex(s.trim()).ok_or_else(|| invalid("invalid hexadecimal data"))?,
            "base64" => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(s.trim())
                    .map_err(|e| invalid(format!("invalid base64 data: {e}")))?
            }
            other => return Err(invalid(format!("unrecognized encoding: \"{other}\""))),
        };
        Ok(Some(Value::Blob(bytes)))
    })?;
    // GREATEST/LEAST ignore NULLs (NULL only when every argument is NULL).
    for (name, greatest) in [("greatest", true), ("least", false)] {
        conn.create_scalar_function(name, -1, det, move |ctx| {
            let mut best: Option<Value> = None;
            for i in 0..ctx.len() {
                let v: Value = ctx.get::<Value>(i)?;
                if v == Value::Null {
                    continue;
                }
                best = Some(match best {
                    None => v,
                    Some(b) => {
                        let ord = compare_values(&v, &b);
                        if (ord == std::cmp::Ordering::Greater) == greatest
                            && ord != std::cmp::Ordering::Equal
                        {
                            v
                        } else {
                            b
                        }
                    }
                });
            }
            Ok(best.unwrap_or(Value::Null))
        })?;
    }
    Ok(())
}

/// Orders values as SQLite does across storage classes: numbers < text < blobs.
fn compare_values(a: &Value, b: &Value) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let num = |v: &Value| match v {
        Value::Integer(i) => Some(*i as f64),
        Value::Real(f) => Some(*f),
        _ => None,
    };
    match (num(a), num(b)) {
        (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        _ => match (a, b) {
            (Value::Text(x), Value::Text(y)) => x.cmp(y),
            (Value::Blob(x), Value::Blob(y)) => x.cmp(y),
            (Value::Text(_), _) => Ordering::Less,
            _ => Ordering::Greater,
        },
    }
}

fn register_math_functions(conn: &Connection) -> rusqlite::Result<()> {
    let det = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    let real = |ctx: &Context<'_>, i: usize| -> rusqlite::Result<Option<f64>> {
        Ok(match ctx.get_raw(i) {
            ValueRef::Null => None,
            ValueRef::Integer(n) => Some(n as f64),
            ValueRef::Real(f) => Some(f),
            ValueRef::Text(t) => std::str::from_utf8(t)
                .ok()
                .and_then(|s| s.trim().parse().ok()),
            ValueRef::Blob(_) => None,
        })
    };
    conn.create_scalar_function("mod", 2, det, move |ctx| {
        match (ctx.get_raw(0), ctx.get_raw(1)) {
            (ValueRef::Null, _) | (_, ValueRef::Null) => Ok(Value::Null),
            (ValueRef::Integer(a), ValueRef::Integer(b)) => {
                if b == 0 {
                    return Err(user_error(crate::error::PgError::new(
                        crate::error::code::DIVISION_BY_ZERO,
                        "division by zero",
                    )));
                }
                Ok(Value::Integer(a.wrapping_rem(b)))
            }
            _ => {
                let (a, b) = (real(ctx, 0)?.unwrap_or(0.0), real(ctx, 1)?.unwrap_or(0.0));
                if b == 0.0 {
                    return Err(user_error(crate::error::PgError::new(
                        crate::error::code::DIVISION_BY_ZERO,
                        "division by zero",
                    )));
                }
                Ok(Value::Real(a % b))
            }
        }
    })?;
    conn.create_scalar_function("pg_divisor", 1, det, |ctx| {
        let zero = match ctx.get_raw(0) {
            ValueRef::Integer(0) => true,
            ValueRef::Real(f) => f == 0.0,
            _ => false,
        };
        if zero {
            return Err(user_error(crate::error::PgError::new(
                crate::error::code::DIVISION_BY_ZERO,
                "division by zero",
            )));
        }
        ctx.get::<Value>(0)
    })?;
    conn.create_scalar_function("div", 2, det, move |ctx| {
        let (Some(a), Some(b)) = (real(ctx, 0)?, real(ctx, 1)?) else {
            return Ok(Value::Null);
        };
        if b == 0.0 {
            return Err(user_error(crate::error::PgError::new(
                crate::error::code::DIVISION_BY_ZERO,
                "division by zero",
            )));
        }
        Ok(Value::Integer((a / b).trunc() as i64))
    })?;
    for n in [1, 2] {
        conn.create_scalar_function("trunc", n, det, move |ctx| {
            let Some(x) = real(ctx, 0)? else {
                return Ok(None);
            };
            let places = if n == 2 {
                int_arg(ctx, 1)?.unwrap_or(0)
            } else {
                0
            };
            let m = 10f64.powi(places as i32);
            Ok(Some((x * m).trunc() / m))
        })?;
    }
    type F = fn(f64) -> f64;
    let unary: [(&str, F); 8] = [
        ("sqrt", f64::sqrt),
        ("exp", f64::exp),
        ("ln", f64::ln),
        ("log10", f64::log10),
        ("sign", f64::signum),
        ("ceil", f64::ceil),
        ("floor", f64::floor),
        ("cbrt", f64::cbrt),
    ];
    for (name, f) in unary {
        conn.create_scalar_function(name, 1, det, move |ctx| {
            let raw = ctx.get_raw(0);
            // ceil/floor/sign of an integer stay integers.
            if let ValueRef::Integer(i) = raw {
                if matches!(name, "ceil" | "floor") {
                    return Ok(Value::Integer(i));
                }
                if name == "sign" {
                    return Ok(Value::Integer(i.signum()));
                }
            }
            let Some(x) = real(ctx, 0)? else {
                return Ok(Value::Null);
            };
            if matches!(name, "sqrt") && x < 0.0 {
                return Err(user_error(crate::error::PgError::new(
                    crate::error::code::INVALID_ARGUMENT_FOR_POWER,
                    "cannot take square root of a negative number",
                )));
            }
            if matches!(name, "ln" | "log10") && x <= 0.0 {
                return Err(user_error(crate::error::PgError::new(
                    crate::error::code::INVALID_ARGUMENT_FOR_LOG,
                    "cannot take logarithm of zero or a negative number",
                )));
            }
            Ok(Value::Real(f(x)))
        })?;
    }
    conn.create_scalar_function("log", 1, det, move |ctx| {
        let Some(x) = real(ctx, 0)? else {
            return Ok(None);
        };
        if x <= 0.0 {
            return Err(user_error(crate::error::PgError::new(
                crate::error::code::INVALID_ARGUMENT_FOR_LOG,
                "cannot take logarithm of zero or a negative number",
            )));
        }
        Ok(Some(x.log10()))
    })?;
    for name in ["power", "pow"] {
        conn.create_scalar_function(name, 2, det, move |ctx| {
            let (Some(a), Some(b)) = (real(ctx, 0)?, real(ctx, 1)?) else {
                return Ok(None);
            };
            Ok(Some(a.powf(b)))
        })?;
    }
    conn.create_scalar_function("pi", 0, det, |_| Ok(std::f64::consts::PI))?;
    Ok(())
}

fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from_digit((b >> 4) as u32, 16).unwrap_or('0'));
        s.push(char::from_digit((b & 15) as u32, 16).unwrap_or('0'));
    }
    s
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A date or timestamp argument as stored (text), with whether it carried a time
/// of day and a zone.
fn datetime_arg(
    ctx: &Context<'_>,
    i: usize,
) -> rusqlite::Result<Option<(chrono::NaiveDateTime, bool, bool)>> {
    let Some(text) = text_arg(ctx, i)? else {
        return Ok(None);
    };
    let has_time = text.trim().len() > 10;
    let (dt, tz) = types::parse_timestamp(&text).ok_or_else(|| {
        user_error(crate::error::PgError::new(
            crate::error::code::INVALID_DATETIME_FORMAT,
            format!("invalid input syntax for type timestamp: \"{text}\""),
        ))
    })?;
    Ok(Some((dt, has_time, tz)))
}

fn unit_error(unit: &str) -> rusqlite::Error {
    user_error(crate::error::PgError::new(
        crate::error::code::FEATURE_NOT_SUPPORTED,
        format!("unit \"{unit}\" not supported"),
    ))
}

/// `date_trunc(unit, ts)`.
fn date_trunc(unit: &str, dt: chrono::NaiveDateTime) -> Option<chrono::NaiveDateTime> {
    use chrono::{Datelike, NaiveDate, Timelike};
    let d = dt.date();
    let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0);
    match unit {
        "microseconds" => Some(dt),
        "milliseconds" => dt.with_nanosecond(dt.nanosecond() / 1_000_000 * 1_000_000),
        "second" => dt.with_nanosecond(0),
        "minute" => dt.with_nanosecond(0)?.with_second(0),
        "hour" => dt.with_nanosecond(0)?.with_second(0)?.with_minute(0),
        "day" => midnight(d),
        "week" => midnight(d - chrono::Duration::days(d.weekday().num_days_from_monday() as i64)),
        "month" => midnight(d.with_day(1)?),
        "quarter" => midnight(NaiveDate::from_ymd_opt(
            d.year(),
            (d.month0() / 3) * 3 + 1,
            1,
        )?),
        "year" => midnight(NaiveDate::from_ymd_opt(d.year(), 1, 1)?),
        "decade" => midnight(NaiveDate::from_ymd_opt(d.year().div_euclid(10) * 10, 1, 1)?),
        "century" => midnight(NaiveDate::from_ymd_opt(
            (d.year() - 1).div_euclid(100) * 100 + 1,
            1,
            1,
        )?),
        _ => None,
    }
}

/// `extract(field FROM x)`: PostgreSQL returns numeric; fields with fractions keep
/// six decimals for values with a time of day, as PostgreSQL prints them.
fn extract(field: &str, dt: chrono::NaiveDateTime, has_time: bool) -> Option<Value> {
    use chrono::{Datelike, Timelike};
    let micros = dt.and_utc().timestamp_subsec_micros() as i64;
    let frac = |whole: i64, sub: i64| -> Value {
        if has_time {
            let neg = whole < 0 && sub != 0;
            let (w, f) = if neg {
                (whole + 1, 1_000_000 - sub)
            } else {
                (whole, sub)
            };
            Value::Text(format!(
                "{}{}.{:06}",
                if neg && w == 0 { "-" } else { "" },
                w,
                f
            ))
        } else {
            Value::Integer(whole)
        }
    };
    Some(match field {
        "year" => Value::Integer(dt.year() as i64),
        "month" => Value::Integer(dt.month() as i64),
        "day" => Value::Integer(dt.day() as i64),
        "hour" => Value::Integer(dt.hour() as i64),
        "minute" => Value::Integer(dt.minute() as i64),
        "second" => frac(dt.second() as i64, micros),
        "milliseconds" => Value::Text(format!(
            "{}.{:03}",
            dt.second() as i64 * 1000 + micros / 1000,
            micros % 1000
        )),
        "microseconds" => Value::Integer(dt.second() as i64 * 1_000_000 + micros),
        "epoch" => frac(dt.and_utc().timestamp(), micros),
        "dow" => Value::Integer(dt.weekday().num_days_from_sunday() as i64),
        "isodow" => Value::Integer(dt.weekday().number_from_monday() as i64),
        "doy" => Value::Integer(dt.ordinal() as i64),
        "week" => Value::Integer(dt.iso_week().week() as i64),
        "isoyear" => Value::Integer(dt.iso_week().year() as i64),
        "quarter" => Value::Integer((dt.month0() / 3 + 1) as i64),
        "decade" => Value::Integer(dt.year().div_euclid(10) as i64),
        "century" => Value::Integer(((dt.year() - 1).div_euclid(100) + 1) as i64),
        "millennium" => Value::Integer(((dt.year() - 1).div_euclid(1000) + 1) as i64),
        "timezone" => Value::Integer(0),
        _ => return None,
    })
}

/// `to_char(timestamp, pattern)` for the common patterns.
fn to_char(dt: chrono::NaiveDateTime, pattern: &str) -> String {
    use chrono::{Datelike, Timelike};
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
    ];
    let mut out = String::new();
    let p: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    let mut fill = false;
    let starts = |i: usize, tok: &str| -> bool {
        let t: Vec<char> = tok.chars().collect();
        p.len() >= i + t.len() && p[i..i + t.len()] == t[..]
    };
    let month = MONTHS[dt.month0() as usize];
    let day = DAYS[dt.weekday().num_days_from_sunday() as usize];
    let hour12 = match dt.hour() % 12 {
        0 => 12,
        h => h,
    };
    while i < p.len() {
        if starts(i, "FM") {
            fill = true;
            i += 2;
            continue;
        }
        let pad = |n: u32, width: usize, fill: bool| {
            if fill {
                n.to_string()
            } else {
                format!("{n:0width$}")
            }
        };
        let name = |s: &str, upper: bool, lower: bool, width: usize, fill: bool| {
            let v = if upper {
                s.to_uppercase()
            } else if lower {
                s.to_lowercase()
            } else {
                s.to_string()
            };
            if fill {
                v
            } else {
                format!("{v:<width$}")
            }
        };
        let (text, len): (String, usize) = if starts(i, "YYYY") {
            (format!("{:04}", dt.year()), 4)
        } else if starts(i, "YY") {
            (format!("{:02}", dt.year().rem_euclid(100)), 2)
        } else if starts(i, "HH24") {
            (pad(dt.hour(), 2, fill), 4)
        } else if starts(i, "HH12") {
            (pad(hour12, 2, fill), 4)
        } else if starts(i, "HH") {
            (pad(hour12, 2, fill), 2)
        } else if starts(i, "MI") {
            (pad(dt.minute(), 2, fill), 2)
        } else if starts(i, "SS") {
            (pad(dt.second(), 2, fill), 2)
        } else if starts(i, "MS") {
            (format!("{:03}", dt.and_utc().timestamp_subsec_millis()), 2)
        } else if starts(i, "US") {
            (format!("{:06}", dt.and_utc().timestamp_subsec_micros()), 2)
        } else if starts(i, "MONTH") {
            (name(month, true, false, 9, fill), 5)
        } else if starts(i, "Month") {
            (name(month, false, false, 9, fill), 5)
        } else if starts(i, "month") {
            (name(month, false, true, 9, fill), 5)
        } else if starts(i, "MON") {
            (month[..3].to_uppercase(), 3)
        } else if starts(i, "Mon") {
            (month[..3].to_string(), 3)
        } else if starts(i, "mon") {
            (month[..3].to_lowercase(), 3)
        } else if starts(i, "MM") {
            (pad(dt.month(), 2, fill), 2)
        } else if starts(i, "DAY") {
            (name(day, true, false, 9, fill), 3)
        } else if starts(i, "Day") {
            (name(day, false, false, 9, fill), 3)
        } else if starts(i, "day") {
            (name(day, false, true, 9, fill), 3)
        } else if starts(i, "DY") {
            (day[..3].to_uppercase(), 2)
        } else if starts(i, "Dy") {
            (day[..3].to_string(), 2)
        } else if starts(i, "dy") {
            (day[..3].to_lowercase(), 2)
        } else if starts(i, "DDD") {
            (pad(dt.ordinal(), 3, fill), 3)
        } else if starts(i, "DD") {
            (pad(dt.day(), 2, fill), 2)
        } else if starts(i, "D") {
            ((dt.weekday().num_days_from_sunday() + 1).to_string(), 1)
        } else if starts(i, "AM") || starts(i, "PM") {
            ((if dt.hour() < 12 { "AM" } else { "PM" }).to_string(), 2)
        } else if starts(i, "am") || starts(i, "pm") {
            ((if dt.hour() < 12 { "am" } else { "pm" }).to_string(), 2)
        } else if starts(i, "Q") {
            ((dt.month0() / 3 + 1).to_string(), 1)
        } else if starts(i, "IW") {
            (pad(dt.iso_week().week(), 2, fill), 2)
        } else if starts(i, "TZ") {
            ("UTC".to_string(), 2)
        } else if p[i] == '"' {
            let end = p[i + 1..]
                .iter()
                .position(|&c| c == '"')
                .map_or(p.len(), |e| i + 1 + e);
            (p[i + 1..end].iter().collect(), end + 1 - i)
        } else {
            (p[i].to_string(), 1)
        };
        out.push_str(&text);
        i += len;
        fill = false;
    }
    out
}

fn register_datetime_functions(conn: &Connection) -> rusqlite::Result<()> {
    register_interval_functions(conn)?;
    let det = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("date_trunc", 2, det, |ctx| {
        let Some(unit) = text_arg(ctx, 0)? else {
            return Ok(None);
        };
        let Some((dt, has_time, tz)) = datetime_arg(ctx, 1)? else {
            return Ok(None);
        };
        // A date is truncated as a timestamp with time zone, as in PostgreSQL.
        let tz = tz || !has_time;
        let unit = unit.to_ascii_lowercase();
        let t = date_trunc(
            unit.trim_end_matches('s')
                .trim_end_matches("millisecond")
                .trim(),
            dt,
        )
        .or_else(|| date_trunc(&unit, dt))
        .ok_or_else(|| unit_error(&unit))?;
        Ok(Some(types::format_timestamp(&t, tz)))
    })?;
    conn.create_scalar_function("pg_extract", 2, det, |ctx| {
        let Some(field) = text_arg(ctx, 0)? else {
            return Ok(Value::Null);
        };
        // extract(… FROM interval)
        if let Some(text) = value_text(ctx.get_raw(1)) {
            if types::parse_timestamp(&text).is_none() {
                if let Ok(iv) = types::Interval::parse(&text, None) {
                    return extract_interval(&field.to_ascii_lowercase(), &iv)
                        .ok_or_else(|| unit_error(&field));
                }
            }
        }
        let Some((dt, has_time, _)) = datetime_arg(ctx, 1)? else {
            return Ok(Value::Null);
        };
        extract(&field.to_ascii_lowercase(), dt, has_time).ok_or_else(|| unit_error(&field))
    })?;
    conn.create_scalar_function("date_part", 2, det, |ctx| {
        let Some(field) = text_arg(ctx, 0)? else {
            return Ok(Value::Null);
        };
        let Some((dt, _, _)) = datetime_arg(ctx, 1)? else {
            return Ok(Value::Null);
        };
        // date_part returns double precision.
        Ok(
            match extract(&field.to_ascii_lowercase(), dt, true)
                .ok_or_else(|| unit_error(&field))?
            {
                Value::Text(t) => Value::Real(t.parse().unwrap_or(0.0)),
                other => other,
            },
        )
    })?;
    conn.create_scalar_function("to_char", 2, det, |ctx| {
        let Some(pattern) = text_arg(ctx, 1)? else {
            return Ok(None);
        };
        match ctx.get_raw(0) {
            ValueRef::Integer(i) => return Ok(Some(number_to_char(&i.to_string(), &pattern))),
            ValueRef::Real(f) => return Ok(Some(number_to_char(&format!("{f}"), &pattern))),
            _ => {}
        }
        let Some((dt, _, _)) = datetime_arg(ctx, 0)? else {
            return Ok(None);
        };
        Ok(Some(to_char(dt, &pattern)))
    })?;
    Ok(())
}

#[cfg(test)]
mod datetime_tests {
    use super::*;

    fn ts(s: &str) -> chrono::NaiveDateTime {
        types::parse_timestamp(s).unwrap().0
    }

    #[test]
    fn to_char_common_patterns() {
        let t = ts("2026-01-15 08:05:09");
        assert_eq!(to_char(t, "YYYY-MM-DD HH24:MI:SS"), "2026-01-15 08:05:09");
        assert_eq!(to_char(t, "DD/MM/YYYY"), "15/01/2026");
        assert_eq!(to_char(t, "FMMonth DD, YYYY"), "January 15, 2026");
        assert_eq!(to_char(t, "Mon Dy HH12:MI AM"), "Jan Thu 08:05 AM");
        assert_eq!(to_char(t, "Day"), "Thursday ");
        assert_eq!(to_char(t, "YYYY \"Q\"Q"), "2026 Q1");
    }

    #[test]
    fn trunc_and_extract() {
        let t = ts("2026-01-15 10:42:17.25");
        assert_eq!(date_trunc("month", t), Some(ts("2026-01-01 00:00:00")));
        assert_eq!(date_trunc("week", t), Some(ts("2026-01-12 00:00:00")));
        assert_eq!(date_trunc("hour", t), Some(ts("2026-01-15 10:00:00")));
        assert_eq!(
            extract("second", t, true),
            Some(Value::Text("17.250000".into()))
        );
        assert_eq!(extract("dow", t, true), Some(Value::Integer(4)));
        assert_eq!(extract("year", t, false), Some(Value::Integer(2026)));
        assert_eq!(
            extract("epoch", ts("2026-01-15 10:00:00+00"), true),
            Some(Value::Text("1768471200.000000".into()))
        );
    }
}

fn json_arg(ctx: &Context<'_>, i: usize) -> rusqlite::Result<Option<serde_json::Value>> {
    let Some(text) = text_arg(ctx, i)? else {
        return Ok(None);
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        user_error(crate::error::PgError::new(
            crate::error::code::INVALID_TEXT_REPRESENTATION,
            format!("invalid input syntax for type json: {e}"),
        ))
    })
}

fn json_eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match (a, b) {
        (J::Number(x), J::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// jsonb `a @> b`, with PostgreSQL's rules: objects by key, arrays by element
/// (in any order), a top-level array contains a scalar it has as an element.
fn json_contains(a: &serde_json::Value, b: &serde_json::Value, top: bool) -> bool {
    use serde_json::Value as J;
    match (a, b) {
        (J::Object(x), J::Object(y)) => y
            .iter()
            .all(|(k, bv)| x.get(k).is_some_and(|av| json_contains(av, bv, false))),
        (J::Array(x), J::Array(y)) => y
            .iter()
            .all(|bv| x.iter().any(|av| json_contains(av, bv, false))),
        (J::Array(x), scalar) if top && !scalar.is_object() => {
            x.iter().any(|av| json_eq(av, scalar))
        }
        (x, y) => json_eq(x, y),
    }
}

fn json_has_key(v: &serde_json::Value, key: &str) -> bool {
    use serde_json::Value as J;
    match v {
        J::Object(m) => m.contains_key(key),
        J::Array(a) => a.iter().any(|e| e.as_str() == Some(key)),
        J::String(s) => s == key,
        _ => false,
    }
}

/// A PostgreSQL text-array path `{a,b,0}` as its elements.
fn path_elements(path: &str) -> Vec<String> {
    path.trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .split(',')
        .map(|p| p.trim().trim_matches('"').to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn json_at<'a>(v: &'a serde_json::Value, path: &[String]) -> Option<&'a serde_json::Value> {
    let mut cur = v;
    for p in path {
        cur = match cur {
            serde_json::Value::Object(m) => m.get(p)?,
            serde_json::Value::Array(a) => {
                let i: i64 = p.parse().ok()?;
                let idx = if i < 0 { a.len() as i64 + i } else { i };
                a.get(usize::try_from(idx).ok()?)?
            }
            _ => return None,
        };
    }
    Some(cur)
}

fn register_json_functions(conn: &Connection) -> rusqlite::Result<()> {
    register_jsonb_edit_functions(conn)?;
    let det = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    // `a @> b`, and `a <@ b` as `b @> a`.
    for (name, swapped) in [("pg_jsonb_contains", false), ("pg_jsonb_contained", true)] {
        conn.create_scalar_function(name, 2, det, move |ctx| {
            let (Some(a), Some(b)) = (json_arg(ctx, 0)?, json_arg(ctx, 1)?) else {
                return Ok(None);
            };
            let (outer, inner) = if swapped { (&b, &a) } else { (&a, &b) };
            Ok(Some(json_contains(outer, inner, true)))
        })?;
    }
    conn.create_scalar_function("pg_jsonb_exists", 2, det, |ctx| {
        let (Some(v), Some(k)) = (json_arg(ctx, 0)?, text_arg(ctx, 1)?) else {
            return Ok(None);
        };
        Ok(Some(json_has_key(&v, &k)))
    })?;
    for (name, all) in [
        ("pg_jsonb_exists_any", false),
        ("pg_jsonb_exists_all", true),
    ] {
        conn.create_scalar_function(name, 2, det, move |ctx| {
            let (Some(v), Some(keys)) = (json_arg(ctx, 0)?, json_arg(ctx, 1)?) else {
                return Ok(None);
            };
            let keys: Vec<String> = match keys {
                serde_json::Value::Array(a) => a
                    .iter()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            };
            Ok(Some(if all {
                keys.iter().all(|k| json_has_key(&v, k))
            } else {
                keys.iter().any(|k| json_has_key(&v, k))
            }))
        })?;
    }
    for (name, as_text) in [("pg_jsonb_path", false), ("pg_jsonb_path_text", true)] {
        conn.create_scalar_function(name, 2, det, move |ctx| {
            let (Some(v), Some(path)) = (json_arg(ctx, 0)?, text_arg(ctx, 1)?) else {
                return Ok(None);
            };
            Ok(
                json_at(&v, &path_elements(&path)).and_then(|found| match found {
                    serde_json::Value::Null if as_text => None,
                    serde_json::Value::String(s) if as_text => Some(s.clone()),
                    other => Some(other.to_string()),
                }),
            )
        })?;
    }
    conn.create_scalar_function("pg_json_path", 1, det, |ctx| {
        Ok(text_arg(ctx, 0)?.map(|p| {
            let mut out = String::from("$");
            for e in path_elements(&p) {
                if e.parse::<i64>().is_ok() {
                    out.push_str(&format!("[{e}]"));
                } else {
                    out.push_str(&format!(".\"{}\"", e.replace('"', "\\\"")));
                }
            }
            out
        }))
    })?;
    conn.create_scalar_function("pg_json_typeof", 1, det, |ctx| {
        Ok(json_arg(ctx, 0)?.map(|v| {
            match v {
                serde_json::Value::Object(_) => "object",
                serde_json::Value::Array(_) => "array",
                serde_json::Value::String(_) => "string",
                serde_json::Value::Number(_) => "number",
                serde_json::Value::Bool(_) => "boolean",
                serde_json::Value::Null => "null",
            }
            .to_string()
        }))
    })?;
    Ok(())
}

#[cfg(test)]
mod json_tests {
    use super::*;

    fn j(s: &str) -> serde_json::Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn containment_follows_postgres() {
        assert!(json_contains(
            &j(r#"{"a":1,"b":{"c":[1,2]}}"#),
            &j(r#"{"b":{"c":[2]}}"#),
            true
        ));
        assert!(!json_contains(&j(r#"{"a":1}"#), &j(r#"{"a":2}"#), true));
        assert!(json_contains(&j("[1,2,3]"), &j("[3,1]"), true));
        assert!(json_contains(&j("[1,2,3]"), &j("2"), true));
        assert!(json_contains(&j(r#"{"x":0.50}"#), &j(r#"{"x":0.5}"#), true));
        assert!(json_has_key(&j(r#"{"k":null}"#), "k"));
        assert!(json_has_key(&j(r#"["k"]"#), "k"));
        assert_eq!(path_elements("{a, b,0}"), vec!["a", "b", "0"]);
        assert_eq!(
            json_at(&j(r#"{"a":{"b":[10,20]}}"#), &path_elements("{a,b,-1}")),
            Some(&j("20"))
        );
    }
}

/// PostgreSQL's `format()`: `%s`, `%I` (identifier, quoted when needed), `%L`
/// (literal, `NULL` unquoted), `%%`, with optional `n$` positions.
fn format_pg(fmt: &str, args: &[Option<String>]) -> rusqlite::Result<String> {
    let mut out = String::with_capacity(fmt.len() + 16);
    let mut chars = fmt.chars().peekable();
    let mut next = 0usize;
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = String::new();
        while let Some(&d) = chars.peek() {
            if d.is_ascii_digit() || d == '$' {
                spec.push(d);
                chars.next();
            } else {
                break;
            }
        }
        let Some(kind) = chars.next() else {
            return Err(invalid("unterminated format() type specifier"));
        };
        if kind == '%' {
            out.push('%');
            continue;
        }
        let index = match spec.strip_suffix('$') {
            Some(n) => {
                n.parse::<usize>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| invalid("invalid format() argument position"))?
                    - 1
            }
            None => next,
        };
        next = index + 1;
        let arg = args
            .get(index)
            .ok_or_else(|| invalid("too few arguments for format()"))?;
        match kind {
            's' => out.push_str(arg.as_deref().unwrap_or("")),
            'I' => {
                let v = arg.as_deref().ok_or_else(|| {
                    invalid("null values cannot be formatted as an SQL identifier")
                })?;
                let plain = !v.is_empty()
                    && v.chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                    && v.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                if plain {
                    out.push_str(v);
                } else {
                    out.push('"');
                    out.push_str(&v.replace('"', "\"\""));
                    out.push('"');
                }
            }
            'L' => match arg {
                None => out.push_str("NULL"),
                Some(v) => {
                    out.push('\'');
                    out.push_str(&v.replace('\'', "''"));
                    out.push('\'');
                }
            },
            other => {
                return Err(invalid(format!(
                    "unrecognized format() type specifier \"{other}\""
                )))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod format_tests {
    #[test]
    fn format_like_postgres() {
        let a = |v: &[Option<&str>]| v.iter().map(|s| s.map(str::to_string)).collect::<Vec<_>>();
        assert_eq!(
            super::format_pg("%s-%s", &a(&[Some("yolov8"), Some("8")])).unwrap(),
            "yolov8-8"
        );
        assert_eq!(
            super::format_pg("%I", &a(&[Some("Project Name")])).unwrap(),
            "\"Project Name\""
        );
        assert_eq!(
            super::format_pg("%I", &a(&[Some("videos")])).unwrap(),
            "videos"
        );
        assert_eq!(
            super::format_pg("%L", &a(&[Some("it's")])).unwrap(),
            "'it''s'"
        );
        assert_eq!(
            super::format_pg("%L %s|", &a(&[None, None])).unwrap(),
            "NULL |"
        );
        assert_eq!(
            super::format_pg("%2$s %1$s 100%%", &a(&[Some("a"), Some("b")])).unwrap(),
            "b a 100%"
        );
        assert!(super::format_pg("%s %s", &a(&[Some("a")])).is_err());
    }
}

/// The elements of an array value (see [`types::array_elements`]).
fn array_elements(text: &str) -> Option<Vec<Option<String>>> {
    types::array_elements(text)
}

/// PostgreSQL's text form of an array of text elements.
fn array_text(items: &[Option<String>]) -> String {
    let mut out = String::from("{");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match item {
            None => out.push_str("NULL"),
            Some(s)
                if s.is_empty()
                    || s.eq_ignore_ascii_case("null")
                    || s.contains(|c: char| {
                        c.is_whitespace() || matches!(c, '{' | '}' | ',' | '"' | '\\')
                    }) =>
            {
                out.push('"');
                for c in s.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
            Some(s) => out.push_str(s),
        }
    }
    out.push('}');
    out
}

fn value_text(v: ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
        ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
    }
}

/// `ARRAY(SELECT …)`: collects the first column into PostgreSQL's array text.
struct ArrayAgg;

impl rusqlite::functions::Aggregate<Vec<Option<String>>, String> for ArrayAgg {
    fn init(&self, _: &mut Context<'_>) -> rusqlite::Result<Vec<Option<String>>> {
        Ok(Vec::new())
    }
    fn step(&self, ctx: &mut Context<'_>, acc: &mut Vec<Option<String>>) -> rusqlite::Result<()> {
        acc.push(value_text(ctx.get_raw(0)));
        Ok(())
    }
    fn finalize(
        &self,
        _: &mut Context<'_>,
        acc: Option<Vec<Option<String>>>,
    ) -> rusqlite::Result<String> {
        Ok(array_text(&acc.unwrap_or_default()))
    }
}

/// A scalar subquery's value: its only row's, NULL without rows, `21000` with more.
struct Scalar;

impl rusqlite::functions::Aggregate<(u64, Value), Value> for Scalar {
    fn init(&self, _: &mut Context<'_>) -> rusqlite::Result<(u64, Value)> {
        Ok((0, Value::Null))
    }
    fn step(&self, ctx: &mut Context<'_>, acc: &mut (u64, Value)) -> rusqlite::Result<()> {
        acc.0 += 1;
        if acc.0 > 1 {
            return Err(user_error(crate::error::PgError::new(
                "21000",
                "more than one row returned by a subquery used as an expression",
            )));
        }
        acc.1 = match ctx.get_raw(0) {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::Real(f) => Value::Real(f),
            ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        };
        Ok(())
    }
    fn finalize(&self, _: &mut Context<'_>, acc: Option<(u64, Value)>) -> rusqlite::Result<Value> {
        Ok(acc.map_or(Value::Null, |a| a.1))
    }
}

fn register_catalog_functions(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_aggregate_function(
        "pg_scalar",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        Scalar,
    )?;
    let det = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("format_type", 2, det, |ctx| {
        // Oids may arrive as text (a parameter bound without a type).
        let int = |i: usize| value_text(ctx.get_raw(i)).and_then(|t| t.trim().parse::<i64>().ok());
        let Some(oid) = int(0) else {
            return Ok(None);
        };
        let typmod = int(1);
        Ok(Some(
            super::system_catalog::format_type(oid, typmod).unwrap_or_else(|| "???".to_string()),
        ))
    })?;
    conn.create_scalar_function("pg_typeof_hint", 2, FunctionFlags::SQLITE_UTF8, |ctx| {
        let k: i64 = ctx.get(0)?;
        Ok(TYPEOF.with(|t| {
            usize::try_from(k)
                .ok()
                .and_then(|k| t.borrow().get(k).cloned())
                .unwrap_or_else(|| "unknown".to_string())
        }))
    })?;
    // quote_ident: double quotes unless a plain lower-case identifier.
    conn.create_scalar_function("quote_ident", 1, det, |ctx| {
        Ok(value_text(ctx.get_raw(0)).map(|s| {
            let plain = s
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
            if plain {
                s
            } else {
                format!("\"{}\"", s.replace('"', "\"\""))
            }
        }))
    })?;
    for (name, null) in [("quote_literal", false), ("quote_nullable", true)] {
        conn.create_scalar_function(name, 1, det, move |ctx| {
            Ok(match value_text(ctx.get_raw(0)) {
                None if null => Some("NULL".to_string()),
                None => None,
                Some(s) if s.contains('\\') => Some(format!(
                    "E'{}'",
                    s.replace('\\', "\\\\").replace('\'', "''")
                )),
                Some(s) => Some(format!("'{}'", s.replace('\'', "''"))),
            })
        })?;
    }
    conn.create_scalar_function("pg_undefined_relation", 1, det, |ctx| {
        let name: String = ctx.get(0)?;
        Err::<i64, _>(user_error(crate::error::PgError::new(
            crate::error::code::UNDEFINED_TABLE,
            format!("relation \"{name}\" does not exist"),
        )))
    })?;
    // `public.t`, `"T"`, `T` → the relation name as stored (`t`, `T`, `t`).
    conn.create_scalar_function("pg_unqualify", 1, det, |ctx| {
        let Some(name) = ctx.get::<Option<String>>(0)? else {
            return Ok(None);
        };
        let last = match name.rsplit_once('.') {
            Some((schema, rel)) if matches!(schema.trim_matches('"'), "public" | "pg_catalog") => {
                rel
            }
            Some(_) => return Ok(None),
            None => name.as_str(),
        };
        Ok(Some(
            match last.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                Some(quoted) => quoted.replace("\"\"", "\""),
                None => last.to_ascii_lowercase(),
            },
        ))
    })?;
    conn.create_scalar_function("pg_array_contains", 2, det, |ctx| {
        let (Some(array), Some(needle)) = (value_text(ctx.get_raw(0)), value_text(ctx.get_raw(1)))
        else {
            return Ok(None);
        };
        let items = array_elements(&array)
            .ok_or_else(|| invalid(format!("malformed array literal: \"{array}\"")))?;
        Ok(Some(
            items.iter().any(|i| i.as_deref() == Some(needle.as_str())),
        ))
    })?;
    for n in [2, 3] {
        conn.create_scalar_function("array_to_string", n, det, move |ctx| {
            let Some(array) = value_text(ctx.get_raw(0)) else {
                return Ok(None);
            };
            let sep = value_text(ctx.get_raw(1)).unwrap_or_default();
            let null = if n == 3 {
                value_text(ctx.get_raw(2))
            } else {
                None
            };
            let items = array_elements(&array)
                .ok_or_else(|| invalid(format!("malformed array literal: \"{array}\"")))?;
            let parts: Vec<String> = items
                .into_iter()
                .filter_map(|i| i.or_else(|| null.clone()))
                .collect();
            Ok(Some(parts.join(&sep)))
        })?;
    }
    conn.create_scalar_function("pg_array_json", 1, det, |ctx| {
        let Some(array) = value_text(ctx.get_raw(0)) else {
            return Ok(None);
        };
        let items = array_elements(&array)
            .ok_or_else(|| invalid(format!("malformed array literal: \"{array}\"")))?;
        Ok(Some(serde_json::Value::from(items).to_string()))
    })?;
    conn.create_scalar_function("pg_array_element", 2, det, |ctx| {
        let (Some(array), Some(i)) = (value_text(ctx.get_raw(0)), ctx.get::<Option<i64>>(1)?)
        else {
            return Ok(None);
        };
        let items = array_elements(&array)
            .ok_or_else(|| invalid(format!("malformed array literal: \"{array}\"")))?;
        Ok(usize::try_from(i - 1)
            .ok()
            .and_then(|i| items.get(i).cloned())
            .flatten())
    })?;
    // array_upper / array_length / array_lower of dimension 1; NULL when empty.
    for (name, lower) in [
        ("array_upper", false),
        ("array_length", false),
        ("array_lower", true),
    ] {
        conn.create_scalar_function(name, 2, det, move |ctx| {
            let Some(array) = value_text(ctx.get_raw(0)) else {
                return Ok(None);
            };
            if ctx.get::<Option<i64>>(1)? != Some(1) {
                return Ok(None);
            }
            let n = array_elements(&array)
                .ok_or_else(|| invalid(format!("malformed array literal: \"{array}\"")))?
                .len() as i64;
            Ok((n > 0).then_some(if lower { 1 } else { n }))
        })?;
    }
    conn.create_scalar_function("cardinality", 1, det, |ctx| {
        let Some(array) = value_text(ctx.get_raw(0)) else {
            return Ok(None);
        };
        Ok(Some(
            array_elements(&array)
                .ok_or_else(|| invalid(format!("malformed array literal: \"{array}\"")))?
                .len() as i64,
        ))
    })?;
    conn.create_aggregate_function("pg_array_agg_text", 1, det, ArrayAgg)?;
    conn.create_scalar_function("pg_size_pretty", 1, det, |ctx| {
        let Some(n) = ctx.get::<Option<i64>>(0)? else {
            return Ok(None);
        };
        let mut v = n as f64;
        let mut unit = "bytes";
        for u in ["kB", "MB", "GB", "TB"] {
            if v.abs() < 10.0 * 1024.0 - 0.5 {
                break;
            }
            v /= 1024.0;
            unit = u;
        }
        Ok(Some(format!("{} {unit}", v.round() as i64)))
    })?;
    Ok(())
}

/// `INTERVAL '…'` and `'…'::interval`: PostgreSQL's text of the interval.
fn register_interval_functions(conn: &Connection) -> rusqlite::Result<()> {
    let det = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("pg_interval", 2, det, |ctx| {
        let Some(text) = value_text(ctx.get_raw(0)) else {
            return Ok(None);
        };
        let unit = ctx.get::<Option<String>>(1)?;
        types::Interval::parse(&text, unit.as_deref())
            .map(|iv| Some(iv.format()))
            .map_err(user_error)
    })?;
    // timestamp|timestamptz|date ± interval: a timestamp (with time zone if the
    // operand had one).
    conn.create_scalar_function("pg_interval_add", 3, det, |ctx| {
        let (Some(ts), Some(iv)) = (value_text(ctx.get_raw(0)), value_text(ctx.get_raw(1))) else {
            return Ok(None);
        };
        let sign: i64 = ctx.get(2)?;
        // time + interval wraps around midnight, as PostgreSQL's time does.
        if let Ok(t) = chrono::NaiveTime::parse_from_str(ts.trim(), "%H:%M:%S%.f") {
            let mut iv = types::Interval::parse(&iv, None).map_err(user_error)?;
            if sign < 0 {
                iv = iv.negate();
            }
            let day = 86_400_000_000i64;
            let micros = (i64::from(chrono::Timelike::num_seconds_from_midnight(&t)) * 1_000_000
                + i64::from(chrono::Timelike::nanosecond(&t) / 1000)
                + iv.micros)
                .rem_euclid(day);
            let out = chrono::NaiveTime::from_num_seconds_from_midnight_opt(
                (micros / 1_000_000) as u32,
                ((micros % 1_000_000) * 1000) as u32,
            )
            .unwrap_or_default();
            return Ok(Some(out.format("%H:%M:%S%.f").to_string()));
        }
        let (dt, with_tz) = types::parse_timestamp(&ts).ok_or_else(|| {
            user_error(crate::error::PgError::new(
                crate::error::code::INVALID_DATETIME_FORMAT,
                format!("invalid input syntax for type timestamp: \"{ts}\""),
            ))
        })?;
        let mut iv = types::Interval::parse(&iv, None).map_err(user_error)?;
        if sign < 0 {
            iv = iv.negate();
        }
        let out = iv.add_to(dt).map_err(user_error)?;
        Ok(Some(types::format_timestamp(&out, with_tz)))
    })?;
    let timestamp = |s: &str| {
        types::parse_timestamp(s).ok_or_else(|| {
            user_error(crate::error::PgError::new(
                crate::error::code::INVALID_DATETIME_FORMAT,
                format!("invalid input syntax for type timestamp: \"{s}\""),
            ))
        })
    };
    // date ± integer days
    conn.create_scalar_function("pg_date_add", 3, det, move |ctx| {
        let (Some(d), Some(n)) = (value_text(ctx.get_raw(0)), ctx.get::<Option<i64>>(1)?) else {
            return Ok(None);
        };
        let sign: i64 = ctx.get(2)?;
        let (dt, _) = timestamp(&d)?;
        let out = dt
            .date()
            .checked_add_signed(chrono::Duration::days(sign * n))
            .ok_or_else(|| {
                user_error(crate::error::PgError::new(
                    crate::error::code::DATETIME_FIELD_OVERFLOW,
                    "date out of range",
                ))
            })?;
        Ok(Some(out.format("%Y-%m-%d").to_string()))
    })?;
    // date - date: days
    conn.create_scalar_function("pg_date_diff", 2, det, move |ctx| {
        let (Some(a), Some(b)) = (value_text(ctx.get_raw(0)), value_text(ctx.get_raw(1))) else {
            return Ok(None);
        };
        Ok(Some(
            (timestamp(&a)?.0.date() - timestamp(&b)?.0.date()).num_days(),
        ))
    })?;
    // timestamp - timestamp: an interval of days and time
    conn.create_scalar_function("pg_timestamp_diff", 2, det, move |ctx| {
        let (Some(a), Some(b)) = (value_text(ctx.get_raw(0)), value_text(ctx.get_raw(1))) else {
            return Ok(None);
        };
        Ok(Some(
            types::Interval::between(timestamp(&a)?.0, timestamp(&b)?.0).format(),
        ))
    })?;
    // interval * number
    conn.create_scalar_function("pg_interval_mul", 2, det, |ctx| {
        let (Some(iv), Some(n)) = (value_text(ctx.get_raw(0)), ctx.get::<Option<f64>>(1)?) else {
            return Ok(None);
        };
        let iv = types::Interval::parse(&iv, None).map_err(user_error)?;
        // Fractions of months and days cascade down, as PostgreSQL does.
        let months = f64::from(iv.months) * n;
        let days = f64::from(iv.days) * n + months.fract() * 30.0;
        let micros = iv.micros as f64 * n + days.fract() * 86_400_000_000.0;
        Ok(Some(
            types::Interval {
                months: months.trunc() as i32,
                days: days.trunc() as i32,
                micros: micros.round() as i64,
            }
            .format(),
        ))
    })?;
    conn.create_scalar_function("pg_round_half_even", 1, det, |ctx| {
        Ok(ctx.get::<Option<f64>>(0)?.map(|f| {
            let r = f.round();
            // Exactly halfway: to the even neighbour.
            if (f - f.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
                r - f.signum()
            } else {
                r
            }
        }))
    })?;
    conn.create_scalar_function("pg_minus", 2, det, |ctx| {
        minus_values(ctx.get_raw(0), ctx.get_raw(1))
    })?;
    // column + column: a date, timestamp or time plus an interval is calendar
    // arithmetic; anything else is SQLite's addition.
    conn.create_scalar_function("pg_plus", 2, det, |ctx| {
        let (a, b) = (ctx.get_raw(0), ctx.get_raw(1));
        if let (ValueRef::Text(x), ValueRef::Text(y)) = (a, b) {
            let (x, y) = (String::from_utf8_lossy(x), String::from_utf8_lossy(y));
            let is_interval = |s: &str| {
                types::parse_timestamp(s).is_none()
                    && chrono::NaiveTime::parse_from_str(s.trim(), "%H:%M:%S%.f").is_err()
                    && types::Interval::parse(s, None).is_ok()
            };
            // The date/timestamp (or else time) side is the base, the other the
            // interval (`00:45:00` reads as either).
            let dated = |s: &str| types::parse_timestamp(s).is_some();
            let timed =
                |s: &str| chrono::NaiveTime::parse_from_str(s.trim(), "%H:%M:%S%.f").is_ok();
            let (base, iv) = if dated(&x) || (timed(&x) && !dated(&y)) {
                (x.to_string(), y.to_string())
            } else if dated(&y) || timed(&y) {
                (y.to_string(), x.to_string())
            } else if is_interval(&y) {
                (x.to_string(), y.to_string())
            } else if is_interval(&x) {
                (y.to_string(), x.to_string())
            } else {
                // Numbers stored as text (a table made outside unidb).
                let n = |s: &str| s.trim().parse::<f64>().unwrap_or(0.0);
                return Ok(Value::Real(n(&x) + n(&y)));
            };
            let iv = types::Interval::parse(&iv, None).map_err(user_error)?;
            if let Ok(t) = chrono::NaiveTime::parse_from_str(base.trim(), "%H:%M:%S%.f") {
                let day = 86_400_000_000i64;
                let micros = (i64::from(chrono::Timelike::num_seconds_from_midnight(&t))
                    * 1_000_000
                    + i64::from(chrono::Timelike::nanosecond(&t) / 1000)
                    + iv.micros)
                    .rem_euclid(day);
                let out = chrono::NaiveTime::from_num_seconds_from_midnight_opt(
                    (micros / 1_000_000) as u32,
                    ((micros % 1_000_000) * 1000) as u32,
                )
                .unwrap_or_default();
                return Ok(Value::Text(out.format("%H:%M:%S%.f").to_string()));
            }
            let Some((dt, with_tz)) = types::parse_timestamp(&base) else {
                return Ok(Value::Null);
            };
            let out = iv.add_to(dt).map_err(user_error)?;
            return Ok(Value::Text(types::format_timestamp(&out, with_tz)));
        }
        let num = |v: ValueRef<'_>| match v {
            ValueRef::Integer(i) => Some(Value::Integer(i)),
            ValueRef::Real(f) => Some(Value::Real(f)),
            _ => None,
        };
        Ok(match (num(a), num(b)) {
            (Some(Value::Integer(x)), Some(Value::Integer(y))) => {
                x.checked_add(y).map(Value::Integer).ok_or_else(|| {
                    user_error(crate::error::PgError::new(
                        crate::error::code::NUMERIC_VALUE_OUT_OF_RANGE,
                        "bigint out of range",
                    ))
                })?
            }
            (Some(Value::Integer(x)), Some(Value::Real(y))) => Value::Real(x as f64 + y),
            (Some(Value::Real(x)), Some(Value::Integer(y))) => Value::Real(x + y as f64),
            (Some(Value::Real(x)), Some(Value::Real(y))) => Value::Real(x + y),
            _ => Value::Null,
        })
    })?;
    // interval ± interval
    conn.create_scalar_function("pg_interval_sum", 3, det, |ctx| {
        let (Some(a), Some(b)) = (value_text(ctx.get_raw(0)), value_text(ctx.get_raw(1))) else {
            return Ok(None);
        };
        let sign: i64 = ctx.get(2)?;
        let a = types::Interval::parse(&a, None).map_err(user_error)?;
        let mut b = types::Interval::parse(&b, None).map_err(user_error)?;
        if sign < 0 {
            b = b.negate();
        }
        Ok(Some(
            types::Interval {
                months: a.months.saturating_add(b.months),
                days: a.days.saturating_add(b.days),
                micros: a.micros.saturating_add(b.micros),
            }
            .format(),
        ))
    })?;
    // age(a, b) and age(a): the symbolic difference, years and months first.
    for n in [1, 2] {
        conn.create_scalar_function("age", n, FunctionFlags::SQLITE_UTF8, move |ctx| {
            let a = value_text(ctx.get_raw(0));
            let b = if n == 2 {
                value_text(ctx.get_raw(1))
            } else {
                Some(
                    chrono::Utc::now()
                        .date_naive()
                        .format("%Y-%m-%d")
                        .to_string(),
                )
            };
            let (Some(a), Some(b)) = (a, b) else {
                return Ok(None);
            };
            let parse = |s: &str| {
                types::parse_timestamp(s).map(|(d, _)| d).ok_or_else(|| {
                    user_error(crate::error::PgError::new(
                        crate::error::code::INVALID_DATETIME_FORMAT,
                        format!("invalid input syntax for type timestamp: \"{s}\""),
                    ))
                })
            };
            Ok(Some(age(parse(&a)?, parse(&b)?).format()))
        })?;
    }
    Ok(())
}

/// PostgreSQL's `age`: the field-by-field difference (years, months, days, time),
/// negative fields borrowing from the next larger one, a month borrowed as the
/// length of the earlier date's month.
fn age(a: chrono::NaiveDateTime, b: chrono::NaiveDateTime) -> types::Interval {
    use chrono::{Datelike, Timelike};
    let days_in_month = |d: chrono::NaiveDateTime| -> i64 {
        let (y, m) = (d.year(), d.month());
        let next = if m == 12 {
            chrono::NaiveDate::from_ymd_opt(y + 1, 1, 1)
        } else {
            chrono::NaiveDate::from_ymd_opt(y, m + 1, 1)
        };
        let first = chrono::NaiveDate::from_ymd_opt(y, m, 1);
        match (next, first) {
            (Some(n), Some(f)) => (n - f).num_days(),
            _ => 30,
        }
    };
    let flip: i64 = if a < b { -1 } else { 1 };
    let mut micros = flip * (i64::from(a.nanosecond() / 1000) - i64::from(b.nanosecond() / 1000));
    let mut secs = flip * (i64::from(a.second()) - i64::from(b.second()));
    let mut mins = flip * (i64::from(a.minute()) - i64::from(b.minute()));
    let mut hours = flip * (i64::from(a.hour()) - i64::from(b.hour()));
    let mut days = flip * (i64::from(a.day()) - i64::from(b.day()));
    let mut months = flip * (i64::from(a.month()) - i64::from(b.month()));
    let mut years = flip * (i64::from(a.year()) - i64::from(b.year()));
    while micros < 0 {
        micros += 1_000_000;
        secs -= 1;
    }
    while secs < 0 {
        secs += 60;
        mins -= 1;
    }
    while mins < 0 {
        mins += 60;
        hours -= 1;
    }
    while hours < 0 {
        hours += 24;
        days -= 1;
    }
    while days < 0 {
        days += days_in_month(if a < b { a } else { b });
        months -= 1;
    }
    while months < 0 {
        months += 12;
        years -= 1;
    }
    let iv = types::Interval {
        months: (years * 12 + months) as i32,
        days: days as i32,
        micros: ((hours * 60 + mins) * 60 + secs) * 1_000_000 + micros,
    };
    if flip < 0 {
        iv.negate()
    } else {
        iv
    }
}

/// Transaction ids handed out by `txid_current()`, process-wide and increasing.
static NEXT_TXID: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(1000);

fn session_pid() -> i32 {
    SESSION.with(|s| s.borrow().as_ref().map_or(0, |v| v.pid))
}

/// The lock key of `pg_advisory_lock(bigint)` or `pg_advisory_lock(int, int)`.
fn lock_key(ctx: &Context<'_>) -> rusqlite::Result<Option<i64>> {
    if ctx.len() == 2 {
        let (a, b) = (ctx.get::<Option<i64>>(0)?, ctx.get::<Option<i64>>(1)?);
        return Ok(match (a, b) {
            (Some(a), Some(b)) => Some(((a & 0xffff_ffff) << 32) | (b & 0xffff_ffff)),
            _ => None,
        });
    }
    ctx.get::<Option<i64>>(0)
}

fn register_lock_functions(
    conn: &Connection,
    locks: Arc<super::locks::AdvisoryLocks>,
    cancel: Arc<AtomicBool>,
) -> rusqlite::Result<()> {
    use super::locks::Acquired;
    let flags = FunctionFlags::SQLITE_UTF8;
    conn.create_scalar_function("txid_current", 0, flags, |_| {
        Ok(SESSION.with(|s| match s.borrow().as_ref() {
            Some(v) => {
                let cur = v.txid.load(Ordering::Relaxed);
                if cur != 0 {
                    return cur;
                }
                let id = NEXT_TXID.fetch_add(1, Ordering::Relaxed);
                v.txid.store(id, Ordering::Relaxed);
                id
            }
            None => NEXT_TXID.fetch_add(1, Ordering::Relaxed),
        }))
    })?;
    for n in [1, 2] {
        for (name, xact, wait) in [
            ("pg_advisory_lock", false, true),
            ("pg_advisory_xact_lock", true, true),
            ("pg_try_advisory_lock", false, false),
            ("pg_try_advisory_xact_lock", true, false),
        ] {
            let locks = locks.clone();
            let cancel = cancel.clone();
            conn.create_scalar_function(name, n, flags, move |ctx| {
                let Some(key) = lock_key(ctx)? else {
                    return Ok(Value::Null);
                };
                match locks.acquire(key, session_pid(), xact, wait, &cancel) {
                    Acquired::Yes if wait => Ok(Value::Text(String::new())),
                    Acquired::Yes => Ok(Value::Integer(1)),
                    Acquired::Busy => Ok(Value::Integer(0)),
                    Acquired::Cancelled => Err(user_error(crate::error::PgError::new(
                        crate::error::code::QUERY_CANCELED,
                        "canceling statement due to user request",
                    ))),
                }
            })?;
        }
        let l = locks.clone();
        conn.create_scalar_function("pg_advisory_unlock", n, flags, move |ctx| {
            Ok(lock_key(ctx)?.map(|key| l.release(key, session_pid())))
        })?;
    }
    let l = locks.clone();
    conn.create_scalar_function("pg_advisory_unlock_all", 0, flags, move |_| {
        l.release_all(session_pid(), false);
        Ok(String::new())
    })?;
    Ok(())
}

/// jsonb `||` (objects merged, the right side winning; arrays concatenated; a
/// scalar joins an array) and jsonb `- 'key'`.
fn register_jsonb_edit_functions(conn: &Connection) -> rusqlite::Result<()> {
    use serde_json::Value as J;
    let det = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("pg_jsonb_concat", 2, det, |ctx| {
        let (Some(a), Some(b)) = (json_arg(ctx, 0)?, json_arg(ctx, 1)?) else {
            return Ok(None);
        };
        let merged = match (a, b) {
            (J::Object(mut a), J::Object(b)) => {
                a.extend(b);
                J::Object(a)
            }
            (J::Array(mut a), J::Array(b)) => {
                a.extend(b);
                J::Array(a)
            }
            (J::Array(mut a), b) => {
                a.push(b);
                J::Array(a)
            }
            (a, J::Array(b)) => {
                let mut out = vec![a];
                out.extend(b);
                J::Array(out)
            }
            (a, b) => J::Array(vec![a, b]),
        };
        Ok(Some(merged.to_string()))
    })?;
    conn.create_scalar_function("pg_jsonb_delete", 2, det, |ctx| {
        let Some(doc) = json_arg(ctx, 0)? else {
            return Ok(None);
        };
        let Some(key) = value_text(ctx.get_raw(1)) else {
            return Ok(None);
        };
        Ok(Some(
            match doc {
                J::Object(mut m) => {
                    m.remove(&key);
                    J::Object(m)
                }
                J::Array(a) => J::Array(
                    a.into_iter()
                        .filter(|e| e.as_str() != Some(key.as_str()))
                        .collect(),
                ),
                other => return Err(invalid(format!("cannot delete from scalar ({other})"))),
            }
            .to_string(),
        ))
    })?;
    Ok(())
}

/// `to_char(number, pattern)` for the common numeric patterns: `9` (digit, blank
/// when a leading zero), `0` (digit), `.`/`D`, `,`/`G`, `FM` (no padding, no trailing
/// zeros in `9` places), `S`/`MI` (sign); otherwise a leading sign place, as
/// PostgreSQL prints it. A value too wide for the pattern prints as `#`s.
fn number_to_char(value: &str, pattern: &str) -> String {
    let upper = pattern.to_ascii_uppercase();
    let fm = upper.contains("FM");
    let body: String = upper.replace("FM", "");
    let explicit_sign = body.contains('S') || body.contains("MI");
    let (int_pat, frac_pat) = match body.find(['.', 'D']) {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (body.as_str(), ""),
    };
    let int_places = int_pat.chars().filter(|c| matches!(c, '9' | '0')).count();
    let frac_places: Vec<char> = frac_pat
        .chars()
        .filter(|c| matches!(c, '9' | '0'))
        .collect();
    let negative = value.starts_with('-');
    let rounded = crate::types::numeric_with_scale(
        ValueRef::Text(value.trim_start_matches('-').as_bytes()),
        frac_places.len() as u32,
    )
    .unwrap_or_else(|| value.trim_start_matches('-').to_string());
    let (int_digits, frac_digits) = match rounded.split_once('.') {
        Some((i, f)) => (i.trim_start_matches('0').to_string(), f.to_string()),
        None => (rounded.trim_start_matches('0').to_string(), String::new()),
    };
    let overflow = int_digits.len() > int_places;
    // Integer part, right-aligned on the pattern's places.
    let mut int_out = String::new();
    let mut digits = int_digits.chars().rev();
    let mut started = false;
    let places: Vec<char> = int_pat.chars().collect();
    let mut pieces: Vec<String> = Vec::new();
    for c in places.iter().rev() {
        match c {
            '9' | '0' => match digits.next() {
                Some(d) => pieces.push(if overflow { "#".into() } else { d.to_string() }),
                None if *c == '0' => pieces.push(if overflow { "#".into() } else { "0".into() }),
                None => pieces.push(if fm { String::new() } else { " ".into() }),
            },
            ',' | 'G' => pieces.push(",".into()),
            _ => {}
        }
    }
    // A group separator with no digit to its left is blank.
    pieces.reverse();
    for p in pieces {
        if p == "," && !started {
            if !fm {
                int_out.push(' ');
            }
            continue;
        }
        if !p.trim().is_empty() {
            started = true;
        }
        int_out.push_str(&p);
    }
    if int_out.trim().is_empty() && frac_places.is_empty() {
        int_out = "0".into();
    }
    let mut frac_out = String::new();
    for (i, c) in frac_places.iter().enumerate() {
        let d = frac_digits.chars().nth(i).unwrap_or('0');
        frac_out.push(if overflow { '#' } else { d });
        let _ = c;
    }
    if fm {
        // Trailing zeros in 9 places go.
        while frac_out.ends_with('0') && frac_places.get(frac_out.len() - 1) == Some(&'9') {
            frac_out.pop();
        }
    }
    let mut out = String::new();
    let sign = if negative {
        "-"
    } else if fm || explicit_sign {
        ""
    } else {
        " "
    };
    if explicit_sign {
        out.push_str(if negative { "-" } else { "+" });
    } else {
        out.push_str(sign);
    }
    out.push_str(&int_out);
    if body.contains(['.', 'D']) {
        out.push('.');
        out.push_str(&frac_out);
    }
    out
}

/// `extract(field FROM interval)`: PostgreSQL's numeric with six decimals for epoch
/// and seconds.
fn extract_interval(field: &str, iv: &types::Interval) -> Option<Value> {
    let six = |micros: i64| {
        let neg = micros < 0;
        let m = micros.unsigned_abs();
        Value::Text(format!(
            "{}{}.{:06}",
            if neg { "-" } else { "" },
            m / 1_000_000,
            m % 1_000_000
        ))
    };
    let time = iv.micros;
    Some(match field {
        "epoch" => six(iv.total_micros()),
        "second" => six(time % 60_000_000),
        "minute" => Value::Integer(time / 60_000_000 % 60),
        "hour" => Value::Integer(time / 3_600_000_000),
        "day" => Value::Integer(i64::from(iv.days)),
        "month" => Value::Integer(i64::from(iv.months % 12)),
        "year" => Value::Integer(i64::from(iv.months / 12)),
        _ => return None,
    })
}

/// `a - b` of two columns whose types are known only when the statement runs:
/// timestamps (or dates) give an interval, otherwise it is SQLite's subtraction.
fn minus_values(a: ValueRef<'_>, b: ValueRef<'_>) -> rusqlite::Result<Value> {
    match (a, b) {
        (ValueRef::Null, _) | (_, ValueRef::Null) => Ok(Value::Null),
        (ValueRef::Integer(x), ValueRef::Integer(y)) => {
            x.checked_sub(y).map(Value::Integer).ok_or_else(|| {
                user_error(crate::error::PgError::new(
                    crate::error::code::NUMERIC_VALUE_OUT_OF_RANGE,
                    "bigint out of range",
                ))
            })
        }
        (ValueRef::Text(x), ValueRef::Text(y)) => {
            let (x, y) = (String::from_utf8_lossy(x), String::from_utf8_lossy(y));
            match (types::parse_timestamp(&x), types::parse_timestamp(&y)) {
                (Some((a, _)), Some((b, _))) if x.trim().len() > 10 || y.trim().len() > 10 => {
                    Ok(Value::Text(types::Interval::between(a, b).format()))
                }
                (Some((a, _)), Some((b, _))) => {
                    Ok(Value::Integer((a.date() - b.date()).num_days()))
                }
                _ => Ok(Value::Real(
                    x.trim().parse::<f64>().unwrap_or(0.0) - y.trim().parse::<f64>().unwrap_or(0.0),
                )),
            }
        }
        (x, y) => {
            let num = |v: ValueRef<'_>| match v {
                ValueRef::Integer(i) => i as f64,
                ValueRef::Real(f) => f,
                ValueRef::Text(t) => std::str::from_utf8(t)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0.0),
                _ => 0.0,
            };
            Ok(Value::Real(num(x) - num(y)))
        }
    }
}
