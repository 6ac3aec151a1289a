//! Conflict-free replicated token budgets for Gatekeeper: grow-only counters per
//! (key or tenant, window), merged without a coordinator. Pure: no I/O, no clock (every
//! function that needs the time takes `now_unix_s`), no threads.
//!
//! # The parts and how they hand off
//!
//! - [`ReplicaId`] names the one writer of a counter slot: a node, one of its shards, and
//!   the node's boot incarnation.
//! - [`GCounter`] is a grow-only counter with one slot per replica. Merge keeps each
//!   slot's maximum (commutative, associative, idempotent); increments saturate. It
//!   records which slots changed since the last [`GCounter::take_delta`], so a replica
//!   ships only those (delta-state); a delta is a state and is applied with `merge`.
//! - [`WindowKind`] (minute, day, calendar month, UTC) and [`Epoch`] (a window's start,
//!   from [`WindowKind::epoch`]`(now_unix_s)`; months through
//!   [`gatekeeper_units::civil::month_start`]) name a budget window.
//! - [`Budgets`] maps each [`BudgetKey`] (a [`Subject`], an [`Epoch`] and a [`Measure`]:
//!   tokens, requests or nano-USD, each its own counter) to a
//!   [`GCounter`]: [`Budgets::add`] settles spend into a replica's slot,
//!   [`Budgets::spent`] reads a window's total, [`Budgets::take_delta`] /
//!   [`Budgets::merge`] move state between replicas, [`Budgets::gc`] drops ended windows.
//!   Its size is bounded by [`Limits`]; at a bound it refuses ([`CrdtError`]) and never
//!   evicts a live counter, since forgetting spend would re-grant it.
//! - [`Budgets::encode`] / [`Budgets::decode`]: a compact binary form with a version
//!   byte ([`ENCODING_VERSION`]; the format is in the crate's README), the same for a
//!   full state and a delta. Decoding untrusted bytes never panics and never allocates for entries it has
//!   not read.
//!
//! The gateway (crate `gatekeeper`) owns everything around this: reservations (local to a
//! shard, not replicated), limits from claims and config, moving deltas between shards
//! and over NATS, and when to call `gc`.
//!
//! # Restarts
//!
//! A node that restarts must never count its old slot again from 0: merge keeps the
//! maximum, so its new spend would hide under the old value until it passed it. Instead
//! each boot writes under a new incarnation. The restarted node pulls a full state from a
//! peer (which holds the old incarnation's slots, still counted) and then adds under
//! `ReplicaId { incarnation: new, .. }`. The new incarnation must exceed every one the
//! node used before: a persisted boot counter, or the boot time in seconds (as `u32`,
//! good until 2106), or [`Budgets::incarnation_max`]` + 1` over a snapshot known to be
//! complete, whichever is largest. Old slots cost memory until their window ends.
//!
//! # Garbage collection
//!
//! [`Budgets::gc`]`(now_unix_s, grace_s)` drops a counter once its window ended at least
//! `grace_s` ago. The grace lets requests admitted at the end of a window settle into it
//! and late deltas land; a delta for a window already dropped re-creates its counter,
//! which no current window reads, and the next `gc` drops it again.
//!
//! # Example
//!
//! ```
//! use gatekeeper_crdt::{BudgetKey, Budgets, Limits, ReplicaId, Subject, WindowKind};
//!
//! let now = 1_709_251_199; // 2024-02-29T23:59:59Z
//! let key = BudgetKey::at(Subject::key("key-1")?, WindowKind::Day, now)?;
//! let (mut a, mut b) = (Budgets::new(Limits::default()), Budgets::new(Limits::default()));
//! a.add(ReplicaId::new(1, 0, 7), &key, 120)?;
//! b.add(ReplicaId::new(2, 3, 4), &key, 30)?;
//!
//! // Ship deltas both ways, as bytes; order and repeats do not matter.
//! let (da, db) = (a.take_delta().encode(), b.take_delta().encode());
//! b.merge(&Budgets::decode(&da, Limits::default())?)?;
//! a.merge(&Budgets::decode(&db, Limits::default())?)?;
//! a.merge(&Budgets::decode(&db, Limits::default())?)?;
//! assert_eq!((a.spent(&key), b.spent(&key)), (150, 150));
//!
//! // The next second is a new day (and month): its window starts from 0.
//! let tomorrow = BudgetKey::at(Subject::key("key-1")?, WindowKind::Day, now + 1)?;
//! assert_eq!(a.spent(&tomorrow), 0);
//! assert_eq!(a.gc(now + 1 + 60, 60), 1);
//! # Ok::<(), gatekeeper_crdt::CrdtError>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod budgets;
mod codec;
mod error;
mod gcounter;
mod replica;
mod window;

#[cfg(test)]
mod tests;

pub use budgets::{BudgetKey, Budgets, Limits, Measure, Subject, SUBJECT_BYTES_MAX};
pub use codec::VERSION as ENCODING_VERSION;
pub use error::CrdtError;
pub use gcounter::GCounter;
pub use replica::ReplicaId;
pub use window::{Epoch, WindowKind};
