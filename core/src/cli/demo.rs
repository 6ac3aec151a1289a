//! `gatekeeper demo`: an offline trial with nothing to install or configure.
//!
//! Starts two mock providers in this process (a primary and a backup that the
//! failover chain falls back to), mints an issuer and a demo key, starts the
//! gateway in front of them, and prints a ready `curl` line and the openai-SDK
//! settings.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use gatekeeper_mock::{MockConfig, MockServer, Mode};

use crate::config::Config;
use crate::keys::{issue, Claims, Footer, SecretKey};
use crate::serve::{start, Overrides, Signals};

/// Flags of `gatekeeper demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Where the gateway listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Number of shards.
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// Mock time to first token, ms.
    #[arg(long, default_value_t = 150)]
    pub ttft_ms: u64,
    /// Mock delay between tokens, ms.
    #[arg(long, default_value_t = 25)]
    pub token_ms: u64,
}

/// Starts one mock provider on its own thread; it stops when the handle is dropped.
fn start_mock(name: &str, mode: Mode, api_key: &str, args: &DemoArgs) -> anyhow::Result<MockServer> {
    let mock = MockConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)))
        .name(name)
        .mode(mode)
        .api_key(api_key)
        .ttft_ms(args.ttft_ms)
        .token_ms(args.token_ms)
        .build()
        .with_context(|| format!("mock provider {name}"))?;
    mock.start().with_context(|| format!("starting mock provider {name}"))
}

/// Runs the demo until SIGTERM or SIGINT.
pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let primary_mock = start_mock("primary", Mode::OpenAi, "sk-demo-primary", args)?;
    let backup_mock = start_mock("backup", Mode::Groq, "sk-demo-backup", args)?;
    let (primary, backup) = (primary_mock.addr(), backup_mock.addr());
    let issuer = SecretKey::generate();
    let public = issuer.public_key();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let claims = Claims {
        sub: Some("demo-user".into()),
        jti: "demo-key".into(),
        tenant: Some("demo".into()),
        iat: Some(now),
        exp: Some(now + 24 * 3600),
        ..Claims::default()
    };
    let token = issue(&issuer, &claims, &Footer::for_key(&public)).context("minting the demo key")?;
    let yaml = format!(
        r#"
listen: {listen}
providers:
  - {{ name: primary, kind: openai_compatible, base_url: "http://{primary}/v1", api_key: sk-demo-primary, {mock_headers} }}
  - {{ name: backup, kind: openai_compatible, base_url: "http://{backup}/v1", api_key: sk-demo-backup, {mock_headers} }}
models:
  - {{ name: gpt-4o-mini, provider: primary, upstream_model: gpt-4o-mini, price_per_1k_input: 0.00015, price_per_1k_output: 0.0006 }}
  # The backup stands in for gpt-4o-mini on a second provider: at the same price, cost
  # routing leaves the order to the failover chain (a cheaper one would be chosen first).
  - {{ name: gpt-4o-mini, provider: backup, upstream_model: llama-3.1-8b-instant, price_per_1k_input: 0.00015, price_per_1k_output: 0.0006 }}
  - {{ name: llama-3.1-8b-instant, provider: backup, upstream_model: llama-3.1-8b-instant }}
failover_chain:
  - {{ provider: primary, priority: 1 }}
  - {{ provider: backup, priority: 2 }}
keys:
  issuers: [ {{ public_key: "{public}" }} ]
"#,
        listen = args.listen,
        public = public.to_paserk(),
        // The mocks' X-Mock-* headers reach them, so failover can be tried by hand.
        mock_headers = "forward_headers: [user-agent, openai-beta, accept-language, \"x-mock-*\"]",
    );
    let mut config = Config::parse(&yaml).context("demo config")?;
    // The data dir is locked by its gateway: each demo gets its own, removed on exit.
    let data_dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .context("demo data dir")?;
    config.audit.data_dir = data_dir.path().to_path_buf();
    let signals = Signals::install()?;
    let running = start(config, &Overrides { shards: Some(args.shards), ..Overrides::default() })?;
    let addr = running.addr;
    println!("gatekeeper demo listening on {addr}");
    println!();
    println!("Mock providers: primary on {primary}, backup on {backup} (failover: primary → backup).");
    println!("Demo key (valid 24 h, key id demo-key):");
    println!("  export GATEKEEPER_KEY={token}");
    println!();
    println!("Try it:");
    println!(
        "  curl -sN http://{addr}/v1/chat/completions -H \"Authorization: Bearer $GATEKEEPER_KEY\" \
         -H 'Content-Type: application/json' \
         -d '{{\"model\":\"gpt-4o-mini\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"Hello!\"}}]}}'"
    );
    println!();
    println!("Make the primary fail (429, 500, 503, reset, stall, cut) and watch the backup answer:");
    println!("  add -H 'X-Mock-Fault: primary=503' to the curl line; X-Gatekeeper-Provider says who answered.");
    println!();
    println!("With the openai SDK (Python):");
    println!("  import os");
    println!("  from openai import OpenAI");
    println!("  client = OpenAI(base_url=\"http://{addr}/v1\", api_key=os.environ[\"GATEKEEPER_KEY\"])");
    println!("  client.chat.completions.create(model=\"gpt-4o-mini\", messages=[{{\"role\":\"user\",\"content\":\"Hello!\"}}])");
    println!();
    println!("Ctrl-C stops the demo.");
    signals.wait();
    running.shutdown_and_join();
    // The mocks outlive the gateway so its draining requests still get answers.
    drop((primary_mock, backup_mock));
    Ok(())
}
