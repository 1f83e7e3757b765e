//! The balancer's run-time parameters as `mosctl params` reads and sets
//! them: `KEY=VALUE` texts checked and applied all or nothing. Pure.
//!
//! The parameters are the configuration file's `[balancer]` section,
//! [`BalancerConfig`] (each defined there once, with its default); the
//! keys are those of the file but for `interval_ms`
//! (`consider_interval_ms`) and `max_info_age_ms` (`dead_after_ms` as the
//! consideration uses it: the dissemination keeps the value it started
//! with). Keys of the dissemination are not set at run time.

use super::consider::{self, ConsiderError};
use super::leave;
use mosix_proto::config::BalancerConfig;

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
    Invalid(ConsiderError),
    /// interval_ms must be between 100 and 60000 milliseconds
    #[error("interval_ms must be between 100 and 60000 milliseconds")]
    BadInterval,
    /// the leave parameters are not usable: {0}
    #[error("the leave parameters are not usable: {0}")]
    BadLeave(&'static str),
}

// The cause is in the message, so it is not also a `source()`.
impl From<ConsiderError> for ParamError {
    fn from(e: ConsiderError) -> ParamError {
        ParamError::Invalid(e)
    }
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

/// Checks every value `mosctl params` can set.
pub fn validate(params: &BalancerConfig) -> Result<(), ParamError> {
    consider::validate(params)?;
    if !(100..=60_000).contains(&params.consider_interval_ms) {
        return Err(ParamError::BadInterval);
    }
    leave::validate(params).map_err(ParamError::BadLeave)
}

/// Every parameter as `(key, value, meaning)`.
pub fn rows(params: &BalancerConfig) -> Vec<(String, String, String)> {
    KEYS.iter()
        .map(|(k, about)| (k.to_string(), get(params, k), about.to_string()))
        .collect()
}

fn get(b: &BalancerConfig, key: &str) -> String {
    match key {
        "auto_migrate" => b.auto_migrate.to_string(),
        "interval_ms" => b.consider_interval_ms.to_string(),
        "residency_ms" => b.residency_ms.to_string(),
        "margin" => b.margin.to_string(),
        "min_demand" => b.min_demand.to_string(),
        "max_per_round" => b.max_per_round.to_string(),
        "accounting_hold_ms" => b.accounting_hold_ms.to_string(),
        "no_return_ms" => b.no_return_ms.to_string(),
        "max_info_age_ms" => b.dead_after_ms.to_string(),
        "usher_below_bytes" => b.usher_below_bytes.to_string(),
        "memory_reserve_bytes" => b.memory_reserve_bytes.to_string(),
        "owner_load" => b.owner_load.to_string(),
        "owner_hold_ms" => b.owner_hold_ms.to_string(),
        "leave_ask_every_ms" => b.leave_ask_every_ms.to_string(),
        "rotate_after_ms" => b.rotate_after_ms.to_string(),
        _ => String::new(),
    }
}

/// A copy of `params` with every `KEY=VALUE` of `sets` applied, or the
/// first error; `params` is never half changed.
pub fn with(params: &BalancerConfig, sets: &[String]) -> Result<BalancerConfig, ParamError> {
    let mut b = params.clone();
    for kv in sets {
        let (key, value) = kv
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| ParamError::NotKeyValue(kv.clone()))?;
        set(&mut b, key, value)?;
    }
    validate(&b)?;
    Ok(b)
}

fn set(b: &mut BalancerConfig, key: &str, value: &str) -> Result<(), ParamError> {
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
    match key {
        "auto_migrate" => {
            b.auto_migrate = value.parse().map_err(|_| bad("true or false"))?;
        }
        "interval_ms" => b.consider_interval_ms = ms()?,
        "residency_ms" => b.residency_ms = ms()?,
        "margin" => b.margin = real()?,
        "min_demand" => b.min_demand = real()?,
        "max_per_round" => {
            b.max_per_round = value.parse().map_err(|_| bad("a whole number"))?;
        }
        "accounting_hold_ms" => b.accounting_hold_ms = ms()?,
        "no_return_ms" => b.no_return_ms = ms()?,
        "max_info_age_ms" => b.dead_after_ms = ms()?,
        "usher_below_bytes" => b.usher_below_bytes = bytes()?,
        "memory_reserve_bytes" => b.memory_reserve_bytes = bytes()?,
        "owner_load" => b.owner_load = real()?,
        "owner_hold_ms" => b.owner_hold_ms = ms()?,
        "leave_ask_every_ms" => b.leave_ask_every_ms = ms()?,
        "rotate_after_ms" => b.rotate_after_ms = ms()?,
        _ => return Err(ParamError::UnknownKey(key.to_string())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inner_error_is_said_once() {
        let e = ParamError::from(ConsiderError::BadMargin(-1.0));
        let said = mosix_proto::error_chain(&e);
        assert_eq!(said.matches("stability margin").count(), 1, "{said}");
        let e: super::super::procsim::ProcSimError =
            super::super::load::LoadError::BadCpus(0.0).into();
        let said = mosix_proto::error_chain(&e);
        assert_eq!(said.matches("CPU capacity").count(), 1, "{said}");
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn every_key_reads_and_sets_back() {
        let t = BalancerConfig::default();
        let rows = rows(&t);
        assert_eq!(rows.len(), KEYS.len());
        let sets: Vec<String> = rows.iter().map(|(k, v, _)| format!("{k}={v}")).collect();
        assert_eq!(with(&t, &sets).unwrap(), t);
        assert!(rows.iter().all(|(_, v, _)| !v.is_empty()));
    }

    #[test]
    fn the_configuration_file_sets_them() {
        let mut b = BalancerConfig::default();
        assert_eq!(validate(&b), Ok(()));
        let shown = |b: &BalancerConfig, key: &str| {
            rows(b)
                .into_iter()
                .find(|(k, _, _)| k == key)
                .map(|(_, v, _)| v)
                .unwrap()
        };
        assert_eq!(shown(&b, "max_info_age_ms"), b.dead_after_ms.to_string());
        assert_eq!(shown(&b, "interval_ms"), b.consider_interval_ms.to_string());
        assert_eq!(shown(&b, "auto_migrate"), "true");
        // Rotation is off unless the file turns it on, and then it is on.
        assert_eq!(shown(&b, "rotate_after_ms"), "0");
        b.rotate_after_ms = 4_000;
        assert_eq!(shown(&b, "rotate_after_ms"), "4000");
        b.margin = -1.0;
        assert!(validate(&b).is_err());
    }

    #[test]
    fn values_are_applied() {
        let t = with(
            &BalancerConfig::default(),
            &s(&[
                "margin=0.75",
                "residency_ms = 3000",
                "auto_migrate=false",
                "interval_ms=2000",
                "max_info_age_ms=3000",
            ]),
        )
        .unwrap();
        assert_eq!(t.margin, 0.75);
        assert_eq!(t.residency_ms, 3000);
        assert!(!t.auto_migrate);
        assert_eq!(t.consider_interval_ms, 2000);
        assert_eq!(t.dead_after_ms, 3000);
        let off = with(&t, &s(&["rotate_after_ms=0"])).unwrap();
        assert_eq!(off.rotate_after_ms, 0);
        let on = with(&off, &s(&["rotate_after_ms=4000"])).unwrap();
        assert_eq!(on.rotate_after_ms, 4_000);
    }

    #[test]
    fn bad_input_is_refused_whole() {
        let t = BalancerConfig::default();
        assert!(matches!(
            with(&t, &s(&["margin"])),
            Err(ParamError::NotKeyValue(_))
        ));
        assert!(matches!(
            with(&t, &s(&["=3"])),
            Err(ParamError::NotKeyValue(_))
        ));
        assert!(matches!(
            with(&t, &s(&["speed=3"])),
            Err(ParamError::UnknownKey(_))
        ));
        assert!(matches!(
            with(&t, &s(&["margin=0.5", "residency_ms=-1"])),
            Err(ParamError::BadValue { .. })
        ));
        assert!(matches!(
            with(&t, &s(&["margin=NaN"])),
            Err(ParamError::BadValue { .. })
        ));
        assert!(matches!(
            with(&t, &s(&["margin=-1"])),
            Err(ParamError::Invalid(ConsiderError::BadMargin(_)))
        ));
        assert!(matches!(
            with(&t, &s(&["max_per_round=0"])),
            Err(ParamError::Invalid(_))
        ));
        assert_eq!(
            with(&t, &s(&["interval_ms=5"])),
            Err(ParamError::BadInterval)
        );
        assert!(matches!(
            with(&t, &s(&["owner_load=-2"])),
            Err(ParamError::BadLeave(_))
        ));
    }
}
