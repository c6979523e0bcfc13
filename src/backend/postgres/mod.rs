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

pub use conn::{ConnectError, ServerConn};
pub use pool::{Pool, PoolStats};
pub use relay::{cancel_upstream, serve};

use crate::config::PostgresConfig;

/// A PostgreSQL-backed database.
pub struct PostgresDb {
    pub pool: Arc<Pool>,
}

impl PostgresDb {
    pub fn open(name: &str, config: &PostgresConfig) -> anyhow::Result<Arc<PostgresDb>> {
        Ok(Arc::new(PostgresDb {
            pool: Pool::new(name, config)?,
        }))
    }

    /// Starts the pool's maintenance (idle and lifetime limits, `min_idle`).
    pub fn start(&self) {
        tokio::spawn(self.pool.clone().maintain());
    }
}
