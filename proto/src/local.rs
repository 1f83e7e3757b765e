//! Framing on local Unix sockets, and who is at the other end of one.
//!
//! Processes, tools and daemons on one machine talk over Unix sockets with
//! [`FrameKind::Local`] frames: the same 8-byte header as node links, no
//! encryption (the kernel is the only path), payloads of up to 16 MiB holding
//! one named-field MessagePack value. Who may ask for what is decided from
//! the peer's kernel-verified credentials ([`peer_credentials`]), never from
//! anything the peer says about itself.
//!
//! [`send_local`]/[`recv_local`] are for blocking sockets (set timeouts on
//! them: a silent peer otherwise blocks the caller). A non-blocking server
//! feeds its reads to a [`FrameDecoder`](crate::frame::FrameDecoder) and
//! decodes each local frame's payload with [`decode_local`].

use crate::frame::{
    FrameError, FrameKind, HEADER_LEN, MAX_LOCAL_PAYLOAD, encode_frame, parse_header,
};
use crate::link::{decode_raw, encode_raw};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use thiserror::Error;

/// Why a local-socket exchange failed. After any error but an `Io` timeout
/// the stream is out of step: close it.
#[derive(Debug, Error)]
pub enum LocalError {
    /// I/O error on local socket: {0}
    #[error("I/O error on local socket: {0}")]
    Io(io::Error),
    /// {0}
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// cannot decode local message: {0}
    #[error("cannot decode local message: {0}")]
    Decode(rmp_serde::decode::Error),
    /// cannot encode local message: {0}
    #[error("cannot encode local message: {0}")]
    Encode(rmp_serde::encode::Error),
    /// local message of {len} bytes exceeds the {max}-byte limit
    #[error("local message of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// The encoded message's size.
        len: usize,
        /// [`MAX_LOCAL_PAYLOAD`].
        max: usize,
    },
    /// peer closed the local socket
    #[error("peer closed the local socket")]
    Closed,
    /// cannot read the local socket peer's credentials (SO_PEERCRED): {0}
    #[error("cannot read the local socket peer's credentials (SO_PEERCRED): {0}")]
    Credentials(nix::Error),
}

// Each cause is in its variant's message, so none is also a `source()`
// (a caller printing the chain, like anyhow's `{:#}`, would say it twice).
impl From<io::Error> for LocalError {
    fn from(e: io::Error) -> LocalError {
        LocalError::Io(e)
    }
}

impl LocalError {
    /// Whether the peer simply hung up between messages (the normal end of
    /// a conversation, not worth a warning).
    pub fn is_closed(&self) -> bool {
        matches!(self, LocalError::Closed)
    }
}

/// Encodes `msg` as one complete local frame, ready to write.
pub fn encode_local<T: Serialize + ?Sized>(msg: &T) -> Result<Vec<u8>, LocalError> {
    let payload = encode_raw(msg).map_err(LocalError::Encode)?;
    if payload.len() > MAX_LOCAL_PAYLOAD {
        return Err(LocalError::TooLarge {
            len: payload.len(),
            max: MAX_LOCAL_PAYLOAD,
        });
    }
    Ok(encode_frame(FrameKind::Local, &payload)?)
}

/// Decodes the payload of a local frame (as returned by a
/// [`FrameDecoder`](crate::frame::FrameDecoder)); refuses trailing bytes.
pub fn decode_local<T: DeserializeOwned>(payload: &[u8]) -> Result<T, LocalError> {
    decode_raw(payload).map_err(LocalError::Decode)
}

/// Sends one message on a blocking local socket.
pub fn send_local<T: Serialize + ?Sized>(
    stream: &mut UnixStream,
    msg: &T,
) -> Result<(), LocalError> {
    let frame = encode_local(msg)?;
    stream.write_all(&frame)?;
    Ok(())
}

/// Receives one message from a blocking local socket. Reads exactly one
/// frame, so later frames stay in the socket for the next call. Returns
/// [`LocalError::Closed`] if the stream ends cleanly between frames.
pub fn recv_local<T: DeserializeOwned>(stream: &mut UnixStream) -> Result<T, LocalError> {
    let mut header = [0u8; HEADER_LEN];
    let got = read_full(stream, &mut header)?;
    if got == 0 {
        return Err(LocalError::Closed);
    }
    if got < HEADER_LEN {
        return Err(FrameError::Truncated { buffered: got }.into());
    }
    let (kind, len) = parse_header(&header)?;
    if kind != FrameKind::Local {
        return Err(FrameError::UnexpectedKind { kind }.into());
    }
    // Grow with the data actually received rather than trusting `len` for
    // one big allocation up front.
    let mut payload = Vec::with_capacity(len.min(64 * 1024));
    // `read_to_end` retries EINTR itself.
    let read = Read::by_ref(stream)
        .take(len as u64)
        .read_to_end(&mut payload)?;
    if read < len {
        return Err(FrameError::Truncated {
            buffered: HEADER_LEN + read,
        }
        .into());
    }
    decode_local(&payload)
}

/// Reads until `buf` is full or the stream ends; returns the count read.
fn read_full(stream: &mut UnixStream, buf: &mut [u8]) -> Result<usize, LocalError> {
    let mut got = 0;
    while got < buf.len() {
        match stream.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(got)
}

/// Passes `fd` to the peer (SCM_RIGHTS, with one byte of data): how a
/// daemon hands a process an open file no path leads to (a memfd).
pub fn send_fd(stream: &UnixStream, fd: std::os::fd::BorrowedFd<'_>) -> Result<(), LocalError> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    use std::os::fd::AsRawFd;
    let fds = [fd.as_raw_fd()];
    let iov = [io::IoSlice::new(b"F")];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    loop {
        match sendmsg::<()>(stream.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None) {
            Ok(1) => return Ok(()),
            Ok(_) => return Err(LocalError::Closed),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(LocalError::Io(e.into())),
        }
    }
}

/// Receives an fd sent with [`send_fd`] (close-on-exec).
pub fn recv_fd(stream: &UnixStream) -> Result<std::os::fd::OwnedFd, LocalError> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut byte = [0u8; 1];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    loop {
        let mut iov = [io::IoSliceMut::new(&mut byte)];
        let msg = match recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(LocalError::Io(e.into())),
        };
        if msg.bytes == 0 {
            return Err(LocalError::Closed);
        }
        let mut got = None;
        for c in msg.cmsgs().map_err(|e| LocalError::Io(e.into()))? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for fd in fds {
                    // SAFETY: the kernel just installed `fd` in this
                    // process for us; nothing else owns it.
                    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
                    if got.is_none() {
                        got = Some(owned);
                    }
                }
            }
        }
        return got.ok_or_else(|| {
            LocalError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                "expected an fd (SCM_RIGHTS) on the local socket, got plain data",
            ))
        });
    }
}

/// Who is at the other end of a local socket, as the kernel saw it when the
/// connection was made (`SO_PEERCRED`); the basis of every permission check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Credentials {
    /// The peer's process id (in this machine's pid namespace).
    pub pid: i32,
    /// The peer's effective user id.
    pub uid: u32,
    /// The peer's effective group id.
    pub gid: u32,
}

/// Reads the kernel-verified credentials of a local socket's peer.
pub fn peer_credentials(stream: &UnixStream) -> Result<Credentials, LocalError> {
    let cred = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(LocalError::Credentials)?;
    Ok(Credentials {
        pid: cred.pid(),
        uid: cred.uid(),
        gid: cred.gid(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_said_once() {
        let io = LocalError::from(io::Error::from_raw_os_error(libc::EACCES));
        let creds = LocalError::Credentials(nix::Error::EACCES);
        for e in [io, creds] {
            let said = crate::error_chain(&e);
            assert_eq!(said.matches("denied").count(), 1, "{said}");
        }
        let e = decode_local::<crate::control::ControlRequest>(&[0xc1]).unwrap_err();
        assert_eq!(crate::error_chain(&e), e.to_string());
    }
    use crate::frame::PROTOCOL_VERSION;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Req {
        op: String,
        pid: i32,
        data: Vec<u8>,
    }

    #[test]
    fn round_trip_several_messages() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let r1 = Req {
            op: "migrate".into(),
            pid: 42,
            data: vec![],
        };
        let r2 = Req {
            op: "big".into(),
            pid: -1,
            data: vec![3; 300_000],
        };
        let (s1, s2) = (r1.clone(), r2.clone());
        let t = std::thread::spawn(move || {
            send_local(&mut a, &s1).unwrap();
            send_local(&mut a, &s2).unwrap();
        });
        assert_eq!(recv_local::<Req>(&mut b).unwrap(), r1);
        assert_eq!(recv_local::<Req>(&mut b).unwrap(), r2);
        t.join().unwrap();
        assert!(matches!(recv_local::<Req>(&mut b), Err(LocalError::Closed)));
    }

    #[test]
    fn errors_are_reported() {
        // Truncated header.
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(b"MX\x01").unwrap();
        drop(a);
        assert!(matches!(
            recv_local::<Req>(&mut b),
            Err(LocalError::Frame(FrameError::Truncated { buffered: 3 }))
        ));
        // Truncated payload.
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let frame = encode_local(&Req {
            op: "x".into(),
            pid: 1,
            data: vec![1; 10],
        })
        .unwrap();
        a.write_all(&frame[..frame.len() - 1]).unwrap();
        drop(a);
        assert!(matches!(
            recv_local::<Req>(&mut b),
            Err(LocalError::Frame(FrameError::Truncated { .. }))
        ));
        // Wrong kind.
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(&encode_frame(FrameKind::Transport, b"zz").unwrap())
            .unwrap();
        assert!(matches!(
            recv_local::<Req>(&mut b),
            Err(LocalError::Frame(FrameError::UnexpectedKind {
                kind: FrameKind::Transport
            }))
        ));
        // Oversized announcement: refused without reading the payload.
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let mut h = vec![b'M', b'X', PROTOCOL_VERSION, 3];
        h.extend_from_slice(&(MAX_LOCAL_PAYLOAD as u32 + 1).to_be_bytes());
        a.write_all(&h).unwrap();
        assert!(matches!(
            recv_local::<Req>(&mut b),
            Err(LocalError::Frame(FrameError::Oversized { .. }))
        ));
        // Garbage payload.
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(&encode_frame(FrameKind::Local, &[0xc1, 0xc1]).unwrap())
            .unwrap();
        assert!(matches!(
            recv_local::<Req>(&mut b),
            Err(LocalError::Decode(_))
        ));
        // Bad magic.
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(b"hello, world").unwrap();
        assert!(matches!(
            recv_local::<Req>(&mut b),
            Err(LocalError::Frame(FrameError::BadMagic { .. }))
        ));
    }

    #[test]
    fn too_large_message_is_refused_by_sender() {
        let (mut a, _b) = UnixStream::pair().unwrap();
        // A string encodes in one piece (fast even in a debug build); with
        // its marker it is just over the limit.
        let big = "x".repeat(MAX_LOCAL_PAYLOAD);
        let err = send_local(&mut a, &big).unwrap_err();
        assert!(
            matches!(err, LocalError::TooLarge { len, max } if len == MAX_LOCAL_PAYLOAD + 5 && max == MAX_LOCAL_PAYLOAD),
            "{err}"
        );
    }

    #[test]
    fn peer_credentials_are_our_own_on_a_pair() {
        let (a, _b) = UnixStream::pair().unwrap();
        let c = peer_credentials(&a).unwrap();
        assert_eq!(c.pid, std::process::id() as i32);
        assert_eq!(c.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(c.gid, nix::unistd::getegid().as_raw());
    }
}
