//! Fixed-layout (`repr(C)`, little-endian, x86-64) records shared by the
//! three parties of a freeze: the freeze handler in libmosix (which must not
//! allocate, so it can only write fixed records), `homed`'s engine (which
//! writes images) and the `#![no_std]` restorer (which reads them without a
//! parser).
//!
//! This crate is `#![no_std]` and has no dependencies: `mosix-preload`
//! and `mosix-restore` depend on it directly, and neither may pull
//! std-using crates (serde, snow) into a signal handler or a no-libc
//! static binary. The engine re-exports it as `mosix_engine::image::layout`.
//! Every record starts with a magic and the layout version
//! [`LAYOUT_VERSION`]; bump it on any change here.
#![no_std]

/// Version of every record in this file; images and freeze records with
/// another version are refused.
pub const LAYOUT_VERSION: u32 = 3;

/// Page size the engine assumes (x86-64 base pages).
pub const PAGE_SIZE: u64 = 4096;

/// Start of the address window libmosix reserves (`PROT_NONE`,
/// `MAP_FIXED_NOREPLACE`) in every managed process, so no image ever has a
/// mapping there and `mosix-restore` can be linked at this fixed address.
/// 16 TiB: far above PIE programs (0x55..) and their heap, far below the
/// top-down mmap area and the stack (0x7f..).
pub const WINDOW_START: u64 = 0x1000_0000_0000;
/// Size of the reserved window (256 MiB).
pub const WINDOW_SIZE: u64 = 0x1000_0000;
/// Where `mosix-restore`'s text starts (`--image-base`), at the window's
/// start. Its data, bss and stack follow within the first 16 MiB.
pub const RESTORER_BASE: u64 = WINDOW_START;
/// Scratch area of the restorer (image metadata, temporary vdso home):
/// the window's upper part.
pub const SCRATCH_START: u64 = WINDOW_START + 0x0100_0000;
/// Where the restorer parks vvar/vdso between unmapping and placing them.
pub const VDSO_PARK: u64 = WINDOW_START + 0x0080_0000;
/// Most metadata (header + record + region table + runs + strings + fds)
/// an image may have, so the restorer can hold it in its scratch area.
pub const MAX_METADATA: u64 = WINDOW_SIZE - (SCRATCH_START - WINDOW_START);

/// Magic of a [`FreezeRecord`] ("MOSXFRZ1").
pub const FREEZE_MAGIC: u64 = u64::from_le_bytes(*b"MOSXFRZ1");
/// Magic of a [`Hello`] ("MOSXHELO").
pub const HELLO_MAGIC: u64 = u64::from_le_bytes(*b"MOSXHELO");
/// Magic at the start of an image file.
pub const IMAGE_MAGIC: [u8; 8] = *b"MOSIXIMG";

/// What the freeze handler saves to resume: the callee-saved registers, the
/// stack pointer and the resume address, like `setjmp`. The restorer loads
/// them and jumps to `rip` with `rax = 1`; the handler then returns through
/// the kernel's signal frame (`rt_sigreturn`), which holds every other
/// register, the FPU/xsave state and the signal mask.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JmpBuf {
    /// rbx
    pub rbx: u64,
    /// rbp
    pub rbp: u64,
    /// r12
    pub r12: u64,
    /// r13
    pub r13: u64,
    /// r14
    pub r14: u64,
    /// r15
    pub r15: u64,
    /// Stack pointer after the save call returned.
    pub rsp: u64,
    /// Return address of the save call.
    pub rip: u64,
}

/// One signal action as the kernel's `rt_sigaction` sees it (x86-64
/// `struct kernel_sigaction`, with an 8-byte mask).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KSigaction {
    /// Handler address, or 0 (SIG_DFL) / 1 (SIG_IGN).
    pub handler: u64,
    /// SA_* flags.
    pub flags: u64,
    /// `sa_restorer` (glibc's `__restore_rt`).
    pub restorer: u64,
    /// Blocked mask while the handler runs.
    pub mask: u64,
}

/// An interval timer as `getitimer` returns it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ITimer {
    /// Interval seconds.
    pub interval_sec: i64,
    /// Interval microseconds.
    pub interval_usec: i64,
    /// Remaining seconds.
    pub value_sec: i64,
    /// Remaining microseconds.
    pub value_usec: i64,
}

/// Number of signals whose actions are recorded (1..=64).
pub const NSIG: usize = 64;

/// Record flag: the process was interrupted while on its sigaltstack.
pub const RF_ON_ALTSTACK: u32 = 1;

/// What the freeze handler writes to its control fd after saving its
/// context: the kernel-side state that is not in the signal frame and not
/// readable from `/proc` by the engine. Written from a signal handler, so
/// fixed-size.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FreezeRecord {
    /// [`FREEZE_MAGIC`].
    pub magic: u64,
    /// [`LAYOUT_VERSION`].
    pub version: u32,
    /// `size_of::<FreezeRecord>()`, a second check of the layout.
    pub size: u32,
    /// The process's pid (as it sees itself).
    pub pid: i32,
    /// The control fd, which the engine leaves out of the fd table.
    pub ctl_fd: i32,
    /// Resume context.
    pub jmpbuf: JmpBuf,
    /// fs base (TLS pointer): not in the signal frame.
    pub fs_base: u64,
    /// gs base.
    pub gs_base: u64,
    /// Registered rseq area, 0 if none.
    pub rseq_addr: u64,
    /// Length it was registered with.
    pub rseq_len: u32,
    /// Its signature.
    pub rseq_sig: u32,
    /// Robust futex list head, 0 if none.
    pub robust_list: u64,
    /// Its length.
    pub robust_len: u64,
    /// Address of the kernel's `ucontext` of the freeze signal's frame.
    pub ucontext: u64,
    /// Offset of glibc's cached tid in the TCB (from fs base), or -1 if
    /// not found; the restored handler writes its new tid there.
    pub tcb_tid_offset: i64,
    /// The program break (`brk(0)`), which `/proc` does not show.
    pub brk: u64,
    /// The freeze signal.
    pub freeze_signal: i32,
    /// `RF_*` flags.
    pub flags: u32,
    /// Signal actions, index `sig - 1`.
    pub sigactions: [KSigaction; NSIG],
    /// ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF.
    pub itimers: [ITimer; 3],
}

impl FreezeRecord {
    /// A record with everything zero but the magic, version and size.
    pub const fn empty() -> FreezeRecord {
        FreezeRecord {
            magic: FREEZE_MAGIC,
            version: LAYOUT_VERSION,
            size: core::mem::size_of::<FreezeRecord>() as u32,
            pid: 0,
            ctl_fd: -1,
            jmpbuf: JmpBuf {
                rbx: 0,
                rbp: 0,
                r12: 0,
                r13: 0,
                r14: 0,
                r15: 0,
                rsp: 0,
                rip: 0,
            },
            fs_base: 0,
            gs_base: 0,
            rseq_addr: 0,
            rseq_len: 0,
            rseq_sig: 0,
            robust_list: 0,
            robust_len: 0,
            ucontext: 0,
            tcb_tid_offset: -1,
            brk: 0,
            freeze_signal: 0,
            flags: 0,
            sigactions: [KSigaction {
                handler: 0,
                flags: 0,
                restorer: 0,
                mask: 0,
            }; NSIG],
            itimers: [ITimer {
                interval_sec: 0,
                interval_usec: 0,
                value_sec: 0,
                value_usec: 0,
            }; 3],
        }
    }
}

/// Hello kind: a process that just started under mosix.
pub const HELLO_STARTED: u32 = 0;
/// Hello kind: a process that was just restored from an image.
pub const HELLO_RESTORED: u32 = 1;
/// Hello kind: a body's new program after `execve` (its libmosix found
/// the control socket through `MOSIX_BODY_CTL`); the host answers with the
/// [`BodyInfo`] of the body.
pub const HELLO_EXEC: u32 = 2;
/// Hello kind: a body's forked child, on the control socket its host made
/// for it at the fork; the host answers with the child's [`BodyInfo`].
pub const HELLO_CHILD: u32 = 3;
/// Hello kind: a deputy whose `homed` went away, on a new connection to
/// the new `homed`; a `DeputyMsg::Rejoin` follows (framed, see
/// `crate::local`).
pub const HELLO_DEPUTY: u32 = 4;

/// Magic of a [`CallRecord`].
pub const CALL_MAGIC: u64 = u64::from_le_bytes(*b"MOSXCALL");
/// Magic of a [`ReplyRecord`].
pub const REPLY_MAGIC: u64 = u64::from_le_bytes(*b"MOSXRPLY");
/// Call: the deputy's `getppid()` (the parent at home, now).
pub const CALL_GETPPID: u32 = 1;
/// Call: fork the deputy; the reply's value is the child's home pid and
/// the child's own control socket comes with it (SCM_RIGHTS).
pub const CALL_FORK: u32 = 2;
/// Call: the body reaped its child `args[0]` (home pid) with wait status
/// `args[1]`: the child's deputy ends with it and its parent reaps it.
pub const CALL_REAP: u32 = 3;
/// Call: `kill(args[0], args[1])` at home, by the deputy.
pub const CALL_KILL: u32 = 4;
/// Call: a terminal request on the relayed terminal `args[0]`, done by
/// the deputy on its real fd at home: `args[1]` is the ioctl request
/// (`TCGETS`, `TCSETS`, `TCSETSW`, `TCSETSF`, `TIOCGWINSZ`, `TIOCSWINSZ`,
/// `TIOCGPGRP`, `TIOCSPGRP`, `TCFLSH`, `TCSBRK`), `args[2]` its integer
/// argument (the group of `TIOCSPGRP`, the queue of `TCFLSH`, the
/// argument of `TCSBRK`). The record's payload is the kernel termios
/// ([`KTERMIOS_LEN`] bytes) of a `TCSETS*` or the winsize
/// ([`WINSIZE_LEN`]) of a `TIOCSWINSZ`; the reply's payload is the
/// termios of a `TCGETS` or the winsize of a `TIOCGWINSZ`, and its value
/// the group of a `TIOCGPGRP`.
pub const CALL_TTY: u32 = 5;
/// Most payload bytes after a [`CallRecord`] or a [`ReplyRecord`].
pub const CALL_PAYLOAD_MAX: u32 = 64;
/// Call: `waitid(args[0], args[1], WNOHANG | args[2])` at home, by the
/// deputy, over the children the process had at home when its body left
/// (never over the deputies of the body's own forks). The reply's value
/// is 0 when such children live but none changed state, else
/// [`wait_reply`] of the child's pid and wait status; errno `ECHILD` when
/// none is left that matches.
pub const CALL_WAIT: u32 = 6;
/// The value of a [`CALL_WAIT`] reply for child `pid` with wait status
/// `status` (as `wait4` writes it; 0xffff for "continued").
pub const fn wait_reply(pid: i32, status: i32) -> i64 {
    ((pid as i64) << 32) | (status as u32 as i64)
}

/// `(pid, status)` of a [`CALL_WAIT`] reply's value ([`wait_reply`]'s
/// inverse); `None` for 0 (no child changed state).
pub const fn split_wait_reply(value: i64) -> Option<(i32, i32)> {
    if value == 0 {
        None
    } else {
        Some(((value >> 32) as i32, value as u32 as i32))
    }
}

/// Call: a process-group or session request, done by the deputy at home,
/// where the process's real group and session are (home pids):
/// `args[0]` is [`PGRP_GETPGID`], [`PGRP_SETPGID`], [`PGRP_GETSID`] or
/// [`PGRP_SETSID`], `args[1]` the pid (0: the process itself), `args[2]`
/// the group of a `setpgid` (0: the pid's own). The reply's value is the
/// group or session asked for, the new session of a `setsid`, 0 for a
/// `setpgid`.
pub const CALL_PGRP: u32 = 7;
/// [`CALL_PGRP`]: `getpgid(args[1])`.
pub const PGRP_GETPGID: i64 = 0;
/// [`CALL_PGRP`]: `setpgid(args[1], args[2])`.
pub const PGRP_SETPGID: i64 = 1;
/// [`CALL_PGRP`]: `getsid(args[1])`.
pub const PGRP_GETSID: i64 = 2;
/// [`CALL_PGRP`]: `setsid()`.
pub const PGRP_SETSID: i64 = 3;

/// [`ReplyRecord::errno`] of a call the host could not serve now (a
/// freeze is under way): let the freeze signal in, then ask again.
pub const REPLY_BUSY: i32 = -1;

/// A synchronous forwarded call from a body to its deputy (ARCHITECTURE.md
/// section 4), written by libmosix on its control socket; answered by a
/// [`ReplyRecord`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallRecord {
    /// [`CALL_MAGIC`].
    pub magic: u64,
    /// `CALL_*`.
    pub op: u32,
    /// Bytes of payload that follow the record (at most
    /// [`CALL_PAYLOAD_MAX`]; only [`CALL_TTY`] has any).
    pub len: u32,
    /// The call's arguments (see each `CALL_*`).
    pub args: [i64; 3],
}

/// The answer to a [`CallRecord`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplyRecord {
    /// [`REPLY_MAGIC`].
    pub magic: u64,
    /// The call's `op`.
    pub op: u32,
    /// 0: done; > 0: the call failed with this errno; [`REPLY_BUSY`].
    pub errno: i32,
    /// The result (a pid for `CALL_GETPPID` and `CALL_FORK`).
    pub value: i64,
    /// Bytes of payload that follow the record (at most
    /// [`CALL_PAYLOAD_MAX`]; see [`CALL_TTY`]).
    pub len: u32,
    /// Zero.
    pub reserved: u32,
}

/// Magic of a [`BodyInfo`].
pub const BODY_MAGIC: u64 = u64::from_le_bytes(*b"MOSXBODY");
/// Most relayed terminals a [`BodyInfo`] describes.
pub const MAX_TTYS: usize = 8;
/// Size of the kernel's `struct termios` (`TCGETS`).
pub const KTERMIOS_LEN: usize = 36;
/// Size of `struct winsize` (`TIOCGWINSZ`).
pub const WINSIZE_LEN: usize = 8;

/// A terminal at home, as a body away knows it: which of its fds is
/// relayed to one. Its settings are not kept here: every terminal
/// request goes to the deputy, which asks the terminal itself
/// ([`CALL_TTY`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TtyInfo {
    /// The fd number (in the body and at home).
    pub fd: i32,
    /// Zero.
    pub reserved: u32,
}

/// Written by the daemon that placed a restored process's control socket
/// right after the process's hello on it: whether it is a body away from
/// home, and the home facts its libmosix answers with (ARCHITECTURE.md section
/// 4: identity calls, and which fds are terminals at home).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BodyInfo {
    /// [`BODY_MAGIC`].
    pub magic: u64,
    /// 1: a body on another node; 0: whole again at home.
    pub away: u32,
    /// Its pid at home.
    pub home_pid: i32,
    /// Its parent's pid at home (when it left).
    pub home_ppid: i32,
    /// Its process group at home.
    pub home_pgrp: i32,
    /// Its session at home.
    pub home_sid: i32,
    /// How many of `ttys` are used.
    pub n_ttys: u32,
    /// Its relayed terminals.
    pub ttys: [TtyInfo; MAX_TTYS],
}

impl BodyInfo {
    /// A process whole at home.
    pub const fn at_home() -> BodyInfo {
        BodyInfo {
            magic: BODY_MAGIC,
            away: 0,
            home_pid: 0,
            home_ppid: 0,
            home_pgrp: 0,
            home_sid: 0,
            n_ttys: 0,
            ttys: [TtyInfo {
                fd: -1,
                reserved: 0,
            }; MAX_TTYS],
        }
    }
}

/// Longest checkpoint path a [`Hello`] carries.
pub const HELLO_PATH_MAX: usize = 1024;

/// First message of libmosix on its control connection to `homed`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Hello {
    /// [`HELLO_MAGIC`].
    pub magic: u64,
    /// [`LAYOUT_VERSION`].
    pub version: u32,
    /// `HELLO_*`.
    pub kind: u32,
    /// The process's pid.
    pub pid: i32,
    /// Signal libmosix handles as the freeze signal.
    pub freeze_signal: i32,
    /// Periodic checkpoint interval in minutes (`mosrun -A`), 0 for none.
    pub interval_minutes: u32,
    /// Length of `checkpoint_path` used, 0 for none (`mosrun -C`).
    pub path_len: u32,
    /// Checkpoint file, not NUL-terminated.
    pub checkpoint_path: [u8; HELLO_PATH_MAX],
    /// Non-zero: a reason the process cannot be frozen safely, found by
    /// libmosix (for example: its own handler on the freeze signal).
    pub refuse_len: u32,
    /// The reason, not NUL-terminated.
    pub refuse: [u8; 124],
}

/// Verdict: go on running.
pub const VERDICT_CONTINUE: u32 = 1;
/// Verdict: the image is safe; stop (SIGSTOP) after returning.
pub const VERDICT_STOP: u32 = 2;
/// Verdict: the image is safe; end the process.
pub const VERDICT_EXIT: u32 = 3;
/// Verdict: the body now runs on another node and is held there; become
/// the deputy. Followed on the control fd by a `u32` length and that many
/// bytes: the path of `mosix-deputy`, which the handler `exec`s (keeping
/// pid, parent, fds and cwd) as `mosix-deputy CTL-FD CLOEXEC-FDS`.
pub const VERDICT_DEPUTY: u32 = 4;
/// Longest `mosix-deputy` path a [`VERDICT_DEPUTY`] may carry.
pub const DEPUTY_PATH_MAX: usize = 256;
/// Most bytes of the command line (NUL-separated arguments) the deputy
/// is `exec`ed with, so that `ps` at home shows the program's own.
pub const DEPUTY_ARGV_MAX: usize = 4096;
/// Most arguments of that command line.
pub const DEPUTY_ARGS_MAX: usize = 128;
/// First word `mosix-deputy` writes on the control fd: it is up, the
/// source may let the body go.
pub const DEPUTY_READY: u32 = 0x5245_4459;
/// Word the freeze handler writes when its `exec` of `mosix-deputy`
/// failed: the process runs on at home and the body must be dropped.
pub const DEPUTY_FAILED: u32 = 0x4641_494c;
/// Exit status of a process ended by [`VERDICT_EXIT`] (a checkpoint-and-
/// exit, `mosmigrate PID chkexit`).
pub const CHKEXIT_STATUS: i32 = 0;

/// Image header flag: none defined yet.
pub const IMAGE_FLAGS_NONE: u32 = 0;

/// The first bytes of an image file. Offsets are from the start of the file.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ImageHeader {
    /// [`IMAGE_MAGIC`].
    pub magic: [u8; 8],
    /// [`LAYOUT_VERSION`].
    pub version: u32,
    /// `size_of::<ImageHeader>()`.
    pub header_size: u32,
    /// Checksum (see `mosix_engine::image::checksum`) of the whole file
    /// with this field read as zero.
    pub checksum: u64,
    /// Total file size in bytes.
    pub file_size: u64,
    /// Size of the metadata (everything before the first page data),
    /// at most [`MAX_METADATA`].
    pub metadata_size: u64,
    /// CPU: xsave area size (CPUID 0xD.0 EBX).
    pub xsave_size: u32,
    /// Page size.
    pub page_size: u32,
    /// CPU: XCR0 (enabled xsave features).
    pub xcr0: u64,
    /// Offset of the [`FreezeRecord`].
    pub record_off: u64,
    /// Offset of the [`MmFields`].
    pub mm_off: u64,
    /// Offset of the region table ([`RegionDesc`] × `n_regions`).
    pub regions_off: u64,
    /// Number of regions.
    pub n_regions: u64,
    /// Offset of the run table ([`PageRun`] × `n_runs`).
    pub runs_off: u64,
    /// Number of runs.
    pub n_runs: u64,
    /// Offset of the fd table ([`FdDesc`] × `n_fds`).
    pub fds_off: u64,
    /// Number of fds.
    pub n_fds: u64,
    /// Offset of the string table.
    pub strings_off: u64,
    /// Its size.
    pub strings_size: u64,
    /// Number of pages of data in the image.
    pub n_pages: u64,
    /// Time of the checkpoint, seconds since the epoch.
    pub created_unix: u64,
    /// `IMAGE_FLAGS_*`.
    pub flags: u32,
    /// The process's uid.
    pub uid: u32,
    /// The process's pid when it was frozen.
    pub pid: i32,
    /// Its umask.
    pub umask: u32,
    /// String (offset, length) of the kernel release that wrote it.
    pub kernel_release: StrRef,
    /// String of the cwd.
    pub cwd: StrRef,
    /// String of the executable path.
    pub exe: StrRef,
    /// String of the command line (NUL-separated).
    pub cmdline: StrRef,
    /// Reserved, zero.
    pub reserved: [u64; 7],
}

/// A string in the string table: offset from the table's start, length.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StrRef {
    /// Offset within the string table.
    pub off: u32,
    /// Length in bytes (strings are also NUL-terminated in the table).
    pub len: u32,
}

/// mm fields for `prctl(PR_SET_MM, PR_SET_MM_MAP)` and the aux vector.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MmFields {
    /// start_code
    pub start_code: u64,
    /// end_code
    pub end_code: u64,
    /// start_data
    pub start_data: u64,
    /// end_data
    pub end_data: u64,
    /// start_brk
    pub start_brk: u64,
    /// brk
    pub brk: u64,
    /// start_stack
    pub start_stack: u64,
    /// arg_start
    pub arg_start: u64,
    /// arg_end
    pub arg_end: u64,
    /// env_start
    pub env_start: u64,
    /// env_end
    pub env_end: u64,
    /// Bytes of `auxv` used.
    pub auxv_len: u64,
    /// The aux vector (pairs of u64), as `/proc/PID/auxv` gave it.
    pub auxv: [u64; 64],
    /// Resource limits (soft, hard) by `RLIMIT_*` number; applied by
    /// `mosrun -R` before it runs the restorer.
    pub rlimits: [[u64; 2]; NRLIMITS],
}

/// `struct prctl_mm_map` of `<linux/prctl.h>`: what
/// `prctl(PR_SET_MM, PR_SET_MM_MAP)` takes (the restorer, and a deputy
/// taking its body's new command line).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PrctlMmMap {
    /// start_code
    pub start_code: u64,
    /// end_code
    pub end_code: u64,
    /// start_data
    pub start_data: u64,
    /// end_data
    pub end_data: u64,
    /// start_brk
    pub start_brk: u64,
    /// brk
    pub brk: u64,
    /// start_stack
    pub start_stack: u64,
    /// arg_start
    pub arg_start: u64,
    /// arg_end
    pub arg_end: u64,
    /// env_start
    pub env_start: u64,
    /// env_end
    pub env_end: u64,
    /// Address of the aux vector to set (0: keep it).
    pub auxv: u64,
    /// Its size in bytes.
    pub auxv_size: u32,
    /// Executable to link as /proc/PID/exe (u32::MAX: keep it).
    pub exe_fd: u32,
}

impl MmFields {
    /// These fields as a `prctl_mm_map` that keeps the aux vector and the
    /// executable link.
    pub fn prctl_map(&self) -> PrctlMmMap {
        PrctlMmMap {
            start_code: self.start_code,
            end_code: self.end_code,
            start_data: self.start_data,
            end_data: self.end_data,
            start_brk: self.start_brk,
            brk: self.brk,
            start_stack: self.start_stack,
            arg_start: self.arg_start,
            arg_end: self.arg_end,
            env_start: self.env_start,
            env_end: self.env_end,
            auxv: 0,
            auxv_size: 0,
            exe_fd: u32::MAX,
        }
    }
}

/// Number of resource limits recorded (RLIMIT_CPU..RLIMIT_RTTIME).
pub const NRLIMITS: usize = 16;

/// Region kind: anonymous private memory (data in the image).
pub const RK_ANON: u32 = 1;
/// Region kind: private file mapping; clean pages come from the file,
/// written pages from the image.
pub const RK_FILE_PRIVATE: u32 = 2;
/// Region kind: shared file mapping (re-mapped shared from the file).
pub const RK_FILE_SHARED: u32 = 3;
/// Region kind: shared anonymous memory (data in the image).
pub const RK_ANON_SHARED: u32 = 4;
/// Region kind: the process's `[vvar]` (placement only).
pub const RK_VVAR: u32 = 5;
/// Region kind: `[vvar_vclock]` (placement only).
pub const RK_VVAR_VCLOCK: u32 = 6;
/// Region kind: `[vdso]` (placement only).
pub const RK_VDSO: u32 = 7;

/// Region flag: grows down (the main stack).
pub const RF_GROWSDOWN: u32 = 1;
/// Region flag: the `[heap]`.
pub const RF_HEAP: u32 = 2;
/// Region flag: the `[stack]`.
pub const RF_STACK: u32 = 4;

/// PROT_READ as stored in `RegionDesc::prot`.
pub const PROT_R: u32 = 1;
/// PROT_WRITE.
pub const PROT_W: u32 = 2;
/// PROT_EXEC.
pub const PROT_X: u32 = 4;

/// One mapping of the frozen process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegionDesc {
    /// First address (page aligned).
    pub start: u64,
    /// End address (exclusive, page aligned).
    pub end: u64,
    /// `RK_*`.
    pub kind: u32,
    /// `PROT_R|PROT_W|PROT_X`.
    pub prot: u32,
    /// `RF_*` flags.
    pub flags: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// File offset of the mapping (file kinds).
    pub file_off: u64,
    /// File path (file kinds).
    pub path: StrRef,
    /// File size when frozen (file kinds), to detect a changed file.
    pub file_size: u64,
    /// Index of this region's first run in the run table.
    pub first_run: u64,
    /// Number of runs.
    pub n_runs: u64,
}

/// Pages `[start_page, start_page + n_pages)` of a region (page indices
/// from the region's start) whose contents are in the image at `data_off`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageRun {
    /// First page index within the region.
    pub start_page: u64,
    /// Number of pages.
    pub n_pages: u64,
    /// File offset of the data (page aligned).
    pub data_off: u64,
}

/// Fd kind: regular file, re-opened by path at its offset.
pub const FK_REGULAR: u32 = 1;
/// Fd kind: a tty.
pub const FK_TTY: u32 = 2;
/// Fd kind: a pipe or FIFO.
pub const FK_PIPE: u32 = 3;
/// Fd kind: a socket.
pub const FK_SOCKET: u32 = 4;
/// Fd kind: a directory, re-opened by path.
pub const FK_DIR: u32 = 5;
/// Fd kind: anything else (`/dev/null` and other character devices, anon
/// inodes).
pub const FK_OTHER: u32 = 6;

/// One open fd of the frozen process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdDesc {
    /// The fd number.
    pub fd: i32,
    /// `FK_*`.
    pub kind: u32,
    /// Open flags (`O_*` from fdinfo, without O_CLOEXEC).
    pub flags: u32,
    /// Non-zero if FD_CLOEXEC is set.
    pub cloexec: u32,
    /// 1 + the lowest other fd sharing this open file description (a
    /// `dup`, like `2>&1`), 0 if none: restored as a dup of that one, so
    /// the two keep one offset.
    pub shares_with: u32,
    /// Zero.
    pub reserved: u32,
    /// File offset.
    pub pos: u64,
    /// Size of a regular file when frozen.
    pub size: u64,
    /// Target path (`/proc/PID/fd/N` link).
    pub path: StrRef,
}
