//! Body mode (DESIGN.md section 4): in a process whose body runs away
//! from home, the calls the kernel here cannot answer as home would are
//! answered from home's facts, which the body's host wrote after the
//! process's hello ([`BodyInfo`]): identity (`getpid`, `getppid`,
//! `getpgrp`, `getpgid`, `getsid`, `gettid`) and terminal control on the
//! relayed terminals (`isatty`, `tcgetattr`, `tcsetattr`, and `ioctl`'s
//! `TCGETS`, `TCSETS*`, `TIOCGWINSZ`, `TIOCSWINSZ`, `TIOCGPGRP`), and a
//! `kill` of the home pid reaches the body itself.
//!
//! `getppid` asks the deputy (a forwarded call, see [`crate::family`]),
//! so a parent that dies at home meanwhile is seen; `kill` and the
//! process tree are in [`crate::family`].
//!
//! Limits of this first version, said plainly: the other home facts are
//! those of the moment the body left, terminal settings changed away stay with the body (they are
//! not applied to the terminal at home).
//!
//! Every hook reads static storage only: no allocation, no lock, errno
//! kept. The facts are written by the freeze handler (with every signal
//! blocked) and read by the program's single thread.

use crate::layout::{BODY_MAGIC, BodyInfo, KTERMIOS_LEN};
use crate::state::Global;
use crate::sys;
use core::sync::atomic::{AtomicUsize, Ordering};

static BODY: Global<BodyInfo> = Global::new(BodyInfo::at_home());

/// Read the host's [`BodyInfo`] from the control socket `ctl` (in the
/// freeze handler, after the hello).
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
    crate::family::note_move();
    if info.away == 1 {
        // A body's new program after exec finds its control socket open
        // at the number the environment names (see `family`).
        sys::set_fd_flags(ctl, 0);
        crate::family::publish_ctl(ctl, sys::getpid());
    } else {
        crate::family::publish_ctl(-1, 0);
    }
}

/// The process group at home of a body (0 at home).
pub(crate) fn home_pgrp() -> i32 {
    away().map_or(0, |b| b.home_pgrp)
}

/// Whether this process is a body away from home.
pub(crate) fn is_away() -> bool {
    away().is_some()
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

/// The facts, if this process is a body away from home.
fn away() -> Option<&'static BodyInfo> {
    // SAFETY: BODY changes only in the freeze handler, which cannot run
    // while the single thread is inside a hook that reads it.
    let b = unsafe { &*BODY.get() };
    (b.away == 1).then_some(b)
}

/// The home terminal relayed at `fd`, if any.
fn tty(fd: i32) -> Option<&'static mut crate::layout::TtyInfo> {
    away()?;
    // SAFETY: as in `away`; the caller is the only user of the reference.
    let b = unsafe { &mut *BODY.get() };
    let n = (b.n_ttys as usize).min(b.ttys.len());
    b.ttys[..n].iter_mut().find(|t| t.fd == fd)
}

static REAL: [AtomicUsize; 3] = [const { AtomicUsize::new(0) }; 3];
const REAL_IOCTL: usize = 0;
const REAL_KILL: usize = 1;
const REAL_TCSETATTR: usize = 2;

/// Resolve the real functions (constructor only).
pub(crate) fn resolve() {
    for (slot, name) in [
        (REAL_IOCTL, c"ioctl"),
        (REAL_KILL, c"kill"),
        (REAL_TCSETATTR, c"tcsetattr"),
    ] {
        // SAFETY: dlsym with a NUL-terminated name.
        let f = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) };
        REAL[slot].store(f as usize, Ordering::Release);
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
            let ppid = match crate::family::call(crate::layout::CALL_GETPPID, [0; 3]) {
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

/// `getpgrp(2)`: the process group at home.
#[unsafe(no_mangle)]
pub extern "C" fn getpgrp() -> libc::pid_t {
    // SAFETY: getpgid(0) has no memory effects.
    away().map_or_else(
        || unsafe { libc::syscall(libc::SYS_getpgid, 0) as i32 },
        |b| b.home_pgrp,
    )
}

/// `getpgid(2)`: the process group at home for this process.
#[unsafe(no_mangle)]
pub extern "C" fn getpgid(pid: libc::pid_t) -> libc::pid_t {
    match away() {
        Some(b) if pid == 0 || pid == b.home_pid => b.home_pgrp,
        // SAFETY: getpgid has no memory effects.
        _ => unsafe { libc::syscall(libc::SYS_getpgid, pid) as i32 },
    }
}

/// `getsid(2)`: the session at home for this process.
#[unsafe(no_mangle)]
pub extern "C" fn getsid(pid: libc::pid_t) -> libc::pid_t {
    match away() {
        Some(b) if pid == 0 || pid == b.home_pid => b.home_sid,
        // SAFETY: getsid has no memory effects.
        _ => unsafe { libc::syscall(libc::SYS_getsid, pid) as i32 },
    }
}

/// `kill(2)`: in a body, our home pid means this body and a child's
/// home pid that child; any other target is signalled at home by the
/// deputy.
///
/// # Safety
/// Same contract as libc's `kill`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kill(pid: libc::pid_t, sig: i32) -> i32 {
    let pid = match away() {
        Some(b) => match crate::family::local_kill_target(pid, b.home_pid) {
            Some(local) => local,
            None => return crate::family::kill_at_home(pid, sig),
        },
        None => pid,
    };
    let f = REAL[REAL_KILL].load(Ordering::Acquire);
    if f == 0 {
        // SAFETY: kill(2) has no memory effects.
        return unsafe { libc::syscall(libc::SYS_kill, pid, sig) as i32 };
    }
    type KillFn = unsafe extern "C" fn(libc::pid_t, i32) -> i32;
    // SAFETY: `f` is libc's kill, resolved by dlsym(RTLD_NEXT).
    let real: KillFn = unsafe { core::mem::transmute::<usize, KillFn>(f) };
    // SAFETY: the caller's arguments.
    unsafe { real(pid, sig) }
}

/// `killpg(3)`: glibc's calls its internal kill, which no hook sees, so
/// a body's `killpg` of a home group would signal a local group of the
/// same number; this one goes through [`kill`] (done at home).
///
/// # Safety
/// Same contract as libc's `killpg`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn killpg(pgrp: libc::pid_t, sig: i32) -> i32 {
    if pgrp < 0 {
        sys::set_errno(libc::EINVAL);
        return -1;
    }
    // SAFETY: the caller's arguments, as kill(-pgrp, sig).
    unsafe { kill(-pgrp, sig) }
}

/// `isatty(3)`: true for a relayed terminal.
#[unsafe(no_mangle)]
pub extern "C" fn isatty(fd: i32) -> i32 {
    if tty(fd).is_some() {
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

/// `tcgetattr(3)`: a relayed terminal's settings as at home.
///
/// # Safety
/// Same contract as libc's `tcgetattr`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tcgetattr(fd: i32, t: *mut libc::termios) -> i32 {
    if let Some(tty) = tty(fd) {
        if t.is_null() {
            sys::set_errno(libc::EFAULT);
            return -1;
        }
        // SAFETY: the caller passes a valid termios to fill.
        to_user(&tty.termios, unsafe { &mut *t });
        return 0;
    }
    let mut k = [0u8; KTERMIOS_LEN];
    // SAFETY: TCGETS writes a kernel termios into `k`.
    if unsafe { libc::syscall(libc::SYS_ioctl, fd, libc::TCGETS, k.as_mut_ptr()) } != 0 {
        return -1;
    }
    if !t.is_null() {
        // SAFETY: as above.
        to_user(&k, unsafe { &mut *t });
    }
    0
}

/// `tcsetattr(3)`: kept with the body for a relayed terminal.
///
/// # Safety
/// Same contract as libc's `tcsetattr`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tcsetattr(fd: i32, act: i32, t: *const libc::termios) -> i32 {
    if let Some(tty) = tty(fd) {
        if t.is_null() {
            sys::set_errno(libc::EFAULT);
            return -1;
        }
        // SAFETY: the caller passes a valid termios.
        to_kernel(unsafe { &*t }, &mut tty.termios);
        return 0;
    }
    let f = REAL[REAL_TCSETATTR].load(Ordering::Acquire);
    if f == 0 {
        sys::set_errno(libc::ENOSYS);
        return -1;
    }
    type SetFn = unsafe extern "C" fn(i32, i32, *const libc::termios) -> i32;
    // SAFETY: `f` is libc's tcsetattr, resolved by dlsym(RTLD_NEXT).
    let real: SetFn = unsafe { core::mem::transmute::<usize, SetFn>(f) };
    // SAFETY: the caller's arguments.
    unsafe { real(fd, act, t) }
}

/// `ioctl(2)`: terminal requests on a relayed terminal are answered from
/// home's settings; everything else goes to the kernel. Declared with
/// one pointer-sized argument: on x86-64 a variadic callee reads its
/// third argument from the same register.
///
/// # Safety
/// Same contract as libc's `ioctl`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ioctl(fd: i32, req: libc::c_ulong, arg: *mut libc::c_void) -> i32 {
    if let Some(tty) = tty(fd) {
        let done = match req {
            libc::TCGETS => {
                // SAFETY: TCGETS's argument is a kernel termios to fill.
                unsafe {
                    core::ptr::copy_nonoverlapping(tty.termios.as_ptr(), arg.cast(), KTERMIOS_LEN)
                };
                true
            }
            libc::TCSETS | libc::TCSETSW | libc::TCSETSF => {
                // SAFETY: the argument is a kernel termios to read.
                unsafe {
                    core::ptr::copy_nonoverlapping(
                        arg.cast::<u8>(),
                        tty.termios.as_mut_ptr(),
                        KTERMIOS_LEN,
                    )
                };
                true
            }
            libc::TIOCGWINSZ => {
                // SAFETY: the argument is a struct winsize to fill.
                unsafe { core::ptr::copy_nonoverlapping(tty.winsize.as_ptr(), arg.cast(), 4) };
                true
            }
            libc::TIOCSWINSZ => {
                // SAFETY: the argument is a struct winsize to read.
                unsafe {
                    core::ptr::copy_nonoverlapping(arg.cast::<u16>(), tty.winsize.as_mut_ptr(), 4)
                };
                true
            }
            libc::TIOCGPGRP => {
                if let Some(b) = away() {
                    // SAFETY: the argument is a pid_t to fill.
                    unsafe { *arg.cast::<libc::pid_t>() = b.home_pgrp };
                }
                true
            }
            _ => false,
        };
        if done {
            return 0;
        }
    }
    let f = REAL[REAL_IOCTL].load(Ordering::Acquire);
    if f == 0 {
        // SAFETY: the caller's arguments, straight to the kernel.
        return unsafe { libc::syscall(libc::SYS_ioctl, fd, req, arg) as i32 };
    }
    type IoctlFn = unsafe extern "C" fn(i32, libc::c_ulong, *mut libc::c_void) -> i32;
    // SAFETY: `f` is libc's ioctl; passing its third argument in the same
    // register a variadic call would use.
    let real: IoctlFn = unsafe { core::mem::transmute::<usize, IoctlFn>(f) };
    // SAFETY: the caller's arguments.
    unsafe { real(fd, req, arg) }
}
