//! The node's credit state: the deployment parameters, the issuer seed, and per epoch the
//! issuer key, the set of spent nullifiers and the record of issued credentials, both
//! persisted under `<audit.data_dir>/credits/` and fsync'd before a spend or an issuance
//! is answered.
//!
//! One mutex guards the epoch state, shared by every shard: it is taken only by
//! credit-paid requests and issuance, for a set lookup and an append + fsync, never for
//! proof verification (the exception to "no lock shared between shards" is deliberate:
//! a nullifier must be unique across the node's shards, and the fsync dominates anyway).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use gatekeeper_zk::{Domain, EpochLength, Issuer, IssuerSeed, Nullifier, PublicKey};

use super::error::CreditError;
use crate::audit::private;
use crate::config::{CreditsConfig, CreditsEpoch};

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
    /// `BH_CREDITS` could not confirm the nullifier (NATS down, queue full, timeout).
    #[error("shared nullifier store: {0}")]
    Shared(String),
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
    claim_timeout: std::time::Duration,
    /// With NATS: the bridge's claim queue (`bridge/credits.rs`), set once at start.
    shared: std::sync::OnceLock<crate::bridge::credits::ClaimSender>,
    state: Mutex<EpochState>,
}

struct EpochState {
    epoch: u32,
    issuer: Arc<Issuer>,
    nullifiers: HashSet<[u8; 32]>,
    nullifier_log: File,
    /// Key id → (hash of the issuance request, response text).
    issued: HashMap<String, (String, String)>,
    issued_log: File,
    /// Nullifier → the change its spend got (for a wallet that lost it).
    changes: HashMap<[u8; 32], String>,
    changes_log: File,
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
}

fn unix_now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
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
        let epoch = epoch_len.epoch_at(unix_now_s());
        let state = EpochState::open(&dir, &domain, &seed, epoch)?;
        Ok(Credits {
            domain,
            seed,
            epoch_len,
            dir,
            credits_per_epoch: config.credits_per_epoch,
            max_tokens_default: config.max_tokens_default,
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

    /// `credits.max_tokens_default`.
    pub fn max_tokens_default(&self) -> u64 {
        self.max_tokens_default
    }

    /// Credits for a key per epoch: its `zk_credits` claim, else `budget.tokens_per_day`
    /// (scaled to the epoch), else `credits.credits_per_epoch`; capped to the balance width.
    pub fn allowance(&self, claims: &crate::keys::Claims) -> u64 {
        let per_epoch = match (claims.zk_credits, claims.budget.tokens_per_day, self.epoch_len) {
            (Some(c), _, _) => c,
            (None, Some(d), EpochLength::Day) => d,
            (None, Some(d), EpochLength::Hour) => d.div_ceil(24),
            (None, None, _) => self.credits_per_epoch,
        };
        per_epoch.clamp(1, gatekeeper_zk::CREDITS_MAX)
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

    /// The current epoch's state, moved to a new epoch when the clock has.
    fn current(&self) -> Result<std::sync::MutexGuard<'_, EpochState>, StoreError> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = self.epoch_len.epoch_at(unix_now_s());
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
    /// doubt is an error and the nullifier is not taken.
    pub async fn record_nullifier(&self, epoch: u32, nullifier: &Nullifier) -> Result<(), StoreError> {
        {
            let state = self.current()?;
            if epoch != state.epoch {
                return Err(StoreError::Epoch);
            }
            if state.nullifiers.contains(&nullifier.0) {
                return Err(StoreError::Replayed);
            }
            let Some(_) = self.shared.get() else { return append(state, nullifier) };
        }
        // The lock is not held across the wait: other shards' spends go on meanwhile,
        // and the KV create decides between two racing spends of one nullifier.
        let key = crate::bridge::credits::nullifier_key(epoch, &nullifier.0);
        match self.claim(key, b"1".to_vec(), false).await? {
            crate::bridge::credits::ClaimOutcome::Created => {}
            crate::bridge::credits::ClaimOutcome::Exists(_) => return Err(StoreError::Replayed),
        }
        let state = self.current()?;
        if state.nullifiers.contains(&nullifier.0) {
            return Err(StoreError::Replayed);
        }
        append(state, nullifier)
    }

    async fn claim(
        &self,
        key: String,
        value: Vec<u8>,
        fetch_existing: bool,
    ) -> Result<crate::bridge::credits::ClaimOutcome, StoreError> {
        let Some(tx) = self.shared.get() else { return Err(StoreError::Shared("not connected".into())) };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let claim = crate::bridge::credits::Claim { key, value, fetch_existing, reply };
        if tx.try_send(claim).is_err() {
            return Err(StoreError::Shared("claim queue full".into()));
        }
        match monoio::time::timeout(self.claim_timeout, answer).await {
            Ok(Ok(outcome)) => outcome.map_err(StoreError::Shared),
            Ok(Err(_)) => Err(StoreError::Shared("bridge stopped".into())),
            Err(_) => Err(StoreError::Shared("timed out".into())),
        }
    }

    /// Keeps the change a spend got, so a repeat of the spend can hand it back. Best
    /// effort (not fsync'd): it only helps a wallet recover, it guards nothing.
    pub fn remember_change(&self, epoch: u32, nullifier: &Nullifier, change: &str) {
        let Ok(mut state) = self.current() else { return };
        if state.epoch != epoch {
            return;
        }
        let line = ChangeLine { nullifier: nullifier.to_hex(), change: change.to_string() };
        if let Ok(mut text) = serde_json::to_vec(&line) {
            text.push(b'\n');
            let _ = state.changes_log.write_all(&text);
        }
        state.changes.insert(nullifier.0, line.change);
    }

    /// The change recorded for `nullifier`'s spend, if any.
    pub fn change_for(&self, epoch: u32, nullifier: &Nullifier) -> Option<String> {
        let state = self.current().ok()?;
        (state.epoch == epoch).then(|| state.changes.get(&nullifier.0).cloned()).flatten()
    }

    /// Issues `credits` to `key_id` for the request `request_text`, at most once per key
    /// per epoch (with NATS, across nodes: a `BH_CREDITS` key per key id and epoch): the
    /// same request again gets the same response (a retried issuance cannot strand a
    /// credential); another request gets `AlreadyIssued`.
    pub async fn issue(&self, key_id: &str, credits: u64, request_text: &str) -> Result<String, CreditError> {
        let request = gatekeeper_zk::IssuanceRequest::decode(request_text)
            .map_err(|_| CreditError::BadIssuanceRequest("`request` is not a credential request"))?;
        let request_hash: String = {
            use sha2::Digest as _;
            sha2::Sha256::digest(request_text.trim().as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
        };
        let mut line = {
            let state = self.current().map_err(|_| CreditError::StoreUnavailable)?;
            if request.epoch() != state.epoch {
                return Err(CreditError::EpochExpired);
            }
            if let Some(answer) = state.issued_answer(key_id, &request_hash) {
                return answer;
            }
            let response = state
                .issuer
                .issue(&request, credits, &mut rand::rngs::OsRng)
                .map_err(|_| CreditError::BadIssuanceRequest("the request's proof does not verify"))?
                .encode();
            IssuedLine { key_id: key_id.to_string(), request_hash: request_hash.clone(), response }
        };
        if self.shared.get().is_some() {
            let key = crate::bridge::credits::issued_key(request.epoch(), key_id);
            let value =
                serde_json::to_vec(&(&line.request_hash, &line.response)).map_err(|_| CreditError::StoreUnavailable)?;
            match self.claim(key, value, true).await {
                Ok(crate::bridge::credits::ClaimOutcome::Created) => {}
                Ok(crate::bridge::credits::ClaimOutcome::Exists(Some(v))) => {
                    // Another node (or shard) issued first: its record is the one that counts.
                    let (hash, response): (String, String) =
                        serde_json::from_slice(&v).map_err(|_| CreditError::StoreUnavailable)?;
                    line.request_hash = hash;
                    line.response = response;
                }
                _ => return Err(CreditError::StoreUnavailable),
            }
        }
        let mut state = self.current().map_err(|_| CreditError::StoreUnavailable)?;
        if let Some(answer) = state.issued_answer(key_id, &request_hash) {
            return answer;
        }
        let mut text = serde_json::to_vec(&line).map_err(|_| CreditError::StoreUnavailable)?;
        text.push(b'\n');
        let written = state.issued_log.write_all(&text).and_then(|()| state.issued_log.sync_data());
        if written.is_err() {
            return Err(CreditError::StoreUnavailable);
        }
        let answer =
            if line.request_hash == request_hash { Ok(line.response.clone()) } else { Err(CreditError::AlreadyIssued) };
        state.issued.insert(line.key_id, (line.request_hash, line.response));
        answer
    }
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
        let path = dir.join(format!("nullifiers-{epoch}.bin"));
        let mut nullifier_log = private::options().read(true).append(true).create(true).open(&path)?;
        let mut bytes = Vec::new();
        nullifier_log.read_to_end(&mut bytes)?;
        // A torn last record was never acknowledged (its fsync did not return): drop it.
        let whole = bytes.len() - bytes.len() % NULLIFIER_RECORD_BYTES;
        if whole != bytes.len() {
            nullifier_log.set_len(whole as u64)?;
        }
        let nullifiers =
            bytes[..whole].chunks_exact(NULLIFIER_RECORD_BYTES).filter_map(|c| <[u8; 32]>::try_from(c).ok()).collect();
        let path = dir.join(format!("issued-{epoch}.jsonl"));
        let issued_log = private::options().read(true).append(true).create(true).open(&path)?;
        let mut issued = HashMap::new();
        for line in std::io::BufReader::new(&issued_log).lines() {
            // A torn last line was never acknowledged; skip what does not parse.
            if let Ok(l) = serde_json::from_str::<IssuedLine>(&line?) {
                issued.insert(l.key_id, (l.request_hash, l.response));
            }
        }
        let path = dir.join(format!("changes-{epoch}.jsonl"));
        let changes_log = private::options().read(true).append(true).create(true).open(&path)?;
        let mut changes = HashMap::new();
        for line in std::io::BufReader::new(&changes_log).lines() {
            if let Ok(l) = serde_json::from_str::<ChangeLine>(&line?) {
                if let Some(n) = crate::config::credits::parse_seed(&l.nullifier) {
                    changes.insert(n, l.change);
                }
            }
        }
        Ok(EpochState { epoch, issuer, nullifiers, nullifier_log, issued, issued_log, changes, changes_log })
    }
}

/// Appends `nullifier` to the epoch's file, fsyncs, then adds it to the set.
fn append(mut state: std::sync::MutexGuard<'_, EpochState>, nullifier: &Nullifier) -> Result<(), StoreError> {
    state.nullifier_log.write_all(&nullifier.0)?;
    state.nullifier_log.sync_data()?;
    state.nullifiers.insert(nullifier.0);
    Ok(())
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
            .or_else(|| name.strip_prefix("changes-").and_then(|n| n.strip_suffix(".jsonl")));
        if number.and_then(|n| n.parse::<u32>().ok()).is_some_and(|n| n < epoch) {
            let _ = std::fs::remove_file(entry.path());
        }
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
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().expect("runtime");
        rt.block_on(c.issue(key, credits, req))
    }

    fn record(c: &Credits, epoch: u32, n: &Nullifier) -> Result<(), StoreError> {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().expect("runtime");
        rt.block_on(c.record_nullifier(epoch, n))
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
    fn a_nullifier_that_cannot_be_written_is_not_spent() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = open(dir.path());
        let epoch = c.issuer().expect("issuer").epoch();
        // Every write to /dev/full fails (ENOSPC), as a full disk would.
        c.state.lock().expect("state").nullifier_log =
            std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
        let n = Nullifier([5; 32]);
        assert!(matches!(record(&c, epoch, &n), Err(StoreError::Io(_))));
        assert!(!c.state.lock().expect("state").nullifiers.contains(&n.0), "fail closed: not in the set either");
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
}
