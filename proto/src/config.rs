//! Node configuration: one TOML file per node.
//!
//! Found at the path given by `--config`, else `$MOSIX_CONFIG`, else
//! [`DEFAULT_CONFIG_PATH`]. Every key has a default, documented in
//! `mosix.toml.example` at the top of the repository; a test keeps the two
//! in step. Unknown keys are errors (a typo must not silently fall back to a
//! default), and every error names the key and the line.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Where the configuration is read from when neither `--config` nor
/// `MOSIX_CONFIG` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/mosix/mosix.toml";

/// Environment variable that overrides [`DEFAULT_CONFIG_PATH`].
pub const CONFIG_ENV: &str = "MOSIX_CONFIG";

/// TCP port `remoted` listens on when `node.listen` gives none.
pub const DEFAULT_PORT: u16 = 7340;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// cannot read configuration {path}: {error} (create it from mosix.toml.example, or pass --config)
    #[error(
        "cannot read configuration {path}: {error} (create it from mosix.toml.example, or pass --config)"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said (part of the message, so not a `source`).
        error: std::io::Error,
    },
    /// {path}:{line}: key `{key}`: {message}
    #[error("{path}:{line}: key `{key}`: {message}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending key (0 when the key is absent).
        line: usize,
        /// Dotted path of the key, e.g. `balancer.window`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

/// A node's whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Identity, addresses and files of this node.
    pub node: NodeConfig,
    /// How load and capacity are measured.
    pub load: LoadConfig,
    /// Parameters of the load balancer (ARCHITECTURE.md section 7).
    pub balancer: BalancerConfig,
    /// How managed processes are handled.
    pub process: ProcessConfig,
    /// Which of the home's paths remote bodies see through the view.
    pub view: ViewConfig,
    /// Where `remoted` serves its Prometheus metrics (off by default).
    pub metrics: MetricsConfig,
    /// The file this configuration came from, if any.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `[node]`: who this node is and how to reach the others.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Node name, unique in the cluster. Default: the host name.
    pub name: String,
    /// Address `remoted` listens on for links from other nodes.
    pub listen: SocketAddr,
    /// Address other nodes should use; default: `listen` (which must then
    /// not be a wildcard address).
    pub advertise: Option<SocketAddr>,
    /// Address `homed` listens on for links; default: the `listen` address
    /// with the port one higher.
    pub home_listen: Option<SocketAddr>,
    /// Nodes to contact at start; the rest is learnt by dissemination.
    pub seeds: Vec<SocketAddr>,
    /// The cluster key: 64 hex digits in a file readable by root only.
    pub key_file: PathBuf,
    /// Directory for the daemons' local sockets.
    pub runtime_dir: PathBuf,
}

/// `[load]`: where the node's load and capacity come from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoadConfig {
    /// A cgroup directory whose CPU limit is the node's capacity and whose
    /// runnable tasks are its load (set by `mosix-local`). Absent: the whole
    /// machine.
    pub cgroup: Option<PathBuf>,
    /// Relative CPU speed (1.0 = reference). Absent: measured at start.
    pub speed: Option<f64>,
    /// How often the run queue is sampled, in milliseconds.
    pub tick_ms: u64,
}

/// `[balancer]`: dissemination and migration parameters.
///
/// This is the one definition of every balancer parameter and of its
/// default ([`Default`]: what a file without the section gives, shown in
/// `mosix.toml.example`). `remoted`'s policy takes this struct as it is
/// (consideration and leaving) or its part of it (the dissemination), and
/// `mosctl params` changes a running copy of it; a simulator or a test that
/// needs other values states them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BalancerConfig {
    /// How often a node sends its load vector to one random node (infod: 500).
    pub info_interval_ms: u64,
    /// How many of the freshest entries one message carries (infod: 16-20).
    pub window: usize,
    /// News older than this makes a node suspect: it is probed directly.
    pub suspect_after_ms: u64,
    /// News older than this makes a node unused, and dead once it has also
    /// left a probe unanswered (must stay under 5000; see remoted's
    /// dissemination docs for why the two differ in big clusters). Migration
    /// consideration skips targets whose news is older than this too (news
    /// this old tells nothing about the load now; `mosctl params` calls it
    /// `max_info_age_ms`).
    pub dead_after_ms: u64,
    /// Dead nodes are forgotten after this long.
    pub forget_after_ms: u64,
    /// For this long after a node learns that another's load changed by
    /// half a process or more, it sends that entry ahead of the freshest
    /// ones, so the change reaches a big cluster in seconds, not minutes
    /// (0: windows carry only the freshest entries).
    pub push_changed_ms: u64,
    /// Whether the balancer moves processes on its own (false: only
    /// `mosmigrate` moves them, and guests are never asked to leave).
    pub auto_migrate: bool,
    /// Time between migration-consideration rounds, ms (MOSIX: one load
    /// calculation, 1000).
    pub consider_interval_ms: u64,
    /// A process is considered only after running here this long, ms
    /// (since it started or arrived). Default 1000: one load calculation,
    /// so its demand has been measured at least once.
    pub residency_ms: u64,
    /// Stability margin a move must leave between this node's load and
    /// the target's after the move, as a fraction of one CPU-bound
    /// process here. Default 0.5, above the 0.25 the simulator runs with: a
    /// real node's run queue also holds its daemons' bursts and the demand
    /// of a process is measured, not known (both seen at 0.2 process on the
    /// half-CPU nodes of the local test clusters).
    pub margin: f64,
    /// Only processes wanting at least this fraction of a CPU move for load
    /// (an I/O-bound process gains nothing).
    pub min_demand: f64,
    /// Most migrations one round decides (migrations leave one at a time on
    /// the sending link anyway, and a round is a second).
    pub max_per_round: usize,
    /// How long a decided move raises this node's copy of the target's
    /// load, ms: until dissemination and the target's load average catch
    /// up (on a node with a fraction of a CPU, one process is several load
    /// units, and the average rises by 3/8 of the gap a second). Default
    /// 10000; the simulator, whose migrations take tens of ms, runs with
    /// 5000.
    pub accounting_hold_ms: u64,
    /// A process is not sent back where it came from by the load rule
    /// within this after it arrived, ms (stale figures could otherwise
    /// bounce it).
    pub no_return_ms: u64,
    /// Memory ushering starts below this much free memory, bytes.
    pub usher_below_bytes: u64,
    /// Free memory a target keeps after taking a process, on top of
    /// `usher_below_bytes`, so it does not have to usher it on, bytes.
    pub memory_reserve_bytes: u64,
    /// Own (non-guest) run queue, in processes, from which the
    /// workstation's owner counts as back: guests then leave while the node
    /// is overloaded. Default 0.75: most of one CPU-bound process of the
    /// node's own (the daemons' bursts during a migration stay well below).
    pub owner_load: f64,
    /// The owner counts as back only once the own load held this long, ms.
    pub owner_hold_ms: u64,
    /// A guest is asked to leave at most once per this, ms.
    pub leave_ask_every_ms: u64,
    /// Rotation: a node running one CPU-bound process more than a target
    /// moves its most advanced process there after every process here has
    /// stayed this long, ms (0: off, the default: this node considers only
    /// the processes it started, so an extra process moved to a guest's
    /// node could not be moved on, and the simulator shows rotation then
    /// lengthens the makespan; see mosix.toml.example). The simulator, where
    /// every node considers every process it runs, runs with 4000: one
    /// migration of an 8 MiB image per 4 s per node, and long enough for the
    /// moved process to show in the target's smoothed load.
    pub rotate_after_ms: u64,
}

/// `[process]`: how managed processes are frozen.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessConfig {
    /// The signal that freezes a managed process, as a number or a name
    /// (`"SIGRTMAX-1"`, `"SIGUSR2"`). A program that installs its own
    /// handler for it cannot migrate.
    #[serde(deserialize_with = "de_signal")]
    pub freeze_signal: i32,
    /// How long, in seconds, a body hosted here waits for its home's
    /// `homed` to come back after its link to it broke (a restart of the
    /// home's daemons) before the host ends it; at the home, how long a
    /// deputy waits for a new `homed` to rejoin (this plus half a minute).
    /// Meanwhile the body's view operations fail with EIO and its
    /// forwarded calls with EIO; its output waits. Default 60.
    pub home_grace_s: u64,
}

/// `[metrics]`: `remoted`'s Prometheus endpoint.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address `remoted` serves `GET /metrics` on, in the Prometheus text
    /// format; absent (the default) means no endpoint.
    pub listen: Option<SocketAddr>,
}

/// `[view]`: what bodies on other nodes see of this home's files.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ViewConfig {
    /// Paths exported to this home's bodies on other nodes.
    pub exports: Vec<PathBuf>,
    /// Paths under `exports` that bodies see from the node they run on,
    /// because a homogeneous cluster has them alike (or they are per-node).
    pub local: Vec<PathBuf>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            name: host_name(),
            listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            advertise: None,
            home_listen: None,
            seeds: Vec::new(),
            key_file: PathBuf::from("/etc/mosix/cluster.key"),
            runtime_dir: PathBuf::from("/run/mosix"),
        }
    }
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            cgroup: None,
            speed: None,
            tick_ms: 100,
        }
    }
}

impl Default for BalancerConfig {
    fn default() -> Self {
        BalancerConfig {
            info_interval_ms: 500,
            window: 16,
            suspect_after_ms: 2000,
            dead_after_ms: 4000,
            forget_after_ms: 600_000,
            push_changed_ms: 5_000,
            auto_migrate: true,
            consider_interval_ms: 1000,
            residency_ms: 1000,
            margin: 0.5,
            min_demand: 0.5,
            max_per_round: 4,
            accounting_hold_ms: 10_000,
            no_return_ms: 30_000,
            usher_below_bytes: 64 << 20,
            memory_reserve_bytes: 64 << 20,
            owner_load: 0.75,
            owner_hold_ms: 3000,
            leave_ask_every_ms: 10_000,
            rotate_after_ms: 0,
        }
    }
}

impl Default for ProcessConfig {
    fn default() -> Self {
        ProcessConfig {
            freeze_signal: libc::SIGRTMAX() - 1,
            home_grace_s: 60,
        }
    }
}

impl Default for ViewConfig {
    fn default() -> Self {
        ViewConfig {
            exports: vec![PathBuf::from("/")],
            local: [
                "/proc",
                "/sys",
                "/dev",
                "/run/mosix",
                "/usr",
                "/lib",
                "/lib32",
                "/lib64",
                "/bin",
                "/sbin",
                "/etc",
            ]
            .iter()
            .map(PathBuf::from)
            .collect(),
        }
    }
}

impl Config {
    /// Loads the configuration from `explicit`, else `$MOSIX_CONFIG`, else
    /// [`DEFAULT_CONFIG_PATH`].
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_file(&config_path(explicit))
    }

    /// Loads and validates one file.
    pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let mut config = Self::parse(&text, path)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses and validates configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::new(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let line = inner
                .span()
                .map(|span| line_of(text, span.start))
                .unwrap_or(0);
            ConfigError::Bad {
                path: origin.to_path_buf(),
                line,
                key: if key == "." {
                    "(top level)".into()
                } else {
                    key
                },
                message: inner.message().trim().to_string(),
            }
        })?;
        config
            .validate()
            .map_err(|(key, message)| ConfigError::Bad {
                path: origin.to_path_buf(),
                line: key_line(text, key),
                key: key.to_string(),
                message,
            })?;
        Ok(config)
    }

    /// Checks values that parse but make no sense; returns the key and why.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        let n = &self.node;
        if n.name.is_empty() || n.name.len() > 64 || !n.name.chars().all(name_char) {
            return Err((
                "node.name",
                format!(
                    "{:?} is not a node name: use 1 to 64 letters, digits, '-', '_' or '.'",
                    n.name
                ),
            ));
        }
        if n.advertise.is_none() && n.listen.ip().is_unspecified() && !n.seeds.is_empty() {
            return Err((
                "node.advertise",
                format!(
                    "listen address {} is a wildcard, so other nodes cannot be told where this \
                     one is: set node.advertise to this node's own address",
                    n.listen
                ),
            ));
        }
        let l = &self.load;
        if let Some(speed) = l.speed {
            if !(speed.is_finite() && speed > 0.0 && speed < 1000.0) {
                return Err((
                    "load.speed",
                    format!("{speed} is not a relative speed in (0, 1000)"),
                ));
            }
        }
        if !(10..=10_000).contains(&l.tick_ms) {
            return Err((
                "load.tick_ms",
                format!("{} is outside 10..=10000", l.tick_ms),
            ));
        }
        let b = &self.balancer;
        if !(50..=60_000).contains(&b.info_interval_ms) {
            return Err((
                "balancer.info_interval_ms",
                format!("{} is outside 50..=60000", b.info_interval_ms),
            ));
        }
        if !(1..=1024).contains(&b.window) {
            return Err((
                "balancer.window",
                format!("{} is outside 1..=1024", b.window),
            ));
        }
        if b.dead_after_ms <= b.info_interval_ms * 2 {
            return Err((
                "balancer.dead_after_ms",
                format!(
                    "{} must exceed twice balancer.info_interval_ms ({}), or live nodes would be \
                     declared dead",
                    b.dead_after_ms, b.info_interval_ms
                ),
            ));
        }
        if b.suspect_after_ms >= b.dead_after_ms {
            return Err((
                "balancer.suspect_after_ms",
                format!(
                    "{} must be below balancer.dead_after_ms ({})",
                    b.suspect_after_ms, b.dead_after_ms
                ),
            ));
        }
        if b.forget_after_ms < b.dead_after_ms {
            return Err((
                "balancer.forget_after_ms",
                format!(
                    "{} must be at least balancer.dead_after_ms",
                    b.forget_after_ms
                ),
            ));
        }
        if !(100..=60_000).contains(&b.consider_interval_ms) {
            return Err((
                "balancer.consider_interval_ms",
                format!("{} is outside 100..=60000", b.consider_interval_ms),
            ));
        }
        if !b.margin.is_finite() || b.margin < 0.0 {
            return Err((
                "balancer.margin",
                format!("{} is not a number >= 0 (e.g. 0.25)", b.margin),
            ));
        }
        if !(0.0..=1.0).contains(&b.min_demand) {
            return Err((
                "balancer.min_demand",
                format!("{} is outside 0..=1 (e.g. 0.5)", b.min_demand),
            ));
        }
        if b.max_per_round == 0 {
            return Err((
                "balancer.max_per_round",
                "0 would never move anything; set at least 1".into(),
            ));
        }
        if !b.owner_load.is_finite() || b.owner_load < 0.0 {
            return Err((
                "balancer.owner_load",
                format!("{} is not a number >= 0 (e.g. 0.5)", b.owner_load),
            ));
        }
        if b.owner_hold_ms > 600_000 {
            return Err((
                "balancer.owner_hold_ms",
                format!("{} is above 600000", b.owner_hold_ms),
            ));
        }
        if b.leave_ask_every_ms == 0 {
            return Err(("balancer.leave_ask_every_ms", "must be at least 1".into()));
        }
        if b.rotate_after_ms != 0 && !(100..=3_600_000).contains(&b.rotate_after_ms) {
            return Err((
                "balancer.rotate_after_ms",
                format!(
                    "{} is neither 0 (off) nor between 100 and 3600000 (e.g. 4000)",
                    b.rotate_after_ms
                ),
            ));
        }
        if b.push_changed_ms > 600_000 {
            return Err((
                "balancer.push_changed_ms",
                format!(
                    "{} is above 600000 (e.g. 5000, or 0 for off)",
                    b.push_changed_ms
                ),
            ));
        }
        if let Err(why) = check_freeze_signal(self.process.freeze_signal) {
            return Err(("process.freeze_signal", why));
        }
        for p in self.view.exports.iter().chain(&self.view.local) {
            if !p.is_absolute() {
                return Err(("view", format!("{} is not an absolute path", p.display())));
            }
        }
        Ok(())
    }

    /// What differs in `new` that a running daemon takes only at its next
    /// start: whole sections, and the `[balancer]` keys of the
    /// dissemination (the others are run-time parameters, `mosctl params`).
    pub fn restart_needed(&self, new: &Config) -> Vec<&'static str> {
        let (a, b) = (&self.balancer, &new.balancer);
        [
            ("[node]", self.node != new.node),
            ("[load]", self.load != new.load),
            ("[process]", self.process != new.process),
            ("[view]", self.view != new.view),
            ("[metrics]", self.metrics != new.metrics),
            (
                "balancer.info_interval_ms",
                a.info_interval_ms != b.info_interval_ms,
            ),
            ("balancer.window", a.window != b.window),
            (
                "balancer.suspect_after_ms",
                a.suspect_after_ms != b.suspect_after_ms,
            ),
            ("balancer.dead_after_ms", a.dead_after_ms != b.dead_after_ms),
            (
                "balancer.forget_after_ms",
                a.forget_after_ms != b.forget_after_ms,
            ),
            (
                "balancer.push_changed_ms",
                a.push_changed_ms != b.push_changed_ms,
            ),
        ]
        .into_iter()
        .filter_map(|(what, changed)| changed.then_some(what))
        .collect()
    }

    /// The address other nodes use to reach this node's `remoted`.
    pub fn advertised(&self) -> SocketAddr {
        self.node.advertise.unwrap_or(self.node.listen)
    }

    /// The address `homed` listens on for links.
    pub fn home_listen(&self) -> SocketAddr {
        self.node.home_listen.unwrap_or_else(|| {
            let mut a = self.node.listen;
            a.set_port(a.port().wrapping_add(1));
            a
        })
    }

    /// Path of `remoted`'s local command socket.
    pub fn remoted_socket(&self) -> PathBuf {
        self.node.runtime_dir.join("remoted.sock")
    }

    /// Path of `homed`'s local command socket.
    pub fn homed_socket(&self) -> PathBuf {
        self.node.runtime_dir.join("homed.sock")
    }

    /// Path of `homed`'s socket for managed processes (libmosix, mosrun).
    pub fn procs_socket(&self) -> PathBuf {
        self.node.runtime_dir.join("procs.sock")
    }
}

/// The path [`Config::load`] reads for a given `--config`.
pub fn config_path(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Line of a dotted key in the document, or 0 when it is not written there
/// (the value then came from a default).
fn key_line(text: &str, dotted: &str) -> usize {
    let Ok(doc) = toml_edit::ImDocument::parse(text) else {
        return 0;
    };
    let mut table: &dyn toml_edit::TableLike = doc.as_table();
    let mut parts = dotted.split('.').peekable();
    while let Some(part) = parts.next() {
        let Some((key, item)) = table.get_key_value(part) else {
            return 0;
        };
        if parts.peek().is_none() {
            return key.span().map(|s| line_of(text, s.start)).unwrap_or(0);
        }
        match item.as_table_like() {
            Some(t) => table = t,
            None => return 0,
        }
    }
    0
}

/// Accepts a signal number or a name such as `SIGUSR2`, `SIGRTMIN+3` or
/// `SIGRTMAX-1`.
fn de_signal<'de, D: serde::Deserializer<'de>>(de: D) -> Result<i32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(i64),
        Name(String),
    }
    match Raw::deserialize(de)? {
        Raw::Number(n) => i32::try_from(n).map_err(|_| serde::de::Error::custom("not a signal")),
        Raw::Name(name) => parse_signal(&name).map_err(serde::de::Error::custom),
    }
}

/// Parses a signal name as [`ProcessConfig::freeze_signal`] accepts it.
pub fn parse_signal(name: &str) -> Result<i32, String> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    let rt = |base: i32, rest: &str, sign: i32| -> Result<i32, String> {
        if rest.is_empty() {
            return Ok(base);
        }
        let n: i32 = rest[1..]
            .parse()
            .map_err(|_| format!("{name:?}: bad offset after SIGRT"))?;
        Ok(base + sign * n)
    };
    if let Some(rest) = bare.strip_prefix("RTMIN") {
        if rest.is_empty() || rest.starts_with('+') {
            return rt(libc::SIGRTMIN(), rest, 1);
        }
    }
    if let Some(rest) = bare.strip_prefix("RTMAX") {
        if rest.is_empty() || rest.starts_with('-') {
            return rt(libc::SIGRTMAX(), rest, -1);
        }
    }
    match bare {
        "USR1" => Ok(libc::SIGUSR1),
        "USR2" => Ok(libc::SIGUSR2),
        "PWR" => Ok(libc::SIGPWR),
        "URG" => Ok(libc::SIGURG),
        _ => Err(format!(
            "{name:?} is not a signal name mosix accepts (SIGUSR1, SIGUSR2, SIGPWR, SIGURG, \
             SIGRTMIN+N, SIGRTMAX-N, or a number)"
        )),
    }
}

/// Refuses signals a program cannot give up (SIGKILL, SIGSEGV, ...).
fn check_freeze_signal(sig: i32) -> Result<(), String> {
    let usable = [libc::SIGUSR1, libc::SIGUSR2, libc::SIGPWR, libc::SIGURG];
    if usable.contains(&sig) || (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&sig) {
        Ok(())
    } else {
        Err(format!(
            "signal {sig} cannot serve as the freeze signal: use SIGUSR1, SIGUSR2, SIGPWR, \
             SIGURG or a real-time signal ({}..={})",
            libc::SIGRTMIN(),
            libc::SIGRTMAX()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn restart_needed_names_sections_and_dissemination_keys() {
        let a = parse("").unwrap();
        let b = parse("[balancer]\nmargin = 0.75\nwindow = 8\n[view]\nexports = [\"/home\"]\n")
            .unwrap();
        assert_eq!(a.restart_needed(&b), vec!["[view]", "balancer.window"]);
        assert!(a.restart_needed(&a).is_empty());
    }

    #[test]
    fn metrics_are_off_by_default_and_take_an_address() {
        assert_eq!(parse("").unwrap().metrics.listen, None);
        let c = parse("[metrics]\nlisten = \"127.0.0.1:9340\"\n").unwrap();
        assert_eq!(c.metrics.listen, Some("127.0.0.1:9340".parse().unwrap()));
        assert!(parse("[metrics]\nport = 1\n").is_err());
    }

    #[test]
    fn example_file_parses_and_documents_the_defaults() {
        let text = include_str!("../../mosix.toml.example");
        let parsed = parse(text).expect("the example file must be valid");
        // The example sets name and addresses; everything else is the default.
        let mut defaults = Config::default();
        defaults.node.name = parsed.node.name.clone();
        defaults.node.listen = parsed.node.listen;
        defaults.node.seeds = parsed.node.seeds.clone();
        assert_eq!(parsed, defaults);
        // Every key of every section is present (commented or not) in the example.
        for key in [
            "name",
            "listen",
            "advertise",
            "home_listen",
            "seeds",
            "key_file",
            "runtime_dir",
            "cgroup",
            "speed",
            "tick_ms",
            "info_interval_ms",
            "window",
            "suspect_after_ms",
            "dead_after_ms",
            "forget_after_ms",
            "push_changed_ms",
            "auto_migrate",
            "consider_interval_ms",
            "residency_ms",
            "margin",
            "min_demand",
            "max_per_round",
            "accounting_hold_ms",
            "no_return_ms",
            "usher_below_bytes",
            "memory_reserve_bytes",
            "owner_load",
            "owner_hold_ms",
            "leave_ask_every_ms",
            "rotate_after_ms",
            "freeze_signal",
            "exports",
            "local",
        ] {
            assert!(
                text.lines().any(|l| l
                    .trim_start_matches(['#', ' '])
                    .starts_with(&format!("{key} ="))),
                "mosix.toml.example does not document `{key}`"
            );
        }
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.balancer.info_interval_ms, 500);
        assert_eq!(c.process.freeze_signal, libc::SIGRTMAX() - 1);
        assert_eq!(c.home_listen().port(), DEFAULT_PORT + 1);
    }

    #[test]
    fn type_error_names_key_and_line() {
        let err = parse("[node]\nname = \"a\"\n\n[balancer]\nwindow = \"many\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("test.toml:5"), "{msg}");
        assert!(msg.contains("balancer.window"), "{msg}");
    }

    #[test]
    fn unknown_key_is_an_error_with_its_line() {
        let err = parse("[node]\nname = \"a\"\nlisten_on = \"1.2.3.4:5\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("test.toml:3"), "{msg}");
        assert!(msg.contains("listen_on"), "{msg}");
    }

    #[test]
    fn invalid_value_names_key_and_line() {
        let err = parse("[balancer]\ninfo_interval_ms = 500\ndead_after_ms = 600\n").unwrap_err();
        let ConfigError::Bad { line, key, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!((*line, key.as_str()), (3, "balancer.dead_after_ms"));
    }

    #[test]
    fn bad_balancer_values_name_their_key() {
        for (text, key) in [
            ("margin = -1.0", "balancer.margin"),
            ("margin = nan", "balancer.margin"),
            ("min_demand = 2.0", "balancer.min_demand"),
            ("max_per_round = 0", "balancer.max_per_round"),
            ("consider_interval_ms = 5", "balancer.consider_interval_ms"),
            ("owner_load = -0.5", "balancer.owner_load"),
            ("leave_ask_every_ms = 0", "balancer.leave_ask_every_ms"),
            ("rotate_after_ms = 10", "balancer.rotate_after_ms"),
            ("push_changed_ms = 700000", "balancer.push_changed_ms"),
        ] {
            let err = parse(&format!("[balancer]\n{text}\n")).unwrap_err();
            assert!(err.to_string().contains(key), "{text}: {err}");
        }
        let c = parse("[balancer]\nauto_migrate = false\nmargin = 0.5\n").unwrap();
        assert!(!c.balancer.auto_migrate);
        assert_eq!(c.balancer.margin, 0.5);
    }

    #[test]
    fn bad_address_is_reported() {
        let err = parse("[node]\nlisten = \"nowhere\"\n").unwrap_err();
        assert!(err.to_string().contains("node.listen"), "{err}");
        assert!(err.to_string().contains(":2"), "{err}");
    }

    #[test]
    fn wildcard_listen_with_seeds_needs_advertise() {
        let err = parse("[node]\nseeds = [\"10.0.0.2:7340\"]\n").unwrap_err();
        assert!(err.to_string().contains("node.advertise"), "{err}");
    }

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("SIGUSR2"), Ok(libc::SIGUSR2));
        assert_eq!(parse_signal("rtmin+3"), Ok(libc::SIGRTMIN() + 3));
        assert_eq!(parse_signal("SIGRTMAX-1"), Ok(libc::SIGRTMAX() - 1));
        assert!(parse_signal("SIGKILL").is_err());
        let c = parse("[process]\nfreeze_signal = \"SIGUSR1\"\n").unwrap();
        assert_eq!(c.process.freeze_signal, libc::SIGUSR1);
        let err = parse("[process]\nfreeze_signal = 9\n").unwrap_err();
        assert!(err.to_string().contains("process.freeze_signal"), "{err}");
    }

    #[test]
    fn missing_file_says_what_to_do() {
        let err = Config::load_file(Path::new("/nonexistent/mosix.toml")).unwrap_err();
        assert!(err.to_string().contains("--config"), "{err}");
    }
}
