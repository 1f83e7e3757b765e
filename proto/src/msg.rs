//! Node-to-node messages carried inside an authenticated link.
//!
//! Every message is a serde type encoded with `rmp_serde::to_vec_named`, so
//! structs travel as maps keyed by field name and survive reordering or the
//! addition of optional fields. Enums are internally tagged by a string
//! (`"type"`), never by a variant index.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// One node's published facts, as the load-information dissemination carries
/// them (ARCHITECTURE.md section 7). Ages, not timestamps, travel: node clocks are
/// not synchronised, so a receiver turns `age_ms` into its own time base.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadEntry {
    /// Node name, unique in the cluster.
    pub name: String,
    /// Where the node's `remoted` accepts links. Travels as text
    /// (`"10.0.0.1:7340"`), the one form every encoder agrees on.
    #[serde(with = "addr_text")]
    pub address: SocketAddr,
    /// Grows each time the node restarts (its start time in ms since the
    /// epoch), so news from an earlier life never overrides a later one.
    pub generation: u64,
    /// How old this information was, in milliseconds, when it was sent.
    pub age_ms: u64,
    /// Load normalised by CPU capacity and speed: 1.0 means one CPU-bound
    /// process per standard CPU.
    pub load: f64,
    /// CPU capacity in CPUs (fractional inside a CPU-limited cgroup).
    pub cpus: f64,
    /// Relative speed of one CPU, 1.0 being the reference machine.
    pub speed: f64,
    /// Memory available for new processes, in bytes.
    pub free_mem_bytes: u64,
    /// Whether the node takes guests now (`mosctl block` clears it); the
    /// balancer never sends a process to a node that does not. A peer too
    /// old to send it is taken to accept.
    #[serde(default = "accepts_by_default")]
    pub accepts_guests: bool,
    /// How many guests (bodies of other homes' processes) run here.
    #[serde(default)]
    pub guests: u32,
    /// How many processes started here run their bodies elsewhere.
    #[serde(default)]
    pub away: u32,
}

/// What an entry without `accepts_guests` means: an old peer, which had no
/// way to refuse guests.
fn accepts_by_default() -> bool {
    true
}

/// Messages between two nodes' `remoted` daemons.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PeerMessage {
    /// Periodic dissemination: the sender's own fresh entry and the freshest
    /// part of its window.
    Gossip {
        /// The sender's own entry, with `age_ms == 0`.
        sender: LoadEntry,
        /// The freshest entries the sender knows about other nodes.
        window: Vec<LoadEntry>,
        /// Ask the receiver to answer with a gossip of its own (used to probe
        /// a node whose news is getting old before declaring it dead).
        want_reply: bool,
    },
}

/// Serialises a socket address as its text form.
mod addr_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::net::SocketAddr;

    pub fn serialize<S: Serializer>(addr: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(addr)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
