//! CPU speed calibration: how fast one CPU of this node runs a fixed,
//! CPU-bound piece of work, relative to a reference core.
//!
//! The work is a dependent chain of 64-bit multiply/xor/shift/add steps (a
//! SplitMix-like mixer), so it measures the core's integer latency and
//! clock, not memory or vector units, and cannot be parallelised or folded
//! away by the compiler (`black_box`). It runs [`SPEED_ROUNDS`] times, each
//! about 5 ms on the reference core, and the *fastest* run counts: a run
//! that was preempted, or stalled by a cgroup CPU quota (a node limited to
//! half a CPU is throttled for whole periods), only comes out slower, so the
//! best run is the core's real speed and the quota stays in the capacity
//! figure where it belongs.
//!
//! The reference, [`REFERENCE_NS`], is the best time of one run on the
//! project's development machine (one x86-64 "Intel Xeon Processor" virtual
//! CPU at 2.6 GHz, 2026: a typical modern server core; one step takes ~5.6
//! cycles there), so such a core measures ~1.0. Debug builds
//! run the same loop several times slower, so they are compared against a
//! time measured on the same machine with a debug build, and a debug node
//! also measures ~1.0 there. Where this automatic figure is wrong for a
//! cluster (e.g. heterogeneous builds), the node configuration's `speed`
//! overrides it.

use std::hint::black_box;
use std::time::Instant;

/// How many timed runs [`measure_speed`] makes; the fastest counts.
pub const SPEED_ROUNDS: u32 = 9;

/// Steps of the mixer in one run: about 5 ms on the reference core in
/// this build's profile.
const STEPS: u64 = if cfg!(debug_assertions) {
    1_000_000
} else {
    2_300_000
};

/// Best time of one run on the reference core, in ns, for this build's
/// profile (see the module docs).
pub const REFERENCE_NS: u64 = if cfg!(debug_assertions) {
    REFERENCE_NS_DEBUG
} else {
    REFERENCE_NS_RELEASE
};

/// 2,300,000 steps, `--release`, on the reference core (measured
/// 2,150 ns per 1,000 steps, best of 5 x 9 runs).
const REFERENCE_NS_RELEASE: u64 = 4_950_000;
/// 1,000,000 steps, debug build, on the reference core (best of 5 x 9 runs:
/// 5.00 to 5.06 ms).
const REFERENCE_NS_DEBUG: u64 = 5_040_000;

fn work(steps: u64) -> u64 {
    let mut x = black_box(0x9E37_79B9_7F4A_7C15_u64);
    for i in 0..steps {
        x = (x ^ (x >> 31))
            .wrapping_mul(0xBF58_476D_1CE4_E5B9)
            .wrapping_add(i);
    }
    x
}

/// Measures this CPU's speed relative to the reference core (1.0 = as fast;
/// 2.0 = twice as fast). Takes about 50 ms of CPU time; call once at start.
pub fn measure_speed() -> f64 {
    let mut best = u128::MAX;
    for _ in 0..SPEED_ROUNDS {
        let start = Instant::now();
        black_box(work(black_box(STEPS)));
        best = best.min(start.elapsed().as_nanos());
    }
    REFERENCE_NS as f64 / best.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_of_this_machine_is_sane() {
        let s = measure_speed();
        eprintln!("measured speed {s:.3}");
        // Any real core is within a factor of 20 of the reference; the test
        // catches a broken calibration or a loop the compiler removed.
        assert!(s.is_finite() && s > 0.05 && s < 20.0, "speed {s}");
    }

    #[test]
    fn the_work_depends_on_every_step() {
        assert_ne!(work(1000), work(1001));
    }
}
