//! Anonymous credits (issue 14): the client's and the gateway's cost per operation, and
//! the range-proof part of the other route the issue names, priced side by side.
//!
//! `cargo bench -p gatekeeper-bench --bench zk -- --warm-up-time 1 --measurement-time 5`
//!
//! - `zk/prove_spend`: client, a spend at `BALANCE_BITS` (24-bit) balances (`Wallet::spend`);
//! - `zk/verify_fast`: gateway, `Issuer::verify` (our verifier, `gatekeeper_zk::verifier`:
//!   proof check only, what the gateway pays once per spend);
//! - `zk/verify_crate`: the draft crate's `refund` with refund 0 (its verification plus
//!   signing; what `Issuer::verify` cost before);
//! - `zk/change_sign`: gateway, `Issuer::sign_change` (signs the change of a verified
//!   spend, no verification), next to `zk/change_crate`: the crate's `refund` with a
//!   refund (verify again + sign, what the gateway paid at the end of each answer before);
//! - `zk/verify_batch/{1,8,32}`: `verifier::verify_batch` over that many spends, per
//!   batch (divide by n for the per-proof cost);
//! - `zk_width/verify_fast/{16,24,32}` and `zk_width/verify_crate/{16,24,32}`: one
//!   verification at balance width L (the construction's cost per bit);
//! - `zk/decode_spend`: gateway, base64url + CBOR decode of the header value;
//! - `zk/issue`: gateway, `Issuer::issue`; `zk/accept_credential`, `zk/accept_change`:
//!   client, checking the issuer's proof and building the credential;
//! - `zk/derive_epoch_key`: `Issuer::derive` (once per epoch per node);
//! - `bulletproofs/verify_range_32`, `bulletproofs/prove_range_32`: a single 32-bit
//!   bulletproofs range proof (zkcrypto `bulletproofs` 5, the design's first choice),
//!   which an own construction would need on top of a credential proof;
//! - `bulletproofs/verify_range_32_batch/{1,8,32}`: bulletproofs' aggregated proof of
//!   that many 32-bit values, per batch (the draft's proofs have no batch form).
//!
//! Batch verification of the draft's spends cannot merge the proofs' equations: a proof
//! carries challenge + responses, so the verifier must rebuild every commitment point to
//! hash it; only the compression is shared (see zk/SPEC.md §9).

use std::hint::black_box;

use anonymous_credit_tokens::{Params, PreIssuance, PrivateKey};
use bulletproofs::{BulletproofGens, PedersenGens, RangeProof};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use curve25519_dalek::scalar::Scalar;
use gatekeeper_zk::verifier::{self, Generators, IssuerSecret, SpendFields};
use gatekeeper_zk::{Domain, Issuer, IssuerSeed, Spend, Wallet, BALANCE_BITS, PARAMS_VERSION};
use merlin::Transcript;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn funded() -> (Issuer, Wallet, ChaCha20Rng) {
    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    let domain = Domain::new("bench").expect("name");
    let issuer = Issuer::derive(&domain, &IssuerSeed::from_bytes([9; 32]), 20_422);
    let mut wallet = Wallet::new(domain, issuer.public_key());
    let req = wallet.request_credential(&mut rng).expect("request");
    let resp = issuer.issue(&req, gatekeeper_zk::CREDITS_MAX, &mut rng).expect("issue");
    wallet.accept_credential(&resp).expect("credential");
    (issuer, wallet, rng)
}

fn credits(c: &mut Criterion) {
    let (issuer, wallet, mut rng) = funded();
    let mut g = c.benchmark_group("zk");
    g.bench_function("prove_spend", |b| {
        b.iter_batched(|| wallet.clone(), |mut w| black_box(w.spend(4_096, &mut rng)), BatchSize::SmallInput)
    });
    let spend = wallet.clone().spend(4_096, &mut rng).expect("spend");
    let text = spend.encode();
    g.bench_function("decode_spend", |b| b.iter(|| black_box(Spend::decode(black_box(&text)))));
    g.bench_function("verify_fast", |b| b.iter(|| black_box(issuer.verify(black_box(&spend)))));
    g.bench_function("verify_crate", |b| b.iter(|| black_box(issuer.change_reference(&spend, 0, &mut rng))));
    let verified = issuer.verify(&spend).expect("verify");
    g.bench_function("change_sign", |b| b.iter(|| black_box(issuer.sign_change(&verified, 1_000, &mut rng))));
    g.bench_function("change_crate", |b| b.iter(|| black_box(issuer.change_reference(&spend, 1_000, &mut rng))));
    let spends: Vec<SpendFields<BALANCE_BITS>> = (0..32)
        .map(|_| {
            let s = wallet.clone().spend(4_096, &mut rng).expect("spend");
            let (_, body) =
                gatekeeper_zk::wire::decode(&s.encode(), gatekeeper_zk::wire::SPEND_BYTES_MAX).expect("frame");
            SpendFields::from_cbor(&body).expect("decode")
        })
        .collect();
    for n in [1usize, 8, 32] {
        let batch: Vec<&SpendFields<BALANCE_BITS>> = spends.iter().take(n).collect();
        g.bench_function(format!("verify_batch/{n}"), |b| {
            b.iter(|| black_box(verifier::verify_batch(issuer.domain().generators(), issuer.secret(), &batch)))
        });
    }
    // A wallet holding a pending spend, and that spend's change.
    let mut spending = wallet.clone();
    let spend2 = spending.spend(4_096, &mut rng).expect("spend");
    let change2 = issuer.change(&spend2, 1_000, &mut rng).expect("change");
    g.bench_function("accept_change", |b| {
        b.iter_batched(|| spending.clone(), |mut w| black_box(w.accept_change(&change2)), BatchSize::SmallInput)
    });
    let domain = Domain::new("bench").expect("name");
    let mut fresh = Wallet::new(domain.clone(), issuer.public_key());
    let req = fresh.request_credential(&mut rng).expect("request");
    g.bench_function("issue", |b| b.iter(|| black_box(issuer.issue(&req, 1_000_000, &mut rng))));
    let resp = issuer.issue(&req, 1_000_000, &mut rng).expect("issue");
    g.bench_function("accept_credential", |b| {
        b.iter_batched(|| fresh.clone(), |mut w| black_box(w.accept_credential(&resp)), BatchSize::SmallInput)
    });
    let seed = IssuerSeed::from_bytes([9; 32]);
    g.bench_function("derive_epoch_key", |b| b.iter(|| black_box(Issuer::derive(&domain, &seed, 20_423))));
    g.finish();
}

/// One verification at balance width `L`, ours and the crate's, on a spend made with the
/// crate directly (Gatekeeper's own types are fixed at `BALANCE_BITS`).
fn width<const L: usize>(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    let mut rng = ChaCha20Rng::from_seed([L as u8; 32]);
    let params = Params::new("gatekeeper", "credits", "bench", PARAMS_VERSION);
    let gens = Generators::new("gatekeeper", "credits", "bench", PARAMS_VERSION).expect("gens");
    let sk = PrivateKey::random(&mut rng);
    let secret = IssuerSecret::from_private_key(&sk).expect("secret");
    let pre = PreIssuance::random(&mut rng);
    let request = pre.request(&params, &mut rng);
    let c = Scalar::from((1u64 << L) - 1);
    let response = sk.issue::<L>(&params, &request, c, Scalar::from(20_422u64), &mut rng).expect("issue");
    let token = pre.to_credit_token::<L>(&params, sk.public(), &request, &response).expect("token");
    let (spend, _) = token.prove_spend::<L>(&params, Scalar::from(4_096u64), &mut rng).expect("spend");
    let fields = SpendFields::<L>::from_cbor(&spend.to_cbor().expect("cbor")).expect("decode");
    g.bench_function(format!("verify_fast/{L}"), |b| {
        b.iter(|| black_box(verifier::verify::<L>(&gens, &secret, &fields)))
    });
    g.bench_function(format!("verify_crate/{L}"), |b| {
        b.iter(|| black_box(sk.refund::<L>(&params, &spend, Scalar::ZERO, &mut rng)))
    });
}

fn widths(c: &mut Criterion) {
    let mut g = c.benchmark_group("zk_width");
    width::<16>(&mut g);
    width::<24>(&mut g);
    width::<32>(&mut g);
    g.finish();
}

fn bulletproofs_route(c: &mut Criterion) {
    let pc = PedersenGens::default();
    let bp = BulletproofGens::new(32, 32);
    let mut rng = rand_core::OsRng;
    let mut g = c.benchmark_group("bulletproofs");
    let blinding = Scalar::random(&mut rng);
    g.bench_function("prove_range_32", |b| {
        b.iter(|| {
            let mut t = Transcript::new(b"gatekeeper bench");
            black_box(RangeProof::prove_single(&bp, &pc, &mut t, 123_456, &blinding, 32))
        })
    });
    let (proof, commitment) =
        RangeProof::prove_single(&bp, &pc, &mut Transcript::new(b"gatekeeper bench"), 123_456, &blinding, 32)
            .expect("prove");
    g.bench_function("verify_range_32", |b| {
        b.iter(|| {
            let mut t = Transcript::new(b"gatekeeper bench");
            black_box(proof.verify_single(&bp, &pc, &mut t, &commitment, 32))
        })
    });
    for m in [1usize, 8, 32] {
        let values: Vec<u64> = (0..m as u64).map(|i| 1_000 + i).collect();
        let blindings: Vec<Scalar> = (0..m).map(|_| Scalar::random(&mut rng)).collect();
        let (proof, commitments) =
            RangeProof::prove_multiple(&bp, &pc, &mut Transcript::new(b"gatekeeper bench"), &values, &blindings, 32)
                .expect("prove");
        g.bench_function(format!("verify_range_32_batch/{m}"), |b| {
            b.iter(|| {
                let mut t = Transcript::new(b"gatekeeper bench");
                black_box(proof.verify_multiple(&bp, &pc, &mut t, &commitments, 32))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, credits, widths, bulletproofs_route);
criterion_main!(benches);
