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
use mosix_proto::local::{recv_fd, recv_local, send_local};
use mosix_proto::migrate::{BodyStatus, DeputyMsg, FdHow, FdState};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

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
    // Held by whoever writes to homed; coming home holds it through the
    // exec, so no signal message can follow the last one.
    let writing = Arc::new(Mutex::new(()));
    let signals_writing = writing.clone();
    std::thread::spawn(move || {
        while let Ok(Some(info)) = sfd.read_signal() {
            let sig = info.ssi_signo as i32;
            let _w = signals_writing.lock().unwrap_or_else(|e| e.into_inner());
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
            Ok(DeputyMsg::ComeHome { restorer, fds }) => {
                let image = recv_fd(&ctl).context("no image fd from homed")?;
                let guard = writing.lock().unwrap_or_else(|e| e.into_inner());
                let reason = match come_home(&ctl, image, &restorer, &fds) {
                    Ok(never) => match never {},
                    Err(e) => format!("{e:#}"),
                };
                drop(guard);
                eprintln!("mosix-deputy: cannot bring the process home: {reason}");
                send_local(&mut ctl, &DeputyMsg::ComeHomeFailed { reason })
                    .context("cannot tell homed")?;
            }
            Ok(
                DeputyMsg::Signal { .. } | DeputyMsg::Leaving | DeputyMsg::ComeHomeFailed { .. },
            ) => {}
            Err(e) => bail!("lost homed (it holds the link to the body): {e}"),
        }
    }
}

/// The body came home: make the fds what the image expects, then become
/// the process again by `exec`ing the restorer on the image (the control
/// fd stays open: the restored libmosix says hello on it). Returns only
/// on failure; before the fds are touched if at all possible.
fn come_home(
    ctl: &UnixStream,
    image: OwnedFd,
    restorer: &str,
    fds: &[FdState],
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
    let keep_too = [ctl.as_raw_fd(), image.as_raw_fd()];
    let open_now: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .context("cannot list the deputy's fds")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in open_now {
        if !wanted.contains(&fd) && !spare.contains(&fd) && !keep_too.contains(&fd) {
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
    let mut out = ctl.try_clone().context("cannot clone the control socket")?;
    send_local(&mut out, &DeputyMsg::Leaving).context("cannot tell homed")?;
    let arg = std::ffi::CString::new(image.as_raw_fd().to_string()).unwrap_or_default();
    let name = c"mosix-restore";
    let e = nix::unistd::execve::<&std::ffi::CStr, &std::ffi::CStr>(
        &restorer_c,
        &[name, arg.as_c_str()],
        &[],
    );
    // Too late to go back: the fds are gone.
    eprintln!("mosix-deputy: cannot exec {restorer}: {e:?}; the process is lost");
    end_as(BodyStatus::Signal {
        sig: libc::SIGKILL,
        core: false,
    })
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
