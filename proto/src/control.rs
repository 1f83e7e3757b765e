//! Requests and answers on the daemons' local Unix sockets (`mosctl`,
//! `mosps`, `mosmigrate` to `homed` and `remoted`). The caller is identified
//! by SO_PEERCRED, never by anything it says about itself.

use serde::{Deserialize, Serialize};

use crate::msg::LoadEntry;
use crate::process::{ProcessRequest, ProcessResponse};

/// A command from a local tool to a daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlRequest {
    /// The local node's own state (`mosctl status`); answered by `remoted`.
    Status,
    /// Every node this node knows (`mosctl nodes`); answered by `remoted`.
    Nodes,
    /// Liveness and identity of `homed` itself.
    HomeStatus,
    /// Anything about processes started here; answered by `homed`.
    Process {
        /// The process request proper.
        request: ProcessRequest,
    },
    /// Take no new guests (`mosctl block`; root only); answered by `remoted`.
    Block,
    /// Take guests again (`mosctl unblock`; root only); answered by `remoted`.
    Unblock,
    /// Ask every guest to leave (`mosctl expel`; root only); answered by
    /// `remoted`.
    Expel,
    /// Read the balancer's parameters, after setting the `KEY=VALUE` pairs
    /// of `set` if any (`mosctl params`; setting is root only); answered by
    /// `remoted`. All pairs are checked before any is applied.
    Params {
        /// `KEY=VALUE` texts, as typed.
        #[serde(default)]
        set: Vec<String>,
    },
}

/// Whether a node is believed to be up, from the local node's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Heard from recently enough.
    Alive,
    /// Silent for longer than the configured `dead_after_ms`.
    Dead,
}

/// One row of `mosctl nodes`: what this node believes about another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's published entry, with `age_ms` relative to now.
    pub entry: LoadEntry,
    /// Alive or dead, as judged here.
    pub state: NodeState,
    /// Whether this row is the answering node itself.
    pub is_self: bool,
}

/// `remoted`'s view of its own node (`mosctl status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalStatus {
    /// This node's current entry.
    pub entry: LoadEntry,
    /// Where the load figures come from: `"machine"` or a cgroup path.
    pub load_source: String,
    /// Number of nodes believed alive, this one included.
    pub alive_nodes: usize,
    /// Number of nodes known, alive or dead, this one included.
    pub known_nodes: usize,
    /// Protocol version this daemon speaks.
    pub protocol: u8,
}

/// `homed`'s answer to [`ControlRequest::HomeStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HomeStatus {
    /// Node name.
    pub node: String,
    /// Pid of `homed`.
    pub pid: u32,
}

/// A daemon's answer to a [`ControlRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlResponse {
    /// The request failed; `message` says why and what to do.
    Error {
        /// Human-readable reason.
        message: String,
    },
    /// Answer to [`ControlRequest::Status`].
    Status {
        /// The node's status.
        status: LocalStatus,
    },
    /// Answer to [`ControlRequest::Nodes`].
    Nodes {
        /// Every known node, this one included.
        nodes: Vec<NodeInfo>,
    },
    /// Answer to [`ControlRequest::HomeStatus`].
    HomeStatus {
        /// `homed`'s status.
        status: HomeStatus,
    },
    /// Answer to [`ControlRequest::Process`].
    Process {
        /// The process response proper.
        response: ProcessResponse,
    },
    /// A command was carried out; `message` says what it did.
    Done {
        /// Human-readable summary.
        message: String,
    },
    /// Answer to [`ControlRequest::Params`]: every parameter after the
    /// change, in a stable order.
    Params {
        /// `(key, value, meaning)` rows.
        params: Vec<ParamRow>,
    },
}

/// One balancer parameter, as `mosctl params` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamRow {
    /// Its key, as `KEY=VALUE` names it.
    pub key: String,
    /// Its value, as text.
    pub value: String,
    /// What it means, with its unit.
    pub about: String,
}
