//! route-emitter against the real routing-api (its own MariaDB database) when routes go away or
//! their router group changes: Routing API routes (TCP mappings and `transport: routing_api`
//! HTTP routes) are deleted as soon as they leave the active set, whether their dynamic config
//! file is removed or their health check fails, long before their TTL, and come back when the
//! check passes again; a router group deleted and created again under the same name (a new
//! GUID) gets the group's routes back under the new GUID: the rejected upsert is retried and
//! the cached GUID is not kept past the rejection.
//!
//! (Against a fake Routing API, route_emitter_api_retries.rs covers the retries after a 503, a
//! failed delete retried until it succeeds, and group lookups cached and backed off.)

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use integration::mariadb::TestDatabase;
use integration::route_emitter::{tcp_route, RouteEmitterBuilder};
use integration::routing_api::{wait_until, Database, RoutingApi, DEFAULT_GROUP};
use serde_json::json;

/// Whether the API has a TCP mapping on external `port` (under `group`, if given).
async fn has_mapping(api: &RoutingApi, port: u16, group: Option<&str>) -> bool {
    api.tcp_routes()
        .await
        .iter()
        .any(|m| m["port"] == port && group.is_none_or(|g| m["router_group_guid"] == g))
}

async fn has_http_route(api: &RoutingApi, route: &str) -> bool {
    api.http_routes().await.iter().any(|r| r["route"] == route)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_leaving_the_active_set_are_deleted_from_the_routing_api() {
    let db = TestDatabase::create("re_api_leave");
    let api = RoutingApi::start(Database::mysql(&db)).await;
    // TTL 120 s: a route that disappears within the waits below was deleted, not expired.
    let builder = RouteEmitterBuilder::new(None).set(
        "routing_api",
        json!({"api_url": api.url(), "max_ttl": "120s"}),
    );
    let dir = builder.dir().to_path_buf();
    let file = dir.join("filed.yml");
    let http_uri = "filed.emitter-leave.test";
    let filed = json!({"routes": [
        tcp_route("filed-tcp", DEFAULT_GROUP, 1025, 6001),
        {
            "name": "filed-http",
            "port": 6003,
            "uris": [http_uri],
            "registration_interval": "1s",
            "transport": "routing_api",
        },
    ]});
    std::fs::write(&file, filed.to_string()).expect("write routes file");
    let flag = dir.join("healthy");
    let script = dir.join("check.sh");
    std::fs::write(&script, format!("#!/bin/sh\ntest -f {}\n", flag.display()))
        .expect("write check script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
        .expect("chmod check script");
    std::fs::write(&flag, "").expect("write flag");
    let mut checked = tcp_route("checked-tcp", DEFAULT_GROUP, 1026, 6002);
    checked["health_check"] = json!({"name": "flag", "script_path": script, "timeout": "500ms"});
    let glob = dir.join("*.yml").display().to_string();
    let _emitter = builder
        .set("dynamic_config_globs", json!([glob]))
        .route(checked)
        .start();

    let wait = Duration::from_secs(20);
    wait_until("every route registered", wait, || async {
        has_mapping(&api, 1025, None).await
            && has_mapping(&api, 1026, None).await
            && has_http_route(&api, http_uri).await
    })
    .await;

    // The file goes: its TCP mapping and its HTTP route are deleted; the other route stays.
    std::fs::remove_file(&file).expect("remove routes file");
    wait_until("the file's routes deleted", wait, || async {
        !has_mapping(&api, 1025, None).await && !has_http_route(&api, http_uri).await
    })
    .await;
    assert!(has_mapping(&api, 1026, None).await);

    // Its health check fails: deleted; passes again: registered again.
    std::fs::remove_file(&flag).expect("remove flag");
    wait_until("the unhealthy route deleted", wait, || async {
        !has_mapping(&api, 1026, None).await
    })
    .await;
    std::fs::write(&flag, "").expect("write flag");
    wait_until("the healthy route registered again", wait, || async {
        has_mapping(&api, 1026, None).await
    })
    .await;
    assert!(!has_mapping(&api, 1025, None).await);
}

const GROUP: &str = "emitter-recreated";

/// Creates router group [`GROUP`] and returns its GUID.
async fn create_group(api: &RoutingApi) -> String {
    let r = api
        .post(
            "/routing/v1/router_groups",
            &json!({"name": GROUP, "type": "tcp", "reservable_ports": "2000-2010"}).to_string(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.dump());
    let found = api
        .get_json(&format!("/routing/v1/router_groups?name={GROUP}"))
        .await;
    found[0]["guid"]
        .as_str()
        .unwrap_or_else(|| panic!("no guid in {found}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_group_created_again_gets_its_routes_back_under_the_new_guid() {
    let db = TestDatabase::create("re_api_regroup");
    let api = RoutingApi::start(Database::mysql(&db)).await;
    let first = create_group(&api).await;
    // max_ttl 3 s: the route is upserted every second.
    let emitter = RouteEmitterBuilder::new(None)
        .set(
            "routing_api",
            json!({"api_url": api.url(), "max_ttl": "3s"}),
        )
        .route(tcp_route("t", GROUP, 2001, 6100))
        .start();
    wait_until(
        "the mapping under the first guid",
        Duration::from_secs(20),
        || async { has_mapping(&api, 2001, Some(&first)).await },
    )
    .await;

    let r = api
        .delete(&format!("/routing/v1/router_groups/{first}"), "")
        .await;
    assert_eq!(r.status, 204, "{}", r.dump());
    let second = create_group(&api).await;
    assert_ne!(first, second);
    // Well inside the emitter's group cache lifetime (300 s): the upserts under the old GUID
    // are rejected, and the rejection makes the emitter look the group up again.
    wait_until(
        "the mapping under the new guid",
        Duration::from_secs(30),
        || async { has_mapping(&api, 2001, Some(&second)).await },
    )
    .await;
    let log = emitter.output();
    assert!(
        log.contains(&format!("router_group_guid: {first} not found")),
        "the old guid was never rejected:\n{log}"
    );
}
