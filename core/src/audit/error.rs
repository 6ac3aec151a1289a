//! What can go wrong writing, shipping or verifying the audit log.

use std::path::PathBuf;

/// Why an audit operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// A file or directory operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The node key file exists but does not hold a `k4.secret.…` key.
    #[error("{path}: not an audit node key: {message}")]
    NodeKey {
        /// The key file.
        path: PathBuf,
        /// Why it was refused.
        message: String,
    },
    /// Another process holds the data dir.
    #[error("{path}: audit data dir is in use by another gatekeeper process")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A shard's un-shipped backlog reached `audit.spool_bytes_max`: the record was not
    /// written. The pipeline answers 503 rather than serve a request it cannot audit.
    #[error("audit spool of shard {shard} is full ({bytes} bytes unshipped)")]
    SpoolFull {
        /// The shard.
        shard: usize,
        /// Bytes written but not yet shipped.
        bytes: u64,
    },
    /// The record could not be serialized.
    #[error("audit record could not be encoded: {0}")]
    Encode(String),
    /// The bridge state file is unreadable.
    #[error("{path}: bad bridge state: {message}")]
    State {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}
