//! `gatekeeper budget show KEY_ID --nats URL`: the key's (or tenant's) spend as the
//! running nodes replicate it, window by window, with each node's contribution. Asks
//! every node on `bh.budget.snapshot.<cli>` (the join request nodes use) and merges
//! the answers; nodes that are down still appear (as their id) through the slots the
//! others hold. Only settled tokens travel between nodes: limits, reservations and
//! requests are per node (`budget show --addr`).

use std::time::Duration;

use anyhow::Context as _;
use gatekeeper_crdt::{BudgetKey, Limits as CrdtLimits, Subject};
use serde::Serialize;

use crate::bridge::budget::{ask_nodes, node_id};
use crate::budget::KINDS;

/// One node's share of a window.
#[derive(Debug, Serialize)]
struct NodeShare {
    /// The node's name, or its 64-bit id in hex when it did not answer.
    node: String,
    spent_tokens: u64,
}

/// One window, cluster-wide.
#[derive(Debug, Serialize)]
struct Window {
    window: &'static str,
    start_unix_s: i64,
    spent_tokens: u64,
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
    for kind in KINDS {
        let key = BudgetKey::at(subject.clone(), kind, now)?;
        let mut nodes: Vec<NodeShare> = Vec::new();
        let mut by_id: Vec<(u64, u64)> = Vec::new();
        for (r, v) in state.counter(&key).into_iter().flat_map(|c| c.slots()) {
            match by_id.iter_mut().find(|(id, _)| *id == r.node) {
                Some((_, t)) => *t = t.saturating_add(v),
                None => by_id.push((r.node, v)),
            }
        }
        for (id, spent) in by_id {
            let node = names.iter().find(|(n, _)| *n == id).map_or_else(|| format!("{id:016x}"), |(_, s)| (*s).clone());
            nodes.push(NodeShare { node, spent_tokens: spent });
        }
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        windows.push(Window {
            window: kind.name(),
            start_unix_s: key.epoch.start_unix_s(),
            spent_tokens: state.spent(&key),
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
    println!("{:<7} {:>14}", "window", "spent");
    for w in &report.windows {
        println!("{:<7} {:>14}", w.window, w.spent_tokens);
        for n in &w.nodes {
            println!("  {:<20} {:>14}", n.node, n.spent_tokens);
        }
    }
    Ok(())
}
