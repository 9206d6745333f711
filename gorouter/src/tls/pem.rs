//! Certificates and private keys from the config's inline PEM text (upstream keeps them inline:
//! BOSH renders the PEM into the YAML). Errors name the config key and use Go's
//! `tls.X509KeyPair` wording where there is one, so they read like upstream's.

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::TlsError;

fn pem_error(key: &str, message: impl Into<String>) -> TlsError {
    TlsError::Pem {
        key: key.to_string(),
        message: message.into(),
    }
}

/// Every `CERTIFICATE` block of `pem`, each checked to be a parseable X.509 certificate. At
/// least one is required. `key` names the config key in errors.
pub fn parse_certs(key: &str, pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(key, format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem_error(
            key,
            "tls: failed to find any PEM data in certificate input (expected -----BEGIN CERTIFICATE-----)",
        ));
    }
    for (i, cert) in certs.iter().enumerate() {
        if let Err(e) = x509_parser::parse_x509_certificate(cert.as_ref()) {
            return Err(pem_error(
                key,
                format!("x509: certificate {i} of the PEM does not parse: {e}"),
            ));
        }
    }
    Ok(certs)
}

/// The private key of `pem`: PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1
/// (`EC PRIVATE KEY`).
pub fn parse_private_key(key: &str, pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    use rustls::pki_types::pem::Error;
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| match e {
        Error::NoItemsFound => pem_error(
            key,
            "tls: failed to find any PEM data in key input (expected a PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block)",
        ),
        other => pem_error(key, format!("invalid PEM private key: {other}")),
    })
}

/// Certificates of an optional CA bundle: empty text is no certificates; text without any
/// certificate in it is an error (Go's `AppendCertsFromPEM` returning false).
pub fn parse_ca_bundle(key: &str, pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    if pem.trim().is_empty() {
        return Ok(Vec::new());
    }
    parse_certs(key, pem)
}

/// A certificate chain (leaf first) and the private key of its leaf, checked to belong
/// together, as Go's `tls.X509KeyPair` checks them.
#[derive(Clone)]
pub struct CertKeyPair {
    certified: Arc<CertifiedKey>,
    /// Kept as DER for client configs, which take the key itself.
    key: Arc<PrivateKeyDer<'static>>,
}

impl fmt::Debug for CertKeyPair {
    /// The key is never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertKeyPair")
            .field("chain_len", &self.certified.cert.len())
            .field("names", &super::server::certificate_names(self.leaf()))
            .finish_non_exhaustive()
    }
}

impl CertKeyPair {
    /// Parses `cert_pem` (config key `cert_key`) and `key_pem` (config key `key_key`).
    pub fn from_pem(
        cert_key: &str,
        key_key: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<Self, TlsError> {
        let chain = parse_certs(cert_key, cert_pem)?;
        let key = parse_private_key(key_key, key_pem)?;
        let provider = rustls::crypto::ring::default_provider();
        let certified = CertifiedKey::from_der(chain, key.clone_key(), &provider).map_err(|e| {
            let message = match e {
                rustls::Error::InconsistentKeys(_) => {
                    "tls: private key does not match public key".to_string()
                }
                other => format!("unusable private key: {other}"),
            };
            pem_error(key_key, message)
        })?;
        Ok(Self {
            certified: Arc::new(certified),
            key: Arc::new(key),
        })
    }

    /// The chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.certified.cert
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        // from_pem refuses an empty chain, so there is always a first certificate.
        &self.certified.cert[0]
    }

    /// A copy of the private key (for `ClientConfig::with_client_auth_cert`).
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }

    /// The chain with its loaded signing key (for server configs).
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.certified.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(name: &str) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    #[test]
    fn reads_a_pair_and_refuses_mismatched_or_missing_parts() {
        let (cert, key) = self_signed("a.example");
        let (_, other_key) = self_signed("b.example");
        let pair = CertKeyPair::from_pem("c", "k", &cert, &key).unwrap();
        assert_eq!(pair.chain().len(), 1);
        let e = CertKeyPair::from_pem(
            "tls_pem[1].cert_chain",
            "tls_pem[1].private_key",
            &cert,
            &other_key,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("tls_pem[1].private_key") && e.contains("does not match"),
            "{e}"
        );
        let e = CertKeyPair::from_pem("tls_pem[0].cert_chain", "k", "not pem", &key)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tls_pem[0].cert_chain") && e.contains("failed to find any PEM data"),
            "{e}"
        );
        let e = CertKeyPair::from_pem("c", "nats.private_key", &cert, "")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("nats.private_key") && e.contains("key input"),
            "{e}"
        );
    }

    #[test]
    fn reads_pkcs1_pkcs8_and_sec1_keys() {
        // The PEM label decides the key format; rustls-pki-types decodes all three.
        let (cert, key) = self_signed("ec.example");
        let pk8 = parse_private_key("k", &key).unwrap();
        assert!(matches!(pk8, PrivateKeyDer::Pkcs8(_)));
        let sec1_pem = "-----BEGIN EC PRIVATE KEY-----
MAA=
-----END EC PRIVATE KEY-----
";
        assert!(matches!(
            parse_private_key("k", sec1_pem),
            Ok(PrivateKeyDer::Sec1(_))
        ));
        let rsa_pem = "-----BEGIN RSA PRIVATE KEY-----\nMAA=\n-----END RSA PRIVATE KEY-----\n";
        assert!(matches!(
            parse_private_key("k", rsa_pem),
            Ok(PrivateKeyDer::Pkcs1(_))
        ));
        let _ = cert;
    }

    #[test]
    fn a_ca_bundle_may_be_empty_but_not_garbage() {
        assert!(parse_ca_bundle("ca_certs", "  \n").unwrap().is_empty());
        let e = parse_ca_bundle("ca_certs[2]", "junk")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ca_certs[2]"), "{e}");
        let bad_der = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let e = parse_ca_bundle("client_ca_certs", bad_der)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("client_ca_certs") && e.contains("does not parse"),
            "{e}"
        );
        let (cert, _) = self_signed("ca.example");
        let two = format!("{cert}{cert}");
        assert_eq!(parse_ca_bundle("ca_certs", &two).unwrap().len(), 2);
    }
}
