//! The system calls libmosix makes, each wrapped once. Everything here is
//! async-signal-safe unless its doc says "constructor only".

use crate::layout::{ITimer, KSigaction, WINDOW_SIZE, WINDOW_START};
use core::ffi::CStr;

/// `ARCH_GET_FS` of arch_prctl.
const ARCH_GET_FS: i32 = 0x1003;
/// `ARCH_GET_GS` of arch_prctl.
const ARCH_GET_GS: i32 = 0x1004;

/// Reserve the restorer window (constructor only).
pub(crate) fn reserve_window() -> Result<(), &'static str> {
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping; a
    // PROT_NONE, NORESERVE anonymous mapping costs no memory.
    let p = unsafe {
        libc::mmap(
            WINDOW_START as *mut libc::c_void,
            WINDOW_SIZE as usize,
            libc::PROT_NONE,
            libc::MAP_PRIVATE
                | libc::MAP_ANONYMOUS
                | libc::MAP_NORESERVE
                | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(
            "libmosix: the restorer window (0x100000000000, 256 MiB) is already mapped; running unmanaged",
        );
    }
    if p as u64 != WINDOW_START {
        // SAFETY: `p` is the mapping just created, which nobody uses.
        unsafe { libc::munmap(p, WINDOW_SIZE as usize) };
        return Err("libmosix: the kernel placed the restorer window elsewhere; running unmanaged");
    }
    Ok(())
}

/// Write `msg` and a newline to stderr.
pub(crate) fn note(msg: &str) {
    write_all(2, msg.as_bytes());
    write_all(2, b"\n");
}

/// An integer environment variable (constructor only).
pub(crate) fn env_int(name: &CStr) -> Option<i64> {
    let mut buf = [0u8; 32];
    let n = env_copy_len(name, &mut buf);
    if n == 0 {
        return None;
    }
    core::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
}

/// Copy an environment variable into `out`, NUL-terminated; false if it is
/// unset or too long (constructor only).
pub(crate) fn env_copy(name: &CStr, out: &mut [u8]) -> bool {
    let n = env_copy_len(name, out);
    n > 0 && n < out.len()
}

/// Copy an environment variable into `out` and return its length (0 if
/// unset, empty or too long; the rest of `out` stays zero) (constructor
/// only).
pub(crate) fn env_copy_len(name: &CStr, out: &mut [u8]) -> usize {
    // SAFETY: `name` is NUL-terminated; getenv is safe in the constructor
    // (nobody changes the environment concurrently).
    let p = unsafe { libc::getenv(name.as_ptr()) };
    if p.is_null() {
        return 0;
    }
    // SAFETY: getenv returned a NUL-terminated string.
    let bytes = unsafe { CStr::from_ptr(p) }.to_bytes();
    if bytes.len() >= out.len() {
        return 0;
    }
    out[..bytes.len()].copy_from_slice(bytes);
    bytes.len()
}

/// glibc's rseq registration: (`__rseq_offset`, `__rseq_size`), (0, 0) if
/// this glibc does not register rseq (constructor only).
pub(crate) fn glibc_rseq() -> (i64, u32) {
    // SAFETY: dlsym with NUL-terminated names; RTLD_DEFAULT searches the
    // global scope.
    let off = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_offset".as_ptr()) };
    // SAFETY: as above.
    let size = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr()) };
    if off.is_null() || size.is_null() {
        return (0, 0);
    }
    // SAFETY: glibc defines `__rseq_offset` as a `const ptrdiff_t`.
    let off = unsafe { *(off as *const isize) } as i64;
    // SAFETY: glibc defines `__rseq_size` as a `const unsigned int`.
    let size = unsafe { *(size as *const u32) };
    (off, size)
}

/// Find the offset of glibc's cached tid in the thread control block, by
/// looking for the value of gettid() in the first bytes after fs base
/// (constructor only). -1 if not found.
pub(crate) fn find_tcb_tid() -> i64 {
    let fs = fs_base();
    if fs == 0 {
        return -1;
    }
    let tid = gettid() as u32;
    // glibc's `struct pthread` starts at fs base and is larger than this.
    let mut off = 0x10u64;
    while off < 0x700 {
        // SAFETY: fs base points at glibc's struct pthread, which is
        // larger than 0x700 bytes and readable.
        let v = unsafe { core::ptr::read_volatile((fs + off) as *const u32) };
        if v == tid {
            return off as i64;
        }
        off += 4;
    }
    -1
}

/// Write our tid into glibc's TCB at `off` from fs base; returns the tid
/// it held (the thread's id before the restore), or -1.
pub(crate) fn patch_tcb_tid(off: i64) -> i32 {
    let fs = fs_base();
    if fs == 0 {
        return -1;
    }
    let at = (fs + off as u64) as *mut u32;
    // SAFETY: `off` was found in the same TCB by `find_tcb_tid`, and the
    // TCB is restored memory of this process.
    let old = unsafe { core::ptr::read_volatile(at) } as i32;
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(at, gettid() as u32) };
    old
}

/// Whether `sig` already has a handler (or is ignored) (constructor only).
pub(crate) fn has_foreign_handler(sig: i32) -> bool {
    let a = get_sigaction(sig);
    a.handler != 0
}

/// The kernel's view of the action of `sig` (zero if it cannot be read).
pub(crate) fn get_sigaction(sig: i32) -> KSigaction {
    let mut old = KSigaction::default();
    // SAFETY: rt_sigaction with a null new action only writes `old`, whose
    // layout is the kernel's `struct sigaction` on x86-64; sigsetsize 8.
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig as libc::c_long,
            core::ptr::null::<KSigaction>(),
            &mut old as *mut KSigaction,
            8 as libc::c_long,
        )
    };
    if r != 0 { KSigaction::default() } else { old }
}

/// The interval timer `which` (0 real, 1 virtual, 2 prof).
pub(crate) fn get_itimer(which: i32) -> ITimer {
    // SAFETY: zeroed itimerval is valid.
    let mut v: libc::itimerval = unsafe { core::mem::zeroed() };
    // SAFETY: getitimer writes `v`; `which` is 0..=2.
    let r = unsafe {
        libc::syscall(
            libc::SYS_getitimer,
            which as libc::c_long,
            &mut v as *mut libc::itimerval,
        )
    };
    if r != 0 {
        return ITimer::default();
    }
    ITimer {
        interval_sec: v.it_interval.tv_sec,
        interval_usec: v.it_interval.tv_usec,
        value_sec: v.it_value.tv_sec,
        value_usec: v.it_value.tv_usec,
    }
}

/// The robust futex list head and length of this thread.
pub(crate) fn robust_list() -> (u64, u64) {
    let mut head: u64 = 0;
    let mut len: u64 = 0;
    // SAFETY: get_robust_list(0, ...) writes two words we own.
    let r = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            0 as libc::c_long,
            &mut head as *mut u64,
            &mut len as *mut u64,
        )
    };
    if r != 0 { (0, 0) } else { (head, len) }
}

/// The program break, straight from the kernel (`brk(0)`).
pub(crate) fn current_brk() -> u64 {
    // SAFETY: brk(0) never changes the break; it returns the current one.
    unsafe { libc::syscall(libc::SYS_brk, 0 as libc::c_long) as u64 }
}

/// fs base (the TLS pointer).
pub(crate) fn fs_base() -> u64 {
    arch_get(ARCH_GET_FS)
}

/// gs base.
pub(crate) fn gs_base() -> u64 {
    arch_get(ARCH_GET_GS)
}

fn arch_get(code: i32) -> u64 {
    let mut v: u64 = 0;
    // SAFETY: ARCH_GET_FS/GS write one word we own.
    let r = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            code as libc::c_long,
            &mut v as *mut u64,
        )
    };
    if r != 0 { 0 } else { v }
}

/// getpid(2), straight from the kernel.
pub(crate) fn getpid() -> i32 {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::syscall(libc::SYS_getpid) as i32 }
}

/// gettid(2).
pub(crate) fn gettid() -> i32 {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// errno of this thread.
pub(crate) fn errno() -> i32 {
    // SAFETY: __errno_location has no preconditions.
    let p = unsafe { libc::__errno_location() };
    // SAFETY: it points at this thread's errno.
    unsafe { *p }
}

/// Set errno of this thread.
pub(crate) fn set_errno(v: i32) {
    // SAFETY: __errno_location has no preconditions.
    let p = unsafe { libc::__errno_location() };
    // SAFETY: it points at this thread's errno.
    unsafe { *p = v };
}

/// close(2), errors ignored.
pub(crate) fn close(fd: i32) {
    // SAFETY: closing an fd we own.
    unsafe { libc::close(fd) };
}

/// Connect a SOCK_STREAM Unix socket to the NUL-terminated `path`; -1 on
/// failure.
pub(crate) fn connect_unix(path: &[u8; 108]) -> i32 {
    // SAFETY: plain socket creation.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return -1;
    }
    // SAFETY: zeroed sockaddr_un is valid.
    let mut addr: libc::sockaddr_un = unsafe { core::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(path.iter()) {
        *d = *s as libc::c_char;
    }
    addr.sun_path[107] = 0;
    // SAFETY: `addr` is a valid sockaddr_un of the given size.
    let r = unsafe {
        libc::connect(
            fd,
            &addr as *const libc::sockaddr_un as *const libc::sockaddr,
            core::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    if r != 0 {
        close(fd);
        return -1;
    }
    fd
}

/// Move `fd` to the lowest free number >= `min` (close-on-exec); -1 on
/// failure (then `fd` is left open).
pub(crate) fn dup_above(fd: i32, min: i32) -> i32 {
    // SAFETY: fcntl on an fd we own.
    let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) };
    if n >= 0 {
        close(fd);
    }
    n
}

/// Move `fd` to exactly `target` (close-on-exec); -1 on failure.
pub(crate) fn dup_to(fd: i32, target: i32) -> i32 {
    if fd == target {
        return fd;
    }
    // SAFETY: dup3 between fds of this process; `target` is ours (the
    // control fd number, which the image did not restore).
    let n = unsafe { libc::dup3(fd, target, libc::O_CLOEXEC) };
    if n >= 0 {
        close(fd);
    }
    n
}

/// Hands all of `buf` to `op` (one raw write-like call, returning what it
/// returned), retrying on EINTR and after short writes; false on failure.
/// Async-signal-safe: no allocation, the closure lives on the stack.
fn put_all(mut buf: &[u8], op: impl Fn(&[u8]) -> isize) -> bool {
    while !buf.is_empty() {
        let n = op(buf);
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return false;
        }
        if n == 0 {
            return false;
        }
        buf = &buf[n as usize..];
    }
    true
}

/// Write all of `buf` to `fd`, retrying on EINTR; false on failure.
pub(crate) fn write_all(fd: i32, buf: &[u8]) -> bool {
    put_all(buf, |b| {
        // SAFETY: `b` is valid for reading `b.len()` bytes.
        unsafe { libc::write(fd, b.as_ptr() as *const libc::c_void, b.len()) }
    })
}

/// Send all of `buf` on the control socket `fd`, retrying on EINTR, with
/// MSG_NOSIGNAL: a homed that went away must not raise SIGPIPE, which
/// would stay pending in the handler and kill the program afterwards.
pub(crate) fn send_all(fd: i32, buf: &[u8]) -> bool {
    put_all(buf, |b| {
        // SAFETY: `b` is valid for reading `b.len()` bytes.
        unsafe {
            libc::send(
                fd,
                b.as_ptr() as *const libc::c_void,
                b.len(),
                libc::MSG_NOSIGNAL,
            )
        }
    })
}

/// Read exactly one little-endian u32 from `fd`; None on EOF or error.
pub(crate) fn read_u32(fd: i32) -> Option<u32> {
    let mut b = [0u8; 4];
    let mut got = 0usize;
    while got < 4 {
        // SAFETY: `b[got..]` is valid for writing.
        let n = unsafe { libc::read(fd, b[got..].as_mut_ptr() as *mut libc::c_void, 4 - got) };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return None;
        }
        if n == 0 {
            return None;
        }
        got += n as usize;
    }
    Some(u32::from_le_bytes(b))
}

/// The bytes of a plain-data record.
pub(crate) fn as_bytes<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: `T` is one of the `repr(C)` records of `layout`, plain data
    // without padding-dependent invariants; reading its bytes is defined
    // since every record is fully initialised before it is sent.
    unsafe { core::slice::from_raw_parts(v as *const T as *const u8, core::mem::size_of::<T>()) }
}

/// Stop this process (SIGSTOP cannot be blocked); returns when continued.
pub(crate) fn stop_self() {
    // SAFETY: signalling ourselves.
    unsafe { libc::kill(getpid(), libc::SIGSTOP) };
}

/// End the whole process now with `status`.
pub(crate) fn exit_group(status: i32) -> ! {
    // SAFETY: exit_group does not return.
    unsafe { libc::syscall(libc::SYS_exit_group, status as libc::c_long) };
    // SAFETY: not reached; _exit as a belt-and-braces end.
    unsafe { libc::_exit(status) }
}

/// Run `f` in the child after every fork (constructor only).
pub(crate) fn at_fork_child(f: extern "C" fn()) {
    // SAFETY: registering a fork handler with glibc.
    unsafe { libc::pthread_atfork(None, None, Some(f)) };
}

/// Read exactly `buf.len()` bytes from `fd`; false on EOF or error.
pub(crate) fn read_exact(fd: i32, buf: &mut [u8]) -> bool {
    let mut got = 0usize;
    while got < buf.len() {
        // SAFETY: `buf[got..]` is valid for writing.
        let n = unsafe {
            libc::read(
                fd,
                buf[got..].as_mut_ptr() as *mut libc::c_void,
                buf.len() - got,
            )
        };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return false;
        }
        if n == 0 {
            return false;
        }
        got += n as usize;
    }
    true
}

/// Whether `fd` is an open socket.
pub(crate) fn is_socket(fd: i32) -> bool {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: fstat writes into the stat buffer we own.
    let r = unsafe { libc::fstat(fd, &mut st) };
    r == 0 && st.st_mode & libc::S_IFMT == libc::S_IFSOCK
}

/// `fcntl(fd, F_GETFD)`: the fd's flags, -1 if it is not open.
pub(crate) fn get_fd_flags(fd: i32) -> i32 {
    // SAFETY: F_GETFD only reads the fd table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) }
}

/// `fcntl(fd, F_SETFD, flags)`; false on failure.
pub(crate) fn set_fd_flags(fd: i32, flags: i32) -> bool {
    // SAFETY: F_SETFD changes only the fd's close-on-exec flag.
    unsafe { libc::fcntl(fd, libc::F_SETFD, flags) == 0 }
}

/// `execve(path, argv, envp)`; returns only on failure. `path` is
/// NUL-terminated, `argv` and `envp` are NULL-terminated arrays of
/// NUL-terminated strings.
pub(crate) fn execve(path: &[u8], argv: &[*const libc::c_char], envp: &[*const libc::c_char]) {
    if !path.contains(&0)
        || argv.last() != Some(&core::ptr::null())
        || envp.last() != Some(&core::ptr::null())
    {
        return;
    }
    // SAFETY: checked above: every array is NULL-terminated and `path`
    // NUL-terminated; the strings outlive the call (it only returns on
    // failure).
    unsafe { libc::execve(path.as_ptr().cast(), argv.as_ptr(), envp.as_ptr()) };
}

/// Block every signal; returns the old mask (for [`set_sigmask`]).
pub(crate) fn block_all_signals() -> u64 {
    let all: u64 = !0;
    let mut old: u64 = 0;
    // SAFETY: rt_sigprocmask with 8-byte kernel sets we own; SIGKILL and
    // SIGSTOP stay deliverable whatever the mask says.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_BLOCK as libc::c_long,
            &all as *const u64,
            &mut old as *mut u64,
            8 as libc::c_long,
        )
    };
    old
}

/// Set the signal mask back to `mask` (from [`block_all_signals`]);
/// pending signals it unblocks are delivered before this returns.
pub(crate) fn set_sigmask(mask: u64) {
    // SAFETY: as in `block_all_signals`.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK as libc::c_long,
            &mask as *const u64,
            core::ptr::null_mut::<u64>(),
            8 as libc::c_long,
        )
    };
}

/// Read exactly `buf.len()` bytes from the socket `fd`, and the fd passed
/// with them (SCM_RIGHTS, close-on-exec) into `*passed` (-1 if none);
/// false on EOF or error. Async-signal-safe.
pub(crate) fn recv_exact_fd(fd: i32, buf: &mut [u8], passed: &mut i32) -> bool {
    *passed = -1;
    let mut got = 0usize;
    // Room for one fd's control message, 8-byte aligned.
    let mut space = [0u64; 4];
    while got < buf.len() {
        let mut iov = libc::iovec {
            iov_base: buf[got..].as_mut_ptr().cast(),
            iov_len: buf.len() - got,
        };
        // SAFETY: an all-zero msghdr is a valid empty header.
        let mut msg: libc::msghdr = unsafe { core::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = space.as_mut_ptr().cast();
        msg.msg_controllen = core::mem::size_of_val(&space);
        // SAFETY: `msg` points at our iovec and control buffer.
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return false;
        }
        if n == 0 {
            return false;
        }
        // SAFETY: the kernel filled `msg`; the CMSG macros walk our buffer.
        let mut c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        while !c.is_null() {
            // SAFETY: `c` points at a control message header in `space`.
            let h = unsafe { &*c };
            if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_RIGHTS {
                // SAFETY: an SCM_RIGHTS message holds at least one int.
                let data = unsafe { libc::CMSG_DATA(c) };
                // SAFETY: as above: the message's data, unaligned.
                let got_fd = unsafe { core::ptr::read_unaligned(data.cast::<i32>()) };
                if *passed >= 0 {
                    close(got_fd);
                } else {
                    *passed = got_fd;
                }
            }
            // SAFETY: as above.
            c = unsafe { libc::CMSG_NXTHDR(&msg, c) };
        }
        got += n as usize;
    }
    true
}

/// `dup3(fd, target, flags)`; false on failure.
pub(crate) fn dup3(fd: i32, target: i32, flags: i32) -> bool {
    // SAFETY: dup3 between fds of this process.
    unsafe { libc::dup3(fd, target, flags) >= 0 }
}

/// `fcntl(fd, F_DUPFD_CLOEXEC, min)`: -1 on failure.
pub(crate) fn dup_cloexec_above(fd: i32, min: i32) -> i32 {
    // SAFETY: fcntl on an fd of this process.
    unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) }
}

/// A pointer to the value of environment variable `name` (`NAME=`
/// included in `name`) in `environ`, and its length; None if unset.
/// Reads `environ` only (no allocation).
pub(crate) fn env_value_mut(name: &[u8]) -> Option<(*mut u8, usize)> {
    unsafe extern "C" {
        static mut environ: *mut *mut libc::c_char;
    }
    // SAFETY: reading the process's environment pointer array, which is
    // NULL-terminated; nothing changes it meanwhile (single thread).
    let mut p = unsafe { environ };
    if p.is_null() {
        return None;
    }
    loop {
        // SAFETY: `p` walks the NULL-terminated array.
        let s = unsafe { *p };
        if s.is_null() {
            return None;
        }
        // SAFETY: every entry is a NUL-terminated string.
        let bytes = unsafe { CStr::from_ptr(s) }.to_bytes();
        if bytes.starts_with(name) {
            // SAFETY: the value starts right after the name, inside the
            // same string.
            let v = unsafe { s.cast::<u8>().add(name.len()) };
            return Some((v, bytes.len() - name.len()));
        }
        // SAFETY: not past the terminating NULL (checked above).
        p = unsafe { p.add(1) };
    }
}

/// The bit of signal `sig` in a kernel signal set.
pub(crate) const fn sig_bit(sig: i32) -> u64 {
    1u64 << (sig - 1)
}

/// Block the signals of `set` too; returns the old mask. Async-signal-safe.
pub(crate) fn block_signals(set: u64) -> u64 {
    let mut old: u64 = 0;
    // SAFETY: rt_sigprocmask with 8-byte kernel sets we own.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_BLOCK as libc::c_long,
            &set as *const u64,
            &mut old as *mut u64,
            8 as libc::c_long,
        )
    };
    old
}

/// Wait up to `ms` milliseconds for a signal of `set` (which must be
/// blocked) and take it: `Ok(sig)`, or `Err(EAGAIN)` on timeout,
/// `Err(EINTR)` when a handler of another signal ran. Async-signal-safe.
pub(crate) fn take_signal(set: u64, ms: u64) -> Result<i32, i32> {
    let ts = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    // SAFETY: rt_sigtimedwait with an 8-byte kernel set, no siginfo and a
    // timespec, all ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_sigtimedwait,
            &set as *const u64,
            core::ptr::null_mut::<libc::siginfo_t>(),
            &ts as *const libc::timespec,
            8 as libc::c_long,
        )
    };
    if r > 0 { Ok(r as i32) } else { Err(errno()) }
}

/// Send `sig` to this thread (tgkill). Async-signal-safe.
pub(crate) fn raise_here(sig: i32) {
    // SAFETY: tgkill(2) to ourselves has no memory effects.
    unsafe { libc::syscall(libc::SYS_tgkill, getpid(), gettid(), sig) };
}

/// getuid(2).
pub(crate) fn getuid() -> u32 {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::syscall(libc::SYS_getuid) as u32 }
}
