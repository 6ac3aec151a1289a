//! Hot configuration from the `BH_CONFIG` KV bucket, handed to shards without a lock
//! on the request path.
//!
//! The bridge is the only writer. It stores a new value under a mutex and then bumps
//! an atomic generation. A shard keeps the generation it last applied in a `Cell`
//! and compares it with one relaxed-cost atomic load per request (or per tick); only
//! when it changed does the shard take the mutex — once per change, for the time of
//! an `Arc` clone.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::keys::RevocationList;

/// KV key holding revocations: JSON `{"revoked": ["jti", …]}` or a bare array.
pub const KEY_REVOCATIONS: &str = "revocations";
/// KV key holding routing rules (JSON, opaque to the bridge).
pub const KEY_ROUTING: &str = "routing";
/// KV key holding the capability matrix (JSON, opaque to the bridge).
pub const KEY_CAPABILITIES: &str = "capabilities";

#[derive(Debug, Default)]
struct Values {
    revoked: Arc<RevocationList>,
    routing: Option<Arc<serde_json::Value>>,
    capabilities: Option<Arc<serde_json::Value>>,
}

/// The current hot configuration. One per process, shared by the bridge and shards.
#[derive(Debug)]
pub struct ConfigFeed {
    generation: AtomicU64,
    /// Revocations from the config file, always kept (the KV list is added to them).
    base_revoked: Vec<String>,
    values: Mutex<Values>,
}

impl ConfigFeed {
    /// A feed starting from the config file's `keys.revoked`.
    pub fn new(base_revoked: Vec<String>) -> ConfigFeed {
        let revoked = Arc::new(RevocationList::new(&base_revoked));
        ConfigFeed {
            generation: AtomicU64::new(0),
            base_revoked,
            values: Mutex::new(Values { revoked, ..Values::default() }),
        }
    }

    /// Bumped on every applied change.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The revocation list if it changed since `seen` (which is then updated); `None`
    /// otherwise. The hot path: one atomic load when nothing changed.
    pub fn revocations_if_changed(&self, seen: &Cell<u64>) -> Option<Arc<RevocationList>> {
        let now = self.generation();
        if now == seen.get() {
            return None;
        }
        seen.set(now);
        Some(Arc::clone(&self.lock().revoked))
    }

    /// The current revocation list.
    pub fn revocations(&self) -> Arc<RevocationList> {
        Arc::clone(&self.lock().revoked)
    }

    /// The routing rules last pushed, if any.
    pub fn routing(&self) -> Option<Arc<serde_json::Value>> {
        self.lock().routing.clone()
    }

    /// The capability matrix last pushed, if any.
    pub fn capabilities(&self) -> Option<Arc<serde_json::Value>> {
        self.lock().capabilities.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Values> {
        // A panic while holding it cannot leave `Values` half-written (each field is
        // replaced whole), so a poisoned lock is still good.
        self.values.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a KV value (`None`: the key was deleted). Unknown keys are ignored
    /// (other consumers may use them). Returns whether anything changed.
    pub fn apply(&self, key: &str, value: Option<&[u8]>) -> Result<bool, String> {
        match key {
            KEY_REVOCATIONS => {
                let ids = match value {
                    None => Vec::new(),
                    Some(v) => parse_revocations(v)?,
                };
                let all: BTreeSet<&str> =
                    self.base_revoked.iter().map(String::as_str).chain(ids.iter().map(String::as_str)).collect();
                self.lock().revoked = Arc::new(RevocationList::new(all));
            }
            KEY_ROUTING | KEY_CAPABILITIES => {
                let parsed = match value {
                    None => None,
                    Some(v) => Some(Arc::new(serde_json::from_slice(v).map_err(|e| format!("{key}: not JSON: {e}"))?)),
                };
                let mut values = self.lock();
                if key == KEY_ROUTING {
                    values.routing = parsed;
                } else {
                    values.capabilities = parsed;
                }
            }
            _ => return Ok(false),
        }
        self.generation.fetch_add(1, Ordering::Release);
        Ok(true)
    }
}

fn parse_revocations(value: &[u8]) -> Result<Vec<String>, String> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Form {
        Object { revoked: Vec<String> },
        List(Vec<String>),
    }
    match serde_json::from_slice::<Form>(value) {
        Ok(Form::Object { revoked }) | Ok(Form::List(revoked)) => Ok(revoked),
        Err(e) => Err(format!("revocations: expected {{\"revoked\": [..]}} or a list of key ids: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_see_each_change_once() {
        let feed = ConfigFeed::new(vec!["base".into()]);
        let seen = Cell::new(0);
        assert!(feed.revocations_if_changed(&seen).is_none());
        assert!(feed.apply(KEY_REVOCATIONS, Some(br#"{"revoked":["k1","k2"]}"#)).unwrap());
        let list = feed.revocations_if_changed(&seen).expect("changed");
        assert!(list.contains("k1") && list.contains("k2") && list.contains("base"));
        assert!(feed.revocations_if_changed(&seen).is_none());
        assert!(feed.apply(KEY_REVOCATIONS, Some(br#"["k3"]"#)).unwrap());
        let list = feed.revocations_if_changed(&seen).expect("changed");
        assert!(!list.contains("k1") && list.contains("k3") && list.contains("base"));
        assert!(feed.apply(KEY_REVOCATIONS, None).unwrap());
        assert_eq!(feed.revocations_if_changed(&seen).expect("changed").len(), 1);
        assert!(feed.apply(KEY_REVOCATIONS, Some(b"nope")).is_err());
        assert!(!feed.apply("other", Some(b"x")).unwrap());
        assert!(feed.apply(KEY_ROUTING, Some(br#"{"default_mode":"latency"}"#)).unwrap());
        assert_eq!(feed.routing().expect("routing")["default_mode"], "latency");
    }
}
