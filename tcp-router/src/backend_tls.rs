//! TLS from the router to backends (`backend_tls.enabled` and a route with a positive
//! `backend_tls_port`), as upstream's generated `server … ssl verify required verifyhost <instance_id>
//! ca-file <ca> [crt <client cert+key>]` line does: the server certificate must chain to
//! `backend_tls.ca_cert_path` and be valid for the name `instance_id`; the client certificate of
//! `backend_tls.client_cert_and_key_path` (one PEM file holding the chain and the key) is
//! presented when configured. Like HAProxy without an `sni` keyword, no SNI is sent.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Why the backend TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BackendTlsError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("no certificate found in {0}")]
    NoCertificates(String),
    #[error("no private key found in {0}")]
    NoKey(String),
    #[error("invalid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A certificate chain and its private key.
pub type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn read_err(path: &Path, e: impl std::fmt::Display) -> BackendTlsError {
    BackendTlsError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, BackendTlsError> {
    let pem = std::fs::read(path).map_err(|e| read_err(path, e))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_err(path, e))?;
    if certs.is_empty() {
        return Err(BackendTlsError::NoCertificates(path.display().to_string()));
    }
    Ok(certs)
}

/// Reads a PEM file holding a certificate chain and its private key (HAProxy's `crt` format).
pub fn read_cert_and_key(path: &Path) -> Result<Identity, BackendTlsError> {
    let certs = read_certs(path)?;
    let pem = std::fs::read(path).map_err(|e| read_err(path, e))?;
    let key = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|_| BackendTlsError::NoKey(path.display().to_string()))?;
    Ok((certs, key))
}

/// The rustls client configuration: trusts exactly the CAs in `ca_file`, presents `identity`.
pub fn client_config(
    ca_file: &Path,
    identity: Option<Identity>,
) -> Result<ClientConfig, BackendTlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(ca_file)? {
        roots.add(cert)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((certs, key)) => builder.with_client_auth_cert(certs, key)?,
        None => builder.with_no_client_auth(),
    };
    config.enable_sni = false;
    Ok(config)
}

/// The name a backend's certificate must be valid for: its `instance_id`.
pub fn server_name(instance_id: &str) -> Option<ServerName<'static>> {
    if instance_id.is_empty() {
        return None;
    }
    ServerName::try_from(instance_id.to_string()).ok()
}

/// Why a TLS connection to a backend failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake timed out after {0:?}")]
    Timeout(Duration),
    #[error("TLS handshake failed: {0}")]
    Failed(#[from] std::io::Error),
}

/// Runs the TLS handshake on a connected `tcp` stream, verifying `name`.
pub async fn handshake(
    config: &Arc<ClientConfig>,
    name: ServerName<'static>,
    tcp: TcpStream,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>, HandshakeError> {
    let connector = TlsConnector::from(config.clone());
    match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
        Ok(r) => r.map_err(HandshakeError::Failed),
        Err(_) => Err(HandshakeError::Timeout(timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_are_server_names() {
        assert!(server_name("a1b2c3d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d").is_some());
        assert!(server_name("").is_none());
        assert!(server_name("not a name").is_none());
    }

    #[test]
    fn reports_missing_files() {
        let e = client_config(Path::new("/nonexistent/ca.pem"), None).unwrap_err();
        assert!(matches!(e, BackendTlsError::Read { .. }), "{e}");
        let e = read_cert_and_key(Path::new("/nonexistent/crt.pem")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/crt.pem"), "{e}");
    }
}
