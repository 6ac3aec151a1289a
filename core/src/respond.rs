//! Step 7, respond: relay a provider's answer to the client — whole, or as a stream
//! chunk by chunk as it arrives — and answer errors as OpenAI-shaped JSON. Answers of
//! `kind: anthropic` providers are translated on the way (`wire::anthropic`); every
//! stream ends with an error event when the provider sends nothing for its
//! `chunk_timeout_ms`.
//!
//! The audit record (step 8) is written just before the answer's last byte leaves,
//! through the `record` callback: when it fails, a whole answer becomes 503
//! `audit_unavailable` and a stream is cut without its end, so nothing the client
//! saw complete is missing from the log.

use std::time::Instant;

use gatekeeper_net::upstream::UpstreamError;
use gatekeeper_net::Responder;

use crate::audit::AuditError;
use crate::credit::error::{CHANGE_HEADER, CHANGE_SSE_PREFIX};
use crate::credit::spend::{Spent, Used};
use crate::error::GatewayError;
use crate::metrics::ShardMetrics;
use crate::providers::attempt::{Attempt, AttemptOutcome};
use crate::providers::{Answer, AnswerBody};
use crate::trace::Trace;
use crate::wire::anthropic::{self, StreamState, StreamTranslator};
use crate::wire::openai::{error_json, stream_error_event, usage_from_body, StreamUsage, UsageEventFilter};

/// Status recorded for a client that went away before its answer ended (nginx's).
pub const STATUS_CLIENT_GONE: u16 = 499;

/// Relays `answer`; returns the status to count. `record` writes the audit record
/// for the status the request ended with.
pub async fn relay(
    answer: Answer<'_>,
    res: &mut Responder<'_>,
    request_id: &str,
    trace: &mut Trace,
    metrics: &ShardMetrics,
    mut record: impl FnMut(&Trace, u16) -> Result<(), AuditError>,
    spent: Option<&Spent>,
) -> u16 {
    // A credit-paid request's change: what the answer used, refunded from the spend
    // (signed on the verify pool, off this shard).
    let change = |trace: &Trace, status: u16| {
        let used = if (200..300).contains(&status) { Used::Answer(trace.usage) } else { Used::Nothing };
        async move {
            match spent {
                Some(s) => s.change(used).await,
                None => None,
            }
        }
    };
    let change_value: Option<String>;
    let provider = answer.provider;
    let overhead_us = trace.close_overhead();
    metrics.overhead.record(overhead_us);
    let overhead = overhead_us.to_string();
    let route = trace.decision.as_ref().map(|d| d.header_value());
    let default_type: &[u8] = match answer.body {
        AnswerBody::Stream(_) => b"text/event-stream",
        AnswerBody::Whole(_) => b"application/json",
    };
    let content_type = answer.content_type.as_deref().unwrap_or(default_type);
    let mut headers: Vec<(&str, &[u8])> = vec![
        ("Content-Type", content_type),
        ("X-Request-Id", request_id.as_bytes()),
        ("X-Gatekeeper-Provider", provider.name.as_bytes()),
        ("X-Gatekeeper-Model", answer.deployment.name.as_bytes()),
        ("X-Gatekeeper-Overhead-Us", overhead.as_bytes()),
    ];
    if let Some(route) = &route {
        headers.push(("X-Gatekeeper-Route", route.as_bytes()));
    }
    // OpenAI's x-ratelimit-* on every budgeted answer, whole or streamed.
    let mut rate_buf = String::new();
    let rate = trace.budget.map(|b| b.view.write(&mut rate_buf)).unwrap_or_default();
    for (name, range) in rate.iter().flatten() {
        headers.push((name, rate_buf.as_bytes().get(range.clone()).unwrap_or_default()));
    }
    if let Some(encoding) = &answer.content_encoding {
        headers.push(("Content-Encoding", encoding));
    }
    let mut upstream = match answer.body {
        AnswerBody::Whole(body) => {
            let (status, body) = if provider.anthropic.is_some() {
                // Translated: the body is the gateway's own JSON, whatever the provider labelled it.
                headers[0] = ("Content-Type", b"application/json");
                headers.retain(|(name, _)| *name != "Content-Encoding");
                let (status, body) = translate_whole(answer.status, &body, trace);
                if status == 502 {
                    metrics.upstream_failures[answer.deployment.provider].inc();
                }
                (status, bytes::Bytes::from(body))
            } else {
                trace.usage = usage_from_body(&body);
                (answer.status, body)
            };
            change_value = change(trace, status).await;
            if record(trace, status).is_err() {
                return send_error_with_change(
                    res,
                    request_id,
                    &GatewayError::AuditUnavailable,
                    change_value.as_deref(),
                )
                .await;
            }
            if let Some(v) = &change_value {
                headers.push((CHANGE_HEADER, v.as_bytes()));
            }
            let _ = res.send(status, &headers, &body).await;
            return status;
        }
        AnswerBody::Stream(upstream) => upstream,
    };
    headers.push(("Cache-Control", b"no-cache"));
    if res.start_stream(answer.status, &headers).await.is_err() {
        // The provider was called: the request is recorded even though nobody is listening.
        let _ = record(trace, STATUS_CLIENT_GONE);
        return STATUS_CLIENT_GONE;
    }
    let mut stream_usage = StreamUsage::default();
    // Only for streams whose usage event the gateway asked for and the client did not.
    let mut filter = answer.strip_usage.then(|| (UsageEventFilter::default(), Vec::new()));
    // Only for providers whose streams are translated (`kind: anthropic`).
    let mut translator = provider
        .anthropic
        .as_ref()
        .map(|_| (StreamTranslator::new(crate::clock::unix_s(), answer.include_usage), Vec::new()));
    // The upstream response's own read bound is the stream's inter-chunk timeout (the
    // pool's `read_idle_timeout_ms` when that is tighter): one timer per read.
    let chunk_timeout = upstream.bound_reads(provider.chunk_timeout);
    let stream_started = Instant::now();
    // The provider's closing `data: [DONE]` is held back until the record is written,
    // so a stream whose record fails ends with an error event, never a normal end.
    let mut done_held = false;
    let end = loop {
        let data = match upstream.chunk().await {
            Ok(Some(data)) => data,
            Ok(None) => match (&mut filter, &translator) {
                (_, Some((t, _))) if *t.state() != StreamState::Complete => {
                    break StreamEnd::ProviderFailed(UpstreamError::ClosedEarly)
                }
                (Some((f, out)), _) => {
                    out.clear();
                    f.finish(out);
                    if !out.is_empty() && res.send_chunk(out).await.is_err() {
                        break StreamEnd::ClientGone;
                    }
                    break StreamEnd::Complete;
                }
                _ => break StreamEnd::Complete,
            },
            // A translated stream already complete needs nothing more from the provider.
            Err(UpstreamError::ReadIdleTimeout)
                if translator.as_ref().is_some_and(|(t, _)| *t.state() == StreamState::Complete) =>
            {
                break StreamEnd::Complete
            }
            // A stall: the failed read closed the connection (never back to the pool).
            Err(UpstreamError::ReadIdleTimeout) => break StreamEnd::Stalled,
            Err(e) => break StreamEnd::ProviderFailed(e),
        };
        let sent = match (&mut filter, &mut translator) {
            (_, Some((t, out))) => {
                out.clear();
                t.feed(&data, out);
                done_held = *t.state() == StreamState::Complete;
                out.is_empty() || res.send_chunk(out).await.is_ok()
            }
            (Some((f, out)), None) => {
                stream_usage.feed(&data);
                out.clear();
                f.feed(&data, out);
                send_holding_done(res, out, &mut done_held).await
            }
            (None, None) => {
                stream_usage.feed(&data);
                send_holding_done(res, &data, &mut done_held).await
            }
        };
        if !sent {
            // Dropping `upstream` closes that connection.
            break StreamEnd::ClientGone;
        }
        if let Some((t, _)) = &translator {
            if let StreamState::Failed { message } = t.state() {
                // Its error event is already on its way to the client.
                break StreamEnd::ProviderErrorEvent(message.clone());
            }
        }
    };
    trace.upstream = trace.upstream.saturating_add(stream_started.elapsed());
    trace.usage = match &translator {
        Some((t, _)) => t.usage(),
        None => stream_usage.usage(),
    };
    match (&end, trace.usage) {
        (StreamEnd::Complete, Some(u)) => {
            answer.call.stream_done(stream_started.elapsed(), u.completion_tokens, answer.settings)
        }
        // Health: a stream that broke, stalled or carried the provider's error event counts
        // against the deployment.
        (StreamEnd::ProviderFailed(_) | StreamEnd::Stalled | StreamEnd::ProviderErrorEvent(_), _) => {
            answer.call.failure(answer.settings)
        }
        _ => {}
    }
    match end {
        StreamEnd::Complete => {
            if record(trace, answer.status).is_err() {
                // Unrecorded: the stream must not look complete.
                let e = GatewayError::AuditUnavailable;
                let event = stream_error_event(&e.to_string(), "audit_unavailable");
                let _ = res.send_chunk(&event).await;
                res.abort();
                return e.to_response().status;
            }
            if send_change_comment(res, change(trace, answer.status).await).await.is_err() {
                return STATUS_CLIENT_GONE;
            }
            if done_held && res.send_chunk(DONE_EVENT).await.is_err() {
                return STATUS_CLIENT_GONE;
            }
            let _ = res.end_stream().await;
            answer.status
        }
        StreamEnd::ClientGone => {
            let _ = record(trace, STATUS_CLIENT_GONE);
            // Nobody to send it to, but signed and kept all the same: the wallet gets it
            // back by repeating the spend (what the stream used so far is charged).
            if let Some(s) = spent {
                let _ = s.change(Used::Answer(trace.usage)).await;
            }
            STATUS_CLIENT_GONE
        }
        StreamEnd::ProviderFailed(e) => {
            // Bytes already reached the client: no failover. End with an error event so
            // the stream cannot pass for a complete answer.
            tracing::warn!(provider = %provider.name, error = %e, "stream from provider failed mid-way");
            metrics.upstream_failures[answer.deployment.provider].inc();
            let status = 502;
            let message = format!("provider {} failed mid-stream: {e}", provider.name);
            let event = stream_error_event(&message, "upstream_stream_error");
            // The error event marks the stream failed whether or not the record was written.
            let _ = record(trace, status);
            let _ = res.send_chunk(&event).await;
            let _ = send_change_comment(res, change(trace, status).await).await;
            let _ = res.end_stream().await;
            status
        }
        StreamEnd::ProviderErrorEvent(message) => {
            tracing::warn!(provider = %provider.name, error = %message, "provider ended its stream with an error");
            metrics.upstream_failures[answer.deployment.provider].inc();
            let status = 502;
            let _ = record(trace, status);
            let _ = send_change_comment(res, change(trace, status).await).await;
            let _ = res.end_stream().await;
            status
        }
        StreamEnd::Stalled => {
            let p = answer.deployment.provider;
            let chunk_timeout_ms = u64::try_from(chunk_timeout.as_millis()).unwrap_or(u64::MAX);
            tracing::warn!(provider = %provider.name, chunk_timeout_ms, "stream from provider stalled");
            metrics.upstream_failures[p].inc();
            metrics.stream_stalls[p].inc();
            let outcome = AttemptOutcome::Stalled { chunk_timeout_ms };
            trace.attempts.push(Attempt { provider: p, provider_name: provider.name.clone(), outcome });
            let status = 504;
            let message = format!("provider {} stalled mid-stream: nothing for {chunk_timeout_ms} ms", provider.name);
            let event = stream_error_event(&message, "upstream_stream_stalled");
            let _ = record(trace, status);
            let _ = res.send_chunk(&event).await;
            let _ = send_change_comment(res, change(trace, status).await).await;
            let _ = res.end_stream().await;
            status
        }
    }
}

/// A whole answer from a `kind: anthropic` provider in OpenAI's shape: the status to
/// send and the body. Sets the trace's usage.
fn translate_whole(status: u16, body: &[u8], trace: &mut Trace) -> (u16, Vec<u8>) {
    if !(200..300).contains(&status) {
        return (status, anthropic::error_body(status, body));
    }
    match anthropic::chat_completion(body, crate::clock::unix_s()) {
        Ok((json, usage)) => {
            trace.usage = usage;
            (status, json)
        }
        Err(e) => {
            tracing::warn!(error = %e, "provider answer could not be translated");
            (502, error_json(&e.to_string(), "server_error", None, Some("upstream_invalid_response")))
        }
    }
}

/// The event that ends an OpenAI stream.
const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";

/// Sends `bytes`, holding back a `data: [DONE]` event that ends them (`done_held` then
/// says so). False: the client is gone.
async fn send_holding_done(res: &mut Responder<'_>, bytes: &[u8], done_held: &mut bool) -> bool {
    let body = match bytes.strip_suffix(DONE_EVENT) {
        Some(rest) if rest.is_empty() || rest.ends_with(b"\n") => {
            *done_held = true;
            rest
        }
        _ => bytes,
    };
    body.is_empty() || res.send_chunk(body).await.is_ok()
}

/// How a relayed stream ended.
enum StreamEnd {
    /// The provider's stream ended cleanly.
    Complete,
    /// Writing to the client failed.
    ClientGone,
    /// Reading from the provider failed.
    ProviderFailed(UpstreamError),
    /// The provider's stream carried an error, already relayed as an error event.
    ProviderErrorEvent(String),
    /// Nothing arrived for the provider's `chunk_timeout_ms`.
    Stalled,
}

/// Sends a stream's change credential as an SSE comment line (which SDKs ignore),
/// before the stream's end. `Err`: the client is gone.
async fn send_change_comment(res: &mut Responder<'_>, change: Option<String>) -> Result<(), ()> {
    let Some(v) = change else { return Ok(()) };
    let line = format!("{CHANGE_SSE_PREFIX}{v}\n\n");
    res.send_chunk(line.as_bytes()).await.map_err(|_| ())
}

/// Answers with an error, unless a response is already under way (then the
/// connection is cut). Returns the status.
pub async fn send_error(res: &mut Responder<'_>, request_id: &str, err: &GatewayError) -> u16 {
    send_error_with_change(res, request_id, err, None).await
}

/// [`send_error`], carrying a credit-paid request's change credential in
/// `X-Gatekeeper-Credit-Change` when there is one.
pub async fn send_error_with_change(
    res: &mut Responder<'_>,
    request_id: &str,
    err: &GatewayError,
    change: Option<&str>,
) -> u16 {
    let e = err.to_response();
    if res.started() {
        res.abort();
        return e.status;
    }
    let retry;
    let mut headers: Vec<(&str, &[u8])> =
        vec![("Content-Type", b"application/json"), ("X-Request-Id", request_id.as_bytes())];
    if let Some(s) = e.retry_after_s {
        retry = s.to_string();
        headers.push(("Retry-After", retry.as_bytes()));
    }
    headers.extend(e.headers.iter().map(|(n, v)| (*n, v.as_bytes())));
    if let Some(v) = change {
        headers.push((CHANGE_HEADER, v.as_bytes()));
    }
    let _ = res.send(e.status, &headers, &e.body).await;
    e.status
}
