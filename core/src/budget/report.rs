//! A subject's budget state as JSON: what `GET /v1/budgets/{key|tenant}/NAME` answers
//! and `gatekeeper budget show` prints.

use serde::{Deserialize, Serialize};

use super::board::{BudgetBoard, CellValues, SubjectRef, KINDS};
use super::limits::NANO_USD_PER_USD;

/// One column's share of a window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnReport {
    /// `shard 0`, `shard 1`, …, or `remote` (other replicas: other nodes, this node's
    /// previous runs).
    pub column: String,
    /// Settled tokens.
    pub spent_tokens: u64,
    /// Tokens reserved by requests in flight.
    pub reserved_tokens: u64,
    /// Requests admitted.
    pub requests: u64,
    /// Settled spend, nano-USD.
    pub spent_usd_nano: u64,
}

/// One window of a subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowReport {
    /// `minute`, `day` or `month`.
    pub window: String,
    /// The window's start, Unix seconds (UTC).
    pub start_unix_s: i64,
    /// Seconds until it ends.
    pub reset_s: u64,
    /// The token limit requests were last admitted under (absent: none).
    pub limit_tokens: Option<u64>,
    /// Settled tokens, all columns.
    pub spent_tokens: u64,
    /// Reserved tokens, all columns.
    pub reserved_tokens: u64,
    /// Requests admitted, all columns.
    pub requests: u64,
    /// Settled spend in USD, all columns.
    pub spent_usd: f64,
    /// Each column's share.
    pub columns: Vec<ColumnReport>,
}

/// A subject's budget state now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubjectReport {
    /// `key` or `tenant`.
    pub subject: String,
    /// The key id or tenant name.
    pub name: String,
    /// Whether the gateway has seen a budgeted request of it since start (else every
    /// window below reads 0).
    pub tracked: bool,
    /// The minute, day and month windows containing now.
    pub windows: Vec<WindowReport>,
}

/// The report of `subject` at `now_unix_s`.
pub fn report(board: &BudgetBoard, subject: SubjectRef<'_>, now_unix_s: i64) -> SubjectReport {
    let body = board.find(subject).and_then(|r| board.row(r));
    let shards = board.shards();
    let windows = KINDS
        .iter()
        .enumerate()
        .filter_map(|(k, kind)| {
            let epoch = kind.epoch(now_unix_s).ok()?;
            let start = epoch.start_unix_s();
            let columns: Vec<ColumnReport> = (0..=shards)
                .map(|c| {
                    let v = body
                        .and_then(|b| b.cell(c, k))
                        .map_or(CellValues::fresh(start), |cell| cell.read_window(start));
                    ColumnReport {
                        column: if c == shards { "remote".into() } else { format!("shard {c}") },
                        spent_tokens: v.settled_tokens,
                        reserved_tokens: v.reserved_tokens,
                        requests: v.requests,
                        spent_usd_nano: v.settled_usd_nano,
                    }
                })
                .collect();
            let total = body.map_or(CellValues::fresh(start), |b| b.total(k, start));
            Some(WindowReport {
                window: kind.name().into(),
                start_unix_s: start,
                reset_s: epoch.seconds_left(now_unix_s),
                limit_tokens: total.limit_tokens,
                spent_tokens: total.settled_tokens,
                reserved_tokens: total.reserved_tokens,
                requests: total.requests,
                spent_usd: total.settled_usd_nano as f64 / NANO_USD_PER_USD,
                columns,
            })
        })
        .collect();
    SubjectReport {
        subject: if subject.tenant { "tenant" } else { "key" }.into(),
        name: subject.name.into(),
        tracked: body.is_some(),
        windows,
    }
}

/// `%XX`-decodes a path segment; `None` for a bad escape or bytes that are not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `%XX`-encodes everything but unreserved characters (RFC 3986), for a path segment.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::board::CellValues;

    #[test]
    fn a_report_sums_columns_and_names_each() {
        let board = BudgetBoard::new(2, 4);
        let subject = SubjectRef { tenant: false, name: "k/1" };
        let now = 1_709_251_170;
        let r = report(&board, subject, now);
        assert!(!r.tracked);
        assert_eq!(r.windows.len(), 3);
        let row = board.find_or_claim(subject).expect("row");
        let start = gatekeeper_crdt::WindowKind::Minute.epoch(now).expect("epoch").start_unix_s();
        let cell = board.row(row).and_then(|b| b.cell(1, 0)).expect("cell");
        cell.store(CellValues { settled_tokens: 7, reserved_tokens: 3, requests: 2, ..CellValues::fresh(start) });
        let r = report(&board, subject, now);
        let minute = &r.windows[0];
        assert_eq!((minute.spent_tokens, minute.reserved_tokens, minute.requests, minute.reset_s), (7, 3, 2, 30));
        let names: Vec<_> = minute.columns.iter().map(|c| c.column.as_str()).collect();
        assert_eq!(names, ["shard 0", "shard 1", "remote"]);
        assert_eq!(minute.columns[1].spent_tokens, 7);
    }

    #[test]
    fn path_segments_round_trip() {
        for s in ["plain-key_1.x~", "with/slash and space", "ünï"] {
            assert_eq!(percent_decode(&percent_encode(s)).as_deref(), Some(s));
        }
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
    }
}
