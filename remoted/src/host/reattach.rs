//! Bodies whose home went away, waiting for it to come back (the home's
//! daemons restarting; see the host's module doc, "When the home goes
//! away").
//!
//! A body's thread whose link to its home broke registers here under
//! (home node, home pid) with its body pid ([`Waiting::wait`]); a new link
//! from that home's new `homed` that asks to re-attach
//! ([`ToHost::Reattach`](mosix_proto::migrate::ToHost::Reattach)) is
//! handed to it ([`Waiting::offer`]). The table is generic over what is
//! handed over so that it can be tested without links.

use std::collections::HashMap;
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

/// How often [`Waiting::offer`] looks again for a body that has not
/// noticed yet that its old link broke.
const LOOK_AGAIN: Duration = Duration::from_millis(50);

/// Why a re-attach was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReattachError {
    /// no body of home process {home_pid} from node {home} waits for its home here (it ended, or its grace period passed)
    #[error(
        "no body of home process {home_pid} from node {home} waits for its home here (it ended, or its grace period passed)"
    )]
    NotWaiting {
        /// The home node.
        home: String,
        /// The home pid.
        home_pid: i32,
    },
    /// the body of home process {home_pid} belongs to uid {here}, not {asked}
    #[error("the body of home process {home_pid} belongs to uid {here}, not {asked}")]
    OtherOwner {
        /// The home pid.
        home_pid: i32,
        /// The uid the home named.
        asked: u32,
        /// The body's uid.
        here: u32,
    },
    /// the body of home process {home_pid} runs here as pid {here}, not {asked}
    #[error("the body of home process {home_pid} runs here as pid {here}, not {asked}")]
    OtherBody {
        /// The home pid.
        home_pid: i32,
        /// The body pid the home named.
        asked: i32,
        /// The body pid here.
        here: i32,
    },
}

type Key = (String, i32);

/// The table of waiting bodies.
pub struct Waiting<T> {
    bodies: Mutex<HashMap<Key, (Body, mpsc::Sender<T>)>>,
}

/// A waiting body: its pid here and its owner's uid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Body {
    /// Its pid on this node.
    pub pid: i32,
    /// Its owner.
    pub uid: u32,
}

impl<T> Default for Waiting<T> {
    fn default() -> Self {
        Waiting {
            bodies: Mutex::new(HashMap::new()),
        }
    }
}

/// A body's place in the table; dropping it leaves the table.
pub struct Registration<'a, T> {
    table: &'a Waiting<T>,
    key: Key,
    /// Where the new link comes.
    pub rx: mpsc::Receiver<T>,
}

impl<T> Drop for Registration<'_, T> {
    fn drop(&mut self) {
        self.table
            .bodies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

impl<T> Waiting<T> {
    /// The body `body` of `home`'s process `home_pid` waits for its home
    /// from now on, until the registration is dropped.
    pub fn wait(&self, home: &str, home_pid: i32, body: Body) -> Registration<'_, T> {
        let (tx, rx) = mpsc::channel();
        let key = (home.to_string(), home_pid);
        self.bodies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), (body, tx));
        Registration {
            table: self,
            key,
            rx,
        }
    }

    /// Hand `what` to the body `body` of `home`'s process `home_pid`,
    /// waiting up to `patience` for it to register (its thread may not have
    /// seen its old link break yet). On refusal `what` comes back.
    pub fn offer(
        &self,
        home: &str,
        home_pid: i32,
        body: Body,
        what: T,
        patience: Duration,
    ) -> Result<(), (ReattachError, T)> {
        let key = (home.to_string(), home_pid);
        let until = Instant::now() + patience;
        let mut what = what;
        loop {
            {
                let mut bodies = self.bodies.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((here, tx)) = bodies.get(&key) {
                    if here.uid != body.uid {
                        let err = ReattachError::OtherOwner {
                            home_pid,
                            asked: body.uid,
                            here: here.uid,
                        };
                        return Err((err, what));
                    }
                    if here.pid != body.pid {
                        let err = ReattachError::OtherBody {
                            home_pid,
                            asked: body.pid,
                            here: here.pid,
                        };
                        return Err((err, what));
                    }
                    match tx.send(what) {
                        Ok(()) => {
                            // One re-attach per wait.
                            bodies.remove(&key);
                            return Ok(());
                        }
                        // Its thread stopped waiting meanwhile.
                        Err(mpsc::SendError(back)) => {
                            bodies.remove(&key);
                            what = back;
                        }
                    }
                }
            }
            if Instant::now() >= until {
                let err = ReattachError::NotWaiting {
                    home: home.to_string(),
                    home_pid,
                };
                return Err((err, what));
            }
            std::thread::sleep(LOOK_AGAIN);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Body = Body {
        pid: 500,
        uid: 1000,
    };

    #[test]
    fn a_waiting_body_gets_what_its_home_offers() {
        let t: Waiting<u32> = Waiting::default();
        let r = t.wait("n1", 10, B);
        assert!(t.offer("n1", 10, B, 7, Duration::ZERO).is_ok());
        assert_eq!(r.rx.try_recv(), Ok(7));
        // Only once.
        let e = t.offer("n1", 10, B, 8, Duration::ZERO).unwrap_err();
        assert!(matches!(e.0, ReattachError::NotWaiting { .. }));
    }

    #[test]
    fn another_home_or_body_is_refused() {
        let t: Waiting<u32> = Waiting::default();
        let _r = t.wait("n1", 10, B);
        let e = t.offer("n3", 10, B, 1, Duration::ZERO).unwrap_err();
        assert!(matches!(e.0, ReattachError::NotWaiting { .. }));
        assert_eq!(e.1, 1);
        let e = t
            .offer("n1", 10, Body { pid: 500, uid: 0 }, 3, Duration::ZERO)
            .unwrap_err();
        assert!(matches!(e.0, ReattachError::OtherOwner { asked: 0, .. }));
        let e = t
            .offer(
                "n1",
                10,
                Body {
                    pid: 501,
                    uid: 1000,
                },
                2,
                Duration::ZERO,
            )
            .unwrap_err();
        assert_eq!(
            e.0,
            ReattachError::OtherBody {
                home_pid: 10,
                asked: 501,
                here: 500
            }
        );
    }

    #[test]
    fn a_body_that_stopped_waiting_is_gone() {
        let t: Waiting<u32> = Waiting::default();
        drop(t.wait("n1", 10, B));
        let e = t.offer("n1", 10, B, 1, Duration::ZERO).unwrap_err();
        assert!(matches!(e.0, ReattachError::NotWaiting { .. }));
    }

    #[test]
    fn an_offer_waits_for_a_body_that_registers_late() {
        let t: std::sync::Arc<Waiting<u32>> = Default::default();
        let t2 = t.clone();
        let late = std::thread::spawn(move || {
            let r = t2.wait("n1", 10, B);
            r.rx.recv_timeout(Duration::from_secs(30))
        });
        assert!(t.offer("n1", 10, B, 9, Duration::from_secs(30)).is_ok());
        assert_eq!(late.join().unwrap(), Ok(9));
    }
}
