//! `mosmigrate PID checkpoint|chkstop|chkexit [FILE]`: checkpoint a mosix
//! process of this node now, then let it go on, stop it, or end it.
//! `mosmigrate PID NODE|home`: move its body to node NODE (it stays here
//! as its deputy), on from one node to another, or back home.
//!
//! FILE defaults to the process's `mosrun -C` file, else to
//! `<its working directory>/ckpt.<PID>.mosix`. The command prints the path
//! it wrote and returns only when the image is complete on disk.

use anyhow::{Result, bail};
use clap::{Parser, ValueEnum};
use mosix_cli::args::mosmigrate::{Action, Args};
use mosix_cli::client::{Daemon, request_with_timeout};
use mosix_proto::config::Config;
use mosix_proto::control::{ControlRequest, ControlResponse};
use mosix_proto::process::MigrateDone;
use mosix_proto::process::{AfterCheckpoint, ProcessRequest, ProcessResponse};
use std::time::Duration;

fn main() {
    mosix_cli::sys::default_sigpipe();
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
    let action = match Action::from_str(&args.action, true) {
        Ok(a) => a,
        Err(_) => return migrate(&config, args.pid, &args.action),
    };
    let after = match action {
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
            response: ProcessResponse::Error { message, .. },
        }
        | ControlResponse::Error { message } => {
            bail!("{message}")
        }
        other => bail!("unexpected answer from homed: {other:?}"),
    }
}

/// Move the body of `pid` to `node` (its address from this node's remoted).
fn migrate(config: &Config, pid: i32, node: &str) -> Result<()> {
    let nodes = match request_with_timeout(
        config,
        Daemon::Remoted,
        &ControlRequest::Nodes,
        Duration::from_secs(10),
    )? {
        ControlResponse::Nodes { nodes } => nodes,
        ControlResponse::Error { message } => bail!("remoted: {message}"),
        other => bail!("unexpected answer from remoted: {other:?}"),
    };
    let home = node == "home" || nodes.iter().any(|n| n.is_self && n.entry.name == node);
    if home {
        return send_migrate(config, pid, "home", "");
    }
    let Some(n) = nodes.iter().find(|n| n.entry.name == node) else {
        let names: Vec<&str> = nodes.iter().map(|n| n.entry.name.as_str()).collect();
        bail!(
            "{node} is neither checkpoint, chkstop, chkexit nor a known node (known: {})",
            names.join(", ")
        );
    };
    send_migrate(config, pid, node, &n.entry.address.to_string())
}

/// Ask homed to move `pid` to `node` at `address` ("home": back home).
fn send_migrate(config: &Config, pid: i32, node: &str, address: &str) -> Result<()> {
    let req = ControlRequest::Process {
        request: ProcessRequest::Migrate {
            pid,
            node: node.to_string(),
            address: address.to_string(),
            automatic: false,
        },
    };
    match request_with_timeout(config, Daemon::Homed, &req, Duration::from_secs(3600))? {
        ControlResponse::Process {
            response: ProcessResponse::Migrated { done },
        } => {
            let MigrateDone {
                node,
                body_pid,
                bytes,
                frozen_ms,
                ..
            } = done;
            if node == "home" {
                println!("{pid} is home again, {bytes} bytes moved, frozen {frozen_ms} ms");
            } else {
                println!(
                    "{pid} runs on {node} (pid {body_pid} there), {bytes} bytes moved, frozen {frozen_ms} ms"
                );
            }
            Ok(())
        }
        ControlResponse::Process {
            response: ProcessResponse::Error { message, .. },
        }
        | ControlResponse::Error { message } => bail!("{message}"),
        other => bail!("unexpected answer from homed: {other:?}"),
    }
}
