//! The health feed: circuit changes between nodes over `BH_HEALTH`, and circuit
//! events on `BH_EVENTS` / `BH_ALERTS`.
//!
//! Publishing: every `routing.health.feed_ms` the feed scans the [`HealthBoard`]
//! (atomics the shards write) for deployments whose circuit opened or closed on this
//! node, and publishes one message per change on
//! `bh.health.<provider>.<node>.circuit`; open circuits are published again every ten
//! periods, so a node that starts later (or lost a message) learns them. A first
//! opening also goes to `bh.alerts.circuit_opened.<provider>`, the closing after it to
//! `bh.events.circuit_closed.<provider>`.
//!
//! Consuming: a core NATS subscription to `bh.health.*.*.circuit` (not a JetStream
//! consumer: a change must arrive within milliseconds, and history older than an open
//! circuit's cool-down is worthless); the messages are still stored by the
//! `BH_HEALTH` stream where it exists. Another node's "open" is written to the board's
//! remote slot, which every shard honours, and expires by itself after the cool-down
//! it reported (at most `routing.health.remote_open_max_ms`); its "closed" clears it.
//! The feed ignores its own messages by an id unique to this process. It runs
//! whenever `nats` is set, with or without audit.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};

use super::events::{subject_token, AuxStream, Event};
use super::now_unix_ms;
use crate::router::health::circuit::OpenReason;
use crate::router::HealthBoard;

/// What the feed runs with.
#[derive(Debug, Clone)]
pub(crate) struct Feed {
    /// The board the shards write.
    pub board: Arc<HealthBoard>,
    /// Scan period.
    pub every: Duration,
    /// Longest a remote "open" is honoured, ms.
    pub remote_open_max_ms: u64,
}

/// Remote reports remembered at once (per deployment and sending process); beyond
/// it new senders are ignored until old reports expire.
const REMOTE_REPORTS_MAX: usize = 4_096;
/// Open circuits are published again every this many scans.
const REPUBLISH_EVERY: u32 = 10;

/// One circuit change, as published on `BH_HEALTH`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CircuitReport {
    /// Node name.
    node: String,
    /// The sending process (node name, pid and a random part): its own reports are ignored.
    origin: String,
    model: String,
    provider: String,
    /// `open` or `closed`.
    state: String,
    /// Ms until it admits again (0 when closed).
    open_ms: u64,
    /// Why it opened.
    #[serde(default)]
    reason: String,
    ts_unix_ms: u64,
}

/// What the feed last said about one deployment.
#[derive(Debug, Clone, Copy, Default)]
struct Published {
    /// Board ms it was open until (0: closed).
    until_ms: u64,
    /// An opening was alerted and its closing not yet announced.
    alerted: bool,
}

/// Runs the feed until the bridge thread aborts it (after everything else stopped;
/// it holds nothing that needs a drain).
pub(super) async fn run(client: async_nats::Client, node: String, feed: Feed) {
    let origin = format!("{node}:{}:{:08x}", std::process::id(), rand::random::<u32>());
    let mut sub = match client.subscribe("bh.health.*.*.circuit").await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot follow other nodes' circuits on BH_HEALTH");
            None
        }
    };
    let mut published = vec![Published::default(); feed.board.keys()];
    let mut remote: HashMap<(usize, String), u64> = HashMap::new();
    let mut tick = tokio::time::interval(feed.every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut scans = 0u32;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                scans = scans.wrapping_add(1);
                let republish = scans.is_multiple_of(REPUBLISH_EVERY);
                for (subject, body) in scan(&feed.board, &node, &origin, &mut published, republish) {
                    // Telemetry: one attempt; the next change or republish supersedes a lost one.
                    if let Err(e) = client.publish(subject, body.into()).await {
                        tracing::debug!(error = %e, "circuit change not published");
                    }
                }
                expire(&feed.board, &mut remote);
            }
            msg = next(&mut sub) => match msg {
                Some(m) => consume(&feed, &origin, &m.payload, &mut remote),
                None => sub = None,
            },
        }
    }
}

/// The next message, or never when there is no subscription.
async fn next(sub: &mut Option<async_nats::Subscriber>) -> Option<async_nats::Message> {
    match sub {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// The messages due: circuit changes since the last scan (and open circuits again
/// when `republish`), with their events.
fn scan(
    board: &HealthBoard,
    node: &str,
    origin: &str,
    published: &mut [Published],
    republish: bool,
) -> Vec<(String, Vec<u8>)> {
    let now_ms = board.ms(Instant::now());
    let mut out = Vec::new();
    for (key, last) in published.iter_mut().enumerate() {
        let open = board.open_here(key, now_ms);
        let until_ms = open.map_or(0, |(u, _)| u);
        let changed = (until_ms == 0) != (last.until_ms == 0) || (until_ms != 0 && until_ms != last.until_ms);
        if !(changed || (republish && until_ms != 0)) {
            // A closing is announced once every shard closed (not merely out of cool-down).
            if last.alerted && until_ms == 0 && all_closed(board, key) {
                last.alerted = false;
                out.extend(event(board, key, node, None));
            }
            continue;
        }
        let Some((model, provider)) = board.names(key) else { continue };
        let reason = open.and_then(|(_, r)| OpenReason::from_code(r)).map_or("", OpenReason::as_str);
        let report = CircuitReport {
            node: node.into(),
            origin: origin.into(),
            model: model.into(),
            provider: provider.into(),
            state: if until_ms == 0 { "closed" } else { "open" }.into(),
            open_ms: until_ms.saturating_sub(now_ms),
            reason: reason.into(),
            ts_unix_ms: now_unix_ms(),
        };
        let subject =
            format!("{}.{}.{}.circuit", AuxStream::Health.prefix(), subject_token(provider), subject_token(node));
        out.push((subject, serde_json::to_vec(&report).unwrap_or_default()));
        if until_ms != 0 && !last.alerted {
            last.alerted = true;
            out.extend(event(board, key, node, Some((reason, report.open_ms))));
        } else if until_ms == 0 && last.alerted && all_closed(board, key) {
            last.alerted = false;
            out.extend(event(board, key, node, None));
        }
        last.until_ms = until_ms;
    }
    out
}

fn all_closed(board: &HealthBoard, key: usize) -> bool {
    board.slots_of(key).all(|s| s.is_closed())
}

/// The `BH_ALERTS` opening (`Some`) or `BH_EVENTS` closing (`None`) of `key`.
fn event(board: &HealthBoard, key: usize, node: &str, opened: Option<(&str, u64)>) -> Option<(String, Vec<u8>)> {
    let (model, provider) = board.names(key)?;
    let e = match opened {
        Some((reason, open_ms)) => Event::CircuitOpened { provider: provider.into(), reason: reason.into(), open_ms },
        None => Event::CircuitClosed { provider: provider.into() },
    };
    let (stream, suffix) = e.route();
    let mut body = serde_json::to_value(&e).ok()?;
    body["node"] = node.into();
    body["model"] = model.into();
    body["ts_unix_ms"] = now_unix_ms().into();
    Some((format!("{}.{suffix}", stream.prefix()), body.to_string().into_bytes()))
}

/// Applies another node's report to the board.
fn consume(feed: &Feed, origin: &str, payload: &[u8], remote: &mut HashMap<(usize, String), u64>) {
    let Ok(report) = serde_json::from_slice::<CircuitReport>(payload) else {
        tracing::debug!("ignoring a malformed circuit report on BH_HEALTH");
        return;
    };
    if report.origin == origin {
        return;
    }
    // A deployment this node does not serve is none of its business.
    let Some(key) = feed.board.key_of(&report.model, &report.provider) else { return };
    let now_ms = feed.board.ms(Instant::now());
    let id = (key, report.origin.chars().take(200).collect::<String>());
    if report.state == "open" && report.open_ms > 0 {
        let until = now_ms.saturating_add(report.open_ms.min(feed.remote_open_max_ms));
        if remote.len() < REMOTE_REPORTS_MAX || remote.contains_key(&id) {
            remote.insert(id, until);
        }
    } else {
        remote.remove(&id);
    }
    feed.board.set_remote(key, latest(remote, key, now_ms));
}

/// The latest unexpired remote deadline for `key` (0: none).
fn latest(remote: &HashMap<(usize, String), u64>, key: usize, now_ms: u64) -> u64 {
    remote.iter().filter(|((k, _), until)| *k == key && **until > now_ms).map(|(_, u)| *u).max().unwrap_or(0)
}

/// Drops expired remote reports (the board's slots expire on their own).
fn expire(board: &HealthBoard, remote: &mut HashMap<(usize, String), u64>) {
    let now_ms = board.ms(Instant::now());
    let before = remote.len();
    remote.retain(|_, until| *until > now_ms);
    if remote.len() != before {
        for key in 0..board.keys() {
            if board.remote_open(key, now_ms).is_none() {
                board.set_remote(key, latest(remote, key, now_ms));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::{HealthSettings, ShardHealth};

    fn deployment(provider: usize) -> crate::router::Deployment {
        crate::router::Deployment { id: 0, model: 0, provider, ..Default::default() }
    }

    #[test]
    fn an_opening_is_published_with_its_alert_and_consumed_by_another_node() {
        let a = Arc::new(HealthBoard::new(1, vec!["m".into()], vec!["p".into(), "q".into()]));
        let shard = ShardHealth::new(a.clone(), 0);
        let s = HealthSettings { failures_max: 1, open_ms: 5_000, ..Default::default() };
        let mut published = vec![Published::default(); a.keys()];
        assert!(scan(&a, "na", "A", &mut published, true).is_empty(), "nothing open, nothing said");
        shard.admit(&deployment(0), Instant::now(), &s).unwrap().failure(&s);
        let out = scan(&a, "na", "A", &mut published, false);
        let subjects: Vec<&str> = out.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(subjects, ["bh.health.p.na.circuit", "bh.alerts.circuit_opened.p"]);
        let alert: serde_json::Value = serde_json::from_slice(&out[1].1).unwrap();
        assert_eq!((alert["kind"].as_str(), alert["model"].as_str()), (Some("circuit_opened"), Some("m")));
        assert!(scan(&a, "na", "A", &mut published, false).is_empty(), "no change, no message");
        assert_eq!(scan(&a, "na", "A", &mut published, true).len(), 1, "republished, not re-alerted");

        let b = Arc::new(HealthBoard::new(2, vec!["m".into()], vec!["q".into(), "p".into()]));
        let feed = Feed { board: b.clone(), every: Duration::from_millis(100), remote_open_max_ms: 2_000 };
        let mut remote = HashMap::new();
        consume(&feed, "B", &out[0].1, &mut remote);
        let key = b.key_of("m", "p").unwrap();
        let now_ms = b.ms(Instant::now());
        let until = b.remote_open(key, now_ms).expect("open on node B");
        assert!(until - now_ms <= 2_000, "clamped to remote_open_max_ms");
        consume(&feed, "A", &out[0].1, &mut remote);
        consume(&feed, "B", b"{not json", &mut remote);
        assert!(b.remote_open(key, now_ms).is_some(), "own and malformed messages change nothing");
        let mut closed: CircuitReport = serde_json::from_slice(&out[0].1).unwrap();
        closed.state = "closed".into();
        consume(&feed, "B", &serde_json::to_vec(&closed).unwrap(), &mut remote);
        assert_eq!(b.remote_open(key, now_ms), None, "a closing clears it");
    }
}
