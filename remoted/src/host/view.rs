//! The view for hosted bodies (ARCHITECTURE.md section 6): `remoted` mounts, on
//! this node, one view of each home for each user with bodies here, and
//! gives every body a mount namespace of its own in which that view is
//! bind-mounted over the home-exported top-level directories, so the body
//! sees the home's files at the same paths (raw system calls included) and
//! its regular files are reopened through the view.
//!
//! # Why an in-process FUSE session, not a `mosix-viewmount` child
//!
//! A mount is made when the first body of (home, uid) arrives and dropped
//! when the last one ends; the count lives here, beside the bodies. With a
//! child process per view, `remoted` would have to start it, wait for its
//! "mounted" line, watch it die, and find the binary; in-process, the
//! session is a value ([`fuser::BackgroundSession`]) whose drop unmounts,
//! and a home that died is seen at once ([`ViewClient::is_alive`]) so the
//! next body gets a fresh session. A view whose home's `homed` restarts
//! is not dead: its client opens a new session when the home is back
//! (within the bodies' grace period), and the bodies' mounts work again
//! (see `mosix_fusefs::client`, "When the home goes away"). `remoted` runs as root in the node's
//! mount namespace, which is what mounting needs. The FUSE threads are
//! never touched by the restorer's `fork` child (it only makes system
//! calls), so forking while they run is safe.
//!
//! # Where and for whom
//!
//! Views are mounted at `/run/mosix/view/<home>/<uid>-<n>` (`n` counts
//! mounts, so a view remounted after its home's `homed` restarted never
//! shares a path with the dead one that bodies may still hold).
//! `/run/mosix/view` is mode 0700: a body runs as its owner and must not
//! walk into another user's view (the home would act as that user). The
//! home's session acts as the body's uid and primary gid, without
//! supplementary groups, as the body itself runs.
//!
//! Root's bodies get no view: the home's file server never acts as root
//! (ARCHITECTURE.md section 9), so a body of uid 0 sees this node's own files,
//! as before the view existed.
//!
//! # Which paths
//!
//! Every top-level directory of this node except [`NODE_LOCAL`] that the
//! home's view also shows as a directory (the home's `[view]` policy hides
//! its `local` paths, which then stay this node's). A top-level directory
//! the home has but this node lacks has no mount point here and is not
//! shown (creating directories in this node's `/` is not ours to do).
//!
//! # Where the home's `homed` is
//!
//! At the address the migration link came from, on the port below this
//! body host's (`homed` listens on `remoted`'s port + 1, the host on +2):
//! a cluster's nodes use one port layout.

mod ns;

pub use ns::Entry;

use mosix_fusefs::{Creds, ViewClient};
use mosix_proto::link::ClusterKey;
use mosix_proto::migrate::HOST_PORT_OFFSET;
use std::collections::HashMap;
use std::ffi::CString;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// Where views are mounted.
pub const VIEW_DIR: &str = "/run/mosix/view";

/// Top-level directories a body always sees from this node: the kernel's
/// (`proc`, `sys`, `dev`), this node's runtime state (`run`, which holds
/// `/run/mosix`), and the system directories a homogeneous cluster has
/// alike (ARCHITECTURE.md section 6).
pub const NODE_LOCAL: &[&str] = &[
    "proc", "sys", "dev", "run", "usr", "lib", "lib32", "lib64", "libx32", "bin", "sbin", "etc",
];

/// Whether the top-level name `name` is one the view may cover.
pub fn may_cover(name: &str) -> bool {
    !NODE_LOCAL.contains(&name) && !name.is_empty() && name != "." && name != ".."
}

/// The top-level directories to cover: those of `local` (this node's
/// top-level directories, symlinks excluded) that [`may_cover`] allows and
/// `home_has_dir` says the home's view shows as a directory; sorted.
pub fn covered(local: &[String], mut home_has_dir: impl FnMut(&str) -> bool) -> Vec<String> {
    let mut out: Vec<String> = local
        .iter()
        .filter(|n| may_cover(n) && home_has_dir(n))
        .cloned()
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether a peer's node name is safe as one path component.
fn safe_component(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The home's `homed` link address, from the migration link's two ends.
pub fn home_address(peer: SocketAddr, host_port: u16) -> SocketAddr {
    let mut a = peer;
    a.set_port(host_port.wrapping_sub(HOST_PORT_OFFSET - 1));
    a
}

/// One mounted view.
struct Mounted {
    key: (String, u32),
    root: PathBuf,
    refs: usize,
    client: Arc<ViewClient>,
    session: fuser::BackgroundSession,
}

#[derive(Default)]
struct Registry {
    next: u64,
    current: HashMap<(String, u32), u64>,
    mounts: HashMap<u64, Mounted>,
    /// Views held by running bodies, by body pid.
    held: HashMap<i32, ViewRef>,
}

fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(Registry::default()))
}

fn lock() -> std::sync::MutexGuard<'static, Registry> {
    registry().lock().unwrap_or_else(|e| e.into_inner())
}

/// One body's share of a mounted view; the view is unmounted when the
/// last share is dropped.
pub struct ViewRef {
    id: u64,
    root: PathBuf,
}

impl Drop for ViewRef {
    fn drop(&mut self) {
        let gone = {
            let mut r = lock();
            let Some(m) = r.mounts.get_mut(&self.id) else {
                return;
            };
            m.refs -= 1;
            if m.refs > 0 {
                return;
            }
            let m = r.mounts.remove(&self.id);
            if let Some(m) = &m
                && r.current.get(&m.key) == Some(&self.id)
            {
                r.current.remove(&m.key);
            }
            m
        };
        if let Some(m) = gone {
            unmount(m);
        }
    }
}

/// Unmount a view nobody uses, in the background: the session's thread
/// ends only once every copy of the mount is gone (the kernel frees the
/// last body's namespace a little after the body ends), and no caller
/// should wait for that.
fn unmount(m: Mounted) {
    let Mounted {
        key,
        root,
        client,
        session,
        ..
    } = m;
    tracing::info!(home = %key.0, uid = key.1, mountpoint = %root.display(), "unmounting the view: its last body left");
    // Ends every pending and later operation with EIO: no thread can hang
    // on a home nobody needs any more.
    client.shutdown();
    let spawned = std::thread::Builder::new()
        .name("view-unmount".into())
        .spawn(move || {
            if let Err(e) = session.umount_and_join() {
                tracing::warn!(mountpoint = %root.display(), error = %e, "unmounting the view failed; detaching it");
                let _ = nix::mount::umount2(&root, nix::mount::MntFlags::MNT_DETACH);
            }
            let _ = std::fs::remove_dir(&root);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start a thread to unmount a view");
    }
}

/// Take a share of the view of `home` for `uid`, mounting it if needed.
fn acquire(
    home: &str,
    uid: u32,
    gid: u32,
    addr: SocketAddr,
    key: &ClusterKey,
    node: &str,
    retry_for: std::time::Duration,
) -> Result<ViewRef, String> {
    if !safe_component(home) {
        return Err(format!("home node name {home:?} cannot name a view"));
    }
    let k = (home.to_string(), uid);
    // Held across connect and mount, so two bodies of one user arriving
    // together share one view; both are bounded (connect: 10 s, link
    // handshake: 30 s).
    let mut r = lock();
    if let Some(&id) = r.current.get(&k) {
        if let Some(m) = r.mounts.get_mut(&id)
            && m.client.is_alive()
        {
            m.refs += 1;
            return Ok(ViewRef {
                id,
                root: m.root.clone(),
            });
        }
        // Its home went away: bodies still using it keep getting EIO;
        // newcomers get a fresh session at a new path.
        r.current.remove(&k);
    }
    let id = r.next;
    r.next += 1;
    let base = Path::new(VIEW_DIR);
    make_private_dir(base)?;
    let dir = base.join(home);
    make_private_dir(&dir)?;
    let root = dir.join(format!("{uid}-{id}"));
    std::fs::create_dir_all(&root)
        .map_err(|e| format!("cannot create the view mount point {}: {e}", root.display()))?;
    let creds = Creds {
        uid,
        gid,
        groups: Vec::new(),
    };
    let (client, _) = ViewClient::connect(addr, key, node, &creds).map_err(|e| {
        let _ = std::fs::remove_dir(&root);
        format!("cannot open the view of {home} for uid {uid}: {e}")
    })?;
    // Bodies outlive a restart of their home's homed; so does their view.
    client.keep_trying_for(retry_for);
    let session = mosix_fusefs::spawn_mount(client.clone(), home, &root).map_err(|e| {
        client.shutdown();
        let _ = std::fs::remove_dir(&root);
        format!(
            "cannot mount the view of {home} at {}: {e}; is /dev/fuse there?",
            root.display()
        )
    })?;
    tracing::info!(%home, uid, %addr, mountpoint = %root.display(), "view mounted");
    r.current.insert(k.clone(), id);
    r.mounts.insert(
        id,
        Mounted {
            key: k,
            root: root.clone(),
            refs: 1,
            client,
            session,
        },
    );
    Ok(ViewRef { id, root })
}

/// Why body `pid` cannot move now because it holds record locks through a
/// view (its locks are the home's, kept for it by its view session, and
/// would be dropped when its fds here close); `None` if it holds none.
pub fn locks_block_move(pid: i32) -> Option<mosix_proto::reason::CantMove> {
    let pid = u32::try_from(pid).ok()?;
    let r = lock();
    r.mounts
        .values()
        .find(|m| m.client.locks().holds(pid))
        .map(|m| mosix_proto::reason::CantMove::ViewLocks {
            home: m.key.0.clone(),
        })
}

/// Create `dir` (mode 0700, owned by root) if missing.
fn make_private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("cannot create {}: {e}", dir.display())),
    }
}

/// The view one body sees: a share of its home's view (none for root's
/// bodies) and the directories bound over.
pub struct BodyView {
    view: Option<ViewRef>,
    covered: Vec<String>,
    uid: u32,
    gid: u32,
}

impl BodyView {
    /// Mount (or share) the view of `home` for the body of `uid`:`gid`
    /// arriving on `link`, and work out which directories it covers.
    /// `node` is this node's name; a broken view session tries to open
    /// again for `retry_for` (the home's `homed` restarting).
    pub fn prepare(
        home: &str,
        uid: u32,
        gid: u32,
        link: &TcpStream,
        key: &ClusterKey,
        node: &str,
        retry_for: std::time::Duration,
    ) -> Result<BodyView, String> {
        if uid == 0 {
            tracing::info!(%home, "a body of root sees this node's files: the view never acts as root");
            return Ok(BodyView {
                view: None,
                covered: Vec::new(),
                uid,
                gid,
            });
        }
        let peer = link
            .peer_addr()
            .map_err(|e| format!("cannot tell where the migration link comes from: {e}"))?;
        let local = link
            .local_addr()
            .map_err(|e| format!("cannot tell the migration link's local port: {e}"))?;
        let view = acquire(
            home,
            uid,
            gid,
            home_address(peer, local.port()),
            key,
            node,
            retry_for,
        )?;
        let tops: Vec<String> = std::fs::read_dir("/")
            .map_err(|e| format!("cannot list this node's /: {e}"))?
            .flatten()
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        let covered = covered(&tops, |n| {
            std::fs::symlink_metadata(view.root.join(n))
                .map(|m| m.is_dir())
                .unwrap_or(false)
        });
        tracing::info!(%home, uid, covered = ?covered, "body's view prepared");
        Ok(BodyView {
            view: Some(view),
            covered,
            uid,
            gid,
        })
    }

    /// Whether the body's user can reopen its fd `fd` (`path`, now with
    /// `meta`) with `flags`: a file opened for writing at its creation
    /// with a read-only mode (git's object files) cannot be, and the
    /// restorer would fail with a bare EACCES. (Checked by mode bits;
    /// the home has the last word.)
    pub fn check_reopen(
        &self,
        fd: i32,
        path: &str,
        meta: &std::fs::Metadata,
        flags: i32,
    ) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        if self.view.is_none() {
            return Ok(());
        }
        match may_reopen(
            meta.mode(),
            meta.uid(),
            meta.gid(),
            self.uid,
            self.gid,
            flags,
        ) {
            true => Ok(()),
            false => Err(format!(
                "fd {fd} is {path}, open for {} but mode {:o} does not let uid {} open it so again; the process stays at home (try again once it closed the file)",
                access_name(flags),
                meta.mode() & 0o7777,
                self.uid
            )),
        }
    }

    /// Where this daemon (outside the body's namespace) finds the body's
    /// path `path`: through the view if a covered directory holds it.
    pub fn seen_from_host(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if let Some(v) = &self.view
            && let Ok(rest) = p.strip_prefix("/")
            && let Some(std::path::Component::Normal(top)) = rest.components().next()
            && self.covered.iter().any(|c| c.as_bytes() == top.as_bytes())
        {
            return v.root.join(rest);
        }
        p.to_path_buf()
    }

    /// What the restorer's child does before `exec` to become this body:
    /// its namespace and binds, credentials, and cwd.
    pub fn entry(&self, uid: u32, gid: u32, cwd: &str) -> Result<Entry, String> {
        let c = |p: &Path| {
            CString::new(p.as_os_str().as_bytes())
                .map_err(|_| format!("path {} has a NUL byte", p.display()))
        };
        let mut binds = Vec::new();
        if let Some(v) = &self.view {
            for top in &self.covered {
                binds.push((c(&v.root.join(top))?, c(&Path::new("/").join(top))?));
            }
        }
        Ok(Entry {
            binds,
            uid,
            gid,
            cwd: c(Path::new(cwd))?,
        })
    }
}

/// Whether a user `uid`:`gid` (no supplementary groups) may open a file
/// of `mode` owned by `fuid`:`fgid` with the access mode of `flags`.
pub fn may_reopen(mode: u32, fuid: u32, fgid: u32, uid: u32, gid: u32, flags: i32) -> bool {
    let bits = if fuid == uid {
        (mode >> 6) & 7
    } else if fgid == gid {
        (mode >> 3) & 7
    } else {
        mode & 7
    };
    let need = match flags & libc::O_ACCMODE {
        libc::O_WRONLY => 2,
        libc::O_RDWR => 6,
        _ => 4,
    };
    bits & need == need
}

fn access_name(flags: i32) -> &'static str {
    match flags & libc::O_ACCMODE {
        libc::O_WRONLY => "writing",
        libc::O_RDWR => "reading and writing",
        _ => "reading",
    }
}

/// Keep `body`'s view mounted while the body `pid` runs.
pub fn hold(pid: i32, body: BodyView) {
    if let Some(v) = body.view {
        // A pid reused by a new body: the old share is dropped (unmounting
        // outside the lock is done by the share's drop, after this).
        let old = lock().held.insert(pid, v);
        drop(old);
    }
}

/// Another share of the view the body `parent` holds (for a child it
/// forks, which runs in the same mount namespace and must keep the view
/// mounted even if its parent ends first); None if it holds none.
pub fn share(parent: i32) -> Option<ViewRef> {
    let mut r = lock();
    let v = r.held.get(&parent)?;
    let (id, root) = (v.id, v.root.clone());
    r.mounts.get_mut(&id)?.refs += 1;
    Some(ViewRef { id, root })
}

/// Keep `view` (from [`share`]) mounted while the body `pid` runs.
pub fn hold_share(pid: i32, view: ViewRef) {
    let old = lock().held.insert(pid, view);
    drop(old);
}

/// The body `pid` ended or left: drop its share of its view.
pub fn release(pid: i32) {
    let v = lock().held.remove(&pid);
    drop(v);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn system_directories_stay_local() {
        for n in ["proc", "sys", "dev", "run", "usr", "lib64", "etc", "bin"] {
            assert!(!may_cover(n), "{n} must stay this node's");
        }
        for n in [
            "home", "tmp", "srv", "var", "opt", "root", "mnt", "etcetera",
        ] {
            assert!(may_cover(n), "{n} should come from the home");
        }
    }

    #[test]
    fn covers_only_what_both_sides_have_as_directories() {
        let local = names(&["tmp", "home", "proc", "srv", "var", "onlyhere"]);
        let home = ["tmp", "home", "proc", "srv", "onlythere"];
        let got = covered(&local, |n| home.contains(&n));
        assert_eq!(got, names(&["home", "srv", "tmp"]));
    }

    #[test]
    fn home_address_is_one_port_below_the_host() {
        let peer: SocketAddr = "10.77.0.2:40000".parse().unwrap();
        assert_eq!(
            home_address(peer, 7342),
            "10.77.0.2:7341".parse::<SocketAddr>().unwrap()
        );
    }

    #[test]
    fn read_only_files_open_for_writing_cannot_be_reopened() {
        let (u, g) = (1000, 100);
        assert!(may_reopen(0o644, u, g, u, g, libc::O_RDWR));
        assert!(!may_reopen(0o444, u, g, u, g, libc::O_RDWR));
        assert!(may_reopen(0o444, u, g, u, g, libc::O_RDONLY));
        assert!(!may_reopen(0o604, 0, g, u, g, libc::O_RDONLY));
        assert!(may_reopen(0o604, 0, 7, u, g, libc::O_RDONLY));
        assert!(may_reopen(0o020, 0, g, u, g, libc::O_WRONLY));
    }

    #[test]
    fn node_names_that_are_not_one_component_are_refused() {
        assert!(safe_component("n1"));
        assert!(safe_component("node-1.lab"));
        for bad in ["", ".", "..", "a/b", "../x", "a b"] {
            assert!(!safe_component(bad), "{bad:?}");
        }
    }

    #[test]
    fn paths_under_covered_directories_go_through_the_view() {
        let v = BodyView {
            view: Some(ViewRef {
                id: u64::MAX,
                root: PathBuf::from("/run/mosix/view/n1/1000-0"),
            }),
            covered: names(&["srv", "tmp"]),
            uid: 1000,
            gid: 1000,
        };
        assert_eq!(
            v.seen_from_host("/srv/a/b"),
            PathBuf::from("/run/mosix/view/n1/1000-0/srv/a/b")
        );
        assert_eq!(v.seen_from_host("/srvx/a"), PathBuf::from("/srvx/a"));
        assert_eq!(v.seen_from_host("/dev/null"), PathBuf::from("/dev/null"));
        let e = v.entry(1000, 1000, "/srv/a").unwrap();
        assert_eq!(e.binds.len(), 2);
        assert_eq!(e.binds[0].1.as_bytes(), b"/srv");
    }
}
