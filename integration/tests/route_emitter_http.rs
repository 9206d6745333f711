//! route-emitter and a real gorouter over a private nats-server: static HTTP routes are
//! routed; a restarted gorouter gets them back as soon as it announces itself; SIGTERM
//! unregisters them; dynamic config files add and remove routes.

use std::time::{Duration, Instant};

use integration::route_emitter::{http_route, RouteEmitterBuilder};
use integration::{EchoBackend, Gorouter, NatsServer};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_http_routes_reach_both_backends() {
    let nats = NatsServer::start().await;
    let router = Gorouter::builder(&nats).start().await;
    let a = EchoBackend::start("a").await;
    let b = EchoBackend::start("b").await;
    let _emitter = RouteEmitterBuilder::new(Some(&nats))
        .route(http_route("a", "a.emitter.test", a.port()))
        .route(http_route("b", "b.emitter.test", b.port()))
        .start();
    let ra = router.wait_route("a.emitter.test").await;
    let rb = router.wait_route("b.emitter.test").await;
    assert_eq!(ra.status, 200);
    assert_eq!(rb.status, 200);
    assert_eq!(ra.header("X-Backend-Name"), Some("a"));
    assert_eq!(rb.header("X-Backend-Name"), Some("b"));
    assert!(a.request_count() >= 1);
    assert!(b.request_count() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_gorouter_gets_routes_back_on_router_start() {
    let nats = NatsServer::start().await;
    let router = Gorouter::builder(&nats).start().await;
    let a = EchoBackend::start("a").await;
    // A long interval: only router.start can bring the route back quickly.
    let mut route = http_route("a", "a.restart.test", a.port());
    route["registration_interval"] = json!("60s");
    let _emitter = RouteEmitterBuilder::new(Some(&nats)).route(route).start();
    router.wait_route("a.restart.test").await;
    drop(router);

    // The next periodic registration is 60 s away: only router.start brings the route back
    // before wait_route's own deadline (10 s).
    let router = Gorouter::builder(&nats).start().await;
    let resp = router.wait_route("a.restart.test").await;
    assert_eq!(resp.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_unregisters_routes() {
    let nats = NatsServer::start().await;
    let router = Gorouter::builder(&nats).start().await;
    let a = EchoBackend::start("a").await;
    let mut route = http_route("a", "a.term.test", a.port());
    route["registration_interval"] = json!("60s");
    let mut emitter = RouteEmitterBuilder::new(Some(&nats)).route(route).start();
    router.wait_route("a.term.test").await;
    emitter.signal(libc::SIGTERM);
    let status = emitter.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status:?}");
    router.wait_route_gone("a.term.test").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_config_files_add_change_and_remove_routes() {
    let nats = NatsServer::start().await;
    let router = Gorouter::builder(&nats).start().await;
    let a = EchoBackend::start("a").await;
    let builder = RouteEmitterBuilder::new(Some(&nats));
    let dir = builder.dir().join("routes.d");
    std::fs::create_dir_all(&dir).unwrap();
    let _emitter = builder
        .set(
            "dynamic_config_globs",
            json!([format!("{}/*.json", dir.display())]),
        )
        .start();
    let file = dir.join("one.json");
    let doc = |uri: &str| {
        json!({"routes": [{"name": "d", "port": a.port(), "uris": [uri], "registration_interval": "60s"}]})
            .to_string()
    };
    std::fs::write(&file, doc("d1.dynamic.test")).unwrap();
    router.wait_route("d1.dynamic.test").await;

    // A bad file is reported and ignored; the good file's route stays.
    std::fs::write(dir.join("bad.json"), "{not json").unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(router.is_routed("d1.dynamic.test").await);

    // An edit is served, and the removed route 404s, each before the wait's own deadline
    // (10 s; the routes' registration_interval is 60 s, so only the file watch can do it).
    std::fs::write(&file, doc("d2.dynamic.test")).unwrap();
    let edited = Instant::now();
    router.wait_route("d2.dynamic.test").await;
    router.wait_route_gone("d1.dynamic.test").await;
    eprintln!("edit applied after {:?}", edited.elapsed());

    std::fs::remove_file(&file).unwrap();
    router.wait_route_gone("d2.dynamic.test").await;
}

/// An outage of the test's own NATS while the emitter runs with its route registered: the
/// router keeps the route (pruning is suspended while NATS is down) and the emitter keeps
/// running with its routes; once NATS is back the emitter registers them over the new
/// connection. The router drops a route 3 s after its last registration (all are refreshed
/// once on reconnect), so serving it for 8 s after the outage takes new registrations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_outage_keeps_routes_and_registers_after_reconnect() {
    let mut nats = NatsServer::start().await;
    let router = Gorouter::builder(&nats)
        .yaml(
            "droplet_stale_threshold: 3s\nprune_stale_droplets_interval: 200ms\n\
             suspend_pruning_if_nats_unavailable: true",
        )
        .start()
        .await;
    let a = EchoBackend::start("a").await;
    let mut emitter = RouteEmitterBuilder::new(Some(&nats))
        .route(http_route("a", "a.outage.test", a.port()))
        .start();
    assert_eq!(router.wait_route("a.outage.test").await.status, 200);

    nats.stop().await;
    // Longer than the route's 3 s: kept by the router, and the emitter stays up.
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(5) {
        let resp = router.get("a.outage.test", "/").await;
        assert_eq!(
            resp.status,
            200,
            "route lost {:?} into the NATS outage; router output:\n{}",
            outage.elapsed(),
            router.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        emitter.try_exit().is_none(),
        "the emitter exited during the outage:\n{}",
        emitter.output()
    );

    nats.restart().await;
    let back = Instant::now();
    while back.elapsed() < Duration::from_secs(8) {
        let resp = router.get("a.outage.test", "/").await;
        assert_eq!(
            resp.status,
            200,
            "route lost {:?} after NATS came back; emitter output:\n{}",
            back.elapsed(),
            emitter.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(emitter.try_exit().is_none(), "{}", emitter.output());
    assert!(
        emitter
            .output()
            .contains("Route Registrar.nats-disconnected"),
        "{}",
        emitter.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_survive_a_nats_restart() {
    let mut nats = NatsServer::start().await;
    // Routes expire 3 s after their last registration: surviving well past that after the
    // restart means the emitter kept registering over the new connection.
    let router = Gorouter::builder(&nats)
        .yaml("droplet_stale_threshold: 3s\nprune_stale_droplets_interval: 200ms")
        .start()
        .await;
    let a = EchoBackend::start("a").await;
    let _emitter = RouteEmitterBuilder::new(Some(&nats))
        .route(http_route("a", "a.nats-restart.test", a.port()))
        .start();
    router.wait_route("a.nats-restart.test").await;

    nats.restart().await;
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(8) {
        let resp = router.get("a.nats-restart.test", "/").await;
        assert_eq!(
            resp.status,
            200,
            "route lost {:?} after the NATS restart; router output:\n{}",
            watched.elapsed(),
            router.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
