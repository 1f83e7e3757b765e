//! The freeze handler's last act when the body has left (ARCHITECTURE.md
//! section 3 step 5): `exec` `mosix-deputy` in place, so the home process
//! keeps its pid, parent, fds and cwd. Async-signal-safe: system calls and
//! stack buffers only.

use crate::layout::{DEPUTY_ARGS_MAX, DEPUTY_ARGV_MAX, DEPUTY_FAILED, DEPUTY_PATH_MAX};
use crate::state::Global;
use crate::sys;

/// The program's command line, NUL-separated, as homed sent it (static:
/// the handler must not allocate, and its stack may be small).
static ARGV: Global<[u8; DEPUTY_ARGV_MAX + 1]> = Global::new([0; DEPUTY_ARGV_MAX + 1]);
/// Pointers into [`ARGV`], NULL-terminated.
static ARGP: Global<[*const libc::c_char; DEPUTY_ARGS_MAX + 1]> =
    Global::new([core::ptr::null(); DEPUTY_ARGS_MAX + 1]);

/// Highest fd number whose FD_CLOEXEC is cleared and remembered.
const MAX_FD: i32 = 1024;

/// Read the deputy's path from `ctl`, clear FD_CLOEXEC on every fd
/// (passing the list of those that had it to the deputy, so the process
/// can get it back when it comes home) and `exec` it. Returns only if that
/// failed, after telling homed so; the process then runs on at home.
pub(crate) fn become_deputy(ctl: i32) {
    let mut path = [0u8; DEPUTY_PATH_MAX + 1];
    let len = match sys::read_u32(ctl) {
        Some(n) if (n as usize) < DEPUTY_PATH_MAX => n as usize,
        _ => return fail(ctl, &[]),
    };
    if !sys::read_exact(ctl, &mut path[..len]) {
        return fail(ctl, &[]);
    }
    path[len] = 0;
    let argv_len = match sys::read_u32(ctl) {
        Some(n) if (n as usize) <= DEPUTY_ARGV_MAX => n as usize,
        _ => return fail(ctl, &[]),
    };
    // SAFETY: only the freeze handler (every signal blocked, one thread)
    // touches ARGV.
    let args = unsafe { &mut *ARGV.get() };
    // SAFETY: as for ARGV.
    let ptrs = unsafe { &mut *ARGP.get() };
    if !sys::read_exact(ctl, &mut args[..argv_len]) {
        return fail(ctl, &[]);
    }
    args[argv_len] = 0;
    // "CTL" and "fd,fd,..." as NUL-terminated decimal strings.
    let mut ctl_arg = [0u8; 16];
    let n = fmt_i32(ctl, &mut ctl_arg);
    ctl_arg[n] = 0;
    let mut list = [0u8; 4096];
    let mut at = 0usize;
    let mut changed = [0i32; 256];
    let mut n_changed = 0usize;
    for fd in 0..MAX_FD {
        let flags = sys::get_fd_flags(fd);
        if flags < 0 || flags & libc::FD_CLOEXEC == 0 {
            continue;
        }
        if !sys::set_fd_flags(fd, flags & !libc::FD_CLOEXEC) {
            continue;
        }
        if n_changed < changed.len() {
            changed[n_changed] = fd;
            n_changed += 1;
        }
        if fd != ctl && at + 12 < list.len() {
            if at > 0 {
                list[at] = b',';
                at += 1;
            }
            at += fmt_i32(fd, &mut list[at..]);
        }
    }
    list[at] = 0;
    // The deputy learns its control fd and the close-on-exec list from
    // its environment; its argv is the program's own, for ps.
    let mut env = [0u8; 4096 + 32];
    let prefix = b"MOSIX_DEPUTY=";
    let mut e = prefix.len();
    env[..e].copy_from_slice(prefix);
    let c = ctl_arg.iter().position(|&b| b == 0).unwrap_or(0);
    env[e..e + c].copy_from_slice(&ctl_arg[..c]);
    e += c;
    env[e] = b':';
    e += 1;
    env[e..e + at].copy_from_slice(&list[..at]);
    e += at;
    env[e] = 0;
    let name = b"mosix-deputy\0";
    let mut n = 0;
    let mut start = 0;
    for i in 0..argv_len {
        if args[i] == 0 {
            if n < DEPUTY_ARGS_MAX {
                ptrs[n] = args[start..].as_ptr().cast();
                n += 1;
            }
            start = i + 1;
        }
    }
    if n == 0 {
        ptrs[0] = name.as_ptr().cast();
        n = 1;
    }
    ptrs[n] = core::ptr::null();
    let envp: [*const libc::c_char; 2] = [env.as_ptr().cast(), core::ptr::null()];
    sys::execve(&path, &ptrs[..=n], &envp);
    fail(ctl, &changed[..n_changed]);
}

/// Put FD_CLOEXEC back where it was and tell homed the exec failed.
fn fail(ctl: i32, changed: &[i32]) {
    for &fd in changed {
        let flags = sys::get_fd_flags(fd);
        if flags >= 0 {
            sys::set_fd_flags(fd, flags | libc::FD_CLOEXEC);
        }
    }
    sys::send_all(ctl, &DEPUTY_FAILED.to_le_bytes());
}

/// Decimal digits of a non-negative `v` into `out`; returns their count.
fn fmt_i32(v: i32, out: &mut [u8]) -> usize {
    let mut tmp = [0u8; 12];
    let mut i = tmp.len();
    let mut v = v.max(0) as u32;
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let n = tmp.len() - i;
    out[..n].copy_from_slice(&tmp[i..]);
    n
}

#[cfg(test)]
mod tests {
    use super::fmt_i32;

    #[test]
    fn formats_decimal() {
        let mut b = [0u8; 12];
        let n = fmt_i32(0, &mut b);
        assert_eq!(&b[..n], b"0");
        let n = fmt_i32(1003, &mut b);
        assert_eq!(&b[..n], b"1003");
    }
}
