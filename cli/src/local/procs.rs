//! Finding and stopping the processes of a node: by pid file, by cgroup and
//! by namespace (a process is in a node if its network or mount namespace is
//! the node's, wherever it came from).

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Identity of a namespace: device and inode of its nsfs file.
pub type NsId = (u64, u64);

/// Identity of the namespace pinned at (or linked from) `path`.
pub fn ns_id(path: &Path) -> Option<NsId> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Whether `pid` exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    mosix_engine::procfs::stat(pid).is_some_and(|s| s.is_alive())
}

/// Pid stored in a pid file, if it holds one.
pub fn read_pid_file(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()?
        .trim()
        .parse::<i32>()
        .ok()
        .filter(|p| *p > 1)
}

/// Every process (other than this one) whose network or mount namespace is
/// one of `namespaces`.
pub fn pids_in_namespaces(namespaces: &HashSet<NsId>) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    if namespaces.is_empty() {
        return out;
    }
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let inside = ["net", "mnt"].iter().any(|kind| {
            ns_id(&e.path().join("ns").join(kind)).is_some_and(|id| namespaces.contains(&id))
        });
        if inside {
            out.push(pid);
        }
    }
    out
}

/// Whether `pid` looks like the daemon `name` we started: its executable is
/// called `name`, or it lives in the node's network namespace. Guards
/// against signalling an unrelated process that reused a stale pid.
pub fn is_our_daemon(pid: i32, name: &str, node_netns: Option<NsId>) -> bool {
    let proc = Path::new("/proc").join(pid.to_string());
    if let Ok(exe) = std::fs::read_link(proc.join("exe")) {
        let base = exe
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if base.trim_end_matches(" (deleted)") == name {
            return true;
        }
    }
    node_netns.is_some_and(|id| ns_id(&proc.join("ns/net")) == Some(id))
}

/// Send `sig` to every pid in `pids` (never to this process or init).
pub fn signal_all(pids: &[i32], sig: Signal) {
    let me = std::process::id() as i32;
    for &pid in pids.iter().filter(|&&p| p != me && p > 1) {
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

/// Poll until none of `pids` is alive or `patience` has passed.
pub fn wait_gone(pids: &[i32], patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    loop {
        if !pids.iter().any(|&p| is_alive(p)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_a_reaped_child_is_not() {
        assert!(is_alive(std::process::id() as i32));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        assert!(!is_alive(pid));
    }

    #[test]
    fn pid_files_reject_junk_and_init() {
        let dir = std::env::temp_dir().join(format!("mosix-local-pid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("x.pid");
        for (text, want) in [
            ("1234\n", Some(1234)),
            ("1", None),
            ("-5", None),
            ("abc", None),
            ("", None),
        ] {
            std::fs::write(&f, text).unwrap();
            assert_eq!(read_pid_file(&f), want, "{text:?}");
        }
        assert_eq!(read_pid_file(&dir.join("missing.pid")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn finds_processes_sharing_a_namespace() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let mine = ns_id(Path::new("/proc/self/ns/net")).unwrap();
        let found = pids_in_namespaces(&HashSet::from([mine]));
        assert!(found.contains(&pid), "sleep {pid} not among {found:?}");
        assert!(!found.contains(&(std::process::id() as i32)));
        assert!(pids_in_namespaces(&HashSet::new()).is_empty());
        signal_all(&[pid], Signal::SIGKILL);
        child.wait().unwrap();
    }

    #[test]
    fn signals_reach_every_process_and_wait_sees_them_go() {
        let mut a = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut b = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pids = [a.id() as i32, b.id() as i32];
        assert!(is_our_daemon(pids[0], "sleep", None));
        assert!(!is_our_daemon(pids[0], "homed", None));
        assert!(!wait_gone(&pids, Duration::from_millis(50)));
        signal_all(&pids, Signal::SIGTERM);
        // Our own children turn zombies, which count as gone.
        assert!(wait_gone(&pids, Duration::from_secs(5)));
        a.wait().unwrap();
        b.wait().unwrap();
    }
}
