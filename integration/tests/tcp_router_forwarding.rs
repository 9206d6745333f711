//! tcp-router's data path against real TCP backends: SNI routing, TLS to backends with the
//! instance id verified, half-close both ways, a backend dying mid-stream, `max_connections`,
//! and 1 GiB streamed with flat memory.

use std::time::{Duration, Instant};

use integration::mariadb::TestDatabase;
use integration::pki::TestCa;
use integration::routing_api::{Database, RoutingApi};
use integration::tcp_router::{
    client_hello, greeting, tls_server_config, Client, TcpBackend, TcpRouter, TcpRouterBuilder,
    TcpRoutes, STAMP_CHUNK,
};
use integration::util::free_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Env {
    router: TcpRouter,
    api: RoutingApi,
    _db: TestDatabase,
}

async fn env(prefix: &str, configure: impl FnOnce(TcpRouterBuilder) -> TcpRouterBuilder) -> Env {
    let db = TestDatabase::create(prefix);
    let api = RoutingApi::start(Database::mysql(&db)).await;
    let router = configure(TcpRouterBuilder::new(&api)).start().await;
    Env {
        router,
        api,
        _db: db,
    }
}

/// Sends `first` (e.g. a ClientHello), then reads the backend's greeting and the echo of
/// `first`: which backend answered, and whether the bytes arrived unchanged.
async fn who_answers(port: u16, first: &[u8]) -> (String, bool) {
    let mut c = Client::connect(port)
        .await
        .expect("connect through the router");
    c.write(first).await.expect("send first bytes");
    let name = c.read_line().await.expect("greeting");
    let echoed = c
        .read_exact(first.len())
        .await
        .expect("echo of the first bytes");
    (name, echoed == first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_backend_and_forwards_the_hello_unchanged() {
    let env = env("tr_sni", |b| b).await;
    let routes = TcpRoutes::new(&env.api).await;
    let (a, b, d) = (
        TcpBackend::echo("a").await,
        TcpBackend::echo("b").await,
        TcpBackend::echo("default").await,
    );
    let port = free_port();
    let mut ra = routes.route(port, a.port());
    ra["backend_sni_hostname"] = "a.example.com".into();
    let mut rb = routes.route(port, b.port());
    rb["backend_sni_hostname"] = "b.example.com".into();
    routes.create(&[ra, rb, routes.route(port, d.port())]).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while env.router.metric("tcp_router_backends").await != Some(3.0) {
        assert!(Instant::now() < deadline, "the router never had 3 backends");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    for _ in 0..2 {
        let hello = client_hello("a.example.com");
        assert_eq!(who_answers(port, &hello).await, ("a".to_string(), true));
        let hello = client_hello("b.example.com");
        assert_eq!(who_answers(port, &hello).await, ("b".to_string(), true));
    }
    // SNI without a route of its own, and no TLS at all: the port's default backends.
    let hello = client_hello("other.example.com");
    assert_eq!(
        who_answers(port, &hello).await,
        ("default".to_string(), true)
    );
    assert_eq!(
        who_answers(port, b"PLAIN TEXT\n").await,
        ("default".to_string(), true)
    );
    // A ClientHello sent in pieces is still read whole.
    let hello = client_hello("b.example.com");
    let mut c = Client::connect(port).await.expect("connect");
    let (head, tail) = hello.split_at(20);
    c.write(head).await.expect("first part");
    tokio::time::sleep(Duration::from_millis(150)).await;
    c.write(tail).await.expect("second part");
    assert_eq!(c.read_line().await.expect("greeting"), "b");
    assert_eq!(c.read_exact(hello.len()).await.expect("echo"), hello);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_verifies_the_instance_id_and_presents_the_client_certificate() {
    let ca = TestCa::new("backend-tls-ca");
    let dir = integration::TempDir::new("tr-backend-tls");
    let ca_path = ca.write_ca(dir.path());
    // HAProxy's `crt` file: the client certificate chain and its key in one PEM file.
    let (client_cert, client_key) = ca.issue_client("tcp-router");
    let crt_path = dir.path().join("client-cert-and-key.pem");
    std::fs::write(&crt_path, format!("{client_cert}{client_key}")).expect("write crt");
    // The backend's certificate names its instance id; it requires a client certificate.
    let instance = "8d4e0c4c-7a4f-4b52-9d1e-3f6f1b2a9c10";
    let (cert, key) = ca.issue_server(&[instance]);
    let backend = TcpBackend::tls_echo(
        "tls-app",
        tls_server_config(&cert, &key, Some(ca.root_store())),
    )
    .await;
    let plain = TcpBackend::echo("plain-port").await;

    let env = env("tr_btls", |b| {
        b.yaml(&format!(
            "backend_tls:\n  enabled: true\n  ca_cert_path: {}\n  client_cert_and_key_path: {}\n",
            ca_path.display(),
            crt_path.display()
        ))
    })
    .await;
    let routes = TcpRoutes::new(&env.api).await;
    let (good, wrong) = (free_port(), free_port());
    let mut r_good = routes.route(good, plain.port());
    r_good["backend_tls_port"] = backend.port().into();
    r_good["instance_id"] = instance.into();
    let mut r_wrong = routes.route(wrong, plain.port());
    r_wrong["backend_tls_port"] = backend.port().into();
    r_wrong["instance_id"] = "some-other-instance".into();
    routes.create(&[r_good, r_wrong]).await;

    // The right instance id: TLS to the TLS port (not the plain one), verified, data flows.
    env.router.wait_routed(good, Duration::from_secs(5)).await;
    let mut c = Client::connect(good).await.expect("connect");
    assert_eq!(c.read_line().await.expect("greeting over TLS"), "tls-app");
    c.echo(b"plaintext in, TLS out\n")
        .await
        .expect("echo over TLS");
    assert_eq!(plain.accepted(), 0, "the plain port must not be used");
    assert!(
        backend.accepted() >= 2,
        "TLS handshakes completed: {}",
        backend.accepted()
    );

    // A wrong instance id: the certificate does not match, the client gets nothing.
    let mut c = Client::connect(wrong).await.expect("the listener accepts");
    assert!(
        c.closes_within(Duration::from_secs(10)).await,
        "a connection to a backend with the wrong instance id must be closed"
    );
    let errors = env
        .router
        .metric(&format!(
            "tcp_router_errors_total{{port=\"{wrong}\",kind=\"backend_tls\"}}"
        ))
        .await;
    assert_eq!(errors, Some(1.0), "{}", env.router.metrics().await);
    assert_eq!(plain.accepted(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_closes_are_passed_on_both_ways() {
    let env = env("tr_half", |b| b).await;
    let routes = TcpRoutes::new(&env.api).await;
    let counter = TcpBackend::count_then_reply("counter").await;
    let (tx, mut reports) = tokio::sync::mpsc::unbounded_channel();
    let speaker = TcpBackend::speak_then_listen("speaker", tx).await;
    let (p1, p2) = (free_port(), free_port());
    routes
        .create(&[
            routes.route(p1, counter.port()),
            routes.route(p2, speaker.port()),
        ])
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while env.router.metric("tcp_router_listeners").await != Some(2.0) {
        assert!(Instant::now() < deadline, "listeners did not open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Client half-closes; the backend sees EOF and can still answer.
    let mut c = Client::connect(p1).await.expect("connect");
    c.write(&vec![7u8; 100_000]).await.expect("send");
    c.stream.shutdown().await.expect("half-close");
    assert_eq!(
        c.read_line().await.expect("answer after half-close"),
        "got 100000"
    );
    // Closed once both sides are done, not by the idle timeout (300 s); 30 s is slack.
    assert!(c.closes_within(Duration::from_secs(30)).await);

    // Backend half-closes first; the client sees EOF and can still send.
    let mut c = Client::connect(p2).await.expect("connect");
    assert_eq!(c.read_line().await.expect("bye"), "bye");
    assert!(
        c.closes_within(Duration::from_secs(30)).await,
        "backend's EOF passed on"
    );
    c.write(&vec![1u8; 50_000])
        .await
        .expect("still sending after the backend's EOF");
    c.stream.shutdown().await.expect("half-close");
    let got = tokio::time::timeout(Duration::from_secs(5), reports.recv())
        .await
        .expect("backend reported")
        .expect("report");
    assert_eq!(got, 50_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_dying_mid_stream_closes_only_its_client() {
    let env = env("tr_die", |b| b).await;
    let routes = TcpRoutes::new(&env.api).await;
    let (a, b) = (TcpBackend::echo("a").await, TcpBackend::echo("b").await);
    let port = free_port();
    routes
        .create(&[routes.route(port, a.port()), routes.route(port, b.port())])
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while env.router.metric("tcp_router_backends").await != Some(2.0) {
        assert!(Instant::now() < deadline, "the router never had 2 backends");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut c1 = Client::connect(port).await.expect("connect");
    let n1 = c1.read_line().await.expect("greeting");
    let mut c2 = Client::connect(port).await.expect("connect");
    let n2 = c2.read_line().await.expect("greeting");
    assert_ne!(
        n1, n2,
        "round-robin puts the two clients on different backends"
    );
    let (mut on_a, mut on_b) = if n1 == "a" { (c1, c2) } else { (c2, c1) };
    on_a.echo(&vec![3u8; 200_000])
        .await
        .expect("stream through a");
    on_b.echo(&vec![4u8; 200_000])
        .await
        .expect("stream through b");

    a.kill_connections();
    // Closed because its backend went, not by the idle timeout (300 s, the test default):
    // 30 s is slack for a loaded machine and still a tenth of that.
    assert!(
        on_a.closes_within(Duration::from_secs(30)).await,
        "the client of the dead backend must be closed"
    );
    // The other client streams on.
    for _ in 0..5 {
        on_b.echo(&vec![5u8; 100_000])
            .await
            .expect("unaffected client");
    }
    // And new connections still work.
    greeting(port).await.expect("new connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_refuses_new_connections_past_the_limit() {
    let env = env("tr_max", |b| b.yaml("max_connections: 2")).await;
    let routes = TcpRoutes::new(&env.api).await;
    let backend = TcpBackend::echo("app").await;
    let port = free_port();
    routes.create(&[routes.route(port, backend.port())]).await;
    env.router.wait_routed(port, Duration::from_secs(5)).await;
    // (the probe connection of wait_routed has closed; wait until the router counted it out)
    let deadline = Instant::now() + Duration::from_secs(5);
    while env.router.metric("tcp_router_open_connections").await != Some(0.0) {
        assert!(Instant::now() < deadline, "probe connection still counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut c1 = Client::connect(port).await.expect("first");
    assert_eq!(c1.read_line().await.expect("greeting"), "app");
    let mut c2 = Client::connect(port).await.expect("second");
    assert_eq!(c2.read_line().await.expect("greeting"), "app");
    let mut c3 = Client::connect(port)
        .await
        .expect("the kernel accepts the third");
    // "At once": neither served (a greeting would count as not closed) nor held until a slot
    // frees (c1 and c2 stay open) or the idle timeout (300 s); 30 s is slack for a loaded
    // machine.
    assert!(
        c3.closes_within(Duration::from_secs(30)).await,
        "the third connection must be closed at once"
    );
    assert_eq!(
        env.router
            .metric("tcp_router_rejected_connections_total")
            .await,
        Some(1.0)
    );
    c1.echo(b"first still fine\n").await.expect("echo");
    drop(c1);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(name) = greeting(port).await {
            assert_eq!(name, "app");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no room after closing one connection"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c2.echo(b"second still fine\n").await.expect("echo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_streams_through_with_flat_memory() {
    const TOTAL: u64 = 1 << 30;
    let env = env("tr_gib", |b| b.yaml("log_level: info")).await;
    let routes = TcpRoutes::new(&env.api).await;
    let source = TcpBackend::source("source", TOTAL).await;
    let port = free_port();
    routes.create(&[routes.route(port, source.port())]).await;
    // Probe with a throw-away connection (it reads a little and closes).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let mut b = [0u8; 8];
            if s.read_exact(&mut b).await.is_ok() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "port {port} never routed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = env.router.memory_kib("VmRSS");

    let pid = env.router.pid();
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        tokio::spawn(async move {
            let mut peak = 0u64;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(kib) = integration::util::proc_status_kib(pid, "VmRSS") {
                    peak = peak.max(kib);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            peak
        })
    };

    let started = Instant::now();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut buf = vec![0u8; 1 << 20];
    let mut received = 0u64;
    let mut next_stamp = 0u64; // offset of the next chunk stamp to check
    let mut stamp = [0u8; 8];
    let mut stamp_have = 0usize;
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("stream stalled")
            .expect("read");
        if n == 0 {
            break;
        }
        // Check the 8-byte chunk index at every STAMP_CHUNK boundary (it may straddle reads).
        let (start, end) = (received, received + n as u64);
        while next_stamp < end {
            let from = next_stamp + stamp_have as u64;
            if from >= end {
                break;
            }
            let take = ((end - from) as usize).min(8 - stamp_have);
            let at = (from - start) as usize;
            stamp[stamp_have..stamp_have + take].copy_from_slice(&buf[at..at + take]);
            stamp_have += take;
            if stamp_have < 8 {
                break;
            }
            assert_eq!(
                u64::from_le_bytes(stamp),
                next_stamp / STAMP_CHUNK as u64,
                "chunk stamp at offset {next_stamp}"
            );
            stamp_have = 0;
            next_stamp += STAMP_CHUNK as u64;
        }
        received = end;
    }
    let elapsed = started.elapsed();
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.await.expect("sampler");
    assert_eq!(received, TOTAL, "bytes received");
    let growth_kib = peak.saturating_sub(baseline);
    eprintln!(
        "1 GiB in {elapsed:?} ({:.0} MB/s); tcp-router RSS {baseline} KiB -> peak {peak} KiB",
        TOTAL as f64 / elapsed.as_secs_f64() / 1e6
    );
    assert!(
        growth_kib < 8 * 1024,
        "tcp-router RSS grew by {growth_kib} KiB while streaming 1 GiB (baseline {baseline} KiB, peak {peak} KiB)"
    );
    let bytes = env
        .router
        .metric(&format!(
            "tcp_router_bytes_total{{port=\"{port}\",direction=\"backend_to_client\"}}"
        ))
        .await
        .unwrap_or(0.0);
    assert!(bytes >= TOTAL as f64, "bytes counted: {bytes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_retries_move_on_to_the_next_backend() {
    let env = env("tr_retry", |b| b).await;
    let routes = TcpRoutes::new(&env.api).await;
    let live = TcpBackend::echo("live").await;
    let dead_port = integration::util::closed_port();
    let port = free_port();
    routes
        .create(&[
            routes.route(port, dead_port),
            routes.route(port, live.port()),
        ])
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while env.router.metric("tcp_router_backends").await != Some(2.0) {
        assert!(Instant::now() < deadline, "the router never had 2 backends");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Whichever backend round-robin starts with, every connection reaches the live one.
    for i in 0..6 {
        assert_eq!(
            greeting(port)
                .await
                .unwrap_or_else(|e| panic!("connection {i}: {e}")),
            "live"
        );
    }
    assert_eq!(
        env.router
            .metric(&format!(
                "tcp_router_errors_total{{port=\"{port}\",kind=\"connect\"}}"
            ))
            .await,
        Some(0.0)
    );

    // With no live backend left, the client is closed after the attempts.
    routes.delete(&[routes.route(port, live.port())]).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while env.router.metric("tcp_router_backends").await != Some(1.0) {
        assert!(Instant::now() < deadline, "delete not applied");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut c = Client::connect(port).await.expect("the listener accepts");
    assert!(c.closes_within(Duration::from_secs(5)).await);
    assert_eq!(
        env.router
            .metric(&format!(
                "tcp_router_errors_total{{port=\"{port}\",kind=\"connect\"}}"
            ))
            .await,
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_the_request_timeout() {
    let env = env("tr_idle", |b| b.yaml("request_timeout_in_seconds: 2")).await;
    let routes = TcpRoutes::new(&env.api).await;
    let backend = TcpBackend::echo("app").await;
    let port = free_port();
    routes.create(&[routes.route(port, backend.port())]).await;
    env.router.wait_routed(port, Duration::from_secs(5)).await;

    // Traffic keeps a connection open past the timeout...
    let mut busy = Client::connect(port).await.expect("connect");
    busy.read_line().await.expect("greeting");
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        busy.echo(b"tick\n")
            .await
            .expect("busy connection stays open");
    }
    // ...silence closes it: not before the 2 s timeout, and at all before a generous
    // deadline (a connection nothing closes fails it).
    let t0 = Instant::now();
    assert!(busy.closes_within(Duration::from_secs(20)).await);
    let idle = t0.elapsed();
    assert!(
        idle >= Duration::from_millis(1800),
        "closed after {idle:?} of silence, before the 2 s request timeout"
    );
    assert_eq!(
        env.router
            .metric(&format!(
                "tcp_router_errors_total{{port=\"{port}\",kind=\"idle_timeout\"}}"
            ))
            .await,
        Some(1.0)
    );
}
