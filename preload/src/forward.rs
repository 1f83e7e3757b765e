//! A body's forwarded calls to its deputy (ARCHITECTURE.md section 4: identity,
//! terminal control and the process tree are answered at home), and where
//! its control socket is for the program it `exec`s next. Both
//! [`crate::body`] and [`crate::family`] ask through here; this module
//! uses neither.
//!
//! **Forwarded calls.** [`call`] writes a [`CallRecord`] on the body's
//! control socket and blocks for the [`ReplyRecord`]; the host passes it
//! over the link to `homed`, which asks the deputy. Every signal is
//! blocked during the exchange (a handler that calls `waitpid` must not
//! start a second conversation inside the first); when the host answers
//! "busy" (it is freezing the body), the mask is restored so the pending
//! freeze signal runs the freeze handler, and the call is asked again.
//!
//! **The control socket across exec.** [`publish_ctl`] keeps
//! `MOSIX_BODY_CTL=FD:PID` (fixed width, rewritten in place, never
//! reallocated) current whenever the process becomes a body or stops
//! being one; a new program's constructor finds its socket there
//! ([`inherited_ctl`]). The `execve` and spawn hooks that pass the entry on
//! are in [`crate::family`].

use crate::layout::{self, CALL_MAGIC, CallRecord, REPLY_BUSY, REPLY_MAGIC, ReplyRecord};
use crate::state::Global;
use crate::{ENGINE, facts, sys};

/// `MOSIX_BODY_CTL=` with its fixed-width value: 7 characters of fd, a
/// colon, 10 of pid.
pub(crate) const CTL_ENV: &[u8] = b"MOSIX_BODY_CTL=";
/// Width of the value.
pub(crate) const CTL_VALUE_LEN: usize = 18;

/// The value for control fd `fd` of process `pid`, right-aligned.
pub(crate) fn format_ctl(fd: i32, pid: i32, out: &mut [u8; CTL_VALUE_LEN]) {
    fn put(v: i64, out: &mut [u8]) {
        out.fill(b' ');
        let neg = v < 0;
        let mut v = v.unsigned_abs();
        let mut i = out.len();
        loop {
            i -= 1;
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 || i == 0 {
                break;
            }
        }
        if neg && i > 0 {
            out[i - 1] = b'-';
        }
    }
    put(fd as i64, &mut out[..7]);
    out[7] = b':';
    put(pid as i64, &mut out[8..]);
}

/// `(fd, pid)` from a value; None if it is not one (or names no fd).
fn parse_ctl(v: &[u8]) -> Option<(i32, i32)> {
    fn num(b: &[u8]) -> Option<i64> {
        let b = b.trim_ascii();
        let (neg, digits) = match b.first() {
            Some(b'-') => (true, &b[1..]),
            _ => (false, b),
        };
        if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let v = digits
            .iter()
            .fold(0i64, |a, d| a * 10 + i64::from(d - b'0'));
        Some(if neg { -v } else { v })
    }
    let colon = v.iter().position(|&c| c == b':')?;
    let fd = i32::try_from(num(&v[..colon])?).ok()?;
    let pid = i32::try_from(num(&v[colon + 1..])?).ok()?;
    (fd >= 0 && pid >= 0).then_some((fd, pid))
}

/// `MOSIX_BODY_CTL=VALUE\0`, kept current, for the `execve` hook (set
/// whenever the process becomes a body; used only then).
static CTL_ENTRY: Global<[u8; 15 + CTL_VALUE_LEN + 1]> = Global::new([0; 15 + CTL_VALUE_LEN + 1]);

/// `MOSIX_BODY_CTL=VALUE\0` as last published ([`publish_ctl`]), for the
/// environment the `execve` and spawn hooks pass on (static storage, so
/// it outlives the call).
pub(crate) fn ctl_entry() -> *const libc::c_char {
    CTL_ENTRY.get().cast::<libc::c_char>()
}
/// Record where the control socket is (fd -1: none), in the environment
/// (in place) and for the `execve` hook.
pub(crate) fn publish_ctl(fd: i32, pid: i32) {
    let mut v = [0u8; CTL_VALUE_LEN];
    format_ctl(fd, pid, &mut v);
    // SAFETY: changed only with all signals blocked or before main.
    let e = unsafe { &mut *CTL_ENTRY.get() };
    e[..15].copy_from_slice(CTL_ENV);
    e[15..15 + CTL_VALUE_LEN].copy_from_slice(&v);
    e[15 + CTL_VALUE_LEN] = 0;
    if let Some((p, len)) = sys::env_value_mut(CTL_ENV)
        && len == CTL_VALUE_LEN
    {
        // SAFETY: the environment string's value has exactly this length.
        unsafe { core::ptr::copy_nonoverlapping(v.as_ptr(), p, CTL_VALUE_LEN) };
    }
}

/// The control socket of a body's new program named by the environment:
/// `Some(fd)` to take, `Err(fd)` one inherited from another process
/// (close it and run unmanaged), `None` for none.
pub(crate) fn inherited_ctl() -> Option<Result<i32, i32>> {
    let (p, len) = sys::env_value_mut(CTL_ENV)?;
    // SAFETY: the value's bytes, inside the environment string.
    let v = unsafe { core::slice::from_raw_parts(p, len) };
    let (fd, pid) = parse_ctl(v)?;
    if !sys::is_socket(fd) {
        return None;
    }
    Some(if pid == 0 || pid == sys::getpid() {
        Ok(fd)
    } else {
        Err(fd)
    })
}

/// The control fd while this process is a body, else -1: the socket the
/// calls go over (and the fd the `close` hooks keep open).
pub(crate) fn ctl() -> i32 {
    if facts::is_away() {
        // SAFETY: one word of ENGINE, changed only by the constructor, the
        // freeze handler and a fork's child, never during a hook.
        unsafe { (*ENGINE.get()).ctl_fd }
    } else {
        -1
    }
}

/// Ask the deputy: `Ok((value, passed fd or -1))` or `Err(errno)`.
pub(crate) fn call(op: u32, args: [i64; 3]) -> Result<(i64, i32), i32> {
    call_with(op, args, &[], &mut []).map(|(v, fd, _)| (v, fd))
}

/// Ask the deputy with `input` after the record (at most
/// `CALL_PAYLOAD_MAX` bytes) and the reply's payload copied into `output`:
/// `Ok((value, passed fd or -1, payload length))` or `Err(errno)`. A
/// reply payload longer than `output` is read and cut (EIO).
/// Async-signal-safe: stack buffers only.
pub(crate) fn call_with(
    op: u32,
    args: [i64; 3],
    input: &[u8],
    output: &mut [u8],
) -> Result<(i64, i32, usize), i32> {
    const REC: usize = size_of::<CallRecord>();
    const MAX: usize = layout::CALL_PAYLOAD_MAX as usize;
    if input.len() > MAX {
        return Err(libc::EINVAL);
    }
    let rec = CallRecord {
        magic: CALL_MAGIC,
        op,
        len: input.len() as u32,
        args,
    };
    // Record and payload in one write, so the host never sees half.
    let mut msg = [0u8; REC + MAX];
    msg[..REC].copy_from_slice(sys::as_bytes(&rec));
    msg[REC..REC + input.len()].copy_from_slice(input);
    let msg = &msg[..REC + input.len()];
    loop {
        let fd = ctl();
        if fd < 0 {
            return Err(libc::ENOSYS);
        }
        let old = sys::block_all_signals();
        let mut reply = ReplyRecord::default();
        let mut passed = -1;
        let mut payload = [0u8; MAX];
        let ok = sys::send_all(fd, msg)
            // SAFETY: ReplyRecord is plain repr(C) data; any bytes are valid.
            && sys::recv_exact_fd(fd, unsafe { bytes_mut(&mut reply) }, &mut passed)
            && reply.len as usize <= MAX
            && sys::read_exact(fd, &mut payload[..reply.len as usize]);
        // A pending freeze signal runs its handler here.
        sys::set_sigmask(old);
        if !ok || reply.magic != REPLY_MAGIC || reply.op != op {
            if passed >= 0 {
                sys::close(passed);
            }
            return Err(libc::EIO);
        }
        match reply.errno {
            0 => {
                let n = reply.len as usize;
                if n > output.len() {
                    if passed >= 0 {
                        sys::close(passed);
                    }
                    return Err(libc::EIO);
                }
                output[..n].copy_from_slice(&payload[..n]);
                return Ok((reply.value, passed, n));
            }
            REPLY_BUSY => continue,
            e => {
                if passed >= 0 {
                    sys::close(passed);
                }
                return Err(e);
            }
        }
    }
}

/// The bytes of a plain record, writable.
///
/// # Safety
/// `T` must be plain data for which every byte pattern is valid.
unsafe fn bytes_mut<T>(v: &mut T) -> &mut [u8] {
    // SAFETY: the caller guarantees any bytes are a valid `T`.
    unsafe { core::slice::from_raw_parts_mut((v as *mut T).cast::<u8>(), size_of::<T>()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctl_value_round_trips_at_fixed_width() {
        let mut v = [0u8; CTL_VALUE_LEN];
        format_ctl(1000, 4_194_304, &mut v);
        assert_eq!(&v, b"   1000:   4194304");
        assert_eq!(parse_ctl(&v), Some((1000, 4_194_304)));
        format_ctl(-1, 0, &mut v);
        assert_eq!(&v, b"     -1:         0");
        // No fd: not a control socket.
        assert_eq!(parse_ctl(&v), None);
        format_ctl(3, i32::MAX, &mut v);
        assert_eq!(parse_ctl(&v), Some((3, i32::MAX)));
    }

    #[test]
    fn bad_ctl_values_are_none() {
        for v in [
            &b""[..],
            b"1000",
            b":5",
            b"x:5",
            b"5:y",
            b"99999999999:1",
            b"1:99999999999",
            b"1:-5",
            b"1 2:3",
        ] {
            assert_eq!(parse_ctl(v), None, "{:?}", core::str::from_utf8(v));
        }
    }
}
