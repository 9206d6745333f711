//! route-emitter against a Routing API that fails: a local HTTP server in the test stands in
//! for the Routing API so that it can answer 503 on demand and count every request. An outage
//! costs a bounded number of requests (a backoff, not one request per route every second) and
//! the routes arrive once it is over; a failed delete is retried until it succeeds; router
//! group lookups are cached, and a missing group is not looked up per route per tick.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use integration::route_emitter::{tcp_route, RouteEmitterBuilder};
use integration::routing_api::wait_until;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// One request the fake Routing API answered.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    body: Value,
    status: u16,
}

#[derive(Default)]
struct State {
    seen: Vec<Seen>,
    /// Methods answered with 503 for now (`"*"`: every request).
    failing: HashSet<String>,
    /// Router groups by name (GUIDs).
    groups: HashMap<String, String>,
}

/// A local HTTP server speaking the part of the Routing API the emitter uses.
#[derive(Clone)]
struct FakeApi {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl FakeApi {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(&state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FakeApi { addr, state }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake routing api state")
    }

    fn fail(&self, method: &str, on: bool) {
        let mut s = self.lock();
        if on {
            s.failing.insert(method.to_string());
        } else {
            s.failing.remove(method);
        }
    }

    fn add_group(&self, name: &str, guid: &str) {
        self.lock().groups.insert(name.into(), guid.into());
    }

    fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    /// Requests matching `method` and `path` so far.
    fn count(&self, method: &str, path: &str) -> usize {
        self.lock()
            .seen
            .iter()
            .filter(|s| s.method == method && s.path == path)
            .count()
    }
}

async fn answer(state: &Arc<Mutex<State>>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let body = match Limited::new(req.into_body(), 4 << 20).collect().await {
        Ok(b) => serde_json::from_slice(&b.to_bytes()).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    let mut s = state.lock().expect("fake routing api state");
    let (status, reply) = if s.failing.contains(&method) || s.failing.contains("*") {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"name": "DBCommunicationError", "message": "database is down"}),
        )
    } else if path == "/routing/v1/router_groups" {
        let name = query.strip_prefix("name=").unwrap_or("");
        match s.groups.get(name) {
            Some(guid) => (
                StatusCode::OK,
                json!([{"guid": guid, "name": name, "type": "tcp", "reservable_ports": "1024-1033"}]),
            ),
            None => (
                StatusCode::NOT_FOUND,
                json!({"name": "ResourceNotFoundError", "message": format!("Router Group '{name}' not found")}),
            ),
        }
    } else {
        (StatusCode::OK, Value::Null)
    };
    s.seen.push(Seen {
        method,
        path,
        query,
        body,
        status: status.as_u16(),
    });
    let mut resp = Response::new(Full::new(Bytes::from(reply.to_string())));
    *resp.status_mut() = status;
    resp
}

const ROUTES: &str = "/routing/v1/routes";

/// `n` HTTP routes sent to the Routing API.
fn api_routes(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({
                "name": format!("r{i}"),
                "port": 7000,
                "uris": [format!("r{i}.retry.test")],
                "registration_interval": "1s",
                "transport": "routing_api",
            })
        })
        .collect()
}

/// URIs of the routes that successful POSTs carried.
fn registered(api: &FakeApi) -> HashSet<String> {
    api.seen()
        .iter()
        .filter(|s| s.method == "POST" && s.path == ROUTES && s.status == 200)
        .flat_map(|s| s.body.as_array().cloned().unwrap_or_default())
        .filter_map(|r| r["route"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_costs_a_bounded_number_of_requests_and_routes_arrive_after_it() {
    let api = FakeApi::start().await;
    api.fail("*", true);
    let _emitter = RouteEmitterBuilder::new(None)
        .set(
            "routing_api",
            json!({"api_url": api.url(), "max_ttl": "30s"}),
        )
        .set("routes", json!(api_routes(200)))
        .start();
    wait_until("a first request", Duration::from_secs(10), || async {
        !api.seen().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let during = api.seen().len();
    // Before: each second one batch and then 200 single-route requests (~1200 in 6 s). Now a
    // backoff from 1 s doubling, jittered into [d/2, d]: requests at the earliest 0, 0.5, 1.5
    // and 3.5 s into the outage.
    assert!(during <= 5, "{during} requests during a 6 s outage");
    api.fail("*", false);
    let recovered = Instant::now();
    // The backoff has reached at most 10 s (the cap is max_ttl / 3).
    wait_until(
        "every route registered",
        Duration::from_secs(15),
        || async { registered(&api).len() == 200 },
    )
    .await;
    let after = api.seen().len() - during;
    assert!(
        after <= 3,
        "{after} requests to register 200 routes after {:?}",
        recovered.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delete_is_retried_until_it_succeeds() {
    let api = FakeApi::start().await;
    let builder = RouteEmitterBuilder::new(None).set(
        "routing_api",
        json!({"api_url": api.url(), "max_ttl": "30s"}),
    );
    let file = builder.dir().join("routes.yml");
    let route = json!({"routes": api_routes(1)});
    std::fs::write(&file, route.to_string()).expect("write routes file");
    let glob = builder.dir().join("*.yml").display().to_string();
    let _emitter = builder.set("dynamic_config_globs", json!([glob])).start();
    wait_until("the route registered", Duration::from_secs(10), || async {
        registered(&api).contains("r0.retry.test")
    })
    .await;

    api.fail("DELETE", true);
    std::fs::write(&file, json!({"routes": []}).to_string()).expect("empty routes file");
    wait_until("a failed delete", Duration::from_secs(10), || async {
        api.count("DELETE", ROUTES) >= 1
    })
    .await;
    // Still failing for a few seconds: retried with a backoff, not given up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let failed = api.count("DELETE", ROUTES);
    assert!(
        (2..=4).contains(&failed),
        "{failed} DELETEs in the first 3 s of failures"
    );
    api.fail("DELETE", false);
    wait_until("a successful delete", Duration::from_secs(10), || async {
        api.seen().iter().any(|s| {
            s.method == "DELETE"
                && s.path == ROUTES
                && s.status == 200
                && s.body[0]["route"] == "r0.retry.test"
        })
    })
    .await;
    // Done: no more deletes.
    let n = api.count("DELETE", ROUTES);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(api.count("DELETE", ROUTES), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_group_lookups_are_cached_and_a_missing_group_is_not_looked_up_per_route() {
    let api = FakeApi::start().await;
    api.add_group("default-tcp", "guid-default-tcp");
    let mut builder = RouteEmitterBuilder::new(None).set(
        "routing_api",
        json!({"api_url": api.url(), "max_ttl": "3s"}),
    );
    for i in 0..5 {
        builder = builder
            .route(tcp_route(
                &format!("t{i}"),
                "default-tcp",
                1024 + i,
                6000 + i,
            ))
            .route(tcp_route(&format!("m{i}"), "missing-group", 1030, 6100 + i));
    }
    let _emitter = builder.start();
    // max_ttl 3s: every route is refreshed every second; watch for 5 s.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let lookups = |name: &str| {
        api.seen()
            .iter()
            .filter(|s| s.path == "/routing/v1/router_groups" && s.query == format!("name={name}"))
            .count()
    };
    let creates = api.count("POST", "/routing/v1/tcp_routes/create");
    assert!(
        creates >= 4,
        "the found group's routes are refreshed: {creates}"
    );
    assert_eq!(lookups("default-tcp"), 1, "a found group is cached");
    // Before: each of the 5 routes every second (25+). Now one lookup per backoff step
    // (1 s doubling, jittered into [d/2, d]): at most 0, 1, 2, 4 s into the 5 s.
    let missing = lookups("missing-group");
    assert!(
        (2..=5).contains(&missing),
        "{missing} lookups of the missing group in 5 s"
    );

    // A group created later is found on a later lookup.
    api.add_group("missing-group", "guid-late");
    wait_until(
        "the late group's routes",
        Duration::from_secs(15),
        || async {
            api.seen().iter().any(|s| {
                s.path == "/routing/v1/tcp_routes/create"
                    && s.status == 200
                    && s.body
                        .as_array()
                        .is_some_and(|a| a.iter().any(|m| m["router_group_guid"] == "guid-late"))
            })
        },
    )
    .await;
}
