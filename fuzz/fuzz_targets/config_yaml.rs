//! `gatekeeper.yaml` text (an operator's file, possibly templated from elsewhere):
//! parsing, `${ENV}` expansion, validation and every conversion into runtime types
//! must never panic.
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn env() -> &'static HashMap<String, String> {
    static ENV: OnceLock<HashMap<String, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        [("KEY", "sk-x"), ("TRICKY", "a: b # c\n- d"), ("EMPTY", "")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(config) = gatekeeper::config::Config::parse_with_env(text, env()) {
        let _ = gatekeeper::config::providers::build(&config.providers);
        let _ = config.route_table();
        let _ = gatekeeper_net::ServerLimits::from(&config.limits);
        if let Some(keys) = &config.keys {
            let _ = gatekeeper::keys::Verifier::try_from(keys);
        }
    }
});
