//! A deterministic, in-memory cluster of [`Dissemination`] state machines,
//! for tests and benchmarks (ARCHITECTURE.md section 7: "a deterministic simulator
//! drives thousands of nodes"). No sockets, no threads, no wall clock: events
//! (ticks and message deliveries) are taken from a queue in time order, and
//! every random choice comes from seeded generators, so a run is a function
//! of its seed.
//!
//! Each node has its own monotonic clock (the global simulated time plus a
//! random offset), so the age-to-time-base conversion is exercised. A message
//! takes a random 0..=`max_latency_ms` to arrive. A send to a stopped node is
//! reported back to the sender as failed at once, as a refused connection
//! would be; a message in flight when its receiver stops is lost.

use super::dissemination::{
    Action, Dissemination, DisseminationError, DisseminationParams, NodeView,
};
use mosix_proto::msg::{LoadEntry, PeerMessage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// How the simulated cluster behaves.
#[derive(Debug, Clone)]
pub struct SimParams {
    /// Parameters of every node's dissemination.
    pub dissemination: DisseminationParams,
    /// How often each node's daemon ticks (its load-sampling period).
    pub tick_ms: u64,
    /// Longest message transit time.
    pub max_latency_ms: u64,
    /// How many of the first nodes serve as seeds to every node.
    pub seeds: usize,
}

impl Default for SimParams {
    fn default() -> Self {
        Self {
            dissemination: DisseminationParams::default(),
            tick_ms: 100,
            max_latency_ms: 3,
            seeds: 2,
        }
    }
}

/// Something a node's state machine reported (every [`Action`] except
/// [`Action::Send`]), with the global simulated time.
#[derive(Debug, Clone, PartialEq)]
pub struct SimEvent {
    /// Global simulated time, ms.
    pub at_ms: u64,
    /// What was reported.
    pub action: Action,
}

/// One simulated node.
#[derive(Debug)]
pub struct SimNode {
    /// Its name (`n0`, `n1`, ...).
    pub name: String,
    /// Its address.
    pub address: SocketAddr,
    /// Its current generation.
    pub generation: u64,
    /// Its state machine, `None` while stopped.
    pub dis: Option<Dissemination>,
    /// Offset of its monotonic clock from the global time.
    pub clock_offset_ms: u64,
    /// Everything it reported.
    pub events: Vec<SimEvent>,
    /// Messages it sent, over all its lives.
    pub sent: u64,
    /// Increments at each start, so ticks of a stopped life are dropped.
    life: u64,
}

enum Event {
    Tick {
        node: usize,
        life: u64,
    },
    Deliver {
        to: usize,
        from: SocketAddr,
        msg: PeerMessage,
    },
}

/// The simulated cluster.
pub struct Simulation {
    params: SimParams,
    nodes: Vec<SimNode>,
    by_addr: BTreeMap<SocketAddr, usize>,
    seeds: Vec<SocketAddr>,
    now_ms: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    pending: BTreeMap<u64, Event>,
    next_seq: u64,
    rng: StdRng,
    /// Loads set by [`Simulation::set_load`], replacing the derived ones.
    loads: BTreeMap<usize, f64>,
}

/// The address of simulated node `i`.
pub fn sim_address(i: usize) -> SocketAddr {
    let i = u32::try_from(i).unwrap_or(u32::MAX);
    let ip = Ipv4Addr::from(0x0a00_0001_u32.wrapping_add(i));
    SocketAddr::new(IpAddr::V4(ip), 7000)
}

impl Simulation {
    /// `n` nodes, all started at time 0 with ticks at random phases.
    pub fn new(params: SimParams, n: usize, seed: u64) -> Result<Self, DisseminationError> {
        params.dissemination.validate()?;
        let mut rng = StdRng::seed_from_u64(seed);
        let seeds: Vec<SocketAddr> = (0..params.seeds.min(n)).map(sim_address).collect();
        let mut sim = Self {
            params,
            nodes: Vec::with_capacity(n),
            by_addr: BTreeMap::new(),
            seeds,
            now_ms: 0,
            queue: BinaryHeap::new(),
            pending: BTreeMap::new(),
            next_seq: 0,
            rng: StdRng::seed_from_u64(0),
            loads: BTreeMap::new(),
        };
        for i in 0..n {
            let address = sim_address(i);
            sim.by_addr.insert(address, i);
            sim.nodes.push(SimNode {
                name: format!("n{i}"),
                address,
                generation: 1_000 + i as u64,
                dis: None,
                clock_offset_ms: rng.random_range(0..1_000_000),
                events: Vec::new(),
                sent: 0,
                life: 0,
            });
        }
        sim.rng = rng;
        for i in 0..n {
            sim.start(i)?;
        }
        Ok(sim)
    }

    /// Global simulated time, ms.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The nodes.
    pub fn nodes(&self) -> &[SimNode] {
        &self.nodes
    }

    /// Gives node `i` a new load from now on (a burst of work arriving), so
    /// a test or benchmark can watch the news travel.
    pub fn set_load(&mut self, i: usize, load: f64) {
        self.loads.insert(i, load);
    }

    /// Node `i`'s own entry at this moment (load figures derive from `i`
    /// unless [`Simulation::set_load`] set one).
    fn own_entry(&self, i: usize) -> LoadEntry {
        let n = &self.nodes[i];
        LoadEntry {
            name: n.name.clone(),
            address: n.address,
            generation: n.generation,
            age_ms: 0,
            load: self.loads.get(&i).copied().unwrap_or((i % 7) as f64 * 0.25),
            cpus: 1.0 + (i % 3) as f64,
            speed: 1.0,
            free_mem_bytes: 1 << 30,
            accepts_guests: true,
            guests: 0,
            away: 0,
        }
    }

    fn local_now(&self, i: usize) -> u64 {
        self.now_ms + self.nodes[i].clock_offset_ms
    }

    fn push(&mut self, at: u64, ev: Event) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.insert(seq, ev);
        self.queue.push(Reverse((at, seq)));
    }

    fn start(&mut self, i: usize) -> Result<(), DisseminationError> {
        let me = self.own_entry(i);
        let seed = self.rng.random();
        let dis = Dissemination::new(
            self.params.dissemination.clone(),
            me,
            self.seeds.clone(),
            seed,
        )?;
        let node = &mut self.nodes[i];
        node.dis = Some(dis);
        node.life += 1;
        let life = node.life;
        let phase = self.rng.random_range(0..self.params.tick_ms.max(1));
        self.push(self.now_ms + phase, Event::Tick { node: i, life });
        Ok(())
    }

    /// Stops node `i` (it falls silent, as a crashed daemon).
    pub fn stop(&mut self, i: usize) {
        self.nodes[i].dis = None;
    }

    /// Restarts node `i` with a higher generation and an empty table.
    pub fn restart(&mut self, i: usize) -> Result<(), DisseminationError> {
        self.nodes[i].generation += 1;
        self.start(i)
    }

    /// What node `i` believes now, `None` while it is stopped.
    pub fn view(&self, i: usize) -> Option<Vec<NodeView>> {
        let now = self.local_now(i);
        self.nodes[i].dis.as_ref().map(|d| d.nodes(now))
    }

    /// What node `i` believes about the node named `name` now (`None` while
    /// `i` is stopped or does not know it); O(log N), unlike
    /// [`Simulation::view`], so checks over all pairs stay affordable at
    /// 1,000 nodes.
    pub fn view_of(&self, i: usize, name: &str) -> Option<NodeView> {
        let now = self.local_now(i);
        self.nodes[i].dis.as_ref().and_then(|d| d.node(name, now))
    }

    /// Whether node `i` (running) has declared the node named `name` dead.
    pub fn believes_dead(&self, i: usize, name: &str) -> bool {
        self.nodes[i]
            .dis
            .as_ref()
            .is_some_and(|d| d.believed_dead(name))
    }

    /// Runs every event up to and including global time `until_ms`.
    pub fn run_until(&mut self, until_ms: u64) {
        while let Some(&Reverse((at, seq))) = self.queue.peek() {
            if at > until_ms {
                break;
            }
            self.queue.pop();
            self.now_ms = at;
            let Some(ev) = self.pending.remove(&seq) else {
                continue;
            };
            match ev {
                Event::Tick { node, life } => {
                    if self.nodes[node].life != life || self.nodes[node].dis.is_none() {
                        continue;
                    }
                    let now = self.local_now(node);
                    let own = self.own_entry(node);
                    let actions = self.nodes[node]
                        .dis
                        .as_mut()
                        .map(|d| d.tick(now, own))
                        .unwrap_or_default();
                    self.apply(node, actions);
                    let next = self.now_ms + self.params.tick_ms;
                    self.push(next, Event::Tick { node, life });
                }
                Event::Deliver { to, from, msg } => {
                    let now = self.local_now(to);
                    let Some(d) = self.nodes[to].dis.as_mut() else {
                        continue;
                    };
                    let actions = d.on_message(now, from, msg);
                    self.apply(to, actions);
                }
            }
        }
        self.now_ms = until_ms;
    }

    fn apply(&mut self, i: usize, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send { to, msg } => {
                    self.nodes[i].sent += 1;
                    let from = self.nodes[i].address;
                    match self.by_addr.get(&to).copied() {
                        Some(j) if self.nodes[j].dis.is_some() => {
                            let latency = self.rng.random_range(0..=self.params.max_latency_ms);
                            self.push(self.now_ms + latency, Event::Deliver { to: j, from, msg });
                        }
                        _ => {
                            let now = self.local_now(i);
                            if let Some(d) = self.nodes[i].dis.as_mut() {
                                d.on_send_failed(now, to);
                            }
                        }
                    }
                }
                other => {
                    let at_ms = self.now_ms;
                    self.nodes[i].events.push(SimEvent {
                        at_ms,
                        action: other,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `NodeDied` reported: (reporting node, dead node's name, time).
    fn deaths(sim: &Simulation) -> Vec<(usize, String, u64)> {
        let mut out = Vec::new();
        for (i, n) in sim.nodes().iter().enumerate() {
            for e in &n.events {
                if let Action::NodeDied { name } = &e.action {
                    out.push((i, name.clone(), e.at_ms));
                }
            }
        }
        out
    }

    /// Whether every running node holds every other running node, not
    /// declared dead, with its current generation and its published
    /// figures; and, in a cluster that fits in one gossip window, with fresh
    /// news (alive). A bigger cluster cannot keep every pair fresh at a
    /// constant cost per node (see the dissemination module docs).
    fn knows_all(sim: &Simulation) -> bool {
        let nodes = sim.nodes();
        let strict = nodes.len() <= sim.params.dissemination.window_size + 1;
        let running: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes[i].dis.is_some())
            .collect();
        running.iter().all(|&i| {
            running.iter().filter(|&&j| j != i).all(|&j| {
                sim.view_of(i, &nodes[j].name).is_some_and(|v| {
                    (v.alive || !strict)
                        && !sim.believes_dead(i, &nodes[j].name)
                        && v.entry.generation == nodes[j].generation
                        && v.entry.address == nodes[j].address
                        && v.entry.cpus == 1.0 + (j % 3) as f64
                        && v.entry.load == (j % 7) as f64 * 0.25
                })
            })
        })
    }

    /// Runs until every node knows every other, checking each 100 ms;
    /// returns the time it took, or `None` if not by `limit_ms`.
    fn converge(sim: &mut Simulation, limit_ms: u64) -> Option<u64> {
        let start = sim.now_ms();
        while sim.now_ms() - start <= limit_ms {
            if knows_all(sim) {
                return Some(sim.now_ms() - start);
            }
            let t = sim.now_ms() + 100;
            sim.run_until(t);
        }
        None
    }

    fn sent_per_node_per_s(sim: &Simulation, secs: f64) -> (f64, f64) {
        let n = sim.nodes().len() as f64;
        let total: u64 = sim.nodes().iter().map(|x| x.sent).sum();
        let max = sim.nodes().iter().map(|x| x.sent).max().unwrap_or(0);
        (total as f64 / n / secs, max as f64 / secs)
    }

    #[test]
    fn every_node_learns_every_other() {
        // A fresh node reaches a seed in its first interval and gets the
        // seed's window back at once; the rest spreads by gossip. Measured
        // (10 seeds): 3 nodes 0.1-1.6 s, 16 nodes 1.6-2.6 s, 100 nodes
        // 6.6-10.1 s.
        for (n, limit_ms) in [(3, 3_000), (16, 5_000), (100, 15_000)] {
            for seed in 0..10 {
                let mut sim = Simulation::new(SimParams::default(), n, seed).unwrap();
                let took = converge(&mut sim, limit_ms);
                assert!(
                    took.is_some(),
                    "{n} nodes, seed {seed}: not converged in {limit_ms} ms"
                );
                assert!(deaths(&sim).is_empty());
            }
        }
    }

    #[test]
    fn a_stopped_node_is_dead_everywhere_within_5_s() {
        let mut rng = StdRng::seed_from_u64(42);
        let runs: Vec<(usize, u64)> = (0..100)
            .map(|s| (16, s))
            .chain((0..3).map(|s| (100, s)))
            .collect();
        let mut worst = 0;
        for (n, seed) in runs {
            let mut sim = Simulation::new(SimParams::default(), n, seed).unwrap();
            assert!(
                converge(&mut sim, 20_000).is_some(),
                "{n} nodes, seed {seed}: no convergence"
            );
            let t0 = sim.now_ms() + rng.random_range(0..1_000);
            sim.run_until(t0);
            let victim = rng.random_range(0..n);
            sim.stop(victim);
            let name = sim.nodes()[victim].name.clone();
            // At any size, nobody uses it any more within 5 s: every copy
            // of its news is stale.
            sim.run_until(t0 + 5_000);
            for i in (0..n).filter(|&i| i != victim) {
                assert!(
                    sim.view_of(i, &name).is_none_or(|v| !v.alive),
                    "seed {seed}: node {i} still uses {name} 5 s after it stopped"
                );
            }
            sim.run_until(t0 + 6_000);
            let small = n <= SimParams::default().dissemination.window_size + 1;
            let d = deaths(&sim);
            for (i, who, at) in &d {
                assert_eq!(
                    who, &name,
                    "seed {seed}: node {i} falsely marked {who} dead at {at}"
                );
                // In a cluster that fits in the window the verdict itself
                // comes within 5 s; in a bigger one a node may probe it later
                // (one probe per interval), having stopped using it anyway.
                let bound = if small { 5_000 } else { 6_000 };
                assert!(
                    *at > t0 && *at <= t0 + bound,
                    "{n} nodes, seed {seed}: node {i} marked {who} dead {} ms after it stopped",
                    at - t0
                );
                if small {
                    worst = worst.max(at - t0);
                }
            }
            if small {
                // In a cluster that fits in the window every node relied on
                // it, so every other node declared it dead, exactly once.
                assert_eq!(d.len(), n - 1, "seed {seed}: {d:?}");
                for i in (0..n).filter(|&i| i != victim) {
                    assert!(sim.believes_dead(i, &name), "seed {seed}: node {i}");
                }
            } else {
                // In a bigger one, those that relied on it did (at most
                // once each); the others merely hold it stale.
                let mut who: Vec<usize> = d.iter().map(|(i, ..)| *i).collect();
                who.sort_unstable();
                who.dedup();
                assert_eq!(who.len(), d.len(), "seed {seed}: {d:?}");
                assert!(!d.is_empty(), "seed {seed}: nobody declared {name} dead");
            }
        }
        eprintln!("worst detection time (16 nodes): {worst} ms");
    }

    #[test]
    fn no_false_deaths_in_10_minutes_and_bounded_traffic() {
        // (nodes, seeds, bound on mean and on busiest node's messages/s):
        // the same bounds at both sizes, the cost per node does not grow
        // with N (measured: 16 nodes ~3.0 mean, 100 nodes ~6.4, busiest 7.0).
        for (n, seeds, mean_bound, max_bound) in [(16, 0..3, 8.0, 12.0), (100, 0..1, 8.0, 12.0)] {
            for seed in seeds {
                let mut sim = Simulation::new(SimParams::default(), n, seed).unwrap();
                sim.run_until(600_000);
                let d = deaths(&sim);
                assert!(
                    d.is_empty(),
                    "{n} nodes, seed {seed}: {} false deaths, first {:?}",
                    d.len(),
                    d.first()
                );
                assert!(knows_all(&sim));
                let (mean, max) = sent_per_node_per_s(&sim, 600.0);
                eprintln!("{n} nodes, seed {seed}: {mean:.2} msg/node/s, busiest {max:.2}");
                assert!(
                    mean <= mean_bound && max <= max_bound,
                    "{n} nodes: {mean:.2} msg/node/s, busiest {max:.2}"
                );
            }
        }
    }

    #[test]
    fn a_restarted_node_is_alive_again_everywhere() {
        for seed in 0..10 {
            let mut sim = Simulation::new(SimParams::default(), 16, seed).unwrap();
            assert!(converge(&mut sim, 10_000).is_some());
            // Seeds are nodes 0 and 1; restart a non-seed and a seed.
            let victim = if seed % 2 == 0 { 5 } else { 0 };
            let t0 = sim.now_ms();
            sim.stop(victim);
            sim.run_until(t0 + 6_000);
            assert_eq!(deaths(&sim).len(), 15);
            let old_gen = sim.nodes()[victim].generation;
            sim.restart(victim).unwrap();
            let t1 = sim.now_ms();
            let took = converge(&mut sim, 5_000);
            assert!(
                took.is_some(),
                "seed {seed}: restarted node not known everywhere in 5 s"
            );
            assert!(sim.nodes()[victim].generation > old_gen);
            let name = sim.nodes()[victim].name.clone();
            for (i, node) in sim.nodes().iter().enumerate().filter(|(i, _)| *i != victim) {
                let alive = node
                    .events
                    .iter()
                    .any(|e| e.at_ms >= t1 && e.action == Action::NodeAlive { name: name.clone() });
                let restarted = node.events.iter().any(|e| {
                    e.at_ms >= t1
                        && matches!(&e.action, Action::NodeRestarted { name: n, .. } if *n == name)
                });
                assert!(
                    alive && restarted,
                    "seed {seed}: node {i} did not report {name} alive again"
                );
            }
            // A quick restart, before anyone noticed the stop: restarted,
            // never dead.
            let t2 = sim.now_ms();
            sim.stop(3);
            sim.run_until(t2 + 1_000);
            sim.restart(3).unwrap();
            assert!(converge(&mut sim, 5_000).is_some());
            sim.run_until(sim.now_ms() + 10_000);
            assert!(
                deaths(&sim)
                    .iter()
                    .all(|(_, who, at)| *at < t2 || who != "n3"),
                "seed {seed}"
            );
        }
    }
}
