//! `gatekeeper route score` and `gatekeeper route explain`: the router's decision for
//! prompts offline, under a config file, through the same code the gateway runs.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;

use crate::config::Config;
use crate::router::{self, Decision, RouteInput, RouteMode, RouteRequest, RouteTable};
use crate::wire::openai::parse_chat;

/// Longest input line `route score` reads, bytes (the gateway's default body limit).
pub const LINE_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// `gatekeeper route …` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum RouteCommand {
    /// Read JSON lines on stdin (`{"prompt": "…"}` or a chat-completions body) and
    /// write one line each: `{"complexity", "task", "mode", "model"}`.
    Score {
        /// The gateway config whose models and routing to decide under.
        #[arg(long, value_name = "FILE", default_value = "gatekeeper.yaml")]
        config: PathBuf,
        /// Routing mode (default: the config's routing.default_mode).
        #[arg(long, value_enum)]
        mode: Option<RouteMode>,
    },
    /// Print the decision for one prompt, candidate by candidate: price, expected
    /// quality and verdict.
    Explain {
        /// The gateway config whose models and routing to decide under.
        #[arg(long, value_name = "FILE", default_value = "gatekeeper.yaml")]
        config: PathBuf,
        /// Routing mode (default: the config's routing.default_mode).
        #[arg(long, value_enum)]
        mode: Option<RouteMode>,
        /// The prompt (a user message), or a chat-completions body as JSON.
        prompt: String,
    },
}

/// The routing table and provider names of a config file. Only the sections routing
/// reads need their `${VAR}`s set: provider secrets may stay unset.
pub fn load(path: &Path) -> anyhow::Result<(RouteTable, Vec<String>)> {
    let config = Config::load_sections(path, Some(&["models", "failover_chain", "routing"]))
        .with_context(|| format!("config {}", path.display()))?;
    Ok((config.route_table(), config.providers.iter().map(|p| p.name.clone()).collect()))
}

/// The decision for one input: `{"prompt": "…"}` or a chat body (its `model` defaults
/// to the auto alias), in `mode` (`None`: the config's default).
pub fn decide(table: &RouteTable, input: &[u8], mode: Option<RouteMode>) -> Result<Decision, String> {
    let value: serde_json::Value = serde_json::from_slice(input).map_err(|e| format!("not JSON: {e}"))?;
    let body = match &value {
        serde_json::Value::Object(o) if o.get("messages").is_none() => {
            let prompt =
                o.get("prompt").and_then(|p| p.as_str()).ok_or("expected {\"prompt\": \"…\"} or a chat body")?;
            serde_json::json!({"model": table.routing.auto_model, "messages": [{"role": "user", "content": prompt}]})
        }
        serde_json::Value::Object(o) if o.get("model").is_none() => {
            let mut o = o.clone();
            o.insert("model".into(), table.routing.auto_model.clone().into());
            serde_json::Value::Object(o)
        }
        serde_json::Value::Object(_) => value,
        _ => return Err("expected a JSON object".into()),
    };
    let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
    let chat = parse_chat(&bytes).map_err(|e| e.message)?;
    let req = RouteRequest::from_chat(&chat);
    let input = RouteInput {
        model: &chat.model,
        mode_header: mode.map(|m| m.as_str().as_bytes()),
        claims: None,
        health: None,
        now: Instant::now(),
    };
    router::route(table, &req, &input).map(|r| r.decision).map_err(|e| e.to_string())
}

/// The chosen model's configured name.
pub fn chosen_name<'t>(table: &'t RouteTable, d: &Decision) -> Option<&'t str> {
    d.chosen().and_then(|id| table.deployment(id)).map(|dep| dep.name.as_str())
}

/// One output line of `route score`.
pub fn score_line(table: &RouteTable, input: &[u8], mode: Option<RouteMode>) -> serde_json::Value {
    match decide(table, input, mode) {
        Ok(d) => serde_json::json!({
            "complexity": (f64::from(d.complexity) * 100.0).round() / 100.0,
            "task": d.task.as_str(),
            "mode": d.mode.as_str(),
            "model": chosen_name(table, &d),
        }),
        Err(e) => serde_json::json!({ "error": e }),
    }
}

/// Runs a `route` subcommand.
pub fn run(cmd: RouteCommand) -> anyhow::Result<()> {
    match cmd {
        RouteCommand::Score { config, mode } => {
            let (table, _) = load(&config)?;
            let mut stdin = std::io::stdin().lock();
            let mut out = std::io::stdout().lock();
            let mut failed = 0u64;
            let mut line = Vec::new();
            loop {
                line.clear();
                if (&mut stdin).take(LINE_BYTES_MAX + 1).read_until(b'\n', &mut line)? == 0 {
                    break;
                }
                if line.len() as u64 > LINE_BYTES_MAX {
                    anyhow::bail!("an input line is longer than {LINE_BYTES_MAX} bytes");
                }
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let result = score_line(&table, &line, mode);
                failed += u64::from(result.get("error").is_some());
                writeln!(out, "{result}")?;
            }
            out.flush()?;
            if failed > 0 {
                anyhow::bail!("{failed} input line(s) could not be routed (see their \"error\")");
            }
            Ok(())
        }
        RouteCommand::Explain { config, mode, prompt } => {
            let (table, providers) = load(&config)?;
            let input = if prompt.trim_start().starts_with('{') {
                prompt.into_bytes()
            } else {
                serde_json::to_vec(&serde_json::json!({ "prompt": prompt }))?
            };
            let d = decide(&table, &input, mode).map_err(anyhow::Error::msg)?;
            let names: Vec<&str> = providers.iter().map(String::as_str).collect();
            print!("{}", d.explain(&table, &names));
            Ok(())
        }
    }
}
