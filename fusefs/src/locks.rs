//! Which processes hold POSIX record locks through the view.
//!
//! The remote kernel keeps no record of a view file's locks (the home
//! does, see the crate doc), so `/proc/PID/fdinfo` of a body shows none.
//! A body that moved on while holding some would lose them silently when
//! its fds through the view close here; the host asks [`LockHolders`]
//! before it lets a body go, and refuses the move instead.
//!
//! Conservative by design: a lock owner counts as holding from its first
//! granted lock on a file until it unlocks the whole file or closes it
//! (closing any fd of a file drops all of the owner's locks on it, and
//! the kernel tells the view with a flush naming the owner). A partial
//! unlock keeps it counted.

use std::collections::HashMap;
use std::sync::Mutex;

/// Lock owners holding (or perhaps holding) locks, per file.
#[derive(Debug, Default)]
pub struct LockHolders {
    /// (view inode, kernel lock owner) -> pid of the process that locked.
    held: Mutex<HashMap<(u64, u64), u32>>,
}

impl LockHolders {
    /// Notes a granted F_SETLK/F_SETLKW of `typ` on bytes `start..=end` of
    /// `ino` by `owner`, asked by process `pid`.
    pub fn granted(&self, ino: u64, owner: u64, pid: u32, typ: i32, start: u64, end: u64) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if typ == libc::F_UNLCK {
            if start == 0 && end >= i64::MAX as u64 {
                held.remove(&(ino, owner));
            }
        } else {
            held.insert((ino, owner), pid);
        }
    }

    /// Notes that `owner` closed a descriptor of `ino`: its locks there
    /// are gone.
    pub fn closed(&self, ino: u64, owner: u64) {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(ino, owner));
    }

    /// The home's session, which held every lock, is gone: none is held.
    pub fn clear(&self) {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Whether process `pid` may hold locks through this view.
    pub fn holds(&self, pid: u32) -> bool {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|&p| p == pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: u64 = u64::MAX;

    #[test]
    fn a_lock_counts_until_the_whole_file_is_unlocked_or_closed() {
        let h = LockHolders::default();
        assert!(!h.holds(10));
        h.granted(5, 1, 10, libc::F_WRLCK, 0, ALL);
        h.granted(6, 1, 10, libc::F_RDLCK, 0, 99);
        assert!(h.holds(10) && !h.holds(11));
        // A partial unlock leaves it counted.
        h.granted(5, 1, 10, libc::F_UNLCK, 0, 99);
        assert!(h.holds(10));
        h.granted(5, 1, 10, libc::F_UNLCK, 0, ALL);
        assert!(h.holds(10), "its lock on file 6 is still there");
        h.closed(6, 1);
        assert!(!h.holds(10));
        // Another owner's close does not drop this owner's locks.
        h.granted(5, 1, 10, libc::F_WRLCK, 0, ALL);
        h.closed(5, 2);
        assert!(h.holds(10));
    }
}
