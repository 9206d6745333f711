//! The client against small real HTTP servers on 127.0.0.1 acting as the Routing API and UAA.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use routing_api_client::{
    ClientConfig, ClientError, EventAction, HttpRoute, RoutingApiClient, TcpRouteMapping,
    TlsOptions, TokenFetcher, TransportError, UaaConfig, UaaError,
};

fn uaa_config(uaa: &FakeServer) -> UaaConfig {
    let mut c = UaaConfig::new(&uaa.url, "routing_api_client", "s3cr3t&more");
    c.timeout = Duration::from_secs(5);
    c.max_retries = 0;
    c
}

fn fetcher(uaa: &FakeServer) -> Arc<TokenFetcher> {
    Arc::new(TokenFetcher::new(uaa_config(uaa)).unwrap())
}

fn client(api: &FakeServer, tokens: Option<Arc<TokenFetcher>>) -> RoutingApiClient {
    let mut c = ClientConfig::new(&api.url);
    c.timeout = Duration::from_secs(5);
    RoutingApiClient::new(c, tokens).unwrap()
}

/// A Routing API double that accepts only `bearer <token>` for the listed tokens.
fn api_accepting(tokens: &'static [&'static str]) -> Handler {
    Arc::new(move |req: &Recorded| {
        let auth = req.header("authorization").unwrap_or("");
        if !tokens.iter().any(|t| auth == format!("bearer {t}")) {
            return reply(
                401,
                r#"{"name":"UnauthorizedError","message":"Token is expired"}"#,
            );
        }
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/routing/v1/routes") => reply(200, &format!("{ROUTES_JSON}\n")),
            ("POST", "/routing/v1/routes") => reply(201, ""),
            ("DELETE", "/routing/v1/routes") => reply(204, ""),
            ("GET", "/routing/v1/tcp_routes") => reply(200, &format!("{TCP_ROUTES_JSON}\n")),
            ("GET", p) if p.starts_with("/routing/v1/tcp_routes?") => reply(200, "[]\n"),
            ("POST", "/routing/v1/tcp_routes/create") => reply(201, ""),
            ("POST", "/routing/v1/tcp_routes/delete") => reply(204, ""),
            ("GET", "/routing/v1/router_groups") => reply(200, ROUTER_GROUPS_JSON),
            ("GET", "/routing/v1/router_groups?name=default-tcp") => reply(200, ROUTER_GROUPS_JSON),
            ("GET", p) if p.starts_with("/routing/v1/router_groups?name=") => reply(
                404,
                r#"{"name":"ResourceNotFoundError","message":"Router Group 'nope' not found"}"#,
            ),
            ("GET", "/routing/v1/events") => sse(
                awkward_chunks(&capture_stream("routing-api-sse-http.txt")),
                Duration::from_millis(1),
                false,
            ),
            ("GET", "/routing/v1/tcp_routes/events") => sse(
                awkward_chunks(&capture_stream("routing-api-sse-tcp.txt")),
                Duration::from_millis(1),
                false,
            ),
            _ => reply(404, "404 page not found\n"),
        }
    })
}

#[tokio::test]
async fn sends_the_bearer_token_and_parses_lists() {
    let uaa = FakeServer::start(fake_uaa(3600)).await;
    let api = FakeServer::start(api_accepting(&["tok-1"])).await;
    let c = client(&api, Some(fetcher(&uaa)));

    let routes = c.routes().await.unwrap();
    assert_eq!(routes.len(), 2);
    assert_eq!(routes[0].route, "myapp.example.com");
    assert_eq!(routes[1].route, "api.example.com/routing");
    assert_eq!(serde_json::to_string(&routes).unwrap(), ROUTES_JSON);

    let tcp = c.tcp_routes().await.unwrap();
    assert_eq!(tcp.len(), 1);
    assert_eq!(tcp[0].sni_hostname(), Some("sni.example.com"));
    assert_eq!(serde_json::to_string(&tcp).unwrap(), TCP_ROUTES_JSON);

    let groups = c.router_groups().await.unwrap();
    assert_eq!(groups[0].name, "default-tcp");
    assert_eq!(groups[0].reservable_ports, "1024-1033");

    // The token was fetched once and reused.
    let token_requests = uaa.requests();
    assert_eq!(token_requests.len(), 1);
    let t = &token_requests[0];
    assert_eq!(t.method, "POST");
    assert_eq!(t.path, "/oauth/token");
    assert_eq!(t.header("accept"), Some("application/json"));
    assert_eq!(
        t.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let basic =
        base64::engine::general_purpose::STANDARD.encode("routing_api_client:s3cr3t%26more");
    assert_eq!(
        t.header("authorization"),
        Some(format!("Basic {basic}").as_str())
    );
    assert_eq!(
        t.body_str(),
        "grant_type=client_credentials&client_id=routing_api_client"
    );
    for r in api.requests() {
        assert_eq!(r.header("authorization"), Some("bearer tok-1"));
    }
}

#[tokio::test]
async fn writes_send_json_to_the_right_paths() {
    let uaa = FakeServer::start(fake_uaa(3600)).await;
    let api = FakeServer::start(api_accepting(&["tok-1"])).await;
    let c = client(&api, Some(fetcher(&uaa)));
    let route = HttpRoute {
        route: "foo.com".into(),
        port: 12345,
        ip: "1.2.3.4".into(),
        ttl: Some(5),
        log_guid: "g".into(),
        ..HttpRoute::default()
    };
    let mapping = TcpRouteMapping {
        router_group_guid: "rg".into(),
        port: 1025,
        backend_ip: "10.0.0.1".into(),
        backend_port: 61000,
        backend_tls_port: -1,
        ttl: Some(120),
        ..TcpRouteMapping::default()
    };
    c.upsert_routes(std::slice::from_ref(&route)).await.unwrap();
    c.delete_routes(std::slice::from_ref(&route)).await.unwrap();
    c.upsert_tcp_routes(std::slice::from_ref(&mapping))
        .await
        .unwrap();
    c.delete_tcp_routes(std::slice::from_ref(&mapping))
        .await
        .unwrap();
    c.tcp_routes_in_isolation_segments(&["is1", "is 2"])
        .await
        .unwrap();

    let reqs = api.requests();
    let seen: Vec<(&str, &str)> = reqs
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("POST", "/routing/v1/routes"),
            ("DELETE", "/routing/v1/routes"),
            ("POST", "/routing/v1/tcp_routes/create"),
            ("POST", "/routing/v1/tcp_routes/delete"),
            (
                "GET",
                "/routing/v1/tcp_routes?isolation_segment=is1&isolation_segment=is+2"
            ),
        ]
    );
    let route_json = r#"[{"route":"foo.com","port":12345,"ip":"1.2.3.4","ttl":5,"log_guid":"g","modification_tag":{"guid":"","index":0}}]"#;
    assert_eq!(reqs[0].body_str(), route_json);
    assert_eq!(reqs[1].body_str(), route_json);
    assert_eq!(reqs[0].header("content-type"), Some("application/json"));
    let mapping_json = r#"[{"router_group_guid":"rg","backend_port":61000,"backend_tls_port":-1,"backend_ip":"10.0.0.1","instance_id":"","port":1025,"modification_tag":{"guid":"","index":0},"ttl":120,"isolation_segment":""}]"#;
    assert_eq!(reqs[2].body_str(), mapping_json);
    assert_eq!(reqs[3].body_str(), mapping_json);
}

#[tokio::test]
async fn retries_once_with_a_fresh_token_after_401() {
    let uaa = FakeServer::start(fake_uaa(3600)).await;
    // tok-1 is "expired" server-side; tok-2 works.
    let api = FakeServer::start(api_accepting(&["tok-2"])).await;
    let c = client(&api, Some(fetcher(&uaa)));
    assert_eq!(c.routes().await.unwrap().len(), 2);
    assert_eq!(uaa.requests().len(), 2);
    let auths: Vec<_> = api
        .requests()
        .iter()
        .map(|r| r.header("authorization").unwrap().to_string())
        .collect();
    assert_eq!(auths, ["bearer tok-1", "bearer tok-2"]);
    // The fresh token is cached for later calls.
    c.routes().await.unwrap();
    assert_eq!(uaa.requests().len(), 2);
}

#[tokio::test]
async fn gives_up_after_one_retry() {
    let uaa = FakeServer::start(fake_uaa(3600)).await;
    let api = FakeServer::start(api_accepting(&[])).await;
    let c = client(&api, Some(fetcher(&uaa)));
    let err = c.upsert_routes(&[HttpRoute::default()]).await.unwrap_err();
    assert!(err.is_unauthorized(), "{err}");
    assert_eq!(err.error_body().unwrap().name, "UnauthorizedError");
    assert_eq!(err.error_body().unwrap().message, "Token is expired");
    assert_eq!(
        err.to_string(),
        "401 Unauthorized: UnauthorizedError: Token is expired"
    );
    assert_eq!(uaa.requests().len(), 2);
    assert_eq!(api.requests().len(), 2);
    // The retried request carried the same body.
    let reqs = api.requests();
    assert_eq!(reqs[0].body, reqs[1].body);
}

#[tokio::test]
async fn parses_error_bodies() {
    let api = FakeServer::start(Arc::new(|req: &Recorded| match req.path.as_str() {
        "/routing/v1/routes" => reply(
            400,
            r#"{"name":"RouteInvalidError","message":"Each route request requires a port greater than 0"}"#,
        ),
        "/routing/v1/tcp_routes/create" => reply(
            503,
            r#"{"name":"DBCommunicationError","message":"Database unavailable due to backup or restore"}"#,
        ),
        _ => reply(404, "404 page not found\n"),
    }))
    .await;
    let c = client(&api, None);
    let err = c.upsert_routes(&[HttpRoute::default()]).await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(400));
    let body = err.error_body().unwrap();
    assert_eq!(body.name, "RouteInvalidError");
    assert_eq!(
        body.message,
        "Each route request requires a port greater than 0"
    );
    let err = c.upsert_tcp_routes(&[]).await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(503));
    assert_eq!(err.error_body().unwrap().name, "DBCommunicationError");
    let err = c.tcp_routes().await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(404));
    assert!(err.error_body().is_none());
    assert!(matches!(&err, ClientError::Status { text, .. } if text == "404 page not found"));
    // No token fetcher: no Authorization header.
    assert!(api
        .requests()
        .iter()
        .all(|r| r.header("authorization").is_none()));
}

#[tokio::test]
async fn router_group_by_name() {
    let uaa = FakeServer::start(fake_uaa(3600)).await;
    let api = FakeServer::start(api_accepting(&["tok-1"])).await;
    let c = client(&api, Some(fetcher(&uaa)));
    let g = c
        .router_group_by_name("default-tcp")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(g.guid, "2d5b392b-8aef-4043-79e5-bbb5a72627d4");
    assert_eq!(c.router_group_by_name("nope").await.unwrap(), None);
    assert_eq!(
        api.requests()[1].path,
        "/routing/v1/router_groups?name=nope"
    );
}

#[tokio::test]
async fn a_null_list_is_empty_and_garbage_is_an_error() {
    let api = FakeServer::start(Arc::new(|req: &Recorded| match req.path.as_str() {
        "/routing/v1/routes" => reply(200, "null\n"),
        _ => reply(200, "{not json"),
    }))
    .await;
    let c = client(&api, None);
    assert!(c.routes().await.unwrap().is_empty());
    assert!(matches!(
        c.tcp_routes().await.unwrap_err(),
        ClientError::Decode(_)
    ));
}

#[tokio::test]
async fn calls_time_out() {
    let api = FakeServer::start(Arc::new(|_: &Recorded| never_ending())).await;
    let mut cfg = ClientConfig::new(&api.url);
    cfg.timeout = Duration::from_millis(300);
    let c = RoutingApiClient::new(cfg, None).unwrap();
    let started = std::time::Instant::now();
    let err = c.routes().await.unwrap_err();
    assert!(
        matches!(err, ClientError::Transport(TransportError::Timeout(_))),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    // A UAA that never finishes answering times out too.
    let mut uaa_cfg = UaaConfig::new(&api.url, "id", "secret");
    uaa_cfg.timeout = Duration::from_millis(300);
    uaa_cfg.max_retries = 0;
    let f = TokenFetcher::new(uaa_cfg).unwrap();
    assert!(matches!(
        f.token().await.unwrap_err(),
        UaaError::Transport(TransportError::Timeout(_))
    ));
}

#[tokio::test]
async fn connection_refused_is_a_transport_error() {
    let api = FakeServer::start(Arc::new(|_: &Recorded| reply(200, "[]"))).await;
    let url = api.url.clone();
    drop(api);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let c = RoutingApiClient::new(ClientConfig::new(url), None).unwrap();
    let err = c.routes().await.unwrap_err();
    assert!(
        matches!(err, ClientError::Transport(TransportError::Io(_))),
        "{err}"
    );
}

#[tokio::test]
async fn uaa_errors_are_reported() {
    let uaa = FakeServer::start(Arc::new(|_: &Recorded| {
        reply(
            401,
            r#"{"error":"unauthorized","error_description":"Bad credentials"}"#,
        )
    }))
    .await;
    let api = FakeServer::start(api_accepting(&["tok-1"])).await;
    let c = client(&api, Some(fetcher(&uaa)));
    let err = c.routes().await.unwrap_err();
    match &err {
        ClientError::Token(UaaError::Status { status, body }) => {
            assert_eq!(status.as_u16(), 401);
            assert!(body.contains("Bad credentials"));
        }
        other => panic!("unexpected {other}"),
    }
    assert!(api.requests().is_empty());
}

#[tokio::test]
async fn uaa_5xx_is_retried() {
    let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ok = fake_uaa(3600);
    let uaa = FakeServer::start(Arc::new(move |req: &Recorded| {
        if n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
            reply(502, "bad gateway")
        } else {
            ok(req)
        }
    }))
    .await;
    let mut cfg = UaaConfig::new(&uaa.url, "id", "secret");
    cfg.max_retries = 2;
    cfg.retry_interval = Duration::from_millis(10);
    let f = TokenFetcher::new(cfg.clone()).unwrap();
    assert_eq!(f.token().await.unwrap().access_token, "tok-1");
    assert_eq!(uaa.requests().len(), 3);
    // A 4xx is not retried.
    let uaa401 = FakeServer::start(Arc::new(|_: &Recorded| reply(401, "{}"))).await;
    cfg.url = uaa401.url.clone();
    let f = TokenFetcher::new(cfg).unwrap();
    assert!(f.token().await.is_err());
    assert_eq!(uaa401.requests().len(), 1);
}

#[tokio::test]
async fn tokens_are_cached_until_near_expiry() {
    // A 1 s token is used for half its life.
    let uaa = FakeServer::start(fake_uaa(1)).await;
    let f = fetcher(&uaa);
    assert_eq!(f.token().await.unwrap().access_token, "tok-1");
    assert_eq!(f.token().await.unwrap().access_token, "tok-1");
    assert_eq!(uaa.requests().len(), 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(f.token().await.unwrap().access_token, "tok-2");
    assert_eq!(uaa.requests().len(), 2);
    // Forced refresh.
    assert_eq!(f.refresh().await.unwrap().access_token, "tok-3");
    assert_eq!(f.token().await.unwrap().access_token, "tok-3");
}

#[tokio::test]
async fn concurrent_callers_share_one_fetch() {
    let uaa = FakeServer::start(fake_uaa(3600)).await;
    let f = fetcher(&uaa);
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let f = f.clone();
        tasks.push(tokio::spawn(async move { f.token().await.unwrap() }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().access_token, "tok-1");
    }
    assert_eq!(uaa.requests().len(), 1);
    // Several callers rejected with the same token cost one refresh.
    let rejected = f.token().await.unwrap();
    let a = f.refresh_rejected(&rejected).await.unwrap();
    let b = f.refresh_rejected(&rejected).await.unwrap();
    assert_eq!(a.access_token, "tok-2");
    assert_eq!(b.access_token, "tok-2");
    assert_eq!(uaa.requests().len(), 2);
}

#[tokio::test]
async fn event_streams_in_awkward_chunks() {
    let uaa = FakeServer::start(fake_uaa(3600)).await;
    let api = FakeServer::start(api_accepting(&["tok-1"])).await;
    let c = client(&api, Some(fetcher(&uaa)));

    let mut http = c.subscribe_http_events().await.unwrap();
    let e0 = http.next().await.unwrap().unwrap();
    assert_eq!((e0.id.as_str(), e0.action), ("0", EventAction::Upsert));
    assert_eq!(e0.route.route, "myapp.example.com");
    let e1 = http.next().await.unwrap().unwrap();
    assert_eq!((e1.id.as_str(), e1.action), ("1", EventAction::Delete));
    assert!(http.next().await.is_none());

    let mut tcp = c.subscribe_tcp_events().await.unwrap();
    let mut ports = Vec::new();
    while let Some(e) = tcp.next().await {
        let e = e.unwrap();
        assert_eq!(e.action, EventAction::Upsert);
        ports.push((e.route.port, e.route.backend_port));
    }
    assert_eq!(
        ports,
        [(1025, 9001), (1025, 9002), (1026, 8888), (1025, 9001)]
    );

    let reqs = api.requests();
    assert_eq!(reqs[0].path, "/routing/v1/events");
    assert_eq!(reqs[0].header("accept"), Some("text/event-stream"));
    assert_eq!(reqs[0].header("authorization"), Some("bearer tok-1"));
    assert_eq!(reqs[1].path, "/routing/v1/tcp_routes/events");
}

#[tokio::test]
async fn event_stream_with_keepalives_crlf_and_unknown_events() {
    let mut stream = b": keep-alive\r\n\r\n".to_vec();
    stream.extend_from_slice(b"id: 0\r\nevent: Upsert\r\ndata: {\"route\":\"a.com\",\r\n");
    stream.extend_from_slice(b"data: \"port\":1,\"ip\":\"1.2.3.4\"}\r\n\r\n");
    stream.extend_from_slice(b": keep-alive\r\n\r\n");
    stream.extend_from_slice(b"id: 1\r\nevent: Bogus\r\ndata: {}\r\n\r\n");
    stream.extend_from_slice(b"id: 2\r\nevent: Delete\r\ndata: {\"route\":\"a.com\"}\r\n\r\n");
    let chunks: Vec<Vec<u8>> = stream.chunks(1).map(|c| c.to_vec()).collect();
    let api = FakeServer::start(Arc::new(move |_: &Recorded| {
        sse(chunks.clone(), Duration::from_millis(0), true)
    }))
    .await;
    let c = client(&api, None);
    let mut s = c.subscribe_http_events().await.unwrap();
    // Multi-line data joined with "\n" is still one JSON document.
    let e = s.next().await.unwrap().unwrap();
    assert_eq!(e.route.route, "a.com");
    assert_eq!(e.route.port, 1);
    let err = s.next().await.unwrap().unwrap_err();
    assert!(!err.is_fatal());
    assert!(err.to_string().contains("Bogus"), "{err}");
    let e = s.next().await.unwrap().unwrap();
    assert_eq!((e.id.as_str(), e.action), ("2", EventAction::Delete));
    // The connection stays open: no further event within a short wait.
    assert!(tokio::time::timeout(Duration::from_millis(200), s.next())
        .await
        .is_err());
}

#[tokio::test]
async fn event_subscription_retries_after_401_and_reports_errors() {
    let uaa = FakeServer::start(fake_uaa(3600)).await;
    let api = FakeServer::start(api_accepting(&["tok-2"])).await;
    let c = client(&api, Some(fetcher(&uaa)));
    let mut s = c.subscribe_tcp_events().await.unwrap();
    assert!(s.next().await.unwrap().is_ok());
    assert_eq!(uaa.requests().len(), 2);

    let api = FakeServer::start(api_accepting(&[])).await;
    let c = client(&api, Some(fetcher(&uaa)));
    let err = c.subscribe_http_events().await.unwrap_err();
    assert!(err.is_unauthorized());
    assert_eq!(err.error_body().unwrap().name, "UnauthorizedError");
    assert_eq!(api.requests().len(), 2);
}

#[tokio::test]
async fn idle_event_streams_can_time_out() {
    let api = FakeServer::start(Arc::new(|_: &Recorded| {
        sse(vec![b": hello\n\n".to_vec()], Duration::ZERO, true)
    }))
    .await;
    let mut cfg = ClientConfig::new(&api.url);
    cfg.event_idle_timeout = Some(Duration::from_millis(200));
    let c = RoutingApiClient::new(cfg, None).unwrap();
    let mut s = c.subscribe_http_events().await.unwrap();
    let err = s.next().await.unwrap().unwrap_err();
    assert!(err.is_fatal(), "{err}");
    assert!(s.next().await.is_none());
}

fn ok_api() -> Handler {
    Arc::new(|req: &Recorded| match req.path.as_str() {
        "/routing/v1/routes" => reply(200, ROUTES_JSON),
        "/oauth/token" => fake_uaa(3600)(req),
        _ => reply(404, ""),
    })
}

#[tokio::test]
async fn https_with_a_ca_file() {
    let api = FakeServer::start_tls(ok_api(), false).await;
    let mut cfg = ClientConfig::new(&api.url);
    cfg.tls = TlsOptions::with_ca_file(fixture("ca.pem"));
    let c = RoutingApiClient::new(cfg.clone(), None).unwrap();
    assert_eq!(c.routes().await.unwrap().len(), 2);

    // By name too.
    let mut by_name = cfg.clone();
    by_name.api_url = format!("https://localhost:{}", api.addr.port());
    let c = RoutingApiClient::new(by_name, None).unwrap();
    assert_eq!(c.routes().await.unwrap().len(), 2);

    // An unrelated CA is refused...
    let mut other = cfg.clone();
    other.tls = TlsOptions::with_ca_file(fixture("other-ca.pem"));
    let c = RoutingApiClient::new(other, None).unwrap();
    let err = c.routes().await.unwrap_err();
    assert!(matches!(err, ClientError::Transport(_)), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );

    // ...unless verification is off.
    let mut skip = cfg.clone();
    skip.tls = TlsOptions {
        skip_verification: true,
        ..TlsOptions::default()
    };
    let c = RoutingApiClient::new(skip, None).unwrap();
    assert_eq!(c.routes().await.unwrap().len(), 2);

    // UAA over https with the CA.
    let mut uaa = UaaConfig::new(&api.url, "id", "secret");
    uaa.tls = TlsOptions::with_ca_file(fixture("ca.pem"));
    let f = TokenFetcher::new(uaa).unwrap();
    assert_eq!(f.token().await.unwrap().access_token, "tok-1");
}

#[tokio::test]
async fn mutual_tls() {
    let api = FakeServer::start_tls(ok_api(), true).await;
    let mut cfg = ClientConfig::new(&api.url);
    cfg.tls = TlsOptions::mutual(
        fixture("ca.pem"),
        fixture("client.pem"),
        fixture("client.key"),
    );
    let c = RoutingApiClient::new(cfg, None).unwrap();
    assert_eq!(c.routes().await.unwrap().len(), 2);

    // Without a client certificate the server refuses the handshake.
    let mut cfg = ClientConfig::new(&api.url);
    cfg.tls = TlsOptions::with_ca_file(fixture("ca.pem"));
    let c = RoutingApiClient::new(cfg, None).unwrap();
    assert!(c.routes().await.is_err());
    assert_eq!(api.count("/routing"), 1);
}

#[tokio::test]
async fn trace_hides_secrets() {
    let uaa = FakeServer::start(fake_uaa(3600)).await;
    let api = FakeServer::start(api_accepting(&["tok-1"])).await;
    let lines = Arc::new(std::sync::Mutex::new(String::new()));
    let sink = lines.clone();
    let trace: routing_api_client::TraceFn =
        Arc::new(move |s: &str| sink.lock().unwrap().push_str(s));
    let f = TokenFetcher::new(uaa_config(&uaa))
        .unwrap()
        .with_trace(trace.clone());
    let c = client(&api, Some(Arc::new(f))).with_trace(trace);
    c.routes().await.unwrap();
    let out = lines.lock().unwrap().clone();
    assert!(out.contains("REQUEST: ["), "{out}");
    assert!(out.contains("POST /oauth/token HTTP/1.1"), "{out}");
    assert!(out.contains("GET /routing/v1/routes HTTP/1.1"), "{out}");
    assert!(out.contains("RESPONSE: ["), "{out}");
    assert!(out.contains("HTTP/1.1 200 OK"), "{out}");
    assert!(out.contains("myapp.example.com"), "{out}");
    assert!(!out.contains("tok-1"), "{out}");
    assert!(!out.contains("s3cr3t"), "{out}");
}
