//! The libc definitions libmosix's hooks stand in front of, each looked up
//! once, eagerly, with `dlsym(RTLD_NEXT)` into an atomic (ARCHITECTURE.md
//! section 4: plain `extern "C"` hooks, not redhook).
//!
//! [`resolve`] looks every one up in the constructor, where `dlsym` may
//! allocate and lock; a hook's own path is one atomic load ([`Next::get`]):
//! no allocation, no lock, errno untouched, no panic. A definition that is
//! missing (or a hook that runs before the constructor) reads as `None`,
//! and each hook says what it does then.

use core::ffi::CStr;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicUsize, Ordering};

/// The next definition after libmosix's own of the libc function `name`,
/// whose C signature is `F` (an `unsafe extern "C" fn` type), so each hook
/// calls it typed and without an `unsafe` cast of its own.
pub(crate) struct Next<F> {
    /// The symbol, for `dlsym`.
    name: &'static CStr,
    /// Its address, 0 until resolved or if absent.
    addr: AtomicUsize,
    /// The signature the address is called with.
    sig: PhantomData<F>,
}

impl<F: Copy> Next<F> {
    /// An unresolved entry for `name`.
    ///
    /// # Safety
    /// `F` must be a function pointer type matching the C signature of
    /// libc's `name` (the promise [`Next::get`] relies on).
    pub(crate) const unsafe fn new(name: &'static CStr) -> Next<F> {
        const { assert!(size_of::<F>() == size_of::<usize>()) };
        Next {
            name,
            addr: AtomicUsize::new(0),
            sig: PhantomData,
        }
    }

    /// Look the definition up (constructor only: `dlsym` may allocate).
    fn resolve(&self) {
        // SAFETY: dlsym with a NUL-terminated name; NULL if absent.
        let f = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr()) };
        self.addr.store(f as usize, Ordering::Release);
    }

    /// The definition, or `None` if there is none (or the constructor has
    /// not run yet). Async-signal-safe: one atomic load.
    pub(crate) fn get(&self) -> Option<F> {
        let f = self.addr.load(Ordering::Acquire);
        if f == 0 {
            return None;
        }
        // SAFETY: `f` is the non-null address dlsym gave for `name`, and
        // `new`'s caller promised `F` is a pointer to a function of that
        // signature (pointer-sized, checked in `new`).
        Some(unsafe { core::mem::transmute_copy::<usize, F>(&f) })
    }
}

/// `sigaction`'s C signature.
pub(crate) type SigactionFn =
    unsafe extern "C" fn(i32, *const libc::sigaction, *mut libc::sigaction) -> i32;
/// `signal`'s C signature.
pub(crate) type SignalFn = unsafe extern "C" fn(i32, libc::sighandler_t) -> libc::sighandler_t;
/// `ioctl`'s, with one pointer-sized argument for its variadic tail.
pub(crate) type IoctlFn = unsafe extern "C" fn(i32, libc::c_ulong, *mut libc::c_void) -> i32;
/// `kill`'s C signature.
pub(crate) type KillFn = unsafe extern "C" fn(libc::pid_t, i32) -> i32;
/// `tcsetattr`'s C signature.
pub(crate) type TcsetattrFn = unsafe extern "C" fn(i32, i32, *const libc::termios) -> i32;
/// `fork`'s C signature.
pub(crate) type ForkFn = unsafe extern "C" fn() -> libc::pid_t;
/// The C signature of `posix_spawn` and `posix_spawnp`.
pub(crate) type SpawnFn = unsafe extern "C" fn(
    *mut libc::pid_t,
    *const libc::c_char,
    *const libc::posix_spawn_file_actions_t,
    *const libc::posix_spawnattr_t,
    *const *mut libc::c_char,
    *const *mut libc::c_char,
) -> i32;
/// `system`'s C signature.
pub(crate) type SystemFn = unsafe extern "C" fn(*const libc::c_char) -> i32;
/// `popen`'s C signature.
pub(crate) type PopenFn =
    unsafe extern "C" fn(*const libc::c_char, *const libc::c_char) -> *mut libc::FILE;
/// `pclose`'s C signature.
pub(crate) type PcloseFn = unsafe extern "C" fn(*mut libc::FILE) -> i32;

/// libc's `sigaction`: the hook's pass-through, and how libmosix installs
/// its own freeze handler ([`crate::hooks`]).
// SAFETY: SigactionFn is sigaction's C signature.
pub(crate) static SIGACTION: Next<SigactionFn> = unsafe { Next::new(c"sigaction") };
/// libc's `signal`, for every call the hook lets through.
// SAFETY: SignalFn is signal's C signature.
pub(crate) static SIGNAL: Next<SignalFn> = unsafe { Next::new(c"signal") };
/// libc's `ioctl`, for every request not forwarded home ([`crate::body`]).
// SAFETY: ioctl is variadic; on x86-64 a variadic callee reads its third
// argument from the same register as this fixed pointer argument.
pub(crate) static IOCTL: Next<IoctlFn> = unsafe { Next::new(c"ioctl") };
/// libc's `kill`, for a signal sent here ([`crate::family`]).
// SAFETY: KillFn is kill's C signature.
pub(crate) static KILL: Next<KillFn> = unsafe { Next::new(c"kill") };
/// libc's `tcsetattr`, for a terminal that is not relayed
/// ([`crate::body`]).
// SAFETY: TcsetattrFn is tcsetattr's C signature.
pub(crate) static TCSETATTR: Next<TcsetattrFn> = unsafe { Next::new(c"tcsetattr") };
/// libc's `fork` (with its fork handlers), under the `fork` hook
/// ([`crate::family`]).
// SAFETY: ForkFn is fork's C signature.
pub(crate) static FORK: Next<ForkFn> = unsafe { Next::new(c"fork") };
/// libc's `posix_spawn`, under the hook ([`crate::family`]).
// SAFETY: SpawnFn is posix_spawn's C signature.
pub(crate) static POSIX_SPAWN: Next<SpawnFn> = unsafe { Next::new(c"posix_spawn") };
/// libc's `posix_spawnp`, under the hook ([`crate::family`]).
// SAFETY: SpawnFn is posix_spawnp's C signature.
pub(crate) static POSIX_SPAWNP: Next<SpawnFn> = unsafe { Next::new(c"posix_spawnp") };
/// glibc's `system`, for calls outside a body ([`crate::shell`]).
// SAFETY: SystemFn is system's C signature.
pub(crate) static SYSTEM: Next<SystemFn> = unsafe { Next::new(c"system") };
/// glibc's `popen`, for calls outside a body ([`crate::shell`]).
// SAFETY: PopenFn is popen's C signature.
pub(crate) static POPEN: Next<PopenFn> = unsafe { Next::new(c"popen") };
/// glibc's `pclose`, for streams its own `popen` opened ([`crate::shell`]).
// SAFETY: PcloseFn is pclose's C signature.
pub(crate) static PCLOSE: Next<PcloseFn> = unsafe { Next::new(c"pclose") };

/// Look up every definition above (constructor only, before any hook can
/// need one).
pub(crate) fn resolve() {
    SIGACTION.resolve();
    SIGNAL.resolve();
    IOCTL.resolve();
    KILL.resolve();
    TCSETATTR.resolve();
    FORK.resolve();
    POSIX_SPAWN.resolve();
    POSIX_SPAWNP.resolve();
    SYSTEM.resolve();
    POPEN.resolve();
    PCLOSE.resolve();
}
