//! Interposed libc functions: the program may not take the freeze signal
//! away from libmosix (ARCHITECTURE.md section 5, "the freeze signal must be one
//! the program does not use").
//!
//! Plain `#[unsafe(no_mangle)] extern "C"` definitions (not redhook, see
//! ARCHITECTURE.md section 4); the next definition is resolved once, eagerly, in
//! the constructor ([`resolve`]) with `dlsym(RTLD_NEXT)`. A managed
//! process that tries to install a handler for the freeze signal gets
//! EINVAL, as for a signal it may not catch; querying it, and every other
//! signal, goes through untouched. Forked children (unmanaged) are not
//! restricted.

use crate::ENGINE;
use core::sync::atomic::{AtomicUsize, Ordering};

static REAL_SIGACTION: AtomicUsize = AtomicUsize::new(0);
static REAL_SIGNAL: AtomicUsize = AtomicUsize::new(0);

type SigactionFn = unsafe extern "C" fn(i32, *const libc::sigaction, *mut libc::sigaction) -> i32;
type SignalFn = unsafe extern "C" fn(i32, libc::sighandler_t) -> libc::sighandler_t;

/// Resolve the real functions (constructor only).
pub(crate) fn resolve() {
    // SAFETY: dlsym with NUL-terminated names.
    let a = unsafe { libc::dlsym(libc::RTLD_NEXT, c"sigaction".as_ptr()) };
    REAL_SIGACTION.store(a as usize, Ordering::Release);
    // SAFETY: as above.
    let s = unsafe { libc::dlsym(libc::RTLD_NEXT, c"signal".as_ptr()) };
    REAL_SIGNAL.store(s as usize, Ordering::Release);
}

/// libc's own `sigaction`, for libmosix itself (constructor only, after
/// [`resolve`]).
pub(crate) fn real_sigaction(sig: i32, act: &libc::sigaction) -> bool {
    let f = REAL_SIGACTION.load(Ordering::Acquire);
    if f == 0 {
        return false;
    }
    // SAFETY: `f` is libc's sigaction, resolved by dlsym(RTLD_NEXT).
    let real: SigactionFn = unsafe { core::mem::transmute::<usize, SigactionFn>(f) };
    // SAFETY: a valid new action, no old one.
    unsafe { real(sig, act, core::ptr::null_mut()) == 0 }
}

/// Whether changing the action of `sig` must be refused.
fn protected(sig: i32) -> bool {
    let eng = ENGINE.get();
    // SAFETY: reading two words of ENGINE; they change only in the
    // constructor, at fork (in the child) and in the freeze handler, none
    // of which can run concurrently with this single-threaded caller.
    let e = unsafe { &*eng };
    e.ctl_fd >= 0 && sig == e.freeze_signal
}

/// `sigaction(2)`: refuses a new action for the freeze signal.
///
/// # Safety
/// Same contract as libc's `sigaction`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sigaction(
    sig: i32,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> i32 {
    if !act.is_null() && protected(sig) {
        crate::sys::set_errno(libc::EINVAL);
        return -1;
    }
    let f = REAL_SIGACTION.load(Ordering::Acquire);
    if f == 0 {
        crate::sys::set_errno(libc::ENOSYS);
        return -1;
    }
    // SAFETY: `f` is libc's sigaction, resolved by dlsym(RTLD_NEXT).
    let real: SigactionFn = unsafe { core::mem::transmute::<usize, SigactionFn>(f) };
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { real(sig, act, old) }
}

/// `signal(3)`: refuses a new handler for the freeze signal.
///
/// # Safety
/// Same contract as libc's `signal`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn signal(sig: i32, handler: libc::sighandler_t) -> libc::sighandler_t {
    if protected(sig) {
        crate::sys::set_errno(libc::EINVAL);
        return libc::SIG_ERR;
    }
    let f = REAL_SIGNAL.load(Ordering::Acquire);
    if f == 0 {
        crate::sys::set_errno(libc::ENOSYS);
        return libc::SIG_ERR;
    }
    // SAFETY: `f` is libc's signal, resolved by dlsym(RTLD_NEXT).
    let real: SignalFn = unsafe { core::mem::transmute::<usize, SignalFn>(f) };
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { real(sig, handler) }
}
