//! What the audit log records about one request (pipeline step 8).

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::chain::push_decimal;
#[cfg(test)]
use super::json::first_special;
use super::json::push_json_str;
use super::strlist::StrList;

/// One request as the audit log sees it. No prompt or completion text unless
/// `audit.include_content` is on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// `X-Request-Id` as answered.
    pub request_id: String,
    /// When the request arrived, Unix milliseconds.
    pub ts_unix_ms: u64,
    /// Shard that served it.
    pub shard: u16,
    /// Issuer key id (`k4.pid.…`) of the caller's key; `None` with `--no-auth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// The caller's key id (`jti`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Tenant from the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Model the client asked for.
    pub model_requested: String,
    /// Provider that answered (or was last tried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Upstream model id used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_upstream: Option<String>,
    /// Routing mode (`cost`, `latency`, `capability`), once routed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_mode: Option<String>,
    /// Request complexity score 0–1, once routed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complexity: Option<f64>,
    /// The request's task (`chat`, `code`, `math`, `reasoning`, `legal`, `writing`), once routed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Candidates the router considered, in try order, each `model@provider:verdict`
    /// (`chosen`, `failover`, `filtered:<requirement>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route_candidates: Vec<String>,
    /// Why the chosen candidate won (`cheapest_meeting_threshold`, `strong_at_task`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_reason: Option<String>,
    /// Whether the answer was streamed.
    pub stream: bool,
    /// HTTP status sent to the client.
    pub status: u16,
    /// Prompt tokens, from the provider's `usage`.
    pub tokens_in: u64,
    /// Completion tokens, from the provider's `usage`.
    pub tokens_out: u64,
    /// Cost in USD from the deployment's prices, as an exact decimal (`"0.00002235"`).
    pub cost_usd: String,
    /// Time spent waiting on providers, µs.
    pub upstream_us: u64,
    /// Time spent inside the gateway, µs.
    pub overhead_us: u64,
    /// Deployments tried before the answer (or all of them, on failure), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<String>,
    /// Tokens the budget step reserved (absent: no budget applied to the request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_reserved_tokens: Option<u64>,
    /// Tokens settled into its budgets: an answer's usage (its reservation when the
    /// usage is unknown), 0 when it failed (the reservation was released).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_settled_tokens: Option<u64>,
    /// A credit-paid request's nullifier (hex): the only thing that identifies the
    /// payment, and it links nothing (no key id or tenant is recorded with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit_nullifier: Option<String>,
    /// Credits the spend paid (before its refund).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit_amount: Option<u64>,
    /// A credential issuance (`POST /v1/credits/issue`): its epoch. The record names
    /// the key, and nothing of the (blinded) credential, so it links to no spend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit_issued_epoch: Option<u32>,
    /// A credential issuance: the credits issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit_issued: Option<u64>,
    /// Request and response bodies, only with `audit.include_content: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<serde_json::Value>,
}

impl AuditRecord {
    /// Appends the record's JSON to `out`: the same bytes as `serde_json::to_writer`
    /// (field order, skipped fields, escapes), written without serde's generic path
    /// because every request pays for it on its shard (issue 15, item 5).
    pub fn write_json(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        out.reserve(256 + self.request_id.len() + self.model_requested.len());
        out.extend_from_slice(b"{\"request_id\":");
        push_json_str(out, &self.request_id);
        out.extend_from_slice(b",\"ts_unix_ms\":");
        push_decimal(out, self.ts_unix_ms);
        out.extend_from_slice(b",\"shard\":");
        push_decimal(out, u64::from(self.shard));
        push_opt_str(out, b",\"kid\":", self.kid.as_deref());
        push_opt_str(out, b",\"key_id\":", self.key_id.as_deref());
        push_opt_str(out, b",\"tenant\":", self.tenant.as_deref());
        out.extend_from_slice(b",\"model_requested\":");
        push_json_str(out, &self.model_requested);
        push_opt_str(out, b",\"provider\":", self.provider.as_deref());
        push_opt_str(out, b",\"model_upstream\":", self.model_upstream.as_deref());
        push_opt_str(out, b",\"route_mode\":", self.route_mode.as_deref());
        if let Some(c) = self.complexity {
            out.extend_from_slice(b",\"complexity\":");
            match Hundredths::of(c) {
                // What the router records (two decimals): a table, not a float formatter.
                Some(h) => out.extend_from_slice(h.text()),
                // Floats keep serde_json's formatter (shortest round-trip, `null` if not finite).
                None => serde_json::to_writer(&mut *out, &c)?,
            }
        }
        push_opt_str(out, b",\"task\":", self.task.as_deref());
        push_str_list(out, b",\"route_candidates\":", &self.route_candidates);
        push_opt_str(out, b",\"route_reason\":", self.route_reason.as_deref());
        out.extend_from_slice(if self.stream { b",\"stream\":true" } else { b",\"stream\":false" });
        out.extend_from_slice(b",\"status\":");
        push_decimal(out, u64::from(self.status));
        out.extend_from_slice(b",\"tokens_in\":");
        push_decimal(out, self.tokens_in);
        out.extend_from_slice(b",\"tokens_out\":");
        push_decimal(out, self.tokens_out);
        out.extend_from_slice(b",\"cost_usd\":");
        push_json_str(out, &self.cost_usd);
        out.extend_from_slice(b",\"upstream_us\":");
        push_decimal(out, self.upstream_us);
        out.extend_from_slice(b",\"overhead_us\":");
        push_decimal(out, self.overhead_us);
        push_str_list(out, b",\"attempts\":", &self.attempts);
        if let Some(n) = self.budget_reserved_tokens {
            out.extend_from_slice(b",\"budget_reserved_tokens\":");
            push_decimal(out, n);
        }
        if let Some(n) = self.budget_settled_tokens {
            out.extend_from_slice(b",\"budget_settled_tokens\":");
            push_decimal(out, n);
        }
        push_opt_str(out, b",\"credit_nullifier\":", self.credit_nullifier.as_deref());
        if let Some(n) = self.credit_amount {
            out.extend_from_slice(b",\"credit_amount\":");
            push_decimal(out, n);
        }
        if let Some(n) = self.credit_issued_epoch {
            out.extend_from_slice(b",\"credit_issued_epoch\":");
            push_decimal(out, u64::from(n));
        }
        if let Some(n) = self.credit_issued {
            out.extend_from_slice(b",\"credit_issued\":");
            push_decimal(out, n);
        }
        if let Some(content) = &self.content {
            out.extend_from_slice(b",\"content\":");
            serde_json::to_writer(&mut *out, content)?;
        }
        out.push(b'}');
        Ok(())
    }
}

fn push_opt_str(out: &mut Vec<u8>, key: &[u8], value: Option<&str>) {
    if let Some(v) = value {
        out.extend_from_slice(key);
        push_json_str(out, v);
    }
}

/// `key` then a JSON array of strings; nothing when `values` is empty (as serde skips it).
fn push_str_list(out: &mut Vec<u8>, key: &[u8], values: &[String]) {
    let Some((first, rest)) = values.split_first() else { return };
    out.extend_from_slice(key);
    out.push(b'[');
    push_json_str(out, first);
    for v in rest {
        out.push(b',');
        push_json_str(out, v);
    }
    out.push(b']');
}

/// A float of 0–1 in hundredths (`k / 100`, `k` ≤ 100), as the router records
/// complexity: serde_json prints it as `0.0`, `0.d`, `0.dd` or `1.0` (shortest
/// round trip), which [`Hundredths::text`] writes without a float formatter and
/// [`Hundredths::parse`] reads back without a float parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hundredths(u8);

impl Hundredths {
    /// `x` as hundredths, when it is exactly the float of `k / 100` for a `k` ≤ 100.
    pub(crate) fn of(x: f64) -> Option<Hundredths> {
        let k = (x * 100.0).round();
        // `k / 100.0` is the float nearest to the decimal k/100 (one correctly
        // rounded division of exact values), i.e. what parsing `0.kk` gives; `-0.0`
        // is left to serde (it prints `-0.0`).
        ((0.0..=100.0).contains(&k) && k / 100.0 == x && x.is_sign_positive()).then_some(Hundredths(k as u8))
    }

    /// The float.
    pub(crate) fn value(self) -> f64 {
        f64::from(self.0) / 100.0
    }

    /// Reads exactly serde_json's text of a hundredths float (`0.0`, `1.0`, `0.d`
    /// with d ≠ 0, `0.dd` with the last d ≠ 0); `None` for any other text, even of
    /// the same number (`0.50`, `5e-1`), so a caller keeping the text keeps serde's.
    pub(crate) fn parse(text: &[u8]) -> Option<Hundredths> {
        let digit = |b: u8| b.is_ascii_digit().then(|| b - b'0');
        match *text {
            [b'1', b'.', b'0'] => Some(Hundredths(100)),
            [b'0', b'.', b'0'] => Some(Hundredths(0)),
            [b'0', b'.', d] => digit(d).filter(|&d| d != 0).map(|d| Hundredths(d * 10)),
            [b'0', b'.', d, e] => {
                let (d, e) = (digit(d)?, digit(e).filter(|&e| e != 0)?);
                Some(Hundredths(d * 10 + e))
            }
            _ => None,
        }
    }

    /// serde_json's text of the float.
    pub(crate) fn text(self) -> &'static [u8] {
        const TEXT: &[u8; 101 * 4] = &{
            let mut t = [b' '; 101 * 4];
            let mut k = 0;
            while k <= 100 {
                let at = k * 4;
                t[at] = if k == 100 { b'1' } else { b'0' };
                t[at + 1] = b'.';
                t[at + 2] = b'0' + (k % 100 / 10) as u8;
                t[at + 3] = b'0' + (k % 10) as u8;
                k += 1;
            }
            t
        };
        let k = usize::from(self.0.min(100));
        let at = k * 4;
        // `0.d0` prints as `0.d` (and `0.00`, `1.00` as `0.0`, `1.0`).
        let len = if k % 10 == 0 { 3 } else { 4 };
        TEXT.get(at..at + len).unwrap_or(b"0.0")
    }
}

/// The fields of a stored [`AuditRecord`] the bridge derives events, health and
/// sessions from, borrowed from the record's JSON where no unescaping is needed.
/// Parsing one skips `content` without building it. Made only by parsing (its
/// private fields say what the hand-written parse saw), so it prints and compares
/// the same whichever path read it.
#[derive(Deserialize)]
pub struct RecordView<'a> {
    /// `X-Request-Id` as answered.
    #[serde(borrow)]
    pub request_id: Cow<'a, str>,
    /// When the request arrived, Unix milliseconds.
    pub ts_unix_ms: u64,
    /// The caller's key id (`jti`).
    #[serde(default, borrow)]
    pub key_id: Option<Cow<'a, str>>,
    /// Tenant from the key.
    #[serde(default, borrow)]
    pub tenant: Option<Cow<'a, str>>,
    /// Model the client asked for.
    #[serde(borrow)]
    pub model_requested: Cow<'a, str>,
    /// Provider that answered (or was last tried).
    #[serde(default, borrow)]
    pub provider: Option<Cow<'a, str>>,
    /// Upstream model id used.
    #[serde(default, borrow)]
    pub model_upstream: Option<Cow<'a, str>>,
    /// Routing mode.
    #[serde(default, borrow)]
    pub route_mode: Option<Cow<'a, str>>,
    /// Request complexity score.
    #[serde(default)]
    pub complexity: Option<f64>,
    /// The request's task.
    #[serde(default, borrow)]
    pub task: Option<Cow<'a, str>>,
    /// Candidates considered, `model@provider:verdict`.
    #[serde(default, borrow)]
    pub route_candidates: StrList<'a>,
    /// Why the chosen candidate won.
    #[serde(default, borrow)]
    pub route_reason: Option<Cow<'a, str>>,
    /// HTTP status sent to the client.
    pub status: u16,
    /// Prompt tokens.
    pub tokens_in: u64,
    /// Completion tokens.
    pub tokens_out: u64,
    /// Time spent waiting on providers, µs.
    pub upstream_us: u64,
    /// Deployments tried, in order.
    #[serde(default, borrow)]
    pub attempts: StrList<'a>,
    /// Set by the hand-written parse: every string above is borrowed from the record
    /// and holds no byte JSON must escape, so it is written back as it was stored.
    #[serde(skip)]
    plain: bool,
    /// `complexity` as stored, when it is serde_json's text of that float (the
    /// hand-written parse's hundredths): written back without a float formatter.
    #[serde(skip)]
    complexity_text: Option<&'a str>,
}

impl fmt::Debug for RecordView<'_> {
    /// The fields read, not how they were read (the private fields are a cache of
    /// the same values), so the two parse paths print alike.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordView")
            .field("request_id", &self.request_id)
            .field("ts_unix_ms", &self.ts_unix_ms)
            .field("key_id", &self.key_id)
            .field("tenant", &self.tenant)
            .field("model_requested", &self.model_requested)
            .field("provider", &self.provider)
            .field("model_upstream", &self.model_upstream)
            .field("route_mode", &self.route_mode)
            .field("complexity", &self.complexity)
            .field("task", &self.task)
            .field("route_candidates", &self.route_candidates)
            .field("route_reason", &self.route_reason)
            .field("status", &self.status)
            .field("tokens_in", &self.tokens_in)
            .field("tokens_out", &self.tokens_out)
            .field("upstream_us", &self.upstream_us)
            .field("attempts", &self.attempts)
            .finish()
    }
}

impl<'a> RecordView<'a> {
    /// Parses a record's JSON (as [`AuditRecord`] serializes it). Records as
    /// [`AuditRecord::write_json`] writes them (no whitespace, no escapes in the
    /// fields read, no `content`) take a hand-written path, since the bridge parses
    /// every record; anything else, and every error, goes through serde_json, with
    /// the same result either way.
    pub fn parse(json: &'a [u8]) -> Result<RecordView<'a>, serde_json::Error> {
        match fast::parse(json) {
            Some(view) => Ok(view),
            None => serde_json::from_slice(json),
        }
    }

    /// Appends `s`, one of this view's strings, as a JSON string: as stored when the
    /// hand-written parse read the view (its strings need no escape), else escaped.
    pub(crate) fn push_str(&self, out: &mut Vec<u8>, s: &str) {
        if self.plain {
            out.push(b'"');
            out.extend_from_slice(s.as_bytes());
            out.push(b'"');
        } else {
            push_json_str(out, s);
        }
    }

    /// Appends `complexity` as serde_json writes the float (`null` when absent or
    /// not finite): its stored text when that is serde's.
    pub(crate) fn push_complexity(&self, out: &mut Vec<u8>) {
        match (self.complexity_text, self.complexity) {
            (Some(text), _) => out.extend_from_slice(text.as_bytes()),
            (None, Some(c)) => {
                if serde_json::to_writer(&mut *out, &c).is_err() {
                    out.extend_from_slice(b"null");
                }
            }
            (None, None) => out.extend_from_slice(b"null"),
        }
    }
}

/// The hand-written path of [`RecordView::parse`]: `None` whenever the input is
/// anything but a plain record, so serde_json decides (and reports errors).
mod fast {
    use std::borrow::Cow;

    use crate::audit::json::first_special;
    use crate::audit::record::{Hundredths, RecordView};
    use crate::audit::strlist::StrList;

    /// Every key of a record as [`super::AuditRecord::write_json`] writes them, in
    /// its order, quoted and with the colon: records list them so, with optional
    /// ones left out, so the next key is nearly always the first of these (from the
    /// last one found on) that the bytes start with.
    pub(super) const KEY_ORDER: [&str; 29] = [
        "\"request_id\":",
        "\"ts_unix_ms\":",
        "\"shard\":",
        "\"kid\":",
        "\"key_id\":",
        "\"tenant\":",
        "\"model_requested\":",
        "\"provider\":",
        "\"model_upstream\":",
        "\"route_mode\":",
        "\"complexity\":",
        "\"task\":",
        "\"route_candidates\":",
        "\"route_reason\":",
        "\"stream\":",
        "\"status\":",
        "\"tokens_in\":",
        "\"tokens_out\":",
        "\"cost_usd\":",
        "\"upstream_us\":",
        "\"overhead_us\":",
        "\"attempts\":",
        "\"budget_reserved_tokens\":",
        "\"budget_settled_tokens\":",
        "\"credit_nullifier\":",
        "\"credit_amount\":",
        "\"credit_issued_epoch\":",
        "\"credit_issued\":",
        "\"content\":",
    ];

    /// A key of [`KEY_ORDER`] as little-endian 8-byte words (zero-padded) with the
    /// masks of its bytes, so that whether a record's bytes start with it takes a
    /// few word comparisons inline rather than a call to `memcmp` (this runs for
    /// every key of every record).
    pub(super) struct KeyWords {
        words: [u64; 4],
        masks: [u64; 4],
        key: &'static str,
    }

    impl KeyWords {
        const fn new(key: &'static str) -> KeyWords {
            let b = key.as_bytes();
            assert!(b.len() <= 32, "a key longer than KeyWords holds");
            let (mut words, mut masks) = ([0u64; 4], [0u64; 4]);
            let mut i = 0;
            while i < b.len() {
                words[i / 8] |= (b[i] as u64) << (8 * (i % 8));
                masks[i / 8] |= 0xff << (8 * (i % 8));
                i += 1;
            }
            KeyWords { words, masks, key }
        }

        /// Whether `rest` starts with the key: four masked words (a key's unused
        /// words are zero under a zero mask), the first mismatch ending it.
        #[inline]
        pub(super) fn starts(&self, rest: &[u8]) -> bool {
            match rest.first_chunk::<32>() {
                Some(head) => (0..4).all(|i| {
                    let mut word = [0u8; 8];
                    word.copy_from_slice(&head[i * 8..i * 8 + 8]);
                    u64::from_le_bytes(word) & self.masks[i] == self.words[i]
                }),
                // The record's last 31 bytes: too short to load whole words.
                None => rest.starts_with(self.key.as_bytes()),
            }
        }
    }

    /// [`KEY_ORDER`] as [`KeyWords`].
    pub(super) const KEY_WORDS: [KeyWords; KEY_ORDER.len()] = {
        let mut out = [const { KeyWords { words: [0; 4], masks: [0; 4], key: "" } }; KEY_ORDER.len()];
        let mut i = 0;
        while i < KEY_ORDER.len() {
            out[i] = KeyWords::new(KEY_ORDER[i]);
            i += 1;
        }
        out
    };

    /// The place of `name` (unquoted) in [`KEY_ORDER`], at compile time: a field the
    /// parse reads that the order lacks fails the build instead of matching nothing.
    const fn key_at(name: &str) -> usize {
        let n = name.as_bytes();
        let mut i = 0;
        while i < KEY_ORDER.len() {
            let k = KEY_ORDER[i].as_bytes();
            // `"` + name + `":`
            if k.len() == n.len() + 3 {
                let mut j = 0;
                while j < n.len() && k[j + 1] == n[j] {
                    j += 1;
                }
                if j == n.len() {
                    return i;
                }
            }
            i += 1;
        }
        panic!("a field the parse reads is missing from KEY_ORDER")
    }

    const REQUEST_ID: usize = key_at("request_id");
    const TS_UNIX_MS: usize = key_at("ts_unix_ms");
    const KEY_ID: usize = key_at("key_id");
    const TENANT: usize = key_at("tenant");
    const MODEL_REQUESTED: usize = key_at("model_requested");
    const PROVIDER: usize = key_at("provider");
    const MODEL_UPSTREAM: usize = key_at("model_upstream");
    const ROUTE_MODE: usize = key_at("route_mode");
    const COMPLEXITY: usize = key_at("complexity");
    const TASK: usize = key_at("task");
    const ROUTE_CANDIDATES: usize = key_at("route_candidates");
    const ROUTE_REASON: usize = key_at("route_reason");
    const STATUS: usize = key_at("status");
    const TOKENS_IN: usize = key_at("tokens_in");
    const TOKENS_OUT: usize = key_at("tokens_out");
    const UPSTREAM_US: usize = key_at("upstream_us");
    const ATTEMPTS: usize = key_at("attempts");

    struct Cur<'a> {
        s: &'a str,
        at: usize,
    }

    impl<'a> Cur<'a> {
        fn eat(&mut self, b: u8) -> Option<()> {
            (self.s.as_bytes().get(self.at) == Some(&b)).then(|| self.at += 1)
        }

        fn peek(&self) -> Option<u8> {
            self.s.as_bytes().get(self.at).copied()
        }

        /// A string without escapes, borrowed.
        fn string(&mut self) -> Option<&'a str> {
            self.eat(b'"')?;
            let rest = self.s.as_bytes().get(self.at..)?;
            let end = first_special(rest)?;
            (rest.get(end) == Some(&b'"')).then_some(())?;
            // Both ends are ASCII bytes of a `str`, so char boundaries.
            let text = self.s.get(self.at..self.at + end)?;
            self.at += end + 1;
            Some(text)
        }

        /// The key at the cursor, with its `:`, when it is one of [`KEY_ORDER`] from
        /// `*next` on (moving `*next` past it), as its place there: what a scan of
        /// the key would read, found by comparing instead of scanning. `None` (nothing consumed) for any
        /// other key, escaped keys included, which the caller then scans.
        fn expected_key(&mut self, next: &mut usize) -> Option<usize> {
            let rest = self.s.as_bytes().get(self.at..)?;
            let skipped = KEY_WORDS.get(*next..)?.iter().position(|k| k.starts(rest))?;
            let at = *next + skipped;
            self.at += KEY_ORDER.get(at)?.len();
            *next = at + 1;
            Some(at)
        }

        fn literal(&mut self, word: &str) -> bool {
            let hit = self.s.as_bytes().get(self.at..).is_some_and(|r| r.starts_with(word.as_bytes()));
            if hit {
                self.at += word.len();
            }
            hit
        }

        /// A JSON number's text (validated only by the caller's parse).
        fn number(&mut self) -> Option<&'a str> {
            let rest = self.s.get(self.at..)?;
            let end = rest
                .bytes()
                .position(|b| !(b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E')))
                .unwrap_or(rest.len());
            self.at += end;
            (end > 0).then(|| rest.get(..end)).flatten()
        }

        /// An unsigned integer as JSON writes it: no sign, no leading zero, no
        /// fraction or exponent (those, and anything out of `T`'s range, are left
        /// to serde). Read in one pass, digits accumulated as they are checked.
        fn uint<T: TryFrom<u64>>(&mut self) -> Option<T> {
            let b = self.s.as_bytes();
            let start = self.at;
            let mut i = start;
            let mut n = 0u64;
            while let Some(&d) = b.get(i).filter(|d| d.is_ascii_digit()) {
                n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
                i += 1;
            }
            let digits = i - start;
            if digits == 0 || (digits > 1 && b.get(start) == Some(&b'0')) {
                return None;
            }
            if matches!(b.get(i), Some(b'-' | b'+' | b'.' | b'e' | b'E')) {
                return None;
            }
            self.at = i;
            T::try_from(n).ok()
        }

        fn opt_str(&mut self) -> Option<Option<Cow<'a, str>>> {
            // One byte decides: a string starts with `"`, anything else must be `null`.
            if self.peek()? != b'"' {
                return self.literal("null").then_some(None);
            }
            Some(Some(Cow::Borrowed(self.string()?)))
        }

        /// An array of strings without escapes, kept as its text (no allocation).
        fn str_list(&mut self) -> Option<StrList<'a>> {
            let start = self.at;
            self.eat(b'[')?;
            let mut len = 0;
            if self.eat(b']').is_none() {
                // Bounded: every round consumes a string, or returns.
                loop {
                    self.string()?;
                    len += 1;
                    if self.eat(b']').is_some() {
                        break;
                    }
                    self.eat(b',')?;
                }
            }
            Some(StrList::raw(self.s.get(start..self.at)?, len))
        }

        /// Skips a value of a field the view does not read: scalars only.
        fn skip(&mut self) -> Option<()> {
            match self.peek()? {
                b'"' => self.string().map(drop),
                b't' => self.literal("true").then_some(()),
                b'f' => self.literal("false").then_some(()),
                b'n' => self.literal("null").then_some(()),
                // A number serde would ignore (it checks only the grammar, not
                // the range); a malformed one is left to serde.
                _ => {
                    let n = self.number()?;
                    json_number(n).then_some(())
                }
            }
        }
    }

    /// Whether `n` has JSON's number grammar (Rust's float parse is looser).
    fn json_number(n: &str) -> bool {
        let b = n.as_bytes();
        let mut i = usize::from(b.first() == Some(&b'-'));
        let digits = |i: &mut usize| {
            let start = *i;
            while b.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            *i - start
        };
        let int_start = i;
        let int = digits(&mut i);
        if int == 0 || (int > 1 && b.get(int_start) == Some(&b'0')) {
            return false;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            if digits(&mut i) == 0 {
                return false;
            }
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if digits(&mut i) == 0 {
                return false;
            }
        }
        i == b.len()
    }

    pub(super) fn parse(json: &[u8]) -> Option<RecordView<'_>> {
        let s = std::str::from_utf8(json).ok()?;
        let mut c = Cur { s, at: 0 };
        let mut seen = 0u32;
        let mut v = RecordView {
            request_id: Cow::Borrowed(""),
            ts_unix_ms: 0,
            key_id: None,
            tenant: None,
            model_requested: Cow::Borrowed(""),
            provider: None,
            model_upstream: None,
            route_mode: None,
            complexity: None,
            task: None,
            route_candidates: StrList::default(),
            route_reason: None,
            status: 0,
            tokens_in: 0,
            tokens_out: 0,
            upstream_us: 0,
            attempts: StrList::default(),
            plain: true,
            complexity_text: None,
        };
        c.eat(b'{')?;
        // Where in [`KEY_ORDER`] the next key is looked for first.
        let mut next = 0;
        if c.eat(b'}').is_none() {
            loop {
                // The key as its place in `KEY_ORDER` (`usize::MAX`: not a field's).
                let field = match c.expected_key(&mut next) {
                    Some(field) => field,
                    None => {
                        let key = c.string()?;
                        c.eat(b':')?;
                        KEY_ORDER.iter().position(|k| k.get(1..k.len() - 2) == Some(key)).unwrap_or(usize::MAX)
                    }
                };
                let bit = match field {
                    REQUEST_ID => {
                        v.request_id = Cow::Borrowed(c.string()?);
                        1
                    }
                    TS_UNIX_MS => {
                        v.ts_unix_ms = c.uint()?;
                        1 << 1
                    }
                    KEY_ID => {
                        v.key_id = c.opt_str()?;
                        1 << 2
                    }
                    TENANT => {
                        v.tenant = c.opt_str()?;
                        1 << 3
                    }
                    MODEL_REQUESTED => {
                        v.model_requested = Cow::Borrowed(c.string()?);
                        1 << 4
                    }
                    PROVIDER => {
                        v.provider = c.opt_str()?;
                        1 << 5
                    }
                    MODEL_UPSTREAM => {
                        v.model_upstream = c.opt_str()?;
                        1 << 6
                    }
                    ROUTE_MODE => {
                        v.route_mode = c.opt_str()?;
                        1 << 7
                    }
                    COMPLEXITY => {
                        v.complexity_text = None;
                        v.complexity = if c.literal("null") {
                            None
                        } else {
                            let n = c.number()?;
                            match Hundredths::parse(n.as_bytes()) {
                                // What the shards write: no float parse, and the text
                                // is kept to be written back.
                                Some(h) => {
                                    v.complexity_text = Some(n);
                                    Some(h.value())
                                }
                                None => {
                                    json_number(n).then_some(())?;
                                    Some(n.parse::<f64>().ok().filter(|f| f.is_finite())?)
                                }
                            }
                        };
                        1 << 8
                    }
                    TASK => {
                        v.task = c.opt_str()?;
                        1 << 9
                    }
                    ROUTE_CANDIDATES => {
                        v.route_candidates = c.str_list()?;
                        1 << 10
                    }
                    ROUTE_REASON => {
                        v.route_reason = c.opt_str()?;
                        1 << 11
                    }
                    STATUS => {
                        v.status = c.uint()?;
                        1 << 12
                    }
                    TOKENS_IN => {
                        v.tokens_in = c.uint()?;
                        1 << 13
                    }
                    TOKENS_OUT => {
                        v.tokens_out = c.uint()?;
                        1 << 14
                    }
                    UPSTREAM_US => {
                        v.upstream_us = c.uint()?;
                        1 << 15
                    }
                    ATTEMPTS => {
                        v.attempts = c.str_list()?;
                        1 << 16
                    }
                    _ => {
                        c.skip()?;
                        0
                    }
                };
                // serde rejects a repeated field.
                (seen & bit == 0).then_some(())?;
                seen |= bit;
                if c.eat(b'}').is_some() {
                    break;
                }
                c.eat(b',')?;
            }
        }
        // Every field without a default must be there, and nothing after the object.
        const REQUIRED: u32 = 1 | 1 << 1 | 1 << 4 | 1 << 12 | 1 << 13 | 1 << 14 | 1 << 15;
        if seen & REQUIRED == REQUIRED && c.at == s.len() {
            Some(v)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        // Quotes, backslashes, every control byte, DEL and non-ASCII: all escape classes.
        proptest::collection::vec(
            prop_oneof![
                Just('"'),
                Just('\\'),
                (0u8..0x20).prop_map(char::from),
                Just('\u{7f}'),
                Just('é'),
                Just('😀'),
                any::<char>()
            ],
            0..12,
        )
        .prop_map(|cs| cs.into_iter().collect())
    }

    prop_compose! {
        fn record()(
            request_id in text(), ts in any::<u64>(), shard in any::<u16>(),
            opts in proptest::collection::vec(proptest::option::of(text()), 8),
            complexity in proptest::option::of(prop_oneof![any::<f64>(), (0u32..=100).prop_map(|c| f64::from(c) / 100.0)]),
            lists in (proptest::collection::vec(text(), 0..3), proptest::collection::vec(text(), 0..3)),
            stream in any::<bool>(), status in any::<u16>(), nums in any::<[u64; 4]>(), cost in text(),
            budget in (proptest::option::of(any::<u64>()), proptest::option::of(any::<u64>())),
            credit in (proptest::option::of(text()), proptest::option::of(any::<u64>())),
            issued in (proptest::option::of(any::<u32>()), proptest::option::of(any::<u64>())),
            content in proptest::option::of(text()),
        ) -> AuditRecord {
            let o = |i: usize| opts[i].clone();
            AuditRecord {
                request_id, ts_unix_ms: ts, shard, kid: o(0), key_id: o(1), tenant: o(2),
                model_requested: o(3).unwrap_or_default(), provider: o(4), model_upstream: o(5),
                route_mode: o(6), complexity, task: o(7), route_candidates: lists.0,
                route_reason: o(0).map(|s| s + "r"), stream, status, tokens_in: nums[0], tokens_out: nums[1],
                cost_usd: cost, upstream_us: nums[2], overhead_us: nums[3], attempts: lists.1,
                budget_reserved_tokens: budget.0, budget_settled_tokens: budget.1,
                credit_nullifier: credit.0, credit_amount: credit.1,
                credit_issued_epoch: issued.0, credit_issued: issued.1,
                content: content.map(|c| serde_json::json!({ "messages": [{ "content": c }] })),
            }
        }
    }

    proptest! {
        /// The stored format did not change: the hand-written writer's bytes are serde's.
        #[test]
        fn write_json_is_serdes_bytes(r in record()) {
            let mut out = b"prefix".to_vec();
            r.write_json(&mut out).unwrap();
            prop_assert_eq!(&out[6..], &serde_json::to_vec(&r).unwrap()[..]);
        }
    }

    proptest! {
        /// The hand-written parse reads every record the writer writes, as serde does.
        #[test]
        fn fast_parse_reads_written_records(mut r in record()) {
            r.content = None;
            let mut out = Vec::new();
            r.write_json(&mut out).unwrap();
            let serde: RecordView<'_> = serde_json::from_slice(&out).unwrap();
            let escapes = out.windows(2).any(|w| w[0] == b'\\');
            match fast::parse(&out) {
                Some(v) => prop_assert_eq!(format!("{v:?}"), format!("{serde:?}")),
                // Only a string with an escape leaves it to serde.
                None => prop_assert!(escapes, "{}", String::from_utf8_lossy(&out)),
            }
        }

        /// Whatever the input, the hand-written parse accepts only what serde
        /// accepts, with the same fields.
        #[test]
        fn fast_parse_never_disagrees_with_serde(
            r in record(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
        ) {
            let mut out = Vec::new();
            AuditRecord { content: None, ..r }.write_json(&mut out).unwrap();
            for (at, byte, op) in edits {
                let i = at.index(out.len() + 1);
                match op {
                    0 => out.insert(i, byte),
                    1 if i < out.len() => { out.remove(i); }
                    _ if i < out.len() => out[i] = byte,
                    _ => {}
                }
            }
            if let Some(v) = fast::parse(&out) {
                let serde: Result<RecordView<'_>, _> = serde_json::from_slice(&out);
                prop_assert!(serde.is_ok(), "fast accepted what serde refuses: {}", String::from_utf8_lossy(&out));
                prop_assert_eq!(format!("{v:?}"), format!("{:?}", serde.unwrap()));
            }
        }
    }

    proptest! {
        /// The 8-bytes-a-step scan finds exactly the first byte a byte-by-byte scan
        /// finds, wherever it is (every offset in a word, the tail, none at all).
        #[test]
        fn first_special_is_the_first_one(
            bytes in proptest::collection::vec(
                prop_oneof![Just(b'"'), Just(b'\\'), 0u8..0x20, 0x20u8..0x80, 0x80u8..=0xff, Just(b'a')],
                0..40,
            ),
        ) {
            let naive = bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            prop_assert_eq!(first_special(&bytes), naive);
        }
    }

    #[test]
    fn first_special_at_each_offset() {
        for special in [b'"', b'\\', 0, 0x1f] {
            for len in 0..24 {
                for at in 0..len {
                    // Bytes that sit next to the special ones, above and below.
                    let mut bytes: Vec<u8> = (0..len).map(|i| [b'#', b']', 0x20, 0x7f, 0x80, 0xff][i % 6]).collect();
                    bytes[at] = special;
                    assert_eq!(first_special(&bytes), Some(at), "{bytes:?}");
                    if at + 1 < len {
                        bytes[at + 1] = b'"';
                        assert_eq!(first_special(&bytes), Some(at), "{bytes:?}");
                    }
                }
                let clean: Vec<u8> = (0..len).map(|i| [b'#', b']', 0x20, 0x7f, 0x80, 0xff][i % 6]).collect();
                assert_eq!(first_special(&clean), None);
            }
        }
    }

    /// The key order the fast path expects is the order the writer writes: every
    /// field present, each key found without scanning, in order.
    #[test]
    fn key_order_is_the_writers() {
        let full = AuditRecord {
            kid: Some("k".into()),
            key_id: Some("k".into()),
            tenant: Some("t".into()),
            provider: Some("p".into()),
            model_upstream: Some("m".into()),
            route_mode: Some("cost".into()),
            complexity: Some(0.5),
            task: Some("chat".into()),
            route_candidates: vec!["c".into()],
            route_reason: Some("r".into()),
            attempts: vec!["a".into()],
            budget_reserved_tokens: Some(1),
            budget_settled_tokens: Some(1),
            credit_nullifier: Some("n".into()),
            credit_amount: Some(1),
            credit_issued_epoch: Some(1),
            credit_issued: Some(1),
            content: Some(serde_json::json!({})),
            ..AuditRecord::default()
        };
        let json = serde_json::to_value(&full).unwrap();
        let mut keys: Vec<String> = json.as_object().unwrap().keys().map(|k| format!("\"{k}\":")).collect();
        keys.sort();
        let mut sorted = fast::KEY_ORDER.map(String::from).to_vec();
        sorted.sort();
        assert_eq!(keys, sorted, "every field has its key");
        let mut out = Vec::new();
        full.write_json(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let at: Vec<usize> = fast::KEY_ORDER.iter().map(|k| text.find(k).unwrap()).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "in the writer's order: {text}");
    }

    /// The word comparison of a key says what `starts_with` says, at every length
    /// of what follows (short tails take the byte path) and for near misses.
    #[test]
    fn key_words_match_like_starts_with() {
        for (i, k) in fast::KEY_ORDER.iter().enumerate() {
            let words = &fast::KEY_WORDS[i];
            let mut texts = vec![format!("{k}\"x\",\"more\":1}}"), k.to_string(), k[..k.len() - 1].to_string()];
            for at in 0..k.len() {
                // One byte off anywhere in the key, in the middle of a long record.
                let mut b = format!("{k}1234567890123456789012345678901234567890").into_bytes();
                b[at] ^= 0x20;
                texts.push(String::from_utf8_lossy(&b).into_owned());
            }
            for t in &texts {
                for end in 0..=t.len() {
                    let rest = &t.as_bytes()[..end];
                    assert_eq!(
                        words.starts(rest),
                        rest.starts_with(k.as_bytes()),
                        "{k} in {:?}",
                        String::from_utf8_lossy(rest)
                    );
                }
            }
        }
    }

    #[test]
    fn fast_parse_leaves_the_unusual_to_serde() {
        let plain = br#"{"request_id":"r","ts_unix_ms":1,"model_requested":"m","status":200,"tokens_in":1,"tokens_out":2,"upstream_us":3}"#;
        assert!(fast::parse(plain).is_some());
        // Numbers the view does not read are skipped by their grammar alone, as serde
        // skips them (out of any range, exponents and fractions included).
        let skipped = br#"{"request_id":"r","ts_unix_ms":18446744073709551615,"model_requested":"m","status":65535,"tokens_in":0,"tokens_out":2,"upstream_us":3,"shard":1e400,"overhead_us":-0.5E-3,"x":123456789012345678901234567890}"#;
        let v = fast::parse(skipped).expect("a plain record");
        assert_eq!(format!("{v:?}"), format!("{:?}", serde_json::from_slice::<RecordView<'_>>(skipped).unwrap()));
        for other in [
            &br#"{"request_id":"r","ts_unix_ms":1,"model_requested":"m","status":200,"tokens_in":1,"tokens_out":2}"#[..],
            br#"{"request_id":"r","request_id":"r","ts_unix_ms":1,"model_requested":"m","status":200,"tokens_in":1,"tokens_out":2,"upstream_us":3}"#,
            br#"{"request_id":"r","ts_unix_ms":1,"model_requested":"m","status":70000,"tokens_in":1,"tokens_out":2,"upstream_us":3}"#,
            br#"{"request_id":"r","ts_unix_ms":1,"model_requested":"m","status":200,"tokens_in":1,"tokens_out":2,"upstream_us":3,"content":{}}"#,
            br#"{"request_id":"r\"","ts_unix_ms":1,"model_requested":"m","status":200,"tokens_in":1,"tokens_out":2,"upstream_us":3}"#,
            br#"{"request_id":"r","ts_unix_ms":1,"model_requested":"m","status":200,"tokens_in":1,"tokens_out":2,"upstream_us":3} "#,
            br#"{"request_id":"r","ts_unix_ms":01,"model_requested":"m","status":200,"tokens_in":1,"tokens_out":2,"upstream_us":3}"#,
            br#"{"request_id":"r","ts_unix_ms":1,"model_requested":"m","status":200,"tokens_in":1.5,"tokens_out":2,"upstream_us":3}"#,
            br#"{"request_id":"r","ts_unix_ms":1,"model_requested":"m","status":200,"tokens_in":1e3,"tokens_out":2,"upstream_us":3}"#,
            br#"{"request_id":"r","ts_unix_ms":18446744073709551616,"model_requested":"m","status":200,"tokens_in":1,"tokens_out":2,"upstream_us":3}"#,
            br#"{"request_id":"r","ts_unix_ms":1,"model_requested":"m","status":200,"tokens_in":1,"tokens_out":2,"upstream_us":3,"shard":01}"#,
            br#"{"request_id":"r","ts_unix_ms":1,"model_requested":"m","status":200,"tokens_in":1,"tokens_out":2,"upstream_us":3,"shard":1.}"#,
        ] {
            assert!(fast::parse(other).is_none(), "{}", String::from_utf8_lossy(other));
        }
        // The view still reads what only serde takes.
        let spaced = br#"{ "request_id":"r\"", "ts_unix_ms":1,"model_requested":"m","status":200,"tokens_in":1,"tokens_out":2,"upstream_us":3,"content":{"a":[1]}}"#;
        assert_eq!(RecordView::parse(spaced).unwrap().request_id, "r\"");
    }

    /// Every hundredths float: its table text is serde_json's, it reads back to the
    /// float both parsers give, and no other text of it takes the table path.
    #[test]
    fn hundredths_are_serdes_text() {
        for k in 0..=100u8 {
            let x = f64::from(k) / 100.0;
            let h = Hundredths::of(x).expect("a hundredths float");
            assert_eq!(h, Hundredths(k));
            let text = h.text();
            assert_eq!(text, serde_json::to_string(&x).unwrap().as_bytes(), "{k}");
            assert_eq!(Hundredths::parse(text), Some(h));
            let s = std::str::from_utf8(text).unwrap();
            assert_eq!(h.value().to_bits(), s.parse::<f64>().unwrap().to_bits(), "{s}");
            assert_eq!(h.value().to_bits(), serde_json::from_str::<f64>(s).unwrap().to_bits(), "{s}");
            // Other texts of the same number are not serde's: left to the float path.
            for other in [format!("{s}0"), format!("{x:e}"), format!("0{s}")] {
                assert_eq!(Hundredths::parse(other.as_bytes()), None, "{other}");
            }
        }
        for x in [0.125, 0.001, 1.01, 2.0, -0.0, -0.5, f64::NAN, f64::INFINITY, 0.1 + 0.2] {
            assert_eq!(Hundredths::of(x), None, "{x}");
        }
        for text in ["0.", "0.00", "1.00", "1.5", "0.5e0", "00.5", "-0.5", "0.x", ".5", "0.1.", "1"] {
            assert_eq!(Hundredths::parse(text.as_bytes()), None, "{text}");
        }
    }

    #[test]
    fn write_json_of_defaults_and_full_records() {
        for r in [
            AuditRecord::default(),
            AuditRecord {
                complexity: Some(0.35),
                route_candidates: vec!["m@p:chosen".into()],
                attempts: vec!["a: 502".into()],
                ..AuditRecord::default()
            },
        ] {
            let mut out = Vec::new();
            r.write_json(&mut out).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&r).unwrap());
        }
    }

    #[test]
    fn view_reads_what_the_record_wrote() {
        let r = AuditRecord {
            request_id: "r\"1".into(),
            ts_unix_ms: 7,
            key_id: Some("k".into()),
            model_requested: "m".into(),
            provider: Some("p".into()),
            status: 502,
            tokens_in: 3,
            tokens_out: 4,
            upstream_us: 9,
            attempts: vec!["a: 502".into(), "b".into()],
            content: Some(serde_json::json!({"messages": [{"role": "user"}]})),
            ..AuditRecord::default()
        };
        let bytes = serde_json::to_vec(&r).unwrap();
        let v = RecordView::parse(&bytes).unwrap();
        assert_eq!((v.request_id.as_ref(), v.ts_unix_ms, v.status), ("r\"1", 7, 502));
        assert_eq!((v.key_id.as_deref(), v.tenant.as_deref(), v.provider.as_deref()), (Some("k"), None, Some("p")));
        assert_eq!((v.tokens_in, v.tokens_out, v.upstream_us), (3, 4, 9));
        assert_eq!(v.attempts.iter().collect::<Vec<_>>(), ["a: 502", "b"]);
    }
}
