//! The fault schedule (`--schedule FILE`): phases of faults that advance by wall clock since start.
//!
//! ```yaml
//! repeat: true            # optional, default false; a bare list of phases is accepted too
//! phases:
//!   - { for_s: 10, fault: "429", rate: 0.05 }
//!   - { for_s: 30, fault: "503", rate: 1.0 }
//!   - { for_s: 20, fault: none }
//! ```
//!
//! Every check happens while deserializing, so errors name the field path and the line.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::faults::Fault;

/// Most phases a schedule may hold; the lookup walks them linearly.
pub const PHASES_MAX: usize = 1024;

/// One phase: for `duration`, each request gets `fault` with probability `rate`.
#[derive(Clone, Debug, PartialEq)]
pub struct Phase {
    /// How long the phase lasts.
    pub duration: Duration,
    /// The fault injected during the phase.
    pub fault: Fault,
    /// Probability in `[0, 1]` that a request in this phase gets the fault.
    pub rate: f64,
}

/// A parsed schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    /// Phases in order.
    pub phases: Vec<Phase>,
    /// Start over after the last phase; otherwise no faults after it.
    pub repeat: bool,
    total: Duration,
}

/// A schedule file that cannot be used; the message names the path, field and line.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The file could not be read.
    #[error("schedule {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The YAML is malformed or a field is invalid.
    #[error("schedule {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// `field.path: problem at line L column C`.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PhaseIn {
    #[serde(deserialize_with = "de_for_s")]
    for_s: f64,
    #[serde(deserialize_with = "de_fault")]
    fault: Fault,
    #[serde(default = "rate_default", deserialize_with = "de_rate")]
    rate: f64,
}

fn rate_default() -> f64 {
    1.0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleIn {
    #[serde(default)]
    repeat: bool,
    phases: Vec<PhaseIn>,
}

fn de_for_s<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    // Upper bound keeps Duration::from_secs_f64 from panicking and phases sane (a year).
    if !(v > 0.0 && v <= 31_536_000.0) {
        return Err(de::Error::custom(format!("for_s must be > 0 and <= 31536000, got {v}")));
    }
    Ok(v)
}

fn de_rate<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if !(0.0..=1.0).contains(&v) {
        return Err(de::Error::custom(format!("rate must be within [0, 1], got {v}")));
    }
    Ok(v)
}

/// Accepts `"429"`, `429`, `none`, `null`.
fn de_fault<'de, D: Deserializer<'de>>(d: D) -> Result<Fault, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Fault;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a fault: none, 429, 500, 503, reset, stall or cut")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Fault, E> {
            s.parse().map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Fault, E> {
            self.visit_str(&n.to_string())
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<Fault, E> {
            self.visit_str(&n.to_string())
        }
        fn visit_unit<E: de::Error>(self) -> Result<Fault, E> {
            Ok(Fault::None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Fault, E> {
            Ok(Fault::None)
        }
    }
    d.deserialize_any(V)
}

/// Formats a serde_path_to_error failure as `field.path: problem at line L column C`;
/// public so the `gk-load run` scenario parser words its errors the same way.
pub fn yaml_error<E: fmt::Display>(err: serde_path_to_error::Error<E>) -> String {
    let path = err.path().to_string();
    if path == "." || path.is_empty() {
        err.inner().to_string()
    } else {
        format!("{path}: {}", err.inner())
    }
}

impl Schedule {
    /// Reads and validates a schedule file.
    pub fn load(path: &Path) -> Result<Schedule, ScheduleError> {
        let shown = || path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScheduleError::Read { path: shown(), source })?;
        Schedule::parse(&text).map_err(|message| ScheduleError::Invalid { path: shown(), message })
    }

    /// Parses schedule YAML; the error names the field path and line.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        // Peek at the shape first so the real pass can use the right type and keep
        // serde_yaml's line/column in its errors.
        let shape: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        let (phases_in, repeat) = if shape.is_sequence() {
            let de = serde_yaml::Deserializer::from_str(text);
            let phases: Vec<PhaseIn> = serde_path_to_error::deserialize(de)
                .map_err(|e| format!("phases{}", yaml_error(e).trim_start_matches('.')))?;
            (phases, false)
        } else {
            let de = serde_yaml::Deserializer::from_str(text);
            let s: ScheduleIn = serde_path_to_error::deserialize(de).map_err(yaml_error)?;
            (s.phases, s.repeat)
        };
        if phases_in.is_empty() {
            return Err("phases: must hold at least one phase".to_string());
        }
        if phases_in.len() > PHASES_MAX {
            return Err(format!("phases: at most {PHASES_MAX} phases"));
        }
        let phases: Vec<Phase> = phases_in
            .into_iter()
            .map(|p| Phase { duration: Duration::from_secs_f64(p.for_s), fault: p.fault, rate: p.rate })
            .collect();
        let total = phases.iter().map(|p| p.duration).sum();
        Ok(Schedule { phases, repeat, total })
    }

    /// The phase in force `elapsed` after start, or `None` once a non-repeating
    /// schedule has run out.
    pub fn phase_at(&self, elapsed: Duration) -> Option<&Phase> {
        let mut t = elapsed;
        if self.repeat {
            let total_ns = self.total.as_nanos().max(1);
            let ns = elapsed.as_nanos() % total_ns;
            t = Duration::from_nanos(u64::try_from(ns).unwrap_or(0));
        }
        for phase in &self.phases {
            if t < phase.duration {
                return Some(phase);
            }
            t -= phase.duration;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "repeat: true\nphases:\n  - { for_s: 10, fault: \"429\", rate: 0.05 }\n  - { for_s: 30, fault: \"503\", rate: 1.0 }\n  - { for_s: 20, fault: none }\n";

    #[test]
    fn parses_map_form_and_walks_phases() {
        let s = Schedule::parse(GOOD).expect("valid");
        assert!(s.repeat);
        assert_eq!(s.phases.len(), 3);
        assert_eq!(s.phases[0].fault, Fault::RateLimited);
        assert_eq!(s.phases[2].rate, 1.0);
        let at = |secs| s.phase_at(Duration::from_secs(secs)).map(|p| p.fault);
        assert_eq!(at(0), Some(Fault::RateLimited));
        assert_eq!(at(10), Some(Fault::Unavailable));
        assert_eq!(at(45), Some(Fault::None));
        assert_eq!(at(65), Some(Fault::RateLimited), "repeats after 60 s");
    }

    #[test]
    fn parses_bare_list_without_repeat() {
        let s = Schedule::parse("- for_s: 1\n  fault: 500\n").expect("valid");
        assert!(!s.repeat);
        assert_eq!(s.phases[0].fault, Fault::ServerError);
        assert_eq!(s.phase_at(Duration::from_secs(2)), None);
    }

    #[test]
    fn errors_name_field_and_line() {
        let bad_fault = "phases:\n  - { for_s: 1, fault: \"404\" }\n";
        let e = Schedule::parse(bad_fault).unwrap_err();
        assert!(e.contains("phases[0].fault"), "{e}");
        assert!(e.contains("line 2"), "{e}");

        let bad_rate = "phases:\n  - { for_s: 1, fault: none }\n  - { for_s: 1, fault: \"500\", rate: 2 }\n";
        let e = Schedule::parse(bad_rate).unwrap_err();
        assert!(e.contains("phases[1].rate"), "{e}");
        assert!(e.contains("line 3"), "{e}");

        let unknown = "phases:\n  - { for_s: 1, fault: none, nope: 1 }\n";
        let e = Schedule::parse(unknown).unwrap_err();
        assert!(e.contains("nope"), "{e}");

        let e = Schedule::parse("- { for_s: 0, fault: none }\n").unwrap_err();
        assert!(e.contains("phases[0].for_s"), "{e}");

        assert!(Schedule::parse("phases: []\n").is_err());
        assert!(Schedule::parse("phases: [ {").is_err());
    }
}
