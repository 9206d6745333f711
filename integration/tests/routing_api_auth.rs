//! routing-api with token checks on (a [`FakeUaa`] as UAA) and the mutual TLS listener: the
//! scopes of every endpoint family, 401 `UnauthorizedError` bodies for every kind of bad token,
//! key rotation, and client certificates on `api.mtls_listen_port` (which does not replace the
//! token check).

use std::time::Duration;

use integration::mariadb::TestDatabase;
use integration::pki::TestCa;
use integration::routing_api::{
    assert_error, assert_headers, tls_request, wait_until, Database, MtlsFiles, RoutingApi,
};
use integration::uaa::{Endpoint, FakeUaa, ALL_ROUTING_SCOPES};

const HOUR: Duration = Duration::from_secs(3600);
const READ: &str = "routing.routes.read";
const WRITE: &str = "routing.routes.write";
const GROUPS_READ: &str = "routing.router_groups.read";
const GROUPS_WRITE: &str = "routing.router_groups.write";
const NOT_AUTHORIZED: &str = "You are not authorized to perform the requested action";

struct Env {
    api: RoutingApi,
    uaa: FakeUaa,
    _db: TestDatabase,
}

async fn env() -> Env {
    let uaa = FakeUaa::start().await;
    let db = TestDatabase::create("ra_auth");
    let api = RoutingApi::builder(Database::mysql(&db))
        .uaa(&uaa)
        .start()
        .await;
    Env { api, uaa, _db: db }
}

impl Env {
    async fn with_token(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: &str,
    ) -> integration::RawResponse {
        let auth = format!("bearer {token}");
        self.api
            .request(method, path, &[("Authorization", &auth)], body.as_bytes())
            .await
    }
}

fn unauthorized(r: &integration::RawResponse, message: &str) {
    assert_eq!(r.status_line, "HTTP/1.1 401 Unauthorized", "{}", r.dump());
    assert_error(r, 401, "UnauthorizedError", message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_endpoint_family_needs_its_own_scope() {
    let e = env().await;
    let route = r#"[{"route":"scoped.example.com","port":80,"ip":"10.0.0.1","ttl":60}]"#;
    let group = r#"{"name":"scoped","type":"http"}"#;
    // (method, path, body, scope that works)
    let calls = [
        ("GET", "/routing/v1/routes", "", READ),
        ("POST", "/routing/v1/routes", route, WRITE),
        ("DELETE", "/routing/v1/routes", route, WRITE),
        ("GET", "/routing/v1/tcp_routes", "", READ),
        ("POST", "/routing/v1/tcp_routes/create", "[]", WRITE),
        ("POST", "/routing/v1/tcp_routes/delete", "[]", WRITE),
        ("GET", "/routing/v1/router_groups", "", GROUPS_READ),
        ("POST", "/routing/v1/router_groups", group, GROUPS_WRITE),
    ];
    for (method, path, body, scope) in calls {
        let others: Vec<&str> = ALL_ROUTING_SCOPES
            .iter()
            .copied()
            .filter(|s| *s != scope)
            .collect();
        let wrong = e.uaa.mint(&others, HOUR);
        let r = e.with_token(method, path, &wrong, body).await;
        unauthorized(&r, NOT_AUTHORIZED);
        let right = e.uaa.mint(&[scope], HOUR);
        let r = e.with_token(method, path, &right, body).await;
        assert!(
            (200..300).contains(&r.status),
            "{method} {path} with {scope}: {}",
            r.dump()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_401_unauthorized_error() {
    let e = env().await;
    let path = "/routing/v1/routes";
    let cases = [
        (e.uaa.mint_expired(&[READ]), "Token is expired"),
        (e.uaa.mint_not_yet_valid(&[READ]), "Token is not valid yet"),
        (
            e.uaa
                .mint_with_issuer("https://uaa.evil.example/oauth/token", &[READ]),
            "invalid issuer",
        ),
        (e.uaa.mint_hs256(&[READ]), "invalid signing method"),
        (e.uaa.mint_unsigned(&[READ]), "invalid signing method"),
    ];
    for (token, message) in cases {
        let r = e.with_token("GET", path, &token, "").await;
        unauthorized(&r, message);
    }
    // missing header, another scheme, not a JWT
    let r = e.api.request("GET", path, &[], b"").await;
    unauthorized(&r, "Invalid token format");
    let r = e
        .api
        .request("GET", path, &[("Authorization", "Basic dXNlcjpwdw==")], b"")
        .await;
    unauthorized(&r, "Invalid token type: Basic");
    let r = e
        .api
        .request("GET", path, &[("Authorization", "bearer not-a-jwt")], b"")
        .await;
    assert_eq!(r.status, 401, "{}", r.dump());
    // the scheme is case-insensitive
    let good = e.uaa.mint(&[READ], HOUR);
    let auth = format!("BEARER {good}");
    let r = e
        .api
        .request("GET", path, &[("Authorization", &auth)], b"")
        .await;
    assert_eq!(r.status, 200, "{}", r.dump());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_fetched_again_new_tokens_pass_old_ones_fail() {
    let e = env().await;
    let old = e.uaa.mint(&[READ], HOUR);
    assert_eq!(
        e.with_token("GET", "/routing/v1/routes", &old, "")
            .await
            .status,
        200
    );
    let key_fetches = |u: &FakeUaa| u.hits(Endpoint::TokenKey) + u.hits(Endpoint::TokenKeys);
    let fetched = key_fetches(&e.uaa);
    e.uaa.rotate_key();
    let new = e.uaa.mint(&[READ], HOUR);
    let r = e.with_token("GET", "/routing/v1/routes", &new, "").await;
    assert_eq!(r.status, 200, "{}", r.dump());
    assert!(
        key_fetches(&e.uaa) > fetched,
        "the key must be fetched again: {:?}",
        e.uaa.all_hits()
    );
    let r = e.with_token("GET", "/routing/v1/routes", &old, "").await;
    assert_eq!(r.status, 401, "{}", r.dump());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["name"], "UnauthorizedError");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_check_the_token_once_at_connect() {
    let e = env().await;
    for path in ["/routing/v1/events", "/routing/v1/tcp_routes/events"] {
        let sse = e.api.events_with(path, &[]).await;
        assert_eq!(sse.head.status, 401, "{path}");
        let expired = format!("bearer {}", e.uaa.mint_expired(&[READ]));
        let mut sse = e
            .api
            .events_with(path, &[("Authorization", &expired)])
            .await;
        assert_eq!(sse.head.status, 401, "{path}");
        assert_eq!(
            sse.head.header("Content-Type"),
            Some("text/plain; charset=utf-8")
        );
        // A refused stream is an ordinary response: it ends (it is not held open as a
        // stream). Until then the wait is slack for a loaded machine.
        assert!(
            sse.ends_within(Duration::from_secs(30)).await,
            "{path}: the 401 response with an expired token did not end: {}",
            sse.body_so_far()
        );
        let wrong = format!("bearer {}", e.uaa.mint(&[WRITE], HOUR));
        let mut sse = e.api.events_with(path, &[("Authorization", &wrong)]).await;
        assert_eq!(sse.head.status, 401, "{path}");
        assert!(
            sse.ends_within(Duration::from_secs(30)).await,
            "{path}: the 401 response for a token without the scope did not end: {}",
            sse.body_so_far()
        );
        assert!(
            sse.body_so_far().contains(NOT_AUTHORIZED),
            "{}",
            sse.body_so_far()
        );
        let good = format!("bearer {}", e.uaa.mint(&[READ], HOUR));
        let sse = e.api.events_with(path, &[("Authorization", &good)]).await;
        assert_eq!(sse.head.status, 200, "{path}");
    }
}

// ----- mutual TLS -----

struct MtlsEnv {
    api: RoutingApi,
    uaa: FakeUaa,
    /// Issues the server certificate and trusted client certificates.
    ca: TestCa,
    _db: TestDatabase,
}

async fn mtls_env() -> MtlsEnv {
    let uaa = FakeUaa::start().await;
    let db = TestDatabase::create("ra_mtls");
    let ca = TestCa::new("routing-api-ca");
    let builder = RoutingApi::builder(Database::mysql(&db)).uaa(&uaa);
    let files = MtlsFiles::write(&ca, builder.dir());
    let api = builder.mtls(files).start().await;
    MtlsEnv {
        api,
        uaa,
        ca,
        _db: db,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_port_refuses_a_client_without_a_certificate() {
    let e = mtls_env().await;
    let token = e.uaa.mint(&[READ], HOUR);
    let err = tls_request(
        e.api.mtls_addr(),
        &e.ca,
        None,
        "/routing/v1/routes",
        Some(&token),
    )
    .await
    .expect_err("served without a client certificate");
    assert!(!err.is_empty());
    handshake_refused(&e.api, "no client certificate").await;
}

/// Waits for the server's log to record a refused handshake.
async fn handshake_refused(api: &RoutingApi, what: &str) {
    wait_until(
        &format!("routing-api to log the refused handshake ({what})"),
        Duration::from_secs(5),
        || async { api.log().contains("mtls-handshake-failed") },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_port_refuses_a_certificate_from_another_ca() {
    let e = mtls_env().await;
    let stranger = TestCa::new("stranger-ca");
    let (cert, key) = stranger.issue_client("intruder");
    let token = e.uaa.mint(&[READ], HOUR);
    let err = tls_request(
        e.api.mtls_addr(),
        &e.ca,
        Some((&cert, &key)),
        "/routing/v1/routes",
        Some(&token),
    )
    .await
    .expect_err("served a certificate from an untrusted CA");
    assert!(!err.is_empty());
    handshake_refused(&e.api, "certificate from another CA").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_port_serves_a_trusted_client_and_still_checks_the_token() {
    let e = mtls_env().await;
    let (cert, key) = e.ca.issue_client("gorouter");
    let client = Some((cert.as_str(), key.as_str()));
    // no token: the same 401 as on the plain port
    let r = tls_request(
        e.api.mtls_addr(),
        &e.ca,
        client,
        "/routing/v1/router_groups",
        None,
    )
    .await
    .expect("TLS request with a trusted certificate");
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(
        r.body,
        r#"{"name":"UnauthorizedError","message":"Invalid token format"}"#
    );
    // with a token: served, as in routing-api-mtls.txt
    let token = e.uaa.mint(&[GROUPS_READ], HOUR);
    let r = tls_request(
        e.api.mtls_addr(),
        &e.ca,
        client,
        "/routing/v1/router_groups",
        Some(&token),
    )
    .await
    .expect("TLS request with a trusted certificate");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.headers["content-type"], "application/json");
    assert!(r.headers.contains_key("x-vcap-request-id"));
    assert!(r.body.starts_with(r#"[{"guid":""#), "{}", r.body);
    assert!(r
        .body
        .ends_with(r#""name":"default-tcp","type":"tcp","reservable_ports":"1024-1033"}]"#));
    // the plain port keeps working alongside
    let r = e.api.get("/routing/v1/router_groups").await;
    assert_headers(
        &r,
        &[
            ("Content-Type", "application/json"),
            ("Content-Length", &r.body.len().to_string()),
        ],
    );
}

// ----- startup -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_fails_when_uaa_serves_no_token_key() {
    let uaa = FakeUaa::start().await;
    uaa.fail(Endpoint::TokenKey);
    uaa.fail(Endpoint::TokenKeys);
    let db = TestDatabase::create("ra_auth");
    let mut api = RoutingApi::builder(Database::mysql(&db)).uaa(&uaa).spawn();
    let status = api.wait_exit(Duration::from_secs(20)).await;
    assert!(!status.success(), "{status}");
    assert_eq!(status.code(), Some(1));
    assert!(api.log().contains("token key"), "{}", api.log());
    assert!(!RoutingApi::port_bound(api.http_port).await);
    // checked before the lock is ever taken (as upstream): no lock row left behind
    assert!(
        !api.log().contains("routing-api.locket-lock.acquired-lock"),
        "{}",
        api.log()
    );
    // The `locks` table is created by the lock's first step (opening the lock table, in
    // `lock::acquire`), which comes after the token key check: in this fresh database there is
    // no such table at all, let alone a row in it. Nor has anything else been created
    // (migrations come after the lock).
    assert_eq!(
        db.query("SHOW TABLES"),
        Vec::<Vec<String>>::new(),
        "tables (`locks` among them?) exist although the token key check failed before the lock"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_fails_when_uaa_has_no_issuer() {
    let uaa = FakeUaa::start().await;
    uaa.fail(Endpoint::OpenIdConfiguration);
    let db = TestDatabase::create("ra_auth");
    let mut api = RoutingApi::builder(Database::mysql(&db)).uaa(&uaa).spawn();
    let status = api.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(1), "{}", api.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_without_uuid_or_system_domain_exits_1_naming_the_key() {
    let db = TestDatabase::create("ra_auth");
    for (yaml, key) in [
        ("uuid: \"\"\n", "uuid"),
        ("system_domain: \"\"\n", "system_domain"),
    ] {
        let mut api = RoutingApi::builder(Database::mysql(&db)).yaml(yaml).spawn();
        let status = api.wait_exit(Duration::from_secs(10)).await;
        assert_eq!(status.code(), Some(1), "{}", api.log());
        assert!(api.log().contains(key), "{}", api.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_uaa_is_refused_at_start_unless_allowed() {
    let uaa = FakeUaa::start().await;
    assert!(uaa.token_endpoint().starts_with("http://"));
    let db = TestDatabase::create("ra_auth");
    let mut api = RoutingApi::builder(Database::mysql(&db))
        .uaa(&uaa)
        .yaml("oauth: {allow_plain_http: false}")
        .spawn();
    let status = api.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(1), "{}", api.log());
    let log = api.log();
    assert!(log.contains("routing-api.failed-load-config"), "{log}");
    assert!(log.contains("oauth.allow_plain_http"), "{log}");
    assert_eq!(
        uaa.all_hits().iter().map(|(_, n)| n).sum::<u64>(),
        0,
        "UAA must not be asked over plain HTTP"
    );
    // The documented key lets a development setup through.
    let mut api = RoutingApi::builder(Database::mysql(&db))
        .uaa(&uaa)
        .yaml("oauth: {allow_plain_http: true}")
        .start()
        .await;
    assert_eq!(api.get("/routing/v1/routes").await.status, 200);
    assert!(api.try_exit().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_http_enabled_false_only_the_mutual_tls_port_serves() {
    let db = TestDatabase::create("ra_auth");
    let ca = TestCa::new("ra-no-http-ca");
    let builder = RoutingApi::builder(Database::mysql(&db));
    let files = MtlsFiles::write(&ca, builder.dir());
    let mut api = builder
        .mtls(files)
        .yaml("api: {http_enabled: false}")
        .spawn();
    wait_until(
        "routing-api to start without its HTTP port",
        Duration::from_secs(20),
        || {
            let log = api.log();
            async move { log.contains("\"routing-api.started\"") }
        },
    )
    .await;
    assert!(api.try_exit().is_none(), "{}", api.log());
    let (cert, key) = ca.issue_client("operator");
    let r = tls_request(
        api.mtls_addr(),
        &ca,
        Some((&cert, &key)),
        "/routing/v1/router_groups",
        None,
    )
    .await
    .expect("the mutual TLS port serves");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        !RoutingApi::port_bound(api.http_port).await,
        "the plain HTTP port must stay closed:\n{}",
        api.log()
    );
}
