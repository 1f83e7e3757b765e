//! `mosix-local`: isolated mosix nodes on one machine (ARCHITECTURE.md section 8).
//!
//! Each node gets its own network namespace (on a bridge in a hub
//! namespace), its own mount namespace (with a private `/run/mosix`) and its
//! own cgroup limited to a share of one core, and runs `homed` and `remoted`
//! there. Everything is found again from the cluster directory (see
//! [`state`]), so `down` cleans up after a crash as well as after `up`.

pub mod cgroup;
mod down;
mod exec;
pub mod layout;
pub mod mounts;
pub mod net;
mod node_ctl;
pub mod procs;
pub mod state;
mod status;
mod sys;
mod up;

pub use down::down;
pub use exec::exec;
pub use node_ctl::{start, stop};
pub use status::status;
pub use up::{UpOptions, up};

use anyhow::{Context, Result, bail};
use std::ffi::{CString, OsString};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use layout::Layout;
use state::State;

/// Environment variable naming the directory of the mosix binaries
/// (default: the directory of the `mosix-local` executable).
pub const BIN_DIR_ENV: &str = "MOSIX_BIN_DIR";

/// Refuse to go on unless running as root, saying why root is needed.
pub fn require_root(what: &str) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "`mosix-local {what}` must run as root: it creates or enters network and mount namespaces and cgroups; try sudo"
        );
    }
    Ok(())
}

/// Absolute form of `dir`; canonical (symlinks resolved) when it exists.
pub fn resolve_dir(dir: &Path) -> Result<PathBuf> {
    let abs = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()
            .context("cannot get the current directory to resolve --dir")?
            .join(dir)
    };
    match abs.canonicalize() {
        Ok(c) => Ok(c),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(abs),
        Err(e) => Err(e).with_context(|| format!("cannot resolve {}", abs.display())),
    }
}

/// Directory holding `homed`, `remoted`, `mosctl`...
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os(BIN_DIR_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    let exe = std::env::current_exe().context("cannot find the mosix-local executable's path")?;
    exe.parent()
        .map(Path::to_path_buf)
        .with_context(|| format!("{} has no parent directory", exe.display()))
}

/// A running (or partly made) cluster: where it lives and what `up` made.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Names and paths.
    pub layout: Layout,
    /// What `up` recorded.
    pub state: State,
}

impl Cluster {
    /// The cluster in `dir`, or `None` if there is none.
    pub fn open(dir: &Path) -> Result<Option<Cluster>> {
        let dir = resolve_dir(dir)?;
        let layout = Layout::new(&dir);
        Ok(State::load(&layout.state_path())?.map(|state| Cluster { layout, state }))
    }

    /// Names of the nodes, `n1..`.
    pub fn node_names(&self) -> Vec<String> {
        (1..=self.state.nodes).map(layout::node_name).collect()
    }

    /// Index of `node`, or an error naming the nodes that do exist.
    pub fn node_index(&self, node: &str) -> Result<u32> {
        match layout::node_index(node) {
            Some(i) if i <= self.state.nodes => Ok(i),
            _ => bail!(
                "no node {node:?} in the cluster in {}: its nodes are n1..n{}",
                self.layout.dir.display(),
                self.state.nodes
            ),
        }
    }

    /// A command that runs `program` inside `node`: its cgroups, network
    /// and mount namespaces, with `MOSIX_CONFIG` set and the mosix binary
    /// directory first in `PATH`. `daemon` also starts a new session.
    pub fn node_command(&self, node: &str, program: &Path, daemon: bool) -> Result<Command> {
        let i = self.node_index(node)?;
        let damaged = |what: String| {
            format!(
                "{what}: the cluster in {} is damaged; run `mosix-local down --dir {0}` and `up` again",
                self.layout.dir.display()
            )
        };
        let netns_path = net::netns_path(&self.layout.node_netns(i));
        let netns = std::fs::File::open(&netns_path).with_context(|| {
            damaged(format!(
                "cannot open {node}'s network namespace {}",
                netns_path.display()
            ))
        })?;
        let mnt_path = self.layout.mnt_ns_path(node);
        if mounts::mount_count(&mnt_path)? == 0 {
            bail!(damaged(format!(
                "{node}'s mount namespace is not pinned on {}",
                mnt_path.display()
            )));
        }
        let mntns = std::fs::File::open(&mnt_path)
            .with_context(|| damaged(format!("cannot open {}", mnt_path.display())))?;
        let time_path = self.layout.time_ns_path(node);
        let timens = if mounts::mount_count(&time_path)? > 0 {
            Some(
                std::fs::File::open(&time_path)
                    .with_context(|| damaged(format!("cannot open {}", time_path.display())))?
                    .into(),
            )
        } else {
            None
        };
        let procs = cgroup::procs_files(&self.state, node);
        if procs.is_empty() {
            bail!(damaged(format!("{node} has no cgroup")));
        }
        let mut cgroup_procs = Vec::new();
        for p in procs {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .with_context(|| format!("cannot open {} to join {node}'s cgroup", p.display()))?;
            cgroup_procs.push(f.into());
        }
        let cwd = if daemon {
            CString::new("/").ok()
        } else {
            std::env::current_dir()
                .ok()
                .and_then(|d| CString::new(d.as_os_str().as_bytes()).ok())
        };
        let bins = bin_dir()?;
        let mut path = OsString::from(bins.as_os_str());
        if let Some(old) = std::env::var_os("PATH").filter(|p| !p.is_empty()) {
            path.push(":");
            path.push(old);
        }
        let mut cmd = Command::new(program);
        cmd.env("MOSIX_CONFIG", self.layout.config_path(node))
            .env("PATH", path);
        sys::enter_on_spawn(
            &mut cmd,
            sys::NodeEntry {
                cgroup_procs,
                netns: Some(netns.into()),
                mntns: Some(mntns.into()),
                timens,
                cwd,
                setsid: daemon,
            },
        );
        Ok(cmd)
    }
}

/// What a command printed, and how it ended.
#[derive(Debug)]
pub struct Captured {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Run `cmd` with its output captured; kill it if it runs past `limit`.
pub fn run_captured(mut cmd: Command, limit: Duration) -> Result<Captured> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {program}"))?;
    let reader = |s: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut s) = s {
                let _ = s.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child
            .try_wait()
            .with_context(|| format!("cannot wait for {program}"))?
        {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{program} did not finish within {limit:?}; killed it");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok(Captured {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// The last `lines` lines of a log file, for error reports.
pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            if all.is_empty() {
                format!("    ({} is empty)\n", path.display())
            } else {
                all[start..].iter().map(|l| format!("    {l}\n")).collect()
            }
        }
        Err(e) => format!("    (cannot read {}: {e})\n", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_run_reports_output_and_enforces_limit() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo out; echo err >&2; exit 3"]);
        let r = run_captured(c, Duration::from_secs(10)).unwrap();
        assert_eq!(r.status.code(), Some(3));
        assert_eq!(r.stdout, "out\n");
        assert_eq!(r.stderr, "err\n");
        let mut c = Command::new("sleep");
        c.arg("10");
        let t = Instant::now();
        assert!(run_captured(c, Duration::from_millis(200)).is_err());
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let p = std::env::temp_dir().join(format!("mosix-local-tail-{}", std::process::id()));
        std::fs::write(&p, "a\nb\nc\n").unwrap();
        assert_eq!(tail(&p, 2), "    b\n    c\n");
        std::fs::remove_file(&p).unwrap();
        assert!(tail(&p, 2).contains("cannot read"));
    }

    #[test]
    fn relative_dirs_become_absolute() {
        let r = resolve_dir(Path::new("surely-missing-mosix-dir")).unwrap();
        assert!(r.is_absolute() && r.ends_with("surely-missing-mosix-dir"));
    }
}
