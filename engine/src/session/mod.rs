//! Both sides of a move as state machines free of I/O (ARCHITECTURE.md
//! section 3, steps 3-6): [`source::Source`] is the side that decides and
//! keeps the commit point (the home's `homed`: moves from home, between
//! two nodes, and home again), [`host::Host`] the destination that takes,
//! restores and holds the body (a node's `remoted`), and
//! [`hosted::Hosted`] the node a body leaves (it freezes the body, sends
//! its image, and waits for the home's decision).
//!
//! A session is driven by typed inputs (a message from a peer, a link
//! that broke, the result of an action, the time) and answers with
//! actions for its driver to carry out in order (send a message, stream
//! the image, become the deputy, restore, let the body go). The daemons
//! are thin drivers that do the I/O; every path, failures included, is
//! tested here without root, a cluster or a socket.
//!
//! The rule both sides keep (decided): until the destination reports the
//! body restored and held, any failure leaves the process running where
//! it was; after it, the source commits and only then is the body told to
//! go. A migration never loses a process and never lets two copies run.
//!
//! Driver contract: carry out the actions of one call in order; if a
//! `Send` fails, stop, feed [`source::Input::Broken`] (or
//! [`host::Input::Broken`]) for that peer, and carry out what that call
//! returns instead of the rest. Read from the peer that
//! `waiting()` names, until its deadline; at the deadline call `timeout`.

pub mod host;
pub mod hosted;
pub mod source;

use std::time::Duration;

/// Each step of a move that the other side must answer within (an offer,
/// the end of a restore, a commit).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the body's node has to freeze it and deliver its image
/// straight to the next node (the whole image crosses meanwhile).
pub const DIRECT_TIMEOUT: Duration = Duration::from_secs(600);
/// How often a move asks a body's host again while the body blocks the
/// freeze signal for a moment ([`mosix_proto::reason::FreezeFailure::passing`]).
pub const FREEZE_RETRIES: u32 = 20;
/// The pause between two of those asks.
pub const FREEZE_RETRY_PAUSE: Duration = Duration::from_millis(50);
