//! `gk-load mock`: a mock LLM provider for Gatekeeper's integration tests and benchmarks.
//!
//! It speaks the OpenAI Chat Completions format (plus the Groq and DeepSeek variants) or
//! the Anthropic Messages format, over a small hand-rolled HTTP/1.1 server on tokio.
//!
//! Hand-off: [`MockArgs`] (flags) → [`Config::from_args`] (validated settings) →
//! [`serve`] (accept loop; one task per connection in `server`), which parses heads and
//! bodies with `http`, decides latency and faults from the config, `faults`,
//! `schedule`, `latency` and the `X-Mock-*` headers, and writes answers with `openai` or
//! `anthropic`. `stats` counts what arrived, served at `GET /__mock/stats`.
//!
//! Per-request headers (each value may be a plain value, or a comma list of
//! `NAME=VALUE` entries where only the entry naming this mock's `--name`, else `*`,
//! applies): `X-Mock-Fault`, `X-Mock-Retry-After`, `X-Mock-Cut-After`,
//! `X-Mock-Latency-Ms`, `X-Mock-Ttft-Ms`, `X-Mock-Token-Ms`, `X-Mock-Tokens`.

mod anthropic;
pub mod faults;
pub mod http;
pub mod latency;
mod openai;
pub mod request;
pub mod schedule;
mod server;
pub mod stats;

use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use tokio::net::TcpListener;

pub use faults::Fault;
pub use latency::{Pauses, Ttft};
pub use schedule::{Schedule, ScheduleError};
pub use stats::Stats;

/// Most runtime worker threads `--threads` accepts.
pub const THREADS_MAX: usize = 256;

/// Which provider's wire format the mock speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// OpenAI Chat Completions.
    #[value(name = "openai")]
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
    /// Groq (OpenAI format plus `x_groq` and timing usage).
    Groq,
    /// DeepSeek (OpenAI format plus prompt-cache usage).
    #[value(name = "deepseek")]
    DeepSeek,
}

/// Flags of `gk-load mock`.
#[derive(Args, Debug, Clone)]
pub struct MockArgs {
    /// Address to listen on; port 0 picks a free port (printed on start).
    #[arg(long)]
    pub listen: SocketAddr,
    /// Name of this mock, used in stats and to pick entries of `NAME=VALUE` header lists.
    #[arg(long, default_value = "mock")]
    pub name: String,
    /// Wire format.
    #[arg(long, value_enum, default_value = "openai")]
    pub mode: Mode,
    /// Require this key: `Authorization: Bearer KEY` (anthropic: `x-api-key: KEY`).
    #[arg(long)]
    pub api_key: Option<String>,
    /// Fixed delay before a non-streamed answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Delay before the first streamed event, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub ttft_ms: u64,
    /// Delay between streamed tokens, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub token_ms: u64,
    /// Output tokens per answer (capped by the request's max_tokens).
    #[arg(long, default_value_t = 16)]
    pub tokens: usize,
    /// Time to first token drawn from `lognormal:MEDIAN_MS:SIGMA` (overrides --ttft-ms).
    #[arg(long)]
    pub ttft_dist: Option<String>,
    /// Output token rate; overrides --token-ms with 1000/R ms.
    #[arg(long)]
    pub tokens_per_s: Option<f64>,
    /// Fault for every chat request: none, 429, 500, 503, reset, stall, cut.
    #[arg(long, conflicts_with = "schedule")]
    pub fault: Option<String>,
    /// Retry-After seconds sent with 429.
    #[arg(long, default_value_t = 1)]
    pub retry_after_s: u64,
    /// YAML fault schedule (phases by wall clock since start).
    #[arg(long)]
    pub schedule: Option<String>,
    /// Pause the whole server every N seconds (needs --pause-s).
    #[arg(long, requires = "pause_s")]
    pub pause_every_s: Option<f64>,
    /// Length of each pause in seconds (needs --pause-every-s).
    #[arg(long, requires = "pause_every_s")]
    pub pause_s: Option<f64>,
    /// Tokio worker threads; 1 runs a single-threaded runtime.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// Validated settings of one mock.
#[derive(Clone, Debug)]
pub struct Config {
    /// Listen address.
    pub listen: SocketAddr,
    /// Mock name.
    pub name: String,
    /// Wire format.
    pub mode: Mode,
    /// Required key, if any.
    pub api_key: Option<String>,
    /// Fixed delay before non-streamed answers.
    pub latency: Duration,
    /// Time to first token.
    pub ttft: Ttft,
    /// Gap between tokens.
    pub token_gap: Duration,
    /// Output tokens per answer.
    pub tokens: usize,
    /// Fault for every request (unless a header or schedule says otherwise).
    pub fault: Fault,
    /// Fault schedule.
    pub schedule: Option<Schedule>,
    /// Retry-After seconds for 429.
    pub retry_after_s: u64,
    /// Periodic pauses.
    pub pauses: Option<Pauses>,
}

/// A flag value that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A flag is out of range or malformed; names the flag.
    #[error("--{flag}: {message}")]
    Flag {
        /// The flag without dashes.
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The schedule file is unusable.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
}

fn flag_err(flag: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Flag { flag, message: message.into() }
}

fn ms_flag(flag: &'static str, ms: u64) -> Result<Duration, ConfigError> {
    if ms > latency::DELAY_MS_MAX {
        return Err(flag_err(flag, format!("at most {}", latency::DELAY_MS_MAX)));
    }
    Ok(Duration::from_millis(ms))
}

fn secs_flag(flag: &'static str, s: f64) -> Result<Duration, ConfigError> {
    if !(s > 0.0 && s <= 86_400.0) {
        return Err(flag_err(flag, "must be > 0 and <= 86400"));
    }
    Ok(Duration::from_secs_f64(s))
}

impl Config {
    /// Validates flags into a config (reads the schedule file).
    pub fn from_args(args: &MockArgs) -> Result<Config, ConfigError> {
        if args.threads == 0 || args.threads > THREADS_MAX {
            return Err(flag_err("threads", format!("must be 1..={THREADS_MAX}")));
        }
        if args.tokens > request::TOKENS_MAX {
            return Err(flag_err("tokens", format!("at most {}", request::TOKENS_MAX)));
        }
        if args.retry_after_s > 86_400 {
            return Err(flag_err("retry-after-s", "at most 86400"));
        }
        let ttft = match &args.ttft_dist {
            Some(d) => Ttft::parse_dist(d).map_err(|m| flag_err("ttft-dist", m))?,
            None => Ttft::Fixed(ms_flag("ttft-ms", args.ttft_ms)?),
        };
        let token_gap = match args.tokens_per_s {
            Some(r) if r > 0.0 && r <= 1e9 => Duration::from_secs_f64(1.0 / r),
            Some(_) => return Err(flag_err("tokens-per-s", "must be > 0")),
            None => ms_flag("token-ms", args.token_ms)?,
        };
        let fault = match &args.fault {
            Some(f) => f.parse().map_err(|e: faults::UnknownFault| flag_err("fault", e.to_string()))?,
            None => Fault::None,
        };
        let schedule = args.schedule.as_deref().map(Schedule::load).transpose()?;
        let pauses = match (args.pause_every_s, args.pause_s) {
            (Some(every), Some(pause)) => {
                let every = secs_flag("pause-every-s", every)?;
                let pause = secs_flag("pause-s", pause)?;
                if pause >= every {
                    return Err(flag_err("pause-s", "must be shorter than --pause-every-s"));
                }
                Some(Pauses { every, pause })
            }
            _ => None,
        };
        Ok(Config {
            listen: args.listen,
            name: args.name.clone(),
            mode: args.mode,
            api_key: args.api_key.clone(),
            latency: ms_flag("latency-ms", args.latency_ms)?,
            ttft,
            token_gap,
            tokens: args.tokens,
            fault,
            schedule,
            retry_after_s: args.retry_after_s,
            pauses,
        })
    }
}

/// Serves mock requests on an already-bound listener until `shutdown` resolves.
/// Returns the stats so in-process callers can inspect them.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<Arc<Stats>> {
    server::serve(listener, config, shutdown).await
}

/// Runs the mock on a runtime of `threads` workers: binds, prints
/// `listening on ADDR`, and serves until SIGTERM or SIGINT.
pub fn run(config: Config, threads: usize) -> std::io::Result<()> {
    let runtime = if threads <= 1 {
        // A current-thread runtime avoids work-stealing overhead: the fastest single core.
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads.min(THREADS_MAX)).enable_all().build()?
    };
    runtime.block_on(async move {
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {addr}")?;
        stdout.flush()?;
        drop(stdout);
        serve(listener, config, shutdown_signal()).await?;
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        // Without a SIGTERM handler, SIGINT still stops us.
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
