//! Why a configuration could not be loaded.

use std::path::PathBuf;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read. (The OS error is part of the message, not a
    /// separate source, so a chain of contexts prints it once.)
    #[error("cannot be read: {io}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        io: std::io::Error,
    },
    /// The text is not YAML.
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the YAML parser said.
        message: String,
    },
    /// `${NAME}` references named variables that are not set (all of them, at once).
    #[error("{}", env_message(.missing))]
    Env {
        /// Each unset variable with the path of the value that names it.
        missing: Vec<UnsetVar>,
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

/// An unset variable and where the config names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsetVar {
    /// Path of the value, e.g. `providers[0].api_key`.
    pub path: String,
    /// The variable.
    pub name: String,
}

fn env_message(missing: &[UnsetVar]) -> String {
    let list: Vec<String> = missing.iter().map(|m| format!("{} (at {})", m.name, m.path)).collect();
    let noun = if missing.len() == 1 { "variable is" } else { "variables are" };
    format!("environment {noun} not set: {}", list.join(", "))
}

pub(crate) fn invalid(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { path: path.into(), message: message.into() }
}
