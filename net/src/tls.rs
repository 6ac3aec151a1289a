//! TLS termination on the listener: loading the certificate chain and key.

use std::path::Path;
use std::sync::Arc;

use crate::error::StartError;

/// Builds a rustls server configuration from PEM files, offering HTTP/1.1 by ALPN.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<rustls::ServerConfig>, StartError> {
    let tls_err =
        |what: &str, path: &Path, e: &dyn std::fmt::Display| StartError::Tls(format!("{what} {}: {e}", path.display()));
    let cert_pem = std::fs::read(cert_file).map_err(|e| tls_err("cannot read", cert_file, &e))?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err("bad certificate in", cert_file, &e))?;
    if certs.is_empty() {
        return Err(tls_err("no certificate in", cert_file, &"empty"));
    }
    let key_pem = std::fs::read(key_file).map_err(|e| tls_err("cannot read", key_file, &e))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| tls_err("bad key in", key_file, &e))?
        .ok_or_else(|| tls_err("no private key in", key_file, &"empty"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| StartError::Tls(format!("certificate and key do not match: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
