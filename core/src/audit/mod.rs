//! The tamper-evident audit log (DESIGN §1 step 8).

mod record;

pub use record::AuditRecord;
