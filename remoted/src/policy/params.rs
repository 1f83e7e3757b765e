//! The balancer's run-time parameters as `mosctl params` reads and sets
//! them: `KEY=VALUE` texts checked and applied all or nothing. Pure.

use super::consider::{ConsiderError, ConsiderParams};
use super::leave::LeaveParams;
use mosix_proto::config::BalancerConfig;

/// Everything `mosctl params` can read and set.
#[derive(Debug, Clone, PartialEq)]
pub struct Tunables {
    /// Automatic migration on (the load rule and memory ushering run).
    pub auto_migrate: bool,
    /// How often a consideration round runs, milliseconds.
    pub interval_ms: u64,
    /// Migration consideration.
    pub consider: ConsiderParams,
    /// When guests are asked to leave.
    pub leave: LeaveParams,
}

impl Default for Tunables {
    fn default() -> Self {
        Self {
            auto_migrate: true,
            interval_ms: 1_000,
            consider: ConsiderParams::default(),
            leave: LeaveParams::default(),
        }
    }
}

/// Why a `KEY=VALUE` could not be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamError {
    /// `{0}` is not KEY=VALUE; write e.g. margin=0.25
    #[error("`{0}` is not KEY=VALUE; write e.g. margin=0.25")]
    NotKeyValue(String),
    /// unknown parameter `{0}`; `mosctl params` lists them
    #[error("unknown parameter `{0}`; `mosctl params` lists them")]
    UnknownKey(String),
    /// {key}: `{value}` is not {expected}
    #[error("{key}: `{value}` is not {expected}")]
    BadValue {
        /// The key.
        key: String,
        /// The text given.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// the values together are not usable: {0}
    #[error("the values together are not usable: {0}")]
    Invalid(#[from] ConsiderError),
    /// interval_ms must be between 100 and 60000 milliseconds
    #[error("interval_ms must be between 100 and 60000 milliseconds")]
    BadInterval,
    /// the leave parameters are not usable: {0}
    #[error("the leave parameters are not usable: {0}")]
    BadLeave(&'static str),
}

/// `(key, meaning with unit)` of every parameter, in display order.
const KEYS: &[(&str, &str)] = &[
    (
        "auto_migrate",
        "true: the balancer moves processes on its own",
    ),
    ("interval_ms", "time between consideration rounds, ms"),
    (
        "residency_ms",
        "a process is considered only after running here this long, ms",
    ),
    (
        "margin",
        "stability margin, fraction of one CPU-bound process here",
    ),
    (
        "min_demand",
        "only processes wanting at least this fraction of a CPU move for load",
    ),
    ("max_per_round", "most migrations decided per round"),
    (
        "accounting_hold_ms",
        "how long a decided move raises our copy of the target's load, ms",
    ),
    (
        "no_return_ms",
        "a process is not sent back where it came from within this, ms",
    ),
    (
        "max_info_age_ms",
        "targets whose news is older than this are skipped, ms",
    ),
    (
        "usher_below_bytes",
        "memory ushering starts below this much free memory, bytes",
    ),
    (
        "memory_reserve_bytes",
        "free memory a target keeps after taking a process, bytes",
    ),
    (
        "owner_load",
        "own (non-guest) run queue from which the owner counts as back, processes",
    ),
    (
        "owner_hold_ms",
        "the owner counts as back after the own load held this long, ms",
    ),
    (
        "leave_ask_every_ms",
        "a guest is asked to leave at most once per this, ms",
    ),
    (
        "rotate_after_ms",
        "rotation: an extra process moves on after all here stayed this long, ms (0 off)",
    ),
];

impl Tunables {
    /// The parameters a node's configuration file sets (news older than
    /// `dead_after_ms` is too old to move a process for).
    pub fn from_config(b: &BalancerConfig) -> Result<Tunables, ParamError> {
        let t = Tunables {
            auto_migrate: b.auto_migrate,
            interval_ms: b.consider_interval_ms,
            consider: ConsiderParams {
                residency_ms: b.residency_ms,
                margin: b.margin,
                min_demand: b.min_demand,
                max_per_round: b.max_per_round,
                accounting_hold_ms: b.accounting_hold_ms,
                no_return_ms: b.no_return_ms,
                max_info_age_ms: b.dead_after_ms,
                usher_below_bytes: b.usher_below_bytes,
                memory_reserve_bytes: b.memory_reserve_bytes,
                rotate_after_ms: b.rotate_after_ms,
            },
            leave: LeaveParams {
                owner_load: b.owner_load,
                owner_hold_ms: b.owner_hold_ms,
                ask_every_ms: b.leave_ask_every_ms,
            },
        };
        t.validate()?;
        Ok(t)
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<(), ParamError> {
        self.consider.validate()?;
        if !(100..=60_000).contains(&self.interval_ms) {
            return Err(ParamError::BadInterval);
        }
        self.leave.validate().map_err(ParamError::BadLeave)
    }

    /// Every parameter as `(key, value, meaning)`.
    pub fn rows(&self) -> Vec<(String, String, String)> {
        KEYS.iter()
            .map(|(k, about)| (k.to_string(), self.get(k), about.to_string()))
            .collect()
    }

    fn get(&self, key: &str) -> String {
        let c = &self.consider;
        match key {
            "auto_migrate" => self.auto_migrate.to_string(),
            "interval_ms" => self.interval_ms.to_string(),
            "residency_ms" => c.residency_ms.to_string(),
            "margin" => c.margin.to_string(),
            "min_demand" => c.min_demand.to_string(),
            "max_per_round" => c.max_per_round.to_string(),
            "accounting_hold_ms" => c.accounting_hold_ms.to_string(),
            "no_return_ms" => c.no_return_ms.to_string(),
            "max_info_age_ms" => c.max_info_age_ms.to_string(),
            "usher_below_bytes" => c.usher_below_bytes.to_string(),
            "memory_reserve_bytes" => c.memory_reserve_bytes.to_string(),
            "owner_load" => self.leave.owner_load.to_string(),
            "owner_hold_ms" => self.leave.owner_hold_ms.to_string(),
            "leave_ask_every_ms" => self.leave.ask_every_ms.to_string(),
            "rotate_after_ms" => c.rotate_after_ms.to_string(),
            _ => String::new(),
        }
    }

    /// A copy with every `KEY=VALUE` of `sets` applied, or the first
    /// error; `self` is never half changed.
    pub fn with(&self, sets: &[String]) -> Result<Tunables, ParamError> {
        let mut t = self.clone();
        for kv in sets {
            let (key, value) = kv
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| ParamError::NotKeyValue(kv.clone()))?;
            t.set(key, value)?;
        }
        t.validate()?;
        Ok(t)
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), ParamError> {
        let bad = |expected| ParamError::BadValue {
            key: key.to_string(),
            value: value.to_string(),
            expected,
        };
        let ms = || {
            value
                .parse::<u64>()
                .map_err(|_| bad("a whole number of ms"))
        };
        let bytes = || {
            value
                .parse::<u64>()
                .map_err(|_| bad("a whole number of bytes"))
        };
        let real = || {
            value
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| bad("a finite number"))
        };
        let c = &mut self.consider;
        match key {
            "auto_migrate" => {
                self.auto_migrate = value.parse().map_err(|_| bad("true or false"))?;
            }
            "interval_ms" => self.interval_ms = ms()?,
            "residency_ms" => c.residency_ms = ms()?,
            "margin" => c.margin = real()?,
            "min_demand" => c.min_demand = real()?,
            "max_per_round" => {
                c.max_per_round = value.parse().map_err(|_| bad("a whole number"))?;
            }
            "accounting_hold_ms" => c.accounting_hold_ms = ms()?,
            "no_return_ms" => c.no_return_ms = ms()?,
            "max_info_age_ms" => c.max_info_age_ms = ms()?,
            "usher_below_bytes" => c.usher_below_bytes = bytes()?,
            "memory_reserve_bytes" => c.memory_reserve_bytes = bytes()?,
            "owner_load" => self.leave.owner_load = real()?,
            "owner_hold_ms" => self.leave.owner_hold_ms = ms()?,
            "leave_ask_every_ms" => self.leave.ask_every_ms = ms()?,
            "rotate_after_ms" => c.rotate_after_ms = ms()?,
            _ => return Err(ParamError::UnknownKey(key.to_string())),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn every_key_reads_and_sets_back() {
        let t = Tunables::default();
        let rows = t.rows();
        assert_eq!(rows.len(), KEYS.len());
        let sets: Vec<String> = rows.iter().map(|(k, v, _)| format!("{k}={v}")).collect();
        assert_eq!(t.with(&sets).unwrap(), t);
        assert!(rows.iter().all(|(_, v, _)| !v.is_empty()));
    }

    #[test]
    fn the_configuration_file_sets_them() {
        let mut b = BalancerConfig::default();
        let t = Tunables::from_config(&b).unwrap();
        assert_eq!(t.consider.max_info_age_ms, b.dead_after_ms);
        assert_eq!(t.consider.accounting_hold_ms, b.accounting_hold_ms);
        assert!(t.auto_migrate);
        // Rotation is off unless the file turns it on, and then it is on.
        assert_eq!(t.consider.rotate_after_ms, 0);
        b.rotate_after_ms = 4_000;
        let on = Tunables::from_config(&b).unwrap();
        assert_eq!(on.consider.rotate_after_ms, 4_000);
        assert!(
            on.rows().contains(&(
                "rotate_after_ms".to_string(),
                "4000".to_string(),
                KEYS.iter()
                    .find(|(k, _)| *k == "rotate_after_ms")
                    .unwrap()
                    .1
                    .to_string()
            ))
        );
        b.margin = -1.0;
        assert!(Tunables::from_config(&b).is_err());
    }

    #[test]
    fn values_are_applied() {
        let t = Tunables::default()
            .with(&s(&[
                "margin=0.5",
                "residency_ms = 3000",
                "auto_migrate=false",
            ]))
            .unwrap();
        assert_eq!(t.consider.margin, 0.5);
        assert_eq!(t.consider.residency_ms, 3000);
        assert!(!t.auto_migrate);
        let off = t.with(&s(&["rotate_after_ms=0"])).unwrap();
        assert_eq!(off.consider.rotate_after_ms, 0);
        let on = off.with(&s(&["rotate_after_ms=4000"])).unwrap();
        assert_eq!(on.consider.rotate_after_ms, 4_000);
    }

    #[test]
    fn bad_input_is_refused_whole() {
        let t = Tunables::default();
        assert!(matches!(
            t.with(&s(&["margin"])),
            Err(ParamError::NotKeyValue(_))
        ));
        assert!(matches!(
            t.with(&s(&["=3"])),
            Err(ParamError::NotKeyValue(_))
        ));
        assert!(matches!(
            t.with(&s(&["speed=3"])),
            Err(ParamError::UnknownKey(_))
        ));
        assert!(matches!(
            t.with(&s(&["margin=0.5", "residency_ms=-1"])),
            Err(ParamError::BadValue { .. })
        ));
        assert!(matches!(
            t.with(&s(&["margin=NaN"])),
            Err(ParamError::BadValue { .. })
        ));
        assert!(matches!(
            t.with(&s(&["margin=-1"])),
            Err(ParamError::Invalid(ConsiderError::BadMargin(_)))
        ));
        assert!(matches!(
            t.with(&s(&["max_per_round=0"])),
            Err(ParamError::Invalid(_))
        ));
        assert_eq!(t.with(&s(&["interval_ms=5"])), Err(ParamError::BadInterval));
        assert!(matches!(
            t.with(&s(&["owner_load=-2"])),
            Err(ParamError::BadLeave(_))
        ));
    }
}
