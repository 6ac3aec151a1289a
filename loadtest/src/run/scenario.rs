//! Request templates: the `--scenario FILE` weighted mix, or one default chat request
//! built from flags. Each template is serialized to bytes once; per request only the
//! rotating bearer token is spliced in.
//!
//! ```yaml
//! requests:                      # a bare list of templates is accepted too
//!   - weight: 3
//!     model: gpt-4o-mini
//!     prompt: "Say hi"           # or messages: [{ role: user, content: "..." }]
//!     stream: true
//!     max_tokens: 32
//!     headers: { X-Routing-Mode: fastest }
//!     bearer_file: tokens.txt    # one token per line, rotated per request
//!   - { weight: 1, model: gpt-4o, prompt: "Summarize", path: /v1/chat/completions }
//! ```
//!
//! Errors name the field path and line (serde_path_to_error over serde_yaml, as the mock's
//! schedule parser does).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use gatekeeper_mock::schedule::yaml_error;
use rand::Rng;
use serde::de::{self, Deserializer};
use serde::Deserialize;

/// Most templates in a scenario.
pub const TEMPLATES_MAX: usize = 256;
/// Most bearer tokens read from one file.
pub const TOKENS_MAX: usize = 1_000_000;
/// Largest weight of one template.
pub const WEIGHT_MAX: u32 = 1_000_000;
/// Largest request body, in bytes.
pub const REQUEST_BODY_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Most extra headers per template.
pub const HEADERS_MAX: usize = 64;

/// One chat message of a template.
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// `system`, `user`, `assistant`, ...
    pub role: String,
    /// The text.
    pub content: String,
}

/// One request template as written in the scenario file.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    /// Relative share of requests (1..=1,000,000).
    #[serde(default = "weight_default", deserialize_with = "de_weight")]
    pub weight: u32,
    /// Model name.
    pub model: String,
    /// A single user message (exclusive with `messages`).
    #[serde(default)]
    pub prompt: Option<String>,
    /// Full message list (exclusive with `prompt`).
    #[serde(default)]
    pub messages: Option<Vec<Message>>,
    /// Ask for a streamed answer.
    #[serde(default)]
    pub stream: bool,
    /// `max_tokens` in the body, if set.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Extra request headers.
    #[serde(default, deserialize_with = "de_headers")]
    pub headers: BTreeMap<String, String>,
    /// File of bearer tokens, one per line, rotated per request; relative to the scenario.
    #[serde(default)]
    pub bearer_file: Option<String>,
    /// Request path; defaults to the `--url` path.
    #[serde(default)]
    pub path: Option<String>,
}

fn weight_default() -> u32 {
    1
}

fn de_weight<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u64::deserialize(d)?;
    if v == 0 || v > u64::from(WEIGHT_MAX) {
        return Err(de::Error::custom(format!("weight must be 1..={WEIGHT_MAX}, got {v}")));
    }
    Ok(v as u32)
}

fn de_headers<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let map = BTreeMap::<String, String>::deserialize(d)?;
    if map.len() > HEADERS_MAX {
        return Err(de::Error::custom(format!("at most {HEADERS_MAX} headers")));
    }
    for (name, value) in &map {
        check_header(name, value).map_err(de::Error::custom)?;
    }
    Ok(map)
}

/// Rejects header names and values that would break the request framing.
pub fn check_header(name: &str, value: &str) -> Result<(), String> {
    let token = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(format!("bad header name {name:?}"));
    }
    if value.bytes().any(|c| c == b'\r' || c == b'\n' || c == 0) {
        return Err(format!("header {name}: value holds CR, LF or NUL"));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioIn {
    requests: Vec<TemplateSpec>,
}

/// Parses scenario YAML into template specs; errors name the field path and line.
pub fn parse_specs(text: &str) -> Result<Vec<TemplateSpec>, String> {
    // Peek at the shape so the real pass uses the right type and keeps line numbers.
    let shape: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    let specs = if shape.is_sequence() {
        let de = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize::<_, Vec<TemplateSpec>>(de)
            .map_err(|e| format!("requests{}", yaml_error(e).trim_start_matches('.')))?
    } else {
        let de = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize::<_, ScenarioIn>(de).map_err(yaml_error)?.requests
    };
    if specs.is_empty() {
        return Err("requests: must hold at least one template".to_string());
    }
    if specs.len() > TEMPLATES_MAX {
        return Err(format!("requests: at most {TEMPLATES_MAX} templates"));
    }
    for (i, s) in specs.iter().enumerate() {
        match (&s.prompt, &s.messages) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "requests[{i}]: give prompt or messages, not both (line {})",
                    template_line(text, i).unwrap_or(0)
                ))
            }
            (None, None) => {
                return Err(format!(
                    "requests[{i}]: needs prompt or messages (line {})",
                    template_line(text, i).unwrap_or(0)
                ))
            }
            _ => {}
        }
    }
    Ok(specs)
}

/// Line (1-based) where template `index` starts: the index-th `- ` item of the list.
/// Only for cross-field errors found after deserializing, which serde cannot place.
fn template_line(text: &str, index: usize) -> Option<usize> {
    let mut seen = 0;
    let mut item_indent = None;
    for (n, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start().len();
        if line.trim_start().starts_with("- ") || line.trim() == "-" {
            let first = *item_indent.get_or_insert(indent);
            if indent == first {
                if seen == index {
                    return Some(n + 1);
                }
                seen += 1;
            }
        }
    }
    None
}

/// One pre-serialized request.
#[derive(Debug)]
pub struct Template {
    /// Request line and headers, up to (not including) the blank line.
    prefix: Vec<u8>,
    /// Blank line and body.
    suffix: Vec<u8>,
    /// Bearer tokens spliced in per request, rotated.
    tokens: Vec<Vec<u8>>,
    next_token: AtomicUsize,
    /// The template asks for a stream.
    pub stream: bool,
    /// Weight in the mix.
    pub weight: u32,
}

/// Fixed parts of every request: where it goes and headers from flags.
#[derive(Clone, Debug)]
pub struct Target<'a> {
    /// `Host` header value.
    pub host: &'a str,
    /// Default request path.
    pub path: &'a str,
    /// `-H` headers from the command line.
    pub headers: &'a [(String, String)],
}

impl Template {
    /// Builds a template from raw parts. `tokens` may be empty (no Authorization added).
    pub fn new(
        target: &Target<'_>,
        path: Option<&str>,
        extra_headers: &BTreeMap<String, String>,
        body: &[u8],
        tokens: Vec<Vec<u8>>,
        stream: bool,
        weight: u32,
    ) -> Template {
        let mut prefix = Vec::with_capacity(256);
        // Writes into a Vec cannot fail.
        let _ = write!(
            prefix,
            "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            path.unwrap_or(target.path),
            target.host,
            body.len()
        );
        if stream {
            prefix.extend_from_slice(b"accept: text/event-stream\r\n");
        }
        for (k, v) in target.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())) {
            let _ = write!(prefix, "{k}: {v}\r\n");
        }
        for (k, v) in extra_headers {
            let _ = write!(prefix, "{k}: {v}\r\n");
        }
        let mut suffix = Vec::with_capacity(body.len() + 2);
        suffix.extend_from_slice(b"\r\n");
        suffix.extend_from_slice(body);
        Template { prefix, suffix, tokens, next_token: AtomicUsize::new(0), stream, weight }
    }

    /// Builds a template from a scenario entry, reading its bearer file relative to `base`.
    pub fn from_spec(target: &Target<'_>, spec: &TemplateSpec, base: &Path, index: usize) -> Result<Template, String> {
        let messages = match (&spec.prompt, &spec.messages) {
            (Some(p), _) => vec![Message { role: "user".to_string(), content: p.clone() }],
            (None, Some(m)) => m.clone(),
            (None, None) => Vec::new(),
        };
        let body = chat_body(&spec.model, &messages, spec.stream, spec.max_tokens);
        let tokens = match &spec.bearer_file {
            Some(f) => read_tokens(&base.join(f)).map_err(|e| format!("requests[{index}].bearer_file: {e}"))?,
            None => Vec::new(),
        };
        if body.len() > REQUEST_BODY_BYTES_MAX {
            return Err(format!("requests[{index}]: body over {REQUEST_BODY_BYTES_MAX} bytes"));
        }
        Ok(Template::new(target, spec.path.as_deref(), &spec.headers, &body, tokens, spec.stream, spec.weight))
    }

    /// Replaces the bearer tokens (used for `--bearer` on templates without a file).
    pub fn with_tokens(mut self, tokens: Vec<Vec<u8>>) -> Template {
        self.tokens = tokens;
        self
    }

    /// Writes the next request into `out` (cleared first); rotates the bearer token.
    pub fn write_request(&self, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.prefix);
        if !self.tokens.is_empty() {
            let i = self.next_token.fetch_add(1, Ordering::Relaxed) % self.tokens.len();
            out.extend_from_slice(b"authorization: Bearer ");
            out.extend_from_slice(&self.tokens[i]);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(&self.suffix);
    }
}

/// The OpenAI chat body for a template.
pub fn chat_body(model: &str, messages: &[Message], stream: bool, max_tokens: Option<u32>) -> Vec<u8> {
    let mut body = serde_json::json!({ "model": model, "messages": messages, "stream": stream });
    if let Some(n) = max_tokens {
        body["max_tokens"] = n.into();
    }
    body.to_string().into_bytes()
}

/// Reads bearer tokens, one per line; blank lines are skipped.
pub fn read_tokens(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut tokens = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        if tokens.len() == TOKENS_MAX {
            return Err(format!("{}: more than {TOKENS_MAX} tokens", path.display()));
        }
        if !t.bytes().all(|c| c.is_ascii_graphic()) {
            return Err(format!("{} line {}: token holds non-printable bytes", path.display(), n + 1));
        }
        tokens.push(t.as_bytes().to_vec());
    }
    if tokens.is_empty() {
        return Err(format!("{}: no tokens", path.display()));
    }
    Ok(tokens)
}

/// Picks templates by weight.
#[derive(Clone, Debug)]
pub struct Mix {
    /// Running sums of weights.
    cumulative: Vec<u64>,
}

impl Mix {
    /// A mix over the given weights (each >= 1, at least one).
    pub fn new(weights: &[u32]) -> Mix {
        debug_assert!(!weights.is_empty() && weights.iter().all(|&w| w > 0));
        let mut sum = 0u64;
        let cumulative = weights
            .iter()
            .map(|&w| {
                sum += u64::from(w);
                sum
            })
            .collect();
        Mix { cumulative }
    }

    /// Draws a template index with probability weight / total.
    pub fn pick<R: Rng>(&self, rng: &mut R) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0);
        if self.cumulative.len() <= 1 || total == 0 {
            return 0;
        }
        let x = rng.gen_range(0..total);
        self.cumulative.partition_point(|&c| c <= x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const GOOD: &str = "requests:\n  - weight: 3\n    model: m1\n    prompt: hi\n    stream: true\n    max_tokens: 8\n    headers: { X-Routing-Mode: fastest }\n  - { weight: 1, model: m2, messages: [{ role: user, content: yo }] }\n";

    #[test]
    fn parses_map_and_list_forms() {
        let s = parse_specs(GOOD).expect("valid");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].weight, 3);
        assert!(s[0].stream);
        assert_eq!(s[0].headers["X-Routing-Mode"], "fastest");
        assert_eq!(s[1].messages.as_ref().map(Vec::len), Some(1));
        let l = parse_specs("- { model: m, prompt: p }\n").expect("valid");
        assert_eq!(l[0].weight, 1);
    }

    #[test]
    fn errors_name_field_and_line() {
        let bad_weight = "requests:\n  - { model: a, prompt: p }\n  - { model: b, prompt: p, weight: 0 }\n";
        let e = parse_specs(bad_weight).unwrap_err();
        assert!(e.contains("requests[1].weight"), "{e}");
        assert!(e.contains("line 3"), "{e}");

        let bad_stream = "requests:\n  - model: a\n    prompt: p\n    stream: maybe\n";
        let e = parse_specs(bad_stream).unwrap_err();
        assert!(e.contains("requests[0].stream"), "{e}");
        assert!(e.contains("line 4"), "{e}");

        let unknown = "- { model: a, prompt: p, temprature: 1 }\n";
        let e = parse_specs(unknown).unwrap_err();
        assert!(e.contains("temprature") && e.contains("line 1"), "{e}");

        let header = "requests:\n  - model: a\n    prompt: p\n    headers: { \"Bad Name\": x }\n";
        let e = parse_specs(header).unwrap_err();
        // A custom check on the whole map: serde_yaml places it at the template (line 2).
        assert!(e.contains("requests[0].headers") && e.contains("line 2"), "{e}");

        let both = "requests:\n  - { model: a, prompt: p }\n  - model: b\n    prompt: p\n    messages: []\n";
        let e = parse_specs(both).unwrap_err();
        assert!(e.contains("requests[1]") && e.contains("line 3"), "{e}");

        assert!(parse_specs("requests: []\n").is_err());
        assert!(parse_specs("requests: [ {").is_err());
    }

    #[test]
    fn template_bytes_rotate_tokens() {
        let target =
            Target { host: "h:1", path: "/v1/chat/completions", headers: &[("x-a".to_string(), "1".to_string())] };
        let t = Template::new(&target, None, &BTreeMap::new(), b"{}", vec![b"t1".to_vec(), b"t2".to_vec()], false, 1);
        let mut out = Vec::new();
        t.write_request(&mut out);
        let first = String::from_utf8(out.clone()).expect("utf8");
        assert_eq!(
            first,
            "POST /v1/chat/completions HTTP/1.1\r\nhost: h:1\r\ncontent-type: application/json\r\ncontent-length: 2\r\nx-a: 1\r\nauthorization: Bearer t1\r\n\r\n{}"
        );
        t.write_request(&mut out);
        assert!(String::from_utf8_lossy(&out).contains("Bearer t2"));
        t.write_request(&mut out);
        assert!(String::from_utf8_lossy(&out).contains("Bearer t1"));
    }

    #[test]
    fn weighted_mix_proportions() {
        let mix = Mix::new(&[5, 3, 2]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut counts = [0u32; 3];
        let draws = 200_000;
        for _ in 0..draws {
            counts[mix.pick(&mut rng)] += 1;
        }
        // Binomial sd at p = 0.5 is sqrt(n/4) ~ 224 draws = 0.11%; 1% is ~9 sd.
        for (c, want) in counts.iter().zip([0.5, 0.3, 0.2]) {
            let got = f64::from(*c) / f64::from(draws);
            assert!((got - want).abs() < 0.01, "{counts:?}");
        }
        assert_eq!(Mix::new(&[4]).pick(&mut rng), 0);
    }
}
