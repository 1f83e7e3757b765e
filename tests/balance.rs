//! Automatic load balancing between isolated nodes (issue 6): CPU-bound
//! jobs started at one node spread out by themselves and finish sooner
//! than at one node; a `mosrun -L` job never moves; a blocked node gets no
//! guests; once spread, nothing moves back and forth.
//!
//! Where a job runs is checked on the processes themselves: a body is a
//! descendant of the destination node's `remoted` (ARCHITECTURE.md section 8);
//! a job still at home is the home pid running the program.

use mosix_tests::{Cluster, Job, JobOut, bin, bin_dir};
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn remoteds(c: &Cluster) -> BTreeMap<String, i32> {
    (1..=c.nodes)
        .map(|i| {
            let n = format!("n{i}");
            let pid = c.daemon_pid(&n, "remoted").unwrap();
            (n, pid)
        })
        .collect()
}

/// `progress` with a distinct work figure per job, so no other process
/// (another test's) has the same command line.
fn argv(exe: &Path, steps: u64, work: u64, tag: u64) -> Vec<String> {
    vec![
        exe.display().to_string(),
        steps.to_string(),
        (work + tag).to_string(),
        "0".into(),
    ]
}

/// Migrations carried out so far by every node's homed (one log line
/// each): a body must never be moved on as if it were the node's own.
fn migrations(c: &Cluster) -> usize {
    (1..=c.nodes)
        .map(|i| {
            c.log(&format!("n{i}"), "homed")
                .lines()
                .filter(|l| {
                    l.contains("migrated; deputy here") || l.contains("mosix_homed::migrate: moved")
                })
                .count()
        })
        .sum()
}

fn mosctl(c: &Cluster, node: &str, args: &[&str]) -> String {
    let mut cmd = vec!["mosctl"];
    cmd.extend_from_slice(args);
    let out = c.exec(node, &cmd).unwrap();
    assert!(
        out.status.success(),
        "mosctl {args:?} on {node}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn logs(c: &Cluster) -> String {
    format!(
        "remoted n1:\n{}\nhomed n1:\n{}",
        c.log("n1", "remoted"),
        c.log("n1", "homed")
    )
}

/// Work of one job: STEPS x WORK hash rounds, about 4 s of one CPU here.
const STEPS: u64 = 40;
const WORK: u64 = 90_000_000;

#[test]
fn four_jobs_spread_out_and_finish_sooner_than_at_one_node() {
    let c = Cluster::up_balancing(3).unwrap();
    let exe = mosix_tests::build_c_example("progress", &c.dir, &[]);
    let daemons = remoteds(&c);

    // Reference: the same 4 jobs, pinned with -L, all at n1. None may move.
    // n2 and n3 meanwhile run one busy loop each (not mosix processes),
    // so the machine's cores are as contended as in the balanced run:
    // the ratio compares placements, not other people's load on this
    // shared machine.
    let fillers: Vec<Child> = ["n2", "n3"].iter().map(|n| busy_loops(&c, n, 1)).collect();
    let t0 = Instant::now();
    let pinned: Vec<(Job, i32)> = (0..4)
        .map(|i| {
            let j = Job::start(
                &c,
                "n1",
                &["-L"],
                &argv(&exe, STEPS, WORK, 10 + i),
                &format!("pinned{i}"),
                JobOut::Null,
            );
            let pid = j.home_pid(&c);
            (j, pid)
        })
        .collect();
    while !pinned.iter().all(|(j, _)| j.done()) {
        for (j, pid) in &pinned {
            if let Some(n) = j.node(*pid, "n1", &daemons) {
                assert_eq!(n, "n1", "a -L job moved to {n}\n{}", logs(&c));
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "pinned jobs take too long"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let alone = t0.elapsed();
    for f in fillers {
        stop_group(f);
    }
    for (j, _) in pinned {
        assert_eq!(j.finish(&c, Duration::from_secs(10)).1, "0");
    }
    assert_eq!(migrations(&c), 0, "{}", logs(&c));

    // The same jobs free to move.
    let t1 = Instant::now();
    let jobs: Vec<(Job, i32)> = (0..4)
        .map(|i| {
            let j = Job::start(
                &c,
                "n1",
                &[],
                &argv(&exe, STEPS, WORK, 20 + i),
                &format!("free{i}"),
                JobOut::Null,
            );
            let pid = j.home_pid(&c);
            (j, pid)
        })
        .collect();
    let spread = c
        .wait_for(
            "no node running more than 2 of the 4 jobs",
            Duration::from_secs(10),
            || {
                let mut per: BTreeMap<String, usize> = BTreeMap::new();
                for (j, pid) in &jobs {
                    if let Some(n) = j.node(*pid, "n1", &daemons) {
                        *per.entry(n).or_default() += 1;
                    }
                }
                let placed: usize = per.values().sum();
                Ok(placed == 4 && per.values().all(|&k| k <= 2))
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&c)));
    let spread_at = t1.elapsed();
    while !jobs.iter().all(|(j, _)| j.done()) {
        assert!(
            t1.elapsed() < alone * 2,
            "balanced jobs take longer than twice the pinned ones\n{}",
            logs(&c)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let balanced = t1.elapsed();
    for (j, _) in jobs {
        assert_eq!(j.finish(&c, Duration::from_secs(10)).1, "0");
    }
    let ratio = balanced.as_secs_f64() / alone.as_secs_f64();
    eprintln!(
        "balance: all at n1 {:.1} s, balanced {:.1} s (ratio {ratio:.2}); spread after {:.1} s \
         (wait {:.1} s); {} migrations",
        alone.as_secs_f64(),
        balanced.as_secs_f64(),
        spread_at.as_secs_f64(),
        spread.as_secs_f64(),
        migrations(&c)
    );
    assert!(
        ratio < 0.75,
        "balanced makespan {balanced:?} is not clearly below the one-node {alone:?}\n{}",
        logs(&c)
    );
}

#[test]
fn a_blocked_node_gets_no_guests_and_nothing_moves_in_a_quiet_minute() {
    let c = Cluster::up_balancing(3).unwrap();
    let exe = mosix_tests::build_c_example("progress", &c.dir, &[]);
    let daemons = remoteds(&c);
    mosctl(&c, "n3", &["block"]);
    c.wait_for(
        "n1 to learn that n3 is blocked",
        Duration::from_secs(10),
        || {
            let out = mosctl(&c, "n1", &["nodes", "--json"]);
            let rows: serde_json::Value = serde_json::from_str(&out)?;
            Ok(rows.as_array().is_some_and(|a| {
                a.iter()
                    .any(|r| r["name"] == "n3" && r["accepts_guests"] == false)
            }))
        },
    )
    .unwrap();

    // Three long jobs at n1, one pinned: one of the two free ones goes to
    // n2 (n1 then runs 2, n2 1: no further move pays), none to n3.
    let specs: [(&[&str], u64); 3] = [(&["-L"], 31), (&[], 32), (&[], 33)];
    let jobs: Vec<(Job, i32)> = specs
        .iter()
        .enumerate()
        .map(|(i, (opts, tag))| {
            let j = Job::start(
                &c,
                "n1",
                opts,
                &argv(&exe, 1_000_000, WORK, *tag),
                &format!("long{i}"),
                JobOut::Null,
            );
            let pid = j.home_pid(&c);
            (j, pid)
        })
        .collect();
    let placement = |jobs: &[(Job, i32)]| -> Vec<Option<String>> {
        jobs.iter()
            .map(|(j, pid)| j.node(*pid, "n1", &daemons))
            .collect()
    };
    c.wait_for("one job to move to n2", Duration::from_secs(20), || {
        let p = placement(&jobs);
        Ok(p.iter().filter(|n| n.as_deref() == Some("n2")).count() == 1
            && p.iter().filter(|n| n.as_deref() == Some("n1")).count() == 2)
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", placement(&jobs), logs(&c)));
    // The body may run before homed has logged the commit.
    c.wait_for(
        "homed to log the migration",
        Duration::from_secs(10),
        || Ok(migrations(&c) >= 1),
    )
    .unwrap();
    let settled = migrations(&c);
    assert_eq!(settled, 1, "{}", logs(&c));
    // mosmon at n1 shows it: one of n1's processes away, one guest at n2.
    c.wait_for(
        "mosmon to show the guest and the process away",
        Duration::from_secs(10),
        || {
            let out = c.exec("n1", &["mosmon", "--json"])?;
            let d: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            let node = |name: &str| {
                d["nodes"]
                    .as_array()
                    .and_then(|a| a.iter().find(|n| n["name"] == name).cloned())
                    .unwrap_or_default()
            };
            Ok(node("n1")["away"] == 1 && node("n2")["guests"] == 1 && node("n3")["guests"] == 0)
        },
    )
    .unwrap();
    let once = c.exec("n1", &["mosmon", "--once"]).unwrap();
    let text = String::from_utf8_lossy(&once.stdout);
    assert!(text.contains("n1*") && text.contains("n3!"), "{text}");

    // A quiet minute: the placement holds, n3 never hosts anything.
    let quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(60) {
        let p = placement(&jobs);
        assert_eq!(
            p[0].as_deref(),
            Some("n1"),
            "the -L job moved\n{}",
            logs(&c)
        );
        assert!(
            !p.iter().any(|n| n.as_deref() == Some("n3")),
            "a job went to the blocked n3: {p:?}\n{}",
            logs(&c)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        migrations(&c),
        settled,
        "migrations during the quiet minute\n{}",
        logs(&c)
    );
    let nodes = mosctl(&c, "n3", &["nodes", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&nodes).unwrap();
    let n3 = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "n3")
        .unwrap()
        .clone();
    assert_eq!(n3["guests"], 0, "{nodes}");
    for (_, pid) in &jobs {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    for (j, _) in jobs {
        j.finish(&c, Duration::from_secs(30));
    }
}

#[test]
fn mosrun_b_starts_a_job_at_a_less_loaded_node_at_once() {
    let c = Cluster::up_balancing(3).unwrap();
    let exe = mosix_tests::build_c_example("progress", &c.dir, &[]);
    let daemons = remoteds(&c);
    // n1 busy with a pinned job, as n1 itself sees it.
    let busy = Job::start(
        &c,
        "n1",
        &["-L"],
        &argv(&exe, 1_000_000, WORK, 41),
        "busy",
        JobOut::Null,
    );
    let busy_pid = busy.home_pid(&c);
    c.wait_for("n1 to see its own load", Duration::from_secs(20), || {
        let out = mosctl(&c, "n1", &["nodes", "--json"]);
        let rows: serde_json::Value = serde_json::from_str(&out)?;
        Ok(rows.as_array().is_some_and(|a| {
            a.iter()
                .any(|r| r["name"] == "n1" && r["load"].as_f64().unwrap_or(0.0) > 1.5)
        }))
    })
    .unwrap();
    // Automatic balancing off, so only -b can move the new job. A bad
    // value changes nothing and says why; only root may change anything.
    let bad = c
        .exec(
            "n1",
            &["mosctl", "params", "auto_migrate=false", "margin=lots"],
        )
        .unwrap();
    assert!(!bad.status.success());
    let why = String::from_utf8_lossy(&bad.stderr);
    assert!(
        why.contains("margin") && why.contains("nothing changed"),
        "{why}"
    );
    let user = c
        .exec(
            "n1",
            &[
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "mosctl",
                "block",
            ],
        )
        .unwrap();
    assert!(!user.status.success());
    assert!(
        String::from_utf8_lossy(&user.stderr).contains("only root"),
        "{}",
        String::from_utf8_lossy(&user.stderr)
    );
    let params = mosctl(&c, "n1", &["params", "--json"]);
    assert!(
        params.contains("\"auto_migrate\"") && params.contains("\"true\""),
        "{params}"
    );
    mosctl(&c, "n1", &["params", "auto_migrate=false"]);
    let job = Job::start(
        &c,
        "n1",
        &["-b"],
        &argv(&exe, 1_000_000, WORK, 42),
        "best",
        JobOut::Null,
    );
    let pid = job.home_pid(&c);
    let took = c
        .wait_for(
            "the -b job to run at n2 or n3",
            Duration::from_secs(30),
            || {
                Ok(matches!(
                    job.node(pid, "n1", &daemons).as_deref(),
                    Some("n2" | "n3")
                ))
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&c)));
    eprintln!("balance: mosrun -b job left n1 after {took:?}");
    assert_eq!(busy.node(busy_pid, "n1", &daemons).as_deref(), Some("n1"));
    for p in [busy_pid, pid] {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    busy.finish(&c, Duration::from_secs(30));
    job.finish(&c, Duration::from_secs(30));
}

/// Node `name`'s guests as `mosctl nodes --json` at that node says.
fn guests_at(c: &Cluster, name: &str) -> u64 {
    let out = mosctl(c, name, &["nodes", "--json"]);
    let nodes: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
    nodes
        .iter()
        .find(|n| n["name"] == name)
        .and_then(|n| n["guests"].as_u64())
        .unwrap_or(0)
}

#[test]
fn expel_and_a_returning_owner_send_guests_home() {
    let c = Cluster::up_balancing(3).unwrap();
    let exe = mosix_tests::build_c_example("progress", &c.dir, &[]);
    let r = remoteds(&c);
    // Two long jobs at n1: one is moved away by the balancer.
    let jobs: Vec<(Job, i32)> = (0..2)
        .map(|i| {
            let a = argv(&exe, STEPS * 4, WORK, 700 + i);
            let j = Job::start(&c, "n1", &[], &a, &format!("ex{i}"), JobOut::Null);
            let home = j.home_pid(&c);
            (j, home)
        })
        .collect();
    let away = |jobs: &[(Job, i32)]| -> Option<(usize, String)> {
        jobs.iter()
            .enumerate()
            .find_map(|(i, (j, h))| j.node(*h, "n1", &r).filter(|n| n != "n1").map(|n| (i, n)))
    };
    let mut found = None;
    c.wait_for("a job to be moved away", Duration::from_secs(30), || {
        found = away(&jobs);
        Ok(found.is_some())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&c)));
    let (i, x) = found.unwrap();
    // Its body is there from the restore on, held until the home commits;
    // the node counts it as a guest from then.
    c.wait_for(
        "the node to count its guest",
        Duration::from_secs(15),
        || Ok(guests_at(&c, &x) >= 1),
    )
    .unwrap_or_else(|e| panic!("{x} does not count its guest: {e}\n{}", logs(&c)));
    // The owner of x sits down: no more guests, and out with those there.
    mosctl(&c, &x, &["block"]);
    mosctl(&c, &x, &["expel"]);
    c.wait_for("x to be empty of guests", Duration::from_secs(15), || {
        Ok(jobs[i].0.node(jobs[i].1, "n1", &r).is_some_and(|n| n != x) && guests_at(&c, &x) == 0)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}\nremoted {x}:\n{}", logs(&c), c.log(&x, "remoted")));
    // Another node takes the job (x is blocked); then its owner comes back:
    // plain busy loops, not mosix processes, in that node's CPU share.
    let mut y = None;
    c.wait_for(
        "a job to be moved to the third node",
        Duration::from_secs(30),
        || {
            y = jobs
                .iter()
                .filter_map(|(j, h)| j.node(*h, "n1", &r))
                .find(|n| n != "n1" && *n != x);
            Ok(y.is_some())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&c)));
    let y = y.unwrap();
    let owner = busy_loops(&c, &y, 2);
    let left = c.wait_for(
        "the owner's node to send its guest home",
        Duration::from_secs(30),
        || {
            Ok(guests_at(&c, &y) == 0
                && jobs
                    .iter()
                    .all(|(j, h)| j.node(*h, "n1", &r).is_none_or(|n| n != y)))
        },
    );
    stop_group(owner);
    left.unwrap_or_else(|e| panic!("{e}\n{}\nremoted {y}:\n{}", logs(&c), c.log(&y, "remoted")));
    for (j, _) in jobs {
        assert_eq!(j.finish(&c, Duration::from_secs(300)).1, "0");
    }
}

#[test]
fn mosrun_r_starts_at_the_named_node_and_mosrun_h_stays_home_until_moved() {
    let c = Cluster::up_balancing(3).unwrap();
    let exe = mosix_tests::build_c_example("progress", &c.dir, &[]);
    let r = remoteds(&c);
    // -r n3: the body runs at n3 within moments of the start.
    let a = argv(&exe, STEPS, WORK, 801);
    let there = Job::start(&c, "n1", &["-r", "n3"], &a, "r", JobOut::Null);
    let home_r = there.home_pid(&c);
    c.wait_for("the -r job to run at n3", Duration::from_secs(10), || {
        Ok(there.node(home_r, "n1", &r).as_deref() == Some("n3"))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&c)));
    // -h: with two idle nodes and well past the residency time, the
    // balancer leaves it at home...
    let b = argv(&exe, STEPS * 2, WORK, 802);
    let stay = Job::start(&c, "n1", &["-h"], &b, "h", JobOut::Null);
    let home_h = stay.home_pid(&c);
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        assert_eq!(
            stay.node(home_h, "n1", &r).as_deref(),
            Some("n1"),
            "a -h job was moved without being told\n{}",
            logs(&c)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // ... until a person moves it.
    let out = c
        .exec("n1", &["mosmigrate", &home_h.to_string(), "n2"])
        .unwrap();
    assert!(
        out.status.success(),
        "mosmigrate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stay.node(home_h, "n1", &r).as_deref(), Some("n2"));
    assert_eq!(there.finish(&c, Duration::from_secs(300)).1, "0");
    assert_eq!(stay.finish(&c, Duration::from_secs(300)).1, "0");
}

/// `n` plain busy loops (not mosix processes) at `node`, in its CPU share,
/// in a process group of their own for [`stop_group`].
fn busy_loops(c: &Cluster, node: &str, n: usize) -> Child {
    let script = format!("for i in $(seq {n}); do (while :; do :; done) & done; wait");
    Command::new(bin("mosix-local"))
        .args(["exec", "--dir"])
        .arg(&c.dir)
        .args([node, "--", "sh", "-c", &script])
        .env("MOSIX_BIN_DIR", bin_dir())
        .process_group(0)
        .spawn()
        .unwrap()
}

/// Kill the process group `child` leads, and reap it.
fn stop_group(mut child: Child) {
    // SAFETY: kill(2) of a process group we started; no memory.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    let _ = child.wait();
}
