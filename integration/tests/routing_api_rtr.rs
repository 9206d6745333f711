//! The built `rtr` command-line client (../shared/spec/rtr-cli.md) against the real routing-api
//! with token checks on, tokens fetched from a [`FakeUaa`] with the client-credentials grant.

use std::time::Duration;

use integration::mariadb::TestDatabase;
use integration::routing_api::{rtr, Database, RoutingApi, RtrEvents};
use integration::uaa::{FakeUaa, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET};
use serde_json::Value;

struct Env {
    api: RoutingApi,
    uaa: FakeUaa,
    db: TestDatabase,
}

async fn env() -> Env {
    let uaa = FakeUaa::start().await;
    let db = TestDatabase::create("ra_rtr");
    let api = RoutingApi::builder(Database::mysql(&db))
        .uaa(&uaa)
        .start()
        .await;
    Env { api, uaa, db }
}

impl Env {
    /// `rtr <command> --api … --client-id … --client-secret … --oauth-url … <extra…>`
    fn args(&self, command: &str, extra: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = [
            command,
            "--api",
            &self.api.url(),
            "--client-id",
            DEFAULT_CLIENT_ID,
            "--client-secret",
            DEFAULT_CLIENT_SECRET,
            "--oauth-url",
            self.uaa.base_url(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }

    async fn rtr(&self, command: &str, extra: &[&str]) -> integration::routing_api::RtrOutput {
        let args = self.args(command, extra);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        rtr(&refs).await
    }
}

const ROUTES: &str = r#"[{"route":"foo.com","port":12345,"ip":"1.2.3.4","ttl":5,"log_guid":"g"}]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtr_register_list_and_unregister() {
    let e = env().await;
    let out = e.rtr("register", &[ROUTES]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        out.stdout,
        format!("Successfully registered routes: {ROUTES}\n")
    );

    let out = e.rtr("list", &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        out.stdout.lines().count(),
        1,
        "compact JSON: {:?}",
        out.stdout
    );
    let listed: Value = serde_json::from_str(&out.stdout).expect("list prints JSON");
    let api_view = e.api.get_json("/routing/v1/routes").await;
    assert_eq!(listed, api_view, "rtr list shows what the API lists");
    let foo = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "foo.com")
        .expect("foo.com listed");
    assert_eq!(foo["port"], 12345);
    assert_eq!(foo["ip"], "1.2.3.4");
    assert_eq!(foo["ttl"], 5);
    assert_eq!(foo["log_guid"], "g");

    let out = e.rtr("unregister", &[ROUTES]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        out.stdout,
        format!("Successfully unregistered routes: {ROUTES}\n")
    );
    assert!(e.api.http_routes().await.is_empty());
    assert_eq!(e.db.count("routes"), 1, "only the API's own route");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtr_reports_a_rejected_route_and_a_refused_client() {
    let e = env().await;
    let out = e
        .rtr(
            "register",
            &[r#"[{"route":"foo.com","port":0,"ip":"1.2.3.4"}]"#],
        )
        .await;
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(
        out.stdout.starts_with("route registration failed: ")
            && out
                .stdout
                .contains("Each route request requires a port greater than 0"),
        "{out:?}"
    );

    let mut args = e.args("list", &[]);
    let secret = args.iter().position(|a| a == "--client-secret").unwrap() + 1;
    args[secret] = "wrong-secret".into();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = rtr(&refs).await;
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(out.stdout.starts_with("listing routes failed: "), "{out:?}");
    assert!(e.api.http_routes().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtr_events_prints_http_and_tcp_events_until_the_streams_close() {
    let e = env().await;
    let rg = e.api.default_group_guid().await;
    let args = e.args("events", &[]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut events = RtrEvents::start(&refs);

    // rtr connects asynchronously: register until the first event shows up
    let mut n = 0;
    let first = loop {
        n += 1;
        let r = e
            .api
            .post(
                "/routing/v1/routes",
                &format!(r#"[{{"route":"ev{n}.example.com","port":80,"ip":"10.0.0.1","ttl":60}}]"#),
            )
            .await;
        assert_eq!(r.status, 201);
        match events.try_next_line(Duration::from_millis(500)).await {
            // the API's own first registration may reach a stream opened this early
            Some(line) if line.contains(r#""route":"api.example.com/routing""#) => continue,
            Some(line) => break line,
            None if n < 20 => continue,
            None => panic!("rtr events printed nothing; stderr: {}", events.stderr()),
        }
    };
    let v: Value = serde_json::from_str(&first).expect("an event is one JSON line");
    assert_eq!(v["Action"], "Upsert", "{first}");
    assert!(
        v["Route"]["route"]
            .as_str()
            .is_some_and(|r| r.starts_with("ev")),
        "{first}"
    );
    assert!(first.starts_with(r#"{"Route":{"route":"#), "{first}");
    assert!(first.ends_with(r#","Action":"Upsert"}"#), "{first}");

    let r = e
        .api
        .post(
            "/routing/v1/tcp_routes/create",
            &format!(
                r#"[{{"router_group_guid":"{rg}","port":1025,"backend_ip":"10.0.0.1","backend_port":1,"ttl":60}}]"#
            ),
        )
        .await;
    assert_eq!(r.status, 201);
    // skip events of HTTP routes registered while waiting for the connection
    let tcp = loop {
        let line = events.next_line(Duration::from_secs(5)).await;
        if line.starts_with(r#"{"TcpRouteMapping":"#) {
            break line;
        }
    };
    let v: Value = serde_json::from_str(&tcp).unwrap();
    assert_eq!(v["Action"], "Upsert");
    assert_eq!(v["TcpRouteMapping"]["router_group_guid"], rg.as_str());
    assert_eq!(v["TcpRouteMapping"]["backend_port"], 1);

    let r = e
        .api
        .delete(
            "/routing/v1/routes",
            r#"[{"route":"ev1.example.com","port":80,"ip":"10.0.0.1"}]"#,
        )
        .await;
    assert_eq!(r.status, 204);
    let del = events.next_line(Duration::from_secs(5)).await;
    let v: Value = serde_json::from_str(&del).unwrap();
    assert_eq!(
        (v["Action"].as_str(), v["Route"]["route"].as_str()),
        (Some("Delete"), Some("ev1.example.com")),
        "{del}"
    );

    // the API stops: both streams end and rtr says so
    let mut api = e.api;
    api.sigterm();
    assert!(api.wait_exit(Duration::from_secs(10)).await.success());
    let mut closed = 0;
    while closed < 2 {
        let line = events.next_line(Duration::from_secs(5)).await;
        if line.starts_with("Connection closed: ") {
            closed += 1;
        }
    }
    let status = events.wait_exit(Duration::from_secs(5)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}
