//! Why a configuration could not be loaded.

use std::path::PathBuf;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// `${NAME}` named a variable that is not set.
    #[error("line {line}: environment variable {name} is not set")]
    Env {
        /// 1-based line of the reference.
        line: usize,
        /// The variable.
        name: String,
    },
    /// The YAML did not match the schema (unknown key, wrong type, missing field).
    #[error("{path}: {message}")]
    Schema {
        /// Path of the offending value, e.g. `providers[1].kind`.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// The values parse but do not make sense together.
    #[error("{path}: {message}")]
    Invalid {
        /// Path of the offending value.
        path: String,
        /// What is wrong with it.
        message: String,
    },
}

pub(crate) fn invalid(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { path: path.into(), message: message.into() }
}
