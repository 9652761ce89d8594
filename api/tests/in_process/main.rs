//! The server's router driven in process (`tower::ServiceExt::oneshot`) over a real sled
//! store in a temporary directory: what a spawned binary would prove nothing more about.
//! Error mapping, credential refusals and the two front ends reaching one service layer
//! are decided by the router and its handlers, not by the process around them; the
//! `e2e_*` tests keep the process itself (signals, restarts, the CLI, the listener).
//!
//! One test binary with modules, not a file per subject: each test binary links the
//! whole server.

mod app;
mod auth;
mod error_names;
mod errors;
mod front_ends;
mod repeats;
