//! The one unsafe piece of `mosix-local`: what a child does between `fork`
//! and `exec` to enter a node (cgroups, network and mount namespaces,
//! session, working directory).
//!
//! Everything the child needs is opened or allocated by the parent before
//! the fork, so the child only makes async-signal-safe system calls.

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};

/// What a child must enter before it runs its program. Built by the parent.
#[derive(Debug, Default)]
pub struct NodeEntry {
    /// Opened `cgroup.procs` files of the node's cgroups (one per hierarchy).
    pub cgroup_procs: Vec<OwnedFd>,
    /// The node's network namespace (`/run/netns/<name>`).
    pub netns: Option<OwnedFd>,
    /// The node's mount namespace (`<dir>/<node>/mnt.ns`).
    pub mntns: Option<OwnedFd>,
    /// The node's time namespace (`<dir>/<node>/time.ns`), if its clocks
    /// differ from the machine's (`up --clock-step`).
    pub timens: Option<OwnedFd>,
    /// Directory to change to after entering the mount namespace (which
    /// resets it to `/`); if it does not exist there, `/` is kept.
    pub cwd: Option<CString>,
    /// Start a new session (daemons), detaching from the terminal.
    pub setsid: bool,
}

/// Make `cmd`'s child enter `entry` before it executes its program.
/// A failure is reported by `spawn` as an `io::Error`.
pub fn enter_on_spawn(cmd: &mut Command, entry: NodeEntry) {
    let empty = SigSet::empty();
    let hook = move || -> std::io::Result<()> {
        // The parent may block signals it reads from a signalfd (exec);
        // the program must start with none blocked.
        pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&empty), None)?;
        // Cgroups first: the files were opened in the parent's mount
        // namespace, and the child is charged from its first instruction on.
        for fd in &entry.cgroup_procs {
            // "0" means the writing process itself.
            nix::unistd::write(fd, b"0")?;
        }
        if let Some(fd) = &entry.netns {
            setns(fd, CloneFlags::CLONE_NEWNET)?;
        }
        if let Some(fd) = &entry.mntns {
            setns(fd, CloneFlags::CLONE_NEWNS)?;
        }
        if let Some(fd) = &entry.timens {
            // A single-threaded child moves into it at once.
            setns(fd, CloneFlags::from_bits_retain(libc::CLONE_NEWTIME))?;
        }
        if let Some(dir) = &entry.cwd {
            // Best effort by design: the directory may not exist in the node.
            let _ = nix::unistd::chdir(dir.as_c_str());
        }
        if entry.setsid {
            nix::unistd::setsid()?;
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child of this process, before
    // exec. It only calls sigprocmask(2), write(2), setns(2), chdir(2) and
    // setsid(2), which are async-signal-safe, on file descriptors, a signal
    // set and a C string prepared by the parent; it allocates nothing, takes
    // no lock and does not touch state shared with other threads.
    unsafe {
        cmd.pre_exec(hook);
    }
}
