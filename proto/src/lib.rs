//! What mosix nodes and processes say to each other: wire messages, framing,
//! the authenticated link handshake, node configuration, and (later) the
//! image format. This crate holds formats and their validation, never
//! policy: what to do with a message is the daemons' business.

pub mod config;
pub mod msg;
