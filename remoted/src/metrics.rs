//! `remoted`'s metrics: the Prometheus text format on `GET /metrics` at
//! `metrics.listen` (off by default).
//!
//! What is exported, and where it comes from:
//! - the node's own entry as the event loop last published it (load,
//!   CPUs, speed, free memory, guests, processes away, accepting guests)
//!   and how many nodes it sees alive and dead: read at each scrape;
//! - the moves of this node's processes, from `homed`'s move histories
//!   (`mosps --history`), polled each second: counted by direction
//!   (`out` from this node, `in` to it, `between` two other nodes),
//!   outcome and reason, with the image bytes and a histogram of the time
//!   frozen. A process that ends less than a second after a move may take
//!   that move with it uncounted; guests of other homes are counted by
//!   their homes;
//! - the errors of the load-exchange links of the event loop, by kind.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mosix_proto::control::{ControlRequest, ControlResponse, NodeState};
use mosix_proto::local::{recv_local, send_local};
use mosix_proto::process::{MoveRecord, ProcessRequest, ProcessResponse};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::node::Snapshot;

/// Labels of a move.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MoveLabels {
    /// `out`, `in` or `between`, seen from this node.
    pub direction: String,
    /// `ok` or `failed`.
    pub outcome: String,
    /// `balancer`, `manual`, `asked_to_leave` or `other`.
    pub reason: String,
}

/// A label of a direction only.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    /// `out`, `in` or `between`.
    pub direction: String,
}

/// A label of a node state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// `alive` or `dead`.
    pub state: String,
}

/// A label of a kind of error.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The kind.
    pub kind: String,
}

/// A move as told apart in a history: when it ended, from, to.
type MoveKey = (u64, String, String);

/// Every metric, registered once.
pub struct Metrics {
    registry: Registry,
    load: Gauge<f64, AtomicU64>,
    cpus: Gauge<f64, AtomicU64>,
    speed: Gauge<f64, AtomicU64>,
    free_memory: Gauge,
    guests: Gauge,
    away: Gauge,
    accepts_guests: Gauge,
    nodes: Family<StateLabel, Gauge>,
    migrations: Family<MoveLabels, Counter>,
    bytes: Family<DirectionLabel, Counter>,
    frozen: Family<DirectionLabel, Histogram>,
    link_errors: Family<KindLabel, Counter>,
    history_errors: Counter,
    seen: Mutex<HashMap<i32, HashSet<MoveKey>>>,
}

fn frozen_histogram() -> Histogram {
    // 10 ms to about 82 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.01, 2.0, 14,
    ))
}

impl Metrics {
    /// All metrics at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("mosix");
        let m = Metrics {
            load: Gauge::default(),
            cpus: Gauge::default(),
            speed: Gauge::default(),
            free_memory: Gauge::default(),
            guests: Gauge::default(),
            away: Gauge::default(),
            accepts_guests: Gauge::default(),
            nodes: Family::default(),
            migrations: Family::default(),
            bytes: Family::default(),
            frozen: Family::new_with_constructor(frozen_histogram),
            link_errors: Family::default(),
            history_errors: Counter::default(),
            seen: Mutex::new(HashMap::new()),
            registry: Registry::default(),
        };
        registry.register(
            "load",
            "This node's load: run queue per standard CPU",
            m.load.clone(),
        );
        registry.register("cpus", "This node's CPU capacity", m.cpus.clone());
        registry.register(
            "speed",
            "Relative speed of one CPU (1.0 = reference)",
            m.speed.clone(),
        );
        registry.register(
            "free_memory_bytes",
            "Free memory of this node",
            m.free_memory.clone(),
        );
        registry.register(
            "guests",
            "Bodies of other homes' processes running here",
            m.guests.clone(),
        );
        registry.register(
            "away",
            "This node's processes running elsewhere",
            m.away.clone(),
        );
        registry.register(
            "accepts_guests",
            "1 if this node takes new guests (0 after mosctl block)",
            m.accepts_guests.clone(),
        );
        registry.register(
            "nodes",
            "Nodes this node knows, by state (alive, dead)",
            m.nodes.clone(),
        );
        registry.register(
            "migrations",
            "Moves of this node's processes, by direction, outcome and reason",
            m.migrations.clone(),
        );
        registry.register(
            "migration_bytes",
            "Image bytes sent by moves of this node's processes",
            m.bytes.clone(),
        );
        registry.register(
            "migration_frozen_seconds",
            "Time a process was frozen by a move that happened",
            m.frozen.clone(),
        );
        registry.register(
            "link_errors",
            "Load-exchange links closed on an error, by kind",
            m.link_errors.clone(),
        );
        registry.register(
            "history_errors",
            "Times homed could not be asked for the move histories",
            m.history_errors.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts a link closed on an error of `kind`.
    pub fn link_error(&self, kind: &str) {
        self.link_errors
            .get_or_create(&KindLabel {
                kind: kind.to_string(),
            })
            .inc();
    }

    /// Sets the node's gauges from the loop's latest snapshot.
    pub fn observe(&self, snap: &Snapshot) {
        if let Some(status) = &snap.status {
            let e = &status.entry;
            self.load.set(e.load);
            self.cpus.set(e.cpus);
            self.speed.set(e.speed);
            self.free_memory
                .set(i64::try_from(e.free_mem_bytes).unwrap_or(i64::MAX));
            self.guests.set(i64::from(e.guests));
            self.away.set(i64::from(e.away));
            self.accepts_guests.set(i64::from(e.accepts_guests));
        }
        for (state, name) in [(NodeState::Alive, "alive"), (NodeState::Dead, "dead")] {
            let n = snap.nodes.iter().filter(|n| n.state == state).count();
            self.nodes
                .get_or_create(&StateLabel { state: name.into() })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Counts the moves of `histories` (pid, its records) not counted yet;
    /// `me` is this node's name. Processes no longer listed are forgotten.
    pub fn count_moves(&self, me: &str, histories: &[(i32, Vec<MoveRecord>)]) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|pid, _| histories.iter().any(|(p, _)| p == pid));
        for (pid, records) in histories {
            let known = seen.entry(*pid).or_default();
            for r in records {
                if !known.insert((r.at_ms, r.from.clone(), r.to.clone())) {
                    continue;
                }
                let direction = if r.from == me {
                    "out"
                } else if r.to == me {
                    "in"
                } else {
                    "between"
                }
                .to_string();
                self.migrations
                    .get_or_create(&MoveLabels {
                        direction: direction.clone(),
                        outcome: if r.error.is_none() { "ok" } else { "failed" }.into(),
                        reason: reason(&r.why).into(),
                    })
                    .inc();
                let d = DirectionLabel { direction };
                self.bytes.get_or_create(&d).inc_by(r.bytes);
                if r.error.is_none() {
                    self.frozen
                        .get_or_create(&d)
                        .observe(r.frozen_ms as f64 / 1000.0);
                }
            }
        }
    }

    /// The text format of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// A bounded label for homed's free-text `why`.
fn reason(why: &str) -> &'static str {
    if why.starts_with("load balancing") {
        "balancer"
    } else if why.starts_with("asked by uid") {
        "manual"
    } else if why.starts_with("node ") {
        "asked_to_leave"
    } else {
        "other"
    }
}

/// Serves `metrics` on `listen` and polls homed (at `homed_socket`) for
/// move histories, each in a thread of its own; `me` is this node's name.
pub fn spawn(
    listen: SocketAddr,
    metrics: Arc<Metrics>,
    snapshot: Arc<Mutex<Snapshot>>,
    homed_socket: PathBuf,
    me: String,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen)?;
    let served = metrics.clone();
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => {
                        let snap = snapshot.lock().unwrap_or_else(|p| p.into_inner()).clone();
                        served.observe(&snap);
                        if let Err(e) = answer(s, &served) {
                            tracing::debug!(error = %e, "metrics request failed");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "accept on the metrics port failed"),
                }
            }
        })?;
    std::thread::Builder::new()
        .name("metrics-history".into())
        .spawn(move || {
            loop {
                match histories(&homed_socket) {
                    Ok(h) => metrics.count_moves(&me, &h),
                    Err(e) => {
                        metrics.history_errors.inc();
                        tracing::debug!(error = %e, "metrics: cannot ask homed for move histories");
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })?;
    Ok(())
}

/// Every process homed lists, with its move history.
fn histories(socket: &std::path::Path) -> Result<Vec<(i32, Vec<MoveRecord>)>, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let req = ControlRequest::Process {
        request: ProcessRequest::List,
    };
    send_local(&mut s, &req).map_err(|e| e.to_string())?;
    match recv_local(&mut s).map_err(|e| e.to_string())? {
        ControlResponse::Process {
            response: ProcessResponse::List { processes },
        } => Ok(processes.into_iter().map(|p| (p.pid, p.history)).collect()),
        other => Err(format!("unexpected answer: {other:?}")),
    }
}

/// Answers one HTTP request: the metrics for `GET /metrics`, 404 else.
fn answer(stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    // The headers are read and ignored.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut parts = first.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, kind, body) = if method == "GET" && (path == "/metrics" || path == "/") {
        (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        )
    } else {
        (
            "404 Not Found",
            "text/plain",
            "only GET /metrics is served here\n".to_string(),
        )
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(at_ms: u64, from: &str, to: &str, why: &str, error: Option<&str>) -> MoveRecord {
        MoveRecord {
            at_ms,
            from: from.into(),
            to: to.into(),
            why: why.into(),
            frozen_ms: 120,
            bytes: 4096,
            error: error.map(String::from),
        }
    }

    #[test]
    fn moves_are_counted_once_by_direction_outcome_and_reason() {
        let m = Metrics::new();
        let h = vec![(
            7,
            vec![
                record(1, "n1", "n2", "load balancing", None),
                record(2, "n2", "n1", "asked by uid 0", None),
                record(3, "n1", "n3", "asked by uid 0", Some("refused")),
            ],
        )];
        m.count_moves("n1", &h);
        m.count_moves("n1", &h);
        let text = m.encode();
        assert!(text.contains(
            "mosix_migrations_total{direction=\"out\",outcome=\"ok\",reason=\"balancer\"} 1"
        ));
        assert!(text.contains(
            "mosix_migrations_total{direction=\"in\",outcome=\"ok\",reason=\"manual\"} 1"
        ));
        assert!(text.contains(
            "mosix_migrations_total{direction=\"out\",outcome=\"failed\",reason=\"manual\"} 1"
        ));
        assert!(text.contains("mosix_migration_bytes_total{direction=\"out\"} 8192"));
        assert!(text.contains("mosix_migration_frozen_seconds_count{direction=\"in\"} 1"));
    }

    #[test]
    fn gauges_follow_the_snapshot_and_errors_count() {
        let m = Metrics::new();
        m.observe(&Snapshot::default());
        m.link_error("auth");
        let text = m.encode();
        assert!(text.contains("mosix_link_errors_total{kind=\"auth\"} 1"));
        assert!(text.contains("mosix_nodes{state=\"alive\"} 0"));
        assert!(text.ends_with("# EOF\n"));
    }
}
