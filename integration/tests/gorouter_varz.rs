//! Upstream's deprecated status server (`status.enable_deprecated_varz_healthz_endpoints`,
//! issue 15) on the real binary: `/healthz` without auth, `/varz` and `/routes` behind
//! `status.user`/`status.pass` on `status.port`, and none of it without the key.

use integration::router::{basic_auth, STATUS_PASS, STATUS_USER};
use integration::{route, EchoBackend, RawResponse, TestEnv};
use serde_json::{json, Value};

const DEPRECATED_MODE: &str = "status: {enable_deprecated_varz_healthz_endpoints: true}";

/// `GET path` on the status port, with basic auth when `credentials` are given.
async fn status_get(env: &TestEnv, path: &str, credentials: Option<(&str, &str)>) -> RawResponse {
    let mut raw = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    if let Some((user, pass)) = credentials {
        raw.push_str(&format!(
            "Authorization: Basic {}\r\n",
            basic_auth(user, pass)
        ));
    }
    raw.push_str("\r\n");
    integration::http::request(env.router.status_addr(), raw.as_bytes()).await
}

fn json_body(resp: &RawResponse) -> Value {
    serde_json::from_slice(&resp.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", resp.dump()))
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_answers_ok_without_auth() {
    let env = TestEnv::start(DEPRECATED_MODE).await;
    let resp = status_get(&env, "/healthz", None).await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    assert_eq!(resp.body_str(), "ok\n");
    assert_eq!(
        resp.header("Content-Type"),
        Some("text/plain; charset=utf-8")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_the_liveness_probe_stay_without_auth() {
    let env = TestEnv::start(DEPRECATED_MODE).await;
    for path in ["/health", "/is-process-alive-do-not-use-for-loadbalancing"] {
        let resp = status_get(&env, path, None).await;
        assert_eq!(resp.status, 200, "{path}: {}", resp.dump());
        assert_eq!(resp.body_str(), "ok\n", "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn varz_needs_the_status_credentials() {
    let env = TestEnv::start(DEPRECATED_MODE).await;
    for credentials in [None, Some((STATUS_USER, "wrong"))] {
        let resp = status_get(&env, "/varz", credentials).await;
        assert_eq!(resp.status, 401, "{credentials:?}: {}", resp.dump());
        assert_eq!(resp.header("WWW-Authenticate"), Some("Basic"));
        assert_eq!(resp.body_str(), "401 Unauthorized\n");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn varz_shows_a_routed_request_and_the_table() {
    let env = TestEnv::start(DEPRECATED_MODE).await;
    let backend = EchoBackend::start("a").await;
    let mut msg = route("varz-routed.example.com", backend.port());
    msg["tags"] = json!({"component": "route-emitter"});
    // Waiting for the route takes requests of its own: count from after it.
    env.register_and_wait(&msg).await;
    let before = json_body(&status_get(&env, "/varz", Some((STATUS_USER, STATUS_PASS))).await);
    let resp = env.get("varz-routed.example.com", "/").await;
    assert_eq!(resp.status, 200, "{}", resp.dump());

    let resp = status_get(&env, "/varz", Some((STATUS_USER, STATUS_PASS))).await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    assert_eq!(resp.header("Content-Type"), Some("application/json"));
    let varz = json_body(&resp);
    let grew = |path: &[&str]| {
        let at = |v: &Value| {
            path.iter()
                .fold(v.clone(), |v, key| v[key].clone())
                .as_u64()
        };
        match (at(&before), at(&varz)) {
            (Some(then), Some(now)) => now - then,
            _ => panic!("no number at {path:?}: before {before}, after {varz}"),
        }
    };
    for key in gorouter::varz::FIELDS {
        assert!(varz.get(key).is_some(), "no {key} in {varz}");
    }
    assert_eq!(varz["type"], "Router");
    assert_eq!(varz["credentials"], json!([STATUS_USER, STATUS_PASS]));
    assert_eq!(grew(&["requests"]), 1, "{varz}");
    assert_eq!(grew(&["responses_2xx"]), 1, "{varz}");
    assert_eq!(
        grew(&["tags", "component", "route-emitter", "requests"]),
        1,
        "{varz}"
    );
    assert_eq!(varz["urls"], 1, "{varz}");
    assert_eq!(varz["droplets"], 1, "{varz}");
    assert!(varz["mem"].as_u64().is_some_and(|kib| kib > 0), "{varz}");
    assert_eq!(varz["rate"].as_array().map(Vec::len), Some(3), "{varz}");
    for percentile in ["50", "75", "90", "95", "99", "value", "samples"] {
        assert!(
            varz["latency"][percentile].is_number(),
            "latency.{percentile} in {varz}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_are_served_on_the_status_port_with_auth() {
    let env = TestEnv::start(DEPRECATED_MODE).await;
    let backend = EchoBackend::start("a").await;
    env.register_and_wait(&route("varz-routes.example.com", backend.port()))
        .await;

    let resp = status_get(&env, "/routes", None).await;
    assert_eq!(resp.status, 401, "{}", resp.dump());

    let resp = status_get(&env, "/routes", Some((STATUS_USER, STATUS_PASS))).await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    let routes = json_body(&resp);
    let address = format!("127.0.0.1:{}", backend.port());
    assert_eq!(
        routes["varz-routes.example.com"][0]["address"], address,
        "{routes}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_key_there_is_no_varz() {
    let env = TestEnv::start("").await;
    for path in ["/varz", "/healthz"] {
        let resp = status_get(&env, path, Some((STATUS_USER, STATUS_PASS))).await;
        assert_eq!(resp.status, 404, "{path}: {}", resp.dump());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn varz_lists_the_top_apps_by_requests_in_the_last_minute() {
    let env = TestEnv::start(DEPRECATED_MODE).await;
    let backend = EchoBackend::start("a").await;
    let mut busy = route("varz-top-busy.example.com", backend.port());
    busy["app"] = json!("varz-top-busy-guid");
    let mut quiet = route("varz-top-quiet.example.com", backend.port());
    quiet["app"] = json!("varz-top-quiet-guid");
    env.register_and_wait(&busy).await;
    env.register_and_wait(&quiet).await;
    for _ in 0..5 {
        let resp = env.get("varz-top-busy.example.com", "/").await;
        assert_eq!(resp.status, 200, "{}", resp.dump());
    }

    let varz = json_body(&status_get(&env, "/varz", Some((STATUS_USER, STATUS_PASS))).await);
    let top = varz["top10_app_requests"]
        .as_array()
        .unwrap_or_else(|| panic!("no top10_app_requests list: {varz}"));
    let ids: Vec<&str> = top
        .iter()
        .filter_map(|app| app["application_id"].as_str())
        .collect();
    // The waits above took requests of their own too; the five make `busy` the first.
    assert_eq!(ids, ["varz-top-busy-guid", "varz-top-quiet-guid"], "{varz}");
    let busy_rpm = top[0]["rpm"].as_u64().expect("rpm");
    assert!(busy_rpm >= 5, "{varz}");
    assert_eq!(top[0]["rps"].as_u64(), Some(busy_rpm / 60), "{varz}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_router_announces_itself_and_answers_component_discovery_over_nats() {
    let nats = integration::NatsServer::start().await;
    let observer = integration::NatsClient::connect(&nats).await;
    let mut announcements = observer.subscribe("vcap.component.announce").await;
    observer.flush().await;
    let router = integration::Gorouter::builder(&nats)
        .yaml(DEPRECATED_MODE)
        .start()
        .await;

    let announced: Value = serde_json::from_str(
        &integration::nats::next_message(&mut announcements, std::time::Duration::from_secs(10))
            .await,
    )
    .expect("the announcement is JSON");
    assert_eq!(announced["type"], "Router", "{announced}");
    assert_eq!(
        announced["host"],
        format!("127.0.0.1:{}", router.status_addr().port()),
        "{announced}"
    );
    for key in gorouter::varz::FIELDS {
        assert!(announced.get(key).is_some(), "no {key} in {announced}");
    }

    let discovered: Value =
        serde_json::from_str(&observer.request("vcap.component.discover", "").await)
            .expect("the discover reply is JSON");
    assert_eq!(discovered["type"], "Router", "{discovered}");
    assert_eq!(discovered["uuid"], announced["uuid"], "{discovered}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_key_there_is_no_component_discovery() {
    let nats = integration::NatsServer::start().await;
    let _router = integration::Gorouter::builder(&nats).start().await;
    let observer = integration::NatsClient::connect(&nats).await;
    let reply = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        observer
            .client()
            .request("vcap.component.discover", "".into()),
    )
    .await;
    // No responder: the server says so at once (or, on an old server, nothing arrives).
    assert!(
        !matches!(reply, Ok(Ok(_))),
        "a router without the key answered discovery"
    );
}
