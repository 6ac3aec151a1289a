//! The config watch: follows every key of the `BH_CONFIG` bucket (the current values
//! first, then each change) and applies it to the gateway's [`HotConfig`].
//!
//! It runs as its own task on the bridge thread, so it keeps applying changes while
//! the audit shipper waits on a store that is away, and runs without audit at all.
//! It provisions only the bucket's stream: a problem with the audit streams must not
//! stop a revocation.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;

use super::nats;
use super::retry::{retry, Policy};
use super::{BridgeStats, Shared};
use crate::config::hot::HotConfig;
use crate::config::NatsConfig;

const WATCH_RETRY: Policy =
    Policy { backoff_first: Duration::from_millis(20), backoff_max: Duration::from_millis(500), log_every: 10 };

/// Keeps `hot` current from `BH_CONFIG` until shutdown passes its deadline (the
/// bridge thread aborts it sooner, once everything else stopped).
pub(super) async fn run(client: async_nats::Client, n: NatsConfig, hot: Arc<HotConfig>, shared: Arc<Shared>) {
    let js = nats::context(client, Duration::from_millis(n.ack_timeout_ms));
    // Each attempt follows the bucket until the watch breaks (NATS away, the stream
    // lost); the next one starts over with the current values.
    let _ = retry("watching BH_CONFIG", &WATCH_RETRY, &shared.shutdown, async |_| {
        follow(&js, &n, &hot, &shared.stats).await
    })
    .await;
}

/// Follows the bucket; returns only when the watch broke.
async fn follow(
    js: &async_nats::jetstream::Context,
    n: &NatsConfig,
    hot: &HotConfig,
    stats: &BridgeStats,
) -> Result<Infallible, String> {
    nats::provision_config_bucket(js, n).await.map_err(|e| e.to_string())?;
    let kv = nats::config_bucket(js).await.map_err(|e| e.to_string())?;
    let mut watch = kv.watch_with_history(">").await.map_err(|e| e.to_string())?;
    // Bounded by the server's stream: it ends (or errs) when the watch breaks.
    while let Some(entry) = watch.next().await {
        let entry = entry.map_err(|e| e.to_string())?;
        let value = match entry.operation {
            async_nats::jetstream::kv::Operation::Put => Some(&entry.value[..]),
            _ => None,
        };
        match hot.apply(&entry.key, value) {
            Ok(true) => {
                stats.config_changes.fetch_add(1, Ordering::Relaxed);
                tracing::info!(key = %entry.key, revision = entry.revision, "applied BH_CONFIG change");
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(revision = entry.revision, error = %e, "ignoring a bad BH_CONFIG value"),
        }
    }
    Err("the watch ended".into())
}
