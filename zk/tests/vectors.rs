//! The draft's Appendix A test vectors (ACT-Ristretto255-BLAKE3), checked byte for byte:
//! a full protocol run with the draft's deterministic ChaCha20 RNG must reproduce every
//! CBOR message, and Gatekeeper's frames must carry the L-independent messages unchanged.

use anonymous_credit_tokens::{self as act, Params, PreIssuance, PrivateKey};
use curve25519_dalek::Scalar;
use gatekeeper_zk::{wire, Change, IssuanceRequest, IssuanceResponse, PublicKey};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::collections::HashMap;

fn vectors() -> HashMap<String, Vec<u8>> {
    let text = include_str!("data/act-ristretto255-vectors.txt");
    let mut out: HashMap<String, String> = HashMap::new();
    let mut label = String::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        if let Some(name) = line.strip_suffix(':') {
            label = name.to_owned();
        } else {
            out.entry(label.clone()).or_default().push_str(line.trim());
        }
    }
    out.into_iter().map(|(k, v)| (k, hex(&v))).collect()
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

#[test]
fn full_run_reproduces_the_drafts_vectors_byte_for_byte() {
    let v = vectors();
    let mut seed = [0u8; 32];
    for (i, b) in seed.iter_mut().enumerate() {
        *b = u8::try_from(i).expect("small");
    }
    let mut rng = ChaCha20Rng::from_seed(seed);
    let params = Params::new("test", "vectors", "v0", "2025-01-01");
    let ctx = Scalar::ZERO;

    let sk = PrivateKey::random(&mut rng);
    assert_eq!(sk.to_cbor().expect("cbor"), v["sk_cbor"]);
    assert_eq!(sk.public().to_cbor().expect("cbor"), v["pk_cbor"]);

    let pre = PreIssuance::random(&mut rng);
    assert_eq!(pre.to_cbor().expect("cbor"), v["preissuance_cbor"]);
    let request = pre.request(&params, &mut rng);
    assert_eq!(request.to_cbor().expect("cbor"), v["issuance_request_cbor"]);
    let response = sk.issue::<8>(&params, &request, Scalar::from(100u64), ctx, &mut rng).expect("issue");
    assert_eq!(response.to_cbor().expect("cbor"), v["issuance_response_cbor"]);
    let token = pre.to_credit_token::<8>(&params, sk.public(), &request, &response).expect("token");
    assert_eq!(token.to_cbor().expect("cbor"), v["credit_token_cbor"]);

    let (spend, prerefund) = token.prove_spend::<8>(&params, Scalar::from(30u64), &mut rng).expect("spend");
    assert_eq!(spend.nullifier().to_bytes().to_vec(), v["nullifier"]);
    assert_eq!(spend.context().to_bytes().to_vec(), v["context"]);
    assert_eq!(spend.charge().to_bytes().to_vec(), v["charge"]);
    assert_eq!(spend.to_cbor().expect("cbor"), v["spend_proof_cbor"]);
    assert_eq!(prerefund.to_cbor().expect("cbor"), v["prerefund_cbor"]);

    let refund = sk.refund::<8>(&params, &spend, Scalar::from(10u64), &mut rng).expect("refund");
    assert_eq!(refund.to_cbor().expect("cbor"), v["refund_cbor"]);
    let new_token = prerefund.to_credit_token::<8>(&params, &spend, &refund, sk.public()).expect("token");
    assert_eq!(new_token.to_cbor().expect("cbor"), v["refund_token_cbor"]);
    assert_eq!(new_token.credits().to_bytes().to_vec(), v["refund_token_credits"]);
    assert_eq!(new_token.nullifier().to_bytes().to_vec(), v["refund_token_nullifier"]);
    assert_eq!(act::scalar_to_credit::<8>(&new_token.credits()), Ok(80));
}

#[test]
fn the_vectors_spend_decodes_and_verifies_against_the_vectors_key() {
    let v = vectors();
    let params = Params::new("test", "vectors", "v0", "2025-01-01");
    let sk = PrivateKey::from_cbor(&v["sk_cbor"]).expect("sk");
    let spend = act::SpendProof::<8>::from_cbor(&v["spend_proof_cbor"]).expect("spend");
    let mut rng = ChaCha20Rng::from_seed([9; 32]);
    assert!(sk.refund::<8>(&params, &spend, Scalar::ZERO, &mut rng).is_ok());
    // The same bytes with the charge raised by one no longer verify.
    let mut forged = v["spend_proof_cbor"].clone();
    let charge_at = 1 + 1 + 2 + 32 + 1 + 2; // map head, key 1, bstr head, k, key 2, bstr head
    assert_eq!(forged[charge_at], 0x1e);
    forged[charge_at] = 0x1f;
    let forged = act::SpendProof::<8>::from_cbor(&forged).expect("still decodes");
    assert!(sk.refund::<8>(&params, &forged, Scalar::ZERO, &mut rng).is_err());
}

#[test]
fn gatekeeper_frames_carry_the_vectors_messages_unchanged() {
    let v = vectors();
    let epoch = 20_422;
    let req = IssuanceRequest::decode(&wire::encode(epoch, &v["issuance_request_cbor"])).expect("request");
    assert_eq!(req.epoch(), epoch);
    assert_eq!(req.encode(), wire::encode(epoch, &v["issuance_request_cbor"]));
    let resp = IssuanceResponse::decode(&wire::encode(epoch, &v["issuance_response_cbor"])).expect("response");
    assert_eq!(resp.encode(), wire::encode(epoch, &v["issuance_response_cbor"]));
    let change = Change::decode(&wire::encode(epoch, &v["refund_cbor"])).expect("change");
    assert_eq!(change.refund(), Ok(10));
    assert_eq!(change.encode(), wire::encode(epoch, &v["refund_cbor"]));
    let pk = PublicKey::decode(&wire::encode(epoch, &v["pk_cbor"])).expect("pk");
    assert_eq!(pk.encode(), wire::encode(epoch, &v["pk_cbor"]));
}
