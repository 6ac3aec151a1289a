//! `gk-load mock`: the command line of the mock LLM provider in `gatekeeper-mock`.
//!
//! [`MockArgs`] (flags) → [`MockArgs::to_config`] (a [`MockConfig`]; only fault names
//! and `--ttft-dist` are parsed here) → [`MockConfig::build`] (every check) → [`run`]
//! (binds, prints `listening on ADDR`, serves until SIGTERM or SIGINT).

use std::io::Write as _;
use std::net::SocketAddr;

use clap::Args;
use gatekeeper_mock::{ConfigError, Fault, Mock, MockConfig, Mode, Ttft};
use tokio::net::TcpListener;

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

fn invalid(setting: &'static str, message: impl ToString) -> ConfigError {
    ConfigError::Invalid { setting, message: message.to_string() }
}

impl MockArgs {
    /// The flags as mock settings; parses the fault name and `--ttft-dist`, and leaves
    /// every range check to [`MockConfig::build`].
    pub fn to_config(&self) -> Result<MockConfig, ConfigError> {
        let mut config = MockConfig::new(self.listen)
            .name(self.name.clone())
            .mode(self.mode)
            .latency_ms(self.latency_ms)
            .ttft_ms(self.ttft_ms)
            .token_ms(self.token_ms)
            .tokens(self.tokens)
            .retry_after_s(self.retry_after_s)
            .threads(self.threads);
        if let Some(key) = &self.api_key {
            config = config.api_key(key.clone());
        }
        if let Some(dist) = &self.ttft_dist {
            config = config.ttft(Ttft::parse_dist(dist).map_err(|m| invalid("ttft-dist", m))?);
        }
        if let Some(rate) = self.tokens_per_s {
            config = config.tokens_per_s(rate);
        }
        if let Some(fault) = &self.fault {
            config = config.fault(fault.parse::<Fault>().map_err(|e| invalid("fault", e))?);
        }
        if let Some(path) = &self.schedule {
            config = config.schedule_file(path);
        }
        // clap makes the two flags come together.
        if let (Some(every_s), Some(pause_s)) = (self.pause_every_s, self.pause_s) {
            config = config.pauses(every_s, pause_s);
        }
        Ok(config)
    }
}

/// Runs the mock on a runtime of its configured threads: binds, prints
/// `listening on ADDR`, and serves until SIGTERM or SIGINT.
pub fn run(mock: Mock) -> std::io::Result<()> {
    let runtime = mock.runtime()?;
    runtime.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        // Handlers first: whoever reads the address may signal at once, and a signal
        // before them would kill the process instead of stopping it cleanly.
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let listener = TcpListener::bind(mock.listen()).await?;
        let addr = listener.local_addr()?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {addr}")?;
        stdout.flush()?;
        drop(stdout);
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        gatekeeper_mock::serve(listener, mock, shutdown).await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        mock: MockArgs,
    }

    fn config(flags: &[&str]) -> Result<Mock, ConfigError> {
        let cli = Cli::try_parse_from(["x", "--listen", "127.0.0.1:0"].iter().chain(flags)).expect("flags parse");
        cli.mock.to_config()?.build()
    }

    #[test]
    fn every_flag_reaches_the_settings() {
        let mock = config(&["--name", "p", "--mode", "anthropic", "--api-key", "k", "--threads", "2"]).expect("valid");
        assert_eq!((mock.name(), mock.mode()), ("p", Mode::Anthropic));
        let ok = [
            &["--latency-ms", "5", "--ttft-ms", "1", "--token-ms", "2", "--tokens", "3"][..],
            &["--ttft-dist", "lognormal:50:0.1", "--tokens-per-s", "100"],
            &["--fault", "stall", "--retry-after-s", "5"],
            &["--pause-every-s", "10", "--pause-s", "1", "--mode", "deepseek"],
        ];
        for flags in ok {
            assert!(config(flags).is_ok(), "{flags:?}");
        }
    }

    #[test]
    fn errors_name_the_flag() {
        let cases: [(&[&str], &str); 5] = [
            (&["--fault", "418"], "--fault: unknown fault"),
            (&["--ttft-dist", "normal:1"], "--ttft-dist: expected"),
            (&["--tokens-per-s", "0"], "--tokens-per-s: must be > 0"),
            (&["--threads", "0"], "--threads: must be 1..=256"),
            (&["--pause-every-s", "1", "--pause-s", "2"], "--pause-s: must be shorter"),
        ];
        for (flags, want) in cases {
            let e = config(flags).map(drop).expect_err("invalid");
            assert!(e.to_string().starts_with(want), "{flags:?}: {e}");
        }
    }
}
