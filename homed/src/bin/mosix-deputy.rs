//! `mosix-deputy`: what a process at home becomes when its body migrates
//! (DESIGN.md sections 1 and 3). The freeze handler `exec`s it in place,
//! so it keeps the process's pid, parent, process group, session, fds and
//! cwd: the parent's `wait` and a `kill` of the home pid still work.
//!
//! Usage (by libmosix only): `mosix-deputy CTL-FD CLOEXEC-FDS`, where
//! CTL-FD is the process's control socket to `homed` (which holds the link
//! to the body's node) and CLOEXEC-FDS the comma-separated fds whose
//! FD_CLOEXEC the handler cleared (to be set back when the body comes
//! home, a later step of issue 4).
//!
//! It forwards every signal of [`FORWARDED`] to the body through `homed`,
//! and ends with the body's exact status: the same exit code, or death by
//! the same signal. It writes the body's output to pipes into its own
//! fds. If the body's node or `homed` is lost it ends as if killed by
//! SIGKILL, with a line on its stderr naming what was lost.
//! Todo (issue 4): serve the body's forwarded calls, ttys and input.

use anyhow::{Context, Result, bail};
use mosix_proto::image::layout::DEPUTY_READY;
use mosix_proto::local::{recv_local, send_local};
use mosix_proto::migrate::{BodyStatus, DeputyMsg};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::io::Write;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;

/// Signals caught here and raised in the body.
const FORWARDED: [Signal; 10] = [
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
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        bail!("usage: mosix-deputy CTL-FD CLOEXEC-FDS (run by libmosix, not by hand)");
    }
    let ctl: RawFd = args[1]
        .parse()
        .with_context(|| format!("bad control fd {:?}", args[1]))?;
    let _was_cloexec: Vec<RawFd> = args[2]
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .with_context(|| format!("bad fd {s:?} in {:?}", args[2]))
        })
        .collect::<Result<_>>()?;
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
    let mut out = ctl.try_clone().context("cannot clone the control socket")?;
    std::thread::spawn(move || {
        while let Ok(Some(info)) = sfd.read_signal() {
            let sig = info.ssi_signo as i32;
            if send_local(&mut out, &DeputyMsg::Signal { sig }).is_err() {
                return;
            }
        }
    });
    loop {
        match recv_local::<DeputyMsg>(&mut ctl) {
            Ok(DeputyMsg::Exited { status }) => end_as(status),
            Ok(DeputyMsg::Lost) => {
                eprintln!("mosix-deputy: lost the node running the body; ending as killed");
                end_as(BodyStatus::Signal {
                    sig: libc::SIGKILL,
                    core: false,
                });
            }
            Ok(DeputyMsg::Output { fd, data }) => write_out(fd, &data.0),
            Ok(DeputyMsg::Signal { .. }) => {}
            Err(e) => bail!("lost homed (it holds the link to the body): {e}"),
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
