//! The source side of a migration from home (DESIGN.md section 3, steps
//! 3, 5 and 7; messages in [`mosix_proto::migrate`]).
//!
//! The engine freezes the process as for a checkpoint; then
//! [`send_body`] streams its image over an authenticated link to the
//! destination's body host (`remoted`, port + 2) and waits until the body
//! is restored and held there. Only then does [`commit`] turn the frozen
//! process into its deputy (verdict `VERDICT_DEPUTY`: the freeze handler
//! `exec`s `mosix-deputy`, keeping pid, parent and fds), and, once the
//! deputy says it is up, tells the host to let the body go. Any failure
//! before that leaves the process running at home, unchanged; the host
//! kills a held body whose source gave up or vanished.
//!
//! After the commit, [`relay`] carries the deputy's signals to the body,
//! and the body's output to pipes and its exit status back to the deputy,
//! until the body ends.

use mosix_proto::image::layout::{DEPUTY_PATH_MAX, DEPUTY_READY, VERDICT_DEPUTY};
use mosix_proto::image::{ImagePlan, ImageSpec, PageSource};
use mosix_proto::link::{ClusterKey, Hello, Link, LinkError, Role};
use mosix_proto::local::{recv_local, send_local};
use mosix_proto::migrate::{CHUNK, DeputyMsg, FromHost, ToHost, host_addr};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// Connecting to the destination.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Each exchange with the destination (restoring a large image included).
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the freeze handler has to become the deputy.
const DEPUTY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the relay looks at the deputy's side while the body runs.
const POLL: Duration = Duration::from_millis(100);

/// Where the body goes.
#[derive(Debug, Clone)]
pub struct Target {
    /// Node name, for messages.
    pub node: String,
    /// Its `remoted` address.
    pub address: SocketAddr,
}

/// Who is moving, and on whose behalf.
pub struct Mover<'a> {
    /// This node's name.
    pub home: &'a str,
    /// The cluster key file.
    pub key_file: &'a Path,
    /// Home pid.
    pub pid: i32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
}

/// A body restored and held at the destination.
pub struct Held {
    /// The link to its host.
    pub link: Link<TcpStream>,
    /// Its pid there.
    pub body_pid: i32,
    /// Image bytes sent.
    pub bytes: u64,
}

/// Send the frozen process's image to `target` and wait until it is
/// restored and held there. On error nothing runs at the destination.
pub fn send_body(
    who: &Mover<'_>,
    target: &Target,
    spec: &ImageSpec,
    mem: &mut dyn PageSource,
) -> Result<Held, String> {
    let node = &target.node;
    let addr = host_addr(target.address);
    let key = ClusterKey::load(who.key_file).map_err(|e| e.to_string())?;
    let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| {
        format!("cannot reach node {node}'s body host at {addr}: {e}; is its remoted running?")
    })?;
    let _ = stream.set_read_timeout(Some(STEP_TIMEOUT));
    let _ = stream.set_write_timeout(Some(STEP_TIMEOUT));
    let (mut link, _) = Link::connect(stream, &key, Hello::new(who.home, Role::Homed))
        .map_err(|e| format!("no link to node {node} ({addr}): {e}"))?;
    let plan = ImagePlan::new(spec).map_err(|e| e.to_string())?;
    let bytes = plan.file_size();
    link.send(&ToHost::Offer {
        home_pid: who.pid,
        uid: who.uid,
        gid: who.gid,
        bytes,
    })
    .map_err(|e| format!("cannot offer the process to node {node}: {e}"))?;
    match link.recv::<FromHost>() {
        Ok(FromHost::Accepted) => {}
        Ok(FromHost::Refused { reason }) | Ok(FromHost::Failed { reason }) => {
            return Err(format!("node {node} refused the process: {reason}"));
        }
        Ok(other) => return Err(format!("node {node} answered {other:?} to the offer")),
        Err(e) => return Err(format!("node {node} did not answer the offer: {e}")),
    }
    let checksum = plan
        .stream(mem, CHUNK, &mut |chunk| {
            link.send_bytes(chunk).map_err(std::io::Error::other)
        })
        .map_err(|e| format!("sending the image to node {node} failed: {e}"))?;
    link.send(&ToHost::ImageEnd { checksum })
        .map_err(|e| format!("sending the image to node {node} failed: {e}"))?;
    match link.recv::<FromHost>() {
        Ok(FromHost::Held { body_pid }) => Ok(Held {
            link,
            body_pid,
            bytes,
        }),
        Ok(FromHost::Failed { reason }) | Ok(FromHost::Refused { reason }) => Err(format!(
            "node {node} could not restore the process: {reason}"
        )),
        Ok(other) => Err(format!("node {node} answered {other:?} instead of held")),
        Err(e) => Err(format!("node {node} did not confirm the restore: {e}")),
    }
}

/// Where `mosix-deputy` is: beside this `homed`.
pub fn deputy_path() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("mosix-deputy")))
        .unwrap_or_else(|| PathBuf::from("/usr/libexec/mosix/mosix-deputy"))
}

/// The commit: make the frozen process (blocked on `ctl` for its verdict)
/// the deputy, and once it is, let the body go. On error the process runs
/// on at home (the handler returned) and the held body is killed.
pub fn commit(ctl: &UnixStream, held: &mut Held, node: &str) -> Result<(), String> {
    let path = deputy_path();
    let pb = path.as_os_str().as_encoded_bytes();
    let abort = |link: &mut Link<TcpStream>, why: String| {
        let _ = link.send(&ToHost::Abort);
        why
    };
    if pb.len() >= DEPUTY_PATH_MAX || !path.exists() {
        return Err(abort(
            &mut held.link,
            format!(
                "{} is missing or its path too long: install mosix-deputy beside homed",
                path.display()
            ),
        ));
    }
    let mut msg = VERDICT_DEPUTY.to_le_bytes().to_vec();
    msg.extend_from_slice(&(pb.len() as u32).to_le_bytes());
    msg.extend_from_slice(pb);
    let mut w = ctl;
    if let Err(e) = w.write_all(&msg) {
        return Err(abort(
            &mut held.link,
            format!("cannot tell the process to become its deputy: {e}"),
        ));
    }
    let _ = ctl.set_read_timeout(Some(DEPUTY_TIMEOUT));
    let mut word = [0u8; 4];
    let mut r = ctl;
    let got = r.read_exact(&mut word);
    let _ = ctl.set_read_timeout(None);
    match got.map(|_| u32::from_le_bytes(word)) {
        Ok(DEPUTY_READY) => {}
        Ok(_) => {
            return Err(abort(
                &mut held.link,
                "the process could not exec mosix-deputy; it runs on here".into(),
            ));
        }
        Err(e) => {
            // The handler is gone (killed, or the exec'd deputy died):
            // nothing at home any more, so no body either.
            return Err(abort(
                &mut held.link,
                format!("the process did not become its deputy: {e}"),
            ));
        }
    }
    held.link.send(&ToHost::Go).map_err(|e| {
        format!(
            "the link to node {node} broke at the commit: {e}; the body there is dropped and the deputy ends as killed"
        )
    })
}

/// Carry signals from the deputy (on `ctl`) to the body and its end back,
/// until the body ends, its node is lost, or the deputy dies.
pub fn relay(ctl: &UnixStream, link: &mut Link<TcpStream>, pid: i32, node: &str) {
    let (tx, rx) = mpsc::channel();
    if let Ok(mut reader) = ctl.try_clone() {
        std::thread::spawn(move || {
            loop {
                let m = recv_local::<DeputyMsg>(&mut reader);
                let end = m.is_err();
                if tx.send(m.ok()).is_err() || end {
                    return;
                }
            }
        });
    }
    let Ok(mut to_deputy) = ctl.try_clone() else {
        return;
    };
    let _ = link.get_ref().set_read_timeout(Some(POLL));
    loop {
        while let Ok(m) = rx.try_recv() {
            match m {
                Some(DeputyMsg::Signal { sig }) => {
                    if let Err(e) = link.send(&ToHost::Signal { sig }) {
                        tracing::warn!(pid, %node, sig, error = %e, "cannot forward a signal to the body");
                    }
                }
                Some(other) => {
                    tracing::warn!(pid, msg = ?other, "unexpected message from the deputy")
                }
                None => {
                    // The deputy died (SIGKILL): the body must not outlive it.
                    tracing::info!(pid, %node, "deputy gone; killing the body");
                    let _ = link.send(&ToHost::Signal { sig: libc::SIGKILL });
                    return;
                }
            }
        }
        match link.recv::<FromHost>() {
            Ok(FromHost::Output { fd, data }) => {
                if let Err(e) = send_local(&mut to_deputy, &DeputyMsg::Output { fd, data }) {
                    // The deputy is gone; the channel reports it next.
                    tracing::warn!(pid, fd, error = %e, "cannot pass the body's output to the deputy");
                }
            }
            Ok(FromHost::Exited { status }) => {
                tracing::info!(pid, %node, ?status, "body ended");
                let _ = send_local(&mut to_deputy, &DeputyMsg::Exited { status });
                return;
            }
            Ok(other) => {
                tracing::warn!(pid, %node, msg = ?other, "unexpected message from the body's host")
            }
            Err(LinkError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                tracing::warn!(pid, %node, error = %e, "lost the node running the body; the deputy ends as killed");
                let _ = send_local(&mut to_deputy, &DeputyMsg::Lost);
                return;
            }
        }
    }
}
