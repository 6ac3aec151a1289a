//! Per-stage costs of the request path (performance budgets in ARCHITECTURE.md: cached key check ≤ 1 µs; steps 2–5
//! well under 50 µs), measured in-process on the functions the pipeline calls.
//!
//! `cargo bench -p gatekeeper-bench --bench stages -- --warm-up-time 1 --measurement-time 2`
//!
//! - `parse_head`: `gatekeeper_net::http::request::parse_head` on a typical SDK request head;
//! - `chunked_decode/4KiB`: `ChunkedDecoder` over a 4 KiB body sent as 16 chunks;
//! - `parse_body/*`: `gatekeeper::wire::openai::parse_chat` (step 1 body fields), and the same
//!   plus the model splice the pipeline does before forwarding;
//! - `key_cache_hit/*`: `ShardVerifier::verify` (the async path the pipeline awaits,
//!   polled once: a hit never suspends) and `verify_now` on a token already verified;
//! - `sse/*`: `DataLines` and `StreamUsage` fed one typical OpenAI stream chunk, and
//!   the final usage chunk that `StreamUsage` parses;
//! - `record_request`: `ShardMetrics::record_request` (counter + latency histogram);
//! - `health/*`: a deployment's circuit admit + success + drop (what failover does per
//!   attempt, publishing to a 4-shard board), and the latency mode's `order` over 4
//!   measured candidates.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use gatekeeper::keys::{issue, Claims, Footer, RevocationList, SecretKey, Verifier};
use gatekeeper::metrics::ShardMetrics;
use gatekeeper::wire::openai::parse_chat;
use gatekeeper::wire::openai::StreamUsage;
use gatekeeper_net::chunked::{ChunkedDecoder, Decoded};
use gatekeeper_net::http::request::{parse_head, Parsed};
use gatekeeper_net::sse::DataLines;

/// A request head as the openai Python SDK sends it (≈ 600 bytes, 14 fields).
const HEAD: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\n\
Host: 127.0.0.1:8080\r\n\
Accept-Encoding: gzip, deflate\r\n\
Connection: keep-alive\r\n\
Accept: application/json\r\n\
Content-Type: application/json\r\n\
User-Agent: OpenAI/Python 1.54.4\r\n\
X-Stainless-Lang: python\r\n\
X-Stainless-Package-Version: 1.54.4\r\n\
X-Stainless-OS: Linux\r\n\
X-Stainless-Arch: x64\r\n\
X-Stainless-Runtime: CPython\r\n\
X-Stainless-Runtime-Version: 3.11.7\r\n\
Authorization: Bearer v4.public.eyJpc3MiOiJiZW5jaCIsInN1YiI6InRlYW0tYSIsImp0aSI6ImtleS0wMDAwMDAwMCJ9\r\n\
Content-Length: 112\r\n\r\n";

/// A small chat request, as most SDK calls are.
const BODY: &[u8] = br#"{"messages":[{"role":"user","content":"Say hello to the gateway"}],"model":"gpt-4o-mini","max_tokens":16,"stream":false}"#;

/// One content chunk of an OpenAI stream, as relayed.
const SSE_CHUNK: &[u8] = b"data: {\"id\":\"chatcmpl-abc123\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" hello\"},\"finish_reason\":null}]}\n\n";

/// The final usage chunk of a stream with `stream_options.include_usage`.
const SSE_USAGE: &[u8] = b"data: {\"id\":\"chatcmpl-abc123\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":16,\"total_tokens\":28}}\n\ndata: [DONE]\n\n";

const NOW: i64 = 1_700_000_000;

/// Polls a future once; the cache-hit path of `verify` is ready on its first poll.
fn poll_once<F: Future>(f: F) -> Option<F::Output> {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

fn chunked_body(chunks: usize, chunk_bytes: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..chunks {
        v.extend_from_slice(format!("{chunk_bytes:x}\r\n").as_bytes());
        v.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, chunk_bytes));
        v.extend_from_slice(b"\r\n");
    }
    v.extend_from_slice(b"0\r\n\r\n");
    v
}

fn http(c: &mut Criterion) {
    let mut g = c.benchmark_group("http");
    g.throughput(Throughput::Bytes(HEAD.len() as u64));
    g.bench_function("parse_head", |b| {
        b.iter_batched(
            || BytesMut::from(HEAD),
            |mut buf| match parse_head(&mut buf, 16_384, 100) {
                Ok(Parsed::Complete(req)) => req,
                other => panic!("bench head did not parse: {other:?}"),
            },
            BatchSize::SmallInput,
        )
    });
    let body = chunked_body(16, 256);
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("chunked_decode/4KiB", |b| {
        b.iter_batched(
            || BytesMut::from(&body[..]),
            |mut buf| {
                let mut d = ChunkedDecoder::new(4 << 20);
                let mut total = 0usize;
                // 16 data events and the end: a bound well past that catches a stuck decoder.
                for _ in 0..64 {
                    match d.decode(&mut buf) {
                        Ok(Decoded::Data(piece)) => total += piece.len(),
                        Ok(Decoded::End) => break,
                        other => panic!("bench body did not decode: {other:?}"),
                    }
                }
                assert_eq!(total, 16 * 256);
                total
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn body(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_body");
    g.throughput(Throughput::Bytes(BODY.len() as u64));
    g.bench_function("small", |b| b.iter(|| parse_chat(black_box(BODY)).map(|r| r.max_tokens).ok()));
    g.bench_function("small+splice", |b| {
        b.iter(|| {
            let chat = parse_chat(black_box(BODY)).ok()?;
            Some(gatekeeper::wire::openai::upstream_body(&chat, "\"llama-3.1-8b-instant\"", None).concat())
        })
    });
    // A 4 KiB conversation: the serde walk over `messages` grows with the body.
    let long = format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"system","content":"You are terse."}},{}],"max_tokens":64}}"#,
        (0..16)
            .map(|i| format!(r#"{{"role":"user","content":"message {i}: {}"}}"#, "lorem ipsum ".repeat(18)))
            .collect::<Vec<_>>()
            .join(",")
    );
    g.throughput(Throughput::Bytes(long.len() as u64));
    g.bench_function("4KiB+splice", |b| {
        b.iter(|| {
            let chat = parse_chat(black_box(long.as_bytes())).ok()?;
            Some(gatekeeper::wire::openai::upstream_body(&chat, "\"llama-3.1-8b-instant\"", None).concat())
        })
    });
    g.finish();
}

fn keys(c: &mut Criterion) {
    let issuer = SecretKey::from_seed(&[7; 32]);
    let footer = Footer::for_key(&issuer.public_key());
    let claims = Claims {
        iss: Some("bench".into()),
        sub: Some("team-a".into()),
        jti: "key-00000000".into(),
        iat: Some(NOW),
        exp: Some(NOW + 86_400),
        models: vec!["gpt-4o*".into()],
        ..Claims::default()
    };
    let token = match issue(&issuer, &claims, &footer) {
        Ok(t) => t,
        Err(e) => panic!("issuing the bench token: {e}"),
    };
    let verifier = Verifier::new([issuer.public_key()], RevocationList::new(["r1"]), 30, 65_536);
    let shard = gatekeeper::keys::ShardVerifier::new(verifier.clone());
    assert!(shard.verify_now(&token, NOW).is_ok(), "bench token must verify");
    let mut g = c.benchmark_group("key_cache_hit");
    g.bench_function("verify", |b| {
        b.iter(|| match poll_once(shard.verify(black_box(&token), NOW)) {
            Some(Ok(c)) => c,
            other => panic!("cache hit expected, got {other:?}"),
        })
    });
    g.bench_function("verify_now", |b| b.iter(|| shard.verify_now(black_box(&token), NOW).ok()));
    g.finish();
}

fn sse(c: &mut Criterion) {
    let mut g = c.benchmark_group("sse");
    g.throughput(Throughput::Bytes(SSE_CHUNK.len() as u64));
    let mut lines = DataLines::new();
    g.bench_function("data_lines/chunk", |b| {
        b.iter(|| {
            let mut n = 0usize;
            lines.feed(black_box(SSE_CHUNK), |d| n += d.len());
            n
        })
    });
    let mut usage = StreamUsage::default();
    g.bench_function("stream_usage/chunk", |b| b.iter(|| usage.feed(black_box(SSE_CHUNK))));
    g.throughput(Throughput::Bytes(SSE_USAGE.len() as u64));
    g.bench_function("stream_usage/usage_chunk", |b| {
        b.iter(|| {
            usage.feed(black_box(SSE_USAGE));
            usage.usage()
        })
    });
    g.finish();
}

fn metrics(c: &mut Criterion) {
    let m = ShardMetrics::new(8, 4);
    let mut i = 0u64;
    c.bench_function("metrics/record_request", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            m.record_request(Some((i % 8) as usize), Some((i % 4) as usize), 200, black_box(1_000 + i % 50_000));
        })
    });
}

fn health(c: &mut Criterion) {
    use gatekeeper::router::{latency, Deployment, HealthBoard, HealthSettings, ShardHealth};
    let providers: Vec<String> = (0..4).map(|p| format!("p{p}")).collect();
    let board = std::sync::Arc::new(HealthBoard::new(4, vec!["m".into()], providers));
    let shard = ShardHealth::new(board, 0);
    let s = HealthSettings::default();
    let ds: Vec<Deployment> =
        (0..4).map(|p| Deployment { id: p, model: 0, provider: p, ..Default::default() }).collect();
    let now = std::time::Instant::now();
    for (i, d) in ds.iter().enumerate() {
        if let Ok(call) = shard.admit(d, now, &s) {
            call.success(std::time::Duration::from_millis(10 + i as u64), &s);
        }
    }
    let mut g = c.benchmark_group("health");
    g.bench_function("admit+success", |b| {
        b.iter(|| {
            if let Ok(call) = shard.admit(black_box(&ds[1]), std::time::Instant::now(), &s) {
                call.success(std::time::Duration::from_millis(11), &s);
            }
        })
    });
    g.bench_function("latency_order/4", |b| {
        b.iter(|| {
            let mut candidates: Vec<&Deployment> = ds.iter().collect();
            latency::order(&mut candidates, &shard, std::time::Instant::now());
            black_box(candidates.first().map(|d| d.provider))
        })
    });
    g.finish();
}

criterion_group!(benches, http, body, keys, sse, metrics, health);
criterion_main!(benches);
