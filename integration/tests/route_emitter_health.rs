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

/// A TCP probe end to end: the route's backend serves all along, but the probe connects to a
/// port of its own (`health_check.port`). While that port is closed the route is withheld;
/// once it listens the route is registered; when it closes again the route is unregistered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_probe_withholds_a_route_to_a_closed_port() {
    use std::time::Duration;

    let nats = NatsServer::start().await;
    let router = Gorouter::builder(&nats).start().await;
    let a = EchoBackend::start("a").await;
    // Bound but not listening: connecting is refused until `listen` below, and no one else
    // can take the port meanwhile.
    let probe_socket = tokio::net::TcpSocket::new_v4().expect("probe socket");
    probe_socket
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind the probe port");
    let probe_port = probe_socket.local_addr().expect("probe port").port();
    let check =
        |port: u16| json!({"type": "tcp", "port": port, "timeout": "200ms", "interval": "200ms"});
    // Same backend, a probe on its open port: shows the emitter registers through TCP probes.
    let mut control = http_route("control", "control.tcp-probe.test", a.port());
    control["health_check"] = check(a.port());
    let mut probed = http_route("probed", "probed.tcp-probe.test", a.port());
    probed["health_check"] = check(probe_port);
    let _emitter = RouteEmitterBuilder::new(Some(&nats))
        .route(control)
        .route(probed)
        .start();
    assert_eq!(
        router.wait_route("control.tcp-probe.test").await.status,
        200
    );
    // Several probe intervals (and registration intervals) later, still withheld.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !router.is_routed("probed.tcp-probe.test").await,
        "registered although its TCP probe's port is closed"
    );

    let listener = probe_socket.listen(16).expect("listen on the probe port");
    assert_eq!(router.wait_route("probed.tcp-probe.test").await.status, 200);

    // The probe fails again: the route is unregistered; the control route stays.
    drop(listener);
    router.wait_route_gone("probed.tcp-probe.test").await;
    assert_eq!(router.get("control.tcp-probe.test", "/").await.status, 200);
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
    // Re-registered only every 10 s: a check run at registration time instead of every
    // `interval` would leave the route up to that long.
    route["registration_interval"] = json!("10s");
    route["health_check"] =
        json!({"type": "http", "path": "/healthz", "timeout": "200ms", "interval": "500ms"});
    let _emitter = RouteEmitterBuilder::new(Some(&nats)).route(route).start();
    assert_eq!(router.wait_route("a.http-probe.test").await.status, 200);

    // The bound: a failing check takes the route away within one interval (plus the
    // probe's timeout and the unregistration's trip through NATS). Asserted with the slack a
    // loaded machine needs, ten intervals, which is still half the registration interval: a
    // route that waited for its next registration (or for the router's TTL) fails it.
    status.store(503, Ordering::Relaxed);
    let failed_at = Instant::now();
    router.wait_route_gone("a.http-probe.test").await;
    let gone_after = failed_at.elapsed();
    assert!(
        gone_after < INTERVAL * 10,
        "route still routed {gone_after:?} after its check started failing"
    );

    status.store(200, Ordering::Relaxed);
    assert_eq!(router.wait_route("a.http-probe.test").await.status, 200);
}
