//! Why a process cannot move, and why a move failed: typed reasons that
//! cross links and sockets (ARCHITECTURE.md section 3, step 5).
//!
//! Each reason is an enum with data, shown to people by one `Display`
//! (the doc comment of each variant is its message). Decisions (ask
//! again, give up, try another node) match on variants, never on text,
//! so rewording a message changes no behaviour. [`CantMove::code`] is
//! the stable machine-readable name that `mosps --json` shows beside the
//! message.

use serde::{Deserialize, Serialize};

/// Why a process cannot be frozen or moved now (openMosix's `cantmove`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum CantMove {
    /// it has {threads} threads; only single-threaded processes can be frozen
    #[error("it has {threads} threads; only single-threaded processes can be frozen")]
    Threads {
        /// How many it has.
        threads: u32,
    },
    /// it has locked memory (mlock, VmLck {vmlck})
    #[error("it has locked memory (mlock, VmLck {vmlck})")]
    LockedMemory {
        /// `VmLck` of `/proc/PID/status`.
        vmlck: String,
    },
    /// it blocks the freeze signal {signal}
    #[error("it blocks the freeze signal {signal}")]
    BlocksFreezeSignal {
        /// The signal.
        signal: i32,
    },
    /// it no longer catches the freeze signal {signal} (the program reset it)
    #[error("it no longer catches the freeze signal {signal} (the program reset it)")]
    IgnoresFreezeSignal {
        /// The signal.
        signal: i32,
    },
    /// it has SysV shared memory attached
    #[error("it has SysV shared memory attached")]
    SysvShm,
    /// its writable shared mapping of {path} is also mapped by pid {other_pid}
    #[error("its writable shared mapping of {path} is also mapped by pid {other_pid}")]
    SharedMapping {
        /// The mapped file.
        path: String,
        /// Another process that maps it.
        other_pid: i32,
    },
    /// fd {fd} is an {path} (eventfd, epoll, timerfd, signalfd... cannot be restored)
    #[error("fd {fd} is an {path} (eventfd, epoll, timerfd, signalfd... cannot be restored)")]
    AnonInode {
        /// The fd.
        fd: i32,
        /// What `/proc/PID/fd/N` says.
        path: String,
    },
    /// fd {fd} is the device {path} (only ttys and /dev/null-like devices are allowed)
    #[error("fd {fd} is the device {path} (only ttys and /dev/null-like devices are allowed)")]
    Device {
        /// The fd.
        fd: i32,
        /// The device.
        path: String,
    },
    /// fd {fd} is the device or special file {path}
    #[error("fd {fd} is the device or special file {path}")]
    Special {
        /// The fd.
        fd: i32,
        /// The file.
        path: String,
    },
    /// fd {fd} points to {path}, which cannot be reopened
    #[error("fd {fd} points to {path}, which cannot be reopened")]
    Unreopenable {
        /// The fd.
        fd: i32,
        /// What `/proc/PID/fd/N` says.
        path: String,
    },
    /// it holds {lock} (fd {fd}, {path}), which do not move with a process yet; it can move once it releases them
    #[error(
        "it holds {lock} (fd {fd}, {path}), which do not move with a process yet; it can move once it releases them"
    )]
    FileLocks {
        /// What kind of locks.
        lock: String,
        /// Through which fd.
        fd: i32,
        /// On which file.
        path: String,
    },
    /// it holds POSIX record locks on files of {home} (through the view), which do not move with a process yet; it can move once it releases them
    #[error(
        "it holds POSIX record locks on files of {home} (through the view), which do not move with a process yet; it can move once it releases them"
    )]
    ViewLocks {
        /// The home whose files they are.
        home: String,
    },
    /// cannot read {what}: {error}
    #[error("cannot read {what}: {error}")]
    Unreadable {
        /// What could not be read.
        what: String,
        /// What the system said.
        error: String,
    },
    /// its control socket is closed (it runs a program without libmosix)
    #[error("its control socket is closed (it runs a program without libmosix)")]
    NoControl,
    /// it runs with its parent's body on node {node} (a forked child does not move on its own yet)
    #[error(
        "it runs with its parent's body on node {node} (a forked child does not move on its own yet)"
    )]
    ForkedChild {
        /// Where its body runs.
        node: String,
    },
    /// {reason}
    #[error("{reason}")]
    Declared {
        /// What libmosix said when it registered (e.g. a statically
        /// linked program it could not prepare).
        reason: String,
    },
}

impl CantMove {
    /// The stable machine-readable name of the reason (`mosps --json`'s
    /// `cantmove_code`): the serialised tag, never reworded.
    pub fn code(&self) -> &'static str {
        match self {
            CantMove::Threads { .. } => "threads",
            CantMove::LockedMemory { .. } => "locked_memory",
            CantMove::BlocksFreezeSignal { .. } => "blocks_freeze_signal",
            CantMove::IgnoresFreezeSignal { .. } => "ignores_freeze_signal",
            CantMove::SysvShm => "sysv_shm",
            CantMove::SharedMapping { .. } => "shared_mapping",
            CantMove::AnonInode { .. } => "anon_inode",
            CantMove::Device { .. } => "device",
            CantMove::Special { .. } => "special",
            CantMove::Unreopenable { .. } => "unreopenable",
            CantMove::FileLocks { .. } => "file_locks",
            CantMove::ViewLocks { .. } => "view_locks",
            CantMove::Unreadable { .. } => "unreadable",
            CantMove::NoControl => "no_control",
            CantMove::ForkedChild { .. } => "forked_child",
            CantMove::Declared { .. } => "declared",
        }
    }

    /// Whether the process may well leave this state by itself soon (a
    /// signal blocked for a moment, locks, a device or file it may
    /// close), so that asking again later makes sense.
    pub fn passing(&self) -> bool {
        !matches!(
            self,
            CantMove::NoControl | CantMove::ForkedChild { .. } | CantMove::Declared { .. }
        )
    }
}

/// Why a body's host could not freeze or capture it (the body runs on
/// where it was): [`crate::migrate::FromHost::FreezeFailed`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FreezeFailure {
    /// it cannot move now: {0}
    #[error("it cannot move now: {0}")]
    CantMove(CantMove),
    /// the body did not answer the freeze signal within {secs} s
    #[error("the body did not answer the freeze signal within {secs} s")]
    NoAnswer {
        /// How long it was given.
        secs: u64,
    },
    /// {what}; the body was killed
    #[error("{what}; the body was killed")]
    OutOfStep {
        /// What it said or did out of step.
        what: String,
    },
    /// cannot send the freeze signal: {error}
    #[error("cannot send the freeze signal: {error}")]
    Signal {
        /// What the system said.
        error: String,
    },
    /// cannot capture the frozen body: {error}
    #[error("cannot capture the frozen body: {error}")]
    Capture {
        /// What failed.
        error: String,
    },
    /// cannot deliver the image to node {node}: {error}
    #[error("cannot deliver the image to node {node}: {error}")]
    Deliver {
        /// The destination.
        node: String,
        /// What failed.
        error: String,
    },
}

impl FreezeFailure {
    /// Whether the same freeze may well succeed if asked again in a
    /// moment (the body blocked the freeze signal for a moment: a body
    /// inside a forwarded call blocks every signal for its round trip).
    pub fn passing(&self) -> bool {
        matches!(
            self,
            FreezeFailure::CantMove(CantMove::BlocksFreezeSignal { .. })
        )
    }
}

/// Why a destination did not take a body it was offered; nothing was
/// started there: [`crate::migrate::FromHost::Refused`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Refusal {
    /// node {node} takes no guests now (mosctl block); try another node
    #[error("node {node} takes no guests now (mosctl block); try another node")]
    NoGuests {
        /// The refusing node.
        node: String,
    },
    /// only a node's homed may send a body
    #[error("only a node's homed may send a body")]
    NotAHome,
    /// a remoted may only deliver an image here
    #[error("a remoted may only deliver an image here")]
    DeliverOnly,
    /// an image of {bytes} bytes is too small to be one
    #[error("an image of {bytes} bytes is too small to be one")]
    TooSmall {
        /// The size offered.
        bytes: u64,
    },
    /// expected {expected}, got {got}
    #[error("expected {expected}, got {got}")]
    OutOfStep {
        /// What the host waited for.
        expected: String,
        /// What came.
        got: String,
    },
}

/// Why a destination that took a body could not restore or keep it;
/// nothing runs there: [`crate::migrate::FromHost::Failed`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HostFailure {
    /// image transfer cut: {error}
    #[error("image transfer cut: {error}")]
    Transfer {
        /// What failed.
        error: String,
    },
    /// bad image: {error}
    #[error("bad image: {error}")]
    BadImage {
        /// What is wrong with it.
        error: String,
    },
    /// this node cannot run it: {error}
    #[error("this node cannot run it: {error}")]
    Cpu {
        /// How the processors differ.
        error: String,
    },
    /// the image belongs to uid {image}, the offer says uid {offer}
    #[error("the image belongs to uid {image}, the offer says uid {offer}")]
    Owner {
        /// The image's owner.
        image: u32,
        /// The offer's.
        offer: u32,
    },
    /// {reason}
    #[error("{reason}")]
    Files {
        /// Which fd the body could not have here, and why.
        reason: String,
    },
    /// the home's view for the body cannot be set up: {error}
    #[error("the home's view for the body cannot be set up: {error}")]
    View {
        /// What failed.
        error: String,
    },
    /// mosix-restore failed ({status}); see the process's stderr
    #[error("mosix-restore failed ({status}); see the process's stderr")]
    Restore {
        /// How the restorer ended.
        status: String,
    },
    /// {what}: {error}
    #[error("{what}: {error}")]
    Local {
        /// What the host tried.
        what: String,
        /// What the system said.
        error: String,
    },
    /// this node expects no image under that token (the home gave up?)
    #[error("this node expects no image under that token (the home gave up?)")]
    UnknownToken,
    /// {reason}
    #[error("{reason}")]
    NotHere {
        /// Why a body to re-attach or adopt is not found here.
        reason: String,
    },
}

/// Why a node wants a guest body gone: [`crate::migrate::FromHost::Leave`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LeaveReason {
    /// the node's owner is back (local load)
    #[error("the node's owner is back (local load)")]
    OwnerBack,
    /// the node is short of memory
    #[error("the node is short of memory")]
    MemoryShort,
    /// mosctl expel
    #[error("mosctl expel")]
    Expelled,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cantmove_code_is_its_serialised_tag() {
        let all = [
            CantMove::Threads { threads: 2 },
            CantMove::LockedMemory {
                vmlck: "4 kB".into(),
            },
            CantMove::BlocksFreezeSignal { signal: 40 },
            CantMove::IgnoresFreezeSignal { signal: 40 },
            CantMove::SysvShm,
            CantMove::SharedMapping {
                path: "/f".into(),
                other_pid: 9,
            },
            CantMove::AnonInode {
                fd: 3,
                path: "anon_inode:[eventpoll]".into(),
            },
            CantMove::Device {
                fd: 3,
                path: "/dev/sda".into(),
            },
            CantMove::Special {
                fd: 3,
                path: "/x".into(),
            },
            CantMove::Unreopenable {
                fd: 3,
                path: "/x".into(),
            },
            CantMove::FileLocks {
                lock: "flock locks".into(),
                fd: 3,
                path: "/x".into(),
            },
            CantMove::ViewLocks { home: "n1".into() },
            CantMove::Unreadable {
                what: "maps".into(),
                error: "gone".into(),
            },
            CantMove::NoControl,
            CantMove::ForkedChild { node: "n2".into() },
            CantMove::Declared { reason: "x".into() },
        ];
        for c in all {
            let v = serde_json::to_value(&c).unwrap();
            assert_eq!(v["code"], c.code(), "{c:?}");
            let back: CantMove = serde_json::from_value(v).unwrap();
            assert_eq!(back, c);
        }
    }

    #[test]
    fn reasons_cross_a_link_intact() {
        let f = FreezeFailure::CantMove(CantMove::BlocksFreezeSignal { signal: 40 });
        let b = rmp_serde::to_vec_named(&f).unwrap();
        let back: FreezeFailure = rmp_serde::from_slice(&b).unwrap();
        assert_eq!(back, f);
        assert!(back.passing());
        assert_eq!(
            back.to_string(),
            "it cannot move now: it blocks the freeze signal 40"
        );
        assert!(!FreezeFailure::NoAnswer { secs: 30 }.passing());
    }
}
