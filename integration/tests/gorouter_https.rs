//! The HTTPS front end (A.9, A.11, A.12) against the real binary: client certificates under
//! each `client_cert_validation` mode and `only_trust_client_ca_certs`, certificate choice by
//! SNI, the `X-Forwarded-Client-Cert` modes on both listeners, `X-Forwarded-Proto` over TLS,
//! certificates reloaded on SIGHUP, `/health` over TLS (`status.tls`), TLS versions and
//! `cipher_suites`, and websockets through the TLS listener.
//!
//! HTTP/1.1 vs h2 by ALPN, the PROXY header before TLS and the plain `X-Forwarded-Proto: https`
//! are in `gorouter_listener_tls.rs`.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use integration::http::{build_request, find};
use integration::pki::{parse_certs, parse_key, yaml_quoted, TestCa};
use integration::{
    eventually, free_port, route, EchoBackend, EchoedRequest, Gorouter, NatsServer, TestEnv,
};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::{SignatureScheme, SupportedCipherSuite};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Every handshake, request and read in this file gets this long.
const TIMEOUT: Duration = Duration::from_secs(5);

const XFCC: &str = "X-Forwarded-Client-Cert";

fn ring() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

// ---------------------------------------------------------------------------------------------
// The client side
// ---------------------------------------------------------------------------------------------

/// Presents `key` (if any) when the server asks, and records that it asked.
#[derive(Debug)]
struct RecordingClientCert {
    key: Option<Arc<CertifiedKey>>,
    asked: Arc<AtomicBool>,
}

impl ResolvesClientCert for RecordingClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.asked.store(true, Ordering::SeqCst);
        self.key.clone()
    }

    fn has_certs(&self) -> bool {
        self.key.is_some()
    }
}

/// How a test client speaks TLS.
#[derive(Clone, Default)]
struct Client {
    /// Verify the server against this CA; `None` accepts any certificate.
    trust: Option<Arc<rustls::RootCertStore>>,
    /// Client certificate and key (PEM).
    cert: Option<(String, String)>,
    /// Only this protocol version (default: TLS 1.2 and 1.3).
    version: Option<&'static rustls::SupportedProtocolVersion>,
    /// Only these cipher suites (default: ring's).
    suites: Option<Vec<SupportedCipherSuite>>,
    /// ALPN (default `http/1.1`).
    alpn: Option<Vec<Vec<u8>>>,
}

impl Client {
    fn trusting(ca: &TestCa) -> Self {
        Self {
            trust: Some(Arc::new(ca.root_store())),
            ..Self::default()
        }
    }

    fn with_cert(mut self, cert: &(String, String)) -> Self {
        self.cert = Some(cert.clone());
        self
    }

    fn only(mut self, version: &'static rustls::SupportedProtocolVersion) -> Self {
        self.version = Some(version);
        self
    }

    fn suites(mut self, suites: &[SupportedCipherSuite]) -> Self {
        self.suites = Some(suites.to_vec());
        self
    }

    /// The rustls config, and a flag that turns true when the server asks for a certificate.
    fn config(&self) -> (Arc<rustls::ClientConfig>, Arc<AtomicBool>) {
        let mut provider = ring();
        if let Some(suites) = &self.suites {
            provider.cipher_suites = suites.clone();
        }
        let versions: Vec<&'static rustls::SupportedProtocolVersion> = match self.version {
            Some(v) => vec![v],
            None => rustls::DEFAULT_VERSIONS.to_vec(),
        };
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&versions)
            .expect("client protocol versions");
        let builder = match &self.trust {
            Some(roots) => builder.with_root_certificates(roots.clone()),
            None => builder.dangerous().with_custom_certificate_verifier(
                routing_api_client::tls::no_verification(Arc::new(ring())),
            ),
        };
        let key = self.cert.as_ref().map(|(cert, key)| {
            let signer = rustls::crypto::ring::sign::any_supported_type(&parse_key(key))
                .expect("client key usable for signing");
            Arc::new(CertifiedKey::new(parse_certs(cert), signer))
        });
        let asked = Arc::new(AtomicBool::new(false));
        let mut config = builder.with_client_cert_resolver(Arc::new(RecordingClientCert {
            key,
            asked: asked.clone(),
        }));
        config.alpn_protocols = self
            .alpn
            .clone()
            .unwrap_or_else(|| vec![b"http/1.1".to_vec()]);
        (Arc::new(config), asked)
    }
}

/// `name` as the client's server name: an IP address sends no SNI, anything else does.
fn server_name(name: &str) -> ServerName<'static> {
    match name.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(name.to_string()).expect("DNS name"),
    }
}

/// A TLS handshake with `addr`, naming `name`.
async fn handshake(
    config: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    name: &str,
) -> Result<TlsStream<TcpStream>, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    match tokio::time::timeout(
        TIMEOUT,
        tokio_rustls::TlsConnector::from(config).connect(server_name(name), tcp),
    )
    .await
    {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => Err(format!("handshake: {e}")),
        Err(_) => Err(format!("handshake: no answer within {TIMEOUT:?}")),
    }
}

/// The leaf certificate the server presented on `tls`.
fn peer_leaf(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("server presented a certificate")
        .clone()
}

/// What came back for one request on a fresh TLS connection.
struct Exchange {
    /// The response bytes (head and body).
    response: Vec<u8>,
    /// Whether the server asked for a client certificate.
    asked_for_cert: bool,
}

impl Exchange {
    fn status_line(&self) -> String {
        let text = String::from_utf8_lossy(&self.response);
        text.lines().next().unwrap_or_default().to_string()
    }

    /// The echo backend's view of the request (panics unless the answer is a 200 from it).
    fn echoed(&self) -> EchoedRequest {
        assert!(
            self.response.starts_with(b"HTTP/1.1 200 "),
            "{}",
            String::from_utf8_lossy(&self.response)
        );
        let end = find(&self.response, b"\r\n\r\n").expect("response head");
        EchoedRequest::parse(&self.response[end + 4..])
    }
}

/// Handshake, send `request` (which should say `Connection: close`) and read to the end. `Err`
/// says why there was no HTTP response: the handshake failed, or the connection failed or
/// closed before any response byte (a TLS 1.3 server refusing a client certificate says so
/// only after the client has finished its handshake).
async fn exchange(
    client: &Client,
    addr: SocketAddr,
    name: &str,
    request: &[u8],
) -> Result<Exchange, String> {
    let (config, asked) = client.config();
    let mut tls = handshake(config, addr, name).await?;
    tls.write_all(request)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    let read = tokio::time::timeout(TIMEOUT, tls.read_to_end(&mut out)).await;
    if out.starts_with(b"HTTP/") {
        // A peer may close without close_notify; what was read is what counts.
        return Ok(Exchange {
            response: out,
            asked_for_cert: asked.load(Ordering::SeqCst),
        });
    }
    match read {
        Err(_) => Err(format!("no response within {TIMEOUT:?}")),
        Ok(Err(e)) => Err(format!("read: {e}")),
        Ok(Ok(_)) => Err(format!(
            "closed without a response ({:?})",
            String::from_utf8_lossy(&out)
        )),
    }
}

/// `GET path` for `host` with `Connection: close` and `extra` headers.
fn get(host: &str, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut headers = vec![("Host", host), ("Connection", "close")];
    headers.extend_from_slice(extra);
    build_request("GET", path, &headers, b"")
}

/// Asserts `result` is a refusal by TLS (not an HTTP answer), naming `what`.
fn assert_refused(result: Result<Exchange, String>, what: &str) -> String {
    match result {
        Ok(x) => panic!(
            "{what}: expected the TLS connection to be refused, got {}",
            x.status_line()
        ),
        Err(e) => {
            eprintln!("{what}: refused: {e}");
            e
        }
    }
}

/// The `X-Forwarded-Client-Cert` value `sanitize_set` gives a certificate: its PEM body
/// without the BEGIN/END lines and newlines (upstream handlers/clientcert.go `sanitize`).
fn pem_body(cert_pem: &str) -> String {
    let first = cert_pem
        .split("-----END CERTIFICATE-----")
        .next()
        .expect("a PEM certificate");
    first
        .replace("-----BEGIN CERTIFICATE-----", "")
        .replace(['\n', '\r'], "")
}

// ---------------------------------------------------------------------------------------------
// The router side
// ---------------------------------------------------------------------------------------------

/// The `cipher_suites` the tests' routers get unless a test sets its own: the TLS 1.2 suites
/// for the ECDSA keys `TestCa` issues (the key is required with `enable_ssl`).
const CIPHER_SUITES: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384";

/// The `enable_ssl`/`ssl_port`/`tls_pem` YAML for `certs` (PEM cert, PEM key), in order.
fn https_yaml(ssl_port: u16, certs: &[(String, String)]) -> String {
    let mut yaml = format!("enable_ssl: true\nssl_port: {ssl_port}\ntls_pem:\n");
    for (cert, key) in certs {
        yaml.push_str(&format!(
            "  - cert_chain: {}\n    private_key: {}\n",
            yaml_quoted(cert),
            yaml_quoted(key)
        ));
    }
    yaml
}

/// A router with an HTTPS listener.
struct Https {
    env: TestEnv,
    /// 127.0.0.1:`ssl_port`
    ssl: SocketAddr,
    backends: Vec<EchoBackend>,
}

impl Https {
    /// Starts a router serving `certs` on a free `ssl_port`, plus `extra` YAML.
    async fn start(certs: &[(String, String)], extra: &str) -> Self {
        let ssl_port = free_port();
        // Upstream requires both keys with `enable_ssl` (config.go: "must specify list of
        // cipher suite", "client_cert_validation must be one of").
        let mut defaults = String::new();
        if !extra.contains("cipher_suites:") {
            defaults.push_str(&format!("cipher_suites: {CIPHER_SUITES}\n"));
        }
        if !extra.contains("client_cert_validation:") {
            defaults.push_str("client_cert_validation: none\n");
        }
        let env =
            TestEnv::start(&format!("{}{defaults}{extra}", https_yaml(ssl_port, certs))).await;
        Self {
            env,
            ssl: SocketAddr::from(([127, 0, 0, 1], ssl_port)),
            backends: Vec::new(),
        }
    }

    /// Starts a router with a certificate for `host` from `ca` and an echo backend routed
    /// for `host`.
    async fn with_backend(ca: &TestCa, host: &str, extra: &str) -> Self {
        let mut https = Self::start(&[ca.issue_server(&[host, "127.0.0.1"])], extra).await;
        https.route(host).await;
        https
    }

    /// An echo backend for `host`, registered and routed.
    async fn route(&mut self, host: &str) {
        let backend = EchoBackend::start(host).await;
        self.env
            .register_and_wait(&route(host, backend.port()))
            .await;
        self.backends.push(backend);
    }

    async fn exchange(
        &self,
        client: &Client,
        host: &str,
        request: &[u8],
    ) -> Result<Exchange, String> {
        exchange(client, self.ssl, host, request).await
    }

    /// One request over TLS that must reach the backend; its view of the request.
    async fn echoed(&self, client: &Client, host: &str, request: &[u8]) -> EchoedRequest {
        match self.exchange(client, host, request).await {
            Ok(x) => x.echoed(),
            Err(e) => panic!("request for {host} over TLS failed: {e}"),
        }
    }

    /// One request over plain HTTP that must reach the backend; its view of the request.
    async fn echoed_plain(&self, request: &[u8]) -> EchoedRequest {
        let resp = self.env.router.request(request).await;
        assert_eq!(resp.status, 200, "{}", resp.dump());
        EchoedRequest::parse(&resp.body)
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Client certificates (client_cert_validation, client_ca_certs, only_trust_client_ca_certs)
// ---------------------------------------------------------------------------------------------

/// The YAML trusting `ca` for client certificates, with `validation` and `sanitize_set`.
fn client_auth_yaml(ca: &TestCa, validation: &str) -> String {
    format!(
        "client_cert_validation: {validation}\nclient_ca_certs: {}\nforwarded_client_cert: sanitize_set\n",
        yaml_quoted(&ca.cert_pem())
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn validation_none_does_not_ask_for_a_client_certificate() {
    let host = "cc-none.example.com";
    let ca = TestCa::new("cc-none-ca");
    let https = Https::with_backend(&ca, host, &client_auth_yaml(&ca, "none")).await;
    let client = Client::trusting(&ca).with_cert(&ca.issue_client("cc-none-client"));
    let x = https
        .exchange(&client, host, &get(host, "/none", &[(XFCC, "spoofed")]))
        .await
        .expect("served without client authentication");
    assert!(
        !x.asked_for_cert,
        "the server asked for a client certificate"
    );
    let seen = x.echoed();
    assert_eq!(seen.request_line, "GET /none HTTP/1.1");
    assert_eq!(
        seen.header(XFCC),
        None,
        "sanitize_set without a client cert"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn validation_request_serves_a_client_without_a_certificate() {
    let host = "cc-req-none.example.com";
    let ca = TestCa::new("cc-req-none-ca");
    let https = Https::with_backend(&ca, host, &client_auth_yaml(&ca, "request")).await;
    let x = https
        .exchange(
            &Client::trusting(&ca),
            host,
            &get(host, "/", &[(XFCC, "spoofed")]),
        )
        .await
        .expect("served without a client certificate");
    assert!(x.asked_for_cert, "`request` asks for a client certificate");
    assert_eq!(x.echoed().header(XFCC), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn validation_request_forwards_a_trusted_certificate_as_xfcc() {
    let host = "cc-req-ok.example.com";
    let ca = TestCa::new("cc-req-ok-ca");
    let https = Https::with_backend(&ca, host, &client_auth_yaml(&ca, "request")).await;
    let cert = ca.issue_client("cc-req-ok-client");
    let seen = https
        .echoed(
            &Client::trusting(&ca).with_cert(&cert),
            host,
            &get(host, "/", &[(XFCC, "spoofed")]),
        )
        .await;
    let expected = pem_body(&cert.0);
    assert_eq!(seen.header_all(XFCC), [expected.as_str()]);
    // The same thing from the DER side: standard base64 of the leaf.
    let der = &parse_certs(&cert.0)[0];
    assert_eq!(
        expected,
        base64::engine::general_purpose::STANDARD.encode(der.as_ref())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn validation_request_refuses_an_untrusted_certificate() {
    let host = "cc-req-bad.example.com";
    let ca = TestCa::new("cc-req-bad-ca");
    let https = Https::with_backend(&ca, host, &client_auth_yaml(&ca, "request")).await;
    let stranger = TestCa::new("cc-req-stranger-ca");
    let client = Client::trusting(&ca).with_cert(&stranger.issue_client("stranger"));
    let before = https.backends[0].request_count();
    assert_refused(
        https.exchange(&client, host, &get(host, "/", &[])).await,
        "untrusted client certificate under `request`",
    );
    assert_eq!(
        https.backends[0].request_count(),
        before,
        "the refused request never reaches the backend"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn validation_require_refuses_a_client_without_a_certificate() {
    let host = "cc-reqd-none.example.com";
    let ca = TestCa::new("cc-reqd-none-ca");
    let https = Https::with_backend(&ca, host, &client_auth_yaml(&ca, "require")).await;
    assert_refused(
        https
            .exchange(&Client::trusting(&ca), host, &get(host, "/", &[]))
            .await,
        "no client certificate under `require`",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn validation_require_serves_a_trusted_certificate() {
    let host = "cc-reqd-ok.example.com";
    let ca = TestCa::new("cc-reqd-ok-ca");
    let https = Https::with_backend(&ca, host, &client_auth_yaml(&ca, "require")).await;
    let cert = ca.issue_client("cc-reqd-ok-client");
    let seen = https
        .echoed(
            &Client::trusting(&ca).with_cert(&cert),
            host,
            &get(host, "/required", &[]),
        )
        .await;
    assert_eq!(seen.request_line, "GET /required HTTP/1.1");
    assert_eq!(seen.header_all(XFCC), [pem_body(&cert.0).as_str()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn validation_require_refuses_an_untrusted_certificate() {
    let host = "cc-reqd-bad.example.com";
    let ca = TestCa::new("cc-reqd-bad-ca");
    let https = Https::with_backend(&ca, host, &client_auth_yaml(&ca, "require")).await;
    let stranger = TestCa::new("cc-reqd-stranger-ca");
    let client = Client::trusting(&ca).with_cert(&stranger.issue_client("stranger"));
    assert_refused(
        https.exchange(&client, host, &get(host, "/", &[])).await,
        "untrusted client certificate under `require`",
    );
}

/// `only_trust_client_ca_certs: true`: client certificates verify against `client_ca_certs`
/// alone; a CA that is only in `ca_certs` (trusted for backends) does not count.
#[tokio::test(flavor = "multi_thread")]
async fn only_trust_client_ca_certs_refuses_a_certificate_from_ca_certs() {
    let host = "cc-only.example.com";
    let server_ca = TestCa::new("cc-only-server-ca");
    let client_ca = TestCa::new("cc-only-client-ca");
    let backend_ca = TestCa::new("cc-only-backend-ca");
    let extra = format!(
        "{}only_trust_client_ca_certs: true\nca_certs: [{}]\n",
        client_auth_yaml(&client_ca, "require"),
        yaml_quoted(&backend_ca.cert_pem())
    );
    let https = Https::with_backend(&server_ca, host, &extra).await;

    let from_ca_certs = Client::trusting(&server_ca).with_cert(&backend_ca.issue_client("b"));
    assert_refused(
        https
            .exchange(&from_ca_certs, host, &get(host, "/", &[]))
            .await,
        "client certificate signed by a CA only in ca_certs",
    );
    let from_client_ca = Client::trusting(&server_ca).with_cert(&client_ca.issue_client("c"));
    let seen = https
        .echoed(&from_client_ca, host, &get(host, "/trusted", &[]))
        .await;
    assert_eq!(seen.request_line, "GET /trusted HTTP/1.1");
}

/// Without `only_trust_client_ca_certs` upstream's client-certificate pool is the system roots
/// plus `client_ca_certs` (config.go `buildClientCertPool`); `ca_certs` is the backends' pool
/// and never signs client certificates. (BOSH's template appends `ca_certs` to
/// `client_ca_certs` when it renders the file; the binary itself does not.)
#[tokio::test(flavor = "multi_thread")]
async fn ca_certs_do_not_sign_client_certificates_without_only_trust() {
    let host = "cc-ca-certs.example.com";
    let server_ca = TestCa::new("cc-ca-certs-server-ca");
    let client_ca = TestCa::new("cc-ca-certs-client-ca");
    let backend_ca = TestCa::new("cc-ca-certs-backend-ca");
    let extra = format!(
        "{}only_trust_client_ca_certs: false\nca_certs: [{}]\n",
        client_auth_yaml(&client_ca, "require"),
        yaml_quoted(&backend_ca.cert_pem())
    );
    let https = Https::with_backend(&server_ca, host, &extra).await;
    let from_client_ca = Client::trusting(&server_ca).with_cert(&client_ca.issue_client("c"));
    https
        .echoed(&from_client_ca, host, &get(host, "/trusted", &[]))
        .await;
    let from_ca_certs = Client::trusting(&server_ca).with_cert(&backend_ca.issue_client("b"));
    assert_refused(
        https
            .exchange(&from_ca_certs, host, &get(host, "/", &[]))
            .await,
        "client certificate signed by a CA only in ca_certs (only_trust_client_ca_certs: false)",
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Certificate choice by SNI
// ---------------------------------------------------------------------------------------------

/// Three `tls_pem` entries: a default first, an exact name, then a wildcard covering the exact
/// name too. Go's `BuildNameToCertificate` lookup: exact name, then `*.rest`, else the first.
#[tokio::test(flavor = "multi_thread")]
async fn sni_selects_the_certificate_and_the_first_is_the_default() {
    let ca = TestCa::new("sni-ca");
    let first = ca.issue_server(&["sni-first.example"]);
    let exact = ca.issue_server(&["exact.wild.example"]);
    let wild = ca.issue_server(&["*.wild.example"]);
    let der = |c: &(String, String)| parse_certs(&c.0)[0].clone();
    let https = Https::start(&[first.clone(), exact.clone(), wild.clone()], "").await;

    let served = |name: &'static str| {
        let ssl = https.ssl;
        async move {
            let (config, _) = Client::default().config();
            let tls = handshake(config, ssl, name)
                .await
                .unwrap_or_else(|e| panic!("SNI {name}: {e}"));
            peer_leaf(&tls)
        }
    };
    assert_eq!(served("exact.wild.example").await, der(&exact), "exact SNI");
    assert_eq!(
        served("EXACT.wild.example").await,
        der(&exact),
        "SNI is case-insensitive"
    );
    assert_eq!(served("app.wild.example").await, der(&wild), "wildcard SNI");
    assert_eq!(
        served("sni-first.example").await,
        der(&first),
        "first by name"
    );
    assert_eq!(served("127.0.0.1").await, der(&first), "no SNI (by IP)");
    assert_eq!(served("unknown.example").await, der(&first), "unknown SNI");
    assert_eq!(
        served("a.b.wild.example").await,
        der(&first),
        "wildcard covers one label"
    );

    // A verifying client accepts what it is given for the names in the certificates.
    let client = Client::trusting(&ca);
    for name in [
        "exact.wild.example",
        "app.wild.example",
        "sni-first.example",
    ] {
        let (config, _) = client.config();
        handshake(config, https.ssl, name)
            .await
            .unwrap_or_else(|e| panic!("verified handshake for {name}: {e}"));
    }
}

// ---------------------------------------------------------------------------------------------
// 3. X-Forwarded-Client-Cert modes on both listeners
// ---------------------------------------------------------------------------------------------

/// What the backend sees as `X-Forwarded-Client-Cert` under `mode` when the client sends
/// `X-Forwarded-Client-Cert: from-client`: over plain HTTP, over TLS without a client
/// certificate, and over TLS with one. The router asks for certificates (`request`).
async fn xfcc_matrix(mode: &str, host: &str) -> ([Vec<String>; 3], String) {
    let ca = TestCa::new(&format!("{host}-ca"));
    let extra = format!(
        "client_cert_validation: request\nclient_ca_certs: {}\nforwarded_client_cert: {mode}\n",
        yaml_quoted(&ca.cert_pem())
    );
    let https = Https::with_backend(&ca, host, &extra).await;
    let request = get(host, "/xfcc", &[(XFCC, "from-client")]);
    let cert = ca.issue_client(&format!("{host}-client"));
    let plain = https.echoed_plain(&request).await;
    let tls_no_cert = https.echoed(&Client::trusting(&ca), host, &request).await;
    let tls_cert = https
        .echoed(&Client::trusting(&ca).with_cert(&cert), host, &request)
        .await;
    let values = |seen: &EchoedRequest| -> Vec<String> {
        seen.header_all(XFCC)
            .iter()
            .map(|v| v.to_string())
            .collect()
    };
    (
        [values(&plain), values(&tls_no_cert), values(&tls_cert)],
        pem_body(&cert.0),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn xfcc_always_forward_passes_the_client_header_everywhere() {
    let ([plain, tls_no_cert, tls_cert], _) =
        xfcc_matrix("always_forward", "xfcc-always.example.com").await;
    assert_eq!(plain, ["from-client"], "plain HTTP");
    assert_eq!(tls_no_cert, ["from-client"], "TLS without a client cert");
    assert_eq!(tls_cert, ["from-client"], "TLS with a client cert");
}

#[tokio::test(flavor = "multi_thread")]
async fn xfcc_forward_keeps_the_header_only_with_a_client_certificate() {
    let ([plain, tls_no_cert, tls_cert], _) =
        xfcc_matrix("forward", "xfcc-forward.example.com").await;
    assert!(plain.is_empty(), "plain HTTP: {plain:?}");
    assert!(
        tls_no_cert.is_empty(),
        "TLS without a client cert: {tls_no_cert:?}"
    );
    assert_eq!(
        tls_cert,
        ["from-client"],
        "TLS with a client cert: passed on unchanged"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn xfcc_sanitize_set_replaces_the_header_with_the_certificate() {
    let ([plain, tls_no_cert, tls_cert], cert) =
        xfcc_matrix("sanitize_set", "xfcc-sanitize.example.com").await;
    assert!(plain.is_empty(), "plain HTTP: {plain:?}");
    assert!(
        tls_no_cert.is_empty(),
        "TLS without a client cert: {tls_no_cert:?}"
    );
    assert_eq!(
        tls_cert,
        [cert],
        "TLS with a client cert: the certificate only"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. X-Forwarded-Proto over TLS
// ---------------------------------------------------------------------------------------------

/// Without `sanitize_forwarded_proto` a client's non-empty `X-Forwarded-Proto` is passed on,
/// even over TLS (upstream handlers/x_forwarded_proto.go).
#[tokio::test(flavor = "multi_thread")]
async fn xfp_from_the_client_is_passed_on_over_tls_by_default() {
    let host = "xfp-pass.example.com";
    let ca = TestCa::new("xfp-pass-ca");
    let https = Https::with_backend(&ca, host, "").await;
    let seen = https
        .echoed(
            &Client::trusting(&ca),
            host,
            &get(host, "/", &[("X-Forwarded-Proto", "http")]),
        )
        .await;
    assert_eq!(seen.header_all("X-Forwarded-Proto"), ["http"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn sanitize_forwarded_proto_sets_each_listeners_scheme() {
    let host = "xfp-sanitize.example.com";
    let ca = TestCa::new("xfp-sanitize-ca");
    let https = Https::with_backend(&ca, host, "sanitize_forwarded_proto: true\n").await;
    let seen = https
        .echoed(
            &Client::trusting(&ca),
            host,
            &get(host, "/", &[("X-Forwarded-Proto", "http")]),
        )
        .await;
    assert_eq!(
        seen.header_all("X-Forwarded-Proto"),
        ["https"],
        "TLS listener"
    );
    let seen = https
        .echoed_plain(&get(host, "/", &[("X-Forwarded-Proto", "https")]))
        .await;
    assert_eq!(
        seen.header_all("X-Forwarded-Proto"),
        ["http"],
        "plain listener"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn force_forwarded_proto_https_wins_over_sanitize_on_both_listeners() {
    let host = "xfp-force.example.com";
    let ca = TestCa::new("xfp-force-ca");
    let https = Https::with_backend(
        &ca,
        host,
        "force_forwarded_proto_https: true\nsanitize_forwarded_proto: true\n",
    )
    .await;
    let seen = https
        .echoed(
            &Client::trusting(&ca),
            host,
            &get(host, "/", &[("X-Forwarded-Proto", "http")]),
        )
        .await;
    assert_eq!(
        seen.header_all("X-Forwarded-Proto"),
        ["https"],
        "TLS listener"
    );
    let seen = https
        .echoed_plain(&get(host, "/", &[("X-Forwarded-Proto", "http")]))
        .await;
    assert_eq!(
        seen.header_all("X-Forwarded-Proto"),
        ["https"],
        "plain listener"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. SIGHUP reloads the certificates
// ---------------------------------------------------------------------------------------------

/// The config file the router was started with (`-c <path>` on its command line).
fn config_path(router: &Gorouter) -> std::path::PathBuf {
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", router.pid())).expect("cmdline");
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let i = args
        .iter()
        .position(|a| a == "-c")
        .unwrap_or_else(|| panic!("no -c in {args:?}"));
    args[i + 1].clone().into()
}

/// Rewrites the router's config file with `tls_pem` replaced by `certs`.
fn rewrite_tls_pem(router: &Gorouter, certs: &[(&str, &str)]) {
    let mut doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(router.config_text()).expect("config YAML");
    let entries = certs
        .iter()
        .map(|(cert, key)| {
            let mut m = serde_yaml_ng::Mapping::new();
            m.insert("cert_chain".into(), (*cert).into());
            m.insert("private_key".into(), (*key).into());
            serde_yaml_ng::Value::Mapping(m)
        })
        .collect();
    doc["tls_pem"] = serde_yaml_ng::Value::Sequence(entries);
    std::fs::write(
        config_path(router),
        serde_yaml_ng::to_string(&doc).expect("serialise config"),
    )
    .expect("rewrite config file");
}

/// Waits until a line of the router's output contains every one of `needles`.
async fn wait_output(router: &Gorouter, needles: &[&str]) {
    eventually(
        &format!("a line with {needles:?} in the router's output"),
        TIMEOUT,
        || async {
            router
                .output()
                .lines()
                .any(|line| needles.iter().all(|n| line.contains(n)))
                .then_some(())
        },
    )
    .await
}

/// A keep-alive HTTP/1.1 request on `sender`; the echoed request.
async fn keep_alive_get(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    host: &str,
    path: &str,
) -> EchoedRequest {
    let req = http::Request::get(path)
        .header("Host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = tokio::time::timeout(TIMEOUT, sender.send_request(req))
        .await
        .expect("response within the timeout")
        .expect("response on the kept connection");
    assert_eq!(resp.status(), 200);
    let body = tokio::time::timeout(TIMEOUT, resp.into_body().collect())
        .await
        .expect("body within the timeout")
        .expect("body")
        .to_bytes();
    EchoedRequest::parse(&body)
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_serves_new_certificates_to_new_connections_and_keeps_open_ones() {
    let host = "reload.example.com";
    let ca = TestCa::new("reload-ca");
    let cert_a = ca.issue_server(&[host]);
    let cert_b = ca.issue_server(&[host]);
    let der_a = parse_certs(&cert_a.0)[0].clone();
    let der_b = parse_certs(&cert_b.0)[0].clone();
    assert_ne!(der_a, der_b);
    let mut https = Https::start(std::slice::from_ref(&cert_a), "").await;
    https.route(host).await;
    let client = Client::trusting(&ca);

    // A kept-alive connection made with certificate A.
    let (config, _) = client.config();
    let tls = handshake(config, https.ssl, host).await.expect("handshake");
    assert_eq!(peer_leaf(&tls), der_a);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP/1.1 over TLS");
    tokio::spawn(conn);
    assert_eq!(
        keep_alive_get(&mut sender, host, "/before")
            .await
            .request_line,
        "GET /before HTTP/1.1"
    );

    rewrite_tls_pem(&https.env.router, &[(&cert_b.0, &cert_b.1)]);
    https.env.router.signal(libc::SIGHUP);
    wait_output(
        &https.env.router,
        &["tls-certificates-reloaded", r#""trigger":"Sighup""#],
    )
    .await;

    // A new connection gets certificate B...
    let (config, _) = client.config();
    let tls = handshake(config, https.ssl, host)
        .await
        .expect("handshake after SIGHUP");
    assert_eq!(peer_leaf(&tls), der_b, "new connection after SIGHUP");
    let x = https
        .exchange(&client, host, &get(host, "/after", &[]))
        .await
        .expect("request after SIGHUP");
    assert_eq!(x.echoed().request_line, "GET /after HTTP/1.1");
    // ...and the old one still works.
    assert_eq!(
        keep_alive_get(&mut sender, host, "/old-conn")
            .await
            .request_line,
        "GET /old-conn HTTP/1.1"
    );
    assert!(
        https.env.router.try_exit().is_none(),
        "router still running"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_with_a_broken_certificate_keeps_the_current_one() {
    let host = "reload-broken.example.com";
    let ca = TestCa::new("reload-broken-ca");
    let cert_a = ca.issue_server(&[host]);
    let der_a = parse_certs(&cert_a.0)[0].clone();
    let mut https = Https::start(std::slice::from_ref(&cert_a), "").await;
    https.route(host).await;

    let (_, other_key) = ca.issue_server(&[host]);
    rewrite_tls_pem(
        &https.env.router,
        &[(
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
            &other_key,
        )],
    );
    https.env.router.signal(libc::SIGHUP);
    wait_output(
        &https.env.router,
        &["tls-certificates-reload-failed", r#""trigger":"Sighup""#],
    )
    .await;

    assert!(
        https.env.router.try_exit().is_none(),
        "router exited after a bad SIGHUP"
    );
    let health = https.env.router.health().await.expect("/health answers");
    assert_eq!((health.status, health.body.as_slice()), (200, &b"ok\n"[..]));
    let client = Client::trusting(&ca);
    let (config, _) = client.config();
    let tls = handshake(config, https.ssl, host).await.expect("handshake");
    assert_eq!(peer_leaf(&tls), der_a, "still certificate A");
    let x = https
        .exchange(&client, host, &get(host, "/still", &[]))
        .await
        .expect("request after the failed reload");
    assert_eq!(x.echoed().request_line, "GET /still HTTP/1.1");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_config_file_reloads_certificates_without_a_signal() {
    let host = "reload-file.example.com";
    let ca = TestCa::new("reload-file-ca");
    let cert_a = ca.issue_server(&[host]);
    let cert_b = ca.issue_server(&[host]);
    let der_b = parse_certs(&cert_b.0)[0].clone();
    let mut https = Https::start(std::slice::from_ref(&cert_a), "").await;
    https.route(host).await;
    let client = Client::trusting(&ca);

    rewrite_tls_pem(&https.env.router, &[(&cert_b.0, &cert_b.1)]);
    wait_output(
        &https.env.router,
        &["tls-certificates-reloaded", r#""trigger":"FileChanged""#],
    )
    .await;
    let (config, _) = client.config();
    let tls = handshake(config, https.ssl, host)
        .await
        .expect("handshake after the file changed");
    assert_eq!(peer_leaf(&tls), der_b);
}

// ---------------------------------------------------------------------------------------------
// 6. /health over TLS (status.tls)
// ---------------------------------------------------------------------------------------------

/// `status.tls` YAML on `port` with `cert`.
fn status_tls_yaml(port: u16, cert: &(String, String), nontls: bool) -> String {
    format!(
        "status:\n  enable_nontls_health_checks: {nontls}\n  tls:\n    port: {port}\n    certificate: {}\n    key: {}\n",
        yaml_quoted(&cert.0),
        yaml_quoted(&cert.1)
    )
}

/// `GET /health` over TLS on 127.0.0.1:`port`: the status line, body and server certificate.
async fn tls_health(
    ca: &TestCa,
    port: u16,
) -> Result<(String, Vec<u8>, CertificateDer<'static>), String> {
    let (config, _) = Client::trusting(ca).config();
    let mut tls = handshake(
        config,
        SocketAddr::from(([127, 0, 0, 1], port)),
        "127.0.0.1",
    )
    .await?;
    let leaf = peer_leaf(&tls);
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, tls.read_to_end(&mut out)).await;
    let end = find(&out, b"\r\n\r\n").ok_or_else(|| format!("no response: {out:?}"))?;
    let text = String::from_utf8_lossy(&out[..end]).into_owned();
    Ok((
        text.lines().next().unwrap_or_default().to_string(),
        out[end + 4..].to_vec(),
        leaf,
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn status_tls_serves_health_with_the_status_certificate() {
    let ca = TestCa::new("status-tls-ca");
    let status_cert = ca.issue_server(&["127.0.0.1"]);
    let status_port = free_port();
    let https = Https::start(
        &[ca.issue_server(&["127.0.0.1"])],
        &status_tls_yaml(status_port, &status_cert, true),
    )
    .await;
    let (status_line, body, leaf) = tls_health(&ca, status_port)
        .await
        .expect("/health over TLS");
    assert_eq!(status_line, "HTTP/1.1 200 OK");
    assert_eq!(body, b"ok\n");
    assert_eq!(
        leaf,
        parse_certs(&status_cert.0)[0],
        "the status.tls certificate"
    );
    // The plain status port still answers (enable_nontls_health_checks defaults to true).
    let plain = https.env.router.health().await.expect("plain /health");
    assert_eq!(plain.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_nontls_health_checks_only_the_tls_status_port_answers() {
    let ca = TestCa::new("status-only-tls-ca");
    let status_cert = ca.issue_server(&["127.0.0.1"]);
    let status_port = free_port();
    let nats = NatsServer::start().await;
    let yaml = format!(
        "{}cipher_suites: {CIPHER_SUITES}\nclient_cert_validation: none\n{}",
        https_yaml(free_port(), &[ca.issue_server(&["127.0.0.1"])]),
        status_tls_yaml(status_port, &status_cert, false)
    );
    let mut router = Gorouter::builder(&nats).yaml(&yaml).spawn();
    // Ready when /health over TLS says ok (the plain status port never opens).
    let deadline = tokio::time::Instant::now() + TIMEOUT * 3;
    let (status_line, body) = loop {
        if let Some(st) = router.try_exit() {
            panic!("gorouter exited with {st}: {}", router.output());
        }
        let last = match tls_health(&ca, status_port).await {
            Ok((line, body, _)) if body == b"ok\n" => break (line, body),
            Ok((line, _, _)) => line,
            Err(e) => e,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "/health over TLS did not say ok: {last}; output:\n{}",
            router.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (status_line.as_str(), body.as_slice()),
        ("HTTP/1.1 200 OK", &b"ok\n"[..])
    );
    let plain = TcpStream::connect(router.status_addr()).await;
    assert!(
        plain.is_err(),
        "plain status port {} accepts connections",
        router.status_addr()
    );
}

// ---------------------------------------------------------------------------------------------
// 7. TLS versions and cipher suites
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn min_tls_version_13_refuses_a_tls12_client() {
    let host = "tls13-only.example.com";
    let ca = TestCa::new("tls13-only-ca");
    let https = Https::with_backend(
        &ca,
        host,
        "min_tls_version: TLSv1.3\nmax_tls_version: TLSv1.3\n",
    )
    .await;
    let err = assert_refused(
        https
            .exchange(
                &Client::trusting(&ca).only(&rustls::version::TLS12),
                host,
                &get(host, "/", &[]),
            )
            .await,
        "TLS 1.2 client against min_tls_version TLSv1.3",
    );
    assert!(err.starts_with("handshake"), "{err}");
    let (config, _) = Client::trusting(&ca).only(&rustls::version::TLS13).config();
    let tls = handshake(config, https.ssl, host)
        .await
        .expect("TLS 1.3 client");
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

/// Upstream's default `max_tls_version` is TLSv1.2 (config.go: `case "TLSv1.2", "":`; BOSH
/// spec default TLSv1.2): a client that speaks only TLS 1.3 is refused.
#[tokio::test(flavor = "multi_thread")]
async fn max_tls_version_defaults_to_tls12() {
    let host = "tls-default-max.example.com";
    let ca = TestCa::new("tls-default-max-ca");
    let https = Https::with_backend(&ca, host, "").await;
    let (config, _) = Client::trusting(&ca).config();
    let tls = handshake(config, https.ssl, host)
        .await
        .expect("default client");
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2),
        "negotiated version without max_tls_version"
    );
    let err = assert_refused(
        https
            .exchange(
                &Client::trusting(&ca).only(&rustls::version::TLS13),
                host,
                &get(host, "/", &[]),
            )
            .await,
        "TLS 1.3-only client without max_tls_version",
    );
    assert!(err.starts_with("handshake"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cipher_suites_refuse_a_tls12_client_offering_another_suite() {
    use rustls::crypto::ring::cipher_suite as cs;
    let host = "ciphers.example.com";
    let ca = TestCa::new("ciphers-ca");
    let https =
        Https::with_backend(&ca, host, "cipher_suites: ECDHE-ECDSA-AES128-GCM-SHA256\n").await;
    let tls12 = Client::trusting(&ca).only(&rustls::version::TLS12);

    let err = assert_refused(
        https
            .exchange(
                &tls12.clone().suites(&[
                    cs::TLS13_AES_128_GCM_SHA256,
                    cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                ]),
                host,
                &get(host, "/", &[]),
            )
            .await,
        "TLS 1.2 client offering only ECDHE-ECDSA-AES256-GCM-SHA384",
    );
    assert!(err.starts_with("handshake"), "{err}");

    let allowed = tls12.suites(&[
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ]);
    let (config, _) = allowed.config();
    let tls = handshake(config, https.ssl, host)
        .await
        .expect("the configured suite");
    assert_eq!(
        tls.get_ref().1.negotiated_cipher_suite().map(|s| s.suite()),
        Some(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
    );
    let x = https
        .exchange(&allowed, host, &get(host, "/cipher", &[]))
        .await
        .expect("request with the configured suite");
    assert_eq!(x.echoed().request_line, "GET /cipher HTTP/1.1");
}

// ---------------------------------------------------------------------------------------------
// 8. Websockets over TLS
// ---------------------------------------------------------------------------------------------

/// A websocket upgrade over the TLS listener reaches the backend (the echo backend answers 101
/// and then echoes every byte) and bytes flow both ways through the router.
#[tokio::test(flavor = "multi_thread")]
async fn websocket_upgrade_over_tls_reaches_the_backend() {
    let host = "ws-tls.example.com";
    let ca = TestCa::new("ws-tls-ca");
    let https = Https::with_backend(&ca, host, "").await;
    let (config, _) = Client::trusting(&ca).config();
    let mut tls = handshake(config, https.ssl, host).await.expect("handshake");
    tls.write_all(
        format!(
            "GET /chat HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let end = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                return end;
            }
            let mut tmp = [0u8; 4096];
            let n = tls.read(&mut tmp).await.expect("read the upgrade response");
            assert!(
                n > 0,
                "closed before the upgrade response: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&tmp[..n]);
        }
    })
    .await
    .expect("upgrade response within the timeout");
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("\r\nupgrade: websocket"),
        "{head}"
    );
    let mut rest = buf[end + 4..].to_vec();

    for message in [&b"hello over tls"[..], &b"\x81\x05second"[..]] {
        tls.write_all(message).await.unwrap();
        tokio::time::timeout(TIMEOUT, async {
            while rest.len() < message.len() {
                let mut tmp = [0u8; 4096];
                let n = tls.read(&mut tmp).await.expect("read echoed bytes");
                assert!(n > 0, "closed while echoing");
                rest.extend_from_slice(&tmp[..n]);
            }
        })
        .await
        .expect("echo within the timeout");
        assert_eq!(rest.drain(..message.len()).as_slice(), message);
    }

    let upgrade = https.backends[0]
        .requests()
        .into_iter()
        .map(|r| EchoedRequest::parse_head(&r.head))
        .find(|r| r.request_line == "GET /chat HTTP/1.1")
        .expect("the backend got the upgrade request");
    assert_eq!(upgrade.header("Upgrade"), Some("websocket"));
    assert_eq!(upgrade.header("X-Forwarded-Proto"), Some("https"));
}
