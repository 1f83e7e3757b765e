//! A body's process tree (issue 4, ARCHITECTURE.md section 4 "process tree"):
//! a program moved to n2 forks, execs and waits there, and every child
//! has its own deputy at home, a child of its parent's deputy, so home
//! pids, `wait`, `$?` and signals behave as without mosix.
//!
//! Most tests move a shell to n2 while it spins in a builtin-only loop,
//! then let it go on with a SIGUSR1 sent to its home pid (forwarded by
//! its deputy). The last ones move a shell (dash, bash) or `make -j2`
//! while it waits for children it started at home (issue 4: they stay
//! at home, children of its deputy, which waits for them on the body's
//! behalf), and one brings it home again mid-wait. The last four move
//! a program on to n3, or home, while children it forked at n2 run there
//! (python3 with one ended and not yet waited for, dash in its `wait`).
//! The files live
//! on a tmpfs mounted over `/srv` in n1's mount namespace only, so what
//! the bodies read and write there goes through the view; the test reads
//! them through `/proc/<n1's homed>/root`.
//!
//! Run as root after building the workspace:
//! `cargo test -p mosix-tests --test family -- --test-threads=1`.

use mosix_tests::home::Home;
use mosix_tests::procs::{cmdline, descends_from, is_deputy, mosps_entry, pgrp, ppid, text};
use mosix_tests::{bin, is_running};
use std::process::{Child, Output};
use std::time::Duration;

/// The owner of the test's files and processes (not root: the view never
/// acts as root).
const UID: u32 = 4251;

/// The shell's gate: spin (builtins only) until SIGUSR1, then run `then`.
const GATE: &str = "trap 'go=1' USR1; while [ -z \"$go\" ]; do :; done; ";

/// The shared fixture (a cluster, and a directory that only n1 has), with
/// this file's way of starting, moving and ending jobs.
struct FamilyHome(Home);

impl std::ops::Deref for FamilyHome {
    type Target = Home;

    fn deref(&self) -> &Home {
        &self.0
    }
}

impl FamilyHome {
    fn new() -> FamilyHome {
        FamilyHome::with_nodes(2)
    }

    /// As [`FamilyHome::new`], with `nodes` nodes (n3 and on are other
    /// nodes a body can move on to).
    fn with_nodes(nodes: usize) -> FamilyHome {
        FamilyHome(Home::up(nodes, "family", UID))
    }

    /// Starts, at n1 as the test user, `mosrun -h -- sh -c GATE then`,
    /// stdout through a pipe into `<name>.out`, stderr into
    /// `<name>.err`, `$?` into `<name>.rc`; returns it and its home pid.
    fn start(&self, then: &str, name: &str) -> (Child, i32) {
        let inner = format!("{GATE}{then}");
        self.start_argv(&["sh", "-c", &inner], name)
    }

    /// Starts, at n1 as the test user in the directory, `mosrun -h --
    /// ARGV` as [`FamilyHome::start`] does; returns it and its home pid.
    fn start_argv(&self, argv: &[&str], name: &str) -> (Child, i32) {
        let d = &self.dir;
        let quoted: Vec<String> = argv
            .iter()
            .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
            .collect();
        let script = format!(
            "cd {d} && ( {mosrun} -h -- {args} < /dev/null 2> {d}/{name}.err; echo $? > {d}/{name}.rc.tmp ) \
             | cat > {d}/{name}.out; mv {d}/{name}.rc.tmp {d}/{name}.rc",
            mosrun = bin("mosrun").display(),
            args = quoted.join(" "),
        );
        let mut user = self.as_user();
        user.extend(["sh".into(), "-c".into(), script]);
        let child = self.spawn("n1", &user);
        let mut pid = 0;
        self.c
            .wait_for("the job to start", Duration::from_secs(30), || {
                pid = mosix_tests::procs::processes_running(argv)
                    .first()
                    .copied()
                    .unwrap_or(0);
                Ok(pid > 0 && mosps_entry(&self.c, "n1", pid).is_some())
            })
            .unwrap();
        (child, pid)
    }

    /// Move the job `pid` to n2, check that its body really runs there,
    /// and let it go on.
    fn move_and_go(&self, pid: i32) {
        self.move_to_n2(pid);
        let out = self
            .c
            .exec("n1", &["kill", "-USR1", &pid.to_string()])
            .unwrap();
        assert!(out.status.success(), "kill -USR1: {}", text(&out));
    }

    /// Move the job `pid` to n2 and check that its body really runs
    /// there (a descendant of n2's remoted); its local pid there.
    fn move_to_n2(&self, pid: i32) -> i32 {
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
        assert!(
            is_deputy(pid),
            "home pid {pid} is not a deputy after the move"
        );
        let remoted2 = self.c.daemon_pid("n2", "remoted").unwrap();
        let argv = cmdline(pid);
        let bodies: Vec<i32> = all_pids()
            .into_iter()
            .filter(|&p| p != pid && cmdline(p) == argv && is_running(p))
            .collect();
        assert_eq!(bodies.len(), 1, "one body of {argv:?}: {bodies:?}");
        assert!(
            descends_from(bodies[0], remoted2),
            "the body {} does not descend from n2's remoted",
            bodies[0]
        );
        bodies[0]
    }

    /// Waits for `<name>.rc`: (stdout, stderr, `$?`).
    fn finish(&self, job: Child, name: &str, timeout: Duration) -> (String, String, String) {
        let rc = self.finish_rc(job, name, timeout);
        (
            self.read(&format!("{name}.out")),
            self.read(&format!("{name}.err")),
            rc,
        )
    }

    /// Nothing of the test user's is left on this machine (no body, no
    /// deputy, no zombie), and neither daemon keeps a zombie child.
    fn assert_nothing_left(&self) {
        let mut daemons = vec![self.c.daemon_pid("n1", "homed").unwrap()];
        for i in 2..=self.c.nodes {
            daemons.push(self.c.daemon_pid(&format!("n{i}"), "remoted").unwrap());
        }
        let mut left = Vec::new();
        let done = self.c.wait_for(
            "the test user's processes to be gone",
            Duration::from_secs(15),
            || {
                left = all_pids()
                    .into_iter()
                    .filter(|&p| {
                        owner(p) == Some(UID)
                            || (state(p) == 'Z' && ppid(p).is_some_and(|pp| daemons.contains(&pp)))
                    })
                    .map(|p| (p, state(p), cmdline(p)))
                    .collect::<Vec<_>>();
                Ok(left.is_empty())
            },
        );
        assert!(done.is_ok(), "left behind: {left:?}");
    }
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

fn owner(pid: i32) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|m| m.uid())
}

fn state(pid: i32) -> char {
    mosix_tests::procs::state_of(pid)
}

/// The script whose output must be the same at n2 as at home: a pipeline,
/// loops of external commands, `$?` of children that exit, are killed,
/// or are subshells. With `IDS` set it also records a child's and a
/// grandchild's `$$ $PPID` and holds the child until `release` appears.
const SCRIPT: &str = r#"echo start
seq 1 20000 | awk '{s+=$1} END {print s}' | sha256sum
for i in 1 2 3 4 5; do
    expr $i \* $i
    test $i -lt 3; echo "lt3 $?"
done
sh -c 'exit 7'; echo "seven $?"
sh -c 'kill -TERM $$'; echo "term $?"
( echo sub; exit 4 ); echo "subshell $?"
printf '%s\n' b a c | sort | tr a-z A-Z
if [ -n "$IDS" ]; then
    sh -c 'echo "$$ $PPID" > ids.child; while ! [ -e release ]; do sleep 0.1; done; sh -c "echo \$\$ \$PPID" > ids.grandchild'
    echo "ids $?"
else
    echo "ids 0"
fi
echo end
exit 5
"#;

/// Two numbers of a line written by the script.
fn two(s: &str) -> (i32, i32) {
    let v: Vec<i32> = s
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    assert_eq!(v.len(), 2, "not two pids: {s:?}");
    (v[0], v[1])
}

#[test]
fn a_shell_script_away_forks_execs_and_waits_as_at_home() {
    let h = FamilyHome::new();
    h.put("script.sh", SCRIPT);
    let reference = h.user("n1", "sh ./script.sh");
    let (job, pid) = h.start("IDS=1 exec sh ./script.sh", "script");
    h.move_and_go(pid);
    // The child holds on until released: look at it while it lives.
    let ids = h.file("ids.child");
    h.c.wait_for("the child's ids", Duration::from_secs(60), || {
        Ok(std::fs::read_to_string(&ids).is_ok_and(|s| s.ends_with('\n')))
    })
    .unwrap();
    let (child, child_ppid) = two(&h.read("ids.child"));
    assert_eq!(
        child_ppid, pid,
        "the child's getppid is its parent's home pid"
    );
    assert!(
        is_deputy(child),
        "the child's getpid {child} is not a deputy at home"
    );
    assert_eq!(
        ppid(child),
        Some(pid),
        "the child's deputy is a child of the parent's deputy"
    );
    let entry = mosps_entry(&h.c, "n1", child).expect("mosps lists the child");
    assert_eq!(entry["node"], "n2", "{entry}");
    assert!(
        entry["cantmove"].is_string(),
        "a forked child does not move alone: {entry}"
    );
    let parent = mosps_entry(&h.c, "n1", pid).expect("mosps lists the parent");
    assert!(
        parent["cantmove"].is_null(),
        "a parent with children at n2 may move on without them: {parent}"
    );
    h.put("release", "");
    let (out, err, rc) = h.finish(job, "script", Duration::from_secs(180));
    let (grandchild, grandchild_ppid) = two(&h.read("ids.grandchild"));
    assert_eq!(
        grandchild_ppid, child,
        "the grandchild's parent is the child's home pid"
    );
    assert!(grandchild > 0 && grandchild != child);
    assert_eq!(
        out,
        String::from_utf8_lossy(&reference.stdout),
        "stdout differs; stderr: {err}"
    );
    assert_eq!(rc, reference.status.code().unwrap().to_string());
    assert_eq!(rc, "5");
    h.assert_nothing_left();
}

/// A small C project: three sources, a header generated by a rule with a
/// pipe.
fn put_project(h: &FamilyHome, dir: &str, broken: bool) {
    h.put(
        &format!("{dir}/Makefile"),
        "OBJS = main.o util.o calc.o\n\
         prog: $(OBJS)\n\tcc -o $@ $(OBJS)\n\
         %.o: %.c gen.h common.h\n\tcc -O1 -c $< -o $@\n\
         gen.h: values.txt\n\tsort -n values.txt | awk '{s+=$$1} END {printf \"#define TOTAL %d\\n\", s}' > $@\n",
    );
    h.put(
        &format!("{dir}/common.h"),
        "int twice(int);\nint square(int);\n",
    );
    h.put(
        &format!("{dir}/main.c"),
        "#include <stdio.h>\n#include \"gen.h\"\n#include \"common.h\"\n\
         int main(void) { printf(\"total %d twice %d square %d\\n\", TOTAL, twice(TOTAL), square(12)); return 0; }\n",
    );
    h.put(
        &format!("{dir}/util.c"),
        "#include \"gen.h\"\n#include \"common.h\"\nint twice(int x) { return 2 * x; }\n",
    );
    let calc = if broken {
        "#include \"common.h\"\nint square(int x) { return x * x }\n"
    } else {
        "#include \"common.h\"\nint square(int x) { return x * x; }\n"
    };
    h.put(&format!("{dir}/calc.c"), calc);
    let values: String = (1..=300)
        .rev()
        .map(|i| format!("{}\n", i * 7 % 301))
        .collect();
    h.put(&format!("{dir}/values.txt"), &values);
}

/// make's output lines, sorted (-j2 runs recipes in either order), with
/// the directory's name taken out and the timing-dependent line dropped.
fn normalized(s: &str, dir: &str) -> Vec<String> {
    let mut v: Vec<String> = s
        .lines()
        .filter(|l| !l.contains("Waiting for unfinished jobs"))
        .map(|l| l.replace(dir, "DIR"))
        .collect();
    v.sort();
    v
}

fn make_away(h: &FamilyHome, broken: bool) {
    let (r, m) = if broken {
        ("badref", "badmx")
    } else {
        ("ref", "mx")
    };
    put_project(h, r, broken);
    put_project(h, m, broken);
    let reference = h.user("n1", &format!("make -j2 -C {d}/{r}", d = h.dir));
    let then = format!("exec make -j2 -C {d}/{m}", d = h.dir);
    let (job, pid) = h.start(&then, m);
    h.move_and_go(pid);
    let (out, err, rc) = h.finish(job, m, Duration::from_secs(300));
    let dir_ref = format!("{}/{r}", h.dir);
    let dir_mx = format!("{}/{m}", h.dir);
    assert_eq!(
        rc,
        reference.status.code().unwrap().to_string(),
        "make's status; stdout: {out}\nstderr: {err}"
    );
    assert_eq!(
        normalized(&out, &dir_mx),
        normalized(&String::from_utf8_lossy(&reference.stdout), &dir_ref),
        "make's output"
    );
    assert_eq!(
        normalized(&err, &dir_mx),
        normalized(&String::from_utf8_lossy(&reference.stderr), &dir_ref),
        "make's errors"
    );
    if broken {
        assert_ne!(rc, "0");
        assert!(
            err.contains("calc.c"),
            "the compiler names the bad file: {err}"
        );
    } else {
        assert_eq!(rc, "0");
        // Written at home, through the view.
        for f in ["main.o", "util.o", "calc.o", "gen.h", "prog"] {
            assert!(h.file(&format!("{m}/{f}")).exists(), "{f} is not at home");
        }
        let run = |d: &str| h.user("n1", &format!("./{d}/prog"));
        let (a, b) = (run(r), run(m));
        assert!(
            a.status.success() && b.status.success(),
            "{}\n{}",
            text(&a),
            text(&b)
        );
        assert_eq!(b.stdout, a.stdout, "the built program's output");
    }
    h.assert_nothing_left();
}

#[test]
fn make_j2_away_builds_at_home_through_the_view() {
    let h = FamilyHome::new();
    make_away(&h, false);
}

#[test]
fn a_failing_make_away_fails_as_at_home() {
    let h = FamilyHome::new();
    make_away(&h, true);
}

#[test]
fn sigterm_to_a_childs_home_pid_reaches_its_body() {
    let h = FamilyHome::new();
    let then = "sleep 120 & echo $! > sleeper.pid; wait $!; echo \"status $?\"";
    let (job, pid) = h.start(then, "term");
    h.move_and_go(pid);
    let file = h.file("sleeper.pid");
    h.c.wait_for("the child's home pid", Duration::from_secs(60), || {
        Ok(std::fs::read_to_string(&file).is_ok_and(|s| s.ends_with('\n')))
    })
    .unwrap();
    let child: i32 = h.read("sleeper.pid").trim().parse().unwrap();
    assert!(is_deputy(child), "$! = {child} is not a deputy at home");
    assert_eq!(ppid(child), Some(pid));
    let remoted2 = h.c.daemon_pid("n2", "remoted").unwrap();
    // `$!` is known at the fork; the child execs sleep a moment later.
    let mut sleepers = Vec::new();
    h.c.wait_for("the sleep body", Duration::from_secs(30), || {
        sleepers = all_pids()
            .into_iter()
            .filter(|&p| {
                owner(p) == Some(UID)
                    && cmdline(p) == ["sleep", "120"]
                    && is_running(p)
                    && !is_deputy(p)
            })
            .collect();
        Ok(sleepers.len() == 1)
    })
    .unwrap();
    assert!(descends_from(sleepers[0], remoted2), "sleep runs at n2");
    let out =
        h.c.exec("n1", &["kill", "-TERM", &child.to_string()])
            .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let (out, err, rc) = h.finish(job, "term", Duration::from_secs(60));
    assert_eq!(out, "status 143\n", "stderr: {err}");
    assert_eq!(rc, "0");
    h.assert_nothing_left();
}

#[test]
fn a_child_whose_parent_exits_first_still_ends_and_is_reaped() {
    let h = FamilyHome::new();
    // The parent does not wait: its child outlives it, then ends with 9.
    // (The child holds the job's stdout, as it would at home, so the
    // job's pipe ends only with it.)
    let then =
        "sh -c 'echo $$ > orphan.pid; while ! [ -e release ]; do sleep 0.1; done; exit 9' & exit 0";
    let (job, pid) = h.start(then, "orphan");
    h.move_and_go(pid);
    let file = h.file("orphan.pid");
    h.c.wait_for("the orphan's home pid", Duration::from_secs(60), || {
        Ok(std::fs::read_to_string(&file).is_ok_and(|s| s.ends_with('\n')))
    })
    .unwrap();
    let orphan: i32 = h.read("orphan.pid").trim().parse().unwrap();
    assert!(
        is_deputy(orphan),
        "the orphan {orphan} has its deputy at home"
    );
    h.c.wait_for(
        "the parent's deputy to end",
        Duration::from_secs(30),
        || Ok(!is_running(pid)),
    )
    .unwrap();
    assert!(
        is_running(orphan),
        "the orphan's deputy lives on after its parent"
    );
    h.put("release", "");
    h.c.wait_for(
        "the orphan's deputy to end",
        Duration::from_secs(30),
        || Ok(!is_running(orphan)),
    )
    .unwrap();
    let (out, err, rc) = h.finish(job, "orphan", Duration::from_secs(60));
    assert_eq!((out.as_str(), rc.as_str()), ("", "0"), "stderr: {err}");
    h.assert_nothing_left();
}

/// glibc's `system` and `popen` in a body, from our test program, `awk`
/// and `python3`: each shell is its caller's managed child (its `$PPID`
/// is the caller's home pid, it has a deputy at home under the caller's),
/// and every status and byte of output is as at home.
const SHELL_KIDS: &str = r#"./shellkids; echo "shellkids $?"
sh -c 'exec awk -v a=$$ "BEGIN { r = system(\"test \$PPID = \" a); print \"awk system\", r }"'
PYTHON -c 'import os; print("python os.system", os.system("test $PPID = %d" % os.getpid()))'
"#;

#[test]
fn system_and_popen_in_a_body_start_managed_children() {
    let h = FamilyHome::new();
    let exe = mosix_tests::build_c_example("shellkids", std::path::Path::new(&h.c.dir), &[]);
    let prog = h.file("shellkids");
    std::fs::copy(&exe, &prog).unwrap();
    std::os::unix::fs::chown(&prog, Some(UID), Some(UID)).unwrap();
    h.put(
        "kids.sh",
        SHELL_KIDS.replace("PYTHON", mosix_tests::real_python3()),
    );
    let reference = h.user(
        "n1",
        "touch release && sh ./kids.sh; s=$?; rm -f release sys.pid written; exit $s",
    );
    let want = String::from_utf8_lossy(&reference.stdout).into_owned();
    assert!(
        want.contains("system: parent ok")
            && want.contains("popen r: parent ok")
            && want.contains("awk system 0")
            && want.contains("python os.system 0"),
        "the reference run: {}",
        text(&reference)
    );
    let (job, pid) = h.start("exec sh ./kids.sh", "kids");
    h.move_and_go(pid);
    // The system() shell waits for `release`: look at it while it lives.
    let pidfile = h.file("sys.pid");
    h.c.wait_for("the system() shell", Duration::from_secs(60), || {
        Ok(std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n')))
    })
    .unwrap();
    let shell: i32 = h.read("sys.pid").trim().parse().unwrap();
    assert!(
        is_deputy(shell),
        "the system() shell's $$ {shell} is not a deputy at home"
    );
    // ps at home shows what each body runs now, though every deputy was
    // forked from one that ran something else.
    h.c.wait_for(
        "ps at home to show each program",
        Duration::from_secs(30),
        || Ok(cmdline(pid) == ["sh", "./kids.sh"] && cmdline(shell).concat().contains("sys.pid")),
    )
    .unwrap_or_else(|e| panic!("{e:#}: {:?} and {:?}", cmdline(pid), cmdline(shell)));
    let caller = ppid(shell).expect("the shell's deputy has a parent");
    assert_eq!(
        ppid(caller),
        Some(pid),
        "the shell's deputy descends from shellkids', a child of the script's"
    );
    let remoted2 = h.c.daemon_pid("n2", "remoted").unwrap();
    let bodies: Vec<i32> = all_pids()
        .into_iter()
        .filter(|&p| p != shell && cmdline(p).concat().contains("sys.pid") && is_running(p))
        .collect();
    assert!(
        bodies.iter().any(|&b| descends_from(b, remoted2)),
        "no body of the system() shell at n2 (n2's remoted is {remoted2}): {:?}",
        bodies
            .iter()
            .map(|&b| (b, ppid(b), ppid(ppid(b).unwrap_or(1)), cmdline(b)))
            .collect::<Vec<_>>()
    );
    h.put("release", "");
    let (out, err, rc) = h.finish(job, "kids", Duration::from_secs(180));
    assert_eq!(out, want, "stdout differs; stderr: {err}");
    assert_eq!(
        err,
        String::from_utf8_lossy(&reference.stderr),
        "stderr differs"
    );
    assert_eq!(rc, reference.status.code().unwrap().to_string());
    h.assert_nothing_left();
}

/// The kernel function `pid` sleeps in (`do_wait`: a wait for a child).
fn wchan(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default()
}

/// The script a shell runs while the test moves it: its first children
/// start at home and hold on until `go`, one in the foreground (the shell
/// waits for it when it moves) and one in the background (`wait $!`);
/// later ones (a pipeline, `$?` of codes and of a kill, a child held
/// until `go2`) start where the body runs then.
const KIDS_SCRIPT: &str = r#"echo start
sh -c 'while ! [ -e go ]; do sleep 0.05; done; sleep 1; exit 6' &
bg=$!
sh -c 'echo $$ > held.pid; while ! [ -e go ]; do sleep 0.05; done; exit 3'
echo "held $?"
wait $bg
echo "bg $?"
seq 1 20000 | awk '{s+=$1} END {print s}' | sha256sum
for i in 1 2 3; do
    sh -c "exit $i"; echo "loop $?"
done
sh -c 'kill -TERM $$'; echo "term $?"
sh -c 'echo "$$ $PPID" > later.ids; while ! [ -e go2 ]; do sleep 0.05; done; exit 8'
echo "later $?"
( echo sub; exit 4 ); echo "subshell $?"
printf '%s\n' b a c | sort | tr a-z A-Z
echo end
exit 5
"#;

/// The reference: `shell` runs `script` at home without mosix, its gates
/// open; the gate files are taken away after.
fn reference_run(h: &FamilyHome, shell: &str, script: &str, gates: &[&str]) -> Output {
    for g in gates {
        h.put(g, "");
    }
    let out = h.user("n1", &format!("{shell} ./{script}"));
    for g in gates {
        std::fs::remove_file(h.file(g)).unwrap();
    }
    for f in ["held.pid", "later.ids", "after.ids"] {
        let _ = std::fs::remove_file(h.file(f));
    }
    out
}

/// Waits for the first line of file `name` (written by the script).
fn line_of(h: &FamilyHome, name: &str) -> String {
    let file = h.file(name);
    h.c.wait_for(name, Duration::from_secs(60), || {
        Ok(std::fs::read_to_string(&file).is_ok_and(|s| s.ends_with('\n')))
    })
    .unwrap();
    h.read(name).trim().to_string()
}

/// The shell `pid` at home waits for its child `held` (pid from
/// `held.pid`): both checked; `held`'s pid.
fn waiting_at_home(h: &FamilyHome, pid: i32) -> i32 {
    let held: i32 = line_of(h, "held.pid").parse().unwrap();
    assert_eq!(ppid(held), Some(pid), "the held child is the shell's");
    h.c.wait_for("the shell to wait", Duration::from_secs(30), || {
        Ok(wchan(pid) == "do_wait")
    })
    .unwrap_or_else(|e| panic!("{e:#}: the shell sleeps in {:?}", wchan(pid)));
    held
}

/// A shell moved to n2 while it waits for a child it started at home:
/// that child runs on at home, still its child (of its deputy), the
/// shell's `wait`, `$?` and `wait $!` see it end there, and the children
/// it starts afterwards run at n2 with the body.
fn shell_moved_while_waiting(shell: &str) {
    let h = FamilyHome::new();
    h.put("kids.sh", KIDS_SCRIPT);
    let reference = reference_run(&h, shell, "kids.sh", &["go", "go2"]);
    assert_eq!(reference.status.code(), Some(5), "{}", text(&reference));
    let (job, pid) = h.start_argv(&[shell, "./kids.sh"], "kids");
    let held = waiting_at_home(&h, pid);
    let body = h.move_to_n2(pid);
    // The home child runs on where it was, a child of the deputy.
    assert!(is_running(held), "the held child {held} is gone");
    assert!(
        !is_deputy(held),
        "the held child {held} stayed an ordinary process"
    );
    assert_eq!(ppid(held), Some(pid), "the held child is the deputy's");
    let entry = mosps_entry(&h.c, "n1", pid).expect("mosps lists the shell");
    assert_eq!(entry["node"], "n2", "{entry}");
    h.put("go", "");
    // A later child: forked by the body at n2, with a deputy at home.
    let (later, later_ppid) = two(&line_of(&h, "later.ids"));
    assert_eq!(
        later_ppid, pid,
        "the later child's parent is the shell's home pid"
    );
    assert!(
        is_deputy(later),
        "the later child {later} has a deputy at home"
    );
    assert_eq!(ppid(later), Some(pid));
    let remoted2 = h.c.daemon_pid("n2", "remoted").unwrap();
    let mut bodies = Vec::new();
    h.c.wait_for("the later child's body", Duration::from_secs(30), || {
        bodies = all_pids()
            .into_iter()
            .filter(|&p| {
                owner(p) == Some(UID)
                    && cmdline(p).first().map(String::as_str) == Some("sh")
                    && cmdline(p).join(" ").contains("later.ids")
                    && is_running(p)
                    && !is_deputy(p)
            })
            .collect();
        Ok(bodies.len() == 1)
    })
    .unwrap();
    assert!(
        descends_from(bodies[0], remoted2),
        "the later child runs at n2"
    );
    assert_eq!(ppid(bodies[0]), Some(body), "a child of the shell's body");
    h.put("go2", "");
    let (out, err, rc) = h.finish(job, "kids", Duration::from_secs(120));
    assert_eq!(
        out,
        String::from_utf8_lossy(&reference.stdout),
        "stdout differs; stderr: {err}"
    );
    assert_eq!(err, String::from_utf8_lossy(&reference.stderr));
    assert_eq!(rc, "5");
    h.assert_nothing_left();
}

#[test]
fn dash_moved_while_it_waits_for_a_home_child_sees_it_end() {
    shell_moved_while_waiting("sh");
}

#[test]
fn bash_moved_while_it_waits_for_a_home_child_sees_it_end() {
    shell_moved_while_waiting("bash");
}

/// The script moved away and back while it waits for its child.
const AWAY_AND_BACK: &str = r#"echo start
sh -c 'echo $$ > held.pid; while ! [ -e go ]; do sleep 0.05; done; exit 3'
echo "held $?"
sh -c 'echo "$$ $PPID" > after.ids; exit 2'; echo "after $?"
seq 1 1000 | sort -r | head -3
exit 7
"#;

#[test]
fn a_shell_moved_away_and_home_mid_wait_is_whole_with_its_child() {
    let h = FamilyHome::new();
    h.put("back.sh", AWAY_AND_BACK);
    let reference = reference_run(&h, "sh", "back.sh", &["go"]);
    assert_eq!(reference.status.code(), Some(7), "{}", text(&reference));
    let (job, pid) = h.start_argv(&["sh", "./back.sh"], "back");
    let held = waiting_at_home(&h, pid);
    let body = h.move_to_n2(pid);
    assert_eq!(ppid(held), Some(pid), "the held child is the deputy's");
    let out =
        h.c.exec("n1", &["mosmigrate", &pid.to_string(), "home"])
            .unwrap();
    assert!(
        out.status.success(),
        "mosmigrate home: {}\nhomed n1:\n{}",
        text(&out),
        h.c.log("n1", "homed")
    );
    h.c.wait_for("the body at n2 to end", Duration::from_secs(30), || {
        Ok(!is_running(body))
    })
    .unwrap();
    assert!(!is_deputy(pid), "{pid} is the process again, not a deputy");
    assert_eq!(cmdline(pid), ["sh", "./back.sh"]);
    assert_eq!(ppid(held), Some(pid), "the held child is still its child");
    assert!(is_running(held));
    let entry = mosps_entry(&h.c, "n1", pid).expect("mosps lists the shell");
    assert_eq!(entry["node"], "n1", "{entry}");
    // Home again, it waits for its child in the kernel, as before.
    h.c.wait_for("the shell to wait at home", Duration::from_secs(30), || {
        Ok(wchan(pid) == "do_wait")
    })
    .unwrap_or_else(|e| panic!("{e:#}: the shell sleeps in {:?}", wchan(pid)));
    h.put("go", "");
    let (out, err, rc) = h.finish(job, "back", Duration::from_secs(120));
    let (after, after_ppid) = two(&h.read("after.ids"));
    assert_eq!(
        after_ppid, pid,
        "the child after coming home is the shell's"
    );
    assert!(after > 0 && after != held);
    assert_eq!(
        out,
        String::from_utf8_lossy(&reference.stdout),
        "stdout differs; stderr: {err}"
    );
    assert_eq!(rc, "7");
    h.assert_nothing_left();
}

/// make's compile rules hold on at `go` (and the third object at `go2`),
/// so the test can move make while two compilers' shells run at home.
fn put_gated_project(h: &FamilyHome, dir: &str) {
    put_project(h, dir, false);
    h.put(
        &format!("{dir}/Makefile"),
        "OBJS = main.o util.o calc.o\n\
         prog: $(OBJS)\n\tcc -o $@ $(OBJS)\n\
         %.o: %.c gen.h common.h\n\tsh ../gate $@ && cc -O1 -c $< -o $@\n\
         gen.h: values.txt\n\tsort -n values.txt | awk '{s+=$$1} END {printf \"#define TOTAL %d\\n\", s}' > $@\n",
    );
}

/// The gate of a compile rule: says it runs, then waits.
const GATE_SCRIPT: &str = r#"echo $$ > $1.gate
while ! [ -e ../go ]; do sleep 0.05; done
if [ "$1" = calc.o ]; then
    while ! [ -e ../go2 ]; do sleep 0.05; done
fi
"#;

#[test]
fn make_j2_moved_while_its_compilers_run_at_home_builds_the_same() {
    let h = FamilyHome::new();
    h.put("gate", GATE_SCRIPT);
    put_gated_project(&h, "ref");
    put_gated_project(&h, "mx");
    h.put("go", "");
    h.put("go2", "");
    let reference = h.user("n1", &format!("make -j2 -C {}/ref", h.dir));
    assert!(reference.status.success(), "{}", text(&reference));
    std::fs::remove_file(h.file("go")).unwrap();
    std::fs::remove_file(h.file("go2")).unwrap();
    let (job, pid) = h.start_argv(&["make", "-j2", "-C", &format!("{}/mx", h.dir)], "mx");
    // Two compile rules run at home, each its own shell, make waits.
    let mut gated = Vec::new();
    h.c.wait_for("two compile rules at home", Duration::from_secs(60), || {
        gated = ["main.o", "util.o", "calc.o"]
            .iter()
            .filter(|o| h.file(&format!("mx/{o}.gate")).exists())
            .map(|o| o.to_string())
            .collect();
        Ok(gated.len() == 2)
    })
    .unwrap();
    assert_eq!(gated, ["main.o", "util.o"], "make starts the first two");
    let rules: Vec<i32> = all_pids()
        .into_iter()
        .filter(|&p| ppid(p) == Some(pid) && is_running(p))
        .collect();
    assert_eq!(rules.len(), 2, "make's children at home: {rules:?}");
    h.move_to_n2(pid);
    for r in &rules {
        assert_eq!(ppid(*r), Some(pid), "rule {r} is still make's child");
        assert!(!is_deputy(*r), "rule {r} runs at home, not away");
    }
    h.put("go", "");
    // The third object's rule starts after the move: at n2.
    let calc: i32 = line_of(&h, "mx/calc.o.gate").parse().unwrap();
    assert!(
        is_deputy(calc),
        "the third rule's shell {calc} has a deputy at home"
    );
    // Its parent, the rule's shell, was forked by make's body at n2.
    let rule = ppid(calc).unwrap();
    assert!(is_deputy(rule), "the third rule's shell {rule} is away");
    assert_eq!(ppid(rule), Some(pid), "the third rule is make's child");
    let remoted2 = h.c.daemon_pid("n2", "remoted").unwrap();
    let mut bodies = Vec::new();
    h.c.wait_for("the third rule's body", Duration::from_secs(30), || {
        bodies = mosix_tests::procs::processes_running(&["sh", "../gate", "calc.o"])
            .into_iter()
            .filter(|&p| owner(p) == Some(UID) && !is_deputy(p))
            .collect();
        Ok(bodies.len() == 1)
    })
    .unwrap();
    assert!(
        descends_from(bodies[0], remoted2),
        "the third rule runs at n2"
    );
    h.put("go2", "");
    let (out, err, rc) = h.finish(job, "mx", Duration::from_secs(300));
    let (dir_ref, dir_mx) = (format!("{}/ref", h.dir), format!("{}/mx", h.dir));
    assert_eq!(rc, "0", "make's status; stdout: {out}\nstderr: {err}");
    assert_eq!(
        normalized(&out, &dir_mx),
        normalized(&String::from_utf8_lossy(&reference.stdout), &dir_ref),
        "make's output"
    );
    assert_eq!(
        normalized(&err, &dir_mx),
        normalized(&String::from_utf8_lossy(&reference.stderr), &dir_ref),
        "make's errors"
    );
    let run = |d: &str| h.user("n1", &format!("./{d}/prog"));
    let (a, b) = (run("ref"), run("mx"));
    assert!(
        a.status.success() && b.status.success(),
        "{}\n{}",
        text(&a),
        text(&b)
    );
    assert_eq!(b.stdout, a.stdout, "the built program's output");
    assert_eq!(
        std::fs::read(h.file("mx/prog")).unwrap().len(),
        std::fs::read(h.file("ref/prog")).unwrap().len(),
        "the same program"
    );
    h.assert_nothing_left();
}

/// Process groups and sessions made by a body: its own group, a child's
/// group that a `killpg` from the body ends, a child's new session. Each
/// line is a relation, true at home without mosix.
const GROUPS: &str = r#"
import os, signal, time
me = os.getpid()
os.setpgid(0, 0)
print("own group", os.getpgrp() == me, os.getpgid(0) == me, os.getpgid(me) == me)
pid = os.fork()
if pid == 0:
    os._exit(4)
p, st = os.waitpid(-me, 0)
print("wait for own group", p == pid and os.WEXITSTATUS(st) == 4)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.setpgid(0, 0)
    os.write(w, b"x")
    time.sleep(60)
    os._exit(3)
os.read(r, 1)
print("child group", os.getpgid(pid) == pid)
os.killpg(pid, signal.SIGTERM)
_, st = os.waitpid(pid, 0)
print("killpg ended it", os.WIFSIGNALED(st) and os.WTERMSIG(st) == signal.SIGTERM)
pid = os.fork()
if pid == 0:
    os.setsid()
    me2 = os.getpid()
    os._exit(0 if os.getsid(0) == me2 and os.getsid(me2) == me2 and os.getpgrp() == me2 else 1)
_, st = os.waitpid(pid, 0)
print("child session", os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0)
print("own session kept", os.getsid(0) != me)
try:
    os.setpgid(0, 999999)
    print("bad group accepted")
except OSError as e:
    print("bad group refused", e.errno in (1, 3))
with open("groups.pid", "w") as f:
    f.write("%d\n" % me)
while not os.path.exists("groups.go"):
    time.sleep(0.05)
"#;

#[test]
fn process_groups_and_sessions_made_away_are_the_deputies_at_home() {
    let h = FamilyHome::new();
    let py = mosix_tests::real_python3();
    h.put("groups.py", GROUPS);
    let reference = h.user(
        "n1",
        &format!("touch groups.go && {py} groups.py; s=$?; rm -f groups.go groups.pid; exit $s"),
    );
    let want = String::from_utf8_lossy(&reference.stdout).into_owned();
    assert!(
        reference.status.success() && !want.contains("False") && want.lines().count() == 7,
        "the reference run: {}",
        text(&reference)
    );
    let (job, pid) = h.start(&format!("exec {py} groups.py"), "groups");
    h.move_and_go(pid);
    let pidfile = h.file("groups.pid");
    h.c.wait_for("the program's groups", Duration::from_secs(60), || {
        Ok(std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n')))
    })
    .unwrap();
    assert_eq!(h.read("groups.pid").trim(), pid.to_string());
    // At home, the deputy leads the group the body made.
    assert_eq!(pgrp(pid), Some(pid), "the deputy's group at home");
    assert!(
        is_deputy(pid),
        "{pid} is not a deputy: the program ran at home"
    );
    h.put("groups.go", "");
    let (out, err, rc) = h.finish(job, "groups", Duration::from_secs(120));
    assert_eq!(out, want, "stderr: {err}");
    assert_eq!(rc, "0", "stderr: {err}");
    h.assert_nothing_left();
}

/// Two children forked at n2 by a shell (once `there` exists; it waits
/// with builtins only, so it has no child before), one that ends at once (`b`, 4)
/// and one that runs until the file `go` appears (`a`, 3, always after
/// `b`); the shell then waits for both. (dash reaps an ended child when
/// it likes, so the test of an unwaited child uses [`FORKED_AWAY_PY`].)
const FORKED_AWAY: &str = r#"until [ -e there ]; do :; done
sh -c 'echo b; : > b.done; exit 4' & p2=$!
sh -c 'echo $$ > slow.pid; while ! [ -e go ] || ! [ -e b.done ]; do sleep 0.2; done; echo a; exit 3' & p1=$!
echo "$p1 $p2" > kids.pids
wait $p1; echo "p1 $?"
wait $p2; echo "p2 $?"
echo end
exit 6
"#;

/// As [`FORKED_AWAY`] in python3, which reaps only when told: it starts
/// once `there` exists, forks the two children, and waits for them only
/// once `moved` exists, so the quick one is a zombie at the move.
const FORKED_AWAY_PY: &str = r#"import os, sys, time
while not os.path.exists("there"):
    time.sleep(0.1)
p2 = os.fork()
if p2 == 0:
    os.write(1, b"b\n")
    open("b.done", "w").close()
    os._exit(4)
p1 = os.fork()
if p1 == 0:
    with open("slow.pid", "w") as f:
        f.write("%d\n" % os.getpid())
    while not (os.path.exists("go") and os.path.exists("b.done")):
        time.sleep(0.2)
    os.write(1, b"a\n")
    os._exit(3)
with open("kids.pids", "w") as f:
    f.write("%d %d\n" % (p1, p2))
while not os.path.exists("moved"):
    time.sleep(0.1)
for name, p in (("p1", p1), ("p2", p2)):
    _, st = os.waitpid(p, 0)
    print(name, os.waitstatus_to_exitcode(st), flush=True)
print("end", flush=True)
sys.exit(6)
"#;

/// The running bodies (not deputies) at this machine of the test user
/// whose command line contains `needle`.
fn bodies_with(needle: &str) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&p| {
            owner(p) == Some(UID)
                && cmdline(p).join(" ").contains(needle)
                && is_running(p)
                && !is_deputy(p)
        })
        .collect()
}

/// A program (`python`: [`FORKED_AWAY_PY`], else dash running
/// [`FORKED_AWAY`]) forks two children at n2 and moves on to `to` (`n3`
/// or `home`) while one of them runs: the children stay at n2 (the
/// running one reparented to n2's remoted, its output still reaching
/// home), the program's waits give their exact statuses, and its output
/// is the same as without mosix. python is moved while it sleeps, its
/// quick child ended and not yet waited for (a zombie whose status must
/// outlive the move); dash is moved in `wait $p1`, having reaped the
/// quick child at n2.
fn forked_away_then_moved(to: &str, python: bool) {
    let h = FamilyHome::with_nodes(3);
    // `slow`: what the slow child's command line holds.
    let (slow, argv): (&str, Vec<&str>) = if python {
        h.put("kids.py", FORKED_AWAY_PY);
        ("kids.py", vec![mosix_tests::real_python3(), "./kids.py"])
    } else {
        h.put("kids.sh", FORKED_AWAY);
        ("slow.pid", vec!["sh", "./kids.sh"])
    };
    let gates = ["there", "go", "moved"];
    for g in gates {
        h.put(g, "");
    }
    let reference = h.user("n1", &argv.join(" "));
    assert_eq!(reference.status.code(), Some(6), "{}", text(&reference));
    for f in gates.iter().chain(&["slow.pid", "kids.pids", "b.done"]) {
        std::fs::remove_file(h.file(f)).unwrap();
    }
    let (job, pid) = h.start_argv(&argv, "away");
    let n2_body = h.move_to_n2(pid);
    h.put("there", "");
    let (p1, p2) = two(&line_of(&h, "kids.pids"));
    line_of(&h, "slow.pid");
    assert_eq!(ppid(p1), Some(pid));
    if python {
        // The quick child ended at n2; its deputy, ended the same way,
        // waits at home for the program's wait.
        h.c.wait_for("the quick child to end", Duration::from_secs(30), || {
            Ok(state(p2) == 'Z')
        })
        .unwrap();
        assert_eq!(ppid(p2), Some(pid));
    } else {
        // The shell's wait reaped it at n2, and its deputy at home.
        h.c.wait_for(
            "the shell to reap its quick child",
            Duration::from_secs(30),
            || Ok(state(p2) == '?'),
        )
        .unwrap();
    }
    let remoted2 = h.c.daemon_pid("n2", "remoted").unwrap();
    // The slow child's body: a child of the program's body at n2.
    let slow: Vec<i32> = bodies_with(slow)
        .into_iter()
        .filter(|&p| ppid(p) == Some(n2_body))
        .collect();
    assert_eq!(slow.len(), 1, "one body of the slow child: {slow:?}");
    let slow = slow[0];
    assert!(descends_from(slow, remoted2), "the slow child runs at n2");
    let out =
        h.c.exec("n1", &["mosmigrate", &pid.to_string(), to])
            .unwrap();
    assert!(
        out.status.success(),
        "mosmigrate {to}: {}\nremoted n2:\n{}\nhomed n1:\n{}",
        text(&out),
        h.c.log("n2", "remoted"),
        h.c.log("n1", "homed")
    );
    let argv_now = cmdline(pid);
    let parent_bodies: Vec<i32> = all_pids()
        .into_iter()
        .filter(|&p| {
            p != pid && p != slow && cmdline(p) == argv_now && is_running(p) && !is_deputy(p)
        })
        .collect();
    if to == "home" {
        assert!(!is_deputy(pid), "{pid} is the process again, not a deputy");
        assert_eq!(argv_now, argv);
        assert!(
            parent_bodies.iter().all(|&b| !descends_from(b, remoted2)),
            "no body of the program left at n2: {parent_bodies:?}"
        );
    } else {
        assert!(
            is_deputy(pid),
            "{pid} is a deputy while its body is at {to}"
        );
        let remoted = h.c.daemon_pid(to, "remoted").unwrap();
        let there: Vec<i32> = parent_bodies
            .iter()
            .copied()
            .filter(|&b| descends_from(b, remoted))
            .collect();
        assert_eq!(there.len(), 1, "one body at {to}: {parent_bodies:?}");
        assert!(
            parent_bodies.iter().all(|&b| !descends_from(b, remoted2)),
            "no body of the program left at n2: {parent_bodies:?}"
        );
        let entry = mosps_entry(&h.c, "n1", pid).expect("mosps lists the program");
        assert_eq!(entry["node"], to, "{entry}");
    }
    assert!(!is_running(n2_body), "the program's body at n2 ended");
    // The children stayed where they run, still the program's at home.
    assert!(is_running(slow), "the slow child's body at n2 is gone");
    assert_eq!(ppid(slow), Some(remoted2), "reparented to n2's remoted");
    assert_eq!(ppid(p1), Some(pid));
    if python {
        assert_eq!(state(p2), 'Z', "the quick child is still unwaited");
        assert_eq!(ppid(p2), Some(pid));
        h.put("moved", "");
    }
    // The slow child ends.
    h.put("go", "");
    let (out, err, rc) = h.finish(job, "away", Duration::from_secs(120));
    assert_eq!(
        out,
        String::from_utf8_lossy(&reference.stdout),
        "stdout differs; stderr: {err}\nremoted n2:\n{}",
        h.c.log("n2", "remoted")
    );
    assert_eq!(err, String::from_utf8_lossy(&reference.stderr));
    assert_eq!(rc, "6");
    h.assert_nothing_left();
}

#[test]
fn a_program_moves_on_to_n3_with_a_child_at_n2_ended_and_one_running() {
    forked_away_then_moved("n3", true);
}

#[test]
fn a_program_comes_home_with_a_child_at_n2_ended_and_one_running() {
    forked_away_then_moved("home", true);
}

#[test]
fn a_shell_moves_on_to_n3_in_a_wait_for_its_child_at_n2() {
    forked_away_then_moved("n3", false);
}

#[test]
fn a_shell_comes_home_in_a_wait_for_its_child_at_n2() {
    forked_away_then_moved("home", false);
}
