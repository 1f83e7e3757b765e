//! Harness for multi-node integration tests: starts isolated local clusters
//! with `mosix-local` (each node in its own network and mount namespace and
//! CPU cgroup, ARCHITECTURE.md section 8) and runs commands on their nodes.
//!
//! The binaries under test are the ones cargo built beside the test
//! executable (`target/<profile>/`); the test command builds them first.

pub mod home;
mod job;
pub mod procs;

pub use job::{Job, JobOut};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The directory holding the workspace's binaries.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MOSIX_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // target/<profile>/deps/<test-binary>
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf()
}

/// Path of one workspace binary, with a clear failure if it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        p.display()
    );
    p
}

/// Compiles the test program `examples/c/<name>.c` into `dir/<name>` with
/// `cc -O1` and `flags`; fails the test with the compiler's message.
pub fn build_c_example(name: &str, dir: &Path, flags: &[&str]) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/c")
        .join(format!("{name}.c"));
    let exe = dir.join(name);
    let out = Command::new("cc")
        .arg("-O1")
        .args(flags)
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("cannot run cc: install gcc");
    assert!(
        out.status.success(),
        "cc {}: {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// Whether the tests can do what they need (root, iproute2). Integration
/// tests call this and fail with the reason if not; CI runs them as root.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "integration tests need root (network and mount namespaces, cgroups): run them as root"
    );
}

/// Whether `pid` is a live process (not gone, not a zombie waiting to be
/// reaped by whoever inherited it).
pub fn is_running(pid: i32) -> bool {
    mosix_engine::procfs::stat(pid).is_some_and(|s| s.is_alive())
}

/// One row of `mosctl nodes --json`.
#[derive(Debug, Clone, Deserialize)]
pub struct NodeRow {
    /// Node name.
    pub name: String,
    /// Node address.
    pub address: String,
    /// "alive" or "dead".
    pub state: String,
    /// Normalised load.
    pub load: f64,
    /// CPU capacity.
    pub cpus: f64,
    /// Relative speed.
    pub speed: f64,
    /// Free memory.
    pub free_mem_bytes: u64,
    /// Seconds since last heard.
    pub last_heard_s: f64,
}

/// A local cluster for one test; taken down when dropped.
pub struct Cluster {
    /// The cluster's directory (configs, logs, keys).
    pub dir: PathBuf,
    /// Number of nodes, named n1..nN.
    pub nodes: usize,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl Cluster {
    /// Starts `nodes` isolated nodes with automatic migration off (tests
    /// that move processes by hand must not race the balancer), and waits
    /// until they all see each other alive.
    pub fn up(nodes: usize) -> Result<Cluster> {
        Cluster::up_with(nodes, &[])
    }

    /// As [`Cluster::up`], with more `mosix-local up` options (e.g.
    /// `--clock-step`).
    pub fn up_with(nodes: usize, options: &[&str]) -> Result<Cluster> {
        let c = Cluster::start(nodes, options)?;
        for i in 1..=nodes {
            let node = format!("n{i}");
            let out = c.exec(&node, &["mosctl", "params", "auto_migrate=false"])?;
            if !out.status.success() {
                bail!(
                    "cannot turn automatic migration off at {node}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        Ok(c)
    }

    /// Starts `nodes` isolated nodes with automatic migration on (the
    /// balancer moves processes by itself, as in production), and waits
    /// until they all see each other alive.
    pub fn up_balancing(nodes: usize) -> Result<Cluster> {
        Cluster::start(nodes, &[])
    }

    /// `mosix-local up` with `options`, the balancer as configured.
    fn start(nodes: usize, options: &[&str]) -> Result<Cluster> {
        require_root();
        let dir = PathBuf::from(format!(
            "/tmp/mosix-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let cluster = Cluster { dir, nodes };
        let n = nodes.to_string();
        let mut args = vec!["up", "--nodes", &n];
        args.extend_from_slice(options);
        let out = cluster.local(&args)?;
        if !out.status.success() {
            bail!(
                "mosix-local up failed: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(cluster)
    }

    /// Runs `mosix-local SUBCOMMAND ... --dir <dir>`.
    pub fn local(&self, args: &[&str]) -> Result<Output> {
        let dir = self.dir.to_str().context("cluster dir is not UTF-8")?;
        let mut cmd = Command::new(bin("mosix-local"));
        // --dir goes right after the subcommand.
        cmd.arg(args[0]).arg("--dir").arg(dir).args(&args[1..]);
        cmd.env("MOSIX_BIN_DIR", bin_dir());
        cmd.output().context("cannot run mosix-local")
    }

    /// Runs a command on `node` and returns its output.
    pub fn exec(&self, node: &str, cmd: &[&str]) -> Result<Output> {
        let mut args = vec!["exec", node, "--"];
        args.extend_from_slice(cmd);
        self.local(&args)
    }

    /// `mosctl nodes --json` as seen from `node`.
    pub fn nodes_seen_by(&self, node: &str) -> Result<Vec<NodeRow>> {
        let out = self.exec(node, &["mosctl", "nodes", "--json"])?;
        if !out.status.success() {
            bail!(
                "mosctl nodes on {node} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_slice(&out.stdout).context("mosctl nodes --json printed bad JSON")
    }

    /// The state (`alive`/`dead`) of `about` as seen from `node`, or None
    /// when `node` does not know it.
    pub fn state_seen(&self, node: &str, about: &str) -> Result<Option<String>> {
        Ok(self
            .nodes_seen_by(node)?
            .into_iter()
            .find(|r| r.name == about)
            .map(|r| r.state))
    }

    /// Polls until `cond` holds or `timeout` passes; returns how long it
    /// took. Polling is how the tests wait: never a bare sleep.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut cond: impl FnMut() -> Result<bool>,
    ) -> Result<Duration> {
        let start = Instant::now();
        loop {
            if cond()? {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                bail!("timed out after {timeout:?} waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Path of a node's file in the cluster directory.
    pub fn node_file(&self, node: &str, name: &str) -> PathBuf {
        self.dir.join(node).join(name)
    }

    /// Pid recorded in a node's pid file (`homed.pid`, `remoted.pid`).
    pub fn daemon_pid(&self, node: &str, daemon: &str) -> Result<i32> {
        let path = self.node_file(node, &format!("{daemon}.pid"));
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        text.trim()
            .parse()
            .with_context(|| format!("bad pid in {}", path.display()))
    }

    /// A node's log, for assertions and for failure messages.
    pub fn log(&self, node: &str, daemon: &str) -> String {
        std::fs::read_to_string(self.node_file(node, &format!("{daemon}.log"))).unwrap_or_default()
    }
}

impl Drop for Cluster {
    /// Takes the cluster down; keeps its directory (logs) only when the
    /// test failed, so it can be read.
    fn drop(&mut self) {
        match self.local(&["down"]) {
            Ok(out) if out.status.success() => {
                if !std::thread::panicking() {
                    let _ = std::fs::remove_dir_all(&self.dir);
                }
            }
            Ok(out) => eprintln!(
                "mosix-local down failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("mosix-local down failed: {e:#}"),
        }
    }
}

/// A real python3 binary (not pyenv's shell shim, which is a script that
/// execs the real one and so is not the process that runs the work).
pub fn real_python3() -> &'static str {
    [
        "/usr/bin/python3",
        "/root/.pyenv/versions/3.11.7/bin/python3",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("a real python3 binary (not pyenv's shell shim)")
}
