//! The table of processes started at this node under libmosix, and what
//! `homed` does with them at home (ARCHITECTURE.md section 3, steps 1-3):
//! list them, freeze them, write their images (checkpoints) and send
//! them away (through [`crate::migrate`]).
//!
//! Each managed process connects once to `<runtime_dir>/procs.sock`
//! (served by [`Procs::serve`]) and sends a fixed-layout
//! [`layout::Hello`], checked against the connection's SO_PEERCRED. One
//! thread per process then owns that connection: a request to freeze the
//! process wakes it, and it runs the engine's freeze handshake
//! ([`mosix_engine::freeze`]) on the connection, captures the process
//! while it waits in its handler, and sends the verdict (continue, stop,
//! exit, or become the deputy). A failure anywhere before the verdict
//! lets the process run on, unchanged.

use mosix_engine::freeze::{self, Verdict};
use mosix_engine::session::source::Failure;
use mosix_engine::{capture, procfs};
use mosix_proto::reason::{CantMove, FreezeFailure};

use mosix_engine::image;
use mosix_engine::image::layout::{self, FreezeRecord, Hello};
use mosix_proto::config::Config;
use mosix_proto::local::{Credentials, peer_credentials};
use mosix_proto::migrate::DeputyMsg;
use mosix_proto::process::{
    AfterCheckpoint, Cause, CheckpointDone, HISTORY_MAX, MigrateDone, MoveRecord, ProcessInfo,
    ProcessRequest, ProcessResponse,
};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest a move of a process that is away may take.
const MOVE_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long a new connection has to send its hello (and a forked deputy
/// to say it is up).
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The engine's side of a body's family: what its relay reports about
/// forks and reaped children.
struct Kin {
    engine: Arc<Procs>,
    parent: Arc<Proc>,
}

impl crate::migrate::Family for Kin {
    fn forked(&self, child: crate::migrate::ForkedChild) {
        self.engine.adopt_child(&self.parent, child);
    }

    fn reaped(&self, pid: i32, status: mosix_proto::migrate::BodyStatus) {
        self.engine.child_reaped(pid, status);
    }
}

/// Where a rejoining deputy's body runs, as it says (see
/// [`DeputyMsg::Rejoin`]).
struct Whereabouts {
    node: String,
    address: String,
    body_pid: i32,
    ctl_fd: i32,
    written: Vec<(i32, u64)>,
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProcsError {
    /// freeze signal {0} is not a real-time signal this engine can use: set process.freeze_signal to one between SIGRTMIN and SIGRTMAX
    #[error(
        "freeze signal {0} is not a real-time signal this engine can use: set process.freeze_signal to one between SIGRTMIN and SIGRTMAX"
    )]
    BadSignal(i32),
}

impl OpEvent {
    /// The event's name, for internal-error messages.
    fn name(&self) -> &'static str {
        match self {
            OpEvent::Frozen => "frozen",
            OpEvent::Done(_) => "a checkpoint",
            OpEvent::Migrated(_) => "a migration",
        }
    }
}

/// A checkpoint request waiting for the process's freeze record.
struct PendingOp {
    after: AfterCheckpoint,
    path: PathBuf,
    started: Instant,
    reply: mpsc::Sender<OpEvent>,
    /// Set for a migration instead of a checkpoint.
    migrate: Option<crate::migrate::Target>,
    /// Why it moves (for its history).
    why: String,
}

/// Progress of a checkpoint, from the connection thread to the requester.
enum OpEvent {
    /// The process is in its handler; the image is being written.
    Frozen,
    /// Finished (image complete, verdict sent), or failed (process runs on).
    Done(Result<CheckpointDone, ProcError>),
    /// A migration committed (the body runs away), or failed (the process
    /// runs on here).
    Migrated(Result<MigrateDone, ProcError>),
}

/// One managed process.
struct Proc {
    pid: i32,
    uid: u32,
    gid: u32,
    cmdline: Vec<String>,
    restored: bool,
    checkpoint_file: Option<PathBuf>,
    interval: Option<Duration>,
    refuse: Option<CantMove>,
    freeze_signal: i32,
    /// The control fd number in the process (left out of images).
    writer: Mutex<UnixStream>,
    op: Mutex<Option<PendingOp>>,
    busy: Mutex<()>,
    last_checkpoint: Mutex<Instant>,
    /// The node running its body, once it left.
    away: Mutex<Option<String>>,
    /// While away: where move requests for it go (its relay).
    mover: Mutex<Option<mpsc::Sender<crate::migrate::MoveRequest>>>,
    /// How many times it moved.
    migrations: std::sync::atomic::AtomicU32,
    /// A move of its body (away) is under way.
    moving: std::sync::atomic::AtomicBool,
    /// How it asked to be left alone by the balancer (read once, at start).
    pinned: procfs::Pinned,
    /// It was moved by hand at least once (ends `mosrun -h`'s pin).
    told: std::sync::atomic::AtomicBool,
    /// Its moves and failed attempts, newest last.
    history: Mutex<std::collections::VecDeque<MoveRecord>>,
    /// For the deputy of a body's forked child: its parent's home pid.
    parent: Option<i32>,
    /// Wakes its connection thread to freeze it (set while that thread
    /// serves it at home).
    wake: Mutex<Option<UnixStream>>,
}

/// The engine: shared by `homed`'s procs-socket server and its command
/// socket handler.
pub struct Procs {
    freeze_signal: i32,
    procs: Mutex<HashMap<i32, Arc<Proc>>>,
    env: capture::CaptureEnv,
    /// This node's name (links say it).
    node: String,
    /// The cluster key file (loaded for each migration).
    key_file: PathBuf,
    /// This node's `procs.sock` (deputies rejoin a restarted homed there).
    procs_socket: PathBuf,
    /// How long bodies' hosts wait for a restarted homed (seconds).
    grace_s: u64,
}

impl Procs {
    /// An engine for this node's configuration.
    pub fn new(config: &Config) -> Result<Procs, ProcsError> {
        let sig = config.process.freeze_signal;
        if sig < libc::SIGRTMIN() || sig > libc::SIGRTMAX() {
            return Err(ProcsError::BadSignal(sig));
        }
        Ok(Procs {
            freeze_signal: sig,
            procs: Mutex::new(HashMap::new()),
            env: capture::CaptureEnv::here(),
            node: config.node.name.clone(),
            key_file: config.node.key_file.clone(),
            procs_socket: config.procs_socket(),
            grace_s: config.process.home_grace_s,
        })
    }

    /// Serve libmosix connections on `listener` (`procs.sock`) forever,
    /// one thread per process, plus the periodic-checkpoint timer.
    pub fn serve(self: Arc<Self>, listener: UnixListener) {
        let ticker = self.clone();
        std::thread::spawn(move || ticker.periodic());
        for stream in listener.incoming() {
            match stream {
                Ok(s) => {
                    let me = self.clone();
                    std::thread::spawn(move || me.serve_process(s));
                }
                Err(e) => tracing::warn!(error = %e, "accept on procs socket failed"),
            }
        }
    }

    /// Answer a command from `mosps`/`mosmigrate` (through homed.sock).
    /// A user may act only on their own processes; root on all.
    pub fn handle(&self, caller: &Credentials, req: ProcessRequest) -> ProcessResponse {
        match req {
            ProcessRequest::List => ProcessResponse::List {
                processes: self.list(caller),
            },
            ProcessRequest::Checkpoint { pid, after, file } => {
                match self.checkpoint(caller, pid, after, file) {
                    Ok(done) => ProcessResponse::Checkpointed { done },
                    Err(e) => e.response(),
                }
            }
            ProcessRequest::Migrate {
                pid,
                node,
                address,
                automatic,
            } => {
                // Whose it is comes first: another user learns nothing
                // about it, not even where it runs.
                if let Err(e) = self.owned(caller, pid) {
                    return ProcError::from(e).response();
                }
                let why = if automatic {
                    "load balancing".to_string()
                } else {
                    format!("asked by uid {}", caller.uid)
                };
                let home = node == "home" || node == self.node;
                if self.is_away(pid) {
                    let to = if home {
                        None
                    } else {
                        match address.parse() {
                            Ok(address) => Some(crate::migrate::Target { node, address }),
                            Err(_) => {
                                return ProcError::from(format!(
                                    "{address:?} is not an IP:PORT address of node {node}"
                                ))
                                .response();
                            }
                        }
                    };
                    let response = match self.move_away(caller, pid, to, why) {
                        Ok(done) => ProcessResponse::Migrated { done },
                        Err(e) => e.response(),
                    };
                    self.moved_by_hand(pid, automatic, &response);
                    return response;
                }
                if home {
                    return ProcError::from(format!(
                        "process {pid} already runs here, at its home"
                    ))
                    .response();
                }
                let Ok(address) = address.parse() else {
                    return ProcError::from(format!(
                        "{address:?} is not an IP:PORT address of node {node}"
                    ))
                    .response();
                };
                let target = crate::migrate::Target { node, address };
                let response = match self.freeze(
                    caller,
                    pid,
                    AfterCheckpoint::Continue,
                    PathBuf::new(),
                    Some((target, why)),
                ) {
                    Ok(OpEvent::Migrated(Ok(done))) => ProcessResponse::Migrated { done },
                    Ok(OpEvent::Migrated(Err(e)) | OpEvent::Done(Err(e))) | Err(e) => e.response(),
                    Ok(other) => ProcError::from(format!(
                        "internal error: migration ended with {}",
                        other.name()
                    ))
                    .response(),
                };
                self.moved_by_hand(pid, automatic, &response);
                response
            }
        }
    }

    /// A person moved `pid` (its owner or root: `response` says it moved),
    /// which ends a `mosrun -h` pin. A refused or failed request changes
    /// nothing.
    fn moved_by_hand(&self, pid: i32, automatic: bool, response: &ProcessResponse) {
        if !automatic
            && matches!(response, ProcessResponse::Migrated { .. })
            && let Some(p) = self.lock_procs().get(&pid)
        {
            p.told.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Whether `pid`'s body runs on another node.
    fn is_away(&self, pid: i32) -> bool {
        self.lock_procs()
            .get(&pid)
            .is_some_and(|p| p.away.lock().map(|a| a.is_some()).unwrap_or(false))
    }

    /// The process `pid`, if `caller` may act on it (its owner, or root).
    fn owned(&self, caller: &Credentials, pid: i32) -> Result<Arc<Proc>, String> {
        let p = self.lock_procs().get(&pid).cloned().ok_or_else(|| {
            format!("process {pid} is not a mosix process of this node (see mosps)")
        })?;
        if caller.uid != 0 && caller.uid != p.uid {
            return Err(format!(
                "permission denied: process {pid} belongs to uid {}, not to you (uid {})",
                p.uid, caller.uid
            ));
        }
        Ok(p)
    }

    /// Move a process whose body is away: home (`to` = `None`) or on.
    fn move_away(
        &self,
        caller: &Credentials,
        pid: i32,
        to: Option<crate::migrate::Target>,
        why: String,
    ) -> Result<MigrateDone, ProcError> {
        let p = self.owned(caller, pid)?;
        if let Some(why) = self.cantmove(&p) {
            return Err(ProcError::cantmove(
                format!("process {pid} cannot move: {why}"),
                why,
            ));
        }
        if let (Some(t), Some(now)) = (
            &to,
            p.away.lock().unwrap_or_else(|e| e.into_inner()).as_ref(),
        ) && &t.node == now
        {
            return Err(format!("process {pid} already runs on node {now}").into());
        }
        let mover = p
            .mover
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| ProcError::busy(format!("process {pid} is between nodes; try again")))?;
        let (tx, rx) = mpsc::channel();
        let request = crate::migrate::MoveRequest {
            to,
            why,
            reply: Some(tx),
        };
        if mover.send(request).is_err() {
            return Err(ProcError::busy(format!(
                "process {pid} ended or is between nodes; see mosps"
            )));
        }
        p.moving.store(true, std::sync::atomic::Ordering::Relaxed);
        let outcome = rx.recv_timeout(MOVE_TIMEOUT);
        p.moving.store(false, std::sync::atomic::Ordering::Relaxed);
        outcome
            .map_err(|_| format!("no outcome for the move of process {pid}; see homed's log"))?
            .map_err(ProcError::from)
    }

    fn list(&self, caller: &Credentials) -> Vec<ProcessInfo> {
        let procs: Vec<Arc<Proc>> = self.lock_procs().values().cloned().collect();
        let mut out: Vec<ProcessInfo> = procs
            .iter()
            .filter(|p| caller.uid == 0 || caller.uid == p.uid)
            .map(|p| {
                let why_not = self.cantmove(p);
                ProcessInfo {
                    pid: p.pid,
                    cmdline: p.cmdline.clone(),
                    uid: p.uid,
                    home: self.node.clone(),
                    node: p
                        .away
                        .lock()
                        .map(|a| a.clone())
                        .unwrap_or_default()
                        .unwrap_or_else(|| self.node.clone()),
                    state: self.state(p).into(),
                    migrations: p.migrations.load(std::sync::atomic::Ordering::Relaxed),
                    restored: p.restored,
                    checkpoint_file: p.checkpoint_file.clone(),
                    checkpoint_minutes: p.interval.map(|d| (d.as_secs() / 60) as u32).unwrap_or(0),
                    cantmove: why_not.as_ref().map(|c| c.to_string()),
                    cantmove_code: why_not.as_ref().map(|c| c.code().to_string()),
                    resident_ms: procfs::running_ms(p.pid),
                    no_auto: match p.pinned {
                        procfs::Pinned::Always => true,
                        procfs::Pinned::UntilTold => {
                            !p.told.load(std::sync::atomic::Ordering::Relaxed)
                        }
                        procfs::Pinned::No => false,
                    },
                    history: p
                        .history
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .iter()
                        .cloned()
                        .collect(),
                }
            })
            .collect();
        out.sort_by_key(|p| p.pid);
        out
    }

    fn lock_procs(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Arc<Proc>>> {
        self.procs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `running`, `migrating` or `frozen`, for mosps.
    fn state(&self, p: &Proc) -> &'static str {
        if p.busy.try_lock().is_err() || p.moving.load(std::sync::atomic::Ordering::Relaxed) {
            "migrating"
        } else if p.away.lock().map(|a| a.is_none()).unwrap_or(true) && procfs::is_stopped(p.pid) {
            "frozen"
        } else {
            "running"
        }
    }

    fn cantmove(&self, p: &Proc) -> Option<CantMove> {
        if let Some(r) = &p.refuse {
            return Some(r.clone());
        }
        if p.away.lock().map(|a| a.is_some()).unwrap_or(false) {
            // Its body left, so it could; the deputy's fds say nothing.
            // Neither children it left at home nor children its body
            // forked away hold it: both run on where they are, children
            // of its deputy (see `crate::kids`), and the body's host keeps
            // the forked ones' output going (`remoted`'s `host::family`).
            return None;
        }
        // The control fd is a socket, which never makes a process refused.
        // Its children at home do not hold it either: they stay where they
        // run, children of its deputy (same pid), which waits for them on
        // the body's behalf (see `crate::kids`).
        procfs::cantmove(p.pid, p.freeze_signal, -1).or_else(|| procfs::locks_block_move(p.pid))
    }

    /// Freeze `pid`, write its image, then apply `after`.
    fn checkpoint(
        &self,
        caller: &Credentials,
        pid: i32,
        after: AfterCheckpoint,
        file: Option<PathBuf>,
    ) -> Result<CheckpointDone, ProcError> {
        let p = self.owned(caller, pid)?;
        let path = match file.or_else(|| p.checkpoint_file.clone()) {
            Some(f) if f.is_absolute() => f,
            Some(f) => {
                return Err(
                    format!("checkpoint file {} must be an absolute path", f.display()).into(),
                );
            }
            None => {
                let cwd = procfs::link(pid, "cwd")?;
                cwd.join(format!("ckpt.{pid}.mosix"))
            }
        };
        match self.freeze(caller, pid, after, path, None)? {
            OpEvent::Done(r) => {
                if r.is_ok() {
                    *p.last_checkpoint.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                }
                r
            }
            other => Err(format!("internal error: checkpoint ended with {}", other.name()).into()),
        }
    }

    /// Freeze `pid` and let its connection thread write the image (to
    /// `path`) or migrate it (to `migrate`); returns the final event.
    fn freeze(
        &self,
        caller: &Credentials,
        pid: i32,
        after: AfterCheckpoint,
        path: PathBuf,
        migrate: Option<(crate::migrate::Target, String)>,
    ) -> Result<OpEvent, ProcError> {
        let p = self.owned(caller, pid)?;
        if let Some(node) = p.away.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            return Err(format!(
                "process {pid} already runs on node {node}; moving it again is not supported yet"
            )
            .into());
        }
        let why_not = match migrate {
            Some(_) => self.cantmove(&p),
            None => p
                .refuse
                .clone()
                .or_else(|| procfs::cantmove(p.pid, p.freeze_signal, -1)),
        };
        if let Some(why) = why_not {
            return Err(ProcError::cantmove(
                format!("process {pid} cannot be frozen safely: {why}; it runs on unchanged"),
                why,
            ));
        }
        let _busy = p.busy.try_lock().map_err(|_| {
            ProcError::busy(format!(
                "a checkpoint of process {pid} is already in progress"
            ))
        })?;
        let (tx, rx) = mpsc::channel();
        *p.op.lock().unwrap_or_else(|e| e.into_inner()) = Some(PendingOp {
            after,
            path,
            started: Instant::now(),
            reply: tx,
            why: migrate.as_ref().map(|m| m.1.clone()).unwrap_or_default(),
            migrate: migrate.map(|m| m.0),
        });
        let woke = p
            .wake
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|w| (&*w).write_all(&[1]));
        if !matches!(woke, Some(Ok(()))) {
            p.op.lock().unwrap_or_else(|e| e.into_inner()).take();
            return Err(ProcError::busy(format!(
                "process {pid} is not ready to be frozen (its connection to homed is not served); try again"
            )));
        }
        // The connection thread freezes it within the engine's timeouts
        // and always answers, unless the process goes away meanwhile.
        match rx.recv_timeout(freeze::FREEZE_TIMEOUT + freeze::MESSAGE_TIMEOUT + freeze::CALL_CATCH)
        {
            Ok(OpEvent::Frozen) => {}
            Ok(ev) => return Ok(ev),
            Err(_) => {
                // Nobody took the op: the process never answered.
                if p.op
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .is_some()
                {
                    return Err(format!(
                        "process {pid} did not answer the freeze signal within {} s; it runs on unchanged",
                        freeze::FREEZE_TIMEOUT.as_secs()
                    )
                    .into());
                }
            }
        }
        // Frozen: the image is being written by the connection thread,
        // which always reports an outcome (or dies with the process).
        loop {
            match rx.recv() {
                Ok(OpEvent::Frozen) => continue,
                Ok(ev) => return Ok(ev),
                Err(_) => {
                    return Err(format!(
                        "process {pid} went away while its image was being written"
                    )
                    .into());
                }
            }
        }
    }

    /// Take periodic checkpoints (`mosrun -A MINUTES`).
    fn periodic(self: Arc<Self>) {
        let root = Credentials {
            pid: 0,
            uid: 0,
            gid: 0,
        };
        loop {
            std::thread::sleep(Duration::from_secs(5));
            let due: Vec<Arc<Proc>> = self
                .lock_procs()
                .values()
                .filter(|p| {
                    p.interval.is_some_and(|iv| {
                        p.last_checkpoint
                            .lock()
                            .map(|t| t.elapsed() >= iv)
                            .unwrap_or(false)
                    })
                })
                .cloned()
                .collect();
            for p in due {
                *p.last_checkpoint.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                match self.checkpoint(&root, p.pid, AfterCheckpoint::Continue, None) {
                    Ok(d) => {
                        tracing::info!(pid = p.pid, path = %d.path.display(), bytes = d.bytes, "periodic checkpoint")
                    }
                    Err(e) => tracing::warn!(pid = p.pid, error = %e, "periodic checkpoint failed"),
                }
            }
        }
    }

    /// One libmosix connection: hello, then freeze records until EOF.
    fn serve_process(self: Arc<Self>, mut stream: UnixStream) {
        let creds = match peer_credentials(&stream) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot identify a process on procs.sock; closing");
                return;
            }
        };
        let _ = stream.set_read_timeout(Some(HELLO_TIMEOUT));
        let mut hb = [0u8; size_of::<Hello>()];
        if let Err(e) = stream.read_exact(&mut hb) {
            tracing::warn!(pid = creds.pid, error = %e, "no hello from process; closing");
            return;
        }
        let Some(hello) = image::from_bytes::<Hello>(&hb) else {
            return;
        };
        if hello.magic != layout::HELLO_MAGIC || hello.version != layout::LAYOUT_VERSION {
            tracing::warn!(
                pid = creds.pid,
                "bad hello (another libmosix version?); closing"
            );
            return;
        }
        if hello.pid != creds.pid {
            tracing::warn!(
                claimed = hello.pid,
                real = creds.pid,
                "hello names another pid; closing"
            );
            return;
        }
        if hello.freeze_signal != self.freeze_signal {
            tracing::warn!(
                pid = creds.pid,
                signal = hello.freeze_signal,
                "process uses another freeze signal than this node's"
            );
        }
        let text = |b: &[u8], n: u32| {
            String::from_utf8_lossy(&b[..(n as usize).min(b.len())]).into_owned()
        };
        let checkpoint_file = (hello.path_len > 0)
            .then(|| PathBuf::from(text(&hello.checkpoint_path, hello.path_len)));
        let refuse = (hello.refuse_len > 0).then(|| CantMove::Declared {
            reason: text(&hello.refuse, hello.refuse_len),
        });
        let Ok(writer) = stream.try_clone() else {
            return;
        };
        let rejoin = if hello.kind == layout::HELLO_DEPUTY {
            match mosix_proto::local::recv_local::<DeputyMsg>(&mut stream) {
                Ok(DeputyMsg::Rejoin {
                    node,
                    address,
                    body_pid,
                    ctl_fd,
                    written,
                    parent,
                }) => Some((
                    Whereabouts {
                        node,
                        address,
                        body_pid,
                        ctl_fd,
                        written,
                    },
                    parent,
                )),
                Ok(other) => {
                    tracing::warn!(pid = creds.pid, msg = ?other, "a deputy's hello without its rejoin; closing");
                    return;
                }
                Err(e) => {
                    tracing::warn!(pid = creds.pid, error = %e, "a deputy said hello but not where its body is; closing");
                    return;
                }
            }
        } else {
            None
        };
        let parent = rejoin.as_ref().and_then(|r| r.1);
        let away_at = rejoin.as_ref().map(|r| r.0.node.clone());
        let refuse = match (&away_at, parent) {
            // A forked child's deputy: its end comes from its parent
            // body's wait, and it does not move on its own.
            (Some(node), Some(_)) => Some(CantMove::ForkedChild { node: node.clone() }),
            _ => refuse,
        };
        let p = Arc::new(Proc {
            pid: creds.pid,
            uid: creds.uid,
            gid: creds.gid,
            cmdline: procfs::cmdline(creds.pid),
            restored: hello.kind == layout::HELLO_RESTORED,
            checkpoint_file,
            interval: (hello.interval_minutes > 0)
                .then(|| Duration::from_secs(hello.interval_minutes as u64 * 60)),
            refuse,
            freeze_signal: hello.freeze_signal,
            writer: Mutex::new(writer),
            op: Mutex::new(None),
            busy: Mutex::new(()),
            last_checkpoint: Mutex::new(Instant::now()),
            away: Mutex::new(away_at),
            mover: Mutex::new(None),
            migrations: Default::default(),
            moving: Default::default(),
            pinned: if parent.is_some() {
                procfs::Pinned::Always
            } else {
                procfs::pinned(creds.pid)
            },
            told: Default::default(),
            history: Default::default(),
            parent,
            wake: Mutex::new(None),
        });
        tracing::info!(pid = p.pid, uid = p.uid, restored = p.restored, deputy = rejoin.is_some(), cmd = ?p.cmdline.first(), "process registered");
        self.lock_procs().insert(p.pid, p.clone());
        let _ = stream.set_read_timeout(None);
        let ended = match rejoin {
            Some((at, _)) => self.rejoin(&p, &stream, at),
            None => false,
        };
        if ended {
            let mut procs = self.lock_procs();
            if procs.get(&p.pid).is_some_and(|q| Arc::ptr_eq(q, &p)) {
                procs.remove(&p.pid);
            }
            tracing::info!(pid = p.pid, "process left");
            return;
        }
        // Freeze requests wake this thread; until then it watches the
        // connection for the process's end (or a freeze signal someone
        // else sent it).
        let (wake, woken) = match UnixStream::pair() {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(pid = p.pid, error = %e, "cannot make a wake-up socket; the process cannot be frozen");
                return;
            }
        };
        *p.wake.lock().unwrap_or_else(|e| e.into_inner()) = Some(wake);
        loop {
            let (asked, spoke) = match wait_either(&woken, &stream) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(pid = p.pid, error = %e, "cannot watch the process's connection; closing");
                    break;
                }
            };
            if asked {
                let mut b = [0u8; 64];
                let _ = (&woken).read(&mut b);
                let op = p.op.lock().unwrap_or_else(|e| e.into_inner()).take();
                let Some(op) = op else { continue };
                let mut ctl = HomeControl {
                    stream: &stream,
                    pid: p.pid,
                    freeze_signal: p.freeze_signal,
                    out_of_step: false,
                };
                let rec = match freeze::freeze(&mut ctl) {
                    Ok(rec) => rec,
                    Err(why) => {
                        tracing::warn!(pid = p.pid, reason = %why, "cannot freeze the process; it runs on");
                        let msg = format!(
                            "process {} cannot be frozen now: {why}; it runs on unchanged",
                            p.pid
                        );
                        let err = match why {
                            FreezeFailure::CantMove(c) => ProcError::cantmove(msg, c),
                            _ => ProcError::from(msg),
                        };
                        let _ = op.reply.send(match op.migrate {
                            Some(_) => OpEvent::Migrated(Err(err)),
                            None => OpEvent::Done(Err(err)),
                        });
                        if ctl.out_of_step {
                            break;
                        }
                        continue;
                    }
                };
                let _ = op.reply.send(OpEvent::Frozen);
                if let Some(target) = op.migrate.clone() {
                    if self.migrate_out(&p, &rec, &op, &target, &stream) {
                        break;
                    }
                    continue;
                }
                let result = self.write_image(&p, &rec, &op);
                let verdict = match (&result, op.after) {
                    (Err(_), _) | (Ok(_), AfterCheckpoint::Continue) => Verdict::Continue,
                    (Ok(_), AfterCheckpoint::Stop) => Verdict::Stop,
                    (Ok(_), AfterCheckpoint::Exit) => Verdict::Exit,
                };
                self.verdict(&p, verdict);
                match &result {
                    Ok(d) => {
                        tracing::info!(pid = p.pid, path = %d.path.display(), bytes = d.bytes, frozen_ms = d.frozen_ms, "checkpoint written")
                    }
                    Err(e) => {
                        tracing::warn!(pid = p.pid, error = %e, "checkpoint failed; process runs on")
                    }
                }
                let _ = op
                    .reply
                    .send(OpEvent::Done(result.map_err(ProcError::from)));
            } else if spoke {
                // Its end (EOF), or a freeze signal nobody here asked for.
                let mut rb = [0u8; size_of::<FreezeRecord>()];
                if (&stream).read_exact(&mut rb).is_err() {
                    break;
                }
                if freeze::check_record(&rb, p.pid).is_none() {
                    tracing::warn!(pid = p.pid, "bad freeze record; closing");
                    break;
                }
                self.verdict(&p, Verdict::Continue);
            }
        }
        p.wake.lock().unwrap_or_else(|e| e.into_inner()).take();
        let mut procs = self.lock_procs();
        if procs.get(&p.pid).is_some_and(|q| Arc::ptr_eq(q, &p)) {
            procs.remove(&p.pid);
        }
        tracing::info!(pid = p.pid, "process left");
    }

    /// Move the frozen `p` to `target`. True if it left (this connection
    /// then served its deputy until the body ended); false if it runs on
    /// here.
    fn migrate_out(
        self: &Arc<Self>,
        p: &Arc<Proc>,
        rec: &FreezeRecord,
        op: &PendingOp,
        target: &crate::migrate::Target,
        ctl: &UnixStream,
    ) -> bool {
        let who = self.mover(p, rec);
        // The outcome goes into the history and to the requester.
        let report = |result: Result<MigrateDone, ProcError>| {
            self.record(
                p,
                self.node.clone(),
                target.node.clone(),
                &op.why,
                &result
                    .as_ref()
                    .map(|d| d.clone())
                    .map_err(|e| e.message.clone()),
                op.started,
            );
            let _ = op.reply.send(OpEvent::Migrated(result));
        };
        let captured = capture::describe(p.pid, p.uid, rec, &self.env).and_then(|spec| {
            let mem = std::fs::File::open(format!("/proc/{}/mem", p.pid))
                .map_err(|e| format!("cannot open /proc/{}/mem: {e}", p.pid))?;
            Ok((spec, capture::ProcMem(mem)))
        });
        let (spec, mut mem) = match captured {
            Ok(c) => c,
            Err(e) => {
                self.verdict(p, Verdict::Continue);
                tracing::warn!(pid = p.pid, node = %target.node, error = %e, "cannot capture the process; it runs on here");
                report(Err(e.into()));
                return false;
            }
        };
        // The session told the process to run on, or it is gone, on error.
        let held = match crate::migrate::move_out(&who, target, &spec, &mut mem, ctl, &p.cmdline) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(pid = p.pid, node = %target.node, error = %e, "migration failed");
                let cause = match &e {
                    Failure::NotRestored { reason, .. } => Some(Cause::Destination(reason.clone())),
                    _ => None,
                };
                report(Err(ProcError {
                    message: e.to_string(),
                    cause,
                }));
                return false;
            }
        };
        self.set_away(p, Some(&target.node));
        let done = MigrateDone {
            pid: p.pid,
            node: target.node.clone(),
            body_pid: held.body_pid,
            bytes: held.bytes,
            frozen_ms: op.started.elapsed().as_millis() as u64,
        };
        tracing::info!(pid = p.pid, node = %done.node, body_pid = done.body_pid, bytes = done.bytes, frozen_ms = done.frozen_ms, "migrated; deputy here");
        report(Ok(done));
        self.relay_away(p, ctl, held.link, who, target, held.body_pid)
    }

    /// Relay for `p`, whose body runs at `target` as `body_pid` over
    /// `link`, until it ends (true) or comes home (false).
    fn relay_away(
        self: &Arc<Self>,
        p: &Arc<Proc>,
        ctl: &UnixStream,
        link: mosix_proto::link::Link<std::net::TcpStream>,
        who: crate::migrate::Mover<'_>,
        target: &crate::migrate::Target,
        body_pid: i32,
    ) -> bool {
        let (tx, moves) = mpsc::channel();
        *p.mover.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        let on_move = |node: Option<&str>| self.set_away(p, node);
        let on_record = |r: MoveRecord| self.push_history(p, r);
        let kin = Kin {
            engine: self.clone(),
            parent: p.clone(),
        };
        let away = crate::migrate::Away {
            who,
            node: target.node.clone(),
            body_pid,
            on_move: &on_move,
            on_record: &on_record,
            address: target.address,
            family: &kin,
            procs_socket: &self.procs_socket,
            grace_s: self.grace_s,
            parent: p.parent,
        };
        let end = crate::migrate::relay(ctl, link, away, &moves);
        p.mover.lock().unwrap_or_else(|e| e.into_inner()).take();
        match end {
            crate::migrate::RelayEnd::Ended => true,
            crate::migrate::RelayEnd::Home => {
                tracing::info!(pid = p.pid, "process is home again");
                false
            }
        }
    }

    /// A deputy whose old `homed` went away rejoined this one on `ctl`:
    /// open a link to its body's host, re-attach the body there
    /// ([`ToHost::Reattach`](mosix_proto::migrate::ToHost::Reattach)) and
    /// relay for it as if it had moved from here. True once it ended
    /// (or could not be re-attached: the deputy was told it is lost);
    /// false if it came home.
    fn rejoin(self: &Arc<Self>, p: &Arc<Proc>, ctl: &UnixStream, at: Whereabouts) -> bool {
        use mosix_proto::migrate::{FromHost, ToHost};
        let Whereabouts {
            node,
            address,
            body_pid,
            ctl_fd,
            written,
        } = at;
        let lost = |why: String| {
            tracing::warn!(pid = p.pid, %node, reason = %why, "cannot re-attach a deputy's body; the deputy ends as killed");
            let mut w = p.writer.lock().unwrap_or_else(|e| e.into_inner());
            let _ = mosix_proto::local::send_local(&mut w, &DeputyMsg::Lost);
            true
        };
        let Ok(address) = address.parse::<std::net::SocketAddr>() else {
            return lost(format!("the deputy gave a bad address {address:?}"));
        };
        let target = crate::migrate::Target {
            node: node.clone(),
            address,
        };
        let mut link = match crate::migrate::connect_host(&self.node, &self.key_file, &target) {
            Ok(l) => l,
            Err(e) => return lost(e),
        };
        let attached = link
            .send(&ToHost::Reattach {
                home_pid: p.pid,
                body_pid,
                uid: p.uid,
                written,
            })
            .map_err(|e| e.to_string())
            .and_then(|()| match link.recv::<FromHost>() {
                Ok(FromHost::Held { body_pid }) => Ok(body_pid),
                Ok(FromHost::Failed { reason }) => Err(reason.to_string()),
                Ok(FromHost::Refused { reason }) => Err(reason.to_string()),
                Ok(other) => Err(format!("node {node} answered {other:?}")),
                Err(e) => Err(e.to_string()),
            });
        let body_pid = match attached {
            Ok(b) => b,
            Err(e) => return lost(format!("node {node} did not re-attach the body: {e}")),
        };
        {
            let mut w = p.writer.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = mosix_proto::local::send_local(&mut w, &DeputyMsg::Rejoined) {
                drop(w);
                let _ = link.send(&ToHost::Signal { sig: libc::SIGKILL });
                tracing::warn!(pid = p.pid, error = %e, "the rejoining deputy went away; its body is killed");
                return true;
            }
        }
        tracing::info!(pid = p.pid, %node, body_pid, "deputy rejoined; its body is re-attached");
        let who = crate::migrate::Mover {
            home: &self.node,
            key_file: &self.key_file,
            pid: p.pid,
            uid: p.uid,
            gid: p.gid,
            ctl_fd,
            freeze_signal: p.freeze_signal,
        };
        self.relay_away(p, ctl, link, who, &target, body_pid)
    }

    /// A body's fork made the deputy `child.pid`: list it, adopt its body
    /// at its node over a link of its own, and relay for it until it ends
    /// (in a thread of its own).
    fn adopt_child(self: &Arc<Self>, parent: &Proc, child: crate::migrate::ForkedChild) {
        let writer = match child.ctl.try_clone() {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(pid = child.pid, error = %e, "cannot keep the forked deputy's connection");
                return;
            }
        };
        let p = Arc::new(Proc {
            pid: child.pid,
            uid: parent.uid,
            gid: parent.gid,
            cmdline: parent.cmdline.clone(),
            restored: false,
            checkpoint_file: None,
            interval: None,
            refuse: Some(CantMove::ForkedChild {
                node: child.node.clone(),
            }),
            freeze_signal: parent.freeze_signal,
            writer: Mutex::new(writer),
            op: Mutex::new(None),
            busy: Mutex::new(()),
            last_checkpoint: Mutex::new(Instant::now()),
            away: Mutex::new(Some(child.node.clone())),
            mover: Mutex::new(None),
            migrations: Default::default(),
            moving: Default::default(),
            pinned: procfs::Pinned::Always,
            told: Default::default(),
            history: Default::default(),
            parent: Some(child.parent),
            wake: Mutex::new(None),
        });
        self.lock_procs().insert(p.pid, p.clone());
        tracing::info!(pid = p.pid, parent = child.parent, node = %child.node, "forked deputy registered");
        let me = self.clone();
        std::thread::spawn(move || {
            me.serve_child(&p, child);
            let mut procs = me.lock_procs();
            if procs.get(&p.pid).is_some_and(|q| Arc::ptr_eq(q, &p)) {
                procs.remove(&p.pid);
            }
            tracing::info!(pid = p.pid, "forked deputy left");
        });
    }

    /// The life of a forked child's relay: its deputy says it is up, its
    /// body is adopted at its node, then signals, calls and its end pass
    /// until it ends.
    fn serve_child(self: &Arc<Self>, p: &Arc<Proc>, child: crate::migrate::ForkedChild) {
        let mut ctl = child.ctl;
        let lost = |ctl: &mut UnixStream, why: String| {
            tracing::warn!(pid = p.pid, node = %child.node, reason = %why, "forked child lost; its deputy ends as killed");
            let _ = mosix_proto::local::send_local(ctl, &mosix_proto::migrate::DeputyMsg::Lost);
        };
        let _ = ctl.set_read_timeout(Some(HELLO_TIMEOUT));
        let mut word = [0u8; 4];
        if let Err(e) = ctl.read_exact(&mut word) {
            return lost(&mut ctl, format!("the forked deputy did not start: {e}"));
        }
        if u32::from_le_bytes(word) != layout::DEPUTY_READY {
            return lost(
                &mut ctl,
                "the forked deputy said something else than ready".into(),
            );
        }
        let _ = ctl.set_read_timeout(None);
        let target = crate::migrate::Target {
            node: child.node.clone(),
            address: child.address,
        };
        let mut link = match crate::migrate::connect_host(&self.node, &self.key_file, &target) {
            Ok(l) => l,
            Err(e) => return lost(&mut ctl, e),
        };
        let adopted = link
            .send(&mosix_proto::migrate::ToHost::Adopt {
                home_pid: p.pid,
                token: child.token,
            })
            .map_err(|e| e.to_string())
            .and_then(|()| match link.recv::<mosix_proto::migrate::FromHost>() {
                Ok(mosix_proto::migrate::FromHost::Held { body_pid }) => Ok(body_pid),
                Ok(mosix_proto::migrate::FromHost::Failed { reason }) => Err(reason.to_string()),
                Ok(other) => Err(format!("node {} answered {other:?}", child.node)),
                Err(e) => Err(e.to_string()),
            });
        let body_pid = match adopted {
            Ok(b) => b,
            Err(e) => return lost(&mut ctl, format!("its body was not adopted: {e}")),
        };
        tracing::info!(pid = p.pid, node = %child.node, body_pid, "forked child's body adopted");
        let (_keep, moves) = mpsc::channel();
        let on_move = |_: Option<&str>| {};
        let on_record = |r: MoveRecord| self.push_history(p, r);
        let kin = Kin {
            engine: self.clone(),
            parent: p.clone(),
        };
        let who = crate::migrate::Mover {
            home: &self.node,
            key_file: &self.key_file,
            pid: p.pid,
            uid: p.uid,
            gid: p.gid,
            ctl_fd: -1,
            freeze_signal: p.freeze_signal,
        };
        let away = crate::migrate::Away {
            who,
            node: child.node.clone(),
            body_pid,
            on_move: &on_move,
            on_record: &on_record,
            address: child.address,
            family: &kin,
            procs_socket: &self.procs_socket,
            grace_s: self.grace_s,
            parent: Some(child.parent),
        };
        let _ = crate::migrate::relay(&ctl, link, away, &moves);
    }

    /// A body reaped its child `pid` with `status`: the child's deputy
    /// ends the same way.
    fn child_reaped(&self, pid: i32, status: mosix_proto::migrate::BodyStatus) {
        let Some(p) = self.lock_procs().get(&pid).cloned() else {
            return;
        };
        if p.parent.is_none() {
            return;
        }
        let mut w = p.writer.lock().unwrap_or_else(|e| e.into_inner());
        let msg = mosix_proto::migrate::DeputyMsg::Exited { status };
        if let Err(e) = mosix_proto::local::send_local(&mut w, &msg) {
            tracing::debug!(pid, error = %e, "the reaped child's deputy is gone already");
        }
    }

    /// Who is moving, for the migration code.
    fn mover<'a>(&'a self, p: &Proc, rec: &FreezeRecord) -> crate::migrate::Mover<'a> {
        crate::migrate::Mover {
            home: &self.node,
            key_file: &self.key_file,
            pid: p.pid,
            uid: p.uid,
            gid: p.gid,
            ctl_fd: rec.ctl_fd,
            freeze_signal: p.freeze_signal,
        }
    }

    /// Add a move of `p` that began at `started` to its history.
    fn record(
        &self,
        p: &Proc,
        from: String,
        to: String,
        why: &str,
        result: &Result<MigrateDone, String>,
        started: Instant,
    ) {
        self.push_history(
            p,
            crate::migrate::move_record(from, to, why, result, started),
        );
    }

    /// Keep `r` in `p`'s history, dropping the oldest beyond the bound.
    fn push_history(&self, p: &Proc, r: MoveRecord) {
        let mut h = p.history.lock().unwrap_or_else(|e| e.into_inner());
        if h.len() >= HISTORY_MAX {
            h.pop_front();
        }
        h.push_back(r);
    }

    /// Record where `p`'s body runs (`None`: here) and count the move.
    fn set_away(&self, p: &Proc, node: Option<&str>) {
        *p.away.lock().unwrap_or_else(|e| e.into_inner()) = node.map(str::to_string);
        p.migrations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn verdict(&self, p: &Proc, v: Verdict) {
        let mut w = p.writer.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = w.write_all(&v.bytes()) {
            tracing::warn!(pid = p.pid, error = %e, "cannot send verdict");
        }
    }

    fn write_image(
        &self,
        p: &Proc,
        rec: &FreezeRecord,
        op: &PendingOp,
    ) -> Result<CheckpointDone, String> {
        let spec = capture::describe(p.pid, p.uid, rec, &self.env)?;
        let mem = std::fs::File::open(format!("/proc/{}/mem", p.pid))
            .map_err(|e| format!("cannot open /proc/{}/mem: {e}", p.pid))?;
        let written = {
            let _ids = mosix_engine::FsIds::become_user(p.uid, p.gid);
            image::write_image(&op.path, &spec, &mut capture::ProcMem(mem))
                .map_err(|e| e.to_string())?
        };
        Ok(CheckpointDone {
            pid: p.pid,
            path: written.path,
            bytes: written.bytes,
            pages: written.pages,
            frozen_ms: op.started.elapsed().as_millis() as u64,
            after: op.after,
        })
    }
}

/// A process at home's control connection, for the engine's freeze. At
/// home a process sends nothing but its freeze record on it.
struct HomeControl<'a> {
    stream: &'a UnixStream,
    pid: i32,
    freeze_signal: i32,
    /// The conversation went out of step: the connection is closed.
    out_of_step: bool,
}

impl freeze::Control for HomeControl<'_> {
    fn pid(&self) -> i32 {
        self.pid
    }

    fn freeze_signal(&self) -> i32 {
        self.freeze_signal
    }

    fn blocks_signal(&mut self) -> bool {
        procfs::blocks_freeze_signal(self.pid, self.freeze_signal)
    }

    fn send_signal(&mut self) -> std::io::Result<()> {
        mosix_engine::kill(self.pid, self.freeze_signal)
    }

    fn readable(&mut self, timeout: Duration) -> std::io::Result<bool> {
        readable(self.stream, timeout)
    }

    fn read_exact(&mut self, buf: &mut [u8], timeout: Duration) -> std::io::Result<()> {
        self.stream.set_read_timeout(Some(timeout))?;
        let got = (&*self.stream).read_exact(buf);
        let _ = self.stream.set_read_timeout(None);
        got
    }

    fn out_of_step(&mut self) {
        self.out_of_step = true;
    }
}

/// Whether `s` has something to read within `timeout`.
fn readable(s: &UnixStream, timeout: Duration) -> std::io::Result<bool> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let ms = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
    let mut fds = [PollFd::new(s.as_fd(), PollFlags::POLLIN)];
    Ok(poll(&mut fds, ms)? > 0)
}

/// Wait until `woken` (a freeze request) or `stream` (the process) has
/// something to read: which ones.
fn wait_either(woken: &UnixStream, stream: &UnixStream) -> std::io::Result<(bool, bool)> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut fds = [
        PollFd::new(woken.as_fd(), PollFlags::POLLIN),
        PollFd::new(stream.as_fd(), PollFlags::POLLIN),
    ];
    loop {
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let hit = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
    Ok((hit(&fds[0]), hit(&fds[1])))
}

/// Why a request about a process failed: the message for people, and
/// the cause for the callers' decisions ([`Cause`]).
#[derive(Debug)]
struct ProcError {
    message: String,
    cause: Option<Cause>,
}

impl ProcError {
    /// It cannot move now, for `why`.
    fn cantmove(message: String, why: CantMove) -> ProcError {
        ProcError {
            message,
            cause: Some(Cause::CantMove(why)),
        }
    }

    /// Something else is under way for it.
    fn busy(message: String) -> ProcError {
        ProcError {
            message,
            cause: Some(Cause::Busy),
        }
    }

    /// The answer to the caller.
    fn response(self) -> ProcessResponse {
        ProcessResponse::Error {
            message: self.message,
            cause: self.cause,
        }
    }
}

impl std::fmt::Display for ProcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<String> for ProcError {
    fn from(message: String) -> ProcError {
        ProcError {
            message,
            cause: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn procs() -> Procs {
        let config =
            Config::parse("[node]\nname = \"n1\"\n", std::path::Path::new("test")).unwrap();
        Procs::new(&config).unwrap()
    }

    /// A process of `uid` listed under `pid`, at home, pinned by `mosrun -h`,
    /// whose connection thread is not serving it (it cannot be frozen).
    fn listed(procs: &Procs, pid: i32, uid: u32) -> Arc<Proc> {
        let (writer, _) = UnixStream::pair().unwrap();
        let p = Arc::new(Proc {
            pid,
            uid,
            gid: uid,
            cmdline: vec!["sleep".into()],
            restored: false,
            checkpoint_file: None,
            interval: None,
            refuse: None,
            freeze_signal: libc::SIGRTMIN() + 2,
            writer: Mutex::new(writer),
            op: Mutex::new(None),
            busy: Mutex::new(()),
            last_checkpoint: Mutex::new(Instant::now()),
            away: Mutex::new(None),
            mover: Mutex::new(None),
            migrations: Default::default(),
            moving: Default::default(),
            pinned: procfs::Pinned::UntilTold,
            told: Default::default(),
            history: Default::default(),
            parent: None,
            wake: Mutex::new(None),
        });
        procs.lock_procs().insert(pid, p.clone());
        p
    }

    fn migrate(procs: &Procs, uid: u32, pid: i32, node: &str) -> ProcessResponse {
        let caller = Credentials {
            pid: 1,
            uid,
            gid: uid,
        };
        procs.handle(
            &caller,
            ProcessRequest::Migrate {
                pid,
                node: node.into(),
                address: "127.0.0.1:1".into(),
                automatic: false,
            },
        )
    }

    fn message(r: &ProcessResponse) -> &str {
        match r {
            ProcessResponse::Error { message, .. } => message,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn another_users_process_is_refused_before_anything_is_said_about_it() {
        let procs = procs();
        let p = listed(&procs, 999_999_002, 2000);
        for node in ["home", "n1", "n2"] {
            let r = migrate(&procs, 1000, p.pid, node);
            assert!(
                message(&r).starts_with("permission denied"),
                "{node}: {r:?}"
            );
        }
        // Its owner hears where it is.
        let r = migrate(&procs, 2000, p.pid, "home");
        assert!(message(&r).contains("already runs here"), "{r:?}");
    }

    #[test]
    fn a_refused_or_failed_move_leaves_the_stay_home_pin() {
        let procs = procs();
        let p = listed(&procs, 999_999_001, 2000);
        // Another user's request is refused...
        let r = migrate(&procs, 1000, p.pid, "n2");
        assert!(message(&r).contains("permission denied"), "{r:?}");
        // ...and the owner's fails (it cannot be frozen here).
        let r = migrate(&procs, 2000, p.pid, "n2");
        message(&r);
        // Neither was a move: the balancer still leaves it home.
        assert!(!p.told.load(std::sync::atomic::Ordering::Relaxed));
        let rows = procs.list(&Credentials {
            pid: 1,
            uid: 0,
            gid: 0,
        });
        assert!(rows[0].no_auto, "{rows:?}");
    }
}
