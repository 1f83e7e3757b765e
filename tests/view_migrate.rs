//! The view under migration (issue 5): a program started at n1 on files
//! that exist only in n1's mount namespace moves to n2 and goes on working
//! on them there, through the view `remoted` mounted for its owner.
//!
//! The home's test directory is `/srv/mx-view-*` on a tmpfs mounted over
//! `/srv` inside n1's mount namespace only: n2 has no such directory, so a
//! body at n2 can reach it only through the view. The test reads the
//! home's files through `/proc/<n1's homed>/root`, which resolves paths in
//! n1's namespace.
//!
//! Run as root after building the workspace:
//! `cargo test -p mosix-tests --test view_migrate -- --test-threads=1`.

use mosix_tests::home::Home;
use mosix_tests::procs::{descends_from, processes_running, text};
use mosix_tests::{Cluster, bin, is_running};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;
use std::time::Instant;

/// The owner of the test's files and processes (not root: the view never
/// acts as root).
const UID: u32 = 4243;

/// The view mounts (`mosix-view:<home>` FUSE mounts) in `pid`'s mount
/// namespace: (device "major:minor", mount point) each.
fn view_mounts(pid: i32) -> Vec<(String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" - fuse mosix-view:"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some((f.get(2)?.to_string(), f.get(4)?.to_string()))
        })
        .collect()
}

/// The shared fixture (a two-node cluster, and a home directory that only
/// n1 has), with this file's way of starting, moving and ending jobs.
struct ViewHome(Home);

impl std::ops::Deref for ViewHome {
    type Target = Home;

    fn deref(&self) -> &Home {
        &self.0
    }
}

impl ViewHome {
    fn new() -> ViewHome {
        ViewHome(Home::up(2, "view", UID))
    }

    /// Starts `mosrun -- argv` at n1 as the test user, in the home
    /// directory, with stdin from /dev/null, stdout in `<name>.out` there
    /// and stderr through a pipe (relayed by the deputy, so it reaches
    /// home even when the view does not) into `<name>.err`; `$?` goes to
    /// `<name>.rc`.
    /// With `slow`, the job runs in `slow`'s cgroup until it leaves n1;
    /// `env` (`VAR=value ...`) is put in its environment; `mosrun` is the
    /// workspace's unless given (with its libmosix.so beside it).
    fn start(
        &self,
        argv: &[&str],
        name: &str,
        slow: Option<&Slow>,
        env: &str,
        mosrun: Option<&Path>,
    ) -> Child {
        self.start_flags(argv, name, slow, env, mosrun, "")
    }

    /// [`ViewHome::start`] with `flags` given to mosrun (`-r n2`).
    fn start_flags(
        &self,
        argv: &[&str],
        name: &str,
        slow: Option<&Slow>,
        env: &str,
        mosrun: Option<&Path>,
        flags: &str,
    ) -> Child {
        let quoted: Vec<String> = argv
            .iter()
            .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
            .collect();
        let script = format!(
            "cd {d} && ( {env} {mosrun} {flags} -- {argv} < /dev/null 2>&1 > {d}/{name}.out; echo $? > {d}/{name}.rc.tmp ) \
             | cat > {d}/{name}.err; mv {d}/{name}.rc.tmp {d}/{name}.rc",
            d = self.dir,
            mosrun = mosrun
                .map(Path::to_path_buf)
                .unwrap_or_else(|| bin("mosrun"))
                .display(),
            argv = quoted.join(" ")
        );
        // The root shell joins the cgroup, then becomes the user's job.
        let enter = match slow {
            Some(s) => format!("echo $$ > {}/tasks && exec \"$@\"", s.0.display()),
            None => "exec \"$@\"".to_string(),
        };
        let mut all: Vec<String> = ["sh", "-c", &enter, "sh"].map(String::from).into();
        all.extend(self.as_user());
        all.extend(["sh".into(), "-c".into(), script]);
        self.spawn("n1", &all)
    }

    /// Waits for `<name>.rc` and returns it with the job's stderr.
    fn finish(&self, job: Child, name: &str, timeout: Duration) -> (String, String) {
        let rc = self.finish_rc(job, name, timeout);
        (rc, self.read(&format!("{name}.err")))
    }

    /// The home pid of the one process running `argv`, once it is there.
    fn pid_of(&self, argv: &[&str]) -> i32 {
        let mut pid = 0;
        self.c
            .wait_for("the program to start", Duration::from_secs(30), || {
                let p = processes_running(argv);
                pid = p.first().copied().unwrap_or(0);
                Ok(p.len() == 1)
            })
            .unwrap();
        pid
    }

    /// `mosmigrate pid n2`, which must succeed.
    fn migrate(&self, pid: i32) {
        let out = self
            .c
            .exec("n1", &["mosmigrate", &pid.to_string(), "n2"])
            .unwrap();
        assert!(
            out.status.success(),
            "mosmigrate failed: {}\nremoted n2:\n{}",
            text(&out),
            self.c.log("n2", "remoted")
        );
    }
}

/// Deterministic bytes, so a wrong offset or a lost write shows.
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// What `viewio` appends to out.log while copying `total` bytes in 4 KiB
/// reads (each line: tag, read number, bytes so far).
fn log_lines(tag: &str, total: usize) -> String {
    let mut s = String::new();
    let (mut i, mut done, end) = (0, 0, total);
    while done < end {
        done += (end - done).min(4096);
        s.push_str(&format!("{tag} {i} {done}\n"));
        i += 1;
    }
    s
}

fn mode_and_owner(p: &Path) -> (u32, u32, u32) {
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.permissions().mode() & 0o7777, m.uid(), m.gid())
}

/// Input size of `viewio` in the tests.
const SIZE: usize = 300_000;

/// `viewio` and its files at home only: (its path, its input, the names
/// in the directory it lists partly before and partly after a move). The
/// program itself lives at home too: a body maps it through the view.
fn viewio_at_home(h: &ViewHome) -> (String, Vec<u8>, Vec<String>) {
    let exe = mosix_tests::build_c_example("viewio", &h.c.dir, &[]);
    let prog = format!("{}/viewio", h.dir);
    std::fs::copy(&exe, h.at_home(&prog)).unwrap();
    let input = pattern(SIZE);
    h.put("input", &input);
    let list = h.file("list");
    std::fs::create_dir(&list).unwrap();
    let mut names: Vec<String> = vec![".".into(), "..".into()];
    for i in 0..40 {
        let name = format!("entry-with-a-long-name-{i:02}");
        std::fs::write(list.join(&name), b"").unwrap();
        names.push(name);
    }
    (prog, input, names)
}

#[test]
fn a_migrated_program_keeps_working_on_home_only_files_through_the_view() {
    let h = ViewHome::new();
    let (prog, input, mut want_names) = viewio_at_home(&h);
    want_names.sort();
    let argv = [prog.as_str(), h.dir.as_str()];
    let job = h.start(&argv, "run", None, "", None);
    let home = h.pid_of(&argv);
    h.c.wait_for("the first half", Duration::from_secs(30), || {
        Ok(h.file("ready").exists())
    })
    .unwrap();
    let first_batch = std::fs::read_to_string(h.file("names"))
        .unwrap()
        .lines()
        .count();
    assert!(
        first_batch > 0 && first_batch < want_names.len(),
        "the first batch should list some names, not {first_batch}"
    );
    h.migrate(home);

    // The body runs under n2's remoted, as the user, with the home's
    // files (which n2 lacks) open through the view, in its home cwd.
    let remoted2 = h.c.daemon_pid("n2", "remoted").unwrap();
    let bodies: Vec<i32> = processes_running(&argv)
        .into_iter()
        .filter(|&p| p != home)
        .collect();
    assert_eq!(bodies.len(), 1, "expected one body, found {bodies:?}");
    let body = bodies[0];
    assert!(
        descends_from(body, remoted2),
        "body {body} does not descend from n2's remoted {remoted2}"
    );
    let status = std::fs::read_to_string(format!("/proc/{body}/status")).unwrap();
    assert!(
        mosix_engine::procfs::status_ids(&status, "Uid") == Some([UID; 4]),
        "the body does not run as {UID}:\n{status}"
    );
    let views = view_mounts(remoted2);
    assert_eq!(
        views.len(),
        1,
        "n2's remoted should have one view mounted: {views:?}"
    );
    let (dev, mountpoint) = views[0].clone();
    assert!(
        mountpoint.starts_with(&format!("/run/mosix/view/n1/{UID}-")),
        "view mounted at {mountpoint}"
    );
    let body_views = view_mounts(body);
    assert!(
        body_views
            .iter()
            .any(|(d, m)| *d == dev && m.as_str() == "/srv"),
        "the body's /srv is not the view: {body_views:?}"
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{body}/cwd")).unwrap(),
        PathBuf::from(&h.dir)
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{body}/fd/3")).unwrap(),
        PathBuf::from(format!("{}/input", h.dir))
    );
    let out = h.c.exec("n2", &["test", "-e", &h.dir]).unwrap();
    assert!(!out.status.success(), "n2 itself now sees {}", h.dir);

    // Let it do the second half there.
    h.put("go", b"");
    let (rc, err) = h.finish(job, "run", Duration::from_secs(120));
    assert_eq!(rc, "0", "viewio failed: {err}");

    // Home sees every result, byte for byte, with owner and mode.
    assert!(
        std::fs::read(h.file("copy")).unwrap() == input,
        "the copy differs from the input"
    );
    assert_eq!(mode_and_owner(&h.file("copy")), (0o600, UID, UID));
    let want_log = log_lines("pre", SIZE / 2) + &log_lines("post", SIZE - SIZE / 2) + "end\n";
    assert_eq!(
        std::fs::read_to_string(h.file("out.log")).unwrap(),
        want_log
    );
    assert_eq!(mode_and_owner(&h.file("out.log")), (0o644, UID, UID));
    assert_eq!(
        std::fs::read_to_string(h.file("sub2/b")).unwrap(),
        "hello\n"
    );
    assert_eq!(mode_and_owner(&h.file("sub2/b")), (0o604, UID, UID));
    assert_eq!(mode_and_owner(&h.file("sub2")), (0o750, UID, UID));
    for gone in ["sub", "sub2/a", "tmpf", "gone"] {
        assert!(!h.file(gone).exists(), "{gone} should not exist at home");
    }
    assert_eq!(
        std::fs::read_to_string(h.file("done")).unwrap(),
        format!("copied {SIZE}\n")
    );
    // The listing went on where it stood: every name once.
    let names = std::fs::read_to_string(h.file("names")).unwrap();
    let mut names: Vec<&str> = names.lines().collect();
    names.sort();
    assert_eq!(names, want_names, "the listing lost or repeated names");

    // The view goes when its last body ends; nothing is left after down.
    h.c.wait_for("the view to be unmounted", Duration::from_secs(30), || {
        Ok(view_mounts(remoted2).is_empty())
    })
    .unwrap();
    assert!(!is_running(body));
    let cluster_dir = h.c.dir.clone();
    drop(h);
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| view_mounts(p).iter().any(|(d, _)| *d == dev))
        .map(|p| p.to_string())
        .collect();
    assert!(
        left.is_empty(),
        "the view {dev} is still mounted in processes {left:?}"
    );
    // Nor in this (the machine's) mount table: no view, nothing of the
    // cluster's directory (its namespace pins).
    let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let stale: Vec<&str> = host
        .lines()
        .filter(|l| l.contains(" - fuse mosix-view:") || l.contains(cluster_dir.to_str().unwrap()))
        .collect();
    assert!(stale.is_empty(), "left mounted after down: {stale:?}");
}

/// A CPU cgroup inside n1's with a 2 % quota: programs that would end in
/// milliseconds run long enough at home to be migrated mid-run (the body
/// at n2 runs in n2's cgroup at full speed). Removed when dropped.
struct Slow(PathBuf);

impl Slow {
    fn new(c: &Cluster) -> Slow {
        let config = std::fs::read_to_string(c.node_file("n1", "mosix.toml")).unwrap();
        let group = config
            .lines()
            .find_map(|l| l.trim().strip_prefix("cgroup = "))
            .expect("n1's configuration names its cgroup")
            .trim_matches('"')
            .to_string();
        let dir = Path::new(&group).join("mx-view-slow");
        std::fs::create_dir(&dir).unwrap();
        // 1 ms every 50 ms: fine-grained, so no program gets through its
        // work in one period's allowance.
        std::fs::write(dir.join("cpu.cfs_period_us"), "50000").unwrap();
        std::fs::write(dir.join("cpu.cfs_quota_us"), "1000").unwrap();
        Slow(dir)
    }
}

impl Drop for Slow {
    fn drop(&mut self) {
        // Processes left by a failed test go back to n1's own group, or
        // the cluster's cgroups could not be removed.
        if let (Ok(tasks), Some(parent)) = (
            std::fs::read_to_string(self.0.join("tasks")),
            self.0.parent(),
        ) {
            for t in tasks.lines() {
                let _ = std::fs::write(parent.join("tasks"), t);
            }
        }
        for _ in 0..100 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("cannot remove {}", self.0.display());
    }
}

impl ViewHome {
    /// Runs `argv` (the test user's, in the home directory) under mosrun at
    /// n1, slowed down, moves it to n2 as soon as libmosix is in it, and
    /// waits for its end: (`$?`, stderr).
    fn run_migrated(&self, slow: &Slow, env: &str, argv: &[&str], name: &str) -> (String, String) {
        let job = self.start(argv, name, Some(slow), env, None);
        let pid = self.pid_when(argv, name, |pid| self.working(pid));
        self.move_and_finish(job, pid, name, || ())
    }

    /// The home pid of the job `name` running `argv`, once `ready` says
    /// so; fails if the job ends first.
    fn pid_when(&self, argv: &[&str], name: &str, ready: impl Fn(i32) -> bool) -> i32 {
        let mut pid = 0;
        self.c
            .wait_for(&format!("{name} to start"), Duration::from_secs(60), || {
                if self.file(&format!("{name}.rc.tmp")).exists() {
                    anyhow::bail!(
                        "{name} ended before it could be moved (status {}): {}",
                        std::fs::read_to_string(self.file(&format!("{name}.rc.tmp")))
                            .unwrap_or_default()
                            .trim(),
                        std::fs::read_to_string(self.file(&format!("{name}.err")))
                            .unwrap_or_default()
                    );
                }
                pid = processes_running(argv).first().copied().unwrap_or(0);
                Ok(pid != 0 && ready(pid))
            })
            .unwrap();
        pid
    }

    /// Moves the job `name` (home pid `pid`) to n2, calls `moved`, and
    /// waits for the job's end: (`$?`, stderr). Checks that it ran at n2.
    fn move_and_finish(
        &self,
        job: Child,
        pid: i32,
        name: &str,
        moved: impl FnOnce(),
    ) -> (String, String) {
        // libmosix is mapped before its constructor has registered the
        // process with homed; until then mosmigrate says so. A migration
        // is also refused (and the process goes on at home) while it has
        // a file open for writing that its mode makes read-only (git's
        // new object files), which the body could not reopen, or while it
        // blocks the freeze signal (git, around its lock files).
        let mut last = None;
        self.c
            .wait_for(&format!("{name} to move"), Duration::from_secs(30), || {
                if self.file(&format!("{name}.rc.tmp")).exists() {
                    anyhow::bail!(
                        "{name} ended before it could be moved: give it more work (the last refusal: {})",
                        last.as_ref().map(text).unwrap_or_default()
                    );
                }
                let out = self.c.exec("n1", &["mosmigrate", &pid.to_string(), "n2"])?;
                let err = String::from_utf8_lossy(&out.stderr);
                let done = out.status.success()
                    || !(err.contains("not a mosix process")
                        || err.contains("try again once")
                        || err.contains("runs on unchanged"));
                last = Some(out);
                Ok(done)
            })
            .unwrap();
        let out = last.expect("mosmigrate ran");
        assert!(
            out.status.success(),
            "mosmigrate {name}: {}\nremoted n2:\n{}",
            text(&out),
            self.c.log("n2", "remoted")
        );
        moved();
        let (rc, err) = self.finish(job, name, Duration::from_secs(180));
        assert!(
            self.c
                .log("n2", "remoted")
                .contains(&format!("home_pid={pid} body_pid=")),
            "{name} did not run at n2"
        );
        (rc, err)
    }

    /// Whether `pid` is past its start-up and at work: it has a file of
    /// the home directory open (other than its stdout). A body frozen
    /// during glibc's start-up (inside `setlocale`) can hang on
    /// `__libc_setlocale_lock` after the move (an engine bug, seen with
    /// `tar`); the tests here are about the view.
    fn working(&self, pid: i32) -> bool {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return false;
        };
        // Seen from this test's mount namespace, n1's tmpfs on /srv is
        // unreachable and its paths show relative to the tmpfs's root.
        let name = Path::new(&self.dir).file_name().unwrap_or_default();
        fds.flatten().any(|e| {
            let n: i32 = e
                .file_name()
                .to_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            n > 2
                && std::fs::read_link(e.path())
                    .map(|p| p.components().any(|c| c.as_os_str() == name))
                    .unwrap_or(false)
        })
    }

    /// `script` at n1 as the user; its stdout, which must be a success.
    fn ok(&self, script: &str) -> String {
        let out = self.user("n1", script);
        assert!(out.status.success(), "{script}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Every entry under the current directory: relative path, type, mode,
/// owner, size, mtime (whole seconds: tar keeps no more), link target;
/// then every file's digest.
const LIST: &str = "find . -printf '%P %y %m %U %G %s %T@ %l\\n' | sed -E 's/ ([0-9]+)\\.[0-9]+ / \\1 /' | sort; \
                    find . -type f | sort | xargs -d '\\n' sha256sum";

/// The same with mtimes to the nanosecond.
const LIST_NS: &str = "find . -printf '%P %y %m %U %G %s %T@ %l\\n' | sort; find . -type f | sort | xargs -d '\\n' sha256sum";

/// Fails with the first line where two listings differ.
fn assert_same(got: &str, want: &str, what: &str) {
    if got == want {
        return;
    }
    let (g, w): (Vec<&str>, Vec<&str>) = (got.lines().collect(), want.lines().collect());
    let i = g.iter().zip(&w).take_while(|(a, b)| a == b).count();
    panic!(
        "{what}: line {i} differs: got {:?}, want {:?} ({} and {} lines)",
        g.get(i),
        w.get(i),
        g.len(),
        w.len()
    );
}

#[test]
fn real_programs_migrated_mid_run_give_the_same_results_as_at_home() {
    let h = ViewHome::new();
    let slow = Slow::new(&h.c);
    // A source tree: 600 small files in 30 directories, a 10 MB file, a
    // symlink, modes other than the default.
    h.ok("mkdir src && for i in $(seq 1 30); do mkdir src/d$i; for j in $(seq 1 20); do echo \"file $i $j\" > src/d$i/f$j; done; done \
          && head -c 10000000 /dev/urandom > src/big && ln -s big src/link && chmod 600 src/d1/f1 && chmod 750 src/d2");
    let want = h.ok(&format!("cd src && {{ {LIST}; }}"));

    // tar create: the same archive as one made at home.
    // --numeric-owner: no user-name look-ups (the archive then does not
    // depend on the node's user database). A body moved inside dlopen()
    // (tar's first getpwuid loads the NSS modules) once deadlocked on
    // ld.so's lock after the restore; libmosix now hands that lock to the
    // new thread id (tests/engine.rs, the dlopen test).
    h.ok("tar cf ref.tar --numeric-owner src");
    let (rc, err) = h.run_migrated(
        &slow,
        "",
        &["tar", "cf", "t.tar", "--numeric-owner", "src"],
        "tarc",
    );
    assert_eq!(rc, "0", "tar cf: {err}");
    assert!(
        std::fs::read(h.file("t.tar")).unwrap() == std::fs::read(h.file("ref.tar")).unwrap(),
        "the migrated tar made a different archive"
    );

    // tar extract: the same tree (tar keeps modes and whole-second mtimes).
    h.ok("mkdir x");
    let (rc, err) = h.run_migrated(
        &slow,
        "",
        &["tar", "xf", "ref.tar", "--numeric-owner", "-C", "x"],
        "tarx",
    );
    assert_eq!(rc, "0", "tar xf: {err}");
    let got = h.ok(&format!("cd x/src && {{ {LIST}; }}"));
    assert_same(&got, &want, "tar extracted a different tree");

    // cp -a: the same tree, mtimes to the nanosecond. A tree of few small
    // files beside the big one: cp compares a file's stat before it opens
    // it with the open file's, and a body moved between the two sees
    // another st_dev (the view's) and skips the file as "replaced" (a
    // known limit of the view); here the move lands in the big copy.
    h.ok("mkdir cpsrc && cp -a src/big src/link src/d1 src/d2 cpsrc");
    let want_cp = h.ok(&format!("cd cpsrc && {{ {LIST_NS}; }}"));
    let (rc, err) = h.run_migrated(&slow, "", &["cp", "-a", "cpsrc", "copy"], "cpa");
    assert_eq!(rc, "0", "cp -a: {}", &err[..err.len().min(3000)]);
    let got = h.ok(&format!("cd copy && {{ {LIST_NS}; }}"));
    assert_same(&got, &want_cp, "cp -a made a different tree");

    // sqlite3: 1000 inserts, each its own transaction (journal, fsync),
    // give the same database contents as at home. With dot-file locking:
    // fcntl locks held at the moment of migration stay with the deputy
    // at home (they are not part of the image yet), so the body would
    // find its own database locked.
    let mut sql = String::from("CREATE TABLE t(i INTEGER PRIMARY KEY, x TEXT);\n");
    for i in 0..1000 {
        sql.push_str(&format!("INSERT INTO t(x) VALUES('row {i} {}');\n", i * i));
    }
    h.put("ins.sql", sql.as_bytes());
    h.ok("sqlite3 -vfs unix-dotfile ref.db '.read ins.sql'");
    let (rc, err) = h.run_migrated(
        &slow,
        "",
        &["sqlite3", "-vfs", "unix-dotfile", "t.db", ".read ins.sql"],
        "sqlite",
    );
    assert_eq!(rc, "0", "sqlite3: {err}");
    let dump = |db: &str| h.ok(&format!("sqlite3 {db} .dump"));
    assert_eq!(dump("t.db"), dump("ref.db"));
    assert!(dump("t.db").contains("row 999 998001"));

    // git init, add, commit (fixed dates and names): the same commit id.
    let git = "git -c gc.auto=0 -c user.name=mx -c user.email=mx@example.invalid";
    let env = "GIT_AUTHOR_DATE=2026-01-01T00:00:00Z GIT_COMMITTER_DATE=2026-01-01T00:00:00Z";
    h.ok(&format!(
        "cp -a src ref-repo && cd ref-repo && {git} init -q && {git} add . && {env} {git} commit -q -m one && {git} rev-parse HEAD"
    ));
    // (git init runs at home: it is over within the cgroup's first slice
    // of CPU time, before it can be moved.)
    h.ok(&format!("cp -a src repo && {git} -C repo init -q"));
    let add = ["git", "-C", "repo", "-c", "gc.auto=0", "add", "."];
    let (rc, err) = h.run_migrated(&slow, "", &add, "gitadd");
    assert_eq!(rc, "0", "git add: {err}");
    // git commit is moved at a point of its own, not by timing: its
    // pre-commit hook (a child at home) waits for a gate file. By then
    // git holds index.lock open; after the move it writes the 31 trees,
    // the commit object and the refs, and renames index.lock, all through
    // the view at n2. maintenance.auto=false: at its end git would fork
    // `git maintenance run --auto`, which has nothing to do with the view.
    let hook = format!("{}/repo/.git/hooks/pre-commit", h.dir);
    h.ok(&format!(
        "printf '#!/bin/sh\\ntouch {d}/hook.started\\nwhile [ ! -e {d}/hook.go ]; do sleep 0.05; done\\n' > {hook} && chmod 755 {hook}",
        d = h.dir
    ));
    let commit = [
        "git",
        "-C",
        "repo",
        "-c",
        "gc.auto=0",
        "-c",
        "maintenance.auto=false",
        "-c",
        "user.name=mx",
        "-c",
        "user.email=mx@example.invalid",
        "commit",
        "-q",
        "-m",
        "one",
    ];
    let job = h.start(&commit, "gitcommit", None, env, None);
    let pid = h.pid_when(&commit, "gitcommit", |_| h.file("hook.started").exists());
    let (rc, err) = h.move_and_finish(job, pid, "gitcommit", || {
        std::fs::write(h.file("hook.go"), "").unwrap();
    });
    assert_eq!(rc, "0", "git commit: {err}");
    h.ok("rm repo/.git/hooks/pre-commit");
    let want_head = h.ok(&format!("cd ref-repo && {git} rev-parse HEAD"));
    let got_head = h.ok(&format!("cd repo && {git} rev-parse HEAD"));
    h.ok(&format!(
        "cd repo && {git} fsck --strict && test -z \"$({git} status --porcelain)\""
    ));
    assert_eq!(
        got_head.trim(),
        want_head.trim(),
        "git made a different commit"
    );
}

#[test]
fn a_lost_home_gives_the_body_eio_or_an_end_never_a_hang() {
    let h = ViewHome::new();
    // A body at n2 waits 5 s for a home that went away (not the default
    // 60 s), so that part 2 ends in good time.
    set_home_grace(&h.c, "n2", 5);
    let exe = mosix_tests::build_c_example("viewio", &h.c.dir, &[]);
    let remoted2 = h.c.daemon_pid("n2", "remoted").unwrap();
    // Copies of the program, mosrun and libmosix.so that every node has
    // locally (/run is never covered by the view): a body whose program or
    // libraries live at home dies of SIGBUS at its next page fault on them
    // once the home is gone, as on NFS.
    let local = LocalDir::new();
    let local_prog = local.0.join("viewio");
    std::fs::copy(&exe, &local_prog).unwrap();
    for f in ["mosrun", "libmosix.so"] {
        std::fs::copy(bin(f), local.0.join(f)).unwrap();
    }
    let start = |sub: &str, prog_at_home: bool| {
        let dir = format!("{}/{sub}", h.dir);
        let d = h.at_home(&dir);
        std::fs::create_dir(&d).unwrap();
        std::os::unix::fs::chown(&d, Some(UID), Some(UID)).unwrap();
        let prog = if prog_at_home {
            let prog = format!("{dir}/viewio");
            std::fs::copy(&exe, h.at_home(&prog)).unwrap();
            prog
        } else {
            local_prog.to_str().unwrap().to_string()
        };
        h.put(&format!("{sub}/input"), pattern(300_000));
        let argv = [prog.clone(), dir.clone()];
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let job = h.start(
            &argv,
            sub,
            None,
            "",
            (!prog_at_home).then_some(local.0.join("mosrun").as_path()),
        );
        let home = h.pid_of(&argv);
        h.c.wait_for("the first half", Duration::from_secs(30), || {
            Ok(h.file(&format!("{sub}/ready")).exists())
        })
        .unwrap();
        h.migrate(home);
        let body = processes_running(&argv)
            .into_iter()
            .find(|&p| p != home)
            .expect("a body");
        assert!(descends_from(body, remoted2));
        (job, body)
    };

    // 1. The view's links to the home are cut (its homed stays): the view
    //    opens a new session at once and the body's files again. An
    //    operation of the body that met the cut failed with EIO (viewio
    //    then ends with 1); otherwise it never noticed and copies the
    //    rest through its old fds, whole (0). Never a hang.
    let (job, body) = start("cut", false);
    let out =
        h.c.exec("n1", &["ss", "-K", "-t", "( sport = :7341 )"])
            .unwrap();
    assert!(out.status.success(), "ss -K: {}", text(&out));
    h.put("cut/go", b"");
    let t = std::time::Instant::now();
    let (rc, err) = h.finish(job, "cut", Duration::from_secs(30));
    let took = t.elapsed();
    match rc.as_str() {
        "1" => assert!(
            err.contains("Input/output error"),
            "the body should fail only of EIO: {err}"
        ),
        "0" => assert_eq!(
            std::fs::read(h.file("cut/copy")).unwrap(),
            pattern(300_000),
            "the copy through the body's old fds differs"
        ),
        _ => panic!("the body ended with {rc}: {err}"),
    }
    assert!(!is_running(body));
    eprintln!("view cut: the body ended with {rc} after {took:?}");
    h.c.wait_for("the view to be unmounted", Duration::from_secs(30), || {
        Ok(view_mounts(remoted2).is_empty())
    })
    .unwrap();

    // 2. The home's homed dies and does not come back: its link to the
    //    body's host goes with it; the host waits the grace period (5 s
    //    here) for a new homed, then ends the body, which must not hang
    //    in the view meanwhile.
    let (_job, body) = start("crash", true);
    let homed1 = h.c.daemon_pid("n1", "homed").unwrap();
    let root = h.at_home("/");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(homed1),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let took =
        h.c.wait_for("the body to end", Duration::from_secs(30), || {
            Ok(!is_running(body))
        })
        .unwrap();
    eprintln!("homed killed: the body ended after {took:?}");
    h.c.wait_for("the view to be unmounted", Duration::from_secs(30), || {
        Ok(view_mounts(remoted2).is_empty())
    })
    .unwrap();
    drop(root);
}

/// Sets `[process] home_grace_s` of `node` to `secs` and restarts its
/// daemons, which read their configuration anew (automatic migration
/// stays off, and the node is seen alive again by the others).
fn set_home_grace(c: &Cluster, node: &str, secs: u64) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(c.node_file(node, "mosix.toml"))
        .unwrap();
    write!(f, "\n[process]\nhome_grace_s = {secs}\n").unwrap();
    drop(f);
    let out = c.local(&["stop", node]).unwrap();
    assert!(out.status.success(), "stop {node}: {}", text(&out));
    let out = c.local(&["start", node]).unwrap();
    assert!(out.status.success(), "start {node}: {}", text(&out));
    let out = c
        .exec(node, &["mosctl", "params", "auto_migrate=false"])
        .unwrap();
    assert!(out.status.success(), "mosctl params: {}", text(&out));
    for other in (1..=c.nodes).map(|i| format!("n{i}")) {
        if other != node {
            c.wait_for(
                &format!("{other} to see {node} alive"),
                Duration::from_secs(60),
                || Ok(c.state_seen(&other, node)?.as_deref() == Some("alive")),
            )
            .unwrap();
        }
    }
}

/// A directory under /run (local to every node, shared by the test
/// cluster's nodes on this machine); removed when dropped.
struct LocalDir(PathBuf);

impl LocalDir {
    fn new() -> LocalDir {
        let d = PathBuf::from(format!("/run/mx-view-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        LocalDir(d)
    }
}

impl Drop for LocalDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_body_with_home_files_open_comes_home_in_step() {
    let h = ViewHome::new();
    let (prog, input, _) = viewio_at_home(&h);
    let argv = [prog.as_str(), h.dir.as_str()];
    let job = h.start(&argv, "back", None, "", None);
    let home = h.pid_of(&argv);
    h.c.wait_for("the first half", Duration::from_secs(30), || {
        Ok(h.file("ready").exists())
    })
    .unwrap();
    // Away (its files open through the view), then home again: the files
    // it had open there are the home's own again, at the body's offsets.
    h.migrate(home);
    let out =
        h.c.exec("n1", &["mosmigrate", &home.to_string(), "home"])
            .unwrap();
    assert!(
        out.status.success(),
        "mosmigrate {home} home: {}\nhomed n1:\n{}",
        text(&out),
        h.c.log("n1", "homed")
    );
    assert_eq!(processes_running(&argv), vec![home], "not whole at home");
    h.put("go", b"");
    let (rc, err) = h.finish(job, "back", Duration::from_secs(120));
    assert_eq!(rc, "0", "viewio failed: {err}");
    assert!(
        std::fs::read(h.file("copy")).unwrap() == input,
        "the copy differs from the input"
    );
    let want_log = log_lines("pre", SIZE / 2) + &log_lines("post", SIZE - SIZE / 2) + "end\n";
    assert_eq!(
        std::fs::read_to_string(h.file("out.log")).unwrap(),
        want_log
    );
    assert_eq!(mode_and_owner(&h.file("out.log")), (0o644, UID, UID));
}

/// Both sides of the lock tests: `locker.py ROLE DIR` opens `DIR/locked`
/// and takes turns with the other role, each step announced by a file of
/// DIR (written whole, then renamed in). `home` holds a write lock until
/// told, then tries the lock the body holds (F_SETLK, F_GETLK, F_SETLKW);
/// `body` (migrated to n2 once it has the file open) does the reverse.
/// Each side records the errno of its F_SETLK, what its F_GETLK reports
/// (type, start, length, pid) and the clock time at which it got the lock
/// or let it go, so the test sees who waited for whom.
const LOCKER: &str = r#"
import errno, fcntl, os, struct, sys, time
role, d = sys.argv[1], sys.argv[2]
def path(n): return os.path.join(d, n)
def wait(n):
    while not os.path.exists(path(n)): time.sleep(0.02)
def say(n, text=""):
    with open(path(n + ".tmp"), "w") as f: f.write(text)
    os.rename(path(n + ".tmp"), path(n))
def getlk(f):
    fl = struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 0, 0, 0)
    typ, _, start, length, pid = struct.unpack("hhqqi4x", fcntl.fcntl(f, fcntl.F_GETLK, fl))
    return "%d %d %d %d" % (typ, start, length, pid)
def attempt(f):
    try:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return "granted"
    except OSError as e:
        return errno.errorcode[e.errno]
f = open(path("locked"), "r+")
if role == "home":
    fcntl.lockf(f, fcntl.LOCK_EX)
    say("home-holds", str(os.getpid()))
    wait("home-release")
    say("home-releasing", repr(time.time()))
    fcntl.lockf(f, fcntl.LOCK_UN)
    wait("body-holds")
    say("home-try", attempt(f))
    say("home-getlk", getlk(f))
    say("home-waiting")
    fcntl.lockf(f, fcntl.LOCK_EX)
    say("home-got", repr(time.time()))
    fcntl.lockf(f, fcntl.LOCK_UN)
else:
    say("body-open", str(os.getpid()))
    wait("moved")
    wait("home-holds")
    say("body-try", attempt(f))
    say("body-getlk", getlk(f))
    say("body-waiting")
    fcntl.lockf(f, fcntl.LOCK_EX)
    say("body-got", repr(time.time()))
    say("body-holds")
    wait("body-release")
    say("body-releasing", repr(time.time()))
    fcntl.lockf(f, fcntl.LOCK_UN)
    wait("home-got")
"#;

impl ViewHome {
    /// Starts `script` at `node` as the test user in the home directory,
    /// in the background (no mosrun).
    fn spawn_user(&self, node: &str, script: &str) -> Child {
        let uid = UID.to_string();
        let script = format!("cd {} && {script}", self.dir);
        self.spawn(
            node,
            &[
                "setpriv",
                "--reuid",
                &uid,
                "--regid",
                &uid,
                "--clear-groups",
                "sh",
                "-c",
                &script,
            ],
        )
    }

    /// The contents of the home file `name` once it exists.
    fn await_file(&self, name: &str, timeout: Duration) -> String {
        let p = self.file(name);
        self.c
            .wait_for(&format!("{name} to appear"), timeout, || Ok(p.exists()))
            .unwrap_or_else(|e| {
                let errs: String = std::fs::read_dir(self.file(""))
                    .map(|d| {
                        d.flatten()
                            .filter(|f| f.file_name().to_string_lossy().ends_with(".err"))
                            .map(|f| {
                                format!(
                                    "{}: {}\n",
                                    f.file_name().to_string_lossy(),
                                    std::fs::read_to_string(f.path()).unwrap_or_default()
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                panic!(
                    "{e:#}\n{errs}remoted n2:\n{}\nhomed n1:\n{}",
                    self.c.log("n2", "remoted"),
                    self.c.log("n1", "homed")
                )
            });
        std::fs::read_to_string(p).unwrap()
    }

    /// Asserts that `name` does not appear within `during` (a side that
    /// must be blocked in F_SETLKW stays blocked).
    fn stays_absent(&self, name: &str, during: Duration) {
        let p = self.file(name);
        let until = std::time::Instant::now() + during;
        while std::time::Instant::now() < until {
            assert!(
                !p.exists(),
                "{name} appeared: a lock the other side holds was granted"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A clock time written by `locker.py`.
fn clock(s: &str) -> f64 {
    s.trim()
        .parse()
        .unwrap_or_else(|e| panic!("not a time {s:?}: {e}"))
}

#[test]
fn fcntl_locks_of_a_migrated_body_and_a_home_process_exclude_each_other() {
    let h = ViewHome::new();
    h.put("locker.py", LOCKER.as_bytes());
    h.put("locked", b"shared record\n");
    let python = mosix_tests::real_python3();
    let argv = [python, "locker.py", "body", h.dir.as_str()];
    let job = h.start(&argv, "lk", None, "", None);
    let body_home_pid = h.pid_of(&argv);
    h.await_file("body-open", Duration::from_secs(30));
    h.migrate(body_home_pid);
    let remoted2 = h.c.daemon_pid("n2", "remoted").unwrap();
    let body = processes_running(&argv)
        .into_iter()
        .find(|&p| p != body_home_pid)
        .expect("a body at n2");
    assert!(descends_from(body, remoted2), "the body is not at n2");
    h.put("moved", b"");

    // The home process holds the lock: the body's F_SETLK is refused, its
    // F_GETLK names the home holder, its F_SETLKW waits for the release.
    let mut home_job = h.spawn_user("n1", &format!("exec {python} locker.py home {}", h.dir));
    let home_pid: i32 = h
        .await_file("home-holds", Duration::from_secs(30))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        h.await_file("body-try", Duration::from_secs(30)),
        "EAGAIN",
        "the body's F_SETLK on a lock a home process holds"
    );
    // The pid is the home holder's as the home kernel knows it. (The
    // body's kernel translates it through its own pid table: here, with
    // every node on one kernel, that is the same number; on separate
    // machines a pid that is not alive on the body's node reads as 0.)
    assert_eq!(
        h.await_file("body-getlk", Duration::from_secs(30)),
        format!("{} 0 0 {home_pid}", libc::F_WRLCK),
        "the body's F_GETLK (type start length pid)"
    );
    h.await_file("body-waiting", Duration::from_secs(30));
    h.stays_absent("body-got", Duration::from_secs(2));
    h.put("home-release", b"");
    let released = clock(&h.await_file("home-releasing", Duration::from_secs(30)));
    let got = clock(&h.await_file("body-got", Duration::from_secs(30)));
    assert!(
        got >= released,
        "the body got the lock at {got}, before the home released it at {released}"
    );

    // The reverse: the body holds it; the home process is refused, sees
    // the lock (held at home by homed as an open-file-description lock,
    // whose pid the kernel reports as -1), and waits for the body.
    h.await_file("body-holds", Duration::from_secs(30));
    assert_eq!(
        h.await_file("home-try", Duration::from_secs(30)),
        "EAGAIN",
        "the home's F_SETLK on a lock the body holds"
    );
    assert_eq!(
        h.await_file("home-getlk", Duration::from_secs(30)),
        format!("{} 0 0 -1", libc::F_WRLCK),
        "the home's F_GETLK (type start length pid)"
    );
    h.await_file("home-waiting", Duration::from_secs(30));
    h.stays_absent("home-got", Duration::from_secs(2));
    // A body holding a lock through the view may not move on (its fds
    // here would close and drop the lock): refused, it stays at n2.
    let out =
        h.c.exec("n1", &["mosmigrate", &body_home_pid.to_string(), "home"])
            .unwrap();
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && why.contains("it holds POSIX record locks on files of n1"),
        "a body holding a lock moved, or not for that reason: {}",
        text(&out)
    );
    assert!(is_running(body) && descends_from(body, remoted2));
    h.put("body-release", b"");
    let released = clock(&h.await_file("body-releasing", Duration::from_secs(30)));
    let got = clock(&h.await_file("home-got", Duration::from_secs(30)));
    assert!(
        got >= released,
        "the home got the lock at {got}, before the body released it at {released}"
    );
    assert!(descends_from(body, remoted2) || !is_running(body));
    let (rc, err) = h.finish(job, "lk", Duration::from_secs(60));
    assert_eq!(rc, "0", "the body's locker failed: {err}");
    let status = home_job.wait().unwrap();
    assert!(status.success(), "the home locker failed: {status}");
}

/// `holder.py DIR`: takes a write lock on `DIR/locked`, says so, lets it
/// go when told, and ends when told (by then it may run elsewhere).
const HOLDER: &str = r#"
import fcntl, os, sys, time
d = sys.argv[1]
def path(n): return os.path.join(d, n)
def wait(n):
    while not os.path.exists(path(n)): time.sleep(0.02)
def say(n):
    open(path(n + ".tmp"), "w").close()
    os.rename(path(n + ".tmp"), path(n))
f = open(path("locked"), "r+")
fcntl.lockf(f, fcntl.LOCK_EX)
say("holder-locked")
wait("holder-unlock")
fcntl.lockf(f, fcntl.LOCK_UN)
say("holder-unlocked")
wait("holder-end")
"#;

#[test]
fn a_process_holding_fcntl_locks_is_refused_a_move_with_the_reason_in_mosps() {
    let h = ViewHome::new();
    h.put("holder.py", HOLDER.as_bytes());
    h.put("locked", b"record\n");
    let python = mosix_tests::real_python3();
    let argv = [python, "holder.py", h.dir.as_str()];
    let job = h.start(&argv, "holder", None, "", None);
    let pid = h.pid_of(&argv);
    h.await_file("holder-locked", Duration::from_secs(30));

    // Refused, with the reason, and it goes on at home holding the lock.
    let out =
        h.c.exec("n1", &["mosmigrate", &pid.to_string(), "n2"])
            .unwrap();
    assert!(!out.status.success(), "a lock holder was moved");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("it holds POSIX record locks") && err.contains("/locked"),
        "mosmigrate should say why: {err}"
    );
    let p = mosix_tests::procs::mosps_entry(&h.c, "n1", pid).expect("mosps lists the holder");
    let why = p["cantmove"].as_str().unwrap_or_default();
    assert!(
        why.starts_with("it holds POSIX record locks (fd 3, "),
        "mosps --json: {p}"
    );
    assert_eq!(p["node"], "n1", "mosps --json: {p}");
    assert_eq!(processes_running(&argv), vec![pid], "not whole at home");
    let probe = format!(
        "{python} -c 'import fcntl,sys; f=open(\"locked\",\"r+\")\ntry:\n fcntl.lockf(f, fcntl.LOCK_EX|fcntl.LOCK_NB); sys.exit(1)\nexcept BlockingIOError: pass'"
    );
    let out = h.user("n1", &probe);
    assert!(
        out.status.success(),
        "the lock is not held at home: {}",
        text(&out)
    );

    // Once it lets go, it may move, and ends well at n2.
    h.put("holder-unlock", b"");
    h.await_file("holder-unlocked", Duration::from_secs(30));
    h.c.wait_for("mosps to clear cantmove", Duration::from_secs(30), || {
        Ok(mosix_tests::procs::mosps_entry(&h.c, "n1", pid)
            .is_some_and(|p| p["cantmove"].is_null()))
    })
    .unwrap();
    h.migrate(pid);
    let remoted2 = h.c.daemon_pid("n2", "remoted").unwrap();
    let body = processes_running(&argv)
        .into_iter()
        .find(|&p| p != pid)
        .expect("a body at n2");
    assert!(descends_from(body, remoted2), "the body is not at n2");
    h.put("holder-end", b"");
    let (rc, err) = h.finish(job, "holder", Duration::from_secs(60));
    assert_eq!(rc, "0", "holder.py failed: {err}");
}

#[test]
fn git_started_at_n2_makes_the_same_commit_as_at_home() {
    let h = ViewHome::new();
    let slow = Slow::new(&h.c);
    // 300 directories: git commit writes a tree object for each, enough
    // work to be moved before it ends.
    h.ok("mkdir src && for i in $(seq 1 300); do mkdir src/d$i; for j in 1 2 3 4 5; do echo \"file $i $j\" > src/d$i/f$j; done; done \
          && head -c 1000000 /dev/urandom > src/big && ln -s big src/link && chmod 750 src/d2");
    // No automatic gc or maintenance (each would fork a git of its own),
    // no hooks, fixed names and dates.
    let cfg = [
        "-c",
        "gc.auto=0",
        "-c",
        "maintenance.auto=false",
        "-c",
        "core.hooksPath=/dev/null",
        "-c",
        "user.name=mx",
        "-c",
        "user.email=mx@example.invalid",
    ];
    let env = "GIT_AUTHOR_DATE=2026-01-01T00:00:00Z GIT_COMMITTER_DATE=2026-01-01T00:00:00Z";
    let git = format!("git {}", cfg.join(" "));
    let want = h.ok(&format!(
        "cp -a src ref && cd ref && {git} init -q && {git} add . && {env} {git} commit -q -m one && {git} rev-parse HEAD"
    ));
    // git init copies its template directory: a big one (many small
    // files, no hooks) gives it enough work in the slowed cgroup to be
    // moved before it ends. It does not change the commit.
    h.ok("mkdir tpl tpl/info && for i in $(seq 1 3000); do echo \"template $i\" > tpl/info/t$i; done");
    h.ok("cp -a src repo");
    let tpl = format!("--template={}/tpl", h.dir);
    let steps: [&[&str]; 3] = [
        &["init", "-q", &tpl],
        &["add", "."],
        &["commit", "-q", "-m", "one"],
    ];
    let mut elsewhere = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let mut argv = vec!["git", "-C", "repo"];
        argv.extend(cfg);
        argv.extend(*step);
        let name = format!("git{i}");
        let bodies = || h.c.log("n2", "remoted").matches("body running").count();
        let before = bodies();
        let job = h.start_flags(&argv, &name, Some(&slow), env, None, "-r n2");
        let (rc, err) = h.finish(job, &name, Duration::from_secs(180));
        assert_eq!(rc, "0", "git {}: {err}", step.join(" "));
        if bodies() != before + 1 {
            elsewhere.push(format!("git {} did not run at n2: {err}", step.join(" ")));
        }
    }
    eprintln!("{elsewhere:?}");
    let got = h.ok(&format!("cd repo && {git} rev-parse HEAD"));
    assert_eq!(got.trim(), want.trim(), "git made a different commit");
    h.ok(&format!(
        "cd repo && {git} fsck --strict && test -z \"$({git} status --porcelain)\""
    ));
    assert!(
        elsewhere.is_empty(),
        "{elsewhere:?}\nremoted n2:\n{}",
        h.c.log("n2", "remoted")
    );
}

#[test]
fn the_home_restarting_fails_the_view_with_eio_without_a_hang_and_new_bodies_work() {
    let h = ViewHome::new();
    let (prog, _, _) = viewio_at_home(&h);
    let remoted2 = h.c.daemon_pid("n2", "remoted").unwrap();
    let argv = [prog.as_str(), h.dir.as_str()];
    let job = h.start(&argv, "first", None, "", None);
    let home = h.pid_of(&argv);
    h.c.wait_for("the first half", Duration::from_secs(30), || {
        Ok(h.file("ready").exists())
    })
    .unwrap();
    h.migrate(home);
    let body = processes_running(&argv)
        .into_iter()
        .find(|&p| p != home)
        .expect("a body");
    assert!(descends_from(body, remoted2));
    let (dev, old_mountpoint) = view_mounts(remoted2)
        .into_iter()
        .next()
        .expect("n2 mounted a view");

    // The home node's daemons restart (SIGTERM, then start again): the
    // body has the home's files open through the view, and its program
    // is mapped from it.
    let t = std::time::Instant::now();
    let out = h.c.local(&["stop", "n1"]).unwrap();
    assert!(out.status.success(), "stop n1: {}", text(&out));
    let out = h.c.local(&["start", "n1"]).unwrap();
    assert!(out.status.success(), "start n1: {}", text(&out));
    eprintln!("n1's daemons restarted in {:?}", t.elapsed());

    // The body outlives the old homed, but its view fails with EIO
    // while the home is away, and viewio, waiting for `go` with a stat
    // every 20 ms, ends on the first error: within 30 s, never hanging
    // in the view. Its deputy rejoins the new homed, which re-attaches
    // the body and passes its end on: the job sees the failure; the
    // view is unmounted once its last body left.
    h.c.wait_for("the body to end", Duration::from_secs(30), || {
        Ok(!is_running(body))
    })
    .unwrap();
    eprintln!(
        "home restarting: the body was gone {:?} after the stop began",
        t.elapsed()
    );
    let (rc, err) = h.finish(job, "first", Duration::from_secs(30));
    assert_ne!(rc, "0", "the job cannot have ended well: {err}");
    eprintln!("the job ended with status {rc}: {err}");
    assert!(!is_running(home), "the deputy {home} outlived its body");
    h.c.wait_for("the view to be unmounted", Duration::from_secs(30), || {
        Ok(view_mounts(remoted2).is_empty())
    })
    .unwrap();
    let stale: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| view_mounts(p).iter().any(|(d, _)| *d == dev))
        .collect();
    assert!(
        stale.is_empty(),
        "the dead view {dev} is still mounted in {stale:?}"
    );

    // A new body of the same home and user gets a fresh view and works.
    let again = format!("{}/again", h.dir);
    std::fs::create_dir(h.at_home(&again)).unwrap();
    std::os::unix::fs::chown(h.at_home(&again), Some(UID), Some(UID)).unwrap();
    h.put("again/input", pattern(SIZE));
    let argv = [prog.as_str(), again.as_str()];
    let job = h.start(&argv, "second", None, "", None);
    let home = h.pid_of(&argv);
    h.c.wait_for("the first half", Duration::from_secs(30), || {
        Ok(h.file("again/ready").exists())
    })
    .unwrap();
    h.migrate(home);
    let views = view_mounts(remoted2);
    assert_eq!(views.len(), 1, "n2 should mount one new view: {views:?}");
    assert_ne!(views[0].1, old_mountpoint, "the new view is the dead one");
    h.put("again/go", b"");
    let (rc, err) = h.finish(job, "second", Duration::from_secs(120));
    assert_eq!(rc, "0", "viewio after the restart failed: {err}");
    h.c.wait_for(
        "the new view to be unmounted",
        Duration::from_secs(30),
        || Ok(view_mounts(remoted2).is_empty()),
    )
    .unwrap();
}

/// `homeloss` started at n1 from node-local copies and moved to n2: the
/// job, the home pid, the body's pid at n2 and the path of its EIO mark.
/// (The program, mosrun and libmosix.so come from a directory every node
/// has, /run, never covered by the view: a page fault on a program mapped
/// from the view while the home is away is a SIGBUS, as on NFS.)
fn start_homeloss(h: &ViewHome, local: &LocalDir) -> (Child, i32, i32, PathBuf) {
    let remoted2 = h.c.daemon_pid("n2", "remoted").unwrap();
    let exe = mosix_tests::build_c_example("homeloss", &local.0, &[]);
    for f in ["mosrun", "libmosix.so"] {
        std::fs::copy(bin(f), local.0.join(f)).unwrap();
    }
    let marks = local.0.join("marks");
    std::fs::create_dir(&marks).unwrap();
    std::os::unix::fs::chown(&marks, Some(UID), Some(UID)).unwrap();
    let mark = marks.join("eio");
    h.put("input", pattern(8 << 20));
    h.put("again", b"again\n");
    let argv = [
        exe.to_str().unwrap(),
        h.dir.as_str(),
        mark.to_str().unwrap(),
    ];
    let job = h.start(
        &argv,
        "loss",
        None,
        "",
        Some(local.0.join("mosrun").as_path()),
    );
    let home = h.pid_of(&argv);
    h.c.wait_for("the program to start", Duration::from_secs(30), || {
        Ok(h.file("ready").exists())
    })
    .unwrap();
    h.migrate(home);
    let body = processes_running(&argv)
        .into_iter()
        .find(|&p| p != home)
        .expect("a body");
    assert!(descends_from(body, remoted2), "the body is not at n2");
    (job, home, body, mark)
}

#[test]
fn a_home_away_past_the_grace_period_ends_the_body_with_a_reason() {
    let h = ViewHome::new();
    set_home_grace(&h.c, "n2", 3);
    let local = LocalDir::new();
    let (_job, home, body, mark) = start_homeloss(&h, &local);
    let homed1 = h.c.daemon_pid("n1", "homed").unwrap();
    let t = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(homed1),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    h.c.wait_for("the body to see EIO", Duration::from_secs(30), || {
        Ok(mark.exists())
    })
    .unwrap();
    assert!(is_running(home), "the deputy died with its homed");
    // homed stays away: the body waits its 3 s, then its host ends it and
    // says why.
    h.c.wait_for("the body to be ended", Duration::from_secs(30), || {
        Ok(!is_running(body))
    })
    .unwrap();
    let took = t.elapsed();
    eprintln!("home away: the body was ended {took:?} after homed died");
    assert!(
        took >= Duration::from_secs(3),
        "the body did not wait its grace period: {took:?}"
    );
    let log = h.c.log("n2", "remoted");
    assert!(
        log.contains("the home did not come back within the grace period; ending the body"),
        "remoted at n2 does not say why it ended the body:\n{log}"
    );
}

#[test]
fn a_body_outlives_a_restart_of_its_home_and_uses_the_view_again() {
    let h = ViewHome::new();
    let remoted2 = h.c.daemon_pid("n2", "remoted").unwrap();
    let local = LocalDir::new();
    let (job, home, body, mark) = start_homeloss(&h, &local);

    // The home node's daemons stop: the body's next open through the
    // view fails with EIO, within 30 s; the body and its deputy live on.
    let t = Instant::now();
    let out = h.c.local(&["stop", "n1"]).unwrap();
    assert!(out.status.success(), "stop n1: {}", text(&out));
    let took =
        h.c.wait_for("the body to see EIO", Duration::from_secs(30), || {
            Ok(mark.exists())
        })
        .unwrap_or_else(|e| panic!("{e:#}\nremoted n2:\n{}", h.c.log("n2", "remoted")));
    eprintln!(
        "home stopped: the body saw EIO {:?} after the stop began ({took:?} after it ended)",
        t.elapsed()
    );
    assert!(is_running(body), "the body died with its home's daemons");
    assert!(is_running(home), "the deputy died with its homed");

    // They start again: the deputy rejoins the new homed, which
    // re-attaches the body; the view opens a new session, so the body
    // opens and reads a home file again, and the file it had open before
    // is open again (the same bytes at an offset never read before); its
    // output held meanwhile arrives once, and its status reaches the
    // shell at home.
    let t = Instant::now();
    let out = h.c.local(&["start", "n1"]).unwrap();
    assert!(out.status.success(), "start n1: {}", text(&out));
    let (rc, err) = h.finish(job, "loss", Duration::from_secs(120));
    eprintln!(
        "home back: the job ended {:?} after the start began ({} lines of output)",
        t.elapsed(),
        err.lines().count()
    );
    assert_eq!(rc, "7", "the body did not finish its work: {err}");
    assert_eq!(
        err.matches("homeloss: EIO after").count(),
        1,
        "the body's output while its home was away: {err}"
    );
    assert!(
        err.contains("homeloss: old fd: read 4096 bytes, the same"),
        "a file opened before the restart should be open again: {err}"
    );
    assert_eq!(err.matches("homeloss: reopened").count(), 1, "{err}");
    // Its output while the home went away and came back: every line
    // once, in order.
    let ticks: Vec<&str> = err.lines().filter(|l| l.starts_with("tick ")).collect();
    let want: Vec<String> = (0..ticks.len()).map(|i| format!("tick {i}")).collect();
    assert_eq!(ticks, want, "output lost or repeated");
    assert!(
        err.contains(&format!("homeloss: ticks {}\n", ticks.len())),
        "output lost at the end: {err}"
    );
    assert!(!is_running(body));
    assert!(!is_running(home));
    assert!(
        h.c.log("n1", "homed").contains("deputy rejoined"),
        "homed at n1 did not re-attach the body:\n{}",
        h.c.log("n1", "homed")
    );
    h.c.wait_for("the view to be unmounted", Duration::from_secs(30), || {
        Ok(view_mounts(remoted2).is_empty())
    })
    .unwrap();
}
