//! The body's time namespace: CLOCK_MONOTONIC and CLOCK_BOOTTIME as at
//! home (ARCHITECTURE.md section 3).
//!
//! Each machine counts both clocks from its own boot, so a body restored
//! on another machine as it is would see its monotonic time jump by the
//! difference of the two uptimes, forwards or backwards: timeouts fire at
//! once or never, and elapsed times come out negative. The host therefore
//! forks the restorer into a new time namespace whose offsets make these
//! clocks read what the home's read (the home sends them with the offer;
//! the transfer then takes the same time on both sides). The body's
//! children share it, and a later move computes it again from the home's
//! clocks, so the process sees one clock, its home's, wherever it runs.
//!
//! Offsets in `/proc/PID/timens_offsets` count from the machine's own
//! clocks (the initial time namespace), not from the namespace `remoted`
//! itself may run in, so that one's offsets are added back.

use mosix_proto::migrate::HomeClocks;

const NS_PER_S: i64 = 1_000_000_000;

/// The offsets (monotonic, boottime; nanoseconds) that make a new time
/// namespace show `home`, given this namespace's clocks `here` and its
/// own offsets `ours`.
pub fn offsets(home: HomeClocks, here: HomeClocks, ours: (i64, i64)) -> (i64, i64) {
    (
        home.monotonic_ns - (here.monotonic_ns - ours.0),
        home.boottime_ns - (here.boottime_ns - ours.1),
    )
}

/// The text written to `/proc/self/timens_offsets`: seconds may be
/// negative, nanoseconds never.
pub fn offsets_text((mono, boot): (i64, i64)) -> String {
    let line = |name: &str, ns: i64| {
        format!(
            "{name} {} {}\n",
            ns.div_euclid(NS_PER_S),
            ns.rem_euclid(NS_PER_S)
        )
    };
    line("monotonic", mono) + &line("boottime", boot)
}

/// Parse a `timens_offsets` text: (monotonic, boottime) in nanoseconds.
pub fn parse_offsets(text: &str) -> Option<(i64, i64)> {
    let (mut mono, mut boot) = (None, None);
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [name, s, ns] = f.as_slice() else {
            return None;
        };
        let v = s.parse::<i64>().ok()? * NS_PER_S + ns.parse::<i64>().ok()?;
        match *name {
            "monotonic" => mono = Some(v),
            "boottime" => boot = Some(v),
            _ => {}
        }
    }
    Some((mono?, boot?))
}

/// This process's own time-namespace offsets; (0, 0) when the kernel has
/// no time namespaces or they cannot be read.
pub fn own_offsets() -> (i64, i64) {
    std::fs::read_to_string("/proc/self/timens_offsets")
        .ok()
        .and_then(|t| parse_offsets(&t))
        .unwrap_or((0, 0))
}

/// Whether this kernel has time namespaces.
pub fn supported() -> bool {
    std::path::Path::new("/proc/self/ns/time").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_make_the_new_namespace_read_the_homes_clocks() {
        let home = HomeClocks {
            monotonic_ns: 5_000 * NS_PER_S,
            boottime_ns: 6_000 * NS_PER_S,
        };
        // This host runs 1000 s ahead of its machine (its own namespace).
        let here = HomeClocks {
            monotonic_ns: 3_000 * NS_PER_S,
            boottime_ns: 3_500 * NS_PER_S,
        };
        let ours = (1_000 * NS_PER_S, 1_000 * NS_PER_S);
        let (m, b) = offsets(home, here, ours);
        // The machine reads 2000 s / 2500 s: new = machine + offset = home.
        assert_eq!(2_000 * NS_PER_S + m, home.monotonic_ns);
        assert_eq!(2_500 * NS_PER_S + b, home.boottime_ns);
    }

    #[test]
    fn negative_offsets_keep_nanoseconds_positive_and_parse_back() {
        let text = offsets_text((-1_500_000_000, 2_000_000_001));
        assert_eq!(text, "monotonic -2 500000000\nboottime 2 1\n");
        assert_eq!(parse_offsets(&text), Some((-1_500_000_000, 2_000_000_001)));
        // As the kernel prints them.
        assert_eq!(
            parse_offsets("monotonic        1000         0\nboottime         1000         0\n"),
            Some((1_000 * NS_PER_S, 1_000 * NS_PER_S))
        );
        assert_eq!(parse_offsets("monotonic 1\n"), None);
        assert_eq!(parse_offsets("garbage"), None);
    }
}
