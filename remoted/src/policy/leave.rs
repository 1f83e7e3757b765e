//! Which guests must leave this node, and why (ARCHITECTURE.md section 7): the
//! workstation owner came back (the node's own, non-guest load rose so that
//! its guests now overload it), or memory is short (ushering: guests go
//! before the node swaps). Pure: no I/O, time is `now_ms`.
//!
//! A guest that leaves goes back to its home, which brings it home or sends
//! it on; this node only asks (through the guest's host thread). A guest is
//! asked at most once per `leave_ask_every_ms`, so a slow home is not flooded.

use mosix_proto::config::BalancerConfig;
use std::collections::BTreeMap;

/// Checks the leave policy's parameters ([`BalancerConfig::owner_load`],
/// `owner_hold_ms`, `leave_ask_every_ms`); the error says which one is
/// wrong.
pub fn validate(params: &BalancerConfig) -> Result<(), &'static str> {
    if !params.owner_load.is_finite() || params.owner_load < 0.0 {
        return Err("owner_load must be a finite number >= 0");
    }
    if params.owner_hold_ms > 600_000 {
        return Err("owner_hold_ms must be at most 600000");
    }
    if params.leave_ask_every_ms == 0 {
        return Err("leave_ask_every_ms must be at least 1");
    }
    Ok(())
}

/// One guest running here, as the policy sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestFact {
    /// Its pid here.
    pub body_pid: i32,
    /// Fraction of the wall time it wanted a CPU, 0..=1.
    pub demand: f64,
    /// Its resident memory, bytes.
    pub memory_bytes: u64,
    /// When it arrived, ms.
    pub arrived_ms: u64,
}

/// This node now.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeNow {
    /// Total normalised load (guests included).
    pub load: f64,
    /// CPU capacity.
    pub cpus: f64,
    /// Relative CPU speed.
    pub speed: f64,
    /// Free memory, bytes.
    pub free_mem_bytes: u64,
    /// Memory ushering threshold, bytes (the consideration's
    /// `usher_below_bytes`).
    pub usher_below_bytes: u64,
}

/// Why a guest is asked to leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    /// The node's own load came back and the guests overload it.
    OwnerBack,
    /// Free memory is short.
    Memory,
    /// `mosctl expel`.
    Expel,
}

impl LeaveReason {
    /// The reason as the home hears it ([`mosix_proto::reason::LeaveReason`]).
    pub fn on_the_wire(self) -> mosix_proto::reason::LeaveReason {
        match self {
            LeaveReason::OwnerBack => mosix_proto::reason::LeaveReason::OwnerBack,
            LeaveReason::Memory => mosix_proto::reason::LeaveReason::MemoryShort,
            LeaveReason::Expel => mosix_proto::reason::LeaveReason::Expelled,
        }
    }

    /// Text the home logs.
    pub fn text(self) -> &'static str {
        match self {
            LeaveReason::OwnerBack => "the node's owner is back (local load)",
            LeaveReason::Memory => "the node is short of memory",
            LeaveReason::Expel => "mosctl expel",
        }
    }
}

fn demand(g: &GuestFact) -> f64 {
    if g.demand.is_finite() {
        g.demand.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// Whether the node's own (non-guest) run queue is at least `owner_load`
/// while the node is overloaded, right now.
pub fn owner_busy(params: &BalancerConfig, node: &NodeNow, guests: &[GuestFact]) -> bool {
    let cap = node.cpus * node.speed;
    if !(cap.is_finite() && cap > 0.0 && node.load.is_finite()) {
        return false;
    }
    let run_queue = node.load.max(0.0) * cap;
    let guests_rq: f64 = guests.iter().map(demand).sum();
    run_queue - guests_rq >= params.owner_load && run_queue > node.cpus
}

/// Remembers since when [`owner_busy`] has held, so that a burst does not
/// send the guests away: the owner is back once it held `owner_hold_ms`.
#[derive(Debug, Clone, Default)]
pub struct OwnerWatch {
    since_ms: Option<u64>,
}

impl OwnerWatch {
    /// Feeds this round's [`owner_busy`]; returns whether the owner is back.
    pub fn update(&mut self, params: &BalancerConfig, now_ms: u64, busy: bool) -> bool {
        if !busy {
            self.since_ms = None;
            return false;
        }
        let since = *self.since_ms.get_or_insert(now_ms);
        now_ms.saturating_sub(since) >= params.owner_hold_ms
    }
}

/// The leave decisions of one round: guests to ask, with the reason.
/// `asked` holds when each guest was last asked (the caller records the
/// ones returned); `owner_back` comes from [`OwnerWatch`].
pub fn choose(
    params: &BalancerConfig,
    now_ms: u64,
    node: &NodeNow,
    guests: &[GuestFact],
    asked: &BTreeMap<i32, u64>,
    owner_back: bool,
) -> Vec<(i32, LeaveReason)> {
    let may_ask = |g: &GuestFact| {
        asked
            .get(&g.body_pid)
            .is_none_or(|&at| now_ms.saturating_sub(at) >= params.leave_ask_every_ms)
    };
    let mut out: Vec<(i32, LeaveReason)> = Vec::new();
    let cap = node.cpus * node.speed;
    if !(cap.is_finite() && cap > 0.0 && node.load.is_finite()) {
        return out;
    }
    // Memory first: it is what keeps the node from swapping. Largest first.
    if node.free_mem_bytes < node.usher_below_bytes {
        let mut by_size: Vec<&GuestFact> = guests.iter().collect();
        by_size.sort_by(|a, b| {
            b.memory_bytes
                .cmp(&a.memory_bytes)
                .then(a.body_pid.cmp(&b.body_pid))
        });
        let mut free = node.free_mem_bytes;
        for g in by_size {
            if free >= node.usher_below_bytes {
                break;
            }
            // Still counted as freed when asked recently: it is leaving.
            free = free.saturating_add(g.memory_bytes);
            if may_ask(g) {
                out.push((g.body_pid, LeaveReason::Memory));
            }
        }
    }
    // The owner: run queue = load * capacity; the guests' share of it is
    // their demand. Overloaded: more runnable than CPUs.
    let run_queue = node.load.max(0.0) * cap;
    if owner_back && owner_busy(params, node, guests) {
        // Newest first: they have had least time here.
        let mut newest: Vec<&GuestFact> = guests.iter().collect();
        newest.sort_by(|a, b| {
            b.arrived_ms
                .cmp(&a.arrived_ms)
                .then(a.body_pid.cmp(&b.body_pid))
        });
        let mut rq = run_queue;
        for g in newest {
            if rq <= node.cpus {
                break;
            }
            rq -= demand(g);
            if may_ask(g) && !out.iter().any(|(p, _)| *p == g.body_pid) {
                out.push((g.body_pid, LeaveReason::OwnerBack));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(load: f64, free: u64) -> NodeNow {
        NodeNow {
            load,
            cpus: 1.0,
            speed: 1.0,
            free_mem_bytes: free,
            usher_below_bytes: 64 << 20,
        }
    }

    fn guest(pid: i32, arrived: u64, mem_mib: u64) -> GuestFact {
        GuestFact {
            body_pid: pid,
            demand: 1.0,
            memory_bytes: mem_mib << 20,
            arrived_ms: arrived,
        }
    }

    const GIB: u64 = 1 << 30;

    #[test]
    fn guests_alone_on_their_node_stay() {
        let p = BalancerConfig::default();
        let gs = [guest(1, 0, 10), guest(2, 5, 10)];
        // Two CPU-bound guests on one CPU: overloaded, but by guests only.
        assert!(choose(&p, 100_000, &node(2.0, GIB), &gs, &BTreeMap::new(), true).is_empty());
    }

    #[test]
    fn owner_back_sends_the_newest_guests_until_not_overloaded() {
        let p = BalancerConfig::default();
        let gs = [guest(1, 0, 10), guest(2, 5, 10), guest(3, 9, 10)];
        // The owner runs one CPU-bound process: run queue 4 on one CPU.
        let out = choose(&p, 100_000, &node(4.0, GIB), &gs, &BTreeMap::new(), true);
        assert_eq!(
            out,
            vec![
                (3, LeaveReason::OwnerBack),
                (2, LeaveReason::OwnerBack),
                (1, LeaveReason::OwnerBack)
            ]
        );
        // Owner light (0.3 of a CPU): the guests stay.
        assert!(choose(&p, 100_000, &node(3.3, GIB), &gs, &BTreeMap::new(), true).is_empty());
        // Owner busy, but not for long enough yet.
        assert!(choose(&p, 100_000, &node(4.0, GIB), &gs, &BTreeMap::new(), false).is_empty());
    }

    #[test]
    fn owner_back_on_two_cpus_keeps_what_fits() {
        let p = BalancerConfig::default();
        let gs = [guest(1, 0, 10), guest(2, 5, 10)];
        let mut n = node(1.5, GIB); // run queue 3 on 2 CPUs: owner 1
        n.cpus = 2.0;
        let out = choose(&p, 100_000, &n, &gs, &BTreeMap::new(), true);
        assert_eq!(out, vec![(2, LeaveReason::OwnerBack)]);
    }

    #[test]
    fn short_memory_sends_the_largest_guests_first() {
        let p = BalancerConfig::default();
        let gs = [guest(1, 0, 10), guest(2, 5, 100), guest(3, 9, 40)];
        let out = choose(
            &p,
            100_000,
            &node(0.5, 10 << 20),
            &gs,
            &BTreeMap::new(),
            true,
        );
        assert_eq!(out, vec![(2, LeaveReason::Memory)]);
        let out = choose(&p, 100_000, &node(0.5, 0), &gs, &BTreeMap::new(), true);
        assert_eq!(out, vec![(2, LeaveReason::Memory)]);
        let small = [guest(1, 0, 10), guest(3, 9, 40)];
        let out = choose(&p, 100_000, &node(0.5, 0), &small, &BTreeMap::new(), true);
        assert_eq!(
            out,
            vec![(3, LeaveReason::Memory), (1, LeaveReason::Memory)]
        );
    }

    #[test]
    fn a_guest_is_not_asked_again_too_soon() {
        let p = BalancerConfig::default();
        let gs = [guest(1, 0, 10), guest(2, 5, 10)];
        let n = node(3.0, GIB);
        let asked: BTreeMap<i32, u64> = [(2, 95_000)].into();
        // Guest 2 was asked 5 s ago: it is not asked again, only 1.
        assert_eq!(
            choose(&p, 100_000, &n, &gs, &asked, true),
            vec![(1, LeaveReason::OwnerBack)]
        );
        assert_eq!(
            choose(&p, 105_000, &n, &gs, &asked, true),
            vec![(2, LeaveReason::OwnerBack), (1, LeaveReason::OwnerBack)]
        );
    }

    #[test]
    fn the_owner_counts_as_back_only_after_the_hold() {
        let p = BalancerConfig::default();
        let mut w = OwnerWatch::default();
        assert!(!w.update(&p, 1_000, true));
        assert!(!w.update(&p, 3_000, true));
        assert!(w.update(&p, 4_000, true));
        // A quiet round starts the hold over.
        assert!(!w.update(&p, 5_000, false));
        assert!(!w.update(&p, 6_000, true));
        assert!(w.update(&p, 9_000, true));
        let gs = [guest(1, 0, 10)];
        assert!(owner_busy(&p, &node(2.0, GIB), &gs));
        assert!(!owner_busy(&p, &node(1.5, GIB), &gs));
        assert!(!owner_busy(&p, &node(0.9, GIB), &[]));
    }

    #[test]
    fn nonsense_figures_ask_nothing() {
        let p = BalancerConfig::default();
        let gs = [guest(1, 0, 10)];
        let mut n = node(f64::NAN, GIB);
        assert!(choose(&p, 1, &n, &gs, &BTreeMap::new(), true).is_empty());
        n.load = 5.0;
        n.cpus = 0.0;
        assert!(choose(&p, 1, &n, &gs, &BTreeMap::new(), true).is_empty());
    }
}
