//! The PostgreSQL protocol v3 on the wire: reading framed client messages with a
//! size bound, and writing server messages. Message codecs are pgwire's; the one
//! message written in place here is `DataRow`, so that rows are encoded straight into
//! the output buffer without an intermediate copy. `client` is the other side: the
//! simple query protocol as unidb's own tools speak it to a database.
//!
//! Invariant: only this module knows byte layouts of protocol messages.

pub mod client;
pub mod framing;
pub mod write;

pub use framing::{read_startup, Frontend, FrontendReader, ReadError, StartupRequest};
pub use pgwire::messages::response::TransactionStatus;
pub use write::{Column, DataRowWriter, FieldFormat};
