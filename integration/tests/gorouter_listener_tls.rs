//! The HTTPS listener (A.11, A.12): `enable_ssl` with `tls_pem`, HTTP/1.1 and HTTP/2 (ALPN
//! `h2`, `enable_http2` default true), the PROXY header before the handshake, and the TLS
//! facts reaching the backend (`X-Forwarded-Proto: https`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use integration::pki::{yaml_quoted, TestCa};
use integration::{eventually, free_port, route, EchoBackend, EchoedRequest, TestEnv};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Https {
    env: TestEnv,
    ca: TestCa,
    addr: SocketAddr,
    _backend: EchoBackend,
}

/// A router with its HTTPS listener on a free port (and `extra` YAML), an echo backend on
/// `host`, routed.
async fn start(host: &str, extra: &str) -> Https {
    let ca = TestCa::new("listener-tls-ca");
    let (cert, key) = ca.issue_server(&[host, "127.0.0.1"]);
    let ssl_port = free_port();
    let yaml = format!(
        "enable_ssl: true\nssl_port: {ssl_port}\ncipher_suites: ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256\ntls_pem:\n  - cert_chain: {}\n    private_key: {}\n{extra}",
        yaml_quoted(&cert),
        yaml_quoted(&key)
    );
    let env = TestEnv::start(&yaml).await;
    let backend = EchoBackend::start(host).await;
    env.register_and_wait(&route(host, backend.port())).await;
    Https {
        env,
        ca,
        addr: SocketAddr::from(([127, 0, 0, 1], ssl_port)),
        _backend: backend,
    }
}

impl Https {
    async fn connect(
        &self,
        host: &str,
        alpn: &[&[u8]],
        prefix: &[u8],
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(self.ca.root_store())
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let mut tcp = TcpStream::connect(self.addr).await.unwrap();
        tcp.write_all(prefix).await.unwrap();
        let name = ServerName::try_from(host.to_string()).unwrap();
        tokio::time::timeout(
            Duration::from_secs(5),
            tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
        )
        .await
        .expect("handshake within 5 s")
        .expect("handshake")
    }
}

/// One HTTP/1.1 request with `Connection: close`; the echoed backend request.
async fn http1_get<S>(stream: &mut S, host: &str, path: &str) -> EchoedRequest
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    // A TLS peer may close without close_notify; what was read is what counts.
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    let body = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| &out[i + 4..])
        .unwrap_or_default();
    EchoedRequest::parse(body)
}

#[tokio::test(flavor = "multi_thread")]
async fn https_http1_reaches_the_backend_as_https() {
    let host = "tls-h1.example.com";
    let https = start(host, "").await;
    let mut tls = https.connect(host, &[b"http/1.1"], b"").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let seen = http1_get(&mut tls, host, "/tls-h1").await;
    assert_eq!(seen.request_line, "GET /tls-h1 HTTP/1.1");
    assert_eq!(seen.header("X-Forwarded-Proto"), Some("https"));
    assert_eq!(seen.header("X-Forwarded-For"), Some("127.0.0.1"));
    // The access log is written after the response: wait for the line.
    let router = &https.env.router;
    let line = eventually(
        "the access log line of /tls-h1",
        Duration::from_secs(5),
        || async {
            router
                .access_log()
                .lines()
                .find(|l| l.contains("/tls-h1"))
                .map(str::to_string)
        },
    )
    .await;
    assert!(line.contains(r#"x_forwarded_proto:"https""#), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn https_http2_by_alpn_is_proxied_to_an_http1_backend() {
    let host = "tls-h2.example.com";
    let https = start(host, "").await;
    let tls = https.connect(host, &[b"h2", b"http/1.1"], b"").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    for path in ["/tls-h2-a", "/tls-h2-b"] {
        let req = http::Request::get(format!("https://{host}{path}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let seen = EchoedRequest::parse(&body);
        // The backend speaks HTTP/1.1: the request goes there as HTTP/1.1 with a Host header.
        assert_eq!(seen.request_line, format!("GET {path} HTTP/1.1"));
        assert_eq!(seen.header("Host"), Some(host));
        assert_eq!(seen.header("X-Forwarded-Proto"), Some("https"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_http2_no_protocol_is_negotiated_and_http1_is_served() {
    let host = "tls-no-h2.example.com";
    let https = start(host, "enable_http2: false\n").await;
    let mut tls = https.connect(host, &[b"h2", b"http/1.1"], b"").await;
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        None,
        "no ALPN, as upstream"
    );
    let seen = http1_get(&mut tls, host, "/no-h2").await;
    assert_eq!(seen.request_line, "GET /no-h2 HTTP/1.1");
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_header_then_tls_names_the_client() {
    let host = "tls-pp.example.com";
    let https = start(host, "enable_proxy: true\n").await;
    let mut tls = https
        .connect(
            host,
            &[b"http/1.1"],
            b"PROXY TCP4 198.51.100.20 10.0.0.1 33000 443\r\n",
        )
        .await;
    let seen = http1_get(&mut tls, host, "/tls-pp").await;
    assert_eq!(seen.header("X-Forwarded-For"), Some("198.51.100.20"));
    assert_eq!(seen.header("X-Forwarded-Proto"), Some("https"));
}
