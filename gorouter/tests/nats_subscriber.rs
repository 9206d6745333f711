//! The NATS subscriber (`gorouter::nats`) against a real nats-server (A.1, A.3).
//!
//! Every test runs its own nats-server (`/usr/sbin/nats-server`) on a free loopback port, never
//! the shared one on 4222: `router.*` subjects are global, so another router or test on a
//! shared server would see (and send) our announcements and registrations.

use std::net::TcpStream as StdTcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use gorouter::config::Config;
use gorouter::registry::{Pool, RouteTable, TableSettings};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const NATS_SERVER: &str = "/usr/sbin/nats-server";
/// Upper bound for anything the router should do "at once"; generous for loaded CI machines.
const WAIT: Duration = Duration::from_secs(15);
const ROUTER_ID: &str = "0-1e44e38f-b63b-4956-45f0-15cacfd4e1d4";

/// What route-emitter sends (wire-examples.md), with a TLS port.
const REGISTER_TLS: &str = r#"{"host":"10.0.16.5","port":61012,"tls_port":61014,"uris":["myapp.apps.example.com"],"app":"6e6b2f1e-app","private_instance_id":"a1b2c3d4-inst","private_instance_index":"0","server_cert_domain_san":"a1b2c3d4-inst","tags":{"component":"route-emitter"},"endpoint_updated_at_ns":1729260000000000000,"availability_zone":"z1"}"#;

/// A plain-HTTP endpoint with a 2 s TTL (TLS endpoints are never pruned by TTL).
const REGISTER_SHORT_TTL: &str = r#"{"host":"10.0.16.6","port":61020,"uris":["ttl.apps.example.com"],"app":"app-ttl","private_instance_id":"inst-ttl","private_instance_index":"1","stale_threshold_in_seconds":2}"#;

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// A nats-server child process, killed when dropped.
struct NatsServer {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl NatsServer {
    fn start(port: u16) -> Self {
        Self::start_with(port, &[])
    }

    fn start_with(port: u16, extra_args: &[&str]) -> Self {
        let log = std::env::temp_dir().join(format!(
            "gorouter-nats-test-{}-{port}.log",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&log);
        let port_arg = port.to_string();
        let log_arg = log.display().to_string();
        let mut args = vec!["-a", "127.0.0.1", "-p", &port_arg, "-l", &log_arg];
        args.extend_from_slice(extra_args);
        let child = Command::new(NATS_SERVER)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nats-server ({NATS_SERVER}): {e}"));
        let mut server = NatsServer { child, port, log };
        server.wait_listening();
        server
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => panic!(
                    "nats-server exited ({status}) before listening on 127.0.0.1:{}; its log:\n{}",
                    self.port,
                    self.log_text()
                ),
                Ok(None) => {}
                Err(e) => panic!("cannot poll nats-server: {e}"),
            }
            if StdTcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "nats-server did not listen on 127.0.0.1:{} within 10s; its log:\n{}",
                    self.port,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A TCP forwarder the router connects through, whose gate can refuse new connections. It
/// lets a test hold the router off a restarted nats-server until the test's own subscriber is
/// in place; otherwise the router's immediate reconnect could publish `router.start` before
/// anyone listens for it.
struct GatedProxy {
    port: u16,
    open: Arc<AtomicBool>,
    accept_task: JoinHandle<()>,
}

impl GatedProxy {
    async fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy listener");
        let port = listener.local_addr().expect("proxy addr").port();
        let open = Arc::new(AtomicBool::new(true));
        let gate = open.clone();
        let accept_task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if !gate.load(Ordering::SeqCst) {
                    // Closed at once: the client sees a failed connect and backs off.
                    drop(inbound);
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", upstream_port)).await
                    {
                        // No Nagle delays: the proxy should not change message timing.
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        GatedProxy {
            port,
            open,
            accept_task,
        }
    }

    fn set_open(&self, open: bool) {
        self.open.store(open, Ordering::SeqCst);
    }
}

impl Drop for GatedProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
}

/// Small intervals so TTL behaviour shows within seconds: announces 1 s / 2 s.
fn router_config(nats_port: u16, extra_yaml: &str) -> Arc<Config> {
    let yaml = format!(
        "ip: 192.0.2.2\nbind_address: 127.0.0.1\nindex: 0\nnats:\n  hosts:\n  - hostname: 127.0.0.1\n    port: {nats_port}\n\
         start_response_delay_interval: 1s\ndroplet_stale_threshold: 2s\n\
         prune_stale_droplets_interval: 250ms\nsuspend_pruning_if_nats_unavailable: true\n{extra_yaml}"
    );
    Arc::new(Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("test config: {e}")))
}

const EXPECTED_ROUTER_START: &str = r#"{"id":"0-1e44e38f-b63b-4956-45f0-15cacfd4e1d4","hosts":["192.0.2.2"],"minimumRegisterIntervalInSeconds":1,"pruneThresholdInSeconds":2}"#;

struct RouterUnderTest {
    table: Arc<RouteTable>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RouterUnderTest {
    async fn start(config: Arc<Config>) -> Self {
        let table = Arc::new(RouteTable::new(TableSettings::from_config(&config)));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = gorouter::nats::start(config, table.clone(), ROUTER_ID.to_string(), shutdown_rx)
            .await
            .unwrap_or_else(|e| panic!("nats::start failed: {e:#}"))
            .task;
        RouterUnderTest {
            table,
            shutdown,
            task,
        }
    }

    /// Polls the table until `host` resolves (or not), as `want` says.
    async fn wait_for_route(&self, host: &str, want: bool) -> Option<Arc<Pool>> {
        let deadline = Instant::now() + WAIT;
        loop {
            let pool = self.table.lookup(host, "/");
            if pool.is_some() == want {
                return pool;
            }
            assert!(
                Instant::now() < deadline,
                "route {host} still {} after {WAIT:?}",
                if want { "absent" } else { "present" }
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        assert!(
            !self.task.is_finished(),
            "the NATS task ended before shutdown: {:?}",
            self.task.await
        );
        self.shutdown.send(true).expect("shutdown receiver alive");
        let result = tokio::time::timeout(WAIT, self.task)
            .await
            .expect("NATS task did not stop within the wait after shutdown")
            .expect("NATS task panicked");
        assert!(result.is_ok(), "shutdown should end with Ok: {result:?}");
    }
}

async fn test_client(url: &str) -> async_nats::Client {
    test_client_with(url, async_nats::ConnectOptions::new()).await
}

async fn test_client_with(url: &str, options: async_nats::ConnectOptions) -> async_nats::Client {
    options
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("test client cannot connect to nats-server at {url}: {e}"))
}

/// A subscription to `router.start` that is in place on the server when this returns.
async fn watch_router_start(client: &async_nats::Client) -> async_nats::Subscriber {
    let subscriber = client
        .subscribe("router.start")
        .await
        .expect("subscribe router.start");
    round_trip(client).await;
    subscriber
}

/// Returns once the server has processed everything `client` sent before (`flush` only empties
/// the socket buffer): the "no responders" answer to a request comes after them.
async fn round_trip(client: &async_nats::Client) {
    let request = client.request(client.new_inbox(), Bytes::new());
    match tokio::time::timeout(WAIT, request).await {
        Ok(Err(err)) if err.kind() == async_nats::RequestErrorKind::NoResponders => {}
        other => panic!("expected a no-responders round trip from nats-server, got {other:?}"),
    }
}

async fn next_payload(subscriber: &mut async_nats::Subscriber, what: &str) -> String {
    let message = tokio::time::timeout(WAIT, subscriber.next())
        .await
        .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
        .unwrap_or_else(|| panic!("subscription ended while waiting for {what}"));
    String::from_utf8(message.payload.to_vec()).expect("UTF-8 payload")
}

async fn publish(client: &async_nats::Client, subject: &'static str, payload: &str) {
    client
        .publish(subject, Bytes::copy_from_slice(payload.as_bytes()))
        .await
        .expect("publish");
    client.flush().await.expect("flush");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_router_announces_answers_greet_and_applies_registrations() {
    init_logging();
    let server = NatsServer::start(free_port());
    let client = test_client(&server.url()).await;
    let mut starts = watch_router_start(&client).await;

    let router = RouterUnderTest::start(router_config(server.port, "")).await;
    assert_eq!(
        next_payload(&mut starts, "router.start at startup").await,
        EXPECTED_ROUTER_START
    );

    let reply = tokio::time::timeout(WAIT, client.request("router.greet", Bytes::new()))
        .await
        .expect("greet reply within the wait")
        .expect("greet request");
    assert_eq!(
        std::str::from_utf8(&reply.payload).expect("UTF-8"),
        EXPECTED_ROUTER_START
    );

    // Garbage must be dropped without stopping the subscriber.
    publish(&client, "router.register", "{not json").await;
    publish(
        &client,
        "router.register",
        r#"{"host":"h","port":70000,"uris":["bad.apps.example.com"]}"#,
    )
    .await;
    publish(&client, "router.something", "not json either").await;

    publish(&client, "router.register", REGISTER_TLS).await;
    let pool = router
        .wait_for_route("myapp.apps.example.com", true)
        .await
        .expect("pool");
    let endpoints = pool.endpoints();
    assert_eq!(endpoints.len(), 1);
    let endpoint = &endpoints[0];
    assert_eq!(endpoint.addr(), "10.0.16.5:61014");
    assert!(endpoint.tls);
    assert_eq!(endpoint.app_id(), "6e6b2f1e-app");
    assert_eq!(endpoint.private_instance_id(), "a1b2c3d4-inst");
    assert_eq!(endpoint.private_instance_index(), "0");
    assert_eq!(endpoint.availability_zone(), "z1");
    assert!(router.table.lookup("bad.apps.example.com", "/").is_none());

    publish(&client, "router.unregister", REGISTER_TLS).await;
    router.wait_for_route("myapp.apps.example.com", false).await;
    assert_eq!(router.table.route_count(), 0);

    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_republishes_router_start_and_pruning_is_suspended_meanwhile() {
    init_logging();
    let nats_port = free_port();
    let mut server = NatsServer::start(nats_port);
    let proxy = GatedProxy::start(nats_port).await;
    let client = test_client(&server.url()).await;
    let mut starts = watch_router_start(&client).await;

    let router = RouterUnderTest::start(router_config(proxy.port, "")).await;
    assert_eq!(
        next_payload(&mut starts, "router.start at startup").await,
        EXPECTED_ROUTER_START
    );
    publish(&client, "router.register", REGISTER_SHORT_TTL).await;
    router.wait_for_route("ttl.apps.example.com", true).await;

    // NATS goes away. The endpoint's 2 s TTL runs out meanwhile, but pruning is suspended.
    proxy.set_open(false);
    drop(starts);
    drop(client);
    server.kill();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert!(
        router.table.lookup("ttl.apps.example.com", "/").is_some(),
        "endpoint pruned while NATS was down (prune should be suspended)"
    );

    // The same nats-server comes back on the same port; the router may reconnect once our
    // subscriber is listening.
    let server = NatsServer::start(nats_port);
    let client = test_client(&server.url()).await;
    let mut starts = watch_router_start(&client).await;
    proxy.set_open(true);
    assert_eq!(
        next_payload(&mut starts, "router.start after the NATS restart").await,
        EXPECTED_ROUTER_START
    );

    // The first prune after the reconnect refreshes every endpoint, so this one (unrefreshed
    // for over 3 s, TTL 2 s) survives several prune ticks...
    tokio::time::sleep(Duration::from_millis(750)).await;
    assert!(
        router.table.lookup("ttl.apps.example.com", "/").is_some(),
        "endpoint pruned right after the reconnect (should have been refreshed first)"
    );
    // ...and pruning has resumed: without re-registration it goes once its TTL runs out.
    router.wait_for_route("ttl.apps.example.com", false).await;

    // Registrations flow over the new connection.
    publish(&client, "router.register", REGISTER_TLS).await;
    router.wait_for_route("myapp.apps.example.com", true).await;

    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_basic_auth_credentials_are_sent() {
    init_logging();
    let server = NatsServer::start_with(free_port(), &["--user", "nats-user", "--pass", "s3cret"]);
    let client = test_client_with(
        &server.url(),
        async_nats::ConnectOptions::with_user_and_password("nats-user".into(), "s3cret".into()),
    )
    .await;
    let mut starts = watch_router_start(&client).await;

    let config = router_config(server.port, "");
    let mut with_credentials = (*config).clone();
    with_credentials.nats.user = "nats-user".into();
    with_credentials.nats.pass = "s3cret".into();
    let router = RouterUnderTest::start(Arc::new(with_credentials)).await;
    assert_eq!(
        next_payload(&mut starts, "router.start").await,
        EXPECTED_ROUTER_START
    );
    router.stop().await;

    let mut wrong_password = (*config).clone();
    wrong_password.nats.user = "nats-user".into();
    wrong_password.nats.pass = "wrong".into();
    let table = Arc::new(RouteTable::new(TableSettings::default()));
    let (_shutdown, shutdown_rx) = watch::channel(false);
    let err = gorouter::nats::start(
        Arc::new(wrong_password),
        table,
        ROUTER_ID.into(),
        shutdown_rx,
    )
    .await
    .err()
    .expect("a wrong password must fail the start");
    assert!(err.to_string().contains("NATS"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_start_fails_naming_nats_and_servers_when_none_listens() {
    init_logging();
    let port = free_port();
    let config = router_config(port, "");
    let table = Arc::new(RouteTable::new(TableSettings::default()));
    let (_shutdown, shutdown_rx) = watch::channel(false);
    let began = Instant::now();
    let err = gorouter::nats::start(config, table, ROUTER_ID.into(), shutdown_rx)
        .await
        .err()
        .expect("start must fail without a NATS server");
    let message = err.to_string();
    assert!(message.contains("NATS"), "{message}");
    assert!(
        message.contains(&format!("nats://127.0.0.1:{port}")),
        "{message}"
    );
    // Three tries, 100 ms apart.
    assert!(
        began.elapsed() >= Duration::from_millis(200),
        "gave up after {:?}",
        began.elapsed()
    );
}
