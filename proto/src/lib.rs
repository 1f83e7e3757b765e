//! What mosix nodes and processes say to each other: wire messages, framing,
//! the authenticated link handshake and node configuration. This crate
//! holds formats and their validation, never policy: what to do with a
//! message is the daemons' and the engine's business. The image format
//! lives in `mosix-engine`, its fixed-layout records in `mosix-layout`.
//!
//! Node configuration lives here too because every daemon and tool reads the
//! same file and must agree on it (cluster key, freeze signal, addresses).

pub mod config;
pub mod control;
pub mod daemon;
pub mod frame;
pub mod link;
pub mod local;
pub mod migrate;
pub mod msg;
pub mod process;
pub mod reason;
pub mod service;
pub mod view;

/// An error and every cause below it, as people read it (anyhow's `{:#}`
/// prints the same): the tests of each error type use it to check that a
/// cause is said once, not both in a message and again as its source.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(c) = next {
        s = format!("{s}: {c}");
        next = c.source();
    }
    s
}
