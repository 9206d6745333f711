//! Test certificates (rcgen, ECDSA P-256) and small TLS servers on 127.0.0.1 for the TLS
//! module's tests.

use std::net::SocketAddr;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::pem::CertKeyPair;

pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("self-sign CA"),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    fn issue(
        &self,
        mut params: CertificateParams,
        cn: &str,
        usage: ExtendedKeyUsagePurpose,
    ) -> (String, String) {
        let mut dn = DistinguishedName::new();
        if !cn.is_empty() {
            dn.push(DnType::CommonName, cn);
        }
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        (cert.pem(), key.serialize_pem())
    }

    /// A server certificate with DNS/IP SANs `names` and CN `names[0]`.
    pub fn server(&self, names: &[&str]) -> (String, String) {
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("SANs");
        self.issue(
            params,
            names.first().copied().unwrap_or(""),
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A server certificate with subject CN `cn` and no SAN at all.
    pub fn server_cn_only(&self, cn: &str) -> (String, String) {
        self.issue(
            CertificateParams::default(),
            cn,
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A server certificate for `names` that expired in 2001.
    pub fn expired_server(&self, names: &[&str]) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("SANs");
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        self.issue(
            params,
            names.first().copied().unwrap_or(""),
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    pub fn client(&self, cn: &str) -> (String, String) {
        self.issue(
            CertificateParams::default(),
            cn,
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    pub fn server_pair(&self, names: &[&str]) -> CertKeyPair {
        let (c, k) = self.server(names);
        CertKeyPair::from_pem("cert", "key", &c, &k).expect("pair")
    }

    pub fn client_pair(&self, cn: &str) -> CertKeyPair {
        let (c, k) = self.client(cn);
        CertKeyPair::from_pem("cert", "key", &c, &k).expect("pair")
    }
}

/// Serves `config` on 127.0.0.1: after the handshake reads a request and answers `200 ok`.
pub async fn tls_server(config: Arc<rustls::ServerConfig>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut buf = [0u8; 1024];
                    if tls.read(&mut buf).await.unwrap_or(0) > 0 {
                        let _ = tls
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await;
                        // close_notify, so the client reads a clean end of stream.
                        let _ = tls.shutdown().await;
                    }
                }
            });
        }
    });
    addr
}

/// A rustls server config presenting `pair`, optionally with a client-cert verifier, for
/// the given versions and (TLS 1.2) cipher suites.
pub fn server_config(
    pair: &CertKeyPair,
    client_ca: Option<&Ca>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    tls12_suites: Option<&[rustls::SupportedCipherSuite]>,
    alpn: &[&[u8]],
) -> Arc<rustls::ServerConfig> {
    let provider = super::provider(tls12_suites);
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .expect("versions");
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.der()).expect("root");
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(pair.chain().to_vec(), pair.private_key())
        .expect("server cert");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A client config that trusts anything and presents `client` if given.
pub fn trusting_client(client: Option<&CertKeyPair>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(routing_api_client::tls::no_verification(provider));
    let mut config = match client {
        Some(pair) => builder
            .with_client_auth_cert(pair.chain().to_vec(), pair.private_key())
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}
