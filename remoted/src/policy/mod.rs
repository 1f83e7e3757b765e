//! The balancer's policy: pure state machines (sans-io, ARCHITECTURE.md section
//! 7) and the simulators that drive them. Inputs are ticks, load samples,
//! received messages and process facts; outputs are messages to send and
//! migrations to start. No sockets, no clocks of its own, no thread RNG:
//! time is a monotonic `now_ms` passed in, randomness comes from a seed.
//! What does the I/O lives elsewhere: the event loop ([`crate::net`],
//! [`crate::node`]) drives the load and the dissemination, the balancer
//! thread ([`crate::balancing`]) drives consideration and leaving.
//!
//! - [`load`]: the node's load from run-queue samples.
//! - [`dissemination`]: MOSIX infod-like gossip of load entries, liveness.
//! - [`sim`]: a deterministic in-memory cluster driving many
//!   [`Dissemination`]s, for tests and benchmarks.
//! - [`consider`]: migration consideration: which process moves where.
//! - [`leave`]: which guests must leave (owner back, memory short).
//! - [`params`]: the parameters as `mosctl params` reads and sets them.
//! - [`procsim`]: a deterministic cluster running CPU-bound processes under
//!   all three, for the paper's Table 1 and tests of the policy as a whole.
//!
//! Every parameter the configuration file sets is defined once, with its
//! default, in [`BalancerConfig`] (the file's `[balancer]` section):
//! consideration and leaving take that struct as it is, the dissemination
//! takes its part ([`DisseminationParams::from_config`]). A simulator or a
//! test that needs other values says which.

pub mod consider;
pub mod dissemination;
pub mod leave;
pub mod load;
pub mod params;
pub mod procsim;
pub mod sim;

pub use mosix_proto::config::BalancerConfig;

pub use consider::{
    Consider, ConsiderError, Decision, ExpelPlan, LocalState, Offer, ProcFact, Reason, Refusal,
    Stuck,
};

pub use dissemination::{
    Action, Dissemination, DisseminationError, DisseminationParams, DisseminationStats,
    EntryRejection, NodeView,
};
pub use leave::{GuestFact, LeaveReason, NodeNow};
pub use load::{LoadCalculator, LoadError};
pub use params::ParamError;
