//! `mosctl`: inspect and control the local mosix node.

use anyhow::{Context, Result, bail};
use clap::Parser;
use mosix_cli::args::mosctl::{Cli, Command};
use mosix_cli::client::{Daemon, request};
use mosix_proto::config::Config;
use mosix_proto::control::{ControlRequest, ControlResponse, NodeInfo, NodeState};
use serde::Serialize;
use std::fmt::Write as _;
use std::io::Write as _;

/// The documented JSON form of one node (`mosctl nodes --json`).
#[derive(Serialize)]
struct NodeJson {
    name: String,
    address: String,
    state: &'static str,
    load: f64,
    cpus: f64,
    speed: f64,
    free_mem_bytes: u64,
    last_heard_s: f64,
    accepts_guests: bool,
    guests: u32,
    away: u32,
}

impl From<&NodeInfo> for NodeJson {
    fn from(n: &NodeInfo) -> Self {
        NodeJson {
            name: n.entry.name.clone(),
            address: n.entry.address.to_string(),
            state: match n.state {
                NodeState::Alive => "alive",
                NodeState::Dead => "dead",
            },
            load: round3(n.entry.load),
            cpus: round3(n.entry.cpus),
            speed: round3(n.entry.speed),
            free_mem_bytes: n.entry.free_mem_bytes,
            last_heard_s: round3(n.entry.age_ms as f64 / 1000.0),
            accepts_guests: n.entry.accepts_guests,
            guests: n.entry.guests,
            away: n.entry.away,
        }
    }
}

/// Sorts `n2` before `n10`: the name's text, then its trailing number.
fn natural_key(name: &str) -> (&str, u64, &str) {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (stem, num) = name.split_at(name.len() - digits);
    (stem, num.parse().unwrap_or(0), name)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn main() {
    let mut out = String::new();
    let result = run(&mut out);
    // A closed pipe (`mosctl nodes | head`) ends the output quietly.
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush());
    if let Err(e) = result {
        eprintln!("mosctl: {e:#}");
        std::process::exit(1);
    }
}

fn run(out: &mut String) -> Result<()> {
    let cli = Cli::parse();
    if let Command::Keygen { file } = &cli.command {
        mosix_proto::link::ClusterKey::generate()?
            .write_new(file)
            .with_context(|| format!("cannot write cluster key {}", file.display()))?;
        writeln!(out, "wrote a new cluster key to {}", file.display())?;
        return Ok(());
    }
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Nodes { json } => {
            let ControlResponse::Nodes { mut nodes } =
                request(&config, Daemon::Remoted, &ControlRequest::Nodes)?
            else {
                bail!("remoted answered something other than a node list");
            };
            nodes.sort_by(|a, b| natural_key(&a.entry.name).cmp(&natural_key(&b.entry.name)));
            let rows: Vec<NodeJson> = nodes.iter().map(NodeJson::from).collect();
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
            } else {
                print_table(out, &rows, &nodes)?;
            }
        }
        Command::Status { json } => {
            let ControlResponse::Status { status } =
                request(&config, Daemon::Remoted, &ControlRequest::Status)?
            else {
                bail!("remoted answered something other than a status");
            };
            let home = request(&config, Daemon::Homed, &ControlRequest::HomeStatus);
            let homed = match &home {
                Ok(ControlResponse::HomeStatus { status }) => {
                    format!("running (pid {})", status.pid)
                }
                Ok(_) => "answered oddly".to_string(),
                Err(e) => format!("not answering: {e:#}"),
            };
            if json {
                let doc = serde_json::json!({
                    "node": NodeJson::from(&NodeInfo {
                        entry: status.entry.clone(),
                        state: NodeState::Alive,
                        is_self: true,
                    }),
                    "load_source": status.load_source,
                    "alive_nodes": status.alive_nodes,
                    "known_nodes": status.known_nodes,
                    "protocol": status.protocol,
                    "homed": homed,
                });
                writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
            } else {
                let e = &status.entry;
                writeln!(out, "node        {}", e.name)?;
                writeln!(out, "address     {}", e.address)?;
                writeln!(out, "load        {:.3}", e.load)?;
                writeln!(out, "cpus        {:.3}", e.cpus)?;
                writeln!(out, "speed       {:.3}", e.speed)?;
                writeln!(out, "free memory {}", human_bytes(e.free_mem_bytes))?;
                writeln!(out, "measured on {}", status.load_source)?;
                writeln!(
                    out,
                    "cluster     {} alive of {} known",
                    status.alive_nodes, status.known_nodes
                )?;
                writeln!(out, "protocol    {}", status.protocol)?;
                writeln!(out, "homed       {homed}")?;
            }
        }
        Command::Block | Command::Unblock | Command::Expel => {
            let req = match cli.command {
                Command::Block => ControlRequest::Block,
                Command::Unblock => ControlRequest::Unblock,
                _ => ControlRequest::Expel,
            };
            let ControlResponse::Done { message } = request(&config, Daemon::Remoted, &req)? else {
                bail!("remoted answered something other than done");
            };
            writeln!(out, "{message}")?;
        }
        Command::Params { set, json } => {
            let ControlResponse::Params { params } =
                request(&config, Daemon::Remoted, &ControlRequest::Params { set })?
            else {
                bail!("remoted answered something other than the parameters");
            };
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&params)?)?;
            } else {
                for p in &params {
                    writeln!(out, "{:<22} {:<12} {}", p.key, p.value, p.about)?;
                }
            }
        }
        Command::Keygen { .. } => unreachable!("handled before loading the configuration"),
    }
    Ok(())
}

fn print_table(out: &mut String, rows: &[NodeJson], nodes: &[NodeInfo]) -> std::fmt::Result {
    writeln!(
        out,
        "{:<12} {:<22} {:<6} {:>7} {:>6} {:>6} {:>10} {:>8} {:>6} {:>6} {:>5}",
        "NODE",
        "ADDRESS",
        "STATE",
        "LOAD",
        "CPUS",
        "SPEED",
        "FREE MEM",
        "HEARD",
        "GUESTS",
        "AWAY",
        "BLOCK"
    )?;
    for (r, n) in rows.iter().zip(nodes) {
        let name = if n.is_self {
            format!("{}*", r.name)
        } else {
            r.name.clone()
        };
        writeln!(
            out,
            "{:<12} {:<22} {:<6} {:>7.2} {:>6.2} {:>6.2} {:>10} {:>7.1}s {:>6} {:>6} {:>5}",
            name,
            r.address,
            r.state,
            r.load,
            r.cpus,
            r.speed,
            human_bytes(r.free_mem_bytes),
            r.last_heard_s,
            r.guests,
            r.away,
            if r.accepts_guests { "no" } else { "yes" }
        )?;
    }
    Ok(())
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

#[cfg(test)]
mod tests {
    use super::natural_key;

    #[test]
    fn nodes_sort_by_their_number() {
        let mut names = vec!["n10", "n2", "n1", "b", "a3", "n"];
        names.sort_by_key(|n| natural_key(n));
        assert_eq!(names, ["a3", "b", "n", "n1", "n2", "n10"]);
    }
}
