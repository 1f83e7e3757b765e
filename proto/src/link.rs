//! Mutually authenticated, encrypted links between nodes' daemons.
//!
//! # Keys
//!
//! The whole cluster shares one 32-byte [`ClusterKey`], kept in a root-only
//! file as 64 hex digits. Holding it is what makes a machine a member: no
//! per-node key pairs, no certificates.
//!
//! # Handshake
//!
//! Links use Noise `Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s` (via `snow`), with
//! the cluster key as the pre-shared key and `"mosix link v1"` as prologue.
//! `NNpsk0` fits a shared-secret cluster: there are no static keys to
//! distribute, the psk is mixed in before the first message so even the
//! initiator's first message only makes sense to key holders, and the fresh
//! ephemeral-ephemeral DH gives every link its own forward-secret keys.
//!
//! A bare two-message `NNpsk0` lets a responder finish before the initiator
//! has shown it is *live*: a recording of message 1 replays perfectly. So the
//! link adds a key-confirmation step, and a responder only reports the link
//! up after it:
//!
//! ```text
//! initiator                                    responder
//!   -> handshake frame [1] psk, e   (empty payload, encrypted under the psk)
//!   <- handshake frame [1] e, ee    (payload: responder's Hello)
//!   -> transport message           (initiator's Hello, under the session keys)
//! ```
//!
//! Message 2 decrypts only for the initiator whose ephemeral key it answers,
//! so a replayed message 2 fails with [`LinkError::AuthFailed`]; message 3
//! needs the session keys, so a replayed message 1 leaves the responder
//! waiting for a confirmation nobody can forge, and it fails with
//! [`LinkError::AuthFailed`] on the first bad record or on end of stream.
//!
//! If message 1 does not authenticate (the initiator holds another key), the
//! responder answers with a one-byte *reject* handshake frame `[2]` before
//! closing, so the initiator too reports [`LinkError::AuthFailed`] instead of
//! a bare "connection closed". The reject is unauthenticated: it can only
//! abort a handshake, which anyone on the path can do by cutting the stream.
//!
//! # Messages
//!
//! After the handshake, each application message is a named-field
//! MessagePack value ([`encode`]). It travels as one or more transport frames,
//! each holding one Noise record of at most 65519 plaintext bytes; the first
//! record starts with the message's total length (`u32`, big-endian). A
//! message is at most [`MAX_MESSAGE`] bytes.
//!
//! # Two interfaces
//!
//! [`LinkCodec`] does no I/O, for a non-blocking (mio) loop: feed it the
//! bytes read, poll it for events, write out what it has pending.
//! [`Link`] wraps a blocking `Read + Write` stream. Neither sets timeouts:
//! callers set them on the socket (`set_read_timeout`/`set_write_timeout`),
//! and a timed-out call returns [`LinkError::Io`] with the link still usable.

use crate::frame::{
    FrameDecoder, FrameError, FrameKind, HEADER_LEN, MAX_NOISE_PAYLOAD, PROTOCOL_VERSION,
    encode_header,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The Noise protocol name every link uses.
pub const NOISE_PATTERN: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";

/// Largest application message a link carries, in encoded bytes. Bigger
/// payloads (memory images) must be streamed as several messages.
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Longest node name a [`Hello`] may carry, in bytes.
pub const MAX_NODE_NAME: usize = 255;

/// Bound into the handshake hash, so a different protocol never completes.
const PROLOGUE: &[u8] = b"mosix link v1";

/// Poly1305 tag appended to every Noise record.
const TAG_LEN: usize = 16;

/// Most plaintext one transport record carries.
const MAX_RECORD_PLAINTEXT: usize = MAX_NOISE_PAYLOAD - TAG_LEN;

/// Bytes of the total-length prefix in a message's first record.
const LEN_PREFIX: usize = 4;

/// First byte of a handshake frame: a Noise handshake message follows.
const HS_NOISE: u8 = 1;

/// First byte of a handshake frame: the responder could not authenticate us.
const HS_REJECT: u8 = 2;

/// Length of a cluster key in bytes.
pub const CLUSTER_KEY_LEN: usize = 32;

/// The secret every node of one cluster shares; holding it is membership.
///
/// Its `Debug` output never shows the key.
#[derive(Clone)]
pub struct ClusterKey([u8; CLUSTER_KEY_LEN]);

/// Why a cluster key could not be loaded, parsed, generated or written.
#[derive(Debug, Error)]
pub enum KeyError {
    /// cannot read cluster key file {path}: {error}; check the key path in the node configuration
    #[error(
        "cannot read cluster key file {path}: {error}; check the key path in the node configuration"
    )]
    Read {
        /// The key file.
        path: PathBuf,
        /// What the OS said.
        error: io::Error,
    },
    /// cluster key file {path} has mode {mode:04o}, so group or others may read or change it; run `chmod 600 {path}`
    #[error(
        "cluster key file {path} has mode {mode:04o}, so group or others may read or change it; run `chmod 600 {path}`",
        path = path.display()
    )]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// cluster key file {path} belongs to uid {uid}, but it must belong to root (who alone may hold the key: whoever can read it can run code on every node); run `chown root:root {path}` (and `chmod 600 {path}`)
    #[error(
        "cluster key file {path} belongs to uid {uid}, but it must belong to root (who alone may hold the key: whoever can read it can run code on every node); run `chown root:root {path}` (and `chmod 600 {path}`)",
        path = path.display()
    )]
    Owner {
        /// The key file.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// cluster key file {path} is malformed: {detail}; it must hold exactly 64 hex digits and an optional newline
    #[error(
        "cluster key file {path} is malformed: {detail}; it must hold exactly 64 hex digits and an optional newline",
        path = path.display()
    )]
    Format {
        /// The key file (empty when parsing a string).
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// cannot create cluster key file {path}: {error}; an existing key is never overwritten, remove it first if you mean to replace it
    #[error(
        "cannot create cluster key file {path}: {error}; an existing key is never overwritten, remove it first if you mean to replace it",
        path = path.display()
    )]
    Write {
        /// The key file.
        path: PathBuf,
        /// What the OS said.
        error: io::Error,
    },
    /// cannot get random bytes from the operating system for a new cluster key: {detail}
    #[error("cannot get random bytes from the operating system for a new cluster key: {detail}")]
    Random {
        /// What the OS said.
        detail: String,
    },
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(<redacted>)")
    }
}

impl ClusterKey {
    /// A key from raw bytes (tests, or keys kept elsewhere).
    pub fn from_bytes(bytes: [u8; CLUSTER_KEY_LEN]) -> ClusterKey {
        ClusterKey(bytes)
    }

    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<ClusterKey, KeyError> {
        use rand::TryRngCore;
        let mut bytes = [0u8; CLUSTER_KEY_LEN];
        rand::rngs::OsRng
            .try_fill_bytes(&mut bytes)
            .map_err(|e| KeyError::Random {
                detail: e.to_string(),
            })?;
        Ok(ClusterKey(bytes))
    }

    /// Parses the key file format: 64 hex digits, optionally followed by
    /// one newline.
    pub fn from_hex(text: &str) -> Result<ClusterKey, KeyError> {
        Self::parse(text.as_bytes(), Path::new(""))
    }

    fn parse(content: &[u8], path: &Path) -> Result<ClusterKey, KeyError> {
        let bad = |detail: String| KeyError::Format {
            path: path.to_path_buf(),
            detail,
        };
        let digits = content.strip_suffix(b"\n").unwrap_or(content);
        if digits.len() != 2 * CLUSTER_KEY_LEN {
            return Err(bad(format!(
                "found {} characters before the end, expected 64",
                digits.len()
            )));
        }
        let mut bytes = [0u8; CLUSTER_KEY_LEN];
        for (i, pair) in digits.chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]);
            let lo = hex_value(pair[1]);
            match (hi, lo) {
                (Some(hi), Some(lo)) => bytes[i] = (hi << 4) | lo,
                _ => {
                    return Err(bad(format!(
                        "character {} or {} is not a hex digit",
                        2 * i + 1,
                        2 * i + 2
                    )));
                }
            }
        }
        Ok(ClusterKey(bytes))
    }

    /// Loads the key file at `path`, refusing one that is not root's or
    /// that group or others may read or write: a leaked key lets anyone run
    /// code on every node.
    pub fn load(path: &Path) -> Result<ClusterKey, KeyError> {
        Self::load_owned_by(path, 0)
    }

    /// [`ClusterKey::load`], with the file's owner required to be `owner`
    /// (tests run by a user).
    fn load_owned_by(path: &Path, owner: u32) -> Result<ClusterKey, KeyError> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let read_err = |error| KeyError::Read {
            path: path.to_path_buf(),
            error,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let meta = file.metadata().map_err(read_err)?;
        if !meta.is_file() {
            return Err(KeyError::Format {
                path: path.to_path_buf(),
                detail: "not a regular file".into(),
            });
        }
        if meta.uid() != owner {
            return Err(KeyError::Owner {
                path: path.to_path_buf(),
                uid: meta.uid(),
            });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        // The file is tiny; never read more than a bit past a valid size.
        let mut content = Vec::with_capacity(2 * CLUSTER_KEY_LEN + 1);
        file.take(2 * CLUSTER_KEY_LEN as u64 + 2)
            .read_to_end(&mut content)
            .map_err(read_err)?;
        Self::parse(&content, path)
    }

    /// Writes this key to a new file at `path` with mode 0600. Never
    /// overwrites: fails if the file exists.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyError> {
        use std::os::unix::fs::PermissionsExt;
        let write_err = |error| KeyError::Write {
            path: path.to_path_buf(),
            error,
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(write_err)?;
        // umask only removes bits, but be explicit: this file must be 0600.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(write_err)?;
        let mut text = String::with_capacity(2 * CLUSTER_KEY_LEN + 1);
        for b in self.0 {
            text.push(HEX[usize::from(b >> 4)] as char);
            text.push(HEX[usize::from(b & 0xF)] as char);
        }
        text.push('\n');
        file.write_all(text.as_bytes()).map_err(write_err)?;
        file.sync_all().map_err(write_err)
    }

    fn bytes(&self) -> &[u8; CLUSTER_KEY_LEN] {
        &self.0
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Which program is at the other end of a link; receivers decide what each
/// role may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A node's remote daemon (load exchange, hosting bodies).
    Remoted,
    /// A node's home daemon (deputies, the view's server side).
    Homed,
    /// An administration tool speaking to a daemon directly.
    Tool,
}

/// What each side of a link says about itself during the handshake; only
/// ever sent encrypted, and only believed once the peer proved the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The sender's node name.
    pub node: String,
    /// The sending program.
    pub role: Role,
    /// The sender's [`PROTOCOL_VERSION`].
    pub protocol: u8,
}

impl Hello {
    /// This node's hello for `role`, with this build's protocol version.
    pub fn new(node: impl Into<String>, role: Role) -> Hello {
        Hello {
            node: node.into(),
            role,
            protocol: PROTOCOL_VERSION,
        }
    }

    /// Checks what goes into logs and tables: a sane name and our version.
    fn validate(&self) -> Result<(), LinkError> {
        let bad = |detail: String| Err(LinkError::BadHello { detail });
        if self.protocol != PROTOCOL_VERSION {
            return bad(format!(
                "peer speaks protocol version {}, this node speaks {}; upgrade the older node",
                self.protocol, PROTOCOL_VERSION
            ));
        }
        if self.node.is_empty() || self.node.len() > MAX_NODE_NAME {
            return bad(format!(
                "node name is {} bytes long, expected 1 to {MAX_NODE_NAME}",
                self.node.len()
            ));
        }
        if self
            .node
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
        {
            return bad(format!(
                "node name {:?} contains whitespace or control characters",
                self.node
            ));
        }
        Ok(())
    }
}

/// Why a link failed. After any error but [`LinkError::Io`] from a timeout,
/// the link is dead: close the connection.
#[derive(Debug, Error)]
pub enum LinkError {
    /// I/O error on the link: {0}
    #[error("I/O error on the link: {0}")]
    Io(io::Error),
    /// {0}
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// authentication failed (wrong cluster key?)
    #[error("authentication failed (wrong cluster key?)")]
    AuthFailed,
    /// handshake protocol violated: {detail}
    #[error("handshake protocol violated: {detail}")]
    HandshakeProtocol {
        /// What the peer did wrong.
        detail: String,
    },
    /// link protocol violated after the handshake: {detail}
    #[error("link protocol violated after the handshake: {detail}")]
    Protocol {
        /// What the peer did wrong.
        detail: String,
    },
    /// bad hello: {detail}
    #[error("bad hello: {detail}")]
    BadHello {
        /// What is wrong with it.
        detail: String,
    },
    /// cannot decode message: {0}
    #[error("cannot decode message: {0}")]
    Decode(rmp_serde::decode::Error),
    /// cannot encode message: {0}
    #[error("cannot encode message: {0}")]
    Encode(rmp_serde::encode::Error),
    /// message of {len} bytes exceeds the {max}-byte limit; send it in parts
    #[error("message of {len} bytes exceeds the {max}-byte limit; send it in parts")]
    TooLarge {
        /// The message's size.
        len: u64,
        /// [`MAX_MESSAGE`].
        max: usize,
    },
    /// peer closed the connection
    #[error("peer closed the connection")]
    Closed,
    /// link unusable after an earlier error; reconnect
    #[error("link unusable after an earlier error; reconnect")]
    Failed,
    /// Noise failure on this side ({detail}); this is a bug or a broken random source
    #[error("Noise failure on this side ({detail}); this is a bug or a broken random source")]
    Noise {
        /// What snow said.
        detail: String,
    },
}

// Each cause is in its variant's message, so none is also a `source()`
// (a caller printing the chain, like anyhow's `{:#}`, would say it twice).
impl From<io::Error> for LinkError {
    fn from(e: io::Error) -> LinkError {
        LinkError::Io(e)
    }
}

fn noise_local(err: snow::Error) -> LinkError {
    LinkError::Noise {
        detail: err.to_string(),
    }
}

fn noise_read(err: snow::Error) -> LinkError {
    match err {
        snow::Error::Decrypt | snow::Error::Dh => LinkError::AuthFailed,
        snow::Error::Input => LinkError::HandshakeProtocol {
            detail: "malformed Noise handshake message".into(),
        },
        other => noise_local(other),
    }
}

pub(crate) fn encode_raw<T: Serialize + ?Sized>(
    msg: &T,
) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    rmp_serde::to_vec_named(msg)
}

pub(crate) fn decode_raw<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, rmp_serde::decode::Error> {
    let mut de = rmp_serde::Deserializer::new(io::Cursor::new(bytes));
    let value = T::deserialize(&mut de)?;
    let used = de.position();
    if used != bytes.len() as u64 {
        return Err(rmp_serde::decode::Error::Syntax(format!(
            "{} trailing bytes after the message",
            bytes.len() as u64 - used
        )));
    }
    Ok(value)
}

/// Encodes a message the way every mosix peer expects: MessagePack with
/// structs as maps keyed by field name, so field order never matters.
pub fn encode<T: Serialize + ?Sized>(msg: &T) -> Result<Vec<u8>, LinkError> {
    encode_raw(msg).map_err(LinkError::Encode)
}

/// Decodes a message made by [`encode`]; refuses trailing bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, LinkError> {
    decode_raw(bytes).map_err(LinkError::Decode)
}

/// What [`LinkCodec::poll`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// The handshake is complete and the peer proved it holds the cluster
    /// key; this is its hello. Produced exactly once, before any message.
    Established(Hello),
    /// One whole application message, still encoded; see [`decode`].
    Message(Vec<u8>),
}

enum Phase {
    /// Initiator sent message 1, waits for message 2.
    InitiatorWaitReply(Box<snow::HandshakeState>),
    /// Responder waits for message 1.
    ResponderWaitHello(Box<snow::HandshakeState>),
    /// Responder sent message 2, waits for the initiator's confirmation.
    ResponderWaitConfirm(Box<snow::TransportState>),
    /// Handshake done both ways.
    Established(Box<snow::TransportState>),
    /// An error happened; keys are gone.
    Failed,
}

/// Reassembles one message from transport records.
#[derive(Default)]
struct Assembly {
    /// Total length announced by the first record of the message in progress.
    expected: Option<usize>,
    buf: Vec<u8>,
}

impl Assembly {
    fn absorb(&mut self, record: &[u8]) -> Result<Option<Vec<u8>>, LinkError> {
        let proto = |detail: String| Err(LinkError::Protocol { detail });
        match self.expected {
            None => {
                let Some((prefix, data)) = record.split_first_chunk::<LEN_PREFIX>() else {
                    return proto(format!(
                        "first record of a message has {} bytes, too short for its length",
                        record.len()
                    ));
                };
                let total = u32::from_be_bytes(*prefix);
                let total = match usize::try_from(total) {
                    Ok(t) if t <= MAX_MESSAGE => t,
                    _ => {
                        return Err(LinkError::TooLarge {
                            len: u64::from(total),
                            max: MAX_MESSAGE,
                        });
                    }
                };
                if data.len() > total {
                    return proto(format!(
                        "record holds {} bytes of a {total}-byte message",
                        data.len()
                    ));
                }
                if data.len() == total {
                    return Ok(Some(data.to_vec()));
                }
                if data.len() < MAX_RECORD_PLAINTEXT - LEN_PREFIX {
                    return proto(
                        "a message's first record is short but more records follow".into(),
                    );
                }
                self.expected = Some(total);
                self.buf = Vec::with_capacity(total.min(1 << 20));
                self.buf.extend_from_slice(data);
                Ok(None)
            }
            Some(total) => {
                if record.is_empty() || self.buf.len() + record.len() > total {
                    return proto(format!(
                        "record of {} bytes does not fit the {total}-byte message in progress",
                        record.len()
                    ));
                }
                self.buf.extend_from_slice(record);
                if self.buf.len() == total {
                    self.expected = None;
                    return Ok(Some(std::mem::take(&mut self.buf)));
                }
                Ok(None)
            }
        }
    }

    fn in_progress(&self) -> Option<(usize, usize)> {
        self.expected.map(|total| (self.buf.len(), total))
    }
}

/// Sans-io link state machine for non-blocking event loops.
///
/// Usage: create with [`initiator`](Self::initiator) or
/// [`responder`](Self::responder); whenever the socket is writable and
/// [`pending_output`](Self::pending_output) is not empty, write it and call
/// [`consume_output`](Self::consume_output) with the count written; whenever
/// bytes are read, [`feed`](Self::feed) them and call
/// [`poll`](Self::poll) until it yields `Ok(None)`. On end of stream, drain
/// [`poll`](Self::poll), then log [`on_eof`](Self::on_eof)'s error.
///
/// After an error, flush `pending_output` once, best effort (it may hold a
/// reject telling the peer its key is wrong), then close the socket.
///
/// `send` never blocks and the output buffer has no cap: a caller that can
/// outpace its peer should stop sending while `pending_output().len()` is
/// large.
pub struct LinkCodec {
    phase: Phase,
    own_hello: Hello,
    peer: Option<Hello>,
    decoder: FrameDecoder,
    out: Vec<u8>,
    out_start: usize,
    assembly: Assembly,
    scratch: Vec<u8>,
}

impl fmt::Debug for LinkCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = match self.phase {
            Phase::InitiatorWaitReply(_) => "initiator-wait-reply",
            Phase::ResponderWaitHello(_) => "responder-wait-hello",
            Phase::ResponderWaitConfirm(_) => "responder-wait-confirm",
            Phase::Established(_) => "established",
            Phase::Failed => "failed",
        };
        f.debug_struct("LinkCodec")
            .field("phase", &phase)
            .field("peer", &self.peer)
            .field("pending_output", &self.pending_output().len())
            .finish_non_exhaustive()
    }
}

fn builder(key: &ClusterKey) -> Result<snow::Builder<'_>, LinkError> {
    let params: snow::params::NoiseParams = NOISE_PATTERN.parse().map_err(noise_local)?;
    snow::Builder::new(params)
        .prologue(PROLOGUE)
        .and_then(|b| b.psk(0, key.bytes()))
        .map_err(noise_local)
}

impl LinkCodec {
    fn new(phase: Phase, own_hello: Hello) -> LinkCodec {
        LinkCodec {
            phase,
            own_hello,
            peer: None,
            decoder: FrameDecoder::accepting(&[FrameKind::Handshake, FrameKind::Transport]),
            out: Vec::new(),
            out_start: 0,
            assembly: Assembly::default(),
            scratch: vec![0u8; MAX_NOISE_PAYLOAD],
        }
    }

    /// Starts the connecting side; message 1 is pending output at once.
    pub fn initiator(key: &ClusterKey, hello: Hello) -> Result<LinkCodec, LinkError> {
        hello.validate()?;
        let mut hs = builder(key)?.build_initiator().map_err(noise_local)?;
        let mut msg = vec![0u8; MAX_NOISE_PAYLOAD];
        msg[0] = HS_NOISE;
        let n = hs.write_message(&[], &mut msg[1..]).map_err(noise_local)?;
        let mut codec = LinkCodec::new(Phase::InitiatorWaitReply(Box::new(hs)), hello);
        codec.queue_frame(FrameKind::Handshake, &msg[..1 + n])?;
        Ok(codec)
    }

    /// Starts the accepting side; it waits for the initiator's message 1.
    pub fn responder(key: &ClusterKey, hello: Hello) -> Result<LinkCodec, LinkError> {
        hello.validate()?;
        let hs = builder(key)?.build_responder().map_err(noise_local)?;
        Ok(LinkCodec::new(
            Phase::ResponderWaitHello(Box::new(hs)),
            hello,
        ))
    }

    /// Hands over bytes read from the socket.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.decoder.push(bytes);
    }

    /// Bytes waiting to be written to the socket.
    pub fn pending_output(&self) -> &[u8] {
        &self.out[self.out_start..]
    }

    /// Marks the first `n` pending bytes as written.
    pub fn consume_output(&mut self, n: usize) {
        self.out_start = (self.out_start + n).min(self.out.len());
        if self.out_start == self.out.len() {
            self.out.clear();
            self.out_start = 0;
        } else if self.out_start >= self.out.len() / 2 {
            self.out.drain(..self.out_start);
            self.out_start = 0;
        }
    }

    /// Whether both sides have proved the key and messages may flow.
    pub fn is_established(&self) -> bool {
        matches!(self.phase, Phase::Established(_)) && self.peer.is_some()
    }

    /// The peer's hello, once established.
    pub fn peer(&self) -> Option<&Hello> {
        self.peer.as_ref()
    }

    /// Processes fed bytes: the next event, `Ok(None)` if more bytes are
    /// needed, or why the link is dead. Handshake replies are queued as
    /// pending output along the way.
    pub fn poll(&mut self) -> Result<Option<LinkEvent>, LinkError> {
        if matches!(self.phase, Phase::Failed) {
            return Err(LinkError::Failed);
        }
        let result = self.poll_inner();
        if result.is_err() {
            self.phase = Phase::Failed;
        }
        result
    }

    fn poll_inner(&mut self) -> Result<Option<LinkEvent>, LinkError> {
        loop {
            let Some(frame) = self.decoder.next_frame()? else {
                return Ok(None);
            };
            let phase = std::mem::replace(&mut self.phase, Phase::Failed);
            match (phase, frame.kind) {
                (Phase::ResponderWaitHello(mut hs), FrameKind::Handshake) => {
                    let noise = handshake_body(&frame.payload)?;
                    let n = match hs.read_message(noise, &mut self.scratch) {
                        Ok(n) => n,
                        Err(err) => {
                            let err = noise_read(err);
                            if matches!(err, LinkError::AuthFailed) {
                                self.queue_frame(FrameKind::Handshake, &[HS_REJECT])?;
                            }
                            return Err(err);
                        }
                    };
                    if n != 0 {
                        return Err(LinkError::HandshakeProtocol {
                            detail: format!("message 1 carries {n} payload bytes, expected none"),
                        });
                    }
                    let hello = encode(&self.own_hello)?;
                    let mut msg = vec![0u8; MAX_NOISE_PAYLOAD];
                    msg[0] = HS_NOISE;
                    let n = hs
                        .write_message(&hello, &mut msg[1..])
                        .map_err(noise_local)?;
                    self.queue_frame(FrameKind::Handshake, &msg[..1 + n])?;
                    let ts = hs.into_transport_mode().map_err(noise_local)?;
                    self.phase = Phase::ResponderWaitConfirm(Box::new(ts));
                }
                (Phase::InitiatorWaitReply(mut hs), FrameKind::Handshake) => {
                    if frame.payload.as_slice() == [HS_REJECT] {
                        return Err(LinkError::AuthFailed);
                    }
                    let noise = handshake_body(&frame.payload)?;
                    let n = hs
                        .read_message(noise, &mut self.scratch)
                        .map_err(noise_read)?;
                    let hello: Hello =
                        decode(&self.scratch[..n]).map_err(|e| LinkError::HandshakeProtocol {
                            detail: format!("responder's hello does not decode: {e}"),
                        })?;
                    hello.validate()?;
                    let ts = hs.into_transport_mode().map_err(noise_local)?;
                    self.phase = Phase::Established(Box::new(ts));
                    let own = encode(&self.own_hello)?;
                    self.queue_message(&own)?;
                    self.peer = Some(hello.clone());
                    return Ok(Some(LinkEvent::Established(hello)));
                }
                (Phase::ResponderWaitConfirm(mut ts), FrameKind::Transport) => {
                    let msg = self.read_record(&mut ts, &frame.payload)?;
                    match msg {
                        None => self.phase = Phase::ResponderWaitConfirm(ts),
                        Some(bytes) => {
                            let hello: Hello =
                                decode(&bytes).map_err(|e| LinkError::HandshakeProtocol {
                                    detail: format!("initiator's hello does not decode: {e}"),
                                })?;
                            hello.validate()?;
                            self.phase = Phase::Established(ts);
                            self.peer = Some(hello.clone());
                            return Ok(Some(LinkEvent::Established(hello)));
                        }
                    }
                }
                (Phase::Established(mut ts), FrameKind::Transport) => {
                    let msg = self.read_record(&mut ts, &frame.payload)?;
                    self.phase = Phase::Established(ts);
                    if let Some(bytes) = msg {
                        return Ok(Some(LinkEvent::Message(bytes)));
                    }
                }
                (Phase::Established(_), kind) => {
                    return Err(LinkError::Protocol {
                        detail: format!("unexpected {kind} frame on an established link"),
                    });
                }
                (Phase::Failed, _) => return Err(LinkError::Failed),
                (_, kind) => {
                    return Err(LinkError::HandshakeProtocol {
                        detail: format!("unexpected {kind} frame during the handshake"),
                    });
                }
            }
        }
    }

    /// Decrypts one transport record and adds it to the message in progress.
    fn read_record(
        &mut self,
        ts: &mut snow::TransportState,
        record: &[u8],
    ) -> Result<Option<Vec<u8>>, LinkError> {
        // Any failure to open a record means it was not made with our
        // session keys: forged, replayed, or corrupted on the way.
        let n = ts
            .read_message(record, &mut self.scratch)
            .map_err(|_| LinkError::AuthFailed)?;
        self.assembly.absorb(&self.scratch[..n])
    }

    /// The error to report when the stream has ended (read returned 0).
    /// Call after draining [`poll`](Self::poll). The link is dead afterwards.
    pub fn on_eof(&mut self) -> LinkError {
        let phase = std::mem::replace(&mut self.phase, Phase::Failed);
        if let Err(err) = self.decoder.finish() {
            return err.into();
        }
        match phase {
            // The peer sent message 1 but never proved it holds the session
            // keys: a replay, or a peer that could not authenticate us.
            Phase::ResponderWaitConfirm(_) => LinkError::AuthFailed,
            Phase::Established(_) => match self.assembly.in_progress() {
                Some((got, total)) => LinkError::Protocol {
                    detail: format!(
                        "connection closed after {got} bytes of a {total}-byte message"
                    ),
                },
                None => LinkError::Closed,
            },
            Phase::Failed => LinkError::Failed,
            Phase::InitiatorWaitReply(_) | Phase::ResponderWaitHello(_) => LinkError::Closed,
        }
    }

    /// Queues an encoded message for sending. Fails before the handshake
    /// is complete.
    pub fn send_bytes(&mut self, msg: &[u8]) -> Result<(), LinkError> {
        if !self.is_established() {
            return Err(match self.phase {
                Phase::Failed => LinkError::Failed,
                _ => LinkError::HandshakeProtocol {
                    detail: "cannot send before the handshake is complete".into(),
                },
            });
        }
        let result = self.queue_message(msg);
        if let Err(LinkError::Noise { .. }) = &result {
            self.phase = Phase::Failed;
        }
        result
    }

    /// Encodes ([`encode`]) and queues a message for sending.
    pub fn send<T: Serialize + ?Sized>(&mut self, msg: &T) -> Result<(), LinkError> {
        let bytes = encode(msg)?;
        self.send_bytes(&bytes)
    }

    fn queue_message(&mut self, msg: &[u8]) -> Result<(), LinkError> {
        let too_large = || LinkError::TooLarge {
            len: msg.len() as u64,
            max: MAX_MESSAGE,
        };
        if msg.len() > MAX_MESSAGE {
            return Err(too_large());
        }
        let total = u32::try_from(msg.len()).map_err(|_| too_large())?;
        let first_len = msg.len().min(MAX_RECORD_PLAINTEXT - LEN_PREFIX);
        let mut first = Vec::with_capacity(LEN_PREFIX + first_len);
        first.extend_from_slice(&total.to_be_bytes());
        first.extend_from_slice(&msg[..first_len]);
        self.out
            .reserve(msg.len() + (msg.len() / MAX_RECORD_PLAINTEXT + 1) * (HEADER_LEN + TAG_LEN));
        self.queue_record(&first)?;
        for chunk in msg[first_len..].chunks(MAX_RECORD_PLAINTEXT) {
            self.queue_record(chunk)?;
        }
        Ok(())
    }

    fn queue_record(&mut self, plaintext: &[u8]) -> Result<(), LinkError> {
        let Phase::Established(ts) = &mut self.phase else {
            return Err(LinkError::Failed);
        };
        let n = ts
            .write_message(plaintext, &mut self.scratch)
            .map_err(noise_local)?;
        self.out
            .extend_from_slice(&encode_header(FrameKind::Transport, n)?);
        self.out.extend_from_slice(&self.scratch[..n]);
        Ok(())
    }

    fn queue_frame(&mut self, kind: FrameKind, payload: &[u8]) -> Result<(), LinkError> {
        self.out
            .extend_from_slice(&encode_header(kind, payload.len())?);
        self.out.extend_from_slice(payload);
        Ok(())
    }
}

/// The Noise message inside a handshake frame, after its type byte.
fn handshake_body(payload: &[u8]) -> Result<&[u8], LinkError> {
    match payload.split_first() {
        Some((&HS_NOISE, body)) => Ok(body),
        Some((&HS_REJECT, _)) => Err(LinkError::HandshakeProtocol {
            detail: "unexpected reject from the initiator".into(),
        }),
        Some((other, _)) => Err(LinkError::HandshakeProtocol {
            detail: format!("unknown handshake frame type {other}"),
        }),
        None => Err(LinkError::HandshakeProtocol {
            detail: "empty handshake frame".into(),
        }),
    }
}

/// A link over a blocking stream (`TcpStream`, `UnixStream`).
///
/// Set read and write timeouts on the stream before `connect`/`accept`: the
/// link never sets them, and without them a silent peer blocks forever. A
/// call that times out returns [`LinkError::Io`] (`WouldBlock`/`TimedOut`);
/// the link stays consistent and the call may be retried (a `send` retry
/// first finishes writing what the timed-out one left).
pub struct Link<S> {
    stream: S,
    codec: LinkCodec,
    peer: Hello,
    rbuf: Vec<u8>,
}

impl<S> fmt::Debug for Link<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("peer", &self.peer)
            .field("codec", &self.codec)
            .finish_non_exhaustive()
    }
}

const READ_CHUNK: usize = 64 * 1024;

impl<S: Read + Write> Link<S> {
    /// Runs the handshake as initiator; returns the link and the peer's hello.
    pub fn connect(
        stream: S,
        key: &ClusterKey,
        hello: Hello,
    ) -> Result<(Link<S>, Hello), LinkError> {
        Self::handshake(stream, LinkCodec::initiator(key, hello)?)
    }

    /// Runs the handshake as responder; returns the link and the peer's hello.
    pub fn accept(
        stream: S,
        key: &ClusterKey,
        hello: Hello,
    ) -> Result<(Link<S>, Hello), LinkError> {
        Self::handshake(stream, LinkCodec::responder(key, hello)?)
    }

    fn handshake(mut stream: S, mut codec: LinkCodec) -> Result<(Link<S>, Hello), LinkError> {
        let mut rbuf = vec![0u8; READ_CHUNK];
        match Self::drive_handshake(&mut stream, &mut codec, &mut rbuf) {
            Ok(peer) => {
                let link = Link {
                    stream,
                    codec,
                    peer: peer.clone(),
                    rbuf,
                };
                Ok((link, peer))
            }
            // A peer that hangs up mid-handshake (we see EPIPE or ECONNRESET
            // rather than a clean end of stream, depending on timing) is
            // judged like one that closed: see `LinkCodec::on_eof`.
            Err(LinkError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::UnexpectedEof
                ) =>
            {
                Err(codec.on_eof())
            }
            Err(err) => Err(err),
        }
    }

    fn drive_handshake(
        stream: &mut S,
        codec: &mut LinkCodec,
        rbuf: &mut [u8],
    ) -> Result<Hello, LinkError> {
        loop {
            flush(stream, codec)?;
            let event = match codec.poll() {
                Ok(event) => event,
                Err(err) => {
                    // Best effort: let a peer with the wrong key know why.
                    let _ = flush(stream, codec);
                    return Err(err);
                }
            };
            match event {
                Some(LinkEvent::Established(peer)) => {
                    flush(stream, codec)?;
                    return Ok(peer);
                }
                Some(LinkEvent::Message(_)) => {
                    return Err(LinkError::HandshakeProtocol {
                        detail: "message before the handshake completed".into(),
                    });
                }
                // A reply was just queued (the responder's message 2):
                // send it before blocking on a read, or both sides wait.
                None if !codec.pending_output().is_empty() => continue,
                None => {
                    let n = read_some(stream, rbuf)?;
                    if n == 0 {
                        return Err(codec.on_eof());
                    }
                    codec.feed(&rbuf[..n]);
                }
            }
        }
    }

    /// The peer's hello.
    pub fn peer(&self) -> &Hello {
        &self.peer
    }

    /// Sends one encoded message.
    pub fn send_bytes(&mut self, msg: &[u8]) -> Result<(), LinkError> {
        flush(&mut self.stream, &mut self.codec)?;
        self.codec.send_bytes(msg)?;
        flush(&mut self.stream, &mut self.codec)
    }

    /// Encodes ([`encode`]) and sends one message.
    pub fn send<T: Serialize + ?Sized>(&mut self, msg: &T) -> Result<(), LinkError> {
        let bytes = encode(msg)?;
        self.send_bytes(&bytes)
    }

    /// Receives one message, still encoded.
    pub fn recv_bytes(&mut self) -> Result<Vec<u8>, LinkError> {
        loop {
            match self.codec.poll()? {
                Some(LinkEvent::Message(bytes)) => return Ok(bytes),
                Some(LinkEvent::Established(_)) => {
                    return Err(LinkError::Protocol {
                        detail: "second handshake on an established link".into(),
                    });
                }
                None => {
                    let n = read_some(&mut self.stream, &mut self.rbuf)?;
                    if n == 0 {
                        return Err(self.codec.on_eof());
                    }
                    self.codec.feed(&self.rbuf[..n]);
                }
            }
        }
    }

    /// Receives and decodes ([`decode`]) one message.
    pub fn recv<T: DeserializeOwned>(&mut self) -> Result<T, LinkError> {
        decode(&self.recv_bytes()?)
    }

    /// The stream, to set timeouts or read its addresses.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The stream, mutably. Reading or writing it directly breaks the link.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }
}

fn read_some<S: Read>(stream: &mut S, buf: &mut [u8]) -> Result<usize, LinkError> {
    loop {
        match stream.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn flush<S: Write>(stream: &mut S, codec: &mut LinkCodec) -> Result<(), LinkError> {
    while !codec.pending_output().is_empty() {
        match stream.write(codec.pending_output()) {
            Ok(0) => return Err(LinkError::Closed),
            Ok(n) => codec.consume_output(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
    }
    stream.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_said_once() {
        let e = LinkError::from(io::Error::from_raw_os_error(libc::ECONNREFUSED));
        let said = crate::error_chain(&e);
        assert_eq!(said.matches("refused").count(), 1, "{said}");
        let e = decode::<Hello>(&[0xc1]).unwrap_err();
        assert_eq!(crate::error_chain(&e), e.to_string());
    }
    use crate::frame::encode_frame;
    use crate::msg::{LoadEntry, PeerMessage};
    use std::os::unix::net::UnixStream;
    use std::thread;

    fn key(b: u8) -> ClusterKey {
        ClusterKey::from_bytes([b; CLUSTER_KEY_LEN])
    }

    /// A socket pair whose reads time out, so a protocol deadlock fails the
    /// test with an `Io` error instead of hanging it.
    fn timed_pair() -> (UnixStream, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        for s in [&a, &b] {
            s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
                .unwrap();
        }
        (a, b)
    }

    /// Drives two codecs against each other in memory until both are
    /// established or one fails. Returns each side's events/errors.
    fn pump(a: &mut LinkCodec, b: &mut LinkCodec) -> (Vec<LinkEvent>, Vec<LinkEvent>) {
        let (mut ea, mut eb) = (Vec::new(), Vec::new());
        for _ in 0..10 {
            let out = a.pending_output().to_vec();
            a.consume_output(out.len());
            b.feed(&out);
            while let Some(e) = b.poll().unwrap() {
                eb.push(e);
            }
            let out = b.pending_output().to_vec();
            b.consume_output(out.len());
            a.feed(&out);
            while let Some(e) = a.poll().unwrap() {
                ea.push(e);
            }
        }
        (ea, eb)
    }

    #[test]
    fn codecs_handshake_and_exchange_messages() {
        let mut i = LinkCodec::initiator(&key(1), Hello::new("alpha", Role::Homed)).unwrap();
        let mut r = LinkCodec::responder(&key(1), Hello::new("beta", Role::Remoted)).unwrap();
        assert!(r.send_bytes(b"early").is_err());
        let (ei, er) = pump(&mut i, &mut r);
        assert_eq!(
            ei,
            vec![LinkEvent::Established(Hello::new("beta", Role::Remoted))]
        );
        assert_eq!(
            er,
            vec![LinkEvent::Established(Hello::new("alpha", Role::Homed))]
        );
        assert!(i.is_established() && r.is_established());
        assert_eq!(r.peer().unwrap().node, "alpha");

        let big: Vec<u8> = (0..200_000u32).map(|x| x as u8).collect();
        i.send_bytes(&big).unwrap();
        i.send_bytes(b"").unwrap();
        r.send(&"reply").unwrap();
        let (ei, er) = pump(&mut i, &mut r);
        assert_eq!(
            er,
            vec![LinkEvent::Message(big), LinkEvent::Message(vec![])]
        );
        assert_eq!(ei, vec![LinkEvent::Message(encode(&"reply").unwrap())]);
    }

    #[test]
    fn handshake_survives_byte_by_byte_delivery() {
        let mut i = LinkCodec::initiator(&key(4), Hello::new("a", Role::Tool)).unwrap();
        let mut r = LinkCodec::responder(&key(4), Hello::new("b", Role::Homed)).unwrap();
        let (mut ei, mut er) = (Vec::new(), Vec::new());
        for _ in 0..4 {
            while let Some(&b) = i.pending_output().first() {
                i.consume_output(1);
                r.feed(&[b]);
                while let Some(e) = r.poll().unwrap() {
                    er.push(e);
                }
            }
            while let Some(&b) = r.pending_output().first() {
                r.consume_output(1);
                i.feed(&[b]);
                while let Some(e) = i.poll().unwrap() {
                    ei.push(e);
                }
            }
        }
        assert_eq!(
            ei,
            vec![LinkEvent::Established(Hello::new("b", Role::Homed))]
        );
        assert_eq!(
            er,
            vec![LinkEvent::Established(Hello::new("a", Role::Tool))]
        );
    }

    #[test]
    fn wrong_key_fails_on_both_sides() {
        let mut i = LinkCodec::initiator(&key(1), Hello::new("a", Role::Homed)).unwrap();
        let mut r = LinkCodec::responder(&key(2), Hello::new("b", Role::Remoted)).unwrap();
        r.feed(i.pending_output());
        let err = r.poll().unwrap_err();
        assert!(matches!(err, LinkError::AuthFailed), "{err}");
        assert_eq!(
            format!("link from 10.77.0.2:40312 refused: {err}"),
            "link from 10.77.0.2:40312 refused: authentication failed (wrong cluster key?)"
        );
        assert!(matches!(r.poll(), Err(LinkError::Failed)));
        i.feed(r.pending_output());
        assert!(matches!(i.poll(), Err(LinkError::AuthFailed)));
    }

    #[test]
    fn wrong_key_over_sockets_fails_on_both_sides() {
        let (a, b) = timed_pair();
        let t = thread::spawn(move || Link::accept(b, &key(9), Hello::new("r", Role::Remoted)));
        let ci = Link::connect(a, &key(8), Hello::new("i", Role::Tool));
        assert!(matches!(ci, Err(LinkError::AuthFailed)), "{ci:?}");
        assert!(matches!(t.join().unwrap(), Err(LinkError::AuthFailed)));
    }

    /// Records everything the initiator of a real session sends.
    fn recorded_session() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let mut i = LinkCodec::initiator(&key(5), Hello::new("i", Role::Homed)).unwrap();
        let mut r = LinkCodec::responder(&key(5), Hello::new("r", Role::Remoted)).unwrap();
        let msg1 = i.pending_output().to_vec();
        r.feed(&msg1);
        i.consume_output(msg1.len());
        assert_eq!(r.poll().unwrap(), None);
        let msg2 = r.pending_output().to_vec();
        i.feed(&msg2);
        assert!(matches!(i.poll().unwrap(), Some(LinkEvent::Established(_))));
        i.send(&"payload").unwrap();
        let rest = i.pending_output().to_vec();
        r.feed(&rest);
        assert!(matches!(r.poll().unwrap(), Some(LinkEvent::Established(_))));
        assert!(matches!(r.poll().unwrap(), Some(LinkEvent::Message(_))));
        (msg1, msg2, rest)
    }

    #[test]
    fn replayed_message_1_never_yields_a_link() {
        let (msg1, _msg2, rest) = recorded_session();
        // Replay message 1 and everything else the initiator sent.
        let mut r = LinkCodec::responder(&key(5), Hello::new("r", Role::Remoted)).unwrap();
        r.feed(&msg1);
        assert_eq!(r.poll().unwrap(), None);
        assert!(!r.is_established());
        r.feed(&rest);
        assert!(matches!(r.poll(), Err(LinkError::AuthFailed)));
        assert!(r.peer().is_none());

        // Replay message 1 then close the stream: fails, does not wait.
        let mut r = LinkCodec::responder(&key(5), Hello::new("r", Role::Remoted)).unwrap();
        r.feed(&msg1);
        assert_eq!(r.poll().unwrap(), None);
        assert!(matches!(r.on_eof(), LinkError::AuthFailed));

        // Same over a socket with the blocking wrapper.
        let (mut a, b) = timed_pair();
        let t = thread::spawn(move || Link::accept(b, &key(5), Hello::new("r", Role::Remoted)));
        a.write_all(&msg1).unwrap();
        a.write_all(&rest).unwrap();
        assert!(matches!(t.join().unwrap(), Err(LinkError::AuthFailed)));
        let (mut a, b) = timed_pair();
        let t = thread::spawn(move || Link::accept(b, &key(5), Hello::new("r", Role::Remoted)));
        a.write_all(&msg1).unwrap();
        drop(a);
        assert!(matches!(t.join().unwrap(), Err(LinkError::AuthFailed)));
    }

    #[test]
    fn replayed_message_2_fails_a_new_initiator() {
        let (_msg1, msg2, _rest) = recorded_session();
        let mut i = LinkCodec::initiator(&key(5), Hello::new("i", Role::Homed)).unwrap();
        i.feed(&msg2);
        assert!(matches!(i.poll(), Err(LinkError::AuthFailed)));
        assert!(!i.is_established());
    }

    #[test]
    fn frame_errors_surface_as_link_errors() {
        let mut r = LinkCodec::responder(&key(1), Hello::new("r", Role::Remoted)).unwrap();
        r.feed(&[b'M', b'X', 7, 1, 0, 0, 0, 0]);
        let err = r.poll().unwrap_err();
        assert!(matches!(
            err,
            LinkError::Frame(FrameError::UnsupportedVersion {
                got: 7,
                expected: 1
            })
        ));
        assert!(err.to_string().contains("upgrade the older node"));

        // A local frame header is refused at once, not waited on.
        let mut r = LinkCodec::responder(&key(1), Hello::new("r", Role::Remoted)).unwrap();
        r.feed(&[b'M', b'X', 1, 3, 1, 0, 0, 0]);
        assert!(matches!(
            r.poll(),
            Err(LinkError::Frame(FrameError::UnexpectedKind {
                kind: FrameKind::Local
            }))
        ));

        let mut r = LinkCodec::responder(&key(1), Hello::new("r", Role::Remoted)).unwrap();
        r.feed(&encode_frame(FrameKind::Transport, &[0; 64]).unwrap());
        assert!(matches!(r.poll(), Err(LinkError::HandshakeProtocol { .. })));

        let mut r = LinkCodec::responder(&key(1), Hello::new("r", Role::Remoted)).unwrap();
        r.feed(&encode_frame(FrameKind::Handshake, &[HS_NOISE, 1, 2, 3]).unwrap());
        assert!(matches!(r.poll(), Err(LinkError::HandshakeProtocol { .. })));

        let mut r = LinkCodec::responder(&key(1), Hello::new("r", Role::Remoted)).unwrap();
        r.feed(&[b'M', b'X', 1, 1, 0, 0]);
        assert_eq!(r.poll().unwrap(), None);
        assert!(matches!(
            r.on_eof(),
            LinkError::Frame(FrameError::Truncated { buffered: 6 })
        ));

        let mut r = LinkCodec::responder(&key(1), Hello::new("r", Role::Remoted)).unwrap();
        assert!(matches!(r.on_eof(), LinkError::Closed));
    }

    #[test]
    fn garbage_records_after_the_handshake_fail_authentication() {
        let mut i = LinkCodec::initiator(&key(1), Hello::new("a", Role::Homed)).unwrap();
        let mut r = LinkCodec::responder(&key(1), Hello::new("b", Role::Remoted)).unwrap();
        pump(&mut i, &mut r);
        r.feed(&encode_frame(FrameKind::Transport, &[0x55; 100]).unwrap());
        assert!(matches!(r.poll(), Err(LinkError::AuthFailed)));
        i.feed(&encode_frame(FrameKind::Handshake, &[HS_NOISE; 80]).unwrap());
        assert!(matches!(i.poll(), Err(LinkError::Protocol { .. })));
    }

    #[test]
    fn assembly_refuses_bad_lengths() {
        let mut a = Assembly::default();
        assert!(matches!(a.absorb(&[0, 0]), Err(LinkError::Protocol { .. })));
        let mut a = Assembly::default();
        let huge = (MAX_MESSAGE as u32 + 1).to_be_bytes();
        assert!(matches!(a.absorb(&huge), Err(LinkError::TooLarge { .. })));
        let mut a = Assembly::default();
        assert!(matches!(
            a.absorb(&[0, 0, 0, 1, 9, 9]),
            Err(LinkError::Protocol { .. })
        ));
        let mut a = Assembly::default();
        assert!(matches!(
            a.absorb(&[0, 0, 0, 9, 1]),
            Err(LinkError::Protocol { .. })
        ));
        let mut a = Assembly::default();
        assert_eq!(a.absorb(&[0, 0, 0, 2, 7, 8]).unwrap(), Some(vec![7, 8]));
    }

    #[test]
    fn oversized_message_is_refused_by_the_sender() {
        let mut i = LinkCodec::initiator(&key(1), Hello::new("a", Role::Homed)).unwrap();
        let mut r = LinkCodec::responder(&key(1), Hello::new("b", Role::Remoted)).unwrap();
        pump(&mut i, &mut r);
        let big = vec![0u8; MAX_MESSAGE + 1];
        assert!(matches!(
            i.send_bytes(&big),
            Err(LinkError::TooLarge { .. })
        ));
        // The link still works afterwards.
        i.send_bytes(b"x").unwrap();
        let (_, er) = pump(&mut i, &mut r);
        assert_eq!(er, vec![LinkEvent::Message(b"x".to_vec())]);
    }

    #[test]
    fn bad_hellos_are_refused() {
        for node in ["", "has space", "ctl\u{7}", &"x".repeat(256)] {
            let err = LinkCodec::initiator(&key(1), Hello::new(node, Role::Tool)).unwrap_err();
            assert!(matches!(err, LinkError::BadHello { .. }), "{node:?}");
        }
        let mut old = Hello::new("n", Role::Tool);
        old.protocol = 0;
        let err = LinkCodec::responder(&key(1), old).unwrap_err();
        assert!(err.to_string().contains("protocol version 0"));
    }

    #[test]
    fn blocking_links_carry_large_messages_and_gossip() {
        let (a, b) = timed_pair();
        let gossip = PeerMessage::Gossip {
            sender: LoadEntry {
                name: "n1".into(),
                address: "10.77.0.1:7001".parse().unwrap(),
                generation: 17,
                age_ms: 0,
                load: 0.75,
                cpus: 2.0,
                speed: 1.0,
                free_mem_bytes: 1 << 30,
                accepts_guests: true,
                guests: 0,
                away: 0,
            },
            window: vec![],
            want_reply: true,
        };
        let expected = gossip.clone();
        let t = thread::spawn(move || {
            let (mut link, peer) =
                Link::accept(b, &key(3), Hello::new("r", Role::Remoted)).unwrap();
            assert_eq!(peer, Hello::new("i", Role::Homed));
            let blob: Vec<u8> = link.recv_bytes().unwrap();
            let g: PeerMessage = link.recv().unwrap();
            link.send(&g).unwrap();
            let after = link.recv_bytes();
            (blob, g, after)
        });
        let (mut link, peer) = Link::connect(a, &key(3), Hello::new("i", Role::Homed)).unwrap();
        assert_eq!(link.peer(), &peer);
        assert_eq!(peer.role, Role::Remoted);
        let blob: Vec<u8> = (0..300_000u32).map(|x| (x % 251) as u8).collect();
        link.send_bytes(&blob).unwrap();
        link.send(&gossip).unwrap();
        let back: PeerMessage = link.recv().unwrap();
        assert_eq!(back, expected);
        drop(link);
        let (got_blob, got_gossip, after) = t.join().unwrap();
        assert_eq!(got_blob, blob);
        assert_eq!(got_gossip, expected);
        assert!(matches!(after, Err(LinkError::Closed)));
    }

    #[test]
    fn encode_is_field_order_independent_and_strict() {
        #[derive(Serialize)]
        struct Ab {
            a: u32,
            b: String,
        }
        #[derive(Deserialize, Debug, PartialEq)]
        struct Ba {
            b: String,
            a: u32,
        }
        let bytes = encode(&Ab {
            a: 7,
            b: "x".into(),
        })
        .unwrap();
        let got: Ba = decode(&bytes).unwrap();
        assert_eq!(
            got,
            Ba {
                b: "x".into(),
                a: 7
            }
        );

        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(decode::<Ba>(&trailing), Err(LinkError::Decode(_))));
        assert!(matches!(decode::<Ba>(&[0xc1]), Err(LinkError::Decode(_))));
        assert!(matches!(
            decode::<Ba>(&bytes[..bytes.len() - 1]),
            Err(LinkError::Decode(_))
        ));
    }

    #[test]
    fn gossip_round_trips_through_encode() {
        let g = PeerMessage::Gossip {
            sender: LoadEntry {
                name: "a".into(),
                address: "[::1]:9".parse().unwrap(),
                generation: 1,
                age_ms: 0,
                load: 1.5,
                cpus: 0.5,
                speed: 2.0,
                free_mem_bytes: 3,
                accepts_guests: true,
                guests: 0,
                away: 0,
            },
            window: vec![LoadEntry {
                name: "b".into(),
                address: "127.0.0.1:1".parse().unwrap(),
                generation: 2,
                age_ms: 40,
                load: 0.0,
                cpus: 4.0,
                speed: 1.0,
                free_mem_bytes: 0,
                accepts_guests: true,
                guests: 0,
                away: 0,
            }],
            want_reply: false,
        };
        let back: PeerMessage = decode(&encode(&g).unwrap()).unwrap();
        assert_eq!(back, g);
    }

    #[test]
    fn key_file_round_trip_and_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        let me = nix::unistd::geteuid().as_raw();
        let k = ClusterKey::generate().unwrap();
        k.write_new(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 65);
        assert!(text.ends_with('\n'));
        assert_eq!(
            ClusterKey::load_owned_by(&path, me).unwrap().bytes(),
            k.bytes()
        );
        // Never overwrites.
        assert!(matches!(
            ClusterKey::generate().unwrap().write_new(&path),
            Err(KeyError::Write { .. })
        ));
        assert_eq!(
            ClusterKey::load_owned_by(&path, me).unwrap().bytes(),
            k.bytes()
        );

        for bad_mode in [0o640, 0o604, 0o620, 0o602, 0o666] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(bad_mode)).unwrap();
            let err = ClusterKey::load_owned_by(&path, me).unwrap_err();
            assert!(matches!(err, KeyError::Permissions { .. }), "{bad_mode:o}");
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(ClusterKey::load_owned_by(&path, me).is_ok());

        assert!(matches!(
            ClusterKey::load_owned_by(&dir.path().join("missing"), me),
            Err(KeyError::Read { .. })
        ));
    }

    #[test]
    fn a_key_file_not_owned_by_root_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        ClusterKey::generate().unwrap().write_new(&path).unwrap();
        // Mode 0600, but a user's: that user can read it and join.
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&path, Some(4242), None).unwrap();
        }
        let err = ClusterKey::load(&path).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("must belong to root"), "{text}");
        assert!(text.contains("chown root"), "{text}");
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&path, Some(0), None).unwrap();
            assert!(ClusterKey::load(&path).is_ok());
        }
    }

    #[test]
    fn key_format_is_strict() {
        let good = "00112233445566778899aabbccddeeffFFEEDDCCBBAA99887766554433221100";
        let k = ClusterKey::from_hex(good).unwrap();
        assert_eq!(k.bytes()[0..3], [0x00, 0x11, 0x22]);
        assert_eq!(k.bytes()[16], 0xFF);
        assert!(ClusterKey::from_hex(&format!("{good}\n")).is_ok());
        for bad in [
            String::new(),
            good[..63].to_string(),
            format!("{good}0"),
            format!("{good}\n\n"),
            format!(" {}", &good[1..]),
            format!("{}g", &good[..63]),
            format!("{good}\r\n"),
        ] {
            assert!(
                matches!(ClusterKey::from_hex(&bad), Err(KeyError::Format { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn debug_never_shows_the_key() {
        let k = ClusterKey::from_hex(&"ab".repeat(32)).unwrap();
        let shown = format!("{k:?}");
        assert!(!shown.to_lowercase().contains("ab"), "{shown}");
        assert!(!shown.contains("171"));
    }
}
