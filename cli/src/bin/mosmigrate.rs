//! `mosmigrate PID checkpoint|chkstop|chkexit [FILE]`: checkpoint a mosix
//! process of this node now, then let it go on, stop it, or end it.
//!
//! FILE defaults to the process's `mosrun -C` file, else to
//! `<its working directory>/ckpt.<PID>.mosix`. The command prints the path
//! it wrote and returns only when the image is complete on disk. (Moving a
//! process to another node, `mosmigrate PID NODE`, comes with the
//! migration issue.)

use anyhow::{Result, bail};
use clap::{Parser, ValueEnum};
use mosix_cli::client::{Daemon, request_with_timeout};
use mosix_proto::config::Config;
use mosix_proto::control::{ControlRequest, ControlResponse};
use mosix_proto::process::{AfterCheckpoint, ProcessRequest, ProcessResponse};
use std::path::PathBuf;
use std::time::Duration;

/// What to do with the process.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Action {
    /// Write an image and let the process go on.
    Checkpoint,
    /// Write an image and stop the process (SIGSTOP).
    Chkstop,
    /// Write an image and end the process.
    Chkexit,
}

/// Checkpoint a mosix process of this node.
///
/// Writes the image of PID (a process started with mosrun; you may act
/// only on your own, root on all) and then lets it go on, stops it, or
/// ends it. Returns when the image is complete on disk and prints its
/// path. FILE defaults to the one given to `mosrun -C`, else to
/// `<the process's cwd>/ckpt.<pid>.mosix`. Restart with `mosrun -R FILE`.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Node configuration file (default: $MOSIX_CONFIG, else
    /// /etc/mosix/mosix.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The process (its home pid, as mosps shows it).
    pid: i32,
    /// What to do.
    action: Action,
    /// Image file (relative to the current directory).
    file: Option<PathBuf>,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("mosmigrate: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let config = Config::load(args.config.as_deref())?;
    let file = match args.file {
        Some(f) if f.is_relative() => Some(std::env::current_dir()?.join(f)),
        f => f,
    };
    let after = match args.action {
        Action::Checkpoint => AfterCheckpoint::Continue,
        Action::Chkstop => AfterCheckpoint::Stop,
        Action::Chkexit => AfterCheckpoint::Exit,
    };
    let req = ControlRequest::Process {
        request: ProcessRequest::Checkpoint {
            pid: args.pid,
            after,
            file,
        },
    };
    // Writing a large image takes a while; the daemon bounds the freeze.
    match request_with_timeout(&config, Daemon::Homed, &req, Duration::from_secs(3600))? {
        ControlResponse::Process {
            response: ProcessResponse::Checkpointed { done },
        } => {
            println!("{}", done.path.display());
            Ok(())
        }
        ControlResponse::Process {
            response: ProcessResponse::Error { message },
        }
        | ControlResponse::Error { message } => {
            bail!("{message}")
        }
        other => bail!("unexpected answer from homed: {other:?}"),
    }
}
