//! `mosrun`'s command line (also read by `mosix-docgen` for its man page and
//! completions).

use clap::Parser;
use std::ffi::OsString;
use std::path::PathBuf;

/// Run a program under mosix, restart it from a checkpoint image, or show
/// an image.
///
/// `mosrun [-C FILE [-A MINUTES]] -- prog args` registers with this node's
/// homed and runs prog in place (same pid, same parent) with libmosix.so
/// preloaded, so it can be checkpointed (`mosmigrate PID checkpoint`).
/// Images are written whole under a temporary name and renamed, so a file
/// of the final name is always complete. Without -C, checkpoints go to
/// `<the process's cwd>/ckpt.<pid>.mosix` unless mosmigrate names a file.
///
/// `mosrun -R FILE` restarts the saved process in this process: regular
/// files are re-opened by path at their offsets (an error if one is
/// missing or changed size), fds 0-2 that were a terminal or pipe are this
/// terminal's, other pipes and sockets become /dev/null unless -O says
/// otherwise. Exit status 125 means mosrun itself failed.
#[derive(Parser, Debug)]
#[command(name = "mosrun", version, disable_help_flag = true)]
pub struct Args {
    /// Print help (`-h` is "stay home", as in MOSIX).
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// Node configuration file (default: $MOSIX_CONFIG, else
    /// /etc/mosix/mosix.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Checkpoint file of the new process (default for `mosmigrate PID
    /// checkpoint` and for periodic checkpoints).
    #[arg(short = 'C', value_name = "FILE", conflicts_with_all = ["restart", "inspect"])]
    pub checkpoint: Option<PathBuf>,
    /// Take a checkpoint every MINUTES (needs -C).
    #[arg(short = 'A', value_name = "MINUTES", requires = "checkpoint")]
    pub minutes: Option<u32>,
    /// Never migrate the program automatically (the balancer leaves it
    /// where it is; `mosmigrate` still moves it). Its children inherit this.
    #[arg(short = 'L', conflicts_with_all = ["restart", "inspect"])]
    pub no_auto: bool,
    /// Start at the best node now: the program starts here, and a helper
    /// asks homed at once to move it to the node where it would progress
    /// fastest by the current load vector (it stays here if none is
    /// clearly better).
    #[arg(short = 'b', conflicts_with_all = ["restart", "inspect", "no_auto"])]
    pub best: bool,
    /// Start here and move to NODE at once (see `mosctl nodes`); it runs
    /// there from its first moments, and stays subject to balancing
    /// unless -L.
    #[arg(short = 'r', value_name = "NODE", conflicts_with_all = ["restart", "inspect", "best", "stay_home"])]
    pub run_on: Option<String>,
    /// Stay home until moved by hand: the balancer leaves it here until
    /// someone runs `mosmigrate` on it, then treats it like any other.
    #[arg(short = 'h', conflicts_with_all = ["restart", "inspect", "best", "no_auto"])]
    pub stay_home: bool,
    /// Restart the process saved in FILE.
    #[arg(short = 'R', value_name = "FILE", conflicts_with = "inspect")]
    pub restart: Option<PathBuf>,
    /// With -R: attach fd FD of the restarted process to PATH.
    #[arg(short = 'O', value_name = "FD=PATH", requires = "restart")]
    pub open: Vec<String>,
    /// Show what the image FILE holds.
    #[arg(short = 'I', value_name = "FILE")]
    pub inspect: Option<PathBuf>,
    /// With -I: print JSON.
    #[arg(long, requires = "inspect")]
    pub json: bool,
    /// The program and its arguments.
    #[arg(last = true, value_name = "PROG ARGS")]
    pub command: Vec<OsString>,
}
