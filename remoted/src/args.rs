//! `remoted`'s command line (also read by `mosix-docgen` for its man page and
//! completions).

use clap::Parser;
use std::path::PathBuf;

/// The mosix remote daemon: this node's face to the cluster.
///
/// It measures the node's load and capacity (from a cgroup when
/// `load.cgroup` is set, else from the machine), exchanges load information
/// with the other nodes over authenticated, encrypted links, and answers
/// `mosctl` on `<runtime_dir>/remoted.sock`. Run one per node, as root,
/// beside `homed`. Logs go to stderr; set RUST_LOG (default `info`).
#[derive(Parser)]
#[command(name = "remoted", version)]
pub struct Args {
    /// Node configuration file (default: $MOSIX_CONFIG, else
    /// /etc/mosix/mosix.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Measure this machine's relative CPU speed (1.0 = reference core),
    /// print it and exit; needs no configuration.
    #[arg(long)]
    pub measure_speed: bool,
}
