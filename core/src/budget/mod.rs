//! Step 4, token budgets: reserve a request's tokens against every window that
//! applies to its key and tenant before forwarding, settle to the real usage after.
//!
//! No budget is enforced yet: [`admit`] admits every request unmetered and
//! [`Admission::settle`] has nothing to release. The CRDT counters (`gatekeeper-crdt`)
//! plug in here without the pipeline changing shape.

use crate::credit::error::Payment;
use crate::keys::Claims;
use crate::wire::openai::{ChatRequest, Usage};

/// What the budget step granted a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "an admission is settled once the answer's usage is known"]
pub enum Admission {
    /// No budget applies; nothing was reserved.
    Unmetered,
}

impl Admission {
    /// Settles the admission to what the answer used (`None`: unknown, e.g. failed).
    pub fn settle(self, _usage: Option<Usage>) {
        match self {
            Admission::Unmetered => {}
        }
    }
}

/// Why a request was refused at the budget step. No variant yet: nothing is enforced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {}

/// Admits the request against its budgets.
pub fn admit(_payment: Payment, _claims: Option<&Claims>, _chat: &ChatRequest<'_>) -> Result<Admission, BudgetError> {
    Ok(Admission::Unmetered)
}
