//! Step 4, token budgets: reserve a request's tokens against every window that
//! applies to its key and tenant before forwarding, settle to the real usage after.
//!
//! [`admit`] reads the subject's rows on the [`BudgetBoard`] (every shard's column and
//! the remote one), refuses with [`BudgetError::Exceeded`] when the request does not
//! fit a limit, and otherwise adds its reservation (prompt estimate + `max_tokens`, or
//! `budgets.reserve_tokens_default`) and one request to this shard's own cells. The
//! [`Admission`] it returns is settled exactly once: [`Admission::settle`] after the
//! answer (the reservation becomes the actual usage), or its `Drop` when the request
//! ends any other way (client gone, provider failure) — then the reservation is only
//! released.
//!
//! USD is settle-only: a request is admitted while the month's settled spend is below
//! `usd_per_month`, and its cost at the answering deployment's prices is added when it
//! settles. The budget step runs before routing, so no price is known at admission;
//! the over-spend this allows is the cost of the requests in flight when the limit is
//! crossed (see ARCHITECTURE.md, "Budgets").
//!
//! The token over-spend bound on one node: a shard's check and reservation are one
//! synchronous step, so at most `shards − 1` other admissions can pass the same
//! check before seeing this one's reservation: at most `(shards − 1) × reservation`
//! tokens over the limit, plus whatever answers use beyond what they reserved (only
//! when the prompt estimate was short, or `max_tokens` was absent and the answer
//! outgrew `reserve_tokens_default`).
//!
//! # Across nodes: the over-spend bound
//!
//! With `nats` set, the bridge (`crate::bridge::budget`) ships each shard's settled
//! tokens to the other nodes and writes their spend into the remote column. Within a
//! node every shard sees every other shard's settled and reserved tokens at once (the
//! board's seqlocked cells), so the only delay is between nodes: a settlement waits for
//! the next collect (at most `T = budgets.gossip_interval_ms`), then delivery `δ`
//! (publish, NATS, the peer's merge and its remote-column write; milliseconds on a
//! LAN): `D = T + δ`. Reservations are not gossiped. Take the node whose admission was
//! the last one before the limit closed everywhere: its check counted its own spend and
//! reservations exactly and every other node's spend settled more than `D` earlier.
//! What it missed is the others' spend settled in the last `D` and their requests in
//! flight. So, in soft mode while connected, per limit `L` and window:
//!
//! ```text
//! over-spend ≤ r × D × (N − 1)/N  +  (N − 1) × c × R  +  (S − 1) × R  +  U
//! ```
//!
//! - `r`: the subject's spend rate over the whole cluster (tokens/s), spread over `N`
//!   nodes, so `(N − 1)/N` of it is elsewhere;
//! - `c`: requests of the subject in flight per node; `R`: one request's reservation
//!   (prompt estimate + `max_tokens`, or `budgets.reserve_tokens_default`);
//! - `(S − 1) × R`: the one-node race above (`S` shards);
//! - `U`: usage beyond reservations (0 when `max_tokens` is set and the prompt
//!   estimate is not short).
//!
//! With the defaults (`T` = 100 ms, `δ` ≈ 1 ms on a LAN), 3 nodes, 10,000 tokens/s on one
//! key, 4 requests in flight per node of 1,000 tokens, 4 shards: `10,000 × 0.101 × 2/3
//! + 2 × 4 × 1,000 + 3 × 1,000 ≈ 11,700` tokens. `core/tests/budget_nodes` measures
//! `r` and `δ` in each run and checks the served total against this value.
//!
//! ## Requests (`rpm`) and USD (`usd_per_month`) across nodes
//!
//! The bridge gossips each shard's admitted requests of the minute and settled
//! nano-USD of the month as their own counters, merged into the remote column by the
//! same floor and seed rules as tokens, so both limits hold cluster-wide with the same
//! shape of bound (`r` in that measure's units per second):
//!
//! ```text
//! requests over rpm ≤ r × D × (N − 1)/N  +  (S − 1)
//! USD over the limit ≤ r × D × (N − 1)/N  +  N × c × C
//! ```
//!
//! A request counts at admission (the cell's `requests`), so none is in flight unseen
//! by its own node: the only terms are the others' admissions of the last `D` and the
//! one-node shard race. USD is settle-only (above): every request in flight anywhere
//! when the limit is crossed may land, `C` being one request's largest cost. With 3
//! nodes, 100 requests/s and `D` = 101 ms: `100 × 0.101 × 2/3 + 1 ≈ 8` requests over
//! `rpm`. `core/tests/budget_nodes` checks both against measured `r` and `D`.
//! Strict mode splits `rpm` and `usd_per_month` into escrow shares like token limits
//! (see [`Escrow`]).
//!
//! Under a partition soft mode stays available: each side counts only what it hears,
//! so over-spend grows by `r × (partition time) × (N − 1)/N` until the heal; after it
//! the nodes exchange full states at once (within `T` plus the reconnect). A node
//! killed without a drain forgets at most its spend settled in the last `T` (not yet
//! shipped) unless its snapshot file holds it; a restart otherwise re-grants nothing
//! (it pulls its own earlier slots from a peer before admitting). `budgets.mode:
//! strict` ([`Escrow`]) trades availability for an over-spend of 0: see its docs.

mod board;
mod error;
mod escrow;
mod headers;
mod limits;
pub mod persist;
pub mod report;

pub use board::{BoardError, BudgetBoard, Cell, CellValues, RowBody, RowId, SubjectRef, KINDS, READ_RETRIES};
pub use error::{BudgetError, LimitKind, Refusal};
pub use escrow::Escrow;
pub use headers::{go_duration, RateLine, RateView};
pub use limits::{kind_index, BudgetSettings, Limits, NANO_USD_PER_USD};

use gatekeeper_crdt::{Epoch, Measure};

use crate::credit::error::Payment;
use crate::keys::Claims;
use crate::metrics::ShardMetrics;
use crate::wire::openai::Usage;

/// What a request's admission needs from its shard.
#[derive(Clone, Copy)]
pub struct BudgetContext<'b> {
    /// The process's board.
    pub board: &'b BudgetBoard,
    /// This shard's index (its column).
    pub shard: usize,
    /// Tenant limits and the reservation cap.
    pub settings: &'b BudgetSettings,
    /// This shard's metrics (refusals, tokens reserved in flight).
    pub metrics: &'b ShardMetrics,
}

/// What the budget step granted a request. Settle it with [`Admission::settle`];
/// dropped unsettled, it releases its reservation.
#[must_use = "an admission is settled once the answer's usage is known"]
pub struct Admission<'b> {
    held: Option<Held<'b>>,
}

struct Held<'b> {
    ctx: BudgetContext<'b>,
    /// The key's row and the tenant's row, where limits apply.
    rows: [Option<RowId>; 2],
    /// The windows reserved in, by kind index.
    epochs: [i64; 3],
    reserved_tokens: u64,
    view: RateView,
}

/// What the trace (headers, audit record) keeps of an admission.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetTrace {
    /// Tokens reserved at admission.
    pub reserved_tokens: u64,
    /// What the `x-ratelimit-*` headers say.
    pub view: RateView,
}

/// How a request ended, for its settlement.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// The status the client got (2xx: answered; anything else releases).
    pub status: u16,
    /// Usage the provider reported.
    pub usage: Option<Usage>,
    /// USD per 1,000 prompt and completion tokens of the deployment that answered.
    pub price_per_1k: Option<(f64, f64)>,
}

impl Outcome {
    /// Tokens and nano-USD to settle for a request that reserved `reserved` tokens: an
    /// answer's usage; an answer without usage counts its whole reservation (no
    /// answer is free); a failure counts nothing.
    pub fn spend(&self, reserved: u64) -> (u64, u64) {
        if !(200..300).contains(&self.status) {
            return (0, 0);
        }
        let (prompt, completion) = match self.usage {
            Some(u) => (u.prompt_tokens, u.completion_tokens),
            None => (0, reserved),
        };
        let usd = self.price_per_1k.map_or(0, |(input, output)| {
            let output = if self.usage.is_some() { output } else { input.max(output) };
            // Prices per 1,000 tokens → nano-USD per token is price × 10^6.
            let nano = (prompt as f64 * input + completion as f64 * output) * (NANO_USD_PER_USD / 1000.0);
            if nano.is_nan() || nano <= 0.0 {
                0
            } else if nano >= u64::MAX as f64 {
                u64::MAX
            } else {
                nano.ceil() as u64
            }
        });
        (prompt.saturating_add(completion), usd)
    }
}

impl<'b> Admission<'b> {
    /// An admission that reserved nothing (no limit applies).
    pub fn unmetered() -> Admission<'b> {
        Admission { held: None }
    }

    /// What to keep in the trace; `None` when unmetered.
    pub fn trace(&self) -> Option<BudgetTrace> {
        self.held.as_ref().map(|h| BudgetTrace { reserved_tokens: h.reserved_tokens, view: h.view })
    }

    /// Settles the admission to how the request ended; returns the tokens counted.
    pub fn settle(mut self, outcome: Outcome) -> u64 {
        match self.held.take() {
            Some(h) => {
                let (tokens, usd_nano) = outcome.spend(h.reserved_tokens);
                h.settle(tokens, usd_nano);
                tokens
            }
            None => 0,
        }
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if let Some(h) = self.held.take() {
            h.settle(0, 0);
        }
    }
}

impl Held<'_> {
    /// Moves the reservation to settled spend (`tokens`, `usd_nano`) in every window
    /// that still counts the one reserved in.
    fn settle(&self, tokens: u64, usd_nano: u64) {
        let column = self.ctx.shard;
        for row in self.rows.iter().flatten() {
            let Some(body) = self.ctx.board.row(*row) else { continue };
            for (k, epoch) in self.epochs.iter().enumerate() {
                let Some(cell) = body.cell(column, k) else { continue };
                let mut v = cell.load_own();
                if v.epoch_start_s != *epoch {
                    // The window ended and this column moved on: its reservation went with it.
                    continue;
                }
                v.reserved_tokens = v.reserved_tokens.saturating_sub(self.reserved_tokens);
                v.settled_tokens = v.settled_tokens.saturating_add(tokens);
                v.settled_usd_nano = v.settled_usd_nano.saturating_add(usd_nano);
                cell.store(v);
            }
        }
        let b = &self.ctx.metrics.budget;
        b.reserved_tokens.set(b.reserved_tokens.get().saturating_sub(self.reserved_tokens));
        b.settled_tokens.add(tokens);
    }
}

/// Admits a request that would use up to `need_tokens` (its reservation) at
/// `now_unix_s` against its key's limits and its tenant's.
pub fn admit<'b>(
    ctx: BudgetContext<'b>,
    payment: Payment,
    claims: Option<&Claims>,
    need_tokens: u64,
    now_unix_s: i64,
) -> Result<Admission<'b>, BudgetError> {
    let Some(claims) = claims.filter(|_| payment == Payment::Key) else { return Ok(Admission::unmetered()) };
    let key_limits = Limits::of_claims(claims);
    let tenant = claims.tenant.as_deref().and_then(|t| Some((t, *ctx.settings.tenant(t)?)));
    let subjects = [
        (!key_limits.is_empty()).then_some((SubjectRef { tenant: false, name: &claims.jti }, key_limits)),
        tenant.map(|(name, l)| (SubjectRef { tenant: true, name }, l)),
    ];
    if subjects.iter().all(Option::is_none) {
        return Ok(Admission::unmetered());
    }
    let epochs = windows(now_unix_s)?;
    let result = check(ctx, &subjects, &epochs, need_tokens, now_unix_s);
    let (rows, view) = match result {
        Ok(ok) => ok,
        Err(e) => {
            ctx.metrics.budget.refused(e.reason_slot());
            return Err(e);
        }
    };
    let starts = epochs.map(|e| e.start_unix_s());
    for (row, entry) in rows.iter().zip(subjects.iter()) {
        let (Some(row), Some((_, limits))) = (row, entry) else { continue };
        let Some(body) = ctx.board.row(*row) else { continue };
        for (k, start) in starts.iter().enumerate() {
            let Some(cell) = body.cell(ctx.shard, k) else { continue };
            let mut v = cell.load_own();
            if v.epoch_start_s != *start {
                v = CellValues::fresh(*start);
            }
            v.reserved_tokens = v.reserved_tokens.saturating_add(need_tokens);
            v.requests = v.requests.saturating_add(1);
            v.limit_tokens = limits.tokens[k];
            cell.store(v);
        }
    }
    let b = &ctx.metrics.budget;
    b.reserved_tokens.set(b.reserved_tokens.get().saturating_add(need_tokens));
    b.admitted.inc();
    Ok(Admission { held: Some(Held { ctx, rows, epochs: starts, reserved_tokens: need_tokens, view }) })
}

/// The minute, day and month windows containing `now_unix_s`.
fn windows(now_unix_s: i64) -> Result<[Epoch; 3], BudgetError> {
    let e = |k: gatekeeper_crdt::WindowKind| k.epoch(now_unix_s).map_err(|_| BudgetError::Clock);
    Ok([e(KINDS[0])?, e(KINDS[1])?, e(KINDS[2])?])
}

/// Finds (or claims) each subject's row and checks every limit; the rows (in subject
/// order) and the headers' view, or the refusal whose window ends last.
fn check(
    ctx: BudgetContext<'_>,
    subjects: &[Option<(SubjectRef<'_>, Limits)>; 2],
    epochs: &[Epoch; 3],
    need: u64,
    now: i64,
) -> Result<([Option<RowId>; 2], RateView), BudgetError> {
    let mut rows = [None; 2];
    let mut view = RateView::default();
    let mut refusal: Option<Refusal> = None;
    for (slot, entry) in rows.iter_mut().zip(subjects) {
        let Some((subject, limits)) = entry else { continue };
        let row = ctx.board.find_or_claim(*subject).map_err(BudgetError::Table)?;
        *slot = Some(row);
        let Some(body) = ctx.board.row(row) else { continue };
        for (k, epoch) in epochs.iter().enumerate() {
            let needs_requests = k == 0 && limits.rpm.is_some();
            let needs_usd = k == 2 && limits.usd_nano_per_month.is_some();
            if limits.tokens[k].is_none() && !needs_requests && !needs_usd {
                continue;
            }
            let total = body.total(k, epoch.start_unix_s());
            let reset_s = epoch.seconds_left(now);
            let mut refuse = |kind: LimitKind, limit: u64| {
                let r = Refusal {
                    tenant: subject.tenant,
                    kind,
                    limit,
                    retry_after_s: reset_s.max(1),
                    requested_tokens: need,
                };
                if refusal.is_none_or(|old| r.retry_after_s > old.retry_after_s) {
                    refusal = Some(r);
                }
            };
            if let Some(limit) = limits.tokens[k] {
                let after = total.settled_tokens.saturating_add(total.reserved_tokens).saturating_add(need);
                if after > limit
                    || !escrow_allows(ctx, body, k, epoch.start_unix_s(), limit, after, (Measure::Tokens, need))
                {
                    refuse(LimitKind::TOKENS[k], limit);
                }
                view.tighten_tokens(RateLine { limit, remaining: limit.saturating_sub(after), reset_s });
            }
            if let (true, Some(rpm)) = (needs_requests, limits.rpm) {
                let after = total.requests.saturating_add(1);
                if after > rpm || !escrow_allows(ctx, body, k, epoch.start_unix_s(), rpm, after, (Measure::Requests, 1))
                {
                    refuse(LimitKind::Requests, rpm);
                }
                view.tighten_requests(RateLine { limit: rpm, remaining: rpm.saturating_sub(after), reset_s });
            }
            if let (true, Some(usd)) = (needs_usd, limits.usd_nano_per_month) {
                // Settle-only: the request's cost is unknown here, so "after" is the
                // settled spend plus one nano-dollar (admitted while below the limit).
                let after = total.settled_usd_nano.saturating_add(1);
                if after > usd || !escrow_allows(ctx, body, k, epoch.start_unix_s(), usd, after, (Measure::UsdNano, 1))
                {
                    refuse(LimitKind::UsdPerMonth, usd);
                }
            }
        }
    }
    match refusal {
        Some(r) => Err(BudgetError::Exceeded { refusal: r, view }),
        None => Ok((rows, view)),
    }
}

/// `budgets.mode: strict` only: whether this shard's escrow share of a limit on
/// `measure` also lets the request in (see [`Escrow`]); always true in soft mode.
/// `(measure, need)`: the count and what the request adds to this node's own.
fn escrow_allows(
    ctx: BudgetContext<'_>,
    body: &RowBody,
    kind: usize,
    epoch_start_s: i64,
    limit: u64,
    view_after: u64,
    (measure, need): (Measure, u64),
) -> bool {
    let Some(escrow) = ctx.settings.escrow else { return true };
    // This shard's own count: only its column, which only this thread writes, so the
    // check and the reservation that follows are one step (no other shard can pass the
    // same share at the same moment).
    let mut own = need;
    if let Some(cell) = body.cell(ctx.shard, kind) {
        let v = cell.read_window(epoch_start_s);
        own = own.saturating_add(v.measure(measure));
        if measure == Measure::Tokens {
            own = own.saturating_add(v.reserved_tokens);
        }
    }
    escrow.allows_shard(limit, view_after, own, ctx.board.shards())
}

#[cfg(test)]
mod tests;
