//! The targets of a comparison: how each is configured, started and probed.
//!
//! Every target proxies to the same mock provider (`gk-load mock`), listens on a
//! loopback port, and gets the same number of workers where it has a knob for it
//! (nginx `worker_processes`, Gatekeeper `--shards`, LiteLLM `--num_workers`; Portkey's
//! Node server has one event loop). Peers that are not installed are skipped with a note.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::BenchError;
use crate::procs::{self, Supervisor};

/// Our binaries print their address within this.
const OURS_READY_WAIT: Duration = Duration::from_secs(30);
/// nginx reads a small config and forks its workers.
const NGINX_READY_WAIT: Duration = Duration::from_secs(15);
/// LiteLLM imports a large Python package tree; on a 2-core VM that takes tens of seconds.
const LITELLM_READY_WAIT: Duration = Duration::from_secs(240);
/// Node loads the gateway bundle.
const PORTKEY_READY_WAIT: Duration = Duration::from_secs(90);
/// `--version`-style probes.
const VERSION_WAIT: Duration = Duration::from_secs(30);
/// The API key peers send to the mock; the mock does not check it.
const MOCK_API_KEY: &str = "sk-gk-bench";
/// LiteLLM's master key for the run (local only; the listener is on loopback).
const LITELLM_MASTER_KEY: &str = "sk-gk-bench-litellm-local-7c1d";

/// A kind of target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Straight to the mock: the baseline.
    Direct,
    /// nginx `proxy_pass` with upstream keep-alive.
    Nginx,
    /// `gatekeeper serve --no-auth`.
    Gatekeeper,
    /// LiteLLM's proxy server.
    Litellm,
    /// The Portkey AI gateway.
    Portkey,
}

impl Kind {
    /// Every kind, in the default run order.
    pub const ALL: [Kind; 5] = [Kind::Direct, Kind::Nginx, Kind::Gatekeeper, Kind::Litellm, Kind::Portkey];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Nginx => "nginx",
            Kind::Gatekeeper => "gatekeeper",
            Kind::Litellm => "litellm",
            Kind::Portkey => "portkey",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// Where the programs are.
#[derive(Debug, Clone)]
pub struct Programs {
    /// `gatekeeper`.
    pub gatekeeper: PathBuf,
    /// `gk-load`.
    pub gk_load: PathBuf,
    /// `nginx`, if found.
    pub nginx: Option<PathBuf>,
    /// LiteLLM's `litellm` entry point, if found.
    pub litellm: Option<PathBuf>,
    /// Portkey's `build/start-server.js`, if found.
    pub portkey: Option<PathBuf>,
    /// `node`, if found (Portkey needs it).
    pub node: Option<PathBuf>,
}

/// What every target shares.
#[derive(Debug, Clone)]
pub struct Context {
    /// The mock provider.
    pub mock: SocketAddr,
    /// The mock's pid (CPU accounting of the direct runs).
    pub mock_pid: u32,
    /// Model names the load asks for; each is routed to the mock as itself.
    pub models: Vec<String>,
    /// Workers per proxy where it has a knob.
    pub workers: usize,
    /// Folder for configs and logs (the report's `raw/`).
    pub dir: PathBuf,
    /// YAML appended to Gatekeeper's config (`--gatekeeper-config`).
    pub gatekeeper_extra: Option<String>,
}

/// A target that is up.
#[derive(Debug, Clone)]
pub struct Started {
    /// Which kind.
    pub kind: Kind,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Headers every request to it needs (`Name: value`).
    pub headers: Vec<String>,
    /// Its pid, when that one process does all the work (for `gk-load --target-pid`).
    pub pid: Option<u32>,
    /// The pid to watch for an early exit.
    pub watch_pid: Option<u32>,
    /// How it was set up, for the report.
    pub description: String,
    /// Its version, where it could be read.
    pub version: Option<String>,
}

/// Why a peer is not installed, with how to install it; `None` when it is.
pub fn missing(kind: Kind, p: &Programs) -> Option<String> {
    match kind {
        Kind::Direct | Kind::Gatekeeper => None,
        Kind::Nginx => p.nginx.is_none().then(|| "nginx not found on PATH (apt-get install nginx)".to_string()),
        Kind::Litellm => p.litellm.is_none().then(|| {
            "LiteLLM not found (python3 -m venv bench/.peers/litellm && bench/.peers/litellm/bin/pip install \
             'litellm[proxy]', or --litellm PATH)"
                .to_string()
        }),
        Kind::Portkey => {
            if p.node.is_none() {
                Some("node not found on PATH (Portkey's gateway is a Node program)".to_string())
            } else {
                p.portkey.is_none().then(|| {
                    "Portkey gateway not found (npm install --prefix bench/.peers/portkey @portkey-ai/gateway, \
                     or --portkey PATH/TO/start-server.js)"
                        .to_string()
                })
            }
        }
    }
}

/// Starts the mock provider.
pub fn start_mock(
    sup: &mut Supervisor,
    gk_load: &Path,
    dir: &Path,
    threads: usize,
    extra: &[String],
) -> Result<(u32, SocketAddr), BenchError> {
    let mut cmd = Command::new(gk_load);
    cmd.args(["mock", "--listen", "127.0.0.1:0", "--threads", &threads.to_string()]).args(extra);
    sup.spawn_listening("gk-load mock", cmd, &dir.join("mock.log"), OURS_READY_WAIT)
}

/// Starts one target; the caller has checked [`missing`].
pub fn start(kind: Kind, ctx: &Context, p: &Programs, sup: &mut Supervisor) -> Result<Started, BenchError> {
    match kind {
        Kind::Direct => Ok(Started {
            kind,
            addr: ctx.mock,
            headers: vec![],
            pid: Some(ctx.mock_pid),
            watch_pid: Some(ctx.mock_pid),
            description: "`gk-load mock` itself (the baseline)".into(),
            version: None,
        }),
        Kind::Nginx => start_nginx(ctx, p, sup),
        Kind::Gatekeeper => start_gatekeeper(ctx, p, sup),
        Kind::Litellm => start_litellm(ctx, p, sup),
        Kind::Portkey => start_portkey(ctx, p, sup),
    }
}

fn need<'a>(path: &'a Option<PathBuf>, what: &str) -> Result<&'a PathBuf, BenchError> {
    path.as_ref().ok_or_else(|| BenchError::Missing { what: what.into(), hint: "see bench/README.md".into() })
}

fn write(path: &Path, text: &str) -> Result<(), BenchError> {
    std::fs::write(path, text).map_err(BenchError::io(format!("writing {}", path.display())))
}

/// nginx config: `proxy_pass` over HTTP/1.1 with upstream keep-alive, as a tuned
/// reverse proxy would run in front of a provider.
pub fn nginx_conf(dir: &Path, listen_port: u16, mock: SocketAddr, workers: usize) -> String {
    let d = dir.display();
    format!(
        "worker_processes {workers};\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/nginx-error.log warn;\n\
         daemon off;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
         \x20   access_log off;\n\
         \x20   client_body_temp_path {d}/nginx-body;\n\
         \x20   proxy_temp_path {d}/nginx-proxy;\n\
         \x20   fastcgi_temp_path {d}/nginx-fastcgi;\n\
         \x20   uwsgi_temp_path {d}/nginx-uwsgi;\n\
         \x20   scgi_temp_path {d}/nginx-scgi;\n\
         \x20   upstream mock {{ server {mock}; keepalive 128; }}\n\
         \x20   server {{\n\
         \x20       listen 127.0.0.1:{listen_port} reuseport;\n\
         \x20       location / {{\n\
         \x20           proxy_pass http://mock;\n\
         \x20           proxy_http_version 1.1;\n\
         \x20           proxy_set_header Connection \"\";\n\
         \x20           proxy_buffering off;\n\
         \x20       }}\n\
         \x20   }}\n\
         }}\n"
    )
}

fn start_nginx(ctx: &Context, p: &Programs, sup: &mut Supervisor) -> Result<Started, BenchError> {
    let nginx = need(&p.nginx, "nginx")?;
    let port = procs::free_port()?;
    let conf = ctx.dir.join("nginx.conf");
    write(&conf, &nginx_conf(&ctx.dir, port, ctx.mock, ctx.workers))?;
    let mut cmd = Command::new(nginx);
    // -e: nginx opens its default error log before reading the config; point it here.
    cmd.arg("-e").arg(ctx.dir.join("nginx-error.log")).arg("-p").arg(&ctx.dir).arg("-c").arg(&conf);
    let pid = sup.spawn("nginx", cmd, &ctx.dir.join("nginx.log"))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    sup.wait_http("nginx", pid, addr, "/v1/models", NGINX_READY_WAIT)?;
    let version = version_line(Command::new(nginx).arg("-v"), "nginx version: ");
    Ok(Started {
        kind: Kind::Nginx,
        addr,
        headers: vec![],
        pid: None,
        watch_pid: Some(pid),
        description: format!(
            "nginx `proxy_pass`, {} workers, HTTP/1.1 upstream keep-alive (128), access log off, buffering off",
            ctx.workers
        ),
        version,
    })
}

/// Gatekeeper config: one OpenAI-compatible provider (the mock) serving every model as itself.
pub fn gatekeeper_yaml(mock: SocketAddr, models: &[String]) -> String {
    let mut s = format!(
        "providers:\n  - {{ name: mock, kind: openai_compatible, base_url: \"http://{mock}/v1\", connections_max: 512 }}\nmodels:\n"
    );
    for m in models {
        s.push_str(&format!("  - {{ name: {m:?}, provider: mock, upstream_model: {m:?} }}\n"));
    }
    s
}

fn start_gatekeeper(ctx: &Context, p: &Programs, sup: &mut Supervisor) -> Result<Started, BenchError> {
    let conf = ctx.dir.join("gatekeeper.yaml");
    let mut yaml = gatekeeper_yaml(ctx.mock, &ctx.models);
    yaml.push_str(ctx.gatekeeper_extra.as_deref().unwrap_or_default());
    write(&conf, &yaml)?;
    let mut cmd = Command::new(&p.gatekeeper);
    cmd.arg("serve")
        .arg("--config")
        .arg(&conf)
        .args(["--listen", "127.0.0.1:0", "--shards", &ctx.workers.to_string(), "--no-auth"])
        .env("GATEKEEPER_LOG", "warn");
    let (pid, addr) = sup.spawn_listening("gatekeeper", cmd, &ctx.dir.join("gatekeeper.log"), OURS_READY_WAIT)?;
    let version = version_line(Command::new(&p.gatekeeper).arg("--version"), "");
    Ok(Started {
        kind: Kind::Gatekeeper,
        addr,
        headers: vec![],
        pid: Some(pid),
        watch_pid: Some(pid),
        description: match &ctx.gatekeeper_extra {
            None => format!("`gatekeeper serve --no-auth --shards {}`, default limits and audit", ctx.workers),
            Some(extra) => format!(
                "`gatekeeper serve --no-auth --shards {}` with `{}`",
                ctx.workers,
                extra
                    .lines()
                    .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        },
        version,
    })
}

/// LiteLLM proxy config: every model as an OpenAI-compatible deployment on the mock.
pub fn litellm_yaml(mock: SocketAddr, models: &[String]) -> String {
    let mut s = String::from("model_list:\n");
    for m in models {
        s.push_str(&format!(
            "  - model_name: {m:?}\n    litellm_params:\n      model: {:?}\n      api_base: \"http://{mock}/v1\"\n      api_key: {MOCK_API_KEY}\n",
            format!("openai/{m}")
        ));
    }
    s.push_str("litellm_settings:\n  telemetry: false\n  drop_params: true\n");
    // LiteLLM 1.108 refuses to start without a master key, and its "permit unset key"
    // override did not take with several workers; a master key without a database is
    // a string comparison per request.
    s.push_str(&format!("general_settings:\n  master_key: {LITELLM_MASTER_KEY}\n"));
    s
}

fn start_litellm(ctx: &Context, p: &Programs, sup: &mut Supervisor) -> Result<Started, BenchError> {
    let litellm = need(&p.litellm, "litellm")?;
    let port = procs::free_port()?;
    let conf = ctx.dir.join("litellm.yaml");
    write(&conf, &litellm_yaml(ctx.mock, &ctx.models))?;
    let mut cmd = Command::new(litellm);
    cmd.arg("--config")
        .arg(&conf)
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--num_workers", &ctx.workers.to_string()])
        // No network here: use the bundled model cost map, no telemetry, quiet logs.
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .env("LITELLM_TELEMETRY", "False")
        .env("LITELLM_LOG", "ERROR")
        .env("DISABLE_ADMIN_UI", "True")
        .env("NO_DOCS", "True");
    let pid = sup.spawn("litellm", cmd, &ctx.dir.join("litellm.log"))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    sup.wait_http("litellm", pid, addr, "/health/liveliness", LITELLM_READY_WAIT)?;
    let python = litellm.with_file_name("python");
    let version = version_line(
        Command::new(python).args(["-c", "import importlib.metadata as m; print(m.version('litellm'))"]),
        "",
    );
    Ok(Started {
        kind: Kind::Litellm,
        addr,
        headers: vec![format!("Authorization: Bearer {LITELLM_MASTER_KEY}")],
        pid: None,
        watch_pid: Some(pid),
        description: format!(
            "LiteLLM proxy, {} workers, `openai/` deployments with `api_base` at the mock, `master_key` checked per request, no database",
            ctx.workers
        ),
        version,
    })
}

fn start_portkey(ctx: &Context, p: &Programs, sup: &mut Supervisor) -> Result<Started, BenchError> {
    let script = need(&p.portkey, "Portkey gateway")?;
    let node = need(&p.node, "node")?;
    let port = procs::free_port()?;
    let mut cmd = Command::new(node);
    cmd.arg(script).arg(format!("--port={port}")).arg("--headless").env("NODE_ENV", "production");
    let pid = sup.spawn("portkey", cmd, &ctx.dir.join("portkey.log"))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    sup.wait_http("portkey", pid, addr, "/", PORTKEY_READY_WAIT)?;
    let version = script
        .parent()
        .and_then(Path::parent)
        .and_then(|d| std::fs::read_to_string(d.join("package.json")).ok())
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("version").and_then(|v| v.as_str()).map(str::to_string));
    Ok(Started {
        kind: Kind::Portkey,
        addr,
        headers: vec![
            "x-portkey-provider: openai".into(),
            format!("x-portkey-custom-host: http://{}/v1", ctx.mock),
            format!("Authorization: Bearer {MOCK_API_KEY}"),
        ],
        pid: Some(pid),
        watch_pid: Some(pid),
        description: "Portkey gateway (`@portkey-ai/gateway` on Node, one event loop), routed by \
                      `x-portkey-provider: openai` + `x-portkey-custom-host`"
            .into(),
        version,
    })
}

/// The first line of a version command's output, with `prefix` cut off; `None` on failure.
fn version_line(cmd: &mut Command, prefix: &str) -> Option<String> {
    let (status, text) = procs::output_within(cmd, VERSION_WAIT).ok()?;
    if !status.success() {
        return None;
    }
    let line = text.lines().find(|l| !l.trim().is_empty())?.trim();
    let line = line.strip_prefix(prefix).unwrap_or(line);
    Some(line.to_string())
}

/// The first executable named `name` on `PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}
