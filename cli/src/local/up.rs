//! `mosix-local up`: make the nodes, start their daemons, wait until every
//! node sees every other alive.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::layout::{DAEMONS, Layout, MAX_NODES, node_name};
use super::state::State;
use super::{Cluster, bin_dir, cgroup, mounts, net, require_root, resolve_dir, run_captured, tail};

/// What `up` was asked for.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Number of nodes, 1..=64.
    pub nodes: u32,
    /// Cluster directory.
    pub dir: PathBuf,
    /// CPU share of each node, in cores.
    pub cpu_share: f64,
    /// How long to wait for the nodes to see each other.
    pub timeout: Duration,
    /// Relative CPU speed written into every node's config; `None`:
    /// measured once here by `remoted --measure-speed`.
    pub speed: Option<f64>,
    /// Seconds by which node K's clocks run (K-1) steps ahead of the
    /// machine's (0: none).
    pub clock_step: u32,
}

/// One row of `mosctl nodes --json`; other keys are ignored.
#[derive(Debug, Deserialize)]
struct SeenNode {
    name: String,
    state: String,
}

/// Create the cluster described by `opts` and print its node list.
pub fn up(opts: &UpOptions) -> Result<()> {
    require_root("up")?;
    if !(1..=MAX_NODES).contains(&opts.nodes) {
        bail!(
            "--nodes {} is out of range: give 1 to {MAX_NODES}",
            opts.nodes
        );
    }
    cgroup::quota_us(opts.cpu_share)?;
    let ip = net::Ip::find()?;
    let bins = bin_dir()?;
    for prog in DAEMONS.iter().chain(&["mosctl"]) {
        let p = bins.join(prog);
        if !p.is_file() {
            bail!(
                "{} not found: build the workspace (`cargo build --workspace`) or set \
                 MOSIX_BIN_DIR to the directory holding homed, remoted and mosctl",
                p.display()
            );
        }
    }

    std::fs::create_dir_all(&opts.dir)
        .with_context(|| format!("cannot create cluster directory {}", opts.dir.display()))?;
    let dir = resolve_dir(&opts.dir)?;
    let layout = Layout::new(&dir);
    let down_hint = format!("mosix-local down --dir {}", dir.display());
    if layout.state_path().exists() {
        bail!(
            "a cluster already runs in {} (or was not cleaned up): run `{down_hint}` first",
            dir.display()
        );
    }
    let leftovers = net::netns_with_prefix(&layout.netns_prefix());
    let (kind, bases) = cgroup::plan(&layout.cgroup_name())?;
    let cg_left: Vec<&PathBuf> = bases.iter().filter(|b| b.exists()).collect();
    if !leftovers.is_empty() || !cg_left.is_empty() {
        bail!(
            "cluster id {} of {} is already in use (network namespaces {:?}, cgroups {:?}) but \
             {} holds no cluster: either a cluster in another directory has the same id (pick \
             another --dir) or they are leftovers of a cluster whose directory was removed \
             (delete them: `ip netns delete NAME`, `rmdir` the cgroups)",
            layout.id,
            dir.display(),
            leftovers,
            cg_left,
            dir.display()
        );
    }

    let mut state = State::new(&dir, &layout.id, opts.nodes, opts.cpu_share, kind, bases);
    if let Err(e) = state.create(&layout.state_path()) {
        let raced = e
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::AlreadyExists);
        if raced {
            bail!(
                "another `mosix-local up` is creating a cluster in {} right now",
                dir.display()
            );
        }
        return Err(e);
    }
    tracing::info!(dir = %dir.display(), id = %layout.id, nodes = opts.nodes, "creating cluster");
    let leave = |e: anyhow::Error, what: &str| {
        anyhow::anyhow!("{e:#}\n{what}; run `{down_hint}` to remove what was made")
    };
    let speed = match opts.speed {
        Some(s) => s,
        None => measure_speed(&bins)?,
    };
    let cluster = build(&layout, &mut state, &ip, speed, opts.clock_step)
        .map_err(|e| leave(e, "cluster set-up failed"))?;
    let children =
        start_daemons(&cluster, &bins).map_err(|e| leave(e, "starting the daemons failed"))?;
    wait_until_connected(&cluster, children, opts.timeout, &bins)
        .map_err(|e| leave(e, "the cluster is left as it is for inspection"))?;

    let n1 = node_name(1);
    let mut cmd = cluster.node_command(&n1, &bins.join("mosctl"), false)?;
    cmd.arg("nodes");
    let out = run_captured(cmd, Duration::from_secs(10))?;
    if !out.status.success() {
        tracing::warn!(status = %out.status, "`mosctl nodes` in {n1} failed: {}", out.stderr.trim());
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.stdout.as_bytes());
    let _ = stdout.flush();
    Ok(())
}

/// Calibrates this machine's CPU speed once, with the daemon's own
/// calibration (`remoted --measure-speed`), outside any node's cgroup.
fn measure_speed(bins: &Path) -> Result<f64> {
    let out = Command::new(bins.join("remoted"))
        .arg("--measure-speed")
        .stdin(Stdio::null())
        .output()
        .context("cannot run remoted --measure-speed")?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.trim().parse::<f64>() {
        Ok(s) if out.status.success() && s.is_finite() && s > 0.0 => Ok(s),
        _ => bail!(
            "remoted --measure-speed printed {:?} ({}): pass --speed to set it by hand",
            text.trim(),
            out.status
        ),
    }
}

/// Key, node directories, configuration, network, mount namespaces, cgroups.
fn build(
    layout: &Layout,
    state: &mut State,
    ip: &net::Ip,
    speed: f64,
    clock_step: u32,
) -> Result<Cluster> {
    write_key(&layout.key_path())?;
    let nodes: Vec<String> = (1..=state.nodes).map(node_name).collect();
    for (k, node) in nodes.iter().enumerate() {
        let i = k as u32 + 1;
        let dir = layout.node_dir(node);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        for daemon in DAEMONS {
            let _ = std::fs::remove_file(layout.pid_path(node, daemon));
            let log = layout.log_path(node, daemon);
            if log.exists() {
                let prev = log.with_extension("log.prev");
                std::fs::rename(&log, &prev)
                    .with_context(|| format!("cannot move old log {} aside", log.display()))?;
            }
        }
        let cpu_group = cgroup::cpu_group(state, node).context("state lists no cgroup")?;
        let config = super::layout::render_config(layout, i, state.nodes, &cpu_group, speed);
        let path = layout.config_path(node);
        std::fs::write(&path, config)
            .with_context(|| format!("cannot write {}", path.display()))?;
        let ns_file = layout.mnt_ns_path(node);
        if mounts::mount_count(&ns_file)? == 0 {
            std::fs::write(&ns_file, b"")
                .with_context(|| format!("cannot create {}", ns_file.display()))?;
        }
    }

    state.dir_mounts_before = mounts::mount_count(&layout.dir)?;
    state.dir_bound = true;
    state.save(&layout.state_path())?;
    mounts::bind_private(&layout.dir)?;

    net::create_hub(ip, layout)?;
    for i in 1..=state.nodes {
        net::create_node(ip, layout, i)?;
    }
    for node in &nodes {
        mounts::create_node_mntns(&layout.mnt_ns_path(node))
            .with_context(|| format!("cannot create {node}'s mount namespace"))?;
    }
    if clock_step > 0 {
        for (k, node) in nodes.iter().enumerate().skip(1) {
            let ahead = u64::from(clock_step) * k as u64;
            mounts::create_node_timens(&layout.time_ns_path(node), ahead)
                .with_context(|| format!("cannot give {node} clocks {ahead} s ahead"))?;
        }
    }
    cgroup::create(state, &nodes)?;
    Ok(Cluster {
        layout: layout.clone(),
        state: state.clone(),
    })
}

/// A fresh cluster key (OS randomness, 64 hex digits, mode 0600) at `path`.
fn write_key(path: &Path) -> Result<()> {
    use mosix_proto::link::ClusterKey;
    // A key left by an interrupted `down` of this same directory is stale.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot remove old key {}", path.display()));
        }
    }
    ClusterKey::generate()?.write_new(path)?;
    Ok(())
}

/// Start `homed` and `remoted` in every node; write their pid files.
fn start_daemons(cluster: &Cluster, bins: &Path) -> Result<Vec<(String, &'static str, Child)>> {
    let mut children = Vec::new();
    for node in cluster.node_names() {
        children.extend(start_node_daemons(cluster, bins, &node)?);
    }
    Ok(children)
}

/// Start `homed` and `remoted` in one node; write their pid files.
pub(crate) fn start_node_daemons(
    cluster: &Cluster,
    bins: &Path,
    node: &str,
) -> Result<Vec<(String, &'static str, Child)>> {
    let layout = &cluster.layout;
    let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    let mut children = Vec::new();
    for daemon in DAEMONS {
        let log_path = layout.log_path(node, daemon);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open log {}", log_path.display()))?;
        let log2 = log
            .try_clone()
            .with_context(|| format!("cannot duplicate log {}", log_path.display()))?;
        let mut cmd: Command = cluster.node_command(node, &bins.join(daemon), true)?;
        cmd.arg("--config")
            .arg(layout.config_path(node))
            .env("RUST_LOG", &rust_log)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {daemon} in {node}"))?;
        let pid_path = layout.pid_path(node, daemon);
        let tmp = pid_path.with_extension("pid.tmp");
        std::fs::write(&tmp, format!("{}\n", child.id()))
            .and_then(|()| std::fs::rename(&tmp, &pid_path))
            .with_context(|| format!("cannot write {}", pid_path.display()))?;
        tracing::info!(node = %node, daemon, pid = child.id(), "started");
        children.push((node.to_owned(), daemon, child));
    }
    Ok(children)
}

/// Which nodes `node` does not see alive, from `mosctl nodes --json` output.
fn missing_from(json: &str, all: &[String], node: &str) -> Result<BTreeMap<String, String>> {
    let seen: Vec<SeenNode> = serde_json::from_str(json)
        .context("`mosctl nodes --json` printed something that is not a node list")?;
    let mut missing = BTreeMap::new();
    for other in all.iter().filter(|o| o.as_str() != node) {
        match seen.iter().find(|s| &s.name == other) {
            Some(s) if s.state == "alive" => {}
            Some(s) => {
                missing.insert(other.clone(), s.state.clone());
            }
            None => {
                missing.insert(other.clone(), "absent".to_owned());
            }
        }
    }
    Ok(missing)
}

/// Poll `mosctl nodes --json` in every node until each sees all others
/// alive; fail early if a daemon exits, and on timeout say who misses whom.
fn wait_until_connected(
    cluster: &Cluster,
    mut children: Vec<(String, &'static str, Child)>,
    timeout: Duration,
    bins: &Path,
) -> Result<()> {
    let names = cluster.node_names();
    let deadline = Instant::now() + timeout;
    let mosctl = bins.join("mosctl");
    loop {
        for (node, daemon, child) in &mut children {
            if let Some(st) = child.try_wait().context("cannot check a daemon")? {
                eprintln!(
                    "{daemon} of {node} exited during start-up ({st}); end of its log:\n{}",
                    tail(&cluster.layout.log_path(node, daemon), 30)
                );
                bail!("{daemon} of {node} exited during start-up ({st})");
            }
        }
        let mut problems: BTreeMap<String, Result<BTreeMap<String, String>, String>> =
            BTreeMap::new();
        for node in &names {
            let mut cmd = cluster.node_command(node, &mosctl, false)?;
            cmd.args(["nodes", "--json"]);
            let verdict = match run_captured(cmd, Duration::from_secs(5)) {
                Ok(out) if out.status.success() => missing_from(&out.stdout, &names, node)
                    .map_err(|e| format!("{e:#}: {}", out.stdout.trim())),
                Ok(out) => Err(format!(
                    "mosctl nodes failed ({}): {}",
                    out.status,
                    out.stderr.trim()
                )),
                Err(e) => Err(format!("{e:#}")),
            };
            if !matches!(&verdict, Ok(m) if m.is_empty()) {
                problems.insert(node.clone(), verdict);
            }
        }
        if problems.is_empty() {
            tracing::info!(nodes = names.len(), "every node sees every other alive");
            return Ok(());
        }
        if Instant::now() >= deadline {
            let mut involved: Vec<&String> = Vec::new();
            for (node, verdict) in &problems {
                involved.push(node);
                match verdict {
                    Ok(missing) => {
                        let list: Vec<String> =
                            missing.iter().map(|(n, s)| format!("{n} ({s})")).collect();
                        eprintln!("{node} does not see alive: {}", list.join(", "));
                        involved.extend(missing.keys());
                    }
                    Err(e) => eprintln!("{node}: {e}"),
                }
            }
            involved.sort();
            involved.dedup();
            for node in involved {
                for daemon in DAEMONS {
                    let log = cluster.layout.log_path(node, daemon);
                    eprintln!("--- end of {}:\n{}", log.display(), tail(&log, 20));
                }
            }
            bail!(
                "the nodes did not all see each other alive within {timeout:?} ({} of {} nodes incomplete)",
                problems.len(),
                names.len()
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: u32) -> Vec<String> {
        (1..=n).map(node_name).collect()
    }

    #[test]
    fn complete_view_has_nothing_missing() {
        let json = r#"[
            {"name":"n1","address":"10.77.0.1:7340","state":"alive","load":0.1,"cpus":1,"speed":1.0,"free_mem_bytes":1,"last_heard_s":0.0},
            {"name":"n2","address":"10.77.0.2:7340","state":"alive","load":0.0,"cpus":1,"speed":1.0,"free_mem_bytes":1,"last_heard_s":0.3}
        ]"#;
        assert!(missing_from(json, &names(2), "n1").unwrap().is_empty());
    }

    #[test]
    fn dead_and_absent_nodes_are_reported() {
        let json = r#"[{"name":"n1","state":"alive"},{"name":"n2","state":"dead"}]"#;
        let m = missing_from(json, &names(3), "n1").unwrap();
        assert_eq!(m.get("n2").map(String::as_str), Some("dead"));
        assert_eq!(m.get("n3").map(String::as_str), Some("absent"));
        assert_eq!(m.len(), 2);
        // A node need not list itself.
        let m = missing_from(r#"[{"name":"n2","state":"alive"}]"#, &names(2), "n1").unwrap();
        assert!(m.is_empty());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(missing_from("not json", &names(2), "n1").is_err());
        assert!(missing_from(r#"{"name":"n1"}"#, &names(2), "n1").is_err());
    }

    #[test]
    fn key_is_64_hex_digits_and_root_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("mosix-local-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("cluster.key");
        write_key(&p).unwrap();
        let first = std::fs::read_to_string(&p).unwrap();
        assert_eq!(first.trim_end().len(), 64);
        assert!(first.trim_end().bytes().all(|b| b.is_ascii_hexdigit()));
        // A node loads only root's key; mosix-local runs as root.
        match mosix_proto::link::ClusterKey::load(&p) {
            Err(mosix_proto::link::KeyError::Owner { .. }) if !nix::unistd::geteuid().is_root() => {
            }
            r => drop(r.unwrap()),
        }
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        write_key(&p).unwrap();
        assert_ne!(first, std::fs::read_to_string(&p).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
