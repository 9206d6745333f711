//! Route lookup through the running router (A.3): registered hosts, context paths, wildcards,
//! `Host` with a port, case-insensitive hosts, the raw request target and HTTP/1.0 clients.

use integration::http::build_request;
use integration::{route, EchoBackend, EchoedRequest, TestEnv};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn registered_route_reaches_its_backend() {
    let env = TestEnv::start("").await;
    let backend = EchoBackend::start("a").await;
    env.register_and_wait(&route("app.example.com", backend.port()))
        .await;

    let resp = env.get("app.example.com", "/hello?x=1").await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    assert_eq!(resp.header("X-Backend-Name"), Some("a"));
    let seen = EchoedRequest::parse(&resp.body);
    assert_eq!(seen.request_line, "GET /hello?x=1 HTTP/1.1");
    assert_eq!(seen.header("Host"), Some("app.example.com"));
}

#[tokio::test(flavor = "multi_thread")]
async fn context_path_route_takes_its_subtree_only() {
    let env = TestEnv::start("").await;
    let root = EchoBackend::start("root").await;
    let api = EchoBackend::start("api").await;
    env.register(&route("ctx.example.com", root.port())).await;
    env.register(&route("ctx.example.com/api", api.port()))
        .await;
    // Not `register_and_wait` on /api: the host's root route answers /api as soon as it is in,
    // before the context path is. `sync` waits until both messages are processed.
    env.sync().await;

    for (path, want) in [
        ("/api", "api"),
        ("/api/", "api"),
        ("/api/v1/things?q=1", "api"),
        ("/API/v1", "api"),
        ("/apix", "root"),
        ("/", "root"),
        ("/other/api", "root"),
    ] {
        let resp = env.get("ctx.example.com", path).await;
        assert_eq!(resp.status, 200, "{path}: {}", resp.dump());
        assert_eq!(
            resp.header("X-Backend-Name"),
            Some(want),
            "GET {path} went to the wrong pool"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn context_path_route_without_host_route_is_404_outside_it() {
    let env = TestEnv::start("").await;
    let api = EchoBackend::start("api").await;
    env.register_and_wait(&route("only-ctx.example.com/api", api.port()))
        .await;

    assert_eq!(env.get("only-ctx.example.com", "/api/x").await.status, 200);
    let resp = env.get("only-ctx.example.com", "/apix").await;
    assert_eq!(resp.status, 404, "{}", resp.dump());
}

#[tokio::test(flavor = "multi_thread")]
async fn wildcard_route_matches_subdomains() {
    let env = TestEnv::start("").await;
    let wild = EchoBackend::start("wild").await;
    let exact = EchoBackend::start("exact").await;
    env.register(&route("exact.wild.example.com", exact.port()))
        .await;
    env.register_and_wait(&route("*.wild.example.com", wild.port()))
        .await;

    for (host, want) in [
        ("foo.wild.example.com", "wild"),
        ("a.b.wild.example.com", "wild"),
        ("exact.wild.example.com", "exact"),
    ] {
        let resp = env.get(host, "/").await;
        assert_eq!(resp.status, 200, "{host}: {}", resp.dump());
        assert_eq!(resp.header("X-Backend-Name"), Some(want), "{host}");
    }
    assert_eq!(env.get("wild.example.com", "/").await.status, 404);
    assert_eq!(env.get("foo.other.example.com", "/").await.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn host_header_with_port_is_routed_by_host() {
    let env = TestEnv::start("").await;
    let backend = EchoBackend::start("a").await;
    env.register_and_wait(&route("hp.example.com", backend.port()))
        .await;

    let host = format!("hp.example.com:{}", env.router.port());
    let resp = env.get(&host, "/withport").await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    let seen = EchoedRequest::parse(&resp.body);
    assert_eq!(
        seen.header("Host"),
        Some(host.as_str()),
        "the backend gets the Host as sent"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn host_is_matched_case_insensitively() {
    let env = TestEnv::start("").await;
    let backend = EchoBackend::start("a").await;
    env.register_and_wait(&route("MixedCase.Example.com", backend.port()))
        .await;

    for host in [
        "mixedcase.example.com",
        "MIXEDCASE.EXAMPLE.COM",
        "MixedCase.Example.com",
    ] {
        let resp = env.get(host, "/").await;
        assert_eq!(resp.status, 200, "{host}: {}", resp.dump());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_request_target_is_forwarded_byte_for_byte() {
    let env = TestEnv::start("").await;
    let backend = EchoBackend::start("a").await;
    env.register_and_wait(&route("raw.example.com", backend.port()))
        .await;

    for target in [
        "/a%2Fb//c?q=%20x",
        "/x?a=1&b=%2F&c",
        "/%7Euser/p%C3%A4th;p=1",
        "/trailing/?",
    ] {
        let resp = env.get("raw.example.com", target).await;
        assert_eq!(resp.status, 200, "{target}: {}", resp.dump());
        let seen = EchoedRequest::parse(&resp.body);
        assert_eq!(seen.request_line, format!("GET {target} HTTP/1.1"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn http10_post_with_body_is_forwarded_as_http11() {
    let env = TestEnv::start("").await;
    let backend = EchoBackend::start("a").await;
    env.register_and_wait(&route("old.example.com", backend.port()))
        .await;

    let raw = b"POST /post HTTP/1.0\r\nHost: old.example.com\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 11\r\n\r\nhello=world";
    let resp = env.router.request(raw).await;
    assert_eq!(resp.status_line, "HTTP/1.0 200 OK", "{}", resp.dump());
    let seen = EchoedRequest::parse(&resp.body);
    assert_eq!(seen.request_line, "POST /post HTTP/1.1");
    assert_eq!(seen.header("Content-Length"), Some("11"));
    assert_eq!(seen.body_len, Some(11));
    assert_eq!(backend.requests().last().unwrap().body, b"hello=world");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_registration_serves_all_its_uris() {
    let env = TestEnv::start("").await;
    let backend = EchoBackend::start("a").await;
    let mut msg = route("one.example.com", backend.port());
    msg["uris"] = json!(["one.example.com", "two.example.com/path"]);
    env.register_and_wait(&msg).await;
    env.router.wait_route_path("two.example.com", "/path").await;

    assert_eq!(env.get("one.example.com", "/").await.status, 200);
    assert_eq!(env.get("two.example.com", "/path/x").await.status, 200);
    let resp = env
        .router
        .request(&build_request(
            "GET",
            "/",
            &[("Host", "two.example.com")],
            b"",
        ))
        .await;
    assert_eq!(resp.status, 404, "{}", resp.dump());
}
