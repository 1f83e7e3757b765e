//! Parsers for the kernel files load measurement reads. Pure functions over
//! file contents, so they are tested without root and without a particular
//! kernel. Each returns `None` when the contents are not what the kernel
//! documents; the caller turns that into an error naming the file.

/// `procs_running` from `/proc/stat`: tasks runnable right now, machine-wide.
pub fn procs_running(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("procs_running "))
        .and_then(|v| v.trim().parse().ok())
}

/// Number of online CPUs: the `cpuN` lines of `/proc/stat` (the `cpu` total
/// line excluded). Unlike `std::thread::available_parallelism`, this is not
/// reduced by our own process's affinity or cgroup quota, which describe the
/// daemon, not the machine.
pub fn online_cpus(proc_stat: &str) -> usize {
    proc_stat
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .and_then(|field| field.strip_prefix("cpu"))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .count()
}

/// Thread ids listed one per line (cgroup v1 `tasks`, v2 `cgroup.threads`).
/// Lines that are not ids are skipped.
pub fn tid_list(contents: &str) -> Vec<i32> {
    contents
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .filter(|&t: &i32| t > 0)
        .collect()
}

/// CPUs allowed by a v1 quota: `cpu.cfs_quota_us` / `cpu.cfs_period_us`;
/// `Some(None)` when unlimited (quota -1).
pub fn v1_quota_cpus(quota_us: &str, period_us: &str) -> Option<Option<f64>> {
    let quota: i64 = quota_us.trim().parse().ok()?;
    let period: u64 = period_us.trim().parse().ok()?;
    if quota < 0 {
        return Some(None);
    }
    if period == 0 || quota == 0 {
        return None;
    }
    Some(Some(quota as f64 / period as f64))
}

/// CPUs allowed by a v2 `cpu.max` (`"$MAX $PERIOD"`, `$MAX` may be `max`);
/// `Some(None)` when unlimited.
pub fn v2_cpu_max(contents: &str) -> Option<Option<f64>> {
    let mut it = contents.split_whitespace();
    let max = it.next()?;
    let period: u64 = it.next()?.parse().ok()?;
    if max == "max" {
        return Some(None);
    }
    let max: u64 = max.parse().ok()?;
    if period == 0 || max == 0 {
        return None;
    }
    Some(Some(max as f64 / period as f64))
}

/// A memory limit in bytes (v1 `memory.limit_in_bytes`, v2 `memory.max`);
/// `Some(None)` when unlimited: v2 `max`, or v1's "no limit" value, which is
/// the largest page-aligned `i64` (anything from 2^62 up is taken as none).
pub fn memory_limit(contents: &str) -> Option<Option<u64>> {
    let v = contents.trim();
    if v == "max" {
        return Some(None);
    }
    let bytes: u64 = v.parse().ok()?;
    Some(if bytes >= 1 << 62 { None } else { Some(bytes) })
}

/// A plain byte count (v1 `memory.usage_in_bytes`, v2 `memory.current`).
pub fn byte_count(contents: &str) -> Option<u64> {
    contents.trim().parse().ok()
}

/// `MemAvailable` from `/proc/meminfo`, in bytes.
pub fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?;
    let mut it = line.split_whitespace();
    let value: u64 = it.next()?.parse().ok()?;
    match it.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC_STAT: &str = "cpu  10 0 10 100 0 0 0 0 0 0\n\
        cpu0 5 0 5 50 0 0 0 0 0 0\n\
        cpu1 5 0 5 50 0 0 0 0 0 0\n\
        cpu12 5 0 5 50 0 0 0 0 0 0\n\
        intr 1 2 3\nctxt 5\nbtime 1\nprocesses 9\nprocs_running 3\nprocs_blocked 0\n";

    #[test]
    fn proc_stat_fields() {
        assert_eq!(procs_running(PROC_STAT), Some(3));
        assert_eq!(online_cpus(PROC_STAT), 3);
        assert_eq!(procs_running("cpu 1\n"), None);
        assert_eq!(online_cpus("cpu 1 2\ncpux 3\n"), 0);
    }

    #[test]
    fn tid_lists() {
        assert_eq!(tid_list("1\n22\n\nfoo\n-3\n333\n"), vec![1, 22, 333]);
    }

    #[test]
    fn quotas() {
        assert_eq!(v1_quota_cpus("50000\n", "100000\n"), Some(Some(0.5)));
        assert_eq!(v1_quota_cpus("-1\n", "100000\n"), Some(None));
        assert_eq!(v1_quota_cpus("x", "100000"), None);
        assert_eq!(v1_quota_cpus("5", "0"), None);
        assert_eq!(v2_cpu_max("150000 100000\n"), Some(Some(1.5)));
        assert_eq!(v2_cpu_max("max 100000\n"), Some(None));
        assert_eq!(v2_cpu_max("max"), None);
    }

    #[test]
    fn memory_values() {
        assert_eq!(memory_limit("9223372036854771712\n"), Some(None));
        assert_eq!(memory_limit("max\n"), Some(None));
        assert_eq!(memory_limit("1048576\n"), Some(Some(1 << 20)));
        assert_eq!(memory_limit("lots"), None);
        assert_eq!(byte_count("123\n"), Some(123));
        let meminfo = "MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:    2048 kB\n";
        assert_eq!(mem_available(meminfo), Some(2048 * 1024));
        assert_eq!(mem_available("MemFree: 1 kB\n"), None);
        assert_eq!(mem_available("MemAvailable: 1 MB\n"), None);
    }
}
