//! Mount namespaces that outlive their creator, the `unshare --mount=FILE`
//! way: the cluster directory is made a private bind mount of itself, a
//! short-lived thread unshares a new mount namespace and prepares it, and the
//! namespace is bind-mounted onto `<dir>/<node>/mnt.ns`, which keeps it alive
//! with no process in it.

use anyhow::{Context, Result, anyhow};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use std::path::{Path, PathBuf};

use super::layout::RUNTIME_DIR;

/// One line of `/proc/self/mountinfo`, the fields we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// Root of the mount within its file system (field 4).
    pub root: String,
    /// Mount point (field 5), unescaped.
    pub mount_point: PathBuf,
    /// File system type (first field after the ` - ` separator).
    pub fstype: String,
    /// Super-block options (last field), e.g. `rw,cpu,cpuacct`.
    pub super_options: String,
}

/// Undo the octal escapes (`\040` for space, ...) of mountinfo fields.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = u32::from(b[i + 1] - b'0') * 64
                + u32::from(b[i + 2] - b'0') * 8
                + u32::from(b[i + 3] - b'0');
            out.push((v & 0xff) as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse the text of a mountinfo file; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            if l.len() < 6 || r.len() < 3 {
                return None;
            }
            Some(MountInfo {
                root: unescape(l[3]),
                mount_point: PathBuf::from(unescape(l[4])),
                fstype: r[0].to_owned(),
                super_options: r[2].to_owned(),
            })
        })
        .collect()
}

/// The mounts of this process's mount namespace.
pub fn mounts() -> Result<Vec<MountInfo>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .context("cannot read /proc/self/mountinfo (is /proc mounted?)")?;
    Ok(parse_mountinfo(&text))
}

/// How many mounts are stacked on `path`.
pub fn mount_count(path: &Path) -> Result<usize> {
    Ok(mounts()?.iter().filter(|m| m.mount_point == path).count())
}

/// Make `dir` a private bind mount of itself, so namespace files can be
/// bound inside it without propagating anywhere (which the kernel refuses).
pub fn bind_private(dir: &Path) -> Result<()> {
    mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .with_context(|| format!("cannot bind-mount {} onto itself", dir.display()))?;
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .with_context(|| format!("cannot make the bind mount {} private", dir.display()))
}

/// Create a time namespace whose CLOCK_MONOTONIC and CLOCK_BOOTTIME run
/// `ahead` seconds ahead of the machine's, pinned on `ns_file` (created
/// here, inside the private bind mount of the cluster directory). With
/// util-linux's `unshare`, which creates, offsets and pins it in one step.
pub fn create_node_timens(ns_file: &Path, ahead: u64) -> Result<()> {
    std::fs::write(ns_file, b"").with_context(|| format!("cannot create {}", ns_file.display()))?;
    let out = std::process::Command::new("unshare")
        .arg(format!("--time={}", ns_file.display()))
        .arg(format!("--monotonic={ahead}"))
        .arg(format!("--boottime={ahead}"))
        .arg("true")
        .output()
        .context("cannot run unshare (util-linux): install util-linux")?;
    if !out.status.success() {
        anyhow::bail!(
            "unshare --time failed (does this kernel have time namespaces, CONFIG_TIME_NS?): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Create a node's mount namespace and pin it on `ns_file` (an existing
/// empty file inside a private mount). Inside, `/` is a recursive slave (mounts
/// made later in the root namespace propagate in where the root namespace
/// shares them, nothing propagates out) and [`RUNTIME_DIR`] is a fresh tmpfs.
pub fn create_node_mntns(ns_file: &Path) -> Result<()> {
    std::fs::create_dir_all(RUNTIME_DIR)
        .with_context(|| format!("cannot create {RUNTIME_DIR} in the root mount namespace"))?;
    let (tid_tx, tid_rx) = std::sync::mpsc::channel::<nix::unistd::Pid>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    // A thread, not a process: unshare(CLONE_NEWNS) gives the calling
    // thread its own file-system context, and the thread's namespace stays
    // reachable at /proc/self/task/<tid>/ns/mnt until it exits.
    let worker = std::thread::Builder::new()
        .name("mntns".into())
        .spawn(move || -> Result<()> {
            unshare(CloneFlags::CLONE_NEWNS).context("unshare(CLONE_NEWNS) failed")?;
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_SLAVE,
                None::<&str>,
            )
            .context("cannot make / a recursive slave in the new mount namespace")?;
            mount(
                Some("tmpfs"),
                RUNTIME_DIR,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some("mode=0755"),
            )
            .with_context(|| {
                format!("cannot mount a tmpfs on {RUNTIME_DIR} in the new namespace")
            })?;
            tid_tx
                .send(nix::unistd::gettid())
                .map_err(|_| anyhow!("parent went away"))?;
            // Stay alive (so the namespace does) until the parent pinned it.
            let _ = done_rx.recv();
            Ok(())
        })
        .context("cannot start a thread to create a mount namespace")?;
    let pinned = match tid_rx.recv() {
        Ok(tid) => {
            let src = format!("/proc/self/task/{tid}/ns/mnt");
            mount(
                Some(src.as_str()),
                ns_file,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .with_context(|| format!("cannot bind-mount {src} onto {}", ns_file.display()))
        }
        Err(_) => Ok(()), // the worker failed; its error is reported below
    };
    drop(done_tx);
    let worked = worker
        .join()
        .map_err(|_| anyhow!("the mount-namespace thread panicked"))?;
    worked?;
    pinned
}

/// Lazily unmount `path`; `Ok(false)` if nothing was mounted there.
pub fn unmount(path: &Path) -> Result<bool> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) => Ok(true),
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot unmount {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
31 22 0:27 /sub /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
40 22 254:0 /tmp/my\\040dir /tmp/my\\040dir rw - ext4 /dev/vda rw
bogus line
";

    #[test]
    fn parses_fields_and_unescapes() {
        let m = parse_mountinfo(SAMPLE);
        assert_eq!(m.len(), 4);
        assert_eq!(m[1].mount_point, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(m[1].fstype, "cgroup");
        assert_eq!(m[1].super_options, "rw,cpu,cpuacct");
        assert_eq!(m[2].root, "/sub");
        assert_eq!(m[3].mount_point, Path::new("/tmp/my dir"));
        assert_eq!(m[3].root, "/tmp/my dir");
    }

    #[test]
    fn unescape_leaves_plain_backslashes() {
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("a\\x"), "a\\x");
        assert_eq!(unescape("end\\04"), "end\\04");
    }
}
