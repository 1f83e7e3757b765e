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

use mosix_proto::link::{ClusterKey, Hello, Link, LinkError, Role};
use mosix_proto::view::{Attr, Op, Opened, Reply, Request, Response, Service, ViewOpen};
use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
        "cannot connect to the home's homed at {addr}: {source}; check that homed runs there and the address is its link port"
    )]
    Connect {
        /// The home's link address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// link to the home's homed at {addr} failed: {source}
    #[error("link to the home's homed at {addr} failed: {source}")]
    Link {
        /// The home's link address.
        addr: SocketAddr,
        /// What went wrong.
        source: LinkError,
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

/// One open view session; shared by all FUSE threads.
pub struct ViewClient {
    requests: Mutex<Link<TcpStream>>,
    pending: Mutex<HashMap<u64, Waiter>>,
    next_id: AtomicU64,
    dead: AtomicBool,
    sockets: [TcpStream; 2],
    /// Signalled when the session dies, for the pinger.
    gone: (Mutex<bool>, Condvar),
    home: SocketAddr,
    locks: crate::locks::LockHolders,
}

impl std::fmt::Debug for ViewClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewClient")
            .field("home", &self.home)
            .field("dead", &self.dead.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn open_link(addr: SocketAddr, key: &ClusterKey, node: &str) -> Result<Link<TcpStream>, ViewError> {
    let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|source| ViewError::Connect { addr, source })?;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(LINK_TIMEOUT));
    let _ = stream.set_write_timeout(Some(LINK_TIMEOUT));
    let (link, _peer) = Link::connect(stream, key, Hello::new(node, Role::Remoted))
        .map_err(|source| ViewError::Link { addr, source })?;
    Ok(link)
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
        use rand::TryRngCore;
        let mut token = [0u64; 2];
        for t in &mut token {
            *t = rand::rngs::OsRng
                .try_next_u64()
                .map_err(|e| ViewError::Random(e.to_string()))?;
        }
        let link_err = |source| ViewError::Link { addr: home, source };
        let mut requests = open_link(home, key, node)?;
        requests
            .send(&Service::View(ViewOpen {
                session: token,
                uid: creds.uid,
                gid: creds.gid,
                groups: creds.groups.clone(),
            }))
            .map_err(link_err)?;
        let mut replies = open_link(home, key, node)?;
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
        let client = Arc::new(ViewClient {
            requests: Mutex::new(requests),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            dead: AtomicBool::new(false),
            sockets,
            gone: (Mutex::new(false), Condvar::new()),
            home,
            locks: crate::locks::LockHolders::default(),
        });
        let reader = client.clone();
        std::thread::Builder::new()
            .name("view-reader".into())
            .spawn(move || reader.read_replies(replies))
            .map_err(|e| link_err(e.into()))?;
        let pinger = client.clone();
        std::thread::Builder::new()
            .name("view-pinger".into())
            .spawn(move || pinger.ping_loop())
            .map_err(|e| link_err(e.into()))?;
        tracing::info!(%home, uid = creds.uid, "view session open");
        Ok((client, root))
    }

    /// The processes of this node holding record locks through this
    /// session (which the local kernel does not record).
    pub fn locks(&self) -> &crate::locks::LockHolders {
        &self.locks
    }

    /// Whether the session still works.
    pub fn is_alive(&self) -> bool {
        !self.dead.load(Ordering::Acquire)
    }

    /// Runs `op` at the home and waits for its result; an errno on
    /// failure, EIO once the session is dead.
    pub fn call(&self, op: Op) -> Result<Reply, i32> {
        if !self.is_alive() {
            return Err(libc::EIO);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::sync_channel(1);
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        // A session that died between the check and the insert has
        // already failed every waiter; do not wait for nothing.
        if !self.is_alive() {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            return Err(libc::EIO);
        }
        if let Err(e) = self.send(&Request { id, op }) {
            self.fail(&format!("cannot send a request: {e}"));
            return Err(libc::EIO);
        }
        rx.recv().unwrap_or(Err(libc::EIO))
    }

    /// Tells the home the kernel forgot `count` lookups of `node`.
    pub fn forget(&self, node: u64, count: u64) {
        if !self.is_alive() {
            return;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.send(&Request {
            id,
            op: Op::Forget { node, count },
        }) {
            self.fail(&format!("cannot send a forget: {e}"));
        }
    }

    fn send(&self, req: &Request) -> Result<(), LinkError> {
        let mut link = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        link.send(req)
    }

    /// Ends the session: closes both links and fails every waiter.
    pub fn shutdown(&self) {
        self.end("shut down by this node", false);
    }

    fn fail(&self, why: &str) {
        self.end(why, true);
    }

    /// Ends the session; `lost` says it was not asked for (a warning).
    fn end(&self, why: &str, lost: bool) {
        if self.dead.swap(true, Ordering::AcqRel) {
            return;
        }
        if lost {
            tracing::warn!(home = %self.home, reason = why, "view session lost; file operations now fail with EIO");
        } else {
            tracing::info!(home = %self.home, reason = why, "view session closed");
        }
        for s in &self.sockets {
            let _ = s.shutdown(Shutdown::Both);
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
        let (lock, cv) = &self.gone;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
    }

    fn read_replies(&self, mut replies: Link<TcpStream>) {
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
                            self.fail(&format!(
                                "the home answered request {} that nobody asked",
                                resp.id
                            ));
                            return;
                        }
                    }
                }
                Err(e) => {
                    self.fail(&format!("reply link: {e}"));
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
            if self.call(Op::Ping).is_err() {
                return;
            }
        }
    }
}

impl Drop for ViewClient {
    fn drop(&mut self) {
        for s in &self.sockets {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
                    let r = c.call(Op::Read {
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
}
