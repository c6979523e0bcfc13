//! A database served by an upstream PostgreSQL: client messages are relayed as
//! bytes to server connections from a pool (session or transaction pooling).
//!
//! Invariant: a server connection goes back to the pool only at ReadyForQuery
//! idle with nothing in flight; anything else closes it, so no client ever gets a
//! server inside another client's transaction.

mod conn;
mod pool;
mod relay;

use std::sync::Arc;

pub use conn::{ConnectError, ServerConn, Stream};
pub use pool::{Pool, PoolStats};
pub use relay::{cancel_upstream, start, Relay};

use crate::config::PostgresConfig;
use crate::observe::DbObs;
use crate::protocol::client::Client;
use crate::server::Pause;

/// A PostgreSQL-backed database.
pub struct PostgresDb {
    pub pool: Arc<Pool>,
    /// Statement timing (`None` when `[observe] enabled = false`).
    pub obs: Option<Arc<DbObs>>,
    /// `PAUSE` state.
    pub pause: Arc<Pause>,
}

impl PostgresDb {
    pub fn open(
        name: &str,
        config: &PostgresConfig,
        obs: Option<Arc<DbObs>>,
        pause: Arc<Pause>,
    ) -> anyhow::Result<Arc<PostgresDb>> {
        Ok(Arc::new(PostgresDb {
            pool: Pool::new(name, config)?,
            obs: obs.filter(|o| o.enabled()),
            pause,
        }))
    }

    /// Starts the pool's maintenance (idle and lifetime limits, `min_idle`).
    pub fn start(&self) {
        tokio::spawn(self.pool.clone().maintain());
    }
}

/// A connection of unidb's own to the upstream, outside the pool (migrations and
/// their validation): session state such as an advisory lock or `search_path` stays
/// on it, and a long statement holds no pool slot. TLS and authentication as the
/// pool's connections.
pub async fn connect_direct(config: &PostgresConfig) -> anyhow::Result<Client<Stream>> {
    let up = config.upstream().map_err(|e| anyhow::anyhow!(e))?;
    let tls = conn::tls_connector(&up)?;
    let (server, _params) = conn::connect(&up, tls.as_ref(), config.connect_timeout).await?;
    Ok(Client::new(server.stream, server.buf))
}
