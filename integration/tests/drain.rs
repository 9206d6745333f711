//! Signals (A.13): SIGUSR1 drains (health 503 at once, keep serving for `drain_wait`, then stop
//! accepting, finish in-flight requests, exit 0); SIGTERM and SIGINT stop promptly with 0.

use std::time::{Duration, Instant};

use integration::http::{get_request, HttpConn};
use integration::{eventually, route, EchoBackend, HeldBackend, TestEnv};

#[tokio::test(flavor = "multi_thread")]
async fn usr1_drains_in_flight_request_then_exits_zero() {
    let mut env = TestEnv::start("drain_wait: 300ms\ndrain_timeout: 5s").await;
    let slow = HeldBackend::with_delay(Duration::from_millis(1500)).await;
    env.register(&route("slow.example.com", slow.port())).await;
    env.sync().await;

    let addr = env.router.addr();
    let in_flight = tokio::spawn(async move {
        integration::http::request(addr, &get_request("slow.example.com", "/slow")).await
    });
    assert_eq!(slow.arrived().await, "/slow");

    let signalled = Instant::now();
    env.router.signal(libc::SIGUSR1);
    let router = &env.router;
    eventually(
        "/health to answer 503 right after SIGUSR1",
        Duration::from_millis(300),
        || async move {
            router
                .health()
                .await
                .filter(|r| r.status == 503)
                .map(|_| ())
        },
    )
    .await;

    let refused_at = eventually(
        "the proxy port to refuse connections after drain_wait",
        Duration::from_secs(3),
        || async move {
            match tokio::net::TcpStream::connect(router.addr()).await {
                Err(_) => Some(signalled.elapsed()),
                Ok(_) => None,
            }
        },
    )
    .await;
    assert!(
        refused_at >= Duration::from_millis(250),
        "the listener closed {refused_at:?} after SIGUSR1, before drain_wait (300ms)"
    );

    let resp = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .expect("in-flight request finished")
        .expect("request task");
    assert_eq!(resp.status, 200, "in-flight request: {}", resp.dump());
    assert_eq!(resp.body_str(), "released\n");

    let status = env.router.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_keeps_serving_during_drain_wait() {
    let env = TestEnv::start("drain_wait: 2s").await;
    let backend = EchoBackend::start("a").await;
    env.register_and_wait(&route("wait.example.com", backend.port()))
        .await;

    env.router.signal(libc::SIGUSR1);
    let router = &env.router;
    eventually(
        "/health to answer 503",
        Duration::from_millis(500),
        || async move {
            router
                .health()
                .await
                .filter(|r| r.status == 503)
                .map(|_| ())
        },
    )
    .await;
    let resp = env.get("wait.example.com", "/").await;
    assert_eq!(
        resp.status,
        200,
        "new request during drain_wait: {}",
        resp.dump()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn usr1_with_idle_keepalive_connection_still_exits() {
    // drain_timeout is far beyond the wait's deadline: a drain held up by the idle connection
    // until drain_timeout fails the wait, however loaded the machine.
    let mut env = TestEnv::start("drain_wait: 100ms\ndrain_timeout: 120s").await;
    let backend = EchoBackend::start("a").await;
    env.register_and_wait(&route("idle.example.com", backend.port()))
        .await;
    // An idle keep-alive client connection must not hold the drain up.
    let mut conn = HttpConn::connect(env.router.addr()).await;
    conn.send(&get_request("idle.example.com", "/")).await;
    assert_eq!(conn.read_response().await.status, 200);

    env.router.signal(libc::SIGUSR1);
    let status = env.router.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
    drop(conn);
}

async fn stops_promptly(sig: i32) {
    // drain_wait is far beyond the wait's deadline: a signal that drained (instead of stopping)
    // fails the wait, however loaded the machine.
    let mut env = TestEnv::start("drain_wait: 120s\ndrain_timeout: 240s").await;
    env.router.signal(sig);
    let status = env.router.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_promptly_with_zero() {
    stops_promptly(libc::SIGTERM).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_stops_promptly_with_zero() {
    stops_promptly(libc::SIGINT).await;
}
