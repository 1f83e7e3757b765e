//! Body mode (ARCHITECTURE.md section 4): in a process whose body runs away
//! from home, the calls the kernel here cannot answer as home would are
//! answered from home's facts, which the body's host wrote after the
//! process's hello ([`BodyInfo`]): identity (`getpid`, `gettid`) and
//! which fds are relayed terminals (`isatty`).
//!
//! **Process groups and sessions** are the deputies' at home:
//! `getpgrp`, `getpgid`, `getsid`, `setpgid` and `setsid` are asked of
//! the deputy ([`crate::layout::CALL_PGRP`]) with home pids, so a group
//! made away holds the deputies of its members and a `kill(-pgid)` or
//! `killpg` (done at home) reaches their bodies. If home cannot answer,
//! the reads fall back to the ids of the moment the body left.
//!
//! **Terminal control** on a relayed terminal is done at home: the
//! deputy does the request on the real terminal and answers
//! ([`crate::layout::CALL_TTY`], a forwarded call with the termios or
//! winsize as payload): `tcgetattr`, `tcsetattr`, `tcflush`, `tcdrain`,
//! `tcgetpgrp`, `tcsetpgrp` (glibc's own call the kernel directly, so
//! they are hooked here too) and `ioctl`'s `TCGETS`, `TCSETS`,
//! `TCSETSW`, `TCSETSF`, `TIOCGWINSZ`, `TIOCSWINSZ`, `TIOCGPGRP`,
//! `TIOCSPGRP`, `TCFLSH` and `TCSBRK`. So raw mode set away is the
//! user's terminal's mode, and a window resized at home (whose SIGWINCH
//! the deputy forwards) is the size the body reads next. A `TCSADRAIN`
//! or `TCSAFLUSH` waits at home for the output the body wrote before it;
//! a `TCSAFLUSH` or an input `tcflush` also drops the input the body was
//! given and has not read (its host does), and what the deputy had read
//! for it before the flush.
//!
//! `getppid` asks the deputy (a forwarded call, see [`crate::forward`]),
//! so a parent that dies at home meanwhile is seen; `kill` and the
//! process tree are in [`crate::family`].
//!
//! Limits, said plainly: the other home facts are those of the moment
//! the body left; a terminal is known by the fd number it had when the
//! body left (a `dup` of it made away is a plain socket to `isatty`);
//! a forked child's `TCSADRAIN` waits for its own output only, not for
//! output its parent's host has not sent home yet; `termios2`
//! (`TCGETS2`) and the other terminal ioctls (`TIOCSTI`, `TIOCGSID`,
//! ...) are not forwarded.
//!
//! Every hook reads static storage only: no allocation, no lock, errno
//! kept. The facts are written by the freeze handler (with every signal
//! blocked) and read by the program's single thread.

use crate::facts::{BODY, away};
use crate::layout::{
    BODY_MAGIC, BodyInfo, CALL_PGRP, CALL_TTY, KTERMIOS_LEN, PGRP_GETPGID, PGRP_GETSID,
    PGRP_SETPGID, PGRP_SETSID, WINSIZE_LEN,
};
use crate::{forward, real, sys};

/// Read the host's [`BodyInfo`] from the control socket `ctl` (in the
/// freeze handler, after the hello), and publish the socket for a body's
/// next program. Called through [`crate::family`]'s `attach`, which also
/// tells waits that the process is in a new place.
pub(crate) fn attach(ctl: i32) {
    let mut info = BodyInfo::at_home();
    // SAFETY: BodyInfo is plain repr(C) data; any bytes are a valid value.
    let bytes = unsafe {
        core::slice::from_raw_parts_mut(
            (&raw mut info).cast::<u8>(),
            core::mem::size_of::<BodyInfo>(),
        )
    };
    if !sys::read_exact(ctl, bytes) || info.magic != BODY_MAGIC {
        info = BodyInfo::at_home();
    }
    // SAFETY: called from the freeze handler with every signal blocked in
    // a single-threaded process: nothing reads BODY meanwhile.
    unsafe { *BODY.get() = info };
    if info.away == 1 {
        // A body's new program after exec finds its control socket open
        // at the number the environment names (see `family`).
        sys::set_fd_flags(ctl, 0);
        forward::publish_ctl(ctl, sys::getpid());
    } else {
        forward::publish_ctl(-1, 0);
    }
}

/// The process group at home of a body (0 at home).
pub(crate) fn home_pgrp() -> i32 {
    away().map_or(0, |b| b.home_pgrp)
}

/// Stop answering as a body (a child that lost its control socket runs on
/// with local ids).
pub(crate) fn forget() {
    // SAFETY: called with every signal blocked on the single thread.
    unsafe { (*BODY.get()).away = 0 };
}

/// In a forked child: it is the body of the deputy `home`, a child of
/// ours (its facts from the host follow at its hello).
pub(crate) fn set_child_ids(home: i32) {
    // SAFETY: called with every signal blocked on the single thread.
    let b = unsafe { &mut *BODY.get() };
    b.home_ppid = b.home_pid;
    b.home_pid = home;
}

/// Whether `fd` is relayed to a terminal at home.
fn is_tty(fd: i32) -> bool {
    away().is_some_and(|b| {
        let n = (b.n_ttys as usize).min(b.ttys.len());
        b.ttys[..n].iter().any(|t| t.fd == fd)
    })
}

/// Do terminal request `req` (argument `arg`, payload `input`) on the
/// relayed terminal `fd` at home, through the deputy; the reply's
/// payload into `output`. `Ok((value, payload length))`, or -1 returned
/// with errno set. errno is kept on success.
fn tty_call(
    fd: i32,
    req: libc::c_ulong,
    arg: i64,
    input: &[u8],
    output: &mut [u8],
) -> Result<(i64, usize), i32> {
    let errno = sys::errno();
    match forward::call_with(CALL_TTY, [fd as i64, req as i64, arg], input, output) {
        Ok((value, passed, n)) => {
            if passed >= 0 {
                sys::close(passed);
            }
            sys::set_errno(errno);
            Ok((value, n))
        }
        Err(e) => {
            sys::set_errno(e);
            Err(-1)
        }
    }
}

/// A terminal request with no payload either way: 0 or -1 with errno.
fn tty_plain(fd: i32, req: libc::c_ulong, arg: i64) -> i32 {
    match tty_call(fd, req, arg, &[], &mut []) {
        Ok(_) => 0,
        Err(r) => r,
    }
}

/// `TCGETS` at home into `k`: 0 or -1 with errno.
fn tty_get(fd: i32, req: libc::c_ulong, k: &mut [u8]) -> i32 {
    let want = k.len();
    match tty_call(fd, req, 0, &[], k) {
        Ok((_, n)) if n == want => 0,
        Ok(_) => {
            sys::set_errno(libc::EIO);
            -1
        }
        Err(r) => r,
    }
}

/// `getpid(2)`: the home pid in a body.
#[unsafe(no_mangle)]
pub extern "C" fn getpid() -> libc::pid_t {
    away().map_or_else(sys::getpid, |b| b.home_pid)
}

/// `gettid(2)`: the home pid for the (only) thread of a body.
#[unsafe(no_mangle)]
pub extern "C" fn gettid() -> libc::pid_t {
    away().map_or_else(sys::gettid, |b| b.home_pid)
}

/// `getppid(2)`: the deputy's parent at home, asked now (a parent that
/// died meanwhile is seen); the parent when the body left if the deputy
/// cannot be asked.
#[unsafe(no_mangle)]
pub extern "C" fn getppid() -> libc::pid_t {
    match away() {
        Some(b) => {
            let errno = sys::errno();
            let ppid = match forward::call(crate::layout::CALL_GETPPID, [0; 3]) {
                Ok((v, _)) if v > 0 && v <= i32::MAX as i64 => v as i32,
                _ => b.home_ppid,
            };
            sys::set_errno(errno);
            ppid
        }
        // SAFETY: getppid has no arguments and cannot fail.
        None => unsafe { libc::syscall(libc::SYS_getppid) as i32 },
    }
}

/// Ask the deputy a process-group or session request
/// ([`crate::layout::CALL_PGRP`]): the value, or the errno.
fn pgrp_call(kind: i64, pid: libc::pid_t, pgid: libc::pid_t) -> Result<i32, i32> {
    let errno = sys::errno();
    let r = match forward::call(CALL_PGRP, [kind, i64::from(pid), i64::from(pgid)]) {
        Ok((v, _)) => i32::try_from(v).map_err(|_| libc::EIO),
        Err(e) => Err(e),
    };
    sys::set_errno(errno);
    r
}

/// Keep the home group (and session) of this body in step with what
/// home answered or did, so a `waitpid(-pgid)` of its own group is
/// translated right (`crate::family`) after a `setpgid` or `setsid`.
fn note_own_group(pgrp: i32, sid: Option<i32>) {
    // SAFETY: one word each of BODY, on the single thread; the freeze
    // handler only replaces BODY whole, with home's facts of that moment.
    let b = unsafe { &mut *BODY.get() };
    b.home_pgrp = pgrp;
    if let Some(sid) = sid {
        b.home_sid = sid;
    }
}

/// A pid argument as the deputy takes it: our own home pid is 0 (the
/// deputy itself), any other is a home pid already.
fn home_target(b: &BodyInfo, pid: libc::pid_t) -> libc::pid_t {
    if pid == b.home_pid { 0 } else { pid }
}

/// The value of an identity call, or -1 with errno set.
fn value_or_errno(r: Result<i32, i32>) -> i32 {
    r.unwrap_or_else(|e| {
        sys::set_errno(e);
        -1
    })
}

/// `getpgrp(2)`: the process group at home, asked now (the parent may
/// have moved it); the group when the body left if home cannot answer.
#[unsafe(no_mangle)]
pub extern "C" fn getpgrp() -> libc::pid_t {
    match away() {
        Some(b) => match pgrp_call(PGRP_GETPGID, 0, 0) {
            Ok(g) => {
                note_own_group(g, None);
                g
            }
            Err(_) => b.home_pgrp,
        },
        // SAFETY: getpgid(0) has no memory effects.
        None => unsafe { libc::syscall(libc::SYS_getpgid, 0) as i32 },
    }
}

/// `getpgid(2)`: in a body, of a home pid, asked at home.
#[unsafe(no_mangle)]
pub extern "C" fn getpgid(pid: libc::pid_t) -> libc::pid_t {
    match away() {
        Some(b) if pid == 0 || pid == b.home_pid => {
            pgrp_call(PGRP_GETPGID, 0, 0).unwrap_or(b.home_pgrp)
        }
        Some(b) => value_or_errno(pgrp_call(PGRP_GETPGID, home_target(b, pid), 0)),
        // SAFETY: getpgid has no memory effects.
        None => unsafe { libc::syscall(libc::SYS_getpgid, pid) as i32 },
    }
}

/// `getsid(2)`: in a body, of a home pid, asked at home.
#[unsafe(no_mangle)]
pub extern "C" fn getsid(pid: libc::pid_t) -> libc::pid_t {
    match away() {
        Some(b) if pid == 0 || pid == b.home_pid => {
            pgrp_call(PGRP_GETSID, 0, 0).unwrap_or(b.home_sid)
        }
        Some(b) => value_or_errno(pgrp_call(PGRP_GETSID, home_target(b, pid), 0)),
        // SAFETY: getsid has no memory effects.
        None => unsafe { libc::syscall(libc::SYS_getsid, pid) as i32 },
    }
}

/// `setpgid(2)`: in a body, done at home on the deputies (home pids), so
/// `kill(-pgid)`, `killpg` and `waitpid(-pgid)` at home find the group.
#[unsafe(no_mangle)]
pub extern "C" fn setpgid(pid: libc::pid_t, pgid: libc::pid_t) -> i32 {
    match away() {
        Some(b) => {
            if pid < 0 || pgid < 0 {
                sys::set_errno(libc::EINVAL);
                return -1;
            }
            let target = home_target(b, pid);
            let r = pgrp_call(PGRP_SETPGID, target, pgid);
            if r.is_ok() && target == 0 {
                note_own_group(if pgid == 0 { b.home_pid } else { pgid }, None);
            }
            value_or_errno(r.map(|_| 0))
        }
        // SAFETY: setpgid has no memory effects.
        None => unsafe { libc::syscall(libc::SYS_setpgid, pid, pgid) as i32 },
    }
}

/// `setsid(2)`: in a body, the deputy at home starts the session (and
/// leaves the home terminal, as the process would).
#[unsafe(no_mangle)]
pub extern "C" fn setsid() -> libc::pid_t {
    match away() {
        Some(_) => {
            let r = pgrp_call(PGRP_SETSID, 0, 0);
            if let Ok(sid) = r {
                note_own_group(sid, Some(sid));
            }
            value_or_errno(r)
        }
        // SAFETY: setsid has no memory effects.
        None => unsafe { libc::syscall(libc::SYS_setsid) as i32 },
    }
}

/// `isatty(3)`: true for a relayed terminal.
#[unsafe(no_mangle)]
pub extern "C" fn isatty(fd: i32) -> i32 {
    if is_tty(fd) {
        return 1;
    }
    let mut t = [0u8; KTERMIOS_LEN];
    // SAFETY: TCGETS writes a kernel termios into `t`.
    if unsafe { libc::syscall(libc::SYS_ioctl, fd, libc::TCGETS, t.as_mut_ptr()) } == 0 {
        1
    } else {
        sys::set_errno(libc::ENOTTY);
        0
    }
}

/// glibc's `struct termios` from the kernel's (what glibc's own
/// `tcgetattr` does).
fn to_user(k: &[u8; KTERMIOS_LEN], out: &mut libc::termios) {
    let word = |i: usize| u32::from_ne_bytes([k[i], k[i + 1], k[i + 2], k[i + 3]]);
    out.c_iflag = word(0);
    out.c_oflag = word(4);
    out.c_cflag = word(8);
    out.c_lflag = word(12);
    out.c_line = k[16];
    out.c_cc = [0; libc::NCCS];
    let n = (KTERMIOS_LEN - 17).min(libc::NCCS);
    out.c_cc[..n].copy_from_slice(&k[17..17 + n]);
    let speed = out.c_cflag & (libc::CBAUD | libc::CBAUDEX);
    out.c_ispeed = speed;
    out.c_ospeed = speed;
}

/// The kernel's `struct termios` from glibc's.
fn to_kernel(u: &libc::termios, k: &mut [u8; KTERMIOS_LEN]) {
    for (i, w) in [u.c_iflag, u.c_oflag, u.c_cflag, u.c_lflag]
        .iter()
        .enumerate()
    {
        k[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
    }
    k[16] = u.c_line;
    let n = (KTERMIOS_LEN - 17).min(libc::NCCS);
    k[17..17 + n].copy_from_slice(&u.c_cc[..n]);
}

/// `tcgetattr(3)`: a relayed terminal's settings, asked at home now.
///
/// # Safety
/// Same contract as libc's `tcgetattr`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tcgetattr(fd: i32, t: *mut libc::termios) -> i32 {
    if t.is_null() {
        sys::set_errno(libc::EFAULT);
        return -1;
    }
    let mut k = [0u8; KTERMIOS_LEN];
    let r = if is_tty(fd) {
        tty_get(fd, libc::TCGETS, &mut k)
    } else {
        // SAFETY: TCGETS writes a kernel termios into `k`.
        unsafe { libc::syscall(libc::SYS_ioctl, fd, libc::TCGETS, k.as_mut_ptr()) as i32 }
    };
    if r != 0 {
        return -1;
    }
    // SAFETY: the caller passes a valid termios to fill.
    to_user(&k, unsafe { &mut *t });
    0
}

/// `tcsetattr(3)`: on a relayed terminal, done at home by the deputy on
/// the real terminal (`TCSADRAIN` and `TCSAFLUSH` wait for the output
/// written so far; `TCSAFLUSH` also drops unread input).
///
/// # Safety
/// Same contract as libc's `tcsetattr`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tcsetattr(fd: i32, act: i32, t: *const libc::termios) -> i32 {
    if is_tty(fd) {
        if t.is_null() {
            sys::set_errno(libc::EFAULT);
            return -1;
        }
        let req = match act {
            libc::TCSANOW => libc::TCSETS,
            libc::TCSADRAIN => libc::TCSETSW,
            libc::TCSAFLUSH => libc::TCSETSF,
            _ => {
                sys::set_errno(libc::EINVAL);
                return -1;
            }
        };
        let mut k = [0u8; KTERMIOS_LEN];
        // SAFETY: the caller passes a valid termios.
        to_kernel(unsafe { &*t }, &mut k);
        return match tty_call(fd, req, 0, &k, &mut []) {
            Ok(_) => 0,
            Err(r) => r,
        };
    }
    let Some(real) = real::TCSETATTR.get() else {
        sys::set_errno(libc::ENOSYS);
        return -1;
    };
    // SAFETY: the caller's arguments.
    unsafe { real(fd, act, t) }
}

/// An ioctl with an integer argument, straight to the kernel.
fn raw_ioctl_int(fd: i32, req: libc::c_ulong, arg: libc::c_long) -> i32 {
    // SAFETY: the requests passed here take an integer, no memory.
    unsafe { libc::syscall(libc::SYS_ioctl, fd, req, arg) as i32 }
}

/// `tcflush(3)` (glibc's calls the kernel directly, not `ioctl`): on a
/// relayed terminal, done at home; input the body was given and has not
/// read is dropped too.
#[unsafe(no_mangle)]
pub extern "C" fn tcflush(fd: i32, queue: i32) -> i32 {
    if is_tty(fd) {
        return tty_plain(fd, libc::TCFLSH, queue as i64);
    }
    raw_ioctl_int(fd, libc::TCFLSH, queue as libc::c_long)
}

/// `tcdrain(3)`: on a relayed terminal, waits at home until the output
/// written so far is sent.
#[unsafe(no_mangle)]
pub extern "C" fn tcdrain(fd: i32) -> i32 {
    if is_tty(fd) {
        return tty_plain(fd, libc::TCSBRK, 1);
    }
    raw_ioctl_int(fd, libc::TCSBRK, 1)
}

/// `tcgetpgrp(3)`: on a relayed terminal, its foreground group at home
/// (a home pid, as `getpgrp` in a body answers).
#[unsafe(no_mangle)]
pub extern "C" fn tcgetpgrp(fd: i32) -> libc::pid_t {
    if is_tty(fd) {
        return match tty_call(fd, libc::TIOCGPGRP, 0, &[], &mut []) {
            Ok((v, _)) if v > 0 && v <= i32::MAX as i64 => v as libc::pid_t,
            Ok(_) => {
                sys::set_errno(libc::EIO);
                -1
            }
            Err(r) => r,
        };
    }
    let mut pgrp: libc::pid_t = 0;
    // SAFETY: TIOCGPGRP writes a pid_t we own.
    if unsafe { libc::syscall(libc::SYS_ioctl, fd, libc::TIOCGPGRP, &mut pgrp) } != 0 {
        return -1;
    }
    pgrp
}

/// `tcsetpgrp(3)`: on a relayed terminal, sets its foreground group at
/// home (a home pid).
#[unsafe(no_mangle)]
pub extern "C" fn tcsetpgrp(fd: i32, pgrp: libc::pid_t) -> i32 {
    if is_tty(fd) {
        return tty_plain(fd, libc::TIOCSPGRP, pgrp as i64);
    }
    // SAFETY: TIOCSPGRP reads a pid_t we own.
    unsafe { libc::syscall(libc::SYS_ioctl, fd, libc::TIOCSPGRP, &pgrp) as i32 }
}

/// `ioctl(2)`: terminal requests on a relayed terminal are done at home
/// by the deputy, on the real terminal (`TCGETS`, `TCSETS`, `TCSETSW`,
/// `TCSETSF`, `TIOCGWINSZ`, `TIOCSWINSZ`, `TIOCGPGRP`, `TIOCSPGRP`,
/// `TCFLSH`, `TCSBRK`); everything else goes to the kernel (so
/// `FIONREAD` counts the relayed input the body has not read yet).
/// Declared with one pointer-sized argument: on x86-64 a variadic callee
/// reads its third argument from the same register.
///
/// # Safety
/// Same contract as libc's `ioctl`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ioctl(fd: i32, req: libc::c_ulong, arg: *mut libc::c_void) -> i32 {
    if is_tty(fd) {
        let done = match req {
            libc::TCGETS
            | libc::TIOCGWINSZ
            | libc::TCSETS
            | libc::TCSETSW
            | libc::TCSETSF
            | libc::TIOCSWINSZ
            | libc::TIOCGPGRP
            | libc::TIOCSPGRP
                if arg.is_null() =>
            {
                sys::set_errno(libc::EFAULT);
                Some(-1)
            }
            libc::TCGETS | libc::TIOCGWINSZ => {
                let len = if req == libc::TCGETS {
                    KTERMIOS_LEN
                } else {
                    WINSIZE_LEN
                };
                let mut k = [0u8; KTERMIOS_LEN];
                let r = tty_get(fd, req, &mut k[..len]);
                if r == 0 {
                    // SAFETY: the argument is the structure to fill, of
                    // `len` bytes.
                    unsafe { core::ptr::copy_nonoverlapping(k.as_ptr(), arg.cast::<u8>(), len) };
                }
                Some(r)
            }
            libc::TCSETS | libc::TCSETSW | libc::TCSETSF | libc::TIOCSWINSZ => {
                let len = if req == libc::TIOCSWINSZ {
                    WINSIZE_LEN
                } else {
                    KTERMIOS_LEN
                };
                let mut k = [0u8; KTERMIOS_LEN];
                // SAFETY: the argument is the structure to read, of `len`
                // bytes.
                unsafe { core::ptr::copy_nonoverlapping(arg.cast::<u8>(), k.as_mut_ptr(), len) };
                Some(match tty_call(fd, req, 0, &k[..len], &mut []) {
                    Ok(_) => 0,
                    Err(r) => r,
                })
            }
            libc::TIOCGPGRP => {
                let r = tcgetpgrp(fd);
                if r > 0 {
                    // SAFETY: the argument is a pid_t to fill.
                    unsafe { *arg.cast::<libc::pid_t>() = r };
                    Some(0)
                } else {
                    Some(-1)
                }
            }
            libc::TIOCSPGRP => {
                // SAFETY: the argument is a pid_t to read.
                let pgrp = unsafe { *arg.cast::<libc::pid_t>() };
                Some(tty_plain(fd, req, pgrp as i64))
            }
            // The argument is the integer itself.
            libc::TCFLSH | libc::TCSBRK => Some(tty_plain(fd, req, arg as i64)),
            _ => None,
        };
        if let Some(r) = done {
            return r;
        }
    }
    let Some(real) = real::IOCTL.get() else {
        // SAFETY: the caller's arguments, straight to the kernel.
        return unsafe { libc::syscall(libc::SYS_ioctl, fd, req, arg) as i32 };
    };
    // SAFETY: the caller's arguments.
    unsafe { real(fd, req, arg) }
}
