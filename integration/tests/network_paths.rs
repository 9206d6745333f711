//! The network paths of the routing subsystem, end to end: one test per row of the table in the
//! spec's README ("Network paths of the routing subsystem"), plus, where the row names a
//! credential, a second test showing that a client without it is refused. Everything runs for
//! real: the built `gorouter`, `routing-api`, `tcp-router`, `route-emitter` and `locket`
//! binaries, a private `nats-server` per test (never the shared one on 4222), the shared MariaDB
//! on 127.0.0.1:3306 (a database of each test's own) and the fake UAA of `integration::uaa`. Every
//! server listens on a 127.0.0.1 ephemeral port (the table's well-known ports, 80, 443, 3000,
//! 3001, 4222, 8443, 8891, are roles here, not numbers); nothing leaves loopback, and every
//! process is killed when its wrapper drops.
//!
//! The route-emitter binary plays every emitter of the table: it is route-registrar shaped
//! (static routes from its config), so the "route emitter (on each cell)", the "global TCP
//! emitter" and the "local route emitter" are all this one binary with the matching routes.
//!
//! HTTP routing
//!
//! | from → to | port | protocol | security | test(s) |
//! |---|---|---|---|---|
//! | route emitter → NATS | 4222 | NATS | basic auth | [`route_emitter_to_nats_with_basic_auth`], [`route_emitter_to_nats_with_a_wrong_password_is_refused`] |
//! | load balancer → gorouter | 80 | HTTP | none | [`load_balancer_to_gorouter_http_port_80`] |
//! | load balancer → gorouter | 443 | HTTPS | TLS | [`load_balancer_to_gorouter_https_port_443`] |
//! | gorouter → NATS | 4222 | NATS | basic auth | [`gorouter_to_nats_with_basic_auth`], [`gorouter_to_nats_with_a_wrong_password_exits_1`] |
//! | gorouter → system components | varies | varies | none | [`gorouter_to_system_components`] |
//! | gorouter → app containers | varies | HTTP | optional TLS | [`gorouter_to_app_containers_over_http`], [`gorouter_to_app_containers_over_optional_tls`] |
//!
//! TCP routing
//!
//! | from → to | port | protocol | security | test(s) |
//! |---|---|---|---|---|
//! | cloud controller → Routing API (through LB and gorouter) | 443 | HTTPS | TLS and OAuth 2.0 | [`cloud_controller_to_routing_api_through_gorouter_https_with_oauth`] |
//! | Routing API → Locket | 8891 | gRPC over HTTPS | mutual TLS | [`routing_api_to_locket_with_mutual_tls`], [`locket_refuses_clients_without_a_trusted_certificate`] |
//! | Routing API → MySQL | 3306 | MySQL | MySQL native password | [`routing_api_to_mysql_with_native_password`], [`routing_api_with_a_wrong_mysql_password_does_not_start`] |
//! | Routing API → UAA | 8443 | HTTPS | TLS | [`routing_api_to_uaa_over_tls`], [`routing_api_refuses_an_untrusted_uaa_certificate`] |
//! | emitters, gorouter, tcp_router → Routing API | 3000 | HTTP | OAuth 2.0 | [`route_consumers_to_routing_api_port_3000_with_oauth`] |
//! | emitters, gorouter, tcp_router → Routing API | 3001 | HTTPS | mutual TLS | [`route_consumers_to_routing_api_port_3001_with_mutual_tls`] |
//! | emitters, gorouter, tcp_router → UAA | 8443 | HTTPS | TLS | [`route_consumers_to_uaa_over_tls`], [`route_consumers_refuse_an_untrusted_uaa_certificate`] |
//! | load balancer → tcp_router | 1024-65535 (configurable range) | TCP | none | [`load_balancer_to_tcp_router_port_range`] |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use integration::mariadb::{MariaDb, TestDatabase};
use integration::pki::{parse_certs, parse_key, yaml_quoted, TestCa};
use integration::route_emitter::{http_route, tcp_route, RouteEmitter, RouteEmitterBuilder};
use integration::routing_api::{
    tls_request, Database, Locket, MtlsFiles, RoutingApi, DEFAULT_GROUP, SYSTEM_DOMAIN,
};
use integration::tcp_router::{greeting, is_refused, Client, TcpBackend, TcpRouterBuilder};
use integration::uaa::{
    Endpoint, FakeUaa, ALL_ROUTING_SCOPES, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET,
};
use integration::util::claim_port;
use integration::{
    closed_port, eventually, free_port, route, EchoBackend, EchoedRequest, Gorouter,
    GorouterBuilder, NatsClient, NatsServer, TempDir,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Every handshake, request and read of this file's own clients gets this long.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a route may take to go from its source to a router.
const ROUTE_DEADLINE: Duration = Duration::from_secs(15);

/// The NATS credentials of the basic-auth tests.
const NATS_USER: &str = "nats-routing";
const NATS_PASS: &str = "nats-secret-4222";

/// TLS 1.2 suites for the ECDSA keys `TestCa` issues; gorouter requires `cipher_suites` with
/// `enable_ssl`.
const CIPHER_SUITES: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384";

/// The routing API's own route: `api.<system_domain>`, path `/routing`.
fn routing_api_host() -> String {
    format!("api.{SYSTEM_DOMAIN}")
}

// ---------------------------------------------------------------------------------------------
// TLS clients
// ---------------------------------------------------------------------------------------------

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client trusting only `ca`, presenting `client` (cert PEM, key PEM) if given,
/// offering `alpn`.
fn client_config(
    ca: &TestCa,
    client: Option<&(String, String)>,
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .expect("rustls protocol versions")
        .with_root_certificates(ca.root_store());
    let mut config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(parse_certs(cert), parse_key(key))
            .expect("client certificate and key"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS handshake with `addr` naming `server_name` (SNI for a DNS name).
async fn tls_connect(
    config: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    server_name: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
        .map_err(|e| format!("server name {server_name:?}: {e}"))?;
    match tokio::time::timeout(
        TIMEOUT,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => Err(format!("TLS handshake: {e}")),
        Err(_) => Err(format!("TLS handshake: no answer within {TIMEOUT:?}")),
    }
}

/// A response read by [`https_request`].
#[derive(Debug)]
struct HttpsResponse {
    status: u16,
    headers: http::HeaderMap,
    body: String,
}

impl HttpsResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One HTTP/1.1 request over TLS to `addr`, verifying the server against `ca` for
/// `server_name` (also the `Host`), with `Authorization: bearer <token>` if given and a JSON
/// `body` if not empty. `Err` says why there was no response (handshake, transport).
async fn https_request(
    addr: SocketAddr,
    ca: &TestCa,
    server_name: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Result<HttpsResponse, String> {
    let tls = tls_connect(client_config(ca, None, &[b"http/1.1"]), addr, server_name).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, server_name)
        .header(hyper::header::CONNECTION, "close");
    if let Some(t) = token {
        req = req.header(hyper::header::AUTHORIZATION, format!("bearer {t}"));
    }
    if !body.is_empty() {
        req = req.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(TIMEOUT, sender.send_request(req))
        .await
        .map_err(|_| format!("{method} {path}: no response within {TIMEOUT:?}"))?
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = tokio::time::timeout(TIMEOUT, resp.into_body().collect())
        .await
        .map_err(|_| "body: timed out".to_string())?
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(HttpsResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Opens an HTTP/2 connection over TLS (ALPN `h2`, as a gRPC client does), presenting
/// `client` if given, and reads the server's first frames: `Ok(bytes read)` when the server
/// talks, `Err` when the handshake fails or the server closes or resets the connection (a TLS
/// 1.3 server refusing a client certificate says so only after the client's handshake is done).
async fn grpc_tls_probe(
    addr: SocketAddr,
    ca: &TestCa,
    client: Option<&(String, String)>,
) -> Result<usize, String> {
    let mut tls = tls_connect(client_config(ca, client, &[b"h2"]), addr, "127.0.0.1").await?;
    // The HTTP/2 client preface and an empty SETTINGS frame.
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    tls.write_all(&hello)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = [0u8; 1024];
    match tokio::time::timeout(TIMEOUT, tls.read(&mut buf)).await {
        Ok(Ok(0)) => Err("closed without a frame".into()),
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => Err(format!("read: {e}")),
        Err(_) => Err(format!("no frame within {TIMEOUT:?}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Servers of the tests' own
// ---------------------------------------------------------------------------------------------

/// An app instance that speaks only HTTPS: answers every request with its name, counting
/// completed TLS handshakes and requests. Stops on drop.
struct TlsApp {
    addr: SocketAddr,
    handshakes: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsApp {
    /// Serves a certificate from `ca` for `san` (the instance identity gorouter checks).
    async fn start(name: &'static str, ca: &TestCa, san: &str) -> Self {
        let (cert, key) = ca.issue_server(&[san]);
        let acceptor = tokio_rustls::TlsAcceptor::from(integration::tcp_router::tls_server_config(
            &cert, &key, None,
        ));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("TLS app: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("TLS app address");
        let handshakes = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (h, r) = (handshakes.clone(), requests.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, h, r) = (acceptor.clone(), h.clone(), r.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    h.fetch_add(1, Ordering::SeqCst);
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let r = r.clone();
                            async move {
                                r.fetch_add(1, Ordering::SeqCst);
                                let proto = req
                                    .headers()
                                    .get("x-forwarded-proto")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("")
                                    .to_string();
                                let resp = hyper::Response::builder()
                                    .header("x-app", name)
                                    .header("x-seen-forwarded-proto", proto)
                                    .body(Full::new(Bytes::from(name)))
                                    .expect("TLS app response");
                                Ok::<_, Infallible>(resp)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            handshakes,
            requests,
            task,
        }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for TlsApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A MariaDB account of the test's own, authenticated with `mysql_native_password`, allowed
/// everything on one test database; dropped on drop.
struct NativePasswordUser {
    server: MariaDb,
    name: String,
    password: String,
}

impl NativePasswordUser {
    fn create(db: &TestDatabase, password: &str) -> Self {
        let server = db.server().clone();
        let name = format!("np_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let run = |sql: &str| {
            server
                .query(None, sql)
                .unwrap_or_else(|e| panic!("setting up MariaDB user {name}: {e}"))
        };
        run(&format!(
            "CREATE USER '{name}'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('{password}')"
        ));
        run(&format!(
            "GRANT ALL PRIVILEGES ON `{}`.* TO '{name}'@'%'",
            db.name()
        ));
        Self {
            server,
            name,
            password: password.to_string(),
        }
    }

    /// The server's record of how this account authenticates.
    fn plugin(&self) -> String {
        self.server
            .query(
                None,
                &format!(
                    "SELECT plugin FROM mysql.user WHERE user = '{}' AND host = '%'",
                    self.name
                ),
            )
            .unwrap_or_else(|e| panic!("{e}"))
            .first()
            .and_then(|r| r.first())
            .cloned()
            .unwrap_or_default()
    }

    /// The server as this user with `password`.
    fn login(&self, password: &str) -> MariaDb {
        MariaDb {
            user: self.name.clone(),
            password: password.to_string(),
            ..self.server.clone()
        }
    }

    /// routing-api's `sqldb` for `db` as this user with `password`.
    fn database(&self, db: &TestDatabase, password: &str) -> Database {
        Database::Mysql {
            host: self.server.host.clone(),
            port: self.server.port,
            schema: db.name().to_string(),
            user: self.name.clone(),
            password: password.to_string(),
        }
    }
}

impl Drop for NativePasswordUser {
    fn drop(&mut self) {
        let _ = self
            .server
            .query(None, &format!("DROP USER IF EXISTS '{}'@'%'", self.name));
    }
}

/// `N` consecutive ports, free on 127.0.0.1 now and never handed out before in this process,
/// below the kernel's ephemeral range (so no outgoing connection takes one meanwhile).
fn consecutive_ports<const N: usize>() -> [u16; N] {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768)
        .max(12_000);
    for _ in 0..200 {
        let r = u32::from_le_bytes(
            uuid::Uuid::new_v4().as_bytes()[..4]
                .try_into()
                .expect("four bytes"),
        );
        let base = 10_000 + r % (low - 10_000 - N as u32);
        let ports: [u16; N] = std::array::from_fn(|i| (base + i as u32) as u16);
        let free = ports
            .iter()
            .all(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok());
        if free && ports.iter().all(|p| claim_port(*p)) {
            return ports;
        }
    }
    panic!("no {N} consecutive free ports found below {low}");
}

// ---------------------------------------------------------------------------------------------
// Config pieces
// ---------------------------------------------------------------------------------------------

/// gorouter's HTTPS listener on `ssl_port` serving `cert` (cert PEM, key PEM).
fn https_listener_yaml(ssl_port: u16, cert: &(String, String)) -> String {
    format!(
        "enable_ssl: true\nssl_port: {ssl_port}\ncipher_suites: {CIPHER_SUITES}\n\
         client_cert_validation: none\ntls_pem:\n  - cert_chain: {}\n    private_key: {}\n",
        yaml_quoted(&cert.0),
        yaml_quoted(&cert.1)
    )
}

/// Waits until 127.0.0.1:`port` accepts TCP connections (gorouter's health check covers the
/// plain port only).
async fn wait_listening(port: u16) {
    eventually(
        &format!("127.0.0.1:{port} to accept connections"),
        TIMEOUT,
        || async move { TcpStream::connect(("127.0.0.1", port)).await.ok().map(drop) },
    )
    .await;
}

/// A fake UAA over HTTPS and its CA certificate written to `dir`.
async fn uaa_over_tls(dir: &Path) -> (FakeUaa, PathBuf) {
    let uaa = FakeUaa::start_tls().await;
    let ca = uaa.write_ca(dir);
    (uaa, ca)
}

/// A gorouter whose only route source is the Routing API described by `routing_api` (its
/// `routing_api` section), with `oauth`; `extra` YAML merged last.
fn gorouter_on_routing_api(routing_api: Value, oauth: Value, extra: &str) -> GorouterBuilder {
    let doc = json!({
        "nats": {"hosts": []},
        "routing_api": routing_api,
        "oauth": oauth,
    });
    // JSON is YAML. The NATS port is never used: `nats.hosts: []`.
    let mut b = GorouterBuilder::new(closed_port()).yaml(&doc.to_string());
    if !extra.is_empty() {
        b = b.yaml(extra);
    }
    b
}

/// tcp-router's `oauth` section for `uaa` (HTTPS, trusting the CA file `ca`).
fn tcp_router_oauth_yaml(uaa: &FakeUaa, ca: &Path) -> String {
    format!(
        "oauth:\n  token_endpoint: {}\n  port: {}\n  client_name: {DEFAULT_CLIENT_ID}\n  \
         client_secret: {DEFAULT_CLIENT_SECRET}\n  ca_certs: {}\n",
        uaa.token_endpoint(),
        uaa.port(),
        ca.display()
    )
}

/// The route-emitter's `routing_api` section: `api_url` with a UAA client for `uaa` (HTTPS,
/// trusting the CA file `ca`).
fn emitter_routing_api(api_url: &str, uaa: &FakeUaa, ca: &Path) -> Value {
    json!({
        "api_url": api_url,
        "oauth_url": uaa.base_url(),
        "client_id": DEFAULT_CLIENT_ID,
        "client_secret": DEFAULT_CLIENT_SECRET,
        "ca_certs": ca.display().to_string(),
        "max_ttl": "30s",
    })
}

/// The emitter's routes of the Routing API tests: an HTTP route sent to the Routing API
/// (`transport: routing_api`) for `host` → `app`, and a TCP route on `external` → `tcp_app`.
fn emitter_with_routes(
    section: Value,
    host: &str,
    app: &EchoBackend,
    external: u16,
    tcp_app: &TcpBackend,
) -> RouteEmitter {
    let mut http = http_route("web", host, app.port());
    http["transport"] = json!("routing_api");
    RouteEmitterBuilder::new(None)
        .set("routing_api", section)
        .route(http)
        .route(tcp_route("tcp", DEFAULT_GROUP, external, tcp_app.port()))
        .start()
}

/// A routing-api with token checks against `uaa` (HTTPS, CA file `uaa_ca`) on `db`, with the
/// mutual TLS listener's files from `ca` when given.
async fn secured_routing_api(
    db: Database,
    uaa: &FakeUaa,
    uaa_ca: &Path,
    ca: Option<&TestCa>,
) -> RoutingApi {
    let mut builder = RoutingApi::builder(db)
        .uaa(uaa)
        .yaml(&format!("oauth: {{ca_certs: '{}'}}", uaa_ca.display()));
    if let Some(ca) = ca {
        let files = MtlsFiles::write(ca, builder.dir());
        builder = builder.mtls(files);
    }
    builder.start().await
}

/// A UAA over TLS and a routing-api on SQLite in `dir` that verifies its tokens.
async fn sqlite_routing_api_behind_tls_uaa(dir: &Path) -> (FakeUaa, PathBuf, RoutingApi) {
    let (uaa, uaa_ca) = uaa_over_tls(dir).await;
    let api = secured_routing_api(
        Database::sqlite(dir.join("routing-api.db")),
        &uaa,
        &uaa_ca,
        None,
    )
    .await;
    (uaa, uaa_ca, api)
}

/// Asserts that `through` (a tcp-router port) reaches `backend`: its greeting, then an echo.
async fn assert_tcp_path(through: u16, backend: &TcpBackend) {
    let before = backend.accepted();
    let mut c = Client::connect(through)
        .await
        .unwrap_or_else(|e| panic!("connect to tcp-router port {through}: {e}"));
    assert_eq!(
        c.read_line().await.expect("the backend's greeting"),
        backend.name()
    );
    c.echo(b"over the tcp path\n").await.expect("echo");
    assert!(
        backend.accepted() > before,
        "the backend accepted the connection"
    );
}

/// Waits until a message on `sub` contains `needle`; returns it.
async fn message_containing(sub: &mut async_nats::Subscriber, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + ROUTE_DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, sub.next()).await {
            Ok(Some(msg)) => {
                let text = String::from_utf8_lossy(&msg.payload).into_owned();
                if text.contains(needle) {
                    return text;
                }
            }
            Ok(None) => panic!("the NATS subscription ended"),
            Err(_) => panic!(
                "no message containing {needle:?} within {ROUTE_DEADLINE:?}: the publisher \
                 never got onto the authenticated NATS server (see its output)"
            ),
        }
    }
}

// =============================================================================================
// HTTP routing
// =============================================================================================

/// route emitter → NATS, basic auth: the emitter, given the server's user and password,
/// publishes its route on `router.register` (an authenticated subscriber sees it), and a
/// gorouter on the same authenticated server routes to the app. (async-nats ignores credentials
/// in a server URL: the emitter must put them into `CONNECT` itself.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_emitter_to_nats_with_basic_auth() {
    let nats = NatsServer::start_with_user(NATS_USER, NATS_PASS).await;
    let subscriber = NatsClient::connect_with_user(&nats, NATS_USER, NATS_PASS).await;
    let mut registrations = subscriber
        .client()
        .subscribe("router.register")
        .await
        .expect("subscribe router.register");
    subscriber.flush().await;

    let app = EchoBackend::start("emitted-app").await;
    let host = "emitted.nats-auth.test";
    let _emitter = RouteEmitterBuilder::new(None)
        .set(
            "message_bus_servers",
            json!([{
                "host": format!("127.0.0.1:{}", nats.port()),
                "user": NATS_USER,
                "password": NATS_PASS,
            }]),
        )
        .route(http_route("emitted-app", host, app.port()))
        .start();

    let msg: Value = serde_json::from_str(&message_containing(&mut registrations, host).await)
        .expect("router.register is JSON");
    assert_eq!(msg["uris"], json!([host]), "{msg}");
    assert_eq!(msg["host"], "127.0.0.1", "{msg}");
    assert_eq!(msg["port"], app.port(), "{msg}");

    let router = Gorouter::builder(&nats)
        .yaml(&format!("nats: {{user: {NATS_USER}, pass: {NATS_PASS}}}"))
        .start()
        .await;
    let resp = router.wait_route(host).await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    assert_eq!(resp.header("X-Backend-Name"), Some("emitted-app"));
    assert!(app.request_count() >= 1, "the app saw the request");
}

/// route emitter → NATS, basic auth enforced: the server refuses a client with a wrong password
/// and one with none, and an emitter configured with a wrong password gets nothing onto
/// `router.register`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_emitter_to_nats_with_a_wrong_password_is_refused() {
    let nats = NatsServer::start_with_user(NATS_USER, NATS_PASS).await;
    let err = NatsClient::try_connect_with_user(&nats, NATS_USER, "not-the-password")
        .await
        .err()
        .expect("a wrong password is refused");
    assert!(err.to_lowercase().contains("authorization"), "{err}");
    let anonymous = tokio::time::timeout(TIMEOUT, async_nats::connect(nats.url())).await;
    assert!(
        matches!(anonymous, Ok(Err(_))),
        "a client without credentials is refused"
    );

    let subscriber = NatsClient::connect_with_user(&nats, NATS_USER, NATS_PASS).await;
    let mut registrations = subscriber
        .client()
        .subscribe("router.register")
        .await
        .expect("subscribe router.register");
    subscriber.flush().await;
    let app = EchoBackend::start("rejected-app").await;
    let mut emitter = RouteEmitterBuilder::new(None)
        .set(
            "message_bus_servers",
            json!([{
                "host": format!("127.0.0.1:{}", nats.port()),
                "user": NATS_USER,
                "password": "not-the-password",
            }]),
        )
        .route(http_route(
            "rejected-app",
            "rejected.nats-auth.test",
            app.port(),
        ))
        .start();
    // The route is registered every second once connected: three quiet seconds say it never is.
    let got = tokio::time::timeout(Duration::from_secs(3), registrations.next()).await;
    assert!(
        got.is_err(),
        "nothing may be published by an emitter with a wrong password, got {:?}",
        got.ok()
            .flatten()
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
    );
    assert!(emitter.try_exit().is_none(), "{}", emitter.output());
    assert!(
        !emitter.output().contains("Route Registrar.nats-connected"),
        "{}",
        emitter.output()
    );
}

/// load balancer → gorouter, port 80, plain HTTP: a request on the router's plain listener
/// reaches the app, which sees `X-Forwarded-Proto: http`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_to_gorouter_http_port_80() {
    let nats = NatsServer::start().await;
    let router = Gorouter::builder(&nats).start().await;
    let registrar = NatsClient::connect(&nats).await;
    let app = EchoBackend::start("plain-app").await;
    let host = "plain.lb.test";
    registrar.register(&route(host, app.port())).await;
    router.wait_route(host).await;

    let before = app.request_count();
    let resp = router.get(host, "/from-the-lb").await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    assert_eq!(resp.header("X-Backend-Name"), Some("plain-app"));
    let seen = EchoedRequest::parse(&resp.body);
    assert_eq!(seen.request_line, "GET /from-the-lb HTTP/1.1");
    assert_eq!(seen.header("Host"), Some(host));
    assert_eq!(seen.header("X-Forwarded-Proto"), Some("http"));
    assert_eq!(app.request_count(), before + 1, "the app saw the request");
}

/// load balancer → gorouter, port 443, TLS: a client that verifies the router's certificate
/// against its CA gets the app's answer (`X-Forwarded-Proto: https`); a client trusting another
/// CA does not get past the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_to_gorouter_https_port_443() {
    let ca = TestCa::new("np-router-ca");
    let host = "secure.lb.test";
    let ssl_port = free_port();
    let nats = NatsServer::start().await;
    let router = Gorouter::builder(&nats)
        .yaml(&https_listener_yaml(
            ssl_port,
            &ca.issue_server(&[host, "127.0.0.1"]),
        ))
        .start()
        .await;
    wait_listening(ssl_port).await;
    let registrar = NatsClient::connect(&nats).await;
    let app = EchoBackend::start("secure-app").await;
    registrar.register(&route(host, app.port())).await;
    router.wait_route(host).await;

    let ssl = SocketAddr::from(([127, 0, 0, 1], ssl_port));
    let before = app.request_count();
    let resp = https_request(ssl, &ca, host, "GET", "/over-tls", None, "")
        .await
        .unwrap_or_else(|e| panic!("HTTPS through gorouter: {e}\n{}", router.output()));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("x-backend-name"), Some("secure-app"));
    let seen = EchoedRequest::parse(resp.body.as_bytes());
    assert_eq!(seen.request_line, "GET /over-tls HTTP/1.1");
    assert_eq!(seen.header("X-Forwarded-Proto"), Some("https"));
    assert_eq!(app.request_count(), before + 1, "the app saw the request");

    let stranger = TestCa::new("np-stranger-ca");
    let refused = https_request(ssl, &stranger, host, "GET", "/", None, "").await;
    assert!(
        matches!(&refused, Err(e) if e.contains("handshake")),
        "a client not trusting the router's CA must fail the handshake: {refused:?}"
    );
    assert_eq!(app.request_count(), before + 1);
}

/// gorouter → NATS, basic auth: a router given the server's user and password connects,
/// and a route registered over the authenticated server is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gorouter_to_nats_with_basic_auth() {
    let nats = NatsServer::start_with_user(NATS_USER, NATS_PASS).await;
    let router = Gorouter::builder(&nats)
        .yaml(&format!("nats: {{user: {NATS_USER}, pass: {NATS_PASS}}}"))
        .start()
        .await;
    assert!(
        router.output().contains("Successfully-connected-to-nats"),
        "{}",
        router.output()
    );
    let registrar = NatsClient::connect_with_user(&nats, NATS_USER, NATS_PASS).await;
    let app = EchoBackend::start("nats-auth-app").await;
    let host = "app.nats-auth.test";
    registrar.register(&route(host, app.port())).await;
    let resp = router.wait_route(host).await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    assert_eq!(resp.header("X-Backend-Name"), Some("nats-auth-app"));
    assert_eq!(app.request_count(), 1, "the app saw the request");
}

/// gorouter → NATS, basic auth enforced: with a wrong password the server refuses the router,
/// which says `nats-connection-error` and exits 1 (upstream's mbus `Connect` failure), never
/// having connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gorouter_to_nats_with_a_wrong_password_exits_1() {
    let nats = NatsServer::start_with_user(NATS_USER, NATS_PASS).await;
    let (status, output) = Gorouter::builder(&nats)
        .yaml(&format!(
            "nats: {{user: {NATS_USER}, pass: not-the-password}}"
        ))
        .run_to_exit(Duration::from_secs(30))
        .await;
    assert_eq!(status.code(), Some(1), "{status}; output:\n{output}");
    assert!(output.contains("nats-connection-error"), "{output}");
    assert!(
        output.to_lowercase().contains("authorization"),
        "the server's refusal is reported: {output}"
    );
    assert!(
        !output.contains("Successfully-connected-to-nats"),
        "{output}"
    );
}

/// gorouter → system components, plain HTTP: the Routing API registers its own route
/// (`api.<system_domain>/routing` → its plain HTTP port) in its route table; a gorouter that
/// follows the Routing API (and has a NATS nobody publishes on) learns it from there and
/// forwards a request to the component's API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gorouter_to_system_components() {
    let dir = TempDir::new("np-system");
    let api = RoutingApi::start(Database::sqlite(dir.path().join("routing-api.db"))).await;
    let nats = NatsServer::start().await;
    let router = Gorouter::builder(&nats)
        .yaml(&format!(
            "routing_api: {{uri: 'http://127.0.0.1', port: {}, auth_disabled: true}}",
            api.http_port
        ))
        .start()
        .await;
    let host = routing_api_host();
    let resp = router
        .wait_route_path(&host, "/routing/v1/router_groups")
        .await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    let groups: Value = serde_json::from_slice(&resp.body).expect("router groups JSON");
    assert_eq!(groups[0]["name"], DEFAULT_GROUP, "{groups}");
    // The routing API's own request id header, next to the router's.
    assert!(
        resp.header("X-Vcap-Request-Id").is_some(),
        "{}",
        resp.dump()
    );

    // The route came from the Routing API: its address is the API's plain port.
    let routes: Value = serde_json::from_str(&router.routes().await.body_str()).expect("/routes");
    let own = &routes[format!("{host}/routing")];
    assert_eq!(
        own[0]["address"],
        format!("127.0.0.1:{}", api.http_port),
        "{routes}"
    );
    assert_eq!(own[0]["tls"], false, "{routes}");
}

/// gorouter → app containers, plain HTTP: a registered endpoint without `tls_port` is dialled
/// in the clear and the app sees the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gorouter_to_app_containers_over_http() {
    let nats = NatsServer::start().await;
    let router = Gorouter::builder(&nats).start().await;
    let registrar = NatsClient::connect(&nats).await;
    let app = EchoBackend::start("container").await;
    let host = "container.apps.test";
    let mut msg = route(host, app.port());
    msg["private_instance_id"] = json!("instance-plain");
    registrar.register(&msg).await;
    let resp = router.wait_route(host).await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    assert_eq!(resp.header("X-Backend-Name"), Some("container"));
    let seen = EchoedRequest::parse(&resp.body);
    assert_eq!(seen.header("Host"), Some(host));
    assert_eq!(app.request_count(), 1, "the app saw the request");
    assert_eq!(app.connection_count(), 1);
    let routes: Value = serde_json::from_str(&router.routes().await.body_str()).expect("/routes");
    assert_eq!(routes[host][0]["tls"], false, "{routes}");
}

/// gorouter → app containers, optional TLS: beside a plain endpoint, an endpoint registered
/// with `tls_port` and `server_cert_domain_san` is dialled over TLS (the app completes a
/// handshake and answers), its certificate checked against `ca_certs`; an app whose
/// certificate comes from a CA the router does not trust is refused (526).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gorouter_to_app_containers_over_optional_tls() {
    let ca = TestCa::new("np-instance-ca");
    let nats = NatsServer::start().await;
    let router = Gorouter::builder(&nats)
        .yaml(&format!("ca_certs:\n  - {}\n", yaml_quoted(&ca.cert_pem())))
        .start()
        .await;
    let registrar = NatsClient::connect(&nats).await;

    let plain = EchoBackend::start("plain-container").await;
    registrar
        .register(&route("plain.optional-tls.test", plain.port()))
        .await;
    let secure = TlsApp::start("tls-container", &ca, "instance-tls-1").await;
    let tls_msg = |host: &str, port: u16, san: &str| {
        json!({
            "host": "127.0.0.1",
            // Nothing listens on the plain port: only the TLS port can answer.
            "port": closed_port(),
            "tls_port": port,
            "uris": [host],
            "private_instance_id": san,
            "server_cert_domain_san": san,
        })
    };
    registrar
        .register(&tls_msg(
            "tls.optional-tls.test",
            secure.port(),
            "instance-tls-1",
        ))
        .await;

    let resp = router.wait_route("tls.optional-tls.test").await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    assert_eq!(resp.body_str(), "tls-container");
    assert_eq!(resp.header("x-seen-forwarded-proto"), Some("http"));
    assert!(
        secure.handshakes() >= 1,
        "the app completed a TLS handshake"
    );
    assert_eq!(secure.requests(), 1, "the app saw the request");
    let plain_resp = router.wait_route("plain.optional-tls.test").await;
    assert_eq!(plain_resp.header("X-Backend-Name"), Some("plain-container"));
    let routes: Value = serde_json::from_str(&router.routes().await.body_str()).expect("/routes");
    assert_eq!(routes["tls.optional-tls.test"][0]["tls"], true, "{routes}");
    assert_eq!(
        routes["plain.optional-tls.test"][0]["tls"], false,
        "{routes}"
    );

    // The certificate is verified: an instance with one from an unknown CA gets no request.
    let stranger = TestCa::new("np-stranger-ca");
    let impostor = TlsApp::start("impostor", &stranger, "instance-tls-2").await;
    registrar
        .register(&tls_msg(
            "impostor.optional-tls.test",
            impostor.port(),
            "instance-tls-2",
        ))
        .await;
    let refused = router.wait_route("impostor.optional-tls.test").await;
    assert_eq!(refused.status, 526, "{}", refused.dump());
    assert_eq!(
        impostor.requests(),
        0,
        "no request reaches an untrusted instance"
    );
}

// =============================================================================================
// TCP routing
// =============================================================================================

/// cloud controller → Routing API through the load balancer and gorouter, HTTPS with TLS and
/// OAuth 2.0: the Routing API's route is registered on NATS (as route_registrar does), the
/// client speaks TLS to gorouter's HTTPS listener (verifying its certificate), and gorouter
/// forwards to the Routing API, which accepts a bearer token from UAA and refuses a request
/// without one (401). The TCP route created this way is in the Routing API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_controller_to_routing_api_through_gorouter_https_with_oauth() {
    let dir = TempDir::new("np-cc");
    let (uaa, _, api) = sqlite_routing_api_behind_tls_uaa(dir.path()).await;

    let ca = TestCa::new("np-lb-ca");
    let host = routing_api_host();
    let ssl_port = free_port();
    let nats = NatsServer::start().await;
    let router = Gorouter::builder(&nats)
        .yaml(&https_listener_yaml(
            ssl_port,
            &ca.issue_server(&[&host, "127.0.0.1"]),
        ))
        .start()
        .await;
    wait_listening(ssl_port).await;
    let registrar = NatsClient::connect(&nats).await;
    registrar
        .register(&route(&format!("{host}/routing"), api.http_port))
        .await;
    router
        .wait_route_path(&host, "/routing/v1/router_groups")
        .await;

    let ssl = SocketAddr::from(([127, 0, 0, 1], ssl_port));
    let token = uaa.mint(&ALL_ROUTING_SCOPES, Duration::from_secs(600));
    let groups = https_request(
        ssl,
        &ca,
        &host,
        "GET",
        &format!("/routing/v1/router_groups?name={DEFAULT_GROUP}"),
        Some(&token),
        "",
    )
    .await
    .unwrap_or_else(|e| panic!("GET router_groups over HTTPS: {e}"));
    assert_eq!(groups.status, 200, "{groups:?}");
    let group: Value = serde_json::from_str(&groups.body).expect("router groups JSON");
    let guid = group[0]["guid"]
        .as_str()
        .expect("router group guid")
        .to_string();

    let external = 1030;
    let mapping = json!([{
        "router_group_guid": guid,
        "port": external,
        "backend_ip": "10.0.0.7",
        "backend_port": 61000,
        "ttl": 60,
    }])
    .to_string();
    let create = "/routing/v1/tcp_routes/create";
    let anonymous = https_request(ssl, &ca, &host, "POST", create, None, &mapping)
        .await
        .unwrap_or_else(|e| panic!("POST without a token over HTTPS: {e}"));
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    assert!(
        anonymous.body.contains("UnauthorizedError"),
        "{anonymous:?}"
    );
    assert!(
        api.tcp_routes().await.is_empty(),
        "nothing was created without a token"
    );

    let created = https_request(ssl, &ca, &host, "POST", create, Some(&token), &mapping)
        .await
        .unwrap_or_else(|e| panic!("POST with a token over HTTPS: {e}"));
    assert_eq!(created.status, 201, "{created:?}");
    let routes = api.tcp_routes().await;
    assert!(
        routes
            .iter()
            .any(|m| m["port"] == external && m["backend_ip"] == "10.0.0.7"),
        "{routes:?}"
    );
    // The requests went through gorouter.
    eventually(
        "the create request in gorouter's access log",
        TIMEOUT,
        || async {
            (router
                .access_log()
                .matches("POST /routing/v1/tcp_routes/create")
                .count()
                >= 2)
                .then_some(())
        },
    )
    .await;
}

/// Routing API → Locket, gRPC over mutual TLS: a routing-api given a client certificate from
/// Locket's CA takes its lock in Locket (the lock row, owned by this routing-api's uuid, is in
/// Locket's MariaDB database, not in routing-api's) and serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_api_to_locket_with_mutual_tls() {
    let locket_db = TestDatabase::create("np_locket");
    let s = locket_db.server();
    let dsn = format!(
        "{}{}@tcp({}:{})/{}",
        s.user,
        if s.password.is_empty() {
            String::new()
        } else {
            format!(":{}", s.password)
        },
        s.host,
        s.port,
        locket_db.name()
    );
    let ca = TestCa::new("np-locket-ca");
    let locket = Locket::start(&ca, "mysql", &dsn).await;
    let api_db = TestDatabase::create("np_locket_ra");
    let api = RoutingApi::builder(Database::mysql(&api_db))
        .locket(locket.client_files(&ca))
        .start()
        .await;
    assert!(
        api.log().contains("routing-api.locket-lock.acquired-lock"),
        "{}",
        api.log()
    );
    let owner = locket_db.query("SELECT owner FROM locks WHERE path = 'routing_api_lock'");
    assert_eq!(
        owner,
        vec![vec![api.uuid.clone()]],
        "the lock lives in Locket"
    );
    let tables = api_db.query("SHOW TABLES LIKE 'locks'");
    assert!(
        tables.is_empty(),
        "no lock in routing-api's own database: {tables:?}"
    );
    assert_eq!(api.get("/routing/v1/router_groups").await.status, 200);
}

/// Routing API → Locket, mutual TLS enforced: Locket completes a gRPC (HTTP/2) connection only
/// for a client presenting a certificate from its CA; a client without a certificate, or with
/// one from another CA, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locket_refuses_clients_without_a_trusted_certificate() {
    let ca = TestCa::new("np-locket-ca");
    let locket = Locket::start_sqlite(&ca).await;
    let addr: SocketAddr = locket.address().parse().expect("locket address");

    let trusted = ca.issue_client("routing-api");
    let ok = grpc_tls_probe(addr, &ca, Some(&trusted)).await;
    assert!(
        matches!(ok, Ok(n) if n > 0),
        "a client with a certificate from Locket's CA: {ok:?}"
    );
    let without = grpc_tls_probe(addr, &ca, None).await;
    assert!(
        without.is_err(),
        "a client without a certificate: {without:?}"
    );
    let foreign = TestCa::new("np-stranger-ca").issue_client("routing-api");
    let stranger = grpc_tls_probe(addr, &ca, Some(&foreign)).await;
    assert!(
        stranger.is_err(),
        "a client with a certificate from another CA: {stranger:?}"
    );
}

/// Routing API → MySQL, native password: routing-api logs in to MariaDB as an account
/// authenticated with `mysql_native_password`; its connections are that account's and a route
/// it accepts is a row of the `routes` table of the test database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_api_to_mysql_with_native_password() {
    let db = TestDatabase::create("np_mysql");
    let user = NativePasswordUser::create(&db, "np-native-pw-3306");
    assert_eq!(user.plugin(), "mysql_native_password");
    let api = RoutingApi::start(user.database(&db, &user.password)).await;

    let r = api
        .post(
            "/routing/v1/routes",
            r#"[{"route":"stored.mysql-path.test","port":8080,"ip":"10.0.0.9","ttl":120,"log_guid":"stored-app"}]"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.dump());
    let rows = db.query(
        "SELECT route, port, ip, log_guid FROM routes WHERE route = 'stored.mysql-path.test'",
    );
    assert_eq!(
        rows,
        vec![vec![
            "stored.mysql-path.test".to_string(),
            "8080".into(),
            "10.0.0.9".into(),
            "stored-app".into(),
        ]]
    );
    let sessions = db.query(&format!(
        "SELECT COUNT(*) FROM information_schema.processlist WHERE user = '{}' AND db = '{}'",
        user.name,
        db.name()
    ));
    assert_ne!(
        sessions[0][0], "0",
        "routing-api's connections are the account's"
    );
}

/// Routing API → MySQL, native password enforced: the server refuses the account with a wrong
/// password, and a routing-api configured with it stops at start-up
/// (`routing-api.failed-initialize-sql-connection`) without ever serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_api_with_a_wrong_mysql_password_does_not_start() {
    let db = TestDatabase::create("np_mysql_bad");
    let user = NativePasswordUser::create(&db, "np-native-pw-3306");
    assert!(user.login(&user.password).query(None, "SELECT 1").is_ok());
    let refused = user.login("not-the-password").query(None, "SELECT 1");
    assert!(
        matches!(&refused, Err(e) if e.contains("Access denied")),
        "{refused:?}"
    );

    let mut api = RoutingApi::builder(user.database(&db, "not-the-password")).spawn();
    let status = api.wait_exit(Duration::from_secs(30)).await;
    assert!(!status.success(), "{status}; log:\n{}", api.log());
    let log = api.log();
    assert!(
        log.contains("routing-api.failed-initialize-sql-connection"),
        "{log}"
    );
    assert!(!log.contains("\"routing-api.started\""), "{log}");
    let tables = db.query("SHOW TABLES");
    assert!(tables.is_empty(), "nothing was written: {tables:?}");
}

/// Routing API → UAA over TLS: at start-up routing-api fetches UAA's issuer and verification
/// key over HTTPS (trusting `oauth.ca_certs`), then accepts a token UAA signed and refuses a
/// request without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_api_to_uaa_over_tls() {
    let dir = TempDir::new("np-ra-uaa");
    let (uaa, _, api) = sqlite_routing_api_behind_tls_uaa(dir.path()).await;
    assert!(uaa.base_url().starts_with("https://"));
    assert!(
        uaa.hits(Endpoint::OpenIdConfiguration) >= 1,
        "{:?}",
        uaa.all_hits()
    );
    assert!(
        uaa.hits(Endpoint::TokenKey) + uaa.hits(Endpoint::TokenKeys) >= 1,
        "{:?}",
        uaa.all_hits()
    );
    let log = api.log();
    assert!(
        log.contains("routing-api.fetched-verification-key"),
        "{log}"
    );

    let token = uaa.mint(&["routing.routes.read"], Duration::from_secs(600));
    let auth = format!("bearer {token}");
    let ok = api
        .request(
            "GET",
            "/routing/v1/routes",
            &[("Authorization", &auth)],
            b"",
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.dump());
    let anonymous = api.request("GET", "/routing/v1/routes", &[], b"").await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.dump());
    // A token signed by someone else's key is refused too: the key came from this UAA.
    let other = FakeUaa::start().await;
    let forged = format!(
        "bearer {}",
        other.mint_with_issuer(uaa.issuer(), &["routing.routes.read"])
    );
    let refused = api
        .request(
            "GET",
            "/routing/v1/routes",
            &[("Authorization", &forged)],
            b"",
        )
        .await;
    assert_eq!(refused.status, 401, "{}", refused.dump());
}

/// Routing API → UAA, TLS enforced: a routing-api that does not trust UAA's certificate (no
/// `oauth.ca_certs`: the public roots) fails the handshake, so no request reaches UAA, and it
/// exits at start-up (`routing-api.creating-uaa-client`) without serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_api_refuses_an_untrusted_uaa_certificate() {
    let dir = TempDir::new("np-ra-uaa-untrusted");
    let uaa = FakeUaa::start_tls().await;
    let mut api = RoutingApi::builder(Database::sqlite(dir.path().join("routing-api.db")))
        .uaa(&uaa)
        .spawn();
    let status = api.wait_exit(Duration::from_secs(30)).await;
    assert!(!status.success(), "{status}; log:\n{}", api.log());
    let log = api.log();
    assert!(log.contains("routing-api.creating-uaa-client"), "{log}");
    assert!(!log.contains("\"routing-api.started\""), "{log}");
    assert!(
        uaa.all_hits().iter().all(|(_, n)| *n == 0),
        "no request got past TLS: {:?}",
        uaa.all_hits()
    );
}

/// global TCP emitter / local route emitter, gorouter and tcp_router → Routing API on its plain
/// HTTP port (3000) with OAuth 2.0: the port refuses a request without a token (401); the
/// emitter, holding a UAA token, writes an HTTP route and a TCP route; gorouter (no NATS at
/// all) and tcp-router, holding tokens too, read them and carry traffic to both apps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_consumers_to_routing_api_port_3000_with_oauth() {
    let dir = TempDir::new("np-3000");
    let (uaa, uaa_ca) = uaa_over_tls(dir.path()).await;
    let db = TestDatabase::create("np_3000");
    let api = secured_routing_api(Database::mysql(&db), &uaa, &uaa_ca, None).await;
    for path in [
        "/routing/v1/routes",
        "/routing/v1/tcp_routes",
        "/routing/v1/router_groups",
    ] {
        let r = api.request("GET", path, &[], b"").await;
        assert_eq!(r.status, 401, "GET {path} without a token:\n{}", r.dump());
    }

    let router = gorouter_on_routing_api(
        json!({"uri": "http://127.0.0.1", "port": api.http_port, "auth_disabled": false}),
        uaa.gorouter_oauth(&uaa_ca),
        "",
    )
    .start()
    .await;
    let tcp_router = TcpRouterBuilder::for_api_port(api.http_port)
        .yaml(&format!(
            "routing_api: {{uri: 'http://127.0.0.1', port: {}, auth_disabled: false}}\n{}",
            api.http_port,
            tcp_router_oauth_yaml(&uaa, &uaa_ca)
        ))
        .start()
        .await;

    let app = EchoBackend::start("api-web-app").await;
    let tcp_app = TcpBackend::echo("api-tcp-app").await;
    let external = free_port();
    let host = "web.port-3000.test";
    let _emitter = emitter_with_routes(
        emitter_routing_api(&api.url(), &uaa, &uaa_ca),
        host,
        &app,
        external,
        &tcp_app,
    );

    let resp = router.wait_route(host).await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    assert_eq!(resp.header("X-Backend-Name"), Some("api-web-app"));
    tcp_router.wait_routed(external, ROUTE_DEADLINE).await;
    assert_tcp_path(external, &tcp_app).await;
    // Both routes are in the Routing API, written by the emitter.
    assert!(api.http_routes().await.iter().any(|r| r["route"] == host));
    assert!(api.tcp_routes().await.iter().any(|m| m["port"] == external));
    assert!(uaa.hits(Endpoint::Token) >= 3, "{:?}", uaa.all_hits());
}

/// ... → Routing API on its mutual TLS port (3001): the emitter, gorouter and tcp-router are
/// given only the mTLS port and a client certificate from the Routing API's CA (and UAA
/// tokens, which that port checks too); routes flow as on 3000. The port refuses a client
/// without a certificate, or with one from another CA, even holding a valid token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_consumers_to_routing_api_port_3001_with_mutual_tls() {
    let dir = TempDir::new("np-3001");
    let (uaa, uaa_ca) = uaa_over_tls(dir.path()).await;
    let ca = TestCa::new("np-routing-api-ca");
    let db = TestDatabase::create("np_3001");
    let api = secured_routing_api(Database::mysql(&db), &uaa, &uaa_ca, Some(&ca)).await;
    let token = api.token().expect("a token").to_string();
    let path = "/routing/v1/router_groups";

    let without = tls_request(api.mtls_addr(), &ca, None, path, Some(&token)).await;
    assert!(without.is_err(), "no client certificate: {without:?}");
    let (foreign_cert, foreign_key) = TestCa::new("np-stranger-ca").issue_client("intruder");
    let foreign = tls_request(
        api.mtls_addr(),
        &ca,
        Some((&foreign_cert, &foreign_key)),
        path,
        Some(&token),
    )
    .await;
    assert!(
        foreign.is_err(),
        "a certificate from another CA: {foreign:?}"
    );
    let (cert, key) = ca.issue_client("operator");
    let allowed = tls_request(
        api.mtls_addr(),
        &ca,
        Some((&cert, &key)),
        path,
        Some(&token),
    )
    .await
    .expect("a client certificate from the Routing API's CA");
    assert_eq!(allowed.status, 200, "{allowed:?}");

    let (router_cert, router_key) = ca.issue_client("gorouter");
    let router = gorouter_on_routing_api(
        json!({
            "uri": "https://127.0.0.1",
            "port": api.mtls_port,
            "auth_disabled": false,
            "ca_certs": ca.cert_pem(),
            "cert_chain": router_cert,
            "private_key": router_key,
        }),
        uaa.gorouter_oauth(&uaa_ca),
        "",
    )
    .start()
    .await;

    let tcp_dir = dir.path().join("tcp-router");
    std::fs::create_dir_all(&tcp_dir).expect("tcp-router cert dir");
    let tcp_files = ca.write_client(&tcp_dir, "tcp-router");
    let tcp_router = TcpRouterBuilder::for_api_port(api.mtls_port)
        .yaml(&format!(
            "routing_api:\n  uri: https://127.0.0.1\n  port: {}\n  auth_disabled: false\n  \
             ca_cert_path: {}\n  client_cert_path: {}\n  client_private_key_path: {}\n{}",
            api.mtls_port,
            tcp_files.ca.display(),
            tcp_files.cert.display(),
            tcp_files.key.display(),
            tcp_router_oauth_yaml(&uaa, &uaa_ca)
        ))
        .start()
        .await;

    let emitter_dir = dir.path().join("emitter");
    std::fs::create_dir_all(&emitter_dir).expect("emitter cert dir");
    let emitter_files = ca.write_client(&emitter_dir, "route-emitter");
    let mut section = emitter_routing_api(
        &format!("https://127.0.0.1:{}", api.mtls_port),
        &uaa,
        &uaa_ca,
    );
    section["client_cert_path"] = json!(emitter_files.cert);
    section["client_private_key_path"] = json!(emitter_files.key);
    section["server_ca_cert_path"] = json!(emitter_files.ca);

    let app = EchoBackend::start("mtls-web-app").await;
    let tcp_app = TcpBackend::echo("mtls-tcp-app").await;
    let external = free_port();
    let host = "web.port-3001.test";
    let _emitter = emitter_with_routes(section, host, &app, external, &tcp_app);

    let resp = router.wait_route(host).await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    assert_eq!(resp.header("X-Backend-Name"), Some("mtls-web-app"));
    tcp_router.wait_routed(external, ROUTE_DEADLINE).await;
    assert_tcp_path(external, &tcp_app).await;
    assert!(api.http_routes().await.iter().any(|r| r["route"] == host));
    assert!(api.tcp_routes().await.iter().any(|m| m["port"] == external));
}

/// ... → UAA over TLS: gorouter, tcp-router and the emitter each fetch a token from UAA's
/// HTTPS endpoint (the token count grows as each one starts), and the tokens they got are
/// good: the Routing API, which checks them, serves each of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_consumers_to_uaa_over_tls() {
    let dir = TempDir::new("np-uaa");
    let (uaa, uaa_ca, api) = sqlite_routing_api_behind_tls_uaa(dir.path()).await;
    assert!(uaa.base_url().starts_with("https://"));
    assert_eq!(uaa.hits(Endpoint::Token), 0, "routing-api fetches no token");

    let router = gorouter_on_routing_api(
        json!({"uri": "http://127.0.0.1", "port": api.http_port, "auth_disabled": false}),
        uaa.gorouter_oauth(&uaa_ca),
        "",
    )
    .start()
    .await;
    let after_router = uaa.hits(Endpoint::Token);
    assert!(
        after_router >= 1,
        "gorouter fetched a token: {:?}",
        uaa.all_hits()
    );
    // The router got its routes with it: the Routing API's own route is served.
    let own = router
        .wait_route_path(&routing_api_host(), "/routing/v1/router_groups")
        .await;
    assert_eq!(
        own.status, 401,
        "the router forwards; the API wants the caller's token"
    );

    let tcp_router = TcpRouterBuilder::for_api_port(api.http_port)
        .yaml(&format!(
            "routing_api: {{uri: 'http://127.0.0.1', port: {}, auth_disabled: false}}\n{}",
            api.http_port,
            tcp_router_oauth_yaml(&uaa, &uaa_ca)
        ))
        .start()
        .await;
    let after_tcp_router = uaa.hits(Endpoint::Token);
    assert!(
        after_tcp_router > after_router,
        "tcp-router fetched a token: {:?}",
        uaa.all_hits()
    );

    let tcp_app = TcpBackend::echo("uaa-tcp-app").await;
    let external = free_port();
    let _emitter = RouteEmitterBuilder::new(None)
        .set(
            "routing_api",
            emitter_routing_api(&api.url(), &uaa, &uaa_ca),
        )
        .route(tcp_route("tcp", DEFAULT_GROUP, external, tcp_app.port()))
        .start();
    tcp_router.wait_routed(external, ROUTE_DEADLINE).await;
    assert!(
        uaa.hits(Endpoint::Token) > after_tcp_router,
        "the emitter fetched a token: {:?}",
        uaa.all_hits()
    );
    assert_eq!(greeting(external).await.expect("routed"), "uaa-tcp-app");
}

/// ... → UAA, TLS enforced: a consumer that does not trust UAA's certificate gets no token (no
/// request gets past the handshake): gorouter exits 1 (`unable-to-fetch-token`), tcp-router
/// keeps running without ever listing or subscribing to routes, and the emitter writes nothing
/// to the Routing API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_consumers_refuse_an_untrusted_uaa_certificate() {
    let dir = TempDir::new("np-uaa-untrusted");
    let (uaa, _, api) = sqlite_routing_api_behind_tls_uaa(dir.path()).await;
    // Every consumer trusts another CA for UAA.
    let stranger_dir = dir.path().join("stranger");
    std::fs::create_dir_all(&stranger_dir).expect("stranger CA dir");
    let wrong_ca = TestCa::new("np-stranger-ca").write_ca(&stranger_dir);

    let (status, output) = gorouter_on_routing_api(
        json!({"uri": "http://127.0.0.1", "port": api.http_port, "auth_disabled": false}),
        uaa.gorouter_oauth(&wrong_ca),
        "token_fetcher_retry_interval: 100ms",
    )
    .run_to_exit(Duration::from_secs(30))
    .await;
    assert_eq!(status.code(), Some(1), "{status}; output:\n{output}");
    assert!(output.contains("unable-to-fetch-token"), "{output}");

    let mut tcp_router = TcpRouterBuilder::for_api_port(api.http_port)
        .yaml(&format!(
            "routing_api: {{uri: 'http://127.0.0.1', port: {}, auth_disabled: false}}\n{}",
            api.http_port,
            tcp_router_oauth_yaml(&uaa, &wrong_ca)
        ))
        .spawn();
    let tcp_app = TcpBackend::echo("unreached-tcp-app").await;
    let external = free_port();
    let emitter = RouteEmitterBuilder::new(None)
        .set(
            "routing_api",
            emitter_routing_api(&api.url(), &uaa, &wrong_ca),
        )
        .route(tcp_route("tcp", DEFAULT_GROUP, external, tcp_app.port()))
        .start();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        api.tcp_routes().await.is_empty(),
        "the emitter wrote nothing:\n{}",
        emitter.output()
    );
    // tcp-router keeps running (and retrying) but never lists or subscribes to routes.
    assert!(tcp_router.try_exit().is_none(), "{}", tcp_router.output());
    for series in [
        "tcp_router_routing_api_syncs_total",
        "tcp_router_routing_api_subscriptions_total",
    ] {
        assert_eq!(
            tcp_router.metric(series).await,
            Some(0.0),
            "{series}:\n{}",
            tcp_router.output()
        );
    }
    assert!(is_refused(external).await);
    assert_eq!(
        uaa.hits(Endpoint::Token),
        0,
        "no token request got past TLS: {:?}",
        uaa.all_hits()
    );
}

/// load balancer → tcp_router, a port of the router group's configurable range, plain TCP: a
/// router group with its own `reservable_ports` range, a TCP route on a port inside it, and a
/// client's bytes reach the TCP app through tcp-router and come back; the range's other ports,
/// without routes, stay closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_to_tcp_router_port_range() {
    let [first, routed, last] = consecutive_ports::<3>();
    let range = format!("{first}-{last}");
    let dir = TempDir::new("np-tcp-range");
    let api = RoutingApi::builder(Database::sqlite(dir.path().join("routing-api.db")))
        .yaml(&format!(
            "router_groups:\n- name: {DEFAULT_GROUP}\n  type: tcp\n  reservable_ports: 1024-1033\n\
             - name: lb-range\n  type: tcp\n  reservable_ports: {range}\n"
        ))
        .start()
        .await;
    let groups = api
        .get_json("/routing/v1/router_groups?name=lb-range")
        .await;
    assert_eq!(groups[0]["reservable_ports"], range.as_str(), "{groups}");
    let guid = groups[0]["guid"].as_str().expect("guid").to_string();

    let tcp_router = TcpRouterBuilder::new(&api).start().await;
    let app = TcpBackend::echo("range-tcp-app").await;
    let r = api
        .post(
            "/routing/v1/tcp_routes/create",
            &json!([integration::tcp_router::tcp_route(
                &guid,
                routed,
                app.port()
            )])
            .to_string(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.dump());

    tcp_router.wait_routed(routed, ROUTE_DEADLINE).await;
    assert_tcp_path(routed, &app).await;
    for port in [first, last] {
        assert!(
            is_refused(port).await,
            "port {port} of the range has no route and must stay closed"
        );
    }
}
