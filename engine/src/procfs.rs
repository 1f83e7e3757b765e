//! What the engine reads about a process from `/proc`: its maps, mm
//! fields, fds and the reasons it cannot be frozen.
//!
//! This is the one parser of `/proc/PID/stat` ([`Stat`], [`parse_stat`]),
//! `/proc/PID/status` ([`status_field`] and its typed forms) and
//! `/proc/PID/maps` ([`parse_maps`]) for the whole project: the daemons,
//! the tools and the tests call it rather than split those files by hand
//! (the restorer, which runs without the standard library, excepted).
//! Parsers take the file's text, so they are tested on any text.

use crate::image::layout::*;
use mosix_proto::reason::CantMove;
use std::collections::HashSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapLine {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// `r`: readable.
    pub read: bool,
    /// `w`: writable.
    pub write: bool,
    /// `x`: executable.
    pub exec: bool,
    /// `s`: a shared mapping (`p`: private).
    pub shared: bool,
    /// Offset into the mapped file.
    pub offset: u64,
    /// The file's device, `MAJOR:MINOR` in hex.
    pub dev: String,
    /// The file's inode, 0 for anonymous memory.
    pub inode: u64,
    /// Path or pseudo-name (`[heap]`), empty for anonymous memory.
    pub name: String,
}

/// Parse `/proc/PID/maps` text.
pub fn parse_maps(text: &str) -> Result<Vec<MapLine>, String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut it = line.splitn(6, ' ');
        let range = it.next().ok_or("empty maps line")?;
        let perms = it.next().ok_or("no perms")?.as_bytes();
        let offset = it.next().ok_or("no offset")?;
        let dev = it.next().ok_or("no dev")?;
        let inode = it.next().ok_or("no inode")?;
        let name = it.next().unwrap_or("").trim_start().to_string();
        let (s, e) = range.split_once('-').ok_or("bad range")?;
        let hex =
            |v: &str| u64::from_str_radix(v, 16).map_err(|_| format!("bad number {v:?} in maps"));
        if perms.len() < 4 {
            return Err(format!("bad perms in maps line {line:?}"));
        }
        out.push(MapLine {
            start: hex(s)?,
            end: hex(e)?,
            read: perms[0] == b'r',
            write: perms[1] == b'w',
            exec: perms[2] == b'x',
            shared: perms[3] == b's',
            offset: hex(offset)?,
            dev: dev.to_string(),
            inode: inode
                .parse()
                .map_err(|_| format!("bad inode in maps line {line:?}"))?,
            name,
        });
    }
    Ok(out)
}

/// The fields of a `/proc/PID/stat` text after the command, which is in
/// parentheses and may itself hold spaces and parentheses (hence the
/// *last* `)`): field n (1-based, as in proc(5)) is at index n - 3.
fn fields_after_comm(text: &str) -> Result<Vec<&str>, String> {
    let after = text.rsplit_once(')').ok_or("no ')' in stat")?.1;
    Ok(after.split_whitespace().collect())
}

/// Field `n` (1-based, as in proc(5), n >= 3) of the `fields` after the
/// command, parsed.
fn stat_number<T: std::str::FromStr>(fields: &[&str], n: usize) -> Result<T, String> {
    fields
        .get(n - 3)
        .ok_or(format!("stat has no field {n}"))?
        .parse::<T>()
        .map_err(|_| format!("stat field {n} is not a number"))
}

/// What the project reads of a process's `/proc/PID/stat` (proc(5)), other
/// than the mm fields the image needs (see [`parse_stat`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Field 1: the process id.
    pub pid: i32,
    /// Field 2: the command (`comm`), without its parentheses.
    pub comm: String,
    /// Field 3: the state letter: `R` running, `S` sleeping, `D` disk
    /// sleep, `T` stopped, `t` tracing stop, `Z` zombie, `X` dead, ...
    pub state: char,
    /// Field 4: the parent's pid.
    pub ppid: i32,
    /// Field 5: the process group.
    pub pgrp: i32,
    /// Field 6: the session.
    pub session: i32,
    /// Field 7: the controlling terminal's device number, 0 if none.
    pub tty_nr: i32,
    /// Field 14: clock ticks spent in user mode.
    pub utime: u64,
    /// Field 15: clock ticks spent in kernel mode.
    pub stime: u64,
    /// Field 22: when the process started, in clock ticks since boot.
    pub start_time: u64,
    /// Field 52: the exit status in `waitpid` form (a zombie's); `None`
    /// where the kernel does not write it (before Linux 3.5).
    pub exit_code: Option<i32>,
}

impl Stat {
    /// Parse a `/proc/PID/stat` text.
    pub fn parse(text: &str) -> Result<Stat, String> {
        let (head, _) = text.rsplit_once(')').ok_or("no ')' in stat")?;
        let (pid, comm) = head.split_once(" (").ok_or("no '(' in stat")?;
        let f = fields_after_comm(text)?;
        let state = f
            .first()
            .and_then(|s| s.chars().next())
            .ok_or("stat has no field 3")?;
        Ok(Stat {
            pid: pid
                .trim()
                .parse()
                .map_err(|_| "stat field 1 is not a number".to_string())?,
            comm: comm.to_string(),
            state,
            ppid: stat_number(&f, 4)?,
            pgrp: stat_number(&f, 5)?,
            session: stat_number(&f, 6)?,
            tty_nr: stat_number(&f, 7)?,
            utime: stat_number(&f, 14)?,
            stime: stat_number(&f, 15)?,
            start_time: stat_number(&f, 22)?,
            exit_code: stat_number(&f, 52).ok(),
        })
    }

    /// Whether the process is alive: neither a zombie waiting to be reaped
    /// (`Z`) nor dead (`X`).
    pub fn is_alive(&self) -> bool {
        self.state != 'Z' && self.state != 'X'
    }

    /// Whether the process is stopped (`T`, or `t` in a tracing stop).
    pub fn is_stopped(&self) -> bool {
        self.state == 'T' || self.state == 't'
    }
}

/// The [`Stat`] of `pid`; `None` if it is gone (or its stat cannot be
/// read or parsed).
pub fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Stat::parse(&text).ok()
}

/// Fields of `/proc/PID/stat` the image needs (all but `brk`, which the
/// freeze record carries).
pub fn parse_stat(text: &str) -> Result<MmFields, String> {
    let f = fields_after_comm(text)?;
    let get = |n: usize| stat_number::<u64>(&f, n);
    Ok(MmFields {
        start_code: get(26)?,
        end_code: get(27)?,
        start_stack: get(28)?,
        start_data: get(45)?,
        end_data: get(46)?,
        start_brk: get(47)?,
        brk: 0,
        arg_start: get(48)?,
        arg_end: get(49)?,
        env_start: get(50)?,
        env_end: get(51)?,
        auxv_len: 0,
        auxv: [0; 64],
        rlimits: [[u64::MAX; 2]; NRLIMITS],
    })
}

/// The value of a `Key:\tvalue` line of `/proc/PID/status` (or of
/// `/proc/PID/fdinfo/FD`), trimmed.
pub fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|r| r.strip_prefix(':'))
            .map(str::trim)
    })
}

/// A signal mask of `/proc/PID/status` (`SigBlk`, `SigCgt`, `SigPnd`...,
/// in hex): bit n - 1 stands for signal n.
pub fn status_mask(status: &str, key: &str) -> Option<u64> {
    status_field(status, key).and_then(|v| u64::from_str_radix(v, 16).ok())
}

/// A size of `/proc/PID/status` (`VmRSS`, `VmLck`...), in kB as written.
pub fn status_kb(status: &str, key: &str) -> Option<u64> {
    status_field(status, key)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The ids of a `Uid` or `Gid` line of `/proc/PID/status`: real,
/// effective, saved and file-system.
pub fn status_ids(status: &str, key: &str) -> Option<[u32; 4]> {
    let mut it = status_field(status, key)?
        .split_whitespace()
        .map(|v| v.parse().ok());
    let ids = [it.next()??, it.next()??, it.next()??, it.next()??];
    it.next().is_none().then_some(ids)
}

/// Resource limit `res` (its row, in kernel order) of a `/proc/PID/limits`
/// text: (soft, hard), `unlimited` as `u64::MAX`. The fallback where
/// `prlimit` on another user's process is refused (a daemon without
/// CAP_SYS_RESOURCE, as in some containers): the file is readable by all.
pub fn limits_row(text: &str, res: usize) -> Option<[u64; 2]> {
    // "%-25s %-20s %-20s %-10s": the name may hold spaces, the values not.
    let line = text.lines().nth(res + 1)?;
    let value = |from: usize, to: usize| -> Option<u64> {
        let v = line.get(from..to.min(line.len()))?.trim();
        if v == "unlimited" {
            Some(u64::MAX)
        } else {
            v.parse().ok()
        }
    };
    Some([value(26, 47)?, value(47, 68)?])
}

/// The command line of `pid` (empty if it is gone).
pub fn cmdline(pid: i32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// One open fd, classified.
#[derive(Debug, Clone)]
pub struct OpenFd {
    /// Its number.
    pub fd: i32,
    /// What it is (`layout::FD_*`).
    pub kind: u32,
    /// Where `/proc/PID/fd/N` points.
    pub path: String,
    /// Its open flags, from `fdinfo`.
    pub flags: u32,
    /// Whether FD_CLOEXEC is set.
    pub cloexec: bool,
    /// Its file offset.
    pub pos: u64,
    /// The file's size (regular files).
    pub size: u64,
    /// Why this fd makes the process unfreezable, if it does.
    pub refuse: Option<CantMove>,
}

/// Major numbers of tty devices (console/vt, /dev/tty, ptys).
fn is_tty_major(major: u64) -> bool {
    matches!(major, 4 | 5 | 136..=143)
}

/// The fds of `pid`, without `skip` (libmosix's control fd).
pub fn open_fds(pid: i32, skip: i32) -> Result<Vec<OpenFd>, String> {
    let dir = format!("/proc/{pid}/fd");
    let mut out = Vec::new();
    let rd = std::fs::read_dir(&dir).map_err(|e| format!("cannot list {dir}: {e}"))?;
    for ent in rd {
        let ent = ent.map_err(|e| format!("cannot list {dir}: {e}"))?;
        let Ok(fd) = ent.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if fd == skip {
            continue;
        }
        let link = ent.path();
        let Ok(target) = std::fs::read_link(&link) else {
            continue;
        }; // closed meanwhile
        let path = target.to_string_lossy().into_owned();
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
        let pos = status_field(&info, "pos")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let oflags = status_field(&info, "flags")
            .and_then(|v| u32::from_str_radix(v, 8).ok())
            .unwrap_or(0);
        let cloexec = oflags & libc::O_CLOEXEC as u32 != 0;
        let flags = oflags & !(libc::O_CLOEXEC as u32);
        let mut refuse = None;
        let mut size = 0;
        let kind = if path.starts_with("socket:") {
            FK_SOCKET
        } else if path.starts_with("pipe:") {
            FK_PIPE
        } else if path.starts_with("anon_inode:") {
            refuse = Some(CantMove::AnonInode {
                fd,
                path: path.clone(),
            });
            FK_OTHER
        } else {
            match std::fs::metadata(&link) {
                Ok(m) if m.file_type().is_file() => {
                    size = m.len();
                    FK_REGULAR
                }
                Ok(m) if m.is_dir() => FK_DIR,
                Ok(m) if m.file_type().is_fifo() => FK_PIPE,
                Ok(m) if m.file_type().is_char_device() => {
                    let major = libc::major(m.rdev()) as u64;
                    if is_tty_major(major) {
                        FK_TTY
                    } else if major == 1 {
                        // /dev/null, zero, full, random, urandom: stateless.
                        FK_OTHER
                    } else {
                        refuse = Some(CantMove::Device {
                            fd,
                            path: path.clone(),
                        });
                        FK_OTHER
                    }
                }
                Ok(_) => {
                    refuse = Some(CantMove::Special {
                        fd,
                        path: path.clone(),
                    });
                    FK_OTHER
                }
                Err(_) => {
                    refuse = Some(CantMove::Unreopenable {
                        fd,
                        path: path.clone(),
                    });
                    FK_OTHER
                }
            }
        };
        out.push(OpenFd {
            fd,
            kind,
            path,
            flags,
            cloexec,
            pos,
            size,
            refuse,
        });
    }
    out.sort_by_key(|f| f.fd);
    Ok(out)
}

/// What kind of lock an fd's `/proc/PID/fdinfo/FD` text shows the process
/// holding through that fd, if any: its `lock:` lines list the POSIX
/// record locks of this process, and the open-file-description and flock
/// locks of this open file, taken through the fd.
pub fn held_lock(fdinfo: &str) -> Option<&'static str> {
    fdinfo
        .lines()
        .filter_map(|l| l.strip_prefix("lock:"))
        .find_map(|l| {
            // "1: POSIX  ADVISORY  WRITE 1234 00:2d:5678 0 EOF"
            Some(match l.split_whitespace().nth(1)? {
                "POSIX" | "ACCESS" => "POSIX record locks",
                "OFDLCK" => "open-file-description record locks",
                "FLOCK" => "flock locks",
                "LEASE" | "DELEG" => "a file lease",
                _ => "file locks",
            })
        })
}

/// Why `pid` cannot migrate while it holds file locks, `None` if it holds
/// none. Locks are not carried: the deputy keeps the process's fds open
/// at home, so its locks would stay there, held by the deputy, and shut
/// the body out of its own file (the body's file operations reach the
/// home through the view as another lock owner). A checkpoint is not
/// refused for this: the process goes on holding them.
pub fn locks_block_move(pid: i32) -> Option<CantMove> {
    let dir = format!("/proc/{pid}/fdinfo");
    let rd = std::fs::read_dir(&dir).ok()?;
    for ent in rd.flatten() {
        let Ok(info) = std::fs::read_to_string(ent.path()) else {
            continue; // closed meanwhile
        };
        if let Some(lock) = held_lock(&info) {
            let fd = ent.file_name().to_string_lossy().into_owned();
            let path = link(pid, &format!("fd/{fd}"))
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            return Some(CantMove::FileLocks {
                lock: lock.to_string(),
                fd: fd.parse().unwrap_or(-1),
                path,
            });
        }
    }
    None
}

/// Whether `pid` can be frozen safely now; `Some(reason)` if not.
pub fn cantmove(pid: i32, freeze_signal: i32, ctl_fd: i32) -> Option<CantMove> {
    why_not(pid, freeze_signal, ctl_fd, true)
}

/// Whether `pid` blocks `freeze_signal` now.
pub fn blocks_freeze_signal(pid: i32, freeze_signal: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| status_mask(&s, "SigBlk"))
        .is_some_and(|m| m & (1u64 << (freeze_signal - 1)) != 0)
}

/// [`cantmove`] but for a blocked freeze signal: a body's host knows that
/// a body inside a forwarded call blocks every signal until the answer,
/// and freezes it through that call (see [`blocks_freeze_signal`]).
pub fn cantmove_but_blocking(pid: i32, freeze_signal: i32, ctl_fd: i32) -> Option<CantMove> {
    why_not(pid, freeze_signal, ctl_fd, false)
}

/// [`cantmove`]; a blocked freeze signal counts if `blocking_counts`.
fn why_not(pid: i32, freeze_signal: i32, ctl_fd: i32, blocking_counts: bool) -> Option<CantMove> {
    let status = match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(s) => s,
        Err(e) => {
            return Some(CantMove::Unreadable {
                what: format!("/proc/{pid}/status"),
                error: e.to_string(),
            });
        }
    };
    if let Some(n) = status_field(&status, "Threads").and_then(|v| v.parse::<u32>().ok())
        && n > 1
    {
        return Some(CantMove::Threads { threads: n });
    }
    if let Some(v) = status_field(&status, "VmLck")
        && status_kb(&status, "VmLck").unwrap_or(0) > 0
    {
        return Some(CantMove::LockedMemory {
            vmlck: v.to_string(),
        });
    }
    let bit = 1u64 << (freeze_signal - 1);
    let mask = |k| status_mask(&status, k).unwrap_or(0);
    if blocking_counts && mask("SigBlk") & bit != 0 {
        return Some(CantMove::BlocksFreezeSignal {
            signal: freeze_signal,
        });
    }
    if mask("SigCgt") & bit == 0 {
        return Some(CantMove::IgnoresFreezeSignal {
            signal: freeze_signal,
        });
    }
    let maps = match std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|e| e.to_string())
        .and_then(|t| parse_maps(&t))
    {
        Ok(m) => m,
        Err(e) => {
            return Some(CantMove::Unreadable {
                what: "its maps".into(),
                error: e,
            });
        }
    };
    let mut shared_files = HashSet::new();
    for m in &maps {
        if m.name.starts_with("/SYSV") {
            return Some(CantMove::SysvShm);
        }
        if m.shared && m.write && m.inode != 0 {
            shared_files.insert((m.dev.clone(), m.inode, m.name.clone()));
        }
    }
    if !shared_files.is_empty()
        && let Some(r) = shared_elsewhere(pid, &shared_files)
    {
        return Some(r);
    }
    match open_fds(pid, ctl_fd) {
        Ok(fds) => fds.into_iter().find_map(|f| f.refuse),
        Err(e) => Some(CantMove::Unreadable {
            what: format!("the fds of process {pid}"),
            error: e,
        }),
    }
}

/// Whether another process maps one of `files` (dev, inode, name).
fn shared_elsewhere(pid: i32, files: &HashSet<(String, u64, String)>) -> Option<CantMove> {
    let rd = std::fs::read_dir("/proc").ok()?;
    for ent in rd.flatten() {
        let Ok(other) = ent.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if other == pid {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(format!("/proc/{other}/maps")) else {
            continue;
        };
        let Ok(maps) = parse_maps(&text) else {
            continue;
        };
        for m in maps {
            if let Some((_, _, name)) = files.iter().find(|(d, i, _)| *d == m.dev && *i == m.inode)
            {
                return Some(CantMove::SharedMapping {
                    path: name.clone(),
                    other_pid: other,
                });
            }
        }
    }
    None
}

/// `readlink /proc/PID/<what>` as a string.
pub fn link(pid: i32, what: &str) -> Result<PathBuf, String> {
    let p = format!("/proc/{pid}/{what}");
    std::fs::read_link(Path::new(&p)).map_err(|e| format!("cannot read {p}: {e}"))
}

/// Whether `pid` is stopped (state `T` or `t` in `/proc/PID/stat`).
pub fn is_stopped(pid: i32) -> bool {
    stat(pid).is_some_and(|s| s.is_stopped())
}

#[cfg(test)]
mod tests {
    #[test]
    fn limits_rows_parse_in_kernel_order() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
Max cpu time              unlimited            unlimited            seconds   \n\
Max file size             unlimited            unlimited            bytes     \n\
Max data size             unlimited            unlimited            bytes     \n\
Max stack size            8388608              unlimited            bytes     \n\
Max core file size        0                    unlimited            bytes     \n\
Max resident set          unlimited            unlimited            bytes     \n\
Max processes             63455                63455                processes \n\
Max open files            1024                 524288               files     \n";
        assert_eq!(super::limits_row(text, 0), Some([u64::MAX, u64::MAX]));
        assert_eq!(super::limits_row(text, 3), Some([8388608, u64::MAX]));
        assert_eq!(super::limits_row(text, 7), Some([1024, 524288]));
        assert_eq!(super::limits_row(text, 8), None);
        assert_eq!(super::limits_row("garbage\nMax cpu time   x", 0), None);
    }

    use super::*;

    #[test]
    fn maps_lines_parse() {
        let t = "55d0c0000000-55d0c0001000 r-xp 00002000 fe:00 1234                       /usr/bin/cat\n\
                 7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]\n\
                 7f0000000000-7f0000001000 rw-s 00000000 00:05 77 /dev/zero (deleted)\n\
                 7f0000002000-7f0000003000 ---p 00000000 00:00 0 \n";
        let m = parse_maps(t).unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].start, 0x55d0c0000000);
        assert!(m[0].exec && !m[0].write && !m[0].shared);
        assert_eq!(m[0].offset, 0x2000);
        assert_eq!(m[0].name, "/usr/bin/cat");
        assert_eq!(m[1].name, "[stack]");
        assert!(m[2].shared);
        assert_eq!(m[2].name, "/dev/zero (deleted)");
        assert_eq!(m[3].name, "");
        assert!(parse_maps("zz-1 rw-p 0 0 0").is_err());
    }

    #[test]
    fn own_stat_parses() {
        let t = std::fs::read_to_string("/proc/self/stat").unwrap();
        let mm = parse_stat(&t).unwrap();
        assert!(mm.start_code < mm.end_code);
        assert!(mm.arg_start < mm.arg_end);
        assert!(parse_stat("1 (x) S 1 2").is_err());
    }

    /// A stat line as the kernel writes it: `comm`, `state`, then fields
    /// 4.. numbered so that field n holds n * 10 (field 52 is `exit`).
    fn stat_line(comm: &str, state: char, exit: Option<i32>) -> String {
        let mut line = format!("4242 ({comm}) {state}");
        for n in 4..=51 {
            line.push_str(&format!(" {}", n * 10));
        }
        if let Some(code) = exit {
            line.push_str(&format!(" {code}"));
        }
        line.push('\n');
        line
    }

    #[test]
    fn stat_lines_parse_whatever_the_command() {
        let s = Stat::parse(&stat_line("a) (b) R", 'Z', Some(3840))).unwrap();
        assert_eq!(s.pid, 4242);
        assert_eq!(s.comm, "a) (b) R");
        assert_eq!(s.state, 'Z');
        assert_eq!((s.ppid, s.pgrp, s.session, s.tty_nr), (40, 50, 60, 70));
        assert_eq!((s.utime, s.stime, s.start_time), (140, 150, 220));
        assert_eq!(s.exit_code, Some(3840));
        assert!(!s.is_alive() && !s.is_stopped());
        let s = Stat::parse(&stat_line("sleep", 'S', None)).unwrap();
        assert_eq!(
            (s.comm.as_str(), s.state, s.exit_code),
            ("sleep", 'S', None)
        );
        assert!(s.is_alive() && !s.is_stopped());
        for state in ['T', 't'] {
            assert!(
                Stat::parse(&stat_line("x", state, None))
                    .unwrap()
                    .is_stopped()
            );
        }
        assert!(!Stat::parse(&stat_line("x", 'X', None)).unwrap().is_alive());
    }

    #[test]
    fn bad_stat_lines_are_refused() {
        assert!(Stat::parse("").is_err());
        assert!(Stat::parse("44 (x y").is_err());
        assert!(Stat::parse("1 (x) R notapid").is_err());
        assert!(Stat::parse("1 (x) R 1 1 1 0 -1").is_err(), "cut short");
        assert!(Stat::parse(&stat_line("x", 'R', None).replace("4242 ", "me ")).is_err());
    }

    #[test]
    fn own_stat_is_read() {
        let me = stat(std::process::id() as i32).unwrap();
        assert_eq!(me.pid, std::process::id() as i32);
        assert_eq!(me.ppid, nix::unistd::getppid().as_raw());
        assert_eq!(me.pgrp, nix::unistd::getpgrp().as_raw());
        assert!(me.is_alive() && !me.is_stopped());
        assert!(me.exit_code.is_some());
        assert_eq!(stat(-1), None);
    }

    #[test]
    fn status_values_parse() {
        let t = "Name:\tcat\nUmask:\t0022\nState:\tS (sleeping)\n\
                 Uid:\t1000\t1001\t1002\t1003\nGid:\t5\t5\t5\t5\n\
                 VmLck:\t       8 kB\nVmRSS:\t    1234 kB\nThreads:\t1\n\
                 SigBlk:\t0000000000010000\nSigCgt:\tfffffffe7ffbfeff\n";
        assert_eq!(status_field(t, "State"), Some("S (sleeping)"));
        assert_eq!(status_field(t, "Name"), Some("cat"));
        assert_eq!(status_field(t, "Nam"), None);
        assert_eq!(status_field(t, "Missing"), None);
        assert_eq!(status_mask(t, "SigBlk"), Some(1 << 16));
        assert_eq!(status_mask(t, "SigCgt"), Some(0xfffffffe7ffbfeff));
        assert_eq!(status_mask(t, "Name"), None);
        assert_eq!(status_kb(t, "VmLck"), Some(8));
        assert_eq!(status_kb(t, "VmRSS"), Some(1234));
        assert_eq!(status_kb(t, "VmSwap"), None);
        assert_eq!(status_ids(t, "Uid"), Some([1000, 1001, 1002, 1003]));
        assert_eq!(status_ids(t, "Gid"), Some([5; 4]));
        assert_eq!(status_ids("Uid:\t1\t2\t3\n", "Uid"), None);
        assert_eq!(status_ids("Uid:\t1\t2\t3\t4\t5\n", "Uid"), None);
        assert_eq!(status_ids("Uid:\t1\tx\t3\t4\n", "Uid"), None);
    }

    #[test]
    fn own_status_shows_own_ids() {
        let t = std::fs::read_to_string("/proc/self/status").unwrap();
        let uid = nix::unistd::getuid().as_raw();
        let euid = nix::unistd::geteuid().as_raw();
        assert_eq!(
            status_ids(&t, "Uid").map(|u| [u[0], u[1]]),
            Some([uid, euid])
        );
        assert!(status_kb(&t, "VmRSS").is_some_and(|kb| kb > 0));
        assert!(status_mask(&t, "SigBlk").is_some());
    }

    #[test]
    fn locks_in_fdinfo_are_named() {
        let head = "pos:\t0\nflags:\t0100002\nmnt_id:\t30\nino:\t77\n";
        assert_eq!(held_lock(head), None);
        let posix = format!("{head}lock:\t1: POSIX  ADVISORY  WRITE 4242 00:2d:77 0 EOF\n");
        assert_eq!(held_lock(&posix), Some("POSIX record locks"));
        let ofd = format!("{head}lock:\t1: OFDLCK ADVISORY  READ -1 00:2d:77 0 9\n");
        assert_eq!(held_lock(&ofd), Some("open-file-description record locks"));
        let fl = format!("{head}lock:\t1: FLOCK  ADVISORY  WRITE 4242 00:2d:77 0 EOF\n");
        assert_eq!(held_lock(&fl), Some("flock locks"));
        assert_eq!(held_lock("lock:"), None);
    }

    #[test]
    fn own_posix_lock_refuses_the_move() {
        use std::os::fd::AsRawFd;
        let path = std::env::temp_dir().join(format!("mosix-lock-unit-{}", std::process::id()));
        let f = std::fs::File::create(&path).unwrap();
        let pid = std::process::id() as i32;
        let fd = f.as_raw_fd();
        assert_eq!(locks_block_move(pid), None);
        let lock = libc::flock {
            l_type: libc::F_WRLCK as i16,
            l_whence: libc::SEEK_SET as i16,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_SETLK(&lock)).unwrap();
        let why = locks_block_move(pid).expect("a lock holder is refused");
        assert!(
            matches!(&why, CantMove::FileLocks { lock, fd: f, .. } if lock == "POSIX record locks" && *f == fd),
            "{why:?}"
        );
        assert!(
            why.to_string()
                .starts_with(&format!("it holds POSIX record locks (fd {fd}, ")),
            "{why}"
        );
        drop(f);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn own_fds_are_classified() {
        let f = std::fs::File::open("/proc/self/status").unwrap();
        let fds = open_fds(std::process::id() as i32, -1).unwrap();
        use std::os::fd::AsRawFd;
        let me = fds.iter().find(|x| x.fd == f.as_raw_fd()).unwrap();
        assert_eq!(me.kind, FK_REGULAR);
        assert!(me.cloexec);
    }
}

/// The environment variable `mosrun -L` sets: the process is never
/// migrated automatically (the balancer reads it through `mosps`' list).
pub const NO_AUTO_ENV: &[u8] = b"MOSIX_NO_AUTO=1";
/// What `mosrun -h` sets: the process stays home until it is moved by
/// hand (`mosmigrate`); after that the balancer may move it too.
pub const HOME_UNTIL_TOLD_ENV: &[u8] = b"MOSIX_NO_AUTO=home";

/// How a process asked to be left alone by the balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pinned {
    /// It did not (`mosrun` without `-L` or `-h`).
    No,
    /// Never moved automatically (`mosrun -L`).
    Always,
    /// Not moved automatically until moved by hand once (`mosrun -h`).
    UntilTold,
}

/// How `pid` was started ([`NO_AUTO_ENV`], [`HOME_UNTIL_TOLD_ENV`] in its
/// initial environment). A process that cannot be read counts as not
/// pinned: the balancer's migration request then fails on its own.
pub fn pinned(pid: i32) -> Pinned {
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let vars: Vec<&[u8]> = env.split(|&b| b == 0).collect();
    if vars.contains(&NO_AUTO_ENV) {
        Pinned::Always
    } else if vars.contains(&HOME_UNTIL_TOLD_ENV) {
        Pinned::UntilTold
    } else {
        Pinned::No
    }
}

/// Whether `pid` was started with `mosrun -L`.
pub fn no_auto(pid: i32) -> bool {
    pinned(pid) == Pinned::Always
}

/// Milliseconds `pid` has been running (since it started, or was restored,
/// at this node), from its start time in `/proc/PID/stat` and the uptime;
/// None when either cannot be read.
pub fn running_ms(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
    running_ms_from(&stat, &uptime, crate::sys::clock_ticks())
}

/// [`running_ms`] from the texts of `/proc/PID/stat` and `/proc/uptime`.
fn running_ms_from(stat: &str, uptime: &str, ticks_per_s: u64) -> Option<u64> {
    let start_ticks = Stat::parse(stat).ok()?.start_time;
    let up_s: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    let up_ms = (up_s * 1000.0) as u64;
    let start_ms = start_ticks.saturating_mul(1000) / ticks_per_s.max(1);
    Some(up_ms.saturating_sub(start_ms))
}

#[cfg(test)]
mod residency_tests {
    use super::*;

    #[test]
    fn running_time_is_uptime_minus_start() {
        // pid (comm with) spaces) state ppid ... field 22 = 500 ticks.
        let mut fields = vec!["S"];
        fields.extend(std::iter::repeat_n("0", 18));
        fields.push("500");
        fields.push("0");
        let stat = format!("42 (a b) c) {}", fields.join(" "));
        assert_eq!(running_ms_from(&stat, "12.5 3.0\n", 100), Some(7_500));
        assert_eq!(running_ms_from("garbage", "1.0 1.0", 100), None);
        assert_eq!(running_ms_from(&stat, "", 100), None);
    }

    #[test]
    fn this_process_is_running_and_not_pinned() {
        let me = std::process::id() as i32;
        assert!(running_ms(me).is_some());
        assert!(!no_auto(me));
    }
}
