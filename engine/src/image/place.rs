//! Where an image file is made (DESIGN.md section 9): `homed` writes a
//! user's image as that user (its thread's fs ids), into a directory the
//! user named, which other users may be able to write. So the file is made
//! without a guessable name (`O_TMPFILE`, linked in under a random name
//! only once it is complete; or, where the file system has no `O_TMPFILE`,
//! a random name made with `O_CREAT|O_EXCL|O_NOFOLLOW`), mode 0600, and
//! renamed over the final name, which is never followed. A directory
//! another user could change, and a final name that is not the owner's
//! regular file, are refused.

use super::ImageError;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, renameat};
use nix::sys::stat::{FileStat, Mode, fchmod, fstat, fstatat};
use nix::unistd::{UnlinkatFlags, linkat, unlinkat};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The directory an image goes into, open, and its final name there.
pub(super) struct Place {
    dir: OwnedFd,
    name: OsString,
    /// The final path, for messages.
    path: PathBuf,
    /// The image's owner.
    uid: u32,
    /// Try `O_TMPFILE` first (tests turn it off to try the fallback).
    tmpfile: bool,
}

/// A complete image file not yet under its final name.
pub(super) struct Pending {
    pub(super) file: File,
    /// Its name in the directory (`None`: `O_TMPFILE`, no name yet).
    name: Option<OsString>,
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> ImageError + 'a {
    move |e| ImageError::Io {
        what,
        path: path.display().to_string(),
        error: e.into(),
    }
}

impl Place {
    /// Open the directory of `path` and check that only `uid` (and root)
    /// may change its entries and that `path` is not another user's file
    /// or not a file at all.
    pub(super) fn open(path: &Path, uid: u32) -> Result<Place, ImageError> {
        let unsafe_ = |why: String| ImageError::Unsafe {
            path: path.display().to_string(),
            why,
        };
        let Some(name) = path.file_name().map(OsStr::to_os_string) else {
            return Err(unsafe_("it does not name a file".into()));
        };
        let dir_path = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir = openat(
            nix::fcntl::AT_FDCWD,
            dir_path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io("open the directory", dir_path))?;
        let st = fstat(&dir).map_err(io("look at the directory", dir_path))?;
        dir_is_safe(&st, uid).map_err(|why| {
            unsafe_(format!(
                "its directory {} {why}; write it in a directory of your own",
                dir_path.display()
            ))
        })?;
        let place = Place {
            dir,
            name,
            path: path.to_path_buf(),
            uid,
            tmpfile: true,
        };
        place.check_target()?;
        Ok(place)
    }

    /// The final name is free, or the owner's (or root's) regular file.
    fn check_target(&self) -> Result<(), ImageError> {
        match fstatat(
            &self.dir,
            self.name.as_os_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(io("look at", &self.path)(e)),
            Ok(st) => target_is_replaceable(&st, self.uid).map_err(|why| ImageError::Unsafe {
                path: self.path.display().to_string(),
                why: format!("{why}; it is not replaced: remove it or choose another file"),
            }),
        }
    }

    /// A new, empty file for the image, mode 0600, that no one else can
    /// have opened or named.
    pub(super) fn create(&self) -> Result<Pending, ImageError> {
        let file = if self.tmpfile {
            openat(
                &self.dir,
                ".",
                OFlag::O_TMPFILE | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
        } else {
            Err(Errno::EOPNOTSUPP)
        };
        let (fd, name) = match file {
            Ok(fd) => (fd, None),
            // No O_TMPFILE on this file system: a fresh random name.
            Err(_) => {
                let mut tries = 0;
                loop {
                    let name = self.temp_name();
                    match openat(
                        &self.dir,
                        name.as_os_str(),
                        OFlag::O_WRONLY
                            | OFlag::O_CREAT
                            | OFlag::O_EXCL
                            | OFlag::O_NOFOLLOW
                            | OFlag::O_CLOEXEC,
                        Mode::from_bits_truncate(0o600),
                    ) {
                        Ok(fd) => break (fd, Some(name)),
                        Err(Errno::EEXIST) if tries < 16 => tries += 1,
                        Err(e) => return Err(io("create", &self.temp_path(&name))(e)),
                    }
                }
            }
        };
        let pending = Pending {
            file: File::from(fd),
            name,
        };
        // umask only removes bits; say it exactly.
        if let Err(e) = fchmod(&pending.file, Mode::from_bits_truncate(0o600)) {
            self.discard(pending);
            return Err(io("set the mode of a new image in", &self.path)(e));
        }
        Ok(pending)
    }

    /// Put the complete (synced) `pending` under the final name, replacing
    /// the owner's previous image there at once.
    pub(super) fn publish(&self, mut pending: Pending) -> Result<(), ImageError> {
        let name = match pending.name.take() {
            Some(n) => n,
            None => {
                // Give the O_TMPFILE file a random name (never an existing
                // one: linkat does not replace), through /proc because
                // AT_EMPTY_PATH needs a capability the owner lacks.
                let proc = format!("/proc/self/fd/{}", pending.file.as_raw_fd());
                let mut tries = 0;
                loop {
                    let name = self.temp_name();
                    match linkat(
                        nix::fcntl::AT_FDCWD,
                        proc.as_str(),
                        &self.dir,
                        name.as_os_str(),
                        AtFlags::AT_SYMLINK_FOLLOW,
                    ) {
                        Ok(()) => break name,
                        Err(Errno::EEXIST) if tries < 16 => tries += 1,
                        Err(e) => return Err(io("link the finished image into", &self.path)(e)),
                    }
                }
            }
        };
        pending.name = Some(name);
        let name = pending.name.as_deref().unwrap_or_default();
        // Checked again: writing took a while.
        let renamed = self.check_target().and_then(|()| {
            renameat(&self.dir, name, &self.dir, self.name.as_os_str())
                .map_err(io("rename the finished image to", &self.path))
        });
        if renamed.is_err() {
            self.discard(pending);
        }
        renamed
    }

    /// Remove what [`Place::create`] made (nothing, for `O_TMPFILE`).
    pub(super) fn discard(&self, pending: Pending) {
        if let Some(name) = &pending.name {
            let _ = unlinkat(&self.dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir);
        }
    }

    /// `<name>.tmp-<16 random hex digits>`.
    fn temp_name(&self) -> OsString {
        let mut n = self.name.clone();
        n.push(format!(".tmp-{:016x}", random()));
        n
    }

    fn temp_path(&self, name: &OsStr) -> PathBuf {
        self.path.with_file_name(name)
    }
}

/// Why a directory with status `st` is no place for `uid`'s image: someone
/// else than `uid` and root could rename, replace or remove its entries.
/// Its owner always can; without the sticky bit, so can whoever may write
/// it. Group write is allowed in the owner's own directory (user private
/// groups), never in root's.
fn dir_is_safe(st: &FileStat, uid: u32) -> Result<(), String> {
    let mode = st.st_mode;
    if st.st_uid != uid && st.st_uid != 0 {
        return Err(format!(
            "belongs to uid {}, not to the image's owner (uid {uid}) or root",
            st.st_uid
        ));
    }
    let sticky = mode & libc::S_ISVTX != 0;
    if !sticky && mode & 0o002 != 0 {
        return Err(format!(
            "(mode {:04o}) may be written by anyone and is not sticky (chmod +t would do)",
            mode & 0o7777
        ));
    }
    if !sticky && mode & 0o020 != 0 && st.st_uid != uid {
        return Err(format!(
            "(mode {:04o}) belongs to root, may be written by its group and is not sticky",
            mode & 0o7777
        ));
    }
    Ok(())
}

/// Why an existing entry with status `st` (not followed) must not be
/// replaced by `uid`'s image.
fn target_is_replaceable(st: &FileStat, uid: u32) -> Result<(), String> {
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err("it exists and is not a regular file (a symlink?)".into());
    }
    if st.st_uid != uid && st.st_uid != 0 {
        return Err(format!(
            "it exists and belongs to uid {}, not to the image's owner (uid {uid})",
            st.st_uid
        ));
    }
    Ok(())
}

/// 64 unpredictable bits (from the kernel; the clock if that fails, which
/// O_EXCL and linkat still make safe, only guessable).
fn random() -> u64 {
    let mut b = [0u8; 8];
    let ok = File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_ok();
    if ok {
        return u64::from_ne_bytes(b);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (u64::from(std::process::id()) << 32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn make(place: &Place, data: &[u8]) {
        let mut p = place.create().unwrap();
        p.file.write_all(data).unwrap();
        place.publish(p).unwrap();
    }

    #[test]
    fn without_o_tmpfile_a_fresh_random_name_is_made_and_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let uid = nix::unistd::geteuid().as_raw();
        let mut place = Place::open(&path, uid).unwrap();
        place.tmpfile = false;
        let p = place.create().unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 1);
        assert!(
            names[0].starts_with("img.tmp-") && names[0].len() == 8 + 16,
            "{names:?}"
        );
        place.discard(p);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        make(&place, b"one");
        make(&place, b"two");
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let m = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn as_the_owner_the_image_is_theirs_in_their_directory() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to become another user");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(dir.path(), Some(4242), Some(4242)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let path = dir.path().join("img");
        for tmpfile in [true, false] {
            // As homed does it: this thread's fs ids are the owner's.
            let _ids = crate::FsIds::become_user(4242, 4242);
            let mut place = Place::open(&path, 4242).unwrap();
            place.tmpfile = tmpfile;
            make(&place, b"data");
            drop(_ids);
            let m = std::fs::symlink_metadata(&path).unwrap();
            assert_eq!((m.uid(), m.gid()), (4242, 4242), "tmpfile {tmpfile}");
            assert_eq!(m.permissions().mode() & 0o7777, 0o600);
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
