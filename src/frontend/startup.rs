//! Connection start: SSL/GSS negotiation, the startup packet, cancel requests,
//! authentication, and the parameters a new session reports.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
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
use crate::server::{ClientInfo, Database, ServerState};

/// A session after its handshake: what a connected client costs while it lives.
type SessionFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A session ready to run and what it holds while it runs. The guard lives in the
/// connection's task beside the boxed session, not in a box of its own.
struct Started {
    session: SessionFuture,
    _running: Running,
}

/// Serves one TCP connection from accept to close.
pub async fn serve_tcp(tcp: TcpStream, state: Arc<ServerState>) {
    // The handshake's state (TLS, authentication) is freed before the session
    // runs, so an idle client holds only its session's own state.
    let Some(mut started) = Box::pin(handshake(tcp, state)).await else {
        return;
    };
    (&mut started.session).await;
}

/// Negotiation and authentication; returns the session to run, if any.
async fn handshake(mut tcp: TcpStream, state: Arc<ServerState>) -> Option<Started> {
    let _ = tcp.set_nodelay(true);
    let peer = tcp.peer_addr().ok();
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        match protocol::read_startup(&mut tcp, &mut buf).await {
            Ok(StartupRequest::Ssl) => {
                let acceptor = state.tls.clone();
                match acceptor {
                    // No plaintext may be buffered behind an SSLRequest.
                    Some(acceptor) if buf.is_empty() => {
                        if tcp.write_all(b"S").await.is_err() {
                            return None;
                        }
                        match Box::pin(acceptor.accept(tcp)).await {
                            Ok(tls) => return Box::pin(serve_after_tls(tls, state, peer)).await,
                            Err(e) => {
                                tracing::debug!(error = %e, "TLS handshake failed");
                                return None;
                            }
                        }
                    }
                    Some(_) => return None,
                    None => {
                        if tcp.write_all(b"N").await.is_err() {
                            return None;
                        }
                    }
                }
            }
            Ok(StartupRequest::Gss) => {
                if tcp.write_all(b"N").await.is_err() {
                    return None;
                }
            }
            Ok(StartupRequest::Cancel { pid, secret }) => {
                state.cancels.cancel(pid, secret);
                return None;
            }
            Ok(StartupRequest::Startup { params, .. }) => {
                return Box::pin(start_session(tcp, buf, params, state, peer, false)).await;
            }
            Err(e) => {
                reject_startup(&mut tcp, e).await;
                return None;
            }
        }
    }
}

async fn serve_after_tls<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    mut stream: S,
    state: Arc<ServerState>,
    peer: Option<std::net::SocketAddr>,
) -> Option<Started> {
    let mut buf = BytesMut::with_capacity(1024);
    match protocol::read_startup(&mut stream, &mut buf).await {
        Ok(StartupRequest::Startup { params, .. }) => {
            Box::pin(start_session(stream, buf, params, state, peer, true)).await
        }
        Ok(StartupRequest::Cancel { pid, secret }) => {
            state.cancels.cancel(pid, secret);
            None
        }
        Ok(_) => {
            let e = ReadError::Invalid("SSL or GSS negotiation repeated inside TLS".into());
            reject_startup(&mut stream, e).await;
            None
        }
        Err(e) => {
            reject_startup(&mut stream, e).await;
            None
        }
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

async fn start_session<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    mut stream: S,
    buf: BytesMut,
    params: BTreeMap<String, String>,
    state: Arc<ServerState>,
    peer: Option<std::net::SocketAddr>,
    tls: bool,
) -> Option<Started> {
    let mut reader = FrontendReader::new(buf, state.config.server.max_message_size);
    let Some(user) = params.get("user").filter(|u| !u.is_empty()).cloned() else {
        {
            send_fatal(
                &mut stream,
                PgError::new(
                    code::INVALID_AUTHORIZATION_SPECIFICATION,
                    "no PostgreSQL user name specified in startup packet",
                ),
            )
            .await;
            return None;
        }
    };
    let database = params
        .get("database")
        .filter(|d| !d.is_empty())
        .cloned()
        .unwrap_or_else(|| user.clone());
    let Ok(client_permit) = state.clients.clone().try_acquire_owned() else {
        {
            send_fatal(
                &mut stream,
                PgError::new(
                    code::TOO_MANY_CONNECTIONS,
                    "sorry, too many clients already",
                ),
            )
            .await;
            return None;
        }
    };
    // AuthenticationOk is sent with the session's first messages: one write.
    let greeting = match Box::pin(authenticate(&mut stream, &mut reader, &state, &user)).await {
        Ok(out) => out,
        Err(Some(e)) => {
            tracing::info!(user = %user, database = %database, code = e.code, "authentication failed");
            {
                send_fatal(&mut stream, e).await;
                return None;
            }
        }
        Err(None) => return None,
    };
    let info = ClientInfo {
        user: user.clone(),
        database: database.clone(),
        addr: peer,
        connected_at: std::time::SystemTime::now(),
        application_name: params.get("application_name").cloned().unwrap_or_default(),
        tls,
    };
    if database == crate::admin::DATABASE {
        if !state.live().admin_users.contains(&user) {
            tracing::info!(user = %user, "admin console refused: not an admin user");
            let _ = stream.write_all(&greeting).await;
            send_fatal(
                &mut stream,
                PgError::new(
                    code::INSUFFICIENT_PRIVILEGE,
                    format!("permission denied: user \"{user}\" may not use the admin console"),
                )
                .with_hint("admin users are listed in [server] admin_users"),
            )
            .await;
            return None;
        }
        let (pid, secret, _slot) = state.cancels.register(info);
        tracing::info!(pid, user = %user, "admin console session started");
        let session = crate::admin::serve(stream, reader, greeting, state.clone(), pid, secret);
        return Some(Started {
            session: Box::pin(session),
            _running: Running {
                _client_permit: client_permit,
                clients: None,
                state,
                pid,
            },
        });
    }
    let Some(db) = state.databases.get(&database).cloned() else {
        let _ = stream.write_all(&greeting).await;
        {
            send_fatal(
                &mut stream,
                PgError::new(
                    code::INVALID_CATALOG_NAME,
                    format!("database \"{database}\" does not exist"),
                )
                .with_hint(format!("configured databases: {}", state.database_names())),
            )
            .await;
            return None;
        }
    };
    let (pid, secret, slot) = state.cancels.register(info);
    tracing::debug!(pid, user = %user, database = %database, "session started");
    let clients = state.observer.db(&database).map(|o| o.clients().clone());
    if let Some(g) = &clients {
        g.inc();
    }
    let running = Running {
        _client_permit: client_permit,
        clients,
        state: state.clone(),
        pid,
    };
    let session: SessionFuture = match db {
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
            Box::pin(session.run())
        }
        Database::Postgres(db) => {
            // Only what the client already sent, not the reader's whole buffer:
            // idle clients should cost little memory.
            let leftover = BytesMut::from(&reader.buf[..]);
            drop(reader);
            let relay = crate::backend::postgres::start(
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
            Box::pin(Box::pin(relay).await?.run())
        }
    };
    Some(Started {
        session,
        _running: running,
    })
}

/// What a session holds while it runs, released when it ends (or is aborted): the
/// client's slot (`max_clients`), its cancel key and its place in the clients gauge.
struct Running {
    _client_permit: tokio::sync::OwnedSemaphorePermit,
    clients: Option<prometheus::IntGauge>,
    state: Arc<ServerState>,
    pid: i32,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(g) = &self.clients {
            g.dec();
        }
        self.state.cancels.unregister(self.pid);
        tracing::debug!(pid = self.pid, "session ended");
    }
}

/// Runs the configured authentication exchange and returns the final messages
/// (AuthenticationOk) for the caller to send. `Err(None)`: the client went away.
async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    reader: &mut FrontendReader,
    state: &ServerState,
    user: &str,
) -> Result<BytesMut, Option<PgError>> {
    let live = state.live();
    let secrets = live.users.get(user);
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

#[cfg(test)]
mod tests {
    fn future_size<A, B, R>(_: fn(A, B) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// A connection's task holds this future beside the boxed session; tokio
    /// rounds the task to 128 bytes, so a few bytes more can cost 128 per client.
    #[test]
    fn a_connection_task_stays_small() {
        let size = future_size(super::serve_tcp);
        assert!(size <= 128, "serve_tcp future is {size} B");
    }
}
