//! Connection start: SSL/GSS negotiation, the startup packet, cancel requests,
//! authentication, and the parameters a new session reports.

use std::collections::BTreeMap;
use std::future::Future;

use std::sync::Arc;

use bytes::BytesMut;
use futures_util::FutureExt;
use pgwire::messages::startup::Authentication;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::auth::{md5_matches, random_bytes, ScramError, ScramServer};
use super::session::Session;
use crate::backend::CancelSlot;
use crate::config::AuthMethod;
use crate::error::{code, PgError};
use crate::protocol::{self, write as msg, Frontend, FrontendReader, ReadError, StartupRequest};
use crate::server::{ClientInfo, Database, Registered, ServerState};

/// Serves one TCP connection until its session starts: negotiation and
/// authentication. The session runs as a task of its own (see
/// [`spawn_session`]), so that this task and the handshake's state (TLS,
/// authentication) are freed and an idle client holds only its session.
pub async fn serve_tcp(tcp: TcpStream, state: Arc<ServerState>) {
    Box::pin(handshake(tcp, state)).await;
}

/// Runs a session in a task of its own with what it holds while it runs. The
/// task's future is the session's own, unboxed: tokio allocates a task in steps of
/// 128 bytes, so what an idle client costs is this future's size, rounded up.
/// The session can be aborted through its cancel slot (at the end of shutdown's
/// grace period).
fn spawn_session<F>(session: F, running: Running, slot: &CancelSlot)
where
    F: Future<Output = ()> + Send + 'static,
{
    let task = tokio::spawn(session_task(session, running));
    slot.set_abort(task.abort_handle());
}

/// The session's future and its guard, dropped when the session ends or is
/// aborted. (Not an `async` block: one would keep the session's future twice,
/// as its capture and as what it awaits.)
fn session_task<F: Future<Output = ()>>(session: F, running: Running) -> impl Future<Output = ()> {
    session.map(move |()| drop(running))
}

/// Negotiation and authentication; starts the session, if any.
async fn handshake(mut tcp: TcpStream, state: Arc<ServerState>) {
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
                            return;
                        }
                        match Box::pin(acceptor.accept(tcp)).await {
                            Ok(tls) => return Box::pin(serve_after_tls(tls, state, peer)).await,
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
                return Box::pin(start_session(tcp, buf, params, state, peer, false)).await;
            }
            Err(e) => {
                reject_startup(&mut tcp, e).await;
                return;
            }
        }
    }
}

async fn serve_after_tls<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    mut stream: S,
    state: Arc<ServerState>,
    peer: Option<std::net::SocketAddr>,
) {
    let mut buf = BytesMut::with_capacity(1024);
    match protocol::read_startup(&mut stream, &mut buf).await {
        Ok(StartupRequest::Startup { params, .. }) => {
            Box::pin(start_session(stream, buf, params, state, peer, true)).await
        }
        Ok(StartupRequest::Cancel { pid, secret }) => {
            state.cancels.cancel(pid, secret);
        }
        Ok(_) => {
            let e = ReadError::Invalid("SSL or GSS negotiation repeated inside TLS".into());
            reject_startup(&mut stream, e).await;
        }
        Err(e) => {
            reject_startup(&mut stream, e).await;
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
) {
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
            return;
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
            return;
        }
    };
    // AuthenticationOk is sent with the session's first messages: one write.
    let greeting = match Box::pin(authenticate(&mut stream, &mut reader, &state, &user)).await {
        Ok(out) => out,
        Err(Some(e)) => {
            tracing::info!(user = %user, database = %database, code = e.code, "authentication failed");
            {
                send_fatal(&mut stream, e).await;
                return;
            }
        }
        Err(None) => return,
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
            return;
        }
        let (pid, secret, slot) = state.cancels.register(info, None);
        tracing::info!(pid, user = %user, "admin console session started");
        let session = crate::admin::serve(stream, reader, greeting, state.clone(), pid, secret);
        let running = Running {
            _client_permit: client_permit,
            clients: None,
            registered: Registered { state, pid },
        };
        spawn_session(session, running, &slot);
        return;
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
            return;
        }
    };
    let upstream = match &db {
        Database::Postgres(pg) => Some(pg.pool.upstream.clone()),
        Database::Sqlite(_) => None,
    };
    let (pid, secret, slot) = state.cancels.register(info, upstream);
    tracing::debug!(pid, user = %user, database = %database, "session started");
    let clients = state.observer.db(&database).map(|o| o.clients().clone());
    if let Some(g) = &clients {
        g.inc();
    }
    let running = Running {
        _client_permit: client_permit,
        clients,
        registered: Registered {
            state: state.clone(),
            pid,
        },
    };
    match db {
        Database::Sqlite(db) => {
            let session = Session::new(
                stream,
                reader,
                db,
                slot.clone(),
                pid,
                secret,
                user,
                params,
                state.clone(),
                greeting,
            );
            spawn_session(session.run(), running, &slot);
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
                slot.clone(),
                pid,
                secret,
                params,
                state.clone(),
            );
            if let Some(relay) = Box::pin(relay).await {
                spawn_session(relay.run(), running, &slot);
            }
        }
    }
}

/// What a session holds while it runs, released when it ends (or is aborted): the
/// client's slot (`max_clients`), its cancel key and its place in the clients gauge.
struct Running {
    _client_permit: tokio::sync::OwnedSemaphorePermit,
    clients: Option<prometheus::IntGauge>,
    /// Leaves the cancel registry after this guard's own drop.
    registered: Registered,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(g) = &self.clients {
            g.dec();
        }
        tracing::debug!(pid = self.registered.pid, "session ended");
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
    fn future_size<A, B, R>(_: impl Fn(A, B) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// A connection's task holds this future beside the boxed session; tokio
    /// rounds the task to 128 bytes, so a few bytes more can cost 128 per client.
    #[test]
    fn a_connection_task_stays_small() {
        let size = future_size(super::serve_tcp);
        assert!(size <= 128, "serve_tcp future is {size} B");
    }

    /// An idle pooled client costs its session's task: tokio's task header and
    /// trailer take 96 bytes and the whole is rounded up to 128, so a session
    /// future up to 288 bytes keeps the task at 384.
    #[test]
    fn a_pooled_session_task_stays_within_384_bytes() {
        type Relay = crate::backend::postgres::Relay<tokio::net::TcpStream>;
        let size = future_size(|relay: Box<Relay>, running: super::Running| {
            super::session_task(relay.run(), running)
        });
        assert!(size <= 288, "pooled session task future is {size} B");
    }
}
