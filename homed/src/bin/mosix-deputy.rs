//! `mosix-deputy`: what a process at home becomes when its body migrates
//! (ARCHITECTURE.md sections 1 and 3). The freeze handler `exec`s it in place,
//! so it keeps the process's pid, parent, process group, session, fds and
//! cwd: the parent's `wait` and a `kill` of the home pid still work.
//!
//! Run by libmosix only, with the program's own command line as argv (so
//! `ps` at home shows the program the whole time) and
//! `MOSIX_DEPUTY=CTL-FD:CLOEXEC-FDS` as its whole environment: CTL-FD is
//! the process's control socket to `homed` (which holds the link to the
//! body's node), CLOEXEC-FDS the comma-separated fds whose FD_CLOEXEC the
//! handler cleared (the restorer sets them back from the image when the
//! body comes home).
//!
//! It forwards every signal of [`FORWARDED`] to the body through `homed`
//! (SIGCHLD too, except from the deputies it forked for the body's own
//! forks while the body runs beside their bodies: a child the process
//! left at home changed state, and the body may be waiting for it, see
//! `mosix_homed::kids`; once the body moves on, those deputies are
//! children left at home like the others),
//! and ends with the body's exact status: the same exit code, or death by
//! the same signal. It writes the body's output to pipes into its own
//! fds. If the body's node or `homed` is lost it ends as if killed by
//! SIGKILL, with a line on its stderr naming what was lost.
//! It also reads input for the body (one chunk at a time, when the body's
//! host asks), does the body's terminal requests on the real terminal
//! ([`mosix_homed::tty`]), and when the body comes home it puts the fds
//! in step and `exec`s the restorer in place.
//!
//! # When `homed` goes away
//!
//! `homed` tells the deputy where its body runs ([`DeputyMsg::Where`]:
//! node, host address, body pid, how long the host waits). If the control
//! connection breaks while the body is away (the home's daemons restart),
//! the deputy does not end: it connects to `procs.sock` again every
//! [`REJOIN_RETRY`] and rejoins the new `homed` (a hello of kind
//! `HELLO_DEPUTY`, then [`DeputyMsg::Rejoin`]), which re-attaches the
//! body at its host over a new authenticated link and answers
//! [`DeputyMsg::Rejoined`]; the new connection takes the old one's fd
//! number (the restorer finds it there if the process comes home later).
//! Signals caught meanwhile and input read for the body meanwhile are
//! kept and sent once rejoined. The deputy counts the bytes of output it
//! wrote, by fd, since the last `Where`, and says so in its rejoin: the
//! host sends again what the old `homed` took from the link and never
//! passed on, so output is neither lost nor repeated. If no `homed` takes the deputy back within
//! the host's grace period plus [`REJOIN_MARGIN`], or the new one cannot
//! re-attach the body (the host ended it), the deputy ends as killed, as
//! before.

use anyhow::{Context, Result, bail};
use mosix_engine::image::layout::DEPUTY_READY;
use mosix_proto::local::{recv_fd, recv_local, send_local};
use mosix_proto::migrate::{BodyStatus, Call, CallReply, DeputyMsg, FdHow, FdState, PgrpOp};
use mosix_proto::view::Bytes;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// How often a deputy whose `homed` went away tries to rejoin a new one.
const REJOIN_RETRY: Duration = Duration::from_millis(500);
/// How much longer than the host's grace period a deputy waits for a new
/// `homed` (the host gave up on the body by then).
const REJOIN_MARGIN: Duration = Duration::from_secs(30);
/// Longest wait for a new `homed`'s answer to a rejoin (it opens a link to
/// the body's host meanwhile).
const REJOIN_ANSWER: Duration = Duration::from_secs(90);

/// Where the body runs, as `homed` last said: what the deputy needs to
/// rejoin a new `homed`.
#[derive(Debug, Clone)]
struct Whereabouts {
    procs_socket: String,
    node: String,
    address: String,
    body_pid: i32,
    ctl_fd: i32,
    grace: Duration,
    freeze_signal: i32,
    parent: Option<i32>,
}

/// Signals caught here and raised in the body.
const FORWARDED: [Signal; 11] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
    Signal::SIGTERM,
    Signal::SIGCONT,
    Signal::SIGTSTP,
    Signal::SIGWINCH,
    Signal::SIGCHLD,
];

fn main() {
    if let Err(e) = run() {
        eprintln!("mosix-deputy: {e:#}");
        end_as(BodyStatus::Signal {
            sig: libc::SIGKILL,
            core: false,
        });
    }
}

fn run() -> Result<()> {
    // libmosix passes "CTL-FD:CLOEXEC-FDS" in the environment; argv is
    // the program's own command line, so ps at home shows the program.
    let spec = std::env::var("MOSIX_DEPUTY").map_err(|_| {
        anyhow::anyhow!("MOSIX_DEPUTY is not set: mosix-deputy is run by libmosix, not by hand")
    })?;
    let (ctl, list) = spec.split_once(':').unwrap_or((spec.as_str(), ""));
    let ctl: RawFd = ctl
        .parse()
        .with_context(|| format!("bad control fd {ctl:?} in MOSIX_DEPUTY"))?;
    let _was_cloexec: Vec<RawFd> = list
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .with_context(|| format!("bad fd {s:?} in MOSIX_DEPUTY"))
        })
        .collect::<Result<_>>()?;
    // Before anything is forked: the children the process left at home.
    let mut home_kids = mosix_homed::kids::HomeChildren::of_self();
    // Deputies forked for the body's forks: their SIGCHLD is not the body's.
    let forked: Arc<Mutex<HashSet<i32>>> = Arc::default();
    let owned = ctl_fd(ctl)?;
    let mut ctl = UnixStream::from(owned);
    // Signals to forward go to a signalfd; everything else is unblocked
    // (the freeze handler ran, and exec'd us, with every signal blocked).
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&set), None).context("cannot set the signal mask")?;
    let sfd =
        SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC).context("cannot create a signalfd")?;
    ctl.write_all(&DEPUTY_READY.to_le_bytes())
        .context("cannot tell homed the deputy is up")?;
    // Whoever writes to homed holds this; coming home holds it through the
    // exec, so nothing can follow the deputy's last message.
    let writer = Arc::new(Mutex::new(
        ctl.try_clone().context("cannot clone the control socket")?,
    ));
    let signals_writer = writer.clone();
    let forked_deputies = forked.clone();
    // Signals caught while homed is away, sent once the deputy rejoined.
    let held_signals: Arc<Mutex<Vec<i32>>> = Arc::default();
    let held = held_signals.clone();
    std::thread::spawn(move || {
        while let Ok(Some(info)) = sfd.read_signal() {
            let sig = info.ssi_signo as i32;
            if sig == libc::SIGCHLD
                && forked_deputies
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&(info.ssi_pid as i32))
            {
                continue;
            }
            {
                let mut w = signals_writer.lock().unwrap_or_else(|e| e.into_inner());
                if send_local(&mut w, &DeputyMsg::Signal { sig }).is_err() {
                    held.lock().unwrap_or_else(|e| e.into_inner()).push(sig);
                }
            }
            if sig == libc::SIGTSTP {
                // Ctrl-Z: the body stops of it; the deputy stops too, so
                // the shell sees the job stopped (SIGCONT wakes both).
                let _ = nix::sys::signal::raise(Signal::SIGSTOP);
            }
        }
    });
    let mut inputs = Inputs::new(writer.clone());
    let mut whereabouts: Option<Whereabouts> = None;
    // Bytes of the body's output written, by fd, since the last `Where`.
    let mut written: HashMap<RawFd, u64> = HashMap::new();
    loop {
        match recv_local::<DeputyMsg>(&mut ctl) {
            Ok(DeputyMsg::Where {
                procs_socket,
                node,
                address,
                body_pid,
                ctl_fd,
                grace_s,
                freeze_signal,
                parent,
            }) => {
                written.clear();
                if whereabouts.as_ref().is_some_and(|w| w.node != node) {
                    // The body moved on: the children it forked where it
                    // was run on there, and it no longer reaps them there
                    // (`Call::Reap`); their deputies, ours, are now its
                    // children at home, waited for like those it left
                    // here, their SIGCHLD forwarded.
                    let mut f = forked.lock().unwrap_or_else(|e| e.into_inner());
                    home_kids.adopt(f.drain());
                }
                whereabouts = Some(Whereabouts {
                    procs_socket,
                    node,
                    address,
                    body_pid,
                    ctl_fd,
                    grace: Duration::from_secs(grace_s),
                    freeze_signal,
                    parent,
                })
            }
            Ok(DeputyMsg::Exited { status }) => end_as(status),
            Ok(DeputyMsg::Lost) => {
                eprintln!("mosix-deputy: lost the node running the body; ending as killed");
                end_as(BodyStatus::Signal {
                    sig: libc::SIGKILL,
                    core: false,
                });
            }
            Ok(DeputyMsg::Output { fd, data }) if data.0.is_empty() => {
                close_out(fd, ctl.as_raw_fd())
            }
            Ok(DeputyMsg::Cmdline { cmdline }) => {
                // ps at home shows what the body runs now; a refusal
                // leaves the old line, which is only cosmetic.
                if let Err(e) = mosix_homed::title::set(&cmdline.0) {
                    eprintln!("mosix-deputy: cannot show the body's new command line: {e}");
                }
            }
            Ok(DeputyMsg::Output { fd, data }) => {
                write_out(fd, &data.0);
                *written.entry(fd).or_default() += data.0.len() as u64;
            }
            Ok(DeputyMsg::WantInput { fd }) => inputs.want(fd),
            Ok(DeputyMsg::StopInput) => {
                let leftover = inputs.stop();
                let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
                send_local(&mut w, &DeputyMsg::InputStopped { leftover })
                    .context("cannot tell homed")?;
            }
            Ok(DeputyMsg::ComeHome {
                restorer,
                fds,
                unread,
            }) => {
                let image = recv_fd(&ctl).context("no image fd from homed")?;
                let mut guard = writer.lock().unwrap_or_else(|e| e.into_inner());
                let ctl_no = ctl.as_raw_fd();
                let reason = match come_home(&mut guard, ctl_no, image, &restorer, &fds, &unread) {
                    Ok(never) => match never {},
                    Err(e) => format!("{e:#}"),
                };
                eprintln!("mosix-deputy: cannot bring the process home: {reason}");
                send_local(&mut guard, &DeputyMsg::ComeHomeFailed { reason })
                    .context("cannot tell homed")?;
            }
            Ok(DeputyMsg::Call { call }) => {
                let reply = match call {
                    Call::Fork { .. } => {
                        let chan = recv_fd(&ctl).context("no control connection for the child")?;
                        // Listed before it can end, so its SIGCHLD is never forwarded.
                        let mut f = forked.lock().unwrap_or_else(|e| e.into_inner());
                        let reply = fork_child(chan);
                        if let CallReply::Value { value } = reply {
                            f.insert(value as i32);
                        }
                        reply
                    }
                    Call::Getppid => CallReply::Value {
                        // SAFETY: getppid cannot fail.
                        value: i64::from(unsafe { libc::getppid() }),
                    },
                    Call::Kill { pid, sig } => {
                        // SAFETY: kill(2) has no memory effects.
                        if unsafe { libc::kill(pid, sig) } == 0 {
                            CallReply::Value { value: 0 }
                        } else {
                            CallReply::Errno {
                                errno: std::io::Error::last_os_error()
                                    .raw_os_error()
                                    .unwrap_or(libc::EINVAL),
                            }
                        }
                    }
                    Call::Reap { pid, .. } => {
                        let reply = reap(pid);
                        if matches!(reply, CallReply::Value { .. }) {
                            forked
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .remove(&pid);
                        }
                        reply
                    }
                    Call::Wait {
                        idtype,
                        id,
                        options,
                    } => home_kids.wait(idtype, id, options),
                    Call::Tty { fd, op } => mosix_homed::tty::serve(fd, op),
                    Call::Pgrp { op } => pgrp(op),
                };
                let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
                send_local(&mut w, &DeputyMsg::Reply { reply }).context("cannot tell homed")?;
            }
            Ok(
                DeputyMsg::Signal { .. }
                | DeputyMsg::Reply { .. }
                | DeputyMsg::Leaving
                | DeputyMsg::ComeHomeFailed { .. }
                | DeputyMsg::Input { .. }
                | DeputyMsg::InputStopped { .. }
                | DeputyMsg::Rejoin { .. }
                | DeputyMsg::Rejoined,
            ) => {}
            Err(e) => {
                let Some(w) = &whereabouts else {
                    bail!("lost homed (it holds the link to the body): {e}");
                };
                let done: Vec<(i32, u64)> = written.iter().map(|(&f, &n)| (f, n)).collect();
                ctl = rejoin(w, &done, ctl, &writer).with_context(|| {
                    format!(
                        "lost homed (it holds the link to the body at node {}): {e}",
                        w.node
                    )
                })?;
                // What came while homed was away goes first.
                let mut wr = writer.lock().unwrap_or_else(|e| e.into_inner());
                let sigs =
                    std::mem::take(&mut *held_signals.lock().unwrap_or_else(|e| e.into_inner()));
                for sig in sigs {
                    send_local(&mut wr, &DeputyMsg::Signal { sig }).context("cannot tell homed")?;
                }
                for (fd, data) in inputs.take_unsent() {
                    send_local(&mut wr, &DeputyMsg::Input { fd, data })
                        .context("cannot tell homed")?;
                }
            }
        }
    }
}

/// `homed` went away while the body runs at `w.node`: rejoin a new one
/// (see the module's doc) and return the new control connection, placed
/// at `old`'s fd number (and cloned into `writer`).
/// `written`: the body's output written so far, by fd (see
/// [`DeputyMsg::Rejoin`]).
fn rejoin(
    w: &Whereabouts,
    written: &[(i32, u64)],
    old: UnixStream,
    writer: &Mutex<UnixStream>,
) -> Result<UnixStream> {
    let deadline = Instant::now() + w.grace + REJOIN_MARGIN;
    let last = loop {
        match try_rejoin(w, written) {
            Ok(Some(new)) => break new,
            Ok(None) => bail!(
                "the new homed could not re-attach the body at node {} (its host ended it?)",
                w.node
            ),
            Err(e) if Instant::now() >= deadline => bail!(
                "no homed took the deputy back within {} s: {e:#}",
                (w.grace + REJOIN_MARGIN).as_secs()
            ),
            Err(_) => std::thread::sleep(REJOIN_RETRY),
        }
    };
    // The new connection takes the old one's number: the process knows
    // its control fd by number (the restorer keeps it if it comes home).
    let no = old.as_raw_fd();
    // SAFETY: dup2 onto our own control fd number, which `old` owns; the
    // old socket is closed by dup2 itself, so `old` must not close it
    // again (it is forgotten below).
    if unsafe { libc::dup2(last.as_raw_fd(), no) } < 0 {
        bail!(
            "cannot place the new control connection at fd {no}: {}",
            std::io::Error::last_os_error()
        );
    }
    std::mem::forget(old);
    drop(last);
    // SAFETY: `no` now holds the new socket, owned by nobody else.
    let ctl = UnixStream::from(unsafe { OwnedFd::from_raw_fd(no) });
    nix::fcntl::fcntl(
        &ctl,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .context("cannot mark the control fd close-on-exec")?;
    *writer.lock().unwrap_or_else(|e| e.into_inner()) =
        ctl.try_clone().context("cannot clone the control socket")?;
    Ok(ctl)
}

/// One attempt to rejoin a `homed` at `w.procs_socket`: `Ok(None)` if it
/// answered that the body is lost; `Err` if no `homed` answers (yet).
fn try_rejoin(w: &Whereabouts, written: &[(i32, u64)]) -> Result<Option<UnixStream>> {
    use mosix_engine::image::layout::{
        HELLO_DEPUTY, HELLO_MAGIC, HELLO_PATH_MAX, Hello, LAYOUT_VERSION,
    };
    let mut s = UnixStream::connect(&w.procs_socket)
        .with_context(|| format!("cannot connect to homed at {}", w.procs_socket))?;
    s.set_read_timeout(Some(REJOIN_ANSWER))
        .context("cannot set a timeout")?;
    let hello = Hello {
        magic: HELLO_MAGIC,
        version: LAYOUT_VERSION,
        kind: HELLO_DEPUTY,
        pid: std::process::id() as i32,
        freeze_signal: w.freeze_signal,
        interval_minutes: 0,
        path_len: 0,
        checkpoint_path: [0; HELLO_PATH_MAX],
        refuse_len: 0,
        refuse: [0; 124],
    };
    s.write_all(mosix_engine::image::as_bytes(&hello))
        .context("cannot say hello to homed")?;
    let msg = DeputyMsg::Rejoin {
        node: w.node.clone(),
        address: w.address.clone(),
        body_pid: w.body_pid,
        ctl_fd: w.ctl_fd,
        written: written.to_vec(),
        parent: w.parent,
    };
    send_local(&mut s, &msg).context("cannot tell homed where the body is")?;
    match recv_local::<DeputyMsg>(&mut s) {
        Ok(DeputyMsg::Rejoined) => {
            s.set_read_timeout(None).context("cannot clear a timeout")?;
            Ok(Some(s))
        }
        Ok(DeputyMsg::Lost) => Ok(None),
        Ok(other) => bail!("homed answered {other:?} to a rejoin"),
        Err(e) => bail!("no answer from homed to a rejoin: {e}"),
    }
}

/// How long the deputy waits for a reaped child's deputy to end.
const REAP_TIMEOUT_MS: u16 = 10_000;

/// The body forked: fork this deputy too. The child `exec`s
/// `mosix-deputy` afresh (this process has threads; only the forking one
/// survives a fork) with `chan` as its control connection to homed and
/// the same command line (ps at home shows the parent's, as after a fork
/// at home). The reply's value is the child's pid.
fn fork_child(chan: OwnedFd) -> CallReply {
    let prepared = (|| -> Result<_> {
        let exe = std::fs::read_link("/proc/self/exe").context("cannot find mosix-deputy")?;
        let exe = std::ffi::CString::new(exe.into_os_string().into_encoded_bytes())
            .context("mosix-deputy's path has a NUL")?;
        let cmdline =
            std::fs::read("/proc/self/cmdline").context("cannot read the command line")?;
        let args: Vec<std::ffi::CString> = cmdline
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .filter_map(|a| std::ffi::CString::new(a).ok())
            .collect();
        let env = std::ffi::CString::new(format!("MOSIX_DEPUTY={}:", chan.as_raw_fd()))
            .context("bad environment")?;
        Ok((exe, args, env))
    })();
    let (exe, args, env) = match prepared {
        Ok(p) => p,
        Err(e) => {
            eprintln!("mosix-deputy: cannot fork for the body: {e:#}");
            return CallReply::Errno {
                errno: libc::EAGAIN,
            };
        }
    };
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    if argv.is_empty() {
        argv.push(c"mosix-deputy".as_ptr());
    }
    argv.push(std::ptr::null());
    let envp = [env.as_ptr(), std::ptr::null()];
    let fd = chan.as_raw_fd();
    // SAFETY: the child only makes async-signal-safe calls (fcntl,
    // execve, _exit) on memory prepared before the fork.
    match unsafe { libc::fork() } {
        0 => {
            // SAFETY: as above: the child's own copy of the fd.
            unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
            // SAFETY: as above; the strings live until the exec.
            unsafe { libc::execve(exe.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(127) }
        }
        -1 => CallReply::Errno {
            errno: std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EAGAIN),
        },
        pid => {
            drop(chan);
            CallReply::Value {
                value: i64::from(pid),
            }
        }
    }
}

/// The body reaped its child `pid`, whose deputy (our child) is being
/// told to end: reap it when it has, so home keeps no zombie.
fn reap(pid: i32) -> CallReply {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let child = nix::unistd::Pid::from_raw(pid);
    // SAFETY: pidfd_open has no memory effects; the fd is ours.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
    if pidfd >= 0 {
        // SAFETY: a fresh fd we own.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        let mut p = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&pidfd),
            nix::poll::PollFlags::POLLIN,
        )];
        let _ = nix::poll::poll(&mut p, nix::poll::PollTimeout::from(REAP_TIMEOUT_MS));
    }
    match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => CallReply::Errno {
            errno: libc::ETIMEDOUT,
        },
        Ok(_) => CallReply::Value { value: 0 },
        Err(e) => CallReply::Errno { errno: e as i32 },
    }
}

/// Reads input at home for the body: one chunk from an fd each time its
/// host asks ([`DeputyMsg::WantInput`]), so little is read ahead of the
/// body, and nothing once the body comes home ([`Inputs::stop`]).
struct Inputs {
    writer: Arc<Mutex<UnixStream>>,
    readers: HashMap<RawFd, (mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
    stop: Arc<AtomicBool>,
    leftover: Arc<Mutex<Vec<(i32, Bytes)>>>,
    /// Input read while homed was away, to send once rejoined.
    unsent: Arc<Mutex<Vec<(i32, Bytes)>>>,
}

/// How long a reader waits for input before it looks at the stop flag.
const INPUT_POLL_MS: u16 = 100;

impl Inputs {
    fn new(writer: Arc<Mutex<UnixStream>>) -> Inputs {
        Inputs {
            writer,
            readers: HashMap::new(),
            stop: Arc::new(AtomicBool::new(false)),
            leftover: Arc::new(Mutex::new(Vec::new())),
            unsent: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Input read while homed was away (its reader has ended; the next
    /// request starts another).
    fn take_unsent(&mut self) -> Vec<(i32, Bytes)> {
        std::mem::take(&mut *self.unsent.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Read one chunk from `fd` for the body.
    fn want(&mut self, fd: RawFd) {
        if let Some((tx, _)) = self.readers.get(&fd)
            && tx.send(()).is_ok()
        {
            return;
        }
        let (tx, rx) = mpsc::channel();
        let _ = tx.send(());
        let writer = self.writer.clone();
        let stop = self.stop.clone();
        let leftover = self.leftover.clone();
        let unsent = self.unsent.clone();
        let handle =
            std::thread::spawn(move || read_input(fd, &rx, &writer, &stop, &leftover, &unsent));
        self.readers.insert(fd, (tx, handle));
    }

    /// Stop reading; what was read and not sent yet.
    fn stop(&mut self) -> Vec<(i32, Bytes)> {
        self.stop.store(true, Ordering::SeqCst);
        for (_, (tx, handle)) in self.readers.drain() {
            drop(tx);
            let _ = handle.join();
        }
        std::mem::take(&mut *self.leftover.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// One fd's reader: a chunk per request, until stopped or at the end of a
/// pipe.
fn read_input(
    fd: RawFd,
    wants: &mpsc::Receiver<()>,
    writer: &Mutex<UnixStream>,
    stop: &AtomicBool,
    leftover: &Mutex<Vec<(i32, Bytes)>>,
    unsent: &Mutex<Vec<(i32, Bytes)>>,
) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    // SAFETY: borrowing one of the process's own fds, open for the
    // deputy's whole life.
    let f = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let is_tty = nix::unistd::isatty(f).unwrap_or(false);
    let mut buf = vec![0u8; 64 * 1024];
    while wants.recv().is_ok() {
        let n = loop {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let mut p = [PollFd::new(f, PollFlags::POLLIN)];
            match poll(&mut p, PollTimeout::from(INPUT_POLL_MS)) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => {}
                Err(_) => return,
            }
            match nix::unistd::read(f, &mut buf) {
                Ok(n) => break n,
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => continue,
                Err(_) => return,
            }
        };
        let data = Bytes(buf[..n].to_vec());
        if stop.load(Ordering::SeqCst) {
            if n > 0 {
                leftover
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((fd, data));
            }
            return;
        }
        let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
        if send_local(
            &mut w,
            &DeputyMsg::Input {
                fd,
                data: data.clone(),
            },
        )
        .is_err()
        {
            // homed is away: kept for the next one (the host asks anew).
            unsent
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((fd, data));
            return;
        }
        if n == 0 && !is_tty {
            // The end of a pipe is for ever; a terminal's ^D is not.
            return;
        }
    }
}

/// The body came home: make the fds what the image expects, then become
/// the process again by `exec`ing the restorer on the image (the control
/// fd `ctl_no` stays open: the restored libmosix says hello on it; `ctl`
/// is the writing end of it the deputy holds). Returns only
/// on failure; before the fds are touched if at all possible.
fn come_home(
    ctl: &mut UnixStream,
    ctl_no: RawFd,
    image: OwnedFd,
    restorer: &str,
    fds: &[FdState],
    unread: &[(i32, Bytes)],
) -> Result<std::convert::Infallible> {
    use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl, open};
    use nix::sys::stat::Mode;
    use nix::unistd::{Whence, lseek};
    // Open what the body opened away, at spare numbers first: a failure
    // here leaves the deputy as it was.
    let mut opened = Vec::new();
    for f in fds {
        if let FdHow::Open { path, flags, pos } = &f.how {
            let flags = OFlag::from_bits_truncate(*flags)
                & !(OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_EXCL | OFlag::O_NOCTTY);
            let fd = open(path.as_str(), flags | OFlag::O_CLOEXEC, Mode::empty())
                .with_context(|| format!("cannot open {path} for fd {}", f.fd))?;
            if let Some(pos) = pos {
                lseek(&fd, *pos as i64, Whence::SeekSet)
                    .with_context(|| format!("cannot seek {path} for fd {}", f.fd))?;
            }
            opened.push((f.fd, fd));
        }
    }
    // Input the body was given and did not read comes first: a feeder
    // (not our child) writes it, then the rest of the pipe, into a new
    // pipe that takes the fd's place.
    for (fd, data) in unread {
        let fed = feed(*fd, &data.0)
            .with_context(|| format!("cannot give back fd {fd}'s unread input"))?;
        opened.push((*fd, fed));
    }
    for f in fds {
        if let FdHow::Seek { pos } = f.how {
            // SAFETY: borrowing one of the process's own fds for a seek.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(f.fd) };
            lseek(fd, pos as i64, Whence::SeekSet)
                .with_context(|| format!("cannot move fd {} to offset {pos}", f.fd))?;
        }
    }
    let restorer_c = std::ffi::CString::new(restorer).context("restorer path has a NUL")?;
    // From here on the deputy is being taken apart.
    let wanted: std::collections::HashSet<RawFd> = fds.iter().map(|f| f.fd).collect();
    let spare: std::collections::HashSet<RawFd> =
        opened.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    // The control connection at the number the process knows (`ctl` is
    // a clone of it, closed at the exec).
    let keep_too = [ctl_no, image.as_raw_fd()];
    let open_now: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .context("cannot list the deputy's fds")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in open_now {
        // The clone `ctl` goes at the exec (close-on-exec), not before:
        // the last message is written through it.
        if !wanted.contains(&fd)
            && !spare.contains(&fd)
            && !keep_too.contains(&fd)
            && fd != ctl.as_raw_fd()
        {
            let _ = nix::unistd::close(fd);
        }
    }
    for (at, fd) in opened {
        // SAFETY: placing an fd we opened at the number the image has;
        // whatever was there is the deputy's own and no longer wanted.
        let placed = unsafe { libc::dup2(fd.as_raw_fd(), at) };
        if placed < 0 {
            bail!("cannot place fd {at}: {}", std::io::Error::last_os_error());
        }
    }
    for f in fds {
        if let FdHow::Dup { of } = f.how {
            // SAFETY: making fd `f.fd` share `of`'s open file, as the body
            // had them; both are the process's own numbers.
            if unsafe { libc::dup2(of, f.fd) } < 0 {
                bail!(
                    "cannot make fd {} a dup of fd {of}: {}",
                    f.fd,
                    std::io::Error::last_os_error()
                );
            }
        }
    }
    for fd in keep_too {
        // SAFETY: borrowing our own fd to clear close-on-exec.
        let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        fcntl(b, FcntlArg::F_SETFD(FdFlag::empty()))
            .with_context(|| format!("cannot keep fd {fd} across the exec"))?;
    }
    send_local(ctl, &DeputyMsg::Leaving).context("cannot tell homed")?;
    let arg = std::ffi::CString::new(image.as_raw_fd().to_string()).unwrap_or_default();
    let name = c"mosix-restore";
    let e = nix::unistd::execve::<&std::ffi::CStr, &std::ffi::CStr>(
        &restorer_c,
        // The image memfd is read once: its pages are freed as they land.
        &[name, arg.as_c_str(), c"consume"],
        &[],
    );
    // Too late to go back: the fds are gone.
    eprintln!("mosix-deputy: cannot exec {restorer}: {e:?}; the process is lost");
    end_as(BodyStatus::Signal {
        sig: libc::SIGKILL,
        core: false,
    })
}

/// A pipe whose reader gets `data` and then everything still to come on
/// our `fd`, written by a grandchild (so the process never sees it as a
/// child); the read end.
fn feed(fd: RawFd, data: &[u8]) -> Result<OwnedFd> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    let (wr, src) = (w.as_raw_fd(), fd);
    // SAFETY: after fork the child only calls async-signal-safe functions
    // (fork, close, read, write, _exit) on memory allocated before.
    match unsafe { nix::unistd::fork() }.context("fork")? {
        nix::unistd::ForkResult::Child => {
            // SAFETY: as above.
            if let Ok(nix::unistd::ForkResult::Child) = unsafe { nix::unistd::fork() } {
                feeder(src, wr, data);
            }
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(0) };
        }
        nix::unistd::ForkResult::Parent { child } => {
            let _ = nix::sys::wait::waitpid(child, None);
        }
    }
    drop(w);
    Ok(r)
}

/// The feeder's whole life: only raw, async-signal-safe calls.
fn feeder(src: RawFd, dst: RawFd, mut data: &[u8]) -> ! {
    for n in 0..1024 {
        if n != src && n != dst {
            // SAFETY: closing fds of this forked process.
            unsafe { libc::close(n) };
        }
    }
    let mut buf = [0u8; 16384];
    loop {
        while !data.is_empty() {
            // SAFETY: write(2) from memory we own.
            let n = unsafe { libc::write(dst, data.as_ptr().cast(), data.len()) };
            if n <= 0 {
                // SAFETY: _exit is async-signal-safe.
                unsafe { libc::_exit(0) };
            }
            data = &data[n as usize..];
        }
        // SAFETY: read(2) into a stack buffer.
        let n = unsafe { libc::read(src, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(0) };
        }
        // The slice lives on this stack frame until written.
        let chunk: &[u8] = &buf[..n as usize];
        let mut rest = chunk;
        while !rest.is_empty() {
            // SAFETY: write(2) from the stack buffer.
            let k = unsafe { libc::write(dst, rest.as_ptr().cast(), rest.len()) };
            if k <= 0 {
                // SAFETY: _exit is async-signal-safe.
                unsafe { libc::_exit(0) };
            }
            rest = &rest[k as usize..];
        }
    }
}

/// Take ownership of the inherited control fd, close-on-exec again.
fn ctl_fd(fd: RawFd) -> Result<std::os::fd::OwnedFd> {
    // SAFETY: borrowing the fd number libmosix passed only to check that
    // it is open before taking it over.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_GETFD)
        .with_context(|| format!("control fd {fd} is not open"))?;
    // SAFETY: libmosix exec'd us with this fd open and owned by nobody else.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    nix::fcntl::fcntl(
        &owned,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .context("cannot mark the control fd close-on-exec")?;
    Ok(owned)
}

/// Write the body's output to our own `fd` (the process's pipe). A
/// closed pipe raises SIGPIPE here, which ends the deputy (and so the
/// body) as it would have ended the process at home.
fn write_out(fd: RawFd, mut data: &[u8]) {
    if fd < 0 {
        return;
    }
    // SAFETY: `fd` is one of the process's fds that the deputy kept
    // open across the exec; only borrowed for these writes.
    let f = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    while !data.is_empty() {
        match nix::unistd::write(f, data) {
            Ok(0) => return,
            Ok(n) => data = &data[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// The body closed its relayed pipe `fd` (every process away that shared
/// it did): close ours, so a reader at home sees the end when every
/// writer is gone, as it would have. Never the control connection `ctl`.
fn close_out(fd: RawFd, ctl: RawFd) {
    if fd < 0 || fd == ctl {
        return;
    }
    // SAFETY: `fd` is one of the process's own fds that the body no
    // longer has; nothing in the deputy uses it.
    unsafe { libc::close(fd) };
}

/// End exactly as the body did.
fn end_as(status: BodyStatus) -> ! {
    match status {
        BodyStatus::Code { code } => std::process::exit(code),
        BodyStatus::Signal { sig, core } => {
            let _ = std::io::stdout().flush();
            if let Ok(s) = Signal::try_from(sig) {
                if !core {
                    // A signal that dumps core by default must not write
                    // a second core at home: the body already did or not.
                    let _ = nix::sys::resource::setrlimit(
                        nix::sys::resource::Resource::RLIMIT_CORE,
                        0,
                        0,
                    );
                }
                // SAFETY: resetting a disposition to the default is
                // always sound; no handler is involved.
                let _ =
                    unsafe { nix::sys::signal::signal(s, nix::sys::signal::SigHandler::SigDfl) };
                let mut one = SigSet::empty();
                one.add(s);
                let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&one), None);
                let _ = nix::sys::signal::raise(s);
            }
            // A signal whose default is not to end the process.
            std::process::exit(128 + sig)
        }
    }
}

/// A body's process-group or session request, done here, where the
/// process's real group and session are.
fn pgrp(op: PgrpOp) -> CallReply {
    let r = match op {
        // SAFETY: getpgid takes an integer and has no memory effects.
        PgrpOp::GetPgid { pid } => unsafe { libc::getpgid(pid) },
        // SAFETY: setpgid takes integers and has no memory effects.
        PgrpOp::SetPgid { pid, pgid } => unsafe { libc::setpgid(pid, pgid) },
        // SAFETY: getsid takes an integer and has no memory effects.
        PgrpOp::GetSid { pid } => unsafe { libc::getsid(pid) },
        // SAFETY: setsid has no arguments and no memory effects.
        PgrpOp::SetSid => unsafe { libc::setsid() },
    };
    if r < 0 {
        CallReply::Errno {
            errno: std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINVAL),
        }
    } else {
        CallReply::Value {
            value: i64::from(r),
        }
    }
}
