//! The freeze handler's last act when the body has left (DESIGN.md
//! section 3 step 5): `exec` `mosix-deputy` in place, so the home process
//! keeps its pid, parent, fds and cwd. Async-signal-safe: system calls and
//! stack buffers only.

use crate::layout::{DEPUTY_FAILED, DEPUTY_PATH_MAX};
use crate::sys;

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
    let name = b"mosix-deputy\0";
    let argv: [*const libc::c_char; 4] = [
        name.as_ptr().cast(),
        ctl_arg.as_ptr().cast(),
        list.as_ptr().cast(),
        core::ptr::null(),
    ];
    let envp: [*const libc::c_char; 1] = [core::ptr::null()];
    sys::execve(&path, &argv, &envp);
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
