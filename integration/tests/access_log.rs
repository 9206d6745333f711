//! The access log file (A.14): one line per request in upstream's format.

use integration::http::build_request;
use integration::{route, EchoBackend, TestEnv};
use regex::Regex;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn routed_request_is_logged_in_upstream_format() {
    let env = TestEnv::start("").await;
    let backend = EchoBackend::start("a").await;
    let mut msg = route("logged.example.com", backend.port());
    msg["app"] = json!("app-guid-log");
    msg["private_instance_id"] = json!("inst-log");
    msg["private_instance_index"] = json!("2");
    env.register_and_wait(&msg).await;

    let resp = env
        .router
        .request(&build_request(
            "GET",
            "/logged?x=1",
            &[
                ("Host", "logged.example.com"),
                ("User-Agent", "it-agent/1.0"),
                ("Referer", "http://ref.example.com/"),
            ],
            b"",
        ))
        .await;
    assert_eq!(resp.status, 200);
    let id = resp.header("X-Vcap-Request-Id").unwrap();
    let line = env.access_log_line("/logged?x=1").await;

    let re = Regex::new(&format!(
        r#"^logged\.example\.com - \[\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{9}}Z\] "GET /logged\?x=1 HTTP/1\.1" 200 0 {len} "http://ref\.example\.com/" "it-agent/1\.0" "127\.0\.0\.1:\d+" "127\.0\.0\.1:{port}" x_forwarded_for:"127\.0\.0\.1" x_forwarded_proto:"http" vcap_request_id:"{id}" response_time:\d+\.\d{{6}} gorouter_time:\d+\.\d{{6}} app_id:"app-guid-log" app_index:"2" instance_id:"inst-log" x_cf_routererror:"-"$"#,
        len = resp.body.len(),
        port = backend.port(),
        id = regex::escape(id),
    ))
    .unwrap();
    assert!(
        re.is_match(&line),
        "access log line:\n{line}\ndoes not match\n{re}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_body_s_bytes_are_logged_and_a_bodiless_request_logs_zero() {
    let env = TestEnv::start("").await;
    let backend = EchoBackend::start("a").await;
    env.register_and_wait(&route("posted.example.com", backend.port()))
        .await;

    let body = b"eleven byte";
    let resp = env
        .router
        .request(&build_request(
            "POST",
            "/posted",
            &[("Host", "posted.example.com")],
            body,
        ))
        .await;
    assert_eq!(resp.status, 200);
    let line = env.access_log_line("/posted").await;
    let want = format!(r#""POST /posted HTTP/1.1" 200 {} "#, body.len());
    assert!(line.contains(&want), "{line}\nlacks {want}");

    let resp = env
        .router
        .request(&build_request(
            "GET",
            "/not-posted",
            &[("Host", "posted.example.com")],
            b"",
        ))
        .await;
    assert_eq!(resp.status, 200);
    let line = env.access_log_line("/not-posted").await;
    assert!(
        line.contains(r#""GET /not-posted HTTP/1.1" 200 0 "#),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_route_is_logged_with_router_error() {
    let env = TestEnv::start("").await;
    let resp = env.get("nolog.example.com", "/missing").await;
    assert_eq!(resp.status, 404);
    let line = env.access_log_line("/missing").await;
    // No backend request was made, so upstream logs the client's own forwarding headers (none
    // here: "-"); a router logging the values it would have sent is accepted too.

    let re = Regex::new(&format!(
        r#"^nolog\.example\.com - \[[^\]]+\] "GET /missing HTTP/1\.1" 404 0 {len} "-" "it-client/1\.0" "127\.0\.0\.1:\d+" "-" x_forwarded_for:"(-|127\.0\.0\.1)" x_forwarded_proto:"(-|http)" vcap_request_id:"[0-9a-f-]{{36}}" response_time:\d+\.\d{{6}} gorouter_time:\d+\.\d{{6}} app_id:"-" app_index:"-" instance_id:"-" x_cf_routererror:"unknown_route"$"#,
        len = resp.body.len(),
    ))
    .unwrap();
    assert!(
        re.is_match(&line),
        "access log line:\n{line}\ndoes not match\n{re}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn request_abandoned_by_the_client_is_logged_as_499() {
    let env = TestEnv::start("").await;
    let held = integration::HeldBackend::until_released().await;
    // Wait until routed with a probe through a throw-away route: the held backend would hold it.
    env.register(&route("abandoned.example.com", held.port()))
        .await;
    env.register_and_wait(&route(
        "abandoned-probe.example.com",
        integration::closed_port(),
    ))
    .await;

    let mut conn = integration::HttpConn::connect(env.router.addr()).await;
    conn.send(&build_request(
        "GET",
        "/abandoned",
        &[("Host", "abandoned.example.com")],
        b"",
    ))
    .await;
    held.arrived().await;
    drop(conn); // the client gives up while the backend still works on it

    let line = env.access_log_line("/abandoned").await;
    assert!(
        line.contains("\"GET /abandoned HTTP/1.1\" 499 "),
        "access log line: {line}"
    );
    held.release();
}

/// GDPR options (upstream's `gdpr_test.go`): the client's address and `X-Forwarded-For` are
/// written as `"-"` when their `logging.disable_log_*` key is set.
#[tokio::test(flavor = "multi_thread")]
async fn gdpr_options_leave_the_client_address_and_forwarded_for_out() {
    let env =
        TestEnv::start("logging: {disable_log_forwarded_for: true, disable_log_source_ip: true}")
            .await;
    let backend = EchoBackend::start("a").await;
    env.register_and_wait(&route("gdpr.example.com", backend.port()))
        .await;
    let resp = env
        .router
        .request(&build_request(
            "GET",
            "/gdpr",
            &[
                ("Host", "gdpr.example.com"),
                ("X-Forwarded-For", "192.0.2.7"),
            ],
            b"",
        ))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.dump());
    let line = env.access_log_line("/gdpr").await;
    assert!(
        line.contains(r#" "-" "127.0.0.1:"#),
        "client address logged: {line}"
    );
    assert!(line.contains(r#" x_forwarded_for:"-" "#), "{line}");
    assert!(!line.contains("192.0.2.7"), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn extra_headers_to_log_end_the_line_in_the_configured_order() {
    let env = TestEnv::start("extra_headers_to_log: [X-Custom-Thing, X-Not-Sent, x-lower]\n").await;
    let backend = EchoBackend::start("extra").await;
    env.register_and_wait(&route("extra-log.example.com", backend.port()))
        .await;
    let resp = env
        .router
        .request(&build_request(
            "GET",
            "/extra-logged",
            &[
                ("Host", "extra-log.example.com"),
                ("X-Custom-Thing", "custom \"value\""),
                ("X-Lower", "low"),
            ],
            b"",
        ))
        .await;
    assert_eq!(resp.status, 200);
    let line = env.access_log_line("/extra-logged").await;
    assert!(
        line.ends_with(
            r#" x_cf_routererror:"-" x_custom_thing:"custom \"value\"" x_not_sent:"-" x_lower:"low""#
        ),
        "access log line:\n{line}"
    );
}
