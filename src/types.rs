//! PostgreSQL types as unidb serves them: OIDs, and the text and binary encodings
//! of values held by SQLite. Only this module knows how a PostgreSQL value looks on
//! the wire; backends hand it SQLite values and a [`PgType`].

use bytes::{BufMut, BytesMut};
use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};
use rusqlite::types::{Value, ValueRef};

use crate::error::{code, PgError, PgResult};

pub mod interval;
pub use interval::Interval;

/// The PostgreSQL types unidb maps SQLite values to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PgType {
    Bool,
    Bytea,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric,
    Text,
    Varchar,
    Bpchar,
    Name,
    Oid,
    Date,
    Time,
    Timestamp,
    Timestamptz,
    Interval,
    Json,
    Jsonb,
    Uuid,
    /// A literal whose type PostgreSQL itself would leave open; served as text.
    Unknown,
    /// A type's name (`pg_typeof`), served as text.
    Regtype,
    /// No value (`pg_advisory_lock`, `pg_sleep`): an empty text.
    Void,
    /// An array of the element type with this OID, held as PostgreSQL's text form
    /// (`{1,2,3}`), as `array_agg` builds it.
    Array(u32),
}

/// (element OID, array OID) of the array types unidb produces.
const ARRAY_OIDS: &[(u32, u32)] = &[
    (16, 1000),
    (17, 1001),
    (19, 1003),
    (20, 1016),
    (21, 1005),
    (23, 1007),
    (25, 1009),
    (26, 1028),
    (114, 199),
    (700, 1021),
    (701, 1022),
    (1042, 1014),
    (1043, 1015),
    (1082, 1182),
    (1083, 1183),
    (1114, 1115),
    (1184, 1185),
    (1186, 1187),
    (1700, 1231),
    (2950, 2951),
    (3802, 3807),
];

/// The elements of an array in PostgreSQL's text form (`{a,"b c",NULL}`) or as a
/// JSON array (how array columns are stored on this backend).
pub fn array_elements(text: &str) -> Option<Vec<Option<String>>> {
    let t = text.trim();
    if t.starts_with('[') {
        let v: serde_json::Value = serde_json::from_str(t).ok()?;
        return Some(
            v.as_array()?
                .iter()
                .map(|e| match e {
                    serde_json::Value::Null => None,
                    serde_json::Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                })
                .collect(),
        );
    }
    // int2vector / oidvector (`indkey`): numbers separated by spaces.
    if !t.starts_with('{') {
        return t
            .split_whitespace()
            .map(|n| n.parse::<i64>().ok().map(|n| Some(n.to_string())))
            .collect();
    }
    let inner = t.strip_prefix('{')?.strip_suffix('}')?;
    let mut out = Vec::new();
    if inner.is_empty() {
        return Some(out);
    }
    let mut chars = inner.chars().peekable();
    loop {
        let mut item = String::new();
        let quoted = chars.peek() == Some(&'"');
        if quoted {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => item.extend(chars.next()),
                    '"' => break,
                    c => item.push(c),
                }
            }
        }
        while let Some(&c) = chars.peek() {
            if c == ',' {
                break;
            }
            item.push(c);
            chars.next();
        }
        out.push(if !quoted && item == "NULL" {
            None
        } else {
            Some(item)
        });
        if chars.next().is_none() {
            break;
        }
    }
    Some(out)
}

/// `1 Jan 2000`, PostgreSQL's epoch for binary dates and timestamps.
fn pg_epoch_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2000, 1, 1).expect("valid date")
}

impl PgType {
    pub fn oid(self) -> u32 {
        match self {
            PgType::Bool => 16,
            PgType::Bytea => 17,
            PgType::Name => 19,
            PgType::Int8 => 20,
            PgType::Int2 => 21,
            PgType::Int4 => 23,
            PgType::Text => 25,
            PgType::Oid => 26,
            PgType::Json => 114,
            PgType::Float4 => 700,
            PgType::Float8 => 701,
            PgType::Unknown => 705,
            PgType::Regtype => 2206,
            PgType::Void => 2278,
            PgType::Array(elem) => ARRAY_OIDS
                .iter()
                .find(|(e, _)| *e == elem)
                .map_or(1009, |(_, a)| *a),
            PgType::Bpchar => 1042,
            PgType::Varchar => 1043,
            PgType::Date => 1082,
            PgType::Time => 1083,
            PgType::Timestamp => 1114,
            PgType::Timestamptz => 1184,
            PgType::Interval => 1186,
            PgType::Numeric => 1700,
            PgType::Uuid => 2950,
            PgType::Jsonb => 3802,
        }
    }

    pub fn from_oid(oid: u32) -> Option<PgType> {
        Some(match oid {
            16 => PgType::Bool,
            17 => PgType::Bytea,
            19 => PgType::Name,
            20 => PgType::Int8,
            21 => PgType::Int2,
            23 => PgType::Int4,
            25 => PgType::Text,
            26 => PgType::Oid,
            114 => PgType::Json,
            700 => PgType::Float4,
            701 => PgType::Float8,
            705 => PgType::Unknown,
            2206 => PgType::Regtype,
            2278 => PgType::Void,
            oid if ARRAY_OIDS.iter().any(|(_, a)| *a == oid) => PgType::Array(
                ARRAY_OIDS
                    .iter()
                    .find(|(_, a)| *a == oid)
                    .map_or(25, |(e, _)| *e),
            ),
            1042 => PgType::Bpchar,
            1043 => PgType::Varchar,
            1082 => PgType::Date,
            1083 => PgType::Time,
            1114 => PgType::Timestamp,
            1184 => PgType::Timestamptz,
            1186 => PgType::Interval,
            1700 => PgType::Numeric,
            2950 => PgType::Uuid,
            3802 => PgType::Jsonb,
            _ => return None,
        })
    }

    /// The canonical name stored in the side catalog (PostgreSQL's `typname`).
    pub fn name(self) -> &'static str {
        match self {
            PgType::Bool => "bool",
            PgType::Bytea => "bytea",
            PgType::Int2 => "int2",
            PgType::Int4 => "int4",
            PgType::Int8 => "int8",
            PgType::Float4 => "float4",
            PgType::Float8 => "float8",
            PgType::Numeric => "numeric",
            PgType::Text => "text",
            PgType::Varchar => "varchar",
            PgType::Bpchar => "bpchar",
            PgType::Name => "name",
            PgType::Oid => "oid",
            PgType::Date => "date",
            PgType::Time => "time",
            PgType::Timestamp => "timestamp",
            PgType::Timestamptz => "timestamptz",
            PgType::Interval => "interval",
            PgType::Json => "json",
            PgType::Jsonb => "jsonb",
            PgType::Uuid => "uuid",
            PgType::Unknown => "unknown",
            PgType::Regtype => "regtype",
            PgType::Void => "void",
            PgType::Array(_) => "anyarray",
        }
    }

    /// Parses a canonical name or a common alias (`integer`, `boolean`, …) as
    /// written in DDL or a side-catalog row.
    pub fn from_name(name: &str) -> Option<PgType> {
        let lower = name.trim().to_ascii_lowercase();
        let base = lower.split('(').next().unwrap_or("").trim();
        Some(match base {
            "bool" | "boolean" => PgType::Bool,
            "bytea" | "blob" => PgType::Bytea,
            "int2" | "smallint" | "smallserial" | "serial2" => PgType::Int2,
            "int4" | "int" | "integer" | "serial" | "serial4" | "mediumint" => PgType::Int4,
            "int8" | "bigint" | "bigserial" | "serial8" => PgType::Int8,
            "float4" | "real" => PgType::Float4,
            "float8" | "double precision" | "double" | "float" => PgType::Float8,
            "numeric" | "decimal" => PgType::Numeric,
            "text" | "clob" | "string" => PgType::Text,
            "varchar" | "character varying" | "nvarchar" => PgType::Varchar,
            "bpchar" | "char" | "character" => PgType::Bpchar,
            "name" => PgType::Name,
            "oid" => PgType::Oid,
            "date" => PgType::Date,
            "time" | "time without time zone" => PgType::Time,
            "timestamp" | "timestamp without time zone" | "datetime" => PgType::Timestamp,
            "timestamptz" | "timestamp with time zone" => PgType::Timestamptz,
            "interval" => PgType::Interval,
            "json" => PgType::Json,
            "jsonb" => PgType::Jsonb,
            "uuid" => PgType::Uuid,
            _ => return None,
        })
    }

    /// The type SQLite's own declared column type implies, for tables created
    /// outside unidb (SQLite's affinity rules, roughly).
    pub fn from_sqlite_decltype(decl: &str) -> PgType {
        if let Some(t) = PgType::from_name(decl) {
            return t;
        }
        let upper = decl.to_ascii_uppercase();
        if upper.contains("INT") {
            PgType::Int8
        } else if upper.contains("CHAR") || upper.contains("CLOB") || upper.contains("TEXT") {
            PgType::Text
        } else if upper.contains("BLOB") {
            PgType::Bytea
        } else if upper.contains("REAL") || upper.contains("FLOA") || upper.contains("DOUB") {
            PgType::Float8
        } else if upper.contains("BOOL") {
            PgType::Bool
        } else {
            PgType::Text
        }
    }

    /// `typlen` as sent in RowDescription.
    pub fn type_size(self) -> i16 {
        match self {
            PgType::Bool => 1,
            PgType::Int2 => 2,
            PgType::Int4 | PgType::Float4 | PgType::Date | PgType::Oid => 4,
            PgType::Int8
            | PgType::Float8
            | PgType::Timestamp
            | PgType::Timestamptz
            | PgType::Time => 8,
            PgType::Interval | PgType::Uuid => 16,
            PgType::Name => 64,
            _ => -1,
        }
    }

    pub fn is_integer(self) -> bool {
        matches!(self, PgType::Int2 | PgType::Int4 | PgType::Int8)
    }
}

fn invalid_input(ty: PgType, input: &str) -> PgError {
    PgError::new(
        code::INVALID_TEXT_REPRESENTATION,
        format!("invalid input syntax for type {}: \"{input}\"", ty.name()),
    )
}

/// A date/time that does not parse: 22008 when it has the shape of one (a field is
/// out of range, like February 30), else 22007.
fn invalid_datetime(ty: PgType, input: &str) -> PgError {
    let t = input.trim().as_bytes();
    let shaped = t.len() >= 10
        && t[..4].iter().all(u8::is_ascii_digit)
        && t[4] == b'-'
        && t[5..7].iter().all(u8::is_ascii_digit)
        && t[7] == b'-'
        && t[8..10].iter().all(u8::is_ascii_digit);
    if shaped {
        PgError::new(
            code::DATETIME_FIELD_OVERFLOW,
            format!("date/time field value out of range: \"{input}\""),
        )
    } else {
        PgError::new(
            code::INVALID_DATETIME_FORMAT,
            format!("invalid input syntax for type {}: \"{input}\"", ty.name()),
        )
    }
}

/// Significant decimal digits of a numeric literal (`0.0120` has 2, `1200` has 2).
fn significant_digits(s: &str) -> usize {
    let mantissa = s.split(['e', 'E']).next().unwrap_or(s);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    digits.trim_start_matches('0').trim_end_matches('0').len()
}

/// A numeric value as SQLite stores it: a REAL, which holds 15 significant digits
/// exactly. A value it would round is refused rather than stored altered.
fn exact_numeric(s: &str) -> PgResult<Value> {
    let f: f64 = s.parse().map_err(|_| invalid_input(PgType::Numeric, s))?;
    if !f.is_finite() {
        return Err(PgError::unsupported(format!(
            "numeric value \"{s}\" on the SQLite backend"
        )));
    }
    if significant_digits(s) > 15 && significant_digits(&format!("{f:e}")) < significant_digits(s) {
        return Err(PgError::new(
            code::NUMERIC_VALUE_OUT_OF_RANGE,
            format!(
                "numeric value {s} has more significant digits than the SQLite backend stores exactly (15)"
            ),
        )
        .with_hint("round the value, store it as text, or serve this database from PostgreSQL"));
    }
    Ok(Value::Real(f))
}

fn out_of_range(ty: PgType) -> PgError {
    PgError::new(
        code::NUMERIC_VALUE_OUT_OF_RANGE,
        format!("value out of range for type {}", ty.name()),
    )
}

fn bad_binary(ty: PgType) -> PgError {
    PgError::new(
        code::INVALID_BINARY_REPRESENTATION,
        format!("incorrect binary data format for type {}", ty.name()),
    )
}

// ---------------------------------------------------------------- text output

/// Appends the text form of `value` as type `ty` to `out`. `NULL` is handled by
/// the caller (it has no text form).
pub fn encode_text(ty: PgType, value: ValueRef<'_>, out: &mut BytesMut) -> PgResult<()> {
    match (ty, value) {
        (_, ValueRef::Null) => {}
        (PgType::Bool, v) => out.put_u8(if truthy(ty, v)? { b't' } else { b'f' }),
        (PgType::Bytea, ValueRef::Blob(b)) => put_hex_bytea(out, b),
        // A bytea written as a text literal (`'\x00ff'`) is stored as that text.
        (PgType::Bytea, ValueRef::Text(t)) if hex_literal(t).is_some() => out.put_slice(t),
        (PgType::Bytea, ValueRef::Text(t)) => put_hex_bytea(out, t),
        (PgType::Float4, ValueRef::Real(f)) => put_float(out, f64::from(f as f32), true),
        (PgType::Float8, ValueRef::Real(f)) => put_float(out, f, false),
        // SQLite computes in 64 bits; PostgreSQL's int4/int2 arithmetic overflows.
        (PgType::Int4, ValueRef::Integer(i)) if i32::try_from(i).is_err() => {
            return Err(PgError::new(
                code::NUMERIC_VALUE_OUT_OF_RANGE,
                "integer out of range",
            ))
        }
        (PgType::Int2, ValueRef::Integer(i)) if i16::try_from(i).is_err() => {
            return Err(PgError::new(
                code::NUMERIC_VALUE_OUT_OF_RANGE,
                "smallint out of range",
            ))
        }
        // numeric is written out in full, never in exponent form.
        (PgType::Numeric, ValueRef::Real(f)) if f.is_finite() => {
            out.put_slice(format!("{f}").as_bytes())
        }
        (PgType::Float4 | PgType::Float8, ValueRef::Integer(i)) => {
            out.put_slice(itoa::Buffer::new().format(i).as_bytes())
        }
        (PgType::Jsonb, ValueRef::Text(t)) => put_jsonb(out, t),
        (PgType::Timestamptz, ValueRef::Text(t)) => put_timestamp(out, t, true),
        (PgType::Timestamp, ValueRef::Text(t)) => put_timestamp(out, t, false),
        (PgType::Uuid, ValueRef::Blob(b)) if b.len() == 16 => {
            let u = uuid::Uuid::from_slice(b).map_err(|_| bad_binary(ty))?;
            out.put_slice(
                u.hyphenated()
                    .encode_lower(&mut uuid::Uuid::encode_buffer())
                    .as_bytes(),
            )
        }
        (_, ValueRef::Integer(i)) => out.put_slice(itoa::Buffer::new().format(i).as_bytes()),
        (_, ValueRef::Real(f)) => put_float(out, f, false),
        (_, ValueRef::Text(t)) => out.put_slice(t),
        (_, ValueRef::Blob(b)) => put_hex_bytea(out, b),
    }
    Ok(())
}

/// The bytes of a `\x…` hex bytea literal stored as text.
fn hex_literal(t: &[u8]) -> Option<Vec<u8>> {
    let s = std::str::from_utf8(t).ok()?;
    if !s.starts_with("\\x") {
        return None;
    }
    parse_bytea_text(s)
}

fn truthy(ty: PgType, v: ValueRef<'_>) -> PgResult<bool> {
    match v {
        ValueRef::Integer(i) => Ok(i != 0),
        ValueRef::Real(f) => Ok(f != 0.0),
        ValueRef::Text(t) => {
            let s = String::from_utf8_lossy(t);
            parse_bool(&s).ok_or_else(|| invalid_input(ty, &s))
        }
        ValueRef::Blob(_) | ValueRef::Null => Err(bad_binary(ty)),
    }
}

/// PostgreSQL's boolean input syntax.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "t" | "true" | "y" | "yes" | "on" | "1" => Some(true),
        "f" | "false" | "n" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

fn put_hex_bytea(out: &mut BytesMut, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(2 + bytes.len() * 2);
    out.put_slice(b"\\x");
    for b in bytes {
        out.put_u8(HEX[(b >> 4) as usize]);
        out.put_u8(HEX[(b & 0xf) as usize]);
    }
}

/// PostgreSQL's float output (shortest exact form, exponent outside 1e-4..1e15).
fn put_float(out: &mut BytesMut, f: f64, single: bool) {
    use std::fmt::Write;
    let mut s = String::new();
    if f.is_nan() {
        s.push_str("NaN");
    } else if f.is_infinite() {
        s.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
    } else if f == 0.0 {
        s.push_str(if f.is_sign_negative() { "-0" } else { "0" });
    } else {
        let exp = f.abs().log10().floor() as i32;
        let limit = if single { 6 } else { 15 };
        if !(-4..limit).contains(&exp) {
            // Rust writes `1.5e-5`; PostgreSQL writes `1.5e-05`.
            let raw = if single {
                format!("{:e}", f as f32)
            } else {
                format!("{f:e}")
            };
            let (mantissa, e) = raw.split_once('e').unwrap_or((&raw, "0"));
            let (sign, digits) = match e.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', e),
            };
            let _ = write!(s, "{mantissa}e{sign}{digits:0>2}");
        } else if single {
            let _ = write!(s, "{}", f as f32);
        } else {
            let _ = write!(s, "{f}");
        }
    }
    out.put_slice(s.as_bytes());
}

/// Parses the timestamp forms unidb stores or accepts: `YYYY-MM-DD[ T]HH:MM:SS[.f]`
/// with an optional `Z` / `±HH[:MM]` offset. Returns UTC for offset-carrying input.
pub fn parse_timestamp(s: &str) -> Option<(NaiveDateTime, bool)> {
    let s = s.trim();
    let (body, offset_secs, had_offset) = split_offset(s);
    let body = body.trim();
    let dt = if body.len() == 10 {
        NaiveDate::parse_from_str(body, "%Y-%m-%d")
            .ok()?
            .and_hms_opt(0, 0, 0)?
    } else {
        NaiveDateTime::parse_from_str(body, "%Y-%m-%d %H:%M:%S%.f")
            .or_else(|_| NaiveDateTime::parse_from_str(body, "%Y-%m-%dT%H:%M:%S%.f"))
            .or_else(|_| NaiveDateTime::parse_from_str(body, "%Y-%m-%d %H:%M"))
            .or_else(|_| NaiveDateTime::parse_from_str(body, "%Y-%m-%dT%H:%M"))
            .ok()?
    };
    Some((dt - chrono::Duration::seconds(offset_secs), had_offset))
}

fn split_offset(s: &str) -> (&str, i64, bool) {
    if let Some(body) = s.strip_suffix('Z').or_else(|| s.strip_suffix('z')) {
        return (body, 0, true);
    }
    // An offset starts at the last '+' or a '-' after the time part.
    let time_start = s.find([' ', 'T']).unwrap_or(s.len());
    if let Some(pos) = s[time_start..].rfind(['+', '-']).map(|p| p + time_start) {
        let off = &s[pos + 1..];
        let sign = if s.as_bytes()[pos] == b'-' { -1 } else { 1 };
        let digits: String = off.chars().filter(|c| c.is_ascii_digit()).collect();
        let (h, m) = match digits.len() {
            1 | 2 => (digits.parse::<i64>().ok(), Some(0)),
            4 => (digits[..2].parse().ok(), digits[2..].parse().ok()),
            _ => (None, None),
        };
        if let (Some(h), Some(m)) = (h, m) {
            return (&s[..pos], sign * (h * 3600 + m * 60), true);
        }
    }
    (s, 0, false)
}

/// Formats a timestamp as PostgreSQL prints it (ISO DateStyle, UTC for timestamptz).
pub fn format_timestamp(dt: &NaiveDateTime, with_tz: bool) -> String {
    let mut s = dt.format("%Y-%m-%d %H:%M:%S").to_string();
    let micros = dt.and_utc().timestamp_subsec_micros();
    if micros != 0 {
        let frac = format!("{micros:06}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    if with_tz {
        s.push_str("+00");
    }
    s
}

/// jsonb as PostgreSQL prints it: keys ordered by length then bytes (the last of
/// duplicate keys wins), `", "` and `": "` separators, numbers as written.
fn put_jsonb(out: &mut BytesMut, raw: &[u8]) {
    match serde_json::from_slice::<serde_json::Value>(raw) {
        Ok(v) => {
            let mut s = String::with_capacity(raw.len() + 8);
            write_jsonb(&v, &mut s);
            out.put_slice(s.as_bytes());
        }
        // Not JSON (should not happen for a jsonb column): show what is stored.
        Err(_) => out.put_slice(raw),
    }
}

fn write_jsonb(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value as J;
    match v {
        J::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_by(|a, b| {
                a.len()
                    .cmp(&b.len())
                    .then_with(|| a.as_bytes().cmp(b.as_bytes()))
            });
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&J::String((*k).clone()).to_string());
                out.push_str(": ");
                write_jsonb(&m[k.as_str()], out);
            }
            out.push('}');
        }
        J::Array(a) => {
            out.push('[');
            for (i, e) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_jsonb(e, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn put_timestamp(out: &mut BytesMut, raw: &[u8], with_tz: bool) {
    let text = String::from_utf8_lossy(raw);
    match parse_timestamp(&text) {
        Some((dt, _)) => out.put_slice(format_timestamp(&dt, with_tz).as_bytes()),
        // Not a timestamp unidb understands: show what is stored rather than guess.
        None => out.put_slice(raw),
    }
}

// -------------------------------------------------------------- binary output

/// Appends the binary form of `value` as type `ty` to `out`.
pub fn encode_binary(ty: PgType, value: ValueRef<'_>, out: &mut BytesMut) -> PgResult<()> {
    match ty {
        PgType::Bool => out.put_u8(u8::from(truthy(ty, value)?)),
        PgType::Int2 => {
            out.put_i16(i16::try_from(as_i64(ty, value)?).map_err(|_| out_of_range(ty))?)
        }
        PgType::Int4 | PgType::Oid => {
            out.put_i32(i32::try_from(as_i64(ty, value)?).map_err(|_| out_of_range(ty))?)
        }
        PgType::Int8 => out.put_i64(as_i64(ty, value)?),
        PgType::Float4 => out.put_f32(as_f64(ty, value)? as f32),
        PgType::Float8 => out.put_f64(as_f64(ty, value)?),
        PgType::Bytea => match value {
            ValueRef::Text(t) if hex_literal(t).is_some() => {
                out.put_slice(&hex_literal(t).unwrap_or_default())
            }
            ValueRef::Blob(b) | ValueRef::Text(b) => out.put_slice(b),
            other => encode_text(PgType::Text, other, out)?,
        },
        PgType::Numeric => {
            let mut text = BytesMut::new();
            encode_text(PgType::Numeric, value, &mut text)?;
            let s = std::str::from_utf8(&text).map_err(|_| bad_binary(ty))?;
            numeric_to_binary(s, out).ok_or_else(|| invalid_input(ty, s))?;
        }
        PgType::Uuid => {
            let u = match value {
                ValueRef::Blob(b) => uuid::Uuid::from_slice(b).map_err(|_| bad_binary(ty))?,
                ValueRef::Text(t) => {
                    let s = String::from_utf8_lossy(t);
                    uuid::Uuid::parse_str(s.trim()).map_err(|_| invalid_input(ty, &s))?
                }
                _ => return Err(bad_binary(ty)),
            };
            out.put_slice(u.as_bytes());
        }
        PgType::Date => {
            let s = text_of(value);
            let (dt, _) = parse_timestamp(&s).ok_or_else(|| invalid_input(ty, &s))?;
            let days = (dt.date() - pg_epoch_date()).num_days();
            out.put_i32(i32::try_from(days).map_err(|_| out_of_range(ty))?);
        }
        PgType::Timestamp | PgType::Timestamptz => {
            let s = text_of(value);
            let (dt, _) = parse_timestamp(&s).ok_or_else(|| invalid_input(ty, &s))?;
            let micros = (dt - pg_epoch_date().and_hms_opt(0, 0, 0).expect("midnight"))
                .num_microseconds()
                .ok_or_else(|| out_of_range(ty))?;
            out.put_i64(micros);
        }
        PgType::Time => {
            let s = text_of(value);
            let t = NaiveTime::parse_from_str(s.trim(), "%H:%M:%S%.f")
                .map_err(|_| invalid_input(ty, &s))?;
            let micros = i64::from(t.num_seconds_from_midnight()) * 1_000_000
                + i64::from(t.nanosecond() / 1000);
            out.put_i64(micros);
        }
        PgType::Jsonb => {
            out.put_u8(1);
            encode_text(PgType::Jsonb, value, out)?;
        }
        PgType::Interval => {
            let text = match value {
                ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                _ => return Err(bad_binary(ty)),
            };
            let iv = Interval::parse(&text, None)?;
            out.put_i64(iv.micros);
            out.put_i32(iv.days);
            out.put_i32(iv.months);
        }
        PgType::Text
        | PgType::Varchar
        | PgType::Bpchar
        | PgType::Name
        | PgType::Json
        | PgType::Unknown
        | PgType::Regtype
        | PgType::Void => encode_text(ty, value, out)?,
        PgType::Array(elem) => {
            let text = match value {
                ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                _ => return Err(bad_binary(ty)),
            };
            let items = array_elements(&text).ok_or_else(|| bad_binary(ty))?;
            let elem_ty = PgType::from_oid(elem).unwrap_or(PgType::Text);
            // ndim, has-nulls flag, element type, then length and lower bound.
            out.put_i32(i32::from(!items.is_empty()));
            out.put_i32(i32::from(items.iter().any(Option::is_none)));
            out.put_u32(elem);
            if !items.is_empty() {
                out.put_i32(items.len() as i32);
                out.put_i32(1);
            }
            for item in &items {
                match item {
                    None => out.put_i32(-1),
                    Some(v) => {
                        let at = out.len();
                        out.put_i32(0);
                        let stored = decode_text(elem_ty, v)?;
                        let r = match &stored {
                            Value::Integer(i) => ValueRef::Integer(*i),
                            Value::Real(f) => ValueRef::Real(*f),
                            Value::Text(t) => ValueRef::Text(t.as_bytes()),
                            Value::Blob(b) => ValueRef::Blob(b),
                            Value::Null => ValueRef::Null,
                        };
                        encode_binary(elem_ty, r, out)?;
                        let len = (out.len() - at - 4) as i32;
                        out[at..at + 4].copy_from_slice(&len.to_be_bytes());
                    }
                }
            }
        }
    }
    Ok(())
}

fn text_of(value: ValueRef<'_>) -> String {
    match value {
        ValueRef::Text(t) | ValueRef::Blob(t) => String::from_utf8_lossy(t).into_owned(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => f.to_string(),
        ValueRef::Null => String::new(),
    }
}

fn as_i64(ty: PgType, value: ValueRef<'_>) -> PgResult<i64> {
    match value {
        ValueRef::Integer(i) => Ok(i),
        ValueRef::Real(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(f as i64),
        ValueRef::Text(t) => {
            let s = String::from_utf8_lossy(t);
            s.trim().parse().map_err(|_| invalid_input(ty, &s))
        }
        _ => Err(bad_binary(ty)),
    }
}

fn as_f64(ty: PgType, value: ValueRef<'_>) -> PgResult<f64> {
    match value {
        ValueRef::Integer(i) => Ok(i as f64),
        ValueRef::Real(f) => Ok(f),
        ValueRef::Text(t) => {
            let s = String::from_utf8_lossy(t);
            parse_float(&s).ok_or_else(|| invalid_input(ty, &s))
        }
        _ => Err(bad_binary(ty)),
    }
}

fn parse_float(s: &str) -> Option<f64> {
    match s.trim().to_ascii_lowercase().as_str() {
        "infinity" | "+infinity" | "inf" => Some(f64::INFINITY),
        "-infinity" | "-inf" => Some(f64::NEG_INFINITY),
        "nan" => Some(f64::NAN),
        other => other.parse().ok(),
    }
}

/// Encodes a decimal string in PostgreSQL's binary numeric format (base-10000 digits).
fn numeric_to_binary(s: &str, out: &mut BytesMut) -> Option<()> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("nan") {
        out.put_slice(&[0, 0, 0, 0, 0xC0, 0, 0, 0]);
        return Some(());
    }
    let (negative, unsigned) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    // Expand an exponent (`1.5e3`) into plain digits.
    let (mantissa, exp) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().ok()?),
        None => (unsigned, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if !int_part
        .bytes()
        .chain(frac_part.bytes())
        .all(|b| b.is_ascii_digit())
        || int_part.len() + frac_part.len() == 0
    {
        return None;
    }
    let mut digits: String = format!("{int_part}{frac_part}");
    let mut point = int_part.len() as i32 + exp; // position of the decimal point in `digits`
    let dscale = (frac_part.len() as i32 - exp).max(0) as u16;
    if point < 0 {
        digits = format!("{}{digits}", "0".repeat((-point) as usize));
        point = 0;
    }
    if point as usize > digits.len() {
        digits.push_str(&"0".repeat(point as usize - digits.len()));
    }
    let (ip, fp) = digits.split_at(point as usize);
    // Pad the integer part on the left and the fraction on the right to groups of 4.
    let ip = format!("{}{ip}", "0".repeat((4 - ip.len() % 4) % 4));
    let fp = format!("{fp}{}", "0".repeat((4 - fp.len() % 4) % 4));
    let mut groups: Vec<i16> = Vec::new();
    for chunk in ip.as_bytes().chunks(4).chain(fp.as_bytes().chunks(4)) {
        groups.push(std::str::from_utf8(chunk).ok()?.parse().ok()?);
    }
    let mut weight = (ip.len() / 4) as i16 - 1;
    // Strip leading and trailing zero groups.
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    out.put_i16(groups.len() as i16);
    out.put_i16(weight);
    out.put_u16(if negative && !groups.is_empty() {
        0x4000
    } else {
        0
    });
    out.put_u16(dscale);
    for g in groups {
        out.put_i16(g);
    }
    Some(())
}

/// Decodes PostgreSQL's binary numeric into its decimal text.
fn numeric_from_binary(b: &[u8]) -> Option<String> {
    if b.len() < 8 {
        return None;
    }
    let ndigits = i16::from_be_bytes([b[0], b[1]]) as usize;
    let weight = i16::from_be_bytes([b[2], b[3]]) as i32;
    let sign = u16::from_be_bytes([b[4], b[5]]);
    let dscale = u16::from_be_bytes([b[6], b[7]]) as usize;
    if sign == 0xC000 {
        return Some("NaN".into());
    }
    if b.len() != 8 + ndigits * 2 {
        return None;
    }
    let groups: Vec<i32> = b[8..]
        .chunks(2)
        .map(|c| i32::from(i16::from_be_bytes([c[0], c[1]])))
        .collect();
    let mut int_part = String::new();
    for i in 0..=weight.max(-1) {
        let g = groups.get(i as usize).copied().unwrap_or(0);
        if int_part.is_empty() {
            if g != 0 || i == weight {
                int_part = g.to_string();
            }
        } else {
            int_part.push_str(&format!("{g:04}"));
        }
    }
    if int_part.is_empty() {
        int_part.push('0');
    }
    let mut frac = String::new();
    let mut idx = weight + 1;
    while frac.len() < dscale {
        let g = if idx < 0 {
            0
        } else {
            groups.get(idx as usize).copied().unwrap_or(0)
        };
        frac.push_str(&format!("{g:04}"));
        idx += 1;
    }
    frac.truncate(dscale);
    let mut s = String::new();
    if sign == 0x4000 {
        s.push('-');
    }
    s.push_str(&int_part);
    if dscale > 0 {
        s.push('.');
        s.push_str(&frac);
    }
    Some(s)
}

// ------------------------------------------------------------ parameter input

/// Converts a bound parameter (text format `0` or binary `1`) of type `ty` into the
/// SQLite value unidb stores for it.
pub fn decode_param(ty: PgType, binary: bool, raw: &[u8]) -> PgResult<Value> {
    if binary {
        decode_binary(ty, raw)
    } else {
        let s = std::str::from_utf8(raw).map_err(|_| {
            PgError::new(
                code::INVALID_TEXT_REPRESENTATION,
                "invalid byte sequence for encoding \"UTF8\"",
            )
        })?;
        decode_text(ty, s)
    }
}

/// Converts the text form of a value into what unidb stores for type `ty`.
pub fn decode_text(ty: PgType, s: &str) -> PgResult<Value> {
    Ok(match ty {
        PgType::Bool => Value::Integer(i64::from(
            parse_bool(s).ok_or_else(|| invalid_input(ty, s))?,
        )),
        PgType::Int2 | PgType::Int4 | PgType::Int8 | PgType::Oid => {
            let v: i64 = s.trim().parse().map_err(|_| invalid_input(ty, s))?;
            check_int_range(ty, v)?;
            Value::Integer(v)
        }
        PgType::Float4 | PgType::Float8 => {
            Value::Real(parse_float(s).ok_or_else(|| invalid_input(ty, s))?)
        }
        PgType::Numeric => match s.trim().parse::<i64>() {
            Ok(i) => Value::Integer(i),
            Err(_) => {
                let mut scratch = BytesMut::new();
                numeric_to_binary(s, &mut scratch).ok_or_else(|| invalid_input(ty, s))?;
                exact_numeric(s.trim())?
            }
        },
        PgType::Bytea => Value::Blob(parse_bytea_text(s).ok_or_else(|| invalid_input(ty, s))?),
        PgType::Timestamp | PgType::Timestamptz => {
            let (dt, _) = parse_timestamp(s).ok_or_else(|| invalid_datetime(ty, s))?;
            Value::Text(format_timestamp(&dt, ty == PgType::Timestamptz))
        }
        PgType::Date => {
            let (dt, _) = parse_timestamp(s).ok_or_else(|| invalid_datetime(ty, s))?;
            Value::Text(dt.date().format("%Y-%m-%d").to_string())
        }
        PgType::Interval => Value::Text(Interval::parse(s, None)?.format()),
        PgType::Uuid => Value::Text(
            uuid::Uuid::parse_str(s.trim())
                .map_err(|_| invalid_input(ty, s))?
                .hyphenated()
                .to_string(),
        ),
        _ => Value::Text(s.to_string()),
    })
}

fn check_int_range(ty: PgType, v: i64) -> PgResult<()> {
    let ok = match ty {
        PgType::Int2 => i16::try_from(v).is_ok(),
        PgType::Int4 => i32::try_from(v).is_ok(),
        PgType::Oid => u32::try_from(v).is_ok(),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(out_of_range(ty))
    }
}

fn parse_bytea_text(s: &str) -> Option<Vec<u8>> {
    if let Some(hex) = s.strip_prefix("\\x").or_else(|| s.strip_prefix("\\X")) {
        let hex: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        if hex.len() % 2 != 0 {
            return None;
        }
        return hex
            .chunks(2)
            .map(|c| u8::from_str_radix(std::str::from_utf8(c).ok()?, 16).ok())
            .collect();
    }
    // Escape format: backslash-octal and doubled backslashes.
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if bytes.get(i + 1) == Some(&b'\\') {
                out.push(b'\\');
                i += 2;
            } else {
                let oct = std::str::from_utf8(bytes.get(i + 1..i + 4)?).ok()?;
                out.push(u8::from_str_radix(oct, 8).ok()?);
                i += 4;
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

fn decode_binary(ty: PgType, b: &[u8]) -> PgResult<Value> {
    let fixed = |n: usize| -> PgResult<&[u8]> {
        if b.len() == n {
            Ok(b)
        } else {
            Err(bad_binary(ty))
        }
    };
    Ok(match ty {
        PgType::Bool => Value::Integer(i64::from(fixed(1)?[0] != 0)),
        PgType::Int2 => Value::Integer(i64::from(i16::from_be_bytes(
            fixed(2)?.try_into().expect("2 bytes"),
        ))),
        PgType::Int4 => Value::Integer(i64::from(i32::from_be_bytes(
            fixed(4)?.try_into().expect("4 bytes"),
        ))),
        PgType::Oid => Value::Integer(i64::from(u32::from_be_bytes(
            fixed(4)?.try_into().expect("4 bytes"),
        ))),
        PgType::Int8 => Value::Integer(i64::from_be_bytes(fixed(8)?.try_into().expect("8 bytes"))),
        PgType::Float4 => Value::Real(f64::from(f32::from_be_bytes(
            fixed(4)?.try_into().expect("4 bytes"),
        ))),
        PgType::Float8 => Value::Real(f64::from_be_bytes(fixed(8)?.try_into().expect("8 bytes"))),
        PgType::Bytea => Value::Blob(b.to_vec()),
        PgType::Uuid => Value::Text(
            uuid::Uuid::from_slice(fixed(16)?)
                .map_err(|_| bad_binary(ty))?
                .hyphenated()
                .to_string(),
        ),
        PgType::Date => {
            let days = i32::from_be_bytes(fixed(4)?.try_into().expect("4 bytes"));
            let d = pg_epoch_date()
                .checked_add_signed(chrono::Duration::days(i64::from(days)))
                .ok_or_else(|| out_of_range(ty))?;
            Value::Text(d.format("%Y-%m-%d").to_string())
        }
        PgType::Timestamp | PgType::Timestamptz => {
            let micros = i64::from_be_bytes(fixed(8)?.try_into().expect("8 bytes"));
            let dt = pg_epoch_date().and_hms_opt(0, 0, 0).expect("midnight")
                + chrono::Duration::microseconds(micros);
            Value::Text(format_timestamp(&dt, ty == PgType::Timestamptz))
        }
        PgType::Time => {
            let micros = i64::from_be_bytes(fixed(8)?.try_into().expect("8 bytes"));
            let t = NaiveTime::from_num_seconds_from_midnight_opt(
                u32::try_from(micros / 1_000_000).map_err(|_| out_of_range(ty))?,
                u32::try_from((micros % 1_000_000) * 1000).map_err(|_| out_of_range(ty))?,
            )
            .ok_or_else(|| out_of_range(ty))?;
            Value::Text(t.format("%H:%M:%S%.f").to_string())
        }
        PgType::Numeric => {
            let text = numeric_from_binary(b).ok_or_else(|| bad_binary(ty))?;
            match text.parse::<i64>() {
                Ok(i) => Value::Integer(i),
                Err(_) => exact_numeric(&text)?,
            }
        }
        PgType::Jsonb => match b.split_first() {
            Some((1, rest)) => Value::Text(String::from_utf8_lossy(rest).into_owned()),
            _ => return Err(bad_binary(ty)),
        },
        PgType::Interval => {
            let b: [u8; 16] = b.try_into().map_err(|_| bad_binary(ty))?;
            let iv = Interval {
                micros: i64::from_be_bytes(b[..8].try_into().expect("8 bytes")),
                days: i32::from_be_bytes(b[8..12].try_into().expect("4 bytes")),
                months: i32::from_be_bytes(b[12..].try_into().expect("4 bytes")),
            };
            Value::Text(iv.format())
        }
        _ => Value::Text(
            std::str::from_utf8(b)
                .map_err(|_| bad_binary(ty))?
                .to_string(),
        ),
    })
}

/// The current time as unidb stores a `timestamptz`.
pub fn now_timestamptz() -> String {
    format_timestamp(&Utc::now().naive_utc(), true)
}

/// Today's date (UTC) as unidb stores a `date`.
pub fn today() -> String {
    let d = Utc::now().date_naive();
    format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(ty: PgType, v: ValueRef<'_>) -> String {
        let mut out = BytesMut::new();
        encode_text(ty, v, &mut out).unwrap();
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn text_output_matches_postgres() {
        let cases: &[(PgType, ValueRef<'_>, &str)] = &[
            (PgType::Bool, ValueRef::Integer(1), "t"),
            (PgType::Bool, ValueRef::Integer(0), "f"),
            (PgType::Int4, ValueRef::Integer(-42), "-42"),
            (PgType::Float8, ValueRef::Real(1.5), "1.5"),
            (PgType::Float8, ValueRef::Real(1.0), "1"),
            (PgType::Float8, ValueRef::Real(1e20), "1e+20"),
            (PgType::Float8, ValueRef::Real(1.5e-5), "1.5e-05"),
            (PgType::Float4, ValueRef::Real(0.1), "0.1"),
            (
                PgType::Bytea,
                ValueRef::Blob(&[0xde, 0xad, 0x01]),
                "\\xdead01",
            ),
            (
                PgType::Timestamptz,
                ValueRef::Text(b"2024-05-01 10:00:00.500+02"),
                "2024-05-01 08:00:00.5+00",
            ),
            (
                PgType::Timestamptz,
                ValueRef::Text(b"2024-05-01T10:00:00Z"),
                "2024-05-01 10:00:00+00",
            ),
            (
                PgType::Timestamp,
                ValueRef::Text(b"2024-05-01 10:00:00.000"),
                "2024-05-01 10:00:00",
            ),
            (PgType::Text, ValueRef::Text(b"hi"), "hi"),
        ];
        for (ty, v, want) in cases {
            assert_eq!(text(*ty, *v), *want, "{ty:?}");
        }
    }

    #[test]
    fn numeric_binary_round_trips() {
        for s in [
            "0",
            "1",
            "-1",
            "12345.678",
            "0.0001",
            "100000000",
            "-0.5",
            "3.14159265358979323846",
        ] {
            let mut out = BytesMut::new();
            numeric_to_binary(s, &mut out).unwrap();
            assert_eq!(numeric_from_binary(&out).unwrap(), s, "{s}");
        }
        assert!(numeric_to_binary("1.2.3", &mut BytesMut::new()).is_none());
    }

    #[test]
    fn params_decode_and_validate() {
        assert_eq!(decode_text(PgType::Bool, "yes").unwrap(), Value::Integer(1));
        assert_eq!(decode_text(PgType::Int4, " 7 ").unwrap(), Value::Integer(7));
        assert_eq!(
            decode_text(PgType::Int2, "40000").unwrap_err().code,
            code::NUMERIC_VALUE_OUT_OF_RANGE
        );
        assert_eq!(
            decode_text(PgType::Int8, "x").unwrap_err().code,
            code::INVALID_TEXT_REPRESENTATION
        );
        assert_eq!(
            decode_text(PgType::Bytea, "\\x0aff").unwrap(),
            Value::Blob(vec![10, 255])
        );
        assert_eq!(
            decode_text(PgType::Timestamptz, "2024-01-01 12:00:00-05").unwrap(),
            Value::Text("2024-01-01 17:00:00+00".into())
        );
        assert_eq!(
            decode_binary(PgType::Date, &0i32.to_be_bytes()).unwrap(),
            Value::Text("2000-01-01".into())
        );
        assert!(decode_binary(PgType::Int4, &[1, 2]).is_err());
    }
}

/// A numeric value printed with `scale` decimals, rounding half away from zero on
/// the decimal digits (as PostgreSQL stores `numeric(p, s)`); `None` if not a number.
/// A numeric value rounded to `scale` decimals (half away from zero, on its decimal
/// digits), as stored in a `numeric(p, s)` column.
pub fn round_numeric(v: Value, scale: u32) -> Value {
    let text = match &v {
        Value::Integer(_) => return v,
        Value::Real(f) => numeric_with_scale(ValueRef::Real(*f), scale),
        Value::Text(t) => numeric_with_scale(ValueRef::Text(t.as_bytes()), scale),
        _ => None,
    };
    match text {
        Some(t) if scale == 0 => t.parse::<i64>().map_or(v, Value::Integer),
        Some(t) => t.parse::<f64>().map_or(v, Value::Real),
        None => v,
    }
}

pub fn numeric_with_scale(v: ValueRef<'_>, scale: u32) -> Option<String> {
    let text = match v {
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) if f.is_finite() => format!("{f}"),
        ValueRef::Text(t) => std::str::from_utf8(t).ok()?.trim().to_string(),
        _ => return None,
    };
    round_decimal(&text, scale as usize)
}

fn round_decimal(text: &str, scale: usize) -> Option<String> {
    let (neg, body) = match text.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut digits: Vec<u8> = int
        .bytes()
        .chain(frac.bytes().chain(std::iter::repeat(b'0')).take(scale))
        .collect();
    if digits.is_empty() {
        digits.push(b'0');
    }
    if frac.len() > scale && frac.as_bytes()[scale] >= b'5' {
        let mut i = digits.len();
        loop {
            if i == 0 {
                digits.insert(0, b'1');
                break;
            }
            i -= 1;
            if digits[i] == b'9' {
                digits[i] = b'0';
            } else {
                digits[i] += 1;
                break;
            }
        }
    }
    let split = digits.len() - scale;
    let mut int_part: String = String::from_utf8_lossy(&digits[..split])
        .trim_start_matches('0')
        .to_string();
    if int_part.is_empty() {
        int_part.push('0');
    }
    let frac_part = String::from_utf8_lossy(&digits[split..]).to_string();
    let zero = int_part == "0" && frac_part.bytes().all(|b| b == b'0');
    let mut out = String::new();
    if neg && !zero {
        out.push('-');
    }
    out.push_str(&int_part);
    if scale > 0 {
        out.push('.');
        out.push_str(&frac_part);
    }
    Some(out)
}

#[cfg(test)]
mod scale_tests {
    use super::*;

    #[test]
    fn numeric_scale_rounds_half_away_from_zero() {
        let r = |s: &str, n| round_decimal(s, n);
        assert_eq!(r("0.755", 2).as_deref(), Some("0.76"));
        assert_eq!(r("120.5", 3).as_deref(), Some("120.500"));
        assert_eq!(r("-2.345", 2).as_deref(), Some("-2.35"));
        assert_eq!(r("9.999", 2).as_deref(), Some("10.00"));
        assert_eq!(r("30", 3).as_deref(), Some("30.000"));
        assert_eq!(r("-0.001", 2).as_deref(), Some("0.00"));
        assert_eq!(r("12.5", 0).as_deref(), Some("13"));
        assert_eq!(r("abc", 2), None);
        assert_eq!(
            numeric_with_scale(ValueRef::Real(0.1 + 0.2), 2).as_deref(),
            Some("0.30")
        );
    }
}
