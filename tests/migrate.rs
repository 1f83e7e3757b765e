//! Migration between isolated nodes (issue 4, first slice): a CPU-bound
//! program started at n1 moves to n2 mid-run; its body really runs under
//! n2's `remoted`, the home pid stays as the deputy, the output file is
//! byte-identical to an undisturbed run and the parent sees the program's
//! exit status. Moves to a node whose `remoted` is down, that is
//! blocked, that dies mid-transfer or whose link is cut mid-transfer fail
//! cleanly and the program goes on at home; signals sent to the home pid
//! (TERM, KILL, STOP/CONT, USR1 to a handler) act on the body.

use mosix_tests::procs::{
    cmdline, descends_from, is_deputy, mosps_entry, ppid, processes_running, state_of, text,
};
use mosix_tests::{Cluster, Job, JobOut, bin, bin_dir, is_running};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const STEPS: &str = "60";
const EXIT_CODE: &str = "7";

/// Build examples/c/progress.c into `dir`.
fn build_progress(dir: &Path) -> PathBuf {
    mosix_tests::build_c_example("progress", dir, &[])
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
    let job = Job::start(&c, "n1", &[], &argv, "mig", JobOut::File);
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
    assert!(is_deputy(home), "home should be the deputy");
    // ... which ps shows with the program's own command line.
    assert_eq!(cmdline(home), argv);
    assert_eq!(ppid(home), Some(shell));
    // (c) and (d): same bytes, same status as an undisturbed run.
    let (got, rc) = job.finish(&c, Duration::from_secs(120));
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
    let job = Job::start(&c, "n1", &[], &argv, "stay", JobOut::File);
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
    assert!(!is_deputy(home));
    assert_eq!(processes_running(&argv), vec![home]);
    let (got, rc) = job.finish(&c, Duration::from_secs(120));
    let (want, want_rc) = reference(&argv);
    assert_eq!(rc, want_rc, "exit status differs");
    assert!(got == want, "output differs from an undisturbed run");
}

/// Start `argv` at n1, wait for progress, move it to `node`; the home pid.
fn start_and_move(c: &Cluster, argv: &[&str], name: &str, node: &str) -> (Job, i32) {
    let job = Job::start(c, "n1", &[], argv, name, JobOut::File);
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
    assert!(is_deputy(home), "home should be the deputy");
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
    let (_, rc) = job.finish(&c, Duration::from_secs(120));
    assert_eq!(rc, "143", "the parent should see death by SIGTERM");
    assert!(
        processes_running(&argv).is_empty(),
        "the body outlived SIGTERM"
    );
    // SIGKILL cannot be caught: the deputy dies, and the body with it.
    let argv = [exe, STEPS, "100000004", EXIT_CODE];
    let (job, home) = start_and_move(&c, &argv, "kill", "n3");
    kill(Pid::from_raw(home), Signal::SIGKILL).unwrap();
    let (_, rc) = job.finish(&c, Duration::from_secs(120));
    assert_eq!(rc, "137", "the parent should see death by SIGKILL");
    c.wait_for(
        "the body to go with its deputy",
        Duration::from_secs(30),
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
    let job = Job::start(&c, "n1", &[], &argv, "pipe", JobOut::Pipe);
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
    let (got, rc) = job.finish(&c, Duration::from_secs(120));
    let (want, want_rc) = reference(&argv);
    assert_eq!(rc, want_rc, "exit status differs");
    assert!(
        got == want,
        "output through the pipe differs from an undisturbed run ({} bytes, want {})",
        got.len(),
        want.len()
    );
}

/// Move `home`'s body to `node` ("home" brings it back); panics with the
/// daemons' logs if that fails.
fn move_to(c: &Cluster, home: i32, node: &str) {
    let out = c
        .exec("n1", &["mosmigrate", &home.to_string(), node])
        .unwrap();
    assert!(
        out.status.success(),
        "mosmigrate {home} {node} failed: {}\nhomed n1: {}",
        String::from_utf8_lossy(&out.stderr),
        c.log("n1", "homed"),
    );
}

/// Where the program `argv` (home pid `home`) really runs now: `None` if
/// at home (the home pid is the program itself and no other copy exists),
/// else the node whose `remoted` its only body descends from.
fn really_runs_at(c: &Cluster, argv: &[&str], home: i32, nodes: &[&str]) -> Option<String> {
    let bodies: Vec<i32> = processes_running(argv)
        .into_iter()
        .filter(|&p| p != home)
        .collect();
    // ps shows the program's command line at home the whole time.
    assert_eq!(cmdline(home), argv, "ps at home does not show the program");
    if bodies.is_empty() {
        assert!(
            !is_deputy(home),
            "no body anywhere, and home is not the program"
        );
        return None;
    }
    assert_eq!(bodies.len(), 1, "more than one body: {bodies:?}");
    assert!(
        is_deputy(home),
        "a body runs away but home is not its deputy"
    );
    nodes
        .iter()
        .find(|n| descends_from(bodies[0], c.daemon_pid(n, "remoted").unwrap()))
        .map(|n| n.to_string())
        .or_else(|| panic!("body {} descends from no node's remoted", bodies[0]))
}

/// A pause of 200-1000 ms, different from run to run (printed, so a
/// failure can be replayed by reading the log).
fn random_pause(step: &str) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let ms = 200 + (nanos % 800) as u64;
    eprintln!("{step}: pausing {ms} ms");
    std::thread::sleep(Duration::from_millis(ms));
}

/// home -> n2 -> n3 -> home at random instants, with output to a file
/// (`pipe` false) or a pipe: same bytes, same status, one home pid, and
/// the body always where mosps says and nowhere else.
fn round_trip(pipe: bool, work: &str) {
    let c = Cluster::up(3).unwrap();
    let exe = build_progress(&c.dir);
    let exe = exe.to_str().unwrap();
    let argv = [exe, "80", work, EXIT_CODE];
    let job = Job::start(
        &c,
        "n1",
        &[],
        &argv,
        "trip",
        if pipe { JobOut::Pipe } else { JobOut::File },
    );
    let home = job.home_pid(&c);
    let shell = ppid(home).expect("home pid's parent");
    c.wait_for("progress before migrating", Duration::from_secs(30), || {
        Ok(pipe || job.lines() >= 2)
    })
    .unwrap();
    let nodes = ["n2", "n3"];
    for (to, want) in [("n2", Some("n2")), ("n3", Some("n3")), ("home", None)] {
        random_pause(to);
        move_to(&c, home, to);
        assert_eq!(
            really_runs_at(&c, &argv, home, &nodes).as_deref(),
            want,
            "after moving to {to}"
        );
        // The home pid never changes and keeps its parent.
        assert!(is_running(home));
        assert_eq!(ppid(home), Some(shell));
        let p = mosps_entry(&c, "n1", home).unwrap_or_else(|| panic!("mosps lost {home}"));
        let node = want.unwrap_or("n1");
        assert_eq!(p["node"], node, "mosps: {p}");
        assert_eq!(p["home"], "n1", "mosps: {p}");
        assert_eq!(p["state"], "running", "mosps: {p}");
        assert!(p["cantmove"].is_null(), "mosps: {p}");
    }
    // mosps keeps the history: each move, from where to where, and why.
    let p = mosps_entry(&c, "n1", home).unwrap();
    let moves: Vec<(String, String)> = p["history"]
        .as_array()
        .unwrap_or_else(|| panic!("no history in mosps: {p}"))
        .iter()
        .map(|m| {
            assert!(m["error"].is_null(), "a failed move in the history: {m}");
            assert_eq!(m["why"], "asked by uid 0", "history: {m}");
            (
                m["from"].as_str().unwrap_or("?").to_string(),
                m["to"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    let hops = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(
        moves,
        [hops("n1", "n2"), hops("n2", "n3"), hops("n3", "n1")]
    );
    assert_eq!(p["migrations"], 3, "mosps: {p}");
    // n2 -> n3 went straight from node to node, not through home.
    assert!(
        c.log("n2", "remoted")
            .contains("body frozen and its image sent straight to its next node"),
        "n2 did not send the image straight to n3:\n{}",
        c.log("n2", "remoted")
    );
    assert!(
        c.log("n3", "remoted")
            .contains("image delivered straight from the body's node"),
        "n3 did not take the image from n2:\n{}",
        c.log("n3", "remoted")
    );
    assert!(
        pipe || job.lines() < 80,
        "the program finished before its round trip ended; give it more work"
    );
    let (got, rc) = job.finish(&c, Duration::from_secs(120));
    let (want, want_rc) = reference(&argv);
    assert_eq!(rc, want_rc, "exit status differs");
    assert!(
        got == want,
        "output differs from an undisturbed run ({} bytes, want {})",
        got.len(),
        want.len()
    );
    assert!(processes_running(&argv).is_empty(), "a copy is left over");
}

#[test]
fn round_trip_home_n2_n3_home_with_output_to_a_file() {
    round_trip(false, "100000006");
}

#[test]
fn round_trip_home_n2_n3_home_with_output_to_a_pipe() {
    round_trip(true, "100000007");
}

/// A real program nobody here wrote, started at n1 with `script` (a
/// shell command line; its stdout goes to a file), moved to n2 and back
/// home mid-run: same bytes and status as an undisturbed run at n1.
fn real_program_round_trip(c: &Cluster, name: &str, script: &str) {
    let out_file = c.dir.join(format!("{name}.out"));
    let want_file = c.dir.join(format!("{name}.want"));
    let pid_file = c.dir.join(format!("{name}.pid"));
    let rc_file = c.dir.join(format!("{name}.rc"));
    let reference = c
        .exec(
            "n1",
            &[
                "sh",
                "-c",
                &format!("{script} > {}; echo $?", want_file.display()),
            ],
        )
        .unwrap();
    let want_rc = String::from_utf8_lossy(&reference.stdout)
        .trim()
        .to_string();
    let run = format!(
        "{mosrun} -- {script} > {out} & echo $! > {pid}; wait $!; echo $? > {rc}",
        mosrun = bin("mosrun").display(),
        out = out_file.display(),
        pid = pid_file.display(),
        rc = rc_file.display(),
    );
    let mut shell = Command::new(bin("mosix-local"))
        .args(["exec", "--dir"])
        .arg(&c.dir)
        .args(["n1", "--", "sh", "-c", &run])
        .env("MOSIX_BIN_DIR", bin_dir())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    c.wait_for("the pid file", Duration::from_secs(10), || {
        Ok(std::fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n')))
    })
    .unwrap();
    let home: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Wait until libmosix registered it with homed.
    c.wait_for("the process to be managed", Duration::from_secs(10), || {
        Ok(mosps_entry(c, "n1", home).is_some())
    })
    .unwrap();
    random_pause(name);
    move_to(c, home, "n2");
    assert!(is_running(home), "{name} ended before it came back");
    random_pause(name);
    move_to(c, home, "home");
    c.wait_for("the end", Duration::from_secs(120), || {
        Ok(std::fs::read_to_string(&rc_file).is_ok_and(|s| s.ends_with('\n')))
    })
    .unwrap();
    let _ = shell.wait();
    let rc = std::fs::read_to_string(&rc_file)
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(rc, want_rc, "{name}: exit status differs");
    let got = std::fs::read(&out_file).unwrap();
    let want = std::fs::read(&want_file).unwrap();
    assert!(
        got == want,
        "{name}: output differs from an undisturbed run ({} bytes, want {})",
        got.len(),
        want.len()
    );
}

#[test]
fn real_programs_move_away_and_back_mid_run() {
    let c = Cluster::up(2).unwrap();
    let data = c.dir.join("data.txt");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&data).unwrap());
        let mut x: u64 = 88172645463325252;
        for _ in 0..400_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            writeln!(f, "{x:020} {}", x % 1000).unwrap();
        }
    }
    let d = data.display();
    let pi = c.dir.join("pi.bc");
    std::fs::write(&pi, "scale=3200; 4*a(1)\n").unwrap();
    let python = mosix_tests::real_python3();
    let many = |n: usize| vec![d.to_string(); n].join(" ");
    // Each runs for some seconds at a node's CPU share, so it is moved
    // mid-run; each is started directly by mosrun (no shell in between).
    let cases = [
        ("bc", format!("bc -l {} < /dev/null", pi.display())),
        (
            "python3",
            format!("{python} -c 'import sys\nt=0\nfor i in range(25000000): t=(t*31+i)%1000003\nprint(t); sys.exit(5)'"),
        ),
        ("perl", "perl -e '$t=0; for $i (1..60000000) { $t=($t*31+$i)%1000003 } print \"$t\\n\"; exit 3'".to_string()),
        ("awk", "awk 'BEGIN { t=0; for (i=0;i<40000000;i++) t=(t*31+i)%1000003; print t }'".to_string()),
        ("sha256sum", format!("sha256sum {}", many(150))),
        ("gzip", format!("gzip -9 -c {}", many(4))),
        ("sort", format!("sort --parallel=1 -k2,2n -k1,1 {}", many(8))),
    ];
    for (name, script) in &cases {
        real_program_round_trip(&c, name, script);
    }
}

/// The job's body, its node's death, and the deputy's end: within 5 s
/// the parent sees death by SIGKILL, homed names the lost node, and no
/// copy of the program is left anywhere.
fn lose_the_node(c: &Cluster, argv: &[&str], name: &str, node: &str, kill_it: &dyn Fn()) {
    let (job, home) = start_and_move(c, argv, name, node);
    assert_eq!(
        really_runs_at(c, argv, home, &[node]).as_deref(),
        Some(node)
    );
    let lost_at = std::time::Instant::now();
    kill_it();
    if let Err(e) = c.wait_for("the deputy to end", Duration::from_secs(10), || {
        Ok(!is_running(home))
    }) {
        panic!(
            "{e} after losing {node}\nhomed n1: {}\nremoted {node}: {}",
            c.log("n1", "homed"),
            c.log(node, "remoted")
        );
    }
    let took = lost_at.elapsed();
    let (_, rc) = job.finish(c, Duration::from_secs(120));
    assert_eq!(rc, "137", "the parent should see death by SIGKILL");
    assert!(
        took < Duration::from_secs(5),
        "the deputy took {took:?} to notice node {node} was lost"
    );
    let log = c.log("n1", "homed");
    assert!(
        log.lines()
            .any(|l| l.contains("lost the node running the body") && l.contains(node)),
        "homed does not name the lost node {node}: {log}"
    );
    c.wait_for("no copy left anywhere", Duration::from_secs(10), || {
        Ok(processes_running(argv).is_empty())
    })
    .unwrap();
}

#[test]
fn a_lost_node_ends_the_deputy_as_killed_within_5s() {
    let c = Cluster::up(3).unwrap();
    let exe = build_progress(&c.dir);
    let exe = exe.to_str().unwrap();
    // Its daemons stop: the link closes, and the body dies with remoted.
    let argv = [exe, STEPS, "100000008", EXIT_CODE];
    lose_the_node(&c, &argv, "stop", "n2", &|| {
        let out = c.local(&["stop", "n2"]).unwrap();
        assert!(out.status.success());
    });
    // Its network is cut: nothing says goodbye; keepalive tells.
    let argv = [exe, STEPS, "100000009", EXIT_CODE];
    lose_the_node(&c, &argv, "cut", "n3", &|| {
        let out = c
            .exec("n3", &["ip", "link", "set", "eth0", "down"])
            .unwrap();
        assert!(out.status.success(), "cannot cut n3's network");
    });
}

/// Start a 1.5 GiB job at n1, move it to `from` (unless that is n1),
/// begin moving it to `to`, and `interrupt` the transfer once `to` holds
/// part of the image: the move must fail naming `to`, within `within`,
/// and the program must run on at `from` as the only copy and end as an
/// undisturbed run would. From n2 to n3 the image goes straight between
/// the two (ARCHITECTURE.md section 3, step 6).
fn interrupt_transfer(
    c: &Cluster,
    name: &str,
    within: Duration,
    (from, to): (&str, &str),
    interrupt: &dyn Fn(),
) {
    let exe = mosix_tests::build_c_example("bigmem", &c.dir, &[]);
    let exe = exe.to_str().unwrap();
    // 1.5 GiB of dirty memory: the transfer takes long enough to be cut.
    let argv = [exe, "1536", "40"];
    let job = Job::start(c, "n1", &[], &argv, name, JobOut::File);
    let home = job.home_pid(c);
    c.wait_for("the memory to be filled", Duration::from_secs(120), || {
        Ok(job.lines() >= 1)
    })
    .unwrap();
    if from != "n1" {
        move_to(c, home, from);
        assert_eq!(
            really_runs_at(c, &argv, home, &[from]).as_deref(),
            Some(from)
        );
    }
    let remoted_to = c.daemon_pid(to, "remoted").unwrap();
    let mover = Command::new(bin("mosix-local"))
        .args(["exec", "--dir"])
        .arg(&c.dir)
        .args(["n1", "--", "mosmigrate", &home.to_string(), to])
        .env("MOSIX_BIN_DIR", bin_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The image is arriving once the destination's remoted holds its
    // memfd with part of it (the memfd is made at the offer, before the
    // body is even frozen).
    c.wait_for("the transfer to start", Duration::from_secs(60), || {
        Ok(std::fs::read_dir(format!("/proc/{remoted_to}/fd"))?
            .flatten()
            .any(|e| {
                std::fs::read_link(e.path())
                    .is_ok_and(|l| l.to_string_lossy().contains("mosix-image"))
                    && std::fs::metadata(e.path()).is_ok_and(|m| m.len() >= 16 << 20)
            }))
    })
    .unwrap();
    let cut_at = std::time::Instant::now();
    interrupt();
    let out = mover.wait_with_output().unwrap();
    let took = cut_at.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("{name}: mosmigrate gave up {took:?} after the interrupt");
    assert!(!out.status.success(), "the move succeeded through the cut");
    assert!(err.contains(to), "the error does not name the node: {err}");
    assert!(
        took < within,
        "mosmigrate took {took:?} to give up after the cut: {err}"
    );
    // Still the program itself where it was, the only copy, and it
    // finishes as an undisturbed run would.
    let (runs_at, node) = if from == "n1" {
        (None, "n1")
    } else {
        (Some(from), from)
    };
    assert_eq!(really_runs_at(c, &argv, home, &[from]).as_deref(), runs_at);
    assert_eq!(
        mosps_entry(c, "n1", home).map(|e| e["node"].clone()),
        Some(serde_json::json!(node)),
        "mosps should show the process where it was"
    );
    let (got, rc) = job.finish(c, Duration::from_secs(120));
    let (want, want_rc) = reference(&argv);
    assert_eq!(rc, want_rc, "exit status differs");
    assert!(got == want, "output differs from an undisturbed run");
}

#[test]
fn a_destination_dying_mid_transfer_leaves_the_process_at_home() {
    let c = Cluster::up(2).unwrap();
    let remoted2 = c.daemon_pid("n2", "remoted").unwrap();
    interrupt_transfer(&c, "big", Duration::from_secs(30), ("n1", "n2"), &|| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(remoted2),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    });
}

#[test]
fn a_destination_dying_mid_transfer_between_two_remote_nodes_leaves_the_body_where_it_was() {
    let c = Cluster::up(3).unwrap();
    let remoted3 = c.daemon_pid("n3", "remoted").unwrap();
    // The image goes from n2 straight to n3; n3 dies with part of it.
    interrupt_transfer(&c, "big23", Duration::from_secs(30), ("n2", "n3"), &|| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(remoted3),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    });
    let log = c.log("n2", "remoted");
    assert!(
        log.contains("cannot capture or send the body; it runs on")
            && log.contains("sending the image to node n3 failed"),
        "n2 did not keep its body:\n{log}"
    );
}

#[test]
fn a_link_cut_mid_transfer_leaves_the_process_at_home() {
    let c = Cluster::up(2).unwrap();
    // Nothing says goodbye: the home notices through its send timeout
    // and keepalive, and the destination drops the partial image.
    interrupt_transfer(&c, "cut", Duration::from_secs(30), ("n1", "n2"), &|| {
        let out = c
            .exec("n2", &["ip", "link", "set", "eth0", "down"])
            .unwrap();
        assert!(out.status.success(), "cannot cut n2's network");
    });
}

#[test]
fn a_blocked_destination_refuses_and_the_program_runs_on() {
    let c = Cluster::up(2).unwrap();
    let exe = build_progress(&c.dir);
    let exe = exe.to_str().unwrap();
    let argv = [exe, STEPS, "100000013", EXIT_CODE];
    let job = Job::start(&c, "n1", &[], &argv, "refused", JobOut::File);
    let home = job.home_pid(&c);
    c.wait_for("progress", Duration::from_secs(30), || Ok(job.lines() >= 2))
        .unwrap();
    let out = c.exec("n2", &["mosctl", "block"]).unwrap();
    assert!(out.status.success(), "mosctl block: {}", text(&out));
    let out = c
        .exec("n1", &["mosmigrate", &home.to_string(), "n2"])
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a blocked node took the process");
    assert!(
        err.contains("n2") && err.contains("no guests"),
        "the refusal does not say who refused and why: {err}"
    );
    assert_eq!(really_runs_at(&c, &argv, home, &["n2"]), None);
    assert_eq!(cmdline(home), argv);
    // The refusal is in the history, as a failed attempt.
    let p = mosps_entry(&c, "n1", home).unwrap();
    let last = &p["history"][0];
    assert_eq!((&last["from"], &last["to"]), (&"n1".into(), &"n2".into()));
    assert!(
        last["error"]
            .as_str()
            .is_some_and(|e| e.contains("no guests")),
        "history: {p}"
    );
    // Unblocked, the same move works, and the program ends as at home.
    let out = c.exec("n2", &["mosctl", "unblock"]).unwrap();
    assert!(out.status.success(), "mosctl unblock: {}", text(&out));
    move_to(&c, home, "n2");
    assert_eq!(
        really_runs_at(&c, &argv, home, &["n2"]).as_deref(),
        Some("n2")
    );
    let (got, rc) = job.finish(&c, Duration::from_secs(120));
    let (want, want_rc) = reference(&argv);
    assert_eq!(rc, want_rc, "exit status differs");
    assert!(got == want, "output differs from an undisturbed run");
}

#[test]
fn sigusr1_reaches_the_programs_handler_wherever_it_runs() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let c = Cluster::up(3).unwrap();
    let exe = build_progress(&c.dir);
    let exe = exe.to_str().unwrap();
    let argv = [exe, STEPS, "100000014", EXIT_CODE];
    let (job, home) = start_and_move(&c, &argv, "usr1", "n2");
    let handled = |n: usize| {
        let out =
            String::from_utf8_lossy(&std::fs::read(&job.out_file).unwrap_or_default()).into_owned();
        out.lines().any(|l| l == format!("usr1 {n}"))
    };
    // At n2, then at n3: the deputy forwards it, the handler counts it,
    // and the program runs on (a caught signal does not end it).
    kill(Pid::from_raw(home), Signal::SIGUSR1).unwrap();
    c.wait_for("the handler at n2", Duration::from_secs(30), || {
        Ok(handled(1))
    })
    .unwrap();
    move_to(&c, home, "n3");
    assert_eq!(
        really_runs_at(&c, &argv, home, &["n2", "n3"]).as_deref(),
        Some("n3")
    );
    kill(Pid::from_raw(home), Signal::SIGUSR1).unwrap();
    c.wait_for("the handler at n3", Duration::from_secs(30), || {
        Ok(handled(2))
    })
    .unwrap();
    let (got, rc) = job.finish(&c, Duration::from_secs(120));
    let got = String::from_utf8(got).unwrap();
    let marks: Vec<&str> = got.lines().filter(|l| l.starts_with("usr1")).collect();
    assert_eq!(marks, ["usr1 1", "usr1 2"], "each signal handled once");
    let steps: String = got
        .lines()
        .filter(|l| !l.starts_with("usr1"))
        .map(|l| format!("{l}\n"))
        .collect();
    let (want, want_rc) = reference(&argv);
    assert_eq!(rc, want_rc, "exit status differs");
    assert!(
        steps.as_bytes() == want,
        "the computation differs from an undisturbed run"
    );
}

#[test]
fn stop_and_cont_of_the_home_pid_act_on_the_body() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let c = Cluster::up(2).unwrap();
    let exe = build_progress(&c.dir);
    let exe = exe.to_str().unwrap();
    let argv = [exe, STEPS, "100000011", EXIT_CODE];
    let (job, home) = start_and_move(&c, &argv, "stop", "n2");
    let body = processes_running(&argv)
        .into_iter()
        .find(|&p| p != home)
        .expect("a body");
    kill(Pid::from_raw(home), Signal::SIGSTOP).unwrap();
    c.wait_for("the body to stop", Duration::from_secs(30), || {
        Ok(state_of(body) == 'T')
    })
    .unwrap();
    // Stopped: no progress while it is.
    let before = job.lines();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(job.lines(), before, "the body went on while stopped");
    kill(Pid::from_raw(home), Signal::SIGCONT).unwrap();
    c.wait_for("the body to run again", Duration::from_secs(30), || {
        Ok(state_of(body) != 'T')
    })
    .unwrap();
    let (got, rc) = job.finish(&c, Duration::from_secs(120));
    let (want, want_rc) = reference(&argv);
    assert_eq!(rc, want_rc, "exit status differs");
    assert!(got == want, "output differs from an undisturbed run");
}

#[test]
fn a_corrupt_image_is_refused_and_nothing_runs() {
    let c = Cluster::up(2).unwrap();
    let exe = build_progress(&c.dir);
    let exe = exe.to_str().unwrap();
    let argv = [exe, STEPS, "100000012", EXIT_CODE];
    let job = Job::start(&c, "n1", &[], &argv, "corrupt", JobOut::File);
    let home = job.home_pid(&c);
    c.wait_for("progress", Duration::from_secs(30), || Ok(job.lines() >= 2))
        .unwrap();
    // A real image of it, taken while it runs on.
    let image = c.dir.join("corrupt.img");
    let out = c
        .exec(
            "n1",
            &[
                "mosmigrate",
                &home.to_string(),
                "checkpoint",
                image.to_str().unwrap(),
            ],
        )
        .unwrap();
    assert!(
        out.status.success(),
        "checkpoint: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Offered to n2's body host with a byte flipped in transit.
    let n2 = c
        .nodes_seen_by("n1")
        .unwrap()
        .into_iter()
        .find(|n| n.name == "n2")
        .expect("n1 knows n2");
    let addr: std::net::SocketAddr = n2.address.parse().unwrap();
    let host = mosix_proto::migrate::host_addr(addr).to_string();
    let key = c.dir.join("cluster.key");
    let out = c
        .exec(
            "n1",
            &[
                bin("mosix-testpeer").to_str().unwrap(),
                &host,
                "corrupt-image",
                key.to_str().unwrap(),
                image.to_str().unwrap(),
            ],
        )
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("refused") && said.contains("checksum"),
        "the host did not refuse the corrupt image clearly: {said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing was started at n2; the process runs on at home, unchanged.
    let remoted2 = c.daemon_pid("n2", "remoted").unwrap();
    assert!(
        !processes_running(&argv)
            .iter()
            .any(|&p| descends_from(p, remoted2)),
        "a body runs at n2"
    );
    let (got, rc) = job.finish(&c, Duration::from_secs(120));
    let (want, want_rc) = reference(&argv);
    assert_eq!(rc, want_rc);
    assert!(got == want, "output differs from an undisturbed run");
}

/// Seconds since boot of `node`'s clocks (`/proc/uptime`).
fn uptime(c: &Cluster, node: &str) -> f64 {
    let out = c.exec(node, &["cat", "/proc/uptime"]).unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no uptime at {node}: {}", text(&out)))
}

/// The time namespace of `pid` (its `/proc/PID/ns/time` link).
fn time_ns(pid: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/time"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

#[test]
fn a_bodys_clocks_stay_its_homes_on_nodes_booted_at_other_times() {
    // n2's clocks run 1000 s ahead of n1's, n3's 2000 s: as three
    // machines booted at different times.
    let c = Cluster::up_with(3, &["--clock-step", "1000"]).unwrap();
    let (u1, u2, u3) = (uptime(&c, "n1"), uptime(&c, "n2"), uptime(&c, "n3"));
    assert!(
        (u2 - u1 - 1000.0).abs() < 30.0 && (u3 - u1 - 2000.0).abs() < 30.0,
        "the nodes' clocks do not differ as asked: {u1} {u2} {u3}"
    );
    let exe = mosix_tests::build_c_example("clockjump", &c.dir, &[]);
    let exe = exe.to_str().unwrap();
    let argv = [exe];
    let job = Job::start(&c, "n1", &[], &argv, "clocks", JobOut::File);
    let home = job.home_pid(&c);
    let ticks_past = |n: usize| {
        let want = job.lines() + n;
        c.wait_for("the program to tick on", Duration::from_secs(30), || {
            Ok(job.lines() >= want)
        })
        .unwrap();
    };
    ticks_past(2);
    for node in ["n2", "n3"] {
        move_to(&c, home, node);
        assert_eq!(
            really_runs_at(&c, &argv, home, &["n2", "n3"]).as_deref(),
            Some(node)
        );
        let body = processes_running(&argv)
            .into_iter()
            .find(|&p| p != home)
            .expect("a body");
        let remoted = c.daemon_pid(node, "remoted").unwrap();
        assert_ne!(
            time_ns(body),
            time_ns(remoted),
            "the body at {node} shares its node's clocks"
        );
        ticks_past(1);
    }
    move_to(&c, home, "home");
    assert_eq!(really_runs_at(&c, &argv, home, &["n2", "n3"]), None);
    ticks_past(1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(home),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    let (out, rc) = job.finish(&c, Duration::from_secs(60));
    let out = String::from_utf8(out).unwrap();
    assert_eq!(rc, "0", "{out}");
    for clock in ["monotonic", "boottime"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(clock))
            .unwrap_or_else(|| panic!("no {clock} line: {out}"));
        let v: Vec<i64> = line
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        let (max, min) = (v[0], v[1]);
        // A step is one 2 ms sleep, or a freeze and transfer (well under
        // 10 s here); without the home's clocks it would be 1000 s.
        assert!(
            max < 10_000 && min >= 0,
            "{clock} jumped across the moves: largest step {max} ms, smallest {min} ms"
        );
    }
}
