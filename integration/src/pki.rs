//! A throw-away test PKI: a self-signed CA that issues server and client certificates, all
//! generated in memory with `rcgen` (ECDSA P-256 keys) and written only to temporary directories.
//!
//! ```no_run
//! use integration::pki::TestCa;
//! use integration::TempDir;
//!
//! let ca = TestCa::new("test-ca");
//! let (server_cert, server_key) = ca.issue_server(&["127.0.0.1", "localhost"]);
//! let (client_cert, client_key) = ca.issue_client("routing-api-client");
//! let dir = TempDir::new("pki");
//! let files = ca.write_server(dir.path(), &["127.0.0.1"]);
//! assert!(files.cert.exists() && files.ca.exists());
//! # let _ = (server_cert, server_key, client_cert, client_key);
//! ```
//!
//! Certificates are valid from 1975 to 4096 (rcgen's defaults), so no test ever trips over a
//! clock. Helpers panic with a message naming what failed, like the rest of this crate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A self-signed certificate authority for one test.
pub struct TestCa {
    name: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// Paths of PEM files written by [`TestCa::write_server`] / [`TestCa::write_client`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemFiles {
    /// The CA certificate (`ca.pem`).
    pub ca: PathBuf,
    /// The leaf certificate (`server.pem` or `client.pem`).
    pub cert: PathBuf,
    /// The leaf's private key, PKCS#8 (`server.key` or `client.key`).
    pub key: PathBuf,
}

impl TestCa {
    /// Generates a CA whose subject common name is `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationName, "routing-release tests");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("test CA: generate key pair");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("test CA: self-sign");
        Self {
            name: name.to_string(),
            issuer,
        }
    }

    /// The CA's common name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A rustls root store trusting only this CA.
    pub fn root_store(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.cert_der())
            .expect("test CA: add CA certificate to a root store");
        roots
    }

    /// Issues a server certificate for `names` (DNS names or IP addresses, which become
    /// IP-address SANs); the first name is also the subject common name. Returns
    /// `(cert_pem, key_pem)`, the key in PKCS#8.
    pub fn issue_server(&self, names: &[&str]) -> (String, String) {
        let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = CertificateParams::new(sans).expect("test CA: server SANs");
        let common_name = names.first().copied().unwrap_or("server");
        self.issue_leaf(
            params,
            common_name,
            ExtendedKeyUsagePurpose::ServerAuth,
            "server",
        )
    }

    /// Issues a client certificate with subject common name `common_name`. Returns
    /// `(cert_pem, key_pem)`, the key in PKCS#8.
    pub fn issue_client(&self, common_name: &str) -> (String, String) {
        let params = CertificateParams::default();
        self.issue_leaf(
            params,
            common_name,
            ExtendedKeyUsagePurpose::ClientAuth,
            "client",
        )
    }

    /// Issues `params` as a leaf certificate: subject common name `common_name`, key usages
    /// digital signature and key encipherment, extended key usage `usage`.
    fn issue_leaf(
        &self,
        mut params: CertificateParams,
        common_name: &str,
        usage: ExtendedKeyUsagePurpose,
        what: &str,
    ) -> (String, String) {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![usage];
        self.issue(params, what)
    }

    fn issue(&self, params: CertificateParams, what: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("test CA: {what} key: {e}"));
        let cert = params
            .signed_by(&key, &self.issuer)
            .unwrap_or_else(|e| panic!("test CA {}: sign {what} certificate: {e}", self.name));
        (cert.pem(), key.serialize_pem())
    }

    /// Writes the CA certificate to `dir/ca.pem` and returns its path.
    pub fn write_ca(&self, dir: &Path) -> PathBuf {
        write(dir, "ca.pem", &self.cert_pem())
    }

    /// Issues a server certificate for `names` and writes `ca.pem`, `server.pem` and
    /// `server.key` into `dir`.
    pub fn write_server(&self, dir: &Path, names: &[&str]) -> PemFiles {
        let (cert, key) = self.issue_server(names);
        PemFiles {
            ca: self.write_ca(dir),
            cert: write(dir, "server.pem", &cert),
            key: write(dir, "server.key", &key),
        }
    }

    /// Issues a client certificate for `common_name` and writes `ca.pem`, `client.pem` and
    /// `client.key` into `dir`.
    pub fn write_client(&self, dir: &Path, common_name: &str) -> PemFiles {
        let (cert, key) = self.issue_client(common_name);
        PemFiles {
            ca: self.write_ca(dir),
            cert: write(dir, "client.pem", &cert),
            key: write(dir, "client.key", &key),
        }
    }

    /// A rustls server configuration (ring provider) presenting a fresh certificate for
    /// `names`, not asking for client certificates. ALPN offers `http/1.1`.
    pub fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let (cert, key) = self.issue_server(names);
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("rustls: default protocol versions")
        .with_no_client_auth()
        .with_single_cert(parse_certs(&cert), parse_key(&key))
        .expect("rustls: server certificate and key");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// Parses every `CERTIFICATE` block of `pem`; panics if there is none.
pub fn parse_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("PEM certificates");
    assert!(!certs.is_empty(), "no CERTIFICATE block in PEM");
    certs
}

/// Parses the first private key (PKCS#8, PKCS#1 or SEC1) of `pem`.
pub fn parse_key(pem: &str) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).expect("PEM private key")
}

/// `text` (e.g. PEM) as a YAML double-quoted scalar, for putting inline PEM into a YAML config
/// (`routing_api.ca_certs`, `nats.cert_chain`, `tls_pem[].private_key`, ...). JSON strings are
/// valid YAML double-quoted scalars.
pub fn yaml_quoted(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.to_string_lossy()));
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;

    #[test]
    fn issues_certificates_that_chain_to_the_ca() {
        let ca = TestCa::new("unit-ca");
        let (cert, key) = ca.issue_server(&["127.0.0.1", "localhost"]);
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(key.contains("PRIVATE KEY"));
        let certs = parse_certs(&cert);
        assert_eq!(certs.len(), 1);

        // The server certificate verifies against a root store holding only the CA.
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(ca.root_store()),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .expect("verifier");
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("ip name");
        verifier
            .verify_server_cert(
                &certs[0],
                &[],
                &name,
                &[],
                rustls::pki_types::UnixTime::now(),
            )
            .expect("server cert chains to the CA");

        let other = TestCa::new("other-ca");
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(other.root_store()),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .expect("verifier");
        assert!(verifier
            .verify_server_cert(
                &certs[0],
                &[],
                &name,
                &[],
                rustls::pki_types::UnixTime::now()
            )
            .is_err());
    }

    #[test]
    fn yaml_quoted_pem_reads_back_unchanged() {
        let pem = TestCa::new("yaml-ca").cert_pem();
        let doc: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&format!("pem: {}", yaml_quoted(&pem))).expect("valid YAML");
        assert_eq!(doc["pem"].as_str(), Some(pem.as_str()));
    }

    #[test]
    fn writes_pem_files() {
        let ca = TestCa::new("files-ca");
        let dir = crate::TempDir::new("pki-test");
        let server = ca.write_server(dir.path(), &["localhost"]);
        let client = ca.write_client(dir.path(), "client-1");
        for p in [
            &server.ca,
            &server.cert,
            &server.key,
            &client.cert,
            &client.key,
        ] {
            assert!(p.exists(), "{} written", p.display());
        }
        assert_eq!(server.ca, client.ca);
        let _ = parse_key(&std::fs::read_to_string(&client.key).expect("read key"));
    }
}
