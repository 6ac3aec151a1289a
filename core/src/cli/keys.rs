//! `gatekeeper keys …`: make issuers, issue, inspect and revoke keys.
//!
//! Output names keys by their `kid` and `jti`; the only command that prints a whole
//! token is `issue`, whose job that is.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use crate::config::edit::Revoked;
use crate::config::Config;
use crate::keys::{decode_unverified, Budget, Claims, Footer, SecretKey, Verifier};
use crate::router::mode::RouteMode;

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
    /// Anonymous credits (not tokens) per epoch for a `--zk` key, at most 16,777,215.
    #[arg(long)]
    pub zk_credits: Option<u64>,
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
        Some(t) => Some(match crate::keys::time::parse_rfc3339(t) {
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
        zk_credits: args.zk_credits,
        kid: None,
    };
    let public = secret.public_key();
    let token = crate::keys::issue(&secret, &claims, &Footer::for_key(&public)).map_err(|e| match e {
        // A claim the gateway would refuse: say which, not "malformed API key".
        crate::keys::KeyError::Malformed(why) => anyhow::anyhow!("cannot issue: {why}"),
        other => anyhow::Error::new(other).context("cannot issue"),
    })?;
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
    let config = Config::load_sections(path, Some(&["keys"])).with_context(|| format!("{}", path.display()))?;
    let keys = config.keys.with_context(|| format!("{}: no `keys` section", path.display()))?;
    let verifier = Verifier::try_from(&keys).with_context(|| format!("{}: keys", path.display()))?;
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
    if key_id.starts_with("v4.public.") {
        let jti = decode_unverified(key_id).ok().and_then(|u| u.payload.get("jti")?.as_str().map(str::to_string));
        match jti {
            Some(jti) => bail!("that is a token, not a key id; its key id is {jti}: `gatekeeper keys revoke {jti}`"),
            None => {
                bail!("that looks like a token, not a key id; `gatekeeper keys inspect TOKEN` shows its key id (jti)")
            }
        }
    }
    match crate::config::edit::revoke_in_file(path, key_id)? {
        Revoked::Already => writeln!(out, "{key_id} is already revoked in {}", path.display())?,
        Revoked::Added => {
            writeln!(out, "revoked {key_id} in {}", path.display())?;
            // Tell whether a running gateway picked it up, or how to make it.
            match crate::reload::signal_running(path, std::time::Duration::from_secs(5)) {
                Ok(Some((pid, o))) if o.error.is_none() => {
                    writeln!(out, "the running gateway (pid {pid}) reloaded its config: the key is refused now")?
                }
                Ok(Some((pid, o))) => writeln!(
                    out,
                    "the running gateway (pid {pid}) could not reload: {}; fix the file, then `gatekeeper reload`",
                    o.error.unwrap_or_default()
                )?,
                Ok(None) => writeln!(
                    out,
                    "no running gateway uses this config; the revocation applies when it starts \
                     (or send a running one SIGHUP / `gatekeeper reload --config {}`)",
                    path.display()
                )?,
                Err(e) => writeln!(out, "could not ask a running gateway to reload: {e}; send it SIGHUP")?,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
            zk_credits: Some(50_000),
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
        // A claim the gateway would refuse is refused at issue, named, not called a malformed key.
        let absurd = IssueArgs { rpm: Some(1 << 60), ..args.clone() };
        let err = run_out(KeysCommand::Issue(absurd), now).unwrap_err().to_string();
        assert_eq!(err, "cannot issue: rpm must be a whole number from 0 to 2^53");
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
