//! Which path goes where: the HTTP routes a shard serves, the admin listener's routes
//! (when `admin_listen` is set), and the small answers that are not chat completions
//! (`/v1/models`, `/healthz`, `/readyz`, `/metrics`).

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use gatekeeper_net::{Handler, ProtocolError, Request, Responder, ShardStats};

use crate::error::GatewayError;
use crate::gateway::{Gateway, ShardGateway};
use crate::metrics::MetricsView;
use crate::respond::send_error;

/// Every path the API listener serves, for telling 405 from 404.
const PATHS: [&str; 7] = [
    "/v1/chat/completions",
    "/v1/models",
    "/healthz",
    "/readyz",
    "/metrics",
    "/v1/credits/params",
    "/v1/credits/issue",
];
/// What the API listener keeps when an admin listener takes `/readyz` and `/metrics`
/// (`/healthz` stays on both: a load balancer may probe the API port).
const PATHS_BESIDE_ADMIN: [&str; 5] =
    ["/v1/chat/completions", "/v1/models", "/healthz", "/v1/credits/params", "/v1/credits/issue"];
/// Every path the admin listener serves.
const ADMIN_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The handler a shard runs: an `Rc` so background tasks can hold the shard too.
pub struct ShardHandler(pub Rc<ShardGateway>);

impl Handler for ShardHandler {
    async fn handle(&self, req: Request, res: &mut Responder<'_>) {
        let shard = &*self.0;
        let admin_here = !shard.gw.admin_listener;
        match (get_or(req.method()), req.path()) {
            ("POST", "/v1/chat/completions") => crate::pipeline::chat_completions(shard, req, res).await,
            ("GET", "/v1/models") => models(shard, &req, res).await,
            ("GET", "/v1/credits/params") => {
                let id = shard.gw.request_ids.next();
                let status = crate::credit::params(shard.gw.credits.as_deref(), &id, res).await;
                shard.metrics().record_request(None, None, status, 0);
            }
            ("POST", "/v1/credits/issue") => credits_issue(shard, &req, res).await,
            ("GET", "/healthz") => healthz(res).await,
            ("GET", "/readyz") if admin_here => readyz(&shard.gw, &shard.net_stats, res).await,
            ("GET", "/metrics") if admin_here => metrics(&shard.gw, &shard.net_stats, res).await,
            ("GET", path) if admin_here && path.starts_with(BUDGETS_PREFIX) => budgets(&shard.gw, path, res).await,
            (method, path) => {
                let err = unknown_route(method, path, if admin_here { &PATHS } else { &PATHS_BESIDE_ADMIN });
                let id = shard.gw.request_ids.next();
                let status = send_error(res, &id, &err).await;
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

/// The admin listener's handler (`admin_listen`): `/metrics`, `/readyz` and `/healthz` over
/// the process-wide state. It runs on a thread of its own, so it writes no shard's metrics
/// (each shard's are single-writer); it only reads them.
pub struct AdminHandler {
    /// The process-wide state.
    pub gw: Arc<Gateway>,
    /// The API shards' connection statistics (not the admin listener's own).
    pub net_stats: Arc<[ShardStats]>,
}

impl Handler for AdminHandler {
    async fn handle(&self, req: Request, res: &mut Responder<'_>) {
        match (get_or(req.method()), req.path()) {
            ("GET", "/healthz") => healthz(res).await,
            ("GET", "/readyz") => readyz(&self.gw, &self.net_stats, res).await,
            ("GET", "/metrics") => metrics(&self.gw, &self.net_stats, res).await,
            ("GET", path) if path.starts_with(BUDGETS_PREFIX) => budgets(&self.gw, path, res).await,
            (method, path) => {
                let err = unknown_route(method, path, &ADMIN_PATHS);
                send_error(res, &self.gw.request_ids.next(), &err).await;
            }
        }
    }

    fn protocol_error_body(&self, err: &ProtocolError) -> Vec<u8> {
        GatewayError::Protocol(err.clone()).to_response().body
    }
}

/// 405 for a path served under another method, else 404.
fn unknown_route(method: &str, path: &str, served: &[&'static str]) -> GatewayError {
    match served.iter().find(|p| **p == path) {
        Some(path) => GatewayError::MethodNotAllowed { method: method.to_string(), path },
        None => GatewayError::NotFound(path.chars().take(200).collect()),
    }
}

/// `GET /healthz`: the process answers.
async fn healthz(res: &mut Responder<'_>) {
    let _ = res.send(200, &[("Content-Type", b"application/json")], b"{\"status\":\"ok\"}").await;
}

/// `GET /v1/models`: the models the key may use.
async fn models(shard: &ShardGateway, req: &Request, res: &mut Responder<'_>) {
    let request_id = shard.gw.request_ids.next();
    shard.apply_config_changes();
    let t = shard.tables();
    let claims = match crate::keys::authenticate(t.keys.as_deref(), req.header("authorization")).await {
        Ok(c) => c,
        Err(e) => {
            send_error(res, &request_id, &GatewayError::Key(e)).await;
            return;
        }
    };
    let routes = &t.tables.routes;
    let data: Vec<serde_json::Value> = routes
        .model_names
        .iter()
        .filter(|m| claims.as_ref().is_none_or(|c| c.allows_model(m)))
        .map(|m| {
            let owner = routes.first_provider(m).and_then(|p| shard.gw.provider_names.get(p));
            let owned_by = owner.map_or("gatekeeper", String::as_str);
            serde_json::json!({ "id": m, "object": "model", "created": 0, "owned_by": owned_by })
        })
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({ "object": "list", "data": data })).unwrap_or_default();
    let _ =
        res.send(200, &[("Content-Type", b"application/json"), ("X-Request-Id", request_id.as_bytes())], &body).await;
}

/// `POST /v1/credits/issue`: the bearer key must carry the `zk` claim.
async fn credits_issue(shard: &ShardGateway, req: &Request, res: &mut Responder<'_>) {
    let request_id = shard.gw.request_ids.next();
    shard.apply_config_changes();
    let t = shard.tables();
    let status = match crate::keys::authenticate(t.keys.as_deref(), req.header("authorization")).await {
        Ok(claims) => {
            // The issuance's audit record: the key, the epoch, the credits; nothing of
            // the credential, which the issuer never sees unblinded anyway.
            let audit = |epoch: u32, credits: u64| {
                let mut trace = crate::trace::Trace::start();
                trace.claims.clone_from(&claims);
                trace.credit_issued = Some((epoch, credits));
                shard.recorder(&t).record(&request_id, &trace, &[], 200).is_ok()
            };
            crate::credit::issue(shard.gw.credits.as_deref(), claims.as_deref(), req, &request_id, res, audit).await
        }
        Err(e) => send_error(res, &request_id, &GatewayError::Key(e)).await,
    };
    shard.metrics().record_request(None, None, status, 0);
}

/// `GET /readyz`: ready, or draining (503).
async fn readyz(gw: &Gateway, net_stats: &[ShardStats], res: &mut Responder<'_>) {
    let draining = gw.draining.load(Ordering::Relaxed);
    let auth = if gw.auth { "enabled" } else { "DISABLED (--no-auth)" };
    let drivers: Vec<&str> = net_stats.iter().map(|s| s.driver().map_or("starting", |d| d.name())).collect();
    // A provider refusing the gateway's own settings leaves it serving through the
    // others, but an operator must see it: "degraded", with the reasons.
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let reasons: Vec<String> = gw
        .alarms
        .iter()
        .zip(&gw.provider_names)
        .filter_map(|(alarm, name)| {
            let (status, age) = alarm.active(now_ms)?;
            let cause = crate::providers::attempt::operator_cause(status).unwrap_or("refused");
            Some(format!("{name}: HTTP {status} {}s ago: {cause}", age.as_secs()))
        })
        .chain(gw.health.degraded_reasons(std::time::Instant::now()))
        .collect();
    let state = match (draining, reasons.is_empty()) {
        (true, _) => "draining",
        (false, true) => "ready",
        (false, false) => "degraded",
    };
    let body = serde_json::json!({
        "status": state,
        "reasons": reasons,
        "version": env!("CARGO_PKG_VERSION"),
        "auth": auth,
        "shards": drivers.len(),
        "drivers": drivers,
        "providers": gw.provider_names,
    });
    let status = if draining { 503 } else { 200 };
    let _ = res.send(status, &[("Content-Type", b"application/json")], body.to_string().as_bytes()).await;
}

/// `GET /metrics`: Prometheus text.
async fn metrics(gw: &Gateway, net_stats: &[ShardStats], res: &mut Responder<'_>) {
    let text = MetricsView {
        shards: &gw.metrics,
        net: net_stats,
        model_names: &gw.model_names,
        provider_names: &gw.provider_names,
        operator_errors: gw.alarms.iter().map(|a| a.total.load(Ordering::Relaxed)).collect(),
        checkpoint: gw.bridge.as_ref().and_then(|b| b.stats().latest_checkpoint.lock().ok()?.clone()),
    }
    .render();
    let mut text = text;
    gw.health.render_metrics(&mut text);
    if let Some(b) = &gw.bridge {
        b.render_metrics(&mut text);
    }
    if let Some(c) = &gw.credits {
        c.render_metrics(&mut text);
    }
    let _ = res.send(200, &[("Content-Type", b"text/plain; version=0.0.4")], text.as_bytes()).await;
}

/// Where a subject's budget state is served: `/v1/budgets/key/KEY_ID` or
/// `/v1/budgets/tenant/NAME` (percent-encoded), wherever `/metrics` is.
const BUDGETS_PREFIX: &str = "/v1/budgets/";

/// `GET /v1/budgets/{key|tenant}/NAME`: the subject's windows (`gatekeeper budget show`).
async fn budgets(gw: &Gateway, path: &str, res: &mut Responder<'_>) {
    use crate::budget::report::{percent_decode, report};
    let rest = path.strip_prefix(BUDGETS_PREFIX).unwrap_or_default();
    let subject = match rest.split_once('/') {
        Some(("key", name)) => Some((false, name)),
        Some(("tenant", name)) => Some((true, name)),
        _ => None,
    };
    let name = subject.and_then(|(tenant, n)| Some((tenant, percent_decode(n)?))).filter(|(_, n)| !n.is_empty());
    let Some((tenant, name)) = name else {
        let err = GatewayError::NotFound(path.chars().take(200).collect());
        send_error(res, &gw.request_ids.next(), &err).await;
        return;
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let r = report(&gw.budgets, crate::budget::SubjectRef { tenant, name: &name }, now);
    let body = serde_json::to_vec(&r).unwrap_or_default();
    let _ = res.send(200, &[("Content-Type", b"application/json")], &body).await;
}

/// `HEAD` is served as `GET` (RFC 9110 §9.3.2); the server sends its head only.
fn get_or(method: &str) -> &str {
    if method == "HEAD" {
        "GET"
    } else {
        method
    }
}
