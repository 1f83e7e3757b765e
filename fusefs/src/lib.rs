//! The view (ARCHITECTURE.md section 6): a FUSE file system on a remote node that
//! shows a home node's exported files, every operation forwarded over
//! authenticated links to that home's `homed` (whose server side lives in
//! `mosix_homed::view`), which performs it with the body owner's
//! credentials.
//!
//! # Consistency: NFS-like close-to-open
//!
//! - **Names and attributes** are cached by the kernel for [`fs::ATTR_TTL`]
//!   (1 s), like NFS's attribute cache: a change made at home shows up
//!   through the view within a second, and at once for a file opened after
//!   the change (open always asks the home).
//! - **File data** stays in the remote kernel's page cache across opens
//!   only while the file is unchanged: at each open the home compares the
//!   file's (mtime, size) with what it was at the last open or close
//!   through this session and lets the client keep its cache
//!   (`FOPEN_KEEP_CACHE`) only if they match; otherwise the kernel drops
//!   the cached pages. `FUSE_AUTO_INVAL_DATA` also drops them when a
//!   refreshed attribute shows a new mtime. So a reader that opens a file
//!   after a writer closed it (anywhere) sees the writer's data: this is
//!   close-to-open.
//! - **Writes** go to the home as they are made (no writeback cache):
//!   processes at home and bodies elsewhere write the same files, and
//!   `O_APPEND` must append at the home's end of file, which only the home
//!   knows. Writes are up to [`fs::MAX_WRITE`] (1 MiB) per request, and
//!   readahead up to the same, so sequential I/O moves in large messages.
//! - **Directories** are listed with readdirplus, so `ls -l` costs one
//!   round trip per batch of entries, not one per file.
//! - **POSIX record locks** (fcntl F_SETLK/F_SETLKW/F_GETLK) are not kept
//!   by the remote kernel: they are taken at home, one open file
//!   description per (file, lock owner) holding them as OFD locks, so
//!   processes at home and bodies elsewhere exclude each other. Closing
//!   any descriptor of the file drops the owner's locks, as POSIX says.
//!   (flock(2) locks stay local to the remote node.) F_GETLK from a body
//!   reports a home holder's pid as the home kernel knows it, translated
//!   by the remote kernel through its own pid table (FUSE does so): a pid
//!   no process has on the remote node reads as 0. A home process's
//!   F_GETLK on a body's lock reports pid -1, as for any open file
//!   description lock. Locks held at the moment of migration are not
//!   carried: a process holding any is refused the move (`cantmove`,
//!   "it holds POSIX record locks ...") until it releases them.
//!
//! # Limits: device and inode numbers
//!
//! A file seen through the view has another `st_dev` than at home: the
//! kernel fills `st_dev` of every FUSE file with the mount's own anonymous
//! device number (`fuse_fillattr` copies the superblock's `s_dev`; no FUSE
//! reply carries a device), so a user-space file system cannot report the
//! home's. Inode numbers are the home's with the home device folded into
//! the top 16 bits (`view_ino` in `homed`), so files of different home
//! file systems, all under the one view mount, never share a number. So a
//! program that compares a `stat` taken before a migration with one taken
//! after (GNU `cp` and `tar` compare the stat of a name with the fstat of
//! the file they then open, and say the file was replaced or changed as
//! they read it) sees two different files if the move falls between the
//! two. Within one side of a move everything is consistent: every stat of
//! one file agrees, hard links share a number, and `find -samefile`, `cp
//! -a`'s hard-link detection and `tar`'s work.
//!
//! # Who mounts it
//!
//! `remoted` mounts one view per (home, body owner) while that owner has
//! bodies on the node, and binds it over the home-exported directories in
//! each body's own mount namespace (`mosix_remoted::host::view`);
//! `mosix-viewmount` mounts one by hand. A directory's readdir offsets are
//! the home file system's own cookies, so a directory fd's position means
//! the same entry through the view as at home (what a migrated process's
//! open directory needs).

pub mod client;
pub mod fs;
pub mod locks;
pub mod nodes;

pub use client::{Creds, ViewClient, ViewError};
pub use fs::ViewFs;
pub use locks::LockHolders;

use std::path::Path;
use std::sync::Arc;

/// How the view is mounted: a `fuse` mount named `mosix-view`, readable by
/// every local user (the body runs as its owner, not as the mounting
/// daemon), with no device files or set-uid programs honoured.
pub fn mount_config(home_node: &str) -> fuser::Config {
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName(format!("mosix-view:{home_node}")),
        fuser::MountOption::Subtype("mosix-view".into()),
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
    ];
    // No `default_permissions`: the home checks every access as the owner.
    config.acl = fuser::SessionACL::All;
    config.n_threads = Some(8);
    config.clone_fd = true;
    config
}

/// Mounts the view of `client` at `mountpoint` in the background; the
/// returned session unmounts when dropped.
pub fn spawn_mount(
    client: Arc<ViewClient>,
    home_node: &str,
    mountpoint: &Path,
) -> std::io::Result<fuser::BackgroundSession> {
    fuser::spawn_mount(ViewFs::new(client), mountpoint, &mount_config(home_node))
}

/// Mounts the view of `client` at `mountpoint` and serves it until it is
/// unmounted.
pub fn mount(client: Arc<ViewClient>, home_node: &str, mountpoint: &Path) -> std::io::Result<()> {
    fuser::mount(ViewFs::new(client), mountpoint, &mount_config(home_node))
}
