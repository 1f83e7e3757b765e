//! What the balancer reads about a process from `/proc`: how much CPU it
//! wants (its demand) and its resident memory.
//!
//! Demand is the fraction of wall time a process spent running *or waiting
//! on a run queue* (`/proc/PID/task/*/schedstat`: run and wait
//! nanoseconds), not the CPU it got: on a crowded node, or one held to a
//! CPU share by a cgroup quota, a CPU-bound process gets little but still
//! wants a whole CPU, and that is what moving it would give it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Running plus waiting nanoseconds of every thread of `pid`, or None if
/// the process is gone or the kernel keeps no schedstats.
pub fn busy_ns(proc_root: &Path, pid: i32) -> Option<u64> {
    let dir = proc_root.join(pid.to_string()).join("task");
    let mut total = 0u64;
    let mut any = false;
    for t in std::fs::read_dir(&dir).ok()?.flatten() {
        let Ok(text) = std::fs::read_to_string(t.path().join("schedstat")) else {
            continue;
        };
        if let Some(ns) = parse_schedstat(&text) {
            total = total.saturating_add(ns);
            any = true;
        }
    }
    any.then_some(total)
}

/// CPU time `pid` has used here, ms (every thread's running nanoseconds
/// in `schedstat`), 0 if it cannot be read. Rotation moves the process
/// that has used most first.
pub fn cpu_ms(proc_root: &Path, pid: i32) -> u64 {
    let dir = proc_root.join(pid.to_string()).join("task");
    let Ok(tasks) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|text| text.split_whitespace().next()?.parse::<u64>().ok())
        .fold(0u64, u64::saturating_add);
    ns / 1_000_000
}

/// Run + wait nanoseconds from one `schedstat` line.
fn parse_schedstat(text: &str) -> Option<u64> {
    let mut it = text.split_whitespace();
    let run: u64 = it.next()?.parse().ok()?;
    let wait: u64 = it.next()?.parse().ok()?;
    Some(run.saturating_add(wait))
}

/// Resident set of `pid` in bytes (`/proc/PID/statm`, second field), 0 if
/// it cannot be read.
pub fn resident_bytes(proc_root: &Path, pid: i32) -> u64 {
    std::fs::read_to_string(proc_root.join(pid.to_string()).join("statm"))
        .ok()
        .and_then(|t| t.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages.saturating_mul(4096))
        .unwrap_or(0)
}

/// Turns successive [`busy_ns`] readings into demands, per pid.
#[derive(Debug)]
pub struct DemandMeter {
    proc_root: PathBuf,
    last: HashMap<i32, (Instant, u64)>,
}

impl DemandMeter {
    /// A meter reading `proc_root` (normally `/proc`).
    pub fn new(proc_root: impl Into<PathBuf>) -> Self {
        Self {
            proc_root: proc_root.into(),
            last: HashMap::new(),
        }
    }

    /// The demands of `pids` since the last call (None for a pid seen for
    /// the first time or unreadable); forgets pids not asked about.
    pub fn measure(&mut self, pids: &[i32]) -> HashMap<i32, Option<f64>> {
        let now = Instant::now();
        let mut next = HashMap::new();
        let mut out = HashMap::new();
        for &pid in pids {
            let reading = busy_ns(&self.proc_root, pid);
            let demand = match (reading, self.last.get(&pid)) {
                (Some(ns), Some(&(at, before))) => {
                    let wall = now.duration_since(at).as_nanos() as f64;
                    (wall > 0.0).then(|| (ns.saturating_sub(before) as f64 / wall).clamp(0.0, 1.0))
                }
                _ => None,
            };
            if let Some(ns) = reading {
                next.insert(pid, (now, ns));
            }
            out.insert(pid, demand);
        }
        self.last = next;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_lines_parse() {
        assert_eq!(parse_schedstat("100 250 7\n"), Some(350));
        assert_eq!(parse_schedstat("100"), None);
        assert_eq!(parse_schedstat("x y z"), None);
    }

    #[test]
    fn a_fake_process_demand_comes_from_its_threads() {
        let root = tempfile::tempdir().unwrap();
        let task = |tid: &str, text: &str| {
            let d = root.path().join("42/task").join(tid);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("schedstat"), text).unwrap();
        };
        task("42", "1000 2000 3\n");
        task("43", "500 500 1\n");
        assert_eq!(busy_ns(root.path(), 42), Some(4000));
        assert_eq!(busy_ns(root.path(), 7), None);
        task("44", "3000000 9 1\n");
        assert_eq!(cpu_ms(root.path(), 42), 3);
        assert_eq!(cpu_ms(root.path(), 7), 0);
        std::fs::write(root.path().join("42/statm"), "100 25 3 1 0 10 0\n").unwrap();
        assert_eq!(resident_bytes(root.path(), 42), 25 * 4096);
        assert_eq!(resident_bytes(root.path(), 7), 0);
        let mut m = DemandMeter::new(root.path());
        assert_eq!(m.measure(&[42]).get(&42), Some(&None));
        // Nothing ran in between: no demand.
        assert_eq!(m.measure(&[42]).get(&42), Some(&Some(0.0)));
    }

    #[test]
    fn a_busy_thread_here_shows_demand() {
        let mut m = DemandMeter::new("/proc");
        let me = std::process::id() as i32;
        m.measure(&[me]);
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed().as_millis() < 200 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let d = m.measure(&[me])[&me].expect("the kernel keeps schedstats");
        // Other test threads may idle: the whole process wants at least
        // the spinning thread's share of the wall time, most of a CPU.
        assert!(d > 0.5, "demand {d} of a spinning thread");
    }
}
