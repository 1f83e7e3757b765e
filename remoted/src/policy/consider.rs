//! Migration consideration (ARCHITECTURE.md section 7, the paper's third
//! algorithm): which local process, if any, should move, and where. Pure: no
//! I/O, no clock (time is `now_ms`, in the same monotonic base as the
//! [`NodeView`]s it is given), randomness from a seed.
//!
//! # The rules
//!
//! Loads are normalised as in [`super::load`]: 1.0 is one CPU-bound process
//! per reference CPU. A process whose CPU demand is `d` (1.0: CPU-bound)
//! contributes `d / (cpus * speed)` to a node's load.
//!
//! - **Residency.** A process is considered only once it has stayed
//!   `residency_ms` at this node (since it started or arrived), so short-lived
//!   processes are never moved and a process that just moved waits again.
//! - **Load balancing.** A process `p` moves from here (load `L`) to a target
//!   (load `T`) only if `L > T + p_T + margin / C`, where `p_T` is `p`'s
//!   contribution to the target's load and `C` this node's capacity
//!   (`cpus * speed`): the local load must exceed the target's load *after
//!   the move* by the stability margin, a fraction of one CPU-bound
//!   process *here*. Why scaled: the noise the margin absorbs is in the run
//!   queue, counted in processes, so in load units it is larger on a node
//!   with less capacity; on a node with half a CPU (the local test
//!   clusters) an unscaled quarter would be an eighth of a process, and a
//!   daemon's burst of CPU during a migration would trigger another one. On equal nodes
//!   this is "more than one CPU-bound process of difference, plus the margin".
//!   The same inequality, written from the target's side after the move, can
//!   never hold (the property test `no_ping_pong_for_any_loads` checks it):
//!   with correct figures a move is never undone by the load rule.
//! - **Choice of target.** Among the targets that pass the rule, the one on
//!   which the process would progress fastest (`speed * min(1, cpus /
//!   (run queue + d))`) wins, so faster nodes are preferred; ties go to the
//!   lower load after the move, then to more free memory, then at random
//!   (seeded), so that several senders do not all pick the same idle node.
//! - **Never:** to ourselves, to a node believed dead, to a node whose news
//!   is older than `dead_after_ms`, to a node that refuses guests
//!   (`mosctl block`, or a refused migration), to a node without room for the
//!   process's memory; a pinned (`mosrun -L`) or cannot-move process.
//! - **No thrashing.** Besides residency and the rule above, a process is not
//!   sent back by the load rule to the node it came from within
//!   `no_return_ms` (stale figures could otherwise bounce it).
//! - **Local accounting.** A target's load is stale until dissemination
//!   catches up, and load smoothing makes it rise slowly even then. After
//!   deciding a move, we raise our copy of the target's load to what it will
//!   be (a floor held `accounting_hold_ms`), and lower our own load, so the
//!   same and the next rounds do not pile onto one node.
//! - **Memory ushering.** When local free memory is below
//!   `usher_below_bytes`, processes (largest first) move to nodes that keep at
//!   least `usher_below_bytes + reserve` free after receiving them, without
//!   any load difference, as long as the target would not end up more loaded
//!   than we are now.
//! - **Rotation.** The load rule leaves a difference of exactly one process
//!   alone (17 processes on 16 nodes: one pair for good, and the pair ends
//!   at 450 s instead of the optimal 318.75 s). MOSIX shares such an extra
//!   process in time across nodes: when a node runs more CPU-bound
//!   processes than CPUs, all of them have stayed `rotate_after_ms`, and a
//!   target would after the move be no busier than we are now (counting
//!   the processes here, not the lagging smoothed load), the most advanced
//!   process (most CPU used) moves there, at most one per round and only
//!   when the load rule moved nothing. Not back to the node it came from
//!   within `no_return_ms`; the target refuses it if it would end busier
//!   than the sender. The pace (one move per node per period) bounds the
//!   cost; it is time sharing, not thrashing: each move is a different
//!   process and makes the slowest processes faster.
//! - **Bounded rounds.** At most `max_per_round` decisions per round.
//!
//! [`Consider::expel`] (`mosctl expel`) sends every guest home, or elsewhere
//! when home is unreachable; [`Consider::accept`] is the target's side of a
//! migration (refuse when blocked, short of memory, or no longer less
//! loaded).
//!
//! # Parameters
//!
//! [`BalancerConfig`], the configuration file's `[balancer]` section, holds
//! every parameter named above, its default and why (news older than
//! `dead_after_ms` is too old to move a process for). MOSIX kept these in
//! the kernel and did not publish most of them; the defaults are chosen to
//! match its behaviour as described in the paper and the MOSIX manuals
//! (consideration once per load calculation, one second; residency of
//! about one second), with a margin and a hold suited to measured loads on
//! real nodes. [`super::procsim`] checks the policy against the paper's
//! Table 1 with the simulator's own values, which it states.

use super::dissemination::NodeView;
use mosix_proto::config::BalancerConfig;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};

/// Why a [`BalancerConfig`] cannot be used for consideration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConsiderError {
    /// stability margin {0} is not a finite number >= 0; set `margin` to e.g. 0.25
    #[error("stability margin {0} is not a finite number >= 0; set `margin` to e.g. 0.25")]
    BadMargin(f64),
    /// minimum demand {0} is not in 0..=1; set `min_demand` to e.g. 0.5
    #[error("minimum demand {0} is not in 0..=1; set `min_demand` to e.g. 0.5")]
    BadMinDemand(f64),
    /// max_per_round is 0, so nothing would ever move; set it to at least 1
    #[error("max_per_round is 0, so nothing would ever move; set it to at least 1")]
    NoMigrationsAllowed,
}

/// Checks that the consideration's parameters make sense.
pub fn validate(params: &BalancerConfig) -> Result<(), ConsiderError> {
    if !params.margin.is_finite() || params.margin < 0.0 {
        return Err(ConsiderError::BadMargin(params.margin));
    }
    if !(0.0..=1.0).contains(&params.min_demand) {
        return Err(ConsiderError::BadMinDemand(params.min_demand));
    }
    if params.max_per_round == 0 {
        return Err(ConsiderError::NoMigrationsAllowed);
    }
    Ok(())
}

/// What the daemon knows about one process running here.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcFact {
    /// The daemon's key for the process (e.g. home node pid).
    pub id: u64,
    /// When it started here or arrived here (residency counts from this).
    pub arrived_ms: u64,
    /// Fraction of the recent wall time it wanted a CPU (running or
    /// runnable), 0..=1; 1.0 is CPU-bound. Not the CPU it got: on a crowded
    /// node a CPU-bound process gets little but still demands 1.0.
    pub demand: f64,
    /// Memory it would take along (resident set), bytes.
    pub memory_bytes: u64,
    /// Started with `mosrun -L`: never moved automatically.
    pub pinned: bool,
    /// Why it cannot move at all (e.g. it holds a resource that cannot
    /// migrate), if so.
    pub cantmove: Option<String>,
    /// When it last migrated, if ever (for monitoring; residency uses
    /// `arrived_ms`).
    pub last_migration_ms: Option<u64>,
    /// How many times it migrated.
    pub migrations: u32,
    /// Its home node's name when it is a guest here; `None` for our own.
    pub home: Option<String>,
    /// The node it last came from, if it migrated here.
    pub came_from: Option<String>,
    /// CPU time it has used so far, wherever it ran, reference-CPU ms (0
    /// when unknown). Rotation moves the most advanced process first: it is
    /// the one that can best afford the slower node.
    pub cpu_ms: u64,
}

/// What the daemon knows about its own node.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalState {
    /// Our node's name.
    pub name: String,
    /// Our normalised load (from [`super::LoadCalculator`]).
    pub load: f64,
    /// CPU capacity.
    pub cpus: f64,
    /// CPU speed relative to the reference.
    pub speed: f64,
    /// Free memory, bytes.
    pub free_mem_bytes: u64,
    /// `mosctl block`: we accept no guests.
    pub blocked: bool,
}

/// Why a process is to move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The load rule.
    Load,
    /// Memory ushering: we are short of free memory.
    Memory,
    /// `mosctl expel`.
    Expel,
    /// Rotation: time sharing of an extra process across equal nodes.
    Rotate,
}

/// A migration to start.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Move process `proc` to the node named `to`.
    Migrate {
        /// The process ([`ProcFact::id`]).
        proc: u64,
        /// Target node name.
        to: String,
        /// Why.
        reason: Reason,
    },
}

/// Why a guest could not be placed by [`Consider::expel`].
#[derive(Debug, Clone, PartialEq)]
pub enum Stuck {
    /// It cannot move at all (the reason given in its facts).
    CannotMove(String),
    /// Its home is dead or refusing, and no other node can take it.
    NowhereToGo,
}

/// The outcome of [`Consider::expel`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExpelPlan {
    /// Migrations to start.
    pub decisions: Vec<Decision>,
    /// Guests that must stay for now, and why.
    pub stuck: Vec<(u64, Stuck)>,
}

/// A migration offered to us, as the target.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    /// Why the sender moves it.
    pub reason: Reason,
    /// The sender's load when it decided.
    pub sender_load: f64,
    /// The process's CPU demand.
    pub demand: f64,
    /// Memory it brings, bytes.
    pub memory_bytes: u64,
    /// It is one of our own processes coming home.
    pub returning_home: bool,
}

/// Why [`Consider::accept`] refused a migration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// this node is blocked (mosctl block) and accepts no guests; send it elsewhere
    #[error("this node is blocked (mosctl block) and accepts no guests; send it elsewhere")]
    Blocked,
    /// not enough free memory here ({free} bytes free, {needed} needed); send it elsewhere
    #[error("not enough free memory here ({free} bytes free, {needed} needed); send it elsewhere")]
    NoMemory {
        /// Free bytes here.
        free: u64,
        /// Bytes the process needs plus the reserve.
        needed: u64,
    },
    /// this node is no longer less loaded (ours {ours:.2} after the move, sender {sender:.2}); consider again with fresh load figures
    #[error(
        "this node is no longer less loaded (ours {ours:.2} after the move, sender {sender:.2}); consider again with fresh load figures"
    )]
    NotLessLoaded {
        /// Our load if we took it.
        ours: f64,
        /// The sender's load.
        sender: f64,
    },
}

#[derive(Debug, Clone, Copy)]
struct Floor {
    load: f64,
    mem_taken: u64,
    until_ms: u64,
}

#[derive(Debug, Clone)]
struct Target {
    name: String,
    load: f64,
    cpus: f64,
    speed: f64,
    free: u64,
    tie: u64,
}

impl Target {
    fn capacity(&self) -> f64 {
        self.cpus * self.speed
    }

    /// Reference-CPU rate a process of demand `d` would get here.
    fn rate_for(&self, d: f64) -> f64 {
        let run_queue = self.load * self.capacity();
        self.speed * (self.cpus / (run_queue + d)).min(1.0)
    }
}

/// The consideration state machine of one node: call [`round`](Self::round)
/// once per load calculation and start the migrations it decides.
#[derive(Debug)]
pub struct Consider {
    params: BalancerConfig,
    floors: BTreeMap<String, Floor>,
    accepted: Vec<(f64, u64)>,
    /// Moves decided away from a host by [`Consider::round_away`], by
    /// host: taken off the host's published load until news of it from
    /// after the move has come.
    departures: BTreeMap<String, Vec<Departure>>,
    rng: StdRng,
}

#[derive(Debug, Clone, Copy)]
struct Departure {
    proc: u64,
    /// When it was decided, then when it was done.
    at_ms: u64,
    done: bool,
    share: f64,
}

/// How long after a departure a node's published load shows it: its load
/// average drops at once, at the next fold (one a second).
pub const DEPARTURE_SHOWS_MS: u64 = 1_000;

fn capacity(cpus: f64, speed: f64) -> f64 {
    let c = cpus * speed;
    if c.is_finite() && c > 0.0 {
        c
    } else {
        f64::MIN_POSITIVE
    }
}

fn demand_of(p: &ProcFact) -> f64 {
    if p.demand.is_finite() {
        p.demand.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

impl Consider {
    /// A node's consideration with `params`; `seed` drives tie-breaking.
    pub fn new(params: BalancerConfig, seed: u64) -> Result<Self, ConsiderError> {
        validate(&params)?;
        Ok(Self {
            params,
            floors: BTreeMap::new(),
            accepted: Vec::new(),
            departures: BTreeMap::new(),
            rng: StdRng::seed_from_u64(seed),
        })
    }

    /// The parameters in force.
    pub fn params(&self) -> &BalancerConfig {
        &self.params
    }

    /// Replaces the parameters (`mosctl` at run time).
    pub fn set_params(&mut self, params: BalancerConfig) -> Result<(), ConsiderError> {
        validate(&params)?;
        self.params = params;
        Ok(())
    }

    /// A migration we decided to `target` arrived at `now_ms`: hold the
    /// load we added to our copy of its entry for `accounting_hold_ms` from
    /// now, not from the decision. A migration can take longer than the
    /// hold (seconds on a busy node), and the target's published load only
    /// starts to rise once the process runs there: a floor lapsing before
    /// that sent three processes to one node of 16 in the real Table 1.
    pub fn migration_done(&mut self, target: &str, now_ms: u64) {
        let until = now_ms.saturating_add(self.params.accounting_hold_ms);
        if let Some(f) = self.floors.get_mut(target) {
            f.until_ms = f.until_ms.max(until);
        }
    }

    /// A migration we decided to `target` failed or was refused: drop the
    /// load we had added to our copy of its entry.
    pub fn migration_failed(&mut self, target: &str) {
        self.floors.remove(target);
    }

    /// Our load as the target sees it: the published `load` plus the guests
    /// accepted within `accounting_hold_ms` (they may not show in the
    /// smoothed figure yet).
    fn own_load(&mut self, now_ms: u64, local: &LocalState) -> f64 {
        let hold = self.params.accounting_hold_ms;
        self.accepted
            .retain(|&(_, at)| now_ms.saturating_sub(at) < hold);
        local.load + self.accepted.iter().map(|&(l, _)| l).sum::<f64>()
    }

    /// The target's side of a migration: whether we take a process offered
    /// by another node now. One of our own processes sent home by expel or
    /// memory ushering is always taken; sent home for load, it is judged by
    /// the load rule but not refused for `blocked`.
    pub fn accept(
        &mut self,
        now_ms: u64,
        local: &LocalState,
        offer: &Offer,
    ) -> Result<(), Refusal> {
        let cap = capacity(local.cpus, local.speed);
        let demand = if offer.demand.is_finite() {
            offer.demand.clamp(0.0, 1.0)
        } else {
            1.0
        };
        let contribution = demand / cap;
        // Home takes back its own process unconditionally when it is sent
        // home on purpose (expel, memory); a move home for load is judged
        // like any other, or every node would pile its guests onto an idle
        // home at once.
        if offer.returning_home && offer.reason != Reason::Load {
            self.accepted.push((contribution, now_ms));
            return Ok(());
        }
        if local.blocked && !offer.returning_home {
            return Err(Refusal::Blocked);
        }
        let needed = offer
            .memory_bytes
            .saturating_add(self.params.memory_reserve_bytes);
        if local.free_mem_bytes < needed {
            return Err(Refusal::NoMemory {
                free: local.free_mem_bytes,
                needed,
            });
        }
        let ours = self.own_load(now_ms, local) + contribution;
        if offer.reason == Reason::Load && offer.sender_load <= ours {
            return Err(Refusal::NotLessLoaded {
                ours,
                sender: offer.sender_load,
            });
        }
        // A rotation leaves the sender one process lighter and us one
        // heavier: take it only while we would be no busier than the sender
        // was (within half a process, for smoothing lag), so two rotations
        // never pile onto one node.
        if offer.reason == Reason::Rotate && ours > offer.sender_load + 0.5 / cap {
            return Err(Refusal::NotLessLoaded {
                ours,
                sender: offer.sender_load,
            });
        }
        self.accepted.push((contribution, now_ms));
        Ok(())
    }

    fn targets(
        &mut self,
        now_ms: u64,
        local: &LocalState,
        nodes: &[NodeView],
        refusing: &BTreeSet<String>,
    ) -> Vec<Target> {
        let hold_ok = |f: &Floor| now_ms < f.until_ms;
        self.floors.retain(|_, f| hold_ok(f));
        let mut out = Vec::new();
        for v in nodes {
            let e = &v.entry;
            if v.is_self
                || e.name == local.name
                || !v.alive
                || e.age_ms > self.params.dead_after_ms
                || refusing.contains(&e.name)
                || !e.load.is_finite()
                || e.load < 0.0
                || !(e.cpus.is_finite() && e.cpus > 0.0)
                || !(e.speed.is_finite() && e.speed > 0.0)
            {
                continue;
            }
            let (load, free) = match self.floors.get(&e.name) {
                Some(f) => (
                    e.load.max(f.load),
                    e.free_mem_bytes.saturating_sub(f.mem_taken),
                ),
                None => (e.load, e.free_mem_bytes),
            };
            out.push(Target {
                name: e.name.clone(),
                load,
                cpus: e.cpus,
                speed: e.speed,
                free,
                tie: self.rng.random(),
            });
        }
        out
    }

    fn record(&mut self, now_ms: u64, t: &mut Target, added: f64, mem: u64) {
        t.load += added;
        t.free = t.free.saturating_sub(mem);
        let f = self.floors.entry(t.name.clone()).or_insert(Floor {
            load: 0.0,
            mem_taken: 0,
            until_ms: 0,
        });
        f.load = t.load;
        f.mem_taken = f.mem_taken.saturating_add(mem);
        f.until_ms = now_ms.saturating_add(self.params.accounting_hold_ms);
    }

    fn movable(&self, now_ms: u64, p: &ProcFact) -> bool {
        !p.pinned
            && p.cantmove.is_none()
            && now_ms.saturating_sub(p.arrived_ms) >= self.params.residency_ms
    }

    /// One consideration round: the migrations to start now (at most
    /// `max_per_round`). `nodes` is the dissemination's view
    /// ([`super::Dissemination::nodes`]) at `now_ms`; `refusing` names nodes
    /// known to take no guests (blocked, or a refused migration recently);
    /// `procs` are the processes running here.
    pub fn round(
        &mut self,
        now_ms: u64,
        local: &LocalState,
        nodes: &[NodeView],
        refusing: &BTreeSet<String>,
        procs: &[ProcFact],
    ) -> Vec<Decision> {
        let mut targets = self.targets(now_ms, local, nodes, refusing);
        let cap = capacity(local.cpus, local.speed);
        let mut load = if local.load.is_finite() {
            local.load.max(0.0)
        } else {
            0.0
        };
        let mut free = local.free_mem_bytes;
        let mut decisions = Vec::new();
        let mut moved: BTreeSet<u64> = BTreeSet::new();
        let reserve = self
            .params
            .usher_below_bytes
            .saturating_add(self.params.memory_reserve_bytes);

        // Memory ushering first: it is what keeps us from swapping.
        while free < self.params.usher_below_bytes && decisions.len() < self.params.max_per_round {
            let mut cands: Vec<&ProcFact> = procs
                .iter()
                .filter(|p| !moved.contains(&p.id) && self.movable(now_ms, p) && p.memory_bytes > 0)
                .collect();
            cands.sort_by(|a, b| b.memory_bytes.cmp(&a.memory_bytes).then(a.id.cmp(&b.id)));
            let mut chosen = None;
            for p in cands {
                let best = targets
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| {
                        // Not busier than we are: the target keeps room
                        // (the reserve), and we stay short of it, so the
                        // load rule cannot bounce the process back.
                        t.free >= p.memory_bytes.saturating_add(reserve) && t.load <= load
                    })
                    .max_by(|(_, a), (_, b)| {
                        a.free
                            .cmp(&b.free)
                            .then(b.load.total_cmp(&a.load))
                            .then(a.tie.cmp(&b.tie))
                    })
                    .map(|(i, _)| i);
                if let Some(i) = best {
                    chosen = Some((p, i));
                    break;
                }
            }
            let Some((p, i)) = chosen else { break };
            let d = demand_of(p);
            let added = d / targets[i].capacity();
            self.record(now_ms, &mut targets[i], added, p.memory_bytes);
            load = (load - d / cap).max(0.0);
            free = free.saturating_add(p.memory_bytes);
            moved.insert(p.id);
            decisions.push(Decision::Migrate {
                proc: p.id,
                to: targets[i].name.clone(),
                reason: Reason::Memory,
            });
        }

        // The load rule. Processes with the highest demand first, then those
        // that have been here longest (they have shown they last).
        let mut cands: Vec<&ProcFact> = procs
            .iter()
            .filter(|p| {
                !moved.contains(&p.id)
                    && self.movable(now_ms, p)
                    && demand_of(p) >= self.params.min_demand
                    && demand_of(p) > 0.0
            })
            .collect();
        cands.sort_by(|a, b| {
            demand_of(b)
                .total_cmp(&demand_of(a))
                .then(a.arrived_ms.cmp(&b.arrived_ms))
                .then(a.id.cmp(&b.id))
        });
        for p in cands {
            if decisions.len() >= self.params.max_per_round {
                break;
            }
            let d = demand_of(p);
            // A nonsense capacity of our own: the margin as on one CPU.
            let here = local.cpus * local.speed;
            let margin = if here.is_finite() && here > 0.0 {
                self.params.margin / here
            } else {
                self.params.margin
            };
            let best = targets
                .iter()
                .enumerate()
                .filter(|(_, t)| {
                    let after = t.load + d / t.capacity();
                    load > after + margin
                        && t.free >= p.memory_bytes.saturating_add(reserve)
                        && !(p.came_from.as_deref() == Some(t.name.as_str())
                            && now_ms.saturating_sub(p.arrived_ms) < self.params.no_return_ms)
                })
                .max_by(|(_, a), (_, b)| {
                    let (ra, rb) = (a.rate_for(d), b.rate_for(d));
                    let (la, lb) = (a.load + d / a.capacity(), b.load + d / b.capacity());
                    ra.total_cmp(&rb)
                        .then(lb.total_cmp(&la))
                        .then(a.free.cmp(&b.free))
                        .then(a.tie.cmp(&b.tie))
                })
                .map(|(i, _)| i);
            let Some(i) = best else { continue };
            let added = d / targets[i].capacity();
            self.record(now_ms, &mut targets[i], added, p.memory_bytes);
            load = (load - d / cap).max(0.0);
            moved.insert(p.id);
            decisions.push(Decision::Migrate {
                proc: p.id,
                to: targets[i].name.clone(),
                reason: Reason::Load,
            });
        }
        if decisions.is_empty() {
            if let Some(d) = self.rotation(now_ms, local, load, &mut targets, procs) {
                decisions.push(d);
            }
        }
        decisions
    }

    /// A round for our own processes running at another node, `host`, as
    /// that node's own round would judge them from its published entry:
    /// the daemons consider only their own processes (a host cannot move a
    /// guest by itself), so without this a pair of guests put on one node
    /// while the others had one stayed together to the end (Table 1 with
    /// 17 to 31 processes on 16 nodes: twice the work time instead of 1.5
    /// times, in the simulator and on the local cluster).
    ///
    /// `nodes` is our dissemination's view (our own entry among them: we
    /// are a target like any other, for a process coming home); `procs`
    /// are our processes at `host` (their `arrived_ms` when they arrived
    /// there, their demand as last measured). The host's load is taken from
    /// its entry, less the moves away from it decided here that its news
    /// does not show yet.
    pub fn round_away(
        &mut self,
        now_ms: u64,
        host: &NodeView,
        nodes: &[NodeView],
        refusing: &BTreeSet<String>,
        procs: &[ProcFact],
    ) -> Vec<Decision> {
        let e = &host.entry;
        let news_at = now_ms.saturating_sub(e.age_ms);
        let pending = self.departures.entry(e.name.clone()).or_default();
        pending.retain(|d| !d.done || news_at < d.at_ms.saturating_add(DEPARTURE_SHOWS_MS));
        let leaving: f64 = pending.iter().map(|d| d.share).sum();
        if !host.alive || procs.is_empty() {
            return Vec::new();
        }
        let local = LocalState {
            name: e.name.clone(),
            load: (e.load - leaving).max(0.0),
            cpus: e.cpus,
            speed: e.speed,
            free_mem_bytes: e.free_mem_bytes,
            blocked: !e.accepts_guests,
        };
        let others: Vec<NodeView> = nodes
            .iter()
            .map(|v| NodeView {
                is_self: false,
                ..v.clone()
            })
            .collect();
        let decisions = self.round(now_ms, &local, &others, refusing, procs);
        let cap = capacity(e.cpus, e.speed);
        let pending = self.departures.entry(e.name.clone()).or_default();
        for Decision::Migrate { proc, .. } in &decisions {
            if let Some(p) = procs.iter().find(|p| p.id == *proc) {
                pending.push(Departure {
                    proc: p.id,
                    at_ms: now_ms,
                    done: false,
                    share: demand_of(p) / cap,
                });
            }
        }
        decisions
    }

    /// A move decided by [`round_away`](Self::round_away) is done at
    /// `now_ms`: the host's news shows it from a fold later.
    pub fn away_move_done(&mut self, proc: u64, now_ms: u64) {
        for d in self.departures.values_mut().flatten() {
            if d.proc == proc && !d.done {
                d.done = true;
                d.at_ms = now_ms;
            }
        }
    }

    /// A move decided by [`round_away`](Self::round_away) failed: the
    /// process is still at its host.
    pub fn away_move_failed(&mut self, proc: u64) {
        for v in self.departures.values_mut() {
            v.retain(|d| d.proc != proc);
        }
    }

    /// Rotation (see [`BalancerConfig::rotate_after_ms`]): at most one move
    /// per round, only when nothing else moved, only when this node has run
    /// the same processes for `rotate_after_ms`, and only to a node that
    /// after the move is no busier than we are now (so the difference stays
    /// one process and the move is undone by nothing but the next rotation,
    /// at the target, of a different process).
    fn rotation(
        &mut self,
        now_ms: u64,
        local: &LocalState,
        load: f64,
        targets: &mut [Target],
        procs: &[ProcFact],
    ) -> Option<Decision> {
        let period = self.params.rotate_after_ms;
        if period == 0 {
            return None;
        }
        let here = capacity(local.cpus, local.speed);
        // Half a process of slack for smoothing and measurement noise.
        let slack = 0.5 / here;
        let busy: Vec<&ProcFact> = procs
            .iter()
            .filter(|p| demand_of(p) >= self.params.min_demand && demand_of(p) > 0.0)
            .collect();
        // Our load as the smaller of the smoothed figure and the processes
        // actually here now (the smoothed figure lags a departure).
        let load = load.min(busy.iter().map(|p| demand_of(p)).sum::<f64>() / here);
        // More CPU-bound processes than CPUs, each here long enough.
        if load * here < local.cpus + 0.5
            || busy
                .iter()
                .any(|p| now_ms.saturating_sub(p.arrived_ms) < period)
        {
            return None;
        }
        let reserve = self
            .params
            .usher_below_bytes
            .saturating_add(self.params.memory_reserve_bytes);
        let mut cands: Vec<&&ProcFact> = busy.iter().filter(|p| self.movable(now_ms, p)).collect();
        cands.sort_by(|a, b| {
            b.cpu_ms
                .cmp(&a.cpu_ms)
                .then(a.arrived_ms.cmp(&b.arrived_ms))
                .then(a.id.cmp(&b.id))
        });
        for p in cands {
            let d = demand_of(p);
            let best = targets
                .iter()
                .enumerate()
                .filter(|(_, t)| {
                    let after = t.load + d / t.capacity();
                    after <= load + slack
                        && t.free >= p.memory_bytes.saturating_add(reserve)
                        && !(p.came_from.as_deref() == Some(t.name.as_str())
                            && now_ms.saturating_sub(p.arrived_ms) < self.params.no_return_ms)
                })
                .min_by(|(_, a), (_, b)| {
                    let (la, lb) = (a.load + d / a.capacity(), b.load + d / b.capacity());
                    la.total_cmp(&lb).then(a.tie.cmp(&b.tie))
                })
                .map(|(i, _)| i);
            let Some(i) = best else { continue };
            let added = d / targets[i].capacity();
            self.record(now_ms, &mut targets[i], added, p.memory_bytes);
            return Some(Decision::Migrate {
                proc: p.id,
                to: targets[i].name.clone(),
                reason: Reason::Rotate,
            });
        }
        None
    }

    /// `mosctl expel`: send every guest home, or, when home is dead,
    /// refusing or unknown, to the least loaded node that can take it.
    /// Residency and pinning do not hold here (the owner wants the node);
    /// only processes that cannot move at all stay, and are reported.
    pub fn expel(
        &mut self,
        now_ms: u64,
        local: &LocalState,
        nodes: &[NodeView],
        refusing: &BTreeSet<String>,
        procs: &[ProcFact],
    ) -> ExpelPlan {
        let mut targets = self.targets(now_ms, local, nodes, refusing);
        let reserve = self.params.memory_reserve_bytes;
        let mut plan = ExpelPlan::default();
        for p in procs {
            let Some(home) = p.home.as_deref() else {
                continue;
            };
            if let Some(why) = &p.cantmove {
                plan.stuck.push((p.id, Stuck::CannotMove(why.clone())));
                continue;
            }
            let d = demand_of(p);
            // Home takes its own processes back whatever its load or memory
            // (it is where they belong), as long as it is alive.
            let to = match targets.iter().position(|t| t.name == home) {
                Some(i) => Some(i),
                None => targets
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| t.free >= p.memory_bytes.saturating_add(reserve))
                    .min_by(|(_, a), (_, b)| {
                        (a.load + d / a.capacity())
                            .total_cmp(&(b.load + d / b.capacity()))
                            .then(a.tie.cmp(&b.tie))
                    })
                    .map(|(i, _)| i),
            };
            match to {
                Some(i) => {
                    let added = d / targets[i].capacity();
                    self.record(now_ms, &mut targets[i], added, p.memory_bytes);
                    plan.decisions.push(Decision::Migrate {
                        proc: p.id,
                        to: targets[i].name.clone(),
                        reason: Reason::Expel,
                    });
                }
                None => plan.stuck.push((p.id, Stuck::NowhereToGo)),
            }
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mosix_proto::msg::LoadEntry;
    use proptest::prelude::*;
    use std::net::SocketAddr;

    fn view(name: &str, load: f64) -> NodeView {
        NodeView {
            entry: LoadEntry {
                name: name.into(),
                address: SocketAddr::from(([10, 0, 0, 1], 7000)),
                generation: 1,
                age_ms: 100,
                load,
                cpus: 1.0,
                speed: 1.0,
                free_mem_bytes: 1 << 30,
                accepts_guests: true,
                guests: 0,
                away: 0,
            },
            alive: true,
            suspect: false,
            is_self: false,
            send_failures: 0,
        }
    }

    fn local(load: f64) -> LocalState {
        LocalState {
            name: "a".into(),
            load,
            cpus: 1.0,
            speed: 1.0,
            free_mem_bytes: 1 << 30,
            blocked: false,
        }
    }

    fn proc(id: u64) -> ProcFact {
        ProcFact {
            id,
            arrived_ms: 0,
            demand: 1.0,
            memory_bytes: 8 << 20,
            pinned: false,
            cantmove: None,
            last_migration_ms: None,
            migrations: 0,
            home: None,
            came_from: None,
            cpu_ms: 0,
        }
    }

    /// The values these tests were written for, the simulator's
    /// (`ProcSimParams::uniform`): a quarter-process margin, a 5 s hold and rotation every 4 s, where
    /// the daemons' defaults are half a process, 10 s and no rotation.
    fn params() -> BalancerConfig {
        BalancerConfig {
            margin: 0.25,
            accounting_hold_ms: 5_000,
            rotate_after_ms: 4_000,
            ..BalancerConfig::default()
        }
    }

    fn consider() -> Consider {
        Consider::new(params(), 7).unwrap()
    }

    fn none() -> BTreeSet<String> {
        BTreeSet::new()
    }

    fn targets_of(d: &[Decision]) -> Vec<(u64, String, Reason)> {
        d.iter()
            .map(|Decision::Migrate { proc, to, reason }| (*proc, to.clone(), *reason))
            .collect()
    }

    const NOW: u64 = 100_000;

    #[test]
    fn a_home_splits_a_pair_of_its_processes_at_another_node_once() {
        let mut c = consider();
        let host = |load: f64, age_ms: u64| {
            let mut v = view("b", load);
            v.entry.age_ms = age_ms;
            v
        };
        let mut me = view("a", 1.0);
        me.is_self = true;
        let nodes = vec![me.clone(), host(2.0, 100), view("c", 0.0)];
        let pair = [proc(1), proc(2)];
        let d = c.round_away(NOW, &host(2.0, 100), &nodes, &none(), &pair);
        assert_eq!(targets_of(&d), vec![(1, "c".into(), Reason::Load)]);
        // Until the host's news shows the departure, it is not counted
        // twice: the same stale figure moves nothing more (c is held up
        // by the move just decided; home "a" runs one already).
        let nodes2 = vec![me.clone(), host(2.0, 600), view("c", 0.0), view("d", 0.0)];
        let d = c.round_away(NOW + 500, &host(2.0, 600), &nodes2, &none(), &pair[1..]);
        assert!(d.is_empty(), "{d:?}");
        c.away_move_done(1, NOW + 200);
        // News from after the move (and a fold): one process, no move.
        let d = c.round_away(NOW + 2_000, &host(1.0, 100), &nodes2, &none(), &pair[1..]);
        assert!(d.is_empty(), "{d:?}");
        // Home itself is a target like any other for a process away.
        let mut idle_home = view("a", 0.0);
        idle_home.is_self = true;
        let mut c = consider();
        let d = c.round_away(
            NOW,
            &host(2.0, 100),
            &[idle_home, host(2.0, 100)],
            &none(),
            &pair,
        );
        assert_eq!(targets_of(&d), vec![(1, "a".into(), Reason::Load)]);
        // A failed move is forgotten: the host's figure counts whole again.
        c.away_move_failed(1);
        c.migration_failed("a");
        let mut idle_home = view("a", 0.0);
        idle_home.is_self = true;
        let d = c.round_away(
            NOW + 100,
            &host(2.0, 200),
            &[idle_home, host(2.0, 200)],
            &none(),
            &pair,
        );
        assert_eq!(targets_of(&d).len(), 1, "{d:?}");
    }

    #[test]
    fn a_slow_migration_keeps_its_target_loaded_until_it_arrives() {
        let mut c = consider();
        let hold = c.params().accounting_hold_ms;
        let procs: Vec<ProcFact> = (1..=4).map(proc).collect();
        let d = c.round(NOW, &local(4.0), &[view("b", 0.0)], &none(), &procs[..1]);
        assert_eq!(targets_of(&d).len(), 1);
        // The move takes longer than the hold; b's news still says 0.
        c.migration_done("b", NOW + hold + 2_000);
        let d = c.round(
            NOW + hold + 2_500,
            &local(2.0),
            &[view("b", 0.0)],
            &none(),
            &procs[1..2],
        );
        assert!(
            d.is_empty(),
            "b looked idle again while the first move landed: {d:?}"
        );
        // Once the hold from the arrival has passed, b's own news counts.
        let d = c.round(
            NOW + 2 * hold + 2_500,
            &local(3.0),
            &[view("b", 1.0)],
            &none(),
            &procs[1..2],
        );
        assert_eq!(targets_of(&d).len(), 1, "{d:?}");
    }

    #[test]
    fn moves_from_two_to_an_idle_node() {
        let d = consider().round(
            NOW,
            &local(2.0),
            &[view("b", 0.0)],
            &none(),
            &[proc(1), proc(2)],
        );
        assert_eq!(targets_of(&d), vec![(1, "b".into(), Reason::Load)]);
    }

    #[test]
    fn residency_time_is_respected() {
        let mut p1 = proc(1);
        let mut p2 = proc(2);
        p1.arrived_ms = NOW - 999;
        p2.arrived_ms = NOW - 500;
        let mut c = consider();
        let d = c.round(
            NOW,
            &local(2.0),
            &[view("b", 0.0)],
            &none(),
            &[p1.clone(), p2],
        );
        assert!(d.is_empty(), "{d:?}");
        p1.arrived_ms = NOW - 1_000;
        let d = c.round(NOW, &local(2.0), &[view("b", 0.0)], &none(), &[p1]);
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn one_process_of_difference_is_not_enough() {
        // 2 vs 1: after the move the target would be at 2, no better. Only
        // rotation (here turned off; see `rotation_*`) moves in that case.
        let no_rotation = BalancerConfig {
            rotate_after_ms: 0,
            ..params()
        };
        let d = Consider::new(no_rotation, 7).unwrap().round(
            NOW,
            &local(2.0),
            &[view("b", 1.0)],
            &none(),
            &[proc(1), proc(2)],
        );
        assert!(d.is_empty(), "{d:?}");
        // 3 vs 1 is: 3 > 1 + 1 + 0.25.
        let d = consider().round(NOW, &local(3.0), &[view("b", 1.0)], &none(), &[proc(1)]);
        assert_eq!(d.len(), 1);
    }

    fn rotating(id: u64, cpu_ms: u64, stayed_ms: u64) -> ProcFact {
        ProcFact {
            cpu_ms,
            arrived_ms: NOW - stayed_ms,
            ..proc(id)
        }
    }

    #[test]
    fn rotation_moves_the_most_advanced_process_to_a_node_one_lighter() {
        let d = consider().round(
            NOW,
            &local(2.0),
            &[view("b", 2.0), view("c", 1.0)],
            &none(),
            &[rotating(1, 50_000, 9_000), rotating(2, 90_000, 5_000)],
        );
        assert_eq!(targets_of(&d), vec![(2, "c".into(), Reason::Rotate)]);
    }

    #[test]
    fn rotation_waits_until_every_process_here_has_stayed_its_period() {
        let mut c = consider();
        let procs = [rotating(1, 50_000, 60_000), rotating(2, 90_000, 3_999)];
        let d = c.round(NOW, &local(2.0), &[view("c", 1.0)], &none(), &procs);
        assert!(d.is_empty(), "{d:?}");
        let procs = [rotating(1, 50_000, 60_000), rotating(2, 90_000, 4_000)];
        let d = c.round(NOW, &local(2.0), &[view("c", 1.0)], &none(), &procs);
        assert_eq!(d.len(), 1, "{d:?}");
    }

    #[test]
    fn rotation_never_makes_a_target_busier_than_we_are() {
        // Equal loads: the target would end one process above us.
        let d = consider().round(
            NOW,
            &local(2.0),
            &[view("b", 2.0)],
            &none(),
            &[rotating(1, 1, 9_000), rotating(2, 2, 9_000)],
        );
        assert!(d.is_empty(), "{d:?}");
        // A lone process is never rotated (an idle target is the load
        // rule's business, and it does not fire for 1 vs 0).
        let d = consider().round(
            NOW,
            &local(1.0),
            &[view("b", 0.0)],
            &none(),
            &[rotating(1, 1, 9_000)],
        );
        assert!(d.is_empty(), "{d:?}");
        // The smoothed load lags a departure: what counts is the processes
        // here now.
        let d = consider().round(
            NOW,
            &local(2.0),
            &[view("b", 1.0)],
            &none(),
            &[rotating(1, 1, 9_000)],
        );
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn rotation_does_not_send_a_process_back_where_it_came_from() {
        let mut p = rotating(1, 9, 9_000);
        p.came_from = Some("b".into());
        let d = consider().round(
            NOW,
            &local(2.0),
            &[view("b", 1.0)],
            &none(),
            &[p, rotating(2, 1, 9_000)],
        );
        assert_eq!(targets_of(&d), vec![(2, "b".into(), Reason::Rotate)]);
    }

    #[test]
    fn a_rotation_is_refused_by_a_target_that_would_end_busier_than_the_sender() {
        let offer = Offer {
            reason: Reason::Rotate,
            sender_load: 2.0,
            demand: 1.0,
            memory_bytes: 8 << 20,
            returning_home: false,
        };
        let mut c = consider();
        assert!(c.accept(NOW, &local(1.0), &offer).is_ok());
        // It now counts the guest it just took: a second one is refused.
        assert!(matches!(
            c.accept(NOW, &local(1.0), &offer),
            Err(Refusal::NotLessLoaded { .. })
        ));
    }

    #[test]
    fn the_margin_is_respected() {
        // 2.1 vs 0.9: 2.1 > 1.9 but not > 1.9 + 0.25.
        let d = consider().round(NOW, &local(2.1), &[view("b", 0.9)], &none(), &[proc(1)]);
        assert!(d.is_empty(), "{d:?}");
        let params = BalancerConfig {
            margin: 0.1,
            ..params()
        };
        let mut c = Consider::new(params, 1).unwrap();
        let d = c.round(NOW, &local(2.1), &[view("b", 0.9)], &none(), &[proc(1)]);
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn the_margin_is_a_fraction_of_a_process_here() {
        // Half a CPU: one process is load 2, the margin 0.25 of it is 0.5.
        // 4.4 vs a target running one process, 4 after the move: 4.4 > 4 +
        // 0.25 but not > 4 + 0.5.
        let mut me = local(4.4);
        me.cpus = 0.5;
        let mut b = view("b", 2.0);
        b.entry.cpus = 0.5;
        let d = consider().round(NOW, &me, &[b.clone()], &none(), &[proc(1)]);
        assert!(d.is_empty(), "{d:?}");
        me.load = 4.6;
        let d = consider().round(NOW, &me, &[b], &none(), &[proc(1)]);
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn four_jobs_on_three_half_cpu_nodes_settle_at_two_one_one() {
        let half = |name: &str, load: f64| {
            let mut v = view(name, load);
            v.entry.cpus = 0.5;
            v
        };
        let mut me = local(4.95);
        me.cpus = 0.5;
        let procs: Vec<ProcFact> = (1..=4).map(proc).collect();
        // The load rule only: at 2, 1, 1 rotation would go on sharing the
        // extra process (see `rotation_*`).
        let params = BalancerConfig {
            accounting_hold_ms: 10_000,
            rotate_after_ms: 0,
            ..params()
        };
        let mut c = Consider::new(params, 1).unwrap();
        let nodes = [half("b", 0.22), half("c", 0.07)];
        let d = c.round(NOW, &me, &nodes, &none(), &procs);
        assert_eq!(d.len(), 2, "{d:?}");
        // 5 s later: the targets' averages are still rising, ours shows
        // the two left (plus some noise); nothing more moves.
        for (t, l, lb) in [(1, 0.0, 0.8), (2, 3.0, 1.2), (3, 4.0, 1.5), (4, 4.3, 1.6)] {
            me.load = l;
            let nodes = [half("b", lb), half("c", lb)];
            let d = c.round(NOW + t * 1000, &me, &nodes, &none(), &procs[2..]);
            assert!(d.is_empty(), "{t}: {d:?}");
        }
        me.load = 4.53;
        let nodes = [half("b", 1.7), half("c", 1.72)];
        let d = c.round(NOW + 5_000, &me, &nodes, &none(), &procs[2..]);
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn the_target_capacity_scales_the_process_load() {
        // A 4-CPU target at 0.5 (2 processes) takes a process from a
        // 2-loaded node: 2 > 0.5 + 0.25 + 0.25.
        let mut b = view("b", 0.5);
        b.entry.cpus = 4.0;
        let d = consider().round(NOW, &local(2.0), &[b], &none(), &[proc(1)]);
        assert_eq!(d.len(), 1);
        // A half-CPU target, idle: the process alone there is load 2.
        let mut c = view("c", 0.0);
        c.entry.cpus = 0.5;
        let d = consider().round(NOW, &local(2.0), &[c], &none(), &[proc(1)]);
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn pinned_and_cantmove_processes_stay() {
        let mut p1 = proc(1);
        p1.pinned = true;
        let mut p2 = proc(2);
        p2.cantmove = Some("holds a shared memory segment".into());
        let d = consider().round(NOW, &local(5.0), &[view("b", 0.0)], &none(), &[p1, p2]);
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn dead_blocked_stale_and_self_targets_are_skipped() {
        let mut dead = view("dead", 0.0);
        dead.alive = false;
        let mut stale = view("stale", 0.0);
        stale.entry.age_ms = 4_001;
        let mut me = view("a", 0.0);
        me.is_self = true;
        let blocked = view("blocked", 0.0);
        let refusing: BTreeSet<String> = ["blocked".to_string()].into();
        let procs: Vec<ProcFact> = (1..=4).map(proc).collect();
        let views = [dead, stale, me, blocked];
        let d = consider().round(NOW, &local(4.0), &views, &refusing, &procs);
        assert!(d.is_empty(), "{d:?}");
        // The same views with a live, fresh, willing node: only it is used.
        let mut all = views.to_vec();
        all.push(view("ok", 0.0));
        let d = consider().round(NOW, &local(4.0), &all, &refusing, &procs);
        assert!(!d.is_empty());
        assert!(targets_of(&d).iter().all(|(_, to, _)| to == "ok"));
    }

    #[test]
    fn prefers_the_faster_node() {
        let slow = view("slow", 0.0);
        let mut fast = view("fast", 0.0);
        fast.entry.speed = 2.0;
        for seed in 0..20 {
            let mut c = Consider::new(params(), seed).unwrap();
            let d = c.round(
                NOW,
                &local(3.0),
                &[slow.clone(), fast.clone()],
                &none(),
                &[proc(1)],
            );
            assert_eq!(targets_of(&d), vec![(1, "fast".into(), Reason::Load)]);
        }
    }

    #[test]
    fn a_lone_process_on_a_slow_node_moves_to_a_fast_idle_one_and_not_back() {
        let mut me = local(2.0); // one process on a half-speed CPU
        me.speed = 0.5;
        let mut fast = view("fast", 0.0);
        fast.entry.speed = 1.0;
        let d = consider().round(NOW, &me, &[fast], &none(), &[proc(1)]);
        assert_eq!(d.len(), 1);
        // At the fast node now (load 1.0), the slow idle node is no target.
        let mut at_fast = local(1.0);
        at_fast.name = "fast".into();
        let mut slow = view("a", 0.0);
        slow.entry.speed = 0.5;
        let d = consider().round(NOW, &at_fast, &[slow], &none(), &[proc(1)]);
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn prefers_nodes_with_free_memory_and_skips_those_without_room() {
        let mut full = view("full", 0.0);
        full.entry.free_mem_bytes = 100 << 20; // < 8 MiB + 64 + 64 MiB
        let d = consider().round(NOW, &local(3.0), &[full.clone()], &none(), &[proc(1)]);
        assert!(d.is_empty(), "{d:?}");
        let mut roomy = view("roomy", 0.0);
        roomy.entry.free_mem_bytes = 4 << 30;
        let mut some = view("some", 0.0);
        some.entry.free_mem_bytes = 1 << 30;
        for seed in 0..20 {
            let mut c = Consider::new(params(), seed).unwrap();
            let d = c.round(
                NOW,
                &local(3.0),
                &[full.clone(), some.clone(), roomy.clone()],
                &none(),
                &[proc(1)],
            );
            assert_eq!(targets_of(&d), vec![(1, "roomy".into(), Reason::Load)]);
        }
    }

    #[test]
    fn local_accounting_spreads_a_burst_over_several_nodes() {
        // 8 processes here, 4 idle nodes, figures not updated between
        // rounds: the round must not send everything to one node.
        let views: Vec<NodeView> = ["b", "c", "d", "e"].iter().map(|n| view(n, 0.0)).collect();
        let procs: Vec<ProcFact> = (1..=8).map(proc).collect();
        // The load rule only (rotation would share the last extra process).
        let no_rotation = BalancerConfig {
            rotate_after_ms: 0,
            ..params()
        };
        let mut c = Consider::new(no_rotation, 7).unwrap();
        let d = c.round(NOW, &local(8.0), &views, &none(), &procs);
        let mut to: Vec<String> = targets_of(&d).into_iter().map(|(_, t, _)| t).collect();
        to.sort();
        assert_eq!(to, vec!["b", "c", "d", "e"]);
        // Next round, the same stale figures: the floors hold, so with the
        // local load now 4, each target counts as 1 and 4 > 1 + 1 + 0.25.
        let rest: Vec<ProcFact> = procs[4..].to_vec();
        let d = c.round(NOW + 1_000, &local(4.0), &views, &none(), &rest);
        let to: BTreeSet<String> = targets_of(&d).into_iter().map(|(_, t, _)| t).collect();
        assert_eq!(d.len(), to.len(), "one per node: {d:?}");
        // And at local load 2 nothing moves onto nodes believed at 1..2.
        let d = c.round(NOW + 2_000, &local(2.0), &views, &none(), &rest[..2]);
        assert!(d.is_empty(), "{d:?}");
        // After the hold the floors go; the stale zeros count again.
        let d = c.round(
            NOW + 1_000 + 5_000,
            &local(2.0),
            &views,
            &none(),
            &rest[..2],
        );
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn at_most_max_per_round() {
        let views: Vec<NodeView> = (0..10).map(|i| view(&format!("n{i}"), 0.0)).collect();
        let procs: Vec<ProcFact> = (1..=20).map(proc).collect();
        let d = consider().round(NOW, &local(20.0), &views, &none(), &procs);
        assert_eq!(d.len(), 4);
    }

    #[test]
    fn io_bound_processes_are_not_moved_for_load() {
        let mut p = proc(1);
        p.demand = 0.2;
        let d = consider().round(NOW, &local(5.0), &[view("b", 0.0)], &none(), &[p]);
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn memory_ushering_moves_without_a_load_difference() {
        let mut me = local(1.0);
        me.free_mem_bytes = 10 << 20;
        let mut big = proc(1);
        big.memory_bytes = 500 << 20;
        let small = proc(2);
        let mut tight = view("tight", 1.0);
        tight.entry.free_mem_bytes = 600 << 20; // 500 + 64 + 64 does not fit
        let mut roomy = view("roomy", 1.0);
        roomy.entry.free_mem_bytes = 2 << 30;
        let d = consider().round(NOW, &me, &[tight, roomy.clone()], &none(), &[small, big]);
        assert_eq!(targets_of(&d), vec![(1, "roomy".into(), Reason::Memory)]);
        // With enough free memory nothing moves between equal loads.
        me.free_mem_bytes = 1 << 30;
        let d = consider().round(NOW, &me, &[roomy], &none(), &[proc(1)]);
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn memory_ushering_does_not_overload_the_target() {
        let mut me = local(1.0);
        me.free_mem_bytes = 0;
        let mut busy = view("busy", 3.0);
        busy.entry.free_mem_bytes = 4 << 30;
        let d = consider().round(NOW, &me, &[busy], &none(), &[proc(1)]);
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn no_return_to_the_sender_on_stale_figures() {
        // Arrived from "b" 5 s ago; our figures say "b" is idle (stale) and
        // we are at 3: the load rule alone would send it back.
        let mut p = proc(1);
        p.arrived_ms = NOW - 5_000;
        p.came_from = Some("b".into());
        let mut me = local(3.0);
        me.name = "a".into();
        let d = consider().round(NOW, &me, &[view("b", 0.0)], &none(), &[p.clone()]);
        assert!(d.is_empty(), "{d:?}");
        // Another idle node is fine.
        let d = consider().round(
            NOW,
            &me,
            &[view("b", 0.0), view("c", 0.0)],
            &none(),
            &[p.clone()],
        );
        assert_eq!(targets_of(&d), vec![(1, "c".into(), Reason::Load)]);
        // After no_return_ms it may go back.
        p.arrived_ms = NOW - 30_000;
        let d = consider().round(NOW, &me, &[view("b", 0.0)], &none(), &[p]);
        assert_eq!(d.len(), 1);
    }

    proptest! {
        /// With correct figures, a move decided by the load rule is never
        /// undone by it: after p moves A -> B, B considering with the new
        /// loads never sends anything to A.
        #[test]
        fn no_ping_pong_for_any_loads(
            la in 0.0f64..20.0,
            lb in 0.0f64..20.0,
            cpus_a in 0.25f64..8.0,
            cpus_b in 0.25f64..8.0,
            speed_a in 0.25f64..4.0,
            speed_b in 0.25f64..4.0,
            demand in 0.5f64..=1.0,
            margin in 0.0f64..1.0,
        ) {
            let params = BalancerConfig { margin, ..params() };
            let mut a = Consider::new(params.clone(), 1).unwrap();
            let mut me = local(la);
            me.cpus = cpus_a;
            me.speed = speed_a;
            let mut vb = view("b", lb);
            vb.entry.cpus = cpus_b;
            vb.entry.speed = speed_b;
            let mut p = proc(1);
            p.demand = demand;
            let d = a.round(NOW, &me, &[vb], &none(), &[p.clone()]);
            if d.len() == 1 {
                let la2 = la - demand / (cpus_a * speed_a);
                let lb2 = lb + demand / (cpus_b * speed_b);
                let mut b = Consider::new(params, 2).unwrap();
                let mut me_b = local(lb2);
                me_b.name = "b".into();
                me_b.cpus = cpus_b;
                me_b.speed = speed_b;
                let mut va = view("a", la2.max(0.0));
                va.entry.cpus = cpus_a;
                va.entry.speed = speed_a;
                // Even with no_return out of the way (arrived long ago).
                p.arrived_ms = 0;
                p.came_from = None;
                let back = b.round(NOW + 100_000, &me_b, &[va], &none(), &[p]);
                prop_assert!(back.is_empty(), "ping-pong: {:?}", back);
            }
        }
    }

    #[test]
    fn expel_sends_guests_home_or_elsewhere() {
        let mut g1 = proc(1);
        g1.home = Some("h1".into());
        g1.arrived_ms = NOW; // residency does not hold for expel
        let mut g2 = proc(2);
        g2.home = Some("gone".into());
        let mut g3 = proc(3);
        g3.home = Some("h1".into());
        g3.cantmove = Some("uses a device".into());
        let own = proc(4);
        let mut dead = view("gone", 0.0);
        dead.alive = false;
        let views = [view("h1", 5.0), dead, view("c", 2.0), view("d", 0.5)];
        let plan = consider().expel(NOW, &local(4.0), &views, &none(), &[g1, g2, g3, own]);
        assert_eq!(
            targets_of(&plan.decisions),
            vec![
                (1, "h1".into(), Reason::Expel),
                (2, "d".into(), Reason::Expel)
            ]
        );
        assert_eq!(
            plan.stuck,
            vec![(3, Stuck::CannotMove("uses a device".into()))]
        );
        // Nowhere to go: home dead, the only other node refuses.
        let mut g = proc(5);
        g.home = Some("gone".into());
        let refusing: BTreeSet<String> =
            ["d".to_string(), "c".to_string(), "h1".to_string()].into();
        let plan = consider().expel(NOW, &local(4.0), &views, &refusing, &[g]);
        assert!(plan.decisions.is_empty());
        assert_eq!(plan.stuck, vec![(5, Stuck::NowhereToGo)]);
    }

    #[test]
    fn accept_refuses_when_blocked_full_or_no_longer_lighter() {
        let mut c = consider();
        let offer = Offer {
            reason: Reason::Load,
            sender_load: 3.0,
            demand: 1.0,
            memory_bytes: 8 << 20,
            returning_home: false,
        };
        let mut me = local(0.0);
        me.blocked = true;
        assert_eq!(c.accept(NOW, &me, &offer), Err(Refusal::Blocked));
        // Our own process sent home is taken even when blocked.
        let home = Offer {
            returning_home: true,
            reason: Reason::Expel,
            ..offer.clone()
        };
        assert_eq!(c.accept(NOW, &me, &home), Ok(()));
        // Sent home for load, it is judged by the load rule: many guests
        // arriving at an idle home at once must not all be taken.
        let mut c = consider();
        let home_for_load = Offer {
            returning_home: true,
            sender_load: 2.0,
            ..offer.clone()
        };
        assert_eq!(c.accept(NOW, &me, &home_for_load), Ok(()));
        assert!(matches!(
            c.accept(NOW, &me, &home_for_load),
            Err(Refusal::NotLessLoaded { .. })
        ));
        let mut c = consider();
        let mut me = local(0.0);
        me.free_mem_bytes = 10 << 20;
        assert!(matches!(
            c.accept(NOW, &me, &offer),
            Err(Refusal::NoMemory { .. })
        ));
        let me = local(0.0);
        // Two accepted at once bring us to 2; the third would make 3, not
        // lighter than the sender at 3.
        assert_eq!(c.accept(NOW, &me, &offer), Ok(()));
        assert_eq!(c.accept(NOW, &me, &offer), Ok(()));
        assert!(matches!(
            c.accept(NOW, &me, &offer),
            Err(Refusal::NotLessLoaded { .. })
        ));
        // Once the hold has passed the published load is trusted again.
        assert_eq!(c.accept(NOW + 5_000, &me, &offer), Ok(()));
    }

    #[test]
    fn bad_params_are_rejected() {
        let bad = BalancerConfig {
            margin: f64::NAN,
            ..params()
        };
        assert!(matches!(
            Consider::new(bad, 0),
            Err(ConsiderError::BadMargin(_))
        ));
        let bad = BalancerConfig {
            max_per_round: 0,
            ..params()
        };
        assert_eq!(
            Consider::new(bad, 0).unwrap_err(),
            ConsiderError::NoMigrationsAllowed
        );
    }

    #[test]
    fn absurd_facts_do_not_panic() {
        let mut p = proc(1);
        p.demand = f64::NAN;
        let mut q = proc(2);
        q.demand = 7.0; // clamped to 1
        let mut me = local(3.0);
        me.cpus = 0.0;
        let mut v = view("b", f64::NAN);
        v.entry.cpus = -1.0;
        let d = consider().round(NOW, &me, &[v, view("c", 0.0)], &none(), &[p, q]);
        assert_eq!(targets_of(&d), vec![(2, "c".into(), Reason::Load)]);
    }
}
