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
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::keys::RevocationList;
use crate::tables::Tables;

/// Key holding revocations: JSON `{"revoked": ["jti", …]}` or a bare array.
pub const KEY_REVOCATIONS: &str = "revocations";
/// Key holding routing rules: a [`RoutingPush`] as JSON.
pub const KEY_ROUTING: &str = "routing";
/// Key holding the capability matrix: [`CapabilityPush`] as JSON.
pub const KEY_CAPABILITIES: &str = "capabilities";

/// Routing rules pushed under [`KEY_ROUTING`]: the `routing` section's keys and, per
/// model, the routing fields of `models[]`. Absent keys keep the config file's value.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingPush {
    /// `routing.default_mode`.
    #[serde(default)]
    pub default_mode: Option<crate::router::RouteMode>,
    /// `routing.quality_threshold`.
    #[serde(default)]
    pub quality_threshold: Option<f64>,
    /// `routing.auto_model`.
    #[serde(default)]
    pub auto_model: Option<String>,
    /// Per model name (every deployment of it), or `name@provider` (that deployment).
    #[serde(default)]
    pub models: BTreeMap<String, ModelPush>,
}

/// A model's routing fields, pushed (absent: the config file's value).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPush {
    /// `models[].price_per_1k_input`.
    #[serde(default)]
    pub price_per_1k_input: Option<f64>,
    /// `models[].price_per_1k_output`.
    #[serde(default)]
    pub price_per_1k_output: Option<f64>,
    /// `models[].quality`.
    #[serde(default)]
    pub quality: Option<f64>,
    /// `models[].capabilities`.
    #[serde(default)]
    pub capabilities: Option<Vec<String>>,
    /// `models[].context_window`.
    #[serde(default)]
    pub context_window: Option<u64>,
    /// `models[].output_tokens_typical`.
    #[serde(default)]
    pub output_tokens_typical: Option<u32>,
}

/// The capability matrix pushed under [`KEY_CAPABILITIES`]: per model name (or
/// `name@provider`), its full capability list, replacing the file's.
pub type CapabilityPush = BTreeMap<String, Vec<String>>;

/// Most models one push may name (a bound on the work a push costs every gateway).
pub const PUSH_MODELS_MAX: usize = 10_000;

/// `base` with `routing` and then `capabilities` applied, validated as a whole.
pub fn patched(
    base: &Config,
    routing: Option<&RoutingPush>,
    capabilities: Option<&CapabilityPush>,
) -> Result<Config, String> {
    let mut c = base.clone();
    let matches = |key: &str, m: &crate::config::ModelConfig| match key.split_once('@') {
        Some((name, provider)) => m.name == name && m.provider == provider,
        None => m.name == key,
    };
    let mut touch = |key: &str, f: &mut dyn FnMut(&mut crate::config::ModelConfig)| {
        let mut found = false;
        for m in c.models.iter_mut().filter(|m| matches(key, m)) {
            f(m);
            found = true;
        }
        if found {
            Ok(())
        } else {
            Err(format!("models.{key}: no such model (a push changes models; adding one needs the config file)"))
        }
    };
    if let Some(r) = routing {
        if r.models.len() > PUSH_MODELS_MAX {
            return Err(format!("models: at most {PUSH_MODELS_MAX} entries"));
        }
        for (key, p) in &r.models {
            touch(key, &mut |m| {
                m.price_per_1k_input = p.price_per_1k_input.unwrap_or(m.price_per_1k_input);
                m.price_per_1k_output = p.price_per_1k_output.unwrap_or(m.price_per_1k_output);
                m.quality = p.quality.or(m.quality);
                m.capabilities = p.capabilities.clone().or(m.capabilities.take());
                m.context_window = p.context_window.or(m.context_window);
                m.output_tokens_typical = p.output_tokens_typical.or(m.output_tokens_typical);
            })?;
        }
    }
    if let Some(caps) = capabilities {
        if caps.len() > PUSH_MODELS_MAX {
            return Err(format!("at most {PUSH_MODELS_MAX} entries"));
        }
        for (key, list) in caps {
            touch(key, &mut |m| m.capabilities = Some(list.clone()))?;
        }
    }
    if let Some(r) = routing {
        c.routing.default_mode = r.default_mode.unwrap_or(c.routing.default_mode);
        c.routing.quality_threshold = r.quality_threshold.unwrap_or(c.routing.quality_threshold);
        if let Some(a) = &r.auto_model {
            c.routing.auto_model.clone_from(a);
        }
    }
    c.validate().map_err(|e| e.to_string())?;
    Ok(c)
}

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
    /// The same two values, typed: applied over the config file's tables.
    routing_push: Option<RoutingPush>,
    capabilities_push: Option<CapabilityPush>,
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
                // Pushed routing stays applied over the re-read file.
                let t = match with_pushes(&t, v.routing_push.as_ref(), v.capabilities_push.as_ref()) {
                    Ok(patched) => patched,
                    Err(e) => {
                        tracing::warn!(error = %e, "pushed routing no longer applies to the reloaded config; using the file's");
                        t
                    }
                };
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
                let parsed: Option<Arc<serde_json::Value>> = match value {
                    None => None,
                    Some(v) => Some(Arc::new(serde_json::from_slice(v).map_err(|e| refuse(format!("not JSON: {e}")))?)),
                };
                let mut values = self.lock();
                let (mut routing, mut capabilities) = (values.routing_push.clone(), values.capabilities_push.clone());
                if key == KEY_ROUTING {
                    routing = parsed
                        .as_deref()
                        .map(|v| serde_json::from_value::<RoutingPush>(v.clone()))
                        .transpose()
                        .map_err(|e| refuse(e.to_string()))?;
                } else {
                    capabilities = parsed
                        .as_deref()
                        .map(|v| serde_json::from_value::<CapabilityPush>(v.clone()))
                        .transpose()
                        .map_err(|e| refuse(e.to_string()))?;
                }
                // Refused unless it applies: a bad push changes nothing.
                if let Some(t) = &values.tables {
                    let next = with_pushes(t, routing.as_ref(), capabilities.as_ref()).map_err(refuse)?;
                    values.tables = Some(next);
                }
                if key == KEY_ROUTING {
                    values.routing = parsed;
                } else {
                    values.capabilities = parsed;
                }
                values.routing_push = routing;
                values.capabilities_push = capabilities;
            }
            _ => return Ok(false),
        }
        self.generation.fetch_add(1, Ordering::Release);
        Ok(true)
    }
}

/// `tables` rebuilt from their config file with the pushes applied (the same tables
/// when they have no file behind them).
fn with_pushes(
    tables: &Arc<Tables>,
    routing: Option<&RoutingPush>,
    capabilities: Option<&CapabilityPush>,
) -> Result<Arc<Tables>, String> {
    let Some(base) = &tables.base else { return Ok(Arc::clone(tables)) };
    let config = patched(base, routing, capabilities)?;
    Tables::build_over(Arc::clone(base), &config, tables.no_auth).map_err(|e| e.to_string())
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

    const TWO_MODELS: &str = "providers:
  - { name: a, kind: openai_compatible, base_url: \"http://127.0.0.1:9/v1\" }
  - { name: b, kind: openai_compatible, base_url: \"http://127.0.0.1:9/v1\" }
models:
  - { name: small, provider: a, upstream_model: s, price_per_1k_input: 0.0001, price_per_1k_output: 0.0001, quality: 0.5 }
  - { name: big, provider: b, upstream_model: g, price_per_1k_input: 0.01, price_per_1k_output: 0.01, quality: 0.9 }
";

    fn chosen(hot: &HotConfig) -> (String, crate::router::RouteMode) {
        let t = hot.tables().expect("tables");
        let req = crate::router::RouteRequest::from_prompt("hi");
        let input = crate::router::RouteInput {
            model: "auto",
            mode_header: None,
            claims: None,
            health: None,
            now: std::time::Instant::now(),
        };
        let r = crate::router::route(&t.routes, &req, &input).expect("routed");
        (r.deployments[0].name.clone(), r.decision.mode)
    }

    #[test]
    fn pushed_prices_quality_and_modes_change_the_choice_and_a_deletion_restores_the_file() {
        let config = Config::parse(TWO_MODELS).expect("config");
        let hot = HotConfig::from_config(&config);
        hot.set_tables(Tables::build(&config, true).expect("tables"));
        assert_eq!(chosen(&hot).0, "small");
        let push = br#"{"models":{"small":{"price_per_1k_input":0.5,"price_per_1k_output":0.5}}}"#;
        assert!(hot.apply(KEY_ROUTING, Some(push)).unwrap());
        assert_eq!(chosen(&hot).0, "big", "small is dearer now");
        // Capability mode on a chat prompt: quality decides, and `small` is pushed to the top.
        let push = br#"{"default_mode":"capability","models":{"small@a":{"quality":0.95}}}"#;
        assert!(hot.apply(KEY_ROUTING, Some(push)).unwrap());
        assert_eq!(chosen(&hot), ("small".to_string(), crate::router::RouteMode::Capability));
        assert!(hot.apply(KEY_CAPABILITIES, Some(br#"{"big":["tools","vision"]}"#)).unwrap());
        assert_eq!(hot.tables().unwrap().routes.deployments.iter().filter(|d| d.capabilities.is_some()).count(), 1);
        assert!(hot.apply(KEY_ROUTING, None).unwrap());
        assert_eq!(chosen(&hot), ("small".to_string(), crate::router::RouteMode::Cost), "the file's values again");
    }

    #[test]
    fn a_push_that_does_not_apply_is_refused_whole() {
        let config = Config::parse(TWO_MODELS).expect("config");
        let hot = HotConfig::from_config(&config);
        let tables = Tables::build(&config, true).expect("tables");
        hot.set_tables(Arc::clone(&tables));
        for (key, value, says) in [
            (KEY_ROUTING, &br#"{"models":{"nope":{"quality":0.1}}}"#[..], "models.nope: no such model"),
            (KEY_ROUTING, br#"{"models":{"small":{"quality":3}}}"#, "models[0].quality: must be between 0 and 1"),
            (KEY_ROUTING, br#"{"quality_threshold":2}"#, "routing.quality_threshold"),
            (KEY_ROUTING, br#"{"colour":"red"}"#, "unknown field `colour`"),
            (KEY_CAPABILITIES, br#"{"big":["telepathy"]}"#, "unknown capability `telepathy`"),
        ] {
            let e = hot.apply(key, Some(value)).expect_err("refused");
            assert!(e.message.contains(says), "{e}");
        }
        assert_eq!(hot.generation(), 0);
        assert!(Arc::ptr_eq(&hot.tables().unwrap(), &tables), "nothing changed");
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
