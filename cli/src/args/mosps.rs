//! `mosps`'s command line (also read by `mosix-docgen` for its man page and
//! completions).

use clap::Parser;
use std::path::PathBuf;

/// List the mosix processes of this node: yours, or all for root.
///
/// --json prints a list of objects with the keys `pid` (home pid), `home`
/// and `node` (node names: where it started, where it runs now), `state`
/// (running, migrating, frozen), `migrations`, `cantmove` (a reason or
/// null), `cmdline` (a list of strings) and `history` (its last moves:
/// `at_ms`, `from`, `to`, `why`, `frozen_ms`, `bytes`, `error`), among
/// others; that form is stable for scripts.
#[derive(Parser, Debug)]
#[command(name = "mosps", version)]
pub struct Args {
    /// Node configuration file (default: $MOSIX_CONFIG, else
    /// /etc/mosix/mosix.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Under each process, list its last moves: when, from where to where,
    /// why, how long it was frozen, or why the move failed.
    #[arg(long)]
    pub history: bool,
}
