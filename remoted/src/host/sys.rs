//! The few raw system calls the body host needs. Through `nix` where it
//! has a safe call; `libc` where it has none or would lose information
//! (real-time signals, the raw wait status).

use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;

/// An anonymous in-memory file (no name anywhere in the file system),
/// close-on-exec: the received image lives here, never on disk.
pub fn memfd(name: &std::ffi::CStr) -> io::Result<File> {
    use nix::sys::memfd::{MFdFlags, memfd_create};
    Ok(File::from(memfd_create(name, MFdFlags::MFD_CLOEXEC)?))
}

/// `waitpid(pid, flags)`: the status word, retrying on EINTR. Raw, not
/// `nix::sys::wait::waitpid`: callers decode the word themselves
/// (`BodyStatus::from_wait`), and nix cannot decode an end by a real-time
/// signal (it reaps the child, then fails with EINVAL).
pub fn waitpid(pid: i32, flags: i32) -> io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on a child of ours, writing into `status`.
        let r = unsafe { libc::waitpid(pid, &mut status, flags) };
        if r == pid {
            return Ok(status);
        }
        let e = io::Error::last_os_error();
        if r < 0 && e.raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return Err(e);
    }
}

/// Send `sig` to `pid`: the engine's one `kill`, which takes any signal
/// number (the freeze signal and forwarded ones may be real-time).
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    mosix_engine::kill(pid, sig)
}

/// Run in the forked child before `exec` (async-signal-safe calls only):
/// set the umask, put each `(fd, src)` of `dups` at `fd` (`src` numbers
/// are above every `fd`), open each `(fd, path, flags, pos)` as the body's
/// user and place it at `fd`, make each `(fd, of)` of `aliases` a dup of
/// `of` (placed before), and make `keep` survive the `exec`.
pub fn place_fds(
    umask: u32,
    dups: &[(i32, i32)],
    plan: &[(i32, std::ffi::CString, i32, Option<u64>)],
    aliases: &[(i32, i32)],
    keep: i32,
) -> io::Result<()> {
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(umask as libc::mode_t) };
    for &(fd, src) in dups {
        // SAFETY: dup2 between fds of this (child) process; the copy at
        // `fd` is not close-on-exec, `src` (close-on-exec) goes at exec.
        if unsafe { libc::dup2(src, fd) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    for (fd, path, flags, pos) in plan {
        // SAFETY: open(2) with a NUL-terminated path.
        let tmp = unsafe { libc::open(path.as_ptr(), *flags | libc::O_CLOEXEC, 0o666) };
        if tmp < 0 {
            return Err(io::Error::last_os_error());
        }
        if let Some(pos) = pos {
            // SAFETY: lseek on the fd just opened.
            if unsafe { libc::lseek(tmp, *pos as libc::off_t, libc::SEEK_SET) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if tmp != *fd {
            // SAFETY: dup2 between fds of this (child) process; clears
            // FD_CLOEXEC on `fd` (the restorer sets it as the image had it).
            if unsafe { libc::dup2(tmp, *fd) } < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: closing the temporary number.
            unsafe { libc::close(tmp) };
        } else {
            // SAFETY: F_SETFD on our own fd.
            unsafe { libc::fcntl(tmp, libc::F_SETFD, 0) };
        }
    }
    for &(fd, of) in aliases {
        // SAFETY: dup2 between fds of this (child) process; `of` was
        // placed above.
        if unsafe { libc::dup2(of, fd) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: F_SETFD on the image fd: it must survive the exec.
    if unsafe { libc::fcntl(keep, libc::F_SETFD, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A close-on-exec duplicate of `f` numbered `min` or above (above every
/// number the body's fds take, so placing those in the child overwrites
/// none of these).
pub fn dup_above(f: &File, min: i32) -> io::Result<std::os::fd::OwnedFd> {
    use nix::fcntl::{FcntlArg, fcntl};
    let n = fcntl(f, FcntlArg::F_DUPFD_CLOEXEC(min))?;
    // SAFETY: F_DUPFD_CLOEXEC succeeded, so `n` is a fresh fd nothing else
    // owns (nix returns it as a plain number).
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(n) })
}

/// A pipe, both ends close-on-exec: (read end, write end).
pub fn pipe() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

/// A pidfd for our child `pid`: readable once it has ended. Raw: nix has
/// no pidfd_open.
pub fn pidfd_open(pid: i32) -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// Set or clear O_NONBLOCK on `fd`.
pub fn set_nonblocking(fd: std::os::fd::BorrowedFd<'_>, yes: bool) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let fl = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    let fl = if yes {
        fl | OFlag::O_NONBLOCK
    } else {
        fl - OFlag::O_NONBLOCK
    };
    fcntl(fd, FcntlArg::F_SETFL(fl))?;
    Ok(())
}

/// Wait up to `timeout` until one of `fds` is readable (or hung up);
/// whether any is. Raw: the callers hold fd numbers, and `nix::poll`
/// wants `BorrowedFd`s, which from a number take an `unsafe` of their own
/// (with a stronger promise than poll(2) needs: open, never -1).
pub fn poll_in(fds: &[i32], timeout: std::time::Duration) -> io::Result<bool> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: poll(2) on a buffer of `p.len()` pollfds we own.
    let n = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(n > 0)
}

/// In a forked child: be killed when the thread that forked it ends (the
/// body's host thread, which lives as long as the body is ours), so a
/// `remoted` that dies leaves no body behind. Set after the uid change,
/// which would clear it.
pub fn die_with_parent() -> io::Result<()> {
    Ok(nix::sys::prctl::set_pdeathsig(
        nix::sys::signal::Signal::SIGKILL,
    )?)
}

/// `read(2)` into `buf`: one call, as the relays want it.
pub fn read(fd: std::os::fd::BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    Ok(nix::unistd::read(fd, buf)?)
}

/// `write(2)` of `data`; the count written (one call: a short write is
/// the caller's to finish).
pub fn write(fd: std::os::fd::BorrowedFd<'_>, data: &[u8]) -> io::Result<usize> {
    Ok(nix::unistd::write(fd, data)?)
}

/// Bytes waiting to be read on `fd` (a pipe or socket): FIONREAD.
pub fn pending(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int into `n`.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n.max(0) as usize)
}

/// In a forked child: a session and process group of its own (setsid).
pub fn new_session() -> io::Result<()> {
    nix::unistd::setsid()?;
    Ok(())
}

/// In a forked child before exec: give the child's children (and the
/// program it execs) a new time namespace with these offsets, written as
/// `/proc/self/timens_offsets` wants them (`text`, prepared before the
/// fork). Needs CAP_SYS_ADMIN and CAP_SYS_TIME: before the uid change.
pub fn enter_new_timens(path: &std::ffi::CStr, text: &[u8]) -> io::Result<()> {
    // SAFETY: unshare takes flags only.
    if unsafe { libc::unshare(libc::CLONE_NEWTIME) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open of a NUL-terminated path; the fd is closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `text` is valid for its length; `fd` is ours.
    let n = unsafe { libc::write(fd, text.as_ptr().cast(), text.len()) };
    let err = io::Error::last_os_error();
    // SAFETY: closing our own fd.
    unsafe { libc::close(fd) };
    if n != text.len() as isize {
        return Err(err);
    }
    Ok(())
}
