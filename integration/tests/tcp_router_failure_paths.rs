//! tcp-router when a backend or a client stays silent: a backend address that never answers
//! the SYN is given up after `connect_timeout` and the next backend is tried (the client is
//! closed once every attempt has timed out), and a client that sends nothing on a port with SNI
//! routes is held for the inspect delay (5 s, HAProxy's `inspect-delay`), then goes to the
//! port's default backends or, with none, is closed; meanwhile other connections are served and
//! the router stays healthy.
//!
//! The silent backend stays on loopback: a listener with `listen(0)` whose accept queue is full
//! (one connection made and never accepted); Linux drops the SYNs of further connections.

use std::time::{Duration, Instant};

use integration::mariadb::TestDatabase;
use integration::routing_api::{Database, RoutingApi};
use integration::tcp_router::{
    client_hello, greeting, Client, TcpBackend, TcpRouter, TcpRouterBuilder, TcpRoutes,
};
use integration::util::free_port;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

struct Env {
    router: TcpRouter,
    api: RoutingApi,
    _db: TestDatabase,
}

async fn env(prefix: &str, yaml: &str) -> Env {
    let db = TestDatabase::create(prefix);
    let api = RoutingApi::start(Database::mysql(&db)).await;
    let mut builder = TcpRouterBuilder::new(&api);
    if !yaml.is_empty() {
        builder = builder.yaml(yaml);
    }
    let router = builder.start().await;
    Env {
        router,
        api,
        _db: db,
    }
}

impl Env {
    async fn wait_backends(&self, n: f64) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.router.metric("tcp_router_backends").await != Some(n) {
            assert!(
                Instant::now() < deadline,
                "the router never had {n} backends:\n{}",
                self.router.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn errors(&self, port: u16, kind: &str) -> f64 {
        self.router
            .metric(&format!(
                "tcp_router_errors_total{{port=\"{port}\",kind=\"{kind}\"}}"
            ))
            .await
            .unwrap_or(0.0)
    }
}

/// A loopback address whose SYNs go unanswered: a `listen(0)` socket whose accept queue is
/// filled by a connection it never accepts.
struct Blackhole {
    port: u16,
    _listener: TcpListener,
    _fillers: Vec<TcpStream>,
}

impl Blackhole {
    async fn start() -> Self {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("address"))
            .expect("bind");
        let listener = socket.listen(0).expect("listen(0)");
        let port = listener.local_addr().expect("addr").port();
        let mut fillers = Vec::new();
        // Fill the queue: connections that complete until one does not.
        loop {
            match tokio::time::timeout(
                Duration::from_secs(1),
                TcpStream::connect(("127.0.0.1", port)),
            )
            .await
            {
                Ok(Ok(s)) => fillers.push(s),
                Ok(Err(e)) => panic!("connect to the blackhole: {e}"),
                Err(_) => break,
            }
            assert!(fillers.len() < 8, "the accept queue never filled");
        }
        // Checked again: a connect still gets no answer.
        assert!(
            tokio::time::timeout(
                Duration::from_secs(1),
                TcpStream::connect(("127.0.0.1", port))
            )
            .await
            .is_err(),
            "the blackhole answered a SYN"
        );
        Blackhole {
            port,
            _listener: listener,
            _fillers: fillers,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_answers_the_syn_is_given_up_after_the_connect_timeout() {
    let env = env("tr_connect_timeout", "connect_timeout: 1s").await;
    let routes = TcpRoutes::new(&env.api).await;
    let hole = Blackhole::start().await;
    let live = TcpBackend::echo("live").await;
    let port = free_port();
    routes
        .create(&[
            routes.route(port, hole.port),
            routes.route(port, live.port()),
        ])
        .await;
    env.wait_backends(2.0).await;

    // Round-robin starts every other connection at the silent backend: those reach the live
    // one after waiting the connect timeout (and not the kernel's own, minutes long).
    let mut waits = Vec::new();
    for i in 0..4 {
        let started = Instant::now();
        let name = greeting(port)
            .await
            .unwrap_or_else(|e| panic!("connection {i}: {e}\n{}", env.router.output()));
        assert_eq!(name, "live");
        waits.push(started.elapsed());
    }
    let timed_out = waits
        .iter()
        .filter(|w| **w >= Duration::from_millis(950))
        .count();
    assert!(
        timed_out >= 2,
        "no connection waited the connect timeout: {waits:?}"
    );
    assert_eq!(env.errors(port, "connect").await, 0.0);

    // Only the silent backend left: every attempt times out, then the client is closed.
    routes.delete(&[routes.route(port, live.port())]).await;
    env.wait_backends(1.0).await;
    let mut c = Client::connect(port).await.expect("the listener accepts");
    let started = Instant::now();
    assert!(
        c.closes_within(Duration::from_secs(30)).await,
        "the client was not closed"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2900),
        "closed after {took:?}, before three connect timeouts of 1 s"
    );
    assert_eq!(env.errors(port, "connect").await, 1.0);
    let log = env.router.output();
    assert!(
        log.contains(&format!(
            "connect to 127.0.0.1:{} timed out after 1s",
            hole.port
        )),
        "{log}"
    );
    assert_eq!(env.router.health_status().await, 200);
}

/// Reads the backend's greeting line, waiting up to `timeout` (longer than [`Client`]'s own).
async fn slow_greeting(c: &mut Client, timeout: Duration) -> std::io::Result<String> {
    let mut line = Vec::new();
    let read = async {
        let mut b = [0u8; 1];
        loop {
            if c.stream.read(&mut b).await? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed before a greeting",
                ));
            }
            if b[0] == b'\n' {
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            line.push(b[0]);
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no greeting"))?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_nothing_on_an_sni_port_waits_the_inspect_delay() {
    let env = env("tr_silent_client", "").await;
    let routes = TcpRoutes::new(&env.api).await;
    let a = TcpBackend::echo("a").await;
    let default = TcpBackend::echo("default").await;
    let port = free_port();
    let mut ra = routes.route(port, a.port());
    ra["backend_sni_hostname"] = "a.example.com".into();
    routes
        .create(&[ra.clone(), routes.route(port, default.port())])
        .await;
    env.wait_backends(2.0).await;

    let mut silent = Client::connect(port).await.expect("connect");
    let started = Instant::now();
    // Meanwhile a client with a ClientHello is served at once.
    let hello = client_hello("a.example.com");
    let mut c = Client::connect(port).await.expect("connect");
    c.write(&hello).await.expect("hello");
    assert_eq!(c.read_line().await.expect("greeting"), "a");
    assert_eq!(default.accepted(), 0, "the silent client was routed early");
    // After the inspect delay, the silent client goes to the default backend.
    let name = slow_greeting(&mut silent, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("silent client: {e}\n{}", env.router.output()));
    let waited = started.elapsed();
    assert_eq!(name, "default");
    assert!(
        waited >= Duration::from_millis(4500),
        "routed after {waited:?}, before the 5 s inspect delay"
    );
    silent
        .echo(b"late bytes\n")
        .await
        .expect("bytes sent after the delay reach the backend");

    // No default backends: after the delay the silent client is closed.
    routes.delete(&[routes.route(port, default.port())]).await;
    env.wait_backends(1.0).await;
    let before = env.errors(port, "no_backend").await;
    let mut silent = Client::connect(port).await.expect("connect");
    let started = Instant::now();
    assert!(
        silent.closes_within(Duration::from_secs(30)).await,
        "the silent client was not closed"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(4500),
        "closed after {waited:?}, before the 5 s inspect delay"
    );
    assert_eq!(env.errors(port, "no_backend").await, before + 1.0);
    // The router is unharmed.
    let mut c = Client::connect(port).await.expect("connect");
    c.write(&hello).await.expect("hello");
    assert_eq!(c.read_line().await.expect("greeting"), "a");
    assert_eq!(c.read_exact(hello.len()).await.expect("echo"), hello);
    assert_eq!(env.router.health_status().await, 200);
}
