//! Framing of client messages: the startup packet family (SSLRequest,
//! GSSENCRequest, CancelRequest, StartupMessage), then typed messages
//! (`type byte + length + body`) decoded by pgwire after a size check.

use bytes::{Buf, BytesMut};
use pgwire::messages::{
    DecodeContext, PgWireFrontendMessage, ProtocolVersion, SslNegotiationMetaMessage,
};
use tokio::io::{AsyncRead, AsyncReadExt};

pub use pgwire::messages::PgWireFrontendMessage as Frontend;

/// Why reading a client message failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection closed by client")]
    Closed,
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid message: {0}")]
    Invalid(String),
    #[error("message of {0} bytes exceeds the limit of {1} bytes")]
    TooLarge(usize, usize),
}

/// The first packet of a connection.
#[derive(Debug)]
pub enum StartupRequest {
    Ssl,
    Gss,
    Cancel {
        pid: i32,
        secret: i32,
    },
    Startup {
        params: std::collections::BTreeMap<String, String>,
        minor: u16,
    },
}

const STARTUP_LIMIT: usize = 10_000;

/// Reads one startup-family packet. `buf` must be empty on entry after an SSL
/// negotiation (no plaintext may follow an SSLRequest before the handshake).
pub async fn read_startup<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<StartupRequest, ReadError> {
    loop {
        if buf.len() >= 4 {
            let len = (&buf[..4]).get_i32();
            if !(8..=STARTUP_LIMIT as i32).contains(&len) {
                return Err(ReadError::Invalid(format!(
                    "invalid startup packet length {len}"
                )));
            }
            if buf.len() >= len as usize {
                break;
            }
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(ReadError::Closed);
        }
    }
    let mut ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
    let msg = decode_guarded(buf, &ctx)?;
    match msg {
        Some(PgWireFrontendMessage::SslNegotiation(SslNegotiationMetaMessage::PostgresSsl(_))) => {
            Ok(StartupRequest::Ssl)
        }
        Some(PgWireFrontendMessage::SslNegotiation(SslNegotiationMetaMessage::PostgresGss(_))) => {
            Ok(StartupRequest::Gss)
        }
        Some(PgWireFrontendMessage::SslNegotiation(SslNegotiationMetaMessage::None)) => {
            ctx.awaiting_frontend_ssl = false;
            match decode_guarded(buf, &ctx)? {
                Some(PgWireFrontendMessage::CancelRequest(c)) => {
                    let secret = c.secret_key.to_bytes();
                    if secret.len() != 4 {
                        return Err(ReadError::Invalid("cancel key must be 4 bytes".into()));
                    }
                    Ok(StartupRequest::Cancel {
                        pid: c.pid,
                        secret: (&secret[..]).get_i32(),
                    })
                }
                Some(PgWireFrontendMessage::Startup(s)) => {
                    if s.protocol_number_major != 3 {
                        return Err(ReadError::Invalid(format!(
                            "unsupported frontend protocol {}.{}: server supports 3.0",
                            s.protocol_number_major, s.protocol_number_minor
                        )));
                    }
                    Ok(StartupRequest::Startup {
                        params: s.parameters,
                        minor: s.protocol_number_minor,
                    })
                }
                _ => Err(ReadError::Invalid("invalid startup packet".into())),
            }
        }
        _ => Err(ReadError::Invalid("invalid startup packet".into())),
    }
}

/// Decodes one message; a decoder panic on malformed input becomes an error.
fn decode_guarded(buf: &mut BytesMut, ctx: &DecodeContext) -> Result<Option<Frontend>, ReadError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        PgWireFrontendMessage::decode(buf, ctx)
    }))
    .map_err(|_| ReadError::Invalid("message body is shorter than its fields".into()))?
    .map_err(|e| ReadError::Invalid(e.to_string()))
}

/// Reads typed client messages from a buffered stream.
pub struct FrontendReader {
    pub buf: BytesMut,
    max_size: usize,
    ctx: DecodeContext,
}

impl FrontendReader {
    pub fn new(buf: BytesMut, max_size: usize) -> FrontendReader {
        let mut ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
        ctx.awaiting_frontend_ssl = false;
        ctx.awaiting_frontend_startup = false;
        FrontendReader { buf, max_size, ctx }
    }

    /// Length of the complete message at the head of the buffer, if there is one.
    fn complete_len(&self) -> Result<Option<usize>, ReadError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let len = (&self.buf[1..5]).get_i32();
        if len < 4 {
            return Err(ReadError::Invalid(format!("invalid message length {len}")));
        }
        let total = len as usize + 1;
        if total > self.max_size {
            return Err(ReadError::TooLarge(total, self.max_size));
        }
        Ok((self.buf.len() >= total).then_some(total))
    }

    /// Whether a whole message is already buffered (then the caller keeps going
    /// before flushing its output, which batches replies to pipelined messages).
    pub fn has_message(&self) -> bool {
        matches!(self.complete_len(), Ok(Some(_)) | Err(_))
    }

    /// The next message, reading from `stream` as needed.
    pub async fn next<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
    ) -> Result<Frontend, ReadError> {
        loop {
            if let Some(total) = self.complete_len()? {
                // Decode from the exact frame, so that a body inconsistent with its
                // length cannot reach into the next message.
                let mut frame = self.buf.split_to(total);
                // The decoder indexes into the frame; a body shorter than its own
                // fields say must close this connection, not take the server down.
                let msg = decode_guarded(&mut frame, &self.ctx)?;
                return match msg {
                    Some(m) if frame.is_empty() => Ok(m),
                    Some(_) => Err(ReadError::Invalid(
                        "message length does not match its content".into(),
                    )),
                    None => Err(ReadError::Invalid("truncated message".into())),
                };
            }
            self.buf.reserve(8192);
            if stream.read_buf(&mut self.buf).await? == 0 {
                return Err(ReadError::Closed);
            }
        }
    }
}
