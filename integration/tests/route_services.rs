//! Route services (A.10) end to end: a route bound to a route service with route services
//! disabled is refused and never reaches the app.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use integration::{route, EchoBackend, TestEnv};
use serde_json::json;

/// A TCP listener that only counts the connections made to it: the route service that must
/// never be contacted.
async fn counting_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (port, count)
}

#[tokio::test(flavor = "multi_thread")]
async fn route_service_route_is_refused_when_route_services_are_disabled() {
    let env = TestEnv::start("").await;
    let app = EchoBackend::start("app").await;
    let (rs_port, rs_connections) = counting_listener().await;
    let mut msg = route("closed.rs.test", app.port());
    msg["route_service_url"] = json!(format!("https://127.0.0.1:{rs_port}/auth"));
    let resp = env.register_and_wait(&msg).await;

    assert_eq!(resp.status, 502, "{}", resp.dump());
    assert_eq!(
        resp.header("X-Cf-Routererror"),
        Some("route_service_unsupported")
    );
    assert_eq!(
        resp.header("Content-Type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(
        resp.body_str(),
        "502 Bad Gateway: Support for route services is disabled.\n"
    );
    let again = env.get("closed.rs.test", "/some/path").await;
    assert_eq!(again.status, 502);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(app.request_count(), 0, "the app must never see the request");
    assert_eq!(rs_connections.load(Ordering::SeqCst), 0);
}
