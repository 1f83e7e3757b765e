//! What a view client remembers so that its session can be opened again
//! after the home's `homed` restarted (see [`crate::client`], "When the
//! home goes away"): where each node the kernel knows sits (its parent
//! and name), so the new session can look it up again by the same path,
//! and what each open file is ([`Handles`]: the kernel holds the
//! client's own handle numbers, each standing for the home's handle of
//! the current session, opened again in each new one), so that a handle
//! of a dead session is never taken for a new session's handle of the
//! same number.
//!
//! Pure bookkeeping, no I/O.

use mosix_proto::view::{Bytes, Op, ROOT_NODE, Reply};
use std::collections::HashMap;

/// The file handle an operation works on, if any.
pub fn op_fh(op: &mut Op) -> Option<&mut u64> {
    match op {
        Op::Read { fh, .. }
        | Op::Write { fh, .. }
        | Op::Flush { fh, .. }
        | Op::Lseek { fh, .. }
        | Op::Fallocate { fh, .. }
        | Op::GetLk { fh, .. }
        | Op::SetLk { fh, .. }
        | Op::Fsync { fh, .. }
        | Op::Release { fh }
        | Op::ReadDir { fh, .. }
        | Op::ReleaseDir { fh } => Some(fh),
        Op::SetAttr { fh, .. } => fh.as_mut(),
        _ => None,
    }
}

/// Whether `op` on a handle the home no longer has succeeds without the
/// home: closing it (the home closed it with its session).
pub fn closes(op: &Op) -> bool {
    matches!(
        op,
        Op::Flush { .. } | Op::Release { .. } | Op::ReleaseDir { .. }
    )
}

/// One file or directory the kernel holds open through the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFile {
    /// Its node.
    pub node: u64,
    /// How it was opened (creation flags left out: opening it again must
    /// not truncate or create anything).
    pub flags: i32,
    /// A directory (opened with `OpenDir`).
    pub dir: bool,
    /// The home's handle in the current session; `None` while the home is
    /// away, or if the new session could not open it again.
    pub home_fh: Option<u64>,
}

/// The kernel's handles (numbered here) and the home's behind them.
#[derive(Debug, Default)]
pub struct Handles {
    next: u64,
    open: HashMap<u64, OpenFile>,
}

impl Handles {
    /// A new handle for the kernel, standing for the home's `home_fh` of
    /// `node` opened with `flags`.
    pub fn add(&mut self, node: u64, flags: i32, dir: bool, home_fh: u64) -> u64 {
        self.next += 1;
        let flags = flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC);
        self.open.insert(
            self.next,
            OpenFile {
                node,
                flags,
                dir,
                home_fh: Some(home_fh),
            },
        );
        self.next
    }

    /// The home's handle behind the kernel's `fh`, if the home has one.
    pub fn home_fh(&self, fh: u64) -> Option<u64> {
        self.open.get(&fh).and_then(|f| f.home_fh)
    }

    /// The kernel closed `fh`.
    pub fn remove(&mut self, fh: u64) {
        self.open.remove(&fh);
    }

    /// The home's session died: no handle stands for anything at home.
    pub fn lose_all(&mut self) {
        for f in self.open.values_mut() {
            f.home_fh = None;
        }
    }

    /// Every open handle, to be opened again in a new session.
    pub fn all(&self) -> Vec<(u64, OpenFile)> {
        self.open.iter().map(|(&k, &f)| (k, f)).collect()
    }

    /// `fh` stands for the home's `home_fh` now (`None`: it could not be
    /// opened again; it fails with EIO until closed).
    pub fn reopened(&mut self, fh: u64, home_fh: Option<u64>) {
        if let Some(f) = self.open.get_mut(&fh) {
            f.home_fh = home_fh;
        }
    }
}

#[derive(Debug, Clone)]
struct Place {
    parent: u64,
    name: Bytes,
    lookups: u64,
}

/// Where the nodes the kernel holds are, and which directory each open
/// directory handle lists.
#[derive(Debug, Default)]
pub struct NodePaths {
    places: HashMap<u64, Place>,
    dirs: HashMap<u64, u64>,
}

impl NodePaths {
    /// `node` is `name` in `parent` (one more lookup the kernel holds).
    fn entry(&mut self, parent: u64, name: &Bytes, node: u64) {
        if node == ROOT_NODE {
            return;
        }
        let lookups = self.places.get(&node).map_or(0, |p| p.lookups);
        self.places.insert(
            node,
            Place {
                parent,
                name: name.clone(),
                lookups: lookups + 1,
            },
        );
    }

    /// The kernel forgot `count` lookups of `node`.
    pub fn forget(&mut self, node: u64, count: u64) {
        if let Some(p) = self.places.get_mut(&node) {
            p.lookups = p.lookups.saturating_sub(count);
            if p.lookups == 0 {
                self.places.remove(&node);
            }
        }
    }

    /// Learn from a successful `op` and its `reply` (tagged handles as
    /// the kernel sees them).
    pub fn learn(&mut self, op: &Op, reply: &Reply) {
        match (op, reply) {
            (
                Op::Lookup { parent, name }
                | Op::MkNod { parent, name, .. }
                | Op::MkDir { parent, name, .. }
                | Op::Symlink { parent, name, .. },
                Reply::Entry { node, .. },
            )
            | (Op::Create { parent, name, .. }, Reply::Created { node, .. }) => {
                self.entry(*parent, name, *node)
            }
            (
                Op::Link {
                    new_parent,
                    new_name,
                    ..
                },
                Reply::Entry { node, .. },
            ) => self.entry(*new_parent, new_name, *node),
            (Op::OpenDir { node }, Reply::Opened { fh, .. }) => {
                self.dirs.insert(*fh, *node);
            }
            (Op::ReleaseDir { fh }, _) => {
                self.dirs.remove(fh);
            }
            (Op::ReadDir { fh, plus: true, .. }, Reply::Dir(entries)) => {
                if let Some(&dir) = self.dirs.get(fh) {
                    for e in entries {
                        if let Some((node, _)) = e.entry {
                            self.entry(dir, &e.name, node);
                        }
                    }
                }
            }
            (
                Op::Rename {
                    parent,
                    name,
                    new_parent,
                    new_name,
                    flags,
                },
                Reply::Done,
            ) => {
                let find = |places: &HashMap<u64, Place>, d: u64, n: &Bytes| {
                    places
                        .iter()
                        .find(|(_, p)| p.parent == d && p.name == *n)
                        .map(|(&id, _)| id)
                };
                let moved = find(&self.places, *parent, name);
                let other = find(&self.places, *new_parent, new_name);
                if let Some(m) = moved
                    && let Some(p) = self.places.get_mut(&m)
                {
                    p.parent = *new_parent;
                    p.name = new_name.clone();
                }
                if let Some(o) = other {
                    if *flags & libc::RENAME_EXCHANGE != 0 {
                        if let Some(p) = self.places.get_mut(&o) {
                            p.parent = *parent;
                            p.name = name.clone();
                        }
                    } else if Some(o) != moved {
                        // Replaced: its old name is the moved file's now.
                        self.places.remove(&o);
                    }
                }
            }
            _ => {}
        }
    }

    /// A node that a new session did not find again: its kernel inode
    /// stays stale (ESTALE).
    pub fn drop_node(&mut self, node: u64) {
        self.places.remove(&node);
    }

    /// Every known node as (node, parent, name), parents before
    /// children, to be looked up again in a new session. Nodes whose
    /// chain does not reach the root are left out (and dropped).
    pub fn replay_order(&mut self) -> Vec<(u64, u64, Bytes)> {
        let mut depth: HashMap<u64, usize> = HashMap::new();
        let ids: Vec<u64> = self.places.keys().copied().collect();
        for &id in &ids {
            let mut chain = Vec::new();
            let mut at = id;
            let d = loop {
                if at == ROOT_NODE {
                    break Some(0);
                }
                if let Some(&d) = depth.get(&at) {
                    break Some(d);
                }
                if chain.contains(&at) || chain.len() > self.places.len() {
                    break None;
                }
                chain.push(at);
                match self.places.get(&at) {
                    Some(p) => at = p.parent,
                    None => break None,
                }
            };
            if let Some(base) = d {
                for (i, n) in chain.iter().rev().enumerate() {
                    depth.insert(*n, base + i + 1);
                }
            }
        }
        self.places.retain(|id, _| depth.contains_key(id));
        let mut out: Vec<(u64, u64, Bytes)> = self
            .places
            .iter()
            .map(|(&id, p)| (id, p.parent, p.name.clone()))
            .collect();
        out.sort_by_key(|(id, _, _)| (depth[id], *id));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mosix_proto::view::Attr;

    fn b(s: &str) -> Bytes {
        Bytes(s.as_bytes().to_vec())
    }

    fn entry(node: u64) -> Reply {
        Reply::Entry {
            node,
            attr: crate::fs::placeholder_dir(node),
        }
    }

    fn lookup(n: &mut NodePaths, parent: u64, name: &str, node: u64) {
        n.learn(
            &Op::Lookup {
                parent,
                name: b(name),
            },
            &entry(node),
        );
    }

    #[test]
    fn handles_are_the_clients_and_stand_for_the_current_sessions() {
        let mut h = Handles::default();
        let a = h.add(20, libc::O_WRONLY | libc::O_TRUNC | libc::O_CREAT, false, 5);
        let b = h.add(21, 0, true, 5);
        assert_ne!(a, b);
        assert_eq!(h.home_fh(a), Some(5));
        h.lose_all();
        assert_eq!(h.home_fh(a), None);
        let all = h.all();
        let f = all.iter().find(|x| x.0 == a).unwrap().1;
        assert_eq!((f.node, f.flags, f.dir), (20, libc::O_WRONLY, false));
        h.reopened(a, Some(9));
        assert_eq!(h.home_fh(a), Some(9));
        assert_eq!(h.home_fh(b), None);
        h.remove(a);
        assert_eq!(h.home_fh(a), None);
    }

    #[test]
    fn replay_goes_parents_first_and_follows_renames() {
        let mut n = NodePaths::default();
        lookup(&mut n, ROOT_NODE, "srv", 10);
        lookup(&mut n, 10, "dir", 20);
        lookup(&mut n, 20, "a", 30);
        n.learn(
            &Op::Rename {
                parent: 20,
                name: b("a"),
                new_parent: 10,
                new_name: b("b"),
                flags: 0,
            },
            &Reply::Done,
        );
        let order = n.replay_order();
        let ids: Vec<u64> = order.iter().map(|o| o.0).collect();
        assert_eq!(ids[0], 10);
        let a = order.iter().find(|o| o.0 == 30).unwrap();
        assert_eq!((a.1, a.2.clone()), (10, b("b")));
    }

    #[test]
    fn forgotten_nodes_and_orphans_are_not_replayed() {
        let mut n = NodePaths::default();
        lookup(&mut n, ROOT_NODE, "srv", 10);
        lookup(&mut n, ROOT_NODE, "srv", 10);
        lookup(&mut n, 10, "x", 11);
        lookup(&mut n, 99, "lost", 12);
        n.forget(10, 1);
        n.forget(11, 1);
        let ids: Vec<u64> = n.replay_order().iter().map(|o| o.0).collect();
        assert_eq!(ids, vec![10]);
    }

    #[test]
    fn readdirplus_entries_are_placed_in_their_directory() {
        let mut n = NodePaths::default();
        lookup(&mut n, ROOT_NODE, "d", 10);
        let attr: Attr = crate::fs::placeholder_dir(40);
        n.learn(
            &Op::OpenDir { node: 10 },
            &Reply::Opened {
                fh: 5,
                keep_cache: false,
            },
        );
        n.learn(
            &Op::ReadDir {
                fh: 5,
                offset: 0,
                plus: true,
                max: 10,
            },
            &Reply::Dir(vec![mosix_proto::view::DirEntry {
                offset: 1,
                ino: 40,
                kind: 0,
                name: b("f"),
                entry: Some((40, attr)),
            }]),
        );
        let order = n.replay_order();
        assert_eq!(order.last().map(|o| (o.0, o.1)), Some((40, 10)));
    }
}
