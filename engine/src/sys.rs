//! The engine's few raw system calls. Through `nix` where it has a safe
//! call; `libc` where it has none (mmap, prlimit of another process,
//! kcmp) or cannot say it (real-time signals).

use std::io::Read;

/// PFN of the kernel's shared zero page: map a fresh anonymous page, read
/// it (which maps the zero page), look it up in our own pagemap. 0 if the
/// PFN is hidden (not root).
pub(crate) fn zero_pfn() -> u64 {
    use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, munmap};
    const PAGE: std::num::NonZeroUsize = std::num::NonZeroUsize::new(4096).unwrap();
    // SAFETY: a fresh private anonymous page at an address the kernel
    // picks, so no existing mapping is touched; unmapped below.
    let Ok(p) =
        (unsafe { mmap_anonymous(None, PAGE, ProtFlags::PROT_READ, MapFlags::MAP_PRIVATE) })
    else {
        return 0;
    };
    // SAFETY: `p` is a readable mapped page.
    let _ = unsafe { std::ptr::read_volatile(p.as_ptr() as *const u8) };
    let mut entry = [0u8; 8];
    let ok = std::fs::File::open("/proc/self/pagemap")
        .and_then(|f| {
            use std::os::unix::fs::FileExt;
            f.read_exact_at(&mut entry, (p.as_ptr() as u64 / 4096) * 8)
        })
        .is_ok();
    // SAFETY: unmapping the page mapped above; nothing refers to it.
    let _ = unsafe { munmap(p, PAGE.get()) };
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

/// Resource limit `res` of `pid`: (soft, hard). Raw: nix's `getrlimit`
/// reads only our own.
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

/// Send `sig` to `pid`. Raw: `nix::sys::signal::Signal` has no real-time
/// signals, and the freeze signal is one by default (63).
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
        use nix::unistd::{Gid, Uid, setfsgid, setfsuid};
        let old_gid = setfsgid(Gid::from_raw(gid)).as_raw();
        let old_uid = setfsuid(Uid::from_raw(uid)).as_raw();
        FsIds { old_uid, old_gid }
    }
}

impl Drop for FsIds {
    fn drop(&mut self) {
        use nix::unistd::{Gid, Uid, setfsgid, setfsuid};
        setfsuid(Uid::from_raw(self.old_uid));
        setfsgid(Gid::from_raw(self.old_gid));
    }
}

/// Whether fds `a` and `b` of `pid` are one open file description
/// (`kcmp(KCMP_FILE)`; false if that cannot be told). Raw: nix has no
/// kcmp.
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
    use nix::unistd::{SysconfVar, sysconf};
    sysconf(SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}
