//! `mosps [--json]`: the mosix processes of this node (the caller's; all
//! of them for root).
//!
//! `--json` prints a JSON array of objects with the keys `pid` (home pid),
//! `home` (this node's name), `node` (the node its body runs on now; the
//! home's name when at home), `state` (`running`, `migrating` or
//! `frozen`), `migrations` (how many times it moved), `cantmove` (why it
//! cannot move now, or null), `cmdline` (array of strings), `uid`,
//! `restored` (restarted from an image), `checkpoint_file` (or null),
//! `checkpoint_minutes` and `history`: its last moves and failed attempts,
//! oldest first, each `{at_ms, from, to, why, frozen_ms, bytes, error}`
//! (`error` null for a move that happened). `--history` prints that
//! history under each process in the text form.

use anyhow::{Result, bail};
use clap::Parser;
use mosix_cli::args::mosps::Args;
use mosix_cli::client::{Daemon, request};
use mosix_proto::config::Config;
use mosix_proto::control::{ControlRequest, ControlResponse};
use mosix_proto::process::{MoveRecord, ProcessRequest, ProcessResponse};

fn main() {
    mosix_cli::sys::default_sigpipe();
    if let Err(e) = run(Args::parse()) {
        eprintln!("mosps: {e:#}");
        std::process::exit(1);
    }
}

/// One move as `mosps --history` prints it.
fn history_line(m: &MoveRecord) -> String {
    let when = utc_time_of_day(m.at_ms);
    match &m.error {
        None => format!(
            "{when} {} -> {}: {}, frozen {} ms, {} bytes",
            m.from, m.to, m.why, m.frozen_ms, m.bytes
        ),
        Some(e) => format!("{when} {} -> {} failed: {}; {e}", m.from, m.to, m.why),
    }
}

/// `HH:MM:SS.mmm` UTC of a Unix time in milliseconds (no date library
/// needed for a time of day).
fn utc_time_of_day(ms: u64) -> String {
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}Z",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        ms % 1000
    )
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
            response: ProcessResponse::Error { message, .. },
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
        if let Some(why) = &p.cantmove {
            println!("{:>8} ({why})", "");
        }
        if args.history {
            for m in &p.history {
                println!("{:>8} {}", "", history_line(m));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(error: Option<&str>) -> MoveRecord {
        MoveRecord {
            // 2026-11-30 01:02:03.045 UTC
            at_ms: 1_796_000_523_045,
            from: "n1".into(),
            to: "n2".into(),
            why: "load balancing".into(),
            frozen_ms: 120,
            bytes: 4096,
            error: error.map(str::to_string),
        }
    }

    #[test]
    fn a_move_and_a_failure_read_as_sentences() {
        let t = utc_time_of_day(1_796_000_523_045);
        assert_eq!(
            history_line(&record(None)),
            format!("{t} n1 -> n2: load balancing, frozen 120 ms, 4096 bytes")
        );
        assert_eq!(
            history_line(&record(Some("node n2 refused"))),
            format!("{t} n1 -> n2 failed: load balancing; node n2 refused")
        );
    }

    #[test]
    fn time_of_day_is_utc() {
        assert_eq!(utc_time_of_day(0), "00:00:00.000Z");
        assert_eq!(utc_time_of_day(86_400_000 + 3_723_004), "01:02:03.004Z");
    }
}
