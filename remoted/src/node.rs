//! The local node as the event loop sees it: load sampling each tick, the
//! once-a-second load average, the node's own published entry, and the
//! state the other threads share with the loop: the [`Snapshot`] `mosctl`
//! and the balancer thread read, and the balancer's [`Shared`] state.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use mosix_proto::control::{LocalStatus, NodeInfo, NodeState};
use mosix_proto::frame::PROTOCOL_VERSION;
use mosix_proto::msg::LoadEntry;

use crate::host::guests;
use crate::measure::{LoadSource, Scope};
use crate::net::Node;
use crate::policy::{Action, BalancerConfig, Dissemination, LoadCalculator, LoadError, params};

/// What `mosctl` sees: rebuilt by the loop after every change.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every known node, this one included.
    pub nodes: Vec<NodeInfo>,
    /// This node's status (None until the first publish).
    pub status: Option<LocalStatus>,
}

/// What the balancer thread ([`crate::balancing`]) shares with the rest of
/// `remoted`: the parameters in force (`mosctl params` reads and sets
/// them) and how many of this node's processes run elsewhere (published in
/// this node's entry).
#[derive(Debug)]
pub struct Shared {
    params: Mutex<BalancerConfig>,
    away: AtomicU32,
}

impl Shared {
    /// Shared state starting with `params` (the configuration file's).
    pub fn new(params: BalancerConfig) -> Arc<Shared> {
        Arc::new(Shared {
            params: Mutex::new(params),
            away: AtomicU32::new(0),
        })
    }

    /// The parameters in force.
    pub fn params(&self) -> BalancerConfig {
        self.params
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Applies `KEY=VALUE` settings, all or none (`mosctl params`).
    pub fn set(&self, sets: &[String]) -> Result<BalancerConfig, crate::policy::ParamError> {
        let mut t = self.params.lock().unwrap_or_else(|p| p.into_inner());
        let new = params::with(&t, sets)?;
        *t = new.clone();
        Ok(new)
    }

    /// Puts `params` in force whole (a reload of the configuration), after
    /// the same checks as `mosctl params`; returns the keys that changed.
    pub fn replace(
        &self,
        params: BalancerConfig,
    ) -> Result<Vec<String>, crate::policy::ParamError> {
        params::validate(&params)?;
        let mut t = self.params.lock().unwrap_or_else(|p| p.into_inner());
        let before = params::rows(&t);
        let changed = params::rows(&params)
            .into_iter()
            .zip(before)
            .filter(|(new, old)| new.1 != old.1)
            .map(|(new, _)| format!("{}={}", new.0, new.1))
            .collect();
        *t = params;
        Ok(changed)
    }

    /// How many processes started here run elsewhere, as homed last said.
    pub fn away(&self) -> u32 {
        self.away.load(Ordering::Relaxed)
    }

    /// Records how many processes started here run elsewhere (the balancer
    /// thread, from homed's list).
    pub fn set_away(&self, away: u32) {
        self.away.store(away, Ordering::Relaxed);
    }
}

/// The local node: measures itself and feeds the dissemination.
pub struct LocalNode {
    me: LoadEntry,
    source: LoadSource,
    calc: LoadCalculator,
    last_fold_ms: u64,
    snapshot: Arc<Mutex<Snapshot>>,
    balance: Option<Arc<Shared>>,
}

/// The load average is folded once a second (ARCHITECTURE.md section 7).
const FOLD_MS: u64 = 1000;

impl LocalNode {
    /// A node publishing `me` (name, address, generation), measured by
    /// `source`, with relative CPU speed `speed`.
    pub fn new(
        me: LoadEntry,
        source: LoadSource,
        speed: f64,
        snapshot: Arc<Mutex<Snapshot>>,
    ) -> Result<LocalNode, LoadError> {
        let cpus = source.capacity_cpus().unwrap_or(me.cpus);
        let calc = LoadCalculator::new(cpus, speed)?;
        Ok(LocalNode {
            me,
            source,
            calc,
            last_fold_ms: 0,
            snapshot,
            balance: None,
        })
    }

    /// Publishes, in this node's entry, how many of its processes run
    /// elsewhere, as the balancer last learnt from homed.
    pub fn with_balance(mut self, shared: Arc<Shared>) -> Self {
        self.balance = Some(shared);
        self
    }

    /// Where the load figures come from, for logs and `mosctl status`.
    pub fn source_name(&self) -> String {
        describe(self.source.scope())
    }

    /// Publishes the snapshot without waiting for a tick.
    pub fn publish_now(&mut self, now_ms: u64, diss: &Dissemination) {
        self.publish(now_ms, diss);
    }

    fn own_entry(&self) -> LoadEntry {
        let mut e = self.me.clone();
        e.accepts_guests = guests::accepting();
        e.guests = u32::try_from(guests::list().len()).unwrap_or(u32::MAX);
        e.away = self.balance.as_ref().map_or(0, |s| s.away());
        e
    }
}

impl Node for LocalNode {
    fn tick(&mut self, now_ms: u64, diss: &mut Dissemination) -> Vec<Action> {
        match self.source.run_queue() {
            Ok(rq) => self.calc.sample(rq),
            Err(e) => tracing::warn!(error = %e, "cannot sample the run queue"),
        }
        if now_ms.saturating_sub(self.last_fold_ms) >= FOLD_MS {
            self.last_fold_ms = now_ms;
            // Capacity can change at run time (a cgroup limit edited).
            match self.source.capacity_cpus() {
                Ok(cpus) => {
                    if let Err(e) = self.calc.set_capacity(cpus, self.calc.speed()) {
                        tracing::warn!(error = %e, "ignoring a bad capacity reading");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the CPU capacity"),
            }
            self.me.load = self.calc.fold();
            self.me.cpus = self.calc.cpus();
            match self.source.free_memory_bytes() {
                Ok(free) => self.me.free_mem_bytes = free,
                Err(e) => tracing::warn!(error = %e, "cannot read free memory"),
            }
        }
        diss.tick(now_ms, self.own_entry())
    }

    fn publish(&mut self, now_ms: u64, diss: &Dissemination) {
        let views = diss.nodes(now_ms);
        let mut nodes: Vec<NodeInfo> = views
            .into_iter()
            .map(|v| NodeInfo {
                state: if v.alive {
                    NodeState::Alive
                } else {
                    NodeState::Dead
                },
                is_self: v.is_self,
                entry: v.entry,
            })
            .collect();
        if !nodes.iter().any(|n| n.is_self) {
            nodes.push(NodeInfo {
                entry: self.own_entry(),
                state: NodeState::Alive,
                is_self: true,
            });
        }
        let status = LocalStatus {
            entry: self.own_entry(),
            load_source: self.source_name(),
            alive_nodes: nodes.iter().filter(|n| n.state == NodeState::Alive).count(),
            known_nodes: nodes.len(),
            protocol: PROTOCOL_VERSION,
        };
        let mut snap = match self.snapshot.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        snap.nodes = nodes;
        snap.status = Some(status);
    }
}

/// Names a measurement scope for people: `machine` or the cgroup path.
pub fn describe(scope: &Scope) -> String {
    match scope {
        Scope::Machine => "machine".into(),
        Scope::CgroupV1 { dir, .. } => format!("cgroup v1 {}", dir.display()),
        Scope::CgroupV2 { dir } => format!("cgroup v2 {}", dir.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_parameters_change_all_or_nothing() {
        let s = Shared::new(BalancerConfig::default());
        assert!(s.set(&["margin=0.75".into(), "bogus=1".into()]).is_err());
        assert_eq!(s.params(), BalancerConfig::default());
        let t = s.set(&["margin=0.75".into()]).unwrap();
        assert_eq!(t.margin, 0.75);
        assert_eq!(s.params().margin, 0.75);
        let reloaded = BalancerConfig {
            margin: 0.25,
            ..Default::default()
        };
        assert_eq!(
            s.replace(reloaded).unwrap(),
            vec!["margin=0.25".to_string()]
        );
        let bad = BalancerConfig {
            consider_interval_ms: 1,
            ..Default::default()
        };
        assert!(s.replace(bad).is_err());
        assert_eq!(s.params().margin, 0.25);
    }
}
