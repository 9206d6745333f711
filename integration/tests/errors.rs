//! Errors the router produces itself (A.5), checked byte for byte over a raw TCP client:
//! status line, the exact header set (names as Go writes them; `Date` present, its value
//! ignored; a correct `Content-Length`) and body text.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use integration::http::{build_request, HttpConn};
use integration::{closed_port, route, EchoBackend, HeldBackend, TestEnv};
use serde_json::json;

const TEXT: &str = "text/plain; charset=utf-8";

#[tokio::test(flavor = "multi_thread")]
async fn unknown_route_is_404_unknown_route() {
    let env = TestEnv::start("").await;
    let resp = env.get("nope.example.com", "/").await;

    let body = "404 Not Found: Requested route ('nope.example.com') does not exist.\n";
    assert_eq!(resp.status_line, "HTTP/1.1 404 Not Found");
    assert_eq!(resp.body_str(), body);
    resp.assert_headers_exactly(&[
        ("Cache-Control", "no-cache, no-store"),
        ("Content-Type", TEXT),
        ("X-Cf-Routererror", "unknown_route"),
        ("X-Content-Type-Options", "nosniff"),
        ("Content-Length", &body.len().to_string()),
    ]);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_route_message_names_host_as_sent() {
    let env = TestEnv::start("").await;
    let host = format!("Nope.Example.com:{}", env.router.port());
    let resp = env.get(&host, "/").await;
    assert_eq!(resp.status, 404);
    assert_eq!(
        resp.body_str(),
        format!("404 Not Found: Requested route ('{host}') does not exist.\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn emptied_pool_is_503_no_endpoints() {
    let env = TestEnv::start("empty_pool_timeout: 10s\nempty_pool_response_code_503: true").await;
    let backend = EchoBackend::start("a").await;
    let msg = route("empty.example.com", backend.port());
    env.register_and_wait(&msg).await;
    env.unregister(&msg).await;
    let resp = env.router.wait_status("empty.example.com", 503).await;

    let body = "503 Service Unavailable: Requested route ('empty.example.com') has no available endpoints.\n";
    assert_eq!(resp.status_line, "HTTP/1.1 503 Service Unavailable");
    assert_eq!(resp.body_str(), body);
    resp.assert_headers_exactly(&[
        ("Cache-Control", "public,max-age=2"),
        ("Content-Type", TEXT),
        ("X-Cf-Routererror", "no_endpoints"),
        ("X-Content-Type-Options", "nosniff"),
        ("Content-Length", &body.len().to_string()),
    ]);
}

#[tokio::test(flavor = "multi_thread")]
async fn emptied_pool_is_404_when_503_disabled() {
    let env = TestEnv::start("empty_pool_timeout: 10s\nempty_pool_response_code_503: false").await;
    let backend = EchoBackend::start("a").await;
    let msg = route("empty404.example.com", backend.port());
    env.register_and_wait(&msg).await;
    env.unregister(&msg).await;
    let resp = env.router.wait_route_gone("empty404.example.com").await;
    assert_eq!(resp.header("X-Cf-Routererror"), Some("unknown_route"));
    assert_eq!(
        resp.body_str(),
        "404 Not Found: Requested route ('empty404.example.com') does not exist.\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_backend_is_502_endpoint_failure() {
    let env = TestEnv::start("").await;
    let port = closed_port();
    env.register_and_wait(&route("dead.example.com", port))
        .await;
    let resp = env.get("dead.example.com", "/").await;

    let body = "502 Bad Gateway: Registered endpoint failed to handle the request.\n";
    assert_eq!(resp.status_line, "HTTP/1.1 502 Bad Gateway");
    assert_eq!(resp.body_str(), body);
    resp.assert_headers_exactly(&[
        ("Content-Type", TEXT),
        (
            "X-Cf-Routererror",
            &format!("endpoint_failure (dial tcp 127.0.0.1:{port}: connect: connection refused)"),
        ),
        ("X-Content-Type-Options", "nosniff"),
        ("Content-Length", &body.len().to_string()),
    ]);
}

#[tokio::test(flavor = "multi_thread")]
async fn http10_request_without_host_is_400_empty_host() {
    let env = TestEnv::start("").await;
    let resp = env.router.request(b"GET / HTTP/1.0\r\n\r\n").await;

    let body = "400 Bad Request: Request had empty Host header\n";
    assert_eq!(resp.status_line, "HTTP/1.0 400 Bad Request");
    assert_eq!(resp.body_str(), body);
    resp.assert_headers_exactly(&[
        ("Cache-Control", "public,max-age=2"),
        ("Content-Type", TEXT),
        ("X-Cf-Routererror", "empty_host"),
        ("X-Content-Type-Options", "nosniff"),
        ("Content-Length", &body.len().to_string()),
    ]);
}

/// Sends `request` on a fresh connection and returns everything the router wrote before it
/// closed the connection.
async fn raw_exchange(env: &TestEnv, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(env.router.addr())
        .await
        .expect("connect");
    stream.write_all(request).await.expect("send");
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut got))
        .await
        .expect("the router must answer and close the connection")
        .expect("read");
    String::from_utf8_lossy(&got).into_owned()
}

/// Go's server refuses a bad Host itself, before any handler, with exactly these bytes (ours
/// adds the Date and Content-Length every hyper response carries; everything else is identical).
fn assert_go_bad_request(response: &str, text: &str) {
    let want = format!(
        "HTTP/1.1 400 Bad Request: {text}\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request: {text}"
    );
    let length = format!(
        "content-length: {}\r\n",
        "400 Bad Request: ".len() + text.len()
    );
    let without_extras: String = response
        .split_inclusive("\r\n")
        .filter(|line| {
            let l = line.to_ascii_lowercase();
            !l.starts_with("date: ") && l != length
        })
        .collect();
    assert_eq!(without_extras, want, "full response: {response:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn http11_request_without_host_is_400_and_closed() {
    let env = TestEnv::start("").await;
    let response = raw_exchange(&env, b"GET / HTTP/1.1\r\nUser-Agent: it\r\n\r\n").await;
    assert_go_bad_request(&response, "missing required Host header");
}

/// Go requires the `Host` header of HTTP/1.1 even when an absolute-form target names the host.
#[tokio::test(flavor = "multi_thread")]
async fn http11_absolute_form_request_without_host_header_is_400() {
    let env = TestEnv::start("").await;
    let backend = EchoBackend::start("abs-no-host").await;
    env.register_and_wait(&route("abs-no-host.example.com", backend.port()))
        .await;
    let before = backend.request_count();
    let response = raw_exchange(
        &env,
        b"GET http://abs-no-host.example.com/ HTTP/1.1\r\nUser-Agent: it\r\n\r\n",
    )
    .await;
    assert_go_bad_request(&response, "missing required Host header");
    assert_eq!(backend.request_count(), before, "no backend saw it");
}

/// Two Host headers: Go's `400 Bad Request: too many Host headers`, and no backend sees it
/// (which of the two would it route on?).
#[tokio::test(flavor = "multi_thread")]
async fn two_host_headers_are_400_too_many_host_headers() {
    let env = TestEnv::start("").await;
    let backend = EchoBackend::start("two-hosts").await;
    env.register_and_wait(&route("two-hosts.example.com", backend.port()))
        .await;
    let before = backend.request_count();
    let response = raw_exchange(
        &env,
        b"GET / HTTP/1.1\r\nHost: two-hosts.example.com\r\nHost: other.example.com\r\n\r\n",
    )
    .await;
    assert_go_bad_request(&response, "too many Host headers");
    assert_eq!(backend.request_count(), before, "the app saw nothing");
}

/// A Host with a byte Go's server does not allow (a space, a quote): `400 Bad Request:
/// malformed Host header`.
#[tokio::test(flavor = "multi_thread")]
async fn a_host_with_bytes_go_refuses_is_400_malformed_host_header() {
    let env = TestEnv::start("").await;
    for host in [
        "bad host.example.com",
        "bad\"host.example.com",
        "bad<host>.example.com",
    ] {
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let response = raw_exchange(&env, request.as_bytes()).await;
        assert_go_bad_request(&response, "malformed Host header");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_app_instance_header_is_400() {
    let env = TestEnv::start("").await;
    let backend = EchoBackend::start("a").await;
    env.register_and_wait(&route("inst.example.com", backend.port()))
        .await;
    let resp = env
        .router
        .request(&build_request(
            "GET",
            "/",
            &[
                ("Host", "inst.example.com"),
                ("X-CF-App-Instance", "not-a-guid:0"),
            ],
            b"",
        ))
        .await;

    let body = "400 Bad Request: Invalid X-CF-App-Instance Header\n";
    assert_eq!(resp.status_line, "HTTP/1.1 400 Bad Request");
    assert_eq!(resp.body_str(), body);
    resp.assert_headers_exactly(&[
        ("Cache-Control", "no-cache, no-store"),
        ("Content-Type", TEXT),
        ("X-Cf-Routererror", "invalid_cf_app_instance_header"),
        ("X-Content-Type-Options", "nosniff"),
        ("Content-Length", &body.len().to_string()),
    ]);
    assert_eq!(backend.request_count(), 1, "only the readiness probe");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_app_instance_is_400_unknown_route() {
    let env = TestEnv::start("").await;
    let backend = EchoBackend::start("a").await;
    let guid = "0123abcd-0000-4000-8000-00000000beef";
    let mut msg = route("inst.example.com", backend.port());
    msg["app"] = json!(guid);
    msg["private_instance_index"] = json!("0");
    msg["private_instance_id"] = json!("inst-0");
    env.register_and_wait(&msg).await;
    let resp = env
        .router
        .request(&build_request(
            "GET",
            "/",
            &[
                ("Host", "inst.example.com"),
                ("X-CF-App-Instance", &format!("{guid}:5")),
            ],
            b"",
        ))
        .await;

    let body = format!(
        "400 Bad Request: Requested instance ('5') with guid ('{guid}') does not exist for route ('inst.example.com')\n"
    );
    assert_eq!(resp.status_line, "HTTP/1.1 400 Bad Request");
    assert_eq!(resp.body_str(), body);
    resp.assert_headers_exactly(&[
        ("Cache-Control", "no-cache, no-store"),
        ("Content-Type", TEXT),
        ("X-Cf-Routererror", "unknown_route"),
        ("X-Content-Type-Options", "nosniff"),
        ("Content-Length", &body.len().to_string()),
    ]);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_request_headers_are_431_and_closed() {
    let env = TestEnv::start("max_header_bytes: 1024").await;
    let backend = EchoBackend::start("a").await;
    env.register_and_wait(&route("big.example.com", backend.port()))
        .await;
    let big = "a".repeat(2000);
    let mut conn = HttpConn::connect(env.router.addr()).await;
    conn.send(&build_request(
        "GET",
        "/",
        &[("Host", "big.example.com"), ("X-Big", &big)],
        b"",
    ))
    .await;
    let resp = conn.read_response().await;

    assert_eq!(
        resp.status_line,
        "HTTP/1.1 431 Request Header Fields Too Large",
        "{}",
        resp.dump()
    );
    assert_eq!(
        resp.header("X-Cf-Routererror"),
        Some("max-request-size-exceeded")
    );
    assert_eq!(resp.header("Content-Length"), Some("0"));
    assert!(resp.body.is_empty());
    for (name, value) in &resp.headers {
        assert!(
            ["X-Cf-Routererror", "Content-Length", "Date", "Connection"].contains(&name.as_str()),
            "unexpected header {name}: {value}\n{}",
            resp.dump()
        );
    }
    assert!(
        conn.is_closed_within(Duration::from_secs(2)).await,
        "the router must close the connection after a 431"
    );
    assert_eq!(backend.request_count(), 1, "only the readiness probe");
}

#[tokio::test(flavor = "multi_thread")]
async fn small_headers_pass_the_size_limit() {
    let env = TestEnv::start("max_header_bytes: 1024").await;
    let backend = EchoBackend::start("a").await;
    env.register_and_wait(&route("small.example.com", backend.port()))
        .await;
    let resp = env
        .router
        .request(&build_request(
            "GET",
            "/",
            &[
                ("Host", "small.example.com"),
                ("X-Medium", &"b".repeat(500)),
            ],
            b"",
        ))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_limit_is_503_while_the_only_slot_is_busy() {
    let env = TestEnv::start("backends: {max_conns: 1}").await;
    let held = HeldBackend::until_released().await;
    env.register(&route("limit.example.com", held.port())).await;
    env.sync().await;

    let addr = env.router.addr();
    let first = tokio::spawn(async move {
        integration::http::request(
            addr,
            &integration::http::get_request("limit.example.com", "/first"),
        )
        .await
    });
    assert_eq!(held.arrived().await, "/first");

    let resp = env.get("limit.example.com", "/second").await;
    let body =
        "503 Service Unavailable: Requested route ('limit.example.com') has reached the connection limit.\n";
    assert_eq!(resp.status_line, "HTTP/1.1 503 Service Unavailable");
    assert_eq!(resp.body_str(), body);
    resp.assert_headers_exactly(&[
        ("Content-Type", TEXT),
        ("X-Cf-Routererror", "Connection Limit Reached"),
        ("X-Content-Type-Options", "nosniff"),
        ("Content-Length", &body.len().to_string()),
    ]);

    held.release();
    let first = first.await.expect("first request task");
    assert_eq!(first.status, 200, "{}", first.dump());
    let third = env.get("limit.example.com", "/third").await;
    assert_eq!(
        third.status,
        200,
        "the slot is free again: {}",
        third.dump()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn host_equal_to_client_ip_is_400_empty_host() {
    let env = TestEnv::start("").await;
    let resp = env.get("127.0.0.1", "/").await;

    let body = "400 Bad Request: Request had empty Host header\n";
    assert_eq!(
        resp.status_line,
        "HTTP/1.1 400 Bad Request",
        "{}",
        resp.dump()
    );
    assert_eq!(resp.body_str(), body);
    resp.assert_headers_exactly(&[
        ("Cache-Control", "public,max-age=2"),
        ("Content-Type", TEXT),
        ("X-Cf-Routererror", "empty_host"),
        ("X-Content-Type-Options", "nosniff"),
        ("Content-Length", &body.len().to_string()),
    ]);
}
