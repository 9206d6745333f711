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
