//! The home daemon: the node-local side of every process started here.
//!
//! `homed` accepts registrations from `mosrun`, answers local commands on
//! its Unix socket (callers identified by SO_PEERCRED), and will host the
//! deputies and the view's file server of the later issues.

pub mod args;
pub mod control;
pub mod kids;
pub mod migrate;
pub mod procs;
pub mod title;
pub mod tty;
pub mod view;
