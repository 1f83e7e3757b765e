//! Shared pieces of the mosix command-line tools.

pub mod args;
pub mod best;
pub mod client;
pub mod install;
pub mod local;
pub mod monitor;
pub mod sys;
