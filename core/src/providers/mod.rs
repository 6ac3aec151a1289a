//! Step 6, providers: call the route's deployments in order until one answers,
//! failing over on connect errors, timeouts, 429 and 5xx before anything reached
//! the client.
//!
//! One file per wire format spoken to providers: [`openai`] (OpenAI and every
//! OpenAI-compatible server) and [`anthropic`] (the Messages API, its body translated
//! by `wire::anthropic`). [`forward`] chooses by [`Provider::kind`]. [`attempt`] holds
//! the failover rule.

pub mod anthropic;
pub mod attempt;
pub mod headers;
pub mod openai;

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use gatekeeper_net::upstream::{Origin, Pool, PoolConfig, Response};
use gatekeeper_net::Request;
use serde::{Deserialize, Serialize};

use self::attempt::{Attempt, AttemptOutcome};
use crate::metrics::ShardMetrics;
use crate::router::health::Call;
use crate::router::{Deployment, HealthSettings, ProviderAlarm, ProviderHealth, Route, ShardHealth};
use crate::trace::Trace;
use crate::wire::{self, openai::ChatRequest};

/// Largest response body read from a provider for a non-streamed answer.
pub const UPSTREAM_BODY_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Wire format spoken to a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// api.openai.com.
    Openai,
    /// Anthropic Messages API.
    Anthropic,
    /// Any server speaking OpenAI's chat-completions API (Groq, DeepSeek, vLLM, …).
    OpenaiCompatible,
}

/// A provider as the gateway runs it (built from `providers[i]` in config).
pub struct Provider {
    /// Name from config.
    pub name: String,
    /// Wire format.
    pub kind: ProviderKind,
    /// Where it lives.
    pub origin: Origin,
    /// `Authorization` value sent upstream (`Bearer …`), if any (never for `kind: anthropic`).
    pub authorization: Option<String>,
    /// `kind: anthropic`'s own settings; `None` for every other kind.
    pub anthropic: Option<anthropic::AnthropicSettings>,
    /// Longest gap between two pieces of a relayed stream (`providers[].chunk_timeout_ms`).
    pub chunk_timeout: std::time::Duration,
    /// Pool settings (per shard).
    pub pool: PoolConfig,
    /// TLS client settings, for https origins.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Whether streams are asked for their usage event (`providers[].stream_usage`).
    pub stream_usage: bool,
    /// Client headers passed on (`providers[].forward_headers`).
    pub forward_headers: Vec<headers::HeaderRule>,
    /// Longest `Retry-After` honoured (`providers[].retry_after_max_s`).
    pub retry_after_max: std::time::Duration,
}

/// What a shard calls providers with: the process-wide provider list and the
/// shard's own pools, health and metrics, all indexed by provider.
#[derive(Clone, Copy)]
pub struct Upstreams<'g> {
    /// Providers in config order.
    pub providers: &'g [Provider],
    /// This shard's pool per provider.
    pub pools: &'g [Rc<Pool>],
    /// This shard's record per provider (operator-error log throttle).
    pub health: &'g [Rc<ProviderHealth>],
    /// This shard's circuits and latency estimates per deployment.
    pub circuits: &'g ShardHealth,
    /// `routing.health`.
    pub settings: &'g HealthSettings,
    /// This shard's metrics.
    pub metrics: &'g ShardMetrics,
    /// Refusals of the gateway's own settings, per provider, shared by every shard.
    pub alarms: &'g [ProviderAlarm],
}

/// What a provider answered, ready to relay.
pub struct Answer<'g> {
    /// The deployment that answered.
    pub deployment: &'g Deployment,
    /// Its provider.
    pub provider: &'g Provider,
    /// Upstream status (2xx, or a 4xx that is the client's to see).
    pub status: u16,
    /// Upstream `Content-Type`.
    pub content_type: Option<Bytes>,
    /// Upstream `Content-Encoding` (sent only by a provider that ignored `identity`).
    pub content_encoding: Option<Bytes>,
    /// The body, whole or still streaming.
    pub body: AnswerBody,
    /// The gateway asked for the stream's usage event, which the client did not: the
    /// relay removes it.
    pub strip_usage: bool,
    /// The call, in flight until the answer is relayed; the relay reports a stream's
    /// per-token time and a mid-stream failure on it.
    pub call: Call<'g>,
    /// `routing.health`, for those reports.
    pub settings: &'g HealthSettings,
    /// The client asked for the usage event (`stream_options.include_usage`); read when
    /// the relay writes the stream itself (translated answers).
    pub include_usage: bool,
}

/// An answer's body.
pub enum AnswerBody {
    /// Read to the end (non-streamed requests, and streamed requests answered with an error status).
    Whole(Bytes),
    /// A 2xx stream, relayed as it arrives. Boxed: it holds its connection and buffers.
    Stream(Box<Response>),
}

/// Why no provider answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// Every deployment failed or was skipped.
    #[error("all providers failed: {}", summary(.attempts))]
    Exhausted {
        /// What happened at each deployment, in order.
        attempts: Vec<Attempt>,
    },
    /// The request cannot be sent as the client wrote it (no provider is at fault).
    #[error("the request cannot be forwarded: {0}")]
    Unforwardable(String),
    /// The request cannot be translated for the provider's wire format (a field it has
    /// no equivalent for, or a malformed one).
    #[error(transparent)]
    Untranslatable(#[from] wire::openai::RequestError),
}

fn summary(attempts: &[Attempt]) -> String {
    if attempts.is_empty() {
        return "no deployment was tried".into();
    }
    attempts.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// Tries each deployment of `route` in order until one answers with something other
/// than a retryable failure. Nothing reaches the client here, so every failure before
/// the answer is complete (non-streamed) or has started (streamed) can fail over.
pub async fn forward<'g>(
    up: Upstreams<'g>,
    route: &Route<'g>,
    req: &Request,
    chat: &ChatRequest<'_>,
    request_id: &str,
    trace: &mut Trace,
) -> Result<Answer<'g>, ProviderError> {
    let mut headers: Vec<(&str, &[u8])> = Vec::with_capacity(8 + req.headers().size_hint().0);
    let usage_edit = wire::openai::stream_usage_edit(chat);
    for deployment in route.deployments.iter().copied() {
        let p = deployment.provider;
        let provider = &up.providers[p];
        // An open circuit (here, on another shard or node, or a Retry-After) skips it.
        let health = match up.circuits.admit(deployment, Instant::now(), up.settings) {
            Ok(h) => h,
            Err(retry_after_s) => {
                let outcome = AttemptOutcome::Skipped { retry_after_s };
                trace.attempts.push(Attempt { provider: p, provider_name: provider.name.clone(), outcome });
                continue;
            }
        };
        // The wire format, by `provider.kind`: OpenAI's body is the client's with the
        // model spliced in; Anthropic's is a translation.
        let translated: Vec<u8>;
        let (path, edit, request_body) = match &provider.anthropic {
            Some(settings) => {
                if let Err(e) = anthropic::headers(&mut headers, provider, settings, req, chat.stream, request_id) {
                    return Err(ProviderError::Unforwardable(e.to_string()));
                }
                translated =
                    wire::anthropic::messages_body(chat.body, &deployment.upstream_model, settings.max_tokens_default)?;
                (settings.path, None, [&translated[..], &[], &[], &[], &[]])
            }
            None => {
                if let Err(e) = openai::headers(&mut headers, provider, req, chat.stream, request_id) {
                    return Err(ProviderError::Unforwardable(e.to_string()));
                }
                let edit = usage_edit.as_deref().filter(|_| provider.stream_usage);
                (openai::PATH, edit, wire::openai::upstream_body(chat, &deployment.upstream_model_json, edit))
            }
        };
        let sent = Instant::now();
        let result = call(&up.pools[p], path, &headers, &request_body, chat.stream).await;
        trace.called(deployment, sent.elapsed());
        let outcome = match result {
            Ok(Called { status, content_type, content_encoding, body }) => {
                health.success(sent.elapsed(), up.settings);
                let (strip_usage, settings) = (edit.is_some(), up.settings);
                let include_usage = chat.include_usage;
                return Ok(Answer {
                    deployment,
                    provider,
                    status,
                    content_type,
                    content_encoding,
                    body,
                    strip_usage,
                    call: health,
                    settings,
                    include_usage,
                });
            }
            Err(Failure::Status(status, retry_after)) => {
                // Counted as a fault first: a Retry-After then sets the cool-down. A
                // refusal of our own settings is the operator's to fix (`/readyz`), not
                // the provider's health.
                if !attempt::is_operator_status(status) {
                    health.failure(up.settings);
                }
                if let Some(wait) = retry_after {
                    health.retry_after(wait.min(provider.retry_after_max));
                }
                AttemptOutcome::Status(status)
            }
            Err(Failure::Upstream(e)) => AttemptOutcome::Failed(e),
        };
        if outcome.is_provider_fault() {
            up.metrics.upstream_failures[p].inc();
            // Our own full pool and the client's bad bytes never reach here; a status
            // was counted above. The call ends here either way (dropped below).
            if matches!(outcome, AttemptOutcome::Failed(_)) {
                health.failure(up.settings);
            }
        }
        if let AttemptOutcome::Status(status) = outcome {
            if outcome.is_operator_error() {
                operator_error(&up, p, provider, status);
            }
        }
        let retryable = outcome.retryable();
        tracing::debug!(provider = %provider.name, ?outcome, retryable, "provider attempt failed");
        if !retryable {
            return Err(match outcome {
                AttemptOutcome::Failed(gatekeeper_net::upstream::UpstreamError::InvalidRequest(why)) => {
                    ProviderError::Unforwardable(why.to_string())
                }
                other => {
                    trace.attempts.push(Attempt { provider: p, provider_name: provider.name.clone(), outcome: other });
                    ProviderError::Exhausted { attempts: std::mem::take(&mut trace.attempts) }
                }
            });
        }
        trace.attempts.push(Attempt { provider: p, provider_name: provider.name.clone(), outcome });
    }
    Err(ProviderError::Exhausted { attempts: std::mem::take(&mut trace.attempts) })
}

/// A provider refused the gateway's own settings: raise its alarm (for `/readyz` and
/// metrics) and log at error level, at most once a minute per shard.
fn operator_error(up: &Upstreams<'_>, p: usize, provider: &Provider, status: u16) {
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    if let Some(alarm) = up.alarms.get(p) {
        alarm.raise(status, now_ms);
    }
    if up.health[p].should_log_operator_error(Instant::now()) {
        let cause = attempt::operator_cause(status).unwrap_or("the provider refused the request");
        tracing::error!(provider = %provider.name, status, "{cause}; failing over (fix providers[].{}, then reload)",
            if status == 404 { "base_url or models[].upstream_model" } else { "api_key" });
    }
}

/// How one call failed.
enum Failure {
    /// A status that allows failover, with the provider's `Retry-After`.
    Status(u16, Option<std::time::Duration>),
    /// No usable answer.
    Upstream(gatekeeper_net::upstream::UpstreamError),
}

/// A call that produced an answer to relay.
struct Called {
    status: u16,
    content_type: Option<Bytes>,
    content_encoding: Option<Bytes>,
    body: AnswerBody,
}

/// One call: sends the request and, unless it is a 2xx stream, reads the answer whole.
async fn call(
    pool: &Pool,
    path: &str,
    headers: &[(&str, &[u8])],
    body: &[&[u8]],
    stream: bool,
) -> Result<Called, Failure> {
    let mut resp = pool.send_parts("POST", path, headers, body).await.map_err(Failure::Upstream)?;
    if AttemptOutcome::from_status(resp.status).is_some() {
        return Err(Failure::Status(resp.status, resp.retry_after()));
    }
    let content_type = resp.header("content-type").map(Bytes::copy_from_slice);
    let content_encoding = resp.header("content-encoding").map(Bytes::copy_from_slice);
    let status = resp.status;
    if stream && (200..300).contains(&status) {
        return Ok(Called { status, content_type, content_encoding, body: AnswerBody::Stream(Box::new(resp)) });
    }
    let bytes = resp.read_to_end(UPSTREAM_BODY_BYTES_MAX).await.map_err(Failure::Upstream)?;
    Ok(Called { status, content_type, content_encoding, body: AnswerBody::Whole(bytes) })
}
