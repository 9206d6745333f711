//! Health (A.12): `/health` on the status port, the liveness probe, the start delay, and the
//! load balancer's health check answered on the proxy port by user agent.

use std::time::{Duration, Instant};

use integration::http::{build_request, try_request};
use integration::{Gorouter, NatsServer, TestEnv};

#[tokio::test(flavor = "multi_thread")]
async fn health_is_ok_with_upstream_headers() {
    let env = TestEnv::start("").await;
    let resp = env.router.health().await.expect("/health answers");
    assert_eq!(resp.status_line, "HTTP/1.1 200 OK", "{}", resp.dump());
    assert_eq!(resp.body_str(), "ok\n");
    assert_eq!(resp.header("Cache-Control"), Some("private, max-age=0"));
    assert_eq!(resp.header("Expires"), Some("0"));
    assert_eq!(resp.header("Content-Length"), Some("3"));
}

#[tokio::test(flavor = "multi_thread")]
async fn liveness_probe_is_ok() {
    let env = TestEnv::start("").await;
    let resp = integration::http::request(
        env.router.status_addr(),
        b"GET /is-process-alive-do-not-use-for-loadbalancing HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    assert_eq!(resp.body_str(), "ok\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_is_503_until_the_start_delay_has_passed() {
    let nats = NatsServer::start().await;
    let spawned = Instant::now();
    let mut router = Gorouter::builder(&nats)
        .yaml("start_response_delay_interval: 1500ms")
        .spawn();
    let mut saw_503 = false;
    let deadline = spawned + Duration::from_secs(15);
    loop {
        assert_eq!(router.try_exit(), None, "router exited");
        if let Ok(resp) = try_request(
            router.status_addr(),
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await
        {
            match resp.status {
                503 => saw_503 = true,
                200 => {
                    let at = spawned.elapsed();
                    assert!(
                        at >= Duration::from_millis(1400),
                        "/health was 200 after {at:?}, before the 1.5 s start delay"
                    );
                    break;
                }
                other => panic!("/health answered {other}: {}", resp.dump()),
            }
        }
        assert!(Instant::now() < deadline, "/health never became 200");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_503, "/health never answered 503 while initializing");
}

#[tokio::test(flavor = "multi_thread")]
async fn load_balancer_health_check_is_answered_on_the_proxy_port() {
    let env = TestEnv::start("").await;
    for host in ["unrouted.example.com", "127.0.0.1"] {
        let resp = env
            .router
            .request(&build_request(
                "GET",
                "/",
                &[("Host", host), ("User-Agent", "HTTP-Monitor/1.1")],
                b"",
            ))
            .await;
        assert_eq!(resp.status, 200, "Host {host}: {}", resp.dump());
        assert_eq!(resp.body_str(), "ok\n");
        assert_eq!(resp.header("X-Cf-Routererror"), None);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn configured_health_check_user_agent_is_used() {
    let env = TestEnv::start("healthcheck_user_agent: it-lb/2.0").await;
    let ok = env
        .router
        .request(&build_request(
            "GET",
            "/",
            &[("Host", "x.example.com"), ("User-Agent", "it-lb/2.0")],
            b"",
        ))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.dump());
    assert_eq!(ok.body_str(), "ok\n");
    let other = env
        .router
        .request(&build_request(
            "GET",
            "/",
            &[
                ("Host", "x.example.com"),
                ("User-Agent", "HTTP-Monitor/1.1"),
            ],
            b"",
        ))
        .await;
    assert_eq!(other.status, 404, "{}", other.dump());
}

/// An empty `healthcheck_user_agent` (Go's `Header.Get` of a missing header is "") makes every
/// request without a user agent a load-balancer health check, as upstream documents.
#[tokio::test(flavor = "multi_thread")]
async fn empty_health_check_user_agent_matches_requests_without_one() {
    let env = TestEnv::start("healthcheck_user_agent: ''").await;
    let ok = env
        .router
        .request(&build_request(
            "GET",
            "/",
            &[("Host", "x.example.com")],
            b"",
        ))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.dump());
    assert_eq!(ok.body_str(), "ok\n");
    let other = env.get("x.example.com", "/").await;
    assert_eq!(other.status, 404, "{}", other.dump());
}
