//! libmosix.so: loaded into every managed process by `mosrun` through
//! `LD_PRELOAD` (ARCHITECTURE.md sections 3 and 5).
//!
//! At load time its constructor reserves the restorer window, installs the
//! freeze handler on the freeze signal and connects a control fd to the
//! local `homed` (`$MOSIX_PROCS_SOCKET`, else `/run/mosix/procs.sock`).
//!
//! The freeze handler runs in a signal handler, so it only makes
//! async-signal-safe system calls and writes fixed-layout records from
//! static storage ([`layout`]): it saves a `setjmp`-like resume context,
//! writes a [`layout::FreezeRecord`] to the control fd and blocks for the
//! verdict. When `mosix-restore` rebuilds the process from an image, it
//! jumps back into the same handler through that context; the handler then
//! re-attaches to `homed` and returns, and `rt_sigreturn` through the
//! kernel's original signal frame restores the interrupted state exactly.
//!
//! Hooks keep the program from taking the freeze signal ([`hooks`]);
//! in a body away from home, identity and terminal calls are answered as
//! at home ([`body`]) and the process tree (fork, exec, wait, kill) keeps
//! home pids and a deputy per process ([`family`]).

pub use mosix_layout as layout;

mod body;
mod context;
mod deputy;
mod facts;
mod family;
mod forward;
mod hooks;
mod real;
mod rtld;
mod shell;
mod state;
mod sys;

use layout::{
    FreezeRecord, HELLO_MAGIC, HELLO_PATH_MAX, HELLO_RESTORED, HELLO_STARTED, Hello,
    LAYOUT_VERSION, VERDICT_CONTINUE, VERDICT_DEPUTY, VERDICT_EXIT, VERDICT_STOP,
};
use state::Global;

/// Default freeze signal when `$MOSIX_FREEZE_SIGNAL` is not set
/// (SIGRTMAX - 1, as the configuration's default).
const DEFAULT_FREEZE_SIGNAL: i32 = 63;
/// Lowest fd number the control connection is moved to, out of the way of
/// the program's own low fds.
pub(crate) const CTL_FD_MIN: i32 = 1000;
/// rseq signature glibc registers on x86-64.
const RSEQ_SIG: u32 = 0x5305_3053;

/// Everything the handler needs, in static storage (no allocation in a
/// signal handler). It is part of the process image, so it survives a
/// restore unchanged.
struct Engine {
    /// Control fd to homed, -1 when the process is not managed.
    ctl_fd: i32,
    /// The freeze signal.
    freeze_signal: i32,
    /// NUL-terminated procs socket path.
    sock_path: [u8; 108],
    /// Offset of glibc's cached tid from fs base, -1 if unknown.
    tcb_tid_offset: i64,
    /// glibc's `__rseq_offset`, if glibc registered rseq.
    rseq_offset: i64,
    /// glibc's `__rseq_size` (0: not registered).
    rseq_size: u32,
    /// The first message, reused on every (re)connection.
    hello: Hello,
    /// The record written on every freeze.
    record: FreezeRecord,
}

static ENGINE: Global<Engine> = Global::new(Engine {
    ctl_fd: -1,
    freeze_signal: DEFAULT_FREEZE_SIGNAL,
    sock_path: [0; 108],
    tcb_tid_offset: -1,
    rseq_offset: 0,
    rseq_size: 0,
    hello: Hello {
        magic: HELLO_MAGIC,
        version: LAYOUT_VERSION,
        kind: HELLO_STARTED,
        pid: 0,
        freeze_signal: DEFAULT_FREEZE_SIGNAL,
        interval_minutes: 0,
        path_len: 0,
        checkpoint_path: [0; HELLO_PATH_MAX],
        refuse_len: 0,
        refuse: [0; 124],
    },
    record: FreezeRecord::empty(),
});

/// Runs the constructor when the dynamic loader maps libmosix.
#[used]
#[unsafe(link_section = ".init_array")]
static INIT: extern "C" fn() = mosix_init;

/// The constructor: reserve the window, install the handler, connect.
/// Any failure leaves the program running unmanaged, with a note on stderr.
extern "C" fn mosix_init() {
    let eng = ENGINE.get();
    real::resolve();
    rtld::locate();
    if let Err(what) = sys::reserve_window() {
        sys::note(what);
        return;
    }
    let sig = sys::env_int(c"MOSIX_FREEZE_SIGNAL").unwrap_or(DEFAULT_FREEZE_SIGNAL as i64) as i32;
    let mut path = [0u8; 108];
    if !sys::env_copy(c"MOSIX_PROCS_SOCKET", &mut path) {
        let def = b"/run/mosix/procs.sock";
        path[..def.len()].copy_from_slice(def);
    }
    let mut ckpt = [0u8; HELLO_PATH_MAX];
    let ckpt_len = sys::env_copy_len(c"MOSIX_CHECKPOINT_FILE", &mut ckpt);
    let minutes = sys::env_int(c"MOSIX_CHECKPOINT_MINUTES")
        .unwrap_or(0)
        .clamp(0, u32::MAX as i64) as u32;
    let (rseq_offset, rseq_size) = sys::glibc_rseq();
    let tid_off = sys::find_tcb_tid();
    let refuse: &[u8] = if sys::has_foreign_handler(sig) {
        b"the program has its own handler on the freeze signal"
    } else {
        b""
    };
    // SAFETY: the constructor runs once, before main, on the only thread;
    // nothing else touches ENGINE yet.
    let e = unsafe { &mut *eng };
    e.freeze_signal = sig;
    e.sock_path = path;
    e.rseq_offset = rseq_offset;
    e.rseq_size = rseq_size;
    e.tcb_tid_offset = tid_off;
    let h = &mut e.hello;
    h.freeze_signal = sig;
    h.interval_minutes = minutes;
    h.path_len = ckpt_len as u32;
    h.checkpoint_path = ckpt;
    h.refuse_len = refuse.len() as u32;
    h.refuse[..refuse.len()].copy_from_slice(refuse);
    if refuse.is_empty() && !hooks::install_handler(sig, freeze_handler) {
        sys::note("libmosix: cannot install the freeze handler; running unmanaged");
        return;
    }
    family::prepare_env();
    // A body's new program (after exec, or a child it spawned) talks to
    // the body's host on the control socket it inherited; a process that
    // inherited one it was not given (an unannounced child of a body) runs
    // unmanaged, and must not register with this node's homed.
    match forward::inherited_ctl() {
        Some(Ok(fd)) => {
            // SAFETY: single-threaded constructor.
            if unsafe { attach_exec(eng, fd) } {
                sys::at_fork_child(after_fork_child);
            } else {
                sys::note("libmosix: cannot reach the body's host; running unmanaged");
            }
            return;
        }
        Some(Err(fd)) => {
            sys::close(fd);
            forward::publish_ctl(-1, 0);
            return;
        }
        None => {}
    }
    // SAFETY: as above, single-threaded constructor.
    let connected = unsafe { connect_ctl(eng, HELLO_STARTED) };
    if !connected {
        sys::note("libmosix: cannot reach homed's procs socket; running unmanaged");
        return;
    }
    sys::at_fork_child(after_fork_child);
}

/// A forked child must not share its parent's control connection: it runs
/// unmanaged (its own `exec` of a program loads a fresh libmosix). A
/// body's fork through the `fork` hook gives the child a connection of
/// its own instead (see [`family`]).
extern "C" fn after_fork_child() {
    if family::IN_FORK.load(core::sync::atomic::Ordering::SeqCst) {
        return;
    }
    body::forget();
    let eng = ENGINE.get();
    // SAFETY: runs in the child right after fork, single-threaded.
    let e = unsafe { &mut *eng };
    if e.ctl_fd >= 0 {
        sys::close(e.ctl_fd);
        e.ctl_fd = -1;
    }
}

/// Attach a body's new program to the control socket `fd` it inherited:
/// say hello (`HELLO_EXEC`) and read the body's facts.
///
/// # Safety
/// `eng` is ENGINE and nobody else touches it meanwhile (constructor).
unsafe fn attach_exec(eng: *mut Engine, fd: i32) -> bool {
    // SAFETY: the caller guarantees exclusive access to ENGINE.
    let e = unsafe { &mut *eng };
    e.ctl_fd = fd;
    e.hello.kind = layout::HELLO_EXEC;
    e.hello.pid = sys::getpid();
    if !sys::send_all(fd, sys::as_bytes(&e.hello)) {
        sys::close(fd);
        e.ctl_fd = -1;
        forward::publish_ctl(-1, 0);
        return false;
    }
    family::attach(fd);
    true
}

/// Connect to homed, move the fd to `CTL_FD_MIN` or above (or to the old
/// number after a restore), and send a hello of `kind`.
///
/// # Safety
/// `eng` is ENGINE and nobody else touches it meanwhile (constructor, or
/// the freeze handler with every signal blocked).
unsafe fn connect_ctl(eng: *mut Engine, kind: u32) -> bool {
    // SAFETY: the caller guarantees exclusive access to ENGINE.
    let e = unsafe { &mut *eng };
    // A restored process whose restorer's parent put a socket at the
    // control fd's number (a node's body host, or the deputy when the body
    // comes home) talks to that one: the daemon that placed it is the one
    // that can freeze it again.
    let inherited = kind == HELLO_RESTORED && e.ctl_fd >= 0 && sys::is_socket(e.ctl_fd);
    let fd = if inherited {
        e.ctl_fd
    } else {
        sys::connect_unix(&e.sock_path)
    };
    if fd < 0 {
        return false;
    }
    if inherited {
        sys::set_fd_flags(fd, libc::FD_CLOEXEC);
    }
    let target = if kind == HELLO_RESTORED && e.ctl_fd >= 0 {
        sys::dup_to(fd, e.ctl_fd)
    } else {
        match sys::dup_above(fd, CTL_FD_MIN) {
            // A low RLIMIT_NOFILE: keep the number we got.
            n if n < 0 => fd,
            n => n,
        }
    };
    if target < 0 {
        sys::close(fd);
        return false;
    }
    e.ctl_fd = target;
    e.hello.kind = kind;
    e.hello.pid = sys::getpid();
    if !sys::send_all(target, sys::as_bytes(&e.hello)) {
        sys::close(target);
        e.ctl_fd = -1;
        return false;
    }
    if inherited {
        // The daemon that placed the socket says whether we are a body
        // away from home, and what home looks like.
        family::attach(target);
    }
    true
}

/// The freeze signal handler. Async-signal-safe: system calls and static
/// storage only; every signal is blocked while it runs (`sa_mask` full).
extern "C" fn freeze_handler(sig: i32, _info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    let saved_errno = sys::errno();
    let eng = ENGINE.get();
    // SAFETY: single-threaded process, all signals blocked: the handler is
    // the only code touching ENGINE now.
    let managed = unsafe { (*eng).ctl_fd >= 0 };
    if managed {
        // SAFETY: taking the address of a field of the static ENGINE; the
        // code after a second return of the save only uses statics.
        let jb = unsafe { &raw mut (*eng).record.jmpbuf };
        // SAFETY: `jb` points into static storage that outlives the
        // saved context.
        let resumed = unsafe { context::mosix_save_context(jb) };
        if resumed == 0 {
            // SAFETY: exclusive access as above.
            unsafe { freeze_first(eng, sig, uc) };
        } else {
            // SAFETY: exclusive access as above.
            unsafe { on_restored(eng) };
        }
    }
    sys::set_errno(saved_errno);
}

/// First pass of the handler: record, report, wait for the verdict.
///
/// # Safety
/// Exclusive access to ENGINE (called from the handler only).
#[inline(never)]
unsafe fn freeze_first(eng: *mut Engine, sig: i32, uc: *mut libc::c_void) {
    // SAFETY: the caller guarantees exclusive access.
    let e = unsafe { &mut *eng };
    let r = &mut e.record;
    r.pid = sys::getpid();
    r.ctl_fd = e.ctl_fd;
    r.freeze_signal = sig;
    r.fs_base = sys::fs_base();
    r.gs_base = sys::gs_base();
    if e.rseq_size > 0 {
        r.rseq_addr = r.fs_base.wrapping_add(e.rseq_offset as u64);
        r.rseq_len = e.rseq_size.max(32).next_multiple_of(32);
        r.rseq_sig = RSEQ_SIG;
    } else {
        r.rseq_addr = 0;
        r.rseq_len = 0;
        r.rseq_sig = 0;
    }
    let (head, len) = sys::robust_list();
    r.robust_list = head;
    r.robust_len = len;
    r.ucontext = uc as u64;
    r.tcb_tid_offset = e.tcb_tid_offset;
    r.brk = sys::current_brk();
    r.flags = 0;
    for (i, slot) in r.sigactions.iter_mut().enumerate() {
        *slot = sys::get_sigaction(i as i32 + 1);
    }
    for (i, slot) in r.itimers.iter_mut().enumerate() {
        *slot = sys::get_itimer(i as i32);
    }
    if !sys::send_all(e.ctl_fd, sys::as_bytes(&e.record)) {
        return;
    }
    match sys::read_u32(e.ctl_fd) {
        Some(VERDICT_STOP) => sys::stop_self(),
        Some(VERDICT_EXIT) => sys::exit_group(layout::CHKEXIT_STATUS),
        // The body runs elsewhere now: become its deputy (returns only
        // if that failed; then the process runs on here).
        Some(VERDICT_DEPUTY) => deputy::become_deputy(e.ctl_fd),
        Some(VERDICT_CONTINUE) => {}
        // homed went away or said something unknown: run on unfrozen.
        _ => {}
    }
}

/// Second return of the handler, in a process rebuilt by mosix-restore:
/// fix glibc's cached tid, re-attach to homed, and let the handler return
/// through the original signal frame.
///
/// # Safety
/// Exclusive access to ENGINE (called from the handler only).
#[inline(never)]
unsafe fn on_restored(eng: *mut Engine) {
    // SAFETY: the caller guarantees exclusive access.
    let e = unsafe { &mut *eng };
    if e.tcb_tid_offset >= 0 {
        let old = sys::patch_tcb_tid(e.tcb_tid_offset);
        rtld::hand_over_locks(old, sys::gettid());
    }
    // SAFETY: exclusive access, passed on.
    if !unsafe { connect_ctl(eng, HELLO_RESTORED) } {
        e.ctl_fd = -1;
    }
    // Children forked where it ran before are not ours here.
    family::forget_local_children();
    // A wait the freeze interrupted goes on in a new place.
    family::note_move();
}
