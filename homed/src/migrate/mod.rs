//! The source side of a migration from home (ARCHITECTURE.md section 3,
//! steps 3, 5 and 7; messages in [`mosix_proto::migrate`]).
//!
//! The order of a move and its commit point are the engine's
//! ([`mosix_engine::session::source`]); this module drives that session
//! over real links and sockets. [`move_out`]: the process frozen at home
//! is offered to the destination's body host (`remoted`, port + 2), its
//! image streamed, and once the body is restored and held there, the
//! frozen process becomes its deputy (the freeze handler `exec`s
//! `mosix-deputy`, keeping pid, parent and fds) and only then is the body
//! told to go. Any failure before that leaves the process running at
//! home, unchanged; the host kills a held body whose source gave up or
//! vanished.
//!
//! After the commit, [`relay`] carries the deputy's signals to the body,
//! and the body's output to pipes and its exit status back to the deputy,
//! until the body ends. It also serves the body's forwarded calls
//! ([`Call`]) with the deputy: `getppid`, `kill` at home, the end of a
//! reaped child, and `fork`, for which the deputy forks and the new
//! deputy gets a relay of its own over its own link ([`Family`]).
//!
//! A body moves on from one remote node to another with its image going
//! straight between the two ([`ToHost::FreezeTo`]; the destination's
//! side is `mosix_remoted`'s `host::direct`): this side makes the offer,
//! keeps the commit point (the old body ends only once the new one is
//! held; before that any failure says `Resume` and it runs on where it
//! was), and takes the new node's link as the body's. Coming home, the
//! image comes over the body's link.
//!
//! The relay also tells the deputy where its body runs
//! ([`DeputyMsg::Where`], at its start and after every move), so that if
//! this `homed` goes away (the home's daemons restarting) the deputy can
//! rejoin the next one, which re-attaches the body at its host
//! (`Procs`'s rejoin, [`ToHost::Reattach`]) and relays for it from then
//! on like for a body it sent away itself.

mod sys;

use mosix_engine::freeze::{Verdict, deputy_verdict};
use mosix_engine::image::layout::{DEPUTY_READY, HELLO_MAGIC, HELLO_RESTORED, Hello};
use mosix_engine::image::{ImagePlan, ImageSpec, LoadedImage, PageSource, patch_checksum};
use mosix_engine::session::{
    self,
    source::{Action, Failure, Input, Leg, OfferFacts, Outcome, Peer, Source},
};
use mosix_proto::link::{self, ClusterKey, Link, LinkError, Role};
use mosix_proto::local::{recv_local, send_fd, send_local};
use mosix_proto::migrate::{
    BodyStatus, CHUNK, Call, CallReply, DeputyMsg, FdHow, FdState, FromHost, HomeClocks, HomeFacts,
    ToHost, TtyFacts,
};
use mosix_proto::process::{MigrateDone, MoveRecord};
use mosix_proto::view::Bytes;
use std::collections::{HashSet, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Each exchange with a body host (restoring a large image included).
use session::STEP_TIMEOUT;
/// How long the freeze handler has to become the deputy.
const DEPUTY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the relay looks at the deputy's side while the body runs.
const POLL: Duration = Duration::from_millis(100);
/// How long a child reaped by its parent body waits for the status from
/// the parent's call.
const REAPED_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the body goes.
#[derive(Debug, Clone)]
pub struct Target {
    /// Node name, for messages.
    pub node: String,
    /// Its `remoted` address.
    pub address: SocketAddr,
}

/// Who is moving, and on whose behalf.
pub struct Mover<'a> {
    /// This node's name.
    pub home: &'a str,
    /// The cluster key file.
    pub key_file: &'a Path,
    /// Home pid.
    pub pid: i32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Its control fd number (the body's host puts its control socket
    /// there).
    pub ctl_fd: i32,
    /// Its freeze signal.
    pub freeze_signal: i32,
}

/// A body restored and held at the destination.
pub struct Held {
    /// The link to its host.
    pub link: Link<TcpStream>,
    /// Its pid there.
    pub body_pid: i32,
    /// Image bytes sent.
    pub bytes: u64,
}

/// Move the process frozen here (`spec`, its memory read from `mem` as
/// it is sent; its handler waits on `ctl`) to `target`: drive the
/// engine's source session ([`session::source`]) through the offer, the
/// image, the restore held at the destination, and the commit, in which
/// the process becomes its deputy before the body is told to go. On
/// error the process runs on here (its handler was told to continue) or
/// is gone, and nothing runs at the destination.
pub fn move_out(
    who: &Mover<'_>,
    target: &Target,
    spec: &ImageSpec,
    mem: &mut dyn PageSource,
    ctl: &UnixStream,
    cmdline: &[String],
) -> Result<Held, Failure> {
    let node = &target.node;
    let plan = ImagePlan::new(spec).map_err(|e| {
        resume_here(ctl, who.pid);
        Failure::Capture {
            error: e.to_string(),
        }
    })?;
    let internal = |what: &str| Failure::Internal {
        what: what.to_string(),
    };
    let mut s = Source::new(Leg::FromHome, node, offer_facts(who), plan.file_size());
    let mut link: Option<Link<TcpStream>> = None;
    let mut pending: VecDeque<Action> = s.start(Instant::now()).into();
    loop {
        let Some(action) = pending.pop_front() else {
            let Some((Peer::Dest, deadline)) = s.waiting() else {
                resume_here(ctl, who.pid);
                return Err(internal("the move session stalled; the process runs on"));
            };
            let Some(l) = link.as_mut() else {
                return Err(internal("no link to read"));
            };
            let input = recv_until(l, deadline).map(|m| Input::From(Peer::Dest, m));
            pending = match input {
                Ok(i) => s.input(i, Instant::now()),
                Err(None) => s.timeout(Instant::now()),
                Err(Some(e)) => s.input(Input::Broken(Peer::Dest, e), Instant::now()),
            }
            .into();
            continue;
        };
        let input = match action {
            Action::Connect(_) => connect_dest(who, target, &mut link),
            Action::Send(_, msg) => match link.as_mut().map(|l| l.send(&msg)) {
                Some(Ok(())) => continue,
                Some(Err(e)) => Input::Broken(Peer::Dest, e.to_string()),
                None => Input::Broken(Peer::Dest, "no link".into()),
            },
            Action::StreamImage => {
                let Some(l) = link.as_mut() else {
                    return Err(internal("no link to stream on"));
                };
                match plan.stream(mem, CHUNK, &mut |chunk| {
                    l.send_bytes(chunk).map_err(std::io::Error::other)
                }) {
                    Ok(checksum) => Input::Streamed { checksum },
                    Err(e) => Input::StreamFailed(e.to_string()),
                }
            }
            Action::BecomeDeputy => become_deputy(ctl, cmdline, who.pid),
            Action::ResumeHere => {
                resume_here(ctl, who.pid);
                continue;
            }
            Action::Finish(Outcome::Moved {
                body_pid, bytes, ..
            }) => {
                let Some(link) = link else {
                    return Err(internal("moved without a link"));
                };
                return Ok(Held {
                    link,
                    body_pid,
                    bytes,
                });
            }
            Action::Finish(Outcome::RunsOn(why) | Outcome::Lost(why)) => return Err(why),
            Action::Finish(Outcome::Ended(status)) => {
                return Err(internal(&format!("a move from home ended with {status:?}")));
            }
            // Moves away from home's node only.
            Action::ToDeputy(_)
            | Action::Pause(_)
            | Action::ReceiveImage { .. }
            | Action::RestoreHere { .. } => continue,
        };
        pending = s.input(input, Instant::now()).into();
    }
}

/// Open the link to the destination's body host into `slot`: what the
/// session hears of it.
fn connect_dest(who: &Mover<'_>, target: &Target, slot: &mut Option<Link<TcpStream>>) -> Input {
    match connect_host(who.home, who.key_file, target) {
        Ok(l) => {
            *slot = Some(l);
            Input::Connected(Peer::Dest)
        }
        Err(e) => Input::Broken(Peer::Dest, e),
    }
}

/// What the destination is told of the process.
fn offer_facts(who: &Mover<'_>) -> OfferFacts {
    OfferFacts {
        home_pid: who.pid,
        uid: who.uid,
        gid: who.gid,
        ctl_fd: who.ctl_fd,
        freeze_signal: who.freeze_signal,
        home: home_facts(who.pid),
        clocks: Some(HomeClocks::now()),
    }
}

/// One message from a body host within `deadline`: `Err(None)` if the
/// deadline passed, `Err(Some(why))` if the link broke.
fn recv_until(link: &mut Link<TcpStream>, deadline: Instant) -> Result<FromHost, Option<String>> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(None);
    }
    let _ = link.get_ref().set_read_timeout(Some(left));
    match link.recv::<FromHost>() {
        Ok(m) => Ok(m),
        Err(_) if Instant::now() >= deadline => Err(None),
        Err(e) => Err(Some(e.to_string())),
    }
}

/// Tell the frozen process at home to run on.
fn resume_here(ctl: &UnixStream, pid: i32) {
    if let Err(e) = (&*ctl).write_all(&Verdict::Continue.bytes()) {
        tracing::warn!(pid, error = %e, "cannot tell the process to run on");
    }
}

/// An authenticated link from this node (`home`) to `target`'s body host.
pub fn connect_host(
    home: &str,
    key_file: &Path,
    target: &Target,
) -> Result<Link<TcpStream>, String> {
    let key = ClusterKey::load(key_file).map_err(|e| e.to_string())?;
    mosix_proto::migrate::connect_host(
        &target.node,
        target.address,
        &key,
        link::Hello::new(home, Role::Homed),
        STEP_TIMEOUT,
    )
}

/// What a body away answers for its home process `pid` (the process, or
/// its deputy, which holds the same fds): ids and terminals.
pub fn home_facts(pid: i32) -> HomeFacts {
    // Zeroes for a process that is gone, as the kernel would not say.
    let stat = mosix_engine::procfs::stat(pid);
    let mut ttys = Vec::new();
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        let mut fds: Vec<i32> = rd
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        fds.sort();
        for fd in fds {
            if sys::is_tty(&format!("/proc/{pid}/fd/{fd}")) {
                ttys.push(TtyFacts { fd });
            }
        }
    }
    HomeFacts {
        pid,
        ppid: stat.as_ref().map_or(0, |s| s.ppid),
        pgrp: stat.as_ref().map_or(0, |s| s.pgrp),
        sid: stat.as_ref().map_or(0, |s| s.session),
        ttys,
    }
}

/// Where `mosix-deputy` is: beside this `homed`.
pub fn deputy_path() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("mosix-deputy")))
        .unwrap_or_else(|| PathBuf::from("/usr/libexec/mosix/mosix-deputy"))
}

/// The commit: make the frozen process (blocked on `ctl` for its
/// verdict) the deputy, and wait until it says it is up.
fn become_deputy(ctl: &UnixStream, cmdline: &[String], pid: i32) -> Input {
    let msg = match deputy_verdict(&deputy_path(), cmdline) {
        Ok(m) => m,
        Err(e) => {
            // Its handler still waits: it runs on here.
            resume_here(ctl, pid);
            return Input::DeputyFailed {
                error: e.to_string(),
                gone: false,
            };
        }
    };
    if let Err(e) = (&*ctl).write_all(&msg) {
        return Input::DeputyFailed {
            error: format!("cannot tell the process to become its deputy: {e}"),
            gone: true,
        };
    }
    let _ = ctl.set_read_timeout(Some(DEPUTY_TIMEOUT));
    let mut word = [0u8; 4];
    let got = (&*ctl).read_exact(&mut word);
    let _ = ctl.set_read_timeout(None);
    match got.map(|_| u32::from_le_bytes(word)) {
        Ok(DEPUTY_READY) => Input::DeputyReady,
        Ok(_) => Input::DeputyFailed {
            error: "the process could not exec mosix-deputy; it runs on here".into(),
            gone: false,
        },
        // The handler is gone (killed, or the exec'd deputy died):
        // nothing at home any more, so no body either.
        Err(e) => Input::DeputyFailed {
            error: e.to_string(),
            gone: true,
        },
    }
}

/// A body's image received from the node it ran on, in memory (a memfd,
/// never a file on disk), checked.
pub struct Received {
    file: std::fs::File,
    /// Its size.
    pub bytes: u64,
    /// What it holds.
    pub image: LoadedImage,
    /// Input it had been given and had not read, by fd, in order.
    pub unread: Vec<(i32, Bytes)>,
}

/// A request to move a process whose body is away.
pub struct MoveRequest {
    /// Where to: a node, or home (`None`).
    pub to: Option<Target>,
    /// Why (for the log).
    pub why: String,
    /// The outcome.
    pub reply: Option<mpsc::Sender<Result<MigrateDone, String>>>,
}

/// How [`relay`] ended.
pub enum RelayEnd {
    /// The body ended (or was lost); the deputy has been told.
    Ended,
    /// The process came home and is whole again: its control connection
    /// carries freeze records again.
    Home,
}

/// What [`relay`] needs to know about the process and its body.
pub struct Away<'a> {
    /// Who it is.
    pub who: Mover<'a>,
    /// The node its body runs on.
    pub node: String,
    /// Its pid there.
    pub body_pid: i32,
    /// Told each time the body moves (the new node, `None`: home).
    pub on_move: &'a dyn Fn(Option<&str>),
    /// Told of every move and failed attempt, for the history.
    pub on_record: &'a dyn Fn(MoveRecord),
    /// The body host's `remoted` address of `node` (children's links go
    /// there).
    pub address: SocketAddr,
    /// Told of the body's children (forks and ends).
    pub family: &'a dyn Family,
    /// This `homed`'s `procs.sock`, where the deputy rejoins a new
    /// `homed` if this one goes away (see [`DeputyMsg::Where`]).
    pub procs_socket: &'a Path,
    /// How long the body's host waits for a new `homed` (seconds).
    pub grace_s: u64,
    /// For a body's forked child: its parent's home pid.
    pub parent: Option<i32>,
}

/// Tell the deputy where its body runs now, so that it can rejoin a new
/// `homed` with it if this one goes away.
fn tell_where(to_deputy: &mut UnixStream, away: &Away<'_>) {
    let msg = DeputyMsg::Where {
        procs_socket: away.procs_socket.to_string_lossy().into_owned(),
        node: away.node.clone(),
        address: away.address.to_string(),
        body_pid: away.body_pid,
        ctl_fd: away.who.ctl_fd,
        grace_s: away.grace_s,
        freeze_signal: away.who.freeze_signal,
        parent: away.parent,
    };
    if let Err(e) = send_local(to_deputy, &msg) {
        tracing::warn!(pid = away.who.pid, error = %e, "cannot tell the deputy where its body runs; it cannot outlive this homed");
    }
}

/// What the home does about a body's children (the engine keeps them in
/// its table, and relays for each; see `crate::procs::Procs`).
pub trait Family {
    /// The deputy forked `child` for its body: register it and adopt its
    /// body at its node.
    fn forked(&self, child: ForkedChild);
    /// The body reaped its child `pid` (home pid), which ended with
    /// `status`: its deputy ends the same way.
    fn reaped(&self, pid: i32, status: BodyStatus);
}

/// A deputy forked for a body's fork.
pub struct ForkedChild {
    /// The child deputy's pid (the child's home pid).
    pub pid: i32,
    /// Its parent's home pid.
    pub parent: i32,
    /// The node running the bodies.
    pub node: String,
    /// That node's `remoted` address.
    pub address: SocketAddr,
    /// The host's token for the child's control socket.
    pub token: u64,
    /// homed's end of the child deputy's control connection.
    pub ctl: UnixStream,
}

/// Answer the body's `call` with the deputy's help, passing on what the
/// deputy sends meanwhile. `None`: the deputy is gone.
fn serve_call(
    ctl: &UnixStream,
    to_deputy: &mut UnixStream,
    deputy: &mpsc::Receiver<Option<DeputyMsg>>,
    link: &mut Link<TcpStream>,
    away: &Away<'_>,
    wanted: &mut HashSet<i32>,
    call: Call,
) -> Option<CallReply> {
    let pid = away.who.pid;
    if let Call::Reap { pid: child, status } = call {
        away.family.reaped(child, status);
    }
    let child_ctl = match call {
        Call::Fork { .. } => match UnixStream::pair() {
            Ok(pair) => Some(pair),
            Err(e) => {
                tracing::warn!(pid, error = %e, "cannot make a control connection for a forked deputy");
                return Some(CallReply::Errno {
                    errno: libc::EAGAIN,
                });
            }
        },
        _ => None,
    };
    let sent = send_local(to_deputy, &DeputyMsg::Call { call }).and_then(|()| match &child_ctl {
        Some((_, theirs)) => send_fd(ctl, theirs.as_fd()),
        None => Ok(()),
    });
    if let Err(e) = sent {
        tracing::warn!(pid, error = %e, "cannot pass a call to the deputy");
        return None;
    }
    let reply = loop {
        match deputy.recv() {
            Ok(Some(DeputyMsg::Reply { reply })) => break reply,
            Ok(Some(DeputyMsg::Signal { sig })) => {
                if let Err(e) = link.send(&ToHost::Signal { sig }) {
                    tracing::warn!(pid, sig, error = %e, "cannot forward a signal to the body");
                }
            }
            Ok(Some(DeputyMsg::Input { fd, data })) => {
                wanted.remove(&fd);
                if let Err(e) = link.send(&ToHost::Input { fd, data }) {
                    tracing::warn!(pid, fd, error = %e, "cannot pass input to the body");
                }
            }
            Ok(Some(other)) => {
                tracing::warn!(pid, msg = ?other, "unexpected message from the deputy during a call")
            }
            Ok(None) | Err(_) => return None,
        }
    };
    if let (Call::Fork { token }, CallReply::Value { value }, Some((ours, _))) =
        (call, reply, child_ctl)
    {
        away.family.forked(ForkedChild {
            pid: value as i32,
            parent: pid,
            node: away.node.clone(),
            address: away.address,
            token,
            ctl: ours,
        });
    }
    Some(reply)
}

/// Carry signals from the deputy (on `ctl`) to the body, its output and
/// end back, and move it on when asked (`moves`, or its node asking it to
/// leave), until the body ends, its node is lost, the deputy dies, or the
/// process comes home.
pub fn relay(
    ctl: &UnixStream,
    mut link: Link<TcpStream>,
    mut away: Away<'_>,
    moves: &mpsc::Receiver<MoveRequest>,
) -> RelayEnd {
    let pid = away.who.pid;
    let (tx, rx) = mpsc::channel();
    if let Ok(mut reader) = ctl.try_clone() {
        std::thread::spawn(move || {
            loop {
                let m = recv_local::<DeputyMsg>(&mut reader);
                let end = matches!(m, Err(_) | Ok(DeputyMsg::Leaving));
                if tx.send(m.ok()).is_err() || end {
                    return;
                }
            }
        });
    }
    let Ok(mut to_deputy) = ctl.try_clone() else {
        return RelayEnd::Ended;
    };
    tell_where(&mut to_deputy, &away);
    let _ = link.get_ref().set_read_timeout(Some(POLL));
    // Fds the deputy was asked to read input from and has not answered.
    let mut wanted: HashSet<i32> = HashSet::new();
    let mut deputy_stopped = false;
    loop {
        while let Ok(m) = rx.try_recv() {
            match m {
                Some(DeputyMsg::Signal { sig }) => {
                    if let Err(e) = link.send(&ToHost::Signal { sig }) {
                        tracing::warn!(pid, node = %away.node, sig, error = %e, "cannot forward a signal to the body");
                    }
                }
                Some(DeputyMsg::Input { fd, data }) => {
                    wanted.remove(&fd);
                    if let Err(e) = link.send(&ToHost::Input { fd, data }) {
                        tracing::warn!(pid, node = %away.node, fd, error = %e, "cannot pass input to the body");
                    }
                }
                Some(other) => {
                    tracing::warn!(pid, msg = ?other, "unexpected message from the deputy")
                }
                None => {
                    // The deputy died (SIGKILL): the body must not outlive it.
                    tracing::info!(pid, node = %away.node, "deputy gone; killing the body");
                    let _ = link.send(&ToHost::Signal { sig: libc::SIGKILL });
                    return RelayEnd::Ended;
                }
            }
        }
        // SIGSTOP cannot be caught: the deputy just stops. Seeing it
        // stopped, stop the body too; the SIGCONT that wakes the deputy is
        // caught and forwarded like any other signal.
        let stopped = mosix_engine::procfs::is_stopped(pid);
        if stopped && !deputy_stopped {
            if let Err(e) = link.send(&ToHost::Signal { sig: libc::SIGSTOP }) {
                tracing::warn!(pid, node = %away.node, error = %e, "cannot stop the body");
            }
        }
        deputy_stopped = stopped;
        let mut request = moves.try_recv().ok();
        match link.recv::<FromHost>() {
            Ok(FromHost::Output { fd, data }) => {
                if let Err(e) = send_local(&mut to_deputy, &DeputyMsg::Output { fd, data }) {
                    // The deputy is gone; the channel reports it next.
                    tracing::warn!(pid, fd, error = %e, "cannot pass the body's output to the deputy");
                }
            }
            Ok(FromHost::Exited { status }) => {
                tracing::info!(pid, node = %away.node, ?status, "body ended");
                let _ = send_local(&mut to_deputy, &DeputyMsg::Exited { status });
                return RelayEnd::Ended;
            }
            Ok(FromHost::Exec { cmdline }) => {
                if let Err(e) = send_local(&mut to_deputy, &DeputyMsg::Cmdline { cmdline }) {
                    tracing::warn!(pid, error = %e, "cannot pass the body's new command line to the deputy");
                }
            }
            Ok(FromHost::WantInput { fd }) => {
                if wanted.insert(fd)
                    && let Err(e) = send_local(&mut to_deputy, &DeputyMsg::WantInput { fd })
                {
                    tracing::warn!(pid, fd, error = %e, "cannot ask the deputy for input");
                }
            }
            Ok(FromHost::Call { call }) => {
                match serve_call(ctl, &mut to_deputy, &rx, &mut link, &away, &mut wanted, call) {
                    Some(reply) => {
                        if let Err(e) = link.send(&ToHost::Reply { reply }) {
                            tracing::warn!(pid, node = %away.node, error = %e, "cannot answer the body's call");
                        }
                    }
                    None => {
                        tracing::info!(pid, node = %away.node, "deputy gone during a call; killing the body");
                        let _ = link.send(&ToHost::Signal { sig: libc::SIGKILL });
                        return RelayEnd::Ended;
                    }
                }
            }
            Ok(FromHost::Reaped) => {
                // Its parent body reaped it: the deputy hears how from the
                // parent's call; wait until it has ended.
                tracing::info!(pid, node = %away.node, "body ended, reaped by its parent body");
                loop {
                    match rx.recv_timeout(REAPED_TIMEOUT) {
                        Ok(Some(_)) => {}
                        Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            tracing::warn!(pid, "no status for a reaped child from its parent; its deputy ends as killed");
                            let _ = send_local(&mut to_deputy, &DeputyMsg::Lost);
                            break;
                        }
                    }
                }
                return RelayEnd::Ended;
            }
            Ok(FromHost::Leave { reason }) => {
                tracing::info!(pid, node = %away.node, %reason, "the body's node wants it gone; bringing it home");
                request.get_or_insert(MoveRequest {
                    to: None,
                    why: format!("node {} asked: {reason}", away.node),
                    reply: None,
                });
            }
            Ok(other) => {
                tracing::warn!(pid, node = %away.node, msg = ?other, "unexpected message from the body's host")
            }
            Err(LinkError::Io(e))
                // A read timeout (the poll), not a keepalive failure
                // (TimedOut), which means the node is lost.
                if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => {
                tracing::warn!(pid, node = %away.node, error = %e, "lost the node running the body; the deputy ends as killed");
                let _ = send_local(&mut to_deputy, &DeputyMsg::Lost);
                return RelayEnd::Ended;
            }
        }
        if let Some(req) = request {
            let started = Instant::now();
            let from = away.node.clone();
            let outcome = move_body(ctl, &mut link, &mut away, &rx, req.to.as_ref(), &mut wanted);
            let (end, result) = match outcome {
                Moved::Away(new_link, done) => {
                    link = *new_link;
                    let _ = link.get_ref().set_read_timeout(Some(POLL));
                    tell_where(&mut to_deputy, &away);
                    (None, Ok(done))
                }
                Moved::Home(done) => (Some(RelayEnd::Home), Ok(done)),
                Moved::Failed(e) => (None, Err(e)),
                Moved::Ended(e) => (Some(RelayEnd::Ended), Err(e)),
            };
            let result = result.map(|mut d| {
                d.frozen_ms = started.elapsed().as_millis() as u64;
                d
            });
            match &result {
                Ok(d) => {
                    tracing::info!(pid, node = %d.node, why = %req.why, bytes = d.bytes, frozen_ms = d.frozen_ms, "moved")
                }
                Err(e) => tracing::warn!(pid, why = %req.why, error = %e, "move failed"),
            }
            let to = req
                .to
                .as_ref()
                .map_or_else(|| away.who.home.to_string(), |t| t.node.clone());
            (away.on_record)(move_record(from, to, &req.why, &result, started));
            if let Some(reply) = req.reply {
                let _ = reply.send(result);
            }
            if let Some(end) = end {
                return end;
            }
        }
    }
}

/// The history entry of a move from `from` to `to` that began at
/// `started` and ended with `result`.
pub fn move_record(
    from: String,
    to: String,
    why: &str,
    result: &Result<MigrateDone, String>,
    started: Instant,
) -> MoveRecord {
    let at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    MoveRecord {
        at_ms,
        from,
        to,
        why: why.to_string(),
        frozen_ms: match result {
            Ok(d) => d.frozen_ms,
            Err(_) => started.elapsed().as_millis() as u64,
        },
        bytes: result.as_ref().map_or(0, |d| d.bytes),
        error: result.as_ref().err().cloned(),
    }
}

/// How [`move_body`] ended.
enum Moved {
    /// The body runs at the new node; its link.
    Away(Box<Link<TcpStream>>, MigrateDone),
    /// The process is whole again at home.
    Home(MigrateDone),
    /// Nothing changed: the body runs on where it was.
    Failed(String),
    /// The process ended meanwhile (or was lost); the deputy was told.
    Ended(String),
}

/// Bring the body's image here, then restore it at `to` or at home.
fn move_body(
    ctl: &UnixStream,
    link: &mut Link<TcpStream>,
    away: &mut Away<'_>,
    deputy: &mpsc::Receiver<Option<DeputyMsg>>,
    to: Option<&Target>,
    wanted: &mut HashSet<i32>,
) -> Moved {
    let pid = away.who.pid;
    let from = away.node.clone();
    let mut to_deputy = match ctl.try_clone() {
        Ok(c) => c,
        Err(e) => return Moved::Failed(format!("cannot use the deputy's connection: {e}")),
    };
    match to {
        Some(target) => {
            let (held, unread) = match move_direct(link, &mut to_deputy, &away.who, &from, target) {
                Ok(h) => h,
                Err(moved) => return moved,
            };
            // Input the old body was given and had not read goes first to
            // the new one (input the deputy reads meanwhile follows it).
            let mut new_link = held.link;
            for (fd, data) in unread.iter().filter(|(_, d)| !d.0.is_empty()) {
                let input = ToHost::Input {
                    fd: *fd,
                    data: data.clone(),
                };
                if let Err(e) = new_link.send(&input) {
                    tracing::warn!(pid, node = %target.node, fd, error = %e, "cannot give the moved body its unread input");
                }
            }
            (away.on_move)(Some(&target.node));
            away.node = target.node.clone();
            away.address = target.address;
            away.body_pid = held.body_pid;
            let done = MigrateDone {
                pid,
                node: target.node.clone(),
                body_pid: held.body_pid,
                bytes: held.bytes,
                frozen_ms: 0,
            };
            Moved::Away(Box::new(new_link), done)
        }
        None => bring_home(ctl, link, away, deputy, &mut to_deputy, wanted),
    }
}

/// Input a frozen body was given and had not read, by fd: it goes first
/// wherever the body runs next.
type Unread = Vec<(i32, Bytes)>;

/// A move between two remote nodes (ARCHITECTURE.md section 3, step 6): the
/// destination expects the image, the body's node freezes it and sends
/// the image straight there, and the destination restores it held; the
/// old body ends, then the new one goes. Only the commit and the links go
/// through here: the engine's source session ([`session::source`],
/// [`Leg::Direct`]) decides each step, this drives it. `Err`: what
/// became of the process (the body runs on where it was, or it is gone;
/// the deputy was told).
fn move_direct(
    link: &mut Link<TcpStream>,
    to_deputy: &mut UnixStream,
    who: &Mover<'_>,
    from: &str,
    target: &Target,
) -> Result<(Held, Unread), Moved> {
    let pid = who.pid;
    let leg = Leg::Direct {
        from: from.to_string(),
        dest_address: target.address.to_string(),
    };
    let mut s = Source::new(leg, &target.node, offer_facts(who), 0);
    let mut dest: Option<Link<TcpStream>> = None;
    let mut pending: VecDeque<Action> = s.start(Instant::now()).into();
    let outcome = loop {
        let Some(action) = pending.pop_front() else {
            let Some((peer, deadline)) = s.waiting() else {
                break Outcome::RunsOn(session::source::Failure::OutOfStep {
                    node: target.node.clone(),
                    step: "the move",
                    got: "nothing to wait for (internal error)".into(),
                });
            };
            let got = match peer {
                Peer::Old => recv_until(link, deadline),
                Peer::Dest => match dest.as_mut() {
                    Some(d) => recv_until(d, deadline),
                    None => Err(Some("no link".into())),
                },
            };
            pending = match got {
                Ok(m) => s.input(Input::From(peer, m), Instant::now()),
                Err(None) => s.timeout(Instant::now()),
                Err(Some(e)) => s.input(Input::Broken(peer, e), Instant::now()),
            }
            .into();
            continue;
        };
        let input = match action {
            Action::Connect(_) => connect_dest(who, target, &mut dest),
            Action::Send(peer, msg) => {
                let sent = match peer {
                    Peer::Old => link.send(&msg).map_err(|e| e.to_string()),
                    Peer::Dest => match dest.as_mut() {
                        Some(d) => d.send(&msg).map_err(|e| e.to_string()),
                        None => Err("no link".into()),
                    },
                };
                match sent {
                    Ok(()) => continue,
                    Err(e) => Input::Broken(peer, e),
                }
            }
            Action::ToDeputy(msg) => {
                pass_to_deputy(to_deputy, msg);
                continue;
            }
            Action::Pause(d) => {
                std::thread::sleep(d);
                continue;
            }
            Action::Finish(o) => break o,
            // Other legs only.
            Action::StreamImage
            | Action::BecomeDeputy
            | Action::ResumeHere
            | Action::ReceiveImage { .. }
            | Action::RestoreHere { .. } => continue,
        };
        pending = s.input(input, Instant::now()).into();
    };
    // The body's link goes back to the relay's poll.
    let _ = link.get_ref().set_read_timeout(Some(POLL));
    match outcome {
        Outcome::Moved {
            body_pid,
            bytes,
            unread,
        } => match dest {
            Some(link) => Ok((
                Held {
                    link,
                    body_pid,
                    bytes,
                },
                unread,
            )),
            None => Err(Moved::Ended("internal error: moved without a link".into())),
        },
        Outcome::RunsOn(why) => Err(Moved::Failed(format!(
            "{why}; the process runs on at node {from}"
        ))),
        Outcome::Ended(status) => {
            let _ = send_local(to_deputy, &DeputyMsg::Exited { status });
            Err(Moved::Ended(format!(
                "process {pid} ended on node {from} before it could move"
            )))
        }
        Outcome::Lost(why) => {
            let _ = send_local(to_deputy, &DeputyMsg::Lost);
            Err(Moved::Ended(why.to_string()))
        }
    }
}

/// Pass what the frozen body's node said meanwhile to the deputy: its
/// last output, or the command line of a program it exec'd.
fn pass_to_deputy(to_deputy: &mut UnixStream, msg: FromHost) {
    let m = match msg {
        FromHost::Output { fd, data } => DeputyMsg::Output { fd, data },
        FromHost::Exec { cmdline } => DeputyMsg::Cmdline { cmdline },
        _ => return,
    };
    if let Err(e) = send_local(to_deputy, &m) {
        tracing::debug!(error = %e, "the deputy is gone; the move finds out next");
    }
}

/// Bring the body home (ARCHITECTURE.md section 3, step 6): the engine's
/// source session ([`Leg::ToHome`]) asks the body's node to freeze it and
/// send its image, the deputy restores the process in place
/// ([`come_home`]), and only then does the old, frozen copy end. Any
/// failure before the restore lets the body run on where it was.
fn bring_home(
    ctl: &UnixStream,
    link: &mut Link<TcpStream>,
    away: &mut Away<'_>,
    deputy: &mpsc::Receiver<Option<DeputyMsg>>,
    to_deputy: &mut UnixStream,
    wanted: &mut HashSet<i32>,
) -> Moved {
    let pid = away.who.pid;
    let from = away.node.clone();
    let leg = Leg::ToHome { from: from.clone() };
    // Coming home makes no offer: the facts an offer carries (read from
    // /proc) are not needed, only who the process is.
    let facts = OfferFacts {
        home_pid: pid,
        uid: away.who.uid,
        gid: away.who.gid,
        ctl_fd: away.who.ctl_fd,
        freeze_signal: away.who.freeze_signal,
        home: HomeFacts::default(),
        clocks: None,
    };
    let mut s = Source::new(leg, away.who.home, facts, 0);
    let mut received: Option<Received> = None;
    let mut pending: VecDeque<Action> = s.start(Instant::now()).into();
    let outcome = loop {
        let Some(action) = pending.pop_front() else {
            let Some((_, deadline)) = s.waiting() else {
                break Outcome::RunsOn(Failure::Internal {
                    what: "the move home stalled".into(),
                });
            };
            pending = match recv_until(link, deadline) {
                Ok(m) => s.input(Input::From(Peer::Old, m), Instant::now()),
                Err(None) => s.timeout(Instant::now()),
                Err(Some(e)) => s.input(Input::Broken(Peer::Old, e), Instant::now()),
            }
            .into();
            continue;
        };
        let input = match action {
            Action::Send(_, msg) => match link.send(&msg) {
                Ok(()) => continue,
                Err(e) => Input::Broken(Peer::Old, e.to_string()),
            },
            Action::ToDeputy(msg) => {
                pass_to_deputy(to_deputy, msg);
                continue;
            }
            Action::Pause(d) => {
                std::thread::sleep(d);
                continue;
            }
            Action::ReceiveImage { bytes } => match receive_image(link, &from, bytes) {
                Ok(r) => {
                    received = Some(r);
                    Input::Received { bytes }
                }
                Err(Receive::Frozen(error)) => Input::ReceiveFailed {
                    error,
                    frozen: true,
                },
                Err(Receive::Resumed(error)) => Input::ReceiveFailed {
                    error,
                    frozen: false,
                },
                Err(Receive::Broken(e)) => Input::Broken(Peer::Old, e),
            },
            Action::RestoreHere { unread } => match received.as_mut() {
                Some(r) => {
                    r.unread = unread;
                    match come_home(ctl, to_deputy, deputy, r, pid, wanted) {
                        Ok(()) => Input::HomeRestored,
                        Err(ComeHome::NotYet(error)) => Input::HomeFailed { error, gone: false },
                        Err(ComeHome::Lost(error)) => Input::HomeFailed { error, gone: true },
                    }
                }
                None => Input::HomeFailed {
                    error: "internal error: no image to restore".into(),
                    gone: false,
                },
            },
            Action::Finish(o) => break o,
            // Moves to another node only.
            Action::Connect(_)
            | Action::StreamImage
            | Action::BecomeDeputy
            | Action::ResumeHere => continue,
        };
        pending = s.input(input, Instant::now()).into();
    };
    let _ = link.get_ref().set_read_timeout(Some(POLL));
    match outcome {
        Outcome::Moved { bytes, .. } => {
            (away.on_move)(None);
            Moved::Home(MigrateDone {
                pid,
                node: "home".into(),
                body_pid: pid,
                bytes,
                frozen_ms: 0,
            })
        }
        Outcome::RunsOn(why) => Moved::Failed(format!("{why}; the process runs on at node {from}")),
        Outcome::Ended(status) => {
            let _ = send_local(to_deputy, &DeputyMsg::Exited { status });
            Moved::Ended(format!(
                "process {pid} ended on node {from} before it could move"
            ))
        }
        Outcome::Lost(why) => {
            // A deputy that is gone already does not hear it.
            let _ = send_local(to_deputy, &DeputyMsg::Lost);
            Moved::Ended(why.to_string())
        }
    }
}

/// Why [`receive_image`] failed.
enum Receive {
    /// The body waits frozen at its node (the image was bad, or could not
    /// be kept here).
    Frozen(String),
    /// Its node could not capture it and resumed it.
    Resumed(String),
    /// The link broke.
    Broken(String),
}

/// The image of a body coming home, `bytes` raw bytes and then its end,
/// from its node `node`, into memory (a memfd, never a file), checked.
fn receive_image(link: &mut Link<TcpStream>, node: &str, bytes: u64) -> Result<Received, Receive> {
    let broken =
        |e: LinkError| Receive::Broken(format!("lost node {node} while moving the body: {e}"));
    let _ = link.get_ref().set_read_timeout(Some(STEP_TIMEOUT));
    let file =
        memfd().map_err(|e| Receive::Frozen(format!("cannot hold the image in memory: {e}")))?;
    let mut got = 0u64;
    let mut w = &file;
    while got < bytes {
        let chunk = link.recv_bytes().map_err(broken)?;
        if got + chunk.len() as u64 > bytes {
            return Err(Receive::Broken(format!(
                "node {node} sent more than the {bytes} image bytes it announced"
            )));
        }
        w.write_all(&chunk)
            .map_err(|e| Receive::Frozen(format!("cannot store the image in memory: {e}")))?;
        got += chunk.len() as u64;
    }
    let checksum = match link.recv::<FromHost>() {
        Ok(FromHost::ImageEnd { checksum }) => checksum,
        Ok(FromHost::FreezeFailed { reason }) => {
            return Err(Receive::Resumed(format!(
                "node {node} could not capture the body: {reason}"
            )));
        }
        Ok(other) => {
            return Err(Receive::Broken(format!(
                "node {node} sent {other:?} instead of the image's end"
            )));
        }
        Err(e) => return Err(broken(e)),
    };
    patch_checksum(&file, checksum)
        .map_err(|e| Receive::Frozen(format!("cannot finish the image: {e}")))?;
    let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let image = LoadedImage::open(&path)
        .map_err(|e| Receive::Frozen(format!("node {node} sent a bad image: {e}")))?;
    Ok(Received {
        file,
        bytes,
        image,
        unread: Vec::new(),
    })
}

/// Why [`come_home`] failed.
enum ComeHome {
    /// Nothing happened at home yet: the body may run on where it is.
    NotYet(String),
    /// The deputy went away: the process is gone.
    Lost(String),
}

/// Hand the image to the deputy, which `exec`s the restorer in place;
/// wait until the restored process says hello on `ctl`.
fn come_home(
    ctl: &UnixStream,
    to_deputy: &mut UnixStream,
    deputy: &mpsc::Receiver<Option<DeputyMsg>>,
    received: &Received,
    pid: i32,
    wanted: &mut HashSet<i32>,
) -> Result<(), ComeHome> {
    let restorer = restorer_path();
    if !restorer.exists() {
        return Err(ComeHome::NotYet(format!(
            "{} is missing: install mosix-restore beside homed",
            restorer.display()
        )));
    }
    received
        .image
        .check_cpu(mosix_engine::image::CpuFeatures::current())
        .map_err(|e| ComeHome::NotYet(format!("this node cannot run the image: {e}")))?;
    let fds = fd_states(&received.image, pid);
    tracing::debug!(pid, ?fds, "fds of the process coming home");
    // Input read at home for the body and not read by it, oldest first:
    // what its node gave back, what was on its way, what the deputy holds.
    let mut unread = received.unread.clone();
    send_local(to_deputy, &DeputyMsg::StopInput)
        .map_err(|e| ComeHome::NotYet(format!("cannot stop the deputy's input: {e}")))?;
    let mut late_signals = Vec::new();
    loop {
        match deputy.recv_timeout(STEP_TIMEOUT) {
            Ok(Some(DeputyMsg::Input { fd, data })) => unread.push((fd, data)),
            Ok(Some(DeputyMsg::InputStopped { leftover })) => {
                unread.extend(leftover);
                break;
            }
            Ok(Some(DeputyMsg::Signal { sig })) => late_signals.push(sig),
            Ok(Some(other)) => {
                tracing::warn!(pid, msg = ?other, "unexpected message from the deputy while coming home")
            }
            Ok(None) | Err(_) => {
                return Err(ComeHome::Lost(format!(
                    "the deputy of process {pid} went away while it came home; the process is lost"
                )));
            }
        }
    }
    wanted.clear();
    unread.retain(|(_, d)| !d.0.is_empty());
    // A terminal's unread input goes back into its input queue; a pipe's
    // is fed by the deputy ahead of the rest of the pipe.
    let (tty_input, pipe_input): (Vec<_>, Vec<_>) = unread
        .into_iter()
        .partition(|(fd, _)| sys::is_tty(&format!("/proc/{pid}/fd/{fd}")));
    for (fd, data) in &tty_input {
        if let Err(e) = sys::push_tty_input(&format!("/proc/{pid}/fd/{fd}"), &data.0) {
            tracing::warn!(pid, fd, error = %e, "cannot give back terminal input the body had not read");
        }
    }
    let msg = DeputyMsg::ComeHome {
        restorer: restorer.to_string_lossy().into_owned(),
        fds,
        unread: pipe_input,
    };
    send_local(to_deputy, &msg)
        .and_then(|()| send_fd(ctl, received.file.as_fd()))
        .map_err(|e| ComeHome::NotYet(format!("cannot hand the image to the deputy: {e}")))?;
    // The deputy says it is leaving, then its exec'd restorer's process
    // says hello on the same connection.
    loop {
        match deputy.recv_timeout(STEP_TIMEOUT) {
            Ok(Some(DeputyMsg::Leaving)) => break,
            Ok(Some(DeputyMsg::Signal { .. })) => {}
            Ok(Some(DeputyMsg::ComeHomeFailed { reason })) => {
                return Err(ComeHome::NotYet(format!(
                    "the deputy could not restore the process: {reason}"
                )));
            }
            Ok(Some(other)) => {
                tracing::warn!(pid, msg = ?other, "unexpected message from the deputy while coming home")
            }
            Ok(None) | Err(_) => {
                return Err(ComeHome::Lost(format!(
                    "the deputy of process {pid} went away while it came home; the process is lost"
                )));
            }
        }
    }
    let mut hb = [0u8; size_of::<Hello>()];
    let _ = ctl.set_read_timeout(Some(STEP_TIMEOUT));
    let got = (&*ctl).read_exact(&mut hb);
    let _ = ctl.set_read_timeout(None);
    match got
        .ok()
        .and_then(|()| mosix_engine::image::from_bytes::<Hello>(&hb))
    {
        Some(h) if h.magic == HELLO_MAGIC && h.kind == HELLO_RESTORED && h.pid == pid => {
            // It is whole at home: no body answers for it any more.
            let info = mosix_engine::image::layout::BodyInfo::at_home();
            if let Err(e) = (&*ctl).write_all(mosix_engine::image::as_bytes(&info)) {
                tracing::warn!(pid, error = %e, "cannot brief the process that came home");
            }
            for sig in late_signals {
                if let Err(e) = mosix_engine::kill(pid, sig) {
                    tracing::warn!(pid, sig, error = %e, "cannot give the process a signal that came while it moved");
                }
            }
            Ok(())
        }
        _ => Err(ComeHome::Lost(format!(
            "process {pid} did not come back to life at home (see its stderr); it is lost"
        ))),
    }
}

/// What the deputy must do with each fd of the image: keep its own (the
/// real fd the body's relay stood for), move a file's offset to the
/// body's, or open a file the body opened away.
fn fd_states(image: &LoadedImage, pid: i32) -> Vec<FdState> {
    image
        .fds
        .iter()
        .map(|f| {
            let mine = std::fs::read_link(format!("/proc/{pid}/fd/{}", f.fd))
                .ok()
                .map(|p| p.to_string_lossy().into_owned());
            let same = mine.as_deref() == Some(f.path.as_str());
            let how = match f.kind {
                // A dup of a lower fd: that one carries the offset.
                _ if let Some(of) = f.same_as => FdHow::Dup { of },
                "file" if same => FdHow::Seek { pos: f.pos },
                "file" => FdHow::Open {
                    path: f.path.clone(),
                    flags: f.flags as i32,
                    pos: Some(f.pos),
                },
                "dir" | "other" if !same => FdHow::Open {
                    path: f.path.clone(),
                    flags: f.flags as i32,
                    pos: None,
                },
                _ => FdHow::Keep,
            };
            FdState { fd: f.fd, how }
        })
        .collect()
}

/// Where `mosix-restore` is: beside this `homed`.
fn restorer_path() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("mosix-restore")))
        .unwrap_or_else(|| PathBuf::from("/usr/libexec/mosix/mosix-restore"))
}

/// An anonymous in-memory file for a received image.
fn memfd() -> std::io::Result<std::fs::File> {
    use nix::sys::memfd::{MFdFlags, memfd_create};
    Ok(std::fs::File::from(memfd_create(
        c"mosix-image",
        MFdFlags::MFD_CLOEXEC,
    )?))
}
