//! The client side of the simple query protocol, for unidb's own work against a
//! database (migrations, the demo): send a Query, read every result up to
//! ReadyForQuery, values as text. It speaks to an upstream PostgreSQL over a
//! connection that `backend::postgres` opened and authenticated, and to unidb's own
//! sessions over an in-process stream (`frontend::local`).

use std::fmt;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest server message accepted (a row of a migration query is far smaller).
const MAX_MESSAGE: usize = 256 << 20;

/// An ErrorResponse, with the fields a person needs to act on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerError {
    pub severity: String,
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    /// 1-based character position in the query text, when the server gives one.
    pub position: Option<usize>,
}

impl ServerError {
    fn parse(body: &[u8]) -> ServerError {
        let mut e = ServerError::default();
        for field in body.split(|b| *b == 0) {
            let Some((&kind, value)) = field.split_first() else {
                continue;
            };
            let value = String::from_utf8_lossy(value).into_owned();
            match kind {
                b'V' => e.severity = value,
                b'S' if e.severity.is_empty() => e.severity = value,
                b'C' => e.code = value,
                b'M' => e.message = value,
                b'D' => e.detail = Some(value),
                b'H' => e.hint = Some(value),
                b'P' => e.position = value.parse().ok(),
                _ => {}
            }
        }
        e
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (SQLSTATE {})", self.message, self.code)?;
        if let Some(d) = &self.detail {
            write!(f, "\nDETAIL: {d}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\nHINT: {h}")?;
        }
        Ok(())
    }
}

/// Why a query did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error; the connection is usable.
    #[error("{0}")]
    Server(Box<ServerError>),
    /// The connection failed or the server closed it.
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
    /// The server sent something this client does not understand; the connection
    /// cannot be used further.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The SQLSTATE of a server error.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Server(e) => Some(&e.code),
            _ => None,
        }
    }
}

/// The result of one statement of a Query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultSet {
    /// Column names (empty for a statement without rows).
    pub columns: Vec<String>,
    /// Values in text format; `None` is NULL.
    pub rows: Vec<Vec<Option<String>>>,
    /// The command tag (`CREATE TABLE`, `INSERT 0 3`, …).
    pub tag: String,
}

/// A connection at ReadyForQuery, speaking the simple query protocol.
pub struct Client<S> {
    stream: S,
    buf: BytesMut,
    /// Transaction status of the last ReadyForQuery (`I`, `T` or `E`).
    status: u8,
    /// NoticeResponse messages of the last query (message texts).
    pub notices: Vec<String>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// A client over a connection that is already at ReadyForQuery; `buf` holds
    /// bytes read from it and not yet consumed.
    pub fn new(stream: S, buf: BytesMut) -> Client<S> {
        Client {
            stream,
            buf,
            status: b'I',
            notices: Vec::new(),
        }
    }

    /// Reads up to the first ReadyForQuery (a session's greeting: ParameterStatus,
    /// BackendKeyData). An ErrorResponse in the greeting is an error.
    pub async fn read_greeting(&mut self) -> Result<(), ClientError> {
        let mut error = None;
        loop {
            let (tag, body) = self.read_message().await?;
            match tag {
                b'E' => error = Some(ServerError::parse(&body)),
                b'Z' => {
                    self.status = body.first().copied().unwrap_or(b'I');
                    return match error {
                        Some(e) => Err(ClientError::Server(Box::new(e))),
                        None => Ok(()),
                    };
                }
                _ => {}
            }
        }
    }

    /// Whether a transaction is open (`T`) or failed (`E`) on this connection.
    pub fn in_transaction(&self) -> bool {
        self.status != b'I'
    }

    /// Sends `sql` as one Query and returns one result per statement. The first
    /// error ends the query (the server skips the rest) and is returned.
    pub async fn query(&mut self, sql: &str) -> Result<Vec<ResultSet>, ClientError> {
        if sql.as_bytes().contains(&0) {
            return Err(ClientError::Server(Box::new(ServerError {
                severity: "ERROR".into(),
                code: "22021".into(),
                message: "the statement text contains a NUL byte".into(),
                ..ServerError::default()
            })));
        }
        self.notices.clear();
        let mut out = BytesMut::with_capacity(sql.len() + 6);
        out.put_u8(b'Q');
        out.put_i32((4 + sql.len() + 1) as i32);
        out.put_slice(sql.as_bytes());
        out.put_u8(0);
        self.stream.write_all(&out).await?;
        self.stream.flush().await?;
        let mut results = Vec::new();
        let mut current = ResultSet::default();
        let mut error = None;
        loop {
            let (tag, mut body) = self.read_message().await?;
            match tag {
                b'T' => {
                    current.columns = parse_row_description(&mut body)?;
                }
                b'D' => current.rows.push(parse_data_row(&mut body)?),
                b'C' => {
                    current.tag = cstr(&body);
                    results.push(std::mem::take(&mut current));
                }
                b'I' => results.push(std::mem::take(&mut current)),
                b'E' => error = Some(ServerError::parse(&body)),
                b'N' => self.notices.push(ServerError::parse(&body).message),
                b'G' => {
                    // COPY FROM STDIN: there is no data to send; abort it.
                    let reason = b"COPY FROM STDIN is not supported here\0";
                    let mut fail = BytesMut::new();
                    fail.put_u8(b'f');
                    fail.put_i32((4 + reason.len()) as i32);
                    fail.put_slice(reason);
                    self.stream.write_all(&fail).await?;
                    self.stream.flush().await?;
                }
                b'Z' => {
                    self.status = body.first().copied().unwrap_or(b'I');
                    return match error {
                        Some(e) => Err(ClientError::Server(Box::new(e))),
                        None => Ok(results),
                    };
                }
                // ParameterStatus, NotificationResponse, COPY TO STDOUT data: not needed.
                _ => {}
            }
        }
    }

    /// Sends Terminate and closes the connection.
    pub async fn close(mut self) {
        let _ = self.stream.write_all(&[b'X', 0, 0, 0, 4]).await;
        let _ = self.stream.flush().await;
        let _ = self.stream.shutdown().await;
    }

    async fn read_message(&mut self) -> Result<(u8, BytesMut), ClientError> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                if len < 4 || len as usize > MAX_MESSAGE {
                    return Err(ClientError::Protocol(format!(
                        "invalid message length {len} from the server"
                    )));
                }
                let total = len as usize + 1;
                if self.buf.len() >= total {
                    let mut frame = self.buf.split_to(total);
                    let tag = frame[0];
                    frame.advance(5);
                    return Ok((tag, frame));
                }
                self.buf.reserve(total - self.buf.len());
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(ClientError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                )));
            }
        }
    }
}

fn cstr(body: &[u8]) -> String {
    let end = body.iter().position(|b| *b == 0).unwrap_or(body.len());
    String::from_utf8_lossy(&body[..end]).into_owned()
}

fn short(what: &str) -> ClientError {
    ClientError::Protocol(format!("truncated {what} message"))
}

fn parse_row_description(body: &mut BytesMut) -> Result<Vec<String>, ClientError> {
    if body.len() < 2 {
        return Err(short("RowDescription"));
    }
    let n = body.get_i16().max(0) as usize;
    let mut names = Vec::with_capacity(n);
    for _ in 0..n {
        let end = body
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| short("RowDescription"))?;
        names.push(String::from_utf8_lossy(&body[..end]).into_owned());
        // Name, NUL, then table oid, column number, type oid, size, modifier, format.
        if body.len() < end + 1 + 18 {
            return Err(short("RowDescription"));
        }
        body.advance(end + 1 + 18);
    }
    Ok(names)
}

fn parse_data_row(body: &mut BytesMut) -> Result<Vec<Option<String>>, ClientError> {
    if body.len() < 2 {
        return Err(short("DataRow"));
    }
    let n = body.get_i16().max(0) as usize;
    let mut row = Vec::with_capacity(n);
    for _ in 0..n {
        if body.len() < 4 {
            return Err(short("DataRow"));
        }
        let len = body.get_i32();
        if len < 0 {
            row.push(None);
            continue;
        }
        let len = len as usize;
        if body.len() < len {
            return Err(short("DataRow"));
        }
        row.push(Some(String::from_utf8_lossy(&body[..len]).into_owned()));
        body.advance(len);
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server script: the bytes it answers with, read by the client.
    async fn run(answer: Vec<u8>, sql: &str) -> (Result<Vec<ResultSet>, ClientError>, Vec<u8>) {
        let (client_end, mut server_end) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move {
            let mut got = vec![0u8; 4096];
            let n = server_end.read(&mut got).await.unwrap();
            got.truncate(n);
            server_end.write_all(&answer).await.unwrap();
            got
        });
        let mut c = Client::new(client_end, BytesMut::new());
        let r = c.query(sql).await;
        (r, server.await.unwrap())
    }

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[tokio::test]
    async fn rows_nulls_tags_and_errors() {
        let mut answer = Vec::new();
        let mut rd = vec![0, 2];
        for name in ["a", "b"] {
            rd.extend_from_slice(name.as_bytes());
            rd.push(0);
            rd.extend_from_slice(&[0; 18]);
        }
        answer.extend(msg(b'T', &rd));
        let mut row = vec![0, 2];
        row.extend_from_slice(&1i32.to_be_bytes());
        row.push(b'x');
        row.extend_from_slice(&(-1i32).to_be_bytes());
        answer.extend(msg(b'D', &row));
        answer.extend(msg(b'C', b"SELECT 1\0"));
        answer.extend(msg(b'Z', b"I"));
        let (r, sent) = run(answer, "SELECT 'x' AS a, NULL AS b").await;
        assert_eq!(&sent[..1], b"Q");
        let r = r.unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].columns, vec!["a", "b"]);
        assert_eq!(r[0].rows, vec![vec![Some("x".to_string()), None]]);
        assert_eq!(r[0].tag, "SELECT 1");

        let mut answer = msg(
            b'E',
            b"SERROR\0C42P01\0Mrelation \"t\" does not exist\0P15\0\0",
        );
        answer.extend(msg(b'Z', b"E"));
        let (r, _) = run(answer, "SELECT * FROM t").await;
        match r {
            Err(ClientError::Server(e)) => {
                assert_eq!(e.code, "42P01");
                assert_eq!(e.position, Some(15));
                assert!(e.to_string().contains("does not exist (SQLSTATE 42P01)"));
            }
            other => panic!("expected a server error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn malformed_answers_are_errors_not_panics() {
        let mut answer = msg(b'D', &[0, 1, 0, 0, 0, 9, b'x']);
        answer.extend(msg(b'Z', b"I"));
        let (r, _) = run(answer, "SELECT 1").await;
        assert!(matches!(r, Err(ClientError::Protocol(_))), "{r:?}");
        let (r, _) = run(vec![b'C', 0, 0, 0, 1], "SELECT 1").await;
        assert!(matches!(r, Err(ClientError::Protocol(_))), "{r:?}");
    }
}
