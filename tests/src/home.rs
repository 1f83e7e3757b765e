//! A cluster whose home node n1 has a directory that no other node has:
//! the fixture of the tests that move programs working on home files
//! (`family`, `view_migrate`). A body at n2 reaches that directory only
//! through the view.
//!
//! The directory, `/srv/mx-NAME-PID`, is on a tmpfs mounted over `/srv`
//! in n1's mount namespace only, and belongs to a test user (not root: the
//! view never acts as root). The test process reads and writes it through
//! `/proc/<n1's homed>/root`, which resolves paths in n1's namespace.

use crate::procs::text;
use crate::{Cluster, bin};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// A cluster with a home directory that only n1 has.
pub struct Home {
    /// The cluster.
    pub c: Cluster,
    /// The directory's path (the same at home and, through the view,
    /// wherever a body of it runs).
    pub dir: String,
    /// The test user, who owns the directory.
    pub uid: u32,
}

impl Home {
    /// A cluster of `nodes` nodes and the directory `/srv/mx-NAME-PID` at
    /// n1, owned by `uid`; fails if n2 sees it (the view would not be
    /// needed).
    pub fn up(nodes: usize, name: &str, uid: u32) -> Home {
        let c = Cluster::up(nodes).unwrap();
        let dir = format!("/srv/mx-{name}-{}", std::process::id());
        let setup = format!(
            "set -e; mount -t tmpfs -o mode=0755 mx-{name}-test /srv; mkdir {dir}; chown {uid}:{uid} {dir}"
        );
        let out = c.exec("n1", &["sh", "-c", &setup]).unwrap();
        assert!(out.status.success(), "setup at n1: {}", text(&out));
        let out = c.exec("n2", &["test", "-e", &dir]).unwrap();
        assert!(
            !out.status.success(),
            "n2 sees {dir}: the test would not show that the view works"
        );
        Home { c, dir, uid }
    }

    /// Where this test process finds the home's `path` (n1's namespace).
    pub fn at_home(&self, path: &str) -> PathBuf {
        let homed = self.c.daemon_pid("n1", "homed").unwrap();
        PathBuf::from(format!("/proc/{homed}/root{path}"))
    }

    /// A file of the home directory, from here.
    pub fn file(&self, name: &str) -> PathBuf {
        self.at_home(&format!("{}/{name}", self.dir))
    }

    /// Put `data` at home as the test user's file `name` (mode 0644),
    /// creating the directories it is in as the test user's.
    pub fn put(&self, name: &str, data: impl AsRef<[u8]>) {
        let p = self.file(name);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
            std::os::unix::fs::chown(d, Some(self.uid), Some(self.uid)).unwrap();
        }
        std::fs::write(&p, data).unwrap();
        std::os::unix::fs::chown(&p, Some(self.uid), Some(self.uid)).unwrap();
    }

    /// The home file `name`, empty if it cannot be read.
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.file(name)).unwrap_or_default()
    }

    /// The setpriv prefix that runs a command as the test user, with the
    /// directory as its `HOME`.
    pub fn as_user(&self) -> Vec<String> {
        let uid = self.uid.to_string();
        [
            "setpriv",
            "--reuid",
            &uid,
            "--regid",
            &uid,
            "--clear-groups",
            "env",
            &format!("HOME={}", self.dir),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Runs `script` at `node` as the test user, in the directory, without
    /// mosix, and waits for it.
    pub fn user(&self, node: &str, script: &str) -> Output {
        let mut argv = self.as_user();
        argv.extend(["sh", "-c"].map(String::from));
        argv.push(format!("cd {} && {script}", self.dir));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.c.exec(node, &argv).unwrap()
    }

    /// Starts `argv` at `node` in the background (`mosix-local exec`, as
    /// root unless `argv` says otherwise), stdin and stdout from and to
    /// /dev/null, stderr the test's.
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(&self, node: &str, argv: &[S]) -> Child {
        Command::new(bin("mosix-local"))
            .args(["exec", "--dir"])
            .arg(&self.c.dir)
            .args([node, "--"])
            .args(argv)
            .env("MOSIX_BIN_DIR", crate::bin_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("mosix-local exec")
    }

    /// Waits (at most `timeout`) for the job `name` to write its `$?`
    /// whole into `<name>.rc` (a job writes `<name>.rc.tmp`, then renames
    /// it), then for `job`; returns that `$?`. On a timeout, fails with
    /// the ends of its `<name>.out` and `<name>.err`, and the daemons'
    /// logs.
    pub fn finish_rc(&self, mut job: Child, name: &str, timeout: Duration) -> String {
        let rc = self.file(&format!("{name}.rc"));
        self.c
            .wait_for(&format!("{name} to end"), timeout, || {
                Ok(std::fs::read_to_string(&rc).is_ok_and(|s| s.ends_with('\n')))
            })
            .unwrap_or_else(|e| {
                panic!(
                    "{e:#}\nout: {}\nerr: {}\nremoted n2:\n{}\nhomed n1:\n{}",
                    tail(&self.read(&format!("{name}.out"))),
                    tail(&self.read(&format!("{name}.err"))),
                    self.c.log("n2", "remoted"),
                    self.c.log("n1", "homed")
                )
            });
        let _ = job.wait();
        self.read(&format!("{name}.rc")).trim().to_string()
    }
}

/// The last 4 KiB or so of `s`, for a failure message.
fn tail(s: &str) -> &str {
    let mut from = s.len().saturating_sub(4096);
    while !s.is_char_boundary(from) {
        from += 1;
    }
    &s[from..]
}
