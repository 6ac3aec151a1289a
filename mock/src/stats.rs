//! Counters behind `GET /__mock/stats` and `POST /__mock/reset`, so tests can assert
//! what actually reached the provider.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use crate::faults::{Fault, FAULTS_COUNTED};

/// Longest header value kept for `last_*` fields; longer ones are truncated.
pub const LAST_VALUE_BYTES_MAX: usize = 4096;

/// Shared counters. Atomics for the hot counters; the `last_*` strings sit behind an
/// uncontended mutex (one lock per request, no await while held).
#[derive(Debug, Default)]
pub struct Stats {
    requests: AtomicU64,
    faults: [AtomicU64; FAULTS_COUNTED.len()],
    last: Mutex<Last>,
}

#[derive(Debug, Default, Clone)]
struct Last {
    model: Option<String>,
    authorization: Option<String>,
    x_api_key: Option<String>,
}

/// One reading of the counters: what `GET /__mock/stats` reports, less the name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Chat requests since start or the last reset.
    pub requests: u64,
    /// Injected faults, in the order of [`FAULTS_COUNTED`].
    faults: [u64; FAULTS_COUNTED.len()],
    /// Model of the latest well-formed chat request.
    pub last_model: Option<String>,
    /// Latest `Authorization` header, else the latest `x-api-key` (Anthropic style).
    pub last_authorization: Option<String>,
    /// Latest `x-api-key` header.
    pub last_x_api_key: Option<String>,
}

impl StatsSnapshot {
    /// How often `fault` was injected; always 0 for [`Fault::None`], which is not counted.
    pub fn faults(&self, fault: Fault) -> u64 {
        fault.counter_index().and_then(|i| self.faults.get(i)).copied().unwrap_or(0)
    }
}

#[derive(Serialize)]
struct StatsJson<'a> {
    name: &'a str,
    requests: u64,
    faults: serde_json::Map<String, serde_json::Value>,
    last_model: Option<String>,
    last_authorization: Option<String>,
    last_x_api_key: Option<String>,
}

fn bounded(s: &str) -> String {
    let mut end = s.len().min(LAST_VALUE_BYTES_MAX);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl Stats {
    /// Counts one chat request and remembers its credentials.
    pub fn record_request(&self, authorization: Option<&str>, x_api_key: Option<&str>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last.lock() {
            set_last(&mut last.authorization, authorization);
            set_last(&mut last.x_api_key, x_api_key);
        }
    }

    /// Remembers the model of the latest well-formed chat request.
    pub fn record_model(&self, model: &str) {
        if let Ok(mut last) = self.last.lock() {
            set_last(&mut last.model, Some(model));
        }
    }

    /// Counts one injected fault; `none` is not counted.
    pub fn record_fault(&self, fault: Fault) {
        if let Some(i) = fault.counter_index() {
            self.faults[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Zeroes the counters and forgets the `last_*` values.
    pub fn reset(&self) {
        self.requests.store(0, Ordering::Relaxed);
        for c in &self.faults {
            c.store(0, Ordering::Relaxed);
        }
        if let Ok(mut last) = self.last.lock() {
            *last = Last::default();
        }
    }

    /// Total chat requests since start or the last reset.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let last = self.last.lock().map(|l| l.clone()).unwrap_or_default();
        StatsSnapshot {
            requests: self.requests(),
            faults: self.faults.each_ref().map(|c| c.load(Ordering::Relaxed)),
            last_authorization: last.authorization.or(last.x_api_key.clone()),
            last_model: last.model,
            last_x_api_key: last.x_api_key,
        }
    }

    /// The stats JSON body of the mock called `name`.
    pub fn to_json(&self, name: &str) -> Vec<u8> {
        let snap = self.snapshot();
        let faults = FAULTS_COUNTED.iter().zip(snap.faults).map(|(f, n)| (f.name().to_string(), n.into())).collect();
        let json = StatsJson {
            name,
            requests: snap.requests,
            faults,
            last_model: snap.last_model,
            last_authorization: snap.last_authorization,
            last_x_api_key: snap.last_x_api_key,
        };
        serde_json::to_vec(&json).unwrap_or_default()
    }
}

fn set_last(slot: &mut Option<String>, value: Option<&str>) {
    match (slot.as_mut(), value) {
        (_, None) => *slot = None,
        // Reuse the allocation: the same key arrives on nearly every request.
        (Some(s), Some(v)) if s == v => {}
        (_, Some(v)) => *slot = Some(bounded(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_resets() {
        let s = Stats::default();
        s.record_request(Some("Bearer k"), None);
        s.record_model("gpt-x");
        s.record_fault(Fault::ServerError);
        s.record_fault(Fault::None);
        let v: serde_json::Value = serde_json::from_slice(&s.to_json("m")).expect("json");
        assert_eq!(v["name"], "m");
        assert_eq!(v["requests"], 1);
        assert_eq!(v["faults"]["500"], 1);
        assert_eq!(v["faults"]["429"], 0);
        assert_eq!(v["last_model"], "gpt-x");
        assert_eq!(v["last_authorization"], "Bearer k");
        s.reset();
        let v: serde_json::Value = serde_json::from_slice(&s.to_json("m")).expect("json");
        assert_eq!(v["requests"], 0);
        assert_eq!(v["faults"]["500"], 0);
        assert!(v["last_model"].is_null());
    }

    #[test]
    fn snapshot_matches_the_json() {
        let s = Stats::default();
        s.record_request(None, Some("k"));
        s.record_fault(Fault::Stall);
        s.record_fault(Fault::Stall);
        let snap = s.snapshot();
        assert_eq!(snap.requests, 1);
        assert_eq!(snap.faults(Fault::Stall), 2);
        assert_eq!(snap.faults(Fault::None), 0);
        assert_eq!(snap.last_authorization.as_deref(), Some("k"), "falls back to x-api-key");
        let v: serde_json::Value = serde_json::from_slice(&s.to_json("m")).expect("json");
        assert_eq!(v["faults"]["stall"], 2);
        assert_eq!(v["last_x_api_key"], "k");
    }

    #[test]
    fn falls_back_to_x_api_key_and_bounds_values() {
        let s = Stats::default();
        let long = "é".repeat(LAST_VALUE_BYTES_MAX);
        s.record_request(None, Some(&long));
        let v: serde_json::Value = serde_json::from_slice(&s.to_json("m")).expect("json");
        let got = v["last_authorization"].as_str().expect("str");
        assert!(got.len() <= LAST_VALUE_BYTES_MAX);
    }
}
