//! `mosrun -b`'s choice: the node where a new CPU-bound process would
//! progress fastest right now, from this node's load vector. Pure.

use mosix_proto::control::{NodeInfo, NodeState};

/// Rate (reference CPUs) one more CPU-bound process would get at a node
/// with this entry: its CPU speed times its share of the node's CPUs.
fn rate(n: &NodeInfo) -> f64 {
    let e = &n.entry;
    if !(e.load.is_finite() && e.cpus.is_finite() && e.speed.is_finite())
        || e.cpus <= 0.0
        || e.speed <= 0.0
    {
        return 0.0;
    }
    let run_queue = e.load.max(0.0) * e.cpus * e.speed;
    e.speed * (e.cpus / (run_queue + 1.0)).min(1.0)
}

/// A remote node must beat home by this factor to be worth a migration.
const BETTER_BY: f64 = 1.1;

/// The node a new process should move to, or None to stay at home (home
/// is as good, or no other node is alive and accepting guests).
pub fn best_node(nodes: &[NodeInfo]) -> Option<&NodeInfo> {
    let home = nodes.iter().find(|n| n.is_self).map_or(0.0, rate);
    nodes
        .iter()
        .filter(|n| !n.is_self && n.state == NodeState::Alive && n.entry.accepts_guests)
        .map(|n| (n, rate(n)))
        .filter(|(_, r)| *r > home * BETTER_BY)
        .max_by(|a, b| {
            a.1.total_cmp(&b.1)
                .then(b.0.entry.load.total_cmp(&a.0.entry.load))
        })
        .map(|(n, _)| n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mosix_proto::msg::LoadEntry;

    fn node(name: &str, load: f64, is_self: bool) -> NodeInfo {
        NodeInfo {
            entry: LoadEntry {
                name: name.into(),
                address: "10.0.0.1:7340".parse().unwrap(),
                generation: 1,
                age_ms: 0,
                load,
                cpus: 1.0,
                speed: 1.0,
                free_mem_bytes: 1 << 30,
                accepts_guests: true,
                guests: 0,
                away: 0,
            },
            state: NodeState::Alive,
            is_self,
        }
    }

    #[test]
    fn the_least_loaded_accepting_node_wins() {
        let nodes = [
            node("home", 2.0, true),
            node("a", 1.0, false),
            node("b", 0.0, false),
        ];
        assert_eq!(best_node(&nodes).unwrap().entry.name, "b");
        let mut blocked = nodes.clone();
        blocked[2].entry.accepts_guests = false;
        assert_eq!(best_node(&blocked).unwrap().entry.name, "a");
        blocked[1].state = NodeState::Dead;
        assert!(best_node(&blocked).is_none());
    }

    #[test]
    fn home_as_good_stays_home() {
        let nodes = [node("home", 0.0, true), node("a", 0.0, false)];
        assert!(best_node(&nodes).is_none());
        let nodes = [node("home", 1.0, true), node("a", 1.0, false)];
        assert!(best_node(&nodes).is_none());
    }

    #[test]
    fn a_faster_node_beats_an_idle_slow_home() {
        let mut fast = node("fast", 0.0, false);
        fast.entry.speed = 2.0;
        let nodes = [node("home", 0.0, true), fast];
        assert_eq!(best_node(&nodes).unwrap().entry.name, "fast");
        let mut bad = node("bad", f64::NAN, false);
        bad.entry.cpus = -1.0;
        assert!(best_node(&[node("home", 3.0, true), bad]).is_none());
    }
}
