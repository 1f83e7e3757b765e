//! Load-information dissemination (ARCHITECTURE.md section 7), after MOSIX's
//! `infod`: every interval a node sends its own entry and the freshest part of
//! what it knows to ONE node chosen at random, and merges what it receives.
//! There is no master: a node joins by gossiping to a seed address and leaves
//! by falling silent.
//!
//! # Time
//!
//! Clocks of different nodes are not synchronised, so entries carry an age,
//! never a timestamp. On receipt an entry's age is turned into the receiver's
//! own monotonic time base (`info_ms = now_ms - age_ms`); on sending, back into
//! an age relative to the sender's `now_ms`. Transit time is not added to the
//! age, so relayed news looks up to one transit time (plus 1 ms of rounding)
//! fresher per hop. News of a stopped node still ages at one second per
//! second while it gains at most a few milliseconds per second this way, so
//! death detection is delayed by well under 1 % of `dead_after_ms`.
//!
//! # Merging
//!
//! An entry with a higher `generation` (the node restarted) always replaces
//! the one held; with the same generation the fresher one (smaller age in our
//! time base) wins. Entries about ourselves are never taken from others.
//! Entries with absurd values (empty or overlong name, NaN/infinite/negative
//! load, non-positive capacity or speed, an unusable address, an age beyond
//! `forget_after_ms`) are dropped and counted; a message whose *sender* entry
//! is absurd is dropped whole.
//!
//! # Liveness
//!
//! Two beliefs are kept apart, because only one of them can be had for every
//! node at constant cost:
//!
//! - **Fresh or stale** (what [`NodeView::alive`] reports): a node is usable
//!   (a migration target, passed on in our windows) while we hold news of it
//!   younger than `dead_after_ms`. This needs no message of its own: an
//!   entry's age says it all. A stopped node publishes nothing, so every copy
//!   of its last news, wherever it travelled, passes `dead_after_ms` within
//!   `dead_after_ms` of its stop (plus the relaying slack of *Time* above):
//!   every node in the cluster, at any size, stops using a stopped node
//!   within `dead_after_ms` (4 s with the defaults).
//! - **Dead** ([`Action::NodeDied`]): declared only for a node we *asked*.
//!   A node whose news grows older than `suspect_after_ms` is a suspect and
//!   is probed (a gossip with `want_reply: true`, whose answer is fresh news
//!   straight from it). It is declared dead when its news is older than
//!   `dead_after_ms` AND a probe sent since that news has gone unanswered for
//!   at least `interval_ms`. A node whose news went stale without our probing
//!   it stays *stale*: not used, not passed on, not reported dead, and
//!   forgotten after `forget_after_ms` unless news of it comes back.
//!
//! Why not "dead when no news for `dead_after_ms`" for everyone: keeping
//! fresh news of all N nodes at all N nodes needs about N² entry deliveries
//! per `dead_after_ms`, whatever the scheme. Each message carries at most
//! `window_size` entries and only the freshest are passed on, so in a
//! cluster much larger than the window most of a node's table is stale at
//! any moment; judging all of them dead was false, and probing all of them
//! made the cost per node grow with N (measured before: 3.0 / 15.5 / 38
//! messages per node per second at 10 / 100 / 200 nodes).
//!
//! The cost per node is therefore bounded by constants independent of N:
//! per interval one regular gossip, at most `probes_per_interval` probes
//! (default 1), one revival try every `revive_every` intervals, and replies
//! only when asked (on average as many as the probes and unknown-seed
//! gossips the cluster sends, so at most about one more per interval).
//! Probes go first to suspects not yet probed since their latest news,
//! freshest news first: the nodes whose news just went stale are the ones
//! we were relying on, and probing them first gives a prompt verdict on
//! them. If the random target of the regular gossip is itself a suspect,
//! that gossip doubles as its probe, so the stale part of a big table is
//! sampled at random too.
//!
//! Measured in the simulator (`bench --bin dissemination`): 2.5 / 6.4 /
//! 7.7 messages per node per second at 10 / 100 / 1,000 nodes (busiest node
//! 2.8 / 7.3 / 9.7): bounded, where the old rule (every stale node probed)
//! cost 3.0 / 15.5 / 38 at 10 / 100 / 200 nodes. The rate rises from 10 to
//! 100 nodes because a small cluster rarely has suspects; past that it is
//! flat.
//!
//! In a small cluster (up to about the window size) every node holds fresh
//! news of every other, so every node probes a stopped node within about
//! `suspect_after_ms` + `interval_ms` and declares it dead at about
//! `dead_after_ms` (+ one tick), within 5 s. In a big cluster the nodes that
//! relied on it (held it fresh when it stopped) declare it dead, and the
//! rest see its entry go stale within `dead_after_ms`.
//!
//! Dead nodes are not gossiped about, nor gossiped to, except for an
//! occasional revival try (every `revive_every` intervals, one random dead
//! node or seed, asking for a reply) so a node that comes back is found again
//! even if it does not know us. A dead node comes back to life only on news
//! younger than `suspect_after_ms` (hysteresis): copies of its last news
//! travel different paths, and a copy a little fresher than the one that
//! made us bury it must not make it flap between dead and alive. A stale node
//! is fresh again on any news younger than `dead_after_ms`.
//!
//! # Pushing changes
//!
//! A window of the freshest entries spreads the news of one node no faster
//! than that of any other: in a cluster much larger than the window, a
//! node whose load just rose reaches every table only as fast as the
//! whole table is refreshed (86 s at 1,000 nodes with a 16-entry window).
//! So an entry whose load we learn changed by at least `change_threshold`
//! processes (or whose node restarted) goes ahead of the freshest ones in
//! every window we send for `push_changed_ms`, in at most `changed_slots`
//! slots (a quarter of the window), latest change first: a rumour, pushed by every node that heard
//! it, which reaches N nodes in about log2(N) + ln(N) intervals. Measured
//! (`bench --bin dissemination`, seed 1, 1,000 nodes): every node holds a
//! newly loaded node's load after 1.6 s, against 86.1 s with the freshest
//! entries only and 42.6 s with a window of 32; messages per node per
//! second 7.65 either way. The slots are a quarter of the window: when 50
//! other nodes' loads change every second, 8 slots of 16 left too little
//! room for fresh news (the last node heard after 115 s, against 86 s
//! without pushing), 4 slots 76 s. The
//! message count and size do not change (one gossip per interval, at most
//! `window_size` entries), and the other slots still carry the freshest
//! entries, so news of quiet nodes keeps flowing when many loads change.
//!
//! # Failed sends
//!
//! [`Dissemination::on_send_failed`] is a hint, not a verdict: a node we
//! cannot reach may still be alive (news of it can arrive through others, the
//! fault may be on our side or in one link). After `fail_hint_threshold`
//! consecutive failures the node is no longer chosen as the target of the
//! regular gossip (so we stop wasting our one message per interval on it),
//! but it is still probed when its news gets old, and it is never marked dead
//! for this reason. The hint expires `dead_after_ms` after the last failure,
//! and is cleared by any message received directly from the node.
//!
//! # Memory
//!
//! At most `max_nodes` nodes are held. When full, a newcomer evicts the dead
//! node with the oldest news, else the alive node with the oldest news if the
//! newcomer's news is fresher, else the newcomer is dropped. Received windows
//! are processed up to `max_nodes` entries.

use mosix_proto::config::BalancerConfig;
use mosix_proto::msg::{LoadEntry, PeerMessage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasherDefault;
use std::net::SocketAddr;

/// How often the table is scanned for nodes to forget, in ms.
const FORGET_SCAN_MS: u64 = 5_000;

/// Longest node name accepted from the network, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// Tunables of the dissemination. Those the configuration file sets are
/// taken from its `[balancer]` section ([`from_config`](Self::from_config),
/// where their defaults are: MOSIX `infod`'s figures and the detection
/// bounds the cluster promises, dead within 5 s); [`Default`] is what a
/// file without that section gives.
#[derive(Debug, Clone, PartialEq)]
pub struct DisseminationParams {
    /// Period of the regular gossip, in ms (`balancer.info_interval_ms`).
    pub interval_ms: u64,
    /// Most entries (besides the sender's own) one message carries
    /// (`balancer.window`).
    pub window_size: usize,
    /// News older than this makes a node a suspect, to be probed
    /// (`balancer.suspect_after_ms`).
    pub suspect_after_ms: u64,
    /// News older than this makes a node stale (not used); dead if a probe
    /// since that news went unanswered (see the module docs;
    /// `balancer.dead_after_ms`).
    pub dead_after_ms: u64,
    /// Most probes sent per interval besides the regular gossip (each
    /// suspect gets at most one per interval); it bounds the cost per node
    /// whatever the cluster's size (see the module docs).
    pub probes_per_interval: usize,
    /// Every this many intervals, try one random dead node or seed (0: never).
    pub revive_every: u64,
    /// Consecutive send failures after which a node is no longer a regular
    /// gossip target (see the module docs); 0 disables the hint.
    pub fail_hint_threshold: u32,
    /// Most nodes held in memory.
    pub max_nodes: usize,
    /// Dead nodes are forgotten when their news is this old; entries older
    /// than this are rejected as absurd (`balancer.forget_after_ms`).
    pub forget_after_ms: u64,
    /// For this long after we learn that a node's load changed by at least
    /// `change_threshold` processes, its entry goes ahead of the freshest
    /// ones in our windows (see *Pushing changes* in the module docs); 0:
    /// windows carry only the freshest entries (`balancer.push_changed_ms`).
    pub push_changed_ms: u64,
    /// Most window slots that changed entries may take; the rest carries
    /// the freshest entries, so news of quiet nodes keeps flowing (a
    /// quarter of the window).
    pub changed_slots: usize,
    /// A change of a node's load that counts as news, in processes at that
    /// node (load difference times its CPUs times its speed).
    pub change_threshold: f64,
}

impl DisseminationParams {
    /// The dissemination a node's configuration asks for; what the file
    /// does not set is fixed here.
    pub fn from_config(b: &BalancerConfig) -> Self {
        Self {
            interval_ms: b.info_interval_ms,
            window_size: b.window,
            suspect_after_ms: b.suspect_after_ms,
            dead_after_ms: b.dead_after_ms,
            probes_per_interval: 1,
            revive_every: 4,
            fail_hint_threshold: 2,
            max_nodes: 4096,
            forget_after_ms: b.forget_after_ms,
            push_changed_ms: b.push_changed_ms,
            // A quarter of the window: the rest keeps news of quiet nodes
            // flowing when many loads change (see the module docs).
            changed_slots: (b.window / 4).max(1),
            change_threshold: 0.5,
        }
    }
}

impl Default for DisseminationParams {
    fn default() -> Self {
        Self::from_config(&BalancerConfig::default())
    }
}

/// Why a [`Dissemination`] could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DisseminationError {
    /// interval_ms is 0; set a gossip period such as 500 ms
    #[error("interval_ms is 0; set a gossip period such as 500 ms")]
    ZeroInterval,
    /// window_size is 0; a gossip must carry some entries (infod uses 16-20)
    #[error("window_size is 0; a gossip must carry some entries (infod uses 16-20)")]
    ZeroWindow,
    /// max_nodes is 0; allow at least the cluster's size
    #[error("max_nodes is 0; allow at least the cluster's size")]
    ZeroMaxNodes,
    /// the timeouts must grow: interval_ms <= suspect_after_ms < dead_after_ms < forget_after_ms
    #[error(
        "timeouts out of order (interval {interval} ms, suspect {suspect} ms, dead {dead} ms, forget {forget} ms): they must satisfy interval <= suspect < dead < forget"
    )]
    TimeoutOrder {
        /// `interval_ms`
        interval: u64,
        /// `suspect_after_ms`
        suspect: u64,
        /// `dead_after_ms`
        dead: u64,
        /// `forget_after_ms`
        forget: u64,
    },
    /// change_threshold {0} is not a finite number >= 0; set it to e.g. 0.5 (half a process)
    #[error(
        "change_threshold {0} is not a finite number >= 0; set it to e.g. 0.5 (half a process)"
    )]
    BadChangeThreshold(f64),
    /// our own entry is unusable: {0}; fix the node's name or address in the configuration
    #[error("our own entry is unusable: {0}; fix the node's name or address in the configuration")]
    BadOwnEntry(EntryRejection),
}

impl DisseminationParams {
    /// Checks that the parameters make sense together.
    pub fn validate(&self) -> Result<(), DisseminationError> {
        if self.interval_ms == 0 {
            return Err(DisseminationError::ZeroInterval);
        }
        if self.window_size == 0 {
            return Err(DisseminationError::ZeroWindow);
        }
        if self.max_nodes == 0 {
            return Err(DisseminationError::ZeroMaxNodes);
        }
        if !(self.change_threshold.is_finite() && self.change_threshold >= 0.0) {
            return Err(DisseminationError::BadChangeThreshold(
                self.change_threshold,
            ));
        }
        if !(self.interval_ms <= self.suspect_after_ms
            && self.suspect_after_ms < self.dead_after_ms
            && self.dead_after_ms < self.forget_after_ms)
        {
            return Err(DisseminationError::TimeoutOrder {
                interval: self.interval_ms,
                suspect: self.suspect_after_ms,
                dead: self.dead_after_ms,
                forget: self.forget_after_ms,
            });
        }
        Ok(())
    }
}

/// Why an entry received from the network was dropped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EntryRejection {
    /// the node name is empty
    #[error("the node name is empty")]
    EmptyName,
    /// the node name is longer than 255 bytes or holds control characters
    #[error("the node name is longer than 255 bytes or holds control characters")]
    BadName,
    /// the address has no IP or no port
    #[error("the address {0} has no IP or no port")]
    BadAddress(SocketAddr),
    /// the load is NaN, infinite or negative
    #[error("the load {0} is NaN, infinite or negative")]
    BadLoad(f64),
    /// the CPU capacity or speed is not a positive finite number
    #[error("the CPU capacity {cpus} or speed {speed} is not a positive finite number")]
    BadCapacity {
        /// claimed CPU count
        cpus: f64,
        /// claimed speed
        speed: f64,
    },
    /// the age is beyond any we keep
    #[error("the age {0} ms is beyond any we keep")]
    AbsurdAge(u64),
}

/// Checks one entry's values; `max_age_ms` is the oldest news we keep.
pub fn validate_entry(e: &LoadEntry, max_age_ms: u64) -> Result<(), EntryRejection> {
    if e.name.is_empty() {
        return Err(EntryRejection::EmptyName);
    }
    if e.name.len() > MAX_NAME_LEN || e.name.chars().any(char::is_control) {
        return Err(EntryRejection::BadName);
    }
    if e.address.ip().is_unspecified() || e.address.port() == 0 {
        return Err(EntryRejection::BadAddress(e.address));
    }
    if !e.load.is_finite() || e.load < 0.0 {
        return Err(EntryRejection::BadLoad(e.load));
    }
    if !e.cpus.is_finite() || e.cpus <= 0.0 || !e.speed.is_finite() || e.speed <= 0.0 {
        return Err(EntryRejection::BadCapacity {
            cpus: e.cpus,
            speed: e.speed,
        });
    }
    if e.age_ms > max_age_ms {
        return Err(EntryRejection::AbsurdAge(e.age_ms));
    }
    Ok(())
}

/// What the daemon must do after feeding the state machine.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send `msg` to the `remoted` listening at `to`. If it cannot be sent,
    /// report it with [`Dissemination::on_send_failed`].
    Send {
        /// Destination daemon.
        to: SocketAddr,
        /// The message.
        msg: PeerMessage,
    },
    /// A node we did not know appeared (log it; the migration logic may now
    /// consider it).
    NodeJoined {
        /// Its name.
        name: String,
        /// Where its `remoted` listens.
        address: SocketAddr,
    },
    /// A node we believed dead is heard from again.
    NodeAlive {
        /// Its name.
        name: String,
    },
    /// A node we relied on has given no news for `dead_after_ms` and did
    /// not answer our probe: stop sending it work.
    NodeDied {
        /// Its name.
        name: String,
    },
    /// A node restarted (its generation grew): whatever it hosted for us in
    /// its earlier life is gone.
    NodeRestarted {
        /// Its name.
        name: String,
        /// Its new generation.
        generation: u64,
    },
}

/// One line of `mosctl nodes`: what we believe about a node right now.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    /// The node's entry, `age_ms` relative to the `now_ms` asked about.
    pub entry: LoadEntry,
    /// Whether we hold news fresher than `dead_after_ms` (and have not
    /// declared it dead): the node may be used.
    pub alive: bool,
    /// Whether its news is older than `suspect_after_ms` (probing it).
    pub suspect: bool,
    /// Whether this is our own node.
    pub is_self: bool,
    /// Consecutive failed sends to it (a hint, see the module docs).
    pub send_failures: u32,
}

/// Counters for monitoring and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DisseminationStats {
    /// Messages handed out in [`Action::Send`], of all kinds.
    pub sent: u64,
    /// Of which probes (`want_reply` to a suspect).
    pub probes: u64,
    /// Of which answers to a `want_reply`.
    pub replies: u64,
    /// Of which revival tries to dead nodes or unknown seeds.
    pub revival_tries: u64,
    /// Messages received.
    pub received: u64,
    /// Messages dropped whole (absurd sender entry, or our own name).
    pub rejected_messages: u64,
    /// Window entries dropped as absurd.
    pub rejected_entries: u64,
    /// Failed sends reported.
    pub send_failures: u64,
}

#[derive(Debug, Clone)]
struct Node {
    entry: LoadEntry,
    /// When the entry was fresh, in our monotonic time base (may be negative
    /// early in our life).
    info_ms: i64,
    /// False once declared dead (a probe went unanswered); a node whose
    /// news is merely stale keeps `alive` (see the module docs).
    alive: bool,
    last_probe_ms: Option<u64>,
    failures: u32,
    last_failure_ms: u64,
    /// When (our time) we last learned that its load changed notably.
    changed_ms: Option<u64>,
}

/// The dissemination state machine: feed it ticks and received messages, do
/// the [`Action`]s it returns. Pure: no sockets, no clock, a seeded RNG.
#[derive(Debug)]
pub struct Dissemination {
    params: DisseminationParams,
    me: LoadEntry,
    /// By name. A hash map (looked up for every entry of every message
    /// received; a B-tree of string keys was the simulator's hot spot at
    /// 1,000 nodes) with a fixed hasher, so iteration order, and with it
    /// every seeded random choice, is reproducible.
    nodes: HashMap<String, Node, BuildHasherDefault<DefaultHasher>>,
    /// Address -> name of every node in `nodes`, so lookups by address do
    /// not scan the table (it holds up to `max_nodes` entries).
    by_addr: BTreeMap<SocketAddr, String>,
    /// Nodes with a probe sent since their latest news: the only ones that
    /// can be declared dead, so the check on every tick looks at these
    /// alone instead of the whole table.
    probed: BTreeSet<String>,
    /// When the table is next scanned for nodes to forget.
    next_forget_scan_ms: u64,
    seeds: Vec<SocketAddr>,
    seed_failures: BTreeMap<SocketAddr, (u32, u64)>,
    /// Seeds whose node advertises another address (e.g. a seed given as
    /// 127.0.0.1:port for a node advertising 10.0.0.1:port): seed -> name.
    seed_names: BTreeMap<SocketAddr, String>,
    rng: StdRng,
    next_gossip_ms: Option<u64>,
    intervals: u64,
    stats: DisseminationStats,
}

impl Node {
    /// Records a probe sent at `now_ms`. While an earlier probe sent since
    /// the latest news is still unanswered, its time is kept: the verdict
    /// counts from the first question, or a node gossiped to every interval
    /// would never be judged.
    fn probed_at(&mut self, now_ms: u64) {
        if self.last_probe_ms.is_none_or(|p| signed(p) <= self.info_ms) {
            self.last_probe_ms = Some(now_ms);
        }
    }
}

fn signed(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

impl Dissemination {
    /// A node named and addressed by `me` (its `generation` identifies this
    /// life of the node), that looks for the cluster at `seeds` (our own
    /// address among them is ignored). `rng_seed` makes the choice of gossip
    /// targets reproducible.
    pub fn new(
        params: DisseminationParams,
        me: LoadEntry,
        seeds: Vec<SocketAddr>,
        rng_seed: u64,
    ) -> Result<Self, DisseminationError> {
        params.validate()?;
        validate_entry(&me, u64::MAX).map_err(DisseminationError::BadOwnEntry)?;
        let mut seeds: Vec<SocketAddr> = seeds.into_iter().filter(|s| *s != me.address).collect();
        seeds.sort();
        seeds.dedup();
        Ok(Self {
            params,
            me: LoadEntry { age_ms: 0, ..me },
            nodes: HashMap::default(),
            by_addr: BTreeMap::new(),
            probed: BTreeSet::new(),
            next_forget_scan_ms: 0,
            seeds,
            seed_failures: BTreeMap::new(),
            seed_names: BTreeMap::new(),
            rng: StdRng::seed_from_u64(rng_seed),
            next_gossip_ms: None,
            intervals: 0,
            stats: DisseminationStats::default(),
        })
    }

    /// The parameters in force.
    pub fn params(&self) -> &DisseminationParams {
        &self.params
    }

    /// Counters so far.
    pub fn stats(&self) -> &DisseminationStats {
        &self.stats
    }

    /// Our own entry as last given to [`tick`](Self::tick).
    pub fn me(&self) -> &LoadEntry {
        &self.me
    }

    /// Call at least every `interval_ms` (more often is fine, e.g. on every
    /// load-sampling tick) with our current entry. The identity fields of
    /// `own` (name, address, generation) are ignored: they are fixed at
    /// [`new`](Self::new); its load, capacity, speed and memory are published.
    pub fn tick(&mut self, now_ms: u64, own: LoadEntry) -> Vec<Action> {
        self.me = LoadEntry {
            name: std::mem::take(&mut self.me.name),
            address: self.me.address,
            generation: self.me.generation,
            age_ms: 0,
            ..own
        };
        let mut actions = Vec::new();
        self.update_liveness(now_ms, &mut actions);
        if let Some(next) = self.next_gossip_ms
            && now_ms < next
        {
            return actions;
        }
        self.next_gossip_ms = Some(match self.next_gossip_ms {
            Some(next) if next + self.params.interval_ms > now_ms => next + self.params.interval_ms,
            _ => now_ms + self.params.interval_ms,
        });
        self.intervals += 1;

        let mut targeted: Vec<SocketAddr> = Vec::new();
        // The regular gossip to one random node.
        if let Some(to) = self.pick_gossip_target(now_ms) {
            let name = self.name_at(to);
            let suspect = name.as_deref().is_some_and(|n| self.is_suspect(n, now_ms));
            // An unknown seed is asked to answer, so a fresh node learns the
            // cluster in one round trip; a suspect target gets its probe.
            let want_reply = name.is_none() || suspect;
            if suspect && let Some(n) = name.as_deref().and_then(|n| self.nodes.get_mut(n)) {
                n.probed_at(now_ms);
                self.probed.insert(n.entry.name.clone());
                self.stats.probes += 1;
            }
            actions.push(self.gossip(now_ms, to, name.as_deref(), want_reply));
            targeted.push(to);
        }
        // Probes to suspects.
        for name in self.pick_probes(now_ms, &targeted) {
            if let Some(n) = self.nodes.get_mut(&name) {
                n.probed_at(now_ms);
                self.probed.insert(name.clone());
                let to = n.entry.address;
                self.stats.probes += 1;
                actions.push(self.gossip(now_ms, to, Some(&name), true));
                targeted.push(to);
            }
        }
        // Now and then, one dead node or seed, in case it came back.
        if self.params.revive_every > 0
            && self.intervals % self.params.revive_every == 0
            && let Some(to) = self.pick_revival(&targeted)
        {
            let name = self.name_at(to);
            self.stats.revival_tries += 1;
            actions.push(self.gossip(now_ms, to, name.as_deref(), true));
        }
        actions
    }

    /// Feed a message received from the peer at `from` (the link's peer
    /// address). Answers go to the address the sender advertises in its
    /// entry, as the peer address of an incoming link is an ephemeral port;
    /// but if `from` is one of our seeds (an answer on a link we opened to
    /// it), that seed is known from then on as the sender, even when the
    /// seed was configured under another address than the node advertises.
    pub fn on_message(&mut self, now_ms: u64, from: SocketAddr, msg: PeerMessage) -> Vec<Action> {
        let mut actions = Vec::new();
        #[allow(unreachable_patterns)] // other peer messages belong to other modules
        let (sender, window, want_reply) = match msg {
            PeerMessage::Gossip {
                sender,
                window,
                want_reply,
            } => (sender, window, want_reply),
            _ => return actions,
        };
        self.stats.received += 1;
        if let Err(why) = validate_entry(&sender, self.params.forget_after_ms) {
            self.stats.rejected_messages += 1;
            // Names from the network are logged with Debug, which escapes
            // control characters.
            tracing::warn!(
                %from,
                sender = ?sender.name,
                %why,
                "dropping gossip: the sender's own entry is unusable"
            );
            return actions;
        }
        if sender.name == self.me.name {
            self.stats.rejected_messages += 1;
            tracing::warn!(
                %from,
                name = ?sender.name,
                address = %sender.address,
                "dropping gossip from a node that uses our own name; give every node a unique name"
            );
            return actions;
        }
        self.seed_failures.remove(&sender.address);
        if from != sender.address && self.seeds.contains(&from) {
            // The link to a seed answered in the name of a node advertising
            // another address: the seed is that node.
            self.seed_failures.remove(&from);
            self.seed_names.insert(from, sender.name.clone());
        }
        let sender_name = sender.name.clone();
        let reply_to = sender.address;
        self.merge(now_ms, sender, &mut actions);
        if let Some(n) = self.nodes.get_mut(&sender_name) {
            n.failures = 0;
        }
        for e in window.into_iter().take(self.params.max_nodes) {
            if e.name == self.me.name {
                continue;
            }
            if let Err(why) = validate_entry(&e, self.params.forget_after_ms) {
                self.stats.rejected_entries += 1;
                tracing::debug!(%from, entry = ?e.name, %why, "dropping a gossiped entry");
                continue;
            }
            self.merge(now_ms, e, &mut actions);
        }
        if want_reply {
            self.stats.replies += 1;
            actions.push(self.gossip(now_ms, reply_to, Some(&sender_name), false));
        }
        actions
    }

    /// Report that a [`Action::Send`] to `to` could not be delivered. This is
    /// a hint only (see the module docs): it never marks a node dead.
    pub fn on_send_failed(&mut self, now_ms: u64, to: SocketAddr) {
        self.stats.send_failures += 1;
        if let Some(n) = self
            .by_addr
            .get(&to)
            .and_then(|name| self.nodes.get_mut(name))
        {
            n.failures = n.failures.saturating_add(1);
            n.last_failure_ms = now_ms;
        } else if self.seeds.contains(&to) {
            let f = self.seed_failures.entry(to).or_insert((0, now_ms));
            f.0 = f.0.saturating_add(1);
            f.1 = now_ms;
        }
    }

    /// Everything we know, ourselves first, then by name; ages relative to
    /// `now_ms`.
    pub fn nodes(&self, now_ms: u64) -> Vec<NodeView> {
        let mut out = Vec::with_capacity(self.nodes.len() + 1);
        out.push(NodeView {
            entry: self.me.clone(),
            alive: true,
            suspect: false,
            is_self: true,
            send_failures: 0,
        });
        for n in self.nodes.values() {
            out.push(NodeView {
                entry: LoadEntry {
                    age_ms: self.age(n, now_ms),
                    ..n.entry.clone()
                },
                alive: n.alive && self.age(n, now_ms) <= self.params.dead_after_ms,
                suspect: n.alive && self.age(n, now_ms) > self.params.suspect_after_ms,
                is_self: false,
                send_failures: n.failures,
            });
        }
        out[1..].sort_unstable_by(|a, b| a.entry.name.cmp(&b.entry.name));
        out
    }

    fn age(&self, n: &Node, now_ms: u64) -> u64 {
        u64::try_from(signed(now_ms).saturating_sub(n.info_ms)).unwrap_or(0)
    }

    fn is_suspect(&self, name: &str, now_ms: u64) -> bool {
        self.nodes
            .get(name)
            .is_some_and(|n| n.alive && self.age(n, now_ms) > self.params.suspect_after_ms)
    }

    fn name_at(&self, addr: SocketAddr) -> Option<String> {
        self.by_addr.get(&addr).cloned()
    }

    /// Removes a node from the table and its indexes.
    fn remove_node(&mut self, name: &str) {
        if let Some(n) = self.nodes.remove(name)
            && self.by_addr.get(&n.entry.address).map(String::as_str) == Some(name)
        {
            self.by_addr.remove(&n.entry.address);
        }
        self.probed.remove(name);
    }

    fn update_liveness(&mut self, now_ms: u64, actions: &mut Vec<Action>) {
        let dead_after = self.params.dead_after_ms;
        let answer_within = self.params.interval_ms;
        let now = signed(now_ms);
        let mut settled = Vec::new();
        for name in &self.probed {
            let Some(n) = self.nodes.get_mut(name) else {
                settled.push(name.clone());
                continue;
            };
            let Some(p) = n.last_probe_ms else {
                settled.push(name.clone());
                continue;
            };
            // News from the same millisecond as the probe (e.g. an answer
            // with no transit time) counts as the answer.
            if signed(p) <= n.info_ms || !n.alive {
                settled.push(name.clone());
                continue;
            }
            let age = u64::try_from(now.saturating_sub(n.info_ms)).unwrap_or(0);
            // Asked after our latest news, and no answer in time.
            if age > dead_after && now_ms.saturating_sub(p) >= answer_within {
                n.alive = false;
                actions.push(Action::NodeDied {
                    name: n.entry.name.clone(),
                });
                settled.push(name.clone());
            }
        }
        for name in settled {
            self.probed.remove(&name);
        }
        // Forgetting is a memory bound, not a verdict: a scan of the whole
        // table every few seconds is enough.
        if now_ms >= self.next_forget_scan_ms {
            self.next_forget_scan_ms = now_ms.saturating_add(FORGET_SCAN_MS);
            let forget: Vec<String> = self
                .nodes
                .values()
                .filter(|n| self.age(n, now_ms) > self.params.forget_after_ms)
                .map(|n| n.entry.name.clone())
                .collect();
            for name in forget {
                self.remove_node(&name);
            }
        }
    }

    /// Whether we have declared `name` dead (an unanswered probe after its
    /// news went stale); false for unknown and merely stale nodes.
    pub fn believed_dead(&self, name: &str) -> bool {
        self.nodes.get(name).is_some_and(|n| !n.alive)
    }

    /// What we believe about one node (not ourselves), `None` if unknown;
    /// cheaper than [`nodes`](Self::nodes) when only one is wanted.
    pub fn node(&self, name: &str, now_ms: u64) -> Option<NodeView> {
        self.nodes.get(name).map(|n| {
            let age = self.age(n, now_ms);
            NodeView {
                entry: LoadEntry {
                    age_ms: age,
                    ..n.entry.clone()
                },
                alive: n.alive && age <= self.params.dead_after_ms,
                suspect: n.alive && age > self.params.suspect_after_ms,
                is_self: false,
                send_failures: n.failures,
            }
        })
    }

    fn merge(&mut self, now_ms: u64, e: LoadEntry, actions: &mut Vec<Action>) {
        let info_ms = signed(now_ms).saturating_sub(signed(e.age_ms));
        let fresh = e.age_ms <= self.params.dead_after_ms;
        // Hysteresis, see the module docs.
        let revives = e.age_ms <= self.params.suspect_after_ms;
        match self.nodes.get_mut(&e.name) {
            Some(n) => {
                let restarted = e.generation > n.entry.generation;
                if !(restarted || (e.generation == n.entry.generation && info_ms > n.info_ms)) {
                    return;
                }
                let cap = e.cpus * e.speed;
                let delta = (e.load - n.entry.load).abs() * cap;
                if restarted || delta >= self.params.change_threshold {
                    n.changed_ms = Some(now_ms);
                }
                if restarted {
                    actions.push(Action::NodeRestarted {
                        name: e.name.clone(),
                        generation: e.generation,
                    });
                    n.failures = 0;
                }
                // Only a restart can bring older news; such news of a node
                // not declared dead just leaves it stale.
                if !n.alive && revives {
                    n.alive = true;
                    actions.push(Action::NodeAlive {
                        name: e.name.clone(),
                    });
                }
                if n.entry.address != e.address {
                    if self.by_addr.get(&n.entry.address) == Some(&e.name) {
                        self.by_addr.remove(&n.entry.address);
                    }
                    self.by_addr.insert(e.address, e.name.clone());
                }
                n.entry = e;
                n.info_ms = info_ms;
            }
            None => {
                // Stale news of a node we never knew is of no use.
                if !fresh || !self.make_room(info_ms) {
                    return;
                }
                actions.push(Action::NodeJoined {
                    name: e.name.clone(),
                    address: e.address,
                });
                self.by_addr.insert(e.address, e.name.clone());
                self.nodes.insert(
                    e.name.clone(),
                    Node {
                        entry: e,
                        info_ms,
                        alive: true,
                        last_probe_ms: None,
                        failures: 0,
                        last_failure_ms: 0,
                        changed_ms: None,
                    },
                );
            }
        }
    }

    /// Frees a slot for a newcomer whose news dates from `info_ms`, if the
    /// table is full; false if the newcomer must be dropped.
    fn make_room(&mut self, info_ms: i64) -> bool {
        if self.nodes.len() < self.params.max_nodes {
            return true;
        }
        let victim = self
            .nodes
            .values()
            .filter(|n| !n.alive)
            .min_by_key(|n| (n.info_ms, &n.entry.name))
            .or_else(|| {
                self.nodes
                    .values()
                    .min_by_key(|n| (n.info_ms, &n.entry.name))
                    .filter(|n| n.info_ms < info_ms)
            })
            .map(|n| n.entry.name.clone());
        match victim {
            Some(name) => {
                self.remove_node(&name);
                true
            }
            None => false,
        }
    }

    fn hinted_unreachable(&self, failures: u32, last_failure_ms: u64, now_ms: u64) -> bool {
        self.params.fail_hint_threshold > 0
            && failures >= self.params.fail_hint_threshold
            && now_ms.saturating_sub(last_failure_ms) < self.params.dead_after_ms
    }

    /// The node we know at seed address `s`: the one advertising that
    /// address, or the one that answered on a link to it.
    fn seed_node(&self, s: SocketAddr) -> Option<&Node> {
        self.seed_names
            .get(&s)
            .and_then(|name| self.nodes.get(name))
            .or_else(|| self.by_addr.get(&s).and_then(|name| self.nodes.get(name)))
    }

    /// Seeds whose node we do not know by name yet.
    fn unknown_seeds(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.seeds
            .iter()
            .copied()
            .filter(|s| self.seed_node(*s).is_none())
    }

    fn pick_gossip_target(&mut self, now_ms: u64) -> Option<SocketAddr> {
        let mut pool: Vec<SocketAddr> = self
            .nodes
            .values()
            .filter(|n| n.alive && !self.hinted_unreachable(n.failures, n.last_failure_ms, now_ms))
            .map(|n| n.entry.address)
            .collect();
        pool.extend(self.unknown_seeds().filter(|s| {
            let (f, at) = self.seed_failures.get(s).copied().unwrap_or((0, 0));
            !self.hinted_unreachable(f, at, now_ms)
        }));
        if pool.is_empty() {
            // Everyone is hinted unreachable: try them anyway rather than
            // fall silent.
            pool = self
                .nodes
                .values()
                .filter(|n| n.alive)
                .map(|n| n.entry.address)
                .chain(self.unknown_seeds())
                .collect();
        }
        if pool.is_empty() {
            return None;
        }
        let i = self.rng.random_range(0..pool.len());
        Some(pool[i])
    }

    fn pick_probes(&self, now_ms: u64, targeted: &[SocketAddr]) -> Vec<String> {
        let interval = self.params.interval_ms;
        let mut suspects: Vec<&Node> = self
            .nodes
            .values()
            .filter(|n| {
                n.alive
                    && self.age(n, now_ms) > self.params.suspect_after_ms
                    && !targeted.contains(&n.entry.address)
                    && n.last_probe_ms
                        .is_none_or(|p| now_ms.saturating_sub(p) >= interval)
            })
            .collect();
        // Not yet asked since the latest news first, then freshest news
        // first (see the module docs); names break ties.
        fn key<'a>(n: &&'a Node) -> (bool, std::cmp::Reverse<i64>, &'a str) {
            (
                n.last_probe_ms.is_some_and(|p| signed(p) > n.info_ms),
                std::cmp::Reverse(n.info_ms),
                n.entry.name.as_str(),
            )
        }
        let k = self.params.probes_per_interval;
        if k == 0 {
            return Vec::new();
        }
        if suspects.len() > k {
            suspects.select_nth_unstable_by_key(k - 1, key);
            suspects.truncate(k);
        }
        suspects.sort_unstable_by_key(key);
        suspects.into_iter().map(|n| n.entry.name.clone()).collect()
    }

    fn pick_revival(&mut self, targeted: &[SocketAddr]) -> Option<SocketAddr> {
        let mut pool: Vec<SocketAddr> = self
            .nodes
            .values()
            .filter(|n| !n.alive)
            .map(|n| n.entry.address)
            .chain(
                self.seeds
                    .iter()
                    .copied()
                    .filter(|s| !self.seed_node(*s).is_some_and(|n| n.alive)),
            )
            .filter(|a| !targeted.contains(a))
            .collect();
        pool.sort();
        pool.dedup();
        if pool.is_empty() {
            return None;
        }
        let i = self.rng.random_range(0..pool.len());
        Some(pool[i])
    }

    /// A gossip to `to` (whose name, if known, is `to_name`: its own entry
    /// is left out of the window, it would ignore it).
    fn gossip(
        &mut self,
        now_ms: u64,
        to: SocketAddr,
        to_name: Option<&str>,
        want_reply: bool,
    ) -> Action {
        let usable = |n: &Node| {
            // The alive flag is updated on ticks only; a reply between
            // ticks must not pass on news that is already too old.
            n.alive
                && self.age(n, now_ms) <= self.params.dead_after_ms
                && to_name != Some(n.entry.name.as_str())
        };
        let k = self.params.window_size;
        // Changed entries first (see *Pushing changes*), latest change
        // first; names break ties so the order is deterministic.
        let push_for = self.params.push_changed_ms;
        let mut changed: Vec<&Node> = Vec::new();
        if push_for > 0 && self.params.changed_slots > 0 {
            changed = self
                .nodes
                .values()
                .filter(|n| {
                    n.changed_ms
                        .is_some_and(|c| now_ms.saturating_sub(c) < push_for)
                        && usable(n)
                })
                .collect();
            changed
                .sort_unstable_by_key(|n| (std::cmp::Reverse(n.changed_ms), n.entry.name.as_str()));
            changed.truncate(self.params.changed_slots.min(k));
        }
        let mut fresh: Vec<&Node> = self.nodes.values().filter(|n| usable(n)).collect();
        // Freshest first; names break ties so the order is deterministic.
        fn key<'a>(n: &&'a Node) -> (std::cmp::Reverse<i64>, &'a str) {
            (std::cmp::Reverse(n.info_ms), n.entry.name.as_str())
        }
        // Enough to fill the window after leaving out the changed ones.
        let want = k + changed.len();
        if fresh.len() > want {
            fresh.select_nth_unstable_by_key(want - 1, key);
            fresh.truncate(want);
        }
        fresh.sort_unstable_by_key(key);
        fresh.retain(|n| !changed.iter().any(|c| c.entry.name == n.entry.name));
        fresh.truncate(k - changed.len());
        changed.extend(fresh);
        let fresh = changed;
        let window = fresh
            .into_iter()
            .map(|n| LoadEntry {
                age_ms: self.age(n, now_ms),
                ..n.entry.clone()
            })
            .collect();
        self.stats.sent += 1;
        Action::Send {
            to,
            msg: PeerMessage::Gossip {
                sender: self.me.clone(),
                window,
                want_reply,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 7000))
    }

    fn entry(name: &str, i: u8, generation: u64, age_ms: u64, load: f64) -> LoadEntry {
        LoadEntry {
            name: name.to_owned(),
            address: addr(i),
            generation,
            age_ms,
            load,
            cpus: 2.0,
            speed: 1.0,
            free_mem_bytes: 1 << 30,
            accepts_guests: true,
            guests: 0,
            away: 0,
        }
    }

    fn me() -> LoadEntry {
        entry("me", 1, 7, 0, 0.0)
    }

    fn node(seeds: Vec<SocketAddr>) -> Dissemination {
        Dissemination::new(DisseminationParams::default(), me(), seeds, 1).unwrap()
    }

    fn gossip(sender: LoadEntry, window: Vec<LoadEntry>, want_reply: bool) -> PeerMessage {
        PeerMessage::Gossip {
            sender,
            window,
            want_reply,
        }
    }

    fn view(d: &Dissemination, now: u64, name: &str) -> Option<NodeView> {
        d.nodes(now).into_iter().find(|v| v.entry.name == name)
    }

    fn sends(actions: &[Action]) -> Vec<(SocketAddr, LoadEntry, Vec<LoadEntry>, bool)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send {
                    to,
                    msg:
                        PeerMessage::Gossip {
                            sender,
                            window,
                            want_reply,
                        },
                } => Some((*to, sender.clone(), window.clone(), *want_reply)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn params_are_validated() {
        let ok = DisseminationParams::default();
        assert_eq!(ok.validate(), Ok(()));
        let bad = |f: fn(&mut DisseminationParams)| {
            let mut p = DisseminationParams::default();
            f(&mut p);
            Dissemination::new(p, me(), vec![], 0).unwrap_err()
        };
        assert_eq!(bad(|p| p.interval_ms = 0), DisseminationError::ZeroInterval);
        assert_eq!(bad(|p| p.window_size = 0), DisseminationError::ZeroWindow);
        assert_eq!(bad(|p| p.max_nodes = 0), DisseminationError::ZeroMaxNodes);
        assert!(matches!(
            bad(|p| p.suspect_after_ms = p.dead_after_ms),
            DisseminationError::TimeoutOrder { .. }
        ));
        let e = Dissemination::new(ok, entry("", 1, 1, 0, 0.0), vec![], 0).unwrap_err();
        assert_eq!(
            e,
            DisseminationError::BadOwnEntry(EntryRejection::EmptyName)
        );
    }

    #[test]
    fn a_fresh_node_asks_a_seed_and_learns_from_the_answer() {
        let mut a = node(vec![addr(1), addr(2)]); // our own address is ignored
        let out = sends(&a.tick(1_000, me()));
        assert_eq!(out.len(), 1);
        let (to, sender, window, want_reply) = &out[0];
        assert_eq!(*to, addr(2));
        assert_eq!(sender.name, "me");
        assert!(window.is_empty() && *want_reply);

        let b = entry("b", 2, 1, 0, 0.5);
        let c = entry("c", 3, 1, 300, 1.5);
        let acts = a.on_message(1_010, addr(2), gossip(b.clone(), vec![c], false));
        assert!(acts.contains(&Action::NodeJoined {
            name: "b".into(),
            address: addr(2)
        }));
        assert!(acts.contains(&Action::NodeJoined {
            name: "c".into(),
            address: addr(3)
        }));
        assert!(sends(&acts).is_empty());
        // Ages are kept in our time base: c was 300 ms old at 1010.
        let vc = view(&a, 1_510, "c").unwrap();
        assert_eq!(vc.entry.age_ms, 800);
        assert_eq!(vc.entry.load, 1.5);
        assert!(vc.alive && !vc.is_self);
        let me_view = &a.nodes(1_510)[0];
        assert!(me_view.is_self && me_view.entry.name == "me");
    }

    #[test]
    fn a_seed_known_under_another_address_is_recognised() {
        let seed = SocketAddr::from(([127, 0, 0, 1], 7000));
        let mut a =
            Dissemination::new(DisseminationParams::default(), me(), vec![seed], 4).unwrap();
        assert_eq!(sends(&a.tick(0, me()))[0].0, seed);
        // The answer comes back on the link we opened to the seed, from a
        // node advertising 10.0.0.2.
        a.on_message(5, seed, gossip(entry("b", 2, 1, 0, 0.0), vec![], false));
        for t in (500..10_000).step_by(500) {
            a.on_message(t, addr(2), gossip(entry("b", 2, 1, 0, 0.0), vec![], false));
            for (to, ..) in sends(&a.tick(t, me())) {
                assert_eq!(to, addr(2), "at {t}");
            }
        }
    }

    #[test]
    fn gossip_goes_once_per_interval_with_the_freshest_window() {
        let params = DisseminationParams {
            window_size: 2,
            ..DisseminationParams::default()
        };
        let mut a = Dissemination::new(params, me(), vec![], 3).unwrap();
        let window = vec![
            entry("c", 3, 1, 900, 0.0),
            entry("d", 4, 1, 100, 0.0),
            entry("e", 5, 1, 500, 0.0),
        ];
        a.on_message(
            10_000,
            addr(2),
            gossip(entry("b", 2, 1, 0, 0.0), window, false),
        );
        let out = sends(&a.tick(10_100, me()));
        assert_eq!(out.len(), 1);
        let (to, _, window, want_reply) = &out[0];
        assert!(!want_reply);
        // The target's own entry is left out; the two freshest others go,
        // freshest first, aged by the 100 ms since.
        let expected: Vec<(&str, u64)> = [("b", 100), ("d", 200), ("e", 600), ("c", 1_000)]
            .into_iter()
            .filter(|(n, _)| a.name_at(*to).as_deref() != Some(*n))
            .take(2)
            .collect();
        let got: Vec<(&str, u64)> = window.iter().map(|e| (e.name.as_str(), e.age_ms)).collect();
        assert_eq!(got, expected);
        // Ticks within the interval send nothing.
        for t in [10_200, 10_300, 10_599] {
            assert!(sends(&a.tick(t, me())).is_empty(), "at {t}");
        }
        assert_eq!(sends(&a.tick(10_600, me())).len(), 1);
    }

    #[test]
    fn a_changed_load_goes_ahead_of_fresher_news_for_a_while() {
        let params = DisseminationParams {
            window_size: 2,
            changed_slots: 1,
            push_changed_ms: 2_000,
            ..DisseminationParams::default()
        };
        let mut a = Dissemination::new(params, me(), vec![], 3).unwrap();
        // b, c, d, e known at load 0; x known at load 0.
        let known = vec![
            entry("c", 3, 1, 0, 0.0),
            entry("d", 4, 1, 0, 0.0),
            entry("e", 5, 1, 0, 0.0),
            entry("x", 7, 1, 0, 0.0),
        ];
        a.on_message(
            1_000,
            addr(2),
            gossip(entry("b", 2, 1, 0, 0.0), known, false),
        );
        // x's load rose by a quarter process (cpus 2: 0.125): no news. Then
        // by a whole process: news, though older than what c, d, e bring.
        let small = vec![entry("x", 7, 1, 300, 0.125)];
        a.on_message(
            1_400,
            addr(3),
            gossip(entry("c", 3, 1, 0, 0.0), small, false),
        );
        // b, c, d, e: fresher news than x's.
        let fresh_again: Vec<LoadEntry> = ["b", "c", "d", "e"]
            .iter()
            .zip(2u8..)
            .map(|(n, i)| entry(n, i, 1, 0, 0.0))
            .collect();
        a.on_message(
            1_450,
            addr(5),
            gossip(entry("e", 5, 1, 0, 0.0), fresh_again.clone(), false),
        );
        // Windows sent at `t`, but those to x (its own entry is left out).
        let windows = |a: &mut Dissemination, t: u64| -> Vec<Vec<String>> {
            sends(&a.tick(t, me()))
                .into_iter()
                .filter(|(to, ..)| *to != addr(7))
                .map(|(_, _, w, _)| w.into_iter().map(|e| e.name).collect())
                .collect()
        };
        for w in windows(&mut a, 1_500) {
            assert!(!w.contains(&"x".to_string()), "{w:?}");
        }
        let big = vec![entry("x", 7, 1, 500, 0.625)];
        a.on_message(1_900, addr(4), gossip(entry("d", 4, 1, 0, 0.0), big, false));
        a.on_message(
            1_950,
            addr(5),
            gossip(entry("e", 5, 1, 0, 0.0), fresh_again.clone(), false),
        );
        for t in [2_000, 2_500, 3_000, 3_500] {
            for w in windows(&mut a, t) {
                assert_eq!(w.len(), 2);
                assert_eq!(w[0], "x", "at {t}: {w:?}");
                assert_ne!(w[1], "x");
            }
            a.on_message(
                t + 10,
                addr(5),
                gossip(entry("e", 5, 1, 0, 0.0), fresh_again.clone(), false),
            );
        }
        // push_changed_ms after we learned it, x is just one more entry
        // (older than the others): it is left out again.
        for w in windows(&mut a, 4_000) {
            assert!(!w.contains(&"x".to_string()), "{w:?}");
        }
        // Off: only the freshest.
        let off = DisseminationParams {
            window_size: 2,
            push_changed_ms: 0,
            ..DisseminationParams::default()
        };
        let mut b = Dissemination::new(off, me(), vec![], 3).unwrap();
        b.on_message(
            1_000,
            addr(2),
            gossip(
                entry("b", 2, 1, 0, 0.0),
                vec![entry("x", 7, 1, 0, 0.0)],
                false,
            ),
        );
        b.on_message(
            1_900,
            addr(4),
            gossip(
                entry("d", 4, 1, 0, 0.0),
                vec![entry("x", 7, 1, 500, 3.0)],
                false,
            ),
        );
        b.on_message(
            1_950,
            addr(5),
            gossip(entry("e", 5, 1, 0, 0.0), fresh_again, false),
        );
        for w in windows(&mut b, 2_000) {
            assert!(!w.contains(&"x".to_string()), "{w:?}");
        }
    }

    #[test]
    fn merge_prefers_newer_generation_then_fresher_news() {
        let mut a = node(vec![]);
        a.on_message(
            1_000,
            addr(2),
            gossip(entry("b", 2, 5, 0, 1.0), vec![], false),
        );
        // Same generation, older: ignored.
        a.on_message(
            1_100,
            addr(3),
            gossip(
                entry("c", 3, 1, 0, 0.0),
                vec![entry("b", 2, 5, 500, 9.0)],
                false,
            ),
        );
        assert_eq!(view(&a, 1_100, "b").unwrap().entry.load, 1.0);
        // Same generation, fresher: taken.
        a.on_message(
            1_200,
            addr(3),
            gossip(
                entry("c", 3, 1, 0, 0.0),
                vec![entry("b", 2, 5, 50, 2.0)],
                false,
            ),
        );
        assert_eq!(view(&a, 1_200, "b").unwrap().entry.load, 2.0);
        // Older generation, however fresh: ignored.
        a.on_message(
            1_300,
            addr(3),
            gossip(
                entry("c", 3, 1, 0, 0.0),
                vec![entry("b", 2, 4, 0, 3.0)],
                false,
            ),
        );
        assert_eq!(view(&a, 1_300, "b").unwrap().entry.load, 2.0);
        // Newer generation, even if older news: taken, and reported.
        let acts = a.on_message(
            1_400,
            addr(3),
            gossip(
                entry("c", 3, 1, 0, 0.0),
                vec![entry("b", 2, 6, 1_000, 4.0)],
                false,
            ),
        );
        assert!(acts.contains(&Action::NodeRestarted {
            name: "b".into(),
            generation: 6
        }));
        let vb = view(&a, 1_400, "b").unwrap();
        assert_eq!(
            (vb.entry.load, vb.entry.generation, vb.entry.age_ms),
            (4.0, 6, 1_000)
        );
    }

    #[test]
    fn news_about_ourselves_or_from_our_name_is_refused() {
        let mut a = node(vec![]);
        let impostor = entry("me", 9, 99, 0, 5.0);
        let acts = a.on_message(1_000, addr(9), gossip(impostor.clone(), vec![], true));
        assert!(acts.is_empty());
        assert_eq!(a.stats().rejected_messages, 1);
        a.on_message(
            1_000,
            addr(2),
            gossip(entry("b", 2, 1, 0, 0.0), vec![impostor], false),
        );
        assert_eq!(a.nodes(1_000).len(), 2);
        assert_eq!(a.nodes(1_000)[0].entry, me());
    }

    #[test]
    fn want_reply_is_answered_to_the_sender() {
        let mut a = node(vec![]);
        a.on_message(
            1_000,
            addr(3),
            gossip(entry("c", 3, 1, 0, 0.0), vec![], false),
        );
        let from = SocketAddr::from(([10, 0, 0, 2], 40_000)); // an ephemeral port
        let out = sends(&a.on_message(1_000, from, gossip(entry("b", 2, 1, 0, 0.0), vec![], true)));
        assert_eq!(out.len(), 1);
        let (to, sender, window, want_reply) = &out[0];
        assert_eq!(*to, addr(2));
        assert_eq!(sender.name, "me");
        assert!(!want_reply);
        assert_eq!(
            window.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["c"]
        );
        assert_eq!(a.stats().replies, 1);
    }

    #[test]
    fn absurd_entries_are_dropped_and_counted() {
        let mut a = node(vec![]);
        let mut bad = Vec::new();
        for (i, f) in [
            |e: &mut LoadEntry| e.load = f64::NAN,
            |e: &mut LoadEntry| e.load = -1.0,
            |e: &mut LoadEntry| e.load = f64::INFINITY,
            |e: &mut LoadEntry| e.cpus = 0.0,
            |e: &mut LoadEntry| e.speed = f64::NAN,
            |e: &mut LoadEntry| e.name = String::new(),
            |e: &mut LoadEntry| e.name = "x".repeat(300),
            |e: &mut LoadEntry| e.name = "a\nb".into(),
            |e: &mut LoadEntry| e.age_ms = u64::MAX,
            |e: &mut LoadEntry| e.address = SocketAddr::from(([0, 0, 0, 0], 7000)),
            |e: &mut LoadEntry| e.address = SocketAddr::from(([10, 0, 0, 5], 0)),
        ]
        .into_iter()
        .enumerate()
        {
            let mut e = entry(&format!("bad{i}"), 50, 1, 0, 0.0);
            f(&mut e);
            bad.push(e);
        }
        let n = bad.len() as u64;
        a.on_message(
            1_000,
            addr(2),
            gossip(entry("b", 2, 1, 0, 0.0), bad.clone(), false),
        );
        assert_eq!(a.stats().rejected_entries, n);
        assert_eq!(a.nodes(1_000).len(), 2);
        // A bad sender drops the whole message, reply included.
        let acts = a.on_message(
            1_000,
            addr(50),
            gossip(bad[0].clone(), vec![entry("c", 3, 1, 0, 0.0)], true),
        );
        assert!(acts.is_empty());
        assert_eq!(a.nodes(1_000).len(), 2);
    }

    #[test]
    fn silent_nodes_die_once_and_come_back_on_fresh_news() {
        let mut a = node(vec![]);
        a.on_message(
            1_000,
            addr(2),
            gossip(entry("b", 2, 1, 0, 0.0), vec![], false),
        );
        let mut died = Vec::new();
        for t in (1_000..=5_500).step_by(100) {
            for act in a.tick(t, me()) {
                if let Action::NodeDied { name } = act {
                    died.push((t, name));
                }
            }
        }
        assert_eq!(died, vec![(5_100, "b".to_owned())]);
        assert!(!view(&a, 5_500, "b").unwrap().alive);
        // A copy of old news slightly fresher than ours does not revive it.
        let acts = a.on_message(
            5_500,
            addr(3),
            gossip(
                entry("c", 3, 1, 0, 0.0),
                vec![entry("b", 2, 1, 3_900, 0.0)],
                false,
            ),
        );
        assert!(!acts.contains(&Action::NodeAlive { name: "b".into() }));
        assert!(!view(&a, 5_500, "b").unwrap().alive);
        // Dead nodes are not gossiped about, nor to (c is the only target).
        for t in (5_600..=7_000).step_by(100) {
            for (to, _, window, _) in sends(&a.tick(t, me())) {
                assert!(window.iter().all(|e| e.name != "b"));
                assert!(to == addr(3) || to == addr(2), "{to}");
            }
        }
        // It speaks again.
        let acts = a.on_message(
            7_000,
            addr(2),
            gossip(entry("b", 2, 1, 0, 0.0), vec![], false),
        );
        assert!(acts.contains(&Action::NodeAlive { name: "b".into() }));
        assert!(view(&a, 7_000, "b").unwrap().alive);
    }

    #[test]
    fn dead_nodes_are_retried_now_and_then_and_forgotten_at_last() {
        let params = DisseminationParams {
            revive_every: 4,
            forget_after_ms: 60_000,
            ..DisseminationParams::default()
        };
        let mut a = Dissemination::new(params, me(), vec![], 5).unwrap();
        a.on_message(0, addr(2), gossip(entry("b", 2, 1, 0, 0.0), vec![], false));
        let mut tries = 0;
        for t in (0..=50_000).step_by(500) {
            for (to, _, _, want_reply) in sends(&a.tick(t, me())) {
                if t > 4_500 {
                    // The only messages left are revival tries to b.
                    assert_eq!(to, addr(2));
                    assert!(want_reply);
                    tries += 1;
                }
            }
        }
        // One try every 4 intervals of 500 ms.
        assert!((20..=24).contains(&tries), "{tries} tries");
        assert_eq!(a.stats().revival_tries, tries);
        a.tick(60_001, me());
        assert!(view(&a, 60_001, "b").is_none());
    }

    #[test]
    fn suspects_are_probed_once_per_interval() {
        let params = DisseminationParams {
            probes_per_interval: 2,
            revive_every: 0,
            ..DisseminationParams::default()
        };
        let mut a = Dissemination::new(params, me(), vec![], 9).unwrap();
        let others: Vec<LoadEntry> = (3..8)
            .map(|i| entry(&format!("n{i}"), i, 1, 0, 0.0))
            .collect();
        a.on_message(0, addr(2), gossip(entry("b", 2, 1, 0, 0.0), others, false));
        let mut probed: BTreeMap<SocketAddr, Vec<u64>> = BTreeMap::new();
        for t in (0..=3_900).step_by(100) {
            // b keeps talking; the others fall silent.
            a.on_message(t, addr(2), gossip(entry("b", 2, 1, 0, 0.0), vec![], false));
            let out = sends(&a.tick(t, me()));
            assert!(out.len() <= 3, "at {t}: {} messages", out.len());
            for (to, _, _, want_reply) in out {
                if want_reply {
                    probed.entry(to).or_default().push(t);
                }
            }
        }
        // No probe before news is 2 s old, none to b, each suspect probed
        // at most once per interval.
        assert!(!probed.contains_key(&addr(2)));
        assert_eq!(probed.len(), 5);
        for times in probed.values() {
            assert!(times[0] > 2_000);
            assert!(times.windows(2).all(|w| w[1] - w[0] >= 500), "{times:?}");
        }
    }

    #[test]
    fn failed_sends_steer_gossip_away_but_never_kill() {
        let params = DisseminationParams {
            revive_every: 0,
            ..DisseminationParams::default()
        };
        let mut a = Dissemination::new(params, me(), vec![], 11).unwrap();
        let mut t = 0;
        a.on_message(
            t,
            addr(2),
            gossip(
                entry("b", 2, 1, 0, 0.0),
                vec![entry("c", 3, 1, 0, 0.0)],
                false,
            ),
        );
        a.on_send_failed(t, addr(3));
        a.on_send_failed(t, addr(3));
        assert_eq!(view(&a, t, "c").unwrap().send_failures, 2);
        // c's news keeps coming through b, but c is not a regular target.
        while t < 3_000 {
            a.on_message(
                t,
                addr(2),
                gossip(
                    entry("b", 2, 1, 0, 0.0),
                    vec![entry("c", 3, 1, 0, 0.0)],
                    false,
                ),
            );
            for (to, ..) in sends(&a.tick(t, me())) {
                assert_eq!(to, addr(2), "at {t}");
            }
            t += 100;
        }
        assert!(view(&a, t, "c").unwrap().alive);
        // Once it speaks to us directly, the hint is gone.
        a.on_message(t, addr(3), gossip(entry("c", 3, 1, 0, 0.0), vec![], false));
        assert_eq!(view(&a, t, "c").unwrap().send_failures, 0);
    }

    #[test]
    fn the_table_is_bounded() {
        let params = DisseminationParams {
            max_nodes: 4,
            ..DisseminationParams::default()
        };
        let mut a = Dissemination::new(params, me(), vec![], 13).unwrap();
        let window: Vec<LoadEntry> = (3..20)
            .map(|i| entry(&format!("n{i}"), i, 1, u64::from(i) * 10, 0.0))
            .collect();
        a.on_message(
            1_000,
            addr(2),
            gossip(entry("b", 2, 1, 0, 0.0), window, false),
        );
        let names: Vec<String> = a
            .nodes(1_000)
            .into_iter()
            .skip(1)
            .map(|v| v.entry.name)
            .collect();
        // b (age 0) and the three freshest of the window survive.
        assert_eq!(names, ["b", "n3", "n4", "n5"]);
    }

    fn arb_entry() -> impl Strategy<Value = LoadEntry> {
        (
            prop_oneof!["[a-d]", "me", ".{0,3}"],
            1u8..6,
            0u64..4,
            prop_oneof![0u64..10_000, any::<u64>()],
            prop_oneof![0.0f64..4.0, any::<f64>()],
            prop_oneof![Just(1.0f64), any::<f64>()],
        )
            .prop_map(|(name, i, generation, age_ms, load, cpus)| LoadEntry {
                name,
                address: addr(i),
                generation,
                age_ms,
                load,
                cpus,
                speed: 1.0,
                free_mem_bytes: 0,
                accepts_guests: true,
                guests: 0,
                away: 0,
            })
    }

    proptest! {
        #[test]
        fn arbitrary_traffic_never_breaks_the_invariants(
            msgs in prop::collection::vec(
                (0u64..300, arb_entry(), prop::collection::vec(arb_entry(), 0..6), any::<bool>()),
                1..40,
            )
        ) {
            let mut a = node(vec![addr(2)]);
            let mut now = 0;
            for (dt, sender, window, want_reply) in msgs {
                now += dt;
                let mut acts = a.on_message(now, addr(9), gossip(sender, window, want_reply));
                acts.extend(a.tick(now, me()));
                for (_, sender, window, _) in sends(&acts) {
                    prop_assert_eq!(&sender.name, "me");
                    prop_assert!(window.len() <= a.params().window_size);
                    for e in &window {
                        prop_assert!(validate_entry(e, a.params().dead_after_ms).is_ok());
                    }
                }
                let v = a.nodes(now);
                prop_assert!(v[0].is_self);
                prop_assert!(v.iter().skip(1).all(|n| !n.is_self && n.entry.name != "me"));
                prop_assert!(v.iter().all(|n| validate_entry(&n.entry, u64::MAX).is_ok()));
            }
        }
    }
}
