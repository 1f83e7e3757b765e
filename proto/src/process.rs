//! Requests about processes started at this home (`mosps`, `mosmigrate`),
//! answered by `homed`'s engine. The engine's own socket with libmosix
//! (`procs.sock`) speaks the fixed records of [`mosix_layout`]
//! instead, because its client is a signal handler.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What happens to a process after its checkpoint is safely on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterCheckpoint {
    /// It goes on running (`mosmigrate PID checkpoint`).
    Continue,
    /// It is stopped with SIGSTOP (`mosmigrate PID chkstop`).
    Stop,
    /// It ends (`mosmigrate PID chkexit`).
    Exit,
}

/// A request about processes, carried in `ControlRequest::Process`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProcessRequest {
    /// List the caller's processes (root: all).
    List,
    /// Freeze a process, write its image, then continue, stop or end it.
    Checkpoint {
        /// Home pid.
        pid: i32,
        /// What to do after the image is complete.
        after: AfterCheckpoint,
        /// Absolute path of the image; default: the process's `mosrun -C`
        /// file, else `<its cwd>/ckpt.<pid>.mosix`.
        file: Option<PathBuf>,
    },
    /// Move a process's body to another node (`mosmigrate PID NODE`); the
    /// process stays here as its deputy.
    Migrate {
        /// Home pid.
        pid: i32,
        /// Destination node name (for messages).
        node: String,
        /// The destination's `remoted` address, `IP:PORT` (its body host
        /// listens on [`crate::migrate::host_addr`] of it).
        address: String,
        /// Asked by the balancer, not by a person (`mosrun -h` processes
        /// stay home until a person moves them).
        #[serde(default)]
        automatic: bool,
    },
}

/// Result of a migration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrateDone {
    /// Home pid (now the deputy's).
    pub pid: i32,
    /// Where the body runs.
    pub node: String,
    /// The body's pid there.
    pub body_pid: i32,
    /// Image bytes sent.
    pub bytes: u64,
    /// Milliseconds from the freeze signal to the body let go.
    pub frozen_ms: u64,
}

/// One move of a process (or an attempt), for `mosps --history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoveRecord {
    /// When it ended, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The node the body was on (the home's name when at home).
    pub from: String,
    /// The node it was to go to (the home's name for home).
    pub to: String,
    /// Why: `load balancing`, `asked by uid N`, or the node that asked
    /// it to leave and its reason.
    pub why: String,
    /// Milliseconds from the freeze to the body running again.
    pub frozen_ms: u64,
    /// Image bytes sent (0 if it failed before).
    pub bytes: u64,
    /// Why it failed, if it did: the process then ran on at `from`.
    pub error: Option<String>,
}

/// How many moves a process's history keeps (the newest).
pub const HISTORY_MAX: usize = 32;

/// One managed process, as `mosps` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// The home pid (the pid the process has and keeps at home).
    pub pid: i32,
    /// The process's command line.
    pub cmdline: Vec<String>,
    /// Owner uid.
    #[serde(default)]
    pub uid: u32,
    /// The node it was started at, where its pid lives (this node).
    #[serde(default)]
    pub home: String,
    /// The node its body runs on now (`home` when it is at home).
    #[serde(default)]
    pub node: String,
    /// `running`, `migrating` (being frozen, moved or brought home) or
    /// `frozen` (stopped after a checkpoint, or by a signal).
    #[serde(default)]
    pub state: String,
    /// How many times it moved (away, on, or home).
    #[serde(default)]
    pub migrations: u32,
    /// Whether it was restarted from an image.
    #[serde(default)]
    pub restored: bool,
    /// Its checkpoint file, if `mosrun -C` gave one.
    #[serde(default)]
    pub checkpoint_file: Option<PathBuf>,
    /// Periodic checkpoint interval in minutes (0: none).
    #[serde(default)]
    pub checkpoint_minutes: u32,
    /// Why it cannot be frozen now, if it cannot (openMosix's `cantmove`),
    /// for people.
    #[serde(default)]
    pub cantmove: Option<String>,
    /// The same reason's stable machine-readable name
    /// ([`crate::reason::CantMove::code`]), for scripts.
    #[serde(default)]
    pub cantmove_code: Option<String>,
    /// Milliseconds it has run at this node (since it started or was
    /// restored here); the balancer's residency rule reads it. None when
    /// unknown (an older homed).
    #[serde(default)]
    pub resident_ms: Option<u64>,
    /// Started with `mosrun -L`: never migrated automatically (manual
    /// `mosmigrate` still works).
    #[serde(default)]
    pub no_auto: bool,
    /// Its moves and failed attempts, oldest first (at most
    /// [`HISTORY_MAX`], the newest).
    #[serde(default)]
    pub history: Vec<MoveRecord>,
}

/// Result of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointDone {
    /// Pid.
    pub pid: i32,
    /// The image written (complete on disk).
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Pages of memory in it.
    pub pages: u64,
    /// Milliseconds from the freeze signal to the image complete on disk.
    pub frozen_ms: u64,
    /// What was done afterwards.
    pub after: AfterCheckpoint,
}

/// An answer to a [`ProcessRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProcessResponse {
    /// Answer to [`ProcessRequest::List`].
    List {
        /// The processes.
        processes: Vec<ProcessInfo>,
    },
    /// Answer to [`ProcessRequest::Checkpoint`].
    Checkpointed {
        /// What was written.
        done: CheckpointDone,
    },
    /// Answer to [`ProcessRequest::Migrate`]: the body runs at `node`.
    Migrated {
        /// What was done.
        done: MigrateDone,
    },
    /// The request failed; nothing about the process changed.
    Error {
        /// What failed, on what, and what to do.
        message: String,
        /// Why, where a decision depends on it (ask again later or not).
        #[serde(default)]
        cause: Option<Cause>,
    },
}

/// Why a request about a process failed, for the decisions of its
/// callers (`mosrun -r` asks again while the cause passes); people read
/// the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Not "type": the reasons inside are tagged "type" themselves.
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum Cause {
    /// The process cannot move now, for this reason.
    CantMove(crate::reason::CantMove),
    /// Something else is under way for it (a checkpoint, a move), or it
    /// is between nodes.
    Busy,
    /// The destination could not take it, for this reason.
    Destination(crate::reason::HostFailure),
}

impl Cause {
    /// Whether asking again in a moment may well succeed.
    pub fn passing(&self) -> bool {
        match self {
            Cause::CantMove(c) => c.passing(),
            Cause::Busy => true,
            // A file the body cannot have there yet (one being written).
            Cause::Destination(h) => matches!(h, crate::reason::HostFailure::Files { .. }),
        }
    }
}

#[cfg(test)]
mod cause_tests {
    use super::*;
    use crate::reason::{CantMove, HostFailure};

    #[test]
    fn only_passing_causes_are_tried_again() {
        let blocked = Cause::CantMove(CantMove::BlocksFreezeSignal { signal: 10 });
        assert!(blocked.passing());
        assert!(Cause::Busy.passing());
        let file = Cause::Destination(HostFailure::Files {
            reason: "fd 5 is /r/.git/objects/1e/tmp_obj_x, open for reading and writing but mode 444 does not let uid 4243 open it so again".into(),
        });
        assert!(file.passing());
        assert!(!Cause::CantMove(CantMove::NoControl).passing());
        assert!(
            !Cause::Destination(HostFailure::Cpu {
                error: "xsave".into()
            })
            .passing()
        );
        // It crosses homed's socket intact, and an older homed's answer
        // without it still reads.
        let r = ProcessResponse::Error {
            message: "m".into(),
            cause: Some(file),
        };
        let back: ProcessResponse =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        let old: ProcessResponse =
            serde_json::from_str(r#"{"type":"error","message":"m"}"#).unwrap();
        assert!(matches!(old, ProcessResponse::Error { cause: None, .. }));
    }
}
