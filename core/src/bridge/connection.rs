//! The NATS connection. The first connect is retried here until it works (or
//! shutdown passes its deadline); after it, the client reconnects on its own (see
//! [`nats::connect`]) and the operations that fail meanwhile are retried by their
//! owners.

use std::time::Duration;

use super::nats;
use super::retry::{retry, Policy};
use super::Shutdown;
use crate::config::NatsConfig;

const CONNECT_RETRY: Policy =
    Policy { backoff_first: Duration::from_millis(20), backoff_max: Duration::from_millis(500), log_every: 10 };

/// A client connected to `n.url`, named after `node`; `None` when shutdown passed
/// its deadline before NATS answered.
pub(super) async fn connect(n: &NatsConfig, node: &str, shutdown: &Shutdown) -> Option<async_nats::Client> {
    let timeout = Duration::from_millis(n.connect_timeout_ms);
    let name = format!("gatekeeper-bridge-{node}");
    retry("connecting to NATS", &CONNECT_RETRY, shutdown, async |_| nats::connect(&n.url, timeout, &name).await).await
}
