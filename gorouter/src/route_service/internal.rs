//! The internal route-service server's credentials (A.10 hairpinning). A route service that is
//! itself a route in this router's table is reached through a listener on
//! 127.0.0.1:`route_services_internal_server_port` serving the same proxy, instead of a round
//! trip through the load balancer. As upstream does, the listener speaks mutual TLS with a CA
//! made at start and known only to this process, so nothing else on the machine can send
//! requests through it.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Why the internal server's credentials could not be made.
#[derive(Debug, thiserror::Error)]
pub enum InternalTlsError {
    #[error("generating the internal route-service certificates: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("building the internal route-service TLS config: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("building the internal route-service client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The server and client sides of the internal listener's mutual TLS.
pub struct InternalTls {
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
}

impl InternalTls {
    /// A fresh CA (P-256), a server certificate for 127.0.0.1 and a client certificate.
    pub fn generate() -> Result<Self, InternalTlsError> {
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = organization();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let (server_chain, server_key) = leaf(&ca, ExtendedKeyUsagePurpose::ServerAuth)?;
        let (client_chain, client_key) = leaf(&ca, ExtendedKeyUsagePurpose::ClientAuth)?;

        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone())?;
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());

        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build()?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(server_chain, server_key)?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(client_chain, client_key)?;
        Ok(Self {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}

fn organization() -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Route Services");
    dn
}

type Leaf = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn leaf(
    ca: &CertifiedIssuer<'static, KeyPair>,
    usage: ExtendedKeyUsagePurpose,
) -> Result<Leaf, rcgen::Error> {
    let mut params = CertificateParams::default();
    params.distinguished_name = organization();
    params.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, ca)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((vec![cert.der().clone()], key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn only_a_client_with_the_internal_certificate_gets_through() {
        let tls = InternalTls::generate().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.server.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut s) = acceptor.accept(tcp).await {
                        let _ = s.write_all(b"ok").await;
                        let _ = s.shutdown().await;
                    }
                });
            }
        });
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());

        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(tls.client.clone());
        let mut s = connector.connect(name.clone(), tcp).await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ok");

        // A client that accepts the server but presents no certificate is refused.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let anonymous = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(routing_api_client::tls::no_verification(provider))
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(anonymous));
        let refused = match connector.connect(name, tcp).await {
            Err(_) => true,
            Ok(mut s) => s.read_to_end(&mut Vec::new()).await.is_err(),
        };
        assert!(
            refused,
            "a client without the internal certificate got through"
        );
    }
}
