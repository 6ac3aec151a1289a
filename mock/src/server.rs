//! Accept loop and per-connection request handling.
//!
//! One task per connection reads a head, then the body, then answers, and loops for
//! keep-alive. Answers without delay are appended to an output buffer that is written
//! only when the task must wait for more input, so pipelined requests are answered with
//! one write. Streams write each event on its own, at its own time.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::config::{Mock, Mode};
use crate::faults::{select_for, Fault};
use crate::http::{self, BodyFraming, ChunkedDecoder, Head, HttpError, Route};
use crate::latency::{clamp_ms, Ttft};
use crate::openai::EventKind;
use crate::request::{Answer, ChatRequest, TOKENS_MAX};
use crate::stats::Stats;
use crate::{anthropic, openai};

/// Most open connections; further ones are closed at once (shed, don't grow).
pub const CONNECTIONS_MAX: usize = 100_000;
/// Bytes reserved per socket read.
const READ_BYTES: usize = 16 * 1024;
/// Most SSE events in one stream; above any real answer (TOKENS_MAX + trailers).
const STREAM_EVENTS_MAX: usize = TOKENS_MAX + 16;
/// Scratch buffer used to drain a stalled connection.
const DRAIN_BYTES: usize = 4096;

struct Shared {
    config: Mock,
    stats: Arc<Stats>,
    start: Instant,
    next_id: AtomicU64,
    connections: AtomicUsize,
}

/// Decrements the open-connection count when a connection task ends.
struct ConnectionSlot(Arc<Shared>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts until `shutdown` resolves, counting into `stats`; connection tasks still
/// running then end when their runtime is dropped.
pub(crate) async fn serve(
    listener: TcpListener,
    config: Mock,
    stats: Arc<Stats>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared {
        config,
        stats,
        start: Instant::now(),
        next_id: AtomicU64::new(rand::thread_rng().gen::<u32>().into()),
        connections: AtomicUsize::new(0),
    });
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                if shared.connections.fetch_add(1, Ordering::Relaxed) >= CONNECTIONS_MAX {
                    shared.connections.fetch_sub(1, Ordering::Relaxed);
                    continue;
                }
                let slot = ConnectionSlot(shared.clone());
                tokio::spawn(async move {
                    connection(stream, &slot.0).await;
                    drop(slot);
                });
            }
        }
    }
}

/// What the connection loop does after an answer.
enum Flow {
    /// Serve the next request if keep-alive allows, else write what is buffered and close.
    Continue,
    /// Close now without writing anything more (reset, stall, cut).
    Abort,
}

enum BodyError {
    Closed,
    Http(HttpError),
}

async fn flush(stream: &mut TcpStream, out: &mut Vec<u8>) -> std::io::Result<()> {
    if !out.is_empty() {
        stream.write_all(out).await?;
        out.clear();
    }
    Ok(())
}

/// Reads more bytes; `false` on EOF or error.
async fn read_more(stream: &mut TcpStream, rbuf: &mut BytesMut, want: usize) -> bool {
    rbuf.reserve(want.clamp(READ_BYTES, http::BODY_BYTES_MAX));
    matches!(stream.read_buf(rbuf).await, Ok(n) if n > 0)
}

async fn connection(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    let mut rbuf = BytesMut::with_capacity(READ_BYTES);
    let mut out: Vec<u8> = Vec::with_capacity(READ_BYTES);
    // One request per pass; the loop ends when the client leaves or a request closes.
    loop {
        let (head, head_len) = match http::parse_head(&rbuf) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => {
                if flush(&mut stream, &mut out).await.is_err() || !read_more(&mut stream, &mut rbuf, READ_BYTES).await {
                    return;
                }
                continue;
            }
            Err(e) => {
                reject(shared.config.mode, e, &mut out);
                let _ = flush(&mut stream, &mut out).await;
                return;
            }
        };
        let _ = rbuf.split_to(head_len);
        let body = match read_body(&mut stream, &mut rbuf, &mut out, &head).await {
            Ok(body) => body,
            Err(BodyError::Closed) => return,
            Err(BodyError::Http(e)) => {
                reject(shared.config.mode, e, &mut out);
                let _ = flush(&mut stream, &mut out).await;
                return;
            }
        };
        match respond(shared, &head, &body, &mut stream, &mut out).await {
            Flow::Continue if head.keep_alive => {}
            Flow::Continue => {
                let _ = flush(&mut stream, &mut out).await;
                return;
            }
            Flow::Abort => return,
        }
    }
}

async fn read_body(
    stream: &mut TcpStream,
    rbuf: &mut BytesMut,
    out: &mut Vec<u8>,
    head: &Head,
) -> Result<Bytes, BodyError> {
    let continue_needed = head.expect_continue && rbuf.is_empty();
    if continue_needed && head.framing != BodyFraming::Length(0) {
        out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        flush(stream, out).await.map_err(|_| BodyError::Closed)?;
    }
    match head.framing {
        BodyFraming::Length(n) => {
            // n <= BODY_BYTES_MAX (checked in parse_head), so this loop is bounded.
            while rbuf.len() < n {
                if !read_more(stream, rbuf, n - rbuf.len()).await {
                    return Err(BodyError::Closed);
                }
            }
            Ok(rbuf.split_to(n).freeze())
        }
        BodyFraming::Chunked => {
            let mut decoder = ChunkedDecoder::default();
            loop {
                let used = decoder.feed(rbuf).map_err(BodyError::Http)?;
                let _ = rbuf.split_to(used);
                if decoder.is_done() {
                    return Ok(Bytes::from(decoder.into_body()));
                }
                if !read_more(stream, rbuf, READ_BYTES).await {
                    return Err(BodyError::Closed);
                }
            }
        }
    }
}

/// Writes the answer to a request that could not be read; the connection then closes.
fn reject(mode: Mode, e: HttpError, out: &mut Vec<u8>) {
    let status = e.status();
    write_error(mode, status, &e.to_string(), &[], out, false);
}

fn write_error(mode: Mode, status: u16, message: &str, extra: &[(&str, &str)], out: &mut Vec<u8>, keep_alive: bool) {
    let body = match mode {
        Mode::Anthropic => anthropic::status_error_body(status, message),
        _ => openai::status_error_body(status, message),
    };
    http::write_response(out, status, "application/json", extra, &body, keep_alive);
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

async fn respond(shared: &Shared, head: &Head, body: &[u8], stream: &mut TcpStream, out: &mut Vec<u8>) -> Flow {
    let mode = shared.config.mode;
    let ka = head.keep_alive;
    let json = "application/json";
    match head.route {
        Route::Stats if head.is_get => {
            let body = shared.stats.to_json(&shared.config.name);
            http::write_response(out, 200, json, &[], &body, ka);
        }
        Route::Reset if head.is_post => {
            shared.stats.reset();
            http::write_response(out, 200, json, &[], b"{\"reset\":true}", ka);
        }
        Route::Models if head.is_get => {
            if let Err(message) = check_auth(&shared.config, head) {
                write_error(mode, 401, &message, &[], out, ka);
            } else {
                let body = match mode {
                    Mode::Anthropic => anthropic::models_body(),
                    _ => openai::models_body(mode, unix_now()),
                };
                http::write_response(out, 200, json, &[], &body, ka);
            }
        }
        Route::ChatCompletions | Route::Messages if (head.route == Route::Messages) == (mode == Mode::Anthropic) => {
            if !head.is_post {
                write_error(mode, 405, "method not allowed; use POST", &[], out, ka);
                return Flow::Continue;
            }
            return chat(shared, head, body, stream, out).await;
        }
        Route::Stats | Route::Reset | Route::Models => {
            write_error(mode, 405, "method not allowed", &[], out, ka);
        }
        _ => {
            write_error(mode, 404, "Unknown request URL for this mock.", &[], out, ka);
        }
    }
    Flow::Continue
}

fn check_auth(config: &Mock, head: &Head) -> Result<(), String> {
    let Some(key) = config.api_key.as_deref() else {
        return Ok(());
    };
    let ok = match config.mode {
        Mode::Anthropic => head.x_api_key.as_deref() == Some(key),
        _ => head.authorization.as_deref().and_then(|a| a.strip_prefix("Bearer ")).is_some_and(|k| k.trim() == key),
    };
    if ok {
        Ok(())
    } else if config.mode == Mode::Anthropic {
        Err("invalid x-api-key".to_string())
    } else {
        Err("Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys."
            .to_string())
    }
}

/// Per-request settings after `X-Mock-*` headers override the flags.
struct Effective {
    fault: Fault,
    latency: Duration,
    ttft: Ttft,
    token_gap: Duration,
    tokens: usize,
    retry_after_s: u64,
    cut_after: usize,
}

fn header_num(raw: &Option<String>, name: &str, header: &str) -> Result<Option<u64>, String> {
    let Some(value) = raw.as_deref().and_then(|v| select_for(v, name)) else {
        return Ok(None);
    };
    value.parse::<u64>().map(Some).map_err(|_| format!("{header}: {value:?} is not a non-negative integer"))
}

fn effective(shared: &Shared, head: &Head) -> Result<Effective, String> {
    let c = &shared.config;
    let h = &head.mock;
    let name = c.name.as_str();
    let header_fault = match h.fault.as_deref().and_then(|v| select_for(v, name)) {
        Some(v) => Some(v.parse::<Fault>().map_err(|e| format!("X-Mock-Fault: {e}"))?),
        None => None,
    };
    let fault = header_fault.unwrap_or_else(|| scheduled_fault(shared));
    let ms = |v: u64| clamp_ms(v as f64);
    Ok(Effective {
        fault,
        latency: header_num(&h.latency_ms, name, "X-Mock-Latency-Ms")?.map_or(c.latency, ms),
        ttft: header_num(&h.ttft_ms, name, "X-Mock-Ttft-Ms")?.map_or(c.ttft, |v| Ttft::Fixed(ms(v))),
        token_gap: header_num(&h.token_ms, name, "X-Mock-Token-Ms")?.map_or(c.token_gap, ms),
        tokens: header_num(&h.tokens, name, "X-Mock-Tokens")?
            .map_or(c.tokens, |v| usize::try_from(v).unwrap_or(TOKENS_MAX).min(TOKENS_MAX)),
        retry_after_s: header_num(&h.retry_after, name, "X-Mock-Retry-After")?
            .map_or(c.retry_after_s, |v| v.min(86_400)),
        cut_after: header_num(&h.cut_after, name, "X-Mock-Cut-After")?
            .map_or(2, |v| usize::try_from(v).unwrap_or(usize::MAX)),
    })
}

/// The flag's fault, else the schedule phase's fault drawn at its rate.
fn scheduled_fault(shared: &Shared) -> Fault {
    if shared.config.fault != Fault::None {
        return shared.config.fault;
    }
    let Some(schedule) = &shared.config.schedule else {
        return Fault::None;
    };
    match schedule.phase_at(shared.start.elapsed()) {
        Some(p) if p.fault != Fault::None && rand::thread_rng().gen_bool(p.rate) => p.fault,
        _ => Fault::None,
    }
}

async fn chat(shared: &Shared, head: &Head, body: &[u8], stream: &mut TcpStream, out: &mut Vec<u8>) -> Flow {
    let config = &shared.config;
    let mode = config.mode;
    let ka = head.keep_alive;
    shared.stats.record_request(head.authorization.as_deref(), head.x_api_key.as_deref());
    if let Err(message) = check_auth(config, head) {
        write_error(mode, 401, &message, &[], out, ka);
        return Flow::Continue;
    }
    if mode == Mode::Anthropic && !head.anthropic_version {
        write_error(mode, 400, "anthropic-version: header is required", &[], out, ka);
        return Flow::Continue;
    }
    let req = match ChatRequest::parse(body) {
        Ok(req) => req,
        Err(e) => {
            let message = format!("We could not parse the JSON body of your request. ({e})");
            write_error(mode, 400, &message, &[], out, ka);
            return Flow::Continue;
        }
    };
    if let Err(message) = validate(mode, &req) {
        write_error(mode, 400, &message, &[], out, ka);
        return Flow::Continue;
    }
    let tool = match mode {
        Mode::Anthropic => match anthropic::check_request(body) {
            Ok(tool) => tool,
            Err(message) => {
                write_error(mode, 400, &message, &[], out, ka);
                return Flow::Continue;
            }
        },
        _ => None,
    };
    let model = req.model.clone().unwrap_or_default();
    shared.stats.record_model(&model);
    let eff = match effective(shared, head) {
        Ok(eff) => eff,
        Err(message) => {
            write_error(mode, 400, &message, &[], out, ka);
            return Flow::Continue;
        }
    };
    shared.stats.record_fault(eff.fault);
    if let Some(pauses) = &config.pauses {
        let hold = pauses.hold(shared.start.elapsed());
        if !hold.is_zero() {
            if flush(stream, out).await.is_err() {
                return Flow::Abort;
            }
            tokio::time::sleep(hold).await;
        }
    }
    match eff.fault {
        Fault::RateLimited => {
            let secs = eff.retry_after_s.to_string();
            let message = "Rate limit reached for requests (mock). Please try again later.";
            write_error(mode, 429, message, &[("retry-after", &secs)], out, ka);
            Flow::Continue
        }
        Fault::ServerError => {
            let message = "The server had an error while processing your request. Sorry about that!";
            write_error(mode, 500, message, &[], out, ka);
            Flow::Continue
        }
        Fault::Unavailable => {
            let message = "The engine is currently overloaded, please try again later.";
            // Anthropic says "overloaded" with its own 529.
            let status = if mode == Mode::Anthropic { 529 } else { 503 };
            write_error(mode, status, message, &[], out, ka);
            Flow::Continue
        }
        Fault::Reset => {
            let _ = flush(stream, out).await;
            // SO_LINGER 0 makes close() send RST instead of FIN.
            let _ = socket2::SockRef::from(&*stream).set_linger(Some(Duration::ZERO));
            Flow::Abort
        }
        Fault::Stall => {
            let _ = flush(stream, out).await;
            stall(stream).await;
            Flow::Abort
        }
        Fault::None | Fault::Cut => {
            let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
            let mut answer = Answer::new(&req, model, eff.tokens, id, unix_now());
            answer.tool = tool;
            if req.is_stream() {
                stream_answer(mode, &answer, &eff, stream, out).await
            } else {
                whole_answer(mode, &answer, &eff, ka, stream, out).await
            }
        }
    }
}

fn validate(mode: Mode, req: &ChatRequest) -> Result<(), String> {
    if req.model.as_deref().unwrap_or("").is_empty() {
        return Err("you must provide a model parameter".to_string());
    }
    if req.messages.is_none() {
        return Err("messages: field required".to_string());
    }
    if mode == Mode::Anthropic && req.max_tokens.is_none() {
        return Err("max_tokens: Field required".to_string());
    }
    Ok(())
}

/// Holds a stalled connection until the client goes away, discarding what it sends.
async fn stall(stream: &mut TcpStream) {
    let mut scratch = [0u8; DRAIN_BYTES];
    // Ends on EOF or error; each pass waits for the client, so it cannot spin.
    while let Ok(n) = stream.read(&mut scratch).await {
        if n == 0 {
            return;
        }
    }
}

async fn whole_answer(
    mode: Mode,
    answer: &Answer,
    eff: &Effective,
    ka: bool,
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
) -> Flow {
    let delay = {
        let ttft = eff.ttft.sample(&mut rand::thread_rng());
        let tokens = u32::try_from(answer.completion_tokens).unwrap_or(u32::MAX);
        eff.latency + ttft + eff.token_gap.saturating_mul(tokens)
    };
    if !delay.is_zero() {
        if flush(stream, out).await.is_err() {
            return Flow::Abort;
        }
        tokio::time::sleep(delay).await;
    }
    let body = match mode {
        Mode::Anthropic => anthropic::message_body(answer),
        _ => openai::completion_body(mode, answer),
    };
    if eff.fault == Fault::Cut {
        // Full Content-Length promised, half the body sent: the client sees a short read.
        http::write_head(out, 200, "application/json", Some(body.len()), &[], ka);
        out.extend_from_slice(&body[..body.len() / 2]);
        let _ = flush(stream, out).await;
        return Flow::Abort;
    }
    http::write_response(out, 200, "application/json", &[], &body, ka);
    Flow::Continue
}

fn stream_event(mode: Mode, answer: &Answer, i: usize, buf: &mut Vec<u8>) -> Option<EventKind> {
    match mode {
        Mode::Anthropic => anthropic::stream_event(answer, i, buf),
        _ => openai::stream_event(mode, answer, i, buf),
    }
}

async fn stream_answer(
    mode: Mode,
    answer: &Answer,
    eff: &Effective,
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
) -> Flow {
    let extra = [("cache-control", "no-cache")];
    http::write_head(out, 200, "text/event-stream", None, &extra, true);
    if flush(stream, out).await.is_err() {
        return Flow::Abort;
    }
    let ttft = eff.ttft.sample(&mut rand::thread_rng());
    let mut event = Vec::with_capacity(512);
    let mut framed = Vec::with_capacity(512);
    for i in 0..STREAM_EVENTS_MAX {
        event.clear();
        let Some(kind) = stream_event(mode, answer, i, &mut event) else {
            // The zero-length chunk ends the body; the connection stays usable.
            if stream.write_all(b"0\r\n\r\n").await.is_err() {
                return Flow::Abort;
            }
            return Flow::Continue;
        };
        if eff.fault == Fault::Cut && (i >= eff.cut_after || is_last(mode, answer, i)) {
            return Flow::Abort;
        }
        let delay = match kind {
            EventKind::First => ttft,
            EventKind::Token => eff.token_gap,
            EventKind::Trailer => Duration::ZERO,
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        framed.clear();
        http::write_chunk(&mut framed, &event);
        if stream.write_all(&framed).await.is_err() {
            return Flow::Abort;
        }
    }
    Flow::Abort
}

/// Whether event `i` is the stream's last (`[DONE]` / `message_stop`), which a cut
/// must never send.
fn is_last(mode: Mode, answer: &Answer, i: usize) -> bool {
    let mut scratch = Vec::new();
    stream_event(mode, answer, i + 1, &mut scratch).is_none()
}
