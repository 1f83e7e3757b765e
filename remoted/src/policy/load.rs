//! Load calculation (ARCHITECTURE.md section 7): the node's run-queue length,
//! sampled each tick and folded once a second into a smoothed figure that
//! rises slowly and falls at once, then normalised by the node's capacity.
//!
//! # Formula
//!
//! Every tick the daemon calls [`LoadCalculator::sample`] with the number of
//! runnable tasks it sees (not counting its own sampling thread). Once a
//! second it calls [`LoadCalculator::fold`], which takes the mean `a` of the
//! samples since the last fold and updates the smoothed run queue `q`
//! (Kerrighed's figures from MOSIX):
//!
//! ```text
//! q' = (5 q + 3 a) / 8    when a > q   (rising: damped, so a short burst
//!                                       does not attract or repel work)
//! q' = a                  when a <= q  (falling: at once, so a node that
//!                                       lost work is offered as a target
//!                                       without delay)
//! ```
//!
//! The published, normalised load is
//!
//! ```text
//! load = q / (cpus * speed)
//! ```
//!
//! where `cpus` is the CPU capacity (fractional inside a CPU-limited cgroup)
//! and `speed` the speed of one CPU relative to the reference core (1.0, see
//! `measure::measure_speed`). With this scale one CPU-bound process on one
//! reference CPU gives a run queue of 1 and hence a load of exactly 1.0; the
//! same process on a two-CPU node gives 0.5, on a half-CPU cgroup 2.0, and on
//! a core twice as fast 0.5. The scale factor is therefore 1, so that
//! "the load of one CPU-bound process" on a reference CPU is the unit the
//! migration rule compares against.

/// Why a [`LoadCalculator`] could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LoadError {
    /// CPU capacity {0} is not a positive finite number; measure it with `measure::LoadSource` or set it in the node configuration
    #[error(
        "CPU capacity {0} is not a positive finite number; measure it with measure::LoadSource or set it in the node configuration"
    )]
    BadCpus(f64),
    /// CPU speed {0} is not a positive finite number; measure it with `measure::measure_speed` or fix `speed` in the node configuration
    #[error(
        "CPU speed {0} is not a positive finite number; measure it with measure::measure_speed or fix `speed` in the node configuration"
    )]
    BadSpeed(f64),
}

/// Turns run-queue samples into the node's normalised load (see the module
/// documentation for the formula). Pure: the caller owns the clock and calls
/// [`fold`](Self::fold) once a second.
#[derive(Debug, Clone)]
pub struct LoadCalculator {
    cpus: f64,
    speed: f64,
    sum: f64,
    count: u32,
    smoothed: f64,
    rejected: u64,
}

impl LoadCalculator {
    /// A calculator for a node of `cpus` CPUs of relative `speed`, starting
    /// at load 0.
    pub fn new(cpus: f64, speed: f64) -> Result<Self, LoadError> {
        check_capacity(cpus, speed)?;
        Ok(Self {
            cpus,
            speed,
            sum: 0.0,
            count: 0,
            smoothed: 0.0,
            rejected: 0,
        })
    }

    /// Changes the capacity (a cgroup quota or CPU hot-plug changed); the
    /// smoothed run queue is kept, only its normalisation changes.
    pub fn set_capacity(&mut self, cpus: f64, speed: f64) -> Result<(), LoadError> {
        check_capacity(cpus, speed)?;
        self.cpus = cpus;
        self.speed = speed;
        Ok(())
    }

    /// Records one run-queue sample (runnable tasks, not counting the
    /// sampler). A NaN, infinite or negative sample is a measurement bug: it
    /// is ignored and counted in [`rejected_samples`](Self::rejected_samples).
    pub fn sample(&mut self, run_queue: f64) {
        if !run_queue.is_finite() || run_queue < 0.0 {
            self.rejected += 1;
            return;
        }
        self.sum += run_queue;
        self.count = self.count.saturating_add(1);
    }

    /// Folds the samples taken since the last fold into the smoothed run
    /// queue; call once a second. Without samples since the last fold the
    /// smoothed value is kept (a stalled sampler must not fake an idle
    /// node). Returns the new normalised load.
    pub fn fold(&mut self) -> f64 {
        if self.count > 0 {
            let avg = self.sum / f64::from(self.count);
            self.smoothed = if avg > self.smoothed {
                (5.0 * self.smoothed + 3.0 * avg) / 8.0
            } else {
                avg
            };
            self.sum = 0.0;
            self.count = 0;
        }
        self.load()
    }

    /// The smoothed run queue (runnable tasks), before normalisation.
    pub fn run_queue(&self) -> f64 {
        self.smoothed
    }

    /// The normalised load: 1.0 is one CPU-bound process per reference CPU.
    pub fn load(&self) -> f64 {
        self.smoothed / (self.cpus * self.speed)
    }

    /// CPU capacity used for normalisation.
    pub fn cpus(&self) -> f64 {
        self.cpus
    }

    /// CPU speed used for normalisation.
    pub fn speed(&self) -> f64 {
        self.speed
    }

    /// How many samples were ignored as absurd (NaN, infinite, negative).
    pub fn rejected_samples(&self) -> u64 {
        self.rejected
    }
}

fn check_capacity(cpus: f64, speed: f64) -> Result<(), LoadError> {
    if !cpus.is_finite() || cpus <= 0.0 {
        return Err(LoadError::BadCpus(cpus));
    }
    if !speed.is_finite() || speed <= 0.0 {
        return Err(LoadError::BadSpeed(speed));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn one_cpu_bound_process_on_one_reference_cpu_is_one() {
        let mut c = LoadCalculator::new(1.0, 1.0).unwrap();
        // Rising: each fold moves 3/8 of the way towards the sample.
        let mut expected = 0.0;
        for _ in 0..60 {
            for _ in 0..10 {
                c.sample(1.0);
            }
            expected = (5.0 * expected + 3.0 * 1.0) / 8.0;
            assert!(close(c.fold(), expected));
        }
        assert!((c.load() - 1.0).abs() < 1e-6, "load {}", c.load());
    }

    #[test]
    fn rises_slowly_by_the_five_three_rule() {
        let mut c = LoadCalculator::new(1.0, 1.0).unwrap();
        c.sample(4.0);
        c.sample(4.0);
        assert!(close(c.fold(), 1.5)); // (5*0 + 3*4)/8
        c.sample(4.0);
        assert!(close(c.fold(), (5.0 * 1.5 + 12.0) / 8.0));
    }

    #[test]
    fn falls_at_once() {
        let mut c = LoadCalculator::new(1.0, 1.0).unwrap();
        for _ in 0..50 {
            c.sample(3.0);
            c.fold();
        }
        assert!(c.run_queue() > 2.9);
        c.sample(1.0);
        c.sample(0.0);
        assert!(close(c.fold(), 0.5));
    }

    #[test]
    fn averages_the_samples_of_one_second() {
        let mut c = LoadCalculator::new(1.0, 1.0).unwrap();
        c.sample(8.0);
        c.sample(0.0);
        // mean 4 -> rising rule: 3*4/8
        assert!(close(c.fold(), 1.5));
    }

    #[test]
    fn normalises_by_cpus_and_speed() {
        let mut c = LoadCalculator::new(2.0, 1.0).unwrap();
        for _ in 0..100 {
            c.sample(1.0);
            c.fold();
        }
        assert!((c.load() - 0.5).abs() < 1e-6);
        c.set_capacity(0.5, 1.0).unwrap();
        assert!((c.load() - 2.0).abs() < 1e-6);
        c.set_capacity(1.0, 2.0).unwrap();
        assert!((c.load() - 0.5).abs() < 1e-6);
    }

    #[test]
    fn fold_without_samples_keeps_the_load() {
        let mut c = LoadCalculator::new(1.0, 1.0).unwrap();
        c.sample(2.0);
        let l = c.fold();
        assert!(close(c.fold(), l));
    }

    #[test]
    fn absurd_samples_are_ignored_and_counted() {
        let mut c = LoadCalculator::new(1.0, 1.0).unwrap();
        c.sample(f64::NAN);
        c.sample(-1.0);
        c.sample(f64::INFINITY);
        c.sample(2.0);
        assert!(close(c.fold(), 0.75));
        assert_eq!(c.rejected_samples(), 3);
    }

    #[test]
    fn bad_capacity_is_an_error() {
        assert_eq!(
            LoadCalculator::new(0.0, 1.0).unwrap_err(),
            LoadError::BadCpus(0.0)
        );
        assert!(matches!(
            LoadCalculator::new(1.0, f64::NAN),
            Err(LoadError::BadSpeed(_))
        ));
        let mut c = LoadCalculator::new(1.0, 1.0).unwrap();
        assert!(c.set_capacity(-1.0, 1.0).is_err());
        assert!(close(c.cpus(), 1.0));
    }
}
