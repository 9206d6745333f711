//! gorouter with the Routing API as a route source (A.3 route fetcher): the real `routing-api`
//! binary (dev mode, no token checks, on a SQLite file of the test's own) and a real gorouter with
//! `nats.hosts: []`, so every route it serves came from the Routing API's list or event stream.

use std::time::{Duration, Instant};

use integration::http::{get_request, try_request};
use integration::mariadb::TestDatabase;
use integration::routing_api::{listener_port, Database, RoutingApi};
use integration::{EchoBackend, Gorouter, GorouterBuilder, NatsServer, TempDir};
use serde_json::json;

/// A generous deadline for a route change to reach the router's table (by event, or at the
/// latest by the next list, every 2 s here), on a loaded machine: a change that never arrives
/// fails the wait.
const EVENT_DEADLINE: Duration = Duration::from_secs(20);

/// A TTL shorter than the pruner's window (`prune_stale_droplets_interval: 4s` here): a route
/// with it that nothing refreshes is pruned within `SHORT_TTL` + 4 s; the lists (every 2 s)
/// refresh it in time.
const SHORT_TTL: u64 = 5;

/// Longer than a route with [`SHORT_TTL`] survives unrefreshed (TTL + the pruner's interval,
/// with slack for a loaded machine).
const PRUNE_WINDOW: Duration = Duration::from_secs(12);

struct Env {
    router: Gorouter,
    api: RoutingApi,
    dir: TempDir,
}

fn db(dir: &TempDir) -> Database {
    Database::sqlite(dir.path().join("routing-api.db"))
}

/// A router whose only route source is the Routing API on 127.0.0.1:`api_port`.
fn router_builder(api_port: u16) -> GorouterBuilder {
    // The NATS port is never used: `nats.hosts: []` replaces the default list.
    GorouterBuilder::new(integration::closed_port()).yaml(&format!(
        "nats: {{hosts: []}}\n\
         routing_api: {{uri: 'http://127.0.0.1', port: {api_port}, auth_disabled: true}}\n\
         prune_stale_droplets_interval: 4s\n"
    ))
}

async fn start_api(dir: &TempDir, port: u16) -> RoutingApi {
    RoutingApi::builder(db(dir))
        .yaml(&format!("api: {{listen_port: {port}}}"))
        .start()
        .await
}

async fn env() -> Env {
    let dir = TempDir::new("it-gorouter-routing-api");
    let api = start_api(&dir, listener_port()).await;
    let router = router_builder(api.http_port).start().await;
    Env { router, api, dir }
}

fn http_route(host: &str, backend: &EchoBackend) -> String {
    json!([{
        "route": host,
        "port": backend.port(),
        "ip": "127.0.0.1",
        "ttl": 120,
        "log_guid": format!("log-{}", backend.name()),
    }])
    .to_string()
}

async fn post_route(api: &RoutingApi, host: &str, backend: &EchoBackend) {
    let r = api
        .post("/routing/v1/routes", &http_route(host, backend))
        .await;
    assert_eq!(r.status, 201, "POST route: {}", r.dump());
}

async fn delete_route(api: &RoutingApi, host: &str, backend: &EchoBackend) {
    let r = api
        .delete("/routing/v1/routes", &http_route(host, backend))
        .await;
    assert_eq!(r.status, 204, "DELETE route: {}", r.dump());
}

/// Gives `hosts`' routes `ttl` seconds (and a newer modification index, so that the router
/// takes the change) in the Routing API's database directly: the API lists them so but sends
/// no event, so the router learns it, and is refreshed, only by lists. Their expiry stays
/// where `ttl: 120` put it, so the API keeps listing them.
fn set_ttl_behind_the_api(db: &TestDatabase, hosts: &[&str], ttl: u64) {
    let list = hosts
        .iter()
        .map(|h| format!("'{h}'"))
        .collect::<Vec<_>>()
        .join(",");
    db.exec(&format!(
        "UPDATE routes SET ttl = {ttl}, modification_index = modification_index + 1 \
         WHERE route IN ({list})"
    ));
    let changed = db.scalar(&format!(
        "SELECT COUNT(*) FROM routes WHERE ttl = {ttl} AND route IN ({list})"
    ));
    assert_eq!(changed, hosts.len().to_string(), "routes given ttl {ttl}");
}

/// Waits until the router's `/routes` reports `ttl` for every endpoint of `host`.
async fn wait_router_ttl(router: &Gorouter, host: &str, ttl: u64) {
    let started = Instant::now();
    loop {
        let body = router.routes().await.body_str();
        let listed = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|routes| {
                let endpoints = routes[host].as_array()?;
                Some(!endpoints.is_empty() && endpoints.iter().all(|e| e["ttl"] == ttl))
            })
            .unwrap_or(false);
        if listed {
            return;
        }
        // A generous deadline for the next list (every 2 s) on a loaded machine.
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the router does not list {host} with ttl {ttl}; /routes: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts that every host of `hosts` answers 200 on every poll for `window`.
async fn served_throughout(router: &Gorouter, hosts: &[&str], window: Duration, while_: &str) {
    let started = Instant::now();
    while started.elapsed() < window {
        for host in hosts {
            let r = router.get(host, "/").await;
            assert_eq!(
                r.status,
                200,
                "{host} not served {:?} {while_}; router output:\n{}",
                started.elapsed(),
                router.output()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `GET /` for `host` until its status is `status`, failing after `within`; returns the
/// body of the matching response.
async fn wait_status(router: &Gorouter, host: &str, status: u16, within: Duration) -> String {
    let start = Instant::now();
    let mut last: String;
    loop {
        match try_request(router.addr(), &get_request(host, "/")).await {
            Ok(r) if r.status == status => return r.body_str(),
            Ok(r) => last = r.status_line,
            Err(e) => last = e.to_string(),
        }
        if start.elapsed() >= within {
            panic!(
                "{host}: no {status} within {within:?}; last: {last}\nrouter output:\n{}",
                router.output()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posted_route_is_served_and_deleted_route_is_404() {
    let e = env().await;
    let backend = EchoBackend::start("ra-app").await;
    let host = "ra-app.example.com";
    assert_eq!(e.router.get(host, "/").await.status, 404);

    post_route(&e.api, host, &backend).await;
    wait_status(&e.router, host, 200, EVENT_DEADLINE).await;
    let r = e.router.get(host, "/hello").await;
    assert_eq!(r.status, 200, "{}", r.dump());
    assert_eq!(backend.request_count(), 2);

    // The route's log_guid is the app id the router reports to the backend.
    let echoed = integration::EchoedRequest::parse(&r.body);
    assert_eq!(echoed.header("X-CF-ApplicationID"), Some("log-ra-app"));

    delete_route(&e.api, host, &backend).await;
    wait_status(&e.router, host, 404, EVENT_DEADLINE).await;
    drop(e.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_present_at_start_is_served() {
    let dir = TempDir::new("it-gorouter-routing-api");
    let api = start_api(&dir, listener_port()).await;
    let backend = EchoBackend::start("ra-early").await;
    let host = "ra-early.example.com";
    post_route(&api, host, &backend).await;

    let router = router_builder(api.http_port).start().await;
    wait_status(&router, host, 200, EVENT_DEADLINE).await;
    // The routing API's own route (api.<system_domain>/routing) is listed too.
    let routes = router.routes().await;
    assert_eq!(routes.status, 200);
    assert!(
        routes.body_str().contains(host),
        "/routes: {}",
        routes.body_str()
    );
}

/// The routes have a TTL shorter than the outage and than the time after the restart: held
/// through the outage (failed lists refresh them) and kept afterwards (lists refresh them; no
/// event does), they would be pruned otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_api_restart_loses_nothing() {
    let db = TestDatabase::create("gr_ra_restart");
    let port = listener_port();
    let start_api = || {
        RoutingApi::builder(Database::mysql(&db))
            .yaml(&format!("api: {{listen_port: {port}}}"))
            .start()
    };
    let mut api = start_api().await;
    let router = router_builder(port).start().await;
    let first = EchoBackend::start("ra-first").await;
    let second = EchoBackend::start("ra-second").await;
    let third = EchoBackend::start("ra-third").await;
    post_route(&api, "ra-first.example.com", &first).await;
    post_route(&api, "ra-second.example.com", &second).await;
    wait_status(&router, "ra-first.example.com", 200, EVENT_DEADLINE).await;
    wait_status(&router, "ra-second.example.com", 200, EVENT_DEADLINE).await;
    set_ttl_behind_the_api(
        &db,
        &["ra-first.example.com", "ra-second.example.com"],
        SHORT_TTL,
    );
    wait_router_ttl(&router, "ra-first.example.com", SHORT_TTL).await;
    wait_router_ttl(&router, "ra-second.example.com", SHORT_TTL).await;

    api.sigterm();
    api.wait_exit(Duration::from_secs(15)).await;
    drop(api);
    // While the Routing API is away (lists fail, the stream is down), nothing is dropped, for
    // longer than the routes' TTL.
    served_throughout(
        &router,
        &["ra-first.example.com", "ra-second.example.com"],
        PRUNE_WINDOW,
        "into the Routing API's outage",
    )
    .await;

    let api = start_api().await;
    // The router re-subscribes (every 1 s) and re-lists: events flow again.
    post_route(&api, "ra-third.example.com", &third).await;
    wait_status(
        &router,
        "ra-third.example.com",
        200,
        EVENT_DEADLINE + Duration::from_secs(2),
    )
    .await;
    assert_eq!(router.get("ra-first.example.com", "/").await.status, 200);
    assert_eq!(router.get("ra-second.example.com", "/").await.status, 200);
    delete_route(&api, "ra-second.example.com", &second).await;
    wait_status(&router, "ra-second.example.com", 404, EVENT_DEADLINE).await;
    // The later full lists (every prune_stale_droplets_interval/2 = 2 s) keep the rest, the
    // short-TTL route included.
    served_throughout(
        &router,
        &["ra-first.example.com", "ra-third.example.com"],
        PRUNE_WINDOW,
        "after the restart",
    )
    .await;
    wait_router_ttl(&router, "ra-first.example.com", SHORT_TTL).await;
}

/// The lists are what keeps a Routing API route whose TTL is shorter than the pruner's window
/// when no event refreshes it; a NATS route with the same TTL, registered once, is pruned in
/// that window by the same router.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_refresh_a_short_ttl_route_that_no_event_refreshes() {
    let db = TestDatabase::create("gr_ra_relist");
    let api = RoutingApi::start(Database::mysql(&db)).await;
    let nats = NatsServer::start().await;
    let router = Gorouter::builder(&nats)
        .yaml(&format!(
            "routing_api: {{uri: 'http://127.0.0.1', port: {}, auth_disabled: true}}\n\
             prune_stale_droplets_interval: 4s\n",
            api.http_port
        ))
        .start()
        .await;
    let listed = EchoBackend::start("ra-listed").await;
    let once = EchoBackend::start("nats-once").await;
    post_route(&api, "ra-listed.relist.test", &listed).await;
    wait_status(&router, "ra-listed.relist.test", 200, EVENT_DEADLINE).await;
    set_ttl_behind_the_api(&db, &["ra-listed.relist.test"], SHORT_TTL);
    wait_router_ttl(&router, "ra-listed.relist.test", SHORT_TTL).await;

    let client = integration::NatsClient::connect(&nats).await;
    client
        .register(&json!({
            "host": "127.0.0.1", "port": once.port(),
            "uris": ["nats-once.relist.test"], "app": "nats-once",
            "stale_threshold_in_seconds": SHORT_TTL,
        }))
        .await;
    wait_status(&router, "nats-once.relist.test", 200, EVENT_DEADLINE).await;
    wait_router_ttl(&router, "nats-once.relist.test", SHORT_TTL).await;

    let started = Instant::now();
    let mut pruned_after = None;
    while started.elapsed() < PRUNE_WINDOW || pruned_after.is_none() {
        let r = router.get("ra-listed.relist.test", "/").await;
        assert_eq!(
            r.status,
            200,
            "the listed route was pruned after {:?}; router output:\n{}",
            started.elapsed(),
            router.output()
        );
        if pruned_after.is_none() && router.get("nats-once.relist.test", "/").await.status == 404 {
            pruned_after = Some(started.elapsed());
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "the NATS route with the same TTL was never pruned: the window proves nothing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("NATS route with ttl {SHORT_TTL}s pruned after {pruned_after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_and_routing_api_routes_share_one_table() {
    let dir = TempDir::new("it-gorouter-routing-api");
    let api = start_api(&dir, listener_port()).await;
    let nats = NatsServer::start().await;
    let router = Gorouter::builder(&nats)
        .yaml(&format!(
            "routing_api: {{uri: 'http://127.0.0.1', port: {}, auth_disabled: true}}\n\
             prune_stale_droplets_interval: 2s\n",
            api.http_port
        ))
        .start()
        .await;
    let client = integration::NatsClient::connect(&nats).await;
    let from_nats = EchoBackend::start("via-nats").await;
    let from_api = EchoBackend::start("via-api").await;
    client
        .register(&json!({
            "host": "127.0.0.1", "port": from_nats.port(),
            "uris": ["shared.example.com"], "app": "nats-app",
            "stale_threshold_in_seconds": 120,
        }))
        .await;
    post_route(&api, "shared.example.com", &from_api).await;
    integration::eventually("both backends served", Duration::from_secs(5), || async {
        router.get("shared.example.com", "/").await;
        (from_nats.request_count() > 0 && from_api.request_count() > 0).then_some(())
    })
    .await;
    // Lists (every 1 s) remove only what the Routing API dropped: the NATS backend stays.
    delete_route(&api, "shared.example.com", &from_api).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let before = from_api.request_count();
    for _ in 0..6 {
        assert_eq!(router.get("shared.example.com", "/").await.status, 200);
    }
    assert_eq!(from_api.request_count(), before, "API backend removed");
    assert!(from_nats.request_count() >= 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_start_without_a_route_source() {
    let (status, output) = GorouterBuilder::new(integration::closed_port())
        .yaml("nats: {hosts: []}")
        .run_to_exit(Duration::from_secs(10))
        .await;
    assert!(!status.success(), "{output}");
    assert!(
        output.contains("nats.hosts") && output.contains("routing_api.uri"),
        "{output}"
    );
}

/// Upstream's quirk, end to end: `routing_api.ca_certs`, `cert_chain` and `private_key` are PEM
/// text in the config (here, on routing-api's mutual TLS port), and the router fetches UAA
/// tokens (`oauth.*`) because auth is on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_over_mutual_tls_with_inline_pem_and_a_uaa_token() {
    use integration::pki::TestCa;
    use integration::routing_api::MtlsFiles;
    use integration::uaa::FakeUaa;

    // Upstream only speaks https to UAA; oauth.ca_certs is a file.
    let uaa = FakeUaa::start_tls().await;
    let dir = TempDir::new("it-gorouter-routing-api");
    let uaa_ca = uaa.write_ca(dir.path());
    let ca = TestCa::new("routing-api-ca");
    let builder = RoutingApi::builder(db(&dir))
        .uaa(&uaa)
        .yaml(&format!("oauth: {{ca_certs: '{}'}}", uaa_ca.display()));
    let files = MtlsFiles::write(&ca, builder.dir());
    let api = builder.mtls(files).start().await;
    let (cert, key) = ca.issue_client("gorouter");
    let overrides = json!({
        "nats": {"hosts": []},
        "routing_api": {
            "uri": "https://127.0.0.1",
            "port": api.mtls_port,
            "auth_disabled": false,
            "ca_certs": ca.cert_pem(),
            "cert_chain": cert,
            "private_key": key,
        },
        "oauth": uaa.gorouter_oauth(&uaa_ca),
    });
    // JSON is YAML.
    let router = GorouterBuilder::new(integration::closed_port())
        .yaml(&overrides.to_string())
        .start()
        .await;
    let backend = EchoBackend::start("ra-secure").await;
    post_route(&api, "ra-secure.example.com", &backend).await;
    wait_status(&router, "ra-secure.example.com", 200, EVENT_DEADLINE).await;
    assert!(
        uaa.hits(integration::uaa::Endpoint::Token) >= 1,
        "the router fetched a token"
    );
    let output = router.output();
    assert!(output.contains("started-fetching-token"), "{output}");
    assert!(output.contains("setting-up-routing-api"), "{output}");
    delete_route(&api, "ra-secure.example.com", &backend).await;
    wait_status(&router, "ra-secure.example.com", 404, EVENT_DEADLINE).await;
}

/// The fatal start-up paths of upstream's `setupRoutingAPIClient` (integration/main_test.go
/// "routing-api integration"): each exits 1 with upstream's message.
async fn exits_1_saying(yaml: &str, said: &[&str]) -> String {
    let (status, output) = GorouterBuilder::new(integration::closed_port())
        .yaml(yaml)
        .run_to_exit(Duration::from_secs(20))
        .await;
    assert_eq!(status.code(), Some(1), "{status}; output:\n{output}");
    for s in said {
        assert!(output.contains(s), "no {s:?} in:\n{output}");
    }
    output
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_routing_api_at_start_exits_1() {
    let port = integration::closed_port();
    exits_1_saying(
        &format!(
            "nats: {{hosts: []}}\nrouting_api: {{uri: 'http://127.0.0.1', port: {port}, auth_disabled: true}}"
        ),
        &["using-noop-token-fetcher", "routing-api-connection-failed"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_uaa_at_start_exits_1() {
    let api_port = integration::closed_port();
    let uaa_port = integration::closed_port();
    exits_1_saying(
        &format!(
            "nats: {{hosts: []}}\nrouting_api: {{uri: 'http://127.0.0.1', port: {api_port}}}\n\
             oauth: {{token_endpoint: 127.0.0.1, port: {uaa_port}, client_name: gorouter, client_secret: s}}\n\
             token_fetcher_retry_interval: 100ms"
        ),
        &["started-fetching-token", "unable-to-fetch-token"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uaa_without_tls_fails_fast() {
    let api_port = integration::closed_port();
    for oauth in [
        "{token_endpoint: 127.0.0.1, port: 0}",
        "{token_endpoint: 127.0.0.1, port: -1}",
        "{token_endpoint: 'http://127.0.0.1', port: 8080}",
    ] {
        let output = exits_1_saying(
            &format!(
                "nats: {{hosts: []}}\nrouting_api: {{uri: 'http://127.0.0.1', port: {api_port}}}\noauth: {oauth}"
            ),
            &["initialize-uaa-client", "UAA client requires TLS enabled"],
        )
        .await;
        assert!(
            !output.contains("started-fetching-token"),
            "{oauth}: {output}"
        );
    }
}
