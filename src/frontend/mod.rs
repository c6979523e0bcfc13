//! The client side: startup and authentication, then one session task per client
//! running the simple and extended query protocols.

pub mod auth;
mod copy;
mod gucs;
mod session;
pub mod startup;
