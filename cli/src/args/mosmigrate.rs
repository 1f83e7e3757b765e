//! `mosmigrate`'s command line (also read by `mosix-docgen` for its man page and
//! completions).

use clap::{Parser, ValueEnum};
use std::path::PathBuf;

/// What to do with the process.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Action {
    /// Write an image and let the process go on.
    Checkpoint,
    /// Write an image and stop the process (SIGSTOP).
    Chkstop,
    /// Write an image and end the process.
    Chkexit,
}

/// Checkpoint a mosix process of this node, or move it to another node.
///
/// Writes the image of PID (a process started with mosrun; you may act
/// only on your own, root on all) and then lets it go on, stops it, or
/// ends it. Returns when the image is complete on disk and prints its
/// path. FILE defaults to the one given to `mosrun -C`, else to
/// `<the process's cwd>/ckpt.<pid>.mosix`. Restart with `mosrun -R FILE`.
/// With a node name (see `mosctl nodes`) instead of an action, the body
/// moves there and PID stays here as its deputy; a body that is away
/// moves on to that node, or comes back with `home` (or this node's name)
/// and is a whole process here again.
#[derive(Parser, Debug)]
#[command(name = "mosmigrate", version)]
pub struct Args {
    /// Node configuration file (default: $MOSIX_CONFIG, else
    /// /etc/mosix/mosix.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The process (its home pid, as mosps shows it).
    pub pid: i32,
    /// What to do: checkpoint, chkstop, chkexit, or a node name.
    pub action: String,
    /// Image file (relative to the current directory).
    pub file: Option<PathBuf>,
}
