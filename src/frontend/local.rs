//! In-process sessions: unidb's own tools (migrations, the demo) connect to a
//! configured database exactly as a client does — the same session code, SQL
//! rewriting and side catalog on SQLite, the same pool on PostgreSQL — over an
//! in-memory stream instead of a socket. No authentication: the caller is unidb
//! itself. The session is listed by `SHOW CLIENTS` while it lives.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::DuplexStream;

use super::session::Session;
use crate::protocol::client::{Client, ClientError};
use crate::protocol::FrontendReader;
use crate::server::{ClientInfo, Database, Registered, ServerState};

/// Buffer of the in-memory stream in each direction.
const PIPE: usize = 256 * 1024;

/// How an in-process session treats `PAUSE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paused {
    /// Waits like any client (the demo).
    Wait,
    /// Runs anyway (migrations, so that PAUSE, MIGRATE UP, RESUME works).
    Exempt,
}

/// Opens a session on `database` as `user` and returns a client at ReadyForQuery.
pub async fn connect(
    state: &Arc<ServerState>,
    database: &str,
    user: &str,
    application_name: &str,
    paused: Paused,
) -> Result<Client<DuplexStream>, ClientError> {
    let db = state.databases.get(database).cloned().ok_or_else(|| {
        ClientError::Protocol(format!(
            "database \"{database}\" is not configured (configured: {})",
            state.database_names()
        ))
    })?;
    let (ours, theirs) = tokio::io::duplex(PIPE);
    let info = ClientInfo {
        user: user.to_string(),
        database: database.to_string(),
        addr: None,
        connected_at: std::time::SystemTime::now(),
        application_name: application_name.to_string(),
        tls: false,
    };
    let upstream = match &db {
        Database::Postgres(pg) => Some(pg.pool.upstream.clone()),
        Database::Sqlite(_) => None,
    };
    let (pid, secret, slot) = state.cancels.register(info, upstream);
    let mut params = BTreeMap::new();
    params.insert("user".to_string(), user.to_string());
    params.insert("database".to_string(), database.to_string());
    params.insert("application_name".to_string(), application_name.to_string());
    let greeting = {
        let mut out = BytesMut::new();
        crate::protocol::write::authentication(
            &mut out,
            pgwire::messages::startup::Authentication::Ok,
        );
        out
    };
    let st = state.clone();
    let registered = Registered {
        state: state.clone(),
        pid,
    };
    let abort_slot = slot.clone();
    let task = match db {
        Database::Sqlite(db) => {
            let reader = FrontendReader::new(BytesMut::new(), st.config.server.max_message_size);
            let session = Session::new(
                theirs,
                reader,
                db,
                slot,
                pid,
                secret,
                user.to_string(),
                params,
                st.clone(),
                greeting,
            );
            let session = match paused {
                Paused::Wait => session,
                Paused::Exempt => session.exempt_from_pause(),
            };
            tokio::spawn(async move {
                let _registered = registered;
                session.run().await;
            })
        }
        Database::Postgres(db) => tokio::spawn(async move {
            let _registered = registered;
            let relay = crate::backend::postgres::start(
                theirs,
                greeting,
                BytesMut::new(),
                db,
                slot,
                pid,
                secret,
                params,
                st.clone(),
            );
            if let Some(relay) = Box::pin(relay).await {
                relay.run().await;
            }
        }),
    };
    // Shutdown aborts it when its grace period is over.
    abort_slot.set_abort(task.abort_handle());
    let mut client = Client::new(ours, BytesMut::new());
    client.read_greeting().await?;
    Ok(client)
}
