//! routing-api event streams and TTL expiry end to end (the built binary on MariaDB,
//! `-devMode`): response heads and SSE framing as in the captures
//! (routing-api-sse-http.txt, routing-api-sse-tcp.txt), `id` counters per connection, `Upsert`
//! on create and update, `Delete` on delete and on expiry, expired routes hidden at once, and a
//! prune of thousands of routes delivered to every subscriber without disconnecting it.

use std::time::{Duration, Instant};

use integration::mariadb::TestDatabase;
use integration::routing_api::{
    assert_headers, mask_guids, wait_until, Database, RoutingApi, Sse, SseEvent, SYSTEM_DOMAIN,
};
use serde_json::Value;

struct Env {
    api: RoutingApi,
    db: TestDatabase,
}

async fn env() -> Env {
    let db = TestDatabase::create("ra_events");
    let api = RoutingApi::start(Database::mysql(&db)).await;
    Env { api, db }
}

const WAIT: Duration = Duration::from_secs(5);

/// An event stream whose ids must count 0, 1, 2, … and on which events about the API's own
/// route are skipped: its first registration is published right after the row is written, so
/// a stream opened just after startup may (on a loaded machine) still receive it.
struct Events {
    sse: Sse,
    next_id: u64,
}

fn is_own_route(ev: &SseEvent) -> bool {
    ev.data
        .contains(&format!("\"route\":\"api.{SYSTEM_DOMAIN}/routing\""))
}

impl Events {
    async fn open(api: &RoutingApi, path: &str) -> Self {
        Self {
            sse: api.events(path).await,
            next_id: 0,
        }
    }

    async fn next(&mut self, timeout: Duration) -> SseEvent {
        loop {
            let ev = self.sse.expect_event(timeout).await;
            assert_eq!(ev.id, self.next_id.to_string(), "ids count up: {}", ev.raw);
            self.next_id += 1;
            if !is_own_route(&ev) {
                return ev;
            }
        }
    }

    /// True if no event other than the own route's arrives within `timeout`.
    async fn quiet_for(&mut self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.sse.next_event(left).await {
                None => return true,
                Some(ev) if is_own_route(&ev) => self.next_id += 1,
                Some(_) => return false,
            }
        }
    }
}

fn assert_sse_head(sse: &Sse) {
    assert_eq!(sse.head.status_line, "HTTP/1.1 200 OK");
    assert_headers(
        &sse.head,
        &[
            ("Cache-Control", "no-cache, no-store, must-revalidate"),
            ("Connection", "keep-alive"),
            ("Content-Type", "text/event-stream; charset=utf-8"),
            ("Transfer-Encoding", "chunked"),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_event_stream_head_and_frames_match_the_capture() {
    let e = env().await;
    let mut sse = Events::open(&e.api, "/routing/v1/events").await;
    assert_sse_head(&sse.sse);
    // the stream is idle until something changes (no heartbeat events)
    assert!(sse.quiet_for(Duration::from_millis(300)).await);

    let route = r#"[{"route":"myapp.example.com","port":9001,"ip":"127.0.0.1","ttl":60,"log_guid":"my-guid","route_service_url":""}]"#;
    assert_eq!(e.api.post("/routing/v1/routes", route).await.status, 201);
    let up = sse.next(WAIT).await;
    assert_eq!(
        mask_guids(&up.raw),
        format!(
            "id: {}\nevent: Upsert\ndata: {{\"route\":\"myapp.example.com\",\"port\":9001,\"ip\":\"127.0.0.1\",\"ttl\":60,\"log_guid\":\"my-guid\",\"modification_tag\":{{\"guid\":\"<guid>\",\"index\":0}}}}",
            up.id
        )
    );
    assert_eq!(e.api.delete("/routing/v1/routes", route).await.status, 204);
    let del = sse.next(WAIT).await;
    assert_eq!(del.event, "Delete");
    assert_eq!(del.data, up.data, "Delete carries the deleted route");
    // exact framing: each event ends with a blank line
    let body = sse.sse.body_so_far();
    assert!(
        body.starts_with("id: 0\nevent: Upsert\ndata: {"),
        "{body:?}"
    );
    assert!(body.ends_with("}\n\n"), "{body:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_event_stream_head_and_frames_match_the_capture() {
    let e = env().await;
    let rg = e.api.default_group_guid().await;
    let mut sse = e.api.events("/routing/v1/tcp_routes/events").await;
    assert_sse_head(&sse);
    let mapping = format!(
        r#"[{{"router_group_guid":"{rg}","port":1025,"backend_ip":"127.0.0.1","backend_port":9002,"ttl":60}}]"#
    );
    assert_eq!(
        e.api
            .post("/routing/v1/tcp_routes/create", &mapping)
            .await
            .status,
        201
    );
    let up = sse.expect_event(WAIT).await;
    assert_eq!(
        mask_guids(&up.raw.replace(&rg, "RG")),
        "id: 0\nevent: Upsert\ndata: {\"router_group_guid\":\"RG\",\"backend_port\":9002,\"backend_tls_port\":0,\"backend_ip\":\"127.0.0.1\",\"instance_id\":\"\",\"port\":1025,\"modification_tag\":{\"guid\":\"<guid>\",\"index\":0},\"ttl\":60,\"isolation_segment\":\"\"}"
    );
    assert_eq!(
        e.api
            .post("/routing/v1/tcp_routes/delete", &mapping)
            .await
            .status,
        204
    );
    let del = sse.expect_event(WAIT).await;
    assert_eq!((del.id.as_str(), del.event.as_str()), ("1", "Delete"));
    assert_eq!(del.json()["backend_port"], 9002);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_ids_count_from_zero_per_connection_and_updates_are_upserts() {
    let e = env().await;
    let rg = e.api.default_group_guid().await;
    let mut first = e.api.events("/routing/v1/tcp_routes/events").await;
    let mapping = |ttl: u32| {
        format!(
            r#"[{{"router_group_guid":"{rg}","port":1025,"backend_ip":"10.0.0.1","backend_port":1,"ttl":{ttl}}}]"#
        )
    };
    for ttl in [60, 50, 40] {
        let r = e
            .api
            .post("/routing/v1/tcp_routes/create", &mapping(ttl))
            .await;
        assert_eq!(r.status, 201);
    }
    for (i, ttl) in [60, 50, 40].into_iter().enumerate() {
        let ev = first.expect_event(WAIT).await;
        assert_eq!(ev.id, i.to_string());
        assert_eq!(ev.event, "Upsert", "create and update are both Upsert");
        let m = ev.json();
        assert_eq!(m["ttl"], ttl);
        assert_eq!(m["modification_tag"]["index"], i as u64);
    }
    // a new connection starts at 0 again
    let mut second = e.api.events("/routing/v1/tcp_routes/events").await;
    assert_eq!(
        e.api
            .post("/routing/v1/tcp_routes/create", &mapping(30))
            .await
            .status,
        201
    );
    assert_eq!(second.expect_event(WAIT).await.id, "0");
    assert_eq!(first.expect_event(WAIT).await.id, "3");
    // the HTTP stream saw none of it
    let mut http = Events::open(&e.api, "/routing/v1/events").await;
    assert!(http.quiet_for(Duration::from_millis(300)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_data_is_escaped_like_go_json_marshal() {
    let e = env().await;
    let mut sse = Events::open(&e.api, "/routing/v1/events").await;
    let r = e
        .api
        .post(
            "/routing/v1/routes",
            r#"[{"route":"amp.example.com/a&b","port":80,"ip":"10.0.0.1","ttl":60}]"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.dump());
    let ev = sse.next(WAIT).await;
    assert!(
        ev.data.contains(r#""route":"amp.example.com/a\u0026b""#),
        "{}",
        ev.raw
    );
}

/// Posts an HTTP route `host` -> 10.0.0.1:80 and a TCP mapping router port 1025 ->
/// 10.0.0.1:`backend_port` in `group`, both with `ttl` seconds; both must be created (201).
async fn post_short_lived_routes(
    api: &RoutingApi,
    host: &str,
    group: &str,
    backend_port: u16,
    ttl: u32,
) {
    let r = api
        .post(
            "/routing/v1/routes",
            &format!(r#"[{{"route":"{host}","port":80,"ip":"10.0.0.1","ttl":{ttl}}}]"#),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.dump());
    let r = api
        .post(
            "/routing/v1/tcp_routes/create",
            &format!(
                r#"[{{"router_group_guid":"{group}","port":1025,"backend_ip":"10.0.0.1","backend_port":{backend_port},"ttl":{ttl}}}]"#
            ),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.dump());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_routes_disappear_from_lists_at_once() {
    let e = env().await;
    let rg = e.api.default_group_guid().await;
    // Expired routes are left out of the lists while their rows still exist, before the
    // pruner's 10 s tick deletes them: asserted as state, not time. Each round posts routes
    // with a 2 s TTL and waits (generous deadline) for the lists to drop them, then checks the
    // rows are still there. A round where the pruner's tick got there first proves nothing and
    // the next round tries again; lists that only drop routes once the pruner deleted the rows
    // fail every round.
    for round in 0..5u16 {
        let host = format!("short{round}.example.com");
        let backend_port = round + 1;
        post_short_lived_routes(&e.api, &host, &rg, backend_port, 2).await;
        assert_eq!(e.api.http_routes().await.len(), 1);
        assert_eq!(e.api.tcp_routes().await.len(), 1);
        wait_until(
            "the expired routes to leave both lists",
            Duration::from_secs(30),
            || async {
                e.api.http_routes().await.is_empty() && e.api.tcp_routes().await.is_empty()
            },
        )
        .await;
        let rows = e.db.scalar(&format!(
            "SELECT COUNT(*) FROM routes WHERE route = '{host}'"
        ));
        let tcp_rows = e.db.scalar(&format!(
            "SELECT COUNT(*) FROM tcp_routes WHERE host_port = {backend_port}"
        ));
        if rows == "1" && tcp_rows == "1" {
            return;
        }
        eprintln!("round {round}: the pruner deleted the rows first ({rows}, {tcp_rows})");
    }
    panic!("the lists dropped expired routes only once the pruner had deleted their rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_is_a_delete_event_on_both_streams() {
    let e = env().await;
    let rg = e.api.default_group_guid().await;
    let mut http = Events::open(&e.api, "/routing/v1/events").await;
    let mut tcp = Events::open(&e.api, "/routing/v1/tcp_routes/events").await;
    post_short_lived_routes(&e.api, "expiring.example.com", &rg, 1, 1).await;
    let created = http.next(WAIT).await;
    assert_eq!(created.event, "Upsert");
    assert_eq!(tcp.next(WAIT).await.event, "Upsert");

    // the pruner runs every 10 s and deletes rows expired for more than 1 s
    let deadline = Duration::from_secs(13);
    let gone = http.next(deadline).await;
    assert_eq!(gone.event, "Delete");
    let v: Value = gone.json();
    assert_eq!(v["route"], "expiring.example.com");
    assert_eq!(v["modification_tag"], created.json()["modification_tag"]);
    let gone = tcp.next(Duration::from_secs(3)).await;
    assert_eq!((gone.id.as_str(), gone.event.as_str()), ("1", "Delete"));
    assert_eq!(gone.json()["backend_ip"], "10.0.0.1");
    assert_eq!(e.db.count("tcp_routes"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_end_when_the_process_stops_and_its_own_route_goes() {
    let e = env().await;
    let mut sse = e.api.events("/routing/v1/events").await;
    e.api.sigterm();
    assert!(
        sse.ends_within(Duration::from_secs(5)).await,
        "the stream must end on SIGTERM; got {:?}",
        sse.body_so_far()
    );
    let mut api = e.api;
    let status = api.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
    assert_eq!(
        e.db.count("routes"),
        0,
        "the API's own route is deleted on exit"
    );
}

/// Reads `stream` until it has seen `n` events of `kind` (own-route events aside); panics if
/// the stream ends first or `deadline` passes.
async fn count_events(stream: &mut Events, kind: &str, n: usize, deadline: Instant) {
    let mut seen = 0;
    while seen < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(ev) = stream.sse.next_event(left).await else {
            let ended = stream.sse.ends_within(Duration::ZERO).await;
            panic!("after {seen} of {n} {kind} events the stream ended ({ended}) or went quiet");
        };
        assert_eq!(
            ev.id,
            stream.next_id.to_string(),
            "ids count up: {}",
            ev.raw
        );
        stream.next_id += 1;
        if !is_own_route(&ev) {
            assert_eq!(ev.event, kind, "{}", ev.raw);
            seen += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_that_expires_thousands_of_routes_keeps_every_subscriber_connected() {
    const ROUTES: usize = 5000;
    const BATCH: usize = 500;
    let e = env().await;
    let rg = e.api.default_group_guid().await;
    let mut http = Events::open(&e.api, "/routing/v1/events").await;
    let mut tcp = Events::open(&e.api, "/routing/v1/tcp_routes/events").await;
    let posted = Instant::now();
    for batch in 0..ROUTES / BATCH {
        let ids = batch * BATCH..(batch + 1) * BATCH;
        let routes: Vec<String> = ids
            .clone()
            .map(|i| {
                format!(r#"{{"route":"r{i}.bulk.example.com","port":80,"ip":"10.0.0.1","ttl":10}}"#)
            })
            .collect();
        let r = e
            .api
            .post("/routing/v1/routes", &format!("[{}]", routes.join(",")))
            .await;
        assert_eq!(r.status, 201, "{}", r.dump());
        let mappings: Vec<String> = ids
            .map(|i| format!(r#"{{"router_group_guid":"{rg}","port":1025,"backend_ip":"10.0.0.1","backend_port":{},"ttl":10}}"#, i + 1))
            .collect();
        let r = e
            .api
            .post(
                "/routing/v1/tcp_routes/create",
                &format!("[{}]", mappings.join(",")),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.dump());
    }
    eprintln!(
        "{} routes of each kind posted in {:?}",
        ROUTES,
        posted.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    count_events(&mut http, "Upsert", ROUTES, deadline).await;
    count_events(&mut tcp, "Upsert", ROUTES, deadline).await;
    // Expiry: the pruner (every 10 s) deletes them in one or two rounds of thousands.
    count_events(&mut http, "Delete", ROUTES, deadline).await;
    count_events(&mut tcp, "Delete", ROUTES, deadline).await;
    assert_eq!(e.db.count("tcp_routes"), 0);
    let log = e.api.log();
    let pruned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("pruned-expired-routes"))
        .collect();
    let largest = |kind: &str| {
        pruned
            .iter()
            .filter_map(|l| {
                let v: Value = serde_json::from_str(l).ok()?;
                v["data"][kind].as_u64()
            })
            .max()
            .unwrap_or(0)
    };
    // The point: a single prune published far more than upstream's 1024-event buffer.
    assert!(
        largest("http") > 1024 && largest("tcp") > 1024,
        "the routes expired in small rounds, which proves nothing: {pruned:#?}"
    );
    // Both streams are still open and deliver what comes next.
    let r = e
        .api
        .post(
            "/routing/v1/routes",
            r#"[{"route":"after-prune.example.com","port":80,"ip":"10.0.0.1","ttl":60}]"#,
        )
        .await;
    assert_eq!(r.status, 201);
    let ev = http.next(WAIT).await;
    assert!(ev.data.contains("after-prune.example.com"), "{}", ev.raw);
}
