//! The paper's Table 1 in the deterministic simulator: 16 identical nodes,
//! n identical CPU-bound processes of 300 s all started at one node, our
//! makespan against the optimum. The real balancer code runs (load
//! calculation, dissemination, migration consideration of `mosix-remoted`);
//! only the machines, the network and the migrations are simulated (see
//! `mosix_remoted::policy::procsim` for the model and its assumptions).
//!
//! Columns: `fluid` is max(300, 300 n / 16), the paper's optimal column
//! (reached only by sharing the extra processes across nodes in time, which
//! the balancer's rotation does); `ideal` is the makespan of an ideal
//! balancer that obeys only the "more than one process of difference" rule,
//! with zero cost and perfect information (what rotation improves on);
//! `ours` is the simulated makespan (time until the last process ends).
//! The paper's MOSIX column is not printed: its figures were not available
//! to us, only its average slowdown of 1.95 %.

use anyhow::Context;
use clap::Parser;
use mosix_remoted::policy::procsim::{ProcSimParams, TABLE1_ROWS, table1_row};

/// Prints the paper's Table 1 from the simulator.
#[derive(Parser)]
#[command(about)]
struct Args {
    /// Seed of the simulation (every run with one seed is identical).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Assumed migration throughput, MB/s (until the migration benchmark
    /// measures it).
    #[arg(long, default_value_t = 100.0)]
    throughput_mb_s: f64,
    /// Assumed process image, MiB.
    #[arg(long, default_value_t = 8)]
    image_mib: u64,
    /// Work of each process, seconds.
    #[arg(long, default_value_t = 300)]
    work_s: u64,
    /// Only these rows (numbers of processes); all 19 by default.
    #[arg(long, value_delimiter = ',')]
    rows: Vec<usize>,
    /// Rotation period of the balancer, ms (0: off, the daemons' default;
    /// the simulator's is 4000).
    #[arg(long, default_value_t = 4_000)]
    rotate_after_ms: u64,
    /// Each node considers only the processes it started (as `remoted`
    /// does), not its guests.
    #[arg(long)]
    own_only: bool,
    /// With --own-only: a home also moves its processes running elsewhere,
    /// judged from their host's published load (as `remoted` does).
    #[arg(long, requires = "own_only")]
    away: bool,
}

/// Gossip before the processes start, so every node knows the cluster.
const WARMUP_MS: u64 = 10_000;

/// The average slowdown of MOSIX in the paper, percent.
const PAPER_MOSIX_AVG_SLOWDOWN: f64 = 1.95;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.throughput_mb_s.is_finite() && args.throughput_mb_s > 0.0,
        "--throughput-mb-s must be a positive number"
    );
    anyhow::ensure!(args.work_s > 0, "--work-s must be positive");
    let mut params = ProcSimParams::uniform(16);
    params.throughput_bytes_per_s = (args.throughput_mb_s * 1e6) as u64;
    params.consider.rotate_after_ms = args.rotate_after_ms;
    params.own_only = args.own_only;
    params.homes_move_away = args.away;
    let rows: Vec<usize> = if args.rows.is_empty() {
        TABLE1_ROWS.to_vec()
    } else {
        args.rows.clone()
    };
    let image = args.image_mib << 20;
    println!(
        "Table 1: 16 nodes, processes of {} s started at one node; migration {} MB/s, image {} MiB, seed {}; \
         rotation {}; nodes consider {}",
        args.work_s,
        args.throughput_mb_s,
        args.image_mib,
        args.seed,
        if args.rotate_after_ms == 0 {
            "off".to_string()
        } else {
            format!("every {} ms", args.rotate_after_ms)
        },
        if args.own_only && args.away {
            "only their own processes, at home and away (as remoted)"
        } else if args.own_only {
            "only their own processes at home"
        } else {
            "every process they run"
        }
    );
    println!(
        "{:>4} {:>9} {:>9} {:>9} {:>10} {:>10} {:>9} {:>6}",
        "n", "fluid", "ideal", "ours", "vs fluid%", "vs ideal%", "mean", "migr"
    );
    let (mut sum_fluid, mut sum_ideal) = (0.0, 0.0);
    for &n in &rows {
        anyhow::ensure!(n > 0, "a row must have at least one process");
        let row = table1_row(&params, n, args.work_s, WARMUP_MS, args.seed, image)
            .with_context(|| format!("simulating the row of {n} processes"))?;
        let (sf, si) = (row.slowdown_pct(row.fluid_s), row.slowdown_pct(row.ideal_s));
        sum_fluid += sf;
        sum_ideal += si;
        println!(
            "{:>4} {:>9.2} {:>9.2} {:>9.2} {:>10.2} {:>10.2} {:>9.2} {:>6}",
            n,
            row.fluid_s,
            row.ideal_s,
            row.makespan_s,
            sf,
            si,
            row.mean_completion_s,
            row.migrations
        );
    }
    let k = rows.len() as f64;
    println!(
        "average slowdown: {:.2} % vs fluid, {:.2} % vs ideal; paper's MOSIX: {PAPER_MOSIX_AVG_SLOWDOWN} %",
        sum_fluid / k,
        sum_ideal / k
    );
    Ok(())
}
