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
