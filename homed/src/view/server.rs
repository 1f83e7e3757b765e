//! The file operations of one view session, run by worker threads that
//! have become the session's user (see [`super::sys::become_user`]).
//!
//! Every file the remote kernel knows is a *node*: an `O_PATH` descriptor
//! opened by a lookup, like an NFS file handle. It keeps designating the
//! same file across renames, and files stay usable while open after being
//! deleted at home. Nothing is ever resolved by path from the top:
//!
//! - a lookup opens exactly one name component relative to its parent's
//!   descriptor with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//!   RESOLVE_NO_MAGICLINKS)` and `O_NOFOLLOW`, so neither `..` nor a
//!   symlink (followed or swapped in meanwhile) can lead anywhere else;
//!   names with `/`, `.` or `..` are refused with EINVAL;
//! - symlinks are never followed here: the remote kernel reads them
//!   (readlink) and resolves them itself, in the body's namespace, exactly
//!   as a program at home would;
//! - operations on a node itself (open, chmod, utimens, xattrs, link) go
//!   through `/proc/self/fd/<n>`, reopening the node's file, with the
//!   permission checks of the session's user.
//!
//! Each node remembers the home path it was looked up by, only to apply
//! the export [`Policy`]; a rename updates it.

use super::policy::{Policy, Visibility};
use super::sys;
use mosix_proto::view::{
    Attr, Bytes, DirEntry, MAX_IO, MAX_NAME, MAX_PATH, Op, ROOT_NODE, Reply, SetTime, StatFs, Time,
};
use nix::errno::Errno;
use nix::fcntl::{
    AT_FDCWD, AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2, readlinkat, renameat2,
};
use nix::sys::stat::{
    FchmodatFlags, FileStat, Mode, SFlag, UtimensatFlags, fchmodat, fstatat, mkdirat, mknodat,
    utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, linkat, symlinkat, unlinkat};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A file at home: (device, inode).
type FileKey = (u64, u64);

/// A file and a lock owner of the remote kernel.
type LockKey = (FileKey, u64);

/// One file known to the remote kernel.
struct Node {
    fd: Arc<OwnedFd>,
    path: PathBuf,
    vis: Visibility,
    key: (u64, u64),
    lookups: u64,
}

/// An open file or directory of the session.
enum Handle {
    File {
        file: Arc<File>,
        key: (u64, u64),
    },
    Dir {
        entries: Arc<Vec<DirEntry>>,
        node: u64,
    },
}

#[derive(Default)]
struct Nodes {
    by_id: HashMap<u64, Node>,
    by_key: HashMap<(u64, u64), u64>,
    next: u64,
}

/// The state of one session, shared by its workers.
pub struct Session {
    policy: Policy,
    nodes: Mutex<Nodes>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    /// (mtime, size) of each file when last opened or released here: the
    /// close-to-open check that decides whether a client may keep its cache.
    seen: Mutex<HashMap<(u64, u64), (Time, u64)>>,
    /// One open file description per (file, lock owner) holding that
    /// owner's POSIX locks as OFD locks, so processes at home see them;
    /// closed (dropping the locks) when the owner closes the file.
    locks: Mutex<HashMap<LockKey, Arc<File>>>,
}

type OpResult = Result<Reply, Errno>;

fn time(sec: i64, nsec: i64) -> Time {
    Time {
        sec,
        nsec: u32::try_from(nsec).unwrap_or(0).min(999_999_999),
    }
}

/// The inode number programs see: the home's, with the device folded into
/// the top bits so files of different home file systems never collide.
fn view_ino(dev: u64, ino: u64) -> u64 {
    let fold = (dev ^ (dev >> 16) ^ (dev >> 32) ^ (dev >> 48)) & 0xffff;
    ino ^ (fold << 48)
}

fn attr_of(st: &FileStat) -> Attr {
    Attr {
        ino: view_ino(st.st_dev, st.st_ino),
        mode: st.st_mode,
        nlink: u32::try_from(st.st_nlink).unwrap_or(u32::MAX),
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev,
        size: u64::try_from(st.st_size).unwrap_or(0),
        blocks: u64::try_from(st.st_blocks).unwrap_or(0),
        blksize: u32::try_from(st.st_blksize).unwrap_or(4096),
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
    }
}

/// Attributes of a known node: its `ino` is the node id, which is what
/// the remote kernel shows as `st_ino`.
fn node_attr(node: u64, st: &FileStat) -> Attr {
    Attr {
        ino: node,
        ..attr_of(st)
    }
}

fn stat_fd(fd: &impl AsFd) -> Result<FileStat, Errno> {
    fstatat(
        fd,
        "",
        AtFlags::AT_EMPTY_PATH | AtFlags::AT_SYMLINK_NOFOLLOW,
    )
}

/// Checks one name component from the network.
fn check_name(name: &Bytes) -> Result<&OsStr, Errno> {
    let b = name.0.as_slice();
    if b.len() > MAX_NAME {
        return Err(Errno::ENAMETOOLONG);
    }
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(Errno::EINVAL);
    }
    Ok(OsStr::from_bytes(b))
}

fn proc_name(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn beneath() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH
        | ResolveFlag::RESOLVE_NO_SYMLINKS
        | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

impl Session {
    /// A session serving `policy`, with the home's `/` as [`ROOT_NODE`].
    /// Call from a thread that is already the session's user.
    pub fn new(policy: Policy) -> Result<(Session, Attr), Errno> {
        let root = nix::fcntl::open(
            "/",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let st = stat_fd(&root)?;
        let vis = policy.classify(Path::new("/"));
        if vis == Visibility::Hidden {
            return Err(Errno::ENOENT);
        }
        let key = (st.st_dev, st.st_ino);
        let mut nodes = Nodes {
            next: ROOT_NODE + 1,
            ..Nodes::default()
        };
        nodes.by_id.insert(
            ROOT_NODE,
            Node {
                fd: Arc::new(root),
                path: PathBuf::from("/"),
                vis,
                key,
                lookups: 1,
            },
        );
        nodes.by_key.insert(key, ROOT_NODE);
        let session = Session {
            policy,
            nodes: Mutex::new(nodes),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            seen: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
        };
        Ok((session, node_attr(ROOT_NODE, &st)))
    }

    fn node(&self, id: u64) -> Result<(Arc<OwnedFd>, PathBuf, Visibility), Errno> {
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        let n = nodes.by_id.get(&id).ok_or(Errno::ESTALE)?;
        Ok((n.fd.clone(), n.path.clone(), n.vis))
    }

    fn file(&self, fh: u64) -> Result<(Arc<File>, (u64, u64)), Errno> {
        let handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        match handles.get(&fh) {
            Some(Handle::File { file, key }) => Ok((file.clone(), *key)),
            Some(Handle::Dir { .. }) => Err(Errno::EISDIR),
            None => Err(Errno::EBADF),
        }
    }

    fn add_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fh, h);
        fh
    }

    /// Registers a looked-up descriptor (one more lookup of its node).
    fn register(&self, fd: OwnedFd, path: PathBuf, vis: Visibility, st: &FileStat) -> u64 {
        let key = (st.st_dev, st.st_ino);
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&id) = nodes.by_key.get(&key)
            && let Some(n) = nodes.by_id.get_mut(&id)
        {
            n.lookups += 1;
            n.path = path;
            n.vis = vis;
            return id;
        }
        // The node id is the inode number programs see (FUSE shows node ids
        // as st_ino), unless it is taken: then a counter in the top half.
        let want = view_ino(key.0, key.1);
        let id = if want > ROOT_NODE && want < (1 << 63) && !nodes.by_id.contains_key(&want) {
            want
        } else {
            loop {
                let c = nodes.next | (1 << 63);
                nodes.next += 1;
                if !nodes.by_id.contains_key(&c) {
                    break c;
                }
            }
        };
        nodes.by_id.insert(
            id,
            Node {
                fd: Arc::new(fd),
                path,
                vis,
                key,
                lookups: 1,
            },
        );
        nodes.by_key.insert(key, id);
        id
    }

    /// Drops `count` lookups of `node`; its descriptor closes at zero.
    pub fn forget(&self, node: u64, count: u64) {
        if node == ROOT_NODE {
            return;
        }
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        let Some(n) = nodes.by_id.get_mut(&node) else {
            return;
        };
        n.lookups = n.lookups.saturating_sub(count);
        if n.lookups == 0 {
            let key = n.key;
            nodes.by_id.remove(&node);
            if nodes.by_key.get(&key) == Some(&node) {
                nodes.by_key.remove(&key);
            }
        }
    }

    /// The home path and visibility of `parent/name`, for an operation
    /// that changes the directory (refused outside the exported set).
    fn child_for_change(
        &self,
        parent: u64,
        name: &Bytes,
    ) -> Result<(Arc<OwnedFd>, PathBuf), Errno> {
        let name = check_name(name)?;
        let (pfd, ppath, pvis) = self.node(parent)?;
        let path = ppath.join(name);
        if pvis != Visibility::Visible || self.policy.classify(&path) != Visibility::Visible {
            return Err(Errno::EACCES);
        }
        Ok((pfd, path))
    }

    fn lookup(&self, parent: u64, name: &Bytes) -> Result<(u64, Attr), Errno> {
        let os = check_name(name)?;
        let (pfd, ppath, _) = self.node(parent)?;
        let path = ppath.join(os);
        let vis = self.policy.classify(&path);
        if vis == Visibility::Hidden {
            return Err(Errno::ENOENT);
        }
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
            .resolve(beneath());
        let fd = openat2(pfd.as_fd(), os, how)?;
        let st = stat_fd(&fd)?;
        if vis == Visibility::Passage
            && SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR
        {
            return Err(Errno::ENOENT);
        }
        let id = self.register(fd, path, vis, &st);
        Ok((id, node_attr(id, &st)))
    }

    fn getattr(&self, node: u64) -> Result<Attr, Errno> {
        let (fd, _, _) = self.node(node)?;
        Ok(node_attr(node, &stat_fd(&fd)?))
    }

    fn check_changeable(&self, node: u64) -> Result<Arc<OwnedFd>, Errno> {
        let (fd, _, vis) = self.node(node)?;
        if vis != Visibility::Visible {
            return Err(Errno::EACCES);
        }
        Ok(fd)
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &self,
        node: u64,
        fh: Option<u64>,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<SetTime>,
        mtime: Option<SetTime>,
    ) -> Result<Attr, Errno> {
        let fd = self.check_changeable(node)?;
        if uid.is_some() || gid.is_some() {
            fchownat(
                fd.as_fd(),
                "",
                uid.map(Uid::from_raw),
                gid.map(Gid::from_raw),
                AtFlags::AT_EMPTY_PATH | AtFlags::AT_SYMLINK_NOFOLLOW,
            )?;
        }
        if let Some(mode) = mode {
            fchmodat(
                AT_FDCWD,
                proc_name(&*fd).as_str(),
                Mode::from_bits_truncate(mode & 0o7777),
                FchmodatFlags::FollowSymlink,
            )?;
        }
        if let Some(size) = size {
            let len = i64::try_from(size).map_err(|_| Errno::EFBIG)?;
            let opened = match fh.map(|fh| self.file(fh)) {
                Some(Ok((file, _))) => file,
                _ => Arc::new(File::from(openat(
                    AT_FDCWD,
                    proc_name(&*fd).as_str(),
                    OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )?)),
            };
            nix::unistd::ftruncate(opened.as_fd(), len)?;
        }
        if atime.is_some() || mtime.is_some() {
            let ts = |t: Option<SetTime>| match t {
                None => TimeSpec::UTIME_OMIT,
                Some(SetTime::Now) => TimeSpec::UTIME_NOW,
                Some(SetTime::At(t)) => TimeSpec::new(t.sec, i64::from(t.nsec.min(999_999_999))),
            };
            utimensat(
                AT_FDCWD,
                proc_name(&*fd).as_str(),
                &ts(atime),
                &ts(mtime),
                UtimensatFlags::FollowSymlink,
            )?;
        }
        Ok(node_attr(node, &stat_fd(&*fd)?))
    }

    /// Looks up a name just created in `pfd`.
    fn entry_after_create(&self, pfd: &OwnedFd, path: PathBuf, name: &OsStr) -> OpResult {
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
            .resolve(beneath());
        let fd = openat2(pfd.as_fd(), name, how)?;
        let st = stat_fd(&fd)?;
        let node = self.register(fd, path, Visibility::Visible, &st);
        Ok(Reply::Entry {
            node,
            attr: node_attr(node, &st),
        })
    }

    fn open(&self, node: u64, flags: i32) -> OpResult {
        let (fd, _, vis) = self.node(node)?;
        // O_NOFOLLOW was for the caller's path, which its kernel resolved;
        // here it would trip on the /proc magic link. A symlink node itself
        // is never opened (what O_NOFOLLOW would say at home).
        match stat_fd(&*fd)?.st_mode & libc::S_IFMT {
            libc::S_IFREG | libc::S_IFDIR => {}
            libc::S_IFLNK => return Err(Errno::ELOOP),
            // FIFOs, sockets and devices are opened by the remote kernel
            // itself, never here: opening them at home would block a worker
            // (FIFO) or reach the home's devices.
            _ => return Err(Errno::ENXIO),
        }
        let mut oflags = OFlag::from_bits_truncate(flags)
            & !(OFlag::O_CREAT
                | OFlag::O_EXCL
                | OFlag::O_NOCTTY
                | OFlag::O_PATH
                | OFlag::O_NOFOLLOW);
        if vis != Visibility::Visible
            && (oflags.contains(OFlag::O_WRONLY)
                || oflags.contains(OFlag::O_RDWR)
                || oflags.contains(OFlag::O_TRUNC))
        {
            return Err(Errno::EACCES);
        }
        oflags |= OFlag::O_CLOEXEC;
        let file = File::from(openat(
            AT_FDCWD,
            proc_name(&*fd).as_str(),
            oflags,
            Mode::empty(),
        )?);
        let st = stat_fd(&file)?;
        let key = (st.st_dev, st.st_ino);
        let keep_cache = self.note_seen(key, &st);
        let fh = self.add_handle(Handle::File {
            file: Arc::new(file),
            key,
        });
        Ok(Reply::Opened { fh, keep_cache })
    }

    /// Records the file's (mtime, size); says whether it was unchanged.
    fn note_seen(&self, key: (u64, u64), st: &FileStat) -> bool {
        let now = (
            time(st.st_mtime, st.st_mtime_nsec),
            u64::try_from(st.st_size).unwrap_or(0),
        );
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let same = seen.get(&key) == Some(&now);
        seen.insert(key, now);
        same
    }

    fn create(&self, parent: u64, name: &Bytes, mode: u32, flags: i32) -> OpResult {
        let (pfd, path) = self.child_for_change(parent, name)?;
        let os = check_name(name)?;
        let oflags = (OFlag::from_bits_truncate(flags) & !(OFlag::O_NOCTTY | OFlag::O_PATH))
            | OFlag::O_CREAT
            | OFlag::O_CLOEXEC;
        let how = OpenHow::new()
            .flags(oflags)
            .mode(Mode::from_bits_truncate(mode & 0o7777))
            .resolve(beneath());
        let file = File::from(openat2(pfd.as_fd(), os, how)?);
        let st = stat_fd(&file)?;
        let path_fd = openat(
            AT_FDCWD,
            proc_name(&file).as_str(),
            OFlag::O_PATH | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let node = self.register(path_fd, path, Visibility::Visible, &st);
        let key = (st.st_dev, st.st_ino);
        self.note_seen(key, &st);
        let fh = self.add_handle(Handle::File {
            file: Arc::new(file),
            key,
        });
        Ok(Reply::Created {
            node,
            attr: node_attr(node, &st),
            fh,
        })
    }

    fn read(&self, fh: u64, offset: u64, size: u32) -> OpResult {
        if size > MAX_IO || offset > i64::MAX as u64 {
            return Err(Errno::EINVAL);
        }
        let (file, _) = self.file(fh)?;
        let mut buf = vec![0u8; size as usize];
        let mut got = 0;
        while got < buf.len() {
            match file.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if got > 0 => {
                    tracing::debug!(error = %e, "short read through the view");
                    break;
                }
                Err(e) => return Err(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))),
            }
        }
        buf.truncate(got);
        Ok(Reply::Data(Bytes(buf)))
    }

    fn write(&self, fh: u64, offset: u64, data: &[u8]) -> OpResult {
        if data.len() > MAX_IO as usize {
            return Err(Errno::EINVAL);
        }
        if offset > i64::MAX as u64 {
            return Err(Errno::EFBIG);
        }
        let (file, _) = self.file(fh)?;
        let mut done = 0;
        while done < data.len() {
            match file.write_at(&data[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) if done > 0 => break,
                Err(e) => return Err(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))),
            }
        }
        Ok(Reply::Written(u32::try_from(done).unwrap_or(u32::MAX)))
    }

    fn release(&self, fh: u64) -> OpResult {
        let h = self
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh);
        match h {
            Some(Handle::File { file, key }) => {
                if let Ok(st) = stat_fd(&*file) {
                    self.note_seen(key, &st);
                }
                Ok(Reply::Done)
            }
            Some(Handle::Dir { .. }) | None => Ok(Reply::Done),
        }
    }

    fn opendir(&self, node: u64) -> OpResult {
        let (fd, path, vis) = self.node(node)?;
        let dfd = openat(
            AT_FDCWD,
            proc_name(&*fd).as_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let st = stat_fd(&dfd)?;
        let dev = st.st_dev;
        // In the home's order, each with the home's own cookie as its
        // offset: a directory position taken at home (a migrated process's
        // open directory) continues at the same entry through the view.
        let mut entries = Vec::new();
        for e in sys::list_dir(dfd.as_raw_fd())? {
            let dot = e.name == b"." || e.name == b"..";
            let name = OsStr::from_bytes(&e.name);
            if !dot {
                let cvis = self.policy.classify(&path.join(name));
                if cvis == Visibility::Hidden {
                    continue;
                }
            }
            let kind = if dot {
                libc::S_IFDIR
            } else {
                match dtype_kind(e.dtype) {
                    Some(k) => k,
                    None => match fstatat(dfd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                        Ok(st) => st.st_mode & libc::S_IFMT,
                        Err(_) => continue,
                    },
                }
            };
            if !dot && vis == Visibility::Passage && kind != libc::S_IFDIR {
                continue;
            }
            entries.push(DirEntry {
                offset: e.off,
                ino: if dot {
                    view_ino(dev, st.st_ino)
                } else {
                    view_ino(dev, e.ino)
                },
                kind,
                name: Bytes(e.name),
                entry: None,
            });
        }
        let fh = self.add_handle(Handle::Dir {
            entries: Arc::new(entries),
            node,
        });
        Ok(Reply::Opened {
            fh,
            keep_cache: false,
        })
    }

    fn readdir(&self, fh: u64, offset: u64, plus: bool, max: u32) -> OpResult {
        let (entries, node) = {
            let handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
            match handles.get(&fh) {
                Some(Handle::Dir { entries, node }) => (entries.clone(), *node),
                Some(Handle::File { .. }) => return Err(Errno::ENOTDIR),
                None => return Err(Errno::EBADF),
            }
        };
        let start = dir_start(&entries, offset);
        let max = (max as usize).clamp(1, 4096);
        let mut out = Vec::new();
        for e in entries.iter().skip(start).take(max) {
            let mut e = e.clone();
            let dot = e.name.0 == b"." || e.name.0 == b"..";
            if plus && !dot {
                e.entry = self.lookup(node, &e.name).ok();
            }
            out.push(e);
        }
        Ok(Reply::Dir(out))
    }

    fn statfs(&self, node: u64) -> OpResult {
        let (fd, _, _) = self.node(node)?;
        let s = nix::sys::statvfs::fstatvfs(&*fd)?;
        Ok(Reply::StatFs(StatFs {
            blocks: s.blocks(),
            bfree: s.blocks_free(),
            bavail: s.blocks_available(),
            files: s.files(),
            ffree: s.files_free(),
            bsize: u32::try_from(s.block_size()).unwrap_or(4096),
            namelen: u32::try_from(s.name_max()).unwrap_or(255),
            frsize: u32::try_from(s.fragment_size()).unwrap_or(4096),
        }))
    }

    fn rename(
        &self,
        parent: u64,
        name: &Bytes,
        new_parent: u64,
        new_name: &Bytes,
        flags: u32,
    ) -> OpResult {
        let (pfd, _) = self.child_for_change(parent, name)?;
        let (npfd, npath) = self.child_for_change(new_parent, new_name)?;
        let allowed = libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE;
        if flags & !allowed != 0 {
            return Err(Errno::EINVAL);
        }
        let rflags = nix::fcntl::RenameFlags::from_bits_truncate(flags);
        let (old, new) = (check_name(name)?, check_name(new_name)?);
        renameat2(pfd.as_fd(), old, npfd.as_fd(), new, rflags)?;
        // Keep the moved node's policy path current.
        if let Ok(st) = fstatat(npfd.as_fd(), new, AtFlags::AT_SYMLINK_NOFOLLOW) {
            let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(&id) = nodes.by_key.get(&(st.st_dev, st.st_ino))
                && let Some(n) = nodes.by_id.get_mut(&id)
            {
                n.path = npath;
            }
        }
        Ok(Reply::Done)
    }

    /// The open file description holding `owner`'s locks on the file of
    /// handle `fh`, opened on first use with the handle's access mode.
    fn lock_file(&self, fh: u64, owner: u64) -> Result<Arc<File>, Errno> {
        let (file, key) = self.file(fh)?;
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = locks.get(&(key, owner)) {
            return Ok(f.clone());
        }
        let mode = nix::fcntl::fcntl(file.as_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
        let acc = OFlag::from_bits_truncate(mode) & OFlag::O_ACCMODE;
        let f = Arc::new(File::from(openat(
            AT_FDCWD,
            proc_name(&*file).as_str(),
            acc | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?));
        locks.insert((key, owner), f.clone());
        Ok(f)
    }

    fn flock(start: u64, end: u64, typ: i32) -> Result<libc::flock, Errno> {
        let typ = i16::try_from(typ).map_err(|_| Errno::EINVAL)?;
        if ![libc::F_RDLCK, libc::F_WRLCK, libc::F_UNLCK].contains(&(typ as i32)) || end < start {
            return Err(Errno::EINVAL);
        }
        let len = if end >= i64::MAX as u64 {
            0
        } else {
            i64::try_from(end - start + 1).map_err(|_| Errno::EINVAL)?
        };
        Ok(libc::flock {
            l_type: typ,
            l_whence: libc::SEEK_SET as i16,
            l_start: i64::try_from(start).map_err(|_| Errno::EINVAL)?,
            l_len: len,
            l_pid: 0,
        })
    }

    fn getlk(&self, fh: u64, owner: u64, start: u64, end: u64, typ: i32) -> OpResult {
        let f = self.lock_file(fh, owner)?;
        let mut fl = Self::flock(start, end, typ)?;
        nix::fcntl::fcntl(f.as_fd(), nix::fcntl::FcntlArg::F_OFD_GETLK(&mut fl))?;
        let (start, end) = lock_range(fl.l_start, fl.l_len);
        Ok(Reply::Lock {
            start,
            end,
            typ: i32::from(fl.l_type),
            pid: u32::try_from(fl.l_pid).unwrap_or(0),
        })
    }

    /// Takes or drops a lock; with `sleep` it blocks until granted, so
    /// callers run it on a thread of its own.
    pub fn setlk(
        &self,
        fh: u64,
        owner: u64,
        start: u64,
        end: u64,
        typ: i32,
        sleep: bool,
    ) -> Result<Reply, i32> {
        let run = || -> OpResult {
            let f = self.lock_file(fh, owner)?;
            let fl = Self::flock(start, end, typ)?;
            let arg = if sleep {
                nix::fcntl::FcntlArg::F_OFD_SETLKW(&fl)
            } else {
                nix::fcntl::FcntlArg::F_OFD_SETLK(&fl)
            };
            nix::fcntl::fcntl(f.as_fd(), arg)?;
            Ok(Reply::Done)
        };
        run().map_err(|e| e as i32)
    }

    fn flush(&self, fh: u64, owner: u64) -> OpResult {
        let (_, key) = self.file(fh)?;
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(key, owner));
        Ok(Reply::Done)
    }

    /// Runs one operation; `None` for operations without a response.
    pub fn handle(&self, op: Op) -> Option<Result<Reply, i32>> {
        let result: OpResult = match op {
            Op::Ping => Ok(Reply::Done),
            Op::Forget { node, count } => {
                self.forget(node, count);
                return None;
            }
            Op::Lookup { parent, name } => self
                .lookup(parent, &name)
                .map(|(node, attr)| Reply::Entry { node, attr }),
            Op::GetAttr { node } => self.getattr(node).map(Reply::Attr),
            Op::SetAttr {
                node,
                fh,
                mode,
                uid,
                gid,
                size,
                atime,
                mtime,
            } => self
                .setattr(node, fh, mode, uid, gid, size, atime, mtime)
                .map(Reply::Attr),
            Op::ReadLink { node } => self.node(node).and_then(|(fd, _, _)| {
                readlinkat(fd.as_fd(), "").map(|t| Reply::Data(Bytes(t.as_bytes().to_vec())))
            }),
            Op::MkNod {
                parent,
                name,
                mode,
                rdev,
            } => self
                .child_for_change(parent, &name)
                .and_then(|(pfd, path)| {
                    let os = check_name(&name)?;
                    let kind = SFlag::from_bits_truncate(mode & libc::S_IFMT);
                    mknodat(
                        pfd.as_fd(),
                        os,
                        kind,
                        Mode::from_bits_truncate(mode & 0o7777),
                        rdev,
                    )?;
                    self.entry_after_create(&pfd, path, os)
                }),
            Op::MkDir { parent, name, mode } => {
                self.child_for_change(parent, &name)
                    .and_then(|(pfd, path)| {
                        let os = check_name(&name)?;
                        mkdirat(pfd.as_fd(), os, Mode::from_bits_truncate(mode & 0o7777))?;
                        self.entry_after_create(&pfd, path, os)
                    })
            }
            Op::Unlink { parent, name } => {
                self.child_for_change(parent, &name).and_then(|(pfd, _)| {
                    unlinkat(pfd.as_fd(), check_name(&name)?, UnlinkatFlags::NoRemoveDir)?;
                    Ok(Reply::Done)
                })
            }
            Op::RmDir { parent, name } => {
                self.child_for_change(parent, &name).and_then(|(pfd, _)| {
                    unlinkat(pfd.as_fd(), check_name(&name)?, UnlinkatFlags::RemoveDir)?;
                    Ok(Reply::Done)
                })
            }
            Op::Symlink {
                parent,
                name,
                target,
            } => self
                .child_for_change(parent, &name)
                .and_then(|(pfd, path)| {
                    if target.0.is_empty() || target.0.len() > MAX_PATH || target.0.contains(&0) {
                        return Err(Errno::EINVAL);
                    }
                    let os = check_name(&name)?;
                    symlinkat(OsStr::from_bytes(&target.0), pfd.as_fd(), os)?;
                    self.entry_after_create(&pfd, path, os)
                }),
            Op::Rename {
                parent,
                name,
                new_parent,
                new_name,
                flags,
            } => self.rename(parent, &name, new_parent, &new_name, flags),
            Op::Link {
                node,
                new_parent,
                new_name,
            } => self.check_changeable(node).and_then(|fd| {
                let (npfd, npath) = self.child_for_change(new_parent, &new_name)?;
                let os = check_name(&new_name)?;
                linkat(
                    AT_FDCWD,
                    proc_name(&*fd).as_str(),
                    npfd.as_fd(),
                    os,
                    AtFlags::AT_SYMLINK_FOLLOW,
                )?;
                self.entry_after_create(&npfd, npath, os)
            }),
            Op::Open { node, flags } => self.open(node, flags),
            Op::Create {
                parent,
                name,
                mode,
                flags,
            } => self.create(parent, &name, mode, flags),
            Op::Read { fh, offset, size } => self.read(fh, offset, size),
            Op::Write { fh, offset, data } => self.write(fh, offset, &data.0),
            Op::Flush { fh, owner } => self.flush(fh, owner),
            Op::Access { node, mask } => self.node(node).and_then(|(fd, _, _)| {
                let mask = nix::unistd::AccessFlags::from_bits(mask).ok_or(Errno::EINVAL)?;
                nix::unistd::faccessat(AT_FDCWD, proc_name(&*fd).as_str(), mask, AtFlags::empty())?;
                Ok(Reply::Done)
            }),
            Op::Lseek { fh, offset, whence } => self.file(fh).and_then(|(f, _)| {
                let whence = match whence {
                    libc::SEEK_DATA => nix::unistd::Whence::SeekData,
                    libc::SEEK_HOLE => nix::unistd::Whence::SeekHole,
                    _ => return Err(Errno::EINVAL),
                };
                Ok(Reply::Offset(nix::unistd::lseek(
                    f.as_fd(),
                    offset,
                    whence,
                )?))
            }),
            Op::Fallocate {
                fh,
                offset,
                length,
                mode,
            } => self.file(fh).and_then(|(f, _)| {
                let off = i64::try_from(offset).map_err(|_| Errno::EFBIG)?;
                let len = i64::try_from(length).map_err(|_| Errno::EFBIG)?;
                let mode = nix::fcntl::FallocateFlags::from_bits(mode).ok_or(Errno::EOPNOTSUPP)?;
                nix::fcntl::fallocate(f.as_fd(), mode, off, len)?;
                Ok(Reply::Done)
            }),
            Op::FsyncDir { node, datasync } => self.node(node).and_then(|(fd, _, _)| {
                let d = openat(
                    AT_FDCWD,
                    proc_name(&*fd).as_str(),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )?;
                if datasync {
                    nix::unistd::fdatasync(&d)?;
                } else {
                    nix::unistd::fsync(&d)?;
                }
                Ok(Reply::Done)
            }),
            Op::GetLk {
                fh,
                owner,
                start,
                end,
                typ,
            } => self.getlk(fh, owner, start, end, typ),
            Op::SetLk {
                fh,
                owner,
                start,
                end,
                typ,
                sleep,
            } => return Some(self.setlk(fh, owner, start, end, typ, sleep)),
            Op::Fsync { fh, datasync } => self.file(fh).and_then(|(f, _)| {
                if datasync {
                    nix::unistd::fdatasync(f.as_fd())?;
                } else {
                    nix::unistd::fsync(f.as_fd())?;
                }
                Ok(Reply::Done)
            }),
            Op::Release { fh } | Op::ReleaseDir { fh } => self.release(fh),
            Op::OpenDir { node } => self.opendir(node),
            Op::ReadDir {
                fh,
                offset,
                plus,
                max,
            } => self.readdir(fh, offset, plus, max),
            Op::StatFs { node } => self.statfs(node),
            Op::GetXattr { node, name, size } => self.node(node).and_then(|(fd, _, _)| {
                let (n, data) =
                    sys::get_xattr(fd.as_raw_fd(), &name.0, (size.min(MAX_IO)) as usize)?;
                xattr_reply(size, n, data)
            }),
            Op::ListXattr { node, size } => self.node(node).and_then(|(fd, _, _)| {
                let (n, data) = sys::list_xattr(fd.as_raw_fd(), (size.min(MAX_IO)) as usize)?;
                xattr_reply(size, n, data)
            }),
            Op::SetXattr {
                node,
                name,
                value,
                flags,
            } => self.check_changeable(node).and_then(|fd| {
                if value.0.len() > MAX_IO as usize {
                    return Err(Errno::E2BIG);
                }
                sys::set_xattr(fd.as_raw_fd(), &name.0, &value.0, flags)?;
                Ok(Reply::Done)
            }),
            Op::RemoveXattr { node, name } => self.check_changeable(node).and_then(|fd| {
                sys::remove_xattr(fd.as_raw_fd(), &name.0)?;
                Ok(Reply::Done)
            }),
        };
        Some(result.map_err(|e| e as i32))
    }
}

fn xattr_reply(size: u32, n: usize, data: Vec<u8>) -> OpResult {
    if size == 0 {
        Ok(Reply::Size(u32::try_from(n).map_err(|_| Errno::E2BIG)?))
    } else {
        Ok(Reply::Data(Bytes(data)))
    }
}

/// The kernel's inclusive byte range (`start..=end`) of a lock that
/// F_OFD_GETLK reported as (`l_start`, `l_len`). "To the end of file"
/// (`l_len` 0) is `OFFSET_MAX` (`i64::MAX`), which is what the kernel
/// sends for it: FUSE fails a reply with a larger end with EIO.
fn lock_range(l_start: i64, l_len: i64) -> (u64, u64) {
    let max = i64::MAX as u64;
    let start = u64::try_from(l_start).unwrap_or(0).min(max);
    let end = match u64::try_from(l_len) {
        Ok(0) | Err(_) => max,
        Ok(len) => start.saturating_add(len - 1).min(max),
    };
    (start, end)
}

/// Where a listing continues for the kernel's `offset`: 0 is the start;
/// otherwise just after the entry whose home cookie it is. A cookie the
/// listing does not hold (its entry was hidden or is not there) ends it.
fn dir_start(entries: &[DirEntry], offset: u64) -> usize {
    if offset == 0 {
        return 0;
    }
    entries
        .iter()
        .position(|e| e.offset == offset)
        .map_or(entries.len(), |i| i + 1)
}

/// The `S_IFMT` bits for a `DT_*` type; None for `DT_UNKNOWN`.
fn dtype_kind(dtype: u8) -> Option<u32> {
    Some(match dtype {
        libc::DT_DIR => libc::S_IFDIR,
        libc::DT_LNK => libc::S_IFLNK,
        libc::DT_FIFO => libc::S_IFIFO,
        libc::DT_SOCK => libc::S_IFSOCK,
        libc::DT_CHR => libc::S_IFCHR,
        libc::DT_BLK => libc::S_IFBLK,
        libc::DT_REG => libc::S_IFREG,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_continue_after_the_entry_whose_cookie_is_asked() {
        let e = |offset: u64| DirEntry {
            offset,
            ino: 1,
            kind: libc::S_IFREG,
            name: Bytes(b"x".to_vec()),
            entry: None,
        };
        let entries = [e(7), e(3), e(12)];
        assert_eq!(dir_start(&entries, 0), 0);
        assert_eq!(dir_start(&entries, 7), 1);
        assert_eq!(dir_start(&entries, 3), 2);
        assert_eq!(dir_start(&entries, 12), 3);
        assert_eq!(dir_start(&entries, 99), 3);
    }

    #[test]
    fn names_from_the_network_are_single_components() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"/", b"x\0y"] {
            assert_eq!(
                check_name(&Bytes(bad.to_vec())),
                Err(Errno::EINVAL),
                "{bad:?}"
            );
        }
        assert_eq!(
            check_name(&Bytes(vec![b'a'; 256])),
            Err(Errno::ENAMETOOLONG)
        );
        assert!(check_name(&Bytes(b"...".to_vec())).is_ok());
        assert!(check_name(&Bytes(vec![0xff, 0xfe])).is_ok());
    }

    #[test]
    fn lock_ranges_end_at_offset_max_at_most() {
        let max = i64::MAX as u64;
        assert_eq!(lock_range(0, 0), (0, max));
        assert_eq!(lock_range(10, 5), (10, 14));
        assert_eq!(lock_range(100, 1), (100, 100));
        assert_eq!(lock_range(i64::MAX - 1, i64::MAX), (max - 1, max));
        assert_eq!(lock_range(-1, -1), (0, max));
    }

    #[test]
    fn view_inode_numbers_differ_across_devices() {
        assert_eq!(view_ino(0, 42), 42);
        assert_ne!(view_ino(2049, 42), view_ino(2050, 42));
    }

    /// Runs the operations as root in this test process (the session's user
    /// switch is tested end to end in tests/view.rs).
    #[test]
    fn operations_stay_inside_the_export_and_map_errors() {
        let dir = std::env::temp_dir().join(format!("mosix-view-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data/sub")).unwrap();
        std::fs::create_dir_all(dir.join("outside")).unwrap();
        std::fs::write(dir.join("outside/secret"), b"secret").unwrap();
        std::os::unix::fs::symlink("../outside/secret", dir.join("data/escape")).unwrap();
        let policy = Policy::new(&[dir.join("data")], &[]);
        let (s, _) = Session::new(policy).unwrap();
        // Walk down the passage directories.
        let mut node = ROOT_NODE;
        for comp in dir.join("data").components().skip(1) {
            let name = Bytes(comp.as_os_str().as_bytes().to_vec());
            node = s.lookup(node, &name).unwrap().0;
        }
        let data = node;
        // Sibling of the export: hidden.
        let (parent, _, _) = {
            let mut n = ROOT_NODE;
            for comp in dir.components().skip(1) {
                n = s
                    .lookup(n, &Bytes(comp.as_os_str().as_bytes().to_vec()))
                    .unwrap()
                    .0;
            }
            (n, (), ())
        };
        assert_eq!(
            s.lookup(parent, &Bytes(b"outside".to_vec())),
            Err(Errno::ENOENT)
        );
        assert_eq!(s.lookup(data, &Bytes(b"..".to_vec())), Err(Errno::EINVAL));
        // The symlink is an entry of its own; nothing follows it here.
        let (link, attr) = s.lookup(data, &Bytes(b"escape".to_vec())).unwrap();
        assert_eq!(attr.mode & libc::S_IFMT, libc::S_IFLNK);
        assert!(matches!(
            s.handle(Op::ReadLink { node: link }),
            Some(Ok(Reply::Data(t))) if t.0 == b"../outside/secret"
        ));
        assert_eq!(s.open(link, libc::O_RDONLY).unwrap_err(), Errno::ELOOP);
        // Creation in a passage directory is refused.
        assert_eq!(
            s.create(parent, &Bytes(b"new".to_vec()), 0o644, libc::O_WRONLY)
                .unwrap_err(),
            Errno::EACCES
        );
        // O_EXCL on an existing name.
        let Reply::Created { fh, .. } = s
            .create(
                data,
                &Bytes(b"f".to_vec()),
                0o600,
                libc::O_RDWR | libc::O_EXCL,
            )
            .unwrap()
        else {
            panic!("create did not create");
        };
        assert_eq!(
            s.create(
                data,
                &Bytes(b"f".to_vec()),
                0o600,
                libc::O_RDWR | libc::O_EXCL
            )
            .unwrap_err(),
            Errno::EEXIST
        );
        assert_eq!(s.write(fh, 0, b"hello").unwrap(), Reply::Written(5));
        assert_eq!(
            s.read(fh, 1, 100).unwrap(),
            Reply::Data(Bytes(b"ello".to_vec()))
        );
        assert_eq!(s.read(fh, u64::MAX, 10).unwrap_err(), Errno::EINVAL);
        assert_eq!(s.write(fh, u64::MAX - 1, b"xy").unwrap_err(), Errno::EFBIG);
        assert_eq!(s.read(fh, 0, MAX_IO + 1).unwrap_err(), Errno::EINVAL);
        s.release(fh).unwrap();
        assert_eq!(s.read(fh, 0, 1).unwrap_err(), Errno::EBADF);
        assert_eq!(s.getattr(9_999_999).unwrap_err(), Errno::ESTALE);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
