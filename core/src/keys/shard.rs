//! [`ShardVerifier`]: one per shard thread — a cache of verified tokens and a
//! micro-batching queue for signature checks.
//!
//! The hot path (a cached token) hashes the token with SHA-256, looks the digest up and
//! clones an `Rc`: no allocation, no lock, no atomic. A miss parses the token, queues its
//! signature check and yields once, so that other tasks on the same thread can queue
//! theirs; whichever task runs first afterwards checks up to [`BATCH_MAX`] signatures in
//! one `verify_batch`. Nothing waits on a timer, so an idle shard adds no latency.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest as _, Sha256};

use super::batch::{self, Work};
use super::claims::Claims;
use super::error::KeyError;
use super::paseto::TOKEN_BYTES_MAX;
use super::verifier::{verify_one, Prepared, RevocationList, Verifier};

/// Most signatures checked in one batch.
pub const BATCH_MAX: usize = 64;

/// Most signature checks queued on one shard; beyond it a miss is checked on the spot
/// rather than letting the queue grow.
pub const QUEUE_MAX: usize = 4096;

const _: () = assert!(BATCH_MAX <= QUEUE_MAX);

/// Counters for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Tokens answered from the cache.
    pub cache_hits: u64,
    /// Tokens that needed a full check (whatever its outcome).
    pub cache_misses: u64,
    /// Signature work done for misses.
    pub work: Work,
}

/// SHA-256 of a token: collision-resistant, so a forged token can never hit the cache
/// entry of a genuine one.
#[derive(Clone, Copy, PartialEq, Eq)]
struct TokenDigest([u8; 32]);

impl Hash for TokenDigest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The digest is already uniform; its first 8 bytes are a fine table hash. Only
        // verified tokens are inserted, so no one can flood a bucket with chosen digests.
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

/// Passes the digest's own bits through (see [`TokenDigest`]'s `Hash`).
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not reached for `TokenDigest`; fold anyway so the hasher stays correct.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

struct Slot {
    key: TokenDigest,
    valid_from: i64,
    valid_until: i64,
    /// CLOCK's second-chance bit.
    referenced: bool,
    claims: Option<Rc<Claims>>,
}

/// Bounded cache with CLOCK eviction: O(1) amortised insert, O(1) lookup.
struct Cache {
    map: HashMap<TokenDigest, usize, BuildHasherDefault<DigestHasher>>,
    slots: Vec<Slot>,
    hand: usize,
    capacity: usize,
}

impl Cache {
    fn new(capacity: usize) -> Cache {
        debug_assert!(capacity >= 1);
        Cache {
            map: HashMap::with_capacity_and_hasher(capacity, BuildHasherDefault::default()),
            slots: Vec::with_capacity(capacity),
            hand: 0,
            capacity,
        }
    }

    fn get(&mut self, key: &TokenDigest, now: i64) -> Option<Rc<Claims>> {
        let index = *self.map.get(key)?;
        let slot = self.slots.get_mut(index)?;
        if now > slot.valid_until || now < slot.valid_from {
            // Dropped at `exp`; the full check then reports why.
            self.remove(index);
            return None;
        }
        slot.referenced = true;
        slot.claims.clone()
    }

    fn insert(&mut self, key: TokenDigest, claims: Rc<Claims>, valid_from: i64, valid_until: i64, now: i64) {
        let slot = Slot { key, valid_from, valid_until, referenced: false, claims: Some(claims) };
        if let Some(&index) = self.map.get(&key) {
            if let Some(old) = self.slots.get_mut(index) {
                *old = slot;
            }
            return;
        }
        let index = if self.slots.len() < self.capacity {
            self.slots.push(slot);
            self.slots.len() - 1
        } else {
            let victim = self.victim(now);
            self.remove(victim);
            if let Some(old) = self.slots.get_mut(victim) {
                *old = slot;
            }
            victim
        };
        self.map.insert(key, index);
        debug_assert!(self.map.len() <= self.capacity);
    }

    /// CLOCK: skip (and clear) recently used slots; take the first empty, expired or
    /// unreferenced one. Two sweeps always find one.
    fn victim(&mut self, now: i64) -> usize {
        let len = self.slots.len();
        for _ in 0..2 * len {
            let index = self.hand;
            self.hand = (self.hand + 1) % len;
            let Some(slot) = self.slots.get_mut(index) else {
                break;
            };
            if slot.claims.is_none() || now > slot.valid_until || !slot.referenced {
                return index;
            }
            slot.referenced = false;
        }
        self.hand
    }

    fn remove(&mut self, index: usize) {
        if let Some(slot) = self.slots.get_mut(index) {
            if slot.claims.take().is_some() {
                self.map.remove(&slot.key);
            }
            slot.referenced = false;
        }
    }

    /// Drops every entry whose claims fail `keep`.
    fn retain(&mut self, keep: impl Fn(&Claims) -> bool) {
        for index in 0..self.slots.len() {
            let drop = self.slots.get(index).and_then(|s| s.claims.as_deref()).is_some_and(|c| !keep(c));
            if drop {
                self.remove(index);
            }
        }
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// One queued signature check.
struct Pending {
    signed: Vec<u8>,
    signature: Signature,
    key: VerifyingKey,
    /// Filled by whichever task runs the batch.
    result: Rc<Cell<Option<bool>>>,
}

/// What the cache said about a token.
enum Lookup {
    Hit(Rc<Claims>),
    Miss(TokenDigest),
}

/// Per-shard verifier: cache plus batch queue. `!Send` by design: one per shard thread.
pub struct ShardVerifier {
    verifier: Verifier,
    revoked: RefCell<Arc<RevocationList>>,
    cache: RefCell<Cache>,
    queue: RefCell<VecDeque<Pending>>,
    stats: Cell<ShardStats>,
}

impl std::fmt::Debug for ShardVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardVerifier")
            .field("cached", &self.cache.borrow().len())
            .field("queued", &self.queue.borrow().len())
            .field("revoked", &self.revoked.borrow().len())
            .finish()
    }
}

impl ShardVerifier {
    /// A verifier for one shard, with its own cache and batch queue, over the
    /// process-wide issuers and revocations of `verifier`.
    pub fn new(verifier: Verifier) -> ShardVerifier {
        ShardVerifier {
            revoked: RefCell::new(Arc::clone(verifier.revoked())),
            cache: RefCell::new(Cache::new(verifier.cache_entries_max())),
            queue: RefCell::new(VecDeque::with_capacity(BATCH_MAX)),
            stats: Cell::new(ShardStats::default()),
            verifier,
        }
    }

    /// Verifies a bearer token: cache first, else a batched signature check and the
    /// claims checks. Cancel-safe: dropping the future withdraws its queued check.
    pub async fn verify(&self, token: &str, now_unix_s: i64) -> Result<Rc<Claims>, KeyError> {
        if token.is_empty() {
            return Err(KeyError::Missing);
        }
        let digest = match self.look_up(token, now_unix_s)? {
            Lookup::Hit(claims) => return Ok(claims),
            Lookup::Miss(digest) => digest,
        };
        let mut prepared = self.verifier.prepare(token)?;
        let good = if self.queue.borrow().len() >= QUEUE_MAX {
            self.bump(|s| s.work.single_signatures += 1);
            verify_one(&prepared.key, &prepared.signed, &prepared.signature)
        } else {
            let result = Rc::new(Cell::new(None));
            self.queue.borrow_mut().push_back(Pending {
                signed: std::mem::take(&mut prepared.signed),
                signature: prepared.signature,
                key: prepared.key,
                result: Rc::clone(&result),
            });
            let guard = Withdraw { shard: self, result };
            YieldNow(false).await;
            guard.wait()
        };
        if !good {
            return Err(KeyError::InvalidSignature);
        }
        self.finish(digest, &prepared, now_unix_s)
    }

    /// The cache lookup both paths start with: the token's digest, and its claims when cached.
    fn look_up(&self, token: &str, now_unix_s: i64) -> Result<Lookup, KeyError> {
        if token.len() > TOKEN_BYTES_MAX {
            return Err(KeyError::Malformed("token too long"));
        }
        let digest = TokenDigest(Sha256::digest(token.as_bytes()).into());
        if let Some(claims) = self.cache.borrow_mut().get(&digest, now_unix_s) {
            self.bump(|s| s.cache_hits += 1);
            return Ok(Lookup::Hit(claims));
        }
        self.bump(|s| s.cache_misses += 1);
        Ok(Lookup::Miss(digest))
    }

    /// The synchronous path: cache, then an immediate single signature check.
    pub fn verify_now(&self, token: &str, now_unix_s: i64) -> Result<Rc<Claims>, KeyError> {
        let digest = match self.look_up(token, now_unix_s)? {
            Lookup::Hit(claims) => return Ok(claims),
            Lookup::Miss(digest) => digest,
        };
        let prepared = self.verifier.prepare(token)?;
        self.bump(|s| s.work.single_signatures += 1);
        if !verify_one(&prepared.key, &prepared.signed, &prepared.signature) {
            return Err(KeyError::InvalidSignature);
        }
        self.finish(digest, &prepared, now_unix_s)
    }

    /// Replaces this shard's revocation list (e.g. from a NATS KV watch) and drops cached
    /// tokens it revokes. O(cache size); revocations are rare.
    pub fn set_revoked(&self, revoked: Arc<RevocationList>) {
        self.cache.borrow_mut().retain(|c| !revoked.contains(&c.jti));
        *self.revoked.borrow_mut() = revoked;
    }

    /// Counters since this shard verifier was made.
    pub fn stats(&self) -> ShardStats {
        self.stats.get()
    }

    /// Tokens in the cache now.
    pub fn cached(&self) -> usize {
        self.cache.borrow().len()
    }

    /// Signature checks queued now.
    pub fn queued(&self) -> usize {
        self.queue.borrow().len()
    }

    fn bump(&self, f: impl FnOnce(&mut ShardStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    /// Claims checks after a good signature; caches what passes.
    fn finish(&self, digest: TokenDigest, prepared: &Prepared, now: i64) -> Result<Rc<Claims>, KeyError> {
        let revoked = Arc::clone(&self.revoked.borrow());
        let claims = Rc::new(self.verifier.accept(prepared, &revoked, now)?);
        let (from, until) = self.verifier.window(&claims);
        self.cache.borrow_mut().insert(digest, Rc::clone(&claims), from, until, now);
        Ok(claims)
    }

    /// Drains up to [`BATCH_MAX`] queued checks and resolves them in one batch.
    fn run_batch(&self) {
        let drained: Vec<Pending> = {
            let mut queue = self.queue.borrow_mut();
            let n = queue.len().min(BATCH_MAX);
            queue.drain(..n).collect()
        };
        if drained.is_empty() {
            return;
        }
        let messages: Vec<&[u8]> = drained.iter().map(|p| p.signed.as_slice()).collect();
        let signatures: Vec<Signature> = drained.iter().map(|p| p.signature).collect();
        let keys: Vec<VerifyingKey> = drained.iter().map(|p| p.key).collect();
        let mut ok = [false; BATCH_MAX];
        let ok = ok.get_mut(..drained.len()).unwrap_or_default();
        let work = batch::resolve(
            ok,
            &mut |r| match (messages.get(r.clone()), signatures.get(r.clone()), keys.get(r)) {
                (Some(m), Some(s), Some(k)) => ed25519_dalek::verify_batch(m, s, k).is_ok(),
                _ => false,
            },
            &mut |i| match (messages.get(i), signatures.get(i), keys.get(i)) {
                (Some(m), Some(s), Some(k)) => verify_one(k, m, s),
                _ => false,
            },
        );
        for (pending, &good) in drained.iter().zip(ok.iter()) {
            pending.result.set(Some(good));
        }
        self.bump(|s| {
            s.work.batches += work.batches;
            s.work.batch_signatures += work.batch_signatures;
            s.work.single_signatures += work.single_signatures;
        });
    }
}

/// A queued check; withdraws it from the queue if the task is dropped before it ran.
struct Withdraw<'a> {
    shard: &'a ShardVerifier,
    result: Rc<Cell<Option<bool>>>,
}

impl Withdraw<'_> {
    /// The result, running batches until ours has been checked. Each run takes at least
    /// one queued check and ours is queued, so this ends within `QUEUE_MAX / BATCH_MAX + 1`
    /// runs.
    fn wait(&self) -> bool {
        for _ in 0..=QUEUE_MAX / BATCH_MAX + 1 {
            if let Some(good) = self.result.get() {
                return good;
            }
            self.shard.run_batch();
        }
        debug_assert!(false, "queued check never ran");
        self.result.get().unwrap_or(false)
    }
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        if self.result.get().is_none() {
            if let Ok(mut queue) = self.shard.queue.try_borrow_mut() {
                queue.retain(|p| !Rc::ptr_eq(&p.result, &self.result));
            }
        }
    }
}

/// Runtime-agnostic "yield once": wakes itself and returns `Pending` the first time.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}
