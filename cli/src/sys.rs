//! The few raw calls the command-line tools make themselves.

/// Lets a tool whose output goes into a closed pipe (`mosps | head`) end
/// quietly, killed by SIGPIPE like a C tool, instead of panicking in
/// `println!` (the Rust runtime ignores SIGPIPE). Call first thing in
/// `main`. A program `mosrun` execs gets the default disposition either way.
pub fn default_sigpipe() {
    // SAFETY: SIG_DFL installs no handler, so no code of ours ever runs in
    // signal context; this runs at the start of main, before any thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Starts a detached helper: forks twice, so the helper is no child of
/// this process (a program `mosrun` then execs never sees it in `wait`).
/// Returns true in the helper, whose stdin and stdout are /dev/null (it
/// must not hold a pipe of the program's open), false in the caller once
/// the intermediate child is reaped. Call only while single-threaded.
pub fn spawn_detached() -> std::io::Result<bool> {
    // SAFETY: the caller is single-threaded (documented above), so the
    // child may run any code; the intermediate child only forks and _exits.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if child == 0 {
        // SAFETY: as above; _exit runs no destructors or atexit handlers.
        let grandchild = unsafe { libc::fork() };
        if grandchild != 0 {
            // SAFETY: ends the intermediate child at once.
            unsafe { libc::_exit(0) };
        }
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")?;
        use std::os::fd::AsRawFd;
        for fd in [0, 1] {
            // SAFETY: dup2 onto our own standard fds from a valid open fd.
            if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        return Ok(true);
    }
    let mut status = 0;
    // SAFETY: reaps the intermediate child just forked; status is ours.
    if unsafe { libc::waitpid(child, &mut status, 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(false)
}

/// Become user `uid` with group `gid` for good (real, effective and saved
/// ids), with `user`'s supplementary groups if it has a passwd entry
/// (`Some(name)`), else none. Only root can; the caller must be
/// single-threaded.
pub fn become_user(uid: u32, gid: u32, user: Option<&std::ffi::CStr>) -> nix::Result<()> {
    use nix::unistd::{Gid, Uid};
    let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
    match user {
        Some(name) => nix::unistd::initgroups(name, gid)?,
        None => nix::unistd::setgroups(&[])?,
    }
    nix::unistd::setresgid(gid, gid, gid)?;
    nix::unistd::setresuid(uid, uid, uid)?;
    // Dropped for good: root cannot be had back.
    if nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).is_ok()
        && !uid.is_root()
    {
        return Err(nix::errno::Errno::EPERM);
    }
    Ok(())
}
