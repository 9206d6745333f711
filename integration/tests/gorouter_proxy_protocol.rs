//! `enable_proxy` (A.11): a connection may start with a PROXY protocol header (v1 or v2), whose
//! source address becomes the client address: the backend sees it in `X-Forwarded-For` and the
//! access log names it. The header is optional per connection, as upstream's.

use std::time::Duration;

use integration::http::build_request;
use integration::{route, EchoBackend, EchoedRequest, TestEnv};

/// A router with `enable_proxy: true` and an echo backend on `host`.
async fn setup(host: &str) -> (TestEnv, EchoBackend) {
    let env = TestEnv::start("enable_proxy: true").await;
    let backend = EchoBackend::start(host).await;
    env.register_and_wait(&route(host, backend.port())).await;
    (env, backend)
}

fn request(host: &str, path: &str) -> Vec<u8> {
    build_request("GET", path, &[("Host", host), ("Connection", "close")], b"")
}

/// The access log's client address field: the quoted `ip:port` after the user agent.
fn logged_client(line: &str) -> String {
    // ... "<referer>" "<user agent>" "<client>" "<backend>" x_forwarded_for:...
    let fields: Vec<&str> = line.split('"').collect();
    fields.get(7).map(|s| s.to_string()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn v1_header_source_is_the_client_address() {
    let host = "pp-v1.example.com";
    let (env, _backend) = setup(host).await;
    let mut bytes = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 80\r\n".to_vec();
    bytes.extend_from_slice(&request(host, "/pp-v1"));
    let resp = env.router.request(&bytes).await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    let seen = EchoedRequest::parse(&resp.body);
    assert_eq!(seen.header("X-Forwarded-For"), Some("203.0.113.7"));
    let line = env.access_log_line("/pp-v1").await;
    assert_eq!(logged_client(&line), "203.0.113.7:51234", "{line}");
    assert!(line.contains(r#"x_forwarded_for:"203.0.113.7""#), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_header_source_is_the_client_address() {
    let host = "pp-v2.example.com";
    let (env, _backend) = setup(host).await;
    // Signature, version 2 / PROXY, TCP over IPv6, 36 address bytes.
    let mut bytes = b"\r\n\r\n\0\r\nQUIT\n\x21\x21\x00\x24".to_vec();
    let src: std::net::Ipv6Addr = "2001:db8::42".parse().unwrap();
    bytes.extend_from_slice(&src.octets());
    bytes.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    bytes.extend_from_slice(&40001u16.to_be_bytes());
    bytes.extend_from_slice(&80u16.to_be_bytes());
    bytes.extend_from_slice(&request(host, "/pp-v2"));
    let resp = env.router.request(&bytes).await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    let seen = EchoedRequest::parse(&resp.body);
    assert_eq!(seen.header("X-Forwarded-For"), Some("2001:db8::42"));
    let line = env.access_log_line("/pp-v2").await;
    assert_eq!(logged_client(&line), "[2001:db8::42]:40001", "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_header_the_socket_peer_is_the_client() {
    let host = "pp-none.example.com";
    let (env, _backend) = setup(host).await;
    let resp = env.router.request(&request(host, "/pp-none")).await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    let seen = EchoedRequest::parse(&resp.body);
    assert_eq!(seen.header("X-Forwarded-For"), Some("127.0.0.1"));
    let line = env.access_log_line("/pp-none").await;
    assert!(
        logged_client(&line).starts_with("127.0.0.1:"),
        "client address in {line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_header_closes_the_connection() {
    let host = "pp-bad.example.com";
    let (env, backend) = setup(host).await;
    let before = backend.request_count();
    let mut stream = tokio::net::TcpStream::connect(env.router.addr())
        .await
        .unwrap();
    let mut bytes = b"PROXY TCP4 not-an-address 10.0.0.1 1 80\r\n".to_vec();
    bytes.extend_from_slice(&request(host, "/pp-bad"));
    tokio::io::AsyncWriteExt::write_all(&mut stream, &bytes)
        .await
        .unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut out),
    )
    .await
    .expect("the router closes the connection");
    // Closed (possibly reset) without an HTTP response; the backend never saw the request.
    assert!(
        read.is_err() || out.is_empty(),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(backend.request_count(), before);
}
