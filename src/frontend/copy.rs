//! COPY's text and CSV formats on the SQLite backend: rows parsed from the client's
//! CopyData as they arrive, and DataRows written out as COPY lines.

use crate::error::{code, PgError, PgResult};
use crate::sql::CopySpec;

use bytes::Bytes;

/// One parsed row: a value per column, `None` for NULL (text, or the binary
/// representation in binary COPY).
pub type Row = Vec<Option<Bytes>>;

/// The signature, flags and header extension length that open binary COPY data.
pub const BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

fn bad_copy(message: &str) -> PgError {
    PgError::new(code::BAD_COPY_FILE_FORMAT, message.to_string())
}

/// Binary COPY: takes the complete tuples at the front of `buf`. `header` is
/// whether the file header was read already; `ended` whether the trailer was.
pub fn take_binary_rows(
    buf: &mut Vec<u8>,
    header: &mut bool,
    ended: &mut bool,
    out: &mut Vec<Row>,
) -> PgResult<()> {
    let mut at = 0;
    if !*header {
        if buf.len() < 19 {
            return Ok(());
        }
        if &buf[..11] != b"PGCOPY\n\xff\r\n\0" {
            return Err(bad_copy("COPY file signature not recognized"));
        }
        let ext = u32::from_be_bytes(buf[15..19].try_into().expect("4 bytes")) as usize;
        if buf.len() < 19 + ext {
            return Ok(());
        }
        at = 19 + ext;
        *header = true;
    }
    while !*ended && buf.len() >= at + 2 {
        let count = i16::from_be_bytes([buf[at], buf[at + 1]]);
        if count == -1 {
            *ended = true;
            at += 2;
            break;
        }
        let mut p = at + 2;
        let mut row = Vec::with_capacity(count.max(0) as usize);
        let mut complete = true;
        for _ in 0..count.max(0) {
            let Some(len) = buf.get(p..p + 4) else {
                complete = false;
                break;
            };
            let len = i32::from_be_bytes(len.try_into().expect("4 bytes"));
            p += 4;
            if len < 0 {
                row.push(None);
                continue;
            }
            let Some(v) = buf.get(p..p + len as usize) else {
                complete = false;
                break;
            };
            row.push(Some(Bytes::copy_from_slice(v)));
            p += len as usize;
        }
        if !complete {
            break;
        }
        out.push(row);
        at = p;
    }
    buf.drain(..at);
    Ok(())
}

/// Takes the complete rows at the front of `buf` (all of it when `last`), leaving
/// a partial line for the next CopyData.
pub fn take_rows(
    spec: &CopySpec,
    buf: &mut Vec<u8>,
    last: bool,
    out: &mut Vec<Row>,
) -> PgResult<()> {
    let mut start = 0;
    while let Some(end) = record_end(spec, &buf[start..]).map(|e| start + e) {
        let line = &buf[start..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        start = end + 1;
        // The end-of-data marker (unquoted, alone on its line, also in CSV).
        if line == b"\\." {
            continue;
        }
        out.push(parse_record(spec, line)?);
    }
    if last && start < buf.len() {
        let line = &buf[start..];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !(line.is_empty() || line == b"\\.") {
            out.push(parse_record(spec, line)?);
        }
        start = buf.len();
    }
    buf.drain(..start);
    Ok(())
}

/// The offset of the newline that ends the first record (CSV: outside quotes).
fn record_end(spec: &CopySpec, data: &[u8]) -> Option<usize> {
    if !spec.csv {
        return data.iter().position(|b| *b == b'\n');
    }
    let mut quoted = false;
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        if quoted {
            if b == spec.escape && spec.escape != spec.quote && data.get(i + 1) == Some(&spec.quote)
            {
                i += 1;
            } else if b == spec.quote {
                quoted = false;
            }
        } else if b == spec.quote {
            quoted = true;
        } else if b == b'\n' {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn utf8(bytes: Vec<u8>) -> PgResult<Bytes> {
    match std::str::from_utf8(&bytes) {
        Ok(_) => Ok(Bytes::from(bytes)),
        Err(_) => Err(PgError::new(
            "22021",
            "invalid byte sequence for encoding \"UTF8\" in COPY data",
        )),
    }
}

fn parse_record(spec: &CopySpec, line: &[u8]) -> PgResult<Row> {
    if spec.csv {
        parse_csv(spec, line)
    } else {
        parse_text(spec, line)
    }
}

/// Text format: fields split by the delimiter, backslash escapes, `\N` is NULL.
fn parse_text(spec: &CopySpec, line: &[u8]) -> PgResult<Row> {
    let mut row = Vec::new();
    for raw in line.split(|b| *b == spec.delimiter) {
        if raw == spec.null.as_bytes() {
            row.push(None);
            continue;
        }
        let mut v = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            let b = raw[i];
            if b != b'\\' || i + 1 == raw.len() {
                v.push(b);
                i += 1;
                continue;
            }
            let next = raw[i + 1];
            i += 2;
            match next {
                b'b' => v.push(8),
                b'f' => v.push(12),
                b'n' => v.push(b'\n'),
                b'r' => v.push(b'\r'),
                b't' => v.push(b'\t'),
                b'v' => v.push(11),
                b'0'..=b'7' => {
                    let mut n = u32::from(next - b'0');
                    for _ in 0..2 {
                        match raw.get(i) {
                            Some(d @ b'0'..=b'7') => {
                                n = n * 8 + u32::from(d - b'0');
                                i += 1;
                            }
                            _ => break,
                        }
                    }
                    v.push((n & 0xff) as u8);
                }
                b'x' => {
                    let mut n = 0u32;
                    let mut digits = 0;
                    while digits < 2 {
                        match raw.get(i).and_then(|d| (*d as char).to_digit(16)) {
                            Some(d) => {
                                n = n * 16 + d;
                                i += 1;
                                digits += 1;
                            }
                            None => break,
                        }
                    }
                    if digits == 0 {
                        v.push(b'x');
                    } else {
                        v.push(n as u8);
                    }
                }
                other => v.push(other),
            }
        }
        row.push(Some(utf8(v)?));
    }
    Ok(row)
}

/// CSV: quoted fields may hold delimiters, newlines and doubled quotes; an unquoted
/// field equal to the NULL string is NULL.
fn parse_csv(spec: &CopySpec, line: &[u8]) -> PgResult<Row> {
    let mut row = Vec::new();
    let mut i = 0;
    loop {
        let mut v = Vec::new();
        let mut quoted_any = false;
        let mut in_quotes = false;
        while i < line.len() {
            let b = line[i];
            if in_quotes {
                // An escaped quote (by default a doubled one) is one quote.
                if b == spec.escape && line.get(i + 1) == Some(&spec.quote) {
                    v.push(spec.quote);
                    i += 2;
                    continue;
                }
                if b == spec.quote {
                    in_quotes = false;
                    i += 1;
                    continue;
                }
                v.push(b);
                i += 1;
            } else if b == spec.quote {
                in_quotes = true;
                quoted_any = true;
                i += 1;
            } else if b == spec.delimiter {
                break;
            } else {
                v.push(b);
                i += 1;
            }
        }
        if in_quotes {
            return Err(PgError::new(
                code::BAD_COPY_FILE_FORMAT,
                "unterminated CSV quoted field",
            ));
        }
        if !quoted_any && v == spec.null.as_bytes() {
            row.push(None);
        } else {
            row.push(Some(utf8(v)?));
        }
        if i >= line.len() {
            break;
        }
        i += 1; // the delimiter
    }
    Ok(row)
}

/// Appends one COPY line for a row of text-format fields.
pub fn write_row(spec: &CopySpec, fields: &[Option<&[u8]>], out: &mut Vec<u8>) {
    for (n, f) in fields.iter().enumerate() {
        if n > 0 {
            out.push(spec.delimiter);
        }
        match f {
            None => out.extend_from_slice(spec.null.as_bytes()),
            Some(v) if spec.csv => {
                let needs_quotes = v.is_empty() && !spec.null.is_empty()
                    || *v == spec.null.as_bytes()
                    || v.iter().any(|b| {
                        *b == spec.delimiter || *b == spec.quote || *b == b'\n' || *b == b'\r'
                    });
                if needs_quotes {
                    out.push(spec.quote);
                    for b in v.iter() {
                        if *b == spec.quote || *b == spec.escape {
                            out.push(spec.escape);
                        }
                        out.push(*b);
                    }
                    out.push(spec.quote);
                } else {
                    out.extend_from_slice(v);
                }
            }
            Some(v) => {
                for b in v.iter() {
                    match *b {
                        b'\\' => out.extend_from_slice(b"\\\\"),
                        b'\n' => out.extend_from_slice(b"\\n"),
                        b'\r' => out.extend_from_slice(b"\\r"),
                        b'\t' if spec.delimiter == b'\t' => out.extend_from_slice(b"\\t"),
                        d if d == spec.delimiter => {
                            out.push(b'\\');
                            out.push(d);
                        }
                        other => out.push(other),
                    }
                }
            }
        }
    }
    out.push(b'\n');
}

/// The fields of one DataRow message (`D`, length, count, then length-prefixed
/// values; -1 is NULL).
pub fn data_row_fields(msg: &[u8]) -> Option<Vec<Option<&[u8]>>> {
    let body = msg.get(5..)?;
    let count = u16::from_be_bytes([*body.first()?, *body.get(1)?]) as usize;
    let mut at = 2;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let len = i32::from_be_bytes(body.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        if len < 0 {
            out.push(None);
        } else {
            let end = at + len as usize;
            out.push(Some(body.get(at..end)?));
            at = end;
        }
    }
    Some(out)
}

/// The column names of a RowDescription message.
pub fn row_description_names(msg: &[u8]) -> Option<Vec<String>> {
    let body = msg.get(5..)?;
    let count = u16::from_be_bytes([*body.first()?, *body.get(1)?]) as usize;
    let mut at = 2;
    let mut names = Vec::with_capacity(count);
    for _ in 0..count {
        let len = body.get(at..)?.iter().position(|b| *b == 0)?;
        names.push(String::from_utf8_lossy(&body[at..at + len]).into_owned());
        at += len + 1 + 18;
    }
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(csv: bool) -> CopySpec {
        CopySpec {
            from_stdin: true,
            table: "t".into(),
            columns: vec![],
            query: String::new(),
            csv,
            binary: false,
            delimiter: if csv { b',' } else { b'\t' },
            null: if csv { String::new() } else { "\\N".into() },
            header: false,
            quote: b'"',
            escape: b'"',
        }
    }

    #[test]
    fn text_rows_split_across_chunks() {
        let s = spec(false);
        let mut buf = b"1\ta\\tb\\\\c\t\\N\n2\tx".to_vec();
        let mut rows = Vec::new();
        take_rows(&s, &mut buf, false, &mut rows).unwrap();
        assert_eq!(
            rows,
            vec![vec![
                Some(Bytes::from("1")),
                Some(Bytes::from("a\tb\\c")),
                None
            ]]
        );
        assert_eq!(buf, b"2\tx");
        buf.extend_from_slice(b"y\t\\101\n\\.\n");
        take_rows(&s, &mut buf, true, &mut rows).unwrap();
        assert_eq!(
            rows[1],
            vec![
                Some(Bytes::from("2")),
                Some(Bytes::from("xy")),
                Some(Bytes::from("A"))
            ]
        );
        assert_eq!(rows.len(), 2);
    }

    #[test]
    fn csv_quotes_newlines_and_nulls() {
        let s = spec(true);
        let mut buf = b"1,\"a,\"\"b\"\"\nc\",,\"\"\n".to_vec();
        let mut rows = Vec::new();
        take_rows(&s, &mut buf, true, &mut rows).unwrap();
        assert_eq!(
            rows,
            vec![vec![
                Some(Bytes::from("1")),
                Some(Bytes::from("a,\"b\"\nc")),
                None,
                Some(Bytes::new())
            ]]
        );
        let mut out = Vec::new();
        write_row(&s, &[Some(b"a,\"b\"\nc"), None, Some(b"")], &mut out);
        assert_eq!(out, b"\"a,\"\"b\"\"\nc\",,\"\"\n");
        let t = spec(false);
        let mut out = Vec::new();
        write_row(&t, &[Some(b"a\tb\\"), None], &mut out);
        assert_eq!(out, b"a\\tb\\\\\t\\N\n");
    }
}
