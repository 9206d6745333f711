//! Never two active routing-api instances (B.9, issue 13): two processes share one MariaDB
//! database; the lock holder reaches it through a [`Forwarder`], a TCP forwarder the test can
//! stall (bytes held in both directions, connections kept open) and cut. Both instances' write
//! endpoint is polled all along, and the windows in which each one acknowledged a write must
//! never overlap: the holder stops serving (listener closed, keep-alive connections cut, event
//! streams ended) before the standby can take the lock, and a stall shorter than the refresh
//! bound (a third of the 15 s TTL) costs nothing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration::http::{build_request, try_request, HttpConn};
use integration::mariadb::TestDatabase;
use integration::routing_api::{Database, RoutingApi};
use integration::util::Forwarder;
use tokio::task::JoinHandle;

/// A forwarder to where the shared MariaDB server listens (resolved once, here).
async fn database_gate(db: &TestDatabase) -> Forwarder {
    let s = db.server();
    let addr: SocketAddr = tokio::net::lookup_host((s.host.as_str(), s.port))
        .await
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("cannot resolve the database host {}", s.host));
    Forwarder::start("database gate", addr.to_string()).await
}

/// The shared test database, reached through `gate`.
fn via_gate(db: &TestDatabase, gate: &Forwarder) -> Database {
    let s = db.server();
    Database::Mysql {
        host: "127.0.0.1".into(),
        port: gate.port(),
        schema: db.name().to_string(),
        user: s.user.clone(),
        password: s.password.clone(),
    }
}

/// One acknowledged write: when its request was sent and when the 201 arrived.
#[derive(Debug, Clone, Copy)]
struct Ack {
    sent: Instant,
    answered: Instant,
}

/// Sends a route registration to `addr` every 100 ms (each request in its own task, so a
/// request the server holds does not hide the next ones) until stopped, and records every 201.
struct WritePoller {
    acks: Arc<Mutex<Vec<Ack>>>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl WritePoller {
    fn start(name: &'static str, addr: SocketAddr) -> Self {
        let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (acks.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let n = Arc::new(AtomicU64::new(0));
            let mut requests = Vec::new();
            while !s.load(Ordering::SeqCst) {
                let (a, n) = (a.clone(), n.clone());
                requests.push(tokio::spawn(async move {
                    let i = n.fetch_add(1, Ordering::SeqCst);
                    let body = format!(
                        r#"[{{"route":"{name}-{i}.split.example.com","port":80,"ip":"10.0.0.1","ttl":120}}]"#
                    );
                    let raw = build_request(
                        "POST",
                        "/routing/v1/routes",
                        &[
                            ("Host", &addr.to_string()),
                            ("Content-Type", "application/json"),
                        ],
                        body.as_bytes(),
                    );
                    let sent = Instant::now();
                    // The client gives up only after 30 s: an acknowledgement coming late
                    // (a write held by the stalled database) must still be seen.
                    let r = tokio::time::timeout(Duration::from_secs(30), try_request(addr, &raw));
                    if let Ok(Ok(resp)) = r.await {
                        if resp.status == 201 {
                            let answered = Instant::now();
                            a.lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(Ack { sent, answered });
                        }
                    }
                }));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            for r in requests {
                let _ = r.await;
            }
        });
        Self { acks, stop, task }
    }

    fn acks(&self) -> Vec<Ack> {
        self.acks.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops sending and waits for the requests in flight.
    async fn finish(self) -> Vec<Ack> {
        self.stop.store(true, Ordering::SeqCst);
        let _ = tokio::time::timeout(Duration::from_secs(40), self.task).await;
        let acks = self.acks.lock().unwrap_or_else(|e| e.into_inner()).clone();
        acks
    }
}

/// A keep-alive connection to `api` that has been served one request.
async fn keep_alive_connection(api: &RoutingApi) -> HttpConn {
    let mut conn = HttpConn::connect(api.addr()).await;
    conn.send(&build_request(
        "GET",
        "/routing/v1/router_groups",
        &[("Host", &api.addr().to_string())],
        b"",
    ))
    .await;
    let r = conn.read_response().await;
    assert_eq!(r.status, 200, "{}", r.dump());
    conn
}

/// Starts the holder (through `gate`) and a standby (direct), and lets the standby watch the
/// holder refresh a few times.
async fn holder_and_standby(db: &TestDatabase, gate: &Forwarder) -> (RoutingApi, RoutingApi) {
    let holder = RoutingApi::start(via_gate(db, gate)).await;
    let standby = RoutingApi::builder(Database::mysql(db)).spawn();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !RoutingApi::port_bound(standby.http_port).await,
        "the standby serves while the holder is healthy:\n{}",
        standby.log()
    );
    (holder, standby)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_cut_off_from_its_database_stops_serving_before_the_standby_takes_over() {
    let db = TestDatabase::create("ra_split");
    let gate = database_gate(&db).await;
    let (mut holder, mut standby) = holder_and_standby(&db, &gate).await;

    let mut sse = holder.events("/routing/v1/events").await;
    assert_eq!(sse.head.status, 200);
    let mut kept = keep_alive_connection(&holder).await;
    let holder_writes = WritePoller::start("holder", holder.addr());
    let standby_writes = WritePoller::start("standby", standby.addr());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !holder_writes.acks().is_empty(),
        "the holder acknowledges writes before the stall:\n{}",
        holder.log()
    );

    gate.stall();
    let stalled = Instant::now();
    // When each part of the holder's service stops, measured in parallel.
    let holder_addr = holder.addr();
    let listener_closed = tokio::spawn(async move {
        while RoutingApi::port_bound(holder_addr.port()).await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Instant::now()
    });
    let stream_ended = tokio::spawn(async move {
        sse.ends_within(Duration::from_secs(40))
            .await
            .then(Instant::now)
    });
    let connection_cut = tokio::spawn(async move {
        kept.is_closed_within(Duration::from_secs(40))
            .await
            .then(Instant::now)
    });

    // The standby takes over once the holder's last refresh is a TTL old.
    let deadline = stalled + Duration::from_secs(40);
    let took_over = loop {
        if let Some(first) = standby_writes.acks().first() {
            break first.sent;
        }
        assert!(
            Instant::now() < deadline,
            "the standby never took over;\nstandby log:\n{}\nholder log:\n{}",
            standby.log(),
            holder.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "standby took over {:?} after the stall",
        took_over - stalled
    );
    // Now let the holder's held bytes through, then cut its connections: whatever the
    // holder still had queued must not be acknowledged any more.
    tokio::time::sleep(Duration::from_secs(2)).await;
    gate.resume();
    tokio::time::sleep(Duration::from_secs(3)).await;
    gate.cut_connections();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let holder_acks = holder_writes.finish().await;
    let standby_acks = standby_writes.finish().await;
    let last_holder_ack = holder_acks.iter().map(|a| a.answered).max();
    let first_standby_ack = standby_acks.iter().map(|a| a.sent).min();
    eprintln!(
        "holder: {} acknowledged writes, last {:?} after the stall; standby: {} acknowledged writes",
        holder_acks.len(),
        last_holder_ack.map(|t| t.saturating_duration_since(stalled)),
        standby_acks.len()
    );
    let (Some(last_holder_ack), Some(first_standby_ack)) = (last_holder_ack, first_standby_ack)
    else {
        panic!("both instances must have acknowledged writes: {holder_acks:?} {standby_acks:?}");
    };
    assert!(
        last_holder_ack < first_standby_ack,
        "both instances acknowledged writes at once: the holder's last ended {:?} after the stall, \
         the standby's first started {:?} after it;\nholder log:\n{}",
        last_holder_ack - stalled,
        first_standby_ack - stalled,
        holder.log()
    );

    for (what, stopped) in [
        ("listener closed", listener_closed.await.ok()),
        ("event stream ended", stream_ended.await.ok().flatten()),
        (
            "keep-alive connection cut",
            connection_cut.await.ok().flatten(),
        ),
    ] {
        let Some(stopped) = stopped else {
            panic!("holder: {what} never happened;\n{}", holder.log());
        };
        eprintln!("holder: {what} {:?} after the stall", stopped - stalled);
        assert!(
            stopped < took_over,
            "holder: {what} {:?} after the stall, but the standby served {:?} after it",
            stopped - stalled,
            took_over - stalled
        );
    }
    let status = holder.wait_exit(Duration::from_secs(20)).await;
    assert!(!status.success(), "a lost lock exits non-zero: {status}");
    assert!(
        holder.log().contains("routing-api.locket-lock.lost-lock"),
        "{}",
        holder.log()
    );
    assert!(standby.try_exit().is_none(), "{}", standby.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_stall_shorter_than_the_refresh_bound_keeps_the_holder_serving() {
    let db = TestDatabase::create("ra_split");
    let gate = database_gate(&db).await;
    let (mut holder, mut standby) = holder_and_standby(&db, &gate).await;
    let mut sse = holder.events("/routing/v1/events").await;

    gate.stall();
    // Refreshes time out (0.8 s budget) for 3 s: under the 5 s bound.
    tokio::time::sleep(Duration::from_secs(3)).await;
    gate.resume();

    let r = holder
        .post(
            "/routing/v1/routes",
            r#"[{"route":"after-stall.example.com","port":80,"ip":"10.0.0.1","ttl":120}]"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}\n{}", r.dump(), holder.log());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(ev) = sse.next_event(left).await else {
            panic!(
                "the event stream ended or stayed silent:
{}",
                sse.body_so_far()
            );
        };
        if ev.data.contains("after-stall.example.com") {
            break;
        }
    }
    // Past the TTL of the refresh before the stall: nobody took the lock.
    tokio::time::sleep(Duration::from_secs(14)).await;
    assert!(holder.try_exit().is_none(), "{}", holder.log());
    assert!(
        !holder.log().contains("lost-lock"),
        "a short stall lost the lock:\n{}",
        holder.log()
    );
    assert!(standby.try_exit().is_none(), "{}", standby.log());
    assert!(
        !RoutingApi::port_bound(standby.http_port).await,
        "{}",
        standby.log()
    );
    let r = holder.get("/routing/v1/routes").await;
    assert_eq!(r.status, 200, "{}", r.dump());
}
