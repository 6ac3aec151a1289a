//! `gatekeeper budget show KEY_ID --nats URL`: the key's (or tenant's) spend as the
//! running nodes replicate it, window by window, with each node's contribution. Asks
//! every node on `bh.budget.snapshot.<cli>` (the join request nodes use) and merges
//! the answers; nodes that are down still appear (as their id) through the slots the
//! others hold. Settled tokens travel between nodes for every window, admitted requests
//! for the minute and settled USD for the month (`crate::bridge::budget::gossiped`);
//! limits and reservations are per node (`budget show --addr`).

use std::time::Duration;

use anyhow::Context as _;
use gatekeeper_crdt::{BudgetKey, Budgets, Limits as CrdtLimits, Measure, Subject};
use serde::Serialize;

use crate::bridge::budget::{ask_nodes, gossiped, node_id};
use crate::budget::{KINDS, NANO_USD_PER_USD};

/// One node's share of a window.
#[derive(Debug, Serialize)]
struct NodeShare {
    /// The node's name, or its 64-bit id in hex when it did not answer.
    node: String,
    spent_tokens: u64,
    /// Requests admitted (minute window only: the one `rpm` reads).
    #[serde(skip_serializing_if = "Option::is_none")]
    requests: Option<u64>,
    /// Settled USD (month window only: the one `usd_per_month` reads).
    #[serde(skip_serializing_if = "Option::is_none")]
    spent_usd: Option<f64>,
}

/// One window, cluster-wide.
#[derive(Debug, Serialize)]
struct Window {
    window: &'static str,
    start_unix_s: i64,
    spent_tokens: u64,
    /// Requests admitted, cluster-wide (minute window only).
    #[serde(skip_serializing_if = "Option::is_none")]
    requests: Option<u64>,
    /// Settled USD, cluster-wide (month window only).
    #[serde(skip_serializing_if = "Option::is_none")]
    spent_usd: Option<f64>,
    nodes: Vec<NodeShare>,
}

/// The whole answer.
#[derive(Debug, Serialize)]
struct Report {
    subject: &'static str,
    name: String,
    /// Nodes that answered.
    answered: Vec<String>,
    windows: Vec<Window>,
}

/// Prints the subject's cluster-wide windows (JSON with `json`).
pub fn show(url: &str, name: &str, tenant: bool, wait: Duration, json: bool) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let limits = CrdtLimits { keys_max: usize::MAX / 2, ..CrdtLimits::default() };
    let (state, answered) =
        rt.block_on(ask_nodes(url, wait, limits)).with_context(|| format!("asking the nodes at {url}"))?;
    let subject =
        if tenant { Subject::tenant(name) } else { Subject::key(name) }.context("a name of 1 to 255 bytes")?;
    let now = i64::try_from(crate::bridge::now_unix_ms() / 1000).unwrap_or(i64::MAX);
    let names: Vec<(u64, &String)> = answered.iter().map(|n| (node_id(n), n)).collect();
    let mut windows = Vec::new();
    for (k, kind) in KINDS.into_iter().enumerate() {
        let key = BudgetKey::at(subject.clone(), kind, now)?;
        let measures = gossiped(k);
        let shown = |m: Measure| measures.contains(&m).then(|| key.clone().with_measure(m));
        let (requests_key, usd_key) = (shown(Measure::Requests), shown(Measure::UsdNano));
        // Every node with a slot in any of the window's counters, then its share of each.
        let mut ids: Vec<u64> = Vec::new();
        for m in measures {
            for (r, _) in state.counter(&key.clone().with_measure(*m)).into_iter().flat_map(|c| c.slots()) {
                if !ids.contains(&r.node) {
                    ids.push(r.node);
                }
            }
        }
        let mut nodes: Vec<NodeShare> = ids
            .into_iter()
            .map(|id| NodeShare {
                node: names.iter().find(|(n, _)| *n == id).map_or_else(|| format!("{id:016x}"), |(_, s)| (*s).clone()),
                spent_tokens: node_share(&state, &key, id),
                requests: requests_key.as_ref().map(|k| node_share(&state, k, id)),
                spent_usd: usd_key.as_ref().map(|k| node_share(&state, k, id) as f64 / NANO_USD_PER_USD),
            })
            .collect();
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        windows.push(Window {
            window: kind.name(),
            start_unix_s: key.epoch.start_unix_s(),
            spent_tokens: state.spent(&key),
            requests: requests_key.as_ref().map(|k| state.spent(k)),
            spent_usd: usd_key.as_ref().map(|k| state.spent(k) as f64 / NANO_USD_PER_USD),
            nodes,
        });
    }
    let report = Report { subject: if tenant { "tenant" } else { "key" }, name: name.into(), answered, windows };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{} {} ({} nodes answered: {})",
        report.subject,
        report.name,
        report.answered.len(),
        report.answered.join(", ")
    );
    println!("{:<7} {:>14} {:>10} {:>14}", "window", "spent", "requests", "usd");
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    for w in &report.windows {
        let (r, u) = (opt(w.requests.map(|r| r.to_string())), opt(w.spent_usd.map(|u| format!("{u:.6}"))));
        println!("{:<7} {:>14} {:>10} {:>14}", w.window, w.spent_tokens, r, u);
        for n in &w.nodes {
            let (r, u) = (opt(n.requests.map(|r| r.to_string())), opt(n.spent_usd.map(|u| format!("{u:.6}"))));
            println!("  {:<20} {:>14} {:>10} {:>14}", n.node, n.spent_tokens, r, u);
        }
    }
    Ok(())
}

/// Node `id`'s share of `key`: the sum of its slots (every shard and incarnation).
fn node_share(state: &Budgets, key: &BudgetKey, id: u64) -> u64 {
    state
        .counter(key)
        .into_iter()
        .flat_map(|c| c.slots())
        .filter(|(r, _)| r.node == id)
        .fold(0, |a, (_, v)| a.saturating_add(v))
}
