//! tcp-router as a process: `/health` and `/metrics`, drain on SIGUSR1, SIGTERM, bad configs,
//! the router-group port check, and the Routing API over mutual TLS with UAA tokens.

use std::time::{Duration, Instant};

use integration::mariadb::TestDatabase;
use integration::pki::TestCa;
use integration::routing_api::{Database, MtlsFiles, RoutingApi};
use integration::tcp_router::{greeting, Client, TcpBackend, TcpRouterBuilder, TcpRoutes};
use integration::uaa::{FakeUaa, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET};
use integration::util::free_port;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_on_the_health_port() {
    let db = TestDatabase::create("tr_health");
    let api = RoutingApi::start(Database::mysql(&db)).await;
    let router = TcpRouterBuilder::new(&api).start().await;
    let r = router.health_get("/health").await.expect("/health answers");
    assert_eq!(r.status, 200, "{}", r.dump());
    assert_eq!(
        r.body_str(),
        "<html><body><h1>200 OK</h1>\nService ready.\n</body></html>\n"
    );

    let routes = TcpRoutes::new(&api).await;
    let backend = TcpBackend::echo("app").await;
    let port = free_port();
    routes.create(&[routes.route(port, backend.port())]).await;
    router.wait_routed(port, Duration::from_secs(5)).await;
    let mut c = Client::connect(port).await.expect("connect");
    c.read_line().await.expect("greeting");
    c.echo(b"0123456789").await.expect("echo");
    drop(c);

    let r = router
        .health_get("/metrics")
        .await
        .expect("/metrics answers");
    assert_eq!(r.status, 200);
    assert!(
        r.header("Content-Type")
            .unwrap_or_default()
            .starts_with("application/openmetrics-text; version=1.0.0"),
        "{}",
        r.dump()
    );
    let text = r.body_str();
    for needle in [
        "# TYPE tcp_router_connections counter".to_string(),
        format!("tcp_router_bytes_total{{port=\"{port}\",direction=\"client_to_backend\"}} 10"),
        format!("tcp_router_errors_total{{port=\"{port}\",kind=\"connect\"}} 0"),
        "tcp_router_backends 1".to_string(),
        "tcp_router_draining 0".to_string(),
    ] {
        assert!(text.contains(&needle), "missing {needle:?} in:\n{text}");
    }
    // The gauge is set by the route source's task; poll rather than race it.
    let mut listeners = 0.0;
    for _ in 0..100 {
        listeners = router.metric("tcp_router_listeners").await.unwrap_or(0.0);
        if listeners == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(listeners, 1.0, "tcp_router_listeners in:\n{text}");
    let connections = router
        .metric(&format!("tcp_router_connections_total{{port=\"{port}\"}}"))
        .await
        .unwrap_or(0.0);
    assert!(connections >= 2.0, "{text}");
    assert_eq!(
        router.health_get("/nope").await.map(|r| r.status),
        Some(404)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_drains_then_exits_when_connections_finish() {
    let db = TestDatabase::create("tr_drain");
    let api = RoutingApi::start(Database::mysql(&db)).await;
    let mut router = TcpRouterBuilder::new(&api)
        .yaml("drain_wait: 1s")
        .start()
        .await;
    let routes = TcpRoutes::new(&api).await;
    let backend = TcpBackend::echo("app").await;
    let port = free_port();
    routes.create(&[routes.route(port, backend.port())]).await;
    router.wait_routed(port, Duration::from_secs(5)).await;
    let mut open = Client::connect(port).await.expect("connect");
    open.read_line().await.expect("greeting");

    let t0 = Instant::now();
    router.signal(libc::SIGUSR1);
    // Unhealthy at once, still forwarding during drain_wait.
    let deadline = Instant::now() + Duration::from_secs(2);
    while router.health_status().await != 503 {
        assert!(Instant::now() < deadline, "/health did not turn 503");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        router.health_get("/health").await.map(|r| r.body_str()).unwrap_or_default(),
        "<html><body><h1>503 Service Unavailable</h1>\nNo server is available to handle this request.\n</body></html>\n"
    );
    assert_eq!(
        greeting(port).await.expect("accepting during drain_wait"),
        "app"
    );
    // After drain_wait: no new connections, the open one carries on, the process waits for it.
    router.wait_refused(port, Duration::from_secs(3)).await;
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "closed before drain_wait"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        router.try_exit().is_none(),
        "exited with a connection still open"
    );
    open.echo(b"finishing my work\n")
        .await
        .expect("open connection during drain");
    drop(open);
    let status = router.wait_exit(Duration::from_secs(5)).await;
    assert!(status.success(), "drain exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_at_once() {
    let db = TestDatabase::create("tr_term");
    let api = RoutingApi::start(Database::mysql(&db)).await;
    let mut router = TcpRouterBuilder::new(&api)
        .yaml("drain_wait: 120s")
        .start()
        .await;
    let routes = TcpRoutes::new(&api).await;
    let backend = TcpBackend::echo("app").await;
    let port = free_port();
    routes.create(&[routes.route(port, backend.port())]).await;
    router.wait_routed(port, Duration::from_secs(5)).await;
    let _open = Client::connect(port).await.expect("connect");
    // drain_wait (120 s) is far past the wait's deadline: a SIGTERM that drained fails it,
    // however loaded the machine.
    router.signal(libc::SIGTERM);
    let status = router.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_names_the_key_and_exits_non_zero() {
    for (yaml, key) in [
        ("max_connections: 0", "max_connections"),
        ("connect_timeout: soon", "connect_timeout"),
        ("health_check_port: 70000", "health_check_port"),
        ("routing_api: {uri: ''}", "routing_api.uri"),
        ("backend_tls: {enabled: true}", "backend_tls.ca_cert_path"),
        (
            "routing_api: {auth_disabled: false}\noauth: {token_endpoint: uaa.example.com, port: 443}",
            "oauth.client_name",
        ),
    ] {
        let (status, output) = TcpRouterBuilder::for_api_port(free_port())
            .yaml(yaml)
            .run_to_exit(Duration::from_secs(5))
            .await;
        assert!(!status.success(), "{yaml}: exited {status}");
        assert!(output.contains(key), "{yaml}: output does not name {key}:\n{output}");
    }
    // Not YAML at all.
    let (status, output) = TcpRouterBuilder::for_api_port(free_port())
        .raw_config("routing_api: [unclosed\n")
        .run_to_exit(Duration::from_secs(5))
        .await;
    assert!(!status.success());
    assert!(output.contains("tcp_router.yml"), "{output}");
    // A bad flag.
    let (status, output) = TcpRouterBuilder::for_api_port(free_port())
        .flags(&["-syncInterval", "often"])
        .run_to_exit(Duration::from_secs(5))
        .await;
    assert!(!status.success());
    assert!(output.contains("syncInterval"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_group_ports_conflicting_with_reserved_ports_are_reported_or_fatal() {
    let db = TestDatabase::create("tr_conflict");
    let api = RoutingApi::start(Database::mysql(&db)).await;
    let r = api
        .post(
            "/routing/v1/router_groups",
            r#"{"name":"conflicting","type":"tcp","reservable_ports":"2000-2010,2822"}"#,
        )
        .await;
    // A new group (none of that name in this database): 201 Created (200 is for re-posting an
    // existing one).
    assert_eq!(r.status, 201, "{}", r.dump());

    // BOSH's reserved list (an absent key means none, as upstream's code).
    let bosh_reserved = "reserved_system_component_ports: \"2822,2825,3457-3461,8853,9100,14726,14727,14821-14824,14829,14830,14920,14922,15821,17002,53035,53080\"";
    // Reported, not fatal by default.
    let router = TcpRouterBuilder::new(&api)
        .yaml(bosh_reserved)
        .start()
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let output = router.output();
        if output.contains("router-group-port-checker-failure") && output.contains("conflicting") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "conflict not reported:\n{output}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(router);

    // Fatal when configured so (or with -routingGroupCheckExit).
    let (status, output) = TcpRouterBuilder::new(&api)
        .yaml(bosh_reserved)
        .yaml("fail_on_router_port_conflicts: true")
        .run_to_exit(Duration::from_secs(15))
        .await;
    assert!(!status.success(), "{output}");
    assert!(output.contains("2822"), "{output}");
    let (status, _) = TcpRouterBuilder::new(&api)
        .yaml(bosh_reserved)
        .flags(&["-routingGroupCheckExit"])
        .run_to_exit(Duration::from_secs(15))
        .await;
    assert!(!status.success());
    // Not with other reserved ports.
    let router = TcpRouterBuilder::new(&api)
        .yaml("fail_on_router_port_conflicts: true\nreserved_system_component_ports: [9100]")
        .start()
        .await;
    drop(router);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_come_over_mutual_tls_with_a_uaa_token() {
    let uaa = FakeUaa::start().await;
    let db = TestDatabase::create("tr_mtls");
    let ca = TestCa::new("routing-api-ca");
    let builder = RoutingApi::builder(Database::mysql(&db)).uaa(&uaa);
    let files = MtlsFiles::write(&ca, builder.dir());
    let api = builder.mtls(files).start().await;

    let dir = integration::TempDir::new("tr-mtls-client");
    let client = ca.write_client(dir.path(), "tcp-router");
    // Short-lived tokens: the router must fetch new ones before they expire (at half their
    // life when shorter than twice the 30 s buffer).
    uaa.set_token_ttl(Duration::from_secs(2));
    let router = TcpRouterBuilder::for_api_port(api.mtls_port)
        .flags(&["-syncInterval", "300ms"])
        .yaml(&format!(
            "routing_api:\n  uri: https://127.0.0.1\n  port: {}\n  auth_disabled: false\n  \
             ca_cert_path: {}\n  client_cert_path: {}\n  client_private_key_path: {}\n\
             oauth:\n  token_endpoint: {}\n  port: {}\n  client_name: {DEFAULT_CLIENT_ID}\n  \
             client_secret: {DEFAULT_CLIENT_SECRET}\n",
            api.mtls_port,
            client.ca.display(),
            client.cert.display(),
            client.key.display(),
            uaa.token_endpoint(),
            uaa.port(),
        ))
        .start()
        .await;

    let routes = TcpRoutes::new(&api).await;
    let backend = TcpBackend::echo("secure-source").await;
    let port = free_port();
    routes.create(&[routes.route(port, backend.port())]).await;
    // Routed at all (a generous deadline): the token-authenticated stream or sync works.
    router.wait_routed(port, Duration::from_secs(15)).await;
    assert_eq!(greeting(port).await.expect("routed"), "secure-source");

    // Past the first token's expiry every sync still succeeds, with fresh tokens.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let fetched = uaa.hits(integration::uaa::Endpoint::Token);
    assert!(fetched >= 3, "tokens fetched from UAA: {fetched}");
    assert_eq!(
        router
            .metric("tcp_router_routing_api_sync_failures_total")
            .await,
        Some(0.0),
        "{}",
        router.output()
    );
    let syncs = router
        .metric("tcp_router_routing_api_syncs_total")
        .await
        .unwrap_or(0.0);
    assert!(syncs >= 8.0, "syncs: {syncs}");
    routes.delete(&[routes.route(port, backend.port())]).await;
    router.wait_refused(port, Duration::from_secs(5)).await;
}
