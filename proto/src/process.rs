//! Requests about processes started at this home (`mosps`, `mosmigrate`),
//! answered by `homed`'s engine. Owned by the engine work (issue 3).

use serde::{Deserialize, Serialize};

/// A request about processes, carried in `ControlRequest::Process`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProcessRequest {
    /// List the caller's processes (root: all).
    List,
}

/// One managed process, as `mosps` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// The home pid (the pid the process has and keeps at home).
    pub pid: i32,
    /// The process's command line.
    pub cmdline: Vec<String>,
}

/// An answer to a [`ProcessRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProcessResponse {
    /// Answer to [`ProcessRequest::List`].
    List {
        /// The processes.
        processes: Vec<ProcessInfo>,
    },
}
