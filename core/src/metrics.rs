//! Gateway metrics: each shard writes its own slots, `/metrics` reads them all.
//!
//! Label sets are fixed at start (providers, models and a small set of statuses are
//! known from config), so every series is a pre-allocated single-writer atomic and
//! recording a request is a handful of plain stores — no map lookups, no locks.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use gatekeeper_net::{Counter, Gauge, ShardStats};

use crate::router::RouteMode;

/// Statuses tracked individually; anything else lands in the last slot (`other`).
const STATUSES: [u16; 15] = [200, 400, 401, 403, 404, 405, 408, 413, 429, 431, 500, 501, 502, 503, 504];
/// One slot per tracked status, plus `other`.
const STATUS_SLOTS: usize = STATUSES.len() + 1;

/// Upper bounds of the end-to-end latency buckets, µs.
pub const LATENCY_BUCKETS_US: [u64; 16] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000, 30_000_000, 60_000_000,
];
/// Upper bounds of the gateway-overhead buckets, µs.
pub const OVERHEAD_BUCKETS_US: [u64; 14] = [5, 10, 20, 35, 50, 75, 100, 150, 250, 500, 1_000, 2_500, 5_000, 10_000];

fn status_slot(status: u16) -> usize {
    STATUSES.iter().position(|s| *s == status).unwrap_or(STATUS_SLOTS - 1)
}

/// A histogram written by one shard.
#[derive(Debug)]
pub struct Histogram<const N: usize> {
    bounds_us: &'static [u64; N],
    buckets: [Counter; N],
    overflow: Counter,
    sum_us: Counter,
}

impl<const N: usize> Histogram<N> {
    fn new(bounds_us: &'static [u64; N]) -> Self {
        Histogram {
            bounds_us,
            buckets: std::array::from_fn(|_| Counter::default()),
            overflow: Counter::default(),
            sum_us: Counter::default(),
        }
    }

    /// Records one observation. Only the owning shard may call this.
    pub fn record(&self, value_us: u64) {
        match self.bounds_us.iter().position(|b| value_us <= *b) {
            Some(i) => self.buckets[i].inc(),
            None => self.overflow.inc(),
        }
        self.sum_us.add(value_us);
    }
}

/// Per-provider upstream pool statistics, copied in by the owning shard.
#[derive(Debug, Default)]
pub struct PoolGauges {
    /// Idle pooled connections.
    pub idle: Gauge,
    /// Connections carrying a request.
    pub busy: Gauge,
    /// Connections opened since start.
    pub connects_total: Gauge,
    /// Requests sent on a reused connection.
    pub reuses_total: Gauge,
    /// Requests that found the pool full.
    pub exhausted_total: Gauge,
}

/// Key-verification statistics, copied in by the owning shard.
#[derive(Debug, Default)]
pub struct KeyGauges {
    /// Keys answered from the shard's cache.
    pub cache_hits: Gauge,
    /// Keys that needed a signature check.
    pub cache_misses: Gauge,
    /// Batch signature checks run.
    pub batches: Gauge,
    /// Signatures checked in batches.
    pub batch_signatures: Gauge,
    /// Signatures checked one by one.
    pub single_signatures: Gauge,
}

/// Budget refusal reasons, in slot order (`gatekeeper_budget_refusals_total{reason}`).
pub const BUDGET_REFUSAL_REASONS: [&str; 6] =
    ["tokens_per_minute", "tokens_per_day", "tokens_per_month", "usd_per_month", "rpm", "table_full"];

/// The budget step's counters, written by the owning shard.
#[derive(Debug, Default)]
pub struct BudgetMetrics {
    /// Requests refused, by [`BUDGET_REFUSAL_REASONS`].
    pub refusals: [Counter; 6],
    /// Tokens reserved by this shard's requests in flight.
    pub reserved_tokens: Gauge,
    /// Budgeted requests admitted.
    pub admitted: Counter,
    /// Tokens settled into budgets.
    pub settled_tokens: Counter,
}

impl BudgetMetrics {
    /// Counts a refusal for reason `slot` (an index into [`BUDGET_REFUSAL_REASONS`]).
    pub fn refused(&self, slot: usize) {
        if let Some(c) = self.refusals.get(slot) {
            c.inc();
        }
    }
}

/// The modes decisions are counted by, in slot order.
const ROUTE_MODES: [RouteMode; 3] = [RouteMode::Cost, RouteMode::Latency, RouteMode::Capability];

/// One shard's gateway metrics.
#[derive(Debug)]
pub struct ShardMetrics {
    /// requests[model][provider][status]; model and provider have an extra "none" slot at the end.
    requests: Vec<Counter>,
    /// Failover attempts that failed, per provider.
    pub upstream_failures: Vec<Counter>,
    /// Relayed streams ended because the provider sent nothing for `chunk_timeout_ms`, per provider.
    pub stream_stalls: Vec<Counter>,
    /// End-to-end latency per provider (extra slot: no provider).
    latency: Vec<Histogram<16>>,
    /// Time spent inside the gateway, upstream excluded.
    pub overhead: Histogram<14>,
    /// Pool statistics per provider.
    pub pools: Vec<PoolGauges>,
    /// Key-verification statistics.
    pub keys: KeyGauges,
    /// Requests in flight.
    pub inflight: Gauge,
    /// Requests refused at the key check whose audit record was left out (over
    /// `audit.unauthenticated_records_per_s`).
    pub unauthenticated_unrecorded: Counter,
    /// Credit spends accepted (nullifier recorded).
    pub credit_spends: Counter,
    /// Credit spends refused, per [`crate::credit::error::REJECTION_REASONS`].
    pub credit_rejections: [Counter; crate::credit::error::REJECTION_REASONS.len()],
    /// Time to decode and verify a spend's proof.
    pub credit_verify: Histogram<14>,
    /// Prompt tokens reported by providers, per provider.
    tokens_in: Vec<Counter>,
    /// Completion tokens reported by providers, per provider.
    tokens_out: Vec<Counter>,
    /// Routing decisions, decisions[mode][model] (model has an extra "none" slot).
    decisions: Vec<Counter>,
    /// The budget step's counters.
    pub budget: BudgetMetrics,
    models: usize,
    providers: usize,
}

impl ShardMetrics {
    /// Slots for `models` model names and `providers` providers.
    pub fn new(models: usize, providers: usize) -> Self {
        ShardMetrics {
            requests: (0..(models + 1) * (providers + 1) * STATUS_SLOTS).map(|_| Counter::default()).collect(),
            upstream_failures: (0..providers).map(|_| Counter::default()).collect(),
            stream_stalls: (0..providers).map(|_| Counter::default()).collect(),
            latency: (0..=providers).map(|_| Histogram::new(&LATENCY_BUCKETS_US)).collect(),
            overhead: Histogram::new(&OVERHEAD_BUCKETS_US),
            credit_spends: Counter::default(),
            credit_rejections: Default::default(),
            credit_verify: Histogram::new(&OVERHEAD_BUCKETS_US),
            pools: (0..providers).map(|_| PoolGauges::default()).collect(),
            keys: KeyGauges::default(),
            inflight: Gauge::default(),
            unauthenticated_unrecorded: Counter::default(),
            tokens_in: (0..providers).map(|_| Counter::default()).collect(),
            tokens_out: (0..providers).map(|_| Counter::default()).collect(),
            decisions: (0..ROUTE_MODES.len() * (models + 1)).map(|_| Counter::default()).collect(),
            budget: BudgetMetrics::default(),
            models,
            providers,
        }
    }

    /// Adds a provider's reported token usage.
    pub fn record_tokens(&self, provider: usize, prompt: u64, completion: u64) {
        if let (Some(i), Some(o)) = (self.tokens_in.get(provider), self.tokens_out.get(provider)) {
            i.add(prompt);
            o.add(completion);
        }
    }

    /// Counts a routing decision in `mode` that chose `model` (`None`: none chosen).
    pub fn record_decision(&self, mode: RouteMode, model: Option<usize>) {
        let mode = ROUTE_MODES.iter().position(|m| *m == mode).unwrap_or(0);
        let m = model.unwrap_or(self.models).min(self.models);
        if let Some(c) = self.decisions.get(mode * (self.models + 1) + m) {
            c.inc();
        }
    }

    /// Records a finished request. `None` for a model or provider the request never reached.
    pub fn record_request(&self, model: Option<usize>, provider: Option<usize>, status: u16, latency_us: u64) {
        let m = model.unwrap_or(self.models).min(self.models);
        let p = provider.unwrap_or(self.providers).min(self.providers);
        let i = (m * (self.providers + 1) + p) * STATUS_SLOTS + status_slot(status);
        if let Some(c) = self.requests.get(i) {
            c.inc();
        }
        if let Some(h) = self.latency.get(p) {
            h.record(latency_us);
        }
    }
}

/// Everything `/metrics` needs to render the whole process.
pub struct MetricsView<'a> {
    /// Gateway metrics of every shard.
    pub shards: &'a [ShardMetrics],
    /// Connection statistics of every shard.
    pub net: &'a [ShardStats],
    /// Model names, indexed as in [`ShardMetrics`].
    pub model_names: &'a [String],
    /// Provider names, indexed as in [`ShardMetrics`].
    pub provider_names: &'a [String],
    /// The newest signed audit checkpoint: chain, entries covered, hex root.
    pub checkpoint: Option<(String, u64, String)>,
    /// Per provider: answers refusing the gateway's own settings (401/403/404).
    pub operator_errors: Vec<u64>,
}

impl MetricsView<'_> {
    /// Renders the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let models = self.model_names.len();
        let providers = self.provider_names.len();
        let model_label = |m: usize| self.model_names.get(m).map_or("none", String::as_str);
        let provider_label = |p: usize| self.provider_names.get(p).map_or("none", String::as_str);

        header(&mut out, "gatekeeper_requests_total", "counter", "Requests answered, by status, provider and model.");
        for m in 0..=models {
            for p in 0..=providers {
                for s in 0..STATUS_SLOTS {
                    let i = (m * (providers + 1) + p) * STATUS_SLOTS + s;
                    let v: u64 = self.shards.iter().filter_map(|sh| sh.requests.get(i)).map(Counter::get).sum();
                    if v == 0 {
                        continue;
                    }
                    let status = STATUSES.get(s).map_or_else(|| "other".to_string(), u16::to_string);
                    let _ = writeln!(
                        out,
                        "gatekeeper_requests_total{{status=\"{status}\",provider=\"{}\",model=\"{}\"}} {v}",
                        provider_label(p),
                        model_label(m)
                    );
                }
            }
        }

        header(
            &mut out,
            "gatekeeper_upstream_failures_total",
            "counter",
            "Provider attempts that failed and caused failover.",
        );
        for p in 0..providers {
            let v: u64 = self.shards.iter().filter_map(|sh| sh.upstream_failures.get(p)).map(Counter::get).sum();
            let _ = writeln!(out, "gatekeeper_upstream_failures_total{{provider=\"{}\"}} {v}", provider_label(p));
        }

        header(&mut out, "gatekeeper_route_decisions_total", "counter", "Routing decisions, by mode and chosen model.");
        for (mi, mode) in ROUTE_MODES.iter().enumerate() {
            for m in 0..=models {
                let i = mi * (models + 1) + m;
                let v: u64 = self.shards.iter().filter_map(|sh| sh.decisions.get(i)).map(Counter::get).sum();
                if v > 0 {
                    let (mode, model) = (mode.as_str(), model_label(m));
                    let _ = writeln!(out, "gatekeeper_route_decisions_total{{mode=\"{mode}\",model=\"{model}\"}} {v}");
                }
            }
        }

        header(
            &mut out,
            "gatekeeper_upstream_stream_stalls_total",
            "counter",
            "Relayed streams ended because the provider sent nothing for chunk_timeout_ms.",
        );
        for p in 0..providers {
            let v: u64 = self.shards.iter().filter_map(|sh| sh.stream_stalls.get(p)).map(Counter::get).sum();
            let _ = writeln!(out, "gatekeeper_upstream_stream_stalls_total{{provider=\"{}\"}} {v}", provider_label(p));
        }

        header(
            &mut out,
            "gatekeeper_tokens_total",
            "counter",
            "Tokens reported by providers, by provider and direction.",
        );
        for p in 0..providers {
            let sum = |pick: fn(&ShardMetrics) -> &Vec<Counter>| -> u64 {
                self.shards.iter().filter_map(|sh| pick(sh).get(p)).map(Counter::get).sum()
            };
            let (prompt, completion) = (sum(|sh| &sh.tokens_in), sum(|sh| &sh.tokens_out));
            let name = provider_label(p);
            let _ = writeln!(out, "gatekeeper_tokens_total{{provider=\"{name}\",direction=\"prompt\"}} {prompt}");
            let _ =
                writeln!(out, "gatekeeper_tokens_total{{provider=\"{name}\",direction=\"completion\"}} {completion}");
        }

        header(
            &mut out,
            "gatekeeper_request_duration_seconds",
            "histogram",
            "End-to-end request latency, by provider.",
        );
        for p in 0..=providers {
            let hs: Vec<&Histogram<16>> = self.shards.iter().filter_map(|sh| sh.latency.get(p)).collect();
            write_histogram(
                &mut out,
                "gatekeeper_request_duration_seconds",
                &format!("provider=\"{}\"", provider_label(p)),
                &hs,
            );
        }

        header(
            &mut out,
            "gatekeeper_overhead_seconds",
            "histogram",
            "Time spent inside the gateway, upstream excluded.",
        );
        let hs: Vec<&Histogram<14>> = self.shards.iter().map(|sh| &sh.overhead).collect();
        write_histogram(&mut out, "gatekeeper_overhead_seconds", "", &hs);

        header(&mut out, "gatekeeper_credit_spends_total", "counter", "Anonymous credit spends accepted.");
        let v: u64 = self.shards.iter().map(|sh| sh.credit_spends.get()).sum();
        let _ = writeln!(out, "gatekeeper_credit_spends_total {v}");
        header(
            &mut out,
            "gatekeeper_credit_rejections_total",
            "counter",
            "Anonymous credit spends refused, by reason.",
        );
        for (i, reason) in crate::credit::error::REJECTION_REASONS.iter().enumerate() {
            let v: u64 = self.shards.iter().map(|sh| sh.credit_rejections[i].get()).sum();
            let _ = writeln!(out, "gatekeeper_credit_rejections_total{{reason=\"{reason}\"}} {v}");
        }
        header(
            &mut out,
            "gatekeeper_credit_verify_seconds",
            "histogram",
            "Time to decode and verify an anonymous credit spend.",
        );
        let hs: Vec<&Histogram<14>> = self.shards.iter().map(|sh| &sh.credit_verify).collect();
        write_histogram(&mut out, "gatekeeper_credit_verify_seconds", "", &hs);

        header(&mut out, "gatekeeper_inflight_requests", "gauge", "Requests in flight, per shard.");
        for (i, sh) in self.shards.iter().enumerate() {
            let _ = writeln!(out, "gatekeeper_inflight_requests{{shard=\"{i}\"}} {}", sh.inflight.get());
        }

        header(&mut out, "gatekeeper_budget_refusals_total", "counter", "Requests refused by a budget, by limit.");
        for (i, reason) in BUDGET_REFUSAL_REASONS.iter().enumerate() {
            let v: u64 = self.shards.iter().filter_map(|sh| sh.budget.refusals.get(i)).map(Counter::get).sum();
            let _ = writeln!(out, "gatekeeper_budget_refusals_total{{reason=\"{reason}\"}} {v}");
        }
        header(
            &mut out,
            "gatekeeper_budget_reserved_tokens",
            "gauge",
            "Tokens reserved by budgeted requests in flight, per shard.",
        );
        for (i, sh) in self.shards.iter().enumerate() {
            let _ =
                writeln!(out, "gatekeeper_budget_reserved_tokens{{shard=\"{i}\"}} {}", sh.budget.reserved_tokens.get());
        }
        header(&mut out, "gatekeeper_budget_admitted_total", "counter", "Budgeted requests admitted.");
        let v: u64 = self.shards.iter().map(|sh| sh.budget.admitted.get()).sum();
        let _ = writeln!(out, "gatekeeper_budget_admitted_total {v}");
        header(&mut out, "gatekeeper_budget_settled_tokens_total", "counter", "Tokens settled into budgets.");
        let v: u64 = self.shards.iter().map(|sh| sh.budget.settled_tokens.get()).sum();
        let _ = writeln!(out, "gatekeeper_budget_settled_tokens_total {v}");

        header(
            &mut out,
            "gatekeeper_audit_unauthenticated_unrecorded_total",
            "counter",
            "Requests refused at the key check that were not audited (over audit.unauthenticated_records_per_s).",
        );
        let v: u64 = self.shards.iter().map(|sh| sh.unauthenticated_unrecorded.get()).sum();
        let _ = writeln!(out, "gatekeeper_audit_unauthenticated_unrecorded_total {v}");

        header(
            &mut out,
            "gatekeeper_provider_config_rejections_total",
            "counter",
            "Provider answers refusing the gateway's own settings (401, 403, 404: api_key, base_url or upstream_model).",
        );
        for (p, n) in self.operator_errors.iter().enumerate() {
            let _ =
                writeln!(out, "gatekeeper_provider_config_rejections_total{{provider=\"{}\"}} {n}", provider_label(p));
        }

        if let Some((chain, size, root)) = &self.checkpoint {
            header(
                &mut out,
                "gatekeeper_audit_checkpoint_entries",
                "gauge",
                "Entries covered by the newest signed audit checkpoint, with its Merkle root.",
            );
            let _ = writeln!(out, "gatekeeper_audit_checkpoint_entries{{chain=\"{chain}\",root=\"{root}\"}} {size}");
        }

        type PoolField = fn(&PoolGauges) -> &Gauge;
        let pool_series: [(&str, &str, &str, PoolField); 5] = [
            ("gatekeeper_upstream_pool_idle_connections", "gauge", "Idle pooled upstream connections.", |g| &g.idle),
            ("gatekeeper_upstream_pool_busy_connections", "gauge", "Upstream connections carrying a request.", |g| {
                &g.busy
            }),
            ("gatekeeper_upstream_connects_total", "counter", "Upstream connections opened.", |g| &g.connects_total),
            ("gatekeeper_upstream_reuses_total", "counter", "Requests sent on a reused upstream connection.", |g| {
                &g.reuses_total
            }),
            (
                "gatekeeper_upstream_pool_exhausted_total",
                "counter",
                "Requests that found the upstream pool full.",
                |g| &g.exhausted_total,
            ),
        ];
        for (name, kind, help, field) in pool_series {
            header(&mut out, name, kind, help);
            for p in 0..providers {
                let v: u64 = self.shards.iter().filter_map(|sh| sh.pools.get(p)).map(|g| field(g).get()).sum();
                let _ = writeln!(out, "{name}{{provider=\"{}\"}} {v}", provider_label(p));
            }
        }

        type KeyField = fn(&KeyGauges) -> &Gauge;
        let key_series: [(&str, &str, KeyField); 5] = [
            ("gatekeeper_key_cache_hits_total", "API keys answered from a shard's cache.", |k| &k.cache_hits),
            ("gatekeeper_key_cache_misses_total", "API keys that needed a signature check.", |k| &k.cache_misses),
            ("gatekeeper_key_batches_total", "Batched Ed25519 signature checks run.", |k| &k.batches),
            ("gatekeeper_key_batch_signatures_total", "Signatures checked in batches.", |k| &k.batch_signatures),
            ("gatekeeper_key_single_signatures_total", "Signatures checked one by one.", |k| &k.single_signatures),
        ];
        for (name, help, field) in key_series {
            header(&mut out, name, "counter", help);
            let v: u64 = self.shards.iter().map(|sh| field(&sh.keys).get()).sum();
            let _ = writeln!(out, "{name} {v}");
        }

        header(&mut out, "gatekeeper_shard_driver", "gauge", "I/O driver each shard runs (1 for the named driver).");
        for (i, st) in self.net.iter().enumerate() {
            let driver = st.driver().map_or("starting", |d| d.name());
            let _ = writeln!(out, "gatekeeper_shard_driver{{shard=\"{i}\",driver=\"{driver}\"}} 1");
        }
        type NetField = fn(&ShardStats) -> u64;
        let net_series: [(&str, &str, &str, NetField); 9] = [
            ("gatekeeper_connections_open", "gauge", "Client connections open, per shard.", |s| {
                s.connections_open.get()
            }),
            ("gatekeeper_connections_accepted_total", "counter", "Client connections accepted.", |s| {
                s.connections_accepted_total.get()
            }),
            (
                "gatekeeper_connections_rejected_total",
                "counter",
                "Client connections refused at the per-shard cap.",
                |s| s.connections_rejected_total.get(),
            ),
            ("gatekeeper_tls_handshake_failures_total", "counter", "Failed TLS handshakes.", |s| {
                s.tls_handshake_failures_total.get()
            }),
            ("gatekeeper_http_requests_read_total", "counter", "Requests read from clients.", |s| {
                s.requests_total.get()
            }),
            ("gatekeeper_protocol_errors_total", "counter", "Requests refused for breaking HTTP or a limit.", |s| {
                s.protocol_errors_total.get()
            }),
            (
                "gatekeeper_body_bytes_in_flight",
                "gauge",
                "Request body bytes a shard holds or has admitted (limits.body_bytes_in_flight_max).",
                |s| s.body_bytes_in_flight.get(),
            ),
            (
                "gatekeeper_write_timeouts_total",
                "counter",
                "Client connections closed for not reading within limits.write_timeout_ms.",
                |s| s.write_timeouts_total.get(),
            ),
            (
                "gatekeeper_shard_panics_total",
                "counter",
                "Connection tasks that panicked; each closed its connection and the shard went on.",
                |s| s.panics_total.get(),
            ),
        ];
        for (name, kind, help, field) in net_series {
            header(&mut out, name, kind, help);
            for (i, st) in self.net.iter().enumerate() {
                let _ = writeln!(out, "{name}{{shard=\"{i}\"}} {}", field(st));
            }
        }
        out
    }
}

/// A series' `# HELP` and `# TYPE` lines.
pub(crate) fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One series without labels, with its header: `(name, kind, help, value)` rows, as the
/// bridge and the credit store report their node-wide counters.
pub(crate) fn write_unlabelled(out: &mut String, rows: &[(&str, &str, &str, u64)]) {
    for &(name, kind, help, value) in rows {
        header(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
}

fn write_histogram<const N: usize>(out: &mut String, name: &str, labels: &str, hs: &[&Histogram<N>]) {
    let Some(first) = hs.first() else { return };
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cumulative = 0u64;
    for (i, bound) in first.bounds_us.iter().enumerate() {
        cumulative += hs.iter().map(|h| h.buckets[i].get()).sum::<u64>();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{}\"}} {cumulative}", *bound as f64 / 1e6);
    }
    cumulative += hs.iter().map(|h| h.overflow.get()).sum::<u64>();
    let sum_us: u64 = hs.iter().map(|h| h.sum_us.get()).sum();
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
}

/// A process-wide sequence for request ids, so ids are unique across shards.
pub struct RequestIds {
    prefix: String,
    next: AtomicU64,
}

impl RequestIds {
    /// Ids prefixed by a random per-process tag.
    pub fn new() -> Self {
        RequestIds { prefix: format!("gk-{:08x}", rand::random::<u32>()), next: AtomicU64::new(1) }
    }

    /// The next id.
    pub fn next(&self) -> String {
        format!("{}-{:x}", self.prefix, self.next.fetch_add(1, Ordering::Relaxed))
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_histograms() {
        let shards = vec![ShardMetrics::new(1, 1), ShardMetrics::new(1, 1)];
        shards[0].record_request(Some(0), Some(0), 200, 1_500);
        shards[1].record_request(Some(0), Some(0), 200, 70_000_000);
        shards[1].record_request(None, None, 404, 10);
        shards[0].overhead.record(30);
        let net = [ShardStats::default(), ShardStats::default()];
        let text = MetricsView {
            shards: &shards,
            net: &net,
            model_names: &["m".to_string()],
            provider_names: &["p".to_string()],
            checkpoint: Some(("n/i".into(), 42, "ab".into())),
            operator_errors: vec![3],
        }
        .render();
        assert!(text.contains("gatekeeper_requests_total{status=\"200\",provider=\"p\",model=\"m\"} 2"), "{text}");
        assert!(text.contains("gatekeeper_audit_checkpoint_entries{chain=\"n/i\",root=\"ab\"} 42"), "{text}");
        assert!(text.contains("gatekeeper_provider_config_rejections_total{provider=\"p\"} 3"), "{text}");
        assert!(
            text.contains("gatekeeper_requests_total{status=\"404\",provider=\"none\",model=\"none\"} 1"),
            "{text}"
        );
        assert!(text.contains("gatekeeper_request_duration_seconds_bucket{provider=\"p\",le=\"0.0025\"} 1"), "{text}");
        assert!(text.contains("gatekeeper_request_duration_seconds_bucket{provider=\"p\",le=\"+Inf\"} 2"), "{text}");
        assert!(text.contains("gatekeeper_overhead_seconds_bucket{le=\"0.000035\"} 1"), "{text}");
        assert!(text.contains("gatekeeper_shard_driver{shard=\"1\",driver=\"starting\"} 1"), "{text}");
        net[1].panics_total.inc();
        net[0].body_bytes_in_flight.set(42);
        net[1].write_timeouts_total.add(3);
        let text = MetricsView {
            shards: &shards,
            net: &net,
            model_names: &["m".to_string()],
            provider_names: &["p".to_string()],
            checkpoint: None,
            operator_errors: vec![0],
        }
        .render();
        assert!(text.contains("gatekeeper_shard_panics_total{shard=\"0\"} 0"), "{text}");
        assert!(text.contains("gatekeeper_shard_panics_total{shard=\"1\"} 1"), "{text}");
        assert!(text.contains("gatekeeper_body_bytes_in_flight{shard=\"0\"} 42"), "{text}");
        assert!(text.contains("gatekeeper_write_timeouts_total{shard=\"1\"} 3"), "{text}");
    }

    #[test]
    fn decisions_are_counted_by_mode_and_model_across_shards() {
        let shards = [ShardMetrics::new(2, 1), ShardMetrics::new(2, 1)];
        shards[0].record_decision(RouteMode::Cost, Some(1));
        shards[1].record_decision(RouteMode::Cost, Some(1));
        shards[1].record_decision(RouteMode::Capability, Some(0));
        shards[1].record_decision(RouteMode::Latency, Some(99));
        let net: Vec<ShardStats> = (0..2).map(|_| ShardStats::default()).collect();
        let text = MetricsView {
            shards: &shards,
            net: &net,
            model_names: &["a".to_string(), "b".to_string()],
            provider_names: &["p".to_string()],
            checkpoint: None,
            operator_errors: vec![0],
        }
        .render();
        assert!(text.contains("gatekeeper_route_decisions_total{mode=\"cost\",model=\"b\"} 2"), "{text}");
        assert!(text.contains("gatekeeper_route_decisions_total{mode=\"capability\",model=\"a\"} 1"), "{text}");
        assert!(text.contains("gatekeeper_route_decisions_total{mode=\"latency\",model=\"none\"} 1"), "{text}");
        assert!(!text.contains("gatekeeper_route_decisions_total{mode=\"cost\",model=\"a\"}"), "zeros left out");
    }

    #[test]
    fn unknown_status_goes_to_other() {
        assert_eq!(status_slot(200), 0);
        assert_eq!(status_slot(418), STATUS_SLOTS - 1);
        assert_eq!(status_slot(504), 14);
    }
}
