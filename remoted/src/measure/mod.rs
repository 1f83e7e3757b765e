//! Load measurement: the I/O side of load calculation (ARCHITECTURE.md sections 7
//! and 8). It reads what the kernel says about the node's CPUs, run queue and
//! memory; [`crate::policy::load`] turns the samples into a load.
//!
//! A node is either the whole machine or, when the node runs in a cgroup (the
//! local test cluster gives each node one with a CPU share), that cgroup:
//!
//! | figure | machine | cgroup |
//! |---|---|---|
//! | capacity (CPUs) | online CPUs (`cpuN` lines of `/proc/stat`) | quota / period of the cgroup and its ancestors (smallest), or the machine's CPUs if unlimited |
//! | run queue | `procs_running` of `/proc/stat` | threads in state `R` among the cgroup's threads (v1 `tasks`, v2 `cgroup.threads`, sub-cgroups included) |
//! | free memory | `MemAvailable` | the smaller of `MemAvailable` and the memory cgroup's headroom (limit - usage) |
//!
//! The thread that takes a run-queue sample is running while it does, so it
//! is not counted: in the machine case one is subtracted, in the cgroup case
//! the calling thread's id is skipped.
//!
//! The paths are parameters (a `/proc` root and the cgroup directory), so
//! the logic is tested on fake trees in a temporary directory.

pub mod parse;
mod speed;

pub use speed::{REFERENCE_NS, SPEED_ROUNDS, measure_speed};

use std::path::{Path, PathBuf};

/// Deepest sub-cgroup nesting searched for tasks.
const MAX_CGROUP_DEPTH: usize = 16;

/// Why a figure could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    /// could not read a kernel file; check that /proc and the cgroup file system are mounted and readable
    #[error(
        "could not read {path}: {error}; check that /proc and the cgroup file system are mounted and readable"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said (in the message, so not also a `source()`).
        error: std::io::Error,
    },
    /// a kernel file does not hold what the kernel documents
    #[error("{path} does not hold {what} as expected; is this a Linux /proc or cgroup file?")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What we looked for.
        what: &'static str,
    },
    /// the configured cgroup directory is neither a v1 cpu cgroup nor a v2 cgroup
    #[error(
        "{0} is neither a cgroup v1 cpu controller directory (no cpu.cfs_quota_us) nor a cgroup v2 directory (no cgroup.threads); give the node's cgroup directory, or none to measure the whole machine"
    )]
    NotACgroup(PathBuf),
}

fn read(path: &Path) -> Result<String, MeasureError> {
    std::fs::read_to_string(path).map_err(|error| MeasureError::Read {
        path: path.to_owned(),
        error,
    })
}

fn parsed<T>(path: &Path, what: &'static str, v: Option<T>) -> Result<T, MeasureError> {
    v.ok_or_else(|| MeasureError::Parse {
        path: path.to_owned(),
        what,
    })
}

/// What a node's figures are measured on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The whole machine.
    Machine,
    /// A cgroup v1 directory of the cpu controller.
    CgroupV1 {
        /// The node's cgroup, e.g. `/sys/fs/cgroup/cpu/mosix-x/n1`.
        dir: PathBuf,
        /// The controller's mount point, e.g. `/sys/fs/cgroup/cpu`.
        mount: PathBuf,
    },
    /// A cgroup v2 directory.
    CgroupV2 {
        /// The node's cgroup.
        dir: PathBuf,
    },
}

/// Where a node's load, capacity and free memory come from.
#[derive(Debug, Clone)]
pub struct LoadSource {
    scope: Scope,
    proc_root: PathBuf,
}

impl LoadSource {
    /// Measures the cgroup at `cgroup` (v1 cpu controller directory or v2
    /// directory), or the whole machine if `None`.
    pub fn detect(cgroup: Option<PathBuf>) -> Result<Self, MeasureError> {
        Self::detect_at(cgroup, Path::new("/proc"))
    }

    /// [`detect`](Self::detect) with another `/proc` (for tests).
    pub fn detect_at(cgroup: Option<PathBuf>, proc_root: &Path) -> Result<Self, MeasureError> {
        let scope = match cgroup {
            None => Scope::Machine,
            Some(dir) if dir.join("cpu.cfs_quota_us").is_file() => {
                let mut mount = dir.clone();
                while let Some(parent) = mount.parent() {
                    if !parent.join("cpu.cfs_period_us").is_file() {
                        break;
                    }
                    mount = parent.to_owned();
                }
                Scope::CgroupV1 { dir, mount }
            }
            Some(dir) if dir.join("cgroup.threads").is_file() => Scope::CgroupV2 { dir },
            Some(dir) => return Err(MeasureError::NotACgroup(dir)),
        };
        let source = Self {
            scope,
            proc_root: proc_root.to_owned(),
        };
        // Fail now, not at the first sample, if the files are unusable.
        source.capacity_cpus()?;
        Ok(source)
    }

    /// What is measured.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// The machine's online CPUs.
    pub fn host_cpus(&self) -> Result<f64, MeasureError> {
        let path = self.proc_root.join("stat");
        let n = parse::online_cpus(&read(&path)?);
        if n == 0 {
            return Err(MeasureError::Parse {
                path,
                what: "cpuN lines",
            });
        }
        Ok(n as f64)
    }

    /// CPU capacity in CPUs: the cgroup's quota (the smallest along its
    /// ancestors), at most the machine's CPUs. Read afresh at each call, as a
    /// quota may be changed while the node runs.
    pub fn capacity_cpus(&self) -> Result<f64, MeasureError> {
        let host = self.host_cpus()?;
        let quota = match &self.scope {
            Scope::Machine => None,
            Scope::CgroupV1 { dir, mount } => {
                let mut min: Option<f64> = None;
                for d in dir.ancestors().take_while(|d| d.starts_with(mount)) {
                    let qp = d.join("cpu.cfs_quota_us");
                    let pp = d.join("cpu.cfs_period_us");
                    let q = parsed(
                        &qp,
                        "a quota in µs and a period",
                        parse::v1_quota_cpus(&read(&qp)?, &read(&pp)?),
                    )?;
                    min = min_opt(min, q);
                }
                min
            }
            Scope::CgroupV2 { dir } => {
                let mut min: Option<f64> = None;
                for d in dir.ancestors() {
                    if !d.join("cgroup.controllers").is_file() {
                        break;
                    }
                    let p = d.join("cpu.max");
                    if p.is_file() {
                        let q = parsed(&p, "\"$MAX $PERIOD\"", parse::v2_cpu_max(&read(&p)?))?;
                        min = min_opt(min, q);
                    }
                }
                min
            }
        };
        Ok(quota.map_or(host, |q| q.min(host)))
    }

    /// One run-queue sample: runnable tasks, not counting the calling thread.
    pub fn run_queue(&self) -> Result<f64, MeasureError> {
        self.run_queue_excluding(nix::unistd::gettid().as_raw())
    }

    /// [`run_queue`](Self::run_queue), not counting thread `self_tid` (tests).
    pub fn run_queue_excluding(&self, self_tid: i32) -> Result<f64, MeasureError> {
        let (dir, list) = match &self.scope {
            Scope::Machine => {
                let path = self.proc_root.join("stat");
                let n = parsed(&path, "procs_running", parse::procs_running(&read(&path)?))?;
                // The sampler is running while it reads /proc/stat.
                return Ok(n.saturating_sub(1) as f64);
            }
            Scope::CgroupV1 { dir, .. } => (dir, "tasks"),
            Scope::CgroupV2 { dir } => (dir, "cgroup.threads"),
        };
        let mut tids = Vec::new();
        collect_tids(dir, list, 0, &mut tids)?;
        let mut running = 0u64;
        for tid in tids {
            if tid == self_tid {
                continue;
            }
            // A task may exit between the listing and this read: skip it.
            let Ok(stat) =
                std::fs::read_to_string(self.proc_root.join(tid.to_string()).join("stat"))
            else {
                continue;
            };
            if mosix_engine::procfs::Stat::parse(&stat).is_ok_and(|s| s.state == 'R') {
                running += 1;
            }
        }
        Ok(running as f64)
    }

    /// Memory available for new processes, in bytes: `MemAvailable`, or
    /// less if the node's memory cgroup (or one of its ancestors) has less
    /// headroom under its limit. For a v1 cpu cgroup, the memory cgroup is
    /// the same path under the `memory` controller's mount, if it exists.
    pub fn free_memory_bytes(&self) -> Result<u64, MeasureError> {
        let path = self.proc_root.join("meminfo");
        let mut free = parsed(&path, "MemAvailable", parse::mem_available(&read(&path)?))?;
        let (dirs, limit_file, usage_file): (Vec<PathBuf>, _, _) = match &self.scope {
            Scope::Machine => return Ok(free),
            Scope::CgroupV1 { dir, mount } => {
                let (Ok(rel), Some(root)) = (dir.strip_prefix(mount), mount.parent()) else {
                    return Ok(free);
                };
                let mem_mount = root.join("memory");
                let mem_dir = mem_mount.join(rel);
                (
                    mem_dir
                        .ancestors()
                        .take_while(|d| d.starts_with(&mem_mount))
                        .map(Path::to_owned)
                        .collect(),
                    "memory.limit_in_bytes",
                    "memory.usage_in_bytes",
                )
            }
            Scope::CgroupV2 { dir } => (
                dir.ancestors()
                    .take_while(|d| d.join("cgroup.controllers").is_file())
                    .map(Path::to_owned)
                    .collect(),
                "memory.max",
                "memory.current",
            ),
        };
        for d in dirs {
            let lp = d.join(limit_file);
            if !lp.is_file() {
                continue;
            }
            let limit = parsed(&lp, "a byte count or max", parse::memory_limit(&read(&lp)?))?;
            if let Some(limit) = limit {
                let up = d.join(usage_file);
                let used = parsed(&up, "a byte count", parse::byte_count(&read(&up)?))?;
                free = free.min(limit.saturating_sub(used));
            }
        }
        Ok(free)
    }
}

fn min_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Appends the thread ids listed in `dir/list` and its sub-cgroups'.
fn collect_tids(
    dir: &Path,
    list: &str,
    depth: usize,
    out: &mut Vec<i32>,
) -> Result<(), MeasureError> {
    let path = dir.join(list);
    match std::fs::read_to_string(&path) {
        Ok(s) => out.extend(parse::tid_list(&s)),
        // A sub-cgroup removed while we walk is not an error; the node's
        // own cgroup vanishing is.
        Err(e) if depth > 0 && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(MeasureError::Read { path, error }),
    }
    if depth >= MAX_CGROUP_DEPTH {
        return Ok(());
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_tids(&entry.path(), list, depth + 1, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
