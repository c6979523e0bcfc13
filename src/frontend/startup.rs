//! Connection start: SSL/GSS negotiation, the startup packet, cancel requests,
//! authentication, and the parameters a new session reports.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::BytesMut;
use pgwire::messages::startup::Authentication;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::auth::{md5_matches, random_bytes, ScramError, ScramServer};
use super::session::Session;
use crate::config::AuthMethod;
use crate::error::{code, PgError};
use crate::protocol::{self, write as msg, Frontend, FrontendReader, ReadError, StartupRequest};
use crate::server::{Database, ServerState};

/// Serves one TCP connection from accept to close.
pub async fn serve_tcp(mut tcp: TcpStream, state: Arc<ServerState>) {
    let _ = tcp.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        match protocol::read_startup(&mut tcp, &mut buf).await {
            Ok(StartupRequest::Ssl) => {
                let acceptor = state.tls.clone();
                match acceptor {
                    // No plaintext may be buffered behind an SSLRequest.
                    Some(acceptor) if buf.is_empty() => {
                        if tcp.write_all(b"S").await.is_err() {
                            return;
                        }
                        match Box::pin(acceptor.accept(tcp)).await {
                            Ok(tls) => return Box::pin(serve_after_tls(tls, state)).await,
                            Err(e) => {
                                tracing::debug!(error = %e, "TLS handshake failed");
                                return;
                            }
                        }
                    }
                    Some(_) => return,
                    None => {
                        if tcp.write_all(b"N").await.is_err() {
                            return;
                        }
                    }
                }
            }
            Ok(StartupRequest::Gss) => {
                if tcp.write_all(b"N").await.is_err() {
                    return;
                }
            }
            Ok(StartupRequest::Cancel { pid, secret }) => {
                state.cancels.cancel(pid, secret);
                return;
            }
            Ok(StartupRequest::Startup { params, .. }) => {
                // Boxed: the session's state is as large as it needs to be, not
                // as large as the largest path through this function.
                return Box::pin(start_session(tcp, buf, params, state)).await;
            }
            Err(e) => return reject_startup(&mut tcp, e).await,
        }
    }
}

async fn serve_after_tls<S: AsyncRead + AsyncWrite + Unpin + Send>(
    mut stream: S,
    state: Arc<ServerState>,
) {
    let mut buf = BytesMut::with_capacity(1024);
    match protocol::read_startup(&mut stream, &mut buf).await {
        Ok(StartupRequest::Startup { params, .. }) => {
            start_session(stream, buf, params, state).await
        }
        Ok(StartupRequest::Cancel { pid, secret }) => state.cancels.cancel(pid, secret),
        Ok(_) => {
            let e = ReadError::Invalid("SSL or GSS negotiation repeated inside TLS".into());
            reject_startup(&mut stream, e).await
        }
        Err(e) => reject_startup(&mut stream, e).await,
    }
}

async fn reject_startup<S: AsyncWrite + Unpin>(stream: &mut S, e: ReadError) {
    if let ReadError::Invalid(_) | ReadError::TooLarge(_, _) = &e {
        tracing::debug!(error = %e, "rejected a startup packet");
        let mut out = BytesMut::new();
        msg::error(&mut out, &PgError::protocol(e.to_string()));
        let _ = stream.write_all(&out).await;
    }
}

async fn send_fatal<S: AsyncWrite + Unpin>(stream: &mut S, e: PgError) {
    let mut out = BytesMut::new();
    msg::error(
        &mut out,
        &PgError {
            severity: crate::error::Severity::Fatal,
            ..e
        },
    );
    let _ = stream.write_all(&out).await;
    let _ = stream.flush().await;
}

async fn start_session<S: AsyncRead + AsyncWrite + Unpin + Send>(
    mut stream: S,
    buf: BytesMut,
    params: BTreeMap<String, String>,
    state: Arc<ServerState>,
) {
    let mut reader = FrontendReader::new(buf, state.config.server.max_message_size);
    let Some(user) = params.get("user").filter(|u| !u.is_empty()).cloned() else {
        return send_fatal(
            &mut stream,
            PgError::new(
                code::INVALID_AUTHORIZATION_SPECIFICATION,
                "no PostgreSQL user name specified in startup packet",
            ),
        )
        .await;
    };
    let database = params
        .get("database")
        .filter(|d| !d.is_empty())
        .cloned()
        .unwrap_or_else(|| user.clone());
    let Ok(_client_permit) = state.clients.clone().try_acquire_owned() else {
        return send_fatal(
            &mut stream,
            PgError::new(
                code::TOO_MANY_CONNECTIONS,
                "sorry, too many clients already",
            ),
        )
        .await;
    };
    // AuthenticationOk is sent with the session's first messages: one write.
    let greeting = match Box::pin(authenticate(&mut stream, &mut reader, &state, &user)).await {
        Ok(out) => out,
        Err(Some(e)) => {
            tracing::info!(user = %user, database = %database, code = e.code, "authentication failed");
            return send_fatal(&mut stream, e).await;
        }
        Err(None) => return,
    };
    let Some(db) = state.databases.get(&database).cloned() else {
        let _ = stream.write_all(&greeting).await;
        return send_fatal(
            &mut stream,
            PgError::new(
                code::INVALID_CATALOG_NAME,
                format!("database \"{database}\" does not exist"),
            )
            .with_hint(format!("configured databases: {}", state.database_names())),
        )
        .await;
    };
    let (pid, secret, slot) = state.cancels.register();
    tracing::debug!(pid, user = %user, database = %database, "session started");
    match db {
        Database::Sqlite(db) => {
            let session = Session::new(
                stream,
                reader,
                db,
                slot,
                pid,
                secret,
                user,
                params,
                state.clone(),
                greeting,
            );
            Box::pin(session.run()).await;
        }
        Database::Postgres(db) => {
            // Only what the client already sent, not the reader's whole buffer:
            // idle clients should cost little memory.
            let leftover = BytesMut::from(&reader.buf[..]);
            drop(reader);
            let relay = crate::backend::postgres::serve(
                stream,
                greeting,
                leftover,
                db,
                slot,
                pid,
                secret,
                params,
                state.clone(),
            );
            Box::pin(relay).await;
        }
    }
    state.cancels.unregister(pid);
    tracing::debug!(pid, "session ended");
}

/// Runs the configured authentication exchange and returns the final messages
/// (AuthenticationOk) for the caller to send. `Err(None)`: the client went away.
async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    reader: &mut FrontendReader,
    state: &ServerState,
    user: &str,
) -> Result<BytesMut, Option<PgError>> {
    let secrets = state.users.get(user);
    let bad_password = || {
        PgError::new(
            code::INVALID_PASSWORD,
            format!("password authentication failed for user \"{user}\""),
        )
    };
    let mut out = BytesMut::new();
    match state.config.server.auth {
        AuthMethod::Trust => {
            if secrets.is_none() && !state.users_is_empty() {
                return Err(Some(PgError::new(
                    code::INVALID_AUTHORIZATION_SPECIFICATION,
                    format!("role \"{user}\" does not exist"),
                )));
            }
        }
        AuthMethod::Md5 => {
            let salt: [u8; 4] = random_bytes();
            msg::authentication(&mut out, Authentication::MD5Password(salt.to_vec()));
            write_out(stream, &mut out).await?;
            let response = read_password(stream, reader).await?;
            let ok = secrets
                .and_then(|s| s.md5.as_deref())
                .is_some_and(|stored| md5_matches(stored, &salt, &response));
            if !ok {
                return Err(Some(bad_password()));
            }
        }
        AuthMethod::ScramSha256 => {
            msg::authentication(&mut out, Authentication::SASL(vec!["SCRAM-SHA-256".into()]));
            write_out(stream, &mut out).await?;
            let initial = match reader.next(stream).await {
                Ok(Frontend::PasswordMessageFamily(p)) => {
                    p.into_sasl_initial_response().map_err(|e| {
                        Some(PgError::protocol(format!(
                            "invalid SASL initial response: {e}"
                        )))
                    })?
                }
                Ok(_) => return Err(Some(PgError::protocol("expected SASL initial response"))),
                Err(_) => return Err(None),
            };
            if initial.auth_method != "SCRAM-SHA-256" {
                return Err(Some(PgError::protocol(format!(
                    "SASL mechanism {} is not supported; use SCRAM-SHA-256",
                    initial.auth_method
                ))));
            }
            let data = initial.data.unwrap_or_default();
            let verifier = secrets.and_then(|s| s.scram.as_ref());
            let (scram, server_first) = ScramServer::start(verifier, &data)
                .map_err(|e| Some(scram_error(e, &bad_password)))?;
            msg::authentication(&mut out, Authentication::SASLContinue(server_first.into()));
            write_out(stream, &mut out).await?;
            let response = match reader.next(stream).await {
                Ok(Frontend::PasswordMessageFamily(p)) => p
                    .into_sasl_response()
                    .map_err(|e| Some(PgError::protocol(format!("invalid SASL response: {e}"))))?,
                Ok(_) => return Err(Some(PgError::protocol("expected SASL response"))),
                Err(_) => return Err(None),
            };
            let server_final = scram
                .finish(&response.data)
                .map_err(|e| Some(scram_error(e, &bad_password)))?;
            msg::authentication(&mut out, Authentication::SASLFinal(server_final.into()));
        }
    }
    msg::authentication(&mut out, Authentication::Ok);
    Ok(out)
}

fn scram_error(e: ScramError, bad_password: &dyn Fn() -> PgError) -> PgError {
    match e {
        ScramError::Malformed(m) => PgError::protocol(format!("malformed SCRAM message: {m}")),
        ScramError::BadProof => bad_password(),
    }
}

async fn read_password<S: AsyncRead + Unpin>(
    stream: &mut S,
    reader: &mut FrontendReader,
) -> Result<String, Option<PgError>> {
    match reader.next(stream).await {
        Ok(Frontend::PasswordMessageFamily(p)) => p
            .into_password()
            .map(|p| p.password)
            .map_err(|e| Some(PgError::protocol(format!("invalid password message: {e}")))),
        Ok(_) => Err(Some(PgError::protocol("expected a password message"))),
        Err(_) => Err(None),
    }
}

async fn write_out<S: AsyncWrite + Unpin>(
    stream: &mut S,
    out: &mut BytesMut,
) -> Result<(), Option<PgError>> {
    stream.write_all(out).await.map_err(|_| None)?;
    stream.flush().await.map_err(|_| None)?;
    out.clear();
    Ok(())
}
