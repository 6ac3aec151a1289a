//! `gatekeeper keys …`: make issuers, issue, inspect and revoke keys.
//!
//! Output names keys by their `kid` and `jti`; the only command that prints a whole
//! token is `issue`, whose job that is.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use super::claims::{Budget, Claims, Footer, RouteMode, JTI_BYTES_MAX};
use super::paserk::SecretKey;
use super::verifier::{decode_unverified, Verifier};
use crate::config::{Config, ConfigError};

/// `gatekeeper keys …` subcommands.
// Built once per process from argv; boxing the big variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeysCommand {
    /// Create an issuer key pair: writes the secret key (PASERK `k4.secret.…`, mode 0600)
    /// to FILE and prints the public key and key id for `keys.issuers` in the config.
    GenIssuer {
        /// Where to write the secret key; must not exist yet.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Issue an API key signed by an issuer's secret key; prints the token.
    Issue(IssueArgs),
    /// Show a token's claims and issuer kid; with --config, also whether it is valid.
    Inspect {
        /// The token (`v4.public.…`).
        token: String,
        /// Check the token against this config's `keys` section.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Add a key id (`jti`) to `keys.revoked` in the config file, keeping its comments
    /// and layout.
    Revoke {
        /// The key id to revoke.
        key_id: String,
        /// The config file to edit.
        #[arg(long, value_name = "FILE", default_value = "gatekeeper.yaml")]
        config: PathBuf,
    },
}

/// Flags of `gatekeeper keys issue`: one per claim.
#[derive(Debug, Clone, clap::Args)]
pub struct IssueArgs {
    /// The issuer's secret key file (from `gen-issuer`).
    #[arg(long, value_name = "FILE")]
    pub issuer: PathBuf,
    /// Subject: who the key is for.
    #[arg(long)]
    pub sub: Option<String>,
    /// Tenant the usage is billed to.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Key id (what `revoke` takes); default: random.
    #[arg(long)]
    pub jti: Option<String>,
    /// Allowed models, comma-separated, `*` globs (default: all).
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,
    /// Default routing mode.
    #[arg(long, value_enum)]
    pub route: Option<RouteMode>,
    /// Minimum model quality for cost routing, 0–1.
    #[arg(long)]
    pub quality: Option<f64>,
    /// Token budget per minute.
    #[arg(long)]
    pub tokens_per_minute: Option<u64>,
    /// Token budget per day.
    #[arg(long)]
    pub tokens_per_day: Option<u64>,
    /// Token budget per month.
    #[arg(long)]
    pub tokens_per_month: Option<u64>,
    /// Spend budget per month, USD.
    #[arg(long)]
    pub usd_per_month: Option<f64>,
    /// Requests per minute.
    #[arg(long)]
    pub rpm: Option<u64>,
    /// Require zero-knowledge credit proofs.
    #[arg(long)]
    pub zk: bool,
    /// Issuer name claim.
    #[arg(long)]
    pub iss: Option<String>,
    /// Not valid before: RFC 3339 time, or a delay from now (`10m`).
    #[arg(long, value_name = "TIME|DURATION")]
    pub not_before: Option<String>,
    /// Lifetime from now: a number with unit s, m, h or d (`30d`), or `never`.
    #[arg(long, default_value = "30d", value_name = "DURATION")]
    pub expires: String,
}

/// Runs a `keys` subcommand, printing to stdout.
pub fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let stdout = std::io::stdout();
    run_with(cmd, &mut stdout.lock(), now)
}

/// [`run`] with the output and clock supplied (for tests).
pub fn run_with(cmd: KeysCommand, out: &mut dyn Write, now_unix_s: i64) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::GenIssuer { out: path } => gen_issuer(&path, out),
        KeysCommand::Issue(args) => issue(&args, out, now_unix_s),
        KeysCommand::Inspect { token, config } => inspect(&token, config.as_deref(), out, now_unix_s),
        KeysCommand::Revoke { key_id, config } => revoke(&key_id, &config, out),
    }
}

fn gen_issuer(path: &Path, out: &mut dyn Write) -> anyhow::Result<()> {
    let secret = SecretKey::generate();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("{}: cannot create (an existing key file is never overwritten)", path.display()))?;
    file.write_all(secret.to_paserk().as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    let public = secret.public_key();
    writeln!(out, "secret key written to {} (keep it private)", path.display())?;
    writeln!(out, "public_key: {}", public.to_paserk())?;
    writeln!(out, "kid: {}", public.pid())?;
    writeln!(out, "add to gatekeeper.yaml:\nkeys:\n  issuers: [ {{ public_key: {} }} ]", public.to_paserk())?;
    Ok(())
}

fn read_secret(path: &Path) -> anyhow::Result<SecretKey> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("{}: cannot read issuer key", path.display()))?,
    );
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt as _;
        if meta.permissions().mode() & 0o077 != 0 {
            eprintln!("warning: {} is readable by other users; chmod 600 it", path.display());
        }
    }
    SecretKey::from_paserk(&text).with_context(|| format!("{}: not a k4.secret key", path.display()))
}

/// What `--expires` and `--not-before` accept: a unit is required, and none finer than a
/// second, since claims carry whole seconds.
const CLAIM_DURATION: gatekeeper_units::duration::Syntax = {
    use gatekeeper_units::duration::{Syntax, Unit};
    Syntax { units: &[Unit::Secs, Unit::Mins, Unit::Hours, Unit::Days], bare: None }
};

/// Seconds in `30d`, `12h`, `5m`, `90s`.
fn parse_duration_s(text: &str) -> anyhow::Result<i64> {
    let text = text.trim();
    let d = gatekeeper_units::duration::parse(text, CLAIM_DURATION).map_err(|e| anyhow::anyhow!("`{text}`: {e}"))?;
    if d.subsec_nanos() != 0 {
        bail!("`{text}`: must be whole seconds");
    }
    i64::try_from(d.as_secs()).with_context(|| format!("`{text}`: too long"))
}

fn random_jti() -> String {
    let mut bytes = [0u8; 12];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("key_{hex}")
}

fn issue(args: &IssueArgs, out: &mut dyn Write, now: i64) -> anyhow::Result<()> {
    let secret = read_secret(&args.issuer)?;
    let exp = match args.expires.as_str() {
        "never" => None,
        d => Some(now.saturating_add(parse_duration_s(d).context("--expires")?)),
    };
    let nbf = match &args.not_before {
        None => None,
        Some(t) => Some(match super::time::parse_rfc3339(t) {
            Some(at) => at,
            None => now.saturating_add(parse_duration_s(t).context("--not-before: not RFC 3339 nor a duration")?),
        }),
    };
    let claims = Claims {
        iss: args.iss.clone(),
        sub: args.sub.clone(),
        jti: args.jti.clone().unwrap_or_else(random_jti),
        iat: Some(now),
        nbf,
        exp,
        tenant: args.tenant.clone(),
        models: args.models.iter().map(|m| m.trim().to_string()).filter(|m| !m.is_empty()).collect(),
        route: args.route,
        quality: args.quality,
        budget: Budget {
            tokens_per_minute: args.tokens_per_minute,
            tokens_per_day: args.tokens_per_day,
            tokens_per_month: args.tokens_per_month,
            usd_per_month: args.usd_per_month,
        },
        rpm: args.rpm,
        zk: args.zk,
    };
    let public = secret.public_key();
    let token = super::issue(&secret, &claims, &Footer::for_key(&public)).context("cannot issue")?;
    eprintln!("issued jti={} kid={}", claims.jti, public.pid());
    writeln!(out, "{token}")?;
    Ok(())
}

fn inspect(token: &str, config: Option<&Path>, out: &mut dyn Write, now: i64) -> anyhow::Result<()> {
    let token = token.trim();
    let decoded = decode_unverified(token).context("cannot decode token")?;
    writeln!(out, "kid: {}", decoded.kid.as_deref().unwrap_or("(none)"))?;
    writeln!(out, "claims (unverified):")?;
    writeln!(out, "{}", serde_json::to_string_pretty(&decoded.payload)?)?;
    let Some(path) = config else { return Ok(()) };
    let config = Config::load(path).with_context(|| format!("{}", path.display()))?;
    let keys = config.keys.with_context(|| format!("{}: no `keys` section", path.display()))?;
    let verifier = Verifier::from_config(&keys).with_context(|| format!("{}: keys", path.display()))?;
    match verifier.verify_now(token, now) {
        Ok(claims) => {
            writeln!(out, "verdict: valid (jti {})", claims.jti)?;
            Ok(())
        }
        Err(e) => {
            let (status, code) = e.http_status_and_code();
            writeln!(out, "verdict: invalid: {code} ({status}): {e}")?;
            bail!("key is not valid: {e}")
        }
    }
}

fn revoke(key_id: &str, path: &Path, out: &mut dyn Write) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let Some(edited) = add_revocation(&text, key_id).with_context(|| format!("{}", path.display()))? else {
        writeln!(out, "{key_id} is already revoked in {}", path.display())?;
        return Ok(());
    };
    // Validate the edited file under a temporary name beside it, then rename over the
    // original: a bad edit never replaces a good config.
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.revoke-{}", std::process::id()));
    std::fs::write(&tmp, &edited).with_context(|| format!("{}: cannot write", tmp.display()))?;
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(&tmp, meta.permissions());
    }
    match Config::load(&tmp) {
        Ok(_) => {}
        Err(ConfigError::Env { name, .. }) => {
            eprintln!("warning: ${{{name}}} is not set here, so the edited config was checked only as YAML");
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            bail!("{}: the config would not load after the edit: {e}", path.display());
        }
    }
    std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot replace", path.display()))?;
    writeln!(out, "revoked {key_id} in {}", path.display())?;
    Ok(())
}

/// Whether `id` can be written into YAML as a plain scalar.
fn plain_yaml_ok(id: &str) -> bool {
    let keyword =
        matches!(id.to_ascii_lowercase().as_str(), "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n");
    let first_ok = id.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok && !keyword
}

/// `id` as it is written into the file.
fn yaml_scalar(id: &str) -> String {
    if plain_yaml_ok(id) {
        id.to_string()
    } else {
        format!("\"{id}\"")
    }
}

/// Splits `text` into (value, comment) at a ` #` outside quotes.
fn split_comment(text: &str) -> (&str, &str) {
    let mut quote: Option<char> = None;
    let mut prev_space = true;
    for (i, c) in text.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && prev_space => return (text[..i].trim_end(), &text[i..]),
            None => {}
        }
        prev_space = c.is_whitespace();
    }
    (text.trim_end(), "")
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_blank_or_comment(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

/// Adds `id` to `keys.revoked` in the YAML `text`, editing only the lines it must.
/// `Ok(None)` when `id` is already revoked.
pub(crate) fn add_revocation(text: &str, id: &str) -> anyhow::Result<Option<String>> {
    if id.is_empty() || id.len() > JTI_BYTES_MAX {
        bail!("key id must be 1 to {JTI_BYTES_MAX} bytes");
    }
    if !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) {
        bail!("key id `{id}` has characters other than letters, digits, `-`, `_`, `.`, `:`");
    }
    // The YAML's own view first: already revoked means nothing to do.
    let doc: serde_yaml::Value = serde_yaml::from_str(text).context("not valid YAML")?;
    let keys = doc.get("keys");
    if keys.is_none_or(serde_yaml::Value::is_null) {
        bail!("no `keys:` section; add one with an issuer (see `gatekeeper keys gen-issuer`) first");
    }
    if let Some(list) = keys.and_then(|k| k.get("revoked")).and_then(|r| r.as_sequence()) {
        if list.iter().any(|v| v.as_str() == Some(id)) {
            return Ok(None);
        }
    }

    let eol = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let keys_at = lines
        .iter()
        .position(|l| l.starts_with("keys:"))
        .context("`keys:` must be a top-level key at the start of a line")?;
    let (after_keys, _) = split_comment(lines[keys_at].get("keys:".len()..).unwrap_or(""));
    if !after_keys.trim().is_empty() {
        bail!("`keys:` is written in flow style (`keys: {{ … }}`); add `{id}` to its `revoked` list by hand");
    }
    // The keys block: following lines that are indented, blank or comments.
    let block_end = (keys_at + 1..lines.len())
        .find(|&i| !is_blank_or_comment(&lines[i]) && indent_of(&lines[i]) == 0)
        .unwrap_or(lines.len());
    let child_indent = (keys_at + 1..block_end)
        .find(|&i| !is_blank_or_comment(&lines[i]))
        .map(|i| indent_of(&lines[i]))
        .context("`keys:` has no entries")?;
    let revoked_at = (keys_at + 1..block_end)
        .find(|&i| indent_of(&lines[i]) == child_indent && lines[i].trim_start().starts_with("revoked:"));
    let pad = " ".repeat(child_indent);
    let item = yaml_scalar(id);

    let Some(at) = revoked_at else {
        lines.insert(keys_at + 1, format!("{pad}revoked: [{item}]"));
        return Ok(Some(lines.join(eol) + eol));
    };
    let line = lines[at].clone();
    let rest = line.trim_start().get("revoked:".len()..).unwrap_or("");
    let (value, comment) = split_comment(rest);
    let value = value.trim();
    let comment = if comment.is_empty() { String::new() } else { format!(" {comment}") };
    if let Some(inner) = value.strip_prefix('[') {
        let Some(inner) = inner.strip_suffix(']') else {
            bail!("`keys.revoked` spans several lines in flow style; add `{id}` by hand");
        };
        let inner = inner.trim();
        let items = if inner.is_empty() { item } else { format!("{inner}, {item}") };
        lines[at] = format!("{pad}revoked: [{items}]{comment}");
    } else if value.is_empty() || value == "~" || value == "null" {
        // A block list follows (items indented, or at the key's own indent), or nothing.
        let mut last_item = None;
        let mut item_indent = None;
        for (i, l) in lines.iter().enumerate().take(block_end).skip(at + 1) {
            if is_blank_or_comment(l) {
                continue;
            }
            let t = l.trim_start();
            let ind = indent_of(l);
            if (t == "-" || t.starts_with("- ")) && ind >= child_indent {
                item_indent.get_or_insert(ind);
                last_item = Some(i);
            } else if ind <= child_indent {
                break;
            }
        }
        match (last_item, item_indent) {
            (Some(last), Some(ind)) => {
                // Continuation lines of the last item (deeper indent) stay with it.
                let mut insert_at = last + 1;
                while insert_at < block_end
                    && !is_blank_or_comment(&lines[insert_at])
                    && indent_of(&lines[insert_at]) > ind
                {
                    insert_at += 1;
                }
                lines.insert(insert_at, format!("{}- {item}", " ".repeat(ind)));
            }
            _ => lines[at] = format!("{pad}revoked: [{item}]{comment}"),
        }
    } else {
        bail!("`keys.revoked` is not a list");
    }
    Ok(Some(lines.join(eol) + eol))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "# gateway config\nlisten: 127.0.0.1:8080\nkeys:\n  # trusted issuers\n  issuers: [ { public_key: k4.public.AAAA } ]\n";

    fn revoked_of(text: &str) -> Vec<String> {
        let doc: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
        doc["keys"]["revoked"].as_sequence().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
    }

    #[test]
    fn revoke_into_empty_flow_list() {
        let text = format!("{BASE}  revoked: []   # none yet\n  leeway_s: 30\naudit: {{ data_dir: ./d }}\n");
        let out = add_revocation(&text, "key_1").unwrap().unwrap();
        assert!(out.contains("  revoked: [key_1] # none yet\n"), "{out}");
        assert_eq!(revoked_of(&out), ["key_1"]);
        let again = add_revocation(&out, "key_2").unwrap().unwrap();
        assert!(again.contains("  revoked: [key_1, key_2] # none yet\n"), "{again}");
        assert_eq!(add_revocation(&again, "key_2").unwrap(), None, "idempotent");
        // Everything else is untouched.
        let strip = |s: &str| s.lines().filter(|l| !l.contains("revoked")).collect::<Vec<_>>().join("\n");
        assert_eq!(strip(&again), strip(&text));
    }

    #[test]
    fn revoke_into_block_list() {
        let text =
            format!("{BASE}  revoked:\n    - old_1   # leaked\n    - \"2024\"\n  leeway_s: 30\nnats: {{ url: x }}\n");
        let out = add_revocation(&text, "key_9").unwrap().unwrap();
        assert_eq!(revoked_of(&out), ["old_1", "2024", "key_9"]);
        assert!(out.contains("    - old_1   # leaked\n    - \"2024\"\n    - key_9\n  leeway_s: 30\n"), "{out}");
        assert_eq!(add_revocation(&out, "old_1").unwrap(), None);
        // Same-indent block sequence (valid YAML) too.
        let text = format!("{BASE}  revoked:\n  - a1\n  leeway_s: 30\n");
        let out = add_revocation(&text, "b2").unwrap().unwrap();
        assert_eq!(revoked_of(&out), ["a1", "b2"]);
    }

    #[test]
    fn revoke_adds_missing_revoked_and_quotes_odd_ids() {
        let out = add_revocation(BASE, "123").unwrap().unwrap();
        assert_eq!(revoked_of(&out), ["123"]);
        assert!(out.contains("keys:\n  revoked: [\"123\"]\n  # trusted issuers\n"), "{out}");
        let text = format!("{BASE}  revoked:   # nothing\n  leeway_s: 1\n");
        let out = add_revocation(&text, "yes").unwrap().unwrap();
        assert_eq!(revoked_of(&out), ["yes"]);
        let crlf = BASE.replace('\n', "\r\n");
        let out = add_revocation(&crlf, "k").unwrap().unwrap();
        assert!(out.ends_with("\r\n") && !out.replace("\r\n", "").contains('\n'), "{out:?}");
    }

    #[test]
    fn revoke_refuses_what_it_cannot_edit() {
        let err = |text: &str, id: &str| add_revocation(text, id).unwrap_err().to_string();
        assert!(err("listen: 0.0.0.0:1\n", "k").contains("no `keys:` section"));
        assert!(err("keys:\nlisten: x\n", "k").contains("no `keys:` section"));
        assert!(err("keys: { issuers: [], revoked: [] }\n", "k").contains("flow style"));
        assert!(err(&format!("{BASE}  revoked: [a,\n    b]\n"), "k").contains("by hand"));
        assert!(err(BASE, "bad id").contains("characters"));
        assert!(err(BASE, "").contains("1 to"));
        assert!(err("keys: [\n", "k").contains("YAML"));
    }

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn run_out(cmd: KeysCommand, now: i64) -> anyhow::Result<String> {
        let mut out = Vec::new();
        run_with(cmd, &mut out, now)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn gen_issue_inspect_revoke_end_to_end() {
        let dir = tmp();
        let key = dir.path().join("issuer.key");
        let printed = run_out(KeysCommand::GenIssuer { out: key.clone() }, 0).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert!(run_out(KeysCommand::GenIssuer { out: key.clone() }, 0).is_err(), "never overwrites");
        let public = printed.lines().find_map(|l| l.strip_prefix("public_key: ")).unwrap().to_string();
        let kid = printed.lines().find_map(|l| l.strip_prefix("kid: ")).unwrap().to_string();
        assert!(!printed.contains("k4.secret"), "{printed}");

        let now = 1_700_000_000;
        let args = IssueArgs {
            issuer: key.clone(),
            sub: Some("alice".into()),
            tenant: Some("acme".into()),
            jti: Some("key_alice".into()),
            models: vec!["gpt-4o*".into(), "claude-*".into()],
            route: Some(RouteMode::Latency),
            quality: Some(0.8),
            tokens_per_minute: Some(1000),
            tokens_per_day: None,
            tokens_per_month: None,
            usd_per_month: Some(12.5),
            rpm: Some(60),
            zk: true,
            iss: Some("ops".into()),
            not_before: None,
            expires: "30d".into(),
        };
        let token = run_out(KeysCommand::Issue(args.clone()), now).unwrap().trim().to_string();
        assert!(token.starts_with("v4.public."));

        let config = dir.path().join("gatekeeper.yaml");
        std::fs::write(
            &config,
            format!(
                "# test\nkeys:\n  issuers: [ {{ public_key: {public} }} ]   # current\n  revoked: []\n  leeway_s: 0\n"
            ),
        )
        .unwrap();
        let shown = run_out(KeysCommand::Inspect { token: token.clone(), config: Some(config.clone()) }, now).unwrap();
        assert!(shown.contains(&kid) && shown.contains("\"jti\": \"key_alice\""), "{shown}");
        assert!(shown.contains("\"tokens_per_minute\": 1000") && shown.contains("verdict: valid"), "{shown}");
        assert!(!shown.contains(&token), "inspect never echoes the token");
        let late =
            run_out(KeysCommand::Inspect { token: token.clone(), config: Some(config.clone()) }, now + 31 * 86_400);
        assert!(late.is_err());

        let printed = run_out(KeysCommand::Revoke { key_id: "key_alice".into(), config: config.clone() }, now).unwrap();
        assert!(printed.contains("revoked key_alice"), "{printed}");
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(text.contains("# current\n  revoked: [key_alice]\n"), "{text}");
        let again = run_out(KeysCommand::Revoke { key_id: "key_alice".into(), config: config.clone() }, now).unwrap();
        assert!(again.contains("already revoked"), "{again}");
        assert!(run_out(KeysCommand::Inspect { token, config: Some(config.clone()) }, now).is_err());

        // Expiry units and `never`.
        assert_eq!(parse_duration_s("90s").unwrap(), 90);
        assert_eq!(parse_duration_s("2h").unwrap(), 7200);
        assert!(parse_duration_s("2w").is_err() && parse_duration_s("-1d").is_err() && parse_duration_s("").is_err());
        let forever =
            run_out(KeysCommand::Issue(IssueArgs { expires: "never".into(), jti: None, ..args }), now).unwrap();
        let decoded = decode_unverified(forever.trim()).unwrap();
        assert!(decoded.payload.get("exp").is_none());
        assert!(decoded.payload["jti"].as_str().unwrap().starts_with("key_"));
    }

    #[test]
    fn revoke_keeps_a_bad_edit_away_from_the_file() {
        let dir = tmp();
        let config = dir.path().join("gatekeeper.yaml");
        // Valid YAML, but `shards: 0` fails validation: the file must stay as it was.
        let original = "shards: 0\nkeys:\n  issuers: []\n  revoked: []\n";
        std::fs::write(&config, original).unwrap();
        assert!(run_out(KeysCommand::Revoke { key_id: "k1".into(), config: config.clone() }, 0).is_err());
        assert_eq!(std::fs::read_to_string(&config).unwrap(), original);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "temporary file cleaned up");
    }

    #[test]
    fn clap_definitions_are_consistent() {
        use clap::{CommandFactory as _, Parser};
        #[derive(Parser)]
        struct Cli {
            #[command(subcommand)]
            keys: KeysCommand,
        }
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "gk",
            "issue",
            "--issuer",
            "f",
            "--models",
            "a,b*",
            "--route",
            "cost",
            "--zk",
            "--expires",
            "1h",
        ])
        .unwrap();
        match cli.keys {
            KeysCommand::Issue(a) => {
                assert_eq!(a.models, ["a", "b*"]);
                assert_eq!(a.route, Some(RouteMode::Cost));
                assert!(a.zk);
            }
            other => panic!("{other:?}"),
        }
        match Cli::try_parse_from(["gk", "revoke", "k1"]).unwrap().keys {
            KeysCommand::Revoke { key_id, config } => {
                assert_eq!((key_id.as_str(), config), ("k1", PathBuf::from("gatekeeper.yaml")));
            }
            other => panic!("{other:?}"),
        }
    }
}
