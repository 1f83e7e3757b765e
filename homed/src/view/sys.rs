//! The raw system calls of the view's server that neither `std` nor `nix`
//! offers: per-thread credential changes and extended attributes through a
//! descriptor's `/proc/self/fd` entry. Every `unsafe` block of the view
//! lives here.

use nix::errno::Errno;
use std::ffi::CString;

/// Makes the *calling thread* (not the process) the given user for good:
/// its own fs context with umask 0, then supplementary groups, gids and
/// uids. With real, effective and saved uid all non-zero the thread has no
/// capabilities left, so nothing it does afterwards can act as root.
///
/// glibc's `setgroups`/`setresuid` wrappers change every thread of the
/// process (POSIX semantics via a signal broadcast); the raw system calls
/// used here change only the caller, which is what a per-session worker
/// thread needs while the rest of `homed` stays root.
pub fn become_user(uid: u32, gid: u32, groups: &[u32]) -> Result<(), Errno> {
    // SAFETY: unshare(CLONE_FS) only gives this thread a private copy of
    // its cwd/root/umask; no memory is involved.
    Errno::result(unsafe { libc::unshare(libc::CLONE_FS) })?;
    // SAFETY: umask has no failure mode and touches no memory; after the
    // unshare above it only affects this thread.
    unsafe { libc::umask(0) };
    // SAFETY: the pointer and length describe the live `groups` slice,
    // which the kernel only reads.
    Errno::result(unsafe {
        libc::syscall(
            libc::SYS_setgroups,
            groups.len() as libc::c_long,
            groups.as_ptr(),
        )
    })?;
    // SAFETY: plain integer arguments; the raw syscall affects only this thread.
    Errno::result(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) })?;
    // SAFETY: plain integer arguments; the raw syscall affects only this thread.
    Errno::result(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) })?;
    // Prove the switch is one-way: regaining root must now fail.
    // SAFETY: plain integer arguments; on the expected failure nothing changes.
    let back = unsafe { libc::syscall(libc::SYS_setresuid, 0, 0, 0) };
    if back == 0 {
        return Err(Errno::EPERM);
    }
    Ok(())
}

/// `/proc/self/fd/<fd>` as a C string: reaches the file an `O_PATH`
/// descriptor refers to, without any path lookup in the home's tree.
fn proc_path(fd: i32) -> CString {
    CString::new(format!("/proc/self/fd/{fd}")).unwrap_or_default()
}

fn c_name(name: &[u8]) -> Result<CString, Errno> {
    CString::new(name).map_err(|_| Errno::EINVAL)
}

/// getxattr on the file behind `fd`; `size` 0 asks for the value's size.
pub fn get_xattr(fd: i32, name: &[u8], size: usize) -> Result<(usize, Vec<u8>), Errno> {
    let path = proc_path(fd);
    let name = c_name(name)?;
    let mut buf = vec![0u8; size];
    // SAFETY: both strings are NUL-terminated and live; `buf` is writable
    // for `buf.len()` bytes.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(Errno::result(n)?).map_err(|_| Errno::EIO)?;
    buf.truncate(n.min(size));
    Ok((n, buf))
}

/// listxattr on the file behind `fd`; `size` 0 asks for the list's size.
pub fn list_xattr(fd: i32, size: usize) -> Result<(usize, Vec<u8>), Errno> {
    let path = proc_path(fd);
    let mut buf = vec![0u8; size];
    // SAFETY: `path` is NUL-terminated; `buf` is writable for its length.
    let n = unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let n = usize::try_from(Errno::result(n)?).map_err(|_| Errno::EIO)?;
    buf.truncate(n.min(size));
    Ok((n, buf))
}

/// setxattr on the file behind `fd`.
pub fn set_xattr(fd: i32, name: &[u8], value: &[u8], flags: i32) -> Result<(), Errno> {
    let path = proc_path(fd);
    let name = c_name(name)?;
    // SAFETY: both strings are NUL-terminated; `value` is readable for its length.
    Errno::result(unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(drop)
}

/// removexattr on the file behind `fd`.
pub fn remove_xattr(fd: i32, name: &[u8]) -> Result<(), Errno> {
    let path = proc_path(fd);
    let name = c_name(name)?;
    // SAFETY: both strings are NUL-terminated and live.
    Errno::result(unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) }).map(drop)
}

/// One entry of a directory as the home's kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDirEntry {
    /// Inode number.
    pub ino: u64,
    /// The file system's cookie for "continue after this entry" (what
    /// `telldir` and a directory fd's position hold at home).
    pub off: u64,
    /// `DT_*` type, `DT_UNKNOWN` if the file system does not say.
    pub dtype: u8,
    /// The name.
    pub name: Vec<u8>,
}

/// Every entry of the directory `fd` (freshly opened, at its start), in
/// the file system's order, with its cookie: `std::fs::read_dir` hides the
/// cookies, and the view needs them so that a directory position carried
/// across a migration means the same entry through the view as at home.
pub fn list_dir(fd: i32) -> Result<Vec<RawDirEntry>, Errno> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // SAFETY: getdents64 writes at most `buf.len()` bytes into `buf`.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                fd,
                buf.as_mut_ptr(),
                buf.len() as libc::c_long,
            )
        };
        let n = usize::try_from(Errno::result(n)?).map_err(|_| Errno::EIO)?;
        if n == 0 {
            return Ok(out);
        }
        parse_dirents(&buf[..n.min(buf.len())], &mut out)?;
    }
}

/// Appends the `linux_dirent64` records of `buf` to `out`.
fn parse_dirents(buf: &[u8], out: &mut Vec<RawDirEntry>) -> Result<(), Errno> {
    let mut at = 0;
    while at < buf.len() {
        let rec = buf.get(at..).ok_or(Errno::EIO)?;
        if rec.len() < 19 {
            return Err(Errno::EIO);
        }
        let u64_at = |i: usize| u64::from_ne_bytes(rec[i..i + 8].try_into().unwrap_or([0; 8]));
        let reclen = usize::from(u16::from_ne_bytes([rec[16], rec[17]]));
        if reclen < 19 || reclen > rec.len() {
            return Err(Errno::EIO);
        }
        let name = &rec[19..reclen];
        let len = name.iter().position(|&c| c == 0).unwrap_or(name.len());
        out.push(RawDirEntry {
            ino: u64_at(0),
            off: u64_at(8),
            dtype: rec[18],
            name: name[..len].to_vec(),
        });
        at += reclen;
    }
    Ok(())
}

/// Raises this process's soft open-file limit to the hard one: the server
/// holds one descriptor per file the remote kernel remembers.
pub fn raise_nofile_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_dir_gives_every_name_with_increasing_positions() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..300 {
            std::fs::write(dir.path().join(format!("file-{i}")), b"").unwrap();
        }
        let f = std::fs::File::open(dir.path()).unwrap();
        use std::os::fd::AsRawFd;
        let got = list_dir(f.as_raw_fd()).unwrap();
        let mut names: Vec<String> = got
            .iter()
            .map(|e| String::from_utf8(e.name.clone()).unwrap())
            .collect();
        names.sort();
        assert_eq!(names.len(), 302);
        assert!(names.contains(&".".to_string()) && names.contains(&"..".to_string()));
        // Each cookie, handed back to the kernel, continues after its entry.
        let e = &got[100];
        // SAFETY: lseek on our own directory fd.
        assert!(unsafe { libc::lseek(f.as_raw_fd(), e.off as libc::off_t, libc::SEEK_SET) } >= 0);
        let rest = list_dir(f.as_raw_fd()).unwrap();
        assert_eq!(rest, got[101..].to_vec());
    }

    #[test]
    fn bad_records_are_an_error_not_a_panic() {
        let mut out = Vec::new();
        assert_eq!(parse_dirents(&[0u8; 10], &mut out), Err(Errno::EIO));
        let mut rec = vec![0u8; 24];
        rec[16] = 200; // reclen beyond the buffer
        assert_eq!(parse_dirents(&rec, &mut out), Err(Errno::EIO));
        rec[16] = 24;
        rec[19] = b'a';
        assert!(parse_dirents(&rec, &mut out).is_ok());
        assert_eq!(out[0].name, b"a");
    }
}
