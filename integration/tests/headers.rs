//! Headers the router adds, replaces and removes (A.7, A.8), checked on what the echo backend
//! received and on what the client got back; golden values from
//! captures/gorouter-requests*.txt.

use integration::backends::{full_body, text_response};
use integration::http::build_request;
use integration::util::{is_lower_hex, is_uuid_like, unix_millis};
use integration::{route, EchoBackend, EchoedRequest, HttpBackend, TestEnv};
use serde_json::{json, Value};

const APP_GUID: &str = "6e6b2f1e-1111-4222-8333-444455556666";

fn full_route(uri: &str, port: u16) -> Value {
    let mut msg = route(uri, port);
    msg["app"] = json!(APP_GUID);
    msg["private_instance_id"] = json!("abc");
    msg["private_instance_index"] = json!("3");
    msg
}

/// Turns 32 hex digits into 8-4-4-4-12.
fn as_uuid(hex: &str) -> String {
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn backend_gets_router_headers_and_nothing_else() {
    let env = TestEnv::start("").await;
    let backend = EchoBackend::start("a").await;
    env.register_and_wait(&full_route("echo.example.com", backend.port()))
        .await;

    let before = unix_millis();
    let resp = env
        .router
        .request(&build_request(
            "GET",
            "/notrace",
            &[
                ("Host", "echo.example.com"),
                ("User-Agent", "curl/7.88.1"),
                ("Accept", "*/*"),
                ("X-Vcap-Request-Id", "client-id"),
            ],
            b"",
        ))
        .await;
    let after = unix_millis();
    assert_eq!(resp.status, 200, "{}", resp.dump());
    let seen = EchoedRequest::parse(&resp.body);
    assert_eq!(seen.request_line, "GET /notrace HTTP/1.1");
    assert_eq!(
        seen.header_names_lower(),
        [
            "accept",
            "host",
            "user-agent",
            "x-cf-applicationid",
            "x-cf-instanceid",
            "x-cf-instanceindex",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-request-start",
            "x-vcap-request-id"
        ],
        "backend request headers: {:#?}",
        seen.headers
    );
    assert_eq!(seen.header("Host"), Some("echo.example.com"));
    assert_eq!(seen.header("User-Agent"), Some("curl/7.88.1"));
    assert_eq!(seen.header("Accept"), Some("*/*"));
    assert_eq!(seen.header("X-Cf-Applicationid"), Some(APP_GUID));
    assert_eq!(seen.header("X-Cf-Instanceid"), Some("abc"));
    assert_eq!(seen.header("X-Cf-Instanceindex"), Some("3"));
    assert_eq!(seen.header("X-Forwarded-For"), Some("127.0.0.1"));
    assert_eq!(seen.header("X-Forwarded-Proto"), Some("http"));
    let start: u128 = seen
        .header("X-Request-Start")
        .and_then(|v| v.parse().ok())
        .expect("X-Request-Start is an integer");
    assert!(
        (before..=after).contains(&start),
        "X-Request-Start {start} is not unix ms within [{before}, {after}]"
    );
    let id = seen.header("X-Vcap-Request-Id").unwrap();
    assert!(is_uuid_like(id), "X-Vcap-Request-Id {id:?} is not a UUID");
    assert_ne!(id, "client-id", "the client's request id must be replaced");
    assert_eq!(
        resp.header("X-Vcap-Request-Id"),
        Some(id),
        "the response carries the id the backend saw"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn request_ids_are_fresh_per_request() {
    let env = TestEnv::start("").await;
    let backend = EchoBackend::start("a").await;
    env.register_and_wait(&route("ids.example.com", backend.port()))
        .await;

    let mut ids = std::collections::HashSet::new();
    for _ in 0..5 {
        let resp = env.get("ids.example.com", "/").await;
        let id = resp.header("X-Vcap-Request-Id").expect("X-Vcap-Request-Id");
        assert!(is_uuid_like(id), "{id}");
        ids.insert(id.to_string());
    }
    assert_eq!(ids.len(), 5, "request ids repeat: {ids:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn client_forwarding_headers_are_appended_or_kept() {
    let env = TestEnv::start("").await;
    let backend = EchoBackend::start("a").await;
    env.register_and_wait(&full_route("fwd.example.com", backend.port()))
        .await;

    let resp = env
        .router
        .request(&build_request(
            "GET",
            "/two",
            &[
                ("Host", "fwd.example.com"),
                ("X-Forwarded-For", "10.1.1.1, 10.2.2.2"),
                ("X-Forwarded-Proto", "https"),
                ("X-Request-Start", "1"),
                ("X-Forwarded-Host", "orig.example.com"),
                ("X-Forwarded-Client-Cert", "abc"),
                ("X-CF-ApplicationID", "spoof"),
                ("X-CF-InstanceID", "spoof"),
            ],
            b"",
        ))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    let seen = EchoedRequest::parse(&resp.body);
    assert_eq!(
        seen.header_all("X-Forwarded-For"),
        ["10.1.1.1, 10.2.2.2, 127.0.0.1"]
    );
    assert_eq!(seen.header_all("X-Forwarded-Proto"), ["https"]);
    assert_eq!(seen.header_all("X-Request-Start"), ["1"]);
    assert_eq!(seen.header_all("X-Forwarded-Host"), ["orig.example.com"]);
    assert_eq!(seen.header_all("X-Forwarded-Client-Cert"), ["abc"]);
    assert_eq!(seen.header_all("X-Cf-Applicationid"), [APP_GUID]);
    assert_eq!(seen.header_all("X-Cf-Instanceid"), ["abc"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn hop_by_hop_headers_are_removed() {
    let env = TestEnv::start("").await;
    let backend = EchoBackend::start("a").await;
    env.register_and_wait(&route("hop.example.com", backend.port()))
        .await;

    let resp = env
        .router
        .request(&build_request(
            "GET",
            "/hop",
            &[
                ("Host", "hop.example.com"),
                ("Connection", "keep-alive, X-Custom-Hop"),
                ("X-Custom-Hop", "1"),
                ("Keep-Alive", "timeout=5"),
                ("Proxy-Connection", "keep-alive"),
                ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
                ("Te", "trailers"),
                ("Upgrade-Insecure-Requests", "1"),
                ("X-Kept", "yes"),
            ],
            b"",
        ))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    let seen = EchoedRequest::parse(&resp.body);
    for gone in [
        "Connection",
        "X-Custom-Hop",
        "Keep-Alive",
        "Proxy-Connection",
        "Proxy-Authorization",
    ] {
        assert_eq!(
            seen.header(gone),
            None,
            "{gone} must not reach the backend: {:#?}",
            seen.headers
        );
    }
    // Go's ReverseProxy strips Te but puts back `Te: trailers` (captures/gorouter-requests.txt #2).
    assert_eq!(seen.header_all("Te"), ["trailers"]);
    assert_eq!(seen.header("Upgrade-Insecure-Requests"), Some("1"));
    assert_eq!(seen.header("X-Kept"), Some("yes"));
}

#[tokio::test(flavor = "multi_thread")]
async fn instance_id_header_falls_back_to_host_port() {
    let env = TestEnv::start("").await;
    let backend = EchoBackend::start("a").await;
    let mut msg = route("noid.example.com", backend.port());
    msg["app"] = json!(APP_GUID);
    env.register_and_wait(&msg).await;

    let resp = env.get("noid.example.com", "/").await;
    let seen = EchoedRequest::parse(&resp.body);
    assert_eq!(
        seen.header("X-Cf-Instanceid"),
        Some(format!("127.0.0.1:{}", backend.port()).as_str())
    );
    assert_eq!(seen.header("X-Cf-Applicationid"), Some(APP_GUID));
}

#[tokio::test(flavor = "multi_thread")]
async fn backend_set_request_id_is_not_replaced() {
    let env = TestEnv::start("").await;
    let backend = HttpBackend::start(|_req| async {
        let mut r = text_response(200, "own id\n");
        r.headers_mut()
            .insert("X-Vcap-Request-Id", "backend-chosen-id".parse().unwrap());
        r
    })
    .await;
    env.register_and_wait(&route("ownid.example.com", backend.port()))
        .await;

    let resp = env.get("ownid.example.com", "/").await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    assert_eq!(resp.header_all("X-Vcap-Request-Id"), ["backend-chosen-id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn backend_response_headers_and_body_pass_through() {
    let env = TestEnv::start("").await;
    let backend = HttpBackend::start(|_req| async {
        http::Response::builder()
            .status(201)
            .header("X-App-Header", "app value")
            .header("Set-Cookie", "a=1")
            .header("Set-Cookie", "b=2")
            .header("Content-Type", "application/json")
            .body(full_body("{\"ok\":true}"))
            .unwrap()
    })
    .await;
    env.register_and_wait(&route("pass.example.com", backend.port()))
        .await;

    let resp = env.get("pass.example.com", "/").await;
    assert_eq!(resp.status_line, "HTTP/1.1 201 Created", "{}", resp.dump());
    assert_eq!(resp.header("X-App-Header"), Some("app value"));
    assert_eq!(resp.header_all("Set-Cookie"), ["a=1", "b=2"]);
    assert_eq!(resp.header("Content-Type"), Some("application/json"));
    assert_eq!(resp.body, b"{\"ok\":true}");
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_key_adds_router_and_backend_headers() {
    let env = TestEnv::start("trace_key: it-trace-key").await;
    let backend = EchoBackend::start("a").await;
    env.register_and_wait(&route("trace.example.com", backend.port()))
        .await;
    let endpoint = format!("127.0.0.1:{}", backend.port());

    let resp = env
        .router
        .request(&build_request(
            "GET",
            "/",
            &[
                ("Host", "trace.example.com"),
                ("X-Vcap-Trace", "it-trace-key"),
            ],
            b"",
        ))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    assert_eq!(resp.header("X-Vcap-Router"), Some("127.0.0.1"));
    assert_eq!(resp.header("X-Vcap-Backend"), Some(endpoint.as_str()));
    assert_eq!(resp.header("X-Cf-Routeendpoint"), Some(endpoint.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_trace_key_adds_no_debug_headers() {
    let env = TestEnv::start("trace_key: it-trace-key").await;
    let backend = EchoBackend::start("a").await;
    env.register_and_wait(&route("notrace.example.com", backend.port()))
        .await;

    let resp = env
        .router
        .request(&build_request(
            "GET",
            "/",
            &[("Host", "notrace.example.com"), ("X-Vcap-Trace", "wrong")],
            b"",
        ))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    for h in ["X-Vcap-Router", "X-Vcap-Backend", "X-Cf-Routeendpoint"] {
        assert_eq!(resp.header(h), None, "{h} with a wrong trace key");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forced_forwarded_proto_is_https() {
    let env = TestEnv::start("force_forwarded_proto_https: true").await;
    let backend = EchoBackend::start("a").await;
    env.register_and_wait(&route("force.example.com", backend.port()))
        .await;

    let resp = env.get("force.example.com", "/").await;
    let seen = EchoedRequest::parse(&resp.body);
    assert_eq!(seen.header_all("X-Forwarded-Proto"), ["https"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn sanitized_forwarded_proto_ignores_the_client() {
    let env = TestEnv::start("sanitize_forwarded_proto: true").await;
    let backend = EchoBackend::start("a").await;
    env.register_and_wait(&route("sanitize.example.com", backend.port()))
        .await;

    let resp = env
        .router
        .request(&build_request(
            "GET",
            "/",
            &[
                ("Host", "sanitize.example.com"),
                ("X-Forwarded-Proto", "https"),
            ],
            b"",
        ))
        .await;
    let seen = EchoedRequest::parse(&resp.body);
    assert_eq!(seen.header_all("X-Forwarded-Proto"), ["http"]);
}

/// Go's `Header.Get("X-Forwarded-Proto") == ""`: an empty value from the client counts as
/// missing and becomes the connection's scheme (upstream handlers/x_forwarded_proto.go).
#[tokio::test(flavor = "multi_thread")]
async fn empty_forwarded_proto_becomes_the_scheme() {
    let env = TestEnv::start("").await;
    let backend = EchoBackend::start("a").await;
    env.register_and_wait(&route("emptyproto.example.com", backend.port()))
        .await;

    let resp = env
        .router
        .request(&build_request(
            "GET",
            "/",
            &[
                ("Host", "emptyproto.example.com"),
                ("X-Forwarded-Proto", ""),
            ],
            b"",
        ))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    let seen = EchoedRequest::parse(&resp.body);
    assert_eq!(seen.header_all("X-Forwarded-Proto"), ["http"]);
}

const TRACING: &str = "tracing: {enable_zipkin: true, enable_w3c: true}";

#[tokio::test(flavor = "multi_thread")]
async fn tracing_generates_b3_and_w3c_headers() {
    let env = TestEnv::start(TRACING).await;
    let backend = EchoBackend::start("a").await;
    env.register_and_wait(&full_route("echo.example.com", backend.port()))
        .await;

    let resp = env.get("echo.example.com", "/hello?x=1").await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    let seen = EchoedRequest::parse(&resp.body);
    let trace = seen
        .header("X-B3-Traceid")
        .expect("X-B3-Traceid")
        .to_string();
    let span = seen.header("X-B3-Spanid").expect("X-B3-Spanid").to_string();
    assert!(
        trace.len() == 32 && is_lower_hex(&trace),
        "trace id {trace:?}"
    );
    assert!(span.len() == 16 && is_lower_hex(&span), "span id {span:?}");
    assert_eq!(seen.header_all("B3"), [format!("{trace}-{span}")]);
    assert_eq!(
        seen.header_all("Traceparent"),
        [format!("00-{trace}-{span}-01")]
    );
    assert_eq!(seen.header_all("Tracestate"), [format!("gorouter={span}")]);
    let id = as_uuid(&trace);
    assert_eq!(seen.header_all("X-Vcap-Request-Id"), [id.as_str()]);
    assert_eq!(resp.header("X-Vcap-Request-Id"), Some(id.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn tracing_reuses_client_b3_ids_and_renews_traceparent() {
    let env = TestEnv::start(TRACING).await;
    let backend = EchoBackend::start("a").await;
    env.register_and_wait(&full_route("echo.example.com", backend.port()))
        .await;

    let resp = env
        .router
        .request(&build_request(
            "GET",
            "/two",
            &[
                ("Host", "echo.example.com"),
                ("X-Vcap-Request-Id", "client-supplied-id"),
                ("X-B3-TraceId", "463ac35c9f6413ad48485a3953bb6124"),
                ("X-B3-SpanId", "a2fb4a1d1a96d312"),
                (
                    "traceparent",
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                ),
                ("tracestate", "foo=bar"),
            ],
            b"",
        ))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    let seen = EchoedRequest::parse(&resp.body);
    assert_eq!(
        seen.header_all("B3"),
        ["463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312"]
    );
    assert_eq!(
        seen.header_all("X-B3-Traceid"),
        ["463ac35c9f6413ad48485a3953bb6124"]
    );
    assert_eq!(seen.header_all("X-B3-Spanid"), ["a2fb4a1d1a96d312"]);
    let tp = seen.header("Traceparent").expect("Traceparent").to_string();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {tp:?}");
    assert_eq!(parts[0], "00");
    assert_eq!(
        parts[1], "0af7651916cd43dd8448eb211c80319c",
        "trace id kept"
    );
    assert!(parts[2].len() == 16 && is_lower_hex(parts[2]), "{tp}");
    assert_ne!(parts[2], "b7ad6b7169203331", "parent id must be new");
    assert_eq!(parts[3], "01");
    assert_eq!(
        seen.header_all("Tracestate"),
        [format!("gorouter={},foo=bar", parts[2])]
    );
    let id = "463ac35c-9f64-13ad-4848-5a3953bb6124";
    assert_eq!(seen.header_all("X-Vcap-Request-Id"), [id]);
    assert_eq!(resp.header("X-Vcap-Request-Id"), Some(id));
}

#[tokio::test(flavor = "multi_thread")]
async fn tracing_reuses_single_b3_header() {
    let env = TestEnv::start(TRACING).await;
    let backend = EchoBackend::start("a").await;
    env.register_and_wait(&full_route("echo.example.com", backend.port()))
        .await;

    let resp = env
        .router
        .request(&build_request(
            "GET",
            "/three",
            &[
                ("Host", "echo.example.com"),
                ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
            ],
            b"",
        ))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    let seen = EchoedRequest::parse(&resp.body);
    assert_eq!(
        seen.header_all("B3"),
        ["80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"]
    );
    assert_eq!(
        seen.header_all("Traceparent"),
        ["00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01"]
    );
    assert_eq!(seen.header_all("Tracestate"), ["gorouter=e457b5a2e4d86bd1"]);
    assert_eq!(seen.header("X-B3-Traceid"), None, "{:#?}", seen.headers);
    assert_eq!(seen.header("X-B3-Spanid"), None, "{:#?}", seen.headers);
    let id = "80f198ee-5634-3ba8-64fe-8b2a57d3eff7";
    assert_eq!(seen.header_all("X-Vcap-Request-Id"), [id]);
    assert_eq!(resp.header("X-Vcap-Request-Id"), Some(id));
}

#[tokio::test(flavor = "multi_thread")]
async fn tracing_disabled_adds_no_trace_headers() {
    let env = TestEnv::start("tracing: {enable_zipkin: false, enable_w3c: false}").await;
    let backend = EchoBackend::start("a").await;
    env.register_and_wait(&route("off.example.com", backend.port()))
        .await;

    let resp = env.get("off.example.com", "/").await;
    let seen = EchoedRequest::parse(&resp.body);
    for h in [
        "B3",
        "X-B3-Traceid",
        "X-B3-Spanid",
        "Traceparent",
        "Tracestate",
    ] {
        assert_eq!(seen.header(h), None, "{h} with tracing off");
    }
}

/// `disable_keep_alives: true` (upstream's code default) is Go's `Transport.DisableKeepAlives`:
/// `Connection: close` on every backend request and a new connection each time.
#[tokio::test(flavor = "multi_thread")]
async fn disabled_keep_alives_close_every_backend_connection() {
    let env = TestEnv::start("disable_keep_alives: true").await;
    let backend = EchoBackend::start("a").await;
    env.register_and_wait(&route("close.example.com", backend.port()))
        .await;
    let before = backend.connection_count();
    for _ in 0..3 {
        let resp = env.get("close.example.com", "/").await;
        assert_eq!(resp.status, 200, "{}", resp.dump());
        let seen = EchoedRequest::parse(&resp.body);
        assert_eq!(seen.header_all("Connection"), ["close"]);
    }
    assert_eq!(
        backend.connection_count() - before,
        3,
        "no backend connection reused"
    );

    // With keep-alives on (the BOSH value the test harness sets), the connection is reused
    // (by the one serving thread: each keeps idle connections of its own).
    let env = TestEnv::start_on_one_thread("").await;
    let backend = EchoBackend::start("b").await;
    env.register_and_wait(&route("keep.example.com", backend.port()))
        .await;
    let before = backend.connection_count();
    for _ in 0..3 {
        let resp = env.get("keep.example.com", "/").await;
        let seen = EchoedRequest::parse(&resp.body);
        assert!(
            seen.header("Connection").is_none(),
            "{:?}",
            seen.header("Connection")
        );
    }
    assert_eq!(
        backend.connection_count(),
        before,
        "the connection of the registration check is reused"
    );
}

/// `max_idle_conns` (Go's `Transport.MaxIdleConns`) caps idle backend connections across all
/// backends: with room for one, the second backend's connection is closed after each request
/// while the first one's is kept.
#[tokio::test(flavor = "multi_thread")]
async fn max_idle_conns_caps_idle_connections_across_backends() {
    let env = TestEnv::start("max_idle_conns: 1\nmax_idle_conns_per_host: 10").await;
    let a = EchoBackend::start("a").await;
    let b = EchoBackend::start("b").await;
    env.register_and_wait(&route("idle-a.example.com", a.port()))
        .await;
    env.register_and_wait(&route("idle-b.example.com", b.port()))
        .await;
    // The registration checks left a's connection in the one idle slot (b's was closed).
    let (a_before, b_before) = (a.connection_count(), b.connection_count());
    for _ in 0..3 {
        assert_eq!(env.get("idle-a.example.com", "/").await.status, 200);
        assert_eq!(env.get("idle-b.example.com", "/").await.status, 200);
    }
    assert_eq!(
        a.connection_count() - a_before,
        0,
        "a's idle connection holds the slot and is reused"
    );
    assert_eq!(
        b.connection_count() - b_before,
        3,
        "b's connection finds no slot and is closed after every request"
    );
}
