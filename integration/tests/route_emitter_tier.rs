//! route-emitter driving the whole tier: the real routing-api on MariaDB, gorouter over a private
//! nats-server, tcp-router, and one route-emitter config. HTTP routes reach their backends through
//! gorouter, TCP and SNI routes through tcp-router, and HTTP routes sent to the Routing API reach a
//! gorouter that has no NATS at all.

use std::time::Duration;

use integration::mariadb::TestDatabase;
use integration::route_emitter::{http_route, tcp_route, RouteEmitterBuilder};
use integration::routing_api::{Database, RoutingApi, DEFAULT_GROUP};
use integration::tcp_router::{client_hello, Client, TcpBackend, TcpRouter, TcpRouterBuilder};
use integration::util::free_port;
use integration::{EchoBackend, Gorouter, GorouterBuilder, NatsServer};
use serde_json::{json, Value};

/// How long a route may take to appear in tcp-router after the emitter starts (one upsert, one
/// event).
const TCP_ROUTE_DEADLINE: Duration = Duration::from_secs(10);

struct Tier {
    api: RoutingApi,
    tcp_router: TcpRouter,
    _db: TestDatabase,
}

/// routing-api on a MariaDB database of the test's own, and a tcp-router following it.
async fn tier(prefix: &str) -> Tier {
    let db = TestDatabase::create(prefix);
    let api = RoutingApi::start(Database::mysql(&db)).await;
    let tcp_router = TcpRouterBuilder::new(&api).start().await;
    Tier {
        api,
        tcp_router,
        _db: db,
    }
}

/// The emitter's `routing_api` section for `api` (plain HTTP, no UAA).
fn routing_api_section(api: &RoutingApi) -> Value {
    json!({"api_url": api.url(), "max_ttl": "30s"})
}

/// Sends `first` through tcp-router's `port` and returns the name the backend greets with.
async fn backend_behind(port: u16, first: &[u8]) -> String {
    let mut c = Client::connect(port)
        .await
        .expect("connect through tcp-router");
    c.write(first).await.expect("send the first bytes");
    c.read_line().await.expect("the backend's greeting")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_config_serves_http_routes_through_gorouter_and_a_tcp_route_through_tcp_router() {
    let tier = tier("re_tier").await;
    let nats = NatsServer::start().await;
    let router = Gorouter::builder(&nats).start().await;
    let (a, b) = (EchoBackend::start("a").await, EchoBackend::start("b").await);
    let t = TcpBackend::echo("tcp-backend").await;
    let external = free_port();
    let _emitter = RouteEmitterBuilder::new(Some(&nats))
        .set("routing_api", routing_api_section(&tier.api))
        .route(http_route("a", "a.tier.test", a.port()))
        .route(http_route("b", "b.tier.test", b.port()))
        .route(tcp_route("t", DEFAULT_GROUP, external, t.port()))
        .start();

    let ra = router.wait_route("a.tier.test").await;
    let rb = router.wait_route("b.tier.test").await;
    assert_eq!((ra.status, ra.header("X-Backend-Name")), (200, Some("a")));
    assert_eq!((rb.status, rb.header("X-Backend-Name")), (200, Some("b")));

    tier.tcp_router
        .wait_routed(external, TCP_ROUTE_DEADLINE)
        .await;
    let mut c = Client::connect(external)
        .await
        .expect("connect through tcp-router");
    assert_eq!(c.read_line().await.expect("greeting"), "tcp-backend");
    c.echo(b"through the tier").await.expect("echo");
    assert!(t.accepted() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_routes_share_an_external_port_and_pick_the_backend_by_server_name() {
    let tier = tier("re_sni").await;
    let (one, two) = (TcpBackend::echo("one").await, TcpBackend::echo("two").await);
    let external = free_port();
    let sni = |name: &str, san: &str, backend: &TcpBackend| {
        json!({
            "type": "sni",
            "name": name,
            "router_group": DEFAULT_GROUP,
            "external_port": external,
            "sni_port": backend.port(),
            "sni_routable_san": san,
            "registration_interval": "1s",
        })
    };
    let _emitter = RouteEmitterBuilder::new(None)
        .set("routing_api", routing_api_section(&tier.api))
        .route(sni("one", "one.sni.test", &one))
        .route(sni("two", "two.sni.test", &two))
        .start();

    let hello_two = client_hello("two.sni.test");
    let deadline = tokio::time::Instant::now() + TCP_ROUTE_DEADLINE;
    // Both mappings arrive separately: wait until the second server name is routed.
    loop {
        if let Ok(Ok(name)) = tokio::time::timeout(Duration::from_secs(2), async {
            let mut c = Client::connect(external).await?;
            c.write(&hello_two).await?;
            c.read_line().await
        })
        .await
        {
            if name == "two" {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "two.sni.test was not routed to its backend within {TCP_ROUTE_DEADLINE:?}; output:\n{}",
            tier.tcp_router.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        backend_behind(external, &client_hello("one.sni.test")).await,
        "one"
    );
    assert_eq!(backend_behind(external, &hello_two).await, "two");

    let mappings = tier.api.tcp_routes().await;
    let mut sans: Vec<&str> = mappings
        .iter()
        .filter(|m| m["port"] == external)
        .filter_map(|m| m["backend_sni_hostname"].as_str())
        .collect();
    sans.sort_unstable();
    assert_eq!(sans, ["one.sni.test", "two.sni.test"], "{mappings:?}");
}

/// A gorouter whose only route source is `api`. The NATS port is never used: `nats.hosts: []`
/// leaves the Routing API as the only source.
async fn router_without_nats(api: &RoutingApi) -> Gorouter {
    GorouterBuilder::new(integration::closed_port())
        .yaml(&format!(
            "nats: {{hosts: []}}\n\
             routing_api: {{uri: 'http://127.0.0.1', port: {}, auth_disabled: true}}\n",
            api.http_port
        ))
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_routes_sent_to_the_routing_api_reach_a_gorouter_without_nats() {
    let db = TestDatabase::create("re_no_nats");
    let api = RoutingApi::start(Database::mysql(&db)).await;
    let router = router_without_nats(&api).await;
    let a = EchoBackend::start("a").await;
    let mut route = http_route("a", "a.no-nats.test", a.port());
    route["transport"] = json!("routing_api");
    route["app"] = json!("app-without-nats");
    let mut emitter = RouteEmitterBuilder::new(None)
        .set("routing_api", routing_api_section(&api))
        .route(route)
        .start();

    let resp = router.wait_route("a.no-nats.test").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("X-Backend-Name"), Some("a"));

    // On SIGTERM the emitter deletes the route; the event reaches the router.
    emitter.signal(libc::SIGTERM);
    assert!(emitter.wait_exit(Duration::from_secs(10)).await.success());
    router.wait_route_gone("a.no-nats.test").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_written_for_a_foundation_reaches_a_gorouter_without_nats_through_the_routing_api()
{
    let db = TestDatabase::create("re_no_bus");
    let api = RoutingApi::start(Database::mysql(&db)).await;
    let router = router_without_nats(&api).await;
    let a = EchoBackend::start("plain").await;
    // No `transport` key, as in a foundation's route-registrar config; the emitter has no
    // message bus, so the route goes to the Routing API.
    let _emitter = RouteEmitterBuilder::new(None)
        .set("routing_api", routing_api_section(&api))
        .route(http_route("plain", "plain.no-bus.test", a.port()))
        .start();

    let resp = router.wait_route("plain.no-bus.test").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("X-Backend-Name"), Some("plain"));
}
