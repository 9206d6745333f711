//! Faults: the routing tier keeps routing (or recovers within a bound) when a piece fails.
//!
//! - NATS restarted: gorouter keeps its table while NATS is down (no request fails), and after
//!   the restart route-emitter's registrations refresh the route and new registrations are
//!   learned.
//! - MariaDB restarted: routing-api (its lock in Locket) answers 503 while its database is
//!   away, stays up, and serves reads and writes again soon after, with every acknowledged
//!   route kept.
//! - The active routing-api killed with `kill -9`: the standby serves within 20 s with every
//!   route (SQL lock in routing-api's database, and a Locket server).
//! - gorouter drained with SIGUSR1 under load: a load balancer that keeps sending until its
//!   health checks see `/health` fail (two checks 250 ms apart) sees no request fail;
//!   afterwards connections are refused.
//! - An app instance (a real process) killed under load: only requests in flight at that moment
//!   may fail; afterwards every request succeeds on the other instance.
//! - The Routing API unreachable for a minute (a forwarder in front of it cuts every client off),
//!   with route TTLs shorter than that: gorouter and tcp-router keep serving the routes they
//!   learnt from it, no request fails, and no route is lost once route-emitter reaches it again.
//!
//! A test that stops a service stops a private one: a [`NatsServer`](integration::NatsServer) or
//! a [`PrivateMariaDb`] of its own, never the shared NATS on 4222 or MariaDB on 3306. Every
//! process is a [`ChildProcess`] (killed on drop, also when the test fails), ports are the test's
//! own, and databases are dropped with their [`TestDatabase`] or live in the private server's
//! temporary directory.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration::backends::{text_response, HttpBackend};
use integration::http::{build_request, get_request, try_request, HttpConn};
use integration::mariadb::TestDatabase;
use integration::pki::TestCa;
use integration::private_mariadb::PrivateMariaDb;
use integration::process::{binary, ChildProcess};
use integration::route_emitter::{http_route, RouteEmitterBuilder};
use integration::routing_api::{Database, Locket, RoutingApi};
use integration::{eventually, route, EchoBackend, NatsClient, TempDir, TestEnv};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

// ----- a closed-loop HTTP load through the router -----

/// One request of a [`Load`].
#[derive(Debug, Clone)]
struct Outcome {
    client: usize,
    path: String,
    started: Instant,
    ended: Instant,
    /// The status, or what went wrong on the connection.
    result: Result<u16, String>,
}

impl Outcome {
    fn ok(&self) -> bool {
        matches!(self.result, Ok(200))
    }
}

/// Keep-alive clients, each with one request in flight at a time (`GET /load/<client>/<n>`),
/// sending while `in_rotation` is true and until stopped: the traffic a load balancer sends to
/// one router.
struct Load {
    stop: Arc<AtomicBool>,
    in_flight: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<Vec<Outcome>>>,
}

impl Load {
    fn start(
        addr: SocketAddr,
        host: &str,
        clients: usize,
        pause: Duration,
        in_rotation: Arc<AtomicBool>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let tasks = (0..clients)
            .map(|client| {
                let (stop, in_flight, in_rotation) =
                    (stop.clone(), in_flight.clone(), in_rotation.clone());
                let host = host.to_string();
                tokio::spawn(async move {
                    let mut outcomes = Vec::new();
                    let mut conn: Option<HttpConn> = None;
                    let mut n = 0u64;
                    while !stop.load(Ordering::SeqCst) && in_rotation.load(Ordering::SeqCst) {
                        n += 1;
                        let path = format!("/load/{client}/{n}");
                        let raw = get_request(&host, &path);
                        in_flight.fetch_add(1, Ordering::SeqCst);
                        let started = Instant::now();
                        let result = exchange(&mut conn, addr, &raw).await;
                        let ended = Instant::now();
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        outcomes.push(Outcome {
                            client,
                            path,
                            started,
                            ended,
                            result,
                        });
                        if !pause.is_zero() {
                            tokio::time::sleep(pause).await;
                        }
                    }
                    outcomes
                })
            })
            .collect();
        Self {
            stop,
            in_flight,
            tasks,
        }
    }

    /// Requests in flight right now.
    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Stops the clients after their current request; every request sent.
    async fn stop(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::SeqCst);
        self.join().await
    }

    /// Waits (up to 30 s) for the clients to stop by themselves (out of rotation).
    async fn join(self) -> Vec<Outcome> {
        let mut all = Vec::new();
        for task in self.tasks {
            let outcomes = tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("a load client did not stop within 30 s")
                .expect("load client task");
            all.extend(outcomes);
        }
        all
    }
}

/// One request on the client's keep-alive connection (a new one if it has none): the status,
/// or the error (after which the connection is dropped).
async fn exchange(
    conn: &mut Option<HttpConn>,
    addr: SocketAddr,
    raw: &[u8],
) -> Result<u16, String> {
    if conn.is_none() {
        *conn = Some(
            HttpConn::try_connect(addr)
                .await
                .map_err(|e| format!("connect: {e}"))?,
        );
    }
    let c = conn.as_mut().expect("connected");
    let result = async {
        c.try_send(raw).await.map_err(|e| format!("send: {e}"))?;
        c.try_read_response()
            .await
            .map_err(|e| format!("response: {e}"))
    }
    .await;
    match result {
        Ok(resp) => {
            if resp
                .header("Connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"))
            {
                *conn = None;
            }
            Ok(resp.status)
        }
        Err(e) => {
            *conn = None;
            Err(e)
        }
    }
}

/// Counts and the first failures, for assertion messages.
fn summary(outcomes: &[Outcome]) -> String {
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.ok()).collect();
    let mut s = format!("{} requests, {} failed", outcomes.len(), failed.len());
    for o in failed.iter().take(10) {
        s.push_str(&format!(
            "\n  client {} {}: {:?} (took {:?})",
            o.client,
            o.path,
            o.result,
            o.ended - o.started
        ));
    }
    s
}

/// The backend address the access log names for the request to `path`.
fn served_by(access_log: &str, path: &str) -> Option<String> {
    let needle = format!("\"GET {path} HTTP/1.1\"");
    let line = access_log.lines().find(|l| l.contains(&needle))?;
    // `... "<remote addr>" "<backend addr>" x_forwarded_for:...`
    let before = line.split(" x_forwarded_for:").next()?;
    let backend = before.rsplit(' ').next()?;
    Some(backend.trim_matches('"').to_string())
}

// ----- an app instance that is a real process -----

/// `loadgen --serve-backend 127.0.0.1:0`: an HTTP/1.1 app instance answering `200 Hello,
/// World!` on keep-alive connections, in a process of its own, so killing it is a real process
/// death (the kernel closes its sockets). Killed on drop. The `loadgen` binary is built by
/// `cargo test --workspace` (or `cargo build -p loadgen`); `$LOADGEN_BIN` overrides.
struct AppInstance {
    process: ChildProcess,
    addr: SocketAddr,
    _dir: TempDir,
}

impl AppInstance {
    async fn start(name: &str) -> Self {
        let dir = TempDir::new("it-app-instance");
        let mut cmd = Command::new(binary("loadgen"));
        cmd.args(["--serve-backend", "127.0.0.1:0"]);
        let process = ChildProcess::spawn(
            name,
            cmd,
            dir.path().join(format!("{name}.log")),
            "loadgen --serve-backend 127.0.0.1:0",
        );
        let addr = process.printed_addr("backend listening on ").await;
        Self {
            process,
            addr,
            _dir: dir,
        }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    /// SIGKILL; returns once the process is gone.
    fn kill_9(&mut self) {
        self.process.kill();
    }
}

// ----- NATS restarted -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_survive_a_nats_restart() {
    // Endpoints go stale 8 s after their last registration; the outage is longer than that,
    // and so is the time watched after the restart: the route answers throughout only if
    // pruning is suspended while NATS is down and route-emitter's registrations reach the
    // router again after the restart.
    const STALE: Duration = Duration::from_secs(8);
    let mut env =
        TestEnv::start("droplet_stale_threshold: 8s\nprune_stale_droplets_interval: 500ms").await;
    let app = EchoBackend::start("app").await;
    let mut emitter = RouteEmitterBuilder::new(Some(&env.nats))
        .route(http_route("app", "kept.nats-restart.test", app.port()))
        .start();
    env.router.wait_route("kept.nats-restart.test").await;

    // A client of the router for the whole test: one request every 50 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let addr = env.router.addr();
    let prober = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let at = Instant::now();
                let r = try_request(addr, &get_request("kept.nats-restart.test", "/probe"))
                    .await
                    .map(|r| r.status)
                    .map_err(|e| e.to_string());
                seen.push((at, r));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            seen
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;

    env.nats.stop().await;
    let stopped = Instant::now();
    tokio::time::sleep(STALE + Duration::from_secs(1)).await;
    env.nats.restart().await;
    let restarted = Instant::now();

    // A route registered after the restart, re-published like an emitter does, is learned
    // once the router has reconnected.
    let late = EchoBackend::start("late").await;
    let client = NatsClient::connect(&env.nats).await;
    let learned = {
        let router = &env.router;
        let msg = route("late.nats-restart.test", late.port());
        let client = &client;
        eventually(
            "a route registered after the NATS restart to be routed",
            Duration::from_secs(20),
            || {
                let msg = msg.clone();
                async move {
                    client.register(&msg).await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    router
                        .is_routed("late.nats-restart.test")
                        .await
                        .then(|| restarted.elapsed())
                }
            },
        )
        .await
    };
    let resp = env.get("late.nats-restart.test", "/").await;
    assert_eq!(
        resp.header("X-Backend-Name"),
        Some("late"),
        "{}",
        resp.dump()
    );

    // Watch the old route for longer than the stale threshold after the restart.
    let watch_until = restarted + STALE + Duration::from_secs(2);
    tokio::time::sleep(watch_until.saturating_duration_since(Instant::now())).await;
    stop.store(true, Ordering::SeqCst);
    let seen = prober.await.expect("prober task");

    let during: Vec<_> = seen
        .iter()
        .filter(|(at, _)| *at >= stopped && *at < restarted)
        .collect();
    let after = seen.iter().filter(|(at, _)| *at >= restarted).count();
    let failed: Vec<_> = seen.iter().filter(|(_, r)| *r != Ok(200)).collect();
    eprintln!(
        "NATS restart: {} probes ({} while NATS was down, {after} after the restart), {} \
         failed; late route learned {learned:?} after the restart",
        seen.len(),
        during.len(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "the existing route failed {} of {} probes (stopped at +0, restarted at +{:?}): {:?}",
        failed.len(),
        seen.len(),
        restarted - stopped,
        failed
            .iter()
            .take(10)
            .map(|(at, r)| (at.saturating_duration_since(stopped), r))
            .collect::<Vec<_>>()
    );
    assert!(during.len() >= 50, "too few probes while NATS was down");
    assert!(after >= 50, "too few probes after the restart");
    assert!(env.router.try_exit().is_none(), "gorouter exited");
    assert!(emitter.try_exit().is_none(), "route-emitter exited");
}

// ----- MariaDB restarted -----

fn http_route_json(host: &str) -> String {
    json!([{"route": host, "port": 80, "ip": "10.0.0.1", "ttl": 120}]).to_string()
}

async fn listed_routes(api: &RoutingApi) -> Vec<String> {
    api.http_routes()
        .await
        .iter()
        .map(|r| r["route"].as_str().expect("route").to_string())
        .collect()
}

/// A request while the database is away (15 s at most): the response, or what went wrong.
async fn call_during_outage(
    api: &RoutingApi,
    method: &str,
    path: &str,
    body: &str,
) -> Result<integration::RawResponse, String> {
    let host = api.addr().to_string();
    let mut headers = vec![("Host", host.as_str())];
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    let raw = build_request(method, path, &headers, body.as_bytes());
    let asked = Instant::now();
    let result =
        match tokio::time::timeout(Duration::from_secs(15), try_request(api.addr(), &raw)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(format!("failed after {:?}: {e}", asked.elapsed())),
            Err(_) => Err("no answer within 15 s".to_string()),
        };
    if let Ok(r) = &result {
        eprintln!(
            "{method} {path} while MariaDB was down: {} after {:?}",
            r.status,
            asked.elapsed()
        );
    }
    result
}

/// Panics (with the log) if routing-api has exited since the database went away.
async fn assert_alive_during_outage(api: &mut RoutingApi, stopped: Instant) {
    // An exit may be under way: give it a moment to be seen.
    tokio::time::sleep(Duration::from_millis(200)).await;
    if let Some(status) = api.try_exit() {
        panic!(
            "routing-api exited with {status} while MariaDB was down (stopped {:?} ago); its \
             log:\n{}",
            stopped.elapsed(),
            api.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_api_recovers_from_a_mariadb_restart() {
    // How long MariaDB stays down: a restart that takes a while. The lock is Locket's (as
    // routing-release deploys it), so the database outage does not touch it; with the SQL lock
    // in the same database, a holder that cannot refresh it for a third of its TTL steps down
    // instead (routing_api_split_brain.rs).
    const OUTAGE: Duration = Duration::from_secs(5);
    let mut db = PrivateMariaDb::start().await;
    let ca = TestCa::new("faults-db-restart-ca");
    let locket = Locket::start_sqlite(&ca).await;
    let mut api = RoutingApi::builder(db.database("routing_api"))
        .locket(locket.client_files(&ca))
        .start()
        .await;
    let before: Vec<String> = (0..3)
        .map(|i| format!("before-{i}.db-restart.test"))
        .collect();
    for host in &before {
        let r = api.post("/routing/v1/routes", &http_route_json(host)).await;
        assert_eq!(r.status, 201, "{}", r.dump());
    }

    db.stop().await;
    let stopped = Instant::now();
    // While the database is away the API answers, with 503, and the process stays up (a
    // database outage is not a lost lock: nobody else can take it meanwhile).
    let during = http_route_json("during.db-restart.test");
    let (read, write) = tokio::join!(
        call_during_outage(&api, "GET", "/routing/v1/routes", ""),
        call_during_outage(&api, "POST", "/routing/v1/routes", &during),
    );
    for (what, result) in [("GET", read), ("POST", write)] {
        match result {
            Ok(r) => assert_eq!(
                r.status,
                503,
                "{what} /routing/v1/routes while MariaDB was down:\n{}",
                r.dump()
            ),
            Err(e) => {
                assert_alive_during_outage(&mut api, stopped).await;
                panic!("{what} /routing/v1/routes while MariaDB was down: {e}");
            }
        }
    }
    tokio::time::sleep(OUTAGE.saturating_sub(stopped.elapsed())).await;
    assert_alive_during_outage(&mut api, stopped).await;
    db.restart().await;
    let restarted = Instant::now();

    let recovered = {
        let api = &api;
        eventually(
            "routing-api to write and read through the restarted MariaDB",
            Duration::from_secs(30),
            || async move {
                let w = api
                    .post(
                        "/routing/v1/routes",
                        &http_route_json("after.db-restart.test"),
                    )
                    .await;
                let r = api.get("/routing/v1/routes").await;
                (w.status == 201 && r.status == 200).then(|| restarted.elapsed())
            },
        )
        .await
    };
    // "Soon after" is the wait's own 30 s: no figure of the behaviour is tighter.
    eprintln!("routing-api wrote and read again {recovered:?} after MariaDB was back");

    let listed = listed_routes(&api).await;
    for host in before
        .iter()
        .chain(["after.db-restart.test".to_string()].iter())
    {
        assert!(
            listed.contains(host),
            "{host} is missing after the restart: {listed:?}"
        );
    }
    assert!(
        api.try_exit().is_none(),
        "routing-api exited:\n{}",
        api.log()
    );
}

// ----- the active routing-api killed -----

async fn takes_over_after_kill_9(locket: Option<(&Locket, &TestCa)>) {
    const TAKEOVER_LIMIT: Duration = Duration::from_secs(20);
    let db = TestDatabase::create("faults_takeover");
    let builder = || {
        let b = RoutingApi::builder(Database::mysql(&db));
        match locket {
            Some((l, ca)) => b.locket(l.client_files(ca)),
            None => b,
        }
    };
    let mut active = builder().start().await;
    let mut standby = builder().spawn();

    let http: Vec<String> = (0..10).map(|i| format!("r{i}.takeover.test")).collect();
    for host in &http {
        let r = active
            .post("/routing/v1/routes", &http_route_json(host))
            .await;
        assert_eq!(r.status, 201, "{}", r.dump());
    }
    let group = active.default_group_guid().await;
    let tcp_ports = [1024u16, 1025];
    for port in tcp_ports {
        let body = json!([{
            "router_group_guid": group,
            "port": port,
            "backend_ip": "10.0.0.2",
            "backend_port": 8000 + port,
            "ttl": 120,
        }])
        .to_string();
        let r = active.post("/routing/v1/tcp_routes/create", &body).await;
        assert_eq!(r.status, 201, "{}", r.dump());
    }
    // The standby waits for the lock and binds nothing meanwhile.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        standby.try_exit().is_none(),
        "the standby exited:\n{}",
        standby.log()
    );
    assert!(
        !RoutingApi::port_bound(standby.http_port).await,
        "the standby serves while the active one holds the lock:\n{}",
        standby.log()
    );

    active.kill9();
    let killed = Instant::now();
    standby.wait_serving(TAKEOVER_LIMIT).await;
    let r = standby
        .post("/routing/v1/routes", &http_route_json("new.takeover.test"))
        .await;
    assert_eq!(r.status, 201, "{}", r.dump());
    let listed = listed_routes(&standby).await;
    let took = killed.elapsed();
    eprintln!(
        "standby ({}) served POST and GET {took:?} after kill -9",
        if locket.is_some() {
            "Locket"
        } else {
            "SQL lock"
        }
    );
    assert!(took < TAKEOVER_LIMIT, "take-over took {took:?}");

    for host in http.iter().chain(["new.takeover.test".to_string()].iter()) {
        assert!(
            listed.contains(host),
            "{host} lost in the take-over: {listed:?}"
        );
    }
    let tcp: Vec<Value> = standby.tcp_routes().await;
    for port in tcp_ports {
        assert!(
            tcp.iter()
                .any(|r| r["port"] == port && r["backend_port"] == 8000 + port),
            "TCP route on {port} lost in the take-over: {tcp:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_routing_api_takes_over_within_20s_after_kill_9() {
    takes_over_after_kill_9(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_routing_api_takes_over_within_20s_after_kill_9_with_locket() {
    let ca = TestCa::new("faults-locket-ca");
    let locket = Locket::start_sqlite(&ca).await;
    takes_over_after_kill_9(Some((&locket, &ca))).await;
}

// ----- gorouter drained under load -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_drain_under_load_fails_no_request() {
    const DRAIN_WAIT: Duration = Duration::from_secs(2);
    const LB_CHECK_INTERVAL: Duration = Duration::from_millis(250);
    const LB_UNHEALTHY_THRESHOLD: u32 = 2;
    let mut env = TestEnv::start("drain_wait: 2s\ndrain_timeout: 10s").await;
    // 10 ms per request, so requests are in flight when the signal comes.
    let app = HttpBackend::start(|_req| async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        text_response(200, "ok\n")
    })
    .await;
    env.register_and_wait(&route("drain.faults.test", app.port()))
        .await;

    // The load balancer: checks /health every 250 ms and takes the router out of rotation (no
    // new requests) after two failed checks in a row, so traffic goes on for a while after the
    // drain starts, as it does in front of a real router (that is what `drain_wait` is for).
    let in_rotation = Arc::new(AtomicBool::new(true));
    let status_addr = env.router.status_addr();
    let health_checker = {
        let in_rotation = in_rotation.clone();
        tokio::spawn(async move {
            let mut failed_checks = 0;
            let mut first_failed = None;
            loop {
                let healthy = matches!(
                    try_request(status_addr, b"GET /health HTTP/1.1\r\nHost: lb\r\n\r\n").await,
                    Ok(r) if r.status == 200
                );
                if healthy {
                    failed_checks = 0;
                } else {
                    failed_checks += 1;
                    first_failed.get_or_insert_with(Instant::now);
                }
                if failed_checks == LB_UNHEALTHY_THRESHOLD {
                    in_rotation.store(false, Ordering::SeqCst);
                    return (first_failed.expect("a failed check"), Instant::now());
                }
                tokio::time::sleep(LB_CHECK_INTERVAL).await;
            }
        })
    };
    let load = Load::start(
        env.router.addr(),
        "drain.faults.test",
        6,
        Duration::from_millis(2),
        in_rotation.clone(),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    let in_flight = load.in_flight();
    let signalled = Instant::now();
    env.router.signal(libc::SIGUSR1);
    let (saw_503, out_of_rotation) = tokio::time::timeout(Duration::from_secs(5), health_checker)
        .await
        .expect("/health never stopped saying 200 after SIGUSR1")
        .expect("health checker task");
    let outcomes = load.join().await;
    let status = env
        .router
        .wait_exit(DRAIN_WAIT + Duration::from_secs(10))
        .await;
    let exited = signalled.elapsed();

    let before = outcomes.iter().filter(|o| o.started < signalled).count();
    let during = outcomes.len() - before;
    let failed = outcomes.iter().filter(|o| !o.ok()).count();
    eprintln!(
        "SIGUSR1 drain: {before} requests before the signal ({in_flight} in flight at it), \
         {during} after it (/health not 200 {:?} after the signal, out of rotation after {:?}), \
         {failed} failed; exit {exited:?} after the signal",
        saw_503 - signalled,
        out_of_rotation - signalled,
    );
    assert_eq!(failed, 0, "{}", summary(&outcomes));
    assert!(
        before >= 20,
        "too little load before the drain: {}",
        summary(&outcomes)
    );
    assert!(
        during >= 10,
        "too little load during drain_wait: {}",
        summary(&outcomes)
    );
    assert!(
        saw_503 - signalled < LB_CHECK_INTERVAL + Duration::from_millis(500),
        "/health answered 200 for {:?} after SIGUSR1",
        saw_503 - signalled
    );
    assert!(
        out_of_rotation < signalled + DRAIN_WAIT,
        "the test's load balancer was too slow to take the router out during drain_wait"
    );
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(
        exited >= DRAIN_WAIT - Duration::from_millis(100),
        "the router stopped {exited:?} after SIGUSR1, before drain_wait ({DRAIN_WAIT:?})"
    );

    // After the drain a client is refused: no listener, no 5xx.
    let err = tokio::net::TcpStream::connect(env.router.addr())
        .await
        .expect_err("the proxy port still accepts connections after the drain");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    let attempt = try_request(
        env.router.addr(),
        &get_request("drain.faults.test", "/late"),
    )
    .await;
    assert!(
        attempt.is_err(),
        "a request after the drain got an answer instead of a refused connection: {attempt:?}"
    );
}

// ----- an app instance killed under load -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_app_instance_under_load_fails_only_its_in_flight_requests() {
    const CLIENTS: usize = 8;
    let env = TestEnv::start("balancing_algorithm: round-robin\nbackends: {max_attempts: 3}").await;
    let mut victim = AppInstance::start("app-instance-0").await;
    let survivor = AppInstance::start("app-instance-1").await;
    env.register(&route("kill.faults.test", victim.port()))
        .await;
    env.register(&route("kill.faults.test", survivor.port()))
        .await;
    env.sync().await;

    // Both instances serve.
    for i in 0..10 {
        let resp = env.get("kill.faults.test", &format!("/warm/{i}")).await;
        assert_eq!(resp.status, 200, "{}", resp.dump());
    }
    let victim_addr = format!("127.0.0.1:{}", victim.port());
    let survivor_addr = format!("127.0.0.1:{}", survivor.port());
    let warm_log = eventually(
        "access log lines of the warm-up requests",
        Duration::from_secs(5),
        || {
            let log = env.router.access_log();
            async move {
                (0..10)
                    .all(|i| log.contains(&format!("GET /warm/{i} ")))
                    .then_some(log)
            }
        },
    )
    .await;
    let warm_backends: Vec<Option<String>> = (0..10)
        .map(|i| served_by(&warm_log, &format!("/warm/{i}")))
        .collect();
    assert!(
        warm_backends.contains(&Some(victim_addr.clone()))
            && warm_backends.contains(&Some(survivor_addr.clone())),
        "both instances must serve before the kill: {warm_backends:?}"
    );

    let load = Load::start(
        env.router.addr(),
        "kill.faults.test",
        CLIENTS,
        Duration::ZERO,
        Arc::new(AtomicBool::new(true)),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let in_flight = load.in_flight();
    let kill_sent = Instant::now();
    victim.kill_9();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let outcomes = load.stop().await;

    let failures: Vec<&Outcome> = outcomes.iter().filter(|o| !o.ok()).collect();
    let after: Vec<&Outcome> = outcomes.iter().filter(|o| o.started >= killed).collect();
    eprintln!(
        "app instance killed under load: {} requests, {} in flight at the kill, {} failed, {} \
         sent after the kill",
        outcomes.len(),
        in_flight,
        failures.len(),
        after.len()
    );
    // Only requests in flight at the kill may fail: started before it was done, still
    // running when it was sent. One per client at most.
    for f in &failures {
        assert!(
            f.started < killed && f.ended >= kill_sent,
            "a request not in flight at the kill failed: {}",
            summary(&outcomes)
        );
    }
    assert!(
        failures.len() <= CLIENTS,
        "more failures than requests in flight: {}",
        summary(&outcomes)
    );
    assert!(
        after.len() >= 50,
        "too little load after the kill: {}",
        summary(&outcomes)
    );
    assert!(
        after.iter().all(|o| o.ok()),
        "requests sent after the kill failed: {}",
        summary(&outcomes)
    );

    // From now on every request is served by the survivor.
    for i in 0..10 {
        let resp = env.get("kill.faults.test", &format!("/after/{i}")).await;
        assert_eq!(resp.status, 200, "{}", resp.dump());
    }
    let after_log = eventually(
        "access log lines of the requests after the kill",
        Duration::from_secs(5),
        || {
            let log = env.router.access_log();
            async move {
                (0..10)
                    .all(|i| log.contains(&format!("GET /after/{i} ")))
                    .then_some(log)
            }
        },
    )
    .await;
    for i in 0..10 {
        assert_eq!(
            served_by(&after_log, &format!("/after/{i}")),
            Some(survivor_addr.clone()),
            "/after/{i} was not served by the surviving instance"
        );
    }
    drop(survivor);
}

// ----- the Routing API unreachable for a minute -----

/// Probes `probe` every `every` until stopped: when each probe started and whether it failed
/// (with what).
fn probe_loop<F, Fut>(
    stop: Arc<AtomicBool>,
    every: Duration,
    probe: F,
) -> JoinHandle<Vec<(Instant, Result<(), String>)>>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let at = Instant::now();
            let r = match tokio::time::timeout(Duration::from_secs(5), probe()).await {
                Ok(r) => r,
                Err(_) => Err("no answer within 5 s".to_string()),
            };
            seen.push((at, r));
            tokio::time::sleep(every).await;
        }
        seen
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routing_api_unreachable_for_a_minute_loses_no_route_and_fails_no_request() {
    // Every client reaches the API through a forwarder, which cuts their connections and
    // refuses new ones for a minute. Route TTLs are shorter than the outage, so a router that
    // expired routes whose owner could not refresh them would drop both routes halfway through.
    const OUTAGE: Duration = Duration::from_secs(60);
    const TTL: &str = "20s";
    let db = TestDatabase::create("faults_api_outage");
    let mut api = RoutingApi::start(Database::mysql(&db)).await;
    let gate = integration::util::Forwarder::start(
        "routing-api gate",
        format!("127.0.0.1:{}", api.http_port),
    )
    .await;
    let api_url = format!("http://127.0.0.1:{}", gate.port());
    let app = EchoBackend::start("app").await;
    let tcp_app = integration::tcp_router::TcpBackend::echo("tcp-app").await;
    let external_port = integration::util::free_port();
    let host = "app.api-outage.test";
    let mut emitter = RouteEmitterBuilder::new(None)
        .set("routing_api", json!({"api_url": api_url, "max_ttl": TTL}))
        .route(json!({
            "name": "app",
            "port": app.port(),
            "uris": [host],
            "registration_interval": "1s",
            "transport": "routing_api",
        }))
        .route(integration::route_emitter::tcp_route(
            "tcp-app",
            integration::routing_api::DEFAULT_GROUP,
            external_port,
            tcp_app.port(),
        ))
        .start();
    let mut router = integration::GorouterBuilder::new(integration::closed_port())
        .yaml(&format!(
            "nats: {{hosts: []}}\n\
             routing_api: {{uri: 'http://127.0.0.1', port: {}, auth_disabled: true}}\n\
             prune_stale_droplets_interval: 1s\n",
            gate.port()
        ))
        .start()
        .await;
    let mut tcp_router = integration::tcp_router::TcpRouterBuilder::for_api_port(gate.port())
        .start()
        .await;
    router.wait_route(host).await;
    tcp_router
        .wait_routed(external_port, Duration::from_secs(10))
        .await;

    let stop = Arc::new(AtomicBool::new(false));
    let addr = router.addr();
    let http = probe_loop(
        stop.clone(),
        Duration::from_millis(50),
        move || async move {
            match try_request(addr, &get_request(host, "/probe")).await {
                Ok(r) if r.status == 200 => Ok(()),
                Ok(r) => Err(format!("status {}", r.status)),
                Err(e) => Err(e.to_string()),
            }
        },
    );
    let tcp = probe_loop(
        stop.clone(),
        Duration::from_millis(100),
        move || async move {
            match integration::tcp_router::greeting(external_port).await {
                Ok(line) if line == "tcp-app" => Ok(()),
                Ok(line) => Err(format!("greeting {line:?}")),
                Err(e) => Err(e.to_string()),
            }
        },
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    gate.set_open(false);
    gate.cut_connections();
    let frozen = Instant::now();
    tokio::time::sleep(OUTAGE).await;
    gate.set_open(true);
    let thawed = Instant::now();
    // Watch for longer than a TTL after the API is back: the emitter's refreshes must land again.
    tokio::time::sleep(Duration::from_secs(25)).await;
    stop.store(true, Ordering::SeqCst);
    let (http, tcp) = (
        http.await.expect("http prober"),
        tcp.await.expect("tcp prober"),
    );

    let api_http = listed_routes(&api).await;
    let api_tcp: Vec<u64> = api
        .tcp_routes()
        .await
        .iter()
        .filter_map(|r| r["port"].as_u64())
        .collect();
    let lost = [
        (!api_http.iter().any(|r| r == host)).then_some("HTTP route in the Routing API"),
        (!api_tcp.contains(&u64::from(external_port))).then_some("TCP route in the Routing API"),
        (!router.is_routed(host).await).then_some("HTTP route in gorouter"),
        integration::tcp_router::greeting(external_port)
            .await
            .is_err()
            .then_some("TCP route in tcp-router"),
    ];
    let lost: Vec<&str> = lost.into_iter().flatten().collect();
    let report = |name: &str, seen: &[(Instant, Result<(), String>)]| {
        let failed: Vec<_> = seen.iter().filter(|(_, r)| r.is_err()).collect();
        let during = seen
            .iter()
            .filter(|(at, _)| *at >= frozen && *at < thawed)
            .count();
        eprintln!(
            "Routing API outage of {OUTAGE:?}: {name}: {} requests attempted ({during} during the \
             outage), {} failed",
            seen.len(),
            failed.len()
        );
        failed
            .iter()
            .take(10)
            .map(|(at, r)| {
                format!(
                    "{name} at {:+.1}s from the cut: {r:?}",
                    at.saturating_duration_since(frozen).as_secs_f64()
                )
            })
            .collect::<Vec<_>>()
    };
    let mut failures = report("HTTP via gorouter", &http);
    failures.extend(report("TCP via tcp-router", &tcp));
    eprintln!("Routing API outage: routes lost: {}", lost.len());
    assert!(failures.is_empty(), "failed requests: {failures:#?}");
    assert!(lost.is_empty(), "routes lost: {lost:?}");
    assert!(http.len() > 1000 && tcp.len() > 500, "too few probes");
    assert!(router.try_exit().is_none(), "gorouter exited");
    assert!(tcp_router.try_exit().is_none(), "tcp-router exited");
    assert!(emitter.try_exit().is_none(), "route-emitter exited");
    assert!(api.try_exit().is_none(), "routing-api exited");
}
