//! `mosix-local status`: the nodes of a cluster and whether their daemons run.

use anyhow::Result;
use std::fmt::Write as _;
use std::path::Path;

use super::layout::{DAEMONS, node_addr};
use super::{Cluster, mounts, net, procs};

/// A report of the cluster in `dir`, one line per node.
pub fn status(dir: &Path) -> Result<String> {
    let Some(cluster) = Cluster::open(dir)? else {
        return Ok(format!(
            "no cluster in {}\n",
            super::resolve_dir(dir)?.display()
        ));
    };
    let l = &cluster.layout;
    let s = &cluster.state;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cluster {} in {}: {} node(s), {} core(s) each",
        l.id,
        l.dir.display(),
        s.nodes,
        s.cpu_share
    );
    let _ = writeln!(
        out,
        "{:<5} {:<12} {:<6} {:<6} {:<16} {:<16}",
        "node", "address", "netns", "mntns", "homed", "remoted"
    );
    for (k, node) in cluster.node_names().iter().enumerate() {
        let i = k as u32 + 1;
        let yes_no = |b: bool| if b { "yes" } else { "NO" };
        let netns = net::netns_path(&l.node_netns(i)).exists();
        let mntns = mounts::mount_count(&l.mnt_ns_path(node))? > 0;
        let daemons: Vec<String> = DAEMONS
            .iter()
            .map(|d| match procs::read_pid_file(&l.pid_path(node, d)) {
                Some(pid) if procs::is_alive(pid) => format!("{pid} running"),
                Some(pid) => format!("{pid} EXITED"),
                None => "not started".to_owned(),
            })
            .collect();
        let _ = writeln!(
            out,
            "{:<5} {:<12} {:<6} {:<6} {:<16} {:<16}",
            node,
            node_addr(i).to_string(),
            yes_no(netns),
            yes_no(mntns),
            daemons[0],
            daemons[1]
        );
    }
    Ok(out)
}
