//! The node's credit state: the deployment parameters, the issuer seed, and per epoch the
//! issuer key, the set of spent nullifiers and the record of issued credentials, both
//! persisted under `<audit.data_dir>/credits/` and fsync'd before a spend or an issuance
//! is answered; the change each spend got, fsync'd before it is sent and, with NATS, put
//! in `BH_CREDITS` next to the nullifier so any node can hand it back.
//!
//! Nullifiers, soft mode's unconfirmed list and changes are written by the credit writer
//! thread (`appender.rs`, group commit: one fsync per file covers every record queued
//! meanwhile); a spend awaits its record's fsync off the shard, the other connections of
//! its shard go on meanwhile.
//!
//! Soft mode (`credits.mode: soft`, with NATS): a spend whose nullifier `BH_CREDITS`
//! cannot confirm is accepted on the local set alone, at most `soft_max_unconfirmed` at a
//! time; the unconfirmed nullifiers (persisted in `unconfirmed-<epoch>.bin`) are created
//! in `BH_CREDITS` once it answers again, and one found created by another node meanwhile
//! is a double spend: counted (`gatekeeper_credit_double_spends_total`) and logged.
//!
//! One mutex guards the epoch state, shared by every shard: it is taken only by
//! credit-paid requests and issuance, never for proof verification nor across an await
//! (the exception to "no lock shared between shards" is deliberate: a nullifier must be
//! unique across the node's shards). A spend holds it for a set lookup, the reservation
//! of its nullifier (`pending`: a second spend of it meanwhile, on any shard, is a
//! replay) and the queueing of its record, a few microseconds; the fsync runs on the
//! writer thread with the lock free, and the spend takes the lock again once the fsync
//! answered to move the nullifier from `pending` to the set (or, when the write failed,
//! to drop it: nothing spent, 503). Issuance, once per key per epoch, does the same: the
//! blind signature (the request's proof check and the signing, about a millisecond) runs
//! on the verify pool with no lock held, and its `issued-<epoch>.jsonl` line is fsync'd
//! by the writer while the key is reserved (`issuing`), not under the lock.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use gatekeeper_zk::{Domain, EpochLength, Issuer, IssuerSeed, Nullifier, PublicKey};

use super::appender::{AppendError, Appender, Log, Queued, APPEND_QUEUE_MAX};
use super::error::CreditError;
use super::pool::VerifyPool;
use crate::audit::private;
use crate::bridge::credits::{ClaimOutcome, Op};
use crate::config::{CreditsConfig, CreditsEpoch, CreditsMode};

/// Why the store refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The nullifier is already in the set.
    #[error("nullifier already spent")]
    Replayed,
    /// The spend's epoch is not the current one.
    #[error("not the current epoch")]
    Epoch,
    /// Reading or writing the store failed.
    #[error("credit store: {0}")]
    Io(#[from] std::io::Error),
    /// The credit writer's queue is full: the nullifier was not queued (nor taken).
    #[error("credit store: the writer's queue is full")]
    WriterBusy,
    /// `BH_CREDITS` could not confirm the nullifier (NATS down, queue full, timeout).
    #[error("shared nullifier store: {0}")]
    Shared(String),
}

impl From<AppendError> for StoreError {
    fn from(e: AppendError) -> StoreError {
        match e {
            AppendError::Full => StoreError::WriterBusy,
            AppendError::Stopped => StoreError::Io(std::io::Error::other(e.to_string())),
            AppendError::Io(e) => StoreError::Io(e),
        }
    }
}

/// Bytes of one nullifier record in `nullifiers-<epoch>.bin`.
const NULLIFIER_RECORD_BYTES: usize = 32;

/// The node's credit state.
pub struct Credits {
    domain: Domain,
    seed: IssuerSeed,
    epoch_len: EpochLength,
    dir: PathBuf,
    credits_per_epoch: u64,
    max_tokens_default: u64,
    tokens_per_credit: u64,
    claim_timeout: std::time::Duration,
    /// With NATS: the bridge's claim queue (`bridge/credits.rs`), set once at start.
    shared: std::sync::OnceLock<crate::bridge::credits::ClaimSender>,
    state: Mutex<EpochState>,
    mode: CreditsMode,
    soft_max_unconfirmed: usize,
    /// This node's value in the nullifier keys it creates (`node.id`, random, kept across
    /// restarts): tells its own creates from other nodes'.
    node_token: Vec<u8>,
    pool: VerifyPool,
    /// Appends and fsyncs nullifiers, unconfirmed nullifiers and changes.
    writer: Appender,
    counters: CreditCounters,
    reconciling: AtomicBool,
    last_reconcile_ms: AtomicU64,
}

/// Node-wide credit counters (`/metrics`), beside the per-shard ones.
#[derive(Default)]
struct CreditCounters {
    soft_accepted: AtomicU64,
    unconfirmed: AtomicU64,
    double_spends: AtomicU64,
    changes_not_durable: AtomicU64,
    allowances_clamped: AtomicU64,
}

/// A key's credits for one epoch ([`Credits::allowance`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// Credits the credential holds: 1..=`gatekeeper_zk::CREDITS_MAX`.
    pub credits: u64,
    /// Whether the key's allowance was larger than the balance width holds and was cut
    /// to `CREDITS_MAX` (counted in `gatekeeper_credit_allowances_clamped_total` when
    /// the credential is issued).
    pub clamped: bool,
}

/// Least time between two reconciliation attempts of unconfirmed nullifiers, ms.
const RECONCILE_INTERVAL_MS: u64 = 1_000;
/// Unconfirmed nullifiers claimed at once while reconciling.
const RECONCILE_CHUNK: usize = 64;

/// What a spend awaits once its `BH_CREDITS` claim is answered.
enum Next {
    /// Its record.
    Record(Queued),
    /// Soft mode: its listing as unconfirmed (then its record), and why it is unconfirmed.
    List(Queued, StoreError),
}

struct EpochState {
    epoch: u32,
    issuer: Arc<Issuer>,
    /// The nullifiers spent: fsync'd in `nullifiers-<epoch>.bin`.
    nullifiers: HashSet<[u8; 32]>,
    /// Key id → (hash of the issuance request, response text): fsync'd in
    /// `issued-<epoch>.jsonl`.
    issued: HashMap<String, (String, String)>,
    /// Key ids whose issuance line is being written: another issuance for one of them
    /// meanwhile is refused (503, retry), so a key never gets two lines in one epoch.
    issuing: HashSet<String>,
    /// Nullifier → the change its spend got (for a wallet that lost it).
    changes: HashMap<[u8; 32], String>,
    /// Soft mode: nullifiers accepted here that `BH_CREDITS` has not confirmed yet (and
    /// those being accepted: listed in `unconfirmed-<epoch>.bin` before they are spent).
    unconfirmed: Vec<[u8; 32]>,
    /// Nullifiers being spent on this node: their `BH_CREDITS` create or their record's
    /// fsync is in flight. A second spend of one of them meanwhile, on any shard, is a
    /// replay; a spend whose record could not be written is removed again (not spent).
    pending: HashSet<[u8; 32]>,
}

/// One line of `changes-<epoch>.jsonl`.
#[derive(serde::Serialize, serde::Deserialize)]
struct ChangeLine {
    nullifier: String,
    change: String,
}

/// One line of `issued-<epoch>.jsonl`.
#[derive(serde::Serialize, serde::Deserialize)]
struct IssuedLine {
    key_id: String,
    request_hash: String,
    response: String,
    /// `gatekeeper_zk::PARAMS_VERSION` of the credential; absent in lines written before
    /// the field existed (params `2026-11-30`). Lines of other params are ignored.
    #[serde(default = "params_v1")]
    params_version: String,
}

/// Parameters of issuance lines without a `params_version`.
fn params_v1() -> String {
    "2026-11-30".to_string()
}

/// [`Credits::allowance`] on plain values.
fn allowance_of(
    claims: &crate::keys::Claims,
    epoch_len: EpochLength,
    credits_per_epoch: u64,
    tokens_per_credit: u64,
) -> Allowance {
    let tokens = |per_day: u64| match epoch_len {
        EpochLength::Day => per_day,
        EpochLength::Hour => per_day.div_ceil(24),
    };
    let per_epoch = match (claims.zk_credits, claims.budget.tokens_per_day) {
        (Some(c), _) => c,
        (None, Some(d)) => super::unit::credits_for(tokens(d), tokens_per_credit),
        (None, None) => credits_per_epoch,
    };
    Allowance {
        credits: per_epoch.clamp(1, gatekeeper_zk::CREDITS_MAX),
        clamped: per_epoch > gatekeeper_zk::CREDITS_MAX,
    }
}

impl Credits {
    /// Opens (creating as needed) the store under `<data_dir>/credits/` for `config`.
    pub fn open(config: &CreditsConfig, data_dir: &Path) -> std::io::Result<Credits> {
        let dir = data_dir.join("credits");
        private::create_dir_all(&dir)?;
        let seed = match config.seed_bytes() {
            Some(bytes) => IssuerSeed::from_bytes(bytes),
            None => load_or_create_seed(&dir.join("issuer.seed"))?,
        };
        let domain = Domain::new(&config.deployment)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let epoch_len = match config.epoch {
            CreditsEpoch::Day => EpochLength::Day,
            CreditsEpoch::Hour => EpochLength::Hour,
        };
        let epoch = epoch_len.epoch_at(crate::clock::unix_s());
        let state = EpochState::open(&dir, &domain, &seed, epoch)?;
        let counters = CreditCounters::default();
        counters.unconfirmed.store(state.unconfirmed.len() as u64, Ordering::Relaxed);
        Ok(Credits {
            mode: config.mode,
            soft_max_unconfirmed: config.soft_max_unconfirmed,
            node_token: load_or_create_node_token(&dir.join("node.id"))?,
            pool: VerifyPool::start(config.verify_threads, config.verify_queue_depth)?,
            writer: Appender::start(&dir, APPEND_QUEUE_MAX)?,
            counters,
            reconciling: AtomicBool::new(false),
            last_reconcile_ms: AtomicU64::new(0),
            domain,
            seed,
            epoch_len,
            dir,
            credits_per_epoch: config.credits_per_epoch,
            max_tokens_default: config.max_tokens_default,
            tokens_per_credit: config.tokens_per_credit,
            claim_timeout: std::time::Duration::from_millis(config.claim_timeout_ms),
            shared: std::sync::OnceLock::new(),
            state: Mutex::new(state),
        })
    }

    /// Claims nullifiers across nodes through `claims` (the bridge answers them from
    /// `BH_CREDITS`). Call once, before serving.
    pub fn share_nullifiers(&self, claims: crate::bridge::credits::ClaimSender) {
        let _ = self.shared.set(claims);
    }

    /// The verify pool (`credits.verify_threads`).
    pub fn pool(&self) -> &VerifyPool {
        &self.pool
    }

    /// Appends the node-wide credit metrics to the `/metrics` text.
    pub fn render_metrics(&self, out: &mut String) {
        let c = &self.counters;
        let rows = [
            (
                "gatekeeper_credit_soft_accepted_total",
                "counter",
                "Spends accepted on the local nullifier set alone (soft mode, BH_CREDITS unreachable).",
                c.soft_accepted.load(Ordering::Relaxed),
            ),
            (
                "gatekeeper_credit_unconfirmed",
                "gauge",
                "Soft-accepted nullifiers not yet published to BH_CREDITS.",
                c.unconfirmed.load(Ordering::Relaxed),
            ),
            (
                "gatekeeper_credit_double_spends_total",
                "counter",
                "Soft-accepted nullifiers found spent on another node too when published.",
                c.double_spends.load(Ordering::Relaxed),
            ),
            (
                "gatekeeper_credit_changes_not_durable_total",
                "counter",
                "Change credentials sent without their durable copy (credit writer full or failing).",
                c.changes_not_durable.load(Ordering::Relaxed),
            ),
            (
                "gatekeeper_credit_allowances_clamped_total",
                "counter",
                "Credentials issued with fewer credits than the key's allowance: cut to the balance width (raise credits.tokens_per_credit).",
                c.allowances_clamped.load(Ordering::Relaxed),
            ),
            (
                "gatekeeper_credit_verify_threads",
                "gauge",
                "Threads of the credit verify pool (0: inline).",
                self.pool.threads() as u64,
            ),
        ];
        crate::metrics::write_unlabelled(out, &rows);
    }

    /// `credits.max_tokens_default`.
    pub fn max_tokens_default(&self) -> u64 {
        self.max_tokens_default
    }

    /// `credits.tokens_per_credit`: tokens a credit is worth.
    pub fn tokens_per_credit(&self) -> u64 {
        self.tokens_per_credit
    }

    /// Credits for a key per epoch: its `zk_credits` claim (in credits), else
    /// `budget.tokens_per_day` (tokens, scaled to the epoch, rounded up to whole credits
    /// of `credits.tokens_per_credit`), else `credits.credits_per_epoch` (in credits);
    /// at least 1, and cut to the balance width (`gatekeeper_zk::CREDITS_MAX`), which
    /// [`Allowance::clamped`] reports.
    pub fn allowance(&self, claims: &crate::keys::Claims) -> Allowance {
        allowance_of(claims, self.epoch_len, self.credits_per_epoch, self.tokens_per_credit)
    }

    /// The deployment parameters.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// The epoch length.
    pub fn epoch_length(&self) -> EpochLength {
        self.epoch_len
    }

    /// The public key of `epoch` (derived; no state needed).
    pub fn public_key(&self, epoch: u32) -> PublicKey {
        Issuer::derive(&self.domain, &self.seed, epoch).public_key()
    }

    /// The epoch state as it is, without moving it to a new epoch: for settling a
    /// reservation, which must happen whatever the clock says.
    fn lock(&self) -> MutexGuard<'_, EpochState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current epoch's state, moved to a new epoch when the clock has.
    fn current(&self) -> Result<MutexGuard<'_, EpochState>, StoreError> {
        let mut state = self.lock();
        let now = self.epoch_len.epoch_at(crate::clock::unix_s());
        if now > state.epoch {
            *state = EpochState::open(&self.dir, &self.domain, &self.seed, now)?;
            remove_epochs_before(&self.dir, now);
        }
        Ok(state)
    }

    /// The current epoch's issuer.
    pub fn issuer(&self) -> Result<Arc<Issuer>, StoreError> {
        Ok(Arc::clone(&self.current()?.issuer))
    }

    /// Records `nullifier` for `epoch`; durable (fsync'd locally, and with NATS created
    /// in `BH_CREDITS`, atomic across nodes) when this returns `Ok`. Fails closed: any
    /// doubt is an error and the nullifier is not taken; except in soft mode, where a
    /// `BH_CREDITS` that cannot answer leaves the local set to decide (bounded by
    /// `soft_max_unconfirmed`).
    ///
    /// The nullifier is reserved (`pending`) under the lock before anything is awaited,
    /// and the lock is never held across an await: a concurrent spend of it on any shard
    /// is `Replayed` while this one is in flight, other nullifiers' spends go on. A spend
    /// dropped while it waits (nothing on the request path cancels one) leaves its
    /// nullifier reserved for the epoch: refused, never taken twice.
    pub async fn record_nullifier(&self, epoch: u32, nullifier: &Nullifier) -> Result<(), StoreError> {
        let n = nullifier.0;
        let queued = {
            let mut state = self.current()?;
            if epoch != state.epoch {
                return Err(StoreError::Epoch);
            }
            if state.nullifiers.contains(&n) || !state.pending.insert(n) {
                return Err(StoreError::Replayed);
            }
            match self.shared.get() {
                Some(_) => None,
                None => Some(self.queue_record(&mut state, n)?),
            }
        };
        if let Some(queued) = queued {
            return self.settle(epoch, n, queued).await;
        }
        // Other shards' spends go on during the claim, and the KV create decides between
        // two racing spends of one nullifier on different nodes.
        let key = crate::bridge::credits::nullifier_key(epoch, &n);
        let outcome = self.claim(key, self.node_token.clone(), Op::CreateOrFetch).await;
        let next = {
            let mut state = match self.current() {
                Ok(state) => state,
                Err(e) => {
                    self.lock().pending.remove(&n);
                    return Err(e);
                }
            };
            if epoch != state.epoch {
                // The new epoch's state holds no reservation of this spend.
                return Err(StoreError::Epoch);
            }
            match outcome {
                Ok(ClaimOutcome::Created) => Next::Record(self.queue_record(&mut state, n)?),
                // Created by this node for an attempt it did not serve: the create landed
                // after the claim had timed out (answered 503), or the process stopped
                // before its local fsync. Served nowhere (only this node could have), so it
                // is paid now.
                Ok(ClaimOutcome::Exists(Some(v))) if v == self.node_token => {
                    Next::Record(self.queue_record(&mut state, n)?)
                }
                Ok(ClaimOutcome::Exists(_)) => {
                    state.pending.remove(&n);
                    return Err(StoreError::Replayed);
                }
                Err(e) if self.mode == CreditsMode::Soft => {
                    let (listed, why) = self.list_unconfirmed(&mut state, n, e)?;
                    Next::List(listed, why)
                }
                Err(e) => {
                    state.pending.remove(&n);
                    return Err(e);
                }
            }
        };
        match next {
            Next::Record(queued) => self.settle(epoch, n, queued).await,
            Next::List(listed, why) => self.accept_unconfirmed(epoch, n, listed, why).await,
        }
    }

    /// Under the lock, `n` reserved: queues its record. When it cannot be queued (the
    /// writer's queue is full) the reservation is dropped: nothing spent.
    fn queue_record(&self, state: &mut EpochState, n: [u8; 32]) -> Result<Queued, StoreError> {
        self.writer.queue(Log::Nullifiers, state.epoch, n.to_vec()).map_err(|e| {
            state.pending.remove(&n);
            StoreError::from(e)
        })
    }

    /// Awaits `n`'s record, then settles its reservation: spent once the record is
    /// durable, free again when it could not be written (the caller answers 503).
    async fn settle(&self, epoch: u32, n: [u8; 32], queued: Queued) -> Result<(), StoreError> {
        let written = queued.wait().await;
        let mut state = self.lock();
        // After a move to a new epoch the reservation left with the old state; a written
        // record is durable in its own epoch's file all the same, and that epoch's spends
        // are refused from now on.
        if state.epoch == epoch {
            state.pending.remove(&n);
            if written.is_ok() {
                state.nullifiers.insert(n);
            }
        }
        Ok(written?)
    }

    /// Soft mode, under the lock, `n` reserved: lists `n` as unconfirmed (queues it for
    /// `unconfirmed-<epoch>.bin`), unless `soft_max_unconfirmed` are already listed.
    fn list_unconfirmed(
        &self,
        state: &mut EpochState,
        n: [u8; 32],
        why: StoreError,
    ) -> Result<(Queued, StoreError), StoreError> {
        if state.unconfirmed.len() >= self.soft_max_unconfirmed {
            state.pending.remove(&n);
            return Err(why);
        }
        let listed = self.writer.queue(Log::Unconfirmed, state.epoch, n.to_vec()).map_err(|e| {
            state.pending.remove(&n);
            StoreError::from(e)
        })?;
        state.unconfirmed.push(n);
        Ok((listed, why))
    }

    /// Soft mode: takes `n` on the local set alone, once its listing is durable (listed
    /// before it is spent, so no spent nullifier goes unlisted; a listed one that a crash
    /// or a failed write kept from being spent is dropped at open: not in the set).
    async fn accept_unconfirmed(
        &self,
        epoch: u32,
        n: [u8; 32],
        listed: Queued,
        why: StoreError,
    ) -> Result<(), StoreError> {
        let listed = listed.wait().await;
        let queued = {
            let mut state = self.lock();
            if state.epoch != epoch {
                return Err(StoreError::Epoch);
            }
            match listed.map_err(StoreError::from).and_then(|()| self.queue_record(&mut state, n)) {
                Ok(queued) => queued,
                Err(e) => {
                    state.pending.remove(&n);
                    state.unconfirmed.retain(|u| *u != n);
                    return Err(e);
                }
            }
        };
        let written = self.settle(epoch, n, queued).await;
        let unconfirmed = {
            let mut state = self.lock();
            if written.is_err() && state.epoch == epoch {
                state.unconfirmed.retain(|u| *u != n);
            }
            state.unconfirmed.len() as u64
        };
        self.counters.unconfirmed.store(unconfirmed, Ordering::Relaxed);
        written?;
        if self.counters.soft_accepted.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(error = %why, "credits (soft): accepting spends on the local nullifier set until BH_CREDITS answers");
        }
        Ok(())
    }

    /// Soft mode: publishes the unconfirmed nullifiers in the background, at most once a
    /// second and one run at a time. Called on each spend.
    pub fn reconcile_soon(self: &Arc<Self>) {
        if self.mode != CreditsMode::Soft
            || self.shared.get().is_none()
            || self.counters.unconfirmed.load(Ordering::Relaxed) == 0
        {
            return;
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let last = self.last_reconcile_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) < RECONCILE_INTERVAL_MS || self.reconciling.swap(true, Ordering::AcqRel) {
            return;
        }
        self.last_reconcile_ms.store(now_ms, Ordering::Relaxed);
        let me = Arc::clone(self);
        monoio::spawn(async move {
            me.reconcile().await;
            me.reconciling.store(false, Ordering::Release);
        });
    }

    /// Creates every unconfirmed nullifier in `BH_CREDITS`; stops at the first that cannot
    /// be asked (still unreachable: the next spend tries again).
    async fn reconcile(&self) {
        let (epoch, pending) = match self.current() {
            Ok(s) => (s.epoch, s.unconfirmed.clone()),
            Err(_) => return,
        };
        let mut settled = HashSet::new();
        'chunks: for chunk in pending.chunks(RECONCILE_CHUNK) {
            let claims = chunk.iter().map(|n| {
                let key = crate::bridge::credits::nullifier_key(epoch, n);
                self.claim(key, self.node_token.clone(), Op::CreateOrFetch)
            });
            let outcomes = futures_util::future::join_all(claims).await;
            for (n, outcome) in chunk.iter().zip(outcomes) {
                match outcome {
                    Ok(ClaimOutcome::Created) => {}
                    Ok(ClaimOutcome::Exists(Some(v))) if v == self.node_token => {}
                    Ok(ClaimOutcome::Exists(_)) => {
                        self.counters.double_spends.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(
                            nullifier = %Nullifier(*n).to_hex(),
                            epoch,
                            "credit spent twice: accepted here while BH_CREDITS was unreachable (soft mode), and on another node"
                        );
                    }
                    Err(_) => break 'chunks,
                }
                settled.insert(*n);
            }
        }
        if settled.is_empty() {
            return;
        }
        let replaced = {
            let Ok(mut state) = self.current() else { return };
            if state.epoch != epoch {
                return;
            }
            state.unconfirmed.retain(|n| !settled.contains(n));
            self.counters.unconfirmed.store(state.unconfirmed.len() as u64, Ordering::Relaxed);
            // Queued under the lock: a listing queued before the rewrite is in the list it
            // writes, one queued after it is appended to the new file.
            self.writer.replace(Log::Unconfirmed, epoch, state.unconfirmed.concat())
        };
        if let Err(e) = async { replaced?.wait().await }.await {
            // The file still lists settled ones: publishing them again is harmless.
            tracing::warn!(error = %e, "credits: could not rewrite the unconfirmed nullifier list");
        }
    }

    async fn claim(&self, key: String, value: Vec<u8>, op: Op) -> Result<ClaimOutcome, StoreError> {
        let Some(tx) = self.shared.get() else { return Err(StoreError::Shared("not connected".into())) };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let claim = crate::bridge::credits::Claim { key, value, op, reply };
        if tx.try_send(claim).is_err() {
            return Err(StoreError::Shared("claim queue full".into()));
        }
        match monoio::time::timeout(self.claim_timeout, answer).await {
            Ok(Ok(outcome)) => outcome.map_err(StoreError::Shared),
            Ok(Err(_)) => Err(StoreError::Shared("bridge stopped".into())),
            Err(_) => Err(StoreError::Shared("timed out".into())),
        }
    }

    /// Keeps the change a spend got, so a repeat of the spend can hand it back: in memory,
    /// in `changes-<epoch>.jsonl` (fsync'd before this returns, by the credit writer
    /// thread), and with NATS in `BH_CREDITS` (`c.<epoch>.<hex>`, not
    /// awaited: another node can hand it back once the put lands). A change that cannot
    /// be made durable is still sent (the client needs it more than the copy), counted.
    pub async fn remember_change(&self, epoch: u32, nullifier: &Nullifier, change: &str) {
        {
            let Ok(mut state) = self.current() else { return };
            if state.epoch != epoch {
                return;
            }
            state.changes.insert(nullifier.0, change.to_string());
        }
        if let Some(tx) = self.shared.get() {
            let (reply, _) = tokio::sync::oneshot::channel();
            let key = crate::bridge::credits::change_key(epoch, &nullifier.0);
            let _ = tx.try_send(crate::bridge::credits::Claim {
                key,
                value: change.as_bytes().to_vec(),
                op: Op::Put,
                reply,
            });
        }
        let line = ChangeLine { nullifier: nullifier.to_hex(), change: change.to_string() };
        let durable = match serde_json::to_vec(&line) {
            Ok(mut text) => {
                text.push(b'\n');
                self.writer.append(Log::Changes, epoch, text).await
            }
            Err(e) => Err(AppendError::Io(std::io::Error::other(e))),
        };
        if let Err(e) = durable {
            self.counters.changes_not_durable.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "credit change sent without its durable copy");
        }
    }

    /// The change recorded for `nullifier`'s spend, if any: this node's, else (with NATS)
    /// the one another node put in `BH_CREDITS`.
    pub async fn change_for(&self, epoch: u32, nullifier: &Nullifier) -> Option<String> {
        {
            let state = self.current().ok()?;
            if state.epoch != epoch {
                return None;
            }
            if let Some(c) = state.changes.get(&nullifier.0) {
                return Some(c.clone());
            }
        }
        self.shared.get()?;
        let key = crate::bridge::credits::change_key(epoch, &nullifier.0);
        match self.claim(key, Vec::new(), Op::Get).await {
            Ok(ClaimOutcome::Exists(Some(v))) => String::from_utf8(v).ok(),
            _ => None,
        }
    }

    /// Issues `allowance` to `key_id` for the request `request_text`, at most once per key
    /// per epoch (with NATS, across nodes: a `BH_CREDITS` key per key id and epoch): the
    /// same request again gets the same response (a retried issuance cannot strand a
    /// credential); another request gets `AlreadyIssued`. A credential issued under
    /// other protocol parameters (`gatekeeper_zk::PARAMS_VERSION`, before an upgrade)
    /// does not count: it cannot be spent here, so the key gets one for these.
    ///
    /// The blind signature runs on the verify pool (a full queue: `VerifyBusy`), with no
    /// lock held; the issuance line is fsync'd by the credit writer before the response
    /// is returned, the key reserved meanwhile (a second issuance for it then is
    /// `StoreUnavailable`: retry).
    pub async fn issue(&self, key_id: &str, allowance: Allowance, request_text: &str) -> Result<String, CreditError> {
        let credits = allowance.credits;
        let request = gatekeeper_zk::IssuanceRequest::decode(request_text)
            .map_err(|_| CreditError::BadIssuanceRequest("`request` is not a credential request"))?;
        let request_hash = hex_sha256(request_text.trim().as_bytes());
        let issuer = {
            let state = self.current().map_err(|_| CreditError::StoreUnavailable)?;
            if request.epoch() != state.epoch {
                return Err(CreditError::EpochExpired);
            }
            if let Some(answer) = state.issued_answer(key_id, &request_hash) {
                return answer;
            }
            Arc::clone(&state.issuer)
        };
        let epoch = issuer.epoch();
        let signed = self
            .pool
            .run(move || issuer.issue(&request, credits, &mut rand::rngs::OsRng).map(|r| r.encode()))
            .await
            .map_err(|_| CreditError::VerifyBusy)?;
        let response = signed.map_err(|_| CreditError::BadIssuanceRequest("the request's proof does not verify"))?;
        let mut line = IssuedLine {
            key_id: key_id.to_string(),
            request_hash: request_hash.clone(),
            response,
            params_version: gatekeeper_zk::PARAMS_VERSION.to_string(),
        };
        if self.shared.get().is_some() {
            let key = crate::bridge::credits::issued_key(epoch, key_id);
            let value =
                serde_json::to_vec(&(&line.request_hash, &line.response)).map_err(|_| CreditError::StoreUnavailable)?;
            match self.claim(key, value, Op::CreateOrFetch).await {
                Ok(ClaimOutcome::Created) => {}
                Ok(ClaimOutcome::Exists(Some(v))) => {
                    // Another node (or shard) issued first: its record is the one that counts.
                    let (hash, response): (String, String) =
                        serde_json::from_slice(&v).map_err(|_| CreditError::StoreUnavailable)?;
                    line.request_hash = hash;
                    line.response = response;
                }
                _ => return Err(CreditError::StoreUnavailable),
            }
        }
        let mut text = serde_json::to_vec(&line).map_err(|_| CreditError::StoreUnavailable)?;
        text.push(b'\n');
        let queued = {
            let mut state = self.current().map_err(|_| CreditError::StoreUnavailable)?;
            if state.epoch != epoch {
                return Err(CreditError::EpochExpired);
            }
            if let Some(answer) = state.issued_answer(key_id, &request_hash) {
                return answer;
            }
            if !state.issuing.insert(line.key_id.clone()) {
                return Err(CreditError::StoreUnavailable);
            }
            match self.writer.queue(Log::Issued, epoch, text) {
                Ok(queued) => queued,
                Err(_) => {
                    state.issuing.remove(&line.key_id);
                    return Err(CreditError::StoreUnavailable);
                }
            }
        };
        // Released however this ends, a drop of this future included: a reservation left
        // behind would refuse the key's credential for the rest of the epoch.
        let mut reserved = Reservation { credits: self, epoch, key_id: &line.key_id, held: true };
        let written = queued.wait().await;
        let mut state = self.lock();
        if state.epoch == epoch {
            state.issuing.remove(&line.key_id);
            if written.is_ok() {
                state.issued.insert(line.key_id.clone(), (line.request_hash.clone(), line.response.clone()));
            }
        }
        reserved.held = false;
        drop(state);
        drop(reserved);
        written.map_err(|_| CreditError::StoreUnavailable)?;
        if line.request_hash != request_hash {
            return Err(CreditError::AlreadyIssued);
        }
        if allowance.clamped {
            self.counters.allowances_clamped.fetch_add(1, Ordering::Relaxed);
        }
        Ok(line.response)
    }
}

/// A key's issuance reservation (`EpochState::issuing`), released when dropped: the
/// issuance future was dropped while its line was being written. `held` is cleared once
/// the issuance settled the reservation itself under the lock.
struct Reservation<'a> {
    credits: &'a Credits,
    epoch: u32,
    key_id: &'a str,
    held: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        let mut state = self.credits.lock();
        if state.epoch == self.epoch {
            state.issuing.remove(self.key_id);
        }
    }
}

/// SHA-256 of `bytes` in lowercase hex.
fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    crate::audit::merkle::to_hex(&sha2::Sha256::digest(bytes).into())
}

impl EpochState {
    /// What a repeated issuance for `key_id` gets, when the key already has a credential.
    fn issued_answer(&self, key_id: &str, request_hash: &str) -> Option<Result<String, CreditError>> {
        let (hash, response) = self.issued.get(key_id)?;
        Some(if hash == request_hash { Ok(response.clone()) } else { Err(CreditError::AlreadyIssued) })
    }
}

impl EpochState {
    fn open(dir: &Path, domain: &Domain, seed: &IssuerSeed, epoch: u32) -> std::io::Result<EpochState> {
        let issuer = Arc::new(Issuer::derive(domain, seed, epoch));
        let nullifiers: HashSet<[u8; 32]> = load_records(&Log::Nullifiers.path(dir, epoch))?.into_iter().collect();
        // Later lines win: a line whose issuance was dropped before it answered can be
        // followed by the one a retry wrote.
        let (_, lines) = load_lines(&Log::Issued.path(dir, epoch))?;
        let issued: HashMap<String, (String, String)> = lines
            .split(|&b| b == b'\n')
            .filter_map(|line| serde_json::from_slice::<IssuedLine>(line).ok())
            .filter(|l| l.params_version == gatekeeper_zk::PARAMS_VERSION)
            .map(|l| (l.key_id, (l.request_hash, l.response)))
            .collect();
        let (_, lines) = load_lines(&Log::Changes.path(dir, epoch))?;
        let changes: HashMap<[u8; 32], String> = lines
            .split(|&b| b == b'\n')
            .filter_map(|line| serde_json::from_slice::<ChangeLine>(line).ok())
            .filter_map(|l| Some((crate::config::credits::parse_seed(&l.nullifier)?, l.change)))
            .collect();
        let mut unconfirmed = load_records(&Log::Unconfirmed.path(dir, epoch))?;
        // Only what was spent needs publishing (a torn or unspent entry is dropped).
        unconfirmed.retain(|n| nullifiers.contains(n));
        unconfirmed.sort_unstable();
        unconfirmed.dedup();
        Ok(EpochState {
            epoch,
            issuer,
            nullifiers,
            issued,
            issuing: HashSet::new(),
            changes,
            unconfirmed,
            pending: HashSet::new(),
        })
    }
}

/// Reads a file of 32-byte records (created empty when missing), cutting a torn last
/// record off it first: it was never acknowledged (its fsync did not return), and the
/// credit writer appends after it, so the next record must start on a boundary.
fn load_records(path: &Path) -> std::io::Result<Vec<[u8; 32]>> {
    let mut file = private::options().read(true).append(true).create(true).open(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let whole = bytes.len() - bytes.len() % NULLIFIER_RECORD_BYTES;
    if whole != bytes.len() {
        file.set_len(whole as u64)?;
        file.sync_data()?;
    }
    Ok(bytes
        .get(..whole)
        .unwrap_or_default()
        .chunks_exact(NULLIFIER_RECORD_BYTES)
        .filter_map(|c| <[u8; 32]>::try_from(c).ok())
        .collect())
}

/// Opens (creating when missing) a file of JSON lines for appending and reads its whole
/// lines, cutting a torn last line off first: it was never acknowledged, and a line
/// appended after it would be glued to it and lost with it.
fn load_lines(path: &Path) -> std::io::Result<(File, Vec<u8>)> {
    let mut file = private::options().read(true).append(true).create(true).open(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if whole != bytes.len() {
        file.set_len(whole as u64)?;
        file.sync_data()?;
        bytes.truncate(whole);
    }
    Ok((file, bytes))
}

/// Deletes the records of epochs before `epoch`: their spends are refused anyway.
fn remove_epochs_before(dir: &Path, epoch: u32) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let number = name
            .strip_prefix("nullifiers-")
            .and_then(|n| n.strip_suffix(".bin"))
            .or_else(|| name.strip_prefix("issued-").and_then(|n| n.strip_suffix(".jsonl")))
            .or_else(|| name.strip_prefix("changes-").and_then(|n| n.strip_suffix(".jsonl")))
            .or_else(|| name.strip_prefix("unconfirmed-").and_then(|n| n.strip_suffix(".bin")));
        if number.and_then(|n| n.parse::<u32>().ok()).is_some_and(|n| n < epoch) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Reads this node's token (`node.id`), or creates it (0600) at random.
fn load_or_create_node_token(path: &Path) -> std::io::Result<Vec<u8>> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().len() == 32 && text.trim().bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(text.trim().as_bytes().to_vec())
        }
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: not 32 hex characters", path.display()),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use rand::RngCore as _;
            let mut bytes = [0u8; 16];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let mut f = private::options().write(true).create_new(true).open(path)?;
            f.write_all(hex.as_bytes())?;
            f.sync_all()?;
            Ok(hex.into_bytes())
        }
        Err(e) => Err(e),
    }
}

/// Reads the seed file, or creates it (0600) with a fresh random seed.
fn load_or_create_seed(path: &Path) -> std::io::Result<IssuerSeed> {
    match std::fs::read_to_string(path) {
        Ok(text) => crate::config::credits::parse_seed(&text).map(IssuerSeed::from_bytes).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: not 64 hex characters", path.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let seed = IssuerSeed::random(&mut rand::rngs::OsRng);
            let hex: String = seed.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
            let mut f = private::options().write(true).create_new(true).open(path)?;
            f.write_all(hex.as_bytes())?;
            f.sync_all()?;
            Ok(seed)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> Credits {
        Credits::open(&CreditsConfig::default(), dir).expect("open")
    }

    fn issue(c: &Credits, key: &str, credits: u64, req: &str) -> Result<String, CreditError> {
        block_on(c.issue(key, Allowance { credits, clamped: false }, req))
    }

    fn record(c: &Credits, epoch: u32, n: &Nullifier) -> Result<(), StoreError> {
        block_on(c.record_nullifier(epoch, n))
    }

    #[test]
    fn nullifiers_persist_and_replays_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = open(dir.path());
        let epoch = c.issuer().expect("issuer").epoch();
        let n = Nullifier([7; 32]);
        record(&c, epoch, &n).expect("first");
        assert!(matches!(record(&c, epoch, &n), Err(StoreError::Replayed)));
        assert!(matches!(record(&c, epoch + 1, &Nullifier([8; 32])), Err(StoreError::Epoch)));
        drop(c);
        // A torn record after the last whole one is dropped at open.
        let path = dir.path().join(format!("credits/nullifiers-{epoch}.bin"));
        std::fs::OpenOptions::new().append(true).open(&path).expect("log").write_all(&[1, 2, 3]).expect("torn");
        let c = open(dir.path());
        assert!(matches!(record(&c, epoch, &n), Err(StoreError::Replayed)), "survives a restart");
        record(&c, epoch, &Nullifier([9; 32])).expect("appends after the torn bytes were cut");
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 64);
    }

    #[test]
    fn torn_tails_of_the_other_files_are_cut_so_later_records_stay_readable() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = open(dir.path());
        let epoch = c.issuer().expect("issuer").epoch();
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().expect("runtime");
        rt.block_on(c.remember_change(epoch, &Nullifier([1; 32]), "first"));
        drop(c);
        let changes = dir.path().join(format!("credits/changes-{epoch}.jsonl"));
        let unconfirmed = dir.path().join(format!("credits/unconfirmed-{epoch}.bin"));
        let append = |p: &Path, b: &[u8]| {
            std::fs::OpenOptions::new().append(true).create(true).open(p).expect("file").write_all(b).expect("torn")
        };
        append(&changes, b"{\"nullifier\":\"0");
        append(&unconfirmed, &[5; 40]);
        let c = open(dir.path());
        assert_eq!(std::fs::metadata(&unconfirmed).expect("meta").len(), 32, "the torn record is cut");
        rt.block_on(c.remember_change(epoch, &Nullifier([2; 32]), "second"));
        drop(c);
        let c = open(dir.path());
        assert_eq!(rt.block_on(c.change_for(epoch, &Nullifier([1; 32]))).as_deref(), Some("first"));
        assert_eq!(
            rt.block_on(c.change_for(epoch, &Nullifier([2; 32]))).as_deref(),
            Some("second"),
            "a change appended after a torn line is not glued to it"
        );
    }

    /// Polls `f` once: a spend that got as far as queueing its record then waits on it.
    fn poll_once<F: std::future::Future>(f: &mut std::pin::Pin<Box<F>>) -> std::task::Poll<F::Output> {
        f.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    }

    /// The answer of a spend that must not wait on the (held) writer: a refusal, at once.
    fn refused_at_once(c: &Credits, epoch: u32, n: &Nullifier) -> StoreError {
        match poll_once(&mut Box::pin(c.record_nullifier(epoch, n))) {
            std::task::Poll::Ready(Err(e)) => e,
            std::task::Poll::Ready(Ok(())) => panic!("spent"),
            std::task::Poll::Pending => panic!("queued, not refused"),
        }
    }

    /// Gives `c` a writer whose records are written only once [`write_from`] runs on the
    /// returned queue: a disk that has not answered yet, as seen by the spends.
    fn hold_writes(c: &mut Credits, depth: usize) -> std::sync::mpsc::Receiver<super::super::appender::Job> {
        let (writer, rx) = Appender::channel(depth);
        c.writer = writer;
        rx
    }

    /// Starts writing what `hold_writes` held.
    fn write_from(dir: &Path, rx: std::sync::mpsc::Receiver<super::super::appender::Job>) {
        let dir = dir.join("credits");
        std::thread::spawn(move || super::super::appender::write_batches(&dir, &rx));
    }

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().expect("runtime");
        rt.block_on(f)
    }

    #[test]
    fn a_spend_is_on_disk_when_it_returns() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = open(dir.path());
        let epoch = c.issuer().expect("issuer").epoch();
        record(&c, epoch, &Nullifier([1; 32])).expect("spend");
        // Read while the store is open: the record is in the file, not in a queue.
        let path = dir.path().join(format!("credits/nullifiers-{epoch}.bin"));
        assert_eq!(std::fs::read(&path).expect("file"), [1u8; 32]);
        drop(c);
        let c = open(dir.path());
        assert!(matches!(record(&c, epoch, &Nullifier([1; 32])), Err(StoreError::Replayed)));
    }

    #[test]
    fn a_spend_in_flight_refuses_a_second_spend_of_its_nullifier() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut c = open(dir.path());
        let epoch = c.issuer().expect("issuer").epoch();
        let rx = hold_writes(&mut c, 16);
        let n = Nullifier([2; 32]);
        let mut first = Box::pin(c.record_nullifier(epoch, &n));
        assert!(poll_once(&mut first).is_pending(), "waits on its fsync");
        assert!(!c.lock().nullifiers.contains(&n.0), "not spent before its fsync");
        assert!(matches!(refused_at_once(&c, epoch, &n), StoreError::Replayed), "reserved while in flight");
        write_from(dir.path(), rx);
        block_on(first).expect("the first one is paid");
        assert!(matches!(record(&c, epoch, &n), Err(StoreError::Replayed)));
    }

    #[test]
    fn racing_spends_of_one_nullifier_pay_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = Arc::new(open(dir.path()));
        let epoch = c.issuer().expect("issuer").epoch();
        let spenders = 8;
        let start = Arc::new(std::sync::Barrier::new(spenders));
        let threads: Vec<_> = (0..spenders)
            .map(|_| {
                let (c, start) = (Arc::clone(&c), Arc::clone(&start));
                std::thread::spawn(move || {
                    start.wait();
                    record(&c, epoch, &Nullifier([3; 32]))
                })
            })
            .collect();
        let outcomes: Vec<_> = threads.into_iter().map(|t| t.join().expect("thread")).collect();
        assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 1, "{outcomes:?}");
        assert!(outcomes.iter().all(|o| matches!(o, Ok(()) | Err(StoreError::Replayed))), "{outcomes:?}");
        let path = dir.path().join(format!("credits/nullifiers-{epoch}.bin"));
        assert_eq!(std::fs::read(&path).expect("file"), [3u8; 32], "one record");
    }

    #[test]
    fn a_nullifier_that_cannot_be_written_is_not_spent() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = open(dir.path());
        let epoch = c.issuer().expect("issuer").epoch();
        // Every write to /dev/full fails (ENOSPC), as a full disk would.
        let path = dir.path().join(format!("credits/nullifiers-{epoch}.bin"));
        std::fs::remove_file(&path).expect("unlink");
        std::os::unix::fs::symlink("/dev/full", &path).expect("symlink");
        let n = Nullifier([5; 32]);
        assert!(matches!(record(&c, epoch, &n), Err(StoreError::Io(_))));
        let state = c.lock();
        assert!(!state.nullifiers.contains(&n.0), "fail closed: not in the set");
        assert!(!state.pending.contains(&n.0), "nor reserved");
        drop(state);
        std::fs::remove_file(&path).expect("unlink");
        record(&c, epoch, &n).expect("a retry, once the disk is back, spends it");
        assert_eq!(std::fs::read(&path).expect("file"), [5u8; 32]);
    }

    #[test]
    fn a_full_writer_queue_refuses_at_its_depth_and_takes_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut c = open(dir.path());
        let epoch = c.issuer().expect("issuer").epoch();
        let rx = hold_writes(&mut c, APPEND_QUEUE_MAX);
        let nullifiers: Vec<Nullifier> = (0..=APPEND_QUEUE_MAX)
            .map(|i| {
                let mut n = [0u8; 32];
                n[..8].copy_from_slice(&(i as u64).to_le_bytes());
                Nullifier(n)
            })
            .collect();
        let (queued, over) = nullifiers.split_at(APPEND_QUEUE_MAX);
        let mut waiting: Vec<_> = queued.iter().map(|n| Box::pin(c.record_nullifier(epoch, n))).collect();
        for spend in &mut waiting {
            assert!(poll_once(spend).is_pending(), "below the depth: queued");
        }
        let over = &over[0];
        assert!(matches!(refused_at_once(&c, epoch, over), StoreError::WriterBusy));
        assert!(!c.lock().pending.contains(&over.0), "refused: not reserved");
        write_from(dir.path(), rx);
        block_on(async {
            for spend in waiting {
                spend.await.expect("queued ones are paid");
            }
        });
        record(&c, epoch, over).expect("room again: the refused one can be spent");
        let path = dir.path().join(format!("credits/nullifiers-{epoch}.bin"));
        assert_eq!(std::fs::metadata(&path).expect("file").len(), ((APPEND_QUEUE_MAX + 1) * 32) as u64);
    }

    #[test]
    fn a_spend_queued_across_a_new_epoch_lands_in_its_own_epoch() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut c = open(dir.path());
        let epoch = c.issuer().expect("issuer").epoch();
        let rx = hold_writes(&mut c, 16);
        let n = Nullifier([6; 32]);
        let mut spend = Box::pin(c.record_nullifier(epoch, &n));
        assert!(poll_once(&mut spend).is_pending());
        // The clock moves on while the record waits: the state moves as `current` does.
        *c.lock() = EpochState::open(&c.dir, &c.domain, &c.seed, epoch + 1).expect("next epoch");
        write_from(dir.path(), rx);
        block_on(spend).expect("durable in its epoch's file: paid");
        let file = |e: u32| std::fs::read(dir.path().join(format!("credits/nullifiers-{e}.bin"))).expect("file");
        assert_eq!(file(epoch), [6u8; 32]);
        assert!(file(epoch + 1).is_empty(), "nothing in the new epoch's file");
        let state = c.lock();
        assert!(state.nullifiers.is_empty() && state.pending.is_empty(), "nor in its state");
        drop(state);
        assert!(matches!(record(&c, epoch, &n), Err(StoreError::Epoch)));
    }

    #[test]
    fn the_seed_file_is_created_once_and_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tmp");
        let a = open(dir.path()).public_key(1).encode();
        let b = open(dir.path()).public_key(1).encode();
        assert_eq!(a, b, "the second start reads the same seed");
        let mode = std::fs::metadata(dir.path().join("credits/issuer.seed")).expect("seed").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn one_credential_per_key_per_epoch() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = open(dir.path());
        let issuer = c.issuer().expect("issuer");
        let mut w = gatekeeper_zk::Wallet::new(c.domain().clone(), issuer.public_key());
        let req = w.request_credential(&mut rand::rngs::OsRng).expect("req").encode();
        let first = issue(&c, "key-a", 500, &req).expect("first");
        assert_eq!(issue(&c, "key-a", 500, &req).expect("same request"), first);
        let mut other = gatekeeper_zk::Wallet::new(c.domain().clone(), issuer.public_key());
        let req2 = other.request_credential(&mut rand::rngs::OsRng).expect("req").encode();
        assert_eq!(issue(&c, "key-a", 500, &req2), Err(CreditError::AlreadyIssued));
        drop(c);
        let c = open(dir.path());
        assert_eq!(issue(&c, "key-a", 500, &req2), Err(CreditError::AlreadyIssued), "after a restart");
        assert!(issue(&c, "key-b", 500, &req2).is_ok());
        let resp = gatekeeper_zk::IssuanceResponse::decode(&first).expect("resp");
        assert_eq!(w.accept_credential(&resp), Ok(500));
    }

    /// A credential request for `c`'s current epoch, encoded.
    fn credential_request(c: &Credits) -> String {
        let issuer = c.issuer().expect("issuer");
        let mut w = gatekeeper_zk::Wallet::new(c.domain().clone(), issuer.public_key());
        w.request_credential(&mut rand::rngs::OsRng).expect("req").encode()
    }

    fn issued_lines(dir: &Path, epoch: u32) -> Vec<IssuedLine> {
        let text = std::fs::read(Log::Issued.path(&dir.join("credits"), epoch)).expect("issued file");
        text.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).expect("line"))
            .collect()
    }

    #[test]
    fn an_issuance_is_on_disk_when_it_returns() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = open(dir.path());
        let epoch = c.issuer().expect("issuer").epoch();
        let req = credential_request(&c);
        let response = issue(&c, "key-a", 500, &req).expect("issued");
        // Read while the store is open: the line is in the file, not in a queue.
        let lines = issued_lines(dir.path(), epoch);
        assert_eq!(lines.len(), 1);
        assert_eq!((lines[0].key_id.as_str(), lines[0].response.as_str()), ("key-a", response.as_str()));
    }

    #[test]
    fn an_issuance_in_flight_holds_no_lock_and_refuses_a_second_for_its_key() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut c = open(dir.path());
        let epoch = c.issuer().expect("issuer").epoch();
        let rx = hold_writes(&mut c, 16);
        let c = Arc::new(c);
        let req = credential_request(&c);
        let first = {
            let (c, req) = (Arc::clone(&c), req.clone());
            std::thread::spawn(move || issue(&c, "key-a", 500, &req))
        };
        let job = rx.recv_timeout(std::time::Duration::from_secs(30)).expect("the line is queued");
        // The line was queued under the lock; the lock is let go right after, while
        // the write (held here) has not happened.
        let free = (0..1_000).any(|_| {
            let free = c.state.try_lock().is_ok();
            if !free {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            free
        });
        assert!(free, "no lock held while the line is written");
        {
            let state = c.lock();
            assert!(state.issuing.contains("key-a") && !state.issued.contains_key("key-a"), "reserved, not issued");
        }
        assert_eq!(issue(&c, "key-a", 500, &req), Err(CreditError::StoreUnavailable), "in flight: retry");
        let (tx, writes) = std::sync::mpsc::sync_channel(1);
        tx.send(job).expect("forward");
        drop(tx);
        let credits = dir.path().join("credits");
        std::thread::spawn(move || super::super::appender::write_batches(&credits, &writes));
        let response = first.join().expect("thread").expect("the first one is issued");
        assert_eq!(issue(&c, "key-a", 500, &req), Ok(response), "the same request, answered again");
        assert_eq!(issued_lines(dir.path(), epoch).len(), 1, "one line for the key");
        assert!(c.lock().issuing.is_empty());
    }

    #[test]
    fn an_issuance_that_cannot_be_written_issues_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = open(dir.path());
        let epoch = c.issuer().expect("issuer").epoch();
        // Every write to /dev/full fails (ENOSPC), as a full disk would.
        let path = Log::Issued.path(&dir.path().join("credits"), epoch);
        std::fs::remove_file(&path).expect("unlink");
        std::os::unix::fs::symlink("/dev/full", &path).expect("symlink");
        let req = credential_request(&c);
        assert_eq!(issue(&c, "key-a", 500, &req), Err(CreditError::StoreUnavailable));
        {
            let state = c.lock();
            assert!(!state.issued.contains_key("key-a") && state.issuing.is_empty(), "nothing issued or reserved");
        }
        std::fs::remove_file(&path).expect("unlink");
        let response = issue(&c, "key-a", 500, &req).expect("a retry, once the disk is back, is issued");
        assert_eq!(issued_lines(dir.path(), epoch)[0].response, response);
    }

    #[test]
    fn an_issuance_refused_by_a_full_writer_queue_reserves_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut c = open(dir.path());
        let epoch = c.issuer().expect("issuer").epoch();
        let rx = hold_writes(&mut c, 1);
        // One spend's record fills the queue of depth 1.
        let mut spend = Box::pin(c.record_nullifier(epoch, &Nullifier([4; 32])));
        assert!(poll_once(&mut spend).is_pending());
        let req = credential_request(&c);
        assert_eq!(issue(&c, "key-a", 500, &req), Err(CreditError::StoreUnavailable), "queue full: 503");
        {
            let state = c.lock();
            assert!(state.issuing.is_empty() && !state.issued.contains_key("key-a"), "nothing reserved or issued");
        }
        write_from(dir.path(), rx);
        block_on(spend).expect("the queued spend is paid");
        assert!(issue(&c, "key-a", 500, &req).is_ok(), "room again: issued");
        assert_eq!(issued_lines(dir.path(), epoch).len(), 1);
    }

    #[test]
    fn a_dropped_issuance_releases_its_key_and_the_retry_is_the_one_that_counts() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut c = open(dir.path());
        let epoch = c.issuer().expect("issuer").epoch();
        let rx = hold_writes(&mut c, 16);
        let req = credential_request(&c);
        // Dropped (timed out) while its line waits for the held writer.
        let wait = std::time::Duration::from_millis(300);
        let dropped = block_on(async {
            monoio::time::timeout(wait, c.issue("key-a", Allowance { credits: 500, clamped: false }, &req)).await
        });
        assert!(dropped.is_err(), "still waiting on its write when dropped");
        assert!(c.lock().issuing.is_empty(), "the reservation left with the future");
        write_from(dir.path(), rx);
        let response = issue(&c, "key-a", 500, &req).expect("the retry is issued");
        assert_eq!(issued_lines(dir.path(), epoch).len(), 2, "the dropped line landed too");
        drop(c);
        let c = open(dir.path());
        assert_eq!(issue(&c, "key-a", 500, &req), Ok(response), "after a restart the later line counts");
    }

    #[test]
    fn a_credential_of_other_params_does_not_count_against_the_key() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = open(dir.path());
        let issuer = c.issuer().expect("issuer");
        let epoch = issuer.epoch();
        drop(c);
        // What an L = 32 build wrote (no params_version field) and a later build's line.
        let path = dir.path().join(format!("credits/issued-{epoch}.jsonl"));
        let old = r#"{"key_id":"key-a","request_hash":"00","response":"old"}"#;
        let later = r#"{"key_id":"key-b","request_hash":"00","response":"x","params_version":"2099-01-01"}"#;
        std::fs::write(&path, format!("{old}\n{later}\n")).expect("write");
        let c = open(dir.path());
        for key in ["key-a", "key-b"] {
            let mut w = gatekeeper_zk::Wallet::new(c.domain().clone(), issuer.public_key());
            let req = w.request_credential(&mut rand::rngs::OsRng).expect("req").encode();
            let resp = issue(&c, key, 500, &req).expect("a credential of these params");
            let resp = gatekeeper_zk::IssuanceResponse::decode(&resp).expect("resp");
            assert_eq!(w.accept_credential(&resp), Ok(500));
        }
        drop(c);
        let c = open(dir.path());
        let mut w = gatekeeper_zk::Wallet::new(c.domain().clone(), issuer.public_key());
        let req = w.request_credential(&mut rand::rngs::OsRng).expect("req").encode();
        assert_eq!(issue(&c, "key-a", 500, &req), Err(CreditError::AlreadyIssued), "the new one counts");
    }

    #[test]
    fn allowances_convert_tokens_to_credits_and_clamp_visibly() {
        use crate::keys::Claims;
        let max = gatekeeper_zk::CREDITS_MAX;
        let claims = |zk: Option<u64>, per_day: Option<u64>| {
            let mut c = Claims { zk_credits: zk, ..Claims::default() };
            c.budget.tokens_per_day = per_day;
            c
        };
        let a = |credits, clamped| Allowance { credits, clamped };
        let day = EpochLength::Day;
        // Unit 1: tokens are credits.
        assert_eq!(allowance_of(&claims(None, Some(2_000_000)), day, 100_000, 1), a(2_000_000, false));
        assert_eq!(allowance_of(&claims(None, Some(max)), day, 100_000, 1), a(max, false));
        assert_eq!(allowance_of(&claims(None, Some(max + 1)), day, 100_000, 1), a(max, true));
        // Unit 1,000: the daily tokens round up to whole credits.
        assert_eq!(allowance_of(&claims(None, Some(50_000_000)), day, 100_000, 1_000), a(50_000, false));
        assert_eq!(allowance_of(&claims(None, Some(50_000_001)), day, 100_000, 1_000), a(50_001, false));
        assert_eq!(allowance_of(&claims(None, Some(999)), day, 100_000, 1_000), a(1, false));
        assert_eq!(allowance_of(&claims(None, Some(0)), day, 100_000, 1_000), a(1, false), "at least 1");
        // A budget that did not fit 24 bits fits with the unit.
        assert_eq!(allowance_of(&claims(None, Some(10 * max)), day, 100_000, 1_000), a(10 * max / 1_000 + 1, false));
        assert_eq!(allowance_of(&claims(None, Some(u64::MAX)), day, 100_000, 1_000), a(max, true));
        // Hourly epochs: a 24th of the day, rounded up, then the unit.
        assert_eq!(allowance_of(&claims(None, Some(24_000)), EpochLength::Hour, 100_000, 1), a(1_000, false));
        assert_eq!(allowance_of(&claims(None, Some(24_001)), EpochLength::Hour, 100_000, 1), a(1_001, false));
        assert_eq!(allowance_of(&claims(None, Some(24_000_001)), EpochLength::Hour, 100_000, 1_000), a(1_001, false));
        // zk_credits and credits_per_epoch are credits already: the unit does not apply.
        assert_eq!(allowance_of(&claims(Some(7), Some(50_000_000)), day, 100_000, 1_000), a(7, false));
        assert_eq!(allowance_of(&claims(Some(max + 1), None), day, 100_000, 1_000), a(max, true));
        assert_eq!(allowance_of(&claims(None, None), day, 100_000, 1_000), a(100_000, false));
        assert_eq!(allowance_of(&claims(None, None), day, max, 1_000), a(max, false));
    }
}
