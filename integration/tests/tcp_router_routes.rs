//! tcp-router and the Routing API: routes created and deleted through the real routing-api
//! binary on MariaDB reach the router's listeners; round-robin; local expiry; a Routing API
//! restart or outage loses nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use integration::mariadb::TestDatabase;
use integration::routing_api::{Database, RoutingApi};
use integration::tcp_router::{
    greeting, is_refused, Client, TcpBackend, TcpRouter, TcpRouterBuilder, TcpRoutes,
};
use integration::util::free_port;

struct Env {
    router: TcpRouter,
    api: RoutingApi,
    _db: TestDatabase,
}

async fn env(prefix: &str, configure: impl FnOnce(TcpRouterBuilder) -> TcpRouterBuilder) -> Env {
    let db = TestDatabase::create(prefix);
    let api = RoutingApi::start(Database::mysql(&db)).await;
    let router = configure(TcpRouterBuilder::new(&api)).start().await;
    Env {
        router,
        api,
        _db: db,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_created_through_the_api_accepts_from_its_event() {
    let env = env("tr_fast", |b| b).await;
    let routes = TcpRoutes::new(&env.api).await;
    let backend = TcpBackend::echo("app-1").await;
    let port = free_port();
    assert!(
        is_refused(port).await,
        "nothing listens on {port} before the route exists"
    );

    // The next sync is a minute away (-syncInterval 1m): only the event stream routes the
    // port before this generous deadline.
    routes.create(&[routes.route(port, backend.port())]).await;
    env.router.wait_routed(port, Duration::from_secs(15)).await;

    let mut c = Client::connect(port)
        .await
        .expect("connect through the router");
    assert_eq!(c.read_line().await.expect("greeting"), "app-1");
    c.echo(b"hello through tcp-router\n").await.expect("echo");
    let served = env
        .router
        .metric(&format!("tcp_router_connections_total{{port=\"{port}\"}}"))
        .await
        .unwrap_or(0.0);
    assert!(
        served >= 2.0,
        "connections counted on port {port}: {served}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_spread_round_robin() {
    let env = env("tr_rr", |b| b).await;
    let routes = TcpRoutes::new(&env.api).await;
    let backends = [
        TcpBackend::echo("b1").await,
        TcpBackend::echo("b2").await,
        TcpBackend::echo("b3").await,
    ];
    let port = free_port();
    let mappings: Vec<_> = backends
        .iter()
        .map(|b| routes.route(port, b.port()))
        .collect();
    routes.create(&mappings).await;
    env.router.wait_routed(port, Duration::from_secs(5)).await;
    // Wait until all three are in the router's pool.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while env.router.metric("tcp_router_backends").await != Some(3.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the router never had 3 backends"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut order = Vec::new();
    for _ in 0..30 {
        let name = greeting(port).await.expect("greeting through the router");
        order.push(name.clone());
        *seen.entry(name).or_default() += 1;
    }
    assert_eq!(
        seen.values().copied().collect::<Vec<_>>(),
        vec![10, 10, 10],
        "30 sequential connections over 3 backends: {seen:?}"
    );
    // Strict rotation: no backend twice in a row.
    assert!(
        order.windows(2).all(|w| w[0] != w[1]),
        "not round-robin: {order:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_last_route_closes_the_listener_and_open_connections_finish() {
    let env = env("tr_close", |b| b).await;
    let routes = TcpRoutes::new(&env.api).await;
    let (a, b) = (TcpBackend::echo("a").await, TcpBackend::echo("b").await);
    let port = free_port();
    let (ra, rb) = (routes.route(port, a.port()), routes.route(port, b.port()));
    routes.create(&[ra.clone(), rb.clone()]).await;
    env.router.wait_routed(port, Duration::from_secs(5)).await;

    let mut open = Client::connect(port).await.expect("connect");
    let first = open.read_line().await.expect("greeting");

    // One of two routes gone: the port stays, only `b` serves.
    routes.delete(&[ra]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let names = [
            greeting(port).await.expect("still routed"),
            greeting(port).await.expect("still routed"),
        ];
        if names.iter().all(|n| n == "b") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "deleted backend still used: {names:?}"
        );
    }

    // The last route gone: the port refuses new connections (from the event: the next sync
    // is a minute away).
    routes.delete(&[rb]).await;
    env.router.wait_refused(port, Duration::from_secs(15)).await;

    // The connection opened before keeps working until its client closes it.
    open.echo(b"still here\n")
        .await
        .unwrap_or_else(|e| panic!("connection to {first} opened before the delete broke: {e}"));
    assert_eq!(env.router.metric("tcp_router_listeners").await, Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routing_api_restart_loses_nothing() {
    let db = TestDatabase::create("tr_restart");
    let api_port = free_port();
    let uuid = format!("routing-api-{}", std::process::id());
    let builder = |port: u16| {
        RoutingApi::builder(Database::mysql(&db))
            .uuid(&uuid)
            .yaml(&format!("api: {{listen_port: {port}}}"))
    };
    let mut api = builder(api_port).start().await;
    // Lists every second, so that several fail during the outage.
    let router = TcpRouterBuilder::new(&api)
        .flags(&["-syncInterval", "1s"])
        .start()
        .await;
    let routes = TcpRoutes::new(&api).await;
    let group = routes.group.clone();
    let (a, b) = (TcpBackend::echo("a").await, TcpBackend::echo("b").await);
    let (pa, pb) = (free_port(), free_port());
    routes
        .create(&[routes.route(pa, a.port()), routes.route(pb, b.port())])
        .await;
    router.wait_routed(pa, Duration::from_secs(5)).await;
    router.wait_routed(pb, Duration::from_secs(5)).await;
    let mut long_lived = Client::connect(pa).await.expect("connect");
    assert_eq!(long_lived.read_line().await.expect("greeting"), "a");

    // The API dies: the router keeps serving what it knows, through list and stream failures.
    let failures_before = router
        .metric("tcp_router_routing_api_sync_failures_total")
        .await
        .expect("sync failures metric");
    drop(routes);
    api.kill9();
    // Both routes are served, and the open connection carries data, on every round until at
    // least two lists have failed and the event stream failed to reconnect.
    let outage = std::time::Instant::now();
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert_eq!(
            greeting(pa).await.expect("routed while the API is down"),
            "a"
        );
        assert_eq!(
            greeting(pb).await.expect("routed while the API is down"),
            "b"
        );
        long_lived
            .echo(b"during the outage\n")
            .await
            .expect("open connection survives");
        let failures = router
            .metric("tcp_router_routing_api_sync_failures_total")
            .await
            .expect("sync failures metric");
        let stream_failed = router
            .output()
            .contains("tcp-router.watcher.failed-subscribing-to-routing-api-event-stream");
        if failures >= failures_before + 2.0 && stream_failed {
            break;
        }
        assert!(
            outage.elapsed() < Duration::from_secs(30),
            "after {:?}: sync failures {failures_before} -> {failures}, stream failure \
             logged: {stream_failed}; output:\n{}",
            outage.elapsed(),
            router.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rounds >= 2, "the outage was checked only once");

    // The API comes back on the same port and database.
    let api = builder(api_port).start().await;
    let routes = TcpRoutes { api: &api, group };
    assert_eq!(greeting(pa).await.expect("routed after the restart"), "a");
    assert_eq!(greeting(pb).await.expect("routed after the restart"), "b");
    // The router resubscribed: a route created now arrives through the new event stream.
    let c = TcpBackend::echo("c").await;
    let pc = free_port();
    routes.create(&[routes.route(pc, c.port())]).await;
    // A generous deadline (the lists run every second here, so timing could not tell the
    // stream from the lists anyway; the stream's failure is checked above).
    router.wait_routed(pc, Duration::from_secs(15)).await;
    // And deletes too.
    routes.delete(&[routes.route(pb, b.port())]).await;
    router.wait_refused(pb, Duration::from_secs(5)).await;
    assert_eq!(greeting(pa).await.expect("untouched route"), "a");
    long_lived
        .echo(b"after the restart\n")
        .await
        .expect("open connection survives");
    let subscriptions = router
        .metric("tcp_router_routing_api_subscriptions_total")
        .await
        .unwrap_or(0.0);
    assert!(subscriptions >= 2.0, "resubscribed: {subscriptions}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_routes_are_pruned_locally_but_not_while_the_api_is_down() {
    let db = TestDatabase::create("tr_expiry");
    let mut api = RoutingApi::start(Database::mysql(&db)).await;
    let router = TcpRouterBuilder::new(&api).start().await;
    let routes = TcpRoutes::new(&api).await;
    let (a, b) = (TcpBackend::echo("a").await, TcpBackend::echo("b").await);
    let (pa, pb) = (free_port(), free_port());

    // With the API up, a backend nobody refreshes goes when its TTL runs out (the router's own
    // check every 200 ms; the API's pruner runs only every 10 s).
    let mut short = routes.route(pa, a.port());
    short["ttl"] = 2.into();
    routes.create(&[short]).await;
    router.wait_routed(pa, Duration::from_secs(5)).await;
    let gone = router.wait_refused(pa, Duration::from_secs(6)).await;
    assert!(
        gone >= Duration::from_millis(1500),
        "expired too early: {gone:?}"
    );
    assert!(
        router
            .metric("tcp_router_expired_backends_total")
            .await
            .unwrap_or(0.0)
            >= 1.0,
        "{}",
        router.metrics().await
    );

    // With the API down, expiry is suspended: a route whose TTL runs out stays.
    let mut short = routes.route(pb, b.port());
    short["ttl"] = 2.into();
    routes.create(&[short]).await;
    router.wait_routed(pb, Duration::from_secs(5)).await;
    drop(routes);
    api.kill9();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        greeting(pb)
            .await
            .expect("still routed after its TTL while the API is down"),
        "b"
    );
    assert_eq!(
        router.metric("tcp_router_expired_backends_total").await,
        Some(1.0)
    );
}
