//! Errors of `gk-bench`, each naming what failed and the bound that was hit.

use std::path::PathBuf;

/// Why a comparison could not go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// Reading, writing or spawning failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A started process did not get ready within its bound.
    #[error("{what} was not ready within {waited_ms} ms{detail}")]
    NotReady {
        /// The process.
        what: String,
        /// How long we waited, ms.
        waited_ms: u64,
        /// Extra context (e.g. the tail of its log), starting with a separator, or empty.
        detail: String,
    },
    /// A process ran past the time allowed to it and was killed.
    #[error("{what} ran past its limit of {limit_s} s and was killed")]
    Timeout {
        /// The process.
        what: String,
        /// The limit, seconds.
        limit_s: u64,
    },
    /// A process exited with a failure.
    #[error("{what} failed ({status}){detail}")]
    Failed {
        /// The process.
        what: String,
        /// Its exit status as text.
        status: String,
        /// The tail of its log, starting with a separator, or empty.
        detail: String,
    },
    /// A `gk-load run --json` report could not be read.
    #[error("load report {}: {message}", path.display())]
    BadLoadReport {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A binary we need was not found.
    #[error("{what} not found: {hint}")]
    Missing {
        /// The binary.
        what: String,
        /// How to get it.
        hint: String,
    },
    /// SIGINT or SIGTERM arrived; everything started has been stopped.
    #[error("interrupted")]
    Interrupted,
    /// Flags or inputs that do not make sense together.
    #[error("{0}")]
    Invalid(String),
}

impl BenchError {
    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
        let what = what.into();
        move |source| BenchError::Io { what, source }
    }
}
