//! `mosix-local stop NODE` and `start NODE`: take one node's daemons down
//! and bring them back, leaving its namespaces and cgroups in place - what
//! a machine of a real cluster does when it crashes and reboots.

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;
use std::path::Path;
use std::time::{Duration, Instant};

use super::layout::DAEMONS;
use super::up::start_node_daemons;
use super::{Cluster, bin_dir, net, procs, require_root, run_captured, tail};

/// How long a daemon gets to exit after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(3);

/// How long `start` waits for the node's daemons to answer.
const START_TIMEOUT: Duration = Duration::from_secs(15);

fn open(dir: &Path) -> Result<Cluster> {
    match Cluster::open(dir)? {
        Some(c) => Ok(c),
        None => bail!(
            "no cluster in {}: start one with `mosix-local up --dir {0}`",
            dir.display()
        ),
    }
}

/// Pids of `node`'s daemons that run now, with their names.
fn running(cluster: &Cluster, node: &str) -> Result<Vec<(&'static str, i32)>> {
    let i = cluster.node_index(node)?;
    let netns = procs::ns_id(&net::netns_path(&cluster.layout.node_netns(i)));
    Ok(DAEMONS
        .iter()
        .filter_map(|&d| {
            let pid = procs::read_pid_file(&cluster.layout.pid_path(node, d))?;
            (procs::is_alive(pid) && procs::is_our_daemon(pid, d, netns)).then_some((d, pid))
        })
        .collect())
}

/// Stops `node`'s daemons (SIGTERM, then SIGKILL after a grace period).
pub fn stop(dir: &Path, node: &str) -> Result<()> {
    require_root("stop")?;
    let cluster = open(dir)?;
    let daemons = running(&cluster, node)?;
    let pids: Vec<i32> = daemons.iter().map(|d| d.1).collect();
    procs::signal_all(&pids, Signal::SIGTERM);
    if !procs::wait_gone(&pids, GRACE) {
        procs::signal_all(&pids, Signal::SIGKILL);
        if !procs::wait_gone(&pids, Duration::from_secs(2)) {
            bail!("daemons of {node} (pids {pids:?}) survived SIGKILL");
        }
    }
    for daemon in DAEMONS {
        let _ = std::fs::remove_file(cluster.layout.pid_path(node, daemon));
    }
    for (daemon, pid) in daemons {
        tracing::info!(node, daemon, pid, "stopped");
    }
    Ok(())
}

/// Starts `node`'s daemons again and waits until both answer on the node.
pub fn start(dir: &Path, node: &str) -> Result<()> {
    require_root("start")?;
    let cluster = open(dir)?;
    let already = running(&cluster, node)?;
    if !already.is_empty() {
        bail!(
            "{node} is already running ({already:?}); stop it first with `mosix-local stop --dir {} {node}`",
            dir.display()
        );
    }
    let bins = bin_dir()?;
    let mut children = start_node_daemons(&cluster, &bins, node)?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        for (_, daemon, child) in &mut children {
            if let Some(st) = child.try_wait().context("cannot check a daemon")? {
                bail!(
                    "{daemon} of {node} exited during start-up ({st}); end of its log:\n{}",
                    tail(&cluster.layout.log_path(node, daemon), 30)
                );
            }
        }
        let mut cmd = cluster.node_command(node, &bins.join("mosctl"), false)?;
        cmd.args(["status", "--json"]);
        let out = run_captured(cmd, Duration::from_secs(5))?;
        if out.status.success() && out.stdout.contains("running (pid") {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{node}'s daemons do not answer after {START_TIMEOUT:?}: {}",
                out.stderr.trim()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
