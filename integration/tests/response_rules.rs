//! Rules every response gets (A.5, A.8): `http_rewrite.responses` on backend responses and on
//! router errors alike, and router errors rendered through `html_error_template_file`, which
//! must be readable and valid at start.

use std::time::Duration;

use integration::backends::text_response;
use integration::{route, EchoBackend, Gorouter, HttpBackend, NatsServer, TempDir, TestEnv};

const REWRITE: &str = r#"
http_rewrite:
  responses:
    remove_headers: [{name: X-Backend-Name}, {name: X-Drop-Me}]
    add_headers_if_not_present:
      - {name: Strict-Transport-Security, value: "max-age=31536000"}
      - {name: X-Two, value: "1"}
      - {name: X-Two, value: "2"}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn rewrite_rules_apply_to_backend_responses() {
    let env = TestEnv::start(REWRITE).await;
    let backend = EchoBackend::start("named").await;
    let resp = env
        .register_and_wait(&route("rewrite.rules.test", backend.port()))
        .await;
    assert_eq!(resp.status, 200);
    assert!(
        resp.header("X-Backend-Name").is_none(),
        "removed: {}",
        resp.dump()
    );
    assert_eq!(
        resp.header("Strict-Transport-Security"),
        Some("max-age=31536000")
    );
    assert_eq!(resp.header_all("X-Two"), vec!["1", "2"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_header_the_backend_set_is_not_overwritten() {
    let env = TestEnv::start(REWRITE).await;
    let backend = HttpBackend::start(|_req| async {
        let mut r = text_response(200, "own policy");
        r.headers_mut()
            .insert("strict-transport-security", "max-age=60".parse().unwrap());
        r.headers_mut().insert("x-drop-me", "x".parse().unwrap());
        r
    })
    .await;
    let resp = env
        .register_and_wait(&route("own.rules.test", backend.port()))
        .await;
    assert_eq!(
        resp.header_all("Strict-Transport-Security"),
        vec!["max-age=60"]
    );
    assert!(resp.header("X-Drop-Me").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn rewrite_rules_apply_to_router_errors() {
    let env = TestEnv::start(REWRITE).await;
    let resp = env.get("nowhere.rules.test", "/").await;
    assert_eq!(resp.status, 404);
    assert_eq!(
        resp.header("Strict-Transport-Security"),
        Some("max-age=31536000")
    );
}

fn template_yaml(dir: &TempDir, template: &str) -> String {
    let path = dir.path().join("error.html");
    std::fs::write(&path, template).unwrap();
    format!("html_error_template_file: {}\n", path.display())
}

#[tokio::test(flavor = "multi_thread")]
async fn router_errors_are_rendered_through_the_template() {
    let dir = TempDir::new("error-template");
    let env = TestEnv::start(&template_yaml(
        &dir,
        r#"<html><body>Code: {{ .Status }} {{ .StatusText }}; Cause: {{ .Header.Get "X-Cf-RouterError" }}; {{ .Message }}</body></html>"#,
    ))
    .await;
    let resp = env.get("missing.template.test", "/").await;
    assert_eq!(resp.status, 404);
    assert_eq!(
        resp.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(resp.header("X-Cf-Routererror"), Some("unknown_route"));
    assert_eq!(
        resp.body_str(),
        "<html><body>Code: 404 Not Found; Cause: unknown_route; Requested route (&#39;missing.template.test&#39;) does not exist.</body></html>"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn backend_failures_keep_their_plaintext_body() {
    let dir = TempDir::new("error-template");
    let env = TestEnv::start(&template_yaml(&dir, "<p>{{ .Message }}</p>")).await;
    let dead = integration::closed_port();
    env.register(&route("dead.template.test", dead)).await;
    let resp = env.router.wait_status("dead.template.test", 502).await;
    assert_eq!(
        resp.header("Content-Type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(
        resp.body_str(),
        "502 Bad Gateway: Registered endpoint failed to handle the request.\n"
    );
}

async fn assert_exits_naming(yaml: &str, needle: &str) {
    let nats = NatsServer::start().await;
    let (status, output) = Gorouter::builder(&nats)
        .yaml(yaml)
        .run_to_exit(Duration::from_secs(10))
        .await;
    assert!(!status.success(), "router started with `{yaml}`:\n{output}");
    assert!(output.contains(needle), "no `{needle}` in:\n{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_template_file_stops_the_router_at_start() {
    assert_exits_naming(
        "html_error_template_file: /nonexistent/error.html\n",
        "/nonexistent/error.html",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_template_stops_the_router_at_start() {
    let dir = TempDir::new("error-template");
    assert_exits_naming(
        &template_yaml(&dir, "<p>{{ range .Header }}x{{ end }}</p>"),
        "html_error_template_file",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_rewrite_header_name_stops_the_router_at_start() {
    assert_exits_naming(
        "http_rewrite: {responses: {remove_headers: [{name: 'bad name'}]}}\n",
        "http_rewrite.responses.remove_headers[0].name",
    )
    .await;
}
