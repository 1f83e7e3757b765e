//! A guest body once it runs (ARCHITECTURE.md section 3, steps 3, 6 and 7): its
//! output to the home's pipes, signals from the deputy, its end, and
//! freezing it again when the home moves it on (home, or to another node).
//!
//! One thread per body polls the home's link, the body's relayed pipes and
//! a pidfd of the body, so that when the home asks for the body
//! ([`ToHost::Freeze`]) every byte the body wrote before the freeze has
//! gone home before its image does: output is never lost or repeated.
//!
//! The body's libmosix talks to this thread over the control socket the
//! host placed at its control fd number: on a freeze it writes its freeze
//! record here and waits for our verdict. The image goes back over the
//! link; the body stays frozen until the home says [`ToHost::Done`] (it
//! runs elsewhere now: end it, answer [`FromHost::Left`]) or
//! [`ToHost::Resume`] (the move failed: run on). A link lost while the
//! body runs leaves it waiting for its home's new `homed` for the grace
//! period ([`Body::await_home`]; see the host's module doc); one lost
//! during a freeze kills it.
//!
//! While it runs, the body also writes on its control socket: a hello
//! after a restore or an `exec` (answered with its [`BodyInfo`] after an
//! exec), and forwarded calls (ARCHITECTURE.md section 4), which go home as
//! [`FromHost::Call`] and come back as [`ToHost::Reply`]; a fork's child
//! gets a control socket of its own (see [`super::family`]). A call that
//! meets a freeze is answered "busy" and asked again after it. Anything
//! else on the socket is a body out of step: it is killed.

use super::direct;
use super::guests::GuestInfo;
use super::relay::note_sent;
use super::{Relays, family, sys};
use mosix_engine::capture::{self, CaptureEnv};
use mosix_engine::freeze::{self, Verdict};
use mosix_engine::image::layout::{self, BodyInfo, CallRecord, FreezeRecord, Hello};
use mosix_engine::image::{self as image, ImagePlan};
use mosix_engine::procfs;
use mosix_proto::link::{Link, LinkError};
use mosix_proto::migrate::{CHUNK, Call, CallReply, EXEC_CMDLINE_MAX, FromHost, ToHost};
use mosix_proto::reason::{CantMove, FreezeFailure, LeaveReason};
use mosix_proto::view::Bytes;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::Duration;

/// Most bytes of the body's output in one message.
const OUTPUT_CHUNK: usize = 64 * 1024;
/// How long the loop sleeps when nothing happens.
const IDLE: Duration = Duration::from_secs(1);
/// How often to look whether the body has read its input.
const INPUT_CHECK: Duration = Duration::from_millis(10);
/// Longest wait for the home's answer to a forwarded call.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for the rest of a message the body started writing.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a body whose home is away looks for its new link.
const AWAY_POLL: Duration = Duration::from_millis(100);

/// A restored, running guest body.
pub(super) struct Body {
    /// Its pid here.
    pub(super) pid: i32,
    /// Owner.
    pub(super) uid: u32,
    /// Its freeze signal.
    pub(super) freeze_signal: i32,
    /// Our end of its control socket.
    pub(super) ctl: UnixStream,
    /// Its end's fd number in the body.
    pub(super) ctl_fd: i32,
    /// Whether its libmosix said hello on `ctl` yet.
    pub(super) hello_seen: bool,
    /// Read ends of its relayed output pipes, by its fd number.
    pub(super) relays: Relays,
    /// As the registry shows it.
    pub(super) info: GuestInfo,
    /// What its libmosix answers for home (sent again to its program
    /// after an exec, and the base of its children's).
    pub(super) body_info: BodyInfo,
    /// Its control socket is still open (it may close it, e.g. by an
    /// exec of a program without libmosix).
    pub(super) ctl_open: bool,
    /// The home asked for a freeze while a call was under way (and
    /// where the image goes).
    pub(super) pending_freeze: Option<ImageTo>,
    /// It exec'd during a freeze: home has yet to hear its command line.
    pub(super) exec_unannounced: bool,
    /// The link to the home broke during a call (the call was answered
    /// EIO): wait for the home.
    pub(super) home_lost: Option<String>,
}

/// Where a frozen body's image goes.
#[derive(Debug, Clone)]
pub(super) enum ImageTo {
    /// Home, over the body's link ([`ToHost::Freeze`]).
    Home,
    /// Straight to another node's host ([`ToHost::FreezeTo`]).
    Node {
        /// Its name.
        node: String,
        /// Its remoted's address (`ip:port`).
        address: String,
        /// Its token for the image.
        token: u64,
    },
}

impl ImageTo {
    /// Where a freeze request sends the image; `None`: it is none.
    fn of(msg: ToHost) -> Option<ImageTo> {
        match msg {
            ToHost::Freeze => Some(ImageTo::Home),
            ToHost::FreezeTo {
                node,
                address,
                token,
            } => Some(ImageTo::Node {
                node,
                address,
                token,
            }),
            _ => None,
        }
    }
}

/// How a freeze ended.
enum Frozen {
    /// The body runs on here.
    Resumed,
    /// It runs elsewhere now; this thread is done.
    Left,
    /// The link broke: the body was killed.
    Gone,
}

impl Body {
    /// A forked child adopted over `link`, as a running body.
    pub(super) fn adopted(a: family::Adopted, link: &mut Link<TcpStream>) -> Body {
        let body = Body {
            pid: a.pid,
            uid: a.uid,
            freeze_signal: a.freeze_signal,
            ctl: a.ctl,
            ctl_fd: a.ctl_fd,
            hello_seen: true,
            relays: Vec::new(),
            info: a.info,
            body_info: a.body_info,
            ctl_open: true,
            pending_freeze: None,
            exec_unannounced: false,
            home_lost: None,
        };
        if a.exec {
            // A spawned child runs its new program from the start.
            body.announce_exec(link);
        }
        body
    }

    /// Serve the body until it ends, leaves, or its home is lost.
    pub(super) fn run(
        mut self,
        link: &mut Link<TcpStream>,
        home: &str,
        leave: mpsc::Receiver<LeaveReason>,
        grace: Duration,
    ) {
        let pid = self.pid;
        let pidfd = match sys::pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!(body_pid = pid, error = %e, "cannot watch the body (pidfd_open); killing it");
                kill_and_reap(pid);
                return;
            }
        };
        loop {
            // Relays a body that left or ended here handed over to this one.
            self.relays.extend(family::take_handed(pid));
            let mut fds: Vec<i32> = vec![link.get_ref().as_raw_fd(), pidfd.as_raw_fd()];
            if self.ctl_open {
                fds.push(self.ctl.as_raw_fd());
            }
            fds.extend(
                self.relays
                    .iter()
                    .filter_map(|r| r.out.as_ref())
                    .map(|o| o.as_raw_fd()),
            );
            // While the body has input to read, look often whether it has.
            self.flush_input();
            let waiting = self.relays.iter().any(|r| r.given && !r.asked);
            let _ = sys::poll_in(&fds, if waiting { INPUT_CHECK } else { IDLE });
            if let Err(e) = self
                .pump_output(link)
                .and_then(|()| self.ask_for_input(link))
            {
                if self.await_home(link, home, &pidfd, grace, &e.to_string()) {
                    continue;
                }
                return;
            }
            if let Ok(reason) = leave.try_recv() {
                tracing::info!(%home, body_pid = pid, %reason, "asking the home to take its process back");
                if let Err(e) = link.send(&FromHost::Leave {
                    reason: reason.clone(),
                }) {
                    tracing::warn!(%home, body_pid = pid, error = %e, "cannot ask the home to take its process back");
                }
            }
            // A freeze the home asked for during a call goes first: the
            // body's next call would only be answered "busy".
            if let Some(to) = self.pending_freeze.take() {
                match self.freeze(link, home, to) {
                    Frozen::Resumed => {}
                    Frozen::Left | Frozen::Gone => return,
                }
            }
            if self.ctl_open
                && sys::poll_in(&[self.ctl.as_raw_fd()], Duration::ZERO).unwrap_or(false)
                && let Err(reason) = self.serve_ctl(link)
            {
                tracing::warn!(%home, body_pid = pid, %reason, "bad message from the body; killing it");
                kill_and_reap(pid);
                return;
            }
            if let Some(why) = self.home_lost.take() {
                if self.await_home(link, home, &pidfd, grace, &why) {
                    continue;
                }
                return;
            }
            if sys::poll_in(&[pidfd.as_raw_fd()], Duration::ZERO).unwrap_or(false) {
                self.finish(link, home);
                return;
            }
            loop {
                match recv_now(link) {
                    Ok(None) => break,
                    Ok(Some(ToHost::Signal { sig })) if (1..=64).contains(&sig) => {
                        if let Err(e) = sys::kill(pid, sig) {
                            tracing::warn!(body_pid = pid, sig, error = %e, "cannot signal the body");
                        }
                    }
                    Ok(Some(ToHost::Input { fd, data })) => self.give_input(fd, &data.0),
                    Ok(Some(m @ (ToHost::Freeze | ToHost::FreezeTo { .. }))) => {
                        let to = ImageTo::of(m).unwrap_or(ImageTo::Home);
                        match self.freeze(link, home, to) {
                            Frozen::Resumed => {}
                            Frozen::Left | Frozen::Gone => return,
                        }
                    }
                    Ok(Some(other)) => {
                        tracing::warn!(%home, body_pid = pid, msg = ?other, "unexpected message for a running body; killing it");
                        kill_and_reap(pid);
                        return;
                    }
                    Err(e) => {
                        if self.await_home(link, home, &pidfd, grace, &e.to_string()) {
                            break;
                        }
                        return;
                    }
                }
            }
        }
    }

    /// The link to the home broke (`why`): wait up to `grace` for the
    /// home's new `homed` to re-attach (see the host's module doc).
    /// Meanwhile the body's calls are answered EIO, its output waits in
    /// its pipes, and its end is kept. True: re-attached, `link` is the
    /// new link and the body runs on; false: the body ended (its end went
    /// home over the new link) or was ended (no home within `grace`).
    fn await_home(
        &mut self,
        link: &mut Link<TcpStream>,
        home: &str,
        pidfd: &OwnedFd,
        grace: Duration,
        why: &str,
    ) -> bool {
        let pid = self.pid;
        let home_pid = self.info.home_pid;
        tracing::warn!(%home, home_pid, body_pid = pid, reason = why, grace_s = grace.as_secs(), "link to the home lost; the body waits for its home to come back");
        let me = super::reattach::Body { pid, uid: self.uid };
        let registration = super::waiting().wait(home, home_pid, me);
        let until = std::time::Instant::now() + grace;
        // The body's end, once it ended meanwhile (`Some(None)`: reaped by
        // its parent body).
        let mut ended: Option<Option<mosix_proto::migrate::BodyStatus>> = None;
        let attach = loop {
            match registration.rx.try_recv() {
                Ok(l) => break Some(l),
                Err(mpsc::TryRecvError::Disconnected) => break None,
                Err(mpsc::TryRecvError::Empty) => {}
            }
            if std::time::Instant::now() >= until {
                break None;
            }
            let mut fds = Vec::new();
            if ended.is_none() {
                fds.push(pidfd.as_raw_fd());
                if self.ctl_open {
                    fds.push(self.ctl.as_raw_fd());
                }
            }
            let _ = sys::poll_in(&fds, AWAY_POLL);
            if ended.is_some() {
                continue;
            }
            if self.ctl_open
                && sys::poll_in(&[self.ctl.as_raw_fd()], Duration::ZERO).unwrap_or(false)
                && let Err(reason) = self.serve_ctl_away()
            {
                tracing::warn!(%home, body_pid = pid, %reason, "bad message from the body; killing it");
                kill_and_reap(pid);
                return false;
            }
            if sys::poll_in(&[pidfd.as_raw_fd()], Duration::ZERO).unwrap_or(false) {
                let status = family::end_status(pid);
                tracing::info!(%home, body_pid = pid, ?status, "body ended while its home was away; its end waits for the home");
                ended = Some(status);
            }
        };
        drop(registration);
        let Some((mut new_link, written)) = attach else {
            if ended.is_none() {
                tracing::warn!(%home, home_pid, body_pid = pid, grace_s = grace.as_secs(), "the home did not come back within the grace period; ending the body");
                kill_and_reap(pid);
            } else {
                tracing::warn!(%home, home_pid, body_pid = pid, "the home did not come back within the grace period; the body's end is not reported");
            }
            return false;
        };
        if let Err(e) = new_link.send(&FromHost::Held { body_pid: pid }) {
            tracing::warn!(%home, body_pid = pid, error = %e, "the new link to the home broke at once; the body waits again");
            return self.await_home(
                link,
                home,
                pidfd,
                grace.saturating_sub(Duration::from_secs(1)),
                &e.to_string(),
            );
        }
        *link = new_link;
        // The old homed's questions died with it: ask anew. Output it
        // took and did not pass on to the deputy goes again.
        let mut resent = 0u64;
        for r in &mut self.relays {
            r.asked = false;
            if r.out.is_none() && r.sent == 0 {
                continue;
            }
            let done = written
                .iter()
                .find(|(fd, _)| *fd == r.fd)
                .map_or(0, |w| w.1);
            let (again, lost) = r.unwritten(done);
            if lost > 0 {
                tracing::warn!(%home, body_pid = pid, fd = r.fd, lost, "output the old homed took and never passed on is lost");
            }
            for chunk in again.chunks(OUTPUT_CHUNK) {
                note_sent(&mut r.sent, &mut r.recent, chunk);
                resent += chunk.len() as u64;
                if let Err(e) = link.send(&FromHost::Output {
                    fd: r.fd,
                    data: Bytes(chunk.to_vec()),
                }) {
                    tracing::warn!(%home, body_pid = pid, error = %e, "the new link to the home broke at once");
                    break;
                }
            }
        }
        tracing::info!(%home, home_pid, body_pid = pid, resent, "re-attached to the home's new homed");
        match ended {
            Some(status) => {
                let _ = self.pump_output(link);
                tracing::info!(%home, body_pid = pid, ?status, "body ended");
                let _ = link.send(&match status {
                    Some(status) => FromHost::Exited { status },
                    None => FromHost::Reaped,
                });
                false
            }
            None => true,
        }
    }

    /// The magic of the next message on the body's control socket; `None`
    /// if the body closed it (an exec of a program without libmosix:
    /// nothing more will come, and its end shows on the pidfd).
    fn read_magic(&mut self) -> Result<Option<[u8; 8]>, String> {
        let mut magic = [0u8; 8];
        let _ = self.ctl.set_read_timeout(Some(MESSAGE_TIMEOUT));
        match self.ctl.read(&mut magic[..1]) {
            Ok(0) | Err(_) => {
                self.ctl_open = false;
                return Ok(None);
            }
            Ok(_) => {}
        }
        self.ctl
            .read_exact(&mut magic[1..])
            .map_err(|e| format!("cut message on the control socket: {e}"))?;
        Ok(Some(magic))
    }

    /// One message the body wrote on its control socket while its home is
    /// away: a hello is served as usual, a call is answered EIO at once.
    fn serve_ctl_away(&mut self) -> Result<(), String> {
        let Some(magic) = self.read_magic()? else {
            return Ok(());
        };
        match u64::from_le_bytes(magic) {
            layout::HELLO_MAGIC => self.hello(&magic).map(|exec| {
                // Announced at the next freeze, with the home back.
                self.exec_unannounced |= exec;
            }),
            layout::CALL_MAGIC => {
                let (rec, _) = self.read_call(&magic)?;
                let record = CallReply::Errno { errno: libc::EIO }.to_record(rec.op);
                family::send_record(&self.ctl, image::as_bytes(&record), None)
                    .map_err(|e| format!("cannot answer the body's call: {e}"))
            }
            other => Err(format!(
                "{other:#x} on the control socket is no message a running body sends"
            )),
        }
    }

    /// The body ended: its last output, then its status. Relays that
    /// other processes here still write to go on with one of them.
    fn finish(&mut self, link: &mut Link<TcpStream>, home: &str) {
        let status = family::end_status(self.pid);
        self.relays.extend(family::take_handed(self.pid));
        let _ = self.pump_output(link);
        family::hand_over(home, self.uid, self.pid, std::mem::take(&mut self.relays));
        tracing::info!(%home, body_pid = self.pid, ?status, "body ended");
        match status {
            Some(status) => {
                let _ = link.send(&FromHost::Exited { status });
            }
            // Its parent body reaped it first: the status goes home with
            // the parent's wait.
            None => {
                let _ = link.send(&FromHost::Reaped);
            }
        }
    }

    /// Read and answer one message the body wrote on its control socket
    /// while running: a hello (after a restore or an exec) or a call.
    /// `Err`: it is not one (the body must not run on unserved).
    fn serve_ctl(&mut self, link: &mut Link<TcpStream>) -> Result<(), String> {
        let Some(magic) = self.read_magic()? else {
            return Ok(());
        };
        match u64::from_le_bytes(magic) {
            layout::HELLO_MAGIC => {
                if self.hello(&magic)? {
                    self.announce_exec(link);
                }
                Ok(())
            }
            layout::CALL_MAGIC => {
                let (rec, payload) = self.read_call(&magic)?;
                self.forward_call(link, &rec, &payload)
            }
            other => Err(format!(
                "{other:#x} on the control socket is no message a running body sends"
            )),
        }
    }

    /// The rest of a hello whose magic was read: after a restore, nothing
    /// to answer (the facts were written before it ran); after an exec,
    /// the facts again. `Ok(true)`: it was an exec.
    fn hello(&mut self, magic: &[u8; 8]) -> Result<bool, String> {
        let mut hb = [0u8; size_of::<Hello>()];
        hb[..8].copy_from_slice(magic);
        self.ctl
            .read_exact(&mut hb[8..])
            .map_err(|e| format!("cut hello: {e}"))?;
        let h = image::from_bytes::<Hello>(&hb).ok_or("a hello of the wrong size")?;
        if h.version != layout::LAYOUT_VERSION {
            return Err(format!(
                "a hello of layout version {} (this host speaks {})",
                h.version,
                layout::LAYOUT_VERSION
            ));
        }
        match h.kind {
            layout::HELLO_RESTORED => {
                self.hello_seen = true;
                Ok(false)
            }
            layout::HELLO_EXEC if h.pid == self.pid => {
                self.hello_seen = true;
                (&self.ctl)
                    .write_all(image::as_bytes(&self.body_info))
                    .map_err(|e| format!("cannot brief the body's new program: {e}"))?;
                Ok(true)
            }
            kind => Err(format!("a hello of kind {kind} from pid {}", h.pid)),
        }
    }

    /// Tell home the command line of the program the body exec'd, so its
    /// deputy shows it (read here, where the body runs; cut to 4 KiB).
    pub(super) fn announce_exec(&self, link: &mut Link<TcpStream>) {
        let Ok(mut cmdline) = std::fs::read(format!("/proc/{}/cmdline", self.pid)) else {
            return;
        };
        cmdline.truncate(EXEC_CMDLINE_MAX);
        if let Err(e) = link.send(&FromHost::Exec {
            cmdline: Bytes(cmdline),
        }) {
            tracing::warn!(body_pid = self.pid, error = %e, "cannot tell home the body's new program");
        }
    }

    /// The rest of a call record whose magic was read, and its payload
    /// (at most `CALL_PAYLOAD_MAX` bytes: a longer one is refused unread).
    fn read_call(&mut self, magic: &[u8; 8]) -> Result<(CallRecord, Vec<u8>), String> {
        let mut cb = [0u8; size_of::<CallRecord>()];
        cb[..8].copy_from_slice(magic);
        self.ctl
            .read_exact(&mut cb[8..])
            .map_err(|e| format!("cut call: {e}"))?;
        let rec = image::from_bytes::<CallRecord>(&cb).ok_or("a call of the wrong size")?;
        if rec.len > layout::CALL_PAYLOAD_MAX {
            return Err(format!(
                "a call with {} bytes of payload (at most {})",
                rec.len,
                layout::CALL_PAYLOAD_MAX
            ));
        }
        let mut payload = vec![0u8; rec.len as usize];
        self.ctl
            .read_exact(&mut payload)
            .map_err(|e| format!("cut call payload: {e}"))?;
        Ok((rec, payload))
    }

    /// Pass the body's call home and its answer back. A fork gets the
    /// child's control socket, kept under a token until the home's link
    /// for the child adopts it.
    ///
    /// What the body wrote to its relays before the call goes home first,
    /// so the deputy has written it out before it does the call (a
    /// `tcsetattr(TCSADRAIN)` then waits for exactly that output). A
    /// terminal request that discards unread input (`TCSETSF`, `TCFLSH`)
    /// drops what the body was given on that fd and has not read, and
    /// what the deputy read for it before it did the request (input the
    /// deputy reads in the very moment of the flush may go either way,
    /// as keys typed during a `tcsetattr` at home race it too).
    fn forward_call(
        &mut self,
        link: &mut Link<TcpStream>,
        rec: &CallRecord,
        payload: &[u8],
    ) -> Result<(), String> {
        let token = family::new_token();
        let call = Call::from_record(rec, payload, token).map_err(|e| e.to_string())?;
        self.pump_output(link)
            .map_err(|e| format!("cannot pass the body's output home: {e}"))?;
        let discard = match call {
            Call::Tty { fd, op } if op.discards_input() => {
                self.discard_input(fd);
                Some(fd)
            }
            _ => None,
        };
        let child_end = match call {
            Call::Fork { token } => {
                let (ours, theirs) = UnixStream::pair()
                    .map_err(|e| format!("cannot make a child's control socket: {e}"))?;
                family::expect(
                    token,
                    family::PendingChild::new(
                        ours,
                        &family::Parent {
                            pid: self.pid,
                            uid: self.uid,
                            freeze_signal: self.freeze_signal,
                            ctl_fd: self.ctl_fd,
                        },
                        &self.info.home,
                    ),
                );
                Some(theirs)
            }
            _ => None,
        };
        let reply = match self.ask_home(link, call, discard) {
            Ok(r) => r,
            Err(e) => {
                // The home went away: the call fails cleanly, and the body
                // waits for its home (see `run`).
                self.home_lost = Some(e);
                CallReply::Errno { errno: libc::EIO }
            }
        };
        let fd = match (reply, &child_end) {
            (CallReply::Value { value }, Some(end)) => {
                let mut info = self.body_info;
                info.home_ppid = info.home_pid;
                info.home_pid = i32::try_from(value).unwrap_or(0);
                family::forked(token, info);
                Some(end.as_fd())
            }
            (_, Some(_)) => {
                family::forget(token);
                None
            }
            _ => None,
        };
        let record = reply.to_record(rec.op);
        let mut bytes = image::as_bytes(&record).to_vec();
        bytes.extend(reply.payload());
        family::send_record(&self.ctl, &bytes, fd)
            .map_err(|e| format!("cannot answer the body's call: {e}"))
    }

    /// Send `call` home and wait for the answer, serving what else comes
    /// meanwhile (signals, input; a freeze waits until after the call).
    /// Input for `discard` that comes meanwhile was read at home before
    /// the call flushed that terminal's input: it is dropped.
    fn ask_home(
        &mut self,
        link: &mut Link<TcpStream>,
        call: Call,
        discard: Option<i32>,
    ) -> Result<CallReply, String> {
        link.send(&FromHost::Call { call })
            .map_err(|e| format!("cannot pass a call home: {e}"))?;
        let _ = link.get_ref().set_read_timeout(Some(CALL_TIMEOUT));
        let answer = loop {
            match link.recv::<ToHost>() {
                Ok(ToHost::Reply { reply }) => break Ok(reply),
                Ok(ToHost::Signal { sig }) if (1..=64).contains(&sig) => {
                    if let Err(e) = sys::kill(self.pid, sig) {
                        tracing::warn!(body_pid = self.pid, sig, error = %e, "cannot signal the body");
                    }
                }
                Ok(ToHost::Input { fd, .. }) if Some(fd) == discard => {
                    if let Some(r) = self.relays.iter_mut().find(|r| r.fd == fd) {
                        r.asked = false;
                    }
                }
                Ok(ToHost::Input { fd, data }) => self.give_input(fd, &data.0),
                Ok(m @ (ToHost::Freeze | ToHost::FreezeTo { .. })) => {
                    self.pending_freeze = ImageTo::of(m);
                }
                Ok(other) => break Err(format!("the home sent {other:?} during a call")),
                Err(e) => break Err(format!("no answer from the home to a call: {e}")),
            }
        };
        let _ = link.get_ref().set_read_timeout(None);
        answer
    }

    /// Send home everything the body has written so far. A pipe the body
    /// (and every process here that shared it) closed is closed at home
    /// too, with its dups (an empty [`FromHost::Output`] each), so a
    /// reader at home sees its end as it would have: make's jobserver
    /// reads its pipe to the end once it has closed the writing side.
    fn pump_output(&mut self, link: &mut Link<TcpStream>) -> Result<(), LinkError> {
        let mut buf = vec![0u8; OUTPUT_CHUNK];
        for r in &mut self.relays {
            let Some(out) = &r.out else { continue };
            loop {
                match sys::read(out.as_fd(), &mut buf) {
                    Ok(0) => {
                        r.out = None;
                        for fd in std::iter::once(r.fd).chain(r.dups.iter().copied()) {
                            link.send(&FromHost::Output {
                                fd,
                                data: Bytes(Vec::new()),
                            })?;
                        }
                        break;
                    }
                    Ok(n) => {
                        // Counted as sent even if the send fails: the
                        // home says on re-attach what it got.
                        note_sent(&mut r.sent, &mut r.recent, &buf[..n]);
                        link.send(&FromHost::Output {
                            fd: r.fd,
                            data: Bytes(buf[..n].to_vec()),
                        })?
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
        Ok(())
    }

    /// Ask home for more input on each relay whose input the body has
    /// read (at most one chunk is ever ahead of the body).
    fn ask_for_input(&mut self, link: &mut Link<TcpStream>) -> Result<(), LinkError> {
        for r in &mut self.relays {
            if r.input.is_none() || r.asked || !r.queue.is_empty() {
                continue;
            }
            let drained = !r.given
                || r.unread
                    .as_ref()
                    .is_some_and(|u| sys::pending(u.as_fd()).unwrap_or(0) == 0);
            if drained {
                link.send(&FromHost::WantInput { fd: r.fd })?;
                r.asked = true;
                r.given = false;
            }
        }
        Ok(())
    }

    /// Input from home for the body's `fd` (empty: its end).
    fn give_input(&mut self, fd: i32, data: &[u8]) {
        let Some(r) = self.relays.iter_mut().find(|r| r.fd == fd) else {
            tracing::warn!(
                body_pid = self.pid,
                fd,
                "input for an fd that is not relayed; dropped"
            );
            return;
        };
        r.asked = false;
        if data.is_empty() {
            if r.out.is_none() && r.queue.is_empty() {
                // A pipe whose writer at home closed: the body sees EOF.
                r.input = None;
            }
            return;
        }
        r.queue.extend(data);
        r.given = true;
        self.flush_input();
    }

    /// Drop the input the body was given on `fd` and has not read (a
    /// terminal flush): what waits in its end and what is queued here.
    fn discard_input(&mut self, fd: i32) {
        let Some(r) = self.relays.iter_mut().find(|r| r.fd == fd) else {
            return;
        };
        r.queue.clear();
        r.given = false;
        let Some(u) = &r.unread else { return };
        let mut left = sys::pending(u.as_fd()).unwrap_or(0);
        let mut buf = [0u8; 4096];
        while left > 0 {
            let n = left.min(buf.len());
            match sys::read(u.as_fd(), &mut buf[..n]) {
                Ok(0) | Err(_) => break,
                Ok(k) => left -= k,
            }
        }
        tracing::debug!(body_pid = self.pid, fd, "unread terminal input discarded");
    }

    /// Write queued input into the body's ends, as far as they take it.
    fn flush_input(&mut self) {
        for r in &mut self.relays {
            let Some(input) = &r.input else { continue };
            while !r.queue.is_empty() {
                let (a, _) = r.queue.as_slices();
                match sys::write(input.as_fd(), a) {
                    Ok(n) => {
                        r.queue.drain(..n);
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => {
                        tracing::warn!(body_pid = self.pid, fd = r.fd, error = %e, "cannot give the body its input");
                        r.queue.clear();
                    }
                }
            }
        }
    }

    /// Take back the input the frozen body has not read, and send it home.
    fn return_unread(&mut self, link: &mut Link<TcpStream>) -> Result<(), LinkError> {
        for r in &self.relays {
            let Some(u) = &r.unread else { continue };
            let n = sys::pending(u.as_fd()).unwrap_or(0);
            if n == 0 && r.queue.is_empty() {
                continue;
            }
            let mut data = vec![0u8; n];
            let mut got = 0;
            while got < n {
                match sys::read(u.as_fd(), &mut data[got..]) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => got += k,
                }
            }
            data.truncate(got);
            data.extend(r.queue.iter());
            link.send(&FromHost::Unread {
                fd: r.fd,
                data: Bytes(data),
            })?;
        }
        Ok(())
    }

    /// Write a verdict to the frozen body.
    fn verdict(&mut self, v: Verdict) -> std::io::Result<()> {
        self.ctl.write_all(&v.bytes())
    }

    /// The home wants the body: freeze it, send its image, and do what
    /// the home decides.
    fn freeze(&mut self, link: &mut Link<TcpStream>, home: &str, to: ImageTo) -> Frozen {
        use mosix_engine::session::hosted::{Action, Hosted, Input, Outcome};
        let pid = self.pid;
        let mut s = Hosted::new();
        let stopped = self.stop_in_handler();
        if std::mem::take(&mut self.exec_unannounced) {
            self.announce_exec(link);
        }
        let mut record = None;
        let first = match stopped {
            Ok(r) => {
                record = Some(r);
                Input::Frozen
            }
            Err(reason) => {
                tracing::warn!(%home, body_pid = pid, %reason, "cannot freeze the body; it runs on");
                Input::NotFrozen(reason)
            }
        };
        let mut pending: std::collections::VecDeque<Action> =
            s.input(first, std::time::Instant::now()).into();
        loop {
            let Some(action) = pending.pop_front() else {
                // The home's decision about the frozen body.
                let Some(deadline) = s.deadline() else {
                    tracing::warn!(%home, body_pid = pid, "freeze session stalled; killing the body");
                    kill_and_reap(pid);
                    return Frozen::Gone;
                };
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let _ = link
                    .get_ref()
                    .set_read_timeout(Some(left.max(Duration::from_millis(1))));
                let got = link.recv::<ToHost>();
                let _ = link.get_ref().set_read_timeout(None);
                let now = std::time::Instant::now();
                pending = match got {
                    Ok(m) => s.input(Input::From(m), now),
                    Err(_) if now >= deadline => s.timeout(now),
                    Err(e) => s.input(Input::Broken(e.to_string()), now),
                }
                .into();
                continue;
            };
            let input = match action {
                Action::Send(msg) => match link.send(&msg) {
                    Ok(()) => continue,
                    Err(e) => Input::Broken(e.to_string()),
                },
                Action::Drain => {
                    // Frozen: whatever it wrote is in its pipes now, and
                    // goes first; then the input it was given and did not
                    // read.
                    match self
                        .pump_output(link)
                        .and_then(|()| self.return_unread(link))
                    {
                        Ok(()) => Input::Drained,
                        Err(e) => Input::Broken(e.to_string()),
                    }
                }
                Action::SendImage => {
                    let Some(record) = record.as_ref() else {
                        kill_and_reap(pid);
                        return Frozen::Gone;
                    };
                    match self.send_image_to(link, record, &to) {
                        Ok(bytes) => {
                            match &to {
                                ImageTo::Home => {
                                    tracing::info!(%home, body_pid = pid, bytes, "body frozen and its image sent home")
                                }
                                ImageTo::Node { node, .. } => {
                                    tracing::info!(%home, body_pid = pid, bytes, to = %node, "body frozen and its image sent straight to its next node")
                                }
                            }
                            Input::Sent { bytes }
                        }
                        Err(Some(reason)) => {
                            tracing::warn!(%home, body_pid = pid, %reason, "cannot capture or send the body; it runs on");
                            Input::SendFailed(reason)
                        }
                        Err(None) => Input::Broken("the link broke while sending the image".into()),
                    }
                }
                Action::Verdict(v) => {
                    if let Err(e) = self.verdict(v) {
                        tracing::warn!(body_pid = pid, error = %e, "cannot give the frozen body its verdict");
                    }
                    continue;
                }
                Action::EndHere => {
                    let _ = sys::waitpid(pid, 0);
                    // Its children here run on, writing to its relays.
                    self.relays.extend(family::take_handed(pid));
                    family::hand_over(home, self.uid, pid, std::mem::take(&mut self.relays));
                    continue;
                }
                Action::Signal(sig) => {
                    let _ = sys::kill(pid, sig);
                    continue;
                }
                Action::Kill => {
                    kill_and_reap(pid);
                    continue;
                }
                Action::Finish(Outcome::Resumed) => {
                    if record.is_some() {
                        tracing::info!(%home, body_pid = pid, "the move failed; body runs on here");
                    }
                    return Frozen::Resumed;
                }
                Action::Finish(Outcome::Left) => {
                    tracing::info!(%home, body_pid = pid, "body left this node");
                    return Frozen::Left;
                }
                Action::Finish(Outcome::Gone(why)) => {
                    tracing::warn!(%home, body_pid = pid, reason = %why, "the home was lost while the body was frozen; it was killed");
                    return Frozen::Gone;
                }
            };
            pending = s.input(input, std::time::Instant::now()).into();
        }
    }

    /// Capture the frozen body and send its image where the home said:
    /// home over `link`, or straight to the next node (then the home
    /// hears [`FromHost::Sent`]). `Err(Some)`: it could not be captured
    /// or delivered (the link is fine); `Err(None)`: the link broke.
    fn send_image_to(
        &mut self,
        link: &mut Link<TcpStream>,
        record: &FreezeRecord,
        to: &ImageTo,
    ) -> Result<u64, Option<FreezeFailure>> {
        match to {
            ImageTo::Home => self
                .send_image(link, record)
                .map_err(|e| e.map(|error| FreezeFailure::Capture { error })),
            ImageTo::Node {
                node,
                address,
                token,
            } => self
                .capture(record)
                .map_err(|error| FreezeFailure::Capture { error })
                .and_then(|(plan, mem)| {
                    direct::deliver(node, address, *token, &plan, &mut capture::ProcMem(mem))
                        .map_err(|error| FreezeFailure::Deliver {
                            node: node.clone(),
                            error,
                        })
                })
                .map_err(Some)
                .and_then(|bytes| {
                    link.send(&FromHost::Sent { bytes })
                        .map(|()| bytes)
                        .map_err(|_| None)
                }),
        }
    }

    /// Freeze the body through the engine's handshake ([`freeze::freeze`]):
    /// a call the body makes meanwhile is answered "busy", it lets the
    /// freeze signal in and asks again after; a hello (after an exec) is
    /// served. A body whose conversation goes out of step is killed.
    fn stop_in_handler(&mut self) -> Result<FreezeRecord, FreezeFailure> {
        let (pid, sig) = (self.pid, self.freeze_signal);
        if !self.ctl_open {
            return Err(FreezeFailure::CantMove(CantMove::NoControl));
        }
        if let Some(why) = procfs::cantmove_but_blocking(pid, sig, self.ctl_fd)
            .or_else(|| super::view::locks_block_move(pid))
        {
            return Err(FreezeFailure::CantMove(why));
        }
        let mut ctl = BodyControl { body: self };
        freeze::freeze(&mut ctl)
    }

    /// The image plan of the frozen body and its memory.
    fn capture(&self, record: &FreezeRecord) -> Result<(ImagePlan, std::fs::File), String> {
        let env = CaptureEnv::here();
        let spec = capture::describe(self.pid, self.uid, record, &env)?;
        let plan = ImagePlan::new(&spec).map_err(|e| e.to_string())?;
        let mem = std::fs::File::open(format!("/proc/{}/mem", self.pid))
            .map_err(|e| format!("cannot open /proc/{}/mem: {e}", self.pid))?;
        Ok((plan, mem))
    }

    /// Capture the frozen body and stream its image home. `Err(Some)`: it
    /// could not be captured (the home was told nothing yet, or got a
    /// padded image it must drop); `Err(None)`: the link broke.
    fn send_image(
        &mut self,
        link: &mut Link<TcpStream>,
        record: &FreezeRecord,
    ) -> Result<u64, Option<String>> {
        let (plan, mem) = self.capture(record).map_err(Some)?;
        let bytes = plan.file_size();
        link.send(&FromHost::Image { bytes }).map_err(|_| None)?;
        let mut sent = 0u64;
        let mut link_broke = false;
        let streamed = plan.stream(&mut capture::ProcMem(mem), CHUNK, &mut |chunk| {
            link.send_bytes(chunk).map_err(|e| {
                link_broke = true;
                std::io::Error::other(e)
            })?;
            sent += chunk.len() as u64;
            Ok(())
        });
        match streamed {
            Ok(checksum) => {
                link.send(&FromHost::ImageEnd { checksum })
                    .map_err(|_| None)?;
                Ok(bytes)
            }
            Err(_) if link_broke => Err(None),
            Err(e) => {
                // Keep the stream in step: pad to the size announced; the
                // home drops it on the FreezeFailed that follows.
                let zeros = vec![0u8; CHUNK];
                while sent < bytes {
                    let n = (bytes - sent).min(CHUNK as u64) as usize;
                    link.send_bytes(&zeros[..n]).map_err(|_| None)?;
                    sent += n as u64;
                }
                Err(Some(format!("reading the frozen body failed: {e}")))
            }
        }
    }
}

/// A running body's control socket, for the engine's freeze.
struct BodyControl<'a> {
    body: &'a mut Body,
}

impl freeze::Control for BodyControl<'_> {
    fn pid(&self) -> i32 {
        self.body.pid
    }

    fn freeze_signal(&self) -> i32 {
        self.body.freeze_signal
    }

    fn blocks_signal(&mut self) -> bool {
        procfs::blocks_freeze_signal(self.body.pid, self.body.freeze_signal)
    }

    fn send_signal(&mut self) -> std::io::Result<()> {
        sys::kill(self.body.pid, self.body.freeze_signal)
    }

    fn readable(&mut self, timeout: Duration) -> std::io::Result<bool> {
        sys::poll_in(&[self.body.ctl.as_raw_fd()], timeout)
    }

    fn read_exact(&mut self, buf: &mut [u8], timeout: Duration) -> std::io::Result<()> {
        self.body.ctl.set_read_timeout(Some(timeout))?;
        let got = self.body.ctl.read_exact(buf);
        let _ = self.body.ctl.set_read_timeout(None);
        got
    }

    fn other(&mut self, magic: [u8; 8]) -> Result<freeze::Interlude, String> {
        match u64::from_le_bytes(magic) {
            layout::HELLO_MAGIC => self.body.hello(&magic).map(|exec| {
                // Announced once the link is at hand again.
                self.body.exec_unannounced |= exec;
                freeze::Interlude::Served
            }),
            layout::CALL_MAGIC => self
                .body
                .read_call(&magic)
                .map(|(rec, _)| freeze::Interlude::Call(rec)),
            other => Err(format!("{other:#x} on the control socket")),
        }
    }

    fn answer_busy(&mut self, call: &CallRecord) -> std::io::Result<()> {
        let busy = CallReply::Busy.to_record(call.op);
        (&self.body.ctl).write_all(image::as_bytes(&busy))
    }

    fn out_of_step(&mut self) {
        kill_and_reap(self.body.pid);
    }
}

/// One message from the home if one is there, without waiting.
fn recv_now(link: &mut Link<TcpStream>) -> Result<Option<ToHost>, LinkError> {
    link.get_ref()
        .set_nonblocking(true)
        .map_err(LinkError::Io)?;
    let got = link.recv::<ToHost>();
    link.get_ref()
        .set_nonblocking(false)
        .map_err(LinkError::Io)?;
    match got {
        Ok(m) => Ok(Some(m)),
        Err(LinkError::Io(e)) if e.kind() == ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// Kill and reap a body that must not run on.
fn kill_and_reap(pid: i32) {
    let _ = sys::kill(pid, libc::SIGKILL);
    let _ = sys::waitpid(pid, 0);
}
