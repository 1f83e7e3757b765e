//! The remote daemon: the node's face to the cluster.
//!
//! It measures the node's load, disseminates load information, decides
//! migrations (later issues), and hosts guest bodies (later issues). Policy
//! lives in [`balancer`], free of I/O; the event loop feeds it.

pub mod balancer;
pub mod host;
pub mod measure;
pub mod net;
pub mod node;
