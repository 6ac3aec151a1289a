//! Everything the bridge publishes besides the audit chain: `BH_EVENTS` (routing
//! decisions, failovers), `BH_HEALTH` (per-provider latency percentiles and error
//! rate), `BH_ALERTS` (budget exhaustion, circuit opened, SLA breach) and
//! `BH_SESSIONS` (per-key session state).
//!
//! Routing decisions, failovers, health and sessions are derived by the bridge from
//! the audit records it reads, so the pipeline writes nothing extra for them.
//!
//! Routing decisions are published batched: one `BH_EVENTS` message per bridge batch,
//! subject `bh.events.routes.<node>` (LZ4-compressed with `Content-Encoding: lz4` under
//! the default `nats.compression`), body
//! `{"node":"<node>","fields":[…],"decisions":[[…],…]}`: each decision is an array of
//! the values named by `fields` — [`ROUTE_FIELDS`], in that order, absent values
//! `null` — so a batch does not repeat the key names per decision (that halves the
//! bytes nats-server stores). Its `Nats-Msg-Id` is
//! `<first record's WAL position>.routes.<count>.<crc32 of every record's position>`,
//! so replaying the same batch is dropped by JetStream; a batch re-cut differently
//! after a crash may repeat decisions (consumers dedupe on `request_id`). Failovers
//! stay one message each (`bh.events.failover.<provider>`, id `<WAL position>.failover`). Budget
//! exhaustion and circuit changes are pipeline knowledge: the pipeline reports them
//! with [`crate::bridge::ShardAudit::event`] as an [`Event`].

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::audit::chain::push_decimal;
use crate::audit::{RecordView, StrList};

/// Something the pipeline reports for `BH_ALERTS` / `BH_EVENTS`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A key's token budget ran out for a window (the request got 429).
    BudgetExhausted {
        /// The key (`jti`).
        key_id: String,
        /// Its tenant.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tenant: Option<String>,
        /// `minute`, `day` or `month`.
        window: String,
        /// Tokens allowed in the window.
        limit: u64,
    },
    /// A provider's circuit opened: the shard stops sending to it for a while.
    CircuitOpened {
        /// Provider name.
        provider: String,
        /// Why (e.g. `5 consecutive 5xx`).
        reason: String,
        /// How long it stays open, ms.
        open_ms: u64,
    },
    /// A provider's circuit closed again.
    CircuitClosed {
        /// Provider name.
        provider: String,
    },
}

impl Event {
    /// `(stream kind, subject suffix)` the event is published under.
    pub fn route(&self) -> (AuxStream, String) {
        match self {
            Event::BudgetExhausted { .. } => (AuxStream::Alerts, "budget_exhausted".into()),
            Event::CircuitOpened { provider, .. } => {
                (AuxStream::Alerts, format!("circuit_opened.{}", subject_token(provider)))
            }
            Event::CircuitClosed { provider } => {
                (AuxStream::Events, format!("circuit_closed.{}", subject_token(provider)))
            }
        }
    }
}

/// The non-audit streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuxStream {
    /// `BH_EVENTS`, subjects `bh.events.…`.
    Events,
    /// `BH_HEALTH`, subjects `bh.health.…`.
    Health,
    /// `BH_ALERTS`, subjects `bh.alerts.…`.
    Alerts,
    /// `BH_SESSIONS`, subjects `bh.sessions.…`.
    Sessions,
}

impl AuxStream {
    /// All of them.
    pub const ALL: [AuxStream; 4] = [AuxStream::Events, AuxStream::Health, AuxStream::Alerts, AuxStream::Sessions];

    /// Stream name.
    pub fn stream(self) -> &'static str {
        match self {
            AuxStream::Events => "BH_EVENTS",
            AuxStream::Health => "BH_HEALTH",
            AuxStream::Alerts => "BH_ALERTS",
            AuxStream::Sessions => "BH_SESSIONS",
        }
    }

    /// Subject prefix (without the trailing dot).
    pub fn prefix(self) -> &'static str {
        match self {
            AuxStream::Events => "bh.events",
            AuxStream::Health => "bh.health",
            AuxStream::Alerts => "bh.alerts",
            AuxStream::Sessions => "bh.sessions",
        }
    }

    /// File name in embedded mode.
    pub fn file_name(self) -> &'static str {
        match self {
            AuxStream::Events => "events.jsonl",
            AuxStream::Health => "health.jsonl",
            AuxStream::Alerts => "alerts.jsonl",
            AuxStream::Sessions => "sessions.jsonl",
        }
    }
}

/// One message for an aux stream.
#[derive(Debug, Clone)]
pub struct AuxMessage {
    /// Which stream.
    pub stream: AuxStream,
    /// Subject after the stream's prefix.
    pub suffix: String,
    /// `Nats-Msg-Id`: stable across a replay so JetStream drops the repeat.
    pub msg_id: String,
    /// JSON body.
    pub body: Vec<u8>,
    /// A batch that grows with load (routing decisions): stored compressed as
    /// `nats.compression` says, like `BH_AUDIT` batches. Small messages stay plain.
    pub bulk: bool,
}

/// A name made safe for one subject token: anything but `A-Z a-z 0-9 _ -` becomes `_`.
pub fn subject_token(name: &str) -> String {
    let s: String = name
        .chars()
        .take(64)
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
        .collect();
    if s.is_empty() {
        "_".into()
    } else {
        s
    }
}

/// Latency samples kept per provider per health period; beyond it samples are
/// dropped (the count still counts them).
const HEALTH_SAMPLES_MAX: usize = 100_000;
/// Sessions tracked at once; beyond it new keys are not tracked until the map shrinks.
const SESSIONS_MAX: usize = 100_000;

#[derive(Debug)]
struct ProviderWindow {
    name: String,
    subjects: EventSubjects,
    latencies_us: Vec<u64>,
    count: u64,
    errors: u64,
}

impl ProviderWindow {
    fn new(provider: &str) -> ProviderWindow {
        ProviderWindow {
            name: provider.to_string(),
            subjects: EventSubjects::new(provider),
            latencies_us: Vec::new(),
            count: 0,
            errors: 0,
        }
    }

    /// Starts the next health period.
    fn reset(&mut self) {
        self.latencies_us = Vec::new();
        self.count = 0;
        self.errors = 0;
    }
}

/// A provider's event subject suffix, made once rather than per record.
#[derive(Debug)]
struct EventSubjects {
    failover: String,
}

impl EventSubjects {
    fn new(provider: &str) -> EventSubjects {
        let token = subject_token(provider);
        EventSubjects { failover: format!("failover.{token}") }
    }
}

/// The routing decisions of one bridge batch, published as one message.
#[derive(Debug, Default)]
struct RouteBatch {
    /// `{"node":…,"fields":[…],"decisions":[d1,d2,…` so far (empty when no decision yet).
    body: Vec<u8>,
    count: u64,
    first_msg_id: String,
    ids: crc32fast::Hasher,
}

/// Largest routing-decision buffer kept from one batch for the next.
const ROUTES_BODY_KEEP_BYTES: usize = 1 << 20;

/// The names of a routing decision's values, in the order each decision lists them.
pub const ROUTE_FIELDS: [&str; 11] = [
    "request_id",
    "ts_unix_ms",
    "model_requested",
    "model_upstream",
    "provider",
    "route_mode",
    "complexity",
    "status",
    "task",
    "route_candidates",
    "route_reason",
];

/// Appends `r`'s routing decision for `BH_EVENTS`: an array of its values in
/// [`ROUTE_FIELDS`] order, absent ones `null`, as serde_json would write the tuple of
/// them (same escapes, floats through serde_json) but without serde's generic path,
/// since it runs for every record (issue 15, item 5). Strings, lists and complexity
/// the hand-written parse read are copied as stored (they need no escape, and the
/// stored complexity is serde's text of it); the rest is escaped and formatted.
fn write_decision(out: &mut Vec<u8>, r: &RecordView<'_>) {
    let opt = |out: &mut Vec<u8>, v: Option<&str>| match v {
        Some(v) => r.push_str(out, v),
        None => out.extend_from_slice(b"null"),
    };
    out.push(b'[');
    r.push_str(out, &r.request_id);
    out.push(b',');
    push_decimal(out, r.ts_unix_ms);
    out.push(b',');
    r.push_str(out, &r.model_requested);
    out.push(b',');
    opt(out, r.model_upstream.as_deref());
    out.push(b',');
    opt(out, r.provider.as_deref());
    out.push(b',');
    opt(out, r.route_mode.as_deref());
    out.push(b',');
    r.push_complexity(out);
    out.push(b',');
    push_decimal(out, u64::from(r.status));
    out.push(b',');
    opt(out, r.task.as_deref());
    out.push(b',');
    r.route_candidates.push_json(out);
    out.push(b',');
    opt(out, r.route_reason.as_deref());
    out.push(b']');
}

/// A failover on `BH_EVENTS`.
#[derive(Serialize)]
struct FailoverEvent<'a> {
    attempts: &'a StrList<'a>,
    model_requested: &'a str,
    node: &'a str,
    provider: Option<&'a str>,
    request_id: &'a str,
    status: u16,
    ts_unix_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
struct Session {
    key_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<String>,
    first_seen_ms: u64,
    last_seen_ms: u64,
    window_start_ms: u64,
    requests: u64,
    tokens: u64,
    #[serde(skip)]
    dirty: bool,
}

/// Derives events, health and sessions from the records the bridge chains.
#[derive(Debug)]
pub struct Derived {
    node: String,
    /// Per provider named by a record, in the order first seen.
    providers: Vec<ProviderWindow>,
    /// Where each provider is in `providers`.
    provider_at: HashMap<String, usize>,
    /// Where the last record's provider is in `providers`.
    last_provider: usize,
    /// Subjects of records that name no provider.
    no_provider: EventSubjects,
    /// Sessions per key, in the order first seen (since the last sweep).
    sessions: Vec<Session>,
    /// Where each key's session is in `sessions`.
    session_at: HashMap<String, usize>,
    /// Where the last record's session is in `sessions`.
    last_session: usize,
    session_window_ms: u64,
    sla_p99_us: Option<u64>,
    routes: RouteBatch,
    routes_suffix: String,
}

impl Derived {
    /// A deriver for `node`.
    pub fn new(node: &str, session_window_s: u64, sla_p99_ms: Option<u64>) -> Derived {
        Derived {
            node: node.to_string(),
            providers: Vec::new(),
            provider_at: HashMap::new(),
            last_provider: 0,
            no_provider: EventSubjects::new("none"),
            sessions: Vec::new(),
            session_at: HashMap::new(),
            last_session: 0,
            session_window_ms: session_window_s.saturating_mul(1000),
            sla_p99_us: sla_p99_ms.map(|ms| ms.saturating_mul(1000)),
            routes: RouteBatch::default(),
            routes_suffix: format!("routes.{}", subject_token(node)),
        }
    }

    /// Takes in one record: adds its routing decision to the batch's (see
    /// [`Derived::flush_routes`]) and pushes its failover, if any, to `out`.
    /// `msg_id` is the record's stable WAL position.
    pub fn record(&mut self, r: &RecordView<'_>, msg_id: &str, out: &mut Vec<AuxMessage>) {
        let provider = r.provider.as_deref();
        let names = match provider {
            Some(p) => {
                // Consecutive records mostly name the same provider: compare with the
                // last one's name before hashing.
                let at = match self.providers.get(self.last_provider) {
                    Some(w) if w.name == p => self.last_provider,
                    _ => match self.provider_at.get(p) {
                        Some(&at) => at,
                        None => {
                            self.providers.push(ProviderWindow::new(p));
                            let at = self.providers.len() - 1;
                            self.provider_at.insert(p.to_string(), at);
                            at
                        }
                    },
                };
                self.last_provider = at;
                let Some(w) = self.providers.get_mut(at) else { return };
                w.count += 1;
                if r.status >= 500 || r.status == 0 {
                    w.errors += 1;
                }
                if w.latencies_us.len() < HEALTH_SAMPLES_MAX {
                    w.latencies_us.push(r.upstream_us);
                }
                &w.subjects
            }
            None => &self.no_provider,
        };
        let batch = &mut self.routes;
        if batch.count == 0 {
            batch.body.clear();
            batch.body.extend_from_slice(b"{\"node\":");
            if serde_json::to_writer(&mut batch.body, &self.node).is_err() {
                batch.body.extend_from_slice(b"null");
            }
            batch.body.extend_from_slice(b",\"fields\":");
            if serde_json::to_writer(&mut batch.body, &ROUTE_FIELDS).is_err() {
                batch.body.extend_from_slice(b"[]");
            }
            batch.body.extend_from_slice(b",\"decisions\":[");
            batch.first_msg_id.clear();
            batch.first_msg_id.push_str(msg_id);
            batch.ids = crc32fast::Hasher::new();
        } else {
            batch.body.push(b',');
        }
        batch.count += 1;
        batch.ids.update(msg_id.as_bytes());
        batch.ids.update(b"\n");
        write_decision(&mut batch.body, r);
        // Every attempt but the answering one failed over to the next.
        if r.attempts.len() > 1 || (r.attempts.len() == 1 && r.status >= 500) {
            let failover = FailoverEvent {
                attempts: &r.attempts,
                model_requested: &r.model_requested,
                node: &self.node,
                provider,
                request_id: &r.request_id,
                status: r.status,
                ts_unix_ms: r.ts_unix_ms,
            };
            out.push(AuxMessage {
                stream: AuxStream::Events,
                suffix: names.failover.clone(),
                msg_id: format!("{msg_id}.failover"),
                body: serde_json::to_vec(&failover).unwrap_or_default(),
                bulk: false,
            });
        }
        let key = r.key_id.as_deref().unwrap_or("anonymous");
        // Consecutive records mostly share a key (one lookup otherwise, hashing the key).
        let at = match self.sessions.get(self.last_session) {
            Some(s) if s.key_id == key => self.last_session,
            _ => match self.session_at.get(key) {
                Some(&at) => at,
                None => {
                    if self.sessions.len() >= SESSIONS_MAX {
                        return;
                    }
                    self.sessions.push(Session {
                        key_id: key.to_string(),
                        tenant: r.tenant.as_deref().map(str::to_string),
                        first_seen_ms: r.ts_unix_ms,
                        last_seen_ms: r.ts_unix_ms,
                        window_start_ms: r.ts_unix_ms,
                        requests: 0,
                        tokens: 0,
                        dirty: true,
                    });
                    let at = self.sessions.len() - 1;
                    self.session_at.insert(key.to_string(), at);
                    at
                }
            },
        };
        self.last_session = at;
        let Some(s) = self.sessions.get_mut(at) else { return };
        if r.ts_unix_ms.saturating_sub(s.window_start_ms) >= self.session_window_ms {
            s.window_start_ms = r.ts_unix_ms;
            s.requests = 0;
            s.tokens = 0;
        }
        s.last_seen_ms = s.last_seen_ms.max(r.ts_unix_ms);
        // Token counts come from providers' `usage`: hostile input, saturated.
        s.requests = s.requests.saturating_add(1);
        s.tokens = s.tokens.saturating_add(r.tokens_in.saturating_add(r.tokens_out));
        s.dirty = true;
    }

    /// Pushes the routing decisions taken in since the last call as one `BH_EVENTS`
    /// message (nothing when there were none).
    pub fn flush_routes(&mut self, out: &mut Vec<AuxMessage>) {
        let batch = &mut self.routes;
        if batch.count == 0 {
            return;
        }
        let mut body = std::mem::take(&mut batch.body);
        body.extend_from_slice(b"]}");
        let crc = std::mem::take(&mut batch.ids).finalize();
        out.push(AuxMessage {
            stream: AuxStream::Events,
            suffix: self.routes_suffix.clone(),
            msg_id: format!("{}.routes.{}.{crc:08x}", batch.first_msg_id, batch.count),
            body,
            bulk: true,
        });
        batch.count = 0;
    }

    /// Takes back the body of the routing-decision message [`Derived::flush_routes`]
    /// pushed to `sent` (once it is stored), to write the next batch's decisions into
    /// its memory instead of growing a new buffer every batch.
    pub fn reuse_routes_body(&mut self, sent: &mut [AuxMessage]) {
        if self.routes.count > 0 || self.routes.body.capacity() > 0 {
            return;
        }
        if let Some(m) = sent.iter_mut().find(|m| m.bulk && m.suffix == self.routes_suffix) {
            let mut body = std::mem::take(&mut m.body);
            // Bounded: a batch's decisions are bounded by the batch's entries, but
            // keep no more than a large batch needs.
            if body.capacity() <= ROUTES_BODY_KEEP_BYTES {
                body.clear();
                self.routes.body = body;
            }
        }
    }

    /// The health report of the period just ended (and SLA alerts), resetting it.
    pub fn health(&mut self, now_ms: u64, period_ms: u64, out: &mut Vec<AuxMessage>) {
        for w in self.providers.iter_mut() {
            let provider = &w.name;
            if w.count == 0 {
                continue;
            }
            w.latencies_us.sort_unstable();
            let pct = |p: f64| -> u64 {
                let n = w.latencies_us.len();
                if n == 0 {
                    return 0;
                }
                let i = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
                w.latencies_us[i]
            };
            let (p50, p90, p99) = (pct(0.50), pct(0.90), pct(0.99));
            let report = serde_json::json!({
                "node": self.node, "provider": provider, "ts_unix_ms": now_ms, "period_ms": period_ms,
                "requests": w.count, "errors": w.errors, "error_rate": w.errors as f64 / w.count as f64,
                "latency_us_p50": p50, "latency_us_p90": p90, "latency_us_p99": p99,
            });
            let token = subject_token(provider);
            out.push(AuxMessage {
                stream: AuxStream::Health,
                suffix: format!("{token}.{}", subject_token(&self.node)),
                msg_id: format!("{}.{token}.{now_ms}", self.node),
                body: report.to_string().into_bytes(),
                bulk: false,
            });
            if let Some(bound) = self.sla_p99_us {
                if p99 > bound {
                    let alert = serde_json::json!({
                        "kind": "sla_breach", "node": self.node, "provider": provider, "ts_unix_ms": now_ms,
                        "latency_us_p99": p99, "bound_us": bound, "requests": w.count,
                    });
                    out.push(AuxMessage {
                        stream: AuxStream::Alerts,
                        suffix: format!("sla_breach.{token}"),
                        msg_id: format!("{}.sla.{token}.{now_ms}", self.node),
                        body: alert.to_string().into_bytes(),
                        bulk: false,
                    });
                }
            }
            w.reset();
        }
    }

    /// Session states that changed since the last flush.
    pub fn sessions(&mut self, now_ms: u64, out: &mut Vec<AuxMessage>) {
        let idle_ms = self.session_window_ms.saturating_mul(2);
        let before = self.sessions.len();
        self.sessions.retain(|s| now_ms.saturating_sub(s.last_seen_ms) < idle_ms || s.dirty);
        if self.sessions.len() != before {
            // Places moved: index them again (once per sweep that dropped a session).
            self.session_at.clear();
            for (at, s) in self.sessions.iter().enumerate() {
                self.session_at.insert(s.key_id.clone(), at);
            }
        }
        for s in self.sessions.iter_mut().filter(|s| s.dirty) {
            s.dirty = false;
            let mut body = serde_json::to_value(&*s).unwrap_or_default();
            body["node"] = serde_json::Value::from(self.node.clone());
            out.push(AuxMessage {
                stream: AuxStream::Sessions,
                suffix: subject_token(&s.key_id),
                msg_id: format!("{}.{}.{now_ms}", self.node, subject_token(&s.key_id)),
                body: body.to_string().into_bytes(),
                bulk: false,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditRecord;
    use proptest::prelude::*;

    fn rec(provider: &str, upstream_us: u64, status: u16, key: &str) -> AuditRecord {
        AuditRecord {
            request_id: "r".into(),
            ts_unix_ms: 1000,
            provider: Some(provider.into()),
            upstream_us,
            status,
            key_id: Some(key.into()),
            tokens_in: 3,
            tokens_out: 4,
            ..AuditRecord::default()
        }
    }

    #[test]
    fn health_percentiles_errors_and_sla() {
        let mut d = Derived::new("n", 60, Some(50));
        let mut out = Vec::new();
        for i in 1..=100u64 {
            let mut r = rec("p.x", i * 1000, if i <= 5 { 502 } else { 200 }, "k");
            if i <= 5 {
                r.attempts = vec!["p.x: 502".into()];
            }
            let json = serde_json::to_vec(&r).unwrap();
            d.record(&RecordView::parse(&json).unwrap(), &format!("m{i}"), &mut out);
        }
        assert_eq!(out.len(), 5, "a failover event per failure");
        d.flush_routes(&mut out);
        assert_eq!(out.len(), 5 + 1, "the routing decisions as one message");
        let routes: serde_json::Value = serde_json::from_slice(&out[5].body).unwrap();
        assert_eq!(routes["decisions"].as_array().map(Vec::len), Some(100));
        assert_eq!(
            (out[5].suffix.as_str(), out[5].msg_id.as_str().split('.').take(3).collect::<Vec<_>>().join(".")),
            ("routes.n", "m1.routes.100".to_string())
        );
        out.clear();
        d.flush_routes(&mut out);
        assert!(out.is_empty(), "no decisions, no message");
        d.health(5000, 5000, &mut out);
        let h: serde_json::Value = serde_json::from_slice(&out[0].body).unwrap();
        assert_eq!(out[0].suffix, "p_x.n");
        assert_eq!(
            (h["latency_us_p50"].as_u64(), h["latency_us_p90"].as_u64(), h["latency_us_p99"].as_u64()),
            (Some(50_000), Some(90_000), Some(99_000))
        );
        assert_eq!(h["error_rate"].as_f64(), Some(0.05));
        assert_eq!(out[1].stream, AuxStream::Alerts);
        out.clear();
        d.sessions(6000, &mut out);
        let s: serde_json::Value = serde_json::from_slice(&out[0].body).unwrap();
        assert_eq!((s["requests"].as_u64(), s["tokens"].as_u64()), (Some(100), Some(700)));
        out.clear();
        d.sessions(7000, &mut out);
        assert!(out.is_empty(), "unchanged sessions are not re-sent");
    }

    #[test]
    fn a_decision_event_carries_mode_task_candidates_and_reason() {
        let mut d = Derived::new("n", 60, None);
        let mut out = Vec::new();
        let mut r = rec("groq", 1000, 200, "k");
        r.route_mode = Some("cost".into());
        r.complexity = Some(0.12);
        r.task = Some("math".into());
        r.route_candidates = vec!["llama-3.1-8b@groq:chosen".into(), "deepseek-r1@deepseek:filtered:tools".into()];
        r.route_reason = Some("cheapest_meeting_threshold".into());
        let json = serde_json::to_vec(&r).unwrap();
        d.record(&RecordView::parse(&json).unwrap(), "m1", &mut out);
        d.flush_routes(&mut out);
        let batch: serde_json::Value = serde_json::from_slice(&out.last().unwrap().body).unwrap();
        let fields: Vec<&str> = batch["fields"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
        let decision = &batch["decisions"][0];
        let field = |name: &str| &decision[fields.iter().position(|f| *f == name).unwrap()];
        assert_eq!(field("route_mode"), "cost");
        assert_eq!(field("complexity"), 0.12);
        assert_eq!(field("task"), "math");
        assert_eq!(field("route_candidates")[1], "deepseek-r1@deepseek:filtered:tools");
        assert_eq!(field("route_reason"), "cheapest_meeting_threshold");
    }

    /// The event bodies are written without a `serde_json::Value`: they must still be
    /// the bytes a `Value` would give (keys sorted, absent fields as null).
    #[test]
    fn event_bodies_match_value_encoding() {
        let mut r = rec("p\"q", 5, 502, "k");
        r.request_id = "r\n1".into();
        r.attempts = vec!["a: 502".into(), "p\"q: 502".into()];
        r.complexity = Some(0.25);
        let json = serde_json::to_vec(&r).unwrap();
        let mut d = Derived::new("n", 60, None);
        let mut out = Vec::new();
        d.record(&RecordView::parse(&json).unwrap(), "m", &mut out);
        d.flush_routes(&mut out);
        let decision = serde_json::json!([
            r.request_id,
            r.ts_unix_ms,
            r.model_requested,
            r.model_upstream,
            r.provider,
            r.route_mode,
            r.complexity,
            r.status,
            r.task,
            r.route_candidates,
            r.route_reason,
        ]);
        let failover = serde_json::json!({
            "node": "n", "request_id": r.request_id, "ts_unix_ms": r.ts_unix_ms,
            "model_requested": r.model_requested, "attempts": r.attempts, "provider": r.provider, "status": r.status,
        });
        let routes = format!(r#"{{"node":"n","fields":{},"decisions":[{decision}]}}"#, serde_json::json!(ROUTE_FIELDS));
        assert_eq!(out.len(), 2);
        assert_eq!(String::from_utf8(out[0].body.clone()).unwrap(), failover.to_string());
        assert_eq!(String::from_utf8(out[1].body.clone()).unwrap(), routes);
        assert_eq!((out[0].suffix.as_str(), out[1].suffix.as_str()), ("failover.p_q", "routes.n"));
        assert_eq!(out[0].msg_id, "m.failover");
        assert!(out[1].msg_id.starts_with("m.routes.1."), "{}", out[1].msg_id);
    }

    fn text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![Just('"'), Just('\\'), (0u8..0x20).prop_map(char::from), Just('é'), Just('😀'), any::<char>()],
            0..10,
        )
        .prop_map(|cs| cs.into_iter().collect())
    }

    /// A record holding a routing decision's values: `strings` are the request id and
    /// the requested model, `opts` upstream model, provider, mode, task and reason.
    fn decision_record(
        strings: &[String],
        opts: &[Option<String>],
        lists: Vec<String>,
        complexity: Option<f64>,
        ts: u64,
        status: u16,
    ) -> AuditRecord {
        AuditRecord {
            request_id: strings[0].clone(),
            ts_unix_ms: ts,
            model_requested: strings[1].clone(),
            model_upstream: opts[0].clone(),
            provider: opts[1].clone(),
            route_mode: opts[2].clone(),
            complexity,
            status,
            task: opts[3].clone(),
            route_candidates: lists,
            route_reason: opts[4].clone(),
            ..AuditRecord::default()
        }
    }

    proptest! {
        /// The hand-written decision is the bytes serde_json wrote for the tuple of
        /// the record's values (escapes, floats, absent values), for any record.
        #[test]
        fn decisions_are_serdes_bytes(
            strings in proptest::collection::vec(text(), 2),
            opts in proptest::collection::vec(proptest::option::of(text()), 5),
            lists in proptest::collection::vec(text(), 0..3),
            complexity in proptest::option::of(prop_oneof![any::<f64>(), (0u32..=100).prop_map(|c| f64::from(c) / 100.0)]),
            ts in any::<u64>(),
            status in any::<u16>(),
        ) {
            let r = decision_record(&strings, &opts, lists, complexity, ts, status);
            let json = serde_json::to_vec(&r).unwrap();
            let view = RecordView::parse(&json).unwrap();
            let mut ours = Vec::new();
            write_decision(&mut ours, &view);
            let serde = serde_json::to_vec(&(
                &view.request_id,
                view.ts_unix_ms,
                &view.model_requested,
                &view.model_upstream,
                &view.provider,
                &view.route_mode,
                view.complexity,
                view.status,
                &view.task,
                &view.route_candidates,
                &view.route_reason,
            ))
            .unwrap();
            prop_assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&serde));
        }
    }

    proptest! {
        /// A decision written from what the hand-written parse kept (stored strings,
        /// lists and complexity text) is the one written from serde's view of the
        /// same record, whatever the record holds.
        #[test]
        fn decisions_from_either_parse_are_equal(
            strings in proptest::collection::vec(text(), 2),
            opts in proptest::collection::vec(proptest::option::of(text()), 5),
            lists in proptest::collection::vec(text(), 0..4),
            complexity in proptest::option::of(prop_oneof![any::<f64>(), (0u32..=100).prop_map(|c| f64::from(c) / 100.0)]),
            status in any::<u16>(),
        ) {
            let r = decision_record(&strings, &opts, lists, complexity, 0, status);
            let mut json = Vec::new();
            r.write_json(&mut json).unwrap();
            let fast = RecordView::parse(&json).unwrap();
            let serde: RecordView<'_> = serde_json::from_slice(&json).unwrap();
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            write_decision(&mut ours, &fast);
            write_decision(&mut theirs, &serde);
            prop_assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs));
        }
    }

    /// The fast path's decision on a plain record copies what was stored: the
    /// bytes serde writes, with every list and the complexity taken as stored.
    #[test]
    fn a_plain_record_decision_copies_the_stored_values() {
        let mut r = rec("p", 5, 200, "k");
        r.route_candidates = vec!["a@p:chosen".into(), ",".into(), "".into(), "b@q:filtered:tools".into()];
        r.complexity = Some(0.07);
        r.route_mode = Some("cost".into());
        let json = serde_json::to_vec(&r).unwrap();
        let view = RecordView::parse(&json).unwrap();
        let mut ours = Vec::new();
        write_decision(&mut ours, &view);
        let want = serde_json::json!([
            "r",
            1000,
            "",
            null,
            "p",
            "cost",
            0.07,
            200,
            null,
            ["a@p:chosen", ",", "", "b@q:filtered:tools"],
            null
        ]);
        assert_eq!(String::from_utf8(ours).unwrap(), want.to_string());
    }

    /// Records alternating between keys count in each key's session, whether found
    /// as the last record's key or through the index, also after a sweep dropped
    /// idle sessions and moved the others.
    #[test]
    fn sessions_follow_interleaved_keys_across_sweeps() {
        let mut d = Derived::new("n", 1, None);
        let mut out = Vec::new();
        let feed = |d: &mut Derived, key: &str, ts: u64| {
            let mut r = rec("p", 5, 200, key);
            r.ts_unix_ms = ts;
            let json = serde_json::to_vec(&r).unwrap();
            d.record(&RecordView::parse(&json).unwrap(), "m", &mut Vec::new());
        };
        let sessions = |d: &mut Derived, now: u64, out: &mut Vec<AuxMessage>| {
            out.clear();
            d.sessions(now, out);
            let mut got: Vec<(String, u64, u64)> = out
                .iter()
                .map(|m| {
                    let s: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
                    (
                        s["key_id"].as_str().unwrap().to_string(),
                        s["requests"].as_u64().unwrap(),
                        s["tokens"].as_u64().unwrap(),
                    )
                })
                .collect();
            got.sort();
            got
        };
        for (key, ts) in [("a", 1000), ("b", 1000), ("a", 1000), ("c", 5000)] {
            feed(&mut d, key, ts);
        }
        assert_eq!(sessions(&mut d, 5000, &mut out), [("a".into(), 2, 14), ("b".into(), 1, 7), ("c".into(), 1, 7)]);
        // `a` and `b` are idle for two windows: dropped; `c` moves to the front.
        assert_eq!(sessions(&mut d, 4500, &mut out), []);
        assert_eq!(d.sessions.len(), 1);
        for (key, ts) in [("c", 5100), ("a", 5100), ("c", 5200)] {
            feed(&mut d, key, ts);
        }
        assert_eq!(sessions(&mut d, 5200, &mut out), [("a".into(), 1, 7), ("c".into(), 3, 21)]);
    }

    /// A provider's `usage` is hostile: token counts near `u64::MAX` saturate a
    /// session's total instead of wrapping (or panicking in a debug build).
    #[test]
    fn session_tokens_saturate_on_hostile_usage() {
        let mut d = Derived::new("n", 60, None);
        for _ in 0..2 {
            let mut r = rec("p", 5, 200, "k");
            r.tokens_in = u64::MAX - 1;
            r.tokens_out = 5;
            let json = serde_json::to_vec(&r).unwrap();
            d.record(&RecordView::parse(&json).unwrap(), "m", &mut Vec::new());
        }
        let mut out = Vec::new();
        d.sessions(1000, &mut out);
        let s: serde_json::Value = serde_json::from_slice(&out[0].body).unwrap();
        assert_eq!((s["requests"].as_u64(), s["tokens"].as_u64()), (Some(2), Some(u64::MAX)));
    }

    /// Records alternating between providers land in each one's window, whether
    /// found as the last record's provider or through the index.
    #[test]
    fn provider_windows_follow_interleaved_records() {
        let mut d = Derived::new("n", 60, None);
        let mut out = Vec::new();
        for (i, p) in ["a", "b", "b", "a", "c", "a"].into_iter().enumerate() {
            let json = serde_json::to_vec(&rec(p, 1000 * (i as u64 + 1), 200, "k")).unwrap();
            d.record(&RecordView::parse(&json).unwrap(), &format!("m{i}"), &mut out);
        }
        d.health(5000, 5000, &mut out);
        let mut counts: Vec<(String, u64, u64)> = out
            .iter()
            .filter(|m| m.stream == AuxStream::Health)
            .map(|m| {
                let h: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
                let p = h["provider"].as_str().unwrap().to_string();
                (p, h["requests"].as_u64().unwrap(), h["latency_us_p99"].as_u64().unwrap())
            })
            .collect();
        counts.sort();
        assert_eq!(counts, [("a".into(), 3, 6000), ("b".into(), 2, 3000), ("c".into(), 1, 5000)]);
    }

    /// A stored batch's decision buffer is written again by the next batch: same
    /// bytes as a fresh one, no new buffer.
    #[test]
    fn the_next_batch_reuses_the_decision_buffer() {
        let json = serde_json::to_vec(&rec("p", 5, 200, "k")).unwrap();
        let view = RecordView::parse(&json).unwrap();
        let mut d = Derived::new("n", 60, None);
        let mut first = Vec::new();
        d.record(&view, "m1", &mut first);
        d.flush_routes(&mut first);
        let want = first[0].body.clone();
        d.reuse_routes_body(&mut first);
        assert!(first[0].body.is_empty(), "taken back");
        let kept = d.routes.body.as_ptr();
        let mut second = Vec::new();
        d.record(&view, "m1", &mut second);
        d.flush_routes(&mut second);
        assert_eq!(second[0].body, want);
        assert_eq!(second[0].body.as_ptr(), kept, "written into the kept buffer");
        // Nothing to take back while a batch is being written.
        d.record(&view, "m2", &mut Vec::new());
        d.reuse_routes_body(&mut second);
        assert_eq!(second[0].body, want);
    }

    #[test]
    fn subject_tokens_are_safe() {
        assert_eq!(subject_token("a.b c>*"), "a_b_c__");
        assert_eq!(subject_token(""), "_");
    }
}
