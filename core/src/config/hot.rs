//! The part of the configuration that changes while the gateway runs (revocations,
//! routing rules, the capability matrix), handed to shards without a lock on the
//! request path.
//!
//! One [`HotConfig`] per process, owned by the gateway. Writers call
//! [`HotConfig::apply`]: it stores the new value under a mutex and then bumps an atomic
//! generation. A shard keeps the generation it last applied in a `Cell` and compares
//! it with one atomic load per request; only when it changed does the shard take the
//! mutex, once per change, for the time of an `Arc` clone.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::keys::RevocationList;

/// Key holding revocations: JSON `{"revoked": ["jti", …]}` or a bare array.
pub const KEY_REVOCATIONS: &str = "revocations";
/// Key holding routing rules (JSON, opaque here).
pub const KEY_ROUTING: &str = "routing";
/// Key holding the capability matrix (JSON, opaque here).
pub const KEY_CAPABILITIES: &str = "capabilities";

/// A value [`HotConfig::apply`] refused; the current configuration is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct HotValueError {
    /// The key whose value was refused.
    pub key: String,
    /// What is wrong with the value.
    pub message: String,
}

#[derive(Debug, Default)]
struct Values {
    revoked: Arc<RevocationList>,
    routing: Option<Arc<serde_json::Value>>,
    capabilities: Option<Arc<serde_json::Value>>,
}

/// The current hot configuration, shared by its writers and every shard.
#[derive(Debug)]
pub struct HotConfig {
    generation: AtomicU64,
    /// Revocations from the config file, always kept (pushed lists are added to them).
    base_revoked: Vec<String>,
    values: Mutex<Values>,
}

impl HotConfig {
    /// A hot configuration starting from `base_revoked` (the config file's `keys.revoked`).
    pub fn new(base_revoked: Vec<String>) -> HotConfig {
        let revoked = Arc::new(RevocationList::new(&base_revoked));
        HotConfig {
            generation: AtomicU64::new(0),
            base_revoked,
            values: Mutex::new(Values { revoked, ..Values::default() }),
        }
    }

    /// A hot configuration starting from `config`'s `keys.revoked`.
    pub fn from_config(config: &Config) -> HotConfig {
        HotConfig::new(config.keys.as_ref().map(|k| k.revoked.clone()).unwrap_or_default())
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

    /// Applies one key's new value (`None`: the key was deleted). Unknown keys are
    /// ignored (other consumers of the same source may use them). Returns whether
    /// anything changed.
    ///
    /// The one write path for every source: the bridge's `BH_CONFIG` watch today; a
    /// reload of the config file (SIGHUP) is meant to call it the same way.
    pub fn apply(&self, key: &str, value: Option<&[u8]>) -> Result<bool, HotValueError> {
        let refuse = |message: String| HotValueError { key: key.to_string(), message };
        match key {
            KEY_REVOCATIONS => {
                let ids = match value {
                    None => Vec::new(),
                    Some(v) => parse_revocations(v).map_err(refuse)?,
                };
                let all: BTreeSet<&str> =
                    self.base_revoked.iter().map(String::as_str).chain(ids.iter().map(String::as_str)).collect();
                self.lock().revoked = Arc::new(RevocationList::new(all));
            }
            KEY_ROUTING | KEY_CAPABILITIES => {
                let parsed = match value {
                    None => None,
                    Some(v) => Some(Arc::new(serde_json::from_slice(v).map_err(|e| refuse(format!("not JSON: {e}")))?)),
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
        Err(e) => Err(format!("expected {{\"revoked\": [..]}} or a list of key ids: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_see_each_change_once() {
        let hot = HotConfig::new(vec!["base".into()]);
        let seen = Cell::new(0);
        assert!(hot.revocations_if_changed(&seen).is_none());
        assert!(hot.apply(KEY_REVOCATIONS, Some(br#"{"revoked":["k1","k2"]}"#)).unwrap());
        let list = hot.revocations_if_changed(&seen).expect("changed");
        assert!(list.contains("k1") && list.contains("k2") && list.contains("base"));
        assert!(hot.revocations_if_changed(&seen).is_none());
        assert!(hot.apply(KEY_REVOCATIONS, Some(br#"["k3"]"#)).unwrap());
        let list = hot.revocations_if_changed(&seen).expect("changed");
        assert!(!list.contains("k1") && list.contains("k3") && list.contains("base"));
        assert!(hot.apply(KEY_REVOCATIONS, None).unwrap());
        assert_eq!(hot.revocations_if_changed(&seen).expect("changed").len(), 1);
        assert!(!hot.apply("other", Some(b"x")).unwrap());
        assert!(hot.apply(KEY_ROUTING, Some(br#"{"default_mode":"latency"}"#)).unwrap());
        assert_eq!(hot.routing().expect("routing")["default_mode"], "latency");
    }

    #[test]
    fn a_refused_value_names_its_key_and_changes_nothing() {
        let hot = HotConfig::new(Vec::new());
        let err = hot.apply(KEY_REVOCATIONS, Some(b"nope")).expect_err("not a list");
        assert_eq!(err.key, KEY_REVOCATIONS);
        assert!(err.to_string().starts_with("revocations: expected"), "{err}");
        let err = hot.apply(KEY_CAPABILITIES, Some(b"{")).expect_err("not JSON");
        assert!(err.to_string().starts_with("capabilities: not JSON"), "{err}");
        assert_eq!(hot.generation(), 0);
        assert!(hot.capabilities().is_none());
    }

    #[test]
    fn the_config_files_revocations_are_the_base() {
        let config = Config::parse("keys: { issuers: [], revoked: [filed] }\n").expect("config");
        let hot = HotConfig::from_config(&config);
        assert!(hot.revocations().contains("filed"));
        assert!(hot.apply(KEY_REVOCATIONS, Some(br#"["pushed"]"#)).unwrap());
        let list = hot.revocations();
        assert!(list.contains("filed") && list.contains("pushed"));
    }
}
