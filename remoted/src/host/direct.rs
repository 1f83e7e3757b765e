//! Direct moves between two remote nodes (ARCHITECTURE.md section 3, step 6):
//! the image goes from the body's node straight to the destination's,
//! and the home only re-points the deputy's link.
//!
//! The home stays the one coordinator and keeps the commit point:
//!
//! ```text
//! home -> dest:   Offer { direct }        dest -> home:  Expecting { token }
//! home -> source: FreezeTo { dest, token }
//! source -> dest: (a link of its own) Deliver { token, bytes }, the image, ImageEnd
//! dest -> source: Delivered               source -> home: Sent
//! dest -> home:   Held (restored, held)   home -> source: Done ... home -> dest: Go
//! ```
//!
//! The destination's thread that took the offer waits for the delivery
//! ([`expect`], [`Expected::wait`]); the thread that serves the source's
//! link ([`receive`]) writes the image into the memfd that thread holds
//! and hands it the checksum. Any failure before `Held` leaves the body
//! frozen at the source, and the home says `Resume`: it runs on there.

use mosix_engine::image::ImagePlan;
use mosix_proto::link::{ClusterKey, Hello, Link, Role};
use mosix_proto::migrate::{CHUNK, FromHost, ToHost};
use mosix_proto::reason::HostFailure;
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Each read or write on a delivery link.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a destination waits for the image it was told to expect.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(600);
/// How often a destination waiting for an image looks at the home's link.
const WAIT_TICK: Duration = Duration::from_millis(200);

/// An image this host was told to expect, until its source delivers it.
struct Pending {
    /// Where it goes (our own open file description of the memfd).
    file: File,
    /// Told when it is all there: its checksum and size, or why not.
    done: mpsc::Sender<Result<(u64, u64), HostFailure>>,
    /// The home that announced it (only its bodies' nodes deliver).
    home: String,
}

fn pending() -> MutexGuard<'static, HashMap<u64, Pending>> {
    static P: OnceLock<Mutex<HashMap<u64, Pending>>> = OnceLock::new();
    P.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// This node's name and the cluster key, for links this host opens to
/// another node's host (set once at start).
static IDENTITY: OnceLock<(String, ClusterKey)> = OnceLock::new();

/// Remember who this host is (see [`IDENTITY`]).
pub(super) fn set_identity(node: &str, key: &ClusterKey) {
    let _ = IDENTITY.set((node.to_string(), key.clone()));
}

/// An image expected under a token; forgotten when dropped.
pub(super) struct Expected {
    token: u64,
    done: mpsc::Receiver<Result<(u64, u64), HostFailure>>,
}

/// Expect an image for `home` into `file` (a memfd): its token for the
/// home to pass on to the body's node.
pub(super) fn expect(file: &File, home: &str) -> std::io::Result<Expected> {
    let file = file.try_clone()?;
    let (tx, done) = mpsc::channel();
    let mut map = pending();
    let token = loop {
        let t: u64 = rand::random();
        if t != 0 && !map.contains_key(&t) {
            break t;
        }
    };
    map.insert(
        token,
        Pending {
            file,
            done: tx,
            home: home.to_string(),
        },
    );
    Ok(Expected { token, done })
}

impl Expected {
    /// What the home passes on.
    pub(super) fn token(&self) -> u64 {
        self.token
    }

    /// Wait for the whole image: `(checksum, bytes)`. Gives up when the
    /// home closes `home_link` or says anything (it gave up: the source
    /// could not freeze or send), or after [`DELIVERY_TIMEOUT`].
    pub(super) fn wait(&self, home_link: &TcpStream) -> Result<(u64, u64), HostFailure> {
        let start = Instant::now();
        let cut = |error: String| HostFailure::Transfer { error };
        loop {
            match self.done.recv_timeout(WAIT_TICK) {
                Ok(r) => return r,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(cut("the image's delivery ended without a word".into()));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if home_spoke(home_link) {
                return Err(cut(
                    "the home gave up the move before the image arrived".into()
                ));
            }
            if start.elapsed() > DELIVERY_TIMEOUT {
                return Err(cut(format!(
                    "the body's node did not deliver its image within {} s",
                    DELIVERY_TIMEOUT.as_secs()
                )));
            }
        }
    }
}

impl Drop for Expected {
    fn drop(&mut self) {
        pending().remove(&self.token);
    }
}

/// Whether the home closed its link or sent something (while it should
/// be waiting for `Held`, either means it gave up).
fn home_spoke(link: &TcpStream) -> bool {
    if link.set_nonblocking(true).is_err() {
        return false;
    }
    let mut b = [0u8; 1];
    let spoke = match link.peek(&mut b) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    let _ = link.set_nonblocking(false);
    spoke
}

/// Serve a [`ToHost::Deliver`] from node `from`: the image expected
/// under `token`, `bytes` long, into its memfd. The thread waiting for it
/// learns the outcome; so does the source ([`FromHost::Delivered`] or
/// [`FromHost::Failed`]).
pub(super) fn receive(link: &mut Link<TcpStream>, from: &str, token: u64, bytes: u64) {
    let Some(p) = pending().remove(&token) else {
        tracing::warn!(%from, token, "an image delivered under a token nobody expects");
        let _ = link.send(&FromHost::Failed {
            reason: HostFailure::UnknownToken,
        });
        return;
    };
    let min = size_of::<mosix_engine::image::layout::ImageHeader>() as u64;
    let result = if bytes < min {
        Err(HostFailure::BadImage {
            error: format!("an image of {bytes} bytes is too small to be one"),
        })
    } else {
        take_image(link, &p.file, bytes)
    };
    match &result {
        Ok(_) => {
            tracing::info!(%from, home = %p.home, bytes, "image delivered straight from the body's node");
            let _ = link.send(&FromHost::Delivered);
        }
        Err(reason) => {
            tracing::warn!(%from, home = %p.home, reason = %reason, "direct image delivery failed");
            let _ = link.send(&FromHost::Failed {
                reason: reason.clone(),
            });
        }
    }
    let _ = p.done.send(result.map(|checksum| (checksum, bytes)));
}

/// Exactly `bytes` raw bytes of an image into `file`, then its
/// checksum ([`ToHost::ImageEnd`]).
pub(super) fn take_image(
    link: &mut Link<TcpStream>,
    mut file: &File,
    bytes: u64,
) -> Result<u64, HostFailure> {
    let cut = |error: String| HostFailure::Transfer { error };
    let mut got = 0u64;
    while got < bytes {
        let chunk = link.recv_bytes().map_err(|e| {
            cut(format!(
                "image transfer cut after {got} of {bytes} bytes: {e}"
            ))
        })?;
        if got + chunk.len() as u64 > bytes {
            return Err(cut(format!(
                "the source sent more than the {bytes} bytes it announced"
            )));
        }
        file.write_all(&chunk).map_err(|e| HostFailure::Local {
            what: "cannot store the image in memory".into(),
            error: e.to_string(),
        })?;
        got += chunk.len() as u64;
    }
    match link.recv::<ToHost>() {
        Ok(ToHost::ImageEnd { checksum }) => Ok(checksum),
        Ok(other) => Err(cut(format!("expected the image's end, got {other:?}"))),
        Err(e) => Err(cut(format!("no end of image: {e}"))),
    }
}

/// Send the image of `plan` (read from `mem`) to node `node`, whose
/// `remoted` listens at `address` and whose host expects the image under
/// `token`; its size once that host has it all.
pub(super) fn deliver(
    node: &str,
    address: &str,
    token: u64,
    plan: &ImagePlan,
    mem: &mut dyn mosix_engine::image::PageSource,
) -> Result<u64, String> {
    let Some((me, key)) = IDENTITY.get() else {
        return Err("this host does not know its own name and key".into());
    };
    let address: SocketAddr = address
        .parse()
        .map_err(|e| format!("node {node}'s address {address:?} is not ip:port: {e}"))?;
    let mut link = mosix_proto::migrate::connect_host(
        node,
        address,
        key,
        Hello::new(me.clone(), Role::Remoted),
        STEP_TIMEOUT,
    )?;
    let bytes = plan.file_size();
    link.send(&ToHost::Deliver { token, bytes })
        .map_err(|e| format!("cannot announce the image to node {node}: {e}"))?;
    let checksum = plan
        .stream(mem, CHUNK, &mut |chunk| {
            link.send_bytes(chunk).map_err(std::io::Error::other)
        })
        .map_err(|e| format!("sending the image to node {node} failed: {e}"))?;
    link.send(&ToHost::ImageEnd { checksum })
        .map_err(|e| format!("sending the image to node {node} failed: {e}"))?;
    match link.recv::<FromHost>() {
        Ok(FromHost::Delivered) => Ok(bytes),
        Ok(FromHost::Failed { reason }) => {
            Err(format!("node {node} did not take the image: {reason}"))
        }
        Ok(FromHost::Refused { reason }) => {
            Err(format!("node {node} did not take the image: {reason}"))
        }
        Ok(other) => Err(format!("node {node} answered {other:?} to the image")),
        Err(e) => Err(format!("node {node} did not confirm the image: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expected_image_is_forgotten_when_its_waiter_goes() {
        let f = tempfile::tempfile().unwrap();
        let e = expect(&f, "n1").unwrap();
        let t = e.token();
        assert_ne!(t, 0);
        assert!(pending().contains_key(&t));
        drop(e);
        assert!(!pending().contains_key(&t));
    }

    #[test]
    fn a_waiter_hears_of_a_failed_delivery() {
        let f = tempfile::tempfile().unwrap();
        let e = expect(&f, "n1").unwrap();
        let p = pending().remove(&e.token()).unwrap();
        let cut = HostFailure::Transfer {
            error: "cut".into(),
        };
        p.done.send(Err(cut.clone())).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let home = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let _peer = listener.accept().unwrap();
        assert_eq!(e.wait(&home), Err(cut));
    }

    #[test]
    fn a_waiter_gives_up_when_the_home_closes_its_link() {
        let f = tempfile::tempfile().unwrap();
        let e = expect(&f, "n1").unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let home = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        drop(listener.accept().unwrap());
        let err = e.wait(&home).unwrap_err().to_string();
        assert!(err.contains("gave up"), "{err}");
    }
}
