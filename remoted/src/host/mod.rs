//! Body hosting: the destination side of a migration (DESIGN.md section 3,
//! steps 3-5 and 7; messages in [`mosix_proto::migrate`]).
//!
//! Why a listener of its own in `remoted` (port + 2) rather than the mio
//! loop or `homed`'s link port: DESIGN.md wants bodies to be descendants
//! of the destination's `remoted`, and an image transfer is a long,
//! blocking, bulk exchange that would stall the gossip loop. So `remoted`
//! runs one blocking thread per incoming migration, which forks the
//! restorer itself and later relays signals and the exit status over the
//! same authenticated link.
//!
//! Steps for one body: accept the link (a peer `homed` proving the cluster
//! key), take the offer, receive the image into a memfd (no file on
//! disk), check it (checksum, CPU features, owner), reopen its regular
//! files by the same path (the view replaces this later), fork, drop to
//! the owner's uid and gid, and `exec` `mosix-restore FD hold`. The
//! restorer stops itself just before the body's first instruction; seeing
//! it stopped, we report [`FromHost::Held`]. [`ToHost::Go`] continues it;
//! anything else (abort, link cut, timeout) kills it, so there are never
//! two copies. Todo (next steps of issue 4): ttys, pipes and sockets
//! become relay sockets to the deputy (now: /dev/null), a time namespace,
//! a mount namespace with the view.

pub mod guests;
mod sys;
pub mod view;

use mosix_proto::image::{CpuFeatures, LoadedImage, layout, patch_checksum};
use mosix_proto::link::{ClusterKey, Hello, Link, LinkError, Role};
use mosix_proto::migrate::{BodyStatus, FromHost, ToHost, host_addr};
use mosix_proto::view::Bytes;
use std::ffi::CString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

/// How long the source has for each step before the body is dropped.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a hosted body's link is checked while waiting for its end.
const POLL: Duration = Duration::from_millis(100);
/// Most bytes of the body's output in one message.
const OUTPUT_CHUNK: usize = 64 * 1024;
/// Output messages queued before the body's pipe is left to fill.
const OUTPUT_QUEUE: usize = 64;

/// Why the body host could not start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// cannot listen for migrations on {addr}: {source}; is another remoted running?
    #[error("cannot listen for migrations on {addr}: {source}; is another remoted running?")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// {0} is missing: install mosix-restore beside remoted
    #[error("{0} is missing: install mosix-restore beside remoted")]
    NoRestorer(PathBuf),
}

/// What every hosting thread needs.
struct Host {
    node: String,
    key: ClusterKey,
    restorer: PathBuf,
}

/// Listen for migrations on `remoted_listen`'s port + 2 and host bodies,
/// each in a thread of its own, forever (in a thread started here).
pub fn start(remoted_listen: SocketAddr, node: String, key: ClusterKey) -> Result<(), HostError> {
    let addr = host_addr(remoted_listen);
    let restorer = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("mosix-restore")))
        .unwrap_or_else(|| PathBuf::from("mosix-restore"));
    if !restorer.exists() {
        return Err(HostError::NoRestorer(restorer));
    }
    let listener = TcpListener::bind(addr).map_err(|source| HostError::Listen { addr, source })?;
    let host = Arc::new(Host {
        node,
        key,
        restorer,
    });
    tracing::info!(%addr, "hosting bodies");
    std::thread::Builder::new()
        .name("host".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => {
                        let h = host.clone();
                        std::thread::spawn(move || h.serve(s));
                    }
                    Err(e) => tracing::warn!(error = %e, "accept on the body host port failed"),
                }
            }
        })
        .map_err(|source| HostError::Listen { addr, source })?;
    Ok(())
}

impl Host {
    fn serve(&self, stream: TcpStream) {
        let peer = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        let _ = stream.set_read_timeout(Some(STEP_TIMEOUT));
        let _ = stream.set_write_timeout(Some(STEP_TIMEOUT));
        let hello = Hello::new(self.node.clone(), Role::Remoted);
        let (mut link, who) = match Link::accept(stream, &self.key, hello) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "migration link refused");
                return;
            }
        };
        if who.role != Role::Homed {
            let _ = link.send(&FromHost::Refused {
                reason: "only a node's homed may send a body".into(),
            });
            return;
        }
        let home = who.node.clone();
        match self.restore(&mut link, &home) {
            Ok(Some((pid, relays, info))) => {
                let (_registration, leave) = guests::register(info);
                self.run_body(&mut link, pid, &home, relays, leave);
                view::release(pid);
            }
            Ok(None) => {}
            Err(reason) => {
                tracing::warn!(%home, %reason, "migration in failed");
                let _ = link.send(&FromHost::Failed { reason });
            }
        }
    }

    /// Receive, check and restore the body, held; `Some(pid, relays)`
    /// once it was told to go (`relays`: the read ends of its output
    /// pipes, by body fd), `None` if the source aborted (the body is gone).
    fn restore(
        &self,
        link: &mut Link<TcpStream>,
        home: &str,
    ) -> Result<Option<(i32, Relays, guests::GuestInfo)>, String> {
        let (home_pid, uid, gid, bytes) = match link.recv::<ToHost>() {
            Ok(ToHost::Offer {
                home_pid,
                uid,
                gid,
                bytes,
            }) => (home_pid, uid, gid, bytes),
            Ok(other) => return Err(format!("expected an offer, got {other:?}")),
            Err(e) => return Err(format!("no offer: {e}")),
        };
        if !guests::accepting() {
            return Err(format!(
                "node {} takes no guests now (mosctl block); try another node",
                self.node
            ));
        }
        let min = size_of::<layout::ImageHeader>() as u64;
        if bytes < min {
            return Err(format!("an image of {bytes} bytes is too small to be one"));
        }
        let image = sys::memfd(c"mosix-image")
            .map_err(|e| format!("cannot create a memfd for the image: {e}"))?;
        link.send(&FromHost::Accepted)
            .map_err(|e| format!("cannot accept: {e}"))?;
        let mut got = 0u64;
        let mut w = &image;
        while got < bytes {
            let chunk = link
                .recv_bytes()
                .map_err(|e| format!("image transfer cut after {got} of {bytes} bytes: {e}"))?;
            if got + chunk.len() as u64 > bytes {
                return Err(format!(
                    "the source sent more than the {bytes} bytes it offered"
                ));
            }
            w.write_all(&chunk)
                .map_err(|e| format!("cannot store the image in memory: {e}"))?;
            got += chunk.len() as u64;
        }
        let checksum = match link.recv::<ToHost>() {
            Ok(ToHost::ImageEnd { checksum }) => checksum,
            Ok(other) => return Err(format!("expected the image's end, got {other:?}")),
            Err(e) => return Err(format!("no end of image: {e}")),
        };
        patch_checksum(&image, checksum).map_err(|e| format!("cannot finish the image: {e}"))?;
        let fd_path = PathBuf::from(format!("/proc/self/fd/{}", image.as_raw_fd()));
        let img = LoadedImage::open(&fd_path).map_err(|e| format!("bad image: {e}"))?;
        img.check_cpu(CpuFeatures::current())
            .map_err(|e| format!("this node cannot run it: {e}"))?;
        if img.uid != uid {
            return Err(format!(
                "the image belongs to uid {}, the offer says uid {uid}",
                img.uid
            ));
        }
        let body_view =
            view::BodyView::prepare(home, uid, gid, link.get_ref(), &self.key, &self.node)?;
        let (plan, relayed) = fd_plan(&img, &body_view)?;
        let top = plan
            .iter()
            .map(|p| p.0)
            .chain(relayed.iter().copied())
            .max()
            .unwrap_or(2)
            .max(2)
            + 1;
        // Each relayed fd: a pipe whose write end the body gets at that
        // number and whose read end we forward to the deputy.
        let mut relays = Vec::new();
        let mut write_ends = Vec::new();
        for &fd in &relayed {
            let (r, w) = sys::pipe().map_err(|e| format!("cannot make a relay pipe: {e}"))?;
            let w = sys::dup_above(&std::fs::File::from(w), top)
                .map_err(|e| format!("cannot place a relay pipe: {e}"))?;
            relays.push((fd, r));
            write_ends.push(w);
        }
        let dups: Vec<(i32, i32)> = relayed
            .iter()
            .zip(&write_ends)
            .map(|(&fd, w)| (fd, w.as_raw_fd()))
            .collect();
        let image_fd =
            sys::dup_above(&image, top).map_err(|e| format!("cannot place the image fd: {e}"))?;
        let raw = image_fd.as_raw_fd();
        let umask = img.umask;
        let entry = body_view.entry(uid, gid, &img.cwd)?;
        // Run by fd: the restorer's path may be covered by the view.
        let restorer = std::fs::File::open(&self.restorer)
            .map_err(|e| format!("cannot open {}: {e}", self.restorer.display()))?;
        let mut cmd = std::process::Command::new(format!("/proc/self/fd/{}", restorer.as_raw_fd()));
        cmd.arg0("mosix-restore")
            .arg(raw.to_string())
            .arg("hold")
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // SAFETY: the closure runs in the forked child before exec and only
        // makes async-signal-safe system calls (unshare, mount, setresuid,
        // chdir, umask, open, lseek, dup2, close, fcntl) on data prepared
        // before the fork.
        unsafe {
            cmd.pre_exec(move || {
                entry.enter()?;
                sys::place_fds(umask, &dups, &plan, raw)
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.restorer.display()))?;
        drop(image_fd);
        drop(restorer);
        drop(write_ends);
        let pid = child.id() as i32;
        let status = sys::waitpid(pid, libc::WUNTRACED)
            .map_err(|e| format!("cannot wait for the restorer: {e}"))?;
        if !libc::WIFSTOPPED(status) {
            return Err(format!(
                "mosix-restore failed ({:?}); see the process's stderr",
                BodyStatus::from_wait(status)
            ));
        }
        tracing::info!(%home, home_pid, body_pid = pid, bytes, "body restored and held");
        link.send(&FromHost::Held { body_pid: pid })
            .map_err(|e| drop_body(pid, format!("cannot report the held body: {e}")))?;
        match link.recv::<ToHost>() {
            Ok(ToHost::Go) => {
                sys::kill(pid, libc::SIGCONT)
                    .map_err(|e| drop_body(pid, format!("cannot continue the body: {e}")))?;
                tracing::info!(%home, home_pid, body_pid = pid, "body running");
                view::hold(pid, body_view);
                let info = guests::GuestInfo {
                    home: home.to_string(),
                    home_pid,
                    body_pid: pid,
                    uid,
                    since: std::time::Instant::now(),
                };
                Ok(Some((pid, relays, info)))
            }
            Ok(other) => {
                drop_body(pid, format!("source said {other:?} instead of go"));
                tracing::info!(%home, home_pid, "migration aborted by the source");
                Ok(None)
            }
            Err(e) => Err(drop_body(pid, format!("no go from the source: {e}"))),
        }
    }

    /// Relay signals to the running body, its output and its exit status
    /// back.
    fn run_body(
        &self,
        link: &mut Link<TcpStream>,
        pid: i32,
        home: &str,
        relays: Relays,
        leave: mpsc::Receiver<String>,
    ) {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(sys::waitpid(pid, 0));
        });
        // Bounded: a slow reader at home slows the body down (its pipe
        // fills) instead of filling our memory.
        let (out_tx, out_rx) = mpsc::sync_channel::<(i32, Vec<u8>)>(OUTPUT_QUEUE);
        for (fd, r) in relays {
            let out = out_tx.clone();
            std::thread::spawn(move || {
                let mut r = std::fs::File::from(r);
                let mut buf = vec![0u8; OUTPUT_CHUNK];
                loop {
                    match r.read(&mut buf) {
                        Ok(0) => return,
                        Ok(n) => {
                            if out.send((fd, buf[..n].to_vec())).is_err() {
                                return;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => return,
                    }
                }
            });
        }
        drop(out_tx);
        let mut output_open = true;
        let _ = link.get_ref().set_read_timeout(Some(POLL));
        let mut source_gone = false;
        loop {
            let ended = if source_gone {
                rx.recv().ok()
            } else {
                rx.try_recv().ok()
            };
            if output_open && !source_gone {
                output_open = forward_output(link, &out_rx, ended.is_some());
            }
            if !source_gone && let Ok(reason) = leave.try_recv() {
                tracing::info!(%home, body_pid = pid, %reason, "asking the home to take its process back");
                if let Err(e) = link.send(&FromHost::Leave { reason }) {
                    tracing::warn!(%home, body_pid = pid, error = %e, "cannot ask the home to take its process back");
                }
            }
            if let Some(r) = ended {
                let status = r.ok().and_then(BodyStatus::from_wait);
                tracing::info!(%home, body_pid = pid, ?status, "body ended");
                if let (Some(status), false) = (status, source_gone) {
                    let _ = link.send(&FromHost::Exited { status });
                }
                return;
            }
            match link.recv::<ToHost>() {
                Ok(ToHost::Signal { sig }) if (1..=64).contains(&sig) => {
                    if let Err(e) = sys::kill(pid, sig) {
                        tracing::warn!(body_pid = pid, sig, error = %e, "cannot signal the body");
                    }
                }
                Ok(other) => {
                    tracing::warn!(body_pid = pid, msg = ?other, "unexpected message for a running body; killing it");
                    let _ = sys::kill(pid, libc::SIGKILL);
                }
                Err(LinkError::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => {
                    // No deputy any more: no orphan either.
                    tracing::warn!(%home, body_pid = pid, error = %e, "link to the home lost; killing the body");
                    let _ = sys::kill(pid, libc::SIGKILL);
                    source_gone = true;
                }
            }
        }
    }
}

/// Send the body's pending output to the source; after the body ended
/// (`ended`), everything up to the end of its pipes. False once every
/// pipe is closed.
fn forward_output(
    link: &mut Link<TcpStream>,
    out: &mpsc::Receiver<(i32, Vec<u8>)>,
    ended: bool,
) -> bool {
    loop {
        let next = if ended {
            out.recv().map_err(|_| mpsc::TryRecvError::Disconnected)
        } else {
            out.try_recv()
        };
        match next {
            Ok((fd, data)) => {
                if let Err(e) = link.send(&FromHost::Output {
                    fd,
                    data: Bytes(data),
                }) {
                    tracing::warn!(fd, error = %e, "cannot forward the body's output");
                }
            }
            Err(mpsc::TryRecvError::Empty) => return true,
            Err(mpsc::TryRecvError::Disconnected) => return false,
        }
    }
}

/// Kill and reap a held body; returns `why` for the caller's error.
fn drop_body(pid: i32, why: String) -> String {
    let _ = sys::kill(pid, libc::SIGKILL);
    let _ = sys::waitpid(pid, 0);
    why
}

/// The read ends of a body's output pipes, by the body's fd number.
type Relays = Vec<(i32, OwnedFd)>;

/// How each fd of the image is opened at the destination.
type FdPlan = Vec<(i32, CString, i32, Option<u64>)>;

/// Regular files, directories and devices by the same path (files at the
/// same offset); write-only pipes relayed to the deputy (returned apart);
/// anything else (ttys, sockets, read ends of pipes) refused until its
/// relay exists, rather than silently cut off.
fn fd_plan(img: &LoadedImage, body: &view::BodyView) -> Result<(FdPlan, Vec<i32>), String> {
    let seen = |p: &str| body.seen_from_host(p);
    let mut plan = Vec::new();
    let mut relayed = Vec::new();
    for f in &img.fds {
        let flags =
            (f.flags as i32) & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL | libc::O_NOCTTY);
        let (path, flags, pos) = match f.kind {
            "file" => {
                let m = std::fs::metadata(seen(&f.path)).map_err(|e| {
                    format!("fd {} is {}, which this node cannot see: {e}", f.fd, f.path)
                })?;
                if m.len() != f.size {
                    return Err(format!(
                        "fd {} is {}, which is {} bytes here but {} at home",
                        f.fd,
                        f.path,
                        m.len(),
                        f.size
                    ));
                }
                body.check_reopen(f.fd, &f.path, &m, flags)?;
                (PathBuf::from(&f.path), flags, Some(f.pos))
            }
            // A directory's position is its file system's cookie, which
            // the view keeps (a listing goes on at the same entry); another
            // file system's directory would not know it.
            "dir" => {
                let path = PathBuf::from(&f.path);
                let pos = (seen(&f.path) != path).then_some(f.pos);
                (path, flags, pos)
            }
            "other" => (PathBuf::from(&f.path), flags, None),
            "pipe" if flags & libc::O_ACCMODE == libc::O_WRONLY => {
                relayed.push(f.fd);
                continue;
            }
            kind => {
                return Err(format!(
                    "fd {} is a {kind} ({}), which a body cannot use yet (only files, devices and output pipes are relayed); the process stays at home",
                    f.fd, f.path
                ));
            }
        };
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| format!("fd {} has a path with a NUL byte", f.fd))?;
        plan.push((f.fd, c, flags, pos));
    }
    Ok((plan, relayed))
}
