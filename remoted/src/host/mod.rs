//! Body hosting: the destination side of a migration (ARCHITECTURE.md section 3,
//! steps 3-7; messages in [`mosix_proto::migrate`]).
//!
//! Why a listener of its own in `remoted` (port + 2) rather than the mio
//! loop or `homed`'s link port: ARCHITECTURE.md section 8 wants bodies to be descendants
//! of the destination's `remoted`, and an image transfer is a long,
//! blocking, bulk exchange that would stall the gossip loop. So `remoted`
//! runs one blocking thread per incoming migration, which forks the
//! restorer itself and then serves the body ([`body`]) over the same
//! authenticated link.
//!
//! Steps for one body: accept the link (a peer `homed` proving the cluster
//! key), take the offer, receive the image into a memfd (no file on
//! disk), check it (checksum, CPU features, owner), mount the home's view
//! for its owner if not yet mounted ([`view`]), and fork. The child gets
//! a session of its own, its own mount namespace with the view over the
//! home's exported paths, the owner's ids, its regular files reopened
//! through the view at their offsets, relays for its pipes and terminals,
//! and its control socket at its old number; then it `exec`s
//! `mosix-restore FD hold`, which stops just before the body's first
//! instruction. Seeing it stopped, we brief it (a `BodyInfo` on its
//! control socket) and report [`FromHost::Held`]. [`ToHost::Go`]
//! continues it; anything else (abort, link cut, timeout) kills it, so
//! there are never two copies. The restorer runs in a time namespace
//! of its own that shows the home's clocks ([`timens`]).
//!
//! A body that moves on from another remote node comes straight from
//! there ([`direct`]): the home's offer says so, and the image arrives on
//! a link from that node's `remoted` (the only thing such a link may
//! carry), under a token this host gave the home.
//!
//! # When the home goes away
//!
//! A body's link to its home breaks when the home's `homed` ends (a crash
//! or a restart of the home's daemons): the deputy at home outlives it
//! (see `mosix-deputy`), so the body does too, for a grace period
//! (`[process] home_grace_s`, default 60 s). Meanwhile ([`reattach`]):
//! its view operations fail with EIO at once (its view session is down;
//! nothing queues), its forwarded calls (fork, kill at home, ...) are
//! answered EIO, its output waits in its relay pipes (a body that fills
//! one blocks on it, as on a full pipe), and if it ends its status is
//! kept. When the home's new `homed` learns of it from the deputy, it
//! opens a new authenticated link and asks to re-attach
//! ([`ToHost::Reattach`], checked against the home's node name, home pid
//! and body pid); the body's thread takes that link, says
//! [`FromHost::Held`], and goes on as before: output the old `homed` took
//! and never passed on (the deputy says how much it wrote; each relay
//! keeps its last 8 MiB sent) and output held meanwhile first, then the
//! body's end if it ended meanwhile. The body's view opens a new session
//! with the new `homed` and opens its files again (see
//! `mosix_fusefs::client`). If no new `homed` comes within the
//! grace period, the host ends the body and logs why. Not covered: a link
//! that breaks while the body is frozen for a move (the body is ended, as
//! before).

mod body;
mod direct;
mod family;
pub mod guests;
pub mod reattach;
mod relay;
mod sys;
mod timens;
pub mod view;

use body::Body;
use std::os::unix::net::UnixStream;

use mosix_engine::image::{CpuFeatures, LoadedImage, patch_checksum};
use mosix_engine::session::{self, host::Offered};
use mosix_proto::link::{ClusterKey, Hello, Link, Role};
use mosix_proto::migrate::{BodyStatus, FromHost, HomeClocks, HomeFacts, ToHost, host_addr};
use mosix_proto::reason::{HostFailure, Refusal};
use std::collections::VecDeque;
use std::ffi::CString;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

/// How long the source has for each step before the body is dropped.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the body host could not start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// cannot listen for migrations on {addr}: {error}; is another remoted running?
    #[error("cannot listen for migrations on {addr}: {error}; is another remoted running?")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// What the OS said (in the message; not a `source`, so that
        /// the cause is said once).
        error: std::io::Error,
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
    /// How long a body waits for its home to come back.
    grace: Duration,
}

/// Bodies waiting for their home's new `homed`.
fn waiting() -> &'static reattach::Waiting<Attach> {
    static W: std::sync::OnceLock<reattach::Waiting<Attach>> = std::sync::OnceLock::new();
    W.get_or_init(Default::default)
}

/// A new link from a body's home, and how much of the body's output its
/// deputy wrote (by fd).
type Attach = (Link<TcpStream>, Vec<(i32, u64)>);

/// How much longer than a body's grace period its view tries to open a
/// new session with its home.
const VIEW_RETRY_MARGIN: Duration = Duration::from_secs(30);

/// How long a re-attach waits for a body that has not noticed yet that
/// its old link broke.
const REATTACH_PATIENCE: Duration = Duration::from_secs(10);

/// Listen for migrations on `remoted_listen`'s port + 2 and host bodies,
/// each in a thread of its own, forever (in a thread started here). A
/// body whose home goes away waits `grace` for it to come back.
pub fn start(
    remoted_listen: SocketAddr,
    node: String,
    key: ClusterKey,
    grace: Duration,
) -> Result<(), HostError> {
    let addr = host_addr(remoted_listen);
    let restorer = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("mosix-restore")))
        .unwrap_or_else(|| PathBuf::from("mosix-restore"));
    if !restorer.exists() {
        return Err(HostError::NoRestorer(restorer));
    }
    let listener = TcpListener::bind(addr).map_err(|error| HostError::Listen { addr, error })?;
    // Bodies' children whose parent body ends first are reparented here,
    // to be reaped and reported (see `family`).
    if let Err(e) = family::become_subreaper() {
        tracing::warn!(error = %e, "cannot become the reaper of bodies' orphans; their ends may be reported late");
    }
    direct::set_identity(&node, &key);
    let host = Arc::new(Host {
        node,
        key,
        restorer,
        grace,
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
        .map_err(|error| HostError::Listen { addr, error })?;
    Ok(())
}

impl Host {
    fn serve(&self, stream: TcpStream) {
        let peer = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        if let Err(e) = mosix_proto::migrate::watch_peer(&stream) {
            tracing::warn!(%peer, error = %e, "cannot set keepalive on a migration link; a silent home is noticed late");
        }
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
        if who.role == Role::Remoted {
            // Another node's host with the image of a body whose home
            // moves it here straight from there (see `direct`).
            let _ = link.get_ref().set_read_timeout(Some(STEP_TIMEOUT));
            match link.recv::<ToHost>() {
                Ok(ToHost::Deliver { token, bytes }) => {
                    direct::receive(&mut link, &who.node, token, bytes)
                }
                Ok(other) => {
                    tracing::warn!(from = %who.node, msg = ?other, "a node's remoted may only deliver an image here");
                    let _ = link.send(&FromHost::Refused {
                        reason: Refusal::DeliverOnly,
                    });
                }
                Err(e) => {
                    tracing::warn!(from = %who.node, error = %e, "no delivery on a link from a remoted")
                }
            }
            return;
        }
        if who.role != Role::Homed {
            let _ = link.send(&FromHost::Refused {
                reason: Refusal::NotAHome,
            });
            return;
        }
        let home = who.node.clone();
        let first = match link.recv::<ToHost>() {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(%home, error = %e, "no offer on a migration link");
                return;
            }
        };
        if let ToHost::Reattach {
            home_pid,
            body_pid,
            uid,
            written,
        } = first
        {
            let _ = link.get_ref().set_read_timeout(None);
            let body = reattach::Body { pid: body_pid, uid };
            if let Err((e, (mut link, _))) =
                waiting().offer(&home, home_pid, body, (link, written), REATTACH_PATIENCE)
            {
                tracing::warn!(%home, home_pid, body_pid, error = %e, "cannot re-attach a body to its home");
                let _ = link.send(&FromHost::Failed {
                    reason: HostFailure::NotHere {
                        reason: e.to_string(),
                    },
                });
            }
            return;
        }
        if let ToHost::Adopt { home_pid, token } = first {
            let _ = link.get_ref().set_read_timeout(None);
            match family::adopt(&mut link, &home, home_pid, token) {
                Ok(adopted) => {
                    let body = Body::adopted(adopted, &mut link);
                    let (_registration, leave) = guests::register(body.info.clone());
                    let (pid, uid) = (body.pid, body.uid);
                    body.run(&mut link, &home, leave, self.grace);
                    family::hand_over(&home, uid, pid, family::take_handed(pid));
                    view::release(pid);
                    close_gently(link.get_ref());
                }
                Err(reason) => {
                    tracing::warn!(%home, home_pid, %reason, "cannot adopt a forked child");
                    let _ = link.send(&FromHost::Failed {
                        reason: HostFailure::NotHere { reason },
                    });
                }
            }
            return;
        }
        if let Some(body) = self.take_body(&mut link, &home, first) {
            let (_registration, leave) = guests::register(body.info.clone());
            let (pid, uid) = (body.pid, body.uid);
            body.run(&mut link, &home, leave, self.grace);
            family::hand_over(&home, uid, pid, family::take_handed(pid));
            view::release(pid);
            close_gently(link.get_ref());
        }
    }

    /// Take the body offered by `first` on `link` from `home`: drive the
    /// engine's host session ([`session::host`]) through the offer, the
    /// image, the restore and the source's go. `Some` once the body runs
    /// here; `None` if it was refused, failed or aborted (nothing runs).
    fn take_body(&self, link: &mut Link<TcpStream>, home: &str, first: ToHost) -> Option<Body> {
        use session::host::{Action, Input, Outcome};
        let mut s = session::host::Host::new(&self.node, guests::accepting(), Instant::now());
        let mut pending: VecDeque<Action> = s.input(Input::From(first), Instant::now()).into();
        let mut incoming: Option<Incoming> = None;
        let mut restored: Option<Restored> = None;
        loop {
            let Some(action) = pending.pop_front() else {
                // Wait for the source (the go, after Held).
                let Some(deadline) = s.deadline() else {
                    tracing::warn!(%home, "host session stalled; dropping the move");
                    return None;
                };
                let left = deadline.saturating_duration_since(Instant::now());
                let _ = link
                    .get_ref()
                    .set_read_timeout(Some(left.max(Duration::from_millis(1))));
                let input = match link.recv::<ToHost>() {
                    Ok(m) => Input::From(m),
                    Err(_) if Instant::now() >= deadline => {
                        pending.extend(s.timeout(Instant::now()));
                        continue;
                    }
                    Err(e) => Input::Broken(e.to_string()),
                };
                let _ = link.get_ref().set_read_timeout(Some(STEP_TIMEOUT));
                pending = s.input(input, Instant::now()).into();
                continue;
            };
            let now = Instant::now();
            let next = match action {
                Action::Send(msg) => match link.send(&msg) {
                    Ok(()) => continue,
                    Err(e) => s.input(Input::Broken(e.to_string()), now),
                },
                Action::Prepare(offered) => match self.prepare(home, offered) {
                    Ok(i) => {
                        let token = i.expected.as_ref().map(|e| e.token());
                        incoming = Some(i);
                        s.input(Input::Prepared { token }, now)
                    }
                    Err(why) => s.input(Input::ImageFailed(why), now),
                },
                Action::ReceiveImage { bytes } => {
                    let Some(i) = &incoming else { return None };
                    match direct::take_image(link, &i.image, bytes) {
                        Ok(checksum) => s.input(Input::ImageIn { checksum, bytes }, Instant::now()),
                        Err(why) => s.input(Input::ImageFailed(why), Instant::now()),
                    }
                }
                Action::AwaitDelivery => {
                    let e = incoming.as_ref().and_then(|i| i.expected.as_ref())?;
                    match e.wait(link.get_ref()) {
                        Ok((checksum, bytes)) => {
                            s.input(Input::ImageIn { checksum, bytes }, Instant::now())
                        }
                        Err(why) => s.input(Input::ImageFailed(why), Instant::now()),
                    }
                }
                Action::Restore { checksum } => {
                    let i = incoming.take()?;
                    match self.restore(link, home, i, checksum) {
                        Ok(r) => {
                            let body_pid = r.pid;
                            restored = Some(r);
                            s.input(Input::Restored { body_pid }, Instant::now())
                        }
                        Err(why) => s.input(Input::RestoreFailed(why), Instant::now()),
                    }
                }
                Action::Release { body_pid } => {
                    let r = restored.take()?;
                    if let Err(e) = sys::kill(body_pid, libc::SIGCONT) {
                        let why = drop_body(body_pid, format!("cannot continue the body: {e}"));
                        tracing::warn!(%home, reason = %why, "migration in failed");
                        return None;
                    }
                    tracing::info!(%home, home_pid = r.home_pid, body_pid, "body running");
                    view::hold(body_pid, r.view);
                    let info = guests::GuestInfo {
                        home: home.to_string(),
                        home_pid: r.home_pid,
                        body_pid,
                        uid: r.uid,
                        since: Instant::now(),
                    };
                    return Some(Body {
                        pid: body_pid,
                        uid: r.uid,
                        freeze_signal: r.freeze_signal,
                        ctl: r.ctl,
                        ctl_fd: r.ctl_fd,
                        hello_seen: false,
                        relays: r.relays,
                        info,
                        body_info: r.body_info,
                        ctl_open: true,
                        pending_freeze: None,
                        exec_unannounced: false,
                        home_lost: None,
                    });
                }
                Action::DropBody { body_pid } => {
                    restored = None;
                    drop_body(body_pid, String::new());
                    continue;
                }
                Action::Finish(Outcome::Running { .. }) => return None,
                Action::Finish(Outcome::Refused(why)) => {
                    tracing::warn!(%home, reason = %why, "migration in refused");
                    return None;
                }
                Action::Finish(Outcome::Failed(why)) => {
                    tracing::warn!(%home, reason = %why, "migration in failed");
                    return None;
                }
                Action::Finish(Outcome::Aborted(why)) => {
                    tracing::info!(%home, reason = %why, "migration aborted by the source");
                    return None;
                }
            };
            pending = next.into();
        }
    }

    /// Room for an offered image: a memfd, and, for a direct move, the
    /// token its delivery comes under; the home's clocks against ours
    /// at once (the transfer then takes the same time on both sides).
    fn prepare(&self, home: &str, offered: Offered) -> Result<Incoming, HostFailure> {
        let time_offsets = offered
            .clocks
            .filter(|_| timens::supported())
            .map(|c| timens::offsets(c, HomeClocks::now(), timens::own_offsets()));
        let image = sys::memfd(c"mosix-image").map_err(|e| HostFailure::Local {
            what: "cannot create a memfd for the image".into(),
            error: e.to_string(),
        })?;
        let expected = if offered.direct {
            Some(
                direct::expect(&image, home).map_err(|e| HostFailure::Local {
                    what: "cannot expect the image".into(),
                    error: e.to_string(),
                })?,
            )
        } else {
            None
        };
        Ok(Incoming {
            offered,
            image,
            expected,
            time_offsets,
        })
    }

    /// Check the image that arrived into `incoming` (its header's
    /// `checksum` patched in), then restore it held: the restorer stops
    /// just before the body's first instruction, and the body is briefed
    /// on its control socket. Nothing runs here on error.
    fn restore(
        &self,
        link: &Link<TcpStream>,
        home: &str,
        incoming: Incoming,
        checksum: u64,
    ) -> Result<Restored, HostFailure> {
        let Incoming {
            offered,
            image,
            expected,
            time_offsets,
        } = incoming;
        drop(expected);
        let local = |what: &str, e: &dyn std::fmt::Display| HostFailure::Local {
            what: what.to_string(),
            error: e.to_string(),
        };
        let (home_pid, uid, gid) = (offered.home_pid, offered.uid, offered.gid);
        patch_checksum(&image, checksum).map_err(|e| local("cannot finish the image", &e))?;
        let fd_path = PathBuf::from(format!("/proc/self/fd/{}", image.as_raw_fd()));
        let img = LoadedImage::open(&fd_path).map_err(|e| HostFailure::BadImage {
            error: e.to_string(),
        })?;
        img.check_cpu(CpuFeatures::current())
            .map_err(|e| HostFailure::Cpu {
                error: e.to_string(),
            })?;
        if img.uid != uid {
            return Err(HostFailure::Owner {
                image: img.uid,
                offer: uid,
            });
        }
        let body_view = view::BodyView::prepare(
            home,
            uid,
            gid,
            link.get_ref(),
            &self.key,
            &self.node,
            self.grace + VIEW_RETRY_MARGIN,
        )
        .map_err(|error| HostFailure::View { error })?;
        let (plan, relayed, aliases) = fd_plan(&img, &offered.home, &body_view)
            .map_err(|reason| HostFailure::Files { reason })?;
        let top = plan
            .iter()
            .map(|p| p.0)
            .chain(relayed.iter().map(|r| r.0))
            .max()
            .unwrap_or(2)
            .max(2)
            + 1;
        // Each relayed fd: the body's end at its number, ours kept to
        // carry output home and input in (see `relay::Relay`).
        let mut relays = Vec::new();
        let mut body_ends = Vec::new();
        for &(fd, kind) in &relayed {
            let dups_of: Vec<i32> = aliases
                .iter()
                .filter(|&&(_, of)| of == fd)
                .map(|&(d, _)| d)
                .collect();
            let (relay, body_end) = relay::Relay::new(fd, kind, dups_of)
                .map_err(|e| local(&format!("cannot make a relay for fd {fd}"), &e))?;
            let body_end = sys::dup_above(&std::fs::File::from(body_end), top)
                .map_err(|e| local(&format!("cannot place a relay for fd {fd}"), &e))?;
            relays.push(relay);
            body_ends.push(body_end);
        }
        let mut dups: Vec<(i32, i32)> = relayed
            .iter()
            .zip(&body_ends)
            .map(|(&(fd, _), w)| (fd, w.as_raw_fd()))
            .collect();
        // The body's control connection: its end goes at the number its
        // libmosix uses, so the freeze handler talks to us (see
        // `Body::freeze`).
        let ctl_fd = offered.ctl_fd;
        let (ctl, body_ctl) =
            UnixStream::pair().map_err(|e| local("cannot make the body's control socket", &e))?;
        let body_ctl = sys::dup_above(&std::fs::File::from(OwnedFd::from(body_ctl)), top)
            .map_err(|e| local("cannot place the body's control socket", &e))?;
        if ctl_fd >= 0
            && !plan.iter().any(|p| p.0 == ctl_fd)
            && !relayed.iter().any(|r| r.0 == ctl_fd)
        {
            dups.push((ctl_fd, body_ctl.as_raw_fd()));
        }
        let image_fd =
            sys::dup_above(&image, top).map_err(|e| local("cannot place the image fd", &e))?;
        let raw = image_fd.as_raw_fd();
        let umask = img.umask;
        let entry = body_view
            .entry(uid, gid, &img.cwd)
            .map_err(|error| HostFailure::View { error })?;
        // Run by fd: the restorer's path may be covered by the view.
        let restorer = std::fs::File::open(&self.restorer)
            .map_err(|e| local(&format!("cannot open {}", self.restorer.display()), &e))?;
        let mut cmd = std::process::Command::new(format!("/proc/self/fd/{}", restorer.as_raw_fd()));
        cmd.arg0("mosix-restore")
            .arg(raw.to_string())
            .arg("hold")
            // The memfd is ours alone: freed as the pages land.
            .arg("consume")
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let timens_text = time_offsets.map(timens::offsets_text);
        if let Some(t) = &timens_text {
            tracing::debug!(%home, home_pid, offsets = %t.trim().replace('\n', ", "), "the body's time namespace");
        }
        // SAFETY: the closure runs in the forked child before exec and only
        // makes async-signal-safe system calls (unshare, open, write,
        // mount, setresuid, chdir, umask, lseek, dup2, close, fcntl) on
        // data prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                // Its own session: a body's kill(0, ...) must not reach
                // remoted's process group.
                sys::new_session()?;
                // The home's clocks, from the exec on (as root: before the
                // uid change).
                if let Some(t) = &timens_text {
                    sys::enter_new_timens(c"/proc/self/timens_offsets", t.as_bytes())?;
                }
                entry.enter()?;
                // After the uid change, which would clear it.
                sys::die_with_parent()?;
                sys::place_fds(umask, &dups, &plan, &aliases, raw)
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| local(&format!("cannot start {}", self.restorer.display()), &e))?;
        drop(image_fd);
        drop(restorer);
        drop(body_ends);
        drop(body_ctl);
        drop(image);
        let pid = child.id() as i32;
        let status = sys::waitpid(pid, libc::WUNTRACED)
            .map_err(|e| local("cannot wait for the restorer", &e))?;
        if !libc::WIFSTOPPED(status) {
            return Err(HostFailure::Restore {
                status: format!("{:?}", BodyStatus::from_wait(status)),
            });
        }
        // What its libmosix reads right after its hello: it is a body, and
        // what to answer for home (ids, terminals).
        let body_info = offered.home.body_info();
        (&ctl)
            .write_all(mosix_engine::image::as_bytes(&body_info))
            .map_err(|e| {
                drop_body(pid, String::new());
                local("cannot brief the body", &e)
            })?;
        tracing::info!(%home, home_pid, body_pid = pid, bytes = img.bytes, "body restored and held");
        Ok(Restored {
            pid,
            home_pid,
            uid,
            freeze_signal: offered.freeze_signal,
            ctl,
            ctl_fd,
            relays,
            body_info,
            view: body_view,
        })
    }
}

/// An offered image on its way in.
struct Incoming {
    offered: Offered,
    /// The memfd it goes into.
    image: std::fs::File,
    /// For a direct move: its token, until delivered.
    expected: Option<direct::Expected>,
    /// The body's clocks against this node's.
    time_offsets: Option<(i64, i64)>,
}

/// A body restored and held, waiting for the source's go.
struct Restored {
    pid: i32,
    home_pid: i32,
    uid: u32,
    freeze_signal: i32,
    ctl: UnixStream,
    ctl_fd: i32,
    relays: Relays,
    body_info: mosix_engine::image::layout::BodyInfo,
    view: view::BodyView,
}

/// How long a body's last words wait for the home to read them.
const LINGER: Duration = Duration::from_secs(2);

/// End a body's link so that its last messages (its end, its last
/// output) reach the home: a socket closed with unread input in it (a
/// signal the home forwarded as the body ended) is reset, and a reset
/// throws away what was still on its way. So: no more writes, then read
/// and drop whatever the home still sends, until it closes its side or
/// [`LINGER`] passes.
fn close_gently(stream: &TcpStream) {
    use std::io::Read;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(LINGER));
    let until = Instant::now() + LINGER;
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        match (&*stream).read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// Kill and reap a held body; returns `why` for the caller's error.
fn drop_body(pid: i32, why: String) -> String {
    let _ = sys::kill(pid, libc::SIGKILL);
    let _ = sys::waitpid(pid, 0);
    why
}

/// A body's relayed fds.
type Relays = Vec<relay::Relay>;

/// Fds relayed to the deputy, and how.
type RelayPlan = Vec<(i32, relay::RelayKind)>;

/// Fds that are dups of a lower one: `(fd, of)`.
type Aliases = Vec<(i32, i32)>;

/// How each fd of the image is opened at the destination.
type FdPlan = Vec<(i32, CString, i32, Option<u64>)>;

/// Regular files, directories and devices by the same path (files at the
/// same offset, through the view when there is one); one-way pipes and
/// terminals relayed to the deputy (returned apart); anything else
/// (sockets, two-way pipes) refused until its relay exists, rather than
/// silently cut off.
fn fd_plan(
    img: &LoadedImage,
    home: &HomeFacts,
    body: &view::BodyView,
) -> Result<(FdPlan, RelayPlan, Aliases), String> {
    let seen = |p: &str| body.seen_from_host(p);
    let mut plan = Vec::new();
    let mut relayed = Vec::new();
    let mut aliases = Vec::new();
    for f in &img.fds {
        if let Some(of) = f.same_as {
            // A dup (`2>&1`): the same open file here too, one offset.
            aliases.push((f.fd, of));
            continue;
        }
        let flags =
            (f.flags as i32) & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL | libc::O_NOCTTY);
        if home.ttys.iter().any(|t| t.fd == f.fd) {
            // A terminal at home (here, on a node it came from, the relay
            // socket that stood for it).
            relayed.push((f.fd, relay::RelayKind::Terminal));
            continue;
        }
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
                relayed.push((f.fd, relay::RelayKind::Output));
                continue;
            }
            "pipe" if flags & libc::O_ACCMODE == libc::O_RDONLY => {
                relayed.push((f.fd, relay::RelayKind::Input));
                continue;
            }
            kind => {
                return Err(format!(
                    "fd {} is a {kind} ({}), which a body cannot use yet (only files, devices, terminals and one-way pipes are relayed); the process stays at home",
                    f.fd, f.path
                ));
            }
        };
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| format!("fd {} has a path with a NUL byte", f.fd))?;
        plan.push((f.fd, c, flags, pos));
    }
    Ok((plan, relayed, aliases))
}
