//! The one error type of the crate.

/// Why a budget operation or a decode was refused. Every variant names the bound or the
/// rule that was hit; none leaves the state half-changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CrdtError {
    /// Adding the counter would hold more than `keys_max` budget keys. Counts are never
    /// evicted to make room: dropping a live counter would re-grant spent budget.
    #[error("budget map is full ({keys_max} keys)")]
    KeysFull {
        /// The bound, [`crate::Limits::keys_max`].
        keys_max: usize,
    },
    /// Adding the slot would give one counter more than `slots_per_key_max` replicas.
    #[error("budget counter has too many replicas ({slots_per_key_max} slots)")]
    SlotsFull {
        /// The bound, [`crate::Limits::slots_per_key_max`].
        slots_per_key_max: usize,
    },
    /// A subject (key id or tenant name) is empty or longer than
    /// [`crate::SUBJECT_BYTES_MAX`].
    #[error("budget subject must be 1 to {max} bytes, got {len}")]
    SubjectLength {
        /// Its length, bytes.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The window containing the instant does not fit in `i64` Unix seconds.
    #[error("no {kind} window contains unix second {unix_s}")]
    OutOfRange {
        /// The window kind's name.
        kind: &'static str,
        /// The instant asked about.
        unix_s: i64,
    },
    /// The encoded state starts with a version byte this build does not read.
    #[error("unknown budget encoding version {0}")]
    UnknownVersion(u8),
    /// The encoded state is not well formed: the reason names the rule broken.
    #[error("malformed budget encoding: {0}")]
    Malformed(&'static str),
}
