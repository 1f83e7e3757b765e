//! Migration between isolated nodes (issue 4, first slice): a CPU-bound
//! program started at n1 moves to n2 mid-run; its body really runs under
//! n2's `remoted`, the home pid stays as the deputy, the output file is
//! byte-identical to an undisturbed run and the parent sees the program's
//! exit status. A migration to a node whose `remoted` is down fails
//! cleanly and the program goes on at home.

use mosix_tests::{Cluster, bin, bin_dir, is_running};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const STEPS: &str = "60";
const EXIT_CODE: &str = "7";

/// Build examples/c/progress.c into `dir`.
fn build_progress(dir: &Path) -> PathBuf {
    mosix_tests::build_c_example("progress", dir, &[])
}

/// A program run under mosix at `node` by a shell that records its pid
/// (the home pid) and, at the end, `$?` as its parent saw it.
struct Job {
    shell: Child,
    pid_file: PathBuf,
    rc_file: PathBuf,
    out_file: PathBuf,
}

impl Job {
    /// Stdout to a file.
    fn start(c: &Cluster, node: &str, argv: &[&str], name: &str) -> Job {
        Job::start_with(c, node, argv, name, false)
    }

    /// Stdout to a file (`pipe` false) or to a pipe into `cat > file`.
    fn start_with(c: &Cluster, node: &str, argv: &[&str], name: &str, pipe: bool) -> Job {
        let pid_file = c.dir.join(format!("{name}.pid"));
        let rc_file = c.dir.join(format!("{name}.rc"));
        let out_file = c.dir.join(format!("{name}.out"));
        let run = format!(
            "{mosrun} -- {argv}",
            mosrun = bin("mosrun").display(),
            argv = argv.join(" ")
        );
        let (pid, rc, out) = (pid_file.display(), rc_file.display(), out_file.display());
        let script = if pipe {
            // The status file appears only once `cat` wrote everything.
            format!(
                "({run} & echo $! > {pid}; wait $!; echo $? > {rc}.tmp) | cat > {out}; mv {rc}.tmp {rc}"
            )
        } else {
            format!("{run} > {out} & echo $! > {pid}; wait $!; echo $? > {rc}")
        };
        let err = std::fs::File::create(c.dir.join(format!("{name}.err"))).unwrap();
        let shell = Command::new(bin("mosix-local"))
            .args(["exec", "--dir"])
            .arg(&c.dir)
            .args([node, "--", "sh", "-c", &script])
            .env("MOSIX_BIN_DIR", bin_dir())
            .stdin(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("mosix-local exec");
        Job {
            shell,
            pid_file,
            rc_file,
            out_file,
        }
    }

    fn home_pid(&self, c: &Cluster) -> i32 {
        c.wait_for("the job's pid file", Duration::from_secs(10), || {
            Ok(std::fs::read_to_string(&self.pid_file)
                .map(|s| s.ends_with('\n'))
                .unwrap_or(false))
        })
        .unwrap();
        std::fs::read_to_string(&self.pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn lines(&self) -> usize {
        std::fs::read(&self.out_file)
            .map(|b| b.iter().filter(|&&x| x == b'\n').count())
            .unwrap_or(0)
    }

    /// Wait for the end; (output, `$?` as the parent saw it).
    fn finish(mut self, c: &Cluster) -> (Vec<u8>, String) {
        c.wait_for("the job's end", Duration::from_secs(120), || {
            Ok(std::fs::read_to_string(&self.rc_file)
                .map(|s| s.ends_with('\n'))
                .unwrap_or(false))
        })
        .unwrap();
        let _ = self.shell.wait();
        (
            std::fs::read(&self.out_file).unwrap(),
            std::fs::read_to_string(&self.rc_file)
                .unwrap()
                .trim()
                .to_string(),
        )
    }
}

fn ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(1)?.parse().ok()
}

fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// Every process whose command line is exactly `argv`.
fn processes_running(argv: &[&str]) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| cmdline(p) == argv)
        .collect()
}

fn descends_from(mut pid: i32, ancestor: i32) -> bool {
    while pid > 1 {
        if pid == ancestor {
            return true;
        }
        match ppid(pid) {
            Some(p) => pid = p,
            None => return false,
        }
    }
    false
}

/// Undisturbed run of the same program: (stdout, exit code as `$?`).
fn reference(argv: &[&str]) -> (Vec<u8>, String) {
    let out = Command::new(argv[0]).args(&argv[1..]).output().unwrap();
    (out.stdout, out.status.code().unwrap().to_string())
}

#[test]
fn cpu_bound_program_migrates_to_n2_and_ends_as_at_home() {
    let c = Cluster::up(3).unwrap();
    let exe = build_progress(&c.dir);
    let exe = exe.to_str().unwrap();
    // A work figure of its own so no other test's process matches.
    let argv = [exe, STEPS, "100000001", EXIT_CODE];
    let job = Job::start(&c, "n1", &argv, "mig");
    let home = job.home_pid(&c);
    let shell = ppid(home).expect("home pid's parent");
    c.wait_for("progress before migrating", Duration::from_secs(30), || {
        Ok(job.lines() >= 3)
    })
    .unwrap();
    let out = c
        .exec("n1", &["mosmigrate", &home.to_string(), "n2"])
        .unwrap();
    assert!(
        out.status.success(),
        "mosmigrate failed: {}\nhomed n1: {}\nremoted n2: {}",
        String::from_utf8_lossy(&out.stderr),
        c.log("n1", "homed"),
        c.log("n2", "remoted")
    );
    assert!(
        job.lines() < 60,
        "the program finished before it moved; give it more work"
    );
    // (a) the body runs under n2's remoted.
    let remoted2 = c.daemon_pid("n2", "remoted").unwrap();
    let bodies: Vec<i32> = processes_running(&argv)
        .into_iter()
        .filter(|&p| p != home)
        .collect();
    assert_eq!(
        bodies.len(),
        1,
        "expected exactly one body, found {bodies:?}"
    );
    assert!(
        descends_from(bodies[0], remoted2),
        "body {} does not descend from n2's remoted {remoted2}",
        bodies[0]
    );
    // (b) the home pid is still there, with the same parent: the deputy.
    assert!(is_running(home));
    assert_eq!(
        cmdline(home).first().map(String::as_str),
        Some("mosix-deputy")
    );
    assert_eq!(ppid(home), Some(shell));
    // (c) and (d): same bytes, same status as an undisturbed run.
    let (got, rc) = job.finish(&c);
    let (want, want_rc) = reference(&argv);
    assert_eq!(rc, want_rc, "exit status differs");
    assert!(got == want, "output differs from an undisturbed run");
    assert!(!is_running(home));
    assert!(processes_running(&argv).is_empty(), "a copy is left over");
}

#[test]
fn migration_to_a_node_without_remoted_fails_and_the_program_runs_on() {
    let c = Cluster::up(3).unwrap();
    let exe = build_progress(&c.dir);
    let exe = exe.to_str().unwrap();
    let argv = [exe, STEPS, "100000002", EXIT_CODE];
    let remoted3 = c.daemon_pid("n3", "remoted").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(remoted3),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    c.wait_for("n3's remoted to stop", Duration::from_secs(10), || {
        Ok(!is_running(remoted3))
    })
    .unwrap();
    let job = Job::start(&c, "n1", &argv, "stay");
    let home = job.home_pid(&c);
    c.wait_for("progress before migrating", Duration::from_secs(30), || {
        Ok(job.lines() >= 3)
    })
    .unwrap();
    let out = c
        .exec("n1", &["mosmigrate", &home.to_string(), "n3"])
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "migrating to a dead node succeeded");
    assert!(
        err.contains("n3") && err.contains("remoted"),
        "unclear message: {err}"
    );
    // Still the program itself at home, and the only copy.
    assert_eq!(cmdline(home), argv);
    assert_eq!(processes_running(&argv), vec![home]);
    let (got, rc) = job.finish(&c);
    let (want, want_rc) = reference(&argv);
    assert_eq!(rc, want_rc, "exit status differs");
    assert!(got == want, "output differs from an undisturbed run");
}

/// Start `argv` at n1, wait for progress, move it to `node`; the home pid.
fn start_and_move(c: &Cluster, argv: &[&str], name: &str, node: &str) -> (Job, i32) {
    let job = Job::start(c, "n1", argv, name);
    let home = job.home_pid(c);
    c.wait_for("progress before migrating", Duration::from_secs(30), || {
        Ok(job.lines() >= 2)
    })
    .unwrap();
    let out = c
        .exec("n1", &["mosmigrate", &home.to_string(), node])
        .unwrap();
    assert!(
        out.status.success(),
        "mosmigrate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        cmdline(home).first().map(String::as_str),
        Some("mosix-deputy")
    );
    (job, home)
}

#[test]
fn signals_to_the_home_pid_act_on_the_body() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let c = Cluster::up(3).unwrap();
    let exe = build_progress(&c.dir);
    let exe = exe.to_str().unwrap();
    // SIGTERM is forwarded: the body dies of it, and so, as seen by the
    // parent, does the home process.
    let argv = [exe, STEPS, "100000003", EXIT_CODE];
    let (job, home) = start_and_move(&c, &argv, "term", "n2");
    kill(Pid::from_raw(home), Signal::SIGTERM).unwrap();
    let (_, rc) = job.finish(&c);
    assert_eq!(rc, "143", "the parent should see death by SIGTERM");
    assert!(
        processes_running(&argv).is_empty(),
        "the body outlived SIGTERM"
    );
    // SIGKILL cannot be caught: the deputy dies, and the body with it.
    let argv = [exe, STEPS, "100000004", EXIT_CODE];
    let (job, home) = start_and_move(&c, &argv, "kill", "n3");
    kill(Pid::from_raw(home), Signal::SIGKILL).unwrap();
    let (_, rc) = job.finish(&c);
    assert_eq!(rc, "137", "the parent should see death by SIGKILL");
    c.wait_for(
        "the body to go with its deputy",
        Duration::from_secs(5),
        || Ok(processes_running(&argv).is_empty()),
    )
    .unwrap();
}

#[test]
fn output_to_a_pipe_is_relayed_through_the_deputy() {
    let c = Cluster::up(2).unwrap();
    let exe = build_progress(&c.dir);
    let exe = exe.to_str().unwrap();
    let argv = [exe, STEPS, "100000005", EXIT_CODE];
    let job = Job::start_with(&c, "n1", &argv, "pipe", true);
    let home = job.home_pid(&c);
    c.wait_for("progress before migrating", Duration::from_secs(30), || {
        Ok(job.lines() >= 2)
    })
    .unwrap();
    let out = c
        .exec("n1", &["mosmigrate", &home.to_string(), "n2"])
        .unwrap();
    assert!(
        out.status.success(),
        "mosmigrate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(job.lines() < 60, "the program finished before it moved");
    let remoted2 = c.daemon_pid("n2", "remoted").unwrap();
    let bodies: Vec<i32> = processes_running(&argv)
        .into_iter()
        .filter(|&p| p != home)
        .collect();
    assert_eq!(
        bodies.len(),
        1,
        "expected exactly one body, found {bodies:?}"
    );
    assert!(descends_from(bodies[0], remoted2));
    let (got, rc) = job.finish(&c);
    let (want, want_rc) = reference(&argv);
    assert_eq!(rc, want_rc, "exit status differs");
    assert!(
        got == want,
        "output through the pipe differs from an undisturbed run ({} bytes, want {})",
        got.len(),
        want.len()
    );
}
