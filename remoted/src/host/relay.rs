//! One relayed fd of a body (ARCHITECTURE.md section 4): a real local fd at
//! the body's node whose far end is the deputy's real fd at home. Pipes
//! the body writes carry its output home, pipes it reads take input read
//! at home, and a terminal at home is both, through a socket pair. The
//! body's thread ([`super::body`]) pumps them; a relay outlives its body
//! when children forked here still hold it ([`super::family`]).

use super::sys;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

/// Most bytes of each relay's latest output kept to send again after the
/// home's `homed` restarted (more than the link's and the deputy's socket
/// buffers can hold in flight).
pub(super) const RESEND_WINDOW: usize = 8 << 20;

/// Which way a relayed fd carries data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RelayKind {
    /// A pipe the body writes (its output goes home).
    Output,
    /// A pipe the body reads (input read at home comes in).
    Input,
    /// A terminal at home: both ways, through a socket pair.
    Terminal,
}

/// One relayed fd of the body: a real local fd whose far end is the
/// deputy's real fd (ARCHITECTURE.md section 4).
pub(super) struct Relay {
    /// The body's fd number.
    pub(super) fd: i32,
    /// Ours to read the body's output from (non-blocking).
    pub(super) out: Option<OwnedFd>,
    /// Ours to write input from home into.
    pub(super) input: Option<OwnedFd>,
    /// A copy of the body's own end, only to take back input it has not
    /// read when it is frozen (never read while it runs).
    pub(super) unread: Option<OwnedFd>,
    /// Input from home not yet written to the body's end (it was full).
    pub(super) queue: std::collections::VecDeque<u8>,
    /// Input was given that the body may not have read yet.
    pub(super) given: bool,
    /// Home was asked for input and has not answered yet.
    pub(super) asked: bool,
    /// The body's other fds that are dups of this one (`2>&1`), closed
    /// at home with it.
    pub(super) dups: Vec<i32>,
    /// Bytes of output sent home since the last count the home knows of
    /// (the relay's start, or the last re-attach).
    pub(super) sent: u64,
    /// The last of those bytes, up to [`RESEND_WINDOW`], to send again
    /// if the home's `homed` died before it passed them on.
    pub(super) recent: std::collections::VecDeque<u8>,
}

impl Relay {
    /// A relay for the body's `fd`, and the end the body gets.
    /// `dups`: the body's fds that are dups of `fd`.
    pub(super) fn new(
        fd: i32,
        kind: RelayKind,
        dups: Vec<i32>,
    ) -> std::io::Result<(Relay, OwnedFd)> {
        let relay = |out, input, unread| Relay {
            fd,
            out,
            input,
            unread,
            queue: Default::default(),
            given: false,
            asked: false,
            dups,
            sent: 0,
            recent: Default::default(),
        };
        match kind {
            RelayKind::Output => {
                let (r, w) = sys::pipe()?;
                sys::set_nonblocking(r.as_fd(), true)?;
                Ok((relay(Some(r), None, None), w))
            }
            RelayKind::Input => {
                let (r, w) = sys::pipe()?;
                sys::set_nonblocking(w.as_fd(), true)?;
                let keep = r.try_clone()?;
                Ok((relay(None, Some(w), Some(keep)), r))
            }
            RelayKind::Terminal => {
                let (ours, theirs) = UnixStream::pair()?;
                let ours = OwnedFd::from(ours);
                let theirs = OwnedFd::from(theirs);
                // Only our end's description turns non-blocking.
                sys::set_nonblocking(ours.as_fd(), true)?;
                let input = ours.try_clone()?;
                let unread = theirs.try_clone()?;
                Ok((relay(Some(ours), Some(input), Some(unread)), theirs))
            }
        }
    }
}

impl Relay {
    /// What names the relay's channel in a process's fd table: device and
    /// inode of the body's end (a pipe's ends share its inode; for a
    /// terminal, the copy of the body's socket we keep). Other processes
    /// here that hold it (children forked at this node) are found by it.
    pub(super) fn holder_key(&self) -> Option<(u64, u64)> {
        let fd = self.unread.as_ref().or(self.out.as_ref())?;
        let st = nix::sys::stat::fstat(fd).ok()?;
        Some((st.st_dev, st.st_ino))
    }

    /// The relay as a body that still holds it takes it over from one
    /// that left or ended (see [`super::family::hand_over`]): its output
    /// goes on, over the heir's link to the heir's deputy, which holds
    /// the same fd at home (forked from the first deputy). No input is
    /// read at home for it any more: a child that never reads would take
    /// input the moved process should get. None: nothing to carry (an
    /// input pipe, whose holders here then see its end, or an output
    /// pipe already closed).
    pub(super) fn for_heir(mut self) -> Option<Relay> {
        self.out.as_ref()?;
        self.input = None;
        self.queue.clear();
        self.given = false;
        self.asked = false;
        self.sent = 0;
        self.recent.clear();
        Some(self)
    }

    /// The body's fd number (the deputy's at home).
    pub(super) fn fd(&self) -> i32 {
        self.fd
    }
}

/// `data` is on its way home: count it (`sent`) and keep it (`recent`,
/// up to [`RESEND_WINDOW`]).
pub(super) fn note_sent(sent: &mut u64, recent: &mut std::collections::VecDeque<u8>, data: &[u8]) {
    *sent += data.len() as u64;
    recent.extend(data);
    let over = recent.len().saturating_sub(RESEND_WINDOW);
    recent.drain(..over);
}

impl Relay {
    /// The home's deputy wrote `written` of the bytes sent: what it did
    /// not get (as much of it as was kept) and how many bytes of it are
    /// lost; the count starts again from zero.
    pub(super) fn unwritten(&mut self, written: u64) -> (Vec<u8>, u64) {
        let missing = self.sent.saturating_sub(written);
        let kept = (missing as usize).min(self.recent.len());
        let again: Vec<u8> = self
            .recent
            .iter()
            .skip(self.recent.len() - kept)
            .copied()
            .collect();
        self.sent = 0;
        self.recent.clear();
        (again, missing - kept as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_the_deputy_did_not_write_goes_again_once() {
        let (mut r, _body_end) = Relay::new(1, RelayKind::Output, Vec::new()).unwrap();
        note_sent(&mut r.sent, &mut r.recent, b"hello ");
        note_sent(&mut r.sent, &mut r.recent, b"world\n");
        // The deputy wrote "hello "; "world\n" died with the old homed.
        let (again, lost) = r.unwritten(6);
        assert_eq!((again.as_slice(), lost), (&b"world\n"[..], 0));
        // Counted anew from the re-attach: nothing twice.
        assert_eq!(r.unwritten(0), (Vec::new(), 0));
        note_sent(&mut r.sent, &mut r.recent, b"x");
        assert_eq!(r.unwritten(1), (Vec::new(), 0));
    }

    #[test]
    fn output_beyond_the_window_is_reported_lost() {
        let (mut r, _body_end) = Relay::new(1, RelayKind::Output, Vec::new()).unwrap();
        let big = vec![7u8; RESEND_WINDOW + 10];
        note_sent(&mut r.sent, &mut r.recent, &big);
        let (again, lost) = r.unwritten(0);
        assert_eq!((again.len(), lost), (RESEND_WINDOW, 10));
    }
}
