//! The paper's Table 1 for real, on this machine: 16 `mosix-local` nodes,
//! each held to its share of a core by a cgroup (default one eighth, so 16
//! nodes make two cores), n identical CPU-bound processes (`mosrun`
//! running `examples/c/progress.c`) all started at n1, and the time until
//! the last one ends, beside the optimum `max(w, w n / 16)`.
//!
//! The work is scaled down: a process takes `--work-s` seconds (default 15,
//! the paper's 300 s divided by `--scale` 20) alone on a node, measured by
//! a calibration run at the start; every balancer interval of the nodes'
//! configuration is divided by the same factor, down to a floor: the
//! smallest values the configuration accepts (consideration 100 ms, load
//! sample 10 ms), and for gossip (100 ms) and failure detection (suspect
//! 1 s, dead 2 s) what 16 nodes on two shared cores keep up with. The load average still folds once a second (a constant of
//! `remoted`), which is 20 times slower relative to the work than in the
//! paper. Run as root; the machine should be otherwise idle, since the 16
//! nodes together are given all of two cores.
//!
//! Measured 2026-11-30 on the shared 2-core machine (load average 20 rising
//! to 59 during the run, from other work): the full table took 20 min, an
//! average slowdown of 115 % against the optimum and 23 % against the
//! placed reference (16 pinned jobs, one per node, took 28.8 s instead of
//! 15: the machine did not have the nodes' two cores to give); `--quick`
//! 14.0 / 40.5 / 39.5 / 68.7 s for 1 / 16 / 17 / 32 processes (placed 36.2
//! s), 110 % and 0.7 %. What the daemons' logs showed, before the fixes:
//! a pair of guests on one node was never split (a host does not move its
//! guests, and the home considered only processes at home: the simulator
//! as the daemons decide gave 600 s instead of 450 for 17 to 31
//! processes); a target's raised load lapsed before a migration ended,
//! since migrations froze the process 0.5 to 4.3 s (median 1.3 s) on these
//! nodes, as much from hosts running one or two jobs as from the crowded
//! home, so the machine's load and not the home's own cgroup made them
//! slow; and three processes went to one node.

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Prints the paper's Table 1 measured on a local cluster.
#[derive(Parser)]
#[command(about)]
struct Args {
    /// A few rows only (1, 16, 17, 32), in a few minutes.
    #[arg(long)]
    quick: bool,
    /// Only these rows (numbers of processes).
    #[arg(long, value_delimiter = ',', conflicts_with = "quick")]
    rows: Vec<usize>,
    /// Seconds one process takes alone on a node.
    #[arg(long, default_value_t = 15.0)]
    work_s: f64,
    /// Factor the balancer's intervals are divided by (300 s / 15 s).
    #[arg(long, default_value_t = 20.0)]
    scale: f64,
    /// CPU share of each node, in cores.
    #[arg(long, default_value_t = 0.125)]
    cpu_share: f64,
    /// Cluster directory.
    #[arg(long, default_value = "/tmp/mosix-table1-real")]
    dir: PathBuf,
}

const NODES: usize = 16;
const ALL_ROWS: [usize; 19] = [
    1, 2, 4, 8, 16, 17, 20, 24, 25, 27, 31, 32, 33, 36, 38, 40, 43, 47, 48,
];
const QUICK_ROWS: [usize; 4] = [1, 16, 17, 32];
/// Hash rounds per progress step: about 10 ms of a reference CPU.
const WORK_PER_STEP: u64 = 10_000_000;

struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
}

impl Cluster {
    fn local(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = Command::new(self.bin.join("mosix-local"));
        cmd.arg(args[0])
            .arg("--dir")
            .arg(&self.dir)
            .args(&args[1..]);
        cmd.env("MOSIX_BIN_DIR", &self.bin);
        let out = cmd.output().context("cannot run mosix-local")?;
        if !out.status.success() {
            bail!(
                "mosix-local {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out)
    }

    /// Runs `n` jobs of `steps` at n1 (pinned with -L if `pinned`); returns
    /// the time until the last ends.
    fn run_row(&self, prog: &Path, n: usize, steps: u64, pinned: bool) -> Result<Duration> {
        let opt = if pinned { "-L" } else { "" };
        let script = format!(
            "for i in $(seq {n}); do mosrun {opt} -- {prog} {steps} $(({WORK_PER_STEP} + i)) 0 > /dev/null & done; wait",
            prog = prog.display()
        );
        let t = Instant::now();
        self.local(&["exec", "n1", "--", "sh", "-c", &script])?;
        Ok(t.elapsed())
    }
}

impl Cluster {
    /// One pinned job of `steps` at each node, all at once: the makespan of
    /// a perfect placement on this machine now.
    fn run_placed(&self, prog: &Path, steps: u64) -> Result<Duration> {
        let t = Instant::now();
        let children: Vec<_> = (1..=NODES)
            .map(|i| {
                Command::new(self.bin.join("mosix-local"))
                    .args(["exec", "--dir"])
                    .arg(&self.dir)
                    .arg(format!("n{i}"))
                    .args(["--", "sh", "-c"])
                    .arg(format!(
                        "mosrun -L -- {} {steps} {} 0 > /dev/null",
                        prog.display(),
                        WORK_PER_STEP + i as u64
                    ))
                    .env("MOSIX_BIN_DIR", &self.bin)
                    .spawn()
                    .context("cannot run mosix-local exec")
            })
            .collect::<Result<_>>()?;
        for mut c in children {
            let st = c.wait()?;
            ensure!(st.success(), "a placed reference job failed: {st}");
        }
        Ok(t.elapsed())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(e) = self.local(&["down"]) {
            eprintln!("table1_real: {e:#}");
        }
    }
}

/// The `[balancer]` and `tick_ms` lines for intervals divided by `scale`.
fn scaled_config(scale: f64) -> (String, String) {
    let s = |ms: f64, min: f64| (ms / scale).max(min).round() as u64;
    // Gossip and failure detection are held above what 16 nodes sharing
    // two busy cores can keep up with: at 50 ms gossip and 200 ms "dead",
    // every target's news was too old to move a process for (and news older
    // than dead_after_ms is never used).
    // What depends on the load average, which folds once a second whatever
    // the scale, or on how long a migration takes (0.5 to 4 s frozen on
    // these nodes, measured), is not scaled below them: a target's raised
    // load held 500 ms lapsed before the process even ran there, and three
    // processes went to one node; an owner "back" after 150 ms of a node's
    // own load was one fold's noise, and sent guests home.
    let info = s(500.0, 100.0);
    let dead = s(4000.0, 2000.0);
    let suspect = s(2000.0, 1000.0);
    let balancer = format!(
        "\n[balancer]\ninfo_interval_ms = {info}\nsuspect_after_ms = {suspect}\ndead_after_ms = {dead}\n\
         consider_interval_ms = {}\nresidency_ms = {}\naccounting_hold_ms = {}\nno_return_ms = {}\n\
         owner_hold_ms = {}\nleave_ask_every_ms = {}\n",
        s(1000.0, 100.0),
        s(1000.0, 0.0),
        s(10_000.0, 3_000.0),
        s(30_000.0, 0.0),
        s(3000.0, 3_000.0),
        s(10_000.0, 1_000.0),
    );
    (balancer, format!("tick_ms = {}\n", s(100.0, 10.0)))
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        args.work_s > 0.0 && args.scale >= 1.0 && args.cpu_share > 0.0,
        "--work-s, --scale and --cpu-share must be positive (scale at least 1)"
    );
    ensure!(
        nix::unistd::geteuid().is_root(),
        "run as root: the nodes need namespaces and cgroups"
    );
    let bin = std::env::current_exe()?
        .parent()
        .context("no directory for this executable")?
        .to_path_buf();
    let rows: Vec<usize> = if args.quick {
        QUICK_ROWS.to_vec()
    } else if args.rows.is_empty() {
        ALL_ROWS.to_vec()
    } else {
        args.rows.clone()
    };
    let _ = Command::new(bin.join("mosix-local"))
        .args(["down", "--dir"])
        .arg(&args.dir)
        .output();
    let c = Cluster {
        dir: args.dir.clone(),
        bin,
    };
    let share = args.cpu_share.to_string();
    c.local(&[
        "up",
        "--nodes",
        &NODES.to_string(),
        "--cpu-share",
        &share,
        "--timeout",
        "120",
    ])?;
    let (balancer, tick) = scaled_config(args.scale);
    for i in 1..=NODES {
        let node = format!("n{i}");
        let path = c.dir.join(&node).join("mosix.toml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        ensure!(
            !text.contains("[balancer]"),
            "{} already has a [balancer] section",
            path.display()
        );
        let text = text.replacen("[load]\n", &format!("[load]\n{tick}"), 1) + &balancer;
        std::fs::write(&path, text)?;
        c.local(&["stop", &node])?;
        c.local(&["start", &node])?;
    }
    let prog = c.dir.join("progress");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/c/progress.c");
    let cc = Command::new("cc")
        .arg("-O1")
        .arg("-o")
        .arg(&prog)
        .arg(&src)
        .output()
        .context("cannot run cc")?;
    ensure!(
        cc.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&cc.stderr)
    );

    // Calibration: one pinned job alone on n1.
    let probe_steps = 40;
    let probe = c.run_row(&prog, 1, probe_steps, true)?.as_secs_f64();
    let steps = ((args.work_s / probe) * probe_steps as f64)
        .round()
        .max(1.0) as u64;
    println!(
        "Table 1 on {NODES} local nodes of {} core each: processes of {:.1} s alone on a node \
         ({steps} steps; calibration {probe_steps} steps took {probe:.2} s), intervals / {}",
        args.cpu_share, args.work_s, args.scale
    );
    // The nodes share this machine's cores (and with whatever else runs on
    // it): with all 16 busy, each may get less than its share. A perfect
    // placement measured now is the reference the balancer can reach.
    let placed = c.run_placed(&prog, steps)?.as_secs_f64();
    println!(
        "placed: one pinned job per node, all 16 at once, took {placed:.2} s ({:.0}% of the nominal {:.1} s)",
        placed / args.work_s * 100.0,
        args.work_s
    );
    println!(
        "{:>4} {:>9} {:>9} {:>9} {:>10} {:>10}",
        "n", "optimal", "placed", "ours", "vs opt%", "vs placed%"
    );
    let (mut sum, mut sum_placed) = (0.0, 0.0);
    for &n in &rows {
        ensure!(n > 0, "a row must have at least one process");
        let ours = c.run_row(&prog, n, steps, false)?.as_secs_f64();
        let per = (n as f64 / NODES as f64).max(1.0);
        let optimal = args.work_s * per;
        // With fewer than 16 busy nodes the machine is less crowded than
        // in the placed run: never let the reference drop below nominal.
        let reference = if n < NODES { optimal } else { placed * per };
        let slow = (ours / optimal - 1.0) * 100.0;
        let slow_placed = (ours / reference - 1.0) * 100.0;
        sum += slow;
        sum_placed += slow_placed;
        println!(
            "{n:>4} {optimal:>9.2} {reference:>9.2} {ours:>9.2} {slow:>10.2} {slow_placed:>10.2}"
        );
    }
    let k = rows.len() as f64;
    println!(
        "average slowdown {:.2}% against the optimum, {:.2}% against the placed reference, over {} rows (the paper's MOSIX: 1.95%)",
        sum / k,
        sum_placed / k,
        rows.len()
    );
    Ok(())
}
