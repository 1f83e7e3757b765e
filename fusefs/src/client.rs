//! The client end of a view session: two authenticated links to the home's
//! `homed` (see [`mosix_proto::view`]), multiplexing many concurrent
//! requests by id.
//!
//! Callers (the FUSE worker threads) call [`ViewClient::call`], which
//! registers the request id, writes the request on the request link under
//! a lock, and waits for its response. One reader thread owns the reply
//! link and hands each response to the caller waiting for its id, in
//! whatever order the home answers. A pinger keeps both links busy every
//! [`PING_INTERVAL`], so a home that vanishes is noticed within
//! [`LINK_TIMEOUT`]: then every waiting and later call fails with EIO,
//! never hangs.
//!
//! # When the home goes away
//!
//! By default a broken session ends for good. A client told to
//! [`ViewClient::keep_trying_for`] a while (`remoted` does, for the grace
//! period in which bodies wait for a restarted `homed`) instead fails
//! what waits with EIO, answers every new call with EIO at once (nothing
//! queues), and tries every [`RECONNECT_RETRY`] to open a new session
//! with the same credentials, over new authenticated links. Once one is
//! open it looks every node the kernel holds up again by its path (the
//! client remembers each node's parent and name, [`crate::nodes`]), so
//! the kernel's inodes, the bodies' cwd and the bind-mounted directories
//! work again; a node found under another number, or no longer there,
//! stays stale (ESTALE). Then it opens again every file and directory the
//! kernel holds open, by node, with the same flags less the creating ones
//! (`O_CREAT`, `O_EXCL`, `O_TRUNC`): the kernel's handles are the
//! client's own numbers ([`Handles`]), each standing for the home's
//! handle of the current session, so a body's open files (and the
//! program and libraries it maps from the view) work again; FUSE passes
//! the offset with every read and write, so none is lost. A file that
//! cannot be opened again (deleted meanwhile, permissions changed) fails
//! with EIO until closed (closing succeeds). Record locks taken through
//! the old session are gone (the home dropped them with it), and writes
//! that failed with EIO while the home was away are not replayed. Past
//! the retry period the session ends for good.

use crate::nodes::{Handles, NodePaths, closes, op_fh};
use mosix_proto::link::{ClusterKey, Hello, Link, LinkError, Role};
use mosix_proto::view::{Attr, Op, Opened, Reply, Request, Response, Service, ViewOpen};
use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::Duration;
use thiserror::Error;

/// How often the client proves it is alive (and checks the home is).
pub const PING_INTERVAL: Duration = Duration::from_secs(10);

/// Silence after which a link counts as dead.
pub const LINK_TIMEOUT: Duration = Duration::from_secs(30);

/// How long connecting to the home may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whose credentials the home uses for every operation of the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    /// User id (not 0).
    pub uid: u32,
    /// Primary group.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// Why a view session could not be opened.
#[derive(Debug, Error)]
pub enum ViewError {
    /// cannot connect to the home's homed at {addr}: {source}; check that homed runs there and the address is its link port
    #[error(
        "cannot connect to the home's homed at {addr}: {error}; check that homed runs there and the address is its link port"
    )]
    Connect {
        /// The home's link address.
        addr: SocketAddr,
        /// What the OS said (in the message, so not also a `source()`).
        error: std::io::Error,
    },
    /// link to the home's homed at {addr} failed: {error}
    #[error("link to the home's homed at {addr} failed: {error}")]
    Link {
        /// The home's link address.
        addr: SocketAddr,
        /// What went wrong (in the message, so not also a `source()`).
        error: LinkError,
    },
    /// the home at {addr} refused the view session: {message}
    #[error("the home at {addr} refused the view session: {message}")]
    Refused {
        /// The home's link address.
        addr: SocketAddr,
        /// The home's reason.
        message: String,
    },
    /// cannot get random bytes for a session token: {0}
    #[error("cannot get random bytes for a session token: {0}")]
    Random(String),
}

type Waiter = mpsc::SyncSender<Result<Reply, i32>>;

/// The session is up.
const UP: u8 = 0;
/// The links broke; a new session is being opened (calls fail with EIO).
const DOWN: u8 = 1;
/// Ended for good (shut down, or the home did not come back in time).
const CLOSED: u8 = 2;

/// How often a client whose home went away tries to open a new session.
pub const RECONNECT_RETRY: Duration = Duration::from_secs(1);

/// The links of one session.
struct Conn {
    requests: Link<TcpStream>,
    sockets: [TcpStream; 2],
}

impl Conn {
    fn close(&self) {
        for s in &self.sockets {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// How to open a session again.
struct Recipe {
    key: ClusterKey,
    node: String,
    creds: Creds,
}

/// One open view session; shared by all FUSE threads.
pub struct ViewClient {
    conn: Mutex<Option<Conn>>,
    pending: Mutex<HashMap<u64, Waiter>>,
    next_id: AtomicU64,
    state: AtomicU8,
    /// The session's number: 1 for the first, one more for each new
    /// session after the home came back (a reader of an older one that
    /// breaks does not count).
    epoch: AtomicU64,
    /// Signalled when the session ends for good, for the pinger.
    gone: (Mutex<bool>, Condvar),
    home: SocketAddr,
    recipe: Recipe,
    /// How long to try to open a new session after the links broke
    /// (zero: never; the session ends at once, as before).
    retry_for: Mutex<Duration>,
    nodes: Mutex<NodePaths>,
    handles: Mutex<Handles>,
    locks: crate::locks::LockHolders,
    /// This client, for its background threads.
    me: std::sync::Weak<ViewClient>,
}

impl std::fmt::Debug for ViewClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewClient")
            .field("home", &self.home)
            .field("state", &self.state.load(Ordering::Relaxed))
            .field("epoch", &self.epoch.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn open_link(addr: SocketAddr, key: &ClusterKey, node: &str) -> Result<Link<TcpStream>, ViewError> {
    let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|error| ViewError::Connect { addr, error })?;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(LINK_TIMEOUT));
    let _ = stream.set_write_timeout(Some(LINK_TIMEOUT));
    let (link, _peer) = Link::connect(stream, key, Hello::new(node, Role::Remoted))
        .map_err(|error| ViewError::Link { addr, error })?;
    Ok(link)
}

/// Opens the two links of a session; returns them (the reply link apart)
/// and the root's attributes.
fn open_session(
    home: SocketAddr,
    recipe: &Recipe,
) -> Result<(Conn, Link<TcpStream>, Attr), ViewError> {
    use rand::TryRngCore;
    let mut token = [0u64; 2];
    for t in &mut token {
        *t = rand::rngs::OsRng
            .try_next_u64()
            .map_err(|e| ViewError::Random(e.to_string()))?;
    }
    let link_err = |error| ViewError::Link { addr: home, error };
    let mut requests = open_link(home, &recipe.key, &recipe.node)?;
    requests
        .send(&Service::View(ViewOpen {
            session: token,
            uid: recipe.creds.uid,
            gid: recipe.creds.gid,
            groups: recipe.creds.groups.clone(),
        }))
        .map_err(link_err)?;
    let mut replies = open_link(home, &recipe.key, &recipe.node)?;
    replies
        .send(&Service::ViewReplies { session: token })
        .map_err(link_err)?;
    let root = match replies.recv::<Opened>().map_err(link_err)? {
        Opened::Ready { root } => root,
        Opened::Refused { message } => {
            return Err(ViewError::Refused {
                addr: home,
                message,
            });
        }
    };
    let sockets = [
        requests
            .get_ref()
            .try_clone()
            .map_err(|e| link_err(e.into()))?,
        replies
            .get_ref()
            .try_clone()
            .map_err(|e| link_err(e.into()))?,
    ];
    Ok((Conn { requests, sockets }, replies, root))
}

impl ViewClient {
    /// Opens a view session at the home's `homed` link address `home`,
    /// acting for `creds`; `node` is this node's name. Returns the client
    /// and the attributes of the view's root.
    pub fn connect(
        home: SocketAddr,
        key: &ClusterKey,
        node: &str,
        creds: &Creds,
    ) -> Result<(Arc<ViewClient>, Attr), ViewError> {
        let recipe = Recipe {
            key: key.clone(),
            node: node.to_string(),
            creds: creds.clone(),
        };
        let (conn, replies, root) = open_session(home, &recipe)?;
        let client = Arc::new_cyclic(|me| ViewClient {
            conn: Mutex::new(Some(conn)),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            state: AtomicU8::new(UP),
            epoch: AtomicU64::new(1),
            gone: (Mutex::new(false), Condvar::new()),
            home,
            recipe,
            retry_for: Mutex::new(Duration::ZERO),
            nodes: Mutex::new(NodePaths::default()),
            handles: Mutex::new(Handles::default()),
            locks: crate::locks::LockHolders::default(),
            me: me.clone(),
        });
        let link_err = |error| ViewError::Link { addr: home, error };
        client
            .start_reader(replies, 1)
            .map_err(|e| link_err(e.into()))?;
        let pinger = client.clone();
        std::thread::Builder::new()
            .name("view-pinger".into())
            .spawn(move || pinger.ping_loop())
            .map_err(|e| link_err(e.into()))?;
        tracing::info!(%home, uid = creds.uid, "view session open");
        Ok((client, root))
    }

    /// When the links break, keep trying for `how_long` to open a new
    /// session (the home's `homed` restarting) instead of ending the
    /// session at once. See the module doc.
    pub fn keep_trying_for(&self, how_long: Duration) {
        *self.retry_for.lock().unwrap_or_else(|e| e.into_inner()) = how_long;
    }

    fn start_reader(self: &Arc<Self>, replies: Link<TcpStream>, epoch: u64) -> std::io::Result<()> {
        let reader = self.clone();
        std::thread::Builder::new()
            .name("view-reader".into())
            .spawn(move || reader.read_replies(replies, epoch))
            .map(|_| ())
    }

    /// The processes of this node holding record locks through this
    /// session (which the local kernel does not record).
    pub fn locks(&self) -> &crate::locks::LockHolders {
        &self.locks
    }

    /// Whether the session works, or may work again (its home is away and
    /// a new session is being opened).
    pub fn is_alive(&self) -> bool {
        self.state.load(Ordering::Acquire) != CLOSED
    }

    /// Runs `op` at the home and waits for its result; an errno on
    /// failure, EIO while the home is away or once the session is closed,
    /// and EIO for a file the new session could not open again. File
    /// handles in `op` and in the reply are the client's own (see
    /// [`Handles`]).
    pub fn call(&self, mut op: Op) -> Result<Reply, i32> {
        let kernel_fh = op_fh(&mut op).map(|fh| *fh);
        if self.state.load(Ordering::Acquire) != UP {
            // Closing needs no home (it closed its files with its
            // session); anything else fails at once.
            if closes(&op) {
                if let (Some(k), Op::Release { .. } | Op::ReleaseDir { .. }) = (kernel_fh, &op) {
                    self.lock_handles().remove(k);
                }
                return Ok(Reply::Done);
            }
            return Err(libc::EIO);
        }
        if let Some(k) = kernel_fh {
            let home_fh = self.lock_handles().home_fh(k);
            match home_fh {
                Some(h) => {
                    if let Some(fh) = op_fh(&mut op) {
                        *fh = h;
                    }
                }
                // The home closed it with its old session.
                None if closes(&op) => {
                    if matches!(op, Op::Release { .. } | Op::ReleaseDir { .. }) {
                        self.lock_handles().remove(k);
                    }
                    return Ok(Reply::Done);
                }
                None => return Err(libc::EIO),
            }
        }
        let mut reply = self.call_raw(op.clone())?;
        match (&op, &mut reply) {
            (Op::Open { node, flags }, Reply::Opened { fh, .. }) => {
                *fh = self.lock_handles().add(*node, *flags, false, *fh);
            }
            (Op::OpenDir { node }, Reply::Opened { fh, .. }) => {
                *fh = self.lock_handles().add(*node, 0, true, *fh);
            }
            (Op::Create { flags, .. }, Reply::Created { node, fh, .. }) => {
                *fh = self.lock_handles().add(*node, *flags, false, *fh);
            }
            _ => {}
        }
        if let Some(k) = kernel_fh {
            if matches!(op, Op::Release { .. } | Op::ReleaseDir { .. }) {
                self.lock_handles().remove(k);
            }
            // What the kernel sees.
            if let Some(fh) = op_fh(&mut op) {
                *fh = k;
            }
        }
        self.nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .learn(&op, &reply);
        Ok(reply)
    }

    fn lock_handles(&self) -> std::sync::MutexGuard<'_, Handles> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `op` as it is, whatever the session's state (a new session's
    /// own lookups use it before it is up).
    fn call_raw(&self, op: Op) -> Result<Reply, i32> {
        if self.state.load(Ordering::Acquire) == CLOSED {
            return Err(libc::EIO);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::sync_channel(1);
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        if let Err(e) = self.send(&Request { id, op }) {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            self.lost(&format!("cannot send a request: {e}"));
            return Err(libc::EIO);
        }
        rx.recv().unwrap_or(Err(libc::EIO))
    }

    /// Tells the home the kernel forgot `count` lookups of `node`.
    pub fn forget(&self, node: u64, count: u64) {
        self.nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .forget(node, count);
        if self.state.load(Ordering::Acquire) != UP {
            return;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.send(&Request {
            id,
            op: Op::Forget { node, count },
        }) {
            self.lost(&format!("cannot send a forget: {e}"));
        }
    }

    fn send(&self, req: &Request) -> Result<(), LinkError> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        match conn.as_mut() {
            Some(c) => c.requests.send(req),
            None => Err(LinkError::Io(std::io::Error::from(
                std::io::ErrorKind::NotConnected,
            ))),
        }
    }

    /// Ends the session for good: closes both links and fails every
    /// waiter.
    pub fn shutdown(&self) {
        let was = self.state.swap(CLOSED, Ordering::AcqRel);
        if was != CLOSED {
            tracing::info!(home = %self.home, "view session closed");
        }
        self.drop_links();
        let (lock, cv) = &self.gone;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
    }

    /// Closes the links and fails every waiting call with EIO.
    fn drop_links(&self) {
        if let Some(c) = self.conn.lock().unwrap_or_else(|e| e.into_inner()).take() {
            c.close();
        }
        let waiters: Vec<Waiter> = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, w)| w)
            .collect();
        for w in waiters {
            let _ = w.try_send(Err(libc::EIO));
        }
    }

    /// The links broke (`why`): fail what waits; then either open a new
    /// session in the background (see [`ViewClient::keep_trying_for`]) or
    /// end for good.
    fn lost(&self, why: &str) {
        if self
            .state
            .compare_exchange(UP, DOWN, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        // The home's session held the locks and the open files; they went
        // with it.
        self.locks.clear();
        self.lock_handles().lose_all();
        let retry_for = *self.retry_for.lock().unwrap_or_else(|e| e.into_inner());
        if retry_for.is_zero() {
            tracing::warn!(home = %self.home, reason = why, "view session lost; file operations now fail with EIO");
            // Closed before any waiter hears EIO.
            self.shutdown();
            return;
        }
        self.drop_links();
        tracing::warn!(home = %self.home, reason = why, retry_s = retry_for.as_secs(), "view session lost; file operations fail with EIO until the home is back");
        let Some(me) = self.myself() else {
            self.shutdown();
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("view-reconnect".into())
            .spawn(move || me.reconnect(retry_for));
        if spawned.is_err() {
            self.shutdown();
        }
    }

    /// Try to open a new session every [`RECONNECT_RETRY`] for `retry_for`;
    /// look the kernel's nodes up again in it, then let calls through.
    fn reconnect(self: Arc<Self>, retry_for: Duration) {
        let until = std::time::Instant::now() + retry_for;
        loop {
            if self.state.load(Ordering::Acquire) == CLOSED {
                return;
            }
            match open_session(self.home, &self.recipe) {
                Ok((conn, replies, _root)) => {
                    let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
                    *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn);
                    if self.start_reader(replies, epoch).is_err() {
                        self.shutdown();
                        return;
                    }
                    let (found, stale) = self.relook();
                    let (reopened, closed) = self.reopen();
                    if self
                        .state
                        .compare_exchange(DOWN, UP, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        tracing::info!(home = %self.home, epoch, found, stale, reopened, closed, "view session open again");
                        return;
                    }
                    // It broke again while looking up: try again.
                    if self.state.load(Ordering::Acquire) == CLOSED {
                        return;
                    }
                }
                Err(e) => {
                    if std::time::Instant::now() >= until {
                        tracing::warn!(home = %self.home, error = %e, waited_s = retry_for.as_secs(), "the home did not come back; the view stays closed");
                        self.shutdown();
                        return;
                    }
                    tracing::debug!(home = %self.home, error = %e, "the home is not back yet");
                }
            }
            std::thread::sleep(RECONNECT_RETRY);
        }
    }

    /// Look up every node the kernel holds again in the new session, by
    /// its path; a node found under another number, or not found, stays
    /// stale for the kernel. Returns (found, stale).
    fn relook(&self) -> (usize, usize) {
        let order = self
            .nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replay_order();
        let (mut found, mut stale) = (0, 0);
        for (node, parent, name) in order {
            match self.call_raw(Op::Lookup { parent, name }) {
                Ok(Reply::Entry { node: again, .. }) if again == node => found += 1,
                Ok(Reply::Entry { node: other, .. }) => {
                    let _ = self.send(&Request {
                        id: self.next_id.fetch_add(1, Ordering::Relaxed),
                        op: Op::Forget {
                            node: other,
                            count: 1,
                        },
                    });
                    self.nodes
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .drop_node(node);
                    stale += 1;
                }
                _ => {
                    self.nodes
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .drop_node(node);
                    stale += 1;
                }
            }
        }
        (found, stale)
    }

    /// Open every file the kernel holds open again in the new session (by
    /// node, with its flags less the creating ones); one that cannot be
    /// fails with EIO until closed. Returns (reopened, not).
    fn reopen(&self) -> (usize, usize) {
        let all = self.lock_handles().all();
        let (mut ok, mut not) = (0, 0);
        for (k, f) in all {
            let op = if f.dir {
                Op::OpenDir { node: f.node }
            } else {
                Op::Open {
                    node: f.node,
                    flags: f.flags,
                }
            };
            let home_fh = match self.call_raw(op) {
                Ok(Reply::Opened { fh, .. }) => Some(fh),
                _ => None,
            };
            if home_fh.is_some() {
                ok += 1;
            } else {
                not += 1;
            }
            self.lock_handles().reopened(k, home_fh);
        }
        (ok, not)
    }

    /// This client as an `Arc`, for a background thread.
    fn myself(&self) -> Option<Arc<ViewClient>> {
        self.me.upgrade()
    }

    fn read_replies(&self, mut replies: Link<TcpStream>, epoch: u64) {
        loop {
            match replies.recv::<Response>() {
                Ok(resp) => {
                    let waiter = self
                        .pending
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&resp.id);
                    match waiter {
                        Some(w) => {
                            let _ = w.try_send(resp.result);
                        }
                        None => {
                            self.lost(&format!(
                                "the home answered request {} that nobody asked",
                                resp.id
                            ));
                            return;
                        }
                    }
                }
                Err(e) => {
                    if self.epoch.load(Ordering::Acquire) == epoch {
                        if self.state.load(Ordering::Acquire) == DOWN {
                            // Broke while the new session looked its nodes
                            // up: fail those lookups; the next call finds
                            // no links and starts over.
                            self.drop_links();
                        } else {
                            self.lost(&format!("reply link: {e}"));
                        }
                    }
                    return;
                }
            }
        }
    }

    fn ping_loop(&self) {
        let (lock, cv) = &self.gone;
        loop {
            let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
            let (guard, _) = cv
                .wait_timeout_while(guard, PING_INTERVAL, |gone| !*gone)
                .unwrap_or_else(|e| e.into_inner());
            if *guard {
                return;
            }
            drop(guard);
            // While the home is away this fails at once; the reconnecting
            // thread watches for its return.
            let _ = self.call(Op::Ping);
        }
    }
}

impl Drop for ViewClient {
    fn drop(&mut self) {
        if let Some(c) = self.conn.lock().unwrap_or_else(|e| e.into_inner()).take() {
            c.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_connection_is_said_once() {
        // Nothing listens on a port just released.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let key = ClusterKey::from_bytes([7; 32]);
        let e = open_link(addr, &key, "n1").unwrap_err();
        let said = mosix_proto::error_chain(&e);
        assert_eq!(said.matches("refused").count(), 1, "{said}");
    }
    use mosix_proto::link::CLUSTER_KEY_LEN;
    use mosix_proto::view::{Bytes, ROOT_NODE};
    use std::net::TcpListener;

    fn key() -> ClusterKey {
        ClusterKey::from_bytes([7; CLUSTER_KEY_LEN])
    }

    fn root() -> Attr {
        crate::fs::placeholder_dir(ROOT_NODE)
    }

    /// A stand-in home: accepts the two links of one session and hands
    /// them to `serve` after answering Ready.
    fn fake_home(
        serve: impl FnOnce(Link<TcpStream>, Link<TcpStream>) + Send + 'static,
    ) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let accept = || {
                let (s, _) = listener.accept().unwrap();
                let (mut link, _) =
                    Link::accept(s, &key(), Hello::new("home", Role::Homed)).unwrap();
                let svc: Service = link.recv().unwrap();
                (link, svc)
            };
            let (req, svc1) = accept();
            let (mut rep, svc2) = accept();
            assert!(matches!(svc1, Service::View(ViewOpen { uid: 1000, .. })));
            assert!(matches!(svc2, Service::ViewReplies { .. }));
            rep.send(&Opened::Ready { root: root() }).unwrap();
            serve(req, rep);
        });
        addr
    }

    fn creds() -> Creds {
        Creds {
            uid: 1000,
            gid: 1000,
            groups: vec![],
        }
    }

    #[test]
    fn concurrent_calls_get_their_own_replies_in_any_order() {
        let addr = fake_home(|mut req, mut rep| {
            let mut got = Vec::new();
            for _ in 0..3 {
                got.push(req.recv::<Request>().unwrap());
            }
            // Answer in reverse order, each with data naming its request.
            for r in got.iter().rev() {
                let Op::Read { offset, .. } = r.op else {
                    panic!("unexpected {r:?}")
                };
                let data = Bytes(offset.to_string().into_bytes());
                rep.send(&Response {
                    id: r.id,
                    result: Ok(Reply::Data(data)),
                })
                .unwrap();
            }
            // Keep the links open until the client is done.
            let _ = req.recv::<Request>();
        });
        let (client, attr) = ViewClient::connect(addr, &key(), "remote", &creds()).unwrap();
        assert_eq!(attr.ino, ROOT_NODE);
        let threads: Vec<_> = (0..3u64)
            .map(|i| {
                let c = client.clone();
                std::thread::spawn(move || {
                    let r = c.call_raw(Op::Read {
                        fh: 1,
                        offset: i * 10,
                        size: 1,
                    });
                    (i, r)
                })
            })
            .collect();
        for t in threads {
            let (i, r) = t.join().unwrap();
            assert_eq!(r, Ok(Reply::Data(Bytes((i * 10).to_string().into_bytes()))));
        }
        client.shutdown();
        assert_eq!(client.call(Op::Ping), Err(libc::EIO));
    }

    #[test]
    fn a_home_that_goes_away_fails_waiting_calls_with_eio() {
        let addr = fake_home(|mut req, rep| {
            let _ = req.recv::<Request>();
            drop(rep);
            drop(req);
        });
        let (client, _) = ViewClient::connect(addr, &key(), "remote", &creds()).unwrap();
        assert_eq!(client.call(Op::GetAttr { node: ROOT_NODE }), Err(libc::EIO));
        assert!(!client.is_alive());
        assert_eq!(client.call(Op::Ping), Err(libc::EIO));
    }

    #[test]
    fn a_reply_nobody_asked_for_ends_the_session() {
        let addr = fake_home(|mut req, mut rep| {
            let r = req.recv::<Request>().unwrap();
            rep.send(&Response {
                id: r.id + 1000,
                result: Ok(Reply::Done),
            })
            .unwrap();
            let _ = req.recv::<Request>();
        });
        let (client, _) = ViewClient::connect(addr, &key(), "remote", &creds()).unwrap();
        assert_eq!(client.call(Op::Ping), Err(libc::EIO));
        assert!(!client.is_alive());
    }

    #[test]
    fn a_refused_session_says_why() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut links = Vec::new();
            for _ in 0..2 {
                let (s, _) = listener.accept().unwrap();
                let (mut l, _) = Link::accept(s, &key(), Hello::new("home", Role::Homed)).unwrap();
                let _: Service = l.recv().unwrap();
                links.push(l);
            }
            links[1]
                .send(&Opened::Refused {
                    message: "no such user".into(),
                })
                .unwrap();
        });
        let err = ViewClient::connect(addr, &key(), "remote", &creds()).unwrap_err();
        assert!(
            err.to_string()
                .contains("refused the view session: no such user"),
            "{err}"
        );
    }

    /// A home that serves two sessions one after the other: the first
    /// answers two requests and then goes away (a restart), the second
    /// serves until the client leaves. Files are answered as node 20,
    /// handle 5; a read answers the handle it was given.
    fn restarting_home() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for round in 0..2 {
                let accept = || {
                    let (s, _) = listener.accept().unwrap();
                    let (mut link, _) =
                        Link::accept(s, &key(), Hello::new("home", Role::Homed)).unwrap();
                    let _: Service = link.recv().unwrap();
                    link
                };
                let mut req = accept();
                let mut rep = accept();
                rep.send(&Opened::Ready { root: root() }).unwrap();
                let mut answered = 0;
                while round == 1 || answered < 2 {
                    let Ok(r) = req.recv::<Request>() else { break };
                    let result = match r.op {
                        Op::Lookup { .. } => Ok(Reply::Entry {
                            node: 20,
                            attr: crate::fs::placeholder_dir(20),
                        }),
                        Op::Open { .. } => Ok(Reply::Opened {
                            fh: 5,
                            keep_cache: false,
                        }),
                        Op::Read { fh, .. } => Ok(Reply::Data(Bytes(fh.to_string().into_bytes()))),
                        Op::Forget { .. } => continue,
                        _ => Ok(Reply::Done),
                    };
                    rep.send(&Response { id: r.id, result }).unwrap();
                    answered += 1;
                }
            }
        });
        addr
    }

    #[test]
    fn a_client_told_to_keep_trying_opens_a_new_session_and_its_files_again() {
        let addr = restarting_home();
        let (client, _) = ViewClient::connect(addr, &key(), "remote", &creds()).unwrap();
        client.keep_trying_for(Duration::from_secs(30));
        let f = client.call(Op::Lookup {
            parent: ROOT_NODE,
            name: Bytes(b"f".to_vec()),
        });
        assert!(matches!(f, Ok(Reply::Entry { node: 20, .. })), "{f:?}");
        let Ok(Reply::Opened { fh: old, .. }) = client.call(Op::Open { node: 20, flags: 0 }) else {
            panic!("no open")
        };
        assert_ne!(old, 0);
        // The home went away and comes back: calls fail (EIO, at once)
        // until the new session is up.
        let start = std::time::Instant::now();
        while client.call(Op::Ping).is_err() {
            assert!(start.elapsed() < Duration::from_secs(20), "no new session");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(client.is_alive());
        let read = |fh| {
            client.call(Op::Read {
                fh,
                offset: 0,
                size: 1,
            })
        };
        // Opened again in the new session: the home's handle 5 there.
        assert_eq!(read(old), Ok(Reply::Data(Bytes(b"5".to_vec()))));
        assert_eq!(client.call(Op::Release { fh: old }), Ok(Reply::Done));
        assert_eq!(read(old), Err(libc::EIO), "a closed handle");
        let Ok(Reply::Opened { fh: new, .. }) = client.call(Op::Open { node: 20, flags: 0 }) else {
            panic!("no open in the new session")
        };
        assert_ne!(new, old);
        assert_eq!(read(new), Ok(Reply::Data(Bytes(b"5".to_vec()))));
        client.shutdown();
        assert!(!client.is_alive());
    }
}
