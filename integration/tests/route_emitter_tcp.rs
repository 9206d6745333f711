//! route-emitter and the real routing-api (SQLite): a TCP route becomes a TCP route mapping of
//! the named router group without a TLS port, and is deleted on SIGTERM; the same over mutual
//! TLS with a UAA token; `transport: routing_api` HTTP routes are POSTed as HTTP routes.

use std::time::Duration;

use integration::route_emitter::{tcp_route, RouteEmitterBuilder};
use integration::routing_api::{wait_until, Database, RoutingApi, DEFAULT_GROUP};
use integration::TempDir;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_route_becomes_a_routing_api_mapping() {
    let dir = TempDir::new("it-re-tcp");
    let api = RoutingApi::start(Database::sqlite(dir.path().join("routing-api.db"))).await;
    let guid = api.default_group_guid().await;
    let mut emitter = RouteEmitterBuilder::new(None)
        .set(
            "routing_api",
            json!({"api_url": api.url(), "max_ttl": "30s"}),
        )
        .route(tcp_route("t", DEFAULT_GROUP, 1025, 5555))
        .start();
    wait_until("tcp mapping created", Duration::from_secs(10), || async {
        !api.tcp_routes().await.is_empty()
    })
    .await;
    let routes = api.tcp_routes().await;
    assert_eq!(routes.len(), 1, "{routes:?}");
    let m = &routes[0];
    assert_eq!(m["router_group_guid"], json!(guid));
    assert_eq!(m["port"], 1025);
    assert_eq!(m["backend_ip"], "127.0.0.1");
    assert_eq!(m["backend_port"], 5555);
    // route-emitter sends -1 (no TLS port; unit-tested); routing-api stores "no TLS port" as
    // NULL and answers it as 0, as upstream does.
    assert_eq!(m["backend_tls_port"], 0, "{m}");
    assert_eq!(m["ttl"], 30);

    emitter.signal(libc::SIGTERM);
    assert!(emitter.wait_exit(Duration::from_secs(10)).await.success());
    assert!(api.tcp_routes().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_route_with_routing_api_transport_is_posted() {
    let dir = TempDir::new("it-re-http-api");
    let api = RoutingApi::start(Database::sqlite(dir.path().join("routing-api.db"))).await;
    let mut emitter = RouteEmitterBuilder::new(None)
        .set(
            "routing_api",
            json!({"api_url": api.url(), "max_ttl": "30s"}),
        )
        .route(json!({
            "name": "h",
            "port": 6000,
            "uris": ["h.api-transport.test"],
            "registration_interval": "1s",
            "transport": "routing_api",
            "app": "app-guid",
        }))
        .start();
    let find = || async {
        api.http_routes()
            .await
            .into_iter()
            .find(|r| r["route"] == "h.api-transport.test")
    };
    wait_until("http route created", Duration::from_secs(10), || async {
        find().await.is_some()
    })
    .await;
    let r = find().await.unwrap();
    assert_eq!(r["port"], 6000);
    assert_eq!(r["ip"], "127.0.0.1");
    assert_eq!(r["log_guid"], "app-guid");

    emitter.signal(libc::SIGTERM);
    assert!(emitter.wait_exit(Duration::from_secs(10)).await.success());
    assert!(find().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_route_over_mutual_tls_with_a_uaa_token() {
    use integration::pki::TestCa;
    use integration::routing_api::MtlsFiles;
    use integration::uaa::{Endpoint, FakeUaa, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET};

    let uaa = FakeUaa::start().await;
    let dir = TempDir::new("it-re-mtls");
    let ca = TestCa::new("routing-api-ca");
    let builder =
        RoutingApi::builder(Database::sqlite(dir.path().join("routing-api.db"))).uaa(&uaa);
    let files = MtlsFiles::write(&ca, builder.dir());
    let api = builder.mtls(files).start().await;
    let client = ca.write_client(dir.path(), "route-emitter");
    let _emitter = RouteEmitterBuilder::new(None)
        .set(
            "routing_api",
            json!({
                "api_url": format!("https://127.0.0.1:{}", api.mtls_port),
                "oauth_url": uaa.base_url(),
                "client_id": DEFAULT_CLIENT_ID,
                "client_secret": DEFAULT_CLIENT_SECRET,
                "client_cert_path": client.cert,
                "client_private_key_path": client.key,
                "server_ca_cert_path": client.ca,
                "max_ttl": "30s",
            }),
        )
        .route(tcp_route("t", DEFAULT_GROUP, 1026, 5556))
        .start();
    wait_until("tcp mapping created", Duration::from_secs(10), || async {
        api.tcp_routes().await.iter().any(|m| m["port"] == 1026)
    })
    .await;
    assert!(uaa.hits(Endpoint::Token) >= 1, "a token was fetched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_route_is_refreshed_before_its_ttl_expires() {
    let dir = TempDir::new("it-re-ttl");
    let api = RoutingApi::start(Database::sqlite(dir.path().join("routing-api.db"))).await;
    let _emitter = RouteEmitterBuilder::new(None)
        .set(
            "routing_api",
            json!({"api_url": api.url(), "max_ttl": "3s"}),
        )
        .route(tcp_route("t", DEFAULT_GROUP, 1027, 5557))
        .start();
    wait_until("tcp mapping created", Duration::from_secs(10), || async {
        !api.tcp_routes().await.is_empty()
    })
    .await;
    // Listed routes are unexpired ones: still there well past one TTL.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let routes = api.tcp_routes().await;
        assert_eq!(routes.len(), 1, "{routes:?}");
        assert_eq!(routes[0]["ttl"], 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_the_routing_api_rejects_does_not_hold_back_the_others() {
    let dir = TempDir::new("it-re-batch");
    let api = RoutingApi::start(Database::sqlite(dir.path().join("routing-api.db"))).await;
    let route = |name: &str, uri: &str| {
        json!({
            "name": name,
            "port": 6001,
            "uris": [uri],
            "registration_interval": "1s",
            "transport": "routing_api",
        })
    };
    // Sent in one request, the second route makes the Routing API reject the whole batch
    // ("Url cannot contain any of [?, #]"); the emitter then sends them one by one.
    let mut emitter = RouteEmitterBuilder::new(None)
        .set(
            "routing_api",
            json!({"api_url": api.url(), "max_ttl": "30s"}),
        )
        .route(route("good", "good.batch.test"))
        .route(route("bad", "bad.batch.test?x"))
        .start();
    wait_until(
        "the good route created",
        Duration::from_secs(10),
        || async {
            api.http_routes()
                .await
                .iter()
                .any(|r| r["route"] == "good.batch.test")
        },
    )
    .await;
    let routes = api.http_routes().await;
    assert!(
        !routes.iter().any(|r| r["route"] == "bad.batch.test?x"),
        "{routes:?}"
    );
    assert!(emitter.try_exit().is_none(), "{}", emitter.output());
}
