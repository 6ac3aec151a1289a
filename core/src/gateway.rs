//! The gateway as the shards see it: process-wide tables built once from config
//! ([`Gateway`]), and the per-shard state and HTTP routes ([`ShardGateway`]).

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatekeeper_net::upstream::{tls_client_config, Origin, Pool, PoolConfig};
use gatekeeper_net::{Handler, ProtocolError, Request, Responder, ShardContext, ShardStats};

use crate::bridge::ShardAudit;
use crate::config::{Config, ProviderKind};
use crate::error::GatewayError;
use crate::keys::{ShardVerifier, Verifier};
use crate::metrics::{MetricsView, RequestIds, ShardMetrics};

/// Largest response body read from a provider for a non-streamed answer.
pub const UPSTREAM_BODY_BYTES_MAX: usize = 64 * 1024 * 1024;

/// A provider as the gateway runs it.
pub struct ProviderInfo {
    /// Name from config.
    pub name: String,
    /// Wire format.
    pub kind: ProviderKind,
    /// Where it lives.
    pub origin: Origin,
    /// `Authorization` value sent upstream (`Bearer …`), if any.
    pub authorization: Option<String>,
    /// Pool settings (per shard).
    pub pool: PoolConfig,
    /// TLS client settings, for https origins.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// One deployment of a model name on a provider.
pub struct Deployment {
    /// Index into [`Gateway::providers`].
    pub provider: usize,
    /// The provider's model id.
    pub upstream_model: String,
    /// The upstream model id as a JSON string literal, ready to splice into a body.
    pub upstream_model_json: String,
    /// USD per 1,000 prompt tokens.
    pub price_per_1k_input: f64,
    /// USD per 1,000 completion tokens.
    pub price_per_1k_output: f64,
}

/// Process-wide, read-only state shared by every shard.
pub struct Gateway {
    /// Providers in config order.
    pub providers: Vec<ProviderInfo>,
    /// Client-facing model names, sorted; indexes metrics.
    pub model_names: Vec<String>,
    /// Deployments of each model name, in failover order.
    pub deployments: HashMap<String, (usize, Vec<Deployment>)>,
    /// Offline key verification; `None` with `--no-auth`.
    pub verifier: Option<Arc<Verifier>>,
    /// Per-shard gateway metrics.
    pub metrics: Arc<[ShardMetrics]>,
    /// Request id source.
    pub request_ids: RequestIds,
    /// Set when shutdown starts: `/readyz` turns 503.
    pub draining: AtomicBool,
    /// Provider names, indexes metrics.
    pub provider_names: Vec<String>,
    /// The audit bridge; `None` where a gateway is built without serving (benches).
    pub bridge: Option<Arc<crate::bridge::Bridge>>,
}

/// Why the gateway could not be assembled from a config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A config value that validated but cannot be used as is.
    #[error("{path}: {message}")]
    Config {
        /// Where.
        path: String,
        /// What.
        message: String,
    },
}

impl Gateway {
    /// Builds the tables from a validated config.
    pub fn build(config: &Config, shards: usize, no_auth: bool) -> Result<Gateway, BuildError> {
        let bad = |path: String, message: String| BuildError::Config { path, message };
        let mut providers = Vec::with_capacity(config.providers.len());
        for (i, p) in config.providers.iter().enumerate() {
            if p.kind == ProviderKind::Anthropic {
                return Err(bad(
                    format!("providers[{i}].kind"),
                    "anthropic is not supported yet; use openai or openai_compatible".into(),
                ));
            }
            let origin =
                Origin::parse(&p.base_url).map_err(|e| bad(format!("providers[{i}].base_url"), e.to_string()))?;
            let tls = if origin.https {
                Some(
                    tls_client_config(p.ca_file.as_deref())
                        .map_err(|e| bad(format!("providers[{i}].ca_file"), e.to_string()))?,
                )
            } else {
                None
            };
            let pool = PoolConfig {
                connect_timeout_ms: p.connect_timeout_ms,
                first_byte_timeout_ms: p.first_byte_timeout_ms,
                read_idle_timeout_ms: p.read_idle_timeout_ms,
                pool_idle_timeout_ms: p.pool_idle_timeout_ms,
                connections_max: p.connections_max,
                queue_max: p.queue_max,
                ..PoolConfig::default()
            };
            providers.push(ProviderInfo {
                name: p.name.clone(),
                kind: p.kind,
                origin,
                authorization: p.api_key.as_ref().filter(|k| !k.is_empty()).map(|k| format!("Bearer {k}")),
                pool,
                tls,
            });
        }
        let mut model_names: Vec<String> = config.models.iter().map(|m| m.name.clone()).collect();
        model_names.sort();
        model_names.dedup();
        let mut deployments = HashMap::new();
        for (index, name) in model_names.iter().enumerate() {
            let list = config
                .deployments_of(name)
                .into_iter()
                .filter_map(|m| {
                    let provider = providers.iter().position(|p| p.name == m.provider)?;
                    Some(Deployment {
                        provider,
                        upstream_model: m.upstream_model.clone(),
                        upstream_model_json: serde_json::to_string(&m.upstream_model).ok()?,
                        price_per_1k_input: m.price_per_1k_input,
                        price_per_1k_output: m.price_per_1k_output,
                    })
                })
                .collect();
            deployments.insert(name.clone(), (index, list));
        }
        let verifier =
            match (&config.keys, no_auth) {
                (_, true) => None,
                (Some(keys), false) => {
                    Some(Arc::new(Verifier::from_config(keys).map_err(|e| bad("keys".into(), e.to_string()))?))
                }
                (None, false) => return Err(bad(
                    "keys".into(),
                    "no `keys` section: add an issuer (`gatekeeper keys gen-issuer --out issuer.key`, then list its \
                     public key under keys.issuers), or run with --no-auth for a local trial"
                        .into(),
                )),
            };
        let provider_names: Vec<String> = providers.iter().map(|p| p.name.clone()).collect();
        let metrics: Arc<[ShardMetrics]> =
            (0..shards).map(|_| ShardMetrics::new(model_names.len(), providers.len())).collect();
        Ok(Gateway {
            providers,
            model_names,
            deployments,
            verifier,
            metrics,
            request_ids: RequestIds::new(),
            draining: AtomicBool::new(false),
            provider_names,
            bridge: None,
        })
    }
}

/// Per-shard health of one provider.
#[derive(Default)]
pub struct ProviderHealth {
    /// The provider asked us (Retry-After) not to call before this instant.
    pub blocked_until: Cell<Option<Instant>>,
}

/// A shard's view of the gateway: its own pools, caches and health.
pub struct ShardGateway {
    /// Shared tables.
    pub gw: Arc<Gateway>,
    /// This shard's index.
    pub index: usize,
    /// One pool per provider.
    pub pools: Vec<Pool>,
    /// One health record per provider.
    pub health: Vec<ProviderHealth>,
    /// This shard's key verifier.
    pub keys: Option<ShardVerifier>,
    /// Connection statistics of every shard.
    pub net_stats: Arc<[ShardStats]>,
    inflight: Cell<u64>,
    /// This shard's audit spool; `None` only where a gateway runs without a bridge.
    pub audit: Option<ShardAudit>,
    /// `BH_CONFIG` generation this shard last applied.
    pub config_seen: Cell<u64>,
}

/// How often a shard copies its pool and key statistics into the shared metrics.
const STATS_EVERY: Duration = Duration::from_millis(500);

impl ShardGateway {
    /// Builds the shard's state; runs on the shard's own thread.
    pub fn new(gw: Arc<Gateway>, ctx: &ShardContext, audit: Option<ShardAudit>) -> Rc<ShardGateway> {
        let pools = gw.providers.iter().map(|p| Pool::new(p.origin.clone(), p.pool.clone(), p.tls.clone())).collect();
        let health = gw.providers.iter().map(|_| ProviderHealth::default()).collect();
        let keys = gw.verifier.as_ref().map(|v| v.shard());
        let shard = Rc::new(ShardGateway {
            gw,
            index: ctx.index,
            pools,
            health,
            keys,
            net_stats: ctx.stats.clone(),
            inflight: Cell::new(0),
            audit,
            config_seen: Cell::new(0),
        });
        let weak = Rc::downgrade(&shard);
        monoio::spawn(async move {
            while let Some(shard) = weak.upgrade() {
                shard.publish_stats();
                drop(shard);
                monoio::time::sleep(STATS_EVERY).await;
            }
        });
        shard
    }

    /// This shard's metrics.
    pub fn metrics(&self) -> &ShardMetrics {
        &self.gw.metrics[self.index]
    }

    /// Hands a finished request's audit record to the audit log. `Ok` means it survives
    /// a kill of the process; an error means the request must not be reported as a success.
    pub fn audit_submit(&self, record: &crate::audit::AuditRecord) -> Result<(), crate::audit::AuditError> {
        let Some(audit) = &self.audit else { return Ok(()) };
        audit.submit(record).inspect_err(|e| {
            tracing::error!(request_id = %record.request_id, error = %e, "audit record not written");
        })
    }

    /// Applies a `BH_CONFIG` revocation change, if there was one since the last look
    /// (one atomic load when nothing changed).
    pub fn apply_config_changes(&self) {
        if let (Some(audit), Some(keys)) = (&self.audit, &self.keys) {
            if let Some(list) = audit.config_feed().revocations_if_changed(&self.config_seen) {
                keys.set_revoked(list);
            }
        }
    }

    /// Moves the in-flight request count by `delta`.
    pub fn inflight_add(&self, delta: i64) {
        let n = self.inflight.get().saturating_add_signed(delta);
        self.inflight.set(n);
        self.metrics().inflight.set(n);
    }

    fn publish_stats(&self) {
        if let Some(keys) = &self.keys {
            let (s, g) = (keys.stats(), &self.metrics().keys);
            g.cache_hits.set(s.cache_hits);
            g.cache_misses.set(s.cache_misses);
            g.batches.set(s.work.batches);
            g.batch_signatures.set(s.work.batch_signatures);
            g.single_signatures.set(s.work.single_signatures);
        }
        for (pool, gauges) in self.pools.iter().zip(self.metrics().pools.iter()) {
            let s = pool.stats();
            gauges.idle.set(s.idle as u64);
            gauges.busy.set(s.busy as u64);
            gauges.connects_total.set(s.connects_total);
            gauges.reuses_total.set(s.reuses_total);
            gauges.exhausted_total.set(s.exhausted_total);
        }
    }

    /// Answers with an error, unless a response is already under way.
    pub async fn send_error(&self, res: &mut Responder<'_>, request_id: &str, err: &GatewayError) -> u16 {
        let e = err.to_response();
        if res.started() {
            res.abort();
            return e.status;
        }
        let retry;
        let mut headers: Vec<(&str, &[u8])> =
            vec![("Content-Type", b"application/json"), ("X-Request-Id", request_id.as_bytes())];
        if let Some(s) = e.retry_after_s {
            retry = s.to_string();
            headers.push(("Retry-After", retry.as_bytes()));
        }
        let _ = res.send(e.status, &headers, &e.body).await;
        e.status
    }

    async fn models(&self, req: &Request, res: &mut Responder<'_>) {
        let request_id = self.gw.request_ids.next();
        let claims = match crate::pipeline::authenticate(self, req).await {
            Ok(c) => c,
            Err(e) => {
                self.send_error(res, &request_id, &e).await;
                return;
            }
        };
        let data: Vec<serde_json::Value> = self
            .gw
            .model_names
            .iter()
            .filter(|m| claims.as_ref().is_none_or(|c| c.allows_model(m)))
            .map(|m| {
                let owner = self.gw.deployments.get(m).and_then(|(_, d)| d.first()).map(|d| d.provider);
                let owned_by = owner.and_then(|p| self.gw.provider_names.get(p)).map_or("gatekeeper", String::as_str);
                serde_json::json!({ "id": m, "object": "model", "created": 0, "owned_by": owned_by })
            })
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({ "object": "list", "data": data })).unwrap_or_default();
        let _ = res
            .send(200, &[("Content-Type", b"application/json"), ("X-Request-Id", request_id.as_bytes())], &body)
            .await;
    }

    async fn readyz(&self, res: &mut Responder<'_>) {
        let draining = self.gw.draining.load(Ordering::Relaxed);
        let auth = if self.gw.verifier.is_some() { "enabled" } else { "DISABLED (--no-auth)" };
        let drivers: Vec<&str> = self.net_stats.iter().map(|s| s.driver().map_or("starting", |d| d.name())).collect();
        let body = serde_json::json!({
            "status": if draining { "draining" } else { "ready" },
            "auth": auth,
            "shards": drivers.len(),
            "drivers": drivers,
            "providers": self.gw.provider_names,
        });
        let status = if draining { 503 } else { 200 };
        let _ = res.send(status, &[("Content-Type", b"application/json")], body.to_string().as_bytes()).await;
    }

    async fn metrics_text(&self, res: &mut Responder<'_>) {
        let text = MetricsView {
            shards: &self.gw.metrics,
            net: &self.net_stats,
            model_names: &self.gw.model_names,
            provider_names: &self.gw.provider_names,
        }
        .render();
        let _ = res.send(200, &[("Content-Type", b"text/plain; version=0.0.4")], text.as_bytes()).await;
    }
}

/// The handler a shard runs: an `Rc` so background tasks can hold the shard too.
pub struct ShardHandler(pub Rc<ShardGateway>);

impl Handler for ShardHandler {
    async fn handle(&self, req: Request, res: &mut Responder<'_>) {
        let shard = &*self.0;
        let route = (req.method(), req.path());
        match route {
            ("POST", "/v1/chat/completions") => crate::pipeline::chat_completions(shard, req, res).await,
            ("GET", "/v1/models") => shard.models(&req, res).await,
            ("GET", "/healthz") => {
                let _ = res.send(200, &[("Content-Type", b"application/json")], b"{\"status\":\"ok\"}").await;
            }
            ("GET", "/readyz") => shard.readyz(res).await,
            ("GET", "/metrics") => shard.metrics_text(res).await,
            (method, path) => {
                let known: Option<&'static str> = match path {
                    "/v1/chat/completions" => Some("/v1/chat/completions"),
                    "/v1/models" => Some("/v1/models"),
                    "/healthz" => Some("/healthz"),
                    "/readyz" => Some("/readyz"),
                    "/metrics" => Some("/metrics"),
                    _ => None,
                };
                let err = match known {
                    Some(path) => GatewayError::MethodNotAllowed { method: method.to_string(), path },
                    None => GatewayError::NotFound(path.chars().take(200).collect()),
                };
                let id = shard.gw.request_ids.next();
                let status = shard.send_error(res, &id, &err).await;
                shard.metrics().record_request(None, None, status, 0);
            }
        }
    }

    fn protocol_error_body(&self, err: &ProtocolError) -> Vec<u8> {
        let status = err.status();
        self.0.metrics().record_request(None, None, status, 0);
        GatewayError::Protocol(err.clone()).to_response().body
    }
}
