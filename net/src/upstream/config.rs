//! Pool limits and the process-wide TLS client configuration.

use std::{fs::File, io::BufReader, path::Path, sync::Arc};

use super::error::UpstreamError;

/// Limits of one [`Pool`](super::Pool). Every duration is in milliseconds. A zero timeout
/// would fail every request, so zero timeouts and a zero `connections_max` are raised to 1;
/// `pool_idle_timeout_ms: 0` is allowed and disables reuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Budget for TCP connect plus TLS handshake; also the longest time a request waits for a
    /// busy pool to free a connection. Exceeded: [`UpstreamError::ConnectTimeout`] /
    /// [`UpstreamError::PoolExhausted`]. Default 2000.
    pub connect_timeout_ms: u64,
    /// Longest time from the end of the request write to the first byte of the response head
    /// (also bounds the write itself). Exceeded: [`UpstreamError::FirstByteTimeout`]
    /// (or [`UpstreamError::WriteTimeout`]). Default 30000.
    pub first_byte_timeout_ms: u64,
    /// Longest gap between two reads after the first response byte (head continuation and
    /// body, e.g. between SSE events). Exceeded: [`UpstreamError::ReadIdleTimeout`].
    /// Default 60000.
    pub read_idle_timeout_ms: u64,
    /// An idle pooled connection older than this is closed instead of reused (checked on
    /// checkout). Default 30000, below the 60 s+ that common providers keep idle sockets.
    pub pool_idle_timeout_ms: u64,
    /// Most connections (busy + idle) this pool holds. At least 1. Default 256.
    pub connections_max: usize,
    /// Most requests waiting for a connection while all `connections_max` are busy.
    /// Exceeded: [`UpstreamError::PoolExhausted`] at once. Default 4096.
    pub queue_max: usize,
    /// Largest response head (status line + headers) accepted. Exceeded:
    /// [`UpstreamError::Protocol`]. Default 64 KiB.
    pub response_head_bytes_max: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            connect_timeout_ms: 2_000,
            first_byte_timeout_ms: 30_000,
            read_idle_timeout_ms: 60_000,
            pool_idle_timeout_ms: 30_000,
            connections_max: 256,
            queue_max: 4096,
            response_head_bytes_max: 64 * 1024,
        }
    }
}

/// Smallest head limit honoured: a status line and a handful of headers must always fit.
const RESPONSE_HEAD_BYTES_MIN: usize = 1024;

impl PoolConfig {
    /// The same limits with zero values raised to their minimum, so the pool never divides
    /// by, waits on, or bounds by zero.
    pub(crate) fn normalized(mut self) -> Self {
        self.connect_timeout_ms = self.connect_timeout_ms.max(1);
        self.first_byte_timeout_ms = self.first_byte_timeout_ms.max(1);
        self.read_idle_timeout_ms = self.read_idle_timeout_ms.max(1);
        self.connections_max = self.connections_max.max(1);
        self.response_head_bytes_max = self.response_head_bytes_max.max(RESPONSE_HEAD_BYTES_MIN);
        self
    }
}

/// Builds the TLS client configuration shared (read-only) by every shard: the webpki (Mozilla)
/// roots plus, optionally, every certificate in a PEM file (for private or test CAs); ring
/// crypto; TLS 1.2 and 1.3; ALPN `http/1.1` only, since the client speaks nothing else.
pub fn tls_client_config(extra_ca_pem_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, UpstreamError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca_pem_file {
        let file = File::open(path).map_err(|e| UpstreamError::TlsConfig(format!("{}: {e}", path.display())))?;
        let mut added = 0usize;
        for cert in rustls_pemfile::certs(&mut BufReader::new(file)) {
            let cert = cert.map_err(|e| UpstreamError::TlsConfig(format!("{}: {e}", path.display())))?;
            roots.add(cert).map_err(|e| UpstreamError::TlsConfig(format!("{}: {e}", path.display())))?;
            added += 1;
        }
        if added == 0 {
            return Err(UpstreamError::TlsConfig(format!("{}: no PEM certificate found", path.display())));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| UpstreamError::TlsConfig(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
