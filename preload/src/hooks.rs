//! Interposed libc functions: the program may not take the freeze signal
//! away from libmosix (ARCHITECTURE.md section 5, "the freeze signal must be one
//! the program does not use").
//!
//! Plain `#[unsafe(no_mangle)] extern "C"` definitions (not redhook, see
//! ARCHITECTURE.md section 4); the next definition is resolved once, eagerly, in
//! the constructor with `dlsym(RTLD_NEXT)` ([`crate::real`]). A managed
//! process that tries to install a handler for the freeze signal gets
//! EINVAL, as for a signal it may not catch; querying it, and every other
//! signal, goes through untouched. Forked children (unmanaged) are not
//! restricted. libmosix installs its own freeze handler here too
//! ([`install_handler`]), past the hook.

use crate::{ENGINE, real};

/// Install `handler` on `sig` with SA_SIGINFO | SA_RESTART and every signal
/// blocked while it runs (constructor only, after [`real::resolve`]): the
/// freeze handler, through libc's own `sigaction`, which the hook below
/// would refuse for the freeze signal.
pub(crate) fn install_handler(
    sig: i32,
    handler: extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void),
) -> bool {
    // SAFETY: a zeroed sigaction is a valid initial value.
    let mut sa: libc::sigaction = unsafe { core::mem::zeroed() };
    sa.sa_sigaction = handler as usize;
    sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
    // SAFETY: `sa.sa_mask` is a valid sigset_t.
    unsafe { libc::sigfillset(&mut sa.sa_mask) };
    real_sigaction(sig, &sa)
}

/// libc's own `sigaction`, for libmosix itself.
fn real_sigaction(sig: i32, act: &libc::sigaction) -> bool {
    let Some(real) = real::SIGACTION.get() else {
        return false;
    };
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
    let Some(real) = real::SIGACTION.get() else {
        crate::sys::set_errno(libc::ENOSYS);
        return -1;
    };
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
    let Some(real) = real::SIGNAL.get() else {
        crate::sys::set_errno(libc::ENOSYS);
        return libc::SIG_ERR;
    };
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe { real(sig, handler) }
}
