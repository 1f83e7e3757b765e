//! Terminal requests of a body away, done by its deputy on the real
//! terminal at home (ARCHITECTURE.md section 4, "tty and socket control"; the
//! body's side is `preload/src/body.rs`, the record `layout::CALL_TTY`).
//!
//! The deputy holds the process's own fds, so each request is the same
//! ioctl on the same fd number the body used: `tcsetattr` in a body sets
//! the user's terminal, and `tcgetattr` or `TIOCGWINSZ` read it now (a
//! window resized at home is seen). A `TCSETSW`/`TCSETSF`/`TCSBRK` waits
//! for the terminal's output to drain, as at home; the body's host has
//! sent everything the body wrote before the call, and the deputy writes
//! messages in order, so that output is in the terminal by then.
//!
//! A request from a background group stops the deputy with SIGTTOU as
//! it would stop the process at home; the deputy's stop stops the body,
//! and the request is done once the job is continued.

use mosix_engine::image::layout::{KTERMIOS_LEN, WINSIZE_LEN};
use mosix_proto::migrate::{CallReply, Termios, TtyOp, Winsize};
use std::os::fd::RawFd;

/// Do `op` on our own terminal `fd`; the answer for the body.
pub fn serve(fd: RawFd, op: TtyOp) -> CallReply {
    let result = match op {
        TtyOp::GetAttr => {
            let mut k = [0u8; KTERMIOS_LEN];
            sys::ioctl_buf(fd, libc::TCGETS, &mut k).map(|()| CallReply::Termios {
                termios: Termios::from_bytes(&k).unwrap_or_default(),
            })
        }
        TtyOp::SetAttr { when, termios } => {
            let mut k = termios.to_bytes();
            sys::ioctl_buf(fd, when.request(), &mut k).map(|()| ok())
        }
        TtyOp::GetWinsize => {
            let mut w = [0u8; WINSIZE_LEN];
            sys::ioctl_buf(fd, libc::TIOCGWINSZ, &mut w).map(|()| CallReply::Winsize {
                winsize: Winsize::from_bytes(&w).unwrap_or_default(),
            })
        }
        TtyOp::SetWinsize { winsize } => {
            let mut w = winsize.to_bytes();
            sys::ioctl_buf(fd, libc::TIOCSWINSZ, &mut w).map(|()| ok())
        }
        TtyOp::GetPgrp => {
            let mut p = [0u8; 4];
            sys::ioctl_buf(fd, libc::TIOCGPGRP, &mut p).map(|()| CallReply::Value {
                value: i64::from(i32::from_ne_bytes(p)),
            })
        }
        TtyOp::SetPgrp { pgrp } => {
            let mut p = pgrp.to_ne_bytes();
            sys::ioctl_buf(fd, libc::TIOCSPGRP, &mut p).map(|()| ok())
        }
        TtyOp::Flush { queue } => sys::ioctl_int(fd, libc::TCFLSH, queue).map(|()| ok()),
        TtyOp::Break { arg } => sys::ioctl_int(fd, libc::TCSBRK, arg).map(|()| ok()),
    };
    result.unwrap_or_else(|errno| CallReply::Errno { errno })
}

fn ok() -> CallReply {
    CallReply::Value { value: 0 }
}

/// The raw ioctls.
mod sys {
    use std::os::fd::RawFd;

    fn errno() -> i32 {
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    }

    /// `ioctl(fd, request, buf)` for a request that reads or fills a
    /// structure of exactly `buf.len()` bytes; retried on EINTR.
    pub(super) fn ioctl_buf(fd: RawFd, request: libc::c_ulong, buf: &mut [u8]) -> Result<(), i32> {
        loop {
            // SAFETY: every request passed here reads or writes a
            // structure of `buf.len()` bytes (the callers pair them), in a
            // buffer we own; on a non-terminal fd it fails with ENOTTY.
            if unsafe { libc::ioctl(fd, request, buf.as_mut_ptr()) } == 0 {
                return Ok(());
            }
            match errno() {
                libc::EINTR => continue,
                e => return Err(e),
            }
        }
    }

    /// `ioctl(fd, request, arg)` for a request with an integer argument.
    pub(super) fn ioctl_int(fd: RawFd, request: libc::c_ulong, arg: i32) -> Result<(), i32> {
        loop {
            // SAFETY: TCFLSH and TCSBRK take an integer, no memory.
            if unsafe { libc::ioctl(fd, request, libc::c_long::from(arg)) } == 0 {
                return Ok(());
            }
            match errno() {
                libc::EINTR => continue,
                e => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mosix_proto::migrate::SetWhen;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    fn pty() -> nix::pty::OpenptyResult {
        let ws = nix::pty::Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        nix::pty::openpty(Some(&ws), None).unwrap()
    }

    fn attr(fd: RawFd) -> Termios {
        match serve(fd, TtyOp::GetAttr) {
            CallReply::Termios { termios } => termios,
            other => panic!("tcgetattr: {other:?}"),
        }
    }

    #[test]
    fn settings_set_away_reach_the_terminal() {
        let p = pty();
        let fd = p.slave.as_raw_fd();
        let mut t = attr(fd);
        assert_ne!(t.lflag & libc::ECHO, 0, "a new pty echoes");
        t.lflag &= !(libc::ECHO | libc::ICANON);
        for when in [SetWhen::Now, SetWhen::Drain, SetWhen::Flush] {
            assert_eq!(
                serve(fd, TtyOp::SetAttr { when, termios: t }),
                CallReply::Value { value: 0 }
            );
        }
        // The terminal itself has it, as seen from its other side too.
        let seen = nix::sys::termios::tcgetattr(&p.slave).unwrap();
        assert!(!seen.local_flags.intersects(
            nix::sys::termios::LocalFlags::ECHO | nix::sys::termios::LocalFlags::ICANON
        ));
        assert_eq!(attr(fd), t);
    }

    #[test]
    fn the_size_is_read_now() {
        let p = pty();
        let fd = p.slave.as_raw_fd();
        assert_eq!(
            serve(fd, TtyOp::GetWinsize),
            CallReply::Winsize {
                winsize: Winsize {
                    rows: 24,
                    cols: 80,
                    xpixel: 0,
                    ypixel: 0
                }
            }
        );
        let w = Winsize {
            rows: 50,
            cols: 132,
            xpixel: 0,
            ypixel: 0,
        };
        assert_eq!(
            serve(fd, TtyOp::SetWinsize { winsize: w }),
            CallReply::Value { value: 0 }
        );
        assert_eq!(
            serve(fd, TtyOp::GetWinsize),
            CallReply::Winsize { winsize: w }
        );
    }

    #[test]
    fn a_flush_drops_typed_input() {
        let p = pty();
        let fd = p.slave.as_raw_fd();
        let mut t = attr(fd);
        t.lflag &= !libc::ICANON;
        serve(
            fd,
            TtyOp::SetAttr {
                when: SetWhen::Now,
                termios: t,
            },
        );
        let mut master = std::fs::File::from(p.master);
        master.write_all(b"old").unwrap();
        // Wait until the terminal has it, then flush it.
        let mut n = 0;
        for _ in 0..200 {
            // SAFETY: FIONREAD writes an int we own.
            unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
            if n == 3 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(n, 3);
        assert_eq!(
            serve(
                fd,
                TtyOp::Flush {
                    queue: libc::TCIFLUSH
                }
            ),
            CallReply::Value { value: 0 }
        );
        master.write_all(b"new").unwrap();
        let mut slave = std::fs::File::from(p.slave);
        let mut buf = [0u8; 8];
        let got = slave.read(&mut buf).unwrap();
        assert_eq!(&buf[..got], b"new");
    }

    #[test]
    fn a_non_terminal_says_enotty() {
        let (r, _w) = nix::unistd::pipe().unwrap();
        assert_eq!(
            serve(r.as_raw_fd(), TtyOp::GetAttr),
            CallReply::Errno {
                errno: libc::ENOTTY
            }
        );
        assert_eq!(
            serve(r.as_raw_fd(), TtyOp::Break { arg: 1 }),
            CallReply::Errno {
                errno: libc::ENOTTY
            }
        );
    }
}
