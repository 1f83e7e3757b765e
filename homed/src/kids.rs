//! The children a process left at home when its body moved away (issue
//! 4): ordinary processes, or mosix processes at home or away, that the
//! process forked before it moved. They stay where they run and stay its
//! children: the deputy is the same process (same pid, same kernel
//! parent-child link), so only the deputy can wait for them.
//!
//! The deputy lists them once, when it starts (`/proc/self/task/*/
//! children`: at that moment every child is one the process made at
//! home), and answers the body's [`Call::Wait`](mosix_proto::migrate::Call)
//! with one `waitid(..., WNOHANG)` per matching child. The deputies it
//! forks later for the body's own forks are kept out of the list while
//! the body runs beside their bodies, so a wait here cannot steal them
//! from [`Call::Reap`](mosix_proto::migrate::Call) (the body reaps those
//! children where they run, then tells home). When the body moves on
//! (or is told a new node, `DeputyMsg::Where`), those children stay
//! where they run and the body no longer reaps them there: their
//! deputies join the list ([`HomeChildren::adopt`]), live or ended, and
//! are waited for like the rest. Otherwise the list only shrinks: a
//! reaped child leaves it. When the body comes home, every deputy is a
//! plain kernel child of the restored process, which waits as usual.
//!
//! Never blocking is what keeps the deputy able to serve the body's other
//! calls, forward signals and bring the body home; the body waits for
//! the SIGCHLD the deputy forwards (see `preload/src/family.rs`).

use mosix_engine::image::layout::wait_reply;
use mosix_proto::migrate::{CallReply, libc_wait};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;
use std::collections::BTreeSet;

/// The children a process had at home when its body left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HomeChildren {
    pids: BTreeSet<i32>,
}

impl HomeChildren {
    /// These children.
    pub fn new(pids: impl IntoIterator<Item = i32>) -> HomeChildren {
        HomeChildren {
            pids: pids.into_iter().filter(|&p| p > 0).collect(),
        }
    }

    /// The calling process's children now (every thread's), from
    /// `/proc/self/task/*/children`; none if that cannot be read.
    pub fn of_self() -> HomeChildren {
        let mut pids = Vec::new();
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for t in tasks.flatten() {
                if let Ok(text) = std::fs::read_to_string(t.path().join("children")) {
                    pids.extend(
                        text.split_whitespace()
                            .filter_map(|s| s.parse::<i32>().ok()),
                    );
                }
            }
        }
        HomeChildren::new(pids)
    }

    /// Add `pids` to them: the deputies of children the body forked at a
    /// node it has just left (see the module's doc).
    pub fn adopt(&mut self, pids: impl IntoIterator<Item = i32>) {
        self.pids.extend(pids.into_iter().filter(|&p| p > 0));
    }

    /// Whether `pid` is one of them.
    pub fn contains(&self, pid: i32) -> bool {
        self.pids.contains(&pid)
    }

    /// Whether none is left.
    pub fn is_empty(&self) -> bool {
        self.pids.is_empty()
    }

    /// The children a `waitid(idtype, id, ...)` is about, in pid order:
    /// `pgid_of` tells a child's process group (None: it is gone), and
    /// `own_pgid` is the caller's (for `P_PGID` with id 0).
    pub fn matching(
        &self,
        idtype: i32,
        id: i32,
        own_pgid: i32,
        pgid_of: impl Fn(i32) -> Option<i32>,
    ) -> Vec<i32> {
        match idtype {
            libc_wait::P_ALL => self.pids.iter().copied().collect(),
            libc_wait::P_PID => self.pids.iter().copied().filter(|&p| p == id).collect(),
            libc_wait::P_PGID => {
                let group = if id == 0 { own_pgid } else { id };
                self.pids
                    .iter()
                    .copied()
                    .filter(|&p| pgid_of(p) == Some(group))
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    /// `waitid(idtype, id, WNOHANG | options)` over these children only:
    /// the first that changed state (its pid and wait status, see
    /// [`wait_reply`]), 0 if some match but none changed, `ECHILD` if none
    /// matches. A child reaped here (an end without `WNOWAIT`) leaves the
    /// list.
    pub fn wait(&mut self, idtype: i32, id: i32, options: i32) -> CallReply {
        let own = nix::unistd::getpgrp().as_raw();
        let candidates = self.matching(idtype, id, own, |p| {
            nix::unistd::getpgid(Some(Pid::from_raw(p)))
                .ok()
                .map(Pid::as_raw)
        });
        let flags = WaitPidFlag::from_bits_truncate(options) | WaitPidFlag::WNOHANG;
        let mut live = 0;
        for pid in candidates {
            match waitid(Id::Pid(Pid::from_raw(pid)), flags) {
                Ok(WaitStatus::StillAlive) => live += 1,
                Ok(st) => {
                    let Some(status) = status_word(st) else {
                        live += 1;
                        continue;
                    };
                    let ended = status & 0x7f != 0x7f && status != 0xffff;
                    if ended && options & libc_wait::WNOWAIT == 0 {
                        self.pids.remove(&pid);
                    }
                    return CallReply::Value {
                        value: wait_reply(pid, status),
                    };
                }
                // Not our child any more (reaped by someone else): forget it.
                Err(nix::errno::Errno::ECHILD) => {
                    self.pids.remove(&pid);
                }
                Err(e) => return CallReply::Errno { errno: e as i32 },
            }
        }
        if live > 0 {
            CallReply::Value { value: 0 }
        } else {
            CallReply::Errno {
                errno: libc::ECHILD,
            }
        }
    }
}

/// The `wait4` status word of a `waitid` result (None: not a state a
/// wait reports).
pub fn status_word(st: WaitStatus) -> Option<i32> {
    Some(match st {
        WaitStatus::Exited(_, code) => (code & 0xff) << 8,
        WaitStatus::Signaled(_, sig, core) => (sig as i32 & 0x7f) | if core { 0x80 } else { 0 },
        WaitStatus::Stopped(_, sig) => ((sig as i32) << 8) | 0x7f,
        WaitStatus::PtraceEvent(_, sig, _) => ((sig as i32) << 8) | 0x7f,
        WaitStatus::PtraceSyscall(_) => (libc::SIGTRAP << 8) | 0x7f,
        WaitStatus::Continued(_) => 0xffff,
        WaitStatus::StillAlive => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::{Duration, Instant};

    #[test]
    fn matching_picks_by_pid_group_or_all() {
        let k = HomeChildren::new([30, 10, 20, 0, -4]);
        assert_eq!(
            k.matching(libc_wait::P_ALL, 0, 1, |_| None),
            vec![10, 20, 30]
        );
        assert_eq!(k.matching(libc_wait::P_PID, 20, 1, |_| None), vec![20]);
        assert!(k.matching(libc_wait::P_PID, 21, 1, |_| None).is_empty());
        let group = |p: i32| Some(if p == 30 { 7 } else { 5 });
        assert_eq!(k.matching(libc_wait::P_PGID, 7, 5, group), vec![30]);
        // Group 0: the caller's own.
        assert_eq!(k.matching(libc_wait::P_PGID, 0, 5, group), vec![10, 20]);
        assert!(k.matching(9, 0, 5, group).is_empty());
    }

    #[test]
    fn adopted_children_join_the_list() {
        let mut k = HomeChildren::new([10]);
        k.adopt([20, 0, -3, 10]);
        assert!(k.contains(20) && k.contains(10));
        assert_eq!(k.matching(libc_wait::P_ALL, 0, 1, |_| None), vec![10, 20]);
    }

    #[test]
    fn status_words_are_those_of_wait4() {
        use nix::sys::signal::Signal;
        let p = Pid::from_raw(5);
        assert_eq!(status_word(WaitStatus::Exited(p, 7)), Some(7 << 8));
        assert_eq!(
            status_word(WaitStatus::Signaled(p, Signal::SIGTERM, false)),
            Some(15)
        );
        assert_eq!(
            status_word(WaitStatus::Signaled(p, Signal::SIGSEGV, true)),
            Some(0x80 | 11)
        );
        assert_eq!(
            status_word(WaitStatus::Stopped(p, Signal::SIGSTOP)),
            Some((19 << 8) | 0x7f)
        );
        assert_eq!(status_word(WaitStatus::Continued(p)), Some(0xffff));
        assert_eq!(status_word(WaitStatus::StillAlive), None);
    }

    /// Polls `wait` until it reports a child.
    fn wait_until(k: &mut HomeChildren, idtype: i32, id: i32, options: i32) -> (i32, i32) {
        let t0 = Instant::now();
        loop {
            match k.wait(idtype, id, options) {
                CallReply::Value { value } if value != 0 => {
                    return mosix_engine::image::layout::split_wait_reply(value).unwrap();
                }
                CallReply::Value { .. } => {}
                other => panic!("wait: {other:?}"),
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "no child ended");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    // Both children are reaped by the waits under test, not by `Child`.
    #[allow(clippy::zombie_processes)]
    fn waits_only_for_the_listed_children_with_their_exact_status() {
        let listed = Command::new("sh").args(["-c", "exit 7"]).spawn().unwrap();
        let other = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        let (lp, op) = (listed.id() as i32, other.id() as i32);
        let mut k = HomeChildren::new([lp]);
        let w = libc_wait::WEXITED;
        // WNOWAIT looks without reaping: the same answer twice.
        assert_eq!(
            wait_until(&mut k, libc_wait::P_ALL, 0, w | libc_wait::WNOWAIT),
            (lp, 7 << 8)
        );
        assert!(k.contains(lp));
        assert_eq!(wait_until(&mut k, libc_wait::P_PID, lp, w), (lp, 7 << 8));
        assert!(k.is_empty());
        assert_eq!(
            k.wait(libc_wait::P_ALL, 0, w),
            CallReply::Errno {
                errno: libc::ECHILD
            }
        );
        // The other child was never touched: it is still ours to reap.
        let st = nix::sys::wait::waitpid(Pid::from_raw(op), None).unwrap();
        assert_eq!(st, WaitStatus::Exited(Pid::from_raw(op), 3));
    }

    #[test]
    fn a_live_child_is_no_answer_yet_and_a_killed_one_says_how() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let mut k = HomeChildren::new([pid]);
        assert_eq!(
            k.wait(libc_wait::P_ALL, 0, libc_wait::WEXITED),
            CallReply::Value { value: 0 }
        );
        child.kill().unwrap();
        assert_eq!(
            wait_until(&mut k, libc_wait::P_ALL, 0, libc_wait::WEXITED),
            (pid, libc::SIGKILL)
        );
        assert!(child.try_wait().is_err(), "reaped by the wait above");
    }
}
