//! `gatekeeper client`: a local OpenAI-compatible sidecar that pays each chat request with
//! an anonymous credit spend, so any OpenAI SDK works unchanged against a gateway that
//! wants credits (point `base_url` at the sidecar).
//!
//! It obtains the epoch's credential with the key (`POST /v1/credits/issue`), then for
//! each `POST /v1/chat/completions` spends `body bytes + max_tokens` tokens (the
//! gateway's `max_tokens_default` when the request gives none) in whole credits of the
//! gateway's `tokens_per_credit`, rounded up: an upper bound of the gateway's charge
//! (its prompt estimate is below the body's bytes), capped at the balance. It forwards
//! the request with `X-Gatekeeper-Credit` and no key, and takes the change from the
//! answer's header or the stream's final comment line.
//!
//! Protocol parameters: a gateway whose `params_version` (or `balance_bits`) is not this
//! build's is refused on every paid request with a message naming both (nothing is
//! spent; use a matching build). A wallet file of other parameters (an older build's) is
//! set aside with a warning: its credential cannot be spent under these parameters, and
//! the gateway issues the key a credential for the new ones even when it had one of the
//! old this epoch.
//!
//! Concurrency: the sidecar serves any number of client connections at once. Paid
//! requests take the wallet's lock from the spend to its change: a wallet holds one
//! credential and the protocol has no split, so the next spend needs the previous change
//! (one credential in flight at a time, always accounted for in the wallet file). Other
//! paths (`/v1/models`) do not touch the wallet and run concurrently. Connections to the
//! gateway are kept alive and reused; the gateway's parameters are fetched once per epoch.
//!
//! The wallet file (0600) is written atomically (temp file, fsync, rename) before every
//! message that changes what the wallet must remember. Crash recovery: a wallet saved
//! while *issuing* resends the same request, which the gateway answers with the same
//! credential. A wallet saved while *spending* (killed between spend and change) sends
//! the pending spend again: the gateway hands back the change it kept for it (with NATS,
//! whichever node signed it), or, if the spend was never recorded, pays and refunds it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use gatekeeper_zk::{Change, Domain, IssuanceResponse, PublicKey, Wallet, ZkError};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head the sidecar reads from its client.
const HEAD_BYTES_MAX: usize = 64 * 1024;
/// Largest request body the sidecar reads from its client.
const BODY_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Largest response head or whole body read from the gateway.
const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Response header (whole answers): µs the sidecar itself spent on the request (reading
/// it, proving the spend, writing the wallet, taking the change), the wait on the gateway
/// excluded.
pub const OVERHEAD_HEADER: &str = "X-Gatekeeper-Client-Overhead-Us";
/// Idle keep-alive connections to the gateway kept for reuse.
const IDLE_CONNECTIONS_MAX: usize = 16;

/// Flags of `gatekeeper client`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The gateway's base URL (`http://host:port` or `https://host[:port]`).
    #[arg(long)]
    pub gateway: String,
    /// A key with the `zk` claim (used only to obtain credentials).
    #[arg(long)]
    pub key: String,
    /// Where the sidecar listens (`127.0.0.1:0` picks a port).
    #[arg(long)]
    pub listen: String,
    /// Wallet file (0600, written atomically). Absent: the wallet lives in memory only.
    #[arg(long)]
    pub wallet: Option<PathBuf>,
    /// Extra CA certificates (PEM) trusted for an `https://` gateway, beside the web roots.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
}

/// A byte stream to the gateway: plain TCP or TLS over it.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Where the gateway is and how to reach it.
struct Target {
    /// `host:port` to connect to.
    addr: String,
    /// The `Host` header.
    host: String,
    /// With `https://`: the TLS connector and the name the certificate must carry.
    tls: Option<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>)>,
}

/// The gateway's public parameters of one epoch (`GET /v1/credits/params`), kept until
/// the next epoch starts.
#[derive(Clone)]
struct Params {
    domain: Domain,
    public: PublicKey,
    next_epoch_starts_unix_s: u64,
    /// Tokens a credit is worth (`credits.tokens_per_credit`; 1 when not sent).
    tokens_per_credit: u64,
    /// Tokens the gateway reserves when a request gives no `max_tokens`.
    max_tokens_default: u64,
}

/// The gateway's `params_version` and `balance_bits` against this build's: spends and
/// credentials of other parameters never verify, so they are refused before any.
fn check_params(params: &serde_json::Value) -> anyhow::Result<()> {
    let version = params["params_version"].as_str().unwrap_or("(none)");
    let bits = params["balance_bits"].as_u64();
    let ours_bits = u64::try_from(gatekeeper_zk::BALANCE_BITS).ok();
    if version != gatekeeper_zk::PARAMS_VERSION || bits != ours_bits {
        bail!(
            "the gateway speaks credit params {version} (balance_bits {}), this client {} (balance_bits {}): \
             use a gatekeeper client of the gateway's version",
            bits.map_or_else(|| "?".to_string(), |b| b.to_string()),
            gatekeeper_zk::PARAMS_VERSION,
            gatekeeper_zk::BALANCE_BITS
        );
    }
    Ok(())
}

/// Credits to spend for a chat body: `body bytes + max_tokens` tokens (the request's,
/// else the gateway's default) in whole credits, rounded up. The gateway's charge is
/// `prompt estimate + max_tokens` rounded up the same way, and its estimate never
/// exceeds the body's bytes, so this covers it.
fn spend_for(body: &[u8], params: &Params) -> u64 {
    let chat: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let max_tokens =
        chat["max_completion_tokens"].as_u64().or(chat["max_tokens"].as_u64()).unwrap_or(params.max_tokens_default);
    let tokens = u64::try_from(body.len()).unwrap_or(u64::MAX).saturating_add(max_tokens);
    crate::credit::unit::credits_for(tokens, params.tokens_per_credit)
}

struct Sidecar {
    target: Target,
    key: String,
    wallet_path: Option<PathBuf>,
    /// Held from a spend to its change: one credential in flight.
    wallet: tokio::sync::Mutex<WalletState>,
    params: std::sync::Mutex<Option<Params>>,
    idle: std::sync::Mutex<Vec<Box<dyn Stream>>>,
}

struct WalletState {
    wallet: Option<Wallet>,
    /// Whether the wallet file was read (once, at the first paid request).
    loaded: bool,
}

fn target(gateway: &str, ca_file: Option<&Path>) -> anyhow::Result<Target> {
    let (tls, rest, default_port) = if let Some(rest) = gateway.strip_prefix("https://") {
        (true, rest, 443)
    } else if let Some(rest) = gateway.strip_prefix("http://") {
        (false, rest, 80)
    } else {
        bail!("--gateway must be an http:// or https:// URL");
    };
    let host = rest.split('/').next().unwrap_or_default().to_string();
    if host.is_empty() {
        bail!("--gateway has no host");
    }
    let has_port = host.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) && !host.ends_with(']');
    let addr = if has_port { host.clone() } else { format!("{host}:{default_port}") };
    let tls = if tls {
        let config = gatekeeper_net::upstream::tls_client_config(ca_file).map_err(|e| anyhow::anyhow!("{e}"))?;
        let name = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
        let name = name.trim_start_matches('[').trim_end_matches(']').to_string();
        let name = rustls::pki_types::ServerName::try_from(name).context("--gateway host is not a TLS server name")?;
        Some((tokio_rustls::TlsConnector::from(config), name))
    } else {
        None
    };
    Ok(Target { addr, host, tls })
}

/// Runs the sidecar until killed.
pub fn run(args: &ClientArgs) -> anyhow::Result<()> {
    let target = target(args.gateway.trim_end_matches('/').trim_end_matches("/v1"), args.ca_file.as_deref())?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(&args.listen).await.with_context(|| format!("listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        let sidecar = Arc::new(Sidecar {
            target,
            key: args.key.clone(),
            wallet_path: args.wallet.clone(),
            wallet: tokio::sync::Mutex::new(WalletState { wallet: None, loaded: false }),
            params: std::sync::Mutex::new(None),
            idle: std::sync::Mutex::new(Vec::new()),
        });
        println!("gatekeeper client listening on {addr}");
        loop {
            let (conn, _) = listener.accept().await?;
            let sidecar = Arc::clone(&sidecar);
            tokio::spawn(async move {
                let mut conn = conn;
                if let Err(e) = serve(&mut conn, &sidecar).await {
                    tracing::warn!(error = %e, "sidecar request failed");
                    // Best effort: the client may be gone, or the answer half sent.
                    let _ =
                        write_error(&mut conn, 502, "credit_client_error", &format!("gatekeeper client: {e:#}")).await;
                }
            });
        }
    })
}

/// One parsed client request.
struct ClientRequest {
    method: String,
    path: String,
    body: Vec<u8>,
}

async fn read_request(conn: &mut TcpStream) -> anyhow::Result<ClientRequest> {
    let mut buf = Vec::with_capacity(4096);
    let head_len = loop {
        let mut chunk = [0u8; 8192];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            bail!("client closed before its request ended");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > HEAD_BYTES_MAX {
            bail!("request head over {HEAD_BYTES_MAX} bytes");
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(&buf[..head_len])?;
    let method = req.method.unwrap_or("GET").to_string();
    let path = req.path.unwrap_or("/").to_string();
    let len = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
        .unwrap_or(0);
    if len > BODY_BYTES_MAX {
        bail!("request body over {BODY_BYTES_MAX} bytes");
    }
    let mut body = buf[head_len..].to_vec();
    while body.len() < len {
        let mut chunk = vec![0u8; len.saturating_sub(body.len()).min(65536)];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            bail!("client closed before its body ended");
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    Ok(ClientRequest { method, path, body })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn serve(conn: &mut TcpStream, sidecar: &Sidecar) -> anyhow::Result<()> {
    let req = read_request(conn).await?;
    match (req.method.as_str(), req.path.split('?').next().unwrap_or("")) {
        ("POST", "/v1/chat/completions") => {
            // One paid request at a time: the wallet has one credential.
            let mut w = sidecar.wallet.lock().await;
            sidecar.pay_and_forward(&mut w, &req, conn).await
        }
        _ => {
            // Not paid with credits (e.g. /v1/models): passed on with the key, concurrently.
            let auth = format!("Authorization: Bearer {}\r\n", sidecar.key);
            let mut up = sidecar.send(&req.method, &req.path, &auth, &req.body).await?;
            let head = up.head().await?;
            let body = up.whole_body(&head).await?;
            sidecar.release(up, &head);
            write_whole(conn, &head, &body, &[]).await
        }
    }
}

impl Sidecar {
    async fn connect(&self) -> anyhow::Result<Box<dyn Stream>> {
        let tcp =
            TcpStream::connect(&self.target.addr).await.with_context(|| format!("connect {}", self.target.addr))?;
        let _ = tcp.set_nodelay(true);
        match &self.target.tls {
            None => Ok(Box::new(tcp)),
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), tcp).await.context("TLS handshake with the gateway")?;
                Ok(Box::new(tls))
            }
        }
    }

    /// Sends a request on an idle kept-alive connection, or a new one. A reused
    /// connection the gateway closed meanwhile (nothing of the answer came) is replaced
    /// once: the gateway never read the request, so sending it again is the first send.
    async fn send(&self, method: &str, path: &str, extra: &str, body: &[u8]) -> anyhow::Result<Upstream> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n",
            self.target.host,
            body.len()
        );
        let reused = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        if let Some(stream) = reused {
            let mut up = Upstream { stream, buf: Vec::new() };
            if up.write_request(head.as_bytes(), body).await.is_ok() && up.fill().await.is_ok_and(|n| n > 0) {
                return Ok(up);
            }
        }
        let mut up = Upstream { stream: self.connect().await?, buf: Vec::new() };
        up.write_request(head.as_bytes(), body).await?;
        Ok(up)
    }

    /// Keeps the connection for reuse when its answer was read whole and it stays open.
    fn release(&self, up: Upstream, head: &Head) {
        let framed = head.chunked || head.length.is_some();
        let closing = head.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if framed && !closing && up.buf.is_empty() {
            if let Ok(mut idle) = self.idle.lock() {
                if idle.len() < IDLE_CONNECTIONS_MAX {
                    idle.push(up.stream);
                }
            }
        }
    }

    async fn get_json(&self, method: &str, path: &str, extra: &str, body: &[u8]) -> anyhow::Result<serde_json::Value> {
        let mut up = self.send(method, path, extra, body).await?;
        let head = up.head().await?;
        let body = up.whole_body(&head).await?;
        self.release(up, &head);
        if head.status != 200 {
            bail!("{method} {path}: HTTP {}: {}", head.status, String::from_utf8_lossy(&body));
        }
        Ok(serde_json::from_slice(&body)?)
    }

    /// The current epoch's parameters: cached, fetched again once the next epoch starts.
    async fn params(&self) -> anyhow::Result<Params> {
        let cached = self.params.lock().ok().and_then(|p| p.clone());
        if let Some(p) = cached.filter(|p| crate::clock::unix_s() < p.next_epoch_starts_unix_s) {
            return Ok(p);
        }
        let params = self.get_json("GET", "/v1/credits/params", "", b"").await?;
        check_params(&params)?;
        let deployment = params["deployment"].as_str().context("params: deployment")?;
        let domain = Domain::new(deployment).map_err(|e| anyhow::anyhow!("{e}"))?;
        let public = PublicKey::decode(params["public_key"].as_str().context("params: public_key")?)
            .map_err(|e| anyhow::anyhow!("params: {e}"))?;
        let next_epoch_starts_unix_s =
            params["next_epoch_starts_unix_s"].as_u64().context("params: next_epoch_starts_unix_s")?;
        let tokens_per_credit = params["tokens_per_credit"].as_u64().unwrap_or(1).max(1);
        let max_tokens_default = params["max_tokens_default"].as_u64().unwrap_or(4_096);
        let p = Params { domain, public, next_epoch_starts_unix_s, tokens_per_credit, max_tokens_default };
        if let Ok(mut slot) = self.params.lock() {
            *slot = Some(p.clone());
        }
        Ok(p)
    }

    /// A wallet holding a credential of the gateway's current epoch.
    async fn ready_wallet<'w>(&self, st: &'w mut WalletState) -> anyhow::Result<&'w mut Wallet> {
        let Params { domain, public, .. } = self.params().await?;
        if !st.loaded {
            st.loaded = true;
            if let Some(path) = &self.wallet_path {
                if let Ok(bytes) = std::fs::read(path) {
                    match Wallet::from_bytes(domain.clone(), &bytes) {
                        Ok(w) => {
                            let pending = w.pending_spend().is_some() && w.epoch() == public.epoch();
                            st.wallet = Some(w);
                            if pending {
                                self.recover(st).await?;
                            }
                        }
                        // An older build's wallet: its credential is worthless under these
                        // parameters; a new wallet replaces the file below.
                        Err(ZkError::OtherParams { found }) => tracing::warn!(
                            wallet_params = %found,
                            params = gatekeeper_zk::PARAMS_VERSION,
                            "the wallet file holds a credential of other credit parameters, which cannot be spent; \
                             starting a new wallet"
                        ),
                        Err(e) => bail!("wallet file: {e}"),
                    }
                }
            }
        }
        let stale = st.wallet.as_ref().is_none_or(|w| w.epoch() != public.epoch());
        if stale {
            st.wallet = Some(Wallet::new(domain, public));
        }
        let needs_credential = st.wallet.as_ref().is_some_and(|w| w.balance().is_none() && w.pending_spend().is_none());
        if needs_credential {
            let request = match st.wallet.as_mut() {
                Some(w) => w.request_credential(&mut rand::rngs::OsRng).map_err(|e| anyhow::anyhow!("{e}"))?,
                None => bail!("no wallet"),
            };
            self.save(st)?;
            let body = serde_json::json!({ "request": request.encode() }).to_string();
            let auth = format!("Authorization: Bearer {}\r\n", self.key);
            let answer = self.get_json("POST", "/v1/credits/issue", &auth, body.as_bytes()).await?;
            let response = IssuanceResponse::decode(answer["response"].as_str().context("issue: response")?)
                .map_err(|e| anyhow::anyhow!("issue: {e}"))?;
            if let Some(w) = st.wallet.as_mut() {
                w.accept_credential(&response).map_err(|e| anyhow::anyhow!("issue: {e}"))?;
            }
            self.save(st)?;
        }
        st.wallet.as_mut().context("no wallet")
    }

    /// A wallet stopped between a spend and its change: the spend is sent again with a
    /// request no model serves. If the gateway recorded it, the replay refusal carries the
    /// change it got; if not, the request is paid, refused (404) and fully refunded.
    /// Either way the change comes back; a refusal without one (the change was never
    /// kept) loses that credential until the next epoch.
    async fn recover(&self, st: &mut WalletState) -> anyhow::Result<()> {
        let Some(spend) = st.wallet.as_ref().and_then(|w| w.pending_spend()).map(|s| s.encode()) else {
            return Ok(());
        };
        tracing::info!("recovering the change of a spend the wallet sent before it stopped");
        let body =
            br#"{"model":"gatekeeper-credit-recovery","max_tokens":1,"messages":[{"role":"user","content":"."}]}"#;
        let header = format!("X-Gatekeeper-Credit: {spend}\r\n");
        let mut up = self.send("POST", "/v1/chat/completions", &header, body).await?;
        let head = up.head().await?;
        let answer = up.whole_body(&head).await?;
        self.release(up, &head);
        let change = head.header(crate::credit::error::CHANGE_HEADER).map(str::to_string);
        let code = serde_json::from_slice::<serde_json::Value>(&answer)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_string));
        if change.is_none() {
            tracing::warn!(code = ?code, "no change came back for the pending spend; that credential is lost until the next epoch");
        }
        self.take_change(st, change.as_deref(), Some(code.as_deref().unwrap_or("")))
    }

    /// Writes the wallet file atomically: temp file (0600), fsync, rename, fsync the dir.
    fn save(&self, st: &WalletState) -> anyhow::Result<()> {
        let (Some(path), Some(w)) = (&self.wallet_path, &st.wallet) else { return Ok(()) };
        write_atomic(path, &w.to_bytes())
    }

    async fn pay_and_forward(
        &self,
        st: &mut WalletState,
        req: &ClientRequest,
        conn: &mut TcpStream,
    ) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        let wanted = spend_for(&req.body, &self.params().await?);
        let wallet = self.ready_wallet(st).await?;
        let Some(balance) = wallet.balance() else {
            return write_error(conn, 429, "credit_wallet_unavailable", "the wallet has no credential this epoch")
                .await;
        };
        let spend = wallet.spend(wanted.min(balance), &mut rand::rngs::OsRng).map_err(|e| anyhow::anyhow!("{e}"))?;
        self.save(st)?;
        let header = format!("X-Gatekeeper-Credit: {}\r\n", spend.encode());
        let sent = std::time::Instant::now();
        let mut up = self.send("POST", "/v1/chat/completions", &header, &req.body).await?;
        let mut head = up.head().await?;
        if head.chunked && head.status == 200 {
            // A stream: relay each piece, and read the change from its comment line.
            let mut start =
                format!("HTTP/1.1 {} OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n", head.status);
            for (n, v) in head.passed_headers() {
                start.push_str(&format!("{n}: {v}\r\n"));
            }
            start.push_str("\r\n");
            // A client gone mid-stream does not stop the relay: the change must still be read.
            let mut client_ok = conn.write_all(start.as_bytes()).await.is_ok();
            let mut lines = Vec::new();
            let mut change = None;
            while let Some(piece) = up.next_chunk().await? {
                lines.extend_from_slice(&piece);
                while let Some(i) = find(&lines, b"\n") {
                    let line: Vec<u8> = lines.drain(..=i).collect();
                    let line = String::from_utf8_lossy(&line);
                    if let Some(v) = line.trim_end().strip_prefix(crate::credit::error::CHANGE_SSE_PREFIX) {
                        change = Some(v.to_string());
                    }
                }
                if client_ok {
                    client_ok = relay_chunk(conn, &piece).await.is_ok();
                }
            }
            self.release(up, &head);
            // The wallet is settled before the client sees the stream end.
            self.take_change(st, change.as_deref(), None)?;
            if client_ok {
                conn.write_all(b"0\r\n\r\n").await?;
            }
            return Ok(());
        }
        let body = up.whole_body(&head).await?;
        let waited = sent.elapsed();
        self.release(up, &head);
        let change = head.header(crate::credit::error::CHANGE_HEADER).map(str::to_string);
        let code = (head.status >= 400)
            .then(|| serde_json::from_slice::<serde_json::Value>(&body).ok())
            .flatten()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_string));
        if code.as_deref() == Some("credit_epoch_expired") {
            // The epoch turned: the cached parameters are stale.
            if let Ok(mut p) = self.params.lock() {
                *p = None;
            }
        }
        self.take_change(st, change.as_deref(), code.as_deref().or((head.status < 400).then_some("")))?;
        // What the sidecar added (proof, wallet writes, parsing), the gateway's time excluded.
        let own_us = started.elapsed().saturating_sub(waited).as_micros();
        head.headers.push((OVERHEAD_HEADER.into(), own_us.to_string()));
        write_whole(conn, &head, &body, &[crate::credit::error::CHANGE_HEADER]).await
    }

    /// After an answer: the change when there is one. Without one, `refusal` is the
    /// error `code` of a refused request (`None`/empty: an answer whose change was lost):
    /// a replay or a lost change means the credential is spent (start over next epoch);
    /// any other refusal came before the nullifier was recorded, so the spend is taken back.
    fn take_change(&self, st: &mut WalletState, change: Option<&str>, refusal: Option<&str>) -> anyhow::Result<()> {
        let Some(w) = st.wallet.as_mut() else { return Ok(()) };
        match (change, refusal) {
            (Some(text), _) => {
                let change = Change::decode(text).map_err(|e| anyhow::anyhow!("change: {e}"))?;
                w.accept_change(&change).map_err(|e| anyhow::anyhow!("change: {e}"))?;
            }
            (None, None | Some("" | "credit_replayed")) => {
                tracing::warn!("no change came back; the credential is spent");
                st.wallet = None;
            }
            (None, Some(_)) => {
                let _ = w.cancel_spend();
            }
        }
        self.save(st)
    }
}

async fn relay_chunk(conn: &mut TcpStream, piece: &[u8]) -> std::io::Result<()> {
    conn.write_all(format!("{:x}\r\n", piece.len()).as_bytes()).await?;
    conn.write_all(piece).await?;
    conn.write_all(b"\r\n").await
}

/// Writes `bytes` to `path` so a crash leaves the old file or the new one, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let mut f = crate::audit::private::options().write(true).create(true).truncate(true).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// A gateway response being read.
struct Upstream {
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
}

struct Head {
    status: u16,
    headers: Vec<(String, String)>,
    chunked: bool,
    length: Option<usize>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Headers the client sees (hop-by-hop and framing ones are the sidecar's own).
    fn passed_headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers
            .iter()
            .filter(|(n, _)| {
                let n = n.to_ascii_lowercase();
                !matches!(n.as_str(), "transfer-encoding" | "content-length" | "connection" | "keep-alive")
            })
            .map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

impl Upstream {
    async fn write_request(&mut self, head: &[u8], body: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(head).await?;
        self.stream.write_all(body).await?;
        self.stream.flush().await
    }

    async fn fill(&mut self) -> anyhow::Result<usize> {
        let mut chunk = [0u8; 16384];
        let n = self.stream.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        if self.buf.len() > RESPONSE_BYTES_MAX {
            bail!("gateway response over {RESPONSE_BYTES_MAX} bytes");
        }
        Ok(n)
    }

    async fn head(&mut self) -> anyhow::Result<Head> {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.fill().await? == 0 {
                bail!("gateway closed before its response head");
            }
        };
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        resp.parse(&self.buf[..end])?;
        let status = resp.code.unwrap_or(502);
        let headers: Vec<(String, String)> =
            resp.headers.iter().map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned())).collect();
        self.buf.drain(..end);
        let find_h = |name: &str| headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
        let chunked = find_h("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let length = find_h("content-length").and_then(|v| v.trim().parse().ok());
        Ok(Head { status, headers, chunked, length })
    }

    /// The next de-chunked piece of a chunked body; `None` at its end.
    async fn next_chunk(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        let line_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                break i;
            }
            if self.fill().await? == 0 {
                bail!("gateway closed inside a chunked body");
            }
        };
        let size_text = String::from_utf8_lossy(&self.buf[..line_end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
        if size > RESPONSE_BYTES_MAX {
            bail!("chunk over {RESPONSE_BYTES_MAX} bytes");
        }
        let need = line_end + 2 + size + 2;
        while self.buf.len() < need {
            if self.fill().await? == 0 {
                if size == 0 {
                    return Ok(None);
                }
                bail!("gateway closed inside a chunk");
            }
        }
        let piece = self.buf[line_end + 2..line_end + 2 + size].to_vec();
        self.buf.drain(..need);
        Ok(if size == 0 { None } else { Some(piece) })
    }

    async fn whole_body(&mut self, head: &Head) -> anyhow::Result<Vec<u8>> {
        if head.chunked {
            let mut out = Vec::new();
            while let Some(p) = self.next_chunk().await? {
                out.extend_from_slice(&p);
            }
            return Ok(out);
        }
        match head.length {
            Some(len) => {
                while self.buf.len() < len {
                    if self.fill().await? == 0 {
                        bail!("gateway closed inside a body");
                    }
                }
                self.buf.truncate(len);
            }
            None => while self.fill().await? > 0 {},
        }
        Ok(std::mem::take(&mut self.buf))
    }
}

async fn write_whole(conn: &mut TcpStream, head: &Head, body: &[u8], drop: &[&str]) -> anyhow::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        head.status,
        reason(head.status),
        body.len()
    );
    for (n, v) in head.passed_headers().filter(|(n, _)| !drop.iter().any(|d| d.eq_ignore_ascii_case(n))) {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("\r\n");
    conn.write_all(out.as_bytes()).await?;
    conn.write_all(body).await?;
    Ok(())
}

async fn write_error(conn: &mut TcpStream, status: u16, code: &str, message: &str) -> anyhow::Result<()> {
    let body = crate::wire::openai::error_json(message, "rate_limit_error", None, Some(code));
    let head = Head {
        status,
        headers: vec![("Content-Type".into(), "application/json".into())],
        chunked: false,
        length: None,
    };
    write_whole(conn, &head, &body, &[]).await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wallet_files_are_replaced_whole_and_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("wallet");
        write_atomic(&path, b"one").expect("write");
        write_atomic(&path, b"two").expect("rewrite");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        assert!(!dir.path().join("wallet.tmp").exists());
    }

    fn params(tokens_per_credit: u64, max_tokens_default: u64) -> Params {
        let domain = Domain::new("t").expect("domain");
        let issuer = gatekeeper_zk::Issuer::derive(&domain, &gatekeeper_zk::IssuerSeed::from_bytes([1; 32]), 1);
        Params {
            domain,
            public: issuer.public_key(),
            next_epoch_starts_unix_s: 0,
            tokens_per_credit,
            max_tokens_default,
        }
    }

    #[test]
    fn the_spend_covers_the_gateways_charge_in_its_unit() {
        let body = br#"{"model":"m","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}"#;
        let tokens = body.len() as u64 + 1_000;
        assert_eq!(spend_for(body, &params(1, 4_096)), tokens);
        assert_eq!(spend_for(body, &params(1_000, 4_096)), tokens.div_ceil(1_000));
        assert_eq!(spend_for(body, &params(tokens, 4_096)), 1);
        assert_eq!(spend_for(body, &params(tokens - 1, 4_096)), 2);
        // Never below what the gateway charges for the same body, whatever the unit.
        let chat = crate::wire::openai::parse_chat(body).expect("chat");
        for unit in [1, 7, 1_000, 1_000_000] {
            assert!(spend_for(body, &params(unit, 4_096)) >= crate::credit::charge(&chat, 4_096, unit));
        }
        // No max_tokens: the gateway's default, not a guess of it.
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(spend_for(body, &params(1, 9_000)), body.len() as u64 + 9_000);
        let chat = crate::wire::openai::parse_chat(body).expect("chat");
        assert!(spend_for(body, &params(1, 9_000)) >= crate::credit::charge(&chat, 9_000, 1));
    }

    #[test]
    fn a_gateway_of_other_params_is_refused_by_name() {
        let ours = serde_json::json!({
            "params_version": gatekeeper_zk::PARAMS_VERSION,
            "balance_bits": gatekeeper_zk::BALANCE_BITS,
        });
        assert!(check_params(&ours).is_ok());
        let old = serde_json::json!({ "params_version": "2026-11-30", "balance_bits": 32 });
        let msg = check_params(&old).expect_err("old params").to_string();
        assert!(msg.contains("2026-11-30") && msg.contains(gatekeeper_zk::PARAMS_VERSION), "{msg}");
        let bits = serde_json::json!({ "params_version": gatekeeper_zk::PARAMS_VERSION, "balance_bits": 32 });
        assert!(check_params(&bits).is_err());
        assert!(check_params(&serde_json::json!({})).is_err());
    }
}
