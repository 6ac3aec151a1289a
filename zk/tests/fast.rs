//! The gateway's own verifier and change signer (`gatekeeper_zk::verifier`) against the
//! draft's crate: the draft's vectors (L = 8), random spends at L = 16/24/32, and
//! corrupted spends, which both must refuse.

use std::sync::OnceLock;

use anonymous_credit_tokens::{self as act, Params, PreIssuance, PrivateKey};
use ciborium::value::Value;
use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
use curve25519_dalek::ristretto::CompressedRistretto;
use curve25519_dalek::Scalar;
use gatekeeper_zk::verifier::{self, Generators, IssuerSecret, SpendFields};
use gatekeeper_zk::{Domain, Issuer, IssuerSeed, Spend, Wallet, ZkError, BALANCE_BITS};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const EPOCH: u32 = 20_422;

fn vectors() -> std::collections::HashMap<String, Vec<u8>> {
    let text = include_str!("data/act-ristretto255-vectors.txt");
    let mut out: std::collections::HashMap<String, String> = Default::default();
    let mut label = String::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        if let Some(name) = line.strip_suffix(':') {
            label = name.to_owned();
        } else {
            out.entry(label.clone()).or_default().push_str(line.trim());
        }
    }
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
    };
    out.into_iter().map(|(k, v)| (k, hex(&v))).collect()
}

#[test]
fn the_vectors_spend_verifies_and_its_refund_is_replayed_byte_for_byte() {
    let v = vectors();
    let mut seed = [0u8; 32];
    for (i, b) in seed.iter_mut().enumerate() {
        *b = u8::try_from(i).expect("small");
    }
    // The draft's run, in the draft's RNG order, up to the refund.
    let mut rng = ChaCha20Rng::from_seed(seed);
    let params = Params::new("test", "vectors", "v0", "2025-01-01");
    let sk = PrivateKey::random(&mut rng);
    let pre = PreIssuance::random(&mut rng);
    let request = pre.request(&params, &mut rng);
    let response = sk.issue::<8>(&params, &request, Scalar::from(100u64), Scalar::ZERO, &mut rng).expect("issue");
    let token = pre.to_credit_token::<8>(&params, sk.public(), &request, &response).expect("token");
    let (spend, _) = token.prove_spend::<8>(&params, Scalar::from(30u64), &mut rng).expect("spend");
    assert_eq!(spend.to_cbor().expect("cbor"), v["spend_proof_cbor"]);

    let gens = Generators::new("test", "vectors", "v0", "2025-01-01").expect("gens");
    let secret = IssuerSecret::from_private_key(&PrivateKey::from_cbor(&v["sk_cbor"]).expect("sk")).expect("secret");
    let fields = SpendFields::<8>::from_cbor(&v["spend_proof_cbor"]).expect("decode");
    let checked = verifier::verify::<8>(&gens, &secret, &fields).expect("the vector's spend verifies");
    assert_eq!(checked.charge, Scalar::from(30u64));
    assert_eq!(checked.nullifier.to_bytes().to_vec(), v["nullifier"]);
    let refund = checked.sign_change::<8>(&gens, &secret, Scalar::from(10u64), &mut rng).expect("sign");
    assert_eq!(refund, v["refund_cbor"], "the refund differs from the draft's vector");

    // The charge raised by one: refused.
    let mut forged = v["spend_proof_cbor"].clone();
    let charge_at = 1 + 1 + 2 + 32 + 1 + 2;
    forged[charge_at] = 0x1f;
    let forged = SpendFields::<8>::from_cbor(&forged).expect("still decodes");
    assert_eq!(verifier::verify::<8>(&gens, &secret, &forged).map(|_| ()), Err(ZkError::InvalidProof));
}

#[test]
fn the_secret_scalar_is_the_keys() {
    let domain = Domain::new("fast").expect("domain");
    for epoch in [0, 1, EPOCH, u32::MAX] {
        let issuer = Issuer::derive(&domain, &IssuerSeed::from_bytes([3; 32]), epoch);
        let from_cbor = IssuerSecret::from_private_key(issuer.private_key()).expect("secret");
        assert_eq!(from_cbor.public_bytes(), issuer.secret().public_bytes());
        let pk = issuer.private_key().public().to_cbor().expect("cbor");
        assert_eq!(pk[pk.len() - 32..], issuer.secret().public_bytes());
    }
}

struct Fixture {
    issuer: Issuer,
    spend: Spend,
}

/// One funded wallet's spend at L = BALANCE_BITS (proving costs milliseconds; shared by the cases).
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let (issuer, mut wallet, mut rng) = funded(7, 1_000_000);
        let spend = wallet.spend(4_096, &mut rng).expect("spend");
        Fixture { issuer, spend }
    })
}

fn funded(seed: u8, credits: u64) -> (Issuer, Wallet, ChaCha20Rng) {
    let mut rng = ChaCha20Rng::from_seed([seed; 32]);
    let domain = Domain::new("fast").expect("domain");
    let issuer = Issuer::derive(&domain, &IssuerSeed::from_bytes([seed; 32]), EPOCH);
    let mut wallet = Wallet::new(domain, issuer.public_key());
    let req = wallet.request_credential(&mut rng).expect("request");
    let resp = issuer.issue(&req, credits, &mut rng).expect("issue");
    wallet.accept_credential(&resp).expect("credential");
    (issuer, wallet, rng)
}

fn body(spend: &Spend) -> Vec<u8> {
    let (_, body) = gatekeeper_zk::wire::decode(&spend.encode(), gatekeeper_zk::wire::SPEND_BYTES_MAX).expect("frame");
    body
}

/// Both verifiers' verdicts on a CBOR body (`None`: the decoder refused it).
fn verdicts(issuer: &Issuer, body: &[u8]) -> (Option<bool>, Option<bool>) {
    let ours = SpendFields::<BALANCE_BITS>::from_cbor(body)
        .ok()
        .map(|f| verifier::verify::<BALANCE_BITS>(issuer.domain().generators(), issuer.secret(), &f).is_ok());
    let theirs = act::SpendProof::<BALANCE_BITS>::from_cbor(body).ok().map(|p| {
        issuer
            .private_key()
            .refund::<BALANCE_BITS>(issuer.domain().params(), &p, Scalar::ZERO, rand_core::OsRng)
            .is_ok()
    });
    (ours, theirs)
}

#[test]
fn random_spends_verify_and_our_change_is_the_crates_for_the_same_rng() {
    for seed in 1..=4u8 {
        let (issuer, mut wallet, mut rng) = funded(seed, gatekeeper_zk::CREDITS_MAX);
        for (amount, refund) in [(1u64, 0u64), (4_096, 4_096), (1_000_000, 123)] {
            let spend = wallet.spend(amount, &mut rng).expect("spend");
            let verified = issuer.verify(&spend).expect("verifies");
            assert_eq!((verified.amount, verified.nullifier), (amount, spend.nullifier()));
            let ours =
                issuer.sign_change(&verified, refund, &mut ChaCha20Rng::from_seed([seed ^ 0x55; 32])).expect("sign");
            let crates =
                issuer.change_reference(&spend, refund, &mut ChaCha20Rng::from_seed([seed ^ 0x55; 32])).expect("crate");
            assert_eq!(ours.encode(), crates.encode(), "seed {seed}, amount {amount}");
            let balance = wallet.accept_change(&ours).expect("the wallet takes our change");
            assert!(balance > 0);
        }
    }
}

#[test]
fn other_widths_verify_too() {
    fn at<const L: usize>() {
        let mut rng = ChaCha20Rng::from_seed([L as u8; 32]);
        let params = Params::new("gatekeeper", "credits", "fast", gatekeeper_zk::PARAMS_VERSION);
        let gens = Generators::new("gatekeeper", "credits", "fast", gatekeeper_zk::PARAMS_VERSION).expect("gens");
        let sk = PrivateKey::random(&mut rng);
        let secret = IssuerSecret::from_private_key(&sk).expect("secret");
        let pre = PreIssuance::random(&mut rng);
        let request = pre.request(&params, &mut rng);
        let c = Scalar::from((1u64 << L) - 1);
        let response = sk.issue::<L>(&params, &request, c, Scalar::from(5u64), &mut rng).expect("issue");
        let token = pre.to_credit_token::<L>(&params, sk.public(), &request, &response).expect("token");
        let (spend, _) = token.prove_spend::<L>(&params, Scalar::from(77u64), &mut rng).expect("spend");
        let cbor = spend.to_cbor().expect("cbor");
        let fields = SpendFields::<L>::from_cbor(&cbor).expect("decode");
        let checked = verifier::verify::<L>(&gens, &secret, &fields).expect("verifies");
        let ours = checked.sign_change::<L>(&gens, &secret, Scalar::from(7u64), &mut ChaCha20Rng::from_seed([1; 32]));
        let theirs =
            sk.refund::<L>(&params, &spend, Scalar::from(7u64), ChaCha20Rng::from_seed([1; 32])).expect("crate");
        assert_eq!(ours.expect("sign"), theirs.to_cbor().expect("cbor"), "L = {L}");
        // A width mismatch does not decode.
        assert!(SpendFields::<1>::from_cbor(&cbor).is_err());
    }
    at::<16>();
    at::<24>();
    at::<32>();
}

#[test]
fn a_spend_of_another_epoch_context_or_deployment_is_refused() {
    let f = fixture();
    let domain = f.issuer.domain().clone();
    let next = Issuer::derive(&domain, &IssuerSeed::from_bytes([7; 32]), EPOCH + 1);
    assert!(matches!(next.verify(&f.spend), Err(ZkError::WrongEpoch { .. })));
    // The same body framed as the next epoch: its context is still EPOCH's.
    let reframed = Spend::decode(&gatekeeper_zk::wire::encode(EPOCH + 1, &body(&f.spend))).expect("decode");
    assert_eq!(next.verify(&reframed).map(|_| ()), Err(ZkError::InvalidProof));
    // Another seed, and another deployment, same epoch.
    let other_seed = Issuer::derive(&domain, &IssuerSeed::from_bytes([8; 32]), EPOCH);
    assert_eq!(other_seed.verify(&f.spend).map(|_| ()), Err(ZkError::InvalidProof));
    let other_domain = Issuer::derive(&Domain::new("elsewhere").expect("d"), &IssuerSeed::from_bytes([7; 32]), EPOCH);
    assert_eq!(other_domain.verify(&f.spend).map(|_| ()), Err(ZkError::InvalidProof));
    // A verified spend's change cannot be signed by another key.
    let verified = f.issuer.verify(&f.spend).expect("verifies");
    let mut rng = rand_core::OsRng;
    assert_eq!(other_seed.sign_change(&verified, 0, &mut rng).map(|_| ()), Err(ZkError::InvalidProof));
    assert_eq!(
        next.sign_change(&verified, 0, &mut rng).map(|_| ()),
        Err(ZkError::WrongEpoch { got: EPOCH, current: EPOCH + 1 })
    );
}

#[test]
fn the_refund_is_bounded_by_the_amount() {
    let f = fixture();
    let verified = f.issuer.verify(&f.spend).expect("verifies");
    let mut rng = rand_core::OsRng;
    assert!(f.issuer.sign_change(&verified, 4_096, &mut rng).is_ok());
    assert_eq!(f.issuer.sign_change(&verified, 4_097, &mut rng).map(|_| ()), Err(ZkError::InvalidAmount));
    let checked =
        verifier::verify::<BALANCE_BITS>(f.issuer.domain().generators(), f.issuer.secret(), &f.spend_fields())
            .expect("verifies");
    let too_wide = Scalar::from(1u64 << BALANCE_BITS);
    let signed =
        checked.sign_change::<BALANCE_BITS>(f.issuer.domain().generators(), f.issuer.secret(), too_wide, &mut rng);
    assert_eq!(signed.map(|_| ()), Err(ZkError::InvalidAmount));
}

impl Fixture {
    fn spend_fields(&self) -> SpendFields<BALANCE_BITS> {
        SpendFields::from_cbor(&body(&self.spend)).expect("decode")
    }
}

/// `body` with map field `key` (element `index` of an array field, member `pair` of a
/// z pair) replaced by another valid value of its type.
fn with_field_changed(body: &[u8], key: u8, index: usize, pair: usize) -> Vec<u8> {
    let Value::Map(mut map) = ciborium::from_reader::<Value, _>(body).expect("cbor") else { panic!("not a map") };
    let entry = map.iter_mut().find(|(k, _)| k.as_integer() == Some(key.into())).expect("field");
    let mut target = &mut entry.1;
    if let Value::Array(items) = target {
        let n = items.len();
        target = &mut items[index % n];
        if let Value::Array(p) = target {
            target = &mut p[pair % 2];
        }
    }
    let Value::Bytes(bytes) = target else { panic!("not bytes") };
    let arr: [u8; 32] = bytes.as_slice().try_into().expect("32 bytes");
    let is_point = matches!(key, 3..=5);
    let changed = if is_point {
        (CompressedRistretto(arr).decompress().expect("point") + RISTRETTO_BASEPOINT_POINT).compress().to_bytes()
    } else {
        (Scalar::from_canonical_bytes(arr).expect("scalar") + Scalar::ONE).to_bytes()
    };
    *bytes = changed.to_vec();
    let mut out = Vec::new();
    ciborium::into_writer(&Value::Map(map), &mut out).expect("encode");
    out
}

#[test]
fn every_field_changed_is_refused_by_both() {
    let f = fixture();
    let good = body(&f.spend);
    assert_eq!(verdicts(&f.issuer, &good), (Some(true), Some(true)));
    for key in 1..=18u8 {
        for index in [0usize, 1, 17, 31] {
            for pair in 0..2 {
                let bad = with_field_changed(&good, key, index, pair);
                let (ours, theirs) = verdicts(&f.issuer, &bad);
                assert_eq!(ours, theirs, "field {key}[{index}][{pair}]");
                assert_ne!(ours, Some(true), "field {key}[{index}][{pair}] changed still verifies");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn a_flipped_byte_is_refused_by_both(at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let f = fixture();
        let mut bad = body(&f.spend);
        let i = at.index(bad.len());
        bad[i] ^= 1 << bit;
        let (ours, theirs) = verdicts(&f.issuer, &bad);
        prop_assert_eq!(ours, theirs);
        prop_assert_ne!(ours, Some(true));
    }

    #[test]
    fn a_changed_field_is_refused_by_both(key in 1u8..=18, index in 0usize..BALANCE_BITS, pair in 0usize..2) {
        let f = fixture();
        let bad = with_field_changed(&body(&f.spend), key, index, pair);
        let (ours, theirs) = verdicts(&f.issuer, &bad);
        prop_assert_eq!(ours, theirs);
        prop_assert_ne!(ours, Some(true));
    }
}
