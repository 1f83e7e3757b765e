//! Running under systemd: the readiness and reload notifications of
//! `Type=notify` (sd_notify's datagram to `$NOTIFY_SOCKET`, done here in
//! a few lines rather than with libsystemd), and SIGHUP for reloading.
//! Without `$NOTIFY_SOCKET` (started by hand, or by `mosix-local`) the
//! notifications do nothing.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends one sd_notify message (`READY=1`, `RELOADING=1`, `STATUS=...`,
/// lines joined by `\n`) to the service manager; `Ok(false)` when there
/// is none to tell.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let path = path.into_encoded_bytes();
    let addr = match path.strip_prefix(b"@") {
        // An abstract socket: '@' stands for the leading NUL.
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(&path))?,
    };
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(true)
}

/// Tells the service manager the daemon now serves (`READY=1`), with a
/// one-line status; a failure is logged, never fatal.
pub fn ready(status: &str) {
    report(notify(&format!("READY=1\nSTATUS={status}")));
}

/// Tells the service manager a reload has begun (`RELOADING=1`, with the
/// monotonic time systemd asks for); follow it with [`ready`].
pub fn reloading() {
    let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
        .unwrap_or(0);
    report(notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}")));
}

fn report(r: io::Result<bool>) {
    if let Err(e) = r {
        tracing::warn!(error = %e, "cannot notify the service manager ($NOTIFY_SOCKET)");
    }
}

/// Calls `reload` in a thread of its own each time the process gets
/// SIGHUP (`systemctl reload`). The handler is reset in programs the
/// daemon starts (exec resets caught signals), so they keep the default.
pub fn on_hangup(mut reload: impl FnMut() + Send + 'static) -> io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([libc::SIGHUP])?;
    std::thread::Builder::new()
        .name("reload".into())
        .spawn(move || {
            for _ in signals.forever() {
                reloading();
                reload();
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifies_a_datagram_socket_named_by_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        // SAFETY: not a concern here: this test is the only one that
        // touches NOTIFY_SOCKET, and nothing else reads it in this binary.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        assert!(notify("READY=1\nSTATUS=serving").unwrap());
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");
        // SAFETY: as above.
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        assert!(!notify("READY=1").unwrap());
    }
}
