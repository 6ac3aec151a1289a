//! The gateway's own verifier of the draft's spend proof (draft §3.5.2, `VerifySpendProof`)
//! and its own signer of the change (the refund steps of `VerifyAndRefund`), so that a
//! spend is verified exactly once and its change signed later without re-verifying.
//!
//! It accepts exactly the spends the crate's `PrivateKey::refund` accepts (same equations,
//! same transcript, same checks; `SPEC.md` §9 has the argument and `tests/fast.rs` the
//! equivalence tests) and differs only in how the group elements are computed:
//!
//! - the deployment's fixed points (G, H1..H4) sit in precomputed tables, built once per
//!   [`Generators`], as their halves (`P/2`, see the next item), so that their scalars
//!   need no halving;
//! - every point that only enters the transcript is computed as `P/2` (its public scalars
//!   multiplied by 1/2), and one `double_and_compress_batch` call yields the canonical
//!   encodings of all `P` with one field inversion instead of one per point;
//! - the points the client sent (A', B̄, Com) enter the transcript as the bytes received:
//!   Ristretto decoding accepts only canonical encodings, so those bytes are what
//!   compressing the decoded point gives;
//! - the arithmetic is curve25519-dalek 5's, whose AVX-512 IFMA backend builds on stable
//!   Rust (about half the AVX2 time; [`backend`] says which one runs), while the crate
//!   uses dalek 4: the two exchange only canonical encodings, which both decode alike.
//!
//! The generic `L` (balance width) lets the draft's vectors (L = 8) and other widths be
//! checked and measured; Gatekeeper itself uses [`crate::BALANCE_BITS`].

use anonymous_credit_tokens as act;
use ciborium::value::Value;
// The arithmetic is curve25519-dalek 5's (its IFMA backend builds on stable Rust); the
// crate and the public API (`Scalar4` below) use version 4. Values cross as canonical
// bytes, which both versions decode with the same checks (SPEC.md §9).
use curve25519_dalek::Scalar as Scalar4;
use dalek5::constants::{RISTRETTO_BASEPOINT_POINT, RISTRETTO_BASEPOINT_TABLE};
use dalek5::ristretto::{CompressedRistretto, RistrettoPoint, VartimeRistrettoPrecomputation};
use dalek5::traits::{Identity, MultiscalarMul, VartimePrecomputedMultiscalarMul};
use dalek5::Scalar;
use rand_core::CryptoRngCore;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::ZkError;

/// The arithmetic backend curve25519-dalek 5 uses for this verifier on this machine:
/// `"avx512ifma"`, `"avx2"`, `"serial"` or `"fiat"`. Dalek does not expose its choice, so
/// this applies its rule (5.0.0, `backend.rs` and `build.rs`): the IFMA backend is compiled
/// in only with the cfg `curve25519_dalek_backend="avx512"` (the repository's
/// `.cargo/config.toml`) or a target CPU with avx512ifma and avx512vl, and is then used
/// where CPUID reports both; else AVX2 where the CPU has it; else the portable code.
pub fn backend() -> &'static str {
    if cfg!(curve25519_dalek_backend = "fiat") {
        return "fiat";
    }
    #[cfg(all(target_arch = "x86_64", target_pointer_width = "64", not(curve25519_dalek_backend = "serial")))]
    {
        let ifma_built = cfg!(curve25519_dalek_backend = "avx512")
            || cfg!(all(target_feature = "avx512ifma", target_feature = "avx512vl"));
        if ifma_built && is_x86_feature_detected!("avx512ifma") && is_x86_feature_detected!("avx512vl") {
            return "avx512ifma";
        }
        if is_x86_feature_detected!("avx2") {
            return "avx2";
        }
    }
    "serial"
}

/// The draft's transcript prefix (`CreateTranscript`, draft §3.6).
const PROTOCOL_VERSION: &[u8] = b"curve25519-ristretto anonymous-credits v1.0";

/// Largest CBOR body the crate's decoder reads; mirrored so both decoders refuse the same.
const CBOR_BYTES_MAX: usize = 65_536;

/// A deployment's public generators with the tables and transcript prefix verification
/// needs. Built once per deployment (about a millisecond) and shared.
pub struct Generators {
    h1: RistrettoPoint,
    /// G/2, H1/2, H2/2, H3/2, H4/2.
    all: VartimeRistrettoPrecomputation,
    /// H1/2, H2/2, H3/2.
    h123: VartimeRistrettoPrecomputation,
    /// H2/2, H3/2 (bit 0 of the range proof).
    h23: VartimeRistrettoPrecomputation,
    /// H3/2 (bits 1.. of the range proof).
    h3_only: VartimeRistrettoPrecomputation,
    /// BLAKE3 state after the protocol version and H1..H4 (draft §3.6 steps 1–6).
    transcript_base: blake3::Hasher,
}

impl std::fmt::Debug for Generators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generators").field("h1", &self.h1.compress()).finish_non_exhaustive()
    }
}

impl Generators {
    /// The generators of domain separator `ACT-v1:<organization>:<service>:<deployment>:<version>`,
    /// derived as the draft (and `act::Params::new`) does. `None` when a component contains
    /// ':' (the crate refuses those too).
    pub fn new(organization: &str, service: &str, deployment: &str, version: &str) -> Option<Self> {
        if [organization, service, deployment, version].iter().any(|c| c.contains(':')) {
            return None;
        }
        let ds = format!("ACT-v1:{organization}:{service}:{deployment}:{version}");
        let mut hasher = blake3::Hasher::new();
        hasher.update(&(ds.len() as u64).to_be_bytes());
        hasher.update(ds.as_bytes());
        let seed = hasher.finalize();
        let h = |counter: u32| {
            let mut hasher = blake3::Hasher::new();
            hasher.update(&(ds.len() as u64).to_be_bytes());
            hasher.update(ds.as_bytes());
            hasher.update(&(seed.as_bytes().len() as u64).to_be_bytes());
            hasher.update(seed.as_bytes());
            hasher.update(&4u64.to_be_bytes());
            hasher.update(&counter.to_le_bytes());
            let mut uniform = [0u8; 64];
            hasher.finalize_xof().fill(&mut uniform);
            RistrettoPoint::from_uniform_bytes(&uniform)
        };
        let (h1, h2, h3, h4) = (h(0), h(1), h(2), h(3));
        let mut transcript_base = blake3::Hasher::new();
        transcript_base.update(&(PROTOCOL_VERSION.len() as u64).to_be_bytes());
        transcript_base.update(PROTOCOL_VERSION);
        for p in [h1, h2, h3, h4] {
            put(&mut transcript_base, p.compress().as_bytes());
        }
        let h = half();
        let [g, h1h, h2, h3, h4] = [RISTRETTO_BASEPOINT_POINT, h1, h2, h3, h4].map(|p| p * h);
        Some(Self {
            h1,
            all: VartimeRistrettoPrecomputation::new([g, h1h, h2, h3, h4]),
            h123: VartimeRistrettoPrecomputation::new([h1h, h2, h3]),
            h23: VartimeRistrettoPrecomputation::new([h2, h3]),
            h3_only: VartimeRistrettoPrecomputation::new([h3]),
            transcript_base,
        })
    }

    fn transcript(&self, label: &[u8]) -> blake3::Hasher {
        let mut t = self.transcript_base.clone();
        put(&mut t, label);
        t
    }
}

/// The draft's `Encode` of one transcript item: its length (u64, big-endian), then it.
fn put(t: &mut blake3::Hasher, bytes: &[u8]) {
    t.update(&(bytes.len() as u64).to_be_bytes());
    t.update(bytes);
}

fn challenge(t: blake3::Hasher) -> Scalar {
    let mut wide = [0u8; 64];
    t.finalize_xof().fill(&mut wide);
    Scalar::from_bytes_mod_order_wide(&wide)
}

/// The issuer's secret scalar `x` and public point `W = G·x`, taken from the crate's key
/// through its documented CBOR encoding (`{1: x, 2: W}`). Wiped on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct IssuerSecret {
    x: Scalar,
    #[zeroize(skip)]
    w: RistrettoPoint,
    /// W/2, for computing the change's transcript points as halves.
    #[zeroize(skip)]
    w_half: RistrettoPoint,
    #[zeroize(skip)]
    w_bytes: [u8; 32],
}

impl std::fmt::Debug for IssuerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IssuerSecret(<redacted>)")
    }
}

impl IssuerSecret {
    /// The secret of `key`. Fails only if the crate's encoding is not what its
    /// documentation says, or `W ≠ G·x` (checked here again).
    pub fn from_private_key(key: &act::PrivateKey) -> Result<Self, ZkError> {
        let bad = || ZkError::Malformed("issuer key");
        let mut cbor = key.to_cbor().map_err(|_| bad())?;
        let parsed: Result<Value, _> = ciborium::from_reader(cbor.as_slice());
        cbor.zeroize();
        let Ok(Value::Map(mut map)) = parsed else { return Err(bad()) };
        let mut x = None;
        let mut w = None;
        for (k, v) in map.iter_mut() {
            match (k.as_integer().map(i128::from), v) {
                (Some(1), Value::Bytes(b)) if x.is_none() => {
                    x = <[u8; 32]>::try_from(b.as_slice()).ok().and_then(|a| Scalar::from_canonical_bytes(a).into());
                    b.zeroize();
                }
                (Some(2), Value::Bytes(b)) if w.is_none() => {
                    w = CompressedRistretto::from_slice(b).ok().and_then(|c| c.decompress());
                }
                _ => return Err(bad()),
            }
        }
        let (Some(x), Some(w)) = (x, w) else { return Err(bad()) };
        if RISTRETTO_BASEPOINT_TABLE * &x != w {
            return Err(bad());
        }
        Ok(Self::from_scalar5(x))
    }

    pub(crate) fn from_scalar(x: &Scalar4) -> Self {
        let mut bytes = x.to_bytes();
        let x = Scalar::from_bytes_mod_order(bytes);
        bytes.zeroize();
        Self::from_scalar5(x)
    }

    fn from_scalar5(x: Scalar) -> Self {
        let w = RISTRETTO_BASEPOINT_TABLE * &x;
        Self { x, w, w_half: w * half(), w_bytes: w.compress().to_bytes() }
    }

    /// The compressed public point `W`.
    pub fn public_bytes(&self) -> [u8; 32] {
        self.w_bytes
    }
}

/// A canonical version-4 scalar as version 5's (the same bytes; public values only).
fn to5(s: &Scalar4) -> Scalar {
    Scalar::from_bytes_mod_order(s.to_bytes())
}

/// A version-5 scalar as version 4's (the same bytes; public values only).
fn to4(s: &Scalar) -> Scalar4 {
    Scalar4::from_bytes_mod_order(s.to_bytes())
}

/// A uniformly random scalar, drawn as version 4's `Scalar::random` draws it (64 bytes
/// from `rng`, reduced), so a seeded RNG gives the crate's signatures byte for byte.
fn random_scalar(rng: &mut impl CryptoRngCore) -> Scalar {
    let mut wide = [0u8; 64];
    rng.fill_bytes(&mut wide);
    let s = Scalar::from_bytes_mod_order_wide(&wide);
    wide.zeroize();
    s
}

/// 1/2 mod ℓ.
fn half() -> Scalar {
    // (ℓ + 1)/2, little-endian; the test `half_is_the_inverse_of_two` checks it.
    const BYTES: [u8; 32] = [
        0xf7, 0xe9, 0x7a, 0x2e, 0x8d, 0x31, 0x09, 0x2c, 0x6b, 0xce, 0x7b, 0x51, 0xef, 0x7c, 0x6f, 0x0a, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08,
    ];
    Scalar::from_bytes_mod_order(BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backend_is_one_the_cpu_has() {
        let b = backend();
        assert!(["avx512ifma", "avx2", "serial", "fiat"].contains(&b), "{b}");
        #[cfg(target_arch = "x86_64")]
        {
            if b == "avx512ifma" {
                assert!(is_x86_feature_detected!("avx512ifma") && is_x86_feature_detected!("avx512vl"));
            }
            if b == "avx2" {
                assert!(is_x86_feature_detected!("avx2"));
            }
        }
        if cfg!(curve25519_dalek_backend = "serial") {
            assert_eq!(b, "serial");
        }
    }

    #[test]
    fn half_is_the_inverse_of_two() {
        assert_eq!(half() * Scalar::from(2u64), Scalar::ONE);
        assert_eq!(half(), Scalar::from(2u64).invert());
    }

    #[test]
    fn fits_bits_at_the_edges() {
        assert!(fits_bits::<32>(&Scalar4::from(u64::from(u32::MAX))));
        assert!(!fits_bits::<32>(&Scalar4::from(1u64 << 32)));
        assert!(fits_bits::<8>(&Scalar4::from(255u64)));
        assert!(!fits_bits::<8>(&Scalar4::from(256u64)));
        assert!(fits_bits::<12>(&Scalar4::from(4_095u64)));
        assert!(!fits_bits::<12>(&Scalar4::from(4_096u64)));
        assert!(!fits_bits::<128>(&(Scalar4::ZERO - Scalar4::ONE)));
    }

    #[test]
    fn scalars_cross_versions_unchanged() {
        let s4 = Scalar4::ZERO - Scalar4::from(12_345u64);
        assert_eq!(to5(&s4).to_bytes(), s4.to_bytes());
        assert_eq!(to4(&to5(&s4)), s4);
    }
}

/// A decoded spend proof (draft §4 `SpendProofMsg`), with the encodings of the points the
/// client sent kept for the transcript. Decoding refuses exactly what the crate's
/// `SpendProof::from_cbor` refuses.
#[derive(Clone)]
pub struct SpendFields<const L: usize> {
    k: Scalar,
    s: Scalar,
    ctx: Scalar,
    a_prime: RistrettoPoint,
    a_prime_bytes: [u8; 32],
    b_bar: RistrettoPoint,
    b_bar_bytes: [u8; 32],
    com: Box<[RistrettoPoint; L]>,
    com_bytes: Box<[[u8; 32]; L]>,
    gamma: Scalar,
    e_bar: Scalar,
    r2_bar: Scalar,
    r3_bar: Scalar,
    c_bar: Scalar,
    r_bar: Scalar,
    w00: Scalar,
    w01: Scalar,
    gamma0: Box<[Scalar; L]>,
    z: Box<[[Scalar; 2]; L]>,
    k_bar: Scalar,
    s_bar: Scalar,
}

impl<const L: usize> std::fmt::Debug for SpendFields<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpendFields").field("k", &self.k).field("s", &self.s).finish_non_exhaustive()
    }
}

fn cbor_scalar(v: &Value) -> Result<Scalar, ZkError> {
    match v {
        Value::Bytes(b) if b.len() == 32 => <[u8; 32]>::try_from(b.as_slice())
            .ok()
            .and_then(|a| Scalar::from_canonical_bytes(a).into())
            .ok_or(ZkError::Malformed("cbor")),
        _ => Err(ZkError::Malformed("cbor")),
    }
}

fn cbor_point(v: &Value) -> Result<(RistrettoPoint, [u8; 32]), ZkError> {
    match v {
        Value::Bytes(b) if b.len() == 32 => {
            let bytes = <[u8; 32]>::try_from(b.as_slice()).map_err(|_| ZkError::Malformed("cbor"))?;
            let p = CompressedRistretto(bytes).decompress().ok_or(ZkError::Malformed("cbor"))?;
            Ok((p, bytes))
        }
        _ => Err(ZkError::Malformed("cbor")),
    }
}

fn cbor_array<const L: usize, T: Copy>(
    v: &Value,
    zero: T,
    each: impl Fn(&Value) -> Result<T, ZkError>,
) -> Result<Box<[T; L]>, ZkError> {
    let Value::Array(items) = v else { return Err(ZkError::Malformed("cbor")) };
    // Every element is decoded before the length is judged, as the crate does; the order
    // only changes which error a bad message gets, never whether it is refused.
    let decoded = items.iter().map(each).collect::<Result<Vec<T>, ZkError>>()?;
    if decoded.len() != L {
        return Err(ZkError::Malformed("cbor"));
    }
    let mut out = Box::new([zero; L]);
    out.copy_from_slice(&decoded);
    Ok(out)
}

fn set<T>(slot: &mut Option<T>, value: T) -> Result<(), ZkError> {
    if slot.is_some() {
        return Err(ZkError::Malformed("cbor"));
    }
    *slot = Some(value);
    Ok(())
}

impl<const L: usize> SpendFields<L> {
    /// Decodes the draft's CBOR `SpendProofMsg`.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, ZkError> {
        const { assert!(L > 0 && L <= 128, "L must be in 1..=128") };
        if bytes.len() > CBOR_BYTES_MAX {
            return Err(ZkError::Malformed("cbor"));
        }
        let value: Value = ciborium::from_reader(bytes).map_err(|_| ZkError::Malformed("cbor"))?;
        let Value::Map(map) = value else { return Err(ZkError::Malformed("cbor")) };
        let (mut k, mut s, mut ctx, mut a_prime, mut b_bar, mut com) = (None, None, None, None, None, None);
        let (mut gamma, mut e_bar, mut r2_bar, mut r3_bar, mut c_bar) = (None, None, None, None, None);
        let (mut r_bar, mut w00, mut w01, mut gamma0, mut z, mut k_bar, mut s_bar) =
            (None, None, None, None, None, None, None);
        for (key, val) in &map {
            let key = match key {
                Value::Integer(i) => i128::from(*i),
                _ => return Err(ZkError::Malformed("cbor")),
            };
            match key {
                1 => set(&mut k, cbor_scalar(val)?)?,
                2 => set(&mut s, cbor_scalar(val)?)?,
                3 => set(&mut a_prime, cbor_point(val)?)?,
                4 => set(&mut b_bar, cbor_point(val)?)?,
                5 => {
                    if com.is_some() {
                        return Err(ZkError::Malformed("cbor"));
                    }
                    com = Some(cbor_array::<L, _>(val, (RistrettoPoint::identity(), [0u8; 32]), cbor_point)?);
                }
                6 => set(&mut gamma, cbor_scalar(val)?)?,
                7 => set(&mut e_bar, cbor_scalar(val)?)?,
                8 => set(&mut r2_bar, cbor_scalar(val)?)?,
                9 => set(&mut r3_bar, cbor_scalar(val)?)?,
                10 => set(&mut c_bar, cbor_scalar(val)?)?,
                11 => set(&mut r_bar, cbor_scalar(val)?)?,
                12 => set(&mut w00, cbor_scalar(val)?)?,
                13 => set(&mut w01, cbor_scalar(val)?)?,
                14 => {
                    if gamma0.is_some() {
                        return Err(ZkError::Malformed("cbor"));
                    }
                    gamma0 = Some(cbor_array::<L, _>(val, Scalar::ZERO, cbor_scalar)?);
                }
                15 => {
                    if z.is_some() {
                        return Err(ZkError::Malformed("cbor"));
                    }
                    z = Some(cbor_array::<L, _>(val, [Scalar::ZERO; 2], |pair| match pair {
                        Value::Array(p) if p.len() == 2 => Ok([cbor_scalar(&p[0])?, cbor_scalar(&p[1])?]),
                        _ => Err(ZkError::Malformed("cbor")),
                    })?);
                }
                16 => set(&mut k_bar, cbor_scalar(val)?)?,
                17 => set(&mut s_bar, cbor_scalar(val)?)?,
                18 => set(&mut ctx, cbor_scalar(val)?)?,
                _ => return Err(ZkError::Malformed("cbor")),
            }
        }
        let missing = || ZkError::Malformed("cbor");
        let com = com.ok_or_else(missing)?;
        let (a_prime, a_prime_bytes) = a_prime.ok_or_else(missing)?;
        let (b_bar, b_bar_bytes) = b_bar.ok_or_else(missing)?;
        let mut points = Box::new([RistrettoPoint::identity(); L]);
        let mut encodings = Box::new([[0u8; 32]; L]);
        for (j, (p, b)) in com.iter().enumerate() {
            points[j] = *p;
            encodings[j] = *b;
        }
        Ok(Self {
            k: k.ok_or_else(missing)?,
            s: s.ok_or_else(missing)?,
            ctx: ctx.ok_or_else(missing)?,
            a_prime,
            a_prime_bytes,
            b_bar,
            b_bar_bytes,
            com: points,
            com_bytes: encodings,
            gamma: gamma.ok_or_else(missing)?,
            e_bar: e_bar.ok_or_else(missing)?,
            r2_bar: r2_bar.ok_or_else(missing)?,
            r3_bar: r3_bar.ok_or_else(missing)?,
            c_bar: c_bar.ok_or_else(missing)?,
            r_bar: r_bar.ok_or_else(missing)?,
            w00: w00.ok_or_else(missing)?,
            w01: w01.ok_or_else(missing)?,
            gamma0: gamma0.ok_or_else(missing)?,
            z: z.ok_or_else(missing)?,
            k_bar: k_bar.ok_or_else(missing)?,
            s_bar: s_bar.ok_or_else(missing)?,
        })
    }

    /// The nullifier `k`.
    pub fn nullifier(&self) -> Scalar4 {
        to4(&self.k)
    }

    /// The charge `s`.
    pub fn charge(&self) -> Scalar4 {
        to4(&self.s)
    }

    /// The request context `ctx`.
    pub fn context(&self) -> Scalar4 {
        to4(&self.ctx)
    }
}

/// What a verified spend leaves for signing its change: no proof needs checking again.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The nullifier `k`.
    pub nullifier: Scalar4,
    /// The charge `s` (fits `L` bits).
    pub charge: Scalar4,
    /// The request context `ctx`.
    pub context: Scalar4,
    /// `K' = Σ 2^j·Com[j]`, the change credential's commitment.
    k_prime: RistrettoPoint,
    /// Compressed `W` of the key that verified it; the change must be signed by that key.
    issuer_w: [u8; 32],
}

/// Whether `s < 2^L` (the crate's `scalar_fits_in_bits`; public data, no need for
/// constant time).
pub fn fits_bits<const L: usize>(s: &Scalar4) -> bool {
    fits_bits_le::<L>(s.as_bytes())
}

fn fits_bits_le<const L: usize>(bytes: &[u8; 32]) -> bool {
    bytes.iter().enumerate().all(|(i, &b)| {
        let low = i * 8;
        if low >= L {
            b == 0
        } else if low + 8 <= L {
            true
        } else {
            b >> (L - low) == 0
        }
    })
}

/// `VerifySpendProof` (draft §3.5.2) for proof `f` under `secret`: the same checks as the
/// crate's `refund` up to (not including) signing. Errors: `InvalidAmount` when the charge
/// does not fit `L` bits, `InvalidProof` otherwise.
pub fn verify<const L: usize>(
    gens: &Generators,
    secret: &IssuerSecret,
    f: &SpendFields<L>,
) -> Result<Checked, ZkError> {
    let mut out = verify_batch(gens, secret, &[f]);
    out.pop().unwrap_or(Err(ZkError::InvalidProof))
}

/// [`verify`] for several proofs at once, one verdict per proof in order. The proofs are
/// in challenge form, so each one's commitments are rebuilt on its own; what is shared is
/// one batched compression (one field inversion) over every proof's points.
pub fn verify_batch<const L: usize>(
    gens: &Generators,
    secret: &IssuerSecret,
    proofs: &[&SpendFields<L>],
) -> Vec<Result<Checked, ZkError>> {
    let per = 2 * L + 3;
    let mut halves: Vec<RistrettoPoint> = Vec::with_capacity(per * proofs.len());
    let mut pending = Vec::with_capacity(proofs.len());
    for f in proofs {
        match precheck(f) {
            Ok(()) => {
                let k_prime = commitments(gens, secret, f, &mut halves);
                pending.push(Ok(k_prime));
            }
            Err(e) => pending.push(Err(e)),
        }
    }
    let enc = RistrettoPoint::double_and_compress_batch(&halves);
    let mut chunks = enc.chunks_exact(per);
    proofs
        .iter()
        .zip(pending)
        .map(|(f, p)| {
            let k_prime = p?;
            let enc = chunks.next().ok_or(ZkError::InvalidProof)?;
            if challenge(spend_transcript(gens, f, enc)) != f.gamma {
                return Err(ZkError::InvalidProof);
            }
            Ok(Checked {
                nullifier: to4(&f.k),
                charge: to4(&f.s),
                context: to4(&f.ctx),
                k_prime,
                issuer_w: secret.w_bytes,
            })
        })
        .collect()
}

/// Checks that need no group arithmetic.
fn precheck<const L: usize>(f: &SpendFields<L>) -> Result<(), ZkError> {
    if !fits_bits_le::<L>(f.s.as_bytes()) {
        return Err(ZkError::InvalidAmount);
    }
    // Step 3: A' must not be the identity.
    if f.a_prime == RistrettoPoint::identity() {
        return Err(ZkError::InvalidProof);
    }
    Ok(())
}

/// Appends A1/2, A2/2, C'[j][b]/2 (j-major) and C/2 to `halves`; returns K'.
fn commitments<const L: usize>(
    gens: &Generators,
    secret: &IssuerSecret,
    f: &SpendFields<L>,
    halves: &mut Vec<RistrettoPoint>,
) -> RistrettoPoint {
    let h = half();
    let g = f.gamma;
    // Step 9: A1 = A'·e_bar + B̄·r2_bar − (A'·x)·γ. The A' scalar involves x: constant time.
    let mut ea = (f.e_bar - secret.x * g) * h;
    halves.push(RistrettoPoint::multiscalar_mul([ea, f.r2_bar * h], [f.a_prime, f.b_bar]));
    ea.zeroize();
    // Step 10: A2 = B̄·r3_bar + H1·c_bar + H3·r_bar − (G + H2·k + H4·ctx)·γ (the tables
    // hold the generators' halves, so only the dynamic point's scalar is halved).
    halves.push(gens.all.vartime_mixed_multiscalar_mul(
        [-g, f.c_bar, -(g * f.k), f.r_bar, -(g * f.ctx)],
        [f.r3_bar * h],
        [f.b_bar],
    ));
    // Steps 15–27: C'[j][0] = H3·z[j][0] − Com[j]·γ0[j] (+ H2·w00 at j = 0) and
    // C'[j][1] = H3·z[j][1] − (Com[j] − H1)·(γ − γ0[j]) (+ H2·w01 at j = 0).
    let gh = g * h;
    for j in 0..L {
        let com = f.com[j];
        let minus_h1 = com - gens.h1;
        // −γ0/2 and −(γ − γ0)/2.
        let g0h = f.gamma0[j] * h;
        let (neg_g0h, neg_g1h) = (-g0h, g0h - gh);
        let [z0, z1] = f.z[j];
        if j == 0 {
            halves.push(gens.h23.vartime_mixed_multiscalar_mul([f.w00, z0], [neg_g0h], [com]));
            halves.push(gens.h23.vartime_mixed_multiscalar_mul([f.w01, z1], [neg_g1h], [minus_h1]));
        } else {
            halves.push(gens.h3_only.vartime_mixed_multiscalar_mul([z0], [neg_g0h], [com]));
            halves.push(gens.h3_only.vartime_mixed_multiscalar_mul([z1], [neg_g1h], [minus_h1]));
        }
    }
    // Steps 28–30: K' = Σ 2^j·Com[j] (Horner), C = −H1·c_bar + H2·k_bar + H3·s_bar − (H1·s + K')·γ.
    let mut k_prime = f.com[L - 1];
    for p in f.com[..L - 1].iter().rev() {
        k_prime = k_prime + k_prime + p;
    }
    halves.push(gens.h123.vartime_mixed_multiscalar_mul([-(f.c_bar + g * f.s), f.k_bar, f.s_bar], [-gh], [k_prime]));
    k_prime
}

/// Step 31: the challenge's transcript, the same items in the same order as the crate;
/// `enc` holds A1, A2, the C' pairs and C.
fn spend_transcript<const L: usize>(
    gens: &Generators,
    f: &SpendFields<L>,
    enc: &[CompressedRistretto],
) -> blake3::Hasher {
    let mut t = gens.transcript(b"spend");
    put(&mut t, f.k.as_bytes());
    put(&mut t, f.ctx.as_bytes());
    put(&mut t, &f.a_prime_bytes);
    put(&mut t, &f.b_bar_bytes);
    for c in &enc[..2] {
        put(&mut t, c.as_bytes());
    }
    for b in f.com_bytes.iter() {
        put(&mut t, b);
    }
    for c in &enc[2..] {
        put(&mut t, c.as_bytes());
    }
    t
}

impl Checked {
    /// Signs the change credential on `c − s + t` (the refund steps of the draft's
    /// `VerifyAndRefund`, as the crate's `refund` does after verifying): returns the
    /// draft's CBOR `RefundMsg`. Draws `e` then `α` from `rng`, as the crate does.
    /// Errors: `InvalidAmount` unless `t < 2^L` and `t ≤ s`; `InvalidProof` when
    /// `secret` is not the key that verified the spend.
    pub fn sign_change<const L: usize>(
        &self,
        gens: &Generators,
        secret: &IssuerSecret,
        t: Scalar4,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<u8>, ZkError> {
        if self.issuer_w != secret.w_bytes {
            return Err(ZkError::InvalidProof);
        }
        if !fits_bits::<L>(&t) || !fits_bits::<L>(&self.charge) {
            return Err(ZkError::InvalidAmount);
        }
        // Both fit L ≤ 128 bits, so they compare as their low 16 bytes.
        let low = |s: &Scalar4| {
            let mut b = [0u8; 16];
            b.copy_from_slice(&s.as_bytes()[..16]);
            u128::from_le_bytes(b)
        };
        if low(&t) > low(&self.charge) {
            return Err(ZkError::InvalidAmount);
        }
        let h = half();
        let (t, context) = (to5(&t), to5(&self.context));
        let e = random_scalar(rng);
        let mut alpha = random_scalar(rng);
        // X_A = G + K' + H1·t + H4·ctx (public scalars), at half size.
        let x_a_half = gens.all.vartime_mixed_multiscalar_mul(
            [Scalar::ONE, t, Scalar::ZERO, Scalar::ZERO, context],
            [h],
            [self.k_prime],
        );
        // e + x = 0 has probability ~2^-252 (as in the crate); the inverse of 0 is 0 and
        // would only produce a change that does not verify.
        let mut inv = (e + secret.x).invert();
        // A = X_A/(e+x), Y_A = A·α, both through X_A/2 (constant time: secret scalars).
        let a_half = x_a_half * inv;
        let y_a_half = x_a_half * (inv * alpha);
        let x_g_half = RISTRETTO_BASEPOINT_TABLE * &(e * h) + secret.w_half;
        let y_g_half = RISTRETTO_BASEPOINT_TABLE * &(alpha * h);
        inv.zeroize();
        let enc = RistrettoPoint::double_and_compress_batch(&[a_half, x_a_half, x_g_half, y_a_half, y_g_half]);
        let mut tr = gens.transcript(b"refund");
        put(&mut tr, e.as_bytes());
        put(&mut tr, t.as_bytes());
        put(&mut tr, context.as_bytes());
        for c in &enc {
            put(&mut tr, c.as_bytes());
        }
        let gamma = challenge(tr);
        let mut z = gamma * (secret.x + e) + alpha;
        let map = vec![
            (Value::Integer(1.into()), Value::Bytes(enc[0].as_bytes().to_vec())),
            (Value::Integer(2.into()), Value::Bytes(e.as_bytes().to_vec())),
            (Value::Integer(3.into()), Value::Bytes(gamma.as_bytes().to_vec())),
            (Value::Integer(4.into()), Value::Bytes(z.as_bytes().to_vec())),
            (Value::Integer(5.into()), Value::Bytes(t.as_bytes().to_vec())),
        ];
        z.zeroize();
        alpha.zeroize();
        let mut out = Vec::with_capacity(180);
        ciborium::into_writer(&Value::Map(map), &mut out).map_err(|_| ZkError::Malformed("cbor"))?;
        Ok(out)
    }
}
