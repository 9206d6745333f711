//! NATS for the tests: a private `nats-server` process per test ([`NatsServer`]), a client that
//! publishes registrations ([`NatsClient`]), and a [`TcpGate`] that can keep a client off a
//! server while the test gets ready.
//!
//! The shared NATS on port 4222 is never used: `router.*` subjects are global, so routers of
//! tests running in parallel would see each other's registrations.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::pki::PemFiles;
use crate::process::{ChildProcess, PanicDump};
use crate::util::{free_port, Forwarder, TempDir};

/// Where the `nats-server` binary is: `$NATS_SERVER_BIN`, `/usr/sbin/nats-server`, or on `PATH`.
pub fn nats_server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("NATS_SERVER_BIN") {
        return p.into();
    }
    let sbin = PathBuf::from("/usr/sbin/nats-server");
    if sbin.exists() {
        return sbin;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("nats-server");
            if p.exists() {
                return p;
            }
        }
    }
    panic!(
        "nats-server not found (looked at $NATS_SERVER_BIN, /usr/sbin/nats-server and PATH): \
         install it (apt-get install nats-server)"
    );
}

/// A `nats-server` of this test's own on a free 127.0.0.1 port; killed on drop (its log,
/// `nats-<start>.log` in a temporary directory, is not printed).
pub struct NatsServer {
    port: u16,
    /// The current run; `None` while stopped.
    child: Option<ChildProcess>,
    dir: TempDir,
    starts: u32,
    /// Extra command-line flags (TLS).
    flags: Vec<String>,
}

impl NatsServer {
    /// Starts a server and waits until it accepts clients (it sends its `INFO` line).
    pub async fn start() -> Self {
        Self::start_with_flags(Vec::new()).await
    }

    /// A server that requires mutual TLS: it presents `server` (issued for 127.0.0.1) and
    /// accepts only clients with a certificate signed by `server.ca`.
    pub async fn start_mtls(server: &PemFiles) -> Self {
        let path = |p: &std::path::Path| p.display().to_string();
        Self::start_with_flags(vec![
            "--tlsverify".into(),
            "--tlscert".into(),
            path(&server.cert),
            "--tlskey".into(),
            path(&server.key),
            "--tlscacert".into(),
            path(&server.ca),
        ])
        .await
    }

    /// A server that requires basic auth (`--user`/`--pass`): clients must send `user` and
    /// `password` in their `CONNECT`; others get `-ERR 'Authorization Violation'`.
    pub async fn start_with_user(user: &str, password: &str) -> Self {
        Self::start_with_flags(vec![
            "--user".into(),
            user.into(),
            "--pass".into(),
            password.into(),
        ])
        .await
    }

    async fn start_with_flags(flags: Vec<String>) -> Self {
        let mut last_err = String::new();
        for _ in 0..3 {
            let mut s = Self {
                port: free_port(),
                child: None,
                dir: TempDir::new("it-nats"),
                starts: 0,
                flags: flags.clone(),
            };
            match s.launch().await {
                Ok(()) => return s,
                Err(e) => last_err = e,
            }
        }
        panic!("nats-server could not be started: {last_err}");
    }

    async fn launch(&mut self) -> Result<(), String> {
        let bin = nats_server_bin();
        self.starts += 1;
        let log_path = self.dir.path().join(format!("nats-{}.log", self.starts));
        let mut cmd = Command::new(&bin);
        cmd.args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(&self.flags);
        let child = ChildProcess::try_spawn("nats-server", cmd, &log_path, "")?
            .with_panic_dump(PanicDump::Silent);
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.as_mut().and_then(ChildProcess::try_exit) {
                self.child = None;
                return Err(format!(
                    "nats-server on port {} exited with {status} during startup; its log:\n{}",
                    self.port,
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                ));
            }
            if accepts_nats(self.port).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = self.child.as_mut().map(ChildProcess::kill);
                return Err(format!(
                    "nats-server on port {} did not accept clients within 10 s; its log:\n{}",
                    self.port,
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `nats://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server and waits until it is gone.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
        // The port must refuse connections before we say it is stopped.
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
            assert!(
                Instant::now() < deadline,
                "nats-server port {} still accepts after kill",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Starts the server again on the same port (after [`stop`](Self::stop)).
    pub async fn restart(&mut self) {
        self.stop().await;
        let mut last = String::new();
        for _ in 0..50 {
            match self.launch().await {
                Ok(()) => return,
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "nats-server could not be restarted on port {}: {last}",
            self.port
        );
    }
}

/// Whether a NATS server answers on `port` with its `INFO` line.
async fn accepts_nats(port: u16) -> bool {
    let Ok(Ok(mut s)) = tokio::time::timeout(
        Duration::from_millis(500),
        TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    else {
        return false;
    };
    let mut buf = [0u8; 5];
    matches!(
        tokio::time::timeout(Duration::from_millis(500), s.read_exact(&mut buf)).await,
        Ok(Ok(_)) if &buf == b"INFO "
    )
}

/// A `router.register` payload for `uri` served by 127.0.0.1:`port`. Add fields with
/// `msg["app"] = json!(...)`.
pub fn route(uri: &str, port: u16) -> Value {
    json!({"host": "127.0.0.1", "port": port, "uris": [uri]})
}

/// A NATS client connected to a test's own server.
pub struct NatsClient {
    client: async_nats::Client,
}

impl NatsClient {
    /// Connects to `server`.
    pub async fn connect(server: &NatsServer) -> Self {
        Self::connect_port(server.port()).await
    }

    /// Connects to a NATS server on 127.0.0.1:`port`.
    pub async fn connect_port(port: u16) -> Self {
        let url = format!("nats://127.0.0.1:{port}");
        let client =
            match tokio::time::timeout(Duration::from_secs(5), async_nats::connect(&url)).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => panic!("cannot connect to nats-server at {url}: {e}"),
                Err(_) => panic!("connecting to nats-server at {url} timed out"),
            };
        Self { client }
    }

    /// Connects to a server started with [`NatsServer::start_with_user`] with `user` and
    /// `password`; panics if the server refuses them.
    pub async fn connect_with_user(server: &NatsServer, user: &str, password: &str) -> Self {
        Self::try_connect_with_user(server, user, password)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`connect_with_user`](Self::connect_with_user), returning why the connection failed
    /// (e.g. the server's authorization error) instead of panicking. No retries: a refused
    /// `CONNECT` is an error at once.
    pub async fn try_connect_with_user(
        server: &NatsServer,
        user: &str,
        password: &str,
    ) -> Result<Self, String> {
        let url = server.url();
        let connect = async_nats::ConnectOptions::with_user_and_password(
            user.to_string(),
            password.to_string(),
        )
        .connect(&url);
        match tokio::time::timeout(Duration::from_secs(5), connect).await {
            Ok(Ok(client)) => Ok(Self { client }),
            Ok(Err(e)) => Err(format!(
                "cannot connect to nats-server at {url} as {user:?}: {e}"
            )),
            Err(_) => Err(format!(
                "connecting to nats-server at {url} as {user:?} timed out"
            )),
        }
    }

    /// Connects to a server started with [`NatsServer::start_mtls`], presenting `client`.
    pub async fn connect_mtls(server: &NatsServer, client: &PemFiles) -> Self {
        let url = server.url();
        let connect = async_nats::ConnectOptions::new()
            .require_tls(true)
            .add_root_certificates(client.ca.clone())
            .add_client_certificate(client.cert.clone(), client.key.clone())
            .connect(&url);
        let client = match tokio::time::timeout(Duration::from_secs(5), connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => panic!("cannot connect to nats-server at {url} over TLS: {e}"),
            Err(_) => panic!("connecting to nats-server at {url} over TLS timed out"),
        };
        Self { client }
    }

    /// The underlying async-nats client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Publishes `payload` on `subject` and flushes.
    pub async fn publish(&self, subject: &str, payload: impl Into<Bytes>) {
        self.client
            .publish(subject.to_string(), payload.into())
            .await
            .unwrap_or_else(|e| panic!("publish on {subject} failed: {e}"));
        self.flush().await;
    }

    /// Waits until the server has processed everything sent so far.
    pub async fn flush(&self) {
        match tokio::time::timeout(Duration::from_secs(5), self.client.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("NATS flush failed: {e}"),
            Err(_) => panic!("NATS flush timed out"),
        }
    }

    /// Publishes a `router.register` message.
    pub async fn register(&self, msg: &Value) {
        self.publish("router.register", msg.to_string()).await;
    }

    /// Publishes a `router.unregister` message.
    pub async fn unregister(&self, msg: &Value) {
        self.publish("router.unregister", msg.to_string()).await;
    }

    /// Subscribes to `subject` (the subscription is active on the server when this returns).
    pub async fn subscribe(&self, subject: &str) -> async_nats::Subscriber {
        let sub = self
            .client
            .subscribe(subject.to_string())
            .await
            .unwrap_or_else(|e| panic!("subscribe {subject} failed: {e}"));
        self.flush().await;
        sub
    }

    /// Sends a request on `subject` and returns the reply payload as text.
    pub async fn request(&self, subject: &str, payload: impl Into<Bytes>) -> String {
        match tokio::time::timeout(
            Duration::from_secs(5),
            self.client.request(subject.to_string(), payload.into()),
        )
        .await
        {
            Ok(Ok(msg)) => String::from_utf8_lossy(&msg.payload).into_owned(),
            Ok(Err(e)) => panic!("request on {subject} failed: {e}"),
            Err(_) => panic!("no reply on {subject} within 5 s"),
        }
    }

    /// Registers a throw-away route pointing at a closed port and waits (via `probe`, which
    /// returns true once that host is routed) until the router has processed it. Messages from
    /// one publisher arrive in order, so everything published before is processed too.
    pub async fn sync_with<F, Fut>(&self, mut probe: F)
    where
        F: FnMut(String) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        static N: AtomicU64 = AtomicU64::new(0);
        let host = format!(
            "sync-{}-{}.sentinel.test",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        self.register(&route(&host, 1)).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !probe(host.clone()).await {
            assert!(
                Instant::now() < deadline,
                "the router did not pick up sentinel route {host} within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Waits (up to `timeout`) for the next message of `sub` and returns its payload as text.
pub async fn next_message(sub: &mut async_nats::Subscriber, timeout: Duration) -> String {
    match tokio::time::timeout(timeout, sub.next()).await {
        Ok(Some(msg)) => String::from_utf8_lossy(&msg.payload).into_owned(),
        Ok(None) => panic!("NATS subscription ended"),
        Err(_) => panic!("no message on the subscription within {timeout:?}"),
    }
}

/// A TCP forwarder in front of a server. While open, each accepted connection is piped to the
/// target; while closed, accepted connections are dropped at once (the client sees EOF and
/// retries). Used to decide when the router may reconnect to a restarted nats-server.
pub struct TcpGate {
    forwarder: Forwarder,
}

impl TcpGate {
    /// Starts an open gate on a free 127.0.0.1 port forwarding to 127.0.0.1:`target_port`.
    pub async fn start(target_port: u16) -> Self {
        Self {
            forwarder: Forwarder::start("gate", format!("127.0.0.1:{target_port}")).await,
        }
    }

    pub fn port(&self) -> u16 {
        self.forwarder.port()
    }

    /// Lets new connections through.
    pub fn open(&self) {
        self.forwarder.set_open(true);
    }

    /// Drops new connections (existing ones are unaffected).
    pub fn close(&self) {
        self.forwarder.set_open(false);
    }
}
