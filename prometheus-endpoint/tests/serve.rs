//! The `/metrics` endpoint as a scraper sees it: plain HTTP on loopback, and mutual TLS that
//! turns away clients without a certificate from the configured CA.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use prometheus_client::metrics::counter::Counter;
use prometheus_endpoint::config::TlsFiles;
use prometheus_endpoint::{request, scrape, Endpoint, MetricsServer, Registry, ServeError};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn registry_with_counter(value: u64) -> Arc<Registry> {
    let mut registry = Registry::default();
    let counter = Counter::<u64>::default();
    counter.inc_by(value);
    registry.register("scrapes_seen", "A counter the test sets", counter);
    Arc::new(registry)
}

async fn start(endpoint: Endpoint, registry: Arc<Registry>) -> SocketAddr {
    let server = MetricsServer::bind(&endpoint).await.expect("bind");
    let addr = server.local_addr().expect("addr");
    tokio::spawn(server.serve(registry, std::future::pending()));
    addr
}

fn plain() -> Endpoint {
    Endpoint {
        addr: "127.0.0.1:0".parse().unwrap(),
        tls: None,
    }
}

const TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn plain_scrape_renders_the_registry_in_openmetrics_text() {
    let addr = start(plain(), registry_with_counter(7)).await;
    let response = scrape(addr, TIMEOUT).await.expect("scrape");
    assert_eq!(response.status, 200, "{response}");
    assert_eq!(
        response.content_type.as_deref(),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{response}"
    );
    assert!(
        response.body.contains("# TYPE scrapes_seen counter\n"),
        "{response}"
    );
    assert!(
        response.body.contains("\nscrapes_seen_total 7\n"),
        "{response}"
    );
    assert!(response.body.ends_with("# EOF\n"), "{response}");
}

#[tokio::test]
async fn other_paths_are_not_found() {
    let addr = start(plain(), registry_with_counter(1)).await;
    let response = request(addr, &Method::GET, "/varz", TIMEOUT)
        .await
        .expect("request");
    assert_eq!(response.status, 404, "{response}");
}

#[tokio::test]
async fn other_methods_are_not_allowed() {
    let addr = start(plain(), registry_with_counter(1)).await;
    let response = request(addr, &Method::POST, "/metrics", TIMEOUT)
        .await
        .expect("request");
    assert_eq!(response.status, 405, "{response}");
    assert_eq!(response.header("allow"), Some("GET, HEAD"), "{response}");
}

#[tokio::test]
async fn a_port_in_use_is_a_bind_error_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = MetricsServer::bind(&Endpoint { addr, tls: None })
        .await
        .err()
        .expect("bind must fail");
    assert!(matches!(err, ServeError::Bind { .. }), "{err:?}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

struct Pki {
    _dir: tempfile::TempDir,
    files: TlsFiles,
    ca_pem: String,
    client: (String, String),
    stranger: (String, String),
}

fn ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    (params, key, pem)
}

fn leaf(
    issuer: &Issuer<'_, &KeyPair>,
    name: &str,
    eku: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![eku];
    let key = KeyPair::generate().unwrap();
    (
        params.signed_by(&key, issuer).unwrap().pem(),
        key.serialize_pem(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let (ca_params, ca_key, ca_pem) = ca("metrics CA");
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let (server_cert, server_key) = leaf(&issuer, "localhost", ExtendedKeyUsagePurpose::ServerAuth);
    let client = leaf(&issuer, "prometheus", ExtendedKeyUsagePurpose::ClientAuth);
    let (other_params, other_key, _) = ca("other CA");
    let stranger = leaf(
        &Issuer::from_params(&other_params, &other_key),
        "stranger",
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let files = TlsFiles {
        cert: write(dir.path(), "server.pem", &server_cert),
        key: write(dir.path(), "server.key", &server_key),
        client_ca: write(dir.path(), "ca.pem", &ca_pem),
    };
    Pki {
        _dir: dir,
        files,
        ca_pem,
        client,
        stranger,
    }
}

async fn tls_get(
    addr: SocketAddr,
    ca_pem: &str,
    client: Option<&(String, String)>,
) -> std::io::Result<String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let mut stream = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

fn mutual_tls(files: &TlsFiles) -> Endpoint {
    Endpoint {
        addr: "127.0.0.1:0".parse().unwrap(),
        tls: Some(files.clone()),
    }
}

#[tokio::test]
async fn mutual_tls_serves_a_client_certificate_from_the_ca() {
    let pki = pki();
    let addr = start(mutual_tls(&pki.files), registry_with_counter(3)).await;
    let response = tls_get(addr, &pki.ca_pem, Some(&pki.client))
        .await
        .expect("scrape");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.contains("\nscrapes_seen_total 3\n"), "{response}");
}

#[tokio::test]
async fn mutual_tls_turns_away_a_client_without_a_certificate() {
    let pki = pki();
    let addr = start(mutual_tls(&pki.files), registry_with_counter(3)).await;
    let result = tls_get(addr, &pki.ca_pem, None).await;
    assert!(result.is_err(), "scraped without a certificate: {result:?}");
}

#[tokio::test]
async fn mutual_tls_turns_away_a_certificate_from_another_ca() {
    let pki = pki();
    let addr = start(mutual_tls(&pki.files), registry_with_counter(3)).await;
    let result = tls_get(addr, &pki.ca_pem, Some(&pki.stranger)).await;
    assert!(
        result.is_err(),
        "scraped with a stranger's certificate: {result:?}"
    );
}

#[tokio::test]
async fn an_unreadable_certificate_file_is_an_error_naming_key_and_path() {
    let pki = pki();
    let mut files = pki.files.clone();
    files.cert = pki._dir.path().join("missing.pem");
    let err = MetricsServer::bind(&mutual_tls(&files))
        .await
        .err()
        .expect("must fail");
    let text = err.to_string();
    assert!(
        text.contains("cert_path") && text.contains("missing.pem"),
        "{text}"
    );
}
