//! The bodies this node hosts (its guests), shared between the body host's
//! threads and the rest of `remoted` (the balancer, `mosctl`).
//!
//! Why a registry apart from the host threads: the balancer decides that a
//! guest must leave (the owner came back, memory is short, `mosctl
//! expel`), but only the guest's host thread holds the link to its home.
//! So the balancer asks here, and the host thread passes the request on
//! to the home, which moves the process back (or elsewhere): a guest never
//! moves without its home knowing.

use mosix_proto::reason::LeaveReason;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// One hosted body, as the balancer and `mosctl` see it.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestInfo {
    /// The node the process was started at.
    pub home: String,
    /// Its pid there (the pid the user knows).
    pub home_pid: i32,
    /// Its pid here.
    pub body_pid: i32,
    /// Owner uid.
    pub uid: u32,
    /// When it arrived.
    pub since: Instant,
}

struct Entry {
    info: GuestInfo,
    leave: mpsc::Sender<LeaveReason>,
}

static GUESTS: Mutex<Option<HashMap<i32, Entry>>> = Mutex::new(None);
static ACCEPTING: AtomicBool = AtomicBool::new(true);

fn table() -> MutexGuard<'static, Option<HashMap<i32, Entry>>> {
    GUESTS.lock().unwrap_or_else(|p| p.into_inner())
}

/// The guests hosted now, oldest first.
pub fn list() -> Vec<GuestInfo> {
    let mut v: Vec<GuestInfo> = table()
        .as_ref()
        .map(|t| t.values().map(|e| e.info.clone()).collect())
        .unwrap_or_default();
    v.sort_by_key(|g| (g.since, g.body_pid));
    v
}

/// Ask the home of the guest `body_pid` to take it away (home, or to
/// another node of the home's choosing); `reason` is logged there. False
/// if no such guest runs here any more.
pub fn ask_to_leave(body_pid: i32, reason: LeaveReason) -> bool {
    table()
        .as_ref()
        .and_then(|t| t.get(&body_pid))
        .is_some_and(|e| e.leave.send(reason).is_ok())
}

/// Whether this node takes new guests (`mosctl block` clears it).
pub fn accepting() -> bool {
    ACCEPTING.load(Ordering::Relaxed)
}

/// Take new guests, or refuse them (`mosctl block|unblock`); the guests
/// already here stay.
pub fn set_accepting(yes: bool) {
    ACCEPTING.store(yes, Ordering::Relaxed);
}

/// A guest's place in the registry, held by its host thread; dropping it
/// removes the guest.
pub(crate) struct Registration {
    body_pid: i32,
}

/// Record a guest; leave requests for it arrive on the returned receiver.
pub(crate) fn register(info: GuestInfo) -> (Registration, mpsc::Receiver<LeaveReason>) {
    let (tx, rx) = mpsc::channel();
    let body_pid = info.body_pid;
    table()
        .get_or_insert_with(HashMap::new)
        .insert(body_pid, Entry { info, leave: tx });
    (Registration { body_pid }, rx)
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(t) = table().as_mut() {
            t.remove(&self.body_pid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest(body_pid: i32) -> GuestInfo {
        GuestInfo {
            home: "n1".into(),
            home_pid: 100 + body_pid,
            body_pid,
            uid: 1000,
            since: Instant::now(),
        }
    }

    #[test]
    fn registered_guests_are_listed_asked_and_forgotten() {
        let (reg, rx) = register(guest(-7));
        assert!(list().iter().any(|g| g.body_pid == -7 && g.home_pid == 93));
        let why = LeaveReason::OwnerBack;
        assert!(ask_to_leave(-7, why.clone()));
        assert_eq!(rx.try_recv().unwrap(), why);
        drop(reg);
        assert!(!list().iter().any(|g| g.body_pid == -7));
        assert!(!ask_to_leave(-7, LeaveReason::Expelled));
    }
}
