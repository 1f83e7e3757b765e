//! The remote daemon: the node's face to the cluster.
//!
//! It measures the node's load ([`measure`], [`node`]), disseminates load
//! information ([`net`], the event loop), decides migrations and starts
//! them ([`balancing`], the balancer thread), and hosts guest bodies
//! ([`host`]). The balancer's decisions themselves are made in [`policy`]:
//! pure state machines free of I/O (load, dissemination, migration
//! consideration, guests leaving) and the simulators that drive them in
//! tests and benchmarks; the event loop and the balancer thread feed them.

pub mod args;
pub mod balancing;
pub mod host;
pub mod measure;
pub mod metrics;
pub mod net;
pub mod node;
pub mod policy;
