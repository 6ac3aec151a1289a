//! Counters behind `GET /__mock/stats` and `POST /__mock/reset`, so tests can assert
//! what actually reached the provider.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use super::faults::{Fault, FAULTS_COUNTED};

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

#[derive(Serialize)]
struct Snapshot<'a> {
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

    /// The stats JSON body. `last_authorization` is the `Authorization` header, or the
    /// `x-api-key` header when there was none (Anthropic style).
    pub fn to_json(&self, name: &str) -> Vec<u8> {
        let last = self.last.lock().map(|l| l.clone()).unwrap_or_default();
        let faults = FAULTS_COUNTED
            .iter()
            .zip(&self.faults)
            .map(|(f, c)| (f.name().to_string(), c.load(Ordering::Relaxed).into()))
            .collect();
        let snap = Snapshot {
            name,
            requests: self.requests(),
            faults,
            last_model: last.model,
            last_authorization: last.authorization.or(last.x_api_key.clone()),
            last_x_api_key: last.x_api_key,
        };
        serde_json::to_vec(&snap).unwrap_or_default()
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
    fn falls_back_to_x_api_key_and_bounds_values() {
        let s = Stats::default();
        let long = "é".repeat(LAST_VALUE_BYTES_MAX);
        s.record_request(None, Some(&long));
        let v: serde_json::Value = serde_json::from_slice(&s.to_json("m")).expect("json");
        let got = v["last_authorization"].as_str().expect("str");
        assert!(got.len() <= LAST_VALUE_BYTES_MAX);
    }
}
