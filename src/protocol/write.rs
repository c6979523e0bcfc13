//! Writing server messages into an output buffer.

use bytes::{BufMut, BytesMut};
use pgwire::messages::data::{FieldDescription, RowDescription};
use pgwire::messages::extendedquery::{
    BindComplete, CloseComplete, ParseComplete, PortalSuspended,
};
use pgwire::messages::response::{
    CommandComplete, EmptyQueryResponse, ErrorResponse, NoticeResponse, ReadyForQuery,
    TransactionStatus,
};
use pgwire::messages::startup::{Authentication, BackendKeyData, SecretKey};
use pgwire::messages::{data::NoData, data::ParameterDescription, Message};

use crate::error::PgError;
use crate::types::PgType;

/// Text (0) or binary (1) format of a result column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldFormat {
    Text,
    Binary,
}

impl FieldFormat {
    /// The format of column (or parameter) `i` from Bind's format codes (none: all text;
    /// one: all columns; else one per column).
    pub fn for_column(codes: &[i16], i: usize) -> FieldFormat {
        let code = match codes.len() {
            0 => 0,
            1 => codes[0],
            _ => codes.get(i).copied().unwrap_or(0),
        };
        if code == 1 {
            FieldFormat::Binary
        } else {
            FieldFormat::Text
        }
    }
}

fn put<M: Message>(out: &mut BytesMut, msg: &M) {
    // Encoding into a BytesMut only fails for messages over pgwire's size limits,
    // which the server never builds (rows are written by DataRowWriter).
    if let Err(e) = msg.encode(out) {
        tracing::error!(error = %e, "failed to encode a protocol message");
    }
}

pub fn error(out: &mut BytesMut, e: &PgError) {
    let mut fields = vec![
        (b'S', e.severity.as_str().to_string()),
        (b'V', e.severity.as_str().to_string()),
        (b'C', e.code.to_string()),
        (b'M', e.message.clone()),
    ];
    if let Some(d) = &e.detail {
        fields.push((b'D', d.clone()));
    }
    if let Some(h) = &e.hint {
        fields.push((b'H', h.clone()));
    }
    put(out, &ErrorResponse::new(fields));
}

pub fn notice(out: &mut BytesMut, message: &str) {
    put(
        out,
        &NoticeResponse::new(vec![
            (b'S', "WARNING".into()),
            (b'V', "WARNING".into()),
            (b'C', "01000".into()),
            (b'M', message.into()),
        ]),
    );
}

pub fn ready(out: &mut BytesMut, status: TransactionStatus) {
    put(out, &ReadyForQuery::new(status));
}

pub fn command_complete(out: &mut BytesMut, tag: &str) {
    put(out, &CommandComplete::new(tag.to_string()));
}

pub fn empty_query(out: &mut BytesMut) {
    put(out, &EmptyQueryResponse::new());
}

pub fn parse_complete(out: &mut BytesMut) {
    put(out, &ParseComplete::new());
}

pub fn bind_complete(out: &mut BytesMut) {
    put(out, &BindComplete::new());
}

pub fn close_complete(out: &mut BytesMut) {
    put(out, &CloseComplete::new());
}

pub fn portal_suspended(out: &mut BytesMut) {
    put(out, &PortalSuspended::new());
}

pub fn no_data(out: &mut BytesMut) {
    put(out, &NoData::new());
}

pub fn parameter_description(out: &mut BytesMut, types: &[PgType]) {
    put(
        out,
        &ParameterDescription::new(types.iter().map(|t| t.oid()).collect()),
    );
}

pub fn parameter_status(out: &mut BytesMut, name: &str, value: &str) {
    // Written in place: a new connection gets a dozen of these.
    out.reserve(7 + name.len() + value.len());
    out.put_u8(b'S');
    out.put_i32((4 + name.len() + 1 + value.len() + 1) as i32);
    out.put_slice(name.as_bytes());
    out.put_u8(0);
    out.put_slice(value.as_bytes());
    out.put_u8(0);
}

pub fn backend_key_data(out: &mut BytesMut, pid: i32, secret: i32) {
    put(out, &BackendKeyData::new(pid, SecretKey::I32(secret)));
}

pub fn authentication(out: &mut BytesMut, auth: Authentication) {
    put(out, &auth);
}

/// A result column as described to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: PgType,
}

pub fn row_description(out: &mut BytesMut, columns: &[Column], formats: &[i16]) {
    let fields = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            FieldDescription::new(
                c.name.clone(),
                0,
                0,
                c.ty.oid(),
                c.ty.type_size(),
                -1,
                match FieldFormat::for_column(formats, i) {
                    FieldFormat::Text => 0,
                    FieldFormat::Binary => 1,
                },
            )
        })
        .collect();
    put(out, &RowDescription::new(fields));
}

/// Writes one `DataRow` in place: type byte, length, field count, then each field
/// as a length-prefixed value (length -1 for NULL).
pub struct DataRowWriter<'a> {
    out: &'a mut BytesMut,
    start: usize,
}

impl<'a> DataRowWriter<'a> {
    pub fn begin(out: &'a mut BytesMut, fields: i16) -> DataRowWriter<'a> {
        out.put_u8(b'D');
        let start = out.len();
        out.put_i32(0);
        out.put_i16(fields);
        DataRowWriter { out, start }
    }

    pub fn null(&mut self) {
        self.out.put_i32(-1);
    }

    /// Writes one non-null field whose bytes `f` appends.
    pub fn field<E>(&mut self, f: impl FnOnce(&mut BytesMut) -> Result<(), E>) -> Result<(), E> {
        let len_at = self.out.len();
        self.out.put_i32(0);
        f(self.out)?;
        let len = (self.out.len() - len_at - 4) as i32;
        self.out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    pub fn finish(self) {
        let len = (self.out.len() - self.start) as i32;
        self.out[self.start..self.start + 4].copy_from_slice(&len.to_be_bytes());
    }
}

/// CopyInResponse / CopyOutResponse (`G` / `H`), every column in one format.
pub fn copy_response(out: &mut BytesMut, incoming: bool, binary: bool, columns: usize) {
    let columns = u16::try_from(columns).unwrap_or(u16::MAX);
    out.put_u8(if incoming { b'G' } else { b'H' });
    out.put_i32(4 + 1 + 2 + 2 * i32::from(columns));
    out.put_u8(u8::from(binary));
    out.put_u16(columns);
    for _ in 0..columns {
        out.put_u16(u16::from(binary));
    }
}

pub fn copy_data(out: &mut BytesMut, data: &[u8]) {
    out.put_u8(b'd');
    out.put_i32(4 + data.len() as i32);
    out.put_slice(data);
}

pub fn copy_done(out: &mut BytesMut) {
    out.put_u8(b'c');
    out.put_i32(4);
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgwire::messages::{data::DataRow, DecodeContext, ProtocolVersion};

    #[test]
    fn parameter_status_matches_pgwire_decoding() {
        use pgwire::messages::startup::ParameterStatus;
        let mut out = BytesMut::new();
        parameter_status(&mut out, "server_version", "15.0");
        let ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
        let m = ParameterStatus::decode(&mut out, &ctx).unwrap().unwrap();
        assert_eq!(m.name, "server_version");
        assert_eq!(m.value, "15.0");
        assert!(out.is_empty());
    }

    #[test]
    fn data_row_matches_pgwire_decoding() {
        let mut out = BytesMut::new();
        let mut w = DataRowWriter::begin(&mut out, 3);
        w.field(|b| {
            b.put_slice(b"42");
            Ok::<(), ()>(())
        })
        .unwrap();
        w.null();
        w.field(|_| Ok::<(), ()>(())).unwrap();
        w.finish();
        let ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
        let row = DataRow::decode(&mut out, &ctx).unwrap().unwrap();
        assert_eq!(row.field_count, 3);
        assert_eq!(
            &row.data[..],
            &[0, 0, 0, 2, b'4', b'2', 255, 255, 255, 255, 0, 0, 0, 0]
        );
        assert!(out.is_empty());
    }

    #[test]
    fn format_codes_follow_the_protocol_rules() {
        assert_eq!(FieldFormat::for_column(&[], 3), FieldFormat::Text);
        assert_eq!(FieldFormat::for_column(&[1], 3), FieldFormat::Binary);
        assert_eq!(FieldFormat::for_column(&[0, 1], 1), FieldFormat::Binary);
    }
}
