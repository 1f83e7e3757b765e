//! Names, addresses and paths of a local cluster: pure functions of the
//! cluster directory, so `up`, `exec`, `down` and the tests all agree on them.

use serde::Serialize;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};

/// Directory used when `--dir` is not given.
pub const DEFAULT_DIR: &str = "/tmp/mosix-local";

/// Largest number of nodes `up` accepts (addresses are `10.77.0.1..=64`).
pub const MAX_NODES: u32 = 64;

/// Port each node's `remoted` listens on.
pub const PORT: u16 = 7340;

/// Per-node runtime directory: a fresh tmpfs inside each node's mount
/// namespace, so the daemons' local sockets never collide.
pub const RUNTIME_DIR: &str = "/run/mosix";

/// Name of the bridge inside the hub network namespace.
pub const BRIDGE: &str = "br0";

/// Name of the node's side of its veth pair.
pub const NODE_IFACE: &str = "eth0";

/// Linux's limit on interface names (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

/// The two daemons every node runs, in start order.
pub const DAEMONS: [&str; 2] = ["homed", "remoted"];

/// Short cluster id derived from the canonical cluster directory: 4 hex
/// digits of a stable hash (FNV-1a, folded to 16 bits), so clusters in
/// different directories get different namespace and cgroup names.
pub fn cluster_id(canonical_dir: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in canonical_dir.as_os_str().as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let folded = (h ^ (h >> 16) ^ (h >> 32) ^ (h >> 48)) & 0xffff;
    format!("{folded:04x}")
}

/// Name of node number `i` (1-based): `n1`, `n2`, ...
pub fn node_name(i: u32) -> String {
    format!("n{i}")
}

/// Inverse of [`node_name`]: `Some(i)` for `n<i>` with `i` in `1..=MAX_NODES`.
pub fn node_index(name: &str) -> Option<u32> {
    let digits = name.strip_prefix('n')?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let i: u32 = digits.parse().ok()?;
    (1..=MAX_NODES).contains(&i).then_some(i)
}

/// Address of node `i` on the cluster's private subnet.
pub fn node_addr(i: u32) -> Ipv4Addr {
    // Callers validate i <= MAX_NODES; clamp anyway so a bad index cannot wrap.
    Ipv4Addr::new(10, 77, 0, i.min(254) as u8)
}

/// Name of the hub-side veth interface of node `i` (inside the hub netns).
pub fn hub_port(i: u32) -> String {
    format!("p{i}")
}

/// Where everything of one cluster lives: its directory and its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Absolute, canonical cluster directory.
    pub dir: PathBuf,
    /// Short id from [`cluster_id`].
    pub id: String,
}

impl Layout {
    /// Layout of the cluster in `canonical_dir` (must already be canonical).
    pub fn new(canonical_dir: &Path) -> Layout {
        Layout {
            dir: canonical_dir.to_path_buf(),
            id: cluster_id(canonical_dir),
        }
    }

    /// Prefix shared by every network namespace of this cluster.
    pub fn netns_prefix(&self) -> String {
        format!("mx{}-", self.id)
    }

    /// Network namespace holding the bridge.
    pub fn hub_netns(&self) -> String {
        format!("mx{}-hub", self.id)
    }

    /// Network namespace of node `i`.
    pub fn node_netns(&self, i: u32) -> String {
        format!("mx{}-{}", self.id, node_name(i))
    }

    /// Name of the cgroup directory holding this cluster's node cgroups.
    pub fn cgroup_name(&self) -> String {
        format!("mosix-{}", self.id)
    }

    /// Directory of one node's files (config, logs, pid files, mnt.ns).
    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.dir.join(node)
    }

    /// The node's configuration file.
    pub fn config_path(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("mosix.toml")
    }

    /// File onto which the node's mount namespace is bind-mounted.
    pub fn mnt_ns_path(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("mnt.ns")
    }

    /// Where a node's time namespace is pinned (`up --clock-step`).
    pub fn time_ns_path(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("time.ns")
    }

    /// Pid file of one of the node's daemons.
    pub fn pid_path(&self, node: &str, daemon: &str) -> PathBuf {
        self.node_dir(node).join(format!("{daemon}.pid"))
    }

    /// Log (stdout and stderr) of one of the node's daemons.
    pub fn log_path(&self, node: &str, daemon: &str) -> PathBuf {
        self.node_dir(node).join(format!("{daemon}.log"))
    }

    /// The cluster key shared by all nodes.
    pub fn key_path(&self) -> PathBuf {
        self.dir.join("cluster.key")
    }

    /// State file: written first by `up`, removed last by `down`.
    pub fn state_path(&self) -> PathBuf {
        self.dir.join("cluster.state")
    }
}

#[derive(Serialize)]
struct ConfigFile<'a> {
    node: NodeSection<'a>,
    load: LoadSection<'a>,
}

#[derive(Serialize)]
struct NodeSection<'a> {
    name: String,
    listen: String,
    seeds: Vec<String>,
    key_file: &'a Path,
    runtime_dir: &'a str,
}

#[derive(Serialize)]
struct LoadSection<'a> {
    cgroup: &'a Path,
    speed: f64,
}

/// The `mosix.toml` of node `i` of an `n`-node cluster: it listens on its
/// own address, seeds every other node and measures load from `cgroup`.
/// Every node gets the same `speed`: they share this machine's CPU model,
/// and a calibration run inside a throttled cgroup on a busy machine would
/// give each a different, noisy figure.
pub fn render_config(layout: &Layout, i: u32, n: u32, cgroup: &Path, speed: f64) -> String {
    let key = layout.key_path();
    let file = ConfigFile {
        node: NodeSection {
            name: node_name(i),
            listen: SocketAddrV4::new(node_addr(i), PORT).to_string(),
            seeds: (1..=n)
                .filter(|&j| j != i)
                .map(|j| SocketAddrV4::new(node_addr(j), PORT).to_string())
                .collect(),
            key_file: &key,
            runtime_dir: RUNTIME_DIR,
        },
        load: LoadSection { cgroup, speed },
    };
    let body = toml::to_string(&file).unwrap_or_else(|e| {
        // Only non-UTF-8 paths can fail; say so in the file the daemon reads.
        format!("# mosix-local could not render this configuration: {e}\n")
    });
    format!(
        "# Written by mosix-local up for cluster {} ({}); rewritten at every `up`.\n{body}",
        layout.id,
        layout.dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_four_hex_digits_and_stable() {
        let a = cluster_id(Path::new("/tmp/mosix-local"));
        assert_eq!(a.len(), 4);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, cluster_id(Path::new("/tmp/mosix-local")));
        // The value is part of the on-machine names: changing the hash
        // would orphan the namespaces of a running cluster on upgrade.
        assert_eq!(a, "f861");
    }

    #[test]
    fn ids_differ_between_typical_test_dirs() {
        let ids: std::collections::HashSet<String> = (0..200)
            .map(|k| cluster_id(Path::new(&format!("/tmp/.tmpX{k:05}/cluster"))))
            .collect();
        // 200 draws from 65536 values: a handful of collisions at most.
        assert!(ids.len() >= 195, "only {} distinct ids", ids.len());
    }

    #[test]
    fn names_fit_interface_and_netns_limits() {
        let l = Layout::new(Path::new("/tmp/x"));
        for i in 1..=MAX_NODES {
            assert!(hub_port(i).len() <= MAX_IFNAME);
            assert!(l.node_netns(i).len() <= MAX_IFNAME);
            assert!(l.node_netns(i).starts_with(&l.netns_prefix()));
        }
        assert!(l.hub_netns().len() <= MAX_IFNAME);
        assert!(BRIDGE.len() <= MAX_IFNAME && NODE_IFACE.len() <= MAX_IFNAME);
        assert_eq!(l.hub_netns(), format!("mx{}-hub", l.id));
        assert_eq!(l.node_netns(7), format!("mx{}-n7", l.id));
    }

    #[test]
    fn node_index_round_trips_and_rejects_junk() {
        for i in 1..=MAX_NODES {
            assert_eq!(node_index(&node_name(i)), Some(i));
        }
        for bad in [
            "",
            "n",
            "n0",
            "n01",
            "n65",
            "x1",
            "n-1",
            "n1a",
            "N1",
            "n99999999999",
        ] {
            assert_eq!(node_index(bad), None, "{bad}");
        }
    }

    #[test]
    fn addresses_are_distinct_per_node() {
        assert_eq!(node_addr(1), Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(node_addr(64), Ipv4Addr::new(10, 77, 0, 64));
    }

    #[test]
    fn config_parses_with_the_daemons_parser() {
        let l = Layout::new(Path::new("/tmp/mosix \"q\" dir"));
        let cg = PathBuf::from("/sys/fs/cgroup/cpu/mosix-abcd/n2");
        let text = render_config(&l, 2, 3, &cg, 1.0);
        let cfg = mosix_proto::config::Config::parse(&text, Path::new("mosix.toml"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(cfg.node.name, "n2");
        assert_eq!(cfg.node.listen.to_string(), "10.77.0.2:7340");
        let seeds: Vec<String> = cfg.node.seeds.iter().map(|s| s.to_string()).collect();
        assert_eq!(seeds, ["10.77.0.1:7340", "10.77.0.3:7340"]);
        assert_eq!(cfg.node.key_file, l.key_path());
        assert_eq!(cfg.node.runtime_dir, Path::new(RUNTIME_DIR));
        assert_eq!(cfg.load.cgroup.as_deref(), Some(cg.as_path()));
    }

    #[test]
    fn single_node_config_has_no_seeds() {
        let l = Layout::new(Path::new("/tmp/one"));
        let text = render_config(&l, 1, 1, Path::new("/sys/fs/cgroup/x"), 1.0);
        assert!(text.contains("seeds = []"), "{text}");
    }
}
