//! The process tree of a body away from home (ARCHITECTURE.md section 4, row
//! "process tree"): `fork`, `vfork`, `posix_spawn`, `execve`, `wait*`
//! and `kill` with home pids, over the deputy's forwarded calls
//! ([`crate::forward`]).
//!
//! **fork.** The deputy forks first: the reply carries the child's home
//! pid (its deputy's pid, a child of ours at home) and, by SCM_RIGHTS, the
//! child's own control socket, which the host registers as a body bound
//! to the child deputy through a link of its own. Then the real fork; the
//! child puts its socket at the control fd's number (closing its copy of
//! the parent's), says hello and reads its [`crate::layout::BodyInfo`]
//! (`getpid` = the new home pid, `getppid` = ours). The parent gets the
//! home pid, remembered with the local one in a small static [`PidTable`]
//! that `wait*` and `kill` translate through. Relayed fds are inherited as
//! kernel fds, so the child's output to them goes home through our relays.
//! `vfork` is a fork here. `posix_spawn` does the same around glibc's own
//! spawn, with the child's socket at the control fd's number only for the
//! spawn's duration.
//!
//! **exec.** The control fd is kept open across `exec` (no FD_CLOEXEC in
//! a body) and its number and owner are in `MOSIX_BODY_CTL=FD:PID`
//! (fixed width, rewritten in place, never reallocated): the new
//! program's libmosix takes it if PID is its own (or 0, a spawned child),
//! says hello and reads its facts again. The `execve` hook puts
//! `MOSIX_BODY_CTL` and `LD_PRELOAD` back when the program's environment
//! lacks them. A process that inherited the variable from an ancestor
//! without being announced (a raw `clone`, or glibc's `system` and
//! `popen` were they not done over this spawn: `crate::shell`) runs
//! unmanaged on the body's node: it closes its copy of the socket and
//! never registers with that node's `homed`.
//!
//! **wait and kill.** `wait`, `waitpid`, `wait3`, `wait4` and `waitid`
//! translate a child's home pid to its local one and back; a reaped
//! child's exact status goes home ([`layout::CALL_REAP`]), where its
//! deputy ends with it and our deputy reaps it. `kill` (and `killpg`) of
//! our home pid or of a child's is local; of any other pid (the parent,
//! a group, a child left at home) it is done at home by the deputy, so it
//! reaches other deputies and, through them, their bodies.
//!
//! **Children left at home.** A process that moves while it has children
//! leaves them where they run, children of its deputy (the same process
//! at home). A wait that may concern them (any wait but one for a local
//! child, until home says none is left) is a loop of non-blocking looks,
//! here and at home ([`layout::CALL_WAIT`]), with a sleep for SIGCHLD in
//! between (the deputy forwards a home child's); see [`wait_mixed`] for
//! why it is built so and how signals and freezes stay deliverable. A
//! wait blocked in the kernel when the process moves is restarted by the
//! kernel where it lands, finds no child there and is done again the
//! right way (`MOVES` tells). A home child's rusage is not carried
//! (zeros).
//!
//! **Children forked away, after a move.** A body that forked at its
//! node and then moves on (or home) leaves those children running where
//! they are; their deputies are children of its deputy at home. Restored
//! in the new place it forgets their local pids
//! ([`forget_local_children`]), so they are children at home like any
//! other: waits for them go the [`wait_mixed`] way, and `kill` goes home.
//!
//! Process groups and sessions are the deputies' (`crate::body`).
//! Not handled: `clone` called directly, `fexecve`.

use crate::forward::{CTL_ENV, CTL_VALUE_LEN, call, ctl, format_ctl, publish_ctl};
use crate::layout::{self, CALL_FORK, CALL_REAP, HELLO_CHILD};
use crate::real::{self, Next, SpawnFn};
use crate::state::Global;
use crate::{ENGINE, body, facts, forward, sys};
use core::sync::atomic::{AtomicBool, Ordering};

/// Most children a body tracks at once.
const MAX_CHILDREN: usize = 512;

/// Home pid <-> local pid of a body's live children.
pub(crate) struct PidTable {
    n: usize,
    entries: [(i32, i32); MAX_CHILDREN],
}

impl PidTable {
    /// An empty table.
    pub(crate) const fn new() -> PidTable {
        PidTable {
            n: 0,
            entries: [(0, 0); MAX_CHILDREN],
        }
    }

    /// Remember a child; false if the table is full.
    pub(crate) fn insert(&mut self, home: i32, local: i32) -> bool {
        if let Some(e) = self.entries[..self.n].iter_mut().find(|e| e.0 == home) {
            e.1 = local;
            return true;
        }
        if self.n == MAX_CHILDREN {
            return false;
        }
        self.entries[self.n] = (home, local);
        self.n += 1;
        true
    }

    /// The local pid of the child with home pid `home`.
    pub(crate) fn local_of(&self, home: i32) -> Option<i32> {
        self.entries[..self.n]
            .iter()
            .find(|e| e.0 == home)
            .map(|e| e.1)
    }

    /// The home pid of the child with local pid `local`.
    pub(crate) fn home_of(&self, local: i32) -> Option<i32> {
        self.entries[..self.n]
            .iter()
            .find(|e| e.1 == local)
            .map(|e| e.0)
    }

    /// Forget the child with local pid `local`; its home pid.
    pub(crate) fn remove_local(&mut self, local: i32) -> Option<i32> {
        let i = self.entries[..self.n].iter().position(|e| e.1 == local)?;
        let home = self.entries[i].0;
        self.entries[i] = self.entries[self.n - 1];
        self.n -= 1;
        Some(home)
    }

    /// Forget everyone (a forked child has no children yet).
    pub(crate) fn clear(&mut self) {
        self.n = 0;
    }
}

static CHILDREN: Global<PidTable> = Global::new(PidTable::new());

/// The table. Sound: single-threaded bodies, and every change happens
/// with all signals blocked, so no handler sees it half-done.
fn children() -> &'static mut PidTable {
    // SAFETY: see above.
    unsafe { &mut *CHILDREN.get() }
}

/// `LD_PRELOAD=...\0` as the process started, for the `execve` hook.
static PRELOAD_ENTRY: Global<[u8; 4096]> = Global::new([0; 4096]);

/// Constructor: remember `LD_PRELOAD` and make room for `MOSIX_BODY_CTL`
/// in the environment (so a later body can write it in place).
pub(crate) fn prepare_env() {
    // SAFETY: the constructor runs alone, before main.
    let p = unsafe { &mut *PRELOAD_ENTRY.get() };
    let name = b"LD_PRELOAD=";
    p[..name.len()].copy_from_slice(name);
    let end = p.len() - 1;
    let n = sys::env_copy_len(c"LD_PRELOAD", &mut p[name.len()..end]);
    if n == 0 {
        p[0] = 0;
    }
    if sys::env_value_mut(CTL_ENV).is_none_or(|(_, len)| len != CTL_VALUE_LEN) {
        let mut val = [0u8; CTL_VALUE_LEN];
        format_ctl(-1, 0, &mut val);
        let mut v = [0u8; CTL_VALUE_LEN + 1];
        v[..CTL_VALUE_LEN].copy_from_slice(&val);
        // SAFETY: NUL-terminated name and value; setenv copies them.
        unsafe { libc::setenv(c"MOSIX_BODY_CTL".as_ptr(), v.as_ptr().cast(), 1) };
    }
}

/// Set while a hooked fork is under way, so the fork handler of the
/// child (`after_fork_child`) leaves the control fd to the hook.
pub(crate) static IN_FORK: AtomicBool = AtomicBool::new(false);

fn real_fork() -> libc::pid_t {
    let Some(real) = real::FORK.get() else {
        // SAFETY: a plain fork through the kernel (no fork handlers).
        return unsafe { libc::syscall(libc::SYS_fork) as libc::pid_t };
    };
    // SAFETY: fork has no arguments.
    unsafe { real() }
}

/// Ask the deputy to fork: the child's home pid and its control socket.
fn fork_deputy() -> Result<(i32, i32), i32> {
    match call(CALL_FORK, [0; 3]) {
        Ok((home, chan)) if chan >= 0 && home > 0 && home <= i32::MAX as i64 => {
            Ok((home as i32, chan))
        }
        Ok((_, chan)) => {
            if chan >= 0 {
                sys::close(chan);
            }
            Err(libc::EAGAIN)
        }
        // The link or host is gone: as a fork the system cannot do now.
        Err(libc::EIO | libc::ENOSYS) => Err(libc::EAGAIN),
        Err(e) => Err(e),
    }
}

/// Tell home that a child it forked for us never ran (or ended with
/// `status` before anyone could wait for it).
fn drop_child(home: i32, status: i32) {
    let _ = call(CALL_REAP, [home as i64, status as i64, 0]);
}

/// In the child of a hooked fork: take `chan` as the control socket, be
/// the body of the deputy `home`, and read our facts from the host.
fn become_child(home: i32, chan: i32) {
    let eng = ENGINE.get();
    // SAFETY: the child is single-threaded with every signal blocked.
    let e = unsafe { &mut *eng };
    let ctl = e.ctl_fd;
    if ctl < 0 || !sys::dup3(chan, ctl, 0) {
        sys::close(chan);
        body::forget();
        return;
    }
    sys::close(chan);
    children().clear();
    body::set_child_ids(home);
    e.hello.kind = HELLO_CHILD;
    e.hello.pid = sys::getpid();
    if !sys::send_all(ctl, sys::as_bytes(&e.hello)) {
        sys::close(ctl);
        e.ctl_fd = -1;
        body::forget();
        return;
    }
    attach(ctl);
}

fn do_fork() -> libc::pid_t {
    if !facts::is_away() {
        return real_fork();
    }
    let (home, chan) = match fork_deputy() {
        Ok(v) => v,
        Err(e) => {
            sys::set_errno(e);
            return -1;
        }
    };
    let old = sys::block_all_signals();
    IN_FORK.store(true, Ordering::SeqCst);
    let pid = real_fork();
    let err = sys::errno();
    IN_FORK.store(false, Ordering::SeqCst);
    if pid == 0 {
        become_child(home, chan);
        sys::set_sigmask(old);
        return 0;
    }
    sys::close(chan);
    if pid < 0 {
        drop_child(home, libc::SIGKILL);
        sys::set_sigmask(old);
        sys::set_errno(err);
        return -1;
    }
    children().insert(home, pid);
    sys::set_sigmask(old);
    home
}

/// `fork(2)`: in a body, the deputy forks too; returns the child's home
/// pid.
#[unsafe(no_mangle)]
pub extern "C" fn fork() -> libc::pid_t {
    do_fork()
}

/// `vfork(2)`: a fork, at home too (POSIX allows it; a wrapper cannot
/// call the real vfork, whose child would return through our frame, and
/// the child of a body needs its own deputy either way).
#[unsafe(no_mangle)]
pub extern "C" fn vfork() -> libc::pid_t {
    do_fork()
}

/// Room for the environment the `execve` and spawn hooks pass on.
const ENV_MAX: usize = 8192;
static ENVP: Global<[*const libc::c_char; ENV_MAX]> = Global::new([core::ptr::null(); ENV_MAX]);

/// `envp` with `MOSIX_BODY_CTL` current and `LD_PRELOAD` present (static
/// storage; `envp` itself if it does not fit or is NULL).
///
/// # Safety
/// `envp` is NULL or a NULL-terminated array of NUL-terminated strings.
unsafe fn body_env(envp: *const *const libc::c_char) -> *const *const libc::c_char {
    if envp.is_null() {
        return envp;
    }
    // SAFETY: the caller passes a NULL-terminated array.
    let n = (0..ENV_MAX)
        .take_while(|&i| {
            // SAFETY: `i` is before the terminating NULL (take_while stops
            // at it), inside the array.
            let p = unsafe { envp.add(i) };
            // SAFETY: as above.
            !unsafe { *p }.is_null()
        })
        .count();
    if n + 3 > ENV_MAX {
        return envp;
    }
    // SAFETY: hooks run on the single thread with all signals blocked
    // while they use ENVP.
    let out = unsafe { &mut *ENVP.get() };
    // SAFETY: as above, read-only here.
    let preload = unsafe { &*PRELOAD_ENTRY.get() };
    let mut has_preload = false;
    let mut k = 0;
    for i in 0..n {
        // SAFETY: `i < n`, inside the array.
        let at = unsafe { envp.add(i) };
        // SAFETY: as above.
        let s = unsafe { *at };
        // SAFETY: every entry is a NUL-terminated string.
        let b = unsafe { core::ffi::CStr::from_ptr(s) }.to_bytes();
        if b.starts_with(CTL_ENV) {
            continue;
        }
        has_preload |= b.starts_with(b"LD_PRELOAD=");
        out[k] = s;
        k += 1;
    }
    if !has_preload && preload[0] != 0 {
        out[k] = preload.as_ptr().cast();
        k += 1;
    }
    out[k] = forward::ctl_entry();
    out[k + 1] = core::ptr::null();
    out.as_ptr()
}

/// `execve(2)`: a body's new program stays a body (its environment keeps
/// `MOSIX_BODY_CTL` and `LD_PRELOAD`).
///
/// # Safety
/// Same contract as libc's `execve`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn execve(
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
) -> i32 {
    let env = if facts::is_away() {
        // SAFETY: the caller's environment array.
        unsafe { body_env(envp) }
    } else {
        envp
    };
    // SAFETY: the caller's arguments, with an environment of the same form.
    unsafe { libc::syscall(libc::SYS_execve, path, argv, env) as i32 }
}

/// A spawn in a body: the deputy forks, glibc's spawn starts the child
/// with its own control socket at the control fd's number.
///
/// # Safety
/// Same contract as libc's `posix_spawn`.
unsafe fn spawn(
    which: &Next<SpawnFn>,
    pid: *mut libc::pid_t,
    path: *const libc::c_char,
    actions: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
    argv: *const *mut libc::c_char,
    envp: *const *mut libc::c_char,
) -> i32 {
    let Some(real) = which.get() else {
        return libc::ENOSYS;
    };
    let ctl = ctl();
    if ctl < 0 {
        // SAFETY: the caller's arguments.
        return unsafe { real(pid, path, actions, attr, argv, envp) };
    }
    let (home, chan) = match fork_deputy() {
        Ok(v) => v,
        Err(e) => return e,
    };
    let old = sys::block_all_signals();
    let saved = sys::dup_cloexec_above(ctl, crate::CTL_FD_MIN);
    if saved < 0 || !sys::dup3(chan, ctl, 0) {
        if saved >= 0 {
            sys::close(saved);
        }
        sys::close(chan);
        drop_child(home, libc::SIGKILL);
        sys::set_sigmask(old);
        return libc::EAGAIN;
    }
    sys::close(chan);
    // The new program takes the socket at `ctl` whatever its pid.
    publish_ctl(ctl, 0);
    // SAFETY: the caller's environment array.
    let env = unsafe { body_env(envp.cast()) };
    let mut local: libc::pid_t = 0;
    // SAFETY: the caller's arguments, our pid slot and environment.
    let r = unsafe { real(&mut local, path, actions, attr, argv, env.cast()) };
    sys::dup3(saved, ctl, 0);
    sys::close(saved);
    publish_ctl(ctl, sys::getpid());
    if r != 0 {
        // Any child exited at once (its exec failed) and glibc reaped it.
        drop_child(home, 127 << 8);
    } else {
        children().insert(home, local);
        if !pid.is_null() {
            // SAFETY: the caller's pid slot.
            unsafe { *pid = home };
        }
    }
    sys::set_sigmask(old);
    r
}

/// `posix_spawn(3)`: in a body, the deputy forks too; `*pid` is the home
/// pid.
///
/// # Safety
/// Same contract as libc's `posix_spawn`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_spawn(
    pid: *mut libc::pid_t,
    path: *const libc::c_char,
    actions: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
    argv: *const *mut libc::c_char,
    envp: *const *mut libc::c_char,
) -> i32 {
    // SAFETY: passed on.
    unsafe { spawn(&real::POSIX_SPAWN, pid, path, actions, attr, argv, envp) }
}

/// `posix_spawnp(3)`: as [`posix_spawn`], searching `PATH`.
///
/// # Safety
/// Same contract as libc's `posix_spawnp`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_spawnp(
    pid: *mut libc::pid_t,
    file: *const libc::c_char,
    actions: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
    argv: *const *mut libc::c_char,
    envp: *const *mut libc::c_char,
) -> i32 {
    // SAFETY: passed on.
    unsafe { spawn(&real::POSIX_SPAWNP, pid, file, actions, attr, argv, envp) }
}

/// Moves of this process (away, on, or home) and execs or forks as a
/// body: a blocking wait that sees it change started in another place.
static MOVES: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);
/// Home said the process left no children at home (a `P_ALL` wait there
/// found none); the list only shrinks, so it is not asked again until
/// the next move.
static NO_HOME_KIDS: AtomicBool = AtomicBool::new(false);

/// The process was restored in a new place (away or at home): the local
/// pids of the children it forked where it ran before mean nothing here.
/// Those children run on where they were, children of their deputies at
/// home, which are children of ours there: from now on waits for them go
/// home ([`wait_mixed`]) and so does a `kill` of one (its deputy passes
/// it on to its body).
pub(crate) fn forget_local_children() {
    let old = sys::block_all_signals();
    children().clear();
    sys::set_sigmask(old);
}

/// The process moved, came home or became a new body (freeze handler,
/// exec, fork child): waits look again at where its children are.
pub(crate) fn note_move() {
    MOVES.fetch_add(1, Ordering::SeqCst);
    NO_HOME_KIDS.store(false, Ordering::SeqCst);
}

/// Take the host's facts from the control socket `ctl` after a hello
/// ([`body::attach`]) and, since the process may now be somewhere new
/// (or a body of its own), let waits look again ([`note_move`]).
pub(crate) fn attach(ctl: i32) {
    body::attach(ctl);
    note_move();
}

fn moves() -> u32 {
    MOVES.load(Ordering::SeqCst)
}

/// The first wait for a home child's news, in ms; it doubles to
/// [`WAIT_POLL_MAX_MS`]. The news is the SIGCHLD the deputy forwards; the
/// poll only covers one lost on the way (two SIGCHLDs pending at home
/// merge into one, a signal sent while the body moves between nodes).
const WAIT_POLL_MIN_MS: u64 = 10;
/// The longest wait between looks at home.
const WAIT_POLL_MAX_MS: u64 = 500;

/// One look at one side of a wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Look {
    /// A child changed state: its pid (home pid) and wait status.
    Found(i32, i32),
    /// Children match, none changed.
    Nothing,
    /// No child matches.
    NoChild,
    /// The wait failed with this errno.
    Failed(i32),
}

/// How a mixed wait ended.
enum Mixed {
    /// A child: pid (home pid for both sides), status, whether local.
    Found(i32, i32, bool),
    /// WNOHANG and nothing ready.
    Nothing,
    /// Failed with this errno.
    Failed(i32),
    /// The process came home meanwhile: do the wait again as at home.
    AtHome,
}

/// A wait's target at home: `(idtype, id)` for `CALL_WAIT`.
fn home_target(pid: libc::pid_t) -> (i32, i32) {
    match pid {
        -1 => (libc::P_ALL as i32, 0),
        0 => (libc::P_PGID as i32, 0),
        p if p > 0 => (libc::P_PID as i32, p),
        p => (libc::P_PGID as i32, p.checked_neg().unwrap_or(0)),
    }
}

/// The `waitid` options `CALL_WAIT` carries home.
const HOME_WAIT_OPTIONS: i32 = libc::WEXITED | libc::WSTOPPED | libc::WCONTINUED | libc::WNOWAIT;
/// The options `waitid(2)` knows.
const WAITID_OPTIONS: i32 =
    HOME_WAIT_OPTIONS | libc::WNOHANG | libc::__WNOTHREAD | libc::__WCLONE | libc::__WALL;

/// Ask home for a child of `(idtype, id)` that changed state (`options`
/// as waitid's; never blocks there).
fn look_home(idtype: i32, id: i32, options: i32) -> Look {
    if NO_HOME_KIDS.load(Ordering::SeqCst) {
        return Look::NoChild;
    }
    let options = options & HOME_WAIT_OPTIONS;
    match call(
        layout::CALL_WAIT,
        [idtype as i64, id as i64, options as i64],
    ) {
        Ok((v, _)) => match layout::split_wait_reply(v) {
            Some((pid, status)) => Look::Found(pid, status),
            None => Look::Nothing,
        },
        Err(libc::ECHILD) => {
            if idtype == libc::P_ALL as i32 {
                NO_HOME_KIDS.store(true, Ordering::SeqCst);
            }
            Look::NoChild
        }
        Err(e) => Look::Failed(e),
    }
}

/// Whether a blocking wait goes on after a handler ran (EINTR) as the
/// kernel's would: only if every signal that could have run a handler
/// now (unblocked in `mask`, caught) has SA_RESTART. (Which one ran is
/// not known here; a SIGCHLD never interrupts, it is taken.)
fn restarts(mask: u64) -> bool {
    (1..=64).all(|sig| {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP || sig == libc::SIGCHLD {
            return true;
        }
        if mask & sys::sig_bit(sig) != 0 {
            return true;
        }
        let a = sys::get_sigaction(sig);
        a.handler <= 1 || a.flags & libc::SA_RESTART as u64 != 0
    })
}

/// A wait in a body that may be for children at home as well as for
/// local ones (ARCHITECTURE.md section 4, "process tree"; issue 4).
///
/// **Design.** Home children stay children of the deputy, so only the
/// deputy can wait for them, and it must never block in a wait (it
/// forwards signals, serves calls, brings the body home). So each look
/// is a non-blocking pair: `local` (the kernel here, WNOHANG) then home
/// (`CALL_WAIT`, a WNOHANG waitid at home over the children left there).
/// Between looks the body sleeps in `rt_sigtimedwait` for SIGCHLD, which
/// comes from a local child or from the deputy (it forwards the SIGCHLD
/// of a home child). SIGCHLD is blocked from before the first look to the
/// end, so news that lands between a look and the sleep is not lost: it
/// waits, pending, and ends the sleep at once. A SIGCHLD taken here is
/// raised again at the end if the program has a handler for it (or
/// blocks it), so a shell's SIGCHLD handler still runs, once, as after
/// a real wait. Every other signal stays as deliverable as in a real
/// wait: its handler runs in the sleep, and the wait then goes on if that
/// handler would have restarted it, else fails with EINTR. The freeze
/// signal is one of those: a body moved meanwhile looks again from its
/// new node, and one that came home does the wait again as at home. The
/// sleep also ends on a timeout (10 ms doubling to 500 ms) in case a
/// SIGCHLD was lost on the way.
///
/// `local` is None when no local child can match.
fn wait_mixed(
    mut local: Option<&mut dyn FnMut() -> Look>,
    home: (i32, i32),
    home_options: i32,
    nohang: bool,
) -> Mixed {
    let chld = sys::sig_bit(libc::SIGCHLD);
    let old = sys::block_signals(chld);
    let mut epoch = moves();
    let mut took = false;
    let mut delay = WAIT_POLL_MIN_MS;
    let end = loop {
        if !facts::is_away() {
            break Mixed::AtHome;
        }
        let l = local.as_mut().map_or(Look::NoChild, |f| f());
        let h = match l {
            Look::Found(pid, st) => break Mixed::Found(pid, st, true),
            Look::Failed(e) => Look::Failed(e),
            Look::Nothing | Look::NoChild => look_home(home.0, home.1, home_options),
        };
        match h {
            Look::Found(pid, st) => break Mixed::Found(pid, st, false),
            // The call met a freeze and the process moved (or came home):
            // look again from where it is now.
            Look::Failed(_) if moves() != epoch => {
                epoch = moves();
                continue;
            }
            Look::Failed(e) => break Mixed::Failed(e),
            Look::Nothing | Look::NoChild => {}
        }
        if l == Look::NoChild && h == Look::NoChild {
            break Mixed::Failed(libc::ECHILD);
        }
        if nohang {
            break Mixed::Nothing;
        }
        match sys::take_signal(chld, delay) {
            Ok(_) => took = true,
            Err(libc::EINTR) => {
                if moves() != epoch {
                    epoch = moves();
                    delay = WAIT_POLL_MIN_MS;
                } else if !restarts(old) {
                    break Mixed::Failed(libc::EINTR);
                }
            }
            Err(_) => delay = (delay * 2).min(WAIT_POLL_MAX_MS),
        }
    };
    if took && (old & chld != 0 || sys::get_sigaction(libc::SIGCHLD).handler > 1) {
        sys::raise_here(libc::SIGCHLD);
    }
    sys::set_sigmask(old);
    end
}

/// The local `wait4` pid for a wait's `pid` in a body: a child's local
/// pid, the local group for the body's own home group.
fn local_target(pid: libc::pid_t) -> libc::pid_t {
    if !facts::is_away() {
        return pid;
    }
    if pid > 0 {
        children().local_of(pid).unwrap_or(pid)
    } else if pid < -1 && pid.checked_neg() == Some(body::home_pgrp()) {
        0
    } else {
        pid
    }
}

/// A child `local` was waited for with `status`: its home pid, and if it
/// ended (and was reaped, not only looked at), home learns how.
fn waited(local: libc::pid_t, status: i32, reaped: bool) -> libc::pid_t {
    let Some(home) = children().home_of(local) else {
        return local;
    };
    let ended = libc::WIFEXITED(status) || libc::WIFSIGNALED(status);
    if ended && reaped {
        let old = sys::block_all_signals();
        children().remove_local(local);
        let errno = sys::errno();
        drop_child(home, status);
        sys::set_errno(errno);
        sys::set_sigmask(old);
    }
    home
}

/// `wait4(2)` by the kernel: the pid or -errno.
///
/// # Safety
/// `status` and `rusage` are NULL or writable.
unsafe fn raw_wait4(
    pid: libc::pid_t,
    status: *mut i32,
    options: i32,
    rusage: *mut libc::rusage,
) -> libc::pid_t {
    // SAFETY: the caller's slots.
    let r = unsafe { libc::syscall(libc::SYS_wait4, pid, status, options, rusage) };
    if r < 0 {
        -sys::errno()
    } else {
        r as libc::pid_t
    }
}

/// Whether a wait for `pid` in a body may concern children at home:
/// any wait but one for a local child, unless home said it has none.
fn may_be_at_home(pid: libc::pid_t) -> bool {
    facts::is_away()
        && pid != i32::MIN
        && !NO_HOME_KIDS.load(Ordering::SeqCst)
        && !(pid > 0 && children().local_of(pid).is_some())
}

/// `wait4(2)` with home pids for a body's children, local or at home.
///
/// # Safety
/// Same contract as libc's `wait4`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wait4(
    pid: libc::pid_t,
    status: *mut i32,
    options: i32,
    rusage: *mut libc::rusage,
) -> libc::pid_t {
    const WAIT4_OPTIONS: i32 = libc::WNOHANG
        | libc::WUNTRACED
        | libc::WCONTINUED
        | libc::__WNOTHREAD
        | libc::__WCLONE
        | libc::__WALL;
    loop {
        let epoch = moves();
        if options & !WAIT4_OPTIONS != 0 || !may_be_at_home(pid) {
            let mut st = 0i32;
            // SAFETY: our status word and the caller's rusage.
            let r = unsafe { raw_wait4(local_target(pid), &mut st, options, rusage) };
            if r < 0 {
                // Moved (or came home) in the middle of a blocking wait:
                // the kernel restarted it in the new place, where the
                // children may not be: look again from here.
                if (r == -libc::ECHILD || r == -libc::EINTR) && moves() != epoch {
                    continue;
                }
                sys::set_errno(-r);
                return -1;
            }
            if r > 0 && !status.is_null() {
                // SAFETY: the caller's status slot.
                unsafe { *status = st };
            }
            if r > 0 && facts::is_away() {
                return waited(r, st, true);
            }
            return r;
        }
        let target = local_target(pid);
        let local_options = options | libc::WNOHANG;
        let mut look_local = || {
            let mut st = 0i32;
            // SAFETY: our status word and the caller's rusage.
            match unsafe { raw_wait4(target, &mut st, local_options, rusage) } {
                0 => Look::Nothing,
                r if r > 0 => Look::Found(r, st),
                r if r == -libc::ECHILD => Look::NoChild,
                r => Look::Failed(-r),
            }
        };
        let has_local = pid <= 0;
        let home_options = libc::WEXITED | (options & (libc::WUNTRACED | libc::WCONTINUED));
        let found = wait_mixed(
            if has_local {
                Some(&mut look_local)
            } else {
                None
            },
            home_target(pid),
            home_options,
            options & libc::WNOHANG != 0,
        );
        return match found {
            Mixed::AtHome => continue,
            Mixed::Nothing => 0,
            Mixed::Failed(e) => {
                sys::set_errno(e);
                -1
            }
            Mixed::Found(child, st, is_local) => {
                if !status.is_null() {
                    // SAFETY: the caller's status slot.
                    unsafe { *status = st };
                }
                if is_local {
                    waited(child, st, true)
                } else {
                    if !rusage.is_null() {
                        // SAFETY: the caller's rusage slot; a home child's
                        // usage is not carried (zero, as for a child that
                        // used no time).
                        unsafe { core::ptr::write_bytes(rusage, 0, 1) };
                    }
                    child
                }
            }
        };
    }
}

/// `waitpid(2)`.
///
/// # Safety
/// Same contract as libc's `waitpid`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn waitpid(pid: libc::pid_t, status: *mut i32, options: i32) -> libc::pid_t {
    // SAFETY: passed on.
    unsafe { wait4(pid, status, options, core::ptr::null_mut()) }
}

/// `wait(2)`.
///
/// # Safety
/// Same contract as libc's `wait`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wait(status: *mut i32) -> libc::pid_t {
    // SAFETY: passed on.
    unsafe { wait4(-1, status, 0, core::ptr::null_mut()) }
}

/// `wait3(2)`.
///
/// # Safety
/// Same contract as libc's `wait3`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wait3(
    status: *mut i32,
    options: i32,
    rusage: *mut libc::rusage,
) -> libc::pid_t {
    // SAFETY: passed on.
    unsafe { wait4(-1, status, options, rusage) }
}

/// The `waitid` siginfo fields of a wait status: `(si_code, si_status)`.
fn siginfo_of(status: i32) -> (i32, i32) {
    if status == 0xffff {
        (libc::CLD_CONTINUED, libc::SIGCONT)
    } else if status & 0x7f == 0x7f {
        (libc::CLD_STOPPED, (status >> 8) & 0xff)
    } else if status & 0x7f == 0 {
        (libc::CLD_EXITED, (status >> 8) & 0xff)
    } else if status & 0x80 != 0 {
        (libc::CLD_DUMPED, status & 0x7f)
    } else {
        (libc::CLD_KILLED, status & 0x7f)
    }
}

/// The wait status of a SIGCHLD siginfo's `(si_code, si_status)`.
fn status_of(code: i32, value: i32) -> i32 {
    match code {
        libc::CLD_EXITED => (value & 0xff) << 8,
        libc::CLD_KILLED => value & 0x7f,
        libc::CLD_DUMPED => (value & 0x7f) | 0x80,
        libc::CLD_CONTINUED => 0xffff,
        _ => ((value & 0xff) << 8) | 0x7f,
    }
}

/// Write a SIGCHLD siginfo for child `pid` with wait status `status`
/// (pid 0: none, as waitid's WNOHANG leaves it).
///
/// # Safety
/// `info` points at a writable siginfo.
unsafe fn fill_siginfo(info: *mut libc::siginfo_t, pid: i32, status: i32) {
    // SAFETY: the caller's siginfo, 128 bytes.
    unsafe { core::ptr::write_bytes(info.cast::<u8>(), 0, size_of::<libc::siginfo_t>()) };
    if pid == 0 {
        return;
    }
    let (code, value) = siginfo_of(status);
    let base = info.cast::<u8>();
    // The x86-64 SIGCHLD layout: si_signo @0, si_errno @4, si_code @8,
    // si_pid @16, si_uid @20, si_status @24.
    for (at, v) in [
        (0usize, libc::SIGCHLD),
        (8, code),
        (16, pid),
        (20, sys::getuid() as i32),
        (24, value),
    ] {
        // SAFETY: `at` + 4 is inside the caller's 128-byte siginfo.
        let slot = unsafe { base.add(at) }.cast::<i32>();
        // SAFETY: a 4-byte aligned int of the caller's writable siginfo.
        unsafe { slot.write(v) };
    }
}

/// `waitid(2)` by the kernel: 0 or -errno.
///
/// # Safety
/// `info` is NULL or a writable siginfo.
unsafe fn raw_waitid(
    idtype: libc::idtype_t,
    id: libc::id_t,
    info: *mut libc::siginfo_t,
    options: i32,
) -> i32 {
    // SAFETY: the caller's siginfo, no rusage.
    let r = unsafe {
        libc::syscall(
            libc::SYS_waitid,
            idtype,
            id,
            info,
            options,
            core::ptr::null_mut::<libc::rusage>(),
        )
    };
    if r < 0 { -sys::errno() } else { 0 }
}

/// `waitid(2)` with home pids for a body's children, local or at home.
///
/// # Safety
/// Same contract as libc's `waitid`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn waitid(
    idtype: libc::idtype_t,
    id: libc::id_t,
    info: *mut libc::siginfo_t,
    options: i32,
) -> i32 {
    loop {
        let epoch = moves();
        let as_pid = match idtype {
            libc::P_ALL => -1,
            libc::P_PID if id > 0 && id <= i32::MAX as libc::id_t => id as libc::pid_t,
            // (Group 1 would read as "any child" in wait4's terms.)
            libc::P_PGID if id != 1 && id <= i32::MAX as libc::id_t => {
                (id as libc::pid_t).wrapping_neg()
            }
            _ => i32::MIN,
        };
        let known = options & !WAITID_OPTIONS == 0 && as_pid != i32::MIN;
        if !known || !may_be_at_home(as_pid) {
            let (idt, lid) = match (idtype, local_target(as_pid)) {
                (libc::P_PID, l) if known => (idtype, l as libc::id_t),
                (libc::P_PGID, 0) if known => (libc::P_PGID, 0),
                _ => (idtype, id),
            };
            // SAFETY: the caller's siginfo.
            let r = unsafe { raw_waitid(idt, lid, info, options) };
            if r < 0 {
                if (r == -libc::ECHILD || r == -libc::EINTR) && moves() != epoch {
                    continue;
                }
                sys::set_errno(-r);
                return -1;
            }
            if info.is_null() || !facts::is_away() {
                return 0;
            }
            // SAFETY: the kernel filled the caller's siginfo.
            let si = unsafe { &*info };
            // SAFETY: a SIGCHLD siginfo, which has si_pid.
            let local = unsafe { si.si_pid() };
            // SAFETY: as above, and si_status.
            let value = unsafe { si.si_status() };
            if local > 0 {
                let status = status_of(si.si_code, value);
                let home = waited(local, status, options & libc::WNOWAIT == 0);
                // SAFETY: si_pid is byte 16 of the x86-64 SIGCHLD layout,
                // inside the caller's siginfo.
                let slot = unsafe { info.cast::<u8>().add(16) }.cast::<libc::pid_t>();
                // SAFETY: as above; the caller's siginfo is writable.
                unsafe { slot.write(home) };
            }
            return 0;
        }
        let (lidtype, lid) = match (idtype, local_target(as_pid)) {
            (libc::P_PGID, 0) => (libc::P_PGID, 0),
            _ => (idtype, id),
        };
        let local_options = options | libc::WNOHANG;
        let mut look_local = || {
            // SAFETY: an all-zero siginfo is a valid value.
            let mut si: libc::siginfo_t = unsafe { core::mem::zeroed() };
            // SAFETY: our own siginfo.
            match unsafe { raw_waitid(lidtype, lid, &mut si, local_options) } {
                0 => {
                    // SAFETY: a SIGCHLD siginfo (or all zero): si_pid.
                    let local = unsafe { si.si_pid() };
                    // SAFETY: as above, si_status.
                    let value = unsafe { si.si_status() };
                    if local > 0 {
                        Look::Found(local, status_of(si.si_code, value))
                    } else {
                        Look::Nothing
                    }
                }
                r if r == -libc::ECHILD => Look::NoChild,
                r => Look::Failed(-r),
            }
        };
        let has_local = idtype != libc::P_PID;
        let found = wait_mixed(
            if has_local {
                Some(&mut look_local)
            } else {
                None
            },
            home_target(as_pid),
            options,
            options & libc::WNOHANG != 0,
        );
        return match found {
            Mixed::AtHome => continue,
            Mixed::Failed(e) => {
                sys::set_errno(e);
                -1
            }
            Mixed::Nothing => {
                if !info.is_null() {
                    // SAFETY: the caller's siginfo.
                    unsafe { fill_siginfo(info, 0, 0) };
                }
                0
            }
            Mixed::Found(child, st, is_local) => {
                let pid = if is_local {
                    waited(child, st, options & libc::WNOWAIT == 0)
                } else {
                    child
                };
                if !info.is_null() {
                    // SAFETY: the caller's siginfo.
                    unsafe { fill_siginfo(info, pid, st) };
                }
                0
            }
        };
    }
}

/// `close(2)`: a body's control fd stays open (programs that close every
/// fd before an exec, like Python's `subprocess`, would cut their new
/// program off from its host); anything else is closed.
#[unsafe(no_mangle)]
pub extern "C" fn close(fd: i32) -> i32 {
    if fd >= 0 && fd == ctl() {
        return 0;
    }
    // SAFETY: close(2) of the caller's fd.
    unsafe { libc::syscall(libc::SYS_close, fd) as i32 }
}

/// `close_range(2)` without a body's control fd (see [`close`]).
#[unsafe(no_mangle)]
pub extern "C" fn close_range(first: u32, last: u32, flags: i32) -> i32 {
    let raw = |a: u32, b: u32| {
        // SAFETY: close_range(2) on the caller's range.
        unsafe { libc::syscall(libc::SYS_close_range, a, b, flags) as i32 }
    };
    let keep = ctl();
    if keep < 0 || (keep as u32) < first || (keep as u32) > last {
        return raw(first, last);
    }
    let keep = keep as u32;
    if keep > first {
        let r = raw(first, keep - 1);
        if r != 0 {
            return r;
        }
    }
    if keep < last { raw(keep + 1, last) } else { 0 }
}

/// `closefrom(3)` without a body's control fd (see [`close`]).
#[unsafe(no_mangle)]
pub extern "C" fn closefrom(low: i32) {
    close_range(low.max(0) as u32, u32::MAX, 0);
}

/// A `kill` target in a body: `Some(local pid)` for ourselves or one of
/// our children, `None` for anyone else (done at home).
fn local_kill_target(pid: libc::pid_t, home_pid: i32) -> Option<libc::pid_t> {
    if pid == home_pid {
        Some(sys::getpid())
    } else if pid > 0 {
        children().local_of(pid)
    } else {
        None
    }
}

/// `kill(pid, sig)` done at home by the deputy: 0 or -1 with errno.
fn kill_at_home(pid: libc::pid_t, sig: i32) -> i32 {
    match call(layout::CALL_KILL, [pid as i64, sig as i64, 0]) {
        Ok(_) => 0,
        Err(e) => {
            sys::set_errno(e);
            -1
        }
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
    let pid = match facts::away() {
        Some(b) => match local_kill_target(pid, b.home_pid) {
            Some(local) => local,
            None => return kill_at_home(pid, sig),
        },
        None => pid,
    };
    let Some(real) = real::KILL.get() else {
        // SAFETY: kill(2) has no memory effects.
        return unsafe { libc::syscall(libc::SYS_kill, pid, sig) as i32 };
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_table_maps_both_ways() {
        let mut t = PidTable::new();
        assert!(t.insert(100, 7));
        assert!(t.insert(101, 8));
        assert_eq!(t.local_of(100), Some(7));
        assert_eq!(t.home_of(8), Some(101));
        assert_eq!(t.local_of(5), None);
        assert_eq!(t.remove_local(7), Some(100));
        assert_eq!(t.local_of(100), None);
        assert_eq!(t.local_of(101), Some(8));
        assert_eq!(t.remove_local(7), None);
        // A home pid seen again (reused) takes the new local pid.
        assert!(t.insert(101, 9));
        assert_eq!(t.local_of(101), Some(9));
        t.clear();
        assert_eq!(t.home_of(9), None);
    }

    #[test]
    fn wait_status_and_siginfo_agree() {
        for st in [0, 7 << 8, 255 << 8, 15, 0x80 | 11, (19 << 8) | 0x7f, 0xffff] {
            let (code, value) = siginfo_of(st);
            assert_eq!(status_of(code, value), st, "status {st:#x}");
        }
        assert_eq!(siginfo_of(3 << 8), (libc::CLD_EXITED, 3));
        assert_eq!(siginfo_of(9), (libc::CLD_KILLED, 9));
        assert_eq!(siginfo_of(0xffff), (libc::CLD_CONTINUED, libc::SIGCONT));
    }

    #[test]
    fn wait_targets_at_home_are_waitid_ones() {
        assert_eq!(home_target(-1), (libc::P_ALL as i32, 0));
        assert_eq!(home_target(0), (libc::P_PGID as i32, 0));
        assert_eq!(home_target(42), (libc::P_PID as i32, 42));
        assert_eq!(home_target(-42), (libc::P_PGID as i32, 42));
        // Never a negative id (wait4 refuses INT_MIN before asking home).
        assert_eq!(home_target(i32::MIN), (libc::P_PGID as i32, 0));
        assert!(!may_be_at_home(i32::MIN));
    }

    #[test]
    fn pid_table_says_when_full() {
        let mut t = PidTable::new();
        for i in 0..MAX_CHILDREN as i32 {
            assert!(t.insert(i + 1, i + 1000));
        }
        assert!(!t.insert(99_999, 5));
        assert_eq!(t.remove_local(1000), Some(1));
        assert!(t.insert(99_999, 5));
        assert_eq!(t.home_of(5), Some(99_999));
    }
}
