//! Backends that serve a database: for now a SQLite file.

pub mod sqlite;
