//! Sans-io framing shared by node links and local sockets.
//!
//! Every byte stream mosix speaks is a sequence of frames:
//!
//! ```text
//! +------+------+---------+------+----------------------+
//! | 'M'  | 'X'  | version | kind | payload length (u32) |  8-byte header
//! +------+------+---------+------+----------------------+
//! | payload (length bytes)                               |
//! +------------------------------------------------------+
//! ```
//!
//! The length is big-endian. Each kind has its own payload limit: handshake
//! and transport frames carry exactly one Noise message, so they stop at
//! Noise's 65535 bytes; local frames (unencrypted, on Unix sockets) stop at
//! 16 MiB. A header is judged as soon as its 8 bytes are in, so a bad magic,
//! a foreign version, an unknown kind or an oversized length is refused
//! before a single payload byte is waited for, and a frame's payload buffer
//! is never larger than its kind's limit.
//!
//! Nothing here does I/O: [`FrameDecoder`] is fed bytes by whoever reads the
//! socket (a blocking loop or a mio event loop) and hands back whole frames.

use thiserror::Error;

/// The two bytes every frame starts with; anything else is not mosix talking.
pub const MAGIC: [u8; 2] = *b"MX";

/// The wire protocol version this build speaks. Nodes of different versions
/// refuse each other with [`FrameError::UnsupportedVersion`] instead of
/// misreading each other's messages.
pub const PROTOCOL_VERSION: u8 = 1;

/// Length of the fixed frame header in bytes.
pub const HEADER_LEN: usize = 8;

/// Largest payload of a handshake or transport frame: one Noise message.
pub const MAX_NOISE_PAYLOAD: usize = 65535;

/// Largest payload of a local (Unix socket) frame.
pub const MAX_LOCAL_PAYLOAD: usize = 16 * 1024 * 1024;

/// What a frame's payload is, which decides its size limit and who may send it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// A step of the Noise handshake on a node link.
    Handshake = 1,
    /// One encrypted Noise transport record on an established node link.
    Transport = 2,
    /// One unencrypted message on a local Unix socket.
    Local = 3,
}

impl FrameKind {
    /// The kind a header byte names, if any.
    pub fn from_byte(byte: u8) -> Option<FrameKind> {
        match byte {
            1 => Some(FrameKind::Handshake),
            2 => Some(FrameKind::Transport),
            3 => Some(FrameKind::Local),
            _ => None,
        }
    }

    /// The byte that names this kind in a header.
    pub fn as_byte(self) -> u8 {
        self as u8
    }

    /// Largest payload a frame of this kind may carry.
    pub fn max_payload(self) -> usize {
        match self {
            FrameKind::Handshake | FrameKind::Transport => MAX_NOISE_PAYLOAD,
            FrameKind::Local => MAX_LOCAL_PAYLOAD,
        }
    }
}

impl std::fmt::Display for FrameKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FrameKind::Handshake => "handshake",
            FrameKind::Transport => "transport",
            FrameKind::Local => "local",
        })
    }
}

/// One whole frame taken off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the payload is.
    pub kind: FrameKind,
    /// The payload, at most `kind.max_payload()` bytes.
    pub payload: Vec<u8>,
}

/// Why a byte stream is not a valid sequence of frames. After any of these
/// the stream cannot be resynchronised: close the connection.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// peer did not send a mosix frame (first bytes {got:02x?}, expected "MX"); is something else listening on that port?
    #[error(
        "peer did not send a mosix frame (first bytes {got:02x?}, expected \"MX\"); is something else listening on that port?"
    )]
    BadMagic {
        /// The two bytes found where the magic should be.
        got: [u8; 2],
    },
    /// peer speaks protocol version {got}, this node speaks {expected}; upgrade the older node
    #[error(
        "peer speaks protocol version {got}, this node speaks {expected}; upgrade the older node"
    )]
    UnsupportedVersion {
        /// The version in the peer's header.
        got: u8,
        /// [`PROTOCOL_VERSION`].
        expected: u8,
    },
    /// peer sent a frame of unknown kind {kind}; it is not a mosix node of this version
    #[error("peer sent a frame of unknown kind {kind}; it is not a mosix node of this version")]
    UnknownKind {
        /// The kind byte found in the header.
        kind: u8,
    },
    /// peer announced a {kind} frame of {len} bytes, more than the {max}-byte limit; refusing it
    #[error(
        "peer announced a {kind} frame of {len} bytes, more than the {max}-byte limit; refusing it"
    )]
    Oversized {
        /// The kind in the header.
        kind: FrameKind,
        /// The announced payload length.
        len: u64,
        /// The kind's limit.
        max: usize,
    },
    /// peer sent a {kind} frame, which this connection does not carry; is a local client talking to a node port, or the reverse?
    #[error(
        "peer sent a {kind} frame, which this connection does not carry; is a local client talking to a node port, or the reverse?"
    )]
    UnexpectedKind {
        /// The kind in the header.
        kind: FrameKind,
    },
    /// stream ended in the middle of a frame ({buffered} bytes of it received); the peer crashed or the connection was cut
    #[error(
        "stream ended in the middle of a frame ({buffered} bytes of it received); the peer crashed or the connection was cut"
    )]
    Truncated {
        /// How many bytes of the unfinished frame had arrived.
        buffered: usize,
    },
}

/// Judges an 8-byte header: returns the frame's kind and payload length, or
/// why the stream must be dropped. Used by [`FrameDecoder`] and by blocking
/// readers that read a header and then exactly its payload.
pub fn parse_header(header: &[u8; HEADER_LEN]) -> Result<(FrameKind, usize), FrameError> {
    let magic = [header[0], header[1]];
    if magic != MAGIC {
        return Err(FrameError::BadMagic { got: magic });
    }
    if header[2] != PROTOCOL_VERSION {
        return Err(FrameError::UnsupportedVersion {
            got: header[2],
            expected: PROTOCOL_VERSION,
        });
    }
    let kind =
        FrameKind::from_byte(header[3]).ok_or(FrameError::UnknownKind { kind: header[3] })?;
    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    let max = kind.max_payload();
    match usize::try_from(len) {
        Ok(len) if len <= max => Ok((kind, len)),
        _ => Err(FrameError::Oversized {
            kind,
            len: u64::from(len),
            max,
        }),
    }
}

/// Builds the header of a frame of `kind` carrying `len` payload bytes.
///
/// Refuses (with [`FrameError::Oversized`]) a length over the kind's limit,
/// so a sender finds its own mistake instead of the peer dropping the link.
pub fn encode_header(kind: FrameKind, len: usize) -> Result<[u8; HEADER_LEN], FrameError> {
    let max = kind.max_payload();
    let oversized = || FrameError::Oversized {
        kind,
        len: u64::try_from(len).unwrap_or(u64::MAX),
        max,
    };
    if len > max {
        return Err(oversized());
    }
    let len32 = u32::try_from(len).map_err(|_| oversized())?;
    let l = len32.to_be_bytes();
    Ok([
        MAGIC[0],
        MAGIC[1],
        PROTOCOL_VERSION,
        kind.as_byte(),
        l[0],
        l[1],
        l[2],
        l[3],
    ])
}

/// Encodes one frame: header followed by `payload`.
///
/// Errors with [`FrameError::Oversized`] if `payload` exceeds the kind's
/// limit; callers that split messages (the link) never hit it.
pub fn encode_frame(kind: FrameKind, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    let header = encode_header(kind, payload.len())?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    Ok(out)
}

/// Incremental frame decoder: push bytes as they arrive, pull whole frames.
///
/// Holds only the bytes pushed and not yet returned as frames. A decoder
/// made with [`accepting`](Self::accepting) also refuses, from the header
/// alone, the kinds its connection never carries, so (say) a node link never
/// waits for a 16 MiB local frame from an unauthenticated peer. The first
/// error poisons the decoder: every later [`next_frame`](Self::next_frame)
/// returns the same error, because a framing error means the stream is out of
/// step and no later byte can be trusted to start a frame.
#[derive(Debug)]
pub struct FrameDecoder {
    /// Bit `1 << kind` set for each accepted kind.
    accepted: u8,
    buf: Vec<u8>,
    /// Bytes of `buf` already returned as frames (compacted lazily).
    start: usize,
    failed: Option<FrameError>,
}

impl Default for FrameDecoder {
    fn default() -> FrameDecoder {
        FrameDecoder::new()
    }
}

impl FrameDecoder {
    /// An empty decoder accepting every kind.
    pub fn new() -> FrameDecoder {
        FrameDecoder::accepting(&[FrameKind::Handshake, FrameKind::Transport, FrameKind::Local])
    }

    /// An empty decoder accepting only `kinds`; any other kind is refused
    /// with [`FrameError::UnexpectedKind`] as soon as its header is in.
    pub fn accepting(kinds: &[FrameKind]) -> FrameDecoder {
        FrameDecoder {
            accepted: kinds.iter().fold(0, |m, k| m | (1 << k.as_byte())),
            buf: Vec::new(),
            start: 0,
            failed: None,
        }
    }

    /// Appends bytes read from the stream. Cheap; judging happens in
    /// [`next_frame`](Self::next_frame). Bytes pushed after an error are
    /// dropped.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed, or the
    /// reason the stream is invalid. A header is judged as soon as its 8
    /// bytes are in, before any of its payload is waited for.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let avail = &self.buf[self.start..];
        let Some(header) = avail.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let parsed = parse_header(header).and_then(|(kind, len)| {
            if self.accepted & (1 << kind.as_byte()) == 0 {
                Err(FrameError::UnexpectedKind { kind })
            } else {
                Ok((kind, len))
            }
        });
        let (kind, len) = match parsed {
            Ok(parsed) => parsed,
            Err(err) => {
                self.fail(err.clone());
                return Err(err);
            }
        };
        let Some(payload) = avail.get(HEADER_LEN..HEADER_LEN + len) else {
            return Ok(None);
        };
        let frame = Frame {
            kind,
            payload: payload.to_vec(),
        };
        self.start += HEADER_LEN + len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(Some(frame))
    }

    /// Number of bytes pushed but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Call at end of stream: errors with [`FrameError::Truncated`] if part
    /// of a frame is still buffered (or with the earlier error, if any).
    /// Call [`next_frame`](Self::next_frame) until it yields `None` first.
    pub fn finish(&self) -> Result<(), FrameError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        match self.buffered() {
            0 => Ok(()),
            buffered => Err(FrameError::Truncated { buffered }),
        }
    }

    fn fail(&mut self, err: FrameError) {
        self.failed = Some(err);
        self.buf = Vec::new();
        self.start = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(magic: [u8; 2], version: u8, kind: u8, len: u32) -> Vec<u8> {
        let mut h = vec![magic[0], magic[1], version, kind];
        h.extend_from_slice(&len.to_be_bytes());
        h
    }

    #[test]
    fn round_trip_byte_by_byte() {
        let mut wire = encode_frame(FrameKind::Handshake, b"hello").unwrap();
        wire.extend(encode_frame(FrameKind::Transport, b"").unwrap());
        wire.extend(encode_frame(FrameKind::Local, &[7u8; 1000]).unwrap());
        let mut dec = FrameDecoder::new();
        let mut frames = Vec::new();
        for b in &wire {
            dec.push(std::slice::from_ref(b));
            while let Some(f) = dec.next_frame().unwrap() {
                frames.push(f);
            }
        }
        dec.finish().unwrap();
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].kind, FrameKind::Handshake);
        assert_eq!(frames[0].payload, b"hello");
        assert_eq!(frames[1].kind, FrameKind::Transport);
        assert!(frames[1].payload.is_empty());
        assert_eq!(frames[2].kind, FrameKind::Local);
        assert_eq!(frames[2].payload, vec![7u8; 1000]);
    }

    #[test]
    fn header_layout_is_fixed() {
        let wire = encode_frame(FrameKind::Transport, &[0xAB; 258]).unwrap();
        assert_eq!(&wire[..8], &[b'M', b'X', 1, 2, 0, 0, 1, 2]);
    }

    #[test]
    fn bad_magic_is_refused_from_header_alone() {
        let mut dec = FrameDecoder::new();
        dec.push(b"GET / HTTP/1.1\r\n");
        let err = dec.next_frame().unwrap_err();
        assert_eq!(err, FrameError::BadMagic { got: *b"GE" });
        assert!(err.to_string().contains("not send a mosix frame"));
        // Poisoned: same error again, and later bytes are ignored.
        dec.push(&encode_frame(FrameKind::Local, b"x").unwrap());
        assert_eq!(dec.next_frame().unwrap_err(), err);
        assert_eq!(dec.finish().unwrap_err(), err);
    }

    #[test]
    fn older_and_newer_versions_are_refused_with_upgrade_hint() {
        for v in [0u8, 2, 255] {
            let mut dec = FrameDecoder::new();
            dec.push(&header(MAGIC, v, 2, 10));
            let err = dec.next_frame().unwrap_err();
            assert_eq!(
                err,
                FrameError::UnsupportedVersion {
                    got: v,
                    expected: PROTOCOL_VERSION
                }
            );
            let text = err.to_string();
            assert!(text.contains(&format!("peer speaks protocol version {v}")));
            assert!(text.contains("this node speaks 1"));
            assert!(text.contains("upgrade the older node"));
        }
    }

    #[test]
    fn unknown_kind_is_refused() {
        for k in [0u8, 4, 200] {
            let mut dec = FrameDecoder::new();
            dec.push(&header(MAGIC, PROTOCOL_VERSION, k, 0));
            assert_eq!(
                dec.next_frame().unwrap_err(),
                FrameError::UnknownKind { kind: k }
            );
        }
    }

    #[test]
    fn oversized_length_is_refused_before_the_payload_arrives() {
        let cases = [
            (FrameKind::Handshake, 65536u32),
            (FrameKind::Transport, u32::MAX),
            (FrameKind::Local, (16 << 20) + 1),
        ];
        for (kind, len) in cases {
            let mut dec = FrameDecoder::new();
            dec.push(&header(MAGIC, PROTOCOL_VERSION, kind.as_byte(), len));
            assert_eq!(
                dec.next_frame().unwrap_err(),
                FrameError::Oversized {
                    kind,
                    len: u64::from(len),
                    max: kind.max_payload()
                }
            );
        }
        // Exactly at the limit is fine (and merely waits for the payload).
        let mut dec = FrameDecoder::new();
        dec.push(&header(MAGIC, PROTOCOL_VERSION, 3, 16 << 20));
        assert_eq!(dec.next_frame().unwrap(), None);
    }

    #[test]
    fn kinds_outside_the_accepted_set_are_refused_from_the_header() {
        let mut dec = FrameDecoder::accepting(&[FrameKind::Handshake, FrameKind::Transport]);
        dec.push(&header(MAGIC, PROTOCOL_VERSION, 3, 16 << 20));
        let err = dec.next_frame().unwrap_err();
        assert_eq!(
            err,
            FrameError::UnexpectedKind {
                kind: FrameKind::Local
            }
        );
        assert!(err.to_string().contains("local frame"));
        let mut dec = FrameDecoder::accepting(&[FrameKind::Local]);
        dec.push(&encode_frame(FrameKind::Local, b"ok").unwrap());
        dec.push(&encode_frame(FrameKind::Transport, b"no").unwrap());
        assert_eq!(dec.next_frame().unwrap().unwrap().payload, b"ok");
        assert!(matches!(
            dec.next_frame(),
            Err(FrameError::UnexpectedKind {
                kind: FrameKind::Transport
            })
        ));
    }

    #[test]
    fn truncated_frame_is_reported_at_finish() {
        let wire = encode_frame(FrameKind::Transport, b"0123456789").unwrap();
        for cut in 1..wire.len() {
            let mut dec = FrameDecoder::new();
            dec.push(&wire[..cut]);
            assert_eq!(dec.next_frame().unwrap(), None);
            assert_eq!(
                dec.finish().unwrap_err(),
                FrameError::Truncated { buffered: cut }
            );
        }
        let mut dec = FrameDecoder::new();
        dec.finish().unwrap();
        dec.push(&wire);
        assert!(dec.next_frame().unwrap().is_some());
        dec.finish().unwrap();
    }

    #[test]
    fn garbage_after_a_good_frame_is_refused() {
        let mut wire = encode_frame(FrameKind::Local, b"ok").unwrap();
        wire.extend_from_slice(&[0xFF; 20]);
        let mut dec = FrameDecoder::new();
        dec.push(&wire);
        assert_eq!(dec.next_frame().unwrap().unwrap().payload, b"ok");
        assert!(matches!(
            dec.next_frame(),
            Err(FrameError::BadMagic { got: [0xFF, 0xFF] })
        ));
    }

    #[test]
    fn encoder_refuses_oversized_payloads() {
        let big = vec![0u8; MAX_NOISE_PAYLOAD + 1];
        assert!(matches!(
            encode_frame(FrameKind::Transport, &big),
            Err(FrameError::Oversized { .. })
        ));
        assert!(encode_frame(FrameKind::Local, &big).is_ok());
    }

    #[test]
    fn decoder_compacts_its_buffer() {
        let frame = encode_frame(FrameKind::Transport, &[1u8; 100]).unwrap();
        let mut dec = FrameDecoder::new();
        for _ in 0..1000 {
            dec.push(&frame);
            dec.push(&frame[..50]);
            assert!(dec.next_frame().unwrap().is_some());
            dec.push(&frame[50..]);
            assert!(dec.next_frame().unwrap().is_some());
        }
        assert_eq!(dec.buffered(), 0);
        assert!(dec.buf.capacity() < 100 * frame.len());
    }
}
