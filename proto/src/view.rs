//! Wire messages of the view (ARCHITECTURE.md section 6): the home's files on a
//! remote node, served by the home's `homed` over authenticated links.
//!
//! # Services
//!
//! The first message on a link to `homed`'s link port is a [`Service`]: it
//! says what the link is for, so `homed` can dispatch. A view session uses
//! **two** links, one per direction:
//!
//! - the *request* link opens with [`Service::View`] (the body owner's
//!   credentials and a random session token); the client then sends only
//!   [`Request`]s on it;
//! - the *reply* link opens with [`Service::ViewReplies`] carrying the same
//!   token; the server first sends one [`Opened`] on it, then only
//!   [`Response`]s.
//!
//! Why two links: [`crate::link::Link`] is a blocking wrapper whose send
//! and receive share one `&mut` state, so one link cannot be read by one
//! thread while another writes it. With a link per direction each end has a
//! dedicated reader and a dedicated writer, requests and replies flow at
//! the same time, and neither side can deadlock with both socket buffers
//! full. Both links are authenticated with the cluster key; the token only
//! pairs them.
//!
//! # Requests
//!
//! Every [`Request`] has an `id` chosen by the client; the [`Response`]
//! carries the same id, and responses come in any order (the server runs
//! operations in parallel). [`Op::Forget`] gets no response. Errors are
//! plain errno values, the same the caller would get at home.
//!
//! Nodes are the server's handles for files (like NFS file handles): node
//! [`ROOT_NODE`] is the root of the view; every [`Reply::Entry`] and
//! readdirplus entry counts as one lookup of its node, returned with
//! [`Op::Forget`].

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;

/// Node id of the view's root directory (FUSE's root id).
pub const ROOT_NODE: u64 = 1;

/// Largest read or write one request may carry; larger ones are refused.
pub const MAX_IO: u32 = 4 * 1024 * 1024;

/// Most supplementary groups a session may carry (Linux's NGROUPS_MAX).
pub const MAX_GROUPS: usize = 65536;

/// Longest file name component, in bytes (Linux's NAME_MAX).
pub const MAX_NAME: usize = 255;

/// Longest symlink target or xattr value carried, in bytes.
pub const MAX_PATH: usize = 4096;

/// Raw bytes carried as a MessagePack `bin` (not an array of integers),
/// for file data and names, which need not be UTF-8.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bytes(pub Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.len() <= 64 {
            write!(f, "b{:?}", String::from_utf8_lossy(&self.0))
        } else {
            write!(f, "<{} bytes>", self.0.len())
        }
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Bytes {
        Bytes(v)
    }
}

impl From<&[u8]> for Bytes {
    fn from(v: &[u8]) -> Bytes {
        Bytes(v.to_vec())
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Bytes, E> {
                Ok(Bytes(v.as_bytes().to_vec()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(Bytes(out))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// First message on a link to `homed`: which service the link is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    /// Opens a view session; this link then carries its [`Request`]s.
    View(ViewOpen),
    /// The reply link of the view session with this token.
    ViewReplies {
        /// The token sent in [`ViewOpen::session`].
        session: [u64; 2],
    },
}

/// Who the view acts for: the body owner, whose credentials the server
/// takes for every operation of the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewOpen {
    /// Random token pairing this link with its reply link.
    pub session: [u64; 2],
    /// The owner's user id (never 0: the view never acts as root).
    pub uid: u32,
    /// The owner's primary group id.
    pub gid: u32,
    /// The owner's supplementary groups.
    pub groups: Vec<u32>,
}

impl ViewOpen {
    /// Checks what the server relies on; returns why not.
    pub fn validate(&self) -> Result<(), String> {
        if self.uid == 0 {
            return Err("the view never acts as root: uid 0 is refused".into());
        }
        if self.uid == u32::MAX || self.gid == u32::MAX {
            return Err("uid or gid -1 is not a valid id".into());
        }
        if self.groups.len() > MAX_GROUPS {
            return Err(format!(
                "{} supplementary groups, at most {MAX_GROUPS}",
                self.groups.len()
            ));
        }
        if self.groups.contains(&u32::MAX) {
            return Err("supplementary group -1 is not a valid id".into());
        }
        Ok(())
    }
}

/// First message on the reply link: whether the session is up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Opened {
    /// The session is up; the root's attributes.
    Ready {
        /// Attributes of [`ROOT_NODE`].
        root: Attr,
    },
    /// The session was refused.
    Refused {
        /// Why, for the client's log and the user.
        message: String,
    },
}

/// A time as seconds and nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Time {
    /// Seconds since the epoch (negative before it).
    pub sec: i64,
    /// Nanoseconds, below 1e9.
    pub nsec: u32,
}

/// A time to set with [`Op::SetAttr`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetTime {
    /// The server's current time.
    Now,
    /// This time.
    At(Time),
}

/// File attributes as `stat` gives them at home.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attr {
    /// Inode number shown to programs (stable for a file, unique across the
    /// home's file systems).
    pub ino: u64,
    /// `st_mode`: type and permission bits.
    pub mode: u32,
    /// Hard links.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number for device files.
    pub rdev: u64,
    /// Size in bytes.
    pub size: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    /// Preferred I/O size.
    pub blksize: u32,
    /// Last access.
    pub atime: Time,
    /// Last modification.
    pub mtime: Time,
    /// Last status change.
    pub ctime: Time,
}

/// One request of a view session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the client; echoed in the [`Response`].
    pub id: u64,
    /// The operation.
    pub op: Op,
}

/// The operations of the view; each mirrors the FUSE operation of the
/// same name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Liveness check; answered with [`Reply::Done`].
    Ping,
    /// Looks up `name` in directory `parent`.
    Lookup {
        /// Directory node.
        parent: u64,
        /// One name component.
        name: Bytes,
    },
    /// The kernel dropped `count` lookups of `node`; no response.
    Forget {
        /// The node.
        node: u64,
        /// How many lookups to drop.
        count: u64,
    },
    /// Attributes of `node`.
    GetAttr {
        /// The node.
        node: u64,
    },
    /// Changes attributes (chmod, chown, truncate, utimens).
    SetAttr {
        /// The node.
        node: u64,
        /// An open handle of it, if the caller used one (ftruncate).
        fh: Option<u64>,
        /// New permission bits.
        mode: Option<u32>,
        /// New owner.
        uid: Option<u32>,
        /// New group.
        gid: Option<u32>,
        /// New size.
        size: Option<u64>,
        /// New access time.
        atime: Option<SetTime>,
        /// New modification time.
        mtime: Option<SetTime>,
    },
    /// Target of symlink `node`.
    ReadLink {
        /// The node.
        node: u64,
    },
    /// Creates a special or regular file (mknod).
    MkNod {
        /// Directory node.
        parent: u64,
        /// New name.
        name: Bytes,
        /// Type and permission bits, umask already applied.
        mode: u32,
        /// Device number.
        rdev: u64,
    },
    /// Creates a directory.
    MkDir {
        /// Directory node.
        parent: u64,
        /// New name.
        name: Bytes,
        /// Permission bits, umask already applied.
        mode: u32,
    },
    /// Removes a non-directory.
    Unlink {
        /// Directory node.
        parent: u64,
        /// Name to remove.
        name: Bytes,
    },
    /// Removes an empty directory.
    RmDir {
        /// Directory node.
        parent: u64,
        /// Name to remove.
        name: Bytes,
    },
    /// Creates a symlink `name` -> `target`.
    Symlink {
        /// Directory node.
        parent: u64,
        /// New name.
        name: Bytes,
        /// Link target, stored as is.
        target: Bytes,
    },
    /// renameat2.
    Rename {
        /// Old directory.
        parent: u64,
        /// Old name.
        name: Bytes,
        /// New directory.
        new_parent: u64,
        /// New name.
        new_name: Bytes,
        /// RENAME_NOREPLACE / RENAME_EXCHANGE.
        flags: u32,
    },
    /// Hard link to `node` as `new_parent/new_name`.
    Link {
        /// Existing node.
        node: u64,
        /// Directory of the new name.
        new_parent: u64,
        /// New name.
        new_name: Bytes,
    },
    /// Opens `node` with open(2) flags.
    Open {
        /// The node.
        node: u64,
        /// open(2) flags (O_CREAT/O_EXCL are ignored here).
        flags: i32,
    },
    /// Creates and opens `name` (O_CREAT, honouring O_EXCL).
    Create {
        /// Directory node.
        parent: u64,
        /// New name.
        name: Bytes,
        /// Permission bits, umask already applied.
        mode: u32,
        /// open(2) flags.
        flags: i32,
    },
    /// pread.
    Read {
        /// Open handle.
        fh: u64,
        /// Offset.
        offset: u64,
        /// Bytes wanted, at most [`MAX_IO`].
        size: u32,
    },
    /// pwrite (appends if the handle has O_APPEND).
    Write {
        /// Open handle.
        fh: u64,
        /// Offset.
        offset: u64,
        /// The data, at most [`MAX_IO`] bytes.
        data: Bytes,
    },
    /// close(2) of one of the caller's descriptors (a close-to-open point);
    /// drops the POSIX locks `owner` holds on the file, as close does.
    Flush {
        /// Open handle.
        fh: u64,
        /// The closing process's lock owner.
        owner: u64,
    },
    /// access(2) with the owner's real ids.
    Access {
        /// The node.
        node: u64,
        /// R_OK/W_OK/X_OK/F_OK.
        mask: i32,
    },
    /// lseek(2) with SEEK_DATA / SEEK_HOLE (others are the client's).
    Lseek {
        /// Open handle.
        fh: u64,
        /// Offset to start from.
        offset: i64,
        /// SEEK_DATA or SEEK_HOLE.
        whence: i32,
    },
    /// fallocate(2).
    Fallocate {
        /// Open handle.
        fh: u64,
        /// Offset.
        offset: u64,
        /// Length.
        length: u64,
        /// fallocate mode flags.
        mode: i32,
    },
    /// fsync of a directory.
    FsyncDir {
        /// The directory node.
        node: u64,
        /// fdatasync only.
        datasync: bool,
    },
    /// fcntl(F_GETLK): the first lock that would block this one.
    GetLk {
        /// Open handle.
        fh: u64,
        /// The asking process's lock owner.
        owner: u64,
        /// First byte.
        start: u64,
        /// Last byte, inclusive (`u64::MAX`: to the end).
        end: u64,
        /// F_RDLCK / F_WRLCK.
        typ: i32,
    },
    /// fcntl(F_SETLK / F_SETLKW): takes or drops a POSIX record lock that
    /// processes at home see.
    SetLk {
        /// Open handle.
        fh: u64,
        /// The locking process's lock owner.
        owner: u64,
        /// First byte.
        start: u64,
        /// Last byte, inclusive (`u64::MAX`: to the end).
        end: u64,
        /// F_RDLCK / F_WRLCK / F_UNLCK.
        typ: i32,
        /// Wait for a conflicting lock to go (F_SETLKW).
        sleep: bool,
    },
    /// fsync / fdatasync.
    Fsync {
        /// Open handle.
        fh: u64,
        /// fdatasync only.
        datasync: bool,
    },
    /// Last close of the handle.
    Release {
        /// Open handle.
        fh: u64,
    },
    /// Opens a directory for listing.
    OpenDir {
        /// The node.
        node: u64,
    },
    /// Lists entries of an open directory from `offset` (0 = start).
    ReadDir {
        /// Directory handle.
        fh: u64,
        /// Offset of the first entry wanted, from an earlier entry.
        offset: u64,
        /// Also look up each entry (readdirplus): counts as a lookup.
        plus: bool,
        /// Most entries wanted.
        max: u32,
    },
    /// Closes a directory handle.
    ReleaseDir {
        /// Directory handle.
        fh: u64,
    },
    /// statfs of the file system holding `node`.
    StatFs {
        /// The node.
        node: u64,
    },
    /// getxattr; `size` 0 asks for the value's size.
    GetXattr {
        /// The node.
        node: u64,
        /// Attribute name.
        name: Bytes,
        /// Buffer size of the caller.
        size: u32,
    },
    /// listxattr; `size` 0 asks for the list's size.
    ListXattr {
        /// The node.
        node: u64,
        /// Buffer size of the caller.
        size: u32,
    },
    /// setxattr.
    SetXattr {
        /// The node.
        node: u64,
        /// Attribute name.
        name: Bytes,
        /// Value.
        value: Bytes,
        /// XATTR_CREATE / XATTR_REPLACE.
        flags: i32,
    },
    /// removexattr.
    RemoveXattr {
        /// The node.
        node: u64,
        /// Attribute name.
        name: Bytes,
    },
}

/// What the server answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The [`Request::id`] answered.
    pub id: u64,
    /// The result, or the errno the caller would get at home.
    pub result: Result<Reply, i32>,
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirEntry {
    /// Offset to ask for to continue after this entry.
    pub offset: u64,
    /// Inode number shown to programs.
    pub ino: u64,
    /// The `st_mode` type bits (`S_IFMT` part).
    pub kind: u32,
    /// The name.
    pub name: Bytes,
    /// For readdirplus: the looked-up node and its attributes (absent for
    /// `.` and `..`, and for entries that vanished meanwhile).
    pub entry: Option<(u64, Attr)>,
}

/// File system statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatFs {
    /// Total blocks.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Blocks available to unprivileged users.
    pub bavail: u64,
    /// Total inodes.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Block size.
    pub bsize: u32,
    /// Longest name.
    pub namelen: u32,
    /// Fragment size.
    pub frsize: u32,
}

/// Successful results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// Success without data.
    Done,
    /// A looked-up or created node (counts as one lookup).
    Entry {
        /// The node.
        node: u64,
        /// Its attributes.
        attr: Attr,
    },
    /// Attributes.
    Attr(Attr),
    /// Data read, a symlink target, or an xattr value/list.
    Data(Bytes),
    /// Size of an xattr value or list (for `size` 0 requests).
    Size(u32),
    /// An open handle.
    Opened {
        /// The handle.
        fh: u64,
        /// Whether the file is unchanged since the last open through this
        /// view, so the client may keep its page cache (close-to-open).
        keep_cache: bool,
    },
    /// A created and opened file (counts as one lookup).
    Created {
        /// The node.
        node: u64,
        /// Its attributes.
        attr: Attr,
        /// The open handle.
        fh: u64,
    },
    /// Bytes written.
    Written(u32),
    /// A file offset (lseek).
    Offset(i64),
    /// Directory entries; empty at the end.
    Dir(Vec<DirEntry>),
    /// A conflicting lock (F_GETLK); `typ` F_UNLCK if none.
    Lock {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: u64,
        /// F_RDLCK / F_WRLCK / F_UNLCK.
        typ: i32,
        /// Holder's pid at home (0 if unknown or an open-file lock).
        pid: u32,
    },
    /// File system statistics.
    StatFs(StatFs),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::{decode, encode};

    #[test]
    fn bytes_travel_as_bin_and_round_trip() {
        let r = Request {
            id: 7,
            op: Op::Write {
                fh: 3,
                offset: 1 << 40,
                data: Bytes(vec![0xff; 1000]),
            },
        };
        let enc = encode(&r).unwrap();
        // A bin of 1000 bytes costs ~1003 bytes; an int array would be ~2000.
        assert!(enc.len() < 1100, "{}", enc.len());
        assert_eq!(decode::<Request>(&enc).unwrap(), r);
    }

    #[test]
    fn responses_round_trip_with_errors() {
        for result in [
            Err(libc::EACCES),
            Ok(Reply::Written(5)),
            Ok(Reply::Opened {
                fh: 1,
                keep_cache: true,
            }),
        ] {
            let r = Response { id: 1, result };
            assert_eq!(decode::<Response>(&encode(&r).unwrap()).unwrap(), r);
        }
    }

    #[test]
    fn view_open_refuses_root_and_bad_ids() {
        let ok = ViewOpen {
            session: [1, 2],
            uid: 1000,
            gid: 1000,
            groups: vec![1000, 27],
        };
        assert!(ok.validate().is_ok());
        let mut root = ok.clone();
        root.uid = 0;
        assert!(root.validate().unwrap_err().contains("root"));
        let mut bad = ok.clone();
        bad.groups.push(u32::MAX);
        assert!(bad.validate().is_err());
        let svc = Service::View(ok);
        assert_eq!(decode::<Service>(&encode(&svc).unwrap()).unwrap(), svc);
    }

    #[test]
    fn garbage_does_not_decode_into_a_request() {
        assert!(decode::<Request>(&[0x93, 1, 2, 3]).is_err());
        assert!(decode::<Service>(b"\xa4junk").is_err());
    }
}
