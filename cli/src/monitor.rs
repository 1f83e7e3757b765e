//! What `mosmon` shows, free of the terminal: the JSON document of
//! `mosmon --json`, the rows and bars of each view, and the text snapshot
//! of `mosmon --once`. The live monitor draws the same rows.

use mosix_proto::control::{NodeInfo, NodeState};
use serde::Serialize;

/// Which figure the bars show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Normalised load (key `l`).
    Load,
    /// Free memory (key `m`).
    Memory,
    /// Guests here and own processes away (key `g`).
    Guests,
}

impl View {
    /// The view a key selects, if any.
    pub fn from_key(c: char) -> Option<View> {
        match c {
            'l' => Some(View::Load),
            'm' => Some(View::Memory),
            'g' => Some(View::Guests),
            _ => None,
        }
    }

    /// Its title.
    pub fn title(self) -> &'static str {
        match self {
            View::Load => "load (1.0 = one CPU-bound process per reference CPU)",
            View::Memory => "free memory",
            View::Guests => "guests here (#) and own processes away (+)",
        }
    }
}

/// One node in `mosmon --json` (documented in the README).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeDoc {
    /// Node name.
    pub name: String,
    /// "alive" or "dead", as this node judges.
    pub state: &'static str,
    /// Whether it is the node mosmon asked.
    pub is_self: bool,
    /// Normalised load.
    pub load: f64,
    /// CPU capacity.
    pub cpus: f64,
    /// Relative CPU speed.
    pub speed: f64,
    /// Free memory, bytes.
    pub free_mem_bytes: u64,
    /// Guests running there.
    pub guests: u32,
    /// Its own processes running elsewhere.
    pub away: u32,
    /// False after `mosctl block`.
    pub accepts_guests: bool,
    /// Seconds since this node last heard of it.
    pub last_heard_s: f64,
}

/// The whole `mosmon --json` document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Doc {
    /// The node asked.
    pub node: String,
    /// Every node it knows, by name (n2 before n10).
    pub nodes: Vec<NodeDoc>,
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Sorts `n2` before `n10`.
fn natural_key(name: &str) -> (&str, u64, &str) {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (stem, num) = name.split_at(name.len() - digits);
    (stem, num.parse().unwrap_or(0), name)
}

/// The document for `nodes` (as remoted answered them).
pub fn doc(nodes: &[NodeInfo]) -> Doc {
    let mut v: Vec<&NodeInfo> = nodes.iter().collect();
    v.sort_by(|a, b| natural_key(&a.entry.name).cmp(&natural_key(&b.entry.name)));
    Doc {
        node: nodes
            .iter()
            .find(|n| n.is_self)
            .map(|n| n.entry.name.clone())
            .unwrap_or_default(),
        nodes: v
            .into_iter()
            .map(|n| NodeDoc {
                name: n.entry.name.clone(),
                state: match n.state {
                    NodeState::Alive => "alive",
                    NodeState::Dead => "dead",
                },
                is_self: n.is_self,
                load: round3(n.entry.load),
                cpus: round3(n.entry.cpus),
                speed: round3(n.entry.speed),
                free_mem_bytes: n.entry.free_mem_bytes,
                guests: n.entry.guests,
                away: n.entry.away,
                accepts_guests: n.entry.accepts_guests,
                last_heard_s: round3(n.entry.age_ms as f64 / 1000.0),
            })
            .collect(),
    }
}

/// A bar of `width` cells for `value` out of `max` (clamped).
pub fn bar(value: f64, max: f64, width: usize) -> String {
    let frac = if max > 0.0 && value.is_finite() {
        (value / max).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let full = (frac * width as f64).round() as usize;
    format!("{}{}", "#".repeat(full), ".".repeat(width - full))
}

/// Bytes for people.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// One row of a view: the node's name (marked `*` if it is the node asked,
/// `!` if it refuses guests), its bar, and the figure beside it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Name and marks.
    pub name: String,
    /// The bar.
    pub bar: String,
    /// The figure shown by the bar.
    pub figure: String,
    /// CPUs, speed, guests and away, for the side columns.
    pub details: String,
    /// Whether the node is believed dead.
    pub dead: bool,
}

/// The rows of `view` with bars `width` cells wide.
pub fn rows(d: &Doc, view: View, width: usize) -> Vec<Row> {
    let max = match view {
        View::Load => d.nodes.iter().map(|n| n.load).fold(2.0, f64::max),
        View::Memory => d
            .nodes
            .iter()
            .map(|n| n.free_mem_bytes as f64)
            .fold(1.0, f64::max),
        View::Guests => d
            .nodes
            .iter()
            .map(|n| f64::from(n.guests + n.away))
            .fold(4.0, f64::max),
    };
    d.nodes
        .iter()
        .map(|n| {
            let (bar_text, figure) = match view {
                View::Load => (bar(n.load, max, width), format!("{:.2}", n.load)),
                View::Memory => (
                    bar(n.free_mem_bytes as f64, max, width),
                    human_bytes(n.free_mem_bytes),
                ),
                View::Guests => {
                    let cells = |k: u32| ((f64::from(k) / max) * width as f64).round() as usize;
                    let g = cells(n.guests).min(width);
                    let a = cells(n.away).min(width - g);
                    (
                        format!(
                            "{}{}{}",
                            "#".repeat(g),
                            "+".repeat(a),
                            ".".repeat(width - g - a)
                        ),
                        format!("{} / {}", n.guests, n.away),
                    )
                }
            };
            let mut name = n.name.clone();
            if n.is_self {
                name.push('*');
            }
            if !n.accepts_guests {
                name.push('!');
            }
            Row {
                name,
                bar: bar_text,
                figure,
                details: format!(
                    "cpus {:.2} speed {:.2} guests {} away {}{}",
                    n.cpus,
                    n.speed,
                    n.guests,
                    n.away,
                    if n.state == "dead" { " DEAD" } else { "" }
                ),
                dead: n.state == "dead",
            }
        })
        .collect()
}

/// `HH:MM:SS` (UTC) of `unix_secs`, shown in the live view's title so the
/// viewer sees each refresh happen even when no figure changed.
pub fn clock_utc(unix_secs: u64) -> String {
    let day = unix_secs % 86_400;
    format!("{:02}:{:02}:{:02}", day / 3_600, day % 3_600 / 60, day % 60)
}

/// The keys of the live view, as its bottom line and `mosmon --help` list
/// them.
pub const KEYS_HELP: &str = "l load   m memory   g guests/away   q quit";

/// `mosmon --once`: every view's rows as plain text.
pub fn text(d: &Doc, width: usize) -> String {
    let mut out = String::new();
    for view in [View::Load, View::Memory, View::Guests] {
        out.push_str(&format!("{}\n", view.title()));
        for r in rows(d, view, width) {
            out.push_str(&format!(
                "  {:<10} [{}] {:>12}  {}\n",
                r.name, r.bar, r.figure, r.details
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mosix_proto::msg::LoadEntry;

    fn node(name: &str, load: f64, guests: u32, away: u32, is_self: bool) -> NodeInfo {
        NodeInfo {
            entry: LoadEntry {
                name: name.into(),
                address: "10.0.0.1:7340".parse().unwrap(),
                generation: 1,
                age_ms: 1500,
                load,
                cpus: 0.5,
                speed: 1.0,
                free_mem_bytes: 1 << 30,
                accepts_guests: name != "n3",
                guests,
                away,
            },
            state: if name == "n10" {
                NodeState::Dead
            } else {
                NodeState::Alive
            },
            is_self,
        }
    }

    fn sample() -> Vec<NodeInfo> {
        vec![
            node("n10", 0.0, 0, 0, false),
            node("n2", 2.0, 1, 0, false),
            node("n1", 4.0, 0, 2, true),
            node("n3", 0.0, 0, 0, false),
        ]
    }

    #[test]
    fn the_document_is_sorted_and_complete() {
        let d = doc(&sample());
        assert_eq!(d.node, "n1");
        let names: Vec<&str> = d.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["n1", "n2", "n3", "n10"]);
        let json = serde_json::to_value(&d).unwrap();
        let first = &json["nodes"][0];
        for key in [
            "name",
            "state",
            "is_self",
            "load",
            "cpus",
            "speed",
            "free_mem_bytes",
            "guests",
            "away",
            "accepts_guests",
            "last_heard_s",
        ] {
            assert!(first.get(key).is_some(), "missing {key}");
        }
        assert_eq!(first["away"], 2);
        assert_eq!(json["nodes"][3]["state"], "dead");
        assert_eq!(json["nodes"][2]["accepts_guests"], false);
    }

    #[test]
    fn bars_are_proportional_and_clamped() {
        assert_eq!(bar(1.0, 2.0, 10), "#####.....");
        assert_eq!(bar(5.0, 2.0, 4), "####");
        assert_eq!(bar(f64::NAN, 2.0, 3), "...");
        assert_eq!(bar(1.0, 0.0, 2), "..");
    }

    #[test]
    fn views_mark_self_and_blocked_and_show_their_figure() {
        let d = doc(&sample());
        let load = rows(&d, View::Load, 8);
        assert_eq!(load[0].name, "n1*");
        assert_eq!(load[0].bar, "########");
        assert_eq!(load[1].bar, "####....");
        assert_eq!(load[2].name, "n3!");
        assert!(load[3].dead);
        let g = rows(&d, View::Guests, 8);
        assert_eq!(g[0].bar, "++++....");
        assert_eq!(g[1].bar, "##......");
        assert_eq!(g[0].figure, "0 / 2");
        let t = text(&d, 8);
        assert!(t.contains("free memory"));
        assert!(t.contains("1.0 GiB"));
        assert_eq!(View::from_key('m'), Some(View::Memory));
        assert_eq!(View::from_key('x'), None);
    }

    #[test]
    fn the_clock_is_utc_time_of_day() {
        assert_eq!(clock_utc(0), "00:00:00");
        // 2026-11-30 01:45:07 UTC.
        assert_eq!(clock_utc(1_796_003_107), "01:45:07");
        assert_eq!(clock_utc(86_399), "23:59:59");
    }

    #[test]
    fn every_view_has_a_key_and_the_help_names_it() {
        for (c, v) in [('l', View::Load), ('m', View::Memory), ('g', View::Guests)] {
            assert_eq!(View::from_key(c), Some(v));
            assert!(KEYS_HELP.contains(&format!("{c} ")), "{c} missing");
        }
        assert!(KEYS_HELP.contains("q quit"));
    }
}
