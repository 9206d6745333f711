//! The routing-api REST endpoints end to end (the built binary on a MariaDB database of each
//! test's own, `-devMode`): router groups, HTTP routes, TCP routes, unknown paths and bad input,
//! with status lines, headers and bodies checked against ../shared/spec/routing-api.md and the
//! upstream captures (routing-api-exchanges.txt).

use std::time::Duration;

use integration::mariadb::TestDatabase;
use integration::routing_api::{
    assert_error, assert_headers, error_json, mask_guids, send_large_body, Database, RoutingApi,
    DEFAULT_GROUP, LOG_GUID, SYSTEM_DOMAIN,
};
use integration::util::is_uuid_like;
use serde_json::{json, Value};

/// A routing-api on its own database. Drops the process before the database.
struct Env {
    api: RoutingApi,
    db: TestDatabase,
}

async fn env() -> Env {
    let db = TestDatabase::create("ra_rest");
    let api = RoutingApi::start(Database::mysql(&db)).await;
    Env { api, db }
}

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

const PORTS_WARNING: &str = "Warning%3A+if+routes+are+registered+for+ports+that+are+not+in+the+new+range%2C+modifying+your+load+balancer+to+remove+these+ports+will+result+in+backends+for+those+routes+becoming+inaccessible.";

fn group_json(guid: &str, name: &str, kind: &str, ports: &str) -> String {
    format!(r#"{{"guid":"{guid}","name":"{name}","type":"{kind}","reservable_ports":"{ports}"}}"#)
}

// ----- router groups -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_groups_list_shows_the_seeded_group_as_upstream_writes_it() {
    let e = env().await;
    let r = e.api.get("/routing/v1/router_groups").await;
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    let body = r.body_str();
    // json.Marshal + Write: no trailing newline (capture: Content-Length 114 for this body)
    let guid = body[10..46].to_string();
    assert!(is_uuid_like(&guid), "{body}");
    let want = format!("[{}]", group_json(&guid, DEFAULT_GROUP, "tcp", "1024-1033"));
    assert_eq!(body, want);
    assert_eq!(want.len(), 114);
    assert_headers(&r, &[("Content-Type", JSON), ("Content-Length", "114")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_groups_are_seeded_only_while_the_table_is_empty() {
    let db = TestDatabase::create("ra_rest");
    let mut first = RoutingApi::start(Database::mysql(&db)).await;
    let before = first.get_json("/routing/v1/router_groups").await;
    first.sigterm();
    assert!(first.wait_exit(Duration::from_secs(10)).await.success());
    drop(first);

    let second = RoutingApi::builder(Database::mysql(&db))
        .yaml("router_groups:\n- {name: other-tcp, type: tcp, reservable_ports: \"2000-2010\"}\n")
        .start()
        .await;
    let after = second.get_json("/routing/v1/router_groups").await;
    assert_eq!(
        after, before,
        "a restart with other seeds must keep the old groups"
    );
    assert_eq!(after[0]["name"], DEFAULT_GROUP);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_group_by_name_is_a_one_element_array_and_unknown_name_is_404() {
    let e = env().await;
    let r = e
        .api
        .get(&format!("/routing/v1/router_groups?name={DEFAULT_GROUP}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.dump());
    assert_eq!(
        mask_guids(&r.body_str()),
        format!(
            "[{}]",
            group_json("<guid>", DEFAULT_GROUP, "tcp", "1024-1033")
        )
    );
    assert_headers(&r, &[("Content-Type", JSON), ("Content-Length", "114")]);

    let r = e.api.get("/routing/v1/router_groups?name=nope").await;
    assert_eq!(r.status_line, "HTTP/1.1 404 Not Found");
    assert_error(
        &r,
        404,
        "ResourceNotFoundError",
        "Router Group 'nope' not found",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_group_create_is_201_and_same_name_and_type_again_is_200_with_the_existing_one() {
    let e = env().await;
    let r = e
        .api
        .post(
            "/routing/v1/router_groups",
            r#"{"name":"my-http-rg","type":"http"}"#,
        )
        .await;
    assert_eq!(r.status_line, "HTTP/1.1 201 Created");
    let created: Value = serde_json::from_slice(&r.body).unwrap();
    let guid = created["guid"].as_str().unwrap().to_string();
    assert!(is_uuid_like(&guid));
    let want = group_json(&guid, "my-http-rg", "http", "");
    assert_eq!(r.body_str(), want);
    assert_headers(
        &r,
        &[
            ("Content-Type", TEXT),
            ("Content-Length", &want.len().to_string()),
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
    assert_eq!(
        mask_guids(&r.body_str()),
        group_json("<guid>", "tcp-two", "tcp", "2000-2010")
    );

    // the same name and type again: 200 and the existing group, nothing new
    let r = e
        .api
        .post(
            "/routing/v1/router_groups",
            r#"{"name":"my-http-rg","type":"http"}"#,
        )
        .await;
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    assert_eq!(r.body_str(), want);
    let all = e.api.get_json("/routing/v1/router_groups").await;
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{all}");
    for n in [DEFAULT_GROUP, "my-http-rg", "tcp-two"] {
        assert!(names.contains(&n), "{all}");
    }
    assert_eq!(e.db.count("router_groups"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_group_create_validation_errors_use_upstream_messages_and_write_nothing() {
    let e = env().await;
    let cases = [
        (
            r#"{"type":"tcp","reservable_ports":"2000"}"#,
            "Missing name in router group",
        ),
        (
            r#"{"name":"x","reservable_ports":"2000"}"#,
            "Missing type in router group",
        ),
        (
            r#"{"name":"x","type":"tcp"}"#,
            "Missing reservable_ports in router group: x",
        ),
        (
            r#"{"name":"x","type":"http","reservable_ports":"2000"}"#,
            "Reservable ports are not supported for router groups of type http",
        ),
        (
            r#"{"name":"x","type":"tcp","reservable_ports":"80"}"#,
            "Port must be between 1024 and 65535",
        ),
        (
            r#"{"name":"x","type":"tcp","reservable_ports":"2000-70000"}"#,
            "Port must be between 1024 and 65535",
        ),
        (
            r#"{"name":"x","type":"tcp","reservable_ports":"-2000"}"#,
            "range (-2000) requires a starting port",
        ),
        (
            r#"{"name":"x","type":"tcp","reservable_ports":"2000-"}"#,
            "range (2000-) requires an ending port",
        ),
        (
            r#"{"name":"x","type":"tcp","reservable_ports":"3000-2000"}"#,
            "range (3000-2000) must be in ascending numeric order",
        ),
        (
            r#"{"name":"x","type":"tcp","reservable_ports":"2000-2001-2002"}"#,
            "range (2000-2001-2002) has too many '-' separators",
        ),
        (
            r#"{"name":"x","type":"tcp","reservable_ports":"2000-2010,2005"}"#,
            "Overlapping values: [2000-2010] and 2005",
        ),
    ];
    for (body, message) in cases {
        let r = e.api.post("/routing/v1/router_groups", body).await;
        assert_error(
            &r,
            400,
            "ProcessRequestError",
            &format!("Cannot process request: {message}"),
        );
    }
    assert_eq!(e.db.count("router_groups"), 1, "nothing may be written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_group_with_a_taken_name_and_another_type_is_refused() {
    let e = env().await;
    let r = e
        .api
        .post(
            "/routing/v1/router_groups",
            &format!(r#"{{"name":"{DEFAULT_GROUP}","type":"http"}}"#),
        )
        .await;
    assert_error(
        &r,
        400,
        "ProcessRequestError",
        "Cannot process request: Router group name must be unique",
    );
    assert_eq!(e.db.count("router_groups"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_groups_may_share_ports_with_another_group() {
    // Upstream checks overlaps only within one group's own list: its suite creates a
    // `test-group` whose ports lie inside the seeded group's.
    let e = env().await;
    let r = e
        .api
        .post(
            "/routing/v1/router_groups",
            r#"{"name":"test-group","type":"tcp","reservable_ports":"1030-1040"}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.dump());
    assert_eq!(e.db.count("router_groups"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_group_reserved_system_ports_are_refused_when_conflicts_fail() {
    let db = TestDatabase::create("ra_rest");
    let api = RoutingApi::builder(Database::mysql(&db))
        .yaml("fail_on_router_port_conflicts: true\n")
        .start()
        .await;
    let r = api
        .post(
            "/routing/v1/router_groups",
            r#"{"name":"x","type":"tcp","reservable_ports":"2800-2830"}"#,
        )
        .await;
    assert_error(
        &r,
        400,
        "ProcessRequestError",
        "Cannot process request: Invalid ports. Reservable ports must not include the following \
         reserved system component ports: [2822 2825 3457 3458 3459 3460 3461 8853 9100 14726 \
         14727 14821 14822 14823 14824 14829 14830 14920 14922 15821 17002 53035 53080].",
    );
    // a range clear of them is fine
    let r = api
        .post(
            "/routing/v1/router_groups",
            r#"{"name":"x","type":"tcp","reservable_ports":"2830-2840"}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.dump());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_group_put_applies_only_reservable_ports_and_warns() {
    let e = env().await;
    let guid = e.api.default_group_guid().await;
    let r = e
        .api
        .put(
            &format!("/routing/v1/router_groups/{guid}"),
            r#"{"name":"renamed","type":"http","reservable_ports":"1024-1040"}"#,
        )
        .await;
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    let want = group_json(&guid, DEFAULT_GROUP, "tcp", "1024-1040");
    assert_eq!(r.body_str(), want);
    assert_eq!(want.len(), 112, "the capture's Content-Length");
    assert_headers(
        &r,
        &[
            ("Content-Type", JSON),
            ("X-Cf-Warnings", PORTS_WARNING),
            ("Content-Length", "112"),
        ],
    );
    let all = e.api.get_json("/routing/v1/router_groups").await;
    assert_eq!(
        all,
        json!([{"guid": guid, "name": DEFAULT_GROUP, "type": "tcp", "reservable_ports": "1024-1040"}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_group_put_unknown_guid_is_404_and_bad_ports_400() {
    let e = env().await;
    let r = e
        .api
        .put(
            "/routing/v1/router_groups/no-such-guid",
            r#"{"reservable_ports":"1024-1040"}"#,
        )
        .await;
    assert_error(
        &r,
        404,
        "ResourceNotFoundError",
        "Router Group 'no-such-guid' does not exist",
    );

    let guid = e.api.default_group_guid().await;
    let r = e
        .api
        .put(
            &format!("/routing/v1/router_groups/{guid}"),
            r#"{"reservable_ports":"80"}"#,
        )
        .await;
    assert_error(
        &r,
        400,
        "ProcessRequestError",
        "Cannot process request: Port must be between 1024 and 65535",
    );
    let r = e
        .api
        .put(&format!("/routing/v1/router_groups/{guid}"), r#"{}"#)
        .await;
    assert_error(
        &r,
        400,
        "ProcessRequestError",
        "Cannot process request: Missing reservable_ports in router group: default-tcp",
    );
    let g = e.api.get_json("/routing/v1/router_groups").await;
    assert_eq!(g[0]["reservable_ports"], "1024-1033", "unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_group_delete_is_204_then_404_with_an_empty_body() {
    let e = env().await;
    let r = e
        .api
        .post(
            "/routing/v1/router_groups",
            r#"{"name":"doomed","type":"http"}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.dump());
    let guid: Value = serde_json::from_slice(&r.body).unwrap();
    let path = format!(
        "/routing/v1/router_groups/{}",
        guid["guid"].as_str().unwrap()
    );

    let r = e.api.delete(&path, "").await;
    assert_eq!(r.status_line, "HTTP/1.1 204 No Content");
    assert!(r.body.is_empty());
    assert_headers(&r, &[]);

    let r = e.api.delete(&path, "").await;
    assert_eq!(r.status_line, "HTTP/1.1 404 Not Found");
    assert!(r.body.is_empty(), "{}", r.dump());
    assert_headers(&r, &[("Content-Length", "0")]);
    assert_eq!(e.db.count("router_groups"), 1);
}

// ----- HTTP routes -----

fn route_json(route: &str, port: u16, ip: &str, ttl: i64, log_guid: &str, index: u32) -> String {
    format!(
        r#"{{"route":"{route}","port":{port},"ip":"{ip}","ttl":{ttl},"log_guid":"{log_guid}","modification_tag":{{"guid":"<guid>","index":{index}}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_route_create_list_and_delete_as_upstream_answers() {
    let e = env().await;
    let route = r#"[{"route":"myapp.example.com","port":9001,"ip":"127.0.0.1","ttl":60,"log_guid":"my-guid","route_service_url":""}]"#;
    let r = e.api.post("/routing/v1/routes", route).await;
    assert_eq!(r.status_line, "HTTP/1.1 201 Created");
    assert!(r.body.is_empty());
    assert_headers(&r, &[("Content-Length", "0")]);

    let r = e.api.get("/routing/v1/routes").await;
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    let body = r.body_str();
    // json.Encoder: a trailing newline; no Content-Type set, so Go sniffs text/plain
    assert!(body.ends_with("]\n"), "{body:?}");
    assert_headers(
        &r,
        &[
            ("Content-Type", TEXT),
            ("Content-Length", &body.len().to_string()),
        ],
    );
    let masked = mask_guids(&body);
    let mine = route_json("myapp.example.com", 9001, "127.0.0.1", 60, "my-guid", 0);
    assert!(masked.contains(&mine), "{masked}");
    assert!(
        !masked.contains("route_service_url"),
        "an empty route_service_url is omitted: {masked}"
    );

    let r = e.api.delete("/routing/v1/routes", route).await;
    assert_eq!(r.status_line, "HTTP/1.1 204 No Content");
    assert!(r.body.is_empty());
    assert_headers(&r, &[]);
    assert!(e.api.http_routes().await.is_empty());
    assert_eq!(e.db.count("routes"), 1, "only the API's own route is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_routes_include_the_apis_own_registration() {
    let e = env().await;
    let body = mask_guids(&e.api.get("/routing/v1/routes").await.body_str());
    let own = route_json(
        &format!("api.{SYSTEM_DOMAIN}/routing"),
        e.api.http_port,
        "127.0.0.1",
        120,
        LOG_GUID,
        0,
    );
    assert_eq!(body, format!("[{own}]\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_route_upsert_bumps_the_modification_index_and_keeps_the_guid() {
    let e = env().await;
    let r = e
        .api
        .post(
            "/routing/v1/routes",
            r#"[{"route":"a.example.com","port":80,"ip":"10.0.0.1","ttl":60,"log_guid":"g1"}]"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.dump());
    let first = e.api.http_routes().await;
    // again, with another ttl and no log_guid (an empty one keeps the old)
    let r = e
        .api
        .post(
            "/routing/v1/routes",
            r#"[{"route":"a.example.com","port":80,"ip":"10.0.0.1","ttl":30}]"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.dump());
    let second = e.api.http_routes().await;
    assert_eq!(second.len(), 1, "{second:?}");
    assert_eq!(
        second[0]["modification_tag"]["guid"],
        first[0]["modification_tag"]["guid"]
    );
    assert_eq!(second[0]["modification_tag"]["index"], 1);
    assert_eq!(second[0]["ttl"], 30);
    assert_eq!(second[0]["log_guid"], "g1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_route_without_ttl_gets_max_ttl() {
    let e = env().await;
    let r = e
        .api
        .post(
            "/routing/v1/routes",
            r#"[{"route":"b.example.com","port":80,"ip":"10.0.0.1"}]"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.dump());
    let routes = e.api.http_routes().await;
    assert_eq!(routes[0]["ttl"], 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_route_validation_errors_use_upstream_names_and_messages() {
    let e = env().await;
    let ok = json!({"route": "v.example.com", "port": 80, "ip": "10.0.0.1", "ttl": 60});
    let with = |k: &str, v: Value| {
        let mut r = ok.clone();
        r[k] = v;
        r
    };
    let cases = [
        (
            with("route", json!("a.com?x=1")),
            "RouteInvalidError",
            "Url cannot contain any of [?, #]",
        ),
        (
            with("route", json!("a.com#frag")),
            "RouteInvalidError",
            "Url cannot contain any of [?, #]",
        ),
        (
            with("route", json!("a.com/sp ace")),
            "RouteInvalidError",
            "Url cannot contain invalid characters",
        ),
        (
            with("port", json!(0)),
            "RouteInvalidError",
            "Each route request requires a port greater than 0",
        ),
        (
            with("route", json!("")),
            "RouteInvalidError",
            "Each route request requires a valid route",
        ),
        (
            with("ip", json!("")),
            "RouteInvalidError",
            "Each route request requires an IP",
        ),
        (
            with("ttl", json!(121)),
            "RouteInvalidError",
            "Max ttl is 120",
        ),
        (
            with("ttl", json!(0)),
            "RouteInvalidError",
            "Request requires a ttl greater than 0",
        ),
        (
            with("ttl", json!(-5)),
            "RouteInvalidError",
            "Request requires a ttl greater than 0",
        ),
        (
            with("route_service_url", json!("http://rs.example.com")),
            "RouteServiceUrlInvalidError",
            "Route service url must use HTTPS.",
        ),
        (
            with("route_service_url", json!("https://rs.example.com/a b")),
            "RouteServiceUrlInvalidError",
            "Url cannot contain invalid characters",
        ),
    ];
    for (route, name, message) in cases {
        // a valid route first: a batch with one bad route writes nothing
        let body = json!([ok.clone(), route]).to_string();
        let r = e.api.post("/routing/v1/routes", &body).await;
        assert_error(&r, 400, name, message);
    }
    assert!(e.api.http_routes().await.is_empty());
    assert_eq!(e.db.count("routes"), 1, "only the API's own route");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_route_delete_of_an_unknown_route_is_204_and_delete_validates_without_ttl() {
    let e = env().await;
    let r = e
        .api
        .delete(
            "/routing/v1/routes",
            r#"[{"route":"never.example.com","port":80,"ip":"10.0.0.1"}]"#,
        )
        .await;
    assert_eq!(r.status_line, "HTTP/1.1 204 No Content");
    // ttl is not checked on delete
    let r = e
        .api
        .delete(
            "/routing/v1/routes",
            r#"[{"route":"never.example.com","port":80,"ip":"10.0.0.1","ttl":5000}]"#,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.dump());
    let r = e
        .api
        .delete(
            "/routing/v1/routes",
            r#"[{"route":"never.example.com","port":0,"ip":"10.0.0.1"}]"#,
        )
        .await;
    assert_error(
        &r,
        400,
        "RouteInvalidError",
        "Each route request requires a port greater than 0",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_route_with_a_route_service_is_its_own_identity_and_lists_the_url() {
    let e = env().await;
    let r = e
        .api
        .post(
            "/routing/v1/routes",
            r#"[{"route":"rs.example.com/p","port":80,"ip":"10.0.0.1","ttl":60},
                {"route":"rs.example.com/p","port":80,"ip":"10.0.0.1","ttl":60,"route_service_url":"https://svc.example.com/x"}]"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.dump());
    let body = mask_guids(&e.api.get("/routing/v1/routes").await.body_str());
    assert!(
        body.contains(r#"{"route":"rs.example.com/p","port":80,"ip":"10.0.0.1","ttl":60,"log_guid":"","route_service_url":"https://svc.example.com/x","modification_tag":{"guid":"<guid>","index":0}}"#),
        "{body}"
    );
    assert_eq!(e.api.http_routes().await.len(), 2);
    // deleting the plain one leaves the route-service one
    let r = e
        .api
        .delete(
            "/routing/v1/routes",
            r#"[{"route":"rs.example.com/p","port":80,"ip":"10.0.0.1"}]"#,
        )
        .await;
    assert_eq!(r.status, 204);
    let left = e.api.http_routes().await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["route_service_url"], "https://svc.example.com/x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_route_list_escapes_html_characters_like_go() {
    let e = env().await;
    let r = e
        .api
        .post(
            "/routing/v1/routes",
            r#"[{"route":"amp.example.com/a&b","port":80,"ip":"10.0.0.1","ttl":60}]"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.dump());
    let body = e.api.get("/routing/v1/routes").await.body_str();
    assert!(
        body.contains(r#""route":"amp.example.com/a\u0026b""#),
        "{body}"
    );
}

// ----- TCP routes -----

fn tcp_json(rg: &str, backend_port: u16, tls: i32, ip: &str, port: u16, ttl: i64) -> String {
    format!(
        r#"{{"router_group_guid":"{rg}","backend_port":{backend_port},"backend_tls_port":{tls},"backend_ip":"{ip}","instance_id":"","port":{port},"modification_tag":{{"guid":"<guid>","index":0}},"ttl":{ttl},"isolation_segment":""}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_route_create_list_and_delete_as_upstream_answers() {
    let e = env().await;
    let rg = e.api.default_group_guid().await;
    let mapping = format!(
        r#"[{{"router_group_guid":"{rg}","port":1025,"backend_ip":"127.0.0.1","backend_port":9002,"ttl":60}}]"#
    );
    let r = e.api.post("/routing/v1/tcp_routes/create", &mapping).await;
    assert_eq!(r.status_line, "HTTP/1.1 201 Created");
    assert!(r.body.is_empty());
    assert_headers(&r, &[("Content-Length", "0")]);

    let r = e.api.get("/routing/v1/tcp_routes").await;
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    let body = r.body_str();
    assert_eq!(
        mask_guids(&body.replace(&rg, "RG")),
        format!("[{}]\n", tcp_json("RG", 9002, 0, "127.0.0.1", 1025, 60))
    );
    assert_headers(
        &r,
        &[
            ("Content-Type", TEXT),
            ("Content-Length", &body.len().to_string()),
        ],
    );

    let r = e.api.post("/routing/v1/tcp_routes/delete", &mapping).await;
    assert_eq!(r.status_line, "HTTP/1.1 204 No Content");
    assert!(r.body.is_empty());
    assert_headers(&r, &[]);
    assert!(e.api.tcp_routes().await.is_empty());
    assert_eq!(e.db.count("tcp_routes"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_route_with_tls_port_sni_and_instance_id_round_trips() {
    let e = env().await;
    let rg = e.api.default_group_guid().await;
    let r = e
        .api
        .post(
            "/routing/v1/tcp_routes/create",
            &format!(
                r#"[{{"router_group_guid":"{rg}","port":1026,"backend_ip":"10.0.8.5","backend_port":8888,"backend_tls_port":60001,"instance_id":"91860bfe","backend_sni_hostname":"sni.example.com","ttl":120}}]"#
            ),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.dump());
    let body = mask_guids(
        &e.api
            .get("/routing/v1/tcp_routes")
            .await
            .body_str()
            .replace(&rg, "RG"),
    );
    assert_eq!(
        body,
        format!(
            "[{{\"router_group_guid\":\"RG\",\"backend_port\":8888,\"backend_tls_port\":60001,\"backend_ip\":\"10.0.8.5\",\"backend_sni_hostname\":\"sni.example.com\",\"instance_id\":\"91860bfe\",\"port\":1026,\"modification_tag\":{{\"guid\":\"<guid>\",\"index\":0}},\"ttl\":120,\"isolation_segment\":\"\"}}]\n"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_route_recreated_with_tls_port_0_minus_1_or_absent_updates_one_row() {
    let e = env().await;
    let rg = e.api.default_group_guid().await;
    let variants = [
        r#""backend_tls_port":0,"backend_sni_hostname":"","#,
        r#""backend_tls_port":-1,"#,
        "",
        r#""backend_tls_port":0,"#,
    ];
    for (i, extra) in variants.iter().enumerate() {
        let body = format!(
            r#"[{{"router_group_guid":"{rg}","port":1025,"backend_ip":"127.0.0.1","backend_port":9001,{extra}"instance_id":"inst-1","ttl":60}}]"#
        );
        let r = e.api.post("/routing/v1/tcp_routes/create", &body).await;
        assert_eq!(r.status, 201, "{}", r.dump());
        let routes = e.api.tcp_routes().await;
        assert_eq!(routes.len(), 1, "after variant {i} ({extra}): {routes:?}");
        assert_eq!(routes[0]["modification_tag"]["index"], i as u64);
        assert_eq!(routes[0]["backend_tls_port"], 0);
    }
    assert_eq!(e.db.count("tcp_routes"), 1, "no duplicate rows");
    // and deleting with yet another spelling really deletes it
    let r = e
        .api
        .post(
            "/routing/v1/tcp_routes/delete",
            &format!(
                r#"[{{"router_group_guid":"{rg}","port":1025,"backend_ip":"127.0.0.1","backend_port":9001,"backend_tls_port":-1}}]"#
            ),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.dump());
    assert!(e.api.tcp_routes().await.is_empty());
    assert_eq!(e.db.count("tcp_routes"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_route_upsert_refreshes_ttl_and_overwrites_isolation_segment() {
    let e = env().await;
    let rg = e.api.default_group_guid().await;
    let make = |ttl: u32, seg: &str| {
        format!(
            r#"[{{"router_group_guid":"{rg}","port":1030,"backend_ip":"10.1.1.1","backend_port":7000,"ttl":{ttl},"isolation_segment":"{seg}"}}]"#
        )
    };
    assert_eq!(
        e.api
            .post("/routing/v1/tcp_routes/create", &make(60, ""))
            .await
            .status,
        201
    );
    let before = e.api.tcp_routes().await;
    assert_eq!(
        e.api
            .post("/routing/v1/tcp_routes/create", &make(30, "is1"))
            .await
            .status,
        201
    );
    let after = e.api.tcp_routes().await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["ttl"], 30);
    assert_eq!(after[0]["isolation_segment"], "is1");
    assert_eq!(after[0]["modification_tag"]["index"], 1);
    assert_eq!(
        after[0]["modification_tag"]["guid"],
        before[0]["modification_tag"]["guid"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_routes_filter_by_isolation_segment() {
    let e = env().await;
    let rg = e.api.default_group_guid().await;
    let body = json!([
        {"router_group_guid": rg, "port": 1025, "backend_ip": "10.0.0.1", "backend_port": 1, "ttl": 60},
        {"router_group_guid": rg, "port": 1025, "backend_ip": "10.0.0.2", "backend_port": 2, "ttl": 60, "isolation_segment": "is1"},
        {"router_group_guid": rg, "port": 1025, "backend_ip": "10.0.0.3", "backend_port": 3, "ttl": 60, "isolation_segment": "is2"},
    ]);
    let r = e
        .api
        .post("/routing/v1/tcp_routes/create", &body.to_string())
        .await;
    assert_eq!(r.status, 201, "{}", r.dump());
    let ips = |v: Value| {
        let mut ips: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["backend_ip"].as_str().unwrap().to_string())
            .collect();
        ips.sort();
        ips
    };
    assert_eq!(
        ips(e.api.get_json("/routing/v1/tcp_routes").await),
        ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    );
    assert_eq!(
        ips(e
            .api
            .get_json("/routing/v1/tcp_routes?isolation_segment=is1")
            .await),
        ["10.0.0.2"]
    );
    assert_eq!(
        ips(e
            .api
            .get_json("/routing/v1/tcp_routes?isolation_segment=is1&isolation_segment=is2")
            .await),
        ["10.0.0.2", "10.0.0.3"]
    );
    assert_eq!(
        ips(e
            .api
            .get_json("/routing/v1/tcp_routes?isolation_segment=")
            .await),
        ["10.0.0.1"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_route_validation_errors_use_upstream_messages_and_write_nothing() {
    let e = env().await;
    let rg = e.api.default_group_guid().await;
    let ok = json!({"router_group_guid": rg, "port": 1027, "backend_ip": "127.0.0.1", "backend_port": 9001, "ttl": 60});
    let with = |k: &str, v: Value| {
        let mut m = ok.clone();
        m[k] = v;
        m
    };
    let label =
        |rg: &str, port: u16, ip: &str, bp: u16| format!("RouteMapping=[{rg}:{port}<->{ip}:{bp}]");
    let cases = [
        (
            with("router_group_guid", json!("")),
            format!("Each tcp mapping requires a non empty router group guid. {}", label("", 1027, "127.0.0.1", 9001)),
        ),
        (
            with("port", json!(0)),
            format!("Each tcp mapping requires a positive external port. {}", label(&rg, 0, "127.0.0.1", 9001)),
        ),
        (
            with("backend_ip", json!("")),
            format!("Each tcp mapping requires a non empty backend ip. {}", label(&rg, 1027, "", 9001)),
        ),
        (
            with("backend_port", json!(0)),
            format!("Each tcp mapping requires a positive backend port. {}", label(&rg, 1027, "127.0.0.1", 0)),
        ),
        (
            with("backend_tls_port", json!(70000)),
            format!(
                "Each tcp mapping with a backend TLS port requires that port to be less than or equal to 65535. {}",
                label(&rg, 1027, "127.0.0.1", 9001)
            ),
        ),
        (
            with("ttl", json!(500)),
            format!(
                "Each tcp mapping requires TTL to be less than or equal to 120. {}",
                label(&rg, 1027, "127.0.0.1", 9001)
            ),
        ),
        (
            with("ttl", json!(0)),
            "Each tcp route mapping requires a ttl greater than 0".to_string(),
        ),
        (
            with("router_group_guid", json!("does-not-exist")),
            "router_group_guid: does-not-exist not found".to_string(),
        ),
    ];
    for (mapping, message) in cases {
        let body = json!([ok.clone(), mapping]).to_string();
        let r = e.api.post("/routing/v1/tcp_routes/create", &body).await;
        assert_error(
            &r,
            400,
            "ProcessRequestError",
            &format!("Cannot process request: {message}"),
        );
    }
    // the capture's exact bytes for one of them
    let r = e
        .api
        .post(
            "/routing/v1/tcp_routes/create",
            r#"[{"port":1027,"backend_ip":"127.0.0.1","backend_port":9001,"ttl":60}]"#,
        )
        .await;
    assert_eq!(
        r.body_str(),
        r#"{"name":"ProcessRequestError","message":"Cannot process request: Each tcp mapping requires a non empty router group guid. RouteMapping=[:1027\u003c-\u003e127.0.0.1:9001]"}"#
    );
    assert!(e.api.tcp_routes().await.is_empty());
    assert_eq!(e.db.count("tcp_routes"), 0, "nothing may be written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_route_with_only_a_tls_backend_port_is_accepted() {
    let e = env().await;
    let rg = e.api.default_group_guid().await;
    let r = e
        .api
        .post(
            "/routing/v1/tcp_routes/create",
            &format!(
                r#"[{{"router_group_guid":"{rg}","port":1028,"backend_ip":"10.0.0.9","backend_port":0,"backend_tls_port":61001,"ttl":60}}]"#
            ),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.dump());
    let routes = e.api.tcp_routes().await;
    assert_eq!(routes[0]["backend_port"], 0);
    assert_eq!(routes[0]["backend_tls_port"], 61001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_route_delete_of_an_unknown_mapping_is_204_and_delete_validates() {
    let e = env().await;
    let rg = e.api.default_group_guid().await;
    let r = e
        .api
        .post(
            "/routing/v1/tcp_routes/delete",
            &format!(
                r#"[{{"router_group_guid":"{rg}","port":1099,"backend_ip":"127.0.0.1","backend_port":9002}}]"#
            ),
        )
        .await;
    assert_eq!(r.status_line, "HTTP/1.1 204 No Content");
    let r = e
        .api
        .post(
            "/routing/v1/tcp_routes/delete",
            &format!(
                r#"[{{"router_group_guid":"{rg}","port":0,"backend_ip":"127.0.0.1","backend_port":9002}}]"#
            ),
        )
        .await;
    assert_error(
        &r,
        400,
        "ProcessRequestError",
        &format!(
            "Cannot process request: Each tcp mapping requires a positive external port. RouteMapping=[{rg}:0<->127.0.0.1:9002]"
        ),
    );
}

// ----- paths, methods and malformed input -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_path_is_go_404_page_not_found() {
    let e = env().await;
    for path in ["/routing/v1/nope", "/", "/routing/v1/routes/extra"] {
        let r = e.api.get(path).await;
        assert_eq!(r.status_line, "HTTP/1.1 404 Not Found", "{path}");
        assert_eq!(r.body_str(), "404 page not found\n");
        assert_headers(
            &r,
            &[
                ("Content-Type", TEXT),
                ("X-Content-Type-Options", "nosniff"),
                ("Content-Length", "19"),
            ],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_path_with_another_method_is_405_with_allow() {
    let e = env().await;
    let r = e.api.call("PUT", "/routing/v1/routes", "[]").await;
    assert_eq!(r.status_line, "HTTP/1.1 405 Method Not Allowed");
    assert_eq!(r.body_str(), "Method Not Allowed\n");
    let allow = r.header("Allow").unwrap_or_default().to_string();
    let mut methods: Vec<&str> = allow.split(", ").collect();
    methods.sort();
    assert_eq!(methods, ["DELETE", "GET", "HEAD", "POST"], "{}", r.dump());
    assert_headers(
        &r,
        &[
            ("Allow", &allow),
            ("Content-Type", TEXT),
            ("X-Content-Type-Options", "nosniff"),
            ("Content-Length", "19"),
        ],
    );
    // GET routes answer HEAD too (rata/pat), without a body
    let mut conn = integration::HttpConn::connect(e.api.addr()).await;
    conn.send(&integration::http::build_request(
        "HEAD",
        "/routing/v1/router_groups",
        &[("Host", "127.0.0.1")],
        b"",
    ))
    .await;
    let head = conn.read_head().await.expect("HEAD response head");
    assert_eq!(head.status, 200, "{}", head.dump());
    assert_eq!(head.header("Content-Type"), Some(JSON));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_cannot_process_request_unexpected_eof() {
    let e = env().await;
    for path in [
        "/routing/v1/tcp_routes/create",
        "/routing/v1/tcp_routes/delete",
        "/routing/v1/routes",
        "/routing/v1/router_groups",
    ] {
        let r = e.api.post(path, r#"[{"port":"#).await;
        assert_error(
            &r,
            400,
            "ProcessRequestError",
            "Cannot process request: unexpected EOF",
        );
    }
    // no body at all: Go's decoder says EOF
    let r = e.api.post("/routing/v1/tcp_routes/create", "").await;
    assert_error(
        &r,
        400,
        "ProcessRequestError",
        "Cannot process request: EOF",
    );
    // a syntax error is reported as such even where the types are wrong too
    let r = e
        .api
        .post("/routing/v1/router_groups", r#"[{"name": }]"#)
        .await;
    assert_eq!(r.status, 400);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert!(
        !v["message"].as_str().unwrap().contains("invalid type"),
        "{v}"
    );
    // like Go's Decoder, bytes after the first JSON value are not read
    let r = e
        .api
        .post("/routing/v1/tcp_routes/create", "[] trailing")
        .await;
    assert_eq!(r.status, 201, "{}", r.dump());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_json_types_and_negative_ports_are_process_request_errors_and_write_nothing() {
    let e = env().await;
    let rg = e.api.default_group_guid().await;
    let bad_tcp = [
        r#"{"router_group_guid":"x"}"#.to_string(),
        r#""a string""#.to_string(),
        format!(
            r#"[{{"router_group_guid":"{rg}","port":"1025","backend_ip":"1.2.3.4","backend_port":1}}]"#
        ),
        format!(
            r#"[{{"router_group_guid":"{rg}","port":-1,"backend_ip":"1.2.3.4","backend_port":1}}]"#
        ),
        format!(
            r#"[{{"router_group_guid":"{rg}","port":1025,"backend_ip":"1.2.3.4","backend_port":-80}}]"#
        ),
        format!(
            r#"[{{"router_group_guid":"{rg}","port":70000,"backend_ip":"1.2.3.4","backend_port":1}}]"#
        ),
        format!(
            r#"[{{"router_group_guid":{rg:?},"port":1025,"backend_ip":1234,"backend_port":1}}]"#
        ),
    ];
    for body in &bad_tcp {
        let r = e.api.post("/routing/v1/tcp_routes/create", body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.dump());
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["name"], "ProcessRequestError", "{body}");
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .starts_with("Cannot process request: "),
            "{v}"
        );
    }
    let bad_http = [
        r#"[{"route":"a.com","port":-1,"ip":"1.2.3.4"}]"#,
        r#"[{"route":"a.com","port":80,"ip":"1.2.3.4","ttl":"60"}]"#,
        r#"{"route":"a.com"}"#,
    ];
    for body in bad_http {
        let r = e.api.post("/routing/v1/routes", body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.dump());
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["name"], "ProcessRequestError", "{body}");
    }
    assert_eq!(e.db.count("tcp_routes"), 0);
    assert_eq!(e.db.count("routes"), 1);
    // still healthy
    assert_eq!(e.api.get("/routing/v1/tcp_routes").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_json_fields_are_ignored() {
    let e = env().await;
    let rg = e.api.default_group_guid().await;
    let r = e
        .api
        .post(
            "/routing/v1/tcp_routes/create",
            &format!(
                r#"[{{"router_group_guid":"{rg}","port":1025,"backend_ip":"10.0.0.1","backend_port":1,"ttl":60,"host_tls_port":5,"whatever":{{"x":[1]}}}}]"#
            ),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.dump());
    let r = e
        .api
        .post(
            "/routing/v1/routes",
            r#"[{"route":"u.example.com","port":80,"ip":"10.0.0.1","ttl":60,"extra":true}]"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.dump());
    let m = &e.api.tcp_routes().await[0];
    assert_eq!(m["backend_tls_port"], 0);
    assert!(m.get("whatever").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_one_mib_is_refused_writes_nothing_and_the_api_stays_healthy() {
    let e = env().await;
    let rg = e.api.default_group_guid().await;
    let prefix = format!(
        r#"[{{"router_group_guid":"{rg}","port":1025,"backend_ip":"10.0.0.1","backend_port":1,"ttl":60}}"#
    );
    // valid JSON padded with whitespace past 1 MiB
    let mut body = prefix.into_bytes();
    body.resize(2 * 1024 * 1024 - 1, b' ');
    body.push(b']');
    let r = send_large_body(
        e.api.addr(),
        "POST",
        "/routing/v1/tcp_routes/create",
        &[],
        &body,
        body.len(),
        b' ',
    )
    .await
    .expect("a response to the oversized request");
    assert_eq!(r.status, 413, "{}", r.dump());
    assert_eq!(
        r.body_str(),
        error_json(
            "ProcessRequestError",
            "Cannot process request: body is larger than 1048576 bytes"
        )
    );
    assert_eq!(e.db.count("tcp_routes"), 0);
    // the process is fine afterwards
    let ok = format!(
        r#"[{{"router_group_guid":"{rg}","port":1025,"backend_ip":"10.0.0.1","backend_port":1,"ttl":60}}]"#
    );
    assert_eq!(
        e.api
            .post("/routing/v1/tcp_routes/create", &ok)
            .await
            .status,
        201
    );
    assert_eq!(e.api.tcp_routes().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_route_without_ttl_gets_max_ttl() {
    let e = env().await;
    let rg = e.api.default_group_guid().await;
    let r = e
        .api
        .post(
            "/routing/v1/tcp_routes/create",
            &format!(
                r#"[{{"router_group_guid":"{rg}","port":1025,"backend_ip":"10.0.0.1","backend_port":1}}]"#
            ),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.dump());
    assert_eq!(e.api.tcp_routes().await[0]["ttl"], 120);
}

// ----- backup/restore admin endpoints -----

async fn admin(api: &RoutingApi, path: &str) -> u16 {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], api.admin_port));
    let raw = integration::http::build_request("PUT", path, &[("Host", "127.0.0.1")], b"");
    integration::http::request(addr, &raw).await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_locks_on_the_admin_port_stop_router_group_reads_and_writes_only() {
    let e = env().await;
    let locked = "Database unavailable due to backup or restore";
    assert_eq!(admin(&e.api, "/lock_router_group_reads").await, 200);
    let r = e.api.get("/routing/v1/router_groups").await;
    assert_error(&r, 503, "DBCommunicationError", locked);
    assert_eq!(e.api.get("/routing/v1/tcp_routes").await.status, 200);
    assert_eq!(e.api.get("/routing/v1/routes").await.status, 200);
    assert_eq!(admin(&e.api, "/unlock_router_group_reads").await, 200);
    assert_eq!(e.api.get("/routing/v1/router_groups").await.status, 200);

    assert_eq!(admin(&e.api, "/lock_router_group_writes").await, 200);
    let r = e
        .api
        .post(
            "/routing/v1/router_groups",
            r#"{"name":"during-backup","type":"http"}"#,
        )
        .await;
    assert_error(&r, 503, "DBCommunicationError", locked);
    assert_eq!(e.api.get("/routing/v1/router_groups").await.status, 200);
    assert_eq!(admin(&e.api, "/unlock_router_group_writes").await, 200);
    let r = e
        .api
        .post(
            "/routing/v1/router_groups",
            r#"{"name":"after-backup","type":"http"}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.dump());
    assert_eq!(e.db.count("router_groups"), 2);
}
