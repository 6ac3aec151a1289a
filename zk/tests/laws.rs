//! Laws of the credit layer, on Gatekeeper's own types (L = BALANCE_BITS).

use gatekeeper_zk::{wire, Change, Domain, Issuer, IssuerSeed, Spend, Wallet, ZkError, CREDITS_MAX};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

const EPOCH: u32 = 20_422;

fn setup(credits: u64) -> (Issuer, Wallet, ChaCha20Rng) {
    let mut rng = ChaCha20Rng::from_seed([42; 32]);
    let domain = Domain::new("laws").expect("domain");
    let issuer = Issuer::derive(&domain, &IssuerSeed::from_bytes([1; 32]), EPOCH);
    let mut wallet = Wallet::new(domain, issuer.public_key());
    let req = wallet.request_credential(&mut rng).expect("request");
    let resp = issuer.issue(&req, credits, &mut rng).expect("issue");
    assert_eq!(wallet.accept_credential(&resp), Ok(credits));
    (issuer, wallet, rng)
}

fn raw(spend: &Spend) -> Vec<u8> {
    let (epoch, body) = wire::decode(&spend.encode(), wire::SPEND_BYTES_MAX).expect("frame");
    let mut out = vec![wire::WIRE_VERSION];
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(&body);
    out
}

fn b64(raw: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

#[test]
fn a_valid_spend_verifies_and_fits_its_cap() {
    let (issuer, mut wallet, mut rng) = setup(1_000);
    let spend = wallet.spend(250, &mut rng).expect("spend");
    let text = spend.encode();
    assert!(text.len() <= wire::SPEND_HEADER_CHARS_MAX, "{} chars", text.len());
    // The sizes SPEC.md states: 5 frame bytes + the CBOR spend at L = 24, and its base64url.
    assert_eq!(gatekeeper_zk::BALANCE_BITS, 24);
    assert_eq!(raw(&spend).len(), 3_828);
    assert_eq!(text.len(), 5_104);
    let decoded = Spend::decode(&text).expect("decode");
    let verified = issuer.verify(&decoded).expect("verify");
    assert_eq!(verified.amount, 250);
    assert_eq!(verified.nullifier, spend.nullifier());
    let change = issuer.sign_change(&verified, 0, &mut rng).expect("sign");
    assert_eq!(wallet.accept_change(&change), Ok(750));
}

#[test]
fn flipping_any_byte_of_a_spend_makes_it_fail() {
    let (issuer, mut wallet, mut rng) = setup(1_000);
    let spend = wallet.spend(250, &mut rng).expect("spend");
    let bytes = raw(&spend);
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x01;
        if let Ok(decoded) = Spend::decode(&b64(&bad)) {
            assert!(issuer.verify(&decoded).is_err(), "byte {i} flipped still verifies");
        }
    }
}

#[test]
fn an_overspend_cannot_be_produced_and_a_forged_one_fails() {
    let (issuer, mut wallet, mut rng) = setup(100);
    assert_eq!(wallet.spend(101, &mut rng).map(|_| ()), Err(ZkError::InsufficientBalance { wanted: 101 }));
    assert_eq!(
        wallet.spend(CREDITS_MAX + 1, &mut rng).map(|_| ()),
        Err(ZkError::InsufficientBalance { wanted: CREDITS_MAX + 1 })
    );
    // Forge: a valid spend of 100 with its (public) charge rewritten to 200.
    let spend = wallet.spend(100, &mut rng).expect("spend of the whole balance");
    let mut bytes = raw(&spend);
    // frame(5) + map head(1) + key 1(1) + bstr head(2) + nullifier(32) + key 2(1) + bstr head(2)
    let charge_at = 5 + 1 + 1 + 2 + 32 + 1 + 2;
    assert_eq!(bytes[charge_at], 100);
    bytes[charge_at] = 200;
    let forged = Spend::decode(&b64(&bytes)).expect("forged spend still decodes");
    assert_eq!(forged.amount(), Ok(200));
    assert_eq!(issuer.verify(&forged).map(|_| ()), Err(ZkError::InvalidProof));
}

#[test]
fn change_chains_for_1000_spends_with_the_right_balance() {
    let start = 10_000_000;
    let (issuer, mut wallet, mut rng) = setup(start);
    let mut expected = start;
    for i in 0..1_000u64 {
        let amount = rng.next_u64() % 20_000;
        let refund = if amount == 0 { 0 } else { rng.next_u64() % (amount + 1) };
        let spend = wallet.spend(amount, &mut rng).expect("spend");
        let spend = Spend::decode(&spend.encode()).expect("wire");
        let change = if i % 2 == 0 {
            issuer.change(&spend, refund, &mut rng).expect("change")
        } else {
            // The gateway's order: verify first, then sign the change at the end.
            let verified = issuer.verify(&spend).expect("verify");
            issuer.sign_change(&verified, refund, &mut rng).expect("change")
        };
        let change = Change::decode(&change.encode()).expect("wire");
        expected = expected - amount + refund;
        assert_eq!(wallet.accept_change(&change), Ok(expected), "spend {i}");
    }
    assert_eq!(wallet.balance(), Some(expected));
}

#[test]
fn spends_are_bound_to_epoch_seed_and_deployment() {
    let (_, mut wallet, mut rng) = setup(1_000);
    let spend = wallet.spend(10, &mut rng).expect("spend");
    let domain = Domain::new("laws").expect("domain");
    let next = Issuer::derive(&domain, &IssuerSeed::from_bytes([1; 32]), EPOCH + 1);
    assert_eq!(next.verify(&spend).map(|_| ()), Err(ZkError::WrongEpoch { got: EPOCH, current: EPOCH + 1 }));
    let other_seed = Issuer::derive(&domain, &IssuerSeed::from_bytes([2; 32]), EPOCH);
    assert_eq!(other_seed.verify(&spend).map(|_| ()), Err(ZkError::InvalidProof));
    let other_domain = Issuer::derive(&Domain::new("other").expect("d"), &IssuerSeed::from_bytes([1; 32]), EPOCH);
    assert_eq!(other_domain.verify(&spend).map(|_| ()), Err(ZkError::InvalidProof));
}

#[test]
fn keys_are_derived_deterministically_per_epoch() {
    let domain = Domain::new("laws").expect("domain");
    let seed = IssuerSeed::from_bytes([1; 32]);
    let a = Issuer::derive(&domain, &seed, EPOCH).public_key().encode();
    assert_eq!(a, Issuer::derive(&domain, &seed, EPOCH).public_key().encode());
    assert_ne!(a, Issuer::derive(&domain, &seed, EPOCH + 1).public_key().encode());
    assert_eq!(format!("{seed:?}"), "IssuerSeed(<redacted>)");
}

#[test]
fn issuance_amounts_at_the_edges() {
    let mut rng = ChaCha20Rng::from_seed([3; 32]);
    let domain = Domain::new("laws").expect("domain");
    let issuer = Issuer::derive(&domain, &IssuerSeed::from_bytes([1; 32]), EPOCH);
    let mut w = Wallet::new(domain, issuer.public_key());
    let req = w.request_credential(&mut rng).expect("req");
    // Asking again before the answer returns the same request.
    assert_eq!(w.request_credential(&mut rng).expect("again").encode(), req.encode());
    assert_eq!(issuer.issue(&req, 0, &mut rng).map(|_| ()), Err(ZkError::InvalidAmount));
    assert_eq!(issuer.issue(&req, CREDITS_MAX + 1, &mut rng).map(|_| ()), Err(ZkError::InvalidAmount));
    let resp = issuer.issue(&req, CREDITS_MAX, &mut rng).expect("max");
    assert_eq!(w.accept_credential(&resp), Ok(CREDITS_MAX));
    let spend = w.spend(CREDITS_MAX, &mut rng).expect("spend all");
    assert_eq!(issuer.change(&spend, CREDITS_MAX + 1, &mut rng).map(|_| ()), Err(ZkError::InvalidAmount));
    let change = issuer.change(&spend, CREDITS_MAX, &mut rng).expect("refund all");
    assert_eq!(w.accept_change(&change), Ok(CREDITS_MAX));
}

#[test]
fn wallet_states_persist_and_a_refused_spend_can_be_taken_back() {
    let (issuer, mut wallet, mut rng) = setup(500);
    let domain = || Domain::new("laws").expect("domain");
    let again = Wallet::from_bytes(domain(), &wallet.to_bytes()).expect("ready");
    assert_eq!(again.balance(), Some(500));
    let spend = wallet.spend(200, &mut rng).expect("spend");
    // A crash here: the wallet file holds the pending spend and can finish it.
    let mut restored = Wallet::from_bytes(domain(), &wallet.to_bytes()).expect("spending");
    assert_eq!(restored.pending_spend().map(Spend::nullifier), Some(spend.nullifier()));
    assert_eq!(restored.spend(1, &mut rng).map(|_| ()), Err(ZkError::WalletState("no credential ready to spend")));
    let change = issuer.change(&spend, 50, &mut rng).expect("change");
    assert_eq!(restored.accept_change(&change), Ok(350));
    // A spend refused before its nullifier was recorded is taken back.
    assert_eq!(wallet.cancel_spend(), Ok(500));
    assert!(Wallet::from_bytes(domain(), &[]).is_err());
    let mut long = wallet.to_bytes();
    long.push(0);
    assert_eq!(Wallet::from_bytes(domain(), &long).map(|_| ()), Err(ZkError::Malformed("trailing bytes after wallet")));
}

#[test]
fn a_wallet_of_other_params_is_refused_as_such() {
    let (_, wallet, _) = setup(500);
    let domain = || Domain::new("laws").expect("domain");
    let bytes = wallet.to_bytes();
    // Layout 2: version byte, then the params version as a u16-length blob.
    let params = gatekeeper_zk::PARAMS_VERSION.as_bytes();
    assert_eq!(bytes[0], 2);
    assert_eq!(&bytes[3..3 + params.len()], params);
    // A layout-1 wallet (an L = 32 build's) names no params: it is `2026-11-30`'s.
    let mut v1 = vec![1u8];
    v1.extend_from_slice(&bytes[3 + params.len()..]);
    assert_eq!(Wallet::from_bytes(domain(), &v1).map(|_| ()), Err(ZkError::OtherParams { found: "2026-11-30".into() }));
    // A layout-2 wallet of another params version.
    let mut other = vec![2u8, 0, 10];
    other.extend_from_slice(b"2099-01-01");
    other.extend_from_slice(&bytes[3 + params.len()..]);
    assert_eq!(
        Wallet::from_bytes(domain(), &other).map(|_| ()),
        Err(ZkError::OtherParams { found: "2099-01-01".into() })
    );
    assert_eq!(Wallet::from_bytes(domain(), &[3]).map(|_| ()), Err(ZkError::UnsupportedVersion(3)));
    assert!(Wallet::from_bytes(domain(), &bytes).is_ok());
}

/// The 32-byte fields of a spend other than its public context and charge.
fn secret_looking_fields(spend: &Spend) -> Vec<[u8; 32]> {
    let bytes = raw(spend);
    let mut out = Vec::new();
    let mut i = 0;
    while i + 2 + 32 <= bytes.len() {
        if bytes[i] == 0x58 && bytes[i + 1] == 0x20 {
            let mut f = [0u8; 32];
            f.copy_from_slice(&bytes[i + 2..i + 34]);
            out.push(f);
            i += 34;
        } else {
            i += 1;
        }
    }
    // Field 2 (charge) and field 18 (ctx) are public by design.
    out.retain(|f| f[4..].iter().any(|&b| b != 0));
    out
}

#[test]
fn two_spends_of_one_wallet_share_no_field() {
    let (issuer, mut wallet, mut rng) = setup(1_000);
    let first = wallet.spend(10, &mut rng).expect("spend");
    let change = issuer.change(&first, 0, &mut rng).expect("change");
    wallet.accept_change(&change).expect("change");
    let second = wallet.spend(10, &mut rng).expect("spend");
    let a = secret_looking_fields(&first);
    let b = secret_looking_fields(&second);
    assert!(a.len() > 100);
    assert!(a.iter().all(|f| !b.contains(f)), "a field repeats across two spends of one wallet");
}

proptest! {
    #[test]
    fn spend_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..6000)) {
        let _ = Spend::decode(&b64(&bytes));
        let mut framed = vec![wire::WIRE_VERSION, 0, 0, 0, 1];
        framed.extend_from_slice(&bytes);
        let _ = Spend::decode(&b64(&framed));
        let _ = Change::decode(&b64(&framed));
        let _ = Wallet::from_bytes(Domain::new("p").expect("d"), &bytes);
    }

    #[test]
    fn oversized_spends_are_refused_before_decoding(extra in 1usize..64) {
        let text = "A".repeat(wire::SPEND_HEADER_CHARS_MAX + extra);
        let refused = matches!(Spend::decode(&text), Err(ZkError::TooLarge { .. }));
        prop_assert!(refused);
    }
}
