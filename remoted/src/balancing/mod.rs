//! The balancer thread: the I/O that drives the pure policy in
//! [`crate::policy`] (ARCHITECTURE.md section 7). It reads the load vector the
//! event loop publishes, asks `homed` for this node's processes, measures
//! them in `/proc` ([`procfs`]), and starts the migrations the policy
//! decides.
//!
//! A thread of its own runs a round every `interval_ms`, so nothing here
//! ever blocks the event loop's gossip:
//!
//! 1. it reads the load vector the event loop last published (the
//!    [`Snapshot`]), keeping as targets only nodes alive and accepting
//!    guests;
//! 2. it asks which of this node's guests must leave (the owner's own load
//!    came back, memory is short: [`crate::policy::leave`]) and asks
//!    their homes to take them ([`guests::ask_to_leave`]);
//! 3. it asks this node's `homed` (its command socket, as root) for the
//!    processes started here, measures how much CPU each wants
//!    ([`procfs::DemandMeter`]), and feeds [`Consider::round`];
//! 4. it considers this node's processes running at other nodes too, each
//!    host's as that host would ([`Consider::round_away`]: from the host's
//!    published load, the demand last measured here, residency since the
//!    process was seen there): a host cannot move a guest by itself, and
//!    without this two guests put on one node stayed together to the end;
//! 5. each decision becomes a `ProcessRequest::Migrate` to `homed`, sent
//!    from a short-lived thread of its own (a migration takes a while);
//!    its outcome comes back on a channel, and a failure is fed back to
//!    the policy (`migration_failed`) and keeps that target out of the next
//!    rounds for a while.
//!
//! Until a migration ends, and for a moment after (the load average takes
//! up to a second to show it), the process's share is taken off this
//! node's load, so the next round does not move another process for the
//! same excess.

pub mod procfs;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mosix_proto::control::{ControlRequest, ControlResponse, NodeInfo, NodeState};
use mosix_proto::local::{recv_local, send_local};
use mosix_proto::process::{ProcessInfo, ProcessRequest, ProcessResponse};

use crate::host::guests;
use crate::node::{Shared, Snapshot};
use crate::policy::leave::{self, GuestFact, NodeNow, OwnerWatch};
use crate::policy::{BalancerConfig, Consider, Decision, LocalState, NodeView, ProcFact, Reason};
use procfs::DemandMeter;

/// How long homed has to answer the process list (it checks every
/// process's maps and fds; on a node with an eighth of a busy core that
/// took over 5 s for 16 processes).
const LIST_TIMEOUT: Duration = Duration::from_secs(20);

/// How long one migration may take before the balancer gives up waiting
/// (homed goes on; the outcome is then only logged by homed).
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(300);

/// A node that refused or failed a migration is not chosen again for this
/// long.
const REFUSED_FOR: Duration = Duration::from_secs(10);

/// After a migration ends, its process's share stays off our load this
/// long: the once-a-second load average has shown the departure by then.
const DEPARTED_FOR: Duration = Duration::from_millis(2_000);

/// Where one of our processes runs, as the balancer last saw it.
#[derive(Debug, Clone, PartialEq)]
struct Place {
    node: String,
    since_ms: u64,
    came_from: Option<String>,
}

/// Result of one migration, from its thread back to the balancer.
struct Outcome {
    pid: i32,
    node: String,
    result: Result<(), String>,
}

/// The balancer thread's state.
struct Worker {
    node_name: String,
    homed_socket: PathBuf,
    snapshot: Arc<Mutex<Snapshot>>,
    shared: Arc<Shared>,
    consider: Consider,
    home_meter: DemandMeter,
    guest_meter: DemandMeter,
    start: Instant,
    /// Migrations under way: pid -> its share of our load.
    inflight: HashMap<i32, f64>,
    /// Moves of our processes away, from one node to another, under way.
    inflight_away: HashSet<i32>,
    /// Where each of our processes was last seen, since when (our ms), and
    /// where it was before: residency and no-return for processes away.
    seen_at: HashMap<i32, Place>,
    /// Each process's demand and resident memory as last measured here:
    /// what it is taken to want while away (a body cannot be measured from
    /// home).
    measured: HashMap<i32, (f64, u64)>,
    departed: Vec<(Instant, f64)>,
    refused: HashMap<String, Instant>,
    asked: BTreeMap<i32, u64>,
    outcomes: Receiver<Outcome>,
    outcome_tx: Sender<Outcome>,
    homed_down: bool,
    owner: OwnerWatch,
}

/// Starts the balancer thread for node `node_name`, whose homed answers at
/// `homed_socket`.
pub fn spawn(
    node_name: String,
    homed_socket: PathBuf,
    snapshot: Arc<Mutex<Snapshot>>,
    shared: Arc<Shared>,
    seed: u64,
) -> std::io::Result<()> {
    let params = shared.params();
    let consider = Consider::new(params, seed)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let (outcome_tx, outcomes) = mpsc::channel();
    let mut w = Worker {
        node_name,
        homed_socket,
        snapshot,
        shared,
        consider,
        home_meter: DemandMeter::new("/proc"),
        guest_meter: DemandMeter::new("/proc"),
        start: Instant::now(),
        inflight: HashMap::new(),
        inflight_away: HashSet::new(),
        seen_at: HashMap::new(),
        measured: HashMap::new(),
        departed: Vec::new(),
        refused: HashMap::new(),
        asked: BTreeMap::new(),
        outcomes,
        outcome_tx,
        homed_down: false,
        owner: OwnerWatch::default(),
    };
    std::thread::Builder::new()
        .name("balancer".into())
        .spawn(move || {
            loop {
                let next = Instant::now() + w.round();
                // Outcomes are taken as they come (a failed target is
                // dropped at once); rounds keep their pace.
                loop {
                    let left = next.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    if let Ok(o) = w.outcomes.recv_timeout(left) {
                        w.on_outcome(o);
                    }
                }
            }
        })?;
    Ok(())
}

impl Worker {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn on_outcome(&mut self, o: Outcome) {
        let away = self.inflight_away.remove(&o.pid);
        let share = self.inflight.remove(&o.pid).unwrap_or(0.0);
        let proc = u64::try_from(o.pid).unwrap_or(0);
        match o.result {
            Ok(()) => {
                tracing::info!(pid = o.pid, node = %o.node, away, "balancer: migration done");
                let now_ms = self.now_ms();
                self.consider.migration_done(&o.node, now_ms);
                if away {
                    self.consider.away_move_done(proc, now_ms);
                } else {
                    self.departed.push((Instant::now(), share));
                }
                let came_from = self.seen_at.get(&o.pid).map(|p| p.node.clone());
                self.seen_at.insert(
                    o.pid,
                    Place {
                        node: o.node,
                        since_ms: now_ms,
                        came_from,
                    },
                );
            }
            Err(e) => {
                tracing::warn!(pid = o.pid, node = %o.node, error = %e, away,
                    "balancer: migration failed; the process runs on where it was");
                if away {
                    self.consider.away_move_failed(proc);
                }
                self.consider.migration_failed(&o.node);
                self.refused.insert(o.node, Instant::now());
            }
        }
    }

    /// Records where each of our processes runs now (a move by hand or by
    /// a guest's host asking it to leave shows here too).
    fn track_places(&mut self, list: &[ProcessInfo], now_ms: u64) {
        let live: HashSet<i32> = list.iter().map(|p| p.pid).collect();
        self.seen_at.retain(|pid, _| live.contains(pid));
        self.measured.retain(|pid, _| live.contains(pid));
        for p in list {
            match self.seen_at.get_mut(&p.pid) {
                Some(place) if place.node == p.node => {}
                Some(place) => {
                    let before = std::mem::replace(&mut place.node, p.node.clone());
                    place.came_from = Some(before);
                    place.since_ms = now_ms;
                }
                None => {
                    // First seen: at home since it started (homed says how
                    // long); away since now.
                    let since_ms = if p.node == p.home {
                        now_ms.saturating_sub(p.resident_ms.unwrap_or(0))
                    } else {
                        now_ms
                    };
                    self.seen_at.insert(
                        p.pid,
                        Place {
                            node: p.node.clone(),
                            since_ms,
                            came_from: None,
                        },
                    );
                }
            }
        }
    }

    /// Rounds for our processes running at other nodes, each judged from
    /// its host's published entry ([`Consider::round_away`]); starts the
    /// moves decided.
    fn consider_away(
        &mut self,
        list: &[ProcessInfo],
        snap: &Snapshot,
        views: &[NodeView],
        refusing: &BTreeSet<String>,
        now_ms: u64,
    ) {
        let mut by_host: BTreeMap<&str, Vec<ProcFact>> = BTreeMap::new();
        for p in list {
            if p.node == p.home
                || p.state != "running"
                || self.inflight_away.contains(&p.pid)
                || self.inflight.contains_key(&p.pid)
            {
                continue;
            }
            // Never measured here (started elsewhere with mosrun -r): its
            // demand is unknown, so it is left where it is.
            let (Some(&(demand, memory_bytes)), Some(place), Ok(id)) = (
                self.measured.get(&p.pid),
                self.seen_at.get(&p.pid),
                u64::try_from(p.pid),
            ) else {
                continue;
            };
            by_host.entry(p.node.as_str()).or_default().push(ProcFact {
                id,
                arrived_ms: place.since_ms,
                demand,
                memory_bytes,
                pinned: p.no_auto,
                cantmove: p.cantmove.clone(),
                last_migration_ms: None,
                migrations: p.migrations,
                home: None,
                came_from: place.came_from.clone(),
                cpu_ms: 0,
            });
        }
        for (host, facts) in by_host {
            let Some(host_view) = views.iter().find(|v| v.entry.name == host) else {
                continue;
            };
            let decisions = self
                .consider
                .round_away(now_ms, host_view, views, refusing, &facts);
            for Decision::Migrate { proc, to, reason } in decisions {
                let (Ok(pid), Some(target)) = (
                    i32::try_from(proc),
                    snap.nodes.iter().find(|n| n.entry.name == to),
                ) else {
                    continue;
                };
                tracing::info!(pid, from = %host, to = %to, ?reason, host_load = host_view.entry.load,
                    target_load = target.entry.load, "balancer: moving a process away on from its host");
                self.inflight_away.insert(pid);
                self.start_migration(pid, to, target.entry.address.to_string(), reason);
            }
        }
    }

    /// One round; returns how long to wait for the next.
    fn round(&mut self) -> Duration {
        while let Ok(o) = self.outcomes.try_recv() {
            self.on_outcome(o);
        }
        let t = self.shared.params();
        let interval = Duration::from_millis(t.consider_interval_ms);
        if self.consider.params() != &t {
            if let Err(e) = self.consider.set_params(t.clone()) {
                tracing::warn!(error = %e, "balancer: ignoring bad parameters");
            }
        }
        let snap = self
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(status) = snap.status.clone() else {
            return interval;
        };
        let me = status.entry;
        let now_ms = self.now_ms();

        // A guest's body registers with this node's homed too (as a
        // restored process); it is not ours to move.
        let bodies: BTreeSet<i32> = guests::list().iter().map(|g| g.body_pid).collect();
        let home = self.list_home().map(|l| -> Vec<ProcessInfo> {
            l.into_iter().filter(|p| !bodies.contains(&p.pid)).collect()
        });
        if let Some(list) = &home {
            let away = list.iter().filter(|p| p.node != p.home).count();
            self.shared
                .set_away(u32::try_from(away).unwrap_or(u32::MAX));
        }
        if !t.auto_migrate {
            return interval;
        }
        self.guests_leave(&t, now_ms, &me);

        let Some(list) = home else {
            return interval;
        };
        self.track_places(&list, now_ms);
        let here: Vec<&ProcessInfo> = list
            .iter()
            .filter(|p| p.node == p.home && !self.inflight.contains_key(&p.pid))
            .collect();
        let pids: Vec<i32> = here.iter().map(|p| p.pid).collect();
        let demands = self.home_meter.measure(&pids);
        let facts: Vec<ProcFact> = here
            .iter()
            .filter_map(|p| {
                let demand = demands.get(&p.pid).copied().flatten()?;
                let memory_bytes = procfs::resident_bytes(std::path::Path::new("/proc"), p.pid);
                self.measured.insert(p.pid, (demand, memory_bytes));
                let place = self.seen_at.get(&p.pid);
                Some(ProcFact {
                    id: u64::try_from(p.pid).ok()?,
                    arrived_ms: place.map_or(now_ms, |pl| pl.since_ms),
                    demand,
                    memory_bytes,
                    pinned: p.no_auto,
                    cantmove: p.cantmove.clone(),
                    last_migration_ms: None,
                    migrations: p.migrations,
                    home: None,
                    came_from: place.and_then(|pl| pl.came_from.clone()),
                    // CPU used here (rotation moves the most advanced first).
                    cpu_ms: procfs::cpu_ms(std::path::Path::new("/proc"), p.pid),
                })
            })
            .collect();
        let cap = (me.cpus * me.speed).max(f64::MIN_POSITIVE);
        let now = Instant::now();
        self.departed
            .retain(|(at, _)| now.duration_since(*at) < DEPARTED_FOR);
        self.refused
            .retain(|_, at| now.duration_since(*at) < REFUSED_FOR);
        let (views, refusing) = targets(&snap.nodes, &self.refused);
        if !facts.is_empty() {
            let leaving: f64 = self.inflight.values().sum::<f64>()
                + self.departed.iter().map(|(_, s)| s).sum::<f64>();
            let local = LocalState {
                name: self.node_name.clone(),
                load: (me.load - leaving).max(0.0),
                cpus: me.cpus,
                speed: me.speed,
                free_mem_bytes: me.free_mem_bytes,
                blocked: !guests::accepting(),
            };
            let decisions = self
                .consider
                .round(now_ms, &local, &views, &refusing, &facts);
            for Decision::Migrate { proc, to, reason } in decisions {
                let Ok(pid) = i32::try_from(proc) else {
                    continue;
                };
                let Some(target) = snap.nodes.iter().find(|n| n.entry.name == to) else {
                    continue;
                };
                let demand = facts
                    .iter()
                    .find(|f| f.id == proc)
                    .map(|f| f.demand)
                    .unwrap_or(1.0);
                tracing::info!(pid, to = %to, ?reason, load = local.load, target_load = target.entry.load,
                    demand, "balancer: migrating");
                self.inflight.insert(pid, demand / cap);
                self.start_migration(pid, to, target.entry.address.to_string(), reason);
            }
        }
        self.consider_away(&list, &snap, &views, &refusing, now_ms);
        interval
    }

    /// Asks the guests that must leave to go; logs what it asked.
    fn guests_leave(&mut self, t: &BalancerConfig, now_ms: u64, me: &mosix_proto::msg::LoadEntry) {
        let list = guests::list();
        let live: BTreeSet<i32> = list.iter().map(|g| g.body_pid).collect();
        self.asked.retain(|pid, _| live.contains(pid));
        if list.is_empty() {
            self.owner.update(t, now_ms, false);
            return;
        }
        let pids: Vec<i32> = list.iter().map(|g| g.body_pid).collect();
        let demands = self.guest_meter.measure(&pids);
        let facts: Vec<GuestFact> = list
            .iter()
            .map(|g| GuestFact {
                body_pid: g.body_pid,
                // Not measured yet: assume CPU-bound, the usual guest.
                demand: demands.get(&g.body_pid).copied().flatten().unwrap_or(1.0),
                memory_bytes: procfs::resident_bytes(std::path::Path::new("/proc"), g.body_pid),
                arrived_ms: now_ms.saturating_sub(
                    u64::try_from(g.since.elapsed().as_millis()).unwrap_or(u64::MAX),
                ),
            })
            .collect();
        let node = NodeNow {
            load: me.load,
            cpus: me.cpus,
            speed: me.speed,
            free_mem_bytes: me.free_mem_bytes,
            usher_below_bytes: t.usher_below_bytes,
        };
        let busy = leave::owner_busy(t, &node, &facts);
        let back = self.owner.update(t, now_ms, busy);
        for (pid, why) in leave::choose(t, now_ms, &node, &facts, &self.asked, back) {
            self.asked.insert(pid, now_ms);
            let g = list.iter().find(|g| g.body_pid == pid);
            if guests::ask_to_leave(pid, why.on_the_wire()) {
                tracing::info!(body_pid = pid, home = ?g.map(|g| &g.home), home_pid = ?g.map(|g| g.home_pid),
                    reason = why.text(), "balancer: asked a guest to leave");
            }
        }
    }

    /// The processes homed lists, or None (logged once) if it does not
    /// answer.
    fn list_home(&mut self) -> Option<Vec<ProcessInfo>> {
        let req = ControlRequest::Process {
            request: ProcessRequest::List,
        };
        match ask_homed(&self.homed_socket, &req, LIST_TIMEOUT) {
            Ok(ControlResponse::Process {
                response: ProcessResponse::List { processes },
            }) => {
                if self.homed_down {
                    tracing::info!("balancer: homed answers again");
                    self.homed_down = false;
                }
                Some(processes)
            }
            other => {
                if !self.homed_down {
                    let why = match other {
                        Err(e) => e,
                        Ok(r) => format!("unexpected answer {r:?}"),
                    };
                    tracing::warn!(socket = %self.homed_socket.display(), error = %why,
                        "balancer: cannot list this node's processes; no process moves until homed answers");
                    self.homed_down = true;
                }
                None
            }
        }
    }

    fn start_migration(&self, pid: i32, node: String, address: String, reason: Reason) {
        let tx = self.outcome_tx.clone();
        let socket = self.homed_socket.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("migrate-{pid}"))
            .spawn(move || {
                let req = ControlRequest::Process {
                    request: ProcessRequest::Migrate {
                        pid,
                        node: node.clone(),
                        address,
                        automatic: true,
                    },
                };
                let result = match ask_homed(&socket, &req, MIGRATE_TIMEOUT) {
                    Ok(ControlResponse::Process {
                        response: ProcessResponse::Migrated { done },
                    }) => {
                        tracing::info!(pid, node = %done.node, body_pid = done.body_pid,
                            bytes = done.bytes, frozen_ms = done.frozen_ms, ?reason,
                            "balancer: process migrated");
                        Ok(())
                    }
                    Ok(ControlResponse::Process {
                        response: ProcessResponse::Error { message, .. },
                    })
                    | Ok(ControlResponse::Error { message }) => Err(message),
                    Ok(other) => Err(format!("unexpected answer from homed: {other:?}")),
                    Err(e) => Err(e),
                };
                let _ = tx.send(Outcome { pid, node, result });
            });
        if let Err(e) = spawned {
            tracing::warn!(pid, error = %e, "balancer: cannot start a migration thread");
            let _ = self.outcome_tx.send(Outcome {
                pid,
                node: String::new(),
                result: Err(format!("no thread: {e}")),
            });
        }
    }
}

/// The dissemination's view as the policy wants it, and the nodes it must
/// not pick: those that do not accept guests, and those that refused
/// recently.
fn targets(
    nodes: &[NodeInfo],
    refused: &HashMap<String, Instant>,
) -> (Vec<NodeView>, BTreeSet<String>) {
    let views = nodes
        .iter()
        .map(|n| NodeView {
            entry: n.entry.clone(),
            alive: n.state == NodeState::Alive,
            suspect: false,
            is_self: n.is_self,
            send_failures: 0,
        })
        .collect();
    let refusing = nodes
        .iter()
        .filter(|n| !n.entry.accepts_guests)
        .map(|n| n.entry.name.clone())
        .chain(refused.keys().cloned())
        .collect();
    (views, refusing)
}

/// One request to homed's command socket, with `timeout` for the answer.
fn ask_homed(
    socket: &std::path::Path,
    req: &ControlRequest,
    timeout: Duration,
) -> Result<ControlResponse, String> {
    let mut s = UnixStream::connect(socket)
        .map_err(|e| format!("cannot reach homed at {}: {e}", socket.display()))?;
    s.set_read_timeout(Some(timeout))
        .and_then(|()| s.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("cannot set a timeout on homed's socket: {e}"))?;
    send_local(&mut s, req).map_err(|e| format!("cannot send to homed: {e}"))?;
    recv_local(&mut s).map_err(|e| format!("no valid answer from homed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mosix_proto::msg::LoadEntry;

    fn info(name: &str, accepts: bool, state: NodeState) -> NodeInfo {
        NodeInfo {
            entry: LoadEntry {
                name: name.into(),
                address: "10.0.0.1:7340".parse().unwrap(),
                generation: 1,
                age_ms: 0,
                load: 0.0,
                cpus: 1.0,
                speed: 1.0,
                free_mem_bytes: 1 << 30,
                accepts_guests: accepts,
                guests: 0,
                away: 0,
            },
            state,
            is_self: false,
        }
    }

    #[test]
    fn blocked_and_refusing_nodes_are_never_targets() {
        let nodes = [
            info("a", true, NodeState::Alive),
            info("b", false, NodeState::Alive),
            info("c", true, NodeState::Dead),
            info("d", true, NodeState::Alive),
        ];
        let refused: HashMap<String, Instant> = [("d".to_string(), Instant::now())].into();
        let (views, refusing) = targets(&nodes, &refused);
        assert_eq!(views.len(), 4);
        assert!(!views[2].alive);
        assert_eq!(
            refusing.into_iter().collect::<Vec<_>>(),
            vec!["b".to_string(), "d".to_string()]
        );
    }
}
