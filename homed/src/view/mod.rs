//! The home side of the view (ARCHITECTURE.md section 6): serves the home's files
//! to this home's bodies on other nodes, over authenticated links.
//!
//! # Sessions
//!
//! A remote node opens a view session with two links (see
//! [`mosix_proto::view`] for why): a request link starting with
//! [`Service::View`] and a reply link starting with
//! [`Service::ViewReplies`], paired by a random token. Whichever arrives
//! first waits (up to [`PAIR_TIMEOUT`]) in a small table for the other;
//! both must come from the same node.
//!
//! A session runs:
//!
//! - a **reader** (this link's thread, still root, touching no file): it
//!   decodes requests and queues them; a request that does not decode
//!   closes the session with a log line, never a panic;
//! - [`WORKERS`] **worker threads** that have each *become the body owner*
//!   for good (raw per-thread `setgroups`/`setresgid`/`setresuid`, see
//!   [`sys::become_user`]) before touching any file. Per-thread full
//!   credentials rather than `setfsuid`: a thread whose uids are all
//!   non-zero keeps no capability at all, so even operations that
//!   `setfsuid` does not cover (`trusted.*` xattrs need CAP_SYS_ADMIN,
//!   quotas CAP_SYS_RESOURCE) are checked as for the user at home. Errors
//!   are therefore exactly those the user would get at home;
//! - a **writer** owning the reply link.
//!
//! When any part fails (link closed, timeout, bad message) both sockets
//! are shut down, so the other parts end too; every open file and node of
//! the session closes with it.
//!
//! Liveness: the client pings every 10 s; the request link keeps homed's
//! 30 s read timeout, so a vanished client frees its session within 30 s.

mod policy;
mod server;
mod sys;

pub use policy::{Policy, Visibility};
pub use server::Session;

use mosix_proto::config::Config;
use mosix_proto::link::{Hello, Link, LinkError};
use mosix_proto::view::{Attr, Op, Opened, Request, Response, Service, ViewOpen};
use std::collections::HashMap;
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long the first link of a session waits for its partner.
pub const PAIR_TIMEOUT: Duration = Duration::from_secs(30);

/// Worker threads per session: operations of one session run in parallel
/// up to this many.
pub const WORKERS: usize = 4;

/// How long a reply may take to write before the client counts as gone.
const REPLY_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// One half of a session waiting for the other.
enum Half {
    Requests(Link<TcpStream>, ViewOpen),
    Replies(Link<TcpStream>),
}

struct Waiting {
    node: String,
    since: Instant,
    half: Half,
}

fn waiting() -> &'static Mutex<HashMap<[u64; 2], Waiting>> {
    static TABLE: OnceLock<Mutex<HashMap<[u64; 2], Waiting>>> = OnceLock::new();
    TABLE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Serves one authenticated link from another node's daemon: reads its
/// [`Service`] and dispatches.
pub fn serve_link(mut link: Link<TcpStream>, peer: &Hello, config: &Config) {
    let service: Service = match link.recv() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(node = %peer.node, error = %e, "link closed: its first message is not a service request this homed knows");
            return;
        }
    };
    let (token, half) = match service {
        Service::View(open) => (open.session, Half::Requests(link, open)),
        Service::ViewReplies { session } => (session, Half::Replies(link)),
    };
    let pair = {
        let mut table = waiting().lock().unwrap_or_else(|e| e.into_inner());
        table.retain(|_, w| w.since.elapsed() < PAIR_TIMEOUT);
        match table.remove(&token) {
            Some(w) if w.node == peer.node => Some((half, w.half)),
            Some(w) => {
                tracing::warn!(node = %peer.node, first = %w.node, "view session token presented by two different nodes; dropping both links");
                None
            }
            None => {
                table.insert(
                    token,
                    Waiting {
                        node: peer.node.clone(),
                        since: Instant::now(),
                        half,
                    },
                );
                None
            }
        }
    };
    let Some(pair) = pair else {
        return;
    };
    let (requests, open, replies) = match pair {
        (Half::Requests(r, o), Half::Replies(p)) | (Half::Replies(p), Half::Requests(r, o)) => {
            (r, o, p)
        }
        _ => {
            tracing::warn!(node = %peer.node, "two view links of the same kind with one token; dropping both");
            return;
        }
    };
    run_session(requests, replies, open, &peer.node, config);
}

fn run_session(
    mut requests: Link<TcpStream>,
    mut replies: Link<TcpStream>,
    open: ViewOpen,
    node: &str,
    config: &Config,
) {
    let refuse = |replies: &mut Link<TcpStream>, message: String| {
        tracing::warn!(%node, uid = open.uid, %message, "view session refused");
        let _ = replies.send(&Opened::Refused { message });
    };
    if let Err(why) = open.validate() {
        refuse(&mut replies, why);
        return;
    }
    let (Ok(req_sock), Ok(rep_sock)) = (
        requests.get_ref().try_clone(),
        replies.get_ref().try_clone(),
    ) else {
        refuse(
            &mut replies,
            "homed cannot duplicate a socket descriptor".into(),
        );
        return;
    };
    let _ = replies
        .get_ref()
        .set_write_timeout(Some(REPLY_WRITE_TIMEOUT));
    // Small replies must not wait for Nagle's algorithm.
    let _ = replies.get_ref().set_nodelay(true);
    let _ = requests.get_ref().set_nodelay(true);
    sys::raise_nofile_limit();
    let policy = Policy::new(&config.view.exports, &config.view.local);

    // Start the workers; the first one opens the session as the user, the
    // others receive it once it exists.
    let (job_tx, job_rx) = mpsc::channel::<Request>();
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (resp_tx, resp_rx) = mpsc::channel::<Response>();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<Option<(Arc<Session>, Attr)>, String>>();
    let mut hand_over = Vec::new();
    for i in 0..WORKERS {
        let job_rx = job_rx.clone();
        let resp_tx = resp_tx.clone();
        let ready_tx = ready_tx.clone();
        let (session_tx, session_rx) = mpsc::channel::<Arc<Session>>();
        if i > 0 {
            hand_over.push(session_tx);
        }
        let policy = policy.clone();
        let (uid, gid, groups) = (open.uid, open.gid, open.groups.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("view-{uid}-{i}"))
            .spawn(move || {
                if let Err(e) = sys::become_user(uid, gid, &groups) {
                    let _ = ready_tx.send(Err(format!(
                        "cannot take the credentials of uid {uid} gid {gid}: {e}"
                    )));
                    return;
                }
                let session = if i == 0 {
                    match Session::new(policy) {
                        Ok((s, root)) => {
                            let s = Arc::new(s);
                            let _ = ready_tx.send(Ok(Some((s.clone(), root))));
                            s
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!(
                                "uid {uid} cannot open the home's root directory: {e}"
                            )));
                            return;
                        }
                    }
                } else {
                    let _ = ready_tx.send(Ok(None));
                    match session_rx.recv() {
                        Ok(s) => s,
                        Err(_) => return,
                    }
                };
                drop(ready_tx);
                worker(&session, &job_rx, &resp_tx);
            });
        if let Err(e) = spawned {
            refuse(
                &mut replies,
                format!("homed cannot start a view worker thread: {e}"),
            );
            return;
        }
    }
    drop(ready_tx);
    drop(resp_tx);
    let mut started = None;
    for r in ready_rx.iter().take(WORKERS) {
        match r {
            Ok(Some(s)) => started = Some(s),
            Ok(None) => {}
            Err(message) => {
                refuse(&mut replies, message);
                return;
            }
        }
    }
    let Some((session, root)) = started else {
        refuse(
            &mut replies,
            "the view's worker threads did not start".into(),
        );
        return;
    };
    for tx in hand_over {
        let _ = tx.send(session.clone());
    }
    if let Err(e) = replies.send(&Opened::Ready { root }) {
        tracing::warn!(%node, error = %e, "view session lost before it started");
        return;
    }
    tracing::info!(%node, uid = open.uid, gid = open.gid, "view session up");

    // Writer: owns the reply link.
    let writer_node = node.to_string();
    let req_for_writer = req_sock;
    let writer = std::thread::Builder::new()
        .name("view-replies".into())
        .spawn(move || {
            for resp in resp_rx {
                if let Err(e) = replies.send(&resp) {
                    tracing::warn!(node = %writer_node, error = %e, "view reply link failed; closing the session");
                    let _ = req_for_writer.shutdown(Shutdown::Both);
                    break;
                }
            }
            let _ = replies.get_ref().shutdown(Shutdown::Both);
        });

    // Reader: this thread.
    let reason = loop {
        match requests.recv::<Request>() {
            Ok(Request {
                op: Op::Forget { node, count },
                ..
            }) => {
                session.forget(node, count);
            }
            Ok(req) => {
                if job_tx.send(req).is_err() {
                    break "the session's workers are gone".to_string();
                }
            }
            Err(LinkError::Closed) => break "the remote node closed it".to_string(),
            Err(LinkError::Decode(e)) => {
                break format!(
                    "a request does not decode ({e}); the remote node runs another mosix version or is broken"
                );
            }
            Err(e) => break e.to_string(),
        }
    };
    tracing::info!(%node, uid = open.uid, %reason, "view session ends");
    drop(job_tx);
    let _ = rep_sock.shutdown(Shutdown::Both);
    let _ = requests.get_ref().shutdown(Shutdown::Both);
    if let Ok(w) = writer {
        let _ = w.join();
    }
}

fn worker(
    session: &Arc<Session>,
    jobs: &Mutex<mpsc::Receiver<Request>>,
    out: &mpsc::Sender<Response>,
) {
    loop {
        let job = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(req) = job else { return };
        // A lock that waits (F_SETLKW) gets a thread of its own, so it never
        // holds up the session's other operations. A thread inherits its
        // creator's credentials: it too is the session's user.
        if let Op::SetLk {
            fh,
            owner,
            start,
            end,
            typ,
            sleep: true,
        } = req.op
        {
            let (session, waiter_out) = (session.clone(), out.clone());
            let spawned = std::thread::Builder::new()
                .name("view-setlkw".into())
                .spawn(move || {
                    let result = session.setlk(fh, owner, start, end, typ, true);
                    let _ = waiter_out.send(Response { id: req.id, result });
                });
            if spawned.is_err() {
                let _ = out.send(Response {
                    id: req.id,
                    result: Err(libc::ENOLCK),
                });
            }
            continue;
        }
        if let Some(result) = session.handle(req.op) {
            if out.send(Response { id: req.id, result }).is_err() {
                return;
            }
        }
    }
}
