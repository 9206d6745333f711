//! Routing-table sharding (gorouter.md A.2): `routing_table_sharding_mode` and
//! `isolation_segments` decide which `router.register` / `router.unregister` messages reach the
//! route table, by the message's `isolation_segment`.
//!
//! - `all` (the default): every endpoint, whatever its segment and whatever is listed;
//! - `segments`: only endpoints whose segment is listed (an unsegmented one is not);
//! - `shared-and-segments`: the listed segments and unsegmented endpoints;
//! - `segments` with no segment listed is a config error: the process exits non-zero naming
//!   the key;
//! - a rejected message is ignored both ways: an unregister from another segment does not
//!   remove an endpoint of this router's segment.
//!
//! A rejected registration leaves no trace, so each test publishes the messages it expects
//! to be ignored first and an accepted one last, from the same client, and waits for that one
//! to be routed: NATS delivers one publisher's messages in order, so by then the router has
//! processed (and dropped) the earlier ones. The route-table dump (`/routes`) then shows
//! exactly which endpoints were kept.

use std::collections::BTreeMap;
use std::time::Duration;

use integration::{EchoBackend, Gorouter, NatsServer, TestEnv};
use serde_json::{json, Value};

/// A registration of `uri` → 127.0.0.1:`port` in `segment` (`None`: no `isolation_segment`
/// key at all, an unsegmented endpoint).
fn segment_route(uri: &str, port: u16, segment: Option<&str>) -> Value {
    let mut msg = json!({"host": "127.0.0.1", "port": port, "uris": [uri]});
    if let Some(s) = segment {
        msg["isolation_segment"] = json!(s);
    }
    msg
}

/// The route table from `/routes`: route key → addresses of its endpoints, sorted.
async fn table(env: &TestEnv) -> BTreeMap<String, Vec<String>> {
    let resp = env.router.routes().await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    let dump: BTreeMap<String, Vec<Value>> =
        serde_json::from_slice(&resp.body).expect("/routes is a JSON object of arrays");
    dump.into_iter()
        .map(|(key, eps)| {
            let mut addrs: Vec<String> = eps
                .iter()
                .map(|e| e["address"].as_str().expect("address").to_string())
                .collect();
            addrs.sort();
            (key, addrs)
        })
        .collect()
}

fn addr(backend: &EchoBackend) -> String {
    format!("127.0.0.1:{}", backend.port())
}

/// `GET /` for `host` is answered by `backend` (the endpoint is in the table).
async fn assert_routed_to(env: &TestEnv, host: &str, backend: &EchoBackend) {
    let resp = env.router.wait_route(host).await;
    assert_eq!(resp.status, 200, "{host}: {}", resp.dump());
    assert_eq!(
        resp.header("X-Backend-Name"),
        Some(backend.name()),
        "{host} reached the wrong backend: {}",
        resp.dump()
    );
}

/// `GET /` for `host` is the router's own 404 (no endpoint of that host was kept).
async fn assert_not_routed(env: &TestEnv, host: &str) {
    let resp = env.get(host, "/").await;
    assert_eq!(resp.status, 404, "{host} is routed: {}", resp.dump());
    assert_eq!(
        resp.header("X-Cf-Routererror"),
        Some("unknown_route"),
        "{host}: {}",
        resp.dump()
    );
}

/// Three backends: one per kind of endpoint.
struct Backends {
    shared: EchoBackend,
    is1: EchoBackend,
    is2: EchoBackend,
}

impl Backends {
    async fn start() -> Self {
        Self {
            shared: EchoBackend::start("shared").await,
            is1: EchoBackend::start("is1").await,
            is2: EchoBackend::start("is2").await,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn all_mode_routes_every_segment_and_unsegmented_endpoints() {
    // The listed segment does not narrow `all`.
    let env = TestEnv::start("routing_table_sharding_mode: all\nisolation_segments: [is1]").await;
    let b = Backends::start().await;
    env.register(&segment_route("shared.all.test", b.shared.port(), None))
        .await;
    env.register(&segment_route("is1.all.test", b.is1.port(), Some("is1")))
        .await;
    env.register(&segment_route("is2.all.test", b.is2.port(), Some("is2")))
        .await;

    assert_routed_to(&env, "shared.all.test", &b.shared).await;
    assert_routed_to(&env, "is1.all.test", &b.is1).await;
    assert_routed_to(&env, "is2.all.test", &b.is2).await;
    assert_eq!(
        table(&env).await,
        BTreeMap::from([
            ("is1.all.test".to_string(), vec![addr(&b.is1)]),
            ("is2.all.test".to_string(), vec![addr(&b.is2)]),
            ("shared.all.test".to_string(), vec![addr(&b.shared)]),
        ])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_sharding_mode_every_endpoint_is_routed() {
    // Upstream's code default (and BOSH's) is `all`.
    let env = TestEnv::start("").await;
    let b = Backends::start().await;
    env.register(&segment_route(
        "is2.default.test",
        b.is2.port(),
        Some("is2"),
    ))
    .await;
    env.register(&segment_route("shared.default.test", b.shared.port(), None))
        .await;

    assert_routed_to(&env, "is2.default.test", &b.is2).await;
    assert_routed_to(&env, "shared.default.test", &b.shared).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn segments_mode_routes_only_endpoints_of_the_listed_segments() {
    let env =
        TestEnv::start("routing_table_sharding_mode: segments\nisolation_segments: [is1]").await;
    let b = Backends::start().await;
    // Rejected ones first (see the module docs): no segment, an explicitly empty one, another
    // segment, and another segment's endpoint on a host this router does serve.
    env.register(&segment_route("shared.seg.test", b.shared.port(), None))
        .await;
    env.register(&segment_route("empty.seg.test", b.shared.port(), Some("")))
        .await;
    env.register(&segment_route("is2.seg.test", b.is2.port(), Some("is2")))
        .await;
    env.register(&segment_route("mixed.seg.test", b.is2.port(), Some("is2")))
        .await;
    env.register(&segment_route("mixed.seg.test", b.is1.port(), Some("is1")))
        .await;
    env.register(&segment_route("is1.seg.test", b.is1.port(), Some("is1")))
        .await;

    assert_routed_to(&env, "is1.seg.test", &b.is1).await;
    assert_not_routed(&env, "shared.seg.test").await;
    assert_not_routed(&env, "empty.seg.test").await;
    assert_not_routed(&env, "is2.seg.test").await;
    assert_eq!(
        table(&env).await,
        BTreeMap::from([
            ("is1.seg.test".to_string(), vec![addr(&b.is1)]),
            ("mixed.seg.test".to_string(), vec![addr(&b.is1)]),
        ]),
        "only is1's endpoints are in the table"
    );
    for _ in 0..4 {
        assert_routed_to(&env, "mixed.seg.test", &b.is1).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_and_segments_mode_routes_listed_segments_and_unsegmented_endpoints() {
    let env = TestEnv::start(
        "routing_table_sharding_mode: shared-and-segments\nisolation_segments: [is1]",
    )
    .await;
    let b = Backends::start().await;
    env.register(&segment_route("is2.sas.test", b.is2.port(), Some("is2")))
        .await;
    env.register(&segment_route("shared.sas.test", b.shared.port(), None))
        .await;
    env.register(&segment_route("is1.sas.test", b.is1.port(), Some("is1")))
        .await;

    assert_routed_to(&env, "shared.sas.test", &b.shared).await;
    assert_routed_to(&env, "is1.sas.test", &b.is1).await;
    assert_not_routed(&env, "is2.sas.test").await;
    assert_eq!(
        table(&env).await,
        BTreeMap::from([
            ("is1.sas.test".to_string(), vec![addr(&b.is1)]),
            ("shared.sas.test".to_string(), vec![addr(&b.shared)]),
        ])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn segments_mode_without_isolation_segments_refuses_to_start() {
    let nats = NatsServer::start().await;
    for yaml in [
        "routing_table_sharding_mode: segments",
        "routing_table_sharding_mode: segments\nisolation_segments: []",
    ] {
        let (status, output) = Gorouter::builder(&nats)
            .yaml(yaml)
            .run_to_exit(Duration::from_secs(30))
            .await;
        assert_eq!(
            status.code(),
            Some(1),
            "`{yaml}` ({status}); output:\n{output}"
        );
        assert!(output.contains("Error loading config"), "{output}");
        assert!(
            output.contains("isolation_segments"),
            "the error for `{yaml}` does not name `isolation_segments`:\n{output}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unregister_from_another_segment_is_ignored() {
    let env =
        TestEnv::start("routing_table_sharding_mode: segments\nisolation_segments: [is1]").await;
    let app = EchoBackend::start("is1").await;
    let kept = segment_route("kept.unreg.test", app.port(), Some("is1"));
    env.register(&kept).await;
    assert_routed_to(&env, "kept.unreg.test", &app).await;

    // The same URI and address, sent by another segment's emitter (and by one without a
    // segment): not this router's messages.
    env.unregister(&segment_route("kept.unreg.test", app.port(), Some("is2")))
        .await;
    env.unregister(&segment_route("kept.unreg.test", app.port(), None))
        .await;
    let sentinel = EchoBackend::start("sentinel").await;
    env.register(&segment_route(
        "sentinel.unreg.test",
        sentinel.port(),
        Some("is1"),
    ))
    .await;
    assert_routed_to(&env, "sentinel.unreg.test", &sentinel).await;
    assert_routed_to(&env, "kept.unreg.test", &app).await;

    // Its own segment's unregister does remove it.
    env.unregister(&kept).await;
    let resp = env.router.wait_route_gone("kept.unreg.test").await;
    assert_eq!(resp.header("X-Cf-Routererror"), Some("unknown_route"));
}
