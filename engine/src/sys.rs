//! The engine's few raw system calls.

use std::io::Read;

/// PFN of the kernel's shared zero page: map a fresh anonymous page, read
/// it (which maps the zero page), look it up in our own pagemap. 0 if the
/// PFN is hidden (not root).
pub(crate) fn zero_pfn() -> u64 {
    // SAFETY: a fresh private anonymous page, unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return 0;
    }
    // SAFETY: `p` is a readable mapped page.
    let _ = unsafe { std::ptr::read_volatile(p as *const u8) };
    let mut entry = [0u8; 8];
    let ok = std::fs::File::open("/proc/self/pagemap")
        .and_then(|f| {
            use std::os::unix::fs::FileExt;
            f.read_exact_at(&mut entry, (p as u64 / 4096) * 8)
        })
        .is_ok();
    // SAFETY: unmapping the page mapped above.
    unsafe { libc::munmap(p, 4096) };
    if !ok {
        return 0;
    }
    let e = u64::from_le_bytes(entry);
    if e & (1 << 63) == 0 {
        0
    } else {
        e & ((1 << 55) - 1)
    }
}

/// `uname -r`.
pub(crate) fn kernel_release() -> String {
    let mut s = String::new();
    let _ = std::fs::File::open("/proc/sys/kernel/osrelease")
        .and_then(|mut f| f.read_to_string(&mut s));
    s.trim().to_string()
}

/// Resource limit `res` of `pid`: (soft, hard).
pub(crate) fn rlimit(pid: i32, res: i32) -> std::io::Result<[u64; 2]> {
    let mut old = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit64 with no new limit only writes `old`.
    let r = unsafe {
        libc::prlimit64(
            pid,
            res as libc::__rlimit_resource_t,
            std::ptr::null(),
            &mut old,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok([old.rlim_cur, old.rlim_max])
}

/// Send `sig` to `pid`.
pub fn kill(pid: i32, sig: i32) -> std::io::Result<()> {
    // SAFETY: kill(2) with plain integers.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// While alive, this thread's file system ids are the given user's, so
/// files it creates belong to them and their permissions apply (homed runs
/// as root; setfsuid is per thread).
pub struct FsIds {
    old_uid: u32,
    old_gid: u32,
}

impl FsIds {
    /// Switch to `uid`/`gid` for file access.
    pub fn become_user(uid: u32, gid: u32) -> FsIds {
        // SAFETY: setfsgid/setfsuid only change this thread's fs ids and
        // return the previous ones.
        let old_gid = unsafe { libc::setfsgid(gid) } as u32;
        // SAFETY: as above.
        let old_uid = unsafe { libc::setfsuid(uid) } as u32;
        FsIds { old_uid, old_gid }
    }
}

impl Drop for FsIds {
    fn drop(&mut self) {
        // SAFETY: restoring this thread's previous fs ids.
        unsafe { libc::setfsuid(self.old_uid) };
        // SAFETY: as above.
        unsafe { libc::setfsgid(self.old_gid) };
    }
}

/// Whether fds `a` and `b` of `pid` are one open file description
/// (`kcmp(KCMP_FILE)`; false if that cannot be told).
pub(crate) fn same_file(pid: i32, a: i32, b: i32) -> bool {
    const KCMP_FILE: libc::c_long = 0;
    // SAFETY: kcmp(2) only compares kernel objects of `pid`; no memory is
    // passed.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, KCMP_FILE, a, b) };
    r == 0
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), the unit of the times
/// in `/proc/PID/stat`; 100 if the system does not say.
pub(crate) fn clock_ticks() -> u64 {
    // SAFETY: sysconf takes no pointer and only reads a system constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|&t| t > 0).unwrap_or(100)
}
