//! `mosmon`'s command line (also read by `mosix-docgen` for its man page and
//! completions).

use clap::Parser;
use std::path::PathBuf;

/// Watch the cluster: a bar per node for its load, with its CPUs, speed,
/// free memory, guests and own processes away, refreshed each second.
///
/// Keys: `l` load, `m` free memory, `g` guests and processes away, `q` or
/// Esc quit. A node marked `*` is this one, `!` refuses guests (mosctl
/// block). `--once` prints one text snapshot of every view; `--json` one
/// JSON document (its keys are in the README).
#[derive(Parser)]
#[command(name = "mosmon", version, after_help = AFTER_HELP)]
pub struct Args {
    /// Node configuration file (default: $MOSIX_CONFIG, else
    /// /etc/mosix/mosix.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print one text snapshot and exit.
    #[arg(long, conflicts_with = "json")]
    pub once: bool,
    /// Print one JSON document and exit.
    #[arg(long)]
    pub json: bool,
    /// Refresh interval of the live view, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub interval_ms: u64,
}

/// Shown after the options by both `-h` and `--help`.
pub const AFTER_HELP: &str = "Keys in the live view: l load, m free memory, g guests and processes away, q or Esc quit.\n\
The title shows when the figures were last refreshed (UTC).";
