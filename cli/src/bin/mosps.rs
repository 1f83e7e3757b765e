//! `mosps [--json]`: the mosix processes of this node (the caller's; all
//! of them for root).
//!
//! `--json` prints a JSON array of objects with the keys `pid` (home pid),
//! `cmdline` (array of strings), `uid`, `location` ("here" until the
//! migration issue), `restored` (restarted from an image),
//! `checkpoint_file` (or null), `checkpoint_minutes` and `cantmove` (why
//! it cannot be frozen now, or null).

use anyhow::{Result, bail};
use clap::Parser;
use mosix_cli::client::{Daemon, request};
use mosix_proto::config::Config;
use mosix_proto::control::{ControlRequest, ControlResponse};
use mosix_proto::process::{ProcessRequest, ProcessResponse};
use std::path::PathBuf;

/// List the mosix processes of this node: yours, or all for root.
///
/// --json prints a list of objects with at least the keys `pid` (home pid)
/// and `cmdline` (a list of strings); that form is stable for scripts.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Node configuration file (default: $MOSIX_CONFIG, else
    /// /etc/mosix/mosix.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn main() {
    mosix_cli::sys::default_sigpipe();
    if let Err(e) = run(Args::parse()) {
        eprintln!("mosps: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let config = Config::load(args.config.as_deref())?;
    let req = ControlRequest::Process {
        request: ProcessRequest::List,
    };
    let processes = match request(&config, Daemon::Homed, &req)? {
        ControlResponse::Process {
            response: ProcessResponse::List { processes },
        } => processes,
        ControlResponse::Process {
            response: ProcessResponse::Error { message },
        }
        | ControlResponse::Error { message } => {
            bail!("{message}")
        }
        other => bail!("unexpected answer from homed: {other:?}"),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&processes)?);
        return Ok(());
    }
    println!(
        "{:>8} {:>6} {:<6} {:<10} COMMAND",
        "PID", "UID", "WHERE", "FREEZE"
    );
    for p in processes {
        let freeze = if p.cantmove.is_some() {
            "cantmove"
        } else {
            "ok"
        };
        println!(
            "{:>8} {:>6} {:<6} {:<10} {}",
            p.pid,
            p.uid,
            p.location,
            freeze,
            p.cmdline.join(" ")
        );
        if let Some(why) = p.cantmove {
            println!("{:>8} {:>6} {:<6} {:<10} ({why})", "", "", "", "");
        }
    }
    Ok(())
}
