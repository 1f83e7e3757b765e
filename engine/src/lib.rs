//! The migration engine (ARCHITECTURE.md sections 3 and 5): everything about
//! turning a running process into an image and back that `homed` (moves
//! from home, checkpoints) and `remoted` (moves of a body away) share.
//!
//! Modelled on CRIU's split: [`capture`] and [`procfs`] read a frozen
//! process (its dumper), [`freeze`] talks to the frozen process's freeze
//! handler over its control socket (compel's job), [`image`] is the image
//! format, whose fixed-layout records live in the dependency-free
//! `mosix-layout` crate that the `#![no_std]` restorer links (its pie).
//! [`reason`] holds the typed refusals and failures that cross links and
//! sockets, and [`session`] the two sides of a move as state machines free
//! of I/O, so every failure path is unit-tested without root.

pub mod capture;
pub mod freeze;
pub mod image;
pub mod procfs;
pub mod session;
mod sys;

pub use sys::{FsIds, kill};

pub use mosix_layout as layout;
