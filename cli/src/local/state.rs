//! The cluster's state file, `<dir>/cluster.state`.
//!
//! `up` creates it (exclusively, so it doubles as the "a cluster runs here"
//! lock) before it creates anything on the machine, and records there
//! everything it is about to create; `down` reads it to know what to remove
//! and deletes it last. So any namespace, mount or cgroup made for a
//! directory is always findable from that directory, even after a crash.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Version of the state file's format.
const VERSION: u32 = 1;

/// Which cgroup interface the nodes' cgroups were made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupKind {
    /// cgroup v1: one directory per hierarchy (cpu, cpuacct, memory).
    V1,
    /// cgroup v2: one unified directory.
    V2,
}

/// What `up` made (or was about to make) for one cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Format version.
    pub version: u32,
    /// Canonical cluster directory.
    pub dir: PathBuf,
    /// Cluster id (see `layout::cluster_id`).
    pub id: String,
    /// Number of nodes: `n1..=nodes`.
    pub nodes: u32,
    /// CPU share per node, in cores.
    pub cpu_share: f64,
    /// cgroup interface used.
    pub cgroup_kind: CgroupKind,
    /// Per-cluster cgroup directories, one per hierarchy; the first holds
    /// the CPU limit. Node cgroups are `<base>/<node>`.
    pub cgroup_bases: Vec<PathBuf>,
    /// Whether `up` got as far as bind-mounting the directory onto itself.
    pub dir_bound: bool,
    /// Number of mounts on the directory before `up` bound it onto itself
    /// (so `down` unmounts only its own).
    pub dir_mounts_before: usize,
}

impl State {
    /// A fresh state for `nodes` nodes.
    pub fn new(
        dir: &Path,
        id: &str,
        nodes: u32,
        cpu_share: f64,
        cgroup_kind: CgroupKind,
        cgroup_bases: Vec<PathBuf>,
    ) -> State {
        State {
            version: VERSION,
            dir: dir.to_path_buf(),
            id: id.to_owned(),
            nodes,
            cpu_share,
            cgroup_kind,
            cgroup_bases,
            dir_bound: false,
            dir_mounts_before: 0,
        }
    }

    /// Create the state file; fails if one exists (a cluster runs there).
    pub fn create(&self, path: &Path) -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(path)
            .with_context(|| format!("cannot create state file {}", path.display()))?;
        f.write_all(&self.to_bytes()?)
            .with_context(|| format!("cannot write state file {}", path.display()))
    }

    /// Replace the state file atomically (write a temporary, rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("state.tmp");
        std::fs::write(&tmp, self.to_bytes()?)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
    }

    /// Read the state file; `Ok(None)` if there is none.
    pub fn load(path: &Path) -> Result<Option<State>> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", path.display()));
            }
        };
        let state: State = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "state file {} is damaged; remove it by hand after checking \
                 `ip netns list` and /proc/mounts for leftovers",
                path.display()
            )
        })?;
        if state.version != VERSION {
            bail!(
                "state file {} has format version {}, this mosix-local reads {VERSION}; \
                 run `down` with the mosix-local that ran `up`",
                path.display(),
                state.version
            );
        }
        Ok(Some(state))
    }

    fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut v = serde_json::to_vec_pretty(self).context("cannot encode cluster state")?;
        v.push(b'\n');
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_is_exclusive_and_save_load_round_trip() {
        let dir = std::env::temp_dir().join(format!("mosix-local-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cluster.state");
        let _ = std::fs::remove_file(&path);
        assert!(State::load(&path).unwrap().is_none());
        let mut s = State::new(
            &dir,
            "abcd",
            3,
            0.5,
            CgroupKind::V1,
            vec!["/sys/fs/cgroup/cpu/mosix-abcd".into()],
        );
        s.create(&path).unwrap();
        assert!(s.create(&path).is_err(), "second create must fail");
        s.dir_bound = true;
        s.save(&path).unwrap();
        assert_eq!(State::load(&path).unwrap(), Some(s));
        std::fs::write(&path, b"{ not json").unwrap();
        let err = State::load(&path).unwrap_err();
        assert!(format!("{err:#}").contains("damaged"), "{err:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
