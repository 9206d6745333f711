//! TLS for the mutual TLS API port: the server certificate and key and the client CA from the
//! `api.mtls_*` files, loaded into an acceptor that requires and verifies client certificates.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;

/// Problems setting up TLS from the configured files.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{what} {path} holds no usable PEM {expected}")]
    Empty {
        what: &'static str,
        path: String,
        expected: &'static str,
    },
    #[error("TLS configuration rejected: {0}")]
    Rustls(String),
}

fn read_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, TlsSetupError> {
    use rustls_pki_types::pem::PemObject;
    let bytes = std::fs::read(path).map_err(|source| TlsSetupError::Read {
        what,
        path: path.display().to_string(),
        source,
    })?;
    let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(&bytes)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsSetupError::Empty {
            what,
            path: path.display().to_string(),
            expected: "certificate",
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<rustls_pki_types::PrivateKeyDer<'static>, TlsSetupError> {
    use rustls_pki_types::pem::PemObject;
    let bytes = std::fs::read(path).map_err(|source| TlsSetupError::Read {
        what: "private key",
        path: path.display().to_string(),
        source,
    })?;
    rustls_pki_types::PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| TlsSetupError::Empty {
        what: "private key",
        path: path.display().to_string(),
        expected: "private key",
    })
}

/// A TLS acceptor that requires client certificates signed by `client_ca`.
pub fn mtls_acceptor(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
) -> Result<TlsAcceptor, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs("client CA file", client_ca)? {
        roots
            .add(c)
            .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Rustls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(read_certs("server certificate", cert)?, read_key(key)?)
        .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
