//! Credit nullifiers across nodes: shards hand claims to the bridge through a bounded
//! queue; the bridge creates one `BH_CREDITS` key per nullifier with JetStream KV
//! `create` (atomic across nodes: exactly one node's create succeeds), batching what is
//! queued (drain up to [`BATCH_MAX`], issue the operations concurrently), and answers
//! each claim on its own oneshot channel. The same queue carries the change a spend got
//! (`put` of `c.<epoch>.<hex>`, so any node can hand it back to a repeated spend) and
//! the lookups of it.

use std::time::Duration;

use async_nats::jetstream::kv::CreateErrorKind;
use tokio::sync::{mpsc, oneshot};

use super::nats;
use crate::config::NatsConfig;

/// Claims one drain sends at once.
pub const BATCH_MAX: usize = 64;
/// Claims a node may have queued for the bridge; past it a spend is answered as if the
/// store were down (strict: 503).
pub const QUEUE_MAX: usize = 4_096;

/// What the shard learns about a claimed key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// This node created the key: first, across every node (or, for [`Op::Put`], stored).
    Created,
    /// The key exists (another node, or this one earlier, created it), with its value
    /// when the claim asked for it. For [`Op::Get`]: the value, `None` when absent.
    Exists(Option<Vec<u8>>),
}

/// What to do with a claim's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `create`: atomic across nodes; an existing key is `Exists(None)`.
    Create,
    /// `create`, and an existing key's value comes back: `Exists(Some(value))`.
    CreateOrFetch,
    /// `put` (the key is written once: a spend's change).
    Put,
    /// `get`: `Exists(value)`.
    Get,
}

/// One key to create: a spent nullifier (`n.<epoch>.<hex>`) or a key's credential of an
/// epoch (`i.<epoch>.<sha256 of the key id>`).
pub struct Claim {
    /// The KV key.
    pub key: String,
    /// Its value.
    pub value: Vec<u8>,
    /// What to do with it.
    pub op: Op,
    /// Where the outcome goes; an error says the store could not be asked.
    pub reply: oneshot::Sender<Result<ClaimOutcome, String>>,
}

/// The shards' end of the claim queue.
pub type ClaimSender = mpsc::Sender<Claim>;

/// A bounded claim queue.
pub fn queue() -> (ClaimSender, mpsc::Receiver<Claim>) {
    mpsc::channel(QUEUE_MAX)
}

/// The job's settings.
pub(super) struct Job {
    /// Claims from the shards.
    pub rx: mpsc::Receiver<Claim>,
    /// How long a nullifier key is kept (two epochs).
    pub max_age: Duration,
}

/// The KV key of a spent nullifier.
pub fn nullifier_key(epoch: u32, nullifier: &[u8; 32]) -> String {
    let mut k = format!("n.{epoch}.");
    for b in nullifier {
        k.push_str(&format!("{b:02x}"));
    }
    k
}

/// The KV key of the change a spent nullifier's spend got.
pub fn change_key(epoch: u32, nullifier: &[u8; 32]) -> String {
    let mut k = format!("c.{epoch}.");
    for b in nullifier {
        k.push_str(&format!("{b:02x}"));
    }
    k
}

/// The KV key of a key id's credential for an epoch and the protocol parameters
/// (`gatekeeper_zk::PARAMS_VERSION` and the id hashed: any bytes). A credential of other
/// parameters (a build before an upgrade) has another key, so it does not count against
/// the key: it cannot be spent under these.
pub fn issued_key(epoch: u32, key_id: &str) -> String {
    use sha2::Digest as _;
    let mut k = format!("i.{epoch}.");
    let mut h = sha2::Sha256::new();
    h.update(gatekeeper_zk::PARAMS_VERSION.as_bytes());
    h.update([0u8]);
    h.update(key_id.as_bytes());
    for b in h.finalize() {
        k.push_str(&format!("{b:02x}"));
    }
    k
}

/// Answers claims until the queue closes. Until the bucket opens, claims are answered
/// with an error (the shard fails closed or, in soft mode, counts on its local set).
pub(super) async fn run(client: async_nats::Client, n: NatsConfig, job: Job) {
    let Job { mut rx, max_age } = job;
    let js = async_nats::jetstream::new(client.clone());
    let mut store = None;
    let mut batch = Vec::with_capacity(BATCH_MAX);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        // While disconnected the client would buffer the creates and send them on
        // reconnection, after the shard gave up waiting: a nullifier recorded for a spend
        // that was refused. Refuse at once instead (the spend stays unspent).
        if client.connection_state() != async_nats::connection::State::Connected {
            for c in batch.drain(..) {
                let _ = c.reply.send(Err("NATS disconnected".into()));
            }
            continue;
        }
        // A create whose shard stopped waiting (its claim timed out, and the spend was
        // refused or taken on the local set) must not land later: it would record a
        // nullifier, on every node, for a spend this node did not serve as a created one.
        batch.retain(|c| !abandoned(c));
        if batch.is_empty() {
            continue;
        }
        if store.is_none() {
            match nats::credits_bucket(&js, &n, max_age).await {
                Ok(s) => store = Some(s),
                Err(e) => tracing::warn!(error = %e, "BH_CREDITS unavailable"),
            }
        }
        let Some(kv) = &store else {
            for c in batch.drain(..) {
                let _ = c.reply.send(Err("BH_CREDITS unavailable".into()));
            }
            continue;
        };
        let creates = batch.iter().map(|c| async {
            let value = || bytes::Bytes::from(c.value.clone());
            match c.op {
                Op::Put => kv.put(&c.key, value()).await.map(|_| ClaimOutcome::Created).map_err(|e| e.to_string()),
                Op::Get => {
                    kv.get(&c.key).await.map(|v| ClaimOutcome::Exists(v.map(|b| b.to_vec()))).map_err(|e| e.to_string())
                }
                Op::Create | Op::CreateOrFetch => match kv.create(&c.key, value()).await {
                    Ok(_) => Ok(ClaimOutcome::Created),
                    Err(e) if e.kind() == CreateErrorKind::AlreadyExists && c.op == Op::CreateOrFetch => {
                        match kv.get(&c.key).await {
                            Ok(v) => Ok(ClaimOutcome::Exists(v.map(|b| b.to_vec()))),
                            Err(e) => Err(e.to_string()),
                        }
                    }
                    Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(ClaimOutcome::Exists(None)),
                    Err(e) => Err(e.to_string()),
                },
            }
        });
        let results = futures_util::future::join_all(creates).await;
        for (c, outcome) in batch.drain(..).zip(results) {
            let _ = c.reply.send(outcome);
        }
    }
}

/// Whether `c` is a create nobody waits for any more (the shard's timeout dropped its
/// answer). Puts are sent without waiting and always go out.
fn abandoned(c: &Claim) -> bool {
    matches!(c.op, Op::Create | Op::CreateOrFetch) && c.reply.is_closed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_create_nobody_waits_for_is_dropped_and_a_put_is_not() {
        let claim = |op| {
            let (reply, answer) = oneshot::channel();
            (Claim { key: "n.1.ab".into(), value: Vec::new(), op, reply }, answer)
        };
        let (waited, _answer) = claim(Op::CreateOrFetch);
        assert!(!abandoned(&waited));
        for op in [Op::Create, Op::CreateOrFetch] {
            let (c, answer) = claim(op);
            drop(answer);
            assert!(abandoned(&c), "{op:?}");
        }
        let (put, answer) = claim(Op::Put);
        drop(answer);
        assert!(!abandoned(&put), "a change's put is fire-and-forget");
    }

    #[test]
    fn keys_are_valid_kv_keys() {
        let k = super::nullifier_key(20_422, &[0xab; 32]);
        assert_eq!(k.len(), "n.20422.".len() + 64);
        assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'));
        let k = super::change_key(20_422, &[0xab; 32]);
        assert!(k.starts_with("c.20422.") && k.len() == "c.20422.".len() + 64);
        let k = super::issued_key(20_422, "any: key id\n");
        assert_eq!(k.len(), "i.20422.".len() + 64);
        assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'));
        // Not the key an L = 32 build used (the id's hash alone): its credentials, which
        // cannot be spent here, do not count against the key.
        use sha2::Digest as _;
        let old: String = sha2::Sha256::digest(b"any: key id\n").iter().map(|b| format!("{b:02x}")).collect();
        assert_ne!(k, format!("i.20422.{old}"));
    }
}
