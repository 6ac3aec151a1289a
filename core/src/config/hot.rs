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
use crate::tables::Tables;

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

#[derive(Default)]
struct Values {
    /// Revocations from the config file, always kept (pushed lists are added to them).
    base_revoked: Vec<String>,
    /// The list last pushed under [`KEY_REVOCATIONS`].
    pushed_revoked: Vec<String>,
    /// Their union: what shards apply.
    revoked: Arc<RevocationList>,
    routing: Option<Arc<serde_json::Value>>,
    capabilities: Option<Arc<serde_json::Value>>,
    /// Providers, routes and key verification (from the config file); `None` until the
    /// gateway sets them.
    tables: Option<Arc<Tables>>,
}

/// What changed since a shard last looked.
pub struct Snapshot {
    /// The revocation list.
    pub revoked: Arc<RevocationList>,
    /// The current tables, if set.
    pub tables: Option<Arc<Tables>>,
}

/// The current hot configuration, shared by its writers and every shard.
pub struct HotConfig {
    generation: AtomicU64,
    values: Mutex<Values>,
}

impl std::fmt::Debug for HotConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotConfig").field("generation", &self.generation()).finish_non_exhaustive()
    }
}

impl HotConfig {
    /// A hot configuration starting from `base_revoked` (the config file's `keys.revoked`).
    pub fn new(base_revoked: Vec<String>) -> HotConfig {
        let revoked = Arc::new(RevocationList::new(&base_revoked));
        HotConfig {
            generation: AtomicU64::new(0),
            values: Mutex::new(Values { base_revoked, revoked, ..Values::default() }),
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

    /// Sets the tables shards start from (no generation bump: nothing ran yet).
    pub fn set_tables(&self, tables: Arc<Tables>) {
        self.lock().tables = Some(tables);
    }

    /// The current tables, if set.
    pub fn tables(&self) -> Option<Arc<Tables>> {
        self.lock().tables.clone()
    }

    /// Everything shards apply, if anything changed since `seen` (which is then
    /// updated). The hot path: one atomic load when nothing changed.
    pub fn changes_since(&self, seen: &Cell<u64>) -> Option<Snapshot> {
        let now = self.generation();
        if now == seen.get() {
            return None;
        }
        seen.set(now);
        let v = self.lock();
        Some(Snapshot { revoked: Arc::clone(&v.revoked), tables: v.tables.clone() })
    }

    /// A re-read config file's part: its `keys.revoked` (pushed revocations stay
    /// added to it) and new tables (`None`: keep the current ones). The same write
    /// path as [`HotConfig::apply`]: one generation bump that every shard picks up.
    pub fn reload(&self, base_revoked: Vec<String>, tables: Option<Arc<Tables>>) {
        {
            let mut v = self.lock();
            v.base_revoked = base_revoked;
            v.revoked = Arc::new(union(&v.base_revoked, &v.pushed_revoked));
            if let Some(t) = tables {
                v.tables = Some(t);
            }
        }
        self.generation.fetch_add(1, Ordering::Release);
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
                let mut v = self.lock();
                v.revoked = Arc::new(union(&v.base_revoked, &ids));
                v.pushed_revoked = ids;
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

fn union(a: &[String], b: &[String]) -> RevocationList {
    let all: BTreeSet<&str> = a.iter().chain(b).map(String::as_str).collect();
    RevocationList::new(all)
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
        assert!(hot.changes_since(&seen).is_none());
        assert!(hot.apply(KEY_REVOCATIONS, Some(br#"{"revoked":["k1","k2"]}"#)).unwrap());
        let list = hot.changes_since(&seen).expect("changed").revoked;
        assert!(list.contains("k1") && list.contains("k2") && list.contains("base"));
        assert!(hot.changes_since(&seen).is_none());
        assert!(hot.apply(KEY_REVOCATIONS, Some(br#"["k3"]"#)).unwrap());
        let list = hot.changes_since(&seen).expect("changed").revoked;
        assert!(!list.contains("k1") && list.contains("k3") && list.contains("base"));
        assert!(hot.apply(KEY_REVOCATIONS, None).unwrap());
        assert_eq!(hot.changes_since(&seen).expect("changed").revoked.len(), 1);
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
    fn a_reload_replaces_the_base_and_keeps_what_was_pushed() {
        let hot = HotConfig::new(vec!["old".into()]);
        let seen = Cell::new(0);
        assert!(hot.apply(KEY_REVOCATIONS, Some(br#"["pushed"]"#)).unwrap());
        hot.reload(vec!["new".into()], None);
        let s = hot.changes_since(&seen).expect("changed");
        assert!(s.revoked.contains("new") && s.revoked.contains("pushed") && !s.revoked.contains("old"));
        assert!(s.tables.is_none());
        assert!(hot.changes_since(&seen).is_none());
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
