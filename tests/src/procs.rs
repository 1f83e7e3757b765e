//! Looking at processes from outside, for the multi-node tests: where a
//! body really runs (ARCHITECTURE.md section 8), what `ps` shows, and what
//! `mosps` says.

use crate::{Cluster, is_running};
use mosix_engine::procfs;
use std::process::Output;

/// A command's status and output, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The parent of `pid`.
pub fn ppid(pid: i32) -> Option<i32> {
    procfs::stat(pid).map(|s| s.ppid)
}

/// The process group of `pid`.
pub fn pgrp(pid: i32) -> Option<i32> {
    procfs::stat(pid).map(|s| s.pgrp)
}

/// The state letter of `pid` (R, S, T, ...), '?' if it is gone.
pub fn state_of(pid: i32) -> char {
    procfs::stat(pid).map_or('?', |s| s.state)
}

/// The command line of `pid`, as ps shows it.
pub fn cmdline(pid: i32) -> Vec<String> {
    procfs::cmdline(pid)
}

/// Whether `pid` is a deputy: its command line is the program's, the
/// name of what it runs is not.
pub fn is_deputy(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "mosix-deputy")
}

/// Every live process whose command line is `argv` (compared joined by
/// spaces: sqlite3 splits its dot-command argument in place).
pub fn processes_running(argv: &[&str]) -> Vec<i32> {
    let want = argv.join(" ");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| cmdline(p).join(" ") == want && is_running(p))
        .collect()
}

/// Whether `ancestor` is `pid` or one of its ancestors.
pub fn descends_from(mut pid: i32, ancestor: i32) -> bool {
    while pid > 1 {
        if pid == ancestor {
            return true;
        }
        match ppid(pid) {
            Some(p) => pid = p,
            None => return false,
        }
    }
    false
}

/// `mosps --json`'s object for home pid `pid`, asked at `node`.
pub fn mosps_entry(c: &Cluster, node: &str, pid: i32) -> Option<serde_json::Value> {
    let out = c.exec(node, &["mosps", "--json"]).ok()?;
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).ok()?;
    list.into_iter().find(|p| p["pid"] == pid)
}
