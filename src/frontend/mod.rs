//! The client side: startup and authentication, then one session task per client
//! running the simple and extended query protocols; `local` runs the same sessions
//! for unidb's own tools over an in-memory stream.

pub mod auth;
mod copy;
mod gucs;
pub mod local;
mod session;
pub mod startup;
