//! `remoted`'s event loop: one mio poll over the link listener and every
//! link, driving the load balancer's dissemination state machine.
//!
//! Links are one-way in use: this node *sends* its gossip on links it opens
//! (one per peer address, kept open and reused) and *receives* on links
//! others opened to it. Every link is authenticated and encrypted by
//! [`LinkCodec`]; anything a peer sends that fails framing, authentication
//! or decoding is logged with the peer's address and the link is closed.
//! The loop never blocks on a peer.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use mosix_proto::link::{ClusterKey, Hello, LinkCodec, LinkError, LinkEvent, Role, decode};
use mosix_proto::msg::PeerMessage;

use crate::policy::{Action, Dissemination};

const LISTENER: Token = Token(0);

/// A link that has not finished its handshake by then is dropped (a peer
/// that connects and says nothing must not hold a slot for ever).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A link with no traffic for this long is closed; the next gossip reopens.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Most links open at once; further connections are refused at accept.
const MAX_LINKS: usize = 1024;

/// Most messages queued for a peer while its link is still being set up.
const MAX_QUEUED: usize = 8;

/// The `kind` label of a link error in the metrics; `None` for a link the
/// peer closed.
fn error_kind(err: &LinkError) -> Option<&'static str> {
    Some(match err {
        LinkError::Closed => return None,
        LinkError::Io(_) => "io",
        LinkError::Frame(mosix_proto::frame::FrameError::UnsupportedVersion { .. }) => "version",
        LinkError::Frame(_) => "frame",
        LinkError::AuthFailed => "auth",
        LinkError::HandshakeProtocol { .. } | LinkError::BadHello { .. } => "handshake",
        LinkError::Protocol { .. } => "protocol",
        LinkError::Decode(_) | LinkError::Encode(_) => "decode",
        _ => "other",
    })
}

/// What the loop needs from the rest of the daemon each tick.
pub trait Node {
    /// Called every tick; returns the dissemination's actions for it.
    fn tick(&mut self, now_ms: u64, diss: &mut Dissemination) -> Vec<Action>;
    /// Called after every change of the dissemination's state.
    fn publish(&mut self, now_ms: u64, diss: &Dissemination);
}

/// Which way a link was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// We connected, to send gossip to this address.
    Outgoing(SocketAddr),
    /// A peer connected to us.
    Incoming,
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    direction: Direction,
    codec: LinkCodec,
    /// Outgoing only: the TCP connect has completed.
    connected: bool,
    /// Messages waiting for the handshake to finish.
    queued: Vec<PeerMessage>,
    opened: Instant,
    last_active: Instant,
}

/// The event loop and its links.
pub struct EventLoop {
    poll: Poll,
    listener: TcpListener,
    key: ClusterKey,
    hello: Hello,
    conns: HashMap<Token, Conn>,
    outgoing: HashMap<SocketAddr, Token>,
    next_token: usize,
    start: Instant,
    tick: Duration,
    warnings: WarnLimiter,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

/// Keeps a peer that retries every half second with the wrong key from
/// filling the log: the same complaint about the same address is logged at
/// most once a minute, with a count of the ones left out.
#[derive(Default)]
struct WarnLimiter {
    last: HashMap<(std::net::IpAddr, String), (Instant, u64)>,
}

impl WarnLimiter {
    const QUIET: Duration = Duration::from_secs(60);

    /// Whether to log this complaint now; if so, how many were left out
    /// since the last one.
    fn admit(&mut self, ip: std::net::IpAddr, text: &str) -> Option<u64> {
        let now = Instant::now();
        if self.last.len() > 4096 {
            self.last
                .retain(|_, (at, _)| now.duration_since(*at) < Self::QUIET);
        }
        match self.last.get_mut(&(ip, text.to_string())) {
            Some((at, skipped)) if now.duration_since(*at) < Self::QUIET => {
                *skipped += 1;
                None
            }
            Some((at, skipped)) => {
                let n = *skipped;
                *at = now;
                *skipped = 0;
                Some(n)
            }
            None => {
                self.last.insert((ip, text.to_string()), (now, 0));
                Some(0)
            }
        }
    }
}

impl EventLoop {
    /// Listens at `listen`; links are authenticated with `key`, and this
    /// node introduces itself as `node_name`.
    pub fn new(
        listen: SocketAddr,
        key: ClusterKey,
        node_name: &str,
        tick: Duration,
    ) -> std::io::Result<EventLoop> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(listen)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(EventLoop {
            poll,
            listener,
            key,
            hello: Hello::new(node_name, Role::Remoted),
            conns: HashMap::new(),
            outgoing: HashMap::new(),
            next_token: 1,
            start: Instant::now(),
            tick,
            warnings: WarnLimiter::default(),
            metrics: None,
        })
    }

    /// Milliseconds since the loop started: the balancer's time base.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs for ever (until the process is stopped).
    pub fn run(&mut self, diss: &mut Dissemination, node: &mut dyn Node) -> std::io::Result<()> {
        let mut events = Events::with_capacity(256);
        let mut next_tick = Instant::now();
        loop {
            let timeout = next_tick.saturating_duration_since(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    token => self.on_ready(token, diss, node),
                }
            }
            if Instant::now() >= next_tick {
                next_tick += self.tick;
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + self.tick;
                }
                let now = self.now_ms();
                let actions = node.tick(now, diss);
                self.perform(actions, diss);
                self.expire(diss);
                node.publish(now, diss);
            }
        }
    }

    /// Counts the links closed on an error in `metrics`.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn count_error(&self, kind: &str) {
        if let Some(m) = &self.metrics {
            m.link_error(kind);
        }
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    if self.conns.len() >= MAX_LINKS {
                        tracing::warn!(%peer, "too many links; refusing connection");
                        self.count_error("too_many_links");
                        continue;
                    }
                    let codec = match LinkCodec::responder(&self.key, self.hello.clone()) {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot start link handshake");
                            continue;
                        }
                    };
                    self.add(stream, peer, Direction::Incoming, codec, true, Vec::new());
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    return;
                }
            }
        }
    }

    fn add(
        &mut self,
        mut stream: TcpStream,
        peer: SocketAddr,
        direction: Direction,
        codec: LinkCodec,
        connected: bool,
        queued: Vec<PeerMessage>,
    ) {
        let token = Token(self.next_token);
        self.next_token += 1;
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!(%peer, error = %e, "cannot watch link");
            return;
        }
        if let Direction::Outgoing(addr) = direction {
            self.outgoing.insert(addr, token);
        }
        let now = Instant::now();
        self.conns.insert(
            token,
            Conn {
                stream,
                peer,
                direction,
                codec,
                connected,
                queued,
                opened: now,
                last_active: now,
            },
        );
    }

    /// Carries out the balancer's actions.
    pub fn perform(&mut self, actions: Vec<Action>, diss: &mut Dissemination) {
        for action in actions {
            match action {
                Action::Send { to, msg } => self.send(to, msg, diss),
                Action::NodeJoined { name, address } => {
                    tracing::info!(node = %name, %address, "node joined")
                }
                Action::NodeAlive { name } => tracing::info!(node = %name, "node is alive again"),
                Action::NodeDied { name } => {
                    tracing::warn!(node = %name, "node is dead (no news in time)")
                }
                Action::NodeRestarted { name, generation } => {
                    tracing::info!(node = %name, generation, "node restarted")
                }
            }
        }
    }

    fn send(&mut self, to: SocketAddr, msg: PeerMessage, diss: &mut Dissemination) {
        if let Some(&token) = self.outgoing.get(&to) {
            if let Some(conn) = self.conns.get_mut(&token) {
                if conn.codec.is_established() {
                    if let Err(e) = conn.codec.send(&msg) {
                        tracing::warn!(peer = %to, error = %e, "cannot encode message");
                    }
                } else if conn.queued.len() < MAX_QUEUED {
                    conn.queued.push(msg);
                }
                self.flush(token, diss);
                return;
            }
        }
        let stream = match TcpStream::connect(to) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(peer = %to, error = %e, "cannot connect");
                let now = self.now_ms();
                diss.on_send_failed(now, to);
                return;
            }
        };
        let codec = match LinkCodec::initiator(&self.key, self.hello.clone()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot start link handshake");
                return;
            }
        };
        self.add(stream, to, Direction::Outgoing(to), codec, false, vec![msg]);
    }

    fn on_ready(&mut self, token: Token, diss: &mut Dissemination, node: &mut dyn Node) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if !conn.connected {
            // A non-blocking connect finished, one way or the other.
            let outcome = match conn.stream.take_error() {
                Ok(Some(e)) | Err(e) => Err(e),
                Ok(None) => conn.stream.peer_addr().map(|_| ()),
            };
            match outcome {
                Ok(()) => conn.connected = true,
                Err(e) if e.kind() == ErrorKind::NotConnected => return,
                Err(e) => {
                    let peer = conn.peer;
                    tracing::debug!(%peer, error = %e, "connect failed");
                    self.close(token);
                    let now = self.now_ms();
                    diss.on_send_failed(now, peer);
                    return;
                }
            }
        }
        if let Err(e) = self.read(token, diss, node) {
            self.fail(token, e, diss);
            return;
        }
        self.flush(token, diss);
    }

    /// Reads what is there and feeds it through the codec.
    fn read(
        &mut self,
        token: Token,
        diss: &mut Dissemination,
        node: &mut dyn Node,
    ) -> Result<(), LinkError> {
        let mut buf = [0u8; 64 * 1024];
        loop {
            let Some(conn) = self.conns.get_mut(&token) else {
                return Ok(());
            };
            let n = match conn.stream.read(&mut buf) {
                Ok(0) => {
                    self.drain(token, diss, node)?;
                    let Some(conn) = self.conns.get_mut(&token) else {
                        return Ok(());
                    };
                    return Err(conn.codec.on_eof());
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(LinkError::Io(e)),
            };
            conn.last_active = Instant::now();
            conn.codec.feed(&buf[..n]);
            self.drain(token, diss, node)?;
        }
    }

    /// Takes every complete event out of a link's codec.
    fn drain(
        &mut self,
        token: Token,
        diss: &mut Dissemination,
        node: &mut dyn Node,
    ) -> Result<(), LinkError> {
        loop {
            let Some(conn) = self.conns.get_mut(&token) else {
                return Ok(());
            };
            match conn.codec.poll()? {
                None => return Ok(()),
                Some(LinkEvent::Established(peer_hello)) => {
                    tracing::debug!(peer = %conn.peer, node = %peer_hello.node, "link up");
                    for msg in std::mem::take(&mut conn.queued) {
                        conn.codec.send(&msg)?;
                    }
                }
                Some(LinkEvent::Message(bytes)) => {
                    let peer = conn.peer;
                    let msg: PeerMessage = decode(&bytes)?;
                    let now = self.now_ms();
                    let actions = diss.on_message(now, peer, msg);
                    self.perform(actions, diss);
                    node.publish(now, diss);
                }
            }
        }
    }

    /// Writes as much pending output as the socket takes.
    fn flush(&mut self, token: Token, diss: &mut Dissemination) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if !conn.connected {
            return;
        }
        while !conn.codec.pending_output().is_empty() {
            match conn.stream.write(conn.codec.pending_output()) {
                Ok(0) => break,
                Ok(n) => {
                    conn.codec.consume_output(n);
                    conn.last_active = Instant::now();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.fail(token, LinkError::Io(e), diss);
                    return;
                }
            }
        }
    }

    /// Logs why a link died, tells the balancer if we were sending on it,
    /// and closes it.
    fn fail(&mut self, token: Token, err: LinkError, diss: &mut Dissemination) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let peer = conn.peer;
        let outgoing = matches!(conn.direction, Direction::Outgoing(_));
        if let Some(kind) = error_kind(&err) {
            self.count_error(kind);
        }
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        match &err {
            LinkError::Closed => tracing::debug!(%peer, "link closed by peer"),
            LinkError::Io(e) if outgoing => tracing::debug!(%peer, error = %e, "link broke"),
            _ => {
                let text = match &err {
                    LinkError::AuthFailed => "authentication failed (peer holds another cluster \
                                              key, or replayed a handshake)"
                        .to_string(),
                    other => format!("bad input: {other}"),
                };
                if let Some(suppressed) = self.warnings.admit(peer.ip(), &text) {
                    tracing::warn!(%peer, suppressed, "link refused: {text}; closing");
                } else {
                    tracing::debug!(%peer, "link refused: {text}; closing");
                }
            }
        }
        // Best effort: the codec may hold a reject for the peer.
        let pending = conn.codec.pending_output().to_vec();
        if !pending.is_empty() {
            let _ = conn.stream.write(&pending);
        }
        self.close(token);
        if outgoing && !matches!(err, LinkError::Closed) {
            let now = self.now_ms();
            diss.on_send_failed(now, peer);
        }
    }

    fn close(&mut self, token: Token) {
        if let Some(mut conn) = self.conns.remove(&token) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            if let Direction::Outgoing(addr) = conn.direction {
                if self.outgoing.get(&addr) == Some(&token) {
                    self.outgoing.remove(&addr);
                }
            }
        }
    }

    /// Drops links stuck in their handshake or idle too long.
    fn expire(&mut self, diss: &mut Dissemination) {
        let now = Instant::now();
        let stale: Vec<(Token, bool)> = self
            .conns
            .iter()
            .filter_map(|(t, c)| {
                let stuck =
                    !c.codec.is_established() && now.duration_since(c.opened) > HANDSHAKE_TIMEOUT;
                let idle = now.duration_since(c.last_active) > IDLE_TIMEOUT
                    && c.codec.pending_output().is_empty();
                (stuck || idle).then_some((*t, stuck))
            })
            .collect();
        for (token, stuck) in stale {
            if stuck {
                self.count_error("handshake_timeout");
                if let Some(c) = self.conns.get(&token) {
                    let peer = c.peer;
                    if let Some(suppressed) =
                        self.warnings.admit(peer.ip(), "no handshake within 5 s")
                    {
                        tracing::warn!(%peer, suppressed, "link dropped: no handshake within 5 s");
                    }
                }
                let outgoing = self.conns.get(&token).and_then(|c| match c.direction {
                    Direction::Outgoing(a) => Some(a),
                    Direction::Incoming => None,
                });
                self.close(token);
                if let Some(addr) = outgoing {
                    let now_ms = self.now_ms();
                    diss.on_send_failed(now_ms, addr);
                }
            } else {
                self.close(token);
            }
        }
    }
}
