//! The client side: listener, startup and authentication, one session task per
//! client, and cancel requests.

pub mod auth;
