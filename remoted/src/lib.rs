//! The remote daemon: the node's face to the cluster.
//!
//! It measures the node's load, disseminates load information, decides
//! migrations ([`balance`]), and hosts guest bodies ([`host`]). Policy
//! lives in [`balancer`], free of I/O; the event loop and the balancer
//! thread feed it.

pub mod balance;
pub mod balancer;
pub mod host;
pub mod measure;
pub mod net;
pub mod node;
