//! Anonymous credits, interleaved A/B timing: our verifier and change signer against the
//! draft crate's `refund`, sample by sample, so load on a shared machine hits both alike.
//! Prints medians and 10th percentiles (µs) and the ratios bench/RESULTS.md quotes.
//!
//! `cargo run --release -p gatekeeper-bench --example zk_ab -- 200` (200 samples each).
//! `zk_ab 2000 profile` only verifies a decoded spend 2000 times, `zk_ab 2000 profile-decode`
//! only decodes one (for `perf record`).
use anonymous_credit_tokens::{Params, PreIssuance, PrivateKey};
use curve25519_dalek::Scalar;
use gatekeeper_zk::verifier::{self, Generators, IssuerSecret, SpendFields};
use gatekeeper_zk::{Domain, Issuer, IssuerSeed, Spend, Wallet, BALANCE_BITS, PARAMS_VERSION};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::hint::black_box;
use std::time::Instant;

fn med(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[v.len() / 10])
}
fn us<T>(f: impl FnOnce() -> T) -> f64 {
    let t = Instant::now();
    black_box(f());
    t.elapsed().as_secs_f64() * 1e6
}

fn width<const L: usize>(n: usize) {
    let mut rng = ChaCha20Rng::from_seed([L as u8; 32]);
    let params = Params::new("gatekeeper", "credits", "bench", PARAMS_VERSION);
    let gens = Generators::new("gatekeeper", "credits", "bench", PARAMS_VERSION).unwrap();
    let sk = PrivateKey::random(&mut rng);
    let secret = IssuerSecret::from_private_key(&sk).unwrap();
    let pre = PreIssuance::random(&mut rng);
    let request = pre.request(&params, &mut rng);
    let response =
        sk.issue::<L>(&params, &request, Scalar::from((1u64 << L) - 1), Scalar::from(5u64), &mut rng).unwrap();
    let token = pre.to_credit_token::<L>(&params, sk.public(), &request, &response).unwrap();
    let (spend, _) = token.prove_spend::<L>(&params, Scalar::from(4_096u64), &mut rng).unwrap();
    let fields = SpendFields::<L>::from_cbor(&spend.to_cbor().unwrap()).unwrap();
    let (mut a, mut b) = (vec![], vec![]);
    for _ in 0..n {
        a.push(us(|| verifier::verify::<L>(&gens, &secret, &fields).unwrap()));
        b.push(us(|| sk.refund::<L>(&params, &spend, Scalar::ZERO, &mut rng).unwrap()));
    }
    let (am, ap) = med(&mut a);
    let (bm, bp) = med(&mut b);
    println!("L={L:2}: fast median {am:7.0} µs (p10 {ap:6.0}) | crate verify+sign median {bm:7.0} µs (p10 {bp:6.0}) | ratio {:.3}", am / bm);
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(200);
    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    let domain = Domain::new("bench").unwrap();
    let issuer = Issuer::derive(&domain, &IssuerSeed::from_bytes([9; 32]), 20_422);
    let mut wallet = Wallet::new(domain, issuer.public_key());
    let req = wallet.request_credential(&mut rng).unwrap();
    let resp = issuer.issue(&req, gatekeeper_zk::CREDITS_MAX, &mut rng).unwrap();
    wallet.accept_credential(&resp).unwrap();
    let spend = wallet.clone().spend(4_096, &mut rng).unwrap();
    // What the gateway verifies: a spend decoded from its wire text (points already
    // decompressed), as opposed to the wallet's own `spend` (decoded inside `verify`).
    let text = spend.encode();
    let decoded = Spend::decode(&text).unwrap();
    match std::env::args().nth(2).as_deref() {
        Some("profile") => {
            for _ in 0..n {
                black_box(issuer.verify(black_box(&decoded)).unwrap());
            }
            return;
        }
        Some("profile-decode") => {
            for _ in 0..n {
                black_box(Spend::decode(black_box(&text)).unwrap());
            }
            return;
        }
        _ => {}
    }
    println!("verifier backend (curve25519-dalek 5): {}", verifier::backend());
    let verified = issuer.verify(&spend).unwrap();
    let (mut v, mut vc, mut s, mut sc) = (vec![], vec![], vec![], vec![]);
    let (mut d, mut vd) = (vec![], vec![]);
    for _ in 0..n {
        d.push(us(|| Spend::decode(&text).unwrap()));
        vd.push(us(|| issuer.verify(&decoded).unwrap()));
        v.push(us(|| issuer.verify(&spend).unwrap()));
        vc.push(us(|| issuer.change_reference(&spend, 0, &mut rng).unwrap()));
        s.push(us(|| issuer.sign_change(&verified, 1_000, &mut rng).unwrap()));
        sc.push(us(|| issuer.change_reference(&spend, 1_000, &mut rng).unwrap()));
    }
    let p = |name: &str, v: &mut [f64]| {
        let (m, p10) = med(v);
        println!("{name:34} median {m:7.0} µs  p10 {p10:7.0} µs");
        m
    };
    p("decode_spend (Spend::decode)", &mut d);
    p("verify_decoded (Issuer::verify)", &mut vd);
    let fv = p("verify_fast (Issuer::verify)", &mut v);
    let cv = p("verify_crate (refund, t = 0)", &mut vc);
    let fs = p("change_sign (Issuer::sign_change)", &mut s);
    let cs = p("change_crate (refund, t = 1000)", &mut sc);
    println!("ratio verify fast/crate {:.3}; per answered request before (2 crate calls) {:.0} µs, now (verify + sign) {:.0} µs, ratio {:.3}", fv / cv, cv + cs, fv + fs, (fv + fs) / (cv + cs));
    let spends: Vec<SpendFields<BALANCE_BITS>> = (0..32)
        .map(|_| {
            let s = wallet.clone().spend(4_096, &mut rng).unwrap();
            let (_, body) = gatekeeper_zk::wire::decode(&s.encode(), gatekeeper_zk::wire::SPEND_BYTES_MAX).unwrap();
            SpendFields::from_cbor(&body).unwrap()
        })
        .collect();
    let mut per: Vec<(usize, Vec<f64>)> = [1usize, 8, 32].iter().map(|&k| (k, vec![])).collect();
    for _ in 0..(n / 8).max(5) {
        for (k, samples) in per.iter_mut() {
            let batch: Vec<&SpendFields<BALANCE_BITS>> = spends.iter().take(*k).collect();
            let t = us(|| verifier::verify_batch(issuer.domain().generators(), issuer.secret(), &batch));
            samples.push(t / *k as f64);
        }
    }
    for (k, samples) in per.iter_mut() {
        let (m, p10) = med(samples);
        println!("verify_batch/{k:<2} per proof: median {m:7.0} µs  p10 {p10:7.0} µs");
    }
    width::<16>(n / 2);
    width::<24>(n / 2);
    width::<32>(n / 2);
}
