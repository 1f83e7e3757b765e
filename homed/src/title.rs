//! The deputy's command line as `ps` at home shows it.
//!
//! A deputy forked for a body's child starts with its parent's command
//! line; when the child's body execs another program away from home, its
//! host sends the new command line and the deputy takes it, so `ps`,
//! `top` and `mosps` at home keep showing the program each process runs
//! (ARCHITECTURE.md section 3: the deputy's `ps` line stays the program's own).
//!
//! The command line is moved, not rewritten in place: the bytes go to a
//! buffer of their own and `prctl(PR_SET_MM, PR_SET_MM_MAP)` points the
//! mm's argument range at it (allowed to the process itself, as for the
//! restorer). The name (`comm`) stays `mosix-deputy`, as for every
//! deputy, which is how `ps -o comm` tells a deputy from a process.

use mosix_engine::procfs::parse_stat;

/// Longest command line taken; longer ones are cut (at a NUL if any).
pub const MAX_CMDLINE: usize = mosix_proto::migrate::EXEC_CMDLINE_MAX;

/// Why the command line could not be set.
#[derive(Debug, thiserror::Error)]
pub enum TitleError {
    /// an empty command line: the body's host sent no program name
    #[error("an empty command line: the body's host sent no program name")]
    Empty,
    /// cannot read /proc/self/stat to keep the other mm fields: {0}
    #[error("cannot read /proc/self/stat to keep the other mm fields: {0}")]
    Stat(String),
    /// the kernel refused the new command line (prctl PR_SET_MM_MAP): errno {0}
    #[error("the kernel refused the new command line (prctl PR_SET_MM_MAP): errno {0}")]
    Refused(i32),
}

/// `cmdline` as the kernel keeps it: at most [`MAX_CMDLINE`] bytes, cut
/// after the last whole argument that fits, ending with a NUL.
pub fn normalize(cmdline: &[u8]) -> Result<Vec<u8>, TitleError> {
    let mut v = cmdline.to_vec();
    if v.len() > MAX_CMDLINE {
        v.truncate(MAX_CMDLINE);
        match v[..MAX_CMDLINE - 1].iter().rposition(|&b| b == 0) {
            Some(i) => v.truncate(i + 1),
            None => v[MAX_CMDLINE - 1] = 0,
        }
    }
    if v.last() != Some(&0) {
        v.push(0);
    }
    if v.iter().all(|&b| b == 0) {
        return Err(TitleError::Empty);
    }
    Ok(v)
}

/// Make `cmdline` (NUL-separated arguments, as `/proc/PID/cmdline`) this
/// process's command line.
pub fn set(cmdline: &[u8]) -> Result<(), TitleError> {
    let args = normalize(cmdline)?;
    let stat =
        std::fs::read_to_string("/proc/self/stat").map_err(|e| TitleError::Stat(e.to_string()))?;
    let mm = parse_stat(&stat).map_err(TitleError::Stat)?;
    // The bytes must stay where the mm points for the process's life: a
    // deputy takes a new command line only when its body execs.
    let args: &'static [u8] = Box::leak(args.into_boxed_slice());
    let start = args.as_ptr() as u64;
    let mut map = mm.prctl_map();
    map.brk = sys::current_brk().max(mm.start_brk);
    map.arg_start = start;
    map.arg_end = start + args.len() as u64;
    sys::set_mm_map(&map).map_err(TitleError::Refused)
}

/// The raw calls.
mod sys {
    use mosix_engine::image::layout::PrctlMmMap;

    const PR_SET_MM: i32 = 35;
    const PR_SET_MM_MAP: u64 = 14;

    /// The current program break.
    pub(super) fn current_brk() -> u64 {
        // SAFETY: brk(0) changes nothing and returns the current break.
        unsafe { libc::syscall(libc::SYS_brk, 0) as u64 }
    }

    /// prctl(PR_SET_MM, PR_SET_MM_MAP): `Err(errno)` if refused.
    pub(super) fn set_mm_map(map: &PrctlMmMap) -> Result<(), i32> {
        // SAFETY: a valid prctl_mm_map and its size; the kernel only reads it.
        let r = unsafe {
            libc::prctl(
                PR_SET_MM,
                PR_SET_MM_MAP,
                map as *const PrctlMmMap as u64,
                size_of::<PrctlMmMap>() as u64,
                0u64,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_line_ends_with_one_nul_and_is_cut_at_an_argument() {
        assert_eq!(normalize(b"cc\0-c\0x.c\0").unwrap(), b"cc\0-c\0x.c\0");
        assert_eq!(normalize(b"cc\0-c").unwrap(), b"cc\0-c\0");
        assert!(matches!(normalize(b""), Err(TitleError::Empty)));
        assert!(matches!(normalize(b"\0\0"), Err(TitleError::Empty)));
        let mut long = b"prog\0".to_vec();
        long.extend(std::iter::repeat_n(b'a', 2 * MAX_CMDLINE));
        assert_eq!(normalize(&long).unwrap(), b"prog\0");
        let huge = vec![b'x'; 2 * MAX_CMDLINE];
        let v = normalize(&huge).unwrap();
        assert_eq!(v.len(), MAX_CMDLINE);
        assert_eq!(v.last(), Some(&0));
    }

    #[test]
    fn this_process_can_take_a_new_command_line() {
        // In a forked child, so the test runner keeps its own command line.
        // SAFETY: the child reads files and exits at once; glibc's fork
        // takes its malloc locks around the fork, so the child may allocate.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let ok = set(b"mosix-title-test\0arg one\0").is_ok()
                && std::fs::read("/proc/self/cmdline").ok().as_deref()
                    == Some(b"mosix-title-test\0arg one\0".as_slice());
            // SAFETY: ends the forked child at once.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }
}
