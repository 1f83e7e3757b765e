//! The raw calls the migration's source side needs: whether an fd is a
//! terminal, and giving one back its input, through the process's own fd
//! at home.

use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

/// Whether `path` (a `/proc/PID/fd/N` link) is a terminal.
pub(super) fn is_tty(path: &str) -> bool {
    let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
    else {
        return false;
    };
    // tcgetattr(3) is the TCGETS ioctl, which only a terminal answers.
    nix::sys::termios::tcgetattr(&f).is_ok()
}

/// Put `data` back into the input queue of the terminal `path`
/// (TIOCSTI, which needs CAP_SYS_ADMIN: homed runs as root). Raw: nix
/// has no TIOCSTI.
pub(super) fn push_tty_input(path: &str, data: &[u8]) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)?;
    for b in data {
        // SAFETY: TIOCSTI reads one byte from the pointer we pass.
        if unsafe { libc::ioctl(f.as_raw_fd(), libc::TIOCSTI, b as *const u8) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
