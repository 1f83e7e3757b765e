//! Talking to the local daemons over their Unix sockets.

use anyhow::{Context, Result, bail};
use mosix_proto::config::Config;
use mosix_proto::control::{ControlRequest, ControlResponse};
use mosix_proto::local::{recv_local, send_local};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// Which local daemon a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    /// The home daemon (processes started here).
    Homed,
    /// The remote daemon (cluster membership and load).
    Remoted,
}

impl Daemon {
    fn name(self) -> &'static str {
        match self {
            Daemon::Homed => "homed",
            Daemon::Remoted => "remoted",
        }
    }
}

/// How long a tool waits for a daemon's answer before giving up.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends one request to a local daemon and returns its answer. A daemon's
/// `Error` answer becomes an `Err` carrying its message.
pub fn request(config: &Config, daemon: Daemon, req: &ControlRequest) -> Result<ControlResponse> {
    request_with_timeout(config, daemon, req, DEFAULT_TIMEOUT)
}

/// [`request`] with an explicit timeout (checkpoints of large processes
/// take longer than status queries).
pub fn request_with_timeout(
    config: &Config,
    daemon: Daemon,
    req: &ControlRequest,
    timeout: Duration,
) -> Result<ControlResponse> {
    let path = match daemon {
        Daemon::Homed => config.homed_socket(),
        Daemon::Remoted => config.remoted_socket(),
    };
    let mut stream = UnixStream::connect(&path).with_context(|| {
        format!(
            "cannot reach {} at {} (is it running on this node? check its log, or pass \
             --config / MOSIX_CONFIG for another node)",
            daemon.name(),
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    send_local(&mut stream, req)
        .with_context(|| format!("cannot send request to {}", daemon.name()))?;
    let resp: ControlResponse = recv_local(&mut stream).with_context(|| {
        format!(
            "no valid answer from {} at {}",
            daemon.name(),
            path.display()
        )
    })?;
    if let ControlResponse::Error { message } = &resp {
        bail!("{}: {message}", daemon.name());
    }
    Ok(resp)
}
