//! `homed`'s command line (also read by `mosix-docgen` for its man page and
//! completions).

use clap::Parser;
use std::path::PathBuf;

/// The mosix home daemon: the node-local side of every process started on
/// this node with `mosrun`.
///
/// It answers local commands on `<runtime_dir>/homed.sock` (callers are
/// identified by SO_PEERCRED), registers and freezes managed processes on
/// `<runtime_dir>/procs.sock` (checkpoints), and serves other nodes' links
/// (the view) on the `home_listen` address. Run one per node, as root, beside `remoted`.
/// Logs go to stderr; set RUST_LOG (default `info`).
#[derive(Parser)]
#[command(name = "homed", version)]
pub struct Args {
    /// Node configuration file (default: $MOSIX_CONFIG, else
    /// /etc/mosix/mosix.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}
