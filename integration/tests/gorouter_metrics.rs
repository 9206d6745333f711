//! gorouter's `/metrics` on `prometheus.port` (issue 15): upstream's metric names and labels,
//! scraped over HTTP from the real binary after the traffic that moves each of them.

use std::net::SocketAddr;
use std::time::Duration;

use integration::{closed_port, free_port, route, EchoBackend, TestEnv};
use prometheus_endpoint::sample;
use serde_json::json;

struct MetricsEnv {
    env: TestEnv,
    port: u16,
}

async fn start(extra: &str) -> MetricsEnv {
    let port = free_port();
    let env = TestEnv::start(&format!("prometheus: {{port: {port}}}\n{extra}")).await;
    MetricsEnv { env, port }
}

/// The body of `GET /metrics`, which must answer 200.
async fn scrape(port: u16) -> String {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let scrape = prometheus_endpoint::scrape(addr, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(scrape.status, 200, "{scrape}");
    scrape.body
}

fn assert_has(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "no line {line:?} in:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_routed_request_counts_by_component_and_status_group() {
    let m = start("").await;
    let backend = EchoBackend::start("a").await;
    let mut msg = route("metrics-routed.example.com", backend.port());
    msg["tags"] = json!({"component": "route-emitter"});
    m.env.register_and_wait(&msg).await;
    let before = scrape(m.port).await;
    let requests_before = sample(&before, "total_requests{component=\"route-emitter\"}")
        .map_or(0, |n| n.parse::<u64>().expect("a count"));

    let resp = m.env.get("metrics-routed.example.com", "/").await;
    assert_eq!(resp.status, 200);

    let text = scrape(m.port).await;
    assert_has(
        &text,
        &format!(
            "total_requests{{component=\"route-emitter\"}} {}",
            requests_before + 1
        ),
    );
    assert!(
        text.contains("latency_count{component=\"route-emitter\"} "),
        "{text}"
    );
    assert!(text.contains("# TYPE total_requests unknown\n"), "{text}");
    assert!(text.contains("route_lookup_time_count "), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn registrations_count_by_component_and_action() {
    let m = start("").await;
    let backend = EchoBackend::start("a").await;
    let mut msg = route("metrics-registry.example.com", backend.port());
    msg["tags"] = json!({"component": "uaa"});
    let a_second_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
        - 1_000_000_000;
    msg["endpoint_updated_at_ns"] = json!(a_second_ago);
    m.env.register_and_wait(&msg).await;
    m.env.register(&msg).await;
    m.env.unregister(&msg).await;
    m.env
        .router
        .wait_route_gone("metrics-registry.example.com")
        .await;

    let text = scrape(m.port).await;
    assert_has(
        &text,
        "registry_message{action=\"added\",component=\"uaa\"} 1",
    );
    assert_has(&text, "unregistry_message{component=\"uaa\"} 1");
    assert_has(&text, "total_routes 0");
    assert!(text.contains("\nms_since_last_registry_update "), "{text}");
    // Both registrations were stamped a second before they were sent.
    assert_has(&text, "route_registration_latency_count 2");
    assert_has(&text, "route_registration_latency_bucket{le=\"100.0\"} 0");
    assert!(text.contains("\nfile_descriptors "), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_route_is_a_rejected_request_and_a_4xx() {
    let m = start("").await;
    let resp = m.env.get("metrics-nowhere.example.com", "/").await;
    assert_eq!(resp.status, 404);

    let text = scrape(m.port).await;
    assert_has(&text, "rejected_requests 1");
    assert_has(&text, "responses{status_group=\"4xx\"} 1");
    assert_has(&text, "bad_gateways 0");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_backend_is_a_bad_gateway() {
    let m = start("").await;
    let msg = route("metrics-dead.example.com", closed_port());
    m.env.register(&msg).await;
    let resp = m
        .env
        .router
        .wait_status("metrics-dead.example.com", 502)
        .await;
    assert_eq!(resp.status, 502);

    let text = scrape(m.port).await;
    let bad_gateways: u64 = sample(&text, "bad_gateways")
        .and_then(|n| n.parse().ok())
        .expect("a bad_gateways sample");
    assert!(bad_gateways >= 1, "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn per_app_latency_is_labelled_by_app_guid() {
    let m = start("per_app_prometheus_http_metrics_reporting: true").await;
    let backend = EchoBackend::start("a").await;
    let mut msg = route("metrics-app.example.com", backend.port());
    msg["app"] = json!("app-guid-1");
    m.env.register_and_wait(&msg).await;
    let before = scrape(m.port).await;
    let count_before = sample(
        &before,
        "http_latency_seconds_count{source_id=\"app-guid-1\"}",
    )
    .map_or(0, |n| n.parse::<u64>().expect("a count"));
    m.env.get("metrics-app.example.com", "/").await;

    let text = scrape(m.port).await;
    assert_has(
        &text,
        &format!(
            "http_latency_seconds_count{{source_id=\"app-guid-1\"}} {}",
            count_before + 1
        ),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn per_request_reporting_off_leaves_out_latency_and_lookup_time() {
    let m = start("per_request_metrics_reporting: false").await;
    let backend = EchoBackend::start("a").await;
    m.env
        .register_and_wait(&route("metrics-quiet.example.com", backend.port()))
        .await;
    let text = scrape(m.port).await;
    assert!(!text.contains("\nlatency_bucket"), "{text}");
    assert!(!text.contains("route_lookup_time"), "{text}");
    assert!(text.contains("\ntotal_requests{component=\"\"} "), "{text}");
}
