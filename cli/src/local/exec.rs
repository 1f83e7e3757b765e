//! `mosix-local exec NODE -- CMD...`: run a command inside a node and exit
//! the way it did.

use anyhow::{Context, Result, bail};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::path::Path;

use super::{Cluster, require_root};

/// Signals passed on to the command when another process sends them to
/// `mosix-local` (a terminal sends SIGINT and SIGQUIT to the command too,
/// so those coming from the terminal are not sent twice).
const FORWARDED: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Exit code a shell gives for a command ended by signal `sig`.
pub fn code_for_signal(sig: i32) -> i32 {
    128 + sig
}

/// Run `cmd` inside `node` of the cluster in `dir`, standard streams
/// inherited; returns the code to exit with (the command's, or 128+signal).
pub fn exec(dir: &Path, node: &str, cmd: &[OsString]) -> Result<i32> {
    require_root("exec")?;
    let Some((program, args)) = cmd.split_first() else {
        bail!("no command given: use `mosix-local exec {node} -- CMD [ARGS...]`");
    };
    let cluster = Cluster::open(dir)?.with_context(|| {
        format!(
            "no cluster in {}: start one with `mosix-local up --dir {0} --nodes N`",
            dir.display()
        )
    })?;
    let mut command = cluster.node_command(node, Path::new(program), false)?;
    command.args(args);

    // Block the signals before the child exists, so none is lost between
    // its start and our first read; the child starts with an empty mask.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    for s in FORWARDED {
        mask.add(s);
    }
    mask.thread_block().context("cannot block signals")?;
    let sfd =
        SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC).context("cannot create a signalfd")?;

    let mut child = command.spawn().with_context(|| {
        format!(
            "cannot run {} in {node} (is it installed, and in PATH inside the node?)",
            Path::new(program).display()
        )
    })?;
    let pid = Pid::from_raw(child.id() as i32);
    let status = loop {
        if let Some(st) = child.try_wait().context("cannot wait for the command")? {
            break st;
        }
        let Some(info) = sfd.read_signal().context("cannot read signals")? else {
            continue;
        };
        let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
            continue;
        };
        // si_code <= 0 (SI_USER, SI_QUEUE, SI_TKILL): sent by a process.
        if sig != Signal::SIGCHLD && info.ssi_code <= 0 {
            let _ = kill(pid, sig);
        }
    };
    let _ = mask.thread_unblock();
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => code_for_signal(sig),
        (None, None) => 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_codes_follow_the_shell() {
        assert_eq!(code_for_signal(9), 137);
        assert_eq!(code_for_signal(15), 143);
    }
}
