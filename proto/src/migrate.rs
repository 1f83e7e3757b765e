//! Messages of a migration (ARCHITECTURE.md section 3, steps 3-5 and 7).
//!
//! The source's `homed` connects an authenticated link to the destination's
//! body host (a listener of `remoted` on its port + [`HOST_PORT_OFFSET`];
//! bodies must be descendants of `remoted`) and says [`ToHost::Offer`]. Once
//! [`FromHost::Accepted`], it sends the image as raw link messages (exactly
//! `bytes` bytes in all, see `mosix_engine::image::ImagePlan`) and then
//! [`ToHost::ImageEnd`]. The host restores the body held before its first
//! user instruction and answers [`FromHost::Held`] (or
//! [`FromHost::Failed`]). Only then may the source commit (its process
//! becomes the deputy) and say [`ToHost::Go`]; anything else, including a
//! closed link, makes the host kill the held body. After `Go` the same link
//! carries signals for the body and, at the end, its exit status.
//!
//! A body moves on from one remote node to another without its image
//! passing through home (ARCHITECTURE.md section 3, step 6): the home makes a
//! direct [`ToHost::Offer`] to the destination, which answers
//! [`FromHost::Expecting`] with a token; the home tells the body's node
//! [`ToHost::FreezeTo`] the destination and token; that node freezes the
//! body and delivers its image on a link of its own
//! ([`ToHost::Deliver`]), then says [`FromHost::Sent`]. The destination
//! answers `Held` to the home, which commits as above.
//!
//! Between `homed` and `mosix-deputy` (over the process's old control fd,
//! with [`crate::local`] framing) pass [`DeputyMsg`]s.

use crate::view::Bytes;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// The body host listens on the remoted port plus this.
pub const HOST_PORT_OFFSET: u16 = 2;

/// Largest raw image chunk the source sends in one link message.
pub const CHUNK: usize = 4 << 20;

/// The body-host address of a node whose `remoted` listens on `remoted`.
pub fn host_addr(remoted: SocketAddr) -> SocketAddr {
    let mut a = remoted;
    a.set_port(remoted.port().wrapping_add(HOST_PORT_OFFSET));
    a
}

/// An authenticated link, saying `hello`, to node `node`'s body host,
/// whose `remoted` listens at `remoted`: connect within 5 s, watch the
/// peer ([`watch_peer`]), and give every read and write `step`.
pub fn connect_host(
    node: &str,
    remoted: SocketAddr,
    key: &crate::link::ClusterKey,
    hello: crate::link::Hello,
    step: std::time::Duration,
) -> Result<crate::link::Link<std::net::TcpStream>, String> {
    let addr = host_addr(remoted);
    let stream = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))
        .map_err(|e| {
            format!("cannot reach node {node}'s body host at {addr}: {e}; is its remoted running?")
        })?;
    if let Err(e) = watch_peer(&stream) {
        tracing::warn!(%node, error = %e, "cannot set keepalive on a migration link; a silent node is noticed late");
    }
    let _ = stream.set_read_timeout(Some(step));
    let _ = stream.set_write_timeout(Some(step));
    crate::link::Link::connect(stream, key, hello)
        .map(|(link, _)| link)
        .map_err(|e| format!("no link to node {node} ({addr}): {e}"))
}

/// Make a migration link notice a silent peer (a node that crashed or
/// was cut off sends no FIN): TCP keepalive probes after 1 s of silence,
/// each second, and the link fails after 3 unanswered ones; data left
/// unacknowledged for 4 s fails it too (without that, retransmissions
/// would go on for minutes). So a lost node is known within about 4 s
/// (the deputy must end within 5 s).
pub fn watch_peer(stream: &std::net::TcpStream) -> std::io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    setsockopt(stream, sockopt::KeepAlive, &true)?;
    setsockopt(stream, sockopt::TcpKeepIdle, &1)?;
    setsockopt(stream, sockopt::TcpKeepInterval, &1)?;
    setsockopt(stream, sockopt::TcpKeepCount, &3)?;
    setsockopt(stream, sockopt::TcpUserTimeout, &4000)?;
    Ok(())
}

/// Source to destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToHost {
    /// Please host this body.
    Offer {
        /// The process's home pid (for logs and `mosps` at the host).
        home_pid: i32,
        /// Owner uid the body runs with.
        uid: u32,
        /// Owner gid the body runs with.
        gid: u32,
        /// Exact image size that follows.
        bytes: u64,
        /// The fd number of the process's control connection (left out of
        /// its image): the host gives the body its control socket there.
        #[serde(default = "no_fd")]
        ctl_fd: i32,
        /// The process's freeze signal.
        #[serde(default)]
        freeze_signal: i32,
        /// What the body's identity calls and tty control answer.
        #[serde(default)]
        home: HomeFacts,
        /// The home's clocks as it sent the offer: the body runs in a time
        /// namespace that shows them (none: the host's own clocks).
        #[serde(default)]
        clocks: Option<HomeClocks>,
        /// The image does not come on this link but straight from the
        /// node the body runs on now (a move between two remote nodes,
        /// ARCHITECTURE.md section 3 step 6): answer [`FromHost::Expecting`]
        /// instead of [`FromHost::Accepted`], and take the image that
        /// node delivers under that token ([`ToHost::Deliver`]).
        #[serde(default)]
        direct: bool,
    },
    /// First message on a link from another node's `remoted`: the image
    /// of a body its home moves here, which this host expects under
    /// `token` ([`FromHost::Expecting`]). Exactly `bytes` bytes follow as
    /// raw link messages, then [`ToHost::ImageEnd`]; answered
    /// [`FromHost::Delivered`] or [`FromHost::Failed`].
    Deliver {
        /// The destination's token for the image.
        token: u64,
        /// Exact image size that follows.
        bytes: u64,
    },
    /// Freeze the running body and send its image straight to node
    /// `node`'s body host (at `address`), which expects it under `token`;
    /// answer [`FromHost::Sent`] once that host has it all, or
    /// [`FromHost::FreezeFailed`] (the body then runs on here). Sent, it
    /// stays frozen here until [`ToHost::Done`] or [`ToHost::Resume`].
    FreezeTo {
        /// The destination's name, for messages.
        node: String,
        /// Its `remoted`'s address (`ip:port`; its body host listens at
        /// [`host_addr`] of it). A string: socket addresses do not pass
        /// through the internally tagged encoding.
        address: String,
        /// The destination's token for the image.
        token: u64,
    },
    /// The image is complete; its header checksum.
    ImageEnd {
        /// Checksum to store in the header (see `ImagePlan::stream`).
        checksum: u64,
    },
    /// The source committed: let the held body run.
    Go,
    /// The source gave up: kill the held body.
    Abort,
    /// Raise this signal in the body (forwarded from the deputy).
    Signal {
        /// Signal number.
        sig: i32,
    },
    /// Input for the body's relayed fd `fd` (read at home from the real
    /// fd); empty: end of input (a pipe's writer closed).
    Input {
        /// The fd number.
        fd: i32,
        /// The bytes.
        data: Bytes,
    },
    /// Freeze the running body and send its image back
    /// ([`FromHost::Image`]); it stays frozen here until [`ToHost::Done`]
    /// or [`ToHost::Resume`].
    Freeze,
    /// The frozen body runs elsewhere now: end it here, silently, and
    /// answer [`FromHost::Left`].
    Done,
    /// The move failed: let the frozen body run on here.
    Resume,
    /// On a new link: host the forked child of a body here, whose host
    /// made the child's control socket under `token` when it forwarded
    /// the fork ([`Call::Fork`]). Answered [`FromHost::Held`] once the
    /// child said hello (it runs already), or [`FromHost::Failed`].
    Adopt {
        /// The child's home pid (its deputy's pid).
        home_pid: i32,
        /// The token of the fork.
        token: u64,
    },
    /// The answer to the body's [`FromHost::Call`].
    Reply {
        /// The answer.
        reply: CallReply,
    },
    /// First message on a new link from a home whose `homed` restarted:
    /// take this link as the one to the body `body_pid` of home process
    /// `home_pid` (which lost its old link). Answered [`FromHost::Held`]
    /// and then served like the old link (output held meanwhile comes
    /// first, then the body's end if it ended meanwhile), or
    /// [`FromHost::Failed`] if no such body waits for its home here.
    Reattach {
        /// The process's home pid (its deputy's pid).
        home_pid: i32,
        /// The body's pid on this node, as the deputy last heard it.
        body_pid: i32,
        /// The process's owner (the deputy's uid, as the home's kernel
        /// says): it must be the body's.
        uid: u32,
        /// Bytes of output the deputy wrote, by fd, since its last
        /// [`DeputyMsg::Where`]: the host sends again what followed.
        #[serde(default)]
        written: Vec<(i32, u64)>,
    },
}

/// A call the body forwards to its deputy (ARCHITECTURE.md section 4, "process
/// tree"), synchronous: the body waits for the [`CallReply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Call {
    /// The deputy's parent pid.
    Getppid,
    /// Fork the deputy: the child deputy's pid is the child's home pid;
    /// its body adopts the control socket the host keeps under `token`.
    Fork {
        /// The host's token for the child's control socket.
        token: u64,
    },
    /// The body reaped its child `pid` (a home pid) with `status`: the
    /// child's deputy ends the same way and the deputy reaps it.
    Reap {
        /// The child's home pid.
        pid: i32,
        /// How it ended.
        status: BodyStatus,
    },
    /// `kill(pid, sig)` at home.
    Kill {
        /// Target (home pid, 0 or a negative group, as kill(2)).
        pid: i32,
        /// The signal (0: only check).
        sig: i32,
    },
    /// A process-group or session request, done by the deputy at home.
    Pgrp {
        /// Which.
        op: PgrpOp,
    },
    /// A terminal request on the body's relayed terminal `fd`, done by
    /// the deputy on its own `fd` (the real terminal at home).
    Tty {
        /// The fd number (the same in the body and the deputy).
        fd: i32,
        /// What to do.
        op: TtyOp,
    },
    /// `waitid(idtype, id, WNOHANG | options)` at home over the children
    /// the process left at home (see `CALL_WAIT`); never blocks.
    Wait {
        /// `P_ALL` (0), `P_PID` (1) or `P_PGID` (2).
        idtype: i32,
        /// The pid or process group (home ids); 0 with `P_PGID`: the
        /// deputy's own group.
        id: i32,
        /// `WEXITED`, `WSTOPPED`, `WCONTINUED`, `WNOWAIT` (at least one
        /// of the first three).
        options: i32,
    },
}

/// A process-group or session request a body forwards
/// (`layout::CALL_PGRP`): the call of the same name at home, by the
/// deputy, with home pids (0: the process itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PgrpOp {
    /// `getpgid(pid)`.
    GetPgid {
        /// The process.
        pid: i32,
    },
    /// `setpgid(pid, pgid)`.
    SetPgid {
        /// The process.
        pid: i32,
        /// Its new group (0: its own pid).
        pgid: i32,
    },
    /// `getsid(pid)`.
    GetSid {
        /// The process.
        pid: i32,
    },
    /// `setsid()`.
    SetSid,
}

/// A terminal request a body forwards (`layout::CALL_TTY`); each is
/// the ioctl of the same name on the terminal at home.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TtyOp {
    /// `TCGETS` (`tcgetattr`): answered [`CallReply::Termios`].
    GetAttr,
    /// `TCSETS`, `TCSETSW`, `TCSETSF` (`tcsetattr`).
    SetAttr {
        /// When the change takes effect.
        when: SetWhen,
        /// The new settings.
        termios: Termios,
    },
    /// `TIOCGWINSZ`: answered [`CallReply::Winsize`].
    GetWinsize,
    /// `TIOCSWINSZ`.
    SetWinsize {
        /// The new size.
        winsize: Winsize,
    },
    /// `TIOCGPGRP` (`tcgetpgrp`): the foreground group (a home pid).
    GetPgrp,
    /// `TIOCSPGRP` (`tcsetpgrp`).
    SetPgrp {
        /// The new foreground group (a home pid).
        pgrp: i32,
    },
    /// `TCFLSH` (`tcflush`).
    Flush {
        /// `TCIFLUSH` (0), `TCOFLUSH` (1) or `TCIOFLUSH` (2).
        queue: i32,
    },
    /// `TCSBRK`: 0 sends a break, anything else waits until the output
    /// is sent (`tcdrain`).
    Break {
        /// The ioctl's argument.
        arg: i32,
    },
}

impl TtyOp {
    /// Whether the request discards input the body has not read yet
    /// (`TCSETSF`, `TCFLSH` of the input queue).
    pub fn discards_input(&self) -> bool {
        matches!(
            self,
            TtyOp::SetAttr {
                when: SetWhen::Flush,
                ..
            } | TtyOp::Flush {
                queue: libc::TCIFLUSH | libc::TCIOFLUSH
            }
        )
    }
}

/// When a `tcsetattr` takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetWhen {
    /// `TCSANOW` (`TCSETS`).
    Now,
    /// `TCSADRAIN` (`TCSETSW`): after the output written so far is sent.
    Drain,
    /// `TCSAFLUSH` (`TCSETSF`): as `Drain`, and unread input is dropped.
    Flush,
}

impl SetWhen {
    /// The ioctl request.
    pub fn request(self) -> libc::c_ulong {
        match self {
            SetWhen::Now => libc::TCSETS,
            SetWhen::Drain => libc::TCSETSW,
            SetWhen::Flush => libc::TCSETSF,
        }
    }
}

/// The kernel's `struct termios` (x86-64, what `TCGETS` fills), field
/// by field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Termios {
    /// Input modes.
    pub iflag: u32,
    /// Output modes.
    pub oflag: u32,
    /// Control modes (the speed is in here).
    pub cflag: u32,
    /// Local modes (`ECHO`, `ICANON`, ...).
    pub lflag: u32,
    /// Line discipline.
    pub line: u8,
    /// Control characters.
    pub cc: [u8; 19],
}

impl Termios {
    /// From the kernel's bytes; `None` if there are not exactly
    /// [`mosix_layout::KTERMIOS_LEN`].
    pub fn from_bytes(b: &[u8]) -> Option<Termios> {
        let b: &[u8; mosix_layout::KTERMIOS_LEN] = b.try_into().ok()?;
        let word = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut cc = [0u8; 19];
        cc.copy_from_slice(&b[17..]);
        Some(Termios {
            iflag: word(0),
            oflag: word(4),
            cflag: word(8),
            lflag: word(12),
            line: b[16],
            cc,
        })
    }

    /// The kernel's bytes.
    pub fn to_bytes(&self) -> [u8; mosix_layout::KTERMIOS_LEN] {
        let mut b = [0u8; mosix_layout::KTERMIOS_LEN];
        for (i, w) in [self.iflag, self.oflag, self.cflag, self.lflag]
            .iter()
            .enumerate()
        {
            b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        b[16] = self.line;
        b[17..].copy_from_slice(&self.cc);
        b
    }
}

/// `struct winsize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Winsize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
    /// Width in pixels.
    pub xpixel: u16,
    /// Height in pixels.
    pub ypixel: u16,
}

impl Winsize {
    /// From the kernel's bytes; `None` if there are not exactly
    /// [`mosix_layout::WINSIZE_LEN`].
    pub fn from_bytes(b: &[u8]) -> Option<Winsize> {
        let b: &[u8; mosix_layout::WINSIZE_LEN] = b.try_into().ok()?;
        let half = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(Winsize {
            rows: half(0),
            cols: half(2),
            xpixel: half(4),
            ypixel: half(6),
        })
    }

    /// The kernel's bytes.
    pub fn to_bytes(&self) -> [u8; mosix_layout::WINSIZE_LEN] {
        let mut b = [0u8; mosix_layout::WINSIZE_LEN];
        for (i, h) in [self.rows, self.cols, self.xpixel, self.ypixel]
            .iter()
            .enumerate()
        {
            b[i * 2..i * 2 + 2].copy_from_slice(&h.to_ne_bytes());
        }
        b
    }
}

/// The `waitid` options a [`Call::Wait`] may carry.
pub const WAIT_OPTIONS: i32 =
    libc_wait::WEXITED | libc_wait::WSTOPPED | libc_wait::WCONTINUED | libc_wait::WNOWAIT;

/// The Linux x86-64 values of the `waitid` constants (the wire carries
/// them as they are; proto does not link libc).
pub mod libc_wait {
    /// `P_ALL`.
    pub const P_ALL: i32 = 0;
    /// `P_PID`.
    pub const P_PID: i32 = 1;
    /// `P_PGID`.
    pub const P_PGID: i32 = 2;
    /// `WSTOPPED` (= `WUNTRACED`).
    pub const WSTOPPED: i32 = 2;
    /// `WEXITED`.
    pub const WEXITED: i32 = 4;
    /// `WCONTINUED`.
    pub const WCONTINUED: i32 = 8;
    /// `WNOWAIT`.
    pub const WNOWAIT: i32 = 0x0100_0000;
}

/// The answer to a [`Call`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CallReply {
    /// Done, with this value (a pid, or 0).
    Value {
        /// The result.
        value: i64,
    },
    /// Failed with this errno.
    Errno {
        /// The errno, > 0.
        errno: i32,
    },
    /// Not now (the body is being frozen): ask again after the freeze.
    Busy,
    /// Done: a terminal's settings ([`TtyOp::GetAttr`]).
    Termios {
        /// The settings.
        termios: Termios,
    },
    /// Done: a terminal's size ([`TtyOp::GetWinsize`]).
    Winsize {
        /// The size.
        winsize: Winsize,
    },
}

/// Why a body's call record was refused (the connection is closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// the call record has a bad magic: the body's libmosix is out of step with its host
    #[error("the call record has a bad magic: the body's libmosix is out of step with its host")]
    BadMagic,
    /// unknown call {0}: the body's libmosix is newer than its host
    #[error("unknown call {0}: the body's libmosix is newer than its host")]
    UnknownOp(u32),
    /// call {op} has a bad argument {value}
    #[error("call {op} has a bad argument {value}")]
    BadArgument {
        /// The call.
        op: u32,
        /// The argument.
        value: i64,
    },
    /// call {op} came with {len} bytes of payload, which it does not take
    #[error("call {op} came with {len} bytes of payload, which it does not take")]
    BadPayload {
        /// The call.
        op: u32,
        /// The payload's length.
        len: usize,
    },
}

impl Call {
    /// The call a body's record and the `payload` that followed it ask
    /// for; a fork gets the host's `token`.
    pub fn from_record(
        r: &mosix_layout::CallRecord,
        payload: &[u8],
        token: u64,
    ) -> Result<Call, CallError> {
        use mosix_layout as l;
        if r.magic != l::CALL_MAGIC {
            return Err(CallError::BadMagic);
        }
        let int =
            |v: i64| i32::try_from(v).map_err(|_| CallError::BadArgument { op: r.op, value: v });
        let bad_payload = CallError::BadPayload {
            op: r.op,
            len: payload.len(),
        };
        if r.len as usize != payload.len() {
            return Err(bad_payload);
        }
        if r.op == l::CALL_TTY {
            return Call::tty_from_record(r, payload);
        }
        if !payload.is_empty() {
            return Err(bad_payload);
        }
        match r.op {
            l::CALL_GETPPID => Ok(Call::Getppid),
            l::CALL_FORK => Ok(Call::Fork { token }),
            l::CALL_REAP => {
                let pid = int(r.args[0])?;
                let status =
                    BodyStatus::from_wait(int(r.args[1])?).ok_or(CallError::BadArgument {
                        op: r.op,
                        value: r.args[1],
                    })?;
                if pid <= 0 {
                    return Err(CallError::BadArgument {
                        op: r.op,
                        value: r.args[0],
                    });
                }
                Ok(Call::Reap { pid, status })
            }
            l::CALL_KILL => {
                let pid = int(r.args[0])?;
                let sig = int(r.args[1])?;
                if !(0..=64).contains(&sig) {
                    return Err(CallError::BadArgument {
                        op: r.op,
                        value: r.args[1],
                    });
                }
                Ok(Call::Kill { pid, sig })
            }
            l::CALL_PGRP => {
                let bad = |value| CallError::BadArgument { op: r.op, value };
                let pid = int(r.args[1])
                    .ok()
                    .filter(|p| *p >= 0)
                    .ok_or(bad(r.args[1]))?;
                let pgid = int(r.args[2])
                    .ok()
                    .filter(|p| *p >= 0)
                    .ok_or(bad(r.args[2]))?;
                let op = match r.args[0] {
                    l::PGRP_GETPGID => PgrpOp::GetPgid { pid },
                    l::PGRP_SETPGID => PgrpOp::SetPgid { pid, pgid },
                    l::PGRP_GETSID => PgrpOp::GetSid { pid },
                    l::PGRP_SETSID => PgrpOp::SetSid,
                    other => return Err(bad(other)),
                };
                Ok(Call::Pgrp { op })
            }
            l::CALL_WAIT => {
                use libc_wait as w;
                let idtype = int(r.args[0])?;
                let id = int(r.args[1])?;
                let options = int(r.args[2])?;
                let bad = |value| CallError::BadArgument { op: r.op, value };
                if ![w::P_ALL, w::P_PID, w::P_PGID].contains(&idtype) {
                    return Err(bad(r.args[0]));
                }
                if id < 0 || (idtype == w::P_PID && id == 0) {
                    return Err(bad(r.args[1]));
                }
                if options & !WAIT_OPTIONS != 0
                    || options & (w::WEXITED | w::WSTOPPED | w::WCONTINUED) == 0
                {
                    return Err(bad(r.args[2]));
                }
                Ok(Call::Wait {
                    idtype,
                    id,
                    options,
                })
            }
            op => Err(CallError::UnknownOp(op)),
        }
    }

    /// A [`mosix_layout::CALL_TTY`] record: a known request on a
    /// valid fd, with exactly the payload the request takes.
    fn tty_from_record(r: &mosix_layout::CallRecord, payload: &[u8]) -> Result<Call, CallError> {
        let bad = |value: i64| CallError::BadArgument { op: r.op, value };
        let fd = i32::try_from(r.args[0])
            .ok()
            .filter(|fd| *fd >= 0)
            .ok_or(bad(r.args[0]))?;
        let arg = i32::try_from(r.args[2]).map_err(|_| bad(r.args[2]))?;
        let request = libc::c_ulong::try_from(r.args[1]).map_err(|_| bad(r.args[1]))?;
        let no_payload = |op: TtyOp| {
            if payload.is_empty() {
                Ok(op)
            } else {
                Err(CallError::BadPayload {
                    op: r.op,
                    len: payload.len(),
                })
            }
        };
        let bad_payload = CallError::BadPayload {
            op: r.op,
            len: payload.len(),
        };
        let set = |when| {
            Termios::from_bytes(payload)
                .map(|termios| TtyOp::SetAttr { when, termios })
                .ok_or(bad_payload.clone())
        };
        let op = match request {
            libc::TCGETS => no_payload(TtyOp::GetAttr)?,
            libc::TCSETS => set(SetWhen::Now)?,
            libc::TCSETSW => set(SetWhen::Drain)?,
            libc::TCSETSF => set(SetWhen::Flush)?,
            libc::TIOCGWINSZ => no_payload(TtyOp::GetWinsize)?,
            libc::TIOCSWINSZ => TtyOp::SetWinsize {
                winsize: Winsize::from_bytes(payload).ok_or(bad_payload.clone())?,
            },
            libc::TIOCGPGRP => no_payload(TtyOp::GetPgrp)?,
            libc::TIOCSPGRP if arg > 0 => no_payload(TtyOp::SetPgrp { pgrp: arg })?,
            libc::TCFLSH if (0..=2).contains(&arg) => no_payload(TtyOp::Flush { queue: arg })?,
            libc::TCSBRK => no_payload(TtyOp::Break { arg })?,
            libc::TIOCSPGRP | libc::TCFLSH => return Err(bad(r.args[2])),
            _ => return Err(bad(r.args[1])),
        };
        Ok(Call::Tty { fd, op })
    }
}

impl CallReply {
    /// The record the body reads for its call `op` (its `len` says how
    /// many bytes of [`CallReply::payload`] follow it).
    pub fn to_record(self, op: u32) -> mosix_layout::ReplyRecord {
        use mosix_layout as l;
        let (errno, value) = match self {
            CallReply::Value { value } => (0, value),
            CallReply::Errno { errno } => (errno.max(1), -1),
            CallReply::Busy => (l::REPLY_BUSY, -1),
            CallReply::Termios { .. } | CallReply::Winsize { .. } => (0, 0),
        };
        l::ReplyRecord {
            magic: l::REPLY_MAGIC,
            op,
            errno,
            value,
            len: self.payload().len() as u32,
            reserved: 0,
        }
    }

    /// The bytes that follow the reply's record.
    pub fn payload(&self) -> Vec<u8> {
        match self {
            CallReply::Termios { termios } => termios.to_bytes().to_vec(),
            CallReply::Winsize { winsize } => winsize.to_bytes().to_vec(),
            _ => Vec::new(),
        }
    }
}

impl BodyStatus {
    /// The `waitpid` status word of this end (the inverse of
    /// [`BodyStatus::from_wait`]).
    pub fn to_wait(self) -> i32 {
        match self {
            BodyStatus::Code { code } => (code & 0xff) << 8,
            BodyStatus::Signal { sig, core } => (sig & 0x7f) | if core { 0x80 } else { 0 },
        }
    }
}

/// The home's CLOCK_MONOTONIC and CLOCK_BOOTTIME, in nanoseconds. Every
/// machine's count from its own boot; a body away is restored in a time
/// namespace whose offsets make them the home's (ARCHITECTURE.md section 3), so
/// a program's monotonic time runs on across moves, never jumps or goes
/// back, and is continuous again when it comes home.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HomeClocks {
    /// CLOCK_MONOTONIC.
    pub monotonic_ns: i64,
    /// CLOCK_BOOTTIME.
    pub boottime_ns: i64,
}

impl HomeClocks {
    /// This process's clocks now.
    pub fn now() -> HomeClocks {
        let ns = |id| {
            nix::time::clock_gettime(id)
                .map(|t| t.tv_sec() * 1_000_000_000 + t.tv_nsec())
                .unwrap_or(0)
        };
        HomeClocks {
            monotonic_ns: ns(nix::time::ClockId::CLOCK_MONOTONIC),
            boottime_ns: ns(nix::time::ClockId::CLOCK_BOOTTIME),
        }
    }
}

/// The home side of a process, as its body away answers for it
/// (ARCHITECTURE.md section 4), taken when it moves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HomeFacts {
    /// Its pid at home.
    pub pid: i32,
    /// Its parent's pid at home.
    pub ppid: i32,
    /// Its process group at home.
    pub pgrp: i32,
    /// Its session at home.
    pub sid: i32,
    /// Its terminals at home (fds that are ttys).
    pub ttys: Vec<TtyFacts>,
}

/// One terminal at home. Its settings and size are not copied: the body
/// asks the deputy for them each time ([`Call::Tty`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtyFacts {
    /// The fd number.
    pub fd: i32,
}

impl HomeFacts {
    /// The record a body's libmosix reads after its hello.
    pub fn body_info(&self) -> mosix_layout::BodyInfo {
        use mosix_layout::{BodyInfo, MAX_TTYS};
        let mut b = BodyInfo::at_home();
        b.away = 1;
        b.home_pid = self.pid;
        b.home_ppid = self.ppid;
        b.home_pgrp = self.pgrp;
        b.home_sid = self.sid;
        for (slot, t) in b.ttys.iter_mut().zip(self.ttys.iter().take(MAX_TTYS)) {
            slot.fd = t.fd;
        }
        b.n_ttys = self.ttys.len().min(MAX_TTYS) as u32;
        b
    }
}

fn no_fd() -> i32 {
    -1
}

/// Longest command line [`FromHost::Exec`] carries; a longer one is cut.
pub const EXEC_CMDLINE_MAX: usize = 4096;

/// Destination to source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromHost {
    /// Send the image.
    Accepted,
    /// The answer to a direct [`ToHost::Offer`]: the body's current node
    /// is to deliver the image under `token`.
    Expecting {
        /// What the delivering node says in [`ToHost::Deliver`].
        token: u64,
    },
    /// The whole image was delivered to the destination and checked
    /// there ([`ToHost::FreezeTo`]); the body waits frozen for the
    /// home's decision.
    Sent {
        /// Image bytes delivered.
        bytes: u64,
    },
    /// The answer to a [`ToHost::Deliver`]: all of it arrived.
    Delivered,
    /// Not hosting it; nothing was started.
    Refused {
        /// Why, and what to do.
        reason: crate::reason::Refusal,
    },
    /// Restored and held before its first user instruction.
    Held {
        /// The body's pid on the destination.
        body_pid: i32,
    },
    /// Restoring failed; nothing runs at the destination.
    Failed {
        /// What failed.
        reason: crate::reason::HostFailure,
    },
    /// The body wrote `data` to its relayed fd `fd` (a pipe at home);
    /// all of a body's output comes before its [`FromHost::Exited`].
    /// Empty: the body (and every process on its node sharing the pipe)
    /// closed it; the deputy closes its copy.
    Output {
        /// The fd number (the same in the body and the deputy).
        fd: i32,
        /// The bytes, in order.
        data: Bytes,
    },
    /// This node wants the body gone (its owner is back, memory is short,
    /// `mosctl expel`): the home should move it home or elsewhere.
    Leave {
        /// Why, for the home's log.
        reason: crate::reason::LeaveReason,
    },
    /// The body has read all the input it was given on `fd`: read more at
    /// home (at most one chunk is ever in flight, so little is read ahead
    /// of the body).
    WantInput {
        /// The fd number.
        fd: i32,
    },
    /// Input given to the body on `fd` that it had not read when it was
    /// frozen: it goes first wherever the body runs next. Sent just
    /// before [`FromHost::Image`].
    Unread {
        /// The fd number.
        fd: i32,
        /// The bytes, in order.
        data: Bytes,
    },
    /// The body is frozen; its image follows as raw link messages of
    /// exactly `bytes` bytes in all, then [`FromHost::ImageEnd`]. All its
    /// output came before this.
    Image {
        /// Exact image size that follows.
        bytes: u64,
    },
    /// The image is complete; its header checksum.
    ImageEnd {
        /// Checksum to store in the header.
        checksum: u64,
    },
    /// The body could not be frozen or captured; it runs on here.
    FreezeFailed {
        /// What failed.
        reason: crate::reason::FreezeFailure,
    },
    /// The frozen body was ended after [`ToHost::Done`]: it runs only
    /// where it was moved to. The last message on the link.
    Left,
    /// The body ended.
    Exited {
        /// How.
        status: BodyStatus,
    },
    /// The body (a forked child) ended and its parent body reaped it
    /// before its host could read how: the status comes with the parent's
    /// [`Call::Reap`]. The last message on the link.
    Reaped,
    /// The body asks its deputy: answer with [`ToHost::Reply`].
    Call {
        /// What it asks.
        call: Call,
    },
    /// The body exec'd another program: its command line (NUL-separated
    /// arguments, as `/proc/PID/cmdline`, at most 4 KiB), for the deputy
    /// to show at home.
    Exec {
        /// The new command line.
        cmdline: Bytes,
    },
}

/// How a body ended, as `wait` saw it at the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BodyStatus {
    /// `exit(code)`.
    Code {
        /// Exit code.
        code: i32,
    },
    /// Killed by a signal.
    Signal {
        /// The signal.
        sig: i32,
        /// Whether it dumped core.
        core: bool,
    },
}

impl BodyStatus {
    /// Decode a `waitpid` status word; `None` if it is not a termination.
    pub fn from_wait(status: i32) -> Option<BodyStatus> {
        if libc::WIFEXITED(status) {
            Some(BodyStatus::Code {
                code: libc::WEXITSTATUS(status),
            })
        } else if libc::WIFSIGNALED(status) {
            Some(BodyStatus::Signal {
                sig: libc::WTERMSIG(status),
                core: libc::WCOREDUMP(status),
            })
        } else {
            None
        }
    }
}

/// Between `homed` and `mosix-deputy`, after the deputy's first word
/// (`layout::DEPUTY_READY`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DeputyMsg {
    /// Deputy to homed: a signal arrived for the body.
    Signal {
        /// Signal number.
        sig: i32,
    },
    /// Homed to deputy: write `data` to the deputy's own `fd` (the body's
    /// output to a pipe at home); empty: close `fd` (the body closed it).
    Output {
        /// The fd number.
        fd: i32,
        /// The bytes.
        data: Bytes,
    },
    /// Homed to deputy: the body ended; end the same way.
    Exited {
        /// How.
        status: BodyStatus,
    },
    /// Homed to deputy: the body's node is gone (end as if SIGKILLed).
    Lost,
    /// Homed to deputy: the body runs another program; show its command
    /// line (see [`FromHost::Exec`]).
    Cmdline {
        /// NUL-separated arguments.
        cmdline: Bytes,
    },
    /// Homed to deputy: read a chunk of input from your `fd` for the body.
    WantInput {
        /// The fd number.
        fd: i32,
    },
    /// Homed to deputy: stop reading input (the body is coming home);
    /// answer [`DeputyMsg::InputStopped`], after which no `Input` follows.
    StopInput,
    /// Deputy to homed: input reading stopped; what was read but not
    /// sent yet, by fd.
    InputStopped {
        /// The bytes, by fd, in order.
        leftover: Vec<(i32, Bytes)>,
    },
    /// Deputy to homed: input read from `fd` (empty: end of input).
    Input {
        /// The fd number.
        fd: i32,
        /// The bytes.
        data: Bytes,
    },
    /// Deputy to homed: the image is in place and the restorer is being
    /// `exec`ed; the next bytes on the connection are the restored
    /// process's hello. The deputy's last message.
    Leaving,
    /// Deputy to homed: it could not prepare the restore; it is still the
    /// deputy and the body may run on where it is.
    ComeHomeFailed {
        /// What failed.
        reason: String,
    },
    /// Homed to deputy: a call of the body (for [`Call::Fork`], the child
    /// deputy's control socket to homed follows, SCM_RIGHTS); answer with
    /// [`DeputyMsg::Reply`].
    Call {
        /// What the body asks.
        call: Call,
    },
    /// Deputy to homed: the answer to the last [`DeputyMsg::Call`].
    Reply {
        /// The answer.
        reply: CallReply,
    },
    /// Homed to deputy: where the body runs now (sent when the relay starts
    /// and after every move), so that a deputy whose `homed` restarted can
    /// tell the new one ([`DeputyMsg::Rejoin`]).
    Where {
        /// Where the deputy finds this node's `homed` again (`procs.sock`).
        procs_socket: String,
        /// The body's node.
        node: String,
        /// That node's `remoted` address (`ip:port`).
        address: String,
        /// The body's pid there.
        body_pid: i32,
        /// The process's control fd number (the body's host placed the
        /// body's control socket there; -1 for a forked child).
        ctl_fd: i32,
        /// How long the body's host waits for a new `homed` (seconds);
        /// the deputy waits a little longer for one to rejoin.
        grace_s: u64,
        /// The process's freeze signal (the new `homed` moves it with it).
        freeze_signal: i32,
        /// For the deputy of a body's forked child: its parent's home pid.
        #[serde(default)]
        parent: Option<i32>,
    },
    /// Deputy to a new `homed`, right after a hello of kind
    /// `HELLO_DEPUTY` on a new connection: the old `homed` went away
    /// while the body ran at `node`; re-attach to it. Answered
    /// [`DeputyMsg::Rejoined`] or [`DeputyMsg::Lost`].
    Rejoin {
        /// The body's node.
        node: String,
        /// That node's `remoted` address (`ip:port`).
        address: String,
        /// The body's pid there.
        body_pid: i32,
        /// The process's control fd number.
        ctl_fd: i32,
        /// Bytes of the body's output the deputy wrote, by fd, since the
        /// last [`DeputyMsg::Where`] (the host sends again what the old
        /// `homed` took and did not pass on).
        #[serde(default)]
        written: Vec<(i32, u64)>,
        /// For the deputy of a body's forked child: its parent's home pid.
        #[serde(default)]
        parent: Option<i32>,
    },
    /// Homed to deputy: the body is re-attached; the connection serves the
    /// deputy as before.
    Rejoined,
    /// Homed to deputy: the body came home. An fd holding its image
    /// follows (SCM_RIGHTS, see [`crate::local::recv_fd`]); put the fds in
    /// the state the image expects and `exec` `restorer` on it, keeping
    /// the control fd open: the process is whole again.
    ComeHome {
        /// `mosix-restore`'s path.
        restorer: String,
        /// The process's fds as the body left them.
        fds: Vec<FdState>,
        /// Input read at home for the body that it has not read yet, by
        /// fd: the process must read it first.
        #[serde(default)]
        unread: Vec<(i32, Bytes)>,
    },
}

/// One fd of a body coming home, as the deputy must leave it for the
/// restorer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdState {
    /// The fd number.
    pub fd: i32,
    /// What to do with it.
    pub how: FdHow,
}

/// How the deputy prepares one fd of a body coming home.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FdHow {
    /// Keep the deputy's own fd (the one the body's relay stood for).
    Keep,
    /// Keep the deputy's own fd (the same open file) and move its offset
    /// to where the body left it.
    Seek {
        /// The body's offset.
        pos: u64,
    },
    /// Make it a dup of the lower fd `of` (they shared one open file).
    Dup {
        /// The fd it duplicates.
        of: i32,
    },
    /// Open `path` with `flags` (at `pos`): a file the body opened away.
    Open {
        /// Its path.
        path: String,
        /// open(2) flags.
        flags: i32,
        /// Offset, for regular files.
        pos: Option<u64>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_is_remoted_port_plus_two() {
        let a: SocketAddr = "10.77.0.2:7340".parse().unwrap();
        assert_eq!(host_addr(a).to_string(), "10.77.0.2:7342");
    }

    #[test]
    fn wait_status_decodes_code_and_signal() {
        assert_eq!(
            BodyStatus::from_wait(7 << 8),
            Some(BodyStatus::Code { code: 7 })
        );
        assert_eq!(
            BodyStatus::from_wait(15),
            Some(BodyStatus::Signal {
                sig: 15,
                core: false
            })
        );
        assert_eq!(
            BodyStatus::from_wait(0x80 | 11),
            Some(BodyStatus::Signal {
                sig: 11,
                core: true
            })
        );
        // Stopped by SIGSTOP: not an end.
        assert_eq!(BodyStatus::from_wait((19 << 8) | 0x7f), None);
    }

    #[test]
    fn output_is_carried_as_a_byte_string() {
        let data: Vec<u8> = (0..=255).collect();
        let m = FromHost::Output {
            fd: 1,
            data: Bytes(data.clone()),
        };
        let b = crate::link::encode(&m).unwrap();
        // A msgpack bin (1 byte a byte), not an array of integers.
        assert!(b.len() < data.len() + 32, "{} bytes encoded", b.len());
        assert_eq!(crate::link::decode::<FromHost>(&b).unwrap(), m);
    }

    fn record(op: u32, args: [i64; 3]) -> mosix_layout::CallRecord {
        mosix_layout::CallRecord {
            magic: mosix_layout::CALL_MAGIC,
            op,
            len: 0,
            args,
        }
    }

    #[test]
    fn call_records_decode() {
        use mosix_layout as l;
        assert_eq!(
            Call::from_record(&record(l::CALL_GETPPID, [0; 3]), &[], 9),
            Ok(Call::Getppid)
        );
        assert_eq!(
            Call::from_record(&record(l::CALL_FORK, [0; 3]), &[], 9),
            Ok(Call::Fork { token: 9 })
        );
        assert_eq!(
            Call::from_record(&record(l::CALL_REAP, [42, 143 << 8, 0]), &[], 0),
            Ok(Call::Reap {
                pid: 42,
                status: BodyStatus::Code { code: 143 }
            })
        );
        assert_eq!(
            Call::from_record(&record(l::CALL_KILL, [-7, 15, 0]), &[], 0),
            Ok(Call::Kill { pid: -7, sig: 15 })
        );
        assert_eq!(
            Call::from_record(&record(l::CALL_WAIT, [0, 0, 4 | 2]), &[], 0),
            Ok(Call::Wait {
                idtype: 0,
                id: 0,
                options: 6
            })
        );
        assert_eq!(
            Call::from_record(&record(l::CALL_WAIT, [1, 77, 4 | 0x0100_0000]), &[], 0),
            Ok(Call::Wait {
                idtype: 1,
                id: 77,
                options: 4 | 0x0100_0000
            })
        );
    }

    #[test]
    fn process_group_calls_take_known_requests_and_pids_only() {
        use mosix_layout as l;
        let rec = |args: [i64; 3]| record(l::CALL_PGRP, args);
        assert_eq!(
            Call::from_record(&rec([l::PGRP_SETPGID, 0, 77]), &[], 0),
            Ok(Call::Pgrp {
                op: PgrpOp::SetPgid { pid: 0, pgid: 77 }
            })
        );
        assert_eq!(
            Call::from_record(&rec([l::PGRP_GETSID, 12, 0]), &[], 0),
            Ok(Call::Pgrp {
                op: PgrpOp::GetSid { pid: 12 }
            })
        );
        assert_eq!(
            Call::from_record(&rec([l::PGRP_SETSID, 0, 0]), &[], 0),
            Ok(Call::Pgrp { op: PgrpOp::SetSid })
        );
        for bad in [
            [9, 0, 0],
            [l::PGRP_GETPGID, -1, 0],
            [l::PGRP_SETPGID, 1, -5],
            [l::PGRP_SETPGID, 1 << 40, 0],
        ] {
            assert!(
                matches!(
                    Call::from_record(&rec(bad), &[], 0),
                    Err(CallError::BadArgument { .. })
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn wait_replies_carry_pid_and_status() {
        use mosix_layout::{split_wait_reply, wait_reply};
        for (pid, status) in [
            (1, 0),
            (4_194_304, 143 << 8),
            (77, 0xffff),
            (5, (19 << 8) | 0x7f),
            (9, 0x80 | 11),
        ] {
            let v = wait_reply(pid, status);
            assert_ne!(v, 0);
            assert_eq!(split_wait_reply(v), Some((pid, status)));
        }
        assert_eq!(split_wait_reply(0), None);
    }

    #[test]
    fn bad_call_records_are_refused() {
        use mosix_layout as l;
        let mut bad = record(l::CALL_GETPPID, [0; 3]);
        bad.magic = 1;
        assert_eq!(Call::from_record(&bad, &[], 0), Err(CallError::BadMagic));
        assert_eq!(
            Call::from_record(&record(99, [0; 3]), &[], 0),
            Err(CallError::UnknownOp(99))
        );
        // A pid that does not fit, a stop status, a pid 0 to reap, a signal
        // out of range: refused, never a panic.
        for (op, args) in [
            (l::CALL_REAP, [i64::MAX, 0, 0]),
            (l::CALL_REAP, [5, (19 << 8) | 0x7f, 0]),
            (l::CALL_REAP, [0, 0, 0]),
            (l::CALL_KILL, [5, 65, 0]),
            (l::CALL_KILL, [5, -1, 0]),
            (l::CALL_KILL, [i64::MIN, 9, 0]),
            // waitid: a bad idtype, pid 0 with P_PID, a negative id, no
            // event asked for, an unknown option (WNOHANG is implied).
            (l::CALL_WAIT, [3, 5, 4]),
            (l::CALL_WAIT, [1, 0, 4]),
            (l::CALL_WAIT, [2, -3, 4]),
            (l::CALL_WAIT, [0, 0, 0]),
            (l::CALL_WAIT, [0, 0, 4 | 1]),
        ] {
            assert!(
                matches!(
                    Call::from_record(&record(op, args), &[], 0),
                    Err(CallError::BadArgument { .. })
                ),
                "{op} {args:?}"
            );
        }
    }

    #[test]
    fn any_call_record_decodes_or_is_refused() {
        // Arbitrary bytes from a body: an answer or an error, never a panic.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let requests = [
            libc::TCGETS,
            libc::TCSETS,
            libc::TCSETSW,
            libc::TCSETSF,
            libc::TIOCGWINSZ,
            libc::TIOCSWINSZ,
            libc::TIOCGPGRP,
            libc::TIOCSPGRP,
            libc::TCFLSH,
            libc::TCSBRK,
        ];
        let mut payload = [0u8; 80];
        for _ in 0..20_000 {
            let op = (next() % 8) as u32;
            let arg1 = if op == mosix_layout::CALL_TTY && next() % 2 == 0 {
                requests[(next() % requests.len() as u64) as usize] as i64
            } else {
                (next() % 0x1_0000) as i64
            };
            let small = |v: u64| if v % 2 == 0 { (v % 8) as i64 } else { v as i64 };
            let args = [small(next()), arg1, small(next())];
            // Payloads of every length, some matching a request's.
            let len = match next() % 4 {
                0 => 0,
                1 => mosix_layout::KTERMIOS_LEN,
                2 => mosix_layout::WINSIZE_LEN,
                _ => (next() % payload.len() as u64) as usize,
            };
            for b in &mut payload[..len] {
                *b = next() as u8;
            }
            let mut r = record(op, args);
            r.len = if next() % 8 == 0 {
                next() as u32
            } else {
                len as u32
            };
            let _ = Call::from_record(&r, &payload[..len], 1);
            let mut bad = r;
            bad.magic = next();
            assert_eq!(
                Call::from_record(&bad, &payload[..len], 1),
                Err(CallError::BadMagic)
            );
        }
    }

    fn tty(request: libc::c_ulong, fd: i64, arg: i64, payload: &[u8]) -> Result<Call, CallError> {
        let mut r = record(mosix_layout::CALL_TTY, [fd, request as i64, arg]);
        r.len = payload.len() as u32;
        Call::from_record(&r, payload, 0)
    }

    #[test]
    fn tty_calls_decode_with_their_payload() {
        let t = Termios {
            iflag: 1,
            oflag: 2,
            cflag: 3,
            lflag: 0o10,
            line: 0,
            cc: [7; 19],
        };
        assert_eq!(Termios::from_bytes(&t.to_bytes()), Some(t));
        let w = Winsize {
            rows: 33,
            cols: 101,
            xpixel: 0,
            ypixel: 9,
        };
        assert_eq!(Winsize::from_bytes(&w.to_bytes()), Some(w));
        assert_eq!(
            tty(libc::TCGETS, 0, 0, &[]),
            Ok(Call::Tty {
                fd: 0,
                op: TtyOp::GetAttr
            })
        );
        assert_eq!(
            tty(libc::TCSETSF, 2, 0, &t.to_bytes()),
            Ok(Call::Tty {
                fd: 2,
                op: TtyOp::SetAttr {
                    when: SetWhen::Flush,
                    termios: t
                }
            })
        );
        assert_eq!(
            tty(libc::TIOCSWINSZ, 1, 0, &w.to_bytes()),
            Ok(Call::Tty {
                fd: 1,
                op: TtyOp::SetWinsize { winsize: w }
            })
        );
        assert_eq!(
            tty(libc::TIOCSPGRP, 0, 77, &[]),
            Ok(Call::Tty {
                fd: 0,
                op: TtyOp::SetPgrp { pgrp: 77 }
            })
        );
        assert_eq!(
            tty(libc::TCFLSH, 0, libc::TCIFLUSH as i64, &[]),
            Ok(Call::Tty {
                fd: 0,
                op: TtyOp::Flush {
                    queue: libc::TCIFLUSH
                }
            })
        );
        assert!(
            TtyOp::SetAttr {
                when: SetWhen::Flush,
                termios: t
            }
            .discards_input()
        );
        assert!(!TtyOp::Flush { queue: 1 }.discards_input());
        let reply = CallReply::Winsize { winsize: w };
        let rec = reply.to_record(mosix_layout::CALL_TTY);
        assert_eq!((rec.errno, rec.len), (0, 8));
        assert_eq!(reply.payload(), w.to_bytes().to_vec());
        assert_eq!(CallReply::Value { value: 3 }.to_record(5).len, 0);
    }

    #[test]
    fn bad_tty_calls_are_refused() {
        let t = [0u8; mosix_layout::KTERMIOS_LEN];
        for (request, fd, arg, payload) in [
            // The payload of another request, or none.
            (libc::TCSETS, 0, 0, &t[..8]),
            (libc::TCSETS, 0, 0, &[][..]),
            (libc::TIOCSWINSZ, 0, 0, &t[..]),
            (libc::TCGETS, 0, 0, &t[..]),
            // A bad fd, group or queue; an unknown request.
            (libc::TCGETS, -1, 0, &[][..]),
            (libc::TCGETS, i64::MAX, 0, &[][..]),
            (libc::TIOCSPGRP, 0, 0, &[][..]),
            (libc::TIOCSPGRP, 0, i64::MAX, &[][..]),
            (libc::TCFLSH, 0, 3, &[][..]),
            (libc::TIOCSTI, 0, 0, &[][..]),
            (libc::FIONREAD, 0, 0, &[][..]),
        ] {
            assert!(
                tty(request, fd, arg, payload).is_err(),
                "{request:#x} {fd} {arg} {payload:?}"
            );
        }
        // A length that does not match the bytes, and a payload on a call
        // that takes none.
        let mut r = record(mosix_layout::CALL_TTY, [0, libc::TCGETS as i64, 0]);
        r.len = 4;
        assert!(Call::from_record(&r, &[], 0).is_err());
        let mut r = record(mosix_layout::CALL_GETPPID, [0; 3]);
        r.len = 1;
        assert_eq!(
            Call::from_record(&r, &[1], 0),
            Err(CallError::BadPayload { op: 1, len: 1 })
        );
    }

    #[test]
    fn replies_become_records() {
        use mosix_layout as l;
        let r = CallReply::Value { value: 77 }.to_record(l::CALL_FORK);
        assert_eq!(
            (r.magic, r.op, r.errno, r.value),
            (l::REPLY_MAGIC, l::CALL_FORK, 0, 77)
        );
        let r = CallReply::Errno {
            errno: libc::EAGAIN,
        }
        .to_record(l::CALL_FORK);
        assert_eq!((r.errno, r.value), (libc::EAGAIN, -1));
        // An errno of 0 would read as success: never sent as such.
        assert_eq!(CallReply::Errno { errno: 0 }.to_record(1).errno, 1);
        assert_eq!(CallReply::Busy.to_record(1).errno, l::REPLY_BUSY);
    }

    #[test]
    fn wait_status_round_trips() {
        for s in [0, 1 << 8, 255 << 8, 9, 15, 0x80 | 11] {
            assert_eq!(BodyStatus::from_wait(s).unwrap().to_wait(), s);
        }
    }

    #[test]
    fn call_messages_round_trip() {
        let msgs = [
            FromHost::Call {
                call: Call::Reap {
                    pid: 3,
                    status: BodyStatus::Signal {
                        sig: 15,
                        core: false,
                    },
                },
            },
            FromHost::Reaped,
        ];
        for m in msgs {
            let b = crate::link::encode(&m).unwrap();
            assert_eq!(crate::link::decode::<FromHost>(&b).unwrap(), m);
        }
        let m = ToHost::Adopt {
            home_pid: 4,
            token: u64::MAX,
        };
        let b = crate::link::encode(&m).unwrap();
        assert_eq!(crate::link::decode::<ToHost>(&b).unwrap(), m);
        for m in [
            ToHost::FreezeTo {
                node: "n3".into(),
                address: "10.0.0.3:7340".into(),
                token: 7,
            },
            ToHost::Deliver {
                token: 7,
                bytes: 1 << 33,
            },
        ] {
            let b = crate::link::encode(&m).unwrap();
            assert_eq!(crate::link::decode::<ToHost>(&b).unwrap(), m);
        }
        for m in [
            FromHost::Expecting { token: 7 },
            FromHost::Sent { bytes: 1 << 33 },
            FromHost::Delivered,
        ] {
            let b = crate::link::encode(&m).unwrap();
            assert_eq!(crate::link::decode::<FromHost>(&b).unwrap(), m);
        }
        let m = ToHost::Reattach {
            home_pid: 4,
            body_pid: 9,
            uid: 1000,
            written: vec![(2, 1 << 40)],
        };
        let b = crate::link::encode(&m).unwrap();
        assert_eq!(crate::link::decode::<ToHost>(&b).unwrap(), m);
        let m = DeputyMsg::Rejoin {
            node: "n2".into(),
            address: "10.0.0.2:7340".into(),
            body_pid: 9,
            ctl_fd: 5,
            written: vec![(1, 7)],
            parent: Some(3),
        };
        let b = crate::link::encode(&m).unwrap();
        assert_eq!(crate::link::decode::<DeputyMsg>(&b).unwrap(), m);
        let m = DeputyMsg::Reply {
            reply: CallReply::Busy,
        };
        let b = crate::link::encode(&m).unwrap();
        assert_eq!(crate::link::decode::<DeputyMsg>(&b).unwrap(), m);
    }

    #[test]
    fn messages_round_trip() {
        let m = ToHost::Offer {
            home_pid: 5,
            uid: 1000,
            gid: 1000,
            bytes: 4096,
            ctl_fd: 1000,
            freeze_signal: 63,
            home: HomeFacts::default(),
            clocks: Some(HomeClocks {
                monotonic_ns: 1_000_000_007,
                boottime_ns: -5,
            }),
            direct: true,
        };
        let b = crate::link::encode(&m).unwrap();
        assert_eq!(crate::link::decode::<ToHost>(&b).unwrap(), m);
    }
}
