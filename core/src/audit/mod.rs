//! The tamper-evident audit log (pipeline step 8): records, their hash chain,
//! signed checkpoints, the per-shard spool, and verification.
//!
//! How the parts hand off:
//! - The pipeline fills an [`AuditRecord`] and hands it to its shard's
//!   [`crate::bridge::ShardAudit::submit`], which appends it to the shard's [`wal`]
//!   with one copy into a shared file mapping (or one `write(2)`): durable against a
//!   process kill once `submit` returns.
//! - The bridge thread reads the WAL ([`wal::LaneReader`]), links each record into its
//!   node instance's chain ([`chain`]: canonical entry bytes, SHA-256 links, a
//!   [`merkle`] RFC 6962 tree), and stores batches of entries and signed
//!   [`checkpoint`]s as [`message`]s — to JetStream `BH_AUDIT`, or to
//!   `<data_dir>/audit/<node>.<inst>.jsonl` in the embedded default.
//! - [`verify`] checks stored messages; `gatekeeper audit verify` (`cli/audit.rs`) runs it.

pub mod chain;
pub mod checkpoint;
mod error;
mod json;
mod mapped;
pub mod merkle;
pub mod message;
pub mod private;
mod record;
pub mod request;
mod strlist;
pub mod verify;
pub mod wal;

pub use error::AuditError;
pub use mapped::PartHandle;
pub use record::{AuditRecord, RecordView};
pub use strlist::StrList;
