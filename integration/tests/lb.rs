//! Load balancing (A.6, A.8): round robin, least connection, retries past a dead endpoint,
//! sticky sessions (`__VCAP_ID__`) and `X-CF-App-Instance` routing.

use std::time::Duration;

use integration::backends::{full_body, HeldBackend};
use integration::http::{build_request, get_request};
use integration::{closed_port, route, EchoBackend, EchoedRequest, HttpBackend, TestEnv};
use serde_json::{json, Value};

fn instance_route(uri: &str, port: u16, instance_id: &str) -> Value {
    let mut msg = route(uri, port);
    msg["private_instance_id"] = json!(instance_id);
    msg
}

/// A backend that names itself in `X-Instance` and sets the given `Set-Cookie` values.
async fn cookie_backend(name: &'static str, cookies: &'static [&'static str]) -> HttpBackend {
    HttpBackend::start(move |_req| async move {
        let mut b = http::Response::builder()
            .status(200)
            .header("X-Instance", name);
        for c in cookies {
            b = b.header("Set-Cookie", *c);
        }
        b.body(full_body(name)).unwrap()
    })
    .await
}

fn vcap_cookie(resp: &integration::RawResponse) -> Option<String> {
    resp.header_all("Set-Cookie")
        .into_iter()
        .find(|c| c.starts_with("__VCAP_ID__="))
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_alternates_between_two_backends() {
    let env = TestEnv::start("balancing_algorithm: round-robin").await;
    let a = EchoBackend::start("a").await;
    let b = EchoBackend::start("b").await;
    env.register(&route("rr.example.com", a.port())).await;
    env.register(&route("rr.example.com", b.port())).await;
    env.sync().await;

    let mut seen = Vec::new();
    for _ in 0..10 {
        let resp = env.get("rr.example.com", "/").await;
        assert_eq!(resp.status, 200, "{}", resp.dump());
        seen.push(resp.header("X-Backend-Name").unwrap().to_string());
    }
    assert!(
        seen.windows(2).all(|w| w[0] != w[1]),
        "round robin must alternate: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_endpoint_is_retried_on_the_next_one() {
    let env = TestEnv::start("backends: {max_attempts: 3}").await;
    let live = EchoBackend::start("live").await;
    env.register(&route("retry.example.com", closed_port()))
        .await;
    env.register(&route("retry.example.com", live.port())).await;
    env.sync().await;

    for i in 0..10 {
        let resp = env.get("retry.example.com", &format!("/{i}")).await;
        assert_eq!(resp.status, 200, "request {i}: {}", resp.dump());
        assert_eq!(resp.header("X-Backend-Name"), Some("live"));
    }
    assert_eq!(live.request_count(), 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn post_is_retried_when_nothing_was_sent() {
    let env = TestEnv::start("backends: {max_attempts: 3}").await;
    let live = EchoBackend::start("live").await;
    env.register(&route("retrypost.example.com", closed_port()))
        .await;
    env.register(&route("retrypost.example.com", live.port()))
        .await;
    env.sync().await;

    for i in 0..4 {
        let resp = env
            .router
            .request(&build_request(
                "POST",
                "/p",
                &[("Host", "retrypost.example.com")],
                b"payload",
            ))
            .await;
        assert_eq!(resp.status, 200, "request {i}: {}", resp.dump());
        assert_eq!(EchoedRequest::parse(&resp.body).body_len, Some(7));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn least_connection_avoids_the_busy_endpoint() {
    let env = TestEnv::start("balancing_algorithm: least-connection").await;
    let busy = HeldBackend::until_released().await;
    let idle = EchoBackend::start("idle").await;
    env.register(&route("lc.example.com", busy.port())).await;
    env.register(&route("lc.example.com", idle.port())).await;
    env.sync().await;

    // Send requests until one is held by the busy endpoint.
    let addr = env.router.addr();
    let mut held = None;
    for i in 0..20 {
        let mut task = tokio::spawn(async move {
            integration::http::request(addr, &get_request("lc.example.com", &format!("/{i}"))).await
        });
        // Whichever comes first: the busy endpoint holding it, or the idle one's answer (a
        // fixed wait for the busy one would mistake a late arrival for the idle one's turn).
        tokio::select! {
            arrived = busy.arrived_within(Duration::from_secs(30)) => {
                assert!(arrived.is_some(), "request {i} neither held nor answered in 30 s");
                held = Some(task);
                break;
            }
            resp = &mut task => {
                assert_eq!(resp.unwrap().header("X-Backend-Name"), Some("idle"));
            }
        }
    }
    let held = held.expect("no request ever reached the second endpoint");

    for i in 0..6 {
        let resp = tokio::time::timeout(
            Duration::from_secs(30),
            env.get("lc.example.com", &format!("/next{i}")),
        )
        .await
        .unwrap_or_else(|_| {
            panic!("request {i} was sent to the endpoint that already has a request in flight")
        });
        assert_eq!(
            resp.header("X-Backend-Name"),
            Some("idle"),
            "{}",
            resp.dump()
        );
    }
    busy.release();
    assert_eq!(held.await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn sticky_cookie_names_the_instance() {
    let env = TestEnv::start("").await;
    let a = cookie_backend("inst-a", &["JSESSIONID=abc123"]).await;
    env.register_and_wait(&instance_route("sticky.example.com", a.port(), "inst-a"))
        .await;

    let resp = env.get("sticky.example.com", "/").await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    let cookies = resp.header_all("Set-Cookie");
    assert!(cookies.contains(&"JSESSIONID=abc123"), "{cookies:?}");
    assert_eq!(
        vcap_cookie(&resp).as_deref(),
        Some("__VCAP_ID__=inst-a; Path=/; HttpOnly"),
        "{cookies:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sticky_cookie_copies_secure_and_samesite() {
    let env = TestEnv::start("").await;
    let a = cookie_backend(
        "inst-a",
        &["JSESSIONID=abc123; Path=/; Secure; SameSite=Strict"],
    )
    .await;
    env.register_and_wait(&instance_route("secure.example.com", a.port(), "inst-a"))
        .await;

    let resp = env.get("secure.example.com", "/").await;
    assert_eq!(
        vcap_cookie(&resp).as_deref(),
        Some("__VCAP_ID__=inst-a; Path=/; HttpOnly; Secure; SameSite=Strict"),
        "{:?}",
        resp.header_all("Set-Cookie")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sticky_cookie_path_is_the_route_context_path() {
    let env = TestEnv::start("").await;
    let a = cookie_backend("inst-a", &["JSESSIONID=abc123"]).await;
    env.register_and_wait(&instance_route(
        "ctxsticky.example.com/ctx",
        a.port(),
        "inst-a",
    ))
    .await;

    let resp = env.get("ctxsticky.example.com", "/ctx/page").await;
    assert_eq!(
        vcap_cookie(&resp).as_deref(),
        Some("__VCAP_ID__=inst-a; Path=/ctx; HttpOnly")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_sticky_cookie_without_session_cookie() {
    let env = TestEnv::start("").await;
    let a = cookie_backend("inst-a", &["other=1"]).await;
    env.register_and_wait(&instance_route("nosticky.example.com", a.port(), "inst-a"))
        .await;

    let resp = env.get("nosticky.example.com", "/").await;
    assert_eq!(resp.header_all("Set-Cookie"), ["other=1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn sticky_session_pins_requests_to_one_instance() {
    let env = TestEnv::start("").await;
    let a = cookie_backend("inst-a", &["JSESSIONID=abc123"]).await;
    let b = cookie_backend("inst-b", &["JSESSIONID=abc123"]).await;
    env.register(&instance_route("pin.example.com", a.port(), "inst-a"))
        .await;
    env.register(&instance_route("pin.example.com", b.port(), "inst-b"))
        .await;
    env.sync().await;

    // Without cookies requests alternate between the two instances.
    let mut without = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let resp = env.get("pin.example.com", "/").await;
        without.insert(resp.header("X-Instance").unwrap().to_string());
    }
    assert_eq!(
        without.len(),
        2,
        "round robin should reach both: {without:?}"
    );

    let first = env.get("pin.example.com", "/").await;
    let instance = first.header("X-Instance").unwrap().to_string();
    let cookie = vcap_cookie(&first).expect("__VCAP_ID__ cookie");
    assert!(
        cookie.starts_with(&format!("__VCAP_ID__={instance};")),
        "{cookie}"
    );

    let cookie_header = format!("JSESSIONID=abc123; __VCAP_ID__={instance}");
    for i in 0..10 {
        let resp = env
            .router
            .request(&build_request(
                "GET",
                "/",
                &[("Host", "pin.example.com"), ("Cookie", &cookie_header)],
                b"",
            ))
            .await;
        assert_eq!(
            resp.header("X-Instance"),
            Some(instance.as_str()),
            "request {i} left the sticky instance"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sticky_session_moves_when_instance_is_gone() {
    let env = TestEnv::start("").await;
    let b = cookie_backend("inst-b", &["JSESSIONID=abc123"]).await;
    env.register_and_wait(&instance_route("moved.example.com", b.port(), "inst-b"))
        .await;

    let resp = env
        .router
        .request(&build_request(
            "GET",
            "/",
            &[
                ("Host", "moved.example.com"),
                ("Cookie", "JSESSIONID=abc123; __VCAP_ID__=inst-gone"),
            ],
            b"",
        ))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    assert_eq!(resp.header("X-Instance"), Some("inst-b"));
    assert_eq!(
        vcap_cookie(&resp).as_deref(),
        Some("__VCAP_ID__=inst-b; Path=/; HttpOnly")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn app_instance_header_selects_that_instance() {
    let env = TestEnv::start("").await;
    let guid = "0123abcd-0000-4000-8000-00000000beef";
    let zero = EchoBackend::start("zero").await;
    let one = EchoBackend::start("one").await;
    for (backend, idx) in [(&zero, "0"), (&one, "1")] {
        let mut msg = route("pick.example.com", backend.port());
        msg["app"] = json!(guid);
        msg["private_instance_index"] = json!(idx);
        env.register(&msg).await;
    }
    env.sync().await;

    for i in 0..6 {
        let resp = env
            .router
            .request(&build_request(
                "GET",
                "/",
                &[
                    ("Host", "pick.example.com"),
                    ("X-CF-App-Instance", &format!("{guid}:1")),
                ],
                b"",
            ))
            .await;
        assert_eq!(resp.status, 200, "request {i}: {}", resp.dump());
        assert_eq!(resp.header("X-Backend-Name"), Some("one"), "request {i}");
        let seen = EchoedRequest::parse(&resp.body);
        assert_eq!(
            seen.header("X-Cf-App-Instance"),
            None,
            "the header is consumed by the router"
        );
        assert_eq!(seen.header("X-Cf-Instanceindex"), Some("1"));
    }
}

/// A backend that answers the first request on each connection with keep-alive, then closes
/// the connection as soon as the next request arrives, without answering it: the race of a
/// backend closing an idle keep-alive connection just as the router reuses it.
async fn closes_reused_connections_backend() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut head = Vec::new();
                while integration::http::find(&head, b"\r\n\r\n").is_none() {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                // Wait for the next request on this connection, then drop it unanswered.
                let _ = stream.read(&mut buf).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn get_lost_on_a_stale_keep_alive_connection_is_resent() {
    let env = TestEnv::start("").await;
    let port = closes_reused_connections_backend().await;
    env.register_and_wait(&route("stale-keepalive.example.com", port))
        .await;
    for i in 0..5 {
        let resp = env.get("stale-keepalive.example.com", "/").await;
        assert_eq!(resp.status, 200, "request {i}: {}", resp.dump());
        assert_eq!(resp.body_str(), "ok");
    }
}
