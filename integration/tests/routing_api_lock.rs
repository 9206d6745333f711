//! routing-api's lock and its database (B.9): active/standby on one MariaDB database (the
//! `locks` table in routing-api's own database), take-over after `kill -9` and after SIGTERM,
//! exit when the lock is taken away, the same with the real `locket` server, and a short
//! database outage (through a [`DbGate`]) answered with 503 and recovered from without losing
//! writes (a long one ends the lock: routing_api_split_brain.rs).

use std::time::{Duration, Instant};

use integration::mariadb::TestDatabase;
use integration::pki::TestCa;
use integration::routing_api::{wait_until, Database, DbGate, Locket, MtlsFiles, RoutingApi};
use serde_json::Value;

const LOCK_KEY: &str = "routing_api_lock";

fn lock_owner(db: &TestDatabase) -> Option<String> {
    db.query(&format!(
        "SELECT owner FROM locks WHERE path = '{LOCK_KEY}'"
    ))
    .into_iter()
    .next()
    .map(|r| r[0].clone())
}

/// The JSON (lager) lines of a process's output.
fn log_lines(output: &str) -> Vec<Value> {
    output
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.is_object())
        .collect()
}

/// The index (among [`log_lines`]) and the line of the first line after `from` whose
/// `message` is `message` and whose `data` has every `(field, value)` of `data`.
fn find_line(
    lines: &[Value],
    from: usize,
    message: &str,
    data: &[(&str, &str)],
) -> Option<(usize, Value)> {
    lines
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, l)| l["message"] == message && data.iter().all(|(k, v)| l["data"][*k] == *v))
        .map(|(i, l)| (i, l.clone()))
}

/// Whether none of the process's ports is bound.
async fn binds_nothing(api: &RoutingApi) -> bool {
    !RoutingApi::port_bound(api.http_port).await
        && !RoutingApi::port_bound(api.mtls_port).await
        && !RoutingApi::port_bound(api.admin_port).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lock_holder_serves_and_the_standby_binds_nothing() {
    let db = TestDatabase::create("ra_lock");
    let ca = TestCa::new("ra-lock-ca");
    let b1 = RoutingApi::builder(Database::mysql(&db));
    let f1 = MtlsFiles::write(&ca, b1.dir());
    let active = b1.mtls(f1).start().await;
    let b2 = RoutingApi::builder(Database::mysql(&db));
    let f2 = MtlsFiles::write(&ca, b2.dir());
    let mut standby = b2.mtls(f2).spawn();

    assert_eq!(lock_owner(&db).as_deref(), Some(active.uuid.as_str()));
    // give the standby time to (wrongly) start serving
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(standby.try_exit().is_none(), "{}", standby.log());
    assert!(
        binds_nothing(&standby).await,
        "the standby must not bind its HTTP, mTLS or admin port:\n{}",
        standby.log()
    );
    assert!(RoutingApi::port_bound(active.mtls_port).await);
    assert_eq!(lock_owner(&db).as_deref(), Some(active.uuid.as_str()));
    // the active one answers; its own route is the only registration
    let routes = active.get_json("/routing/v1/routes").await;
    assert_eq!(routes.as_array().unwrap().len(), 1, "{routes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_serves_within_20_seconds_after_the_holder_is_killed() {
    let db = TestDatabase::create("ra_lock");
    let mut active = RoutingApi::start(Database::mysql(&db)).await;
    let mut standby = RoutingApi::builder(Database::mysql(&db)).spawn();
    let r = active
        .post(
            "/routing/v1/routes",
            r#"[{"route":"kept.example.com","port":80,"ip":"10.0.0.1","ttl":120}]"#,
        )
        .await;
    assert_eq!(r.status, 201);
    // let the standby's lock runner (and expiry sweeps) see the holder refresh a few times
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(binds_nothing(&standby).await);

    active.kill9();
    let killed = Instant::now();
    // The wait's deadline is the bound (the lock's TTL, 15 s, plus slack).
    standby.wait_serving(Duration::from_secs(20)).await;
    eprintln!("take-over after kill -9 took {:?}", killed.elapsed());
    assert_eq!(lock_owner(&db).as_deref(), Some(standby.uuid.as_str()));
    let routes = standby.get_json("/routing/v1/routes").await;
    assert!(
        routes
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["route"] == "kept.example.com"),
        "{routes}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_the_lock_and_the_standby_takes_over_at_once() {
    let db = TestDatabase::create("ra_lock");
    let mut active = RoutingApi::start(Database::mysql(&db)).await;
    let mut standby = RoutingApi::builder(Database::mysql(&db)).spawn();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(binds_nothing(&standby).await);

    active.sigterm();
    let status = active.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "SIGTERM is a clean exit: {status}");
    // Released, not left to its TTL (15 s): the row is gone or already the standby's.
    assert_ne!(
        lock_owner(&db).as_deref(),
        Some(active.uuid.as_str()),
        "the exited holder still owns the lock"
    );
    // A generous deadline that is still short of the TTL a kept lock would cost.
    standby.wait_serving(Duration::from_secs(10)).await;
    assert_eq!(lock_owner(&db).as_deref(), Some(standby.uuid.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holder_exits_non_zero_when_its_lock_is_taken_away() {
    let db = TestDatabase::create("ra_lock");
    let mut api = RoutingApi::start(Database::mysql(&db)).await;
    assert_eq!(lock_owner(&db).as_deref(), Some(api.uuid.as_str()));
    db.exec(&format!(
        "UPDATE locks SET owner = 'intruder', modified_id = 'stolen' WHERE path = '{LOCK_KEY}'"
    ));
    // refresh every 1 s finds the collision; then `retry_interval` (1 s here) and exit
    let status = api.wait_exit(Duration::from_secs(10)).await;
    assert!(!status.success(), "must exit non-zero: {status}");
    // It exited because a refresh found another owner (not, say, a refresh that timed out):
    // the lock runner's own line names the key, this instance and the collision, and the
    // process's exit line carries the same reason.
    let log = api.log();
    let lines = log_lines(&log);
    let runner = find_line(
        &lines,
        0,
        "locket-lock.lost-lock",
        &[
            ("key", LOCK_KEY),
            ("owner", api.uuid.as_str()),
            ("error", "lock-collision"),
        ],
    );
    assert!(runner.is_some(), "no lock-collision lost-lock line:\n{log}");
    let exit = find_line(&lines, 0, "routing-api.locket-lock.lost-lock", &[]);
    let (_, exit) = exit.unwrap_or_else(|| panic!("no routing-api.locket-lock.lost-lock:\n{log}"));
    assert_eq!(exit["data"]["error"], "lost lock: lock-collision", "{exit}");
    assert!(!RoutingApi::port_bound(api.http_port).await);
    assert_eq!(lock_owner(&db).as_deref(), Some("intruder"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_locket_server_one_instance_serves_and_sigterm_hands_over() {
    let db = TestDatabase::create("ra_lock");
    let ca = TestCa::new("locket-ca");
    let locket = Locket::start_sqlite(&ca).await;
    let mut active = RoutingApi::builder(Database::mysql(&db))
        .locket(locket.client_files(&ca))
        .start()
        .await;
    let mut standby = RoutingApi::builder(Database::mysql(&db))
        .locket(locket.client_files(&ca))
        .spawn();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(standby.try_exit().is_none(), "{}", standby.log());
    assert!(binds_nothing(&standby).await, "{}", standby.log());
    // the lock lives in locket, not in routing-api's database
    let tables = db.query("SHOW TABLES LIKE 'locks'");
    assert!(tables.is_empty(), "{tables:?}");

    active.sigterm();
    assert!(active.wait_exit(Duration::from_secs(10)).await.success());
    // A generous deadline that is still short of the lock's TTL (15 s) a kept lock would cost;
    // locket's log below shows the release itself.
    standby.wait_serving(Duration::from_secs(10)).await;
    // locket's own record of the hand-over: the key acquired by the active instance, released
    // by it on SIGTERM, then acquired by the standby, in that order.
    let (active_id, standby_id) = (active.uuid.clone(), standby.uuid.clone());
    let handed_over = |log: &str| {
        let lines = log_lines(log);
        let key = ("key", LOCK_KEY);
        let (first, _) = find_line(
            &lines,
            0,
            "locket.lock.acquired",
            &[key, ("owner", &active_id)],
        )?;
        let (released, _) = find_line(
            &lines,
            first + 1,
            "locket.release.released",
            &[key, ("owner", &active_id)],
        )?;
        find_line(
            &lines,
            released + 1,
            "locket.lock.acquired",
            &[key, ("owner", &standby_id)],
        )
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while handed_over(&locket.log()).is_none() {
        assert!(
            Instant::now() < deadline,
            "locket never logged the hand-over; its log:\n{}",
            locket.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_503_and_acknowledged_writes_survive_it() {
    let db = TestDatabase::create("ra_outage");
    let server = db.server().clone();
    let gate = DbGate::start(&server.host, server.port).await;
    let mut api = RoutingApi::start(Database::mysql_via(&db, &gate)).await;
    let rg = api.default_group_guid().await;

    let mut acknowledged = Vec::new();
    for i in 0..5 {
        let route = format!("before-{i}.example.com");
        let r = api
            .post(
                "/routing/v1/routes",
                &format!(r#"[{{"route":"{route}","port":80,"ip":"10.0.0.1","ttl":120}}]"#),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.dump());
        acknowledged.push(route);
    }

    gate.cut();
    let started = Instant::now();
    for (method, path, body) in [
        ("GET", "/routing/v1/routes", String::new()),
        (
            "POST",
            "/routing/v1/routes",
            r#"[{"route":"during.example.com","port":80,"ip":"10.0.0.1","ttl":120}]"#.into(),
        ),
        ("GET", "/routing/v1/tcp_routes", String::new()),
        (
            "POST",
            "/routing/v1/tcp_routes/create",
            format!(
                r#"[{{"router_group_guid":"{rg}","port":1025,"backend_ip":"10.0.0.1","backend_port":1,"ttl":60}}]"#
            ),
        ),
        ("GET", "/routing/v1/router_groups", String::new()),
    ] {
        let r = api.call(method, path, &body).await;
        assert_eq!(
            r.status,
            503,
            "{method} {path} while cut off:\n{}",
            r.dump()
        );
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["name"], "DBCommunicationError", "{v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
    }
    // (No bound on how long the 503s took: each request has the client's 20 s I/O deadline,
    // and they fail at once in practice since the gate closes new connections at once.)
    eprintln!("five 503s in {:?} after the cut", started.elapsed());
    // the process keeps running (and keeps its lock) while the database is away for less
    // than the refresh bound (5 s; longer, it stops serving: routing_api_split_brain.rs).
    // The outage is 3 s counted from the cut, however long the requests above took.
    tokio::time::sleep_until((started + Duration::from_secs(3)).into()).await;
    assert!(
        api.try_exit().is_none(),
        "exited during the outage:\n{}",
        api.log()
    );

    gate.restore();
    wait_until(
        "the API to reach its database again",
        Duration::from_secs(15),
        || {
            let api = &api;
            async move { api.get("/routing/v1/routes").await.status == 200 }
        },
    )
    .await;
    let listed: Vec<String> = api
        .http_routes()
        .await
        .iter()
        .map(|r| r["route"].as_str().unwrap().to_string())
        .collect();
    for route in &acknowledged {
        assert!(listed.contains(route), "{route} lost: {listed:?}");
    }
    assert!(!listed.contains(&"during.example.com".to_string()));
    let r = api
        .post(
            "/routing/v1/routes",
            r#"[{"route":"after.example.com","port":80,"ip":"10.0.0.1","ttl":120}]"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.dump());
    assert!(api.try_exit().is_none());
    assert_eq!(lock_owner(&db).as_deref(), Some(api.uuid.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_startup_failure_after_taking_the_lock_releases_it() {
    let db = TestDatabase::create("ra_lock");
    // the admin port is taken: binding it fails after the lock was acquired
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut api = RoutingApi::builder(Database::mysql(&db))
        .yaml(&format!("admin_port: {port}\n"))
        .spawn();
    let status = api.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(1), "{}", api.log());
    assert!(
        api.log().contains("routing-api.locket-lock.acquired-lock"),
        "{}",
        api.log()
    );
    assert!(
        api.log().contains("cannot listen for admin"),
        "{}",
        api.log()
    );
    assert_eq!(
        lock_owner(&db),
        None,
        "the lock must be released, not left to its TTL"
    );
    // so another instance starts (at once: the row asserted gone above is what it would
    // otherwise wait out)
    let _next = RoutingApi::start(Database::mysql(&db)).await;
}

/// A routing-api holding its lock on a real `locket` server (on a SQLite file of its own)
/// reached through a [`DbGate`], a TCP forwarder that can cut the server off.
struct GatedLocket {
    api: RoutingApi,
    gate: DbGate,
    _locket: Locket,
    _db: TestDatabase,
}

async fn api_on_gated_locket() -> GatedLocket {
    let db = TestDatabase::create("ra_lock");
    let ca = TestCa::new("locket-ca");
    let locket = Locket::start_sqlite(&ca).await;
    let gate = DbGate::start("127.0.0.1", locket.port()).await;
    let mut files = locket.client_files(&ca);
    files.address = format!("127.0.0.1:{}", gate.port());
    let api = RoutingApi::builder(Database::mysql(&db))
        .locket(files)
        .start()
        .await;
    GatedLocket {
        api,
        gate,
        _locket: locket,
        _db: db,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_locket_server_an_outage_shorter_than_the_refresh_bound_keeps_the_lock() {
    let mut env = api_on_gated_locket().await;

    // Three failed refreshes in a row (every second): upstream's lock runner would have ended
    // the process at the first; the lease is still fresh (bound 5 s), so it keeps serving.
    env.gate.cut();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        env.api.try_exit().is_none(),
        "exited during a 3 s Locket outage:\n{}",
        env.api.log()
    );
    assert_eq!(env.api.get("/routing/v1/routes").await.status, 200);
    env.gate.restore();

    // Refreshes succeed again: well past the bound counted from the cut, it still holds the
    // lock (an unrefreshed lease would have ended it 5 s after the cut).
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        env.api.try_exit().is_none(),
        "exited after the Locket server came back:\n{}",
        env.api.log()
    );
    assert_eq!(env.api.get("/routing/v1/routes").await.status, 200);
    let log = env.api.log();
    let deferred = find_line(
        &log_lines(&log),
        0,
        "lock-refresh-deferred-store-unavailable",
        &[],
    );
    assert!(deferred.is_some(), "no deferred refresh logged:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_locket_server_an_outage_past_the_refresh_bound_ends_the_process_before_the_ttl() {
    let mut env = api_on_gated_locket().await;

    env.gate.cut();
    let cut = Instant::now();
    let status = env.api.wait_exit(Duration::from_secs(14)).await;
    // The Locket server hands the lock to a peer 15 s (the TTL) after the last refresh it
    // saw: this instance must have stopped serving before then.
    assert!(
        cut.elapsed() < Duration::from_secs(15),
        "{:?}",
        cut.elapsed()
    );
    assert!(!status.success(), "must exit non-zero: {status}");
    assert!(!RoutingApi::port_bound(env.api.http_port).await);
    let log = env.api.log();
    assert!(
        log.contains("lock-refresh-deferred-store-unavailable"),
        "the first failed refreshes were not tolerated:\n{log}"
    );
}
