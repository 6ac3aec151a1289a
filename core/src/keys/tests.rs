//! Verifier and shard tests: issuers, time windows, revocation, cache, batching.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use proptest::prelude::*;

use super::*;
use crate::router::mode::RouteMode;

const NOW: i64 = 1_700_000_000;

fn issuer(seed: u8) -> SecretKey {
    SecretKey::from_seed(&[seed; 32])
}

fn claims(jti: &str) -> Claims {
    Claims { jti: jti.into(), iat: Some(NOW), exp: Some(NOW + 3600), ..Claims::default() }
}

fn token(sk: &SecretKey, c: &Claims) -> String {
    issue(sk, c, &Footer::for_key(&sk.public_key())).unwrap()
}

fn verifier(keys: &[&SecretKey], leeway_s: u64) -> Verifier {
    Verifier::new(keys.iter().map(|k| k.public_key()), RevocationList::default(), leeway_s, 1024)
}

/// Polls every future round-robin until all are done: a stand-in for a single-threaded
/// runtime. Returns the outputs and how many polling rounds it took.
fn run_all<'a, T>(mut futures: Vec<Pin<Box<dyn Future<Output = T> + 'a>>>) -> (Vec<T>, usize) {
    let mut out: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    let mut cx = Context::from_waker(Waker::noop());
    let mut rounds = 0;
    while out.iter().any(Option::is_none) {
        rounds += 1;
        assert!(rounds < 100, "futures never finished");
        for (i, f) in futures.iter_mut().enumerate() {
            if out[i].is_none() {
                if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                    out[i] = Some(v);
                }
            }
        }
    }
    (out.into_iter().map(Option::unwrap).collect(), rounds)
}

type Verification<'a> = Pin<Box<dyn Future<Output = Result<std::rc::Rc<Claims>, KeyError>> + 'a>>;

fn verifications<'a>(shard: &'a ShardVerifier, tokens: &'a [String]) -> Vec<Verification<'a>> {
    tokens.iter().map(|t| Box::pin(shard.verify(t, NOW)) as Verification<'a>).collect()
}

fn block_on<T>(f: impl Future<Output = T>) -> T {
    run_all(vec![Box::pin(f)]).0.pop().unwrap()
}

#[test]
fn verifies_and_checks_issuer() {
    let a = issuer(1);
    let b = issuer(2);
    let t = token(&a, &claims("k1"));
    assert_eq!(verifier(&[&a], 0).verify_now(&t, NOW).unwrap().jti, "k1");
    // Rotation: both the old and the new issuer verify.
    let both = verifier(&[&b, &a], 0);
    assert!(both.verify_now(&t, NOW).is_ok());
    assert!(both.verify_now(&token(&b, &claims("k2")), NOW).is_ok());
    assert_eq!(verifier(&[&b], 0).verify_now(&t, NOW), Err(KeyError::UnknownIssuer));
    // Footer claims issuer `a` but `b` signed: bad signature, not a confused issuer.
    let lying = issue(&b, &claims("k3"), &Footer::for_key(&a.public_key())).unwrap();
    assert_eq!(both.verify_now(&lying, NOW), Err(KeyError::InvalidSignature));
    assert_eq!(both.verify_now("", NOW), Err(KeyError::Missing));
    assert!(matches!(both.verify_now("Bearer x", NOW), Err(KeyError::Malformed(_))));
    // No footer at all.
    let bare = paseto::sign(&a, &claims("k4").to_payload().unwrap(), b"", b"");
    assert!(matches!(both.verify_now(&bare, NOW), Err(KeyError::Malformed(_))));
}

#[test]
fn exp_and_nbf_edges_with_and_without_leeway() {
    let a = issuer(1);
    let c = Claims { jti: "t".into(), nbf: Some(NOW), exp: Some(NOW + 100), ..Claims::default() };
    let t = token(&a, &c);
    for leeway in [0i64, 30] {
        let v = verifier(&[&a], leeway as u64);
        // exp: valid through the second it names (plus leeway), expired one second later.
        assert!(v.verify_now(&t, NOW + 100 + leeway).is_ok(), "leeway {leeway}");
        assert_eq!(v.verify_now(&t, NOW + 101 + leeway), Err(KeyError::Expired), "leeway {leeway}");
        // nbf: valid from the second it names (minus leeway), not a second before.
        assert!(v.verify_now(&t, NOW - leeway).is_ok(), "leeway {leeway}");
        assert_eq!(v.verify_now(&t, NOW - leeway - 1), Err(KeyError::NotYetValid), "leeway {leeway}");
        // The shard path, cache included, draws the same edges.
        let shard = ShardVerifier::new(v.clone());
        assert!(block_on(shard.verify(&t, NOW + 100 + leeway)).is_ok());
        assert_eq!(block_on(shard.verify(&t, NOW + 101 + leeway)), Err(KeyError::Expired), "cache dropped at exp");
        assert_eq!(block_on(shard.verify(&t, NOW - leeway - 1)), Err(KeyError::NotYetValid));
    }
    // No exp: never expires.
    let forever = token(&a, &Claims { jti: "f".into(), ..Claims::default() });
    assert!(verifier(&[&a], 0).verify_now(&forever, i64::MAX).is_ok());
}

#[test]
fn revocation_and_runtime_replacement() {
    let a = issuer(1);
    let v = verifier(&[&a], 0);
    let shard = ShardVerifier::new(v.clone());
    let t = token(&a, &claims("k1"));
    let other = token(&a, &claims("k2"));
    assert!(block_on(shard.verify(&t, NOW)).is_ok());
    assert!(block_on(shard.verify(&other, NOW)).is_ok());
    assert_eq!(shard.cached(), 2);
    // A revocation arriving at runtime evicts the cached token at once.
    shard.set_revoked(Arc::new(RevocationList::new(["k1"])));
    assert_eq!(shard.cached(), 1);
    assert_eq!(block_on(shard.verify(&t, NOW)), Err(KeyError::Revoked));
    assert!(block_on(shard.verify(&other, NOW)).is_ok());
    // Replacing the list again un-revokes.
    shard.set_revoked(Arc::new(RevocationList::default()));
    assert!(block_on(shard.verify(&t, NOW)).is_ok());
    // The shared verifier's own list is separate and swapped by copy.
    let v2 = v.with_revoked(Arc::new(RevocationList::new(["k2"])));
    assert_eq!(v2.verify_now(&other, NOW), Err(KeyError::Revoked));
    assert!(v.verify_now(&other, NOW).is_ok());
}

#[test]
fn cache_hits_and_is_bounded() {
    let a = issuer(1);
    let v = Verifier::new([a.public_key()], RevocationList::default(), 0, 4);
    let shard = ShardVerifier::new(v.clone());
    let tokens: Vec<String> = (0..10).map(|i| token(&a, &claims(&format!("k{i}")))).collect();
    let first = block_on(shard.verify(&tokens[0], NOW)).unwrap();
    let again = block_on(shard.verify(&tokens[0], NOW)).unwrap();
    assert!(std::rc::Rc::ptr_eq(&first, &again), "second call is a cache hit");
    assert_eq!(shard.stats().cache_hits, 1);
    for t in &tokens {
        block_on(shard.verify(t, NOW)).unwrap();
        assert!(shard.cached() <= 4);
    }
    assert_eq!(shard.cached(), 4);
    // Sync path shares the cache.
    assert!(shard.verify_now(&tokens[9], NOW).is_ok());
    // A forged token never lands in the cache.
    let mut forged = tokens[1].clone().into_bytes();
    forged[20] ^= 1;
    let forged = String::from_utf8(forged).unwrap();
    assert!(block_on(shard.verify(&forged, NOW)).is_err());
    assert!(block_on(shard.verify(&forged, NOW)).is_err());
}

#[test]
fn sixty_three_good_and_one_forged_in_one_batch() {
    let a = issuer(1);
    let v = verifier(&[&a], 0);
    let shard = ShardVerifier::new(v.clone());
    let mut tokens: Vec<String> = (0..64).map(|i| token(&a, &claims(&format!("k{i}")))).collect();
    // Forge one: a valid token's claims re-signed by a stranger but claiming issuer `a`.
    let stranger = issuer(9);
    tokens[37] = issue(&stranger, &claims("evil"), &Footer::for_key(&a.public_key())).unwrap();
    let futures = verifications(&shard, &tokens);
    let (results, rounds) = run_all(futures);
    assert_eq!(rounds, 2, "each task yields exactly once");
    let failures: Vec<usize> = results.iter().enumerate().filter(|(_, r)| r.is_err()).map(|(i, _)| i).collect();
    assert_eq!(failures, [37]);
    assert_eq!(results[37], Err(KeyError::InvalidSignature));
    let work = shard.stats().work;
    assert!(work.batches >= 2, "{work:?}");
    assert!(work.single_signatures < 8, "bisection, not one-by-one: {work:?}");
    assert_eq!(shard.queued(), 0);
}

#[test]
fn all_forged_batch_work_is_bounded() {
    let a = issuer(1);
    let stranger = issuer(9);
    let v = verifier(&[&a], 0);
    let shard = ShardVerifier::new(v.clone());
    let tokens: Vec<String> = (0..64)
        .map(|i| issue(&stranger, &claims(&format!("k{i}")), &Footer::for_key(&a.public_key())).unwrap())
        .collect();
    let futures = verifications(&shard, &tokens);
    let (results, _) = run_all(futures);
    assert!(results.iter().all(|r| *r == Err(KeyError::InvalidSignature)));
    // Every signature ends up checked alone, and bisection stopped within its budget:
    // at most 2x the cost of checking all 64 one by one (costs measured in the bench).
    let work = shard.stats().work;
    assert_eq!(work.single_signatures, 64, "{work:?}");
    assert!(work.cost() <= 2 * 64 * super::batch::SINGLE_COST, "{work:?}");
}

#[test]
fn more_than_a_batch_queued_all_resolve() {
    let a = issuer(1);
    let v = verifier(&[&a], 0);
    let shard = ShardVerifier::new(v.clone());
    let tokens: Vec<String> = (0..150).map(|i| token(&a, &claims(&format!("k{i}")))).collect();
    let futures = verifications(&shard, &tokens);
    let (results, _) = run_all(futures);
    assert!(results.iter().all(Result::is_ok));
    let work = shard.stats().work;
    assert_eq!((work.batches, work.batch_signatures), (3, 150), "{work:?}");
}

#[test]
fn dropped_task_withdraws_its_check() {
    let a = issuer(1);
    let v = verifier(&[&a], 0);
    let shard = ShardVerifier::new(v.clone());
    let t = token(&a, &claims("k1"));
    let mut cx = Context::from_waker(Waker::noop());
    {
        let mut f = Box::pin(shard.verify(&t, NOW));
        assert!(f.as_mut().poll(&mut cx).is_pending());
        assert_eq!(shard.queued(), 1);
    }
    assert_eq!(shard.queued(), 0, "cancelled verify left its check queued");
    assert!(block_on(shard.verify(&t, NOW)).is_ok());
}

#[test]
fn flipping_any_byte_of_a_real_token_is_refused() {
    let a = issuer(1);
    let v = verifier(&[&a], 0);
    let t = token(&a, &claims("k1"));
    assert!(v.verify_now(&t, NOW).is_ok());
    for i in 0..t.len() {
        let mut b = t.clone().into_bytes();
        b[i] ^= 0x01;
        if let Ok(s) = String::from_utf8(b) {
            assert!(v.verify_now(&s, NOW).is_err(), "flip at {i} accepted");
        }
    }
}

#[test]
fn fuzz_entry_point_survives_samples() {
    let a = SecretKey::from_seed(&[42; 32]);
    let good = token(&a, &claims("k1"));
    for sample in [&b""[..], b"v4.public.", b"\xff\xfe", good.as_bytes(), b"k4.public.AAAA", b"k4.secret."] {
        fuzzing::parse_token(sample);
    }
}

fn arb_claims() -> impl Strategy<Value = Claims> {
    (
        "[A-Za-z0-9_-]{1,64}",
        proptest::option::of("\\PC{0,20}"),
        proptest::option::of(0i64..253_402_300_799),
        proptest::collection::vec("[a-z0-9*.-]{0,12}", 0..4),
        proptest::option::of(prop_oneof![Just(RouteMode::Cost), Just(RouteMode::Latency), Just(RouteMode::Capability)]),
        // serde_json (without `float_roundtrip`) parses floats to within an ulp or so, so
        // the round trip uses values with few decimals, as real claims have.
        proptest::option::of((0u32..=1000).prop_map(|q| f64::from(q) / 1000.0)),
        (
            proptest::option::of(0..=BUDGET_CLAIM_MAX),
            proptest::option::of((0u32..1_000_000).prop_map(|c| f64::from(c) / 100.0)),
        ),
        proptest::option::of(0..=BUDGET_CLAIM_MAX),
        any::<bool>(),
    )
        .prop_map(|(jti, sub, exp, models, route, quality, (tpd, usd), rpm, zk)| Claims {
            jti,
            sub,
            exp,
            models,
            route,
            quality,
            budget: Budget { tokens_per_day: tpd, usd_per_month: usd, ..Budget::default() },
            rpm,
            zk,
            ..Claims::default()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn issued_claims_round_trip(c in arb_claims()) {
        let a = issuer(5);
        let v = verifier(&[&a], 0);
        let t = token(&a, &c);
        let now = c.exp.unwrap_or(0).min(NOW);
        // The verifier adds the kid of the issuer whose signature it checked.
        let kid: std::sync::Arc<str> = std::sync::Arc::from(a.public_key().pid());
        prop_assert_eq!(v.verify_now(&t, now).unwrap(), Claims { kid: Some(kid), ..c.clone() });
        let got = decode_unverified(&t).unwrap();
        prop_assert_eq!(got.kid, Some(a.public_key().pid()));
    }
}

#[test]
fn absurd_budget_claims_are_refused_at_key_check() {
    let a = issuer(9);
    let v = verifier(&[&a], 0);
    for (payload, message) in [
        (
            &br#"{"jti":"b1","budget":{"tokens_per_day":-1}}"#[..],
            "budget.tokens_per_day must be a whole number from 0 to 2^53",
        ),
        (
            br#"{"jti":"b2","budget":{"tokens_per_minute":1e300}}"#,
            "budget.tokens_per_minute must be a whole number from 0 to 2^53",
        ),
        (br#"{"jti":"b3","budget":{"usd_per_month":"NaN"}}"#, "budget.usd_per_month must be a number from 0 to 2^53"),
        (
            br#"{"jti":"b4","budget":{"tokens_per_month":9007199254740993}}"#,
            "budget.tokens_per_month must be a whole number from 0 to 2^53",
        ),
        (br#"{"jti":"b5","rpm":9007199254740993}"#, "rpm must be a whole number from 0 to 2^53"),
    ] {
        // Signed by a trusted issuer: the signature is fine, the claims are not.
        let t = paseto::sign(&a, payload, &Footer::for_key(&a.public_key()).to_bytes(), b"");
        assert_eq!(v.verify_now(&t, NOW), Err(KeyError::Malformed(message)));
        assert_eq!(KeyError::Malformed(message).http_status_and_code(), (401, "invalid_api_key"));
    }
}
