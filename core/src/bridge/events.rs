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

use crate::audit::RecordView;

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
    subjects: EventSubjects,
    latencies_us: Vec<u64>,
    count: u64,
    errors: u64,
}

impl ProviderWindow {
    fn new(provider: &str) -> ProviderWindow {
        ProviderWindow { subjects: EventSubjects::new(provider), latencies_us: Vec::new(), count: 0, errors: 0 }
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

/// A routing decision on `BH_EVENTS`: serialized as an array in [`ROUTE_FIELDS`] order.
#[derive(Serialize)]
struct RouteEvent<'a>(
    &'a str,
    u64,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Option<f64>,
    u16,
    Option<&'a str>,
    &'a [std::borrow::Cow<'a, str>],
    Option<&'a str>,
);

/// A failover on `BH_EVENTS`.
#[derive(Serialize)]
struct FailoverEvent<'a> {
    attempts: &'a [std::borrow::Cow<'a, str>],
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
    providers: HashMap<String, ProviderWindow>,
    /// Subjects of records that name no provider.
    no_provider: EventSubjects,
    sessions: HashMap<String, Session>,
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
            providers: HashMap::new(),
            no_provider: EventSubjects::new("none"),
            sessions: HashMap::new(),
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
                let w = match self.providers.get_mut(p) {
                    Some(w) => w,
                    None => self.providers.entry(p.to_string()).or_insert_with(|| ProviderWindow::new(p)),
                };
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
        let decision = RouteEvent(
            &r.request_id,
            r.ts_unix_ms,
            &r.model_requested,
            r.model_upstream.as_deref(),
            provider,
            r.route_mode.as_deref(),
            r.complexity,
            r.status,
            r.task.as_deref(),
            &r.route_candidates,
            r.route_reason.as_deref(),
        );
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
        if serde_json::to_writer(&mut batch.body, &decision).is_err() {
            batch.body.extend_from_slice(b"null");
        }
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
        if !self.sessions.contains_key(key) {
            if self.sessions.len() >= SESSIONS_MAX {
                return;
            }
            let session = Session {
                key_id: key.to_string(),
                tenant: r.tenant.as_deref().map(str::to_string),
                first_seen_ms: r.ts_unix_ms,
                last_seen_ms: r.ts_unix_ms,
                window_start_ms: r.ts_unix_ms,
                requests: 0,
                tokens: 0,
                dirty: true,
            };
            self.sessions.insert(key.to_string(), session);
        }
        let Some(s) = self.sessions.get_mut(key) else { return };
        if r.ts_unix_ms.saturating_sub(s.window_start_ms) >= self.session_window_ms {
            s.window_start_ms = r.ts_unix_ms;
            s.requests = 0;
            s.tokens = 0;
        }
        s.last_seen_ms = s.last_seen_ms.max(r.ts_unix_ms);
        s.requests += 1;
        s.tokens += r.tokens_in + r.tokens_out;
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

    /// The health report of the period just ended (and SLA alerts), resetting it.
    pub fn health(&mut self, now_ms: u64, period_ms: u64, out: &mut Vec<AuxMessage>) {
        for (provider, w) in self.providers.iter_mut() {
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
        self.sessions.retain(|_, s| now_ms.saturating_sub(s.last_seen_ms) < idle_ms || s.dirty);
        for s in self.sessions.values_mut().filter(|s| s.dirty) {
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

    #[test]
    fn subject_tokens_are_safe() {
        assert_eq!(subject_token("a.b c>*"), "a_b_c__");
        assert_eq!(subject_token(""), "_");
    }
}
