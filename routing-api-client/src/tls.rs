//! TLS settings shared by the UAA token fetcher and the Routing API client: which CAs to trust,
//! an optional client certificate (mutual TLS), or no verification at all (`-k`).
//!
//! Everything runs on rustls with the *ring* provider, chosen explicitly so the result does not
//! depend on which rustls provider another crate in the process enabled.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// How to set up TLS for `https` URLs (ignored for `http`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of CA certificates to trust. When set, only these CAs are trusted (as Go's
    /// `tls.Config.RootCAs`) unless [`TlsOptions::system_roots`] is also set.
    pub ca_file: Option<PathBuf>,
    /// Also trust the operating system's CA store. Always used when `ca_file` is `None`.
    pub system_roots: bool,
    /// PEM client certificate chain for mutual TLS (needs `client_key_file` too).
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the client certificate.
    pub client_key_file: Option<PathBuf>,
    /// Accept any server certificate (the `-k` / `skip_ssl_validation` switch). Handshake
    /// signatures are still checked, so the peer must hold the key of the certificate it sent.
    pub skip_verification: bool,
}

impl TlsOptions {
    /// Trust exactly the CAs in `path`.
    pub fn with_ca_file(path: impl Into<PathBuf>) -> Self {
        TlsOptions {
            ca_file: Some(path.into()),
            ..TlsOptions::default()
        }
    }

    /// Mutual TLS: trust the CAs in `ca`, present `cert` / `key`.
    pub fn mutual(
        ca: impl Into<PathBuf>,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        TlsOptions {
            ca_file: Some(ca.into()),
            client_cert_file: Some(cert.into()),
            client_key_file: Some(key.into()),
            ..TlsOptions::default()
        }
    }
}

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("failed to read {path}: {message}")]
    Read { path: String, message: String },
    #[error("no certificates found in {0}")]
    NoCertificates(String),
    #[error("client certificate and key must be given together")]
    IncompleteClientIdentity,
    #[error("invalid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_err = |e: &dyn std::fmt::Display| TlsError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_err(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_err(&e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificates(path.display().to_string()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Builds a rustls client configuration from `options` (ALPN is left to the connector).
pub fn client_config(options: &TlsOptions) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = if options.skip_verification {
        builder
            .dangerous()
            .with_custom_certificate_verifier(no_verification(provider))
    } else {
        let mut roots = RootCertStore::empty();
        if let Some(ca) = &options.ca_file {
            for cert in read_certs(ca)? {
                roots.add(cert)?;
            }
        }
        if options.ca_file.is_none() || options.system_roots {
            // Unreadable entries in the system store are skipped, as Go does.
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
        builder.with_root_certificates(roots)
    };
    let config = match (&options.client_cert_file, &options.client_key_file) {
        (Some(cert), Some(key)) => {
            builder.with_client_auth_cert(read_certs(cert)?, read_key(key)?)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(TlsError::IncompleteClientIdentity),
    };
    Ok(config)
}

/// The `skip_ssl_validation` verifier: accepts any certificate chain but still verifies
/// handshake signatures with `provider`'s algorithms, so the peer must hold the key of the
/// certificate it sent. Shared with the routing API's UAA client.
pub fn no_verification(provider: Arc<CryptoProvider>) -> Arc<dyn ServerCertVerifier> {
    Arc::new(NoVerification(provider))
}

#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    #[test]
    fn builds_configs() {
        client_config(&TlsOptions::default()).unwrap();
        client_config(&TlsOptions::with_ca_file(fixture("ca.pem"))).unwrap();
        client_config(&TlsOptions::mutual(
            fixture("ca.pem"),
            fixture("client.pem"),
            fixture("client.key"),
        ))
        .unwrap();
        client_config(&TlsOptions {
            skip_verification: true,
            ..TlsOptions::default()
        })
        .unwrap();
    }

    #[test]
    fn reports_bad_files() {
        let err = client_config(&TlsOptions::with_ca_file(fixture("missing.pem"))).unwrap_err();
        assert!(matches!(err, TlsError::Read { .. }), "{err}");
        let err = client_config(&TlsOptions::with_ca_file(fixture("README.md"))).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificates(_)), "{err}");
        let err = client_config(&TlsOptions {
            client_cert_file: Some(fixture("client.pem")),
            ..TlsOptions::default()
        })
        .unwrap_err();
        assert!(matches!(err, TlsError::IncompleteClientIdentity), "{err}");
    }
}
