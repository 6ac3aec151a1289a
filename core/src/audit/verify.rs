//! Verifying stored chains: every entry linked, numbered and canonical, every
//! checkpoint signed by a trusted key and matching the entries before it.
//!
//! Feed each stored message, in stored order, to [`Audit::feed`]; [`Audit::finish`]
//! gives the [`Summary`] or the first [`Failure`]. What each tamper shows up as:
//!
//! | tamper | first failure |
//! |---|---|
//! | an entry's bytes modified | that entry: its hash no longer matches the next entry's `prev` (or, for the newest entry, the checkpoint's head), or it is no longer canonical |
//! | an entry deleted | the missing `seq` |
//! | entries reordered | the first position holding the wrong `seq` |
//! | an entry inserted | the inserted position (`seq` repeated, or chain/prev mismatch) |
//! | entries truncated before a checkpoint | the first missing `seq` the checkpoint covers |
//! | a checkpoint altered or re-signed | that checkpoint |
//!
//! Entries after a chain's last checkpoint are linked but not signed: removing them
//! cannot be detected, which is why the bridge checkpoints every
//! `audit.checkpoint_every` entries, every `audit.checkpoint_interval_ms` and at shutdown.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use super::chain::{ChainState, EntryView};
use super::checkpoint::Checkpoint;
use super::merkle::to_hex;
use super::message::Message;

/// The first thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{chain} entry {entry}: {reason} (at {location})")]
pub struct Failure {
    /// `node/inst`.
    pub chain: String,
    /// The first bad entry's `seq` (for a checkpoint, the entry it is about).
    pub entry: u64,
    /// Where it was read: `file:line` or `stream BH_AUDIT seq N`.
    pub location: String,
    /// What is wrong.
    pub reason: String,
}

/// What verified.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Chains (node instances).
    pub instances: u64,
    /// Entries across all chains.
    pub entries: u64,
    /// Checkpoints across all chains.
    pub checkpoints: u64,
    /// Chains whose newest entries no checkpoint covers (a crash, or still running), as
    /// `node/inst (n unsigned entries)`.
    pub open_tails: Vec<String>,
    /// Whether signatures were checked against `audit.node_public_keys`
    /// (false: only against the key each checkpoint names).
    pub keys_trusted: bool,
    /// Checkpoints a witness file holds, each found in the log (`None`: no witness given).
    pub witnessed: Option<u64>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ok: {} instances, {} entries, {} checkpoints", self.instances, self.entries, self.checkpoints)?;
        if let Some(n) = self.witnessed {
            write!(f, "; the log holds all {n} checkpoints the witness saw")?;
        }
        if !self.keys_trusted {
            write!(f, " (signatures checked against the keys the checkpoints carry; pass trusted keys to pin them)")?;
        }
        for t in &self.open_tails {
            write!(f, "\n  note: {t}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct ChainCheck {
    state: ChainState,
    checkpoints: u64,
    covered: u64,
    closed: bool,
    /// Root of every verified checkpoint, by the entries it covers.
    roots: BTreeMap<u64, String>,
}

/// A verification in progress over any number of chains.
#[derive(Debug, Default)]
pub struct Audit {
    trusted: HashSet<String>,
    chains: BTreeMap<(String, String), ChainCheck>,
}

impl Audit {
    /// A verifier trusting `trusted_keys` (PASERK `k4.public.…`); empty trusts the key
    /// each checkpoint carries (integrity only, not authorship).
    pub fn new<I: IntoIterator<Item = String>>(trusted_keys: I) -> Audit {
        Audit { trusted: trusted_keys.into_iter().map(|k| k.trim().to_string()).collect(), chains: BTreeMap::new() }
    }

    /// Checks one stored message. `chain_hint` is what the store says the chain is
    /// (the subject's `node/inst`, or the file's); `location` names it in failures.
    pub fn feed(&mut self, bytes: &[u8], chain_hint: Option<(&str, &str)>, location: &str) -> Result<(), Failure> {
        let fail = |chain: String, entry: u64, reason: String| Failure {
            chain,
            entry,
            location: location.to_string(),
            reason,
        };
        let msg: Message = match serde_json::from_slice(bytes) {
            Ok(m) => m,
            Err(e) => {
                let chain = chain_hint.map(|(n, i)| format!("{n}/{i}")).unwrap_or_else(|| "?".into());
                let entry = chain_hint
                    .and_then(|(n, i)| self.chains.get(&(n.to_string(), i.to_string())))
                    .map_or(1, |c| c.state.seq + 1);
                return Err(fail(chain, entry, format!("unreadable message: {e}")));
            }
        };
        let name = format!("{}/{}", msg.node, msg.inst);
        if let Some((n, i)) = chain_hint {
            if (n, i) != (msg.node.as_str(), msg.inst.as_str()) {
                return Err(fail(
                    format!("{n}/{i}"),
                    0,
                    format!("message of chain {name} stored under {n}/{i} (moved)"),
                ));
            }
        }
        let check = self.chains.entry((msg.node.clone(), msg.inst.clone())).or_default();
        for raw in &msg.entries {
            let expected = check.state.seq + 1;
            let bytes = raw.get().as_bytes();
            let Some(e) = EntryView::parse(bytes) else {
                return Err(fail(name, expected, "not a canonical entry (modified)".into()));
            };
            if (e.node, e.inst) != (msg.node.as_str(), msg.inst.as_str()) {
                return Err(fail(name, expected, format!("holds an entry of chain {}/{} (inserted)", e.node, e.inst)));
            }
            if check.closed {
                return Err(fail(name, e.seq, "entry after the instance's final checkpoint (inserted)".into()));
            }
            if e.seq > expected {
                return Err(fail(
                    name,
                    expected,
                    format!("missing: found entry {} in its place (deleted or reordered)", e.seq),
                ));
            }
            if e.seq < expected {
                return Err(fail(
                    name,
                    e.seq,
                    format!("appears again after entry {} (inserted, duplicated or reordered)", expected - 1),
                ));
            }
            if e.prev_hash() != check.state.head {
                return Err(if expected == 1 {
                    fail(name, 1, "first entry does not start from the genesis hash (modified)".into())
                } else {
                    fail(
                        name,
                        expected - 1,
                        format!("its hash does not match entry {expected}'s prev (entry {} modified, or entry {expected} forged)", expected - 1),
                    )
                });
            }
            check.state.push(bytes);
        }
        if let Some(c) = &msg.checkpoint {
            let at = c.size;
            if (c.node.as_str(), c.inst.as_str()) != (msg.node.as_str(), msg.inst.as_str()) {
                return Err(fail(name, at, format!("checkpoint of chain {}/{} (inserted)", c.node, c.inst)));
            }
            if let Err(why) = c.verify_signature() {
                return Err(fail(name, at, format!("checkpoint {why} (checkpoint altered)")));
            }
            if !self.trusted.is_empty() && !self.trusted.contains(&c.key) {
                return Err(fail(name, at, format!("checkpoint signed by untrusted key {}", c.key)));
            }
            if check.closed {
                return Err(fail(name, at, "checkpoint after the instance's final checkpoint (inserted)".into()));
            }
            let have = check.state.seq;
            if c.size > have {
                return Err(fail(
                    name,
                    have + 1,
                    format!(
                        "missing: the checkpoint covers {} entries but only {have} precede it (deleted or truncated)",
                        c.size
                    ),
                ));
            }
            if c.size < have {
                return Err(fail(
                    name,
                    c.size + 1,
                    format!("not covered by the checkpoint that follows it, which covers {} (inserted)", c.size),
                ));
            }
            if c.head != to_hex(&check.state.head) {
                return Err(fail(name, have, "hash does not match the checkpoint's head (modified)".into()));
            }
            if c.root != to_hex(&check.state.tree.root()) {
                return Err(fail(
                    name,
                    have,
                    "Merkle root of entries 1..=this does not match the checkpoint (modified)".into(),
                ));
            }
            check.checkpoints += 1;
            check.roots.insert(c.size, c.root.clone());
            check.covered = c.size;
            check.closed = c.last;
        }
        Ok(())
    }

    /// Checks that the log fed so far holds a checkpoint a witness saw: same chain,
    /// same size, same root. A log cut back together with the checkpoints covering
    /// its tail fails here, though it verifies on its own.
    pub fn witness(&self, c: &Checkpoint, location: &str) -> Result<(), Failure> {
        let name = format!("{}/{}", c.node, c.inst);
        let fail =
            |entry: u64, reason: String| Failure { chain: name.clone(), entry, location: location.into(), reason };
        if let Err(why) = c.verify_signature() {
            return Err(fail(c.size, format!("witnessed checkpoint {why}")));
        }
        if !self.trusted.is_empty() && !self.trusted.contains(&c.key) {
            return Err(fail(c.size, format!("witnessed checkpoint signed by untrusted key {}", c.key)));
        }
        let Some(check) = self.chains.get(&(c.node.clone(), c.inst.clone())) else {
            return Err(fail(
                1,
                format!("the witness saw {} entries of this chain; the log has none (deleted)", c.size),
            ));
        };
        match check.roots.get(&c.size) {
            Some(root) if *root == c.root => Ok(()),
            Some(_) => {
                Err(fail(c.size, "the log's checkpoint differs from the one the witness saw (rewritten)".into()))
            }
            None if check.state.seq < c.size => Err(fail(
                check.state.seq + 1,
                format!(
                    "missing: the witness saw {} entries, the log has {} (truncated with its checkpoints)",
                    c.size, check.state.seq
                ),
            )),
            None => Err(fail(c.size, "the log lacks the checkpoint the witness saw (rewritten)".into())),
        }
    }

    /// Checks every checkpoint in a witness file (JSON lines) against the log fed so
    /// far; returns how many there were.
    pub fn witness_file(&self, path: &Path) -> Result<u64, VerifyError> {
        let text = std::fs::read(path).map_err(|source| VerifyError::Io { path: path.to_path_buf(), source })?;
        let mut n = 0;
        for (i, line) in text.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let location = format!("{}:{}", path.display(), i + 1);
            let c: Checkpoint = serde_json::from_slice(line).map_err(|e| Failure {
                chain: "?".into(),
                entry: 0,
                location: location.clone(),
                reason: format!("unreadable witness line: {e}"),
            })?;
            self.witness(&c, &location)?;
            n += 1;
        }
        Ok(n)
    }

    /// The summary once every message was fed.
    pub fn finish(self) -> Summary {
        let mut s = Summary { keys_trusted: !self.trusted.is_empty(), ..Summary::default() };
        for ((node, inst), c) in &self.chains {
            s.instances += 1;
            s.entries += c.state.seq;
            s.checkpoints += c.checkpoints;
            let unsigned = c.state.seq - c.covered;
            if !c.closed && unsigned > 0 {
                s.open_tails.push(format!("{node}/{inst}: {unsigned} newest entries not yet under a checkpoint"));
            } else if !c.closed {
                s.open_tails.push(format!("{node}/{inst}: no final checkpoint (crashed or still running)"));
            }
        }
        s
    }
}

/// Chain files under `dir`: `dir/audit/*.jsonl` when that exists, else `dir/*.jsonl`.
pub fn chain_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let audit = dir.join("audit");
    let base = if audit.is_dir() { audit } else { dir.to_path_buf() };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&base)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    Ok(files)
}

/// Why a directory could not be verified.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A chain failed.
    #[error(transparent)]
    Failed(#[from] Failure),
    /// Files could not be read.
    #[error("{path}: {source}")]
    Io {
        /// Which.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// Verifies every chain file under `dir` (see [`chain_files`]).
pub fn verify_dir(dir: &Path, trusted_keys: Vec<String>) -> Result<Summary, VerifyError> {
    verify_dir_witnessed(dir, trusted_keys, None)
}

/// [`verify_dir`], then every checkpoint of `witness` (a `audit.witness_file`) must be
/// in the log.
pub fn verify_dir_witnessed(
    dir: &Path,
    trusted_keys: Vec<String>,
    witness: Option<&Path>,
) -> Result<Summary, VerifyError> {
    let files = chain_files(dir).map_err(|source| VerifyError::Io { path: dir.to_path_buf(), source })?;
    let mut audit = Audit::new(trusted_keys);
    for file in files {
        let text = std::fs::read(&file).map_err(|source| VerifyError::Io { path: file.clone(), source })?;
        // `<node>.<inst>.jsonl`: the store's own say of which chain the file holds.
        let stem = file.file_name().and_then(|s| s.to_str()).and_then(|s| s.strip_suffix(".jsonl")).unwrap_or("");
        let hint = stem.split_once('.');
        for (i, line) in text.split(|b| *b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            audit.feed(line, hint, &format!("{}:{}", file.display(), i + 1))?;
        }
    }
    let witnessed = witness.map(|w| audit.witness_file(w)).transpose()?;
    Ok(Summary { witnessed, ..audit.finish() })
}
