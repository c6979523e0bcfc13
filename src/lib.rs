//! unidb: a PostgreSQL wire-protocol server and proxy. Clients speak PostgreSQL;
//! each configured database is served from a SQLite file (and, later, an upstream
//! PostgreSQL). See `ARCHITECTURE.md` for the map of modules.

pub mod admin;
pub mod backend;
pub mod config;
pub mod error;
pub mod frontend;
pub mod http;
pub mod observe;
pub mod ops;
pub mod protocol;
pub mod server;
pub mod sql;
pub mod types;

/// The version reported to clients in `server_version` and by `unidb --version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `server_version` as clients see it: a PostgreSQL version they can parse, then ours.
pub fn server_version() -> String {
    format!("15.0 (unidb {VERSION})")
}
