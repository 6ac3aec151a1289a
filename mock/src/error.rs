//! Why a [`MockConfig`](crate::MockConfig) cannot become a [`Mock`](crate::Mock).

use crate::schedule::ScheduleError;

/// A setting that cannot be used, from [`MockConfig::build`](crate::MockConfig::build).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A setting is out of range, malformed, or conflicts with another.
    #[error("--{setting}: {message}")]
    Invalid {
        /// The setting, spelled as its `gk-load mock` flag without dashes (the builder
        /// method has the same name with `_`).
        setting: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The schedule file cannot be read or is invalid.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
}
