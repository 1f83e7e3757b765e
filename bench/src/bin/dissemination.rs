//! Cost and speed of load-information dissemination (ARCHITECTURE.md section 10):
//! messages each node sends per second, how long until every node holds
//! news of a node whose load just changed, and how a stopped node is seen,
//! at 10, 100 and 1,000 simulated nodes. Runs the real `Dissemination` state
//! machine in the deterministic simulator; figures are in simulated time, so
//! they do not depend on this machine's speed. Build with `--release`.
//!
//! The cost per node is bounded by constants independent of the cluster's
//! size (one gossip and at most one probe per interval, replies only when
//! asked; see the dissemination module docs), so msgs/node/s must stay
//! about the same from 10 to 1,000 nodes. With the freshest entries only,
//! the price was paid in news delay (news of one node reached all N nodes
//! in time growing with N); entries whose load changed are now pushed
//! first, in a quarter of the window, for a few seconds.
//!
//! Measured (2026-11, seed 1): msgs/node/s 2.54 / 6.44 / 7.65 at 10 / 100 /
//! 1,000 nodes (busiest 2.8 / 7.3 / 9.7); a stopped node unused everywhere
//! after 4.0 s at every size. News of a newly loaded node at half / 90 % /
//! all of the others, at 10 / 100 / 1,000 nodes:
//!
//! - freshest entries only (`--push-changed-ms 0`): 0.6 / 1.6 / 1.6 s,
//!   1.1 / 3.1 / 6.1 s, 7.6 / 23.1 / 86.1 s;
//! - a window of 32 (`--push-changed-ms 0 --window 32`): 1,000 nodes
//!   6.1 / 13.6 / 42.6 s, msgs/node/s 7.46, each message twice as big;
//! - changed entries pushed first (the default, window 16, 4 slots; 8
//!   gave the same): 100 nodes 0.6 / 1.1 / 1.2 s, 1,000 nodes
//!   1.1 / 1.6 / 1.6 s, msgs/node/s unchanged (7.65 at 1,000);
//! - with 50 other loads changing every second (`--churn-per-s 50`), at
//!   1,000 nodes: freshest only 7.6 / 23.1 / 86.1 s (churn does not touch
//!   it); pushed in 8 slots 7.6 / 35.6 / 115.1 s; in 4 slots
//!   9.1 / 30.1 / 76.1 s, hence the default.
//!
//! `--churn-per-s K` also changes K other nodes' loads every second, news
//! competing with the one measured. The 1,000-node row (146 simulated s)
//! takes ~75 s of an idle machine's time.

use anyhow::{Result, bail};
use clap::Parser;
use mosix_remoted::policy::Action;
use mosix_remoted::policy::sim::{SimParams, Simulation};
use std::time::Instant;

/// Prints dissemination cost, news delay and death detection at several
/// cluster sizes.
#[derive(Parser)]
struct Args {
    /// Cluster sizes to simulate.
    #[arg(long, value_delimiter = ',', default_values_t = [10, 100, 1000])]
    nodes: Vec<usize>,
    /// Simulated seconds of warm-up before measuring (nodes start together).
    #[arg(long, default_value_t = 20)]
    warmup_s: u64,
    /// Simulated seconds over which the message rate is measured.
    #[arg(long, default_value_t = 30)]
    window_s: u64,
    /// Longest simulated time to wait for news to reach every node, s.
    #[arg(long, default_value_t = 600)]
    news_limit_s: u64,
    /// Seed of the simulation.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Entries per message (the configuration's `window`).
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// How long a node pushes news of a changed load ahead of the freshest
    /// entries, ms (0: only the freshest, as before).
    #[arg(long, default_value_t = 5_000)]
    push_changed_ms: u64,
    /// Window slots such changed entries may take.
    #[arg(long, default_value_t = 4)]
    changed_slots: usize,
    /// Other nodes whose load changes by a whole process every simulated
    /// second, from the start of the measurement on (background news
    /// competing with the one measured).
    #[arg(long, default_value_t = 0)]
    churn_per_s: usize,
}

/// Changes the load of `k` nodes other than `skip` (a whole process up or
/// down), chosen by a small deterministic generator from `state`.
fn churn(sim: &mut Simulation, k: usize, skip: usize, state: &mut u64) {
    let n = sim.nodes().len();
    for _ in 0..k {
        // xorshift64*: deterministic, no dependency.
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        let r = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let i = (r % n as u64) as usize;
        if i != skip {
            let load = ((r >> 32) % 4) as f64 + 0.5;
            sim.set_load(i, load);
        }
    }
}

/// Runs the simulation to `until_ms`, changing `churn_per_s` loads every
/// simulated second on the way.
fn run_churning(
    sim: &mut Simulation,
    until_ms: u64,
    churn_per_s: usize,
    skip: usize,
    state: &mut u64,
) {
    if churn_per_s == 0 {
        sim.run_until(until_ms);
        return;
    }
    while sim.now_ms() < until_ms {
        let next = (sim.now_ms() / 1000 + 1) * 1000;
        if next > until_ms {
            sim.run_until(until_ms);
            return;
        }
        sim.run_until(next);
        churn(sim, churn_per_s, skip, state);
    }
}

/// Simulated time step between checks, ms.
const STEP_MS: u64 = 100;

/// The load given to the newly loaded node (no node has it before).
const NEW_LOAD: f64 = 9.5;

fn main() -> Result<()> {
    let args = Args::parse();
    if args.window == 0 {
        bail!("--window: a message must carry at least one entry");
    }
    println!(
        "window {} entries; changed loads pushed for {} ms in up to {} slots; {} other loads change per s",
        args.window, args.push_changed_ms, args.changed_slots, args.churn_per_s
    );
    println!(
        "{:>6} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "nodes",
        "known%",
        "msg/n/s",
        "busiest",
        "probe/n/s",
        "news50(s)",
        "news90(s)",
        "news100(s)",
        "unused(s)",
        "declared",
        "dead(s)",
        "wall(s)"
    );
    for &n in &args.nodes {
        if n < 3 {
            bail!("--nodes: a cluster needs at least 3 nodes");
        }
        let wall = Instant::now();
        let mut params = SimParams::default();
        params.dissemination.window_size = args.window;
        params.dissemination.push_changed_ms = args.push_changed_ms;
        params.dissemination.changed_slots = args.changed_slots;
        let mut sim = Simulation::new(params, n, args.seed)?;
        let mut churn_state = args.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let loaded = n - 1;
        // 1. Warm-up, then how much of the cluster each node holds.
        sim.run_until(args.warmup_s * 1000);
        let known = known_fraction(&sim);
        // 2. Steady-state cost over the window.
        let sent_before: Vec<u64> = sim.nodes().iter().map(|x| x.sent).collect();
        let probes_before = probes(&sim);
        let t0 = sim.now_ms();
        run_churning(
            &mut sim,
            t0 + args.window_s * 1000,
            args.churn_per_s,
            loaded,
            &mut churn_state,
        );
        let sent: Vec<u64> = sim
            .nodes()
            .iter()
            .zip(&sent_before)
            .map(|(x, b)| x.sent - b)
            .collect();
        let secs = args.window_s as f64;
        let per_node_s = sent.iter().sum::<u64>() as f64 / n as f64 / secs;
        let busiest = sent.iter().copied().max().unwrap_or(0) as f64 / secs;
        let probes_node_s = (probes(&sim) - probes_before) as f64 / n as f64 / secs;
        // 3. A node becomes loaded at t0: until every other node holds an
        //    entry for it with the new load (news from after t0).
        let name = sim.nodes()[loaded].name.clone();
        sim.set_load(loaded, NEW_LOAD);
        let start = sim.now_ms();
        let mut heard: Vec<Option<u64>> = vec![None; n];
        heard[loaded] = Some(0);
        let deadline = start + args.news_limit_s * 1000;
        while heard.iter().any(Option::is_none) && sim.now_ms() < deadline {
            let next = sim.now_ms() + STEP_MS;
            run_churning(&mut sim, next, args.churn_per_s, loaded, &mut churn_state);
            for (i, h) in heard.iter_mut().enumerate().filter(|(_, h)| h.is_none()) {
                if sim
                    .view_of(i, &name)
                    .is_some_and(|v| (v.entry.load - NEW_LOAD).abs() < 1e-9)
                {
                    *h = Some(sim.now_ms() - start);
                }
            }
        }
        let others = n - 1;
        let mut delays: Vec<u64> = heard
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != loaded)
            .filter_map(|(_, h)| *h)
            .collect();
        delays.sort_unstable();
        let quantile = |q: f64| -> String {
            let k = ((others as f64 * q).ceil() as usize).max(1);
            delays.get(k - 1).map_or_else(
                || ">limit".to_owned(),
                |d| format!("{:.1}", *d as f64 / 1000.0),
            )
        };
        // 4. A node stops: until no node uses it (its news stale or it is
        //    declared dead everywhere), and who declared it dead, when.
        let victim = n / 2;
        let vname = sim.nodes()[victim].name.clone();
        let events_before: Vec<usize> = sim.nodes().iter().map(|x| x.events.len()).collect();
        let stop_at = sim.now_ms();
        sim.stop(victim);
        let mut unused_after = None;
        while sim.now_ms() < stop_at + 10_000 {
            let next = sim.now_ms() + STEP_MS;
            sim.run_until(next);
            if unused_after.is_none()
                && (0..n)
                    .filter(|&i| i != victim)
                    .all(|i| sim.view_of(i, &vname).is_none_or(|v| !v.alive))
            {
                unused_after = Some(sim.now_ms() - stop_at);
            }
        }
        let mut declared = 0;
        let mut last_death = 0;
        for (x, before) in sim.nodes().iter().zip(&events_before) {
            for e in &x.events[*before..] {
                if let Action::NodeDied { name } = &e.action {
                    if *name == vname {
                        declared += 1;
                        last_death = last_death.max(e.at_ms - stop_at);
                    } else {
                        bail!("{n} nodes: {} falsely declared {name} dead", x.name);
                    }
                }
            }
        }
        println!(
            "{:>6} {:>8.1} {:>8.2} {:>8.2} {:>9.2} {:>9} {:>9} {:>10} {:>9} {:>9} {:>8} {:>8.1}",
            n,
            known * 100.0,
            per_node_s,
            busiest,
            probes_node_s,
            quantile(0.5),
            quantile(0.9),
            quantile(1.0),
            unused_after.map_or_else(|| ">10".to_owned(), |t| format!("{:.1}", t as f64 / 1000.0)),
            format!("{declared}/{others}"),
            if declared > 0 {
                format!("{:.1}", last_death as f64 / 1000.0)
            } else {
                "-".to_owned()
            },
            wall.elapsed().as_secs_f64(),
        );
    }
    println!(
        "known%: share of the other nodes each node holds after warm-up; news50/90/100: \
         simulated s until that share of the other nodes holds the loaded node's new load; \
         unused: until no node uses a stopped node (all its news stale or it is declared dead); \
         declared: nodes that declared it dead (those that relied on it), the last after dead(s); \
         wall: this machine's time for the whole row. Interval 500 ms."
    );
    Ok(())
}

/// Share of the other nodes that each node holds (stale or fresh, not
/// declared dead), averaged over the nodes.
fn known_fraction(sim: &Simulation) -> f64 {
    let n = sim.nodes().len();
    let mut held = 0usize;
    for i in 0..n {
        if let Some(v) = sim.view(i) {
            held += v
                .iter()
                .filter(|x| !x.is_self && !sim.believes_dead(i, &x.entry.name))
                .count();
        }
    }
    held as f64 / (n * (n - 1)) as f64
}

/// Probes sent so far by all nodes.
fn probes(sim: &Simulation) -> u64 {
    sim.nodes()
        .iter()
        .filter_map(|x| x.dis.as_ref())
        .map(|d| d.stats().probes)
        .sum()
}
