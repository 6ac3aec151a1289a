//! Gatekeeper's claims inside a token, the footer, and model allow-list globs.

use serde::{Deserialize, Serialize};

use super::error::KeyError;
use super::time::rfc3339_opt;
use crate::router::mode::RouteMode;

/// Longest `jti` accepted, bytes. Key ids are short; the bound keeps revocation lists sane.
pub const JTI_BYTES_MAX: usize = 128;

/// Largest number a budget claim (`budget.*`, `rpm`) may hold: 2^53, the largest integer
/// that every JSON reader (IEEE doubles) carries exactly. A larger limit is no limit in
/// practice and most likely a bug in the issuer, so the key is refused instead.
pub const BUDGET_CLAIM_MAX: u64 = 1 << 53;

/// Spending limits carried by a key; every field is optional (absent: no limit).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// Tokens (prompt + completion) per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    /// Tokens per day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_day: Option<u64>,
    /// Tokens per calendar month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_month: Option<u64>,
    /// Spend per calendar month, USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_month: Option<f64>,
}

impl Budget {
    /// True when no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == Budget::default()
    }
}

/// The claims of a Gatekeeper API key.
///
/// Times are Unix seconds here and RFC 3339 strings on the wire. Unknown claims are
/// ignored so that older gateways accept tokens from newer issuers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer (free text, e.g. the team that minted the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Subject: who the key is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Key id; what `keys.revoked` lists. Required.
    pub jti: String,
    /// Issued at, Unix seconds.
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Not valid before, Unix seconds.
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Expires at, Unix seconds; absent means the key never expires (revoke it instead).
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Tenant the usage is billed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Allowed models, `*` globs; empty means every model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// Default routing mode when the request sends no `X-Routing-Mode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteMode>,
    /// Minimum model quality (0–1) for cost routing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<f64>,
    /// Token and spend budgets.
    #[serde(default, skip_serializing_if = "Budget::is_empty")]
    pub budget: Budget,
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    /// Whether requests must carry a zero-knowledge credit proof.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub zk: bool,
    /// Anonymous credits (not tokens: the gateway's `credits.tokens_per_credit` does not
    /// apply) per epoch for a `zk` key (else `budget.tokens_per_day`, in tokens, else
    /// `credits.credits_per_epoch`); above 16,777,215 the credential is cut to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zk_credits: Option<u64>,
    /// The key id (`k4.pid.…`) of the issuer whose signature was verified. Set by the
    /// verifier, never read from (or written into) a token.
    #[serde(skip)]
    pub kid: Option<std::sync::Arc<str>>,
}

impl Claims {
    /// Parses and checks the signed payload. Call only after the signature verified: the
    /// errors are reported as `Malformed`, which would otherwise leak parse details.
    pub fn from_payload(payload: &[u8]) -> Result<Claims, KeyError> {
        let mut json = serde_json::Deserializer::from_slice(payload);
        // The path names the claim that failed, so an absurd budget (negative, fractional,
        // a string such as "NaN") is reported by name.
        let claims: Claims = serde_path_to_error::deserialize(&mut json)
            .map_err(|e| KeyError::Malformed(budget_claim_error(&e.path().to_string())))?;
        json.end().map_err(|_| KeyError::Malformed("claims are not valid JSON"))?;
        claims.check()?;
        Ok(claims)
    }

    /// The signed payload for these claims.
    pub fn to_payload(&self) -> Result<Vec<u8>, KeyError> {
        self.check()?;
        serde_json::to_vec(self).map_err(|_| KeyError::Malformed("claims cannot be serialised"))
    }

    /// Value checks beyond the JSON schema.
    fn check(&self) -> Result<(), KeyError> {
        if self.jti.is_empty() || self.jti.len() > JTI_BYTES_MAX {
            return Err(KeyError::Malformed("jti must be 1 to 128 bytes"));
        }
        if let Some(q) = self.quality {
            if !(0.0..=1.0).contains(&q) {
                return Err(KeyError::Malformed("quality must be between 0 and 1"));
            }
        }
        let counts = [
            ("budget.tokens_per_minute", self.budget.tokens_per_minute),
            ("budget.tokens_per_day", self.budget.tokens_per_day),
            ("budget.tokens_per_month", self.budget.tokens_per_month),
            ("rpm", self.rpm),
            ("zk_credits", self.zk_credits),
        ];
        for (path, value) in counts {
            if value.is_some_and(|v| v > BUDGET_CLAIM_MAX) {
                return Err(KeyError::Malformed(budget_claim_error(path)));
            }
        }
        if let Some(usd) = self.budget.usd_per_month {
            // 2^53 as f64 is exact.
            if !usd.is_finite() || !(0.0..=BUDGET_CLAIM_MAX as f64).contains(&usd) {
                return Err(KeyError::Malformed(budget_claim_error("budget.usd_per_month")));
            }
        }
        Ok(())
    }

    /// Whether `model` is on the allow-list (`*` matches any run of characters; an
    /// empty list allows every model).
    pub fn allows_model(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|pattern| glob_match(pattern.as_bytes(), model.as_bytes()))
    }

    /// [`Claims::allows_model`] as the error the pipeline returns (403).
    pub fn check_model(&self, model: &str) -> Result<(), KeyError> {
        if self.allows_model(model) {
            Ok(())
        } else {
            Err(KeyError::ModelNotAllowed { model: model.to_string() })
        }
    }
}

/// The error for a bad value at `path` (as `serde_path_to_error` writes it): the budget
/// claims by name, anything else as invalid JSON.
fn budget_claim_error(path: &str) -> &'static str {
    match path {
        "budget.tokens_per_minute" => "budget.tokens_per_minute must be a whole number from 0 to 2^53",
        "budget.tokens_per_day" => "budget.tokens_per_day must be a whole number from 0 to 2^53",
        "budget.tokens_per_month" => "budget.tokens_per_month must be a whole number from 0 to 2^53",
        "budget.usd_per_month" => "budget.usd_per_month must be a number from 0 to 2^53",
        "rpm" => "rpm must be a whole number from 0 to 2^53",
        _ => "claims are not valid JSON",
    }
}

/// `*`-only glob match, linear-time with single back-tracking point (no recursion, so a
/// hostile model name cannot blow up the stack or the time).
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    // Position after the last `*` seen, and where in `text` it started matching.
    let mut star: Option<(usize, usize)> = None;
    while let Some(&c) = text.get(t) {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p + 1, t));
                p += 1;
            }
            Some(&pc) if pc == c => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((after_star, start)) => {
                    p = after_star;
                    t = start + 1;
                    star = Some((after_star, start + 1));
                }
                None => return false,
            },
        }
    }
    pattern.get(p..).is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

/// The token footer: the issuer's PASERK key id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Footer {
    /// `k4.pid.…` of the issuer's public key.
    pub kid: String,
}

impl Footer {
    /// The footer for tokens signed by `key`.
    pub fn for_key(key: &super::paserk::PublicKey) -> Footer {
        Footer { kid: key.pid() }
    }

    /// Parses an untrusted footer.
    pub fn from_bytes(bytes: &[u8]) -> Result<Footer, KeyError> {
        if bytes.is_empty() {
            return Err(KeyError::Malformed("missing footer with issuer kid"));
        }
        let footer: Footer =
            serde_json::from_slice(bytes).map_err(|_| KeyError::Malformed("footer is not valid JSON"))?;
        if !footer.kid.starts_with(super::paserk::PID_PREFIX) {
            return Err(KeyError::Malformed("footer kid is not a k4.pid"));
        }
        Ok(footer)
    }

    /// The footer's bytes in a token.
    pub fn to_bytes(&self) -> Vec<u8> {
        // A struct of one string always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_models(models: &[&str]) -> Claims {
        Claims { jti: "k".into(), models: models.iter().map(|s| s.to_string()).collect(), ..Claims::default() }
    }

    #[test]
    fn globs() {
        let c = with_models(&["gpt-4o*", "claude-3-?", "llama-*-instant", "exact"]);
        assert!(c.allows_model("gpt-4o"));
        assert!(c.allows_model("gpt-4o-mini"));
        assert!(!c.allows_model("gpt-4"));
        assert!(!c.allows_model("xgpt-4o"));
        assert!(c.allows_model("claude-3-?"), "only `*` is special");
        assert!(!c.allows_model("claude-3-x"));
        assert!(c.allows_model("llama-3.1-8b-instant"));
        assert!(c.allows_model("llama--instant"));
        assert!(!c.allows_model("llama-3.1-8b-instant2"));
        assert!(c.allows_model("exact"));
        assert!(!c.allows_model("exac"));
        assert!(!c.allows_model(""));
        assert!(with_models(&["*"]).allows_model(""));
        assert!(with_models(&["*"]).allows_model("anything"));
        assert!(with_models(&[]).allows_model("anything"), "empty list allows all");
        assert!(with_models(&["*a*b*c"]).allows_model("xxaxxbxxc"));
        assert!(!with_models(&["*a*b*c"]).allows_model("xxaxxcxxb"));
        assert!(with_models(&["a**b"]).allows_model("ab"));
        assert!(!with_models(&[""]).allows_model("a"));
        assert_eq!(with_models(&["x"]).check_model("y"), Err(KeyError::ModelNotAllowed { model: "y".into() }));
    }

    #[test]
    fn glob_is_not_exponential() {
        let text = "a".repeat(4096);
        let pattern = format!("{}b", "*a".repeat(64));
        let start = std::time::Instant::now();
        assert!(!with_models(&[&pattern]).allows_model(&text));
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn payload_round_trip_and_checks() {
        let c = Claims {
            iss: Some("ops".into()),
            jti: "key-1".into(),
            exp: Some(1_700_000_000),
            quality: Some(0.5),
            budget: Budget { tokens_per_day: Some(10), ..Budget::default() },
            zk: true,
            ..Claims::default()
        };
        let payload = c.to_payload().unwrap();
        let text = std::str::from_utf8(&payload).unwrap();
        assert!(text.contains("\"exp\":\"2023-11-14T22:13:20+00:00\""), "{text}");
        assert!(!text.contains("tokens_per_minute"), "{text}");
        assert_eq!(Claims::from_payload(&payload).unwrap(), c);
        for bad in [
            &br#"{}"#[..],
            br#"{"jti":""}"#,
            br#"{"jti":"a","quality":1.5}"#,
            br#"{"jti":"a","exp":"tomorrow"}"#,
            br#"{"jti":"a","exp":1700000000}"#,
            br#"{"jti":"a","route":"fastest"}"#,
            br#"{"jti":"a"} x"#,
            b"not json",
        ] {
            assert!(Claims::from_payload(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(Claims::from_payload(br#"{"jti":"a","future_claim":1}"#).is_ok());
    }

    #[test]
    fn absurd_budget_claims_are_refused_by_name() {
        let bad = |claim: &str, value: &str| {
            let json = match claim {
                "rpm" => format!(r#"{{"jti":"a","rpm":{value}}}"#),
                _ => format!(r#"{{"jti":"a","budget":{{"{claim}":{value}}}}}"#),
            };
            Claims::from_payload(json.as_bytes())
        };
        for claim in ["tokens_per_minute", "tokens_per_day", "tokens_per_month", "usd_per_month", "rpm"] {
            let path = if claim == "rpm" { claim.to_string() } else { format!("budget.{claim}") };
            for value in
                ["-1", "1e300", "\"NaN\"", "NaN", "9007199254740993", "9007199254740994", "18446744073709551616"]
            {
                if claim == "usd_per_month" && value == "9007199254740993" {
                    // As a double this is 2^53 exactly, which is allowed.
                    continue;
                }
                let err = bad(claim, value).unwrap_err();
                let KeyError::Malformed(message) = err else { panic!("{claim}={value}: {err:?}") };
                assert!(message.starts_with(&path), "{claim}={value}: {message}");
                assert!(message.contains("2^53"), "{message}");
            }
            assert!(bad(claim, "9007199254740992").is_ok(), "{claim}: 2^53 itself is allowed");
            assert!(bad(claim, "0").is_ok(), "{claim}: 0 is a limit of nothing");
        }
        // Fractional token counts are not counts; a fractional USD amount is fine.
        assert!(bad("tokens_per_day", "1.5").is_err());
        assert!(bad("usd_per_month", "12.5").is_ok());
        assert!(bad("usd_per_month", "-0.01").is_err());
        // Issuing refuses them too, with the same message.
        let c = Claims { jti: "a".into(), rpm: Some(BUDGET_CLAIM_MAX + 1), ..Claims::default() };
        assert_eq!(c.to_payload(), Err(KeyError::Malformed("rpm must be a whole number from 0 to 2^53")));
        let c = Claims {
            jti: "a".into(),
            budget: Budget { usd_per_month: Some(f64::INFINITY), ..Budget::default() },
            ..Claims::default()
        };
        assert_eq!(c.to_payload(), Err(KeyError::Malformed("budget.usd_per_month must be a number from 0 to 2^53")));
        // Other bad claims keep the generic message.
        assert_eq!(Claims::from_payload(br#"{"jti":5}"#), Err(KeyError::Malformed("claims are not valid JSON")));
    }
}
