//! TLS to app containers (A.11, A.5, A.6): endpoints registered with a `tls_port` are dialled
//! with TLS, the server name is `server_cert_domain_san` (Diego's instance-identity check), the
//! certificate is verified against `ca_certs`, and `backends.cert_chain`/`private_key` is
//! presented. Failures answer as upstream does: SAN mismatch 503 (endpoint pruned, next one
//! tried), plain HTTP on the TLS port 525, untrusted certificate 526, our client certificate
//! rejected 496. `protocol: http2` endpoints speak HTTP/2.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use integration::backends::text_response;
use integration::pki::{parse_certs, parse_key, yaml_quoted, TestCa};
use integration::{HttpBackend, TestEnv};
use rustls::server::WebPkiClientVerifier;
use serde_json::json;
use tokio::net::TcpListener;

/// A TLS app instance: answers every request with its name, the HTTP version it was spoken
/// to in, and whether the router presented a client certificate.
struct TlsBackend {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

struct TlsBackendOptions<'a> {
    /// The CA that issues the backend's certificate.
    ca: &'a TestCa,
    /// The names in the backend's certificate.
    names: &'a [&'a str],
    /// ALPN the backend offers (`h2` for an HTTP/2 backend).
    alpn: &'a [&'a [u8]],
    /// Client certificates must be signed by this CA.
    require_client_cert: Option<&'a TestCa>,
    /// Only TLS 1.3 (a rejected client certificate then shows after the handshake).
    tls13_only: bool,
    /// Every request fails in the server (HTTP/2: the stream is reset; HTTP/1.1: the
    /// connection is closed).
    fail_requests: bool,
}

impl TlsBackend {
    async fn start(name: &'static str, o: TlsBackendOptions<'_>) -> Self {
        let (cert, key) = o.ca.issue_server(o.names);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = if o.tls13_only {
            &[&rustls::version::TLS13]
        } else {
            rustls::DEFAULT_VERSIONS
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .unwrap();
        let builder = match o.require_client_cert {
            Some(client_ca) => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(
                    Arc::new(client_ca.root_store()),
                    provider,
                )
                .build()
                .unwrap(),
            ),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(parse_certs(&cert), parse_key(&key))
            .unwrap();
        config.alpn_protocols = o.alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        let fail_requests = o.fail_requests;
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let counted = counted.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    counted.fetch_add(1, Ordering::SeqCst);
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    let client_cert = tls.get_ref().1.peer_certificates().is_some();
                    let svc =
                        hyper::service::service_fn(move |req: Request<Incoming>| async move {
                            if fail_requests {
                                return Err("this backend fails every request");
                            }
                            let resp = Response::builder()
                                .header("x-backend", name)
                                .header("x-seen-version", format!("{:?}", req.version()))
                                .header("x-client-cert", if client_cert { "yes" } else { "no" })
                                .body(Full::new(Bytes::from(name)))
                                .unwrap();
                            Ok::<_, &'static str>(resp)
                        });
                    let io = TokioIo::new(tls);
                    if h2 {
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, svc)
                            .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, svc)
                            .await;
                    }
                });
            }
        });
        Self {
            addr,
            connections,
            _task: task,
        }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }
}

fn options<'a>(ca: &'a TestCa, names: &'a [&'a str]) -> TlsBackendOptions<'a> {
    TlsBackendOptions {
        ca,
        names,
        alpn: &[b"http/1.1"],
        require_client_cert: None,
        tls13_only: false,
        fail_requests: false,
    }
}

/// A `router.register` for `uri` at a TLS port with `san` as the instance identity.
fn tls_route(uri: &str, tls_port: u16, san: &str) -> serde_json::Value {
    json!({
        "host": "127.0.0.1",
        "port": 1,
        "tls_port": tls_port,
        "uris": [uri],
        "private_instance_id": san,
        "server_cert_domain_san": san,
    })
}

/// Router YAML trusting `ca` for backends, plus `extra`.
fn trusting(ca: &TestCa, extra: &str) -> String {
    format!("ca_certs:\n  - {}\n{extra}", yaml_quoted(&ca.cert_pem()))
}

/// A router trusting `ca` for backends, plus `extra` YAML.
async fn router_trusting(ca: &TestCa, extra: &str) -> TestEnv {
    TestEnv::start(&trusting(ca, extra)).await
}

async fn routes_json(env: &TestEnv) -> serde_json::Value {
    let text = env.router.routes().await.body_str();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("/routes is not JSON ({e}): {text}"))
}

#[tokio::test]
async fn tls_endpoint_with_the_instance_san_is_served_over_tls() {
    let ca = TestCa::new("backend-tls-ok-ca");
    let backend = TlsBackend::start("tls-ok", options(&ca, &["inst-ok-1"])).await;
    let env = router_trusting(&ca, "").await;
    let host = "tls-ok.backend-tls.example";
    let first = env
        .register_and_wait(&tls_route(host, backend.port(), "inst-ok-1"))
        .await;
    assert_eq!(first.status, 200, "{}", first.dump());
    assert_eq!(first.body_str(), "tls-ok");
    assert_eq!(first.header("x-seen-version"), Some("HTTP/1.1"));
    assert_eq!(first.header("x-client-cert"), Some("no"));
}

#[tokio::test]
async fn tls_connections_to_a_backend_are_kept_alive_and_reused() {
    let ca = TestCa::new("backend-tls-reuse-ca");
    let backend = TlsBackend::start("tls-reuse", options(&ca, &["inst-reuse"])).await;
    // One serving thread: each keeps idle backend connections of its own.
    let env = TestEnv::start_on_one_thread(&trusting(&ca, "")).await;
    let host = "tls-reuse.backend-tls.example";
    env.register_and_wait(&tls_route(host, backend.port(), "inst-reuse"))
        .await;
    for _ in 0..5 {
        assert_eq!(env.get(host, "/").await.status, 200);
    }
    assert_eq!(
        backend.connections.load(Ordering::SeqCst),
        1,
        "sequential requests share one TLS connection"
    );
}

#[tokio::test]
async fn san_mismatch_is_503_and_the_endpoint_is_removed() {
    let ca = TestCa::new("backend-tls-san-ca");
    // The certificate names another instance: the instance-identity check fails.
    let backend = TlsBackend::start("tls-san", options(&ca, &["inst-other"])).await;
    let env = router_trusting(&ca, "").await;
    let host = "tls-san.backend-tls.example";
    env.register(&tls_route(host, backend.port(), "inst-expected"))
        .await;
    env.sync().await;
    let r = env.get(host, "/").await;
    assert_eq!(r.status, 503, "{}", r.dump());
    assert_eq!(r.body_str(), "503 Service Unavailable\n");
    let routererror = r.header("x-cf-routererror").unwrap_or_default();
    assert!(
        routererror.starts_with("endpoint_failure (") && routererror.contains("inst-expected"),
        "{routererror}"
    );
    let routes = routes_json(&env).await;
    assert!(
        routes[host].as_array().is_none_or(|a| a.is_empty()),
        "the failed TLS endpoint is pruned: {routes}"
    );
}

#[tokio::test]
async fn san_mismatch_moves_on_to_the_next_endpoint() {
    let ca = TestCa::new("backend-tls-retry-ca");
    let wrong = TlsBackend::start("tls-wrong", options(&ca, &["inst-impostor"])).await;
    let right = TlsBackend::start("tls-right", options(&ca, &["inst-right"])).await;
    let env = router_trusting(&ca, "").await;
    let host = "tls-retry.backend-tls.example";
    env.register(&tls_route(host, wrong.port(), "inst-wrong"))
        .await;
    env.register_and_wait(&tls_route(host, right.port(), "inst-right"))
        .await;
    // Round robin reaches the wrong endpoint within two requests; every answer still comes
    // from the right one.
    for _ in 0..4 {
        let r = env.get(host, "/").await;
        assert_eq!(r.status, 200, "{}", r.dump());
        assert_eq!(r.body_str(), "tls-right");
    }
    let routes = routes_json(&env).await;
    let left: Vec<String> = routes[host]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["address"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, vec![format!("127.0.0.1:{}", right.port())]);
}

#[tokio::test]
async fn plain_http_on_the_tls_port_is_525() {
    let ca = TestCa::new("backend-tls-plain-ca");
    // A real HTTP server (hyper): it answers the ClientHello with a 400, as Go's does.
    let plain = HttpBackend::start(|_req| async { text_response(200, "plain") }).await;
    let env = router_trusting(&ca, "").await;
    let host = "tls-plain.backend-tls.example";
    env.register(&tls_route(host, plain.port(), "inst-plain"))
        .await;
    env.sync().await;
    let r = env.get(host, "/").await;
    assert_eq!(r.status, 525, "{}", r.dump());
    assert_eq!(r.body_str(), "525 SSL Handshake Failed\n");
    assert_eq!(
        r.header("x-cf-routererror"),
        Some("endpoint_failure (tls: first record does not look like a TLS handshake)")
    );
}

#[tokio::test]
async fn untrusted_backend_certificate_is_526() {
    let trusted = TestCa::new("backend-tls-trusted-ca");
    let other = TestCa::new("backend-tls-untrusted-ca");
    let backend = TlsBackend::start("tls-untrusted", options(&other, &["inst-u"])).await;
    let env = router_trusting(&trusted, "").await;
    let host = "tls-untrusted.backend-tls.example";
    env.register(&tls_route(host, backend.port(), "inst-u"))
        .await;
    env.sync().await;
    let r = env.get(host, "/").await;
    assert_eq!(r.status, 526, "{}", r.dump());
    assert_eq!(r.body_str(), "526 Invalid SSL Certificate\n");
    assert!(
        r.header("x-cf-routererror")
            .unwrap_or_default()
            .contains("x509: certificate signed by unknown authority"),
        "{}",
        r.dump()
    );
}

#[tokio::test]
async fn router_presents_backends_client_certificate() {
    let ca = TestCa::new("backend-tls-mtls-ca");
    let client_ca = TestCa::new("backend-tls-mtls-client-ca");
    let backend = TlsBackend::start(
        "tls-mtls",
        TlsBackendOptions {
            require_client_cert: Some(&client_ca),
            ..options(&ca, &["inst-m"])
        },
    )
    .await;
    let (cert, key) = client_ca.issue_client("gorouter");
    let env = router_trusting(
        &ca,
        &format!(
            "backends:\n  max_attempts: 3\n  max_conns: 500\n  cert_chain: {}\n  private_key: {}\n",
            yaml_quoted(&cert),
            yaml_quoted(&key)
        ),
    )
    .await;
    let host = "tls-mtls.backend-tls.example";
    let r = env
        .register_and_wait(&tls_route(host, backend.port(), "inst-m"))
        .await;
    assert_eq!(r.status, 200, "{}", r.dump());
    assert_eq!(r.header("x-client-cert"), Some("yes"));
}

#[tokio::test]
async fn backend_rejecting_the_router_without_a_client_certificate_is_496() {
    let ca = TestCa::new("backend-tls-496-ca");
    let client_ca = TestCa::new("backend-tls-496-client-ca");
    // TLS 1.2: the rejection is an alert during the handshake.
    let tls12 = TlsBackend::start(
        "tls-496-12",
        TlsBackendOptions {
            require_client_cert: Some(&client_ca),
            alpn: &[b"http/1.1"],
            ..options(&ca, &["inst-496"])
        },
    )
    .await;
    // TLS 1.3: the rejection arrives after the client's handshake, on the first read.
    let tls13 = TlsBackend::start(
        "tls-496-13",
        TlsBackendOptions {
            require_client_cert: Some(&client_ca),
            tls13_only: true,
            ..options(&ca, &["inst-496"])
        },
    )
    .await;
    let env = router_trusting(&ca, "").await;
    for (host, backend) in [
        ("tls-496-a.backend-tls.example", &tls12),
        ("tls-496-b.backend-tls.example", &tls13),
    ] {
        env.register(&tls_route(host, backend.port(), "inst-496"))
            .await;
        env.sync().await;
        let r = env.get(host, "/").await;
        assert_eq!(r.status, 496, "{host}: {}", r.dump());
        assert_eq!(r.body_str(), "496 SSL Certificate Required\n");
        assert!(
            r.header("x-cf-routererror")
                .unwrap_or_default()
                .starts_with("endpoint_failure (remote error: tls: "),
            "{}",
            r.dump()
        );
    }
}

#[tokio::test]
async fn http2_endpoint_is_spoken_to_in_http2() {
    let ca = TestCa::new("backend-tls-h2-ca");
    let backend = TlsBackend::start(
        "tls-h2",
        TlsBackendOptions {
            alpn: &[b"h2", b"http/1.1"],
            ..options(&ca, &["inst-h2"])
        },
    )
    .await;
    let env = router_trusting(&ca, "").await;
    let h2_host = "tls-h2.backend-tls.example";
    let mut msg = tls_route(h2_host, backend.port(), "inst-h2");
    msg["protocol"] = json!("http2");
    let r = env.register_and_wait(&msg).await;
    assert_eq!(r.status, 200, "{}", r.dump());
    assert_eq!(r.header("x-seen-version"), Some("HTTP/2.0"));
    for _ in 0..3 {
        let r = env.get(h2_host, "/again").await;
        assert_eq!(r.header("x-seen-version"), Some("HTTP/2.0"));
    }
    assert_eq!(
        backend.connections.load(Ordering::SeqCst),
        1,
        "requests share the one HTTP/2 connection"
    );
    // The same backend registered without `protocol: http2` is spoken to in HTTP/1.1, as
    // upstream's HTTP/1 transport offers no ALPN.
    let h1_host = "tls-h1.backend-tls.example";
    let r = env
        .register_and_wait(&tls_route(h1_host, backend.port(), "inst-h2"))
        .await;
    assert_eq!(r.header("x-seen-version"), Some("HTTP/1.1"));
}

/// A TLS app instance that accepts one websocket upgrade per connection and then echoes bytes.
async fn start_tls_websocket_backend(ca: &TestCa, san: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(&[san]));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if tls.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let upgrade = String::from_utf8_lossy(&head)
                    .to_ascii_lowercase()
                    .contains("\r\nupgrade: websocket");
                if !upgrade {
                    return;
                }
                let reply = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
                if tls.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 4096];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn websocket_to_a_tls_backend_is_spliced_both_ways() {
    use integration::HttpConn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = TestCa::new("backend-tls-ws-ca");
    let port = start_tls_websocket_backend(&ca, "inst-ws").await;
    let env = router_trusting(&ca, "").await;
    let host = "tls-ws.backend-tls.example";
    env.register(&tls_route(host, port, "inst-ws")).await;
    env.sync().await;

    let mut conn = HttpConn::connect(env.router.addr()).await;
    conn.send(
        format!("GET /ws HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").as_bytes(),
    )
    .await;
    let head = conn.read_head().await.expect("upgrade response");
    assert_eq!(head.status, 101, "{}", head.dump());
    let (mut stream, leftover) = conn.into_parts();
    assert!(leftover.is_empty(), "bytes after the 101: {leftover:?}");
    for msg in [&b"over TLS to the app"[..], &[0x5A; 50_000][..]] {
        stream.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            stream.read_exact(&mut back),
        )
        .await
        .expect("echo within 10 s")
        .expect("read echo");
        assert!(back == msg, "echoed bytes differ ({} bytes)", msg.len());
    }
}

/// A TLS app instance that reads the request head and hangs up without answering.
async fn start_tls_hang_up_backend(ca: &TestCa, san: &str) -> u16 {
    use tokio::io::AsyncReadExt;
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(&[san]));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut buf = [0u8; 4096];
                    let _ = tls.read(&mut buf).await;
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn a_tls_backend_that_hangs_up_is_502_after_the_attempts() {
    let ca = TestCa::new("backend-tls-hangup-ca");
    let port = start_tls_hang_up_backend(&ca, "inst-hangup").await;
    let env = router_trusting(&ca, "").await;
    let host = "tls-hangup.backend-tls.example";
    env.register(&tls_route(host, port, "inst-hangup")).await;
    env.sync().await;
    for (what, request) in [
        ("GET", integration::http::get_request(host, "/")),
        (
            "websocket",
            format!("GET /ws HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").into_bytes(),
        ),
    ] {
        let r = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            integration::http::request(env.router.addr(), &request),
        )
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 10 s"));
        assert_eq!(r.status, 502, "{what}: {}", r.dump());
        assert!(
            r.header("x-cf-routererror")
                .is_some_and(|v| v.starts_with("endpoint_failure")),
            "{what}: {}",
            r.dump()
        );
    }
}

#[tokio::test]
async fn an_http2_backend_that_resets_every_stream_is_502_each_time() {
    let ca = TestCa::new("backend-tls-h2-reset-ca");
    let backend = TlsBackend::start(
        "tls-h2-reset",
        TlsBackendOptions {
            alpn: &[b"h2"],
            fail_requests: true,
            ..options(&ca, &["inst-h2-reset"])
        },
    )
    .await;
    let env = router_trusting(&ca, "").await;
    let host = "tls-h2-reset.backend-tls.example";
    let mut msg = tls_route(host, backend.port(), "inst-h2-reset");
    msg["protocol"] = json!("http2");
    env.register(&msg).await;
    env.sync().await;
    // The second and third requests find the shared HTTP/2 connection open: their failures
    // must still count as attempts.
    for i in 0..3 {
        let r = tokio::time::timeout(std::time::Duration::from_secs(10), env.get(host, "/"))
            .await
            .unwrap_or_else(|_| panic!("request {i}: no answer within 10 s"));
        assert_eq!(r.status, 502, "request {i}: {}", r.dump());
    }
}
