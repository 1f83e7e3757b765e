//! Small pieces both daemons need to stand up their local sockets.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use crate::control::{ControlRequest, ControlResponse};
use crate::local::{Credentials, peer_credentials, recv_local, send_local};

/// Why a daemon could not open its local socket.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// another daemon already listens at {0}: stop it first, or use another runtime_dir
    #[error("another daemon already listens at {0}: stop it first, or use another runtime_dir")]
    InUse(String),
    /// cannot create local socket {path}: {error}
    #[error("cannot create local socket {path}: {error}")]
    Io {
        /// The socket path.
        path: String,
        /// What the OS said (part of the message, so not a `source`).
        error: std::io::Error,
    },
}

/// Sets up the daemons' logging: to stderr (the service manager or
/// `mosix-local` keeps it), filtered by `RUST_LOG` (default `info`),
/// coloured only on a terminal.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Binds a Unix socket at `path` with `mode`, creating its directory and
/// replacing a stale socket file left by a daemon that died, but never one
/// a live daemon still serves.
pub fn bind_unix(path: &Path, mode: u32) -> Result<UnixListener, SocketError> {
    let io = |error| SocketError::Io {
        path: path.display().to_string(),
        error,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(SocketError::InUse(path.display().to_string()));
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    Ok(listener)
}

/// Serves a daemon's local command socket: one thread per client, each
/// request answered by `handler` with the caller's kernel-verified
/// credentials. A client that sends garbage gets an error answer and a
/// closed connection; one that stalls is dropped after `timeout`.
pub fn serve_control<H>(listener: UnixListener, timeout: std::time::Duration, handler: H)
where
    H: Fn(&Credentials, ControlRequest) -> ControlResponse + Send + Sync + 'static,
{
    let handler = std::sync::Arc::new(handler);
    for stream in listener.incoming() {
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept on control socket failed");
                continue;
            }
        };
        let handler = handler.clone();
        std::thread::spawn(move || {
            let creds = match peer_credentials(&stream) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot identify local client; closing");
                    return;
                }
            };
            let _ = stream.set_read_timeout(Some(timeout));
            let _ = stream.set_write_timeout(Some(timeout));
            loop {
                let req: ControlRequest = match recv_local(&mut stream) {
                    Ok(r) => r,
                    Err(e) if e.is_closed() => return,
                    Err(e) => {
                        tracing::warn!(pid = creds.pid, uid = creds.uid, error = %e,
                            "bad request on control socket; closing");
                        let _ = send_local(
                            &mut stream,
                            &ControlResponse::Error {
                                message: format!("bad request: {e}"),
                            },
                        );
                        return;
                    }
                };
                let resp = handler(&creds, req);
                if let Err(e) = send_local(&mut stream, &resp) {
                    tracing::debug!(error = %e, "control client went away");
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_stale_socket_but_not_live_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/d.sock");
        let first = bind_unix(&path, 0o666).unwrap();
        assert!(matches!(
            bind_unix(&path, 0o666),
            Err(SocketError::InUse(_))
        ));
        drop(first); // the file stays behind, as after a crash
        assert!(path.exists());
        let _second = bind_unix(&path, 0o600).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
