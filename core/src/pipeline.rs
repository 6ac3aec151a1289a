//! The request pipeline of DESIGN §1, one function per step, called top to bottom
//! by [`chat_completions`]; no step calls another.
//!
//! ```text
//! client ─► [1 accept+parse] ─► [2 key] ─► [3 zk credit] ─► [4 budget] ─► [5 route]
//!        ◄─ [7 stream back] ◄─ [6 provider pool, failover] ◄──────────────────┘
//!                                      └─► [8 audit + events] ─► NATS bridge ─► JetStream
//! ```
//!
//! Steps 3 (zk credit), 4 (budget) and 8 (audit) arrive with their own issues; until
//! then a request goes 1 → 2 → 5 → 6 → 7. Step 1's accept and HTTP parse live in
//! `gatekeeper-net`; here step 1 reads the few body fields the gateway needs.

use std::borrow::Cow;
use std::ops::Range;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gatekeeper_net::upstream::{Response, UpstreamError};
use gatekeeper_net::{Request, Responder};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::audit::AuditRecord;
use crate::error::{error_json, Attempt, AttemptOutcome, GatewayError};
use crate::gateway::{Deployment, ShardGateway, UPSTREAM_BODY_BYTES_MAX};
use crate::keys::{Claims, KeyError};
use crate::usage::{self, StreamUsage, Usage};

/// The fields of a chat-completions body the gateway reads (step 1).
#[derive(Debug)]
pub struct ChatRequest<'a> {
    /// The body as the client sent it.
    pub body: &'a [u8],
    /// Requested model name.
    pub model: Cow<'a, str>,
    /// Where the `model` value (with its quotes) sits in `body`, so it can be replaced without re-serializing.
    pub model_span: Range<usize>,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// `max_tokens` or `max_completion_tokens`, if given.
    pub max_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct ChatView<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(borrow, default)]
    messages: Option<&'a RawValue>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
}

/// What one request went through: for metrics, the response headers and the audit record.
#[derive(Default)]
struct Trace {
    started: Option<Instant>,
    started_unix_ms: u64,
    upstream: Duration,
    overhead_us: u64,
    model: Option<usize>,
    model_requested: String,
    provider: Option<usize>,
    deployment: Option<(usize, usize)>,
    stream: bool,
    claims: Option<Rc<Claims>>,
    attempts: Vec<Attempt>,
    usage: Option<Usage>,
}

impl Trace {
    fn elapsed(&self) -> Duration {
        self.started.map_or(Duration::ZERO, |s| s.elapsed())
    }
}

/// Serves `POST /v1/chat/completions`.
pub async fn chat_completions(shard: &ShardGateway, req: Request, res: &mut Responder<'_>) {
    let mut trace = Trace {
        started: Some(Instant::now()),
        started_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        ..Trace::default()
    };
    let request_id = request_id(shard, &req);
    shard.inflight_add(1);
    let status = match serve(shard, &req, res, &request_id, &mut trace).await {
        Ok(status) => status,
        Err(e) => {
            if let GatewayError::Upstream { attempts } = &e {
                trace.attempts.clone_from(attempts);
            }
            trace.overhead_us = trace.elapsed().saturating_sub(trace.upstream).as_micros() as u64;
            let e = match audit(shard, &request_id, &trace, e.to_response().status) {
                Ok(()) => e, // 8
                Err(()) => GatewayError::AuditUnavailable,
            };
            shard.send_error(res, &request_id, &e).await
        }
    };
    shard.inflight_add(-1);
    let latency_us = trace.elapsed().as_micros() as u64;
    shard.metrics().record_request(trace.model, trace.provider, status, latency_us);
    if let (Some(p), Some(u)) = (trace.provider, trace.usage) {
        shard.metrics().record_tokens(p, u.prompt_tokens, u.completion_tokens);
    }
}

async fn serve(
    shard: &ShardGateway,
    req: &Request,
    res: &mut Responder<'_>,
    request_id: &str,
    trace: &mut Trace,
) -> Result<u16, GatewayError> {
    let chat = parse_body(&req.body)?; // 1
    trace.model_requested = chat.model.chars().take(256).collect();
    trace.stream = chat.stream;
    let claims = authenticate(shard, req).await?; // 2
    trace.claims.clone_from(&claims);
    authorize_model(claims.as_deref(), &chat.model)?; // 2
    let (model_index, deployments) = route(shard, &chat)?; // 5
    trace.model = Some(model_index);
    let answer = forward(shard, req, &chat, deployments, request_id, trace).await?; // 6
                                                                                    // 7, with 8 (audit) handed the finished trace just before the last byte goes out.
    Ok(respond(shard, answer, res, request_id, trace, audit).await)
}

/// Step 1: reads `model`, `stream`, `max_tokens` and checks `messages`, validating the whole body as JSON.
pub fn parse_body(body: &[u8]) -> Result<ChatRequest<'_>, GatewayError> {
    let bad = |message: String, param: Option<&'static str>| GatewayError::BadRequest { message, param };
    if body.is_empty() {
        return Err(bad("request body is empty; expected a JSON chat-completions request".into(), None));
    }
    let view: ChatView<'_> =
        serde_json::from_slice(body).map_err(|e| bad(format!("request body is not valid JSON: {e}"), None))?;
    let raw_model = view.model.ok_or_else(|| bad("you must provide a model parameter".into(), Some("model")))?;
    let model: Cow<'_, str> =
        serde_json::from_str(raw_model.get()).map_err(|_| bad("model must be a string".into(), Some("model")))?;
    if model.is_empty() {
        return Err(bad("model must not be empty".into(), Some("model")));
    }
    match view.messages.map(|m| serde_json::from_str::<Vec<&RawValue>>(m.get())) {
        Some(Ok(list)) if !list.is_empty() => {}
        Some(Ok(_)) => return Err(bad("messages must not be empty".into(), Some("messages"))),
        Some(Err(_)) => return Err(bad("messages must be an array".into(), Some("messages"))),
        None => return Err(bad("you must provide a messages parameter".into(), Some("messages"))),
    }
    // RawValue borrowed from `body` is a sub-slice of it, so its offset is its place in the body.
    let start = raw_model.get().as_ptr() as usize - body.as_ptr() as usize;
    let model_span = start..start + raw_model.get().len();
    debug_assert!(model_span.end <= body.len());
    Ok(ChatRequest {
        body,
        model,
        model_span,
        stream: view.stream.unwrap_or(false),
        max_tokens: view.max_completion_tokens.or(view.max_tokens),
    })
}

/// Step 2: checks the bearer token offline; `None` when the gateway runs with `--no-auth`.
pub async fn authenticate(shard: &ShardGateway, req: &Request) -> Result<Option<Rc<Claims>>, GatewayError> {
    let Some(keys) = &shard.keys else {
        return Ok(None);
    };
    shard.apply_config_changes();
    let token = req
        .header("authorization")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(KeyError::Missing)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    Ok(Some(keys.verify(token, now).await?))
}

/// Step 2, second half: the key's model allow-list.
pub fn authorize_model(claims: Option<&Claims>, model: &str) -> Result<(), GatewayError> {
    match claims {
        Some(c) => Ok(c.check_model(model)?),
        None => Ok(()),
    }
}

/// Step 5 (first cut): the deployments of the requested model, in failover order.
pub fn route<'g>(shard: &'g ShardGateway, chat: &ChatRequest<'_>) -> Result<(usize, &'g [Deployment]), GatewayError> {
    match shard.gw.deployments.get(chat.model.as_ref()) {
        Some((index, list)) if !list.is_empty() => Ok((*index, list.as_slice())),
        _ => Err(GatewayError::ModelNotFound(chat.model.chars().take(200).collect())),
    }
}

/// What a provider answered, ready to relay.
pub struct Answer<'g> {
    deployment: &'g Deployment,
    status: u16,
    content_type: Option<Bytes>,
    body: AnswerBody,
}

enum AnswerBody {
    Whole(Bytes),
    // Boxed: a response holds its connection and buffers, and answers move by value.
    Stream(Box<Response>),
}

/// Client headers never forwarded upstream: hop-by-hop, framing, the client's own
/// credential, and what the gateway sets itself.
const NOT_FORWARDED: [&str; 17] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "authorization",
    "cookie",
    "accept-encoding",
    "content-type",
    "x-request-id",
    "x-routing-mode",
];

/// Step 6: tries each deployment in order until one answers with something other
/// than a connect error, a timeout, 429 or 5xx. Nothing reaches the client here, so
/// every failure before the answer is complete (non-streamed) or has started
/// (streamed) can still fail over.
async fn forward<'g>(
    shard: &'g ShardGateway,
    req: &Request,
    chat: &ChatRequest<'_>,
    deployments: &'g [Deployment],
    request_id: &str,
    trace: &mut Trace,
) -> Result<Answer<'g>, GatewayError> {
    let mut attempts: Vec<Attempt> = Vec::new();
    let accept: &[u8] = if chat.stream { b"text/event-stream" } else { b"application/json" };
    for (index, deployment) in deployments.iter().enumerate() {
        trace.deployment = trace.model.map(|m| (m, index));
        let provider = &shard.gw.providers[deployment.provider];
        let health = &shard.health[deployment.provider];
        let now = Instant::now();
        if let Some(until) = health.blocked_until.get() {
            if until > now {
                let left = until.duration_since(now).as_secs_f64().ceil() as u64;
                attempts.push(Attempt {
                    provider: provider.name.clone(),
                    outcome: AttemptOutcome::Skipped { retry_after_s: left },
                });
                continue;
            }
            health.blocked_until.set(None);
        }
        let body = splice_model(chat, &deployment.upstream_model_json);
        let mut headers: Vec<(&str, &[u8])> = Vec::with_capacity(8 + req.headers().size_hint().0);
        headers.push(("Content-Type", b"application/json"));
        headers.push(("Accept", accept));
        headers.push(("X-Request-Id", request_id.as_bytes()));
        if let Some(auth) = &provider.authorization {
            headers.push(("Authorization", auth.as_bytes()));
        }
        headers.extend(req.headers().filter(|(n, _)| !NOT_FORWARDED.iter().any(|x| n.eq_ignore_ascii_case(x))));

        let sent = Instant::now();
        let result = shard.pools[deployment.provider].send_parts("POST", "/chat/completions", &headers, &body).await;
        let outcome = match result {
            Err(e) => failure_outcome(&e),
            Ok(resp) if resp.status == 429 || resp.status >= 500 => {
                if let Some(wait) = resp.retry_after() {
                    health.blocked_until.set(Some(Instant::now() + wait));
                }
                AttemptOutcome::Status(resp.status)
            }
            Ok(resp) => {
                let content_type = resp.header("content-type").map(Bytes::copy_from_slice);
                let status = resp.status;
                if chat.stream && (200..300).contains(&status) {
                    trace.upstream += sent.elapsed();
                    trace.provider = Some(deployment.provider);
                    trace.attempts = attempts;
                    return Ok(Answer { deployment, status, content_type, body: AnswerBody::Stream(Box::new(resp)) });
                }
                let mut resp = resp;
                match resp.read_to_end(UPSTREAM_BODY_BYTES_MAX).await {
                    Ok(bytes) => {
                        trace.upstream += sent.elapsed();
                        trace.provider = Some(deployment.provider);
                        trace.attempts = attempts;
                        return Ok(Answer { deployment, status, content_type, body: AnswerBody::Whole(bytes) });
                    }
                    Err(e) => failure_outcome(&e),
                }
            }
        };
        trace.upstream += sent.elapsed();
        trace.provider = Some(deployment.provider);
        shard.metrics().upstream_failures[deployment.provider].inc();
        tracing::debug!(provider = %provider.name, ?outcome, "provider attempt failed; failing over");
        attempts.push(Attempt { provider: provider.name.clone(), outcome });
    }
    Err(GatewayError::Upstream { attempts })
}

fn failure_outcome(e: &UpstreamError) -> AttemptOutcome {
    if e.is_timeout() {
        AttemptOutcome::TimedOut(e.to_string())
    } else {
        AttemptOutcome::Failed(e.to_string())
    }
}

/// The client's body with its `model` value replaced by the deployment's upstream id, as
/// three pieces sent back to back: nothing is copied until the pool writes its request.
pub fn splice_model<'a>(chat: &ChatRequest<'a>, upstream_model_json: &'a str) -> [&'a [u8]; 3] {
    let body = chat.body;
    [&body[..chat.model_span.start], upstream_model_json.as_bytes(), &body[chat.model_span.end..]]
}

/// Step 7: relays the answer — whole, or as a stream chunk by chunk as it arrives.
async fn respond(
    shard: &ShardGateway,
    answer: Answer<'_>,
    res: &mut Responder<'_>,
    request_id: &str,
    trace: &mut Trace,
    before_last_byte: fn(&ShardGateway, &str, &Trace, u16) -> Result<(), ()>,
) -> u16 {
    let provider = &shard.gw.providers[answer.deployment.provider];
    let overhead_us = trace.elapsed().saturating_sub(trace.upstream).as_micros() as u64;
    trace.overhead_us = overhead_us;
    shard.metrics().overhead.record(overhead_us);
    let overhead = overhead_us.to_string();
    let default_type: &[u8] = match answer.body {
        AnswerBody::Stream(_) => b"text/event-stream",
        AnswerBody::Whole(_) => b"application/json",
    };
    let content_type = answer.content_type.as_deref().unwrap_or(default_type);
    let mut headers: Vec<(&str, &[u8])> = vec![
        ("Content-Type", content_type),
        ("X-Request-Id", request_id.as_bytes()),
        ("X-Gatekeeper-Provider", provider.name.as_bytes()),
        ("X-Gatekeeper-Model", answer.deployment.upstream_model.as_bytes()),
        ("X-Gatekeeper-Overhead-Us", overhead.as_bytes()),
    ];
    match answer.body {
        AnswerBody::Whole(body) => {
            trace.usage = usage::from_body(&body);
            if before_last_byte(shard, request_id, trace, answer.status).is_err() {
                return shard.send_error(res, request_id, &GatewayError::AuditUnavailable).await;
            }
            let _ = res.send(answer.status, &headers, &body).await;
            answer.status
        }
        AnswerBody::Stream(mut upstream) => {
            headers.push(("Cache-Control", b"no-cache"));
            if res.start_stream(answer.status, &headers).await.is_err() {
                return answer.status;
            }
            let mut stream_usage = StreamUsage::default();
            let stream_started = Instant::now();
            loop {
                match upstream.chunk().await {
                    Ok(Some(data)) => {
                        stream_usage.feed(&data);
                        if res.send_chunk(&data).await.is_err() {
                            // The client went away; dropping `upstream` closes that connection.
                            trace.upstream += stream_started.elapsed();
                            trace.usage = stream_usage.usage();
                            let _ = before_last_byte(shard, request_id, trace, 499);
                            return answer.status;
                        }
                    }
                    Ok(None) => {
                        trace.upstream += stream_started.elapsed();
                        trace.usage = stream_usage.usage();
                        if before_last_byte(shard, request_id, trace, answer.status).is_err() {
                            // Unrecorded: the stream must not look complete.
                            res.abort();
                            return 503;
                        }
                        let _ = res.end_stream().await;
                        return answer.status;
                    }
                    Err(e) => {
                        // Bytes already reached the client: no failover. End with an
                        // error event so the stream cannot pass for a complete answer.
                        tracing::warn!(provider = %provider.name, error = %e, "stream from provider failed mid-way");
                        shard.metrics().upstream_failures[answer.deployment.provider].inc();
                        let event = stream_error_event(&format!("provider {} failed mid-stream: {e}", provider.name));
                        trace.upstream += stream_started.elapsed();
                        trace.usage = stream_usage.usage();
                        let _ = before_last_byte(shard, request_id, trace, 502);
                        let _ = res.send_chunk(&event).await;
                        let _ = res.end_stream().await;
                        return 502;
                    }
                }
            }
        }
    }
}

/// Step 8: the audit record of a finished request, handed over before its last byte
/// reaches the client, so nothing acknowledged can be missing from the log.
fn audit(shard: &ShardGateway, request_id: &str, trace: &Trace, status: u16) -> Result<(), ()> {
    let deployment = trace.deployment.and_then(|(m, d)| {
        let name = shard.gw.model_names.get(m)?;
        shard.gw.deployments.get(name)?.1.get(d)
    });
    let usage = trace.usage.unwrap_or_default();
    let record = AuditRecord {
        request_id: request_id.to_string(),
        ts_unix_ms: trace.started_unix_ms,
        shard: shard.index as u16,
        kid: None,
        key_id: trace.claims.as_ref().map(|c| c.jti.clone()),
        tenant: trace.claims.as_ref().and_then(|c| c.tenant.clone()),
        model_requested: trace.model_requested.clone(),
        provider: trace.provider.and_then(|p| shard.gw.provider_names.get(p).cloned()),
        model_upstream: deployment.map(|d| d.upstream_model.clone()),
        route_mode: None,
        complexity: None,
        stream: trace.stream,
        status,
        tokens_in: usage.prompt_tokens,
        tokens_out: usage.completion_tokens,
        cost_usd: deployment.map_or(0.0, |d| usage.cost_usd(d.price_per_1k_input, d.price_per_1k_output)),
        upstream_us: trace.upstream.as_micros() as u64,
        overhead_us: trace.overhead_us,
        attempts: trace.attempts.iter().map(|a| a.to_string()).collect(),
        content: None,
    };
    shard.audit_submit(&record).map_err(|_| ())
}

/// An SSE event carrying an OpenAI-shaped error (what OpenAI's SDKs raise on).
fn stream_error_event(message: &str) -> Vec<u8> {
    let json = error_json(message, "server_error", None, Some("upstream_stream_error"));
    let mut event = Vec::with_capacity(json.len() + 10);
    event.extend_from_slice(b"\n\ndata: ");
    event.extend_from_slice(&json);
    event.extend_from_slice(b"\n\n");
    event
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_finds_model_span() {
        let body = br#"{"messages":[{"role":"user","content":"hi"}], "model" : "gpt-4o-mini","stream":true}"#;
        let chat = parse_body(body).expect("valid");
        assert_eq!(chat.model, "gpt-4o-mini");
        assert_eq!(&body[chat.model_span.clone()], br#""gpt-4o-mini""#);
        assert!(chat.stream);
        let spliced = splice_model(&chat, "\"llama-3.1-8b\"").concat();
        let v: serde_json::Value = serde_json::from_slice(&spliced).expect("still JSON");
        assert_eq!(v["model"], "llama-3.1-8b");
        assert_eq!(v["messages"][0]["content"], "hi");
    }

    #[test]
    fn escaped_model_names_decode() {
        let body = br#"{"model":"gpt\u002d4","messages":[{"role":"user","content":"x"}]}"#;
        assert_eq!(parse_body(body).expect("valid").model, "gpt-4");
    }

    #[test]
    fn bad_bodies_name_the_param() {
        let param = |b: &[u8]| match parse_body(b) {
            Err(GatewayError::BadRequest { param, .. }) => param,
            other => panic!("expected BadRequest, got {other:?}"),
        };
        assert_eq!(param(b""), None);
        assert_eq!(param(b"{not json"), None);
        assert_eq!(param(b"[1,2]"), None);
        assert_eq!(param(br#"{"messages":[{"role":"user","content":"x"}]}"#), Some("model"));
        assert_eq!(param(br#"{"model":5,"messages":[{}]}"#), Some("model"));
        assert_eq!(param(br#"{"model":"m"}"#), Some("messages"));
        assert_eq!(param(br#"{"model":"m","messages":[]}"#), Some("messages"));
        assert_eq!(param(br#"{"model":"m","messages":{}}"#), Some("messages"));
        assert_eq!(param(br#"{"model":"m","model":"n","messages":[{}]}"#), None);
        assert_eq!(param(br#"{"model":"m","messages":[{}]} trailing"#), None);
    }

    #[test]
    fn stream_error_event_is_sse_json() {
        let ev = stream_error_event("boom");
        let text = String::from_utf8(ev).expect("utf8");
        let data = text.trim().strip_prefix("data: ").expect("data line");
        let v: serde_json::Value = serde_json::from_str(data).expect("json");
        assert_eq!(v["error"]["code"], "upstream_stream_error");
    }

    proptest::proptest! {
        #[test]
        fn parse_body_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = parse_body(&data);
        }
    }
}
