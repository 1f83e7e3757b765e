//! Children of bodies (ARCHITECTURE.md section 4, "process tree"; the libmosix
//! side is `preload/src/family.rs`).
//!
//! When a body forks, its host makes the child's control socket before
//! the fork goes home ([`expect`], under a token), and hands the body the
//! child's end with the answer. The child's home (its deputy, forked from
//! the parent's deputy) then opens a link of its own to this host and
//! says [`mosix_proto::migrate::ToHost::Adopt`] with the token; [`adopt`]
//! waits for the child's hello on its socket, checks that it is a child
//! of the body that forked it, briefs it and serves it like any body: its
//! signals, calls and end go over that link. One link per process keeps
//! the home side one relay per deputy, as for migrated bodies.
//!
//! A forked child does not move on its own in this version: its home
//! refuses to (it shares its parent's relays and view).
//!
//! **A parent that moves on.** A body with children of its own here may
//! move (on, or home): its process here ends at the commit, and its
//! children run on, reparented to this host, their ends going home over
//! their own links as before (their deputies, children of the parent's
//! deputy, are then waited for at home: `mosix_homed::kids`). They still
//! hold the parent's relayed fds, whose far ends the parent's thread
//! pumped home: [`hand_over`] gives each relay that a process here still
//! holds (found by the relay's pipe or socket in `/proc/PID/fd`) to the
//! body thread of one such holder, which pumps it over its own link to
//! its own deputy, which holds the same fd at home (it was forked from
//! the parent's deputy). A relay is only ever pumped by one thread, so
//! its output keeps its order; when that holder ends it first sends what
//! is left in the relay, then hands it on, then sends its status, so a
//! child's output is at home before its parent can see it end. (Output
//! another child wrote into a relay pumped by a sibling may race that
//! child's end through two links: the sibling pumps it as soon as it is
//! written.) Input is no longer read at home for a relay handed over, and
//! an input pipe is not handed over (a child here then reads its end); a
//! relay that only processes without a body here hold (a raw `clone`) is
//! closed. The view stays mounted: each child holds its own share.
//!
//! Ends: the host is a child subreaper ([`become_subreaper`]), so a child
//! whose parent body ended first is reparented here and reaped by its
//! own thread; a child whose parent body waits for it is reaped there
//! and its status goes home with the parent's call (the child's thread
//! reads it from `/proc` while it is a zombie if it can).

use super::Relays;
use super::guests::GuestInfo;
use mosix_engine::image::layout::{self, BodyInfo, Hello};
use mosix_engine::image::{self as image};
use mosix_proto::link::Link;
use mosix_proto::migrate::{BodyStatus, FromHost};
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// How long a forked child has to say hello on its socket.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// A fork whose child was not adopted within this is forgotten.
const PENDING_TTL: Duration = Duration::from_secs(120);
/// How often an ended child nobody reaped yet is looked at.
const REAP_POLL: Duration = Duration::from_millis(100);

/// A fork under way: the child's control socket and what it needs.
pub(super) struct PendingChild {
    ctl: Option<UnixStream>,
    info: Option<BodyInfo>,
    parent: i32,
    uid: u32,
    freeze_signal: i32,
    ctl_fd: i32,
    home: String,
    made: Instant,
    /// The parent's view, kept mounted for the child from the fork on.
    view: Option<super::view::ViewRef>,
}

impl PendingChild {
    /// The child of `parent` (running for `home`), with our end `ctl` of
    /// its control socket.
    pub(super) fn new(ctl: UnixStream, parent: &Parent, home: &str) -> PendingChild {
        PendingChild {
            ctl: Some(ctl),
            info: None,
            parent: parent.pid,
            uid: parent.uid,
            freeze_signal: parent.freeze_signal,
            ctl_fd: parent.ctl_fd,
            home: home.to_string(),
            made: Instant::now(),
            view: super::view::share(parent.pid),
        }
    }
}

/// What a forked child takes from its parent body.
pub(super) struct Parent {
    /// The parent's pid here.
    pub(super) pid: i32,
    /// Its owner.
    pub(super) uid: u32,
    /// Its freeze signal.
    pub(super) freeze_signal: i32,
    /// Its control fd number.
    pub(super) ctl_fd: i32,
}

/// A forked child adopted by its home's link: what its body thread needs.
pub(super) struct Adopted {
    /// Its pid here.
    pub(super) pid: i32,
    /// Its owner.
    pub(super) uid: u32,
    /// Its freeze signal.
    pub(super) freeze_signal: i32,
    /// Our end of its control socket.
    pub(super) ctl: UnixStream,
    /// Its end's number.
    pub(super) ctl_fd: i32,
    /// As the registry shows it.
    pub(super) info: GuestInfo,
    /// What its libmosix answers for home.
    pub(super) body_info: BodyInfo,
    /// It said hello from an exec'd program (a spawned child): home must
    /// hear its command line.
    pub(super) exec: bool,
}

fn pending() -> MutexGuard<'static, HashMap<u64, PendingChild>> {
    static P: OnceLock<Mutex<HashMap<u64, PendingChild>>> = OnceLock::new();
    P.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// A token no other fork of this host uses (unguessable by another home:
/// the count starts at a random number).
pub(super) fn new_token() -> u64 {
    static NEXT: OnceLock<AtomicU64> = OnceLock::new();
    NEXT.get_or_init(|| AtomicU64::new(rand::random::<u64>() >> 1))
        .fetch_add(1, Ordering::Relaxed)
}

/// Keep a fork's child socket until its home adopts it.
pub(super) fn expect(token: u64, child: PendingChild) {
    let mut p = pending();
    p.retain(|_, c| c.made.elapsed() < PENDING_TTL);
    p.insert(token, child);
}

/// The home forked the deputy: the child's facts.
pub(super) fn forked(token: u64, info: BodyInfo) {
    if let Some(c) = pending().get_mut(&token) {
        c.info = Some(info);
    }
}

/// The fork failed at home: drop it.
pub(super) fn forget(token: u64) {
    pending().remove(&token);
}

/// Write `bytes` on `ctl` with `fd` passed along (SCM_RIGHTS) if given.
pub(super) fn send_record(
    ctl: &UnixStream,
    bytes: &[u8],
    fd: Option<BorrowedFd<'_>>,
) -> std::io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let Some(fd) = fd else {
        return (&*ctl).write_all(bytes);
    };
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [std::io::IoSlice::new(bytes)];
    let sent = loop {
        match sendmsg::<()>(ctl.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None) {
            Ok(n) => break n,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    (&*ctl).write_all(&bytes[sent..])
}

/// Serve `ToHost::Adopt`: the child of the fork `token` says hello on
/// its socket; check it, brief it, and return it, running (`Held` is
/// sent to the home).
pub(super) fn adopt(
    link: &mut Link<TcpStream>,
    home: &str,
    home_pid: i32,
    token: u64,
) -> Result<Adopted, String> {
    let (mut ctl, parent, uid, freeze_signal, ctl_fd) = {
        let mut p = pending();
        let c = p
            .get_mut(&token)
            .filter(|c| c.home == home)
            .ok_or_else(|| format!("no fork of a body of {home} waits under that token"))?;
        let ctl = c
            .ctl
            .take()
            .ok_or("that fork's child was adopted already")?;
        (ctl, c.parent, c.uid, c.freeze_signal, c.ctl_fd)
    };
    let child = read_child_hello(&mut ctl, parent, uid);
    let (info, view) = pending()
        .remove(&token)
        .map(|c| (c.info, c.view))
        .unwrap_or_default();
    let (pid, exec) = child?;
    let info = info.ok_or("the child said hello before its fork was answered")?;
    if info.home_pid != home_pid {
        return Err(format!(
            "the fork made home pid {}, the home adopts {home_pid}",
            info.home_pid
        ));
    }
    (&ctl)
        .write_all(image::as_bytes(&info))
        .map_err(|e| format!("cannot brief the forked child: {e}"))?;
    let _ = ctl.set_read_timeout(None);
    if let Some(v) = view {
        super::view::hold_share(pid, v);
    }
    link.send(&FromHost::Held { body_pid: pid })
        .map_err(|e| format!("cannot report the adopted child: {e}"))?;
    tracing::info!(%home, home_pid, body_pid = pid, parent_body = parent, "forked child adopted");
    Ok(Adopted {
        pid,
        uid,
        freeze_signal,
        ctl,
        ctl_fd,
        info: GuestInfo {
            home: home.to_string(),
            home_pid,
            body_pid: pid,
            uid,
            since: Instant::now(),
        },
        body_info: info,
        exec,
    })
}

/// The forked child's hello: its pid, once it is checked to be a child of
/// `parent` owned by `uid`, and whether it comes from an exec'd program
/// (a spawned child) rather than the fork itself.
fn read_child_hello(ctl: &mut UnixStream, parent: i32, uid: u32) -> Result<(i32, bool), String> {
    let _ = ctl.set_read_timeout(Some(HELLO_TIMEOUT));
    let mut hb = [0u8; size_of::<Hello>()];
    ctl.read_exact(&mut hb)
        .map_err(|e| format!("the forked child never said hello: {e}"))?;
    let h = image::from_bytes::<Hello>(&hb).ok_or("a hello of the wrong size")?;
    if h.magic != layout::HELLO_MAGIC
        || h.version != layout::LAYOUT_VERSION
        || !(h.kind == layout::HELLO_CHILD || h.kind == layout::HELLO_EXEC)
    {
        return Err("the forked child said a bad hello".into());
    }
    let pid = h.pid;
    let (ppid, _, _) = stat(pid).ok_or_else(|| format!("the forked child {pid} is gone"))?;
    // Reparented to us if its parent body ended meanwhile.
    if ppid != parent && ppid != std::process::id() as i32 {
        return Err(format!(
            "process {pid} says it is the forked child of body {parent}, but its parent is {ppid}"
        ));
    }
    let owner = std::fs::metadata(format!("/proc/{pid}"))
        .map(|m| m.uid())
        .map_err(|e| format!("cannot read the owner of process {pid}: {e}"))?;
    if owner != uid {
        return Err(format!(
            "process {pid} belongs to uid {owner}, its parent body to uid {uid}"
        ));
    }
    Ok((pid, h.kind == layout::HELLO_EXEC))
}

/// `(ppid, state, exit_code)` of `pid` from `/proc/PID/stat`; None if
/// it is gone.
fn stat(pid: i32) -> Option<(i32, char, i32)> {
    mosix_engine::procfs::stat(pid).map(|s| (s.ppid, s.state, s.exit_code.unwrap_or(0)))
}

/// How the ended body `pid` ended. Ours to reap (a migrated body, or a
/// child whose parent ended first): reaped here. A zombie child of
/// another body: read from `/proc`, and reaped by a thread here if its
/// parent never does. `None`: its parent reaped it first.
pub(super) fn end_status(pid: i32) -> Option<BodyStatus> {
    let me = std::process::id() as i32;
    let (ppid, state, code) = stat(pid)?;
    if ppid == me {
        return super::sys::waitpid(pid, 0)
            .ok()
            .and_then(BodyStatus::from_wait);
    }
    if state != 'Z' {
        // Not ended after all (a pidfd of a non-child reads at its end);
        // take no chances: ask its parent.
        return None;
    }
    let status = BodyStatus::from_wait(code);
    std::thread::spawn(move || reap_when_orphaned(pid));
    status
}

/// Reap the zombie `pid` if it is reparented to us (its parent body ended
/// without waiting); stop when someone else reaped it.
fn reap_when_orphaned(pid: i32) {
    let me = std::process::id() as i32;
    while let Some((ppid, state, _)) = stat(pid) {
        if state != 'Z' {
            // The pid was reused by a new process: ours is gone.
            return;
        }
        if ppid == me {
            let _ = super::sys::waitpid(pid, 0);
            return;
        }
        std::thread::sleep(REAP_POLL);
    }
}

/// Relays handed over to a body, by its pid here, until its thread takes
/// them ([`take_handed`]).
fn handed() -> MutexGuard<'static, HashMap<i32, Relays>> {
    static H: OnceLock<Mutex<HashMap<i32, Relays>>> = OnceLock::new();
    H.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// The relays handed over to the body `pid` since its thread last looked.
pub(super) fn take_handed(pid: i32) -> Relays {
    handed().remove(&pid).unwrap_or_default()
}

/// Device and inode of every file the process `pid` has open (empty if
/// it is gone or ended: an ended process holds nothing).
fn open_files(pid: i32) -> HashSet<(u64, u64)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::metadata(e.path()).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect()
}

/// The body `from` (of `home`, owned by `uid`) left this node or ended:
/// each of its `relays` that another body of the same home and owner
/// here still holds goes on with that body's thread (see the module's
/// doc); the others are dropped (closed).
///
/// Sound against a holder that ends meanwhile: the holder is chosen
/// only while its process still has the relay open, under the lock its
/// thread takes its handed relays with, and that thread looks once more
/// after its process ended (`Body::finish`).
pub(super) fn hand_over(home: &str, uid: u32, from: i32, relays: Relays) {
    let relays: Relays = relays
        .into_iter()
        .filter_map(super::relay::Relay::for_heir)
        .collect();
    if relays.is_empty() {
        return;
    }
    let mut h = handed();
    let holders: Vec<(i32, HashSet<(u64, u64)>)> = super::guests::list()
        .into_iter()
        .filter(|g| g.home == home && g.uid == uid && g.body_pid != from)
        .map(|g| (g.body_pid, open_files(g.body_pid)))
        .filter(|(_, files)| !files.is_empty())
        .collect();
    for r in relays {
        let heir = r
            .holder_key()
            .and_then(|key| holders.iter().find(|(_, files)| files.contains(&key)));
        match heir {
            Some((pid, _)) => {
                tracing::info!(%home, from_body = from, to_body = *pid, fd = r.fd(), "relay handed over to a body that still writes to it");
                h.entry(*pid).or_default().push(r);
            }
            None => {
                tracing::debug!(%home, from_body = from, fd = r.fd(), "no body here holds the relay any more; closed");
            }
        }
    }
}

/// Make this process (`remoted`) the reaper of its bodies' orphans.
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) only sets a flag of this
    // process.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
    }

    #[test]
    fn a_process_holding_a_relay_is_found_by_its_key() {
        use super::super::relay::{Relay, RelayKind};
        let (relay, body_end) = Relay::new(1, RelayKind::Output, Vec::new()).unwrap();
        let key = relay.holder_key().unwrap();
        let me = std::process::id() as i32;
        assert!(open_files(me).contains(&key));
        drop(body_end);
        // Our read end is the same pipe: still held here.
        assert!(open_files(me).contains(&key));
        let other = Relay::new(2, RelayKind::Output, Vec::new()).unwrap().0;
        assert_ne!(other.holder_key(), Some(key));
        assert!(open_files(i32::MAX).is_empty());
    }

    #[test]
    fn input_pipes_are_not_handed_over_and_terminals_lose_their_input() {
        use super::super::relay::{Relay, RelayKind};
        let (input, _e1) = Relay::new(0, RelayKind::Input, Vec::new()).unwrap();
        assert!(input.for_heir().is_none());
        let (tty, theirs) = Relay::new(1, RelayKind::Terminal, Vec::new()).unwrap();
        let key = tty.holder_key().unwrap();
        let st = nix::sys::stat::fstat(&theirs).unwrap();
        // A terminal relay is known by the body's end of its socket.
        assert_eq!(key, (st.st_dev, st.st_ino));
        let heir = tty.for_heir().unwrap();
        assert_eq!(heir.fd(), 1);
        let (out, _e2) = Relay::new(2, RelayKind::Output, Vec::new()).unwrap();
        assert!(out.for_heir().is_some());
    }

    #[test]
    fn relays_handed_to_no_holder_are_dropped() {
        use super::super::relay::{Relay, RelayKind};
        let (r, _end) = Relay::new(1, RelayKind::Output, Vec::new()).unwrap();
        hand_over("no-such-home", 0, 1, vec![r]);
        assert!(take_handed(1).is_empty());
    }

    #[test]
    fn unknown_tokens_are_not_adopted() {
        forget(12345);
        forked(12345, BodyInfo::at_home());
        assert!(pending().get(&12345).is_none());
    }
}
