//! `mosix-local down`: stop and remove everything a cluster made, after a
//! clean `up`, a failed one or a crash. Idempotent; logs are kept.

use anyhow::{Result, bail};
use nix::sys::signal::Signal;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::layout::{DAEMONS, Layout, node_index, node_name};
use super::state::State;
use super::{cgroup, mounts, net, procs, require_root, resolve_dir};

/// How long a daemon gets to exit after SIGTERM.
const GRACE: Duration = Duration::from_secs(3);

/// How long leftover processes get to die after SIGKILL.
const KILL_PATIENCE: Duration = Duration::from_secs(5);

/// Remove the cluster in `dir`. Succeeds quietly if there is none.
pub fn down(dir: &Path) -> Result<()> {
    let dir = resolve_dir(dir)?;
    let layout = Layout::new(&dir);
    let state = match State::load(&layout.state_path()) {
        Ok(Some(s)) => s,
        Ok(None) => {
            if dir.exists() {
                // Nothing was made for this directory (the state file is
                // written before anything else), except perhaps stray pins.
                unmount_strays(&layout)?;
            }
            return Ok(());
        }
        Err(e) => {
            require_root("down")?;
            tracing::warn!("{e:#}; cleaning up what can be found instead");
            reconstruct(&layout)?
        }
    };
    require_root("down")?;
    tracing::info!(dir = %dir.display(), id = %layout.id, "removing cluster");

    // Every node name this directory may have used.
    let mut indexes: Vec<u32> = (1..=state.nodes).collect();
    for name in net::netns_with_prefix(&layout.netns_prefix()) {
        if let Some(i) = name
            .strip_prefix(&layout.netns_prefix())
            .and_then(node_index)
        {
            indexes.push(i);
        }
    }
    indexes.sort_unstable();
    indexes.dedup();
    let nodes: Vec<(u32, String)> = indexes.iter().map(|&i| (i, node_name(i))).collect();
    let names: Vec<String> = nodes.iter().map(|(_, n)| n.clone()).collect();
    let mut failures: Vec<String> = Vec::new();

    // 1. The daemons, politely, all at once.
    let mut daemons: Vec<(String, &str, i32)> = Vec::new();
    for (i, node) in &nodes {
        let netns = procs::ns_id(&net::netns_path(&layout.node_netns(*i)));
        for daemon in DAEMONS {
            let Some(pid) = procs::read_pid_file(&layout.pid_path(node, daemon)) else {
                continue;
            };
            if procs::is_alive(pid) && procs::is_our_daemon(pid, daemon, netns) {
                daemons.push((node.clone(), daemon, pid));
            }
        }
    }
    let pids: Vec<i32> = daemons.iter().map(|d| d.2).collect();
    procs::signal_all(&pids, Signal::SIGTERM);
    if !procs::wait_gone(&pids, GRACE) {
        procs::signal_all(&pids, Signal::SIGKILL);
        procs::wait_gone(&pids, Duration::from_secs(2));
    }
    for (node, daemon, pid) in daemons {
        if procs::is_alive(pid) {
            failures.push(format!("{daemon} of {node} (pid {pid}) survived SIGKILL"));
        } else {
            tracing::info!(node = %node, daemon, pid, "stopped");
        }
    }

    // 2. Everything else in a node: by cgroup, network or mount namespace.
    let mut namespaces: HashSet<procs::NsId> = HashSet::new();
    for (i, node) in &nodes {
        namespaces.extend(procs::ns_id(&net::netns_path(&layout.node_netns(*i))));
        let pin = layout.mnt_ns_path(node);
        if mounts::mount_count(&pin)? > 0 {
            namespaces.extend(procs::ns_id(&pin));
        }
    }
    namespaces.extend(procs::ns_id(&net::netns_path(&layout.hub_netns())));
    let deadline = Instant::now() + KILL_PATIENCE;
    loop {
        let mut pids = procs::pids_in_namespaces(&namespaces);
        for node in &names {
            pids.extend(cgroup::pids(&state, node));
        }
        let me = std::process::id() as i32;
        pids.retain(|&p| p != me && procs::is_alive(p));
        pids.sort_unstable();
        pids.dedup();
        if pids.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            failures.push(format!(
                "processes {pids:?} still run in the nodes after SIGKILL"
            ));
            break;
        }
        tracing::info!(?pids, "killing leftover processes");
        procs::signal_all(&pids, Signal::SIGKILL);
        procs::wait_gone(&pids, Duration::from_millis(500));
    }

    // 3. Network namespaces (the veth pairs go with them).
    let mut netns: Vec<String> = nodes.iter().map(|(i, _)| layout.node_netns(*i)).collect();
    netns.push(layout.hub_netns());
    netns.extend(net::netns_with_prefix(&layout.netns_prefix()));
    netns.sort();
    netns.dedup();
    for name in netns {
        if let Err(e) = net::delete_netns(&name) {
            failures.push(format!("{e:#}"));
        }
    }

    // 4. Mount-namespace pins, then the directory's own bind mount.
    if let Err(e) = unmount_strays(&layout) {
        failures.push(format!("{e:#}"));
    }
    if state.dir_bound {
        match mounts::mount_count(&dir) {
            Ok(n) if n > state.dir_mounts_before => {
                if let Err(e) = mounts::unmount(&dir) {
                    failures.push(format!("{e:#}"));
                }
            }
            Ok(_) => {}
            Err(e) => failures.push(format!("{e:#}")),
        }
    }

    // 5. cgroups, once their processes are gone.
    failures.extend(cgroup::remove(&state, &names, Duration::from_secs(3)));

    // 6. Files: pid files, pins and the key go; configs and logs stay.
    let mut files: Vec<PathBuf> = vec![layout.key_path()];
    for (_, node) in &nodes {
        files.push(layout.mnt_ns_path(node));
        files.push(layout.time_ns_path(node));
        for daemon in DAEMONS {
            files.push(layout.pid_path(node, daemon));
        }
    }
    for f in files {
        match std::fs::remove_file(&f) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => failures.push(format!("cannot remove {}: {e}", f.display())),
        }
    }

    if !failures.is_empty() {
        bail!(
            "could not remove everything of the cluster in {} (its state file is kept, so \
             `down` can be run again):\n  {}",
            dir.display(),
            failures.join("\n  ")
        );
    }
    match std::fs::remove_file(layout.state_path()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => bail!("cannot remove {}: {e}", layout.state_path().display()),
    }
    tracing::info!(dir = %dir.display(), "cluster removed");
    Ok(())
}

/// Unmount every `mnt.ns` and `time.ns` pin under the directory (however
/// many nodes).
fn unmount_strays(layout: &Layout) -> Result<()> {
    let pins: Vec<PathBuf> = mounts::mounts()?
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| {
            p.parent().and_then(Path::parent) == Some(layout.dir.as_path())
                && p.file_name()
                    .is_some_and(|f| f == "mnt.ns" || f == "time.ns")
        })
        .collect();
    for pin in pins {
        // The same pin can be stacked if `up` was run twice by hand.
        while mounts::unmount(&pin)? {}
    }
    Ok(())
}

/// Best guess of what `up` made, when the state file is unreadable.
fn reconstruct(layout: &Layout) -> Result<State> {
    let (kind, bases) = cgroup::plan(&layout.cgroup_name())?;
    let mut nodes = 0;
    if let Ok(rd) = std::fs::read_dir(&layout.dir) {
        for e in rd.flatten() {
            if let Some(i) = e.file_name().to_str().and_then(node_index) {
                nodes = nodes.max(i);
            }
        }
    }
    let mut s = State::new(&layout.dir, &layout.id, nodes, 1.0, kind, bases);
    // Unmount the directory only if a bind of it seems to be there.
    let count = mounts::mount_count(&layout.dir)?;
    s.dir_bound = count > 0;
    s.dir_mounts_before = count.saturating_sub(1);
    Ok(s)
}
