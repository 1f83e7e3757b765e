//! The cluster network: a hub network namespace holding a bridge, and per
//! node a namespace linked to it by a veth pair. Made with iproute2's `ip`;
//! nothing is added to the root network namespace.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::layout::{BRIDGE, Layout, NODE_IFACE, hub_port, node_addr};

/// Where `ip netns` pins named network namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// The `ip` program.
#[derive(Debug, Clone)]
pub struct Ip {
    path: PathBuf,
}

impl Ip {
    /// Find `ip` in `PATH` or the usual sbin directories (root's `PATH`
    /// under sudo or cron often lacks them).
    pub fn find() -> Result<Ip> {
        let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        dirs.extend(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
        dirs.into_iter()
            .map(|d| d.join("ip"))
            .find(|p| is_executable(p))
            .map(|path| Ip { path })
            .context(
                "the `ip` program (iproute2) was not found in PATH, /usr/sbin or /sbin; \
                 install it: apt-get install iproute2",
            )
    }

    /// Run `ip args...`; an error carries the command and what it printed.
    pub fn run(&self, args: &[&str]) -> Result<()> {
        let out = Command::new(&self.path)
            .args(args)
            .output()
            .with_context(|| format!("cannot run {}", self.path.display()))?;
        if !out.status.success() {
            bail!(
                "`ip {}` failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Path of the pinned network namespace `name`.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Names of pinned network namespaces starting with `prefix`.
pub fn netns_with_prefix(prefix: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(NETNS_DIR)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Make the hub namespace and its bridge.
pub fn create_hub(ip: &Ip, layout: &Layout) -> Result<()> {
    let hub = layout.hub_netns();
    ip.run(&["netns", "add", &hub])?;
    ip.run(&["-n", &hub, "link", "set", "lo", "up"])?;
    ip.run(&["-n", &hub, "link", "add", BRIDGE, "type", "bridge"])?;
    ip.run(&["-n", &hub, "link", "set", BRIDGE, "up"])
}

/// Make node `i`'s namespace, its veth pair to the hub and its address.
pub fn create_node(ip: &Ip, layout: &Layout, i: u32) -> Result<()> {
    let hub = layout.hub_netns();
    let ns = layout.node_netns(i);
    let port = hub_port(i);
    let addr = format!("{}/24", node_addr(i));
    ip.run(&["netns", "add", &ns])?;
    ip.run(&["-n", &ns, "link", "set", "lo", "up"])?;
    ip.run(&[
        "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", NODE_IFACE, "netns", &ns,
    ])?;
    ip.run(&["-n", &hub, "link", "set", &port, "master", BRIDGE, "up"])?;
    ip.run(&["-n", &ns, "addr", "add", &addr, "dev", NODE_IFACE])?;
    ip.run(&["-n", &ns, "link", "set", NODE_IFACE, "up"])
}

/// Delete the pinned network namespace `name` the way `ip netns delete`
/// does (lazy unmount, unlink), so cleaning up needs no `ip`. The namespace
/// (and its veth ends) goes when its last process has left.
pub fn delete_netns(name: &str) -> Result<bool> {
    let path = netns_path(name);
    if !path.exists() {
        return Ok(false);
    }
    super::mounts::unmount(&path)?;
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}
