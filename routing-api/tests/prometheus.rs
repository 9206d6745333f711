//! routing-api's `/metrics` on the `prometheus` port, scraped over HTTP from the built binary
//! (the `integration` crate's harness, MariaDB with a database per test): each metric moves
//! when the API does what it counts, a standby serves its metrics before it holds the lock,
//! and the three TLS files make it mutual TLS.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use integration::mariadb::TestDatabase;
use integration::pki::TestCa;
use integration::routing_api::{listener_port, tls_request, Database, RoutingApi};
use integration::uaa::FakeUaa;
use integration::TempDir;

const WAIT: Duration = Duration::from_secs(10);

/// A routing-api (dev mode, no token checks) on its own database, `/metrics` on `port`.
async fn start(prefix: &str) -> (RoutingApi, u16, TestDatabase) {
    let db = TestDatabase::create(prefix);
    let port = listener_port();
    let api = RoutingApi::builder(Database::mysql(&db))
        .yaml(&format!("prometheus:\n  port: {port}\n"))
        .start()
        .await;
    (api, port, db)
}

/// The `/metrics` text on 127.0.0.1:`port`, or `None` while nothing answers 200.
async fn scrape(port: u16) -> Option<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    match prometheus_endpoint::scrape(addr, Duration::from_secs(5)).await {
        Ok(r) if r.status == 200 => Some(r.body),
        _ => None,
    }
}

/// Scrapes until `line` is one of the exposition's lines; panics with the last text after
/// [`WAIT`].
async fn wait_for_line(port: u16, line: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = scrape(port).await.unwrap_or_default();
        if text.lines().any(|l| l == line) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no line {line:?} within {WAIT:?}; last scrape:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the unlabelled sample `name` in the scrape now.
async fn sample(port: u16, name: &str) -> u64 {
    let text = scrape(port).await.expect("/metrics answers");
    prometheus_endpoint::sample(&text, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
}

fn tcp_mapping(group: &str, port: u16) -> String {
    format!(
        r#"[{{"router_group_guid":"{group}","port":{port},"backend_ip":"10.0.0.1","backend_port":8080,"ttl":60}}]"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_http_route_is_counted_beside_the_apis_own_route() {
    let (api, port, _db) = start("prom_http_routes").await;
    wait_for_line(port, "total_http_routes 1").await;
    let route = r#"[{"route":"app.example.com","port":8080,"ip":"10.0.0.1","ttl":60}]"#;
    assert_eq!(api.post("/routing/v1/routes", route).await.status, 201);
    wait_for_line(port, "total_http_routes 2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_tcp_route_is_counted_until_deleted() {
    let (api, port, _db) = start("prom_tcp_routes").await;
    let group = api.default_group_guid().await;
    let mapping = tcp_mapping(&group, 1024);
    assert_eq!(
        api.post("/routing/v1/tcp_routes/create", &mapping)
            .await
            .status,
        201
    );
    wait_for_line(port, "total_tcp_routes 1").await;
    assert_eq!(
        api.post("/routing/v1/tcp_routes/delete", &mapping)
            .await
            .status,
        204
    );
    wait_for_line(port, "total_tcp_routes 0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_event_stream_is_counted_by_kind_until_it_closes() {
    let (api, port, _db) = start("prom_streams").await;
    let http = api.events("/routing/v1/events").await;
    assert_eq!(http.head.status, 200, "{}", http.head.dump());
    let tcp = api.events("/routing/v1/tcp_routes/events").await;
    assert_eq!(tcp.head.status, 200, "{}", tcp.head.dump());
    let text = wait_for_line(port, "http_subscriptions 1").await;
    assert!(text.lines().any(|l| l == "tcp_subscriptions 1"), "{text}");
    drop(http);
    let text = wait_for_line(port, "http_subscriptions 0").await;
    assert!(text.lines().any(|l| l == "tcp_subscriptions 1"), "{text}");
    drop(tcp);
    wait_for_line(port, "tcp_subscriptions 0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_timed_under_its_endpoint_name() {
    let (api, port, _db) = start("prom_latency").await;
    let group = api.default_group_guid().await;
    let before = scrape(port).await.expect("/metrics answers");
    assert!(
        before
            .lines()
            .any(|l| l == "request_latency_seconds_count{endpoint=\"upsert_tcp_routes\"} 0"),
        "{before}"
    );
    let r = api
        .post("/routing/v1/tcp_routes/create", &tcp_mapping(&group, 1025))
        .await;
    assert_eq!(r.status, 201, "{}", r.dump());
    let text = wait_for_line(
        port,
        "request_latency_seconds_count{endpoint=\"upsert_tcp_routes\"} 1",
    )
    .await;
    for line in [
        "# TYPE request_latency_seconds histogram",
        "request_latency_seconds_bucket{le=\"+Inf\",endpoint=\"upsert_tcp_routes\"} 1",
        "request_latency_seconds_bucket{le=\"10.0\",endpoint=\"upsert_tcp_routes\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_is_counted_as_a_token_error() {
    let uaa = FakeUaa::start().await;
    let db = TestDatabase::create("prom_token_errors");
    let port = listener_port();
    let api = RoutingApi::builder(Database::mysql(&db))
        .uaa(&uaa)
        .yaml(&format!("prometheus:\n  port: {port}\n"))
        .start()
        .await;
    // The harness's readiness probe carries no token: start from whatever it left.
    let before = sample(port, "total_token_errors").await;
    let r = api
        .request(
            "GET",
            "/routing/v1/routes",
            &[("Authorization", "bearer not-a-jwt")],
            b"",
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.dump());
    wait_for_line(port, &format!("total_token_errors {}", before + 1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_signed_with_a_new_key_is_counted_as_a_key_refresh() {
    let uaa = FakeUaa::start().await;
    let db = TestDatabase::create("prom_key_refresh");
    let port = listener_port();
    let api = RoutingApi::builder(Database::mysql(&db))
        .uaa(&uaa)
        .yaml(&format!("prometheus:\n  port: {port}\n"))
        .start()
        .await;
    wait_for_line(port, "key_refresh_events 0").await;
    uaa.rotate_key();
    let token = format!(
        "bearer {}",
        uaa.mint(&["routing.routes.read"], Duration::from_secs(3600))
    );
    let r = api
        .request(
            "GET",
            "/routing/v1/routes",
            &[("Authorization", &token)],
            b"",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.dump());
    wait_for_line(port, "key_refresh_events 1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_serves_its_metrics_before_it_holds_the_lock() {
    let db = TestDatabase::create("prom_standby");
    let _active = RoutingApi::start(Database::mysql(&db)).await;
    let port = listener_port();
    let standby = RoutingApi::builder(Database::mysql(&db))
        .yaml(&format!("prometheus:\n  port: {port}\n"))
        .spawn();
    let text = wait_for_line(port, "http_subscriptions 0").await;
    assert!(text.lines().any(|l| l == "total_http_routes 0"), "{text}");
    assert!(
        !RoutingApi::port_bound(standby.http_port).await,
        "the standby serves its API:\n{}",
        standby.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_three_tls_files_metrics_need_a_client_certificate_from_the_ca() {
    let dir = TempDir::new("prom-tls");
    let ca = TestCa::new("metrics CA");
    let files = ca.write_server(dir.path(), &["127.0.0.1", "localhost"]);
    let port = listener_port();
    let db = TestDatabase::create("prom_tls");
    let api = RoutingApi::builder(Database::mysql(&db))
        .yaml(&format!(
            "prometheus:\n  port: {port}\n  cert_path: {}\n  key_path: {}\n  ca_path: {}\n",
            files.cert.display(),
            files.key.display(),
            files.ca.display()
        ))
        .start()
        .await;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (cert, key) = ca.issue_client("prometheus");
    let r = tls_request(addr, &ca, Some((&cert, &key)), "/metrics", None)
        .await
        .unwrap_or_else(|e| panic!("scrape over mutual TLS: {e}\n{}", api.log()));
    assert_eq!(r.status, 200, "{}", r.body);
    // The document itself (its figures may not be counted yet right after start: the
    // plain-HTTP tests wait for them).
    assert!(
        r.body
            .lines()
            .any(|l| l == "# TYPE total_http_routes gauge"),
        "{}",
        r.body
    );
    let refused = tls_request(addr, &ca, None, "/metrics", None).await;
    assert!(refused.is_err(), "served without a client certificate");
}
