//! The mutual TLS acceptor of a metrics endpoint: the server certificate and key, and the CA
//! every scraper's client certificate must chain to (as upstream's metrics registry requires).

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

/// A metrics endpoint's TLS files that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("prometheus: cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("prometheus: {what} {path} holds no PEM {expected}")]
    NoPem {
        what: &'static str,
        path: String,
        expected: &'static str,
    },
    #[error("prometheus: TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("prometheus: client CA rejected: {0}")]
    ClientCa(#[from] rustls::server::VerifierBuilderError),
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.display().to_string(),
        source,
    })
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoPem {
            what,
            path: path.display().to_string(),
            expected: "certificate",
        });
    }
    Ok(certs)
}

/// An acceptor that requires a client certificate signed by `files.client_ca`.
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in certificates("CA file (ca_path)", &files.client_ca)? {
        roots.add(ca)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()?;
    let key_pem = read("private key (key_path)", &files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoPem {
        what: "private key (key_path)",
        path: files.key.display().to_string(),
        expected: "private key",
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certificates("certificate (cert_path)", &files.cert)?, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
