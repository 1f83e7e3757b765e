//! Where the tools find the files they hand to a process: `libmosix.so`
//! and `mosix-restore`. Beside the executable (a build tree, `cargo run`,
//! the tests), else in `../libexec/mosix` or `../lib/mosix` relative to it
//! (an install by `scripts/install` under any prefix), so no build path
//! is ever written into a binary and an installed tree can be moved.

use std::path::{Path, PathBuf};

/// Why a helper file was not found.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    /// The running executable's path is unknown.
    #[error("cannot find this program's own path: {0}")]
    NoExe(#[source] std::io::Error),
    /// None of the places holds it.
    #[error(
        "{name} is missing: looked in {looked}; install it with scripts/install, or put it beside this program"
    )]
    Missing {
        /// The file looked for.
        name: String,
        /// The places looked in, joined.
        looked: String,
    },
}

/// The places `name` is looked for, in order, for an executable in `dir`.
pub fn candidates(dir: &Path, name: &str) -> Vec<PathBuf> {
    vec![
        dir.join(name),
        dir.join("../libexec/mosix").join(name),
        dir.join("../lib/mosix").join(name),
    ]
}

/// The first of [`candidates`] that exists, for the running executable
/// (symlinks resolved, so a link to it in another directory changes
/// nothing).
pub fn helper(name: &str) -> Result<PathBuf, HelperError> {
    let exe = std::env::current_exe().map_err(HelperError::NoExe)?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let places = candidates(dir, name);
    places
        .iter()
        .find(|p| p.exists())
        .map(|p| normalize(p))
        .ok_or_else(|| HelperError::Missing {
            name: name.to_string(),
            looked: places
                .iter()
                .map(|p| normalize(p).display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// `a/b/../c` as `a/c` (the directories exist: the executable is in one),
/// so paths in logs and in `LD_PRELOAD` read plainly.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beside_first_then_libexec_then_lib() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let c = candidates(&bin, "libmosix.so");
        assert_eq!(c[0], bin.join("libmosix.so"));
        assert_eq!(
            normalize(&c[1]),
            dir.path().join("libexec/mosix/libmosix.so")
        );
        assert_eq!(normalize(&c[2]), dir.path().join("lib/mosix/libmosix.so"));
    }
}
