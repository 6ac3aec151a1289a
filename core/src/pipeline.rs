//! The order of a chat request's steps, and nothing else: each step is one call
//! into its own module, with its own error type folded into [`GatewayError`].
//!
//! ```text
//! client ─► [1 accept+parse] ─► [2 key] ─► [3 credit] ─► [4 budget] ─► [5 route]
//!        ◄─ [7 respond] ◄─ [6 providers, failover] ◄────────────────────────┘
//!                                └─► [8 audit] ─► bridge ─► JetStream / files
//! ```
//!
//! Step 1's accept and HTTP parse live in `gatekeeper-net`; admission (a bound on the
//! shard's requests in flight) comes first of all, so an overloaded shard sheds for the
//! cost of a parse. The key is checked
//! before the body is parsed, so an unauthenticated client learns nothing about
//! its body. Step 8 runs inside step 7, just before the answer's last byte.

use gatekeeper_net::{Request, Responder};

use crate::error::GatewayError;
use crate::gateway::{ShardGateway, ShardTables};
use crate::trace::Trace;
use crate::{budget, credit, keys, providers, respond, router, wire};

/// Serves `POST /v1/chat/completions`.
pub async fn chat_completions(shard: &ShardGateway, req: Request, res: &mut Responder<'_>) {
    let mut trace = Trace::start();
    let request_id = request_id(shard, &req);
    // Hot changes first; then this request keeps these tables to its end.
    shard.apply_config_changes();
    let tables = shard.tables();
    let (slot, served) = match admit(shard) {
        Ok(slot) => (Some(slot), serve(shard, &tables, &req, res, &request_id, &mut trace).await),
        Err(e) => (None, Err(e)),
    };
    let status = match served {
        Ok(status) => status,
        Err(e) => {
            trace.close_overhead();
            let unauthenticated = matches!(&e, GatewayError::Key(k) if k.http_status_and_code().0 == 401)
                || matches!(&e, GatewayError::Credit(c) if c.http_status_and_code().0 == 401);
            let recorded = if unauthenticated && !shard.refusals.take(std::time::Instant::now()) {
                shard.metrics().unauthenticated_unrecorded.inc();
                Ok(())
            } else {
                shard.recorder(&tables).record(&request_id, &trace, e.attempts(), e.to_response().status)
            };
            let e = if recorded.is_ok() { e } else { GatewayError::AuditUnavailable };
            respond::send_error_with_change(res, &request_id, &e, trace.credit_change.as_deref()).await
        }
    };
    drop(slot);
    let latency_us = trace.elapsed().as_micros() as u64;
    shard.metrics().record_request(trace.model, trace.provider, status, latency_us);
    if let (Some(p), Some(u)) = (trace.provider, trace.usage) {
        shard.metrics().record_tokens(p, u.prompt_tokens, u.completion_tokens);
    }
}

async fn serve(
    shard: &ShardGateway,
    t: &ShardTables,
    req: &Request,
    res: &mut Responder<'_>,
    request_id: &str,
    trace: &mut Trace,
) -> Result<u16, GatewayError> {
    let credits = shard.gw.credits.as_ref();
    // A spend instead of a key: its proof is checked before the body is parsed, as a key is.
    let spend_header = req.header("x-gatekeeper-credit").filter(|_| req.header("authorization").is_none());
    let verified = match (credits, spend_header) {
        (Some(c), Some(h)) => Some(credit::verify(c, h, shard.metrics()).await?), // 3
        _ => None,
    };
    let claims = match verified {
        Some(_) => None,
        None => keys::authenticate(t.keys.as_deref(), req.header("authorization")).await?, // 2
    };
    trace.claims.clone_from(&claims);
    let chat = wire::openai::parse_chat(&req.body)?; // 1
    trace.model_requested = chat.model.chars().take(256).collect();
    trace.stream = chat.stream;
    // The auto alias is checked against the key's globs model by model, in the router.
    let auto = chat.model == t.tables.routes.routing.auto_model;
    if let (Some(c), false) = (&claims, auto) {
        c.check_model(&chat.model)?; // 2
    }
    let (payment, spent) = match (verified, credits) {
        (Some(v), Some(c)) => match v.pay(c, &chat, shard.metrics()).await {
            Ok(spent) => (credit::Payment::Credit, Some(spent)), // 3
            Err(credit::CreditError::Replayed { change }) => {
                trace.credit_change = change;
                return Err(credit::CreditError::Replayed { change: None }.into());
            }
            Err(e) => return Err(e.into()),
        },
        _ => (credit::check(claims.as_deref(), credits.is_some())?, None), // 3
    };
    if let Some(s) = &spent {
        trace.credit = Some((s.nullifier_hex(), s.amount()));
    }
    let served =
        forward(shard, t, req, res, request_id, trace, &chat, claims.as_deref(), payment, spent.as_ref()).await;
    if let (Err(_), Some(s)) = (&served, &spent) {
        // Paid but not served: the whole spend comes back with the error.
        trace.credit_change = s.change(credit::Used::Nothing).await;
    }
    served
}

/// Steps 4 to 8 of a request that passed its key or credit check.
#[allow(clippy::too_many_arguments)] // the request's parts, each used by one step
async fn forward(
    shard: &ShardGateway,
    t: &ShardTables,
    req: &Request,
    res: &mut Responder<'_>,
    request_id: &str,
    trace: &mut Trace,
    chat: &wire::openai::ChatRequest<'_>,
    claims: Option<&keys::Claims>,
    payment: credit::Payment,
    spent: Option<&credit::Spent>,
) -> Result<u16, GatewayError> {
    let route_request = router::RouteRequest::from_chat(chat);
    let need_tokens = t.tables.budgets.reservation(route_request.prompt_tokens, chat.max_tokens);
    let admission = budget::admit(shard.budget(t), payment, claims, need_tokens, crate::clock::unix_s_i64())?; // 4
    trace.budget = admission.trace();
    let input = router::RouteInput {
        model: &chat.model,
        mode_header: req.header("x-routing-mode"),
        claims,
        health: Some(&shard.health),
        now: std::time::Instant::now(),
    };
    let mut route = router::route(&t.tables.routes, &route_request, &input)?; // 5
    trace.model = route.deployments.first().map(|d| d.model);
    shard.metrics().record_decision(route.decision.mode, trace.model);
    trace.decision = Some(std::mem::take(&mut route.decision));
    // From here on, an error return (or this future being dropped) drops `admission`,
    // which releases its reservation.
    let answer = providers::forward(shard.upstreams(t), &route, req, chat, request_id, trace).await; // 6
    let answer = answer?;
    let recorder = shard.recorder(t);
    let record = |t: &Trace, status: u16| recorder.record(request_id, t, &t.attempts, status); // 8
    let status = respond::relay(answer, res, request_id, trace, shard.metrics(), record, spent).await; // 7
    let deployment = trace.deployment.and_then(|d| t.tables.routes.deployment(d));
    let price_per_1k = deployment.map(|d| (d.price_per_1k_input, d.price_per_1k_output));
    admission.settle(budget::Outcome { status, usage: trace.usage, price_per_1k }); // 4, settled
    Ok(status)
}

/// A shard's hold on one of its `limits.inflight_per_shard_max` places; given back on drop,
/// however the request ends.
struct InflightSlot<'s>(&'s ShardGateway);

impl Drop for InflightSlot<'_> {
    fn drop(&mut self) {
        self.0.inflight_add(-1);
    }
}

/// Admission: a place among the shard's requests in flight, or 503 `overloaded` at once.
/// Shedding early keeps the latency of the requests already admitted flat: past the bound,
/// more concurrency only queues behind them.
fn admit(shard: &ShardGateway) -> Result<InflightSlot<'_>, GatewayError> {
    if shard.inflight() >= shard.gw.inflight_per_shard_max {
        return Err(GatewayError::Unavailable("this shard is at limits.inflight_per_shard_max; retry shortly"));
    }
    shard.inflight_add(1);
    Ok(InflightSlot(shard))
}

/// The client's `X-Request-Id` when it is sane, else a fresh one.
fn request_id(shard: &ShardGateway, req: &Request) -> String {
    match req.header("x-request-id") {
        Some(v) if !v.is_empty() && v.len() <= 128 && v.iter().all(|b| b.is_ascii_graphic()) => {
            String::from_utf8_lossy(v).into_owned()
        }
        _ => shard.gw.request_ids.next(),
    }
}
