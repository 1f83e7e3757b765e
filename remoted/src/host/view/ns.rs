//! The raw system calls that make a forked child into a body's context:
//! its own mount namespace with the view bound over the covered
//! directories, the owner's credentials, and the home cwd. Runs between
//! `fork` and `exec` of a multi-threaded daemon, so only async-signal-safe
//! system calls on data prepared before the fork.

use std::ffi::CString;
use std::io;

/// What the child does before `exec`, prepared before the fork by
/// [`super::BodyView::entry`].
#[derive(Debug, Clone)]
pub struct Entry {
    /// `(view directory, same directory at /)` pairs to bind, in order.
    pub binds: Vec<(CString, CString)>,
    /// The body's uid.
    pub uid: u32,
    /// The body's gid.
    pub gid: u32,
    /// The home cwd, resolved after the binds (so through the view).
    pub cwd: CString,
}

fn check(r: libc::c_long) -> io::Result<()> {
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Entry {
    /// In the forked child, still root: a private mount namespace (a
    /// slave of this node's, so nothing the body's binds do propagates
    /// back) with every bind made; then the body's uid and gid (no
    /// supplementary groups, all three ids, so no way back to root); then
    /// chdir to the cwd, as the body's user, through the view.
    pub fn enter(&self) -> io::Result<()> {
        if !self.binds.is_empty() {
            // SAFETY: unshare(2) with a flag; no memory involved.
            check(unsafe { libc::unshare(libc::CLONE_NEWNS) }.into())?;
            // SAFETY: mount(2) with a NUL-terminated target and null
            // source, type and data, which MS_SLAVE ignores.
            let r = unsafe {
                libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_SLAVE,
                    std::ptr::null(),
                )
            };
            check(r.into())?;
            for (src, dst) in &self.binds {
                // SAFETY: mount(2) with NUL-terminated source and target
                // strings prepared before the fork; type and data unused
                // by MS_BIND.
                let r = unsafe {
                    libc::mount(
                        src.as_ptr(),
                        dst.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    )
                };
                check(r.into())?;
            }
        }
        // SAFETY: setgroups(0, NULL) drops every supplementary group.
        check(unsafe { libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) })?;
        // SAFETY: plain integer arguments.
        check(unsafe { libc::syscall(libc::SYS_setresgid, self.gid, self.gid, self.gid) })?;
        // SAFETY: plain integer arguments.
        check(unsafe { libc::syscall(libc::SYS_setresuid, self.uid, self.uid, self.uid) })?;
        // Changing ids made us non-dumpable, which hides /proc/self/fd
        // from ourselves; the restorer is run through it. (exec sets the
        // flag again from the new program's credentials anyway.)
        // SAFETY: prctl(2) with integer arguments.
        check(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) }.into())?;
        // SAFETY: chdir(2) with a NUL-terminated path prepared before the fork.
        check(unsafe { libc::chdir(self.cwd.as_ptr()) }.into())?;
        Ok(())
    }
}
