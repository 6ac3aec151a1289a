//! Key verification micro-benchmarks (performance budget: cached key check ≤ 1 µs; ARCHITECTURE.md).
//!
//! `cargo bench -p gatekeeper --bench keys -- --warm-up-time 1 --measurement-time 2`
//!
//! - `single_verify`: one full `verify_now` (parse, Ed25519, claims) without a cache;
//! - `ed25519_single`: one `verify_strict`, the yardstick for the batch numbers;
//! - `batch_verify/N`: `ed25519_dalek::verify_batch` of N signatures — divide by N for
//!   the per-signature cost the `batch` module's cost constants come from;
//! - `cache_hit`: a `ShardVerifier` answering a token it has verified before;
//! - `full_claims_check`: cache hit plus the model allow-list check the pipeline does.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ed25519_dalek::{Signer as _, SigningKey};
use gatekeeper::keys::{issue, Claims, Footer, RevocationList, SecretKey, Verifier};

const NOW: i64 = 1_700_000_000;

fn claims(i: usize) -> Claims {
    Claims {
        iss: Some("bench".into()),
        sub: Some("team-a".into()),
        jti: format!("key-{i:08}"),
        iat: Some(NOW),
        exp: Some(NOW + 86_400),
        tenant: Some("acme".into()),
        models: vec!["gpt-4o*".into(), "claude-3-5-*".into()],
        quality: Some(0.7),
        rpm: Some(600),
        ..Claims::default()
    }
}

fn bench(c: &mut Criterion) {
    let issuer = SecretKey::from_seed(&[7; 32]);
    let footer = Footer::for_key(&issuer.public_key());
    let verifier = Verifier::new([issuer.public_key()], RevocationList::new(["r1", "r2"]), 30, 65_536);
    let token = issue(&issuer, &claims(0), &footer).unwrap();

    c.bench_function("single_verify", |b| b.iter(|| verifier.verify_now(black_box(&token), NOW).unwrap()));

    let key = SigningKey::from_bytes(&[7; 32]);
    let messages: Vec<Vec<u8>> = (0..64).map(|i| format!("{i:0300}").into_bytes()).collect();
    let signatures: Vec<_> = messages.iter().map(|m| key.sign(m)).collect();
    let keys = vec![key.verifying_key(); 64];
    c.bench_function("ed25519_single", |b| {
        b.iter(|| keys[0].verify_strict(black_box(&messages[0]), &signatures[0]).unwrap())
    });
    let mut group = c.benchmark_group("batch_verify");
    for n in [4usize, 8, 32, 64] {
        let refs: Vec<&[u8]> = messages[..n].iter().map(Vec::as_slice).collect();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter(|| ed25519_dalek::verify_batch(black_box(&refs), &signatures[..n], &keys[..n]).unwrap())
        });
    }
    group.finish();

    let shard = gatekeeper::keys::ShardVerifier::new(verifier.clone());
    shard.verify_now(&token, NOW).unwrap();
    c.bench_function("cache_hit", |b| b.iter(|| shard.verify_now(black_box(&token), NOW).unwrap()));
    c.bench_function("full_claims_check", |b| {
        b.iter(|| {
            let claims = shard.verify_now(black_box(&token), NOW).unwrap();
            claims.check_model(black_box("gpt-4o-mini")).unwrap();
            claims
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
