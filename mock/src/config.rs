//! The mock's settings: [`MockConfig`], a builder with the defaults of `gk-load mock`,
//! and [`Mock`], what [`MockConfig::build`] makes of it once every value is checked.
//!
//! All checks live in [`MockConfig::build`], so the `gk-load mock` flags, `gatekeeper
//! demo` and in-process tests are held to the same bounds.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::ConfigError;
use crate::faults::Fault;
use crate::latency::{Pauses, Ttft, DELAY_MS_MAX};
use crate::request::TOKENS_MAX;
use crate::schedule::Schedule;

/// Most runtime worker threads a mock may run.
pub const THREADS_MAX: usize = 256;
/// Longest `Retry-After` a 429 may carry, in seconds (a day).
pub const RETRY_AFTER_S_MAX: u64 = 86_400;
/// Longest pause period and pause, in seconds (a day).
pub const PAUSE_S_MAX: f64 = 86_400.0;
/// Fastest output token rate, in tokens per second.
pub const TOKENS_PER_S_MAX: f64 = 1e9;

/// Which provider's wire format the mock speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Mode {
    /// OpenAI Chat Completions.
    #[cfg_attr(feature = "clap", value(name = "openai"))]
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
    /// Groq (OpenAI format plus `x_groq` and timing usage).
    Groq,
    /// DeepSeek (OpenAI format plus prompt-cache usage).
    #[cfg_attr(feature = "clap", value(name = "deepseek"))]
    DeepSeek,
}

/// How the gap between streamed tokens is given; the last setter called wins.
#[derive(Clone, Copy, Debug, PartialEq)]
enum TokenGap {
    /// Milliseconds between tokens.
    Ms(u64),
    /// Tokens per second.
    PerS(f64),
}

/// Where the fault schedule comes from.
#[derive(Clone, Debug, PartialEq)]
enum ScheduleSource {
    /// A YAML file, read by [`MockConfig::build`].
    File(PathBuf),
    /// An already parsed schedule.
    Parsed(Schedule),
}

/// Settings of one mock provider, unchecked until [`MockConfig::build`].
///
/// Defaults match `gk-load mock`: name `mock`, OpenAI format, no key, no delays,
/// 16 tokens per answer, no fault, `Retry-After: 1`, one runtime thread.
///
/// ```
/// use gatekeeper_mock::{Fault, MockConfig, Mode};
///
/// let mock = MockConfig::new("127.0.0.1:0".parse().expect("address"))
///     .name("primary")
///     .mode(Mode::Groq)
///     .api_key("sk-test")
///     .latency_ms(5)
///     .fault(Fault::ServerError)
///     .build()
///     .expect("valid settings");
/// assert_eq!(mock.name(), "primary");
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct MockConfig {
    listen: SocketAddr,
    name: String,
    mode: Mode,
    api_key: Option<String>,
    latency_ms: u64,
    ttft: Ttft,
    token_gap: TokenGap,
    tokens: usize,
    fault: Fault,
    retry_after_s: u64,
    schedule: Option<ScheduleSource>,
    pauses_s: Option<(f64, f64)>,
    threads: usize,
}

impl MockConfig {
    /// Settings with the `gk-load mock` defaults, listening on `listen` (port 0 picks a
    /// free port).
    pub fn new(listen: SocketAddr) -> MockConfig {
        MockConfig {
            listen,
            name: "mock".to_string(),
            mode: Mode::OpenAi,
            api_key: None,
            latency_ms: 0,
            ttft: Ttft::Fixed(Duration::ZERO),
            token_gap: TokenGap::Ms(0),
            tokens: 16,
            fault: Fault::None,
            retry_after_s: 1,
            schedule: None,
            pauses_s: None,
            threads: 1,
        }
    }

    /// Name shown in stats and matched against `NAME=VALUE` entries of `X-Mock-*` headers.
    pub fn name(mut self, name: impl Into<String>) -> MockConfig {
        self.name = name.into();
        self
    }

    /// Wire format.
    pub fn mode(mut self, mode: Mode) -> MockConfig {
        self.mode = mode;
        self
    }

    /// Require this key: `Authorization: Bearer KEY` (Anthropic: `x-api-key: KEY`).
    pub fn api_key(mut self, key: impl Into<String>) -> MockConfig {
        self.api_key = Some(key.into());
        self
    }

    /// Fixed delay before a non-streamed answer, in milliseconds (at most `DELAY_MS_MAX`).
    pub fn latency_ms(mut self, ms: u64) -> MockConfig {
        self.latency_ms = ms;
        self
    }

    /// Fixed time to first token, in milliseconds; replaces an earlier [`MockConfig::ttft`].
    pub fn ttft_ms(mut self, ms: u64) -> MockConfig {
        self.ttft = Ttft::Fixed(Duration::from_millis(ms));
        self
    }

    /// Time to first token as a fixed delay or a distribution (see [`Ttft::parse_dist`]);
    /// replaces an earlier [`MockConfig::ttft_ms`].
    pub fn ttft(mut self, ttft: Ttft) -> MockConfig {
        self.ttft = ttft;
        self
    }

    /// Delay between streamed tokens, in milliseconds; replaces an earlier
    /// [`MockConfig::tokens_per_s`].
    pub fn token_ms(mut self, ms: u64) -> MockConfig {
        self.token_gap = TokenGap::Ms(ms);
        self
    }

    /// Output token rate (a gap of 1000/R ms); replaces an earlier [`MockConfig::token_ms`].
    pub fn tokens_per_s(mut self, rate: f64) -> MockConfig {
        self.token_gap = TokenGap::PerS(rate);
        self
    }

    /// Output tokens per answer, capped by the request's `max_tokens` (at most `TOKENS_MAX`).
    pub fn tokens(mut self, tokens: usize) -> MockConfig {
        self.tokens = tokens;
        self
    }

    /// Fault for every chat request, unless an `X-Mock-Fault` header says otherwise;
    /// cannot be combined with a schedule.
    pub fn fault(mut self, fault: Fault) -> MockConfig {
        self.fault = fault;
        self
    }

    /// `Retry-After` seconds sent with 429 (at most [`RETRY_AFTER_S_MAX`]).
    pub fn retry_after_s(mut self, secs: u64) -> MockConfig {
        self.retry_after_s = secs;
        self
    }

    /// Fault schedule read from a YAML file when [`MockConfig::build`] runs.
    pub fn schedule_file(mut self, path: impl Into<PathBuf>) -> MockConfig {
        self.schedule = Some(ScheduleSource::File(path.into()));
        self
    }

    /// Fault schedule already parsed (see [`Schedule::parse`]).
    pub fn schedule(mut self, schedule: Schedule) -> MockConfig {
        self.schedule = Some(ScheduleSource::Parsed(schedule));
        self
    }

    /// Pause the whole server for `pause_s` every `every_s` seconds; both within
    /// `(0, PAUSE_S_MAX]`, the pause shorter than the period.
    pub fn pauses(mut self, every_s: f64, pause_s: f64) -> MockConfig {
        self.pauses_s = Some((every_s, pause_s));
        self
    }

    /// Runtime worker threads (`1..=THREADS_MAX`); 1 runs a single-threaded runtime.
    pub fn threads(mut self, threads: usize) -> MockConfig {
        self.threads = threads;
        self
    }

    /// Checks every setting and reads the schedule file. Errors name the setting by its
    /// `gk-load mock` flag.
    pub fn build(self) -> Result<Mock, ConfigError> {
        if self.threads == 0 || self.threads > THREADS_MAX {
            return Err(invalid("threads", format!("must be 1..={THREADS_MAX}")));
        }
        if self.tokens > TOKENS_MAX {
            return Err(invalid("tokens", format!("at most {TOKENS_MAX}")));
        }
        if self.retry_after_s > RETRY_AFTER_S_MAX {
            return Err(invalid("retry-after-s", format!("at most {RETRY_AFTER_S_MAX}")));
        }
        let ttft_setting = match self.ttft {
            Ttft::Fixed(_) => "ttft-ms",
            Ttft::LogNormal { .. } => "ttft-dist",
        };
        self.ttft.check().map_err(|m| invalid(ttft_setting, m))?;
        let token_gap = match self.token_gap {
            TokenGap::PerS(r) if r > 0.0 && r <= TOKENS_PER_S_MAX => Duration::from_secs_f64(1.0 / r),
            TokenGap::PerS(_) => return Err(invalid("tokens-per-s", "must be > 0")),
            TokenGap::Ms(ms) => delay_ms("token-ms", ms)?,
        };
        if self.fault != Fault::None && self.schedule.is_some() {
            return Err(invalid("fault", "cannot be combined with --schedule"));
        }
        let schedule = match self.schedule {
            Some(ScheduleSource::File(path)) => Some(Schedule::load(&path)?),
            Some(ScheduleSource::Parsed(schedule)) => Some(schedule),
            None => None,
        };
        let pauses = match self.pauses_s {
            Some((every_s, pause_s)) => {
                let every = pause_secs("pause-every-s", every_s)?;
                let pause = pause_secs("pause-s", pause_s)?;
                if pause >= every {
                    return Err(invalid("pause-s", "must be shorter than --pause-every-s"));
                }
                Some(Pauses { every, pause })
            }
            None => None,
        };
        Ok(Mock {
            listen: self.listen,
            name: self.name,
            mode: self.mode,
            api_key: self.api_key,
            latency: delay_ms("latency-ms", self.latency_ms)?,
            ttft: self.ttft,
            token_gap,
            tokens: self.tokens,
            fault: self.fault,
            schedule,
            retry_after_s: self.retry_after_s,
            pauses,
            threads: self.threads,
        })
    }
}

fn invalid(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { setting, message: message.into() }
}

fn delay_ms(setting: &'static str, ms: u64) -> Result<Duration, ConfigError> {
    if ms > DELAY_MS_MAX {
        return Err(invalid(setting, format!("at most {DELAY_MS_MAX}")));
    }
    Ok(Duration::from_millis(ms))
}

fn pause_secs(setting: &'static str, s: f64) -> Result<Duration, ConfigError> {
    // Also rejects NaN, so Duration::from_secs_f64 cannot panic.
    if !(s > 0.0 && s <= PAUSE_S_MAX) {
        return Err(invalid(setting, format!("must be > 0 and <= {PAUSE_S_MAX}")));
    }
    Ok(Duration::from_secs_f64(s))
}

/// A mock provider whose settings passed [`MockConfig::build`]; run it with
/// [`Mock::start`] (its own thread and runtime) or [`crate::serve`] (your runtime).
#[derive(Clone, Debug)]
pub struct Mock {
    pub(crate) listen: SocketAddr,
    pub(crate) name: String,
    pub(crate) mode: Mode,
    pub(crate) api_key: Option<String>,
    /// Fixed delay before non-streamed answers.
    pub(crate) latency: Duration,
    pub(crate) ttft: Ttft,
    pub(crate) token_gap: Duration,
    pub(crate) tokens: usize,
    /// Fault for every request (unless a header says otherwise).
    pub(crate) fault: Fault,
    pub(crate) schedule: Option<Schedule>,
    pub(crate) retry_after_s: u64,
    pub(crate) pauses: Option<Pauses>,
    pub(crate) threads: usize,
}

impl Mock {
    /// The address it is configured to listen on (port 0 until bound).
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its wire format.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// A tokio runtime with the configured number of worker threads, for callers of
    /// [`crate::serve`] that do not have one.
    pub fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        if self.threads <= 1 {
            // A current-thread runtime avoids work-stealing overhead: the fastest single core.
            tokio::runtime::Builder::new_current_thread().enable_all().build()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(self.threads.min(THREADS_MAX))
                .enable_all()
                .build()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ConfigError;

    fn base() -> MockConfig {
        MockConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    fn setting_of(config: MockConfig) -> &'static str {
        match config.build() {
            Err(ConfigError::Invalid { setting, .. }) => setting,
            other => panic!("expected an invalid setting, got {other:?}"),
        }
    }

    #[test]
    fn defaults_build() {
        let mock = base().build().expect("defaults are valid");
        assert_eq!(mock.name(), "mock");
        assert_eq!(mock.mode(), Mode::OpenAi);
        assert_eq!(mock.tokens, 16);
        assert_eq!(mock.retry_after_s, 1);
        assert_eq!(mock.fault, Fault::None);
        assert!(mock.pauses.is_none() && mock.schedule.is_none());
    }

    #[test]
    fn each_bound_names_its_setting() {
        assert_eq!(setting_of(base().threads(0)), "threads");
        assert_eq!(setting_of(base().threads(THREADS_MAX + 1)), "threads");
        assert_eq!(setting_of(base().tokens(TOKENS_MAX + 1)), "tokens");
        assert_eq!(setting_of(base().retry_after_s(RETRY_AFTER_S_MAX + 1)), "retry-after-s");
        assert_eq!(setting_of(base().latency_ms(DELAY_MS_MAX + 1)), "latency-ms");
        assert_eq!(setting_of(base().ttft_ms(DELAY_MS_MAX + 1)), "ttft-ms");
        assert_eq!(setting_of(base().ttft(Ttft::LogNormal { median_ms: -1.0, sigma: 1.0 })), "ttft-dist");
        assert_eq!(setting_of(base().token_ms(DELAY_MS_MAX + 1)), "token-ms");
        assert_eq!(setting_of(base().tokens_per_s(0.0)), "tokens-per-s");
        assert_eq!(setting_of(base().tokens_per_s(f64::NAN)), "tokens-per-s");
        assert_eq!(setting_of(base().pauses(f64::NAN, 1.0)), "pause-every-s");
        assert_eq!(setting_of(base().pauses(10.0, 0.0)), "pause-s");
        assert_eq!(setting_of(base().pauses(1.0, 1.0)), "pause-s");
    }

    #[test]
    fn later_setters_replace_earlier_ones() {
        let mock = base().tokens_per_s(100.0).token_ms(7).build().expect("valid");
        assert_eq!(mock.token_gap, Duration::from_millis(7));
        let mock = base().token_ms(7).tokens_per_s(100.0).build().expect("valid");
        assert_eq!(mock.token_gap, Duration::from_millis(10));
        let mock = base().ttft(Ttft::LogNormal { median_ms: 5.0, sigma: 0.1 }).ttft_ms(3).build().expect("valid");
        assert_eq!(mock.ttft, Ttft::Fixed(Duration::from_millis(3)));
    }

    #[test]
    fn fault_and_schedule_conflict() {
        let schedule = Schedule::parse("- { for_s: 1, fault: \"500\" }\n").expect("schedule");
        assert_eq!(setting_of(base().fault(Fault::Stall).schedule(schedule.clone())), "fault");
        assert!(base().fault(Fault::None).schedule(schedule).build().is_ok());
    }

    #[test]
    fn schedule_file_is_read_at_build() {
        let missing = base().schedule_file("/nonexistent/schedule.yaml").build();
        assert!(matches!(missing, Err(ConfigError::Schedule(_))), "{missing:?}");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.yaml");
        std::fs::write(&path, "- { for_s: 2, fault: \"503\" }\n").expect("write");
        let mock = base().schedule_file(&path).build().expect("valid");
        assert_eq!(mock.schedule.map(|s| s.phases[0].fault), Some(Fault::Unavailable));
    }

    #[test]
    fn error_text_names_the_flag() {
        let e = base().tokens(TOKENS_MAX + 1).build().map(drop).expect_err("too many");
        assert_eq!(e.to_string(), format!("--tokens: at most {TOKENS_MAX}"));
    }
}
