//! `mosps [--json]`: the mosix processes of this node (the caller's; all
//! of them for root).
//!
//! `--json` prints a JSON array of objects with the keys `pid` (home pid),
//! `home` (this node's name), `node` (the node its body runs on now; the
//! home's name when at home), `state` (`running`, `migrating` or
//! `frozen`), `migrations` (how many times it moved), `cantmove` (why it
//! cannot move now, or null), `cmdline` (array of strings), `uid`,
//! `restored` (restarted from an image), `checkpoint_file` (or null) and
//! `checkpoint_minutes`.

use anyhow::{Result, bail};
use clap::Parser;
use mosix_cli::client::{Daemon, request};
use mosix_proto::config::Config;
use mosix_proto::control::{ControlRequest, ControlResponse};
use mosix_proto::process::{ProcessRequest, ProcessResponse};
use std::path::PathBuf;

/// List the mosix processes of this node: yours, or all for root.
///
/// --json prints a list of objects with the keys `pid` (home pid), `home`
/// and `node` (node names: where it started, where it runs now), `state`
/// (running, migrating, frozen), `migrations`, `cantmove` (a reason or
/// null) and `cmdline` (a list of strings), among others; that form is
/// stable for scripts.
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
        "{:>8} {:>6} {:<8} {:<9} {:>5} {:<8} COMMAND",
        "PID", "UID", "NODE", "STATE", "MIGR", "MOVE"
    );
    for p in processes {
        let movable = if p.cantmove.is_some() {
            "cantmove"
        } else {
            "ok"
        };
        println!(
            "{:>8} {:>6} {:<8} {:<9} {:>5} {:<8} {}",
            p.pid,
            p.uid,
            p.node,
            p.state,
            p.migrations,
            movable,
            p.cmdline.join(" ")
        );
        if let Some(why) = p.cantmove {
            println!("{:>8} ({why})", "");
        }
    }
    Ok(())
}
