//! The FUSE file system of the view: each kernel request becomes one
//! [`Op`] sent through the [`ViewClient`]; results come back as the errno
//! the home gave.

use crate::client::ViewClient;
use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl,
    ReplyLock, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};
use mosix_proto::view::{Attr, Bytes, MAX_IO, Op, Reply, SetTime, Time};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the kernel may trust names and attributes before asking the
/// home again (NFS's `acregmin`-like attribute timeout).
pub const ATTR_TTL: Duration = Duration::from_secs(1);

/// Largest write the kernel sends in one request.
pub const MAX_WRITE: u32 = 1024 * 1024;

/// Entries asked for per readdir round trip.
const DIR_BATCH: u32 = 512;

/// The view as a [`fuser::Filesystem`].
#[derive(Debug)]
pub struct ViewFs {
    client: Arc<ViewClient>,
}

impl ViewFs {
    /// A file system forwarding to `client`.
    pub fn new(client: Arc<ViewClient>) -> ViewFs {
        ViewFs { client }
    }

    fn call(&self, op: Op) -> Result<Reply, Errno> {
        self.client.call(op).map_err(Errno::from_i32)
    }
}

/// A reply of the wrong kind: the home is broken or not ours.
fn bad_reply(what: &str, got: &Reply) -> Errno {
    tracing::warn!(op = what, reply = ?std::mem::discriminant(got), "the home answered with a reply of the wrong kind");
    Errno::EIO
}

fn system_time(t: Time) -> SystemTime {
    // Checked: a time from the network must not overflow SystemTime.
    let nanos = Duration::from_nanos(u64::from(t.nsec.min(999_999_999)));
    let secs = Duration::from_secs(t.sec.unsigned_abs());
    let base = if t.sec >= 0 {
        UNIX_EPOCH.checked_add(secs)
    } else {
        UNIX_EPOCH.checked_sub(secs)
    };
    base.and_then(|b| b.checked_add(nanos))
        .unwrap_or(UNIX_EPOCH)
}

fn wire_time(t: SystemTime) -> Time {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Time {
            sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nsec: d.subsec_nanos(),
        },
        Err(e) => {
            let d = e.duration();
            let mut sec = -i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            let mut nsec = d.subsec_nanos();
            if nsec > 0 {
                sec -= 1;
                nsec = 1_000_000_000 - nsec;
            }
            Time { sec, nsec }
        }
    }
}

fn set_time(t: Option<TimeOrNow>) -> Option<SetTime> {
    t.map(|t| match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(t) => SetTime::At(wire_time(t)),
    })
}

fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

/// The kernel's attributes for a home [`Attr`].
pub fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: system_time(a.atime),
        mtime: system_time(a.mtime),
        ctime: system_time(a.ctime),
        crtime: system_time(a.ctime),
        kind: kind_of(a.mode),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev as u32,
        blksize: a.blksize,
        flags: 0,
    }
}

fn name(n: &OsStr) -> Bytes {
    Bytes(n.as_bytes().to_vec())
}

fn reply_entry(r: Result<Reply, Errno>, reply: ReplyEntry, what: &str) {
    match r {
        Ok(Reply::Entry { node, attr }) if node == attr.ino => {
            reply.entry(&ATTR_TTL, &file_attr(&attr), Generation(0));
        }
        Ok(other) => reply.error(bad_reply(what, &other)),
        Err(e) => reply.error(e),
    }
}

fn reply_empty(r: Result<Reply, Errno>, reply: ReplyEmpty, what: &str) {
    match r {
        Ok(Reply::Done) => reply.ok(),
        Ok(other) => reply.error(bad_reply(what, &other)),
        Err(e) => reply.error(e),
    }
}

fn reply_xattr(r: Result<Reply, Errno>, reply: ReplyXattr, size: u32) {
    match r {
        Ok(Reply::Size(n)) if size == 0 => reply.size(n),
        Ok(Reply::Data(d)) if size != 0 && d.0.len() <= size as usize => reply.data(&d.0),
        Ok(other) => reply.error(bad_reply("xattr", &other)),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for ViewFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(nearest) = config.set_max_write(MAX_WRITE) {
            let _ = config.set_max_write(nearest);
        }
        if let Err(nearest) = config.set_max_readahead(MAX_WRITE) {
            let _ = config.set_max_readahead(nearest);
        }
        let _ = config.set_max_background(64);
        // Each capability on its own: an older kernel lacking one still mounts.
        for cap in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_AUTO_INVAL_DATA,
            InitFlags::FUSE_ATOMIC_O_TRUNC,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_BIG_WRITES,
            InitFlags::FUSE_ASYNC_READ,
            InitFlags::FUSE_POSIX_LOCKS,
        ] {
            let _ = config.add_capabilities(cap);
        }
        Ok(())
    }

    fn destroy(&mut self) {
        self.client.shutdown();
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, n: &OsStr, reply: ReplyEntry) {
        let r = self.call(Op::Lookup {
            parent: parent.0,
            name: name(n),
        });
        reply_entry(r, reply, "lookup");
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.client.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.call(Op::GetAttr { node: ino.0 }) {
            Ok(Reply::Attr(a)) => reply.attr(&ATTR_TTL, &file_attr(&a)),
            Ok(other) => reply.error(bad_reply("getattr", &other)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let r = self.call(Op::SetAttr {
            node: ino.0,
            fh: fh.map(|f| f.0),
            mode,
            uid,
            gid,
            size,
            atime: set_time(atime),
            mtime: set_time(mtime),
        });
        match r {
            Ok(Reply::Attr(a)) => reply.attr(&ATTR_TTL, &file_attr(&a)),
            Ok(other) => reply.error(bad_reply("setattr", &other)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.call(Op::ReadLink { node: ino.0 }) {
            Ok(Reply::Data(d)) => reply.data(&d.0),
            Ok(other) => reply.error(bad_reply("readlink", &other)),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        n: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let r = self.call(Op::MkNod {
            parent: parent.0,
            name: name(n),
            mode,
            rdev: u64::from(rdev),
        });
        reply_entry(r, reply, "mknod");
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        n: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let r = self.call(Op::MkDir {
            parent: parent.0,
            name: name(n),
            mode,
        });
        reply_entry(r, reply, "mkdir");
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, n: &OsStr, reply: ReplyEmpty) {
        let r = self.call(Op::Unlink {
            parent: parent.0,
            name: name(n),
        });
        reply_empty(r, reply, "unlink");
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, n: &OsStr, reply: ReplyEmpty) {
        let r = self.call(Op::RmDir {
            parent: parent.0,
            name: name(n),
        });
        reply_empty(r, reply, "rmdir");
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let r = self.call(Op::Symlink {
            parent: parent.0,
            name: name(link_name),
            target: Bytes(target.as_os_str().as_bytes().to_vec()),
        });
        reply_entry(r, reply, "symlink");
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        n: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = self.call(Op::Rename {
            parent: parent.0,
            name: name(n),
            new_parent: newparent.0,
            new_name: name(newname),
            flags: flags.bits(),
        });
        reply_empty(r, reply, "rename");
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let r = self.call(Op::Link {
            node: ino.0,
            new_parent: newparent.0,
            new_name: name(newname),
        });
        reply_entry(r, reply, "link");
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.call(Op::Open {
            node: ino.0,
            flags: flags.0,
        }) {
            Ok(Reply::Opened { fh, keep_cache }) => {
                let f = if keep_cache {
                    FopenFlags::FOPEN_KEEP_CACHE
                } else {
                    FopenFlags::empty()
                };
                reply.opened(FileHandle(fh), f);
            }
            Ok(other) => reply.error(bad_reply("open", &other)),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.call(Op::Read {
            fh: fh.0,
            offset,
            size: size.min(MAX_IO),
        }) {
            Ok(Reply::Data(d)) if d.0.len() <= size as usize => reply.data(&d.0),
            Ok(other) => reply.error(bad_reply("read", &other)),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.call(Op::Write {
            fh: fh.0,
            offset,
            data: Bytes(data.to_vec()),
        }) {
            Ok(Reply::Written(n)) if n as usize <= data.len() => reply.written(n),
            Ok(other) => reply.error(bad_reply("write", &other)),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Closing any fd of a file drops the owner's locks on it, here
        // (the home drops them on this flush) as at home.
        self.client.locks().closed(ino.0, lock_owner.0);
        let r = self.call(Op::Flush {
            fh: fh.0,
            owner: lock_owner.0,
        });
        reply_empty(r, reply, "flush");
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match self.call(Op::Lseek {
            fh: fh.0,
            offset,
            whence,
        }) {
            Ok(Reply::Offset(o)) => reply.offset(o),
            Ok(other) => reply.error(bad_reply("lseek", &other)),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let r = self.call(Op::Fallocate {
            fh: fh.0,
            offset,
            length,
            mode,
        });
        reply_empty(r, reply, "fallocate");
    }

    /// No ioctl reaches the home: the answer for a file without any.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    /// ENOSYS makes the kernel copy with reads and writes instead, once and
    /// for all on this mount.
    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::ENOSYS);
    }

    /// ENOSYS makes the kernel treat view files as always ready, like
    /// regular files on a local disk.
    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ph: fuser::PollNotifier,
        _events: fuser::PollEvents,
        _flags: fuser::PollFlags,
        reply: fuser::ReplyPoll,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let r = self.call(Op::Access {
            node: ino.0,
            mask: mask.bits(),
        });
        reply_empty(r, reply, "access");
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.call(Op::FsyncDir {
            node: ino.0,
            datasync,
        });
        reply_empty(r, reply, "fsyncdir");
    }

    fn getlk(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        _pid: u32,
        reply: ReplyLock,
    ) {
        let r = self.call(Op::GetLk {
            fh: fh.0,
            owner: lock_owner.0,
            start,
            end,
            typ,
        });
        match r {
            Ok(Reply::Lock {
                start,
                end,
                typ,
                pid,
            }) => reply.locked(start, end, typ, pid),
            Ok(other) => reply.error(bad_reply("getlk", &other)),
            Err(e) => reply.error(e),
        }
    }

    fn setlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.call(Op::SetLk {
            fh: fh.0,
            owner: lock_owner.0,
            start,
            end,
            typ,
            sleep,
        });
        if let Ok(Reply::Done) = r {
            self.client
                .locks()
                .granted(ino.0, lock_owner.0, pid, typ, start, end);
        }
        reply_empty(r, reply, "setlk");
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(self.call(Op::Release { fh: fh.0 }), reply, "release");
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(self.call(Op::Fsync { fh: fh.0, datasync }), reply, "fsync");
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.call(Op::OpenDir { node: ino.0 }) {
            Ok(Reply::Opened { fh, .. }) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Ok(other) => reply.error(bad_reply("opendir", &other)),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.call(Op::ReadDir {
            fh: fh.0,
            offset,
            plus: false,
            max: DIR_BATCH,
        }) {
            Ok(Reply::Dir(entries)) => {
                for e in entries {
                    if reply.add(
                        INodeNo(e.ino),
                        e.offset,
                        kind_of(e.kind),
                        OsStr::from_bytes(&e.name.0),
                    ) {
                        break;
                    }
                }
                reply.ok();
            }
            Ok(other) => reply.error(bad_reply("readdir", &other)),
            Err(e) => reply.error(e),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        match self.call(Op::ReadDir {
            fh: fh.0,
            offset,
            plus: true,
            max: DIR_BATCH,
        }) {
            Ok(Reply::Dir(entries)) => {
                let mut full = false;
                for e in entries {
                    let name = OsStr::from_bytes(&e.name.0);
                    let dot = e.name.0 == b"." || e.name.0 == b"..";
                    match e.entry {
                        // Entries that did not fit were looked up at home
                        // all the same: give those lookups back.
                        Some((node, attr)) => {
                            let added = !full
                                && node == attr.ino
                                && !reply.add(
                                    INodeNo(node),
                                    e.offset,
                                    name,
                                    &ATTR_TTL,
                                    &file_attr(&attr),
                                    Generation(0),
                                );
                            if !added {
                                full = true;
                                self.client.forget(node, 1);
                            }
                        }
                        // The kernel does not instantiate `.` and `..`.
                        None if dot && !full => {
                            let attr = file_attr(&placeholder_dir(e.ino));
                            full = reply.add(
                                INodeNo(e.ino),
                                e.offset,
                                name,
                                &Duration::ZERO,
                                &attr,
                                Generation(0),
                            );
                        }
                        None => {}
                    }
                }
                reply.ok();
            }
            Ok(other) => reply.error(bad_reply("readdirplus", &other)),
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        reply_empty(self.call(Op::ReleaseDir { fh: fh.0 }), reply, "releasedir");
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        match self.call(Op::StatFs { node: ino.0 }) {
            Ok(Reply::StatFs(s)) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            ),
            Ok(other) => reply.error(bad_reply("statfs", &other)),
            Err(e) => reply.error(e),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        n: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let r = self.call(Op::SetXattr {
            node: ino.0,
            name: name(n),
            value: Bytes(value.to_vec()),
            flags,
        });
        reply_empty(r, reply, "setxattr");
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, n: &OsStr, size: u32, reply: ReplyXattr) {
        let r = self.call(Op::GetXattr {
            node: ino.0,
            name: name(n),
            size,
        });
        reply_xattr(r, reply, size);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let r = self.call(Op::ListXattr { node: ino.0, size });
        reply_xattr(r, reply, size);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, n: &OsStr, reply: ReplyEmpty) {
        let r = self.call(Op::RemoveXattr {
            node: ino.0,
            name: name(n),
        });
        reply_empty(r, reply, "removexattr");
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        n: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let r = self.call(Op::Create {
            parent: parent.0,
            name: name(n),
            mode,
            flags,
        });
        match r {
            Ok(Reply::Created { node, attr, fh }) if node == attr.ino => {
                reply.created(
                    &ATTR_TTL,
                    &file_attr(&attr),
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                );
            }
            Ok(other) => reply.error(bad_reply("create", &other)),
            Err(e) => reply.error(e),
        }
    }
}

/// Attributes for `.`/`..` in readdirplus, which the kernel never uses
/// beyond the type.
pub(crate) fn placeholder_dir(ino: u64) -> Attr {
    let t = Time { sec: 0, nsec: 0 };
    Attr {
        ino,
        mode: libc::S_IFDIR | 0o755,
        nlink: 2,
        uid: 0,
        gid: 0,
        rdev: 0,
        size: 0,
        blocks: 0,
        blksize: 4096,
        atime: t,
        mtime: t,
        ctime: t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_including_before_the_epoch() {
        for t in [
            Time { sec: 0, nsec: 0 },
            Time {
                sec: 1_700_000_000,
                nsec: 123_456_789,
            },
            Time {
                sec: -5,
                nsec: 250_000_000,
            },
        ] {
            assert_eq!(wire_time(system_time(t)), t);
        }
        // Extreme times from the network convert without overflowing.
        let far = Time {
            sec: i64::MAX,
            nsec: 999_999_999,
        };
        assert_eq!(wire_time(system_time(far)), far);
        let _ = system_time(Time {
            sec: i64::MIN,
            nsec: 999_999_999,
        });
    }

    #[test]
    fn attributes_keep_type_and_permission_bits() {
        let mut a = placeholder_dir(9);
        a.mode = libc::S_IFREG | 0o4750;
        let f = file_attr(&a);
        assert_eq!(f.kind, FileType::RegularFile);
        assert_eq!(f.perm, 0o4750);
        assert_eq!(f.ino, INodeNo(9));
        a.mode = libc::S_IFLNK | 0o777;
        assert_eq!(file_attr(&a).kind, FileType::Symlink);
    }
}
