//! `/health` over TLS (`status.tls`): the status routes served by `status::serve_health_tls`
//! with the config's status certificate, checked with a real TLS client.

use std::sync::Arc;
use std::time::Duration;

use gorouter::config::Config;
use gorouter::status::{serve_health_tls, Health};
use gorouter::tls::status::status_server_config;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A CA and a server certificate for 127.0.0.1 signed by it: `(ca_der, cert_pem, key_pem)`.
fn pki() -> (rustls::pki_types::CertificateDer<'static>, String, String) {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "status-ca");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca).unwrap();
    (ca.der().clone(), cert.pem(), key.serialize_pem())
}

async fn get(port: u16, ca: &rustls::pki_types::CertificateDer<'static>, path: &str) -> String {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the status listener");
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), tls.read_to_string(&mut out))
        .await
        .expect("answer within 5 s")
        .expect("read");
    out
}

#[tokio::test]
async fn health_is_served_over_tls_with_the_status_certificate() {
    let (ca, cert, key) = pki();
    let config = Config::from_yaml(&format!(
        "status: {{tls: {{port: 9443, certificate: {cert:?}, key: {key:?}}}}}\n"
    ))
    .expect("config with status.tls");
    let status_tls = config.status_tls.as_ref().expect("status.tls is on");
    let tls = status_server_config(&config, status_tls).expect("status TLS config");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let health = Arc::new(Health::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(serve_health_tls(listener, tls, health.clone(), stop_rx));

    let initializing = get(port, &ca, "/health").await;
    assert!(initializing.starts_with("HTTP/1.1 503"), "{initializing}");
    health.set_healthy();
    let healthy = get(port, &ca, "/health").await;
    assert!(healthy.starts_with("HTTP/1.1 200"), "{healthy}");
    assert!(healthy.ends_with("\r\n\r\nok\n"), "{healthy}");
    assert!(
        healthy.contains("Cache-Control: private, max-age=0"),
        "{healthy}"
    );
    let alive = get(port, &ca, "/is-process-alive-do-not-use-for-loadbalancing").await;
    assert!(alive.ends_with("ok\n"), "{alive}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut buf)).await;
    assert!(
        !buf.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );

    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server stops on shutdown")
        .unwrap();
}
