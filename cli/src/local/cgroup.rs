//! Per-node cgroups: a CPU limit (the node's share of one core), plus, where
//! the machine has them as separate v1 hierarchies, `cpuacct` and `memory`
//! groups of the same name so a node can measure its own usage.
//!
//! cgroup v1 groups are made under the caller's own group in each hierarchy
//! (`/proc/self/cgroup`), so a cluster started inside a limited container or
//! session stays inside its limits. cgroup v2 groups are made at the root of
//! the unified tree, because v2 forbids enabling controllers for the
//! children of a group that itself holds processes (the caller's does).

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::mounts::{MountInfo, mounts};
use super::state::{CgroupKind, State};

/// CFS period used for the CPU limit, in microseconds.
pub const PERIOD_US: u64 = 100_000;

/// Smallest CPU share accepted: the kernel's minimum quota is 1 ms.
pub const MIN_SHARE: f64 = 0.01;

/// Largest CPU share accepted, in cores.
pub const MAX_SHARE: f64 = 64.0;

/// v1 controllers given a per-node group, in order; the first is required.
const V1_CONTROLLERS: [&str; 3] = ["cpu", "cpuacct", "memory"];

/// CFS quota, in microseconds per [`PERIOD_US`], for a share of `share` cores.
pub fn quota_us(share: f64) -> Result<u64> {
    if !(MIN_SHARE..=MAX_SHARE).contains(&share) {
        bail!(
            "CPU share {share} is out of range: give a number of cores from {MIN_SHARE} to {MAX_SHARE}"
        );
    }
    Ok((share * PERIOD_US as f64).round() as u64)
}

/// The path of the caller's group in the hierarchy holding `controller`,
/// from the text of `/proc/self/cgroup` (`"0::/x"` for v2 when `controller`
/// is empty).
fn own_group(proc_cgroup: &str, controller: &str) -> Option<String> {
    proc_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        let ctrls = parts.next()?;
        let path = parts.next()?;
        let matches = if controller.is_empty() {
            ctrls.is_empty()
        } else {
            ctrls.split(',').any(|c| c == controller)
        };
        matches.then(|| path.to_owned())
    })
}

/// Directory of the caller's group in a v1 hierarchy mounted at `m`.
fn v1_group_dir(m: &MountInfo, own: &str) -> PathBuf {
    // When the hierarchy is mounted from a sub-tree (containers), the
    // path in /proc/self/cgroup includes the mount's root.
    let rel = if m.root != "/" {
        own.strip_prefix(m.root.as_str()).unwrap_or(own)
    } else {
        own
    };
    m.mount_point.join(rel.trim_start_matches('/'))
}

/// Choose the cgroup interface and the per-cluster base directories
/// (`name` = `mosix-<id>`); nothing is created.
pub fn plan(name: &str) -> Result<(CgroupKind, Vec<PathBuf>)> {
    let all = mounts()?;
    let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .context("cannot read /proc/self/cgroup (is /proc mounted?)")?;
    let mut bases: Vec<PathBuf> = Vec::new();
    for ctrl in V1_CONTROLLERS {
        let found = all
            .iter()
            .find(|m| m.fstype == "cgroup" && m.super_options.split(',').any(|o| o == ctrl));
        let Some(m) = found else {
            if ctrl == V1_CONTROLLERS[0] {
                break; // no v1 cpu hierarchy: try v2
            }
            continue;
        };
        let own = own_group(&proc_cgroup, ctrl).unwrap_or_else(|| "/".to_owned());
        let base = v1_group_dir(m, &own).join(name);
        if !bases.contains(&base) {
            bases.push(base);
        }
    }
    if !bases.is_empty() {
        return Ok((CgroupKind::V1, bases));
    }
    for m in all.iter().filter(|m| m.fstype == "cgroup2") {
        let controllers =
            std::fs::read_to_string(m.mount_point.join("cgroup.controllers")).unwrap_or_default();
        if controllers.split_whitespace().any(|c| c == "cpu") {
            return Ok((CgroupKind::V2, vec![m.mount_point.join(name)]));
        }
    }
    bail!(
        "no cpu cgroup controller found: need a cgroup v1 `cpu` hierarchy or a cgroup v2 tree \
         with `cpu` in cgroup.controllers (mosix-local gives each node its CPU share with it); \
         mount one, e.g. `mount -t cgroup -o cpu cgroup /sys/fs/cgroup/cpu`"
    )
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value)
        .with_context(|| format!("cannot write {value:?} to {}", path.display()))
}

fn mkdir(path: &Path) -> Result<()> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot create cgroup {}", path.display())),
    }
}

/// Create the node cgroups `base/<node>` for every base in `state`, with the
/// CPU limit on the first. Optional hierarchies that fail are skipped with a
/// warning; the CPU one must succeed.
pub fn create(state: &State, nodes: &[String]) -> Result<()> {
    let quota = quota_us(state.cpu_share)?;
    match state.cgroup_kind {
        CgroupKind::V1 => {
            for (k, base) in state.cgroup_bases.iter().enumerate() {
                let made = (|| -> Result<()> {
                    mkdir(base)?;
                    for node in nodes {
                        let dir = base.join(node);
                        mkdir(&dir)?;
                        if k == 0 {
                            write(&dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
                            write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                        }
                    }
                    Ok(())
                })();
                match made {
                    Ok(()) => {}
                    Err(e) if k == 0 => return Err(e),
                    Err(e) => {
                        tracing::warn!(cgroup = %base.display(), "optional cgroup not made: {e:#}")
                    }
                }
            }
        }
        CgroupKind::V2 => {
            let base = state
                .cgroup_bases
                .first()
                .context("state lists no cgroup directory")?;
            let root = base.parent().context("cgroup base has no parent")?;
            write(&root.join("cgroup.subtree_control"), "+cpu")?;
            mkdir(base)?;
            write(&base.join("cgroup.subtree_control"), "+cpu")?;
            let available =
                std::fs::read_to_string(base.join("cgroup.controllers")).unwrap_or_default();
            if available.split_whitespace().any(|c| c == "memory") {
                if let Err(e) = write(&base.join("cgroup.subtree_control"), "+memory") {
                    tracing::warn!("memory accounting per node not enabled: {e:#}");
                }
            }
            for node in nodes {
                let dir = base.join(node);
                mkdir(&dir)?;
                write(&dir.join("cpu.max"), &format!("{quota} {PERIOD_US}"))?;
            }
        }
    }
    Ok(())
}

/// The node's group in the CPU hierarchy: what its configuration names.
pub fn cpu_group(state: &State, node: &str) -> Option<PathBuf> {
    state.cgroup_bases.first().map(|b| b.join(node))
}

/// `cgroup.procs` files of the node's existing groups, one per hierarchy.
pub fn procs_files(state: &State, node: &str) -> Vec<PathBuf> {
    state
        .cgroup_bases
        .iter()
        .map(|b| b.join(node).join("cgroup.procs"))
        .filter(|p| p.exists())
        .collect()
}

/// Pids in the node's groups.
pub fn pids(state: &State, node: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for f in procs_files(state, node) {
        if let Ok(text) = std::fs::read_to_string(&f) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Remove the node groups and then the per-cluster bases, waiting up to
/// `patience` for exiting processes to leave them. Returns the directories
/// that could not be removed, with why.
pub fn remove(state: &State, nodes: &[String], patience: Duration) -> Vec<String> {
    let deadline = Instant::now() + patience;
    let mut dirs: Vec<PathBuf> = Vec::new();
    for base in &state.cgroup_bases {
        // Also any other child (e.g. a node of a larger earlier cluster).
        let mut children: Vec<PathBuf> = nodes.iter().map(|n| base.join(n)).collect();
        if let Ok(rd) = std::fs::read_dir(base) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false)
                    && !children.contains(&e.path())
                {
                    children.push(e.path());
                }
            }
        }
        dirs.extend(children);
        dirs.push(base.clone());
    }
    let mut failed = Vec::new();
    for dir in dirs {
        loop {
            match std::fs::remove_dir(&dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    failed.push(format!("cgroup {}: {e}", dir.display()));
                    break;
                }
            }
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_follows_share_and_rejects_nonsense() {
        assert_eq!(quota_us(0.5).unwrap(), 50_000);
        assert_eq!(quota_us(1.0).unwrap(), 100_000);
        assert_eq!(quota_us(0.01).unwrap(), 1_000);
        assert_eq!(quota_us(2.5).unwrap(), 250_000);
        for bad in [0.0, -1.0, 0.005, 65.0, f64::NAN, f64::INFINITY] {
            assert!(quota_us(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn finds_own_group_per_controller() {
        let text = "12:cpu,cpuacct:/a/b\n4:memory:/box/1\n0::/user.slice\n";
        assert_eq!(own_group(text, "cpu").as_deref(), Some("/a/b"));
        assert_eq!(own_group(text, "cpuacct").as_deref(), Some("/a/b"));
        assert_eq!(own_group(text, "memory").as_deref(), Some("/box/1"));
        assert_eq!(own_group(text, "").as_deref(), Some("/user.slice"));
        assert_eq!(own_group(text, "pids"), None);
    }

    #[test]
    fn group_dir_strips_a_subtree_mount_root() {
        let m = MountInfo {
            root: "/box".into(),
            mount_point: "/sys/fs/cgroup/memory".into(),
            fstype: "cgroup".into(),
            super_options: "rw,memory".into(),
        };
        assert_eq!(
            v1_group_dir(&m, "/box/1"),
            Path::new("/sys/fs/cgroup/memory/1")
        );
        let root = MountInfo {
            root: "/".into(),
            ..m
        };
        assert_eq!(v1_group_dir(&root, "/"), Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(
            v1_group_dir(&root, "/box/1"),
            Path::new("/sys/fs/cgroup/memory/box/1")
        );
    }
}
