//! Operational commands over configured databases: schema migrations and the
//! validation platform's demo. They reach databases through [`target`]: SQL goes
//! through unidb's own session code on SQLite, so the PostgreSQL dialect is
//! rewritten exactly as for clients.

pub mod demo;
pub mod migrate;
pub mod table;
pub mod target;
