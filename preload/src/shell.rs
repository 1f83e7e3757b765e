//! `system`, `popen` and `pclose` in a body (ARCHITECTURE.md section 4, row
//! "process tree").
//!
//! glibc's own `system` and `popen` start their shell with an internal
//! spawn that no hook sees, so in a body their children would run on the
//! body's node unmanaged: with local pids, no deputy at home, and
//! `$PPID` the body's local pid. In a body these three are therefore done
//! here over the hooked [`family::posix_spawn`] and [`family::waitpid`]:
//! the shell is a child body with a deputy of its own at home, like any
//! forked child. At home (and in processes mosix does not manage) the
//! calls go to glibc unchanged.
//!
//! What glibc does and this keeps: `system` ignores SIGINT and SIGQUIT
//! and blocks SIGCHLD while it waits, and the shell starts with their
//! defaults and the caller's mask; a shell that cannot run is status 127;
//! `system(NULL)` says a shell exists. `popen` takes `r`, `w` and `e`
//! (close-on-exec); its child closes the streams of earlier `popen`s.
//! Not kept: the count glibc keeps of concurrent `system` calls in
//! threads (the signal dispositions are saved and restored per call). A
//! stream opened by glibc's `popen` at home before a move is closed by
//! glibc's `pclose` after it, whose wait fails in a body (ECHILD).

use crate::{facts, family, real};
use core::sync::atomic::{AtomicBool, Ordering};

/// Most `popen` streams of a body open at once.
const MAX_STREAMS: usize = 64;

/// One open `popen` stream of a body: its `FILE`, child and fd.
#[derive(Clone, Copy)]
struct Stream {
    file: usize,
    pid: libc::pid_t,
    fd: i32,
}

/// The open streams, behind a spin lock (`popen` is not async-signal-safe,
/// so no handler takes it while the thread holding it is interrupted).
struct Streams {
    locked: AtomicBool,
    entries: crate::state::Global<[Option<Stream>; MAX_STREAMS]>,
}

static STREAMS: Streams = Streams {
    locked: AtomicBool::new(false),
    entries: crate::state::Global::new([None; MAX_STREAMS]),
};

impl Streams {
    /// Runs `f` on the table, alone.
    fn with<R>(&self, f: impl FnOnce(&mut [Option<Stream>; MAX_STREAMS]) -> R) -> R {
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        // SAFETY: the lock above makes this the only reference.
        let r = f(unsafe { &mut *self.entries.get() });
        self.locked.store(false, Ordering::Release);
        r
    }
}

/// The `sh -c CMD` argument vector.
fn shell_argv(cmd: *const libc::c_char) -> [*mut libc::c_char; 4] {
    [
        c"sh".as_ptr().cast_mut(),
        c"-c".as_ptr().cast_mut(),
        cmd.cast_mut(),
        core::ptr::null_mut(),
    ]
}

/// The program's environment.
fn environ() -> *const *mut libc::c_char {
    unsafe extern "C" {
        static environ: *const *mut libc::c_char;
    }
    // SAFETY: reading libc's environment pointer.
    unsafe { environ }
}

/// Waits for `pid` through the hooked `waitpid` (home pids), retrying
/// when a signal interrupts: its status, or -1.
fn wait_for(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    loop {
        // SAFETY: our status word.
        let r = unsafe { family::waitpid(pid, &mut status, 0) };
        if r == pid {
            return status;
        }
        if r < 0 && crate::sys::errno() == libc::EINTR {
            continue;
        }
        return -1;
    }
}

/// A signal set.
struct SigSet(libc::sigset_t);

impl SigSet {
    fn empty() -> SigSet {
        // SAFETY: a plain struct, emptied at once.
        let mut set: libc::sigset_t = unsafe { core::mem::zeroed() };
        // SAFETY: a pointer to our own set.
        unsafe { libc::sigemptyset(&mut set) };
        SigSet(set)
    }

    fn add(&mut self, sig: i32) {
        // SAFETY: a pointer to our own set.
        unsafe { libc::sigaddset(&mut self.0, sig) };
    }
}

/// Ignore `sig`: its previous action.
fn ignore(sig: i32) -> libc::sigaction {
    // SAFETY: plain structs, filled in below.
    let (mut ign, mut old): (libc::sigaction, libc::sigaction) = unsafe { core::mem::zeroed() };
    ign.sa_sigaction = libc::SIG_IGN;
    // SAFETY: valid pointers to our own structs.
    unsafe { libc::sigaction(sig, &ign, &mut old) };
    old
}

/// Put back an action [`ignore`] saved.
fn restore(sig: i32, old: &libc::sigaction) {
    // SAFETY: a saved action.
    unsafe { libc::sigaction(sig, old, core::ptr::null_mut()) };
}

/// Block `sig`: the previous mask.
fn block(sig: i32) -> SigSet {
    let mut set = SigSet::empty();
    set.add(sig);
    let mut old = SigSet::empty();
    // SAFETY: valid pointers to our own sets.
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set.0, &mut old.0) };
    old
}

/// Set the mask [`block`] saved.
fn set_mask(mask: &SigSet) {
    // SAFETY: a valid set.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, &mask.0, core::ptr::null_mut()) };
}

/// Spawn attributes: these signals at their defaults, this mask.
struct SpawnAttr(libc::posix_spawnattr_t);

impl SpawnAttr {
    fn new(defaults: &SigSet, mask: &SigSet) -> SpawnAttr {
        // SAFETY: a plain struct, initialised at once.
        let mut attr = SpawnAttr(unsafe { core::mem::zeroed() });
        // SAFETY: a pointer to our own struct.
        unsafe { libc::posix_spawnattr_init(&mut attr.0) };
        // SAFETY: our initialised attributes and a valid set.
        unsafe { libc::posix_spawnattr_setsigdefault(&mut attr.0, &defaults.0) };
        // SAFETY: our initialised attributes and a valid set.
        unsafe { libc::posix_spawnattr_setsigmask(&mut attr.0, &mask.0) };
        let flags = (libc::POSIX_SPAWN_SETSIGDEF | libc::POSIX_SPAWN_SETSIGMASK) as libc::c_short;
        // SAFETY: our initialised attributes.
        unsafe { libc::posix_spawnattr_setflags(&mut attr.0, flags) };
        attr
    }

    fn destroy(&mut self) {
        // SAFETY: initialised in `new`, destroyed once.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

/// `system(3)`: in a body, the shell is a managed child.
///
/// # Safety
/// Same contract as libc's `system`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn system(cmd: *const libc::c_char) -> i32 {
    if !facts::is_away() {
        if let Some(real) = real::SYSTEM.get() {
            // SAFETY: the caller's command.
            return unsafe { real(cmd) };
        }
    }
    if cmd.is_null() {
        // A body runs where mosix put a shell: as glibc, "one exists".
        return 1;
    }
    let old_int = ignore(libc::SIGINT);
    let old_quit = ignore(libc::SIGQUIT);
    let old_mask = block(libc::SIGCHLD);
    // The shell starts with SIGINT and SIGQUIT at their defaults unless
    // the caller ignored them, and with the caller's own mask.
    let mut defaults = SigSet::empty();
    if old_int.sa_sigaction != libc::SIG_IGN {
        defaults.add(libc::SIGINT);
    }
    if old_quit.sa_sigaction != libc::SIG_IGN {
        defaults.add(libc::SIGQUIT);
    }
    let mut attr = SpawnAttr::new(&defaults, &old_mask);
    let argv = shell_argv(cmd);
    let mut pid: libc::pid_t = 0;
    // SAFETY: our pid slot, a NUL-terminated path, initialised attr,
    // NULL-terminated argv, and the program's environment.
    let r = unsafe {
        family::posix_spawn(
            &mut pid,
            c"/bin/sh".as_ptr(),
            core::ptr::null(),
            &attr.0,
            argv.as_ptr(),
            environ(),
        )
    };
    let status = if r == 0 {
        wait_for(pid)
    } else {
        // As glibc: a shell that could not be started exited with 127.
        127 << 8
    };
    let errno = crate::sys::errno();
    attr.destroy();
    restore(libc::SIGINT, &old_int);
    restore(libc::SIGQUIT, &old_quit);
    set_mask(&old_mask);
    crate::sys::set_errno(errno);
    status
}

/// The parts of a `popen` mode: reading (else writing), close-on-exec.
fn parse_mode(mode: &[u8]) -> Option<(bool, bool)> {
    let (&first, rest) = mode.split_first()?;
    let read = match first {
        b'r' => true,
        b'w' => false,
        _ => return None,
    };
    let mut cloexec = false;
    for &c in rest {
        match c {
            b'e' => cloexec = true,
            _ => return None,
        }
    }
    Some((read, cloexec))
}

/// `popen(3)`: in a body, the shell is a managed child.
///
/// # Safety
/// Same contract as libc's `popen`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn popen(
    cmd: *const libc::c_char,
    mode: *const libc::c_char,
) -> *mut libc::FILE {
    if !facts::is_away() {
        if let Some(real) = real::POPEN.get() {
            // SAFETY: the caller's arguments.
            return unsafe { real(cmd, mode) };
        }
    }
    let parsed = if cmd.is_null() || mode.is_null() {
        None
    } else {
        // SAFETY: the caller's NUL-terminated mode.
        parse_mode(unsafe { core::ffi::CStr::from_ptr(mode) }.to_bytes())
    };
    let Some((read, cloexec)) = parsed else {
        crate::sys::set_errno(libc::EINVAL);
        return core::ptr::null_mut();
    };
    let mut fds = [0i32; 2];
    // SAFETY: a two-int array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return core::ptr::null_mut();
    }
    let (ours, mut theirs, target) = if read {
        (fds[0], fds[1], 1)
    } else {
        (fds[1], fds[0], 0)
    };
    if theirs == target {
        // dup2 onto itself would keep close-on-exec: move it away first.
        let moved = crate::sys::dup_cloexec_above(theirs, 3);
        crate::sys::close(theirs);
        theirs = moved;
        if theirs < 0 {
            crate::sys::close(ours);
            return core::ptr::null_mut();
        }
    }
    // SAFETY: file actions, initialised before use and destroyed after.
    let mut actions: libc::posix_spawn_file_actions_t = unsafe { core::mem::zeroed() };
    // SAFETY: a pointer to our own struct.
    unsafe { libc::posix_spawn_file_actions_init(&mut actions) };
    // SAFETY: our initialised file actions.
    unsafe { libc::posix_spawn_file_actions_adddup2(&mut actions, theirs, target) };
    // The child closes the streams of earlier popens (POSIX).
    STREAMS.with(|t| {
        for s in t.iter().flatten() {
            if s.fd != target {
                // SAFETY: our initialised file actions.
                unsafe { libc::posix_spawn_file_actions_addclose(&mut actions, s.fd) };
            }
        }
    });
    let argv = shell_argv(cmd);
    let mut pid: libc::pid_t = 0;
    // SAFETY: our pid slot, a NUL-terminated path, initialised actions,
    // NULL-terminated argv, and the program's environment.
    let r = unsafe {
        family::posix_spawn(
            &mut pid,
            c"/bin/sh".as_ptr(),
            &actions,
            core::ptr::null(),
            argv.as_ptr(),
            environ(),
        )
    };
    // SAFETY: our initialised file actions.
    unsafe { libc::posix_spawn_file_actions_destroy(&mut actions) };
    crate::sys::close(theirs);
    if r != 0 {
        crate::sys::close(ours);
        crate::sys::set_errno(r);
        return core::ptr::null_mut();
    }
    if !cloexec {
        let flags = crate::sys::get_fd_flags(ours);
        crate::sys::set_fd_flags(ours, flags & !libc::FD_CLOEXEC);
    }
    let fmode = if read { c"r" } else { c"w" };
    // SAFETY: our pipe end and a NUL-terminated mode.
    let file = unsafe { libc::fdopen(ours, fmode.as_ptr()) };
    if file.is_null() {
        let errno = crate::sys::errno();
        crate::sys::close(ours);
        wait_for(pid);
        crate::sys::set_errno(errno);
        return core::ptr::null_mut();
    }
    let stored = STREAMS.with(|t| match t.iter_mut().find(|s| s.is_none()) {
        Some(slot) => {
            *slot = Some(Stream {
                file: file as usize,
                pid,
                fd: ours,
            });
            true
        }
        None => false,
    });
    if !stored {
        // SAFETY: the stream made above.
        unsafe { libc::fclose(file) };
        wait_for(pid);
        crate::sys::set_errno(libc::EMFILE);
        return core::ptr::null_mut();
    }
    file
}

/// `pclose(3)`: a stream of the body's `popen` is closed and its shell
/// waited for through home pids; any other goes to glibc.
///
/// # Safety
/// Same contract as libc's `pclose`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pclose(file: *mut libc::FILE) -> i32 {
    let ours = STREAMS.with(|t| {
        t.iter_mut()
            .find(|s| s.is_some_and(|s| s.file == file as usize))
            .and_then(|s| s.take())
    });
    let Some(stream) = ours else {
        let Some(real) = real::PCLOSE.get() else {
            crate::sys::set_errno(libc::ECHILD);
            return -1;
        };
        // SAFETY: the caller's stream.
        return unsafe { real(file) };
    };
    // SAFETY: a stream our popen made, closed once.
    unsafe { libc::fclose(file) };
    wait_for(stream.pid)
}

#[cfg(test)]
mod tests {
    use super::parse_mode;

    #[test]
    fn popen_modes_are_read_write_and_cloexec_only() {
        assert_eq!(parse_mode(b"r"), Some((true, false)));
        assert_eq!(parse_mode(b"w"), Some((false, false)));
        assert_eq!(parse_mode(b"re"), Some((true, true)));
        assert_eq!(parse_mode(b"we"), Some((false, true)));
        assert_eq!(parse_mode(b""), None);
        assert_eq!(parse_mode(b"rw"), None);
        assert_eq!(parse_mode(b"a"), None);
        assert_eq!(parse_mode(b"rx"), None);
    }
}
