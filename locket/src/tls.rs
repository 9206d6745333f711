//! PEM loading for the server and the client, with errors that name the file, and the
//! process-wide rustls crypto provider (ring).

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which file (e.g. `ca_file`).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file holds no usable PEM certificate.
    #[error("{what} {path} contains no PEM certificate")]
    NoCertificate {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
    },
    /// The file holds no usable PEM private key.
    #[error("{what} {path} contains no PEM private key")]
    NoKey {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
    },
    /// The material is malformed or inconsistent.
    #[error("{what} {path}: {reason}")]
    Invalid {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Building the TLS configuration failed.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Installs rustls' ring provider as the process default (no-op if one is installed already),
/// so rustls never has to guess when several providers are compiled in.
pub fn install_default_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a PEM file holding one or more certificates; returns its bytes after checking they
/// parse.
pub fn read_certificates(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    let pem = read(path, what)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Invalid {
            what,
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(pem)
}

/// Reads a CA bundle and checks every certificate is usable as a trust anchor.
pub fn read_ca_bundle(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    let pem = read_certificates(path, what)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| TlsError::Invalid {
            what,
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        roots.add(cert).map_err(|e| TlsError::Invalid {
            what,
            path: path.to_path_buf(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(pem)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1); returns the file's bytes.
pub fn read_private_key(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    let pem = read(path, what)?;
    match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(_) => Ok(pem),
        Err(rustls_pki_types::pem::Error::NoItemsFound) => Err(TlsError::NoKey {
            what,
            path: path.to_path_buf(),
        }),
        Err(e) => Err(TlsError::Invalid {
            what,
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}
