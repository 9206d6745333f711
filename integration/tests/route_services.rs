//! Route services (A.10) end to end, with a real route-service process (`route-service`):
//! refused while disabled, the full round trip router -> route service -> router -> app, the
//! route service over mutual TLS, signatures that are expired, tampered, rotated or for
//! another route, websocket refusal, no sticky cookie from the first pass, hairpinning through
//! the internal server, and strict signature validation.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gorouter::route_service::signature::SignatureKey;
use integration::http::build_request;
use integration::pki::{yaml_quoted, TestCa};
use integration::route_service::{RouteServiceOptions, RouteServiceProcess};
use integration::{route, EchoBackend, EchoedRequest, RawResponse, TempDir, TestEnv};
use serde_json::json;

const SECRET: &str = "route-services-test-secret";

/// A TCP listener that only counts the connections made to it: the route service that must
/// never be contacted.
async fn counting_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (port, count)
}

/// An HTTPS server (certificate for 127.0.0.1 from `ca`) answering every request with the
/// request head it received as the body.
async fn tls_head_echo(ca: &TestCa) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(&["127.0.0.1"]));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    head.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
                let _ = s.write_all(&head).await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

/// A router with route services on, trusting `ca` for route services, plus `extra` YAML.
async fn router_with_route_services(ca: &TestCa, extra: &str) -> TestEnv {
    TestEnv::start(&format!(
        "route_services_secret: {SECRET}\nroute_services_recommend_https: false\nca_certs: [{}]\n{extra}",
        yaml_quoted(&ca.cert_pem())
    ))
    .await
}

fn bound_route(uri: &str, app_port: u16, route_service_url: &str) -> serde_json::Value {
    let mut msg = route(uri, app_port);
    msg["route_service_url"] = json!(route_service_url);
    msg
}

async fn get_with(env: &TestEnv, host: &str, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    let mut all = vec![("Host", host)];
    all.extend_from_slice(headers);
    env.router
        .request(&build_request("GET", path, &all, b""))
        .await
}

fn echoed(resp: &RawResponse) -> EchoedRequest {
    EchoedRequest::parse(&resp.body)
}

#[tokio::test(flavor = "multi_thread")]
async fn route_service_route_is_refused_when_route_services_are_disabled() {
    let env = TestEnv::start("").await;
    let app = EchoBackend::start("app").await;
    let (rs_port, rs_connections) = counting_listener().await;
    let msg = bound_route(
        "closed.rs.test",
        app.port(),
        &format!("https://127.0.0.1:{rs_port}/auth"),
    );
    let resp = env.register_and_wait(&msg).await;

    assert_eq!(resp.status, 502, "{}", resp.dump());
    assert_eq!(
        resp.header("X-Cf-Routererror"),
        Some("route_service_unsupported")
    );
    assert_eq!(
        resp.header("Content-Type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(
        resp.body_str(),
        "502 Bad Gateway: Support for route services is disabled.\n"
    );
    let again = env.get("closed.rs.test", "/some/path").await;
    assert_eq!(again.status, 502);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(app.request_count(), 0, "the app must never see the request");
    assert_eq!(rs_connections.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_goes_through_the_route_service_and_back_to_the_app() {
    let ca = TestCa::new("rs-ca");
    let dir = TempDir::new("rs-trip");
    let env = router_with_route_services(&ca, "").await;
    let app = EchoBackend::start("app").await;
    let rs = RouteServiceProcess::start(
        RouteServiceOptions::tls(env.router.addr(), "auth-svc", &ca, dir.path()),
        Some(&ca),
    )
    .await;
    let msg = bound_route(
        "trip.rs.test",
        app.port(),
        &format!("https://127.0.0.1:{}/check?svc=1", rs.port()),
    );
    env.register_and_wait(&msg).await;
    let before = rs.requests().await;

    let resp = get_with(
        &env,
        "trip.rs.test",
        "/some/path?q=1",
        &[("X-Client", "kept")],
    )
    .await;
    assert_eq!(resp.status, 200, "{}\n{}", resp.dump(), rs.output());
    assert_eq!(resp.header("X-Route-Service"), Some("auth-svc"));
    assert!(resp.header("X-Cf-Proxy-Signature").is_none());
    let seen = echoed(&resp);
    assert_eq!(
        seen.request_line, "GET /some/path?q=1 HTTP/1.1",
        "the app gets the original target"
    );
    assert_eq!(seen.header("Host"), Some("trip.rs.test"));
    assert_eq!(
        seen.header("X-Route-Service"),
        Some("auth-svc"),
        "added by the route service"
    );
    assert_eq!(
        seen.header("X-Client"),
        Some("kept"),
        "the client's headers go through"
    );
    for gone in [
        "X-CF-Forwarded-Url",
        "X-CF-Proxy-Signature",
        "X-CF-Proxy-Metadata",
    ] {
        assert!(seen.header(gone).is_none(), "{gone} reached the app");
    }
    assert_eq!(rs.requests().await, before + 1, "one first pass");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_route_service_gets_the_forwarded_url_and_a_signature_that_opens_with_the_secret() {
    let ca = TestCa::new("rs-ca");
    let env = router_with_route_services(&ca, "").await;
    let app = EchoBackend::start("app").await;
    // The "route service" here echoes the request head it got: that is the answer.
    let rs_port = tls_head_echo(&ca).await;
    let msg = bound_route(
        "headers.rs.test",
        app.port(),
        &format!("https://127.0.0.1:{rs_port}/rs/path?a=b"),
    );
    env.client.register(&msg).await;
    let asked = SystemTime::now();
    let resp = env.router.wait_status("headers.rs.test", 200).await;
    let answered = SystemTime::now();
    let sent = EchoedRequest::parse_head(&resp.body);
    assert_eq!(
        sent.request_line, "GET /rs/path?a=b HTTP/1.1",
        "the route service URL's path and query"
    );
    assert_eq!(sent.header("Host"), Some(&*format!("127.0.0.1:{rs_port}")));
    assert_eq!(
        sent.header("X-CF-Forwarded-Url"),
        Some("http://headers.rs.test/")
    );
    let key = SignatureKey::derive(SECRET);
    let contents = key
        .open(
            sent.header("X-CF-Proxy-Signature").unwrap(),
            sent.header("X-CF-Proxy-Metadata").unwrap(),
        )
        .expect("the signature opens with upstream's algorithm and the secret");
    assert_eq!(contents.forwarded_url, "http://headers.rs.test/");
    // Signed when the router sent the request (nanosecond RFC 3339): between the test's
    // clock readings around the request that got it, however long that took.
    assert!(
        asked <= contents.requested_time && contents.requested_time <= answered,
        "requested_time {:?} is outside the request's {asked:?}..={answered:?}",
        contents.requested_time
    );
    assert_eq!(
        app.request_count(),
        0,
        "the first pass never goes to the app"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_route_service_is_reached_over_mutual_tls_with_the_configured_client_certificate() {
    let ca = TestCa::new("rs-mtls-ca");
    let dir = TempDir::new("rs-mtls");
    let (cert, key) = ca.issue_client("gorouter-rs-client");
    let env = router_with_route_services(
        &ca,
        &format!(
            "route_services: {{cert_chain: {}, private_key: {}}}\n",
            yaml_quoted(&cert),
            yaml_quoted(&key)
        ),
    )
    .await;
    let app = EchoBackend::start("app").await;
    let mut opts = RouteServiceOptions::tls(env.router.addr(), "mtls-svc", &ca, dir.path());
    opts.client_ca = Some(ca.write_ca(dir.path()));
    let rs = RouteServiceProcess::start(opts, Some(&ca)).await;
    let msg = bound_route(
        "mtls.rs.test",
        app.port(),
        &format!("https://127.0.0.1:{}", rs.port()),
    );
    env.client.register(&msg).await;
    let resp = env.router.wait_status("mtls.rs.test", 200).await;
    assert_eq!(
        echoed(&resp).header("X-Route-Service-Client-Cn"),
        Some("gorouter-rs-client"),
        "the route service verified the router's client certificate\n{}",
        rs.output()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_client_certificate_a_mutual_tls_route_service_fails_the_request() {
    let ca = TestCa::new("rs-mtls-ca");
    let dir = TempDir::new("rs-no-cert");
    let env = router_with_route_services(&ca, "").await;
    let app = EchoBackend::start("app").await;
    let mut opts = RouteServiceOptions::tls(env.router.addr(), "mtls-svc", &ca, dir.path());
    opts.client_ca = Some(ca.write_ca(dir.path()));
    let rs = RouteServiceProcess::start(opts, Some(&ca)).await;
    let msg = bound_route(
        "nocert.rs.test",
        app.port(),
        &format!("https://127.0.0.1:{}", rs.port()),
    );
    let resp = env.register_and_wait(&msg).await;
    assert!(
        matches!(resp.status, 496 | 502),
        "a rejected client certificate is an endpoint failure: {}",
        resp.dump()
    );
    assert_eq!(app.request_count(), 0);
}

/// Sends a request to `host` as a route service would: signed with `key` at `at` for `url`.
async fn returning(
    env: &TestEnv,
    host: &str,
    key: &SignatureKey,
    url: &str,
    at: SystemTime,
) -> RawResponse {
    let signed = key.sign(url, at);
    get_with(
        env,
        host,
        "/",
        &[
            ("X-CF-Forwarded-Url", url),
            ("X-CF-Proxy-Signature", &signed.signature),
            ("X-CF-Proxy-Metadata", &signed.metadata),
        ],
    )
    .await
}

/// A router with route services, an app bound to a route service that is never reached (the
/// tests play the route service themselves), and the route registered.
async fn app_behind_unreachable_route_service(extra: &str, host: &str) -> (TestEnv, EchoBackend) {
    let ca = TestCa::new("rs-ca");
    let env = router_with_route_services(&ca, extra).await;
    let app = EchoBackend::start("app").await;
    let (rs_port, _) = counting_listener().await;
    let msg = bound_route(host, app.port(), &format!("https://127.0.0.1:{rs_port}"));
    env.register_and_wait(&msg).await;
    (env, app)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_valid_signature_lets_the_request_through_to_the_app_without_the_protocol_headers() {
    let (env, app) = app_behind_unreachable_route_service("", "back.rs.test").await;
    let key = SignatureKey::derive(SECRET);
    let resp = returning(
        &env,
        "back.rs.test",
        &key,
        "http://back.rs.test/",
        SystemTime::now(),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    let seen = echoed(&resp);
    assert!(seen.header("X-CF-Proxy-Signature").is_none());
    assert!(seen.header("X-CF-Forwarded-Url").is_none());
    assert_eq!(app.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_signature_is_a_504() {
    let (env, app) = app_behind_unreachable_route_service("", "expired.rs.test").await;
    let key = SignatureKey::derive(SECRET);
    let old = SystemTime::now() - Duration::from_secs(61);
    let resp = returning(
        &env,
        "expired.rs.test",
        &key,
        "http://expired.rs.test/",
        old,
    )
    .await;
    assert_eq!(resp.status, 504, "{}", resp.dump());
    assert!(resp.header("X-Cf-Routererror").is_none());
    assert_eq!(
        resp.body_str(),
        "504 Gateway Timeout: Failed to validate Route Service Signature: route service request expired\n"
    );
    assert_eq!(app.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_signature_is_a_502() {
    let (env, app) = app_behind_unreachable_route_service("", "tampered.rs.test").await;
    let key = SignatureKey::derive(SECRET);
    let signed = key.sign("http://tampered.rs.test/", SystemTime::now());
    let mut sig = signed.signature.into_bytes();
    sig[3] = if sig[3] == b'A' { b'B' } else { b'A' };
    let sig = String::from_utf8(sig).unwrap();
    let resp = get_with(
        &env,
        "tampered.rs.test",
        "/",
        &[
            ("X-CF-Proxy-Signature", &sig),
            ("X-CF-Proxy-Metadata", &signed.metadata),
        ],
    )
    .await;
    assert_eq!(resp.status, 502, "{}", resp.dump());
    assert_eq!(
        resp.body_str(),
        "502 Bad Gateway: Failed to validate Route Service Signature: cipher: message authentication failed\n"
    );
    assert_eq!(app.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signature_made_with_another_secret_is_a_502() {
    let (env, app) = app_behind_unreachable_route_service("", "other-key.rs.test").await;
    let key = SignatureKey::derive("someone-elses-secret");
    let resp = returning(
        &env,
        "other-key.rs.test",
        &key,
        "http://other-key.rs.test/",
        SystemTime::now(),
    )
    .await;
    assert_eq!(resp.status, 502, "{}", resp.dump());
    assert_eq!(app.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_previous_secret_still_validates_during_rotation() {
    let (env, app) = app_behind_unreachable_route_service(
        "route_services_secret_decrypt_only: the-old-secret\n",
        "rotated.rs.test",
    )
    .await;
    let old = SignatureKey::derive("the-old-secret");
    let resp = returning(
        &env,
        "rotated.rs.test",
        &old,
        "http://rotated.rs.test/",
        SystemTime::now(),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    assert_eq!(app.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signature_for_another_route_is_a_502_naming_both() {
    let (env, app) = app_behind_unreachable_route_service("", "victim.rs.test").await;
    let other = EchoBackend::start("other").await;
    env.register_and_wait(&route("attacker.rs.test", other.port()))
        .await;
    let key = SignatureKey::derive(SECRET);
    let resp = returning(
        &env,
        "victim.rs.test",
        &key,
        "http://attacker.rs.test/",
        SystemTime::now(),
    )
    .await;
    assert_eq!(resp.status, 502, "{}", resp.dump());
    assert_eq!(
        resp.body_str(),
        "502 Bad Gateway: Failed to validate Route Service Signature: route service forwarded URL victim.rs.test/ does not match the original request URL attacker.rs.test/\n"
    );
    let resp = returning(
        &env,
        "victim.rs.test",
        &key,
        "http://nowhere.rs.test/x",
        SystemTime::now(),
    )
    .await;
    assert_eq!(resp.status, 502);
    assert_eq!(
        resp.body_str(),
        "502 Bad Gateway: Failed to validate Route Service Signature: original request URL nowhere.rs.test/x does not exist in the routing table\n"
    );
    assert_eq!(app.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_upgrade_on_a_route_service_route_is_a_503() {
    let (env, app) = app_behind_unreachable_route_service("", "ws.rs.test").await;
    let resp = get_with(
        &env,
        "ws.rs.test",
        "/",
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ],
    )
    .await;
    assert_eq!(resp.status, 503, "{}", resp.dump());
    assert_eq!(
        resp.header("X-Cf-Routererror"),
        Some("route_service_unsupported")
    );
    assert_eq!(
        resp.body_str(),
        "503 Service Unavailable: Websocket requests are not supported for routes bound to Route Services.\n"
    );
    assert_eq!(app.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_pass_adds_no_sticky_cookie_of_its_own() {
    let ca = TestCa::new("rs-ca");
    let dir = TempDir::new("rs-sticky");
    let env = router_with_route_services(&ca, "").await;
    let app = integration::HttpBackend::start(|_req| async {
        let mut r = integration::backends::text_response(200, "sticky app");
        r.headers_mut()
            .insert("set-cookie", "JSESSIONID=abc; Path=/".parse().unwrap());
        r
    })
    .await;
    let rs = RouteServiceProcess::start(
        RouteServiceOptions::tls(env.router.addr(), "sticky-svc", &ca, dir.path()),
        Some(&ca),
    )
    .await;
    let mut msg = bound_route(
        "sticky.rs.test",
        app.port(),
        &format!("https://127.0.0.1:{}", rs.port()),
    );
    msg["private_instance_id"] = json!("instance-1");
    env.client.register(&msg).await;
    let resp = env.router.wait_status("sticky.rs.test", 200).await;
    let vcap: Vec<&str> = resp
        .header_all("Set-Cookie")
        .into_iter()
        .filter(|c| c.starts_with("__VCAP_ID__="))
        .collect();
    assert_eq!(
        vcap,
        vec!["__VCAP_ID__=instance-1; Path=/; HttpOnly"],
        "only the app's pass sets the sticky cookie: {}",
        resp.dump()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_service_that_is_a_route_is_reached_through_the_internal_server() {
    let ca = TestCa::new("rs-ca");
    let env = router_with_route_services(
        &ca,
        "route_services_hairpinning: true\nroute_services_internal_server_port: 0\nroute_services_hairpinning_allowlist: ['*.hairpin.test']\n",
    )
    .await;
    let app = EchoBackend::start("app").await;
    // The route service is an app on this router: a plain HTTP endpoint of a route whose
    // host no resolver knows, so only the internal server can reach it.
    let rs = RouteServiceProcess::start(
        RouteServiceOptions::plain(env.router.addr(), "hairpin-svc"),
        None,
    )
    .await;
    env.register_and_wait(&route("svc.hairpin.test", rs.port()))
        .await;
    let msg = bound_route(
        "app.hairpin.test",
        app.port(),
        "https://svc.hairpin.test/filter",
    );
    env.client.register(&msg).await;
    let resp = env.router.wait_status("app.hairpin.test", 200).await;
    assert_eq!(
        resp.header("X-Route-Service"),
        Some("hairpin-svc"),
        "{}",
        resp.dump()
    );
    let seen = echoed(&resp);
    assert_eq!(seen.header("X-Route-Service"), Some("hairpin-svc"));
    assert_eq!(seen.header("Host"), Some("app.hairpin.test"));
    assert!(rs.requests().await >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_service_outside_the_hairpin_allowlist_is_dialled_over_the_network() {
    let ca = TestCa::new("rs-ca");
    let env = router_with_route_services(
        &ca,
        "route_services_hairpinning: true\nroute_services_internal_server_port: 0\nroute_services_hairpinning_allowlist: ['*.allowed.test']\n",
    )
    .await;
    let app = EchoBackend::start("app").await;
    let rs = RouteServiceProcess::start(
        RouteServiceOptions::plain(env.router.addr(), "not-hairpinned"),
        None,
    )
    .await;
    // The route service is the route `localhost` (never on an allow-list of FQDNs); its URL
    // names a closed port, so only the internal server could have reached it.
    env.register_and_wait(&route("localhost", rs.port())).await;
    let before = rs.requests().await;
    let url = format!("https://localhost:{}/", integration::closed_port());
    let msg = bound_route("app.denied.test", app.port(), &url);
    let resp = env.register_and_wait(&msg).await;
    assert_eq!(resp.status, 502, "{}", resp.dump());
    assert!(
        resp.header("X-Cf-Routererror")
            .is_some_and(|v| v.starts_with("endpoint_failure")),
        "{}",
        resp.dump()
    );
    assert_eq!(rs.requests().await, before);
    assert_eq!(app.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_validation_refuses_a_bad_signature_on_a_route_without_a_route_service() {
    let ca = TestCa::new("rs-ca");
    let env =
        router_with_route_services(&ca, "route_services: {strict_signature_validation: true}\n")
            .await;
    let app = EchoBackend::start("app").await;
    env.register_and_wait(&route("strict.rs.test", app.port()))
        .await;
    let before = app.request_count();
    let resp = get_with(
        &env,
        "strict.rs.test",
        "/",
        &[
            ("X-CF-Proxy-Signature", "forged"),
            ("X-CF-Proxy-Metadata", "forged"),
        ],
    )
    .await;
    assert_eq!(resp.status, 400, "{}", resp.dump());
    assert_eq!(
        resp.header("X-Cf-Routererror"),
        Some("invalid_route_service_signature")
    );
    assert_eq!(
        resp.body_str(),
        "400 Bad Request: invalid route service signature detected\n"
    );
    assert_eq!(app.request_count(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_shows_the_route_service_url() {
    let ca = TestCa::new("rs-ca");
    let env = router_with_route_services(&ca, "").await;
    let app = EchoBackend::start("app").await;
    let msg = bound_route("listed.rs.test", app.port(), "https://rs.example.com/auth");
    env.register_and_wait(&msg).await;
    let routes: serde_json::Value =
        serde_json::from_slice(&env.router.routes().await.body).unwrap();
    assert_eq!(
        routes["listed.rs.test"][0]["route_service_url"],
        "https://rs.example.com/auth"
    );
}

/// Waits for the route's request to come back from the route service named `name`.
async fn wait_through(router: &integration::Gorouter, host: &str, name: &str) -> RawResponse {
    integration::eventually(
        &format!("{host} served through the route service {name}"),
        Duration::from_secs(10),
        || async move {
            let r = router.get(host, "/").await;
            (r.status == 200 && r.header("X-Route-Service") == Some(name)).then_some(r)
        },
    )
    .await
}

fn listed_route_service_url(routes: &RawResponse, host: &str) -> String {
    let v: serde_json::Value = serde_json::from_slice(&routes.body).unwrap();
    v[host][0]["route_service_url"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_service_url_from_the_routing_api_binds_the_route() {
    use integration::routing_api::{listener_port, Database, RoutingApi};
    let ca = TestCa::new("rs-ca");
    let dir = TempDir::new("rs-routing-api");
    let api = RoutingApi::builder(Database::sqlite(dir.path().join("routing-api.db")))
        .yaml(&format!("api: {{listen_port: {}}}", listener_port()))
        .start()
        .await;
    let router = integration::GorouterBuilder::new(integration::closed_port())
        .yaml(&format!(
            "nats: {{hosts: []}}\nrouting_api: {{uri: 'http://127.0.0.1', port: {}, auth_disabled: true}}\n\
             route_services_secret: {SECRET}\nca_certs: [{}]\n",
            api.http_port,
            yaml_quoted(&ca.cert_pem())
        ))
        .start()
        .await;
    let app = EchoBackend::start("ra-app").await;
    let rs = RouteServiceProcess::start(
        RouteServiceOptions::tls(router.addr(), "ra-svc", &ca, dir.path()),
        Some(&ca),
    )
    .await;
    let url = format!("https://127.0.0.1:{}", rs.port());
    let body = json!([{
        "route": "ra.rs.test", "port": app.port(), "ip": "127.0.0.1", "ttl": 120,
        "log_guid": "ra-app", "route_service_url": url,
    }])
    .to_string();
    let r = api.post("/routing/v1/routes", &body).await;
    assert_eq!(r.status, 201, "{}", r.dump());

    let resp = wait_through(&router, "ra.rs.test", "ra-svc").await;
    assert_eq!(echoed(&resp).header("X-Route-Service"), Some("ra-svc"));
    assert_eq!(
        listed_route_service_url(&router.routes().await, "ra.rs.test"),
        url
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_service_url_from_the_route_emitter_config_binds_the_route() {
    use integration::route_emitter::{http_route, RouteEmitterBuilder};
    let ca = TestCa::new("rs-ca");
    let dir = TempDir::new("rs-emitter");
    let env = router_with_route_services(&ca, "").await;
    let app = EchoBackend::start("emitted-app").await;
    let rs = RouteServiceProcess::start(
        RouteServiceOptions::tls(env.router.addr(), "emitted-svc", &ca, dir.path()),
        Some(&ca),
    )
    .await;
    let url = format!("https://127.0.0.1:{}", rs.port());
    let mut r = http_route("emitted", "emitted.rs.test", app.port());
    r["route_service_url"] = json!(url);
    let _emitter = RouteEmitterBuilder::new(Some(&env.nats)).route(r).start();

    let resp = wait_through(&env.router, "emitted.rs.test", "emitted-svc").await;
    assert_eq!(echoed(&resp).header("X-Route-Service"), Some("emitted-svc"));
    assert_eq!(
        listed_route_service_url(&env.router.routes().await, "emitted.rs.test"),
        url
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn route_service_traffic_keeps_its_forwarded_proto_where_other_requests_are_sanitised() {
    let (env, _app) =
        app_behind_unreachable_route_service("sanitize_forwarded_proto: true\n", "proto.rs.test")
            .await;
    let key = SignatureKey::derive(SECRET);
    let url = "http://proto.rs.test/";
    let signed = key.sign(url, SystemTime::now());
    let resp = get_with(
        &env,
        "proto.rs.test",
        "/",
        &[
            ("X-Forwarded-Proto", "https"),
            ("X-CF-Forwarded-Url", url),
            ("X-CF-Proxy-Signature", &signed.signature),
            ("X-CF-Proxy-Metadata", &signed.metadata),
        ],
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    assert_eq!(
        echoed(&resp).header("X-Forwarded-Proto"),
        Some("https"),
        "the route service's X-Forwarded-Proto is kept"
    );

    let plain = EchoBackend::start("plain").await;
    env.register_and_wait(&route("plain.proto.test", plain.port()))
        .await;
    let resp = get_with(
        &env,
        "plain.proto.test",
        "/",
        &[("X-Forwarded-Proto", "https")],
    )
    .await;
    assert_eq!(
        echoed(&resp).header("X-Forwarded-Proto"),
        Some("http"),
        "a client's X-Forwarded-Proto is sanitised"
    );
}
