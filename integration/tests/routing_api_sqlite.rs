//! routing-api on SQLite (`sqldb.type: sqlite`, a file of each test's own): a smoke set of
//! router groups, TCP routes, HTTP routes and events, with the same wire answers as on MySQL.

use std::time::Duration;

use integration::routing_api::{
    assert_error, assert_headers, mask_guids, Database, RoutingApi, DEFAULT_GROUP,
};
use integration::TempDir;
use serde_json::json;

struct Env {
    api: RoutingApi,
    _dir: TempDir,
}

async fn env() -> Env {
    let dir = TempDir::new("it-ra-sqlite");
    let api = RoutingApi::start(Database::sqlite(dir.path().join("routing-api.db"))).await;
    Env { api, _dir: dir }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_router_groups_seed_create_update_delete() {
    let e = env().await;
    let r = e.api.get("/routing/v1/router_groups").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        mask_guids(&r.body_str()),
        format!(
            r#"[{{"guid":"<guid>","name":"{DEFAULT_GROUP}","type":"tcp","reservable_ports":"1024-1033"}}]"#
        )
    );
    assert_headers(
        &r,
        &[
            ("Content-Type", "application/json"),
            ("Content-Length", "114"),
        ],
    );
    let r = e
        .api
        .post(
            "/routing/v1/router_groups",
            r#"{"name":"tcp-two","type":"tcp","reservable_ports":"2000-2010"}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.dump());
    let again = e
        .api
        .post(
            "/routing/v1/router_groups",
            r#"{"name":"tcp-two","type":"tcp","reservable_ports":"2000-2010"}"#,
        )
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body, r.body);
    let guid = e.api.default_group_guid().await;
    let r = e
        .api
        .put(
            &format!("/routing/v1/router_groups/{guid}"),
            r#"{"reservable_ports":"1024-1040"}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.dump());
    assert!(r.header("X-Cf-Warnings").is_some());
    let r = e.api.get("/routing/v1/router_groups?name=nope").await;
    assert_error(
        &r,
        404,
        "ResourceNotFoundError",
        "Router Group 'nope' not found",
    );
    let two = e
        .api
        .get_json("/routing/v1/router_groups?name=tcp-two")
        .await;
    let path = format!(
        "/routing/v1/router_groups/{}",
        two[0]["guid"].as_str().unwrap()
    );
    assert_eq!(e.api.delete(&path, "").await.status, 204);
    assert_eq!(e.api.delete(&path, "").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_tcp_routes_upsert_in_place_filter_and_delete() {
    let e = env().await;
    let rg = e.api.default_group_guid().await;
    for (i, tls) in ["0", "-1", "null"].iter().enumerate() {
        let body = format!(
            r#"[{{"router_group_guid":"{rg}","port":1025,"backend_ip":"127.0.0.1","backend_port":9001,"ttl":60,"isolation_segment":"is1"{}}}]"#,
            if *tls == "null" {
                String::new()
            } else {
                format!(r#","backend_tls_port":{tls}"#)
            }
        );
        let r = e.api.post("/routing/v1/tcp_routes/create", &body).await;
        assert_eq!(r.status, 201, "{}", r.dump());
        let routes = e.api.tcp_routes().await;
        assert_eq!(routes.len(), 1, "{routes:?}");
        assert_eq!(routes[0]["modification_tag"]["index"], i as u64);
    }
    assert_eq!(
        e.api
            .get_json("/routing/v1/tcp_routes?isolation_segment=is1")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        e.api
            .get_json("/routing/v1/tcp_routes?isolation_segment=other")
            .await,
        json!([])
    );
    let r = e
        .api
        .post(
            "/routing/v1/tcp_routes/create",
            r#"[{"router_group_guid":"does-not-exist","port":1025,"backend_ip":"127.0.0.1","backend_port":1,"ttl":60}]"#,
        )
        .await;
    assert_error(
        &r,
        400,
        "ProcessRequestError",
        "Cannot process request: router_group_guid: does-not-exist not found",
    );
    let r = e
        .api
        .post(
            "/routing/v1/tcp_routes/delete",
            &format!(
                r#"[{{"router_group_guid":"{rg}","port":1025,"backend_ip":"127.0.0.1","backend_port":9001}}]"#
            ),
        )
        .await;
    assert_eq!(r.status, 204);
    assert!(e.api.tcp_routes().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_http_routes_create_upsert_validate_and_delete() {
    let e = env().await;
    let route = r#"[{"route":"myapp.example.com","port":9001,"ip":"127.0.0.1","ttl":60,"log_guid":"my-guid"}]"#;
    assert_eq!(e.api.post("/routing/v1/routes", route).await.status, 201);
    assert_eq!(e.api.post("/routing/v1/routes", route).await.status, 201);
    let routes = e.api.http_routes().await;
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert_eq!(routes[0]["modification_tag"]["index"], 1);
    let r = e
        .api
        .post(
            "/routing/v1/routes",
            r#"[{"route":"x.example.com","port":80,"ip":"1.2.3.4","ttl":500}]"#,
        )
        .await;
    assert_error(&r, 400, "RouteInvalidError", "Max ttl is 120");
    assert_eq!(e.api.delete("/routing/v1/routes", route).await.status, 204);
    assert!(e.api.http_routes().await.is_empty());
    let own = e.api.get_json("/routing/v1/routes").await;
    assert_eq!(own[0]["route"], "api.example.com/routing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_event_streams_carry_upserts_and_deletes() {
    let e = env().await;
    let rg = e.api.default_group_guid().await;
    let mut http = e.api.events("/routing/v1/events").await;
    let mut tcp = e.api.events("/routing/v1/tcp_routes/events").await;
    assert_eq!(http.head.status, 200);
    assert_eq!(
        tcp.head.header("Content-Type"),
        Some("text/event-stream; charset=utf-8")
    );
    let route = r#"[{"route":"s.example.com","port":80,"ip":"10.0.0.1","ttl":60}]"#;
    let mapping = format!(
        r#"[{{"router_group_guid":"{rg}","port":1025,"backend_ip":"10.0.0.1","backend_port":1,"ttl":60}}]"#
    );
    assert_eq!(e.api.post("/routing/v1/routes", route).await.status, 201);
    assert_eq!(
        e.api
            .post("/routing/v1/tcp_routes/create", &mapping)
            .await
            .status,
        201
    );
    assert_eq!(e.api.delete("/routing/v1/routes", route).await.status, 204);
    assert_eq!(
        e.api
            .post("/routing/v1/tcp_routes/delete", &mapping)
            .await
            .status,
        204
    );
    let wait = Duration::from_secs(5);
    for (sse, key) in [(&mut http, "route"), (&mut tcp, "backend_ip")] {
        let mut up = sse.expect_event(wait).await;
        assert_eq!(up.id, "0");
        // (the API's own first registration may be published to a stream opened this early)
        if up.data.contains("\"api.example.com/routing\"") {
            up = sse.expect_event(wait).await;
            assert_eq!(up.id, "1");
        }
        let del = sse.expect_event(wait).await;
        assert_eq!(up.event, "Upsert");
        assert_eq!(del.event, "Delete");
        assert_eq!(del.id, (up.id.parse::<u64>().unwrap() + 1).to_string());
        assert_eq!(up.json()[key], del.json()[key]);
    }
}
