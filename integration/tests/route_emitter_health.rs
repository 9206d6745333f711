//! route-emitter health checks against a real gorouter: a route is advertised only while its
//! check passes, unregistered when it fails, and registered again when it passes.

use std::os::unix::fs::PermissionsExt;

use integration::route_emitter::{http_route, RouteEmitterBuilder};
use integration::{EchoBackend, Gorouter, NatsServer};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_health_check_unregisters_and_registers_again() {
    let nats = NatsServer::start().await;
    let router = Gorouter::builder(&nats).start().await;
    let a = EchoBackend::start("a").await;
    let builder = RouteEmitterBuilder::new(Some(&nats));
    let flag = builder.dir().join("healthy");
    let script = builder.dir().join("check.sh");
    std::fs::write(&script, format!("#!/bin/sh\ntest -f {}\n", flag.display())).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut route = http_route("a", "a.health.test", a.port());
    route["health_check"] = json!({"name": "flag", "script_path": script, "timeout": "500ms"});
    std::fs::write(&flag, "").unwrap();
    let _emitter = builder.route(route).start();
    router.wait_route("a.health.test").await;

    std::fs::remove_file(&flag).unwrap();
    router.wait_route_gone("a.health.test").await;

    std::fs::write(&flag, "").unwrap();
    assert_eq!(router.wait_route("a.health.test").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_probe_withholds_a_route_to_a_closed_port() {
    let nats = NatsServer::start().await;
    let router = Gorouter::builder(&nats).start().await;
    let a = EchoBackend::start("a").await;
    let closed = integration::closed_port();
    let mut up = http_route("up", "up.probe.test", a.port());
    up["health_check"] = json!({"type": "tcp", "timeout": "200ms", "interval": "200ms"});
    let mut down = http_route("down", "down.probe.test", closed);
    down["health_check"] =
        json!({"type": "http", "path": "/", "timeout": "200ms", "interval": "200ms"});
    let _emitter = RouteEmitterBuilder::new(Some(&nats))
        .route(up)
        .route(down)
        .start();
    router.wait_route("up.probe.test").await;
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert!(!router.is_routed("down.probe.test").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_probe_follows_the_backend_status_within_an_interval() {
    use integration::backends::{text_response, HttpBackend};
    use std::sync::atomic::{AtomicU16, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    const INTERVAL: Duration = Duration::from_millis(500);
    let nats = NatsServer::start().await;
    let router = Gorouter::builder(&nats).start().await;
    let status = Arc::new(AtomicU16::new(200));
    let served = status.clone();
    let backend = HttpBackend::start(move |req| {
        let status = if req.uri().path() == "/healthz" {
            served.load(Ordering::Relaxed)
        } else {
            200
        };
        async move { text_response(status, "ok") }
    })
    .await;
    let mut route = http_route("a", "a.http-probe.test", backend.port());
    route["health_check"] =
        json!({"type": "http", "path": "/healthz", "timeout": "200ms", "interval": "500ms"});
    let _emitter = RouteEmitterBuilder::new(Some(&nats)).route(route).start();
    assert_eq!(router.wait_route("a.http-probe.test").await.status, 200);

    // The bound: a failing check takes the route away within one interval (plus slack
    // for the probe's timeout and the unregistration's trip through NATS on a loaded machine).
    status.store(503, Ordering::Relaxed);
    let failed_at = Instant::now();
    router.wait_route_gone("a.http-probe.test").await;
    let gone_after = failed_at.elapsed();
    assert!(
        gone_after < INTERVAL + Duration::from_secs(1),
        "route still routed {gone_after:?} after its check started failing"
    );

    status.store(200, Ordering::Relaxed);
    assert_eq!(router.wait_route("a.http-probe.test").await.status, 200);
}
